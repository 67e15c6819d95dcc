//! Debug registers of PV vCPUs: `set_debugreg`/`get_debugreg`, the emulated `mov` to and from
//! `%drN`, and debug exceptions (`shared/xen-abi.md` 4.4).
//!
//! The rules are Xen's: DR0-3 must hold guest addresses (-EPERM), the upper halves of DR6 and
//! DR7 are reserved (-EINVAL), DR7.GD and I/O breakpoints are refused (-EPERM: guests have no
//! CR4.DE), DR4/DR5 alias DR6/DR7, anything else is -ENODEV. Reserved bits are forced to their
//! architectural values. The hardware registers hold the running vCPU's values (one vCPU per CPU
//! for now), so a guest watchpoint can fire while Hestia copies to or from guest memory: that
//! #DB is taken in ring 0 and ignored, as Xen does; a #DB in guest code updates the vCPU's DR6
//! and is bounced.

use xen_abi::errno::Errno;

use super::domain::Vcpu;
use crate::arch::x86_64::cpu;
use crate::arch::x86_64::idt::TrapFrame;
use crate::mm::guest;

/// DR6 after reset: the bits that read as 1 (RTM and bus-lock detection are not offered).
pub const DR6_DEFAULT: u64 = 0xffff_0ff0;
/// DR6 bit 12 always reads as 0.
const DR6_ZEROS: u64 = 1 << 12;
/// DR7 bit 10 always reads as 1 (the reset value).
pub const DR7_DEFAULT: u64 = 1 << 10;
/// DR7 bits that read as 0: RTM (11, no TSX for guests), 12, 14, 15.
const DR7_ZEROS: u64 = 0xd800;
/// DR7.GD: general detect, would make the guest's own DR accesses trap.
const DR7_GD: u64 = 1 << 13;
/// DR7 local and global enables of the four breakpoints.
const DR7_ENABLES: u64 = 0xff;
/// RFLAGS.TF.
const RFLAGS_TF: u64 = 1 << 8;

/// The architectural register behind `reg`: DR4/DR5 are DR6/DR7 (CR4.DE is clear).
fn index(reg: u64) -> Result<usize, Errno> {
    match reg {
        0..=3 | 6 | 7 => Ok(reg as usize),
        4 | 5 => Ok(reg as usize + 2),
        _ => Err(Errno::ENODEV),
    }
}

/// True if any enabled slot of `dr7` is an I/O breakpoint (R/W = 10b).
fn has_io_breakpoint(dr7: u64) -> bool {
    dr7 & DR7_ENABLES != 0 && (0..4).any(|i| (dr7 >> (16 + 4 * i)) & 3 == 2)
}

/// Sets debug register `reg` of the running vCPU `v` (also loads the hardware register).
pub fn set(v: &mut Vcpu, reg: u64, value: u64) -> Result<(), Errno> {
    let i = index(reg)?;
    let value = checked(reg, value)?;
    v.debugreg[i] = value;
    // SAFETY: checked above: guest addresses only, no GD, no I/O breakpoints.
    unsafe { cpu::write_dr(i as u8, value) };
    Ok(())
}

/// The value debug register `reg` gets for `value` (reserved bits forced), or why not.
pub fn checked(reg: u64, value: u64) -> Result<u64, Errno> {
    Ok(match index(reg)? {
        0..=3 if !guest::is_guest_range(value, 1) => return Err(Errno::EPERM),
        0..=3 => value,
        _ if value >> 32 != 0 => return Err(Errno::EINVAL),
        6 => (value | DR6_DEFAULT) & !DR6_ZEROS,
        _ => {
            let value = (value | DR7_DEFAULT) & !DR7_ZEROS;
            if value & DR7_GD != 0 || has_io_breakpoint(value) {
                return Err(Errno::EPERM);
            }
            value
        }
    })
}

/// Reads debug register `reg` of `v`.
pub fn get(v: &Vcpu, reg: u64) -> Result<u64, Errno> {
    Ok(v.debugreg[index(reg)?])
}

/// A #DB raised by guest code: folds the hardware DR6 into the vCPU's (sticky status bits
/// accumulate, active-low bits clear) and resets the hardware register. The caller bounces it.
pub fn guest_trap(v: &mut Vcpu) {
    let dr6 = cpu::read_dr(6);
    // SAFETY: DR6 is a status register; writing its reset value has no other effect.
    unsafe { cpu::write_dr(6, DR6_DEFAULT) };
    v.debugreg[6] = (v.debugreg[6] | (dr6 & !DR6_DEFAULT)) & (dr6 | !DR6_DEFAULT);
}

/// A #DB raised in Hestia: a guest watchpoint on memory Hestia touched for the guest, or one
/// that a MOV SS / POP SS deferred to the first instruction of an entry path (XSA-260). It is
/// ignored and not reported to the guest, as Xen 4.17 does; TF is cleared should it ever be set
/// in ring 0. An instruction breakpoint cannot match Hestia's code (guests may only name guest
/// addresses), but one that did would fire again at once: then every breakpoint is disabled,
/// as in Xen, rather than livelock.
pub fn hypervisor_trap(f: &mut TrapFrame) {
    let dr6 = cpu::read_dr(6);
    // SAFETY: as in `guest_trap`.
    unsafe { cpu::write_dr(6, DR6_DEFAULT) };
    if f.rflags & RFLAGS_TF != 0 {
        crate::gwarn!(
            crate::pv::current(),
            "trap: single step in Hestia at {:#x}, TF cleared",
            f.rip
        );
        f.rflags &= !RFLAGS_TF;
    }
    let dr7 = cpu::read_dr(7);
    let fault = (0..4).any(|i| {
        dr6 & (1 << i) != 0 && dr7 & (3 << (2 * i)) != 0 && (dr7 >> (16 + 4 * i)) & 3 == 0
    });
    if fault {
        crate::gwarn!(
            crate::pv::current(),
            "trap: instruction breakpoint in Hestia at {:#x}, DR7 cleared",
            f.rip
        );
        // SAFETY: disabling every breakpoint has no effect beyond debug exceptions.
        unsafe { cpu::write_dr(7, DR7_DEFAULT) };
    }
    crate::gdebug!(
        crate::pv::current(),
        "trap: guest watchpoint hit in Hestia at {:#x} (DR6 {dr6:#x}), ignored",
        f.rip
    );
}
