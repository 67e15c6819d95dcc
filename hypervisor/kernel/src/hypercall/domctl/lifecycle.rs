//! The sub-ops that make, pause, resume and end domains: `createdomain`, `pausedomain`,
//! `unpausedomain`, `resumedomain`, `destroydomain` and `max_vcpus` (`xen/common/domctl.c`); the work is
//! `crate::domain`'s (`create`, `life`, `reap`).

use xen_abi::domctl::{CreateDomain, MaxVcpus};
use xen_abi::errno::Errno;

use super::Call;
use crate::domain::{create, life};

/// `XEN_DOMCTL_createdomain`: a new empty domain, paused by the toolstack; its id goes back in
/// the header's `domain`.
pub(super) fn createdomain(c: &mut Call<'_>) -> Result<u64, Errno> {
    let mut config: CreateDomain = c.arg();
    let d = create::createdomain(c.caller, c.op.domain, &mut config)?;
    c.op.domain = d.id.0;
    c.copyback = true;
    Ok(0)
}

/// `XEN_DOMCTL_pausedomain`: one more toolstack pause (`EINVAL` for the caller itself,
/// `EOVERFLOW` past 255).
pub(super) fn pausedomain(c: &mut Call<'_>) -> Result<u64, Errno> {
    life::pause_by_controller(c.other_target()?)?;
    Ok(0)
}

/// `XEN_DOMCTL_unpausedomain`: one toolstack pause fewer (`EINVAL` if there is none).
pub(super) fn unpausedomain(c: &mut Call<'_>) -> Result<u64, Errno> {
    life::unpause_by_controller(c.target()?)?;
    Ok(0)
}

/// `XEN_DOMCTL_resumedomain`: a shut-down domain runs again (0 also for one that is not shut
/// down); `EINVAL` for the caller itself.
pub(super) fn resumedomain(c: &mut Call<'_>) -> Result<u64, Errno> {
    life::domain_resume(c.other_target()?)?;
    Ok(0)
}

/// `XEN_DOMCTL_destroydomain`: `ERESTART` (the call is issued again) until the domain is
/// destroyed; `EINVAL` for the caller itself.
pub(super) fn destroydomain(c: &mut Call<'_>) -> Result<u64, Errno> {
    crate::domain::domain_kill(c.caller, c.other_target()?)?;
    Ok(0)
}

/// `XEN_DOMCTL_max_vcpus`: Xen 4.17 sizes a domain at its creation, and this only accepts the
/// number given then (`EINVAL` otherwise, and for the caller itself); the vCPUs exist already.
pub(super) fn max_vcpus(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: MaxVcpus = c.arg();
    let d = c.other_target()?;
    if op.max as usize != d.vcpus.len() {
        return Err(Errno::EINVAL);
    }
    Ok(0)
}
