//! Destroying stopped domains: the reaper.
//!
//! A domU that shut down or crashed is queued here ([`destroy_later`]). Its destruction waits
//! until none of its vCPUs is loaded on a CPU any more (each CPU switches away from them at its
//! next return to a guest; an idle CPU runs on Hestia's own page tables), then runs in bounded
//! steps from the idle loop ([`step`], with interrupts let in between): its vCPUs' timers are
//! cancelled, its event channels closed (the other end of each inter-domain channel becomes
//! unbound), its memory is relinquished (`super::destroy`: every frame scrubbed and returned),
//! the scheduler forgets its vCPUs, it leaves the domain table, and the hardware domain gets
//! `VIRQ_DOM_EXC` (Xen's `domain_destroy`). The frame table is then audited. One domain is
//! destroyed at a time, so an audit never meets one half destroyed.
//!
//! A destroyed domain whose frames another domain still maps through grants stays a zombie
//! (Xen's term): out of the table, its kept frames still its own, swept again
//! ([`resweep_dead`]) each time a grant mapping of a dead domain's frame goes, and forgotten
//! once nothing is kept.
//!
//! When the machine stops, [`finish_all`] completes every queued destruction at once (the other
//! CPUs are parked then, so their vCPUs count as switched away).
//!
//! Locks: the queue's and the reaper's own mutexes (`CURRENT` before `SWEEPING` before
//! `ZOMBIES`) are leaves but for the destruction step itself (the domain's and its peers'
//! `evtchn` locks, taken by `evtchn_destroy`; vCPU locks, then the frame table's, taken by
//! `relinquish_memory`), and are only taken with interrupts off (the idle loop, the stop
//! path).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use super::{DomainRef, Preempted, Relinquishing, relinquish_memory};

/// Stopped domains waiting for their destruction, oldest first.
static QUEUE: spin::Mutex<Vec<DomainRef>> = spin::Mutex::new(Vec::new());
/// The destruction under way, its progress, and whether it is a zombie's sweep.
static CURRENT: spin::Mutex<Option<(DomainRef, Relinquishing, bool)>> = spin::Mutex::new(None);
/// Destroyed domains some of whose frames other domains still map through grants (Xen's
/// zombie domains): out of the domain table, their frames kept until the last mapping goes.
static ZOMBIES: spin::Mutex<Vec<(DomainRef, Relinquishing)>> = spin::Mutex::new(Vec::new());
/// Zombies taken out of [`ZOMBIES`] to be swept again, one per step.
static SWEEPING: spin::Mutex<Vec<(DomainRef, Relinquishing)>> = spin::Mutex::new(Vec::new());
/// A reference on a dead domain's frame went: its zombies are swept again.
static RESWEEP: AtomicBool = AtomicBool::new(false);

/// Queues the stopped domain `d` for destruction.
pub fn destroy_later(d: DomainRef) {
    QUEUE.lock().push(d);
}

/// A grant mapping of a dying or destroyed domain's frame went: sweep the zombies again at
/// the next step.
pub fn resweep_dead() {
    RESWEEP.store(true, Ordering::Release);
}

/// One bounded step of destruction, if a domain is ready for one (`force`: whether or not its
/// vCPUs are still loaded somewhere, for the machine's stop). True if it did work.
pub fn step(force: bool) -> bool {
    let mut cur = CURRENT.lock();
    if cur.is_none() {
        let next = {
            let mut q = QUEUE.lock();
            let ready = q.iter().position(|d| force || crate::sched::off_cpus(d));
            ready.map(|i| q.remove(i))
        };
        if let Some(d) = next {
            for v in &d.vcpus {
                crate::pv::events::cancel_timers(&mut v.lock());
            }
            // Before its memory (shared_info) goes, and before it leaves the table: every
            // peer sees its channels closed and names it no more.
            crate::hypercall::event_channel::evtchn_destroy(&d);
            *cur = Some((d, Relinquishing::default(), false));
        } else {
            let mut sweeping = SWEEPING.lock();
            if RESWEEP.swap(false, Ordering::AcqRel) {
                // Each zombie once, one per step: those still kept go back to ZOMBIES.
                sweeping.append(&mut ZOMBIES.lock());
            }
            if let Some((d, state)) = sweeping.pop() {
                *cur = Some((d, state, true));
            }
        }
    }
    let Some((d, state, _)) = cur.as_mut() else {
        return false;
    };
    if relinquish_memory(d, state) == Err(Preempted) {
        return true;
    }
    let (d, state, zombie) = match cur.take() {
        Some(done) => done,
        None => return true,
    };
    drop(cur);
    if zombie {
        if state.kept() == 0 {
            crate::info!("{}: its last frames mapped by others freed", d.id);
        } else {
            ZOMBIES.lock().push((d, state));
        }
        return true;
    }
    crate::sched::forget_domain(&d);
    super::remove(&d);
    crate::info!(
        "{}: destroyed: {} frames scrubbed and returned ({} kept), {} MiB free",
        d.id,
        state.freed(),
        state.kept(),
        crate::mm::stats().free >> 20
    );
    if let Some(h) = super::hardware_domain() {
        crate::pv::events::raise_virq(h, xen_abi::xen::virq::DOM_EXC, 0);
    }
    crate::pv::audit::audit_after_destroy(&d);
    super::boot::destroyed(&d);
    if state.kept() != 0 {
        ZOMBIES.lock().push((d, state));
    }
    true
}

/// Completes every queued destruction now (the machine stops; the other CPUs are parked).
pub fn finish_all() {
    while step(true) {}
}
