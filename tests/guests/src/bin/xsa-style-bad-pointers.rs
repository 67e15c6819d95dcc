//! Hostile pointers in hypercall arguments: into the hypervisor hole, non-canonical, unmapped,
//! wrapping, and a read-only page as an output buffer. Each must be -EFAULT and Hestia must keep
//! answering.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::version::cmd;
use hestia_guests::xen_abi::xen::{StartInfo, consoleio, hypercall as nr};
use hestia_guests::{Verdict, check, hypercall, println};

const EFAULT: i64 = -14;

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    let hostile = [
        0xffff_8000_0000_0000u64, // M2P / hypervisor hole
        0xffff_82d0_8000_0000,    // Hestia's image
        0xffff_8300_0000_0000,    // Hestia's direct map
        0x0000_8000_0000_0000,    // non-canonical
        0x7fff_ffff_f000,         // unmapped user address
        0xffff_ffff_ffff_fff0,    // wraps around
        0x4000_0000,              // past the initial mapping
    ];
    for &p in &hostile {
        let r = hypercall(nr::CONSOLE_IO, u64::from(consoleio::WRITE), 32, p, 0, 0);
        check!(
            failed,
            r == EFAULT,
            "console_io write from {p:#x} returned {r}"
        );
        let r = hypercall(nr::XEN_VERSION, u64::from(cmd::CAPABILITIES), p, 0, 0, 0);
        check!(
            failed,
            r == EFAULT,
            "xen_version capabilities to {p:#x} returned {r}"
        );
    }
    // The bootstrap page tables are mapped read-only: Hestia must not write there for us.
    let r = hypercall(
        nr::XEN_VERSION,
        u64::from(cmd::CAPABILITIES),
        si.pt_base,
        0,
        0,
        0,
    );
    check!(
        failed,
        r == EFAULT,
        "xen_version wrote into a read-only page table ({r})"
    );
    // A buffer straddling into the hole.
    let r = hypercall(
        nr::CONSOLE_IO,
        u64::from(consoleio::WRITE),
        64,
        0xffff_7fff_ffff_fff0,
        0,
        0,
    );
    check!(
        failed,
        r == EFAULT,
        "console_io across the hole returned {r}"
    );
    let ver = hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0);
    check!(
        failed,
        ver == (4 << 16 | 17),
        "Hestia stopped answering ({ver:#x})"
    );
    println!("all hostile pointers refused");
    if failed {
        Verdict::Failure("a hostile pointer was accepted")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
