//! Port I/O from PV guests (`shared/xen-abi.md` 4.10): IN/OUT/INS/OUTS trap with #GP (guests
//! run with IOPL 0 and no TSS I/O bitmap) and are performed here after two checks, as in Xen.
//!
//! 1. May the guest's current mode use the port? Its virtual IOPL (kernel mode counts as CPL 1,
//!    or 0 with `VMASST_TYPE_architectural_iopl`, user mode as CPL 3: [`iopl_ok`]), else the I/O bitmap it registered (`PHYSDEVOP_set_iobitmap`, read
//!    through its kernel page tables, a clear bit allows). If not: #GP for the guest.
//! 2. Does the domain hold the port? A port it does not hold reads as all ones and ignores
//!    writes. dom0 holds every port but Hestia's own; PCI configuration (dword CF8, CFC-CFF)
//!    and CMOS (0x70/0x71) are mediated so that Hestia and dom0 never split an index/data pair.
//!    Of the PIT, dom0 gets channel 2 and its gate (port 0x61): Linux calibrates with them (Xen
//!    emulates the same for its dom0); mode commands for channels 0 and 1 are dropped.

use core::sync::atomic::Ordering;

use hestia_core::insn::{Decoded, PortSource, Segment};
use hestia_core::ioport::PortSet;
use xen_abi::xen::vmasst;

use super::domain::{Domain, Vcpu};
use crate::arch::x86_64::idt::TrapFrame;
use crate::arch::x86_64::{cpu, pci, port, rtc};
use crate::mm::guest::GuestRange;
use hestia_core::policy::{self, Action};

/// Why an I/O instruction was not performed.
pub enum Fault {
    /// The guest may not use the port: #GP(0).
    GeneralProtection,
    /// A string instruction touched unmapped guest memory at this address.
    PageFault {
        /// The faulting address.
        addr: u64,
        /// The access was a write.
        write: bool,
    },
}

/// Elements of a REP INS/OUTS performed per trap; the rest re-executes (RIP stays).
const REP_BATCH: u64 = 1024;
/// RFLAGS.DF.
const RFLAGS_DF: u64 = 1 << 10;

/// PIT mode/command port; channel 2 data port.
const PIT_COMMAND: u16 = 0x43;

/// The ports dom0 holds: everything but the PICs and their ELCR, PIT channels 0 and 1 and the
/// command port (filtered separately), the mediated PCI data and CMOS ports, Hestia's serial
/// console, and the ACPI PM timer (`pm_timer`, its four ports), which Xen keeps from dom0 too
/// (`dom0_setup_permissions`), so dom0's reads of it give all ones there as here.
pub fn dom0_ports(console_uart: u16, pm_timer: Option<u16>) -> PortSet {
    let mut s = PortSet::all();
    for (first, last) in [
        (0x20, 0x21),
        (0xA0, 0xA1),
        (0x4D0, 0x4D1),
        (0x40, 0x41),
        (PIT_COMMAND, PIT_COMMAND),
        (0x70, 0x71),
        (0xCFC, 0xCFF),
    ] {
        s.deny(first, last);
    }
    s.deny(console_uart, console_uart.saturating_add(7));
    if let Some(port) = pm_timer {
        s.deny(port, port.saturating_add(3));
    }
    s
}

