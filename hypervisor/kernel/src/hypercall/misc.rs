//! Small hypercalls: `fpu_taskswitch` (5), `set_debugreg` (8), `get_debugreg` (9) and
//! `vm_assist` (21). `shared/xen-abi.md` 4.4, 5.7.

use core::sync::atomic::Ordering;

use xen_abi::errno::Errno;

use super::Caller;
use crate::arch::x86_64::cpu;
use crate::pv::debugreg;

const VMASST_CMD_ENABLE: u64 = 0;
const VMASST_CMD_DISABLE: u64 = 1;
/// Assists a 64-bit PV guest may turn on: 4gb_segments (0), 4gb_segments_notify (1),
/// writable_pagetables (2), pae_extended_cr3 (3), architectural_iopl (4), runstate_update_flag
/// (5), m2p_strict (32). Hestia records them; the ones that change behaviour are listed in
/// docs/abi-status.md as they gain effect.
pub(crate) const VALID_ASSISTS: u64 = 0b11_1111 | (1 << 32);

/// `fpu_taskswitch(set)`: sets or clears TS; a later FPU use raises #NM for the guest.
pub(super) fn do_fpu_taskswitch(_c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    if a[0] != 0 {
        cpu::set_ts();
    } else {
        cpu::clear_ts();
    }
    Ok(0)
}

/// `vm_assist(cmd, type)`.
pub(super) fn do_vm_assist(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let d = c.domain();
    let (cmd, kind) = (a[0], a[1]);
    if kind >= 64 || VALID_ASSISTS & (1 << kind) == 0 {
        return Err(Errno::EINVAL);
    }
    match cmd {
        VMASST_CMD_ENABLE => d.vm_assist.fetch_or(1 << kind, Ordering::AcqRel),
        VMASST_CMD_DISABLE => d.vm_assist.fetch_and(!(1 << kind), Ordering::AcqRel),
        _ => return Err(Errno::ENOSYS),
    };
    Ok(0)
}

/// `set_debugreg(reg, value)`.
pub(super) fn do_set_debugreg(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    debugreg::set(&mut c.vcpu().lock(), a[0], a[1]).map(|()| 0)
}

/// `get_debugreg(reg)`: the value is the return value.
pub(super) fn do_get_debugreg(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    debugreg::get(&c.vcpu().lock(), a[0])
}
