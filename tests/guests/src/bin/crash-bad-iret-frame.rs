//! An `iret` hypercall whose frame the CPU refuses (Hestia's ring-0 code selector as CS), from a
//! guest with no trap table: the exit IRETQ's #GP becomes the guest's, which has no handler for
//! it, so the domain is crashed, never Hestia. The harness expects Hestia's domain_crash
//! report, not a verdict.
#![no_std]
#![no_main]

use core::arch::asm;

use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{Verdict, hypercall_page_bytes, println};

/// Hestia's ring-0 code selector (DPL 0: refused at RPL 3).
const HYPERVISOR_CS: u64 = 0xe008;
/// The guest kernel's flat stack selector.
const KERNEL_SS: u64 = 0xe02b;

fn test(_si: &StartInfo) -> Verdict {
    println!("iret with CS {HYPERVISOR_CS:#x}");
    let stub = hypercall_page_bytes().as_ptr() as u64 + 23 * 32;
    // SAFETY: the iret hypercall's frame (flags, RIP = label 2, CS, RFLAGS, RSP, SS), as the
    // runtime's exception stubs build it; were the frame accepted, the guest would resume at
    // label 2 with this RSP.
    unsafe {
        asm!("mov %rsp, %rax", "push %r8", "push %rax", "push $0", "push %r9",
             "lea 2f(%rip), %rax", "push %rax", "push $0", "jmp *%rdi", "2:",
             inout("rdi") stub => _, inout("r8") KERNEL_SS => _, inout("r9") HYPERVISOR_CS => _,
             out("rax") _, out("rcx") _, out("r11") _, options(att_syntax))
    };
    Verdict::Error("the refused frame returned")
}

hestia_guests::guest_main!(test);
