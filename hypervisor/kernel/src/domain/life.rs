//! A domain's life: who ends it, its pause counts, and how far its destruction has gone
//! (Xen 4.17 `xen/common/domain.c`: `domain_pause`, `domain_pause_by_systemcontroller`,
//! `d->is_dying`, `d->shutdown_code`).
//!
//! - **Pausing** nests. [`domain_pause`]/[`domain_unpause`] are Hestia's own (other sub-ops
//!   pause a domain while they change it, as Xen's `setvcpucontext` and `max_vcpus` do); the
//!   toolstack's pauses ([`pause_by_controller`], `XEN_DOMCTL_pausedomain`) are counted apart,
//!   at most 255 (`EOVERFLOW`), never below 0 (`EINVAL`), and each also holds one internal
//!   pause. A domain runs only while the internal count is 0: the scheduler keeps a paused
//!   domain's runnable vCPUs off every CPU and out of its queues (`crate::sched::pause`), and
//!   puts them back when the count returns to 0; a vCPU brought up or woken while its domain is
//!   paused waits for that. A domain the toolstack creates starts paused by it once (Xen's
//!   `controller_pause_count = 1`), and starts running at its first unpause.
//! - **Shutting down** (`SCHEDOP_shutdown`, a crash) takes the domain's vCPUs off the CPUs
//!   (`crate::pv`'s stop path) and records the first reason ([`Domain::shutdown_code`]); nothing
//!   of it is torn down (memory, event channels, grants, timers, console ring all stay), as
//!   Xen's shut-down domain is only paused. A boot-time domain is then destroyed at once,
//!   unless it suspended (`SHUTDOWN_suspend`: it waits for the control domain to save it, and
//!   to resume or destroy it); a domain the toolstack created ([`Life::toolstack`]) stays, shut
//!   down, until the toolstack destroys it.
//! - **Resuming** ([`domain_resume`], `XEN_DOMCTL_resumedomain`, Xen's `domain_resume`) undoes
//!   a shutdown whatever its code, as long as the destruction has not begun: the code is
//!   cleared and the vCPUs that were up run again from where they stopped (a guest that
//!   suspended returns from its `SCHEDOP_shutdown`, with whatever the toolstack wrote in its
//!   RAX meanwhile: libxc's cooperative resume writes 1, "suspend cancelled").
//! - **Dying** ([`Domain::is_dying`], Xen's `is_dying`): set when its destruction begins
//!   (`XEN_DOMCTL_destroydomain` or the reaper, `super::reap`), for good; the domain is then
//!   stopped for good too (no resume any more).
//!
//! Locks: the internal pause count changes only under the scheduler's lock, which decides from it
//! whether a vCPU may run; the controller's count and the dying state are atomics. The shutdown
//! lock (Xen's `shutdown_lock`; only the scheduler's lock and the served consoles' list are
//! taken under it) orders a resume against the start of the destruction: once that began, the
//! stopped flag (`Domain::stopped`) is never cleared again. The flag is cleared under the
//! scheduler's lock, under which the stop path takes the vCPUs off (`crate::sched`), so a
//! shutdown racing with a resume never leaves a domain that shows as running but cannot run.

use core::sync::atomic::Ordering;

use xen_abi::errno::Errno;

use hestia_core::ids::VcpuId;

use crate::pv::domain::{Domain, hardware_domain};
use crate::pv::life::Life;

/// Most nested toolstack pauses (Xen's limit, so the toolstack cannot overflow the count).
const CONTROLLER_PAUSE_MAX: u32 = 255;
/// `XEN_DOMCTL_resumedomain` (Xen's `domain_resume`): `d`, shut down with any code, runs again
/// from where its vCPUs stopped, its code cleared; nothing happens to a domain that is not shut
/// down, or whose destruction began (it answers 0 all the same, as Xen's). `EINVAL` for the
/// calling domain, which cannot be paused around the change.
pub fn domain_resume(d: &Domain) -> Result<(), Errno> {
    // Paused, so none of its vCPUs is half way through stopping while its state changes.
    domain_pause(d)?;
    {
        let _held = d.life.shutdown_lock.lock();
        let clear = || {
            let stopped = d.stopped.load(Ordering::Acquire);
            if stopped {
                // The code first: `Domain::shutdown_code` never sees the old one on a domain
                // that runs.
                d.shutdown_reason
                    .store(Life::no_shutdown_code(), Ordering::Release);
                d.stopped.store(false, Ordering::Release);
            }
            stopped
        };
        if !d.is_dying() && crate::sched::resume_domain(&d.sched, clear) {
            crate::info!("{}: resumed", d.id);
        }
    }
    domain_unpause(d);
    Ok(())
}

