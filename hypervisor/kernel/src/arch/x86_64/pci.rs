//! PCI configuration space through the legacy mechanism #1 (ports 0xCF8/0xCFC). Hestia drives
//! no PCI device itself; it performs dom0's accesses, with dom0's own virtual CF8 value, so that
//! the index/data pair can never be split between two accessors, and programs the MSI registers
//! of dom0's devices ([`Function`]).

use x86_64::instructions::port::Port;

/// Serialises every CF8/CFC pair.
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// CF8 enable bit: without it, configuration cycles are not generated.
pub const CF8_ENABLE: u32 = 1 << 31;

/// Reads `size` bytes (1, 2 or 4, not crossing the dword) at byte `offset` (0-3) of the dword
/// `cf8` selects.
pub fn read(cf8: u32, offset: u16, size: u8) -> u32 {
    let _g = LOCK.lock();
    let port = 0xCFC + offset;
    // SAFETY: mechanism #1 is the architected PCI configuration interface; the lock keeps the
    // index/data pair together; a configuration read has no memory-safety effect on Hestia.
    unsafe {
        Port::<u32>::new(0xCF8).write(cf8 & !3);
        match size {
            1 => u32::from(Port::<u8>::new(port).read()),
            2 => u32::from(Port::<u16>::new(port).read()),
            _ => Port::<u32>::new(port).read(),
        }
    }
}

/// Writes `size` bytes of `value` at byte `offset` of the dword `cf8` selects.
pub fn write(cf8: u32, offset: u16, size: u8, value: u32) {
    let _g = LOCK.lock();
    let port = 0xCFC + offset;
    // SAFETY: as in `read`; the callers only forward dom0's writes, and dom0 drives the devices
    // (Hestia owns none behind PCI).
    unsafe {
        Port::<u32>::new(0xCF8).write(cf8 & !3);
        match size {
            1 => Port::<u8>::new(port).write(value as u8),
            2 => Port::<u16>::new(port).write(value as u16),
            _ => Port::<u32>::new(port).write(value),
        }
    }
}

/// One PCI function on segment 0, addressed through mechanism #1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// Bus.
    pub bus: u8,
    /// Device (bits 7-3) and function (bits 2-0).
    pub devfn: u8,
}

impl Function {
    /// The CF8 value selecting the dword holding byte `reg`.
    pub fn cf8(&self, reg: u16) -> u32 {
        CF8_ENABLE
            | (u32::from(self.bus) << 16)
            | (u32::from(self.devfn) << 8)
            | u32::from(reg & 0xFC)
    }

    /// The function a CF8 value selects, and the register dword.
    pub fn from_cf8(cf8: u32) -> (Self, u16) {
        let f = Function {
            bus: (cf8 >> 16) as u8,
            devfn: (cf8 >> 8) as u8,
        };
        (f, (cf8 & 0xFC) as u16)
    }

    /// Reads `size` (1, 2, 4) bytes at `reg` (naturally aligned).
    pub fn read(&self, reg: u16, size: u8) -> u32 {
        read(self.cf8(reg), reg & 3, size)
    }

    /// Writes `size` (1, 2, 4) bytes at `reg` (naturally aligned).
    pub fn write(&self, reg: u16, size: u8, value: u32) {
        write(self.cf8(reg), reg & 3, size, value)
    }

    /// True if a device answers at this address.
    pub fn exists(&self) -> bool {
        self.read(0, 2) != 0xFFFF
    }
}
