//! The UEFI firmware's tables, read once at boot for `XENPF_firmware_info`'s `XEN_FW_EFI_INFO`
//! (see `hestia_core::efi` for why dom0 needs them: Linux finds the ACPI RSDP through them on a
//! UEFI machine).
//!
//! Invariants: read once on the BSP before dom0 exists ([`init`]), immutable afterwards
//! (a `spin::Once`, no lock). Firmware memory is read only through the direct map and only
//! where it lies inside it; what is kept is a copy, so a later change of that memory (it is
//! reserved runtime-services memory nobody writes) cannot reach the answers.

use alloc::vec::Vec;

use hestia_core::efi::{self as core_efi, MemDesc, SystemTable};
use spin::Once;

use crate::bootinfo::BootInfo;
use crate::mm;

/// What Hestia knows of the firmware.
pub struct Efi {
    /// The system table's fields.
    pub table: SystemTable,
    /// The firmware vendor (UCS-2, without its NUL).
    pub vendor: Vec<u16>,
    /// The EFI memory map.
    pub mmap: &'static [MemDesc],
}

static EFI: Once<Efi> = Once::new();

/// Copies `len` bytes of firmware memory at `phys`, if the direct map covers them.
fn read_firmware(phys: u64, out: &mut [u8]) -> bool {
    if phys == 0 || !mm::in_direct_map(phys, out.len() as u64) {
        return false;
    }
    // SAFETY: the range lies inside the direct map (checked above), which maps all physical
    // memory below its end; firmware tables are plain memory, a byte copy has no side effects.
    unsafe {
        core::ptr::copy_nonoverlapping(
            mm::phys_to_virt(phys) as *const u8,
            out.as_mut_ptr(),
            out.len(),
        )
    };
    true
}

/// Reads the system table GRUB passed (UEFI boots only) and keeps the EFI memory map.
pub fn init(info: &'static BootInfo) {
    let Some(systab) = info.efi_systab else {
        return;
    };
    let mut raw = [0u8; core_efi::SYSTEM_TABLE_SIZE];
    let table = if read_firmware(systab, &mut raw) {
        core_efi::parse_system_table(&raw)
    } else {
        None
    };
    let Some(table) = table else {
        crate::warn!("efi: no valid system table at {systab:#x}: dom0 gets no EFI information");
        return;
    };
    let mut vendor = Vec::new();
    let mut c = [0u8; 2];
    while vendor.len() < core_efi::MAX_VENDOR_CHARS
        && read_firmware(
            table.fw_vendor.saturating_add(2 * vendor.len() as u64),
            &mut c,
        )
        && c != [0, 0]
    {
        vendor.push(u16::from_le_bytes(c));
    }
    let mmap = info.efi_mmap.as_slice();
    let name: alloc::string::String = char::decode_utf16(vendor.iter().copied())
        .map(|c| c.unwrap_or('?'))
        .collect();
    crate::info!(
        "efi: system table revision {}.{:02}, {} configuration tables at {:#x}, firmware \"{}\" {:#x}, {} memory descriptors ({} dropped)",
        table.revision >> 16,
        table.revision & 0xffff,
        table.nr_tables,
        table.config_table,
        name,
        table.fw_revision,
        mmap.len(),
        info.efi_mmap.dropped
    );
    EFI.call_once(|| Efi {
        table,
        vendor,
        mmap,
    });
}

/// The firmware's tables, on a UEFI boot with a valid system table.
pub fn get() -> Option<&'static Efi> {
    EFI.get()
}
