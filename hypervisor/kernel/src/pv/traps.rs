//! Exceptions and software interrupts raised by PV guests: bounced to the guest's virtual IDT.
//!
//! Frame layout, CS/RFLAGS rewriting and the `int $n` DPL rule follow `shared/xen-abi.md` 4.5,
//! 4.7 and 4.9. The frame is written below the 16-byte-aligned guest RSP (kernel mode) through
//! `GuestRange`; a frame that cannot be written crashes the domain (there is no double fault for
//! PV guests). The forced-emulation prefix `ud2; "xen"; cpuid` runs CPUID against the domain's
//! view (Xen's leaves at 0x40000000).

use xen_abi::callback::{IretContext, TI_CLEAR_EVENTS, VGCF_IN_SYSCALL};
use xen_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, vmasst};
use zerocopy::IntoBytes;

use super::debugreg;
use super::domain::{Domain, Vcpu};
use super::privop::{self, Outcome};
use super::shared::LoadedVcpuInfo;
use crate::arch::x86_64::idt::TrapFrame;
use crate::arch::x86_64::{cpu, percpu};
use crate::mm::guest::{self, GuestRange};

/// Vectors whose exception pushes an error code.
const ERROR_CODE_VECTORS: [u64; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
const VEC_DB: u64 = 1;
const VEC_UD: u64 = 6;
const VEC_NM: u64 = 7;
const VEC_GP: u64 = 13;
const VEC_PF: u64 = 14;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_DF: u64 = 1 << 10;
const RFLAGS_IOPL: u64 = 3 << 12;
/// TF, NT, RF, VM, AC: cleared in the handler's context.
const RFLAGS_CLEAR_ON_ENTRY: u64 = (1 << 8) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 18);

/// Why a delivery failed: the caller crashes the domain with this reason.
pub type Fatal = &'static str;

/// The EFLAGS.IOPL bits a frame for the guest shows: its virtual IOPL with
/// `VMASST_TYPE_architectural_iopl`, else none (Xen's `create_bounce_frame`).
fn reported_iopl(d: &Domain, v: &Vcpu) -> u64 {
    if d.vm_assist(vmasst::ARCHITECTURAL_IOPL) {
        (u64::from(v.iopl) << 12) & RFLAGS_IOPL
    } else {
        0
    }
}

/// Builds a bounce frame on the guest's kernel stack and points `f` at `handler`.
#[unsafe(link_section = ".text.hot")]
fn bounce(
    d: &Domain,
    v: &mut Vcpu,
    f: &mut TrapFrame,
    error_code: Option<u64>,
    handler: u64,
    mask: bool,
) -> Result<(), Fatal> {
    // The vCPU's upcall mask: read for the frame, set below if asked.
    let info = LoadedVcpuInfo::here().ok_or("no vCPU loaded on this CPU")?;
    let saved_mask = info.upcall_mask();
    // Kernel mode shows as RPL 0 in the saved CS, user mode keeps RPL 3: that is how the
    // guest (and iret) tell the modes apart.
    let from_user = !v.kernel_mode;
    let cs = (if from_user { f.cs | 3 } else { f.cs & !3 }) | (u64::from(saved_mask) << 32);
    let rflags = (f.rflags & !(RFLAGS_IF | RFLAGS_IOPL))
        | if saved_mask { 0 } else { RFLAGS_IF }
        | reported_iopl(d, v);
    // The frame, lowest address first: RCX, R11, [error code], RIP, CS, RFLAGS, RSP, SS.
    let (words, n) = match error_code {
        Some(e) => (
            [
                f.rcx,
                f.r11,
                e & 0xffff_ffff,
                f.rip,
                cs,
                rflags,
                f.rsp,
                f.ss,
            ],
            8,
        ),
        None => ([f.rcx, f.r11, f.rip, cs, rflags, f.rsp, f.ss, 0], 7),
    };
    let top = if from_user {
        if v.kernel_sp == 0 {
            return Err(
                "event or exception in guest user mode with no kernel stack (stack_switch)",
            );
        }
        toggle_mode(v, true);
        v.kernel_sp & !15
    } else {
        f.rsp & !15
    };
    let bytes = (n * 8) as u64;
    let base = top
        .checked_sub(bytes)
        .ok_or("the guest stack pointer wraps")?;
    let frame = words[..n].as_bytes();
    GuestRange::new(base, frame.len())
        .and_then(|r| r.write(frame))
        .map_err(|_| "cannot write the exception frame to the guest stack")?;
    f.rsp = base;
    f.rip = handler;
    f.cs = u64::from(FLAT_KERNEL_CS);
    f.ss = u64::from(FLAT_KERNEL_SS);
    f.rflags &= !RFLAGS_CLEAR_ON_ENTRY;
    if mask {
        info.set_upcall_mask(true);
    }
    Ok(())
}

