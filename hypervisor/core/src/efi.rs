//! What Hestia keeps of the UEFI firmware when GRUB boots it on a UEFI machine, and the answers
//! of `XENPF_firmware_info`/`XEN_FW_EFI_INFO` built from it (Xen 4.17's `efi_get_info`,
//! xen/common/efi/runtime.c; UEFI 2.10 section 4.3 for the system table's layout).
//!
//! GRUB's multiboot2 loader exits the boot services before it enters Hestia (Hestia's header
//! asks for no EFI boot-services tags), and passes the EFI system table's address (tag 12) and
//! the EFI memory map (tag 17). The system table and its configuration-table array live in
//! runtime-services memory, which stays reserved, so they can be read afterwards. Linux as a
//! PV dom0 on UEFI finds the ACPI RSDP only through the configuration tables it asks the
//! hypervisor for (`xen_efi_init`): without them it runs without ACPI. Hestia answers as Xen
//! does when it runs without EFI runtime services (`efi=no-rs`): the system table's revision,
//! its configuration tables, the firmware vendor, the memory map's descriptor for an address;
//! no runtime-services revision.
//!
//! Everything here is pure: the kernel reads the firmware's bytes and hands them over.

/// `EFI_SYSTEM_TABLE_SIGNATURE` ("IBI SYST").
pub const SYSTEM_TABLE_SIGNATURE: u64 = 0x5453_5953_2049_4249;
/// Bytes of the 64-bit system table read (up to and including `ConfigurationTable`).
pub const SYSTEM_TABLE_SIZE: usize = 120;
/// Most configuration tables believed (firmware has a dozen or two).
pub const MAX_CONFIG_TABLES: u64 = 1024;
/// Most UCS-2 characters of the firmware vendor kept (without the terminating NUL).
pub const MAX_VENDOR_CHARS: usize = 63;
/// Bytes of a UEFI page.
const EFI_PAGE: u64 = 4096;

/// The fields of the 64-bit EFI system table Hestia uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemTable {
    /// `Hdr.Revision` (major << 16 | minor), `XEN_FW_EFI_VERSION`'s answer.
    pub revision: u32,
    /// Physical address of the firmware vendor's UCS-2 string (0: none).
    pub fw_vendor: u64,
    /// `FirmwareRevision`.
    pub fw_revision: u32,
    /// Number of configuration tables.
    pub nr_tables: u64,
    /// Physical address of the configuration-table array.
    pub config_table: u64,
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Parses the first [`SYSTEM_TABLE_SIZE`] bytes of a 64-bit EFI system table: `None` unless the
/// signature is right, the header claims at least those bytes, and the configuration-table
/// count is plausible (at most [`MAX_CONFIG_TABLES`], with an address when non-zero).
pub fn parse_system_table(b: &[u8]) -> Option<SystemTable> {
    if u64_at(b, 0)? != SYSTEM_TABLE_SIGNATURE || (u32_at(b, 12)? as usize) < SYSTEM_TABLE_SIZE {
        return None;
    }
    let t = SystemTable {
        revision: u32_at(b, 8)?,
        fw_vendor: u64_at(b, 24)?,
        fw_revision: u32_at(b, 32)?,
        nr_tables: u64_at(b, 104)?,
        config_table: u64_at(b, 112)?,
    };
    (t.nr_tables <= MAX_CONFIG_TABLES && (t.nr_tables == 0 || t.config_table != 0)).then_some(t)
}

/// An EFI memory descriptor as the multiboot2 tag gives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemDesc {
    /// `Type`.
    pub ty: u32,
    /// `PhysicalStart`.
    pub start: u64,
    /// `NumberOfPages` (4 KiB).
    pub pages: u64,
    /// `Attribute`.
    pub attr: u64,
}

/// Most EFI memory descriptors kept (OVMF passes about a hundred).
pub const MAX_MEM_DESCS: usize = 256;

