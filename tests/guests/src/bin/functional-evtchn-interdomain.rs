//! Event channels between domains (`EVTCHNOP_alloc_unbound`, `bind_interdomain`, `send`,
//! `close`, `status`, `bind_vcpu`), with Xen 4.17's results and error codes.
//!
//! Alone (no command line; passes on the Xen rig too): the domain is both ends of its
//! channels, as Linux dom0's xenstore channel (`alloc_unbound(DOMID_SELF, DOMID_SELF)`, bound
//! with `bind_interdomain(0, p)`): the new port starts pending, each end raises the other,
//! status names the other end, closing one end leaves the other unbound for the closer, which
//! binds it again; binding a port that is not unbound (closed, even the very port the bind
//! would take, or connected), reserved for another domain, out of range, or of an unknown
//! domain fails; `SCHEDOP_poll` refuses a port that is free, reserved or past the table
//! (-EINVAL) unless a pending one comes first; 4095 is the last port of the 2-level ABI.
//!
//! With a boot-time domU (dom0 `peer`, the domU `domu`), found by deterministic numbers: the
//! domU may not allocate a port of dom0 or read its status (-EPERM), switches to the FIFO ABI
//! while dom0 stays on 2-level, has ports up to 1023 under FIFO too, and reserves its port 2
//! for dom0; dom0 waits for it (status of the domU's port), binds it, events go both ways
//! (dom0's lands in the domU's FIFO queue, the domU's in dom0's 2-level bitmap), the domU
//! closes its end and dom0 sees its own port unbound for d1; dom0 then allocates a port of
//! the domU for itself (`remote_dom` DOMID_SELF names the caller), binds and signals it; the
//! domU resets its event channels (`EVTCHNOP_reset`) with that channel open, and dom0 sees
//! its end unbound for d1 while d1 lives on, back on 2-level, and reserves port 2 for dom0
//! again; dom0 binds and signals it, and once the domU has stopped and been destroyed dom0's
//! end is unbound for d1 and d1 is unknown (-ESRCH).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};

use hestia_guests::xen_abi::event_channel::{
    AllocUnbound, BindInterdomain, BindIpi, BindVcpu, ExpandArray, InitControl, PortArg, Reset,
    Status, StatusBinding, cmd, stat,
};
use hestia_guests::xen_abi::sched::cmd as sched;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, cmdline, event_channel_op, hypercall, map_shared_info, pfn_to_mfn, println,
    shared_word, system_time_ns,
};

const EPERM: i64 = -1;
const ENOENT: i64 = -2;
const ESRCH: i64 = -3;
const EINVAL: i64 = -22;
const ENOSPC: i64 = -28;
const EOPNOTSUPP: i64 = -95;

/// The domU of the two-domain run.
const DOMU: u16 = 1;
/// The port the domU reserves for dom0: its first free one (port 1 is its console's).
const DOMU_PORT: u32 = 2;
/// Filler of `Status.u`: Xen writes only the union member of the binding.
const FILL: StatusBinding = StatusBinding {
    word0: 0xaaaa_aaaa,
    port: 0xbbbb_bbbb,
};

fn alloc_unbound(dom: u16, remote_dom: u16) -> (i64, u32) {
    let mut a = AllocUnbound {
        dom,
        remote_dom,
        port: 0,
    };
    (event_channel_op(cmd::ALLOC_UNBOUND, &mut a), a.port)
}

fn bind_interdomain(remote_dom: u16, remote_port: u32) -> (i64, u32) {
    let mut b = BindInterdomain {
        remote_dom,
        remote_port,
        ..BindInterdomain::default()
    };
    (
        event_channel_op(cmd::BIND_INTERDOMAIN, &mut b),
        b.local_port,
    )
}

fn status(dom: u16, port: u32) -> (i64, Status) {
    let mut s = Status {
        dom,
        port,
        u: FILL,
        ..Status::default()
    };
    (event_channel_op(cmd::STATUS, &mut s), s)
}

