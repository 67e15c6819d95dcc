//! Hypercall numbers and core constants (`public/xen.h`).
//!
//! The 64-bit PV calling convention: number in RAX, arguments in RDI, RSI, RDX, R10, R8, result
//! in RAX; RCX and R11 are clobbered by `syscall`. A hypercall page holds 32-byte stubs, one per
//! number, each `mov $nr, %eax; syscall; ret`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Hypercall numbers from `public/xen.h` (`__HYPERVISOR_*`).
#[allow(missing_docs)] // The names mirror public/xen.h one to one.
pub mod hypercall {
    pub const SET_TRAP_TABLE: u32 = 0;
    pub const MMU_UPDATE: u32 = 1;
    pub const SET_GDT: u32 = 2;
    pub const STACK_SWITCH: u32 = 3;
    pub const SET_CALLBACKS: u32 = 4;
    pub const FPU_TASKSWITCH: u32 = 5;
    pub const SCHED_OP_COMPAT: u32 = 6;
    pub const PLATFORM_OP: u32 = 7;
    pub const SET_DEBUGREG: u32 = 8;
    pub const GET_DEBUGREG: u32 = 9;
    pub const UPDATE_DESCRIPTOR: u32 = 10;
    pub const MEMORY_OP: u32 = 12;
    pub const MULTICALL: u32 = 13;
    pub const UPDATE_VA_MAPPING: u32 = 14;
    pub const SET_TIMER_OP: u32 = 15;
    pub const EVENT_CHANNEL_OP_COMPAT: u32 = 16;
    pub const XEN_VERSION: u32 = 17;
    pub const CONSOLE_IO: u32 = 18;
    pub const PHYSDEV_OP_COMPAT: u32 = 19;
    pub const GRANT_TABLE_OP: u32 = 20;
    pub const VM_ASSIST: u32 = 21;
    pub const UPDATE_VA_MAPPING_OTHERDOMAIN: u32 = 22;
    pub const IRET: u32 = 23;
    pub const VCPU_OP: u32 = 24;
    pub const SET_SEGMENT_BASE: u32 = 25;
    pub const MMUEXT_OP: u32 = 26;
    pub const XSM_OP: u32 = 27;
    pub const NMI_OP: u32 = 28;
    pub const SCHED_OP: u32 = 29;
    pub const CALLBACK_OP: u32 = 30;
    pub const XENOPROF_OP: u32 = 31;
    pub const EVENT_CHANNEL_OP: u32 = 32;
    pub const PHYSDEV_OP: u32 = 33;
    pub const HVM_OP: u32 = 34;
    pub const SYSCTL: u32 = 35;
    pub const DOMCTL: u32 = 36;
    pub const KEXEC_OP: u32 = 37;
    pub const TMEM_OP: u32 = 38;
    pub const ARGO_OP: u32 = 39;
    pub const XENPMU_OP: u32 = 40;
    pub const DM_OP: u32 = 41;
    pub const HYPFS_OP: u32 = 42;
    pub const ARCH_0: u32 = 48;
    /// `__HYPERVISOR_mca`, x86's first architecture-specific hypercall.
    pub const MCA: u32 = ARCH_0;
    pub const ARCH_7: u32 = 55;
}

/// Size of one stub in the hypercall page.
pub const HYPERCALL_STUB_SIZE: usize = 32;
/// Number of stubs that fit in the 4 KiB hypercall page.
pub const NR_HYPERCALL_STUBS: usize = 4096 / HYPERCALL_STUB_SIZE;

/// Start of the hypervisor's reserved virtual range for 64-bit PV guests (PML4 slot 256).
pub const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// End (exclusive) of the reserved range (PML4 slot 272).
pub const HYPERVISOR_VIRT_END: u64 = 0xFFFF_8800_0000_0000;
/// Where the read-only machine-to-phys table is mapped for PV guests.
pub const MACH2PHYS_VIRT_START: u64 = 0xFFFF_8000_0000_0000;

/// Flat ring-3 32-bit code selector (`FLAT_RING3_CS32`, also the kernel/user CS32).
pub const FLAT_RING3_CS32: u16 = 0xe023;
/// Flat ring-3 data/stack selector (`FLAT_RING3_DS32`, `FLAT_KERNEL_SS64`, `FLAT_USER_SS64`).
pub const FLAT_RING3_DS: u16 = 0xe02b;
/// Flat ring-3 64-bit code selector (`FLAT_KERNEL_CS64` = `FLAT_USER_CS64`).
pub const FLAT_RING3_CS64: u16 = 0xe033;
/// `FLAT_KERNEL_CS`: guest kernel code runs in ring 3 on the 64-bit flat selector.
pub const FLAT_KERNEL_CS: u16 = FLAT_RING3_CS64;
/// `FLAT_KERNEL_SS`.
pub const FLAT_KERNEL_SS: u16 = FLAT_RING3_DS;
/// First GDT entry reserved for the hypervisor (`FIRST_RESERVED_GDT_ENTRY`): selectors 0xe000+.
pub const FIRST_RESERVED_GDT_ENTRY: u32 = 7168;

