//! Physical memory map sanitising.
//!
//! Firmware maps (E820 through the multiboot2 memory-map tag, or the EFI memory map) may list
//! overlapping, unsorted, zero-length or unaligned ranges. [`MemoryMap::sanitize`] turns them
//! into a sorted list of disjoint ranges where a conflict always resolves toward the more
//! restrictive kind (a byte both "usable" and "reserved" is reserved), and usable ranges are
//! shrunk inward to whole 4 KiB frames. Fixed capacity, no allocation: it runs before the heap.

/// Page (frame) size used throughout Hestia.
pub const PAGE_SIZE: u64 = 4096;

/// What a physical range holds, ordered from least to most restrictive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RegionKind {
    /// Free RAM.
    Usable,
    /// RAM holding ACPI tables; reclaimable after the tables are parsed (Hestia keeps it).
    AcpiReclaimable,
    /// ACPI non-volatile storage: never touch.
    AcpiNvs,
    /// Reserved by firmware or a device.
    Reserved,
    /// Defective RAM.
    Bad,
}

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What the range holds.
    pub kind: RegionKind,
}

impl Region {
    /// Length in bytes.
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True for a zero-length region.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Maximum number of regions kept after sanitising.
pub const MAX_REGIONS: usize = 256;

/// A sanitised memory map: sorted, disjoint, adjacent same-kind ranges merged.
#[derive(Clone, Debug)]
pub struct MemoryMap {
    regions: [Region; MAX_REGIONS],
    len: usize,
    /// Raw entries dropped because they were empty, wrapped around, or did not fit.
    pub dropped: usize,
}

/// Converts a firmware `(base, length)` pair into a half-open range, clamping at the top of the
/// 64-bit space. Returns `None` for zero-length entries.
pub fn range_from_base_len(base: u64, len: u64) -> Option<(u64, u64)> {
    if len == 0 {
        return None;
    }
    Some((base, base.saturating_add(len)))
}

impl MemoryMap {
    /// Sanitises raw firmware entries. Entries beyond the working capacity are counted in
    /// `dropped` rather than silently ignored.
    pub fn sanitize(raw: &[Region]) -> Self {
        const MAX_RAW: usize = MAX_REGIONS / 2;
        let mut dropped = 0;
        let mut bounds = [0u64; MAX_REGIONS];
        let mut nb = 0;
        let mut valid = [Region {
            start: 0,
            end: 0,
            kind: RegionKind::Usable,
        }; MAX_RAW];
        let mut nv = 0;
        for r in raw {
            if r.is_empty() || nv == MAX_RAW {
                dropped += 1;
                continue;
            }
            valid[nv] = *r;
            nv += 1;
            bounds[nb] = r.start;
            bounds[nb + 1] = r.end;
            nb += 2;
        }
        let bounds = &mut bounds[..nb];
        bounds.sort_unstable();

        let mut map = MemoryMap {
            regions: [Region {
                start: 0,
                end: 0,
                kind: RegionKind::Usable,
            }; MAX_REGIONS],
            len: 0,
            dropped,
        };
        for w in bounds.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a == b {
                continue;
            }
            let kind = valid[..nv]
                .iter()
                .filter(|r| r.start <= a && b <= r.end)
                .map(|r| r.kind)
                .max();
            if let Some(kind) = kind {
                map.push_merge(Region {
                    start: a,
                    end: b,
                    kind,
                });
            }
        }
        map.align_usable();
        map
    }

    fn push_merge(&mut self, r: Region) {
        if let Some(last) = self.regions[..self.len].last_mut()
            && last.end == r.start
            && last.kind == r.kind
        {
            last.end = r.end;
            return;
        }
        if self.len < MAX_REGIONS {
            self.regions[self.len] = r;
            self.len += 1;
        } else {
            self.dropped += 1;
        }
    }

