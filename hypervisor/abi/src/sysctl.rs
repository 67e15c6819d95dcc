//! System control (`public/sysctl.h`, interface version 0x15 as in Xen 4.17): host-wide
//! queries and settings for the toolstack.
//!
//! A `sysctl` hypercall takes one [`XenSysctl`]: the command and interface version, then a
//! 128-byte union area (8-byte aligned, so it starts at offset 8) holding the command's
//! structure. Guest handles are 64-bit guest virtual addresses.
//!
//! Covered: the header, every command number, physinfo, sched_id, getdomaininfolist (whose
//! entries are [`crate::domctl::GetDomainInfo`]), get_cpu_featureset, get_cpu_policy (entries
//! [`crate::domctl::CpuidLeaf`] and [`crate::domctl::MsrEntry`]) and the basic cpupool_op.
//! Deliberately left out (numbers only): readconsole, tbuf_op, perfc_op, debug_keys,
//! getcpuinfo, availheap, get_pmstat, cpu_hotplug, pm_op, page_offline_op, lockprof_op,
//! cputopoinfo, numainfo, pcitopoinfo, scheduler_op (global scheduler parameters),
//! coverage_op, psr_cmt_op, psr_alloc, get_cpu_levelling_caps and livepatch_op.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::domctl::XenctlBitmap;

/// `XEN_SYSCTL_INTERFACE_VERSION`: the version a caller must put in every [`XenSysctl`].
pub const XEN_SYSCTL_INTERFACE_VERSION: u32 = 0x15;

/// `sysctl` commands (`XEN_SYSCTL_*`).
pub mod cmd {
    /// Read the hypervisor's console ring.
    pub const READCONSOLE: u32 = 1;
    /// Trace buffers.
    pub const TBUF_OP: u32 = 2;
    /// Host CPUs, memory and capabilities ([`super::Physinfo`]).
    pub const PHYSINFO: u32 = 3;
    /// The scheduler in use ([`super::SchedId`]).
    pub const SCHED_ID: u32 = 4;
    /// Performance counters.
    pub const PERFC_OP: u32 = 5;
    /// Describe several domains ([`super::GetDomainInfoList`]).
    pub const GETDOMAININFOLIST: u32 = 6;
    /// Press debug keys.
    pub const DEBUG_KEYS: u32 = 7;
    /// Per-CPU idle time.
    pub const GETCPUINFO: u32 = 8;
    /// Free memory per node and zone.
    pub const AVAILHEAP: u32 = 9;
    /// Power-management statistics.
    pub const GET_PMSTAT: u32 = 10;
    /// Bring CPUs on or offline.
    pub const CPU_HOTPLUG: u32 = 11;
    /// Power-management settings.
    pub const PM_OP: u32 = 12;
    /// Offline or online memory pages.
    pub const PAGE_OFFLINE_OP: u32 = 14;
    /// Lock profiling.
    pub const LOCKPROF_OP: u32 = 15;
    /// CPU topology.
    pub const CPUTOPOINFO: u32 = 16;
    /// NUMA topology.
    pub const NUMAINFO: u32 = 17;
    /// CPU pools ([`super::CpupoolOp`]).
    pub const CPUPOOL_OP: u32 = 18;
    /// Global scheduler parameters.
    pub const SCHEDULER_OP: u32 = 19;
    /// Code coverage.
    pub const COVERAGE_OP: u32 = 20;
    /// Cache monitoring.
    pub const PSR_CMT_OP: u32 = 21;
    /// PCI device topology.
    pub const PCITOPOINFO: u32 = 22;
    /// Cache allocation.
    pub const PSR_ALLOC: u32 = 23;
    /// CPUID faulting/masking abilities.
    pub const GET_CPU_LEVELLING_CAPS: u32 = 25;
    /// A CPU featureset ([`super::CpuFeatureset`]).
    pub const GET_CPU_FEATURESET: u32 = 26;
    /// Live patching.
    pub const LIVEPATCH_OP: u32 = 27;
    /// A system CPU policy ([`super::CpuPolicy`]).
    pub const GET_CPU_POLICY: u32 = 29;
}

