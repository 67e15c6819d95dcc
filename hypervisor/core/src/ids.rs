//! Identity newtypes: the numbers by which the guest ABI names a domain or an object of one,
//! each its own type so that a port cannot be passed where a grant reference is meant, nor
//! either where a vCPU, a count or an index is (STYLE: "Newtypes for every number that means
//! something").
//!
//! Theory of operation: the ABI structs of `xen-abi` keep raw integers (they are the guest's
//! memory layout); the hypercall handlers turn a decoded integer into its newtype once, at the
//! ABI boundary, and every internal API takes the newtype. Turning one back into an integer
//! happens again only where the number is written to the guest (an OUT field, a shared-memory
//! word) or indexes a table that the number's owner checks.
//!
//! Validation: whether a number names an object is a question for that object's owner, never
//! a property of the number alone. A port exists only if its domain's port table has it
//! ([`crate::evtchn::EventChannels::port`], Xen's `port_is_valid`), which depends on the
//! domain's ABI, its `max_evtchn_port` and how far its table has grown; a grant reference
//! exists only below its granter's current table size ([`crate::grant_table::GrantTable::active`],
//! Xen's `nr_grant_entries`). So the constructor from a guest value,
//! `unvalidated`, is named for what it does not do: it accepts every `u32`, and the owner's
//! lookup answers `-EINVAL` (ports) or `GNTST_bad_gntref` (grants) for a number it does not
//! hold. No range check here can replace that lookup, and none is made, so that the order of
//! Xen's error checks (which the handlers reproduce) is kept.
//!
//! `Debug` names the kind (`port:5`, `gref:5`) for traces; `Display` is the bare number, as
//! the log lines print it. A domain id prints as Xen names domains (`d1`) either way.

use core::fmt;

