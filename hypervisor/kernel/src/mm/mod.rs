//! Memory management: the frame allocator, Hestia's final page tables, the heap, guarded stacks
//! and device mappings.
//!
//! Virtual layout (inside the Xen x86_64 hypervisor range, PML4 slots 256-271):
//! - `0xFFFF_8000_0000_0000` read-only M2P for PV guests (slot 256; from M1 on);
//! - `0xFFFF_82C0_0000_0000` device (MMIO) window, 1 GiB, uncached;
//! - `0xFFFF_82C0_4000_0000` stacks, each with an unmapped guard page below it, 1 GiB;
//! - `0xFFFF_82D0_8000_0000` the image: text RX, rodata R, data+bss RW NX;
//! - `0xFFFF_8300_0000_0000` direct map of physical memory from 0, RW NX (slots 262-271).
//!
//! Scrubbing (Xen's `PGC_need_scrub` and `scrub_free_pages`, xen/common/page_alloc.c): a frame
//! comes back to the allocator dirty (a dead domain's, a ballooned one, Hestia's own) and
//! counts as free at once; no frame leaves the allocator unzeroed ([`Fresh::zeroed`] zeroes
//! what the allocator calls dirty, outside its lock), and idle CPUs zero dirty free frames
//! meanwhile ([`scrub_step`]), so that allocations mostly find clean ones. Destroying a
//! domain therefore only gives its frames back; the zeroing happens at idle time or when the
//! frames are handed out again. The memory found at boot is dirty too (Xen's default
//! `bootscrub=idle`). Which free frames are clean is the allocator's bookkeeping
//! (`hestia_core::frame_alloc`).
//!
//! Lock order: `FRAMES` is a leaf lock; `KERNEL_PT` may take `FRAMES` while held.

pub mod frametable;
pub mod guest;
pub mod paging;

use core::sync::atomic::{AtomicU64, Ordering};
use hestia_core::rangeset::RangeSet;

use hestia_core::frame_alloc::FrameAllocator;
use linked_list_allocator::LockedHeap;

use crate::arch::x86_64::cpu;
use crate::bootinfo::BootInfo;
use paging::{Access, PageSize, PageTables};

/// Base of the direct map.
pub const DIRECT_MAP_BASE: u64 = 0xFFFF_8300_0000_0000;
/// Largest direct map: up to the end of the hypervisor range.
pub const DIRECT_MAP_MAX: u64 = 0xFFFF_8800_0000_0000 - DIRECT_MAP_BASE;
/// The device window.
pub const MMIO_BASE: u64 = 0xFFFF_82C0_0000_0000;
const MMIO_SIZE: u64 = 1 << 30;
/// The stack area.
pub const STACKS_BASE: u64 = 0xFFFF_82C0_4000_0000;
const STACKS_SIZE: u64 = 1 << 30;
/// Where the image is linked, and where it is loaded.
pub const KERNEL_VIRT: u64 = 0xFFFF_82D0_8000_0000;
/// Physical load address of the image (see linker.ld).
pub const KERNEL_PHYS: u64 = 0x20_0000;
const VOFF: u64 = KERNEL_VIRT - KERNEL_PHYS;
const GIB: u64 = 1 << 30;
/// Heap size.
const HEAP_SIZE: u64 = 16 << 20;

static FRAMES: spin::Mutex<FrameAllocator> = spin::Mutex::new(FrameAllocator::new());
static KERNEL_PT: spin::Mutex<Option<PageTables>> = spin::Mutex::new(None);
/// End of the direct map (bytes of physical memory covered). The boot stub maps 4 GiB.
static DIRECT_MAP_END: AtomicU64 = AtomicU64::new(4 * GIB);
static MMIO_NEXT: AtomicU64 = AtomicU64::new(MMIO_BASE);
static STACKS_NEXT: AtomicU64 = AtomicU64::new(STACKS_BASE);
static TOTAL_RAM: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

unsafe extern "C" {
    static __image_phys_start: u8;
    static __image_phys_end: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
}

/// The address of a linker-script symbol.
fn sym(s: *const u8) -> u64 {
    s as u64
}

