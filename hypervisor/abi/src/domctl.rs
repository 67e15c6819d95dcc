//! Domain control (`public/domctl.h`, interface version 0x15 as in Xen 4.17): what a toolstack
//! (libxl, libxenctrl) sends to create, build, run and inspect domains.
//!
//! A `domctl` hypercall takes one [`XenDomctl`]: a header naming the command, the interface
//! version and the target domain, then a 128-byte union area holding the command's structure
//! (read it with zerocopy's `read_from_prefix`). The hypervisor writes the whole structure back
//! for commands with OUT fields. Guest handles (`XEN_GUEST_HANDLE_64`) are 64-bit guest virtual
//! addresses, and every 64-bit field is 8-byte aligned (`uint64_aligned_t`), so the padding
//! below is Xen's, field for field.
//!
//! Covered: the header, every command number, and the structures of the commands used to
//! create and run a PV domain: createdomain (with its flags and the x86 arch config),
//! getdomaininfo, max_vcpus, max_mem, set/getvcpucontext, getvcpuinfo, the argument-less
//! pause/unpause/resume/destroydomain, set/gettscinfo, set/get_address_size, get/set_cpu_policy (and
//! the serialised CPUID leaf and MSR entry of `public/arch-x86/xen.h`), getpageframeinfo3,
//! scheduler_op for the credit scheduler, set/getvcpuaffinity (with `xenctl_bitmap` of
//! `public/xen.h`), and the irq/iomem/ioport permission calls.
//!
//! Deliberately left out (numbers only): shadow_op, setdomainhandle, setdebugging,
//! settimeoffset, sendtrigger, subscribe, the HVM context calls,
//! device assignment and passthrough IRQs (assign/test_assign/deassign_device, bind/unbind_pt_irq,
//! memory_mapping, ioport_mapping, get_device_group), set/get_ext_vcpucontext, set_target,
//! debug_op, vm_event_op, mem_sharing_op, setvcpuextstate/getvcpuextstate, set_access_required,
//! audit_p2m, set_virq_handler, set_broken_page_p2m, node affinity, cacheflush,
//! get/set_vcpu_msrs, setvnumainfo, psr_cmt_op, monitor_op, psr_alloc, soft_reset, vuart_op,
//! vmtrace_op, paging mempool and the gdbsx calls; the credit2/RTDS scheduler parameters and the
//! per-vCPU `xen_domctl_schedparam_vcpu`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XEN_DOMCTL_INTERFACE_VERSION`: the version a caller must put in every [`XenDomctl`].
pub const XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x15;