/// True if `port` of `dom` is unbound for `remote` (Xen fills only the `domid_t`).
fn unbound_for(dom: u16, port: u32, remote: u16) -> bool {
    let (r, s) = status(dom, port);
    r == 0
        && s.status == stat::UNBOUND
        && s.u.word0 == (FILL.word0 & !0xffff) | u32::from(remote)
        && s.u.port == FILL.port
}

/// True if `port` of `dom` is connected to port `rport` of `rdom`.
fn connected(dom: u16, port: u32, rdom: u16, rport: u32) -> bool {
    let (r, s) = status(dom, port);
    r == 0
        && s.status == stat::INTERDOMAIN
        && s.u.word0 == (FILL.word0 & !0xffff) | u32::from(rdom)
        && s.u.port == rport
}

fn on_port(op: u32, port: u32) -> i64 {
    event_channel_op(op, &mut PortArg { port })
}

/// A guest page Hestia writes under the FIFO ABI.
#[repr(C, align(4096))]
struct Page([AtomicU32; 1024]);
/// The domU's FIFO control block (vCPU 0's, at offset 0) and its only event-array page (ports
/// 0-1023, all a boot-time domU has).
static CONTROL: Page = Page([const { AtomicU32::new(0) }; 1024]);
static ARRAY: Page = Page([const { AtomicU32::new(0) }; 1024]);
/// The domain uses the FIFO ABI: pending state is in the event words.
static FIFO: AtomicBool = AtomicBool::new(false);
/// Event-word bits: PENDING, LINKED and the link to the next port of the queue.
const PENDING: u32 = 1 << 31;
const LINKED: u32 = 1 << 29;
const LINK_MASK: u32 = (1 << 17) - 1;
/// The queue an event goes to by default (`EVTCHN_FIFO_PRIORITY_DEFAULT`).
const DEFAULT_QUEUE: usize = 7;

/// Switches to the FIFO ABI: vCPU 0's control block and one event-array page. Events the
/// switch carried over (the console's) are consumed, so the default queue starts empty.
fn use_fifo(si: &StartInfo) -> bool {
    let mfn = |p: &Page| pfn_to_mfn(si, p.0.as_ptr() as u64 >> 12);
    let mut c = InitControl {
        control_gfn: mfn(&CONTROL),
        ..InitControl::default()
    };
    let mut e = ExpandArray {
        array_gfn: mfn(&ARRAY),
    };
    let ok = event_channel_op(cmd::INIT_CONTROL, &mut c) == 0
        && event_channel_op(cmd::EXPAND_ARRAY, &mut e) == 0;
    FIFO.store(ok, SeqCst);
    for port in 0..1024 {
        take(port);
    }
    ok
}

/// True if the FIFO event `port` heads the default queue, which is marked ready.
fn queued(port: u32) -> bool {
    CONTROL.0[0].load(SeqCst) & 1 << DEFAULT_QUEUE != 0
        && CONTROL.0[2 + DEFAULT_QUEUE].load(SeqCst) == port
}

fn pending_word(port: u32) -> &'static core::sync::atomic::AtomicU64 {
    shared_word(2048 + u64::from(port / 64) * 8)
}

fn pending(port: u32) -> bool {
    match ARRAY.0.get(port as usize).filter(|_| FIFO.load(SeqCst)) {
        Some(w) => w.load(SeqCst) & PENDING != 0,
        None => pending_word(port).load(SeqCst) & (1 << (port % 64)) != 0,
    }
}

/// Clears `port`'s pending bit; returns whether it was set. Under FIFO the event is also taken
/// off its queue, as the guest's consumer does (the queue held this event only).
fn take(port: u32) -> bool {
    match ARRAY.0.get(port as usize).filter(|_| FIFO.load(SeqCst)) {
        Some(w) => {
            CONTROL.0[2 + DEFAULT_QUEUE].store(0, SeqCst);
            CONTROL.0[0].fetch_and(!(1 << DEFAULT_QUEUE), SeqCst);
            w.fetch_and(!(PENDING | LINKED | LINK_MASK), SeqCst) & PENDING != 0
        }
        None => {
            let bit = 1 << (port % 64);
            pending_word(port).fetch_and(!bit, SeqCst) & bit != 0
        }
    }
}

