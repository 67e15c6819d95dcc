//! Grant tables of one domain (`public/grant_table.h`; Xen 4.17 `xen/common/grant_table.c`):
//! the active entries Hestia keeps beside the granter's shared entries, the v1 entry state
//! machine, and the maptrack of the mappings a domain made of others' grants.
//!
//! The granter writes its entries (`flags`, `domid`, `frame`) into frames it shares with Hestia;
//! Hestia reads them through [`SharedEntries`] with atomic operations, because the guest changes
//! them concurrently. While a grant is in use (mapped, or pinned for a copy) its [`Active`] entry
//! counts the uses in four 8-bit counters (`pin`, Xen's `GNTPIN_*`) and remembers the domain and
//! frame the first use resolved: later uses do not read the shared entry's frame again, and the
//! granter's changes to it do not affect them. The v1 entry carries `GTF_reading`/`GTF_writing`
//! set by Hestia while any use is under way ([`GrantTable::acquire`], a compare-and-exchange of
//! the whole `flags|domid` word that gives up after five tries against a guest changing it) and
//! cleared with the last use ([`GrantTable::release`], Xen's `reduce_status_for_pin`). A
//! granter that ends access (clears the type) while a use is under way changes nothing for that
//! use: as in Xen, the granter must wait for `GTF_reading`/`GTF_writing` to clear.
//!
//! The maptrack ([`Maptrack`]) is the mapping domain's list of what it mapped: its handles are
//! the indices returned by `map_grant_ref`, at most `max_maptrack_frames` frames' worth of them
//! (Xen's 16-byte `grant_mapping`, 256 a frame).
//!
//! Frame references are not taken here: the kernel takes them (in the frame table) for each
//! use, and the page-table entry of a host mapping holds them as any L1 entry would.
//!
//! Locking is the kernel's: one lock per domain's table, one per domain's maptrack (taken
//! before any table lock), never two of a kind at once.

use alloc::vec::Vec;

use xen_abi::grant_table::{gntmap, gntst, gtf};

use crate::ids::{DomId, GrantRef, Mfn};

/// v1 entries per table frame (8 bytes each).
pub const ENTRIES_PER_FRAME_V1: u32 = 512;
/// Frames a table has from its creation (Xen's `INITIAL_NR_GRANT_FRAMES`).
pub const INITIAL_NR_GRANT_FRAMES: u32 = 1;
/// Default most table frames of a domain (Xen's `gnttab_max_frames`).
pub const DEFAULT_MAX_GRANT_FRAMES: u32 = 64;
/// Default most maptrack frames of a domain (Xen's `gnttab_max_maptrack_frames`).
pub const DEFAULT_MAX_MAPTRACK_FRAMES: u32 = 1024;
/// Maptrack entries per maptrack frame (Xen's 16-byte `struct grant_mapping`).
pub const MAPTRACK_PER_FRAME: u32 = 256;

/// Pin counters of an active entry (Xen's `GNTPIN_*`): four 8-bit counts.
pub mod pin {
    /// One writable host mapping (or a copy into the grant).
    pub const HOST_WRITE: u32 = 1;
    /// One read-only host mapping (or a copy from the grant).
    pub const HOST_READ: u32 = 1 << 8;
    /// One writable device mapping.
    pub const DEV_WRITE: u32 = 1 << 16;
    /// One read-only device mapping.
    pub const DEV_READ: u32 = 1 << 24;
    /// The writable counters.
    pub const WRITE_MASK: u32 = 0xff | (0xff << 16);

    /// The counts that would overflow if `incr` (a sum of the above) were added: each counter
    /// stops at 127 (Xen's `GNTPIN_incr2oflow_mask`).
    pub const fn overflow_mask(incr: u32) -> u32 {
        incr << 7
    }
}

/// The `pin` increment of a mapping with `GNTMAP_*` `flags`: 0 when it asks for neither a host
/// nor a device mapping.
pub fn map_pin_incr(flags: u32) -> u32 {
    let ro = flags & gntmap::READONLY != 0;
    let mut incr = 0;
    if flags & gntmap::DEVICE_MAP != 0 {
        incr += if ro { pin::DEV_READ } else { pin::DEV_WRITE };
    }
    if flags & gntmap::HOST_MAP != 0 {
        incr += if ro { pin::HOST_READ } else { pin::HOST_WRITE };
    }
    incr
}

