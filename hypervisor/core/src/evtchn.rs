//! 2-level event channels of one domain (`public/event_channel.h`; `shared/xen-abi.md` 6.1;
//! Xen 4.17 `xen/common/event_channel.c`).
//!
//! Port states live here; pending/mask bits, selectors and `evtchn_upcall_pending` live in the
//! domain's shared_info page, reached through [`SharedBits`] with atomic operations because the
//! guest changes the same words concurrently. Ports are allocated lowest-first from 1 up to the
//! domain's `max_evtchn_port` and the ABI's limit; port 0 is never handed out.
//!
//! Once the guest registers a FIFO control block ([`fifo`], `EVTCHNOP_init_control`), pending
//! and mask state move to its event words: delivery (from this domain or another), unmask,
//! close and the pending test dispatch to [`fifo::Fifo`] (Xen's `evtchn_port_ops`), and ports
//! may go past 4096.
//!
//! Channels between domains: an [`PortState::Interdomain`] port names its other end by domain
//! id and port, and that end names it back; a domain may be both ends (a loopback channel).
//! Each end follows its own domain's ABI: an event is raised in the receiver's 2-level bitmap
//! or FIFO queue, whichever the receiver uses. Each table is one domain's; the operations that
//! change two ([`bind_interdomain`], a close followed by [`EventChannels::unbind_peer`]) are
//! called by the kernel with both domains' tables locked, so both ends change at once. A
//! domain being destroyed closes every port and allocates no new one
//! ([`EventChannels::begin_destroy`]), so no port of a live domain ever names a domain that is
//! gone.

use alloc::boxed::Box;
use alloc::vec::Vec;

use xen_abi::event_channel::{EVTCHN_2L_NR_CHANNELS, stat};

use crate::ids::{DomId, Port, VcpuId};
use xen_abi::xen::{NR_VIRQS, virq};

/// Ports of the 2-level ABI for 64-bit guests.
pub const NR_PORTS: usize = EVTCHN_2L_NR_CHANNELS as usize;

pub mod fifo;

/// The shared-page side of event delivery; the FIFO ABI's event words and control blocks
/// through [`fifo::GuestWords`].
pub trait SharedBits: fifo::GuestWords {
    /// Sets `evtchn_pending[port]`; returns its previous value.
    fn test_and_set_pending(&mut self, port: Port) -> bool;
    /// Clears `evtchn_pending[port]`.
    fn clear_pending(&mut self, port: Port);
    /// Reads `evtchn_pending[port]`.
    fn is_pending(&self, port: Port) -> bool;
    /// Reads `evtchn_mask[port]`.
    fn is_masked(&self, port: Port) -> bool;
    /// Clears `evtchn_mask[port]`; returns its previous value.
    fn test_and_clear_mask(&mut self, port: Port) -> bool;
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
        /// Who may bind it: the id the allocating domain named, kept as named (as Xen, no
        /// domain of that id need exist; a reserved id, `DOMID_XEN` for the console Hestia
        /// serves, names no guest that could bind it).
        remote: DomId,
    },
    /// Connected to a port of a domain (this one or another), which names this port back.
    Interdomain {
        /// The domain of the other end.
        remote_dom: DomId,
        /// The other end's port.
        remote_port: Port,
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
            PortState::Interdomain { .. } => stat::INTERDOMAIN,
            PortState::Pirq(_) => stat::PIRQ,
            PortState::Virq(_) => stat::VIRQ,
            PortState::Ipi => stat::IPI,
        }
    }
}

/// Why an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvtchnError {
    /// Bad port, VIRQ, or binding; or the domain is being destroyed (`-EINVAL`).
    Invalid,
    /// Already bound (`-EEXIST`).
    Exists,
    /// No such vCPU (`-ENOENT`).
    NoVcpu,
    /// No free port (`-ENOSPC`).
    NoSpace,
}

/// What `EVTCHNOP_send` (or a delivery from the other end) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Nothing to notify: the port was pending already, or unbound (the event is dropped).
    Nothing,
    /// A port became pending: wake this vCPU (it may poll the port, or has an upcall now).
    Raised(VcpuId),
    /// The other end is a port of another domain: deliver there ([`EventChannels::deliver`]).
    Remote {
        /// Its domain.
        dom: DomId,
        /// Its port.
        port: Port,
    },
}

/// The ports of one domain.
pub struct EventChannels {
    ports: Vec<(PortState, u32)>,
    /// `virq_port[vcpu][virq]`, port 0 = unbound.
    virq_port: Vec<[Port; NR_VIRQS as usize]>,
    /// `pirq_port[pirq]`, port 0 = unbound.
    pirq_port: Vec<Port>,
    /// Highest port the domain may use (Xen's `max_evtchn_port`, set at domain creation).
    max_port: u32,
    /// The domain's destruction began: no port is allocated any more (Xen's `is_dying` test in
    /// `get_free_port`).
    dying: bool,
    /// The FIFO ABI's state, once the guest switched to it.
    fifo: Option<Box<fifo::Fifo>>,
    /// The next port `EVTCHNOP_reset` closes, 0 when none is under way.
    next_evtchn: Port,
    /// Ports below this exist (Xen's `valid_evtchns`): Xen allocates its port structures in
    /// buckets of [`PORTS_PER_BUCKET`], the first at domain creation and each further one when
    /// every port below it is taken, and a port in no bucket yet is invalid (`-EINVAL`) for
    /// every sub-op, not merely closed.
    valid: u32,
}

