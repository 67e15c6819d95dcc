//! Finding the `\_S5` sleep type values in AML, for ACPI soft-off.
//!
//! ACPI 6.5 section 7.4.2: the `\_S5` object is a package whose first two integers are the
//! `SLP_TYPa` and `SLP_TYPb` values to write into PM1a/PM1b control (bits 10-12) together with
//! `SLP_EN`. Firmware nearly always declares it as a plain named package in the DSDT:
//! `NameOp ['\'] "_S5_" PackageOp PkgLength NumElements <integer> <integer> ...`.
//! The `acpi` crate's AML interpreter needs nightly Rust, so Hestia decodes exactly this form and
//! nothing else; a method-computed `_S5` yields `None` and the caller falls back.
//! Integer encodings (section 20.2.3): `ZeroOp` 0x00, `OneOp` 0x01, `OnesOp` 0xFF,
//! `BytePrefix` 0x0A, `WordPrefix` 0x0B, `DWordPrefix` 0x0C, `QWordPrefix` 0x0E.

const NAME_OP: u8 = 0x08;
const ROOT_CHAR: u8 = b'\\';
const PACKAGE_OP: u8 = 0x12;

/// The two sleep-type values of `\_S5`, already masked to their 3-bit field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SleepTypes {
    /// For PM1a control.
    pub a: u16,
    /// For PM1b control.
    pub b: u16,
}

/// Scans AML bytecode (a DSDT or SSDT body) for a `\_S5` package and decodes its first two values.
pub fn find_s5(aml: &[u8]) -> Option<SleepTypes> {
    let mut from = 0;
    while let Some(pos) = aml.get(from..)?.windows(4).position(|w| w == b"_S5_") {
        let at = from + pos;
        from = at + 1;
        let named = match at {
            0 => false,
            1 => aml[0] == NAME_OP,
            _ => aml[at - 1] == NAME_OP || (aml[at - 1] == ROOT_CHAR && aml[at - 2] == NAME_OP),
        };
        if !named {
            continue;
        }
        if let Some(t) = decode_package(aml.get(at + 4..)?) {
            return Some(t);
        }
    }
    None
}

fn decode_package(b: &[u8]) -> Option<SleepTypes> {
    if *b.first()? != PACKAGE_OP {
        return None;
    }
    let lead = *b.get(1)?;
    let pkglen_bytes = 1 + usize::from(lead >> 6);
    let mut i = 1 + pkglen_bytes;
    let num_elements = *b.get(i)?;
    if num_elements < 2 {
        return None;
    }
    i += 1;
    let (a, used) = decode_integer(b.get(i..)?)?;
    let (bv, _) = decode_integer(b.get(i + used..)?)?;
    Some(SleepTypes {
        a: (a & 7) as u16,
        b: (bv & 7) as u16,
    })
}

fn decode_integer(b: &[u8]) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<u64> {
        let bytes = b.get(1..1 + n)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, x| (acc << 8) | u64::from(*x)),
        )
    };
    Some(match *b.first()? {
        0x00 => (0, 1),
        0x01 => (1, 1),
        0xFF => (u64::MAX, 1),
        0x0A => (le(1)?, 2),
        0x0B => (le(2)?, 3),
        0x0C => (le(4)?, 5),
        0x0E => (le(8)?, 9),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_package_with_byte_values() {
        // Name (_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })
        let aml = [
            0x10, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00,
            0x00,
        ];
        assert_eq!(find_s5(&aml), Some(SleepTypes { a: 5, b: 5 }));
    }

    #[test]
    fn root_prefixed_with_zero_op() {
        // Name (\_S5, Package (0x04) { Zero, Zero, Zero, Zero }) as QEMU's DSDT has it.
        let aml = [
            0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(find_s5(&aml), Some(SleepTypes { a: 0, b: 0 }));
    }

    #[test]
    fn multi_byte_pkglength_and_word_values() {
        let aml = [
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x40, 0x00, 0x02, 0x0B, 0x07, 0x00, 0x01,
        ];
        assert_eq!(find_s5(&aml), Some(SleepTypes { a: 7, b: 1 }));
    }

    #[test]
    fn references_and_truncation_are_rejected() {
        // "_S5_" used as a name reference (no NameOp), then a truncated declaration.
        let aml = [
            0x70, b'_', b'S', b'5', b'_', 0x60, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x06,
        ];
        assert_eq!(find_s5(&aml), None);
        assert_eq!(find_s5(&[]), None);
        assert_eq!(find_s5(b"_S5_"), None);
    }

    #[test]
    fn method_form_is_not_decoded() {
        // Method (_S5, ...) : MethodOp 0x14 is not a NameOp.
        let aml = [0x14, 0x08, b'_', b'S', b'5', b'_', 0x00, 0xA4, 0x00];
        assert_eq!(find_s5(&aml), None);
    }
}