/// The granter's shared entries, as the kernel reaches them for the table's version (the
/// test fake: plain memory). An entry starts with the word `flags | domid << 16` in both
/// versions; v2 keeps `GTF_reading`/`GTF_writing` in separate status entries.
pub trait SharedEntries {
    /// The first word of entry `r`.
    fn load_word(&self, r: GrantRef) -> u32;
    /// Compare-and-exchange of the first word of entry `r`; returns the value found.
    fn cmpxchg_word(&self, r: GrantRef, old: u32, new: u32) -> u32;
    /// The `frame` of entry `r` (v1's 32 bits, v2's 64).
    fn frame(&self, r: GrantRef) -> u64;
    /// The `page_off` and `length` of v2 sub-page entry `r`.
    fn sub_page(&self, r: GrantRef) -> (u16, u16);
    /// Atomically sets `bits` in the status entry of v2 entry `r`.
    fn set_status(&self, r: GrantRef, bits: u16);
    /// Atomically clears status bits `mask` of entry `r`: in its `flags` (v1) or its status
    /// entry (v2).
    fn clear_flags(&self, r: GrantRef, mask: u16);
    /// Swaps the whole entries `a` and `b`, with their status (the caller makes sure neither
    /// is in use).
    fn swap(&self, a: GrantRef, b: GrantRef);
}

/// What Hestia keeps for one grant entry while it is in use (Xen's `active_grant_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Active {
    /// The four use counters ([`pin`]); 0: not in use.
    pub pin: u32,
    /// The domain using it (meaningful while `pin` is not 0).
    pub domid: DomId,
    /// The frame the first use resolved.
    pub mfn: Mfn,
    /// A v2 sub-page grant (copies only, within `start..start + length`).
    pub is_sub_page: bool,
    /// First byte granted.
    pub start: u16,
    /// Bytes granted.
    pub length: u16,
}

impl Active {
    /// An entry no domain uses.
    const UNUSED: Active = Active {
        pin: 0,
        domid: DomId(0),
        mfn: Mfn::new(0),
        is_sub_page: false,
        start: 0,
        length: 0,
    };
}

/// A use [`GrantTable::acquire`] took: the frame and the bytes of it granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Use {
    /// The frame.
    pub mfn: Mfn,
    /// First byte granted.
    pub start: u16,
    /// Bytes granted.
    pub length: u16,
}

/// One domain's grant table: its version, size and active entries.
#[derive(Debug)]
pub struct GrantTable {
    version: u8,
    nr_frames: u32,
    /// Most frames the table may grow to (set at creation; the toolstack's domctl will).
    pub max_frames: u32,
    active: Vec<Active>,
}

impl GrantTable {
    /// A version-1 table without frames yet, allowed `max_frames` frames.
    pub fn new(max_frames: u32) -> Self {
        GrantTable {
            version: 1,
            nr_frames: 0,
            max_frames,
            active: Vec::new(),
        }
    }

    /// The entry format in use (1 or 2).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Frames the table has.
    pub fn nr_frames(&self) -> u32 {
        self.nr_frames
    }

    /// Entries the table has (Xen's `nr_grant_entries`): 512 a frame in v1, 256 in v2.
    pub fn nr_entries(&self) -> u32 {
        let per_frame = if self.version == 2 {
            ENTRIES_PER_FRAME_V1 / 2
        } else {
            ENTRIES_PER_FRAME_V1
        };
        self.nr_frames.saturating_mul(per_frame)
    }

    /// Switches the entry format (the caller converted the frames); `version` is 1 or 2.
    pub fn set_version(&mut self, version: u8) {
        self.version = version;
    }

    /// Grows the active entries to cover `nr_frames` frames (the caller added the frames);
    /// `false` without memory for them (nothing changed).
    pub fn grow(&mut self, nr_frames: u32) -> bool {
        if nr_frames <= self.nr_frames {
            return true;
        }
        let want = (nr_frames * ENTRIES_PER_FRAME_V1) as usize;
        if self
            .active
            .try_reserve(want.saturating_sub(self.active.len()))
            .is_err()
        {
            return false;
        }
        self.active.resize(want, Active::UNUSED);
        self.nr_frames = nr_frames;
        true
    }

    /// The active entry of `r`, if `r` is inside the table.
    pub fn active(&self, r: GrantRef) -> Option<&Active> {
        self.active.get(r.index())
    }

    /// True if any entry from `first` on is in use.
    pub fn any_in_use_from(&self, first: u32) -> bool {
        self.active.iter().skip(first as usize).any(|a| a.pin != 0)
    }

    /// True if an entry in use by `ldom` has frame `mfn` (Xen's `grant_map_exists`).
    pub fn in_use_by(&self, ldom: DomId, mfn: Mfn) -> bool {
        self.active
            .iter()
            .any(|a| a.pin != 0 && a.domid == ldom && a.mfn == mfn)
    }

