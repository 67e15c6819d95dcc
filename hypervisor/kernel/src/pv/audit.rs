//! The frame-table audit when a domain stops: every frame's reference and type counts are
//! recomputed from the domain's validated page tables, its pins and the references Hestia
//! holds for its vCPUs ([`holds`]), and compared with the table (`FrameTable::audit` in
//! `hestia_core::pv_mm`). A mismatch means a hypercall path broke an invariant of the PV MMU;
//! the structured fuzzer (`fuzz-hypercalls`) ends every run with this check.
//!
//! Locks: every vCPU lock of every domain, in domain and vCPU order, then every vCPU's
//! `mm_pending`, then the frame table's (the order the hypercalls use). Holding them all keeps the vCPUs' base
//! pointers, GDT and LDT frames and unfinished page-table work consistent with the counts; the
//! vCPU and pending locks are only tried for a bounded time, so a vCPU stuck with one held
//! skips the audit instead of hanging the stop.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use hestia_core::pv_mm::{Hold, PageType};

use super::domain::{Domain, Vcpu};
use crate::arch::x86_64::tsc;
use crate::mm::{DIRECT_MAP_BASE, frametable};

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
/// registered `vcpu_info` page (writable type).
fn holds(d: &Domain, v: &Vcpu, out: &mut Vec<Hold>) {
    let l4 = Some(PageType::Table(4));
    if v.initialised {
        out.push(Hold {
            mfn: v.kernel_cr3 >> 12,
            ty: l4,
        });
    }
    if v.user_cr3 != 0 {
        out.push(Hold {
            mfn: v.user_cr3 >> 12,
            ty: l4,
        });
    }
    let seg = Some(PageType::SegDesc);
    for &mfn in v.gdt_frames.iter().chain(v.ldt_frames.iter().flatten()) {
        out.push(Hold { mfn, ty: seg });
    }
    let info = d
        .vcpu_info
        .get(v.id as usize)
        .map_or(0, |a| a.load(Ordering::Acquire));
    if info != 0 {
        out.push(Hold {
            mfn: info.saturating_sub(DIRECT_MAP_BASE) >> 12,
            ty: Some(PageType::Writable),
        });
    }
}

/// Audits the frame table with the holds of every domain (the audit covers every frame) and
/// logs the verdict for `d`, which stopped: one line, `frame audit: ok` or `frame audit FAILED`
/// with the first broken invariant.
pub fn audit_at_stop(d: &Domain) {
    let Some(all) = crate::domain::try_all() else {
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
    let pendings: Vec<_> = pending_guards.iter().map(|g| **g).collect();
    // shared_info and a served console ring hold a writable type for the domain's life
    // (isolation rule 5).
    let mut list = Vec::new();
    for dom in &all {
        for mfn in
            core::iter::once(dom.shared_info_mfn).chain(dom.console.as_ref().map(|c| c.mfn()))
        {
            list.push(Hold {
                mfn,
                ty: Some(PageType::Writable),
            });
        }
    }
    for (dom, v) in &guards {
        holds(dom, v, &mut list);
    }
    match frametable::audit(&list, &pendings) {
        Some(Ok(s)) => crate::info!(
            "{}: frame audit: ok ({} frames, {} tables, {} entries, {} holds)",
            d.id,
            s.frames,
            s.tables,
            s.entries,
            list.len()
        ),
        Some(Err(f)) => crate::error!(
            "{}: frame audit FAILED: {} ({} broken)",
            d.id,
            f.first,
            f.count
        ),
        None => crate::warn!("{}: frame audit skipped: no memory for its counters", d.id),
    }
}
