//! Guest user mode: a user L4 (MMUEXT_NEW_USER_BASEPTR), the iret hypercall into ring-3 user
//! mode, SYSCALL from user mode reaching the syscall callback on the kernel stack from
//! stack_switch with a user CS, `int3` from user mode, separate user and kernel GS bases
//! (set_segment_base, and WRMSR of GS base emulated for the kernel), and the way back.
//!
//! With a second vCPU on the same CPU (`dom0_max_vcpus=2`, one CPU), user mode also runs
//! across vCPU switches: vCPU 1 runs in kernel mode between the slices of a loop of user
//! system calls, each with a hypercall's number in RAX, and every one must still reach the
//! kernel's callback (a vCPU loaded in user mode never takes SYSCALL as a hypercall).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::callback::{CallbackRegister, cmd as cb, kind};
use hestia_guests::xen_abi::mmu::{MmuextOp, ext};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    ExcFrame, SYSCALL_VECTOR, Verdict, check, enter_user, hypercall, install_traps, pfn_to_mfn,
    println, start_vcpu, syscall_entry_address, yield_now,
};

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut KERNEL_STACK: Stack = Stack([0; 16384]);
static mut USER_STACK: Stack = Stack([0; 16384]);

static USER_GS_MARK: u64 = 0x5555;
static KERNEL_GS_MARK: u64 = 0x7777;
static SYSCALL_NR: AtomicU64 = AtomicU64::new(0);
static SYSCALLS: AtomicU64 = AtomicU64::new(0);
static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);
static USER_GS_SEEN: AtomicU64 = AtomicU64::new(0);
static KERNEL_GS_SEEN: AtomicU64 = AtomicU64::new(0);
static BAD_CS: AtomicU64 = AtomicU64::new(0);

const EXIT: u64 = 0xdead;
/// `SYSCALL_NR` of the system calls of the loop across vCPU switches.
const LOOP: u64 = 0x1000;
/// How many times vCPU 1 must have run during that loop.
const SWITCH_ROUNDS: u64 = 4;

static mut PARTNER_STACK: Stack = Stack([0; 16384]);
/// Whether vCPU 1 runs beside this one.
static PARTNER_UP: AtomicU64 = AtomicU64::new(0);
/// How many times vCPU 1 got the CPU.
static PARTNER_RUNS: AtomicU64 = AtomicU64::new(0);
static LOOP_ISSUED: AtomicU64 = AtomicU64::new(0);
static LOOP_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// vCPU 1: in kernel mode, counting its turns and giving the CPU back at once.
extern "C" fn partner() -> ! {
    loop {
        PARTNER_RUNS.fetch_add(1, SeqCst);
        yield_now();
    }
}

fn gs0() -> u64 {
    let v: u64;
    // SAFETY: reads the word at GS base, which the test points at one of its statics.
    unsafe {
        core::arch::asm!("mov %gs:0, {}", out(reg) v, options(att_syntax, readonly, nostack))
    };
    v
}

/// Runs in guest user mode.
extern "C" fn user_main() -> ! {
    USER_GS_SEEN.store(gs0(), SeqCst);
    for n in [0x1234, 0x1235] {
        SYSCALL_NR.store(n, SeqCst);
        // SAFETY: a guest system call; the guest kernel's callback returns here.
        unsafe { core::arch::asm!("syscall", out("rcx") _, out("r11") _) };
    }
    // SAFETY: a breakpoint from user mode; the guest kernel's #BP handler returns here.
    unsafe { core::arch::asm!("int3") };
    if PARTNER_UP.load(SeqCst) != 0 {
        let start = PARTNER_RUNS.load(SeqCst);
        while PARTNER_RUNS.load(SeqCst) < start + SWITCH_ROUNDS {
            // Mostly in user mode, so that the time slice ends there.
            for _ in 0..20_000 {
                core::hint::spin_loop();
            }
            SYSCALL_NR.store(LOOP, SeqCst);
            LOOP_ISSUED.fetch_add(1, SeqCst);
            // SAFETY: a guest system call (RAX holds xen_version's number, which only a
            // hypercall from kernel mode would mean); the callback returns here.
            unsafe {
                core::arch::asm!("syscall", inout("rax") u64::from(nr::XEN_VERSION) => _, out("rcx") _, out("r11") _)
            };
        }
    }
    SYSCALL_NR.store(EXIT, SeqCst);
    // SAFETY: the "exit" system call never returns to user mode.
    unsafe { core::arch::asm!("syscall", options(noreturn)) }
}

