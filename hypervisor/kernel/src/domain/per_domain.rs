//! State Hestia keeps for a domain outside its `Domain` structure, from the moment a
//! toolstack sets it until the domain dies: a table of `(domain, value)` entries, found by the
//! domain's identity (not its id, which a later domain may reuse).
//!
//! Entries of dying domains are dropped whenever the table is used, so a dead domain's state
//! is forgotten as Xen forgets it when the domain is killed (`domain_kill` cancels its claim;
//! its memory map goes with the structure), and the domain's structure is released then.
//!
//! Lock: each table's mutex is taken with no other lock of Hestia's held but those its users
//! document (see `super::claims`).

use alloc::vec::Vec;

use super::DomainRef;
use crate::pv::domain::Domain;

/// One value per live domain.
pub struct PerDomain<T>(spin::Mutex<Vec<(DomainRef, T)>>);

impl<T> PerDomain<T> {
    /// An empty table.
    pub const fn new() -> Self {
        PerDomain(spin::Mutex::new(Vec::new()))
    }

    /// Runs `f` on the table, once the entries of dying domains are dropped.
    pub fn with<R>(&self, f: impl FnOnce(&mut Entries<T>) -> R) -> R {
        let mut t = self.0.lock();
        t.retain(|(d, _)| !d.is_dying());
        f(&mut Entries(&mut t))
    }
}

/// The live entries of a [`PerDomain`] table, under its lock.
pub struct Entries<'a, T>(&'a mut Vec<(DomainRef, T)>);

impl<T> Entries<'_, T> {
    /// `d`'s value, if it has one.
    pub fn get(&mut self, d: &Domain) -> Option<&mut T> {
        self.0
            .iter_mut()
            .find(|(x, _)| core::ptr::eq(&**x, d))
            .map(|(_, v)| v)
    }

    /// Sets `d`'s value (`d` must be a live domain: a dying one's would be dropped at once).
    pub fn set(&mut self, d: &DomainRef, v: T) {
        match self.get(d) {
            Some(slot) => *slot = v,
            None => self.0.push((d.clone(), v)),
        }
    }

    /// Every live domain's value.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, v)| v)
    }
}
