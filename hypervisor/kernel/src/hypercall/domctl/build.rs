//! What the domain builder asks of the hypervisor beyond memory: `hypercall_init`, the
//! hypercall page written into one of the target's frames (libxenguest's
//! `setup_hypercall_page` for a kernel with `XEN_ELFNOTE_HYPERCALL_PAGE`), and the TSC
//! settings (`set/gettscinfo`, which libxl sets for every new domain; `xen/arch/x86/time.c`).
//!
//! Hestia does not emulate `rdtsc`: a domain's TSC is the host's. So of Xen's modes, "never
//! emulate" is exact, "default" is what Xen's default does on a host whose TSC it trusts
//! (native), and "always emulate" is refused (`EOPNOTSUPP`; Xen would trap and scale every
//! `rdtsc`).

use core::sync::atomic::Ordering;

use xen_abi::domctl::{HypercallInit, TscInfo, tsc_mode};
use xen_abi::errno::Errno;

use super::Call;
use crate::mm::frametable::{self, NotWritable};

/// `XEN_DOMCTL_hypercall_init`: fills the target's frame `gmfn` (a PV domain's frames are
/// machine frames) with hypercall stubs. `EINVAL` for a frame that is not the target's,
/// `EPERM` for one it uses as a page or descriptor table, as Xen.
pub(super) fn hypercall_init(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: HypercallInit = c.arg();
    let d = c.target()?;
    frametable::write_page_for(
        hestia_core::ids::Mfn::new(op.gmfn),
        d.id.0,
        &hestia_core::hypercall_page::page(),
    )
    .map_err(|e| match e {
        NotWritable::NotOwned => Errno::EINVAL,
        NotWritable::WrongType => Errno::EPERM,
    })?;
    Ok(0)
}

/// `XEN_DOMCTL_settscinfo`: the target's TSC mode (not the caller's own: `EINVAL`). The
/// hardware domain keeps the native TSC whatever is asked, as in Xen.
pub(super) fn settscinfo(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: TscInfo = c.arg();
    let d = c.other_target()?;
    // The padding is not checked: libxenctrl leaves it uninitialised.
    if hestia_core::policy::allows(d.rights, hestia_core::policy::Action::PhysicalIrq) {
        return Ok(0);
    }
    match op.tsc_mode {
        tsc_mode::DEFAULT | tsc_mode::NEVER_EMULATE => {}
        tsc_mode::ALWAYS_EMULATE => return Err(Errno::EOPNOTSUPP),
        _ => return Err(Errno::EINVAL),
    }
    d.tsc_mode.store(op.tsc_mode, Ordering::Release);
    d.tsc_incarnation
        .store(op.incarnation.wrapping_add(1), Ordering::Release);
    Ok(0)
}

/// `XEN_DOMCTL_gettscinfo`: the target's TSC mode, incarnation, and (default mode) the TSC
/// in ns and the host's TSC frequency.
pub(super) fn gettscinfo(c: &mut Call<'_>) -> Result<u64, Errno> {
    let d = c.other_target()?;
    let mode = d.tsc_mode.load(Ordering::Acquire);
    let (elapsed_nsec, gtsc_khz) = if mode == tsc_mode::NEVER_EMULATE {
        (0, 0)
    } else {
        use crate::arch::x86_64::{cpu, tsc};
        (tsc::ticks_to_ns(cpu::rdtsc()), (tsc::hz() / 1000) as u32)
    };
    let info = TscInfo {
        tsc_mode: mode,
        gtsc_khz,
        incarnation: d.tsc_incarnation.load(Ordering::Acquire),
        pad: 0,
        elapsed_nsec,
    };
    c.set_arg(&info);
    Ok(0)
}