/// Performs a decoded IN/OUT/INS/OUTS for `v`; `Ok(true)` if it completed (RIP may advance),
/// `Ok(false)` if a long REP string must run again.
pub fn emulate(d: &Domain, v: &Vcpu, f: &mut TrapFrame, op: Decoded) -> Result<bool, Fault> {
    let dx = f.rdx as u16;
    match op {
        Decoded::In { port, size } => {
            let port = port_number(port, dx);
            check_guest(d, v, port, size)?;
            let value = read(d, port, size);
            f.rax = merge(f.rax, value, size);
            Ok(true)
        }
        Decoded::Out { port, size } => {
            let port = port_number(port, dx);
            check_guest(d, v, port, size)?;
            write(d, port, size, f.rax as u32);
            Ok(true)
        }
        Decoded::Ins { size, rep, addr32 } => {
            check_guest(d, v, dx, size)?;
            string(f, rep, addr32, |f| {
                let addr = mask(f.rdi, addr32);
                let bytes = read(d, dx, size).to_le_bytes();
                GuestRange::new(addr, usize::from(size))
                    .and_then(|r| r.write(&bytes[..usize::from(size)]))
                    .map_err(|_| Fault::PageFault { addr, write: true })?;
                f.rdi = step(f.rdi, size, f.rflags, addr32);
                Ok(())
            })
        }
        Decoded::Outs {
            size,
            rep,
            addr32,
            segment,
        } => {
            check_guest(d, v, dx, size)?;
            let base = match segment {
                Segment::Fs => cpu::fs_base(),
                // After SWAPGS the guest's active GS base is in KERNEL_GS_BASE.
                Segment::Gs => cpu::kernel_gs_base(),
                _ => 0,
            };
            string(f, rep, addr32, |f| {
                let addr = base.wrapping_add(mask(f.rsi, addr32));
                let mut bytes = [0u8; 4];
                GuestRange::new(addr, usize::from(size))
                    .and_then(|r| r.read(&mut bytes[..usize::from(size)]))
                    .map_err(|_| Fault::PageFault { addr, write: false })?;
                write(d, dx, size, u32::from_le_bytes(bytes));
                f.rsi = step(f.rsi, size, f.rflags, addr32);
                Ok(())
            })
        }
        _ => Err(Fault::GeneralProtection),
    }
}

fn port_number(p: PortSource, dx: u16) -> u16 {
    match p {
        PortSource::Immediate(n) => u16::from(n),
        PortSource::Dx => dx,
    }
}

/// RAX after an IN of `size` bytes: AL/AX replace the low bits, a 32-bit IN zero-extends.
fn merge(rax: u64, value: u32, size: u8) -> u64 {
    match size {
        1 => (rax & !0xff) | u64::from(value & 0xff),
        2 => (rax & !0xffff) | u64::from(value & 0xffff),
        _ => u64::from(value),
    }
}

fn mask(reg: u64, addr32: bool) -> u64 {
    if addr32 { reg & 0xffff_ffff } else { reg }
}

/// RSI/RDI after one element, in the direction RFLAGS.DF says.
fn step(reg: u64, size: u8, rflags: u64, addr32: bool) -> u64 {
    let next = if rflags & RFLAGS_DF != 0 {
        reg.wrapping_sub(u64::from(size))
    } else {
        reg.wrapping_add(u64::from(size))
    };
    mask(next, addr32)
}

/// Runs one element, or up to [`REP_BATCH`] of a REP prefix's RCX count.
fn string(
    f: &mut TrapFrame,
    rep: bool,
    addr32: bool,
    mut one: impl FnMut(&mut TrapFrame) -> Result<(), Fault>,
) -> Result<bool, Fault> {
    if !rep {
        one(f)?;
        return Ok(true);
    }
    for _ in 0..REP_BATCH {
        if mask(f.rcx, addr32) == 0 {
            return Ok(true);
        }
        one(f)?;
        f.rcx = mask(f.rcx.wrapping_sub(1), addr32);
    }
    Ok(mask(f.rcx, addr32) == 0)
}

/// Whether the vCPU's virtual IOPL allows what the architecture reserves to CPL <= IOPL: port
/// I/O without the bitmap, CLI and STI. Guest user mode is CPL 3; guest kernel mode counts as
/// CPL 1 (it once ran in ring 1), or as CPL 0 with `VMASST_TYPE_architectural_iopl`, as Xen's
/// `iopl_ok`.
pub fn iopl_ok(d: &Domain, v: &Vcpu) -> bool {
    let cpl = match (v.kernel_mode, d.vm_assist(vmasst::ARCHITECTURAL_IOPL)) {
        (false, _) => 3,
        (true, false) => 1,
        (true, true) => 0,
    };
    v.iopl >= cpl
}

