//! The serial transmit ring and what bytes become on the line.
//!
//! Output is queued in a power-of-two byte ring that the UART's transmit interrupt drains a
//! FIFO's worth at a time (Xen's `serial_tx_buffer`, `xen/drivers/char/serial.c`), so no writer
//! waits for the wire. Indices are free-running `u32` counters masked on use: `prod - cons` is
//! the fill level even after they wrap, and no byte is ever read from or written to outside the
//! buffer whatever the counters hold.
//!
//! [`cooked`] is the one place that decides which bytes reach the wire: `\n` gains a `\r`, and
//! guest text loses control characters other than tab, newline, carriage return and escape (a
//! guest must not be able to reprogram the terminal of whoever reads the console beyond colours).

use alloc::vec;
use alloc::vec::Vec;

/// Default ring size (Xen's `CONFIG_SERIAL_TX_BUFSIZE`).
pub const DEFAULT_SIZE: usize = 16 * 1024;
/// Smallest ring `serial_tx_buffer=` can ask for (Xen's floor is a page too).
pub const MIN_SIZE: usize = 4096;
/// Largest ring `serial_tx_buffer=` can ask for.
pub const MAX_SIZE: usize = 1 << 20;

/// The ring size for a `serial_tx_buffer=` request: clamped, then rounded down to a power of two.
pub fn ring_size(requested: u64) -> usize {
    let s = requested.clamp(MIN_SIZE as u64, MAX_SIZE as u64);
    1 << (63 - s.leading_zeros())
}

/// A byte ring of power-of-two size.
#[derive(Clone, Debug)]
pub struct TxRing {
    buf: Vec<u8>,
    prod: u32,
    cons: u32,
}

impl TxRing {
    /// An empty ring of [`ring_size`]`(size)` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            buf: vec![0; ring_size(size)],
            prod: 0,
            cons: 0,
        }
    }

    fn mask(&self, i: u32) -> usize {
        i as usize & (self.buf.len() - 1)
    }

    /// Bytes it holds at most.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.prod.wrapping_sub(self.cons) as usize
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.prod == self.cons
    }

    /// Bytes that can still be queued.
    pub fn free(&self) -> usize {
        self.capacity().saturating_sub(self.len())
    }

    /// Queues `b`; false (and nothing queued) when the ring is full.
    pub fn push(&mut self, b: u8) -> bool {
        if self.free() == 0 {
            return false;
        }
        let i = self.mask(self.prod);
        if let Some(slot) = self.buf.get_mut(i) {
            *slot = b;
        }
        self.prod = self.prod.wrapping_add(1);
        true
    }

    /// Takes the oldest byte.
    pub fn pop(&mut self) -> Option<u8> {
        if self.is_empty() {
            return None;
        }
        let b = self.buf.get(self.mask(self.cons)).copied();
        self.cons = self.cons.wrapping_add(1);
        b
    }
}

/// Whose text is being sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Hestia's own log lines and dumps: sent as they are.
    Hypervisor,
    /// A guest's console output: control characters other than `\t`, `\n`, `\r` and ESC dropped.
    Guest,
}

fn expand(b: u8, src: Source) -> impl Iterator<Item = u8> {
    let (bytes, n) = match b {
        b'\n' => ([b'\r', b'\n'], 2),
        b'\t' | b'\r' | 0x1b | 0x20.. => ([b, 0], 1),
        _ if src == Source::Hypervisor => ([b, 0], 1),
        _ => ([0, 0], 0),
    };
    bytes.into_iter().take(n)
}

/// The bytes `text` from `src` puts on the wire.
pub fn cooked(text: &[u8], src: Source) -> impl Iterator<Item = u8> + '_ {
    text.iter().flat_map(move |&b| expand(b, src))
}

/// How many bytes `text` from `src` puts on the wire.
pub fn cooked_len(text: &[u8], src: Source) -> usize {
    text.iter().map(|&b| expand(b, src).count()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_clamped_powers_of_two() {
        assert_eq!(ring_size(DEFAULT_SIZE as u64), DEFAULT_SIZE);
        assert_eq!(ring_size(20_000), 16384);
        assert_eq!(ring_size(0), MIN_SIZE);
        assert_eq!(ring_size(u64::MAX), MAX_SIZE);
    }

    #[test]
    fn fifo_order_and_fill_level() {
        let mut r = TxRing::new(4096);
        assert!(r.is_empty());
        for i in 0..4096u32 {
            assert!(r.push(i as u8));
        }
        assert!(!r.push(0xff), "a full ring refuses");
        assert_eq!((r.len(), r.free()), (4096, 0));
        for i in 0..4096u32 {
            assert_eq!(r.pop(), Some(i as u8));
        }
        assert_eq!(r.pop(), None);
    }

    #[test]
    fn counters_wrap_without_losing_bytes() {
        let mut r = TxRing::new(4096);
        (r.prod, r.cons) = (u32::MAX - 5, u32::MAX - 5);
        for b in 0..100u8 {
            assert!(r.push(b));
        }
        assert_eq!(r.len(), 100);
        let out: Vec<u8> = core::iter::from_fn(|| r.pop()).collect();
        assert_eq!(out, (0..100u8).collect::<Vec<_>>());
    }

    #[test]
    fn cooking() {
        let g: Vec<u8> = cooked(b"a\nb\x07\x1b[1m\t\r\x00", Source::Guest).collect();
        assert_eq!(g, b"a\r\nb\x1b[1m\t\r");
        assert_eq!(
            cooked_len(b"a\nb\x07\x1b[1m\t\r\x00", Source::Guest),
            g.len()
        );
        let h: Vec<u8> = cooked(b"x\x07\n", Source::Hypervisor).collect();
        assert_eq!(h, b"x\x07\r\n");
        assert_eq!(cooked_len(b"\n\n", Source::Hypervisor), 4);
    }
}