fn handler(vector: u64, f: &mut ExcFrame) {
    if f.cs & 3 != 3 {
        BAD_CS.store(f.cs, SeqCst);
    }
    match vector {
        SYSCALL_VECTOR => {
            KERNEL_GS_SEEN.store(gs0(), SeqCst);
            match SYSCALL_NR.load(SeqCst) {
                EXIT => finish(),
                LOOP => LOOP_RECEIVED.fetch_add(1, SeqCst),
                _ => SYSCALLS.fetch_add(1, SeqCst),
            };
        }
        3 => {
            BREAKPOINTS.fetch_add(1, SeqCst);
        }
        _ => {
            println!("unexpected vector {vector} at {:#x}", f.rip);
            hestia_guests::shutdown(3);
        }
    }
}

fn finish() -> ! {
    let mut failed = false;
    check!(
        failed,
        SYSCALLS.load(SeqCst) == 2,
        "{} user system calls reached the kernel",
        SYSCALLS.load(SeqCst)
    );
    let (issued, received) = (LOOP_ISSUED.load(SeqCst), LOOP_RECEIVED.load(SeqCst));
    check!(
        failed,
        issued == received,
        "across vCPU switches, {received} of {issued} user system calls reached the kernel"
    );
    check!(
        failed,
        PARTNER_UP.load(SeqCst) == 0 || issued > 0,
        "no user system call across vCPU switches"
    );
    check!(
        failed,
        BREAKPOINTS.load(SeqCst) == 1,
        "{} user breakpoints",
        BREAKPOINTS.load(SeqCst)
    );
    check!(
        failed,
        BAD_CS.load(SeqCst) == 0,
        "a frame from user mode had CS {:#x} (RPL must be 3)",
        BAD_CS.load(SeqCst)
    );
    check!(
        failed,
        USER_GS_SEEN.load(SeqCst) == USER_GS_MARK,
        "user mode saw %gs:0 = {:#x}",
        USER_GS_SEEN.load(SeqCst)
    );
    check!(
        failed,
        KERNEL_GS_SEEN.load(SeqCst) == KERNEL_GS_MARK,
        "kernel mode saw %gs:0 = {:#x}",
        KERNEL_GS_SEEN.load(SeqCst)
    );
    println!(
        "user mode: {} syscalls, {} breakpoints, {issued} syscalls across vCPU switches",
        SYSCALLS.load(SeqCst),
        BREAKPOINTS.load(SeqCst)
    );
    println!(
        "Test result: {}",
        if failed {
            "FAILURE (user mode)"
        } else {
            "SUCCESS"
        }
    );
    hestia_guests::shutdown(0)
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    let cbr = CallbackRegister {
        kind: kind::SYSCALL,
        flags: 0,
        _pad: 0,
        address: syscall_entry_address(),
    };
    check!(
        failed,
        hypercall(
            nr::CALLBACK_OP,
            u64::from(cb::REGISTER),
            &cbr as *const CallbackRegister as u64,
            0,
            0,
            0
        ) == 0,
        "syscall callback"
    );
    let kstack = (&raw const KERNEL_STACK) as u64 + 16384;
    check!(
        failed,
        hypercall(nr::STACK_SWITCH, 0xe02b, kstack, 0, 0, 0) == 0,
        "stack_switch"
    );
    // XTF's way: the kernel L4 doubles as the user L4.
    let l4 = pfn_to_mfn(si, si.pt_base >> 12);
    let op = MmuextOp {
        cmd: ext::NEW_USER_BASEPTR,
        _pad: 0,
        arg1: l4,
        arg2: 0,
    };
    check!(
        failed,
        hypercall(
            nr::MMUEXT_OP,
            &op as *const MmuextOp as u64,
            1,
            0,
            u64::from(DOMID_SELF),
            0
        ) == 0,
        "new user baseptr"
    );
    // GS bases: the user one through set_segment_base, the kernel one through a raw WRMSR.
    check!(
        failed,
        hypercall(
            nr::SET_SEGMENT_BASE,
            1,
            &USER_GS_MARK as *const u64 as u64,
            0,
            0,
            0
        ) == 0,
        "set user GS base"
    );
    let kgs = &KERNEL_GS_MARK as *const u64 as u64;
    // SAFETY: WRMSR of MSR_GS_BASE from the PV kernel; Hestia emulates it.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") 0xC000_0101u32, in("eax") kgs as u32, in("edx") (kgs >> 32) as u32)
    };
    check!(
        failed,
        gs0() == KERNEL_GS_MARK,
        "kernel %gs:0 after the emulated WRMSR is {:#x}",
        gs0()
    );
    check!(
        failed,
        hypercall(nr::SET_SEGMENT_BASE, 0, 0x8000_0000_0000_0000, 0, 0, 0) == -22,
        "non-canonical FS base accepted"
    );
    if failed {
        return Verdict::Failure("user-mode setup");
    }
    let top = (&raw const PARTNER_STACK) as u64 + 16384;
    if start_vcpu(si, 1, partner, top) {
        PARTNER_UP.store(1, SeqCst);
    }
    println!("entering user mode");
    enter_user(
        user_main as *const () as u64,
        (&raw const USER_STACK) as u64 + 16384,
    )
}

hestia_guests::guest_main!(test);
