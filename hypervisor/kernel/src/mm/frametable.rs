//! The machine-wide PV MMU state: the frame table (`hestia_core::pv_mm`) and the read-only
//! machine-to-phys table every PV guest sees at `0xFFFF800000000000`.
//!
//! Lock order: `FRAMES` (this module) before `mm::FRAMES` (the allocator) and `KERNEL_PT`.
//! Page-table frames are read and written through the direct map ([`DirectMem`]).
//!
//! Guest-triggered validation and teardown of page tables ([`preemptible`]) take `FRAMES` for
//! one [`CHUNK`] of entries at a time, so no guest operation holds the lock, or its CPU with
//! interrupts off, for longer than that; between chunks the caller may stop and have the
//! hypercall issued again.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use hestia_core::ids::Mfn;
use hestia_core::memmap::MemoryMap;
use hestia_core::pv_mm::{
    AuditCounts, AuditFailure, AuditSummary, Budget, DOM_IO, DOM_XEN, FrameInfo, FrameTable, Hold,
    MmError, PageType, Pending, PtMemory,
};
use xen_abi::errno::Errno;
use xen_abi::mmu::INVALID_M2P_ENTRY;
use xen_abi::xen::MACH2PHYS_VIRT_START;

use super::phys_to_virt;

use super::paging::{Access, PageSize};
use crate::arch::x86_64::{cpu, smp, tsc};

static FRAMES: spin::Mutex<Option<FrameTable<'static>>> = spin::Mutex::new(None);
/// Frames covered by the frame table and the M2P.
static NR_FRAMES: spin::Once<u64> = spin::Once::new();
/// Virtual address of Hestia's writable view of the M2P (in the direct map).
static M2P_RW: spin::Once<u64> = spin::Once::new();
/// Physical address and size of the M2P (it is one contiguous allocation).
static M2P_PHYS: spin::Once<(u64, u64)> = spin::Once::new();
/// Something that kept a frame of a destroyed domain went since the reaper last asked
/// ([`take_dead_frame_released`]).
static DEAD_FRAME_RELEASED: AtomicBool = AtomicBool::new(false);

/// Page-table frames as seen through the direct map.
pub struct DirectMem;

impl PtMemory for DirectMem {
    fn read(&self, mfn: Mfn, idx: usize) -> u64 {
        // SAFETY: the frame table only hands out MFNs below its size, which is inside the direct
        // map; `idx` < 512 keeps the access inside the frame; entries are 8-byte aligned.
        unsafe { core::ptr::read_volatile((phys_to_virt(mfn.addr()) as *const u64).add(idx)) }
    }
    fn write(&mut self, mfn: Mfn, idx: usize, val: u64) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((phys_to_virt(mfn.addr()) as *mut u64).add(idx), val) }
    }
    fn flush_tlbs(&mut self) {
        use crate::arch::x86_64::smp::{self, Flush};
        smp::flush_guest_tlbs(Flush::AnyGuest);
    }
    fn root_entry_changed(&mut self, mfn: Mfn) {
        crate::arch::x86_64::xpti::root_changed(mfn);
    }
    fn install_hypervisor_slots(&mut self, mfn: Mfn) {
        let root = super::kernel_root();
        for slot in hestia_core::pv_mm::HYPERVISOR_L4_SLOTS {
            // SAFETY: Hestia's PML4 is a frame in the direct map; reading an entry is plain memory.
            let e =
                unsafe { core::ptr::read_volatile((phys_to_virt(root) as *const u64).add(slot)) };
            self.write(mfn, slot, e);
        }
    }
}

