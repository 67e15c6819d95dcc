//! The frame-table audit when a domain stops: every frame's reference and type counts are
//! recomputed from the domain's validated page tables, its pins and the references Hestia
//! holds for its vCPUs ([`holds`]), and compared with the table (`FrameTable::audit` in
//! `hestia_core::pv_mm`). A mismatch means a hypercall path broke an invariant of the PV MMU;
//! the structured fuzzer (`fuzz-hypercalls`) ends every run with this check.
//!
//! Locks: every vCPU lock of every domain, in domain and vCPU order, then every vCPU's
//! `mm_pending`, then every domain's grant maptrack (`crate::pv::grant`), then the frame table's
//! (the order the hypercalls use). Holding them all keeps the vCPUs' base
//! pointers, GDT and LDT frames and unfinished page-table work consistent with the counts; the
//! vCPU and pending locks are only tried for a bounded time, so a vCPU stuck with one held
//! skips the audit instead of hanging the stop.
//!
//! When the machine stops with the domain (the hardware domain, or the last one), every
//! stopped domain's memory is then destroyed as a domain's destruction does
//! ([`relinquish_memory`]), the other CPUs first parked on Hestia's own page
//! tables, and the free frames counted before and after: every guest test also checks that
//! destruction returns every frame.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use hestia_core::ids::Mfn;
use hestia_core::pv_mm::{Hold, PageType};

use super::{Preempted, Relinquishing, relinquish_memory};
use crate::arch::x86_64::{cpu, percpu, smp, tsc};
use crate::mm::{self, DIRECT_MAP_BASE, frametable};
use crate::pv::domain::{Domain, Vcpu, hardware_domain};

/// How long to wait for a vCPU's lock (it is only held across one hypercall's bookkeeping).
const LOCK_WAIT_NS: u64 = 100_000_000;

/// Takes `lock` within [`LOCK_WAIT_NS`].
fn try_lock_for<T>(lock: &spin::Mutex<T>) -> Option<spin::MutexGuard<'_, T>> {
    let end = tsc::uptime_ns().saturating_add(LOCK_WAIT_NS);
    loop {
        if let Some(g) = lock.try_lock() {
            return Some(g);
        }
        if tsc::uptime_ns() > end {
            return None;
        }
        core::hint::spin_loop();
    }
}

/// The references Hestia holds on `d`'s frames for vCPU `v` outside its page tables: the
/// kernel and user base pointers (L4 type), the GDT and LDT frames (descriptor type) and a
/// registered `vcpu_info` page (writable type). Destroying the domain drops exactly these
/// and [`domain_holds`] (`super::destroy`).
pub(crate) fn holds(d: &Domain, v: &Vcpu, out: &mut Vec<Hold>) {
    let l4 = Some(PageType::Table(4));
    if v.initialised {
        out.push(Hold {
            mfn: v.kernel_l4(),
            ty: l4,
        });
    }
    if v.user_cr3 != 0 {
        out.push(Hold {
            mfn: Mfn::new(v.user_cr3 >> 12),
            ty: l4,
        });
    }
    let seg = Some(PageType::SegDesc);
    for &mfn in v.gdt_frames.iter().chain(v.ldt_frames.iter().flatten()) {
        out.push(Hold { mfn, ty: seg });
    }
    let info = d
        .vcpu_info
        .get(v.id.index())
        .map_or(0, |a| a.load(Ordering::Acquire));
    if info != 0 {
        out.push(Hold {
            mfn: Mfn::new(info.saturating_sub(DIRECT_MAP_BASE) >> 12),
            ty: Some(PageType::Writable),
        });
    }
}

/// The references Hestia holds on `d`'s frames for the domain's whole life: shared_info and a
/// console ring it serves each hold a writable type (isolation rule 5).
pub(crate) fn domain_holds(d: &Domain, out: &mut Vec<Hold>) {
    for mfn in core::iter::once(d.shared_info_mfn).chain(d.console.as_ref().map(|c| c.mfn())) {
        out.push(Hold {
            mfn,
            ty: Some(PageType::Writable),
        });
    }
}

