//! A PV vCPU's segment bases: FS, and the kernel/user GS bases that SWAPGS would exchange on
//! real hardware (Hestia exchanges them when the guest changes mode). Set by `set_segment_base`
//! (hypercall 25, decoded in `hypercall::segment`) and by the guest's WRMSR of the base MSRs
//! (`super::msr`). `shared/xen-abi.md` 4.3.

use hestia_core::vaddr::canonical;
use xen_abi::errno::Errno;

use super::domain::Vcpu;
use crate::arch::x86_64::{cpu, uaccess};

/// `set_segment_base`'s `which` values (`SEGBASE_*` of Xen's `public/arch-x86/xen-x86_64.h`).
const SEGBASE_FS: u64 = 0;
const SEGBASE_GS_USER: u64 = 1;
const SEGBASE_GS_KERNEL: u64 = 2;
/// Loads the user %gs selector rather than setting a base ([`load_user_gs`]).
pub const SEGBASE_GS_USER_SEL: u64 = 3;

/// Sets one of the guest's segment bases of vCPU `v` (also used by the WRMSR emulation).
pub fn set_base_locked(v: &mut Vcpu, which: u64, base: u64) -> Result<u64, Errno> {
    if !canonical(base) {
        return Err(Errno::EINVAL);
    }
    match which {
        SEGBASE_FS => cpu::set_fs_base(base),
        SEGBASE_GS_USER if v.kernel_mode => v.gs_base_user = base,
        SEGBASE_GS_KERNEL if !v.kernel_mode => v.gs_base_kernel = base,
        // The base of the mode the guest is in now is the live one.
        SEGBASE_GS_USER | SEGBASE_GS_KERNEL => cpu::set_kernel_gs_base(base),
        _ => return Err(Errno::EINVAL),
    }
    Ok(0)
}

/// `SEGBASE_GS_USER_SEL`: loads the user %gs selector (RPL forced to 3) from the guest's GDT;
/// its base becomes the user GS base. A selector the descriptor table refuses loads the null
/// selector instead and the call still succeeds, as in Xen (Linux BUG()s on failure; callers
/// that care re-read %gs).
pub fn load_user_gs(v: &mut Vcpu, sel: u16) {
    let sel = if sel > 3 { sel | 3 } else { sel };
    let (_, base) = uaccess::load_guest_gs(sel);
    if v.kernel_mode {
        v.gs_base_user = base;
    } else {
        cpu::set_kernel_gs_base(base);
    }
}
