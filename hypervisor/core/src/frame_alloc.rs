//! The physical frame allocator: a sorted list of free frame ranges.
//!
//! Built from the usable regions of the sanitised memory map, minus every range Hestia must not
//! hand out (its own image, the multiboot2 information, boot modules, loaded symbol tables).
//! Allocation is top-down, so low memory (needed for the AP trampoline, legacy DMA) is used last,
//! and takes an optional upper bound. Fixed capacity, no heap: it exists before the heap does.
//!
//! Scrubbing (Xen's `PGC_need_scrub`, xen/common/page_alloc.c): a free frame is either *clean*
//! (known to hold zeroes) or *dirty* (it may hold a previous owner's data). The allocator keeps
//! the clean ones in a second list, `clean`; every other free frame is dirty: the memory found
//! at boot, boot modules given back, and every frame freed (a dead domain's memory goes back at
//! once, unscrubbed, and so counts as free at once, as in Xen, where dirty pages count in
//! `total_avail_pages`). [`FrameAllocator::alloc`] says which part of what it hands out is
//! dirty ([`Allocation::dirty`]): the caller must zero that part before anything else sees
//! it. An idle CPU makes dirty frames clean in small steps ([`FrameAllocator::dirty_run`],
//! then [`FrameAllocator::mark_clean`] once it zeroed them, under the same lock), top-down
//! like allocation, so the next allocation finds clean frames.
//!
//! Forgetting that a frame is clean is always safe (it is only zeroed again), so the clean
//! list never fails an operation: when it is full, a clean range that would have to be split
//! or added is dropped (made dirty) instead. Xen is laxer about what it scrubs (a live
//! domain's freed pages are not); here every freed frame is dirty.
//!
//! Invariants: `ranges[..len]` are sorted, disjoint, non-adjacent and non-empty, in frame
//! units; so are `clean[..clean_len]`, and each clean range lies inside one free range.

use crate::memmap::PAGE_SIZE;

/// Capacity of the free-range list.
pub const MAX_FREE_RANGES: usize = 512;
/// Capacity of the clean-range list.
pub const MAX_CLEAN_RANGES: usize = 512;

/// Frames just allocated: where they start, and which of them may hold old data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Physical address of the first frame.
    pub addr: u64,
    /// The frames, as a byte range, that the caller must zero before use (every dirty frame
    /// of the allocation lies inside; clean ones may too); empty if all were clean.
    pub dirty: core::ops::Range<u64>,
}

/// A range of free frames `[start, end)`, in frame numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameRange {
    start: u64,
    end: u64,
}

/// Why a frame operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free block of the requested size, alignment and bound.
    OutOfMemory,
    /// The free list is full; the frames were not freed (they leak but stay safe).
    ListFull,
    /// The frames to free are (partly) free already: a double free.
    DoubleFree,
    /// Address not frame-aligned or count zero.
    BadArgument,
}

/// The allocator. See the module documentation.
#[derive(Clone, Debug)]
pub struct FrameAllocator {
    ranges: [FrameRange; MAX_FREE_RANGES],
    len: usize,
    total_frames: u64,
    clean: [FrameRange; MAX_CLEAN_RANGES],
    clean_len: usize,
}

impl Default for FrameAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAllocator {
    /// An allocator with no memory.
    pub const fn new() -> Self {
        Self {
            ranges: [FrameRange { start: 0, end: 0 }; MAX_FREE_RANGES],
            len: 0,
            total_frames: 0,
            clean: [FrameRange { start: 0, end: 0 }; MAX_CLEAN_RANGES],
            clean_len: 0,
        }
    }

    /// Adds a usable byte range (already frame-aligned by the memory map). Ranges must be added
    /// in ascending, non-overlapping order, as `MemoryMap::usable` yields them.
    pub fn add_usable(&mut self, start: u64, end: u64) -> Result<(), FrameError> {
        let (s, e) = (start.div_ceil(PAGE_SIZE), end / PAGE_SIZE);
        if s >= e {
            return Ok(());
        }
        self.insert(FrameRange { start: s, end: e })?;
        self.total_frames += e - s;
        Ok(())
    }