/// `domctl` commands (`XEN_DOMCTL_*`).
pub mod cmd {
    /// Create a domain ([`super::CreateDomain`]; OUT: `domain` in the header).
    pub const CREATEDOMAIN: u32 = 1;
    /// Destroy a domain (no argument; preemptible).
    pub const DESTROYDOMAIN: u32 = 2;
    /// Pause a domain (no argument).
    pub const PAUSEDOMAIN: u32 = 3;
    /// Unpause it (no argument).
    pub const UNPAUSEDOMAIN: u32 = 4;
    /// Describe a domain ([`super::GetDomainInfo`]).
    pub const GETDOMAININFO: u32 = 5;
    /// Set a vCPU's affinity ([`super::VcpuAffinity`]).
    pub const SETVCPUAFFINITY: u32 = 9;
    /// Shadow paging and log-dirty control (not covered).
    pub const SHADOW_OP: u32 = 10;
    /// Set a domain's memory limit ([`super::MaxMem`]).
    pub const MAX_MEM: u32 = 11;
    /// Set a vCPU's registers ([`super::VcpuContext`]).
    pub const SETVCPUCONTEXT: u32 = 12;
    /// Read them ([`super::VcpuContext`]).
    pub const GETVCPUCONTEXT: u32 = 13;
    /// A vCPU's state and CPU time ([`super::GetVcpuInfo`]).
    pub const GETVCPUINFO: u32 = 14;
    /// Set the number of vCPUs ([`super::MaxVcpus`]).
    pub const MAX_VCPUS: u32 = 15;
    /// Scheduler parameters ([`super::SchedulerOpCredit`]).
    pub const SCHEDULER_OP: u32 = 16;
    /// Set the domain's UUID.
    pub const SETDOMAINHANDLE: u32 = 17;
    /// Debugger attach flag.
    pub const SETDEBUGGING: u32 = 18;
    /// Grant or revoke a PIRQ ([`super::IrqPermission`]).
    pub const IRQ_PERMISSION: u32 = 19;
    /// Grant or revoke machine frames ([`super::IomemPermission`]).
    pub const IOMEM_PERMISSION: u32 = 20;
    /// Grant or revoke I/O ports ([`super::IoportPermission`]).
    pub const IOPORT_PERMISSION: u32 = 21;
    /// Write a hypercall page into a frame.
    pub const HYPERCALL_INIT: u32 = 22;
    /// Wallclock offset (HVM).
    pub const SETTIMEOFFSET: u32 = 24;
    /// Read a vCPU's affinity ([`super::VcpuAffinity`]).
    pub const GETVCPUAFFINITY: u32 = 25;
    /// Resume a suspended domain.
    pub const RESUMEDOMAIN: u32 = 27;
    /// Inject NMI, reset, power button... (HVM).
    pub const SENDTRIGGER: u32 = 28;
    /// Port notified on the domain's suspend.
    pub const SUBSCRIBE: u32 = 29;
    /// Save HVM state.
    pub const GETHVMCONTEXT: u32 = 33;
    /// Restore it.
    pub const SETHVMCONTEXT: u32 = 34;
    /// Set a PV domain's width ([`super::AddressSize`]).
    pub const SET_ADDRESS_SIZE: u32 = 35;
    /// Read it ([`super::AddressSize`]).
    pub const GET_ADDRESS_SIZE: u32 = 36;
    /// Pass a PCI device through.
    pub const ASSIGN_DEVICE: u32 = 37;
    /// Route a machine IRQ to an HVM guest.
    pub const BIND_PT_IRQ: u32 = 38;
    /// Map MMIO into an HVM guest.
    pub const MEMORY_MAPPING: u32 = 39;
    /// Map I/O ports into an HVM guest.
    pub const IOPORT_MAPPING: u32 = 40;
    /// Set a PV vCPU's extra state (syscall32/sysenter callbacks, MCE).
    pub const SET_EXT_VCPUCONTEXT: u32 = 42;
    /// Read it.
    pub const GET_EXT_VCPUCONTEXT: u32 = 43;
    /// Whether a device could be passed through.
    pub const TEST_ASSIGN_DEVICE: u32 = 45;
    /// Let a domain control another (device-model stub domains).
    pub const SET_TARGET: u32 = 46;
    /// Take a passed-through device back.
    pub const DEASSIGN_DEVICE: u32 = 47;
    /// Undo `BIND_PT_IRQ`.
    pub const UNBIND_PT_IRQ: u32 = 48;
    /// Devices sharing an IOMMU context.
    pub const GET_DEVICE_GROUP: u32 = 50;
    /// Single-step a vCPU (HVM).
    pub const DEBUG_OP: u32 = 54;
    /// Save one HVM record.
    pub const GETHVMCONTEXT_PARTIAL: u32 = 55;
    /// VM event rings.
    pub const VM_EVENT_OP: u32 = 56;
    /// Memory sharing control.
    pub const MEM_SHARING_OP: u32 = 57;
    /// Read the TSC mode ([`super::TscInfo`]).
    pub const GETTSCINFO: u32 = 59;
    /// Set it ([`super::TscInfo`]).
    pub const SETTSCINFO: u32 = 60;
    /// Types of a list of frames ([`super::GetPageFrameInfo3`]).
    pub const GETPAGEFRAMEINFO3: u32 = 61;
    /// Restore a vCPU's XSAVE state.
    pub const SETVCPUEXTSTATE: u32 = 62;
    /// Save it.
    pub const GETVCPUEXTSTATE: u32 = 63;
    /// Whether the domain needs a memory-access listener.
    pub const SET_ACCESS_REQUIRED: u32 = 64;
    /// Check the P2M (debug).
    pub const AUDIT_P2M: u32 = 65;
    /// Which domain receives a global VIRQ.
    pub const SET_VIRQ_HANDLER: u32 = 66;
    /// Mark a frame broken.
    pub const SET_BROKEN_PAGE_P2M: u32 = 67;
    /// Set NUMA node affinity.
    pub const SETNODEAFFINITY: u32 = 68;
    /// Read it.
    pub const GETNODEAFFINITY: u32 = 69;
    /// Flush caches of a range (Arm).
    pub const CACHEFLUSH: u32 = 71;
    /// Save a vCPU's MSRs.
    pub const GET_VCPU_MSRS: u32 = 72;
    /// Restore them.
    pub const SET_VCPU_MSRS: u32 = 73;
    /// Set virtual NUMA.
    pub const SETVNUMAINFO: u32 = 74;
    /// Cache monitoring.
    pub const PSR_CMT_OP: u32 = 75;
    /// Introspection events.
    pub const MONITOR_OP: u32 = 77;
    /// Cache allocation.
    pub const PSR_ALLOC: u32 = 78;
    /// Soft reset (kexec in a guest).
    pub const SOFT_RESET: u32 = 79;
    /// Virtual UART (Arm).
    pub const VUART_OP: u32 = 81;
    /// Read the domain's CPUID/MSR policy ([`super::CpuPolicy`]).
    pub const GET_CPU_POLICY: u32 = 82;
    /// Set it ([`super::CpuPolicy`]).
    pub const SET_CPU_POLICY: u32 = 83;
    /// Processor trace.
    pub const VMTRACE_OP: u32 = 84;
    /// Size of the paging memory pool (HVM).
    pub const GET_PAGING_MEMPOOL_SIZE: u32 = 85;
    /// Set it.
    pub const SET_PAGING_MEMPOOL_SIZE: u32 = 86;
    /// Debugger memory access.
    pub const GDBSX_GUESTMEMIO: u32 = 1000;
    /// Debugger vCPU pause.
    pub const GDBSX_PAUSEVCPU: u32 = 1001;
    /// Debugger vCPU unpause.
    pub const GDBSX_UNPAUSEVCPU: u32 = 1002;
    /// Debugger domain status.
    pub const GDBSX_DOMSTATUS: u32 = 1003;
}

/// One `domctl` call (`struct xen_domctl`).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenDomctl {
    /// IN: [`cmd`].
    pub cmd: u32,
    /// IN: [`XEN_DOMCTL_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// IN: the target domain (OUT for createdomain).
    pub domain: u16,
    /// Padding.
    pub _pad: [u16; 3],
    /// IN/OUT: the command's structure (the union `u`, padded to 128 bytes).
    pub u: [u8; 128],
}
const _: () = assert!(core::mem::size_of::<XenDomctl>() == 144);
const _: () = assert!(core::mem::offset_of!(XenDomctl, cmd) == 0);
const _: () = assert!(core::mem::offset_of!(XenDomctl, interface_version) == 4);
const _: () = assert!(core::mem::offset_of!(XenDomctl, domain) == 8);
const _: () = assert!(core::mem::offset_of!(XenDomctl, u) == 16);

