//! `sched_op` (hypercall 29). With one vCPU per domain and no scheduler yet, `yield` returns at
//! once; `shutdown` stops the domain with its reason (dom0: Hestia then stops the machine).

use core::sync::atomic::Ordering;

use xen_abi::errno::Errno;
use xen_abi::sched::{SchedShutdown, cmd, reason};

use crate::mm::guest;
use crate::pv::domain::Domain;

pub(super) fn do_sched_op(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    match a[0] as u32 {
        cmd::YIELD => Ok(0),
        cmd::SHUTDOWN => {
            let s: SchedShutdown = guest::read_obj(a[1])?;
            if s.reason > reason::SOFT_RESET {
                return Err(Errno::EINVAL);
            }
            if d.kill() {
                d.shutdown_reason.store(s.reason, Ordering::Release);
            }
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
