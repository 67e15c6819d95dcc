//! The physical frame allocator: a sorted list of free frame ranges.
//!
//! Built from the usable regions of the sanitised memory map, minus every range Hestia must not
//! hand out (its own image, the multiboot2 information, boot modules, loaded symbol tables).
//! Allocation is top-down, so low memory (needed for the AP trampoline, legacy DMA) is used last,
//! and takes an optional upper bound. Fixed capacity, no heap: it exists before the heap does.
//!
//! Invariant: `ranges[..len]` are sorted, disjoint, non-adjacent and non-empty, in frame units.

use crate::memmap::PAGE_SIZE;

/// Capacity of the free-range list.
pub const MAX_FREE_RANGES: usize = 512;

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
    /// page), ending at or below `limit` bytes. Returns the physical address of the first frame.
    pub fn alloc(&mut self, count: u64, align: u64, limit: u64) -> Result<u64, FrameError> {
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
            let taken = self.reserve(start * PAGE_SIZE, (start + count) * PAGE_SIZE)?;
            debug_assert_eq!(taken, count);
            return Ok(start * PAGE_SIZE);
        }
        Err(FrameError::OutOfMemory)
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
        let p = a.alloc(1, 4096, u64::MAX).unwrap();
        assert_eq!(p, 64 * MIB - 4096);
        let p = a.alloc(512, 2 * MIB, u64::MAX).unwrap();
        assert_eq!(p % (2 * MIB), 0);
        assert_eq!(
            p,
            60 * MIB,
            "the top frame is taken, so the highest aligned block is lower"
        );
        let low = a.alloc(1, 4096, MIB).unwrap();
        assert!((0x1000..MIB).contains(&low));
        check_invariant(&a);
    }

    #[test]
    fn alloc_exhaustion_and_free_merge() {
        let mut a = alloc_with(&[(0, 4 * 4096)]);
        let frames: Vec<u64> = (0..4)
            .map(|_| a.alloc(1, 4096, u64::MAX).unwrap())
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
                if let Ok(p) = a.alloc(n, 4096 << (x % 4), u64::MAX) {
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
            check_invariant(&a);
        }
        let in_use: u64 = held.iter().map(|h| h.1).sum();
        assert_eq!(a.free_frames() + in_use, total);
    }
}
