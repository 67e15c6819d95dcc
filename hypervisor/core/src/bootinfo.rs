//! Sanitising the multiboot2 boot information: the decisions the kernel's `bootinfo` makes on
//! the values the `multiboot2` crate reads out of the bootloader's tags (Multiboot2
//! specification 2.0, section 3.6; UEFI 2.10 section 7.2 for EFI memory types).
//!
//! The kernel walks the tags (that needs the structure's memory); everything decided about
//! what it finds is here, so it is unit-tested and fuzzed on the host: memory areas become
//! [`Region`]s (at most [`MAX_RAW_REGIONS`], then `memmap` sanitises them), modules are kept in
//! order up to [`MAX_MODULES`] (inverted ones and the excess are counted, never kept), the
//! symbol table is found among GRUB's ELF section headers, and the ACPI root prefers a valid
//! RSDP v2 with an XSDT. Every range kept is well-formed: `start <= end`, no wrap-around.

use crate::memmap::{MemoryMap, Region, RegionKind, range_from_base_len};

/// Most modules Hestia records.
pub const MAX_MODULES: usize = 16;
/// Most raw memory areas read (GRUB passes a few dozen).
pub const MAX_RAW_REGIONS: usize = 128;
/// Most ELF section headers searched for the symbol table.
pub const MAX_SECTIONS: usize = 64;

/// The region kind of a multiboot2 (e820) memory area type.
pub fn e820_kind(typ: u32) -> RegionKind {
    match typ {
        1 => RegionKind::Usable,
        3 => RegionKind::AcpiReclaimable,
        4 => RegionKind::AcpiNvs,
        5 => RegionKind::Bad,
        _ => RegionKind::Reserved,
    }
}

/// The region kind of an EFI memory descriptor type: loader and boot-services code and data
/// and conventional memory are free once the firmware's boot services are gone.
pub fn efi_kind(typ: u32) -> RegionKind {
    match typ {
        1..=4 | 7 => RegionKind::Usable,
        8 => RegionKind::Bad,
        9 => RegionKind::AcpiReclaimable,
        10 => RegionKind::AcpiNvs,
        _ => RegionKind::Reserved,
    }
}

/// Raw memory areas as the bootloader lists them, before `memmap` sanitises them.
pub struct RawMap {
    raw: [Region; MAX_RAW_REGIONS],
    n: usize,
}

impl Default for RawMap {
    fn default() -> Self {
        Self {
            raw: [Region {
                start: 0,
                end: 0,
                kind: RegionKind::Reserved,
            }; MAX_RAW_REGIONS],
            n: 0,
        }
    }
}

impl RawMap {
    /// Records `len` bytes at `base` (empty areas and those beyond [`MAX_RAW_REGIONS`] are
    /// ignored; an area running past 2^64 is clamped).
    pub fn push(&mut self, base: u64, len: u64, kind: RegionKind) {
        if let (Some((start, end)), Some(slot)) =
            (range_from_base_len(base, len), self.raw.get_mut(self.n))
        {
            *slot = Region { start, end, kind };
            self.n += 1;
        }
    }

    /// The sanitised memory map.
    pub fn sanitize(&self) -> MemoryMap {
        MemoryMap::sanitize(self.raw.get(..self.n).unwrap_or_default())
    }
}

/// A boot module (dom0 kernel, initrd, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Module<'a> {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The module's string (its command line).
    pub cmdline: &'a str,
}

/// The modules in the bootloader's order.
#[derive(Default)]
pub struct Modules<'a> {
    modules: [Module<'a>; MAX_MODULES],
    n: usize,
    /// Modules not kept: inverted (`end < start`) or beyond [`MAX_MODULES`].
    pub dropped: usize,
}

impl<'a> Modules<'a> {
    /// Records a module tag.
    pub fn push(&mut self, start: u64, end: u64, cmdline: &'a str) {
        match self.modules.get_mut(self.n) {
            Some(slot) if start <= end => {
                *slot = Module {
                    start,
                    end,
                    cmdline,
                };
                self.n += 1;
            }
            _ => self.dropped += 1,
        }
    }

    /// The modules kept, in order.
    pub fn as_slice(&self) -> &[Module<'a>] {
        self.modules.get(..self.n).unwrap_or_default()
    }
}

/// One ELF section header as GRUB passes it (the fields the search needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// `sh_type`.
    pub ty: u32,
    /// `sh_addr`: where GRUB loaded it.
    pub addr: u64,
    /// `sh_size`.
    pub size: u64,
    /// `sh_link`: for the symbol table, the index of its string table.
    pub link: u32,
}

/// Physical ranges of Hestia's own `.symtab` and `.strtab`, loaded by GRUB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolSections {
    /// `[start, end)` of the symbol table.
    pub symtab: (u64, u64),
    /// `[start, end)` of the string table.
    pub strtab: (u64, u64),
}

