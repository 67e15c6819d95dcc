//! ELF64 images and their Xen notes: what the PV domain builder needs to load a kernel.
//!
//! Every offset and size comes from an untrusted file, so every access is bounds-checked and
//! every failure is a typed [`ElfError`] with one clear meaning. References: ELF-64 Object File
//! Format 1.5 (header, program headers, notes); Xen's `public/elfnote.h` and libelf's address
//! rules as summarised in `shared/xen-abi.md` 2.1 (`elf_xen_addr_calc_check`).

use xen_abi::elfnote;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const SHT_NOTE: u32 = 7;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// Why an image cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// No ELF magic.
    NotElf,
    /// Not a 64-bit, little-endian, x86_64 executable.
    WrongKind(&'static str),
    /// A header, table or note points outside the file.
    Truncated(&'static str),
    /// No loadable segment.
    NoLoadableSegments,
    /// No Xen ELF notes: not a PV kernel.
    NotPvKernel,
    /// A Xen note has a value the builder must refuse.
    BadNote(&'static str),
    /// The kernel requires a feature Xen's builders do not know.
    UnknownRequiredFeature,
    /// The addresses the notes imply are inconsistent.
    BadLayout(&'static str),
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ElfError::NotElf => write!(f, "not an ELF file"),
            ElfError::WrongKind(w) => write!(f, "not a 64-bit x86_64 executable ({w})"),
            ElfError::Truncated(w) => {
                write!(f, "truncated or corrupt image ({w} outside the file)")
            }
            ElfError::NoLoadableSegments => write!(f, "no loadable segment"),
            ElfError::NotPvKernel => write!(f, "no Xen ELF notes: not a Xen PV kernel"),
            ElfError::BadNote(w) => write!(f, "bad Xen note: {w}"),
            ElfError::UnknownRequiredFeature => {
                write!(f, "the kernel requires an unknown feature (FEATURES note)")
            }
            ElfError::BadLayout(w) => write!(f, "inconsistent layout: {w}"),
        }
    }
}

fn u16_at(b: &[u8], o: u64) -> Option<u16> {
    let o = usize::try_from(o).ok()?;
    Some(u16::from_le_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], o: u64) -> Option<u32> {
    let o = usize::try_from(o).ok()?;
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], o: u64) -> Option<u64> {
    let o = usize::try_from(o).ok()?;
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}
fn slice(b: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let s = usize::try_from(off).ok()?;
    let e = s.checked_add(usize::try_from(len).ok()?)?;
    b.get(s..e)
}

/// A loadable segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Physical (load) address as the file states it.
    pub paddr: u64,
    /// Offset of its bytes in the file.
    pub offset: u64,
    /// Bytes present in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zeroed).
    pub memsz: u64,
}

/// A parsed ELF64 image.
#[derive(Clone, Copy, Debug)]
pub struct Elf64<'a> {
    data: &'a [u8],
    /// `e_entry`.
    pub entry: u64,
    phoff: u64,
    phnum: u16,
    shoff: u64,
    shnum: u16,
}

