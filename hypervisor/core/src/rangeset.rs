//! A set of `u64` values kept as sorted, disjoint half-open ranges (Xen's `rangeset`): which
//! machine frames of I/O memory a domain may map.

use alloc::vec::Vec;

/// Sorted, disjoint, non-adjacent `[start, end)` ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self { ranges: Vec::new() }
    }

    /// Adds `[start, end)`.
    pub fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        // Merge with every range that overlaps or touches.
        self.ranges.retain(|&(a, b)| {
            if b < s || a > e {
                true
            } else {
                s = s.min(a);
                e = e.max(b);
                false
            }
        });
        let at = self.ranges.partition_point(|&(a, _)| a < s);
        self.ranges.insert(at, (s, e));
    }

    /// Removes `[start, end)`.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(a, b) in &self.ranges {
            if b <= start || a >= end {
                out.push((a, b));
                continue;
            }
            if a < start {
                out.push((a, start));
            }
            if b > end {
                out.push((end, b));
            }
        }
        self.ranges = out;
    }

    /// True if `x` is in the set.
    pub fn contains(&self, x: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, b)| b <= x);
        self.ranges.get(i).is_some_and(|&(a, _)| a <= x)
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_remove_contains() {
        let mut s = RangeSet::new();
        s.add(10, 20);
        s.add(30, 40);
        s.add(20, 30); // touches both: one range
        assert_eq!(s.ranges(), &[(10, 40)]);
        s.remove(15, 16);
        assert_eq!(s.ranges(), &[(10, 15), (16, 40)]);
        assert!(s.contains(10) && s.contains(14) && !s.contains(15) && s.contains(16));
        assert!(!s.contains(40) && !s.contains(9));
        s.remove(0, 100);
        assert!(s.ranges().is_empty());
        s.add(0, u64::MAX);
        s.remove(0xfee00, 0xfef00);
        assert!(s.contains(0xfedff) && !s.contains(0xfee00) && !s.contains(0xfeeff));
        assert!(s.contains(0xfef00) && s.contains(u64::MAX - 1));
    }

    #[test]
    fn matches_a_bitmap() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut s = RangeSet::new();
        let mut bits = [false; 256];
        for _ in 0..2000 {
            let (a, b) = ((next() % 256) as usize, (next() % 256) as usize);
            let (lo, hi) = (a.min(b), a.max(b));
            let add = next() % 2 == 0;
            if add {
                s.add(lo as u64, hi as u64);
            } else {
                s.remove(lo as u64, hi as u64);
            }
            bits[lo..hi].fill(add);
            for (i, &bit) in bits.iter().enumerate() {
                assert_eq!(s.contains(i as u64), bit, "value {i}");
            }
            for w in s.ranges().windows(2) {
                assert!(
                    w[0].1 < w[1].0,
                    "ranges must stay sorted and apart: {:?}",
                    s.ranges()
                );
            }
        }
    }
}
