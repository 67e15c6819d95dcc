//! `MMUEXT_NEW_BASEPTR` to MFN 0 (found by the structured fuzzer as a guest `mov` to CR3 of an
//! address below 4096, which takes the same path) must fail with an errno, as on Xen 4.17
//! (-EINVAL: MFN 0 is no L4 of the domain), and leave the vCPU on its own L4. A hypervisor that
//! takes L4 0 for "no L4" loads CR3 = 0 and triple-faults the machine.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::mmu::{MmuextOp, ext};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, hypercall, println};

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    let op = MmuextOp {
        cmd: ext::NEW_BASEPTR,
        _pad: 0,
        arg1: 0,
        arg2: 0,
    };
    let rc = hypercall(
        nr::MMUEXT_OP,
        &op as *const MmuextOp as u64,
        1,
        0,
        u64::from(DOMID_SELF),
        0,
    );
    println!("MMUEXT_NEW_BASEPTR(0) returned {rc}");
    check!(
        failed,
        rc < 0,
        "a base pointer of MFN 0 was accepted ({rc})"
    );
    let ver = hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0);
    check!(
        failed,
        ver == (4 << 16 | 17),
        "no answer afterwards ({ver:#x})"
    );
    if failed {
        Verdict::Failure("new_baseptr(0)")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