impl<'a> Elf64<'a> {
    /// Checks the header and the program-header table bounds.
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.get(..4) != Some(b"\x7fELF") {
            return Err(ElfError::NotElf);
        }
        if data.get(4) != Some(&2) {
            return Err(ElfError::WrongKind("not ELFCLASS64"));
        }
        if data.get(5) != Some(&1) {
            return Err(ElfError::WrongKind("not little-endian"));
        }
        let t = ElfError::Truncated("ELF header");
        if u16_at(data, 18).ok_or(t)? != EM_X86_64 {
            return Err(ElfError::WrongKind("machine is not x86_64"));
        }
        if !matches!(u16_at(data, 16).ok_or(t)?, ET_EXEC | ET_DYN) {
            return Err(ElfError::WrongKind("not an executable"));
        }
        let elf = Elf64 {
            data,
            entry: u64_at(data, 24).ok_or(t)?,
            phoff: u64_at(data, 32).ok_or(t)?,
            phnum: u16_at(data, 56).ok_or(t)?,
            shoff: u64_at(data, 40).ok_or(t)?,
            shnum: u16_at(data, 60).ok_or(t)?,
        };
        if u16_at(data, 54).ok_or(t)? != 56 && elf.phnum != 0 {
            return Err(ElfError::Truncated("program header size"));
        }
        slice(data, elf.phoff, u64::from(elf.phnum) * 56)
            .ok_or(ElfError::Truncated("program headers"))?;
        Ok(elf)
    }

    /// The whole file.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    fn phdr(&self, i: u16) -> Option<(u32, u64, u64, u64, u64)> {
        let o = self.phoff + u64::from(i) * 56;
        Some((
            u32_at(self.data, o)?,
            u64_at(self.data, o + 8)?,
            u64_at(self.data, o + 24)?,
            u64_at(self.data, o + 32)?,
            u64_at(self.data, o + 40)?,
        ))
    }

    /// Loadable segments with a non-zero memory size, after checking their file bytes exist
    /// and `filesz <= memsz`.
    pub fn segments(&self) -> impl Iterator<Item = Result<Segment, ElfError>> + '_ {
        (0..self.phnum).filter_map(|i| {
            let (ty, offset, paddr, filesz, memsz) = self.phdr(i)?;
            if ty != PT_LOAD || memsz == 0 {
                return None;
            }
            if filesz > memsz
                || slice(self.data, offset, filesz).is_none()
                || paddr.checked_add(memsz).is_none()
            {
                return Some(Err(ElfError::Truncated("segment")));
            }
            Some(Ok(Segment {
                paddr,
                offset,
                filesz,
                memsz,
            }))
        })
    }

    /// The bytes of segment `s` present in the file.
    pub fn segment_bytes(&self, s: &Segment) -> &'a [u8] {
        slice(self.data, s.offset, s.filesz).unwrap_or(&[])
    }

    /// Note areas: `PT_NOTE` segments (skipping `p_offset == 0`), else `SHT_NOTE` sections.
    fn note_areas(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let from_phdrs = (0..self.phnum).filter_map(|i| {
            let (ty, off, _, filesz, _) = self.phdr(i)?;
            (ty == PT_NOTE && off != 0)
                .then(|| slice(self.data, off, filesz))
                .flatten()
        });
        let has_phdr_notes =
            (0..self.phnum).any(|i| self.phdr(i).is_some_and(|p| p.0 == PT_NOTE && p.1 != 0));
        let from_shdrs = (0..if has_phdr_notes { 0 } else { self.shnum }).filter_map(|i| {
            // `e_shoff` is not bounds-checked by `parse`: every field offset is checked here.
            let o = self.shoff.checked_add(u64::from(i) * 64)?;
            let field = |at: u64| o.checked_add(at);
            (u32_at(self.data, field(4)?)? == SHT_NOTE)
                .then(|| {
                    slice(
                        self.data,
                        u64_at(self.data, field(24)?)?,
                        u64_at(self.data, field(32)?)?,
                    )
                })
                .flatten()
        });
        from_phdrs.chain(from_shdrs)
    }

    /// Every note named "Xen": `(type, descriptor)`.
    pub fn xen_notes(&self) -> impl Iterator<Item = (u32, &'a [u8])> + '_ {
        self.note_areas()
            .flat_map(NoteIter::new)
            .filter(|n| n.0 == b"Xen")
            .map(|n| (n.1, n.2))
    }
}

/// `NT_GNU_BUILD_ID`: the note type of the linker's build id.
const NT_GNU_BUILD_ID: u32 = 3;

/// The build id a linker wrote (`--build-id`) into the note area `area` (a
/// `.note.gnu.build-id` section): the descriptor of its first "GNU" note of type
/// `NT_GNU_BUILD_ID`, if it has one and it is not empty.
pub fn gnu_build_id(area: &[u8]) -> Option<&[u8]> {
    NoteIter::new(area)
        .find(|n| n.0 == b"GNU" && n.1 == NT_GNU_BUILD_ID)
        .map(|n| n.2)
        .filter(|desc| !desc.is_empty())
}

/// Iterates over the notes of one area; stops at the first malformed note.
struct NoteIter<'a> {
    area: &'a [u8],
    pos: u64,
}

impl<'a> NoteIter<'a> {
    fn new(area: &'a [u8]) -> Self {
        Self { area, pos: 0 }
    }
}

