//! `memory_op` (`public/memory.h`): reservations (ballooning), exchanges, the machine-to-phys
//! table's place, memory maps, physmap changes and resource mapping.
//!
//! Frame lists are guest handles: guest-virtual addresses of arrays of `xen_pfn_t` (`u64`).
//! For a PV guest the "GPFN" of these calls is a pseudo-physical frame and the list entries
//! given back are MFNs.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `memory_op` commands (`XENMEM_*`), in the low bits of `cmd` (Xen keeps a preempted
/// reservation call's progress in the bits above, its own business).
pub mod cmd {
    /// Allocate extents to the domain ([`super::MemoryReservation`]).
    pub const INCREASE_RESERVATION: u32 = 0;
    /// Give extents back ([`super::MemoryReservation`]).
    pub const DECREASE_RESERVATION: u32 = 1;
    /// Highest machine frame number in the host.
    pub const MAXIMUM_RAM_PAGE: u32 = 2;
    /// A domain's current page count ([`super::MemoryDomain`]).
    pub const CURRENT_RESERVATION: u32 = 3;
    /// A domain's page limit ([`super::MemoryDomain`]).
    pub const MAXIMUM_RESERVATION: u32 = 4;
    /// Where the M2P table's 2 MiB chunks are ([`super::MachphysMfnList`]).
    pub const MACHPHYS_MFN_LIST: u32 = 5;
    /// Allocate extents at given pseudo-physical frames ([`super::MemoryReservation`]).
    pub const POPULATE_PHYSMAP: u32 = 6;
    /// Map a frame of a special space into the physmap ([`super::AddToPhysmap`]).
    pub const ADD_TO_PHYSMAP: u32 = 7;
    /// The domain's pseudo-physical memory map ([`super::MemoryMap`]).
    pub const MEMORY_MAP: u32 = 9;
    /// The host's memory map, privileged ([`super::MemoryMap`]).
    pub const MACHINE_MEMORY_MAP: u32 = 10;
    /// Trade extents for others of another order or address width ([`super::MemoryExchange`]).
    pub const EXCHANGE: u32 = 11;
    /// Where the read-only M2P is mapped ([`super::MachphysMapping`]).
    pub const MACHPHYS_MAPPING: u32 = 12;
    /// Set another domain's memory map, toolstack ([`super::ForeignMemoryMap`]).
    pub const SET_MEMORY_MAP: u32 = 13;
    /// Highest pseudo-physical frame of a domain ([`super::MemoryDomain`]).
    pub const MAXIMUM_GPFN: u32 = 14;
    /// Unmap a frame from the physmap ([`super::RemoveFromPhysmap`]).
    pub const REMOVE_FROM_PHYSMAP: u32 = 15;
    /// Set a populate-on-demand target ([`super::PodTarget`]).
    pub const SET_POD_TARGET: u32 = 16;
    /// Read it ([`super::PodTarget`]).
    pub const GET_POD_TARGET: u32 = 17;
    /// Pages freed by sharing (toolstack).
    pub const GET_SHARING_FREED_PAGES: u32 = 18;
    /// Pages shared (toolstack).
    pub const GET_SHARING_SHARED_PAGES: u32 = 19;
    /// Memory paging (toolstack).
    pub const PAGING_OP: u32 = 20;
    /// Memory access permissions (toolstack).
    pub const ACCESS_OP: u32 = 21;
    /// Memory sharing (toolstack).
    pub const SHARING_OP: u32 = 22;
    /// Map several frames of a special space ([`super::AddToPhysmapBatch`]).
    pub const ADD_TO_PHYSMAP_BATCH: u32 = 23;
    /// Reserve pages for a domain being built ([`super::MemoryReservation`], `nr_extents`).
    pub const CLAIM_PAGES: u32 = 24;
    /// The 32-bit M2P's chunks, as [`MACHPHYS_MFN_LIST`].
    pub const MACHPHYS_COMPAT_MFN_LIST: u32 = 25;
    /// A domain's virtual NUMA topology.
    pub const GET_VNUMAINFO: u32 = 26;
    /// Device-reserved memory ranges (toolstack).
    pub const RESERVED_DEVICE_MEMORY_MAP: u32 = 27;
    /// Map a domain's resource, e.g. its grant table ([`super::MemAcquireResource`]).
    pub const ACQUIRE_RESOURCE: u32 = 28;
}

