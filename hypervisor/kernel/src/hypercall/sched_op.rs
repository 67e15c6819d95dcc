//! `sched_op` (hypercall 29): `yield` lets other vCPUs run first; `block` takes the vCPU off
//! its CPU until an event arrives; `poll` until one of its ports is pending or the timeout
//! passes (each wake-up issues the call again, which returns once a port is pending or the time
//! is up, so a wake-up for another reason is not reported as one); `shutdown` stops the domain
//! with its reason (dom0: Hestia then stops the machine); `remote_shutdown` is the same for
//! another domain, asked by the control domain.

use core::sync::atomic::Ordering;

use hestia_core::ids::Port;
use xen_abi::errno::Errno;
use xen_abi::sched::{SchedRemoteShutdown, SchedShutdown, cmd};

use zerocopy::IntoBytes;

use super::Caller;
use crate::arch::x86_64::tsc;
use crate::mm::guest;
use crate::pv::events;
use crate::pv::shared::LoadedVcpuInfo;
use crate::sched;
use hestia_core::policy::{self, Action};

/// Most ports `SCHEDOP_poll` accepts.
const MAX_POLL_PORTS: u32 = 128;

pub(super) fn do_sched_op(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let d = c.domain();
    match a[0] as u32 {
        cmd::YIELD => {
            sched::yield_current();
            Ok(0)
        }
        cmd::BLOCK => {
            // Enables events, then blocks unless one is pending (Linux's idle relies on both).
            // The caller is the vCPU loaded on this CPU.
            if let Some(info) = LoadedVcpuInfo::here() {
                info.set_upcall_mask(false);
            }
            let id = c.vcpu_id();
            sched::block_current(false, || d.shared().upcall_pending(id));
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
            let list = list[..nr as usize].iter().map(|&p| Port::unvalidated(p));
            let me = crate::pv::current_ref().ok_or(Errno::EINVAL)?;
            let done = || {
                events::any_pending(d, list.clone())
                    || (timeout != 0 && tsc::uptime_ns() >= timeout)
            };
            // Xen checks every port before it blocks: -EINVAL for one that is not usable
            // (never another port's bit), 0 at once for a pending one.
            let ready = events::poll_ports(d, list.clone());
            let expired = timeout != 0 && tsc::uptime_ns() >= timeout;
            let mut v = c.vcpu().lock();
            if ready != Ok(false) || expired {
                events::set_poll_timeout(&me, &mut v, 0);
                return ready.map(|_| 0);
            }
            events::set_poll_timeout(&me, &mut v, timeout);
            drop(v);
            if sched::block_current(true, done) {
                // Issued again when woken: it then returns, or blocks again.
                return Err(Errno::ERESTART);
            }
            events::set_poll_timeout(&me, &mut c.vcpu().lock(), 0);
            Ok(0)
        }
        cmd::SHUTDOWN => {
            let s: SchedShutdown = guest::read_obj(a[1])?;
            // Any reason, cut to a byte, as Xen's `domain_shutdown(d, (u8)reason)`: an unknown
            // one stops the domain too (dom0's then reboots the machine, as Xen).
            if d.mark_stopped() {
                d.shutdown_reason
                    .store(u32::from(s.reason as u8), Ordering::Release);
            }
            Ok(0)
        }
        cmd::REMOTE_SHUTDOWN => {
            let s: SchedRemoteShutdown = guest::read_obj(a[1])?;
            // By id only: DOMID_SELF names no domain here (Xen's `rcu_lock_domain_by_id`).
            if s.domain_id == xen_abi::xen::DOMID_SELF {
                return Err(Errno::ESRCH);
            }
            let target = crate::domain::lookup(d, s.domain_id)?;
            policy::check(d.rights, Action::ShutdownOther)?;
            crate::pv::shutdown(&target, u32::from(s.reason as u8));
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
