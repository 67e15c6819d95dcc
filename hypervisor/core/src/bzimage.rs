//! The bzImage wrapper around a Linux kernel (Documentation/arch/x86/boot.rst, "The Real-Mode
//! Kernel Header"): if `HdrS` is at 0x202 with protocol 2.08 or newer, the protected-mode
//! kernel's payload sits at `(setup_sects + 1) * 512 + payload_offset` for `payload_length`
//! bytes, compressed (or a plain ELF); Linux appends the uncompressed size as the payload's
//! last four bytes (little endian).

/// How a payload is compressed (by its magic bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed: the payload is the ELF itself.
    None,
    /// gzip (1F 8B).
    Gzip,
    /// XZ (FD 37 7A 58 5A 00), Debian's choice, with the x86 BCJ filter.
    Xz,
    /// zstd (28 B5 2F FD).
    Zstd,
    /// LZMA, bzip2, LZO or LZ4: recognised, not supported.
    Other(&'static str),
}

/// A bzImage's compressed kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The payload bytes (including the trailing size for compressed ones).
    pub data: &'a [u8],
    /// Its compression.
    pub compression: Compression,
    /// Uncompressed size from the trailer (0 when not compressed).
    pub uncompressed_len: u32,
}

/// Why a bzImage is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BzError {
    /// Boot protocol older than 2.08 (no payload fields).
    TooOld(u16),
    /// The header points outside the file.
    Truncated,
}

/// True if `data` starts like a bzImage (the `HdrS` signature at 0x202).
pub fn is_bzimage(data: &[u8]) -> bool {
    data.get(0x202..0x206) == Some(b"HdrS")
}

fn u16_at(d: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?))
}

/// Finds the payload of a bzImage (call only when [`is_bzimage`]).
pub fn payload(data: &[u8]) -> Result<Payload<'_>, BzError> {
    let version = u16_at(data, 0x206).ok_or(BzError::Truncated)?;
    if version < 0x0208 {
        return Err(BzError::TooOld(version));
    }
    let setup_sects = match *data.get(0x1F1).ok_or(BzError::Truncated)? {
        0 => 4,
        n => usize::from(n),
    };
    let offset = u32_at(data, 0x248).ok_or(BzError::Truncated)? as usize;
    let len = u32_at(data, 0x24C).ok_or(BzError::Truncated)? as usize;
    let start = (setup_sects + 1)
        .checked_mul(512)
        .and_then(|s| s.checked_add(offset))
        .ok_or(BzError::Truncated)?;
    let p = data
        .get(start..start.checked_add(len).ok_or(BzError::Truncated)?)
        .ok_or(BzError::Truncated)?;
    let compression = match p {
        [0x7F, b'E', b'L', b'F', ..] => Compression::None,
        [0x1F, 0x8B, ..] => Compression::Gzip,
        [0xFD, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Xz,
        [0x28, 0xB5, 0x2F, 0xFD, ..] => Compression::Zstd,
        [0x5D, 0, 0, ..] => Compression::Other("LZMA"),
        [b'B', b'Z', b'h', ..] => Compression::Other("bzip2"),
        [0x89, b'L', b'Z', b'O', ..] => Compression::Other("LZO"),
        [0x02, 0x21, 0x4C, 0x18, ..] => Compression::Other("LZ4"),
        _ => Compression::Other("unknown"),
    };
    let uncompressed_len = match compression {
        Compression::None => 0,
        _ => p
            .len()
            .checked_sub(4)
            .and_then(|o| u32_at(p, o))
            .ok_or(BzError::Truncated)?,
    };
    Ok(Payload {
        data: p,
        compression,
        uncompressed_len,
    })
}

