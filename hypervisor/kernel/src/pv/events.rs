//! Events for PV vCPUs: the upcall on every return to the guest, VIRQ_TIMER from hypervisor
//! timers, and blocking until an event arrives (`SCHEDOP_block`, `SCHEDOP_poll`).
//!
//! `shared/xen-abi.md` 3.2, 4.7, 6.3, 6.4. An event for a vCPU goes through the scheduler
//! (`crate::sched::notify`): a blocked vCPU is woken, one running on another CPU is kicked with
//! an IPI, whose return path delivers the upcall.

use hestia_core::ids::{Port, VcpuId};
use hestia_core::time::TimeScale;
use xen_abi::errno::Errno;
use xen_abi::xen::virq;

use alloc::sync::Arc;
use core::any::Any;

use super::domain::{Domain, Vcpu, VcpuRef, this_vcpu_id};
use super::shared::LoadedVcpuInfo;
use super::{current, domain_crash, traps};
use crate::arch::x86_64::idt::TrapFrame;
use crate::arch::x86_64::{cpu, tsc};
use crate::timer::{self, TimerFn};
use hestia_core::timer_queue::TimerId;

/// Default period of a PV vCPU's VIRQ_TIMER (Xen starts every PV vCPU with 10 ms).
pub const DEFAULT_PERIOD_NS: u64 = 10_000_000;

static SCALE: spin::Once<TimeScale> = spin::Once::new();

/// The pvclock scale of this machine's TSC.
pub fn time_scale() -> TimeScale {
    *SCALE.call_once(|| TimeScale::for_hz(tsc::hz()))
}

/// Writes vCPU `v`'s time information (when it is loaded into a CPU, as Xen at a context
/// switch).
pub fn update_time(d: &Domain, v: &mut Vcpu) {
    v.time_written_tsc = d
        .shared()
        .update_time(v.id, time_scale(), cpu::features().invariant_tsc);
}

/// Rewrites vCPU `v`'s time information if it is more than a second old (in TSC ticks: no
/// division on this path). The guest extrapolates system time from it with the TSC, so it
/// need not be rewritten at every event (Xen does it at context switches and at its
/// once-a-second calibration); a refresh keeps the guest's reading and Hestia's own clock from
/// drifting apart on a vCPU that runs on.
fn refresh_time(d: &Domain, v: &mut Vcpu) {
    if cpu::rdtsc().wrapping_sub(v.time_written_tsc) >= tsc::hz() {
        update_time(d, v);
    }
}

/// Raises `virq` on vCPU `v` of `d` (if the guest bound it; also while `d` is shut down, which
/// may be resumed, as Xen's; not once its destruction began, when its shared_info goes).
pub fn raise_virq(d: &Domain, virq: u32, v: VcpuId) {
    if d.is_dying() {
        return;
    }
    let mut shared = d.shared();
    // From interrupt context too: no CPU holds a domain lock with interrupts on, so the lock
    // can only be busy on another CPU, briefly. (Dropping the event instead loses it.)
    let notify = d.evtchn.lock().raise_virq(&mut shared, virq, v);
    if let Some(target) = notify {
        kick(d, target);
    }
}

/// Makes vCPU `v` of `d` notice a new event: wakes it if it is blocked (or polls), interrupts
/// it if it runs on another CPU (its return to the guest then delivers the upcall).
#[inline(always)]
pub fn kick(d: &Domain, v: VcpuId) {
    // The common case, without the scheduler: the event is for the vCPU running here (its
    // return path delivers the upcall), nothing of its domain polls, and it is not on its way
    // off this CPU (blocked or down earlier in this trap, as by a multicall that blocks and
    // then raises its own port: that vCPU must be woken, as Xen's `vcpu_kick` does).
    let runs_here = current().is_some_and(|c| core::ptr::eq(c, d)) && this_vcpu_id() == v;
    if !runs_here || d.sched.has_pollers() || crate::sched::switch_pending() {
        crate::sched::notify(&d.sched, v);
    }
}

/// On every return to guest code: deliver one upcall if events are pending and unmasked. The
/// check reads the running vCPU's `vcpu_info` through the address [`context::load`] published
/// for this CPU (`percpu::return_check`), kept current by `VCPUOP_register_vcpu_info`.
///
/// [`context::load`]: super::context::load
#[inline(always)]
pub fn before_guest_return(f: &mut TrapFrame) {
    if LoadedVcpuInfo::here().is_some_and(LoadedVcpuInfo::upcall_wanted) {
        deliver_pending(f);
    }
}

