//! Exceptions and software interrupts reach the guest's trap table with the PV bounce frame:
//! right vector, error code, RIP (fault vs trap), kernel-mode CS with RPL 0, and the `iret`
//! hypercall resumes the guest. Also: `int $n` honours the trap table's DPL, and the forced
//! emulation prefix runs CPUID with Xen's leaves.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{ExcFrame, Verdict, check, forced_cpuid, install_traps, println};

static VECTOR: AtomicU64 = AtomicU64::new(u64::MAX);
static ERROR: AtomicU64 = AtomicU64::new(0);
static CS: AtomicU64 = AtomicU64::new(0);
static SKIP: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    VECTOR.store(vector, SeqCst);
    ERROR.store(f.error_code, SeqCst);
    CS.store(f.cs, SeqCst);
    f.rip += SKIP.load(SeqCst);
}

/// Arms the handler to skip `skip` bytes, runs `trigger`, returns (vector, error code, cs).
fn expect(skip: u64, trigger: impl FnOnce()) -> (u64, u64, u64) {
    VECTOR.store(u64::MAX, SeqCst);
    SKIP.store(skip, SeqCst);
    trigger();
    (VECTOR.load(SeqCst), ERROR.load(SeqCst), CS.load(SeqCst))
}

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    let r = install_traps(handler);
    check!(failed, r == 0, "set_trap_table returned {r}");

    // SAFETY: raises exactly one exception; the handler skips the faulting bytes.
    let (v, _, cs) = expect(2, || unsafe { asm!("ud2") });
    check!(failed, v == 6, "ud2 delivered vector {v}");
    check!(
        failed,
        cs & 0xffff == 0xe030,
        "kernel-mode CS in the frame is {:#x}, expected 0xe030 (RPL 0)",
        cs & 0xffff
    );
    check!(
        failed,
        (cs >> 32) & 0xff == 1,
        "saved upcall mask {} (events start masked)",
        (cs >> 32) & 0xff
    );

    // SAFETY: raises exactly one exception; the handler skips the faulting bytes.
    let (v, _, _) = expect(2, || unsafe {
        asm!("xor %ecx, %ecx", "xor %edx, %edx", "mov $1, %eax", "div %ecx", out("eax") _, out("ecx") _, out("edx") _, options(att_syntax))
    });
    check!(failed, v == 0, "divide by zero delivered vector {v}");

    // SAFETY: raises exactly one exception; the handler skips the faulting bytes.
    let (v, _, _) = expect(0, || unsafe { asm!("int3") });
    check!(failed, v == 3, "int3 delivered vector {v}");

    // SAFETY: raises exactly one exception; the handler skips the faulting bytes.
    let (v, _, _) = expect(0, || unsafe { asm!("int $0x20", options(att_syntax)) });
    check!(
        failed,
        v == 0x20,
        "int $0x20 (trap-table DPL 3) delivered vector {v}"
    );

    // SAFETY: raises exactly one exception; the handler skips the faulting bytes.
    let (v, e, _) = expect(2, || unsafe { asm!("int $0x21", options(att_syntax)) });
    check!(
        failed,
        v == 13 && e == 0x21 * 8 + 2,
        "int $0x21 (DPL 0) gave vector {v} error {e:#x}, expected #GP 0x10a"
    );

    // SAFETY: raises exactly one exception; the handler skips the faulting bytes.
    let (v, e, _) = expect(3, || unsafe {
        asm!("mov (%rsi), %rax", in("rsi") 0x7fff_0000_0000u64, out("rax") _, options(att_syntax))
    });
    check!(
        failed,
        v == 14 && e == 0,
        "read of an unmapped page gave vector {v} error {e:#x}, expected #PF 0 (kernel-mode read, not present)"
    );

    // SAFETY: raises exactly one exception; the handler skips the faulting bytes.
    let (v, e, _) = expect(3, || unsafe {
        asm!("mov (%rsi), %rax", in("rsi") 0x8000_0000_0000_0000u64, out("rax") _, options(att_syntax))
    });
    check!(
        failed,
        v == 13 && e == 0,
        "non-canonical read gave vector {v} error {e:#x}, expected #GP(0)"
    );

    let (a, b, c, d) = forced_cpuid(0x4000_0000, 0);
    let mut sig = [0u8; 12];
    sig[..4].copy_from_slice(&b.to_le_bytes());
    sig[4..8].copy_from_slice(&c.to_le_bytes());
    sig[8..].copy_from_slice(&d.to_le_bytes());
    check!(
        failed,
        &sig == b"XenVMMXenVMM" && a >= 0x4000_0002,
        "forced CPUID leaf 0x40000000: {:?} max {a:#x}",
        core::str::from_utf8(&sig)
    );
    let (a, _, _, _) = forced_cpuid(0x4000_0001, 0);
    check!(failed, a == (4 << 16 | 17), "Xen version leaf {a:#x}");

    // SAFETY: raises exactly one exception; the handler skips the faulting bytes.
    let (v, _, _) = expect(6, || unsafe { asm!("ud2", ".ascii \"xen\"", "nop") });
    check!(
        failed,
        v == 6,
        "forced prefix without cpuid gave vector {v}, expected #UD"
    );

    println!("all exceptions delivered");
    if failed {
        Verdict::Failure("exception delivery")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
