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

use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use xen_abi::errno::Errno;

use crate::pv::domain::Domain;

/// Most nested toolstack pauses (Xen's limit, so the toolstack cannot overflow the count).
const CONTROLLER_PAUSE_MAX: u32 = 255;
/// `SHUTDOWN_CODE_INVALID`: the domain has not shut down.
const SHUTDOWN_CODE_INVALID: u32 = u32::MAX;

/// Xen's `DOMDYING_*`.
mod dying {
    pub const ALIVE: u8 = 0;
    /// Its destruction began.
    pub const DYING: u8 = 1;
    /// Its destruction is complete.
    pub const DEAD: u8 = 2;
}

/// The lifecycle state of one domain.
pub struct Life {
    /// The toolstack created it (`XEN_DOMCTL_createdomain`): the toolstack ends it, so a
    /// shutdown leaves it in the table until `XEN_DOMCTL_destroydomain`.
    pub toolstack: bool,
    /// Pauses by the toolstack (Xen's `controller_pause_count`).
    controller_pause: AtomicU32,
    /// Every pause in force, the toolstack's included (Xen's `pause_count`); changed only
    /// under the scheduler's lock (`crate::sched::pause`).
    pub(crate) pause_count: AtomicU32,
    /// [`dying`].
    dying: AtomicU8,
    /// The toolstack's pauses all went once (Xen's `creation_finished`): the domain has been
    /// started, and what may only be set before that (its CPU policy) is fixed.
    creation_finished: core::sync::atomic::AtomicBool,
    /// Orders [`domain_resume`] against [`Domain::begin_dying`].
    shutdown_lock: spin::Mutex<()>,
}

impl Life {
    /// A boot-time domain's: running once started, destroyed by Hestia when it stops.
    pub fn boot() -> Self {
        Life {
            toolstack: false,
            controller_pause: AtomicU32::new(0),
            pause_count: AtomicU32::new(0),
            dying: AtomicU8::new(dying::ALIVE),
            creation_finished: core::sync::atomic::AtomicBool::new(true),
            shutdown_lock: spin::Mutex::new(()),
        }
    }

    /// A toolstack-created domain's: paused once by the toolstack.
    pub fn toolstack() -> Self {
        Life {
            toolstack: true,
            controller_pause: AtomicU32::new(1),
            pause_count: AtomicU32::new(1),
            dying: AtomicU8::new(dying::ALIVE),
            creation_finished: core::sync::atomic::AtomicBool::new(false),
            shutdown_lock: spin::Mutex::new(()),
        }
    }

    /// The shutdown code a new domain starts with (none).
    pub const fn no_shutdown_code() -> u32 {
        SHUTDOWN_CODE_INVALID
    }

    /// Marks the destruction complete.
    pub(super) fn set_dead(&self) {
        self.dying.store(dying::DEAD, Ordering::Release);
    }

    /// The destruction is complete.
    pub(super) fn is_dead(&self) -> bool {
        self.dying.load(Ordering::Acquire) == dying::DEAD
    }
}

impl Domain {
    /// Marks the destruction begun, and the domain stopped for good (no [`domain_resume`] from
    /// now on), and stops serving its console ring; false if the destruction began already.
    pub(super) fn begin_dying(&self) -> bool {
        let _held = self.life.shutdown_lock.lock();
        let first = self
            .life
            .dying
            .compare_exchange(
                dying::ALIVE,
                dying::DYING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if first {
            self.mark_stopped();
            crate::console::ring::unregister(self);
        }
        first
    }

    /// Paused by the toolstack at least once (`XEN_DOMINF_paused`).
    pub fn controller_paused(&self) -> bool {
        self.life.controller_pause.load(Ordering::Acquire) != 0
    }

    /// It has been started: the toolstack unpaused it fully once (a boot-time domain always
    /// has been).
    pub fn creation_finished(&self) -> bool {
        self.life.creation_finished.load(Ordering::Acquire)
    }

    /// Its destruction began (`XEN_DOMINF_dying`).
    pub fn is_dying(&self) -> bool {
        self.life.dying.load(Ordering::Acquire) != dying::ALIVE
    }

    /// The reason it shut down (`SHUTDOWN_*`), if it did (a domain destroyed while running
    /// has none).
    pub fn shutdown_code(&self) -> Option<u32> {
        let code = self.shutdown_reason.load(Ordering::Acquire);
        (self.stopped.load(Ordering::Acquire) && code != SHUTDOWN_CODE_INVALID).then_some(code)
    }
}

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
                    .store(SHUTDOWN_CODE_INVALID, Ordering::Release);
                d.stopped.store(false, Ordering::Release);
            }
            stopped
        };
        if !d.is_dying() && crate::sched::resume_domain(d, clear) {
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
    crate::sched::pause(d);
    // Each CPU running one of its vCPUs was told to switch away at its next return to the
    // guest: wait for that (Xen's `vcpu_sleep_sync`).
    while !crate::sched::off_cpus(d) {
        core::hint::spin_loop();
    }
    Ok(())
}

/// Undoes one [`domain_pause`]; the last lets its runnable vCPUs run again.
pub fn domain_unpause(d: &Domain) {
    if !crate::sched::unpause(d) {
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
