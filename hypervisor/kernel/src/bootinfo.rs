//! The multiboot2 boot information, read once with the `multiboot2` crate and copied into a
//! sanitised [`BootInfo`].
//!
//! The information structure is bootloader-provided memory: its total size is bounded before the
//! crate walks it, every address taken from it is range-checked, and the memory map goes through
//! `hestia_core::memmap` (overlaps, alignment). A missing or corrupt structure is a clear
//! one-line error, never a fault. Multiboot2 specification 2.0, section 3.6.

use core::fmt;

use hestia_core::memmap::{MemoryMap, Region, RegionKind, range_from_base_len};
use multiboot2::{BootInformation, BootInformationHeader};

use crate::arch::x86_64::boot::MULTIBOOT2_BOOTLOADER_MAGIC;
use crate::mm;

/// Most modules Hestia records.
pub const MAX_MODULES: usize = 16;
const MAX_RAW_REGIONS: usize = 128;
/// Largest boot information structure accepted (GRUB's is a few KiB).
const MAX_MBI_SIZE: u64 = 1 << 20;

/// A boot module (dom0 kernel, initrd, ...).
#[derive(Clone, Copy, Debug, Default)]
pub struct Module {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The module's string (its command line).
    pub cmdline: &'static str,
}

/// Where the ACPI root table is.
#[derive(Clone, Copy, Debug)]
pub struct AcpiRoot {
    /// RSDP revision: 0 means an RSDT with 32-bit entries, 2+ an XSDT.
    pub revision: u8,
    /// Physical address of the RSDT or XSDT.
    pub sdt_addr: u64,
}

/// Physical ranges of Hestia's own `.symtab` and `.strtab`, loaded by GRUB.
#[derive(Clone, Copy, Debug)]
pub struct SymbolSections {
    /// `[start, end)` of the symbol table.
    pub symtab: (u64, u64),
    /// `[start, end)` of the string table.
    pub strtab: (u64, u64),
}

/// A linear framebuffer set up by the bootloader (reported; Hestia's console is serial).
#[derive(Clone, Copy, Debug)]
pub struct Framebuffer {
    /// Physical address.
    pub addr: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bits per pixel.
    pub bpp: u8,
}

/// Everything Hestia takes from the bootloader.
pub struct BootInfo {
    /// The hypervisor command line.
    pub cmdline: &'static str,
    /// The bootloader's name.
    pub loader: &'static str,
    /// Sanitised physical memory map.
    pub memmap: MemoryMap,
    /// Which tag the memory map came from.
    pub memmap_source: &'static str,
    /// `[start, end)` of the boot information itself.
    pub mbi_range: (u64, u64),
    modules: [Module; MAX_MODULES],
    nr_modules: usize,
    /// Modules beyond [`MAX_MODULES`] that were ignored.
    pub dropped_modules: usize,
    /// ACPI root, if the bootloader passed an RSDP.
    pub acpi: Option<AcpiRoot>,
    /// Hestia's symbol table, if loaded.
    pub symbols: Option<SymbolSections>,
    /// Booted through UEFI firmware.
    pub efi: bool,
    /// The framebuffer, if the bootloader set one up.
    pub framebuffer: Option<Framebuffer>,
}

impl BootInfo {
    /// The boot modules in order.
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.nr_modules]
    }
}

/// Why the boot information could not be used.
#[derive(Debug)]
pub enum BootInfoError {
    /// EAX did not hold the multiboot2 magic: not loaded by a multiboot2 loader.
    BadMagic(u32),
    /// The structure's address is null, unaligned, or its size is absurd.
    BadHeader(u64, u64),
    /// The crate rejected the structure.
    Corrupt(multiboot2::LoadError),
    /// Neither a memory map nor an EFI memory map tag.
    NoMemoryMap,
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(
                f,
                "not started by a multiboot2 loader (EAX={m:#x}, expected {MULTIBOOT2_BOOTLOADER_MAGIC:#x}); boot Hestia with GRUB's multiboot2 command"
            ),
            Self::BadHeader(a, s) => {
                write!(f, "multiboot2 information at {a:#x} (size {s}) is unusable")
            }
            Self::Corrupt(e) => write!(f, "multiboot2 information is corrupt: {e}"),
            Self::NoMemoryMap => write!(
                f,
                "the bootloader passed no memory map (neither the mmap nor the EFI mmap tag)"
            ),
        }
    }
}

fn static_str(r: Result<&str, multiboot2::StringError>) -> &'static str {
    // The boot information stays mapped (direct map) and reserved for Hestia's lifetime.
    // SAFETY: see above; the string lives in the reserved information structure.
    r.map(|s| unsafe { &*(s as *const str) }).unwrap_or("")
}