#[inline(never)]
fn deliver_pending(f: &mut TrapFrame) {
    let Some(d) = current() else { return };
    let mut v = d.this_vcpu().lock();
    if v.event_callback.address == 0 {
        return;
    }
    refresh_time(d, &mut v);
    // A refused upcall leaves `f` as it was (the bounce writes it only once the frame is on
    // the guest's stack): the crash report shows where the guest was.
    let r = traps::deliver_upcall(d, &mut v, f);
    drop(v);
    if let Err(why) = r {
        domain_crash(d, f, why);
    }
}

/// A vCPU's VIRQ_TIMER sources as the guest set them, and the hypervisor timers armed for them.
///
/// As Xen's: the one-shot timer stays armed (on the CPU that armed it) whether or not the vCPU
/// runs, so it wakes a blocked vCPU; the periodic timer runs only while the vCPU runs: it is
/// stopped when the vCPU is switched out, and on the way back in a tick that fell due meanwhile
/// is raised at once ([`start_periodic`]). Settings survive the vCPU going down and up. Each
/// timer is cancelled by the handle kept here, which stays valid however often it fired.
#[derive(Debug)]
pub struct VcpuTimers {
    /// Absolute deadline of the one-shot timer, 0 for none.
    singleshot_deadline: u64,
    /// The armed one-shot timer and the CPU whose queue holds it.
    singleshot: Option<(u32, TimerId)>,
    /// Period of the periodic timer, 0 when stopped.
    period: u64,
    /// The periodic timer, armed on this CPU while the vCPU runs here.
    periodic: Option<TimerId>,
    /// When the periodic timer last fired.
    periodic_last: u64,
    /// `SCHEDOP_poll`'s timeout and the CPU whose queue holds it.
    poll: Option<(u32, TimerId)>,
}

impl Default for VcpuTimers {
    /// A new vCPU: no one-shot timer, the periodic timer at Xen's 10 ms.
    fn default() -> Self {
        VcpuTimers {
            singleshot_deadline: 0,
            singleshot: None,
            period: DEFAULT_PERIOD_NS,
            periodic: None,
            periodic_last: 0,
            poll: None,
        }
    }
}

/// Cancels every timer of `v`, whose domain is being destroyed.
pub fn cancel_timers(v: &mut Vcpu) {
    cancel(&mut v.timers.singleshot);
    cancel(&mut v.timers.poll);
    stop_periodic(v);
}

/// A timer of vCPU `vr` calling `fired` with it.
fn vcpu_timer(fired: fn(&dyn Any, u64) -> Option<u64>, vr: &Arc<VcpuRef>) -> TimerFn {
    TimerFn::Owned(fired, vr.clone())
}

fn singleshot_fired(owner: &dyn Any, now: u64) -> Option<u64> {
    let vr = owner.downcast_ref::<VcpuRef>()?;
    let d = &vr.dom;
    if let Some(v) = d.vcpus.get(vr.id.index()) {
        let mut v = v.lock();
        // Unless the vCPU armed a later one while this fired (its handle must stay).
        if v.timers.singleshot_deadline <= now {
            v.timers.singleshot_deadline = 0;
            v.timers.singleshot = None;
        }
    }
    raise_virq(d, virq::TIMER, vr.id);
    None
}

fn periodic_fired(owner: &dyn Any, now: u64) -> Option<u64> {
    let vr = owner.downcast_ref::<VcpuRef>()?;
    let d = &vr.dom;
    raise_virq(d, virq::TIMER, vr.id);
    // Keep ticking (under the same handle) only while the guest wants the periodic timer.
    let mut v = d.vcpus.get(vr.id.index())?.lock();
    v.timers.periodic_last = now;
    let period = v.timers.period;
    if period == 0 {
        v.timers.periodic = None;
    }
    (period != 0).then(|| now.saturating_add(period))
}

fn poll_timed_out(owner: &dyn Any, _now: u64) -> Option<u64> {
    let vr = owner.downcast_ref::<VcpuRef>()?;
    crate::sched::wake(&vr.dom.sched, vr.id);
    None
}

/// Cancels a timer armed on some CPU.
fn cancel(slot: &mut Option<(u32, TimerId)>) {
    if let Some((cpu, id)) = slot.take() {
        timer::cancel_on(cpu, id);
    }
}