impl<'a> Iterator for NoteIter<'a> {
    type Item = (&'a [u8], u32, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let (namesz, descsz, ty) = (
            u32_at(self.area, self.pos)?,
            u32_at(self.area, self.pos + 4)?,
            u32_at(self.area, self.pos + 8)?,
        );
        let name_off = self.pos + 12;
        let name = slice(self.area, name_off, u64::from(namesz))?;
        let desc_off = name_off + u64::from(namesz).next_multiple_of(4);
        let desc = slice(self.area, desc_off, u64::from(descsz))?;
        self.pos = desc_off + u64::from(descsz).next_multiple_of(4);
        // The name includes its NUL terminator.
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        Some((name, ty, desc))
    }
}

/// A numeric note of 1, 2, 4 or 8 bytes.
fn note_num(desc: &[u8]) -> Result<u64, ElfError> {
    match desc.len() {
        1 => Ok(u64::from(desc[0])),
        2 => Ok(u64::from(u16::from_le_bytes([desc[0], desc[1]]))),
        4 => Ok(u64::from(u32::from_le_bytes([
            desc[0], desc[1], desc[2], desc[3],
        ]))),
        8 => Ok(u64::from_le_bytes([
            desc[0], desc[1], desc[2], desc[3], desc[4], desc[5], desc[6], desc[7],
        ])),
        _ => Err(ElfError::BadNote(
            "numeric note of a size other than 1, 2, 4 or 8 bytes",
        )),
    }
}

fn note_str(desc: &[u8]) -> &[u8] {
    desc.split(|&c| c == 0).next().unwrap_or(&[])
}

/// Feature names Xen's builders know (`XENFEAT_*` order).
const KNOWN_FEATURES: [&[u8]; 7] = [
    b"writable_page_tables",
    b"writable_descriptor_tables",
    b"auto_translated_physmap",
    b"supervisor_mode_kernel",
    b"pae_pgdir_above_4gb",
    b"hvm_callback_vector",
    b"dom0",
];

/// What the builder needs from a PV kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvKernel {
    /// Entry point (virtual).
    pub entry: u64,
    /// `VIRT_BASE`: where PFN 0 of the initial mapping appears.
    pub virt_base: u64,
    /// `virt = paddr + virt_offset`.
    pub virt_offset: u64,
    /// First virtual byte of the image.
    pub virt_kstart: u64,
    /// One past the last virtual byte of the image.
    pub virt_kend: u64,
    /// Virtual address of the hypercall page, if the kernel wants one filled.
    pub hypercall_page: Option<u64>,
    /// `INIT_P2M` note, if present.
    pub init_p2m: Option<u64>,
    /// The kernel accepts an unmapped initrd passed as a PFN.
    pub mod_start_pfn: bool,
    /// `SUPPORTED_FEATURES` bitmap, if the note exists.
    pub supported_features: Option<u32>,
    /// GUEST_OS starts with "linux".
    pub is_linux: bool,
}

