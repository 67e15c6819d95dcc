//! Hypervisor timers: each CPU keeps a queue of one-shot deadlines (`hestia_core::timer_queue`)
//! and programs its LAPIC timer for the earliest. Callbacks run in interrupt context on the CPU
//! that armed them and may ask to be re-armed (periodic timers), which keeps their handle: the
//! owner's [`TimerId`] cancels a timer however often it fired. A vCPU's timers carry a counted
//! reference to it ([`TimerFn::Owned`]): they fire on the CPU that armed them wherever the vCPU
//! runs by then (or while it is blocked, to wake it), and [`cancel_on`] removes them from
//! another CPU's queue.

use alloc::sync::Arc;
use core::any::Any;
use core::sync::atomic::Ordering;

use hestia_core::timer_queue::{TimerId, TimerQueue};

use crate::arch::x86_64::{apic, cpu, percpu, tsc};

/// A timer callback: gets the current uptime in ns, returns the next deadline to re-arm at.
#[derive(Clone)]
pub enum TimerFn {
    /// Hestia's own.
    Plain(fn(u64) -> Option<u64>),
    /// One a layer above arms for something it owns (a vCPU), with a counted reference to
    /// that owner, which the callback gets (and downcasts: this layer names no owner's type).
    Owned(fn(&dyn Any, u64) -> Option<u64>, Arc<dyn Any + Send + Sync>),
}

impl TimerFn {
    fn call(&self, now: u64) -> Option<u64> {
        match self {
            TimerFn::Plain(f) => f(now),
            TimerFn::Owned(f, owner) => f(&**owner, now),
        }
    }
}

/// Arms a timer on this CPU at `deadline_ns` of uptime; the id cancels it.
pub fn add(deadline_ns: u64, f: TimerFn) -> TimerId {
    with_queue(|q| {
        let id = q.insert(deadline_ns, f);
        if q.next_deadline() == Some(deadline_ns) {
            apic::arm_timer(deadline_ns);
        }
        id
    })
}

/// Cancels a timer armed on this CPU; false if it is not queued (it fired for good, or was
/// cancelled already).
pub fn cancel(id: TimerId) -> bool {
    with_queue(|q| q.cancel(id).is_some())
}

/// Cancels a timer armed on CPU `cpu` (from any CPU); false if it is not queued there.
pub fn cancel_on(cpu: u32, id: TimerId) -> bool {
    match percpu::cpu(cpu) {
        Some(p) => with_queue_of(p, |q| q.cancel(id).is_some()),
        None => false,
    }
}

/// Runs `f` on this CPU's queue with interrupts off (the timer interrupt uses it too).
fn with_queue<R>(f: impl FnOnce(&mut TimerQueue<TimerFn>) -> R) -> R {
    with_queue_of(percpu::this_cpu(), f)
}

/// Runs `f` on `p`'s queue with interrupts off: no timer interrupt of this CPU can then wait
/// for the lock held here (another CPU's holds it only briefly).
fn with_queue_of<R>(p: &percpu::PerCpu, f: impl FnOnce(&mut TimerQueue<TimerFn>) -> R) -> R {
    cpu::without_interrupts(|| f(&mut p.timers.lock()))
}

/// The LAPIC timer interrupt: runs every expired callback, then re-programs the timer.
pub fn interrupt() {
    let me = percpu::this_cpu();
    me.timer_irqs.fetch_add(1, Ordering::Relaxed);
    // Bounded: a callback that keeps re-arming in the past cannot starve the CPU forever.
    for _ in 0..64 {
        let now = tsc::uptime_ns();
        let Some((id, f)) = me.timers.lock().pop_expired(now) else {
            break;
        };
        if let Some(next) = f.call(now) {
            me.timers.lock().rearm(id, next, f);
        }
    }
    match me.timers.lock().next_deadline() {
        Some(d) => apic::arm_timer(d),
        None => apic::disarm_timer(),
    }
}

/// Number of timers queued on CPU `index`.
pub fn pending(index: u32) -> usize {
    percpu::cpu(index).map_or(0, |p| p.timers.lock().len())
}
