//! The first entry into a PV vCPU: load its page tables and return to ring 3 through the trap
//! exit path, as if the vCPU had just been interrupted.

use core::arch::asm;
use core::mem::size_of;

use super::cpu;
use super::idt::TrapFrame;
use super::percpu;

/// Loads `cr3` (a guest L4, which carries Hestia's slots) and resumes the guest in `regs` with
/// GS base `gs_base`.
pub fn enter(regs: &TrapFrame, cr3: u64, gs_base: u64) -> ! {
    cpu::disable_interrupts();
    let top = percpu::this_cpu().stack_top;
    let dst = top - size_of::<TrapFrame>() as u64;
    // The exit path's SWAPGS makes this the active GS base and parks Hestia's per-CPU pointer
    // in KERNEL_GS_BASE for the next entry.
    cpu::set_kernel_gs_base(gs_base);
    // SAFETY: the guest L4 was built by the domain builder with Hestia's slots 256-271, so this
    // code, its stack and `regs` stay mapped after the switch.
    unsafe { cpu::write_cr3(cr3) };
    // SAFETY: `dst` is the top frame slot of this CPU's own stack, where traps from ring 3 put
    // their frame; nothing live is there because this path never returns. The exit path pops the
    // frame and IRETQs to the guest's ring-3 selectors.
    unsafe {
        asm!(
            "rep movsq",
            // RDI now points past the copied frame: the frame starts `size` bytes below.
            "lea -{size}(%rdi), %rsp",
            "jmp hestia_trap_exit",
            size = const size_of::<TrapFrame>(),
            in("rdi") dst,
            in("rsi") regs as *const TrapFrame,
            in("rcx") size_of::<TrapFrame>() / 8,
            options(att_syntax, noreturn)
        )
    }
}