fn yield_cpu() {
    hypercall(nr::SCHED_OP, u64::from(sched::YIELD), 0, 0, 0, 0);
}

/// Waits (up to 10 s, polling the port) until `port` is pending; clears it.
fn wait_pending(port: u32) -> bool {
    poll_until(port, || pending(port));
    take(port)
}

/// `SCHEDOP_poll` on `ports`, for at most `timeout_ns`.
fn poll(ports: &[u32], timeout_ns: u64) -> i64 {
    let poll = [
        ports.as_ptr() as u64,
        ports.len() as u64,
        system_time_ns() + timeout_ns,
    ];
    hypercall(
        nr::SCHED_OP,
        u64::from(sched::POLL),
        poll.as_ptr() as u64,
        0,
        0,
        0,
    )
}

/// Waits (up to 10 s, polling `port`) until `cond` holds.
fn poll_until(port: u32, cond: impl Fn() -> bool) -> bool {
    let end = system_time_ns() + 10_000_000_000;
    while !cond() && system_time_ns() < end {
        poll(&[port], 100_000_000);
    }
    cond()
}

/// A free port of this domain above `from`.
fn free_port(from: u32) -> u32 {
    (from + 1..4096)
        .find(|&x| status(DOMID_SELF, x).1.status == stat::CLOSED)
        .unwrap_or(4095)
}

/// Waits (up to 10 s, yielding) until `cond` holds.
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let end = system_time_ns() + 10_000_000_000;
    while !cond() {
        if system_time_ns() > end {
            return false;
        }
        yield_cpu();
    }
    true
}

/// Allocates ports (unbound for the domain itself) until that fails, then closes them: the
/// error and the last port allocated.
fn exhaust() -> (i64, u32) {
    let (mut first, mut last) = (0, 0);
    let r = loop {
        match alloc_unbound(DOMID_SELF, DOMID_SELF) {
            (0, port) => {
                if first == 0 {
                    first = port;
                }
                last = port;
            }
            (r, _) => break r,
        }
    };
    for port in first..=last {
        on_port(cmd::CLOSE, port);
    }
    (r, last)
}

