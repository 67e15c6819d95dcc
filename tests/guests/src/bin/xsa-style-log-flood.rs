//! A guest makes Hestia log the same complaint 10,000 times: guest-triggered log lines must be
//! rate-limited per domain, or any guest turns the serial console (and the CPU that prints) into
//! its own. The complaint is a refused `mmu_update` (an M2P update of a frame the guest does not
//! own; the scenario runs with `loglvl=debug`, where Hestia reports each refusal). Every call must
//! still return -EINVAL (as on Xen 4.17); after a pause that refills the bucket, one more refusal
//! must print the number of lines suppressed. The scenario checks the log holds that line and
//! far fewer than 10,000 refusals.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::mmu::update;
use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{Verdict, check, map_shared_info, mmu_update_one, println, system_time_ns};

const EINVAL: i64 = -22;
/// Refusals in the flood.
const FLOOD: u32 = 10_000;
/// A machine frame far beyond any RAM: nobody owns it.
const BOGUS_MFN: u64 = 1 << 36;

fn refused_update() -> i64 {
    mmu_update_one((BOGUS_MFN << 12) | update::MACHPHYS_UPDATE, 0)
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
    let wrong = (0..FLOOD).filter(|_| refused_update() != EINVAL).count();
    check!(
        failed,
        wrong == 0,
        "{wrong} of {FLOOD} refusals did not return -EINVAL"
    );
    // Half a second refills the bucket: the next line carries the count of those dropped.
    let start = system_time_ns();
    while system_time_ns().wrapping_sub(start) < 500_000_000 {
        core::hint::spin_loop();
    }
    let r = refused_update();
    check!(failed, r == EINVAL, "the last refusal returned {r}");
    println!("log flood: {} refused mmu_updates", FLOOD + 1);
    if failed {
        Verdict::Failure("log flood")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
