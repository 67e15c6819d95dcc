//! `mca` (hypercall 48, `__HYPERVISOR_arch_0`): machine-check architecture for the control
//! domain, as Xen 4.17's `do_mca` (`xen/arch/x86/cpu/mcheck/mce.c`; layouts in
//! `xen_abi::mca`).
//!
//! Theory of operation. Linux dom0's `xen_mcelog` driver asks, once at boot, how many
//! physical CPUs there are (`XEN_MC_physcpuinfo` with a null array), then each one's identity,
//! then binds `VIRQ_MCA` (a global virq, vCPU 0: the event channel code needs nothing special
//! for it), and from then on fetches telemetry whenever that virq fires. Hestia never handles
//! a machine check on the guest's behalf and so never queues telemetry: the virq never fires,
//! and a fetch finds nothing (`XEN_MC_NODATA`, as Xen answers with an empty queue).
//!
//! Order of checks, as Xen's: the caller's right (the control domain, `EPERM`), the copy-in
//! (`EFAULT`), the interface version (`EACCES`), then the command (`EINVAL` for an unknown
//! one and for `notifydomain`, which Xen no longer supports). The injection commands answer
//! `ENODEV`, Xen's answer when it owns no machine-check banks: Hestia does not drive the MCA
//! banks, so there is nothing to inject into.
//!
//! What a CPU entry says, from what Hestia knows: topology as `sysctl`'s `cputopoinfo` and
//! `physinfo` describe it (each CPU its own core of socket 0, one thread per core), the APIC
//! id Hestia booted it by (and its low byte as the initial APIC id), and CPUID and IA32_MCG_CAP
//! as read on the calling CPU (Xen reads each on its CPU; Hestia assumes a symmetric host, as
//! its CPU policy does). No PPIN MSR is
//! reported. No lock: the call reads only boot-time, read-only state.

use xen_abi::errno::Errno;
use xen_abi::mca::{
    McFetch, McLogicalCpu, McPhyscpuinfo, McinfoMsr, XEN_MCA_INTERFACE_VERSION, XenMc, cmd,
    fetch_flags,
};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

use super::Caller;
use crate::arch::x86_64::{cpu, percpu};
use crate::mm::guest;
use hestia_core::policy::{self, Action};

/// Xen's `X86_VENDOR_*` bits, by CPUID.0's vendor string.
const VENDORS: [(&[u8; 12], u32); 5] = [
    (b"GenuineIntel", 1 << 0),
    (b"AuthenticAMD", 1 << 1),
    (b"CentaurHauls", 1 << 2),
    (b"  Shanghai  ", 1 << 3),
    (b"HygonGenuine", 1 << 4),
];

/// `mca(u_xen_mc)`.
pub(super) fn do_mca(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let caller = c.domain();
    policy::check(caller.rights, Action::Mca)?;
    let addr = a[0];
    let mut op: XenMc = guest::read_obj(addr)?;
    if op.interface_version != XEN_MCA_INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    match op.cmd {
        cmd::FETCH => fetch(addr, &mut op),
        cmd::PHYSCPUINFO => physcpuinfo(addr, &mut op),
        cmd::MSRINJECT | cmd::MCEINJECT | cmd::INJECT_V2 => Err(Errno::ENODEV),
        _ => Err(Errno::EINVAL),
    }
}

fn arg<T: FromBytes>(op: &XenMc) -> T {
    super::union::read(&op.u)
}

fn set_arg<T: IntoBytes + Immutable>(op: &mut XenMc, v: &T) {
    super::union::write(&mut op.u, v)
}

/// `XEN_MC_fetch`: one of the urgent and non-urgent queues, both always empty. An
/// acknowledgement names telemetry that cannot exist and is ignored, as Xen ignores an
/// unknown id; it writes nothing back.
fn fetch(addr: u64, op: &mut XenMc) -> Result<u64, Errno> {
    let mut f: McFetch = arg(op);
    let queue = f.flags & (fetch_flags::NONURGENT | fetch_flags::URGENT);
    if queue != fetch_flags::NONURGENT && queue != fetch_flags::URGENT {
        return Err(Errno::EINVAL);
    }
    if f.flags & fetch_flags::ACK != 0 {
        return Ok(0);
    }
    if f.data == 0 {
        return Err(Errno::EINVAL);
    }
    f.flags = fetch_flags::OK | fetch_flags::NODATA;
    f.fetch_id = 0;
    set_arg(op, &f);
    guest::write_obj(addr, op).map(|()| 0)
}

