//! A domain's grant-table state in the kernel: the table (`hestia_core::grant_table`) with the
//! frames it shares with the guest, and the maptrack of the mappings the domain made.
//!
//! The table's frames are Hestia's, shared with the domain as Xen's `share_xen_page_with_guest`
//! does: owned by the domain (so it maps them with ordinary page-table updates, as Linux does
//! after `GNTTABOP_setup_table`), not counted in its pages, each holding a reference and the
//! writable type from the moment it is added until the domain's destruction takes them
//! ([`take_frames`]), so they never become page tables and are never given back while Hestia
//! reads them (isolation rule 5). A table starts with one frame, added at its first use
//! (Xen allocates it with the domain; nothing can tell the difference).
//!
//! The shared entries are read and changed through the direct map with atomic operations
//! ([`Entries`]). Once the domain's destruction took its frames, its table has none: every
//! entry reads as not granted and status changes go nowhere, so a grantee unmapping a dead
//! granter's frame later never writes into a frame that left it.
//!
//! Locks: a domain's maptrack, then one domain's table, then the frame table (and the
//! allocator). Never two tables at once, and two maptracks only in the frame audit, which
//! takes every domain's, in domain order, before anything else of these: every grant
//! operation (map, unmap with its device references, copy with its transient ones) runs
//! whole under its domain's maptrack lock, so the audit sees none half done.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hestia_core::grant_table::{
    DEFAULT_MAX_GRANT_FRAMES, DEFAULT_MAX_MAPTRACK_FRAMES, ENTRIES_PER_FRAME_V1, GrantTable,
    INITIAL_NR_GRANT_FRAMES, Maptrack, SharedEntries, pin,
};
use hestia_core::pv_mm::{Hold, PageType};
use xen_abi::grant_table::gntmap;
use xen_abi::mmu::INVALID_M2P_ENTRY;

use super::domain::Domain;
use crate::domain::DomainRef;
use crate::mm::{self, frametable};

/// A domain's table and the frames it shares.
pub struct TableState {
    /// The entries' state.
    pub gt: GrantTable,
    /// Machine frames of the shared entries, in order.
    frames: Vec<u64>,
    /// The domain's destruction took the frames: the table never grows again.
    released: bool,
}

impl TableState {
    /// The entries' state and the shared entries, together.
    pub fn split(&mut self) -> (&mut GrantTable, Entries<'_>) {
        (&mut self.gt, Entries(&self.frames))
    }

    /// The table's frames, in order.
    pub fn frames(&self) -> &[u64] {
        &self.frames
    }

    /// Grows the table to `nr` frames (allocated zeroed, given to `dom` with a reference and
    /// the writable type); false without memory, or once the domain's destruction took the
    /// frames. Frames added before a failure stay.
    pub fn grow(&mut self, dom: u16, nr: u32) -> bool {
        if self.released || nr > self.gt.max_frames {
            return false;
        }
        while (self.frames.len() as u32) < nr {
            if self.frames.try_reserve(1).is_err() {
                return false;
            }
            let Some(phys) = mm::alloc_zeroed_frames(1, 4096, u64::MAX) else {
                return false;
            };
            let mfn = phys / 4096;
            let shared = frametable::with(|ft, mem| {
                ft.assign(mfn, dom)?;
                ft.get_page(mfn, dom)?;
                ft.get_page_type(mem, mfn, PageType::Writable, dom)
            });
            if !matches!(shared, Some(Ok(()))) {
                crate::error!("d{dom}: grant frame {mfn:#x} could not be shared ({shared:?})");
                return false;
            }
            frametable::set_m2p(mfn, INVALID_M2P_ENTRY);
            self.frames.push(mfn);
            if !self.gt.grow(self.frames.len() as u32) {
                return false;
            }
        }
        true
    }

    /// Gives the table its initial frame at its first use; false when it cannot have one.
    pub fn ensure(&mut self, dom: u16) -> bool {
        self.gt.nr_frames() >= INITIAL_NR_GRANT_FRAMES || self.grow(dom, INITIAL_NR_GRANT_FRAMES)
    }
}

/// A domain's grant state.
pub struct Grants {
    /// Its table. Lock order: after any maptrack, before the frame table.
    pub table: spin::Mutex<TableState>,
    /// The mappings it made of grants (its own or others'), each with the granter. Lock order:
    /// before any table.
    pub maptrack: spin::Mutex<Maptrack<DomainRef>>,
}

impl Grants {
    /// The state of a new domain: v1, no frames yet, Xen's default limits.
    pub fn new() -> Self {
        Grants {
            table: spin::Mutex::new(TableState {
                gt: GrantTable::new(DEFAULT_MAX_GRANT_FRAMES),
                frames: Vec::new(),
                released: false,
            }),
            maptrack: spin::Mutex::new(Maptrack::new(DEFAULT_MAX_MAPTRACK_FRAMES)),
        }
    }
}

impl Default for Grants {
    fn default() -> Self {
        Self::new()
    }
}

/// The v1 entries in a table's frames, through the direct map. An entry outside the frames
/// reads as zero and takes no write.
pub struct Entries<'a>(&'a [u64]);