/// One `sysctl` call (`struct xen_sysctl`).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenSysctl {
    /// IN: [`cmd`].
    pub cmd: u32,
    /// IN: [`XEN_SYSCTL_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// IN/OUT: the command's structure (the union `u`, padded to 128 bytes).
    pub u: [u8; 128],
}
const _: () = assert!(core::mem::size_of::<XenSysctl>() == 136);
const _: () = assert!(core::mem::offset_of!(XenSysctl, cmd) == 0);
const _: () = assert!(core::mem::offset_of!(XenSysctl, interface_version) == 4);
const _: () = assert!(core::mem::offset_of!(XenSysctl, u) == 8);

/// `XEN_SYSCTL_PHYSCAP_*`: [`Physinfo::capabilities`].
pub mod physcap {
    /// HVM guests can run.
    pub const HVM: u32 = 1 << 0;
    /// PV guests can run.
    pub const PV: u32 = 1 << 1;
    /// Devices can be passed through.
    pub const DIRECTIO: u32 = 1 << 2;
    /// Hardware-assisted paging.
    pub const HAP: u32 = 1 << 3;
    /// Shadow paging.
    pub const SHADOW: u32 = 1 << 4;
    /// The IOMMU can share the HAP page tables.
    pub const IOMMU_HAP_PT_SHARE: u32 = 1 << 5;
    /// Processor trace.
    pub const VMTRACE: u32 = 1 << 6;
    /// Virtual PMU.
    pub const VPMU: u32 = 1 << 7;
    /// Grant tables v1.
    pub const GNTTAB_V1: u32 = 1 << 8;
    /// Grant tables v2.
    pub const GNTTAB_V2: u32 = 1 << 9;
}

/// Argument of `XEN_SYSCTL_physinfo` (`struct xen_sysctl_physinfo`), all OUT.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Physinfo {
    /// OUT: threads per core.
    pub threads_per_core: u32,
    /// OUT: cores per socket.
    pub cores_per_socket: u32,
    /// OUT: CPUs online.
    pub nr_cpus: u32,
    /// OUT: highest possible CPU id.
    pub max_cpu_id: u32,
    /// OUT: NUMA nodes online.
    pub nr_nodes: u32,
    /// OUT: highest possible node id.
    pub max_node_id: u32,
    /// OUT: CPU frequency in kHz.
    pub cpu_khz: u32,
    /// OUT: [`physcap`].
    pub capabilities: u32,
    /// OUT: architecture capabilities (none defined for x86 in 4.17).
    pub arch_capabilities: u32,
    /// Padding.
    pub pad: u32,
    /// OUT: pages of RAM.
    pub total_pages: u64,
    /// OUT: free pages.
    pub free_pages: u64,
    /// OUT: free pages still to be scrubbed.
    pub scrub_pages: u64,
    /// OUT: pages claimed by domains being built.
    pub outstanding_pages: u64,
    /// OUT: highest possible MFN.
    pub max_mfn: u64,
    /// OUT: the host's CPU feature words.
    pub hw_cap: [u32; 8],
}
const _: () = assert!(core::mem::size_of::<Physinfo>() == 112);
const _: () = assert!(core::mem::offset_of!(Physinfo, threads_per_core) == 0);
const _: () = assert!(core::mem::offset_of!(Physinfo, cores_per_socket) == 4);
const _: () = assert!(core::mem::offset_of!(Physinfo, nr_cpus) == 8);
const _: () = assert!(core::mem::offset_of!(Physinfo, max_cpu_id) == 12);
const _: () = assert!(core::mem::offset_of!(Physinfo, nr_nodes) == 16);
const _: () = assert!(core::mem::offset_of!(Physinfo, max_node_id) == 20);
const _: () = assert!(core::mem::offset_of!(Physinfo, cpu_khz) == 24);
const _: () = assert!(core::mem::offset_of!(Physinfo, capabilities) == 28);
const _: () = assert!(core::mem::offset_of!(Physinfo, arch_capabilities) == 32);
const _: () = assert!(core::mem::offset_of!(Physinfo, pad) == 36);
const _: () = assert!(core::mem::offset_of!(Physinfo, total_pages) == 40);
const _: () = assert!(core::mem::offset_of!(Physinfo, free_pages) == 48);
const _: () = assert!(core::mem::offset_of!(Physinfo, scrub_pages) == 56);
const _: () = assert!(core::mem::offset_of!(Physinfo, outstanding_pages) == 64);
const _: () = assert!(core::mem::offset_of!(Physinfo, max_mfn) == 72);
const _: () = assert!(core::mem::offset_of!(Physinfo, hw_cap) == 80);