/// The 16-byte UUID of a domain (`xen_domain_handle_t`).
pub type DomainHandle = [u8; 16];

/// A bitmap in guest memory (`struct xenctl_bitmap`, `public/xen.h`): CPU or node masks.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenctlBitmap {
    /// IN: guest handle of the bytes (bit `n` is bit `n % 8` of byte `n / 8`).
    pub bitmap: u64,
    /// IN: bits in the bitmap.
    pub nr_bits: u32,
    /// Padding.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<XenctlBitmap>() == 16);
const _: () = assert!(core::mem::offset_of!(XenctlBitmap, bitmap) == 0);
const _: () = assert!(core::mem::offset_of!(XenctlBitmap, nr_bits) == 8);

/// `XEN_DOMCTL_CDF_*`: the `flags` of [`CreateDomain`].
pub mod cdf {
    /// An HVM domain (clear: PV).
    pub const HVM: u32 = 1 << 0;
    /// Use hardware-assisted paging (HVM).
    pub const HAP: u32 = 1 << 1;
    /// Protect the domain's memory across S3 (TXT).
    pub const S3_INTEGRITY: u32 = 1 << 2;
    /// Disable out-of-sync shadow page tables.
    pub const OOS_OFF: u32 = 1 << 3;
    /// The domain runs xenstored.
    pub const XS_DOMAIN: u32 = 1 << 4;
    /// The domain gets an IOMMU context.
    pub const IOMMU: u32 = 1 << 5;
    /// Nested virtualisation (HVM).
    pub const NESTED_VIRT: u32 = 1 << 6;
    /// Virtual PMU.
    pub const VPMU: u32 = 1 << 7;
}

/// `XEN_DOMCTL_IOMMU_no_sharept`: the `iommu_opts` bit keeping IOMMU and CPU page tables apart.
pub const XEN_DOMCTL_IOMMU_NO_SHAREPT: u32 = 1;
/// `XEN_DOMCTL_GRANT_version_mask`: the highest grant-table version allowed, in `grant_opts`.
pub const XEN_DOMCTL_GRANT_VERSION_MASK: u32 = 0xf;

/// `XEN_X86_EMU_*`: devices the hypervisor emulates for an x86 domain
/// ([`ArchDomainConfig::emulation_flags`]); a PV domain has none.
pub mod x86_emu {
    /// Local APIC.
    pub const LAPIC: u32 = 1 << 0;
    /// HPET.
    pub const HPET: u32 = 1 << 1;
    /// ACPI PM timer and registers.
    pub const PM: u32 = 1 << 2;
    /// RTC.
    pub const RTC: u32 = 1 << 3;
    /// IO-APIC.
    pub const IOAPIC: u32 = 1 << 4;
    /// 8259 PIC.
    pub const PIC: u32 = 1 << 5;
    /// Standard VGA.
    pub const VGA: u32 = 1 << 6;
    /// IOMMU.
    pub const IOMMU: u32 = 1 << 7;
    /// PIT.
    pub const PIT: u32 = 1 << 8;
    /// Interrupts through PIRQs (PVH/HVM).
    pub const USE_PIRQ: u32 = 1 << 9;
    /// Virtual PCI.
    pub const VPCI: u32 = 1 << 10;
    /// All of them.
    pub const ALL: u32 = (1 << 11) - 1;
}

/// `XEN_X86_MSR_RELAXED`: [`ArchDomainConfig::misc_flags`] bit making unhandled MSR accesses
/// read zero and ignore writes instead of raising #GP.
pub const XEN_X86_MSR_RELAXED: u32 = 1;

/// The x86 part of [`CreateDomain`] (`struct xen_arch_domainconfig`, `public/arch-x86/xen.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ArchDomainConfig {
    /// IN: [`x86_emu`].
    pub emulation_flags: u32,
    /// IN: [`XEN_X86_MSR_RELAXED`].
    pub misc_flags: u32,
}
const _: () = assert!(core::mem::size_of::<ArchDomainConfig>() == 8);
const _: () = assert!(core::mem::offset_of!(ArchDomainConfig, emulation_flags) == 0);
const _: () = assert!(core::mem::offset_of!(ArchDomainConfig, misc_flags) == 4);

