//! Event channels (`public/event_channel.h`): the `event_channel_op` sub-commands, their
//! argument structures, and the FIFO ABI's control block and event-word layout.
//!
//! Ports are `evtchn_port_t` (`u32`); domain ids are `domid_t` (`u16`). The 2-level ABI's
//! pending and mask bitmaps live in `shared_info` (see [`crate::xen`]); the FIFO ABI moves them
//! into guest pages registered with `init_control` and `expand_array`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `event_channel_op` sub-commands (`EVTCHNOP_*`).
pub mod cmd {
    /// Connect a local port to a remote domain's unbound port ([`super::BindInterdomain`]).
    pub const BIND_INTERDOMAIN: u32 = 0;
    /// Bind a virtual IRQ of one vCPU to a new port ([`super::BindVirq`]).
    pub const BIND_VIRQ: u32 = 1;
    /// Bind a physical IRQ to a new port ([`super::BindPirq`]).
    pub const BIND_PIRQ: u32 = 2;
    /// Close a port ([`super::Close`]).
    pub const CLOSE: u32 = 3;
    /// Signal a port's other end ([`super::Send`]).
    pub const SEND: u32 = 4;
    /// Describe a port ([`super::Status`]).
    pub const STATUS: u32 = 5;
    /// Allocate a port a named remote domain may bind to ([`super::AllocUnbound`]).
    pub const ALLOC_UNBOUND: u32 = 6;
    /// Allocate a port for inter-vCPU notification ([`super::BindIpi`]).
    pub const BIND_IPI: u32 = 7;
    /// Deliver a port's notifications to another vCPU ([`super::BindVcpu`]).
    pub const BIND_VCPU: u32 = 8;
    /// Unmask a port and redeliver a pending event ([`super::Unmask`]).
    pub const UNMASK: u32 = 9;
    /// Close every port of a domain and return to the 2-level ABI ([`super::Reset`]).
    pub const RESET: u32 = 10;
    /// Switch a vCPU to the FIFO ABI ([`super::InitControl`]).
    pub const INIT_CONTROL: u32 = 11;
    /// Add one page to the FIFO event array ([`super::ExpandArray`]).
    pub const EXPAND_ARRAY: u32 = 12;
    /// Set a port's FIFO queue priority ([`super::SetPriority`]).
    pub const SET_PRIORITY: u32 = 13;
}

/// `EVTCHNSTAT_*`: the `status` field of [`Status`].
pub mod stat {
    /// The port is free.
    pub const CLOSED: u32 = 0;
    /// Allocated, waiting for the remote domain to bind.
    pub const UNBOUND: u32 = 1;
    /// Connected to a port of another (or the same) domain.
    pub const INTERDOMAIN: u32 = 2;
    /// Bound to a physical IRQ.
    pub const PIRQ: u32 = 3;
    /// Bound to a virtual IRQ.
    pub const VIRQ: u32 = 4;
    /// Bound for inter-vCPU notification.
    pub const IPI: u32 = 5;
}

/// `BIND_PIRQ__WILL_SHARE`: the caller accepts sharing the IRQ with other domains.
pub const BIND_PIRQ_WILL_SHARE: u32 = 1;

/// Ports of the 2-level ABI on x86_64 (`EVTCHN_2L_NR_CHANNELS`: 64 words of 64 bits).
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;

/// Argument of `EVTCHNOP_alloc_unbound` (`struct evtchn_alloc_unbound`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AllocUnbound {
    /// IN: the domain to allocate in (`DOMID_SELF` or, privileged, another).
    pub dom: u16,
    /// IN: the domain allowed to bind the port.
    pub remote_dom: u16,
    /// OUT: the new port.
    pub port: u32,
}
const _: () = assert!(core::mem::size_of::<AllocUnbound>() == 8);
const _: () = assert!(core::mem::offset_of!(AllocUnbound, dom) == 0);
const _: () = assert!(core::mem::offset_of!(AllocUnbound, remote_dom) == 2);
const _: () = assert!(core::mem::offset_of!(AllocUnbound, port) == 4);

/// Argument of `EVTCHNOP_bind_interdomain` (`struct evtchn_bind_interdomain`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BindInterdomain {
    /// IN: the domain holding the unbound port.
    pub remote_dom: u16,
    /// Padding.
    pub _pad: u16,
    /// IN: its unbound port, allocated for the caller.
    pub remote_port: u32,
    /// OUT: the caller's new, connected port.
    pub local_port: u32,
}
const _: () = assert!(core::mem::size_of::<BindInterdomain>() == 12);
const _: () = assert!(core::mem::offset_of!(BindInterdomain, remote_dom) == 0);
const _: () = assert!(core::mem::offset_of!(BindInterdomain, remote_port) == 4);
const _: () = assert!(core::mem::offset_of!(BindInterdomain, local_port) == 8);

