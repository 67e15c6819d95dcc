//! The initial virtual layout of a PV domain (the "start of day" contract of `public/xen.h`,
//! summarised in `shared/xen-abi.md` 2.2).
//!
//! From `v_start = VIRT_BASE`, PFN `i` appears at `v_start + i * 4096`. Page-aligned, in order:
//! the kernel image, the initrd (unless the kernel takes it unmapped), the P2M array, the
//! start_info page, the bootstrap page tables (read-only to the guest), one stack page, then
//! padding to a 4 MiB boundary with at least 512 KiB to spare. The number of page-table pages
//! is found by iteration, since the tables must also map themselves.

use crate::elf::PvKernel;

const PAGE: u64 = 4096;
const FOUR_MIB: u64 = 4 << 20;
const SLACK: u64 = 512 << 10;

/// A page-aligned virtual range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl VRange {
    /// Pages in the range.
    pub const fn pages(&self) -> u64 {
        (self.end - self.start) / PAGE
    }
}

/// Where everything goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvLayout {
    /// Start of the initial mapping (PFN 0).
    pub v_start: u64,
    /// End of the initial mapping.
    pub v_end: u64,
    /// The kernel image.
    pub kernel: VRange,
    /// The initrd, when mapped.
    pub initrd: Option<VRange>,
    /// The P2M array (`nr_pages` u64 entries).
    pub p2m: VRange,
    /// The start_info page.
    pub start_info: u64,
    /// The bootstrap page tables; the first page is the L4.
    pub page_tables: VRange,
    /// The boot stack page; RSP starts at its end.
    pub stack: u64,
}

impl PvLayout {
    /// The PFN of a virtual address inside the initial mapping.
    pub const fn pfn(&self, va: u64) -> u64 {
        (va - self.v_start) / PAGE
    }

    /// Pages mapped by the initial tables.
    pub const fn mapped_pages(&self) -> u64 {
        (self.v_end - self.v_start) / PAGE
    }
}

/// Why a layout is impossible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The initial mapping needs more pages than the domain has.
    TooLarge {
        /// Pages the layout needs.
        needed: u64,
        /// Pages the domain has.
        available: u64,
    },
    /// The region would cross the top of the address space or the hypervisor hole.
    BadRegion,
}

/// Page-table pages needed to map `[start, end)` with 4 KiB pages: one L4 plus one table per
/// 512 GiB, 1 GiB and 2 MiB region touched.
pub fn page_tables_needed(start: u64, end: u64) -> u64 {
    let span = |shift: u32| ((end - 1) >> shift) - (start >> shift) + 1;
    1 + span(39) + span(30) + span(21)
}

fn up(v: u64) -> Option<u64> {
    v.checked_next_multiple_of(PAGE)
}

