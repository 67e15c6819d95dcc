//! Domains and vCPUs.
//!
//! A domain owns its frames (the P2M maps its PFNs to MFNs), a shared_info page, and its vCPUs.
//! A vCPU's guest registers live in a [`TrapFrame`]: while it runs, at the top of the physical
//! CPU's stack (where traps from ring 3 push them); while it does not, in [`Vcpu::regs`].

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::arch::x86_64::idt::TrapFrame;

/// A domain id; Debug prints `d0`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DomId(pub u16);

impl fmt::Debug for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

/// Per-vCPU PV state.
pub struct Vcpu {
    /// Index in the domain.
    pub id: u32,
    /// Saved guest registers while not running.
    pub regs: TrapFrame,
    /// The guest is in its kernel mode (hypercalls allowed).
    pub kernel_mode: bool,
    /// CR3 for guest kernel mode (machine address of the L4).
    pub kernel_cr3: u64,
}

/// A PV domain.
pub struct Domain {
    /// Its id.
    pub id: DomId,
    /// Holds the hardware and the control rights (dom0).
    pub privileged: bool,
    /// PFN to MFN.
    pub p2m: Vec<u64>,
    /// Machine frame of the shared_info page (owned by Hestia, shared with the guest).
    pub shared_info_mfn: u64,
    /// vCPUs.
    pub vcpus: Vec<spin::Mutex<Vcpu>>,
    /// Set once the domain shut down or crashed: it never runs again.
    pub dying: AtomicBool,
    /// Why it stopped (`SHUTDOWN_*`), valid once `dying` is set.
    pub shutdown_reason: AtomicU32,
}

impl Domain {
    /// Pages the domain owns.
    pub fn nr_pages(&self) -> u64 {
        self.p2m.len() as u64
    }

    /// Marks the domain dead; returns false if it already was.
    pub fn kill(&self) -> bool {
        !self.dying.swap(true, Ordering::AcqRel)
    }
}
