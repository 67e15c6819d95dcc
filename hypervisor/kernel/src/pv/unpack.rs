//! Unpacking compressed dom0 kernels (Debian's `vmlinuz` is a bzImage with an XZ payload and
//! the x86 BCJ filter). The output and the XZ dictionary come from the frame allocator, not the
//! heap (a distribution kernel unpacks to tens of MiB), and are returned when the builder is done
//! with them. The decoder is `xz4rust` in its no-alloc mode.

use core::fmt;

use hestia_core::bzimage::{self, Compression, Payload};
use xz4rust::{XzDecoder, XzNextBlockResult};

use crate::mm;

/// Largest XZ dictionary Hestia provides (xz's own maximum preset uses 64 MiB).
const MAX_DICT: u64 = 64 << 20;

/// Frames holding unpacked bytes; freed on drop.
pub struct Unpacked {
    phys: u64,
    pages: u64,
    len: usize,
}

impl Unpacked {
    fn alloc(len: u64) -> Result<Self, UnpackError> {
        let pages = len.div_ceil(4096).max(1);
        let phys =
            mm::alloc_zeroed_frames(pages, 4096, u64::MAX).ok_or(UnpackError::OutOfMemory(len))?;
        Ok(Unpacked {
            phys,
            pages,
            len: len as usize,
        })
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the frames were allocated for this buffer alone, lie in the direct map, and
        // cover `len` bytes; the borrow of `self` keeps them alive.
        unsafe { core::slice::from_raw_parts_mut(mm::phys_to_virt(self.phys) as *mut u8, self.len) }
    }

    /// The unpacked bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`, read-only.
        unsafe { core::slice::from_raw_parts(mm::phys_to_virt(self.phys) as *const u8, self.len) }
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        mm::free_frames(self.phys, self.pages);
    }
}

/// Why a payload could not be unpacked.
#[derive(Debug)]
pub enum UnpackError {
    /// A compression Hestia does not decode (yet).
    Unsupported(&'static str),
    /// Not enough free memory for the output and dictionary.
    OutOfMemory(u64),
    /// The XZ stream is corrupt.
    Corrupt(xz4rust::XzError),
    /// The stream produced a different size than its trailer announced.
    WrongSize(usize, usize),
    /// The stream's block header declares no LZMA2 dictionary size.
    NoDictSize,
    /// The declared dictionary exceeds what Hestia provides.
    DictTooLarge(u64),
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported(c) => write!(
                f,
                "{c}-compressed kernels are not supported yet (XZ is; or pass the ELF vmlinux)"
            ),
            Self::OutOfMemory(n) => write!(f, "not enough memory to unpack {} MiB", n >> 20),
            Self::Corrupt(e) => write!(f, "corrupt XZ payload ({e:?})"),
            Self::WrongSize(got, want) => write!(
                f,
                "XZ payload unpacked to {got} bytes, its trailer says {want}"
            ),
            Self::NoDictSize => write!(
                f,
                "XZ payload without an LZMA2 dictionary size in its first block"
            ),
            Self::DictTooLarge(n) => write!(
                f,
                "XZ payload wants a {} MiB dictionary (at most {} MiB)",
                n >> 20,
                MAX_DICT >> 20
            ),
        }
    }
}

/// Unpacks a compressed bzImage payload.
pub fn unpack(p: &Payload<'_>) -> Result<Unpacked, UnpackError> {
    match p.compression {
        Compression::Xz => unpack_xz(p.data, u64::from(p.uncompressed_len)),
        Compression::Gzip => Err(UnpackError::Unsupported("gzip")),
        Compression::Zstd => Err(UnpackError::Unsupported("zstd")),
        Compression::Other(c) => Err(UnpackError::Unsupported(c)),
        Compression::None => Err(UnpackError::Unsupported("no")),
    }
}

fn unpack_xz(input: &[u8], out_len: u64) -> Result<Unpacked, UnpackError> {
    let mut out = Unpacked::alloc(out_len)?;
    // A fixed-dictionary decoder needs the size the stream declares (Linux uses up to 32 MiB).
    let declared = bzimage::xz_dict_size(input).ok_or(UnpackError::NoDictSize)?;
    if declared > MAX_DICT {
        return Err(UnpackError::DictTooLarge(declared));
    }
    let mut dict = Unpacked::alloc(declared.max(xz4rust::DICT_SIZE_MIN as u64))?;
    let mut decoder = alloc::boxed::Box::new(XzDecoder::with_fixed_size_dict(dict.bytes_mut()));
    let (mut pos, mut produced) = (0usize, 0usize);
    let output = out.bytes_mut();
    loop {
        let r = decoder
            .decode(&input[pos..], &mut output[produced..])
            .map_err(UnpackError::Corrupt)?;
        pos += r.input_consumed();
        produced += r.output_produced();
        if let XzNextBlockResult::EndOfStream(..) = r {
            break;
        }
        if r.input_consumed() == 0 && r.output_produced() == 0 {
            return Err(UnpackError::WrongSize(produced, out_len as usize));
        }
    }
    drop(decoder);
    drop(dict);
    if produced != out_len as usize {
        return Err(UnpackError::WrongSize(produced, out_len as usize));
    }
    Ok(out)
}
