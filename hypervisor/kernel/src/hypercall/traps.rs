//! Trap table and callbacks: `set_trap_table` (0), `stack_switch` (3), `set_callbacks` (4) and
//! `callback_op` (30). `shared/xen-abi.md` 4.5, 4.6; `public/callback.h`.
//!
//! Addresses are checked for canonical form only, as Xen 4.17 does for 64-bit PV guests
//! (`register_guest_callback` and `register_guest_nmi_callback` in xen/arch/x86/pv/callback.c):
//! a trap handler or callback inside Hestia's range is accepted and recorded. It is harmless to
//! everyone but the guest: Hestia enters it in ring 3, where the hypervisor's pages are
//! supervisor-only, so the guest faults on its own entry.

use hestia_core::vaddr::canonical;
use xen_abi::callback::{
    CALLBACKF_MASK_EVENTS, CallbackRegister, CallbackUnregister, TrapInfo, cmd, kind,
};
use xen_abi::errno::Errno;

use super::Caller;
use crate::mm::guest;
use crate::pv::domain::{Callback, TrapEntry};

/// Most entries read per call: a table is at most 256 entries plus its terminator.
const MAX_ENTRIES: u64 = 257;

pub(super) fn do_set_trap_table(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let mut v = c.vcpu().lock();
    if a[0] == 0 {
        v.traps = [TrapEntry::default(); 256];
        return Ok(0);
    }
    for i in 0..MAX_ENTRIES {
        let t: TrapInfo = guest::read_obj(a[0].checked_add(i * 16).ok_or(Errno::EFAULT)?)?;
        if t.address == 0 {
            return Ok(0);
        }
        if !canonical(t.address) {
            return Err(Errno::EINVAL);
        }
        v.traps[usize::from(t.vector)] = TrapEntry {
            address: t.address,
            flags: t.flags,
        };
    }
    Err(Errno::EINVAL)
}

pub(super) fn do_stack_switch(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let mut v = c.vcpu().lock();
    v.kernel_ss = a[0] | 3;
    v.kernel_sp = a[1];
    Ok(0)
}

fn set(c: Caller<'_>, which: u16, address: u64, mask: bool) -> Result<(), Errno> {
    // Canonical form only, as Xen (see the module comment).
    if !canonical(address) {
        return Err(Errno::EINVAL);
    }
    let mut v = c.vcpu().lock();
    let slot = match which {
        kind::EVENT => &mut v.event_callback,
        kind::FAILSAFE => &mut v.failsafe_callback,
        kind::SYSCALL => &mut v.syscall_callback,
        kind::NMI => &mut v.nmi_callback,
        // 32-bit compatibility entries: Xen records them for 64-bit guests too; Hestia
        // accepts them and records them nowhere, as no 32-bit user code can run yet.
        kind::SYSENTER | kind::SYSCALL32 => return Ok(()),
        _ => return Err(Errno::ENOSYS),
    };
    // Event and NMI callbacks always mask events (xen-abi.md 4.6).
    *slot = Callback {
        address,
        mask_events: mask || matches!(which, kind::EVENT | kind::NMI),
    };
    Ok(())
}

pub(super) fn do_set_callbacks(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    set(c, kind::EVENT, a[0], false)?;
    set(c, kind::FAILSAFE, a[1], false)?;
    set(c, kind::SYSCALL, a[2], false)?;
    Ok(0)
}

pub(super) fn do_callback_op(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    match a[0] as u32 {
        cmd::REGISTER => {
            let r: CallbackRegister = guest::read_obj(a[1])?;
            set(c, r.kind, r.address, r.flags & CALLBACKF_MASK_EVENTS != 0).map(|()| 0)
        }
        cmd::UNREGISTER => {
            let u: CallbackUnregister = guest::read_obj(a[1])?;
            match u.kind {
                kind::NMI => set(c, kind::NMI, 0, false).map(|()| 0),
                kind::EVENT | kind::FAILSAFE | kind::SYSCALL | kind::SYSENTER | kind::SYSCALL32 => {
                    Err(Errno::EINVAL)
                }
                _ => Err(Errno::ENOSYS),
            }
        }
        _ => Err(Errno::ENOSYS),
    }
}
