//! The IDT and the common trap entry path.
//!
//! `build.rs` generates one 16-byte stub per vector that pushes a dummy error code (where the CPU
//! pushes none) and the vector number, then jumps to `hestia_trap_common`, which saves every
//! general-purpose register to complete one [`TrapFrame`], swaps GS if the trap came from ring 3
//! (PV guests), and calls [`super::trap::dispatch`]. Offsets into the frame come from
//! `offset_of!`, never hand-counted. One IDT is shared by all CPUs.
//!
//! The IST vectors (#DB, NMI, #DF, #MC) enter through `hestia_trap_paranoid` instead, because
//! they can strike ring 0 at any instruction, including those of the entry and exit paths:
//! - with another GS base live (a guest's, around SWAPGS or a guest selector load): from ring
//!   0 that path loads Hestia's per-CPU pointer into GS_BASE itself and puts the interrupted
//!   base back after;
//! - on the guest's stack: a #DB that a guest's data breakpoint raised at a MOV SS / POP SS is
//!   deferred past the next instruction, so `mov ss; syscall` delivers it at the first
//!   instruction of the SYSCALL entry, which still runs on the guest's RSP (XSA-260). On its own
//!   IST stack the #DB is harmless there; Hestia ignores it, as Xen does.
//!
//! An IST stack is reused from its top by every delivery, so a handler must never be
//! interrupted by its own vector while it runs on it. From ring 3 the paranoid path therefore
//! moves the frame to the (then empty) top of the CPU's main stack before it calls anything,
//! as Xen's `handle_ist_exception` does: a guest #DB or NMI is then handled like any other
//! trap, and a #DB raised while Hestia writes the bounce frame to a watched guest stack finds its
//! IST stack free. From ring 0 the handlers stay on the IST stack; they touch no guest memory,
//! so no #DB can nest in them (guest breakpoints only cover guest addresses).
//!
//! With XPTI ([`super::xpti`]) a guest runs on restricted page tables: every path from ring 3
//! switches CR3 to the guest's full L4 right after SWAPGS (before touching anything but the
//! entry text, the stack, and `PerCpu`), the exit path switches to the restricted tables last,
//! and the paranoid path switches for its own duration when it interrupts ring 0 on them.
//!
//! Every return to a guest ends in the one IRETQ at `hestia_trap_iret` (Hestia never returns with
//! SYSRET, so its erratum with a non-canonical RIP cannot arise). That IRETQ faults when the
//! frame is one the CPU refuses: a non-canonical RIP (an emulated instruction that ended at
//! 0x0000_8000_0000_0000, or an `iret` hypercall's frame) or a selector the descriptor does not
//! allow. The fault arrives in ring 0 with the guest's GS base already live; the common entry
//! recognises it by its RIP and the RPL 3 of the frame being returned to, rebuilds a guest frame
//! from the guest registers it saved and the refused IRET frame, and dispatches it as that
//! exception raised by the guest at the target of its return, as Xen's fix-up of
//! `iret_exit_to_guest` does. The guest's handler gets it; without one the domain is crashed.

use core::arch::{asm, global_asm};
use core::mem::{offset_of, size_of};

use super::gdt::{IST_DEBUG, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS};
use super::percpu::PerCpu;

/// The register state saved on every trap, lowest address first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(missing_docs)] // Register names.
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Vector number, pushed by the stub.
    pub vector: u64,
    /// The CPU's error code, or 0 pushed by the stub.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}
const _: () = assert!(size_of::<TrapFrame>() == 22 * 8);
const _: () = assert!(
    size_of::<TrapFrame>().is_multiple_of(16),
    "keeps RSP 16-byte aligned at the call"
);

global_asm!(
    include_str!(concat!(env!("OUT_DIR"), "/trap_stubs.s")),
    options(att_syntax)
);

