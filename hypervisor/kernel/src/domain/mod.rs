//! The domain table: every domain Hestia runs, found by id.
//!
//! A domain lives in the table from its creation until it is destroyed; whoever uses one holds
//! a [`DomainRef`], a counted reference that keeps the domain's memory alive after it leaves
//! the table, until the last user drops it (Xen's `rcu_lock_domain_by_id` / `put_domain`).
//! Hypercalls name domains by id: [`lookup`] resolves `DOMID_SELF` to the caller once, so no
//! handler compares ids itself. Rights are not ids: what a domain may do is `crate::policy`'s
//! question; the hardware domain is the one holding the hardware right, whatever its id.
//!
//! Lock: the table's lock is a leaf; nothing is called with it held. Interrupt handlers never
//! take it (a CPU could hold it when interrupted): the hardware domain, which device
//! interrupts go to, is also kept outside the table, set once; debug keys only try it.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Deref;

use xen_abi::errno::Errno;
use xen_abi::xen::DOMID_SELF;

use crate::policy::{self, Action};
use crate::pv::domain::Domain;

pub mod boot;
mod destroy;
mod reap;
pub use destroy::{Preempted, Relinquishing, relinquish_memory};
pub use reap::{destroy_later, finish_all as finish_destroys, resweep_dead, step as reap_step};

/// A counted reference to a domain; dropping it gives the reference back.
#[derive(Clone)]
pub struct DomainRef(Arc<Domain>);

impl Deref for DomainRef {
    type Target = Domain;
    fn deref(&self) -> &Domain {
        &self.0
    }
}

static TABLE: spin::Mutex<BTreeMap<u16, Arc<Domain>>> = spin::Mutex::new(BTreeMap::new());
/// The domain holding the hardware right, once it exists (it lives until the machine stops).
static HARDWARE: spin::Once<DomainRef> = spin::Once::new();

/// Puts a newly built domain into the table; `EEXIST` if its id is taken, or if it would be
/// a second hardware domain.
pub fn insert(d: Domain) -> Result<DomainRef, Errno> {
    let hardware = policy::allows(&d, Action::PhysicalIrq);
    let mut t = TABLE.lock();
    if t.contains_key(&d.id.0) || (hardware && HARDWARE.is_completed()) {
        return Err(Errno::EEXIST);
    }
    crate::arch::x86_64::spec_ctrl::domain_created(hardware);
    let d = DomainRef(Arc::new(d));
    t.insert(d.id.0, d.0.clone());
    if hardware {
        HARDWARE.call_once(|| d.clone());
    }
    Ok(d)
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
        .get(&id)
        .map(|d| DomainRef(d.clone()))
        .ok_or(Errno::ESRCH)
}

/// The domain with id `domid`; `ESRCH` if none. No `DOMID_SELF` here: the toolstack's
/// interfaces name every domain by its id (Xen's `rcu_lock_domain_by_id`).
pub fn lookup_id(domid: u16) -> Result<DomainRef, Errno> {
    TABLE
        .lock()
        .get(&domid)
        .map(|d| DomainRef(d.clone()))
        .ok_or(Errno::ESRCH)
}

/// The first domain whose id is `domid` or above, if any (`XEN_DOMCTL_getdomaininfo` walks
/// the domains this way).
pub fn first_from(domid: u16) -> Option<DomainRef> {
    TABLE
        .lock()
        .range(domid..)
        .next()
        .map(|(_, d)| DomainRef(d.clone()))
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

/// The domain that drives the hardware (device interrupts go to it), once it exists; safe in
/// interrupt handlers.
pub fn hardware_domain() -> Option<&'static Domain> {
    HARDWARE.get().map(|d| &**d)
}

/// Every domain, in id order (not from interrupt handlers: see [`try_all`]).
pub fn all() -> Vec<DomainRef> {
    TABLE
        .lock()
        .values()
        .map(|d| DomainRef(d.clone()))
        .collect()
}

/// Every domain, in id order, or `None` if the table is busy (debug keys, which run in an
/// interrupt handler, must not wait for it).
pub fn try_all() -> Option<Vec<DomainRef>> {
    let t = TABLE.try_lock()?;
    Some(t.values().map(|d| DomainRef(d.clone())).collect())
}

/// True when every domain in the table has stopped (or there is none).
pub fn all_dying() -> bool {
    TABLE
        .lock()
        .values()
        .all(|d| d.dying.load(core::sync::atomic::Ordering::Acquire))
}

/// Takes `d` out of the table (its destruction is complete); counted references others hold
/// keep its structure until they drop them.
pub fn remove(d: &Domain) {
    let mut t = TABLE.lock();
    if t.get(&d.id.0).is_some_and(|x| core::ptr::eq(&**x, d)) {
        t.remove(&d.id.0);
    }
}
