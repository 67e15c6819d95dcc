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
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use hestia_core::grant_table::{
    ENTRIES_PER_FRAME_V1, GrantTable, INITIAL_NR_GRANT_FRAMES, Maptrack, SharedEntries, pin,
};
use hestia_core::ids::{GrantRef, Mfn};
use hestia_core::pv_mm::{Hold, PageType};
use xen_abi::errno::Errno;
use xen_abi::grant_table::{GNTTAB_NR_RESERVED_ENTRIES, gntmap, gtf};
use xen_abi::mmu::INVALID_M2P_ENTRY;

use super::domain::Domain;
use super::domain::DomainRef;
use crate::mm::{self, frametable};

/// A domain's table and the frames it shares.
pub struct TableState {
    /// The entries' state.
    pub gt: GrantTable,
    /// Machine frames of the shared entries, in order.
    frames: Vec<Mfn>,
    /// Machine frames of the v2 status entries, in order (none in v1).
    status: Vec<Mfn>,
    /// The domain's destruction took the frames: the table never grows again.
    released: bool,
}

/// Status entries (2 bytes) per status frame.
const STATUS_PER_FRAME: u32 = 2048;

/// Status frames a v2 table of `nr` frames needs (Xen's `grant_to_status_frames`).
fn status_frames_for(nr: u32) -> u32 {
    (nr * (ENTRIES_PER_FRAME_V1 / 2)).div_ceil(STATUS_PER_FRAME)
}

/// Allocates a zeroed frame and shares it with `dom` (a reference and the writable type, as
/// Xen's `share_xen_page_with_guest`); its machine frame number.
fn share_new_frame(dom: u16) -> Option<Mfn> {
    let mfn = Mfn::new(mm::alloc_zeroed_frames(1, 4096, u64::MAX)? / 4096);
    let shared = frametable::with(|ft, mem| {
        ft.assign(mfn, dom)?;
        ft.get_page(mfn, dom)?;
        ft.get_page_type(mem, mfn, PageType::Writable, dom)
    });
    if !matches!(shared, Some(Ok(()))) {
        crate::error!("d{dom}: grant frame {mfn:#x} could not be shared ({shared:?})");
        return None;
    }
    frametable::set_m2p(mfn, INVALID_M2P_ENTRY);
    Some(mfn)
}

/// Adds frames shared with `dom` to `list` until it has `want`; false without memory (those
/// added stay).
fn share_frames(list: &mut Vec<Mfn>, dom: u16, want: u32) -> bool {
    while (list.len() as u32) < want {
        if list.try_reserve(1).is_err() {
            return false;
        }
        let Some(mfn) = share_new_frame(dom) else {
            return false;
        };
        list.push(mfn);
    }
    true
}

/// Takes back the shared frame `mfn` from `dom` and frees it, unless the domain still maps
/// it (more than Hestia's reference and type): false then, nothing changed.
fn unshare_frame(dom: u16, mfn: Mfn) -> bool {
    let freed = frametable::with(|ft, mem| {
        let f = ft.info(mfn).copied()?;
        if f.owner != Some(dom) || f.ref_count != 1 || f.type_count != 1 {
            return None;
        }
        ft.put_page_type(mem, mfn);
        ft.put_page(mfn);
        ft.release(mem, mfn, dom).ok()
    })
    .flatten()
    .is_some();
    if freed {
        frametable::set_m2p(mfn, INVALID_M2P_ENTRY);
        mm::free_frames(mfn.addr(), 1);
    }
    freed
}

/// Zeroes a frame of the table (a version change clears the old format out).
fn clear_frame(mfn: Mfn) {
    // SAFETY: a table frame, held with a reference and the writable type for as long as it is
    // in the table, inside the direct map; the guest may write it concurrently, which only
    // affects its own entries (every read of them is atomic and checked).
    unsafe { core::ptr::write_bytes(mm::phys_to_virt(mfn.addr()) as *mut u8, 0, 4096) };
}

impl TableState {
    /// The entries' state and the shared entries, together.
    pub fn split(&mut self) -> (&mut GrantTable, Entries<'_>) {
        let version = self.gt.version();
        (
            &mut self.gt,
            Entries {
                frames: &self.frames,
                status: &self.status,
                version,
            },
        )
    }

    /// The table's frames, in order.
    pub fn frames(&self) -> &[Mfn] {
        &self.frames
    }

    /// The v2 status frames, in order.
    pub fn status_frames(&self) -> &[Mfn] {
        &self.status
    }

