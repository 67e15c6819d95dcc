//! Physical memory map sanitising.
//!
//! Firmware maps (E820 through the multiboot2 memory-map tag, or the EFI memory map) may list
//! overlapping, unsorted, zero-length or unaligned ranges. [`MemoryMap::sanitize`] turns them
//! into a sorted list of disjoint ranges where a conflict always resolves toward the more
//! restrictive kind (a byte both "usable" and "reserved" is reserved), and usable ranges are
//! shrunk inward to whole 4 KiB frames. Fixed capacity, no allocation: it runs before the heap.
use alloc::vec::Vec;

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

/// One entry of the machine memory map a privileged domain reads (`XENMEM_machine_memory_map`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineEntry {
    /// First byte.
    pub addr: u64,
    /// Bytes.
    pub size: u64,
    /// What the range holds.
    pub kind: RegionKind,
    /// True for an entry of the host map, false for a reserved range added in a gap.
    pub from_host: bool,
}

/// The machine memory map as Xen 4.17 gives it to a privileged domain (`arch_memory_op`'s
/// `XENMEM_machine_memory_map`): the host map's regions, and in the gaps between them a
/// reserved entry for each run of frames the domain may not map (`permitted`: its I/O-memory
/// frame ranges, half-open and ascending) that ends where a frame it may map, or the next
/// region, begins, below the CPU's physical address limit (`frame_limit`, in frames). Linux
/// keeps those ranges out of what it hands to PCI devices.
pub fn machine_map(
    regions: &[Region],
    permitted: &[(u64, u64)],
    frame_limit: u64,
) -> Vec<MachineEntry> {
    let mut out = Vec::new();
    // The first frame not yet described (Xen's `ctxt.s`).
    let mut next = 0u64;
    for r in regions {
        let start = r.start >> 12;
        if start > next {
            gap_fill(&mut out, &mut next, permitted, start - 1, frame_limit);
            hole_until(&mut out, &mut next, start, start, frame_limit);
        }
        out.push(MachineEntry {
            addr: r.start,
            size: r.len(),
            kind: r.kind,
            from_host: true,
        });
        next = r.end.div_ceil(4096);
    }
    if next != 0 {
        gap_fill(&mut out, &mut next, permitted, u64::MAX, frame_limit);
    }
    out
}

/// Frames `start..=end` may be mapped: the run of frames from `next` up to `start`, which may
/// not, becomes a reserved entry (Xen's `_handle_iomem_range`).
fn hole_until(out: &mut Vec<MachineEntry>, next: &mut u64, start: u64, end: u64, limit: u64) {
    if start > *next && start < limit {
        out.push(MachineEntry {
            addr: *next << 12,
            size: (start - *next) << 12,
            kind: RegionKind::Reserved,
            from_host: false,
        });
    }
    *next = end.saturating_add(1);
}

/// The gap from `next` to frame `last`: each permitted range in it closes a reserved run
/// before it (Xen's `rangeset_report_ranges` over the domain's `iomem_caps`).
fn gap_fill(
    out: &mut Vec<MachineEntry>,
    next: &mut u64,
    permitted: &[(u64, u64)],
    last: u64,
    limit: u64,
) {
    let first = *next;
    for &(a, b) in permitted {
        let (lo, hi) = (a.max(first), b.saturating_sub(1).min(last));
        if b > a && lo <= hi {
            hole_until(out, next, lo, hi, limit);
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_machine_map_reserves_what_dom0_may_not_map_in_the_gaps() {
        let ram = |start, end| Region {
            start,
            end,
            kind: RegionKind::Usable,
        };
        let regions = [
            ram(0, 0x9_f000),
            ram(0x10_0000, 0x4000_0000),
            Region {
                start: 0xfffc_0000,
                end: 0x1_0000_0000,
                kind: RegionKind::Reserved,
            },
        ];
        // Everything but an IOAPIC page and the MSI window (frames), below 40 address bits.
        let permitted = [(0, 0xfec00), (0xfec01, 0xfee00), (0xfef00, 1 << 40)];
        let map = machine_map(&regions, &permitted, 1 << 28);
        let got: Vec<(u64, u64, bool)> =
            map.iter().map(|e| (e.addr, e.size, e.from_host)).collect();
        assert_eq!(
            got,
            [
                (0, 0x9_f000, true),
                (0x10_0000, 0x3ff0_0000, true),
                (0xfec0_0000, 0x1000, false),
                (0xfee0_0000, 0x10_0000, false),
                (0xfffc_0000, 0x4_0000, true),
            ]
        );
        assert!(
            map.iter()
                .filter(|e| !e.from_host)
                .all(|e| e.kind == RegionKind::Reserved)
        );
    }

    #[test]
    fn nothing_is_added_without_a_following_permitted_frame_or_region() {
        let regions = [Region {
            start: 0,
            end: 0x1000,
            kind: RegionKind::Usable,
        }];
        // Denied from 0x10 on: no permitted frame or region follows, so no entry (as Xen).
        let map = machine_map(&regions, &[(0, 0x10)], 1 << 28);
        assert_eq!(map.len(), 1);
        // A hole below a permitted range past the limit is not described either.
        let map = machine_map(&regions, &[(0, 0x10), (1 << 29, 1 << 30)], 1 << 28);
        assert_eq!(map.len(), 1);
        let map = machine_map(&regions, &[(0, 0x10), (0x20, 0x30)], 1 << 28);
        assert_eq!(map[1].addr, 0x10_000);
        assert_eq!(map[1].size, 0x10_000);
    }
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
