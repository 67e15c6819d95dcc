//! Time and events: pvclock and wallclock in shared_info; VIRQ_TIMER from a one-shot timer
//! (vcpu_op and set_timer_op) waking SCHEDOP_block and arriving as an upcall; IPI ports with
//! send, masking and EVTCHNOP_unmask; port status, close, error cases; SCHEDOP_poll's timeout.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::event_channel::{
    AllocUnbound, BindIpi, BindVirq, PortArg, Status, cmd, stat,
};
use hestia_guests::xen_abi::sched::cmd as sched;
use hestia_guests::xen_abi::xen::{DOMID_SELF, NR_VIRQS, StartInfo, hypercall as nr, virq};
use hestia_guests::{
    EVENT_VECTOR, ExcFrame, SHARED_INFO_VA, Verdict, ack_events, check, event_channel_op,
    hypercall, install_traps, map_shared_info, println, register_event_callback, shared_u32,
    shared_word, system_time_ns,
};

static EVENTS: AtomicU64 = AtomicU64::new(0);
static SEEN: AtomicU64 = AtomicU64::new(0);

/// The 2-level upcall handler, as Linux's events_2l does it.
fn handler(vector: u64, f: &mut ExcFrame) {
    if vector != EVENT_VECTOR {
        println!("unexpected exception {vector} at {:#x}", f.rip);
        return;
    }
    EVENTS.fetch_add(1, SeqCst);
    SEEN.fetch_or(ack_events(0), SeqCst);
}

/// `op` on `port` (close, send, unmask).
fn on_port(op: u32, port: u32) -> i64 {
    event_channel_op(op, &mut PortArg { port })
}

/// `EVTCHNOP_bind_virq` of `virq` on vCPU 0: the result and the port.
fn bind_virq(virq: u32) -> (i64, u32) {
    let mut b = BindVirq {
        virq,
        ..BindVirq::default()
    };
    (event_channel_op(cmd::BIND_VIRQ, &mut b), b.port)
}

fn block() -> i64 {
    hypercall(nr::SCHED_OP, u64::from(sched::BLOCK), 0, 0, 0, 0)
}

