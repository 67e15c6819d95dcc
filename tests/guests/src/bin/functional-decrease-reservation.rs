//! XENMEM_decrease_reservation with extents of order > 0, as Xen 4.17's
//! `decrease_reservation`: frame by frame, stopping at the first frame that cannot go. The
//! frames before it are gone (and no longer counted in the reservation); the extent is not
//! counted as done. A whole extent of free frames goes and counts.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::memory::{MemoryReservation, cmd};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo};
use hestia_guests::{Verdict, check, current_reservation as reservation, m2p, memory_op};
use hestia_guests::{pfn_to_mfn, println};

/// `decrease_reservation` of one extent of `order` at MFN `mfn`: the extents done.
fn decrease(mfn: u64, order: u32) -> i64 {
    let list = [mfn];
    let mut r = MemoryReservation {
        extent_start: list.as_ptr() as u64,
        nr_extents: 1,
        extent_order: order,
        domid: DOMID_SELF,
        ..Default::default()
    };
    memory_op(cmd::DECREASE_RESERVATION, &mut r)
}

/// A PFN of the upper half of the domain (far beyond the initial mapping, so unmapped) from
/// `from` on whose frame's successor is the domain's too and also up there: (PFN, MFN).
fn pair(si: &StartInfo, from: u64) -> Option<(u64, u64)> {
    let nr = si.nr_pages;
    (from..nr).find_map(|p| {
        let m = pfn_to_mfn(si, p);
        let q = m2p(m + 1);
        (q >= nr / 2 && q < nr && pfn_to_mfn(si, q) == m + 1).then_some((p, m))
    })
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    let start = si.nr_pages / 2;
    let Some((p, m)) = pair(si, start) else {
        return Verdict::Skip("no two adjacent free frames");
    };
    let r0 = reservation();

    // A whole free extent of order 1 goes.
    check!(
        failed,
        decrease(m, 1) == 1,
        "order-1 extent of two free frames"
    );
    check!(
        failed,
        reservation() == r0 - 2,
        "reservation {} after giving 2 frames back, from {r0}",
        reservation()
    );

    // The next pair: give its second frame back first; then the order-1 extent removes its
    // first frame and stops at the second, which is no longer the domain's.
    let Some((_, m)) = pair(si, p + 2) else {
        return Verdict::Skip("no second pair");
    };
    check!(failed, decrease(m + 1, 0) == 1, "the second frame alone");
    let r1 = reservation();
    check!(
        failed,
        decrease(m, 1) == 0,
        "an extent with a frame not ours must not count"
    );
    let r2 = reservation();
    check!(
        failed,
        r2 == r1 - 1,
        "reservation {r2} after a partial extent, from {r1}: the frame removed before the one that stopped it must be gone and uncounted"
    );
    check!(
        failed,
        decrease(m, 0) == 0,
        "the first frame of the partial extent is still the domain's"
    );
    println!("pairs at pfn {p:#x}, mfn {m:#x}");
    if failed {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
