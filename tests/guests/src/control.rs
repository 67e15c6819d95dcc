//! Toolstack calls for the test guests: `domctl` and `sysctl` at interface version 0x15, with
//! the sub-op's structure placed in and read back from the 128-byte union.

use xen_abi::domctl::{XEN_DOMCTL_INTERFACE_VERSION, XenDomctl};
use xen_abi::sysctl::{XEN_SYSCTL_INTERFACE_VERSION, XenSysctl};
use xen_abi::xen::hypercall as nr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::hypercall;

/// A domctl `cmd` on `domain` with `arg` at the start of the union.
pub fn domctl_op<T: IntoBytes + Immutable>(cmd: u32, domain: u16, arg: &T) -> XenDomctl {
    let mut op = XenDomctl {
        cmd,
        interface_version: XEN_DOMCTL_INTERFACE_VERSION,
        domain,
        _pad: [0; 3],
        u: [0; 128],
    };
    let b = arg.as_bytes();
    op.u[..b.len()].copy_from_slice(b);
    op
}

/// A sysctl `cmd` with `arg` at the start of the union.
pub fn sysctl_op<T: IntoBytes + Immutable>(cmd: u32, arg: &T) -> XenSysctl {
    let mut op = XenSysctl {
        cmd,
        interface_version: XEN_SYSCTL_INTERFACE_VERSION,
        u: [0; 128],
    };
    let b = arg.as_bytes();
    op.u[..b.len()].copy_from_slice(b);
    op
}

/// Issues `domctl(op)`.
pub fn domctl(op: &mut XenDomctl) -> i64 {
    hypercall(nr::DOMCTL, op as *mut XenDomctl as u64, 0, 0, 0, 0)
}

/// Issues `sysctl(op)`.
pub fn sysctl(op: &mut XenSysctl) -> i64 {
    hypercall(nr::SYSCTL, op as *mut XenSysctl as u64, 0, 0, 0, 0)
}

/// The sub-op structure at the start of a union.
pub fn arg<T: FromBytes>(u: &[u8; 128]) -> T {
    T::read_from_prefix(u).map_or_else(|_| T::new_zeroed(), |(v, _)| v)
}

/// A PV domain's configuration as xl asks for one: `max_vcpus` vCPUs, ports up to 1023, grant
/// tables up to v2 with the host's default limits.
pub fn pv_domain_config(max_vcpus: u32) -> xen_abi::domctl::CreateDomain {
    xen_abi::domctl::CreateDomain {
        max_vcpus,
        max_evtchn_port: 1023,
        max_grant_frames: -1,
        max_maptrack_frames: -1,
        grant_opts: 2,
        ..Default::default()
    }
}

/// `XEN_DOMCTL_createdomain` for `domid` (0: allocate one) with `config`: the result and the
/// id the header names afterwards.
pub fn create_domain(domid: u16, config: &xen_abi::domctl::CreateDomain) -> (i64, u16) {
    let mut op = domctl_op(xen_abi::domctl::cmd::CREATEDOMAIN, domid, config);
    let r = domctl(&mut op);
    (r, op.domain)
}

/// `XEN_DOMCTL_scheduler_op` for the credit scheduler on `domid` (`cmd` getinfo or putinfo):
/// the result and the structure written back.
pub fn sched_credit(
    domid: u16,
    cmd: u32,
    weight: u16,
    cap: u16,
) -> (i64, xen_abi::domctl::SchedulerOpCredit) {
    let a = xen_abi::domctl::SchedulerOpCredit {
        sched_id: xen_abi::domctl::scheduler::CREDIT,
        cmd,
        weight,
        cap,
        _pad: [0; 3],
    };
    let mut op = domctl_op(xen_abi::domctl::cmd::SCHEDULER_OP, domid, &a);
    let r = domctl(&mut op);
    (r, arg(&op.u))
}

/// A domctl `cmd` without argument (pause, unpause, destroy...) on `domid`.
pub fn domctl_on(cmd: u32, domid: u16) -> i64 {
    domctl(&mut domctl_op(cmd, domid, &[0u8; 0]))
}

/// `XEN_DOMCTL_getdomaininfo` from `domid` on: the result, the domain described.
pub fn domain_info(domid: u16) -> (i64, xen_abi::domctl::GetDomainInfo) {
    let mut op = domctl_op(
        xen_abi::domctl::cmd::GETDOMAININFO,
        domid,
        &xen_abi::domctl::GetDomainInfo::default(),
    );
    let r = domctl(&mut op);
    (r, arg(&op.u))
}

/// `XEN_SYSCTL_physinfo`'s free pages (`None` if the call fails).
pub fn free_pages() -> Option<u64> {
    let mut op = sysctl_op(
        xen_abi::sysctl::cmd::PHYSINFO,
        &xen_abi::sysctl::Physinfo::default(),
    );
    (sysctl(&mut op) == 0).then(|| arg::<xen_abi::sysctl::Physinfo>(&op.u).free_pages)
}