/// Computes the layout for `kernel` in a domain of `nr_pages`, with an initrd of `initrd_len`
/// bytes mapped after the kernel when `map_initrd`.
pub fn compute(
    kernel: &PvKernel,
    nr_pages: u64,
    initrd_len: u64,
    map_initrd: bool,
) -> Result<PvLayout, LayoutError> {
    let bad = LayoutError::BadRegion;
    let v_start = kernel.virt_base & !(PAGE - 1);
    let kstart = kernel.virt_kstart & !(PAGE - 1);
    let kend = up(kernel.virt_kend).ok_or(bad)?;
    let mut cursor = kend;
    let initrd = if map_initrd && initrd_len > 0 {
        let r = VRange {
            start: cursor,
            end: up(cursor.checked_add(initrd_len).ok_or(bad)?).ok_or(bad)?,
        };
        cursor = r.end;
        Some(r)
    } else {
        None
    };
    let p2m = VRange {
        start: cursor,
        end: up(cursor
            .checked_add(nr_pages.checked_mul(8).ok_or(bad)?)
            .ok_or(bad)?)
        .ok_or(bad)?,
    };
    let start_info = p2m.end;
    let pt_start = start_info.checked_add(PAGE).ok_or(bad)?;
    let mut n_pt = 1;
    let (stack, v_end) = loop {
        let stack = pt_start.checked_add(n_pt * PAGE).ok_or(bad)?;
        let stack_end = stack.checked_add(PAGE).ok_or(bad)?;
        let mut v_end = stack_end.checked_next_multiple_of(FOUR_MIB).ok_or(bad)?;
        if v_end - stack_end < SLACK {
            v_end = v_end.checked_add(FOUR_MIB).ok_or(bad)?;
        }
        let needed = page_tables_needed(v_start, v_end);
        if needed <= n_pt {
            break (stack, v_end);
        }
        n_pt = needed;
    };
    // The whole region must stay in one half of the address space, clear of the hole.
    let hole = xen_abi::xen::HYPERVISOR_VIRT_START..xen_abi::xen::HYPERVISOR_VIRT_END;
    let lower_half_end = 1u64 << 47;
    let ok_half = v_end <= lower_half_end || v_start >= hole.end;
    if !ok_half || hole.contains(&v_start) || kstart < v_start {
        return Err(bad);
    }
    let l = PvLayout {
        v_start,
        v_end,
        kernel: VRange {
            start: kstart,
            end: kend,
        },
        initrd,
        p2m,
        start_info,
        page_tables: VRange {
            start: pt_start,
            end: pt_start + n_pt * PAGE,
        },
        stack,
    };
    if l.mapped_pages() > nr_pages {
        return Err(LayoutError::TooLarge {
            needed: l.mapped_pages(),
            available: nr_pages,
        });
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xtf() -> PvKernel {
        PvKernel {
            entry: 0x10_0000,
            virt_base: 0,
            virt_kstart: 0x10_0000,
            virt_kend: 0x11_2345,
            ..PvKernel::default()
        }
    }

    #[test]
    fn xtf_dom0_layout() {
        let l = compute(&xtf(), 16384, 0, false).unwrap();
        assert_eq!(l.v_start, 0);
        assert_eq!(
            l.kernel,
            VRange {
                start: 0x10_0000,
                end: 0x11_3000
            }
        );
        assert_eq!(
            l.p2m,
            VRange {
                start: 0x11_3000,
                end: 0x11_3000 + 32 * PAGE
            }
        );
        assert_eq!(l.start_info, l.p2m.end);
        assert_eq!(l.page_tables.start, l.start_info + PAGE);
        assert_eq!(l.stack, l.page_tables.end);
        assert_eq!(l.v_end % FOUR_MIB, 0);
        assert!(l.v_end - (l.stack + PAGE) >= SLACK);
        assert!(page_tables_needed(l.v_start, l.v_end) <= l.page_tables.pages());
        assert_eq!(l.pfn(l.kernel.start), 0x100);
    }

    #[test]
    fn linux_layout_sits_under_the_kernel_map() {
        let k = PvKernel {
            virt_base: 0xffff_ffff_8000_0000,
            virt_kstart: 0xffff_ffff_8100_0000,
            virt_kend: 0xffff_ffff_8300_0000,
            entry: 0xffff_ffff_8100_0000,
            ..PvKernel::default()
        };
        let l = compute(&k, 262_144, 20 << 20, true).unwrap();
        assert_eq!(l.initrd.unwrap().start, 0xffff_ffff_8300_0000);
        assert_eq!(l.initrd.unwrap().pages(), 5120);
        // One L4, one L3, one L2 and one L1 per 2 MiB of the region.
        assert_eq!(l.page_tables.pages(), 3 + (l.v_end - l.v_start) / (2 << 20));
    }

    #[test]
    fn too_small_a_domain_is_refused() {
        assert_eq!(
            compute(&xtf(), 256, 0, false),
            Err(LayoutError::TooLarge {
                needed: 1024,
                available: 256
            })
        );
    }

    #[test]
    fn regions_touching_the_hole_or_wrapping_are_refused() {
        let k = PvKernel {
            virt_base: 0xffff_8000_0000_0000,
            virt_kstart: 0xffff_8000_0010_0000,
            virt_kend: 0xffff_8000_0020_0000,
            ..PvKernel::default()
        };
        assert_eq!(compute(&k, 1 << 20, 0, false), Err(LayoutError::BadRegion));
        let k = PvKernel {
            virt_base: 0x7fff_ffe0_0000,
            virt_kstart: 0x7fff_fff0_0000,
            virt_kend: 0x7fff_ffff_f000,
            ..PvKernel::default()
        };
        assert_eq!(compute(&k, 1 << 20, 0, false), Err(LayoutError::BadRegion));
        let k = PvKernel {
            virt_base: 0xffff_ffff_ffc0_0000,
            virt_kstart: 0xffff_ffff_ffc0_0000,
            virt_kend: 0xffff_ffff_fff0_0000,
            ..PvKernel::default()
        };
        assert_eq!(compute(&k, 1 << 20, 0, false), Err(LayoutError::BadRegion));
    }

    #[test]
    fn page_table_count() {
        assert_eq!(page_tables_needed(0, 4 << 20), 1 + 1 + 1 + 2);
        assert_eq!(
            page_tables_needed((1 << 30) - (2 << 20), (1 << 30) + (2 << 20)),
            1 + 1 + 2 + 2
        );
    }
}
