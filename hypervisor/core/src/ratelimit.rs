//! A token bucket for log messages a guest can trigger, one per domain.
//!
//! A guest that makes Hestia warn on every hypercall must not turn the console into its own
//! bandwidth: each domain gets [`BURST`] lines at once, then one line per [`INTERVAL_NS`]
//! (Xen's `printk_ratelimit`, `xen/drivers/char/console.c`, is the same bucket with 10 lines and
//! 5 s, global rather than per domain). Lines refused are counted, and the next line that passes
//! carries the count so the log says how many were suppressed.
//!
//! Pure logic: the caller supplies the time and holds whatever lock guards the bucket.

/// Lines a domain may print back to back.
pub const BURST: u64 = 10;
/// Time that buys one more line (100 ms: at most ten lines a second once the burst is spent).
pub const INTERVAL_NS: u64 = 100_000_000;

/// One domain's bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Credit in nanoseconds, at most `BURST * INTERVAL_NS`; a line costs `INTERVAL_NS`.
    credit: u64,
    /// When the credit was last topped up (`None` before the first line: the bucket is full).
    last_ns: Option<u64>,
    /// Lines refused since the last one printed.
    suppressed: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimit {
    /// A full bucket.
    pub const fn new() -> Self {
        Self {
            credit: BURST * INTERVAL_NS,
            last_ns: None,
            suppressed: 0,
        }
    }

    /// Asks to print one line at time `now_ns`. `Some(n)`: print it, after saying that `n`
    /// lines (possibly 0) were suppressed before it. `None`: drop it (it is counted).
    pub fn check(&mut self, now_ns: u64) -> Option<u64> {
        let elapsed = self.last_ns.map_or(0, |l| now_ns.saturating_sub(l));
        // Time that goes backwards (another CPU's clock read earlier) simply adds nothing.
        self.last_ns = Some(self.last_ns.map_or(now_ns, |l| l.max(now_ns)));
        self.credit = self.credit.saturating_add(elapsed).min(BURST * INTERVAL_NS);
        if self.credit >= INTERVAL_NS {
            self.credit -= INTERVAL_NS;
            Some(core::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }

    /// Lines refused since the last one printed.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let mut r = RateLimit::new();
        let t = 5_000_000_000;
        for _ in 0..BURST {
            assert_eq!(r.check(t), Some(0));
        }
        assert_eq!(r.check(t), None);
        assert_eq!(r.check(t + INTERVAL_NS / 2), None);
        assert_eq!(r.suppressed(), 2);
        // One interval after the burst: one line, reporting the two dropped.
        assert_eq!(r.check(t + INTERVAL_NS), Some(2));
        assert_eq!(r.check(t + INTERVAL_NS), None);
        assert_eq!(r.check(t + 2 * INTERVAL_NS), Some(1));
    }

    #[test]
    fn ten_thousand_lines_in_a_second_print_about_twenty() {
        let mut r = RateLimit::new();
        let (mut printed, mut reported) = (0, 0);
        for i in 0..10_000u64 {
            if let Some(n) = r.check(i * 100_000) {
                printed += 1;
                reported += n;
            }
        }
        // 10 at once, then one per 100 ms over one second; every dropped line is accounted for.
        assert!((BURST..=BURST + 10).contains(&printed), "{printed}");
        assert_eq!(printed + reported + r.suppressed(), 10_000);
    }

    #[test]
    fn credit_is_capped_at_the_burst() {
        let mut r = RateLimit::new();
        assert_eq!(r.check(0), Some(0));
        // An hour of silence still buys only BURST lines.
        let t = 3_600_000_000_000;
        let printed = (0..100).filter(|_| r.check(t).is_some()).count() as u64;
        assert_eq!(printed, BURST);
    }

    #[test]
    fn time_going_backwards_or_wrapping_is_harmless() {
        let mut r = RateLimit::new();
        for _ in 0..BURST {
            r.check(u64::MAX);
        }
        assert_eq!(r.check(0), None);
        assert_eq!(r.check(u64::MAX), None);
        assert_eq!(r.suppressed(), 2);
    }
}
