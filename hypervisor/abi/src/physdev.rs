//! `physdev_op` (`public/physdev.h`): I/O privilege, physical IRQs (PIRQs) and PCI devices.

/// `physdev_op` commands.
pub mod cmd {
    /// Query whether a PIRQ needs an EOI ([`super::IrqStatusQuery`]).
    pub const IRQ_STATUS_QUERY: u32 = 5;
    /// Set the vCPU's virtual IOPL ([`super::SetIopl`]).
    pub const SET_IOPL: u32 = 6;
    /// Set the vCPU's I/O-port permission bitmap ([`super::SetIobitmap`]).
    pub const SET_IOBITMAP: u32 = 7;
    /// Read an IO-APIC register ([`super::Apic`]).
    pub const APIC_READ: u32 = 8;
    /// Write an IO-APIC register ([`super::Apic`]).
    pub const APIC_WRITE: u32 = 9;
    /// Legacy: allocate a vector for an IRQ.
    pub const ALLOC_IRQ_VECTOR: u32 = 10;
    /// Legacy: free an IRQ's vector.
    pub const FREE_IRQ_VECTOR: u32 = 11;
    /// End of interrupt for a PIRQ ([`super::Eoi`]).
    pub const EOI: u32 = 12;
    /// Map a GSI or MSI to a PIRQ ([`super::MapPirq`]).
    pub const MAP_PIRQ: u32 = 13;
    /// Unmap a PIRQ ([`super::UnmapPirq`]).
    pub const UNMAP_PIRQ: u32 = 14;
    /// Legacy PCI device add.
    pub const MANAGE_PCI_ADD: u32 = 15;
    /// Legacy PCI device remove.
    pub const MANAGE_PCI_REMOVE: u32 = 16;
    /// Register the "PIRQ needs EOI" bitmap page, EOI unmasks ([`super::PirqEoiGmfn`]).
    pub const PIRQ_EOI_GMFN_V1: u32 = 17;
    /// Restore a device's MSI state after resume.
    pub const RESTORE_MSI: u32 = 19;
    /// Legacy PCI device add with SR-IOV information.
    pub const MANAGE_PCI_ADD_EXT: u32 = 20;
    /// Program an IO-APIC pin's trigger mode and polarity ([`super::SetupGsi`]).
    pub const SETUP_GSI: u32 = 21;
    /// Allocate a free PIRQ number.
    pub const GET_FREE_PIRQ: u32 = 23;
    /// Report an MMCONFIG range as usable.
    pub const PCI_MMCFG_RESERVED: u32 = 24;
    /// Report a PCI device.
    pub const PCI_DEVICE_ADD: u32 = 25;
    /// Report a PCI device's removal.
    pub const PCI_DEVICE_REMOVE: u32 = 26;
    /// Restore MSI state (segment-aware).
    pub const RESTORE_MSI_EXT: u32 = 27;
    /// Register the "PIRQ needs EOI" bitmap page, EOI does not unmask.
    pub const PIRQ_EOI_GMFN_V2: u32 = 28;
}

/// Argument of `PHYSDEVOP_set_iopl` (`struct physdev_set_iopl`).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct SetIopl {
    /// IN: the IOPL, 0-3.
    pub iopl: u32,
}
const _: () = assert!(core::mem::size_of::<SetIopl>() == 4);

/// Argument of `PHYSDEVOP_set_iobitmap` (`struct physdev_set_iobitmap`).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct SetIobitmap {
    /// IN: guest-virtual address of the bitmap (a clear bit allows the port).
    pub bitmap: u64,
    /// IN: number of ports the bitmap covers.
    pub nr_ports: u32,
    /// Padding.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<SetIobitmap>() == 16);

/// Argument of `PHYSDEVOP_irq_status_query` (`struct physdev_irq_status_query`).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct IrqStatusQuery {
    /// IN: the PIRQ.
    pub irq: u32,
    /// OUT: `XENIRQSTAT_*`.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<IrqStatusQuery>() == 8);

