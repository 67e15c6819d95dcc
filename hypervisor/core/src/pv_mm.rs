//! The PV MMU's frame bookkeeping: owner, type, type count and reference count of every frame,
//! and the validation rules for page-table entries (Xen's model; `shared/xen-abi.md` 5.4, 5.5).
//!
//! Invariants this module keeps (and its tests check after every operation):
//! 1. A frame whose type is a page table (L1-L4) or a descriptor page is never the target of a
//!    writable L1 entry in any validated L1 table: taking the `Writable` type fails while another
//!    type is held, and the reverse.
//! 2. A validated table references only frames its domain owns (`get_page`), and holds one
//!    reference (and, one level down, one type reference) per present entry; devalidation drops
//!    exactly those. Two kinds of L1 entry name another domain's frame and hold the same
//!    references on it: grant host mappings ([`pte::GNTTAB`]) and foreign mappings, made by
//!    `mmu_update` naming that domain ([`FrameTable::mod_entry_foreign_preemptible`]: the
//!    control domain building or serving another domain).
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
//! 6. A domain whose not-present entries are checked against L1TF (`pv-l1tf`, see
//!    [`crate::l1tf`]) gets none into a table that validation or an update accepts that a
//!    speculative walk could use to read the L1 data cache ([`MmError::L1tf`]: the kernel
//!    crashes the domain, Hestia having no shadow paging to move it to).
//!
//! Linear (recursive) page tables, as Xen allows them (`get_l4_linear_pagetable` and its L2/L3
//! twins, `xen/arch/x86/mm.c`): a present entry of a level-L table (L = 2-4) that names a
//! table of level L instead of L-1. It must be read-only (a writable one would let the guest
//! write its own entries). One naming its own table takes nothing. One naming another table
//! takes a general and a level-L type reference on it, which must be a validated table of that
//! level with no work under way, and counts in both frames' [`FrameInfo::linear`]: a table that
//! holds linear entries cannot be the target of one, and the reverse, so no chain goes deeper
//! than one entry and no cycle of references can keep tables alive. An entry is linear exactly
//! when its target's type is the holder's level, which cannot change while it is referenced.
//!
//! Long work is preemptible (isolation rule 7): validating a table tree (a pin, a new base
//! pointer, a new table linked in by `mmu_update`) and tearing one down (the last reference
//! gone) go entry by entry against a [`Budget`], and stop with [`MmError::Preempted`] when it
//! runs out. How far each table has come is kept in its frame ([`Progress`], Xen's
//! `PGT_partial`), and what the calling vCPU owes in its [`Pending`] (Xen's partial page and
//! `old_guest_table`): issuing the same request again resumes the validation; a teardown is
//! finished before the vCPU's next page-table operation; a table part way through belongs to
//! its operation alone (others get [`MmError::Busy`] and retry). The kernel takes the frame
//! table's lock for one budget at a time, so no guest operation holds it or a CPU for long.
//!
//! A dying domain gives everything back the same way ([`FrameTable::relinquish_preemptible`],
//! the order and its reasons in [`Relinquish`]): its vCPUs' unfinished work, Hestia's
//! references, its pins and with them its table trees, then its frames, each freed once no
//! reference is left. A frame another domain still references stays the dying domain's until
//! that reference goes (Xen frees such a page on its last `put_page`).
//!
//! Memory is abstract ([`PtMemory`]) so the rules run on the host against a recording fake.

use alloc::vec::Vec;

use crate::descriptor;
use crate::ids::Mfn;
use crate::l1tf::SafeMaddr;
use crate::rangeset::RangeSet;

/// Page-table entry bits used by the rules.
pub mod pte {
    use crate::ids::Mfn;

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
    /// Marks an L1 entry written by a grant host mapping (Xen's `_PAGE_GNTTAB`, bit 62): its
    /// target may be another domain's frame; guests cannot write the bit themselves.
    pub const GNTTAB: u64 = 1 << 62;

    /// The frame entry `e` names (its address bits).
    pub const fn mfn(e: u64) -> Mfn {
        Mfn::new((e & ADDR) >> 12)
    }
}

/// First and last+1 L4 slots that belong to the hypervisor.
pub const HYPERVISOR_L4_SLOTS: core::ops::Range<usize> = 256..272;

/// A domain id.
pub type Dom = u16;

/// The pseudo-domain owning I/O frames inside the table.
pub const DOM_IO: Dom = xen_abi::xen::DOMID_IO;

/// The pseudo-domain owning the frames Hestia shares read-only with privileged domains (the
/// M2P, as Xen's `share_xen_page_with_privileged_guests(.., SHARE_ro)`): a privileged caller
/// maps them only read-only, by naming `DOMID_XEN` as the foreign domain of an `mmu_update`
/// (libxenguest's save maps the M2P so). Like I/O frames they are never freed, so their
/// mappings hold no reference; unlike them no domain reaches them without naming `DOM_XEN`.
pub const DOM_XEN: Dom = xen_abi::xen::DOMID_XEN;

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
    /// A long validation or teardown of the frame as a table, under way.
    pub progress: Progress,
    /// Linear page tables (Xen's `linear_pt_count`): above zero, how many linear entries this
    /// table holds that name other tables; below zero, minus how many name it. Zero whenever
    /// the frame holds no type.
    pub linear: i16,
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
        progress: Progress::Idle,
        linear: 0,
    };
}

/// How far a long validation or teardown of a page table has come, kept in the frame so the
/// work can stop at any entry and resume (Xen's `PGT_partial` with `nr_validated_ptes` and
/// `partial_flags`). While either is under way the frame's type count is exactly 1: the claim
/// of whoever validates it, or the teardown's own; no other reference to its type can be taken
/// (`MmError::Busy`) and, typed, it can be neither written nor released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing under way: a table type held is fully validated.
    Idle,
    /// Validation: the guest slots below `next` hold their references. With `child`, slot
    /// `next` refers to a table one level down whose own validation is under way on this
    /// frame's behalf (this frame holds its general reference and its type claim).
    Validating {
        /// First slot not validated yet.
        next: u16,
        /// Slot `next`'s table is part way through its own validation.
        child: bool,
    },
    /// Teardown, from the top slot down: the guest slots below `left` still hold their
    /// references. With `child`, slot `left - 1` refers to a table one level down being torn
    /// down on this frame's behalf (its type reference is the teardown's; this frame still
    /// holds its general reference).
    TearingDown {
        /// One past the highest slot still holding references.
        left: u16,
        /// Slot `left - 1`'s table is part way through its own teardown.
        child: bool,
    },
}

impl Progress {
    fn validating(next: usize, child: bool) -> Self {
        Progress::Validating {
            next: next as u16,
            child,
        }
    }

    fn tearing_down(left: usize, child: bool) -> Self {
        Progress::TearingDown {
            left: left as u16,
            child,
        }
    }
}

/// How many entries a preemptible operation may still validate or drop before it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget(u64);

impl Budget {
    /// No limit (boot-time building and the run-to-the-end entry points).
    pub const fn unlimited() -> Self {
        Budget(u64::MAX)
    }

    /// `entries` entries.
    pub const fn new(entries: u64) -> Self {
        Budget(entries)
    }

    /// Spends one entry; false when none is left.
    fn take(&mut self) -> bool {
        match self.0.checked_sub(1) {
            Some(left) => {
                self.0 = left;
                true
            }
            None => false,
        }
    }
}

/// A vCPU's unfinished page-table work between two hypercalls (Xen keeps the same in the
/// partial page and in `old_guest_table`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// A table (and its level) whose validation this vCPU started: it holds the table's general
    /// reference and type claim. The same request, issued again, resumes it; any other
    /// table operation of the vCPU gives it up (tears down what it took).
    validating: Option<(Mfn, u8)>,
    /// A table whose teardown this vCPU owes: it holds the table's general reference until the
    /// teardown is done. Every preemptible operation finishes it first.
    teardown: Option<Mfn>,
}

impl Pending {
    /// True when nothing is left unfinished.
    pub fn is_idle(&self) -> bool {
        self.validating.is_none() && !self.owes_teardown()
    }

    /// True when a teardown is left for [`FrameTable::finish_teardown`].
    pub fn owes_teardown(&self) -> bool {
        self.teardown.is_some()
    }
}

/// What [`FrameTable::get_entry`] took for an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    /// Everything the entry needs.
    Done,
    /// A general reference and the claim on a table one level down, whose validation the
    /// caller runs next.
    ClaimedTable,
}

/// What [`FrameTable::put_entry`] left to do for an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dropped {
    /// Nothing.
    Done,
    /// The table one level down lost its last type reference and starts its teardown; the
    /// caller's general reference on it goes once the teardown is done.
    ChildTearingDown,
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
    /// The operation's budget ran out part way; its state is kept: issue it again to go on.
    Preempted,
    /// A table's validation or teardown by another operation is under way: try again later.
    Busy,
    /// A not-present entry that L1TF could read through (an address the L1D may hold, or PSE
    /// above L1), in a domain checked against it: the kernel crashes the domain (Xen's
    /// `pv_l1tf_check_pte` without shadow paging).
    L1tf {
        /// The level of the table it was meant for.
        level: u8,
        /// The entry.
        entry: u64,
    },
}

/// Access to page-table frames (the kernel uses the direct map; tests use a fake).
pub trait PtMemory {
    /// Reads entry `idx` (0-511) of frame `mfn`.
    fn read(&self, mfn: Mfn, idx: usize) -> u64;
    /// Writes entry `idx` of frame `mfn`.
    fn write(&mut self, mfn: Mfn, idx: usize, val: u64);
    /// Writes the hypervisor's own entries into slots 256-271 of the L4 frame `mfn` (done once
    /// the frame is validated as an L4, so every guest L4 carries the hypervisor).
    fn install_hypervisor_slots(&mut self, mfn: Mfn);
    /// Flushes the guest translations from every CPU's TLB, returning once all are gone.
    fn flush_tlbs(&mut self);
    /// An entry of the L4 `mfn`, which may be some CPU's page-table root, was just changed
    /// (CPUs that run guests on copies of their L4, XPTI, copy it again).
    fn root_entry_changed(&mut self, mfn: Mfn);
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
    /// The domains whose not-present entries are checked against L1TF, with the addresses
    /// safe on this machine (Xen's `d->arch.pv.check_l1tf`).
    l1tf: Vec<(Dom, SafeMaddr)>,
    /// Full TLB flushes so far, plus one: a frame stamped with the current value lost a mapping
    /// that some CPU may still translate.
    flush_gen: u32,
    /// Domains that mapped another domain's frames by `mmu_update` with a foreign domain
    /// ([`Self::mod_entry_foreign_preemptible`]): their L1 tables may name frames they do not
    /// own ([`Self::audit`]). Forgotten when the domain is relinquished.
    foreign_mappers: Vec<Dom>,
    /// Domains being relinquished, or relinquished but for frames referenced from outside
    /// (zombies): the last reference on one of their frames going sets [`Self::resweep`].
    relinquished: Vec<Dom>,
    /// A frame of a relinquished domain lost its last reference since
    /// [`Self::take_resweep`]: it can be freed now, by a fresh relinquishment.
    resweep: bool,
    /// The domain [`Self::relinquish_preemptible`] is sweeping now: its own frames' last
    /// references going ask for nothing (the sweep frees them itself).
    sweeping: Option<Dom>,
}