/// Argument of `XEN_SYSCTL_sched_id` (`struct xen_sysctl_sched_id`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedId {
    /// OUT: [`crate::domctl::scheduler`] id.
    pub sched_id: u32,
}
const _: () = assert!(core::mem::size_of::<SchedId>() == 4);
const _: () = assert!(core::mem::offset_of!(SchedId, sched_id) == 0);

/// Argument of `XEN_SYSCTL_getdomaininfolist` (`struct xen_sysctl_getdomaininfolist`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GetDomainInfoList {
    /// IN: the lowest domain id to describe.
    pub first_domain: u16,
    /// Padding.
    pub _pad0: u16,
    /// IN: room in the buffer.
    pub max_domains: u32,
    /// IN: guest handle of [`crate::domctl::GetDomainInfo`] entries.
    pub buffer: u64,
    /// OUT: entries written.
    pub num_domains: u32,
    /// Padding.
    pub _pad1: u32,
}
const _: () = assert!(core::mem::size_of::<GetDomainInfoList>() == 24);
const _: () = assert!(core::mem::offset_of!(GetDomainInfoList, first_domain) == 0);
const _: () = assert!(core::mem::offset_of!(GetDomainInfoList, max_domains) == 4);
const _: () = assert!(core::mem::offset_of!(GetDomainInfoList, buffer) == 8);
const _: () = assert!(core::mem::offset_of!(GetDomainInfoList, num_domains) == 16);

/// `XEN_SYSCTL_cpu_featureset_*`: the `index` of [`CpuFeatureset`].
pub mod featureset {
    /// What the hardware reports.
    pub const RAW: u32 = 0;
    /// What the hypervisor uses.
    pub const HOST: u32 = 1;
    /// The default for PV guests.
    pub const PV: u32 = 2;
    /// The default for HVM guests.
    pub const HVM: u32 = 3;
    /// The most a PV guest may get.
    pub const PV_MAX: u32 = 4;
    /// The most an HVM guest may get.
    pub const HVM_MAX: u32 = 5;
}

/// Argument of `XEN_SYSCTL_get_cpu_featureset` (`struct xen_sysctl_cpu_featureset`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CpuFeatureset {
    /// IN: [`featureset`].
    pub index: u32,
    /// IN: room in `features`; OUT: words written (with a null handle: the maximum).
    pub nr_features: u32,
    /// OUT: guest handle of the `u32` feature words.
    pub features: u64,
}
const _: () = assert!(core::mem::size_of::<CpuFeatureset>() == 16);
const _: () = assert!(core::mem::offset_of!(CpuFeatureset, index) == 0);
const _: () = assert!(core::mem::offset_of!(CpuFeatureset, nr_features) == 4);
const _: () = assert!(core::mem::offset_of!(CpuFeatureset, features) == 8);

/// `XEN_SYSCTL_cpu_policy_*`: the `index` of [`CpuPolicy`].
pub mod policy {
    /// What the hardware reports.
    pub const RAW: u32 = 0;
    /// What the hypervisor uses.
    pub const HOST: u32 = 1;
    /// The most a PV guest may get.
    pub const PV_MAX: u32 = 2;
    /// The most an HVM guest may get.
    pub const HVM_MAX: u32 = 3;
    /// The default for PV guests.
    pub const PV_DEFAULT: u32 = 4;
    /// The default for HVM guests.
    pub const HVM_DEFAULT: u32 = 5;
}

/// Argument of `XEN_SYSCTL_get_cpu_policy` (`struct xen_sysctl_cpu_policy`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CpuPolicy {
    /// IN: [`policy`].
    pub index: u32,
    /// IN: room in `leaves`; OUT: entries written (with a null handle: the maximum).
    pub nr_leaves: u32,
    /// IN: room in `msrs`; OUT: entries written (with a null handle: the maximum).
    pub nr_msrs: u32,
    /// Reserved, zero.
    pub _rsvd: u32,
    /// OUT: guest handle of [`crate::domctl::CpuidLeaf`] entries.
    pub leaves: u64,
    /// OUT: guest handle of [`crate::domctl::MsrEntry`] entries.
    pub msrs: u64,
}
const _: () = assert!(core::mem::size_of::<CpuPolicy>() == 32);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, index) == 0);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, nr_leaves) == 4);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, nr_msrs) == 8);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, leaves) == 16);
const _: () = assert!(core::mem::offset_of!(CpuPolicy, msrs) == 24);

