//! Test hooks selected with `selftest=` (builds with the `test-hooks` feature only): injected
//! faults that must produce a full dump, SMP checks (timer interrupts on every CPU, IPI round
//! trips) and the save/restore of vCPU FPU states. The QEMU scenario tests in `tests/` read
//! their results from the serial log.

use core::sync::atomic::Ordering;

use alloc::vec::Vec;
use hestia_core::cmdline::SelfTests;

use crate::arch::x86_64::{cpu, fpu, percpu, smp, tsc};

/// Runs the hooks asked for. Faults do not return.
#[inline(never)]
pub fn run(t: &SelfTests) {
    if !cfg!(feature = "test-hooks") {
        if *t != SelfTests::default() {
            crate::warn!(
                "selftest: ignored: this build has no test hooks (build with the test-hooks feature)"
            );
        }
        return;
    }
    if t.smp {
        smp_checks();
    }
    if t.syscall_db {
        watch_syscall_scratch();
    }
    if t.fpu {
        match fpu::selftest() {
            Ok(how) => crate::info!("selftest: fpu PASS ({how})"),
            Err(why) => crate::error!("selftest: fpu FAIL: {why}"),
        }
    }
    if t.smap {
        crate::info!("selftest: reading the M2P through its user mapping, SMAP closed");
        // SAFETY: the M2P's first word is mapped (read-only, user) in every page table; with
        // SMAP on, the supervisor read of a user page deliberately faults.
        let v =
            unsafe { core::ptr::read_volatile(xen_abi::xen::MACH2PHYS_VIRT_START as *const u64) };
        crate::info!("selftest: read {v:#x}: SMAP is off");
    }
    if t.panic {
        panic!("selftest: deliberate panic");
    }
    if t.fault {
        raise_invalid_opcode();
    }
    if t.page_fault {
        crate::info!("selftest: reading unmapped address 0xdead0000");
        // SAFETY: deliberately faults: nothing is mapped there (the low half is empty).
        let v = unsafe { core::ptr::read_volatile(0xdead_0000 as *const u64) };
        crate::info!("selftest: read {v} (should not happen)");
    }
    if t.stack_overflow {
        crate::info!("selftest: overflowing the stack into its guard page");
        crate::info!(
            "selftest: recursion returned {} (should not happen)",
            recurse(0)
        );
    }
}

/// Arms DR0 on this CPU's SYSCALL scratch word (writes, 8 bytes): the entry's store of the
/// guest RSP there then raises a #DB in ring 0 while RSP is still the guest's, until the guest
/// sets its own debug registers.
fn watch_syscall_scratch() {
    let scratch = (&raw const percpu::this_cpu().syscall_scratch) as u64;
    crate::info!("selftest: data breakpoint on the SYSCALL scratch word {scratch:#x}");
    // SAFETY: a write breakpoint on Hestia's own per-CPU word: its #DB is taken in ring 0 and
    // ignored; DR7 has L0, R/W0 = 01 (writes), LEN0 = 10 (8 bytes).
    unsafe {
        cpu::write_dr(0, scratch);
        cpu::write_dr(7, 0x0009_0401);
    }
}

#[inline(never)]
fn raise_invalid_opcode() {
    crate::info!("selftest: raising #UD");
    // SAFETY: deliberately raises #UD; the fatal-trap path never returns here.
    unsafe { core::arch::asm!("ud2") };
}

#[inline(never)]
#[allow(unconditional_recursion)] // The point: it only ends in the guard page.
fn recurse(depth: u64) -> u64 {
    let pad = core::hint::black_box([depth; 64]);
    recurse(depth + 1) + pad[7]
}

const TEST_TICKS: u64 = 5;
const TEST_PERIOD_NS: u64 = 10_000_000;

fn test_tick(now: u64) -> Option<u64> {
    let n = percpu::this_cpu()
        .test_ticks
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    (n < TEST_TICKS).then_some(now + TEST_PERIOD_NS)
}

fn start_test_timer() {
    crate::timer::add(
        tsc::uptime_ns() + TEST_PERIOD_NS,
        crate::timer::TimerFn::Plain(test_tick),
    );
}

fn smp_checks() {
    let cpus: Vec<u32> = percpu::all()
        .filter(|p| p.online.load(Ordering::Acquire))
        .map(|p| p.index)
        .collect();
    let me = percpu::current_index();
    for &i in &cpus {
        if i == me {
            start_test_timer();
        } else if !smp::call_on(i, start_test_timer) {
            crate::error!("selftest: could not send a call to CPU{i}");
        }
    }
    let deadline = tsc::uptime_ns() + 3_000_000_000;
    while tsc::uptime_ns() < deadline
        && !cpus.iter().all(|&i| {
            percpu::cpu(i).is_some_and(|p| p.test_ticks.load(Ordering::Acquire) >= TEST_TICKS)
        })
    {
        core::hint::spin_loop();
    }
    let mut ok = true;
    for &i in &cpus {
        let n = percpu::cpu(i).map_or(0, |p| p.test_ticks.load(Ordering::Acquire));
        ok &= n >= TEST_TICKS;
        crate::info!(
            "selftest: CPU{i} timer interrupts: {n}/{TEST_TICKS} {}",
            if n >= TEST_TICKS { "ok" } else { "MISSING" }
        );
    }
    for &i in cpus.iter().filter(|&&i| i != me) {
        let mut samples: Vec<u64> = (0..64).filter_map(|_| smp::ping(i)).collect();
        if samples.len() < 64 {
            ok = false;
            crate::error!(
                "selftest: CPU{me}->CPU{i} IPI round trip: {} of 64 answered",
                samples.len()
            );
            continue;
        }
        samples.sort_unstable();
        crate::info!(
            "selftest: CPU{me}->CPU{i} IPI round trip ok: median {} TSC cycles (64 samples)",
            samples[samples.len() / 2]
        );
    }
    crate::info!("selftest: smp {}", if ok { "PASS" } else { "FAIL" });
}