/// Check 1: the guest's virtual IOPL or its I/O bitmap.
fn check_guest(d: &Domain, v: &Vcpu, port: u16, size: u8) -> Result<(), Fault> {
    if iopl_ok(d, v) {
        return Ok(());
    }
    let (bitmap, nr_ports) = v.iobitmap;
    if u32::from(port) + u32::from(size) > nr_ports {
        return Err(Fault::GeneralProtection);
    }
    // Two bitmap bytes cover any access; unreadable bytes deny, as in Xen.
    let mut bytes = [0xffu8; 2];
    let at = bitmap.wrapping_add(u64::from(port / 8));
    with_kernel_tables(v, || {
        for (i, b) in bytes.iter_mut().enumerate() {
            let mut one = [0u8; 1];
            if GuestRange::new(at.wrapping_add(i as u64), 1)
                .and_then(|r| r.read(&mut one))
                .is_ok()
            {
                *b = one[0];
            }
        }
    });
    let bits = u16::from_le_bytes(bytes);
    if bits & (((1u16 << size) - 1) << (port & 7)) == 0 {
        Ok(())
    } else {
        Err(Fault::GeneralProtection)
    }
}

/// Runs `f` on the guest's kernel page tables (the I/O bitmap is a kernel address).
fn with_kernel_tables(v: &Vcpu, f: impl FnOnce()) {
    if v.kernel_mode || v.user_cr3 == 0 {
        return f();
    }
    // SAFETY: both are validated L4s of the running domain, each carrying Hestia's slots.
    unsafe { cpu::write_cr3(v.kernel_cr3) };
    f();
    // SAFETY: as above.
    unsafe { cpu::write_cr3(v.user_cr3) };
}

/// Check 2 and the access, for reads: all ones for a port the domain does not hold.
fn read(d: &Domain, port: u16, size: u8) -> u32 {
    if policy::allows(d.rights, Action::PlatformDevices) {
        if port == 0xCF8 && size == 4 {
            return d.pci_cf8.load(Ordering::Relaxed);
        }
        if let Some(offset) = pci_data_offset(port, size) {
            let cf8 = d.pci_cf8.load(Ordering::Relaxed);
            if cf8 & pci::CF8_ENABLE != 0 {
                return pci::read(cf8, offset, size);
            }
        }
        if size == 1 && port == 0x70 {
            return u32::from(d.rtc_index.load(Ordering::Relaxed));
        }
        if size == 1 && port == 0x71 {
            return u32::from(rtc::read(d.rtc_index.load(Ordering::Relaxed)));
        }
    }
    if d.ioports.allows(port, size) {
        // SAFETY: the domain holds every byte of the access; its port set never contains
        // Hestia's own ports.
        return unsafe { port::read(port, size) };
    }
    u32::MAX >> (32 - 8 * u32::from(size))
}

/// Check 2 and the access, for writes: dropped for a port the domain does not hold.
fn write(d: &Domain, port: u16, size: u8, value: u32) {
    if policy::allows(d.rights, Action::PlatformDevices) {
        if port == 0xCF8 && size == 4 {
            return d.pci_cf8.store(value, Ordering::Relaxed);
        }
        if let Some(offset) = pci_data_offset(port, size) {
            let cf8 = d.pci_cf8.load(Ordering::Relaxed);
            if cf8 & pci::CF8_ENABLE != 0 && super::msi::config_write_allowed(cf8, offset, size) {
                pci::write(cf8, offset, size, value);
            }
            return;
        }
        if size == 1 && port == 0x70 {
            return d.rtc_index.store(value as u8 & 0x7f, Ordering::Relaxed);
        }
        if size == 1 && port == 0x71 {
            return rtc::write(d.rtc_index.load(Ordering::Relaxed), value as u8);
        }
        if size == 1 && port == PIT_COMMAND && pit_channel2_command(value as u8) {
            // SAFETY: a command for channel 2 only, which dom0 holds; Hestia's channel 0
            // and 1 settings are untouched.
            return unsafe { port::write(port, 1, value) };
        }
    }
    if d.ioports.allows(port, size) {
        // SAFETY: as in `read`.
        unsafe { port::write(port, size, value) }
    }
}

/// True for a PIT command that concerns channel 2 alone: a mode/latch command for it, or a
/// read-back naming no other channel.
fn pit_channel2_command(cmd: u8) -> bool {
    match cmd >> 6 {
        0b10 => true,
        0b11 => cmd & 0b0110 == 0,
        _ => false,
    }
}

/// The byte offset in the configuration dword of an access to CFC-CFF that stays inside it.
fn pci_data_offset(port: u16, size: u8) -> Option<u16> {
    let offset = port.checked_sub(0xCFC)?;
    (offset + u16::from(size) <= 4).then_some(offset)
}
