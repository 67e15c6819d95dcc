//! The console history (Xen's `conring`, `xen/drivers/char/console.c`): the last bytes the
//! hypervisor printed, for `XEN_SYSCTL_readconsole` (`xl dmesg`).
//!
//! Two free-running 32-bit indices count bytes ever written (`prod`) and the oldest byte
//! still held (`cons`); a byte's slot is its index modulo the (power-of-two) size. Writing
//! past a full ring moves `cons` up, so the ring always holds the newest bytes. A reader
//! walks from `cons` (or, incrementally, from the index it got last time, if that is newer)
//! and gets back the index to continue from; clearing moves `cons` up to what it has read.

/// A console history of `N` bytes (`N` a power of two).
pub struct ConRing<const N: usize> {
    buf: [u8; N],
    prod: u32,
    cons: u32,
}

/// What a read delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    /// Bytes delivered.
    pub count: u32,
    /// Index to continue from (`incremental` reads pass it back).
    pub index: u32,
}

impl<const N: usize> Default for ConRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ConRing<N> {
    const MASK: u32 = {
        assert!(N.is_power_of_two() && N <= 1 << 30);
        (N - 1) as u32
    };

    /// An empty history.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            prod: 0,
            cons: 0,
        }
    }

    /// Appends `bytes`, dropping the oldest when full.
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.buf[(self.prod & Self::MASK) as usize] = b;
            self.prod = self.prod.wrapping_add(1);
        }
        if self.prod.wrapping_sub(self.cons) > N as u32 {
            self.cons = self.prod.wrapping_sub(N as u32);
        }
    }

    /// Hands up to `max` bytes to `out` in at most two contiguous pieces (each with its offset
    /// into the caller's buffer), from the oldest held byte or, when `incremental` and `index`
    /// is newer than that, from `index`. An error from `out` stops the read and is returned.
    pub fn read<E>(
        &self,
        incremental: bool,
        index: u32,
        max: u32,
        mut out: impl FnMut(u32, &[u8]) -> Result<(), E>,
    ) -> Result<Read, E> {
        let mut c = self.cons;
        // Signed distance, as Xen compares the free-running indices.
        if incremental && (index.wrapping_sub(c) as i32) > 0 {
            c = index;
        }
        let mut sofar = 0u32;
        while c != self.prod && sofar < max {
            let idx = c & Self::MASK;
            let len = self
                .prod
                .wrapping_sub(c)
                .min(N as u32 - idx)
                .min(max - sofar);
            out(sofar, &self.buf[idx as usize..(idx + len) as usize])?;
            sofar += len;
            c = c.wrapping_add(len);
        }
        Ok(Read {
            count: sofar,
            index: c,
        })
    }
}

impl<const N: usize> ConRing<N> {
    /// Forgets everything before index `c` (what a clearing reader has read); an index older
    /// than the oldest byte held forgets nothing more.
    pub fn clear_to(&mut self, c: u32) {
        if (c.wrapping_sub(self.cons) as i32) > 0 && c.wrapping_sub(self.prod) as i32 <= 0 {
            self.cons = c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn read_all<const N: usize>(
        r: &mut ConRing<N>,
        inc: bool,
        idx: u32,
        max: u32,
        clear: bool,
    ) -> (Vec<u8>, Read) {
        let mut v = Vec::new();
        let got = r
            .read::<()>(inc, idx, max, |off, b| {
                assert_eq!(off as usize, v.len());
                v.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        if clear {
            r.clear_to(got.index);
        }
        (v, got)
    }

    #[test]
    fn keeps_the_newest_bytes() {
        let mut r = ConRing::<8>::new();
        r.push(b"abcdefghijk");
        let (v, got) = read_all(&mut r, false, 0, 100, false);
        assert_eq!(v, b"defghijk");
        assert_eq!(
            got,
            Read {
                count: 8,
                index: 11
            }
        );
    }

    #[test]
    fn incremental_reads_continue_and_clear_forgets() {
        let mut r = ConRing::<16>::new();
        r.push(b"hello ");
        let (v, got) = read_all(&mut r, true, 0, 100, false);
        assert_eq!(v, b"hello ");
        r.push(b"world");
        let (v, got2) = read_all(&mut r, true, got.index, 100, false);
        assert_eq!(v, b"world");
        assert_eq!(got2.index, 11);
        let (v, _) = read_all(&mut r, false, 0, 3, true);
        assert_eq!(v, b"hel");
        let (v, _) = read_all(&mut r, false, 0, 100, false);
        assert_eq!(v, b"lo world");
    }

    #[test]
    fn wraps_in_two_pieces_and_respects_max() {
        let mut r = ConRing::<8>::new();
        r.push(b"123456");
        let _ = read_all(&mut r, false, 0, 100, true);
        r.push(b"abcdef");
        let mut pieces = 0;
        let got = r
            .read::<()>(false, 0, 5, |_, _| {
                pieces += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(pieces, 2);
        assert_eq!(got.count, 5);
        let (v, _) = read_all(&mut r, false, 0, 100, false);
        assert_eq!(v, b"abcdef");
    }

    #[test]
    fn an_old_index_reads_from_the_oldest_byte() {
        let mut r = ConRing::<4>::new();
        r.push(b"abcdefgh");
        let (v, _) = read_all(&mut r, true, 1, 100, false);
        assert_eq!(v, b"efgh");
    }

    #[test]
    fn clearing_to_a_stale_index_keeps_the_newer_bytes() {
        let mut r = ConRing::<4>::new();
        r.push(b"ab");
        r.clear_to(1);
        r.push(b"cdefg");
        // Index 1 was overwritten long ago: nothing more is forgotten.
        r.clear_to(1);
        let (v, _) = read_all(&mut r, false, 0, 100, false);
        assert_eq!(v, b"defg");
        // An index past the newest byte is refused.
        r.clear_to(100);
        let (v, _) = read_all(&mut r, false, 0, 100, false);
        assert_eq!(v, b"defg");
    }
}