/// The EFI memory map as kept: the first [`MAX_MEM_DESCS`] descriptors, the rest counted.
#[derive(Clone, Copy, Debug)]
pub struct MemMap {
    descs: [MemDesc; MAX_MEM_DESCS],
    len: usize,
    /// Descriptors beyond [`MAX_MEM_DESCS`], not kept.
    pub dropped: usize,
}

impl Default for MemMap {
    fn default() -> Self {
        Self {
            descs: [MemDesc::default(); MAX_MEM_DESCS],
            len: 0,
            dropped: 0,
        }
    }
}

impl MemMap {
    /// Keeps `d` if there is room, else counts it.
    pub fn push(&mut self, d: MemDesc) {
        match self.descs.get_mut(self.len) {
            Some(slot) => {
                *slot = d;
                self.len += 1;
            }
            None => self.dropped += 1,
        }
    }

    /// The descriptors kept, in the firmware's order.
    pub fn as_slice(&self) -> &[MemDesc] {
        self.descs.get(..self.len).unwrap_or_default()
    }
}

/// `XEN_FW_EFI_MEM_INFO`'s answer for `[addr, addr + size)`: the first descriptor holding
/// `addr`, as (type, attributes, size), the size cut at the descriptor's end (also when
/// `addr + size` wraps). `None` (Xen's -ESRCH) when no descriptor holds `addr`.
pub fn mem_info(descs: &[MemDesc], addr: u64, size: u64) -> Option<(u32, u64, u64)> {
    descs.iter().find_map(|d| {
        let end = d.start.saturating_add(d.pages.saturating_mul(EFI_PAGE));
        (addr >= d.start && addr < end).then(|| {
            let size = match addr.checked_add(size) {
                Some(e) if e <= end => size,
                _ => end - addr,
            };
            (d.ty, d.attr, size)
        })
    })
}

