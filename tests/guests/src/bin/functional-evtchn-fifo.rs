//! The FIFO event-channel ABI as Xen 4.17 offers it: set_priority/expand_array refused under
//! 2-level (-ENOSYS, -EOPNOTSUPP); `EVTCHNOP_init_control` (link_bits 17; its errors: vCPU
//! out of range -ENOENT, offset past the page or misaligned -EINVAL, twice -EINVAL) switches
//! the domain, an event pending before carried over and queued once the first event-array
//! page comes; events arrive as upcalls through the queues, consumed the way Linux's
//! events_fifo does, most urgent priority first and in order within one (VIRQ_TIMER, IPIs);
//! set_priority's errors; a masked event stays pending and unlinked until EVTCHNOP_unmask
//! queues it; ports past the first page wait for the next `expand_array`; SCHEDOP_poll sees
//! FIFO pending bits; `EVTCHNOP_reset` closes every port (letting a waiting upcall in after
//! 64 ports and going on as reset_cont) and returns to 2-level (reset_cont without a reset
//! -EBUSY; no such domain -ESRCH), after which FIFO can be set up again (and those frames go
//! with the domain).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::event_channel::{
    BindIpi, BindVirq, ExpandArray, InitControl, PortArg, Reset, SetPriority, Status, cmd, stat,
};
use hestia_guests::xen_abi::sched::cmd as sched;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr, virq};
use hestia_guests::{
    EVENT_VECTOR, ExcFrame, Verdict, check, event_channel_op, hypercall, install_traps,
    map_shared_info, pfn_to_mfn, println, register_event_callback, shared_byte, shared_word,
    system_time_ns,
};

const ENOENT: i64 = -2;
const EBUSY: i64 = -16;
const ESRCH: i64 = -3;
const EINVAL: i64 = -22;
const EACCES: i64 = -13;
const ENOSYS: i64 = -38;
const EOPNOTSUPP: i64 = -95;

const PENDING: u32 = 1 << 31;
const MASKED: u32 = 1 << 30;
const LINKED: u32 = 1 << 29;
const LINK_MASK: u32 = (1 << 17) - 1;

/// Where the control block sits in its page (any 8-byte aligned offset that fits).
const CB_OFFSET: usize = 512;

#[repr(C, align(4096))]
struct Page([AtomicU32; 1024]);
static CONTROL: Page = Page([const { AtomicU32::new(0) }; 1024]);
static ARRAY0: Page = Page([const { AtomicU32::new(0) }; 1024]);
static ARRAY1: Page = Page([const { AtomicU32::new(0) }; 1024]);

/// The consumer's own head per queue (Linux's `cpu_queue`): Hestia writes a head in the
/// control block only when the queue was empty.
static HEADS: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];
/// Ports the upcall handler consumed, in order.
static LOG: [AtomicU32; 32] = [const { AtomicU32::new(0) }; 32];
static LOGGED: AtomicU64 = AtomicU64::new(0);
static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// A port whose event word the handler looks at, and whether it was pending then.
static WATCH: AtomicU32 = AtomicU32::new(0);
static WATCHED_PENDING: AtomicU64 = AtomicU64::new(0);

fn ready() -> &'static AtomicU32 {
    &CONTROL.0[CB_OFFSET / 4]
}

fn cb_head(q: usize) -> u32 {
    CONTROL.0[CB_OFFSET / 4 + 2 + q].load(SeqCst)
}

fn word(port: u32) -> &'static AtomicU32 {
    let page = if port < 1024 { &ARRAY0 } else { &ARRAY1 };
    &page.0[port as usize % 1024]
}