/// The virtual address of a physical address in the direct map.
///
/// A physical address outside the direct map is a hypervisor bug (callers check ranges that
/// come from firmware first), hence the panic rather than an error.
pub fn phys_to_virt(phys: u64) -> u64 {
    assert!(
        phys < DIRECT_MAP_END.load(Ordering::Relaxed),
        "phys_to_virt: {phys:#x} outside the direct map"
    );
    DIRECT_MAP_BASE + phys
}

/// True if `[phys, phys+len)` lies inside the direct map.
pub fn in_direct_map(phys: u64, len: u64) -> bool {
    phys.checked_add(len)
        .is_some_and(|end| end <= DIRECT_MAP_END.load(Ordering::Relaxed))
}

/// Contiguous frames just taken from the allocator, not yet zeroed where they may hold old
/// data: nothing else references them until [`Fresh::zeroed`] hands them on.
#[must_use]
pub struct Fresh {
    phys: u64,
    /// The bytes (physical) that may hold a previous owner's data.
    dirty: core::ops::Range<u64>,
}

impl Fresh {
    /// Zeroes what of the frames may hold old data and gives their first physical address to
    /// the caller, whose they are.
    pub fn zeroed(self) -> u64 {
        let pages = (self.dirty.end - self.dirty.start) / 4096;
        if pages != 0 {
            // SAFETY: the frames were taken from the free list and nothing else references
            // them (`Fresh` is their only handle), and they lie below the direct map's end.
            unsafe { zero_frames(self.dirty.start, pages) };
        }
        self.phys
    }
}

/// Zeroes `count` frames from `phys` through the direct map.
///
/// # Safety
/// The frames lie below the direct map's end and nothing else reads or writes them meanwhile.
unsafe fn zero_frames(phys: u64, count: u64) {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::write_bytes(phys_to_virt(phys) as *mut u8, 0, (count * 4096) as usize) };
}

/// Takes `count` contiguous frames, aligned, ending below `limit`, from the allocator; those
/// that may hold old data are zeroed outside the allocator's lock (and any lock of the
/// caller's, for a large extent).
pub fn alloc_frames(count: u64, align: u64, limit: u64) -> Option<Fresh> {
    let limit = limit.min(DIRECT_MAP_END.load(Ordering::Relaxed));
    let a = FRAMES.lock().alloc(count, align, limit).ok()?;
    Some(Fresh {
        phys: a.addr,
        dirty: a.dirty,
    })
}

/// Allocates `count` zeroed contiguous frames, aligned, ending below `limit`.
pub fn alloc_zeroed_frames(count: u64, align: u64, limit: u64) -> Option<u64> {
    alloc_frames(count, align, limit).map(Fresh::zeroed)
}

/// Returns frames to the allocator, dirty: they are zeroed before anyone gets them again
/// (a failure leaks them, safely, and is logged). Nothing may use them any more: no domain
/// owns them in the frame table and no CPU runs on them as page tables.
pub fn free_frames(phys: u64, count: u64) {
    if let Err(e) = FRAMES.lock().free(phys, count) {
        crate::warn!("mm: could not free {count} frames at {phys:#x}: {e:?}");
    }
}

/// Frames one [`scrub_step`] zeroes at most (64 KiB): short enough to hold the allocator's
/// lock with interrupts off, as Xen's idle scrubber checks for pending work every few pages.
const SCRUB_STEP_FRAMES: u64 = 16;

/// Zeroes the highest dirty free frames, [`SCRUB_STEP_FRAMES`] at most, and records them
/// clean (one bounded step of Xen's idle-time `scrub_free_pages`). True if it zeroed any:
/// the idle loop calls it again after a window for interrupts, until none is left or a vCPU
/// is runnable. Under the allocator's lock, so no allocation takes a frame while it is being
/// zeroed.
pub fn scrub_step() -> bool {
    let mut fa = FRAMES.lock();
    let Some(run) = fa.dirty_run(SCRUB_STEP_FRAMES) else {
        return false;
    };
    // The direct map covers all RAM (`init`); were it not so, what lies beyond is never
    // allocated either (`alloc_frames`' limit).
    if !in_direct_map(run.start, run.end - run.start) {
        return false;
    }
    // SAFETY: the frames are free (the allocator's) and stay so while its lock is held;
    // nothing reads or writes free frames, and they lie in the direct map (checked above).
    unsafe { zero_frames(run.start, (run.end - run.start) / 4096) };
    // A full clean list leaves them dirty: zeroed again when allocated, which is safe.
    fa.mark_clean(run.start, run.end)
}