/// Argument of `EVTCHNOP_bind_virq` (`struct evtchn_bind_virq`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BindVirq {
    /// IN: the virtual IRQ (`VIRQ_*`).
    pub virq: u32,
    /// IN: the vCPU it is raised on (global VIRQs: vCPU 0).
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: u32,
}
const _: () = assert!(core::mem::size_of::<BindVirq>() == 12);
const _: () = assert!(core::mem::offset_of!(BindVirq, virq) == 0);
const _: () = assert!(core::mem::offset_of!(BindVirq, vcpu) == 4);
const _: () = assert!(core::mem::offset_of!(BindVirq, port) == 8);

/// Argument of `EVTCHNOP_bind_pirq` (`struct evtchn_bind_pirq`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BindPirq {
    /// IN: the physical IRQ, as mapped for the domain.
    pub pirq: u32,
    /// IN: [`BIND_PIRQ_WILL_SHARE`] or 0.
    pub flags: u32,
    /// OUT: the new port.
    pub port: u32,
}
const _: () = assert!(core::mem::size_of::<BindPirq>() == 12);
const _: () = assert!(core::mem::offset_of!(BindPirq, pirq) == 0);
const _: () = assert!(core::mem::offset_of!(BindPirq, flags) == 4);
const _: () = assert!(core::mem::offset_of!(BindPirq, port) == 8);

/// Argument of `EVTCHNOP_bind_ipi` (`struct evtchn_bind_ipi`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BindIpi {
    /// IN: the vCPU notified.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: u32,
}
const _: () = assert!(core::mem::size_of::<BindIpi>() == 8);
const _: () = assert!(core::mem::offset_of!(BindIpi, vcpu) == 0);
const _: () = assert!(core::mem::offset_of!(BindIpi, port) == 4);

/// Argument of `EVTCHNOP_close`, `EVTCHNOP_send` and `EVTCHNOP_unmask` (`struct evtchn_close`,
/// `struct evtchn_send`, `struct evtchn_unmask`: one port each).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PortArg {
    /// IN: the port.
    pub port: u32,
}
const _: () = assert!(core::mem::size_of::<PortArg>() == 4);
const _: () = assert!(core::mem::offset_of!(PortArg, port) == 0);

/// `EVTCHNOP_close`'s argument.
pub type Close = PortArg;
/// `EVTCHNOP_send`'s argument (the same layout as `struct evtchn_close`).
pub type Send = PortArg;
/// `EVTCHNOP_unmask`'s argument (the same layout as `struct evtchn_close`).
pub type Unmask = PortArg;

/// The binding-specific part of [`Status`] (the anonymous union `u` of `struct evtchn_status`).
///
/// The union's members overlap at offset 0: `unbound.dom` and `interdomain.dom` (a `domid_t`,
/// the low half of [`Self::word0`], whose upper half Xen leaves zero), `pirq` and `virq` (all of
/// [`Self::word0`]); `interdomain.port` follows at offset 4.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StatusBinding {
    /// OUT: the remote domain (unbound, interdomain), the PIRQ or the VIRQ.
    pub word0: u32,
    /// OUT: the remote port (interdomain).
    pub port: u32,
}
const _: () = assert!(core::mem::size_of::<StatusBinding>() == 8);
const _: () = assert!(core::mem::offset_of!(StatusBinding, word0) == 0);
const _: () = assert!(core::mem::offset_of!(StatusBinding, port) == 4);

/// Argument of `EVTCHNOP_status` (`struct evtchn_status`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Status {
    /// IN: the domain (`DOMID_SELF` or, privileged, another).
    pub dom: u16,
    /// Padding.
    pub _pad: u16,
    /// IN: the port.
    pub port: u32,
    /// OUT: what the port is bound to ([`stat`]).
    pub status: u32,
    /// OUT: the vCPU notified.
    pub vcpu: u32,
    /// OUT: the binding's details.
    pub u: StatusBinding,
}
const _: () = assert!(core::mem::size_of::<Status>() == 24);
const _: () = assert!(core::mem::offset_of!(Status, dom) == 0);
const _: () = assert!(core::mem::offset_of!(Status, port) == 4);
const _: () = assert!(core::mem::offset_of!(Status, status) == 8);
const _: () = assert!(core::mem::offset_of!(Status, vcpu) == 12);
const _: () = assert!(core::mem::offset_of!(Status, u) == 16);

/// Argument of `EVTCHNOP_bind_vcpu` (`struct evtchn_bind_vcpu`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BindVcpu {
    /// IN: the port.
    pub port: u32,
    /// IN: the vCPU to notify from now on.
    pub vcpu: u32,
}
const _: () = assert!(core::mem::size_of::<BindVcpu>() == 8);
const _: () = assert!(core::mem::offset_of!(BindVcpu, port) == 0);
const _: () = assert!(core::mem::offset_of!(BindVcpu, vcpu) == 4);

