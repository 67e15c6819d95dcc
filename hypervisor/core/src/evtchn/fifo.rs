//! FIFO event channels of one domain (Xen's `xen/common/event_fifo.c`; `public/event_channel.h`,
//! "FIFO ABI"; Linux's user is `drivers/xen/events/events_fifo.c`).
//!
//! Theory of operation. Each port has a 32-bit event word in the domain's event array (pages
//! the guest adds with `EVTCHNOP_expand_array`, 1024 words each): PENDING, MASKED, LINKED and
//! BUSY bits and a 17-bit LINK to the next port of its queue. Each vCPU has a control block
//! (`EVTCHNOP_init_control`: a `ready` bitmap and a `head` per priority, 16 queues) in a guest
//! page. Hestia appends to queues: it keeps each queue's tail (the guest never sees it), links
//! the old tail's word to the new port and, when the queue was empty, writes the head and sets
//! the queue's `ready` bit, raising the upcall. The guest consumes from the heads and unlinks.
//!
//! Invariants and hostility. Every event word and control-block word is guest memory the
//! guest changes concurrently, with any value: Hestia reads and changes it only with atomic
//! operations ([`GuestWords`]), never follows a LINK (the walk is the guest's), and tries a
//! link update at most five times (Xen's `evtchn_fifo_set_link`: once, then four times with
//! the word marked BUSY so the guest cannot unmask it in between), so no guest state makes it
//! loop. A word the guest put in a nonsense state can only misroute that guest's own events.
//! The frames are the domain's own, each holding a general and a writable type reference
//! taken by the caller (`take_frame`) for as long as they are registered here, so they are
//! never page tables and never freed while Hestia writes them ([`EventChannels::fifo_frames`],
//! [`EventChannels::fifo_destroy`] give them back).
//!
//! Locks: everything here runs under the domain's `evtchn` lock (the `&mut EventChannels` or
//! the shared borrow of its guard); queue tails and a port's last queue change under the shared
//! borrow through `Cell`s, as Xen changes them under per-queue locks while holding only the
//! port's read lock. One lock for the whole domain makes Xen's queue-lock retry loop needless.
//!
//! Deliberate differences from Xen 4.17: a port freed while its word is still LINKED may be
//! allocated again at once (Xen skips such ports; Linux drains a queue before closing its
//! ports, so it never meets either); closing a port also forgets an event held back for a
//! missing array page (Xen keeps that flag and may raise a later binding of the port when the
//! page comes).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::Cell;

use xen_abi::errno::Errno;
use xen_abi::event_channel::fifo::{
    BUSY, LINK_MASK, LINKED, MASKED, MAX_QUEUES, NR_CHANNELS, PENDING, PRIORITY_DEFAULT,
    PRIORITY_MIN,
};
use xen_abi::event_channel::{EVTCHN_2L_NR_CHANNELS, FifoControlBlock};

use super::{EventChannels, PortState, SharedBits};
use crate::ids::{Mfn, Port};

/// Event words in one event-array page.
pub const WORDS_PER_PAGE: u32 = 4096 / 4;
/// Event-array pages that cover every FIFO port (Xen's `EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES`).
pub const MAX_ARRAY_PAGES: usize = (NR_CHANNELS / WORDS_PER_PAGE) as usize;
/// Bytes of a control block: it must fit in its page at the offset given.
const CONTROL_BLOCK_SIZE: u32 = size_of::<FifoControlBlock>() as u32;
/// Offset of `head[0]` in a control block.
const HEAD_OFFSET: u32 = core::mem::offset_of!(FifoControlBlock, head) as u32;
/// Further link attempts once the word is BUSY (Xen's bound: the guest can change a LINKED
/// word in at most four ways while it is BUSY).
const SET_LINK_TRIES: u32 = 4;

const fn bit(b: u32) -> u32 {
    1 << b
}

/// A 32-bit word of a guest frame that Hestia holds a writable type reference on: an event
/// word or a control-block word. `offset` is a multiple of 4 below 4096.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordAt {
    /// The frame.
    pub mfn: Mfn,
    /// Byte offset in it.
    pub offset: u32,
}

impl WordAt {
    fn plus(self, bytes: u32) -> WordAt {
        WordAt {
            mfn: self.mfn,
            offset: self.offset + bytes,
        }
    }
}

/// Atomic access to guest words (`guest_test_and_set_bit` and friends in Xen): the guest
/// changes the same words at the same time.
pub trait GuestWords {
    /// Reads the word.
    fn load(&self, at: WordAt) -> u32;
    /// Writes the word.
    fn store(&self, at: WordAt, value: u32);
    /// Replaces `old` by `new` if the word holds `old`; returns what it held.
    fn compare_exchange(&self, at: WordAt, old: u32, new: u32) -> u32;
    /// ORs `bits` in; returns the previous value.
    fn fetch_or(&self, at: WordAt, bits: u32) -> u32;
    /// ANDs `bits` in; returns the previous value.
    fn fetch_and(&self, at: WordAt, bits: u32) -> u32;
}

