//! Closing event channels, which may take two domains (Xen's `evtchn_close` and
//! `evtchn_destroy`, xen/common/event_channel.c, 4.17): `EVTCHNOP_close` and `EVTCHNOP_reset`
//! close one port at a time ([`close_port`]), and a domain's destruction closes all of its
//! ports ([`evtchn_destroy`]) before its memory goes and it leaves the table, so no live domain's
//! port names it afterwards. Closing one end of an inter-domain channel leaves the other end
//! unbound for the closer, changed under both domains' `evtchn` locks.
//!
//! Here rather than in the hypercall layer because the reaper (`super::reap`) closes a dying
//! domain's channels too, and the peer of a channel is found in the domain table.
//!
//! Locks: two domains' `evtchn` locks are taken together only through [`lock_pair`], in its
//! order; closing a PIRQ's port masks its source under the domain's `evtchn` lock, which
//! therefore comes before `pirqs` and the MSI and IOAPIC locks.

use hestia_core::evtchn::{EventChannels, PortState};
use hestia_core::ids::{DomId, Port};
use xen_abi::errno::Errno;

use crate::pv::domain::Domain;
use crate::pv::events::errno;
use crate::pv::pirq;

/// A locked port table.
pub type Ports<'a> = spin::MutexGuard<'a, EventChannels>;

/// Locks the port tables of `a` and, if it is another domain, `b` (returned second): the lower
/// domain id first (a destroyed domain and a new one of the same id by address), so two CPUs
/// locking the same two tables never wait for each other.
pub fn lock_pair<'a>(a: &'a Domain, b: &'a Domain) -> (Ports<'a>, Option<Ports<'a>>) {
    if core::ptr::eq(a, b) {
        return (a.evtchn.lock(), None);
    }
    let key = |d: &Domain| (d.id.0, d as *const Domain as usize);
    if key(a) < key(b) {
        let first = a.evtchn.lock();
        (first, Some(b.evtchn.lock()))
    } else {
        let first = b.evtchn.lock();
        (a.evtchn.lock(), Some(first))
    }
}

/// The domain of `port`'s other end, if that is a domain other than `d`.
fn other_end(ev: &EventChannels, d: &Domain, port: Port) -> Option<DomId> {
    match ev.port(port) {
        Some((PortState::Interdomain { remote_dom, .. }, _)) if remote_dom != d.id => {
            Some(remote_dom)
        }
        _ => None,
    }
}

/// `EVTCHNOP_close` of `port` of `d` (also for each port of `EVTCHNOP_reset` and of a domain
/// being destroyed): a PIRQ's source is masked again; the other end of an inter-domain
/// channel becomes unbound for `d`, changed under both domains' locks.
///
/// As Xen's `evtchn_close`, the port's state is decided under its own domain's lock: a port
/// that is not inter-domain is closed in that same hold (a peer binding it meanwhile waits).
/// Only an inter-domain channel needs the peer's lock too, taken in order, so the port is
/// looked at again under both; if it changed to another peer meanwhile, once more. A second
/// change is the domain racing itself: -EINVAL, Xen's answer when the port changed while it
/// re-took its locks.
pub fn close_port(d: &Domain, port: Port) -> Result<(), Errno> {
    let mut shared = d.shared();
    for _ in 0..2 {
        let mine = d.evtchn.lock();
        let peer = other_end(&mine, d, port);
        let rd = peer.and_then(|id| super::lookup(d, id.0).ok());
        let (mut ev, mut rev) = match peer {
            None => (mine, None),
            Some(_) => {
                drop(mine);
                lock_pair(d, rd.as_deref().unwrap_or(d))
            }
        };
        if other_end(&ev, d, port).is_some_and(|id| rd.as_ref().is_none_or(|r| r.id != id)) {
            continue;
        }
        match ev.close(&mut shared, port).map_err(errno)? {
            PortState::Pirq(p) => pirq::unbound(d, p),
            PortState::Interdomain {
                remote_dom,
                remote_port,
            } => {
                let peer = match rev.as_deref_mut() {
                    Some(theirs) => theirs,
                    None => &mut *ev,
                };
                if !peer.unbind_peer(remote_port, d.id, port) {
                    crate::error!(
                        "{}: port {port}'s other end {remote_dom} port {remote_port} did not name it",
                        d.id
                    );
                }
            }
            _ => {}
        }
        return Ok(());
    }
    Err(Errno::EINVAL)
}

/// Closes every port of `d`, whose destruction begins (Xen's `evtchn_destroy`): the other end
/// of each of its inter-domain channels becomes unbound for `d`, as if `d` had closed it, so
/// no live domain names `d` any more; no port is allocated in `d` from now on, and none of its
/// unbound ports can be bound.
pub fn evtchn_destroy(d: &Domain) {
    let open = d.evtchn.lock().begin_destroy();
    for port in open {
        if let Err(e) = close_port(d, port) {
            crate::error!("{}: port {port} not closed at destruction ({e:?})", d.id);
        }
    }
}