/// Finds the first `SHT_SYMTAB` among the first [`MAX_SECTIONS`] headers and its linked string
/// table; both must be loaded (non-zero address) where `mapped(addr, size)` says they can be
/// read.
pub fn find_symbols(
    sections: impl Iterator<Item = Section>,
    mapped: impl Fn(u64, u64) -> bool,
) -> Option<SymbolSections> {
    const SHT_SYMTAB: u32 = 2;
    let mut headers = [Section {
        ty: 0,
        addr: 0,
        size: 0,
        link: 0,
    }; MAX_SECTIONS];
    let mut n = 0;
    for (slot, s) in headers.iter_mut().zip(sections) {
        *slot = s;
        n += 1;
    }
    let headers = headers.get(..n)?;
    let sym = headers.iter().find(|h| h.ty == SHT_SYMTAB)?;
    let str = headers.get(usize::try_from(sym.link).ok()?)?;
    let range = |s: &Section| {
        let end = s.addr.checked_add(s.size)?;
        (s.addr != 0 && mapped(s.addr, s.size)).then_some((s.addr, end))
    };
    Some(SymbolSections {
        symtab: range(sym)?,
        strtab: range(str)?,
    })
}

/// Where the ACPI root table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiRoot {
    /// RSDP revision: 0 means an RSDT with 32-bit entries, 2+ an XSDT.
    pub revision: u8,
    /// Physical address of the RSDT or XSDT.
    pub sdt_addr: u64,
}

/// An RSDP as the bootloader copied it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    /// Its checksum (the extended one too, for v2) is valid.
    pub valid: bool,
    /// Its revision field.
    pub revision: u8,
    /// The XSDT (v2) or RSDT (v1) address.
    pub sdt_addr: u64,
}

/// The ACPI root: a valid v2 RSDP's XSDT if it has one, else a valid v1 RSDP's RSDT.
pub fn acpi_root(v2: Option<Rsdp>, v1: Option<Rsdp>) -> Option<AcpiRoot> {
    match (v2, v1) {
        (Some(v2), _) if v2.valid && v2.sdt_addr != 0 => Some(AcpiRoot {
            revision: v2.revision.max(2),
            sdt_addr: v2.sdt_addr,
        }),
        (_, Some(v1)) if v1.valid => Some(AcpiRoot {
            revision: 0,
            sdt_addr: v1.sdt_addr,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_types() {
        assert_eq!(e820_kind(1), RegionKind::Usable);
        assert_eq!(e820_kind(2), RegionKind::Reserved);
        assert_eq!(e820_kind(5), RegionKind::Bad);
        assert_eq!(efi_kind(7), RegionKind::Usable);
        assert_eq!(efi_kind(0), RegionKind::Reserved);
        assert_eq!(efi_kind(10), RegionKind::AcpiNvs);
        let mut raw = RawMap::default();
        raw.push(0, 0x9_f000, RegionKind::Usable);
        raw.push(0x10_0000, 0, RegionKind::Usable); // empty: ignored
        raw.push(u64::MAX - 10, 100, RegionKind::Reserved); // clamped
        for _ in 0..MAX_RAW_REGIONS {
            raw.push(0x20_0000, 0x1000, RegionKind::Usable);
        }
        assert_eq!(raw.n, MAX_RAW_REGIONS, "capacity, then ignored");
        assert_eq!(raw.sanitize().regions()[0].end, 0x9_f000);
    }

    #[test]
    fn modules_keep_order_and_count_the_rest() {
        let mut m = Modules::default();
        m.push(0x10_0000, 0x20_0000, "vmlinuz");
        m.push(5, 4, "inverted");
        for _ in 0..MAX_MODULES {
            m.push(0, 0, "");
        }
        assert_eq!(m.as_slice().len(), MAX_MODULES);
        assert_eq!(m.as_slice()[0].cmdline, "vmlinuz");
        assert_eq!(m.dropped, 2);
    }

    #[test]
    fn symbols_and_acpi() {
        let s = |ty, addr, size, link| Section {
            ty,
            addr,
            size,
            link,
        };
        let all = |_, _| true;
        let headers = [s(0, 0, 0, 0), s(2, 0x1000, 0x100, 2), s(3, 0x2000, 0x80, 0)];
        assert_eq!(
            find_symbols(headers.into_iter(), all),
            Some(SymbolSections {
                symtab: (0x1000, 0x1100),
                strtab: (0x2000, 0x2080)
            })
        );
        assert_eq!(find_symbols(headers.into_iter(), |a, _| a < 0x2000), None);
        let bad_link = [s(2, 0x1000, 0x100, 9)];
        assert_eq!(find_symbols(bad_link.into_iter(), all), None);
        let wraps = [s(2, 0x1000, 0x100, 1), s(3, u64::MAX, 2, 0)];
        assert_eq!(find_symbols(wraps.into_iter(), all), None);

        let r = |valid, revision, sdt_addr| Rsdp {
            valid,
            revision,
            sdt_addr,
        };
        let xsdt = AcpiRoot {
            revision: 2,
            sdt_addr: 0xe000,
        };
        let rsdt = AcpiRoot {
            revision: 0,
            sdt_addr: 0xf000,
        };
        assert_eq!(acpi_root(Some(r(true, 0, 0xe000)), None), Some(xsdt));
        assert_eq!(
            acpi_root(Some(r(true, 2, 0)), Some(r(true, 0, 0xf000))),
            Some(rsdt)
        );
        assert_eq!(
            acpi_root(Some(r(false, 2, 0xe000)), Some(r(true, 0, 0xf000))),
            Some(rsdt)
        );
        assert_eq!(acpi_root(None, Some(r(false, 0, 0xf000))), None);
    }
}