/// Argument of `XEN_DOMCTL_createdomain` (`struct xen_domctl_createdomain`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CreateDomain {
    /// IN: security label (XSM).
    pub ssidref: u32,
    /// IN: UUID.
    pub handle: DomainHandle,
    /// IN: [`cdf`].
    pub flags: u32,
    /// IN: [`XEN_DOMCTL_IOMMU_NO_SHAREPT`].
    pub iommu_opts: u32,
    /// IN: vCPUs.
    pub max_vcpus: u32,
    /// IN: highest event-channel port.
    pub max_evtchn_port: u32,
    /// IN: grant-table frames (-1: the host default).
    pub max_grant_frames: i32,
    /// IN: maptrack frames (-1: the host default).
    pub max_maptrack_frames: i32,
    /// IN: [`XEN_DOMCTL_GRANT_VERSION_MASK`].
    pub grant_opts: u32,
    /// IN: per-vCPU trace buffer bytes (0: none).
    pub vmtrace_size: u32,
    /// IN: the CPU pool.
    pub cpupool_id: u32,
    /// IN: x86 configuration.
    pub arch: ArchDomainConfig,
}
const _: () = assert!(core::mem::size_of::<CreateDomain>() == 64);
const _: () = assert!(core::mem::offset_of!(CreateDomain, ssidref) == 0);
const _: () = assert!(core::mem::offset_of!(CreateDomain, handle) == 4);
const _: () = assert!(core::mem::offset_of!(CreateDomain, flags) == 20);
const _: () = assert!(core::mem::offset_of!(CreateDomain, iommu_opts) == 24);
const _: () = assert!(core::mem::offset_of!(CreateDomain, max_vcpus) == 28);
const _: () = assert!(core::mem::offset_of!(CreateDomain, max_evtchn_port) == 32);
const _: () = assert!(core::mem::offset_of!(CreateDomain, max_grant_frames) == 36);
const _: () = assert!(core::mem::offset_of!(CreateDomain, max_maptrack_frames) == 40);
const _: () = assert!(core::mem::offset_of!(CreateDomain, grant_opts) == 44);
const _: () = assert!(core::mem::offset_of!(CreateDomain, vmtrace_size) == 48);
const _: () = assert!(core::mem::offset_of!(CreateDomain, cpupool_id) == 52);
const _: () = assert!(core::mem::offset_of!(CreateDomain, arch) == 56);

/// `XEN_DOMINF_*`: the `flags` of [`GetDomainInfo`]; the shutdown reason sits in bits 16-23.
pub mod dominf {
    /// Being destroyed.
    pub const DYING: u32 = 1 << 0;
    /// HVM.
    pub const HVM_GUEST: u32 = 1 << 1;
    /// Shut down (reason in [`SHUTDOWNSHIFT`]).
    pub const SHUTDOWN: u32 = 1 << 2;
    /// Paused by the toolstack.
    pub const PAUSED: u32 = 1 << 3;
    /// Every vCPU is blocked.
    pub const BLOCKED: u32 = 1 << 4;
    /// A vCPU is running.
    pub const RUNNING: u32 = 1 << 5;
    /// Being debugged.
    pub const DEBUGGED: u32 = 1 << 6;
    /// Runs xenstored.
    pub const XS_DOMAIN: u32 = 1 << 7;
    /// Uses hardware-assisted paging.
    pub const HAP: u32 = 1 << 8;
    /// The shutdown-reason field, once shifted down.
    pub const SHUTDOWNMASK: u32 = 255;
    /// Where the shutdown reason (`SHUTDOWN_*`) starts.
    pub const SHUTDOWNSHIFT: u32 = 16;
}

/// `XEN_INVALID_MAX_VCPU_ID`: [`GetDomainInfo::max_vcpu_id`] of a domain without vCPUs.
pub const XEN_INVALID_MAX_VCPU_ID: u32 = 0xffff_ffff;

/// Argument of `XEN_DOMCTL_getdomaininfo` and the entries of `XEN_SYSCTL_getdomaininfolist`
/// (`struct xen_domctl_getdomaininfo`), all OUT.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GetDomainInfo {
    /// OUT: the domain described (getdomaininfo: the first existing one from the header's).
    pub domain: u16,
    /// Padding.
    pub pad1: u16,
    /// OUT: [`dominf`].
    pub flags: u32,
    /// OUT: pages owned.
    pub tot_pages: u64,
    /// OUT: page limit.
    pub max_pages: u64,
    /// OUT: pages claimed but not yet allocated.
    pub outstanding_pages: u64,
    /// OUT: pages shared.
    pub shr_pages: u64,
    /// OUT: pages paged out.
    pub paged_pages: u64,
    /// OUT: frame of the shared-info page.
    pub shared_info_frame: u64,
    /// OUT: CPU time used, in ns.
    pub cpu_time: u64,
    /// OUT: vCPUs up.
    pub nr_online_vcpus: u32,
    /// OUT: highest vCPU id ([`XEN_INVALID_MAX_VCPU_ID`]: none).
    pub max_vcpu_id: u32,
    /// OUT: security label.
    pub ssidref: u32,
    /// OUT: UUID.
    pub handle: DomainHandle,
    /// OUT: CPU pool.
    pub cpupool: u32,
    /// OUT: guest-physical address width.
    pub gpaddr_bits: u8,
    /// Padding.
    pub pad2: [u8; 7],
    /// OUT: x86 configuration.
    pub arch_config: ArchDomainConfig,
}
const _: () = assert!(core::mem::size_of::<GetDomainInfo>() == 112);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, domain) == 0);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, pad1) == 2);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, flags) == 4);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, tot_pages) == 8);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, max_pages) == 16);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, outstanding_pages) == 24);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, shr_pages) == 32);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, paged_pages) == 40);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, shared_info_frame) == 48);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, cpu_time) == 56);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, nr_online_vcpus) == 64);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, max_vcpu_id) == 68);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, ssidref) == 72);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, handle) == 76);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, cpupool) == 92);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, gpaddr_bits) == 96);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, pad2) == 97);
const _: () = assert!(core::mem::offset_of!(GetDomainInfo, arch_config) == 104);

