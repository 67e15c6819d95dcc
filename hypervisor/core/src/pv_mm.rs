//! The PV MMU's frame bookkeeping: owner, type, type count and reference count of every frame,
//! and the validation rules for page-table entries (Xen's model; `shared/xen-abi.md` 5.4, 5.5).
//!
//! Invariants this module keeps (and its tests check after every operation):
//! 1. A frame whose type is a page table (L1-L4) or a descriptor page is never the target of a
//!    writable L1 entry in any validated L1 table: taking the `Writable` type fails while another
//!    type is held, and the reverse.
//! 2. A validated table references only frames its domain owns (`get_page`), and holds one
//!    reference (and, one level down, one type reference) per present entry; devalidation drops
//!    exactly those.
//! 3. L4 slots 256-271 belong to the hypervisor: never validated as guest entries, never updated.
//! 4. I/O frames (beyond the table, or owned by [`DOM_IO`]: firmware, ACPI, the low 1 MiB) are
//!    mapped only by L1 entries of a domain whose I/O-memory set holds them, and take no
//!    references or types: nothing ever makes them page tables. Frames in the read-only I/O set
//!    (devices the hypervisor drives but lets dom0 read, like the HPET) lose RW when mapped.
//! 5. No CPU can still hold a translation that was removed when that could matter: before a
//!    frame takes a page-table or descriptor type, or leaves its domain, after any mapping of it
//!    was removed; before a frame becomes writable after it was referenced as a page table (a
//!    paging-structure cache could still walk it). Each frame records the flush generation in
//!    which such a mapping went; a change that finds no full flush since
//!    ([`PtMemory::flush_tlbs`]) flushes every CPU first, as Xen's TLB-flush clock does. So the
//!    hypercalls themselves never need to flush for safety, only when the guest asks.
//!
//! Memory is abstract ([`PtMemory`]) so the rules run on the host against a recording fake.

use alloc::vec::Vec;

use crate::descriptor;
use crate::rangeset::RangeSet;

/// Page-table entry bits used by the rules.
pub mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User.
    pub const US: u64 = 1 << 2;
    /// Page size (a superpage at L2/L3; PAT at L1).
    pub const PS: u64 = 1 << 7;
    /// Global.
    pub const G: u64 = 1 << 8;
    /// Execute disable.
    pub const NX: u64 = 1 << 63;
    /// Address bits.
    pub const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
    /// Reserved bits 52-62 (must be zero in any present entry).
    pub const RESERVED: u64 = 0x7FF0_0000_0000_0000;
}

/// First and last+1 L4 slots that belong to the hypervisor.
pub const HYPERVISOR_L4_SLOTS: core::ops::Range<usize> = 256..272;

/// A domain id.
pub type Dom = u16;

/// The pseudo-domain owning I/O frames inside the table.
pub const DOM_IO: Dom = xen_abi::xen::DOMID_IO;

/// What a frame is used as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageType {
    /// No type held.
    None,
    /// Mapped writable somewhere.
    Writable,
    /// A page table of level 1-4.
    Table(u8),
    /// A GDT/LDT page.
    SegDesc,
}

/// Bookkeeping of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// Owning domain, if any.
    pub owner: Option<Dom>,
    /// Current type (meaningful while `type_count > 0`).
    pub ty: PageType,
    /// References to the type.
    pub type_count: u32,
    /// General references (mappings, pins, base pointers).
    pub ref_count: u32,
    /// Pinned by the guest (holds one type reference of its own).
    pub pinned: bool,
    /// Flush generation in which a mapping of the frame was last removed (0: never).
    pub unmapped_at: u32,
    /// Flush generation in which a page-table entry referring to it as a table was last
    /// removed (0: never).
    pub table_unref_at: u32,
}

impl FrameInfo {
    /// A frame nobody owns.
    pub const FREE: FrameInfo = FrameInfo {
        owner: None,
        ty: PageType::None,
        type_count: 0,
        ref_count: 0,
        pinned: false,
        unmapped_at: 0,
        table_unref_at: 0,
    };
}

/// Why an MMU operation was refused (the hypercall turns it into an errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmError {
    /// MFN beyond the frame table.
    BadFrame,
    /// The frame belongs to someone else (or nobody).
    NotOwner,
    /// The frame already has a conflicting type.
    TypeConflict,
    /// The entry has bits the rules forbid (reserved bits, superpages, global).
    BadFlags,
    /// The slot is the hypervisor's.
    HypervisorSlot,
    /// A counter would overflow.
    Overflow,
    /// The table is not of the type the operation needs, is not pinned, or is not the
    /// caller's.
    NotATable,
    /// The frame is already pinned.
    AlreadyPinned,
    /// An I/O frame outside the domain's I/O-memory set.
    NoIoAccess,
}

