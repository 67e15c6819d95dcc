//! The start-of-day contract: start_info magic, flags for the initial domain, page tables and
//! P2M inside the initial mapping, RSP/RSI as the PV boot protocol says.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::xen::{StartInfo, sif};
use hestia_guests::{Verdict, check, println};

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    println!(
        "start_info at {:p}: nr_pages {}, pt_base {:#x} ({} frames), mfn_list {:#x}",
        si, si.nr_pages, si.pt_base, si.nr_pt_frames, si.mfn_list
    );
    check!(
        failed,
        si.magic.starts_with(b"xen-3.0-x86_64\0"),
        "magic is not xen-3.0-x86_64"
    );
    check!(
        failed,
        si.flags & sif::INITDOMAIN != 0 && si.flags & sif::PRIVILEGED != 0,
        "dom0 lacks SIF_INITDOMAIN|SIF_PRIVILEGED"
    );
    check!(
        failed,
        si.nr_pages >= 1024,
        "nr_pages {} too small",
        si.nr_pages
    );
    check!(
        failed,
        si.pt_base.is_multiple_of(4096) && si.nr_pt_frames >= 4,
        "bad page-table area"
    );
    check!(
        failed,
        si.shared_info.is_multiple_of(4096) && si.shared_info != 0,
        "bad shared_info address"
    );
    // The P2M's entries are MFNs: the first must be readable and non-zero for a real domain.
    // SAFETY: mfn_list points at nr_pages u64 entries inside the initial mapping.
    let p2m =
        unsafe { core::slice::from_raw_parts(si.mfn_list as *const u64, si.nr_pages as usize) };
    check!(
        failed,
        p2m.iter().all(|&m| m != 0 && m != u64::MAX),
        "P2M has invalid entries"
    );
    let start = si as *const StartInfo as u64;
    check!(
        failed,
        start.is_multiple_of(4096) && start > si.mfn_list,
        "start_info is not the page after the P2M"
    );
    if failed {
        Verdict::Failure("start-of-day contract broken")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
