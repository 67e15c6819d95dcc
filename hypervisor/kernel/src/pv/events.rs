//! Events for PV vCPUs: the upcall on every return to the guest, VIRQ_TIMER from hypervisor
//! timers, and blocking until an event arrives (`SCHEDOP_block`, `SCHEDOP_poll`).
//!
//! `shared/xen-abi.md` 3.2, 4.7, 6.3, 6.4. Each vCPU runs on its own physical CPU (vCPU `i` on
//! CPU `i`), so its timers live in that CPU's timer queue; an event for a vCPU on another CPU
//! "kicks" it with an IPI, whose return path (or the end of its halt) delivers the upcall.

use hestia_core::evtchn::SharedBits;
use hestia_core::time::TimeScale;
use xen_abi::xen::virq;

use super::domain::{Domain, Vcpu, this_vcpu_id};
use super::{current, domain_crash, traps};
use crate::arch::x86_64::idt::TrapFrame;
use crate::arch::x86_64::{cpu, smp, tsc};
use crate::timer::{self, TimerFn};
use hestia_core::timer_queue::TimerId;

/// Default period of a PV vCPU's VIRQ_TIMER (Xen starts every PV vCPU with 10 ms).
pub const DEFAULT_PERIOD_NS: u64 = 10_000_000;

static SCALE: spin::Once<TimeScale> = spin::Once::new();

/// The pvclock scale of this machine's TSC.
pub fn time_scale() -> TimeScale {
    *SCALE.call_once(|| TimeScale::for_hz(tsc::hz()))
}

/// Refreshes vCPU `v`'s time information.
pub fn update_time(d: &Domain, v: u32) {
    d.shared()
        .update_time(v, time_scale(), cpu::features().invariant_tsc);
}

/// Raises `virq` on vCPU `v` of `d` (if the guest bound it).
pub fn raise_virq(d: &Domain, virq: u32, v: u32) {
    let mut shared = d.shared();
    // From interrupt context too: no CPU holds a domain lock with interrupts on, so the lock
    // can only be busy on another CPU, briefly. (Dropping the event instead loses it.)
    let notify = d.evtchn.lock().raise_virq(&mut shared, virq, v);
    if let Some(target) = notify {
        kick(target);
    }
}

/// Makes vCPU `v` notice a new upcall: if it runs on another CPU, an IPI interrupts it (its
/// return to the guest, or the end of its halt, then delivers the upcall).
pub fn kick(v: u32) {
    if v != this_vcpu_id() {
        smp::kick(v);
    }
}

/// On every return to guest code: deliver one upcall if events are pending and unmasked.
pub fn before_guest_return(f: &mut TrapFrame) {
    let Some(d) = current() else { return };
    let id = this_vcpu_id();
    let shared = d.shared();
    if !shared.upcall_pending(id) || shared.upcall_mask(id) {
        return;
    }
    let mut v = d.this_vcpu().lock();
    if v.event_callback.address == 0 {
        return;
    }
    update_time(d, id);
    let original = *f;
    let r = traps::deliver_upcall(d, &mut v, f);
    drop(v);
    if let Err(why) = r {
        domain_crash(d, &original, why);
    }
}

/// A vCPU's VIRQ_TIMER sources as the guest set them, and the hypervisor timers armed for them.
///
/// The settings belong to the vCPU and survive it going down and up (as Xen's
/// `periodic_period` and `singleshot_timer`); the timers are armed only on the vCPU's own CPU
/// while it runs there ([`start_timers`]), and cancelled by the handle kept here, which stays
/// valid however often a periodic timer fired.
#[derive(Debug)]
pub struct VcpuTimers {
    /// Absolute deadline of the one-shot timer, 0 for none.
    singleshot_deadline: u64,
    singleshot: Option<TimerId>,
    /// Period of the periodic timer, 0 when stopped.
    period: u64,
    periodic: Option<TimerId>,
}

impl Default for VcpuTimers {
    /// A new vCPU: no one-shot timer, the periodic timer at Xen's 10 ms.
    fn default() -> Self {
        VcpuTimers {
            singleshot_deadline: 0,
            singleshot: None,
            period: DEFAULT_PERIOD_NS,
            periodic: None,
        }
    }
}