/// Access to page-table frames (the kernel uses the direct map; tests use a fake).
pub trait PtMemory {
    /// Reads entry `idx` (0-511) of frame `mfn`.
    fn read(&self, mfn: u64, idx: usize) -> u64;
    /// Writes entry `idx` of frame `mfn`.
    fn write(&mut self, mfn: u64, idx: usize, val: u64);
    /// Writes the hypervisor's own entries into slots 256-271 of the L4 frame `mfn` (done once
    /// the frame is validated as an L4, so every guest L4 carries the hypervisor).
    fn install_hypervisor_slots(&mut self, mfn: u64);
    /// Flushes the guest translations from every CPU's TLB, returning once all are gone.
    fn flush_tlbs(&mut self);
}

/// Entry flags Xen forces on guest entries: 64-bit PV kernels run in ring 3, so every guest
/// mapping needs US.
const FORCED: u64 = pte::US;

/// The frame table, over storage the caller provides (the kernel takes it from the frame
/// allocator: at 16 bytes a frame it outgrows any heap).
pub struct FrameTable<'a> {
    frames: &'a mut [FrameInfo],
    /// The I/O frames each domain may map.
    iomem: Vec<(Dom, RangeSet)>,
    /// I/O frames only ever mapped read-only.
    iomem_ro: RangeSet,
    /// Full TLB flushes so far, plus one: a frame stamped with the current value lost a mapping
    /// that some CPU may still translate.
    flush_gen: u32,
}

impl<'a> FrameTable<'a> {
    /// A table for frames `0..storage.len()`, all marked free.
    pub fn new(storage: &'a mut [FrameInfo]) -> Self {
        storage.fill(FrameInfo::FREE);
        Self {
            frames: storage,
            iomem: Vec::new(),
            iomem_ro: RangeSet::new(),
            flush_gen: 1,
        }
    }

    /// The I/O frames every mapping of which is made read-only.
    pub fn iomem_ro_mut(&mut self) -> &mut RangeSet {
        &mut self.iomem_ro
    }

    /// A guest entry as it is stored: US forced on present entries (64-bit PV kernels run in
    /// ring 3); in L1 entries G dropped (a global entry would survive the CR3 reloads that
    /// retire stale writable translations before a frame changes type; above L1 it is refused)
    /// and RW dropped for read-only I/O frames.
    fn fix_entry(&self, level: u8, e: u64) -> u64 {
        if e & pte::P == 0 {
            return e;
        }
        let e = e | FORCED;
        if level != 1 {
            return e;
        }
        let target = (e & pte::ADDR) >> 12;
        let e = e & !pte::G;
        if self.iomem_ro.contains(target) && self.is_io(target) {
            e & !pte::RW
        } else {
            e
        }
    }

    /// True for an I/O frame: beyond the table (device memory) or owned by [`DOM_IO`].
    pub fn is_io(&self, mfn: u64) -> bool {
        self.info(mfn).is_none_or(|f| f.owner == Some(DOM_IO))
    }

    /// The I/O frames `dom` may map (empty unless granted).
    pub fn iomem_mut(&mut self, dom: Dom) -> &mut RangeSet {
        let i = match self.iomem.iter().position(|(d, _)| *d == dom) {
            Some(i) => i,
            None => {
                self.iomem.push((dom, RangeSet::new()));
                self.iomem.len() - 1
            }
        };
        &mut self.iomem[i].1
    }

    /// True if `dom` may map I/O frame `mfn`.
    pub fn iomem_allowed(&self, dom: Dom, mfn: u64) -> bool {
        self.iomem
            .iter()
            .any(|(d, set)| *d == dom && set.contains(mfn))
    }

    /// The bookkeeping of `mfn`.
    pub fn info(&self, mfn: u64) -> Option<&FrameInfo> {
        self.frames.get(usize::try_from(mfn).ok()?)
    }

    fn info_mut(&mut self, mfn: u64) -> Result<&mut FrameInfo, MmError> {
        usize::try_from(mfn)
            .ok()
            .and_then(|i| self.frames.get_mut(i))
            .ok_or(MmError::BadFrame)
    }

    /// Gives a free frame to `dom`.
    pub fn assign(&mut self, mfn: u64, dom: Dom) -> Result<(), MmError> {
        let f = self.info_mut(mfn)?;
        if f.owner.is_some() {
            return Err(MmError::NotOwner);
        }
        *f = FrameInfo {
            owner: Some(dom),
            ..FrameInfo::FREE
        };
        Ok(())
    }

