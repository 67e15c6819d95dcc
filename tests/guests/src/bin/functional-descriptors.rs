//! Descriptor tables: `update_descriptor` (DPL forced to 3, system descriptors refused, only on
//! the domain's own non-page-table frames) and `set_gdt` (frames must not be writable-mapped,
//! become read-only for as long as they are a GDT, their descriptors are what the CPU loads;
//! the entry limit and bad pointers fail cleanly). With `switch` on its command line (two
//! vCPUs on one CPU): a vCPU's GDT is its own across vCPU switches; the other vCPU, with no
//! GDT, finds none of its entries, low or high, and it finds them all again each time it is
//! switched back in.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::mmu::uvmf;
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{
    ExcFrame, Verdict, check, cmdline, hypercall, install_traps, pfn_to_mfn, println, start_vcpu,
    yield_now,
};

const EFAULT: i64 = -14;
const EINVAL: i64 = -22;
/// Present, writable, user, accessed; and the same read-only.
const RW: u64 = 0x27;
const RO: u64 = 0x25;
/// Long-mode code, DPL 0 (as Linux writes `__KERNEL_CS`), and what Xen makes of it.
const CODE_DPL0: u64 = 0x00af_9b00_0000_ffff;
const CODE_DPL3: u64 = 0x00af_fb00_0000_ffff;
/// Flat data, DPL 3.
const DATA_DPL3: u64 = 0x00cf_f300_0000_ffff;
/// A present 64-bit TSS descriptor (system type 9).
const TSS: u64 = 0x0000_8900_0000_0067;

#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);
static GDT: Page = Page([const { AtomicU64::new(0) }; 512]);

static GP_FAULTS: AtomicU64 = AtomicU64::new(0);
static LAST_ERR: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector == 13 {
        GP_FAULTS.fetch_add(1, SeqCst);
        LAST_ERR.store(f.error_code, SeqCst);
        f.rip += 2; // the probe is a 2-byte `mov %ax, %es`
    } else {
        println!("unexpected exception {vector} at {:#x}", f.rip);
        f.rip += 1;
    }
}

fn update_descriptor(maddr: u64, desc: u64) -> i64 {
    hypercall(nr::UPDATE_DESCRIPTOR, maddr, desc, 0, 0, 0)
}

fn set_gdt(frames: &[u64], entries: u64) -> i64 {
    hypercall(nr::SET_GDT, frames.as_ptr() as u64, entries, 0, 0, 0)
}

/// The access-rights bytes of `sel` as LAR reports them, or `None` if LAR refuses it.
fn lar(sel: u64) -> Option<u64> {
    let (rights, ok): (u64, u8);
    // SAFETY: LAR only reads the descriptor table; it never faults for a selector in range.
    unsafe {
        asm!("lar {s}, {r}", "setz {ok}", s = in(reg) sel, r = out(reg) rights, ok = out(reg_byte) ok,
             options(att_syntax, nostack, nomem));
    }
    (ok == 1).then_some((rights >> 8) & 0xff)
}

/// Loads `sel` into %es; a refused selector raises #GP (counted by the handler).
fn load_es(sel: u16) {
    // SAFETY: %es is unused in 64-bit mode; a fault skips the 2-byte move.
    unsafe { asm!("mov {0:x}, %es", in(reg) sel, options(att_syntax, nostack)) };
}

/// Rounds of the switch test: each hands the CPU to the other vCPU and back.
const ROUNDS: u64 = 20;
/// A high entry of the GDT in the switch test (its second frame).
const HIGH: u64 = 700;
static GDT2: Page = Page([const { AtomicU64::new(0) }; 512]);
/// Whose turn it is in the switch test: even for vCPU 0, odd for vCPU 1.
static TURN: AtomicU64 = AtomicU64::new(0);
/// Turns on which vCPU 1 could load one of vCPU 0's descriptors.
static LEAKS: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACK: Stack = Stack([0; 16384]);

