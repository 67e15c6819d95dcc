//! A multicall whose entry is `iret` performs the iret and ends there (Xen since XSA-213,
//! `pv_do_multicall_call` answering `mc_exit`): the guest resumes at the target of the iret
//! frame on its stack (where the `iret` hypercall itself would read it) with the frame's RAX
//! as the multicall's return value, the `iret` entry's result is that RAX, and the entries
//! after it never run (their results keep the caller's poison). Entries before it ran.
//! Xen's `do_multicall` passes that return value through an `int`: the guest gets the low 32
//! bits of the frame's RAX sign-extended (the entry's result has all 64), as the rig shows.
#![no_std]
#![no_main]

use core::arch::asm;

use hestia_guests::xen_abi::version::cmd as ver;
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, hypercall, println};

/// What the caller leaves in a result field, to see which entries ran.
const POISON: u64 = 0xdead_beef_f00d_cafe;
/// The RAX of the iret frame (bit 31 set, to see the sign extension).
const FRAME_RAX: u64 = 0x1234_5678_9abc_def0;
/// The multicall's return value after the iret: `FRAME_RAX` through Xen's `int rc`.
const RETURNED_RAX: u64 = FRAME_RAX as i32 as i64 as u64;

/// A `multicall_entry`: op, result, args[6].
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Entry([u64; 8]);

fn entry(op: u32, a0: u64) -> Entry {
    Entry([u64::from(op), POISON, a0, 0, 0, 0, 0, 0])
}

/// Issues `multicall(list, n)` with an iret frame on the stack that returns, in kernel mode
/// (CS RPL 0) with events masked, to a label just after the SYSCALL, with RSP as it was
/// before the frame was pushed and RAX `FRAME_RAX`. Returns (RAX after, whether the iret
/// target was reached rather than the instruction after the SYSCALL).
fn multicall_with_iret_frame(list: &mut [Entry]) -> (u64, bool) {
    let (rax, reached): (u64, u64);
    // SAFETY: the pushed frame is popped on both ways out (the iret target restores RSP from
    // it; the fall-through path drops it); every register the hypercall or the iret may
    // change is declared clobbered. The target has no red zone to protect.
    unsafe {
        asm!(
            "lea 2f(%rip), %rcx",
            "mov %rsp, %r9",
            "push $0xe02b",        // ss
            "push %r9",            // rsp
            "push $0x2",           // rflags: IF clear, events stay masked
            "push $0xe030",        // cs: RPL 0, back to guest kernel mode
            "push %rcx",           // rip
            "push $0",             // flags: not in a syscall, RCX/R11 from the frame
            "push %rcx",           // rcx
            "push %r11",           // r11
            "push %rdx",           // rax
            "mov ${mc}, %eax",
            "syscall",
            "add $72, %rsp",
            "xor %ecx, %ecx",
            "jmp 3f",
            "2:",
            "mov $1, %ecx",
            "3:",
            mc = const nr::MULTICALL,
            inout("rdi") list.as_mut_ptr() as u64 => _,
            inout("rsi") list.len() as u64 => _,
            inout("rdx") FRAME_RAX => _,
            lateout("rax") rax,
            lateout("rcx") reached,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(att_syntax)
        );
    }
    (rax, reached == 1)
}

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    let version = hypercall(nr::XEN_VERSION, u64::from(ver::VERSION), 0, 0, 0, 0) as u64;

    // An iret in the middle: the entry before runs, the one after does not.
    let mut list = [
        entry(nr::XEN_VERSION, u64::from(ver::VERSION)),
        entry(nr::IRET, 0),
        entry(nr::XEN_VERSION, u64::from(ver::VERSION)),
    ];
    let (rax, reached) = multicall_with_iret_frame(&mut list);
    check!(
        failed,
        reached,
        "the multicall returned to its caller: the iret was not performed"
    );
    check!(
        failed,
        rax == RETURNED_RAX,
        "RAX {rax:#x} after the iret, expected {RETURNED_RAX:#x} from the frame's {FRAME_RAX:#x}"
    );
    check!(
        failed,
        list[0].0[1] == version,
        "entry 0 result {:#x}, expected {version:#x}",
        list[0].0[1]
    );
    check!(
        failed,
        list[1].0[1] == FRAME_RAX,
        "iret entry result {:#x}, expected the frame's RAX",
        list[1].0[1]
    );
    check!(
        failed,
        list[2].0[1] == POISON,
        "the entry after the iret ran (result {:#x})",
        list[2].0[1]
    );

    // An iret as the only entry.
    let mut list = [entry(nr::IRET, 0)];
    let (rax, reached) = multicall_with_iret_frame(&mut list);
    check!(
        failed,
        reached && rax == RETURNED_RAX,
        "lone iret entry: target reached {reached}, RAX {rax:#x}"
    );

    // Without an iret the multicall returns to its caller as usual.
    let mut list = [entry(nr::XEN_VERSION, u64::from(ver::VERSION))];
    let (rax, reached) = multicall_with_iret_frame(&mut list);
    check!(
        failed,
        !reached && rax == 0 && list[0].0[1] == version,
        "plain multicall: target reached {reached}, RAX {rax:#x}, result {:#x}",
        list[0].0[1]
    );
    println!("multicall with iret: resumed at the frame's target with its RAX");
    if failed {
        Verdict::Failure("multicall iret")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