/// Creates the frame table and the M2P for frames below `top` bytes, and maps the M2P
/// read-only (guest-readable) at `MACH2PHYS_VIRT_START` in Hestia's page tables, whose slot
/// 256 every guest L4 shares.
pub fn init(memmap: &MemoryMap) -> Result<(), &'static str> {
    let nr = memmap.top_of_ram().div_ceil(4096);
    // Whole 2 MiB chunks: `XENMEM_machphys_mfn_list` hands the M2P out as such, and
    // libxenguest's save maps every frame of each (Xen allocates it so).
    let bytes = (nr * 8).next_multiple_of(M2P_CHUNK);
    let m2p =
        super::alloc_zeroed_frames(bytes / 4096, 4096, u64::MAX).ok_or("no memory for the M2P")?;
    let v = phys_to_virt(m2p);
    // SAFETY: the M2P frames were just allocated for this purpose and are mapped RW in the
    // direct map; `bytes / 8` entries fit in `bytes`.
    unsafe {
        core::slice::from_raw_parts_mut(v as *mut u64, (bytes / 8) as usize).fill(INVALID_M2P_ENTRY)
    };
    super::with_kernel_pt(|pt| {
        pt.map_range(
            MACH2PHYS_VIRT_START,
            m2p,
            bytes,
            Access::GuestRead,
            PageSize::Size4K,
        )
    })
    .ok_or("no kernel page tables")?
    .map_err(|_| "cannot map the M2P")?;
    let table_bytes = (nr * size_of::<FrameInfo>() as u64).next_multiple_of(4096);
    let table = super::alloc_zeroed_frames(table_bytes / 4096, 4096, u64::MAX)
        .ok_or("no memory for the frame table")?;
    let slots = phys_to_virt(table) as *mut FrameInfo;
    for i in 0..nr as usize {
        // SAFETY: `i` < `nr`, and `table_bytes` covers `nr` entries of fresh, exclusively owned,
        // page-aligned memory; each slot is initialised before use.
        unsafe { slots.add(i).write(FrameInfo::FREE) };
    }
    // SAFETY: all `nr` slots were initialised above; the frames are never freed or aliased.
    let storage = unsafe { core::slice::from_raw_parts_mut(slots, nr as usize) };
    M2P_RW.call_once(|| v);
    M2P_PHYS.call_once(|| (m2p, bytes));
    NR_FRAMES.call_once(|| nr);
    let mut ft = FrameTable::new(storage);
    // Shared read-only with privileged domains, who map it by naming DOMID_XEN.
    ft.assign_range(Mfn::new(m2p / 4096), bytes / 4096, DOM_XEN)
        .map_err(|_| "the M2P is outside the frame table")?;
    let io = mark_io_frames(&mut ft, memmap, nr);
    *FRAMES.lock() = Some(ft);
    crate::info!(
        "mm: frame table ({} KiB) and M2P ({} KiB at {MACH2PHYS_VIRT_START:#x}, read-only to guests) for {nr} frames, {io} of them firmware/I/O",
        table_bytes / 1024,
        bytes / 1024
    );
    Ok(())
}

/// The low 1 MiB (BIOS data, EBDA, option ROMs, the BIOS; its RAM is never allocated again once
/// the APs are up) and every frame the memory map does not call usable RAM (ACPI tables, holes,
/// reserved ranges) belong to `DOM_IO`, as in Xen: dom0 maps them as I/O memory. Returns how
/// many frames that is.
fn mark_io_frames(ft: &mut FrameTable<'_>, memmap: &MemoryMap, nr: u64) -> u64 {
    const LOW_MEM: u64 = 0x10_0000;
    super::reserve_forever(0, LOW_MEM);
    let usable = |mfn: u64| {
        memmap
            .usable()
            .any(|r| r.start <= mfn * 4096 && (mfn + 1) * 4096 <= r.end)
    };
    let mut io = 0;
    for mfn in 0..nr {
        let low = mfn < LOW_MEM / 4096;
        if (low || !usable(mfn)) && ft.assign(Mfn::new(mfn), DOM_IO).is_ok() {
            io += 1;
        }
    }
    io
}