/// What every 32-bit id shares: the constructor from a guest's number (`unvalidated`), the
/// number back (`raw`), the number as a table index (`index`), `Debug` as `kind:N` and
/// `Display` as the bare number with the caller's width and flags (`{port:4}`).
macro_rules! u32_id {
    ($id:ident, $kind:literal) => {
        impl $id {
            /// The number a guest named, not yet validated: only its owner's table can say
            /// whether it names anything (see the module's "Validation").
            pub const fn unvalidated(raw: u32) -> $id {
                $id(raw)
            }

            /// The number, as the ABI writes it (an OUT field, a shared-memory word).
            pub const fn raw(self) -> u32 {
                self.0
            }

            /// The number as an index into a per-id table or bitmap.
            pub const fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Debug for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($kind, ":{}"), self.0)
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

/// An event channel port of one domain (Xen's `evtchn_port_t`).
///
/// Range: any `u32` can be named by a guest; a port exists from 1 to the domain's limit
/// (4095 under the 2-level ABI, 2^17 - 1 under FIFO, lower if the domain's `max_evtchn_port`
/// says so), within the buckets its table has allocated so far. Port 0 is never bound: every
/// sub-op on it fails (`-EINVAL`) and the port tables use it for "no port".
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port(u32);

u32_id!(Port, "port");

impl Port {
    /// Port 0: never bound, the "none" of the port tables.
    pub const ZERO: Port = Port(0);

    /// The port at index `i` of a port table, which never holds more than the FIFO ABI's
    /// 2^17 ports (so the number fits).
    pub(crate) fn from_index(i: usize) -> Port {
        debug_assert!(u32::try_from(i).is_ok(), "port index {i} out of range");
        Port(i as u32)
    }

    /// True for port 0 (no port).
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// A grant reference: the index of an entry in its granter's grant table (Xen's
/// `grant_ref_t`).
///
/// Range: any `u32` can be named by a guest; an entry exists below the granter's current
/// table size (512 entries per frame under v1, 256 under v2, times the frames the table has
/// grown to, at most its `max_grant_frames`). A reference past it is `GNTST_bad_gntref`.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrantRef(u32);

u32_id!(GrantRef, "gref");

impl fmt::LowerHex for GrantRef {
    /// The number in hex, as Xen's messages print references.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// A vCPU of one domain: its index in the domain's vCPUs (Xen's `vcpu_id`).
///
/// Range: any `u32` can be named by a guest; a vCPU exists below its domain's `max_vcpus`
/// (Hestia's table of vCPUs), which the domain checks (`-ENOENT` or `-EINVAL`, as the
/// hypercall says). The hypercall path hands each handler the id of the vCPU that issued the
/// call, found in the caller's table.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VcpuId(u32);

u32_id!(VcpuId, "vcpu");

/// A domain's id (Xen's `domid_t`).
///
/// Range: 0 to `DOMID_FIRST_RESERVED - 1` name domains (0 need not be the control domain:
/// that is a capability); the values from `DOMID_FIRST_RESERVED` up are names the ABI
/// reserves (`DOMID_SELF`, `DOMID_IO`, `DOMID_XEN`, ...). A guest's `domid_t` is not a
/// `DomId`: the kernel's `domain::lookup` resolves it (`DOMID_SELF` to the caller, once) to a
/// live domain, whose id this is; new ids come from [`crate::domid::Rover`].
///
/// The number is still a public field: much of the core logic a domain's id is handed to
/// (port states, grant entries, frame owners) keys on `u16` yet, and reads `id.0` until it
/// takes `DomId` itself.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DomId(pub u16);

impl fmt::Debug for DomId {
    /// `d0`, as Xen's messages name domains.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

impl fmt::Display for DomId {
    /// `d0`, as Xen's messages name domains.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn the_ids_are_their_numbers_in_memory() {
        assert_eq!(core::mem::size_of::<Port>(), 4);
        assert_eq!(core::mem::size_of::<GrantRef>(), 4);
        assert_eq!(core::mem::size_of::<VcpuId>(), 4);
        assert_eq!(core::mem::align_of::<Port>(), core::mem::align_of::<u32>());
    }

    #[test]
    fn every_guest_value_round_trips() {
        for raw in [0, 1, 4095, 4096, (1 << 17) - 1, 1 << 17, u32::MAX] {
            let p = Port::unvalidated(raw);
            assert_eq!(p.raw(), raw);
            assert_eq!(p.index(), raw as usize);
            assert_eq!(p.is_zero(), raw == 0);
            let r = GrantRef::unvalidated(raw);
            assert_eq!(r.raw(), raw);
            assert_eq!(r.index(), raw as usize);
            let v = VcpuId::unvalidated(raw);
            assert_eq!(v.raw(), raw);
            assert_eq!(v.index(), raw as usize);
        }
        assert_eq!(Port::ZERO, Port::unvalidated(0));
        assert_eq!(Port::from_index(4095), Port::unvalidated(4095));
    }

    #[test]
    fn debug_names_the_kind_display_the_number() {
        assert_eq!(format!("{:?}", Port::unvalidated(5)), "port:5");
        assert_eq!(format!("{}", Port::unvalidated(5)), "5");
        assert_eq!(format!("{:?}", GrantRef::unvalidated(7)), "gref:7");
        assert_eq!(format!("{}", GrantRef::unvalidated(7)), "7");
        assert_eq!(
            format!("port {:4}:", Port::unvalidated(5)),
            "port    5:",
            "the debug key's columns"
        );
        assert_eq!(format!("{:#x}", GrantRef::unvalidated(255)), "0xff");
        assert_eq!(format!("{:?}", VcpuId::unvalidated(3)), "vcpu:3");
        assert_eq!(
            format!("d0v{}", VcpuId::unvalidated(3)),
            "d0v3",
            "as Xen names vCPUs"
        );
    }

    #[test]
    fn domains_print_as_xen_names_them() {
        assert_eq!(format!("{:?}", DomId(0)), "d0");
        assert_eq!(format!("{}v1", DomId(0x7fef)), "d32751v1");
        assert_eq!(core::mem::size_of::<DomId>(), 2);
    }

    #[test]
    fn ports_order_by_number() {
        assert!(Port::unvalidated(1) < Port::unvalidated(2));
        assert!(Port::unvalidated(u32::MAX) > Port::ZERO);
    }
}
