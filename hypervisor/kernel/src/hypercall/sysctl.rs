//! `sysctl` (35): the toolstack's view of the host, at Xen 4.17's interface version 0x15
//! (`xen/common/sysctl.c`, `xen/arch/x86/sysctl.c`; layouts in `xen_abi::sysctl`).
//!
//! One [`XenSysctl`] per call: read once, its version checked (`EACCES`), the caller's right
//! checked (the control domain: `EPERM`), then the sub-op runs under one global lock (a
//! caller that finds it busy gets a continuation). On success the structure is written back
//! (Xen's default `copyback`), so OUT fields reach the caller. Sub-ops Hestia does not have
//! answer `ENOSYS`, as Xen's for those its build leaves out. The long ones (`debug_keys`, a
//! long `xenctl_bitmap` to zero) stop part way and resume by continuation
//! ([`super::continuation::Resume`]), releasing the lock in between; Xen runs them to the end.
//!
//! Hestia's host, as these calls describe it: one NUMA node holding all memory, one CPU pool
//! (id 0, the credit scheduler, every CPU, every domain), each CPU its own core of socket 0
//! (the topology is not probed yet), no IOMMU, PV guests only, grant tables v1 and v2.

use hestia_core::credit;
use xen_abi::domctl::scheduler;
use xen_abi::errno::Errno;
use xen_abi::sysctl::{
    CpupoolOp, Cputopo, CputopoInfo, DebugKeys, GetDomainInfoList, MemInfo, NumaInfo, Physinfo,
    ReadConsole, SchedId, SchedulerOp, XEN_SYSCTL_INTERFACE_VERSION, XenSysctl, cmd, cpupool,
    physcap, schedop,
};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::Caller;
use super::continuation::{Resume, Stop};
use crate::mm::guest::{self, GuestRange};
use crate::pv::domain::Domain;
use crate::sched::control;
use hestia_core::policy::{self, Action};

/// Xen's `sysctl_lock`.
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// The one CPU pool's id.
const POOL0: u32 = 0;

/// One sysctl being served.
struct Call<'a> {
    op: XenSysctl,
    /// Write `op` back on success (Xen's default); a sub-op that writes its own results
    /// clears it.
    copyback: bool,
    /// The sub-op's long work, resumable.
    work: Resume<'a>,
}

impl Call<'_> {
    fn arg<T: FromBytes>(&self) -> T {
        super::union::read(&self.op.u)
    }

    fn set_arg<T: IntoBytes + Immutable>(&mut self, v: &T) {
        super::union::write(&mut self.op.u, v)
    }
}

