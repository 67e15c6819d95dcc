//! `domctl` (36): the toolstack's control of domains, at Xen 4.17's interface version 0x15
//! (`xen/common/domctl.c`, `xen/arch/x86/domctl.c`; layouts in `xen_abi::domctl`).
//!
//! Every call carries one [`XenDomctl`]: it is read once, its version checked (`EACCES` for
//! any other, as Xen), the domain its header names looked up (no `DOMID_SELF` here: Xen's
//! `rcu_lock_domain_by_id` knows none, so it is `ESRCH` like any missing domain, except for
//! getdomaininfo, which answers the first domain from that id on), the caller's right checked
//! by `crate::policy` (the control domain; getdomaininfo also the xenstore domain), and the
//! sub-op run under one global lock, as Xen's `domctl_lock`: a caller that finds it busy gets a
//! continuation and comes back. A sub-op with OUT fields sets [`Call::copyback`] and the whole
//! structure is written back, whatever its result, as Xen does. Sub-ops Hestia does not have
//! answer `ENOSYS`, Xen's answer for commands its build leaves out. Zeroing a long
//! `xenctl_bitmap` stops part way and resumes by continuation
//! ([`super::continuation::Resume`]), releasing the lock in between.
//!
//! One file per family: [`info`] (what `xl list` and `xl vcpu-list` read), [`sched`] (credit
//! parameters and affinity), [`build`] (what the domain builder needs besides memory),
//! [`save`] (what save and restore need besides memory and the vCPU context).

mod build;
mod info;
mod lifecycle;
mod save;
mod sched;
mod vcpu_context;

pub(crate) use info::domain_info;
pub(crate) use sched::write_cpumap;

use hestia_core::ids::VcpuId;
use xen_abi::domctl::{XEN_DOMCTL_INTERFACE_VERSION, XenDomctl, cmd};
use xen_abi::errno::Errno;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::Caller;
use super::continuation::{Resume, Stop};
use crate::domain::DomainRef;
use crate::pv::domain::Domain;
use hestia_core::policy::{self, Action};

/// Xen's `domctl_lock`: one domctl at a time, machine-wide.
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// One domctl being served.
pub(crate) struct Call<'a> {
    /// The calling domain.
    pub caller: &'a Domain,
    /// The vCPU of the caller that issued the call.
    pub vcpu: VcpuId,
    /// The domain the header names (`None` only for createdomain).
    pub target: Option<DomainRef>,
    /// The structure as the caller passed it; sub-ops update it in place for the copy back.
    pub op: XenDomctl,
    /// Write [`Call::op`] back to the caller when the sub-op is done (Xen's `copyback`).
    pub copyback: bool,
    /// The sub-op's long work, resumable.
    pub work: Resume<'a>,
}

impl Call<'_> {
    /// The domain the header names; `ESRCH` for createdomain, which names none.
    pub fn target(&self) -> Result<&DomainRef, Errno> {
        self.target.as_ref().ok_or(Errno::ESRCH)
    }

    /// The sub-op's structure, read from the start of the union.
    pub fn arg<T: FromBytes>(&self) -> T {
        super::union::read(&self.op.u)
    }

    /// Stores the sub-op's structure at the start of the union and asks for the copy back.
    pub fn set_arg<T: IntoBytes + Immutable>(&mut self, v: &T) {
        super::union::write(&mut self.op.u, v);
        self.copyback = true;
    }

    /// The target, which must not be the caller itself (Xen refuses the sub-ops that pause
    /// the target with `EINVAL` when it would pause the caller).
    pub fn other_target(&self) -> Result<&DomainRef, Errno> {
        let d = self.target()?;
        if core::ptr::eq(&**d, self.caller) {
            return Err(Errno::EINVAL);
        }
        Ok(d)
    }
}