/// Pauses `d` (nestable, Xen's `domain_pause`): when it returns, none of `d`'s vCPUs is on a
/// CPU, and none runs until as many [`domain_unpause`]s. `EINVAL` if `d` is the calling domain
/// (its own vCPU could never leave this CPU).
pub fn domain_pause(d: &Domain) -> Result<(), Errno> {
    if crate::pv::current().is_some_and(|c| core::ptr::eq(c, d)) {
        return Err(Errno::EINVAL);
    }
    crate::sched::pause(&d.sched);
    // Each CPU running one of its vCPUs was told to switch away at its next return to the
    // guest: wait for that (Xen's `vcpu_sleep_sync`).
    while !crate::sched::off_cpus(&d.sched) {
        core::hint::spin_loop();
    }
    Ok(())
}

/// Undoes one [`domain_pause`]; the last lets its runnable vCPUs run again.
pub fn domain_unpause(d: &Domain) {
    if !crate::sched::unpause(&d.sched) {
        crate::error!("{}: unpaused more often than paused", d.id);
    }
}

/// `XEN_DOMCTL_pausedomain`: one more toolstack pause of `d` (`EOVERFLOW` past 255, `EINVAL`
/// for the calling domain).
pub fn pause_by_controller(d: &Domain) -> Result<(), Errno> {
    if crate::pv::current().is_some_and(|c| core::ptr::eq(c, d)) {
        return Err(Errno::EINVAL);
    }
    d.life
        .controller_pause
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < CONTROLLER_PAUSE_MAX).then_some(n + 1)
        })
        .map_err(|_| Errno::EOVERFLOW)?;
    domain_pause(d)
}

/// `XEN_DOMCTL_unpausedomain`: one toolstack pause of `d` fewer (`EINVAL` if it has none).
pub fn unpause_by_controller(d: &Domain) -> Result<(), Errno> {
    d.life
        .controller_pause
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .map_err(|_| Errno::EINVAL)
        .inspect(|&before| {
            if before == 1 {
                d.life.creation_finished.store(true, Ordering::Release);
            }
        })?;
    domain_unpause(d);
    Ok(())
}

/// What follows `d`'s stop with reason `r` (`SHUTDOWN_*`), once its vCPUs left the CPUs
/// (`crate::pv::stop_after_domain`, which calls it). The hardware domain stops the machine
/// (power off, reset, or with `noreboot` or after a crash a halt), as Xen does. A domU's
/// console output so far is printed, the hardware domain hears of it (`VIRQ_DOM_EXC`), and
/// once no domain is left running the machine powers off (with the hardware domain alive, it
/// never is: the domains the toolstack creates all run beside it). A boot-time domU is then
/// destroyed unless it suspended; a domain the toolstack created, or one that suspended,
/// stays, shut down with all it holds, until the control domain resumes ([`domain_resume`])
/// or destroys it.
pub fn after_stop(d: &Domain, r: u32) {
    let hardware = hardware_domain().is_some_and(|h| core::ptr::eq(h, d));
    if hardware {
        crate::info!(
            "mm: while guests ran, the frame table's lock was {}",
            crate::mm::frametable::longest_hold()
        );
        super::audit::audit_at_stop(d);
        crate::machine::dom0_stopped(r)
    }
    // Its words so far (its ring is served until its destruction begins: it may be resumed).
    crate::console::ring::service(d);
    if let Some(h) = hardware_domain() {
        crate::pv::events::raise_virq(h, xen_abi::xen::virq::DOM_EXC, VcpuId::FIRST);
    }
    if super::all_dying() && !super::boot::cycled(d) {
        super::audit::audit_at_stop(d);
        crate::info!(
            "mm: while guests ran, the frame table's lock was {}",
            crate::mm::frametable::longest_hold()
        );
        crate::info!("Hestia: every domain has stopped");
        crate::machine::dom0_stopped(xen_abi::sched::reason::POWEROFF)
    }
    // A domain the toolstack created stays, shut down, until the toolstack destroys it (Xen's
    // `XEN_DOMCTL_destroydomain`); so does one that suspended, which waits to be saved and
    // then resumed or destroyed. Any other boot-time one, which nobody else would destroy, is
    // destroyed once its vCPUs are off every CPU (`super::reap_step`).
    if !d.life.toolstack
        && r != xen_abi::sched::reason::SUSPEND
        && let Ok(me) = super::lookup(d, d.id.0)
    {
        super::destroy_later(me);
    }
}
