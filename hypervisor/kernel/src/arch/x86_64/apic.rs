//! The local APIC, in x2APIC mode when the CPU has it, else xAPIC through the MMIO window.
//!
//! Intel SDM Vol. 3A, chapter 11. Every CPU enables its own LAPIC ([`init_cpu`]); the timer runs
//! one-shot, in TSC-deadline mode when available (the deadline is a TSC value, no calibration
//! needed) or counting down at a rate calibrated against the TSC at boot.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::cpu::{self, msr};
use super::trap::vectors;
use super::tsc;

const REG_ID: u32 = 0x20;
const REG_VERSION: u32 = 0x30;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_IRR: u32 = 0x200;
const REG_ESR: u32 = 0x280;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3E0;

const LVT_MASKED: u32 = 1 << 16;
const TIMER_MODE_TSC_DEADLINE: u32 = 0b10 << 17;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;

static X2APIC: AtomicBool = AtomicBool::new(false);
/// Virtual address of the xAPIC registers (0 in x2APIC mode).
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
/// LAPIC timer ticks per millisecond (divide by 16), for one-shot mode.
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

/// Decides the mode once (on the BSP): x2APIC if supported, else xAPIC at `phys_base`.
pub fn init_global(phys_base: u64) -> Result<(), &'static str> {
    let f = cpu::features();
    TSC_DEADLINE.store(f.tsc_deadline, Ordering::Relaxed);
    if f.x2apic {
        X2APIC.store(true, Ordering::Relaxed);
    } else {
        let v = crate::mm::ioremap(phys_base, 4096).ok_or("cannot map the xAPIC registers")?;
        XAPIC_BASE.store(v, Ordering::Relaxed);
    }
    Ok(())
}

/// "x2APIC" or "xAPIC".
pub fn mode_name() -> &'static str {
    if X2APIC.load(Ordering::Relaxed) {
        "x2APIC"
    } else {
        "xAPIC"
    }
}

/// True when the timer uses TSC-deadline mode.
pub fn uses_tsc_deadline() -> bool {
    TSC_DEADLINE.load(Ordering::Relaxed)
}

fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled on this CPU and `reg` is an architectural register.
        unsafe { cpu::rdmsr(msr::X2APIC_BASE + (reg >> 4)) as u32 }
    } else {
        // SAFETY: the xAPIC page is mapped uncached at XAPIC_BASE; `reg` is a register offset.
        unsafe {
            ((XAPIC_BASE.load(Ordering::Relaxed) + u64::from(reg)) as *const u32).read_volatile()
        }
    }
}

fn write(reg: u32, v: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: as in `read`; writes go to LAPIC registers only.
        unsafe { cpu::wrmsr(msr::X2APIC_BASE + (reg >> 4), u64::from(v)) }
    } else {
        // SAFETY: as in `read`.
        unsafe {
            ((XAPIC_BASE.load(Ordering::Relaxed) + u64::from(reg)) as *mut u32).write_volatile(v)
        }
    }
}

/// Enables and configures this CPU's LAPIC: mode, spurious vector, error vector, LINT0 masked
/// (the 8259 is masked anyway), timer masked until armed.
pub fn init_cpu() {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; bit 11 enables the LAPIC and bit 10
    // selects x2APIC mode, which the BSP verified this CPU model supports.
    unsafe {
        let base = cpu::rdmsr(msr::APIC_BASE);
        let mut v = base | (1 << 11);
        if X2APIC.load(Ordering::Relaxed) {
            v |= 1 << 10;
        }
        cpu::wrmsr(msr::APIC_BASE, v);
    }
    write(REG_SVR, 0x100 | u32::from(vectors::SPURIOUS));
    write(REG_TPR, 0);
    write(REG_LVT_LINT0, LVT_MASKED);
    write(REG_LVT_ERROR, u32::from(vectors::APIC_ERROR));
    write(REG_ESR, 0);
    write(REG_TIMER_DIVIDE, 0b0011); // divide by 16
    let mode = if uses_tsc_deadline() {
        TIMER_MODE_TSC_DEADLINE
    } else {
        0
    };
    write(REG_LVT_TIMER, mode | u32::from(vectors::TIMER));
    write(REG_EOI, 0);
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        read(REG_ID)
    } else {
        read(REG_ID) >> 24
    }
}

