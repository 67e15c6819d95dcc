//! Benchmark guest (run by `cargo xtask bench`, on Hestia and on the Xen reference rig): the
//! null hypercall round trip (`xen_version(0)` through the hypercall page) and an event-channel
//! send-to-self with its upcall, each the median of 100,000 iterations in TSC cycles, printed as
//! `BENCH <name> <cycles>` lines. shared_info is mapped over a page of the guest's own image
//! (as XTF does), so the guest makes no assumption about the builder's layout.
//!
//! Then the grant-table figures, on a grant of the domain to itself (Xen's rig runs them too):
//! a `map_grant_ref` (host mapping) plus `unmap_grant_ref` round trip, and a 4 KiB
//! `GNTTABOP_copy` from the grant into a frame of the domain.
//!
//! With `switch` on its command line (booted with two vCPUs on one CPU) it measures instead the
//! cost of a vCPU context switch: vCPU 0 and vCPU 1 hand a token back and forth, each yielding
//! (`SCHEDOP_yield`) until it is its turn; a round is two switches, and the figure is half the
//! median round.
//!
//! With `ping` (dom0) and `pong` (a boot-time domU) on their command lines it measures an
//! event-channel round trip between two domains: the domU reserves its first free port (2) for
//! dom0 and answers every event on it with one back; dom0 binds it and times send-and-wait
//! (`SCHEDOP_poll` on its end, both sides blocking), printing the median of 10,000 round trips
//! as `BENCH <name> <cycles>`; `one-cpu` on dom0's command line names the figure for a machine
//! of one CPU (both domains on it), else for two (the domU pinned to the second CPU). With
//! `loopback` (two vCPUs) the same round trip runs between the domain's own two vCPUs over a
//! channel whose both ends are its own, a figure the Xen rig gives too.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::grant::{
    self, Page, by_frame, by_ref, grant, map_at, mfn_of, remap, setup_own_table, unmap,
};
use hestia_guests::xen_abi::event_channel::{
    AllocUnbound, BindInterdomain, BindIpi, BindVcpu, Send, Status, cmd as evtchn, stat,
};
use hestia_guests::xen_abi::grant_table::{gntcopy, gtf};
use hestia_guests::xen_abi::mmu::uvmf;
use hestia_guests::xen_abi::sched::cmd as sched;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    EVENT_VECTOR, ExcFrame, Verdict, check, cmdline, event_channel_op, hypercall, install_traps,
    println, register_event_callback, start_vcpu, yield_now,
};

const ITERATIONS: usize = 100_000;

static SHARED_PAGE: Page = Page([0; 4096]);
static mut SAMPLES: [u64; ITERATIONS] = [0; ITERATIONS];
static UPCALLS: AtomicU64 = AtomicU64::new(0);

fn shared() -> u64 {
    (&raw const SHARED_PAGE) as u64
}

fn word(off: u64) -> &'static AtomicU64 {
    // SAFETY: the page is remapped to shared_info before any use; `off` is 8-byte aligned.
    unsafe { &*((shared() + off) as *const AtomicU64) }
}

fn handler(v: u64, _f: &mut ExcFrame) {
    if v == EVENT_VECTOR {
        UPCALLS.fetch_add(1, SeqCst);
        // SAFETY: byte 0 of vcpu_info[0] is evtchn_upcall_pending.
        unsafe { core::ptr::write_volatile(shared() as *mut u8, 0) };
        let sel = word(8).swap(0, SeqCst);
        if sel & 1 != 0 {
            let bits = word(2048).load(SeqCst) & !word(2560).load(SeqCst);
            word(2048).fetch_and(!bits, SeqCst);
        }
    }
}

