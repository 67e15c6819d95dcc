//! Serial input: Ctrl-A three times switches input from dom0 to each domU whose console Hestia
//! serves, then to Hestia, then back to dom0 (as Xen cycles DOM0, DOM1, ..., Xen); while
//! Hestia has the input, single keys run debug handlers: `h` help, `q` domains, `e` event
//! channels, `m` memory, `r` CPUs, timers and run queues, `0` dump every CPU's registers.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use hestia_core::ids::VcpuId;

use crate::arch::x86_64::{apic, ioapic, percpu, smp, tsc};

const CTRL_A: u8 = 0x01;

static CTRL_A_RUN: AtomicU8 = AtomicU8::new(0);
/// Where input goes: [`TO_HESTIA`], [`TO_DOM0`], or `TO_RING + k` for the `k`-th ring console.
static INPUT_TO: AtomicUsize = AtomicUsize::new(TO_HESTIA);
const TO_HESTIA: usize = 0;
const TO_DOM0: usize = 1;
const TO_RING: usize = 2;
static DOM0_EXISTS: AtomicBool = AtomicBool::new(false);

/// Serial input waiting for dom0's `CONSOLEIO_read` (oldest bytes first; full drops new ones).
struct InputRing {
    buf: [u8; 1024],
    head: usize,
    len: usize,
}

static DOM0_INPUT: spin::Mutex<InputRing> = spin::Mutex::new(InputRing {
    buf: [0; 1024],
    head: 0,
    len: 0,
});

/// Guests run: serial input goes to dom0 from now on, as in Xen, or without a dom0 to the
/// first domU whose console Hestia serves.
pub fn guests_started(dom0: bool) {
    DOM0_EXISTS.store(dom0, Ordering::Release);
    let to = if dom0 {
        TO_DOM0
    } else if crate::console::ring::count() > 0 {
        TO_RING
    } else {
        return;
    };
    INPUT_TO.store(to, Ordering::Release);
    announce(to);
}

fn announce(to: usize) {
    match to {
        TO_HESTIA => {
            crate::info!("*** Serial input to Hestia (type 'CTRL-a' three times to switch input)")
        }
        TO_DOM0 => {
            crate::info!("*** Serial input to DOM0 (type 'CTRL-a' three times to switch input)")
        }
        k => {
            let id = crate::console::ring::nth(k - TO_RING).map(|d| d.id.0);
            crate::info!(
                "*** Serial input to DOM{} (type 'CTRL-a' three times to switch input)",
                id.unwrap_or(0)
            )
        }
    }
}

/// Copies pending dom0 input into `out`; returns the number of bytes (`CONSOLEIO_read`).
/// Called with interrupts off (hypercall path), so the serial interrupt cannot contend.
pub fn read_dom0_input(out: &mut [u8]) -> usize {
    let mut r = DOM0_INPUT.lock();
    let n = out.len().min(r.len);
    for o in out.iter_mut().take(n) {
        *o = r.buf[r.head];
        r.head = (r.head + 1) % r.buf.len();
    }
    r.len -= n;
    n
}

fn push_dom0_input(b: u8) {
    {
        let mut r = DOM0_INPUT.lock();
        if r.len < r.buf.len() {
            let tail = (r.head + r.len) % r.buf.len();
            r.buf[tail] = b;
            r.len += 1;
        }
    }
    if let Some(d) = crate::domain::hardware_domain() {
        crate::pv::events::raise_virq(d, xen_abi::xen::virq::CONSOLE, VcpuId::FIRST);
    }
}

struct Key {
    key: u8,
    help: &'static str,
    run: fn(),
}

const KEYS: &[Key] = &[
    Key {
        key: b'h',
        help: "show this help",
        run: help,
    },
    Key {
        key: b'q',
        help: "dump domain (and guest debug) info",
        run: domains,
    },
    Key {
        key: b'e',
        help: "dump every domain's event channels",
        run: event_channels,
    },
    Key {
        key: b'm',
        help: "memory info",
        run: memory,
    },
    Key {
        key: b'r',
        help: "dump CPUs, LAPIC timers, IOAPICs and the scheduler's run queues",
        run: cpus,
    },
    Key {
        key: b'0',
        help: "dump registers of every CPU",
        run: smp::request_dumps,
    },
    Key {
        key: b'R',
        help: "reboot the machine",
        run: reboot,
    },
];

/// The serial interrupt, routed at boot: the console's handler, with received bytes handed
/// to [`input`] (the console's output side names nothing above it).
pub fn serial_interrupt(_gsi: u32) {
    super::serial_interrupt(input);
}

