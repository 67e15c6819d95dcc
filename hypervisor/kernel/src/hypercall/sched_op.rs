//! `sched_op` (hypercall 29). With each vCPU on its own CPU and no scheduler yet, `yield`
//! returns at once; `block` and `poll` halt the CPU until an event (or the poll timeout) arrives;
//! `shutdown` stops the domain with its reason (dom0: Hestia then stops the machine).

use core::sync::atomic::Ordering;

use xen_abi::errno::Errno;
use xen_abi::sched::{SchedShutdown, cmd, reason};

use zerocopy::IntoBytes;

use crate::arch::x86_64::tsc;
use crate::mm::guest;
use crate::pv::domain::{Domain, this_vcpu_id};
use crate::pv::events;

/// Most ports `SCHEDOP_poll` accepts.
const MAX_POLL_PORTS: u32 = 128;

pub(super) fn do_sched_op(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    match a[0] as u32 {
        cmd::YIELD => Ok(0),
        cmd::BLOCK => {
            // Enables events, then waits until one is pending (Linux's idle relies on both).
            let id = this_vcpu_id();
            d.shared().set_upcall_mask(id, false);
            events::block_until(d, |d| d.shared().upcall_pending(id));
            Ok(0)
        }
        cmd::POLL => {
            let [ports, nr, timeout]: [u64; 3] = guest::read_obj(a[1])?;
            let nr = nr as u32;
            if nr > MAX_POLL_PORTS {
                return Err(Errno::EINVAL);
            }
            let mut list = [0u32; MAX_POLL_PORTS as usize];
            guest::GuestRange::new(ports, nr as usize * 4)?
                .read(list[..nr as usize].as_mut_bytes())?;
            let list = &list[..nr as usize];
            // The interrupt that ends a halt may be the timeout's own.
            let wake =
                (timeout != 0).then(|| crate::timer::add(timeout, crate::timer::TimerFn(|_| None)));
            events::block_until(d, |d| {
                events::any_pending(d, list) || (timeout != 0 && tsc::uptime_ns() >= timeout)
            });
            if let Some(id) = wake {
                crate::timer::cancel(id);
            }
            Ok(0)
        }
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