/// vCPU 1, which set no GDT: on each of its turns, vCPU 0's entries must be absent.
extern "C" fn other_vcpu() -> ! {
    loop {
        while TURN.load(SeqCst) & 1 == 0 {
            yield_now();
        }
        if lar(6 * 8 + 3).is_some() || lar(HIGH * 8 + 3).is_some() {
            LEAKS.fetch_add(1, SeqCst);
        }
        TURN.fetch_add(1, SeqCst);
    }
}

/// vCPU 0 loads a two-frame GDT (entries 6 and [`HIGH`] usable), starts vCPU 1 and takes
/// turns with it.
fn switch_test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    let frames = [&GDT, &GDT2].map(|p| pfn_to_mfn(si, p.0.as_ptr() as u64 >> 12));
    check!(
        failed,
        update_descriptor((frames[0] << 12) | (6 * 8), DATA_DPL3) == 0
            && update_descriptor((frames[1] << 12) | ((HIGH - 512) * 8), DATA_DPL3) == 0,
        "descriptors"
    );
    for (p, f) in [&GDT, &GDT2].into_iter().zip(frames) {
        let va = p.0.as_ptr() as u64;
        let r = hypercall(
            nr::UPDATE_VA_MAPPING,
            va,
            (f << 12) | RO,
            uvmf::INVLPG,
            0,
            0,
        );
        check!(failed, r == 0, "remap a GDT page read-only: {r}");
    }
    let r = set_gdt(&frames, 1024);
    check!(failed, r == 0, "set_gdt of two frames: {r}");
    let up = start_vcpu(si, 1, other_vcpu, (&raw const AP_STACK) as u64 + 16384);
    if failed || !up {
        return Verdict::Error("set-up (needs dom0_max_vcpus=2)");
    }
    let mut lost = 0;
    for _ in 0..ROUNDS {
        TURN.fetch_add(1, SeqCst);
        while TURN.load(SeqCst) & 1 == 1 {
            yield_now();
        }
        if lar(6 * 8 + 3) != Some(0xf3) || lar(HIGH * 8 + 3) != Some(0xf3) {
            lost += 1;
        }
    }
    let leaks = LEAKS.load(SeqCst);
    println!(
        "{ROUNDS} rounds: vCPU 1 saw vCPU 0's entries {leaks} times, vCPU 0 lost them {lost} times"
    );
    check!(failed, leaks == 0, "vCPU 0's GDT entries leaked to vCPU 1");
    check!(
        failed,
        lost == 0,
        "vCPU 0's GDT entries lost across switches"
    );
    if failed {
        Verdict::Failure("GDT across vCPU switches")
    } else {
        Verdict::Success
    }
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    if cmdline(si).split(' ').any(|w| w == "switch") {
        return switch_test(si);
    }
    let va = GDT.0.as_ptr() as u64;
    let frame = pfn_to_mfn(si, va >> 12);
    let maddr = frame << 12;
    let entry = |i: usize| GDT.0[i].load(SeqCst);

    // 1. update_descriptor on an ordinary page of the domain.
    check!(
        failed,
        update_descriptor(maddr + 5 * 8, CODE_DPL0) == 0,
        "code"
    );
    check!(
        failed,
        entry(5) == CODE_DPL3,
        "DPL not forced to 3: {:#x}",
        entry(5)
    );
    check!(
        failed,
        update_descriptor(maddr + 6 * 8, DATA_DPL3) == 0,
        "data"
    );
    check!(
        failed,
        entry(6) == DATA_DPL3,
        "data changed: {:#x}",
        entry(6)
    );
    let refused: [(u64, u64, i64, &str); 5] = [
        (maddr + 7 * 8, TSS, EINVAL, "a TSS descriptor"),
        (maddr + 3, DATA_DPL3, EINVAL, "a misaligned address"),
        (
            pfn_to_mfn(si, si.pt_base >> 12) << 12,
            DATA_DPL3,
            EINVAL,
            "the live L4",
        ),
        (0, DATA_DPL3, EINVAL, "machine frame 0 (not the domain's)"),
        (!7, DATA_DPL3, EINVAL, "a frame beyond RAM"),
    ];
    for (addr, desc, want, what) in refused {
        let r = update_descriptor(addr, desc);
        check!(
            failed,
            r == want,
            "update_descriptor on {what}: {r}, expected {want}"
        );
    }
    check!(
        failed,
        entry(7) == 0,
        "refused TSS written: {:#x}",
        entry(7)
    );

    // 2. set_gdt refusals.
    let r = set_gdt(&[frame], 16);
    check!(
        failed,
        r == EINVAL,
        "set_gdt on a writable-mapped page: {r}"
    );
    let r = set_gdt(&[frame], 14 * 512 + 1);
    check!(
        failed,
        r == EINVAL,
        "set_gdt over the reserved entries: {r}"
    );
    let r = hypercall(nr::SET_GDT, 0xffff_8000_0000_0000, 16, 0, 0, 0);
    check!(
        failed,
        r == EFAULT,
        "set_gdt with a hypervisor frame list: {r}"
    );

    // 3. Read-only, it becomes the GDT; the CPU sees the validated descriptors.
    let r = hypercall(nr::UPDATE_VA_MAPPING, va, maddr | RO, uvmf::INVLPG, 0, 0);
    check!(failed, r == 0, "remap the GDT page read-only: {r}");
    let r = set_gdt(&[frame], 16);
    check!(failed, r == 0, "set_gdt: {r}");
    check!(
        failed,
        lar(5 * 8 + 3) == Some(0xfb),
        "LAR of entry 5: {:?}",
        lar(43)
    );
    check!(
        failed,
        lar(6 * 8 + 3) == Some(0xf3),
        "LAR of entry 6: {:?}",
        lar(51)
    );
    check!(failed, lar(7 * 8 + 3).is_none(), "entry 7 is usable");
    load_es(6 * 8 + 3);
    check!(
        failed,
        GP_FAULTS.load(SeqCst) == 0,
        "loading entry 6 faulted"
    );
    load_es(7 * 8 + 3);
    check!(
        failed,
        GP_FAULTS.load(SeqCst) == 1 && LAST_ERR.load(SeqCst) == 7 * 8,
        "loading the null entry 7: {} #GP, error {:#x}",
        GP_FAULTS.load(SeqCst),
        LAST_ERR.load(SeqCst)
    );
    // A live GDT frame: update_descriptor reaches the CPU's copy; it cannot be mapped writable.
    check!(
        failed,
        update_descriptor(maddr + 8 * 8, DATA_DPL3) == 0,
        "live update"
    );
    check!(
        failed,
        lar(8 * 8 + 3) == Some(0xf3),
        "live update not seen by LAR"
    );
    let r = update_descriptor(maddr + 9 * 8, TSS);
    check!(failed, r == EINVAL, "TSS in a live GDT: {r}");
    let r = hypercall(nr::UPDATE_VA_MAPPING, va, maddr | RW, uvmf::INVLPG, 0, 0);
    check!(failed, r < 0, "the live GDT page was mapped writable ({r})");
    println!("writable mapping of a live GDT frame: {r}");

    // 4. An empty GDT releases the frame: writable again, and its entries are gone.
    load_es(0);
    check!(failed, set_gdt(&[], 0) == 0, "set_gdt with no entries");
    check!(failed, lar(6 * 8 + 3).is_none(), "entry 6 still loadable");
    let r = hypercall(nr::UPDATE_VA_MAPPING, va, maddr | RW, uvmf::INVLPG, 0, 0);
    check!(failed, r == 0, "released GDT page stays read-only ({r})");
    if failed {
        Verdict::Failure("descriptor tables")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
