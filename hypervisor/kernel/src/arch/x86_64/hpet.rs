//! The HPET main counter: enabled at boot when ACPI lists one, used to cross-check (or, without
//! a PIT, to measure) the TSC frequency. IA-PC HPET specification 1.0a, section 2.3.

use super::cpu::rdtsc;

const GCAP_ID: u64 = 0x000;
const GEN_CONF: u64 = 0x010;
const MAIN_COUNTER: u64 = 0x0F0;

/// A mapped HPET block.
#[derive(Clone, Copy, Debug)]
pub struct Hpet {
    base: u64,
    /// Counter period in femtoseconds.
    pub period_fs: u64,
}

impl Hpet {
    fn read(&self, reg: u64) -> u64 {
        // SAFETY: `base` maps the 1 KiB HPET register block uncached; `reg` is a register offset.
        unsafe { ((self.base + reg) as *const u64).read_volatile() }
    }
    fn write(&self, reg: u64, v: u64) {
        // SAFETY: as in `read`.
        unsafe { ((self.base + reg) as *mut u64).write_volatile(v) }
    }

    /// Maps the block at `phys`, checks its period and starts the main counter (legacy routing
    /// off, no comparators enabled).
    pub fn init(phys: u64) -> Option<Self> {
        let base = crate::mm::ioremap_dom0_readable(phys, 1024)?;
        let mut h = Hpet { base, period_fs: 0 };
        let period = h.read(GCAP_ID) >> 32;
        // The specification bounds the period to (0, 100 ns].
        if period == 0 || period > 100_000_000 {
            return None;
        }
        h.period_fs = period;
        h.write(GEN_CONF, (h.read(GEN_CONF) & !0b11) | 0b01);
        Some(h)
    }

    /// Counter frequency in Hz.
    pub fn hz(&self) -> u64 {
        1_000_000_000_000_000 / self.period_fs
    }

    /// Measures the TSC frequency over `ms` milliseconds of HPET time.
    pub fn measure_tsc_hz(&self, ms: u64) -> u64 {
        let ticks = self.hz() * ms / 1000;
        let c0 = self.read(MAIN_COUNTER);
        let t0 = rdtsc();
        while self.read(MAIN_COUNTER).wrapping_sub(c0) < ticks {
            core::hint::spin_loop();
        }
        let t1 = rdtsc();
        let elapsed = self.read(MAIN_COUNTER).wrapping_sub(c0);
        ((u128::from(t1 - t0) * u128::from(self.hz())) / u128::from(elapsed.max(1))) as u64
    }
}