/// The FIFO event-channel frames `frames` (control blocks, event-array pages) as holds: each
/// keeps a writable type while registered (`crate::hypercall::event_fifo`).
pub(crate) fn fifo_holds(frames: &[Mfn], out: &mut Vec<Hold>) {
    out.extend(frames.iter().map(|&mfn| Hold {
        mfn,
        ty: Some(PageType::Writable),
    }));
}

/// Audits the frame table with the holds of every domain (the audit covers every frame) and
/// logs the verdict for `d`, which stopped: one line, `frame audit: ok` or `frame audit FAILED`
/// with the first broken invariant. If the machine stops with `d` (the hardware domain, or
/// the last one), then destroys the stopped domains' memory and checks that every frame came
/// back ([`relinquish_at_stop`]).
pub fn audit_at_stop(d: &Domain) {
    let hardware = hardware_domain().is_some_and(|h| core::ptr::eq(h, d));
    let machine_stops = hardware || super::all_dying();
    if machine_stops && STOPPING.swap(true, Ordering::AcqRel) {
        // Another CPU stops the machine (two last domains stopped at once).
        park();
    }
    if machine_stops {
        if let Err(cpu) = park_others() {
            crate::warn!("{}: frame audit skipped: CPU{cpu} did not stop", d.id);
            return;
        }
        // No domain half destroyed while the counts are checked.
        super::finish_destroys();
    }
    audit(d, false);
    if machine_stops {
        relinquish_at_stop(d);
    }
}

/// Audits the frame table after the destruction of `d` (logged for it): the domains left hold
/// all that is counted.
pub fn audit_after_destroy(d: &Domain) {
    audit(d, false);
}

/// The audit (logged for `d`), with the dying domains' memory `relinquished` already (they
/// then hold nothing).
fn audit(d: &Domain, relinquished: bool) {
    // A domain half relinquished holds less than its state says: no destruction may advance
    // while the counts are checked.
    let Some(_quiet) = super::no_destruction() else {
        crate::warn!("{}: frame audit skipped: a destruction is under way", d.id);
        return;
    };
    // A domain being built owns frames before the table lists it.
    let Some(_no_build) = super::no_build() else {
        crate::warn!("{}: frame audit skipped: a domain is being built", d.id);
        return;
    };
    let Some(all) = super::try_all() else {
        crate::warn!("{}: frame audit skipped: the domain table is busy", d.id);
        return;
    };
    let mut guards = Vec::new();
    for dom in &all {
        for (i, slot) in dom.vcpus.iter().enumerate() {
            let Some(g) = try_lock_for(slot) else {
                crate::warn!("{}: frame audit skipped: {}v{i} stays busy", d.id, dom.id);
                return;
            };
            guards.push((&**dom, g));
        }
    }
    let mut pending_guards = Vec::new();
    for dom in &all {
        for (i, slot) in dom.mm_pending.iter().enumerate() {
            let Some(g) = try_lock_for(slot) else {
                crate::warn!(
                    "{}: frame audit skipped: {}v{i}'s page-table work stays busy",
                    d.id,
                    dom.id
                );
                return;
            };
            pending_guards.push(g);
        }
    }
    // Every domain's grant operations stay out while the counts are checked.
    let mut maptracks = Vec::new();
    for dom in &all {
        let Some(g) = try_lock_for(&dom.grant.maptrack) else {
            crate::warn!(
                "{}: frame audit skipped: {}'s grants stay busy",
                d.id,
                dom.id
            );
            return;
        };
        maptracks.push(g);
    }
    let pendings: Vec<_> = pending_guards.iter().map(|g| **g).collect();
    let mut list = Vec::new();
    for (dom, mt) in all
        .iter()
        .zip(&maptracks)
        .filter(|(dom, _)| !(relinquished && dom.stopped.load(Ordering::Acquire)))
    {
        domain_holds(dom, &mut list);
        let Some(ev) = try_lock_for(&dom.evtchn) else {
            crate::warn!(
                "{}: frame audit skipped: {}'s event channels stay busy",
                d.id,
                dom.id
            );
            return;
        };
        let mut frames = Vec::new();
        ev.fifo_frames(&mut frames);
        fifo_holds(&frames, &mut list);
        crate::pv::grant::holds(dom, mt, &mut list);
    }
    for (dom, v) in &guards {
        holds(dom, v, &mut list);
    }
    let when = if relinquished {
        " after relinquishing"
    } else {
        ""
    };
    match frametable::audit(&list, &pendings) {
        Some(Ok(s)) => crate::info!(
            "{}: frame audit{when}: ok ({} frames, {} tables, {} entries, {} holds)",
            d.id,
            s.frames,
            s.tables,
            s.entries,
            list.len()
        ),
        Some(Err(f)) => crate::error!(
            "{}: frame audit FAILED{when}: {} ({} broken)",
            d.id,
            f.first,
            f.count
        ),
        None => crate::warn!("{}: frame audit skipped: no memory for its counters", d.id),
    }
}