/// `XEN_DOMCTL_PFINFO_*`: the type a [`GetPageFrameInfo3`] entry receives in bits 28-31.
pub mod pfinfo {
    /// Where the type starts.
    pub const LTAB_SHIFT: u32 = 28;
    /// Not a page table.
    pub const NOTAB: u32 = 0;
    /// An L1 page table.
    pub const L1TAB: u32 = 0x1 << 28;
    /// An L2 page table.
    pub const L2TAB: u32 = 0x2 << 28;
    /// An L3 page table.
    pub const L3TAB: u32 = 0x3 << 28;
    /// An L4 page table.
    pub const L4TAB: u32 = 0x4 << 28;
    /// The page-table level bits.
    pub const LTABTYPE_MASK: u32 = 0x7 << 28;
    /// The page table is pinned.
    pub const LPINTAB: u32 = 0x1 << 31;
    /// Not a frame of the domain.
    pub const XTAB: u32 = 0xf << 28;
    /// Allocate-only (not populated).
    pub const XALLOC: u32 = 0xe << 28;
    /// Broken frame.
    pub const BROKEN: u32 = 0xd << 28;
    /// All the type bits.
    pub const LTAB_MASK: u32 = 0xf << 28;
}

/// Argument of `XEN_DOMCTL_getpageframeinfo3` (`struct xen_domctl_getpageframeinfo3`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GetPageFrameInfo3 {
    /// IN: entries in the array.
    pub num: u64,
    /// IN/OUT: guest handle of `xen_pfn_t` frames, each ORed with its [`pfinfo`] type on return.
    pub array: u64,
}
const _: () = assert!(core::mem::size_of::<GetPageFrameInfo3>() == 16);
const _: () = assert!(core::mem::offset_of!(GetPageFrameInfo3, num) == 0);
const _: () = assert!(core::mem::offset_of!(GetPageFrameInfo3, array) == 8);

/// Argument of `XEN_DOMCTL_max_mem` (`struct xen_domctl_max_mem`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MaxMem {
    /// IN: the limit in KiB.
    pub max_memkb: u64,
}
const _: () = assert!(core::mem::size_of::<MaxMem>() == 8);
const _: () = assert!(core::mem::offset_of!(MaxMem, max_memkb) == 0);

/// Argument of `XEN_DOMCTL_setvcpucontext` and `getvcpucontext` (`struct
/// xen_domctl_vcpucontext`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuContext {
    /// IN: the vCPU.
    pub vcpu: u32,
    /// Padding.
    pub _pad: u32,
    /// IN/OUT: guest handle of a [`crate::vcpu::VcpuGuestContext`] (set: 0 resets the vCPU).
    pub ctxt: u64,
}
const _: () = assert!(core::mem::size_of::<VcpuContext>() == 16);
const _: () = assert!(core::mem::offset_of!(VcpuContext, vcpu) == 0);
const _: () = assert!(core::mem::offset_of!(VcpuContext, ctxt) == 8);

/// Argument of `XEN_DOMCTL_getvcpuinfo` (`struct xen_domctl_getvcpuinfo`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GetVcpuInfo {
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT: 1 if up.
    pub online: u8,
    /// OUT: 1 if blocked waiting for an event.
    pub blocked: u8,
    /// OUT: 1 if running on a CPU now.
    pub running: u8,
    /// Padding.
    pub _pad0: u8,
    /// OUT: CPU time used, in ns.
    pub cpu_time: u64,
    /// OUT: the CPU it last ran on.
    pub cpu: u32,
    /// Padding.
    pub _pad1: u32,
}
const _: () = assert!(core::mem::size_of::<GetVcpuInfo>() == 24);
const _: () = assert!(core::mem::offset_of!(GetVcpuInfo, vcpu) == 0);
const _: () = assert!(core::mem::offset_of!(GetVcpuInfo, online) == 4);
const _: () = assert!(core::mem::offset_of!(GetVcpuInfo, blocked) == 5);
const _: () = assert!(core::mem::offset_of!(GetVcpuInfo, running) == 6);
const _: () = assert!(core::mem::offset_of!(GetVcpuInfo, cpu_time) == 8);
const _: () = assert!(core::mem::offset_of!(GetVcpuInfo, cpu) == 16);

/// `XEN_VCPUAFFINITY_*`: the `flags` of [`VcpuAffinity`].
pub mod vcpuaffinity {
    /// Hard affinity: where the vCPU may run.
    pub const HARD: u32 = 1 << 0;
    /// Soft affinity: where it prefers to run.
    pub const SOFT: u32 = 1 << 1;
    /// Set it even though that breaks a temporary pinning.
    pub const FORCE: u32 = 1 << 2;
}

/// Argument of `XEN_DOMCTL_setvcpuaffinity` and `getvcpuaffinity` (`struct
/// xen_domctl_vcpuaffinity`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuAffinity {
    /// IN: the vCPU.
    pub vcpu: u32,
    /// IN: [`vcpuaffinity`].
    pub flags: u32,
    /// IN/OUT: the hard affinity mask (set: OUT the effective one).
    pub cpumap_hard: XenctlBitmap,
    /// IN/OUT: the soft affinity mask.
    pub cpumap_soft: XenctlBitmap,
}
const _: () = assert!(core::mem::size_of::<VcpuAffinity>() == 40);
const _: () = assert!(core::mem::offset_of!(VcpuAffinity, vcpu) == 0);
const _: () = assert!(core::mem::offset_of!(VcpuAffinity, flags) == 4);
const _: () = assert!(core::mem::offset_of!(VcpuAffinity, cpumap_hard) == 8);
const _: () = assert!(core::mem::offset_of!(VcpuAffinity, cpumap_soft) == 24);