/// `sysctl(u_sysctl)`.
pub(super) fn do_sysctl(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Stop> {
    let caller = c.domain();
    let addr = a[0];
    let op: XenSysctl = guest::read_obj(addr)?;
    if op.interface_version != XEN_SYSCTL_INTERFACE_VERSION {
        return Err(Errno::EACCES.into());
    }
    policy::check(caller.rights, Action::Sysctl)?;
    let Some(_held) = LOCK.try_lock() else {
        return Err(Errno::ERESTART.into());
    };
    let mut c = Call {
        op,
        copyback: true,
        work: Resume::new(caller, *a),
    };
    let r = match op.cmd {
        cmd::READCONSOLE => readconsole(&mut c),
        cmd::PHYSINFO => physinfo(&mut c),
        cmd::SCHED_ID => {
            c.set_arg(&SchedId {
                sched_id: scheduler::CREDIT,
            });
            Ok(0)
        }
        cmd::GETDOMAININFOLIST => getdomaininfolist(caller, &mut c),
        cmd::DEBUG_KEYS => debug_keys(&mut c),
        cmd::CPUTOPOINFO => cputopoinfo(&mut c),
        cmd::NUMAINFO => numainfo(&mut c),
        cmd::CPUPOOL_OP => cpupool_op(&mut c),
        cmd::SCHEDULER_OP => scheduler_op(&mut c),
        cmd::GET_CPU_FEATURESET => {
            let mut f = c.arg();
            let r = super::cpu_policy::sysctl_get_cpu_featureset(&mut f);
            c.set_arg(&f);
            r
        }
        cmd::GET_CPU_POLICY => {
            let mut p = c.arg();
            let r = super::cpu_policy::sysctl_get_cpu_policy(&mut p);
            c.set_arg(&p);
            r
        }
        _ => Err(Errno::ENOSYS),
    };
    if r.is_ok() && c.copyback {
        guest::write_obj(addr, &c.op)?;
    }
    c.work.finish(addr, r)
}

/// `XEN_SYSCTL_readconsole`: Hestia's console history (`xl dmesg`, `-c` to clear).
fn readconsole(c: &mut Call) -> Result<u64, Errno> {
    let mut op: ReadConsole = c.arg();
    let got = crate::console::history::read(
        op.incremental != 0,
        op.index,
        op.count,
        op.clear != 0,
        |off, bytes| {
            let at = op.buffer.checked_add(u64::from(off)).ok_or(Errno::EFAULT)?;
            GuestRange::new(at, bytes.len())?.write(bytes)
        },
    )?;
    op.count = got.count;
    op.index = got.index;
    c.set_arg(&op);
    Ok(0)
}

/// `XEN_SYSCTL_physinfo`: CPUs, memory, capabilities.
fn physinfo(c: &mut Call) -> Result<u64, Errno> {
    let stats = crate::mm::stats();
    let nr_cpus = crate::arch::x86_64::percpu::online_count();
    let pi = Physinfo {
        threads_per_core: 1,
        cores_per_socket: nr_cpus,
        nr_cpus,
        max_cpu_id: nr_cpus.saturating_sub(1),
        nr_nodes: 1,
        max_node_id: 0,
        cpu_khz: (crate::arch::x86_64::tsc::hz() / 1000) as u32,
        capabilities: physcap::PV | physcap::GNTTAB_V1 | physcap::GNTTAB_V2,
        total_pages: stats.total_ram / 4096,
        // Every free page, claimed or not (Xen's `avail_domheap_pages`).
        free_pages: stats.free / 4096,
        outstanding_pages: crate::domain::claims::outstanding_total(),
        max_mfn: crate::mm::frametable::nr_frames().saturating_sub(1),
        hw_cap: hw_cap(),
        ..Default::default()
    };
    c.set_arg(&pi);
    Ok(0)
}

/// The host's feature words as Xen's `boot_cpu_data.x86_capability` starts: CPUID 1 EDX and
/// ECX, 0x80000001 EDX and ECX, 0xD:1 EAX, 7:0 EBX and ECX, 0x80000007 EDX.
pub(super) fn hw_cap() -> [u32; 8] {
    use crate::arch::x86_64::cpu::cpuid;
    let max = cpuid(0, 0).eax;
    let ext = cpuid(0x8000_0000, 0).eax;
    let (l1, e1) = (cpuid(1, 0), cpuid(0x8000_0001, 0));
    let (d1, l7) = if max >= 0xd {
        (cpuid(0xd, 1).eax, cpuid(7, 0))
    } else if max >= 7 {
        (0, cpuid(7, 0))
    } else {
        (0, Default::default())
    };
    let e7 = if ext >= 0x8000_0007 {
        cpuid(0x8000_0007, 0).edx
    } else {
        0
    };
    [l1.edx, l1.ecx, e1.edx, e1.ecx, d1, l7.ebx, l7.ecx, e7]
}

/// `XEN_SYSCTL_getdomaininfolist`: the domains from `first_domain` on, as many as fit.
fn getdomaininfolist(caller: &Domain, c: &mut Call) -> Result<u64, Errno> {
    let mut op: GetDomainInfoList = c.arg();
    let mut n = 0u32;
    for d in crate::domain::all() {
        if d.id.0 < op.first_domain {
            continue;
        }
        if n == op.max_domains {
            break;
        }
        if !policy::allows(caller.rights, Action::DomainInfo) {
            continue;
        }
        let info = super::domctl::domain_info(&d);
        let at = (u64::from(n) * size_of_val(&info) as u64)
            .checked_add(op.buffer)
            .ok_or(Errno::EFAULT)?;
        guest::write_obj(at, &info)?;
        n += 1;
    }
    op.num_domains = n;
    c.set_arg(&op);
    Ok(0)
}

/// `XEN_SYSCTL_debug_keys`: presses Hestia's debug keys, one by one (up to 2^32 of them:
/// preemptible, each key a unit of [`Resume`]).
fn debug_keys(c: &mut Call) -> Result<u64, Errno> {
    let op: DebugKeys = c.arg();
    c.copyback = false;
    c.work.run(u64::from(op.nr_keys), |i| {
        let at = op.keys.checked_add(i).ok_or(Errno::EFAULT)?;
        let key: u8 = guest::read_obj(at)?;
        crate::console::keys::press(key);
        Ok(())
    })?;
    Ok(0)
}

/// `XEN_SYSCTL_cputopoinfo`: each CPU's core, socket and node (or, with a null handle, how
/// many CPUs there are).
fn cputopoinfo(c: &mut Call) -> Result<u64, Errno> {
    let mut op: CputopoInfo = c.arg();
    let mut n = crate::arch::x86_64::percpu::online_count();
    if op.cputopo != 0 {
        n = n.min(op.num_cpus);
        for cpu in 0..n {
            let t = Cputopo {
                core: cpu,
                socket: 0,
                node: 0,
            };
            let at = op
                .cputopo
                .checked_add(u64::from(cpu) * size_of::<Cputopo>() as u64)
                .ok_or(Errno::EFAULT)?;
            guest::write_obj(at, &t)?;
        }
    }
    op.num_cpus = n;
    c.set_arg(&op);
    Ok(0)
}

/// `XEN_SYSCTL_numainfo`: one node with all memory, distance 10 to itself.
fn numainfo(c: &mut Call) -> Result<u64, Errno> {
    let mut op: NumaInfo = c.arg();
    let mut n = 1;
    if op.meminfo != 0 || op.distance != 0 {
        n = n.min(op.num_nodes);
        if n == 1 {
            if op.meminfo != 0 {
                let s = crate::mm::stats();
                let m = MemInfo {
                    memsize: s.total_ram,
                    memfree: s.free,
                };
                guest::write_obj(op.meminfo, &m)?;
            }
            if op.distance != 0 {
                guest::write_obj(op.distance, &10u32)?;
            }
        }
    }
    op.num_nodes = n;
    c.set_arg(&op);
    Ok(0)
}

/// `XEN_SYSCTL_cpupool_op`: the one pool, 0, is described (`INFO` from any id up to 0;
/// `ENOENT` past it), the free CPUs are none; creating, destroying and moving between pools
/// is not supported (`EOPNOTSUPP`).
fn cpupool_op(c: &mut Call) -> Result<u64, Errno> {
    let mut op: CpupoolOp = c.arg();
    match op.op {
        cpupool::INFO => {
            if op.cpupool_id > POOL0 {
                return Err(Errno::ENOENT);
            }
            op.cpupool_id = POOL0;
            op.sched_id = scheduler::CREDIT;
            op.n_dom = crate::domain::all().len() as u32;
            super::domctl::write_cpumap(&op.cpumap, control::online_cpus(), &mut c.work)?;
        }
        cpupool::FREEINFO => {
            super::domctl::write_cpumap(&op.cpumap, credit::CpuSet::EMPTY, &mut c.work)?;
        }
        _ => return Err(Errno::EOPNOTSUPP),
    }
    c.set_arg(&op);
    Ok(0)
}

/// `XEN_SYSCTL_scheduler_op`: the credit scheduler's time slice and rate limit (`xl
/// sched-credit -s`). The migration delay is not modelled: only 0 is accepted.
fn scheduler_op(c: &mut Call) -> Result<u64, Errno> {
    let mut op: SchedulerOp = c.arg();
    if op.cmd != schedop::PUTINFO && op.cmd != schedop::GETINFO {
        return Err(Errno::EINVAL);
    }
    if op.cpupool_id != POOL0 {
        return Err(Errno::ESRCH);
    }
    if op.sched_id != scheduler::CREDIT {
        return Err(Errno::EINVAL);
    }
    if op.cmd == schedop::PUTINFO {
        if op.vcpu_migr_delay_us != 0 {
            return Err(Errno::EINVAL);
        }
        control::set_params(credit::Params {
            tslice_ms: op.tslice_ms,
            ratelimit_us: op.ratelimit_us,
        })?;
    }
    let p = control::params();
    op.tslice_ms = p.tslice_ms;
    op.ratelimit_us = p.ratelimit_us;
    op.vcpu_migr_delay_us = 0;
    c.set_arg(&op);
    Ok(0)
}
