//! Grant tables (`public/grant_table.h`): the shared entry formats a granting domain writes,
//! the `grant_table_op` sub-commands a mapping domain issues, and their flags and status codes.
//!
//! Grant references are `grant_ref_t` (`u32`) and mapping handles `grant_handle_t` (`u32`).
//! Per-operation results are `GNTST_*` values in a `status` field (`i16`); the hypercall's
//! own return value only reports whether the batch could be processed.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `grant_table_op` sub-commands (`GNTTABOP_*`).
pub mod cmd {
    /// Map granted frames ([`super::MapGrantRef`]).
    pub const MAP_GRANT_REF: u32 = 0;
    /// Unmap them ([`super::UnmapGrantRef`]).
    pub const UNMAP_GRANT_REF: u32 = 1;
    /// Size the table and get its frames ([`super::SetupTable`]).
    pub const SETUP_TABLE: u32 = 2;
    /// Print a domain's table on the console ([`super::DumpTable`]).
    pub const DUMP_TABLE: u32 = 3;
    /// Give a frame to another domain ([`super::Transfer`]).
    pub const TRANSFER: u32 = 4;
    /// Copy between granted or own frames ([`super::GnttabCopy`]).
    pub const COPY: u32 = 5;
    /// Current and maximum table size ([`super::QuerySize`]).
    pub const QUERY_SIZE: u32 = 6;
    /// Unmap, replacing the mapping with another ([`super::UnmapAndReplace`]).
    pub const UNMAP_AND_REPLACE: u32 = 7;
    /// Choose entry format v1 or v2 ([`super::SetVersion`]).
    pub const SET_VERSION: u32 = 8;
    /// The v2 status frames ([`super::GetStatusFrames`]).
    pub const GET_STATUS_FRAMES: u32 = 9;
    /// The format in use ([`super::GetVersion`]).
    pub const GET_VERSION: u32 = 10;
    /// Swap two entries ([`super::SwapGrantRef`]).
    pub const SWAP_GRANT_REF: u32 = 11;
    /// Clean or invalidate caches of granted memory, Arm ([`super::CacheFlush`]).
    pub const CACHE_FLUSH: u32 = 12;
}

/// Entries reserved for the toolstack (`GNTTAB_NR_RESERVED_ENTRIES`).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// Reserved entry granting the console ring to the console backend.
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// Reserved entry granting the xenstore ring to xenstored.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

/// A v1 grant entry (`struct grant_entry_v1`), 8 bytes, written by the granting domain.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// IN/OUT: [`gtf`] type and flags; the hypervisor sets the reading/writing bits.
    pub flags: u16,
    /// IN: the domain granted access.
    pub domid: u16,
    /// IN: the frame (for a transfer, OUT: the frame received).
    pub frame: u32,
}
const _: () = assert!(core::mem::size_of::<GrantEntryV1>() == 8);
const _: () = assert!(core::mem::offset_of!(GrantEntryV1, flags) == 0);
const _: () = assert!(core::mem::offset_of!(GrantEntryV1, domid) == 2);
const _: () = assert!(core::mem::offset_of!(GrantEntryV1, frame) == 4);

/// The header every v2 entry starts with (`struct grant_entry_header`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GrantEntryHeader {
    /// IN: [`gtf`] type and flags (v2 keeps reading/writing in the status frames).
    pub flags: u16,
    /// IN: the domain granted access.
    pub domid: u16,
}
const _: () = assert!(core::mem::size_of::<GrantEntryHeader>() == 4);
const _: () = assert!(core::mem::offset_of!(GrantEntryHeader, flags) == 0);
const _: () = assert!(core::mem::offset_of!(GrantEntryHeader, domid) == 2);

/// Size of a v2 entry (`union grant_entry_v2`): its views below, padded to 16 bytes.
pub const GRANT_ENTRY_V2_SIZE: usize = 16;

/// A v2 entry granting a whole frame (`grant_entry_v2.full_page`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GrantEntryV2FullPage {
    /// IN: the header.
    pub hdr: GrantEntryHeader,
    /// Padding.
    pub _pad0: u32,
    /// IN: the frame.
    pub frame: u64,
}
const _: () = assert!(core::mem::size_of::<GrantEntryV2FullPage>() == 16);
const _: () = assert!(core::mem::offset_of!(GrantEntryV2FullPage, hdr) == 0);
const _: () = assert!(core::mem::offset_of!(GrantEntryV2FullPage, frame) == 8);

