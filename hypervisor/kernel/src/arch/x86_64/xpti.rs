//! XPTI: PV guests run on page tables without Hestia's memory in them (XSA-254, "Meltdown").
//!
//! A 64-bit PV guest kernel runs in ring 3 on its own L4, and that L4 carries Hestia's slots
//! 256-271: the direct map of all RAM among them. They are supervisor-only, but a CPU that
//! loads speculatively before it checks permissions (rogue data cache load, every Intel CPU
//! without `RDCL_NO`) lets ring 3 read all of memory through them. With XPTI on, a guest never
//! runs on its own L4. Each CPU has a *restricted* PML4 ([`PerCpu::xpti_root`]) holding the
//! guest's slots (0-255 and 272-511) and the M2P slot (256, which guests may read anyway),
//! copied from the guest's L4 before every return to the guest, plus private tables mapping
//! only what the CPU and the entry paths touch before they can switch page tables: the entry
//! text, the entry data (IDT, SMAP flag), this CPU's `PerCpu` (GDT pointer, TSS), its main
//! and IST stacks and its GDT and LDT frames, each at its usual address. Every entry from
//! ring 3 switches CR3 back to the guest's full L4 ([`PerCpu::xpti_full_cr3`]) as its first
//! act after saving the registers; the exit path switches to the restricted PML4 as its
//! last act before restoring them. Hestia's mappings are not global then (no CR4.PGE), so
//! the switch to the restricted tables flushes them from the TLB. As Xen 4.17
//! (`xen/arch/x86/x86_64/entry.S` `restore_all_guest`, `smpboot.c` `setup_cpu_root_pgt`).
//!
//! Keeping the copy true: the copy is redone when the guest's CR3 differs from the L4 it
//! holds ([`PerCpu::xpti_synced`]) or when it is marked stale ([`PerCpu::xpti_stale`]): by every
//! TLB flush on the CPU (a flush is how Hestia makes sure no CPU still uses a page-table
//! entry that was removed, before the frame it named changes type, `hestia_core::pv_mm`
//! rule 5), and by a change to an L4 entry that the CPU's copy holds ([`root_changed`], which
//! also flushes the other CPUs holding it, as Xen's `FLUSH_ROOT_PGTBL`). A flush arrives by
//! NMI, possibly in the middle of the exit path: the exit path checks the stale mark after
//! loading the restricted PML4 and copies again if it was set; an NMI that interrupts the
//! exit path after that check copies itself before it returns ([`sync`] from the paranoid
//! entry). So no guest instruction runs on an L4 entry older than the last flush.
//!
//! Default, as Xen's `xpti=`: on where the CPU is vulnerable (not AMD or Hygon, no
//! `RDCL_NO`, `hestia_core::spec_ctrl::meltdown`), per kind of domain. Only dom0 exists so
//! far, so dom0's choice decides whether the CPUs build restricted tables; the domU choice is
//! logged but waits for domUs, which will pick per domain (the root to use then belongs to the
//! vCPU being run, not to the CPU). No PCID: every switch flushes the TLB, the cost
//! `cargo xtask bench` shows.
//!
//! Known limit: a fault inside Hestia's few exit-path instructions that run on the restricted
//! tables (a Hestia bug; only the IRETQ's own faults are expected there) cannot reach
//! `dispatch`, which is not mapped; it ends as a double fault on its IST stack, whose report
//! shows the nested faults rather than the first one (Xen switches CR3 in every entry).

use core::sync::atomic::{AtomicBool, Ordering, fence};

use hestia_core::cmdline::PerDomainKind;
use hestia_core::ids::Mfn;

use super::percpu::{self, PerCpu};
use super::{cpu, smp, spec_ctrl};
use crate::mm;
use crate::mm::paging::{self, Access, PageSize, PageTables};

/// L4 slots the restricted PML4 takes from the guest's L4: the guest's own, and the M2P.
const GUEST_SLOTS: [core::ops::Range<usize>; 2] = [0..257, 272..512];

static DOM0: AtomicBool = AtomicBool::new(false);

unsafe extern "C" {
    static __entry_text_start: u8;
    static __entry_text_end: u8;
    static __entry_data_start: u8;
    static __entry_data_end: u8;
}

/// Decides XPTI from `xpti=` and the CPU, once, before Hestia builds its page tables, and logs
/// the decision. Returns whether restricted tables are in use (then Hestia's mappings must not
/// be global).
pub fn init(opt: PerDomainKind) -> bool {
    let vulnerable = hestia_core::spec_ctrl::meltdown(&spec_ctrl::facts());
    let dom0 = opt.dom0.unwrap_or(vulnerable);
    let domu = opt.domu.unwrap_or(vulnerable);
    let word = |on| if on { "enabled" } else { "disabled" };
    crate::info!(
        "xpti: dom0 {}, domU {} (CPU {}vulnerable to rogue data cache loads), without PCID",
        word(dom0),
        word(domu),
        if vulnerable { "" } else { "not " }
    );
    DOM0.store(dom0, Ordering::Release);
    dom0
}

