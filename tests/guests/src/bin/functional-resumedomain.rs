//! `XEN_DOMCTL_resumedomain` (Xen 4.17 `xen/common/domctl.c`, `domain.c`'s `domain_resume`),
//! as `xl save -c` and a failed `xl save` use it through libxc's `xc_domain_resume`.
//!
//! Alone (dom0, also on the Xen rig): resuming itself is -EINVAL (the caller cannot be paused
//! around the change), a domain that does not exist or `DOMID_SELF` (which the domctl lookup
//! does not resolve) -ESRCH.
//!
//! With `peer` (Hestia only: the rig boots no domU), dom0 next to a boot-time domU running this
//! kernel with `domu`. The domU suspends (`SCHEDOP_shutdown`, `SHUTDOWN_suspend`); dom0 sees it
//! shut down with code 2, resumes it untouched, and sees the shutdown gone (the code back to
//! all ones); resuming a domain that is not shut down is 0 and changes nothing. The domU's
//! suspend returned 0, as on Xen when the toolstack leaves the vCPU alone. It suspends again;
//! dom0 now does what libxc's cooperative resume (`xc_domain_resume(.., fast=1)`, i.e. `xl
//! save -c`) does: reads vCPU 0's context, writes it back with RAX = 1, and resumes; the domU's
//! suspend returns 1 ("cancelled", what Linux's `xen_suspend` looks for). The domU then
//! powers off, and dom0 waits for it to go.
#![no_std]
#![no_main]

use hestia_guests::control::{domain_info, domctl, domctl_on, domctl_op};
use hestia_guests::xen_abi::domctl::{VcpuContext, cmd as dcmd, dominf};
use hestia_guests::xen_abi::sched::{SchedShutdown, cmd as sched, reason};
use hestia_guests::xen_abi::vcpu::VcpuGuestContext;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, cmdline, hypercall, map_shared_info, println, system_time_ns, yield_now,
};

const ESRCH: i64 = -3;
const EINVAL: i64 = -22;

const DOMU: u16 = 1;
/// dom0's own id (domctls name domains by id).
const DOM0: u16 = 0;

/// Room for a vCPU context.
static mut BUF: [u8; 8192] = [0; 8192];

fn buf() -> u64 {
    core::ptr::addr_of_mut!(BUF) as u64
}

fn resume(domid: u16) -> i64 {
    domctl_on(dcmd::RESUMEDOMAIN, domid)
}

/// `SCHEDOP_shutdown` with `why`: its return value.
fn shutdown(why: u32) -> i64 {
    let s = SchedShutdown { reason: why };
    hypercall(
        nr::SCHED_OP,
        u64::from(sched::SHUTDOWN),
        &s as *const SchedShutdown as u64,
        0,
        0,
        0,
    )
}

fn as_domu(si: &StartInfo) -> Verdict {
    let mut f = false;
    check!(f, map_shared_info(si) == 0, "cannot map shared_info");
    println!("suspending (the control domain resumes this domain untouched)");
    let r = shutdown(reason::SUSPEND);
    check!(f, r == 0, "first suspend returned {r}, not 0");
    println!("running again after the first suspend: {r}");
    // Half a second running, for dom0 to see it so and to resume it once more (0, nothing).
    let t = system_time_ns() + 500_000_000;
    while system_time_ns() < t {
        yield_now();
    }
    println!("suspending (the control domain cancels the suspend)");
    let r = shutdown(reason::SUSPEND);
    check!(f, r == 1, "second suspend returned {r}, not 1");
    println!("running again after the second suspend: {r}");
    if f {
        Verdict::Failure("suspend and resume")
    } else {
        Verdict::Success
    }
}

/// The domU's `XEN_DOMINF_*` flags: `None` once it is gone.
fn domu_flags() -> Option<u32> {
    let (r, info) = domain_info(DOMU);
    (r == 0 && info.domain == DOMU).then_some(info.flags)
}

