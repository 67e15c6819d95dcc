//! Hypercall continuations: how a long batch (`mmu_update`, `mmuext_op`, `multicall`, the
//! balloon `memory_op`s) stops part way and resumes, as Xen's do.
//!
//! Hypercalls run with interrupts off. A handler working through a batch polls
//! [`should_preempt`] between items (never before the first, so every call makes progress);
//! when an interrupt is waiting or the vCPU has an event to take, it records the arguments
//! that describe the rest of the batch with [`create`] and returns. The SYSCALL path then
//! rewinds the guest to its SYSCALL instruction with those arguments
//! ([`apply`]): the guest takes its interrupt or upcall first and re-issues the call without
//! knowing. The argument encodings are the ABI's (count | `MMU_UPDATE_PREEMPTED`, the memory_op
//! start extent in `cmd` bits 6 and up, the rest of a multicall list).

use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;
use xen_abi::errno::Errno;

use crate::arch::x86_64::idt::TrapFrame;
use crate::arch::x86_64::percpu;
use crate::pv::domain::Domain;

/// Length of the SYSCALL instruction every hypercall is issued with.
const SYSCALL_LEN: u64 = 2;

/// Items a batch handles between two preemption polls (a poll reads the LAPIC's IRR).
pub(super) const POLL_EVERY: u64 = 16;

/// The continuation the running hypercall asked for, per CPU.
static PENDING: [Mutex<Option<[u64; 5]>>; percpu::MAX_CPUS] =
    [const { Mutex::new(None) }; percpu::MAX_CPUS];
/// Set with `PENDING`, so the hypercall path can skip the lock when there is none (almost
/// always).
static ARMED: [AtomicBool; percpu::MAX_CPUS] = [const { AtomicBool::new(false) }; percpu::MAX_CPUS];

fn cpu() -> usize {
    percpu::current_index() as usize % percpu::MAX_CPUS
}

/// True when the batch running on this CPU for `d` should stop after item `done` (not 0):
/// the vCPU is to leave its CPU (it blocked in an earlier item of a multicall, or its slice
/// ended; checked at every item, a plain load), or, every [`POLL_EVERY`] items, an interrupt
/// is waiting or the vCPU has an unmasked event.
pub(super) fn should_preempt(d: &Domain, done: u64) -> bool {
    done != 0
        && (crate::sched::switch_pending()
            || (done.is_multiple_of(POLL_EVERY) && crate::pv::events::preempt_now(d)))
}

/// Records that the running hypercall is to be issued again with `args`; the value returned
/// is what RAX would have held, and is replaced by the hypercall number.
pub(super) fn create(args: [u64; 5]) -> Result<u64, Errno> {
    let c = cpu();
    *PENDING[c].lock() = Some(args);
    ARMED[c].store(true, Ordering::Relaxed);
    Ok(0)
}

/// Takes the continuation the last hypercall dispatched on this CPU recorded, if any.
pub(super) fn take() -> Option<[u64; 5]> {
    let c = cpu();
    // Only this CPU sets or clears its slot, with interrupts off: a plain load suffices.
    if !ARMED[c].load(Ordering::Relaxed) {
        return None;
    }
    ARMED[c].store(false, Ordering::Relaxed);
    PENDING[c].lock().take()
}

/// After hypercall `number` returned to `f`: if it asked for a continuation, rewinds the guest
/// to its SYSCALL with the new arguments, so the call is re-issued on return.
pub fn apply(f: &mut TrapFrame, number: u64) {
    if let Some(a) = take() {
        f.rax = number;
        f.rip = f.rip.wrapping_sub(SYSCALL_LEN);
        (f.rdi, f.rsi, f.rdx, f.r10, f.r8) = (a[0], a[1], a[2], a[3], a[4]);
    }
}