/// Memory statistics for the debug keys and the boot summary.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Usable RAM reported by firmware.
    pub total_ram: u64,
    /// Frames managed (usable minus reserved at boot), in bytes.
    pub managed: u64,
    /// Free bytes (dirty ones included, as Xen counts them).
    pub free: u64,
    /// Free bytes not zeroed yet (Xen's `node_need_scrub`).
    pub dirty: u64,
    /// Heap bytes in use.
    pub heap_used: u64,
    /// Heap size.
    pub heap_size: u64,
}

/// Current memory statistics.
pub fn stats() -> Stats {
    let f = FRAMES.lock();
    let h = HEAP.lock();
    Stats {
        total_ram: TOTAL_RAM.load(Ordering::Relaxed),
        managed: f.managed_frames() * 4096,
        free: f.free_frames() * 4096,
        dirty: f.dirty_frames() * 4096,
        heap_used: h.used() as u64,
        heap_size: h.size() as u64,
    }
}

/// Runs `f` on the free frames, as ranges of frame numbers, with the allocator locked (lock
/// order: after the frame table's lock, see `frametable`).
pub fn with_free_frames<R>(
    f: impl FnOnce(&mut dyn Iterator<Item = core::ops::Range<u64>>) -> R,
) -> R {
    let frames = FRAMES.lock();
    f(&mut frames.free_ranges().map(|(s, e)| s / 4096..e / 4096))
}

/// Prints the free ranges (debug key `m`).
pub fn dump_free_ranges(w: &mut dyn core::fmt::Write) {
    for (s, e) in FRAMES.lock().free_ranges() {
        let _ = writeln!(w, "    free {s:#014x}-{e:#014x} ({} KiB)", (e - s) / 1024);
    }
}

/// What the frame allocator never hands out, as byte ranges: the first page, Hestia's image,
/// the multiboot2 information (the modules' command lines live there) and the symbol tables
/// backtraces read.
fn kept_forever(info: &BootInfo) -> [(u64, u64); 5] {
    let (symtab, strtab) = info
        .symbols
        .map_or(((0, 0), (0, 0)), |s| (s.symtab, s.strtab));
    [
        (0, 0x1000),
        (
            sym(&raw const __image_phys_start),
            sym(&raw const __image_phys_end),
        ),
        info.mbi_range,
        symtab,
        strtab,
    ]
}

/// Returns the boot modules' memory to the allocator once every boot-time domain is built
/// from them (Xen's `discard_initial_images`): dom0's kernel and initramfs were copied into
/// its own memory, so on a machine booted with a large initramfs this is tens of MiB more for
/// domUs. Frames shared with what stays ([`kept_forever`]) stay reserved. Nothing may read a
/// module afterwards: `pv::builder` takes its bytes only while it builds.
pub fn discard_boot_modules(info: &BootInfo) {
    let keep = kept_forever(info);
    let mut freed = 0;
    let mut fa = FRAMES.lock();
    for m in info.modules() {
        match fa.release(m.start, m.end, &keep) {
            Ok(n) => freed += n,
            Err(e) => crate::warn!(
                "mm: boot module {:#x}-{:#x} not returned: {e:?}",
                m.start,
                m.end
            ),
        }
    }
    drop(fa);
    crate::info!(
        "mm: boot modules discarded: {} KiB returned, {} MiB free",
        freed * 4,
        stats().free >> 20
    );
}

