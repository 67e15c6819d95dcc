//! Raw port I/O on behalf of a guest that was granted the port.

use x86_64::instructions::port::Port;

/// Reads `size` bytes (1, 2 or 4) from `port`.
///
/// # Safety
/// The port must not be one Hestia drives itself (its UART, PIC, PIT, CF8/CFC, CMOS): the
/// caller checked the domain's port set, which excludes them.
pub unsafe fn read(port: u16, size: u8) -> u32 {
    // SAFETY: forwarded to the caller; port reads have no memory-safety effect on Hestia.
    unsafe {
        match size {
            1 => u32::from(Port::<u8>::new(port).read()),
            2 => u32::from(Port::<u16>::new(port).read()),
            _ => Port::<u32>::new(port).read(),
        }
    }
}

/// Writes `size` bytes of `value` to `port`.
///
/// # Safety
/// As for [`read`].
pub unsafe fn write(port: u16, size: u8, value: u32) {
    // SAFETY: forwarded to the caller.
    unsafe {
        match size {
            1 => Port::<u8>::new(port).write(value as u8),
            2 => Port::<u16>::new(port).write(value as u16),
            _ => Port::<u32>::new(port).write(value),
        }
    }
}