/// A v2 entry granting part of a frame (`grant_entry_v2.sub_page`, [`gtf::SUB_PAGE`]).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GrantEntryV2SubPage {
    /// IN: the header.
    pub hdr: GrantEntryHeader,
    /// IN: first byte granted.
    pub page_off: u16,
    /// IN: bytes granted.
    pub length: u16,
    /// IN: the frame.
    pub frame: u64,
}
const _: () = assert!(core::mem::size_of::<GrantEntryV2SubPage>() == 16);
const _: () = assert!(core::mem::offset_of!(GrantEntryV2SubPage, hdr) == 0);
const _: () = assert!(core::mem::offset_of!(GrantEntryV2SubPage, page_off) == 4);
const _: () = assert!(core::mem::offset_of!(GrantEntryV2SubPage, length) == 6);
const _: () = assert!(core::mem::offset_of!(GrantEntryV2SubPage, frame) == 8);

/// A v2 entry passing on another domain's grant (`grant_entry_v2.transitive`); 12 of the
/// entry's 16 bytes.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GrantEntryV2Transitive {
    /// IN: the header.
    pub hdr: GrantEntryHeader,
    /// IN: the domain whose grant is passed on.
    pub trans_domid: u16,
    /// Padding.
    pub _pad0: u16,
    /// IN: that domain's grant reference.
    pub gref: u32,
}
const _: () = assert!(core::mem::size_of::<GrantEntryV2Transitive>() == 12);
const _: () = assert!(core::mem::offset_of!(GrantEntryV2Transitive, hdr) == 0);
const _: () = assert!(core::mem::offset_of!(GrantEntryV2Transitive, trans_domid) == 4);
const _: () = assert!(core::mem::offset_of!(GrantEntryV2Transitive, gref) == 8);

/// A v2 status entry (`grant_status_t`): the [`gtf::READING`] and [`gtf::WRITING`] bits, kept
/// by the hypervisor in the status frames.
pub type GrantStatus = u16;

/// `GTF_*`: the `flags` of a grant entry. Bits 0-1 are the type.
pub mod gtf {
    /// Type: not a grant.
    pub const INVALID: u16 = 0;
    /// Type: the domain may map or copy the frame.
    pub const PERMIT_ACCESS: u16 = 1;
    /// Type: the domain may transfer a frame to this entry.
    pub const ACCEPT_TRANSFER: u16 = 2;
    /// Type: a transitive grant (v2).
    pub const TRANSITIVE: u16 = 3;
    /// The type field.
    pub const TYPE_MASK: u16 = 3;
    /// Access is read-only.
    pub const READONLY: u16 = 1 << 2;
    /// Set by the hypervisor while the frame is mapped or copied from.
    pub const READING: u16 = 1 << 3;
    /// Set by the hypervisor while the frame is mapped writable or copied to.
    pub const WRITING: u16 = 1 << 4;
    /// Map write-through (cache attribute, PV).
    pub const PWT: u16 = 1 << 5;
    /// Map cache-disabled.
    pub const PCD: u16 = 1 << 6;
    /// Map with the PAT bit.
    pub const PAT: u16 = 1 << 7;
    /// A sub-page grant (v2).
    pub const SUB_PAGE: u16 = 1 << 8;
    /// Transfer entries: the hypervisor has started the transfer.
    pub const TRANSFER_COMMITTED: u16 = 1 << 2;
    /// Transfer entries: the frame has arrived.
    pub const TRANSFER_COMPLETED: u16 = 1 << 3;
}

/// `GNTMAP_*`: the `flags` of [`MapGrantRef`].
pub mod gntmap {
    /// Map for device DMA; `dev_bus_addr` receives the bus address.
    pub const DEVICE_MAP: u32 = 1 << 0;
    /// Map at `host_addr` in the caller's address space.
    pub const HOST_MAP: u32 = 1 << 1;
    /// Map read-only.
    pub const READONLY: u32 = 1 << 2;
    /// The mapping is reachable from guest user mode.
    pub const APPLICATION_MAP: u32 = 1 << 3;
    /// `host_addr` is the machine address of the PTE to write, not a virtual address.
    pub const CONTAINS_PTE: u32 = 1 << 4;
    /// Bits the guest may use for itself.
    pub const GUEST_AVAIL_MASK: u32 = 0xffff_0000;
}

