//! An ordered queue of one-shot timers, one per CPU in the kernel.
//!
//! Each timer has a handle ([`TimerId`]) that stays the same for its whole life, re-arming
//! included: a periodic timer that fires and is queued again ([`TimerQueue::rearm`]) can still
//! be cancelled by the handle its owner kept from the first [`TimerQueue::insert`]. Handles are
//! never reused, so cancelling a handle that already fired (or was cancelled) is a no-op.
//! Queued timers are ordered by `(deadline, handle)`: equal deadlines fire in the order the
//! timers were first inserted. Deadlines are nanoseconds of Hestia's monotonic clock; callers
//! compute them with saturating arithmetic, so `u64::MAX` means "never" rather than a wrap into
//! the past. The kernel programs the LAPIC timer for [`TimerQueue::next_deadline`] and, on the
//! interrupt, drains [`TimerQueue::pop_expired`].

use alloc::collections::BTreeMap;

/// Handle of a timer, stable across re-arming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerId(u64);

/// The queue; `T` is what the caller wants back when the timer fires.
#[derive(Debug)]
pub struct TimerQueue<T> {
    /// Queued timers by `(deadline, handle)`.
    timers: BTreeMap<(u64, TimerId), T>,
    /// Deadline of every queued handle (the key into `timers`).
    deadlines: BTreeMap<TimerId, u64>,
    next_id: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerQueue<T> {
    /// An empty queue.
    pub const fn new() -> Self {
        Self {
            timers: BTreeMap::new(),
            deadlines: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Queues `payload` to fire at `deadline` under a new handle.
    pub fn insert(&mut self, deadline: u64, payload: T) -> TimerId {
        let id = TimerId(self.next_id);
        // 2^64 insertions would take centuries at one per nanosecond.
        self.next_id = self.next_id.wrapping_add(1);
        self.rearm(id, deadline, payload);
        id
    }

    /// Queues `payload` at `deadline` under the existing handle `id` (a timer that fired and
    /// wants to fire again), replacing it if it is still queued.
    pub fn rearm(&mut self, id: TimerId, deadline: u64, payload: T) {
        if let Some(old) = self.deadlines.insert(id, deadline) {
            self.timers.remove(&(old, id));
        }
        self.timers.insert((deadline, id), payload);
    }

    /// Removes a queued timer; returns its payload, or `None` if it is not queued (it fired
    /// and was not re-armed, or was cancelled already).
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let deadline = self.deadlines.remove(&id)?;
        self.timers.remove(&(deadline, id))
    }

    /// The deadline of a queued timer.
    pub fn deadline(&self, id: TimerId) -> Option<u64> {
        self.deadlines.get(&id).copied()
    }

    /// The earliest deadline, if any timer is queued.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.keys().next().map(|k| k.0)
    }

    /// Removes and returns the earliest timer if its deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: u64) -> Option<(TimerId, T)> {
        let (deadline, id) = *self.timers.keys().next()?;
        if deadline > now {
            return None;
        }
        self.deadlines.remove(&id);
        self.timers.remove(&(deadline, id)).map(|p| (id, p))
    }

    /// Number of queued timers.
    pub fn len(&self) -> usize {
        self.timers.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn fires_in_deadline_then_insertion_order() {
        let mut q = TimerQueue::new();
        q.insert(30, 'c');
        q.insert(10, 'a');
        q.insert(10, 'b');
        q.insert(50, 'd');
        assert_eq!(q.next_deadline(), Some(10));
        let mut fired = Vec::new();
        while let Some((_, p)) = q.pop_expired(30) {
            fired.push(p);
        }
        assert_eq!(fired, ['a', 'b', 'c']);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_expired(49), None);
    }

    #[test]
    fn cancel_removes_only_that_timer() {
        let mut q = TimerQueue::new();
        let a = q.insert(5, 1);
        let b = q.insert(5, 2);
        assert_eq!(q.cancel(a), Some(1));
        assert_eq!(q.cancel(a), None);
        assert_eq!(q.pop_expired(5), Some((b, 2)));
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn a_rearmed_timer_keeps_its_handle() {
        // The periodic-timer leak: each firing used to queue the timer under a new handle, so
        // the owner's handle from the first arming could no longer cancel it.
        let mut q = TimerQueue::new();
        let id = q.insert(10, 'p');
        let (fired, p) = q.pop_expired(10).expect("due");
        assert_eq!(fired, id);
        q.rearm(fired, 20, p);
        assert_eq!(q.deadline(id), Some(20));
        assert_eq!(q.cancel(id), Some('p'));
        assert!(q.is_empty());
        assert_eq!(q.pop_expired(u64::MAX), None);
    }

    #[test]
    fn rearm_of_a_queued_timer_moves_it() {
        let mut q = TimerQueue::new();
        let a = q.insert(50, 1);
        let b = q.insert(30, 2);
        q.rearm(a, 10, 3);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_expired(40), Some((a, 3)));
        assert_eq!(q.pop_expired(40), Some((b, 2)));
        assert_eq!(q.pop_expired(u64::MAX), None);
    }

    #[test]
    fn rearming_forever_never_grows_the_queue() {
        let mut q = TimerQueue::new();
        let id = q.insert(0, ());
        for now in 0..10_000u64 {
            let (fired, ()) = q.pop_expired(now).expect("due");
            q.rearm(fired, now + 1, ());
            assert_eq!(q.len(), 1);
        }
        assert!(q.cancel(id).is_some());
        assert!(q.is_empty());
    }

    #[test]
    fn handles_are_never_reused() {
        let mut q = TimerQueue::new();
        let a = q.insert(5, 'a');
        assert_eq!(q.pop_expired(5), Some((a, 'a')));
        let b = q.insert(5, 'b');
        assert_ne!(a, b);
        assert_eq!(q.cancel(a), None, "a stale handle cancels nothing");
        assert_eq!(q.len(), 1);
    }
}