    /// Takes one use of entry `r` for domain `ldom` (Xen's `map_grant_ref` and
    /// `acquire_grant_for_copy`, v1): `incr` is the [`pin`] increment, `readonly` whether it
    /// only reads, `mapping` whether it maps (then a v1 entry with `GTF_sub_page` set is
    /// refused, as Xen's mask has it). On the first use, and on the first writable use of a
    /// read-only-pinned entry, the shared entry is checked (type `GTF_permit_access`, `domid`
    /// the user, `GTF_readonly` clear for a writer) and `GTF_reading`(/`GTF_writing`) set.
    /// `get_frame(frame, first)` then takes the kernel's reference on the frame: the entry's
    /// own `frame` on the first use, the frame of the first use otherwise; its `Err` code is
    /// returned and nothing is kept. `Ok`: the frame used.
    #[allow(clippy::too_many_arguments)] // The entry, its user, the kind of use, the frame.
    pub fn acquire(
        &mut self,
        sh: &dyn SharedEntries,
        r: GrantRef,
        ldom: DomId,
        incr: u32,
        readonly: bool,
        mapping: bool,
        get_frame: &mut dyn FnMut(Mfn, bool) -> Result<(), i16>,
    ) -> Result<Use, i16> {
        if r.raw() >= self.nr_entries() {
            return Err(gntst::BAD_GNTREF);
        }
        let v2 = self.version == 2;
        let Some(act) = self.active.get_mut(r.index()) else {
            return Err(gntst::BAD_GNTREF);
        };
        if act.pin != 0
            && (act.domid != ldom
                || act.pin & pin::overflow_mask(incr) != 0
                || (mapping && act.is_sub_page))
        {
            return Err(gntst::GENERAL_ERROR);
        }
        let first = act.pin == 0;
        if first || (!readonly && act.pin & pin::WRITE_MASK == 0) {
            if v2 {
                set_status_v2(sh, r, act.pin, readonly, mapping, ldom)?;
            } else {
                set_status_v1(sh, r, act.pin, readonly, mapping, ldom)?;
            }
        }
        let frame = if first {
            Mfn::new(sh.frame(r))
        } else {
            act.mfn
        };
        if let Err(rc) = get_frame(frame, first) {
            reduce_status_for_pin(sh, r, act.pin, readonly);
            return Err(rc);
        }
        if first {
            let sub = v2 && sh.load_word(r) as u16 & gtf::SUB_PAGE != 0;
            let (start, length) = if sub { sh.sub_page(r) } else { (0, 4096) };
            *act = Active {
                pin: 0,
                domid: ldom,
                mfn: frame,
                is_sub_page: sub,
                start,
                length,
            };
        }
        act.pin += incr;
        Ok(Use {
            mfn: act.mfn,
            start: act.start,
            length: act.length,
        })
    }

    /// Gives back one use of entry `r` taken with `incr` (Xen's `unmap_common_complete` and
    /// `release_grant_for_copy`), clearing `GTF_reading`/`GTF_writing` as the uses left
    /// allow.
    pub fn release(&mut self, sh: &dyn SharedEntries, r: GrantRef, incr: u32, readonly: bool) {
        let Some(act) = self.active.get_mut(r.index()) else {
            return;
        };
        debug_assert!(act.pin >= incr, "pin underflow on ref {r:#x}");
        act.pin = act.pin.saturating_sub(incr);
        reduce_status_for_pin(sh, r, act.pin, readonly);
    }

    /// Swaps entries `a` and `b` (`GNTTABOP_swap_grant_ref`): `GNTST_*`.
    pub fn swap(&mut self, sh: &dyn SharedEntries, a: GrantRef, b: GrantRef) -> i16 {
        let n = self.nr_entries();
        let (Some(pa), Some(pb)) = (self.active(a), self.active(b)) else {
            return gntst::BAD_GNTREF;
        };
        if a.raw() >= n || b.raw() >= n {
            return gntst::BAD_GNTREF;
        }
        if a == b {
            return gntst::OKAY;
        }
        if pa.pin != 0 || pb.pin != 0 {
            return gntst::EAGAIN;
        }
        sh.swap(a, b);
        gntst::OKAY
    }
}

/// The flag bits that must read exactly `GTF_permit_access` for a use: the entry type, and for
/// a mapping also `GTF_sub_page` (a sub-page grant can only be copied).
fn usable_mask(mapping: bool) -> u16 {
    if mapping {
        gtf::TYPE_MASK | gtf::SUB_PAGE
    } else {
        gtf::TYPE_MASK
    }
}

