//! Privileged instructions a PV kernel executes in ring 3 that Hestia performs for it
//! (`shared/xen-abi.md` 4.10), and CPUID as guests see it.
//!
//! From the #GP(0) of guest kernel mode: RDMSR/WRMSR of the segment-base MSRs (Linux's
//! `startup_xen` loads GS base with a raw WRMSR) and a read of EFER, reads of CR0/CR2/CR3/CR4,
//! `mov` to and from DR0-7, CLTS, WBINVD; from either mode CLI/STI when the virtual IOPL allows
//! them (as no-ops). From #UD: the forced-emulation prefix `ud2; "xen"; cpuid`. Anything else is not
//! emulated and the exception is reflected.

use xen_abi::callback::{CPUID_BASE, FORCED_EMULATION_PREFIX};
use xen_abi::errno::Errno;

use super::debugreg;
use super::domain::Vcpu;
use crate::arch::x86_64::cpu;
use crate::arch::x86_64::idt::TrapFrame;
use crate::mm::guest::GuestRange;

/// What became of a trapping instruction.
pub enum Outcome {
    /// Performed; RIP is past it.
    Done,
    /// Not one Hestia performs: deliver the original exception.
    Reflect,
    /// Performed as far as the architecture goes: it raises this exception (no error code).
    Raise(u64),
}

const VEC_UD: u64 = 6;

/// The guest instruction byte at `rip + i`.
fn fetch(rip: u64, i: u64) -> Option<u8> {
    let mut b = [0u8; 1];
    GuestRange::new(rip.checked_add(i)?, 1)
        .and_then(|r| r.read(&mut b))
        .ok()?;
    Some(b[0])
}

/// General-purpose register `n` (the ModRM/REX encoding order) of the trapped context.
fn gpr(f: &mut TrapFrame, n: u8) -> &mut u64 {
    match n & 15 {
        0 => &mut f.rax,
        1 => &mut f.rcx,
        2 => &mut f.rdx,
        3 => &mut f.rbx,
        4 => &mut f.rsp,
        5 => &mut f.rbp,
        6 => &mut f.rsi,
        7 => &mut f.rdi,
        8 => &mut f.r8,
        9 => &mut f.r9,
        10 => &mut f.r10,
        11 => &mut f.r11,
        12 => &mut f.r12,
        13 => &mut f.r13,
        14 => &mut f.r14,
        _ => &mut f.r15,
    }
}

/// Emulates the instruction behind a #GP(0) raised by guest code.
pub fn general_protection(v: &mut Vcpu, f: &mut TrapFrame) -> Outcome {
    let Some(first) = fetch(f.rip, 0) else {
        return Outcome::Reflect;
    };
    // CLI/STI: with enough virtual IOPL (guest kernel mode counts as CPL 1, user mode as CPL 3)
    // they are skipped, as Xen does: the upcall mask is the guest's real interrupt flag and a
    // raw CLI never touches it (nor could a POPF restore it).
    if matches!(first, 0xFA | 0xFB) {
        let cpl = if v.kernel_mode { 1 } else { 3 };
        if v.iopl < cpl {
            return Outcome::Reflect;
        }
        f.rip += 1;
        return Outcome::Done;
    }
    if !v.kernel_mode {
        return Outcome::Reflect;
    }
    // An optional REX prefix, then a two-byte opcode.
    let (rex, at) = if first & 0xF0 == 0x40 {
        (first, 1)
    } else {
        (0, 0)
    };
    let (Some(0x0F), Some(op)) = (fetch(f.rip, at), fetch(f.rip, at + 1)) else {
        return Outcome::Reflect;
    };
    let len = match op {
        0x30 | 0x32 => msr(v, f, op == 0x30),
        0x20..=0x23 => {
            let Some(modrm) = fetch(f.rip, at + 2) else {
                return Outcome::Reflect;
            };
            // The CPU decodes mod as 11 for these: reg is the control or debug register, rm
            // (extended by REX.B) the general-purpose one.
            let n = u64::from((modrm >> 3) & 7 | (rex & 4) << 1);
            let r = (modrm & 7) | (rex & 1) << 3;
            match op {
                0x20 => control_register(v, n).map(|x| *gpr(f, r) = x),
                0x21 => debugreg::get(v, n).map(|x| *gpr(f, r) = x),
                0x23 => debugreg::set(v, n, *gpr(f, r)),
                _ => Err(Errno::EPERM), // writes to control registers
            }
            .map(|()| at + 3)
        }
        0x06 => {
            cpu::clear_ts();
            Ok(2)
        }
        0x09 => Ok(2), // WBINVD: nothing to do for a guest without device memory of its own
        _ => Err(Errno::EPERM),
    };
    match len {
        Ok(len) => {
            f.rip += len;
            Outcome::Done
        }
        // Xen's mapping of the emulation errors: -ENODEV is #UD, anything else #GP.
        Err(Errno::ENODEV) => Outcome::Raise(VEC_UD),
        Err(_) => Outcome::Reflect,
    }
}

