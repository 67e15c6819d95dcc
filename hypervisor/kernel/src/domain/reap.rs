//! Destroying domains: the reaper, and `XEN_DOMCTL_destroydomain`'s [`domain_kill`].
//!
//! A boot-time domU that shut down or crashed is queued here ([`destroy_later`]); a domain
//! the toolstack destroys is driven by its `destroydomain` calls instead ([`domain_kill`]:
//! each call does bounded steps and answers `ERESTART` while work is left, as Xen's
//! `domain_kill`; only those calls drive it, so the domain stays in the table until the
//! call that completes it). Whoever begins a domain's destruction owns it
//! (`super::life`'s dying state): the reaper never queues a domain the toolstack is
//! destroying, and the toolstack takes over a queued one.
//!
//! A destruction waits until none of the domain's vCPUs is loaded on a CPU any more (each CPU
//! switches away from them at its next return to a guest; an idle CPU runs on Hestia's own
//! page tables), then runs in bounded steps (from the idle loop for the queued ones, with
//! interrupts let in between): its vCPUs' timers are cancelled, its event channels closed (the
//! other end of each inter-domain channel becomes unbound), its memory is relinquished
//! (`super::destroy`: every frame returned, to be zeroed at idle time or before its next use),
//! the scheduler forgets its vCPUs, it
//! leaves the domain table, and the hardware domain gets `VIRQ_DOM_EXC` (Xen's
//! `domain_destroy`). The frame table is then audited. One domain is destroyed at a time
//! ([`CURRENT`]), so an audit never meets one half destroyed.
//!
//! A destroyed domain whose frames another domain still maps through grants stays a zombie
//! (Xen's term): no lookup finds it but its id stays taken (`super::bury`), its kept frames
//! still its own, swept again each time a grant mapping of a dead domain's frame goes (the
//! frame table notes it, `crate::mm::frametable::take_dead_frame_released`), and forgotten,
//! its id freed, once nothing is kept.
//!
//! When the machine stops, [`finish_all`] completes every queued destruction at once (the other
//! CPUs are parked then, so their vCPUs count as switched away).
//!
//! Locks: the queue's and the reaper's own mutexes (`CURRENT` before `SWEEPING` before
//! `ZOMBIES`) are leaves but for the destruction step itself (the domain's and its peers'
//! `evtchn` locks, taken by `evtchn_destroy`; vCPU locks, then the frame table's, taken by
//! `relinquish_memory`), and are only taken with interrupts off (the idle loop, the stop
//! path, `domain_kill`, which only tries `CURRENT`).

use alloc::vec::Vec;
use hestia_core::ids::VcpuId;

use xen_abi::errno::Errno;

use super::{DomainRef, Preempted, Relinquishing, relinquish_memory};
use crate::arch::x86_64::cpu;

/// Stopped domains waiting for their destruction, oldest first.
static QUEUE: spin::Mutex<Vec<DomainRef>> = spin::Mutex::new(Vec::new());
/// The destruction under way, its progress, and whether it is a zombie's sweep.
static CURRENT: spin::Mutex<Option<Job>> = spin::Mutex::new(None);
/// Destroyed domains some of whose frames other domains still map through grants (Xen's
/// zombie domains): out of the domain table, their frames kept until the last mapping goes.
static ZOMBIES: spin::Mutex<Vec<(DomainRef, Relinquishing)>> = spin::Mutex::new(Vec::new());
/// Zombies taken out of [`ZOMBIES`] to be swept again, one per step.
static SWEEPING: spin::Mutex<Vec<(DomainRef, Relinquishing)>> = spin::Mutex::new(Vec::new());

/// Whose a destruction under way is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The reaper's: a queued domain.
    Queued,
    /// [`domain_kill`]'s: only its calls (and the machine's stop) advance it, so the call that
    /// completes it is the one that answers.
    Killed,
    /// A zombie's sweep.
    Zombie,
}

/// A destruction under way: the domain, its progress, whose it is.
type Job = (DomainRef, Relinquishing, Kind);

/// Queues the stopped domain `d` for destruction, unless its destruction began already (the
/// toolstack destroys it).
pub fn destroy_later(d: DomainRef) {
    if d.begin_dying() {
        QUEUE.lock().push(d);
    }
}

/// The first steps of destroying `d`, whose vCPUs are off every CPU: nothing wakes it or
/// sends it events any more.
fn begin(d: DomainRef, kind: Kind) -> Job {
    for v in &d.vcpus {
        crate::pv::events::cancel_timers(&mut v.lock());
    }
    // Before its memory (shared_info) goes, and before it leaves the table: every peer sees
    // its channels closed and names it no more.
    super::evtchn::evtchn_destroy(&d);
    (d, Relinquishing::default(), kind)
}