    /// Takes a frame back from `dom` (ballooning): only an unreferenced, untyped, unpinned frame
    /// of `dom` can go, so nothing can still map it.
    pub fn release(&mut self, mem: &mut dyn PtMemory, mfn: u64, dom: Dom) -> Result<(), MmError> {
        let generation = self.flush_gen;
        let f = self.info_mut(mfn)?;
        if f.owner != Some(dom) {
            return Err(MmError::NotOwner);
        }
        if f.ref_count != 0 || f.type_count != 0 || f.pinned {
            return Err(MmError::TypeConflict);
        }
        let stale = f.unmapped_at == generation;
        *f = FrameInfo::FREE;
        self.flush_if(stale, mem);
        Ok(())
    }

    /// Flushes every CPU's TLB if `stale`, starting a new flush generation.
    fn flush_if(&mut self, stale: bool, mem: &mut dyn PtMemory) {
        if stale {
            mem.flush_tlbs();
            self.flush_gen = self.flush_gen.wrapping_add(1).max(1);
        }
    }

    /// Takes a general reference on a frame `dom` owns.
    pub fn get_page(&mut self, mfn: u64, dom: Dom) -> Result<(), MmError> {
        let f = self.info_mut(mfn)?;
        if f.owner != Some(dom) {
            return Err(MmError::NotOwner);
        }
        f.ref_count = f.ref_count.checked_add(1).ok_or(MmError::Overflow)?;
        Ok(())
    }

    /// Drops a general reference.
    pub fn put_page(&mut self, mfn: u64) {
        if let Ok(f) = self.info_mut(mfn) {
            debug_assert!(f.ref_count > 0, "reference count underflow on mfn {mfn:#x}");
            f.ref_count = f.ref_count.saturating_sub(1);
        }
    }

    /// Takes a type reference: sets the type (validating a table) if none is held, else requires
    /// the same type. The caller holds a general reference.
    pub fn get_page_type(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: u64,
        ty: PageType,
        dom: Dom,
    ) -> Result<(), MmError> {
        let f = *self.info(mfn).ok_or(MmError::BadFrame)?;
        if f.type_count > 0 {
            if f.ty != ty {
                return Err(MmError::TypeConflict);
            }
            self.info_mut(mfn)?.type_count =
                f.type_count.checked_add(1).ok_or(MmError::Overflow)?;
            return Ok(());
        }
        // No stale translation may outlive the frame's last use of another kind (invariant 5).
        let stale = if ty == PageType::Writable {
            f.table_unref_at == self.flush_gen
        } else {
            f.unmapped_at == self.flush_gen
        };
        self.flush_if(stale, mem);
        // Claim the type before validating, so a table that (directly or not) refers to itself
        // meets a conflict instead of recursing forever.
        {
            let fm = self.info_mut(mfn)?;
            fm.ty = ty;
            fm.type_count = 1;
        }
        if let PageType::Table(level) = ty {
            if let Err(e) = self.validate(mem, mfn, level, dom) {
                let fm = self.info_mut(mfn)?;
                fm.type_count = 0;
                fm.ty = PageType::None;
                return Err(e);
            }
            if level == 4 {
                mem.install_hypervisor_slots(mfn);
            }
        }
        if ty == PageType::SegDesc {
            // Every descriptor of the page must pass (`descriptor::check`); fix-ups (DPL 3)
            // are written back, as Xen does.
            let checked: Option<Vec<(usize, u64, u64)>> = (0..512)
                .map(|i| {
                    let d = mem.read(mfn, i);
                    descriptor::check(d).map(|f| (i, d, f))
                })
                .collect();
            let Some(checked) = checked else {
                let fm = self.info_mut(mfn)?;
                fm.type_count = 0;
                fm.ty = PageType::None;
                return Err(MmError::BadFlags);
            };
            for (i, d, f) in checked {
                if d != f {
                    mem.write(mfn, i, f);
                }
            }
        }
        Ok(())
    }

    /// Drops a type reference; the last one of a table devalidates it.
    pub fn put_page_type(&mut self, mem: &mut dyn PtMemory, mfn: u64) {
        let Ok(f) = self.info_mut(mfn) else { return };
        debug_assert!(f.type_count > 0, "type count underflow on mfn {mfn:#x}");
        f.type_count = f.type_count.saturating_sub(1);
        if f.type_count == 0 {
            let ty = f.ty;
            f.ty = PageType::None;
            if let PageType::Table(level) = ty {
                self.devalidate(mem, mfn, level);
            }
        }
    }

    fn guest_slots(level: u8) -> impl Iterator<Item = usize> {
        (0..512).filter(move |i| level != 4 || !HYPERVISOR_L4_SLOTS.contains(i))
    }