/// Sets (or, with 0, cancels) the one-shot VIRQ_TIMER of the running vCPU `v` (`vr`) at absolute
/// system time `deadline`.
pub fn set_singleshot(vr: &Arc<VcpuRef>, v: &mut Vcpu, deadline: u64) {
    cancel(&mut v.timers.singleshot);
    v.timers.singleshot_deadline = deadline;
    if deadline != 0 {
        let id = timer::add(deadline, vcpu_timer(singleshot_fired, vr));
        v.timers.singleshot = Some((smp_index(), id));
    }
}

/// Arms (or, with 0, cancels) the timeout of the running vCPU's `SCHEDOP_poll`.
pub fn set_poll_timeout(vr: &Arc<VcpuRef>, v: &mut Vcpu, deadline: u64) {
    cancel(&mut v.timers.poll);
    if deadline != 0 {
        let id = timer::add(deadline, vcpu_timer(poll_timed_out, vr));
        v.timers.poll = Some((smp_index(), id));
    }
}

fn smp_index() -> u32 {
    crate::arch::x86_64::percpu::current_index()
}

/// Starts (`period` > 0) or stops (0) `v`'s periodic VIRQ_TIMER; `running` is `v`'s reference
/// when it is the vCPU running here (its timer is then re-armed at once).
pub fn set_periodic(running: Option<&Arc<VcpuRef>>, v: &mut Vcpu, period: u64) {
    v.timers.period = period;
    if let Some(vr) = running {
        stop_periodic(v);
        v.timers.periodic_last = tsc::uptime_ns();
        start_periodic(vr, v);
    }
}

/// Arms `v`'s periodic timer on this CPU as it is switched in; a tick that fell due while it
/// was out is raised at once.
pub fn start_periodic(vr: &Arc<VcpuRef>, v: &mut Vcpu) {
    let period = v.timers.period;
    if period == 0 || v.timers.periodic.is_some() {
        return;
    }
    let now = tsc::uptime_ns();
    let mut next = v.timers.periodic_last.saturating_add(period);
    if next <= now {
        next = now;
    }
    v.timers.periodic = Some(timer::add(next, vcpu_timer(periodic_fired, vr)));
}

/// Stops `v`'s periodic timer as it is switched out of this CPU.
pub fn stop_periodic(v: &mut Vcpu) {
    if let Some(id) = v.timers.periodic.take() {
        timer::cancel(id);
    }
}

/// True when the hypercall or long operation running for `d`'s vCPU on this CPU should stop
/// (and be issued again): an interrupt is waiting, or the vCPU has an unmasked event.
pub fn preempt_now(d: &Domain) -> bool {
    let (shared, v) = (d.shared(), this_vcpu_id());
    crate::arch::x86_64::apic::interrupt_pending()
        || (shared.upcall_pending(v) && !shared.upcall_mask(v))
}

/// True if any of `ports` is pending (in the FIFO ABI's event words once the domain uses it).
/// Called under the scheduler's lock, which a sender takes while holding the `evtchn` lock
/// (`kick`): so the port table is only tried, and when it is busy the answer is true, an early
/// return of `SCHEDOP_poll` (allowed: Xen's returns whenever the vCPU is woken), never a
/// deadlock or a lost wake-up.
pub fn any_pending(d: &Domain, ports: impl IntoIterator<Item = Port>) -> bool {
    let shared = d.shared();
    let Some(ev) = d.evtchn.try_lock() else {
        return true;
    };
    ports.into_iter().any(|p| ev.is_pending(&shared, p))
}

/// `SCHEDOP_poll`'s check of its ports before it blocks (Xen's `do_poll` loop over
/// `evtchn_port_poll`), in the guest's order: a pending port ends the poll (true) and one that
/// does not exist, is free or is port 0 fails it (-EINVAL), whichever comes first.
pub fn poll_ports(d: &Domain, ports: impl IntoIterator<Item = Port>) -> Result<bool, Errno> {
    let shared = d.shared();
    let ev = d.evtchn.lock();
    for p in ports {
        if ev.poll(&shared, p).map_err(errno)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The errno for an event-channel error.
pub(crate) fn errno(e: hestia_core::evtchn::EvtchnError) -> Errno {
    use hestia_core::evtchn::EvtchnError;
    match e {
        EvtchnError::Invalid => Errno::EINVAL,
        EvtchnError::Exists => Errno::EEXIST,
        EvtchnError::NoVcpu => Errno::ENOENT,
        EvtchnError::NoSpace => Errno::ENOSPC,
    }
}
