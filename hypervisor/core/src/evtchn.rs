//! 2-level event channels of one domain (`public/event_channel.h`; `shared/xen-abi.md` 6.1).
//!
//! Port states live here; pending/mask bits, selectors and `evtchn_upcall_pending` live in the
//! domain's shared_info page, reached through [`SharedBits`] with atomic operations because the
//! guest changes the same words concurrently. Ports are allocated lowest-first from 1; port 0 is
//! never handed out.
//!
//! Once the guest registers a FIFO control block ([`fifo`], `EVTCHNOP_init_control`), pending
//! and mask state move to its event words: delivery, unmask, close and the pending test
//! dispatch to [`fifo::Fifo`] (Xen's `evtchn_port_ops`), and ports may go past 4096.

use alloc::boxed::Box;
use alloc::vec::Vec;

use xen_abi::event_channel::{EVTCHN_2L_NR_CHANNELS, stat};
use xen_abi::xen::{NR_VIRQS, virq};

/// Ports of the 2-level ABI for 64-bit guests.
pub const NR_PORTS: usize = EVTCHN_2L_NR_CHANNELS as usize;

pub mod fifo;

/// The shared-page side of event delivery; the FIFO ABI's event words and control blocks
/// through [`fifo::GuestWords`].
pub trait SharedBits: fifo::GuestWords {
    /// Sets `evtchn_pending[port]`; returns its previous value.
    fn test_and_set_pending(&mut self, port: u32) -> bool;
    /// Clears `evtchn_pending[port]`.
    fn clear_pending(&mut self, port: u32);
    /// Reads `evtchn_pending[port]`.
    fn is_pending(&self, port: u32) -> bool;
    /// Reads `evtchn_mask[port]`.
    fn is_masked(&self, port: u32) -> bool;
    /// Clears `evtchn_mask[port]`; returns its previous value.
    fn test_and_clear_mask(&mut self, port: u32) -> bool;
    /// Sets bit `word` of vCPU `vcpu`'s `evtchn_pending_sel`; returns its previous value.
    fn test_and_set_sel(&mut self, vcpu: u32, word: u32) -> bool;
    /// Sets vCPU `vcpu`'s `evtchn_upcall_pending`.
    fn set_upcall_pending(&mut self, vcpu: u32);
}

/// What a port is bound to (`EVTCHNSTAT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    /// Free.
    Closed,
    /// Allocated for a remote domain to bind.
    Unbound {
        /// Who may bind it.
        remote: u16,
    },
    /// A physical IRQ of the domain (dom0's devices).
    Pirq(u32),
    /// A virtual IRQ.
    Virq(u32),
    /// An inter-processor event to the notify vCPU.
    Ipi,
}

impl PortState {
    /// `EVTCHNSTAT_*` number.
    pub const fn status(&self) -> u32 {
        match self {
            PortState::Closed => stat::CLOSED,
            PortState::Unbound { .. } => stat::UNBOUND,
            PortState::Pirq(_) => stat::PIRQ,
            PortState::Virq(_) => stat::VIRQ,
            PortState::Ipi => stat::IPI,
        }
    }
}

/// Why an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvtchnError {
    /// Bad port, VIRQ, or binding (`-EINVAL`).
    Invalid,
    /// Already bound (`-EEXIST`).
    Exists,
    /// No such vCPU (`-ENOENT`).
    NoVcpu,
    /// No free port (`-ENOSPC`).
    NoSpace,
}

/// The ports of one domain.
pub struct EventChannels {
    ports: Vec<(PortState, u32)>,
    /// `virq_port[vcpu][virq]`, 0 = unbound.
    virq_port: Vec<[u32; NR_VIRQS as usize]>,
    /// `pirq_port[pirq]`, 0 = unbound.
    pirq_port: Vec<u32>,
    /// The FIFO ABI's state, once the guest switched to it.
    fifo: Option<Box<fifo::Fifo>>,
    /// The next port `EVTCHNOP_reset` closes, 0 when none is under way.
    next_evtchn: u32,
}