    fn validate(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: u64,
        level: u8,
        dom: Dom,
    ) -> Result<(), MmError> {
        let slots: Vec<usize> = Self::guest_slots(level).collect();
        for (n, &i) in slots.iter().enumerate() {
            let raw = mem.read(mfn, i);
            let e = self.fix_entry(level, raw);
            if let Err(err) = self.get_entry(mem, level, e, dom) {
                for &j in &slots[..n] {
                    let old = mem.read(mfn, j);
                    self.put_entry(mem, level, old);
                }
                return Err(err);
            }
            if e != raw {
                mem.write(mfn, i, e);
            }
        }
        Ok(())
    }

    fn devalidate(&mut self, mem: &mut dyn PtMemory, mfn: u64, level: u8) {
        for i in Self::guest_slots(level) {
            let e = mem.read(mfn, i);
            self.put_entry(mem, level, e);
        }
    }

    /// Checks an entry's flags for a table of `level`.
    fn check_flags(level: u8, e: u64) -> Result<(), MmError> {
        if e & pte::RESERVED != 0 {
            return Err(MmError::BadFlags);
        }
        // No superpages and no global bit above L1 for PV guests.
        if level > 1 && e & (pte::PS | pte::G) != 0 {
            return Err(MmError::BadFlags);
        }
        Ok(())
    }

    /// Takes the references a present entry of a level-`level` table needs.
    fn get_entry(
        &mut self,
        mem: &mut dyn PtMemory,
        level: u8,
        e: u64,
        dom: Dom,
    ) -> Result<(), MmError> {
        if e & pte::P == 0 {
            return Ok(());
        }
        Self::check_flags(level, e)?;
        let target = (e & pte::ADDR) >> 12;
        if level == 1 && self.is_io(target) {
            return if self.iomem_allowed(dom, target) {
                Ok(())
            } else {
                Err(MmError::NoIoAccess)
            };
        }
        self.get_page(target, dom)?;
        let ty = match level {
            1 if e & pte::RW != 0 => Some(PageType::Writable),
            1 => None,
            l => Some(PageType::Table(l - 1)),
        };
        if let Some(ty) = ty
            && let Err(err) = self.get_page_type(mem, target, ty, dom)
        {
            self.put_page(target);
            return Err(err);
        }
        Ok(())
    }

    fn put_entry(&mut self, mem: &mut dyn PtMemory, level: u8, e: u64) {
        if e & pte::P == 0 {
            return;
        }
        let target = (e & pte::ADDR) >> 12;
        if level == 1 && self.is_io(target) {
            return;
        }
        let generation = self.flush_gen;
        if let Ok(f) = self.info_mut(target) {
            f.unmapped_at = generation;
            if level > 1 {
                f.table_unref_at = generation;
            }
        }
        if level > 1 || e & pte::RW != 0 {
            self.put_page_type(mem, target);
        }
        self.put_page(target);
    }

    /// Updates entry `idx` of the validated level-`level` table `table` owned by `dom`: takes the
    /// new entry's references, writes it, then drops the old one's (`mmu_update`).
    pub fn mod_entry(
        &mut self,
        mem: &mut dyn PtMemory,
        table: u64,
        level: u8,
        idx: usize,
        new: u64,
        dom: Dom,
    ) -> Result<(), MmError> {
        let t = *self.info(table).ok_or(MmError::BadFrame)?;
        if t.owner != Some(dom) {
            return Err(MmError::NotATable);
        }
        if t.ty != PageType::Table(level) || t.type_count == 0 || idx >= 512 {
            return Err(MmError::NotATable);
        }
        if level == 4 && HYPERVISOR_L4_SLOTS.contains(&idx) {
            return Err(MmError::HypervisorSlot);
        }
        let new = self.fix_entry(level, new);
        self.get_entry(mem, level, new, dom)?;
        let old = mem.read(table, idx);
        mem.write(table, idx, new);
        self.put_entry(mem, level, old);
        Ok(())
    }

    /// Pins `mfn` as a level-`level` table (`MMUEXT_PIN_Lx_TABLE`).
    pub fn pin(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: u64,
        level: u8,
        dom: Dom,
    ) -> Result<(), MmError> {
        if self.info(mfn).is_some_and(|f| f.pinned) {
            return Err(MmError::AlreadyPinned);
        }
        self.get_page(mfn, dom)?;
        if let Err(e) = self.get_page_type(mem, mfn, PageType::Table(level), dom) {
            self.put_page(mfn);
            return Err(e);
        }
        self.info_mut(mfn)?.pinned = true;
        Ok(())
    }

