//! An exception while the guest's stack pointer aims at Hestia's memory: the bounce frame
//! cannot be written, so the domain is crashed; Hestia must not write there, and must survive.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{ExcFrame, Verdict, install_traps, println};

fn handler(_v: u64, _f: &mut ExcFrame) {
    println!("the handler ran on a hypervisor stack: isolation broken");
}

fn test(_si: &StartInfo) -> Verdict {
    install_traps(handler);
    println!("raising #UD with RSP in Hestia's direct map");
    // SAFETY: deliberately points RSP at the hypervisor and faults; Hestia crashes the domain.
    unsafe {
        core::arch::asm!("mov {0}, %rsp", "ud2", in(reg) 0xffff_8300_0010_0000u64, options(att_syntax, noreturn))
    }
}

hestia_guests::guest_main!(test);