global_asm!(
    r#"
    /* SMAP closed on every entry: an interrupt gate keeps the interrupted RFLAGS.AC (a guest
       sets it at will; Hestia inside its copy routine). The IRETQ restores it. */
    .macro hestia_clac
    testb $1, {smap_on}(%rip)
    jz 1f
    clac
1:
    .endm

    /* XPTI: from a guest's restricted page tables back to its full ones, once GS is Hestia's
       and RAX saved (a no-op without XPTI: the per-CPU word is 0). */
    .macro hestia_xpti_enter
    mov %gs:{xpti_full}, %rax
    test %rax, %rax
    jz 8f
    mov %rax, %cr3
8:
    .endm

    /* XPTI: copy the guest's slots into this CPU's restricted page tables and switch to them;
       if a TLB flush (an NMI) marked the copy stale meanwhile, go back and copy again. GS is
       Hestia's; RAX and the caller-saved registers are clobbered. */
    .macro hestia_xpti_leave
7:  call {xpti_sync}
    mov %gs:{xpti_root}, %rax
    mov %rax, %cr3
    cmpb $0, %gs:{xpti_stale}
    je 6f
    mov %gs:{xpti_full}, %rax
    mov %rax, %cr3
    jmp 7b
6:
    .endm

    /* VERW before the IRETQ to a guest (MDS and relatives, `spec_ctrl`): all registers are
       the guest's by now, so its operand, Hestia's data selector, goes into the error-code slot
       just popped below the IRET frame, mapped wherever that frame is. Interrupts are off and
       NMI, #MC and #DB run on IST stacks, so nothing reuses the slot before the IRETQ. */
    .macro hestia_verw
    testb $1, {verw_on}(%rip)
    jz .Lno_verw\@
    movw ${kernel_ds}, -8(%rsp)
    verw -8(%rsp)
.Lno_verw\@:
    .endm

    /* IBPB on entry from a guest when `spec_ctrl` asks for it (AMD BTC/SRSO), before the
       first RET; after the GPRs are saved (clobbers RAX, RCX, RDX). The LFENCE keeps a
       mispredicted skip from running Hestia on the guest's predictions. */
    .macro hestia_ibpb_entry
    testb $1, {ibpb_entry_on}(%rip)
    jz .Lno_ibpb\@
    mov ${pred_cmd}, %ecx
    mov $1, %eax
    xor %edx, %edx
    wrmsr
.Lno_ibpb\@:
    lfence
    .endm

    .macro hestia_save_gprs
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    .endm

    .macro hestia_restore_gprs
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add ${skip}, %rsp
    .endm

    .section .text.trap_common, "ax"
    .global hestia_trap_common
hestia_trap_common:
    hestia_clac
    hestia_save_gprs
    testb $3, {cs}(%rsp)
    jnz 1f
    /* From ring 0: the IRETQ of the exit path faulting on a guest's frame (#NP, #SS or #GP,
       the faults IRET raises for a frame)? */
    lea hestia_trap_iret(%rip), %rax
    cmp %rax, {rip}(%rsp)
    jne hestia_trap_saved
    mov {vector}(%rsp), %rax
    sub $11, %rax
    cmp $2, %rax
    ja hestia_trap_saved
    mov {rsp}(%rsp), %rax
    testb $3, 8(%rax)
    jnz hestia_iret_fault
    jmp hestia_trap_saved
1:  swapgs
    hestia_xpti_enter
    hestia_ibpb_entry
    jmp hestia_trap_saved
    /* The SYSCALL entry joins here with the hardware part of the frame built and GS already
       swapped. */
    .global hestia_trap_swapped
hestia_trap_swapped:
    hestia_save_gprs
    hestia_xpti_enter
    hestia_ibpb_entry
hestia_trap_saved:
    cld
    mov %rsp, %rdi
    call {dispatch}
    .global hestia_trap_exit
hestia_trap_exit:
    testb $3, {cs}(%rsp)
    jz 1f
    cmpq $0, %gs:{xpti_root}
    je 2f
    hestia_xpti_leave
2:  swapgs
1:  hestia_restore_gprs
    hestia_verw
    cmpq ${sysret_exit}, -{skip}(%rsp)
    je 3f
    .global hestia_trap_iret
hestia_trap_iret:
    iretq
    /* The frame's vector says SYSRETQ returns to the same state as IRETQ would
       (`syscall::choose_exit`): RCX and R11 hold RIP and RFLAGS, RIP is canonical. An NMI or
       #MC between the RSP load and SYSRETQ runs on its IST stack and sees ring 0 with the
       guest's GS base live, which the paranoid entry expects. */
3:  mov {rsp}-{rip}(%rsp), %rsp
    sysretq

    /* The IRETQ to a guest raised #GP, #NP or #SS (a non-canonical RIP, a selector its
       descriptor refuses): the fault arrived in ring 0 after the exit SWAPGS, with the guest's
       registers saved in this frame and the guest's IRET frame intact where the faulting
       RSP points. Rebuild one frame from both just below that IRET frame (copying downwards:
       they overlap), as if the guest had raised the fault at the target of its return, and
       handle it as a guest exception, as Xen's pre-exception fix-up of `iret_exit_to_guest`
       does. */
hestia_iret_fault:
    mov {rsp}(%rsp), %rdi
    sub $8, %rdi
    lea {error_code}(%rsp), %rsi
    mov ${saved_words}, %ecx
    std
    rep movsq
    cld
    lea 8(%rdi), %rsp
    swapgs
    hestia_xpti_enter
    jmp hestia_trap_saved

    /* #DB, NMI, #DF and #MC (IST vectors) can interrupt ring 0 anywhere: between an entry or
       exit SWAPGS and the ring change (the guest's GS base live), or while Hestia loads a
       guest's %gs selector (a descriptor's base live). From ring 3 the usual SWAPGS applies and
       the frame moves to the top of the main stack, which is empty while a guest runs, so that
       this IST stack is free again before anything can nest (DF may be the guest's: CLD first).
       From ring 0 the interrupted GS base is saved in RBX (callee-saved across the call),
       Hestia's per-CPU pointer, kept just above the IST frame, is loaded, and the saved base
       goes back before the IRET. */
    .global hestia_trap_paranoid
hestia_trap_paranoid:
    hestia_clac
    hestia_save_gprs
    hestia_ibpb_entry
    testb $3, {cs}(%rsp)
    jz 1f
    swapgs
    hestia_xpti_enter
    cld
    mov %rsp, %rsi
    mov %gs:{stack_top}, %rsp
    sub ${frame_size}, %rsp
    mov %rsp, %rdi
    mov ${frame_words}, %ecx
    rep movsq
    jmp hestia_trap_saved
1:  mov ${gs_base}, %ecx
    rdmsr
    shl $32, %rdx
    or %rax, %rdx
    mov %rdx, %rbx
    mov {percpu}(%rsp), %rax
    mov %rax, %rdx
    shr $32, %rdx
    wrmsr
    /* XPTI: interrupted on a guest's restricted page tables (the exit path after its switch,
       or an entry path before its own)? Run on the full ones, and go back through the exit
       path's copy-and-switch, which copies again if this or a later NMI flushed the TLB (the
       interrupted exit path may already have checked). R12 (callee-saved) remembers that. */
    xor %r12d, %r12d
    mov %cr3, %rax
    cmp %gs:{xpti_root}, %rax
    jne 2f
    mov %rax, %r12
    mov %gs:{xpti_full}, %rax
    mov %rax, %cr3
2:  cld
    mov %rsp, %rdi
    call {dispatch}
    test %r12, %r12
    jz 3f
    hestia_xpti_leave
3:  mov ${gs_base}, %ecx
    mov %ebx, %eax
    mov %rbx, %rdx
    shr $32, %rdx
    wrmsr
    hestia_restore_gprs
    hestia_verw
    iretq
"#,
    cs = const offset_of!(TrapFrame, cs),
    rip = const offset_of!(TrapFrame, rip),
    vector = const offset_of!(TrapFrame, vector),
    sysret_exit = const super::syscall::SYSRET_EXIT,
    rsp = const offset_of!(TrapFrame, rsp),
    error_code = const offset_of!(TrapFrame, error_code),
    saved_words = const offset_of!(TrapFrame, rip) / 8,
    skip = const offset_of!(TrapFrame, rip) - offset_of!(TrapFrame, vector),
    gs_base = const super::cpu::msr::GS_BASE,
    percpu = const offset_of!(TrapFrame, ss) + 8 + IST_PERCPU_SLOT,
    stack_top = const offset_of!(PerCpu, stack_top),
    frame_size = const size_of::<TrapFrame>(),
    frame_words = const size_of::<TrapFrame>() / 8,
    dispatch = sym super::trap::dispatch,
    smap_on = sym super::cpu::SMAP_ON,
    xpti_root = const offset_of!(PerCpu, xpti_root),
    xpti_full = const offset_of!(PerCpu, xpti_full_cr3),
    xpti_stale = const offset_of!(PerCpu, xpti_stale),
    xpti_sync = sym super::xpti::sync,
    verw_on = sym super::spec_ctrl::VERW_ON,
    ibpb_entry_on = sym super::spec_ctrl::IBPB_ENTRY_ON,
    kernel_ds = const super::gdt::KERNEL_DS,
    pred_cmd = const super::spec_ctrl::PRED_CMD,
    options(att_syntax)
);