/// Lets `dom` (dom0) map every I/O frame but Hestia's own devices and the MSI/LAPIC window,
/// and the devices Hestia shares (the HPET) read-only (Xen's `dom0_setup_permissions`).
pub fn grant_dom0_iomem(dom: u16) {
    /// 0xFEE00000-0xFEEFFFFF: LAPICs and MSI writes.
    const MSI_WINDOW: (u64, u64) = (0xFEE00, 0xFEF00);
    let (exclusive, readable) = super::hestia_device_frames();
    with(|ft, _| {
        let set = ft.iomem_mut(dom);
        set.add(0, 1 << (52 - 12));
        set.remove(MSI_WINDOW.0, MSI_WINDOW.1);
        for &(s, e) in exclusive.ranges() {
            set.remove(s, e);
        }
        for &(s, e) in readable.ranges() {
            ft.iomem_ro_mut().add(s, e);
        }
    });
}

/// Takes a general and a writable type reference on `dom`'s frame `mfn`, for a page Hestia
/// writes on the domain's behalf (a registered `vcpu_info`, a FIFO control block or event-array
/// page: isolation rule 5), as Xen's `get_page_and_type(..., PGT_writable_page)`: it can then
/// be neither a page table nor freed until [`put_writable_page`]. `EINVAL` for a frame that is
/// not the domain's or has another type, as Xen answers for these pages.
pub fn get_writable_page(mfn: Mfn, dom: u16) -> Result<(), Errno> {
    with(|ft, mem| -> Result<(), MmError> {
        ft.get_page(mfn, dom)?;
        ft.get_page_type(mem, mfn, PageType::Writable, dom)
            .inspect_err(|_| ft.put_page(mfn))
    })
    .unwrap_or(Err(MmError::BadFrame))
    .map_err(|_| Errno::EINVAL)
}

/// Drops the references [`get_writable_page`] took.
pub fn put_writable_page(mfn: Mfn) {
    with(|ft, mem| {
        ft.put_page_type(mem, mfn);
        ft.put_page(mfn);
    });
}

/// Why [`write_page_for`] could not write a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotWritable {
    /// The frame is not the domain's.
    NotOwned,
    /// The domain uses it as something other than a plain writable page (a page table, a
    /// descriptor table).
    WrongType,
}

/// Overwrites `dom`'s frame `mfn` with `bytes`, holding a general and a writable type
/// reference on it while it writes (isolation rule 5; Xen's `get_page_and_type(...,
/// PGT_writable_page)` around the write, as `XEN_DOMCTL_hypercall_init` does).
pub fn write_page_for(mfn: Mfn, dom: u16, bytes: &[u8; 4096]) -> Result<(), NotWritable> {
    with(|ft, mem| {
        ft.get_page(mfn, dom).map_err(|_| NotWritable::NotOwned)?;
        if ft.get_page_type(mem, mfn, PageType::Writable, dom).is_err() {
            ft.put_page(mfn);
            return Err(NotWritable::WrongType);
        }
        // SAFETY: the frame is the domain's (so inside the direct map) and typed writable
        // under the references just taken: nothing else may use it as a table meanwhile.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                phys_to_virt(mfn.addr()) as *mut u8,
                bytes.len(),
            )
        };
        ft.put_page_type(mem, mfn);
        ft.put_page(mfn);
        Ok(())
    })
    .unwrap_or(Err(NotWritable::NotOwned))
}

/// Number of machine frames the frame table covers (`XENMEM_maximum_ram_page`).
pub fn nr_frames() -> u64 {
    NR_FRAMES.get().copied().unwrap_or(0)
}

/// Bytes of one M2P chunk as `XENMEM_machphys_mfn_list` lists them (Xen's `M2P_CHUNK_SIZE`).
pub const M2P_CHUNK: u64 = 2 << 20;

/// Physical address and size of the M2P (`XENMEM_machphys_mfn_list`), whole chunks.
pub fn m2p_phys() -> (u64, u64) {
    M2P_PHYS.get().copied().unwrap_or((0, 0))
}