/// Ports per bucket of Xen's port structures (`EVTCHNS_PER_BUCKET`, a page over the structure's
/// size rounded to a power of two): 64 in Debian's Xen 4.17, as the rig shows (`EVTCHNOP_status`
/// of port 63 of a new domain succeeds, of port 64 is `-EINVAL`).
pub const PORTS_PER_BUCKET: u32 = 64;

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
            virq_port: alloc::vec![[Port::ZERO; NR_VIRQS as usize]; nr_vcpus as usize],
            pirq_port: alloc::vec![Port::ZERO; crate::pirq::NR_PIRQS as usize],
            max_port: u32::MAX,
            dying: false,
            fifo: None,
            next_evtchn: Port::ZERO,
            valid: PORTS_PER_BUCKET,
        }
    }

    /// Limits the domain's ports to `0..=max` (Xen's `max_evtchn_port` of
    /// `XEN_DOMCTL_createdomain`); without a limit the ABI's own holds (4095 for 2-level,
    /// 2^17 - 1 for FIFO).
    pub fn set_max_port(&mut self, max: u32) {
        self.max_port = max;
    }

    /// The port the next allocation takes: the lowest free one, below both the domain's limit
    /// (`max_evtchn_port` + 1) and the ABI's ([`Self::max_ports`]); it may lie just past the
    /// table (a FIFO port past 4096, added by [`Self::set`]). `NoSpace` when every port up to
    /// the limit is taken, `Invalid` once the domain's destruction began (Xen's
    /// `get_free_port`).
    pub fn free_port(&self) -> Result<Port, EvtchnError> {
        if self.dying {
            return Err(EvtchnError::Invalid);
        }
        let limit = usize::try_from(self.max_port)
            .map_or(usize::MAX, |m| m.saturating_add(1))
            .min(self.max_ports());
        (1..limit)
            .find(|&p| {
                self.ports
                    .get(p)
                    .is_none_or(|&(state, _)| state == PortState::Closed)
            })
            .map(Port::from_index)
            .ok_or(EvtchnError::NoSpace)
    }

    /// Binds the free port `port` (from [`Self::free_port`]) to `state`, notifying `vcpu`:
    /// the table grows to it if it lies past it, and the FIFO ABI gives it its default
    /// priority (Xen's `evtchn_allocate_port` and `evtchn_port_init`). `NoSpace` if the heap
    /// has no room for it; nothing is bound then.
    fn set(&mut self, port: Port, state: PortState, vcpu: u32) -> Result<(), EvtchnError> {
        let p = port.index();
        if let Some(more) = (p + 1).checked_sub(self.ports.len()).filter(|&n| n > 0) {
            // Past the table only under FIFO (`free_port` returns at most its length).
            self.ports
                .try_reserve(more)
                .map_err(|_| EvtchnError::NoSpace)?;
            self.ports.resize(p + 1, (PortState::Closed, 0));
        }
        if let Some(f) = self.fifo.as_mut()
            && !f.init_port(port)
        {
            return Err(EvtchnError::NoSpace);
        }
        match self.ports.get_mut(p) {
            Some(slot) => {
                *slot = (state, vcpu);
                // `free_port` gives the lowest free port, so a port past the valid ones is the
                // first of the next bucket, which comes into existence now.
                if port.raw() >= self.valid {
                    self.valid = (port.raw() / PORTS_PER_BUCKET + 1) * PORTS_PER_BUCKET;
                }
                Ok(())
            }
            None => Err(EvtchnError::NoSpace),
        }
    }

    fn alloc(&mut self, state: PortState, vcpu: u32) -> Result<Port, EvtchnError> {
        let p = self.free_port()?;
        self.set(p, state, vcpu)?;
        Ok(p)
    }

    /// Starts the domain's destruction: from now on no port is allocated. Returns its open
    /// ports, highest first, for the caller to close (Xen's `evtchn_destroy`).
    pub fn begin_destroy(&mut self) -> Vec<Port> {
        self.dying = true;
        let open = self.ports.iter().enumerate().skip(1).rev();
        open.filter(|&(_, &(state, _))| state != PortState::Closed)
            .map(|(p, _)| Port::from_index(p))
            .collect()
    }

    fn check_vcpu(&self, vcpu: u32) -> Result<(), EvtchnError> {
        if (vcpu as usize) < self.virq_port.len() {
            Ok(())
        } else {
            Err(EvtchnError::NoVcpu)
        }
    }

    /// The state and notify vCPU of `port`; `None` for a port that does not exist (past the
    /// table, or in a bucket Xen would not have allocated yet).
    pub fn port(&self, port: Port) -> Option<(PortState, u32)> {
        if port.raw() >= self.valid {
            return None;
        }
        self.ports.get(port.index()).copied()
    }

    /// `EVTCHNOP_bind_virq`.
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<Port, EvtchnError> {
        if virq >= NR_VIRQS || (!per_vcpu_virq(virq) && vcpu != 0) {
            return Err(EvtchnError::Invalid);
        }
        self.check_vcpu(vcpu)?;
        if !self.virq_port[vcpu as usize][virq as usize].is_zero() {
            return Err(EvtchnError::Exists);
        }
        let p = self.alloc(PortState::Virq(virq), vcpu)?;
        self.virq_port[vcpu as usize][virq as usize] = p;
        Ok(p)
    }

    /// `EVTCHNOP_bind_pirq` (the caller checked the PIRQ is the domain's), notifying vCPU 0.
    pub fn bind_pirq(&mut self, pirq: u32) -> Result<Port, EvtchnError> {
        let slot = *self
            .pirq_port
            .get(pirq as usize)
            .ok_or(EvtchnError::Invalid)?;
        if !slot.is_zero() {
            return Err(EvtchnError::Exists);
        }
        let p = self.alloc(PortState::Pirq(pirq), 0)?;
        self.pirq_port[pirq as usize] = p;
        Ok(p)
    }

    /// The port `pirq` is bound to, if any.
    pub fn pirq_port(&self, pirq: u32) -> Option<Port> {
        self.pirq_port
            .get(pirq as usize)
            .copied()
            .filter(|p| !p.is_zero())
    }

    /// `EVTCHNOP_bind_ipi`.
    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<Port, EvtchnError> {
        self.check_vcpu(vcpu)?;
        self.alloc(PortState::Ipi, vcpu)
    }

    /// `EVTCHNOP_alloc_unbound`.
    pub fn alloc_unbound(&mut self, remote: DomId) -> Result<Port, EvtchnError> {
        self.alloc(PortState::Unbound { remote }, 0)
    }

    /// `EVTCHNOP_close`. Returns what the port was bound to, read in the same call that frees
    /// it, so the caller undoes exactly that binding (a PIRQ's line, the other end of an
    /// inter-domain channel: [`Self::unbind_peer`]) and no other.
    pub fn close<S: SharedBits + ?Sized>(
        &mut self,
        shared: &mut S,
        port: Port,
    ) -> Result<PortState, EvtchnError> {
        let (state, vcpu) = self
            .port(port)
            .filter(|&(state, _)| !port.is_zero() && state != PortState::Closed)
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
            *slot = Port::ZERO;
        }
        if let Some(slot) = self.ports.get_mut(port.index()) {
            *slot = (PortState::Closed, 0);
        }
        match &self.fifo {
            Some(f) => f.clear_pending(shared, port),
            None => shared.clear_pending(port),
        }
        Ok(state)
    }

    /// The other end of a channel was closed: `port`, if it is still connected to port
    /// `closer_port` of domain `closer`, becomes unbound for `closer`, which may bind it again
    /// (Xen's `evtchn_close`). Its notify vCPU and pending bit stay. False if `port` was not
    /// that end (a broken pairing; nothing changes).
    pub fn unbind_peer(&mut self, port: Port, closer: DomId, closer_port: Port) -> bool {
        let end = PortState::Interdomain {
            remote_dom: closer,
            remote_port: closer_port,
        };
        match self.ports.get_mut(port.index()) {
            Some(slot) if slot.0 == end => {
                slot.0 = PortState::Unbound { remote: closer };
                true
            }
            _ => false,
        }
    }

    /// `EVTCHNOP_bind_vcpu`: the vCPU is checked first (-ENOENT), then the port; unbound,
    /// inter-domain, PIRQ and global VIRQ ports move, the others are -EINVAL (Xen 4.17).
    pub fn bind_vcpu(&mut self, port: Port, vcpu: u32) -> Result<(), EvtchnError> {
        self.check_vcpu(vcpu)?;
        let (state, _) = self
            .port(port)
            .filter(|_| !port.is_zero())
            .ok_or(EvtchnError::Invalid)?;
        match state {
            PortState::Unbound { .. } | PortState::Interdomain { .. } | PortState::Pirq(_) => {}
            PortState::Virq(v) if !per_vcpu_virq(v) => {}
            _ => return Err(EvtchnError::Invalid),
        }
        if let Some(slot) = self.ports.get_mut(port.index()) {
            slot.1 = vcpu;
        }
        Ok(())
    }

    /// Marks `port` pending and notifies its vCPU, by the rules of the ABI in use (an event from
    /// another domain too: [`Self::deliver`] comes here). Returns true if the
    /// port became pending: its vCPU should be woken, as it may be polling the port
    /// (`SCHEDOP_poll` waits on pending bits, masked or not) or now has an upcall.
    pub fn set_pending<S: SharedBits + ?Sized>(&self, shared: &mut S, port: Port) -> bool {
        let Some((_, vcpu)) = self.port(port) else {
            return false;
        };
        if let Some(f) = &self.fifo {
            return f.set_pending(shared, port, vcpu);
        }
        if shared.test_and_set_pending(port) {
            return false;
        }
        if !shared.is_masked(port) && !shared.test_and_set_sel(vcpu, port.raw() / 64) {
            shared.set_upcall_pending(vcpu);
        }
        true
    }

    /// Marks `port` pending: [`Sent::Raised`] with its notify vCPU if it became pending.
    fn raise<S: SharedBits + ?Sized>(&self, shared: &mut S, port: Port) -> Sent {
        match self.port(port) {
            Some((_, vcpu)) if self.set_pending(shared, port) => {
                Sent::Raised(VcpuId::unvalidated(vcpu))
            }
            _ => Sent::Nothing,
        }
    }

    /// `EVTCHNOP_send` on `port` of domain `me`: an IPI port raises itself, an inter-domain
    /// port its other end (here if the channel is a loopback, else [`Sent::Remote`]), an
    /// unbound port drops the event; any other is -EINVAL.
    pub fn send<S: SharedBits + ?Sized>(
        &self,
        shared: &mut S,
        port: Port,
        me: DomId,
    ) -> Result<Sent, EvtchnError> {
        match self.port(port).filter(|_| !port.is_zero()).map(|p| p.0) {
            Some(PortState::Ipi) => Ok(self.raise(shared, port)),
            Some(PortState::Interdomain {
                remote_dom,
                remote_port,
            }) => Ok(if remote_dom == me {
                self.raise(shared, remote_port)
            } else {
                Sent::Remote {
                    dom: remote_dom,
                    port: remote_port,
                }
            }),
            Some(PortState::Unbound { .. }) => Ok(Sent::Nothing),
            _ => Err(EvtchnError::Invalid),
        }
    }

    /// An event sent from port `from_port` of domain `from` to `port`: raised only if `port`
    /// is still that channel's other end (it may have been closed, and even reused, since the
    /// sender looked).
    pub fn deliver<S: SharedBits + ?Sized>(
        &self,
        shared: &mut S,
        port: Port,
        from: DomId,
        from_port: Port,
    ) -> Sent {
        let end = PortState::Interdomain {
            remote_dom: from,
            remote_port: from_port,
        };
        match self.port(port) {
            Some((state, _)) if state == end => self.raise(shared, port),
            _ => Sent::Nothing,
        }
    }

    /// Raises `virq` (bound on `vcpu`) if it is bound. Returns the vCPU to wake if the port
    /// became pending: the port's notify vCPU, which `bind_vcpu` may have moved.
    pub fn raise_virq<S: SharedBits + ?Sized>(
        &self,
        shared: &mut S,
        virq: u32,
        vcpu: VcpuId,
    ) -> Option<VcpuId> {
        let p = self
            .virq_port
            .get(vcpu.index())
            .and_then(|v| v.get(virq as usize))
            .copied()
            .unwrap_or(Port::ZERO);
        if !p.is_zero() && self.set_pending(shared, p) {
            self.port(p).map(|(_, v)| VcpuId::unvalidated(v))
        } else {
            None
        }
    }

    /// `EVTCHNOP_unmask`.
    pub fn unmask<S: SharedBits + ?Sized>(
        &self,
        shared: &mut S,
        port: Port,
    ) -> Result<bool, EvtchnError> {
        let (state, vcpu) = self.port(port).ok_or(EvtchnError::Invalid)?;
        if let Some(f) = &self.fifo {
            return Ok(state != PortState::Closed && f.unmask(shared, port, vcpu));
        }
        if shared.test_and_clear_mask(port)
            && shared.is_pending(port)
            && !shared.test_and_set_sel(vcpu, port.raw() / 64)
        {
            shared.set_upcall_pending(vcpu);
            return Ok(true);
        }
        Ok(false)
    }

    /// True if `port` is pending, in the ABI in use (`SCHEDOP_poll`).
    pub fn is_pending<S: SharedBits + ?Sized>(&self, shared: &S, port: Port) -> bool {
        match &self.fifo {
            Some(f) => f.is_pending(shared, port),
            None => shared.is_pending(port),
        }
    }

    /// `SCHEDOP_poll`'s test of one port (Xen's `evtchn_port_poll`): `Invalid` for a port
    /// that does not exist, is free or is the reserved port 0; else whether it is pending.
    pub fn poll<S: SharedBits + ?Sized>(
        &self,
        shared: &S,
        port: Port,
    ) -> Result<bool, EvtchnError> {
        match self.port(port) {
            Some((PortState::Closed, _)) | None => Err(EvtchnError::Invalid),
            Some(_) if port.is_zero() => Err(EvtchnError::Invalid),
            Some(_) => Ok(self.is_pending(shared, port)),
        }
    }

    /// True if `port` is masked, in the ABI in use.
    pub fn is_masked<S: SharedBits + ?Sized>(&self, shared: &S, port: Port) -> bool {
        match &self.fifo {
            Some(f) => f.is_masked(shared, port),
            None => shared.is_masked(port),
        }
    }
}

