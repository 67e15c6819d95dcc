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

use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, hypercall, m2p, pfn_to_mfn, println};

const EPERM: i64 = -1;
const ESRCH: i64 = -3;
const ENOMEM: i64 = -12;
const EFAULT: i64 = -14;
const EINVAL: i64 = -22;

/// `struct xen_memory_exchange`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Exchange {
    in_list: u64,
    in_nr: u64,
    in_order: u64,
    in_dom: u64,
    out_list: u64,
    out_nr: u64,
    out_order: u64,
    out_dom: u64,
    nr_exchanged: u64,
}

impl Exchange {
    fn new(input: &[u64], in_order: u64, output: &mut [u64], out_order: u64) -> Self {
        Exchange {
            in_list: input.as_ptr() as u64,
            in_nr: input.len() as u64,
            in_order,
            in_dom: u64::from(DOMID_SELF),
            out_list: output.as_mut_ptr() as u64,
            out_nr: output.len() as u64,
            out_order,
            out_dom: u64::from(DOMID_SELF),
            nr_exchanged: 0,
        }
    }

    fn call(&mut self) -> i64 {
        hypercall(nr::MEMORY_OP, 11, self as *mut Exchange as u64, 0, 0, 0)
    }
}

fn reservation() -> i64 {
    let me = DOMID_SELF;
    hypercall(nr::MEMORY_OP, 3, &me as *const u16 as u64, 0, 0, 0)
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
    // Beyond any domain's maximum order (Hestia's is 9, Xen's at most 20).
    let mut x = Exchange::new(&input, 30, &mut out, 30);
    let r = x.call();
    check!(failed, r == EPERM, "order 30: {r}");
    let mut x = Exchange::new(&input, 0, &mut out[..1], 0);
    let r = x.call();
    check!(failed, r == EINVAL, "2 frames in, 1 out: {r}");
    let mut x = Exchange::new(&input, 0, &mut out, 0);
    x.nr_exchanged = 3;
    let r = x.call();
    check!(
        failed,
        r == EINVAL && x.nr_exchanged == 3,
        "nr_exchanged beyond the input: {r}, {}",
        x.nr_exchanged
    );
    let mut x = Exchange::new(&input, 0, &mut out, 0);
    x.out_dom = 0; // dom0 by number: the same domain, but not the same id
    check!(failed, x.call() == EINVAL, "different domains");
    let mut x = Exchange::new(&input, 0, &mut out, 0);
    (x.in_dom, x.out_dom) = (77, 77);
    let r = x.call();
    check!(failed, r == ESRCH, "no such domain: {r}");
    let mut x = Exchange::new(&input, 0, &mut out, 0);
    x.in_list = 0xffff_8300_0000_0000;
    let r = x.call();
    check!(failed, r == EFAULT, "input list in the hypervisor: {r}");
    let mut x = Exchange::new(&input, 0, &mut out, 0);
    x.out_list = 0xffff_8300_0000_0000;
    let r = x.call();
    check!(failed, r == EFAULT, "output list in the hypervisor: {r}");
    let mut x = Exchange::new(&input, 0, &mut out, 0);
    x.nr_exchanged = 2;
    let r = x.call();
    check!(
        failed,
        r == 0 && out == [base, base + 1],
        "nothing left to do: {r}, {out:x?}"
    );

    // Partial progress: extent 1 is in use, so extent 0 is exchanged and the call stops.
    let input = [free(2), busy, free(3)];
    let mut out = [base + 2, base + 100, base + 3];
    let mut x = Exchange::new(&input, 0, &mut out, 0);
    let r = x.call();
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
    let r = x.call();
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
    let mut x = Exchange::new(&input, 0, &mut out, 1);
    let r = x.call();
    check!(
        failed,
        r == EINVAL && x.nr_exchanged == 0 && out[0] == base + 4,
        "invalid frame in a chunk: {r}, nr_exchanged {}",
        x.nr_exchanged
    );
    // No memory under 8 KiB: nothing changes either.
    let input = [free(4), free(5)];
    let mut x = Exchange::new(&input, 0, &mut out, 1);
    x.out_order |= 13 << 32;
    let r = x.call();
    check!(
        failed,
        r == ENOMEM && x.nr_exchanged == 0,
        "no memory below 8 KiB: {r}, nr_exchanged {}",
        x.nr_exchanged
    );
    // Both are still the domain's and unused: the same exchange without the limit succeeds.
    let mut x = Exchange::new(&input, 0, &mut out, 1);
    let r = x.call();
    check!(
        failed,
        r == 0 && x.nr_exchanged == 2 && m2p(out[0]) == base + 4 && m2p(out[0] + 1) == base + 5,
        "the frames kept after failures: {r}, nr_exchanged {}",
        x.nr_exchanged
    );
    // Frames Hestia writes for the domain never leave it: shared_info and a frame registered
    // for a vcpu_info (both hold a writable type reference, as in Xen).
    let mut out = [base + 6];
    let r = Exchange::new(&[si.shared_info >> 12], 0, &mut out, 0).call();
    check!(failed, r == EINVAL, "exchange of shared_info: {r}");
    let info = [free(6), 0];
    let r = hypercall(nr::VCPU_OP, 10, 0, info.as_ptr() as u64, 0, 0);
    check!(failed, r == 0, "register_vcpu_info: {r}");
    let r = Exchange::new(&info[..1], 0, &mut out, 0).call();
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
