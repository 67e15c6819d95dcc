//! `event_channel_op` (hypercall 32): bind_virq, bind_pirq (dom0's devices, see `pv::pirq`),
//! bind_ipi, alloc_unbound, bind_interdomain, send, close, status, bind_vcpu, unmask, in
//! whichever ABI the domain uses (2-level, or FIFO once it registered a control block); the
//! FIFO ABI's init_control, expand_array, set_priority and reset are in
//! [`super::event_fifo`]. `shared/xen-abi.md` 6.1; Xen 4.17 `xen/common/event_channel.c` is
//! the specification, error codes and their order included.
//!
//! Channels between domains: `alloc_unbound` reserves a port of a domain (the caller's own, or
//! for the control domain any domain's, Xen's `XSM_TARGET`) for a remote domain to bind;
//! `bind_interdomain` connects a new port of the caller to it; `send` on either end raises the
//! other; `close` of one end leaves the other unbound for the closer. Both ends may be ports of
//! one domain (Linux dom0's xenstore channel). A port names its other end by domain id; the
//! id always names the live domain holding that end, because a domain's destruction closes
//! all its channels (`domain::evtchn`) before it leaves the domain table.
//!
//! Locks: each sub-op reads and changes a port table under one acquisition of the domain's
//! `evtchn` lock; an operation on both ends of an inter-domain channel (bind, close) holds the
//! two domains' `evtchn` locks together, the lower domain id first ([`lock_pair`], Xen's order
//! for two `event_lock`s). `send` to another domain holds one lock at a time: the sender's to
//! read the port, then the receiver's, under which the receiving port must still be the
//! channel's other end ([`evtchn::EventChannels::deliver`]), so an event never lands in a
//! closed (or destroyed) domain's port. `close` keeps the lock while it masks a PIRQ's source,
//! so the domain's `evtchn` lock comes before `pirqs` and the MSI and IOAPIC locks (interrupt
//! handlers take those first and drop them before raising a port).

use hestia_core::evtchn::{self, PortState, Sent};
use hestia_core::ids::{DomId, Port, VcpuId};
use xen_abi::errno::Errno;
use xen_abi::event_channel::{
    AllocUnbound, BindInterdomain, BindIpi, BindPirq, BindVcpu, BindVirq, PortArg, Status, cmd,
};
use xen_abi::xen::DOMID_SELF;

use super::Caller;
use super::continuation::Stop;
use crate::domain;
use crate::domain::evtchn::{close_port, lock_pair};
use crate::mm::guest;
use crate::pv::domain::Domain;
use crate::pv::events::{self, errno};
use crate::pv::pirq;
use hestia_core::policy::{self, Action};

