//! Paravirtualised guests: running a PV vCPU in ring 3, and what happens when it traps.
//!
//! A guest enters Hestia by SYSCALL (a hypercall from its kernel mode, a system call from its
//! user mode), by an exception, or by an interrupt. Exceptions are emulated or bounced to the
//! guest's trap table; one that cannot be delivered crashes that domain (never Hestia) with a
//! one-line reason and its registers. When dom0 stops, Hestia stops the machine, as Xen does.

pub mod builder;
pub mod context;
pub mod debugreg;
pub mod descriptor;
pub mod domain;
pub mod events;
pub mod grant;
pub mod ioport;
pub mod l1tf;
pub mod life;
pub mod mmu;
pub mod msi;
pub mod msr;
pub mod pirq;
pub mod privop;
pub mod ptwr;
pub mod segment;
pub mod shared;
pub mod traps;
pub mod unpack;
pub mod vcpus;

use core::fmt::Write;
use core::sync::atomic::Ordering;
use hestia_core::ids::VcpuId;

use xen_abi::sched::reason;

use crate::arch::x86_64::idt::TrapFrame;
use crate::arch::x86_64::{cpu, trap};
use domain::{Domain, DomainRef, this_vcpu_id};

pub use context::{current, current_ref};

/// Starts `domains` (each one's first vCPU runnable; dom0, if there is one, first) and
/// schedules their vCPUs on every CPU; never returns.
pub fn run(domains: alloc::vec::Vec<(DomainRef, crate::sched::Params)>) -> ! {
    crate::arch::x86_64::cpu::disable_interrupts();
    crate::mm::frametable::reset_longest_hold();
    for (d, params) in &domains {
        start(d, *params);
    }
    // The scheduler and the domain table hold the domains from here on.
    drop(domains);
    let me = crate::arch::x86_64::percpu::current_index();
    for p in crate::arch::x86_64::percpu::all().filter(|p| p.index != me) {
        if !crate::arch::x86_64::smp::call_on(p.index, schedule_here) {
            crate::warn!("sched: CPU{} does not take part", p.index);
        }
    }
    crate::sched::run_this_cpu(events::before_guest_return)
}

/// Starts domain `d`, scheduled with `params`: its wallclock set, its first vCPU runnable.
pub fn start(d: &DomainRef, params: crate::sched::Params) {
    {
        let v = d.vcpus[0].lock();
        crate::info!(
            "{}v0: starting at {:#x}, stack {:#x}, start_info {:#x}",
            d.id,
            v.regs.rip,
            v.regs.rsp,
            v.regs.rsi
        );
    }
    if let Some((sec, nsec)) = wallclock() {
        d.shared().set_wallclock(sec, nsec);
    }
    let started = context::add_to_scheduler(d, params)
        .and_then(|()| crate::sched::vcpu_up(&d.sched, VcpuId::FIRST));
    if let Err(e) = started {
        crate::error!("{}: cannot be scheduled: {e:?}", d.id);
    }
}

/// On another CPU (from the `CALL` IPI): runs the scheduler there.
fn schedule_here() {
    crate::sched::run_this_cpu(events::before_guest_return)
}

/// Describes the domains `all` (debug key `q`).
pub fn dump(w: &mut dyn Write, all: &[DomainRef]) {
    if all.is_empty() {
        let _ = writeln!(w, "No domains.");
    }
    all.iter().for_each(|d| dump_domain(w, d));
}

/// Lists the open event channels of the domains `all`: port, binding, notified vCPU, pending
/// and masked bits (debug key `e`).
pub fn dump_event_channels(w: &mut dyn Write, all: &[DomainRef]) {
    use hestia_core::evtchn::PortState;
    use hestia_core::ids::Port;
    for d in all {
        // Never wait for a domain's lock from the debug-key handler.
        let Some(ev) = d.evtchn.try_lock() else {
            let _ = writeln!(w, "{}: event channels busy; try again", d.id);
            continue;
        };
        let shared = d.shared();
        let abi = if ev.is_fifo() { "FIFO" } else { "2-level" };
        let _ = writeln!(w, "{} event channels: {abi} ABI", d.id);
        for port in (1..ev.nr_ports()).map(Port::unvalidated) {
            let Some((state, vcpu)) = ev.port(port) else {
                continue;
            };
            let what = match state {
                PortState::Closed => continue,
                PortState::Unbound { remote } => alloc::format!("unbound, remote {remote}"),
                PortState::Interdomain {
                    remote_dom,
                    remote_port,
                } => alloc::format!("interdomain, {remote_dom} port {remote_port}"),
                PortState::Pirq(p) => alloc::format!("pirq {p}"),
                PortState::Virq(v) => alloc::format!("virq {v}"),
                PortState::Ipi => "ipi".into(),
            };
            let _ = writeln!(
                w,
                "  port {port:4}: {what}, vcpu {vcpu}, pending {}, masked {}",
                u8::from(ev.is_pending(&shared, port)),
                u8::from(ev.is_masked(&shared, port))
            );
        }
    }
}

