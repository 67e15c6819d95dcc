//! The control domain's long loops are preemptible (DESIGN's isolation rule 7: no guest
//! operation holds a CPU or a global lock without bound, not even for the control domain).
//! `XEN_SYSCTL_debug_keys` presses up to 2^32 keys, and a `xenctl_bitmap` the caller says is
//! longer than Hestia's has up to 512 MiB of bytes zeroed (getvcpuaffinity, getnodeaffinity,
//! cpupool_op INFO/FREEINFO): with a 1 ms periodic timer and events unmasked, a million-key
//! debug_keys (zero bytes, keys without a handler, as on Xen), a getvcpuaffinity and a cpupool
//! INFO each with a 2 MiB bitmap, and the getvcpuaffinity inside a multicall, must each take
//! timer upcalls at their SYSCALL (the call was stopped and is re-issued; the bitmap calls are
//! repeated until one is, as one takes about a millisecond) and still give Xen's result: 0,
//! the CPU mask in the first byte, every other byte zero.
//!
//! Xen 4.17 runs these loops to the end without preemption (`xen/common/sysctl.c`'s
//! debug_keys, `xen/common/bitmap.c`'s `bitmap_to_xenctl_bitmap`), so on the reference rig the
//! results check out and the preemption checks fail (but the multicall's: Xen stops a multicall
//! between its entries): a deliberate Hestia difference (docs/abi-status.md). Before Hestia's fix the same preemption checks failed: a 2^32-key
//! call, or a 512 MiB bitmap, held a CPU with interrupts off and the global sysctl or domctl
//! lock for its whole length.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::control::{arg, domctl_op, sysctl, sysctl_op};
use hestia_guests::xen_abi::domctl::{VcpuAffinity, XenctlBitmap, cmd as dcmd, vcpuaffinity};
use hestia_guests::xen_abi::sysctl::{CpupoolOp, DebugKeys, cmd as scmd, cpupool};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{
    EVENT_VECTOR, ExcFrame, Verdict, ack_events, check, hypercall, println, start_periodic_upcalls,
    stub_at,
};

/// The long bitmaps' bytes (and, zeroed, the keys). The image stays below the page the
/// runtime maps shared_info at (`SHARED_INFO_VA`, 4 MiB less a page).
const LONG: usize = 2 << 20;
/// Keys in the debug_keys call.
const KEYS: usize = 1 << 20;

#[repr(C, align(4096))]
struct Buf(UnsafeCell<[u8; LONG]>);
// SAFETY: one vCPU; the buffer is only touched between hypercalls, never from the handler.
unsafe impl Sync for Buf {}
static BUF: Buf = Buf(UnsafeCell::new([0; LONG]));

static EVENTS: AtomicU64 = AtomicU64::new(0);
/// Upcalls that interrupted the guest at a hypercall stub's SYSCALL: preempted hypercalls.
static AT_STUB: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector != EVENT_VECTOR {
        println!("unexpected exception {vector} at {:#x}", f.rip);
        return;
    }
    EVENTS.fetch_add(1, SeqCst);
    if let Some(n) = stub_at(f.rip) {
        AT_STUB[n as usize % 64].fetch_add(1, SeqCst);
    }
    ack_events(0);
}

fn preempted(number: u32) -> u64 {
    AT_STUB[number as usize].load(SeqCst)
}

fn buf() -> *mut u8 {
    BUF.0.get().cast()
}

/// Fills the buffer with `b`.
fn fill(b: u8) {
    // SAFETY: LONG bytes are the buffer's; no hypercall is using it now.
    unsafe { core::ptr::write_bytes(buf(), b, LONG) };
}

/// The buffer's first byte, and the offset of its first non-zero byte after it, if any.
fn scan() -> (u8, Option<usize>) {
    // SAFETY: the buffer is LONG bytes; Hestia wrote it during the call that returned.
    let bytes = unsafe { core::slice::from_raw_parts(buf(), LONG) };
    (
        bytes[0],
        bytes[1..].iter().position(|&b| b != 0).map(|i| i + 1),
    )
}

/// A getvcpuaffinity of this domain's vCPU 0 (hard mask at `hard`, `hard_bits` long; soft
/// mask in 8 bytes at `soft`).
fn getvcpuaffinity(
    hard: u64,
    hard_bits: u32,
    soft: &mut [u8; 8],
) -> hestia_guests::xen_abi::domctl::XenDomctl {
    let a = VcpuAffinity {
        vcpu: 0,
        flags: vcpuaffinity::HARD | vcpuaffinity::SOFT,
        cpumap_hard: XenctlBitmap {
            bitmap: hard,
            nr_bits: hard_bits,
            _pad: 0,
        },
        cpumap_soft: XenctlBitmap {
            bitmap: soft.as_mut_ptr() as u64,
            nr_bits: 64,
            _pad: 0,
        },
    };
    domctl_op(dcmd::GETVCPUAFFINITY, 0, &a)
}

fn domctl_call(op: &mut hestia_guests::xen_abi::domctl::XenDomctl) -> i64 {
    hypercall(nr::DOMCTL, op as *mut _ as u64, 0, 0, 0, 0)
}

