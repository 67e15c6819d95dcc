//! No domain ever receives a frame holding another domain's data: a dead domain's memory goes
//! back to the free pool unzeroed (dirty) and must be zeroed before it is handed out again
//! (Xen's `PGC_need_scrub`, zeroed by `alloc_heap_pages` or by the idle `scrub_free_pages`).
//!
//! Alone (dom0, also on the Xen rig): the pages `increase_reservation` gives it read as zeroes.
//!
//! With `peer` on its command line, on one CPU, dom0 next to a boot-time domU running this
//! kernel with `domu`: the domU writes a pattern over every page above its initial mapping and
//! powers off; dom0 waits for its destruction blocked in `SCHEDOP_poll` on `VIRQ_DOM_EXC`, so
//! the CPU idles only to destroy the domU and dom0 runs again as soon as that is done, before
//! an idle CPU could zero the dead domain's frames. It then takes as many pages as the domU
//! had, which the allocator takes from the same place, and reads them: none may show the
//! pattern. With the allocation-time zeroing disabled, the pattern shows.
#![no_std]
#![no_main]

use core::sync::atomic::Ordering::SeqCst;

use hestia_guests::xen_abi::event_channel::{BindVirq, cmd as evtchn};
use hestia_guests::xen_abi::memory::{MemoryReservation, cmd};
use hestia_guests::xen_abi::mmu::uvmf;
use hestia_guests::xen_abi::sched::cmd as sched;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr, virq};
use hestia_guests::{
    Verdict, check, cmdline, event_channel_op, hypercall, map_shared_info, memory_op, pfn_to_mfn,
    println, shared_word, system_time_ns,
};

const ESRCH: i64 = -3;
/// The domU's id.
const DOMU: u16 = 1;
/// What the domU writes into every word of its pages.
const PATTERN: u64 = 0x5c2b_d1e7_aa55_0f0f;
/// The domU's first page above its initial mapping (its image, page tables, start info).
const FIRST_FREE_PFN: u64 = 2048;
/// Pages dom0 takes after the domU died: more than the domU had (16 MiB).
const TAKEN: usize = 4096 + 512;
/// Present, writable, user, accessed, dirty.
const PTE_RW: u64 = 0x67;
/// Present, user, accessed.
const PTE_RO: u64 = 0x25;
/// `evtchn_pending` in shared_info, after the 32 `vcpu_info` of 64 bytes.
const EVTCHN_PENDING: u64 = 32 * 64;

/// A page of this image whose L1 entry is pointed at other frames.
#[repr(C, align(4096))]
struct Page([u64; 512]);
static mut WINDOW: Page = Page([0; 512]);
/// The frames dom0 was given.
static mut TAKEN_MFNS: [u64; TAKEN] = [0; TAKEN];

fn window() -> u64 {
    core::ptr::addr_of!(WINDOW) as u64
}

/// Points the window at `mfn` with `flags`; the hypercall's result.
fn map(mfn: u64, flags: u64) -> i64 {
    hypercall(
        nr::UPDATE_VA_MAPPING,
        window(),
        (mfn << 12) | flags,
        uvmf::INVLPG,
        0,
        0,
    )
}

/// The window's page, as words.
fn words() -> impl Iterator<Item = u64> {
    // SAFETY: WINDOW is a page of this image, mapped (to some frame) throughout.
    (0..512).map(|i| unsafe { core::ptr::read_volatile((window() as *const u64).add(i)) })
}

/// The domU's side: fills its free pages with the pattern, then powers off.
fn as_domu(si: &StartInfo) -> Verdict {
    let mut filled = 0u64;
    for pfn in FIRST_FREE_PFN..si.nr_pages {
        if map(pfn_to_mfn(si, pfn), PTE_RW) != 0 {
            continue;
        }
        for i in 0..512 {
            // SAFETY: the window is mapped writable to one of this domain's free pages.
            unsafe { core::ptr::write_volatile((window() as *mut u64).add(i), PATTERN) };
        }
        filled += 1;
    }
    if filled < si.nr_pages.saturating_sub(FIRST_FREE_PFN) / 2 {
        return Verdict::Failure("the domU could not write its pages");
    }
    println!("the domU wrote its pattern over {filled} pages");
    Verdict::Success
}

