//! The builder filled the hypercall page (the note asked for it) with Xen's stub layout, and
//! hypercalls through it work.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, hypercall, hypercall_page_bytes, println};

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    let page = hypercall_page_bytes();
    let slot = |n: usize| &page[n * 32..n * 32 + 32];
    let v = nr::XEN_VERSION as u8;
    check!(
        failed,
        slot(17)[..14]
            == [
                0x51, 0x41, 0x53, 0xB8, v, 0, 0, 0, 0x0F, 0x05, 0x41, 0x5B, 0x59, 0xC3
            ],
        "slot 17 is not push rcx; push r11; mov $17,%eax; syscall; pop; pop; ret"
    );
    check!(
        failed,
        slot(23)[..11] == [0x51, 0x41, 0x53, 0x50, 0xB8, 23, 0, 0, 0, 0x0F, 0x05],
        "the iret slot is wrong"
    );
    check!(
        failed,
        slot(17)[14..].iter().all(|&b| b == 0xCC),
        "slot padding is not int3"
    );
    let ver = hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0);
    println!("xen_version(0) through the page = {:#x}", ver);
    check!(failed, ver == (4 << 16 | 17), "unexpected version {ver:#x}");
    if failed {
        Verdict::Failure("hypercall page")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
