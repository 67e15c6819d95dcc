//! XSA-260 (CVE-2018-8897): a data breakpoint on the operand of `mov ..., %ss` (or `pop %ss`,
//! which 64-bit mode lacks) raises a #DB that the CPU defers past the next instruction. When that instruction enters the
//! hypervisor (SYSCALL, INT3, INT1, INT n), the #DB strikes the first instruction of the entry
//! path, in ring 0: the SYSCALL entry still runs on the guest's stack with the guest's GS base.
//! Without an IST stack for #DB the CPU pushes the #DB frame through the guest's RSP, and the
//! handler then runs on the guest's GS base; the hypervisor dies.
//!
//! The guest arms DR0/DR7 (`set_debugreg`) on a word holding its SS selector and on a stack
//! slot, and does each pairing; every hypercall must still return the right value, every
//! software interrupt must reach the guest's handler, and the guest must get back. A #DB taken
//! in the hypervisor is ignored (Xen 4.17's `do_debug`); where the CPU does not defer the #DB
//! (QEMU's TCG delivers it right after the MOV SS), the guest gets it, which this test accepts.
//! Because TCG does not defer it, the scenario `xsa-style-mov-ss-syscall-db` runs this guest
//! with `selftest=syscall-db`: a breakpoint on Hestia's SYSCALL scratch word raises the same
//! ring-0 #DB on the guest's stack, and the guest first calls with a non-canonical RSP.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{ExcFrame, Verdict, check, hypercall, install_traps, println};

/// DR7: L0, R/W0 = 11 (reads and writes), LEN0 = 11 (4 bytes).
const DR7_WATCH_RW_4: u64 = 0x000f_0001;
/// XENVER_version.
const XENVER_VERSION: u64 = 0;

static DEBUG_TRAPS: AtomicU64 = AtomicU64::new(0);
static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);
static SOFT_INTS: AtomicU64 = AtomicU64::new(0);
/// The guest's SS selector, the operand of every `mov (%rdx), %ss`.
static SS_WORD: AtomicU64 = AtomicU64::new(0);

/// A stack for the stack-slot variant: its top word holds the selector; the guest's handlers run
/// below it when the CPU delivers the #DB in guest context.
#[repr(C, align(16))]
struct PopStack([u64; 2048]);
static mut POP_STACK: PopStack = PopStack([0; 2048]);

fn handler(vector: u64, f: &mut ExcFrame) {
    match vector {
        1 => {
            DEBUG_TRAPS.fetch_add(1, SeqCst);
        }
        3 => {
            BREAKPOINTS.fetch_add(1, SeqCst);
        }
        32 => {
            SOFT_INTS.fetch_add(1, SeqCst);
        }
        _ => {
            println!("unexpected exception {vector} at {:#x}", f.rip);
            println!("Test result: ERROR (unexpected exception)");
            hestia_guests::shutdown(3);
        }
    }
}

fn set(reg: u64, value: u64) -> i64 {
    hypercall(nr::SET_DEBUGREG, reg, value, 0, 0, 0)
}

/// `mov (ss_word), %ss; syscall` as the `xen_version` hypercall.
fn mov_ss_syscall() -> i64 {
    let ret: i64;
    // SAFETY: reloads SS with its own value, then a raw hypercall (RCX and R11 destroyed).
    unsafe {
        asm!("mov (%rdx), %ss", "syscall", in("rdx") SS_WORD.as_ptr(),
             inlateout("rax") u64::from(nr::XEN_VERSION) => ret,
             inlateout("rdi") XENVER_VERSION => _, inlateout("rsi") 0u64 => _,
             out("rcx") _, out("r11") _, options(att_syntax))
    };
    ret
}

/// `syscall` with the top bit of RSP flipped, as the `xen_version` hypercall: any #DB the
/// hypervisor takes before it switches stacks would push its frame to a non-canonical address.
fn bad_rsp_syscall() -> i64 {
    let ret: i64;
    // SAFETY: a raw hypercall with RSP made non-canonical for its duration (R12 keeps it); no
    // stack access happens in between.
    unsafe {
        asm!("mov %rsp, %r12", "btc $63, %rsp", "syscall", "mov %r12, %rsp",
             out("r12") _, inlateout("rax") u64::from(nr::XEN_VERSION) => ret,
             inlateout("rdi") XENVER_VERSION => _, inlateout("rsi") 0u64 => _,
             out("rcx") _, out("r11") _, options(att_syntax))
    };
    ret
}

