//! The argument unions of the calls that carry one structure with a command and a union of
//! sub-op structures (`domctl`, `sysctl`, `mca`): a sub-op's structure is read from and
//! written to the union's first bytes. Every sub-op structure fits its union (asserted in
//! `xen_abi`); a shorter union reads as zeros beyond its end and a longer structure is not
//! written, so neither can go out of bounds.

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The sub-op structure at the start of union `u`.
pub(super) fn read<T: FromBytes>(u: &[u8]) -> T {
    T::read_from_prefix(u).map_or_else(|_| T::new_zeroed(), |(v, _)| v)
}

/// Stores `v` at the start of union `u`.
pub(super) fn write<T: IntoBytes + Immutable>(u: &mut [u8], v: &T) {
    let bytes = v.as_bytes();
    if let Some(dst) = u.get_mut(..bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}