/// `XENIRQSTAT_needs_eoi`: the guest must issue `PHYSDEVOP_eoi`.
pub const XENIRQSTAT_NEEDS_EOI: u32 = 1 << 0;
/// `XENIRQSTAT_shared`: the IRQ is shared with other domains.
pub const XENIRQSTAT_SHARED: u32 = 1 << 1;

/// Argument of `PHYSDEVOP_eoi` (`struct physdev_eoi`).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct Eoi {
    /// IN: the PIRQ.
    pub irq: u32,
}
const _: () = assert!(core::mem::size_of::<Eoi>() == 4);

/// Argument of `PHYSDEVOP_pirq_eoi_gmfn_v1/v2` (`struct physdev_pirq_eoi_gmfn`).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct PirqEoiGmfn {
    /// IN: the guest frame holding the bitmap.
    pub gmfn: u64,
}
const _: () = assert!(core::mem::size_of::<PirqEoiGmfn>() == 8);

/// Argument of `PHYSDEVOP_apic_read/write` (`struct physdev_apic`).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct Apic {
    /// IN: the IO-APIC's physical base address.
    pub apic_physbase: u64,
    /// IN: register index.
    pub reg: u32,
    /// IN (write) or OUT (read): the register value.
    pub value: u32,
}
const _: () = assert!(core::mem::size_of::<Apic>() == 16);

/// `MAP_PIRQ_TYPE_*`.
pub mod map_type {
    /// An MSI (bus/devfn/entry_nr/table_base describe it).
    pub const MSI: u32 = 0;
    /// A GSI (index is the GSI).
    pub const GSI: u32 = 1;
    /// Unknown.
    pub const UNKNOWN: u32 = 2;
    /// An MSI with the PCI segment in bits 16-31 of `bus`.
    pub const MSI_SEG: u32 = 3;
    /// Several MSI vectors (`entry_nr` is the count).
    pub const MULTI_MSI: u32 = 4;
}

/// Argument of `PHYSDEVOP_map_pirq` (`struct physdev_map_pirq`).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct MapPirq {
    /// IN: the domain the PIRQ is for.
    pub domid: u16,
    /// Padding.
    pub _pad: u16,
    /// IN: `MAP_PIRQ_TYPE_*`.
    pub ty: u32,
    /// IN: the GSI (type GSI) or unused.
    pub index: u32,
    /// IN: the wanted PIRQ or -1 for any; OUT: the PIRQ.
    pub pirq: u32,
    /// IN: PCI bus (segment in bits 16-31 for MSI_SEG).
    pub bus: u32,
    /// IN: PCI device and function.
    pub devfn: u32,
    /// IN: MSI-X entry number, or the vector count for MULTI_MSI.
    pub entry_nr: u32,
    /// Padding.
    pub _pad2: u32,
    /// IN: MSI-X table base address.
    pub table_base: u64,
}
const _: () = assert!(core::mem::size_of::<MapPirq>() == 40);
const _: () = assert!(core::mem::offset_of!(MapPirq, table_base) == 32);

/// Argument of `PHYSDEVOP_unmap_pirq` (`struct physdev_unmap_pirq`).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct UnmapPirq {
    /// IN: the domain.
    pub domid: u16,
    /// Padding.
    pub _pad: u16,
    /// IN: the PIRQ.
    pub pirq: u32,
}
const _: () = assert!(core::mem::size_of::<UnmapPirq>() == 8);

/// Argument of `PHYSDEVOP_setup_gsi` (`struct physdev_setup_gsi`).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct SetupGsi {
    /// IN: the GSI.
    pub gsi: u32,
    /// IN: 0 edge, 1 level.
    pub triggering: u8,
    /// IN: 0 active high, 1 active low.
    pub polarity: u8,
    /// Padding.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SetupGsi>() == 8);

/// `struct physdev_pci_device` (remove, restore_msi_ext, prepare/release_msix).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct PciDevice {
    /// IN: PCI segment.
    pub seg: u16,
    /// IN: bus.
    pub bus: u8,
    /// IN: device and function.
    pub devfn: u8,
}
const _: () = assert!(core::mem::size_of::<PciDevice>() == 4);