/// Switches the vCPU loaded on this CPU between guest kernel and user mode: the mode flag
/// (and this CPU's copy of it, which tells a hypercall from a system call of the guest's user
/// space), the GS bases (the guest's active one is in KERNEL_GS_BASE while Hestia runs,
/// because of SWAPGS on entry) and the page tables.
pub fn toggle_mode(v: &mut Vcpu, to_kernel: bool) {
    if v.kernel_mode == to_kernel {
        return;
    }
    // KERNEL_GS_BASE holds the guest's active GS base while Hestia runs.
    let active = cpu::kernel_gs_base();
    if to_kernel {
        v.gs_base_user = active;
        cpu::set_kernel_gs_base(v.gs_base_kernel);
    } else {
        v.gs_base_kernel = active;
        cpu::set_kernel_gs_base(v.gs_base_user);
    }
    v.kernel_mode = to_kernel;
    percpu::set_guest_kernel_mode(to_kernel);
    let cr3 = if to_kernel { v.kernel_cr3 } else { v.user_cr3 };
    // SAFETY: both L4s hold validated L4 type references of this domain, so they map only its
    // frames and carry Hestia's slots 256-271.
    unsafe { cpu::write_cr3(cr3) };
}

/// Whether the vCPU loaded on this CPU runs in guest kernel mode (this CPU's copy of its mode,
/// which [`toggle_mode`] and `context::load` keep): a SYSCALL from there is a hypercall.
#[inline(always)]
pub fn in_kernel_mode() -> bool {
    percpu::guest_kernel_mode()
}

/// A SYSCALL from guest user mode: bounce to the syscall callback in kernel mode, or raise
/// #UD at the instruction when the guest registered none.
pub fn guest_syscall(d: &Domain, v: &mut Vcpu, f: &mut TrapFrame) -> Result<(), Fatal> {
    // The frame records what SYSCALL saved: RIP in RCX, RFLAGS in R11; the guest's own RCX and
    // R11 are gone (the guest ABI says so).
    let cb = v.syscall_callback;
    if cb.address == 0 {
        f.rip = f.rip.wrapping_sub(2);
        return deliver(d, v, f, VEC_UD, None);
    }
    bounce(d, v, f, None, cb.address, cb.mask_events)?;
    f.rflags &= !RFLAGS_DF;
    Ok(())
}

/// Delivers an event upcall: a no-error-code frame to the event callback, events masked.
#[unsafe(link_section = ".text.hot")]
pub fn deliver_upcall(d: &Domain, v: &mut Vcpu, f: &mut TrapFrame) -> Result<(), Fatal> {
    bounce(d, v, f, None, v.event_callback.address, true)
}

/// Delivers `vector` through the guest's trap table.
fn deliver(
    d: &Domain,
    v: &mut Vcpu,
    f: &mut TrapFrame,
    vector: u64,
    error_code: Option<u64>,
) -> Result<(), Fatal> {
    let t = v.traps[vector as usize & 0xff];
    if t.address == 0 {
        return Err("unhandled exception: the guest has no handler for this vector");
    }
    bounce(
        d,
        v,
        f,
        error_code,
        t.address,
        t.flags & TI_CLEAR_EVENTS != 0,
    )
}

/// Delivers a page fault at `addr` (the guest's CR2).
fn page_fault(
    d: &Domain,
    v: &mut Vcpu,
    f: &mut TrapFrame,
    addr: u64,
    err: u64,
) -> Result<(), Fatal> {
    v.cr2 = addr;
    d.shared().set_cr2(v.id, addr);
    // The CPU always reports a user access (the guest runs at CPL 3): bit 2 says the mode.
    let err = (err & !4) | if v.kernel_mode { 0 } else { 4 };
    deliver(d, v, f, VEC_PF, Some(err))
}