/// Reads the Xen notes of an ELF image and computes the PV load layout, rejecting what Xen's
/// builders reject.
pub fn pv_kernel(elf: &Elf64<'_>) -> Result<PvKernel, ElfError> {
    let mut k = PvKernel {
        entry: elf.entry,
        ..PvKernel::default()
    };
    let (mut seen, mut virt_base, mut paddr_offset) = (false, None, None);
    let (mut xen_version, mut loader, mut guest_os): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
    for (ty, desc) in elf.xen_notes() {
        seen = true;
        match ty {
            elfnote::ENTRY => k.entry = note_num(desc)?,
            elfnote::HYPERCALL_PAGE => k.hypercall_page = Some(note_num(desc)?),
            elfnote::VIRT_BASE => virt_base = Some(note_num(desc)?),
            elfnote::PADDR_OFFSET => paddr_offset = Some(note_num(desc)?),
            elfnote::XEN_VERSION => xen_version = note_str(desc),
            elfnote::GUEST_OS => guest_os = note_str(desc),
            elfnote::LOADER => loader = note_str(desc),
            elfnote::INIT_P2M => k.init_p2m = Some(note_num(desc)?),
            elfnote::MOD_START_PFN => k.mod_start_pfn = note_num(desc)? != 0,
            elfnote::SUPPORTED_FEATURES => {
                let w = desc
                    .get(..4)
                    .ok_or(ElfError::BadNote("SUPPORTED_FEATURES shorter than 4 bytes"))?;
                k.supported_features = Some(
                    k.supported_features.unwrap_or(0)
                        | u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
                );
            }
            elfnote::FEATURES => {
                for f in note_str(desc)
                    .split(|&c| c == b'|')
                    .filter(|f| !f.is_empty())
                {
                    if let Some(req) = f.strip_prefix(b"!")
                        && !KNOWN_FEATURES.contains(&req)
                    {
                        return Err(ElfError::UnknownRequiredFeature);
                    }
                }
            }
            _ => {}
        }
    }
    if !seen {
        return Err(ElfError::NotPvKernel);
    }
    if !xen_version.starts_with(b"xen-3.0") {
        return Err(ElfError::BadNote("XEN_VERSION must start with \"xen-3.0\""));
    }
    k.is_linux = guest_os.starts_with(b"linux");
    if !loader.starts_with(b"generic") && !k.is_linux {
        return Err(ElfError::BadNote(
            "LOADER must start with \"generic\" (or GUEST_OS with \"linux\")",
        ));
    }
    if paddr_offset.is_some() && virt_base.is_none() {
        return Err(ElfError::BadNote("PADDR_OFFSET without VIRT_BASE"));
    }
    k.virt_base = virt_base.unwrap_or(0);
    k.virt_offset = k.virt_base.wrapping_sub(paddr_offset.unwrap_or(0));

    let (mut pstart, mut pend) = (u64::MAX, 0u64);
    for s in elf.segments() {
        let s = s?;
        pstart = pstart.min(s.paddr);
        pend = pend.max(s.paddr + s.memsz);
    }
    if pend == 0 {
        return Err(ElfError::NoLoadableSegments);
    }
    k.virt_kstart = pstart.wrapping_add(k.virt_offset);
    k.virt_kend = pend.wrapping_add(k.virt_offset);
    if k.virt_kend <= k.virt_kstart {
        return Err(ElfError::BadLayout(
            "the image wraps around the address space",
        ));
    }
    if k.virt_base > k.virt_kstart {
        return Err(ElfError::BadLayout("VIRT_BASE lies above the kernel"));
    }
    if !(k.virt_kstart..k.virt_kend).contains(&k.entry) {
        return Err(ElfError::BadLayout("the entry point is outside the kernel"));
    }
    if let Some(h) = k.hypercall_page
        && (!(k.virt_kstart..k.virt_kend).contains(&h) || h % 4096 != 0)
    {
        return Err(ElfError::BadLayout(
            "the hypercall page is outside the kernel or unaligned",
        ));
    }
    if k.init_p2m
        .is_some_and(|p| (k.virt_kstart..k.virt_kend).contains(&p))
    {
        return Err(ElfError::BadLayout("INIT_P2M lies inside the kernel"));
    }
    Ok(k)
}

/// Builds test images: for the unit tests and the host fuzzer (`hypervisor/core/fuzz`, through
/// the `test-support` feature), which starts from well-formed kernels and mutates them.
#[cfg(any(test, feature = "test-support"))]
pub mod testing {
    use super::{EM_X86_64, ET_EXEC, PT_LOAD, PT_NOTE};
    use alloc::vec::Vec;

