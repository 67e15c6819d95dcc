//! The domain table: every domain Hestia runs, found by id.
//!
//! A domain lives in the table from its creation until it is destroyed; whoever uses one holds
//! a [`DomainRef`], a counted reference that keeps the domain's memory alive after it leaves
//! the table, until the last user drops it (Xen's `rcu_lock_domain_by_id` / `put_domain`).
//! Hypercalls name domains by id: [`lookup`] resolves `DOMID_SELF` to the caller once, so no
//! handler compares ids itself. Rights are not ids: what a domain may do is `hestia_core::policy`'s
//! question; the hardware domain is the one holding the hardware right, whatever its id.
//!
//! An id is taken from the moment a creation claims it ([`reserve`]) until the destroyed
//! domain's last frame has come back: a destroyed domain whose frames others still map (a
//! zombie, `reap`) keeps its id, though no lookup finds it any more, so no new domain can be
//! confused with it by the frames it left (Xen keeps such a domain in its list until its
//! last page goes). The toolstack's ids are allocated by `hestia_core::domid`'s rover.
//!
//! What Hestia keeps for a domain outside its structure, until it dies, is kept here too, by
//! domain reference ([`per_domain`]): its outstanding memory claim ([`claims`]), the memory
//! map its toolstack set.
//!
//! Lock: the table's lock is a leaf; nothing is called with it held. Interrupt handlers never
//! take it (a CPU could hold it when interrupted): the hardware domain, which device
//! interrupts go to, is also kept outside the table, set once; debug keys only try it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use xen_abi::errno::Errno;
use xen_abi::xen::DOMID_SELF;

use hestia_core::domid::Rover;
use xen_abi::xen::DOMID_FIRST_RESERVED;

use crate::pv::domain::{DomId, Domain};
use hestia_core::policy::{self, Action};

pub mod audit;
pub mod boot;
pub mod claims;
pub mod create;
mod destroy;
pub mod evtchn;
pub mod life;
pub mod per_domain;
mod reap;
pub use destroy::{Preempted, Relinquishing, relinquish_memory};
pub use reap::{
    destroy_later, domain_kill, finish_all as finish_destroys, no_destruction, step as reap_step,
};

pub use crate::pv::domain::DomainRef;

/// What holds an id in the table.
enum Slot {
    /// A creation claimed it ([`Reservation`]); the domain is not built yet.
    Reserved,
    /// A domain that exists (alive, shut down, or being destroyed).
    Live(DomainRef),
    /// A destroyed domain some of whose frames others still map: no lookup finds it, its id
    /// stays taken until [`remove`].
    Zombie(DomainRef),
}

impl Slot {
    fn live(&self) -> Option<DomainRef> {
        match self {
            Slot::Live(d) => Some(d.clone()),
            _ => None,
        }
    }
}

/// The table and the toolstack's id allocator, under one lock.
struct Table {
    slots: BTreeMap<u16, Slot>,
    rover: Rover,
}

static TABLE: spin::Mutex<Table> = spin::Mutex::new(Table {
    slots: BTreeMap::new(),
    rover: Rover::new(),
});

/// Held from an id's claim until its domain is in the table (or the claim is given up): the
/// frames of a domain being built belong to no domain the table lists yet, so the frame audit
/// runs only while no domain is being built ([`no_build`]). Domains are built one at a time
/// (Xen's toolstack calls are serialised by its `domctl_lock`).
static BUILDING: spin::Mutex<()> = spin::Mutex::new(());

/// An id claimed for a domain being built: [`Reservation::insert`] enters the domain under
/// it; dropped unused, it frees the id again. No other domain is built meanwhile.
pub struct Reservation {
    id: u16,
    used: bool,
    _building: spin::MutexGuard<'static, ()>,
}

impl Reservation {
    /// The id claimed.
    pub fn id(&self) -> DomId {
        DomId(self.id)
    }

    /// Enters `d`, built with this reservation's id, in the table; `EEXIST` if it would be a
    /// second hardware domain (nothing is entered then, and the id is freed).
    pub fn insert(mut self, d: Domain) -> Result<DomainRef, Errno> {
        if d.id.0 != self.id {
            return Err(Errno::EINVAL);
        }
        let hardware = policy::allows(d.rights, Action::PhysicalIrq);
        if hardware && hardware_domain().is_some() {
            return Err(Errno::EEXIST);
        }
        crate::arch::x86_64::spec_ctrl::domain_created(hardware);
        let d = DomainRef::new(d);
        TABLE.lock().slots.insert(self.id, Slot::Live(d.clone()));
        self.used = true;
        if hardware {
            crate::pv::domain::set_hardware_domain(&d);
        }
        Ok(d)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.used {
            let mut t = TABLE.lock();
            if matches!(t.slots.get(&self.id), Some(Slot::Reserved)) {
                t.slots.remove(&self.id);
            }
        }
    }
}

