//! XENMEM_exchange's argument checks, error codes and partial progress, as Xen 4.17's
//! `memory_exchange`: an order above the domain's maximum is -EPERM; inconsistent sizes, different
//! domains or nr_exchanged beyond the input -EINVAL; a list outside guest space -EFAULT; nothing
//! left to do returns 0 at once; an input frame that is not the domain's (or in use) -EINVAL and
//! no memory under the address limit -ENOMEM, with `nr_exchanged` saying how many input extents
//! were exchanged before, the chunk that failed left as it was (its frames still the domain's),
//! and a call resumed from `nr_exchanged` carrying on. shared_info and a registered vcpu_info
//! frame are never exchanged.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::memory::{MemoryExchange, MemoryReservation, cmd};
use hestia_guests::xen_abi::vcpu;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, current_reservation as reservation, hypercall, m2p, memory_op, pfn_to_mfn,
    println,
};

const EPERM: i64 = -1;
const ESRCH: i64 = -3;
const ENOMEM: i64 = -12;
const EFAULT: i64 = -14;
const EINVAL: i64 = -22;

/// An exchange of the calling domain's frames `input` (extents of `in_order`) for extents of
/// `out_order` at the pseudo-physical frames `output`.
fn exchange(input: &[u64], in_order: u32, output: &mut [u64], out_order: u32) -> MemoryExchange {
    let list = |start: u64, nr: usize, order: u32| MemoryReservation {
        extent_start: start,
        nr_extents: nr as u64,
        extent_order: order,
        domid: DOMID_SELF,
        ..MemoryReservation::default()
    };
    MemoryExchange {
        r#in: list(input.as_ptr() as u64, input.len(), in_order),
        out: list(output.as_mut_ptr() as u64, output.len(), out_order),
        nr_exchanged: 0,
    }
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    // Frames of the upper half: far beyond the initial mapping, so unused.
    let base = si.nr_pages / 2;
    let free = |i: u64| pfn_to_mfn(si, base + i);
    // A frame in use: the page of this guest's own stack.
    let busy_var = 0u64;
    let busy = pfn_to_mfn(si, (&busy_var as *const u64 as u64) >> 12);
    let r0 = reservation();

    // Argument checks: nothing happens, nr_exchanged comes back as it went in.
    let input = [free(0), free(1)];
    let mut out = [base, base + 1];
    // Beyond any domain's maximum order (18 for the control domain, in Xen and Hestia).
    let mut x = exchange(&input, 30, &mut out, 30);
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(failed, r == EPERM, "order 30: {r}");
    let mut x = exchange(&input, 0, &mut out[..1], 0);
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(failed, r == EINVAL, "2 frames in, 1 out: {r}");
    let mut x = exchange(&input, 0, &mut out, 0);
    x.nr_exchanged = 3;
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(
        failed,
        r == EINVAL && x.nr_exchanged == 3,
        "nr_exchanged beyond the input: {r}, {}",
        x.nr_exchanged
    );
    let mut x = exchange(&input, 0, &mut out, 0);
    x.out.domid = 0; // dom0 by number: the same domain, but not the same id
    check!(
        failed,
        memory_op(cmd::EXCHANGE, &mut x) == EINVAL,
        "different domains"
    );
    let mut x = exchange(&input, 0, &mut out, 0);
    (x.r#in.domid, x.out.domid) = (77, 77);
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(failed, r == ESRCH, "no such domain: {r}");
    let mut x = exchange(&input, 0, &mut out, 0);
    x.r#in.extent_start = 0xffff_8300_0000_0000;
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(failed, r == EFAULT, "input list in the hypervisor: {r}");
    let mut x = exchange(&input, 0, &mut out, 0);
    x.out.extent_start = 0xffff_8300_0000_0000;
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(failed, r == EFAULT, "output list in the hypervisor: {r}");
    let mut x = exchange(&input, 0, &mut out, 0);
    x.nr_exchanged = 2;
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(
        failed,
        r == 0 && out == [base, base + 1],
        "nothing left to do: {r}, {out:x?}"
    );

    // Partial progress: extent 1 is in use, so extent 0 is exchanged and the call stops.
    let input = [free(2), busy, free(3)];
    let mut out = [base + 2, base + 100, base + 3];
    let mut x = exchange(&input, 0, &mut out, 0);
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(
        failed,
        r == EINVAL && x.nr_exchanged == 1,
        "busy second frame: {r}, nr_exchanged {}",
        x.nr_exchanged
    );
    check!(
        failed,
        out[0] != base + 2 && m2p(out[0]) == base + 2,
        "first output {:#x} (M2P {:#x})",
        out[0],
        m2p(out[0])
    );
    check!(
        failed,
        out[1] == base + 100,
        "no output for the failed extent"
    );
    // Resumed past the busy frame: the third extent goes.
    x.nr_exchanged = 2;
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(
        failed,
        r == 0 && x.nr_exchanged == 3 && m2p(out[2]) == base + 3,
        "resumed: {r}, nr_exchanged {}, M2P {:#x}",
        x.nr_exchanged,
        m2p(out[2])
    );

    // A chunk is all or nothing: two order-0 frames for one order-1 extent, the second not
    // the domain's (frame 1 << 40 does not exist): the first stays the domain's.
    let input = [free(4), 1 << 40];
    let mut out = [base + 4];
    let mut x = exchange(&input, 0, &mut out, 1);
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(
        failed,
        r == EINVAL && x.nr_exchanged == 0 && out[0] == base + 4,
        "invalid frame in a chunk: {r}, nr_exchanged {}",
        x.nr_exchanged
    );
    // No memory under 8 KiB: nothing changes either.
    let input = [free(4), free(5)];
    let mut x = exchange(&input, 0, &mut out, 1);
    x.out.mem_flags = 13;
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(
        failed,
        r == ENOMEM && x.nr_exchanged == 0,
        "no memory below 8 KiB: {r}, nr_exchanged {}",
        x.nr_exchanged
    );
    // Both are still the domain's and unused: the same exchange without the limit succeeds.
    let mut x = exchange(&input, 0, &mut out, 1);
    let r = memory_op(cmd::EXCHANGE, &mut x);
    check!(
        failed,
        r == 0 && x.nr_exchanged == 2 && m2p(out[0]) == base + 4 && m2p(out[0] + 1) == base + 5,
        "the frames kept after failures: {r}, nr_exchanged {}",
        x.nr_exchanged
    );
    // Frames Hestia writes for the domain never leave it: shared_info and a frame registered
    // for a vcpu_info (both hold a writable type reference, as in Xen).
    let mut out = [base + 6];
    let r = memory_op(
        cmd::EXCHANGE,
        &mut exchange(&[si.shared_info >> 12], 0, &mut out, 0),
    );
    check!(failed, r == EINVAL, "exchange of shared_info: {r}");
    let info = [free(6), 0];
    let r = hypercall(
        nr::VCPU_OP,
        u64::from(vcpu::cmd::REGISTER_VCPU_INFO),
        0,
        info.as_ptr() as u64,
        0,
        0,
    );
    check!(failed, r == 0, "register_vcpu_info: {r}");
    let r = memory_op(cmd::EXCHANGE, &mut exchange(&info[..1], 0, &mut out, 0));
    check!(failed, r == EINVAL, "exchange of the vcpu_info frame: {r}");
    check!(
        failed,
        reservation() == r0,
        "reservation {} moved from {r0}",
        reservation()
    );
    println!("exchanged around pfn {base:#x}");
    if failed {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
