//! `set_segment_base(SEGBASE_GS_USER_SEL)`: loads the user %gs selector (RPL forced to 3) from
//! the guest's GDT, and its descriptor base becomes the user GS base (read back through the
//! emulated RDMSR of KERNEL_GS_BASE); a refused selector loads the null one and still succeeds.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::mmu::uvmf;
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, hypercall, pfn_to_mfn};

const SEGBASE_GS_USER_SEL: u64 = 3;
const RO: u64 = 0x25;
const BASE: u64 = 0x0012_3000;

#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);
static GDT: Page = Page([const { AtomicU64::new(0) }; 512]);

/// A flat 4 GiB, DPL 3, read/write data descriptor with base `base` (32 bits).
fn data_descriptor(base: u64) -> u64 {
    0xffff | (base & 0xff_ffff) << 16 | 0xF2 << 40 | 0xF << 48 | 0xC << 52 | (base >> 24) << 56
}

fn gs_selector() -> u16 {
    let s: u16;
    // SAFETY: reads a segment register.
    unsafe { asm!("mov {0:x}, gs", out(reg) s, options(nostack, nomem)) };
    s
}

fn user_gs_base() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDMSR of KERNEL_GS_BASE, emulated: the inactive (user) GS base.
    unsafe {
        asm!("rdmsr", in("ecx") 0xC000_0102u32, out("eax") lo, out("edx") hi, options(nostack))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

fn load(sel: u64) -> i64 {
    hypercall(nr::SET_SEGMENT_BASE, SEGBASE_GS_USER_SEL, sel, 0, 0, 0)
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    GDT.0[6].store(data_descriptor(BASE), SeqCst);
    let va = GDT.0.as_ptr() as u64;
    let frame = pfn_to_mfn(si, va >> 12);
    check!(
        failed,
        hypercall(
            nr::UPDATE_VA_MAPPING,
            va,
            (frame << 12) | RO,
            uvmf::INVLPG,
            0,
            0
        ) == 0,
        "GDT page read-only"
    );
    let frames = [frame];
    check!(
        failed,
        hypercall(nr::SET_GDT, frames.as_ptr() as u64, 16, 0, 0, 0) == 0,
        "set_gdt"
    );

    check!(failed, load(6 * 8) == 0, "load entry 6 (RPL 0)");
    check!(
        failed,
        gs_selector() == 6 * 8 + 3,
        "%gs is {:#x}, expected RPL 3",
        gs_selector()
    );
    check!(
        failed,
        user_gs_base() == BASE,
        "user GS base {:#x}",
        user_gs_base()
    );

    // Entry 9 is empty: the null selector is loaded instead; the call still succeeds.
    check!(
        failed,
        load(9 * 8 + 3) == 0,
        "refused selector failed the call"
    );
    check!(
        failed,
        gs_selector() == 0,
        "%gs {:#x} after a refused selector",
        gs_selector()
    );
    check!(
        failed,
        user_gs_base() == 0,
        "base {:#x} after a refused selector",
        user_gs_base()
    );

    check!(
        failed,
        load(6 * 8 + 3) == 0 && user_gs_base() == BASE,
        "reload"
    );
    check!(
        failed,
        load(0) == 0 && gs_selector() == 0 && user_gs_base() == 0,
        "null"
    );
    if failed {
        Verdict::Failure("user GS selector")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