/// Checks entry `r` for a use by `ldom` and sets its `GTF_reading` (and `GTF_writing`) (Xen's
/// `_set_status_v1`): `pin` is the entry's use count before this use.
fn set_status_v1(
    sh: &dyn SharedEntries,
    r: GrantRef,
    pin: u32,
    readonly: bool,
    mapping: bool,
    ldom: DomId,
) -> Result<(), i16> {
    let mask = usable_mask(mapping);
    let mut seen = sh.load_word(r);
    // The guest may change the entry under us; a few retries, then it is misbehaving.
    for _ in 0..5 {
        let (flags, domid) = (seen as u16, (seen >> 16) as u16);
        if pin == 0 && (flags & mask != gtf::PERMIT_ACCESS || domid != ldom.0) {
            return Err(gntst::GENERAL_ERROR);
        }
        let mut new = flags | gtf::READING;
        if !readonly {
            if flags & gtf::READONLY != 0 {
                return Err(gntst::GENERAL_ERROR);
            }
            new |= gtf::WRITING;
        }
        let new = u32::from(new) | (seen & 0xffff_0000);
        let found = sh.cmpxchg_word(r, seen, new);
        if found == seen {
            return Ok(());
        }
        seen = found;
    }
    Err(gntst::GENERAL_ERROR)
}

/// Checks v2 entry `r` for a use by `ldom` and sets its status bits (Xen's
/// `_set_status_v2`): the bits go first, then the entry is read again, so a granter that
/// ends access sees the bits or the use fails. `pin` is the entry's use count before this use.
fn set_status_v2(
    sh: &dyn SharedEntries,
    r: GrantRef,
    pin: u32,
    readonly: bool,
    mapping: bool,
    ldom: DomId,
) -> Result<(), i16> {
    let mask = usable_mask(mapping);
    let refused = |w: u32| {
        let (flags, domid) = (w as u16, (w >> 16) as u16);
        flags & mask != gtf::PERMIT_ACCESS || domid != ldom.0
    };
    let w = sh.load_word(r);
    if pin == 0 && refused(w) {
        return Err(gntst::GENERAL_ERROR);
    }
    if readonly {
        sh.set_status(r, gtf::READING);
    } else {
        if w as u16 & gtf::READONLY != 0 {
            return Err(gntst::GENERAL_ERROR);
        }
        sh.set_status(r, gtf::READING | gtf::WRITING);
    }
    let w = sh.load_word(r);
    let ro_now = w as u16 & gtf::READONLY != 0;
    if pin == 0 {
        if refused(w) || (!readonly && ro_now) {
            sh.clear_flags(r, gtf::READING | gtf::WRITING);
            return Err(gntst::GENERAL_ERROR);
        }
    } else if ro_now {
        sh.clear_flags(r, gtf::WRITING);
        return Err(gntst::GENERAL_ERROR);
    }
    Ok(())
}

/// Clears the status bits entry `r` no longer needs with `pin` uses left, after a use that
/// was `readonly` or not (Xen's `reduce_status_for_pin`).
fn reduce_status_for_pin(sh: &dyn SharedEntries, r: GrantRef, pin: u32, readonly: bool) {
    let mut clear = if pin == 0 { gtf::READING } else { 0 };
    if !readonly && pin & pin::WRITE_MASK == 0 {
        clear |= gtf::WRITING;
    }
    if clear != 0 {
        sh.clear_flags(r, clear);
    }
}

/// One mapping a domain made of another's grant (Xen's `grant_mapping`), with the kernel's
/// `T` (what it needs to find the granter again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping<T> {
    /// The `GNTMAP_*` flags still mapped (host and/or device), with `GNTMAP_readonly`.
    pub flags: u32,
    /// The grant reference.
    pub r#ref: GrantRef,
    /// The granter.
    pub domid: DomId,
    /// The frame mapped.
    pub mfn: Mfn,
    /// The kernel's handle on the granter.
    pub granter: T,
}

/// A maptrack slot: a mapping, or free with the next free handle (Xen's free list, kept in
/// the entries themselves so the maptrack grows by whole frames and never reallocates).
#[derive(Debug)]
enum Slot<T> {
    Free(u32),
    Used(Mapping<T>),
}

/// The end of the free list.
const TAIL: u32 = u32::MAX;

/// A domain's maptrack: handles for the mappings it holds, at most `max_frames` frames of
/// [`MAPTRACK_PER_FRAME`] entries, allocated a frame's worth at a time. Handles are reused
/// oldest-freed first, as Xen's free list.
#[derive(Debug)]
pub struct Maptrack<T> {
    frames: Vec<Vec<Slot<T>>>,
    head: u32,
    tail: u32,
    in_use: usize,
    /// Most maptrack frames (set at creation; the toolstack's domctl will).
    pub max_frames: u32,
}