/// `EVTCHNOP_bind_interdomain`: connects a new port of `local` (domain `lid`) to port `rport`
/// of domain `rid`, which must be unbound for `lid`; `remote` is `rid`'s table, `None` when
/// `rid` is `lid` (a loopback channel, both ends in `local`). As Xen, the local port is found
/// first (`NoSpace`, or `Invalid` for a dying domain), then the remote one checked (`Invalid`:
/// out of range, not unbound, reserved for another domain, or its domain dying); the remote
/// end changes only once the local one is bound, so a failure changes neither. Returns the
/// new local port, notifying vCPU 0; the other end keeps its notify vCPU. The caller marks the
/// new port pending, as Xen does for the events the unbound end may have dropped.
pub fn bind_interdomain(
    local: &mut EventChannels,
    lid: DomId,
    remote: Option<&mut EventChannels>,
    rid: DomId,
    rport: Port,
) -> Result<Port, EvtchnError> {
    let lport = local.free_port()?;
    // A dying domain's ports are being closed for its destruction: none is bound any more.
    let bindable = |t: &EventChannels| {
        !t.dying
            && t.port(rport)
                .is_some_and(|(state, _)| state == PortState::Unbound { remote: lid })
    };
    if !remote.as_deref().map_or_else(|| bindable(local), bindable) {
        return Err(EvtchnError::Invalid);
    }
    let end = PortState::Interdomain {
        remote_dom: rid,
        remote_port: rport,
    };
    local.set(lport, end, 0)?;
    let peer = match remote {
        Some(r) => r,
        None => local,
    };
    if let Some(slot) = peer.ports.get_mut(rport.index()) {
        slot.0 = PortState::Interdomain {
            remote_dom: lid,
            remote_port: lport,
        };
    }
    Ok(lport)
}

