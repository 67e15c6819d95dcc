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
//! Frame numbers ([`Mfn`], [`Gfn`]) are different: most of them Hestia makes itself (the
//! frame allocator, the P2M it builds, a page-table entry it reads), and what makes one
//! usable is not that it names a frame (every number below the physical address width names
//! a place in memory) but who owns that frame and what it is used as, which the frame table
//! answers per use (`get_page`, `get_page_type`) and the P2M per lookup. So they have a plain
//! `new`: a name like `unvalidated` would be wrong at most of its callers, and would suggest
//! a check that none could make.
//!
//! `Debug` names the kind (`port:5`, `gref:5`, `mfn:0x5`) for traces; `Display` is the bare
//! number, as the log lines print it (frame numbers also in hex, `{mfn:#x}`, as Xen prints
//! them). A domain id prints as Xen names domains (`d1`) either way.

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

/// What both frame numbers share: `new`, the number back (`raw`), the first byte's address
/// (`addr`), `+ n` for the frame `n` further, `Debug` as `kind:0xN`, `Display` as the bare
/// number and `LowerHex`.
macro_rules! frame_number {
    ($id:ident, $kind:literal) => {
        impl $id {
            /// The frame numbered `raw` (the module documentation says why nothing is
            /// checked).
            pub const fn new(raw: u64) -> $id {
                $id(raw)
            }

            /// The number, as the ABI and the page-table entries write it.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// The address of the frame's first byte.
            pub const fn addr(self) -> u64 {
                self.0 << 12
            }
        }

        impl core::ops::Add<u64> for $id {
            type Output = $id;

            /// The frame `n` frames on (Xen's `mfn_add`), for runs of frames.
            fn add(self, n: u64) -> $id {
                $id(self.0 + n)
            }
        }

        impl fmt::Debug for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($kind, ":{:#x}"), self.0)
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::LowerHex for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

/// A machine frame number: the 4 KiB frame of host physical memory at `raw * 4096` (Xen's
/// `mfn_t`).
///
/// Range: any `u64` can be built (a guest names one in every page-table entry and grant
/// entry it writes); frames below the frame table's size have an owner and a type there,
/// those past it are I/O memory. Whether a domain may use one is the frame table's answer
/// (`pv_mm::FrameTable::get_page`), never this type's.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mfn(u64);

frame_number!(Mfn, "mfn");

/// A guest frame number: for a PV guest, the index of its physical-to-machine map (Xen's
/// `gfn_t`, which PV interfaces call a "pfn"), the frame the guest believes is its
/// `raw`-th page.
///
/// Range: any `u64` can be named by a guest; only those below its page count index the P2M
/// Hestia builds for it at boot (`pv::domain::Domain::p2m` in the kernel). After boot a PV
/// guest keeps its own P2M, and the frame numbers its hypercalls pass are machine frames.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gfn(u64);

frame_number!(Gfn, "gfn");

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

impl VcpuId {
    /// vCPU 0: every domain has it; it starts the domain, and global VIRQs are bound to it.
    pub const FIRST: VcpuId = VcpuId(0);
}

/// A domain's id (Xen's `domid_t`).
///
/// Range: 0 to `DOMID_FIRST_RESERVED - 1` name domains (0 need not be the control domain:
/// that is a capability); the values from `DOMID_FIRST_RESERVED` up are names the ABI
/// reserves (`DOMID_SELF`, `DOMID_IO`, `DOMID_XEN`, ...). A guest's `domid_t` is not a
/// `DomId`: the kernel's `domain::lookup` resolves it (`DOMID_SELF` to the caller, once) to a
/// live domain, whose id this is; new ids come from [`crate::domid::Rover`].
///
/// One kind of value is kept as a `DomId` without naming a live domain, because the ABI
/// keeps it so: the remote end of an unbound port, whatever id its allocator named
/// (`DOMID_XEN` for a console ring Hestia serves).
///
/// The number is still a public field: the frame table's owners (`pv_mm::Dom`, which also
/// holds the pseudo-domains `DOMID_IO` and `DOMID_XEN`) and the kernel's domain lookup key on
/// `u16` yet, and read `id.0`.
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
    fn frame_numbers_are_their_numbers() {
        assert_eq!(core::mem::size_of::<Mfn>(), 8);
        assert_eq!(core::mem::size_of::<Gfn>(), 8);
        for raw in [0, 1, 0xfffff, u64::MAX >> 12] {
            assert_eq!(Mfn::new(raw).raw(), raw);
            assert_eq!(Mfn::new(raw).addr(), raw * 4096);
            assert_eq!(Gfn::new(raw).raw(), raw);
            assert_eq!(Gfn::new(raw).addr(), raw * 4096);
        }
        assert!(Mfn::new(1) < Mfn::new(2));
        assert_eq!(Mfn::new(1) + 2, Mfn::new(3));
        assert_eq!(Gfn::new(1) + 2, Gfn::new(3));
        assert_eq!(format!("{:?}", Mfn::new(0x1a)), "mfn:0x1a");
        assert_eq!(format!("{:?}", Gfn::new(0x1a)), "gfn:0x1a");
        assert_eq!(format!("{} {:#x}", Mfn::new(26), Mfn::new(26)), "26 0x1a");
    }

    #[test]
    fn ports_order_by_number() {
        assert!(Port::unvalidated(1) < Port::unvalidated(2));
        assert!(Port::unvalidated(u32::MAX) > Port::ZERO);
    }
}
