//! Long batches are preemptible and resume by continuation: with a 1 ms periodic timer and
//! events unmasked, a 65,536-entry `mmu_update`, a 49,152-entry `mmuext_op` and the same
//! `mmu_update` inside a `multicall` each take timer upcalls *at their SYSCALL* (the guest sees
//! the upcall interrupt the hypercall stub itself, then the call carries on), and still do all
//! their work: `*pdone` counts every entry, results land in the multicall list. Also the
//! memory_op start-extent encoding (`cmd >> 6`) and what Xen answers for it; a 4096-extent
//! `XENMEM_exchange` preempted and resumed from its `nr_exchanged`.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::memory::{
    MachphysMapping, MemoryExchange, MemoryReservation, cmd as xenmem,
};
use hestia_guests::xen_abi::mmu::{MmuUpdate, MmuextOp, ext, update};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    EVENT_VECTOR, ExcFrame, Verdict, ack_events, check, current_reservation, hypercall, m2p,
    memory_op, pfn_to_mfn, println, start_periodic_upcalls, stub_at,
};

const EINVAL: i64 = -22;
const ENOSYS: i64 = -38;
/// Entries in the `mmu_update` batches (1 MiB of requests).
const UPDATES: usize = 65536;
/// Entries in the `mmuext_op` batch (the same 1.5 MiB buffer).
const EXT_OPS: usize = 49152;

/// Room for either batch.
#[repr(C, align(4096))]
struct Batch(UnsafeCell<[u64; 3 * EXT_OPS]>);
// SAFETY: one vCPU; the buffer is only touched between hypercalls, never from the handler.
unsafe impl Sync for Batch {}
static BATCH: Batch = Batch(UnsafeCell::new([0; 3 * EXT_OPS]));

static EVENTS: AtomicU64 = AtomicU64::new(0);
/// Upcalls that interrupted the guest at a hypercall stub's SYSCALL: preempted hypercalls.
static AT_STUB: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector != EVENT_VECTOR {
        println!("unexpected exception {vector} at {:#x}", f.rip);
        return;
    }
    EVENTS.fetch_add(1, SeqCst);
    // At the stub's SYSCALL itself (not after it): the call was rewound to be re-issued.
    if let Some(n) = stub_at(f.rip) {
        AT_STUB[n as usize % 64].fetch_add(1, SeqCst);
    }
    ack_events(0);
}

fn preempted(number: u32) -> u64 {
    AT_STUB[number as usize].load(SeqCst)
}

/// Fills the buffer with `UPDATES` M2P updates that each set `mfn`'s entry to `pfn`.
fn fill_updates(mfn: u64, pfn: u64) -> *const MmuUpdate {
    let b = BATCH.0.get().cast::<MmuUpdate>();
    for i in 0..UPDATES {
        // SAFETY: UPDATES * 16 bytes fit in the buffer; nothing else uses it now.
        unsafe {
            b.add(i).write(MmuUpdate {
                ptr: (mfn << 12) | update::MACHPHYS_UPDATE,
                val: pfn,
            })
        };
    }
    b
}

