//! `set_segment_base` (hypercall 25): decodes the request; the bases themselves are
//! `pv::segment`'s. `shared/xen-abi.md` 4.3.

use xen_abi::errno::Errno;

use super::Caller;
use crate::pv::segment::{SEGBASE_GS_USER_SEL, load_user_gs, set_base_locked};

pub(super) fn do_set_segment_base(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let mut v = c.vcpu().lock();
    if a[0] == SEGBASE_GS_USER_SEL {
        load_user_gs(&mut v, a[1] as u16);
        return Ok(0);
    }
    set_base_locked(&mut v, a[0], a[1])
}
