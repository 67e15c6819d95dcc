//! Stopping the machine: at the hardware domain's end (power off, reset or halt, as Xen's
//! `hwdom_shutdown`), when every domain has stopped, and after a fatal error (a panic, a fault in
//! Hestia, a boot that cannot go on). `noreboot` keeps the machine halted with its console
//! alive instead of resetting or powering it off. A service outside the layers' order, as the
//! console is: every layer may stop the machine, and this calls only the hardware layer and
//! the console.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::x86_64::{cpu, power, smp};
use crate::{console, error, info};

/// `noreboot` was given.
static NOREBOOT: AtomicBool = AtomicBool::new(false);

/// Records `noreboot` from the command line.
pub fn set_noreboot(on: bool) {
    NOREBOOT.store(on, Ordering::Relaxed);
}

/// dom0 stopped with `reason` (`SHUTDOWN_*`): power off, reset, or halt, as Xen does.
pub fn dom0_stopped(reason: u32) -> ! {
    use xen_abi::sched::reason as r;
    console::start_sync();
    // Xen's `hwdom_shutdown`: power off; reboot, watchdog and soft reset restart; a crash or
    // any other reason (suspend, unknown) restarts unless `noreboot`.
    let what = match reason {
        r::POWEROFF => power_off(),
        r::REBOOT => "asked for a reboot",
        r::WATCHDOG => "was stopped by its watchdog",
        r::SOFT_RESET => "asked for a soft reset, which is not supported",
        r::CRASH => "crashed",
        _ => "stopped for an unknown reason",
    };
    let restart = matches!(reason, r::REBOOT | r::WATCHDOG | r::SOFT_RESET);
    if !restart && NOREBOOT.load(Ordering::Relaxed) {
        error!("noreboot: dom0 {what}; Hestia halted with its console alive");
        cpu::halt_forever()
    }
    if restart {
        info!("Hestia: dom0 {what}: resetting the machine");
    } else {
        error!("Hestia: dom0 {what}: resetting the machine (use 'noreboot' to keep it halted)");
    }
    smp::halt_others();
    power::reset()
}

/// Powers the machine off, or halts if that fails.
pub fn power_off() -> ! {
    console::start_sync();
    info!("Hestia: powering off");
    smp::halt_others();
    let why = power::poweroff();
    error!("power: cannot power off: {why}; halting");
    cpu::halt_forever()
}

/// Stops the machine after a fatal error: other CPUs halt; this one powers off, or halts with
/// `noreboot` so the console stays readable.
pub fn fatal_stop() -> ! {
    console::start_sync();
    smp::halt_others();
    if NOREBOOT.load(Ordering::Relaxed) {
        error!("noreboot: Hestia halted after a fatal error");
        cpu::halt_forever();
    }
    error!("Hestia: fatal error: powering off (use 'noreboot' to keep the machine halted)");
    let why = power::poweroff();
    error!("power: cannot power off: {why}; halting");
    cpu::halt_forever()
}

/// A fatal boot error: one clear line, then [`fatal_stop`].
pub fn fatal_boot(args: fmt::Arguments<'_>) -> ! {
    error!("{args}");
    fatal_stop()
}