/// One vCPU's side: its control block and the tails of its queues.
struct FifoVcpu {
    /// The control block, once `init_control` registered it.
    control: Option<WordAt>,
    /// The last port appended to each queue, 0 for none (an empty queue).
    tail: [Cell<u32>; MAX_QUEUES],
}

/// One port's FIFO state (Xen's `evtchn->priority`, `fifo_lastq`, `pending`).
#[derive(Clone)]
struct FifoPort {
    /// The queue its next event goes to.
    priority: u8,
    /// The queue it was last appended to: vCPU and priority.
    last: Cell<(u32, u8)>,
    /// Raised while its event-array page did not exist: raised for real when it comes.
    pending: Cell<bool>,
}

impl Default for FifoPort {
    fn default() -> Self {
        FifoPort {
            priority: PRIORITY_DEFAULT as u8,
            last: Cell::new((0, 0)),
            pending: Cell::new(false),
        }
    }
}

/// The FIFO state of a domain that switched to the FIFO ABI (Xen's `evtchn_fifo_domain` and
/// its vCPUs' `evtchn_fifo_vcpu`).
pub struct Fifo {
    vcpus: Vec<FifoVcpu>,
    /// The event-array pages, in port order.
    array: Vec<Mfn>,
    /// Per port, as many as the port table holds.
    ports: Vec<FifoPort>,
}

impl Fifo {
    /// FIFO state for `nr_vcpus` vCPUs and `nr_ports` ports, none registered; `ENOMEM` if the
    /// heap has no room.
    fn new(nr_vcpus: usize, nr_ports: usize) -> Result<Box<Fifo>, Errno> {
        let mut vcpus = Vec::new();
        let mut ports = Vec::new();
        vcpus
            .try_reserve_exact(nr_vcpus)
            .and_then(|()| ports.try_reserve_exact(nr_ports))
            .map_err(|_| Errno::ENOMEM)?;
        vcpus.resize_with(nr_vcpus, || FifoVcpu {
            control: None,
            tail: Default::default(),
        });
        ports.resize(nr_ports, FifoPort::default());
        Ok(Box::new(Fifo {
            vcpus,
            array: Vec::new(),
            ports,
        }))
    }

    /// Port `port` was just allocated (Xen's `evtchn_fifo_init`): it starts at the default
    /// priority. False if the heap has no room for its state.
    pub(super) fn init_port(&mut self, port: Port) -> bool {
        let port = port.index();
        if port >= self.ports.len() {
            if self.ports.try_reserve(port + 1 - self.ports.len()).is_err() {
                return false;
            }
            self.ports.resize(port + 1, FifoPort::default());
        }
        if let Some(p) = self.ports.get_mut(port) {
            p.priority = PRIORITY_DEFAULT as u8;
        }
        true
    }

    /// The event word of `port`, if its array page exists.
    fn word(&self, port: u32) -> Option<WordAt> {
        let mfn = *self.array.get((port / WORDS_PER_PAGE) as usize)?;
        Some(WordAt {
            mfn,
            offset: port % WORDS_PER_PAGE * 4,
        })
    }

    /// The tail of queue `priority` of vCPU `vcpu`.
    fn tail(&self, vcpu: u32, priority: u8) -> Option<&Cell<u32>> {
        self.vcpus
            .get(vcpu as usize)
            .and_then(|v| v.tail.get(usize::from(priority)))
    }

    /// Marks `port` pending and, unless it is masked or already queued, appends it to its
    /// queue on `vcpu` (Xen's `evtchn_fifo_set_pending`). True if the port became pending or
    /// the vCPU's upcall was raised: the vCPU should be woken.
    pub(super) fn set_pending<S: SharedBits + ?Sized>(
        &self,
        shared: &mut S,
        port: Port,
        vcpu: u32,
    ) -> bool {
        // The queues link ports by number: the event words' LINK field.
        let port = port.raw();
        let Some(p) = self.ports.get(port as usize) else {
            return false;
        };
        let Some(word) = self.word(port) else {
            p.pending.set(true);
            return false;
        };
        // Without a control block the guest has not unmasked anything yet: the event is
        // dropped, as in Xen.
        let Some(control) = self.vcpus.get(vcpu as usize).and_then(|v| v.control) else {
            return false;
        };
        let priority = p.priority;
        let became_pending = shared.fetch_or(word, bit(PENDING)) & bit(PENDING) == 0;
        let mut linked = true;
        if shared.load(word) & bit(MASKED) == 0
            && shared.fetch_or(word, bit(LINKED)) & bit(LINKED) == 0
        {
            // If it was the tail of its last queue, that queue is now empty: forget the
            // tail, or a later event there would link to a word now on another queue.
            let (old_vcpu, old_priority) = p.last.get();
            if let Some(old) = self.tail(old_vcpu, old_priority)
                && old.get() == port
            {
                old.set(0);
            }
            p.last.set((vcpu, priority));
            if let Some(tail) = self.tail(vcpu, priority) {
                let t = tail.get();
                linked = t != 0 && self.word(t).is_some_and(|w| set_link(shared, w, port));
                if !linked {
                    shared.store(control.plus(HEAD_OFFSET + 4 * u32::from(priority)), port);
                }
                tail.set(port);
            }
        }
        let ready = bit(u32::from(priority));
        let notify = !linked && shared.fetch_or(control, ready) & ready == 0;
        if notify {
            shared.set_upcall_pending(vcpu);
        }
        became_pending || notify
    }