/// Masks events (vcpu_info[0].evtchn_upcall_mask) before a timer is armed for a block, as
/// Linux masks them before it halts: a timer that fires before the block (a loaded host can
/// take milliseconds to get there) then leaves its event pending, and SCHEDOP_block, which
/// unmasks, returns at once with the upcall. Unmasked, the upcall would come first and the
/// block would wait for a timer that is gone.
fn mask_events() {
    // SAFETY: byte 1 of vcpu_info[0] in the mapped shared_info page is this vCPU's own mask.
    unsafe { core::ptr::write_volatile((SHARED_INFO_VA + 1) as *mut u8, 1) };
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
    check!(failed, register_event_callback() == 0, "event callback");

    let t0 = system_time_ns();
    let wc = u64::from(shared_u32(3076)) | (u64::from(shared_u32(3084)) << 32);
    println!("system time {t0} ns, wallclock at boot {wc}");
    check!(
        failed,
        t0 > 0 && shared_u32(32) & 1 == 0,
        "pvclock not running (time {t0}, version {})",
        shared_u32(32)
    );
    check!(failed, wc > 1_577_836_800, "wallclock {wc} is before 2020");

    // VIRQ_TIMER through a one-shot vcpu_op timer, waking SCHEDOP_block. The periodic timer
    // (10 ms from the vCPU's start) is stopped before VIRQ_TIMER is bound: a tick in between
    // would leave the port pending, and the block would return at once.
    check!(
        failed,
        hypercall(nr::VCPU_OP, 7, 0, 0, 0, 0) == 0,
        "stop_periodic_timer"
    );
    let (r, timer_port) = bind_virq(virq::TIMER);
    check!(failed, r == 0, "bind_virq(TIMER)");
    mask_events();
    let deadline = [system_time_ns() + 5_000_000, 0u64];
    check!(
        failed,
        hypercall(nr::VCPU_OP, 8, 0, deadline.as_ptr() as u64, 0, 0) == 0,
        "set_singleshot_timer"
    );
    check!(failed, block() == 0, "block");
    let t1 = system_time_ns();
    check!(
        failed,
        EVENTS.load(SeqCst) == 1 && SEEN.load(SeqCst) & (1 << timer_port) != 0,
        "timer upcall: {} events, seen {:#x}",
        EVENTS.load(SeqCst),
        SEEN.load(SeqCst)
    );
    check!(
        failed,
        t1 >= deadline[0],
        "woke at {t1}, before the deadline {}",
        deadline[0]
    );

    // The same through set_timer_op.
    mask_events();
    check!(
        failed,
        hypercall(nr::SET_TIMER_OP, system_time_ns() + 2_000_000, 0, 0, 0, 0) == 0,
        "set_timer_op"
    );
    block();
    check!(
        failed,
        EVENTS.load(SeqCst) == 2,
        "set_timer_op upcall missing ({})",
        EVENTS.load(SeqCst)
    );

    // SCHEDOP_block inside a multicall: the vCPU leaves its CPU there, and the entries after
    // it run once it is woken (Xen preempts the multicall and resumes it): the runstate the
    // next entry reads is `running`, and the timer has fired by then.
    mask_events();
    let deadline = system_time_ns() + 3_000_000;
    check!(
        failed,
        hypercall(nr::SET_TIMER_OP, deadline, 0, 0, 0, 0) == 0,
        "set_timer_op"
    );
    let mut runstate = [0xffu64; 6];
    let mut calls = [
        [
            u64::from(nr::SCHED_OP),
            !0,
            u64::from(sched::BLOCK),
            0,
            0,
            0,
            0,
            0,
        ],
        [
            u64::from(nr::VCPU_OP),
            !0,
            4,
            0,
            runstate.as_mut_ptr() as u64,
            0,
            0,
            0,
        ],
    ];
    let r = hypercall(nr::MULTICALL, calls.as_mut_ptr() as u64, 2, 0, 0, 0);
    let after = system_time_ns();
    check!(
        failed,
        r == 0 && calls[0][1] == 0 && calls[1][1] == 0,
        "multicall block = {r}, results {:#x} {:#x}",
        calls[0][1],
        calls[1][1]
    );
    check!(
        failed,
        runstate[0] as u32 == 0,
        "the entry after a block ran in runstate {} (not running)",
        runstate[0] as u32
    );
    check!(
        failed,
        after >= deadline,
        "multicall returned at {after}, before the timer {deadline}"
    );
    check!(
        failed,
        EVENTS.load(SeqCst) == 3,
        "timer upcall after the multicall's block missing ({})",
        EVENTS.load(SeqCst)
    );
    // The checks below count the upcalls they cause from 2.
    EVENTS.fetch_sub(1, SeqCst);

    // An IPI port: send raises an upcall at once (events are unmasked after block).
    let mut i = BindIpi::default();
    check!(
        failed,
        event_channel_op(cmd::BIND_IPI, &mut i) == 0,
        "bind_ipi"
    );
    let ipi = i.port;
    check!(
        failed,
        on_port(cmd::SEND, ipi) == 0
            && EVENTS.load(SeqCst) == 3
            && SEEN.load(SeqCst) & (1 << ipi) != 0,
        "send to self: {} events",
        EVENTS.load(SeqCst)
    );
    // Masked: stays pending; EVTCHNOP_unmask delivers it.
    shared_word(2560).fetch_or(1 << ipi, SeqCst);
    on_port(cmd::SEND, ipi);
    check!(
        failed,
        EVENTS.load(SeqCst) == 3 && shared_word(2048).load(SeqCst) & (1 << ipi) != 0,
        "a masked port notified"
    );
    check!(
        failed,
        on_port(cmd::UNMASK, ipi) == 0 && EVENTS.load(SeqCst) == 4,
        "unmask did not deliver ({})",
        EVENTS.load(SeqCst)
    );

    // Status, close, errors.
    let mut st = Status {
        dom: DOMID_SELF,
        port: timer_port,
        ..Status::default()
    };
    check!(
        failed,
        event_channel_op(cmd::STATUS, &mut st) == 0
            && st.status == stat::VIRQ
            && st.u.word0 == virq::TIMER,
        "status of the timer port: {st:?}"
    );
    check!(failed, on_port(cmd::CLOSE, ipi) == 0, "close");
    check!(
        failed,
        on_port(cmd::SEND, ipi) == -22,
        "send to a closed port"
    );
    check!(
        failed,
        bind_virq(virq::TIMER).0 == -17,
        "second bind of VIRQ_TIMER must be -EEXIST"
    );
    check!(
        failed,
        bind_virq(NR_VIRQS).0 == -22,
        "VIRQ 24 must be -EINVAL"
    );
    check!(
        failed,
        hypercall(nr::VCPU_OP, 3, 1000, 0, 0, 0) == -2,
        "vcpu_op on vCPU 1000 must be -ENOENT"
    );
    check!(
        failed,
        hypercall(nr::VCPU_OP, 3, 0, 0, 0, 0) == 1,
        "vCPU 0 is up"
    );
    let short = [100u64];
    check!(
        failed,
        hypercall(nr::VCPU_OP, 6, 0, short.as_ptr() as u64, 0, 0) == -22,
        "a 100 ns period must be -EINVAL"
    );

    // SCHEDOP_poll on a port that never fires returns at its timeout.
    let mut u = AllocUnbound {
        dom: DOMID_SELF,
        remote_dom: 0,
        port: 0,
    };
    event_channel_op(cmd::ALLOC_UNBOUND, &mut u);
    let ports = [u.port];
    let t2 = system_time_ns();
    let poll = [ports.as_ptr() as u64, 1, t2 + 3_000_000];
    check!(
        failed,
        hypercall(
            nr::SCHED_OP,
            u64::from(sched::POLL),
            poll.as_ptr() as u64,
            0,
            0,
            0
        ) == 0,
        "poll"
    );
    check!(
        failed,
        system_time_ns() >= t2 + 3_000_000,
        "poll returned before its timeout"
    );
    println!(
        "{} upcalls, timer port {timer_port}, ipi port {ipi}",
        EVENTS.load(SeqCst)
    );
    if failed {
        Verdict::Failure("events and time")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