/// `console_io` commands.
pub mod consoleio {
    /// Write `count` bytes from `buf` to the console.
    pub const WRITE: u32 = 0;
    /// Read up to `count` bytes into `buf` (dom0 only).
    pub const READ: u32 = 1;
}

/// Virtual IRQs (`VIRQ_*`): events the hypervisor raises, bound with `EVTCHNOP_bind_virq`.
/// Per-vCPU ones (timer, debug, xenoprof, xenpmu) bind on any vCPU; the others are global and
/// bind on vCPU 0.
pub mod virq {
    /// Per-vCPU: a timer set with `set_timer_op` or `VCPUOP_set_*_timer` fired.
    pub const TIMER: u32 = 0;
    /// Per-vCPU: the guest should dump debugging state.
    pub const DEBUG: u32 = 1;
    /// Global, dom0: bytes arrived on the hypervisor console.
    pub const CONSOLE: u32 = 2;
    /// Global, control domain: a domain shut down or died.
    pub const DOM_EXC: u32 = 3;
    /// Global, dom0: trace buffers have records.
    pub const TBUF: u32 = 4;
    /// Global, dom0: a domain paused for its debugger.
    pub const DEBUGGER: u32 = 6;
    /// Per-vCPU: a profiling sample is ready.
    pub const XENOPROF: u32 = 7;
    /// Global, dom0: bytes arrived on the console ring.
    pub const CON_RING: u32 = 8;
    /// Global, dom0: a physical CPU changed state.
    pub const PCPU_STATE: u32 = 9;
    /// Global, dom0: a memory event.
    pub const MEM_EVENT: u32 = 10;
    /// Global: an Argo message arrived.
    pub const ARGO: u32 = 11;
    /// Global, dom0: the hypervisor is low on memory.
    pub const ENOMEM: u32 = 12;
    /// Per-vCPU: a PMU counter interrupt.
    pub const XENPMU: u32 = 13;
    /// First of the eight architecture-specific VIRQs, 16-23 (`VIRQ_ARCH_0`); on x86 it is
    /// `VIRQ_MCA` (global, dom0: machine-check errors to log).
    pub const ARCH_0: u32 = 16;
    /// `VIRQ_MCA`: global, dom0: machine-check telemetry is queued.
    pub const MCA: u32 = ARCH_0;
}

/// Number of virtual IRQs (`NR_VIRQS`).
pub const NR_VIRQS: u32 = 24;

/// The first domain id that names no real domain (`DOMID_FIRST_RESERVED`): ids from here on
/// are the pseudo-domains below.
pub const DOMID_FIRST_RESERVED: u16 = 0x7FF0;
/// Domain id of the calling domain (`DOMID_SELF`).
pub const DOMID_SELF: u16 = 0x7FF0;
/// Pseudo-domain owning I/O memory (`DOMID_IO`).
pub const DOMID_IO: u16 = 0x7FF1;
/// The hypervisor itself as a domain (`DOMID_XEN`).
pub const DOMID_XEN: u16 = 0x7FF2;
/// No domain (`DOMID_INVALID`).
pub const DOMID_INVALID: u16 = 0x7FF4;

/// `vm_assist` types (`VMASST_TYPE_*`): bit numbers of the assists a guest turns on.
pub mod vmasst {
    /// Virtual IOPL as the architecture has it: the `iret` frame's EFLAGS.IOPL sets it, bounce
    /// frames report it, guest kernel mode counts as ring 0 in its checks.
    pub const ARCHITECTURAL_IOPL: u32 = 4;
}

/// `start_info.flags` bits (`SIF_*`).
pub mod sif {
    /// The domain is privileged.
    pub const PRIVILEGED: u32 = 1 << 0;
    /// This is the initial (control) domain.
    pub const INITDOMAIN: u32 = 1 << 1;
    /// `mod_start` names a multiboot-style module package.
    pub const MULTIBOOT_MOD: u32 = 1 << 2;
    /// `mod_start` is a PFN (the initrd is not mapped).
    pub const MOD_START_PFN: u32 = 1 << 3;
}

/// Magic string at the start of `start_info` for 64-bit PV guests.
pub const START_INFO_MAGIC: &[u8] = b"xen-3.0-x86_64";