fn rdtsc() -> u64 {
    // SAFETY: reads the time-stamp counter; the fence keeps it ordered with the measured code.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

fn median(f: impl FnMut()) -> u64 {
    median_of(ITERATIONS, f)
}

/// The median of `n` (at most [`ITERATIONS`]) timings of `f`.
fn median_of(n: usize, mut f: impl FnMut()) -> u64 {
    let ptr: *mut [u64; ITERATIONS] = &raw mut SAMPLES;
    // SAFETY: the only user of SAMPLES, single-threaded.
    let samples = unsafe { &mut *ptr };
    let samples = &mut samples[..n.min(ITERATIONS)];
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        f();
        *s = rdtsc() - t0;
    }
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Whose turn it is: even for vCPU 0, odd for vCPU 1.
static TURN: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACK: Stack = Stack([0; 16384]);

/// vCPU 1: takes each odd turn and hands it back.
extern "C" fn partner() -> ! {
    loop {
        while TURN.load(SeqCst) & 1 == 0 {
            yield_now();
        }
        TURN.fetch_add(1, SeqCst);
    }
}

/// Starts vCPU 1 at `entry`; false if the domain has no second vCPU.
fn start_vcpu1(si: &StartInfo, entry: extern "C" fn() -> !) -> bool {
    start_vcpu(si, 1, entry, (&raw const AP_STACK) as u64 + 16384)
}

/// The vCPU switch figure: vCPU 1 started, then rounds of two switches.
fn switch_cost(si: &StartInfo) -> Verdict {
    if !start_vcpu1(si, partner) {
        return Verdict::Error("needs a second vCPU (dom0_max_vcpus=2)");
    }
    let round = median(|| {
        TURN.fetch_add(1, SeqCst);
        while TURN.load(SeqCst) & 1 == 1 {
            yield_now();
        }
    });
    println!("BENCH vcpu_switch_yield_cycles {}", round / 2);
    Verdict::Success
}

/// Round trips of the two-domain ping-pong.
const ROUND_TRIPS: usize = 10_000;
/// The domU's port for dom0: its first free one (port 1 is its console's).
const PONG_PORT: u32 = 2;

/// Clears `port`'s pending bit (ports below 64); true if it was set.
fn take(port: u32) -> bool {
    let bit = 1 << port;
    word(2048).fetch_and(!bit, SeqCst) & bit != 0
}

/// Waits (`SCHEDOP_poll`, no timeout) until `port` (below 64) is pending, and clears it.
fn wait(port: u32) {
    let ports = [port];
    let poll = [ports.as_ptr() as u64, 1, 0];
    while !take(port) {
        hypercall(
            nr::SCHED_OP,
            u64::from(sched::POLL),
            poll.as_ptr() as u64,
            0,
            0,
            0,
        );
    }
}

/// The domU: one event back for each event on its port, until dom0 stops the machine.
fn pong() -> Verdict {
    let mut a = AllocUnbound {
        dom: DOMID_SELF,
        remote_dom: 0,
        port: 0,
    };
    if event_channel_op(evtchn::ALLOC_UNBOUND, &mut a) != 0 || a.port != PONG_PORT {
        return Verdict::Error("alloc_unbound for dom0");
    }
    let mut port = Send { port: a.port };
    loop {
        wait(a.port);
        event_channel_op(evtchn::SEND, &mut port);
    }
}

/// The port vCPU 1 answers in the loopback ping-pong.
static LOOP_PORT: AtomicU64 = AtomicU64::new(0);

/// vCPU 1 of the loopback ping-pong: one event back on its end for each it receives.
extern "C" fn loop_partner() -> ! {
    let p = LOOP_PORT.load(SeqCst) as u32;
    let mut port = Send { port: p };
    loop {
        wait(p);
        event_channel_op(evtchn::SEND, &mut port);
    }
}

/// The same round trip within one domain, between its two vCPUs, over a loopback channel
/// (`alloc_unbound(SELF, SELF)`, `bind_interdomain(SELF, p)`, the first end moved to vCPU 1):
/// the inter-domain path the Xen rig can measure too. Both ports are masked (no upcalls;
/// `SCHEDOP_poll` waits on pending bits).
fn loopback_pingpong(si: &StartInfo) -> Verdict {
    let mut a = AllocUnbound {
        dom: DOMID_SELF,
        remote_dom: DOMID_SELF,
        port: 0,
    };
    if event_channel_op(evtchn::ALLOC_UNBOUND, &mut a) != 0 {
        return Verdict::Error("alloc_unbound(SELF, SELF)");
    }
    let mut b = BindInterdomain {
        remote_dom: DOMID_SELF,
        remote_port: a.port,
        ..BindInterdomain::default()
    };
    if event_channel_op(evtchn::BIND_INTERDOMAIN, &mut b) != 0 || b.local_port >= 64 {
        return Verdict::Error("bind_interdomain(SELF, p)");
    }
    let (p, q) = (a.port, b.local_port);
    word(2560).fetch_or(1 << p | 1 << q, SeqCst);
    take(q);
    let mut v = BindVcpu { port: p, vcpu: 1 };
    LOOP_PORT.store(u64::from(p), SeqCst);
    if event_channel_op(evtchn::BIND_VCPU, &mut v) != 0 || !start_vcpu1(si, loop_partner) {
        return Verdict::Error("needs a second vCPU (dom0_max_vcpus=2)");
    }
    let mut port = Send { port: q };
    let rtt = median_of(ROUND_TRIPS, || {
        event_channel_op(evtchn::SEND, &mut port);
        wait(q);
    });
    println!("BENCH evtchn_loopback_pingpong_cycles {rtt}");
    Verdict::Success
}

/// dom0: binds the domU's port once it is there, then times round trips.
fn ping(si: &StartInfo) -> Verdict {
    let mut st = Status {
        dom: 1,
        port: PONG_PORT,
        ..Status::default()
    };
    while event_channel_op(evtchn::STATUS, &mut st) != 0 || st.status != stat::UNBOUND {
        yield_now();
    }
    let mut b = BindInterdomain {
        remote_dom: 1,
        remote_port: PONG_PORT,
        ..BindInterdomain::default()
    };
    if event_channel_op(evtchn::BIND_INTERDOMAIN, &mut b) != 0 || b.local_port >= 64 {
        return Verdict::Error("bind_interdomain");
    }
    take(b.local_port);
    let mut port = Send { port: b.local_port };
    let rtt = median_of(ROUND_TRIPS, || {
        event_channel_op(evtchn::SEND, &mut port);
        wait(b.local_port);
    });
    let cpus = if cmdline(si).split(' ').any(|w| w == "one-cpu") {
        "same_cpu"
    } else {
        "cross_cpu"
    };
    println!("BENCH evtchn_pingpong_{cpus}_cycles {rtt}");
    Verdict::Success
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    if cmdline(si).split(' ').any(|w| w == "switch") {
        return switch_cost(si);
    }
    check!(
        failed,
        hypercall(
            nr::UPDATE_VA_MAPPING,
            shared(),
            si.shared_info | 0x27,
            uvmf::INVLPG,
            0,
            0
        ) == 0,
        "map shared_info"
    );
    if cmdline(si).split(' ').any(|w| w == "pong") {
        return pong();
    }
    if cmdline(si).split(' ').any(|w| w == "ping") {
        return ping(si);
    }
    if cmdline(si).split(' ').any(|w| w == "loopback") {
        return loopback_pingpong(si);
    }
    check!(failed, register_event_callback() == 0, "event callback");
    let mut ipi = BindIpi::default();
    check!(
        failed,
        event_channel_op(evtchn::BIND_IPI, &mut ipi) == 0,
        "bind_ipi"
    );
    if failed {
        return Verdict::Error("setup failed");
    }
    let null = median(|| {
        hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0);
    });
    println!("BENCH hypercall_null_cycles {null}");
    // Unmask events (vcpu_info[0].evtchn_upcall_mask) so each send delivers its upcall on return.
    // SAFETY: byte 1 of vcpu_info[0] is the guest's own upcall mask.
    unsafe { core::ptr::write_volatile((shared() + 1) as *mut u8, 0) };
    let mut port = Send { port: ipi.port };
    let before = UPCALLS.load(SeqCst);
    let send = median(|| {
        event_channel_op(evtchn::SEND, &mut port);
    });
    let upcalls = UPCALLS.load(SeqCst) - before;
    println!("BENCH evtchn_send_upcall_cycles {send}");
    check!(
        failed,
        upcalls == ITERATIONS as u64,
        "{upcalls} upcalls for {ITERATIONS} sends"
    );
    match grant_figures(si) {
        Ok((map, copy)) => {
            println!("BENCH grant_map_unmap_cycles {map}");
            println!("BENCH grant_copy_4k_cycles {copy}");
        }
        Err(why) => check!(failed, false, "grant figures: {why}"),
    }
    if failed {
        Verdict::Failure("benchmark")
    } else {
        Verdict::Success
    }
}