    /// Builds an ELF64 image with one PT_LOAD segment and one PT_NOTE segment of `notes`.
    pub fn image(
        paddr: u64,
        payload: &[u8],
        memsz: u64,
        entry: u64,
        notes: &[(u32, &[u8])],
    ) -> Vec<u8> {
        let mut note_bytes = Vec::new();
        for (ty, desc) in notes {
            note_bytes.extend_from_slice(&4u32.to_le_bytes());
            note_bytes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&ty.to_le_bytes());
            note_bytes.extend_from_slice(b"Xen\0");
            note_bytes.extend_from_slice(desc);
            while note_bytes.len() % 4 != 0 {
                note_bytes.push(0);
            }
        }
        let phoff = 64u64;
        let data_off = phoff + 2 * 56;
        let note_off = data_off + payload.len() as u64;
        let mut f = Vec::new();
        f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        f.extend_from_slice(&ET_EXEC.to_le_bytes());
        f.extend_from_slice(&EM_X86_64.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&entry.to_le_bytes());
        f.extend_from_slice(&phoff.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes()); // shoff
        f.extend_from_slice(&0u32.to_le_bytes()); // flags
        f.extend_from_slice(&64u16.to_le_bytes()); // ehsize
        f.extend_from_slice(&56u16.to_le_bytes()); // phentsize
        f.extend_from_slice(&2u16.to_le_bytes()); // phnum
        f.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
        for (ty, off, addr, sz, msz) in [
            (PT_LOAD, data_off, paddr, payload.len() as u64, memsz),
            (
                PT_NOTE,
                note_off,
                0,
                note_bytes.len() as u64,
                note_bytes.len() as u64,
            ),
        ] {
            f.extend_from_slice(&ty.to_le_bytes());
            f.extend_from_slice(&5u32.to_le_bytes());
            f.extend_from_slice(&off.to_le_bytes());
            f.extend_from_slice(&addr.to_le_bytes()); // vaddr
            f.extend_from_slice(&addr.to_le_bytes()); // paddr
            f.extend_from_slice(&sz.to_le_bytes());
            f.extend_from_slice(&msz.to_le_bytes());
            f.extend_from_slice(&4096u64.to_le_bytes());
        }
        f.extend_from_slice(payload);
        f.extend_from_slice(&note_bytes);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::testing::image;
    use super::*;
    use std::vec::Vec;

