//! The toolstack's CPU-policy calls (Xen 4.17's `xen/arch/x86/sysctl.c` and `domctl.c`):
//! `XEN_SYSCTL_get_cpu_policy` and `get_cpu_featureset` read the system policies,
//! `XEN_DOMCTL_get_cpu_policy` a domain's, and `XEN_DOMCTL_set_cpu_policy` replaces the
//! policy of a domain that has not run yet. libxenguest's `xc_cpuid_apply_policy` runs all
//! four for every domain `xl create` builds; the policies, their serialised form and the audit
//! are `hestia_core::cpu_policy`'s, the system policies `crate::pv::privop`'s.
//!
//! Reads: a null leaf (or MSR) handle asks for the most entries a policy serialises to;
//! otherwise the entries are written in Xen's order and the count with them, `ENOBUFS` when
//! the caller's room is short. Featuresets likewise, clipped to the caller's room.
//!
//! Writes: never to the caller itself (`EINVAL`, as Xen refuses to pause it), never once the
//! domain runs (`EEXIST`); the toolstack's entries are merged into the current policy, audited
//! against PV max and clamped to it; a refusal names the leaf, sub-leaf or MSR in `err_*`
//! (copied back) and leaves the policy as it was. Hestia has PV guests only: the HVM indices
//! are `EOPNOTSUPP`, Xen's answer when built without HVM.
//!
//! Locks: the dispatchers' domctl/sysctl locks are held; a domain's policy lock is held only
//! to copy the policy in or out, never across guest memory accesses.

use alloc::boxed::Box;

use hestia_core::cpu_policy::{
    self, CpuPolicy, FEATURESET_NR_ENTRIES, MAX_SERIALISED_LEAVES, MAX_SERIALISED_MSRS,
};
use xen_abi::domctl::{self, CpuidLeaf, MsrEntry};
use xen_abi::errno::Errno;
use xen_abi::sysctl::{self, featureset, policy};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::domctl::Call;
use crate::mm::guest;
use crate::pv::privop::system_policies;

/// The system policy `XEN_SYSCTL_cpu_policy_*` `index` names.
fn system_policy(index: u32) -> Result<&'static CpuPolicy, Errno> {
    let s = system_policies();
    match index {
        policy::RAW => Ok(&s.raw),
        policy::HOST => Ok(&s.host),
        policy::PV_MAX => Ok(&s.pv_max),
        policy::PV_DEFAULT => Ok(&s.pv_default),
        policy::HVM_MAX | policy::HVM_DEFAULT => Err(Errno::EOPNOTSUPP),
        _ => Err(Errno::EINVAL),
    }
}

/// Writes `entries` to the guest array at `handle`, which has room for `*nr`; `*nr` becomes
/// the count written. `ENOBUFS` when there are more than the room (Xen's `copy_*_to_buffer`).
fn copy_out<T: IntoBytes + Immutable>(
    handle: u64,
    nr: &mut u32,
    entries: impl Iterator<Item = T>,
) -> Result<(), Errno> {
    let mut n = 0u32;
    for e in entries {
        if n == *nr {
            return Err(Errno::ENOBUFS);
        }
        let off = u64::from(n) * core::mem::size_of::<T>() as u64;
        guest::write_obj(handle.checked_add(off).ok_or(Errno::EFAULT)?, &e)?;
        n += 1;
    }
    *nr = n;
    Ok(())
}

/// Reads entry `i` of the guest array at `handle`.
fn read_entry<T: FromBytes + IntoBytes>(handle: u64, i: u32) -> Result<T, Errno> {
    let off = u64::from(i) * core::mem::size_of::<T>() as u64;
    guest::read_obj(handle.checked_add(off).ok_or(Errno::EFAULT)?)
}

