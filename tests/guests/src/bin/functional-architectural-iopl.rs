//! `VMASST_TYPE_architectural_iopl`, as Xen 4.17 (`pv/iret.c`, `iopl_ok` in
//! `pv/emul-priv-op.c`, `create_bounce_frame`): with the assist on, guest kernel mode counts as
//! ring 0 for the virtual IOPL (CLI, STI and port I/O are allowed whatever the IOPL), the
//! EFLAGS.IOPL of every `iret` frame becomes the virtual IOPL, and exception frames report it.
//! Without the assist kernel mode counts as ring 1, `iret` leaves the IOPL alone (only
//! `PHYSDEVOP_set_iopl` sets it) and frames show IOPL 0. Last, user mode (ring 3) with the
//! assist: entered by an `iret` with IOPL 3 it may use them, its system call's frame reports
//! IOPL 3, and returned to with IOPL 0 it may not.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::callback::{CallbackRegister, cmd as cb, kind};
use hestia_guests::xen_abi::mmu::ext;
use hestia_guests::xen_abi::physdev::{SetIopl, cmd};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr, vmasst};
use hestia_guests::{
    ExcFrame, SYSCALL_VECTOR, Verdict, check, hypercall, hypercall_page_bytes, install_traps,
    mmuext_one, pfn_to_mfn, println, syscall_entry_address,
};

const VMASST_CMD_ENABLE: u64 = 0;
const VMASST_CMD_DISABLE: u64 = 1;
const RFLAGS_IOPL: u64 = 3 << 12;
/// Vectors of #UD and #GP.
const UD: u64 = 6;
const GP: u64 = 13;

static GP_FAULTS: AtomicU64 = AtomicU64::new(0);
/// The IOPL of the last #UD frame.
static SEEN_IOPL: AtomicU64 = AtomicU64::new(u64::MAX);
/// The IOPL the #UD handler puts in the frame it returns through.
static RETURN_IOPL: AtomicU64 = AtomicU64::new(0);
/// Whether a kernel-mode check failed (reported once user mode is done).
static KERNEL_FAILED: AtomicU64 = AtomicU64::new(0);
/// What user mode saw: #GP faults at IOPL 3, the IOPL its system call's frame reported, #GP
/// faults at IOPL 0.
static USER_FAULTS_IOPL3: AtomicU64 = AtomicU64::new(u64::MAX);
static SYSCALL_IOPL: AtomicU64 = AtomicU64::new(u64::MAX);
static USER_FAULTS_IOPL0: AtomicU64 = AtomicU64::new(u64::MAX);
/// The system call user mode makes last.
static EXITING: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut KERNEL_STACK: Stack = Stack([0; 16384]);
static mut USER_STACK: Stack = Stack([0; 16384]);

fn handler(vector: u64, f: &mut ExcFrame) {
    match vector {
        GP => {
            GP_FAULTS.fetch_add(1, SeqCst);
            // CLI, STI are one byte, `in $0x80, %al` two.
            // SAFETY: the faulting instruction is one of this test's, in its own text.
            let first = unsafe { *(f.rip as *const u8) };
            f.rip += if first == 0xe4 { 2 } else { 1 };
        }
        UD => {
            SEEN_IOPL.store((f.rflags & RFLAGS_IOPL) >> 12, SeqCst);
            f.rflags = (f.rflags & !RFLAGS_IOPL) | (RETURN_IOPL.load(SeqCst) << 12);
            f.rip += 2; // ud2
        }
        // From user mode: the first returns to it with IOPL 0, the second ends the test.
        SYSCALL_VECTOR => {
            if EXITING.load(SeqCst) != 0 {
                finish();
            }
            SYSCALL_IOPL.store((f.rflags & RFLAGS_IOPL) >> 12, SeqCst);
            f.rflags &= !RFLAGS_IOPL;
        }
        _ => println!("unexpected exception {vector} at {:#x}", f.rip),
    }
}

fn set_iopl(iopl: u32) -> i64 {
    let arg = SetIopl { iopl };
    hypercall(
        nr::PHYSDEV_OP,
        u64::from(cmd::SET_IOPL),
        &arg as *const SetIopl as u64,
        0,
        0,
        0,
    )
}

fn assist(cmd: u64) -> i64 {
    hypercall(
        nr::VM_ASSIST,
        cmd,
        u64::from(vmasst::ARCHITECTURAL_IOPL),
        0,
        0,
        0,
    )
}

/// #GP faults taken by CLI, STI and a read of port 0x80.
fn privileged_faults() -> u64 {
    let before = GP_FAULTS.load(SeqCst);
    // SAFETY: emulated as no-ops or a harmless port read, or #GP which the handler skips;
    // events stay masked throughout (the upcall mask is the virtual interrupt flag).
    unsafe {
        asm!("cli", "sti", "in $0x80, %al", out("al") _, options(nostack, att_syntax));
    }
    GP_FAULTS.load(SeqCst) - before
}

/// Raises #UD, whose handler returns through an iret frame with IOPL `iopl`; returns the IOPL
/// the #UD frame showed.
fn ud_frame_iopl(iopl: u64) -> u64 {
    RETURN_IOPL.store(iopl, SeqCst);
    // SAFETY: the handler skips the two bytes.
    unsafe { asm!("ud2", options(nostack, nomem)) };
    SEEN_IOPL.load(SeqCst)
}

/// Runs in guest user mode, entered with IOPL 3.
extern "C" fn user_main() -> ! {
    USER_FAULTS_IOPL3.store(privileged_faults(), SeqCst);
    // SAFETY: a guest system call; the kernel's callback returns here with IOPL 0.
    unsafe { asm!("syscall", out("rcx") _, out("r11") _) };
    USER_FAULTS_IOPL0.store(privileged_faults(), SeqCst);
    EXITING.store(1, SeqCst);
    // SAFETY: the last system call never returns to user mode.
    unsafe { asm!("syscall", options(noreturn)) }
}