/// `XEN_SYSCTL_CPUPOOL_OP_*`: the `op` of [`CpupoolOp`].
pub mod cpupool {
    /// Create a pool.
    pub const CREATE: u32 = 1;
    /// Destroy an empty pool.
    pub const DESTROY: u32 = 2;
    /// Describe a pool (the first from `cpupool_id` on).
    pub const INFO: u32 = 3;
    /// Move a free CPU into a pool.
    pub const ADDCPU: u32 = 4;
    /// Take a CPU out of a pool.
    pub const RMCPU: u32 = 5;
    /// Move a domain to a pool.
    pub const MOVEDOMAIN: u32 = 6;
    /// The CPUs in no pool.
    pub const FREEINFO: u32 = 7;
    /// `XEN_SYSCTL_CPUPOOL_PAR_ANY`: any pool id or CPU.
    pub const PAR_ANY: u32 = 0xffff_ffff;
}

/// Argument of `XEN_SYSCTL_cpupool_op` (`struct xen_sysctl_cpupool_op`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CpupoolOp {
    /// IN: [`cpupool`].
    pub op: u32,
    /// IN: the pool (create: wanted id or `PAR_ANY`); OUT (create, info): its id.
    pub cpupool_id: u32,
    /// IN (create) / OUT (info): [`crate::domctl::scheduler`] id.
    pub sched_id: u32,
    /// IN (movedomain): the domain.
    pub domid: u32,
    /// IN (addcpu, rmcpu): the CPU or `PAR_ANY`.
    pub cpu: u32,
    /// OUT (info): domains in the pool.
    pub n_dom: u32,
    /// OUT (info, freeinfo): the CPUs.
    pub cpumap: XenctlBitmap,
}
const _: () = assert!(core::mem::size_of::<CpupoolOp>() == 40);
const _: () = assert!(core::mem::offset_of!(CpupoolOp, op) == 0);
const _: () = assert!(core::mem::offset_of!(CpupoolOp, cpupool_id) == 4);
const _: () = assert!(core::mem::offset_of!(CpupoolOp, sched_id) == 8);
const _: () = assert!(core::mem::offset_of!(CpupoolOp, domid) == 12);
const _: () = assert!(core::mem::offset_of!(CpupoolOp, cpu) == 16);
const _: () = assert!(core::mem::offset_of!(CpupoolOp, n_dom) == 20);
const _: () = assert!(core::mem::offset_of!(CpupoolOp, cpumap) == 24);

/// Argument of `XEN_SYSCTL_readconsole` (`struct xen_sysctl_readconsole`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReadConsole {
    /// IN: forget what was read.
    pub clear: u8,
    /// IN: start from `index` rather than from the oldest byte held.
    pub incremental: u8,
    /// Padding.
    pub _pad: [u8; 2],
    /// IN (incremental): where to start; OUT: where to continue.
    pub index: u32,
    /// IN: guest handle of the buffer.
    pub buffer: u64,
    /// IN: room in the buffer; OUT: bytes written.
    pub count: u32,
    /// Padding.
    pub _pad1: u32,
}
const _: () = assert!(core::mem::size_of::<ReadConsole>() == 24);
const _: () = assert!(core::mem::offset_of!(ReadConsole, incremental) == 1);
const _: () = assert!(core::mem::offset_of!(ReadConsole, index) == 4);
const _: () = assert!(core::mem::offset_of!(ReadConsole, buffer) == 8);
const _: () = assert!(core::mem::offset_of!(ReadConsole, count) == 16);

/// Argument of `XEN_SYSCTL_debug_keys` (`struct xen_sysctl_debug_keys`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DebugKeys {
    /// IN: guest handle of the key characters.
    pub keys: u64,
    /// IN: how many.
    pub nr_keys: u32,
    /// Padding.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<DebugKeys>() == 16);
const _: () = assert!(core::mem::offset_of!(DebugKeys, nr_keys) == 8);