impl Entries<'_> {
    /// Direct-map address of entry `r`, if the table has it.
    fn addr(&self, r: u32) -> Option<u64> {
        let mfn = self.0.get((r / ENTRIES_PER_FRAME_V1) as usize)?;
        Some(mm::phys_to_virt(
            mfn * 4096 + u64::from(r % ENTRIES_PER_FRAME_V1) * 8,
        ))
    }

    fn word(&self, r: u32, offset: u64) -> Option<&AtomicU32> {
        let a = self.addr(r)? + offset;
        // SAFETY: the table's frames stay allocated, owned and mapped in the direct map while
        // they are in `frames` (they hold a reference and the writable type until the
        // domain's destruction takes them out); `a` is 4-byte aligned inside one of them, and
        // every access to it is atomic (the guest writes it concurrently).
        Some(unsafe { AtomicU32::from_ptr(a as *mut u32) })
    }
}

impl SharedEntries for Entries<'_> {
    fn load_word(&self, r: u32) -> u32 {
        self.word(r, 0).map_or(0, |w| w.load(Ordering::Acquire))
    }

    fn cmpxchg_word(&self, r: u32, old: u32, new: u32) -> u32 {
        self.word(r, 0).map_or(0, |w| {
            w.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .unwrap_or_else(|found| found)
        })
    }

    fn frame(&self, r: u32) -> u32 {
        self.word(r, 4).map_or(0, |w| w.load(Ordering::Acquire))
    }

    fn clear_flags(&self, r: u32, mask: u16) {
        if let Some(w) = self.word(r, 0) {
            w.fetch_and(!u32::from(mask), Ordering::AcqRel);
        }
    }

    fn swap(&self, a: u32, b: u32) {
        let (Some(pa), Some(pb)) = (self.addr(a), self.addr(b)) else {
            return;
        };
        // SAFETY: as in `word`; entries are 8-byte aligned.
        let (ea, eb) = unsafe {
            (
                AtomicU64::from_ptr(pa as *mut u64),
                AtomicU64::from_ptr(pb as *mut u64),
            )
        };
        let va = ea.load(Ordering::Acquire);
        ea.store(eb.load(Ordering::Acquire), Ordering::Release);
        eb.store(va, Ordering::Release);
    }
}

/// The `pin` increments of the uses `flags` (`GNTMAP_*` done) stand for.
fn incr_of(flags: u32, done: u32) -> (u32, u32) {
    let ro = flags & gntmap::READONLY != 0;
    let host = if done & gntmap::HOST_MAP == 0 {
        0
    } else if ro {
        pin::HOST_READ
    } else {
        pin::HOST_WRITE
    };
    let dev = if done & gntmap::DEVICE_MAP == 0 {
        0
    } else if ro {
        pin::DEV_READ
    } else {
        pin::DEV_WRITE
    };
    (host, dev)
}

/// Drops the frame references of a device mapping of `mfn` (`ro`: read-only, no type). The
/// caller holds the mapping domain's maptrack lock, so the audit never sees the mapping gone
/// and its references still there.
pub fn put_device_refs(mfn: u64, ro: bool) {
    frametable::with(|ft, mem| {
        if !ro {
            ft.put_page_type(mem, mfn);
        }
        ft.put_page(mfn);
    });
}

/// Gives back, in the granter's table, the uses `done` of a mapping with `flags` of entry
/// `r` (the frame references are gone already: a host mapping's with its page-table entry, a
/// device mapping's by [`put_device_refs`]); a dead granter whose frame this frees is swept
/// again.
pub fn complete_unmap(granter: &Domain, r: u32, flags: u32, done: u32) {
    let ro = flags & gntmap::READONLY != 0;
    let (host, dev) = incr_of(flags, done);
    {
        let mut st = granter.grant.table.lock();
        let (gt, sh) = st.split();
        gt.release(&sh, r, host + dev, ro);
    }
    if granter.dying.load(Ordering::Acquire) {
        crate::domain::resweep_dead();
    }
}

/// Drops every mapping the dying domain `d` made (Xen's `gnttab_release_mappings`): the
/// device mappings' references, and the pins in each granter's table. A host mapping's
/// references are in its page-table entry and go with the domain's page tables.
pub fn release_mappings(d: &Domain) {
    let all = {
        let mut mt = d.grant.maptrack.lock();
        let all = mt.take_all();
        for m in all.iter().filter(|m| m.flags & gntmap::DEVICE_MAP != 0) {
            put_device_refs(m.mfn, m.flags & gntmap::READONLY != 0);
        }
        all
    };
    for m in all {
        complete_unmap(&m.granter, m.r#ref, m.flags, m.flags);
    }
}

/// Takes the table's frames out of the dying domain `d` (its destruction drops their
/// references): from now on the table has none.
pub fn take_frames(d: &Domain) -> Vec<u64> {
    let mut st = d.grant.table.lock();
    st.released = true;
    core::mem::take(&mut st.frames)
}

/// The references Hestia holds for `d`'s grants, for the frame audit: the table's frames
/// (writable type) and, from its maptrack `mt` (locked by the audit, so no grant operation of
/// `d` is under way), the frames of its device mappings (writable type unless read-only).
pub fn holds(d: &Domain, mt: &Maptrack<DomainRef>, out: &mut Vec<Hold>) {
    let writable = Some(PageType::Writable);
    for &mfn in d.grant.table.lock().frames() {
        out.push(Hold { mfn, ty: writable });
    }
    for m in mt.iter() {
        if m.flags & gntmap::DEVICE_MAP != 0 {
            let ty = (m.flags & gntmap::READONLY == 0).then_some(PageType::Writable);
            out.push(Hold { mfn: m.mfn, ty });
        }
    }
}