/// Bytes kept free at the top of every IST stack, between the TSS's IST pointer and the stack's
/// end; the owning CPU's `PerCpu` pointer lives in that gap for the paranoid entry.
const IST_RESERVED: u64 = 16;
/// Offset of the `PerCpu` pointer above the IST pointer (the word above the CPU-pushed SS).
const IST_PERCPU_SLOT: usize = 8;

/// The IST pointer for a stack ending at `top`, after storing `percpu` (the owning CPU's data)
/// where the paranoid entry looks for it.
pub fn prepare_ist_stack(top: u64, percpu: u64) -> u64 {
    let ist = top - IST_RESERVED;
    // SAFETY: `top` is the end of a fresh IST stack owned by the caller's CPU; the slot lies in
    // the reserved gap above the IST pointer, which the CPU never pushes to.
    unsafe { ((ist + IST_PERCPU_SLOT as u64) as *mut u64).write(percpu) };
    ist
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    _zero: u32,
}
const _: () = assert!(size_of::<Gate>() == 16);

#[repr(C, align(16))]
struct Idt([Gate; 256]);

unsafe extern "C" {
    static hestia_trap_stub_table: [u64; 256];
}

/// Entry data: the CPU reads it on every interrupt, also while a guest runs on restricted page
/// tables (XPTI).
#[unsafe(link_section = ".data.entry")]
static IDT: spin::Once<Idt> = spin::Once::new();

