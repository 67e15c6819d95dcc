//! The SYSCALL entry: how a PV guest enters Hestia for hypercalls (from guest kernel mode) and
//! system calls (from guest user mode).
//!
//! STAR = `0xe023 << 48 | 0xe008 << 32`: SYSCALL loads CS 0xe008/SS 0xe010; a SYSRET would load
//! CS 0xe033/SS 0xe02b, the flat ring-3 selectors (xen-abi.md 1.1). FMASK clears AC, VM, RF,
//! NT, DF, IF and TF, so hypercalls start with interrupts off. The entry stub swaps to Hestia's
//! GS, saves the guest RSP in per-CPU scratch, switches to the CPU's stack top and pushes what an
//! interrupt from ring 3 would have pushed (SS, RSP, RFLAGS = R11, CS, RIP = RCX), a zero error
//! code and [`SYSCALL_VECTOR`], then joins the common trap path, whose exit returns with IRETQ.

use core::arch::global_asm;
use core::mem::offset_of;

use xen_abi::xen::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS};

use hestia_core::guest_exit::{Return, sysret_equivalent};

use super::cpu;
use super::gdt::KERNEL_CS;
use super::idt::TrapFrame;
use super::percpu::PerCpu;

/// The pseudo vector a SYSCALL frame carries (above every real vector).
pub const SYSCALL_VECTOR: u64 = 0x100;
/// The pseudo vector [`choose_exit`] gives a frame the exit path returns from with SYSRETQ.
pub const SYSRET_EXIT: u64 = 0x101;

const MSR_STAR: u32 = 0xC000_0081;
const MSR_LSTAR: u32 = 0xC000_0082;
const MSR_CSTAR: u32 = 0xC000_0083;
const MSR_FMASK: u32 = 0xC000_0084;
/// AC | VM | RF | NT | DF | IF | TF.
const FMASK: u64 = (1 << 18) | (1 << 17) | (1 << 16) | (1 << 14) | (1 << 10) | (1 << 9) | (1 << 8);

global_asm!(
    r#"
    .section .text.hestia_syscall, "ax"
    .global hestia_syscall_entry
hestia_syscall_entry:
    swapgs
    mov %rsp, %gs:{scratch}
    mov %gs:{stack_top}, %rsp
    push ${ss}
    push %gs:{scratch}
    push %r11
    push ${cs}
    push %rcx
    push $0
    push ${vector}
    jmp hestia_trap_swapped

    /* 32-bit compatibility-mode SYSCALL: not part of the 64-bit PV ABI. */
    .global hestia_syscall_compat
hestia_syscall_compat:
    sysretl
"#,
    scratch = const offset_of!(PerCpu, syscall_scratch),
    stack_top = const offset_of!(PerCpu, stack_top),
    ss = const FLAT_RING3_DS,
    cs = const FLAT_RING3_CS64,
    vector = const SYSCALL_VECTOR,
    options(att_syntax)
);

/// Last thing before a return to a guest: marks frame `f` for SYSRETQ when it came in by
/// SYSCALL and SYSRETQ returns to exactly the state IRETQ would (`hestia_core::guest_exit`),
/// as after most hypercalls; never on an NMI's way out.
pub fn choose_exit(f: &mut TrapFrame) {
    let r = Return {
        rip: f.rip,
        cs: f.cs,
        rflags: f.rflags,
        ss: f.ss,
        rcx: f.rcx,
        r11: f.r11,
        from_syscall: f.vector == SYSCALL_VECTOR,
    };
    if sysret_equivalent(&r) {
        f.vector = SYSRET_EXIT;
    }
}

unsafe extern "C" {
    fn hestia_syscall_entry();
    fn hestia_syscall_compat();
}

/// Programs this CPU's SYSCALL MSRs and enables SYSCALL in EFER.
pub fn init_cpu() {
    let star = (u64::from(FLAT_RING3_CS32) << 48) | (u64::from(KERNEL_CS) << 32);
    // SAFETY: the SYSCALL MSRs exist on every x86_64 CPU; the entry points are Hestia's stubs,
    // which switch to this CPU's stack (per-CPU data is installed before this runs).
    unsafe {
        cpu::wrmsr(MSR_STAR, star);
        cpu::wrmsr(MSR_LSTAR, hestia_syscall_entry as *const () as u64);
        cpu::wrmsr(MSR_CSTAR, hestia_syscall_compat as *const () as u64);
        cpu::wrmsr(MSR_FMASK, FMASK);
        cpu::wrmsr(cpu::msr::EFER, cpu::rdmsr(cpu::msr::EFER) | 1);
    }
}
