//! A guest exception Hestia cannot deliver yet crashes the guest, never Hestia: the harness
//! expects Hestia's domain_crash report, not a verdict.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{Verdict, println};

fn test(_si: &StartInfo) -> Verdict {
    println!("executing ud2 in guest kernel mode");
    // SAFETY: deliberately raises #UD.
    unsafe { core::arch::asm!("ud2") };
    Verdict::Error("ud2 returned")
}

hestia_guests::guest_main!(test);
