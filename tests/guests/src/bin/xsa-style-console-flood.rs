//! A guest floods the console: `CONSOLEIO_write` must not hold a CPU for as long as the serial
//! wire takes (64 KiB is almost 6 s at 115200 baud), must not lose dom0's bytes, and must
//! survive hostile counts and pointers.
//!
//! With a 1 ms periodic timer and events unmasked, the guest issues eight 64 KiB writes and a
//! ninth inside a `multicall`: every call must return 0, the upcalls must keep arriving, and
//! some must interrupt a write *at the console_io stub's SYSCALL* (the call was preempted and is
//! re-issued by continuation); counted, not timed. Then a 4 GiB count at unmapped,
//! hypervisor and page-crossing addresses must give -EFAULT. Each 64 KiB buffer is 1024
//! numbered 64-byte lines `CF<number> <pattern>`; the scenario checks that the serial log holds
//! all 9216 of them, in order and intact. (On Xen 4.17 the return values and the preemption are
//! the same; its asynchronous serial buffer drops bytes when full, so the log check is Hestia's.)
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::xen::{StartInfo, consoleio, hypercall as nr};
use hestia_guests::{
    EVENT_VECTOR, ExcFrame, SHARED_INFO_VA, Verdict, ack_events, check, hypercall, println,
    start_periodic_upcalls, stub_at,
};

const EFAULT: i64 = -14;
/// Bytes per write.
const BUF: usize = 64 * 1024;
/// Bytes per numbered line.
const LINE: usize = 64;
/// Plain 64 KiB writes; one more goes through a multicall.
const WRITES: u64 = 8;

#[repr(C, align(4096))]
struct Buffer(UnsafeCell<[u8; BUF]>);
// SAFETY: one vCPU; the buffer is only touched between hypercalls, never from the handler.
unsafe impl Sync for Buffer {}
static BUFFER: Buffer = Buffer(UnsafeCell::new([0; BUF]));

static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Upcalls that found a console_io call rewound to its SYSCALL: preempted writes.
static AT_CONSOLE_IO: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector != EVENT_VECTOR {
        println!("unexpected exception {vector} at {:#x}", f.rip);
        return;
    }
    UPCALLS.fetch_add(1, SeqCst);
    if stub_at(f.rip) == Some(nr::CONSOLE_IO) {
        AT_CONSOLE_IO.fetch_add(1, SeqCst);
    }
    ack_events(0);
}

/// Fills the buffer with lines `first..first + BUF / LINE`: "CF" + six digits + ' ' + 54
/// letters that rotate with the line number + '\n'.
fn fill(first: u64) -> u64 {
    // SAFETY: see `Buffer`: nothing else uses the buffer now.
    let b = unsafe { &mut *BUFFER.0.get() };
    for (i, line) in b.chunks_exact_mut(LINE).enumerate() {
        let n = first + i as u64;
        line[..2].copy_from_slice(b"CF");
        for (d, c) in line[2..8].iter_mut().rev().enumerate() {
            *c = b'0' + (n / 10u64.pow(d as u32) % 10) as u8;
        }
        line[8] = b' ';
        for (j, c) in line[9..LINE - 1].iter_mut().enumerate() {
            *c = b'A' + ((n + j as u64) % 26) as u8;
        }
        line[LINE - 1] = b'\n';
    }
    b.as_ptr() as u64
}

fn write(count: u64, buf: u64) -> i64 {
    hypercall(
        nr::CONSOLE_IO,
        u64::from(consoleio::WRITE),
        count,
        buf,
        0,
        0,
    )
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    if let Err(e) = start_periodic_upcalls(si, handler, 1_000_000) {
        return Verdict::Error(e);
    }

    let per_write = (BUF / LINE) as u64;
    for w in 0..WRITES {
        let r = write(BUF as u64, fill(w * per_write));
        check!(failed, r == 0, "64 KiB write {w} returned {r}");
    }

    // The same inside a multicall: its continuation carries the console_io one.
    let buf = fill(WRITES * per_write);
    let mut calls = [[0u64; 8]; 1];
    calls[0][0] = u64::from(nr::CONSOLE_IO);
    calls[0][1] = 0xdead;
    calls[0][2..5].copy_from_slice(&[u64::from(consoleio::WRITE), BUF as u64, buf]);
    let r = hypercall(nr::MULTICALL, calls.as_mut_ptr() as u64, 1, 0, 0, 0);
    // SAFETY: the hypervisor wrote the result into the list; read it back without caching.
    let result = unsafe { core::ptr::read_volatile(&calls[0][1]) };
    check!(
        failed,
        r == 0 && result == 0,
        "console_io in a multicall: {r}, result {result:#x}"
    );
    println!("CF-END");

    let upcalls = UPCALLS.load(SeqCst);
    let preempted = AT_CONSOLE_IO.load(SeqCst);
    println!(
        "console flood: {} x 64 KiB written, {upcalls} timer upcalls, {preempted} at the console_io stub",
        WRITES + 1
    );
    // Progress, not timing: the timer kept firing, and some of its upcalls came in the middle
    // of a write.
    check!(failed, upcalls > 0, "no timer upcall during the flood");
    check!(
        failed,
        preempted > 0,
        "no upcall interrupted a console write: CONSOLEIO_write was never preempted"
    );

    // Hostile counts and pointers: -EFAULT, and Hestia goes on.
    let huge = u64::from(u32::MAX);
    for (what, buf) in [
        ("unmapped", 0x0000_7fff_fff0_0000),
        ("hypervisor", 0xffff_8000_0000_0000),
        ("non-canonical", 0x0000_8000_0000_0000),
        ("running off a page", SHARED_INFO_VA + 4096 - 16),
    ] {
        let r = write(huge, buf);
        check!(failed, r == EFAULT, "4 GiB write at a {what} address: {r}");
    }
    let r = write(0, 0);
    check!(failed, r == 0, "empty write: {r}");

    let r = hypercall(nr::VCPU_OP, 7, 0, 0, 0, 0); // stop the periodic timer
    check!(failed, r == 0, "stop_periodic_timer: {r}");
    if failed {
        Verdict::Failure("console flood")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
