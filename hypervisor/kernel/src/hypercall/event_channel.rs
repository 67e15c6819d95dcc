//! `event_channel_op` (hypercall 32), 2-level ABI for one domain: bind_virq, bind_pirq (dom0's
//! devices, see `pv::pirq`), bind_ipi, alloc_unbound, send, close, status, bind_vcpu, unmask;
//! the FIFO ABI's init_control, expand_array, set_priority and reset are in
//! [`super::event_fifo`]. `shared/xen-abi.md` 6.1.
//!
//! Locks: each sub-op reads and changes the port table under one acquisition of the domain's
//! `evtchn` lock; `close` keeps it while it masks a PIRQ's source, so the domain's `evtchn`
//! lock comes before `pirqs` and the MSI and IOAPIC locks (interrupt handlers take those first
//! and drop them before raising a port).

use hestia_core::evtchn::{EventChannels, PortState};
use xen_abi::errno::Errno;
use xen_abi::event_channel::{
    AllocUnbound, BindIpi, BindPirq, BindVcpu, BindVirq, PortArg, Status, StatusBinding, cmd,
};
use xen_abi::xen::DOMID_SELF;

use crate::domain;
use crate::mm::guest;
use crate::policy::{self, Action};
use crate::pv::domain::Domain;
use crate::pv::events::{self, errno};
use crate::pv::pirq;
use crate::pv::shared::Shared;

pub(super) fn do_event_channel_op(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    let (cmd, arg) = (a[0] as u32, a[1]);
    let mut shared = d.shared();
    match cmd {
        cmd::BIND_VIRQ => {
            let mut s: BindVirq = guest::read_obj(arg)?;
            s.port = d.evtchn.lock().bind_virq(s.virq, s.vcpu).map_err(errno)?;
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::BIND_PIRQ => {
            policy::check(d, Action::PhysicalIrq)?;
            let mut s: BindPirq = guest::read_obj(arg)?;
            s.port = pirq::bind(d, s.pirq)?;
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::BIND_IPI => {
            let mut s: BindIpi = guest::read_obj(arg)?;
            s.port = d.evtchn.lock().bind_ipi(s.vcpu).map_err(errno)?;
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::ALLOC_UNBOUND => {
            let mut s: AllocUnbound = guest::read_obj(arg)?;
            domain::only_self(d, s.dom)?;
            let remote = if s.remote_dom == DOMID_SELF {
                d.id.0
            } else {
                s.remote_dom
            };
            s.port = d.evtchn.lock().alloc_unbound(remote).map_err(errno)?;
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::CLOSE => {
            let PortArg { port } = guest::read_obj(arg)?;
            // One critical section, as Xen's `evtchn_close` under the event lock: the binding
            // undone is the one closed, and no other vCPU can bind the PIRQ again before its
            // line is masked.
            close(d, &mut d.evtchn.lock(), &mut shared, port).map(|()| 0)
        }
        cmd::SEND | cmd::UNMASK => {
            let PortArg { port } = guest::read_obj(arg)?;
            let ev = d.evtchn.lock();
            let raised = if cmd == cmd::SEND {
                ev.send(&mut shared, port)
            } else {
                ev.unmask(&mut shared, port)
            }
            .map_err(errno)?;
            if raised && let Some((_, vcpu)) = ev.port(port) {
                events::kick(d, vcpu);
            }
            drop(ev);
            // The console ring Hestia serves for a boot-time domU.
            if cmd == cmd::SEND && d.console.as_ref().is_some_and(|c| c.port() == port) {
                crate::console::ring::service(d);
            }
            Ok(0)
        }
        cmd::BIND_VCPU => {
            let s: BindVcpu = guest::read_obj(arg)?;
            d.evtchn
                .lock()
                .bind_vcpu(s.port, s.vcpu)
                .map_err(errno)
                .map(|()| 0)
        }
        cmd::STATUS => {
            let mut s: Status = guest::read_obj(arg)?;
            domain::only_self(d, s.dom)?;
            let (state, vcpu) = d.evtchn.lock().port(s.port).ok_or(Errno::EINVAL)?;
            s.status = state.status();
            s.vcpu = vcpu;
            s.u = StatusBinding {
                word0: match state {
                    PortState::Virq(v) | PortState::Pirq(v) => v,
                    PortState::Unbound { remote } => u32::from(remote),
                    _ => 0,
                },
                port: 0,
            };
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::RESET
        | cmd::INIT_CONTROL
        | cmd::EXPAND_ARRAY
        | cmd::SET_PRIORITY
        | super::event_fifo::RESET_CONT => super::event_fifo::do_fifo_op(d, cmd, arg),
        _ => Err(Errno::ENOSYS),
    }
}

/// Closes `port` of `d` (its port table `ev`, locked) and undoes its binding (a PIRQ's line is
/// masked again): `EVTCHNOP_close`, and each port of `EVTCHNOP_reset`.
pub(super) fn close(
    d: &Domain,
    ev: &mut EventChannels,
    shared: &mut Shared<'_>,
    port: u32,
) -> Result<(), Errno> {
    if let PortState::Pirq(p) = ev.close(shared, port).map_err(errno)? {
        pirq::unbound(d, p);
    }
    Ok(())
}
