//! What the toolstack reads of a domain and the few plain settings it writes:
//! `getdomaininfo` (also each entry of `XEN_SYSCTL_getdomaininfolist`), `getvcpuinfo`,
//! `setdomainhandle`, `max_mem`, `set/get_address_size` (`xen/common/domctl.c`,
//! `xen/arch/x86/domctl.c`).

use core::sync::atomic::Ordering;
use hestia_core::ids::VcpuId;

use xen_abi::domctl::{
    AddressSize, GetDomainInfo, GetVcpuInfo, MaxMem, XEN_INVALID_MAX_VCPU_ID, dominf,
};
use xen_abi::errno::Errno;
use xen_abi::xen::DOMID_FIRST_RESERVED;

use super::Call;
use crate::pv::domain::Domain;
use crate::sched::control;
use hestia_core::policy::{self, Action};

/// `XEN_DOMCTL_getdomaininfo`: the domain the header names or, if there is none, the first
/// one with a higher id (`EINVAL` for a reserved id, `ESRCH` past the last domain); the
/// header's domain becomes the one described.
pub(super) fn getdomaininfo(c: &mut Call<'_>) -> Result<u64, Errno> {
    let id = c.op.domain;
    let d = match crate::domain::lookup_id(id) {
        Ok(d) => d,
        Err(_) if id >= DOMID_FIRST_RESERVED => return Err(Errno::EINVAL),
        Err(_) => crate::domain::first_from(id).ok_or(Errno::ESRCH)?,
    };
    policy::check(c.caller.rights, Action::DomainInfo)?;
    let info = domain_info(&d);
    c.op.domain = info.domain;
    c.set_arg(&info);
    Ok(0)
}

/// `d` as `struct xen_domctl_getdomaininfo` describes it (Xen's `getdomaininfo`).
pub(crate) fn domain_info(d: &Domain) -> GetDomainInfo {
    let mut info = GetDomainInfo {
        domain: d.id.0,
        max_vcpu_id: XEN_INVALID_MAX_VCPU_ID,
        ..Default::default()
    };
    // Blocked only if every online vCPU is; running if any is.
    let mut flags = dominf::BLOCKED;
    if let Some(last) = d.vcpus.len().checked_sub(1) {
        info.max_vcpu_id = last as u32;
    }
    control::each_vcpu_info(&d.sched, |v| {
        info.cpu_time = info.cpu_time.saturating_add(v.cpu_time);
        if v.online {
            if !v.blocked {
                flags &= !dominf::BLOCKED;
            }
            if v.running {
                flags |= dominf::RUNNING;
            }
            info.nr_online_vcpus += 1;
        }
    });
    if info.nr_online_vcpus == 0 {
        flags = 0;
    }
    // The shutdown code goes in from bit 16 whole, as Xen's `unsigned int`: a domain not shut
    // down has `SHUTDOWN_CODE_INVALID` (all ones), so its bits 16-31 are all set.
    let code = match d.shutdown_code() {
        Some(code) => {
            flags |= dominf::SHUTDOWN;
            code
        }
        None => u32::MAX,
    };
    flags |= code << dominf::SHUTDOWNSHIFT;
    if d.controller_paused() {
        flags |= dominf::PAUSED;
    }
    if d.is_dying() {
        flags |= dominf::DYING;
    }
    info.flags = flags;
    info.tot_pages = d.tot_pages.load(Ordering::Acquire);
    info.max_pages = d.max_pages.load(Ordering::Acquire);
    info.outstanding_pages = crate::domain::claims::outstanding(d);
    // A PV domain's frames are machine frames: its shared_info "gfn" is the MFN.
    info.shared_info_frame = d.shared_info_mfn.raw();
    info.handle = *d.handle.lock();
    info.gpaddr_bits = crate::hypercall::memory_op::paddr_bits() as u8;
    info
}

/// `XEN_DOMCTL_getvcpuinfo`: a vCPU's state, CPU and CPU time (`EINVAL` past the domain's
/// vCPUs, `ESRCH` for one the scheduler does not know).
pub(super) fn getvcpuinfo(c: &mut Call<'_>) -> Result<u64, Errno> {
    let mut op: GetVcpuInfo = c.arg();
    let d = c.target()?;
    if op.vcpu as usize >= d.vcpus.len() {
        return Err(Errno::EINVAL);
    }
    let v = control::vcpu_info(&d.sched, VcpuId::unvalidated(op.vcpu)).ok_or(Errno::ESRCH)?;
    op.online = v.online.into();
    op.blocked = v.blocked.into();
    op.running = v.running.into();
    op.cpu_time = v.cpu_time;
    op.cpu = v.cpu;
    c.set_arg(&op);
    Ok(0)
}

/// `XEN_DOMCTL_setdomainhandle`: the domain's UUID.
pub(super) fn setdomainhandle(c: &mut Call<'_>) -> Result<u64, Errno> {
    let handle: xen_abi::domctl::DomainHandle = c.arg();
    *c.target()?.handle.lock() = handle;
    Ok(0)
}

/// `XEN_DOMCTL_max_mem`: the most memory the domain may own, in KiB (rounded down to pages).
/// It may be below what it owns: it then gets no page until it has given enough back.
pub(super) fn max_mem(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: MaxMem = c.arg();
    // Xen keeps the limit in an `unsigned int` of pages.
    let pages = (op.max_memkb >> 2).min(u64::from(u32::MAX));
    c.target()?.max_pages.store(pages, Ordering::Release);
    Ok(0)
}

/// `XEN_DOMCTL_set_address_size`: 64 is what every Hestia domain is; 32 (a compat guest) is
/// not supported (`EOPNOTSUPP`, as Xen without 32-bit PV), anything else `EINVAL`.
pub(super) fn set_address_size(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: AddressSize = c.arg();
    c.target()?;
    match op.size {
        64 => Ok(0),
        32 => Err(Errno::EOPNOTSUPP),
        _ => Err(Errno::EINVAL),
    }
}

/// `XEN_DOMCTL_get_address_size`: always 64.
pub(super) fn get_address_size(c: &mut Call<'_>) -> Result<u64, Errno> {
    c.target()?;
    c.set_arg(&AddressSize { size: 64 });
    Ok(0)
}
