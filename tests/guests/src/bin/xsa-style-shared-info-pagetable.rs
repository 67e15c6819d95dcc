//! shared_info can never become a page table, nor go back to the allocator.
//!
//! Hestia writes event bits and time into a domain's shared_info page for the domain's whole
//! life. It used to give that frame to the domain as an ordinary frame, without a reference or
//! a type of its own: a guest that moved its vcpu_info elsewhere, zeroed shared_info and
//! unmapped it could pin it as an L1 page table, and every later event sent to it would have
//! Hestia set PTE bits in that table for the guest (failed on the code before the fix: the pin
//! succeeded). As Xen's `share_xen_page_with_guest`, the frame now holds a writable type
//! reference for good. The guest then tries to balloon the frame out and back in, which must
//! never return the shared_info frame as a fresh page. Passes on Xen 4.17.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::mmu::{ext, uvmf};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::xen_abi::{memory, vcpu};
use hestia_guests::{
    SHARED_INFO_VA, Verdict, check, hypercall, map_shared_info, memory_op, mmuext_one, pfn_to_mfn,
    println, shared_word, single_extent,
};

const EINVAL: i64 = -22;

#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);
/// Where vCPU 0's vcpu_info moves, so Hestia no longer writes time into shared_info.
static VCPU_INFO_PAGE: Page = Page([const { AtomicU64::new(0) }; 512]);

/// One order-0 extent of `XENMEM_{increase,decrease}_reservation` on `list`.
fn balloon(cmd: u32, list: &mut u64) -> i64 {
    memory_op(cmd, &mut single_extent(list))
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    let shared_mfn = si.shared_info >> 12;
    check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
    let page_mfn = pfn_to_mfn(si, VCPU_INFO_PAGE.0.as_ptr() as u64 >> 12);
    let arg = [page_mfn, 0];
    check!(
        failed,
        hypercall(
            nr::VCPU_OP,
            u64::from(vcpu::cmd::REGISTER_VCPU_INFO),
            0,
            arg.as_ptr() as u64,
            0,
            0
        ) == 0,
        "register_vcpu_info"
    );
    // An all-zero page is a valid empty L1: nothing but its type can refuse it.
    for off in (0..4096).step_by(8) {
        shared_word(off).store(0, SeqCst);
    }
    check!(
        failed,
        hypercall(nr::UPDATE_VA_MAPPING, SHARED_INFO_VA, 0, uvmf::INVLPG, 0, 0) == 0,
        "unmapping shared_info"
    );
    for (cmd, name) in [
        (ext::PIN_L1_TABLE, "L1"),
        (ext::PIN_L2_TABLE, "L2"),
        (ext::PIN_L3_TABLE, "L3"),
        (ext::PIN_L4_TABLE, "L4"),
    ] {
        let r = mmuext_one(cmd, shared_mfn, 0);
        check!(
            failed,
            r == EINVAL,
            "pinning shared_info as an {name} returned {r}"
        );
        if r == 0 {
            mmuext_one(ext::UNPIN_TABLE, shared_mfn, 0);
        }
    }
    // The vcpu_info page is Hestia's to write too.
    let r = mmuext_one(ext::PIN_L1_TABLE, page_mfn, 0);
    check!(
        failed,
        r == EINVAL,
        "pinning the vcpu_info page as an L1 returned {r}"
    );

    // Ballooning the frame out must not make it a fresh page for anyone.
    let mut out = shared_mfn;
    let released = balloon(memory::cmd::DECREASE_RESERVATION, &mut out);
    let mut back = 0u64;
    let got = balloon(memory::cmd::INCREASE_RESERVATION, &mut back);
    println!("decrease of shared_info: {released}; increase: {got} (mfn {back:#x})");
    check!(
        failed,
        got != 1 || back != shared_mfn,
        "shared_info came back from the allocator as a fresh page"
    );
    let v = hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0);
    check!(failed, v > 0, "xen_version after the attempts: {v}");
    if failed {
        Verdict::Failure("shared_info frame")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
