//! The runtime of Hestia's PV test guests, the way XTF's `arch/x86/pv` is for Xen: Xen ELF
//! notes, a hypercall page the builder must fill, hypercall wrappers (through the page and by raw
//! `syscall`, as recent Linux does), console output through `console_io`, and the XTF verdict
//! protocol: exactly one `Test result: SUCCESS|SKIP|ERROR|FAILURE` line, then shutdown.
//!
//! A guest provides `fn test_main(si: &StartInfo) -> Verdict` through [`guest_main!`].
#![no_std]

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};

pub use xen_abi;
use xen_abi::sched::{SchedShutdown, cmd, reason};
use xen_abi::xen::{StartInfo, consoleio, hypercall as nr};

global_asm!(
    r#"
    .section .text.start, "ax"
    .global _start
_start:
    lea hestia_guest_stack_top(%rip), %rsp
    mov %rsi, %rdi
    call hestia_guest_entry
    ud2

    .section .text.hypercall_page, "ax"
    .balign 4096
    .global hypercall_page
hypercall_page:
    /* Poisoned with `ret`, as XTF does: an unfilled page is detected, not silently used. */
    .fill 4096, 1, 0xc3

    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 12, 6
    .asciz "Xen"
    .asciz "Hestia-test"
    .balign 4
    .long 4, 8, 8
    .asciz "Xen"
    .asciz "generic"
    .balign 4
    .long 4, 8, 5
    .asciz "Xen"
    .asciz "xen-3.0"
    .balign 4
    .long 4, 8, 2
    .asciz "Xen"
    .quad hypercall_page
    .balign 4

    .section .bss.stack, "aw", @nobits
    .balign 16
    .skip 65536
hestia_guest_stack_top:
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static hypercall_page: [u8; 4096];
}

/// The hypercall page (for tests that inspect it).
pub fn hypercall_page_bytes() -> &'static [u8; 4096] {
    // SAFETY: the page is part of the image; the builder wrote it before the guest started.
    unsafe { &hypercall_page }
}

/// A hypercall through the hypercall page.
pub fn hypercall(number: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let stub = hypercall_page_bytes().as_ptr() as u64 + u64::from(number) * 32;
    let ret: i64;
    // SAFETY: the stub preserves everything but RAX and the argument registers, which are
    // declared clobbered; it returns with `ret`.
    unsafe {
        asm!("call {stub}", stub = in(reg) stub, inlateout("rdi") a1 => _, inlateout("rsi") a2 => _, inlateout("rdx") a3 => _,
             inlateout("r10") a4 => _, inlateout("r8") a5 => _, lateout("rax") ret, out("rcx") _, out("r11") _)
    };
    ret
}

/// A hypercall by a raw `syscall`, without the page (as Linux 6.1 after XSA-466 does).
pub fn raw_hypercall(number: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: SYSCALL in guest kernel mode is a hypercall; RCX and R11 are destroyed by the
    // instruction, the argument registers by convention.
    unsafe {
        asm!("syscall", inlateout("rax") u64::from(number) => ret, inlateout("rdi") a1 => _, inlateout("rsi") a2 => _,
             inlateout("rdx") a3 => _, inlateout("r10") a4 => _, inlateout("r8") a5 => _, out("rcx") _, out("r11") _)
    };
    ret
}

/// Writes bytes to the console.
pub fn console_write(s: &[u8]) -> i64 {
    hypercall(
        nr::CONSOLE_IO,
        u64::from(consoleio::WRITE),
        s.len() as u64,
        s.as_ptr() as u64,
        0,
        0,
    )
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        console_write(s.as_bytes());
        Ok(())
    }
}

/// Prints to the console.
pub fn print(args: fmt::Arguments<'_>) {
    let _ = Console.write_fmt(args);
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    ($($t:tt)*) => { $crate::print(format_args!("{}\n", format_args!($($t)*))) };
}

/// Stops the domain.
pub fn shutdown(why: u32) -> ! {
    let s = SchedShutdown { reason: why };
    loop {
        hypercall(
            nr::SCHED_OP,
            u64::from(cmd::SHUTDOWN),
            &s as *const SchedShutdown as u64,
            0,
            0,
            0,
        );
    }
}

/// The XTF verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything checked held.
    Success,
    /// The test does not apply here.
    Skip(&'static str),
    /// The test could not run properly.
    Error(&'static str),
    /// A check failed.
    Failure(&'static str),
}

/// Checks a condition; on failure prints why and records it.
#[macro_export]
macro_rules! check {
    ($failed:ident, $cond:expr, $($t:tt)*) => {
        if !$cond {
            $crate::println!("FAIL: {}", format_args!($($t)*));
            $failed = true;
        }
    };
}

fn report(v: Verdict) -> ! {
    match v {
        Verdict::Success => println!("Test result: SUCCESS"),
        Verdict::Skip(w) => println!("Test result: SKIP ({w})"),
        Verdict::Error(w) => println!("Test result: ERROR ({w})"),
        Verdict::Failure(w) => println!("Test result: FAILURE ({w})"),
    }
    shutdown(reason::POWEROFF)
}

/// Runs the guest's test and reports its verdict. Called by [`guest_main!`].
pub fn run(si: &StartInfo, test: fn(&StartInfo) -> Verdict) -> ! {
    if hypercall_page_bytes()[0] == 0xC3 {
        // Nothing can be printed without the page; crash so the harness sees no verdict.
        let s = SchedShutdown {
            reason: reason::CRASH,
        };
        raw_hypercall(
            nr::SCHED_OP,
            u64::from(cmd::SHUTDOWN),
            &s as *const SchedShutdown as u64,
            0,
            0,
            0,
        );
    }
    report(test(si))
}

/// Declares the guest's test function.
#[macro_export]
macro_rules! guest_main {
    ($f:path) => {
        #[unsafe(no_mangle)]
        extern "C" fn hestia_guest_entry(si: &'static $crate::xen_abi::xen::StartInfo) -> ! {
            $crate::run(si, $f)
        }

        #[panic_handler]
        fn panic(p: &core::panic::PanicInfo<'_>) -> ! {
            $crate::println!("panic: {}", p.message());
            $crate::println!("Test result: ERROR (panic)");
            $crate::shutdown($crate::xen_abi::sched::reason::CRASH)
        }
    };
}