#[unsafe(link_section = ".text.hot")]
pub(super) fn do_event_channel_op(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Stop> {
    let d = c.domain();
    let (cmd, arg) = (a[0] as u32, a[1]);
    let mut shared = d.shared();
    let r = match cmd {
        cmd::BIND_VIRQ => {
            let mut s: BindVirq = guest::read_obj(arg)?;
            s.port = d
                .evtchn
                .lock()
                .bind_virq(s.virq, s.vcpu)
                .map_err(errno)?
                .raw();
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::BIND_PIRQ => {
            policy::check(d.rights, Action::PhysicalIrq)?;
            let mut s: BindPirq = guest::read_obj(arg)?;
            s.port = pirq::bind(d, s.pirq)?.raw();
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::BIND_IPI => {
            let mut s: BindIpi = guest::read_obj(arg)?;
            s.port = d.evtchn.lock().bind_ipi(s.vcpu).map_err(errno)?.raw();
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::ALLOC_UNBOUND => {
            let mut s: AllocUnbound = guest::read_obj(arg)?;
            let td = domain::lookup(d, s.dom)?;
            let mut ev = td.evtchn.lock();
            // As Xen: the port is found before the right to take it is checked.
            ev.free_port().map_err(errno)?;
            if !core::ptr::eq(&*td, d) {
                policy::check(d.rights, Action::ForeignEventChannel)?;
            }
            // DOMID_SELF as the remote names the caller, whichever domain holds the port.
            let remote = if s.remote_dom == DOMID_SELF {
                d.id
            } else {
                DomId(s.remote_dom)
            };
            s.port = ev.alloc_unbound(remote).map_err(errno)?.raw();
            drop(ev);
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::BIND_INTERDOMAIN => {
            let mut s: BindInterdomain = guest::read_obj(arg)?;
            let rd = domain::lookup(d, s.remote_dom)?;
            let (mut ev, mut rev) = lock_pair(d, &rd);
            let lport = evtchn::bind_interdomain(
                &mut ev,
                d.id,
                rev.as_deref_mut(),
                rd.id,
                Port::unvalidated(s.remote_port),
            )
            .map_err(errno)?;
            // Events sent to the unbound end were dropped: the new port starts pending (Xen).
            let raised = ev.set_pending(&mut shared, lport);
            drop((ev, rev));
            if raised {
                events::kick(d, VcpuId::FIRST);
            }
            s.local_port = lport.raw();
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::CLOSE => {
            let PortArg { port } = guest::read_obj(arg)?;
            close_port(d, Port::unvalidated(port)).map(|()| 0)
        }
        cmd::SEND => {
            let PortArg { port } = guest::read_obj(arg)?;
            let port = Port::unvalidated(port);
            let sent = d.evtchn.lock().send(&mut shared, port, d.id);
            match sent.map_err(errno)? {
                Sent::Raised(vcpu) => events::kick(d, vcpu),
                Sent::Remote { dom, port: rport } => deliver(d, port, dom, rport),
                Sent::Nothing => {}
            }
            // The console ring Hestia serves for a boot-time domU.
            if d.console.as_ref().is_some_and(|c| c.port() == port) {
                crate::console::ring::service(d);
            }
            Ok(0)
        }
        cmd::UNMASK => {
            let PortArg { port } = guest::read_obj(arg)?;
            let port = Port::unvalidated(port);
            let ev = d.evtchn.lock();
            if ev.unmask(&mut shared, port).map_err(errno)?
                && let Some((_, vcpu)) = ev.port(port)
            {
                events::kick(d, VcpuId::unvalidated(vcpu));
            }
            Ok(0)
        }
        cmd::BIND_VCPU => {
            let s: BindVcpu = guest::read_obj(arg)?;
            d.evtchn
                .lock()
                .bind_vcpu(Port::unvalidated(s.port), s.vcpu)
                .map_err(errno)
                .map(|()| 0)
        }
        cmd::STATUS => {
            let mut s: Status = guest::read_obj(arg)?;
            let td = domain::lookup(d, s.dom)?;
            let (state, vcpu) = td
                .evtchn
                .lock()
                .port(Port::unvalidated(s.port))
                .ok_or(Errno::EINVAL)?;
            if !core::ptr::eq(&*td, d) {
                policy::check(d.rights, Action::ForeignEventChannel)?;
            }
            s.status = state.status();
            s.vcpu = vcpu;
            // Only the union member of the binding is written (a `domid_t` is the low half of
            // its word); the rest stays as the guest passed it, as Xen copies its struct back.
            let dom_word = |w: u32, dom: DomId| (w & !0xffff) | u32::from(dom.0);
            match state {
                PortState::Virq(v) | PortState::Pirq(v) => s.u.word0 = v,
                PortState::Unbound { remote } => s.u.word0 = dom_word(s.u.word0, remote),
                PortState::Interdomain {
                    remote_dom,
                    remote_port,
                } => {
                    s.u.word0 = dom_word(s.u.word0, remote_dom);
                    s.u.port = remote_port.raw();
                }
                PortState::Closed | PortState::Ipi => {}
            }
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::RESET
        | cmd::INIT_CONTROL
        | cmd::EXPAND_ARRAY
        | cmd::SET_PRIORITY
        | super::event_fifo::RESET_CONT => return super::event_fifo::do_fifo_op(c, cmd, arg),
        _ => Err(Errno::ENOSYS),
    };
    Ok(r?)
}

/// Delivers the event `d` sent on `port` to the channel's other end, port `rport` of domain
/// `rid`, under that domain's lock and only if the port is still this channel's end.
fn deliver(d: &Domain, port: Port, rid: DomId, rport: Port) {
    let Ok(rd) = domain::lookup(d, rid.0) else {
        return;
    };
    let sent = rd
        .evtchn
        .lock()
        .deliver(&mut rd.shared(), rport, d.id, port);
    if let Sent::Raised(vcpu) = sent {
        events::kick(&rd, vcpu);
    }
}