/// `mov (%rsp), %ss; syscall` on `POP_STACK`, as the `xen_version` hypercall.
fn stack_ss_syscall(slot: u64) -> i64 {
    let ret: i64;
    // SAFETY: switches to POP_STACK, whose top word holds the SS selector, loads it into SS,
    // makes a raw hypercall, and switches back (R12 holds the original stack pointer).
    unsafe {
        asm!("xchg %r12, %rsp", "mov (%rsp), %ss", "syscall", "mov %r12, %rsp",
             inout("r12") slot => _,
             inlateout("rax") u64::from(nr::XEN_VERSION) => ret,
             inlateout("rdi") XENVER_VERSION => _, inlateout("rsi") 0u64 => _,
             out("rcx") _, out("r11") _, options(att_syntax))
    };
    ret
}

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    let ss: u64;
    // SAFETY: reads the SS selector.
    unsafe { asm!("mov %ss, {:e}", out(reg) ss, options(att_syntax, nomem, nostack)) };
    SS_WORD.store(ss, SeqCst);
    let version = hypercall(nr::XEN_VERSION, XENVER_VERSION, 0, 0, 0, 0);
    check!(failed, version > 0, "xen_version {version}");

    // 0. A hypercall on a non-canonical stack pointer (with `selftest=syscall-db`, Hestia's
    // entry takes a #DB before its stack switch: the scenario of XSA-260 under QEMU's TCG, which
    // does not defer the MOV SS breakpoint). Before the guest sets its own debug registers.
    let r = bad_rsp_syscall();
    check!(
        failed,
        r == version,
        "syscall on a non-canonical RSP returned {r:#x}"
    );

    // 1. The breakpoint works: `mov %ss` then a plain instruction raises #DB in the guest.
    check!(
        failed,
        set(0, SS_WORD.as_ptr() as u64) == 0,
        "DR0 on the SS word"
    );
    check!(failed, set(7, DR7_WATCH_RW_4) == 0, "arm DR7");
    // SAFETY: reloads SS with its own value.
    unsafe { asm!("mov (%rdx), %ss", "nop", in("rdx") SS_WORD.as_ptr(), options(att_syntax)) };
    let sanity = DEBUG_TRAPS.load(SeqCst);
    check!(
        failed,
        sanity == 1,
        "{sanity} #DB after a watched mov to %ss"
    );

    // 2. MOV SS + SYSCALL: the hypercall still answers, and the guest gets back.
    for _ in 0..3 {
        let r = mov_ss_syscall();
        check!(failed, r == version, "mov ss; syscall returned {r:#x}");
    }

    // 3. The watchpoint on the stack slot that SS is loaded from, RSP pointing at it.
    // SAFETY: the top word of POP_STACK, which nothing else uses.
    let slot = unsafe { (&raw mut POP_STACK.0[2047]) as u64 };
    // SAFETY: as above.
    unsafe { (slot as *mut u64).write_volatile(ss) };
    check!(failed, set(0, slot) == 0, "DR0 on the stack slot");
    let r = stack_ss_syscall(slot);
    check!(
        failed,
        r == version,
        "mov (%rsp), %ss; syscall returned {r:#x}"
    );
    check!(failed, set(0, SS_WORD.as_ptr() as u64) == 0, "DR0 back");

    // 4. MOV SS + INT3, INT1 and INT $0x20: each reaches the guest's handler.
    // SAFETY: reloads SS with its own value; the handlers return after each trap.
    unsafe {
        asm!("mov (%rdx), %ss", "int3", in("rdx") SS_WORD.as_ptr(), options(att_syntax));
        asm!("mov (%rdx), %ss", ".byte 0xf1", in("rdx") SS_WORD.as_ptr(), options(att_syntax));
        asm!("mov (%rdx), %ss", "int $0x20", in("rdx") SS_WORD.as_ptr(), options(att_syntax));
    }
    check!(
        failed,
        BREAKPOINTS.load(SeqCst) == 1,
        "{} #BP after mov ss; int3",
        BREAKPOINTS.load(SeqCst)
    );
    check!(
        failed,
        SOFT_INTS.load(SeqCst) == 1,
        "{} int $0x20 after mov ss",
        SOFT_INTS.load(SeqCst)
    );
    // int1 raises #DB itself; a deferred breakpoint may fold into it or come on its own.
    check!(
        failed,
        DEBUG_TRAPS.load(SeqCst) > sanity,
        "no #DB after mov ss; int1"
    );

    // 5. Disarmed, everything still works.
    check!(failed, set(7, 0) == 0, "disarm DR7");
    let r = hypercall(nr::XEN_VERSION, XENVER_VERSION, 0, 0, 0, 0);
    check!(failed, r == version, "xen_version afterwards {r:#x}");
    println!(
        "{} #DB, {} #BP, {} int $0x20 reached the guest",
        DEBUG_TRAPS.load(SeqCst),
        BREAKPOINTS.load(SeqCst),
        SOFT_INTS.load(SeqCst)
    );
    if failed {
        Verdict::Failure("MOV SS / POP SS before an entry into the hypervisor")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