/// Serialises `p` for a get: each null handle asks for the most entries instead.
fn serialise(
    p: &CpuPolicy,
    leaves: u64,
    nr_leaves: &mut u32,
    msrs: u64,
    nr_msrs: &mut u32,
) -> Result<(), Errno> {
    if leaves == 0 {
        *nr_leaves = MAX_SERIALISED_LEAVES;
    } else {
        copy_out(leaves, nr_leaves, p.leaves())?;
    }
    if msrs == 0 {
        *nr_msrs = MAX_SERIALISED_MSRS;
    } else {
        copy_out(msrs, nr_msrs, p.msrs().into_iter())?;
    }
    Ok(())
}

/// `XEN_SYSCTL_get_cpu_policy`: a system policy, or with null handles the most entries any
/// policy serialises to (libxenguest's `xc_cpu_policy_get_size`).
pub(super) fn sysctl_get_cpu_policy(op: &mut sysctl::CpuPolicy) -> Result<u64, Errno> {
    if op._rsvd != 0 {
        return Err(Errno::EINVAL);
    }
    let p = system_policy(op.index)?;
    serialise(p, op.leaves, &mut op.nr_leaves, op.msrs, &mut op.nr_msrs)?;
    Ok(0)
}

/// `XEN_SYSCTL_get_cpu_featureset`: a system policy's feature words, as many as the caller
/// has room for (`ENOBUFS` when that is fewer than all); with a null handle, how many there
/// are.
pub(super) fn sysctl_get_cpu_featureset(op: &mut sysctl::CpuFeatureset) -> Result<u64, Errno> {
    const ALL: u32 = FEATURESET_NR_ENTRIES as u32;
    if op.features == 0 {
        op.nr_features = ALL;
        return Ok(0);
    }
    let s = system_policies();
    let p: &CpuPolicy = match op.index {
        featureset::RAW => &s.raw,
        featureset::HOST => &s.host,
        featureset::PV => &s.pv_default,
        featureset::PV_MAX => &s.pv_max,
        featureset::HVM | featureset::HVM_MAX => return Err(Errno::EOPNOTSUPP),
        _ => return Err(Errno::EINVAL),
    };
    let mut nr = op.nr_features.min(ALL);
    let room = nr;
    match copy_out(op.features, &mut nr, p.featureset().into_iter()) {
        Ok(()) | Err(Errno::ENOBUFS) => {}
        Err(e) => return Err(e),
    }
    op.nr_features = room;
    if room < ALL {
        return Err(Errno::ENOBUFS);
    }
    Ok(0)
}

/// `XEN_DOMCTL_get_cpu_policy`: the target's policy, or with null handles the most entries.
pub(super) fn get_cpu_policy(c: &mut Call) -> Result<u64, Errno> {
    let p: Box<CpuPolicy> = c.target()?.cpu_policy.lock().clone();
    let mut op: domctl::CpuPolicy = c.arg();
    serialise(&p, op.leaves, &mut op.nr_leaves, op.msrs, &mut op.nr_msrs)?;
    c.set_arg(&op);
    Ok(0)
}

/// `XEN_DOMCTL_set_cpu_policy`: replaces the policy of a domain that has not run yet with the
/// toolstack's (merged into the current one, audited against PV max, clamped to it).
pub(super) fn set_cpu_policy(c: &mut Call) -> Result<u64, Errno> {
    let d = c.other_target()?.clone();
    // No changing once the domain has been started.
    if d.creation_finished() {
        return Err(Errno::EEXIST);
    }
    let mut op: domctl::CpuPolicy = c.arg();
    let cur: Box<CpuPolicy> = d.cpu_policy.lock().clone();
    let (leaves, msrs) = (op.leaves, op.msrs);
    let new = cpu_policy::update(
        &cur,
        &system_policies().pv_max,
        op.nr_leaves,
        |i| read_entry::<CpuidLeaf>(leaves, i),
        op.nr_msrs,
        |i| read_entry::<MsrEntry>(msrs, i),
    );
    match new {
        Ok(p) => {
            *d.cpu_policy.lock() = p;
            Ok(0)
        }
        Err(r) => {
            (op.err_leaf, op.err_subleaf, op.err_msr) = (r.leaf, r.subleaf, r.msr);
            c.set_arg(&op);
            Err(r.errno)
        }
    }
}