impl<'a> FrameTable<'a> {
    /// A table for frames `0..storage.len()`, all marked free.
    pub fn new(storage: &'a mut [FrameInfo]) -> Self {
        storage.fill(FrameInfo::FREE);
        Self {
            frames: storage,
            iomem: Vec::new(),
            iomem_ro: RangeSet::new(),
            l1tf: Vec::new(),
            flush_gen: 1,
            foreign_mappers: Vec::new(),
            relinquished: Vec::new(),
            resweep: false,
            sweeping: None,
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
        let target = pte::mfn(e);
        let e = e & !pte::G;
        if self.iomem_ro.contains(target.raw()) && self.is_io(target) {
            e & !pte::RW
        } else {
            e
        }
    }

    /// True for an I/O frame: beyond the table (device memory) or owned by [`DOM_IO`].
    pub fn is_io(&self, mfn: Mfn) -> bool {
        self.info(mfn).is_none_or(|f| f.owner == Some(DOM_IO))
    }

    /// True for a frame shared read-only with privileged domains (owned by [`DOM_XEN`]).
    pub fn is_xen_ro(&self, mfn: Mfn) -> bool {
        self.info(mfn).is_some_and(|f| f.owner == Some(DOM_XEN))
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

    /// Checks `dom`'s not-present entries against L1TF with `safe` from now on (`None`: no
    /// longer). Set when the domain is created, before it has tables.
    pub fn set_l1tf_check(&mut self, dom: Dom, safe: Option<SafeMaddr>) {
        self.l1tf.retain(|(d, _)| *d != dom);
        if let Some(safe) = safe {
            self.l1tf.push((dom, safe));
        }
    }

    /// Refuses a not-present entry of `dom` for a level-`level` table that L1TF could read
    /// through, when `dom` is checked.
    fn check_l1tf(&self, dom: Dom, level: u8, e: u64) -> Result<(), MmError> {
        match self.l1tf.iter().find(|(d, _)| *d == dom) {
            Some((_, safe)) if safe.is_vulnerable(level, e) => {
                Err(MmError::L1tf { level, entry: e })
            }
            _ => Ok(()),
        }
    }

    /// The I/O frame ranges `dom` may map, half-open and ascending (empty unless granted).
    pub fn iomem_ranges(&self, dom: Dom) -> &[(u64, u64)] {
        self.iomem
            .iter()
            .find(|(d, _)| *d == dom)
            .map_or(&[], |(_, set)| set.ranges())
    }

    /// True if `dom` may map I/O frame `mfn`.
    pub fn iomem_allowed(&self, dom: Dom, mfn: Mfn) -> bool {
        self.iomem
            .iter()
            .any(|(d, set)| *d == dom && set.contains(mfn.raw()))
    }

    /// The bookkeeping of `mfn`.
    pub fn info(&self, mfn: Mfn) -> Option<&FrameInfo> {
        self.frames.get(usize::try_from(mfn.raw()).ok()?)
    }

    fn info_mut(&mut self, mfn: Mfn) -> Result<&mut FrameInfo, MmError> {
        usize::try_from(mfn.raw())
            .ok()
            .and_then(|i| self.frames.get_mut(i))
            .ok_or(MmError::BadFrame)
    }

    /// Gives a free frame to `dom`.
    pub fn assign(&mut self, mfn: Mfn, dom: Dom) -> Result<(), MmError> {
        self.assign_range(mfn, 1, dom)
    }

    /// Gives the `n` free frames from `first` on to `dom`, all or none (an extent fresh from
    /// the allocator).
    pub fn assign_range(&mut self, first: Mfn, n: u64, dom: Dom) -> Result<(), MmError> {
        let end = first.raw().checked_add(n).ok_or(MmError::BadFrame)?;
        let frames = || (first.raw()..end).map(Mfn::new);
        for mfn in frames() {
            if self.info(mfn).ok_or(MmError::BadFrame)?.owner.is_some() {
                return Err(MmError::NotOwner);
            }
        }
        for mfn in frames() {
            *self.info_mut(mfn)? = FrameInfo {
                owner: Some(dom),
                ..FrameInfo::FREE
            };
        }
        Ok(())
    }

    /// Takes every frame of `mfns` from `dom`, or none (Xen's `steal_page`, for
    /// `XENMEM_exchange`): each must be releasable as by [`FrameTable::release`], and a frame
    /// listed twice fails the second time. Checking and taking happen in one call, under the
    /// caller's one hold of the table, so no other vCPU can map a frame in between; a taken
    /// frame belongs to nobody, so nothing can map it while the caller finishes the exchange
    /// (it then frees it, or gives it back with [`FrameTable::assign`]).
    pub fn steal(&mut self, mem: &mut dyn PtMemory, mfns: &[Mfn], dom: Dom) -> Result<(), MmError> {
        let mut taken = Vec::with_capacity(mfns.len());
        for &mfn in mfns {
            let result = match self.info(mfn).copied() {
                Some(before) => self.release(mem, mfn, dom).map(|()| before),
                None => Err(MmError::BadFrame),
            };
            match result {
                Ok(before) => taken.push((mfn, before)),
                Err(e) => {
                    // Put back exactly what was there (a flush `release` did stays valid).
                    for (m, before) in taken.into_iter().rev() {
                        *self.info_mut(m)? = before;
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Takes a frame back from `dom` (ballooning): only an unreferenced, untyped, unpinned frame
    /// of `dom` can go, so nothing can still map it.
    pub fn release(&mut self, mem: &mut dyn PtMemory, mfn: Mfn, dom: Dom) -> Result<(), MmError> {
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
    pub fn get_page(&mut self, mfn: Mfn, dom: Dom) -> Result<(), MmError> {
        let f = self.info_mut(mfn)?;
        if f.owner != Some(dom) {
            return Err(MmError::NotOwner);
        }
        f.ref_count = f.ref_count.checked_add(1).ok_or(MmError::Overflow)?;
        Ok(())
    }

    /// Drops a general reference. The last one on a frame of a relinquished domain asks for a
    /// fresh relinquishment ([`Self::take_resweep`]), as Xen frees a dead domain's page on its
    /// last `put_page`.
    pub fn put_page(&mut self, mfn: Mfn) {
        if let Ok(f) = self.info_mut(mfn) {
            debug_assert!(f.ref_count > 0, "reference count underflow on mfn {mfn:#x}");
            f.ref_count = f.ref_count.saturating_sub(1);
            let (owner, last) = (f.owner, f.ref_count == 0);
            if last
                && owner != self.sweeping
                && owner.is_some_and(|o| self.relinquished.contains(&o))
            {
                self.resweep = true;
            }
        }
    }

    /// True (once) if a frame of a relinquished domain lost its last reference since the last
    /// call: the caller runs that domain's relinquishment again to free it.
    pub fn take_resweep(&mut self) -> bool {
        core::mem::take(&mut self.resweep)
    }

    /// Takes a type reference: sets the type (validating a table to the end, however long) if
    /// none is held, else requires the same type. The caller holds a general reference. For
    /// guest-triggered table references use [`Self::get_table_preemptible`].
    pub fn get_page_type(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: Mfn,
        ty: PageType,
        dom: Dom,
    ) -> Result<(), MmError> {
        if let PageType::Table(level) = ty {
            let r = self.unbounded(mem, |ft, mem, p, b| {
                ft.get_table_preemptible(mem, mfn, level, dom, p, b)
            });
            // Only the type reference was asked for: the caller holds a general one already.
            if r.is_ok() {
                self.put_page(mfn);
            }
            return r;
        }
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
        if ty == PageType::SegDesc {
            // Every descriptor of the page must pass (`descriptor::check`); fix-ups (DPL 3)
            // are written back, as Xen does.
            let checked: Option<Vec<(usize, u64, u64)>> = (0..512)
                .map(|i| {
                    let d = mem.read(mfn, i);
                    descriptor::check(d).map(|f| (i, d, f))
                })
                .collect();
            let checked = checked.ok_or(MmError::BadFlags)?;
            for (i, d, f) in checked {
                if d != f {
                    mem.write(mfn, i, f);
                }
            }
        }
        let fm = self.info_mut(mfn)?;
        fm.ty = ty;
        fm.type_count = 1;
        Ok(())
    }

    /// Drops a type reference; the last one of a table tears it down (to the end, however
    /// long: guest-triggered drops of table references use [`Self::put_table_preemptible`]).
    pub fn put_page_type(&mut self, mem: &mut dyn PtMemory, mfn: Mfn) {
        let Ok(fm) = self.info_mut(mfn) else { return };
        if let (PageType::Table(_), 1) = (fm.ty, fm.type_count) {
            debug_assert!(fm.progress == Progress::Idle);
            fm.progress = Progress::tearing_down(512, false);
            let _ = self.teardown(mem, mfn, &mut Budget::unlimited());
            return;
        }
        debug_assert!(fm.type_count > 0, "type count underflow on mfn {mfn:#x}");
        fm.type_count = fm.type_count.saturating_sub(1);
        if fm.type_count == 0 {
            fm.ty = PageType::None;
        }
    }

    /// Runs a preemptible operation with no budget limit and no work left pending afterwards
    /// (boot-time building, host tests, and the non-preemptible entry points).
    fn unbounded<R>(
        &mut self,
        mem: &mut dyn PtMemory,
        op: impl FnOnce(&mut Self, &mut dyn PtMemory, &mut Pending, &mut Budget) -> Result<R, MmError>,
    ) -> Result<R, MmError> {
        let mut pending = Pending::default();
        let r = op(self, mem, &mut pending, &mut Budget::unlimited());
        self.cancel_pending(mem, &mut pending);
        r
    }

    /// Gives up `pending`'s unfinished validation and finishes its teardowns, however long
    /// (the end of an unbounded operation; the host fuzzer).
    pub fn cancel_pending(&mut self, mem: &mut dyn PtMemory, pending: &mut Pending) {
        let _ = self.give_up_preemptible(mem, pending, &mut Budget::unlimited());
    }

    /// Gives up `pending`'s unfinished validation and finishes its teardowns as far as
    /// `budget` allows (`Preempted`: call again): a vCPU that stops running, whose half-done
    /// tables would otherwise stay `Busy` for every other vCPU.
    pub fn give_up_preemptible(
        &mut self,
        mem: &mut dyn PtMemory,
        pending: &mut Pending,
        budget: &mut Budget,
    ) -> Result<(), MmError> {
        self.finish_teardown(mem, pending, budget)?;
        self.abandon(mem, pending);
        self.finish_teardown(mem, pending, budget)
    }

    /// Slot `i` of a level-`level` table, moved past the hypervisor's L4 slots.
    fn skip_hypervisor_slots(level: u8, i: usize) -> usize {
        if level == 4 && HYPERVISOR_L4_SLOTS.contains(&i) {
            HYPERVISOR_L4_SLOTS.end
        } else {
            i
        }
    }

    fn progress(&self, mfn: Mfn) -> Progress {
        self.info(mfn).map_or(Progress::Idle, |f| f.progress)
    }

    fn set_progress(&mut self, mfn: Mfn, p: Progress) {
        if let Ok(f) = self.info_mut(mfn) {
            f.progress = p;
        }
    }

    fn target(mem: &dyn PtMemory, mfn: Mfn, slot: usize) -> Mfn {
        pte::mfn(mem.read(mfn, slot))
    }

    /// Continues validating `mfn`, a level-`level` table of `dom` in [`Progress::Validating`].
    /// `Ok`: fully validated (and idle). `Preempted`/`Busy`: stopped, the state kept in the
    /// frames for the next call. Any other error: validation failed and the frame is now
    /// [`Progress::TearingDown`] what it had taken, for its holder to finish.
    fn validate(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: Mfn,
        level: u8,
        dom: Dom,
        budget: &mut Budget,
    ) -> Result<(), MmError> {
        loop {
            let Progress::Validating { next, child } = self.progress(mfn) else {
                return Ok(());
            };
            let i = usize::from(next);
            if child {
                let target = Self::target(mem, mfn, i);
                match self.validate(mem, target, level - 1, dom, budget) {
                    Ok(()) => self.set_progress(mfn, Progress::validating(i + 1, false)),
                    Err(e @ (MmError::Preempted | MmError::Busy)) => return Err(e),
                    Err(e) => {
                        self.set_progress(mfn, Progress::tearing_down(i + 1, true));
                        return Err(e);
                    }
                }
                continue;
            }
            let i = Self::skip_hypervisor_slots(level, i);
            if i >= 512 {
                self.set_progress(mfn, Progress::Idle);
                if level == 4 {
                    mem.install_hypervisor_slots(mfn);
                }
                return Ok(());
            }
            if !budget.take() {
                self.set_progress(mfn, Progress::validating(i, false));
                return Err(MmError::Preempted);
            }
            let raw = mem.read(mfn, i);
            let e = self.fix_entry(level, raw);
            match self.get_entry(mem, mfn, level, e, dom, dom) {
                Ok(taken) => {
                    if e != raw {
                        mem.write(mfn, i, e);
                    }
                    let claimed = taken == Taken::ClaimedTable;
                    let next = if claimed { i } else { i + 1 };
                    self.set_progress(mfn, Progress::validating(next, claimed));
                }
                Err(MmError::Busy) => {
                    self.set_progress(mfn, Progress::validating(i, false));
                    return Err(MmError::Busy);
                }
                Err(e) => {
                    self.set_progress(mfn, Progress::tearing_down(i, false));
                    return Err(e);
                }
            }
        }
    }

    /// Continues tearing down `mfn` (in [`Progress::TearingDown`]): drops what its entries hold,
    /// from the highest slot down. `Ok`: done, the frame has no type left. `Preempted`: stopped,
    /// the state kept in the frames.
    fn teardown(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: Mfn,
        budget: &mut Budget,
    ) -> Result<(), MmError> {
        let level = match self.info(mfn).map(|f| f.ty) {
            Some(PageType::Table(level)) => level,
            _ => return Ok(()),
        };
        loop {
            let Progress::TearingDown { left, child } = self.progress(mfn) else {
                return Ok(());
            };
            let mut left = usize::from(left);
            if child {
                let target = Self::target(mem, mfn, left - 1);
                self.teardown(mem, target, budget)?;
                self.put_page(target);
                self.set_progress(mfn, Progress::tearing_down(left - 1, false));
                continue;
            }
            if level == 4 && left > HYPERVISOR_L4_SLOTS.start && left <= HYPERVISOR_L4_SLOTS.end {
                left = HYPERVISOR_L4_SLOTS.start;
            }
            if left == 0 {
                let f = self.info_mut(mfn)?;
                f.ty = PageType::None;
                f.type_count = 0;
                f.progress = Progress::Idle;
                return Ok(());
            }
            if !budget.take() {
                self.set_progress(mfn, Progress::tearing_down(left, false));
                return Err(MmError::Preempted);
            }
            let e = mem.read(mfn, left - 1);
            let child = self.put_entry(mem, mfn, level, e) == Dropped::ChildTearingDown;
            let left = if child { left } else { left - 1 };
            self.set_progress(mfn, Progress::tearing_down(left, child));
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

    /// Takes the references a present entry of the level-`level` table `holder` needs. A table
    /// one level down that has no type yet is claimed ([`Taken::ClaimedTable`]: its validation
    /// is the caller's to run); one whose own validation or teardown is under way is `Busy`; a
    /// frame of another type may still make a linear entry ([`Self::get_linear`]). A
    /// not-present entry takes nothing, but must pass the domain's L1TF check: every guest
    /// entry comes through here (table validation and [`Self::mod_entry_preemptible`]).
    ///
    /// `pg` owns the frames an L1 entry may name (Xen's `pg_owner`): `dom` itself but for a
    /// foreign mapping ([`Self::mod_entry_foreign_preemptible`]), where an I/O frame must be
    /// in both domains' I/O-memory sets (Xen's `get_page_from_l1e`).
    #[allow(clippy::too_many_arguments)] // The table, the entry and both owners.
    fn get_entry(
        &mut self,
        mem: &mut dyn PtMemory,
        holder: Mfn,
        level: u8,
        e: u64,
        dom: Dom,
        pg: Dom,
    ) -> Result<Taken, MmError> {
        if e & pte::P == 0 {
            return self.check_l1tf(dom, level, e).map(|()| Taken::Done);
        }
        Self::check_flags(level, e)?;
        let target = pte::mfn(e);
        if level == 1 && self.is_io(target) {
            return if self.iomem_allowed(pg, target) && self.iomem_allowed(dom, target) {
                Ok(Taken::Done)
            } else {
                Err(MmError::NoIoAccess)
            };
        }
        if level == 1 && self.is_xen_ro(target) {
            // Xen answers a writable mapping with its type conflict, another owner with its
            // ownership check: both -EBUSY.
            return match (pg == DOM_XEN, e & pte::RW != 0) {
                (true, false) => Ok(Taken::Done),
                (true, true) => Err(MmError::TypeConflict),
                (false, _) => Err(MmError::NotOwner),
            };
        }
        let pg = if level == 1 { pg } else { dom };
        self.get_page(target, pg)?;
        let r = match level {
            1 if e & pte::RW != 0 => self
                .get_page_type(mem, target, PageType::Writable, pg)
                .map(|()| Taken::Done),
            1 => Ok(Taken::Done),
            l => self.claim_table(mem, target, l - 1),
        };
        if r.is_err() {
            self.put_page(target);
        }
        match r {
            Err(MmError::TypeConflict) if level > 1 => {
                self.get_linear(holder, level, e, dom).map(|()| Taken::Done)
            }
            r => r,
        }
    }

    /// Takes what the present entry `e` of the level-`level` table `holder` needs as a linear
    /// entry (Xen's `get_lN_linear_pagetable`): nothing if it names `holder` itself, else a
    /// general and a level-`level` type reference on the validated, idle table it names, and
    /// one more linear entry in `holder` and linear use in the target (neither may already be
    /// the other). Refused (`TypeConflict`, as the ordinary entry was) when writable.
    fn get_linear(&mut self, holder: Mfn, level: u8, e: u64, dom: Dom) -> Result<(), MmError> {
        let target = pte::mfn(e);
        if e & pte::RW != 0 {
            return Err(MmError::TypeConflict);
        }
        if target == holder {
            return Ok(());
        }
        let h = *self.info(holder).ok_or(MmError::BadFrame)?;
        if h.owner != Some(dom) {
            return Err(MmError::NotOwner);
        }
        self.get_page(target, dom)?;
        let t = *self.info(target).ok_or(MmError::BadFrame)?;
        let validated =
            t.ty == PageType::Table(level) && t.type_count > 0 && t.progress == Progress::Idle;
        // The holder may hold more linear entries only while nothing maps it linearly, the
        // target be mapped linearly once more only while it holds none.
        let counts = (
            h.linear.checked_add(1).filter(|&n| n > 0),
            t.linear.checked_sub(1).filter(|&n| n < 0),
            t.type_count.checked_add(1),
        );
        let (true, (Some(entries), Some(uses), Some(types))) = (validated, counts) else {
            self.put_page(target);
            return Err(MmError::TypeConflict);
        };
        self.info_mut(holder)?.linear = entries;
        let tm = self.info_mut(target)?;
        tm.linear = uses;
        tm.type_count = types;
        Ok(())
    }

    /// Takes a level-`level` table type reference on `mfn`: one more on an idle table of that
    /// level, or the claim on an untyped frame, which starts its validation.
    fn claim_table(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: Mfn,
        level: u8,
    ) -> Result<Taken, MmError> {
        let f = *self.info(mfn).ok_or(MmError::BadFrame)?;
        if f.type_count > 0 {
            if f.ty != PageType::Table(level) {
                return Err(MmError::TypeConflict);
            }
            if f.progress != Progress::Idle {
                return Err(MmError::Busy);
            }
            self.info_mut(mfn)?.type_count =
                f.type_count.checked_add(1).ok_or(MmError::Overflow)?;
            return Ok(Taken::Done);
        }
        // No stale translation may outlive the frame's last use of another kind (invariant 5).
        let stale = f.unmapped_at == self.flush_gen;
        self.flush_if(stale, mem);
        // Claimed before validating, so a table that (directly or not) refers to itself meets
        // a conflict instead of recursing forever.
        let fm = self.info_mut(mfn)?;
        fm.ty = PageType::Table(level);
        fm.type_count = 1;
        fm.progress = Progress::validating(0, false);
        Ok(Taken::ClaimedTable)
    }

    /// Drops what a present entry of the level-`level` table `holder` holds. A table one level
    /// down (or, for a linear entry, of the same level) that loses its last type reference
    /// starts its teardown ([`Dropped::ChildTearingDown`]: the caller's general reference on it
    /// stays until the teardown is done).
    fn put_entry(&mut self, mem: &mut dyn PtMemory, holder: Mfn, level: u8, e: u64) -> Dropped {
        if e & pte::P == 0 {
            return Dropped::Done;
        }
        let target = pte::mfn(e);
        if level == 1 && (self.is_io(target) || self.is_xen_ro(target)) {
            return Dropped::Done;
        }
        let generation = self.flush_gen;
        let linear = level > 1
            && self
                .info(target)
                .is_some_and(|t| t.ty == PageType::Table(level));
        if linear
            && target != holder
            && let Ok(h) = self.info_mut(holder)
        {
            debug_assert!(
                h.linear > 0,
                "linear entry count underflow on mfn {holder:#x}"
            );
            h.linear = h.linear.saturating_sub(1);
        }
        let Ok(f) = self.info_mut(target) else {
            return Dropped::Done;
        };
        // A self-mapping holds nothing, but translations through it reached the table itself.
        f.unmapped_at = generation;
        if level > 1 {
            f.table_unref_at = generation;
            if target == holder {
                return Dropped::Done;
            }
            if linear {
                debug_assert!(
                    f.linear < 0,
                    "linear use count underflow on mfn {target:#x}"
                );
                f.linear = f.linear.saturating_add(1).min(0);
            }
            debug_assert!(f.type_count > 0, "type count underflow on mfn {target:#x}");
            if f.type_count == 1 {
                // The last reference: the type count stays 1, held by the teardown.
                f.progress = Progress::tearing_down(512, false);
                return Dropped::ChildTearingDown;
            }
            f.type_count = f.type_count.saturating_sub(1);
        } else if e & pte::RW != 0 {
            self.put_page_type(mem, target);
        }
        self.put_page(target);
        Dropped::Done
    }

    /// Takes a general and a level-`level` table type reference on `dom`'s frame `mfn`
    /// (pinning, base pointers, a new vCPU's CR3), validating it as far as `budget` allows
    /// (Xen's `get_page_type_preemptible`). `Preempted` or `Busy`: issue the same request again
    /// (`pending` remembers the validation under way and resumes it). A validation that fails
    /// leaves its teardown in `pending` when the budget does not cover it.
    pub fn get_table_preemptible(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: Mfn,
        level: u8,
        dom: Dom,
        pending: &mut Pending,
        budget: &mut Budget,
    ) -> Result<(), MmError> {
        if !(1..=4).contains(&level) {
            return Err(MmError::NotATable);
        }
        // Always first, resuming or not: a teardown left by an unpin between two issues of a
        // preempted pin would otherwise be overwritten below and leak its tree.
        self.finish_teardown(mem, pending, budget)?;
        if pending.validating != Some((mfn, level)) {
            self.abandon(mem, pending);
            self.finish_teardown(mem, pending, budget)?;
            let f = *self.info(mfn).ok_or(MmError::BadFrame)?;
            if f.owner != Some(dom) {
                return Err(MmError::NotOwner);
            }
            self.get_page(mfn, dom)?;
            match self.claim_table(mem, mfn, level) {
                Ok(Taken::Done) => return Ok(()),
                Ok(Taken::ClaimedTable) => {}
                Err(e) => {
                    self.put_page(mfn);
                    return Err(e);
                }
            }
        }
        pending.validating = None;
        match self.validate(mem, mfn, level, dom, budget) {
            Ok(()) => Ok(()),
            Err(e @ (MmError::Preempted | MmError::Busy)) => {
                pending.validating = Some((mfn, level));
                Err(e)
            }
            Err(e) => {
                pending.teardown = Some(mfn);
                // Whatever the budget leaves is finished before the vCPU's next operation.
                let _ = self.finish_teardown(mem, pending, budget);
                Err(e)
            }
        }
    }

    /// Drops a general and a table type reference on `mfn` (unpinning, base pointers). The
    /// last type reference starts the table's teardown, which runs as far as `budget` allows
    /// and is left in `pending` for [`Self::finish_teardown`] otherwise (Xen's
    /// `old_guest_table`). The caller has finished `pending`'s teardown first.
    pub fn put_table_preemptible(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: Mfn,
        pending: &mut Pending,
        budget: &mut Budget,
    ) {
        let Ok(f) = self.info_mut(mfn) else { return };
        debug_assert!(f.type_count > 0 && f.progress == Progress::Idle);
        if f.type_count > 1 {
            f.type_count -= 1;
            self.put_page(mfn);
            return;
        }
        f.progress = Progress::tearing_down(512, false);
        debug_assert!(pending.teardown.is_none(), "a second teardown left pending");
        if pending.teardown.is_some() {
            // Callers finish the pending teardown first; were one still there, finishing it
            // however long is better than losing it (its tree would stay referenced).
            let _ = self.finish_teardown(mem, pending, &mut Budget::unlimited());
        }
        pending.teardown = Some(mfn);
        let _ = self.finish_teardown(mem, pending, budget);
    }

    /// Continues the teardown `pending` holds, as far as `budget` allows: `Preempted` while
    /// work is left. Every preemptible operation calls it first, so a vCPU's old tables are
    /// gone before it does anything else with its frames.
    pub fn finish_teardown(
        &mut self,
        mem: &mut dyn PtMemory,
        pending: &mut Pending,
        budget: &mut Budget,
    ) -> Result<(), MmError> {
        let Some(root) = pending.teardown else {
            return Ok(());
        };
        self.teardown(mem, root, budget)?;
        self.put_page(root);
        pending.teardown = None;
        Ok(())
    }

    /// True if `table` is on the chain of tables `pending`'s validation has claimed and not
    /// finished (its root, and each part-way child below it).
    fn in_own_validation(&self, mem: &dyn PtMemory, pending: &Pending, table: Mfn) -> bool {
        let Some((mut mfn, _)) = pending.validating else {
            return false;
        };
        loop {
            if mfn == table {
                return true;
            }
            match self.progress(mfn) {
                Progress::Validating { next, child: true } => {
                    mfn = Self::target(mem, mfn, usize::from(next));
                }
                _ => return false,
            }
        }
    }

    /// Turns `pending`'s unfinished validation (one the guest did not ask to resume) into a
    /// teardown of what it took, down the chain of claimed tables part way through. The caller
    /// has finished `pending`'s teardown first.
    fn abandon(&mut self, mem: &dyn PtMemory, pending: &mut Pending) {
        let Some((root, _)) = pending.validating.take() else {
            return;
        };
        let mut mfn = root;
        while let Progress::Validating { next, child } = self.progress(mfn) {
            let next = usize::from(next);
            self.set_progress(
                mfn,
                Progress::tearing_down(next + usize::from(child), child),
            );
            if !child {
                break;
            }
            mfn = Self::target(mem, mfn, next);
        }
        pending.teardown = Some(root);
    }

    /// Updates entry `idx` of the validated level-`level` table `table` owned by `dom`: takes the
    /// new entry's references (validating a new table below, as far as `budget` allows), writes
    /// it, then drops the old one's (a table below that loses its last reference is torn down
    /// as far as `budget` allows, the rest left in `pending`). `Preempted` or `Busy`: issue the
    /// same update again.
    #[allow(clippy::too_many_arguments)] // The table, the entry and the preemption state.
    pub fn mod_entry_preemptible(
        &mut self,
        mem: &mut dyn PtMemory,
        table: Mfn,
        level: u8,
        idx: usize,
        new: u64,
        dom: Dom,
        pending: &mut Pending,
        budget: &mut Budget,
    ) -> Result<(), MmError> {
        self.mod_entry_foreign_preemptible(mem, table, level, idx, new, (dom, dom), pending, budget)
    }

    /// [`Self::mod_entry_preemptible`] of a table of `owners.0` by an `mmu_update` whose
    /// foreign domain is `owners.1` (Xen's `pt_owner` and `pg_owner`): a present L1 entry
    /// names a frame of `owners.1` (the control domain mapping another domain's memory, for
    /// its builder or its device models), taking a reference on it (and its writable type)
    /// that the entry holds until it is replaced or its table torn down, as any L1 entry's.
    /// Only L1 entries may name a foreign domain's frames (`NotATable` above, as Xen's -EINVAL).
    /// Who may name which foreign domain is the caller's question.
    #[allow(clippy::too_many_arguments)] // The table, the entry and the preemption state.
    pub fn mod_entry_foreign_preemptible(
        &mut self,
        mem: &mut dyn PtMemory,
        table: Mfn,
        level: u8,
        idx: usize,
        new: u64,
        (dom, pg): (Dom, Dom),
        pending: &mut Pending,
        budget: &mut Budget,
    ) -> Result<(), MmError> {
        if !(1..=4).contains(&level) || (level > 1 && pg != dom) {
            return Err(MmError::NotATable);
        }
        // The vCPU's own old tables go first: the update may be about one of them.
        self.finish_teardown(mem, pending, budget)?;
        // An update inside the vCPU's own validation under way means the guest gave that
        // validation up (nobody else would ever finish it): tear it down first. Another
        // vCPU's table part way through is `Busy` below, and costs this vCPU nothing.
        if self.in_own_validation(mem, pending, table) {
            self.abandon(mem, pending);
            self.finish_teardown(mem, pending, budget)?;
        }
        let t = *self.info(table).ok_or(MmError::BadFrame)?;
        if t.owner != Some(dom) {
            return Err(MmError::NotATable);
        }
        if t.ty != PageType::Table(level) || t.type_count == 0 || idx >= 512 {
            return Err(MmError::NotATable);
        }
        if t.progress != Progress::Idle {
            return Err(MmError::Busy);
        }
        if level == 4 && HYPERVISOR_L4_SLOTS.contains(&idx) {
            return Err(MmError::HypervisorSlot);
        }
        let new = self.fix_entry(level, new);
        let target = pte::mfn(new);
        if level > 1 && new & pte::P != 0 {
            Self::check_flags(level, new)?;
            match self.get_table_preemptible(mem, target, level - 1, dom, pending, budget) {
                Err(MmError::TypeConflict) => self.get_linear(table, level, new, dom)?,
                r => r?,
            }
        } else {
            self.get_entry(mem, table, level, new, dom, pg)?;
            if pg != dom && new & pte::P != 0 && !self.foreign_mappers.contains(&dom) {
                self.foreign_mappers.push(dom);
            }
        }
        let old = mem.read(table, idx);
        mem.write(table, idx, new);
        if level == 4 {
            mem.root_entry_changed(table);
        }
        if self.put_entry(mem, table, level, old) == Dropped::ChildTearingDown {
            pending.teardown = Some(pte::mfn(old));
            let _ = self.finish_teardown(mem, pending, budget);
        }
        Ok(())
    }

    /// [`Self::mod_entry_preemptible`] run to the end (no `Preempted`).
    pub fn mod_entry(
        &mut self,
        mem: &mut dyn PtMemory,
        table: Mfn,
        level: u8,
        idx: usize,
        new: u64,
        dom: Dom,
    ) -> Result<(), MmError> {
        self.unbounded(mem, |ft, mem, p, b| {
            ft.mod_entry_preemptible(mem, table, level, idx, new, dom, p, b)
        })
    }

    /// Pins `mfn` as a level-`level` table (`MMUEXT_PIN_Lx_TABLE`), validating it as far as
    /// `budget` allows: `Preempted` or `Busy`, issue the same pin again.
    pub fn pin_preemptible(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: Mfn,
        level: u8,
        dom: Dom,
        pending: &mut Pending,
        budget: &mut Budget,
    ) -> Result<(), MmError> {
        if self.info(mfn).is_some_and(|f| f.pinned) {
            return Err(MmError::AlreadyPinned);
        }
        self.get_table_preemptible(mem, mfn, level, dom, pending, budget)?;
        self.info_mut(mfn)?.pinned = true;
        Ok(())
    }

    /// [`Self::pin_preemptible`] run to the end.
    pub fn pin(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: Mfn,
        level: u8,
        dom: Dom,
    ) -> Result<(), MmError> {
        self.unbounded(mem, |ft, mem, p, b| {
            ft.pin_preemptible(mem, mfn, level, dom, p, b)
        })
    }

    /// Unpins `mfn` (`MMUEXT_UNPIN_TABLE`); its teardown runs as far as `budget` allows and the
    /// rest is left in `pending`. `Preempted`: an earlier teardown is still under way; issue the
    /// same unpin again.
    pub fn unpin_preemptible(
        &mut self,
        mem: &mut dyn PtMemory,
        mfn: Mfn,
        dom: Dom,
        pending: &mut Pending,
        budget: &mut Budget,
    ) -> Result<(), MmError> {
        self.finish_teardown(mem, pending, budget)?;
        let f = *self.info(mfn).ok_or(MmError::BadFrame)?;
        if f.owner != Some(dom) {
            return Err(MmError::NotOwner);
        }
        if !f.pinned {
            return Err(MmError::NotATable);
        }
        self.info_mut(mfn)?.pinned = false;
        self.put_table_preemptible(mem, mfn, pending, budget);
        Ok(())
    }

    /// [`Self::unpin_preemptible`] run to the end.
    pub fn unpin(&mut self, mem: &mut dyn PtMemory, mfn: Mfn, dom: Dom) -> Result<(), MmError> {
        self.unbounded(mem, |ft, mem, p, b| {
            ft.unpin_preemptible(mem, mfn, dom, p, b)
        })
    }

    /// Checks that `l1` is a level-1 table of `dom` that can take an entry now, and that `idx`
    /// is inside it (Xen's `page_lock` and type check of grant mappings).
    fn grant_l1(&self, l1: Mfn, idx: usize, dom: Dom) -> Result<(), MmError> {
        let t = *self.info(l1).ok_or(MmError::NotATable)?;
        if t.owner != Some(dom)
            || t.ty != PageType::Table(1)
            || t.type_count == 0
            || t.progress != Progress::Idle
            || idx >= 512
        {
            return Err(MmError::NotATable);
        }
        Ok(())
    }

    /// Writes the grant host mapping `new` (a present [`pte::GNTTAB`] entry naming `granter`'s
    /// frame) into slot `idx` of `dom`'s L1 table `l1` (Xen's `create_grant_pv_mapping`): the
    /// entry takes a reference on the frame, and its writable type if `new` is writable, as
    /// any L1 entry does (so the frame table audit, page-table teardown and `put_entry`
    /// account for it alike); what the old entry held is dropped.
    pub fn grant_map_l1e(
        &mut self,
        mem: &mut dyn PtMemory,
        l1: Mfn,
        idx: usize,
        dom: Dom,
        new: u64,
        granter: Dom,
    ) -> Result<(), MmError> {
        self.grant_l1(l1, idx, dom)?;
        let target = pte::mfn(new);
        self.get_page(target, granter)?;
        if new & pte::RW != 0
            && let Err(e) = self.get_page_type(mem, target, PageType::Writable, granter)
        {
            self.put_page(target);
            return Err(e);
        }
        let old = mem.read(l1, idx);
        mem.write(l1, idx, self.fix_entry(1, new));
        self.put_entry(mem, l1, 1, old);
        Ok(())
    }

    /// Replaces the grant host mapping of frame `mfn` (writable or not, `rw`) in slot `idx` of
    /// `dom`'s L1 table `l1` with `new` (0, or an entry taken by [`Self::grant_steal_l1e`]
    /// whose references move with it), and drops what the grant entry held (Xen's
    /// `replace_grant_pv_mapping` with `unmap_common_complete`'s `put_page`). Refused when the
    /// slot does not map `mfn` present with that `RW`.
    #[allow(clippy::too_many_arguments)] // The slot, the mapping expected and the new entry.
    pub fn grant_unmap_l1e(
        &mut self,
        mem: &mut dyn PtMemory,
        l1: Mfn,
        idx: usize,
        dom: Dom,
        mfn: Mfn,
        rw: bool,
        new: u64,
    ) -> Result<(), MmError> {
        self.grant_l1(l1, idx, dom)?;
        let old = mem.read(l1, idx);
        let want = pte::P | if rw { pte::RW } else { 0 };
        if pte::mfn(old) != mfn || old & (pte::P | pte::RW) != want {
            return Err(MmError::NotATable);
        }
        mem.write(l1, idx, new);
        self.put_entry(mem, l1, 1, old);
        Ok(())
    }

    /// Clears slot `idx` of `dom`'s L1 table `l1` and returns the entry, whose references
    /// the caller now holds (Xen's `steal_linear_address`, for `GNTTABOP_unmap_and_replace`):
    /// it goes into another slot, or to [`Self::put_l1e`].
    pub fn grant_steal_l1e(
        &mut self,
        mem: &mut dyn PtMemory,
        l1: Mfn,
        idx: usize,
        dom: Dom,
    ) -> Result<u64, MmError> {
        self.grant_l1(l1, idx, dom)?;
        let old = mem.read(l1, idx);
        mem.write(l1, idx, 0);
        Ok(old)
    }

    /// Drops what the L1 entry `e` held (one taken out of the L1 table `l1`).
    pub fn put_l1e(&mut self, mem: &mut dyn PtMemory, l1: Mfn, e: u64) {
        self.put_entry(mem, l1, 1, e);
    }

    /// Takes back everything the dying domain `dom` holds, as far as `budget` allows
    /// (`Preempted`: call again with the same `rel`), in [`Relinquish`]'s order: its vCPUs'
    /// unfinished work given up, the references Hestia held for it dropped, every table it
    /// pinned unpinned (each tree torn down as its last type reference goes), then every frame
    /// it owns that nothing references any more made free, its number pushed to `freed` for
    /// the caller to scrub and return to the allocator. `Ok`: done; frames still referenced
    /// from outside the domain stay its own ([`Relinquish::kept`]). Xen's
    /// `domain_relinquish_resources` with `vcpu_destroy_pagetables` and `relinquish_memory`.
    ///
    /// The caller guarantees the domain runs no more and nothing but `rel` acts for it: its
    /// vCPUs are off every CPU, their `Pending`s and Hestia's holds were moved into `rel`.
    pub fn relinquish_preemptible(
        &mut self,
        mem: &mut dyn PtMemory,
        dom: Dom,
        rel: &mut Relinquish,
        budget: &mut Budget,
        freed: &mut Vec<Mfn>,
    ) -> Result<(), MmError> {
        if !self.relinquished.contains(&dom) {
            self.relinquished.push(dom);
        }
        // Its own frames' drops need no fresh sweep: this one frees what they leave
        // unreferenced. Another dead domain's (a frame this one mapped) do.
        self.sweeping = Some(dom);
        let r = self.relinquish_steps(mem, dom, rel, budget, freed);
        self.sweeping = None;
        if r.is_ok() && rel.kept == 0 {
            self.relinquished.retain(|&d| d != dom);
        }
        r
    }

    /// The steps of [`Self::relinquish_preemptible`].
    fn relinquish_steps(
        &mut self,
        mem: &mut dyn PtMemory,
        dom: Dom,
        rel: &mut Relinquish,
        budget: &mut Budget,
        freed: &mut Vec<Mfn>,
    ) -> Result<(), MmError> {
        loop {
            // A tree an earlier step (or preemption) left half torn down goes first.
            self.finish_teardown(mem, &mut rel.teardown, budget)?;
            match rel.step {
                RelinquishStep::GiveUp(i) => match rel.pendings.get_mut(i) {
                    Some(p) => {
                        self.give_up_preemptible(mem, p, budget)?;
                        rel.step = RelinquishStep::GiveUp(i + 1);
                    }
                    None => rel.step = RelinquishStep::Holds(0),
                },
                RelinquishStep::Holds(i) => {
                    let Some(&h) = rel.holds.get(i) else {
                        rel.step = RelinquishStep::Unpin(Mfn::new(0));
                        continue;
                    };
                    if !budget.take() {
                        return Err(MmError::Preempted);
                    }
                    rel.step = RelinquishStep::Holds(i + 1);
                    if !self.drop_hold(mem, h, dom, &mut rel.teardown, budget) {
                        rel.bad_holds += 1;
                    }
                }
                RelinquishStep::Unpin(mfn) => {
                    let Some(f) = self.info(mfn).copied() else {
                        rel.step = RelinquishStep::Free(Mfn::new(0));
                        continue;
                    };
                    if !budget.take() {
                        return Err(MmError::Preempted);
                    }
                    rel.step = RelinquishStep::Unpin(Mfn::new(mfn.raw() + 1));
                    if f.owner == Some(dom) && f.pinned {
                        self.info_mut(mfn)?.pinned = false;
                        self.put_table_preemptible(mem, mfn, &mut rel.teardown, budget);
                    }
                }
                RelinquishStep::Free(mfn) => {
                    let Some(f) = self.info(mfn).copied() else {
                        // The domain has no tables left: forget its per-domain settings.
                        self.iomem.retain(|(d, _)| *d != dom);
                        self.l1tf.retain(|(d, _)| *d != dom);
                        self.foreign_mappers.retain(|&d| d != dom);
                        rel.step = RelinquishStep::Done;
                        continue;
                    };
                    if !budget.take() {
                        return Err(MmError::Preempted);
                    }
                    rel.step = RelinquishStep::Free(Mfn::new(mfn.raw() + 1));
                    if f.owner != Some(dom) {
                        continue;
                    }
                    if f.ref_count != 0 || f.type_count != 0 || f.progress != Progress::Idle {
                        rel.kept += 1;
                        continue;
                    }
                    // As `release`: no CPU may still translate a removed mapping of it.
                    let stale = f.unmapped_at == self.flush_gen;
                    *self.info_mut(mfn)? = FrameInfo::FREE;
                    self.flush_if(stale, mem);
                    freed.push(mfn);
                }
                RelinquishStep::Done => return Ok(()),
            }
        }
    }

    /// Drops `h`, a reference Hestia held for `dom` (a table's last type reference starts its
    /// teardown, left in `teardown` when the budget runs out). False, dropping nothing, when
    /// the frame holds no such reference of `dom` (the caller's list was wrong).
    fn drop_hold(
        &mut self,
        mem: &mut dyn PtMemory,
        h: Hold,
        dom: Dom,
        teardown: &mut Pending,
        budget: &mut Budget,
    ) -> bool {
        let generation = self.flush_gen;
        let Ok(f) = self.info_mut(h.mfn) else {
            return false;
        };
        let typed = |ty| f.ty == ty && f.type_count > 0 && f.progress == Progress::Idle;
        if f.owner != Some(dom) || f.ref_count == 0 || !h.ty.is_none_or(typed) {
            return false;
        }
        match h.ty {
            Some(PageType::Table(_)) => {
                // A base pointer: CPUs walked it as a root (invariant 5).
                f.unmapped_at = generation;
                f.table_unref_at = generation;
                self.put_table_preemptible(mem, h.mfn, teardown, budget);
            }
            Some(_) => {
                self.put_page_type(mem, h.mfn);
                self.put_page(h.mfn);
            }
            None => self.put_page(h.mfn),
        }
        true
    }

    /// The references `rel` still holds for its domain, as [`Hold`]s for [`Self::audit`]
    /// while a relinquishment is under way: the vCPUs' work not given up yet, Hestia's holds
    /// not dropped yet, and a teardown left half done.
    pub fn relinquish_holds<'r>(&'r self, rel: &'r Relinquish) -> impl Iterator<Item = Hold> + 'r {
        let (pendings, holds) = match rel.step {
            RelinquishStep::GiveUp(i) => (rel.pendings.get(i..), rel.holds.get(..)),
            RelinquishStep::Holds(i) => (None, rel.holds.get(i..)),
            _ => (None, None),
        };
        pendings
            .unwrap_or_default()
            .iter()
            .chain(core::iter::once(&rel.teardown))
            .flat_map(|p| self.pending_holds(p))
            .chain(holds.unwrap_or_default().iter().copied())
    }
}

/// A dying domain's relinquishment under way ([`FrameTable::relinquish_preemptible`]), in
/// Xen's order (`domain_relinquish_resources`): each step keeps what the next relies on.
/// 1. Give up the vCPUs' unfinished work (a validation part way through would keep its
///    tables `Busy` and typed for ever).
/// 2. Drop the references Hestia held for the domain outside its tables: base pointers
///    (`vcpu_destroy_pagetables`), descriptor pages, `vcpu_info` and shared_info pages. After
///    this, the domain's table trees are typed only by its pins and by each other.
/// 3. Unpin every pinned table (`relinquish_memory`'s `_PGT_pinned`): as the last type
///    reference of each tree root goes, the tree is torn down, dropping every reference its
///    entries held. Table levels strictly decrease down a tree (no linear page tables), so
///    no cycle can keep a table typed once nothing outside the domain holds it.
/// 4. Free every frame of the domain left without references and types (Xen's `put_page`
///    of the `PGC_allocated` reference), flushing the TLBs first if a mapping of it may still
///    be cached (invariant 5).
///
/// A frame another domain still references (a grant mapping in another domain's L1) is
/// *kept*: it stays owned by the dying domain, with its references, and is counted in
/// [`Relinquish::kept`]. Whoever drops such a reference later runs a fresh relinquishment
/// (no vCPUs, no holds: only steps 3-4) to free what became unreferenced, as Xen frees a dead
/// domain's page on its last `put_page`; the domain is gone once nothing is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relinquish {
    pendings: Vec<Pending>,
    holds: Vec<Hold>,
    step: RelinquishStep,
    /// A table tree whose teardown a dropped hold or an unpin started.
    teardown: Pending,
    kept: u64,
    bad_holds: u64,
}

/// Where [`Relinquish`] has come: the index of the next vCPU or hold, or the next frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RelinquishStep {
    GiveUp(usize),
    Holds(usize),
    Unpin(Mfn),
    Free(Mfn),
    Done,
}

impl Relinquish {
    /// A relinquishment that gives up `pendings` (the domain's vCPUs' unfinished page-table
    /// work, taken out of them) and drops `holds` (the references Hestia held for the
    /// domain, taken out of its vCPUs and pages) first.
    pub fn new(pendings: Vec<Pending>, holds: Vec<Hold>) -> Self {
        Relinquish {
            pendings,
            holds,
            step: RelinquishStep::GiveUp(0),
            teardown: Pending::default(),
            kept: 0,
            bad_holds: 0,
        }
    }

    /// True once every step is done.
    pub fn is_done(&self) -> bool {
        self.step == RelinquishStep::Done
    }

    /// Frames the domain still owns because something outside it references them (counted
    /// by the last step).
    pub fn kept(&self) -> u64 {
        self.kept
    }

    /// Holds that named no reference of the domain and were skipped (a Hestia bug).
    pub fn bad_holds(&self) -> u64 {
        self.bad_holds
    }
}

/// A reference Hestia holds on a frame outside every page table (a vCPU's base pointer, a GDT
/// or LDT page, a registered `vcpu_info`): one general reference, and a type reference of
/// `ty` when it is `Some`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The frame.
    pub mfn: Mfn,
    /// The type it holds, if any.
    pub ty: Option<PageType>,
}

/// Per-frame counters [`FrameTable::audit`] recomputes (scratch storage the caller provides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditCounts {
    refs: u32,
    types: u32,
    /// Linear entries the frame holds, and linear entries naming it.
    linear_entries: u32,
    linear_uses: u32,
}

/// A broken frame-table invariant, as [`FrameTable::audit`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// The scratch storage is shorter than the table.
    ScratchTooSmall,
    /// A frame's reference count is not what the tables, pins and holds account for.
    RefCount {
        /// The frame.
        mfn: Mfn,
        /// What the table says.
        have: u32,
        /// What the references account for.
        want: u32,
    },
    /// A frame's type count is not what the tables, pins and holds account for.
    TypeCount {
        /// The frame.
        mfn: Mfn,
        /// What the table says.
        have: u32,
        /// What the references account for.
        want: u32,
    },
    /// A reference needs a type the frame does not have (a table mapped writable, an L1 used
    /// as an L2...).
    WrongType {
        /// The frame.
        mfn: Mfn,
        /// What the table says.
        have: PageType,
        /// What the references account for.
        want: PageType,
    },
    /// A frame without type references that still names a type (or linear count), a pinned
    /// frame that is not a page table of its owner, or a table both holding linear entries and
    /// named by one.
    BadState {
        /// The frame.
        mfn: Mfn,
    },
    /// A validated table refers to a frame its owner does not own.
    Foreign {
        /// The table frame.
        table: Mfn,
        /// The entry index.
        idx: usize,
        /// The frame the entry names.
        target: Mfn,
    },
    /// A validated table holds an entry validation refuses (reserved bits, a superpage, a
    /// missing US bit, an I/O frame outside the owner's set or writable against its set, a
    /// not-present entry L1TF could read through in a checked domain).
    BadEntry {
        /// The table frame.
        table: Mfn,
        /// The entry index.
        idx: usize,
        /// The entry.
        entry: u64,
    },
    /// A frame the allocator holds as free still belongs to a domain (it was freed while the
    /// domain could still use it, or given out twice).
    FreeButOwned {
        /// The frame.
        mfn: Mfn,
    },
    /// A reference count would overflow `u32` (more references than can exist).
    Overflow {
        /// The frame.
        mfn: Mfn,
    },
    /// A table's linear count is not what its linear entries and those naming it account for.
    LinearCount {
        /// The frame.
        mfn: Mfn,
        /// What the table says.
        have: i16,
        /// Linear entries it holds.
        entries: u32,
        /// Linear entries naming it.
        uses: u32,
    },
}

impl core::fmt::Display for Broken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::ScratchTooSmall => write!(f, "audit scratch smaller than the frame table"),
            Self::RefCount { mfn, have, want } => {
                write!(f, "mfn {mfn:#x}: ref count {have}, accounted for {want}")
            }
            Self::TypeCount { mfn, have, want } => {
                write!(f, "mfn {mfn:#x}: type count {have}, accounted for {want}")
            }
            Self::WrongType { mfn, have, want } => {
                write!(f, "mfn {mfn:#x}: type {have:?}, referenced as {want:?}")
            }
            Self::BadState { mfn } => write!(f, "mfn {mfn:#x}: inconsistent type/pin state"),
            Self::Foreign { table, idx, target } => {
                write!(
                    f,
                    "table {table:#x}[{idx}] refers to foreign mfn {target:#x}"
                )
            }
            Self::BadEntry { table, idx, entry } => {
                write!(f, "table {table:#x}[{idx}] holds invalid entry {entry:#x}")
            }
            Self::FreeButOwned { mfn } => write!(f, "mfn {mfn:#x}: free but owned"),
            Self::Overflow { mfn } => write!(f, "mfn {mfn:#x}: counter overflow"),
            Self::LinearCount {
                mfn,
                have,
                entries,
                uses,
            } => write!(
                f,
                "mfn {mfn:#x}: linear count {have}, holds {entries} linear entries, named by {uses}"
            ),
        }
    }
}

/// What a successful [`FrameTable::audit`] looked at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditSummary {
    /// Frames in the table.
    pub frames: u64,
    /// Validated page tables walked.
    pub tables: u64,
    /// Present entries of those tables checked.
    pub entries: u64,
}

/// A failed [`FrameTable::audit`]: the first broken invariant and how many were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditFailure {
    /// The first one found.
    pub first: Broken,
    /// How many (at most one per frame or entry).
    pub count: u64,
}