/// The domain alone, both ends of its channels (also on the Xen rig, as dom0).
fn loopback() -> bool {
    let mut failed = false;
    let (r, p) = alloc_unbound(DOMID_SELF, DOMID_SELF);
    check!(failed, r == 0, "alloc_unbound(SELF, SELF) = {r}");
    check!(
        failed,
        unbound_for(DOMID_SELF, p, 0),
        "port {p}: {:?}, not unbound for d0 (DOMID_SELF names the caller)",
        status(DOMID_SELF, p)
    );
    let (r, q) = bind_interdomain(DOMID_SELF, p);
    check!(
        failed,
        r == 0 && q != p,
        "bind_interdomain(SELF, {p}) = {r}, port {q}"
    );
    check!(failed, take(q), "the new port {q} is not pending");
    check!(failed, !take(p), "the remote end {p} became pending");
    check!(
        failed,
        connected(DOMID_SELF, q, 0, p) && connected(0, p, 0, q),
        "status: {:?} / {:?}",
        status(DOMID_SELF, q),
        status(0, p)
    );
    // Each end raises the other.
    check!(failed, on_port(cmd::SEND, q) == 0, "send {q}");
    check!(
        failed,
        take(p) && !take(q),
        "send on {q} must raise {p} only"
    );
    check!(failed, on_port(cmd::SEND, p) == 0, "send {p}");
    check!(
        failed,
        take(q) && !take(p),
        "send on {p} must raise {q} only"
    );
    // SCHEDOP_poll checks its ports first, in order (Xen's `evtchn_port_poll`): a pending one
    // returns at once; one that is free, reserved (0) or past the table is -EINVAL, and a port
    // past 4095 never reads the bit of its value modulo 4096.
    check!(failed, on_port(cmd::SEND, q) == 0, "send {q}");
    let free = free_port(p.max(q));
    for (ports, want, what) in [
        (&[p][..], 0, "a pending port"),
        (&[0], EINVAL, "port 0"),
        (&[free], EINVAL, "a free port"),
        (
            &[p + 4096],
            EINVAL,
            "a port past the table, a pending one modulo 4096",
        ),
        (&[p, free], 0, "a pending port before a free one"),
        (&[free, p], EINVAL, "a free port before a pending one"),
    ] {
        let r = poll(ports, 20_000_000);
        check!(
            failed,
            r == want,
            "poll {ports:?} ({what}) = {r}, not {want}"
        );
    }
    check!(failed, take(p), "{p} stayed pending through the polls");
    let mut v = BindVcpu { port: p, vcpu: 0 };
    check!(
        failed,
        event_channel_op(cmd::BIND_VCPU, &mut v) == 0,
        "bind_vcpu of an inter-domain port"
    );
    let mut v = BindVcpu {
        port: 0xffff,
        vcpu: 4000,
    };
    let r = event_channel_op(cmd::BIND_VCPU, &mut v);
    check!(
        failed,
        r == ENOENT,
        "bind_vcpu(bad port, bad vCPU) = {r}, not -ENOENT"
    );

    // What cannot be bound.
    let mut i = BindIpi::default();
    check!(
        failed,
        event_channel_op(cmd::BIND_IPI, &mut i) == 0,
        "bind_ipi"
    );
    let mut v = BindVcpu {
        port: i.port,
        vcpu: 0,
    };
    let r = event_channel_op(cmd::BIND_VCPU, &mut v);
    check!(
        failed,
        r == EINVAL,
        "bind_vcpu of an IPI port = {r}, not -EINVAL"
    );
    let (r, other) = alloc_unbound(DOMID_SELF, 5);
    check!(
        failed,
        r == 0 && unbound_for(DOMID_SELF, other, 5),
        "alloc_unbound(SELF, 5) = {r}: {:?}",
        status(DOMID_SELF, other)
    );
    for (what, port) in [
        ("connected already", p),
        ("an IPI port", i.port),
        ("reserved for d5", other),
        ("port 0", 0),
        ("port 4096", 4096),
        ("port 2^32-1", u32::MAX),
    ] {
        let (r, _) = bind_interdomain(DOMID_SELF, port);
        check!(
            failed,
            r == EINVAL,
            "bind_interdomain to {what} = {r}, not -EINVAL"
        );
    }
    for r in [
        bind_interdomain(1000, 1).0,
        alloc_unbound(1000, DOMID_SELF).0,
        status(1000, 1).0,
    ] {
        check!(failed, r == ESRCH, "domain 1000: {r}, not -ESRCH");
    }
    check!(
        failed,
        status(DOMID_SELF, 4096).0 == EINVAL,
        "status of port 4096"
    );
    for port in [i.port, other] {
        check!(failed, on_port(cmd::CLOSE, port) == 0, "close {port}");
    }

    // Closing one end leaves the other unbound for the closer, which binds it again.
    check!(failed, on_port(cmd::CLOSE, q) == 0, "close {q}");
    check!(
        failed,
        unbound_for(DOMID_SELF, p, 0),
        "after closing {q}, {p} is {:?}",
        status(DOMID_SELF, p)
    );
    let (r, s) = status(DOMID_SELF, q);
    check!(
        failed,
        r == 0 && s.status == stat::CLOSED && s.u.word0 == FILL.word0,
        "closed {q}: {r} {s:?}"
    );
    check!(
        failed,
        on_port(cmd::SEND, p) == 0 && !take(p) && !take(q),
        "send on the unbound end must be dropped"
    );
    check!(
        failed,
        on_port(cmd::SEND, q) == EINVAL,
        "send on a closed port"
    );
    // The closed port is also the one a bind would take: a port cannot be its own other end.
    let (r, _) = bind_interdomain(DOMID_SELF, q);
    check!(
        failed,
        r == EINVAL,
        "bind_interdomain to the closed port {q} = {r}, not -EINVAL"
    );
    check!(
        failed,
        on_port(cmd::CLOSE, q) == EINVAL,
        "close of a closed port"
    );
    let (r, q2) = bind_interdomain(0, p);
    check!(
        failed,
        r == 0 && take(q2),
        "bind_interdomain(0, {p}) again = {r}"
    );
    check!(
        failed,
        on_port(cmd::SEND, p) == 0 && take(q2),
        "send on the rebound channel"
    );
    check!(failed, on_port(cmd::CLOSE, p) == 0, "close {p}");
    check!(
        failed,
        unbound_for(0, q2, 0),
        "after closing {p}, {q2} is {:?}",
        status(0, q2)
    );
    check!(failed, on_port(cmd::CLOSE, q2) == 0, "close {q2}");

    // The 2-level ABI's last port is 4095 (dom0's max_evtchn_port is unlimited).
    let (r, last) = exhaust();
    check!(
        failed,
        r == ENOSPC && last == 4095,
        "ports ran out at {last} with {r}, not at 4095 with -ENOSPC"
    );
    println!("loopback channels: ports {p} and {q}, last port {last}");
    !failed
}

