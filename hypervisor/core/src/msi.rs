//! PCI message-signalled interrupts, the arithmetic part: walking a function's capability list,
//! where the registers of an MSI capability sit, where an MSI-X table lives, and the message
//! that raises a vector on one local APIC (PCI Local Bus 3.0 §6.7-6.8, Intel SDM Vol. 3A
//! §11.11). The kernel reads and writes the hardware; this module only computes offsets.

use core::ops::Range;

/// Capability id of MSI.
pub const CAP_MSI: u8 = 0x05;
/// Capability id of MSI-X.
pub const CAP_MSIX: u8 = 0x11;

/// Configuration-space offsets of the header fields used here.
const STATUS: u16 = 0x06;
const STATUS_CAP_LIST: u8 = 1 << 4;
const CAP_POINTER: u16 = 0x34;
/// A list longer than this loops: 256 bytes of configuration space hold at most 48 entries.
const MAX_CAPS: usize = 48;

/// The offset of capability `id` in a function's standard configuration space, walking the
/// list with `read8`; `None` without a list, without the capability, or for a list that loops
/// or points into the header.
pub fn find_capability(read8: impl Fn(u16) -> u8, id: u8) -> Option<u16> {
    if read8(STATUS) & STATUS_CAP_LIST == 0 {
        return None;
    }
    let mut at = u16::from(read8(CAP_POINTER) & 0xFC);
    for _ in 0..MAX_CAPS {
        if at < 0x40 {
            return None;
        }
        if read8(at) == id {
            return Some(at);
        }
        at = u16::from(read8(at + 1) & 0xFC);
    }
    None
}

/// MSI capability control word: 64-bit address capable.
const MSI_64BIT: u16 = 1 << 7;
/// MSI capability control word: per-vector masking capable.
const MSI_MASKABLE: u16 = 1 << 8;
/// MSI capability control word: MSI enable.
pub const MSI_ENABLE: u16 = 1 << 0;

/// Where the registers of one MSI capability are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiLayout {
    /// Offset of the capability.
    pub cap: u16,
    /// The address is 64 bits wide.
    pub is64: bool,
    /// The function has a mask register.
    pub maskable: bool,
}

impl MsiLayout {
    /// The layout of the capability at `cap` with control word `control`.
    pub fn new(cap: u16, control: u16) -> Self {
        Self {
            cap,
            is64: control & MSI_64BIT != 0,
            maskable: control & MSI_MASKABLE != 0,
        }
    }

    /// The control word.
    pub fn control(&self) -> u16 {
        self.cap + 2
    }

    /// The low address dword.
    pub fn address_lo(&self) -> u16 {
        self.cap + 4
    }

    /// The high address dword (64-bit capable functions only).
    pub fn address_hi(&self) -> Option<u16> {
        self.is64.then_some(self.cap + 8)
    }

    /// The data word.
    pub fn data(&self) -> u16 {
        self.cap + if self.is64 { 0x0C } else { 0x08 }
    }

    /// The mask dword (maskable functions only).
    pub fn mask(&self) -> Option<u16> {
        self.maskable.then_some(self.data() + 4)
    }

    /// The bytes that carry the message and its mask: once Hestia programs them, only Hestia
    /// writes them (the control word before them stays the driver's).
    pub fn message_registers(&self) -> Range<u16> {
        // Data (padded to a dword), then mask and pending when present.
        let end = self.data() + 4 + if self.maskable { 8 } else { 0 };
        self.address_lo()..end
    }
}

/// MSI-X capability control word: function mask.
pub const MSIX_MASKALL: u16 = 1 << 14;
/// MSI-X capability control word: MSI-X enable.
pub const MSIX_ENABLE: u16 = 1 << 15;
/// Bytes per MSI-X table entry: address low, address high, data, vector control.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Offset of the vector-control dword in an entry; its bit 0 masks the entry.
pub const MSIX_VECTOR_CONTROL: u64 = 12;

