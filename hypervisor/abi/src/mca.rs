//! Machine-check architecture (`public/arch-x86/xen-mca.h`): the `mca` hypercall
//! (`__HYPERVISOR_mca`, [`crate::xen::hypercall::MCA`]) through which dom0 reads the physical
//! CPUs' identities and fetches machine-check telemetry, and whose arrival `VIRQ_MCA`
//! ([`crate::xen::virq::MCA`]) signals.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XEN_MCA_INTERFACE_VERSION`, which every call carries.
pub const XEN_MCA_INTERFACE_VERSION: u32 = 0x01ec_c003;

/// `XEN_MC_*` commands ([`XenMc::cmd`]).
pub mod cmd {
    /// Fetch (or acknowledge) queued telemetry ([`super::McFetch`]).
    pub const FETCH: u32 = 1;
    /// Notify a domU of an error.
    pub const NOTIFYDOMAIN: u32 = 2;
    /// The physical CPUs ([`super::McPhyscpuinfo`]).
    pub const PHYSCPUINFO: u32 = 3;
    /// Inject MSR values.
    pub const MSRINJECT: u32 = 4;
    /// Raise a #MC on a physical CPU.
    pub const MCEINJECT: u32 = 5;
    /// Inject an MCE, CMCI or LMCE on a set of CPUs (tools only).
    pub const INJECT_V2: u32 = 6;
}

/// [`McFetch::flags`] bits.
pub mod fetch_flags {
    /// IN: fetch non-urgent (polled, CMCI) telemetry.
    pub const NONURGENT: u32 = 0x1;
    /// IN: fetch urgent (#MC) telemetry.
    pub const URGENT: u32 = 0x2;
    /// IN: acknowledge the telemetry [`super::McFetch::fetch_id`] names.
    pub const ACK: u32 = 0x4;
    /// OUT: all is well.
    pub const OK: u32 = 0x0;
    /// OUT: the telemetry could not be copied.
    pub const FETCHFAILED: u32 = 0x1;
    /// OUT: nothing was queued.
    pub const NODATA: u32 = 0x2;
}

/// `struct mcinfo_msr`: one MSR and its value.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct McinfoMsr {
    /// The MSR's number.
    pub reg: u64,
    /// Its value.
    pub value: u64,
}
const _: () = assert!(core::mem::size_of::<McinfoMsr>() == 16);

/// `MC_NCAPS`: CPU feature words in [`McLogicalCpu::mc_cpu_caps`].
pub const MC_NCAPS: usize = 7;
/// `__MC_MSR_ARRAYSIZE`: room in [`McLogicalCpu::mc_msrvalues`].
pub const MC_MSR_ARRAYSIZE: usize = 8;

/// `struct mcinfo_logical_cpu` (`xen_mc_logical_cpu_t`): one physical CPU, all OUT.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct McLogicalCpu {
    /// The hypervisor's CPU number.
    pub mc_cpunr: u32,
    /// Its socket.
    pub mc_chipid: u32,
    /// Its core within the socket.
    pub mc_coreid: u16,
    /// Its thread within the core.
    pub mc_threadid: u16,
    /// Its APIC id.
    pub mc_apicid: u32,
    /// CPUID.1:EBX[31:24], the initial APIC id.
    pub mc_clusterid: u32,
    /// Cores per socket.
    pub mc_ncores: u32,
    /// Cores booted in the socket.
    pub mc_ncores_active: u32,
    /// Threads per core.
    pub mc_nthreads: u32,
    /// The highest basic CPUID leaf.
    pub mc_cpuid_level: i32,
    /// Display family.
    pub mc_family: u32,
    /// `X86_VENDOR_*` bit.
    pub mc_vendor: u32,
    /// Display model.
    pub mc_model: u32,
    /// Stepping.
    pub mc_step: u32,
    /// CPUID.0's vendor string, NUL-terminated.
    pub mc_vendorid: [u8; 16],
    /// The brand string, NUL-terminated.
    pub mc_brandid: [u8; 64],
    /// Feature words.
    pub mc_cpu_caps: [u32; MC_NCAPS],
    /// Cache size in KiB.
    pub mc_cache_size: u32,
    /// Cache line alignment in bytes.
    pub mc_cache_alignment: u32,
    /// Entries used in `mc_msrvalues`.
    pub mc_nmsrvals: i32,
    /// Padding to `mc_msrvalues`'s alignment.
    pub pad: u32,
    /// Machine-check MSRs: IA32_MCG_CAP first.
    pub mc_msrvalues: [McinfoMsr; MC_MSR_ARRAYSIZE],
}
const _: () = assert!(core::mem::size_of::<McLogicalCpu>() == 304);
const _: () = assert!(core::mem::offset_of!(McLogicalCpu, mc_apicid) == 12);
const _: () = assert!(core::mem::offset_of!(McLogicalCpu, mc_cpuid_level) == 32);
const _: () = assert!(core::mem::offset_of!(McLogicalCpu, mc_vendorid) == 52);
const _: () = assert!(core::mem::offset_of!(McLogicalCpu, mc_brandid) == 68);
const _: () = assert!(core::mem::offset_of!(McLogicalCpu, mc_cpu_caps) == 132);
const _: () = assert!(core::mem::offset_of!(McLogicalCpu, mc_nmsrvals) == 168);
const _: () = assert!(core::mem::offset_of!(McLogicalCpu, mc_msrvalues) == 176);

/// `struct xen_mc_fetch`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct McFetch {
    /// IN: [`fetch_flags`] `NONURGENT`/`URGENT`, `ACK`; OUT: `OK`, `FETCHFAILED`, `NODATA`.
    pub flags: u32,
    /// Padding.
    pub pad0: u32,
    /// OUT: the id to acknowledge; IN: the id acknowledged.
    pub fetch_id: u64,
    /// OUT: the guest's `struct mc_info` buffer.
    pub data: u64,
}
const _: () = assert!(core::mem::size_of::<McFetch>() == 24);

/// `struct xen_mc_physcpuinfo`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct McPhyscpuinfo {
    /// IN: room in `info`; OUT: entries written (with a null `info`, online CPUs).
    pub ncpus: u32,
    /// Padding.
    pub pad0: u32,
    /// OUT: an array of [`McLogicalCpu`], or 0 to ask only the count.
    pub info: u64,
}
const _: () = assert!(core::mem::size_of::<McPhyscpuinfo>() == 16);

/// Size of the union in `struct xen_mc`: its largest member, `xen_mc_msrinject` (16 bytes of
/// header and eight [`McinfoMsr`]).
pub const MC_UNION_SIZE: usize = 16 + 8 * 16;

/// One `mca` call (`struct xen_mc`).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenMc {
    /// IN: [`cmd`].
    pub cmd: u32,
    /// IN: [`XEN_MCA_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// IN/OUT: the command's structure (the union `u`).
    pub u: [u8; MC_UNION_SIZE],
}
const _: () = assert!(core::mem::size_of::<XenMc>() == 152);
const _: () = assert!(core::mem::offset_of!(XenMc, cmd) == 0);
const _: () = assert!(core::mem::offset_of!(XenMc, interface_version) == 4);
const _: () = assert!(core::mem::offset_of!(XenMc, u) == 8);
