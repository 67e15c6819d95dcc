//! An ordered queue of one-shot timers, one per CPU in the kernel.
//!
//! Keys are `(deadline, sequence)`, so equal deadlines fire in insertion order and every timer has
//! a unique handle for cancellation. The kernel programs the LAPIC timer for
//! [`TimerQueue::next_deadline`] and, on the interrupt, drains [`TimerQueue::pop_expired`].
//! Deadlines are in nanoseconds of Hestia's monotonic clock.

use alloc::collections::BTreeMap;

/// Handle of a queued timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerId {
    deadline: u64,
    seq: u64,
}

impl TimerId {
    /// When the timer fires.
    pub const fn deadline(&self) -> u64 {
        self.deadline
    }
}

/// The queue; `T` is what the caller wants back when the timer fires.
#[derive(Debug)]
pub struct TimerQueue<T> {
    timers: BTreeMap<TimerId, T>,
    next_seq: u64,
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
            next_seq: 0,
        }
    }

    /// Queues `payload` to fire at `deadline`.
    pub fn insert(&mut self, deadline: u64, payload: T) -> TimerId {
        let id = TimerId {
            deadline,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.timers.insert(id, payload);
        id
    }

    /// Removes a timer that has not fired; returns its payload, or `None` if it already fired.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.timers.remove(&id)
    }

    /// The earliest deadline, if any timer is queued.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.keys().next().map(|k| k.deadline)
    }

    /// Removes and returns the earliest timer if its deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: u64) -> Option<(TimerId, T)> {
        let first = *self.timers.keys().next()?;
        if first.deadline > now {
            return None;
        }
        self.timers.remove(&first).map(|p| (first, p))
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
}