/// Describes one domain and its vCPUs.
fn dump_domain(w: &mut dyn Write, d: &Domain) {
    let _ = writeln!(
        w,
        "{}: {} pages, shared_info mfn {:#x}, {}{}{}",
        d.id,
        d.nr_pages(),
        d.shared_info_mfn,
        if d.rights.control {
            "privileged"
        } else {
            "unprivileged"
        },
        if d.check_l1tf { ", L1TF-checked" } else { "" },
        if d.is_dying() {
            ", dying"
        } else if d.controller_paused() {
            ", paused by the toolstack"
        } else {
            ""
        }
    );
    if let Some(code) = d.shutdown_code() {
        let _ = writeln!(w, "  shut down, code {code}");
    }
    if let Some(p2m0) = d.p2m.first() {
        let _ = writeln!(w, "  pfn 0 -> mfn {p2m0:#x}");
    }
    for v in &d.vcpus {
        // Never wait for a vCPU lock from the debug-key handler.
        if let Some(v) = v.try_lock() {
            let _ = writeln!(
                w,
                "  {}v{}: {} mode, cr3 {:#x}, {} trap handlers",
                d.id,
                v.id,
                if v.kernel_mode { "kernel" } else { "user" },
                v.kernel_cr3,
                v.traps.iter().filter(|t| t.address != 0).count()
            );
            for (name, c) in [
                ("event", v.event_callback),
                ("failsafe", v.failsafe_callback),
                ("syscall", v.syscall_callback),
                ("nmi", v.nmi_callback),
            ] {
                if c.address != 0 {
                    let _ = writeln!(
                        w,
                        "    {name} callback {:#x}{}",
                        c.address,
                        if c.mask_events { " (masks events)" } else { "" }
                    );
                }
            }
        }
    }
}

/// The time of day at system time 0 set by `XENPF_settime*`, once dom0 set it.
static WALLCLOCK: spin::Mutex<Option<(u64, u32)>> = spin::Mutex::new(None);

/// The time of day at system time 0 (seconds, nanoseconds): as last set, else from the RTC.
fn wallclock() -> Option<(u64, u32)> {
    (*WALLCLOCK.lock()).or_else(crate::bootinfo::wallclock_at_boot)
}

/// Sets the wallclock (`XENPF_settime*`): `secs`.`nsecs` is the time of day at system time
/// `system_time`; shared_info holds the time of day at system time 0. That of every domain of
/// `all` (the domain table), as Xen's `update_domain_wallclock_time` for each, and domains
/// built later start with it.
pub fn set_wallclock(secs: u64, nsecs: u32, system_time: u64, all: &[DomainRef]) {
    let at_zero = (u128::from(secs) * 1_000_000_000 + u128::from(nsecs))
        .saturating_sub(u128::from(system_time));
    let (sec, nsec) = (
        (at_zero / 1_000_000_000) as u64,
        (at_zero % 1_000_000_000) as u32,
    );
    *WALLCLOCK.lock() = Some((sec, nsec));
    for d in all {
        if !d.stopped.load(Ordering::Acquire) {
            d.shared().set_wallclock(sec, nsec);
        }
    }
}

/// Before any return to guest code: the scheduler may switch to another vCPU (loading it into
/// `f`), then a pending and unmasked event is delivered as an upcall.
#[unsafe(link_section = ".text.hot")]
pub fn before_guest_return(f: &mut TrapFrame) {
    // Never switch vCPUs on an NMI's way out: NMIs stay blocked until its IRET, and a CPU
    // that went on to idle, or to run another vCPU, with NMIs blocked would never answer a TLB
    // shootdown (the sender waits for it forever). The next trap switches instead.
    if f.vector != 2 {
        crate::sched::before_guest_return(f);
    }
    events::before_guest_return(f);
}

