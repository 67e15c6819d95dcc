//! Hypercall continuations: how a long batch (`mmu_update`, `mmuext_op`, `multicall`, the
//! balloon `memory_op`s) stops part way and resumes, as Xen's do.
//!
//! Hypercalls run with interrupts off. A handler working through a batch polls
//! [`should_preempt`] between items (never before the first, so every call makes progress);
//! when an interrupt is waiting or the vCPU has an event to take, it returns the arguments
//! that describe the rest of the batch ([`create`]: `Err(Stop::Then(Continuation::Again(..)))`);
//! a handler that fails with `ERESTART` gets the same with the arguments it came with. The
//! SYSCALL path then rewinds the guest to its SYSCALL instruction with those arguments
//! ([`apply`]): the guest takes its interrupt or upcall first and re-issues the call without
//! knowing. The argument encodings are the ABI's (count | `MMU_UPDATE_PREEMPTED`, the
//! memory_op start extent in `cmd` bits 6 and up, the rest of a multicall list). A multicall
//! that reaches an `iret` entry stops with the other continuation, [`Continuation::Iret`]: the
//! guest goes on from the iret frame instead.
//!
//! A continuation is a value, returned by the handler to whoever dispatched it: the SYSCALL
//! path, or the multicall whose entry it was, which writes the entry's new arguments back into
//! its list. Nothing of it is kept per CPU. As Xen's `hcall_preempted` outlives a handler's
//! later errors, a handler that has decided to stop returns its continuation even when a later
//! step fails (`mmu::run_batch` and its `pdone`).
//!
//! `domctl` and `sysctl` take one argument, a structure that has no field for progress (Xen
//! runs their few long loops, `debug_keys` and the zeroing of a long `xenctl_bitmap`, to the
//! end without preemption). Hestia stops those part way too ([`Resume`]): the re-issued call
//! carries how many units of work are done in its second argument register and, in the third,
//! the first one mixed with [`RESUME_TAG`], so a fresh call, whose unused registers hold
//! whatever the caller left there, is never taken for a resumed one. A resumed pass skips the
//! units done and redoes the cheap, idempotent steps before them (lookups, the first bytes of
//! a bitmap), so the guest sees exactly Xen's result.

use xen_abi::errno::Errno;

use super::Caller;
use crate::arch::x86_64::idt::TrapFrame;
use crate::pv::domain::Domain;
use crate::pv::traps::Fatal;

/// Length of the SYSCALL instruction every hypercall is issued with.
const SYSCALL_LEN: u64 = 2;

/// Items a batch handles between two preemption polls (a poll reads the LAPIC's IRR).
pub(super) const POLL_EVERY: u64 = 16;

/// What the guest does instead of returning from a hypercall that stopped part way.
#[derive(Clone, Copy)]
pub(crate) enum Continuation {
    /// It issues the same hypercall again with these arguments (Xen's
    /// `hypercall_create_continuation`).
    Again([u64; 5]),
    /// It performs the `iret` of the multicall entry at this address (the multicall stopped
    /// there, as Xen's since XSA-213), and the entry's result is the RAX the iret loads.
    Iret(u64),
}

/// How a handler that can stop part way ends without a value.
pub(crate) enum Stop {
    /// It failed with this errno (`ERESTART`: it is issued again with the arguments it came
    /// with).
    Errno(Errno),
    /// It stopped part way; the guest goes on as this says.
    Then(Continuation),
}

impl From<Errno> for Stop {
    fn from(e: Errno) -> Self {
        Stop::Errno(e)
    }
}

impl From<Continuation> for Stop {
    fn from(k: Continuation) -> Self {
        Stop::Then(k)
    }
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

/// The end of a handler that stopped part way: the hypercall is to be issued again with
/// `args`.
pub(super) fn create(args: [u64; 5]) -> Result<u64, Stop> {
    Err(Stop::Then(Continuation::Again(args)))
}

/// After hypercall `number` of `c` stopped with `k`, sets up the guest's frame `f` for what
/// follows: rewound to its SYSCALL with the new arguments, so the call is re-issued on return;
/// or the multicall's `iret` performed, its result stored in the entry best effort (through
/// the page tables of the mode the iret returned to), as Xen does. An iret frame the guest
/// cannot return to is fatal to it.
pub(super) fn apply(
    c: Caller<'_>,
    f: &mut TrapFrame,
    number: u32,
    k: Continuation,
) -> Result<(), Fatal> {
    match k {
        Continuation::Again(a) => {
            f.rax = u64::from(number);
            f.rip = f.rip.wrapping_sub(SYSCALL_LEN);
            (f.rdi, f.rsi, f.rdx, f.r10, f.r8) = (a[0], a[1], a[2], a[3], a[4]);
        }
        Continuation::Iret(entry) => {
            crate::pv::traps::iret(c.domain(), &mut c.vcpu().lock(), f)?;
            let _ = entry
                .checked_add(8)
                .map(|result| crate::mm::guest::write_obj(result, &f.rax));
            // Xen's multicall returns that result through an `int`: the guest's RAX is the low
            // 32 bits of the frame's, sign-extended (seen on the rig).
            f.rax = f.rax as i32 as i64 as u64;
        }
    }
    Ok(())
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
    pub(crate) fn finish(&self, u_op: u64, r: Result<u64, Errno>) -> Result<u64, Stop> {
        match (r, self.stopped) {
            (Err(Errno::ERESTART), Some(unit)) => create([u_op, unit, u_op ^ RESUME_TAG, 0, 0]),
            _ => Ok(r?),
        }
    }
}