/// dom0's side of the two-domain run.
fn as_dom0() -> bool {
    let mut failed = false;
    check!(
        failed,
        wait_for(|| unbound_for(DOMU, DOMU_PORT, 0)),
        "d1 port {DOMU_PORT} never became unbound for d0: {:?}",
        status(DOMU, DOMU_PORT)
    );
    let (r, l) = bind_interdomain(DOMU, DOMU_PORT);
    check!(
        failed,
        r == 0 && take(l),
        "bind_interdomain(d1, {DOMU_PORT}) = {r}"
    );
    check!(
        failed,
        connected(DOMU, DOMU_PORT, 0, l) && connected(DOMID_SELF, l, DOMU, DOMU_PORT),
        "status: {:?} / {:?}",
        status(DOMU, DOMU_PORT),
        status(DOMID_SELF, l)
    );
    check!(failed, on_port(cmd::SEND, l) == 0, "send to d1");
    check!(failed, wait_pending(l), "no event from d1 on port {l}");
    check!(
        failed,
        wait_for(|| unbound_for(DOMID_SELF, l, DOMU)),
        "d1 closed its end, but port {l} is {:?}",
        status(DOMID_SELF, l)
    );
    check!(
        failed,
        on_port(cmd::SEND, l) == 0,
        "send on the unbound port"
    );

    // A port of d1, allocated by dom0 for itself.
    let (r, x) = alloc_unbound(DOMU, DOMID_SELF);
    check!(
        failed,
        r == 0 && x == DOMU_PORT && unbound_for(DOMU, x, 0),
        "alloc_unbound(d1, SELF) = {r}, port {x}: {:?}",
        status(DOMU, x)
    );
    let (r, l2) = bind_interdomain(DOMU, x);
    check!(
        failed,
        r == 0 && take(l2),
        "bind_interdomain(d1, {x}) = {r}"
    );
    check!(failed, on_port(cmd::SEND, l2) == 0, "send to d1 again");
    // d1 resets its event channels, then reserves port 2 for dom0 again: the reset left this
    // end unbound (d1 lives on: it waits for the event below).
    check!(
        failed,
        wait_for(|| unbound_for(DOMU, x, 0)),
        "d1 port {x} never became unbound for d0 again: {:?}",
        status(DOMU, x)
    );
    check!(
        failed,
        unbound_for(DOMID_SELF, l2, DOMU),
        "d1 reset its channels, but port {l2} is {:?}",
        status(DOMID_SELF, l2)
    );
    let (r, l3) = bind_interdomain(DOMU, x);
    check!(
        failed,
        r == 0 && take(l3) && on_port(cmd::SEND, l3) == 0,
        "bind_interdomain(d1, {x}) after its reset = {r}"
    );
    // d1 stops; its destruction closes its end.
    check!(
        failed,
        wait_for(|| unbound_for(DOMID_SELF, l3, DOMU)),
        "d1 stopped, but port {l3} is {:?}",
        status(DOMID_SELF, l3)
    );
    check!(
        failed,
        wait_for(|| status(DOMU, x).0 == ESRCH),
        "d1 still known: {:?}",
        status(DOMU, x)
    );
    check!(
        failed,
        alloc_unbound(DOMU, DOMID_SELF).0 == ESRCH && bind_interdomain(DOMU, x).0 == ESRCH,
        "a destroyed domain must be -ESRCH"
    );
    for port in [l, l2, l3] {
        check!(failed, on_port(cmd::CLOSE, port) == 0, "close {port}");
    }
    !failed
}