/// `GNTST_*`: per-operation results, in the `status` fields.
pub mod gntst {
    /// Done.
    pub const OKAY: i16 = 0;
    /// Any other error.
    pub const GENERAL_ERROR: i16 = -1;
    /// Unknown domain.
    pub const BAD_DOMAIN: i16 = -2;
    /// Unknown or unsuitable grant reference.
    pub const BAD_GNTREF: i16 = -3;
    /// Unknown or unsuitable mapping handle.
    pub const BAD_HANDLE: i16 = -4;
    /// Unsuitable virtual address.
    pub const BAD_VIRT_ADDR: i16 = -5;
    /// Unsuitable device address.
    pub const BAD_DEV_ADDR: i16 = -6;
    /// No room in the IOMMU.
    pub const NO_DEVICE_SPACE: i16 = -7;
    /// Not allowed.
    pub const PERMISSION_DENIED: i16 = -8;
    /// Unsuitable frame.
    pub const BAD_PAGE: i16 = -9;
    /// A copy segment crosses a page boundary.
    pub const BAD_COPY_ARG: i16 = -10;
    /// The frame's address is too wide for the receiver.
    pub const ADDRESS_TOO_BIG: i16 = -11;
    /// Not done; try again.
    pub const EAGAIN: i16 = -12;
    /// No room (handles, maptrack).
    pub const NO_SPACE: i16 = -13;
}

/// Argument of `GNTTABOP_map_grant_ref` (`struct gnttab_map_grant_ref`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MapGrantRef {
    /// IN: where to map (virtual address, or PTE machine address with
    /// [`gntmap::CONTAINS_PTE`]).
    pub host_addr: u64,
    /// IN: [`gntmap`].
    pub flags: u32,
    /// IN: the grant reference.
    pub r#ref: u32,
    /// IN: the granting domain.
    pub dom: u16,
    /// OUT: [`gntst`].
    pub status: i16,
    /// OUT: the handle for unmapping.
    pub handle: u32,
    /// OUT: the bus address ([`gntmap::DEVICE_MAP`]).
    pub dev_bus_addr: u64,
}
const _: () = assert!(core::mem::size_of::<MapGrantRef>() == 32);
const _: () = assert!(core::mem::offset_of!(MapGrantRef, host_addr) == 0);
const _: () = assert!(core::mem::offset_of!(MapGrantRef, flags) == 8);
const _: () = assert!(core::mem::offset_of!(MapGrantRef, dom) == 16);
const _: () = assert!(core::mem::offset_of!(MapGrantRef, status) == 18);
const _: () = assert!(core::mem::offset_of!(MapGrantRef, handle) == 20);
const _: () = assert!(core::mem::offset_of!(MapGrantRef, dev_bus_addr) == 24);

/// Argument of `GNTTABOP_unmap_grant_ref` (`struct gnttab_unmap_grant_ref`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct UnmapGrantRef {
    /// IN: the address mapped (0: none).
    pub host_addr: u64,
    /// IN: the bus address mapped (0: none).
    pub dev_bus_addr: u64,
    /// IN: the handle from the map.
    pub handle: u32,
    /// OUT: [`gntst`].
    pub status: i16,
    /// Padding.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<UnmapGrantRef>() == 24);
const _: () = assert!(core::mem::offset_of!(UnmapGrantRef, host_addr) == 0);
const _: () = assert!(core::mem::offset_of!(UnmapGrantRef, dev_bus_addr) == 8);
const _: () = assert!(core::mem::offset_of!(UnmapGrantRef, handle) == 16);
const _: () = assert!(core::mem::offset_of!(UnmapGrantRef, status) == 20);

/// Argument of `GNTTABOP_setup_table` (`struct gnttab_setup_table`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SetupTable {
    /// IN: the domain.
    pub dom: u16,
    /// Padding.
    pub _pad0: u16,
    /// IN: frames wanted.
    pub nr_frames: u32,
    /// OUT: [`gntst`].
    pub status: i16,
    /// Padding.
    pub _pad1: [u16; 3],
    /// IN: guest handle of the `xen_pfn_t` list receiving the table's frames.
    pub frame_list: u64,
}
const _: () = assert!(core::mem::size_of::<SetupTable>() == 24);
const _: () = assert!(core::mem::offset_of!(SetupTable, dom) == 0);
const _: () = assert!(core::mem::offset_of!(SetupTable, nr_frames) == 4);
const _: () = assert!(core::mem::offset_of!(SetupTable, status) == 8);
const _: () = assert!(core::mem::offset_of!(SetupTable, frame_list) == 16);