    /// Grows the table to `nr` frames (and, in v2, its status frames to match), each
    /// allocated zeroed and shared with `dom`; false without memory, or once the domain's
    /// destruction took the frames. Frames added before a failure stay.
    pub fn grow(&mut self, dom: u16, nr: u32) -> bool {
        if self.released || nr > self.gt.max_frames {
            return false;
        }
        let added = share_frames(&mut self.frames, dom, nr);
        // The entries cover every frame added, even when a later one failed.
        let covered = self.gt.grow(self.frames.len() as u32);
        added
            && covered
            && (self.gt.version() == 1
                || share_frames(&mut self.status, dom, status_frames_for(nr)))
    }

    /// How many frames of the shared entries (`status`: of the v2 status entries) the table
    /// may have (Xen's `gnttab_resource_max_frames`).
    pub fn max_resource_frames(&self, status: bool) -> u32 {
        if status {
            status_frames_for(self.gt.max_frames)
        } else {
            self.gt.max_frames
        }
    }

    /// The machine frames `frame..frame + nr` of the shared entries (`status`: of the v2
    /// status entries), the table grown to hold them if it may (Xen's
    /// `gnttab_acquire_resource`, for `XENMEM_acquire_resource`): `EINVAL` for no frames,
    /// status frames of a v1 table, or frames beyond what the table has and can get.
    pub fn acquire(
        &mut self,
        dom: u16,
        status: bool,
        frame: u32,
        nr: u32,
    ) -> Result<&[Mfn], Errno> {
        let last = nr
            .checked_sub(1)
            .and_then(|n| frame.checked_add(n))
            .ok_or(Errno::EINVAL)?;
        self.ensure(dom);
        if status && self.gt.version() != 2 {
            return Err(Errno::EINVAL);
        }
        let have = if status { &self.status } else { &self.frames };
        if last as usize >= have.len() {
            // Table frames enough for frame `last` (a status frame covers the status entries
            // of 8 table frames).
            let per = if status {
                STATUS_PER_FRAME / (ENTRIES_PER_FRAME_V1 / 2)
            } else {
                1
            };
            if let Some(nr_grant) = (last + 1).checked_mul(per)
                && nr_grant <= self.gt.max_frames
            {
                self.grow(dom, nr_grant);
            }
        }
        let have = if status { &self.status } else { &self.frames };
        have.get(frame as usize..=last as usize)
            .ok_or(Errno::EINVAL)
    }

    /// Gives the table its initial frame at its first use; false when it cannot have one.
    pub fn ensure(&mut self, dom: u16) -> bool {
        self.gt.nr_frames() >= INITIAL_NR_GRANT_FRAMES || self.grow(dom, INITIAL_NR_GRANT_FRAMES)
    }

    /// Switches `dom`'s table to entry format `version` (Xen's `gnttab_set_version`): refused
    /// with `EBUSY` while an entry past the reserved ones is in use (or, going back to v1,
    /// while the guest still maps a status frame), `ERANGE` when a reserved v2 entry cannot be
    /// written in v1, `ENOMEM` without frames. The reserved entries (0-7) are carried over,
    /// every other entry is cleared.
    pub fn set_version(&mut self, dom: u16, version: u8) -> Result<(), Errno> {
        let old = self.gt.version();
        if old == version {
            return Ok(());
        }
        if self.gt.any_in_use_from(GNTTAB_NR_RESERVED_ENTRIES) {
            return Err(Errno::EBUSY);
        }
        let (_, sh) = self.split();
        let mut reserved = Vec::new();
        for r in (0..GNTTAB_NR_RESERVED_ENTRIES).map(GrantRef::unvalidated) {
            let (w, frame) = (sh.load_word(r), sh.frame(r));
            if old == 1 {
                reserved.push((w, frame));
                continue;
            }
            // v2 to v1: only full-page grants v1 can name carry over.
            match w as u16 & gtf::TYPE_MASK {
                gtf::PERMIT_ACCESS if frame >> 32 != 0 => return Err(Errno::ERANGE),
                gtf::PERMIT_ACCESS => reserved.push((w | u32::from(sh.status_bits(r)), frame)),
                gtf::TRANSITIVE => return Err(Errno::ERANGE),
                _ => reserved.push((0, 0)),
            }
        }
        if version == 2 {
            if !share_frames(
                &mut self.status,
                dom,
                status_frames_for(self.gt.nr_frames()),
            ) {
                return Err(Errno::ENOMEM);
            }
        } else {
            while let Some(&mfn) = self.status.last() {
                if !unshare_frame(dom, mfn) {
                    return Err(Errno::EBUSY);
                }
                self.status.pop();
            }
        }
        for &mfn in self.frames.iter().chain(&self.status) {
            clear_frame(mfn);
        }
        self.gt.set_version(version);
        let (_, sh) = self.split();
        for (r, &(w, frame)) in (0..).map(GrantRef::unvalidated).zip(&reserved) {
            let status_bits = w as u16 & (gtf::READING | gtf::WRITING);
            sh.write_entry(r, w & !u32::from(status_bits), frame);
            if version == 2 {
                sh.set_status(r, status_bits);
            } else {
                sh.set_flags_v1(r, status_bits);
            }
        }
        Ok(())
    }
}