/// Argument of `XEN_SYSCTL_getcpuinfo` (`struct xen_sysctl_getcpuinfo`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GetCpuInfo {
    /// IN: room in `info`.
    pub max_cpus: u32,
    /// Padding.
    pub _pad: u32,
    /// IN: guest handle of `u64` idle times (ns), one per CPU.
    pub info: u64,
    /// OUT: entries written.
    pub nr_cpus: u32,
    /// Padding.
    pub _pad1: u32,
}
const _: () = assert!(core::mem::size_of::<GetCpuInfo>() == 24);
const _: () = assert!(core::mem::offset_of!(GetCpuInfo, info) == 8);
const _: () = assert!(core::mem::offset_of!(GetCpuInfo, nr_cpus) == 16);

/// One CPU's place (`struct xen_sysctl_cputopo`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Cputopo {
    /// Core id.
    pub core: u32,
    /// Socket id.
    pub socket: u32,
    /// NUMA node.
    pub node: u32,
}
const _: () = assert!(core::mem::size_of::<Cputopo>() == 12);

/// Argument of `XEN_SYSCTL_cputopoinfo` (`struct xen_sysctl_cputopoinfo`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CputopoInfo {
    /// IN: room in `cputopo`; OUT: CPUs described (with a null handle: how many there are).
    pub num_cpus: u32,
    /// Padding.
    pub _pad: u32,
    /// IN: guest handle of [`Cputopo`] entries.
    pub cputopo: u64,
}
const _: () = assert!(core::mem::size_of::<CputopoInfo>() == 16);
const _: () = assert!(core::mem::offset_of!(CputopoInfo, cputopo) == 8);

/// One node's memory (`struct xen_sysctl_meminfo`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemInfo {
    /// Bytes spanned.
    pub memsize: u64,
    /// Bytes free.
    pub memfree: u64,
}
const _: () = assert!(core::mem::size_of::<MemInfo>() == 16);

/// Argument of `XEN_SYSCTL_numainfo` (`struct xen_sysctl_numainfo`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NumaInfo {
    /// IN: room for nodes; OUT: nodes described (with null handles: how many there are).
    pub num_nodes: u32,
    /// Padding.
    pub _pad: u32,
    /// IN: guest handle of [`MemInfo`] entries.
    pub meminfo: u64,
    /// IN: guest handle of the `num_nodes * num_nodes` `u32` distances.
    pub distance: u64,
}
const _: () = assert!(core::mem::size_of::<NumaInfo>() == 24);
const _: () = assert!(core::mem::offset_of!(NumaInfo, meminfo) == 8);
const _: () = assert!(core::mem::offset_of!(NumaInfo, distance) == 16);

/// `XEN_SYSCTL_SCHEDOP_*`: the `cmd` of [`SchedulerOp`].
pub mod schedop {
    /// Set the parameters.
    pub const PUTINFO: u32 = 0;
    /// Read them.
    pub const GETINFO: u32 = 1;
}

/// Argument of `XEN_SYSCTL_scheduler_op` for the credit scheduler (`struct
/// xen_sysctl_scheduler_op` holding `struct xen_sysctl_credit_schedule`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedulerOp {
    /// IN: the CPU pool.
    pub cpupool_id: u32,
    /// IN: [`crate::domctl::scheduler`] id.
    pub sched_id: u32,
    /// IN: [`schedop`].
    pub cmd: u32,
    /// Padding (the union is 8-byte aligned).
    pub _pad: u32,
    /// IN/OUT: time slice, ms.
    pub tslice_ms: u32,
    /// IN/OUT: context-switch rate limit, µs (0: none).
    pub ratelimit_us: u32,
    /// IN/OUT: how long a vCPU counts as cache-hot on its CPU, µs.
    pub vcpu_migr_delay_us: u32,
    /// Padding.
    pub _pad1: u32,
}
const _: () = assert!(core::mem::size_of::<SchedulerOp>() == 32);
const _: () = assert!(core::mem::offset_of!(SchedulerOp, tslice_ms) == 16);
const _: () = assert!(core::mem::offset_of!(SchedulerOp, vcpu_migr_delay_us) == 24);

/// `XEN_INVALID_NODE_ID` etc.: an id that names nothing.
pub const XEN_INVALID_ID: u32 = 0xffff_ffff;
