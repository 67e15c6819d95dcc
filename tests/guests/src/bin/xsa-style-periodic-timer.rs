//! The periodic timer stays cancellable however often it fired, and its period cannot wrap.
//!
//! Hestia used to queue each firing of a periodic timer under a new handle while the vCPU kept
//! the handle of the first arming, so re-arming or stopping the timer after it had fired once
//! cancelled nothing: every `VCPUOP_set_periodic_timer` added one more tick chain (the timer
//! queue grew until Hestia ran out of memory or the CPU did nothing but fire them), and
//! `VCPUOP_stop_periodic_timer` left the ticks coming. A period near 2^64 wrapped the first
//! deadline into the past. The guest re-arms the timer 300 times, each after it fired, stops it,
//! and checks no tick arrives any more; then tries Xen's period limits (`STIME_DELTA_MAX`) and
//! `set_timer_op`'s huge-timeout rule (it fires in 100 ms). Passes on Xen 4.17.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::event_channel::{BindVirq, cmd as evtchn};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr, virq};
use hestia_guests::{
    Verdict, check, event_channel_op, hypercall, map_shared_info, println, shared_word,
    system_time_ns,
};

const EINVAL: i64 = -22;
const VCPUOP_SET_PERIODIC_TIMER: u64 = 6;
const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
/// `shared_info.evtchn_pending`.
const PENDING: u64 = 2048;

fn set_periodic(period: u64) -> i64 {
    let p = [period];
    hypercall(
        nr::VCPU_OP,
        VCPUOP_SET_PERIODIC_TIMER,
        0,
        p.as_ptr() as u64,
        0,
        0,
    )
}

/// Clears `port`'s pending bit; true if it was set.
fn take_pending(port: u32) -> bool {
    let bit = 1u64 << (port % 64);
    shared_word(PENDING + u64::from(port / 64) * 8)
        .fetch_and(!bit, core::sync::atomic::Ordering::SeqCst)
        & bit
        != 0
}

/// Spins until `port` is pending or `ns` have passed; true if it is pending. (Not
/// SCHEDOP_poll: on Xen the periodic timer does not run while its vCPU is blocked.)
fn wait_for(port: u32, ns: u64) -> bool {
    let end = system_time_ns() + ns;
    while system_time_ns() < end {
        if take_pending(port) {
            return true;
        }
        core::hint::spin_loop();
    }
    take_pending(port)
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
    let mut b = BindVirq {
        virq: virq::TIMER,
        ..BindVirq::default()
    };
    check!(
        failed,
        event_channel_op(evtchn::BIND_VIRQ, &mut b) == 0,
        "bind_virq(TIMER)"
    );
    let port = b.port;

    // Re-arm 300 times, each time after the timer fired at least once.
    let mut missed = 0;
    for i in 0..300u64 {
        check!(
            failed,
            set_periodic(1_000_000 + i * 1000) == 0,
            "set_periodic_timer #{i}"
        );
        take_pending(port);
        if !wait_for(port, 1_000_000_000) {
            missed += 1;
        }
    }
    check!(failed, missed == 0, "{missed} periodic ticks never came");
    check!(
        failed,
        hypercall(nr::VCPU_OP, VCPUOP_STOP_PERIODIC_TIMER, 0, 0, 0, 0) == 0,
        "stop_periodic_timer"
    );
    take_pending(port);
    let mut late = 0;
    for _ in 0..5 {
        if wait_for(port, 10_000_000) {
            late += 1;
        }
    }
    check!(failed, late == 0, "{late} ticks after stop_periodic_timer");

    // Xen's limits: 1 ms to STIME_DELTA_MAX (2^62 - 1).
    check!(
        failed,
        set_periodic(u64::MAX) == EINVAL,
        "a period of 2^64-1 must be -EINVAL"
    );
    check!(
        failed,
        set_periodic(1 << 62) == EINVAL,
        "a period of 2^62 must be -EINVAL"
    );
    check!(
        failed,
        set_periodic((1 << 62) - 1) == 0,
        "a period of 2^62-1 is valid"
    );
    check!(
        failed,
        !wait_for(port, 20_000_000),
        "a 146-year period ticked"
    );
    hypercall(nr::VCPU_OP, VCPUOP_STOP_PERIODIC_TIMER, 0, 0, 0, 0);

    // set_timer_op: a deadline negative as a signed value fires in 100 ms (Xen's workaround
    // for Linux's wrapped jiffies), not at once and not never.
    take_pending(port);
    let t0 = system_time_ns();
    check!(
        failed,
        hypercall(nr::SET_TIMER_OP, u64::MAX - 5, 0, 0, 0, 0) == 0,
        "set_timer_op(huge)"
    );
    let fired = wait_for(port, 2_000_000_000);
    let waited = system_time_ns() - t0;
    check!(
        failed,
        fired && waited >= 100_000_000,
        "huge set_timer_op fired: {fired}, after {waited} ns"
    );

    // VCPUOP_set_singleshot_timer with a deadline past 2^63 is in the past: it fires at once.
    let s = [1u64 << 63, 0];
    check!(
        failed,
        hypercall(
            nr::VCPU_OP,
            VCPUOP_SET_SINGLESHOT_TIMER,
            0,
            s.as_ptr() as u64,
            0,
            0
        ) == 0,
        "set_singleshot_timer(2^63)"
    );
    check!(
        failed,
        wait_for(port, 2_000_000_000),
        "a singleshot at 2^63 did not fire"
    );
    println!("timer port {port}");
    if failed {
        Verdict::Failure("periodic timer")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