/// Argument of `XEN_DOMCTL_max_vcpus` (`struct xen_domctl_max_vcpus`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MaxVcpus {
    /// IN: the number of vCPUs.
    pub max: u32,
}
const _: () = assert!(core::mem::size_of::<MaxVcpus>() == 4);
const _: () = assert!(core::mem::offset_of!(MaxVcpus, max) == 0);

/// `XEN_SCHEDULER_*`: scheduler ids (also `XEN_SYSCTL_sched_id`).
pub mod scheduler {
    /// Credit (Xen's default before 4.12; Hestia's).
    pub const CREDIT: u32 = 5;
    /// Credit2.
    pub const CREDIT2: u32 = 6;
    /// ARINC 653.
    pub const ARINC653: u32 = 7;
    /// RTDS.
    pub const RTDS: u32 = 8;
    /// Null (one vCPU per CPU).
    pub const NULL: u32 = 9;
}

/// `XEN_DOMCTL_SCHEDOP_*`: the `cmd` of a scheduler op.
pub mod schedop {
    /// Set the domain's parameters.
    pub const PUTINFO: u32 = 0;
    /// Read them.
    pub const GETINFO: u32 = 1;
    /// Set per-vCPU parameters (not credit).
    pub const PUTVCPUINFO: u32 = 2;
    /// Read them.
    pub const GETVCPUINFO: u32 = 3;
}

/// Argument of `XEN_DOMCTL_scheduler_op` for the credit scheduler (`struct
/// xen_domctl_scheduler_op` with its union `u` holding `struct xen_domctl_sched_credit`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedulerOpCredit {
    /// IN: [`scheduler::CREDIT`].
    pub sched_id: u32,
    /// IN: [`schedop`] `PUTINFO` or `GETINFO`.
    pub cmd: u32,
    /// IN/OUT: relative weight, 1-65535 (put: 0 keeps the current one).
    pub weight: u16,
    /// IN/OUT: cap in percent of one CPU (0: none; put: `u16::MAX` keeps the current one).
    pub cap: u16,
    /// The rest of the union (its largest member holds a handle and two counts).
    pub _pad: [u32; 3],
}
const _: () = assert!(core::mem::size_of::<SchedulerOpCredit>() == 24);
const _: () = assert!(core::mem::offset_of!(SchedulerOpCredit, sched_id) == 0);
const _: () = assert!(core::mem::offset_of!(SchedulerOpCredit, cmd) == 4);
const _: () = assert!(core::mem::offset_of!(SchedulerOpCredit, weight) == 8);
const _: () = assert!(core::mem::offset_of!(SchedulerOpCredit, cap) == 10);

/// Argument of `XEN_DOMCTL_irq_permission` (`struct xen_domctl_irq_permission`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IrqPermission {
    /// IN: the PIRQ (in the caller's space).
    pub pirq: u32,
    /// IN: nonzero to allow, 0 to revoke.
    pub allow_access: u8,
    /// Padding.
    pub pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<IrqPermission>() == 8);
const _: () = assert!(core::mem::offset_of!(IrqPermission, pirq) == 0);
const _: () = assert!(core::mem::offset_of!(IrqPermission, allow_access) == 4);
const _: () = assert!(core::mem::offset_of!(IrqPermission, pad) == 5);

/// Argument of `XEN_DOMCTL_iomem_permission` (`struct xen_domctl_iomem_permission`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IomemPermission {
    /// IN: first machine frame.
    pub first_mfn: u64,
    /// IN: frames (more than 0).
    pub nr_mfns: u64,
    /// IN: nonzero to allow, 0 to revoke.
    pub allow_access: u8,
    /// Padding.
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<IomemPermission>() == 24);
const _: () = assert!(core::mem::offset_of!(IomemPermission, first_mfn) == 0);
const _: () = assert!(core::mem::offset_of!(IomemPermission, nr_mfns) == 8);
const _: () = assert!(core::mem::offset_of!(IomemPermission, allow_access) == 16);

/// Argument of `XEN_DOMCTL_ioport_permission` (`struct xen_domctl_ioport_permission`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IoportPermission {
    /// IN: first port.
    pub first_port: u32,
    /// IN: ports.
    pub nr_ports: u32,
    /// IN: nonzero to allow, 0 to revoke.
    pub allow_access: u8,
    /// Padding.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<IoportPermission>() == 12);
const _: () = assert!(core::mem::offset_of!(IoportPermission, first_port) == 0);
const _: () = assert!(core::mem::offset_of!(IoportPermission, nr_ports) == 4);
const _: () = assert!(core::mem::offset_of!(IoportPermission, allow_access) == 8);

/// Argument of `XEN_DOMCTL_setnodeaffinity` and `getnodeaffinity` (`struct
/// xen_domctl_nodeaffinity`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NodeAffinity {
    /// IN (set) / OUT (get, through the handle): the NUMA nodes.
    pub nodemap: XenctlBitmap,
}
const _: () = assert!(core::mem::size_of::<NodeAffinity>() == 16);

/// `TSC_MODE_*`: [`TscInfo::tsc_mode`].
pub mod tsc_mode {
    /// Native where the host TSC is safe, emulated otherwise.
    pub const DEFAULT: u32 = 0;
    /// Always emulated.
    pub const ALWAYS_EMULATE: u32 = 1;
    /// Never emulated.
    pub const NEVER_EMULATE: u32 = 2;
}