/// Reads and sanitises the boot information at physical `mbi_phys`.
pub fn parse(magic: u32, mbi_phys: u32) -> Result<BootInfo, BootInfoError> {
    if magic != MULTIBOOT2_BOOTLOADER_MAGIC {
        return Err(BootInfoError::BadMagic(magic));
    }
    let phys = u64::from(mbi_phys);
    if phys == 0 || phys % 8 != 0 || !mm::in_direct_map(phys, 8) {
        return Err(BootInfoError::BadHeader(phys, 0));
    }
    // SAFETY: `phys` is 8-aligned and inside the boot direct map (first 4 GiB).
    let total = u64::from(unsafe { (mm::phys_to_virt(phys) as *const u32).read() });
    if !(16..=MAX_MBI_SIZE).contains(&total) || !mm::in_direct_map(phys, total) {
        return Err(BootInfoError::BadHeader(phys, total));
    }
    // SAFETY: the structure is mapped for `total` bytes, which the crate does not exceed.
    let mbi =
        unsafe { BootInformation::load(mm::phys_to_virt(phys) as *const BootInformationHeader) }
            .map_err(BootInfoError::Corrupt)?;
    // SAFETY: the structure stays mapped and reserved forever; extend the borrow accordingly.
    let mbi: BootInformation<'static> =
        unsafe { core::mem::transmute::<BootInformation<'_>, BootInformation<'static>>(mbi) };

    let mut raw = [Region {
        start: 0,
        end: 0,
        kind: RegionKind::Reserved,
    }; MAX_RAW_REGIONS];
    let mut n = 0;
    let mut push = |base: u64, len: u64, kind: RegionKind| {
        if let (Some((start, end)), true) = (range_from_base_len(base, len), n < MAX_RAW_REGIONS) {
            raw[n] = Region { start, end, kind };
            n += 1;
        }
    };
    let memmap_source = if let Some(t) = mbi.memory_map_tag() {
        for a in t.memory_areas() {
            let kind = match u32::from(a.typ()) {
                1 => RegionKind::Usable,
                3 => RegionKind::AcpiReclaimable,
                4 => RegionKind::AcpiNvs,
                5 => RegionKind::Bad,
                _ => RegionKind::Reserved,
            };
            push(a.start_address(), a.size(), kind);
        }
        "multiboot2 mmap (e820)"
    } else if let Some(t) = mbi.efi_memory_map_tag() {
        for d in t.memory_areas() {
            let kind = match d.ty.0 {
                1..=4 | 7 => RegionKind::Usable,
                8 => RegionKind::Bad,
                9 => RegionKind::AcpiReclaimable,
                10 => RegionKind::AcpiNvs,
                _ => RegionKind::Reserved,
            };
            push(d.phys_start, d.page_count.saturating_mul(4096), kind);
        }
        "EFI memory map"
    } else {
        return Err(BootInfoError::NoMemoryMap);
    };
    let memmap = MemoryMap::sanitize(&raw[..n]);

    let mut modules = [Module::default(); MAX_MODULES];
    let mut nr_modules = 0;
    let mut dropped_modules = 0;
    for m in mbi.module_tags() {
        let (start, end) = (u64::from(m.start_address()), u64::from(m.end_address()));
        if end < start || nr_modules == MAX_MODULES {
            dropped_modules += 1;
            continue;
        }
        modules[nr_modules] = Module {
            start,
            end,
            cmdline: static_str(m.cmdline()),
        };
        nr_modules += 1;
    }

    let acpi = match (mbi.rsdp_v2_tag(), mbi.rsdp_v1_tag()) {
        (Some(v2), _) if v2.checksum_is_valid() && v2.xsdt_address() != 0 => Some(AcpiRoot {
            revision: v2.revision().max(2),
            sdt_addr: v2.xsdt_address() as u64,
        }),
        (_, Some(v1)) if v1.checksum_is_valid() => Some(AcpiRoot {
            revision: 0,
            sdt_addr: v1.rsdt_address() as u64,
        }),
        _ => None,
    };

    Ok(BootInfo {
        cmdline: static_str(mbi.command_line_tag().map_or(Ok(""), |t| t.cmdline())),
        loader: static_str(mbi.boot_loader_name_tag().map_or(Ok(""), |t| t.name())),
        memmap,
        memmap_source,
        mbi_range: (phys, phys + total),
        modules,
        nr_modules,
        dropped_modules,
        acpi,
        symbols: find_symbols(&mbi),
        efi: mbi.efi_sdt64_tag().is_some() || mbi.efi_memory_map_tag().is_some(),
        framebuffer: mbi
            .framebuffer_tag()
            .and_then(Result::ok)
            .map(|f| Framebuffer {
                addr: f.address(),
                width: f.width(),
                height: f.height(),
                bpp: f.bpp(),
            }),
    })
}

/// Finds `.symtab` and its linked `.strtab` among the ELF section headers GRUB passed.
fn find_symbols(mbi: &BootInformation<'_>) -> Option<SymbolSections> {
    const SHT_SYMTAB: u32 = 2;
    let mut headers = [(0u32, 0u64, 0u64, 0u32); 64];
    let mut n = 0;
    for s in mbi.elf_sections_tag()?.sections() {
        if n == headers.len() {
            break;
        }
        headers[n] = (s.sh_type, s.sh_addr, s.sh_size, s.sh_link);
        n += 1;
    }
    let headers = &headers[..n];
    let &(_, addr, size, link) = headers.iter().find(|h| h.0 == SHT_SYMTAB)?;
    let &(_, saddr, ssize, _) = headers.get(link as usize)?;
    let ok = |a: u64, s: u64| a != 0 && mm::in_direct_map(a, s);
    (ok(addr, size) && ok(saddr, ssize)).then_some(SymbolSections {
        symtab: (addr, addr + size),
        strtab: (saddr, saddr + ssize),
    })
}