/// Takes the head event of queue `q` off (Linux's `consume_one_event`): clears LINKED and the
/// link, and logs the port if it is pending and unmasked (clearing PENDING, as Linux's handler
/// does). False once the queue is empty.
fn consume_one(q: usize) -> bool {
    let mut head = HEADS[q].load(SeqCst);
    if head == 0 {
        head = cb_head(q);
    }
    if head == 0 {
        return false;
    }
    let w = word(head);
    let old = w.fetch_and(!(LINKED | LINK_MASK), SeqCst);
    HEADS[q].store(old & LINK_MASK, SeqCst);
    if old & PENDING != 0 && old & MASKED == 0 {
        w.fetch_and(!PENDING, SeqCst);
        let n = LOGGED.fetch_add(1, SeqCst) as usize;
        if let Some(slot) = LOG.get(n) {
            slot.store(head, SeqCst);
        }
    }
    old & LINK_MASK != 0
}

/// The upcall (Linux's `evtchn_fifo_handle_events`): the ready bits, most urgent first.
fn handler(vector: u64, f: &mut ExcFrame) {
    if vector != EVENT_VECTOR {
        println!("unexpected exception {vector} at {:#x}", f.rip);
        return;
    }
    UPCALLS.fetch_add(1, SeqCst);
    let watch = WATCH.load(SeqCst);
    if watch != 0 && word(watch).load(SeqCst) & PENDING != 0 {
        WATCHED_PENDING.fetch_add(1, SeqCst);
    }
    shared_byte(0).store(0, SeqCst); // evtchn_upcall_pending
    let mut bits = ready().swap(0, SeqCst);
    while bits != 0 {
        let q = bits.trailing_zeros() as usize;
        if !consume_one(q) {
            bits &= !(1 << q);
        }
    }
}

/// The ports logged since the last call.
fn take_log() -> ([u32; 8], usize) {
    let n = (LOGGED.swap(0, SeqCst) as usize).min(8);
    let mut out = [0; 8];
    for (o, l) in out.iter_mut().zip(&LOG).take(n) {
        *o = l.load(SeqCst);
    }
    (out, n)
}

/// Lets a pending upcall in: unmasks events and makes a hypercall (Linux's
/// `xen_force_evtchn_callback`), on whose return it is delivered; then masks them again.
fn let_upcalls_in() {
    shared_byte(1).store(0, SeqCst);
    hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0);
    shared_byte(1).store(1, SeqCst);
}

fn on_port(op: u32, port: u32) -> i64 {
    event_channel_op(op, &mut PortArg { port })
}

fn bind_ipi() -> u32 {
    let mut b = BindIpi::default();
    event_channel_op(cmd::BIND_IPI, &mut b);
    b.port
}

fn set_priority(port: u32, priority: u32) -> i64 {
    event_channel_op(cmd::SET_PRIORITY, &mut SetPriority { port, priority })
}

fn init_control(gfn: u64, offset: u32, vcpu: u32) -> (i64, u8) {
    let mut c = InitControl {
        control_gfn: gfn,
        offset,
        vcpu,
        ..InitControl::default()
    };
    (event_channel_op(cmd::INIT_CONTROL, &mut c), c.link_bits)
}

fn expand_array(gfn: u64) -> i64 {
    event_channel_op(cmd::EXPAND_ARRAY, &mut ExpandArray { array_gfn: gfn })
}

fn reset(dom: u16, op: u32) -> i64 {
    event_channel_op(op, &mut Reset { dom })
}