impl<T> Maptrack<T> {
    /// An empty maptrack allowed `max_frames` frames.
    pub fn new(max_frames: u32) -> Self {
        Maptrack {
            frames: Vec::new(),
            head: TAIL,
            tail: TAIL,
            in_use: 0,
            max_frames,
        }
    }

    /// Entries allocated so far (Xen's `maptrack_limit`).
    pub fn limit(&self) -> u32 {
        self.frames.len() as u32 * MAPTRACK_PER_FRAME
    }

    /// Handles in use.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// True when the next [`Self::insert`] needs another frame of entries.
    pub fn full(&self) -> bool {
        self.head == TAIL
    }

    fn slot(&mut self, h: u32) -> Option<&mut Slot<T>> {
        self.frames
            .get_mut((h / MAPTRACK_PER_FRAME) as usize)?
            .get_mut((h % MAPTRACK_PER_FRAME) as usize)
    }

    /// Appends `h` to the free list.
    fn push_free(&mut self, h: u32) {
        if let Some(s) = self.slot(h) {
            *s = Slot::Free(TAIL);
        }
        let tail = self.tail;
        match self.slot(tail) {
            Some(Slot::Free(next)) => *next = h,
            _ => self.head = h,
        }
        self.tail = h;
    }

    /// Makes sure a handle is free for the next [`Self::insert`]: `GNTST_no_space` when every
    /// handle the maptrack may have is in use (or no memory is left for another frame of
    /// them).
    pub fn reserve(&mut self) -> Result<(), i16> {
        if !self.full() {
            return Ok(());
        }
        let limit = self.limit();
        if self.frames.len() as u32 >= self.max_frames {
            return Err(gntst::NO_SPACE);
        }
        let n = MAPTRACK_PER_FRAME as usize;
        let mut frame = Vec::new();
        if frame.try_reserve_exact(n).is_err() || self.frames.try_reserve(1).is_err() {
            return Err(gntst::NO_SPACE);
        }
        frame.extend((1..=MAPTRACK_PER_FRAME).map(|i| Slot::Free(limit + i)));
        if let Some(Slot::Free(last)) = frame.last_mut() {
            *last = TAIL;
        }
        self.frames.push(frame);
        self.head = limit;
        self.tail = limit + MAPTRACK_PER_FRAME - 1;
        Ok(())
    }

    /// Records `m` under a new handle ([`Self::reserve`]'s errors).
    pub fn insert(&mut self, m: Mapping<T>) -> Result<u32, i16> {
        self.reserve()?;
        let h = self.head;
        let slot = self.slot(h).ok_or(gntst::NO_SPACE)?;
        let Slot::Free(next) = *slot else {
            return Err(gntst::NO_SPACE);
        };
        *slot = Slot::Used(m);
        self.head = next;
        if next == TAIL {
            self.tail = TAIL;
        }
        self.in_use += 1;
        Ok(h)
    }

    /// The mapping behind `handle`: `GNTST_bad_handle` for a handle never given out or
    /// freed.
    pub fn get(&self, handle: u32) -> Result<&Mapping<T>, i16> {
        match self
            .frames
            .get((handle / MAPTRACK_PER_FRAME) as usize)
            .and_then(|f| f.get((handle % MAPTRACK_PER_FRAME) as usize))
        {
            Some(Slot::Used(m)) => Ok(m),
            _ => Err(gntst::BAD_HANDLE),
        }
    }

    /// Drops `done` (`GNTMAP_host_map` and/or `GNTMAP_device_map`) from `handle`'s mapping,
    /// freeing the handle when nothing is left mapped.
    pub fn unmapped(&mut self, handle: u32, done: u32) {
        let Some(Slot::Used(m)) = self.slot(handle) else {
            return;
        };
        m.flags &= !done;
        if m.flags & (gntmap::HOST_MAP | gntmap::DEVICE_MAP) == 0 {
            self.in_use -= 1;
            self.push_free(handle);
        }
    }

    /// Takes every mapping out (the domain dies), leaving the maptrack empty.
    pub fn take_all(&mut self) -> Vec<Mapping<T>> {
        (self.head, self.tail, self.in_use) = (TAIL, TAIL, 0);
        core::mem::take(&mut self.frames)
            .into_iter()
            .flatten()
            .filter_map(|s| match s {
                Slot::Used(m) => Some(m),
                Slot::Free(_) => None,
            })
            .collect()
    }