/// `XENMEM_current_reservation` of `domid`.
fn reservation_of(domid: u16) -> i64 {
    let mut d = domid;
    memory_op(cmd::CURRENT_RESERVATION, &mut d)
}

/// Takes `TAKEN` pages with `increase_reservation` (in batches); how many it got.
fn take_pages() -> usize {
    let mut got = 0;
    // SAFETY: only this vCPU touches TAKEN_MFNS.
    let mfns = unsafe { &mut *core::ptr::addr_of_mut!(TAKEN_MFNS) };
    for batch in mfns.chunks_mut(512) {
        let mut r = MemoryReservation {
            extent_start: batch.as_mut_ptr() as u64,
            nr_extents: batch.len() as u64,
            extent_order: 0,
            domid: DOMID_SELF,
            ..MemoryReservation::default()
        };
        let n = memory_op(cmd::INCREASE_RESERVATION, &mut r);
        got += usize::try_from(n).unwrap_or(0);
        if n != batch.len() as i64 {
            break;
        }
    }
    got
}

/// Reads the first `n` pages taken: (pages showing the pattern, pages not all zero).
fn read_taken(n: usize) -> (usize, usize) {
    let (mut pattern, mut nonzero) = (0, 0);
    // SAFETY: only this vCPU touches TAKEN_MFNS.
    let mfns = unsafe { &*core::ptr::addr_of!(TAKEN_MFNS) };
    for &mfn in mfns.iter().take(n) {
        if map(mfn, PTE_RO) != 0 {
            continue;
        }
        pattern += usize::from(words().any(|w| w == PATTERN));
        nonzero += usize::from(words().any(|w| w != 0));
    }
    (pattern, nonzero)
}

/// dom0 with the domU: waits for its destruction, then reads what it is given.
fn with_domu(failed: &mut bool) {
    let mut f = false;
    let mut bind = BindVirq {
        virq: virq::DOM_EXC,
        ..BindVirq::default()
    };
    check!(
        f,
        event_channel_op(evtchn::BIND_VIRQ, &mut bind) == 0,
        "bind VIRQ_DOM_EXC"
    );
    let port = u64::from(bind.port);
    let pending = shared_word(EVTCHN_PENDING + port / 64 * 8);
    let ports = [bind.port];
    let end = system_time_ns() + 30_000_000_000;
    while reservation_of(DOMU) != ESRCH && system_time_ns() < end {
        // Blocked here, the CPU is idle: the domU runs, then its destruction; its end
        // raises VIRQ_DOM_EXC, and this vCPU runs first thing afterwards.
        let poll = [ports.as_ptr() as u64, 1, end];
        hypercall(
            nr::SCHED_OP,
            u64::from(sched::POLL),
            poll.as_ptr() as u64,
            0,
            0,
            0,
        );
        pending.fetch_and(!(1 << (port % 64)), SeqCst);
    }
    check!(
        f,
        reservation_of(DOMU) == ESRCH,
        "the domU was not destroyed"
    );
    let got = take_pages();
    let (pattern, nonzero) = read_taken(got);
    println!("dom0 took {got} pages: {pattern} show the dead domU's pattern, {nonzero} not zero");
    check!(
        f,
        got == TAKEN,
        "increase_reservation gave {got} of {TAKEN} pages"
    );
    check!(f, pattern == 0, "{pattern} pages hold the dead domU's data");
    check!(f, nonzero == 0, "{nonzero} pages given are not zeroed");
    if f {
        *failed = true;
    }
}

fn test(si: &StartInfo) -> Verdict {
    let flags = || cmdline(si).split(' ');
    if flags().any(|w| w == "domu") {
        return as_domu(si);
    }
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
    if flags().any(|w| w == "peer") {
        with_domu(&mut failed);
    } else {
        let got = take_pages();
        let (_, nonzero) = read_taken(got);
        println!("dom0 took {got} pages, {nonzero} not zero");
        check!(
            failed,
            got == TAKEN,
            "increase_reservation gave {got} of {TAKEN} pages"
        );
        check!(failed, nonzero == 0, "{nonzero} pages given are not zeroed");
    }
    if failed {
        Verdict::Failure("a frame handed out unzeroed")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