fn per_vcpu_virq(virq: u32) -> bool {
    matches!(
        virq,
        virq::TIMER | virq::DEBUG | virq::XENOPROF | virq::XENPMU
    )
}

/// The vCPU under which `virq`'s binding is recorded when its port notifies `notify`: its own
/// for a per-vCPU VIRQ, vCPU 0 for a global one (bound on vCPU 0, movable by `bind_vcpu`).
fn virq_vcpu(virq: u32, notify: u32) -> u32 {
    if per_vcpu_virq(virq) { notify } else { 0 }
}

impl EventChannels {
    /// Ports for a domain with `nr_vcpus` vCPUs.
    pub fn new(nr_vcpus: u32) -> Self {
        Self {
            ports: alloc::vec![(PortState::Closed, 0); NR_PORTS],
            virq_port: alloc::vec![[0; NR_VIRQS as usize]; nr_vcpus as usize],
            pirq_port: alloc::vec![0; crate::pirq::NR_PIRQS as usize],
            fifo: None,
            next_evtchn: 0,
        }
    }

    fn alloc(&mut self, state: PortState, vcpu: u32) -> Result<u32, EvtchnError> {
        let limit = self.ports.len().min(self.max_ports());
        let p = match (1..limit).find(|&p| self.ports[p].0 == PortState::Closed) {
            Some(p) => p,
            // The FIFO ABI's ports past 4096, added as they are needed.
            None if limit < self.max_ports() && self.ports.try_reserve(1).is_ok() => {
                self.ports.push((PortState::Closed, 0));
                limit
            }
            None => return Err(EvtchnError::NoSpace),
        };
        if let Some(f) = self.fifo.as_mut()
            && !f.init_port(p)
        {
            return Err(EvtchnError::NoSpace);
        }
        self.ports[p] = (state, vcpu);
        Ok(p as u32)
    }

    fn check_vcpu(&self, vcpu: u32) -> Result<(), EvtchnError> {
        if (vcpu as usize) < self.virq_port.len() {
            Ok(())
        } else {
            Err(EvtchnError::NoVcpu)
        }
    }

    /// The state and notify vCPU of `port`.
    pub fn port(&self, port: u32) -> Option<(PortState, u32)> {
        self.ports.get(port as usize).copied()
    }

    /// `EVTCHNOP_bind_virq`.
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, EvtchnError> {
        if virq >= NR_VIRQS || (!per_vcpu_virq(virq) && vcpu != 0) {
            return Err(EvtchnError::Invalid);
        }
        self.check_vcpu(vcpu)?;
        if self.virq_port[vcpu as usize][virq as usize] != 0 {
            return Err(EvtchnError::Exists);
        }
        let p = self.alloc(PortState::Virq(virq), vcpu)?;
        self.virq_port[vcpu as usize][virq as usize] = p;
        Ok(p)
    }

    /// `EVTCHNOP_bind_pirq` (the caller checked the PIRQ is the domain's), notifying vCPU 0.
    pub fn bind_pirq(&mut self, pirq: u32) -> Result<u32, EvtchnError> {
        let slot = *self
            .pirq_port
            .get(pirq as usize)
            .ok_or(EvtchnError::Invalid)?;
        if slot != 0 {
            return Err(EvtchnError::Exists);
        }
        let p = self.alloc(PortState::Pirq(pirq), 0)?;
        self.pirq_port[pirq as usize] = p;
        Ok(p)
    }

    /// The port `pirq` is bound to, if any.
    pub fn pirq_port(&self, pirq: u32) -> Option<u32> {
        self.pirq_port
            .get(pirq as usize)
            .copied()
            .filter(|&p| p != 0)
    }