/// Argument of `XEN_DOMCTL_hypercall_init` (`struct xen_domctl_hypercall_init`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HypercallInit {
    /// IN: the target's frame to fill with hypercall stubs (a PV domain's: its MFN).
    pub gmfn: u64,
}
const _: () = assert!(core::mem::size_of::<HypercallInit>() == 8);

/// Argument of `XEN_DOMCTL_set_address_size` and `get_address_size` (`struct
/// xen_domctl_address_size`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AddressSize {
    /// IN (set) / OUT (get): 32 or 64.
    pub size: u32,
}
const _: () = assert!(core::mem::size_of::<AddressSize>() == 4);
const _: () = assert!(core::mem::offset_of!(AddressSize, size) == 0);

/// Argument of `XEN_DOMCTL_settscinfo` and `gettscinfo` (`struct xen_domctl_tsc_info`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TscInfo {
    /// IN/OUT: Xen's TSC mode (0 default, 1 always emulate, 2 never emulate).
    pub tsc_mode: u32,
    /// IN/OUT: guest TSC frequency in kHz.
    pub gtsc_khz: u32,
    /// IN/OUT: how many times the domain has been migrated or restored.
    pub incarnation: u32,
    /// Padding.
    pub pad: u32,
    /// IN/OUT: ns elapsed, carried across migration.
    pub elapsed_nsec: u64,
}
const _: () = assert!(core::mem::size_of::<TscInfo>() == 24);
const _: () = assert!(core::mem::offset_of!(TscInfo, tsc_mode) == 0);
const _: () = assert!(core::mem::offset_of!(TscInfo, gtsc_khz) == 4);
const _: () = assert!(core::mem::offset_of!(TscInfo, incarnation) == 8);
const _: () = assert!(core::mem::offset_of!(TscInfo, pad) == 12);
const _: () = assert!(core::mem::offset_of!(TscInfo, elapsed_nsec) == 16);

/// `XEN_CPUID_NO_SUBLEAF`: [`CpuidLeaf::subleaf`] of a leaf without sub-leaves.
pub const XEN_CPUID_NO_SUBLEAF: u32 = 0xffff_ffff;
/// `XEN_CPUID_INPUT_UNUSED`: an `err_*` field of [`CpuPolicy`] naming nothing.
pub const XEN_CPUID_INPUT_UNUSED: u32 = 0xffff_ffff;

/// One serialised CPUID leaf of a policy (`xen_cpuid_leaf_t`, `public/arch-x86/xen.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CpuidLeaf {
    /// The leaf (EAX input).
    pub leaf: u32,
    /// The sub-leaf (ECX input) or [`XEN_CPUID_NO_SUBLEAF`].
    pub subleaf: u32,
    /// EAX.
    pub a: u32,
    /// EBX.
    pub b: u32,
    /// ECX.
    pub c: u32,
    /// EDX.
    pub d: u32,
}
const _: () = assert!(core::mem::size_of::<CpuidLeaf>() == 24);
const _: () = assert!(core::mem::offset_of!(CpuidLeaf, leaf) == 0);
const _: () = assert!(core::mem::offset_of!(CpuidLeaf, subleaf) == 4);
const _: () = assert!(core::mem::offset_of!(CpuidLeaf, a) == 8);
const _: () = assert!(core::mem::offset_of!(CpuidLeaf, b) == 12);
const _: () = assert!(core::mem::offset_of!(CpuidLeaf, c) == 16);
const _: () = assert!(core::mem::offset_of!(CpuidLeaf, d) == 20);

/// One serialised MSR of a policy (`xen_msr_entry_t`, `public/arch-x86/xen.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MsrEntry {
    /// The MSR index.
    pub idx: u32,
    /// Reserved, zero.
    pub flags: u32,
    /// Its value.
    pub val: u64,
}
const _: () = assert!(core::mem::size_of::<MsrEntry>() == 16);
const _: () = assert!(core::mem::offset_of!(MsrEntry, idx) == 0);
const _: () = assert!(core::mem::offset_of!(MsrEntry, flags) == 4);
const _: () = assert!(core::mem::offset_of!(MsrEntry, val) == 8);

/// Argument of `XEN_DOMCTL_get_cpu_policy` and `set_cpu_policy` (`struct xen_domctl_cpu_policy`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CpuPolicy {
    /// IN: room in / entries of `leaves`; OUT: entries written.
    pub nr_leaves: u32,
    /// IN: room in / entries of `msrs`; OUT: entries written.
    pub nr_msrs: u32,
    /// IN/OUT: guest handle of [`CpuidLeaf`] entries.
    pub leaves: u64,
    /// IN/OUT: guest handle of [`MsrEntry`] entries.
    pub msrs: u64,
    /// OUT (set): the leaf refused, or [`XEN_CPUID_INPUT_UNUSED`].
    pub err_leaf: u32,
    /// OUT (set): its sub-leaf.
    pub err_subleaf: u32,
    /// OUT (set): the MSR refused.
    pub err_msr: u32,
    /// Padding.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<CpuPolicy>() == 40);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, nr_leaves) == 0);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, nr_msrs) == 4);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, leaves) == 8);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, msrs) == 16);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, err_leaf) == 24);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, err_subleaf) == 28);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, err_msr) == 32);