/// Handles an exception raised by guest code; `Err` asks the caller to crash the domain.
pub fn guest_exception(d: &Domain, v: &mut Vcpu, f: &mut TrapFrame) -> Result<(), Fatal> {
    let vector = f.vector;
    if vector == VEC_GP && f.error_code & 0b11 == 0b10 {
        // `int $n` hit a DPL-0 gate of Hestia's IDT: allowed if the guest's gate permits it.
        let n = f.error_code >> 3;
        let dpl = v.traps[n as usize & 0xff].flags & 3;
        let needed = if v.kernel_mode { 1 } else { 3 };
        if v.traps[n as usize & 0xff].address != 0 && dpl >= needed {
            f.rip = f.rip.wrapping_add(2);
            return deliver(d, v, f, n, None);
        }
        return deliver(d, v, f, VEC_GP, Some(f.error_code));
    }
    if vector == VEC_GP {
        match super::descriptor::ldt_fault(d.id.0, v, f.error_code) {
            Some(Ok(())) => return Ok(()),
            Some(Err(addr)) => return page_fault(d, v, f, addr, 0),
            None => {}
        }
    }
    if vector == VEC_GP && f.error_code == 0 {
        match privop::general_protection(d, v, f) {
            Outcome::Done => return Ok(()),
            Outcome::Raise(other) => return deliver(d, v, f, other, None),
            Outcome::PageFault { addr, error_code } => {
                return page_fault(d, v, f, addr, error_code);
            }
            Outcome::Reflect => {}
        }
    }
    if vector == VEC_UD && privop::forced_cpuid(d, v, f) {
        return Ok(());
    }
    if vector == VEC_DB {
        debugreg::guest_trap(v);
    }
    if vector == VEC_NM {
        // The guest set TS (fpu_taskswitch) and touched the FPU: clear it, real and virtual,
        // and let the guest restore its state (shared/xen-abi.md 4.4).
        cpu::clear_ts();
        return deliver(d, v, f, VEC_NM, None);
    }
    if vector == VEC_PF {
        let cr2 = cpu::read_cr2();
        if super::ptwr::handle(d, v, f, cr2, f.error_code)? {
            return Ok(());
        }
        return page_fault(d, v, f, cr2, f.error_code);
    }
    let err = ERROR_CODE_VECTORS.contains(&vector).then_some(f.error_code);
    deliver(d, v, f, vector, err)
}

/// The `iret` hypercall: restore the context the guest pushed; RPL 3 in its CS returns to
/// guest user mode. As in Xen, RIP and the selectors are the guest's (forced to RPL 3) and are
/// not checked here: a frame the CPU refuses (a non-canonical RIP, a selector its descriptor
/// does not allow) makes the exit IRETQ fault, which Hestia turns into that exception for the
/// guest at the target of its return (`idt.rs`, `hestia_iret_fault`).
#[unsafe(link_section = ".text.hot")]
pub fn iret(d: &Domain, v: &mut Vcpu, f: &mut TrapFrame) -> Result<(), Fatal> {
    let c: IretContext = guest::read_obj(f.rsp).map_err(|_| "unreadable iret frame")?;
    if c.cs & 3 == 3 {
        if v.user_cr3 == 0 {
            return Err("guest switching to user mode with no user page tables");
        }
        toggle_mode(v, false);
    }
    // The architectural assist: the frame's IOPL becomes the virtual IOPL (never the real
    // one, cleared below).
    if d.vm_assist(vmasst::ARCHITECTURAL_IOPL) {
        v.iopl = ((c.rflags & RFLAGS_IOPL) >> 12) as u8;
    }
    f.rip = c.rip;
    f.rsp = c.rsp;
    f.cs = (c.cs & 0xffff) | 3;
    f.ss = (c.ss & 0xffff) | 3;
    // IOPL and VM never come from the guest; IF is always on in hardware (the guest's
    // "interrupts off" is its upcall mask).
    f.rflags = (c.rflags & !(RFLAGS_IOPL | (1 << 17))) | RFLAGS_IF | 2;
    LoadedVcpuInfo::here()
        .ok_or("no vCPU loaded on this CPU")?
        .set_upcall_mask(c.rflags & RFLAGS_IF == 0);
    f.rax = c.rax;
    if c.flags & VGCF_IN_SYSCALL == 0 {
        f.rcx = c.rcx;
        f.r11 = c.r11;
    } else {
        f.rcx = c.rip;
        f.r11 = f.rflags;
    }
    Ok(())
}