/// `mem_flags` of [`MemoryReservation`] (`XENMEMF_*`). Bits 0-7 are the address width the
/// extents must fit (0: any); bits 8-15 are a NUMA node plus one (0: any node).
pub mod memf {
    /// The address-width field (`XENMEMF_address_bits`, `XENMEMF_get_address_bits`).
    pub const ADDRESS_BITS_MASK: u32 = 0xff;
    /// Where the node field starts (`XENMEMF_node`: `(node + 1) << 8`).
    pub const NODE_SHIFT: u32 = 8;
    /// The node field once shifted down (it holds the node plus one).
    pub const NODE_MASK: u32 = 0xff;
    /// Populate-on-demand: leave the extents unbacked until touched (HVM).
    pub const POPULATE_ON_DEMAND: u32 = 1 << 16;
    /// Fail rather than fall back to another node.
    pub const EXACT_NODE_REQUEST: u32 = 1 << 17;
    /// The node is a virtual node of the domain.
    pub const VNODE: u32 = 1 << 18;
}

/// Argument of the reservation calls and `XENMEM_claim_pages` (`struct xen_memory_reservation`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemoryReservation {
    /// IN/OUT: guest handle of the extent list: MFNs to release (decrease), pseudo-physical
    /// frames to fill (populate; overwritten with MFNs for PV), or 0 / MFNs out (increase).
    pub extent_start: u64,
    /// IN: number of extents.
    pub nr_extents: u64,
    /// IN: log2 of the pages per extent.
    pub extent_order: u32,
    /// IN: [`memf`] (address width, node).
    pub mem_flags: u32,
    /// IN: the domain (`DOMID_SELF` or, privileged, another).
    pub domid: u16,
    /// Padding.
    pub _pad: [u16; 3],
}
const _: () = assert!(core::mem::size_of::<MemoryReservation>() == 32);
const _: () = assert!(core::mem::offset_of!(MemoryReservation, extent_start) == 0);
const _: () = assert!(core::mem::offset_of!(MemoryReservation, nr_extents) == 8);
const _: () = assert!(core::mem::offset_of!(MemoryReservation, extent_order) == 16);
const _: () = assert!(core::mem::offset_of!(MemoryReservation, mem_flags) == 20);
const _: () = assert!(core::mem::offset_of!(MemoryReservation, domid) == 24);

/// Argument of `XENMEM_exchange` (`struct xen_memory_exchange`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemoryExchange {
    /// IN: the extents given up.
    pub r#in: MemoryReservation,
    /// IN/OUT: the extents wanted; for PV the list holds their pseudo-physical frames and
    /// receives their MFNs.
    pub out: MemoryReservation,
    /// IN/OUT: input extents already exchanged (0 on first call; where a retry resumes).
    pub nr_exchanged: u64,
}
const _: () = assert!(core::mem::size_of::<MemoryExchange>() == 72);
const _: () = assert!(core::mem::offset_of!(MemoryExchange, out) == 32);
const _: () = assert!(core::mem::offset_of!(MemoryExchange, nr_exchanged) == 64);

/// Argument of `XENMEM_current_reservation`, `maximum_reservation`, `maximum_gpfn`
/// (`struct xen_memory_domain`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemoryDomain {
    /// IN: the domain.
    pub domid: u16,
}
const _: () = assert!(core::mem::size_of::<MemoryDomain>() == 2);
const _: () = assert!(core::mem::offset_of!(MemoryDomain, domid) == 0);

/// Argument of `XENMEM_machphys_mfn_list` (`struct xen_machphys_mfn_list`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MachphysMfnList {
    /// IN: room in the list.
    pub max_extents: u32,
    /// Padding.
    pub _pad0: u32,
    /// IN: guest handle of the list; receives the first MFN of each 2 MiB M2P chunk.
    pub extent_start: u64,
    /// OUT: entries written.
    pub nr_extents: u32,
    /// Padding.
    pub _pad1: u32,
}
const _: () = assert!(core::mem::size_of::<MachphysMfnList>() == 24);
const _: () = assert!(core::mem::offset_of!(MachphysMfnList, max_extents) == 0);
const _: () = assert!(core::mem::offset_of!(MachphysMfnList, extent_start) == 8);
const _: () = assert!(core::mem::offset_of!(MachphysMfnList, nr_extents) == 16);

/// Argument of `XENMEM_machphys_mapping` (`struct xen_machphys_mapping`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MachphysMapping {
    /// OUT: first virtual address of the read-only M2P.
    pub v_start: u64,
    /// OUT: end of its mapping.
    pub v_end: u64,
    /// OUT: largest MFN it can translate.
    pub max_mfn: u64,
}
const _: () = assert!(core::mem::size_of::<MachphysMapping>() == 24);
const _: () = assert!(core::mem::offset_of!(MachphysMapping, v_start) == 0);
const _: () = assert!(core::mem::offset_of!(MachphysMapping, v_end) == 8);
const _: () = assert!(core::mem::offset_of!(MachphysMapping, max_mfn) == 16);