/// The start-of-day page a PV guest finds at RSI (`struct start_info`), all OUT.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StartInfo {
    /// OUT: "xen-3.0-x86_64", NUL-padded.
    pub magic: [u8; 32],
    /// OUT: pages allocated to the domain.
    pub nr_pages: u64,
    /// OUT: machine address of the shared_info page.
    pub shared_info: u64,
    /// OUT: `SIF_*`.
    pub flags: u32,
    /// Padding.
    pub _pad0: u32,
    /// OUT: MFN of the xenstore ring (0 for dom0).
    pub store_mfn: u64,
    /// OUT: xenstore event channel (0 for dom0).
    pub store_evtchn: u32,
    /// Padding.
    pub _pad1: u32,
    /// OUT: domU: console ring MFN; dom0: `info_off` (low 32 bits) and `info_size` (high).
    pub console_mfn_or_info: u64,
    /// OUT: domU: console event channel.
    pub console_evtchn: u32,
    /// Padding.
    pub _pad2: u32,
    /// OUT: virtual address of the bootstrap L4.
    pub pt_base: u64,
    /// OUT: number of bootstrap page-table frames.
    pub nr_pt_frames: u64,
    /// OUT: virtual address of the P2M array.
    pub mfn_list: u64,
    /// OUT: virtual address (or PFN with `SIF_MOD_START_PFN`) of the initrd.
    pub mod_start: u64,
    /// OUT: initrd size in bytes.
    pub mod_len: u64,
    /// OUT: the kernel command line, NUL-terminated.
    pub cmd_line: [u8; 1024],
    /// OUT: first PFN of a separately mapped P2M (INIT_P2M).
    pub first_p2m_pfn: u64,
    /// OUT: number of such frames.
    pub nr_p2m_frames: u64,
}
const _: () = assert!(core::mem::size_of::<StartInfo>() == 1168);
const _: () = assert!(core::mem::offset_of!(StartInfo, pt_base) == 88);
const _: () = assert!(core::mem::offset_of!(StartInfo, cmd_line) == 128);

/// Time information for one vCPU (`struct vcpu_time_info`), all OUT, version-counted.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuTimeInfo {
    /// OUT: odd while the hypervisor updates the fields.
    pub version: u32,
    /// Padding.
    pub _pad0: u32,
    /// OUT: TSC at the last update.
    pub tsc_timestamp: u64,
    /// OUT: nanoseconds since boot at that TSC.
    pub system_time: u64,
    /// OUT: 32.32 fixed-point TSC-to-ns multiplier.
    pub tsc_to_system_mul: u32,
    /// OUT: shift applied to the TSC delta before multiplying.
    pub tsc_shift: i8,
    /// OUT: bit 0 TSC stable, bit 1 guest stopped.
    pub flags: u8,
    /// Padding.
    pub _pad1: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<VcpuTimeInfo>() == 32);

/// Per-vCPU event and time state (`struct vcpu_info`), 64 bytes.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuInfo {
    /// OUT (guest clears): an event is pending.
    pub evtchn_upcall_pending: u8,
    /// IN: 1 masks upcalls (the guest's "interrupts off").
    pub evtchn_upcall_mask: u8,
    /// Padding.
    pub _pad0: [u8; 6],
    /// OUT (guest clears): which words of `evtchn_pending` may hold work.
    pub evtchn_pending_sel: u64,
    /// OUT: CR2 of the last page fault bounced to the guest.
    pub cr2: u64,
    /// Padding.
    pub _pad1: u64,
    /// OUT: time information.
    pub time: VcpuTimeInfo,
}
const _: () = assert!(core::mem::size_of::<VcpuInfo>() == 64);

/// vCPUs with a `vcpu_info` slot in shared_info (`XEN_LEGACY_MAX_VCPUS`).
pub const LEGACY_MAX_VCPUS: usize = 32;

/// The page shared between the hypervisor and a domain (`struct shared_info`).
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SharedInfo {
    /// Per-vCPU state.
    pub vcpu_info: [VcpuInfo; LEGACY_MAX_VCPUS],
    /// OUT: pending bit per event channel port.
    pub evtchn_pending: [u64; 64],
    /// IN: mask bit per port.
    pub evtchn_mask: [u64; 64],
    /// OUT: wallclock version (odd while updating).
    pub wc_version: u32,
    /// OUT: wallclock seconds (low 32 bits) at system time 0.
    pub wc_sec: u32,
    /// OUT: wallclock nanoseconds.
    pub wc_nsec: u32,
    /// OUT: wallclock seconds, high 32 bits.
    pub wc_sec_hi: u32,
    /// IN: number of valid P2M entries (for tools).
    pub max_pfn: u64,
    /// IN: MFN of the P2M frame-list-list (for tools).
    pub pfn_to_mfn_frame_list_list: u64,
    /// OUT: NMI reason bits.
    pub nmi_reason: u64,
    /// IN: P2M CR3 (for tools).
    pub p2m_cr3: u64,
    /// IN: P2M virtual address (for tools).
    pub p2m_vaddr: u64,
    /// IN: P2M generation count (for tools).
    pub p2m_generation: u64,
}
const _: () = assert!(core::mem::size_of::<SharedInfo>() == 3136);
const _: () = assert!(core::mem::offset_of!(SharedInfo, evtchn_pending) == 2048);
const _: () = assert!(core::mem::offset_of!(SharedInfo, wc_version) == 3072);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypercall_page_holds_every_number() {
        assert!(hypercall::ARCH_7 < NR_HYPERCALL_STUBS as u32);
        assert_eq!(NR_HYPERCALL_STUBS, 128);
    }

    #[test]
    fn hypervisor_range_is_pml4_slots_256_to_271() {
        assert_eq!((HYPERVISOR_VIRT_START >> 39) & 511, 256);
        assert_eq!(((HYPERVISOR_VIRT_END - 1) >> 39) & 511, 271);
    }
}
