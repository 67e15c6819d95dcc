//! `XEN_DOMCTL_setvcpucontext` and `XEN_DOMCTL_getvcpucontext`: the toolstack sets a new
//! domain's vCPU state (libxenguest's builder, `xc_vcpu_setcontext` for vCPU 0 of a PV
//! domain) and reads it back (`xl vcpu-list`'s neighbours, save and debuggers). The context is
//! a 64-bit PV `vcpu_guest_context`, checked and applied by the same code as the guest's own
//! `VCPUOP_initialise` (`crate::pv::vcpus::set_info_guest`, Xen's `arch_set_info_guest`) and
//! read by `get_info_guest` (Xen's `arch_get_info_guest`). xen/common/domctl.c, 4.17.
//!
//! Xen pauses the target domain around a set (`domain_pause`) and the vCPU around a get
//! (`vcpu_pause`), so neither meets a vCPU in the middle of running. Hestia's pause counts are
//! not there yet: a set on a vCPU that is up is refused (`EBUSY`) until they are, and a get
//! reads the state the vCPU last saved.

use core::sync::atomic::Ordering;

use xen_abi::domctl::VcpuContext;
use xen_abi::errno::Errno;
use xen_abi::vcpu::{VcpuGuestContext, vgcf};

use super::Call;
use crate::hypercall::misc::VALID_ASSISTS;
use crate::mm::guest;
use crate::pv::domain::this_vcpu_id;
use crate::pv::vcpus;

/// `XEN_DOMCTL_setvcpucontext`: the target's vCPU `vcpu` takes the context at `ctxt` (in the
/// caller's memory). As Xen: the caller's own domain, a vCPU it does not have -EINVAL; the
/// context unreadable -EFAULT; vCPU 0's `vm_assist` with a bit no assist has -EINVAL; then
/// `arch_set_info_guest`'s checks; `VGCF_online` brings the vCPU up (it runs once the domain
/// is unpaused). A null `ctxt` (Xen's `vcpu_reset`) is not supported: -EOPNOTSUPP.
pub(super) fn setvcpucontext(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: VcpuContext = c.arg();
    let d = c.other_target()?;
    let slot = d.vcpus.get(op.vcpu as usize).ok_or(Errno::EINVAL)?;
    if op.ctxt == 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let ctx: VcpuGuestContext = guest::read_obj(op.ctxt)?;
    if op.vcpu == 0 && ctx.vm_assist & !VALID_ASSISTS != 0 {
        return Err(Errno::EINVAL);
    }
    // TODO(lifecycle): domain_pause(d) here and domain_unpause(d) once done, as Xen; until
    // then a vCPU that is up may be running, and is refused.
    let mut v = slot.lock();
    if v.up {
        return Err(Errno::EBUSY);
    }
    vcpus::set_info_guest(c.caller, d, &mut v, &ctx)?;
    if op.vcpu == 0 {
        d.vm_assist.store(ctx.vm_assist, Ordering::Release);
    }
    if ctx.flags & vgcf::ONLINE != 0 {
        // TODO(lifecycle): relies on the domain's pause count keeping it off every CPU until
        // the toolstack unpauses it.
        crate::sched::vcpu_up(d, op.vcpu)?;
        v.up = true;
    }
    Ok(0)
}

/// `XEN_DOMCTL_getvcpucontext`: writes the target's vCPU `vcpu`'s context to `ctxt` (in the
/// caller's memory) and the structure back. As Xen: a vCPU it does not have, or the calling
/// vCPU itself, -EINVAL; one never initialised -ENODATA; the buffer unwritable -EFAULT.
pub(super) fn getvcpucontext(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: VcpuContext = c.arg();
    let d = c.target()?;
    let slot = d.vcpus.get(op.vcpu as usize).ok_or(Errno::EINVAL)?;
    if core::ptr::eq(&**d, c.caller) && op.vcpu == this_vcpu_id() {
        return Err(Errno::EINVAL);
    }
    // TODO(lifecycle): vcpu_pause(v) around the read, as Xen.
    let ctx = {
        let v = slot.lock();
        if !v.initialised {
            return Err(Errno::ENODATA);
        }
        vcpus::get_info_guest(d, &v)
    };
    c.copyback = true;
    guest::write_obj(op.ctxt, &ctx).map(|()| 0)
}
