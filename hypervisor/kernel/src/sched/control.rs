//! What the toolstack reads and sets of the scheduler (`XEN_DOMCTL_getvcpuinfo`,
//! `scheduler_op`, vCPU affinity; `XEN_SYSCTL_scheduler_op`): thin, locked views of the
//! decisions `hestia_core::credit` keeps, for `crate::hypercall::domctl` and `sysctl`.

use hestia_core::credit::{self, CpuSet, UnitId};
use hestia_core::ids::VcpuId;
use xen_abi::errno::Errno;

use super::{DomainSched, State, reschedule, runstate, with_sched};
use crate::arch::x86_64::tsc;

/// One vCPU as `XEN_DOMCTL_getvcpuinfo` describes it.
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuInfo {
    /// Not down.
    pub online: bool,
    /// Waiting for an event.
    pub blocked: bool,
    /// Loaded on a CPU now.
    pub running: bool,
    /// Time spent running, ns.
    pub cpu_time: u64,
    /// The CPU it runs on, is queued on, or will wake on.
    pub cpu: u32,
}

/// vCPU `vcpu` of `d`, if the scheduler knows it.
pub fn vcpu_info(d: &DomainSched, vcpu: VcpuId) -> Option<VcpuInfo> {
    let now = tsc::uptime_ns();
    with_sched(|s| s.find(d, vcpu).and_then(|i| unit_info(s, i, now)))
}

/// Each vCPU of `d` the scheduler knows, in one pass under its lock (getdomaininfo sums
/// them: one lookup per vCPU would scan every unit once for each).
pub fn each_vcpu_info(d: &DomainSched, mut f: impl FnMut(VcpuInfo)) {
    let now = tsc::uptime_ns();
    with_sched(|s| {
        let mine: alloc::vec::Vec<usize> = s.of(d).collect();
        for i in mine {
            if let Some(v) = unit_info(s, i, now) {
                f(v);
            }
        }
    })
}

/// Unit `i` as [`VcpuInfo`] at time `now`.
fn unit_info(s: &mut super::Sched, i: usize, now: u64) -> Option<VcpuInfo> {
    let cpu = s.credit.unit_info(UnitId(i as u32)).map_or(0, |u| u.cpu);
    let u = s.at(i)?;
    let mut r = u.runstate;
    r.enter(r.state, now);
    Some(VcpuInfo {
        online: u.state != State::Offline || u.up_when_stopped,
        blocked: u.state == State::Blocked,
        running: u.on_cpu.is_some(),
        cpu_time: r.time[runstate::RUNNING],
        cpu: cpu as u32,
    })
}

/// `d`'s credit weight and cap; `ESRCH` once it has left the scheduler.
pub fn domain_params(d: &DomainSched) -> Result<(u16, u16), Errno> {
    with_sched(|s| s.credit.domain_params(d.key())).ok_or(Errno::ESRCH)
}

/// Sets `d`'s weight (0: unchanged) and cap (`0xffff`: unchanged).
pub fn set_domain_params(d: &DomainSched, weight: u16, cap: u16) -> Result<(), Errno> {
    with_sched(|s| s.credit.set_domain_params(d.key(), weight, cap))
}

/// vCPU `vcpu` of `d`'s hard and soft affinity; `ESRCH` if the scheduler does not know it.
pub fn affinity(d: &DomainSched, vcpu: VcpuId) -> Result<(CpuSet, CpuSet), Errno> {
    with_sched(|s| {
        let i = s.find(d, vcpu)?;
        s.credit
            .unit_info(UnitId(i as u32))
            .map(|u| (u.hard, u.soft))
    })
    .ok_or(Errno::ESRCH)
}

/// Sets vCPU `vcpu` of `d`'s affinities (a vCPU running outside its new hard affinity moves
/// at once); `EINVAL` if `hard` holds no CPU.
pub fn set_affinity(
    d: &DomainSched,
    vcpu: VcpuId,
    hard: CpuSet,
    soft: CpuSet,
) -> Result<(), Errno> {
    let poke = with_sched(|s| {
        let i = s.find(d, vcpu).ok_or(Errno::ESRCH)?;
        s.credit.set_affinity(UnitId(i as u32), hard, soft)
    })?;
    reschedule(poke);
    Ok(())
}

/// The CPUs the scheduler runs on.
pub fn online_cpus() -> CpuSet {
    with_sched(|s| CpuSet::first_n(s.credit.nr_cpus()))
}

/// The global credit parameters (time slice, rate limit).
pub fn params() -> credit::Params {
    with_sched(|s| s.credit.params())
}

/// Sets the global credit parameters; `EINVAL` out of range.
pub fn set_params(p: credit::Params) -> Result<(), Errno> {
    with_sched(|s| s.credit.set_params(p))
}
