//! `set_segment_base` (hypercall 25): FS base, and the kernel/user GS bases that SWAPGS would
//! exchange on real hardware (Hestia exchanges them when the guest changes mode).
//! `shared/xen-abi.md` 4.3.

use xen_abi::errno::Errno;

use crate::arch::x86_64::cpu;
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
        // Loading a null user %gs selector: its base becomes 0 (other selectors need the
        // guest's GDT, which arrives with set_gdt).
        SEGBASE_GS_USER_SEL if base & 0xffff == 0 => v.gs_base_user = 0,
        _ => return Err(Errno::EINVAL),
    }
    Ok(0)
}

pub(super) fn do_set_segment_base(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    set_base_locked(&mut d.vcpus[0].lock(), a[0], a[1])
}
