//! Which I/O ports a domain may reach on the hardware (Xen's `ioports_permit_access` /
//! `ioports_deny_access`): a 65,536-bit set. dom0 gets every port but the ones Hestia keeps for
//! itself; other domains get none until a toolstack grants some.

/// A set of I/O ports.
#[derive(Clone)]
pub struct PortSet {
    bits: [u64; 1024],
}

impl PortSet {
    /// No port.
    pub const fn none() -> Self {
        Self { bits: [0; 1024] }
    }

    /// Every port.
    pub const fn all() -> Self {
        Self {
            bits: [u64::MAX; 1024],
        }
    }

    /// Adds ports `first..=last`.
    pub fn allow(&mut self, first: u16, last: u16) {
        self.set(first, last, true);
    }

    /// Removes ports `first..=last`.
    pub fn deny(&mut self, first: u16, last: u16) {
        self.set(first, last, false);
    }

    fn set(&mut self, first: u16, last: u16, on: bool) {
        for p in first..=last {
            let (w, b) = (usize::from(p) / 64, p % 64);
            if on {
                self.bits[w] |= 1 << b;
            } else {
                self.bits[w] &= !(1 << b);
            }
        }
    }

    /// True if every port of a `size`-byte access at `port` is in the set (an access running
    /// past port 0xFFFF never is).
    pub fn allows(&self, port: u16, size: u8) -> bool {
        (0..u32::from(size)).all(|i| {
            let p = u32::from(port) + i;
            p <= 0xFFFF && self.bits[p as usize / 64] & (1 << (p % 64)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_widths() {
        let mut s = PortSet::all();
        s.deny(0x20, 0x21);
        s.deny(0x3F8, 0x3FF);
        assert!(s.allows(0x1F, 1));
        assert!(!s.allows(0x1F, 2), "a word access reaching a denied port");
        assert!(!s.allows(0x20, 1) && !s.allows(0x21, 1));
        assert!(s.allows(0x22, 4));
        assert!(!s.allows(0x3FC, 4) && s.allows(0x400, 4) && !s.allows(0x3F5, 4));
        assert!(s.allows(0xFFFF, 1) && !s.allows(0xFFFF, 2) && !s.allows(0xFFFD, 4));
        assert!(!PortSet::none().allows(0x80, 1));
        let mut n = PortSet::none();
        n.allow(0xCF8, 0xCFF);
        assert!(n.allows(0xCF8, 4) && n.allows(0xCFC, 4) && !n.allows(0xCF7, 2));
        n.allow(0xFFFE, 0xFFFF);
        assert!(n.allows(0xFFFE, 2));
    }
}
