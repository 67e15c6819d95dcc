//! The credit scheduler seen from a domain, as a boot-time domU (several run at once, each with
//! its own `domU=` weight, cap and CPUs). Its command line picks the role:
//!
//! - `hog share=PPM tol=PPM`: a CPU-bound vCPU. Over the same window of system time in every
//!   domain ([`WINDOW`]) it measures the share of a CPU it got, from its own runstate
//!   (`VCPUOP_get_runstate_info`: time running), and checks it is `share` parts per million
//!   within `tol` (absolute, parts per million of a CPU). Weights 256/512/1024 on one CPU must
//!   give 1/7, 2/7, 4/7; a 25% cap 25%, even on an otherwise idle CPU; two hogs pinned to one
//!   CPU of two half each.
//! - `waker`: a vCPU that sleeps in `SCHEDOP_block` until its one-shot timer, over and over,
//!   next to a hog on the same CPU: woken by an event while it has credit, it is BOOSTed and
//!   must preempt the hog at once. It checks the median delay from the timer's deadline to
//!   running again is below 1 ms (Xen's rate limit bounds how long a hog keeps the CPU).
//!
//! - `exit`: succeeds at once (a domain for build-and-destroy cycles).
//!
//! Each prints what it measured and XTF's verdict, prefixed `(dN)` by Hestia.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::event_channel::{BindVirq, cmd};
use hestia_guests::xen_abi::sched::cmd as sched;
use hestia_guests::xen_abi::vcpu::cmd as vcpuop;
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr, virq};
use hestia_guests::{
    EVENT_VECTOR, ExcFrame, Verdict, ack_events, cmdline, event_channel_op, hypercall,
    install_traps, map_shared_info, println, register_event_callback, shared_byte, system_time_ns,
};

/// The measurement window, in system time (ns since Hestia booted): after every domU has been
/// built and started.
const WINDOW: (u64, u64) = (3_000_000_000, 13_000_000_000);
/// Timer sleeps the waker measures.
const WAKES: usize = 64;
/// How far ahead the waker sets its timer.
const SLEEP_NS: u64 = 3_000_000;

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector == EVENT_VECTOR {
        ack_events(0);
    } else {
        println!("unexpected exception {vector} at {:#x}", f.rip);
    }
}

/// vCPU 0's time spent running so far, from its runstate.
fn running_ns() -> u64 {
    let mut info = [0u64; 6];
    let r = hypercall(
        nr::VCPU_OP,
        u64::from(vcpuop::GET_RUNSTATE_INFO),
        0,
        info.as_mut_ptr() as u64,
        0,
        0,
    );
    if r == 0 { info[2] } else { 0 }
}

/// The value of `key=` on the command line.
fn arg(line: &str, key: &str) -> Option<u64> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn spin_until(t: u64) {
    while system_time_ns() < t {
        core::hint::spin_loop();
    }
}

fn hog(line: &str) -> Verdict {
    let (Some(share), Some(tol)) = (arg(line, "share"), arg(line, "tol")) else {
        return Verdict::Error("hog needs share= and tol=");
    };
    if system_time_ns() > WINDOW.0 {
        return Verdict::Error("started after the measurement window opened");
    }
    spin_until(WINDOW.0);
    let ran0 = running_ns();
    spin_until(WINDOW.1);
    let ran = running_ns().saturating_sub(ran0);
    let got = ran * 1_000_000 / (WINDOW.1 - WINDOW.0);
    println!(
        "hog: ran {} ms of {} ms: share {got} ppm, expected {share} +- {tol}",
        ran / 1_000_000,
        (WINDOW.1 - WINDOW.0) / 1_000_000
    );
    if got.abs_diff(share) <= tol {
        Verdict::Success
    } else {
        Verdict::Failure("CPU share outside the expected range")
    }
}

fn waker() -> Verdict {
    if register_event_callback() != 0 {
        return Verdict::Error("event callback");
    }
    let mut bind = BindVirq {
        virq: virq::TIMER,
        vcpu: 0,
        port: 0,
    };
    if event_channel_op(cmd::BIND_VIRQ, &mut bind) != 0 {
        return Verdict::Error("bind VIRQ_TIMER");
    }
    // Only the one-shot timer wakes it.
    hypercall(
        nr::VCPU_OP,
        u64::from(vcpuop::STOP_PERIODIC_TIMER),
        0,
        0,
        0,
        0,
    );
    // Measure while the hog is busy with its own window.
    spin_until(WINDOW.0);
    let mut delays = [0u64; WAKES];
    for d in delays.iter_mut() {
        let deadline = [system_time_ns() + SLEEP_NS, 0u64];
        hypercall(
            nr::VCPU_OP,
            u64::from(vcpuop::SET_SINGLESHOT_TIMER),
            0,
            deadline.as_ptr() as u64,
            0,
            0,
        );
        // Blocks with events enabled; the upcall runs before the call returns.
        hypercall(nr::SCHED_OP, u64::from(sched::BLOCK), 0, 0, 0, 0);
        shared_byte(1).store(1, core::sync::atomic::Ordering::SeqCst);
        *d = system_time_ns().saturating_sub(deadline[0]);
    }
    delays.sort_unstable();
    let (median, max) = (delays[WAKES / 2], delays[WAKES - 1]);
    println!(
        "waker: {WAKES} timer wake-ups next to a hog: median delay {} us, max {} us",
        median / 1000,
        max / 1000
    );
    if median < 1_000_000 {
        Verdict::Success
    } else {
        Verdict::Failure("an event-woken vCPU waited for the hog")
    }
}

fn test(si: &StartInfo) -> Verdict {
    install_traps(handler);
    if map_shared_info(si) != 0 {
        return Verdict::Error("cannot map shared_info");
    }
    let line = cmdline(si);
    match line.split(' ').next() {
        Some("hog") => hog(line),
        Some("waker") => waker(),
        // Started and done at once (a domain to build and destroy over and over).
        Some("exit") => Verdict::Success,
        _ => Verdict::Error("command line must start with hog, waker or exit"),
    }
}

hestia_guests::guest_main!(test);