    /// Clears `port`'s PENDING bit (the guest unlinks and skips events no longer pending).
    pub(super) fn clear_pending<S: SharedBits + ?Sized>(&self, shared: &mut S, port: Port) {
        if let Some(p) = self.ports.get(port.index()) {
            p.pending.set(false);
        }
        if let Some(w) = self.word(port.raw()) {
            shared.fetch_and(w, !bit(PENDING));
        }
    }

    /// `EVTCHNOP_unmask`: clears MASKED and queues the event if it is pending.
    pub(super) fn unmask<S: SharedBits + ?Sized>(
        &self,
        shared: &mut S,
        port: Port,
        vcpu: u32,
    ) -> bool {
        let Some(w) = self.word(port.raw()) else {
            return false;
        };
        shared.fetch_and(w, !bit(MASKED));
        shared.load(w) & bit(PENDING) != 0 && self.set_pending(shared, port, vcpu)
    }

    /// The PENDING bit of `port` (false without its array page).
    pub(super) fn is_pending<S: SharedBits + ?Sized>(&self, shared: &S, port: Port) -> bool {
        self.word(port.raw())
            .is_some_and(|w| shared.load(w) & bit(PENDING) != 0)
    }

    /// The MASKED bit of `port` (true without its array page).
    pub(super) fn is_masked<S: SharedBits + ?Sized>(&self, shared: &S, port: Port) -> bool {
        self.word(port.raw())
            .is_none_or(|w| shared.load(w) & bit(MASKED) != 0)
    }

    /// Every frame registered: control blocks, then the event array.
    fn frames(&self) -> impl Iterator<Item = Mfn> + '_ {
        self.vcpus
            .iter()
            .filter_map(|v| v.control.map(|c| c.mfn))
            .chain(self.array.iter().copied())
    }
}

/// Sets the LINK of the queued word `w` to `link` if it is still LINKED (clearing BUSY); its
/// result once the word is seen, `None` if the guest changed it in between.
fn try_set_link<S: SharedBits + ?Sized>(
    shared: &S,
    w: WordAt,
    seen: &mut u32,
    link: u32,
) -> Option<bool> {
    if *seen & bit(LINKED) == 0 {
        return Some(false);
    }
    let new = (*seen & !(bit(BUSY) | LINK_MASK)) | link;
    let found = shared.compare_exchange(w, *seen, new);
    if found == *seen {
        return Some(true);
    }
    *seen = found;
    None
}

/// Links the tail word `w` to `link` if it is still LINKED (Xen's `evtchn_fifo_set_link`):
/// false if the guest unlinked it (the queue is empty). Bounded: one try, then
/// [`SET_LINK_TRIES`] with the word BUSY; a word that keeps changing counts as linked.
fn set_link<S: SharedBits + ?Sized>(shared: &S, w: WordAt, link: u32) -> bool {
    let mut seen = shared.load(w);
    if let Some(r) = try_set_link(shared, w, &mut seen, link) {
        return r;
    }
    shared.fetch_or(w, bit(BUSY));
    seen = shared.load(w);
    for _ in 0..SET_LINK_TRIES {
        if let Some(r) = try_set_link(shared, w, &mut seen, link) {
            if !r {
                shared.fetch_and(w, !bit(BUSY));
            }
            return r;
        }
    }
    shared.fetch_and(w, !bit(BUSY));
    true
}

/// The FIFO sub-operations and the switch between ABIs.
impl EventChannels {
    /// Ports the current ABI addresses (Xen's `max_evtchns`).
    pub fn max_ports(&self) -> usize {
        if self.fifo.is_some() {
            NR_CHANNELS as usize
        } else {
            EVTCHN_2L_NR_CHANNELS as usize
        }
    }

