//! `XEN_DOMCTL_setvcpucontext` and `XEN_DOMCTL_getvcpucontext`: the toolstack sets a new
//! domain's vCPU state (libxenguest's builder, `xc_vcpu_setcontext` for vCPU 0 of a PV
//! domain) and reads it back (`xl vcpu-list`'s neighbours, save and debuggers). The context is
//! a 64-bit PV `vcpu_guest_context`, checked and applied by the same code as the guest's own
//! `VCPUOP_initialise` (`crate::pv::vcpus::set_info_guest`, Xen's `arch_set_info_guest`) and
//! read by `get_info_guest` (Xen's `arch_get_info_guest`). xen/common/domctl.c, 4.17.
//!
//! Xen pauses the target domain around a set (`domain_pause`) and the vCPU around a get
//! (`vcpu_pause`), so neither meets a vCPU in the middle of running. Hestia pauses the target
//! domain around both (`crate::domain::life::domain_pause`: it returns once every vCPU of the
//! domain is off its CPU), except for a get of another vCPU of the caller's own domain, which
//! reads the state that vCPU last saved (Hestia has no single-vCPU pause).

use core::sync::atomic::Ordering;
use hestia_core::ids::VcpuId;

use xen_abi::domctl::VcpuContext;
use xen_abi::errno::Errno;
use xen_abi::vcpu::{VcpuGuestContext, vgcf};

use super::Call;
use crate::domain::life;
use crate::hypercall::misc::VALID_ASSISTS;
use crate::mm::guest;
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
    life::domain_pause(d)?;
    let r = set_paused(c.caller, d, slot, op.vcpu, &ctx);
    life::domain_unpause(d);
    r.map(|()| 0)
}

/// The set, with `d` paused: a vCPU brought up by `VGCF_online` runs once the domain's pauses
/// are all gone (a new domain's first unpause by the toolstack).
fn set_paused(
    caller: &crate::pv::domain::Domain,
    d: &crate::pv::domain::Domain,
    slot: &spin::Mutex<crate::pv::domain::Vcpu>,
    vcpu: u32,
    ctx: &VcpuGuestContext,
) -> Result<(), Errno> {
    let mut v = slot.lock();
    vcpus::set_info_guest(caller, d, &mut v, ctx)?;
    if vcpu == 0 {
        d.vm_assist.store(ctx.vm_assist, Ordering::Release);
    }
    if ctx.flags & vgcf::ONLINE != 0 && !v.up {
        crate::sched::vcpu_up(&d.sched, VcpuId::unvalidated(vcpu))?;
        v.up = true;
    }
    Ok(())
}

/// `XEN_DOMCTL_getvcpucontext`: writes the target's vCPU `vcpu`'s context to `ctxt` (in the
/// caller's memory) and the structure back. As Xen: a vCPU it does not have, or the calling
/// vCPU itself, -EINVAL; one never initialised -ENODATA; the buffer unwritable -EFAULT.
pub(super) fn getvcpucontext(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: VcpuContext = c.arg();
    let d = c.target()?;
    let slot = d.vcpus.get(op.vcpu as usize).ok_or(Errno::EINVAL)?;
    if core::ptr::eq(&**d, c.caller) && op.vcpu == c.vcpu.raw() {
        return Err(Errno::EINVAL);
    }
    let own = core::ptr::eq(&**d, c.caller);
    if !own {
        life::domain_pause(d)?;
    }
    let ctx = {
        let v = slot.lock();
        v.initialised.then(|| vcpus::get_info_guest(d, &v))
    };
    if !own {
        life::domain_unpause(d);
    }
    let ctx = ctx.ok_or(Errno::ENODATA)?;
    c.copyback = true;
    guest::write_obj(op.ctxt, &ctx).map(|()| 0)
}