fn mfn_of(si: &StartInfo, p: &Page) -> u64 {
    pfn_to_mfn(si, p.0.as_ptr() as u64 >> 12)
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
    check!(failed, register_event_callback() == 0, "event callback");
    shared_byte(1).store(1, SeqCst); // events masked unless let in
    // No periodic VIRQ_TIMER: only the one-shot timer below.
    check!(
        failed,
        hypercall(nr::VCPU_OP, 7, 0, 0, 0, 0) == 0,
        "stop_periodic_timer"
    );
    let (cb, a0, a1) = (
        mfn_of(si, &CONTROL),
        mfn_of(si, &ARRAY0),
        mfn_of(si, &ARRAY1),
    );

    // Under 2-level.
    let early = bind_ipi();
    check!(
        failed,
        set_priority(early, 0) == ENOSYS,
        "set_priority under 2-level"
    );
    check!(
        failed,
        expand_array(a0) == EOPNOTSUPP,
        "expand_array under 2-level"
    );
    check!(failed, on_port(cmd::SEND, early) == 0, "send under 2-level");
    check!(
        failed,
        shared_word(2048).load(SeqCst) & (1 << early) != 0,
        "2-level pending bit"
    );

    // init_control's errors, then the switch.
    check!(
        failed,
        init_control(cb, 0, 1000).0 == ENOENT,
        "vCPU 1000 must be -ENOENT"
    );
    check!(
        failed,
        init_control(cb, 4096 - 72 + 8, 0).0 == EINVAL,
        "offset past the page must be -EINVAL"
    );
    check!(
        failed,
        init_control(cb, 4, 0).0 == EINVAL,
        "misaligned offset must be -EINVAL"
    );
    let (r, link_bits) = init_control(cb, CB_OFFSET as u32, 0);
    check!(
        failed,
        r == 0 && link_bits == 17,
        "init_control: {r}, link_bits {link_bits}"
    );
    check!(
        failed,
        init_control(cb, CB_OFFSET as u32, 0).0 == EINVAL,
        "second init_control of vCPU 0 must be -EINVAL"
    );
    check!(
        failed,
        ready().load(SeqCst) == 0,
        "ready before any array page"
    );
    // The first array page: the event pending under 2-level is queued now.
    check!(failed, expand_array(a0) == 0, "expand_array");
    check!(
        failed,
        ready().load(SeqCst) == 1 << 7 && cb_head(7) == early,
        "carried-over event: ready {:#x}, head {}",
        ready().load(SeqCst),
        cb_head(7)
    );
    let_upcalls_in();
    let (log, n) = take_log();
    check!(
        failed,
        n == 1 && log[0] == early,
        "carried-over event delivered: {:?}",
        &log[..n]
    );

    // set_priority's errors, then queues in priority order.
    let (b, c, d) = (bind_ipi(), bind_ipi(), bind_ipi());
    check!(
        failed,
        set_priority(c, 16) == EINVAL,
        "priority 16 must be -EINVAL"
    );
    check!(
        failed,
        set_priority(30, 2) == EACCES,
        "a free port must be -EACCES"
    );
    check!(
        failed,
        set_priority(0x7fff_ffff, 2) == EINVAL,
        "no such port must be -EINVAL"
    );
    check!(failed, set_priority(c, 2) == 0, "set_priority");
    for p in [b, c, d] {
        check!(failed, on_port(cmd::SEND, p) == 0, "send {p}");
    }
    check!(
        failed,
        ready().load(SeqCst) == (1 << 7 | 1 << 2)
            && word(b).load(SeqCst) & (LINKED | LINK_MASK) == LINKED | d,
        "queues: ready {:#x}, word of {b} {:#x}",
        ready().load(SeqCst),
        word(b).load(SeqCst)
    );
    let_upcalls_in();
    let (log, n) = take_log();
    check!(
        failed,
        n == 3 && log[..3] == [c, b, d],
        "order {:?}, want [{c}, {b}, {d}]",
        &log[..n]
    );

    // Masking in the event word; EVTCHNOP_unmask queues what became pending meanwhile.
    word(b).fetch_or(MASKED, SeqCst);
    let before = UPCALLS.load(SeqCst);
    on_port(cmd::SEND, b);
    let_upcalls_in();
    check!(
        failed,
        UPCALLS.load(SeqCst) == before && word(b).load(SeqCst) & (PENDING | LINKED) == PENDING,
        "a masked event: word {:#x}",
        word(b).load(SeqCst)
    );
    // SCHEDOP_poll sees the FIFO pending bit.
    let ports = [b];
    let poll = [ports.as_ptr() as u64, 1, 0];
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
        "poll on a pending port"
    );
    check!(failed, on_port(cmd::UNMASK, b) == 0, "unmask");
    check!(
        failed,
        word(b).load(SeqCst) & (MASKED | LINKED) == LINKED,
        "after unmask: word {:#x}",
        word(b).load(SeqCst)
    );
    let_upcalls_in();
    let (log, n) = take_log();
    check!(
        failed,
        n == 1 && log[0] == b,
        "unmasked event: {:?}",
        &log[..n]
    );

    // VIRQ_TIMER through the queue, waking SCHEDOP_block.
    let mut t = BindVirq {
        virq: virq::TIMER,
        ..BindVirq::default()
    };
    check!(
        failed,
        event_channel_op(cmd::BIND_VIRQ, &mut t) == 0,
        "bind_virq"
    );
    let deadline = [system_time_ns() + 2_000_000, 0u64];
    hypercall(nr::VCPU_OP, 8, 0, deadline.as_ptr() as u64, 0, 0);
    hypercall(nr::SCHED_OP, u64::from(sched::BLOCK), 0, 0, 0, 0);
    shared_byte(1).store(1, SeqCst);
    let (log, n) = take_log();
    check!(
        failed,
        n == 1 && log[0] == t.port,
        "timer event: {:?}",
        &log[..n]
    );

    // Ports past the first page wait for the second.
    let mut last = 0;
    while last < 1024 {
        last = bind_ipi();
        if last == 0 {
            break;
        }
    }
    check!(failed, last == 1024, "bound up to port {last}");
    on_port(cmd::SEND, last);
    check!(
        failed,
        ready().load(SeqCst) == 0,
        "an event with no array page queued"
    );
    check!(failed, expand_array(a1) == 0, "second expand_array");
    let_upcalls_in();
    let (log, n) = take_log();
    check!(
        failed,
        n == 1 && log[0] == last,
        "event of port {last}: {:?}",
        &log[..n]
    );

    // Reset: every port closed, back to 2-level.
    check!(
        failed,
        reset(DOMID_SELF, 14) == EBUSY,
        "reset_cont with no reset must be -EBUSY"
    );
    check!(
        failed,
        reset(1000, cmd::RESET) == ESRCH,
        "reset of no domain must be -ESRCH"
    );
    // With an upcall waiting (events unmasked, no hypercall since), the reset stops after its
    // first 64 ports to let it in (the last port, masked and pending, is not closed yet then),
    // and goes on through reset_cont.
    word(last).fetch_or(MASKED, SeqCst);
    on_port(cmd::SEND, last);
    WATCH.store(last, SeqCst);
    on_port(cmd::SEND, d);
    let before = UPCALLS.load(SeqCst);
    shared_byte(1).store(0, SeqCst);
    let r = reset(DOMID_SELF, cmd::RESET);
    shared_byte(1).store(1, SeqCst);
    WATCH.store(0, SeqCst);
    check!(
        failed,
        r == 0
            && UPCALLS.load(SeqCst) == before + 1
            && WATCHED_PENDING.load(SeqCst) == 1
            && word(last).load(SeqCst) & PENDING == 0,
        "preempted reset: {r}, {} upcalls, {} with port {last} still open",
        UPCALLS.load(SeqCst) - before,
        WATCHED_PENDING.load(SeqCst)
    );
    let mut st = Status {
        dom: DOMID_SELF,
        port: b,
        ..Status::default()
    };
    check!(
        failed,
        event_channel_op(cmd::STATUS, &mut st) == 0 && st.status == stat::CLOSED,
        "port {b} after reset: {}",
        st.status
    );
    check!(
        failed,
        set_priority(b, 0) == ENOSYS && expand_array(a0) == EOPNOTSUPP,
        "not 2-level after reset"
    );
    let p = bind_ipi();
    shared_word(2048).store(0, SeqCst);
    on_port(cmd::SEND, p);
    check!(
        failed,
        p == 1 && shared_word(2048).load(SeqCst) == 1 << p,
        "2-level delivery after reset: port {p}"
    );
    // FIFO again (the frames were released); the domain's end releases these.
    for w in CONTROL.0.iter().chain(&ARRAY0.0) {
        w.store(0, SeqCst);
    }
    HEADS.iter().for_each(|h| h.store(0, SeqCst));
    check!(
        failed,
        init_control(cb, 0, 0).0 == 0 && expand_array(a0) == 0,
        "FIFO again after reset"
    );
    if failed {
        Verdict::Failure("FIFO event channels")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
