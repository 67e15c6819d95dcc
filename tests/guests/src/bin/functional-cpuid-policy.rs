//! CPUID as a PV guest sees it (through the forced-emulation prefix): Xen's PV featureset, so no
//! page-size or global pages, VMX/SVM, x2APIC, PCID or 1 GiB pages; the hypervisor bit;
//! no APIC ID; the hypervisor leaves with preserve-AD advertised.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{Verdict, check, forced_cpuid, println};

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    let (_, b, c, d) = forced_cpuid(1, 0);
    println!("leaf 1: ebx {b:#x} ecx {c:#x} edx {d:#x}");
    // (MTRR may show: Xen lets it leak into the hardware domain's kernel.)
    for (bit, name) in [(1, "VME"), (3, "PSE"), (13, "PGE"), (17, "PSE36")] {
        check!(failed, d & (1 << bit) == 0, "leaf 1 EDX offers {name}");
    }
    for (bit, name) in [
        (0, "FPU"),
        (4, "TSC"),
        (6, "PAE"),
        (24, "FXSR"),
        (25, "SSE"),
        (26, "SSE2"),
    ] {
        check!(failed, d & (1 << bit) != 0, "leaf 1 EDX lacks {name}");
    }
    for (bit, name) in [
        (5, "VMX"),
        (17, "PCID"),
        (21, "X2APIC"),
        (24, "TSC-deadline"),
    ] {
        check!(failed, c & (1 << bit) == 0, "leaf 1 ECX offers {name}");
    }
    check!(failed, c & (1 << 31) != 0, "no hypervisor bit");
    check!(failed, b >> 24 == 0, "an APIC ID {:#x}", b >> 24);

    let (_, _, c, d) = forced_cpuid(0x8000_0001, 0);
    check!(failed, d & (1 << 29) != 0, "no long mode");
    check!(failed, d & (1 << 26) == 0, "1 GiB pages offered");
    check!(
        failed,
        d & (1 << 3) == 0 && d & (1 << 13) == 0,
        "AMD PSE/PGE copies"
    );
    check!(failed, c & (1 << 2) == 0, "SVM offered");

    let (a, _, _, _) = forced_cpuid(0x4000_0000, 0);
    check!(failed, a >= 0x4000_0002, "hypervisor leaves end at {a:#x}");
    let (a, _, c, _) = forced_cpuid(0x4000_0002, 0);
    check!(
        failed,
        a == 1 && c & 1 == 1,
        "leaf 0x40000002: {a} pages, flags {c:#x}"
    );
    if failed {
        Verdict::Failure("CPUID policy")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