    /// `EVTCHNOP_bind_ipi`.
    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<u32, EvtchnError> {
        self.check_vcpu(vcpu)?;
        self.alloc(PortState::Ipi, vcpu)
    }

    /// `EVTCHNOP_alloc_unbound`.
    pub fn alloc_unbound(&mut self, remote: u16) -> Result<u32, EvtchnError> {
        self.alloc(PortState::Unbound { remote }, 0)
    }

    /// `EVTCHNOP_close`. Returns what the port was bound to, read in the same call that frees
    /// it, so the caller undoes exactly that binding (a PIRQ's line) and no other.
    pub fn close(
        &mut self,
        shared: &mut dyn SharedBits,
        port: u32,
    ) -> Result<PortState, EvtchnError> {
        let (state, vcpu) = self
            .port(port)
            .filter(|&(state, _)| port != 0 && state != PortState::Closed)
            .ok_or(EvtchnError::Invalid)?;
        let slot = match state {
            // A global VIRQ stays recorded under vCPU 0 wherever `bind_vcpu` moved its port
            // (as Xen's `virq_to_evtchn` of vCPU 0); a per-vCPU one never moves.
            PortState::Virq(v) => self
                .virq_port
                .get_mut(virq_vcpu(v, vcpu) as usize)
                .and_then(|ports| ports.get_mut(v as usize)),
            PortState::Pirq(p) => self.pirq_port.get_mut(p as usize),
            _ => None,
        };
        if let Some(slot) = slot {
            debug_assert_eq!(*slot, port, "binding table out of step with port {port}");
            *slot = 0;
        }
        self.ports[port as usize] = (PortState::Closed, 0);
        match &self.fifo {
            Some(f) => f.clear_pending(shared, port),
            None => shared.clear_pending(port),
        }
        Ok(state)
    }