/// Waits up to 10 s for the domU's flags to satisfy `ok`; false on time out.
fn wait_for(ok: impl Fn(Option<u32>) -> bool) -> bool {
    let end = system_time_ns() + 10_000_000_000;
    while system_time_ns() < end {
        if ok(domu_flags()) {
            return true;
        }
        yield_now();
    }
    false
}

/// Shut down with `code`.
fn shut_down_with(flags: Option<u32>, code: u32) -> bool {
    flags.is_some_and(|f| {
        f & dominf::SHUTDOWN != 0 && (f >> dominf::SHUTDOWNSHIFT) & dominf::SHUTDOWNMASK == code
    })
}

/// Running: not shut down, its code `SHUTDOWN_CODE_INVALID` (bits 16-31 all set).
fn running(flags: Option<u32>) -> bool {
    flags.is_some_and(|f| f & dominf::SHUTDOWN == 0 && f >> 16 == 0xffff)
}

fn with_domu(failed: &mut bool) {
    let mut f = false;
    check!(
        f,
        wait_for(|fl| shut_down_with(fl, reason::SUSPEND)),
        "the domU never showed as suspended: {:#x?}",
        domu_flags()
    );
    let r = resume(DOMU);
    check!(f, r == 0, "resumedomain of the suspended domU: {r}");
    let fl = domu_flags();
    check!(f, running(fl), "after resumedomain, flags {fl:#x?}");
    // Not shut down (it runs, or already suspended again): nothing to resume, still 0.
    let r = resume(DOMU);
    check!(f, r == 0, "resumedomain of a running domU: {r}");

    // The cooperative resume: RAX of vCPU 0 set to 1, then resumedomain.
    check!(
        f,
        wait_for(|fl| shut_down_with(fl, reason::SUSPEND)),
        "the domU never suspended again: {:#x?}",
        domu_flags()
    );
    let ctx = VcpuContext {
        vcpu: 0,
        _pad: 0,
        ctxt: buf(),
    };
    let r = domctl(&mut domctl_op(dcmd::GETVCPUCONTEXT, DOMU, &ctx));
    check!(f, r == 0, "getvcpucontext of the suspended domU: {r}");
    // SAFETY: BUF is larger than a context; read and written as bytes.
    let mut c: VcpuGuestContext =
        unsafe { core::ptr::read_unaligned(buf() as *const VcpuGuestContext) };
    check!(
        f,
        c.user_regs.rax == 0,
        "the suspended domU's RAX is {:#x}, not 0",
        c.user_regs.rax
    );
    c.user_regs.rax = 1;
    // SAFETY: as above.
    unsafe { core::ptr::write_unaligned(buf() as *mut VcpuGuestContext, c) };
    let r = domctl(&mut domctl_op(dcmd::SETVCPUCONTEXT, DOMU, &ctx));
    check!(f, r == 0, "setvcpucontext of the suspended domU: {r}");
    let r = resume(DOMU);
    check!(f, r == 0, "resumedomain after setting RAX: {r}");
    check!(
        f,
        wait_for(|fl| fl.is_none() || shut_down_with(fl, reason::POWEROFF)),
        "the domU never powered off: {:#x?}",
        domu_flags()
    );
    *failed |= f;
}

fn test(si: &StartInfo) -> Verdict {
    if cmdline(si).split(' ').any(|w| w == "domu") {
        return as_domu(si);
    }
    let mut f = false;
    check!(f, map_shared_info(si) == 0, "cannot map shared_info");
    let r = resume(DOM0);
    check!(f, r == EINVAL, "resumedomain of itself: {r}, not -EINVAL");
    let r = resume(999);
    check!(f, r == ESRCH, "resumedomain of domain 999: {r}, not -ESRCH");
    let r = resume(DOMID_SELF);
    check!(f, r == ESRCH, "resumedomain of DOMID_SELF: {r}, not -ESRCH");
    if cmdline(si).split(' ').any(|w| w == "peer") {
        with_domu(&mut f);
    }
    if f {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
