//! dom0's physical interrupts (`shared/xen-abi.md` 6.1, 6.9): GSIs mapped to PIRQs
//! (`PHYSDEVOP_map_pirq`), their trigger and polarity (`PHYSDEVOP_setup_gsi`), bound to event
//! channels (`EVTCHNOP_bind_pirq`), which routes the IOAPIC line to Hestia; each interrupt then
//! marks the port pending. MSIs are PIRQs too (`pv::msi` programs them). A level-triggered line is masked from its interrupt until dom0's
//! `PHYSDEVOP_eoi`, as Xen's "unmask" acknowledgement does; edge-triggered lines need nothing.

use hestia_core::ids::{Port, VcpuId};
use hestia_core::pirq::{PirqError, Source};
use xen_abi::errno::Errno;

use super::domain::Domain;
use super::msi;
use crate::arch::x86_64::apic;
use crate::arch::x86_64::ioapic::{self, LineMode};

/// GSIs the trigger/polarity table covers (the IOAPIC vector range is smaller).
const MAX_GSI: usize = 256;

/// Trigger and polarity dom0 gave each GSI (`PHYSDEVOP_setup_gsi`).
static GSI_MODES: spin::Mutex<[Option<LineMode>; MAX_GSI]> = spin::Mutex::new([None; MAX_GSI]);

pub(crate) fn errno(e: PirqError) -> Errno {
    match e {
        PirqError::Invalid => Errno::EINVAL,
        PirqError::Exists => Errno::EEXIST,
        PirqError::NoSpace => Errno::ENOSPC,
    }
}

/// The mode of `gsi`: what dom0 set up, else the ISA default (edge, active high) below 16 and
/// the PCI default (level, active low) above.
fn mode(gsi: u32) -> LineMode {
    GSI_MODES
        .lock()
        .get(gsi as usize)
        .copied()
        .flatten()
        .unwrap_or(LineMode {
            level: gsi >= 16,
            active_low: gsi >= 16,
        })
}

/// `PHYSDEVOP_setup_gsi`: records `gsi`'s trigger and polarity; -EEXIST if it was set up
/// already (or is Hestia's own line), which Linux reports and ignores, as with Xen.
pub fn setup_gsi(gsi: u32, level: bool, active_low: bool) -> Result<(), Errno> {
    if !ioapic::serves(gsi) {
        return Err(Errno::EINVAL);
    }
    if ioapic::hestia_owns(gsi) {
        return Err(Errno::EEXIST);
    }
    let mut modes = GSI_MODES.lock();
    let slot = modes.get_mut(gsi as usize).ok_or(Errno::EINVAL)?;
    if slot.is_some() {
        return Err(Errno::EEXIST);
    }
    *slot = Some(LineMode { level, active_low });
    Ok(())
}

/// `PHYSDEVOP_map_pirq` for a GSI: the PIRQ that stands for it in `d`. (Hestia's own lines
/// map, as on Xen, but never bind.)
pub fn map_gsi(d: &Domain, gsi: u32, wanted: Option<u32>) -> Result<u32, Errno> {
    if !ioapic::serves(gsi) {
        return Err(Errno::EINVAL);
    }
    d.pirqs
        .lock()
        .map_gsi(gsi, mode(gsi).level, wanted)
        .map_err(errno)
}