    /// `EVTCHNOP_init_control`: registers vCPU `vcpu`'s control block at byte `offset` of
    /// frame `mfn`; the first one switches the domain to the FIFO ABI, its bound ports
    /// carried over with their pending state. `take_frame` takes the frame's references (its
    /// error is the result); nothing changes on any error.
    pub fn init_control<S: SharedBits + ?Sized>(
        &mut self,
        shared: &S,
        vcpu: u32,
        mfn: Mfn,
        offset: u32,
        take_frame: &mut dyn FnMut(Mfn) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        if vcpu as usize >= self.virq_port.len() {
            return Err(Errno::ENOENT);
        }
        if offset > 4096 - CONTROL_BLOCK_SIZE || !offset.is_multiple_of(8) {
            return Err(Errno::EINVAL);
        }
        let fresh = self.fifo.is_none();
        let mut fifo = match self.fifo.take() {
            Some(f) => f,
            None => Fifo::new(self.virq_port.len(), self.ports.len())?,
        };
        let r = match fifo.vcpus.get_mut(vcpu as usize) {
            Some(v) if v.control.is_none() => take_frame(mfn).map(|()| {
                v.control = Some(WordAt { mfn, offset });
            }),
            _ => Err(Errno::EINVAL),
        };
        if fresh && r.is_ok() {
            // Events pending in the 2-level bitmap are raised once their array page exists.
            for (port, p) in fifo.ports.iter().enumerate().skip(1) {
                if shared.is_pending(Port::from_index(port)) {
                    p.pending.set(true);
                }
            }
        }
        // A failed first registration leaves the domain on 2-level.
        if !fresh || r.is_ok() {
            self.fifo = Some(fifo);
        }
        r
    }

    /// `EVTCHNOP_expand_array`: frame `mfn` becomes the next event-array page; events raised
    /// while it was missing are raised now. Returns the vCPUs to wake. `take_frame` as for
    /// [`Self::init_control`].
    pub fn expand_array<S: SharedBits + ?Sized>(
        &mut self,
        shared: &mut S,
        mfn: Mfn,
        take_frame: &mut dyn FnMut(Mfn) -> Result<(), Errno>,
    ) -> Result<Vec<u32>, Errno> {
        let Some(fifo) = self.fifo.as_mut() else {
            return Err(Errno::EOPNOTSUPP);
        };
        if fifo.array.len() >= MAX_ARRAY_PAGES {
            return Err(Errno::ENOSPC);
        }
        fifo.array.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
        take_frame(mfn)?;
        let first = fifo.array.len() * WORDS_PER_PAGE as usize;
        fifo.array.push(mfn);
        let mut wake = Vec::new();
        let end = (first + WORDS_PER_PAGE as usize).min(self.ports.len());
        for port in first..end {
            let held = fifo.ports.get(port).is_some_and(|p| p.pending.take());
            if let Some(&(_, vcpu)) = self.ports.get(port).filter(|_| held)
                && fifo.set_pending(shared, Port::from_index(port), vcpu)
            {
                wake.push(vcpu);
            }
        }
        Ok(wake)
    }

    /// `EVTCHNOP_set_priority`: Xen's errors: no such port `EINVAL`, 2-level ABI `ENOSYS`, a
    /// free port `EACCES`, a priority past [`PRIORITY_MIN`] `EINVAL`. Takes effect for the
    /// port's next event (a queued one stays on its queue).
    pub fn set_priority(&mut self, port: Port, priority: u32) -> Result<(), Errno> {
        let (state, _) = self.port(port).ok_or(Errno::EINVAL)?;
        let fifo = self.fifo.as_mut().ok_or(Errno::ENOSYS)?;
        if state == PortState::Closed {
            return Err(Errno::EACCES);
        }
        if priority > PRIORITY_MIN {
            return Err(Errno::EINVAL);
        }
        let p = fifo.ports.get_mut(port.index()).ok_or(Errno::EINVAL)?;
        p.priority = priority as u8;
        Ok(())
    }

    /// The frames the FIFO ABI holds (each with a general and a writable type reference).
    pub fn fifo_frames(&self, out: &mut Vec<Mfn>) {
        out.extend(self.fifo.iter().flat_map(|f| f.frames()));
    }

    /// Leaves the FIFO ABI for the 2-level one (`EVTCHNOP_reset`, destruction): returns the
    /// frames whose references the caller now drops. Ports past the 2-level range must be
    /// closed already; the table shrinks back to it.
    pub fn fifo_destroy(&mut self) -> Vec<Mfn> {
        let mut frames = Vec::new();
        self.fifo_frames(&mut frames);
        self.fifo = None;
        while self.ports.len() > EVTCHN_2L_NR_CHANNELS as usize
            && self.ports.last().is_some_and(|p| p.0 == PortState::Closed)
        {
            self.ports.pop();
        }
        frames
    }

    /// True while the domain uses the FIFO ABI.
    pub fn is_fifo(&self) -> bool {
        self.fifo.is_some()
    }

    /// Ports in the table (every port at and past it is closed).
    pub fn nr_ports(&self) -> u32 {
        self.ports.len() as u32
    }

    /// Starts `EVTCHNOP_reset` (or, `resuming`, continues it, `EVTCHNOP_reset_cont`): the
    /// first port to close, `None` (Xen's `EBUSY`) if a reset is already under way or, when
    /// resuming, none is.
    pub fn reset_begin(&mut self, resuming: bool) -> Option<Port> {
        let next = match (resuming, self.next_evtchn) {
            (false, Port::ZERO) => Port::unvalidated(1),
            (true, n) if !n.is_zero() => n,
            _ => return None,
        };
        self.next_evtchn = next;
        Some(next)
    }

