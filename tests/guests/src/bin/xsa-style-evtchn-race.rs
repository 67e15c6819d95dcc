//! Two domains racing on the same inter-domain channels, on two CPUs, and one of them dying in
//! the middle: Hestia must neither deadlock nor leave a port naming a destroyed domain.
//!
//! The domU (`domu`) reserves ports for dom0, signals and closes them, over and over, for
//! two seconds, then stops. dom0 meanwhile binds every port of the domU it can (an unbound
//! port reserved for it, found by number), sends on it, reads its status, closes it, or
//! leaves it bound for the domU to close; it goes on doing so while the domU is destroyed.
//! Afterwards no port of dom0 may still be connected (each is closed or unbound for d1), the
//! domU is unknown (-ESRCH), and every call returned one of the codes Xen 4.17 gives for these
//! races (0, -EINVAL for a port that changed, -ESRCH once the domU is gone, -EPERM... never).
#![no_std]
#![no_main]

use hestia_guests::xen_abi::event_channel::{
    AllocUnbound, BindInterdomain, PortArg, Status, cmd, stat,
};
use hestia_guests::xen_abi::sched::cmd as sched;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, cmdline, event_channel_op, hypercall, map_shared_info, println, system_time_ns,
};

const ESRCH: i64 = -3;
const EINVAL: i64 = -22;
const DOMU: u16 = 1;
/// The domU's ports dom0 tries (its console holds port 1).
const PORTS: core::ops::Range<u32> = 2..10;

fn on_port(op: u32, port: u32) -> i64 {
    event_channel_op(op, &mut PortArg { port })
}

fn status(dom: u16, port: u32) -> (i64, Status) {
    let mut s = Status {
        dom,
        port,
        ..Status::default()
    };
    (event_channel_op(cmd::STATUS, &mut s), s)
}

/// The domU: reserve, signal, close, for two seconds.
fn as_domu() -> bool {
    let mut failed = false;
    let end = system_time_ns() + 2_000_000_000;
    let mut rounds = 0u64;
    while system_time_ns() < end {
        let mut taken = [0u32; 8];
        for slot in taken.iter_mut() {
            let mut a = AllocUnbound {
                dom: DOMID_SELF,
                remote_dom: 0,
                port: 0,
            };
            let r = event_channel_op(cmd::ALLOC_UNBOUND, &mut a);
            check!(failed, r == 0, "alloc_unbound: {r}");
            *slot = a.port;
        }
        for &p in &taken {
            let r = on_port(cmd::SEND, p);
            check!(failed, r == 0, "send {p}: {r}");
        }
        // Leave half of them to dom0 for a while.
        for &p in taken.iter().step_by(2) {
            let r = on_port(cmd::CLOSE, p);
            check!(failed, r == 0, "close {p}: {r}");
        }
        hypercall(nr::SCHED_OP, u64::from(sched::YIELD), 0, 0, 0, 0);
        for &p in taken.iter().skip(1).step_by(2) {
            let r = on_port(cmd::CLOSE, p);
            check!(failed, r == 0, "close {p}: {r}");
        }
        rounds += 1;
        if failed {
            break;
        }
    }
    println!("{rounds} rounds; stopping with ports left to dom0");
    // Stop with channels still bound: the destruction must close them.
    for _ in PORTS {
        let mut a = AllocUnbound {
            dom: DOMID_SELF,
            remote_dom: 0,
            port: 0,
        };
        event_channel_op(cmd::ALLOC_UNBOUND, &mut a);
    }
    let wait = system_time_ns() + 50_000_000;
    while system_time_ns() < wait {
        hypercall(nr::SCHED_OP, u64::from(sched::YIELD), 0, 0, 0, 0);
    }
    !failed
}

/// dom0: bind whatever is there, until the domU has been gone a while.
fn as_dom0() -> bool {
    let mut failed = false;
    let (mut bound, mut gone_since) = (0u64, None);
    let mut mine = [0u32; 16];
    loop {
        for (i, rport) in PORTS.enumerate() {
            let mut b = BindInterdomain {
                remote_dom: DOMU,
                remote_port: rport,
                ..BindInterdomain::default()
            };
            let r = event_channel_op(cmd::BIND_INTERDOMAIN, &mut b);
            check!(
                failed,
                r == 0 || r == EINVAL || r == ESRCH,
                "bind_interdomain(d1, {rport}): {r}"
            );
            if r == ESRCH && gone_since.is_none() {
                gone_since = Some(system_time_ns());
            }
            if r != 0 {
                continue;
            }
            bound += 1;
            let l = b.local_port;
            check!(failed, on_port(cmd::SEND, l) == 0, "send {l}");
            let (r, _) = status(DOMU, rport);
            check!(failed, r == 0 || r == ESRCH, "status(d1, {rport}): {r}");
            // Close every other binding at once; keep the rest until the next pass.
            if bound % 2 == 0 {
                check!(failed, on_port(cmd::CLOSE, l) == 0, "close {l}");
            } else if let Some(old) = mine.get_mut(i) {
                if *old != 0 {
                    check!(failed, on_port(cmd::CLOSE, *old) == 0, "close {}", *old);
                }
                *old = l;
            }
        }
        if failed || gone_since.is_some_and(|t| system_time_ns() > t + 100_000_000) {
            break;
        }
        if system_time_ns() > 30_000_000_000 {
            println!("FAIL: d1 never went away");
            return false;
        }
    }
    // Nothing of dom0 may still name d1.
    for port in 1..64 {
        let (r, s) = status(DOMID_SELF, port);
        check!(
            failed,
            r == 0 && s.status != stat::INTERDOMAIN,
            "port {port} still connected after d1's destruction: {r} {s:?}"
        );
        if s.status == stat::UNBOUND {
            check!(failed, s.u.word0 == u32::from(DOMU), "port {port}: {s:?}");
        }
        if s.status != stat::CLOSED {
            check!(failed, on_port(cmd::CLOSE, port) == 0, "close {port}");
        }
    }
    println!("{bound} bindings won");
    check!(failed, bound > 0, "dom0 never bound a port of d1");
    !failed
}

fn test(si: &StartInfo) -> Verdict {
    if map_shared_info(si) != 0 {
        return Verdict::Error("cannot map shared_info");
    }
    let ok = if cmdline(si).split(' ').any(|w| w == "domu") {
        as_domu()
    } else {
        as_dom0()
    };
    if ok {
        Verdict::Success
    } else {
        Verdict::Failure("racing inter-domain channels")
    }
}

hestia_guests::guest_main!(test);