impl FrameTable<'_> {
    /// The references a vCPU's unfinished page-table work holds, as [`Hold`]s for
    /// [`Self::audit`]: the root of a validation it started and of a teardown it owes, each a
    /// general reference and the table's type.
    pub fn pending_holds(&self, p: &Pending) -> impl Iterator<Item = Hold> + '_ {
        let validating = p.validating.map(|(mfn, level)| Hold {
            mfn,
            ty: Some(PageType::Table(level)),
        });
        let teardown = p.teardown.map(|mfn| Hold {
            mfn,
            ty: Some(self.info(mfn).map_or(PageType::None, |f| f.ty)),
        });
        validating.into_iter().chain(teardown)
    }

    /// Recomputes every frame's reference and type counts from the validated tables (their
    /// present entries, as [`Self::get_entry`] takes them, only the slots done of a table with
    /// work under way), the pins and the `holds` Hestia keeps outside page tables (with
    /// [`Self::pending_holds`] of every vCPU), and checks them against the table, with
    /// invariants 1, 2 and 4 on every entry; and that no frame in `free` (the allocator's free
    /// frames) has an owner. Read-only; `scratch` (one slot per frame) holds the recomputed
    /// counts. The caller holds whatever locks keep the table, the holds and the free list
    /// still.
    pub fn audit(
        &self,
        mem: &dyn PtMemory,
        holds: impl IntoIterator<Item = Hold>,
        free: impl IntoIterator<Item = core::ops::Range<u64>>,
        scratch: &mut [AuditCounts],
    ) -> Result<AuditSummary, AuditFailure> {
        let mut failure: Option<AuditFailure> = None;
        let mut broken = |b: Broken| match &mut failure {
            Some(f) => f.count += 1,
            None => failure = Some(AuditFailure { first: b, count: 1 }),
        };
        let Some(scratch) = scratch.get_mut(..self.frames.len()) else {
            return Err(AuditFailure {
                first: Broken::ScratchTooSmall,
                count: 1,
            });
        };
        scratch.fill(AuditCounts::default());
        let mut summary = AuditSummary {
            frames: self.frames.len() as u64,
            ..AuditSummary::default()
        };
        // One reference (typed `ty`) on `mfn`, checked against the frame's type.
        let account = |scratch: &mut [AuditCounts],
                       broken: &mut dyn FnMut(Broken),
                       mfn: Mfn,
                       ty: Option<PageType>| {
            let (Some(c), Some(f)) = (
                usize::try_from(mfn.raw())
                    .ok()
                    .and_then(|i| scratch.get_mut(i)),
                self.info(mfn),
            ) else {
                return broken(Broken::BadState { mfn });
            };
            let (Some(refs), Some(types)) = (
                c.refs.checked_add(1),
                c.types.checked_add(u32::from(ty.is_some())),
            ) else {
                return broken(Broken::Overflow { mfn });
            };
            (c.refs, c.types) = (refs, types);
            if let Some(want) = ty
                && f.ty != want
            {
                broken(Broken::WrongType {
                    mfn,
                    have: f.ty,
                    want,
                });
            }
        };
        for h in holds {
            account(scratch, &mut broken, h.mfn, h.ty);
        }
        let nr = self.frames.len() as u64;
        for mfn in free
            .into_iter()
            .flat_map(|r| r.start..r.end.min(nr))
            .map(Mfn::new)
        {
            if self.info(mfn).is_some_and(|f| f.owner.is_some()) {
                broken(Broken::FreeButOwned { mfn });
            }
        }
        for (i, f) in self.frames.iter().enumerate() {
            let mfn = Mfn::new(i as u64);
            let typed_table = match (f.ty, f.type_count) {
                (PageType::Table(level), 1..) => Some(level),
                _ => None,
            };
            let orphan_type = f.type_count == 0
                && (f.ty != PageType::None || f.progress != Progress::Idle || f.linear != 0);
            let bad_pin = f.pinned && (typed_table.is_none() || f.owner.is_none());
            // Work under way holds exactly one type reference: its own (see `Progress`).
            let bad_progress = f.progress != Progress::Idle && f.type_count > 1;
            if orphan_type || bad_pin || bad_progress || (f.owner.is_none() && f.type_count != 0) {
                broken(Broken::BadState { mfn });
            }
            if f.pinned {
                account(scratch, &mut broken, mfn, Some(f.ty));
            }
            let (Some(level), Some(dom)) = (typed_table, f.owner) else {
                continue;
            };
            summary.tables += 1;
            // The slots that hold references: all of an idle table's, those below `next` (and
            // the claimed child) of one being validated, those below `left` of one being torn
            // down.
            let end = match f.progress {
                Progress::Idle => 512,
                Progress::Validating { next, child } => usize::from(next) + usize::from(child),
                Progress::TearingDown { left, .. } => usize::from(left),
            };
            for idx in (0..end.min(512)).filter(|&i| Self::skip_hypervisor_slots(level, i) == i) {
                let e = mem.read(mfn, idx);
                let bad_entry = Broken::BadEntry {
                    table: mfn,
                    idx,
                    entry: e,
                };
                if e & pte::P == 0 {
                    if self.check_l1tf(dom, level, e).is_err() {
                        broken(bad_entry);
                    }
                    continue;
                }
                summary.entries += 1;
                let target = pte::mfn(e);
                // A grant host mapping: another domain's frame, with the mark guests cannot set.
                let grant = level == 1 && e & pte::GNTTAB != 0;
                if Self::check_flags(level, e & !pte::GNTTAB).is_err() || e & FORCED == 0 {
                    broken(bad_entry);
                    continue;
                }
                if level == 1 && self.is_io(target) {
                    let ro_violated = e & pte::RW != 0 && self.iomem_ro.contains(target.raw());
                    if !self.iomem_allowed(dom, target) || ro_violated {
                        broken(bad_entry);
                    }
                    continue;
                }
                if level == 1 && self.is_xen_ro(target) {
                    if e & pte::RW != 0 {
                        broken(bad_entry);
                    }
                    continue;
                }
                let owner = self.info(target).and_then(|t| t.owner);
                // A foreign mapping: another domain's frame in an L1 of a domain that mapped
                // one by naming it (`mod_entry_foreign_preemptible`).
                let foreign = level == 1 && self.foreign_mappers.contains(&dom);
                if owner.is_none() || (!grant && !foreign && owner != Some(dom)) {
                    broken(Broken::Foreign {
                        table: mfn,
                        idx,
                        target,
                    });
                    continue;
                }
                // Linear entries: read-only, naming the table itself (holding nothing) or
                // another of the same level (see `get_linear`).
                let linear = level > 1
                    && self
                        .info(target)
                        .is_some_and(|t| t.ty == PageType::Table(level));
                if linear && e & pte::RW != 0 {
                    broken(bad_entry);
                    continue;
                }
                if linear && target == mfn {
                    continue;
                }
                if linear {
                    let mut count = |at: Mfn, entries: u32, uses: u32| {
                        if let Some(c) = usize::try_from(at.raw())
                            .ok()
                            .and_then(|i| scratch.get_mut(i))
                        {
                            c.linear_entries = c.linear_entries.saturating_add(entries);
                            c.linear_uses = c.linear_uses.saturating_add(uses);
                        }
                    };
                    count(mfn, 1, 0);
                    count(target, 0, 1);
                }
                let ty = match level {
                    1 if e & pte::RW != 0 => Some(PageType::Writable),
                    1 => None,
                    l if linear => Some(PageType::Table(l)),
                    l => Some(PageType::Table(l - 1)),
                };
                account(scratch, &mut broken, target, ty);
            }
        }
        for (i, (f, c)) in self.frames.iter().zip(scratch.iter()).enumerate() {
            let mfn = Mfn::new(i as u64);
            if f.ref_count != c.refs {
                broken(Broken::RefCount {
                    mfn,
                    have: f.ref_count,
                    want: c.refs,
                });
            }
            if f.type_count != c.types {
                broken(Broken::TypeCount {
                    mfn,
                    have: f.type_count,
                    want: c.types,
                });
            }
            let (entries, uses) = (c.linear_entries, c.linear_uses);
            let want = i64::from(entries) - i64::from(uses);
            if (entries != 0 && uses != 0) || i64::from(f.linear) != want {
                broken(Broken::LinearCount {
                    mfn,
                    have: f.linear,
                    entries,
                    uses,
                });
            }
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(summary),
        }
    }
}