/// `XENMAPSPACE_*`: what `idx` of [`AddToPhysmap`] names.
pub mod mapspace {
    /// The shared-info page.
    pub const SHARED_INFO: u32 = 0;
    /// A grant-table frame ([`super::XENMAPIDX_GRANT_TABLE_STATUS`] for status frames).
    pub const GRANT_TABLE: u32 = 1;
    /// One of the domain's own frames.
    pub const GMFN: u32 = 2;
    /// A range of its frames (`size` of them; not for the batch call).
    pub const GMFN_RANGE: u32 = 3;
    /// A frame of another domain (batch call, `foreign_domid`).
    pub const GMFN_FOREIGN: u32 = 4;
    /// Device MMIO (Arm only).
    pub const DEV_MMIO: u32 = 5;
}

/// `XENMAPIDX_grant_table_status`: with [`mapspace::GRANT_TABLE`], `idx` names a status frame.
pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;

/// Argument of `XENMEM_add_to_physmap` (`struct xen_add_to_physmap`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AddToPhysmap {
    /// IN: the domain.
    pub domid: u16,
    /// IN: frames in the range ([`mapspace::GMFN_RANGE`] only).
    pub size: u16,
    /// IN: [`mapspace`].
    pub space: u32,
    /// IN: index in the space.
    pub idx: u64,
    /// IN: where in the physmap to map it.
    pub gpfn: u64,
}
const _: () = assert!(core::mem::size_of::<AddToPhysmap>() == 24);
const _: () = assert!(core::mem::offset_of!(AddToPhysmap, domid) == 0);
const _: () = assert!(core::mem::offset_of!(AddToPhysmap, size) == 2);
const _: () = assert!(core::mem::offset_of!(AddToPhysmap, space) == 4);
const _: () = assert!(core::mem::offset_of!(AddToPhysmap, idx) == 8);
const _: () = assert!(core::mem::offset_of!(AddToPhysmap, gpfn) == 16);

/// Argument of `XENMEM_add_to_physmap_batch` (`struct xen_add_to_physmap_batch`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AddToPhysmapBatch {
    /// IN: the domain.
    pub domid: u16,
    /// IN: [`mapspace`].
    pub space: u16,
    /// IN: entries in the three lists.
    pub size: u16,
    /// IN: the owner of the frames for [`mapspace::GMFN_FOREIGN`], else 0 (union `u`).
    pub foreign_domid: u16,
    /// IN: guest handle of the `xen_ulong_t` indexes.
    pub idxs: u64,
    /// IN: guest handle of the `xen_pfn_t` targets.
    pub gpfns: u64,
    /// OUT: guest handle of the `int` per-entry results.
    pub errs: u64,
}
const _: () = assert!(core::mem::size_of::<AddToPhysmapBatch>() == 32);
const _: () = assert!(core::mem::offset_of!(AddToPhysmapBatch, domid) == 0);
const _: () = assert!(core::mem::offset_of!(AddToPhysmapBatch, space) == 2);
const _: () = assert!(core::mem::offset_of!(AddToPhysmapBatch, size) == 4);
const _: () = assert!(core::mem::offset_of!(AddToPhysmapBatch, foreign_domid) == 6);
const _: () = assert!(core::mem::offset_of!(AddToPhysmapBatch, idxs) == 8);
const _: () = assert!(core::mem::offset_of!(AddToPhysmapBatch, gpfns) == 16);
const _: () = assert!(core::mem::offset_of!(AddToPhysmapBatch, errs) == 24);

/// Argument of `XENMEM_remove_from_physmap` (`struct xen_remove_from_physmap`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RemoveFromPhysmap {
    /// IN: the domain.
    pub domid: u16,
    /// Padding.
    pub _pad: [u16; 3],
    /// IN: the frame to unmap.
    pub gpfn: u64,
}
const _: () = assert!(core::mem::size_of::<RemoveFromPhysmap>() == 16);
const _: () = assert!(core::mem::offset_of!(RemoveFromPhysmap, domid) == 0);
const _: () = assert!(core::mem::offset_of!(RemoveFromPhysmap, gpfn) == 8);

/// Argument of `XENMEM_memory_map` and `XENMEM_machine_memory_map` (`struct xen_memory_map`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemoryMap {
    /// IN: room in the buffer, in entries; OUT: entries written.
    pub nr_entries: u32,
    /// Padding.
    pub _pad: u32,
    /// IN: guest handle of an array of [`E820Entry`].
    pub buffer: u64,
}
const _: () = assert!(core::mem::size_of::<MemoryMap>() == 16);
const _: () = assert!(core::mem::offset_of!(MemoryMap, nr_entries) == 0);
const _: () = assert!(core::mem::offset_of!(MemoryMap, buffer) == 8);

