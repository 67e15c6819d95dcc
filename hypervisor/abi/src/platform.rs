//! `platform_op` (`public/platform.h`): host-level operations for the hardware domain.

/// `XENPF_INTERFACE_VERSION`, which every call carries.
pub const INTERFACE_VERSION: u32 = 0x0300_0001;

/// `platform_op` commands.
pub mod cmd {
    /// Set the wallclock (32-bit seconds).
    pub const SETTIME32: u32 = 17;
    /// Add an MTRR memory type range.
    pub const ADD_MEMTYPE: u32 = 31;
    /// Delete one.
    pub const DEL_MEMTYPE: u32 = 32;
    /// Read one.
    pub const READ_MEMTYPE: u32 = 33;
    /// Load CPU microcode.
    pub const MICROCODE_UPDATE: u32 = 35;
    /// Platform quirks.
    pub const PLATFORM_QUIRK: u32 = 39;
    /// CPU family/model/stepping of a physical CPU.
    pub const GET_CPU_VERSION: u32 = 48;
    /// EFI runtime services.
    pub const EFI_RUNTIME_CALL: u32 = 49;
    /// Boot firmware information ([`super::FirmwareInfo`]).
    pub const FIRMWARE_INFO: u32 = 50;
    /// Enter an ACPI sleep state.
    pub const ENTER_ACPI_SLEEP: u32 = 51;
    /// Change CPU frequency.
    pub const CHANGE_FREQ: u32 = 52;
    /// Idle time of physical CPUs.
    pub const GETIDLETIME: u32 = 53;
    /// Processor power-management information from ACPI.
    pub const SET_PROCESSOR_PMINFO: u32 = 54;
    /// Physical CPU information ([`super::PcpuInfo`]).
    pub const GET_CPUINFO: u32 = 55;
    /// Bring a physical CPU online.
    pub const CPU_ONLINE: u32 = 56;
    /// Take one offline.
    pub const CPU_OFFLINE: u32 = 57;
    /// Set the wallclock (64-bit seconds), [`super::Settime64`].
    pub const SETTIME64: u32 = 62;
}

/// `XEN_FW_*` firmware information types.
pub mod fw {
    /// EDD disk information.
    pub const DISK_INFO: u32 = 1;
    /// MBR signatures.
    pub const DISK_MBR_SIGNATURE: u32 = 2;
    /// VBE DDC information.
    pub const VBEDDC_INFO: u32 = 3;
    /// EFI information.
    pub const EFI_INFO: u32 = 4;
    /// BIOS keyboard shift flags.
    pub const KBD_SHIFT_FLAGS: u32 = 5;
}

/// `XEN_FW_EFI_*`: the `index` of a `XEN_FW_EFI_INFO` request (`union xenpf_efi_info`, which
/// starts 8 bytes into `xenpf_firmware_info`).
pub mod efi {
    /// The system table's revision (`version`, u32).
    pub const VERSION: u32 = 0;
    /// The configuration tables (`cfg`: addr u64, nent u32).
    pub const CONFIG_TABLE: u32 = 1;
    /// The firmware vendor (`vendor`: revision u32 out, bufsz u32 in, name handle u64).
    pub const VENDOR: u32 = 2;
    /// The memory map's descriptor of an address (`mem`: addr, size in/out, attr u64, type u32).
    pub const MEM_INFO: u32 = 3;
    /// The runtime services' revision.
    pub const RT_VERSION: u32 = 4;
    /// A PCI option ROM the firmware kept.
    pub const PCI_ROM: u32 = 5;
    /// Apple's device properties.
    pub const APPLE_PROPERTIES: u32 = 6;
}

/// Size of the whole `xen_platform_op`: command, interface version, and the 128-byte union.
pub const OP_SIZE: usize = 8 + 128;

/// `struct xenpf_settime64` (in the union).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct Settime64 {
    /// IN: seconds since the epoch at `system_time`.
    pub secs: u64,
    /// IN: nanoseconds.
    pub nsecs: u32,
    /// IN: must be zero.
    pub mbz: u32,
    /// IN: the system time (ns since boot) the wallclock value belongs to.
    pub system_time: u64,
}
const _: () = assert!(core::mem::size_of::<Settime64>() == 24);

/// `struct xenpf_settime32`.
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct Settime32 {
    /// IN: seconds since the epoch at `system_time`.
    pub secs: u32,
    /// IN: nanoseconds.
    pub nsecs: u32,
    /// IN: the system time it belongs to.
    pub system_time: u64,
}
const _: () = assert!(core::mem::size_of::<Settime32>() == 16);

/// `struct xenpf_pcpuinfo`.
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct PcpuInfo {
    /// IN: the hypervisor's CPU number.
    pub xen_cpuid: u32,
    /// OUT: the highest CPU number present.
    pub max_present: u32,
    /// OUT: `XEN_PCPU_FLAGS_*`.
    pub flags: u32,
    /// OUT: its local APIC id.
    pub apic_id: u32,
    /// OUT: its ACPI processor id.
    pub acpi_id: u32,
}
const _: () = assert!(core::mem::size_of::<PcpuInfo>() == 20);

/// `XEN_PCPU_FLAGS_ONLINE`.
pub const PCPU_ONLINE: u32 = 1;
/// `XEN_PCPU_FLAGS_INVALID`: no such CPU.
pub const PCPU_INVALID: u32 = 2;
