//! `hestia-core`: the hypervisor's pure logic, kept free of hardware access so it can be tested
//! exhaustively on the host (`cargo test -p hestia-core`).
//!
//! Everything here is `no_std` (+ `alloc` where noted) and `forbid(unsafe_code)`. The kernel crate
//! (`hestia`) feeds it numbers read from firmware and hardware and acts on the answers.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod acpi_s5;
pub mod bootinfo;
pub mod bzimage;
pub mod cmdline;
pub mod conring;
pub mod cpu_policy;
pub mod cpuid;
pub mod credit;
pub mod descriptor;
pub mod domid;
pub mod domu_spec;
pub mod efi;
pub mod elf;
pub mod evtchn;
pub mod frame_alloc;
pub mod grant_table;
pub mod guest_exit;
pub mod hypercall_page;
pub mod ids;
pub mod insn;
pub mod ioport;
pub mod l1tf;
pub mod memmap;
pub mod msi;
pub mod pirq;
pub mod policy;
pub mod ptwr;
pub mod pv_layout;
pub mod pv_mm;
pub mod rangeset;
pub mod ratelimit;
pub mod serial_tx;
pub mod size;
pub mod spec_ctrl;
pub mod symbols;
pub mod time;
pub mod timer_queue;
pub mod tlb_flush;
pub mod vaddr;
pub mod xstate;
