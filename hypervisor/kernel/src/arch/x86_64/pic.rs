//! The legacy 8259 PICs: remapped away from the exception vectors and fully masked. Hestia takes
//! every interrupt through the IOAPIC; dom0 never sees the 8259.

use x86_64::instructions::port::Port;

/// Remaps both PICs to vectors 0x20-0x2F (so a stray interrupt cannot look like an exception)
/// and masks every line.
pub fn disable() {
    let mut cmd1 = Port::<u8>::new(0x20);
    let mut data1 = Port::<u8>::new(0x21);
    let mut cmd2 = Port::<u8>::new(0xA0);
    let mut data2 = Port::<u8>::new(0xA1);
    // SAFETY: ports 0x20/0x21/0xA0/0xA1 are the 8259 pair, owned by Hestia; the ICW sequence only
    // reprograms their vector offsets and masks.
    unsafe {
        cmd1.write(0x11);
        cmd2.write(0x11);
        data1.write(0x20);
        data2.write(0x28);
        data1.write(0x04);
        data2.write(0x02);
        data1.write(0x01);
        data2.write(0x01);
        data1.write(0xFF);
        data2.write(0xFF);
    }
}