/// `XEN_DOMCTL_SHADOW_OP_*`: the sub-ops of `XEN_DOMCTL_shadow_op`.
pub mod shadow_op {
    /// Leave shadow and log-dirty mode (libxenguest's save issues it when it ends).
    pub const OFF: u32 = 0;
    /// Enable a shadow mode.
    pub const ENABLE: u32 = 32;
    /// Log-dirty mode for live migration.
    pub const ENABLE_LOGDIRTY: u32 = 2;
    /// Read and clear the dirty bitmap.
    pub const CLEAN: u32 = 11;
    /// Read the dirty bitmap.
    pub const PEEK: u32 = 12;
    /// The shadow pool's size in MiB.
    pub const GET_ALLOCATION: u32 = 30;
    /// Resize the shadow pool.
    pub const SET_ALLOCATION: u32 = 31;
}

/// Argument of `XEN_DOMCTL_shadow_op` (`struct xen_domctl_shadow_op`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ShadowOp {
    /// IN: a [`shadow_op`] sub-op.
    pub op: u32,
    /// IN: the mode for `ENABLE`.
    pub mode: u32,
    /// IN/OUT: the shadow pool in MiB (`GET_ALLOCATION`/`SET_ALLOCATION`).
    pub mb: u32,
    /// Padding.
    pub _pad: u32,
    /// IN: guest handle of the dirty bitmap.
    pub dirty_bitmap: u64,
    /// IN/OUT: pages in the bitmap.
    pub pages: u64,
    /// OUT: fault and dirty counts (`struct xen_domctl_shadow_op_stats`).
    pub stats: [u32; 2],
}
const _: () = assert!(core::mem::size_of::<ShadowOp>() == 40);
const _: () = assert!(core::mem::offset_of!(ShadowOp, mb) == 8);
const _: () = assert!(core::mem::offset_of!(ShadowOp, dirty_bitmap) == 16);
const _: () = assert!(core::mem::offset_of!(ShadowOp, pages) == 24);

/// Argument of `XEN_DOMCTL_get_ext_vcpucontext` and `set_ext_vcpucontext` (`struct
/// xen_domctl_ext_vcpucontext`, x86): what a PV vCPU has besides `vcpu_guest_context`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ExtVcpuContext {
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT (get) / IN (set): bytes of the structure that are meaningful.
    pub size: u32,
    /// The 32-bit SYSCALL callback.
    pub syscall32_callback_eip: u64,
    /// The 32-bit SYSENTER callback.
    pub sysenter_callback_eip: u64,
    /// Its code selector.
    pub syscall32_callback_cs: u16,
    /// Its code selector.
    pub sysenter_callback_cs: u16,
    /// Events masked while the 32-bit SYSCALL callback runs.
    pub syscall32_disables_events: u8,
    /// Events masked while the SYSENTER callback runs.
    pub sysenter_disables_events: u8,
    /// Padding.
    pub _pad: u16,
    /// The virtual MCA (`struct hvm_vmce_vcpu`): MCG_CAP.
    pub mcg_cap: u64,
    /// IA32_MC0_CTL2.
    pub mci_ctl2_bank0: u64,
    /// IA32_MC1_CTL2.
    pub mci_ctl2_bank1: u64,
    /// MCG_EXT_CTL.
    pub mcg_ext_ctl: u64,
}
const _: () = assert!(core::mem::size_of::<ExtVcpuContext>() == 64);
const _: () = assert!(core::mem::offset_of!(ExtVcpuContext, sysenter_callback_eip) == 16);
const _: () = assert!(core::mem::offset_of!(ExtVcpuContext, syscall32_callback_cs) == 24);
const _: () = assert!(core::mem::offset_of!(ExtVcpuContext, sysenter_disables_events) == 29);
const _: () = assert!(core::mem::offset_of!(ExtVcpuContext, mcg_cap) == 32);
const _: () = assert!(core::mem::offset_of!(ExtVcpuContext, mcg_ext_ctl) == 56);

/// Argument of `XEN_DOMCTL_getvcpuextstate` and `setvcpuextstate` (`struct
/// xen_domctl_vcpuextstate`). The buffer holds XCR0, XCR0_ACCUM and the uncompressed XSAVE
/// area for XCR0_ACCUM's components.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuExtState {
    /// IN: the vCPU.
    pub vcpu: u32,
    /// Padding.
    pub _pad: u32,
    /// IN/OUT: the host's XSAVE feature mask.
    pub xfeature_mask: u64,
    /// IN/OUT: bytes of the buffer.
    pub size: u64,
    /// IN: guest handle of the buffer.
    pub buffer: u64,
}
const _: () = assert!(core::mem::size_of::<VcpuExtState>() == 32);
const _: () = assert!(core::mem::offset_of!(VcpuExtState, xfeature_mask) == 8);
const _: () = assert!(core::mem::offset_of!(VcpuExtState, size) == 16);
const _: () = assert!(core::mem::offset_of!(VcpuExtState, buffer) == 24);

/// One MSR of [`VcpuMsrs`] (`struct xen_domctl_vcpu_msr`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuMsr {
    /// The MSR's index.
    pub index: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Its value.
    pub value: u64,
}
const _: () = assert!(core::mem::size_of::<VcpuMsr>() == 16);

/// Argument of `XEN_DOMCTL_get_vcpu_msrs` and `set_vcpu_msrs` (`struct xen_domctl_vcpu_msrs`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuMsrs {
    /// IN: the vCPU.
    pub vcpu: u32,
    /// IN: room in / entries of `msrs`; OUT: entries written, or needed.
    pub msr_count: u32,
    /// IN/OUT: guest handle of [`VcpuMsr`] entries (null: ask for the most there can be).
    pub msrs: u64,
}
const _: () = assert!(core::mem::size_of::<VcpuMsrs>() == 16);
