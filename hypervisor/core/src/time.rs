//! Time for PV guests: the pvclock scale (`vcpu_time_info.tsc_to_system_mul`/`tsc_shift`) and
//! the wallclock from a calendar date.
//!
//! A guest computes `ns = system_time + (((tsc - tsc_timestamp) << shift or >> -shift) * mul) >> 32`
//! (`shared/xen-abi.md` 3.3); [`TimeScale::for_hz`] picks `shift` so that `mul` is a 32.32
//! fraction in `[2^31, 2^32)`, the most precise choice.

/// A pvclock scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeScale {
    /// 32.32 fixed-point multiplier.
    pub mul: u32,
    /// Shift applied to the TSC delta first (left if positive).
    pub shift: i8,
}

impl TimeScale {
    /// The scale converting ticks of a `hz` counter to nanoseconds. `hz` must be non-zero.
    pub fn for_hz(hz: u64) -> Self {
        let mut shift: i8 = 0;
        let mut ticks = u128::from(hz.max(1));
        // Scale the tick rate into (1e9/2, 1e9] so the fraction 1e9/ticks lies in [1, 2) ...
        while ticks > 1_000_000_000 {
            ticks >>= 1;
            shift -= 1;
        }
        while ticks <= 500_000_000 {
            ticks <<= 1;
            shift += 1;
        }
        // ... then halve it into [0.5, 1) by one more shift, and express it in 32.32.
        shift += 1;
        let mul = ((1_000_000_000u128 << 32) / (ticks << 1)) as u32;
        TimeScale { mul, shift }
    }

    /// Converts a tick delta to nanoseconds exactly as a guest does.
    pub fn ticks_to_ns(&self, delta: u64) -> u64 {
        let d = if self.shift >= 0 {
            u128::from(delta) << self.shift
        } else {
            u128::from(delta) >> (-self.shift)
        };
        ((d * u128::from(self.mul)) >> 32) as u64
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the Unix epoch for a UTC date and time; `None` for an impossible date.
pub fn unix_time(year: i64, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + min * 60 + sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_accurate_for_common_rates() {
        for hz in [
            1_000_000u64,
            100_000_000,
            1_193_182,
            2_594_916_000,
            3_000_000_000,
            4_999_999_999,
            1_000_000_000,
        ] {
            let s = TimeScale::for_hz(hz);
            assert!(
                s.mul >= 1 << 31,
                "mul {:#x} keeps full precision for {hz} Hz",
                s.mul
            );
            let ns = s.ticks_to_ns(hz); // one second of ticks
            assert!(
                ns.abs_diff(1_000_000_000) <= 2,
                "{hz} Hz: one second reads as {ns} ns"
            );
            let ns = s.ticks_to_ns(hz * 3600);
            assert!(
                ns.abs_diff(3_600_000_000_000) < 3_600_000,
                "{hz} Hz: an hour reads as {ns} ns"
            );
        }
    }

    #[test]
    fn calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(unix_time(2000, 3, 1, 0, 0, 0), Some(951_868_800));
        assert_eq!(unix_time(2026, 11, 21, 20, 54, 0), Some(1_795_294_440));
        assert_eq!(unix_time(2026, 13, 1, 0, 0, 0), None);
    }
}
