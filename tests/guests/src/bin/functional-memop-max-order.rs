//! The largest extent order of the reservation calls and of XENMEM_exchange follows the caller's
//! rights, as Xen 4.17's `max_order`: 9 (2 MiB) for an ordinary domain, 12 for the hardware
//! domain, 18 (1 GiB) for the control domain. dom0 holds both rights: an order-10 extent
//! (4 MiB, what Linux's swiotlb-xen asks `XENMEM_exchange` for a large coherent DMA buffer)
//! comes and goes whole; order 19 is refused (no extent done, `XENMEM_exchange` -EPERM).
//! Boot with free memory next to dom0 (`dom0_mem=64M`). As a domU (no rights) order 10 is
//! refused the same way.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::memory::{MemoryExchange, MemoryReservation, cmd};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, sif};
use hestia_guests::{Verdict, check, current_reservation as reservation, memory_op, println};

const EPERM: i64 = -1;

/// `cmd` (increase or decrease) of one extent of `order` through `list` (in or out MFN).
fn reserve(cmd: u32, list: &mut [u64; 1], order: u32) -> i64 {
    let mut r = MemoryReservation {
        extent_start: list.as_mut_ptr() as u64,
        nr_extents: 1,
        extent_order: order,
        domid: DOMID_SELF,
        ..Default::default()
    };
    memory_op(cmd, &mut r)
}

/// `XENMEM_exchange` of one order-0 frame to an extent of `out_order`: its result.
fn exchange_to(out_order: u32) -> i64 {
    let input = [0u64];
    let mut output = [0u64];
    let list = |start: u64, order: u32| MemoryReservation {
        extent_start: start,
        nr_extents: 1,
        extent_order: order,
        domid: DOMID_SELF,
        ..Default::default()
    };
    let mut x = MemoryExchange {
        r#in: list(input.as_ptr() as u64, 0),
        out: list(output.as_mut_ptr() as u64, out_order),
        nr_exchanged: 0,
    };
    memory_op(cmd::EXCHANGE, &mut x)
}

/// A domU: order 10 is above its maximum (9).
fn unprivileged() -> Verdict {
    let mut failed = false;
    let r0 = reservation();
    let mut none = [0u64];
    let r = reserve(cmd::INCREASE_RESERVATION, &mut none, 10);
    check!(failed, r == 0, "order 10 for a domU: {r}");
    check!(
        failed,
        reservation() == r0,
        "nothing was given for order 10"
    );
    let r = exchange_to(10);
    check!(failed, r == EPERM, "a domU's exchange to order 10: {r}");
    if failed {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

fn test(si: &StartInfo) -> Verdict {
    if si.flags & sif::PRIVILEGED == 0 {
        return unprivileged();
    }
    let mut failed = false;
    let r0 = reservation();

    let mut mfn = [0u64];
    let got = reserve(cmd::INCREASE_RESERVATION, &mut mfn, 10);
    check!(
        failed,
        got == 1,
        "order-10 extent for the control domain: {got}"
    );
    if got == 1 {
        check!(
            failed,
            mfn[0].is_multiple_of(1024),
            "the order-10 extent at {:#x} is aligned",
            mfn[0]
        );
        check!(
            failed,
            reservation() == r0 + 1024,
            "reservation {} after 1024 frames more, from {r0}",
            reservation()
        );
        let gone = reserve(cmd::DECREASE_RESERVATION, &mut mfn, 10);
        check!(failed, gone == 1, "the order-10 extent given back: {gone}");
        check!(
            failed,
            reservation() == r0,
            "reservation {} back, from {r0}",
            reservation()
        );
    }

    let mut none = [0u64];
    let r = reserve(cmd::INCREASE_RESERVATION, &mut none, 19);
    check!(
        failed,
        r == 0,
        "order 19 is above every domain's maximum: {r}"
    );
    check!(
        failed,
        reservation() == r0,
        "nothing was given for order 19"
    );

    let r = exchange_to(19);
    check!(failed, r == EPERM, "exchange to order 19: {r}");

    println!("order-10 extent at mfn {:#x}", mfn[0]);
    if failed {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