/// Argument of `GNTTABOP_dump_table` (`struct gnttab_dump_table`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DumpTable {
    /// IN: the domain.
    pub dom: u16,
    /// OUT: [`gntst`].
    pub status: i16,
}
const _: () = assert!(core::mem::size_of::<DumpTable>() == 4);
const _: () = assert!(core::mem::offset_of!(DumpTable, dom) == 0);
const _: () = assert!(core::mem::offset_of!(DumpTable, status) == 2);

/// Argument of `GNTTABOP_transfer` (`struct gnttab_transfer`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Transfer {
    /// IN: the frame given away.
    pub mfn: u64,
    /// IN: the receiving domain.
    pub domid: u16,
    /// Padding.
    pub _pad0: u16,
    /// IN: its [`gtf::ACCEPT_TRANSFER`] entry.
    pub r#ref: u32,
    /// OUT: [`gntst`].
    pub status: i16,
    /// Padding.
    pub _pad1: [u16; 3],
}
const _: () = assert!(core::mem::size_of::<Transfer>() == 24);
const _: () = assert!(core::mem::offset_of!(Transfer, mfn) == 0);
const _: () = assert!(core::mem::offset_of!(Transfer, domid) == 8);
const _: () = assert!(core::mem::offset_of!(Transfer, status) == 16);

/// `GNTCOPY_*`: the `flags` of [`GnttabCopy`].
pub mod gntcopy {
    /// The source is a grant reference, not a frame of the caller.
    pub const SOURCE_GREF: u16 = 1 << 0;
    /// The destination is a grant reference.
    pub const DEST_GREF: u16 = 1 << 1;
}

/// One side of a [`GnttabCopy`] (`struct gnttab_copy_ptr`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CopyPtr {
    /// IN: the union `u`: a grant reference (its low 32 bits, with the `*_GREF` flag) or a
    /// frame of the caller (`xen_pfn_t`).
    pub u: u64,
    /// IN: the domain owning the grant or frame.
    pub domid: u16,
    /// IN: first byte in the frame.
    pub offset: u16,
    /// Padding.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<CopyPtr>() == 16);
const _: () = assert!(core::mem::offset_of!(CopyPtr, u) == 0);
const _: () = assert!(core::mem::offset_of!(CopyPtr, domid) == 8);
const _: () = assert!(core::mem::offset_of!(CopyPtr, offset) == 10);

/// Argument of `GNTTABOP_copy` (`struct gnttab_copy`; prefixed to stay clear of `Copy`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GnttabCopy {
    /// IN: where from.
    pub source: CopyPtr,
    /// IN: where to.
    pub dest: CopyPtr,
    /// IN: bytes to copy (neither side may cross its page).
    pub len: u16,
    /// IN: [`gntcopy`].
    pub flags: u16,
    /// OUT: [`gntst`].
    pub status: i16,
    /// Padding.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<GnttabCopy>() == 40);
const _: () = assert!(core::mem::offset_of!(GnttabCopy, source) == 0);
const _: () = assert!(core::mem::offset_of!(GnttabCopy, dest) == 16);
const _: () = assert!(core::mem::offset_of!(GnttabCopy, len) == 32);
const _: () = assert!(core::mem::offset_of!(GnttabCopy, flags) == 34);
const _: () = assert!(core::mem::offset_of!(GnttabCopy, status) == 36);

/// Argument of `GNTTABOP_query_size` (`struct gnttab_query_size`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct QuerySize {
    /// IN: the domain.
    pub dom: u16,
    /// Padding.
    pub _pad0: u16,
    /// OUT: frames in the table.
    pub nr_frames: u32,
    /// OUT: the most it may have.
    pub max_nr_frames: u32,
    /// OUT: [`gntst`].
    pub status: i16,
    /// Padding.
    pub _pad1: u16,
}
const _: () = assert!(core::mem::size_of::<QuerySize>() == 16);
const _: () = assert!(core::mem::offset_of!(QuerySize, dom) == 0);
const _: () = assert!(core::mem::offset_of!(QuerySize, nr_frames) == 4);
const _: () = assert!(core::mem::offset_of!(QuerySize, max_nr_frames) == 8);
const _: () = assert!(core::mem::offset_of!(QuerySize, status) == 12);