    /// Shrinks usable regions to whole frames; slivers that vanish are removed.
    fn align_usable(&mut self) {
        let mut out = 0;
        for i in 0..self.len {
            let mut r = self.regions[i];
            if r.kind == RegionKind::Usable {
                r.start = r.start.div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE);
                r.end &= !(PAGE_SIZE - 1);
                if r.is_empty() {
                    continue;
                }
            }
            self.regions[out] = r;
            out += 1;
        }
        self.len = out;
    }

    /// The sanitised regions.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Usable regions only.
    pub fn usable(&self) -> impl Iterator<Item = &Region> {
        self.regions()
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
    }

    /// Total usable RAM in bytes.
    pub fn usable_bytes(&self) -> u64 {
        self.usable().map(Region::len).sum()
    }

    /// One past the highest byte of any RAM-like region (usable or ACPI), for sizing the direct map.
    pub fn top_of_ram(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| {
                matches!(
                    r.kind,
                    RegionKind::Usable | RegionKind::AcpiReclaimable | RegionKind::AcpiNvs
                )
            })
            .map(|r| r.end)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::RegionKind::*;
    use super::*;

    fn r(start: u64, end: u64, kind: RegionKind) -> Region {
        Region { start, end, kind }
    }

    #[test]
    fn sorts_and_merges() {
        let m = MemoryMap::sanitize(&[
            r(0x10_0000, 0x20_0000, Usable),
            r(0, 0x9f000, Usable),
            r(0x20_0000, 0x30_0000, Usable),
        ]);
        assert_eq!(
            m.regions(),
            &[r(0, 0x9f000, Usable), r(0x10_0000, 0x30_0000, Usable)]
        );
        assert_eq!(m.usable_bytes(), 0x9f000 + 0x20_0000);
    }

    #[test]
    fn overlap_resolves_to_the_restrictive_kind() {
        let m = MemoryMap::sanitize(&[
            r(0, 0x10_0000, Usable),
            r(0x8000, 0x9000, Reserved),
            r(0xf_0000, 0x11_0000, AcpiNvs),
        ]);
        assert_eq!(
            m.regions(),
            &[
                r(0, 0x8000, Usable),
                r(0x8000, 0x9000, Reserved),
                r(0x9000, 0xf_0000, Usable),
                r(0xf_0000, 0x11_0000, AcpiNvs)
            ]
        );
    }

    #[test]
    fn usable_ranges_shrink_to_whole_frames() {
        let m = MemoryMap::sanitize(&[
            r(0x1234, 0x5678, Usable),
            r(0x10_0010, 0x10_0ff0, Usable),
            r(0x9_0001, 0x9_0002, Reserved),
        ]);
        assert_eq!(
            m.regions(),
            &[r(0x2000, 0x5000, Usable), r(0x9_0001, 0x9_0002, Reserved)]
        );
    }

    #[test]
    fn empty_and_wrapping_entries_are_dropped() {
        let m = MemoryMap::sanitize(&[r(5, 5, Usable), r(10, 2, Usable), r(0, 0x2000, Usable)]);
        assert_eq!(m.dropped, 2);
        assert_eq!(m.regions(), &[r(0, 0x2000, Usable)]);
    }

    #[test]
    fn base_len_clamps_at_the_top() {
        assert_eq!(
            range_from_base_len(u64::MAX - 10, 100),
            Some((u64::MAX - 10, u64::MAX))
        );
        assert_eq!(range_from_base_len(7, 0), None);
    }

    #[test]
    fn top_of_ram_ignores_reserved() {
        let m = MemoryMap::sanitize(&[
            r(0, 0x8000_0000, Usable),
            r(0xfec0_0000, 0xfec0_1000, Reserved),
        ]);
        assert_eq!(m.top_of_ram(), 0x8000_0000);
    }

    #[test]
    fn too_many_entries_are_counted() {
        let raw: std::vec::Vec<Region> = (0..300u64)
            .map(|i| r(i * 0x2000, i * 0x2000 + 0x1000, Usable))
            .collect();
        let m = MemoryMap::sanitize(&raw);
        assert!(m.dropped > 0);
        assert!(m.regions().len() <= MAX_REGIONS);
    }
}
