//! The 8254 PIT, used once: to measure the TSC frequency (channel 2, gated through port 0x61, in
//! mode 0, polled; no interrupt). Afterwards the PIT is left stopped.

use x86_64::instructions::port::Port;

use super::cpu::rdtsc;

const PIT_HZ: u64 = 1_193_182;
const CH2_DATA: u16 = 0x42;
const MODE_CMD: u16 = 0x43;
const GATE_PORT: u16 = 0x61;

/// Measures the TSC frequency over `ms` milliseconds. `None` if the PIT's output never rises
/// (no PIT), detected by a TSC budget far beyond any real CPU's speed.
pub fn measure_tsc_hz(ms: u64) -> Option<u64> {
    let count = PIT_HZ * ms / 1000;
    let mut gate = Port::<u8>::new(GATE_PORT);
    let mut cmd = Port::<u8>::new(MODE_CMD);
    let mut ch2 = Port::<u8>::new(CH2_DATA);
    // SAFETY: ports 0x42, 0x43 and 0x61 are the PIT and the system control port, which Hestia
    // owns at boot; channel 2 drives only the PC speaker, whose enable bit is kept clear.
    unsafe {
        let g = gate.read();
        gate.write((g & !0x02) | 0x01);
        cmd.write(0xB0); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write(count as u8);
        ch2.write((count >> 8) as u8);
    }
    let start = rdtsc();
    let budget = 20_000_000 * ms; // 20 GHz worth of ticks
    loop {
        // SAFETY: as above; reading port 0x61 only samples the OUT2 status bit.
        let out = unsafe { gate.read() } & 0x20 != 0;
        let elapsed = rdtsc() - start;
        if out {
            return Some(elapsed * 1000 / ms);
        }
        if elapsed > budget {
            return None;
        }
        core::hint::spin_loop();
    }
}