/// A recording fake [`PtMemory`], shared by the unit tests and the host fuzzer
/// (`hypervisor/core/fuzz`, through the `test-support` feature), which check the frame table
/// against it with [`FrameTable::audit`].
#[cfg(any(test, feature = "test-support"))]
pub mod model {
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    use super::{HYPERVISOR_L4_SLOTS, PtMemory};
    use crate::ids::Mfn;

    /// A fake memory that records every write.
    #[derive(Default)]
    pub struct FakeMem {
        /// Frame contents (absent: all zero).
        pub pages: BTreeMap<Mfn, [u64; 512]>,
        /// Every write, in order.
        pub writes: Vec<(Mfn, usize, u64)>,
        /// Full TLB flushes requested.
        pub flushes: usize,
        /// L4 frames reported changed, in order.
        pub root_changes: Vec<Mfn>,
    }

    impl PtMemory for FakeMem {
        fn read(&self, mfn: Mfn, idx: usize) -> u64 {
            self.pages
                .get(&mfn)
                .and_then(|p| p.get(idx))
                .copied()
                .unwrap_or(0)
        }
        fn write(&mut self, mfn: Mfn, idx: usize, val: u64) {
            if let Some(slot) = self.pages.entry(mfn).or_insert([0; 512]).get_mut(idx) {
                *slot = val;
            }
            self.writes.push((mfn, idx, val));
        }
        fn install_hypervisor_slots(&mut self, mfn: Mfn) {
            for i in HYPERVISOR_L4_SLOTS {
                self.write(mfn, i, HYPERVISOR_MARK);
            }
        }
        fn flush_tlbs(&mut self) {
            self.flushes += 1;
        }
        fn root_entry_changed(&mut self, mfn: Mfn) {
            self.root_changes.push(mfn);
        }
    }

    /// What the fake writes into hypervisor slots.
    pub const HYPERVISOR_MARK: u64 = 0xdead_0000;
}

#[cfg(test)]
mod tests {
    use super::model::{FakeMem, HYPERVISOR_MARK};
    use super::*;
    use std::vec::Vec;

    const D: Dom = 1;
    const OTHER: Dom = 2;

    fn e(mfn: u64, flags: u64) -> u64 {
        (mfn << 12) | flags | pte::P
    }

    /// Frame `raw`.
    fn mf(raw: u64) -> Mfn {
        Mfn::new(raw)
    }

    fn setup(n: u64) -> (FrameTable<'static>, FakeMem) {
        let storage = std::boxed::Box::leak(std::vec![FrameInfo::FREE; 64].into_boxed_slice());
        let mut ft = FrameTable::new(storage);
        for m in 0..n {
            ft.assign(mf(m), D).unwrap();
        }
        for m in n..n + 4 {
            ft.assign(mf(m), OTHER).unwrap();
        }
        (ft, FakeMem::default())
    }

    /// Builds L4(1) -> L3(2) -> L2(3) -> L1(4) -> data frames 10 (RW) and 11 (RO).
    fn tree(mem: &mut FakeMem) {
        mem.write(mf(1), 0, e(2, pte::RW));
        mem.write(mf(2), 0, e(3, pte::RW));
        mem.write(mf(3), 0, e(4, pte::RW));
        mem.write(mf(4), 0, e(10, pte::RW));
        mem.write(mf(4), 1, e(11, 0));
    }