/// Set by `trace=exceptions`.
static TRACE_EXCEPTIONS: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// Logs every guest exception from now on.
pub fn enable_exception_trace() {
    TRACE_EXCEPTIONS.store(true, Ordering::Relaxed);
}

/// An exception raised by guest code.
pub fn guest_exception(f: &mut TrapFrame) {
    let Some(d) = current() else {
        return crash_unknown(f);
    };
    if TRACE_EXCEPTIONS.load(Ordering::Relaxed) {
        crate::info!(
            "{}v{} exception {} ({}) error {:#x} at {:#x}, rsp {:#x}, cr2 {:#x}",
            d.id,
            this_vcpu_id(),
            f.vector,
            trap::exception_name(f.vector),
            f.error_code,
            f.rip,
            f.rsp,
            cpu::read_cr2()
        );
    }
    let original = *f;
    let r = traps::guest_exception(d, &mut d.this_vcpu().lock(), f);
    if let Err(why) = r {
        let name = trap::exception_name(original.vector);
        crate::warn!(
            "{}v{}: {name} (vector {}) not delivered: {why}",
            d.id,
            this_vcpu_id(),
            original.vector
        );
        domain_crash(d, &original, name);
    }
}

pub fn crash_unknown(f: &TrapFrame) {
    crate::error!("pv: trap from ring 3 with no domain running");
    trap::fatal_trap(f)
}

/// Crashes `d` with a one-line reason and its registers, then stops it.
pub fn domain_crash(d: &Domain, f: &TrapFrame, why: &str) {
    if d.mark_stopped() {
        crate::console::with_lock(|w| {
            let _ = writeln!(
                w,
                "[{}v{}] domain_crash: {why} at {:#06x}:{:#x}, error code {:#x}, CR2 {:#x}",
                d.id,
                this_vcpu_id(),
                f.cs,
                f.rip,
                f.error_code,
                cpu::read_cr2()
            );
            trap::dump_registers(w, f);
            // The top of the guest's stack, for its return addresses (read through the
            // fault-safe copy: the stack pointer is guest input).
            let mut words = [0u8; 8 * 12];
            if crate::mm::guest::GuestRange::new(f.rsp, words.len())
                .and_then(|r| r.read(&mut words))
                .is_ok()
            {
                let _ = write!(w, "Guest stack at {:#x}:", f.rsp);
                for (i, c) in words.chunks(8).enumerate() {
                    let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                    let _ = write!(w, "{}{v:016x}", if i % 4 == 0 { "\n  " } else { " " });
                }
                let _ = writeln!(w);
            }
        });
        crate::error!("{}: crashed ({why})", d.id);
        d.shutdown_reason.store(reason::CRASH, Ordering::Release);
    }
    stop_after_domain(d)
}

/// Shuts `d` down with `reason` (`SCHEDOP_remote_shutdown`): as if it had asked itself; the
/// first reason a domain gets is the one it keeps.
pub fn shutdown(d: &Domain, reason: u32) {
    if d.mark_stopped() {
        d.shutdown_reason.store(reason, Ordering::Release);
    }
    stop_after_domain(d);
}

/// What follows a domain's stop beyond its vCPUs leaving the CPUs (the machine stopping with
/// the hardware domain or the last domain, the control domain told, a boot-time domU
/// destroyed): the domain layer's work, registered at boot (`crate::domain::life::after_stop`).
static AFTER_STOP: spin::Once<fn(&Domain, u32)> = spin::Once::new();

/// Registers what follows a domain's stop, with its `SHUTDOWN_*` reason (once, at boot,
/// before any domain runs).
pub fn register_after_stop(after: fn(&Domain, u32)) {
    AFTER_STOP.call_once(|| after);
}

/// `d` stopped (shut down or crashed): its vCPUs leave their CPUs (this one at the end of the
/// current trap) until it is resumed or destroyed, and what [`register_after_stop`] registered
/// follows, once per stop.
pub fn stop_after_domain(d: &Domain) {
    if !d.stop_vcpus() {
        return;
    }
    let r = d.shutdown_reason.load(Ordering::Acquire);
    let what = match r {
        reason::POWEROFF => "power off",
        reason::REBOOT => "reboot",
        reason::CRASH => "crash",
        reason::SUSPEND => "suspend",
        reason::WATCHDOG => "watchdog",
        _ => "shutdown",
    };
    crate::info!("{}: shut down ({what}, reason {r})", d.id);
    if let Some(after) = AFTER_STOP.get() {
        after(d, r);
    }
}
