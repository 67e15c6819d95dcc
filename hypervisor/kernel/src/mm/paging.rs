//! 4-level page tables: building Hestia's own tables, mapping MMIO and stacks, and walking them.
//!
//! Intel SDM Vol. 3A, 4.5 (4-level paging). Tables are reached through the direct map
//! ([`crate::mm::phys_to_virt`]), so a frame holding a table must lie inside it: during the first
//! build, while the boot tables still cover only 4 GiB, table frames are allocated below 4 GiB.
//! Leaf flags are always explicit: Hestia never maps anything user-accessible, and NX is set on
//! everything that is not text (when the CPU has NX).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::x86_64::cpu;
use crate::mm;

bitflags::bitflags! {
    /// Page-table entry bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Pte: u64 {
        /// Present.
        const P = 1 << 0;
        /// Writable.
        const RW = 1 << 1;
        /// User-accessible.
        const US = 1 << 2;
        /// Write-through.
        const PWT = 1 << 3;
        /// Cache disable.
        const PCD = 1 << 4;
        /// Accessed.
        const A = 1 << 5;
        /// Dirty.
        const D = 1 << 6;
        /// Page size (2 MiB / 1 GiB leaf at L2 / L3).
        const PS = 1 << 7;
        /// Global.
        const G = 1 << 8;
        /// Execute disable.
        const NX = 1 << 63;
    }
}

/// Mask of the physical address bits in an entry.
pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// NX if the CPU supports it, else nothing (setting NX without EFER.NXE faults).
static NX_BIT: AtomicU64 = AtomicU64::new(0);
/// G if the CPU supports global pages.
static G_BIT: AtomicU64 = AtomicU64::new(0);

/// Records which optional bits the CPU supports.
pub fn set_supported_bits(nx: bool, pge: bool) {
    NX_BIT.store(if nx { Pte::NX.bits() } else { 0 }, Ordering::Relaxed);
    G_BIT.store(if pge { Pte::G.bits() } else { 0 }, Ordering::Relaxed);
}

/// Access kinds for a hypervisor mapping; each maps to W^X-respecting bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read + execute (text).
    ReadExec,
    /// Read only (rodata).
    Read,
    /// Read + write, no execute (data, heap, stacks, direct map).
    ReadWrite,
    /// Uncached device memory, read + write, no execute.
    Mmio,
    /// Read-only and readable by guests (the M2P): the only user-accessible Hestia mapping.
    GuestRead,
}

impl Access {
    fn bits(self) -> u64 {
        let nx = NX_BIT.load(Ordering::Relaxed);
        let base = Pte::P.bits() | G_BIT.load(Ordering::Relaxed) | Pte::A.bits();
        match self {
            Access::ReadExec => base,
            Access::Read => base | nx,
            Access::ReadWrite => base | Pte::RW.bits() | Pte::D.bits() | nx,
            Access::Mmio => {
                base | Pte::RW.bits() | Pte::D.bits() | Pte::PCD.bits() | Pte::PWT.bits() | nx
            }
            // Not global: guest-visible mappings must not outlive a CR3 switch.
            Access::GuestRead => (base & !Pte::G.bits()) | Pte::US.bits() | nx,
        }
    }
}

/// Leaf sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB (level 1 leaf).
    Size4K,
    /// 2 MiB (level 2 leaf).
    Size2M,
    /// 1 GiB (level 3 leaf).
    Size1G,
}

impl PageSize {
    /// Bytes covered.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }
    const fn leaf_level(self) -> u32 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }
}

/// Errors from mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No frame for an intermediate table.
    OutOfMemory,
    /// The range is already mapped by a larger page.
    Conflict,
}

/// A TLB flush owed after changing a live mapping. Dropping it unflushed is a bug, so the
/// type is `must_use`.
#[must_use = "a changed mapping must be flushed from the TLB"]
pub struct TlbFlush(u64);

impl TlbFlush {
    /// Flushes the one address on this CPU.
    pub fn flush(self) {
        cpu::invlpg(self.0);
    }
}

fn index(virt: u64, level: u32) -> usize {
    ((virt >> (12 + 9 * (level - 1))) & 511) as usize
}

/// The entries of one table frame.
fn table(phys: u64) -> &'static mut [u64; 512] {
    // SAFETY: `phys` is a page-table frame owned by the page-table code (allocated by
    // `new_table` or the boot stub) and mapped by the direct map; entries are plain u64s.
    unsafe { &mut *(mm::phys_to_virt(phys) as *mut [u64; 512]) }
}

/// A set of page tables rooted at a PML4 frame.
pub struct PageTables {
    root: u64,
    /// Highest physical address table frames may use (4 GiB until the final direct map).
    table_limit: u64,
}

impl PageTables {
    /// Allocates an empty PML4.
    pub fn new(table_limit: u64) -> Result<Self, MapError> {
        let root = new_table(table_limit)?;
        Ok(Self { root, table_limit })
    }

    /// The physical address of the PML4 (for CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Allows table frames anywhere (once the final direct map is live).
    pub fn lift_table_limit(&mut self) {
        self.table_limit = u64::MAX;
    }

    /// Maps `[virt, virt+len)` to `[phys, phys+len)` with the largest pages that fit
    /// (`allow_large` permits 2 MiB / 1 GiB leaves).
    pub fn map_range(
        &mut self,
        virt: u64,
        phys: u64,
        len: u64,
        access: Access,
        allow_large: PageSize,
    ) -> Result<(), MapError> {
        let mut off = 0;
        while off < len {
            let (v, p, rest) = (virt + off, phys + off, len - off);
            let size = [PageSize::Size1G, PageSize::Size2M]
                .into_iter()
                .find(|s| {
                    s.bytes() <= allow_large.bytes()
                        && v % s.bytes() == 0
                        && p % s.bytes() == 0
                        && rest >= s.bytes()
                })
                .unwrap_or(PageSize::Size4K);
            self.map(v, p, size, access)?;
            off += size.bytes();
        }
        Ok(())
    }

