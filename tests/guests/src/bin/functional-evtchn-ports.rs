//! Which event-channel ports exist, as Xen 4.17 answers: Xen allocates its port structures in
//! buckets of 64 (Debian's build), the first when the domain is created and each further one
//! when every port below it is taken, and a port in no bucket yet is invalid for every
//! sub-op (`EVTCHNOP_status` -EINVAL), not merely closed. Passes on Xen 4.17 on the rig.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::event_channel::{AllocUnbound, PortArg, Status, cmd, stat};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo};
use hestia_guests::{Verdict, check, event_channel_op};

const EINVAL: i64 = -22;
/// Ports per bucket of Xen's port structures.
const BUCKET: u32 = 64;

/// `EVTCHNOP_status` of one of this domain's ports: (result, status).
fn status(port: u32) -> (i64, u32) {
    let mut s = Status {
        dom: DOMID_SELF,
        port,
        ..Default::default()
    };
    let r = event_channel_op(cmd::STATUS, &mut s);
    (r, s.status)
}

fn alloc_unbound() -> (i64, u32) {
    let mut a = AllocUnbound {
        dom: DOMID_SELF,
        remote_dom: DOMID_SELF,
        port: 0,
    };
    let r = event_channel_op(cmd::ALLOC_UNBOUND, &mut a);
    (r, a.port)
}

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    // A new domain: the first bucket exists, nothing past it.
    for p in [1, 31, BUCKET - 1] {
        let got = status(p);
        check!(
            failed,
            got == (0, stat::CLOSED),
            "status of port {p}: {got:?}"
        );
    }
    for p in [BUCKET, BUCKET + 1, 2 * BUCKET, 1023, 4095, 4096] {
        let got = status(p).0;
        check!(
            failed,
            got == EINVAL,
            "status of port {p}: {got}, not -EINVAL"
        );
    }
    let mut unmask = PortArg { port: BUCKET + 3 };
    let r = event_channel_op(cmd::UNMASK, &mut unmask);
    check!(failed, r == EINVAL, "unmask of a port in no bucket: {r}");
    // Taking every port of the first bucket does not create the second; the next does.
    for want in 1..BUCKET {
        let got = alloc_unbound();
        check!(failed, got == (0, want), "allocation {want}: {got:?}");
    }
    check!(
        failed,
        status(BUCKET).0 == EINVAL,
        "port {BUCKET} exists before it is allocated"
    );
    let got = alloc_unbound();
    check!(
        failed,
        got == (0, BUCKET),
        "the first port of the second bucket: {got:?}"
    );
    let got = status(BUCKET);
    check!(
        failed,
        got == (0, stat::UNBOUND),
        "status of port {BUCKET}: {got:?}"
    );
    let got = status(2 * BUCKET - 1);
    check!(
        failed,
        got == (0, stat::CLOSED),
        "the second bucket's last port: {got:?}"
    );
    let got = status(2 * BUCKET).0;
    check!(
        failed,
        got == EINVAL,
        "the third bucket exists already: {got}"
    );
    let mut close = PortArg { port: BUCKET };
    let r = event_channel_op(cmd::CLOSE, &mut close);
    check!(failed, r == 0, "close of port {BUCKET}: {r}");
    let got = status(BUCKET);
    check!(
        failed,
        got == (0, stat::CLOSED),
        "a closed port keeps its bucket: {got:?}"
    );
    if failed {
        Verdict::Failure("event-channel ports")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