fn memop(cmd: u64, arg: u64) -> i64 {
    hypercall(nr::MEMORY_OP, cmd, arg, 0, 0, 0)
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    if let Err(e) = start_periodic_upcalls(si, handler, 1_000_000) {
        return Verdict::Error(e);
    }

    let pfn = BATCH.0.get() as u64 >> 12;
    let mfn = pfn_to_mfn(si, pfn);

    // 1. One long mmu_update: preempted, resumed, all entries done and counted.
    let list = fill_updates(mfn, pfn);
    let mut done = 0u32;
    let r = hypercall(
        nr::MMU_UPDATE,
        list as u64,
        UPDATES as u64,
        &mut done as *mut u32 as u64,
        u64::from(DOMID_SELF),
        0,
    );
    println!(
        "mmu_update x{UPDATES}: {r}, done {done}, {} upcalls at its stub",
        preempted(nr::MMU_UPDATE)
    );
    check!(failed, r == 0, "mmu_update returned {r}");
    check!(failed, done as usize == UPDATES, "pdone {done}");
    check!(failed, m2p(mfn) == pfn, "the M2P entry changed");
    check!(
        failed,
        preempted(nr::MMU_UPDATE) > 0,
        "no upcall while mmu_update ran: it was not preempted"
    );

    // 2. One long mmuext_op of local invlpgs.
    let ops = BATCH.0.get().cast::<MmuextOp>();
    for i in 0..EXT_OPS {
        // SAFETY: EXT_OPS * 24 bytes fit in the buffer.
        unsafe {
            ops.add(i).write(MmuextOp {
                cmd: ext::INVLPG_LOCAL,
                _pad: 0,
                arg1: 0x1000,
                arg2: 0,
            })
        };
    }
    let mut done = 0u32;
    let r = hypercall(
        nr::MMUEXT_OP,
        ops as u64,
        EXT_OPS as u64,
        &mut done as *mut u32 as u64,
        u64::from(DOMID_SELF),
        0,
    );
    println!(
        "mmuext_op x{EXT_OPS}: {r}, done {done}, {} upcalls at its stub",
        preempted(nr::MMUEXT_OP)
    );
    check!(
        failed,
        r == 0 && done as usize == EXT_OPS,
        "mmuext_op: {r}, pdone {done}"
    );
    check!(
        failed,
        preempted(nr::MMUEXT_OP) > 0,
        "mmuext_op was not preempted"
    );

    // 3. The long mmu_update inside a multicall, followed by a cheap call.
    let list = fill_updates(mfn, pfn);
    let mut done = 0u32;
    let mut calls = [[0u64; 8]; 2];
    calls[0][0] = u64::from(nr::MMU_UPDATE);
    calls[0][2..6].copy_from_slice(&[
        list as u64,
        UPDATES as u64,
        &mut done as *mut u32 as u64,
        u64::from(DOMID_SELF),
    ]);
    calls[0][1] = 0xdead;
    calls[1][0] = u64::from(nr::XEN_VERSION);
    calls[1][1] = 0xdead;
    let r = hypercall(nr::MULTICALL, calls.as_mut_ptr() as u64, 2, 0, 0, 0);
    // SAFETY: Xen wrote the results into the list; read them back without caching.
    let results = unsafe {
        [
            core::ptr::read_volatile(&calls[0][1]),
            core::ptr::read_volatile(&calls[1][1]),
        ]
    };
    println!(
        "multicall: {r}, results {:#x} {:#x}, done {done}, {} upcalls at its stub",
        results[0],
        results[1],
        preempted(nr::MULTICALL)
    );
    check!(failed, r == 0, "multicall returned {r}");
    check!(
        failed,
        results[0] == 0 && results[1] == 0x4_0011,
        "multicall results {results:#x?}"
    );
    check!(
        failed,
        done as usize == UPDATES,
        "pdone in the multicall {done}"
    );
    check!(
        failed,
        preempted(nr::MULTICALL) > 0,
        "the multicall was not preempted"
    );

    // 4. memory_op's start extent: reservation calls begin there (and report it when there is
    //    nothing left); the calls that take none refuse one.
    let mut slots = [0u64; 4];
    let res = MemoryReservation {
        extent_start: slots.as_mut_ptr() as u64,
        nr_extents: 4,
        domid: DOMID_SELF,
        ..MemoryReservation::default()
    };
    let res_ptr = &raw const res as u64;
    let increase = u64::from(xenmem::INCREASE_RESERVATION);
    let before = current_reservation();
    let r = memop(4 << 6 | increase, res_ptr);
    check!(
        failed,
        r == 4,
        "increase_reservation from extent 4 of 4: {r}"
    );
    let r = memop(9 << 6 | increase, res_ptr);
    check!(
        failed,
        r == 9,
        "increase_reservation from extent 9 of 4: {r}"
    );
    let after = current_reservation();
    check!(
        failed,
        before == after,
        "reservation changed: {before} -> {after}"
    );
    let bad = MemoryReservation {
        domid: 0x1234,
        ..res
    };
    let decrease = u64::from(xenmem::DECREASE_RESERVATION);
    let r = memop(1 << 6 | decrease, &raw const bad as u64);
    check!(
        failed,
        r == 1,
        "decrease_reservation for no such domain from extent 1: {r}"
    );
    let r = memop(1 << 6 | u64::from(xenmem::MAXIMUM_RAM_PAGE), 0);
    check!(
        failed,
        r == EINVAL,
        "maximum_ram_page with a start extent: {r}"
    );
    let current = u64::from(xenmem::CURRENT_RESERVATION);
    let r = memop(1 << 6 | current, &DOMID_SELF as *const u16 as u64);
    check!(
        failed,
        r == EINVAL,
        "current_reservation with a start extent: {r}"
    );
    let mut mapping = MachphysMapping::default();
    let machphys_mapping = u64::from(xenmem::MACHPHYS_MAPPING);
    let r = memop(1 << 6 | machphys_mapping, &raw mut mapping as u64);
    check!(
        failed,
        r == ENOSYS,
        "machphys_mapping with a start extent: {r}"
    );

    // 5. A long XENMEM_exchange (one frame of the upper half, unmapped, for another, 4096
    //    times): preempted between extents, resumed from nr_exchanged, every extent done.
    const EXCHANGED: usize = 4096;
    let base = si.nr_pages - EXCHANGED as u64;
    let lists = BATCH.0.get().cast::<u64>();
    for i in 0..EXCHANGED {
        // SAFETY: 2 * EXCHANGED entries fit in the buffer; nothing else uses it now.
        unsafe {
            lists.add(i).write(pfn_to_mfn(si, base + i as u64));
            lists.add(EXCHANGED + i).write(base + i as u64);
        }
    }
    let n = EXCHANGED as u64;
    // SAFETY: as above.
    let out = unsafe { lists.add(EXCHANGED) } as u64;
    let extents = |list| MemoryReservation {
        extent_start: list,
        nr_extents: n,
        domid: DOMID_SELF,
        ..MemoryReservation::default()
    };
    let mut exchange = MemoryExchange {
        r#in: extents(lists as u64),
        out: extents(out),
        nr_exchanged: 0,
    };
    let stubs = preempted(nr::MEMORY_OP);
    let r = memory_op(xenmem::EXCHANGE, &mut exchange);
    // SAFETY: Hestia wrote nr_exchanged and the output list; read them back uncached.
    let (done, last) = unsafe {
        (
            core::ptr::read_volatile(&raw const exchange.nr_exchanged),
            lists.add(2 * EXCHANGED - 1).read_volatile(),
        )
    };
    println!(
        "exchange x{EXCHANGED}: {r}, nr_exchanged {done}, {} upcalls at its stub",
        preempted(nr::MEMORY_OP) - stubs
    );
    check!(
        failed,
        r == 0 && done == n && m2p(last) == si.nr_pages - 1,
        "exchange: {r}, nr_exchanged {done}, last output {last:#x}"
    );
    check!(
        failed,
        preempted(nr::MEMORY_OP) > stubs,
        "the exchange was not preempted"
    );

    println!("{} upcalls in all", EVENTS.load(SeqCst));
    if failed {
        Verdict::Failure("continuations")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