fn singleshot_fired(_now: u64) -> Option<u64> {
    if let Some(d) = current() {
        let mut v = d.this_vcpu().lock();
        v.timers.singleshot_deadline = 0;
        v.timers.singleshot = None;
        drop(v);
        raise_virq(d, virq::TIMER, this_vcpu_id());
    }
    None
}

fn periodic_fired(now: u64) -> Option<u64> {
    let d = current()?;
    raise_virq(d, virq::TIMER, this_vcpu_id());
    // Keep ticking (under the same handle) only while the guest wants the periodic timer.
    let period = d.this_vcpu().lock().timers.period;
    (period != 0).then(|| now.saturating_add(period))
}

/// True when `v` is the vCPU running on this CPU, so its timers belong in this CPU's queue.
fn runs_here(v: &Vcpu) -> bool {
    v.up && v.id == this_vcpu_id()
}

/// Sets (or, with 0, cancels) `v`'s one-shot VIRQ_TIMER at absolute system time `deadline`.
pub fn set_singleshot(v: &mut Vcpu, deadline: u64) {
    v.timers.singleshot_deadline = deadline;
    if runs_here(v) {
        arm_singleshot(&mut v.timers);
    }
}

/// Starts (`period` > 0) or stops (0) `v`'s periodic VIRQ_TIMER.
pub fn set_periodic(v: &mut Vcpu, period: u64) {
    v.timers.period = period;
    if runs_here(v) {
        arm_periodic(&mut v.timers);
    }
}

fn arm_singleshot(t: &mut VcpuTimers) {
    if let Some(id) = t.singleshot.take() {
        timer::cancel(id);
    }
    if t.singleshot_deadline != 0 {
        t.singleshot = Some(timer::add(t.singleshot_deadline, TimerFn(singleshot_fired)));
    }
}

fn arm_periodic(t: &mut VcpuTimers) {
    if let Some(id) = t.periodic.take() {
        timer::cancel(id);
    }
    if t.period != 0 {
        let first = tsc::uptime_ns().saturating_add(t.period);
        t.periodic = Some(timer::add(first, TimerFn(periodic_fired)));
    }
}

/// Arms `v`'s timers on this CPU, where it starts or resumes running.
pub fn start_timers(v: &mut Vcpu) {
    arm_singleshot(&mut v.timers);
    arm_periodic(&mut v.timers);
}

/// Cancels `v`'s armed timers as it stops running on this CPU; its settings stay for
/// [`start_timers`].
pub fn stop_timers(v: &mut Vcpu) {
    for id in [v.timers.singleshot.take(), v.timers.periodic.take()]
        .into_iter()
        .flatten()
    {
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

/// Blocks the calling vCPU until `wake` holds, with interrupts enabled while halted. Runs on
/// the hypercall path (entered with interrupts off) without holding any domain lock.
pub fn block_until(d: &Domain, mut wake: impl FnMut(&Domain) -> bool) {
    while !wake(d) && !d.dying.load(core::sync::atomic::Ordering::Acquire) {
        // `sti; hlt` is atomic: an interrupt between the check and the halt still wakes us.
        cpu::idle();
        cpu::disable_interrupts();
    }
    update_time(d, this_vcpu_id());
}

/// True if any of `ports` is pending.
pub fn any_pending(d: &Domain, ports: &[u32]) -> bool {
    let shared = d.shared();
    ports.iter().any(|&p| shared.is_pending(p))
}

/// The errno for an event-channel error.
pub(crate) fn errno(e: hestia_core::evtchn::EvtchnError) -> xen_abi::errno::Errno {
    use hestia_core::evtchn::EvtchnError;
    use xen_abi::errno::Errno;
    match e {
        EvtchnError::Invalid => Errno::EINVAL,
        EvtchnError::Exists => Errno::EEXIST,
        EvtchnError::NoVcpu => Errno::ENOENT,
        EvtchnError::NoSpace => Errno::ENOSPC,
    }
}
