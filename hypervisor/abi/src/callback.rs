//! Traps, callbacks and the `iret` frame (`public/callback.h`, `public/arch-x86/xen-x86_64.h`,
//! `public/arch-x86/xen.h`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One entry of `set_trap_table`'s array (`struct trap_info`); an entry with `address == 0`
/// ends the array.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TrapInfo {
    /// IN: vector.
    pub vector: u8,
    /// IN: bits 0-1 the DPL for software `int $n`; bit 2 masks events on delivery.
    pub flags: u8,
    /// IN: code selector (ignored for 64-bit guests: FLAT_KERNEL_CS is used).
    pub cs: u16,
    /// Padding.
    pub _pad: u32,
    /// IN: handler address (canonical).
    pub address: u64,
}
const _: () = assert!(core::mem::size_of::<TrapInfo>() == 16);

/// `trap_info.flags` bit: set the upcall mask on delivery (interrupt-gate semantics).
pub const TI_CLEAR_EVENTS: u8 = 1 << 2;

/// `callback_op` commands.
pub mod cmd {
    /// Register a callback (`struct callback_register`).
    pub const REGISTER: u32 = 0;
    /// Unregister one (only the NMI callback can be).
    pub const UNREGISTER: u32 = 1;
}

/// Callback types (`CALLBACKTYPE_*`).
pub mod kind {
    /// Event-channel upcall.
    pub const EVENT: u16 = 0;
    /// Segment-load failure on return to the guest.
    pub const FAILSAFE: u16 = 1;
    /// 64-bit SYSCALL from guest user mode.
    pub const SYSCALL: u16 = 2;
    /// Old name of the 32-bit SYSENTER callback (not for 64-bit guests).
    pub const SYSENTER_DEPRECATED: u16 = 3;
    /// NMI.
    pub const NMI: u16 = 4;
    /// SYSENTER from 32-bit compatibility code.
    pub const SYSENTER: u16 = 5;
    /// SYSCALL from 32-bit compatibility code.
    pub const SYSCALL32: u16 = 7;
}

/// `callback_register.flags`: mask events when the callback runs.
pub const CALLBACKF_MASK_EVENTS: u16 = 1 << 0;

/// `CALLBACKOP_register` argument (`struct callback_register`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CallbackRegister {
    /// IN: `CALLBACKTYPE_*`.
    pub kind: u16,
    /// IN: `CALLBACKF_*`.
    pub flags: u16,
    /// Padding.
    pub _pad: u32,
    /// IN: callback address.
    pub address: u64,
}
const _: () = assert!(core::mem::size_of::<CallbackRegister>() == 16);

/// `CALLBACKOP_unregister` argument (`struct callback_unregister`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CallbackUnregister {
    /// IN: `CALLBACKTYPE_*`.
    pub kind: u16,
    /// Padding.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<CallbackUnregister>() == 4);

/// `iret` context flag: the guest returns from a system call (RCX/R11 are not restored).
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

/// What the guest pushes before the `iret` hypercall (`struct iret_context`), read at its RSP.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
#[allow(missing_docs)] // Register names.
pub struct IretContext {
    pub rax: u64,
    pub r11: u64,
    pub rcx: u64,
    /// IN: `VGCF_in_syscall`.
    pub flags: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}
const _: () = assert!(core::mem::size_of::<IretContext>() == 72);

/// Xen's CPUID leaves base (`XEN_CPUID_FIRST_LEAF`).
pub const CPUID_BASE: u32 = 0x4000_0000;
/// The forced-emulation prefix: `ud2; .ascii "xen"`, followed by the instruction (`cpuid`).
pub const FORCED_EMULATION_PREFIX: [u8; 5] = [0x0F, 0x0B, b'x', b'e', b'n'];