    /// Every mapping in use.
    pub fn iter(&self) -> impl Iterator<Item = &Mapping<T>> {
        self.frames.iter().flatten().filter_map(|s| match s {
            Slot::Used(m) => Some(m),
            Slot::Free(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;

    /// Grant reference `n` (as a guest names it).
    fn gref(n: u32) -> GrantRef {
        GrantRef::unvalidated(n)
    }

    /// Shared entries in plain memory: (word, frame, status, sub-page) per entry; `v2` keeps
    /// the status bits apart.
    struct Fake(RefCell<Vec<FakeEntry>>, bool);

    /// First word, frame, status, sub-page window.
    type FakeEntry = (u32, u64, u16, (u16, u16));

    impl Fake {
        fn new(n: usize) -> Self {
            Fake(RefCell::new(alloc::vec![(0, 0, 0, (0, 0)); n]), false)
        }
        fn grant(&self, r: u32, flags: u16, domid: u16, frame: u64) {
            let mut v = self.0.borrow_mut();
            v[r as usize].0 = u32::from(flags) | u32::from(domid) << 16;
            v[r as usize].1 = frame;
        }
        fn flags(&self, r: u32) -> u16 {
            self.0.borrow()[r as usize].0 as u16
        }
        fn status(&self, r: u32) -> u16 {
            self.0.borrow()[r as usize].2
        }
    }

    impl SharedEntries for Fake {
        fn load_word(&self, r: GrantRef) -> u32 {
            self.0.borrow()[r.index()].0
        }
        fn cmpxchg_word(&self, r: GrantRef, old: u32, new: u32) -> u32 {
            let mut v = self.0.borrow_mut();
            let cur = v[r.index()].0;
            if cur == old {
                v[r.index()].0 = new;
            }
            cur
        }
        fn frame(&self, r: GrantRef) -> u64 {
            self.0.borrow()[r.index()].1
        }
        fn sub_page(&self, r: GrantRef) -> (u16, u16) {
            self.0.borrow()[r.index()].3
        }
        fn set_status(&self, r: GrantRef, bits: u16) {
            self.0.borrow_mut()[r.index()].2 |= bits;
        }
        fn clear_flags(&self, r: GrantRef, mask: u16) {
            let mut v = self.0.borrow_mut();
            if self.1 {
                v[r.index()].2 &= !mask;
            } else {
                v[r.index()].0 &= !u32::from(mask);
            }
        }
        fn swap(&self, a: GrantRef, b: GrantRef) {
            self.0.borrow_mut().swap(a.index(), b.index());
        }
    }

    fn table() -> (GrantTable, Fake) {
        let mut gt = GrantTable::new(DEFAULT_MAX_GRANT_FRAMES);
        assert!(gt.grow(1));
        (gt, Fake::new(512))
    }

    fn ok(_: Mfn, _: bool) -> Result<(), i16> {
        Ok(())
    }

    #[test]
    fn a_mapping_sets_and_clears_the_status_bits() {
        let (mut gt, sh) = table();
        sh.grant(10, gtf::PERMIT_ACCESS, 1, 0x1234);
        let w = map_pin_incr(gntmap::HOST_MAP);
        assert_eq!(
            gt.acquire(&sh, gref(10), DomId(1), w, false, true, &mut ok)
                .map(|u| u.mfn.raw()),
            Ok(0x1234)
        );
        assert_eq!(
            sh.flags(10),
            gtf::PERMIT_ACCESS | gtf::READING | gtf::WRITING
        );
        let r = map_pin_incr(gntmap::HOST_MAP | gntmap::READONLY);
        assert_eq!(
            gt.acquire(&sh, gref(10), DomId(1), r, true, true, &mut ok)
                .map(|u| u.mfn.raw()),
            Ok(0x1234)
        );
        gt.release(&sh, gref(10), w, false);
        assert_eq!(sh.flags(10), gtf::PERMIT_ACCESS | gtf::READING);
        gt.release(&sh, gref(10), r, true);
        assert_eq!(sh.flags(10), gtf::PERMIT_ACCESS);
        assert_eq!(gt.active(gref(10)).map(|a| a.pin), Some(0));
    }

    #[test]
    fn refused_uses_answer_as_xen() {
        let (mut gt, sh) = table();
        let w = pin::HOST_WRITE;
        // Outside the table.
        assert_eq!(
            gt.acquire(&sh, gref(512), DomId(1), w, false, true, &mut ok),
            Err(gntst::BAD_GNTREF)
        );
        // Never granted, granted to another domain, read-only for a writer, ended.
        assert_eq!(
            gt.acquire(&sh, gref(1), DomId(1), w, false, true, &mut ok),
            Err(gntst::GENERAL_ERROR)
        );
        sh.grant(2, gtf::PERMIT_ACCESS, 7, 5);
        assert_eq!(
            gt.acquire(&sh, gref(2), DomId(1), w, false, true, &mut ok),
            Err(gntst::GENERAL_ERROR)
        );
        sh.grant(3, gtf::PERMIT_ACCESS | gtf::READONLY, 1, 5);
        assert_eq!(
            gt.acquire(&sh, gref(3), DomId(1), w, false, true, &mut ok),
            Err(gntst::GENERAL_ERROR)
        );
        assert_eq!(sh.flags(3), gtf::PERMIT_ACCESS | gtf::READONLY);
        // Sub-page bit: refused for a mapping, not for a copy.
        sh.grant(4, gtf::PERMIT_ACCESS | gtf::SUB_PAGE, 1, 5);
        assert_eq!(
            gt.acquire(&sh, gref(4), DomId(1), w, false, true, &mut ok),
            Err(gntst::GENERAL_ERROR)
        );
        assert_eq!(
            gt.acquire(&sh, gref(4), DomId(1), w, false, false, &mut ok)
                .map(|u| u.mfn.raw()),
            Ok(5)
        );
        // A frame the kernel refuses: its code, and the status bits cleared again.
        sh.grant(6, gtf::PERMIT_ACCESS, 1, 5);
        let mut bad = |_: Mfn, _: bool| Err(gntst::BAD_PAGE);
        assert_eq!(
            gt.acquire(&sh, gref(6), DomId(1), w, false, true, &mut bad),
            Err(gntst::BAD_PAGE)
        );
        assert_eq!(sh.flags(6), gtf::PERMIT_ACCESS);
        assert_eq!(gt.active(gref(6)).map(|a| a.pin), Some(0));
    }

    #[test]
    fn a_pinned_entry_keeps_its_frame_and_user() {
        let (mut gt, sh) = table();
        sh.grant(8, gtf::PERMIT_ACCESS, 1, 100);
        let r = pin::HOST_READ;
        assert_eq!(
            gt.acquire(&sh, gref(8), DomId(1), r, true, true, &mut ok)
                .map(|u| u.mfn.raw()),
            Ok(100)
        );
        // The granter ends access and reuses the entry: the use goes on with frame 100.
        sh.grant(8, gtf::PERMIT_ACCESS | gtf::READING, 2, 200);
        assert_eq!(
            gt.acquire(&sh, gref(8), DomId(2), r, true, true, &mut ok),
            Err(gntst::GENERAL_ERROR)
        );
        let mut seen = 0;
        let mut record = |f: Mfn, first: bool| {
            assert!(!first);
            seen = f.raw();
            Ok(())
        };
        assert_eq!(
            gt.acquire(&sh, gref(8), DomId(1), r, true, true, &mut record)
                .map(|u| u.mfn.raw()),
            Ok(100)
        );
        assert_eq!(seen, 100);
        assert_eq!(gt.swap(&sh, gref(8), gref(9)), gntst::EAGAIN);
    }

    #[test]
    fn version_2_keeps_the_status_apart_and_sub_pages_for_copies() {
        let (mut gt, mut sh) = table();
        sh.1 = true;
        gt.set_version(2);
        assert_eq!(gt.nr_entries(), 256);
        sh.grant(10, gtf::PERMIT_ACCESS, 1, 0x1_0000_0042);
        let w = pin::HOST_WRITE;
        let u = gt
            .acquire(&sh, gref(10), DomId(1), w, false, true, &mut ok)
            .unwrap();
        assert_eq!((u.mfn.raw(), u.start, u.length), (0x1_0000_0042, 0, 4096));
        assert_eq!(sh.status(10), gtf::READING | gtf::WRITING);
        assert_eq!(sh.flags(10), gtf::PERMIT_ACCESS);
        gt.release(&sh, gref(10), w, false);
        assert_eq!(sh.status(10), 0);
        // A sub-page grant: copies only, within its window.
        sh.grant(11, gtf::PERMIT_ACCESS | gtf::SUB_PAGE, 1, 7);
        sh.0.borrow_mut()[11].3 = (256, 512);
        assert_eq!(
            gt.acquire(&sh, gref(11), DomId(1), w, false, true, &mut ok),
            Err(gntst::GENERAL_ERROR)
        );
        assert_eq!(sh.status(11), 0);
        let r = pin::HOST_READ;
        let u = gt
            .acquire(&sh, gref(11), DomId(1), r, true, false, &mut ok)
            .unwrap();
        assert_eq!((u.start, u.length), (256, 512));
        assert_eq!(
            gt.acquire(&sh, gref(11), DomId(1), r, true, true, &mut ok),
            Err(gntst::GENERAL_ERROR)
        );
        gt.release(&sh, gref(11), r, true);
        // Read-only for a writer; beyond the v2 table.
        sh.grant(12, gtf::PERMIT_ACCESS | gtf::READONLY, 1, 7);
        assert_eq!(
            gt.acquire(&sh, gref(12), DomId(1), w, false, true, &mut ok),
            Err(gntst::GENERAL_ERROR)
        );
        assert_eq!(sh.status(12), 0);
        assert_eq!(
            gt.acquire(&sh, gref(300), DomId(1), w, false, true, &mut ok)
                .map(|u| u.mfn.raw()),
            Err(gntst::BAD_GNTREF)
        );
    }

    #[test]
    fn pin_counters_stop_before_overflow() {
        let (mut gt, sh) = table();
        sh.grant(0, gtf::PERMIT_ACCESS, 0, 1);
        for _ in 0..128 {
            assert!(
                gt.acquire(&sh, gref(0), DomId(0), pin::DEV_READ, true, true, &mut ok)
                    .is_ok()
            );
        }
        assert_eq!(
            gt.acquire(&sh, gref(0), DomId(0), pin::DEV_READ, true, true, &mut ok),
            Err(gntst::GENERAL_ERROR)
        );
    }

    #[test]
    fn swapping_entries() {
        let (mut gt, sh) = table();
        sh.grant(1, gtf::PERMIT_ACCESS, 3, 11);
        assert_eq!(gt.swap(&sh, gref(1), gref(2)), gntst::OKAY);
        assert_eq!(
            (sh.flags(2), sh.frame(gref(2)), sh.flags(1)),
            (gtf::PERMIT_ACCESS, 11, 0)
        );
        assert_eq!(gt.swap(&sh, gref(1), gref(512)), gntst::BAD_GNTREF);
        assert_eq!(gt.swap(&sh, gref(5), gref(5)), gntst::OKAY);
    }

    fn mapping(flags: u32) -> Mapping<()> {
        Mapping {
            flags,
            r#ref: gref(0),
            domid: DomId(0),
            mfn: Mfn::new(0),
            granter: (),
        }
    }

    #[test]
    fn maptrack_handles_are_bounded_and_reused() {
        let mut mt = Maptrack::new(1);
        let hm = gntmap::HOST_MAP;
        for i in 0..MAPTRACK_PER_FRAME {
            assert_eq!(mt.insert(mapping(hm)), Ok(i));
        }
        assert_eq!(mt.insert(mapping(hm)), Err(gntst::NO_SPACE));
        assert_eq!(mt.get(3).map(|m| m.flags), Ok(hm));
        mt.unmapped(3, hm);
        assert_eq!(mt.get(3).map(|m| m.flags), Err(gntst::BAD_HANDLE));
        assert_eq!(mt.get(MAPTRACK_PER_FRAME), Err(gntst::BAD_HANDLE));
        assert_eq!(mt.insert(mapping(hm)), Ok(3));
        // A host and device mapping stays until both are gone.
        let both = hm | gntmap::DEVICE_MAP;
        mt.unmapped(3, hm);
        let h = mt.insert(mapping(both)).unwrap();
        mt.unmapped(h, hm);
        assert_eq!(mt.get(h).map(|m| m.flags), Ok(gntmap::DEVICE_MAP));
        mt.unmapped(h, gntmap::DEVICE_MAP);
        assert_eq!(mt.in_use(), MAPTRACK_PER_FRAME as usize - 1);
        assert_eq!(mt.take_all().len(), MAPTRACK_PER_FRAME as usize - 1);
        assert_eq!((mt.in_use(), mt.limit()), (0, 0));
    }

    #[test]
    fn ten_thousand_cycles_leave_nothing_behind() {
        let (mut gt, sh) = table();
        let mut mt = Maptrack::new(DEFAULT_MAX_MAPTRACK_FRAMES);
        sh.grant(20, gtf::PERMIT_ACCESS, 0, 77);
        for _ in 0..10_000 {
            let mfn = gt
                .acquire(
                    &sh,
                    gref(20),
                    DomId(0),
                    pin::HOST_WRITE,
                    false,
                    true,
                    &mut ok,
                )
                .unwrap()
                .mfn;
            let h = mt
                .insert(Mapping {
                    mfn,
                    ..mapping(gntmap::HOST_MAP)
                })
                .unwrap();
            mt.unmapped(h, gntmap::HOST_MAP);
            gt.release(&sh, gref(20), pin::HOST_WRITE, false);
        }
        assert_eq!((mt.in_use(), mt.limit()), (0, MAPTRACK_PER_FRAME));
        assert_eq!(sh.flags(20), gtf::PERMIT_ACCESS);
        assert!(!gt.any_in_use_from(0));
    }
}
