//! Xen-style size strings: `512M`, `2G`, `4096K`, `1T`, `123B`.
//!
//! As in Xen's `parse_size_and_unit`, a number without a suffix counts kibibytes.

/// Parses a size with an optional `B`/`K`/`M`/`G`/`T` suffix (case-insensitive) into bytes.
/// Returns `None` on an empty, malformed or overflowing value.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    let value: u64 = num.parse().ok()?;
    // No allocation here: the command line is parsed before the heap exists.
    let shift = match suffix.as_bytes() {
        b"b" | b"B" => 0,
        b"" | b"k" | b"K" => 10,
        b"m" | b"M" => 20,
        b"g" | b"G" => 30,
        b"t" | b"T" => 40,
        _ => return None,
    };
    value.checked_mul(1u64 << shift)
}

/// Parses a decimal or `0x`-prefixed hexadecimal integer.
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("100B"), Some(100));
        assert_eq!(parse_size("4096"), Some(4096 << 10));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
        assert_eq!(parse_size("16777216T"), None);
    }

    #[test]
    fn hex_integers() {
        assert_eq!(parse_u64("0x3f8"), Some(0x3f8));
        assert_eq!(parse_u64("42"), Some(42));
        assert_eq!(parse_u64("0xzz"), None);
    }
}