    /// Removes a byte range from the free list (any overlap), widening it to whole frames.
    /// Parts that are not free are ignored. Returns how many frames were taken out.
    pub fn reserve(&mut self, start: u64, end: u64) -> Result<u64, FrameError> {
        let (s, e) = (start / PAGE_SIZE, end.div_ceil(PAGE_SIZE));
        self.forget_clean(s, e);
        let mut taken = 0;
        let mut i = 0;
        while i < self.len {
            let r = self.ranges[i];
            if r.end <= s || r.start >= e {
                i += 1;
                continue;
            }
            let (lo, hi) = (r.start.max(s), r.end.min(e));
            taken += hi - lo;
            match (r.start < lo, hi < r.end) {
                (false, false) => {
                    self.remove_at(i);
                    continue;
                }
                (true, false) => self.ranges[i].end = lo,
                (false, true) => self.ranges[i].start = hi,
                (true, true) => {
                    if self.len == MAX_FREE_RANGES {
                        return Err(FrameError::ListFull);
                    }
                    self.ranges[i].end = lo;
                    self.insert_at(
                        i + 1,
                        FrameRange {
                            start: hi,
                            end: r.end,
                        },
                    )?;
                }
            }
            i += 1;
        }
        self.total_frames -= taken;
        Ok(taken)
    }

    /// Allocates `count` contiguous frames aligned to `align` bytes (a power of two, at least a
    /// page), ending at or below `limit` bytes: where they start, and which part the caller
    /// must zero.
    pub fn alloc(&mut self, count: u64, align: u64, limit: u64) -> Result<Allocation, FrameError> {
        if count == 0 || !align.is_power_of_two() {
            return Err(FrameError::BadArgument);
        }
        let align_frames = (align / PAGE_SIZE).max(1);
        let limit_frame = limit / PAGE_SIZE;
        for i in (0..self.len).rev() {
            let r = self.ranges[i];
            let top = r.end.min(limit_frame);
            let Some(start) = top.checked_sub(count) else {
                continue;
            };
            let start = start / align_frames * align_frames;
            if start < r.start || start >= top {
                continue;
            }
            let end = start + count;
            let dirty = self.dirty_span(start, end);
            let taken = self.reserve(start * PAGE_SIZE, end * PAGE_SIZE)?;
            debug_assert_eq!(taken, count);
            return Ok(Allocation {
                addr: start * PAGE_SIZE,
                dirty: dirty.start * PAGE_SIZE..dirty.end * PAGE_SIZE,
            });
        }
        Err(FrameError::OutOfMemory)
    }

    /// The smallest frame range holding every frame of `[s, e)` that is not clean (empty if
    /// none is).
    fn dirty_span(&self, s: u64, e: u64) -> core::ops::Range<u64> {
        let (mut lo, mut hi) = (s, e);
        for c in &self.clean[..self.clean_len] {
            if c.start <= lo && lo < c.end {
                lo = c.end.min(e);
            }
            if c.start < hi && hi <= c.end {
                hi = c.start.max(s);
            }
        }
        if lo >= hi { s..s } else { lo..hi }
    }

    /// The highest run of dirty free frames, at most `max` frames long, as a byte range (for
    /// the scrubber, which zeroes it and calls [`Self::mark_clean`] without releasing the lock
    /// in between); `None` if every free frame is clean.
    pub fn dirty_run(&self, max: u64) -> Option<core::ops::Range<u64>> {
        let mut c = self.clean_len;
        for r in self.ranges[..self.len].iter().rev() {
            let mut top = r.end;
            // Clean ranges inside `r`, from the highest down, hide its frames from the top.
            while c > 0 && self.clean[c - 1].start >= r.start {
                let cl = self.clean[c - 1];
                if cl.end < top {
                    break;
                }
                top = top.min(cl.start);
                c -= 1;
            }
            if top > r.start {
                let bottom = if c > 0 && self.clean[c - 1].start >= r.start {
                    self.clean[c - 1].end
                } else {
                    r.start
                };
                let s = bottom.max(top.saturating_sub(max.max(1)));
                return Some(s * PAGE_SIZE..top * PAGE_SIZE);
            }
        }
        None
    }

