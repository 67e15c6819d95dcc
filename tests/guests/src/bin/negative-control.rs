//! Must be reported as FAILURE: proves the harness reads verdicts instead of assuming success.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{Verdict, println};

fn test(_si: &StartInfo) -> Verdict {
    println!("this test fails on purpose");
    Verdict::Failure("negative control")
}

hestia_guests::guest_main!(test);