/// Where one function's MSI-X table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixLayout {
    /// Entries in the table.
    pub size: u16,
    /// The BAR (0-5) that holds it.
    pub bir: u8,
    /// Its offset in that BAR.
    pub offset: u32,
}

impl MsixLayout {
    /// From the capability's control word and its table offset/BIR dword. `None` for a BIR
    /// that names no BAR.
    pub fn new(control: u16, table: u32) -> Option<Self> {
        let bir = (table & 7) as u8;
        (bir <= 5).then_some(Self {
            size: (control & 0x7FF) + 1,
            bir,
            offset: table & !7,
        })
    }

    /// Byte range of the table inside its BAR.
    pub fn table(&self) -> Range<u64> {
        let start = u64::from(self.offset);
        start..start + u64::from(self.size) * MSIX_ENTRY_SIZE
    }

    /// Machine-address range of the table when its BAR decodes at `base`; `None` when it would
    /// run past the top of the address space (a 64-bit BAR dom0 placed near 2^64).
    pub fn table_at(&self, base: u64) -> Option<Range<u64>> {
        let table = self.table();
        Some(base.checked_add(table.start)?..base.checked_add(table.end)?)
    }

    /// Offset of `entry` in the BAR, if the table has it.
    pub fn entry(&self, entry: u32) -> Option<u64> {
        (entry < u32::from(self.size))
            .then(|| u64::from(self.offset) + u64::from(entry) * MSIX_ENTRY_SIZE)
    }
}

/// Configuration offset of BAR `n`.
pub fn bar_offset(n: u8) -> u16 {
    0x10 + 4 * u16::from(n)
}

/// The address a memory BAR decodes, from its low dword and (for a 64-bit BAR) its high one;
/// `None` for an I/O BAR or an unassigned one.
pub fn memory_bar(lo: u32, hi: impl FnOnce() -> u32) -> Option<u64> {
    if lo & 1 != 0 {
        return None;
    }
    let base = u64::from(lo & !0xF);
    let base = match (lo >> 1) & 3 {
        0b10 => base | (u64::from(hi()) << 32),
        _ => base,
    };
    (base != 0).then_some(base)
}

