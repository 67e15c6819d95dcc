//! `set_gdt` (2) and `update_descriptor` (10): decode and check the request; the tables
//! themselves are `pv::descriptor`'s. `shared/xen-abi.md` 4.2.

use alloc::vec::Vec;
use hestia_core::descriptor;
use xen_abi::errno::Errno;

use super::Caller;
use crate::arch::x86_64::gdt::GUEST_ENTRIES;
use crate::mm::guest;
use crate::pv::descriptor::{set_gdt, update_descriptor};

pub(super) fn do_set_gdt(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let d = c.domain();
    let (list, entries) = (a[0], a[1] as usize);
    if entries > GUEST_ENTRIES {
        return Err(Errno::EINVAL);
    }
    let nr = entries.div_ceil(512);
    let mut frames = Vec::with_capacity(nr);
    for i in 0..nr as u64 {
        frames.push(hestia_core::ids::Mfn::new(guest::read_obj::<u64>(
            list.checked_add(i * 8).ok_or(Errno::EFAULT)?,
        )?));
    }
    set_gdt(d, frames, entries).map(|()| 0)
}

pub(super) fn do_update_descriptor(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let d = c.domain();
    let (maddr, desc) = (a[0], a[1]);
    if !maddr.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    let fixed = descriptor::check(desc).ok_or(Errno::EINVAL)?;
    update_descriptor(
        d,
        hestia_core::ids::Mfn::new(maddr >> 12),
        ((maddr & 0xfff) / 8) as usize,
        fixed,
    )
    .map(|()| 0)
}