/// WRMSR (`write`) or RDMSR of the MSRs a PV kernel may touch; the instruction length.
fn msr(v: &mut Vcpu, f: &mut TrapFrame, write: bool) -> Result<u64, Errno> {
    if write {
        let which = match f.rcx as u32 {
            cpu::msr::FS_BASE => 0,
            cpu::msr::GS_BASE => 2,
            cpu::msr::KERNEL_GS_BASE => 1,
            _ => return Err(Errno::EPERM),
        };
        let value = (f.rdx << 32) | (f.rax & 0xffff_ffff);
        crate::hypercall::segment::set_base_locked(v, which, value)?;
    } else {
        let value = match f.rcx as u32 {
            cpu::msr::FS_BASE => cpu::fs_base(),
            cpu::msr::GS_BASE => cpu::kernel_gs_base(),
            cpu::msr::KERNEL_GS_BASE => v.gs_base_user,
            cpu::msr::EFER => cpu::efer(),
            _ => return Err(Errno::EPERM),
        };
        (f.rax, f.rdx) = (value & 0xffff_ffff, value >> 32);
    }
    Ok(2)
}

/// `mov %crN, %reg`: the control registers as a PV kernel sees them.
fn control_register(v: &Vcpu, n: u64) -> Result<u64, Errno> {
    match n {
        0 => Ok(cpu::read_cr0()),
        2 => Ok(cpu::read_cr2()),
        3 => Ok(v.kernel_cr3),
        4 => Ok(cpu::read_cr4()),
        _ => Err(Errno::EPERM),
    }
}

/// `ud2; "xen"; cpuid` at RIP: run CPUID for the guest and skip the 7 bytes.
pub fn forced_cpuid(f: &mut TrapFrame) -> bool {
    let mut insn = [0u8; 7];
    if GuestRange::new(f.rip, 7)
        .and_then(|r| r.read(&mut insn))
        .is_err()
        || insn[..5] != FORCED_EMULATION_PREFIX
        || insn[5..] != [0x0F, 0xA2]
    {
        return false;
    }
    let (leaf, sub) = (f.rax as u32, f.rcx as u32);
    let r = guest_cpuid(leaf, sub);
    (f.rax, f.rbx, f.rcx, f.rdx) = (
        u64::from(r[0]),
        u64::from(r[1]),
        u64::from(r[2]),
        u64::from(r[3]),
    );
    f.rip += 7;
    true
}

/// CPUID as a PV guest sees it: the hardware's, with the hypervisor bit set, and Xen's leaves.
pub fn guest_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    const XEN: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e]; // "XenVMMXenVMM"
    match leaf {
        CPUID_BASE => [CPUID_BASE + 2, XEN[0], XEN[1], XEN[2]],
        l if l == CPUID_BASE + 1 => [4 << 16 | 17, 0, 0, 0],
        // One hypercall-page frame; MSR base for it (unused by 64-bit PV guests).
        l if l == CPUID_BASE + 2 => [1, CPUID_BASE, 0, 0],
        l if (CPUID_BASE..CPUID_BASE + 0x100).contains(&l) => [0; 4],
        _ => {
            let r = cpu::cpuid(leaf, sub);
            let ecx = if leaf == 1 { r.ecx | (1 << 31) } else { r.ecx };
            [r.eax, r.ebx, ecx, r.edx]
        }
    }
}
