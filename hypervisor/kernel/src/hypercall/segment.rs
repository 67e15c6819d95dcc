//! `set_segment_base` (hypercall 25): FS base, and the kernel/user GS bases that SWAPGS would
//! exchange on real hardware (Hestia exchanges them when the guest changes mode).
//! `shared/xen-abi.md` 4.3.

use xen_abi::errno::Errno;

use crate::arch::x86_64::{cpu, uaccess};
use crate::pv::domain::{Domain, Vcpu};

const SEGBASE_FS: u64 = 0;
const SEGBASE_GS_USER: u64 = 1;
const SEGBASE_GS_KERNEL: u64 = 2;
const SEGBASE_GS_USER_SEL: u64 = 3;

/// True for a canonical 48-bit address.
pub(crate) fn canonical(a: u64) -> bool {
    let top = a >> 47;
    top == 0 || top == 0x1_ffff
}

/// Sets one of the guest's segment bases of vCPU `v` (also used by the WRMSR emulation).
pub(crate) fn set_base_locked(v: &mut Vcpu, which: u64, base: u64) -> Result<u64, Errno> {
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
fn load_user_gs(v: &mut Vcpu, sel: u16) {
    let sel = if sel > 3 { sel | 3 } else { sel };
    let (_, base) = uaccess::load_guest_gs(sel);
    if v.kernel_mode {
        v.gs_base_user = base;
    } else {
        cpu::set_kernel_gs_base(base);
    }
}

pub(super) fn do_set_segment_base(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    let mut v = d.this_vcpu().lock();
    if a[0] == SEGBASE_GS_USER_SEL {
        load_user_gs(&mut v, a[1] as u16);
        return Ok(0);
    }
    set_base_locked(&mut v, a[0], a[1])
}