/// Reads a multibyte integer of the XZ format (7 bits a byte, low first, at most 9 bytes).
fn vli(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The LZMA2 dictionary size an XZ stream declares in its first block header (The .xz File
/// Format 1.1.0, sections 2.1 and 3.1; LZMA2 properties: `(2 | bit0) << (bits / 2 + 11)`).
/// A decoder working with a fixed dictionary needs at least this much.
pub fn xz_dict_size(stream: &[u8]) -> Option<u64> {
    const STREAM_HEADER: usize = 12;
    const LZMA2: u64 = 0x21;
    let header_len = (usize::from(*stream.get(STREAM_HEADER)?) + 1) * 4;
    let header = stream.get(STREAM_HEADER..STREAM_HEADER + header_len)?;
    let flags = *header.get(1)?;
    let mut pos = 2;
    if flags & 0x40 != 0 {
        vli(header, &mut pos)?;
    }
    if flags & 0x80 != 0 {
        vli(header, &mut pos)?;
    }
    for _ in 0..=(flags & 3) {
        let id = vli(header, &mut pos)?;
        let props_len = vli(header, &mut pos)? as usize;
        let props = header.get(pos..pos.checked_add(props_len)?)?;
        pos += props_len;
        if id == LZMA2 {
            let bits = u32::from(*props.first()? & 0x3F);
            return match bits {
                40 => Some(u64::from(u32::MAX)),
                0..=39 => Some((2 | u64::from(bits & 1)) << (bits / 2 + 11)),
                _ => None,
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// A minimal bzImage: `setup_sects` setup sectors, then `payload`.
    pub(crate) fn build(setup_sects: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = std::vec![0u8; (usize::from(setup_sects.max(4)) + 1) * 512];
        f[0x1F1] = setup_sects;
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
        f[0x248..0x24C].copy_from_slice(&0u32.to_le_bytes());
        f[0x24C..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn finds_an_xz_payload_and_its_size() {
        let mut p = std::vec![0xFD, b'7', b'z', b'X', b'Z', 0, 1, 2, 3];
        p.extend_from_slice(&66_000_000u32.to_le_bytes());
        let f = build(27, &p);
        assert!(is_bzimage(&f));
        let pl = payload(&f).unwrap();
        assert_eq!(pl.compression, Compression::Xz);
        assert_eq!(pl.uncompressed_len, 66_000_000);
        assert_eq!(pl.data, &p[..]);
    }

    #[test]
    fn zero_setup_sects_means_four_and_elf_payloads_pass_through() {
        let f = build(0, b"\x7fELF rest");
        let pl = payload(&f).unwrap();
        assert_eq!(pl.compression, Compression::None);
        assert_eq!(&f[5 * 512..], pl.data);
    }

    #[test]
    fn xz_dictionary_size_from_the_block_header() {
        // Stream header, then a block header: size byte 2 (12 bytes), flags 0x01 (two filters),
        // x86 BCJ (id 4, no properties), LZMA2 (id 0x21, 1 property byte 0x14 = 8 MiB... see below).
        let mut s = std::vec![0xFD, b'7', b'z', b'X', b'Z', 0, 0, 1, 0, 0, 0, 0];
        s.extend_from_slice(&[2, 0x01, 0x04, 0x00, 0x21, 0x01, 0x16, 0, 0, 0, 0, 0]);
        // bits 0x16 = 22: (2 | 0) << (11 + 11) = 8 MiB.
        assert_eq!(xz_dict_size(&s), Some(8 << 20));
        s[18] = 0x17; // bits 23: 3 << 22 = 12 MiB
        assert_eq!(xz_dict_size(&s), Some(12 << 20));
        s[18] = 0x28;
        assert_eq!(xz_dict_size(&s), Some(u64::from(u32::MAX)));
        s[18] = 0x29;
        assert_eq!(xz_dict_size(&s), None, "reserved value");
        assert_eq!(xz_dict_size(&s[..14]), None);
        assert_eq!(xz_dict_size(&[]), None);
    }

    #[test]
    fn hostile_headers() {
        let mut f = build(4, b"\x1f\x8b12345678");
        f[0x24C..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(payload(&f), Err(BzError::Truncated));
        let mut f = build(4, b"xx");
        f[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
        assert_eq!(payload(&f), Err(BzError::TooOld(0x206)));
        let f = build(4, b"\x1f\x8b");
        assert_eq!(
            payload(&f),
            Err(BzError::Truncated),
            "compressed payload without a size trailer"
        );
        assert!(!is_bzimage(b"MZ"));
        let f = build(4, b"BZh91AY&SY....");
        assert_eq!(
            payload(&f).unwrap().compression,
            Compression::Other("bzip2")
        );
    }
}
