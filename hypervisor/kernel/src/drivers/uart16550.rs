//! A polled 16550 UART (COM1 by default): Hestia's console from the first instant of boot.
//!
//! Programmed for 8N1 at the configured baud rate from the 1.8432 MHz reference clock (divisor
//! = 115200 / baud). Transmission polls the line-status register; reception is interrupt-driven
//! (IER bit 0) once the IOAPIC routes the line, and polled in the handler until empty.

use x86_64::instructions::port::Port;

const THR_RBR: u16 = 0; // transmit holding / receive buffer (DLAB=0); divisor low (DLAB=1)
const IER: u16 = 1; // interrupt enable (DLAB=0); divisor high (DLAB=1)
const FCR: u16 = 2; // FIFO control
const LCR: u16 = 3; // line control
const MCR: u16 = 4; // modem control
const LSR: u16 = 5; // line status
const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;

/// One 16550-compatible UART at an I/O port base.
#[derive(Clone, Copy, Debug)]
pub struct Uart {
    base: u16,
}

impl Uart {
    /// A UART at `base`; nothing is touched until [`Uart::init`].
    pub const fn new(base: u16) -> Self {
        Self { base }
    }

    fn out(&self, reg: u16, v: u8) {
        // SAFETY: the port belongs to the UART Hestia owns as its console (COM1 or `com1=`);
        // writing its registers has no effect on memory.
        unsafe { Port::<u8>::new(self.base + reg).write(v) }
    }

    fn inp(&self, reg: u16) -> u8 {
        // SAFETY: as in `out`: reading a UART register has no memory side effects.
        unsafe { Port::<u8>::new(self.base + reg).read() }
    }

    /// Programs 8N1 at `baud`, enables and clears the FIFOs, raises DTR/RTS/OUT2 (OUT2 gates the
    /// interrupt line on PC hardware) and leaves interrupts off.
    pub fn init(&self, baud: u32) {
        let divisor = (115_200 / baud.clamp(1, 115_200)) as u16;
        self.out(IER, 0);
        self.out(LCR, 0x80);
        self.out(THR_RBR, divisor as u8);
        self.out(IER, (divisor >> 8) as u8);
        self.out(LCR, 0x03);
        self.out(FCR, 0xC7);
        self.out(MCR, 0x0B);
    }

    /// Enables the receive-data interrupt.
    pub fn enable_rx_interrupt(&self) {
        self.out(IER, 0x01);
    }

    /// Sends one byte, waiting (bounded) for room in the transmitter. A UART that never becomes
    /// ready (absent hardware) must not hang the hypervisor, so the wait gives up.
    pub fn send(&self, b: u8) {
        for _ in 0..100_000 {
            if self.inp(LSR) & LSR_THR_EMPTY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        self.out(THR_RBR, b);
    }

    /// Returns a received byte if one is waiting.
    pub fn try_recv(&self) -> Option<u8> {
        // An absent UART reads as 0xFF: treat that as "no data".
        let lsr = self.inp(LSR);
        (lsr != 0xFF && lsr & LSR_DATA_READY != 0).then(|| self.inp(THR_RBR))
    }
}