/// Set by the CPU that stops the machine (the hardware domain or the last domain stopped).
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Other CPUs parked by it (or by themselves, stopping the machine second).
static PARKED: AtomicU32 = AtomicU32::new(0);

/// Stops this CPU for good on Hestia's own page tables (NMIs still find them mapped while the
/// stopping domain's go away), counted in [`PARKED`].
fn park() -> ! {
    smp::use_idle_page_tables();
    PARKED.fetch_add(1, Ordering::AcqRel);
    cpu::halt_forever()
}

/// [`park`] as a `CALL` IPI handler.
fn park_on_call() {
    park()
}

/// Parks every other online CPU (each takes the `CALL` IPI where it has interrupts on, so
/// holding no lock) within [`LOCK_WAIT_NS`]; the index of one that did not, otherwise.
fn park_others() -> Result<(), u32> {
    let me = percpu::current_index();
    let others: Vec<u32> = percpu::all()
        .filter(|p| p.index != me && p.online.load(Ordering::Acquire))
        .map(|p| p.index)
        .collect();
    let want = others.len() as u32;
    let end = tsc::uptime_ns().saturating_add(LOCK_WAIT_NS);
    let mut late = None;
    for &i in &others {
        while !smp::call_on(i, park_on_call) && PARKED.load(Ordering::Acquire) < want {
            if tsc::uptime_ns() > end {
                late = Some(i);
                break;
            }
            core::hint::spin_loop();
        }
    }
    while PARKED.load(Ordering::Acquire) < want {
        if tsc::uptime_ns() > end {
            return Err(late.or(others.last().copied()).unwrap_or(me));
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// Destroys the memory of every stopped domain as a domain's destruction will
/// ([`relinquish_memory`]), once the other CPUs are parked and so cannot run
/// them or run on their page tables, and checks that every frame came back
/// ([`relinquish_checked`]); then audits the frame table again with the holds of the domains
/// still running. So every guest test that stops the machine tests domain destruction.
fn relinquish_at_stop(d: &Domain) {
    let Some(all) = super::try_all() else {
        crate::warn!(
            "{}: relinquish check skipped: the domain table is busy",
            d.id
        );
        return;
    };
    for dom in all.iter().filter(|dom| dom.stopped.load(Ordering::Acquire)) {
        relinquish_checked(dom);
    }
    audit(d, true);
}

/// Relinquishes the stopped domain `d`'s memory and checks the result: the free frames grow
/// by exactly the frames freed, nothing stays owned, `tot_pages` reaches 0. A mismatch logs
/// `frame audit FAILED`.
fn relinquish_checked(d: &Domain) {
    let before = mm::stats().free / 4096;
    let owned = d.tot_pages.load(Ordering::Acquire);
    let mut state = Relinquishing::default();
    while relinquish_memory(d, &mut state) == Err(Preempted) {}
    let after = mm::stats().free / 4096;
    let (n, kept, left) = (
        state.freed(),
        state.kept(),
        d.tot_pages.load(Ordering::Acquire),
    );
    crate::info!(
        "{}: relinquished {n} frames ({owned} pages, shared_info and {} grant-table frames), free frames before {before} after {after}",
        d.id,
        state.grant_frames()
    );
    if after != before + n || kept != 0 || left != 0 || state.bad_holds() != 0 {
        crate::error!(
            "{}: frame audit FAILED after relinquishing: {after} free frames, not {before} + {n}, or {kept} kept, {left} pages counted, {} bad holds",
            d.id,
            state.bad_holds()
        );
    }
}