/// One bounded step of destruction, if a domain is ready for one (`force`: whether or not its
/// vCPUs are still loaded somewhere, and [`domain_kill`]'s too, for the machine's stop). True
/// if it did work.
pub fn step(force: bool) -> bool {
    let mut cur = CURRENT.lock();
    if cur.is_none() {
        let next = {
            let mut q = QUEUE.lock();
            let ready = q
                .iter()
                .position(|d| force || crate::sched::off_cpus(&d.sched));
            ready.map(|i| q.remove(i))
        };
        if let Some(d) = next {
            *cur = Some(begin(d, Kind::Queued));
        } else {
            let mut sweeping = SWEEPING.lock();
            if crate::mm::frametable::take_dead_frame_released() {
                // Each zombie once, one per step: those still kept go back to ZOMBIES.
                sweeping.append(&mut ZOMBIES.lock());
            }
            if let Some((d, state)) = sweeping.pop() {
                *cur = Some((d, state, Kind::Zombie));
            }
        }
    }
    if !force && cur.as_ref().is_some_and(|(_, _, k)| *k == Kind::Killed) {
        return false;
    }
    advance(cur)
}

/// Advances the destruction in `cur`, if any, by one bounded step, and completes it once its
/// memory is relinquished. True if it did work.
fn advance(mut cur: spin::MutexGuard<'_, Option<Job>>) -> bool {
    let Some((d, state, _)) = cur.as_mut() else {
        return false;
    };
    if relinquish_memory(d, state) == Err(Preempted) {
        return true;
    }
    let Some((d, state, kind)) = cur.take() else {
        return true;
    };
    drop(cur);
    if kind == Kind::Zombie {
        if state.kept() == 0 {
            super::remove(&d);
            crate::info!("{}: its last frames mapped by others freed", d.id);
        } else {
            ZOMBIES.lock().push((d, state));
        }
        return true;
    }
    crate::sched::forget_domain(&d.sched);
    super::bury(&d, state.kept());
    d.life.set_dead();
    let stats = crate::mm::stats();
    crate::info!(
        "{}: destroyed: {} frames returned ({} kept), {} MiB free ({} MiB to scrub)",
        d.id,
        state.freed(),
        state.kept(),
        stats.free >> 20,
        stats.dirty >> 20
    );
    if let Some(h) = super::hardware_domain() {
        crate::pv::events::raise_virq(h, xen_abi::xen::virq::DOM_EXC, VcpuId::FIRST);
    }
    super::audit::audit_after_destroy(&d);
    super::boot::destroyed(&d);
    if state.kept() != 0 {
        ZOMBIES.lock().push((d, state));
    }
    true
}

/// Proof that no destruction is under way, held while it lives (the frame audit holds one, so
/// it never meets a domain half relinquished: a destruction may span several idle steps, or
/// several calls of the toolstack's `destroydomain`).
pub struct NoDestruction(
    #[expect(dead_code, reason = "held for its lock")] spin::MutexGuard<'static, Option<Job>>,
);

/// A [`NoDestruction`], or `None` while a domain or a zombie is being relinquished (or another
/// CPU is stepping one).
pub fn no_destruction() -> Option<NoDestruction> {
    let cur = CURRENT.try_lock()?;
    cur.is_none().then_some(NoDestruction(cur))
}

/// Completes every queued destruction now (the machine stops; the other CPUs are parked).
pub fn finish_all() {
    while step(true) {}
}

/// `XEN_DOMCTL_destroydomain` of `d` by `caller` (Xen's `domain_kill`), which must not be
/// `d`: the first call stops it (shut down or running, it never runs again); each call then
/// destroys it in bounded steps until `caller` has something else to do, answering
/// `ERESTART` (call again) until the destruction is complete, then 0 (also for a domain
/// already destroyed but kept as a zombie, which no lookup finds anyway). While it is being
/// destroyed, it shows as dying ([`crate::pv::domain::Domain::is_dying`]).
pub fn domain_kill(caller: &crate::pv::domain::Domain, d: &DomainRef) -> Result<(), Errno> {
    if d.begin_dying() {
        crate::info!("{}: destroyed by {}", d.id, caller.id);
        // No vCPU of it runs again (it is stopped for good: no resume).
        d.stop_vcpus();
    }
    // A queued destruction (it stopped by itself) is this call's from now on.
    QUEUE.lock().retain(|q| !core::ptr::eq(&**q, &**d));
    // The call that completes it answers 0: it leaves the table then, so a call issued again
    // would not find it.
    while !d.life.is_dead() {
        let worked = cpu::without_interrupts(|| kill_step(d));
        if d.life.is_dead() {
            break;
        }
        if !worked || crate::pv::events::preempt_now(caller) {
            return Err(Errno::ERESTART);
        }
    }
    Ok(())
}

/// One bounded step towards `d`'s destruction: its own, or the one under way before it (the
/// reaper's or a zombie's). False if there is nothing to do yet (its vCPUs are still loaded
/// on a CPU, or another CPU is stepping).
fn kill_step(d: &DomainRef) -> bool {
    let Some(mut cur) = CURRENT.try_lock() else {
        return false;
    };
    if cur.is_none() {
        if !crate::sched::off_cpus(&d.sched) {
            return false;
        }
        *cur = Some(begin(d.clone(), Kind::Killed));
    }
    advance(cur)
}