/// Argument of `EVTCHNOP_reset` (`struct evtchn_reset`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Reset {
    /// IN: the domain (`DOMID_SELF` or, privileged, another).
    pub dom: u16,
}
const _: () = assert!(core::mem::size_of::<Reset>() == 2);
const _: () = assert!(core::mem::offset_of!(Reset, dom) == 0);

/// Argument of `EVTCHNOP_init_control` (`struct evtchn_init_control`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct InitControl {
    /// IN: guest frame holding the vCPU's [`FifoControlBlock`].
    pub control_gfn: u64,
    /// IN: byte offset of the control block in that frame.
    pub offset: u32,
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT: how many bits of an event word are the link ([`fifo::LINK_BITS`]).
    pub link_bits: u8,
    /// Padding.
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<InitControl>() == 24);
const _: () = assert!(core::mem::offset_of!(InitControl, control_gfn) == 0);
const _: () = assert!(core::mem::offset_of!(InitControl, offset) == 8);
const _: () = assert!(core::mem::offset_of!(InitControl, vcpu) == 12);
const _: () = assert!(core::mem::offset_of!(InitControl, link_bits) == 16);

/// Argument of `EVTCHNOP_expand_array` (`struct evtchn_expand_array`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ExpandArray {
    /// IN: guest frame that becomes the next page of event words.
    pub array_gfn: u64,
}
const _: () = assert!(core::mem::size_of::<ExpandArray>() == 8);
const _: () = assert!(core::mem::offset_of!(ExpandArray, array_gfn) == 0);

/// Argument of `EVTCHNOP_set_priority` (`struct evtchn_set_priority`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SetPriority {
    /// IN: the port.
    pub port: u32,
    /// IN: its queue, [`fifo::PRIORITY_MAX`] (most urgent) to [`fifo::PRIORITY_MIN`].
    pub priority: u32,
}
const _: () = assert!(core::mem::size_of::<SetPriority>() == 8);
const _: () = assert!(core::mem::offset_of!(SetPriority, port) == 0);
const _: () = assert!(core::mem::offset_of!(SetPriority, priority) == 4);

/// The argument of the obsolete `event_channel_op_compat` hypercall (`struct evtchn_op`): the
/// sub-command followed by its argument, in a union as large as [`Status`].
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnOp {
    /// IN: `EVTCHNOP_*` (only 0-9 fit the union).
    pub cmd: u32,
    /// IN/OUT: the sub-command's structure, as bytes.
    pub u: [u32; 6],
}
const _: () = assert!(core::mem::size_of::<EvtchnOp>() == 28);
const _: () = assert!(core::mem::offset_of!(EvtchnOp, cmd) == 0);
const _: () = assert!(core::mem::offset_of!(EvtchnOp, u) == 4);

/// The FIFO event ABI: priorities, event word bits and sizes.
pub mod fifo {
    /// The most urgent queue.
    pub const PRIORITY_MAX: u32 = 0;
    /// The queue a port starts on.
    pub const PRIORITY_DEFAULT: u32 = 7;
    /// The least urgent queue.
    pub const PRIORITY_MIN: u32 = 15;
    /// Queues per vCPU, one per priority.
    pub const MAX_QUEUES: usize = 16;
    /// Event word bit: the event is pending.
    pub const PENDING: u32 = 31;
    /// Event word bit: the event is masked.
    pub const MASKED: u32 = 30;
    /// Event word bit: the event is on a queue.
    pub const LINKED: u32 = 29;
    /// Event word bit: the hypervisor is updating the word's link.
    pub const BUSY: u32 = 28;
    /// Width of an event word's link field (the next port on the queue).
    pub const LINK_BITS: u32 = 17;
    /// The link field of an event word.
    pub const LINK_MASK: u32 = (1 << 17) - 1;
    /// Ports the FIFO ABI can address.
    pub const NR_CHANNELS: u32 = 1 << 17;
}

/// A vCPU's FIFO control block (`struct evtchn_fifo_control_block`), in the guest page given
/// to `EVTCHNOP_init_control`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FifoControlBlock {
    /// IN/OUT: bit `q` set while queue `q` is not empty.
    pub ready: u32,
    /// Reserved.
    pub _rsvd: u32,
    /// IN/OUT: the first port on each queue.
    pub head: [u32; fifo::MAX_QUEUES],
}
const _: () = assert!(core::mem::size_of::<FifoControlBlock>() == 72);
const _: () = assert!(core::mem::offset_of!(FifoControlBlock, ready) == 0);
const _: () = assert!(core::mem::offset_of!(FifoControlBlock, head) == 8);