/// A domain's grant state.
pub struct Grants {
    /// Its table. Lock order: after any maptrack, before the frame table.
    pub table: spin::Mutex<TableState>,
    /// The mappings it made of grants (its own or others'), each with the granter. Lock order:
    /// before any table.
    pub maptrack: spin::Mutex<Maptrack<DomainRef>>,
    /// The highest table version it may switch to (1 or 2; `XEN_DOMCTL_createdomain`'s
    /// `grant_opts`).
    pub max_version: u8,
}

impl Grants {
    /// The state of a new domain: v1, no frames yet, at most `max_frames` table frames and
    /// `max_maptrack_frames` maptrack frames, versions up to `max_version`.
    pub fn new(max_frames: u32, max_maptrack_frames: u32, max_version: u8) -> Self {
        Grants {
            table: spin::Mutex::new(TableState {
                gt: GrantTable::new(max_frames),
                frames: Vec::new(),
                status: Vec::new(),
                released: false,
            }),
            maptrack: spin::Mutex::new(Maptrack::new(max_maptrack_frames)),
            max_version,
        }
    }
}

/// The entries in a table's frames, through the direct map, in the table's format. An entry
/// outside the frames reads as zero and takes no write.
pub struct Entries<'a> {
    frames: &'a [Mfn],
    status: &'a [Mfn],
    version: u8,
}

impl Entries<'_> {
    /// Direct-map address of byte `offset` of entry `r`, if the table has it.
    fn addr(&self, r: GrantRef, offset: u64) -> Option<u64> {
        let r = r.raw();
        let (per_frame, size) = if self.version == 2 {
            (ENTRIES_PER_FRAME_V1 / 2, 16)
        } else {
            (ENTRIES_PER_FRAME_V1, 8)
        };
        let mfn = self.frames.get((r / per_frame) as usize)?;
        Some(mm::phys_to_virt(
            mfn.addr() + u64::from(r % per_frame) * size + offset,
        ))
    }

    fn word(&self, r: GrantRef, offset: u64) -> Option<&AtomicU32> {
        let a = self.addr(r, offset)?;
        // SAFETY: the table's frames stay allocated, owned and mapped in the direct map while
        // they are in `frames` (they hold a reference and the writable type until the
        // domain's destruction takes them out); `a` is 4-byte aligned inside one of them, and
        // every access to it is atomic (the guest writes it concurrently).
        Some(unsafe { AtomicU32::from_ptr(a as *mut u32) })
    }

    fn quad(&self, r: GrantRef, offset: u64) -> Option<&AtomicU64> {
        let a = self.addr(r, offset)?;
        // SAFETY: as in `word`; `a` is 8-byte aligned.
        Some(unsafe { AtomicU64::from_ptr(a as *mut u64) })
    }

    /// The v2 status entry of `r`.
    fn status_entry(&self, r: GrantRef) -> Option<&AtomicU16> {
        let r = r.raw();
        let mfn = self.status.get((r / STATUS_PER_FRAME) as usize)?;
        let a = mm::phys_to_virt(mfn.addr() + u64::from(r % STATUS_PER_FRAME) * 2);
        // SAFETY: as in `word`, for the status frames; `a` is 2-byte aligned.
        Some(unsafe { AtomicU16::from_ptr(a as *mut u16) })
    }

    /// The status bits of v2 entry `r`.
    fn status_bits(&self, r: GrantRef) -> u16 {
        self.status_entry(r)
            .map_or(0, |s| s.load(Ordering::Acquire))
    }

    /// Writes entry `r`'s first word and frame (a version change's reserved entries).
    fn write_entry(&self, r: GrantRef, word: u32, frame: u64) {
        if self.version == 2 {
            if let Some(f) = self.quad(r, 8) {
                f.store(frame, Ordering::Release);
            }
        } else if let Some(f) = self.word(r, 4) {
            f.store(frame as u32, Ordering::Release);
        }
        if let Some(w) = self.word(r, 0) {
            w.store(word, Ordering::Release);
        }
    }

    /// Sets status bits in the flags of v1 entry `r`.
    fn set_flags_v1(&self, r: GrantRef, bits: u16) {
        if let Some(w) = self.word(r, 0) {
            w.fetch_or(u32::from(bits), Ordering::AcqRel);
        }
    }
}

