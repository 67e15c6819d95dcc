//! A 16550 UART (COM1 by default): Hestia's console from the first instant of boot.
//!
//! Programmed for 8N1 at the configured baud rate from the 1.8432 MHz reference clock (divisor
//! = 115200 / baud), FIFOs on. Transmission is either polled byte by byte ([`Uart::send`], before
//! interrupts work and on fatal paths) or driven by the transmit-holding-register-empty (THRE)
//! interrupt: the console fills the FIFO when [`Uart::tx_ready`] says it is empty and waits for
//! the next interrupt. Reception is interrupt-driven. Register map and IIR encoding: the
//! National Semiconductor PC16550D datasheet, section 8; Xen's `xen/drivers/char/ns16550.c`.

use x86_64::instructions::port::Port;

const THR_RBR: u16 = 0; // transmit holding / receive buffer (DLAB=0); divisor low (DLAB=1)
const IER: u16 = 1; // interrupt enable (DLAB=0); divisor high (DLAB=1)
const IIR_FCR: u16 = 2; // interrupt identification (read) / FIFO control (write)
const LCR: u16 = 3; // line control
const MCR: u16 = 4; // modem control
const LSR: u16 = 5; // line status
const MSR: u16 = 6; // modem status
const IER_RX: u8 = 0x01; // received data available
const IER_THRE: u8 = 0x02; // transmit holding register empty
const IIR_NONE: u8 = 0x01; // no interrupt pending
const IIR_FIFOS: u8 = 0xC0; // both bits set: the FIFOs are enabled (a 16550A)
const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;
/// Transmit FIFO depth of a 16550A.
const FIFO_SIZE: usize = 16;

/// Why the UART interrupted (IIR bits 1-3, highest priority first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Nothing pending.
    None,
    /// Overrun, parity, framing error or break: cleared by reading LSR.
    LineStatus,
    /// Received data (or a receive FIFO timeout): cleared by reading the data.
    Received,
    /// The transmitter can take more: cleared by this IIR read or by writing THR.
    TxEmpty,
    /// Modem lines changed: cleared by reading MSR.
    ModemStatus,
}

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
    /// interrupt line on PC hardware) and leaves interrupts off. Returns the transmit FIFO depth
    /// (1 on a UART without FIFOs).
    pub fn init(&self, baud: u32) -> usize {
        let divisor = (115_200 / baud.clamp(1, 115_200)) as u16;
        self.out(IER, 0);
        self.out(LCR, 0x80);
        self.out(THR_RBR, divisor as u8);
        self.out(IER, (divisor >> 8) as u8);
        self.out(LCR, 0x03);
        self.out(IIR_FCR, 0xC7);
        self.out(MCR, 0x0B);
        // With IER clear no interrupt is pending, so this read clears nothing.
        if self.inp(IIR_FCR) & IIR_FIFOS == IIR_FIFOS {
            FIFO_SIZE
        } else {
            1
        }
    }

    /// Enables the receive interrupt, and the transmit-empty one if `tx`. Enabling the latter
    /// while the transmitter is empty raises it at once, which starts the drain.
    pub fn enable_interrupts(&self, tx: bool) {
        self.out(IER, IER_RX | if tx { IER_THRE } else { 0 });
    }

    /// Drops and restores the interrupt enables, so that a cause still pending raises a fresh
    /// edge on the (edge-triggered ISA) line after a handler that stopped early.
    pub fn rearm_interrupts(&self) {
        let ier = self.inp(IER);
        self.out(IER, 0);
        self.out(IER, ier);
    }

    /// Reads the interrupt identification register (which acknowledges a THRE interrupt).
    pub fn cause(&self) -> Cause {
        let iir = self.inp(IIR_FCR);
        if iir & IIR_NONE != 0 {
            return Cause::None;
        }
        match (iir >> 1) & 7 {
            3 => Cause::LineStatus,
            2 | 6 => Cause::Received,
            1 => Cause::TxEmpty,
            _ => Cause::ModemStatus,
        }
    }

    /// Reads LSR and MSR, clearing line and modem status interrupts.
    pub fn clear_status(&self) {
        let _ = (self.inp(LSR), self.inp(MSR));
    }

    /// True when the transmit holding register (and FIFO) is empty: up to a FIFO's depth of
    /// bytes may be written with [`Uart::putc`] without waiting.
    pub fn tx_ready(&self) -> bool {
        self.inp(LSR) & LSR_THR_EMPTY != 0
    }

    /// Writes one byte to the transmitter without waiting (after [`Uart::tx_ready`]).
    pub fn putc(&self, b: u8) {
        self.out(THR_RBR, b);
    }

    /// Sends one byte, waiting (bounded) for room in the transmitter. A UART that never becomes
    /// ready (absent hardware) must not hang the hypervisor, so the wait gives up.
    pub fn send(&self, b: u8) {
        for _ in 0..100_000 {
            if self.tx_ready() {
                break;
            }
            core::hint::spin_loop();
        }
        self.putc(b);
    }

    /// Returns a received byte if one is waiting.
    pub fn try_recv(&self) -> Option<u8> {
        // An absent UART reads as 0xFF: treat that as "no data".
        let lsr = self.inp(LSR);
        (lsr != 0xFF && lsr & LSR_DATA_READY != 0).then(|| self.inp(THR_RBR))
    }
}