/// Runs `call` (which fills the buffer, makes one long call, and says whether its result was
/// Xen's) until hypercall `number` has been preempted at its stub, at most [`TRIES`] times: a
/// call is preempted only if an upcall falls due while it runs, and one 2 MiB bitmap takes
/// about a millisecond. Returns whether every result was right and whether one was
/// preempted.
fn until_preempted(number: u32, mut call: impl FnMut() -> bool) -> (bool, bool) {
    let before = preempted(number);
    let mut right = true;
    for _ in 0..TRIES {
        right &= call();
        if preempted(number) > before {
            return (right, true);
        }
    }
    (right, false)
}

/// The most long calls [`until_preempted`] makes.
const TRIES: usize = 64;

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    if let Err(e) = start_periodic_upcalls(si, handler, 1_000_000) {
        return Verdict::Error(e);
    }
    let long_bits = (LONG * 8) as u32;

    // The mask a short bitmap reads, to compare the long ones with.
    let mut short = 0u64;
    let mut soft = [0u8; 8];
    let r = domctl_call(&mut getvcpuaffinity(
        &mut short as *mut u64 as u64,
        64,
        &mut soft,
    ));
    let mask = short as u8;
    println!("getvcpuaffinity, 64 bits: {r}, hard {short:#x}");
    check!(
        failed,
        r == 0 && mask != 0,
        "short getvcpuaffinity: {r}, {short:#x}"
    );

    // 1. debug_keys: a million zero bytes, keys no handler is bound to.
    fill(0);
    let keys = DebugKeys {
        keys: buf() as u64,
        nr_keys: KEYS as u32,
        _pad: 0,
    };
    let r = sysctl(&mut sysctl_op(scmd::DEBUG_KEYS, &keys));
    let stubs = preempted(nr::SYSCTL);
    println!("debug_keys x{KEYS}: {r}, {stubs} upcalls at its stub");
    check!(failed, r == 0, "debug_keys returned {r}");
    check!(failed, stubs > 0, "debug_keys was not preempted");

    // 2. getvcpuaffinity with a 2 MiB hard mask, filled with 0xff first.
    let (right, pre) = until_preempted(nr::DOMCTL, || {
        fill(0xff);
        let r = domctl_call(&mut getvcpuaffinity(buf() as u64, long_bits, &mut soft));
        let (first, dirty) = scan();
        r == 0 && first == mask && dirty.is_none()
    });
    println!("getvcpuaffinity, {long_bits} bits: right {right}, preempted {pre}");
    check!(
        failed,
        right,
        "a long getvcpuaffinity's result was not Xen's"
    );
    check!(failed, pre, "getvcpuaffinity was not preempted");

    // 3. The same inside a multicall, then a cheap call: results land in the list.
    let (right, pre) = until_preempted(nr::MULTICALL, || {
        fill(0xff);
        let mut op = getvcpuaffinity(buf() as u64, long_bits, &mut soft);
        let mut calls = [[0u64; 8]; 2];
        calls[0][0] = u64::from(nr::DOMCTL);
        calls[0][1] = 0xdead;
        calls[0][2] = &mut op as *mut _ as u64;
        calls[1][0] = u64::from(nr::XEN_VERSION);
        calls[1][1] = 0xdead;
        let r = hypercall(nr::MULTICALL, calls.as_mut_ptr() as u64, 2, 0, 0, 0);
        // SAFETY: the hypervisor wrote the results into the list; read them without caching.
        let results = unsafe {
            [
                core::ptr::read_volatile(&calls[0][1]),
                core::ptr::read_volatile(&calls[1][1]),
            ]
        };
        let (first, dirty) = scan();
        r == 0 && results == [0, 0x4_0011] && first == mask && dirty.is_none()
    });
    println!("multicall of it: right {right}, preempted {pre}");
    check!(failed, right, "the multicall's results were not Xen's");
    check!(failed, pre, "the multicall was not preempted");

    // 4. cpupool_op INFO with a 2 MiB CPU map: pool 0, the CPU mask, the rest zero.
    let (right, pre) = until_preempted(nr::SYSCTL, || {
        fill(0xff);
        let info = CpupoolOp {
            op: cpupool::INFO,
            cpumap: XenctlBitmap {
                bitmap: buf() as u64,
                nr_bits: long_bits,
                _pad: 0,
            },
            ..Default::default()
        };
        let mut op = sysctl_op(scmd::CPUPOOL_OP, &info);
        let r = sysctl(&mut op);
        let out: CpupoolOp = arg(&op.u);
        let (first, dirty) = scan();
        r == 0
            && out.cpupool_id == 0
            && out.cpumap.nr_bits == long_bits
            && first == mask
            && dirty.is_none()
    });
    println!("cpupool INFO, {long_bits} bits: right {right}, preempted {pre}");
    check!(failed, right, "a long cpupool INFO's result was not Xen's");
    check!(failed, pre, "cpupool INFO was not preempted");

    println!("{} upcalls in all", EVENTS.load(SeqCst));
    if failed {
        Verdict::Failure("long control loops")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