/// The firmware vendor as `XEN_FW_EFI_VENDOR` copies it into a guest buffer of `bufsz` bytes:
/// whole UCS-2 characters up to and including the NUL, as many as fit (Xen stops at the buffer's
/// end without a terminator). `vendor` holds the characters without the NUL.
pub fn vendor_bytes(vendor: &[u16], bufsz: u32, out: &mut [u8]) -> usize {
    let fits = (bufsz / 2) as usize;
    let chars = vendor.iter().copied().chain(core::iter::once(0)).take(fits);
    let mut n = 0;
    for (c, slot) in chars.zip(out.chunks_exact_mut(2)) {
        slot.copy_from_slice(&c.to_le_bytes());
        n += 2;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(sig: u64, hdr_size: u32, nr: u64, ct: u64) -> [u8; SYSTEM_TABLE_SIZE] {
        let mut b = [0u8; SYSTEM_TABLE_SIZE];
        b[0..8].copy_from_slice(&sig.to_le_bytes());
        b[8..12].copy_from_slice(&0x0002_0046u32.to_le_bytes());
        b[12..16].copy_from_slice(&hdr_size.to_le_bytes());
        b[24..32].copy_from_slice(&0x7fe1_0000u64.to_le_bytes());
        b[32..36].copy_from_slice(&0x10000u32.to_le_bytes());
        b[104..112].copy_from_slice(&nr.to_le_bytes());
        b[112..120].copy_from_slice(&ct.to_le_bytes());
        b
    }

    #[test]
    fn parses_a_system_table() {
        let t = parse_system_table(&table(SYSTEM_TABLE_SIGNATURE, 120, 11, 0x7f9e_e018)).unwrap();
        assert_eq!(
            t,
            SystemTable {
                revision: 0x0002_0046,
                fw_vendor: 0x7fe1_0000,
                fw_revision: 0x10000,
                nr_tables: 11,
                config_table: 0x7f9e_e018,
            }
        );
    }

    #[test]
    fn rejects_bad_system_tables() {
        // Wrong signature, a header shorter than the fields read, too many tables, tables at 0,
        // too few bytes.
        assert!(parse_system_table(&table(0x1234, 120, 1, 0x1000)).is_none());
        assert!(parse_system_table(&table(SYSTEM_TABLE_SIGNATURE, 100, 1, 0x1000)).is_none());
        assert!(parse_system_table(&table(SYSTEM_TABLE_SIGNATURE, 120, 1 << 40, 0x1000)).is_none());
        assert!(parse_system_table(&table(SYSTEM_TABLE_SIGNATURE, 120, 3, 0)).is_none());
        assert!(parse_system_table(&table(SYSTEM_TABLE_SIGNATURE, 120, 0, 0)).is_some());
        assert!(parse_system_table(&table(SYSTEM_TABLE_SIGNATURE, 120, 1, 1)[..119]).is_none());
    }

    #[test]
    fn mem_info_finds_and_clips() {
        let descs = [
            MemDesc {
                ty: 7,
                start: 0,
                pages: 0xa0,
                attr: 0xf,
            },
            MemDesc {
                ty: 6,
                start: 0x10_0000,
                pages: 2,
                attr: 0x8000_0000_0000_000f,
            },
        ];
        assert_eq!(
            mem_info(&descs, 0x10_0800, 0x100),
            Some((6, 0x8000_0000_0000_000f, 0x100))
        );
        // Past the descriptor's end, and wrapping: cut at the end.
        assert_eq!(
            mem_info(&descs, 0x10_0800, 0x10_0000),
            Some((6, 0x8000_0000_0000_000f, 0x1800))
        );
        assert_eq!(
            mem_info(&descs, 0x10_1000, u64::MAX),
            Some((6, 0x8000_0000_0000_000f, 0x1000))
        );
        assert_eq!(mem_info(&descs, 0x9_f000, 1), Some((7, 0xf, 1)));
        // Holes and addresses past everything: not found.
        assert_eq!(mem_info(&descs, 0xa_0000, 1), None);
        assert_eq!(mem_info(&descs, u64::MAX, 1), None);
        // A descriptor whose end overflows does not panic.
        let huge = [MemDesc {
            ty: 5,
            start: u64::MAX - 4095,
            pages: u64::MAX,
            attr: 0,
        }];
        assert_eq!(mem_info(&huge, u64::MAX - 10, 100), Some((5, 0, 10)));
    }

    #[test]
    fn mem_map_keeps_the_first_descriptors_and_counts_the_rest() {
        let mut m = MemMap::default();
        for i in 0..MAX_MEM_DESCS as u64 + 3 {
            m.push(MemDesc {
                ty: 7,
                start: i << 12,
                pages: 1,
                attr: 0,
            });
        }
        assert_eq!(m.as_slice().len(), MAX_MEM_DESCS);
        assert_eq!(m.dropped, 3);
        assert_eq!(m.as_slice()[1].start, 0x1000);
    }

    #[test]
    fn vendor_is_copied_with_its_nul_as_far_as_it_fits() {
        let v: [u16; 6] = [
            b'E' as u16,
            b'D' as u16,
            b'K' as u16,
            b' ' as u16,
            b'I' as u16,
            b'I' as u16,
        ];
        let mut out = [0xffu8; 32];
        assert_eq!(vendor_bytes(&v, 32, &mut out), 14);
        assert_eq!(&out[..4], &[b'E', 0, b'D', 0]);
        assert_eq!(&out[12..14], &[0, 0]);
        // A small buffer: whole characters only, no terminator; an odd size rounds down.
        let mut out = [0u8; 32];
        assert_eq!(vendor_bytes(&v, 5, &mut out), 4);
        assert_eq!(vendor_bytes(&v, 0, &mut out), 0);
        // A buffer larger than the output slice: bounded by the slice.
        let mut small = [0u8; 4];
        assert_eq!(vendor_bytes(&v, 1000, &mut small), 4);
    }
}