    /// The reset stops for a continuation; it resumes at `port`.
    pub fn reset_pause(&mut self, port: Port) {
        self.next_evtchn = port.max(Port::unvalidated(1));
    }

    /// The reset closed every port: false (Xen's `EAGAIN`) if one but `keep` was bound again
    /// meanwhile, else the domain returns to the 2-level ABI and the FIFO frames to release
    /// are returned.
    pub fn reset_end(&mut self, keep: Option<Port>) -> Option<Vec<Mfn>> {
        self.next_evtchn = Port::ZERO;
        let busy = self
            .ports
            .iter()
            .enumerate()
            .skip(1)
            .any(|(p, s)| s.0 != PortState::Closed && Some(Port::from_index(p)) != keep);
        (!busy).then(|| self.fifo_destroy())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Fake, port};
    use super::super::{EvtchnError, Sent};
    use super::*;
    use crate::ids::{DomId, VcpuId};
    use xen_abi::xen::virq;

    const CB: Mfn = Mfn::new(100);
    const CB1: Mfn = Mfn::new(101);
    const ARRAY: Mfn = Mfn::new(200);

    /// Event-array page `n`'s frame.
    fn array(n: u64) -> Mfn {
        Mfn::new(ARRAY.raw() + n)
    }

    fn word(s: &Fake, port: Port) -> u32 {
        let port = port.raw();
        s.load(WordAt {
            mfn: array(u64::from(port / WORDS_PER_PAGE)),
            offset: port % WORDS_PER_PAGE * 4,
        })
    }

    fn set_word(s: &Fake, port: Port, v: u32) {
        let port = port.raw();
        s.store(
            WordAt {
                mfn: array(u64::from(port / WORDS_PER_PAGE)),
                offset: port % WORDS_PER_PAGE * 4,
            },
            v,
        );
    }

    fn ready(s: &Fake, cb_offset: u32) -> u32 {
        s.load(WordAt {
            mfn: CB,
            offset: cb_offset,
        })
    }

    fn head(s: &Fake, q: u32) -> Port {
        Port::unvalidated(s.load(WordAt {
            mfn: CB,
            offset: HEAD_OFFSET + 4 * q,
        }))
    }

    fn ok(_: Mfn) -> Result<(), Errno> {
        Ok(())
    }

    /// A FIFO domain with `vcpus` vCPUs, vCPU 0's control block at CB offset 0 and one array
    /// page.
    fn fifo(vcpus: u32, s: &mut Fake) -> EventChannels {
        let mut e = EventChannels::new(vcpus);
        e.init_control(s, 0, CB, 0, &mut ok).unwrap();
        e.expand_array(s, ARRAY, &mut ok).unwrap();
        e
    }

    /// The guest's consumer (Linux's `consume_one_event`): pops the head of queue `q`.
    fn consume(s: &Fake, q: u32) -> Option<Port> {
        let port = head(s, q);
        if port.is_zero() {
            return None;
        }
        let w = word(s, port);
        let next = w & LINK_MASK;
        let h = WordAt {
            mfn: CB,
            offset: HEAD_OFFSET + 4 * q,
        };
        s.store(h, next);
        if next == 0 {
            s.fetch_and(WordAt { mfn: CB, offset: 0 }, !(1 << q));
        }
        set_word(s, port, w & !(bit(LINKED) | LINK_MASK | bit(PENDING)));
        Some(port)
    }

    #[test]
    fn init_control_errors_as_xen() {
        let mut s = Fake::default();
        let mut e = EventChannels::new(2);
        let nope = &mut |_| -> Result<(), Errno> { Err(Errno::EINVAL) };
        assert_eq!(e.init_control(&s, 2, CB, 0, &mut ok), Err(Errno::ENOENT));
        assert_eq!(
            e.init_control(&s, 0, CB, 4096 - 72 + 8, &mut ok),
            Err(Errno::EINVAL)
        );
        assert_eq!(e.init_control(&s, 0, CB, 4, &mut ok), Err(Errno::EINVAL));
        assert_eq!(e.init_control(&s, 0, CB, 0, nope), Err(Errno::EINVAL));
        assert!(!e.is_fifo(), "a failed first init_control stays 2-level");
        assert_eq!(
            e.expand_array(&mut s, ARRAY, &mut ok),
            Err(Errno::EOPNOTSUPP)
        );
        assert_eq!(e.set_priority(port(1), 0), Err(Errno::ENOSYS));
        assert_eq!(e.init_control(&s, 0, CB, 4096 - 72, &mut ok), Ok(()));
        assert!(e.is_fifo());
        assert_eq!(
            e.init_control(&s, 0, CB, 0, &mut ok),
            Err(Errno::EINVAL),
            "twice"
        );
        assert_eq!(e.init_control(&s, 1, CB1, 0, nope), Err(Errno::EINVAL));
        assert!(e.is_fifo(), "a failed second init_control keeps FIFO");
        assert_eq!(e.init_control(&s, 1, CB1, 0, &mut ok), Ok(()));
        let mut frames = Vec::new();
        e.fifo_frames(&mut frames);
        assert_eq!(frames, [CB, CB1]);
        for _ in 0..MAX_ARRAY_PAGES {
            e.expand_array(&mut s, ARRAY, &mut ok).unwrap();
        }
        assert_eq!(e.expand_array(&mut s, ARRAY, &mut ok), Err(Errno::ENOSPC));
        assert_eq!(e.fifo_destroy().len(), 2 + MAX_ARRAY_PAGES);
        assert!(!e.is_fifo());
    }

