//! A domain's lifecycle state as its structure holds it: who ends it, the toolstack's pauses,
//! how far its destruction went, and the accessors that read it. What changes it (pausing,
//! resuming, destroying) is the domain layer's (`crate::domain::life`, `crate::domain::reap`),
//! which describes the life of a domain as a whole.

use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use super::domain::Domain;

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
    pub(crate) controller_pause: AtomicU32,
    /// [`dying`].
    dying: AtomicU8,
    /// The toolstack's pauses all went once (Xen's `creation_finished`): the domain has been
    /// started, and what may only be set before that (its CPU policy) is fixed.
    pub(crate) creation_finished: core::sync::atomic::AtomicBool,
    /// Orders `crate::domain::life::domain_resume` against [`Domain::begin_dying`].
    pub(crate) shutdown_lock: spin::Mutex<()>,
}

impl Life {
    /// A boot-time domain's: running once started, destroyed by Hestia when it stops.
    pub fn boot() -> Self {
        Life {
            toolstack: false,
            controller_pause: AtomicU32::new(0),
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
    pub(crate) fn set_dead(&self) {
        self.dying.store(dying::DEAD, Ordering::Release);
    }

    /// The destruction is complete.
    pub(crate) fn is_dead(&self) -> bool {
        self.dying.load(Ordering::Acquire) == dying::DEAD
    }
}

impl Domain {
    /// Marks the destruction begun, and the domain stopped for good (no `crate::domain::life::domain_resume` from
    /// now on), and stops serving its console ring; false if the destruction began already.
    pub(crate) fn begin_dying(&self) -> bool {
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