#[cfg(test)]
mod tests {
    use super::*;

    use alloc::collections::BTreeMap;
    use core::cell::RefCell;

    use super::fifo::{GuestWords, WordAt};

    /// Port `n` (as a guest names it).
    pub(super) fn port(n: u32) -> Port {
        Port::unvalidated(n)
    }

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
            let v = w.entry((at.mfn.raw(), at.offset)).or_insert(0);
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
        fn test_and_set_pending(&mut self, p: Port) -> bool {
            let old = self.is_pending(p);
            self.pending[p.index() / 64] |= 1 << (p.index() % 64);
            old
        }
        fn clear_pending(&mut self, p: Port) {
            self.pending[p.index() / 64] &= !(1 << (p.index() % 64));
        }
        fn is_pending(&self, p: Port) -> bool {
            self.pending[p.index() / 64] >> (p.index() % 64) & 1 == 1
        }
        fn is_masked(&self, p: Port) -> bool {
            self.mask[p.index() / 64] >> (p.index() % 64) & 1 == 1
        }
        fn test_and_clear_mask(&mut self, p: Port) -> bool {
            let old = self.is_masked(p);
            self.mask[p.index() / 64] &= !(1 << (p.index() % 64));
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
        assert_eq!(e.bind_virq(virq::TIMER, 0), Ok(port(1)));
        assert_eq!(e.bind_ipi(1), Ok(port(2)));
        assert_eq!(e.alloc_unbound(DomId(0)), Ok(port(3)));
        e.close(&mut Fake::default(), port(2)).unwrap();
        assert_eq!(e.bind_virq(virq::TIMER, 1), Ok(port(2)));
    }