/// `domctl(u_domctl)`.
pub(super) fn do_domctl(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Stop> {
    let caller = c.domain();
    let addr = a[0];
    let op: XenDomctl = crate::mm::guest::read_obj(addr)?;
    if op.interface_version != XEN_DOMCTL_INTERFACE_VERSION {
        return Err(Errno::EACCES.into());
    }
    if op.cmd == cmd::GETDOMAININFO {
        // Not under the lock; the xenstore domain may ask too.
        let mut call = Call {
            caller,
            vcpu: c.vcpu_id(),
            target: None,
            op,
            copyback: false,
            work: Resume::new(caller, *a),
        };
        let r = info::getdomaininfo(&mut call);
        return finish(addr, &call, r);
    }
    let target = if op.cmd == cmd::CREATEDOMAIN {
        None
    } else {
        Some(crate::domain::lookup_id(op.domain)?)
    };
    policy::check(caller.rights, Action::Domctl)?;
    let Some(_held) = LOCK.try_lock() else {
        return Err(Errno::ERESTART.into());
    };
    let mut call = Call {
        caller,
        vcpu: c.vcpu_id(),
        target,
        op,
        copyback: false,
        work: Resume::new(caller, *a),
    };
    let r = match op.cmd {
        cmd::CREATEDOMAIN => lifecycle::createdomain(&mut call),
        cmd::PAUSEDOMAIN => lifecycle::pausedomain(&mut call),
        cmd::UNPAUSEDOMAIN => lifecycle::unpausedomain(&mut call),
        cmd::DESTROYDOMAIN => lifecycle::destroydomain(&mut call),
        cmd::RESUMEDOMAIN => lifecycle::resumedomain(&mut call),
        cmd::MAX_VCPUS => lifecycle::max_vcpus(&mut call),
        cmd::GETVCPUINFO => info::getvcpuinfo(&mut call),
        cmd::SETDOMAINHANDLE => info::setdomainhandle(&mut call),
        cmd::MAX_MEM => info::max_mem(&mut call),
        cmd::SET_ADDRESS_SIZE => info::set_address_size(&mut call),
        cmd::GET_ADDRESS_SIZE => info::get_address_size(&mut call),
        cmd::HYPERCALL_INIT => build::hypercall_init(&mut call),
        cmd::SETTSCINFO => build::settscinfo(&mut call),
        cmd::GETTSCINFO => build::gettscinfo(&mut call),
        cmd::SETNODEAFFINITY => sched::setnodeaffinity(&mut call),
        cmd::GETNODEAFFINITY => sched::getnodeaffinity(&mut call),
        cmd::SCHEDULER_OP => sched::scheduler_op(&mut call),
        cmd::SETVCPUAFFINITY | cmd::GETVCPUAFFINITY => sched::vcpuaffinity(&mut call),
        cmd::GET_CPU_POLICY => super::cpu_policy::get_cpu_policy(&mut call),
        cmd::SET_CPU_POLICY => super::cpu_policy::set_cpu_policy(&mut call),
        cmd::SETVCPUCONTEXT => vcpu_context::setvcpucontext(&mut call),
        cmd::GETVCPUCONTEXT => vcpu_context::getvcpucontext(&mut call),
        cmd::GETPAGEFRAMEINFO3 => save::getpageframeinfo3(&mut call),
        cmd::GET_EXT_VCPUCONTEXT => save::ext_vcpucontext(&mut call, false),
        cmd::SET_EXT_VCPUCONTEXT => save::ext_vcpucontext(&mut call, true),
        cmd::GETVCPUEXTSTATE => save::getvcpuextstate(&mut call),
        cmd::SETVCPUEXTSTATE => save::setvcpuextstate(&mut call),
        cmd::GET_VCPU_MSRS => save::vcpu_msrs(&mut call, false),
        cmd::SET_VCPU_MSRS => save::vcpu_msrs(&mut call, true),
        cmd::SHADOW_OP => save::shadow_op(&mut call),
        _ => Err(Errno::ENOSYS),
    };
    finish(addr, &call, r)
}

/// Writes the structure back if the sub-op asked for it (a failed write is `EFAULT`, as Xen),
/// or has the call issued again if it stopped part way.
fn finish(addr: u64, call: &Call<'_>, r: Result<u64, Errno>) -> Result<u64, Stop> {
    if call.copyback && r != Err(Errno::ERESTART) {
        crate::mm::guest::write_obj(addr, &call.op)?;
    }
    call.work.finish(addr, r)
}