/// Builds the frame allocator from the boot information, switches to Hestia's own page tables
/// (W^X image, NX direct map of all RAM) and initialises the heap. Runs once, on the BSP, on the
/// boot page tables. `global_pages` allows global mappings (not with XPTI, whose switch to a
/// guest's restricted page tables must drop Hestia's from the TLB).
pub fn init(info: &BootInfo, global_pages: bool) {
    let feats = cpu::features();
    let pge = feats.pge && global_pages;
    paging::set_supported_bits(feats.nx, pge);
    TOTAL_RAM.store(info.memmap.usable_bytes(), Ordering::Relaxed);

    {
        let mut fa = FRAMES.lock();
        for r in info.memmap.usable() {
            if let Err(e) = fa.add_usable(r.start, r.end) {
                crate::warn!(
                    "mm: dropping usable range {:#x}-{:#x}: {e:?}",
                    r.start,
                    r.end
                );
            }
        }
        let modules = info.modules().iter().map(|m| (m.start, m.end));
        for (s, e) in kept_forever(info).into_iter().chain(modules) {
            if let Err(err) = fa.reserve(s, e) {
                crate::warn!("mm: could not reserve {s:#x}-{e:#x}: {err:?}");
            }
        }
    }

    // RAM (and ACPI memory) plus the whole low 4 GiB, where firmware tables and devices live;
    // anything beyond is reached through the device window.
    let top = info.memmap.top_of_ram().max(4 * GIB).div_ceil(GIB) * GIB;
    let top = top.min(DIRECT_MAP_MAX);
    let mut pt = match PageTables::new(4 * GIB) {
        Ok(pt) => pt,
        Err(e) => crate::machine::fatal_boot(format_args!(
            "mm: no memory below 4 GiB for page tables ({e:?})"
        )),
    };
    let sections = [
        (
            sym(&raw const __text_start),
            sym(&raw const __text_end),
            Access::ReadExec,
        ),
        (
            sym(&raw const __rodata_start),
            sym(&raw const __rodata_end),
            Access::Read,
        ),
        (
            sym(&raw const __data_start),
            sym(&raw const __data_end),
            Access::ReadWrite,
        ),
    ];
    let big = if feats.page1g {
        PageSize::Size1G
    } else {
        PageSize::Size2M
    };
    let mapped = sections
        .iter()
        .try_for_each(|&(s, e, a)| pt.map_range(s, s - VOFF, e - s, a, PageSize::Size4K))
        .and_then(|()| pt.map_range(DIRECT_MAP_BASE, 0, top, Access::ReadWrite, big));
    if let Err(e) = mapped {
        crate::machine::fatal_boot(format_args!("mm: building page tables failed: {e:?}"));
    }
    // SAFETY: the new tables map the image (code, the boot stack in .bss, statics) and the
    // direct map through which the boot information and the tables themselves are reached.
    unsafe { cpu::write_cr3(pt.root()) };
    if pge {
        // SAFETY: setting CR4.PGE only enables global TLB entries.
        unsafe { cpu::write_cr4(cpu::read_cr4() | (1 << 7)) };
    }
    DIRECT_MAP_END.store(top, Ordering::Relaxed);
    pt.lift_table_limit();
    *KERNEL_PT.lock() = Some(pt);

    let Some(heap) = alloc_zeroed_frames(HEAP_SIZE / 4096, 2 << 20, u64::MAX) else {
        crate::machine::fatal_boot(format_args!(
            "mm: cannot allocate the {} MiB heap",
            HEAP_SIZE >> 20
        ));
    };
    // SAFETY: the frames are fresh from the allocator, mapped RW by the direct map, and handed
    // to the heap exclusively and forever.
    unsafe {
        HEAP.lock()
            .init(phys_to_virt(heap) as *mut u8, HEAP_SIZE as usize)
    };
    crate::info!(
        "mm: direct map of {} GiB, {} pages, heap {} MiB at {:#x}",
        top / GIB,
        if feats.page1g { "1 GiB" } else { "2 MiB" },
        HEAP_SIZE >> 20,
        heap
    );
}

/// The physical address of Hestia's PML4.
pub fn kernel_root() -> u64 {
    KERNEL_PT
        .lock()
        .as_ref()
        .map_or(cpu::read_cr3() & paging::ADDR_MASK, PageTables::root)
}

/// Runs `f` on Hestia's page tables.
pub fn with_kernel_pt<R>(f: impl FnOnce(&mut PageTables) -> R) -> Option<R> {
    KERNEL_PT.lock().as_mut().map(f)
}