/// The domain's grant table, the granted page, the page a grant is mapped over, and a copy's
/// destination.
static TABLE: Page = Page([0; 4096]);
static GRANTED: Page = Page([0; 4096]);
static WINDOW: Page = Page([0; 4096]);
static DEST: Page = Page([0; 4096]);
/// The entry this domain grants to itself, and its own domain id (dom0 on both hypervisors).
const REF: u32 = 10;
const ME: u16 = 0;

/// Median TSC cycles of a grant map+unmap round trip and of a 4 KiB grant copy.
fn grant_figures(si: &StartInfo) -> Result<(u64, u64), &'static str> {
    setup_own_table(&TABLE)?;
    let page = |p: &Page| p as *const Page as u64;
    grant(
        &TABLE,
        REF,
        ME,
        mfn_of(si, page(&GRANTED)),
        gtf::PERMIT_ACCESS,
    );
    let window = page(&WINDOW);
    let own = mfn_of(si, window);
    let mut bad = 0u32;
    let map = median(|| {
        let m = map_at(ME, REF, window, 0);
        if m.status != 0 || unmap(m.handle, window, 0) != 0 {
            bad += 1;
        }
    });
    if remap(window, own) != 0 {
        return Err("the window page cannot be put back");
    }
    if bad != 0 {
        return Err("a map or unmap failed");
    }
    let (source, dest) = (by_ref(ME, REF, 0), by_frame(mfn_of(si, page(&DEST)), 0));
    let copy = median(|| {
        if grant::copy(source, dest, 4096, gntcopy::SOURCE_GREF) != (0, 0) {
            bad += 1;
        }
    });
    if bad != 0 {
        return Err("a copy failed");
    }
    Ok((map, copy))
}

hestia_guests::guest_main!(test);