impl SharedEntries for Entries<'_> {
    fn load_word(&self, r: GrantRef) -> u32 {
        self.word(r, 0).map_or(0, |w| w.load(Ordering::Acquire))
    }

    fn cmpxchg_word(&self, r: GrantRef, old: u32, new: u32) -> u32 {
        self.word(r, 0).map_or(0, |w| {
            w.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .unwrap_or_else(|found| found)
        })
    }

    fn frame(&self, r: GrantRef) -> u64 {
        if self.version == 2 {
            self.quad(r, 8).map_or(0, |f| f.load(Ordering::Acquire))
        } else {
            self.word(r, 4)
                .map_or(0, |f| u64::from(f.load(Ordering::Acquire)))
        }
    }

    fn sub_page(&self, r: GrantRef) -> (u16, u16) {
        let w = self.word(r, 4).map_or(0, |w| w.load(Ordering::Acquire));
        (w as u16, (w >> 16) as u16)
    }

    fn set_status(&self, r: GrantRef, bits: u16) {
        if let Some(s) = self.status_entry(r) {
            s.fetch_or(bits, Ordering::AcqRel);
        }
    }

    fn clear_flags(&self, r: GrantRef, mask: u16) {
        if self.version == 2 {
            if let Some(s) = self.status_entry(r) {
                s.fetch_and(!mask, Ordering::AcqRel);
            }
        } else if let Some(w) = self.word(r, 0) {
            w.fetch_and(!u32::from(mask), Ordering::AcqRel);
        }
    }

    fn swap(&self, a: GrantRef, b: GrantRef) {
        let halves = if self.version == 2 { 2 } else { 1 };
        for half in 0..halves {
            let (Some(ea), Some(eb)) = (self.quad(a, half * 8), self.quad(b, half * 8)) else {
                return;
            };
            let va = ea.load(Ordering::Acquire);
            ea.store(eb.load(Ordering::Acquire), Ordering::Release);
            eb.store(va, Ordering::Release);
        }
        if let (Some(sa), Some(sb)) = (self.status_entry(a), self.status_entry(b)) {
            let va = sa.load(Ordering::Acquire);
            sa.store(sb.load(Ordering::Acquire), Ordering::Release);
            sb.store(va, Ordering::Release);
        }
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
pub fn put_device_refs(mfn: Mfn, ro: bool) {
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
pub fn complete_unmap(granter: &Domain, r: GrantRef, flags: u32, done: u32) {
    let ro = flags & gntmap::READONLY != 0;
    let (host, dev) = incr_of(flags, done);
    {
        let mut st = granter.grant.table.lock();
        let (gt, sh) = st.split();
        gt.release(&sh, r, host + dev, ro);
    }
    if granter.stopped.load(Ordering::Acquire) {
        frametable::dead_frame_released();
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

/// Takes the table's frames (and status frames) out of the dying domain `d` (its destruction
/// drops their references): from now on the table has none.
pub fn take_frames(d: &Domain) -> Vec<Mfn> {
    let mut st = d.grant.table.lock();
    st.released = true;
    let mut frames = core::mem::take(&mut st.frames);
    frames.append(&mut st.status);
    frames
}

/// The references Hestia holds for `d`'s grants, for the frame audit: the table's frames
/// and status frames (writable type) and, from its maptrack `mt` (locked by the audit, so no
/// grant operation of `d` is under way), the frames of its device mappings (writable type
/// unless read-only).
pub fn holds(d: &Domain, mt: &Maptrack<DomainRef>, out: &mut Vec<Hold>) {
    let writable = Some(PageType::Writable);
    let st = d.grant.table.lock();
    for &mfn in st.frames().iter().chain(st.status_frames()) {
        out.push(Hold { mfn, ty: writable });
    }
    drop(st);
    for m in mt.iter() {
        if m.flags & gntmap::DEVICE_MAP != 0 {
            let ty = (m.flags & gntmap::READONLY == 0).then_some(PageType::Writable);
            out.push(Hold { mfn: m.mfn, ty });
        }
    }
}