/// Maps device memory `[phys, phys+len)` uncached into the MMIO window; returns the virtual
/// address of `phys`.
pub fn ioremap(phys: u64, len: u64) -> Option<u64> {
    record_device(&DEVICE_FRAMES, phys, len);
    map_window(phys, len, Access::Mmio)
}

/// As [`ioremap`], for a device dom0 may still read (Xen lets dom0 map the HPET read-only).
pub fn ioremap_dom0_readable(phys: u64, len: u64) -> Option<u64> {
    record_device(&DEVICE_FRAMES_RO, phys, len);
    map_window(phys, len, Access::Mmio)
}

/// Maps device memory that stays dom0's (an MSI-X table Hestia programs for it) uncached;
/// returns the virtual address of `phys`.
pub fn ioremap_dom0_device(phys: u64, len: u64) -> Option<u64> {
    map_window(phys, len, Access::Mmio)
}

fn record_device(set: &spin::Mutex<RangeSet>, phys: u64, len: u64) {
    set.lock().add(phys >> 12, (phys + len).div_ceil(4096));
}

/// Device memory Hestia mapped for itself alone (LAPIC, IOAPICs, ...), as frame ranges: never
/// granted to a guest.
static DEVICE_FRAMES: spin::Mutex<RangeSet> = spin::Mutex::new(RangeSet::new());
/// Device memory Hestia drives that dom0 may map read-only.
static DEVICE_FRAMES_RO: spin::Mutex<RangeSet> = spin::Mutex::new(RangeSet::new());

/// The frames of device memory Hestia drives: (exclusive, readable by dom0).
pub fn hestia_device_frames() -> (RangeSet, RangeSet) {
    (
        DEVICE_FRAMES.lock().clone(),
        DEVICE_FRAMES_RO.lock().clone(),
    )
}

/// Takes `[start, end)` (bytes) out of the free frames for good; returns the frames taken.
pub fn reserve_forever(start: u64, end: u64) -> u64 {
    FRAMES.lock().reserve(start, end).unwrap_or(0)
}

/// Maps `[phys, phys+len)` read-only (firmware tables outside the direct map).
pub fn map_firmware(phys: u64, len: u64) -> Option<u64> {
    map_window(phys, len, Access::Read)
}

fn map_window(phys: u64, len: u64, access: Access) -> Option<u64> {
    let base = phys & !0xfff;
    let size = (phys - base + len).div_ceil(4096) * 4096;
    let virt = MMIO_NEXT.fetch_add(size, Ordering::Relaxed);
    if virt + size > MMIO_BASE + MMIO_SIZE {
        return None;
    }
    with_kernel_pt(|pt| {
        pt.map_range(virt, base, size, access, PageSize::Size4K)
            .ok()
    })??;
    Some(virt + (phys - base))
}

/// Allocates a stack of `pages` pages with an unmapped guard page below it; returns its top.
pub fn alloc_stack(pages: u64) -> Option<u64> {
    let slot = (pages + 1) * 4096;
    let bottom = STACKS_NEXT.fetch_add(slot, Ordering::Relaxed);
    if bottom + slot > STACKS_BASE + STACKS_SIZE {
        return None;
    }
    for i in 1..=pages {
        let f = alloc_zeroed_frames(1, 4096, u64::MAX)?;
        with_kernel_pt(|pt| {
            pt.map(bottom + i * 4096, f, PageSize::Size4K, Access::ReadWrite)
                .ok()
        })??;
    }
    Some(bottom + slot)
}

/// True if `addr` lies in a guard page of the stack area (for fault messages). Walks the live
/// tables without taking any lock: it runs in fault handlers.
pub fn is_stack_guard(addr: u64) -> bool {
    if !(STACKS_BASE..STACKS_NEXT.load(Ordering::Relaxed)).contains(&addr) {
        return false;
    }
    let mut mapped = false;
    paging::walk(cpu::read_cr3() & paging::ADDR_MASK, |l| {
        mapped |= (l.virt..l.virt + l.size).contains(&addr)
    });
    !mapped
}