/// LAPIC version register.
pub fn version() -> u32 {
    read(REG_VERSION)
}

/// Signals end of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// True when an interrupt waits in this CPU's IRR: what a long hypercall polls (with
/// interrupts off) to decide to stop and let it be taken.
pub fn interrupt_pending() -> bool {
    (0..8).any(|i| read(REG_IRR + i * 0x10) != 0)
}

/// Reads and clears the error status.
pub fn read_error() -> u32 {
    write(REG_ESR, 0);
    read(REG_ESR)
}

/// Measures the one-shot countdown rate against the TSC (not needed in TSC-deadline mode).
pub fn calibrate_timer() {
    if uses_tsc_deadline() {
        return;
    }
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(vectors::TIMER));
    write(REG_TIMER_INIT, u32::MAX);
    tsc::delay_ns(10_000_000);
    let elapsed = u32::MAX - read(REG_TIMER_CURRENT);
    write(REG_TIMER_INIT, 0);
    write(REG_LVT_TIMER, u32::from(vectors::TIMER));
    TICKS_PER_MS.store(u64::from(elapsed / 10).max(1), Ordering::Relaxed);
}

/// LAPIC timer rate in ticks per ms (0 in TSC-deadline mode).
pub fn timer_ticks_per_ms() -> u64 {
    TICKS_PER_MS.load(Ordering::Relaxed)
}

/// Arms the timer to fire at `deadline_ns` of uptime (immediately if already past).
pub fn arm_timer(deadline_ns: u64) {
    if uses_tsc_deadline() {
        // SAFETY: IA32_TSC_DEADLINE exists when CPUID reports TSC-deadline mode.
        unsafe { cpu::wrmsr(msr::TSC_DEADLINE, tsc::tsc_at(deadline_ns).max(1)) };
    } else {
        let delta_ns = deadline_ns.saturating_sub(tsc::uptime_ns());
        let ticks = (u128::from(delta_ns) * u128::from(timer_ticks_per_ms()) / 1_000_000)
            .clamp(1, u128::from(u32::MAX));
        write(REG_TIMER_INIT, ticks as u32);
    }
}

/// Cancels a pending timer interrupt.
pub fn disarm_timer() {
    if uses_tsc_deadline() {
        // SAFETY: as in `arm_timer`; 0 disarms.
        unsafe { cpu::wrmsr(msr::TSC_DEADLINE, 0) };
    } else {
        write(REG_TIMER_INIT, 0);
    }
}

/// ICR delivery modes used by Hestia.
#[derive(Clone, Copy, Debug)]
pub enum Delivery {
    /// Fixed interrupt at a vector.
    Fixed(u8),
    /// NMI.
    Nmi,
    /// INIT (assert, level).
    Init,
    /// Start-up IPI with the trampoline page number.
    Startup(u8),
}

/// Sends an IPI to the CPU with APIC id `dest`.
pub fn send_ipi(dest: u32, d: Delivery) {
    let low = match d {
        Delivery::Fixed(v) => u32::from(v),
        Delivery::Nmi => 0b100 << 8,
        Delivery::Init => (0b101 << 8) | (1 << 14),
        Delivery::Startup(page) => (0b110 << 8) | u32::from(page),
    };
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: in x2APIC mode the ICR is the single 64-bit MSR 0x830; writing it sends an IPI.
        unsafe {
            cpu::wrmsr(
                msr::X2APIC_BASE + (REG_ICR_LOW >> 4),
                (u64::from(dest) << 32) | u64::from(low),
            )
        };
    } else {
        write(REG_ICR_HIGH, dest << 24);
        write(REG_ICR_LOW, low);
        for _ in 0..1_000_000 {
            if read(REG_ICR_LOW) & ICR_DELIVERY_PENDING == 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
}

/// Sends a fixed IPI to every other CPU (all-excluding-self shorthand).
pub fn send_ipi_all_others(vector: u8) {
    let low = (0b11 << 18) | u32::from(vector);
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: as in `send_ipi`.
        unsafe { cpu::wrmsr(msr::X2APIC_BASE + (REG_ICR_LOW >> 4), u64::from(low)) };
    } else {
        write(REG_ICR_HIGH, 0);
        write(REG_ICR_LOW, low);
    }
}
