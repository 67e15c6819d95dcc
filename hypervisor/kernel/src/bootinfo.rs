//! The multiboot2 boot information, read once with the `multiboot2` crate and copied into a
//! sanitised [`BootInfo`].
//!
//! The information structure is bootloader-provided memory: its total size is bounded before the
//! crate walks it, every address taken from it is range-checked, and the memory map goes through
//! `hestia_core::memmap` (overlaps, alignment). A missing or corrupt structure is a clear
//! one-line error, never a fault. Multiboot2 specification 2.0, section 3.6. This module only
//! reads the tags; what is kept of them is decided by `hestia_core::bootinfo` (host-tested and
//! fuzzed).

use core::fmt;

use hestia_core::bootinfo::{self as sanitise, Modules, RawMap, Rsdp, Section};
pub use hestia_core::bootinfo::{AcpiRoot, MAX_MODULES, SymbolSections};
use hestia_core::efi::{MemDesc as EfiMemDesc, MemMap as EfiMemMap};
use hestia_core::memmap::MemoryMap;
use multiboot2::{BootInformation, BootInformationHeader};

use crate::arch::x86_64::boot::MULTIBOOT2_BOOTLOADER_MAGIC;
use crate::mm;

/// Largest boot information structure accepted (GRUB's is a few KiB).
const MAX_MBI_SIZE: u64 = 1 << 20;

/// A boot module (dom0 kernel, initrd, ...); its string lives in the reserved structure.
pub type Module = hestia_core::bootinfo::Module<'static>;

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
    modules: Modules<'static>,
    /// Modules beyond [`MAX_MODULES`] (or inverted) that were ignored.
    pub dropped_modules: usize,
    /// ACPI root, if the bootloader passed an RSDP.
    pub acpi: Option<AcpiRoot>,
    /// Hestia's symbol table, if loaded.
    pub symbols: Option<SymbolSections>,
    /// Booted through UEFI firmware.
    pub efi: bool,
    /// The EFI system table's physical address (UEFI only).
    pub efi_systab: Option<u64>,
    /// The EFI memory map (UEFI only), for `XEN_FW_EFI_MEM_INFO`.
    pub efi_mmap: EfiMemMap,
    /// The framebuffer, if the bootloader set one up.
    pub framebuffer: Option<Framebuffer>,
}

impl BootInfo {
    /// The boot modules in order.
    pub fn modules(&self) -> &[Module] {
        self.modules.as_slice()
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

    let mut raw = RawMap::default();
    let memmap_source = if let Some(t) = mbi.memory_map_tag() {
        for a in t.memory_areas() {
            raw.push(
                a.start_address(),
                a.size(),
                sanitise::e820_kind(a.typ().into()),
            );
        }
        "multiboot2 mmap (e820)"
    } else if let Some(t) = mbi.efi_memory_map_tag() {
        for d in t.memory_areas() {
            let len = d.page_count.saturating_mul(4096);
            raw.push(d.phys_start, len, sanitise::efi_kind(d.ty.0));
        }
        "EFI memory map"
    } else {
        return Err(BootInfoError::NoMemoryMap);
    };
    let memmap = raw.sanitize();
    let mut efi_mmap = EfiMemMap::default();
    for d in mbi
        .efi_memory_map_tag()
        .iter()
        .flat_map(|t| t.memory_areas())
    {
        efi_mmap.push(EfiMemDesc {
            ty: d.ty.0,
            start: d.phys_start,
            pages: d.page_count,
            attr: d.att.bits(),
        });
    }

    let mut modules = Modules::default();
    for m in mbi.module_tags() {
        let (start, end) = (u64::from(m.start_address()), u64::from(m.end_address()));
        modules.push(start, end, static_str(m.cmdline()));
    }

    let acpi = sanitise::acpi_root(
        mbi.rsdp_v2_tag().map(|v2| Rsdp {
            valid: v2.checksum_is_valid(),
            revision: v2.revision(),
            sdt_addr: v2.xsdt_address() as u64,
        }),
        mbi.rsdp_v1_tag().map(|v1| Rsdp {
            valid: v1.checksum_is_valid(),
            revision: 0,
            sdt_addr: v1.rsdt_address() as u64,
        }),
    );

    Ok(BootInfo {
        cmdline: static_str(mbi.command_line_tag().map_or(Ok(""), |t| t.cmdline())),
        loader: static_str(mbi.boot_loader_name_tag().map_or(Ok(""), |t| t.name())),
        memmap,
        memmap_source,
        mbi_range: (phys, phys + total),
        dropped_modules: modules.dropped,
        modules,
        acpi,
        symbols: find_symbols(&mbi),
        efi: mbi.efi_sdt64_tag().is_some() || mbi.efi_memory_map_tag().is_some(),
        efi_systab: mbi.efi_sdt64_tag().map(|t| t.sdt_address() as u64),
        efi_mmap,
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
    let sections = mbi.elf_sections_tag()?.sections().map(|s| Section {
        ty: s.sh_type,
        addr: s.sh_addr,
        size: s.sh_size,
        link: s.sh_link,
    });
    sanitise::find_symbols(sections, mm::in_direct_map)
}

/// Hestia's own command line, kept at boot.
static HV_CMDLINE: spin::Once<&'static str> = spin::Once::new();
/// The machine's sanitised memory map, kept at boot.
static HOST_MEMMAP: spin::Once<&'static [hestia_core::memmap::Region]> = spin::Once::new();
/// The time of day at Hestia's system time 0 (seconds, nanoseconds), from the RTC at boot.
static WALLCLOCK: spin::Once<Option<(u64, u32)>> = spin::Once::new();

/// Keeps Hestia's command line (once, at boot) for [`hv_cmdline`].
pub fn keep_cmdline(cmdline: &'static str) {
    HV_CMDLINE.call_once(|| cmdline);
}

/// Keeps the machine's memory map (once, at boot) for [`host_memory_map`].
pub fn keep_memory_map(regions: &'static [hestia_core::memmap::Region]) {
    HOST_MEMMAP.call_once(|| regions);
}

/// Keeps the wallclock read at boot, if the RTC could be read (once), for
/// [`wallclock_at_boot`].
pub fn keep_wallclock(at_zero: Option<(u64, u32)>) {
    WALLCLOCK.call_once(|| at_zero);
}

/// Hestia's own command line (for `XENVER_commandline`).
pub fn hv_cmdline() -> &'static str {
    HV_CMDLINE.get().copied().unwrap_or("")
}

/// The machine's memory map as firmware reported it (sanitised; for
/// `XENMEM_machine_memory_map`).
pub fn host_memory_map() -> &'static [hestia_core::memmap::Region] {
    HOST_MEMMAP.get().copied().unwrap_or(&[])
}

/// The time of day at Hestia's system time 0 (seconds, nanoseconds), if the RTC could be read
/// at boot.
pub fn wallclock_at_boot() -> Option<(u64, u32)> {
    WALLCLOCK.get().copied().flatten()
}
