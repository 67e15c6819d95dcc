//! The FIFO sub-ops of `event_channel_op` (`EVTCHNOP_init_control`, `expand_array`,
//! `set_priority`) and `EVTCHNOP_reset`/`reset_cont`, as Xen 4.17's `event_fifo.c` and
//! `evtchn_reset` (`xen/common/event_channel.c`); the queue logic is `hestia_core::evtchn::fifo`.
//!
//! Frames: a control block or event-array page names a frame of the calling domain (for PV the
//! gfn is the machine frame); it takes a general and a writable type reference
//! (`frametable::get_writable_page`) before Hestia first writes it, so it can never become a
//! page table or be freed while registered (isolation rule 5). The references go at
//! `EVTCHNOP_reset` (here, [`put_frames`]) or with the domain (`crate::domain::destroy` takes
//! them as holds; `crate::domain::audit` counts them).
//!
//! Reset: every port is closed as by `EVTCHNOP_close` (the other end of an inter-domain channel
//! becomes unbound for this domain; the console ring port Hestia serves for a boot-time domU,
//! Xen's "Xen-consumed" port, stays), 64 at a time between preemption checks, the rest through a
//! `reset_cont` continuation; then the domain is back on the 2-level ABI. Only the domain
//! itself can be reset: Xen resets another domain only while its controller keeps it paused,
//! and Hestia has no controller pause yet, so the privileged caller gets Xen's `EINVAL` for an
//! unpaused domain, and any other caller XSM's `EPERM`.
//!
//! Locks: each step runs under the domain's `evtchn` lock, which comes before the frame
//! table's (`take_frame` runs under it); a reset takes it per port closed, with the other
//! end's domain's in `close_port`'s order (and, for a PIRQ port, the `pirqs` lock).

use hestia_core::ids::{Mfn, Port, VcpuId};
use xen_abi::errno::Errno;
use xen_abi::event_channel::fifo::LINK_BITS;
use xen_abi::event_channel::{ExpandArray, InitControl, Reset, SetPriority, cmd};

use super::Caller;
use super::continuation::{self, Stop};
use crate::domain;
use crate::domain::evtchn::close_port;
use crate::mm::{frametable, guest};
use crate::pv::domain::Domain;
use crate::pv::events;
use hestia_core::policy::{self, Action};

/// `EVTCHNOP_reset_cont`: Xen's internal sub-op that resumes a preempted reset (a guest may
/// issue it too: without a reset under way it is `EBUSY`).
pub(super) const RESET_CONT: u32 = 14;

/// Ports closed between two preemption checks (Xen's choice).
const RESET_CHUNK: u32 = 64;

/// The FIFO and reset sub-ops, `cmd` one of them.
pub(super) fn do_fifo_op(c: Caller<'_>, cmd: u32, arg: u64) -> Result<u64, Stop> {
    let d = c.domain();
    let mut take_frame = |mfn| frametable::get_writable_page(mfn, d.id.0);
    match cmd {
        cmd::INIT_CONTROL => {
            let mut s: InitControl = guest::read_obj(arg)?;
            let shared = d.shared();
            let mut ev = d.evtchn.lock();
            let fresh = !ev.is_fifo();
            // A PV guest's frame numbers are machine frames.
            let mfn = Mfn::new(s.control_gfn);
            ev.init_control(&shared, s.vcpu, mfn, s.offset, &mut take_frame)?;
            drop(ev);
            if fresh {
                crate::ginfo!(d, "{}v{}: evtchn: FIFO ABI", d.id, c.vcpu_id());
            }
            s.link_bits = LINK_BITS as u8;
            guest::write_obj(arg, &s)?;
            Ok(0)
        }
        cmd::EXPAND_ARRAY => {
            let s: ExpandArray = guest::read_obj(arg)?;
            let mut shared = d.shared();
            let mut ev = d.evtchn.lock();
            for v in ev.expand_array(&mut shared, Mfn::new(s.array_gfn), &mut take_frame)? {
                events::kick(d, VcpuId::unvalidated(v));
            }
            Ok(0)
        }
        cmd::SET_PRIORITY => {
            let s: SetPriority = guest::read_obj(arg)?;
            d.evtchn
                .lock()
                .set_priority(Port::unvalidated(s.port), s.priority)?;
            Ok(0)
        }
        _ => reset(d, arg, cmd == RESET_CONT),
    }
}

/// `EVTCHNOP_reset` (`resuming`: `reset_cont`).
fn reset(caller: &Domain, arg: u64, resuming: bool) -> Result<u64, Stop> {
    let Reset { dom } = guest::read_obj(arg)?;
    if domain::lookup(caller, dom)?.id != caller.id {
        policy::check(caller.rights, Action::EvtchnReset)?;
        return Err(Errno::EINVAL.into());
    }
    let d = caller;
    let keep = d.console.as_ref().map(|c| c.port());
    let mut port = d.evtchn.lock().reset_begin(resuming).ok_or(Errno::EBUSY)?;
    loop {
        let end = d
            .evtchn
            .lock()
            .nr_ports()
            .min(port.raw().saturating_add(RESET_CHUNK));
        let chunk = (port.raw()..end).map(Port::unvalidated);
        for p in chunk.filter(|&p| Some(p) != keep) {
            // As `EVTCHNOP_close`, both ends of an inter-domain channel under both domains'
            // locks: the other end becomes unbound. A closed port is refused, and the
            // domain racing its own reset with binds is answered by `reset_end`.
            let _ = close_port(d, p);
        }
        port = Port::unvalidated(end);
        let mut ev = d.evtchn.lock();
        if end >= ev.nr_ports() {
            let frames = ev.reset_end(keep).ok_or(Errno::EAGAIN)?;
            drop(ev);
            put_frames(&frames);
            return Ok(0);
        }
        if events::preempt_now(caller) {
            ev.reset_pause(port);
            return continuation::create([u64::from(RESET_CONT), arg, 0, 0, 0]);
        }
    }
}

/// Drops the references the FIFO frames `frames` held.
fn put_frames(frames: &[Mfn]) {
    for &mfn in frames {
        frametable::put_writable_page(mfn);
    }
}