/// `XEN_MC_physcpuinfo`: with a null array, the number of online CPUs; otherwise the first
/// `ncpus` of them (at least one asked, else `EINVAL`), and how many were written. As Xen,
/// which takes `ncpus` as a signed count, a count above `i32::MAX` finds no memory.
fn physcpuinfo(addr: u64, op: &mut XenMc) -> Result<u64, Errno> {
    let mut p: McPhyscpuinfo = arg(op);
    let mut n = percpu::online_count();
    let mut r = Ok(0);
    if p.info != 0 {
        if p.ncpus == 0 {
            return Err(Errno::EINVAL);
        }
        if i32::try_from(p.ncpus).is_err() {
            return Err(Errno::ENOMEM);
        }
        n = n.min(p.ncpus);
        let host = host_cpu();
        let stride = size_of::<McLogicalCpu>() as u64;
        for cpunr in 0..n {
            let at = u64::from(cpunr)
                .checked_mul(stride)
                .and_then(|o| p.info.checked_add(o))
                .ok_or(Errno::EFAULT);
            if let Err(e) = at.and_then(|at| guest::write_obj(at, &logical_cpu(&host, cpunr))) {
                r = Err(e);
                break;
            }
        }
    }
    p.ncpus = n;
    set_arg(op, &p);
    guest::write_obj(addr, op)?;
    r
}

/// The entry for CPU `cpunr`: `host`'s, with the CPU's own numbers.
fn logical_cpu(host: &McLogicalCpu, cpunr: u32) -> McLogicalCpu {
    let mut c = *host;
    c.mc_cpunr = cpunr;
    c.mc_coreid = u16::try_from(cpunr).unwrap_or(u16::MAX);
    c.mc_apicid = percpu::cpu(cpunr).map_or(u32::MAX, |p| p.apic_id);
    // Xen reads CPUID.1:EBX[31:24] on the CPU itself: its initial APIC id, the low byte of the
    // APIC id Hestia booted it by.
    c.mc_clusterid = c.mc_apicid & 0xff;
    c
}

/// What every entry shares (Hestia assumes a symmetric host), read once per call.
fn host_cpu() -> McLogicalCpu {
    let mut c = McLogicalCpu::new_zeroed();
    let nr_cpus = percpu::online_count();
    c.mc_ncores = nr_cpus;
    c.mc_ncores_active = nr_cpus;
    c.mc_nthreads = 1;

    let l0 = cpu::cpuid(0, 0);
    let l1 = cpu::cpuid(1, 0);
    c.mc_cpuid_level = i32::try_from(l0.eax).unwrap_or(i32::MAX);
    let mut vendor = [0u8; 12];
    for (dst, w) in vendor.chunks_exact_mut(4).zip([l0.ebx, l0.edx, l0.ecx]) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
    c.mc_vendorid[..12].copy_from_slice(&vendor);
    c.mc_vendor = VENDORS
        .iter()
        .find(|(name, _)| **name == vendor)
        .map_or(0, |&(_, bit)| bit);
    c.mc_family = cpu::family();
    // The extended model counts from family 6 on, as Xen's `identify_cpu`.
    let model = (l1.eax >> 4) & 0xf;
    c.mc_model = if c.mc_family >= 6 {
        model | (((l1.eax >> 16) & 0xf) << 4)
    } else {
        model
    };
    c.mc_step = l1.eax & 0xf;
    let mut brand = [0u8; 48];
    let name = cpu::brand(&mut brand).as_bytes();
    if let Some(dst) = c.mc_brandid.get_mut(..name.len()) {
        dst.copy_from_slice(name);
    }

    let caps = super::sysctl::hw_cap();
    for (dst, w) in c.mc_cpu_caps.iter_mut().zip(caps) {
        *dst = w;
    }
    // The L2 size (KiB) and the CLFLUSH line size, where the CPU reports them.
    if cpu::cpuid(0x8000_0000, 0).eax >= 0x8000_0006 {
        c.mc_cache_size = cpu::cpuid(0x8000_0006, 0).ecx >> 16;
    }
    c.mc_cache_alignment = ((l1.ebx >> 8) & 0xff) * 8;

    if let Some(v) = cpu::mcg_cap() {
        c.mc_nmsrvals = 1;
        c.mc_msrvalues[0] = McinfoMsr {
            reg: u64::from(cpu::msr::MCG_CAP),
            value: v,
        };
    }
    c
}