/// Claims an id for a new domain: `requested` if it is a valid id (`EEXIST` if taken), or one
/// the toolstack's rover allocates for 0 or a reserved id (`ENOMEM` if none is free), as
/// `XEN_DOMCTL_createdomain` does (`hestia_core::domid`).
pub fn reserve(requested: u16) -> Result<Reservation, Errno> {
    claim(|t| {
        let Table { slots, rover } = t;
        rover.choose(requested, |id| slots.contains_key(&id))
    })
}

/// Claims exactly `id` for a domain about to be built (the boot-time domains, dom0's being 0);
/// `EEXIST` if it is taken, `EINVAL` for a reserved id.
pub fn reserve_exact(id: DomId) -> Result<Reservation, Errno> {
    if id.0 >= DOMID_FIRST_RESERVED {
        return Err(Errno::EINVAL);
    }
    claim(|t| match t.slots.contains_key(&id.0) {
        true => Err(Errno::EEXIST),
        false => Ok(id.0),
    })
}

/// Claims the id `choose` picks in the table, once no other domain is being built.
fn claim(choose: impl FnOnce(&mut Table) -> Result<u16, Errno>) -> Result<Reservation, Errno> {
    let building = BUILDING.lock();
    let mut t = TABLE.lock();
    let id = choose(&mut t)?;
    t.slots.insert(id, Slot::Reserved);
    Ok(Reservation {
        id,
        used: false,
        _building: building,
    })
}

/// Proof that no domain is being built, held while it lives (the frame audit holds one).
pub struct NoBuild(
    #[expect(dead_code, reason = "held for its lock")] spin::MutexGuard<'static, ()>,
);

/// A [`NoBuild`], or `None` while a domain is being built.
pub fn no_build() -> Option<NoBuild> {
    BUILDING.try_lock().map(NoBuild)
}

/// The domain `domid` names for `caller` (`DOMID_SELF` is the caller); `ESRCH` if none.
pub fn lookup(caller: &Domain, domid: u16) -> Result<DomainRef, Errno> {
    let id = if domid == DOMID_SELF {
        caller.id.0
    } else {
        domid
    };
    TABLE
        .lock()
        .slots
        .get(&id)
        .and_then(Slot::live)
        .ok_or(Errno::ESRCH)
}

/// The domain with id `domid`; `ESRCH` if none. No `DOMID_SELF` here: the toolstack's
/// interfaces name every domain by its id (Xen's `rcu_lock_domain_by_id`).
pub fn lookup_id(domid: u16) -> Result<DomainRef, Errno> {
    TABLE
        .lock()
        .slots
        .get(&domid)
        .and_then(Slot::live)
        .ok_or(Errno::ESRCH)
}

/// The first domain whose id is `domid` or above, if any (`XEN_DOMCTL_getdomaininfo` walks
/// the domains this way).
pub fn first_from(domid: u16) -> Option<DomainRef> {
    TABLE
        .lock()
        .slots
        .range(domid..)
        .find_map(|(_, d)| d.live())
}

/// Checks that `domid` names the caller itself: the operations that take a domain id but act
/// on another domain only through a toolstack, which Hestia does not offer yet, refuse any
/// other with `ESRCH`, as for a domain that does not exist.
pub fn only_self(caller: &Domain, domid: u16) -> Result<(), Errno> {
    match lookup(caller, domid) {
        Ok(d) if d.id == caller.id => Ok(()),
        _ => Err(Errno::ESRCH),
    }
}

pub use crate::pv::domain::hardware_domain;

/// Every domain, in id order (not from interrupt handlers: see [`try_all`]).
pub fn all() -> Vec<DomainRef> {
    TABLE.lock().slots.values().filter_map(Slot::live).collect()
}

/// Every domain, in id order, or `None` if the table is busy (debug keys, which run in an
/// interrupt handler, must not wait for it).
pub fn try_all() -> Option<Vec<DomainRef>> {
    let t = TABLE.try_lock()?;
    Some(t.slots.values().filter_map(Slot::live).collect())
}

/// True when every domain in the table has stopped (or there is none).
pub fn all_dying() -> bool {
    TABLE
        .lock()
        .slots
        .values()
        .filter_map(Slot::live)
        .all(|d| d.stopped.load(core::sync::atomic::Ordering::Acquire))
}

/// `d`'s destruction is complete but for `kept` frames others still map: with none it leaves
/// the table, otherwise it stays there as a zombie, holding its id, until [`remove`].
pub fn bury(d: &Domain, kept: u64) {
    let mut t = TABLE.lock();
    if let Some(slot) = t.slots.get_mut(&d.id.0)
        && let Slot::Live(x) = slot
        && core::ptr::eq(&**x, d)
    {
        if kept == 0 {
            t.slots.remove(&d.id.0);
        } else {
            *slot = Slot::Zombie(x.clone());
        }
    }
}

/// Takes `d` out of the table for good (its destruction is complete and no frame of it is left);
/// counted references others hold keep its structure until they drop them.
pub fn remove(d: &Domain) {
    let mut t = TABLE.lock();
    let mine = match t.slots.get(&d.id.0) {
        Some(Slot::Live(x) | Slot::Zombie(x)) => core::ptr::eq(&**x, d),
        _ => false,
    };
    if mine {
        t.slots.remove(&d.id.0);
    }
}