    #[test]
    fn ports_exist_bucket_by_bucket_as_in_xen() {
        let mut e = EventChannels::new(1);
        let bucket = PORTS_PER_BUCKET;
        assert_eq!(e.port(port(bucket - 1)), Some((PortState::Closed, 0)));
        assert_eq!(
            e.port(port(bucket)),
            None,
            "the second bucket does not exist yet"
        );
        let mut s = Fake::default();
        assert_eq!(e.unmask(&mut s, port(bucket)), Err(EvtchnError::Invalid));
        assert_eq!(e.bind_vcpu(port(bucket + 5), 0), Err(EvtchnError::Invalid));
        for want in 1..bucket {
            assert_eq!(e.alloc_unbound(DomId(0)), Ok(port(want)));
        }
        assert_eq!(
            e.port(port(bucket)),
            None,
            "still none: every port below is taken"
        );
        assert_eq!(e.alloc_unbound(DomId(0)), Ok(port(bucket)));
        assert_eq!(e.port(port(2 * bucket - 1)), Some((PortState::Closed, 0)));
        assert_eq!(e.port(port(2 * bucket)), None);
        e.close(&mut s, port(bucket)).unwrap();
        assert_eq!(
            e.port(port(bucket)),
            Some((PortState::Closed, 0)),
            "a bucket never goes away"
        );
    }

