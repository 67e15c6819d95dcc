//! Every unimplemented hypercall number answers -ENOSYS, including numbers past the table.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{Verdict, check, hypercall, raw_hypercall};

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    // Numbers Xen 4.17 leaves unimplemented for 64-bit PV (others, like 16, 31, 42 and 48,
    // exist in Xen and answer their own errors).
    for n in [
        11u32, 38, 43, 44, 45, 46, 47, 50, 51, 52, 53, 54, 55, 63, 127,
    ] {
        let r = hypercall(n, 1, 2, 3, 4, 5);
        check!(
            failed,
            r == -38,
            "hypercall {n} returned {r}, expected -ENOSYS"
        );
    }
    for n in [128u32, 0x1000, u32::MAX] {
        let r = raw_hypercall(n, 0, 0, 0, 0, 0);
        check!(
            failed,
            r == -38,
            "raw hypercall {n:#x} returned {r}, expected -ENOSYS"
        );
    }
    // The whole of RAX is the number: 2^32 + 17 is not xen_version (17), 2^32 + 23 not iret
    // (23), 2^32 + 13 not multicall (13; it would run a batch of whatever RDI points at).
    for n in [(1u64 << 32) | 17, (1 << 32) | 23, (1 << 32) | 13, u64::MAX] {
        let r: i64;
        // SAFETY: SYSCALL in guest kernel mode is a hypercall; RCX and R11 are destroyed by the
        // instruction, the argument registers zero.
        unsafe {
            core::arch::asm!("syscall", inlateout("rax") n => r, inlateout("rdi") 0u64 => _,
                 inlateout("rsi") 0u64 => _, inlateout("rdx") 0u64 => _, out("rcx") _, out("r11") _)
        };
        check!(
            failed,
            r == -38,
            "hypercall number {n:#x} returned {r}, expected -ENOSYS"
        );
    }
    if failed {
        Verdict::Failure("ENOSYS")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