    /// `EVTCHNOP_bind_vcpu`.
    pub fn bind_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), EvtchnError> {
        let (state, _) = self
            .port(port)
            .filter(|_| port != 0)
            .ok_or(EvtchnError::Invalid)?;
        self.check_vcpu(vcpu)?;
        match state {
            PortState::Unbound { .. } | PortState::Pirq(_) => {}
            PortState::Virq(v) if !per_vcpu_virq(v) => {}
            _ => return Err(EvtchnError::Invalid),
        }
        self.ports[port as usize].1 = vcpu;
        Ok(())
    }

    /// Marks `port` pending and notifies its vCPU (the 2-level rules). Returns true if the
    /// port became pending: its vCPU should be woken, as it may be polling the port
    /// (`SCHEDOP_poll` waits on pending bits, masked or not) or now has an upcall.
    pub fn set_pending(&self, shared: &mut dyn SharedBits, port: u32) -> bool {
        let Some((_, vcpu)) = self.port(port) else {
            return false;
        };
        if let Some(f) = &self.fifo {
            return f.set_pending(shared, port, vcpu);
        }
        if shared.test_and_set_pending(port) {
            return false;
        }
        if !shared.is_masked(port) && !shared.test_and_set_sel(vcpu, port / 64) {
            shared.set_upcall_pending(vcpu);
        }
        true
    }

    /// `EVTCHNOP_send`.
    pub fn send(&self, shared: &mut dyn SharedBits, port: u32) -> Result<bool, EvtchnError> {
        match self.port(port).filter(|_| port != 0).map(|p| p.0) {
            Some(PortState::Ipi) => Ok(self.set_pending(shared, port)),
            Some(PortState::Unbound { .. }) => Ok(false),
            _ => Err(EvtchnError::Invalid),
        }
    }

    /// Raises `virq` (bound on `vcpu`) if it is bound. Returns the vCPU to wake if the port
    /// became pending: the port's notify vCPU, which `bind_vcpu` may have moved.
    pub fn raise_virq(&self, shared: &mut dyn SharedBits, virq: u32, vcpu: u32) -> Option<u32> {
        let p = self
            .virq_port
            .get(vcpu as usize)
            .and_then(|v| v.get(virq as usize))
            .copied()
            .unwrap_or(0);
        if p != 0 && self.set_pending(shared, p) {
            self.port(p).map(|(_, v)| v)
        } else {
            None
        }
    }

    /// `EVTCHNOP_unmask`.
    pub fn unmask(&self, shared: &mut dyn SharedBits, port: u32) -> Result<bool, EvtchnError> {
        let (state, vcpu) = self.port(port).ok_or(EvtchnError::Invalid)?;
        if let Some(f) = &self.fifo {
            return Ok(state != PortState::Closed && f.unmask(shared, port, vcpu));
        }
        if shared.test_and_clear_mask(port)
            && shared.is_pending(port)
            && !shared.test_and_set_sel(vcpu, port / 64)
        {
            shared.set_upcall_pending(vcpu);
            return Ok(true);
        }
        Ok(false)
    }

    /// True if `port` is pending, in the ABI in use (`SCHEDOP_poll`).
    pub fn is_pending(&self, shared: &dyn SharedBits, port: u32) -> bool {
        match &self.fifo {
            Some(f) => f.is_pending(shared, port),
            None => shared.is_pending(port),
        }
    }

    /// True if `port` is masked, in the ABI in use.
    pub fn is_masked(&self, shared: &dyn SharedBits, port: u32) -> bool {
        match &self.fifo {
            Some(f) => f.is_masked(shared, port),
            None => shared.is_masked(port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use alloc::collections::BTreeMap;
    use core::cell::RefCell;

    use super::fifo::{GuestWords, WordAt};

    /// The shared page and the guest's FIFO frames. `flip`: a port whose event word the
    /// "guest" changes under every compare-exchange (counted in `flips`).
    pub(super) struct Fake {
        pending: [u64; 64],
        mask: [u64; 64],
        sel: [u64; 2],
        pub(super) upcall: [bool; 2],
        words: RefCell<BTreeMap<(u64, u32), u32>>,
        pub(super) flip: Option<u32>,
        flips: core::cell::Cell<u32>,
    }

    impl Default for Fake {
        fn default() -> Self {
            Fake {
                pending: [0; 64],
                mask: [0; 64],
                sel: [0; 2],
                upcall: [false; 2],
                words: RefCell::default(),
                flip: None,
                flips: core::cell::Cell::new(0),
            }
        }
    }

    impl Fake {
        fn update(&self, at: WordAt, f: impl FnOnce(u32) -> u32) -> u32 {
            let mut w = self.words.borrow_mut();
            let v = w.entry((at.mfn, at.offset)).or_insert(0);
            let old = *v;
            *v = f(old);
            old
        }

        /// Compare-exchanges seen on the flipping word.
        pub(super) fn flips(&self) -> u32 {
            self.flips.get()
        }
    }

    impl GuestWords for Fake {
        fn load(&self, at: WordAt) -> u32 {
            self.update(at, |v| v)
        }
        fn store(&self, at: WordAt, value: u32) {
            self.update(at, |_| value);
        }
        fn compare_exchange(&self, at: WordAt, old: u32, new: u32) -> u32 {
            if let Some(port) = self.flip
                && at.offset == port % 1024 * 4
            {
                self.flips.set(self.flips.get() + 1);
                return self.update(at, |v| v ^ (1 << 30)) ^ (1 << 30);
            }
            self.update(at, |v| if v == old { new } else { v })
        }
        fn fetch_or(&self, at: WordAt, bits: u32) -> u32 {
            self.update(at, |v| v | bits)
        }
        fn fetch_and(&self, at: WordAt, bits: u32) -> u32 {
            self.update(at, |v| v & bits)
        }
    }

    impl SharedBits for Fake {
        fn test_and_set_pending(&mut self, p: u32) -> bool {
            let old = self.pending[p as usize / 64] >> (p % 64) & 1 == 1;
            self.pending[p as usize / 64] |= 1 << (p % 64);
            old
        }
        fn clear_pending(&mut self, p: u32) {
            self.pending[p as usize / 64] &= !(1 << (p % 64));
        }
        fn is_pending(&self, p: u32) -> bool {
            self.pending[p as usize / 64] >> (p % 64) & 1 == 1
        }
        fn is_masked(&self, p: u32) -> bool {
            self.mask[p as usize / 64] >> (p % 64) & 1 == 1
        }
        fn test_and_clear_mask(&mut self, p: u32) -> bool {
            let old = self.is_masked(p);
            self.mask[p as usize / 64] &= !(1 << (p % 64));
            old
        }
        fn test_and_set_sel(&mut self, v: u32, w: u32) -> bool {
            let old = self.sel[v as usize] >> w & 1 == 1;
            self.sel[v as usize] |= 1 << w;
            old
        }
        fn set_upcall_pending(&mut self, v: u32) {
            self.upcall[v as usize] = true;
        }
    }

    #[test]
    fn ports_are_lowest_first_from_one() {
        let mut e = EventChannels::new(2);
        assert_eq!(e.bind_virq(virq::TIMER, 0), Ok(1));
        assert_eq!(e.bind_ipi(1), Ok(2));
        assert_eq!(e.alloc_unbound(0), Ok(3));
        e.close(&mut Fake::default(), 2).unwrap();
        assert_eq!(e.bind_virq(virq::TIMER, 1), Ok(2));
    }

    #[test]
    fn virq_rules() {
        let mut e = EventChannels::new(2);
        assert_eq!(e.bind_virq(virq::TIMER, 1), Ok(1));
        assert_eq!(e.bind_virq(virq::TIMER, 1), Err(EvtchnError::Exists));
        assert_eq!(
            e.bind_virq(virq::CONSOLE, 1),
            Err(EvtchnError::Invalid),
            "global VIRQs bind to vCPU 0"
        );
        assert_eq!(e.bind_virq(24, 0), Err(EvtchnError::Invalid));
        assert_eq!(e.bind_virq(virq::TIMER, 7), Err(EvtchnError::NoVcpu));
        let c = e.bind_virq(virq::CONSOLE, 0).unwrap();
        assert_eq!(e.bind_vcpu(c, 1), Ok(()));
        assert_eq!(
            e.bind_vcpu(1, 0),
            Err(EvtchnError::Invalid),
            "per-vCPU VIRQs stay put"
        );
    }

    #[test]
    fn delivery_follows_the_two_level_rules() {
        let mut e = EventChannels::new(1);
        let mut s = Fake::default();
        let t = e.bind_virq(virq::TIMER, 0).unwrap();
        assert_eq!(e.raise_virq(&mut s, virq::TIMER, 0), Some(0));
        assert!(s.upcall[0] && s.sel[0] & 1 == 1 && s.is_pending(t));
        assert_eq!(
            e.raise_virq(&mut s, virq::TIMER, 0),
            None,
            "already pending: no second notification"
        );
        // A masked port becomes pending without an upcall (a vCPU polling it must still be
        // woken, hence "true"); unmask then raises the upcall.
        let ipi = e.bind_ipi(0).unwrap();
        s = Fake::default();
        s.mask[0] |= 1 << ipi;
        assert_eq!(e.send(&mut s, ipi), Ok(true));
        assert!(s.is_pending(ipi) && !s.upcall[0]);
        assert_eq!(e.send(&mut s, ipi), Ok(false), "already pending");
        assert_eq!(e.unmask(&mut s, ipi), Ok(true));
        assert!(s.upcall[0]);
        assert_eq!(e.send(&mut s, 0), Err(EvtchnError::Invalid));
        assert_eq!(
            e.send(&mut s, t),
            Err(EvtchnError::Invalid),
            "VIRQ ports cannot be sent to"
        );
        assert_eq!(
            e.raise_virq(&mut s, virq::DEBUG, 0),
            None,
            "unbound VIRQ: nothing happens"
        );
        // A global VIRQ moved to vCPU 1 wakes vCPU 1, though it is raised "on vCPU 0".
        let mut e2 = EventChannels::new(2);
        let c = e2.bind_virq(virq::CONSOLE, 0).unwrap();
        e2.bind_vcpu(c, 1).unwrap();
        assert_eq!(
            e2.raise_virq(&mut Fake::default(), virq::CONSOLE, 0),
            Some(1)
        );
    }

    #[test]
    fn close_frees_and_clears() {
        let mut e = EventChannels::new(1);
        let mut s = Fake::default();
        let p = e.bind_ipi(0).unwrap();
        e.send(&mut s, p).unwrap();
        e.close(&mut s, p).unwrap();
        assert!(!s.is_pending(p));
        assert_eq!(e.close(&mut s, p), Err(EvtchnError::Invalid));
        assert_eq!(e.close(&mut s, 0), Err(EvtchnError::Invalid));
        assert_eq!(e.close(&mut s, 99_999), Err(EvtchnError::Invalid));
    }

    #[test]
    fn a_moved_global_virq_closes_its_own_binding() {
        let mut e = EventChannels::new(2);
        let mut s = Fake::default();
        let t1 = e.bind_virq(virq::TIMER, 1).unwrap();
        let c = e.bind_virq(virq::CONSOLE, 0).unwrap();
        e.bind_vcpu(c, 1).unwrap();
        assert_eq!(e.close(&mut s, c), Ok(PortState::Virq(virq::CONSOLE)));
        assert_eq!(
            e.raise_virq(&mut s, virq::CONSOLE, 0),
            None,
            "a closed VIRQ port is never raised"
        );
        assert_eq!(
            e.raise_virq(&mut s, virq::TIMER, 1),
            Some(1),
            "vCPU 1's own VIRQs untouched"
        );
        // The port is reused by an IPI; the VIRQ must not reach it, and binds again.
        let ipi = e.bind_ipi(0).unwrap();
        assert_eq!(ipi, c);
        assert_eq!(e.raise_virq(&mut s, virq::CONSOLE, 0), None);
        assert!(!s.is_pending(ipi));
        let c2 = e.bind_virq(virq::CONSOLE, 0).unwrap();
        assert_eq!(e.raise_virq(&mut s, virq::CONSOLE, 0), Some(0));
        assert!(s.is_pending(c2));
        assert_eq!(e.close(&mut s, t1), Ok(PortState::Virq(virq::TIMER)));
        assert_eq!(e.bind_virq(virq::TIMER, 1), Ok(t1));
    }

    #[test]
    fn pirq_ports() {
        let mut e = EventChannels::new(2);
        let mut s = Fake::default();
        let p = e.bind_pirq(9).unwrap();
        assert_eq!(e.port(p), Some((PortState::Pirq(9), 0)));
        assert_eq!(e.port(p).map(|x| x.0.status()), Some(3));
        assert_eq!(e.pirq_port(9), Some(p));
        assert_eq!(e.bind_pirq(9), Err(EvtchnError::Exists));
        assert_eq!(
            e.bind_pirq(crate::pirq::NR_PIRQS),
            Err(EvtchnError::Invalid)
        );
        // A device interrupt may be steered to another vCPU; guests cannot send on it.
        e.bind_vcpu(p, 1).unwrap();
        assert_eq!(e.send(&mut s, p), Err(EvtchnError::Invalid));
        assert!(e.set_pending(&mut s, p));
        assert_eq!(s.sel[1], 1, "raised on vCPU 1");
        assert_eq!(e.close(&mut s, p), Ok(PortState::Pirq(9)));
        assert_eq!(e.pirq_port(9), None);
        assert_eq!(e.bind_pirq(9), Ok(p));
    }
}
