//! `xen-abi`: the public Xen x86_64 guest ABI as plain Rust types and constants.
//!
//! One module per Xen public header (`xen/include/public/`). This crate holds layouts and numbers
//! only: no logic, no `unsafe`. Every guest-visible structure gets a compile-time size assertion
//! as it is added. The digest is `shared/xen-abi.md`; the primary source is Xen 4.17's headers.
//!
//! Milestone M0 needs only the hypercall numbers and the errno values; the structures arrive with
//! the PV core (M1).
#![no_std]
#![forbid(unsafe_code)]

pub mod errno;
pub mod xen;