/// True when guests run on restricted page tables.
pub fn enabled() -> bool {
    DOM0.load(Ordering::Acquire)
}

/// Builds CPU `p`'s restricted PML4: the entry text and data, `p` itself, the stacks ending at
/// `stack_tops` (each down to its guard page) and the GDT and LDT frames, at their usual
/// addresses. The guest slots are filled by [`sync`]. `None` when memory runs out.
pub fn build_root(p: &PerCpu, stack_tops: impl Iterator<Item = u64>) -> Option<u64> {
    let kernel = mm::kernel_root();
    let mut pt = PageTables::new(u64::MAX).ok()?;
    let mut clone = |start: u64, end: u64, access: Access| -> Option<()> {
        (start..end).step_by(4096).try_for_each(|va| {
            let pa = paging::translate(kernel, va)?;
            pt.map(va, pa, PageSize::Size4K, access).ok()
        })
    };
    let sym = |s: &u8| s as *const u8 as u64;
    // SAFETY: linker-script symbols; only their addresses are taken.
    let (text, data) = unsafe {
        (
            (sym(&__entry_text_start), sym(&__entry_text_end)),
            (sym(&__entry_data_start), sym(&__entry_data_end)),
        )
    };
    clone(text.0, text.1, Access::ReadExec)?;
    clone(data.0, data.1, Access::ReadWrite)?;
    let me = p as *const PerCpu as u64;
    clone(me, me + size_of::<PerCpu>() as u64, Access::ReadWrite)?;
    for top in stack_tops {
        let bottom = (1..)
            .map(|i| top - i * 4096)
            .find(|va| paging::translate(kernel, *va).is_none())?;
        clone(bottom + 4096, top, Access::ReadWrite)?;
    }
    for (start, pages) in p.gdt.areas() {
        clone(start, start + pages * 4096, Access::ReadWrite)?;
    }
    Some(pt.root())
}

/// Before a return to a guest (called by the exit path with the guest's full L4 loaded, and
/// by the paranoid entry before it goes back into the exit path): records the full L4 for the
/// next entry and copies its guest slots into the restricted PML4 unless they are there
/// already. Interrupts are off; only this CPU writes its restricted PML4.
pub extern "C" fn sync() {
    let p = percpu::this_cpu();
    if p.xpti_root == 0 {
        return;
    }
    let cr3 = cpu::read_cr3() & paging::ADDR_MASK;
    p.xpti_full_cr3.store(cr3, Ordering::Relaxed);
    let stale = p.xpti_stale.swap(false, Ordering::AcqRel);
    if !stale && p.xpti_synced.load(Ordering::Acquire) == cr3 {
        return;
    }
    // Announce the L4 before reading it: a CPU changing one of its entries either sees this
    // and marks the copy stale, or changed it before the copy below reads it.
    p.xpti_synced.store(cr3, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    let (from, to) = (table(cr3), table(p.xpti_root));
    for r in GUEST_SLOTS {
        for i in r {
            // SAFETY: both are page-table frames in the direct map (the guest's validated L4,
            // which the running vCPU holds a type reference on, and this CPU's own PML4);
            // entries are aligned u64s; the guest may change its L4 concurrently only through
            // Hestia, which marks this copy stale.
            unsafe { to.add(i).write_volatile(from.add(i).read_volatile()) };
        }
    }
}

fn table(phys: u64) -> *mut u64 {
    mm::phys_to_virt(phys) as *mut u64
}

/// This CPU's TLB was flushed: its restricted PML4 is copied again before the guest runs.
pub fn flushed_here() {
    percpu::this_cpu().xpti_stale.store(true, Ordering::Release);
}

/// An entry of guest L4 `mfn` changed: every CPU whose restricted PML4 holds a copy of it
/// copies it again, the others at once (interrupted by a TLB flush), as Xen's
/// `FLUSH_ROOT_PGTBL`. Called with the frame table locked, after the entry was written.
pub fn root_changed(mfn: Mfn) {
    if !enabled() {
        return;
    }
    fence(Ordering::SeqCst);
    let me = percpu::current_index();
    let mut others = 0u64;
    for p in percpu::all() {
        if p.xpti_synced.load(Ordering::SeqCst) == mfn.addr() {
            p.xpti_stale.store(true, Ordering::Release);
            if p.index != me {
                others |= 1 << p.index;
            }
        }
    }
    if others != 0 {
        smp::flush_guest_tlbs(smp::Flush::Cpus(others));
    }
}