    /// One note in its ELF encoding: sizes, type, name and descriptor padded to 4 bytes.
    fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&ty.to_le_bytes());
        for part in [name, desc] {
            v.extend_from_slice(part);
            v.resize(v.len().next_multiple_of(4), 0);
        }
        v
    }

    #[test]
    fn gnu_build_id_is_found_after_other_notes() {
        let id: Vec<u8> = (1..=20).collect();
        let mut area = note(b"Xen\0", NT_GNU_BUILD_ID, b"not it");
        area.extend(note(b"GNU\0", 1, b"ABI tag"));
        area.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &id));
        assert_eq!(gnu_build_id(&area), Some(&id[..]));
    }

    #[test]
    fn gnu_build_id_absent_empty_or_truncated() {
        assert_eq!(gnu_build_id(&[]), None);
        assert_eq!(gnu_build_id(&note(b"GNU\0", NT_GNU_BUILD_ID, &[])), None);
        let whole = note(b"GNU\0", NT_GNU_BUILD_ID, &[7; 20]);
        assert_eq!(gnu_build_id(&whole[..whole.len() - 1]), None);
    }

    fn xtf_like(extra: &[(u32, &[u8])]) -> Vec<u8> {
        let hp = 0x10_1000u64.to_le_bytes();
        let mut notes: Vec<(u32, &[u8])> = std::vec![
            (elfnote::GUEST_OS, b"XTF\0"),
            (elfnote::LOADER, b"generic\0"),
            (elfnote::XEN_VERSION, b"xen-3.0\0"),
            (
                elfnote::FEATURES,
                b"!writable_page_tables|pae_pgdir_above_4gb\0"
            ),
        ];
        notes.extend_from_slice(extra);
        let mut n: Vec<(u32, Vec<u8>)> = notes.iter().map(|(t, d)| (*t, d.to_vec())).collect();
        n.push((elfnote::HYPERCALL_PAGE, hp.to_vec()));
        let refs: Vec<(u32, &[u8])> = n.iter().map(|(t, d)| (*t, d.as_slice())).collect();
        image(0x10_0000, &[0x90; 64], 0x3000, 0x10_0000, &refs)
    }

    #[test]
    fn xtf_style_kernel() {
        let f = xtf_like(&[]);
        let e = Elf64::parse(&f).unwrap();
        let k = pv_kernel(&e).unwrap();
        assert_eq!(k.entry, 0x10_0000);
        assert_eq!((k.virt_kstart, k.virt_kend), (0x10_0000, 0x10_3000));
        assert_eq!(k.hypercall_page, Some(0x10_1000));
        assert_eq!(k.virt_base, 0);
        let segs: Vec<_> = e.segments().collect::<Result<_, _>>().unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(e.segment_bytes(&segs[0]), &[0x90; 64]);
    }

    #[test]
    fn linux_style_virt_base_and_entry_note() {
        let vb = 0xffff_ffff_8000_0000u64.to_le_bytes();
        let entry = 0xffff_ffff_8100_0010u64.to_le_bytes();
        let notes: [(u32, &[u8]); 5] = [
            (elfnote::GUEST_OS, b"linux\0"),
            (elfnote::XEN_VERSION, b"xen-3.0\0"),
            (elfnote::VIRT_BASE, &vb),
            (elfnote::ENTRY, &entry),
            (elfnote::MOD_START_PFN, &[1]),
        ];
        let f = image(0x100_0000, &[0; 16], 0x20_0000, 0, &notes);
        let k = pv_kernel(&Elf64::parse(&f).unwrap()).unwrap();
        assert_eq!(k.virt_kstart, 0xffff_ffff_8100_0000);
        assert_eq!(k.entry, 0xffff_ffff_8100_0010);
        assert!(k.is_linux && k.mod_start_pfn);
    }

    #[test]
    fn rejects_non_pv_and_bad_notes() {
        let plain = image(0x10_0000, &[0; 8], 0x1000, 0x10_0000, &[]);
        assert_eq!(
            pv_kernel(&Elf64::parse(&plain).unwrap()),
            Err(ElfError::NotPvKernel)
        );
        let old = image(
            0x10_0000,
            &[0; 8],
            0x1000,
            0x10_0000,
            &[
                (elfnote::XEN_VERSION, b"xen-2.0\0"),
                (elfnote::LOADER, b"generic\0"),
            ],
        );
        assert!(matches!(
            pv_kernel(&Elf64::parse(&old).unwrap()),
            Err(ElfError::BadNote(_))
        ));
        assert_eq!(
            pv_kernel(&Elf64::parse(&xtf_like(&[(elfnote::FEATURES, b"!time_travel\0")])).unwrap()),
            Err(ElfError::UnknownRequiredFeature)
        );
        let bad_entry = 0x20_0000u64.to_le_bytes();
        assert!(matches!(
            pv_kernel(&Elf64::parse(&xtf_like(&[(elfnote::ENTRY, &bad_entry)])).unwrap()),
            Err(ElfError::BadLayout(_))
        ));
        assert!(matches!(
            pv_kernel(&Elf64::parse(&xtf_like(&[(elfnote::ENTRY, &[1, 2, 3])])).unwrap()),
            Err(ElfError::BadNote(_))
        ));
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(Elf64::parse(b"MZ\x90\0").unwrap_err(), ElfError::NotElf);
        let mut f = xtf_like(&[]);
        f[4] = 1;
        assert!(matches!(Elf64::parse(&f), Err(ElfError::WrongKind(_))));
        let f = xtf_like(&[]);
        assert!(matches!(
            Elf64::parse(&f[..100]),
            Err(ElfError::Truncated(_))
        ));
        let mut f = xtf_like(&[]);
        f[64 + 32..64 + 40].copy_from_slice(&u64::MAX.to_le_bytes()); // segment filesz
        let e = Elf64::parse(&f).unwrap();
        assert!(e.segments().any(|s| s.is_err()));
        assert!(pv_kernel(&e).is_err());
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let f = xtf_like(&[]);
        for n in 0..f.len() {
            if let Ok(e) = Elf64::parse(&f[..n]) {
                let _ = pv_kernel(&e);
                let _ = e.segments().count();
            }
        }
    }

    #[test]
    fn section_headers_at_the_end_of_the_address_space() {
        // Found by the host fuzzer: an `e_shoff` a few bytes below 2^64 made the offsets of
        // the section header's fields wrap: a panic with overflow checks; without them, the
        // ELF identification bytes read as the header, which can never be SHT_NOTE.
        let mut f = image(0x10_0000, &[0; 8], 0x1000, 0x10_0000, &[]);
        f[64 + 56..64 + 60].fill(0); // no PT_NOTE: the notes come from the section headers
        f[40..48].copy_from_slice(&(u64::MAX - 1).to_le_bytes()); // e_shoff
        f[60..62].copy_from_slice(&1u16.to_le_bytes()); // e_shnum
        let e = Elf64::parse(&f).unwrap();
        assert_eq!(e.xen_notes().count(), 0);
        assert_eq!(pv_kernel(&e), Err(ElfError::NotPvKernel));
    }
}
