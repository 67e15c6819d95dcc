//! Xen ELF note types (`public/elfnote.h`): name "Xen", read by the domain builder.

/// Free-form `NAME=VALUE` information (ignored).
pub const INFO: u32 = 0;
/// Virtual entry point (default: the ELF entry).
pub const ENTRY: u32 = 1;
/// Virtual address of the page to fill with hypercall stubs.
pub const HYPERCALL_PAGE: u32 = 2;
/// Virtual address where PFN 0 of the initial mapping appears.
pub const VIRT_BASE: u32 = 3;
/// Subtracted from `p_paddr` before adding `VIRT_BASE`.
pub const PADDR_OFFSET: u32 = 4;
/// Xen version string; must start with "xen-3.0".
pub const XEN_VERSION: u32 = 5;
/// Guest OS name ("linux", "XTF", ...).
pub const GUEST_OS: u32 = 6;
/// Guest version (informational).
pub const GUEST_VERSION: u32 = 7;
/// Loader; must start with "generic" unless GUEST_OS starts with "linux".
pub const LOADER: u32 = 8;
/// PAE mode string (32-bit guests).
pub const PAE_MODE: u32 = 9;
/// `|`-separated feature names; `!` marks required ones.
pub const FEATURES: u32 = 10;
/// "yes": load the symbol table after the image.
pub const BSD_SYMTAB: u32 = 11;
/// Lowest hypervisor hole start (32-bit PAE only).
pub const HV_START_LOW: u32 = 12;
/// How tools recognise MFN-carrying non-present PTEs.
pub const L1_MFN_VALID: u32 = 13;
/// Guest supports cooperative suspend cancellation.
pub const SUSPEND_CANCEL: u32 = 14;
/// Where the P2M list may be mapped outside the initial region.
pub const INIT_P2M: u32 = 15;
/// Non-zero: the initrd may be left unmapped and passed as a PFN.
pub const MOD_START_PFN: u32 = 16;
/// XENFEAT bitmap(s) the kernel supports.
pub const SUPPORTED_FEATURES: u32 = 17;
/// PVH 32-bit entry (ignored for PV).
pub const PHYS32_ENTRY: u32 = 18;
