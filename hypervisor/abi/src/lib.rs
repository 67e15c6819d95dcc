//! `xen-abi`: the public Xen x86_64 guest ABI as plain Rust types and constants.
//!
//! One module per Xen public header (`xen/include/public/`). This crate holds layouts and numbers
//! only: no logic, no `unsafe`. Every guest-visible structure gets a compile-time size assertion
//! as it is added. The digest is `shared/xen-abi.md`; the primary source is Xen 4.17's headers.
//!
//! Structures derive zerocopy's byte traits, so the hypervisor copies them to and from guest
//! memory without `transmute`; field docs say IN (guest to hypervisor) or OUT.
#![no_std]
#![forbid(unsafe_code)]

pub mod callback;
pub mod domctl;
pub mod elfnote;
pub mod errno;
pub mod event_channel;
pub mod grant_table;
pub mod mca;
pub mod memory;
pub mod mmu;
pub mod physdev;
pub mod platform;
pub mod sched;
pub mod sysctl;
pub mod vcpu;
pub mod version;
pub mod xen;
