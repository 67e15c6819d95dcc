//! `XEN_DOMCTL_createdomain`: a new, empty PV domain, as Xen 4.17 makes one
//! (`xen/common/domain.c`: `sanitise_domain_config`, `domain_create`;
//! `xen/arch/x86/domain.c`: `arch_sanitise_domain_config`, `arch_domain_create`;
//! `evtchn_init`, `grant_table_init`, `sched_init_domain`).
//!
//! The configuration is checked in Xen's order, so each wrong field gets Xen's answer:
//! unknown flags, grant options or misc flags, no vCPU, HAP without HVM, IOMMU options without
//! an IOMMU (Hestia has none to give), vmtrace and vPMU (not available), HVM (Hestia has no
//! HVM support yet: Xen's answer on hardware without it, `EINVAL`), more vCPUs than a PV domain
//! may have (8192, Xen's `MAX_VIRT_CPUS` on x86), S3 integrity (no TXT), then the emulation
//! flags (`EINVAL` for unknown bits, `EOPNOTSUPP` for any but the PIT for a PV domain), the
//! grant limits (version 1 or 2; frames from 1 to 64, maptrack frames up to 1024, -1 taking
//! those defaults), and the CPU pool (only pool 0 exists: `ESRCH`).
//!
//! The id is claimed first (`super::reserve`: the requested one, `EEXIST` if taken, or one the
//! rover allocates), as Xen checks it before the configuration. The domain is
//! `crate::pv::builder::empty_domain`'s, paused once by the toolstack, entered in the scheduler
//! with Xen's default weight and cap, its vCPUs offline until the toolstack sets their context
//! and brings them up.

use xen_abi::domctl::{CreateDomain, XEN_DOMCTL_GRANT_VERSION_MASK};
use xen_abi::domctl::{XEN_X86_MSR_RELAXED, cdf, x86_emu};
use xen_abi::errno::Errno;

use hestia_core::grant_table::{
    DEFAULT_MAX_GRANT_FRAMES, DEFAULT_MAX_MAPTRACK_FRAMES, INITIAL_NR_GRANT_FRAMES,
};

use super::DomainRef;
use crate::pv::builder::{Config, empty_domain};
use crate::pv::domain::Domain;
use crate::pv::life::Life;

/// Most vCPUs of a PV domain (Xen's x86 `MAX_VIRT_CPUS`: one 128 KiB GDT/LDT slot each in a
/// 1 GiB per-domain area).
pub const PV_MAX_VCPUS: u32 = 8192;
/// The highest grant-table version Hestia offers.
const GNTTAB_MAX_VERSION: u32 = 2;
/// Every `XEN_DOMCTL_CDF_*` flag Xen 4.17 knows.
const KNOWN_FLAGS: u32 = cdf::HVM
    | cdf::HAP
    | cdf::S3_INTEGRITY
    | cdf::OOS_OFF
    | cdf::XS_DOMAIN
    | cdf::IOMMU
    | cdf::NESTED_VIRT
    | cdf::VPMU;

/// Checks `c` as Xen's `sanitise_domain_config` and `arch_sanitise_domain_config` do for a
/// host without HVM, IOMMU, vmtrace, vPMU or TXT, and sets `OOS_OFF` for a PV domain as Xen
/// does.
pub fn sanitise(c: &mut CreateDomain) -> Result<(), Errno> {
    let has = |f: u32| c.flags & f != 0;
    if c.flags & !KNOWN_FLAGS != 0
        || c.grant_opts & !XEN_DOMCTL_GRANT_VERSION_MASK != 0
        || c.max_vcpus < 1
        || (has(cdf::HAP) && !has(cdf::HVM))
    {
        return Err(Errno::EINVAL);
    }
    // IOMMU options only with an IOMMU, which Hestia does not have to give.
    if has(cdf::IOMMU) || c.iommu_opts != 0 {
        return Err(Errno::EINVAL);
    }
    // No vmtrace, no vPMU, no HVM; then the architecture's checks.
    if c.vmtrace_size != 0
        || has(cdf::VPMU)
        || has(cdf::HVM)
        || c.max_vcpus > PV_MAX_VCPUS
        || has(cdf::S3_INTEGRITY)
    {
        return Err(Errno::EINVAL);
    }
    // (HAP and nested virtualisation need HVM, refused above.)
    if c.arch.misc_flags & !XEN_X86_MSR_RELAXED != 0 {
        return Err(Errno::EINVAL);
    }
    // Only meaningful clear for HVM.
    c.flags |= cdf::OOS_OFF;
    Ok(())
}

/// The grant-table limits `c` asks for (Xen's `grant_table_init`): frames, maptrack frames,
/// highest version.
fn grant_limits(c: &CreateDomain) -> Result<(u32, u32, u8), Errno> {
    let version = c.grant_opts & XEN_DOMCTL_GRANT_VERSION_MASK;
    if version == 0 || version > GNTTAB_MAX_VERSION {
        return Err(Errno::EINVAL);
    }
    let or_default = |n: i32, default: u32| u32::try_from(n).unwrap_or(default);
    let frames = or_default(c.max_grant_frames, DEFAULT_MAX_GRANT_FRAMES);
    let maptrack = or_default(c.max_maptrack_frames, DEFAULT_MAX_MAPTRACK_FRAMES);
    if !(INITIAL_NR_GRANT_FRAMES..=DEFAULT_MAX_GRANT_FRAMES).contains(&frames)
        || maptrack > DEFAULT_MAX_MAPTRACK_FRAMES
    {
        return Err(Errno::EINVAL);
    }
    Ok((frames, maptrack, version as u8))
}

/// `XEN_DOMCTL_createdomain` by `caller` for `requested` (0 or a reserved id: allocate one)
/// with `c`: the new domain, paused by the toolstack and scheduled (see the module).
pub fn createdomain(
    caller: &Domain,
    requested: u16,
    c: &mut CreateDomain,
) -> Result<DomainRef, Errno> {
    let id = super::reserve(requested)?;
    sanitise(c)?;
    let emflags = c.arch.emulation_flags;
    if emflags & !x86_emu::ALL != 0 {
        return Err(Errno::EINVAL);
    }
    if emflags != 0 && emflags != x86_emu::PIT {
        return Err(Errno::EOPNOTSUPP);
    }
    let (max_grant_frames, max_maptrack_frames, max_grant_version) = grant_limits(c)?;
    if c.cpupool_id != 0 {
        return Err(Errno::ESRCH);
    }
    let d = empty_domain(Config {
        id: id.id(),
        hardware: false,
        nr_vcpus: c.max_vcpus,
        // Xen keeps the limit in an int.
        max_evtchn_port: c.max_evtchn_port.min(i32::MAX as u32),
        max_grant_frames,
        max_maptrack_frames,
        max_grant_version,
        life: Life::toolstack(),
        handle: c.handle,
    })?;
    let d = id.insert(d)?;
    if let Err(e) = crate::pv::context::add_to_scheduler(&d, crate::sched::Params::default()) {
        // Cannot happen for a fresh id with default parameters; undo what was made.
        crate::error!("{}: cannot be scheduled ({e:?}): destroyed", d.id);
        while super::domain_kill(caller, &d) == Err(Errno::ERESTART) {}
        return Err(e);
    }
    crate::info!(
        "{}: created by the toolstack: {} vCPU{}, event channels up to port {}",
        d.id,
        c.max_vcpus,
        if c.max_vcpus == 1 { "" } else { "s" },
        c.max_evtchn_port
    );
    Ok(d)
}
