//! Hestia's clock: the TSC, calibrated at boot against the PIT (or the HPET when the PIT does not
//! count, as on some legacy-free machines). Uptime in nanoseconds is `(tsc - boot_tsc) / hz`.
//! The TSC is assumed synchronised across CPUs (invariant TSC; reported at boot).

use core::sync::atomic::{AtomicU64, Ordering};

use super::cpu::rdtsc;

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Records the TSC at the start of boot: the zero of all timestamps.
pub fn mark_boot() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

/// The TSC value at the zero of Hestia's clock.
pub fn boot_tsc() -> u64 {
    BOOT_TSC.load(Ordering::Relaxed)
}

/// Sets the measured TSC frequency.
pub fn set_hz(hz: u64) {
    TSC_HZ.store(hz, Ordering::Relaxed);
}

/// The TSC frequency in Hz, 0 until calibrated.
pub fn hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Converts TSC ticks to nanoseconds (0 before calibration).
pub fn ticks_to_ns(ticks: u64) -> u64 {
    match hz() {
        0 => 0,
        hz => (u128::from(ticks) * 1_000_000_000 / u128::from(hz)) as u64,
    }
}

/// Converts nanoseconds to TSC ticks.
pub fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(hz()) / 1_000_000_000) as u64
}

/// Nanoseconds since boot (0 until calibrated).
pub fn uptime_ns() -> u64 {
    ticks_to_ns(rdtsc().saturating_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

/// The TSC value at a given uptime.
pub fn tsc_at(uptime_ns: u64) -> u64 {
    BOOT_TSC.load(Ordering::Relaxed) + ns_to_ticks(uptime_ns)
}

/// Busy-waits for `ns` nanoseconds (requires calibration).
pub fn delay_ns(ns: u64) {
    let end = rdtsc() + ns_to_ticks(ns);
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}
