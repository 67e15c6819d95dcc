//! Validating and tearing down a large page-table tree is preemptible.
//!
//! Pinning a table validates every table below it; the last reference to one tears the tree
//! down again. Hestia used to do either in one go with interrupts off and the frame table's
//! lock held: for 2^17 entries here (a 4 GiB guest has 2^20), long enough for a guest to stall
//! its CPU and every other CPU's page-table work (failed on the code before the fix: no
//! upcall ever interrupted the pin). Now both go in chunks: with a 1 ms periodic timer and
//! events unmasked, timer upcalls land *at the hypercall's SYSCALL* while the pin runs (the
//! call is rewound and issued again), and the unpin's teardown, finished at the start of the
//! next MMU hypercall as Xen's `old_guest_table`, is preempted the same way; afterwards every
//! frame of the tree is free again (it can be mapped writable). Passes on Xen 4.17.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::event_channel::{BindVirq, cmd as evtchn};
use hestia_guests::xen_abi::mmu::{ext, uvmf};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr, virq};
use hestia_guests::{
    EVENT_VECTOR, ExcFrame, Verdict, ack_events, check, event_channel_op, hypercall,
    hypercall_page_bytes, install_traps, map_shared_info, mmuext_one, pfn_to_mfn, println,
    register_event_callback, shared_byte,
};

/// L1 tables in the tree, each with 512 present entries.
const L1S: u64 = 256;
/// First PFN used for the tree: far beyond the initial mapping, so the frames are unmapped.
const FIRST_PFN: u64 = 0x1000;
/// A page of the initial mapping's padding, used to fill frames.
const SCRATCH: u64 = 0x3fe000;
/// Present, user, accessed (read-only); and writable too.
const RO: u64 = 0x25;
const RW: u64 = 0x27;

/// Upcalls that interrupted the guest at the MMUEXT_OP stub's SYSCALL.
static AT_STUB: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(4096))]
struct Page([u8; 4096]);
/// What every L1 entry maps, read-only.
static DATA: Page = Page([0x5a; 4096]);

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector != EVENT_VECTOR {
        println!("unexpected exception {vector} at {:#x}", f.rip);
        return;
    }
    let stub = hypercall_page_bytes().as_ptr() as u64 + u64::from(nr::MMUEXT_OP) * 32;
    // SAFETY: `f.rip` is checked to be inside the MMUEXT_OP stub before the two bytes there are
    // read.
    let at_syscall = (stub..stub + 31).contains(&f.rip)
        && unsafe { core::ptr::read_volatile(f.rip as *const [u8; 2]) } == [0x0f, 0x05];
    if at_syscall {
        AT_STUB.fetch_add(1, SeqCst);
    }
    ack_events(0);
}

fn map_scratch(pte: u64) -> i64 {
    hypercall(nr::UPDATE_VA_MAPPING, SCRATCH, pte, uvmf::INVLPG, 0, 0)
}

/// Writes `entries` into frame `mfn` through the scratch mapping, then unmaps it.
fn fill(mfn: u64, entries: impl Iterator<Item = (usize, u64)>) -> bool {
    if map_scratch((mfn << 12) | RW) != 0 {
        return false;
    }
    for (i, e) in entries {
        // SAFETY: SCRATCH maps `mfn` writable; `i` < 512 keeps the store inside the page.
        unsafe { core::ptr::write_volatile((SCRATCH as *mut u64).add(i), e) };
    }
    map_scratch(0) == 0
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    if si.nr_pages < FIRST_PFN + L1S + 2 {
        return Verdict::Error("too little memory for the tree");
    }
    install_traps(handler);
    check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
    check!(failed, register_event_callback() == 0, "event callback");
    let mut bind = BindVirq {
        virq: virq::TIMER,
        ..BindVirq::default()
    };
    check!(
        failed,
        event_channel_op(evtchn::BIND_VIRQ, &mut bind) == 0,
        "bind_virq(TIMER)"
    );

    // One L1 template mapping DATA read-only 512 times, copied into the other L1 frames; an
    // L2 pointing at all of them.
    let data = pfn_to_mfn(si, DATA.0.as_ptr() as u64 >> 12);
    let l1 = |k: u64| pfn_to_mfn(si, FIRST_PFN + k);
    let l2 = pfn_to_mfn(si, FIRST_PFN + L1S);
    check!(
        failed,
        fill(l1(0), (0..512).map(|i| (i, (data << 12) | RO))),
        "writing the L1 template"
    );
    for k in 1..L1S {
        let r = mmuext_one(ext::COPY_PAGE, l1(k), l1(0));
        check!(failed, r == 0, "copy_page to L1 #{k}: {r}");
    }
    check!(
        failed,
        fill(
            l2,
            (0..L1S as usize).map(|k| (k, (l1(k as u64) << 12) | RW))
        ),
        "writing the L2"
    );

    let period = [1_000_000u64];
    check!(
        failed,
        hypercall(nr::VCPU_OP, 6, 0, period.as_ptr() as u64, 0, 0) == 0,
        "set_periodic_timer(1 ms)"
    );
    shared_byte(1).store(0, SeqCst); // events unmasked

    let r = mmuext_one(ext::PIN_L2_TABLE, l2, 0);
    let during_pin = AT_STUB.swap(0, SeqCst);
    println!(
        "pin of an L2 over {} entries: {r}, {during_pin} upcalls at its SYSCALL",
        L1S * 512
    );
    check!(failed, r == 0, "pinning the L2: {r}");
    check!(
        failed,
        during_pin > 0,
        "no upcall interrupted the pin: it was not preempted"
    );
    check!(
        failed,
        map_scratch((l1(L1S - 1) << 12) | RW) == -16,
        "the last L1 is not a page table after the pin"
    );

    let r = mmuext_one(ext::UNPIN_TABLE, l2, 0);
    check!(failed, r == 0, "unpinning the L2: {r}");
    // The next MMU hypercall finishes the teardown first.
    let r = mmuext_one(ext::TLB_FLUSH_LOCAL, 0, 0);
    let during_teardown = AT_STUB.swap(0, SeqCst);
    println!("unpin and teardown: {r}, {during_teardown} upcalls at a SYSCALL");
    check!(failed, r == 0, "the hypercall after the unpin: {r}");
    check!(
        failed,
        during_teardown > 0,
        "no upcall interrupted the teardown"
    );
    shared_byte(1).store(1, SeqCst);
    hypercall(nr::VCPU_OP, 7, 0, 0, 0, 0);

    // Every frame of the tree is an ordinary frame again.
    let busy = (0..L1S)
        .chain([L1S])
        .filter(|&k| map_scratch((pfn_to_mfn(si, FIRST_PFN + k) << 12) | RW) != 0)
        .count();
    check!(failed, busy == 0, "{busy} frames of the tree still typed");
    check!(failed, map_scratch(0) == 0, "unmapping the scratch page");
    if failed {
        Verdict::Failure("long pin")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