/// The message (address, data) of a fixed, edge-triggered interrupt at `vector` on the local
/// APIC `apic_id`, physical destination mode. `None` for an APIC id an MSI address cannot
/// name without interrupt remapping (above 255).
pub fn message(apic_id: u32, vector: u8) -> Option<(u64, u32)> {
    const MSI_ADDRESS_BASE: u64 = 0xFEE0_0000;
    (apic_id <= 0xFF).then(|| {
        (
            MSI_ADDRESS_BASE | (u64::from(apic_id) << 12),
            u32::from(vector),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 256-byte configuration space.
    fn space(bytes: &[(u16, u8)]) -> impl Fn(u16) -> u8 {
        let mut s = [0u8; 256];
        for &(at, v) in bytes {
            s[usize::from(at)] = v;
        }
        move |at| s[usize::from(at)]
    }

    #[test]
    fn capability_walk() {
        let cfg = space(&[
            (STATUS, STATUS_CAP_LIST),
            (CAP_POINTER, 0x41), // low bits are reserved and ignored
            (0x40, 0x09),
            (0x41, 0x60),
            (0x60, CAP_MSIX),
            (0x61, 0x80),
            (0x80, CAP_MSI),
            (0x81, 0x00),
        ]);
        assert_eq!(find_capability(&cfg, CAP_MSIX), Some(0x60));
        assert_eq!(find_capability(&cfg, CAP_MSI), Some(0x80));
        assert_eq!(find_capability(&cfg, 0x10), None);
    }

    #[test]
    fn hostile_capability_lists() {
        // No list bit: the pointer is not looked at.
        let cfg = space(&[(CAP_POINTER, 0x40), (0x40, CAP_MSI)]);
        assert_eq!(find_capability(&cfg, CAP_MSI), None);
        // A loop ends.
        let cfg = space(&[
            (STATUS, STATUS_CAP_LIST),
            (CAP_POINTER, 0x40),
            (0x40, 0x01),
            (0x41, 0x40),
        ]);
        assert_eq!(find_capability(&cfg, CAP_MSI), None);
        // A pointer into the header ends the walk.
        let cfg = space(&[(STATUS, STATUS_CAP_LIST), (CAP_POINTER, 0x10)]);
        assert_eq!(find_capability(&cfg, 0), None);
    }

    #[test]
    fn msi_register_layouts() {
        let plain = MsiLayout::new(0x50, 0);
        assert_eq!(
            (plain.address_hi(), plain.data(), plain.mask()),
            (None, 0x58, None)
        );
        assert_eq!(plain.message_registers(), 0x54..0x5C);
        let wide = MsiLayout::new(0x50, MSI_64BIT);
        assert_eq!((wide.address_hi(), wide.data()), (Some(0x58), 0x5C));
        assert_eq!(wide.message_registers(), 0x54..0x60);
        let full = MsiLayout::new(0x50, MSI_64BIT | MSI_MASKABLE);
        assert_eq!((full.data(), full.mask()), (0x5C, Some(0x60)));
        assert_eq!(full.message_registers(), 0x54..0x68, "mask and pending");
        let masked32 = MsiLayout::new(0x50, MSI_MASKABLE);
        assert_eq!((masked32.data(), masked32.mask()), (0x58, Some(0x5C)));
        assert_eq!(masked32.message_registers(), 0x54..0x64);
        assert_eq!(full.control(), 0x52);
    }

    #[test]
    fn msix_table() {
        // 3 entries (size field 2) in BAR 1 at 0x2000.
        let t = MsixLayout::new(MSIX_ENABLE | 2, 0x2001).unwrap();
        assert_eq!((t.size, t.bir, t.offset), (3, 1, 0x2000));
        assert_eq!(t.table(), 0x2000..0x2030);
        assert_eq!(t.entry(2), Some(0x2020));
        assert_eq!(t.entry(3), None);
        assert_eq!(MsixLayout::new(0, 6), None, "BIR 6 names no BAR");
        assert_eq!(t.table_at(0xFEB0_0000), Some(0xFEB0_2000..0xFEB0_2030));
    }

    #[test]
    fn msix_table_near_the_top_of_the_address_space() {
        let t = MsixLayout::new(2, 0x2001).unwrap();
        let top = memory_bar(0xFFFF_E00C, || 0xFFFF_FFFF).unwrap();
        assert_eq!(top, 0xFFFF_FFFF_FFFF_E000);
        assert_eq!(t.table_at(top), None, "the table's start wraps");
        assert_eq!(t.table_at(u64::MAX - 0x2020), None, "its end wraps");
        assert_eq!(
            t.table_at(u64::MAX - 0x2030),
            Some(u64::MAX - 0x30..u64::MAX),
            "ends exactly at the top"
        );
    }

    #[test]
    fn bars() {
        assert_eq!(memory_bar(0xFEB0_0000, || 0), Some(0xFEB0_0000));
        assert_eq!(
            memory_bar(0xFEB0_0008, || 0),
            Some(0xFEB0_0000),
            "prefetchable"
        );
        assert_eq!(
            memory_bar(0x0000_000C, || 0x80),
            Some(0x80_0000_0000),
            "64-bit"
        );
        assert_eq!(memory_bar(0xC001, || 0), None, "I/O BAR");
        assert_eq!(memory_bar(0, || 0), None, "unassigned");
        assert_eq!(bar_offset(5), 0x24);
    }

    #[test]
    fn messages() {
        assert_eq!(message(0, 0xB0), Some((0xFEE0_0000, 0xB0)));
        assert_eq!(message(3, 0xB1), Some((0xFEE0_3000, 0xB1)));
        assert_eq!(message(256, 0xB1), None);
    }
}