    #[test]
    fn pinning_validates_the_whole_tree() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        assert_eq!(ft.info(mf(1)).unwrap().ty, PageType::Table(4));
        assert_eq!(ft.info(mf(4)).unwrap().ty, PageType::Table(1));
        assert_eq!(ft.info(mf(10)).unwrap().ty, PageType::Writable);
        assert_eq!(
            ft.info(mf(11)).unwrap().type_count,
            0,
            "a read-only mapping takes no type"
        );
        assert_eq!(ft.info(mf(11)).unwrap().ref_count, 1);
        assert!(
            mem.read(mf(4), 0) & pte::US != 0,
            "US is forced on guest entries"
        );
        assert!(
            HYPERVISOR_L4_SLOTS
                .clone()
                .all(|i| mem.read(mf(1), i) == HYPERVISOR_MARK),
            "hypervisor slots installed in the L4"
        );
        ft.unpin(&mut mem, mf(1), D).unwrap();
        for m in [1, 2, 3, 4, 10, 11] {
            let f = ft.info(mf(m)).unwrap();
            assert_eq!(
                (f.type_count, f.ref_count),
                (0, 0),
                "mfn {m} fully released"
            );
        }
    }

    #[test]
    fn every_changed_l4_entry_is_reported_and_nothing_else() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        ft.mod_entry(&mut mem, mf(4), 1, 0, e(11, pte::RW), D)
            .unwrap();
        assert!(mem.root_changes.is_empty(), "an L1 entry is no root entry");
        ft.mod_entry(&mut mem, mf(1), 4, 0, 0, D).unwrap();
        ft.mod_entry(&mut mem, mf(1), 4, 0, e(2, pte::RW), D)
            .unwrap();
        assert_eq!(mem.root_changes, [mf(1), mf(1)]);
        // A refused update changes nothing, so it reports nothing.
        assert!(
            ft.mod_entry(&mut mem, mf(1), 4, 1, e(4, pte::RW), D)
                .is_err()
        );
        assert_eq!(mem.root_changes.len(), 2);
    }

    #[test]
    fn a_page_table_can_never_be_mapped_writable() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        // L1 maps its own L2 writable: validation must fail and leave nothing behind.
        mem.write(mf(4), 2, e(3, pte::RW));
        assert_eq!(ft.pin(&mut mem, mf(1), 4, D), Err(MmError::TypeConflict));
        assert!(
            (0..20).all(|m| ft.info(mf(m)).unwrap().type_count == 0
                && ft.info(mf(m)).unwrap().ref_count == 0)
        );
        // With the tree pinned, an update that maps a table writable is refused.
        mem.write(mf(4), 2, 0);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        assert_eq!(
            ft.mod_entry(&mut mem, mf(4), 1, 5, e(2, pte::RW), D),
            Err(MmError::TypeConflict)
        );
        // Read-only is fine (that is how guests see their own tables).
        ft.mod_entry(&mut mem, mf(4), 1, 5, e(2, 0), D).unwrap();
        // And a frame mapped writable cannot become a table.
        assert_eq!(ft.pin(&mut mem, mf(10), 1, D), Err(MmError::TypeConflict));
    }

    #[test]
    fn foreign_frames_are_refused() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        assert_eq!(
            ft.mod_entry(&mut mem, mf(4), 1, 7, e(21, 0), D),
            Err(MmError::NotOwner)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, mf(4), 1, 7, e(60, 0), D),
            Err(MmError::NotOwner),
            "unowned frame"
        );
        assert_eq!(
            ft.mod_entry(&mut mem, mf(4), 1, 7, e(1 << 30, 0), D),
            Err(MmError::NoIoAccess),
            "device memory without an I/O-memory grant"
        );
        assert_eq!(
            ft.mod_entry(&mut mem, mf(4), 1, 7, e(12, 0), OTHER),
            Err(MmError::NotATable),
            "not the table's owner"
        );
    }

    /// `mmu_update` with a foreign domain: the control domain's L1 entry names the other
    /// domain's frame and holds a reference (and the writable type) on it; only L1 entries,
    /// only frames of the domain named; the audit accepts the entry.
    #[test]
    fn foreign_l1_entries_name_the_foreign_domains_frames_only() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        let foreign = |ft: &mut FrameTable, mem: &mut FakeMem, table, level, idx, new| {
            let mut p = Pending::default();
            let b = &mut Budget::unlimited();
            ft.mod_entry_foreign_preemptible(mem, mf(table), level, idx, new, (D, OTHER), &mut p, b)
        };
        assert_eq!(
            foreign(&mut ft, &mut mem, 4, 1, 7, e(5, 0)),
            Err(MmError::NotOwner),
            "a frame of the mapping domain is not the foreign domain's"
        );
        assert_eq!(
            foreign(&mut ft, &mut mem, 3, 2, 7, e(21, 0)),
            Err(MmError::NotATable),
            "above L1"
        );
        assert_eq!(
            foreign(&mut ft, &mut mem, 4, 1, 7, e(1 << 30, 0)),
            Err(MmError::NoIoAccess),
            "I/O memory neither may map"
        );
        foreign(&mut ft, &mut mem, 4, 1, 7, e(21, pte::RW)).unwrap();
        foreign(&mut ft, &mut mem, 4, 1, 8, e(22, 0)).unwrap();
        let f = *ft.info(mf(21)).unwrap();
        assert_eq!(
            (f.owner, f.ty, f.type_count, f.ref_count),
            (Some(OTHER), PageType::Writable, 1, 1)
        );
        assert_eq!(
            ft.pin(&mut mem, mf(21), 1, OTHER),
            Err(MmError::TypeConflict)
        );
        audit(&ft, &mem, &[]).unwrap();
        // Replaced by a local entry, then torn down with its table: references go.
        ft.mod_entry(&mut mem, mf(4), 1, 7, e(12, 0), D).unwrap();
        assert_eq!(
            ft.info(mf(21)).map(|f| (f.ref_count, f.type_count)),
            Some((0, 0))
        );
        ft.unpin(&mut mem, mf(1), D).unwrap();
        assert_eq!(ft.info(mf(22)).map(|f| f.ref_count), Some(0));
        audit(&ft, &mem, &[]).unwrap();
    }

    /// Frames shared read-only by Hestia (the M2P): mapped only read-only and only by naming
    /// `DOM_XEN`, holding nothing, and audited as such.
    #[test]
    fn xen_frames_map_read_only_through_dom_xen_only() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.assign(mf(30), DOM_XEN).unwrap();
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        let map = |ft: &mut FrameTable, mem: &mut FakeMem, idx, new, pg| {
            let mut p = Pending::default();
            let b = &mut Budget::unlimited();
            ft.mod_entry_foreign_preemptible(mem, mf(4), 1, idx, new, (D, pg), &mut p, b)
        };
        assert_eq!(
            map(&mut ft, &mut mem, 7, e(30, 0), D),
            Err(MmError::NotOwner)
        );
        assert_eq!(
            map(&mut ft, &mut mem, 7, e(30, 0), OTHER),
            Err(MmError::NotOwner)
        );
        assert_eq!(
            map(&mut ft, &mut mem, 7, e(30, pte::RW), DOM_XEN),
            Err(MmError::TypeConflict)
        );
        map(&mut ft, &mut mem, 7, e(30, 0), DOM_XEN).unwrap();
        assert_eq!(
            map(&mut ft, &mut mem, 8, e(5, 0), DOM_XEN),
            Err(MmError::NotOwner)
        );
        let f = *ft.info(mf(30)).unwrap();
        assert_eq!(
            (f.ref_count, f.type_count),
            (0, 0),
            "a mapping holds nothing"
        );
        audit(&ft, &mem, &[]).unwrap();
        ft.mod_entry(&mut mem, mf(4), 1, 7, 0, D).unwrap();
        ft.unpin(&mut mem, mf(1), D).unwrap();
        assert_eq!(ft.info(mf(30)).map(|f| f.owner), Some(Some(DOM_XEN)));
        audit(&ft, &mem, &[]).unwrap();
    }

    /// A dying domain's frame another domain maps foreignly is kept; the mapping going asks for
    /// a fresh sweep ([`FrameTable::take_resweep`]), which frees it.
    #[test]
    fn a_foreign_mapping_keeps_a_dead_domains_frame_until_unmapped() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        let (mut p, b) = (Pending::default(), &mut Budget::unlimited());
        ft.mod_entry_foreign_preemptible(
            &mut mem,
            mf(4),
            1,
            7,
            e(21, pte::RW),
            (D, OTHER),
            &mut p,
            b,
        )
        .unwrap();
        let mut rel = Relinquish::new(Vec::new(), Vec::new());
        let (freed, _) = relinquish_in_steps(&mut ft, &mut mem, OTHER, &mut rel, 3, &[]);
        assert_eq!((freed.len(), rel.kept()), (3, 1));
        assert!(!ft.take_resweep(), "the sweep's own drops ask for nothing");
        ft.mod_entry(&mut mem, mf(4), 1, 7, 0, D).unwrap();
        assert!(ft.take_resweep());
        assert!(!ft.take_resweep());
        let mut rel = Relinquish::new(Vec::new(), Vec::new());
        let (freed, _) = relinquish_in_steps(&mut ft, &mut mem, OTHER, &mut rel, 3, &[]);
        assert_eq!((freed, rel.kept()), (std::vec![21], 0));
        // Forgotten once nothing is kept: D's own drops ask for nothing.
        ft.mod_entry(&mut mem, mf(4), 1, 8, e(12, 0), D).unwrap();
        ft.mod_entry(&mut mem, mf(4), 1, 8, 0, D).unwrap();
        assert!(!ft.take_resweep());
    }

    /// The mapping domain's own destruction drops its foreign mapping of a dead domain's
    /// frame: that asks for a fresh sweep of the dead domain too.
    #[test]
    fn destroying_the_mapper_frees_a_dead_domains_mapped_frame() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        let (mut p, b) = (Pending::default(), &mut Budget::unlimited());
        ft.mod_entry_foreign_preemptible(&mut mem, mf(4), 1, 7, e(21, 0), (D, OTHER), &mut p, b)
            .unwrap();
        let mut rel = Relinquish::new(Vec::new(), Vec::new());
        relinquish_in_steps(&mut ft, &mut mem, OTHER, &mut rel, 64, &[]);
        assert_eq!(rel.kept(), 1);
        let mut rel = Relinquish::new(Vec::new(), Vec::new());
        relinquish_in_steps(&mut ft, &mut mem, D, &mut rel, 64, &[]);
        assert_eq!(rel.kept(), 0);
        assert!(
            ft.take_resweep(),
            "the dead domain's frame lost its last reference"
        );
        let mut rel = Relinquish::new(Vec::new(), Vec::new());
        let (freed, _) = relinquish_in_steps(&mut ft, &mut mem, OTHER, &mut rel, 64, &[]);
        assert_eq!((freed, rel.kept()), (std::vec![21], 0));
    }

    #[test]
    fn io_frames() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        // Frame 30 of the table is firmware (DOM_IO); 0x1000 is device memory beyond it.
        ft.assign(mf(30), DOM_IO).unwrap();
        for target in [30, 0x1000] {
            assert_eq!(
                ft.mod_entry(&mut mem, mf(4), 1, 7, e(target, pte::RW), D),
                Err(MmError::NoIoAccess)
            );
        }
        ft.iomem_mut(D).add(0, 1 << 40);
        ft.iomem_mut(D).remove(0x1000, 0x1001);
        assert_eq!(
            ft.mod_entry(&mut mem, mf(4), 1, 7, e(0x1000, pte::RW), D),
            Err(MmError::NoIoAccess),
            "a frame taken out of the grant (Hestia's LAPIC, say)"
        );
        // Granted: mapped writable, twice, with no references or types taken.
        ft.mod_entry(&mut mem, mf(4), 1, 7, e(30, pte::RW), D)
            .unwrap();
        ft.mod_entry(&mut mem, mf(4), 1, 8, e(30, pte::RW), D)
            .unwrap();
        ft.mod_entry(&mut mem, mf(4), 1, 9, e(0x2000, pte::RW), D)
            .unwrap();
        assert_eq!(
            *ft.info(mf(30)).unwrap(),
            FrameInfo {
                owner: Some(DOM_IO),
                ..FrameInfo::FREE
            }
        );
        // Never a page table: not as an L2's L1, not pinned.
        assert_eq!(
            ft.mod_entry(&mut mem, mf(3), 2, 9, e(30, 0), D),
            Err(MmError::NotOwner)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, mf(3), 2, 9, e(0x2000, 0), D),
            Err(MmError::BadFrame)
        );
        assert_eq!(ft.pin(&mut mem, mf(30), 1, D), Err(MmError::NotOwner));
        // Unmapping drops nothing; another domain still has no access.
        ft.mod_entry(&mut mem, mf(4), 1, 7, 0, D).unwrap();
        ft.mod_entry(&mut mem, mf(4), 1, 8, 0, D).unwrap();
        ft.mod_entry(&mut mem, mf(4), 1, 9, 0, D).unwrap();
        assert_eq!(
            *ft.info(mf(30)).unwrap(),
            FrameInfo {
                owner: Some(DOM_IO),
                ..FrameInfo::FREE
            }
        );
        assert!(!ft.iomem_allowed(OTHER, mf(30)) && ft.iomem_allowed(D, mf(30)));
        // A read-only device (the hypervisor's HPET): mappable, never writable.
        ft.iomem_ro_mut().add(0x3000, 0x3001);
        ft.mod_entry(&mut mem, mf(4), 1, 7, e(0x3000, pte::RW), D)
            .unwrap();
        assert_eq!(mem.read(mf(4), 7) & pte::RW, 0, "RW dropped");
        ft.mod_entry(&mut mem, mf(4), 1, 8, e(0x3001, pte::G), D)
            .unwrap();
        assert_eq!(mem.read(mf(4), 8) & pte::G, 0, "no global guest mappings");
        assert_ne!(mem.read(mf(4), 7) & pte::P, 0);
    }

    #[test]
    fn hypervisor_slots_and_bad_flags() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        mem.write(mf(1), 260, e(5, pte::RW)); // a hypervisor slot: ignored by validation
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        assert_eq!(ft.info(mf(5)).unwrap().ref_count, 0);
        assert_eq!(
            ft.mod_entry(&mut mem, mf(1), 4, 256, e(6, 0), D),
            Err(MmError::HypervisorSlot)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, mf(3), 2, 9, e(6, pte::PS), D),
            Err(MmError::BadFlags),
            "no superpages"
        );
        assert_eq!(
            ft.mod_entry(&mut mem, mf(4), 1, 9, e(6, 0) | (1 << 55), D),
            Err(MmError::BadFlags)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, mf(10), 1, 0, 0, D),
            Err(MmError::NotATable)
        );
    }

    #[test]
    fn descriptor_pages() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        // Frame 12: Linux-style code descriptor (DPL 0) gets DPL 3; a TSS descriptor is refused.
        mem.write(mf(12), 2, 0x00af_9b00_0000_ffff);
        ft.get_page(mf(12), D).unwrap();
        ft.get_page_type(&mut mem, mf(12), PageType::SegDesc, D)
            .unwrap();
        assert_eq!(mem.read(mf(12), 2), 0x00af_fb00_0000_ffff);
        mem.write(mf(13), 5, (1 << 47) | (0x9 << 40));
        ft.get_page(mf(13), D).unwrap();
        assert_eq!(
            ft.get_page_type(&mut mem, mf(13), PageType::SegDesc, D),
            Err(MmError::BadFlags)
        );
        assert_eq!(ft.info(mf(13)).unwrap().type_count, 0);
        // A frame mapped writable (10) cannot become a descriptor page, nor a descriptor page
        // be mapped writable.
        ft.get_page(mf(10), D).unwrap();
        assert_eq!(
            ft.get_page_type(&mut mem, mf(10), PageType::SegDesc, D),
            Err(MmError::TypeConflict)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, mf(4), 1, 20, e(12, pte::RW), D),
            Err(MmError::TypeConflict)
        );
        ft.mod_entry(&mut mem, mf(4), 1, 20, e(12, 0), D).unwrap();
    }

    #[test]
    fn only_unused_frames_can_be_released() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        assert_eq!(
            ft.release(&mut mem, mf(10), D),
            Err(MmError::TypeConflict),
            "mapped writable"
        );
        assert_eq!(
            ft.release(&mut mem, mf(11), D),
            Err(MmError::TypeConflict),
            "mapped read-only"
        );
        assert_eq!(
            ft.release(&mut mem, mf(1), D),
            Err(MmError::TypeConflict),
            "a pinned table"
        );
        assert_eq!(ft.release(&mut mem, mf(21), D), Err(MmError::NotOwner));
        ft.release(&mut mem, mf(15), D).unwrap();
        assert_eq!(ft.info(mf(15)).unwrap().owner, None);
        assert_eq!(
            ft.mod_entry(&mut mem, mf(4), 1, 9, e(15, 0), D),
            Err(MmError::NotOwner),
            "a released frame cannot be mapped"
        );
    }

    #[test]
    fn extents_are_assigned_whole() {
        let (mut ft, _) = setup(20); // 20-23 belong to OTHER, 24-63 to nobody
        assert_eq!(ft.assign_range(mf(22), 4, D), Err(MmError::NotOwner));
        assert_eq!(ft.assign_range(mf(62), 4, D), Err(MmError::BadFrame));
        assert_eq!(ft.assign_range(mf(u64::MAX), 2, D), Err(MmError::BadFrame));
        assert!(
            [24, 25, 62, 63]
                .iter()
                .all(|&m| ft.info(mf(m)).unwrap().owner.is_none()),
            "a refused extent assigns nothing"
        );
        ft.assign_range(mf(30), 4, D).unwrap();
        assert!((30..34).all(|m| ft.info(mf(m)).unwrap().owner == Some(D)));
    }

    #[test]
    fn stealing_takes_all_frames_or_none() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        let before: Vec<FrameInfo> = (0..64).map(|m| *ft.info(mf(m)).unwrap()).collect();
        // 10 is mapped writable, 11 read-only, 1 a pinned table, 21 foreign, 12 listed twice,
        // 70 beyond the table: each refuses the whole list and leaves every frame as it was.
        for (list, err) in [
            (&[12, 13, 10, 14][..], MmError::TypeConflict),
            (&[12, 11][..], MmError::TypeConflict),
            (&[13, 1][..], MmError::TypeConflict),
            (&[12, 21][..], MmError::NotOwner),
            (&[12, 13, 12][..], MmError::NotOwner),
            (&[12, 70][..], MmError::BadFrame),
        ] {
            let frames: Vec<Mfn> = list.iter().copied().map(mf).collect();
            assert_eq!(ft.steal(&mut mem, &frames, D), Err(err), "{list:?}");
            let now: Vec<FrameInfo> = (0..64).map(|m| *ft.info(mf(m)).unwrap()).collect();
            assert_eq!(now, before, "{list:?} left a frame changed");
        }
        ft.steal(&mut mem, &[mf(12), mf(13), mf(15)], D).unwrap();
        assert!(
            [12, 13, 15]
                .iter()
                .all(|&m| ft.info(mf(m)).unwrap().owner.is_none())
        );
        // Given back (an exchange that found no memory), they are the domain's again.
        ft.assign(mf(13), D).unwrap();
        ft.mod_entry(&mut mem, mf(4), 1, 9, e(13, pte::RW), D)
            .unwrap();
    }

    /// `XENMEM_exchange` on one vCPU against a writable mapping of an input frame from another
    /// (`update_va_mapping`), in every order the frame-table lock allows. Each step runs under
    /// one hold of the lock. The old exchange checked the frames in one hold and released them
    /// in a later one: a mapping made in between made the release fail, which it ignored,
    /// freeing a frame still mapped writable. Stealing checks and takes in one step: whichever
    /// comes first wins, and no frame leaves the domain while it is mapped.
    #[test]
    fn exchange_and_a_racing_mapping_never_both_win() {
        let input = [mf(12), mf(13)];
        for map_first in [true, false] {
            let (mut ft, mut mem) = setup(20);
            tree(&mut mem);
            ft.pin(&mut mem, mf(1), 4, D).unwrap();
            let map = |ft: &mut FrameTable, mem: &mut FakeMem| {
                ft.mod_entry(mem, mf(4), 1, 9, e(13, pte::RW), D)
            };
            let (mapped, stolen) = if map_first {
                let m = map(&mut ft, &mut mem);
                (m, ft.steal(&mut mem, &input, D))
            } else {
                let s = ft.steal(&mut mem, &input, D);
                (map(&mut ft, &mut mem), s)
            };
            assert!(
                mapped.is_ok() != stolen.is_ok(),
                "map first {map_first}: mapping {mapped:?}, steal {stolen:?}"
            );
            // Invariant: every frame a validated L1 maps is still the domain's (and every
            // count holds).
            assert_eq!(audit(&ft, &mem, &[]).map(|_| ()), Ok(()));
        }
        // The old sequence, for the record: its check passes, the mapping comes in between,
        // and the release it then ignored fails.
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        let f = *ft.info(mf(13)).unwrap();
        assert!(
            f.ref_count == 0 && f.type_count == 0 && !f.pinned,
            "check passes"
        );
        ft.mod_entry(&mut mem, mf(4), 1, 9, e(13, pte::RW), D)
            .unwrap();
        assert_eq!(ft.release(&mut mem, mf(13), D), Err(MmError::TypeConflict));
    }

    #[test]
    fn removed_mappings_are_flushed_before_a_frame_changes_use() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        assert_eq!(mem.flushes, 0, "nothing was unmapped yet");
        // Unmap frame 10 (writable in L1 4): some CPU may still hold that translation.
        ft.mod_entry(&mut mem, mf(4), 1, 0, 0, D).unwrap();
        assert_eq!(mem.flushes, 0, "unmapping alone does not flush");
        // Mapping it again read-only or writable is harmless: no flush.
        ft.mod_entry(&mut mem, mf(4), 1, 2, e(10, pte::RW), D)
            .unwrap();
        ft.mod_entry(&mut mem, mf(4), 1, 2, 0, D).unwrap();
        assert_eq!(mem.flushes, 0);
        // Becoming a page table needs every stale writable translation gone first.
        ft.pin(&mut mem, mf(10), 1, D).unwrap();
        assert_eq!(mem.flushes, 1, "flushed before frame 10 became an L1");
        ft.pin(&mut mem, mf(12), 1, D).unwrap();
        assert_eq!(mem.flushes, 1, "no mapping removed since: no second flush");
        // Leaving the domain likewise.
        ft.unpin(&mut mem, mf(12), D).unwrap();
        ft.release(&mut mem, mf(12), D).unwrap();
        assert_eq!(
            mem.flushes, 1,
            "unpinning an empty table removes no mapping"
        );
        ft.mod_entry(&mut mem, mf(4), 1, 1, 0, D).unwrap();
        ft.release(&mut mem, mf(11), D).unwrap();
        assert_eq!(mem.flushes, 2, "flushed before frame 11 left the domain");
        ft.release(&mut mem, mf(13), D).unwrap();
        assert_eq!(mem.flushes, 2, "frame 13 was never mapped: no flush");
    }

    #[test]
    fn a_former_table_is_flushed_before_it_becomes_writable() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        // Drop the L2 -> L1 (frame 4) reference: a CPU may still cache that walk.
        ft.mod_entry(&mut mem, mf(3), 2, 0, 0, D).unwrap();
        assert_eq!(ft.info(mf(4)).unwrap().type_count, 0);
        // Frame 10 lost its writable mapping with it; mapping it writable again is harmless.
        let l1 = 5;
        mem.write(mf(l1), 0, e(10, pte::RW));
        ft.pin(&mut mem, mf(l1), 1, D).unwrap();
        assert_eq!(
            mem.flushes, 0,
            "frame 10 stays writable; frame 5 was never mapped"
        );
        // Mapping the old L1 writable needs the cached walks gone first.
        ft.mod_entry(&mut mem, mf(l1), 1, 1, e(4, pte::RW), D)
            .unwrap();
        assert_eq!(mem.flushes, 1, "flushed before frame 4 became writable");
        ft.mod_entry(&mut mem, mf(l1), 1, 2, e(4, pte::RW), D)
            .unwrap();
        assert_eq!(mem.flushes, 1, "type already held: no second flush");
    }

    #[test]
    fn self_referencing_tables_cannot_recurse() {
        let (mut ft, mut mem) = setup(20);
        mem.write(mf(1), 0, e(1, pte::RW)); // L4 points at itself, writable
        assert_eq!(ft.pin(&mut mem, mf(1), 4, D), Err(MmError::TypeConflict));
        assert_eq!(ft.info(mf(1)).unwrap().ref_count, 0);
        // Read-only, it is a linear self-mapping: validation accepts it and it holds nothing.
        mem.write(mf(1), 0, e(1, 0));
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        let f = *ft.info(mf(1)).unwrap();
        assert_eq!((f.ref_count, f.type_count, f.linear), (1, 1, 0));
        audit(&ft, &mem, &[]).unwrap();
        ft.unpin(&mut mem, mf(1), D).unwrap();
        let f = *ft.info(mf(1)).unwrap();
        assert_eq!(
            (f.ty, f.ref_count, f.type_count, f.linear),
            (PageType::None, 0, 0, 0)
        );
        // Translations through the self-mapping reached the table: a later change of use
        // flushes them first.
        assert_eq!(f.unmapped_at, ft.flush_gen);
    }

    /// Xen's `get_lN_linear_pagetable` rules at each level: read-only only, the same level,
    /// a table either holds linear entries or is named by them, and the references they hold
    /// are dropped exactly, the last one tearing the target down.
    #[test]
    fn linear_page_tables_as_xen_allows_them() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        mem.write(mf(1), 1, e(7, pte::RW)); // a second L3 under L4 1
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        ft.pin(&mut mem, mf(5), 4, D).unwrap(); // two more, empty L4s
        ft.pin(&mut mem, mf(6), 4, D).unwrap();
        let check = |ft: &FrameTable, mem: &FakeMem| {
            if let Err(f) = audit(ft, mem, &[]) {
                panic!("{} ({} broken)", f.first, f.count);
            }
        };
        let linear = |ft: &FrameTable, m: u64| ft.info(mf(m)).unwrap().linear;
        let types = |ft: &FrameTable, m: u64| ft.info(mf(m)).unwrap().type_count;
        // Self-mappings, read-only only; they take nothing.
        assert_eq!(
            ft.mod_entry(&mut mem, mf(1), 4, 5, e(1, pte::RW), D),
            Err(MmError::TypeConflict)
        );
        ft.mod_entry(&mut mem, mf(1), 4, 5, e(1, 0), D).unwrap();
        ft.mod_entry(&mut mem, mf(3), 2, 5, e(3, 0), D).unwrap();
        assert_eq!((types(&ft, 1), linear(&ft, 1)), (1, 0));
        check(&ft, &mem);
        // Another L4: one more type reference and the linear counts on both.
        assert_eq!(
            ft.mod_entry(&mut mem, mf(1), 4, 7, e(5, pte::RW), D),
            Err(MmError::TypeConflict)
        );
        ft.mod_entry(&mut mem, mf(1), 4, 7, e(5, 0), D).unwrap();
        assert_eq!((types(&ft, 5), linear(&ft, 5), linear(&ft, 1)), (2, -1, 1));
        check(&ft, &mem);
        // No chains: 5 is named, so it may hold none; 1 holds one, so nothing may name it.
        assert_eq!(
            ft.mod_entry(&mut mem, mf(5), 4, 7, e(6, 0), D),
            Err(MmError::TypeConflict)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, mf(6), 4, 7, e(1, 0), D),
            Err(MmError::TypeConflict)
        );
        ft.mod_entry(&mut mem, mf(6), 4, 7, e(5, 0), D).unwrap();
        assert_eq!((types(&ft, 5), linear(&ft, 5)), (3, -2));
        // The same at L3 (2 names 7) and L2; an L1 maps a table only read-only, as data.
        ft.mod_entry(&mut mem, mf(2), 3, 5, e(7, 0), D).unwrap();
        assert_eq!(
            ft.mod_entry(&mut mem, mf(2), 3, 6, e(7, pte::RW), D),
            Err(MmError::TypeConflict)
        );
        assert_eq!(
            ft.mod_entry(&mut mem, mf(4), 1, 5, e(4, pte::RW), D),
            Err(MmError::TypeConflict)
        );
        ft.mod_entry(&mut mem, mf(4), 1, 5, e(4, 0), D).unwrap();
        check(&ft, &mem);
        // Unpinned, 5 lives on through the two linear entries; the last one tears it down.
        ft.unpin(&mut mem, mf(5), D).unwrap();
        assert_eq!(types(&ft, 5), 2);
        ft.mod_entry(&mut mem, mf(1), 4, 7, 0, D).unwrap();
        assert_eq!((types(&ft, 5), linear(&ft, 5), linear(&ft, 1)), (1, -1, 0));
        ft.mod_entry(&mut mem, mf(6), 4, 7, 0, D).unwrap();
        let f = *ft.info(mf(5)).unwrap();
        assert_eq!(
            (f.ty, f.ref_count, f.type_count, f.linear),
            (PageType::None, 0, 0, 0)
        );
        check(&ft, &mem);
        // Now 1 holds no linear entry to another table: it may be named.
        ft.mod_entry(&mut mem, mf(6), 4, 7, e(1, 0), D).unwrap();
        assert_eq!(linear(&ft, 1), -1);
        check(&ft, &mem);
        ft.unpin(&mut mem, mf(6), D).unwrap();
        ft.unpin(&mut mem, mf(1), D).unwrap();
        check(&ft, &mem);
        for m in 0..20 {
            let f = ft.info(mf(m)).unwrap();
            assert_eq!((m, f.ref_count, f.type_count, f.linear), (m, 0, 0, 0));
        }
    }

    #[test]
    fn grant_mappings_and_linear_entries_share_a_tree_and_the_audit() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        ft.pin(&mut mem, mf(5), 4, D).unwrap();
        // L4 1 names L4 5 linearly (and itself); its L1 4 maps OTHER's frame 21 by grant.
        ft.mod_entry(&mut mem, mf(1), 4, 7, e(5, 0), D).unwrap();
        ft.mod_entry(&mut mem, mf(1), 4, 8, e(1, 0), D).unwrap();
        let rw = e(21, pte::RW | pte::GNTTAB | pte::NX);
        ft.grant_map_l1e(&mut mem, mf(4), 7, D, rw, OTHER).unwrap();
        let f = *ft.info(mf(21)).unwrap();
        assert_eq!((f.ref_count, f.type_count, f.linear), (1, 1, 0));
        assert_eq!(
            (
                ft.info(mf(1)).unwrap().linear,
                ft.info(mf(5)).unwrap().linear
            ),
            (1, -1)
        );
        if let Err(f) = audit(&ft, &mem, &[]) {
            panic!("{} ({} broken)", f.first, f.count);
        }
        // The grant entry moves by unmap_and_replace; the L1's holder plays no linear part.
        let stolen = ft.grant_steal_l1e(&mut mem, mf(4), 1, D).unwrap();
        ft.grant_unmap_l1e(&mut mem, mf(4), 7, D, mf(21), true, stolen)
            .unwrap();
        ft.grant_map_l1e(&mut mem, mf(4), 9, D, rw, OTHER).unwrap();
        audit(&ft, &mem, &[]).unwrap();
        // Tearing the tree down drops the grant mapping and the linear counts alike.
        ft.unpin(&mut mem, mf(5), D).unwrap();
        ft.unpin(&mut mem, mf(1), D).unwrap();
        audit(&ft, &mem, &[]).unwrap();
        for m in 0..22 {
            let f = ft.info(mf(m)).unwrap();
            assert_eq!((m, f.ref_count, f.type_count, f.linear), (m, 0, 0, 0));
        }
    }

    /// A CPU whose L1D compares 46 address bits, 39 of them real: 2^39 and up is safe.
    const SAFE: SafeMaddr = SafeMaddr {
        addr_mask: (1 << 46) - 0x1000,
        safe_maddr: 1 << 39,
    };

    #[test]
    fn l1tf_checked_domains_write_no_vulnerable_not_present_entry() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.set_l1tf_check(D, Some(SAFE));
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        let ram = 10 << 12;
        // Every level, through an update: refused, the entry left alone.
        for (table, level) in [(4, 1), (3, 2), (2, 3), (1, 4)] {
            assert_eq!(
                ft.mod_entry(&mut mem, mf(table), level, 7, ram, D),
                Err(MmError::L1tf { level, entry: ram }),
                "L{level}"
            );
            assert_eq!(mem.read(mf(table), 7), 0);
            // Safe ones pass: zero, and at or above the safe address (with other low bits).
            for ok in [0, 0x7e, 1 << 39, (1 << 45) | 0xf7e] {
                ft.mod_entry(&mut mem, mf(table), level, 7, ok, D).unwrap();
                assert_eq!(mem.read(mf(table), 7), ok);
            }
        }
        // PSE above L1 is refused even at a safe address; at L1 it is PAT.
        for (table, level) in [(3, 2), (2, 3), (1, 4)] {
            let e = (1 << 39) | pte::PS;
            assert_eq!(
                ft.mod_entry(&mut mem, mf(table), level, 8, e, D),
                Err(MmError::L1tf { level, entry: e })
            );
        }
        ft.mod_entry(&mut mem, mf(4), 1, 8, pte::PS, D).unwrap();
        // Table validation: a new L1 holding one, pinned or linked in below the L2, is
        // refused and leaves nothing behind.
        mem.write(mf(5), 3, ram | 0x60);
        assert_eq!(
            ft.pin(&mut mem, mf(5), 1, D),
            Err(MmError::L1tf {
                level: 1,
                entry: ram | 0x60
            })
        );
        assert_eq!(
            ft.mod_entry(&mut mem, mf(3), 2, 9, e(5, pte::RW), D),
            Err(MmError::L1tf {
                level: 1,
                entry: ram | 0x60
            })
        );
        let f = ft.info(mf(5)).unwrap();
        assert_eq!((f.type_count, f.ref_count, f.pinned), (0, 0, false));
        assert_eq!(audit(&ft, &mem, &[]).map(|_| ()), Ok(()));
        // One behind the rules' back is a broken invariant.
        mem.write(mf(4), 9, ram);
        assert_eq!(
            audit(&ft, &mem, &[]).map_err(|f| f.first),
            Err(Broken::BadEntry {
                table: mf(4),
                idx: 9,
                entry: ram
            })
        );
        mem.write(mf(4), 9, 0);
        // Another domain, and the same one once unchecked, may write any not-present entry.
        mem.write(mf(20), 3, ram);
        ft.pin(&mut mem, mf(20), 1, OTHER).unwrap();
        ft.set_l1tf_check(D, None);
        ft.pin(&mut mem, mf(5), 1, D).unwrap();
        ft.mod_entry(&mut mem, mf(4), 1, 7, ram, D).unwrap();
    }

    #[test]
    fn grant_mappings_hold_references_like_entries_and_pass_the_audit() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        // OTHER's frame 21 granted to D, mapped writable in slot 7, read-only in slot 8.
        let rw = e(21, pte::RW | pte::GNTTAB | pte::NX);
        ft.grant_map_l1e(&mut mem, mf(4), 7, D, rw, OTHER).unwrap();
        ft.grant_map_l1e(&mut mem, mf(4), 8, D, e(21, pte::GNTTAB), OTHER)
            .unwrap();
        let f = *ft.info(mf(21)).unwrap();
        assert_eq!(
            (f.ref_count, f.type_count, f.ty),
            (2, 1, PageType::Writable)
        );
        audit(&ft, &mem, &[]).unwrap();
        // Its owner cannot make it a table or give it back while it is mapped.
        assert_eq!(
            ft.pin(&mut mem, mf(21), 1, OTHER),
            Err(MmError::TypeConflict)
        );
        assert_eq!(
            ft.release(&mut mem, mf(21), OTHER),
            Err(MmError::TypeConflict)
        );
        // Only the caller's own L1, and only the frame's owner as granter.
        assert!(ft.grant_map_l1e(&mut mem, mf(3), 0, D, rw, OTHER).is_err());
        assert!(ft.grant_map_l1e(&mut mem, mf(4), 9, D, rw, D).is_err());
        assert_eq!(ft.info(mf(21)).unwrap().ref_count, 2);
        // Unmapping checks the slot still maps the frame as granted.
        assert!(
            ft.grant_unmap_l1e(&mut mem, mf(4), 8, D, mf(21), true, 0)
                .is_err()
        );
        assert!(
            ft.grant_unmap_l1e(&mut mem, mf(4), 7, D, mf(22), true, 0)
                .is_err()
        );
        ft.grant_unmap_l1e(&mut mem, mf(4), 7, D, mf(21), true, 0)
            .unwrap();
        // unmap_and_replace: slot 1's entry (frame 11) moves into slot 8.
        let stolen = ft.grant_steal_l1e(&mut mem, mf(4), 1, D).unwrap();
        ft.grant_unmap_l1e(&mut mem, mf(4), 8, D, mf(21), false, stolen)
            .unwrap();
        assert_eq!(mem.read(mf(4), 8), stolen);
        let f = *ft.info(mf(21)).unwrap();
        assert_eq!((f.ref_count, f.type_count), (0, 0));
        audit(&ft, &mem, &[]).unwrap();
        // A grant entry left in a table is dropped by its teardown like any other.
        ft.grant_map_l1e(&mut mem, mf(4), 7, D, rw, OTHER).unwrap();
        ft.unpin(&mut mem, mf(1), D).unwrap();
        let f = *ft.info(mf(21)).unwrap();
        assert_eq!((f.ref_count, f.type_count), (0, 0));
        // And a guest can never write the grant mark itself.
        assert_eq!(ft.pin(&mut mem, mf(1), 4, D), Err(MmError::BadFlags));
    }

    /// Audits `ft` with `holds`, on fresh scratch.
    fn audit(ft: &FrameTable, mem: &FakeMem, holds: &[Hold]) -> Result<AuditSummary, AuditFailure> {
        let mut scratch = std::vec![AuditCounts::default(); 64];
        ft.audit(mem, holds.iter().copied(), [], &mut scratch)
    }

    #[test]
    fn audit_accepts_a_consistent_table_and_accounts_for_holds() {
        let (mut ft, mut mem) = setup(20);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        let s = audit(&ft, &mem, &[]).unwrap();
        assert_eq!((s.frames, s.tables, s.entries), (64, 4, 5));
        // A base pointer (L4 type) and a vcpu_info page (writable type) held outside tables.
        ft.get_page(mf(1), D).unwrap();
        ft.get_page_type(&mut mem, mf(1), PageType::Table(4), D)
            .unwrap();
        ft.get_page(mf(12), D).unwrap();
        ft.get_page_type(&mut mem, mf(12), PageType::Writable, D)
            .unwrap();
        let holds = [
            Hold {
                mfn: mf(1),
                ty: Some(PageType::Table(4)),
            },
            Hold {
                mfn: mf(12),
                ty: Some(PageType::Writable),
            },
        ];
        assert!(audit(&ft, &mem, &holds).is_ok());
        let e = audit(&ft, &mem, &holds[..1]).unwrap_err();
        assert_eq!(
            e.first,
            Broken::RefCount {
                mfn: mf(12),
                have: 1,
                want: 0
            }
        );
        assert_eq!(e.count, 2, "its type count is off too");
        let wrong = [
            holds[0],
            Hold {
                mfn: mf(12),
                ty: Some(PageType::SegDesc),
            },
        ];
        assert!(matches!(
            audit(&ft, &mem, &wrong).unwrap_err().first,
            Broken::WrongType { mfn, .. } if mfn == mf(12)
        ));
        let mut scratch = std::vec![AuditCounts::default(); 10];
        assert_eq!(
            ft.audit(&mem, [], [], &mut scratch).unwrap_err().first,
            Broken::ScratchTooSmall
        );
    }

    #[test]
    fn audit_finds_each_kind_of_corruption() {
        let corrupted = |f: &dyn Fn(&mut FrameTable, &mut FakeMem)| {
            let (mut ft, mut mem) = setup(20);
            tree(&mut mem);
            ft.pin(&mut mem, mf(1), 4, D).unwrap();
            f(&mut ft, &mut mem);
            audit(&ft, &mem, &[]).unwrap_err().first
        };
        // A table entry written behind the frame table's back: a writable mapping of the L2.
        assert_eq!(
            corrupted(&|_, mem| mem.write(mf(4), 5, e(3, pte::RW | pte::US))),
            Broken::WrongType {
                mfn: mf(3),
                have: PageType::Table(2),
                want: PageType::Writable
            }
        );
        // A writable self-mapping of the L4, and a linear count no entry accounts for.
        assert!(matches!(
            corrupted(&|_, mem| mem.write(mf(1), 5, e(1, pte::RW | pte::US))),
            Broken::BadEntry {
                table,
                idx: 5,
                ..
            } if table == mf(1)
        ));
        assert!(matches!(
            corrupted(&|ft, _| ft.frames[1].linear = 1),
            Broken::LinearCount { mfn, .. } if mfn == mf(1)
        ));
        // ... of a foreign frame, of a frame with reserved bits, without US.
        assert_eq!(
            corrupted(&|_, mem| mem.write(mf(4), 5, e(21, pte::US))),
            Broken::Foreign {
                table: mf(4),
                idx: 5,
                target: mf(21)
            }
        );
        assert!(matches!(
            corrupted(&|_, mem| mem.write(mf(4), 5, e(12, pte::US) | (1 << 55))),
            Broken::BadEntry {
                table,
                idx: 5,
                ..
            } if table == mf(4)
        ));
        assert!(matches!(
            corrupted(&|_, mem| mem.write(mf(4), 5, e(12, 0))),
            Broken::BadEntry {
                table,
                idx: 5,
                ..
            } if table == mf(4)
        ));
        assert!(
            matches!(
                corrupted(&|_, mem| mem.write(mf(4), 5, e(0x1000, pte::US))),
                Broken::BadEntry { .. }
            ),
            "device memory without an I/O grant"
        );
        // A lost reference, a type left behind, a pin on a frame that is no table.
        assert_eq!(
            corrupted(&|ft, _| ft.put_page(mf(11))),
            Broken::RefCount {
                mfn: mf(11),
                have: 0,
                want: 1
            }
        );
        assert_eq!(
            corrupted(&|ft, _| ft.frames[13].ty = PageType::SegDesc),
            Broken::BadState { mfn: mf(13) }
        );
        assert_eq!(
            corrupted(&|ft, _| ft.frames[14].pinned = true),
            Broken::BadState { mfn: mf(14) }
        );
        assert_eq!(
            corrupted(&|ft, _| ft.frames[10].owner = None),
            Broken::Foreign {
                table: mf(4),
                idx: 0,
                target: mf(10)
            },
            "a mapped frame that left its domain"
        );
        // A frame handed back to the allocator while its domain still owns it.
        let (ft, mem) = setup(20);
        let mut scratch = std::vec![AuditCounts::default(); 64];
        assert_eq!(
            ft.audit(&mem, [], [30..40, 15..17], &mut scratch)
                .unwrap_err(),
            AuditFailure {
                first: Broken::FreeButOwned { mfn: mf(15) },
                count: 2
            }
        );
        assert!(
            ft.audit(&mem, [], core::iter::once(20..40), &mut scratch)
                .is_err(),
            "frames of another domain"
        );
        assert!(
            ft.audit(&mem, [], core::iter::once(24..64), &mut scratch)
                .is_ok()
        );
    }

    #[test]
    fn random_updates_keep_every_invariant() {
        let (mut ft, mut mem) = setup(40);
        tree(&mut mem);
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        // A second root, so that L4 entries may also be linear entries naming another L4.
        ft.pin(&mut mem, mf(5), 4, D).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut ok = 0;
        let mut linear = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let table = [1u64, 2, 3, 4, 5][(x % 5) as usize];
            let level = [4u8, 3, 2, 1, 4][(x % 5) as usize];
            let idx = ((x >> 8) % 8) as usize;
            let target = (x >> 16) % 48; // includes foreign frames 40-43 and unowned 44-47
            let flags = if (x >> 24) & 1 == 1 { pte::RW } else { 0 };
            let new = if (x >> 25).is_multiple_of(5) {
                0
            } else {
                e(target, flags)
            };
            if ft
                .mod_entry(&mut mem, mf(table), level, idx, new, D)
                .is_ok()
            {
                ok += 1;
                let named = ft.info(mf(target)).map(|f| f.ty);
                if new != 0 && level > 1 && named == Some(PageType::Table(level)) {
                    linear += 1;
                }
            }
            // Invariants 1, 2 and 4: counts equal what the validated tables and pins account
            // for, no typed or foreign frame is mapped writable.
            if let Err(f) = audit(&ft, &mem, &[]) {
                panic!("{} ({} broken)", f.first, f.count);
            }
        }
        assert!(
            ok > 1000,
            "the random walk exercised successful updates ({ok})"
        );
        assert!(
            ft.info(mf(40)).unwrap().ref_count == 0,
            "foreign frames never gained references"
        );
        assert!(linear > 100, "the walk made linear entries ({linear})");
        // Unpinned, the two trees give back every reference, linear ones included.
        ft.unpin(&mut mem, mf(1), D).unwrap();
        ft.unpin(&mut mem, mf(5), D).unwrap();
        audit(&ft, &mem, &[]).unwrap();
        for m in 0..40 {
            let f = ft.info(mf(m)).unwrap();
            assert_eq!((m, f.ref_count, f.type_count, f.linear), (m, 0, 0, 0));
        }
    }

    /// A domain of 600 frames whose L4 (frame 1) maps, through one L3 (2) and two L2s (3, 4),
    /// 24 L1s (10-33) of 512 entries each: frames 100-599, alternately writable and read-only.
    fn big_tree() -> (FrameTable<'static>, FakeMem) {
        let storage = std::boxed::Box::leak(std::vec![FrameInfo::FREE; 700].into_boxed_slice());
        let mut ft = FrameTable::new(storage);
        for m in 0..600 {
            ft.assign(mf(m), D).unwrap();
        }
        ft.assign(mf(650), OTHER).unwrap();
        let mut mem = FakeMem::default();
        mem.write(mf(1), 0, e(2, pte::RW));
        mem.write(mf(1), 260, e(2, pte::RW)); // a hypervisor slot: never looked at
        mem.write(mf(2), 0, e(3, pte::RW));
        mem.write(mf(2), 1, e(4, pte::RW));
        for l1 in 10..34u64 {
            let (l2, slot) = if l1 < 22 { (3, l1 - 10) } else { (4, l1 - 22) };
            mem.write(mf(l2), slot as usize, e(l1, pte::RW));
            for i in 0..512u64 {
                let target = 100 + (l1 * 512 + i) % 500;
                let flags = if target % 2 == 0 { pte::RW } else { 0 };
                mem.write(mf(l1), i as usize, e(target, flags));
            }
        }
        (ft, mem)
    }

    /// Checks invariant 2 with work under way: every count equals what the pins, the tables'
    /// validated entries (all of an idle table's, the slots below `next` (and the claimed
    /// child) of one being validated, the slots below `left` of one being torn down) and the
    /// vCPUs' pending roots account for.
    fn check_counts(ft: &FrameTable, mem: &FakeMem, pendings: &[&Pending]) {
        let n = (0u64..).take_while(|&m| ft.info(mf(m)).is_some()).count();
        let holds: Vec<Hold> = pendings.iter().flat_map(|p| ft.pending_holds(p)).collect();
        let mut scratch = std::vec![AuditCounts::default(); n];
        if let Err(f) = ft.audit(mem, holds, [], &mut scratch) {
            panic!("{} ({} broken)", f.first, f.count);
        }
    }

    /// Runs `op` with a budget of `step` entries until it stops asking to be issued again,
    /// checking the counts between calls (every 997th call for tiny budgets, to stay fast);
    /// returns the final result and the number of calls.
    fn run_in_steps(
        ft: &mut FrameTable,
        mem: &mut FakeMem,
        pending: &mut Pending,
        step: u64,
        mut op: impl FnMut(
            &mut FrameTable,
            &mut FakeMem,
            &mut Pending,
            &mut Budget,
        ) -> Result<(), MmError>,
    ) -> (Result<(), MmError>, usize) {
        for calls in 1.. {
            let r = op(ft, mem, pending, &mut Budget::new(step));
            if step >= 64 || calls % 997 == 0 || r != Err(MmError::Preempted) {
                check_counts(ft, mem, &[pending]);
            }
            if r != Err(MmError::Preempted) {
                return (r, calls);
            }
        }
        unreachable!()
    }

    /// Snapshot of every frame's bookkeeping but the flush stamps.
    fn counts(ft: &FrameTable) -> Vec<(u64, PageType, u32, u32, bool, Progress)> {
        (0u64..)
            .map_while(|m| {
                ft.info(mf(m))
                    .map(|f| (m, f.ty, f.type_count, f.ref_count, f.pinned, f.progress))
            })
            .collect()
    }

    #[test]
    fn a_pin_preempted_at_any_entry_ends_as_an_unbounded_one() {
        let (mut reference, mut ref_mem) = big_tree();
        reference.pin(&mut ref_mem, mf(1), 4, D).unwrap();
        for step in [1, 7, 100, 4096] {
            let (mut ft, mut mem) = big_tree();
            let mut p = Pending::default();
            let (r, calls) = run_in_steps(&mut ft, &mut mem, &mut p, step, |ft, mem, p, b| {
                ft.pin_preemptible(mem, mf(1), 4, D, p, b)
            });
            assert_eq!(r, Ok(()));
            assert!(p.is_idle());
            assert!(
                step > 20_000 || calls > 1,
                "a {step}-entry budget preempted the pin"
            );
            assert_eq!(counts(&ft), counts(&reference), "budget {step}");
            assert_eq!(
                mem.pages, ref_mem.pages,
                "budget {step}: same entries written"
            );
            // Unpinning in steps takes everything back.
            let (r, calls) = run_in_steps(&mut ft, &mut mem, &mut p, step, |ft, mem, p, b| {
                if p.teardown.is_some() {
                    ft.finish_teardown(mem, p, b)
                } else {
                    ft.unpin_preemptible(mem, mf(1), D, p, b)?;
                    ft.finish_teardown(mem, p, b)
                }
            });
            assert_eq!(r, Ok(()));
            assert!(step > 20_000 || calls > 1);
            assert!(
                counts(&ft).iter().all(|c| c.2 == 0 && c.3 == 0),
                "budget {step}: all released"
            );
        }
    }

    #[test]
    fn a_failed_preempted_pin_gives_everything_back() {
        for step in [1, 3, 64, 10_000] {
            let (mut ft, mut mem) = big_tree();
            // The very last L1 entry maps the L2 frame 4 writable: refused, after ~12,000
            // entries were validated.
            mem.write(mf(33), 511, e(4, pte::RW));
            let mut p = Pending::default();
            let (r, _) = run_in_steps(&mut ft, &mut mem, &mut p, step, |ft, mem, p, b| {
                ft.pin_preemptible(mem, mf(1), 4, D, p, b)
            });
            assert_eq!(r, Err(MmError::TypeConflict), "budget {step}");
            assert!(p.validating.is_none());
            let (r, _) = run_in_steps(&mut ft, &mut mem, &mut p, step, |ft, mem, p, b| {
                ft.finish_teardown(mem, p, b)
            });
            assert_eq!(r, Ok(()));
            assert!(p.is_idle());
            assert!(
                counts(&ft).iter().all(|c| c.2 == 0 && c.3 == 0),
                "budget {step}: all released"
            );
        }
    }

    #[test]
    fn another_vcpus_partial_table_is_busy_until_done() {
        let (mut ft, mut mem) = big_tree();
        // A second L4 (5) sharing the L3.
        mem.write(mf(5), 0, e(2, pte::RW));
        let (mut a, mut b) = (Pending::default(), Pending::default());
        let r = ft.pin_preemptible(&mut mem, mf(1), 4, D, &mut a, &mut Budget::new(1000));
        assert_eq!(r, Err(MmError::Preempted));
        // The shared L3 is part way: vCPU b may not take it, nor map it writable, nor pin it.
        let r = ft.pin_preemptible(&mut mem, mf(5), 4, D, &mut b, &mut Budget::unlimited());
        assert_eq!(r, Err(MmError::Busy));
        check_counts(&ft, &mem, &[&a, &b]);
        assert_eq!(ft.pin(&mut mem, mf(2), 3, D), Err(MmError::Busy));
        assert_eq!(ft.release(&mut mem, mf(2), D), Err(MmError::TypeConflict));
        // vCPU a finishes; b's retry goes through and shares the validated L3.
        ft.pin_preemptible(&mut mem, mf(1), 4, D, &mut a, &mut Budget::unlimited())
            .unwrap();
        ft.pin_preemptible(&mut mem, mf(5), 4, D, &mut b, &mut Budget::unlimited())
            .unwrap();
        check_counts(&ft, &mem, &[&a, &b]);
        assert_eq!(ft.info(mf(2)).unwrap().type_count, 2);
        assert_eq!(ft.info(mf(3)).unwrap().type_count, 1, "validated once");
    }

    #[test]
    fn a_partial_pin_not_resumed_is_given_up() {
        let (mut ft, mut mem) = big_tree();
        ft.assign(mf(600), D).unwrap();
        let mut p = Pending::default();
        let r = ft.pin_preemptible(&mut mem, mf(1), 4, D, &mut p, &mut Budget::new(5000));
        assert_eq!(r, Err(MmError::Preempted));
        check_counts(&ft, &mem, &[&p]);
        // The vCPU pins something else: the partial validation is torn down first.
        let (r, _) = run_in_steps(&mut ft, &mut mem, &mut p, 500, |ft, mem, p, b| {
            ft.pin_preemptible(mem, mf(600), 1, D, p, b)
        });
        assert_eq!(r, Ok(()));
        assert!(p.is_idle());
        assert!(
            counts(&ft)
                .iter()
                .filter(|c| c.0 != 600)
                .all(|c| c.2 == 0 && c.3 == 0),
            "the given-up tree holds nothing"
        );
    }

    #[test]
    fn linking_and_unlinking_a_big_subtree_is_preemptible() {
        let (mut ft, mut mem) = big_tree();
        // An L4 (6) with nothing in it yet, then its slot 5 pointed at the big L3.
        ft.pin(&mut mem, mf(6), 4, D).unwrap();
        let mut p = Pending::default();
        let (r, calls) = run_in_steps(&mut ft, &mut mem, &mut p, 256, |ft, mem, p, b| {
            ft.mod_entry_preemptible(mem, mf(6), 4, 5, e(2, pte::RW), D, p, b)
        });
        assert_eq!((r, calls > 20), (Ok(()), true));
        assert_eq!(ft.info(mf(2)).unwrap().type_count, 1);
        // Unlinking it starts a teardown left pending; an update of another slot finishes it
        // first.
        let r =
            ft.mod_entry_preemptible(&mut mem, mf(6), 4, 5, 0, D, &mut p, &mut Budget::new(256));
        assert_eq!(r, Ok(()));
        assert_eq!(p.teardown, Some(mf(2)));
        check_counts(&ft, &mem, &[&p]);
        let (r, _) = run_in_steps(&mut ft, &mut mem, &mut p, 256, |ft, mem, p, b| {
            ft.mod_entry_preemptible(mem, mf(6), 4, 7, 0, D, p, b)
        });
        assert_eq!(r, Ok(()));
        assert!(p.is_idle());
        assert_eq!(ft.info(mf(2)).unwrap().type_count, 0);
        assert!(
            counts(&ft)
                .iter()
                .filter(|c| c.0 != 6)
                .all(|c| c.2 == 0 && c.3 == 0)
        );
    }

    #[test]
    fn an_update_inside_the_vcpus_own_partial_table_gives_it_up() {
        let (mut ft, mut mem) = big_tree();
        let mut p = Pending::default();
        let r = ft.pin_preemptible(&mut mem, mf(1), 4, D, &mut p, &mut Budget::new(3000));
        assert_eq!(r, Err(MmError::Preempted));
        // The L3 (frame 2) is part way through, claimed by this vCPU's pin. An update inside
        // it would otherwise wait for ever on the vCPU's own validation.
        let r = ft.mod_entry_preemptible(
            &mut mem,
            mf(2),
            3,
            9,
            0,
            D,
            &mut p,
            &mut Budget::unlimited(),
        );
        assert_eq!(
            r,
            Err(MmError::NotATable),
            "the L3 is no table once given up"
        );
        assert!(p.is_idle());
        check_counts(&ft, &mem, &[&p]);
        assert!(
            counts(&ft).iter().all(|c| c.2 == 0 && c.3 == 0),
            "all released"
        );
    }

    #[test]
    fn an_unpin_between_two_issues_of_a_pin_loses_no_teardown() {
        // Found in review: the resumed pin skipped the pending teardown and overwrote it, and
        // the unpinned tree stayed half torn down, referenced, for ever.
        let (mut ft, mut mem) = big_tree();
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        ft.assign(mf(600), D).unwrap();
        // An L1 that maps the pinned L4 writable: refused while the L4 is a table.
        mem.write(mf(600), 5, e(1, pte::RW));
        let mut p = Pending::default();
        let r = ft.pin_preemptible(&mut mem, mf(600), 1, D, &mut p, &mut Budget::new(2));
        assert_eq!(r, Err(MmError::Preempted));
        ft.unpin_preemptible(&mut mem, mf(1), D, &mut p, &mut Budget::new(5))
            .unwrap();
        assert!(p.owes_teardown(), "the unpin left its teardown pending");
        // The pin, issued again, first finishes the teardown: the L4 is an ordinary frame by
        // the time the L1 maps it.
        let (r, _) = run_in_steps(&mut ft, &mut mem, &mut p, 64, |ft, mem, p, b| {
            ft.pin_preemptible(mem, mf(600), 1, D, p, b)
        });
        assert_eq!(r, Ok(()));
        assert!(p.is_idle());
        check_counts(&ft, &mem, &[&p]);
        assert_eq!(ft.info(mf(1)).unwrap().ty, PageType::Writable);
        assert!(
            counts(&ft)
                .iter()
                .filter(|c| ![1, 600].contains(&c.0))
                .all(|c| c.2 == 0 && c.3 == 0),
            "the old tree is released"
        );
    }

    #[test]
    fn table_levels_outside_1_to_4_are_refused() {
        let (mut ft, mut mem) = big_tree();
        let mut p = Pending::default();
        for level in [0, 5, 255] {
            let r = ft.pin_preemptible(&mut mem, mf(1), level, D, &mut p, &mut Budget::unlimited());
            assert_eq!(r, Err(MmError::NotATable));
        }
        assert!(counts(&ft).iter().all(|c| c.2 == 0 && c.3 == 0));
    }

    #[test]
    fn an_update_inside_another_vcpus_partial_table_keeps_the_own_validation() {
        let (mut ft, mut mem) = big_tree();
        ft.assign(mf(600), D).unwrap();
        let (mut a, mut b) = (Pending::default(), Pending::default());
        let r = ft.pin_preemptible(&mut mem, mf(1), 4, D, &mut a, &mut Budget::new(3000));
        assert_eq!(r, Err(MmError::Preempted));
        mem.write(mf(600), 0, e(100, 0));
        mem.write(mf(600), 1, e(101, 0));
        let r = ft.pin_preemptible(&mut mem, mf(600), 1, D, &mut b, &mut Budget::new(1));
        assert_eq!(r, Err(MmError::Preempted));
        // vCPU b writes into vCPU a's half-validated L3: it waits, and keeps its own work.
        let r = ft.mod_entry_preemptible(
            &mut mem,
            mf(2),
            3,
            9,
            0,
            D,
            &mut b,
            &mut Budget::unlimited(),
        );
        assert_eq!(r, Err(MmError::Busy));
        assert_eq!(b.validating, Some((mf(600), 1)));
        check_counts(&ft, &mem, &[&a, &b]);
    }

    /// A dying domain as the kernel leaves it: `big_tree`'s L4 (1) pinned and a vCPU's base
    /// pointer, a second pinned L4 (5) sharing its L3, an L1 (40) pinned alone that maps a
    /// frame the big tree maps too, a user base pointer (6, an L4 of its own, not pinned), a
    /// GDT page (7), a `vcpu_info` page (9, writable), a plain reference (8), a vCPU part way
    /// through pinning another tree (L4 41 -> L3 42 -> L2 43, whose entries name the big tree's
    /// L1s) and one that owes the teardown of
    /// an unpinned L3 (44 -> L2 45 -> the L1 40). The other domain has a pinned tree of its own (650-653)
    /// and a base pointer on it. Returns the holds Hestia has for the domain, the vCPUs'
    /// pending work and the other domain's hold.
    fn dying_domain() -> (FrameTable<'static>, FakeMem, Vec<Hold>, Vec<Pending>, Hold) {
        let (mut ft, mut mem) = big_tree();
        for m in 651..654 {
            ft.assign(mf(m), OTHER).unwrap();
        }
        let l4 = Some(PageType::Table(4));
        let mut holds = Vec::new();
        mem.write(mf(5), 0, e(2, pte::RW));
        mem.write(mf(40), 0, e(101, 0));
        mem.write(mf(6), 1, e(2, pte::RW));
        ft.pin(&mut mem, mf(1), 4, D).unwrap();
        ft.pin(&mut mem, mf(5), 4, D).unwrap();
        ft.pin(&mut mem, mf(40), 1, D).unwrap();
        for (mfn, ty) in [
            (1, l4),
            (6, l4),
            (7, Some(PageType::SegDesc)),
            (9, Some(PageType::Writable)),
            (8, None),
        ] {
            ft.get_page(mf(mfn), D).unwrap();
            if let Some(ty) = ty {
                ft.get_page_type(&mut mem, mf(mfn), ty, D).unwrap();
            }
            holds.push(Hold { mfn: mf(mfn), ty });
        }
        // vCPU 0 is part way through a pin; vCPU 1 owes a teardown.
        mem.write(mf(41), 0, e(42, pte::RW));
        mem.write(mf(42), 0, e(43, pte::RW));
        for i in 0..512 {
            mem.write(mf(43), i, e(10 + i as u64 % 24, pte::RW));
        }
        mem.write(mf(44), 0, e(45, pte::RW));
        mem.write(mf(45), 7, e(40, pte::RW));
        let mut pendings = std::vec![Pending::default(); 2];
        let r = ft.pin_preemptible(
            &mut mem,
            mf(41),
            4,
            D,
            &mut pendings[0],
            &mut Budget::new(40),
        );
        assert_eq!(r, Err(MmError::Preempted));
        ft.pin(&mut mem, mf(44), 3, D).unwrap();
        ft.unpin_preemptible(&mut mem, mf(44), D, &mut pendings[1], &mut Budget::new(0))
            .unwrap();
        assert!(pendings[1].owes_teardown());
        // The other domain: L4 650 -> L3 651 -> L2 652 -> L1 653 -> itself read-only.
        mem.write(mf(650), 0, e(651, pte::RW));
        mem.write(mf(651), 0, e(652, pte::RW));
        mem.write(mf(652), 0, e(653, pte::RW));
        mem.write(mf(653), 0, e(650, 0));
        ft.pin(&mut mem, mf(650), 4, OTHER).unwrap();
        ft.get_page(mf(650), OTHER).unwrap();
        ft.get_page_type(&mut mem, mf(650), PageType::Table(4), OTHER)
            .unwrap();
        let other = Hold {
            mfn: mf(650),
            ty: l4,
        };
        check_audit(
            &ft,
            &mem,
            holds.iter().copied().chain([other]),
            &pendings,
            [],
        );
        (ft, mem, holds, pendings, other)
    }

    /// Panics unless the audit of the whole table is clean with `holds`, the vCPUs'
    /// `pendings` and the frames in `free` held free by the allocator.
    fn check_audit(
        ft: &FrameTable,
        mem: &FakeMem,
        holds: impl IntoIterator<Item = Hold>,
        pendings: &[Pending],
        free: impl IntoIterator<Item = u64>,
    ) {
        let n = (0u64..).take_while(|&m| ft.info(mf(m)).is_some()).count();
        let mut all: Vec<Hold> = holds.into_iter().collect();
        all.extend(pendings.iter().flat_map(|p| ft.pending_holds(p)));
        let mut scratch = std::vec![AuditCounts::default(); n];
        let free = free.into_iter().map(|m| m..m + 1);
        if let Err(f) = ft.audit(mem, all, free, &mut scratch) {
            panic!("{} ({} broken)", f.first, f.count);
        }
    }

    /// Relinquishes `dom` with budgets of `step` entries, auditing between calls (every 97th
    /// for tiny budgets); returns the frames freed, in order, and the number of calls.
    fn relinquish_in_steps(
        ft: &mut FrameTable,
        mem: &mut FakeMem,
        dom: Dom,
        rel: &mut Relinquish,
        step: u64,
        other: &[Hold],
    ) -> (Vec<u64>, usize) {
        let mut freed = Vec::new();
        for calls in 1.. {
            let r = ft.relinquish_preemptible(mem, dom, rel, &mut Budget::new(step), &mut freed);
            if step >= 64 || calls % 97 == 0 || r.is_ok() {
                let holds: Vec<Hold> = ft
                    .relinquish_holds(rel)
                    .chain(other.iter().copied())
                    .collect();
                check_audit(ft, mem, holds, &[], freed.iter().map(|m| m.raw()));
            }
            match r {
                Ok(()) => return (freed.into_iter().map(Mfn::raw).collect(), calls),
                Err(MmError::Preempted) => {}
                Err(e) => panic!("relinquish failed: {e:?}"),
            }
        }
        unreachable!()
    }

    #[test]
    fn relinquishing_frees_every_frame_once_whatever_the_budget() {
        let mut reference = None;
        for step in [0, 1, 3, 17, 512, u64::MAX] {
            let (mut ft, mut mem, holds, pendings, other) = dying_domain();
            let others_before: Vec<FrameInfo> =
                (600..700).map(|m| *ft.info(mf(m)).unwrap()).collect();
            let owned: Vec<u64> = (0..700)
                .filter(|&m| ft.info(mf(m)).unwrap().owner == Some(D))
                .collect();
            let flushes = mem.flushes;
            let mut rel = Relinquish::new(pendings, holds);
            let (freed, calls) = if step == 0 {
                // A budget of nothing makes no progress: the caller's loop must add some.
                let mut freed = Vec::new();
                let r = ft.relinquish_preemptible(
                    &mut mem,
                    D,
                    &mut rel,
                    &mut Budget::new(0),
                    &mut freed,
                );
                assert_eq!((r, freed.len()), (Err(MmError::Preempted), 0));
                continue;
            } else {
                relinquish_in_steps(&mut ft, &mut mem, D, &mut rel, step, &[other])
            };
            assert!(rel.is_done());
            assert_eq!((rel.kept(), rel.bad_holds()), (0, 0));
            assert!(step > 20_000 || calls > 10, "budget {step} was preempted");
            assert_eq!(
                freed, owned,
                "budget {step}: every frame of the domain, once"
            );
            assert!(
                (0..700).all(|m| ft.info(mf(m)).unwrap().owner != Some(D)),
                "budget {step}: nothing left owned"
            );
            assert!(
                freed.iter().all(|&m| *ft.info(mf(m)).unwrap()
                    == FrameInfo {
                        unmapped_at: ft.info(mf(m)).unwrap().unmapped_at,
                        table_unref_at: ft.info(mf(m)).unwrap().table_unref_at,
                        ..FrameInfo::FREE
                    }),
                "budget {step}: freed frames hold nothing"
            );
            let others_after: Vec<FrameInfo> =
                (600..700).map(|m| *ft.info(mf(m)).unwrap()).collect();
            assert_eq!(
                others_before
                    .iter()
                    .filter(|f| f.owner == Some(OTHER))
                    .collect::<Vec<_>>(),
                others_after
                    .iter()
                    .filter(|f| f.owner == Some(OTHER))
                    .collect::<Vec<_>>(),
                "budget {step}: the other domain is untouched"
            );
            assert!(
                mem.flushes > flushes,
                "removed mappings flushed before the frames went"
            );
            check_audit(&ft, &mem, [other], &[], freed.iter().copied());
            match &reference {
                None => reference = Some((freed, counts(&ft))),
                Some((f, c)) => {
                    assert_eq!((&freed, &counts(&ft)), (f, c), "budget {step}: same end")
                }
            }
        }
    }

    #[test]
    fn a_frame_referenced_from_outside_is_kept_until_its_last_reference_goes() {
        let (mut ft, mut mem, holds, pendings, other) = dying_domain();
        // A reference from outside the domain (a grant mapping, some day) on a data frame
        // the big tree maps.
        ft.get_page(mf(100), D).unwrap();
        let outside = Hold {
            mfn: mf(100),
            ty: None,
        };
        let mut rel = Relinquish::new(pendings, holds);
        let (freed, _) = relinquish_in_steps(&mut ft, &mut mem, D, &mut rel, 5, &[other, outside]);
        assert_eq!((rel.kept(), rel.bad_holds()), (1, 0));
        assert!(!freed.contains(&100));
        let f = *ft.info(mf(100)).unwrap();
        assert_eq!((f.owner, f.ref_count, f.type_count), (Some(D), 1, 0));
        // The outside reference goes: a fresh pass frees the frame, and only it.
        ft.put_page(mf(100));
        let mut rel = Relinquish::new(Vec::new(), Vec::new());
        let (freed, _) = relinquish_in_steps(&mut ft, &mut mem, D, &mut rel, 5, &[other]);
        assert_eq!((freed, rel.kept()), (std::vec![100], 0));
    }

    #[test]
    fn a_hold_the_domain_does_not_have_is_skipped() {
        let (mut ft, mut mem, mut holds, pendings, other) = dying_domain();
        // The other domain's base pointer, a type the frame does not have, a frame beyond
        // the table: each dropped nothing.
        holds.extend([
            other,
            Hold {
                mfn: mf(8),
                ty: Some(PageType::SegDesc),
            },
            Hold {
                mfn: mf(1 << 40),
                ty: None,
            },
        ]);
        let mut rel = Relinquish::new(pendings, holds);
        let mut freed = Vec::new();
        ft.relinquish_preemptible(&mut mem, D, &mut rel, &mut Budget::unlimited(), &mut freed)
            .unwrap();
        assert_eq!((rel.kept(), rel.bad_holds()), (0, 3));
        check_audit(&ft, &mem, [other], &[], freed.into_iter().map(Mfn::raw));
    }

    #[test]
    fn a_hundred_create_destroy_cycles_leave_every_frame_where_it_was() {
        // 64 frames: 0-3 another domain's (an L4 pinned), the rest a free pool.
        let storage = std::boxed::Box::leak(std::vec![FrameInfo::FREE; 64].into_boxed_slice());
        let mut ft = FrameTable::new(storage);
        let mut mem = FakeMem::default();
        ft.assign_range(mf(0), 4, OTHER).unwrap();
        ft.pin(&mut mem, mf(0), 4, OTHER).unwrap();
        let initial = counts(&ft);
        let mut pool: Vec<u64> = (4..64).collect();
        for cycle in 0..100u64 {
            // Create: 20 frames from the pool, an L4 -> L3 -> L2 -> L1 tree mapping the other
            // 16 (one writable), pinned and used as a base pointer, and a descriptor page.
            pool.rotate_left((cycle % 7) as usize);
            let frames: Vec<u64> = pool.drain(..20).collect();
            for &m in &frames {
                ft.assign(mf(m), D).unwrap();
                mem.pages.remove(&mf(m));
            }
            let [l4, l3, l2, l1, gdt] = [0, 1, 2, 3, 4].map(|i| frames[i]);
            mem.write(mf(l4), 0, e(l3, pte::RW));
            mem.write(mf(l3), 0, e(l2, pte::RW));
            mem.write(mf(l2), 0, e(l1, pte::RW));
            for (i, &m) in frames[5..].iter().enumerate() {
                mem.write(mf(l1), i, e(m, if i == 0 { pte::RW } else { 0 }));
            }
            ft.pin(&mut mem, mf(l4), 4, D).unwrap();
            let mut holds = Vec::new();
            for (m, ty) in [(l4, PageType::Table(4)), (gdt, PageType::SegDesc)] {
                ft.get_page(mf(m), D).unwrap();
                ft.get_page_type(&mut mem, mf(m), ty, D).unwrap();
                holds.push(Hold {
                    mfn: mf(m),
                    ty: Some(ty),
                });
            }
            // Destroy, a few entries at a time.
            let mut rel = Relinquish::new(std::vec![Pending::default()], holds);
            let step = cycle % 5 + 1;
            let other = Hold {
                mfn: mf(0),
                ty: Some(PageType::Table(4)),
            };
            ft.get_page(mf(0), OTHER).unwrap();
            ft.get_page_type(&mut mem, mf(0), PageType::Table(4), OTHER)
                .unwrap();
            let (mut freed, _) =
                relinquish_in_steps(&mut ft, &mut mem, D, &mut rel, step, &[other]);
            ft.put_page_type(&mut mem, mf(0));
            ft.put_page(mf(0));
            freed.sort_unstable();
            let mut want = frames.clone();
            want.sort_unstable();
            assert_eq!(freed, want, "cycle {cycle}: the domain's frames, each once");
            pool.extend(freed);
            assert_eq!(pool.len(), 60, "cycle {cycle}: the pool is whole again");
            assert_eq!(
                counts(&ft),
                initial,
                "cycle {cycle}: every frame where it was"
            );
        }
    }

    #[test]
    fn relinquishing_forgets_the_domains_settings() {
        let (mut ft, mut mem) = setup(20);
        ft.iomem_mut(D).add(0x1000, 0x1001);
        ft.set_l1tf_check(
            D,
            Some(SafeMaddr {
                addr_mask: pte::ADDR,
                safe_maddr: 0,
            }),
        );
        ft.iomem_mut(OTHER).add(0x1000, 0x1001);
        let mut rel = Relinquish::new(Vec::new(), Vec::new());
        let (freed, _) = relinquish_in_steps(&mut ft, &mut mem, D, &mut rel, 7, &[]);
        assert_eq!(freed, (0..20).collect::<Vec<u64>>());
        assert!(!ft.iomem_allowed(D, mf(0x1000)) && ft.iomem_allowed(OTHER, mf(0x1000)));
        assert!(ft.check_l1tf(D, 1, 0x1234_5000).is_ok());
    }
}