/// Argument of `GNTTABOP_unmap_and_replace` (`struct gnttab_unmap_and_replace`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct UnmapAndReplace {
    /// IN: the address mapped.
    pub host_addr: u64,
    /// IN: an address whose mapping replaces it (and is cleared).
    pub new_addr: u64,
    /// IN: the handle from the map.
    pub handle: u32,
    /// OUT: [`gntst`].
    pub status: i16,
    /// Padding.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<UnmapAndReplace>() == 24);
const _: () = assert!(core::mem::offset_of!(UnmapAndReplace, host_addr) == 0);
const _: () = assert!(core::mem::offset_of!(UnmapAndReplace, new_addr) == 8);
const _: () = assert!(core::mem::offset_of!(UnmapAndReplace, handle) == 16);
const _: () = assert!(core::mem::offset_of!(UnmapAndReplace, status) == 20);

/// Argument of `GNTTABOP_set_version` (`struct gnttab_set_version`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SetVersion {
    /// IN: 1 or 2; OUT: the version in use.
    pub version: u32,
}
const _: () = assert!(core::mem::size_of::<SetVersion>() == 4);
const _: () = assert!(core::mem::offset_of!(SetVersion, version) == 0);

/// Argument of `GNTTABOP_get_status_frames` (`struct gnttab_get_status_frames`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GetStatusFrames {
    /// IN: frames wanted.
    pub nr_frames: u32,
    /// IN: the domain.
    pub dom: u16,
    /// OUT: [`gntst`].
    pub status: i16,
    /// IN: guest handle of the `u64` list receiving the frames.
    pub frame_list: u64,
}
const _: () = assert!(core::mem::size_of::<GetStatusFrames>() == 16);
const _: () = assert!(core::mem::offset_of!(GetStatusFrames, nr_frames) == 0);
const _: () = assert!(core::mem::offset_of!(GetStatusFrames, dom) == 4);
const _: () = assert!(core::mem::offset_of!(GetStatusFrames, status) == 6);
const _: () = assert!(core::mem::offset_of!(GetStatusFrames, frame_list) == 8);

/// Argument of `GNTTABOP_get_version` (`struct gnttab_get_version`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GetVersion {
    /// IN: the domain.
    pub dom: u16,
    /// Padding.
    pub pad: u16,
    /// OUT: its version.
    pub version: u32,
}
const _: () = assert!(core::mem::size_of::<GetVersion>() == 8);
const _: () = assert!(core::mem::offset_of!(GetVersion, dom) == 0);
const _: () = assert!(core::mem::offset_of!(GetVersion, pad) == 2);
const _: () = assert!(core::mem::offset_of!(GetVersion, version) == 4);

/// Argument of `GNTTABOP_swap_grant_ref` (`struct gnttab_swap_grant_ref`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SwapGrantRef {
    /// IN: one entry.
    pub ref_a: u32,
    /// IN: the other.
    pub ref_b: u32,
    /// OUT: [`gntst`].
    pub status: i16,
    /// Padding.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SwapGrantRef>() == 12);
const _: () = assert!(core::mem::offset_of!(SwapGrantRef, ref_a) == 0);
const _: () = assert!(core::mem::offset_of!(SwapGrantRef, ref_b) == 4);
const _: () = assert!(core::mem::offset_of!(SwapGrantRef, status) == 8);

/// `GNTTAB_CACHE_*`: the `op` of [`CacheFlush`].
pub mod cache {
    /// Write back.
    pub const CLEAN: u32 = 1 << 0;
    /// Invalidate.
    pub const INVAL: u32 = 1 << 1;
    /// `a` is a grant reference, not a bus address.
    pub const SOURCE_GREF: u32 = 1 << 31;
}

/// Argument of `GNTTABOP_cache_flush` (`struct gnttab_cache_flush`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CacheFlush {
    /// IN: the union `a`: a bus address, or a grant reference (low 32 bits) with
    /// [`cache::SOURCE_GREF`].
    pub a: u64,
    /// IN: first byte in the grant.
    pub offset: u16,
    /// IN: bytes.
    pub length: u16,
    /// IN: [`cache`].
    pub op: u32,
}
const _: () = assert!(core::mem::size_of::<CacheFlush>() == 16);
const _: () = assert!(core::mem::offset_of!(CacheFlush, a) == 0);
const _: () = assert!(core::mem::offset_of!(CacheFlush, offset) == 8);
const _: () = assert!(core::mem::offset_of!(CacheFlush, length) == 10);
const _: () = assert!(core::mem::offset_of!(CacheFlush, op) == 12);