    #[test]
    fn events_queue_in_order_and_by_priority() {
        let mut s = Fake::default();
        let mut e = fifo(1, &mut s);
        let a = e.bind_ipi(0).unwrap();
        let b = e.bind_ipi(0).unwrap();
        let c = e.bind_ipi(0).unwrap();
        assert_eq!(e.set_priority(c, 16), Err(Errno::EINVAL));
        assert_eq!(e.set_priority(c, 2), Ok(()));
        assert_eq!(
            e.set_priority(port(40), 2),
            Err(Errno::EACCES),
            "a free port"
        );
        assert_eq!(
            e.set_priority(port(99), 2),
            Err(Errno::EINVAL),
            "a port in no bucket yet"
        );
        assert_eq!(e.set_priority(port(1 << 20), 2), Err(Errno::EINVAL));
        assert_eq!(
            e.send(&mut s, a, DomId(0)),
            Ok(Sent::Raised(VcpuId::unvalidated(0)))
        );
        assert!(s.upcall[0]);
        assert_eq!(ready(&s, 0), 1 << 7);
        s.upcall[0] = false;
        assert_eq!(
            e.send(&mut s, b, DomId(0)),
            Ok(Sent::Raised(VcpuId::unvalidated(0)))
        );
        assert!(!s.upcall[0], "appended to a non-empty queue: no new upcall");
        assert_eq!(
            e.send(&mut s, b, DomId(0)),
            Ok(Sent::Nothing),
            "already pending"
        );
        assert_eq!(
            e.send(&mut s, c, DomId(0)),
            Ok(Sent::Raised(VcpuId::unvalidated(0)))
        );
        assert!(s.upcall[0]);
        assert_eq!(ready(&s, 0), 1 << 7 | 1 << 2);
        assert_eq!(consume(&s, 2), Some(c));
        assert_eq!(consume(&s, 7), Some(a));
        assert_eq!(consume(&s, 7), Some(b));
        assert_eq!(consume(&s, 7), None);
        assert_eq!(ready(&s, 0), 0);
        // The queue emptied: the next event writes the head again.
        assert_eq!(
            e.send(&mut s, b, DomId(0)),
            Ok(Sent::Raised(VcpuId::unvalidated(0)))
        );
        assert_eq!(head(&s, 7), b);
        assert_eq!(consume(&s, 7), Some(b));
        // Same port again right after it was the tail.
        assert_eq!(
            e.send(&mut s, b, DomId(0)),
            Ok(Sent::Raised(VcpuId::unvalidated(0)))
        );
        assert_eq!((head(&s, 7), word(&s, b) & LINK_MASK), (b, 0));
    }

    #[test]
    fn masked_events_wait_for_unmask() {
        let mut s = Fake::default();
        let mut e = fifo(1, &mut s);
        let p = e.bind_ipi(0).unwrap();
        set_word(&s, p, bit(MASKED));
        assert_eq!(
            e.send(&mut s, p, DomId(0)),
            Ok(Sent::Raised(VcpuId::unvalidated(0))),
            "pending, for pollers"
        );
        assert!(!s.upcall[0] && word(&s, p) & bit(LINKED) == 0);
        assert!(e.is_pending(&s, p));
        assert_eq!(e.unmask(&mut s, p), Ok(true));
        assert!(s.upcall[0] && head(&s, 7) == p);
        assert_eq!(word(&s, p) & (bit(MASKED) | bit(LINKED)), bit(LINKED));
        // Closing clears PENDING; unmask of a closed port does nothing.
        e.close(&mut s, p).unwrap();
        assert!(!e.is_pending(&s, p));
        assert_eq!(e.unmask(&mut s, p), Ok(false));
    }

    #[test]
    fn events_before_the_array_page_are_raised_when_it_comes() {
        let mut s = Fake::default();
        let mut e = EventChannels::new(1);
        let t = e.bind_virq(virq::TIMER, 0).unwrap();
        // Pending under 2-level, carried over.
        e.raise_virq(&mut s, virq::TIMER, VcpuId::unvalidated(0));
        e.init_control(&s, 0, CB, 0, &mut ok).unwrap();
        let ipi = e.bind_ipi(0).unwrap();
        assert_eq!(
            e.send(&mut s, ipi, DomId(0)),
            Ok(Sent::Nothing),
            "no page yet: held back"
        );
        assert!(e.is_masked(&s, ipi) && !e.is_pending(&s, ipi));
        assert_eq!(
            e.expand_array(&mut s, ARRAY, &mut ok),
            Ok(alloc::vec![0, 0])
        );
        assert_eq!(consume(&s, 7), Some(t));
        assert_eq!(consume(&s, 7), Some(ipi));
    }