/// Leaves guest kernel mode for `user_main` by an iret frame with IOPL 3 and events on.
fn enter_user_iopl3() -> ! {
    let stub = hypercall_page_bytes().as_ptr() as u64 + u64::from(nr::IRET) * 32;
    let rsp = (&raw const USER_STACK) as u64 + 16384;
    // SAFETY: builds the iret frame (SS, RSP, RFLAGS, CS with RPL 3, RIP, flags) the iret
    // stub completes with RCX, R11 and RAX; user mode has its L4 and a kernel stack back.
    unsafe {
        asm!(
            "push $0xe02b",
            "push {rsp}",
            "push $0x3202",
            "push $0xe033",
            "push {rip}",
            "push $0",
            "jmp *{stub}",
            rsp = in(reg) rsp,
            rip = in(reg) user_main as *const () as u64,
            stub = in(reg) stub,
            options(att_syntax, noreturn)
        )
    }
}

/// The kernel's side of entering user mode: the syscall callback, the kernel stack, the kernel
/// L4 doubling as the user one (XTF's way).
fn prepare_user_mode(si: &StartInfo) -> bool {
    let cbr = CallbackRegister {
        kind: kind::SYSCALL,
        flags: 0,
        _pad: 0,
        address: syscall_entry_address(),
    };
    let callback = hypercall(
        nr::CALLBACK_OP,
        u64::from(cb::REGISTER),
        &cbr as *const CallbackRegister as u64,
        0,
        0,
        0,
    );
    let kstack = (&raw const KERNEL_STACK) as u64 + 16384;
    let stack = hypercall(nr::STACK_SWITCH, 0xe02b, kstack, 0, 0, 0);
    let l4 = pfn_to_mfn(si, si.pt_base >> 12);
    let base = mmuext_one(ext::NEW_USER_BASEPTR, l4, 0);
    callback == 0 && stack == 0 && base == 0
}

/// In kernel mode again after user mode's last system call: the verdict.
fn finish() -> ! {
    let mut failed = KERNEL_FAILED.load(SeqCst) != 0;
    let (n3, seen, n0) = (
        USER_FAULTS_IOPL3.load(SeqCst),
        SYSCALL_IOPL.load(SeqCst),
        USER_FAULTS_IOPL0.load(SeqCst),
    );
    check!(
        failed,
        n3 == 0,
        "user mode, IOPL 3: {n3} #GP, expected none"
    );
    check!(
        failed,
        seen == 3,
        "user mode's system call frame: IOPL {seen}, expected 3"
    );
    check!(
        failed,
        n0 == 3,
        "user mode, IOPL 0 from the iret: {n0} #GP, expected 3"
    );
    println!("architectural IOPL: kernel ring 0, IOPL from iret frames, reported in frames");
    println!(
        "Test result: {}",
        if failed {
            "FAILURE (architectural_iopl)"
        } else {
            "SUCCESS"
        }
    );
    hestia_guests::shutdown(0)
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    if install_traps(handler) != 0 {
        return Verdict::Error("set_trap_table");
    }

    // Without the assist, kernel mode is ring 1: IOPL 0 refuses all three.
    check!(failed, set_iopl(0) == 0, "set_iopl(0)");
    let n = privileged_faults();
    check!(failed, n == 3, "no assist, IOPL 0: {n} #GP, expected 3");

    // With it, kernel mode is ring 0: allowed at IOPL 0.
    check!(failed, assist(VMASST_CMD_ENABLE) == 0, "vm_assist enable");
    let n = privileged_faults();
    check!(failed, n == 0, "assist, IOPL 0: {n} #GP, expected none");

    // Frames report the virtual IOPL, and the iret frame's IOPL becomes it.
    check!(failed, set_iopl(2) == 0, "set_iopl(2)");
    let seen = ud_frame_iopl(1);
    check!(
        failed,
        seen == 2,
        "assist: frame IOPL {seen} after set_iopl(2)"
    );
    let seen = ud_frame_iopl(3);
    check!(
        failed,
        seen == 1,
        "assist: frame IOPL {seen} after an iret with IOPL 1"
    );
    let seen = ud_frame_iopl(0);
    check!(
        failed,
        seen == 3,
        "assist: frame IOPL {seen} after an iret with IOPL 3"
    );

    // Off again: the IOPL the last iret set (0) holds, kernel mode is ring 1 again.
    check!(failed, assist(VMASST_CMD_DISABLE) == 0, "vm_assist disable");
    let n = privileged_faults();
    check!(
        failed,
        n == 3,
        "assist off, IOPL 0 from the iret: {n} #GP, expected 3"
    );
    // Frames show no IOPL and an iret does not change it.
    check!(failed, set_iopl(1) == 0, "set_iopl(1)");
    let seen = ud_frame_iopl(0);
    check!(
        failed,
        seen == 0,
        "no assist: frame IOPL {seen}, expected 0"
    );
    let n = privileged_faults();
    check!(
        failed,
        n == 0,
        "no assist, IOPL 1 kept across an iret: {n} #GP, expected none"
    );

    // User mode with the assist.
    check!(failed, assist(VMASST_CMD_ENABLE) == 0, "vm_assist enable");
    if !prepare_user_mode(si) {
        return Verdict::Error("user-mode setup");
    }
    KERNEL_FAILED.store(u64::from(failed), SeqCst);
    enter_user_iopl3()
}

hestia_guests::guest_main!(test);