/// `EVTCHNOP_bind_pirq`: binds `pirq` to a new port and lets its source interrupt: a GSI's
/// line is routed to this CPU, an MSI unmasked. An unmapped PIRQ is -EPERM (not the
/// domain's), one of Hestia's lines -EBUSY.
pub fn bind(d: &Domain, pirq: u32) -> Result<Port, Errno> {
    let p = d.pirqs.lock().get(pirq).ok_or(Errno::EPERM)?;
    let gsi = match p.source {
        Source::Gsi(gsi) if ioapic::hestia_owns(gsi) => {
            crate::gdebug!(d, "{}: GSI {gsi} is Hestia's, not bound", d.id);
            return Err(Errno::EBUSY);
        }
        Source::Gsi(gsi) => Some(gsi),
        Source::Msi { .. } => None,
    };
    // One hold of the port table until the source is live (or the port closed again), so no
    // other vCPU can close or reuse the port meanwhile (lock order: `hypercall::event_channel`).
    let mut ev = d.evtchn.lock();
    let port = ev.bind_pirq(pirq).map_err(super::events::errno)?;
    let Some(gsi) = gsi else {
        msi::bound(pirq);
        return Ok(port);
    };
    let m = mode(gsi);
    d.pirqs.lock().set_level(pirq, m.level);
    if let Err(e) = ioapic::route_for_guest(gsi, m, apic::id(), interrupt) {
        crate::gwarn!(d, "{}: PIRQ {pirq} (GSI {gsi}) not routed: {e}", d.id);
        // The port was bound under this same hold: closing it cannot fail.
        if let Err(e) = ev.close(&mut d.shared(), port) {
            crate::error!("{}: port {port} just bound cannot close: {e:?}", d.id);
        }
        return Err(Errno::EPERM);
    }
    drop(ev);
    crate::gdebug!(
        d,
        "{}: GSI {gsi} ({}, active {}) is PIRQ {pirq} on port {port}",
        d.id,
        if m.level { "level" } else { "edge" },
        if m.active_low { "low" } else { "high" }
    );
    Ok(port)
}

/// The port bound to `pirq` was closed: its source is masked again.
pub fn unbound(d: &Domain, pirq: u32) {
    // The PIRQ table's lock is dropped before the source's own lock is taken: `msi::map`
    // takes the MSI slots before the PIRQ table, and the other order would deadlock with it.
    let source = d.pirqs.lock().get(pirq).map(|p| p.source);
    match source {
        Some(Source::Gsi(gsi)) => ioapic::release(gsi),
        Some(Source::Msi { .. }) => msi::unbound(pirq),
        None => {}
    }
}

/// `PHYSDEVOP_unmap_pirq`: forgets `pirq`; a bound port stays but never fires again (Xen's
/// forced unbind).
pub fn unmap(d: &Domain, pirq: u32) -> Result<(), Errno> {
    let p = d.pirqs.lock().unmap(pirq).map_err(errno)?;
    match p.source {
        Source::Gsi(gsi) if !ioapic::hestia_owns(gsi) => ioapic::release(gsi),
        Source::Gsi(_) => {}
        Source::Msi { .. } => msi::unmapped(pirq),
    }
    Ok(())
}

/// `PHYSDEVOP_eoi`: the guest handled `pirq`; a masked level line is unmasked.
pub fn eoi(d: &Domain, pirq: u32) -> Result<(), Errno> {
    let mut pirqs = d.pirqs.lock();
    if pirqs.eoi(pirq).map_err(errno)?
        && let Some(Source::Gsi(gsi)) = pirqs.get(pirq).map(|p| p.source)
    {
        ioapic::set_masked(gsi, false);
    }
    Ok(())
}

/// An interrupt on a line routed for dom0 (from the IOAPIC handler table).
fn interrupt(gsi: u32) {
    let Some(d) = super::domain::hardware_domain() else {
        ioapic::set_masked(gsi, true);
        return;
    };
    let pirq = {
        let mut pirqs = d.pirqs.lock();
        let Some(pirq) = pirqs.of_gsi(gsi) else {
            drop(pirqs);
            ioapic::set_masked(gsi, true);
            return;
        };
        if pirqs.forwarded(pirq) {
            ioapic::set_masked(gsi, true);
        }
        pirq
    };
    raise(d, pirq);
}

/// Marks the port bound to `pirq` pending and wakes the vCPU it notifies.
pub(super) fn raise(d: &Domain, pirq: u32) {
    let ev = d.evtchn.lock();
    if let Some(port) = ev.pirq_port(pirq)
        && ev.set_pending(&mut d.shared(), port)
        && let Some((_, vcpu)) = ev.port(port)
    {
        super::events::kick(d, VcpuId::unvalidated(vcpu));
    }
}
