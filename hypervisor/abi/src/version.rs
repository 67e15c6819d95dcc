//! `xen_version` (`public/version.h`).

/// The Xen release whose interface this crate describes and Hestia reports (`XENVER_version`,
/// CPUID leaf 0x40000001): 4.17.
pub const MAJOR: u32 = 4;
/// See [`MAJOR`].
pub const MINOR: u32 = 17;
/// [`MAJOR`] and [`MINOR`] as `XENVER_version` returns them: `major << 16 | minor`.
pub const XEN_VERSION: u32 = MAJOR << 16 | MINOR;

/// `xen_version` commands.
pub mod cmd {
    /// Returns `major << 16 | minor`.
    pub const VERSION: u32 = 0;
    /// Copies the 16-byte extra version string.
    pub const EXTRAVERSION: u32 = 1;
    /// Copies compile information (compiler, by, domain, date).
    pub const COMPILE_INFO: u32 = 2;
    /// Copies the 1024-byte capabilities string.
    pub const CAPABILITIES: u32 = 3;
    /// Copies the 64-byte changeset string.
    pub const CHANGESET: u32 = 4;
    /// Copies `platform_parameters` (`virt_start`).
    pub const PLATFORM_PARAMETERS: u32 = 5;
    /// Reads one 32-bit word of the feature bitmap (`xen_feature_info`).
    pub const GET_FEATURES: u32 = 6;
    /// Returns the page size.
    pub const PAGESIZE: u32 = 7;
    /// Copies the guest handle (domain UUID).
    pub const GUEST_HANDLE: u32 = 8;
    /// Copies the hypervisor command line (1024 bytes).
    pub const COMMANDLINE: u32 = 9;
    /// Build id.
    pub const BUILD_ID: u32 = 10;
}

/// Size of the extra version string.
pub const EXTRAVERSION_LEN: usize = 16;
/// Size of the capabilities string.
pub const CAPABILITIES_LEN: usize = 1024;
/// Size of the changeset string.
pub const CHANGESET_LEN: usize = 64;
/// Size of the command line string.
pub const COMMANDLINE_LEN: usize = 1024;
/// Size of the domain handle (`xen_domain_handle_t`, a UUID).
pub const DOMAIN_HANDLE_LEN: usize = 16;
/// Offset of `buf` in `struct xen_build_id` (after `uint32_t len`, IN: the room in `buf`).
pub const BUILD_ID_BUF_OFFSET: u64 = 4;

/// `XENVER_compile_info` result (`struct xen_compile_info`): four NUL-terminated strings.
#[derive(
    Clone,
    Copy,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct CompileInfo {
    /// OUT: the compiler.
    pub compiler: [u8; 64],
    /// OUT: who built it.
    pub compile_by: [u8; 16],
    /// OUT: the builder's domain.
    pub compile_domain: [u8; 32],
    /// OUT: when it was built.
    pub compile_date: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<CompileInfo>() == 144);

/// `XENVER_get_features` argument (`struct xen_feature_info`).
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
pub struct FeatureInfo {
    /// IN: which 32-bit word of the bitmap.
    pub submap_idx: u32,
    /// OUT: the word.
    pub submap: u32,
}
const _: () = assert!(core::mem::size_of::<FeatureInfo>() == 8);
