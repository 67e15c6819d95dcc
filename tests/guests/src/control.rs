//! Toolstack calls for the test guests: `domctl` and `sysctl` at interface version 0x15, with
//! the sub-op's structure placed in and read back from the 128-byte union.

use xen_abi::domctl::{XEN_DOMCTL_INTERFACE_VERSION, XenDomctl};
use xen_abi::sysctl::{XEN_SYSCTL_INTERFACE_VERSION, XenSysctl};
use xen_abi::xen::hypercall as nr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::hypercall;

/// A domctl `cmd` on `domain` with `arg` at the start of the union.
pub fn domctl_op<T: IntoBytes + Immutable>(cmd: u32, domain: u16, arg: &T) -> XenDomctl {
    let mut op = XenDomctl {
        cmd,
        interface_version: XEN_DOMCTL_INTERFACE_VERSION,
        domain,
        _pad: [0; 3],
        u: [0; 128],
    };
    let b = arg.as_bytes();
    op.u[..b.len()].copy_from_slice(b);
    op
}

/// A sysctl `cmd` with `arg` at the start of the union.
pub fn sysctl_op<T: IntoBytes + Immutable>(cmd: u32, arg: &T) -> XenSysctl {
    let mut op = XenSysctl {
        cmd,
        interface_version: XEN_SYSCTL_INTERFACE_VERSION,
        u: [0; 128],
    };
    let b = arg.as_bytes();
    op.u[..b.len()].copy_from_slice(b);
    op
}

/// Issues `domctl(op)`.
pub fn domctl(op: &mut XenDomctl) -> i64 {
    hypercall(nr::DOMCTL, op as *mut XenDomctl as u64, 0, 0, 0, 0)
}

/// Issues `sysctl(op)`.
pub fn sysctl(op: &mut XenSysctl) -> i64 {
    hypercall(nr::SYSCTL, op as *mut XenSysctl as u64, 0, 0, 0, 0)
}

/// The sub-op structure at the start of a union.
pub fn arg<T: FromBytes>(u: &[u8; 128]) -> T {
    T::read_from_prefix(u).map_or_else(|_| T::new_zeroed(), |(v, _)| v)
}