    #[test]
    fn an_event_moves_between_queues() {
        let mut s = Fake::default();
        let mut e = fifo(2, &mut s);
        e.init_control(&s, 1, CB1, 0, &mut ok).unwrap();
        let p = e.bind_pirq(5).unwrap();
        assert_eq!(e.send(&mut s, p, DomId(0)), Err(EvtchnError::Invalid));
        assert!(e.set_pending(&mut s, p));
        assert_eq!(consume(&s, 7), Some(p));
        // Moved to vCPU 1 while vCPU 0's queue still names it as the tail.
        e.bind_vcpu(p, 1).unwrap();
        assert!(e.set_pending(&mut s, p));
        assert_eq!(
            s.load(WordAt {
                mfn: CB1,
                offset: 0
            }),
            1 << 7
        );
        assert_eq!(
            s.load(WordAt {
                mfn: CB1,
                offset: HEAD_OFFSET + 28
            }),
            p.raw()
        );
        // vCPU 0's queue is empty again: a new event there becomes its head.
        let q = e.bind_ipi(0).unwrap();
        assert!(e.set_pending(&mut s, q));
        assert_eq!(head(&s, 7), q);
        assert_eq!(word(&s, p) & LINK_MASK, 0, "not linked across vCPUs");
    }

    #[test]
    fn hostile_words_never_loop() {
        let mut s = Fake::default();
        let mut e = fifo(1, &mut s);
        let a = e.bind_ipi(0).unwrap();
        let b = e.bind_ipi(0).unwrap();
        e.send(&mut s, a, DomId(0)).unwrap();
        // The guest flips the tail word on every access: the link gives up, bounded.
        s.flip = Some(a.raw());
        assert!(e.send(&mut s, b, DomId(0)).is_ok());
        assert_eq!(s.flips(), 1 + SET_LINK_TRIES, "bounded tries");
        s.flip = None;
        // Garbage words: a self-link, all bits, links past the array.
        for v in [u32::MAX, bit(LINKED) | a.raw(), LINK_MASK] {
            set_word(&s, a, v);
            set_word(&s, b, v);
            let _ = e.send(&mut s, a, DomId(0));
            let _ = e.send(&mut s, b, DomId(0));
            let _ = e.unmask(&mut s, b);
        }
        // A port past the array: held back, never written.
        let far = port(WORDS_PER_PAGE + 5);
        assert!(!e.is_pending(&s, far));
    }

    #[test]
    fn reset_state_as_xen() {
        let mut s = Fake::default();
        let mut e = fifo(1, &mut s);
        let keep = e.alloc_unbound(DomId(0x7ff2)).unwrap();
        let p = e.bind_ipi(0).unwrap();
        assert_eq!(e.reset_begin(true), None, "reset_cont with no reset");
        assert_eq!(e.reset_begin(false), Some(port(1)));
        assert_eq!(e.reset_begin(false), None, "one at a time");
        e.reset_pause(port(2));
        assert_eq!(e.reset_begin(true), Some(port(2)));
        assert_eq!(e.reset_end(Some(keep)), None, "a port still bound");
        e.close(&mut s, p).unwrap();
        assert_eq!(e.reset_begin(false), Some(port(1)));
        assert_eq!(e.reset_end(Some(keep)), Some(alloc::vec![CB, ARRAY]));
        assert!(!e.is_fifo());
        assert_eq!(
            e.reset_end(Some(keep)),
            Some(alloc::vec![]),
            "2-level: nothing to release"
        );
    }

    #[test]
    fn ports_grow_past_the_2_level_range_only_with_fifo() {
        let mut s = Fake::default();
        let mut e = EventChannels::new(1);
        for _ in 1..EVTCHN_2L_NR_CHANNELS {
            e.bind_ipi(0).unwrap();
        }
        assert_eq!(e.bind_ipi(0), Err(EvtchnError::NoSpace));
        e.init_control(&s, 0, CB, 0, &mut ok).unwrap();
        let p = e.bind_ipi(0).unwrap();
        assert_eq!(p, port(EVTCHN_2L_NR_CHANNELS));
        for page in 0..4 {
            e.expand_array(&mut s, array(page), &mut ok).unwrap();
        }
        assert_eq!(e.set_priority(p, 0), Ok(()));
        assert_eq!(
            e.send(&mut s, p, DomId(0)),
            Ok(Sent::Nothing),
            "its page is missing"
        );
        assert_eq!(
            e.expand_array(&mut s, array(4), &mut ok),
            Ok(alloc::vec![0])
        );
        assert_eq!(head(&s, 0), p);
        e.close(&mut s, p).unwrap();
        assert_eq!(e.fifo_destroy().len(), 6);
        assert_eq!(e.port(p), None, "back to 4096 ports");
    }