    #[test]
    fn virq_rules() {
        let mut e = EventChannels::new(2);
        assert_eq!(e.bind_virq(virq::TIMER, 1), Ok(port(1)));
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
            e.bind_vcpu(port(1), 0),
            Err(EvtchnError::Invalid),
            "per-vCPU VIRQs stay put"
        );
    }

    #[test]
    fn delivery_follows_the_two_level_rules() {
        let mut e = EventChannels::new(1);
        let mut s = Fake::default();
        let t = e.bind_virq(virq::TIMER, 0).unwrap();
        assert_eq!(
            e.raise_virq(&mut s, virq::TIMER, VcpuId::unvalidated(0)),
            Some(VcpuId::unvalidated(0))
        );
        assert!(s.upcall[0] && s.sel[0] & 1 == 1 && s.is_pending(t));
        assert_eq!(
            e.raise_virq(&mut s, virq::TIMER, VcpuId::unvalidated(0)),
            None,
            "already pending: no second notification"
        );
        // A masked port becomes pending without an upcall (a vCPU polling it must still be
        // woken, hence "true"); unmask then raises the upcall.
        let ipi = e.bind_ipi(0).unwrap();
        s = Fake::default();
        s.mask[0] |= 1 << ipi.raw();
        assert_eq!(
            e.send(&mut s, ipi, DomId(0)),
            Ok(Sent::Raised(VcpuId::unvalidated(0)))
        );
        assert!(s.is_pending(ipi) && !s.upcall[0]);
        assert_eq!(
            e.send(&mut s, ipi, DomId(0)),
            Ok(Sent::Nothing),
            "already pending"
        );
        assert_eq!(e.unmask(&mut s, ipi), Ok(true));
        assert!(s.upcall[0]);
        assert_eq!(e.send(&mut s, port(0), DomId(0)), Err(EvtchnError::Invalid));
        assert_eq!(
            e.send(&mut s, t, DomId(0)),
            Err(EvtchnError::Invalid),
            "VIRQ ports cannot be sent to"
        );
        assert_eq!(
            e.raise_virq(&mut s, virq::DEBUG, VcpuId::unvalidated(0)),
            None,
            "unbound VIRQ: nothing happens"
        );
        // A global VIRQ moved to vCPU 1 wakes vCPU 1, though it is raised "on vCPU 0".
        let mut e2 = EventChannels::new(2);
        let c = e2.bind_virq(virq::CONSOLE, 0).unwrap();
        e2.bind_vcpu(c, 1).unwrap();
        assert_eq!(
            e2.raise_virq(&mut Fake::default(), virq::CONSOLE, VcpuId::unvalidated(0)),
            Some(VcpuId::unvalidated(1))
        );
    }

    #[test]
    fn poll_refuses_ports_that_are_free_reserved_or_missing() {
        let mut e = EventChannels::new(1);
        let mut s = Fake::default();
        let p = e.bind_ipi(0).unwrap();
        assert_eq!(e.poll(&s, p), Ok(false));
        e.send(&mut s, p, DomId(0)).unwrap();
        assert_eq!(e.poll(&s, p), Ok(true));
        assert_eq!(e.poll(&s, port(0)), Err(EvtchnError::Invalid), "reserved");
        assert_eq!(
            e.poll(&s, port(p.raw() + 1)),
            Err(EvtchnError::Invalid),
            "free"
        );
        assert_eq!(
            e.poll(&s, port(PORTS_PER_BUCKET + 4096)),
            Err(EvtchnError::Invalid),
            "past the table: never another port's bit"
        );
    }

    #[test]
    fn close_frees_and_clears() {
        let mut e = EventChannels::new(1);
        let mut s = Fake::default();
        let p = e.bind_ipi(0).unwrap();
        e.send(&mut s, p, DomId(0)).unwrap();
        e.close(&mut s, p).unwrap();
        assert!(!s.is_pending(p));
        assert_eq!(e.close(&mut s, p), Err(EvtchnError::Invalid));
        assert_eq!(e.close(&mut s, port(0)), Err(EvtchnError::Invalid));
        assert_eq!(e.close(&mut s, port(99_999)), Err(EvtchnError::Invalid));
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
            e.raise_virq(&mut s, virq::CONSOLE, VcpuId::unvalidated(0)),
            None,
            "a closed VIRQ port is never raised"
        );
        assert_eq!(
            e.raise_virq(&mut s, virq::TIMER, VcpuId::unvalidated(1)),
            Some(VcpuId::unvalidated(1)),
            "vCPU 1's own VIRQs untouched"
        );
        // The port is reused by an IPI; the VIRQ must not reach it, and binds again.
        let ipi = e.bind_ipi(0).unwrap();
        assert_eq!(ipi, c);
        assert_eq!(
            e.raise_virq(&mut s, virq::CONSOLE, VcpuId::unvalidated(0)),
            None
        );
        assert!(!s.is_pending(ipi));
        let c2 = e.bind_virq(virq::CONSOLE, 0).unwrap();
        assert_eq!(
            e.raise_virq(&mut s, virq::CONSOLE, VcpuId::unvalidated(0)),
            Some(VcpuId::unvalidated(0))
        );
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
        assert_eq!(e.send(&mut s, p, DomId(0)), Err(EvtchnError::Invalid));
        assert!(e.set_pending(&mut s, p));
        assert_eq!(s.sel[1], 1, "raised on vCPU 1");
        assert_eq!(e.close(&mut s, p), Ok(PortState::Pirq(9)));
        assert_eq!(e.pirq_port(9), None);
        assert_eq!(e.bind_pirq(9), Ok(p));
    }

    fn interdomain(remote_dom: DomId, remote_port: Port) -> PortState {
        PortState::Interdomain {
            remote_dom,
            remote_port,
        }
    }

    #[test]
    fn a_loopback_channel() {
        // Linux dom0's xenstore port: alloc_unbound(SELF, SELF), then bound from user space.
        let mut e = EventChannels::new(2);
        let mut s = Fake::default();
        let p = e.alloc_unbound(DomId(0)).unwrap();
        let q = bind_interdomain(&mut e, DomId(0), None, DomId(0), p).unwrap();
        assert_ne!(p, q);
        assert_eq!(e.port(p), Some((interdomain(DomId(0), q), 0)));
        assert_eq!(e.port(q), Some((interdomain(DomId(0), p), 0)));
        assert_eq!(e.port(q).map(|x| x.0.status()), Some(stat::INTERDOMAIN));
        // Each end raises the other, on the other's vCPU.
        e.bind_vcpu(p, 1).unwrap();
        assert_eq!(
            e.send(&mut s, q, DomId(0)),
            Ok(Sent::Raised(VcpuId::unvalidated(1)))
        );
        assert!(s.is_pending(p) && !s.is_pending(q) && s.sel[1] == 1);
        assert_eq!(
            e.send(&mut s, p, DomId(0)),
            Ok(Sent::Raised(VcpuId::unvalidated(0)))
        );
        assert!(s.is_pending(q));
        // Closing one end leaves the other unbound for this domain, which binds it again.
        assert_eq!(e.close(&mut s, q), Ok(interdomain(DomId(0), p)));
        assert!(e.unbind_peer(p, DomId(0), q));
        assert_eq!(
            e.port(p),
            Some((PortState::Unbound { remote: DomId(0) }, 1))
        );
        assert!(
            !s.is_pending(q) && s.is_pending(p),
            "only the closed end is cleared"
        );
        assert_eq!(
            e.send(&mut s, p, DomId(0)),
            Ok(Sent::Nothing),
            "unbound: dropped"
        );
        assert_eq!(bind_interdomain(&mut e, DomId(0), None, DomId(0), p), Ok(q));
        assert_eq!(
            bind_interdomain(&mut e, DomId(0), None, DomId(0), p),
            Err(EvtchnError::Invalid),
            "connected already"
        );
    }

    #[test]
    fn two_domains() {
        let (mut d0, mut d1) = (EventChannels::new(1), EventChannels::new(1));
        let (mut s0, mut s1) = (Fake::default(), Fake::default());
        let console = d1.alloc_unbound(DomId(0x7ff2)).unwrap();
        let p = d1.alloc_unbound(DomId(0)).unwrap();
        // Only the domain a port is reserved for may bind it; bad ports are -EINVAL.
        for bad in [console.raw(), 0, 99, 4096, u32::MAX].map(port) {
            assert_eq!(
                bind_interdomain(&mut d0, DomId(0), Some(&mut d1), DomId(1), bad),
                Err(EvtchnError::Invalid),
                "port {bad}"
            );
        }
        assert_eq!(
            bind_interdomain(&mut d1, DomId(1), None, DomId(1), p),
            Err(EvtchnError::Invalid),
            "reserved for d0, not d1"
        );
        let l = bind_interdomain(&mut d0, DomId(0), Some(&mut d1), DomId(1), p).unwrap();
        assert_eq!(l, port(1), "the failed attempts took no port");
        assert_eq!(d0.port(l), Some((interdomain(DomId(1), p), 0)));
        assert_eq!(d1.port(p), Some((interdomain(DomId(0), l), 0)));
        // A send names the other domain's end; delivery checks it is still that end.
        assert_eq!(
            d0.send(&mut s0, l, DomId(0)),
            Ok(Sent::Remote {
                dom: DomId(1),
                port: p
            })
        );
        assert_eq!(
            d1.deliver(&mut s1, p, DomId(0), l),
            Sent::Raised(VcpuId::unvalidated(0))
        );
        assert!(s1.is_pending(p) && !s0.is_pending(l));
        assert_eq!(
            d1.deliver(&mut s1, p, DomId(0), l),
            Sent::Nothing,
            "pending already"
        );
        assert_eq!(d1.deliver(&mut s1, console, DomId(0), l), Sent::Nothing);
        assert_eq!(
            d1.send(&mut s1, p, DomId(1)),
            Ok(Sent::Remote {
                dom: DomId(0),
                port: l
            })
        );
        // d1 closes its end: d0's becomes unbound for d1; a late delivery to d1's freed (or
        // reused) port does nothing.
        assert_eq!(d1.close(&mut s1, p), Ok(interdomain(DomId(0), l)));
        assert!(d0.unbind_peer(l, DomId(1), p));
        assert!(!d0.unbind_peer(l, DomId(1), p), "only once");
        assert_eq!(
            d0.port(l),
            Some((PortState::Unbound { remote: DomId(1) }, 0))
        );
        let ipi = d1.bind_ipi(0).unwrap();
        assert_eq!(ipi, p);
        assert_eq!(d1.deliver(&mut s1, ipi, DomId(0), l), Sent::Nothing);
        assert!(!s1.is_pending(ipi));
        // d1 may bind d0's port again.
        assert_eq!(
            bind_interdomain(&mut d1, DomId(1), Some(&mut d0), DomId(0), l),
            Ok(port(ipi.raw() + 1))
        );
    }

    #[test]
    fn max_port_and_destruction() {
        let mut e = EventChannels::new(1);
        let mut s = Fake::default();
        assert_eq!(
            (1..NR_PORTS).map(|_| e.alloc_unbound(DomId(0))).last(),
            Some(Ok(port(NR_PORTS as u32 - 1))),
            "no limit: the 2-level ABI's 4095"
        );
        assert_eq!(e.alloc_unbound(DomId(0)), Err(EvtchnError::NoSpace));
        let mut d = EventChannels::new(1);
        d.set_max_port(1023);
        assert_eq!(
            (1..1024).map(|_| d.alloc_unbound(DomId(0))).last(),
            Some(Ok(port(1023)))
        );
        assert_eq!(d.alloc_unbound(DomId(0)), Err(EvtchnError::NoSpace));
        assert_eq!(d.bind_ipi(0), Err(EvtchnError::NoSpace));
        assert_eq!(
            bind_interdomain(&mut d, DomId(0), Some(&mut e), DomId(0), port(5)),
            Err(EvtchnError::NoSpace),
            "the local port is taken before the remote one is checked"
        );
        // Destruction: every open port listed, highest first; nothing new is allocated.
        let mut f = EventChannels::new(1);
        f.bind_ipi(0).unwrap();
        f.alloc_unbound(DomId(0)).unwrap();
        f.close(&mut s, port(1)).unwrap();
        f.bind_virq(virq::TIMER, 0).unwrap();
        f.bind_ipi(0).unwrap();
        let u = f.alloc_unbound(DomId(0)).unwrap();
        assert_eq!(f.begin_destroy(), [u, port(3), port(2), port(1)]);
        assert_eq!(f.alloc_unbound(DomId(0)), Err(EvtchnError::Invalid));
        assert_eq!(
            bind_interdomain(&mut e2(), DomId(0), Some(&mut f), DomId(1), u),
            Err(EvtchnError::Invalid),
            "a dying domain's unbound port cannot be bound"
        );
        assert_eq!(f.free_port(), Err(EvtchnError::Invalid));
    }

    fn e2() -> EventChannels {
        EventChannels::new(1)
    }

    #[test]
    fn bind_vcpu_per_state() {
        let mut e = EventChannels::new(2);
        let ipi = e.bind_ipi(0).unwrap();
        let u = e.alloc_unbound(DomId(0)).unwrap();
        let t = e.bind_virq(virq::TIMER, 0).unwrap();
        assert_eq!(
            e.bind_vcpu(port(999), 5),
            Err(EvtchnError::NoVcpu),
            "vCPU first"
        );
        assert_eq!(e.bind_vcpu(port(999), 1), Err(EvtchnError::Invalid));
        assert_eq!(e.bind_vcpu(port(0), 1), Err(EvtchnError::Invalid));
        assert_eq!(e.bind_vcpu(ipi, 1), Err(EvtchnError::Invalid));
        assert_eq!(e.bind_vcpu(t, 1), Err(EvtchnError::Invalid));
        assert_eq!(e.bind_vcpu(u, 1), Ok(()));
        let l = bind_interdomain(&mut e, DomId(0), None, DomId(0), u).unwrap();
        assert_eq!(e.bind_vcpu(l, 1), Ok(()));
        assert_eq!(
            e.port(u),
            Some((interdomain(DomId(0), l), 1)),
            "kept its vCPU"
        );
        assert_eq!(
            e.close(&mut Fake::default(), port(7)),
            Err(EvtchnError::Invalid)
        );
    }
}
