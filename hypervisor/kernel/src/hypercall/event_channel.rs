//! `event_channel_op` (hypercall 32), 2-level ABI for one domain: bind_virq, bind_pirq (dom0's
//! devices, see `pv::pirq`), bind_ipi, alloc_unbound, send, close, status, bind_vcpu, unmask.
//! `init_control` is -ENOSYS so guests stay on 2-level; inter-domain bindings arrive with more
//! domains. `shared/xen-abi.md` 6.1.
//!
//! Locks: each sub-op reads and changes the port table under one acquisition of the domain's
//! `evtchn` lock; `close` keeps it while it masks a PIRQ's source, so the domain's `evtchn`
//! lock comes before `pirqs` and the MSI and IOAPIC locks (interrupt handlers take those first
//! and drop them before raising a port).

use hestia_core::evtchn::PortState;
use xen_abi::errno::Errno;
use xen_abi::xen::DOMID_SELF;

use crate::mm::guest;
use crate::pv::domain::Domain;
use crate::pv::events::{self, errno};
use crate::pv::pirq;

const BIND_VIRQ: u32 = 1;
const BIND_PIRQ: u32 = 2;
const CLOSE: u32 = 3;
const SEND: u32 = 4;
const STATUS: u32 = 5;
const ALLOC_UNBOUND: u32 = 6;
const BIND_IPI: u32 = 7;
const BIND_VCPU: u32 = 8;
const UNMASK: u32 = 9;

/// `dom` fields name the caller itself (other domains need privilege and a toolstack).
fn self_dom(d: &Domain, dom: u32) -> Result<(), Errno> {
    let dom = dom as u16;
    if dom == DOMID_SELF || dom == d.id.0 {
        Ok(())
    } else {
        Err(Errno::ESRCH)
    }
}

pub(super) fn do_event_channel_op(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    let (cmd, arg) = (a[0] as u32, a[1]);
    let mut shared = d.shared();
    match cmd {
        BIND_VIRQ => {
            let mut s: [u32; 3] = guest::read_obj(arg)?;
            s[2] = d.evtchn.lock().bind_virq(s[0], s[1]).map_err(errno)?;
            guest::write_obj(arg, &s).map(|()| 0)
        }
        BIND_PIRQ => {
            if !d.privileged {
                return Err(Errno::EPERM);
            }
            let mut s: [u32; 3] = guest::read_obj(arg)?;
            s[2] = pirq::bind(d, s[0])?;
            guest::write_obj(arg, &s).map(|()| 0)
        }
        BIND_IPI => {
            let mut s: [u32; 2] = guest::read_obj(arg)?;
            s[1] = d.evtchn.lock().bind_ipi(s[0]).map_err(errno)?;
            guest::write_obj(arg, &s).map(|()| 0)
        }
        ALLOC_UNBOUND => {
            let mut s: [u32; 2] = guest::read_obj(arg)?;
            self_dom(d, s[0] & 0xffff)?;
            let remote = (s[0] >> 16) as u16;
            let remote = if remote == DOMID_SELF { d.id.0 } else { remote };
            s[1] = d.evtchn.lock().alloc_unbound(remote).map_err(errno)?;
            guest::write_obj(arg, &s).map(|()| 0)
        }
        CLOSE => {
            let [port]: [u32; 1] = guest::read_obj(arg)?;
            // One critical section, as Xen's `evtchn_close` under the event lock: the binding
            // undone is the one closed, and no other vCPU can bind the PIRQ again before its
            // line is masked.
            let mut ev = d.evtchn.lock();
            if let PortState::Pirq(p) = ev.close(&mut shared, port).map_err(errno)? {
                pirq::unbound(d, p);
            }
            drop(ev);
            Ok(0)
        }
        SEND | UNMASK => {
            let [port]: [u32; 1] = guest::read_obj(arg)?;
            let ev = d.evtchn.lock();
            let raised = if cmd == SEND {
                ev.send(&mut shared, port)
            } else {
                ev.unmask(&mut shared, port)
            }
            .map_err(errno)?;
            if raised && let Some((_, vcpu)) = ev.port(port) {
                events::kick(vcpu);
            }
            Ok(0)
        }
        BIND_VCPU => {
            let s: [u32; 2] = guest::read_obj(arg)?;
            d.evtchn
                .lock()
                .bind_vcpu(s[0], s[1])
                .map_err(errno)
                .map(|()| 0)
        }
        STATUS => {
            let mut s: [u32; 6] = guest::read_obj(arg)?;
            self_dom(d, s[0] & 0xffff)?;
            let (state, vcpu) = d.evtchn.lock().port(s[1]).ok_or(Errno::EINVAL)?;
            s[2] = state.status();
            s[3] = vcpu;
            s[4] = match state {
                PortState::Virq(v) | PortState::Pirq(v) => v,
                PortState::Unbound { remote } => u32::from(remote),
                _ => 0,
            };
            s[5] = 0;
            guest::write_obj(arg, &s).map(|()| 0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