/// Handles one received byte.
fn input(b: u8) {
    if b == CTRL_A {
        if CTRL_A_RUN.fetch_add(1, Ordering::Relaxed) + 1 == 3 {
            CTRL_A_RUN.store(0, Ordering::Relaxed);
            switch_input();
        }
        return;
    }
    CTRL_A_RUN.store(0, Ordering::Relaxed);
    match INPUT_TO.load(Ordering::Relaxed) {
        TO_HESTIA => {}
        TO_DOM0 => return push_dom0_input(b),
        k => {
            if let Some(d) = crate::console::ring::nth(k - TO_RING) {
                // A full input ring drops the byte, as a full dom0 input buffer does.
                crate::console::ring::input(&d, &[b]);
            }
            return;
        }
    }
    type_key(b);
}

/// Runs debug key `b`'s handler, typed on the serial console (switched to Hestia): a key with
/// no handler gets a hint for the person typing.
fn type_key(b: u8) {
    if !press(b) && b.is_ascii_graphic() {
        crate::info!("'{}' pressed -> no handler ('h' for help)", b as char)
    }
}

/// Runs debug key `b`'s handler (the serial console, `XEN_SYSCTL_debug_keys`); false when
/// there is none, which is silent as in Xen (a toolstack may send any number of keys).
pub fn press(b: u8) -> bool {
    let Some(k) = KEYS.iter().find(|k| k.key == b) else {
        return false;
    };
    crate::info!("'{}' pressed -> {}", b as char, k.help);
    (k.run)();
    true
}

fn switch_input() {
    let rings = crate::console::ring::count();
    let dom0 = DOM0_EXISTS.load(Ordering::Acquire);
    if !dom0 && rings == 0 {
        crate::info!(
            "*** Serial input stays with Hestia: there is no guest console (type 'CTRL-a' three times to switch input)"
        );
        return;
    }
    // The cycle: dom0 (if any), each ring console, Hestia.
    let next = match INPUT_TO.load(Ordering::Relaxed) {
        TO_HESTIA if dom0 => TO_DOM0,
        TO_HESTIA | TO_DOM0 if rings > 0 => TO_RING,
        k if k >= TO_RING && k + 1 < TO_RING + rings => k + 1,
        _ => TO_HESTIA,
    };
    INPUT_TO.store(next, Ordering::Relaxed);
    announce(next);
}

fn help() {
    crate::console::with_lock(|w| {
        for k in KEYS {
            let _ = writeln!(w, " key '{}' - {}", k.key as char, k.help);
        }
        let _ = writeln!(
            w,
            " CTRL-a three times - switch serial input between dom0, each domU console and Hestia"
        );
    });
}

fn event_channels() {
    crate::console::with_lock(|w| match crate::domain::try_all() {
        Some(all) => crate::pv::dump_event_channels(w, &all),
        None => table_busy(w),
    });
}

fn domains() {
    crate::console::with_lock(|w| {
        match crate::domain::try_all() {
            Some(all) => crate::pv::dump(w, &all),
            None => table_busy(w),
        }
        crate::hypercall::dump(w);
    });
}

/// The domain table is locked (a key never waits for it: it runs in an interrupt handler).
fn table_busy(w: &mut dyn core::fmt::Write) {
    let _ = writeln!(w, "The domain table is busy; try again.");
}

fn memory() {
    let s = crate::mm::stats();
    crate::console::with_lock(|w| {
        let _ = writeln!(
            w,
            "Physical memory: {} MiB usable, {} MiB managed, {} MiB free ({} KiB unscrubbed)",
            s.total_ram >> 20,
            s.managed >> 20,
            s.free >> 20,
            s.dirty >> 10
        );
        let _ = writeln!(
            w,
            "Heap: {} KiB used of {} KiB",
            s.heap_used >> 10,
            s.heap_size >> 10
        );
        crate::mm::dump_free_ranges(w);
        let _ = writeln!(
            w,
            "Frame table: lock {}",
            crate::mm::frametable::longest_hold()
        );
    });
}

fn cpus() {
    let now = tsc::uptime_ns();
    crate::console::with_lock(|w| {
        let _ = writeln!(
            w,
            "CPUs online: {}, LAPIC {} timer {}, TSC {} kHz, now {} ns",
            percpu::online_count(),
            apic::mode_name(),
            if apic::uses_tsc_deadline() {
                "TSC-deadline"
            } else {
                "one-shot"
            },
            tsc::hz() / 1000,
            now
        );
        for p in percpu::all() {
            let _ = writeln!(
                w,
                "  CPU{}: APIC id {}, {}, timer IRQs {}, IPIs {}, timers queued {}",
                p.index,
                p.apic_id,
                if p.online.load(Ordering::Relaxed) {
                    "online"
                } else {
                    "offline"
                },
                p.timer_irqs.load(Ordering::Relaxed),
                p.ipis.load(Ordering::Relaxed),
                crate::timer::pending(p.index)
            );
        }
        ioapic::describe(w);
        crate::sched::dump(w);
    });
}

fn reboot() {
    crate::console::start_sync();
    crate::arch::x86_64::power::reset();
}