    /// Maps one page. Existing leaves are replaced (the caller flushes if the range was live).
    pub fn map(
        &mut self,
        virt: u64,
        phys: u64,
        size: PageSize,
        access: Access,
    ) -> Result<(), MapError> {
        let mut t = self.root;
        let leaf = size.leaf_level();
        for level in (leaf + 1..=4).rev() {
            let e = &mut table(t)[index(virt, level)];
            if *e & Pte::P.bits() == 0 {
                let n = new_table(self.table_limit)?;
                // Intermediate entries grant everything; leaves decide. US only where a guest
                // may read (the M2P), so no other Hestia subtree is reachable from ring 3.
                let us = if access == Access::GuestRead {
                    Pte::US.bits()
                } else {
                    0
                };
                *e = n | Pte::P.bits() | Pte::RW.bits() | Pte::A.bits() | us;
            } else if *e & Pte::PS.bits() != 0 {
                return Err(MapError::Conflict);
            }
            t = *e & ADDR_MASK;
        }
        let ps = if leaf > 1 { Pte::PS.bits() } else { 0 };
        table(t)[index(virt, leaf)] = (phys & ADDR_MASK) | access.bits() | ps;
        Ok(())
    }

    /// Removes the 4 KiB mapping at `virt`, if any.
    pub fn unmap_4k(&mut self, virt: u64) -> Option<TlbFlush> {
        let mut t = self.root;
        for level in (2..=4).rev() {
            let e = table(t)[index(virt, level)];
            if e & Pte::P.bits() == 0 || e & Pte::PS.bits() != 0 {
                return None;
            }
            t = e & ADDR_MASK;
        }
        table(t)[index(virt, 1)] = 0;
        Some(TlbFlush(virt))
    }
}

fn new_table(limit: u64) -> Result<u64, MapError> {
    mm::alloc_zeroed_frames(1, 4096, limit).ok_or(MapError::OutOfMemory)
}

/// The physical address `virt` maps to under `root` (physical address of a PML4), through a
/// leaf of any size; `None` if it is not mapped.
pub fn translate(root: u64, virt: u64) -> Option<u64> {
    let mut t = root;
    for level in (1..=4).rev() {
        let e = table(t)[index(virt, level)];
        if e & Pte::P.bits() == 0 {
            return None;
        }
        if level == 1 || e & Pte::PS.bits() != 0 {
            let offset = (1u64 << (12 + 9 * (level - 1))) - 1;
            return Some((e & ADDR_MASK & !offset) | (virt & offset));
        }
        t = e & ADDR_MASK;
    }
    None
}

/// A leaf mapping found by [`walk`].
#[derive(Clone, Copy, Debug)]
pub struct Leaf {
    /// Canonical virtual address.
    pub virt: u64,
    /// Bytes covered.
    pub size: u64,
    /// The entry.
    pub pte: u64,
}

/// Visits every present leaf under `root` (physical address of a PML4).
pub fn walk(root: u64, mut f: impl FnMut(Leaf)) {
    fn rec(t: u64, level: u32, base: u64, f: &mut dyn FnMut(Leaf)) {
        for (i, &e) in table(t).iter().enumerate() {
            if e & Pte::P.bits() == 0 {
                continue;
            }
            let mut virt = base | ((i as u64) << (12 + 9 * (level - 1)));
            if level == 4 && i >= 256 {
                virt |= 0xFFFF_0000_0000_0000;
            }
            if level == 1 || e & Pte::PS.bits() != 0 {
                f(Leaf {
                    virt,
                    size: 1 << (12 + 9 * (level - 1)),
                    pte: e,
                });
            } else {
                rec(e & ADDR_MASK, level - 1, virt, f);
            }
        }
    }
    rec(root, 4, 0, &mut f);
}

/// Result of the W^X audit.
#[derive(Clone, Copy, Debug, Default)]
pub struct WxReport {
    /// Leaves examined.
    pub leaves: u64,
    /// Leaves both writable and executable.
    pub wx: u64,
    /// Leaves accessible from user mode.
    pub user: u64,
    /// First offending address, if any.
    pub first_bad: Option<u64>,
}

/// Audits the live page tables: no leaf may be writable and executable, and none may be
/// user-accessible except the read-only M2P in `user_ok`.
/// Intermediate RW/NX bits combine with the leaf's, but Hestia's intermediate entries never
/// set NX and always set RW, so the leaf decides.
pub fn audit_wx(root: u64, user_ok: core::ops::Range<u64>) -> WxReport {
    let mut r = WxReport::default();
    let has_nx = NX_BIT.load(Ordering::Relaxed) != 0;
    walk(root, |l| {
        r.leaves += 1;
        let w = l.pte & Pte::RW.bits() != 0;
        let x = !has_nx || l.pte & Pte::NX.bits() == 0;
        if w && x {
            r.wx += 1;
            r.first_bad.get_or_insert(l.virt);
        }
        let allowed_user = user_ok.contains(&l.virt) && l.pte & Pte::RW.bits() == 0;
        if l.pte & Pte::US.bits() != 0 && !allowed_user {
            r.user += 1;
            r.first_bad.get_or_insert(l.virt);
        }
    });
    r
}