fn build() -> Idt {
    // SAFETY: the table is generated by build.rs with exactly 256 stub addresses.
    let stubs = unsafe { &hestia_trap_stub_table };
    let mut idt = Idt([Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        _zero: 0,
    }; 256]);
    for (v, g) in idt.0.iter_mut().enumerate() {
        let a = stubs[v];
        let ist = match v {
            1 => IST_DEBUG,
            2 => IST_NMI,
            8 => IST_DOUBLE_FAULT,
            18 => IST_MACHINE_CHECK,
            _ => 0,
        };
        *g = Gate {
            offset_low: a as u16,
            selector: KERNEL_CS,
            ist,
            // Present 64-bit interrupt gates, DPL 0 except #BP and #OF: `int3` and `into` from
            // a PV guest reach Hestia directly, as in Xen (other `int $n` raise #GP).
            attributes: if matches!(v, 3 | 4) { 0xEE } else { 0x8E },
            offset_mid: (a >> 16) as u16,
            offset_high: (a >> 32) as u32,
            _zero: 0,
        };
    }
    idt
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads the (shared) IDT on this CPU, building it on first use.
pub fn load() {
    let idt = IDT.call_once(build);
    let dp = DescriptorPointer {
        limit: (size_of::<Idt>() - 1) as u16,
        base: idt as *const Idt as u64,
    };
    // SAFETY: the IDT is static and every gate points at a generated stub in kernel text.
    unsafe {
        asm!("lidt ({})", in(reg) &dp, options(att_syntax, readonly, nostack, preserves_flags))
    };
}

/// Loads an empty IDT and raises an exception: the CPU triple-faults and resets. The reset path
/// of last resort.
pub fn triple_fault() -> ! {
    let dp = DescriptorPointer { limit: 0, base: 0 };
    // SAFETY: deliberately unrecoverable: with a zero-limit IDT the breakpoint escalates to a
    // triple fault, which resets the machine.
    unsafe { asm!("lidt ({})", "int3", in(reg) &dp, options(att_syntax, nostack)) };
    super::cpu::halt_forever()
}
