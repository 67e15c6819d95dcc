//! `SCHEDOP_remote_shutdown`: the control domain stops another domain, a domU may not.
//!
//! As dom0: DOMID_SELF and a domain that does not exist are -ESRCH (Xen looks the id up
//! without resolving DOMID_SELF); after giving the domU a second to check its side, dom0 shuts
//! domain 1 down (power off), which stops that domain only (the harness looks for Hestia's
//! `d1: shut down (power off` line), and dom0 runs on to its own verdict.
//! As a domU (`domu` on its command line): shutting dom0 down is -EPERM (Xen's
//! `xsm_schedop_shutdown`, `XSM_DM_PRIV`); it then waits, running, for dom0 to stop it.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::sched::{SchedRemoteShutdown, cmd, reason};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, cmdline, hypercall, map_shared_info, println, system_time_ns};

const EPERM: i64 = -1;
const ESRCH: i64 = -3;

fn remote_shutdown(domain_id: u16, why: u32) -> i64 {
    let s = SchedRemoteShutdown {
        domain_id,
        _pad: 0,
        reason: why,
    };
    hypercall(
        nr::SCHED_OP,
        u64::from(cmd::REMOTE_SHUTDOWN),
        &s as *const SchedRemoteShutdown as u64,
        0,
        0,
        0,
    )
}

fn as_domu() -> Verdict {
    let r = remote_shutdown(0, reason::POWEROFF);
    if r != EPERM {
        println!("FAIL: a domU shutting dom0 down got {r}, not -EPERM");
        return Verdict::Failure("remote_shutdown from a domU");
    }
    println!("remote_shutdown of dom0 from a domU: -EPERM; waiting for dom0 to stop this domain");
    println!("Test result: SUCCESS");
    loop {
        hypercall(nr::SCHED_OP, u64::from(cmd::YIELD), 0, 0, 0, 0);
    }
}

fn test(si: &StartInfo) -> Verdict {
    if cmdline(si).split(' ').any(|w| w == "domu") {
        return as_domu();
    }
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
    let r = remote_shutdown(DOMID_SELF, reason::POWEROFF);
    check!(
        failed,
        r == ESRCH,
        "remote_shutdown(DOMID_SELF) = {r}, not -ESRCH"
    );
    let r = remote_shutdown(999, reason::POWEROFF);
    check!(failed, r == ESRCH, "remote_shutdown(999) = {r}, not -ESRCH");
    // Let the domU check its side first.
    let t = system_time_ns() + 1_000_000_000;
    while system_time_ns() < t {
        hypercall(nr::SCHED_OP, u64::from(cmd::YIELD), 0, 0, 0, 0);
    }
    let r = remote_shutdown(1, reason::POWEROFF);
    check!(failed, r == 0, "remote_shutdown(1) = {r}");
    let r = remote_shutdown(1, reason::REBOOT);
    check!(
        failed,
        r == 0,
        "remote_shutdown(1) of a domain already shut down = {r}, not 0"
    );
    if failed {
        Verdict::Failure("remote_shutdown")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