    /// Records that the free frames `[start, end)` (bytes, frame-aligned) hold zeroes now. A
    /// range not wholly free is refused (false); so is one the clean list has no room for
    /// (the frames just stay dirty).
    pub fn mark_clean(&mut self, start: u64, end: u64) -> bool {
        let (s, e) = (start / PAGE_SIZE, end / PAGE_SIZE);
        if s >= e || !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
            return false;
        }
        let i = self.ranges[..self.len].partition_point(|x| x.end <= s);
        if i >= self.len || self.ranges[i].start > s || self.ranges[i].end < e {
            return false;
        }
        self.forget_clean(s, e);
        let j = self.clean[..self.clean_len].partition_point(|x| x.end < s);
        let merge_prev = j < self.clean_len && self.clean[j].end == s;
        let next = if merge_prev { j + 1 } else { j };
        let merge_next = next < self.clean_len && self.clean[next].start == e;
        match (merge_prev, merge_next) {
            (true, true) => {
                self.clean[j].end = self.clean[next].end;
                self.clean.copy_within(next + 1..self.clean_len, next);
                self.clean_len -= 1;
            }
            (true, false) => self.clean[j].end = e,
            (false, true) => self.clean[next].start = s,
            (false, false) => {
                if self.clean_len == MAX_CLEAN_RANGES {
                    return false;
                }
                self.clean.copy_within(j..self.clean_len, j + 1);
                self.clean[j] = FrameRange { start: s, end: e };
                self.clean_len += 1;
            }
        }
        true
    }

    /// Takes `[s, e)` (frames) out of the clean list; a clean range it would split, with the
    /// list full, loses its lower part too (it becomes dirty, which is safe).
    fn forget_clean(&mut self, s: u64, e: u64) {
        let mut i = 0;
        while i < self.clean_len {
            let c = self.clean[i];
            if c.end <= s || c.start >= e {
                i += 1;
                continue;
            }
            match (c.start < s, e < c.end) {
                (false, false) => {
                    self.clean.copy_within(i + 1..self.clean_len, i);
                    self.clean_len -= 1;
                    continue;
                }
                (true, false) => self.clean[i].end = s,
                (false, true) => self.clean[i].start = e,
                (true, true) => {
                    self.clean[i].start = e;
                    if self.clean_len < MAX_CLEAN_RANGES {
                        self.clean.copy_within(i..self.clean_len, i + 1);
                        self.clean[i] = FrameRange {
                            start: c.start,
                            end: s,
                        };
                        self.clean_len += 1;
                        i += 1;
                    }
                }
            }
            i += 1;
        }
    }

    /// Returns `count` frames starting at `addr` to the free list.
    pub fn free(&mut self, addr: u64, count: u64) -> Result<(), FrameError> {
        if count == 0 || !addr.is_multiple_of(PAGE_SIZE) {
            return Err(FrameError::BadArgument);
        }
        let s = addr / PAGE_SIZE;
        let r = FrameRange {
            start: s,
            end: s.checked_add(count).ok_or(FrameError::BadArgument)?,
        };
        self.insert(r)?;
        self.total_frames += count;
        Ok(())
    }

    /// Returns the whole frames inside the byte range `[start, end)` (reserved before, e.g. a
    /// boot module no longer needed) to the free list, except every frame that any byte
    /// range of `keep` touches (what stays reserved: Hestia's image, the multiboot2
    /// information, symbol tables). A frame only partly inside `[start, end)` stays reserved
    /// too: it may hold the neighbour's bytes. Returns how many frames were freed; on an error
    /// the frames freed until then stay free.
    pub fn release(
        &mut self,
        start: u64,
        end: u64,
        keep: &[(u64, u64)],
    ) -> Result<u64, FrameError> {
        let (mut s, e) = (start.div_ceil(PAGE_SIZE), end / PAGE_SIZE);
        let mut freed = 0;
        while s < e {
            // The lowest kept range (in whole frames) that overlaps what is left.
            let blocker = keep
                .iter()
                .map(|&(ks, ke)| (ks / PAGE_SIZE, ke.div_ceil(PAGE_SIZE)))
                .filter(|&(ks, ke)| ks < e && ke > s)
                .min_by_key(|&(ks, _)| ks);
            let stop = blocker.map_or(e, |(ks, _)| ks.max(s));
            if stop > s {
                self.free(s * PAGE_SIZE, stop - s)?;
                freed += stop - s;
            }
            match blocker {
                Some((_, ke)) => s = ke,
                None => break,
            }
        }
        Ok(freed)
    }

    /// Number of free frames.
    pub fn free_frames(&self) -> u64 {
        self.ranges[..self.len]
            .iter()
            .map(|r| r.end - r.start)
            .sum()
    }

    /// Number of free frames that may hold old data (Xen's `node_need_scrub`): free frames
    /// less the clean ones.
    pub fn dirty_frames(&self) -> u64 {
        let clean: u64 = self.clean[..self.clean_len]
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        self.free_frames() - clean
    }

    /// Number of frames ever added and not reserved (free plus allocated).
    pub fn managed_frames(&self) -> u64 {
        self.total_frames
    }

    /// Iterates over the free byte ranges.
    pub fn free_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges[..self.len]
            .iter()
            .map(|r| (r.start * PAGE_SIZE, r.end * PAGE_SIZE))
    }

    fn insert(&mut self, r: FrameRange) -> Result<(), FrameError> {
        let i = self.ranges[..self.len].partition_point(|x| x.end <= r.start);
        if i < self.len && self.ranges[i].start < r.end {
            return Err(FrameError::DoubleFree);
        }
        let merge_prev = i > 0 && self.ranges[i - 1].end == r.start;
        let merge_next = i < self.len && self.ranges[i].start == r.end;
        match (merge_prev, merge_next) {
            (true, true) => {
                self.ranges[i - 1].end = self.ranges[i].end;
                self.remove_at(i);
            }
            (true, false) => self.ranges[i - 1].end = r.end,
            (false, true) => self.ranges[i].start = r.start,
            (false, false) => self.insert_at(i, r)?,
        }
        Ok(())
    }

    fn insert_at(&mut self, i: usize, r: FrameRange) -> Result<(), FrameError> {
        if self.len == MAX_FREE_RANGES {
            return Err(FrameError::ListFull);
        }
        self.ranges.copy_within(i..self.len, i + 1);
        self.ranges[i] = r;
        self.len += 1;
        Ok(())
    }

    fn remove_at(&mut self, i: usize) {
        self.ranges.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const MIB: u64 = 1 << 20;

    fn alloc_with(ranges: &[(u64, u64)]) -> FrameAllocator {
        let mut a = FrameAllocator::new();
        for &(s, e) in ranges {
            a.add_usable(s, e).unwrap();
        }
        a
    }

    fn check_invariant(a: &FrameAllocator) {
        let r: Vec<_> = a.free_ranges().collect();
        for w in r.windows(2) {
            assert!(
                w[0].1 < w[1].0,
                "ranges sorted, disjoint, not adjacent: {r:x?}"
            );
        }
        assert!(r.iter().all(|(s, e)| s < e));
        let c = &a.clean[..a.clean_len];
        for w in c.windows(2) {
            assert!(w[0].end < w[1].start, "clean sorted, disjoint: {c:x?}");
        }
        for cl in c {
            assert!(cl.start < cl.end);
            assert!(
                r.iter()
                    .any(|&(s, e)| s <= cl.start * PAGE_SIZE && cl.end * PAGE_SIZE <= e),
                "clean {cl:x?} inside one free range {r:x?}"
            );
        }
    }

    /// Scrubs every dirty frame as an idle CPU would, `step` frames at a time.
    fn scrub_all(a: &mut FrameAllocator, step: u64) {
        while let Some(r) = a.dirty_run(step) {
            assert!(r.end - r.start <= step * PAGE_SIZE);
            assert!(a.mark_clean(r.start, r.end));
            check_invariant(a);
        }
        assert_eq!(a.dirty_frames(), 0);
    }

    #[test]
    fn memory_found_at_boot_and_freed_is_dirty() {
        let mut a = alloc_with(&[(0, MIB)]);
        assert_eq!(a.dirty_frames(), 256);
        let x = a.alloc(4, 4096, u64::MAX).unwrap();
        assert_eq!(x.dirty, x.addr..x.addr + 4 * 4096);
        scrub_all(&mut a, 7);
        let y = a.alloc(4, 4096, u64::MAX).unwrap();
        assert!(y.dirty.is_empty(), "scrubbed frames need no zeroing");
        // Freed frames are dirty again, but count as free at once.
        let free = a.free_frames();
        a.free(x.addr, 4).unwrap();
        assert_eq!((a.free_frames(), a.dirty_frames()), (free + 4, 4));
        let z = a.alloc(4, 4096, u64::MAX).unwrap();
        assert_eq!(
            (z.addr, z.dirty.clone()),
            (x.addr, x.addr..x.addr + 4 * 4096)
        );
        // Given back by a boot module: dirty too.
        a.reserve(0, 8192).unwrap();
        a.release(0, 8192, &[]).unwrap();
        assert_eq!(a.dirty_frames(), 2);
        check_invariant(&a);
    }

    #[test]
    fn scrubbing_is_top_down_and_a_partly_dirty_allocation_zeroes_a_span() {
        let mut a = alloc_with(&[(0, MIB)]);
        // The top 3 frames scrubbed: the next 4-frame allocation has one dirty frame.
        let r = a.dirty_run(3).unwrap();
        assert_eq!(r, MIB - 3 * 4096..MIB);
        assert!(a.mark_clean(r.start, r.end));
        let x = a.alloc(4, 4096, u64::MAX).unwrap();
        assert_eq!(
            (x.addr, x.dirty),
            (MIB - 4 * 4096, MIB - 4 * 4096..MIB - 3 * 4096)
        );
        // A clean hole in the middle: the span covers it (zeroed again, safely).
        assert!(a.mark_clean(MIB - 10 * 4096, MIB - 8 * 4096));
        let y = a.alloc(4, 4096, u64::MAX).unwrap();
        assert_eq!(y.dirty, MIB - 8 * 4096..MIB - 4 * 4096);
        let z = a.alloc(4, 4096, u64::MAX).unwrap();
        assert_eq!(z.dirty, MIB - 12 * 4096..MIB - 10 * 4096);
        check_invariant(&a);
    }

    #[test]
    fn mark_clean_refuses_frames_not_free() {
        let mut a = alloc_with(&[(0, MIB)]);
        let x = a.alloc(1, 4096, u64::MAX).unwrap();
        assert!(!a.mark_clean(x.addr, x.addr + 4096));
        assert!(!a.mark_clean(x.addr - 4096, x.addr + 4096));
        assert!(!a.mark_clean(0, 0));
        assert!(!a.mark_clean(1, 4097));
        assert!(a.mark_clean(0, 4096));
        assert_eq!(a.dirty_frames(), 254);
    }

    #[test]
    fn a_full_clean_list_forgets_rather_than_fails() {
        let n = (MAX_CLEAN_RANGES as u64 + 8) * 2;
        let mut a = alloc_with(&[(0, n * PAGE_SIZE)]);
        // Every other frame clean: more clean ranges than the list holds.
        let marked = (0..n / 2)
            .filter(|i| a.mark_clean(2 * i * PAGE_SIZE, (2 * i + 1) * PAGE_SIZE))
            .count();
        assert_eq!(marked, MAX_CLEAN_RANGES);
        check_invariant(&a);
        // Splitting clean ranges with the list full still works, forgetting some.
        for i in 0..8 {
            a.reserve((4 * i + 1) * PAGE_SIZE, (4 * i + 3) * PAGE_SIZE)
                .unwrap();
            check_invariant(&a);
        }
        scrub_all(&mut a, 64);
        assert!(a.alloc(1, 4096, u64::MAX).unwrap().dirty.is_empty());
    }

    #[test]
    fn release_frees_whole_frames_around_kept_ranges() {
        let mut a = alloc_with(&[(0, 16 * MIB)]);
        // A module from 1 MiB + 100 to 2 MiB + 10 bytes; the MBI in the middle of it.
        let (ms, me) = (MIB + 100, 2 * MIB + 10);
        a.reserve(ms, me).unwrap();
        let before = a.free_frames();
        let mbi = (MIB + 0x8010, MIB + 0x8020);
        let freed = a.release(ms, me, &[(0, 0x1000), mbi]).unwrap();
        // 256 frames were reserved (257 with the partial ones): the two partial frames at the
        // ends and the MBI's frame stay reserved.
        assert_eq!(freed, 257 - 2 - 1);
        assert_eq!(a.free_frames(), before + freed);
        check_invariant(&a);
        let free: Vec<_> = a.free_ranges().collect();
        assert!(
            free.iter()
                .all(|&(s, e)| e <= mbi.0 & !0xfff || s >= mbi.1.div_ceil(0x1000) * 0x1000)
        );
        // Releasing again is a double free, refused.
        assert_eq!(a.release(ms, me, &[]), Err(FrameError::DoubleFree));
    }

    #[test]
    fn release_of_a_kept_or_tiny_range_frees_nothing() {
        let mut a = alloc_with(&[(0, 16 * MIB)]);
        a.reserve(4 * MIB, 5 * MIB).unwrap();
        let before = a.free_frames();
        assert_eq!(a.release(4 * MIB, 5 * MIB, &[(3 * MIB, 6 * MIB)]), Ok(0));
        assert_eq!(a.release(4 * MIB + 1, 4 * MIB + 4000, &[]), Ok(0));
        assert_eq!(a.free_frames(), before);
        // A kept range covering the start only: the rest goes.
        assert_eq!(a.release(4 * MIB, 5 * MIB, &[(0, 4 * MIB + 1)]), Ok(255));
    }

    #[test]
    fn reserve_splits_and_trims() {
        let mut a = alloc_with(&[(0, 16 * MIB)]);
        assert_eq!(a.reserve(2 * MIB, 3 * MIB + 1).unwrap(), 257);
        assert_eq!(
            a.free_ranges().collect::<Vec<_>>(),
            [(0, 2 * MIB), (3 * MIB + 4096, 16 * MIB)]
        );
        assert_eq!(a.reserve(15 * MIB, 20 * MIB).unwrap(), 256);
        assert_eq!(a.reserve(0, 4096).unwrap(), 1);
        assert_eq!(
            a.reserve(0, 4096).unwrap(),
            0,
            "reserving a non-free range takes nothing"
        );
        check_invariant(&a);
        assert_eq!(a.managed_frames(), a.free_frames());
    }

    #[test]
    fn alloc_is_top_down_aligned_and_bounded() {
        let mut a = alloc_with(&[(0x1000, 0xa0000), (MIB, 64 * MIB)]);
        let p = a.alloc(1, 4096, u64::MAX).unwrap().addr;
        assert_eq!(p, 64 * MIB - 4096);
        let p = a.alloc(512, 2 * MIB, u64::MAX).unwrap().addr;
        assert_eq!(p % (2 * MIB), 0);
        assert_eq!(
            p,
            60 * MIB,
            "the top frame is taken, so the highest aligned block is lower"
        );
        let low = a.alloc(1, 4096, MIB).unwrap().addr;
        assert!((0x1000..MIB).contains(&low));
        check_invariant(&a);
    }

    #[test]
    fn alloc_exhaustion_and_free_merge() {
        let mut a = alloc_with(&[(0, 4 * 4096)]);
        let frames: Vec<u64> = (0..4)
            .map(|_| a.alloc(1, 4096, u64::MAX).unwrap().addr)
            .collect();
        assert_eq!(a.alloc(1, 4096, u64::MAX), Err(FrameError::OutOfMemory));
        for f in &frames {
            a.free(*f, 1).unwrap();
        }
        assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(0, 4 * 4096)]);
        assert_eq!(a.free(0, 1), Err(FrameError::DoubleFree));
        assert_eq!(a.free(7, 1), Err(FrameError::BadArgument));
        assert_eq!(a.alloc(0, 4096, u64::MAX), Err(FrameError::BadArgument));
    }

    #[test]
    fn alloc_respects_limit_below_every_range() {
        let mut a = alloc_with(&[(16 * MIB, 32 * MIB)]);
        assert_eq!(a.alloc(1, 4096, MIB), Err(FrameError::OutOfMemory));
    }

    #[test]
    fn pseudo_random_alloc_free_keeps_invariants() {
        let mut a = alloc_with(&[(0, 8 * MIB), (16 * MIB, 24 * MIB)]);
        let total = a.free_frames();
        let mut held: Vec<(u64, u64)> = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if !x.is_multiple_of(3) || held.is_empty() {
                let n = 1 + x % 17;
                if let Ok(Allocation { addr: p, .. }) = a.alloc(n, 4096 << (x % 4), u64::MAX) {
                    assert!(
                        held.iter()
                            .all(|&(s, c)| p + n * 4096 <= s || s + c * 4096 <= p),
                        "no overlap"
                    );
                    held.push((p, n));
                }
            } else {
                let (p, n) = held.swap_remove((x as usize / 3) % held.len());
                a.free(p, n).unwrap();
            }
            if x.is_multiple_of(7)
                && let Some(r) = a.dirty_run(1 + x % 5)
            {
                assert!(a.mark_clean(r.start, r.end));
            }
            check_invariant(&a);
        }
        let in_use: u64 = held.iter().map(|h| h.1).sum();
        assert_eq!(a.free_frames() + in_use, total);
        scrub_all(&mut a, 16);
    }
}