/// The domU's side of the two-domain run.
fn as_domu(si: &StartInfo) -> bool {
    let mut failed = false;
    let (r, _) = alloc_unbound(0, DOMID_SELF);
    check!(
        failed,
        r == EPERM,
        "a domU allocating a port of d0: {r}, not -EPERM"
    );
    let (r, _) = status(0, 1);
    check!(
        failed,
        r == EPERM,
        "a domU reading d0's port status: {r}, not -EPERM"
    );
    check!(failed, use_fifo(si), "cannot switch to the FIFO ABI");
    // Ports up to 1023 (max_evtchn_port of a boot-time domU, which FIFO's 2^17 does not
    // lift), reserved for itself meanwhile.
    let (r, last) = exhaust();
    check!(
        failed,
        r == ENOSPC && last == 1023,
        "ports ran out at {last} with {r}, not at 1023 with -ENOSPC"
    );
    let (r, p) = alloc_unbound(DOMID_SELF, 0);
    check!(
        failed,
        r == 0 && p == DOMU_PORT,
        "alloc_unbound(SELF, 0) = {r}, port {p}"
    );
    check!(
        failed,
        poll_until(p, || queued(p)),
        "d0's event did not reach port {p}'s FIFO queue"
    );
    check!(failed, wait_pending(p), "no event from d0 on port {p}");
    let (r, s) = status(DOMID_SELF, p);
    check!(
        failed,
        r == 0 && s.status == stat::INTERDOMAIN && s.u.word0 & 0xffff == 0,
        "port {p}: {s:?}"
    );
    check!(failed, on_port(cmd::SEND, p) == 0, "send to d0");
    check!(failed, on_port(cmd::CLOSE, p) == 0, "close {p}");
    // dom0 allocates the same port again, for itself, binds and signals it.
    check!(
        failed,
        wait_pending(p),
        "no event on d0's port {p} of this domain"
    );
    let (r, s) = status(DOMID_SELF, p);
    check!(
        failed,
        r == 0 && s.status == stat::INTERDOMAIN && s.u.word0 & 0xffff == 0,
        "port {p}: {s:?}"
    );
    // A reset with that channel open: every port closed (dom0's end becomes unbound) but the
    // console's, and the domain back on 2-level.
    let r = event_channel_op(cmd::RESET, &mut Reset { dom: DOMID_SELF });
    check!(failed, r == 0, "EVTCHNOP_reset = {r}");
    FIFO.store(false, SeqCst);
    let mut e = ExpandArray { array_gfn: 0 };
    let r = event_channel_op(cmd::EXPAND_ARRAY, &mut e);
    check!(
        failed,
        status(DOMID_SELF, p).1.status == stat::CLOSED && r == EOPNOTSUPP,
        "after the reset: port {p} {:?}, expand_array {r}",
        status(DOMID_SELF, p)
    );
    let (r, p) = alloc_unbound(DOMID_SELF, 0);
    check!(
        failed,
        r == 0 && p == DOMU_PORT,
        "alloc_unbound(SELF, 0) after the reset = {r}, port {p}"
    );
    check!(
        failed,
        wait_pending(p),
        "no event from d0 on port {p} after the reset"
    );
    !failed
}

fn test(si: &StartInfo) -> Verdict {
    if map_shared_info(si) != 0 {
        return Verdict::Error("cannot map shared_info");
    }
    let line = cmdline(si);
    let ok = if line.split(' ').any(|w| w == "domu") {
        as_domu(si)
    } else if line.split(' ').any(|w| w == "peer") {
        as_dom0()
    } else {
        loopback()
    };
    if ok {
        Verdict::Success
    } else {
        Verdict::Failure("inter-domain event channels")
    }
}

hestia_guests::guest_main!(test);
