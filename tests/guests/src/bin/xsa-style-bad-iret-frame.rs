//! The `iret` hypercall with frames the CPU refuses: a non-canonical RIP, a CS or an SS naming
//! one of the hypervisor's ring-0 descriptors. The hypervisor's own IRETQ back to the guest
//! faults on them. Xen 4.17 takes the guest's RIP, CS and SS as given (CS and SS forced to RPL
//! 3) and lets its exit IRET fault; its pre-exception fix-up then makes the fault the guest's, as
//! if raised at the target of the return: #GP(0) for the RIP, #GP(selector) for a refused
//! selector, with the refused frame in the bounce frame. The failsafe callback is not involved
//! (Xen uses it only when reloading the guest's data segment registers fails), so this test
//! registers one and checks that it is never entered. Before the fix, Hestia crashed the
//! domain for the RIP and replaced the selectors with its flat ones.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::callback::{CallbackRegister, cmd as cb, kind};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{
    ExcFrame, Verdict, check, hypercall, hypercall_page_bytes, install_traps, println,
};

/// The first non-canonical address.
const BOUNDARY: u64 = 0x0000_8000_0000_0000;
/// The hypervisor's ring-0 code and data selectors (DPL 0: refused at RPL 3).
const HYPERVISOR_CS: u64 = 0xe008;
const HYPERVISOR_DS: u64 = 0xe010;
/// The guest kernel's flat selectors, as its frames show them (kernel mode as RPL 0).
const KERNEL_CS: u64 = 0xe030;
const KERNEL_SS: u64 = 0xe02b;

static RECOVER: AtomicU64 = AtomicU64::new(0);
static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
static LAST_RIP: AtomicU64 = AtomicU64::new(0);
static LAST_CS: AtomicU64 = AtomicU64::new(0);
static FAILSAFE: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector != 13 {
        println!("exception {vector} at {:#x}", f.rip);
    }
    LAST.store((vector << 32) | f.error_code, SeqCst);
    LAST_RIP.store(f.rip, SeqCst);
    LAST_CS.store(f.cs & 0xffff, SeqCst);
    f.rip = RECOVER.load(SeqCst);
    f.cs = KERNEL_CS;
    f.ss = KERNEL_SS;
}

extern "C" fn failsafe() -> ! {
    FAILSAFE.fetch_add(1, SeqCst);
    println!("Test result: FAILURE (the failsafe callback was entered)");
    hestia_guests::shutdown(0)
}

/// Returns through the `iret` hypercall to `rip` with `cs` and `ss` (RSP unchanged, events
/// still masked); comes back through the #GP handler, or straight to `rip` when it is label 2.
fn iret_to(rip: Option<u64>, cs: u64, ss: u64) {
    let stub = hypercall_page_bytes().as_ptr() as u64 + 23 * 32;
    // SAFETY: builds the iret hypercall's frame (flags, RIP, CS, RFLAGS, RSP, SS) on the
    // stack, as the runtime's exception stubs do, and jumps to the page's iret stub, which
    // pushes RCX, R11 and RAX. The return lands at label 2 with this RSP, directly or through
    // the #GP handler.
    unsafe {
        asm!("lea 2f(%rip), %rax", "mov %rax, (%rsi)", "test %r10, %r10", "cmovz %rax, %r10",
             "mov %rsp, %rax", "push %r8", "push %rax", "push $0", "push %r9", "push %r10",
             "push $0", "jmp *%rdi", "2:",
             inout("rsi") RECOVER.as_ptr() => _, inout("rdi") stub => _, inout("r8") ss => _,
             inout("r9") cs => _, inout("r10") rip.unwrap_or(0) => _, out("rax") _,
             out("rcx") _, out("r11") _,
             options(att_syntax))
    };
}

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    let r = CallbackRegister {
        kind: kind::FAILSAFE,
        flags: 0,
        _pad: 0,
        address: failsafe as *const () as u64,
    };
    check!(
        failed,
        hypercall(
            nr::CALLBACK_OP,
            u64::from(cb::REGISTER),
            &r as *const CallbackRegister as u64,
            0,
            0,
            0
        ) == 0,
        "register the failsafe callback"
    );

    // 0. A good frame returns to its target.
    iret_to(None, KERNEL_CS, KERNEL_SS);
    check!(
        failed,
        LAST.load(SeqCst) == u64::MAX,
        "a good frame faulted"
    );

    // 1. A non-canonical RIP: #GP(0) at it.
    iret_to(Some(BOUNDARY), KERNEL_CS, KERNEL_SS);
    let (last, rip) = (LAST.load(SeqCst), LAST_RIP.load(SeqCst));
    check!(
        failed,
        last == 13 << 32 && rip == BOUNDARY,
        "non-canonical RIP: vector/error {last:#x} at {rip:#x}"
    );

    // 2. The hypervisor's code selector as CS: #GP(selector), the frame shows it.
    LAST.store(u64::MAX, SeqCst);
    iret_to(None, HYPERVISOR_CS, KERNEL_SS);
    let (last, cs) = (LAST.load(SeqCst), LAST_CS.load(SeqCst));
    check!(
        failed,
        last == (13 << 32 | HYPERVISOR_CS) && cs & !3 == HYPERVISOR_CS,
        "ring-0 CS: vector/error {last:#x}, CS {cs:#x}"
    );

    // 3. The hypervisor's data selector as SS: #GP(selector).
    LAST.store(u64::MAX, SeqCst);
    iret_to(None, KERNEL_CS, HYPERVISOR_DS);
    let last = LAST.load(SeqCst);
    check!(
        failed,
        last == (13 << 32 | HYPERVISOR_DS),
        "ring-0 SS: vector/error {last:#x}"
    );

    check!(
        failed,
        FAILSAFE.load(SeqCst) == 0,
        "the failsafe callback ran"
    );
    let v = hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0);
    check!(failed, v > 0, "xen_version afterwards: {v}");
    if failed {
        Verdict::Failure("iret frames the CPU refuses")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