/// One past the last byte of the guest-visible M2P: whole chunks, as mapped (entries past the
/// last frame read as invalid).
pub fn m2p_end() -> u64 {
    MACH2PHYS_VIRT_START + m2p_phys().1
}

/// Sets `m2p[mfn] = entry`: the guest frame number `mfn` backs, or `INVALID_M2P_ENTRY` (the
/// word as guests read it). Returns false for an MFN outside the table.
pub fn set_m2p(mfn: Mfn, entry: u64) -> bool {
    let (Some(&v), Some(&n)) = (M2P_RW.get(), NR_FRAMES.get()) else {
        return false;
    };
    if mfn.raw() >= n {
        return false;
    }
    // SAFETY: `mfn` < the number of entries allocated in `init`; the M2P stays mapped.
    unsafe { core::ptr::write_volatile((v as *mut u64).add(mfn.raw() as usize), entry) };
    true
}

/// The longest of some duration under the frame-table lock, and where in Hestia the lock was
/// taken for it (debug key `m`). Atomics, not a lock: the serial interrupt reads them, maybe
/// while this CPU writes them.
struct Longest {
    ticks: AtomicU64,
    at: AtomicPtr<core::panic::Location<'static>>,
}

impl Longest {
    const fn new() -> Self {
        Longest {
            ticks: AtomicU64::new(0),
            at: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    fn record(&self, ticks: u64, at: &'static core::panic::Location<'static>) {
        // A plain load first: the shared cache line is written only for a new longest.
        if ticks > self.ticks.load(Ordering::Relaxed)
            && self.ticks.fetch_max(ticks, Ordering::Relaxed) < ticks
        {
            let at: *const core::panic::Location<'static> = at;
            self.at.store(at.cast_mut(), Ordering::Relaxed);
        }
    }

    fn get(&self) -> (u64, Option<&'static core::panic::Location<'static>>) {
        let at = self.at.load(Ordering::Relaxed);
        // SAFETY: the pointer is null or came from `Location::caller()`, a `&'static Location`.
        let at = unsafe { at.as_ref() };
        (tsc::ticks_to_ns(self.ticks.load(Ordering::Relaxed)), at)
    }
}

/// The longest hold of the frame-table lock.
static LONGEST_HOLD: Longest = Longest::new();
/// The longest hold not counting the time spent waiting for other CPUs to flush their TLBs:
/// the work done under the lock, which is what its chunking bounds.
static LONGEST_WORK: Longest = Longest::new();

/// Runs `f` on the frame table with the direct-map memory accessor; if `f` dropped the last
/// reference on a frame of a domain being destroyed, that is noted for the reaper
/// ([`take_dead_frame_released`]).
#[track_caller]
pub fn with<R>(f: impl FnOnce(&mut FrameTable, &mut DirectMem) -> R) -> Option<R> {
    let mut ft = FRAMES.lock();
    let (start, waited) = (cpu::rdtsc(), smp::flush_wait_ticks());
    let r = ft.as_mut().map(|ft| f(ft, &mut DirectMem));
    let resweep = ft.as_mut().is_some_and(FrameTable::take_resweep);
    let held = cpu::rdtsc().wrapping_sub(start);
    let waited = smp::flush_wait_ticks().wrapping_sub(waited);
    drop(ft);
    if resweep {
        // A dead domain's frame lost its last reference (a grant or foreign mapping of it
        // went): the reaper frees it.
        dead_frame_released();
    }
    let at = core::panic::Location::caller();
    LONGEST_HOLD.record(held, at);
    LONGEST_WORK.record(held.saturating_sub(waited), at);
    r
}

/// Notes that something keeping a frame of a dying or destroyed domain went (a reference on
/// it, or a grant-table use of it): the reaper sweeps such domains again at its next step.
pub fn dead_frame_released() {
    DEAD_FRAME_RELEASED.store(true, Ordering::Release);
}

/// Whether something keeping a dead domain's frame went since the last call
/// ([`dead_frame_released`]); the reaper asks before each step, and sweeps its zombies again.
pub fn take_dead_frame_released() -> bool {
    DEAD_FRAME_RELEASED.swap(false, Ordering::AcqRel)
}

/// The longest holds of the frame-table lock since [`reset_longest_hold`]; displayed as one
/// line: the longest hold and the longest work under the lock, each with where it was taken.
pub struct LongestHolds {
    hold: (u64, Option<&'static core::panic::Location<'static>>),
    work: (u64, Option<&'static core::panic::Location<'static>>),
}

impl core::fmt::Display for LongestHolds {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let part = |f: &mut core::fmt::Formatter<'_>,
                    (ns, at): (u64, Option<&core::panic::Location<'_>>)| {
            let (file, line) = at.map_or(("-", 0), |l| (l.file(), l.line()));
            write!(f, "{} us ({file}:{line})", ns / 1000)
        };
        f.write_str("held at most ")?;
        part(f, self.hold)?;
        f.write_str(", at most ")?;
        part(f, self.work)?;
        f.write_str(" not counting waits for other CPUs' TLB flushes")
    }
}

/// The longest holds of the frame-table lock since [`reset_longest_hold`].
pub fn longest_hold() -> LongestHolds {
    LongestHolds {
        hold: LONGEST_HOLD.get(),
        work: LONGEST_WORK.get(),
    }
}

/// Starts measuring the longest hold afresh (when guests start: building dom0 holds the lock
/// as long as it needs).
pub fn reset_longest_hold() {
    LONGEST_HOLD.ticks.store(0, Ordering::Relaxed);
    LONGEST_WORK.ticks.store(0, Ordering::Relaxed);
}

/// Page-table entries validated or dropped per hold of the frame-table lock: a few
/// microseconds of work.
pub const CHUNK: u64 = 512;

/// Runs a preemptible frame-table operation ([`hestia_core::pv_mm`]'s `*_preemptible`) one
/// [`CHUNK`] per lock hold, issuing it again while it reports `Preempted` and `stop` says
/// nothing waits; returns its result, `Preempted` when it stopped for `stop`.
#[track_caller]
pub fn preemptible<R>(
    stop: impl Fn() -> bool,
    mut op: impl FnMut(&mut FrameTable, &mut DirectMem, &mut Budget) -> Result<R, MmError>,
) -> Result<R, MmError> {
    loop {
        let r =
            with(|ft, mem| op(ft, mem, &mut Budget::new(CHUNK))).unwrap_or(Err(MmError::BadFrame));
        if !matches!(r, Err(MmError::Preempted)) || stop() {
            return r;
        }
    }
}

/// Audits the whole frame table against `holds`, the vCPUs' unfinished page-table work
/// `pendings` and the allocator's free list (`FrameTable::audit`), with scratch counters from
/// the frame allocator, freed afterwards. `None` when there is no table or no memory for
/// the scratch.
pub fn audit(holds: &[Hold], pendings: &[Pending]) -> Option<Result<AuditSummary, AuditFailure>> {
    let nr = nr_frames();
    let bytes = (nr * size_of::<AuditCounts>() as u64).next_multiple_of(4096);
    let scratch = super::alloc_zeroed_frames(bytes / 4096, 4096, u64::MAX)?;
    // SAFETY: the frames were just allocated, zeroed (a valid all-zero `AuditCounts`), are
    // exclusively ours until freed below, and hold `nr` slots.
    let slots = unsafe {
        core::slice::from_raw_parts_mut(phys_to_virt(scratch) as *mut AuditCounts, nr as usize)
    };
    let r = with(|ft, mem| {
        let pending: alloc::vec::Vec<Hold> =
            pendings.iter().flat_map(|p| ft.pending_holds(p)).collect();
        super::with_free_frames(|free| {
            ft.audit(mem, holds.iter().copied().chain(pending), free, slots)
        })
    });
    super::free_frames(scratch, bytes / 4096);
    r
}
