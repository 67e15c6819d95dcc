//! The PV MMU hypercalls' structures and constants (`public/xen.h`: `mmu_update`,
//! `mmuext_op`, `update_va_mapping`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One `mmu_update` request (`struct mmu_update`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MmuUpdate {
    /// IN: machine address of the entry, with the sub-command in bits 0-2.
    pub ptr: u64,
    /// IN: the new value.
    pub val: u64,
}
const _: () = assert!(core::mem::size_of::<MmuUpdate>() == 16);

/// `mmu_update` sub-commands (`ptr & 7`).
pub mod update {
    /// Checked page-table update.
    pub const NORMAL_PT_UPDATE: u64 = 0;
    /// M2P update: `m2p[ptr >> 12] = val`.
    pub const MACHPHYS_UPDATE: u64 = 1;
    /// As NORMAL, keeping the entry's Accessed/Dirty bits.
    pub const PT_UPDATE_PRESERVE_AD: u64 = 2;
    /// As NORMAL (no translation for PV domains).
    pub const PT_UPDATE_NO_TRANSLATE: u64 = 3;
}

/// Set in `count` by a continuation.
pub const MMU_UPDATE_PREEMPTED: u32 = 1 << 31;

/// One `mmuext_op` (`struct mmuext_op`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MmuextOp {
    /// IN: `MMUEXT_*`.
    pub cmd: u32,
    /// Padding.
    pub _pad: u32,
    /// IN: MFN or linear address.
    pub arg1: u64,
    /// IN: entry count, vCPU mask pointer, or source MFN.
    pub arg2: u64,
}
const _: () = assert!(core::mem::size_of::<MmuextOp>() == 24);

/// `mmuext_op` commands.
#[allow(missing_docs)] // The names mirror public/xen.h one to one.
pub mod ext {
    pub const PIN_L1_TABLE: u32 = 0;
    pub const PIN_L2_TABLE: u32 = 1;
    pub const PIN_L3_TABLE: u32 = 2;
    pub const PIN_L4_TABLE: u32 = 3;
    pub const UNPIN_TABLE: u32 = 4;
    pub const NEW_BASEPTR: u32 = 5;
    pub const TLB_FLUSH_LOCAL: u32 = 6;
    pub const INVLPG_LOCAL: u32 = 7;
    pub const TLB_FLUSH_MULTI: u32 = 8;
    pub const INVLPG_MULTI: u32 = 9;
    pub const TLB_FLUSH_ALL: u32 = 10;
    pub const INVLPG_ALL: u32 = 11;
    pub const FLUSH_CACHE: u32 = 12;
    pub const SET_LDT: u32 = 13;
    pub const NEW_USER_BASEPTR: u32 = 15;
    pub const CLEAR_PAGE: u32 = 16;
    pub const COPY_PAGE: u32 = 17;
    pub const FLUSH_CACHE_GLOBAL: u32 = 18;
    pub const MARK_SUPER: u32 = 19;
    pub const UNMARK_SUPER: u32 = 20;
}

/// `update_va_mapping` flush flags.
pub mod uvmf {
    /// No flush.
    pub const NONE: u64 = 0;
    /// Flush the whole TLB.
    pub const TLB_FLUSH: u64 = 1;
    /// Flush the one address.
    pub const INVLPG: u64 = 2;
    /// Mask of the flush type.
    pub const FLUSHTYPE_MASK: u64 = 3;
    /// All vCPUs of the domain (else: local, or a vCPU bitmap pointer).
    pub const ALL: u64 = 1 << 2;
}

/// Entries in the machine-to-phys table's reserved area (`MACH2PHYS_NR_ENTRIES`, 2^35).
pub const MACH2PHYS_NR_ENTRIES: u64 = 1 << 35;
/// An M2P entry for a frame the guest does not own.
pub const INVALID_M2P_ENTRY: u64 = u64::MAX;
