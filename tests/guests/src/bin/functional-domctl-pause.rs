//! The toolstack pauses, unpauses and destroys a running domain (Xen 4.17's
//! `XEN_DOMCTL_pausedomain`, `unpausedomain`, `destroydomain`), with a boot-time domU that
//! spins on its one vCPU (`domu` on its command line) and dom0 as the toolstack:
//!
//! - when `pausedomain` returns, the domU's vCPU is off its CPU (`getvcpuinfo.running` 0), its
//!   CPU time stands still and getdomaininfo shows it paused;
//! - pauses nest: after two pauses and one unpause it still does not run; the last unpause
//!   lets it run again (its CPU time grows);
//! - `destroydomain` of the running domU succeeds: it is gone (getdomaininfo no longer
//!   describes it, another destroy is ESRCH).
//!
//! Before these sub-ops existed each was ENOSYS (the test failed at its first pause). Two
//! domains: Hestia only (the Xen rig boots a dom0 alone).
#![no_std]
#![no_main]

use hestia_guests::control::{arg, domain_info, domctl, domctl_on, domctl_op};
use hestia_guests::xen_abi::domctl::{GetVcpuInfo, cmd, dominf};
use hestia_guests::xen_abi::sched;
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, cmdline, hypercall, map_shared_info, println, system_time_ns};

const DOMU: u16 = 1;
const ESRCH: i64 = -3;

fn yield_cpu() {
    hypercall(nr::SCHED_OP, u64::from(sched::cmd::YIELD), 0, 0, 0, 0);
}

/// Yields for `ns` nanoseconds.
fn wait(ns: u64) {
    let end = system_time_ns().saturating_add(ns);
    while system_time_ns() < end {
        yield_cpu();
    }
}

/// The domU's vCPU 0 as getvcpuinfo sees it.
fn vcpu() -> (i64, GetVcpuInfo) {
    let mut op = domctl_op(cmd::GETVCPUINFO, DOMU, &GetVcpuInfo::default());
    let r = domctl(&mut op);
    (r, arg(&op.u))
}

/// True if the domU's CPU time grows within a second.
fn runs() -> bool {
    let start = vcpu().1.cpu_time;
    let end = system_time_ns().saturating_add(1_000_000_000);
    while system_time_ns() < end {
        if vcpu().1.cpu_time > start {
            return true;
        }
        yield_cpu();
    }
    false
}

/// True if the domU's CPU time stands still for 100 ms.
fn stands_still() -> bool {
    let before = vcpu().1.cpu_time;
    wait(100_000_000);
    vcpu().1.cpu_time == before
}

fn paused_flag() -> bool {
    matches!(domain_info(DOMU), (0, i) if i.domain == DOMU && i.flags & dominf::PAUSED != 0)
}

fn as_domu() -> Verdict {
    // Spin (the toolstack pauses and destroys it meanwhile); report only if nobody did.
    let end = system_time_ns().saturating_add(60_000_000_000);
    while system_time_ns() < end {
        core::hint::spin_loop();
    }
    Verdict::Failure("not destroyed by the toolstack within 60 s")
}

fn test(si: &StartInfo) -> Verdict {
    if map_shared_info(si) != 0 {
        return Verdict::Error("shared_info not mapped");
    }
    if cmdline(si).split(' ').any(|w| w == "domu") {
        return as_domu();
    }
    let mut failed = false;
    // The domU has started.
    check!(failed, runs(), "the domU does not run");

    let r = domctl_on(cmd::PAUSEDOMAIN, DOMU);
    check!(failed, r == 0, "pausedomain = {r}");
    let (r, v) = vcpu();
    check!(
        failed,
        r == 0 && v.running == 0,
        "running {} right after pausedomain ({r})",
        v.running
    );
    check!(failed, paused_flag(), "not shown paused");
    check!(failed, stands_still(), "its CPU time grows while paused");

    // Nested: two pauses, one unpause: still paused.
    check!(
        failed,
        domctl_on(cmd::PAUSEDOMAIN, DOMU) == 0,
        "second pause"
    );
    check!(
        failed,
        domctl_on(cmd::UNPAUSEDOMAIN, DOMU) == 0,
        "first unpause"
    );
    check!(failed, stands_still(), "runs with one pause left");
    check!(
        failed,
        paused_flag(),
        "not shown paused with one pause left"
    );
    check!(
        failed,
        domctl_on(cmd::UNPAUSEDOMAIN, DOMU) == 0,
        "last unpause"
    );
    check!(
        failed,
        !paused_flag(),
        "shown paused after the last unpause"
    );
    check!(failed, runs(), "does not run again after the last unpause");

    // Destroying it while it runs.
    let r = domctl_on(cmd::DESTROYDOMAIN, DOMU);
    check!(failed, r == 0, "destroydomain of the running domU = {r}");
    let (r, i) = domain_info(DOMU);
    check!(
        failed,
        r == ESRCH || (r == 0 && i.domain != DOMU),
        "getdomaininfo after destroying it: {r}, d{}",
        i.domain
    );
    let r = domctl_on(cmd::DESTROYDOMAIN, DOMU);
    check!(failed, r == ESRCH, "destroying it again = {r}");
    println!("d{DOMU} paused, unpaused and destroyed");

    if failed {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
