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
//!
//! `domctl` and `sysctl` take one argument, a structure that has no field for progress (Xen
//! runs their few long loops, `debug_keys` and the zeroing of a long `xenctl_bitmap`, to the
//! end without preemption). Hestia stops those part way too ([`Resume`]): the re-issued call
//! carries how many units of work are done in its second argument register and, in the third,
//! the first one mixed with [`RESUME_TAG`], so a fresh call, whose unused registers hold
//! whatever the caller left there, is never taken for a resumed one. A resumed pass skips the
//! units done and redoes the cheap, idempotent steps before them (lookups, the first bytes of
//! a bitmap), so the guest sees exactly Xen's result.

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

/// Mixed into a resumed control call's first argument to make its third (see the module).
const RESUME_TAG: u64 = 0x4865_7374_6961_5245;

/// The long, unit-by-unit work of one `domctl` or `sysctl` pass, resumable by continuation.
/// A pass runs its stretches of work in a fixed order through [`Resume::run`]; units are
/// numbered across them, so the number where a pass stopped says where the next one goes on.
pub(crate) struct Resume<'a> {
    d: &'a Domain,
    /// Units earlier passes did (skipped by this one).
    start: u64,
    /// Units of the stretches this pass has gone through.
    at: u64,
    /// The unit this pass stopped before, if it did.
    stopped: Option<u64>,
}

impl<'a> Resume<'a> {
    /// The work of a call from `d` with arguments `a`: fresh, or resumed where its
    /// continuation said.
    pub(crate) fn new(d: &'a Domain, a: [u64; 5]) -> Self {
        let start = if a[2] == a[0] ^ RESUME_TAG { a[1] } else { 0 };
        Self {
            d,
            start,
            at: 0,
            stopped: None,
        }
    }

    /// Runs the next stretch of `n` units, `f(i)` for `i` in `0..n`, skipping the units an
    /// earlier pass did; stops with `ERESTART` before a unit when the CPU is wanted (never
    /// before this pass's first, so every pass progresses).
    pub(crate) fn run(
        &mut self,
        n: u64,
        mut f: impl FnMut(u64) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let base = self.at;
        for i in self.start.saturating_sub(base).min(n)..n {
            let unit = base.saturating_add(i);
            if should_preempt(self.d, unit.saturating_sub(self.start)) {
                self.stopped = Some(unit);
                return Err(Errno::ERESTART);
            }
            f(i)?;
        }
        self.at = base.saturating_add(n);
        Ok(())
    }

    /// The call's result: a pass that stopped is issued again (`u_op` its one argument) with
    /// its progress; anything else stands (an `ERESTART` without progress re-issues the call
    /// as it came, progress included).
    pub(crate) fn finish(&self, u_op: u64, r: Result<u64, Errno>) -> Result<u64, Errno> {
        match (r, self.stopped) {
            (Err(Errno::ERESTART), Some(unit)) => create([u_op, unit, u_op ^ RESUME_TAG, 0, 0]),
            _ => r,
        }
    }
}
