//! The memory half of destroying a domain: every frame it owned goes back to Hestia's free
//! pool, dirty (zeroed at idle time or before its next use, `crate::mm`), with no reference or
//! type left behind (Xen's `domain_relinquish_resources`,
//! xen/arch/x86/domain.c, with `vcpu_destroy_pagetables` and `relinquish_memory`).
//!
//! Order, and why:
//! 1. The first call drops the grant mappings the domain made (pins in the granters' tables,
//!    device mappings' references; host mappings' go with its page tables, `pv::grant`),
//!    then takes out of the domain what Hestia holds on its frames on its behalf,
//!    under each vCPU's lock, and empties those places, so nothing drops them twice: each
//!    vCPU's unfinished page-table work (`mm_pending`), its kernel and user base pointers, its
//!    GDT and LDT frames, its registered `vcpu_info` page, and the permanent writable
//!    references of its shared_info page, its grant table's frames and of the console ring
//!    Hestia serves for it, and its FIFO event-channel frames, the domain going back to the
//!    2-level ABI (the same lists the stop-time audit accounts for, `super::audit::holds`,
//!    `domain_holds`, `fifo_holds` and `pv::grant::holds`).
//!    Hestia stops writing into those pages here (its console must be unregistered first).
//! 2. `hestia_core::pv_mm::FrameTable::relinquish_preemptible` then gives up the vCPUs' work,
//!    drops the holds, unpins every table (each tree torn down as its last type reference
//!    goes), and frees every frame left unreferenced, flushing the TLBs first where a mapping
//!    of it may still be cached; it also forgets the domain's L1TF and I/O-memory settings.
//! 3. Each frame freed has its M2P entry invalidated and goes back to the allocator as dirty,
//!    outside the frame table's lock, and leaves `tot_pages` (but the shared_info page and the
//!    grant table's frames, which never counted). It counts as free at once; the allocator
//!    zeroes it before anyone gets it again (the next owner must not see this domain's data),
//!    or an idle CPU does first (Xen frees a dying domain's pages marked `PGC_need_scrub`).
//!
//! Each call does one bounded step ([`frametable::CHUNK`] entries or frames under one hold of
//! the frame table's lock, then the freeing of what that step freed) and returns
//! [`Preempted`] while work is left, so the caller can take interrupts between calls.
//!
//! The caller guarantees: the domain runs no more (its vCPUs are off every CPU and will not be
//! scheduled), nothing sends it events or writes its shared_info or `vcpu_info` (its event
//! channels and timers are gone), and no CPU runs on one of its L4s: a CPU that last ran one
//! of its vCPUs must have switched to other page tables ([`crate::arch::x86_64::smp::use_idle_page_tables`]).
//! The CPU calling it is switched away from the domain's L4s here, if it still runs on one.
//!
//! A frame another domain still references (a grant mapping) is kept:
//! it stays the dying domain's, counted by [`Relinquishing::kept`]; calling again with the
//! same state once such a reference is gone sweeps the domain's frames again and frees those
//! now unreferenced (the core's rule, see `hestia_core::pv_mm::Relinquish`). The domain's
//! structure must live until nothing is kept.
//!
//! Locks: each vCPU lock then its `mm_pending` (first call only, one vCPU at a time), then the
//! frame table's (the order every hypercall uses); the allocator's once that is released.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use hestia_core::ids::Mfn;
use hestia_core::pv_mm::{Budget, Hold, MmError, PageType, Pending, Relinquish};
use xen_abi::mmu::INVALID_M2P_ENTRY;

use crate::arch::x86_64::cpu;
use crate::mm::paging;
use crate::mm::{self, frametable};
use crate::pv::domain::Domain;

/// Work is left: call [`relinquish_memory`] again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preempted;

/// A domain's memory relinquishment under way, kept by the caller between calls of
/// [`relinquish_memory`] (start with `Relinquishing::default()`).
#[derive(Default)]
pub struct Relinquishing {
    /// The core's state, once the first call took the domain's holds.
    rel: Option<Relinquish>,
    /// The L4s the domain's vCPUs ran on.
    roots: Vec<Mfn>,
    /// Frames freed so far.
    freed: u64,
    /// Hestia's frames shared with the domain (shared_info, the grant table's), which never
    /// counted in its pages.
    xen_frames: Vec<Mfn>,
}

impl Relinquishing {
    /// Frames freed and returned to the allocator so far.
    pub fn freed(&self) -> u64 {
        self.freed
    }

    /// Frames the domain still owns because something outside it references them (known once
    /// done).
    pub fn kept(&self) -> u64 {
        self.rel.as_ref().map_or(0, Relinquish::kept)
    }

    /// The grant table's frames (entries and status) Hestia shared with the domain, which,
    /// like its shared_info page, never counted in its pages (known once the first call is
    /// done).
    pub fn grant_frames(&self) -> u64 {
        // `xen_frames` is the grant table's frames and shared_info (`take_holds`).
        self.xen_frames.len().saturating_sub(1) as u64
    }

    /// Holds that named no reference of the domain (a Hestia bug, logged).
    pub fn bad_holds(&self) -> u64 {
        self.rel.as_ref().map_or(0, Relinquish::bad_holds)
    }
}