/// Argument of `XENMEM_set_memory_map` (`struct xen_foreign_memory_map`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ForeignMemoryMap {
    /// IN: the domain.
    pub domid: u16,
    /// Padding.
    pub _pad: [u16; 3],
    /// IN: its map.
    pub map: MemoryMap,
}
const _: () = assert!(core::mem::size_of::<ForeignMemoryMap>() == 24);
const _: () = assert!(core::mem::offset_of!(ForeignMemoryMap, domid) == 0);
const _: () = assert!(core::mem::offset_of!(ForeignMemoryMap, map) == 8);

/// One entry of a memory map buffer: the BIOS E820 layout, packed to 20 bytes.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_*` type (1 RAM, 2 reserved, 3 ACPI, 4 NVS, 5 unusable).
    pub r#type: u32,
}
const _: () = assert!(core::mem::size_of::<E820Entry>() == 20);

/// Argument of `XENMEM_set_pod_target` and `XENMEM_get_pod_target` (`struct xen_pod_target`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PodTarget {
    /// IN: the target (set).
    pub target_pages: u64,
    /// OUT: pages the domain holds.
    pub tot_pages: u64,
    /// OUT: pages in its populate-on-demand cache.
    pub pod_cache_pages: u64,
    /// OUT: populate-on-demand entries outstanding.
    pub pod_entries: u64,
    /// IN: the domain.
    pub domid: u16,
    /// Padding.
    pub _pad: [u16; 3],
}
const _: () = assert!(core::mem::size_of::<PodTarget>() == 40);
const _: () = assert!(core::mem::offset_of!(PodTarget, target_pages) == 0);
const _: () = assert!(core::mem::offset_of!(PodTarget, tot_pages) == 8);
const _: () = assert!(core::mem::offset_of!(PodTarget, pod_cache_pages) == 16);
const _: () = assert!(core::mem::offset_of!(PodTarget, pod_entries) == 24);
const _: () = assert!(core::mem::offset_of!(PodTarget, domid) == 32);

/// `XENMEM_resource_*`: the resource types of [`MemAcquireResource`].
pub mod resource {
    /// An ioreq server's pages (HVM device models).
    pub const IOREQ_SERVER: u16 = 0;
    /// The grant table's frames.
    pub const GRANT_TABLE: u16 = 1;
    /// A vCPU's processor-trace buffer.
    pub const VMTRACE_BUF: u16 = 2;
    /// Grant table id: the shared entries.
    pub const GRANT_TABLE_ID_SHARED: u32 = 0;
    /// Grant table id: the v2 status frames.
    pub const GRANT_TABLE_ID_STATUS: u32 = 1;
}

/// Argument of `XENMEM_acquire_resource` (`struct xen_mem_acquire_resource`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemAcquireResource {
    /// IN: the domain owning the resource.
    pub domid: u16,
    /// IN: [`resource`] type.
    pub r#type: u16,
    /// IN: which instance of the type.
    pub id: u32,
    /// IN: frames wanted (0 with a null list: OUT the resource's size).
    pub nr_frames: u32,
    /// Padding (must be zero).
    pub pad: u32,
    /// IN: first frame of the resource wanted.
    pub frame: u64,
    /// IN/OUT: guest handle of the `xen_pfn_t` list (PV: receives MFNs).
    pub frame_list: u64,
}
const _: () = assert!(core::mem::size_of::<MemAcquireResource>() == 32);
const _: () = assert!(core::mem::offset_of!(MemAcquireResource, domid) == 0);
const _: () = assert!(core::mem::offset_of!(MemAcquireResource, id) == 4);
const _: () = assert!(core::mem::offset_of!(MemAcquireResource, nr_frames) == 8);
const _: () = assert!(core::mem::offset_of!(MemAcquireResource, pad) == 12);
const _: () = assert!(core::mem::offset_of!(MemAcquireResource, frame) == 16);
const _: () = assert!(core::mem::offset_of!(MemAcquireResource, frame_list) == 24);

/// Argument of `XENMEM_get_vnumainfo` (`struct xen_vnuma_topology_info`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VnumaTopologyInfo {
    /// IN: the domain.
    pub domid: u16,
    /// Must be 0.
    pub pad: u16,
    /// IN/OUT: virtual nodes.
    pub nr_vnodes: u32,
    /// IN/OUT: vCPUs.
    pub nr_vcpus: u32,
    /// IN/OUT: memory ranges.
    pub nr_vmemranges: u32,
    /// OUT: guest handle of the distance table.
    pub vdistance: u64,
    /// OUT: guest handle of the vCPU-to-node map.
    pub vcpu_to_vnode: u64,
    /// OUT: guest handle of the memory ranges.
    pub vmemrange: u64,
}
const _: () = assert!(core::mem::size_of::<VnumaTopologyInfo>() == 40);
const _: () = assert!(core::mem::offset_of!(VnumaTopologyInfo, vdistance) == 16);
