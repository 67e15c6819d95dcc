//! The bzImage header (`hestia_core::bzimage`): a hostile dom0 kernel file. The payload lies
//! inside the file where the header says, and its trailer is what the parser reports. Inputs
//! are raw files, or (first byte odd) a header built from the input's fields around a payload.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hestia_core::bzimage::{Compression, is_bzimage, payload, xz_dict_size};
use hestia_core_fuzz::{assert_within, raw_or_built};
use libfuzzer_sys::fuzz_target;

/// The header fields `payload` reads, and the bytes after the setup sectors.
#[derive(Arbitrary, Debug)]
struct Header {
    setup_sects: u8,
    version: u16,
    payload_offset: u16,
    /// `None`: the length of what follows the offset.
    payload_length: Option<u32>,
    /// Prefixed with one of the magic numbers `payload` knows, by index.
    magic: u8,
    body: Vec<u8>,
}

const MAGICS: [&[u8]; 9] = [
    b"\x7fELF",
    b"\x1f\x8b",
    b"\xfd7zXZ\0",
    b"\x28\xb5\x2f\xfd",
    b"\x5d\0\0",
    b"BZh",
    b"\x89LZO",
    b"\x02\x21\x4c\x18",
    b"",
];

fn build(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let h = Header::arbitrary(u)?;
    let sects = match h.setup_sects % 16 {
        0 => 4,
        n => usize::from(n),
    };
    let start = (sects + 1) * 512 + usize::from(h.payload_offset % 4096);
    let mut f = vec![0; start.max(0x250)];
    f[0x1F1] = h.setup_sects % 16;
    f[0x202..0x206].copy_from_slice(b"HdrS");
    f[0x206..0x208].copy_from_slice(&h.version.to_le_bytes());
    f[0x248..0x24A].copy_from_slice(&(h.payload_offset % 4096).to_le_bytes());
    f.resize(start, 0);
    f.extend_from_slice(MAGICS[usize::from(h.magic) % MAGICS.len()]);
    f.extend_from_slice(&h.body);
    let len = h.payload_length.unwrap_or((f.len() - start) as u32);
    f[0x24C..0x250].copy_from_slice(&len.to_le_bytes());
    Ok(f)
}

fuzz_target!(|input: &[u8]| {
    let mut built = Vec::new();
    let Some(data) = raw_or_built(input, &mut built, build) else {
        return;
    };
    let _ = xz_dict_size(data);
    if !is_bzimage(data) {
        return;
    }
    let Ok(p) = payload(data) else { return };
    assert_within(data, p.data);
    let setup_sects = match data[0x1F1] {
        0 => 4,
        n => usize::from(n),
    };
    let offset = u32::from_le_bytes(data[0x248..0x24C].try_into().expect("4 bytes")) as usize;
    let start = (setup_sects + 1) * 512 + offset;
    assert_eq!(Some(p.data), data.get(start..start + p.data.len()));
    if p.compression == Compression::None {
        assert_eq!(p.uncompressed_len, 0);
    } else {
        let trailer = &p.data[p.data.len() - 4..];
        assert_eq!(p.uncompressed_len.to_le_bytes(), trailer);
    }
    if p.compression == Compression::Xz {
        let _ = xz_dict_size(p.data);
    }
});
