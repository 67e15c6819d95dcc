//! The initial virtual layout of a PV domain (the "start of day" contract of `public/xen.h`,
//! summarised in `shared/xen-abi.md` 2.2).
//!
//! From `v_start = VIRT_BASE`, PFN `i` appears at `v_start + i * 4096`. Page-aligned, in order:
//! the kernel image, the initrd (unless the kernel takes it unmapped), the P2M array (unless
//! the kernel asks for it elsewhere with `INIT_P2M`), the start_info page, the bootstrap page
//! tables (read-only to the guest), one stack page, then padding to a 4 MiB boundary with at
//! least 512 KiB to spare. The number of page-table pages is found by iteration, since the
//! tables must also map themselves.
//!
//! After the initial mapping's PFNs come, unmapped: the initrd when the kernel takes it by PFN
//! (`MOD_START_PFN`), then, with `INIT_P2M`, the P2M's frames followed by the page tables that
//! map them at the requested address (`start_info.first_p2m_pfn`/`nr_p2m_frames` name both:
//! Linux maps them read-only and frees them once it has moved its P2M). Keeping a large P2M out
//! of the kernel's mapping is what the note is for, and it keeps the initial mapping ending
//! where Linux's clean-up of it expects.

use crate::elf::PvKernel;
use crate::ids::Gfn;

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
    /// The initrd's PFNs when the kernel takes it unmapped.
    pub initrd_pfns: Option<PfnRange>,
    /// With `INIT_P2M`: the P2M's frames (`p2m.pages()` of them) followed by the page tables
    /// mapping them, outside the initial mapping.
    pub p2m_frames: Option<PfnRange>,
}

/// A run of PFNs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfnRange {
    /// The first PFN.
    pub first: Gfn,
    /// How many.
    pub pages: u64,
}

impl PvLayout {
    /// The PFN of a virtual address inside the initial mapping.
    pub const fn pfn(&self, va: u64) -> Gfn {
        Gfn::new((va - self.v_start) / PAGE)
    }

    /// Pages mapped by the initial tables.
    pub const fn mapped_pages(&self) -> u64 {
        (self.v_end - self.v_start) / PAGE
    }

    /// Pages the layout uses in all: the initial mapping and what follows it.
    pub fn used_pages(&self) -> u64 {
        [self.initrd_pfns, self.p2m_frames]
            .iter()
            .flatten()
            .map(|r| (r.first + r.pages).raw())
            .fold(self.mapped_pages(), u64::max)
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
    let p2m_bytes = nr_pages.checked_mul(8).ok_or(bad)?;
    let (p2m, p2m_inline) = match kernel.init_p2m {
        Some(base) => {
            let end = base.checked_add(p2m_bytes).and_then(up).ok_or(bad)?;
            (VRange { start: base, end }, false)
        }
        None => {
            let end = cursor.checked_add(p2m_bytes).and_then(up).ok_or(bad)?;
            let r = VRange { start: cursor, end };
            cursor = end;
            (r, true)
        }
    };
    let start_info = cursor;
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
    let in_one_half = |start: u64, end: u64| {
        let hole = xen_abi::xen::HYPERVISOR_VIRT_START..xen_abi::xen::HYPERVISOR_VIRT_END;
        let ok_half = end <= 1u64 << 47 || start >= hole.end;
        ok_half && !hole.contains(&start)
    };
    if !in_one_half(v_start, v_end) || kstart < v_start {
        return Err(bad);
    }
    let mapped_pages = (v_end - v_start) / PAGE;
    let initrd_pfns = (!map_initrd && initrd_len > 0).then(|| PfnRange {
        first: Gfn::new(mapped_pages),
        pages: initrd_len.div_ceil(PAGE),
    });
    let p2m_frames = if p2m_inline {
        None
    } else {
        // Its own L4 slots (so its tables share nothing with the initial mapping's), page
        // aligned, in guest space.
        let slot = |va: u64| (va >> 39) & 511;
        let own_slots = slot(p2m.end - 1) < slot(v_start) || slot(p2m.start) > slot(v_end - 1);
        if !p2m.start.is_multiple_of(PAGE) || !own_slots || !in_one_half(p2m.start, p2m.end) {
            return Err(bad);
        }
        Some(PfnRange {
            first: initrd_pfns.map_or(Gfn::new(mapped_pages), |r| r.first + r.pages),
            pages: p2m.pages() + page_tables_needed(p2m.start, p2m.end) - 1,
        })
    };
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
        initrd_pfns,
        p2m_frames,
    };
    if l.used_pages() > nr_pages {
        return Err(LayoutError::TooLarge {
            needed: l.used_pages(),
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
        assert_eq!(l.pfn(l.kernel.start), Gfn::new(0x100));
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
    fn linux_init_p2m_goes_outside_the_kernel_map() {
        // Linux's notes: INIT_P2M at 512 GiB, MOD_START_PFN.
        let k = PvKernel {
            virt_base: 0xffff_ffff_8000_0000,
            virt_kstart: 0xffff_ffff_8100_0000,
            virt_kend: 0xffff_ffff_84a0_0000,
            entry: 0xffff_ffff_8307_91c0,
            init_p2m: Some(1 << 39),
            mod_start_pfn: true,
            ..PvKernel::default()
        };
        let nr = 237_613;
        let l = compute(&k, nr, 2 << 20, false).unwrap();
        assert_eq!(
            l.start_info, 0xffff_ffff_84a0_0000,
            "start_info right after the kernel"
        );
        assert_eq!(
            l.v_end, 0xffff_ffff_84c0_0000,
            "ends at the next 4 MiB boundary"
        );
        // Linux cleans its initial mapping up to pt_end rounded up to 4 MiB: all of it.
        assert!(l.page_tables.end.next_multiple_of(FOUR_MIB) >= l.v_end);
        let initrd = l.initrd_pfns.unwrap();
        assert_eq!(
            (initrd.first, initrd.pages),
            (Gfn::new(l.mapped_pages()), 512)
        );
        let p2m = l.p2m_frames.unwrap();
        assert_eq!(p2m.first, initrd.first + initrd.pages);
        assert_eq!(l.p2m.start, 1 << 39);
        let data = (nr * 8).div_ceil(PAGE);
        assert_eq!(l.p2m.pages(), data);
        // One L3, one L2, one L1 per 2 MiB of P2M (the L4 is the initial one).
        assert_eq!(p2m.pages, data + 1 + 1 + data.div_ceil(512));
        assert_eq!(l.used_pages(), (p2m.first + p2m.pages).raw());
        // A P2M inside the initial mapping's slot is refused.
        let clash = PvKernel {
            init_p2m: Some(0xffff_ffff_c000_0000),
            ..k
        };
        assert_eq!(compute(&clash, nr, 0, false), Err(LayoutError::BadRegion));
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
