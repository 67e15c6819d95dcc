//! Power off (ACPI S5) and reset, with fallbacks.
//!
//! Power off: switch firmware to ACPI mode if SCI_EN is clear, then write `SLP_TYPx << 10 |
//! SLP_EN` to PM1a (and PM1b) control (ACPI 6.5, 4.8.3.2 and 16.1.7). Without a FADT or `\_S5`
//! Hestia says why and halts. Reset: the FADT reset register, then the keyboard controller
//! (0x64 <- 0xFE), then a triple fault.

use acpi::address::{AddressSpace, GenericAddress};
use x86_64::instructions::port::Port;

use super::acpi::PowerRegs;
use super::{cpu, idt, tsc};

static REGS: spin::Once<PowerRegs> = spin::Once::new();

/// Records the FADT registers found at boot.
pub fn init(regs: PowerRegs) {
    REGS.call_once(|| regs);
}

fn read16(g: &GenericAddress) -> u16 {
    match g.address_space {
        AddressSpace::SystemIo => {
            // SAFETY: the port is the PM1 control block named by the FADT; reading it is harmless.
            unsafe { Port::<u16>::new(g.address as u16).read() }
        }
        _ => match crate::mm::ioremap(g.address, 2) {
            // SAFETY: the register is mapped uncached for 2 bytes.
            Some(v) => unsafe { (v as *const u16).read_volatile() },
            None => 0,
        },
    }
}

fn write_reg(g: &GenericAddress, v: u16) {
    match g.address_space {
        AddressSpace::SystemIo => {
            // SAFETY: the port is an ACPI fixed register named by the FADT; writing it is the
            // architected way to sleep or reset the machine, which is what the caller wants.
            unsafe {
                if g.bit_width == 8 {
                    Port::<u8>::new(g.address as u16).write(v as u8)
                } else {
                    Port::<u16>::new(g.address as u16).write(v)
                }
            }
        }
        _ => {
            if let Some(va) = crate::mm::ioremap(g.address, 2) {
                // SAFETY: as above, through an uncached mapping of the register.
                unsafe {
                    if g.bit_width == 8 {
                        (va as *mut u8).write_volatile(v as u8)
                    } else {
                        (va as *mut u16).write_volatile(v)
                    }
                }
            }
        }
    }
}

/// Powers the machine off. Returns only if that is impossible, after saying why.
pub fn poweroff() -> &'static str {
    let Some(r) = REGS.get() else {
        return "no ACPI FADT";
    };
    let Some(pm1a) = r.pm1a_cnt else {
        return "the FADT has no PM1a control block";
    };
    let Some(s5) = r.s5 else {
        return "no \\_S5 package in the DSDT (a method-computed \\_S5 is not supported)";
    };
    if read16(&pm1a) & 1 == 0 && r.smi_cmd != 0 && r.acpi_enable != 0 {
        // SAFETY: the SMI command port and ACPI-enable value come from the FADT; this is the
        // documented handshake that hands the fixed registers to the OS.
        unsafe { Port::<u8>::new(r.smi_cmd as u16).write(r.acpi_enable) };
        for _ in 0..300 {
            if read16(&pm1a) & 1 != 0 {
                break;
            }
            tsc::delay_ns(10_000_000);
        }
    }
    const SLP_EN: u16 = 1 << 13;
    write_reg(&pm1a, (s5.a << 10) | SLP_EN);
    if let Some(pm1b) = r.pm1b_cnt {
        write_reg(&pm1b, (s5.b << 10) | SLP_EN);
    }
    tsc::delay_ns(100_000_000);
    "the machine did not power off after the S5 write"
}

/// Resets the machine; never returns.
pub fn reset() -> ! {
    if let Some((reg, value)) = REGS.get().and_then(|r| r.reset) {
        write_reg(&reg, u16::from(value));
        tsc::delay_ns(50_000_000);
    }
    // SAFETY: 0x64 is the 8042 command port; 0xFE pulses the CPU reset line.
    unsafe { Port::<u8>::new(0x64).write(0xFE) };
    tsc::delay_ns(50_000_000);
    cpu::disable_interrupts();
    idt::triple_fault()
}