    #[test]
    fn a_channel_between_a_fifo_and_a_two_level_domain() {
        // d0 stays on 2-level, d1 uses FIFO: each end is raised by its own domain's rules.
        let (mut s0, mut s1) = (Fake::default(), Fake::default());
        let mut d0 = EventChannels::new(1);
        let mut d1 = fifo(1, &mut s1);
        let p1 = d1.alloc_unbound(DomId(0)).unwrap();
        let p0 =
            super::super::bind_interdomain(&mut d0, DomId(0), Some(&mut d1), DomId(1), p1).unwrap();
        assert_eq!(
            d0.send(&mut s0, p0, DomId(0)),
            Ok(Sent::Remote {
                dom: DomId(1),
                port: p1
            })
        );
        assert_eq!(
            d1.deliver(&mut s1, p1, DomId(0), p0),
            Sent::Raised(VcpuId::unvalidated(0))
        );
        assert!(
            s1.upcall[0] && head(&s1, 7) == p1,
            "queued in d1's FIFO queue"
        );
        assert!(
            d1.is_pending(&s1, p1) && !s1.is_pending(p1),
            "not in the bitmap"
        );
        assert_eq!(
            d1.deliver(&mut s1, p1, DomId(0), p0),
            Sent::Nothing,
            "pending"
        );
        assert_eq!(consume(&s1, 7), Some(p1));
        assert_eq!(
            d1.send(&mut s1, p1, DomId(1)),
            Ok(Sent::Remote {
                dom: DomId(0),
                port: p0
            })
        );
        assert_eq!(
            d0.deliver(&mut s0, p0, DomId(1), p1),
            Sent::Raised(VcpuId::unvalidated(0))
        );
        assert!(s0.is_pending(p0) && s0.upcall[0], "d0's 2-level bitmap");
        // d1 closes (as its reset does): its FIFO word is cleared, d0's end is unbound.
        set_word(&s1, p1, bit(PENDING));
        assert_eq!(
            d1.close(&mut s1, p1),
            Ok(PortState::Interdomain {
                remote_dom: DomId(0),
                remote_port: p0
            })
        );
        assert!(d0.unbind_peer(p0, DomId(1), p1));
        assert!(!d1.is_pending(&s1, p1));
        assert_eq!(
            d0.port(p0),
            Some((PortState::Unbound { remote: DomId(1) }, 0))
        );
        assert_eq!(d0.send(&mut s0, p0, DomId(0)), Ok(Sent::Nothing));
    }

    #[test]
    fn port_limits_of_both_abis() {
        let mut s = Fake::default();
        // A domU's max_evtchn_port holds under FIFO too.
        let mut u = fifo(1, &mut s);
        u.set_max_port(1023);
        assert_eq!(
            (1..1024).map(|_| u.bind_ipi(0)).last(),
            Some(Ok(port(1023)))
        );
        assert_eq!(u.free_port(), Err(EvtchnError::NoSpace));
        // A limit past 4095 counts only once FIFO allows it.
        let mut e = EventChannels::new(1);
        e.set_max_port(5000);
        for _ in 1..EVTCHN_2L_NR_CHANNELS {
            e.alloc_unbound(DomId(0)).unwrap();
        }
        assert_eq!(e.free_port(), Err(EvtchnError::NoSpace), "2-level: 4095");
        let mut other = EventChannels::new(1);
        let theirs = other.alloc_unbound(DomId(0)).unwrap();
        assert_eq!(
            super::super::bind_interdomain(&mut e, DomId(0), Some(&mut other), DomId(1), theirs),
            Err(EvtchnError::NoSpace)
        );
        assert_eq!(
            other.port(theirs),
            Some((PortState::Unbound { remote: DomId(0) }, 0)),
            "a failed bind leaves the other end"
        );
        e.init_control(&s, 0, CB, 0, &mut ok).unwrap();
        assert_eq!(e.free_port(), Ok(port(EVTCHN_2L_NR_CHANNELS)));
        // A bound port past the 2-level range: the table grows under the `&mut` path.
        assert_eq!(
            super::super::bind_interdomain(&mut e, DomId(0), Some(&mut other), DomId(1), theirs),
            Ok(port(EVTCHN_2L_NR_CHANNELS))
        );
        assert_eq!(e.set_priority(port(EVTCHN_2L_NR_CHANNELS), 3), Ok(()));
        for _ in EVTCHN_2L_NR_CHANNELS + 1..=5000 {
            e.bind_ipi(0).unwrap();
        }
        assert_eq!(e.bind_ipi(0), Err(EvtchnError::NoSpace), "max_evtchn_port");
        assert_eq!(e.nr_ports(), 5001);
    }
}