/// Takes out of `d` what Hestia holds on its frames for it (step 1 of the module's order),
/// leaving its vCPUs without base pointers, descriptor tables or `vcpu_info`, and its grant
/// table without mappings or frames; returns the core's state, the L4s its vCPUs used and
/// Hestia's frames shared with it.
fn take_holds(d: &Domain) -> (Relinquish, Vec<Mfn>, Vec<Mfn>) {
    // The mappings it made of grants go first (their page-table entries' references go
    // with its tables), then its grant table's frames, which nothing writes after this.
    crate::pv::grant::release_mappings(d);
    let mut xen_frames = crate::pv::grant::take_frames(d);
    let mut holds: Vec<Hold> = xen_frames
        .iter()
        .map(|&mfn| Hold {
            mfn,
            ty: Some(PageType::Writable),
        })
        .collect();
    xen_frames.push(d.shared_info_mfn);
    // shared_info's and a served console ring's permanent writable references
    // (pv::builder's `register_frames`).
    super::audit::domain_holds(d, &mut holds);
    let fifo = d.evtchn.lock().fifo_destroy();
    super::audit::fifo_holds(&fifo, &mut holds);
    let mut pendings = Vec::with_capacity(d.vcpus.len());
    for (i, slot) in d.vcpus.iter().enumerate() {
        let mut v = slot.lock();
        super::audit::holds(d, &v, &mut holds);
        if let Some(p) = d.mm_pending.get(i) {
            pendings.push(core::mem::take::<Pending>(&mut p.lock()));
        }
        if let Some(info) = d.vcpu_info.get(i) {
            info.store(0, Ordering::Release);
        }
        v.initialised = false;
        (v.kernel_cr3, v.user_cr3) = (0, 0);
        v.gdt_frames.clear();
        v.gdt_entries = 0;
        v.ldt_frames.clear();
        (v.ldt_base, v.ldt_ents) = (0, 0);
    }
    let mut roots: Vec<Mfn> = holds
        .iter()
        .filter(|h| h.ty == Some(PageType::Table(4)))
        .map(|h| h.mfn)
        .collect();
    roots.sort_unstable();
    roots.dedup();
    (Relinquish::new(pendings, holds), roots, xen_frames)
}

/// Invalidates the M2P entries of the frames in `freed` (ascending) and returns them to the
/// allocator, dirty, in runs of consecutive frames.
fn free_runs(freed: &[Mfn]) {
    let mut rest = freed;
    while let Some(&first) = rest.first() {
        let run = rest
            .iter()
            .zip(first.raw()..)
            .take_while(|(m, want)| m.raw() == *want)
            .count();
        for &mfn in &rest[..run] {
            frametable::set_m2p(mfn, INVALID_M2P_ENTRY);
        }
        mm::free_frames(first.addr(), run as u64);
        rest = &rest[run..];
    }
}

/// Gives back every frame of the dying domain `d`, one bounded step per call (the module's
/// order); `Err(Preempted)`: call again with the same `state`, after taking interrupts if
/// wanted. `Ok`: done; [`Relinquishing::kept`] frames stay `d`'s, referenced from outside
/// (call again with the same `state` when one of those references goes).
pub fn relinquish_memory(d: &Domain, state: &mut Relinquishing) -> Result<(), Preempted> {
    let rel = match &mut state.rel {
        // Done but for frames referenced from outside: sweep again for those now free.
        Some(rel) if rel.is_done() && rel.kept() != 0 => {
            *rel = Relinquish::new(Vec::new(), Vec::new());
            rel
        }
        Some(rel) => rel,
        None => {
            let (rel, roots, xen_frames) = take_holds(d);
            state.roots = roots;
            state.xen_frames = xen_frames;
            state.rel.insert(rel)
        }
    };
    if state
        .roots
        .contains(&Mfn::new((cpu::read_cr3() & paging::ADDR_MASK) >> 12))
    {
        crate::arch::x86_64::smp::use_idle_page_tables();
    }
    let mut freed = Vec::with_capacity(frametable::CHUNK as usize);
    let r = frametable::with(|ft, mem| {
        ft.relinquish_preemptible(
            mem,
            d.id.0,
            rel,
            &mut Budget::new(frametable::CHUNK),
            &mut freed,
        )
    })
    .unwrap_or(Ok(()));
    free_runs(&freed);
    let n = freed.len() as u64;
    let counted = n - freed
        .iter()
        .filter(|m| state.xen_frames.contains(m))
        .count() as u64;
    let _ = d
        .tot_pages
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
            Some(t.saturating_sub(counted))
        });
    state.freed += n;
    match r {
        Ok(()) => {
            if rel.bad_holds() != 0 {
                crate::error!(
                    "{}: {} references Hestia held for it were not there",
                    d.id,
                    rel.bad_holds()
                );
            }
            Ok(())
        }
        Err(MmError::Preempted) => Err(Preempted),
        Err(e) => {
            // Only a broken frame table gets here: what is left stays out of the allocator.
            crate::error!("{}: relinquishing its memory failed ({e:?})", d.id);
            Ok(())
        }
    }
}