    /// Unpins `mfn` (`MMUEXT_UNPIN_TABLE`).
    pub fn unpin(&mut self, mem: &mut dyn PtMemory, mfn: u64, dom: Dom) -> Result<(), MmError> {
        let f = *self.info(mfn).ok_or(MmError::BadFrame)?;
        if f.owner != Some(dom) {
            return Err(MmError::NotOwner);
        }
        if !f.pinned {
            return Err(MmError::NotATable);
        }
        self.info_mut(mfn)?.pinned = false;
        self.put_page_type(mem, mfn);
        self.put_page(mfn);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// A fake memory that records every write.
    #[derive(Default)]
    struct FakeMem {
        pages: BTreeMap<u64, [u64; 512]>,
        writes: Vec<(u64, usize, u64)>,
        flushes: usize,
    }

    impl PtMemory for FakeMem {
        fn read(&self, mfn: u64, idx: usize) -> u64 {
            self.pages.get(&mfn).map_or(0, |p| p[idx])
        }
        fn write(&mut self, mfn: u64, idx: usize, val: u64) {
            self.pages.entry(mfn).or_insert([0; 512])[idx] = val;
            self.writes.push((mfn, idx, val));
        }
        fn install_hypervisor_slots(&mut self, mfn: u64) {
            for i in HYPERVISOR_L4_SLOTS {
                self.write(mfn, i, HYPERVISOR_MARK);
            }
        }
        fn flush_tlbs(&mut self) {
            self.flushes += 1;
        }
    }

    /// What the fake writes into hypervisor slots.
    const HYPERVISOR_MARK: u64 = 0xdead_0000;

    const D: Dom = 1;
    const OTHER: Dom = 2;

    fn e(mfn: u64, flags: u64) -> u64 {
        (mfn << 12) | flags | pte::P
    }

    fn setup(n: u64) -> (FrameTable<'static>, FakeMem) {
        let storage = std::boxed::Box::leak(std::vec![FrameInfo::FREE; 64].into_boxed_slice());
        let mut ft = FrameTable::new(storage);
        for m in 0..n {
            ft.assign(m, D).unwrap();
        }
        for m in n..n + 4 {
            ft.assign(m, OTHER).unwrap();
        }
        (ft, FakeMem::default())
    }

    /// Builds L4(1) -> L3(2) -> L2(3) -> L1(4) -> data frames 10 (RW) and 11 (RO).
    fn tree(mem: &mut FakeMem) {
        mem.write(1, 0, e(2, pte::RW));
        mem.write(2, 0, e(3, pte::RW));
        mem.write(3, 0, e(4, pte::RW));
        mem.write(4, 0, e(10, pte::RW));
        mem.write(4, 1, e(11, 0));
    }

    #[test]
    fn pinning_validates_the_whole_tree() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, 1, 4, D).unwrap();
        assert_eq!(ft.info(1).unwrap().ty, PageType::Table(4));
        assert_eq!(ft.info(4).unwrap().ty, PageType::Table(1));
        assert_eq!(ft.info(10).unwrap().ty, PageType::Writable);
        assert_eq!(
            ft.info(11).unwrap().type_count,
            0,
            "a read-only mapping takes no type"
        );
        assert_eq!(ft.info(11).unwrap().ref_count, 1);
        assert!(
            mem.read(4, 0) & pte::US != 0,
            "US is forced on guest entries"
        );
        assert!(
            HYPERVISOR_L4_SLOTS
                .clone()
                .all(|i| mem.read(1, i) == HYPERVISOR_MARK),
            "hypervisor slots installed in the L4"
        );
        ft.unpin(&mut mem, 1, D).unwrap();
        for m in [1, 2, 3, 4, 10, 11] {
            let f = ft.info(m).unwrap();
            assert_eq!(
                (f.type_count, f.ref_count),
                (0, 0),
                "mfn {m} fully released"
            );
        }
    }

    #[test]
    fn a_page_table_can_never_be_mapped_writable() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        // L1 maps its own L2 writable: validation must fail and leave nothing behind.
        mem.write(4, 2, e(3, pte::RW));
        assert_eq!(ft.pin(&mut mem, 1, 4, D), Err(MmError::TypeConflict));
        assert!(
            (0..20)
                .all(|m| ft.info(m).unwrap().type_count == 0 && ft.info(m).unwrap().ref_count == 0)
        );
        // With the tree pinned, an update that maps a table writable is refused.
        mem.write(4, 2, 0);
        ft.pin(&mut mem, 1, 4, D).unwrap();
        assert_eq!(
            ft.mod_entry(&mut mem, 4, 1, 5, e(2, pte::RW), D),
            Err(MmError::TypeConflict)
        );
        // Read-only is fine (that is how guests see their own tables).
        ft.mod_entry(&mut mem, 4, 1, 5, e(2, 0), D).unwrap();
        // And a frame mapped writable cannot become a table.
        assert_eq!(ft.pin(&mut mem, 10, 1, D), Err(MmError::TypeConflict));
    }

    #[test]
    fn foreign_frames_are_refused() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, 1, 4, D).unwrap();
        assert_eq!(
            ft.mod_entry(&mut mem, 4, 1, 7, e(21, 0), D),
            Err(MmError::NotOwner)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, 4, 1, 7, e(60, 0), D),
            Err(MmError::NotOwner),
            "unowned frame"
        );
        assert_eq!(
            ft.mod_entry(&mut mem, 4, 1, 7, e(1 << 30, 0), D),
            Err(MmError::NoIoAccess),
            "device memory without an I/O-memory grant"
        );
        assert_eq!(
            ft.mod_entry(&mut mem, 4, 1, 7, e(12, 0), OTHER),
            Err(MmError::NotATable),
            "not the table's owner"
        );
    }

    #[test]
    fn io_frames() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, 1, 4, D).unwrap();
        // Frame 30 of the table is firmware (DOM_IO); 0x1000 is device memory beyond it.
        ft.assign(30, DOM_IO).unwrap();
        for target in [30, 0x1000] {
            assert_eq!(
                ft.mod_entry(&mut mem, 4, 1, 7, e(target, pte::RW), D),
                Err(MmError::NoIoAccess)
            );
        }
        ft.iomem_mut(D).add(0, 1 << 40);
        ft.iomem_mut(D).remove(0x1000, 0x1001);
        assert_eq!(
            ft.mod_entry(&mut mem, 4, 1, 7, e(0x1000, pte::RW), D),
            Err(MmError::NoIoAccess),
            "a frame taken out of the grant (Hestia's LAPIC, say)"
        );
        // Granted: mapped writable, twice, with no references or types taken.
        ft.mod_entry(&mut mem, 4, 1, 7, e(30, pte::RW), D).unwrap();
        ft.mod_entry(&mut mem, 4, 1, 8, e(30, pte::RW), D).unwrap();
        ft.mod_entry(&mut mem, 4, 1, 9, e(0x2000, pte::RW), D)
            .unwrap();
        assert_eq!(
            *ft.info(30).unwrap(),
            FrameInfo {
                owner: Some(DOM_IO),
                ..FrameInfo::FREE
            }
        );
        // Never a page table: not as an L2's L1, not pinned.
        assert_eq!(
            ft.mod_entry(&mut mem, 3, 2, 9, e(30, 0), D),
            Err(MmError::NotOwner)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, 3, 2, 9, e(0x2000, 0), D),
            Err(MmError::BadFrame)
        );
        assert_eq!(ft.pin(&mut mem, 30, 1, D), Err(MmError::NotOwner));
        // Unmapping drops nothing; another domain still has no access.
        ft.mod_entry(&mut mem, 4, 1, 7, 0, D).unwrap();
        ft.mod_entry(&mut mem, 4, 1, 8, 0, D).unwrap();
        ft.mod_entry(&mut mem, 4, 1, 9, 0, D).unwrap();
        assert_eq!(
            *ft.info(30).unwrap(),
            FrameInfo {
                owner: Some(DOM_IO),
                ..FrameInfo::FREE
            }
        );
        assert!(!ft.iomem_allowed(OTHER, 30) && ft.iomem_allowed(D, 30));
        // A read-only device (the hypervisor's HPET): mappable, never writable.
        ft.iomem_ro_mut().add(0x3000, 0x3001);
        ft.mod_entry(&mut mem, 4, 1, 7, e(0x3000, pte::RW), D)
            .unwrap();
        assert_eq!(mem.read(4, 7) & pte::RW, 0, "RW dropped");
        ft.mod_entry(&mut mem, 4, 1, 8, e(0x3001, pte::G), D)
            .unwrap();
        assert_eq!(mem.read(4, 8) & pte::G, 0, "no global guest mappings");
        assert_ne!(mem.read(4, 7) & pte::P, 0);
    }

    #[test]
    fn hypervisor_slots_and_bad_flags() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        mem.write(1, 260, e(5, pte::RW)); // a hypervisor slot: ignored by validation
        ft.pin(&mut mem, 1, 4, D).unwrap();
        assert_eq!(ft.info(5).unwrap().ref_count, 0);
        assert_eq!(
            ft.mod_entry(&mut mem, 1, 4, 256, e(6, 0), D),
            Err(MmError::HypervisorSlot)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, 3, 2, 9, e(6, pte::PS), D),
            Err(MmError::BadFlags),
            "no superpages"
        );
        assert_eq!(
            ft.mod_entry(&mut mem, 4, 1, 9, e(6, 0) | (1 << 55), D),
            Err(MmError::BadFlags)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, 10, 1, 0, 0, D),
            Err(MmError::NotATable)
        );
    }

    #[test]
    fn descriptor_pages() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, 1, 4, D).unwrap();
        // Frame 12: Linux-style code descriptor (DPL 0) gets DPL 3; a TSS descriptor is refused.
        mem.write(12, 2, 0x00af_9b00_0000_ffff);
        ft.get_page(12, D).unwrap();
        ft.get_page_type(&mut mem, 12, PageType::SegDesc, D)
            .unwrap();
        assert_eq!(mem.read(12, 2), 0x00af_fb00_0000_ffff);
        mem.write(13, 5, (1 << 47) | (0x9 << 40));
        ft.get_page(13, D).unwrap();
        assert_eq!(
            ft.get_page_type(&mut mem, 13, PageType::SegDesc, D),
            Err(MmError::BadFlags)
        );
        assert_eq!(ft.info(13).unwrap().type_count, 0);
        // A frame mapped writable (10) cannot become a descriptor page, nor a descriptor page
        // be mapped writable.
        ft.get_page(10, D).unwrap();
        assert_eq!(
            ft.get_page_type(&mut mem, 10, PageType::SegDesc, D),
            Err(MmError::TypeConflict)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, 4, 1, 20, e(12, pte::RW), D),
            Err(MmError::TypeConflict)
        );
        ft.mod_entry(&mut mem, 4, 1, 20, e(12, 0), D).unwrap();
    }

    #[test]
    fn only_unused_frames_can_be_released() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, 1, 4, D).unwrap();
        assert_eq!(
            ft.release(&mut mem, 10, D),
            Err(MmError::TypeConflict),
            "mapped writable"
        );
        assert_eq!(
            ft.release(&mut mem, 11, D),
            Err(MmError::TypeConflict),
            "mapped read-only"
        );
        assert_eq!(
            ft.release(&mut mem, 1, D),
            Err(MmError::TypeConflict),
            "a pinned table"
        );
        assert_eq!(ft.release(&mut mem, 21, D), Err(MmError::NotOwner));
        ft.release(&mut mem, 15, D).unwrap();
        assert_eq!(ft.info(15).unwrap().owner, None);
        assert_eq!(
            ft.mod_entry(&mut mem, 4, 1, 9, e(15, 0), D),
            Err(MmError::NotOwner),
            "a released frame cannot be mapped"
        );
    }

    #[test]
    fn removed_mappings_are_flushed_before_a_frame_changes_use() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, 1, 4, D).unwrap();
        assert_eq!(mem.flushes, 0, "nothing was unmapped yet");
        // Unmap frame 10 (writable in L1 4): some CPU may still hold that translation.
        ft.mod_entry(&mut mem, 4, 1, 0, 0, D).unwrap();
        assert_eq!(mem.flushes, 0, "unmapping alone does not flush");
        // Mapping it again read-only or writable is harmless: no flush.
        ft.mod_entry(&mut mem, 4, 1, 2, e(10, pte::RW), D).unwrap();
        ft.mod_entry(&mut mem, 4, 1, 2, 0, D).unwrap();
        assert_eq!(mem.flushes, 0);
        // Becoming a page table needs every stale writable translation gone first.
        ft.pin(&mut mem, 10, 1, D).unwrap();
        assert_eq!(mem.flushes, 1, "flushed before frame 10 became an L1");
        ft.pin(&mut mem, 12, 1, D).unwrap();
        assert_eq!(mem.flushes, 1, "no mapping removed since: no second flush");
        // Leaving the domain likewise.
        ft.unpin(&mut mem, 12, D).unwrap();
        ft.release(&mut mem, 12, D).unwrap();
        assert_eq!(
            mem.flushes, 1,
            "unpinning an empty table removes no mapping"
        );
        ft.mod_entry(&mut mem, 4, 1, 1, 0, D).unwrap();
        ft.release(&mut mem, 11, D).unwrap();
        assert_eq!(mem.flushes, 2, "flushed before frame 11 left the domain");
        ft.release(&mut mem, 13, D).unwrap();
        assert_eq!(mem.flushes, 2, "frame 13 was never mapped: no flush");
    }

    #[test]
    fn a_former_table_is_flushed_before_it_becomes_writable() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, 1, 4, D).unwrap();
        // Drop the L2 -> L1 (frame 4) reference: a CPU may still cache that walk.
        ft.mod_entry(&mut mem, 3, 2, 0, 0, D).unwrap();
        assert_eq!(ft.info(4).unwrap().type_count, 0);
        // Frame 10 lost its writable mapping with it; mapping it writable again is harmless.
        let l1 = 5;
        mem.write(l1, 0, e(10, pte::RW));
        ft.pin(&mut mem, l1, 1, D).unwrap();
        assert_eq!(
            mem.flushes, 0,
            "frame 10 stays writable; frame 5 was never mapped"
        );
        // Mapping the old L1 writable needs the cached walks gone first.
        ft.mod_entry(&mut mem, l1, 1, 1, e(4, pte::RW), D).unwrap();
        assert_eq!(mem.flushes, 1, "flushed before frame 4 became writable");
        ft.mod_entry(&mut mem, l1, 1, 2, e(4, pte::RW), D).unwrap();
        assert_eq!(mem.flushes, 1, "type already held: no second flush");
    }

    #[test]
    fn self_referencing_tables_cannot_recurse() {
        let (mut ft, mut mem) = setup(20);
        mem.write(1, 0, e(1, 0)); // L4 points at itself
        assert_eq!(ft.pin(&mut mem, 1, 4, D), Err(MmError::TypeConflict));
        assert_eq!(ft.info(1).unwrap().ref_count, 0);
    }

    /// Counts, from the validated tables alone, the references every frame should hold.
    fn expected_counts(ft: &FrameTable, mem: &FakeMem) -> (BTreeMap<u64, u32>, BTreeMap<u64, u32>) {
        let (mut refs, mut types) = (BTreeMap::new(), BTreeMap::new());
        for m in 0..64u64 {
            let f = ft.info(m).unwrap();
            if f.pinned {
                *refs.entry(m).or_default() += 1;
                *types.entry(m).or_default() += 1;
            }
            if let (PageType::Table(level), true) = (f.ty, f.type_count > 0) {
                for i in FrameTable::guest_slots(level) {
                    let x = mem.read(m, i);
                    if x & pte::P == 0 {
                        continue;
                    }
                    let t = (x & pte::ADDR) >> 12;
                    *refs.entry(t).or_default() += 1;
                    if level > 1 || x & pte::RW != 0 {
                        *types.entry(t).or_default() += 1;
                    }
                }
            }
        }
        (refs, types)
    }

    #[test]
    fn random_updates_keep_every_invariant() {
        let (mut ft, mut mem) = setup(40);
        tree(&mut mem);
        ft.pin(&mut mem, 1, 4, D).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut ok = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let table = [1u64, 2, 3, 4][(x % 4) as usize];
            let level = [4u8, 3, 2, 1][(x % 4) as usize];
            let idx = ((x >> 8) % 8) as usize;
            let target = (x >> 16) % 48; // includes foreign frames 40-43 and unowned 44-47
            let flags = if (x >> 24) & 1 == 1 { pte::RW } else { 0 };
            let new = if (x >> 25).is_multiple_of(5) {
                0
            } else {
                e(target, flags)
            };
            if ft.mod_entry(&mut mem, table, level, idx, new, D).is_ok() {
                ok += 1;
            }
            // Invariant 1: no table or descriptor frame is writable-mapped by a validated L1.
            for m in 0..64u64 {
                let f = ft.info(m).unwrap();
                if f.type_count > 0 && f.ty == PageType::Table(1) {
                    for i in 0..512 {
                        let v = mem.read(m, i);
                        if v & pte::P != 0 && v & pte::RW != 0 {
                            let t = ft.info((v & pte::ADDR) >> 12).unwrap();
                            assert_eq!(
                                t.ty,
                                PageType::Writable,
                                "writable mapping of a typed frame"
                            );
                            assert_eq!(t.owner, Some(D), "mapping of a foreign frame");
                        }
                    }
                }
            }
            // Invariant 2: counts equal what the validated tables and pins account for.
            let (refs, types) = expected_counts(&ft, &mem);
            for m in 0..64u64 {
                let f = ft.info(m).unwrap();
                assert_eq!(
                    f.ref_count,
                    refs.get(&m).copied().unwrap_or(0),
                    "ref count of mfn {m}"
                );
                assert_eq!(
                    f.type_count,
                    types.get(&m).copied().unwrap_or(0),
                    "type count of mfn {m}"
                );
            }
        }
        assert!(
            ok > 1000,
            "the random walk exercised successful updates ({ok})"
        );
        assert!(
            ft.info(40).unwrap().ref_count == 0,
            "foreign frames never gained references"
        );
    }
}
