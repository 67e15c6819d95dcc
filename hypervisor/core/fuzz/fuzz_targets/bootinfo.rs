//! Sanitising the multiboot2 boot information (`hestia_core::bootinfo`): any memory areas,
//! module tags, ELF section headers and RSDPs a bootloader could pass. The memory map comes out
//! sorted, disjoint and well-formed, and free RAM in it never overlaps an area the firmware
//! reserved; modules keep their order and every tag is either kept or
//! counted as dropped; a symbol table is only reported where it is mapped and does not wrap;
//! the ACPI root comes from a valid RSDP.
#![no_main]

use arbitrary::Arbitrary;
use hestia_core::bootinfo::{
    MAX_MODULES, MAX_RAW_REGIONS, MAX_SECTIONS, Modules, RawMap, Rsdp, Section, acpi_root,
    e820_kind, efi_kind, find_symbols,
};
use hestia_core::memmap::RegionKind;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Info {
    efi: bool,
    areas: Vec<(u64, u64, u32)>,
    modules: Vec<(u64, u64)>,
    sections: Vec<(u32, u64, u64, u32)>,
    /// Where the symbol tables may lie: below this address.
    mapped_below: u64,
    v2: Option<(bool, u8, u64)>,
    v1: Option<(bool, u32)>,
}

fuzz_target!(|info: Info| {
    let mut raw = RawMap::default();
    for &(base, len, ty) in &info.areas {
        let kind = if info.efi {
            efi_kind(ty)
        } else {
            e820_kind(ty)
        };
        raw.push(base, len, kind);
    }
    let map = raw.sanitize();
    let regions = map.regions();
    for r in regions {
        assert!(r.start < r.end, "{r:?}: empty or inverted");
    }
    for w in regions.windows(2) {
        assert!(w[0].end <= w[1].start, "{w:?}: unsorted or overlapping");
    }
    // Free RAM only where an area said so and no area said otherwise.
    let areas: Vec<(u64, u64, RegionKind)> = info
        .areas
        .iter()
        .filter(|a| a.1 != 0)
        .take(MAX_RAW_REGIONS)
        .map(|&(base, len, ty)| {
            let kind = if info.efi {
                efi_kind(ty)
            } else {
                e820_kind(ty)
            };
            (base, base.saturating_add(len), kind)
        })
        .collect();
    for r in regions.iter().filter(|r| r.kind == RegionKind::Usable) {
        assert!(
            areas
                .iter()
                .any(|a| a.2 == RegionKind::Usable && a.0 <= r.start && r.start < a.1),
            "{r:?}: usable without a usable area"
        );
        for a in areas.iter().filter(|a| a.2 != RegionKind::Usable) {
            assert!(a.1 <= r.start || r.end <= a.0, "{r:?} overlaps {a:?}");
        }
    }

    let mut modules = Modules::default();
    for &(start, end) in &info.modules {
        modules.push(start, end, "");
    }
    let kept: Vec<(u64, u64)> = info
        .modules
        .iter()
        .copied()
        .filter(|(s, e)| s <= e)
        .take(MAX_MODULES)
        .collect();
    let got: Vec<(u64, u64)> = modules
        .as_slice()
        .iter()
        .map(|m| (m.start, m.end))
        .collect();
    assert_eq!(got, kept, "modules kept");
    assert_eq!(
        modules.dropped + got.len(),
        info.modules.len(),
        "modules counted"
    );

    let sections = info.sections.iter().map(|&(ty, addr, size, link)| Section {
        ty,
        addr,
        size,
        link,
    });
    let below = info.mapped_below;
    let mapped = |a: u64, s: u64| a.checked_add(s).is_some_and(|e| e <= below);
    if let Some(sym) = find_symbols(sections, mapped) {
        let headers = &info.sections[..info.sections.len().min(MAX_SECTIONS)];
        let symtab = headers
            .iter()
            .find(|h| h.0 == 2)
            .expect("a symbol table header");
        assert_eq!(sym.symtab, (symtab.1, symtab.1 + symtab.2));
        let strtab = headers[symtab.3 as usize];
        assert_eq!(sym.strtab, (strtab.1, strtab.1 + strtab.2));
        for (start, end) in [sym.symtab, sym.strtab] {
            assert!(start != 0 && start <= end && end <= below, "{sym:?}");
        }
    }

    let v2 = info.v2.map(|(valid, revision, sdt_addr)| Rsdp {
        valid,
        revision,
        sdt_addr,
    });
    let v1 = info.v1.map(|(valid, rsdt)| Rsdp {
        valid,
        revision: 0,
        sdt_addr: u64::from(rsdt),
    });
    if let Some(root) = acpi_root(v2, v1) {
        let from_v2 =
            v2.is_some_and(|r| r.valid && r.sdt_addr == root.sdt_addr && root.revision >= 2);
        let from_v1 =
            v1.is_some_and(|r| r.valid && r.sdt_addr == root.sdt_addr && root.revision == 0);
        assert!(from_v2 || from_v1, "{root:?} from {v2:?} / {v1:?}");
    } else {
        assert!(!v1.is_some_and(|r| r.valid), "a valid RSDP v1 ignored");
    }
});
