//! Emulated MSRs and control registers of a PV kernel: Xen's fixed PAT, EFER written back
//! unchanged, the virtual machine-check banks, unknown MSRs as #GP; CR0 (TS only), virtual
//! CR2, CR3 as the current L4, CR4 with TSD making RDTSC trap (and still work), XSETBV checks.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{
    ExcFrame, Verdict, check, forced_cpuid, install_traps, pfn_to_mfn, println, rdmsr_probe,
    wrmsr_probe,
};

static GP: AtomicU64 = AtomicU64::new(0);
/// Bytes to skip for the next faulting probe.
static SKIP: AtomicU64 = AtomicU64::new(2);

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector == 13 {
        GP.fetch_add(1, SeqCst);
    } else {
        println!("unexpected exception {vector} at {:#x}", f.rip);
    }
    f.rip += SKIP.load(SeqCst);
}

/// RDMSR; `None` if it raised #GP.
fn rdmsr(msr: u32) -> Option<u64> {
    SKIP.store(2, SeqCst);
    rdmsr_probe(msr, &GP)
}

/// WRMSR; false if it raised #GP.
fn wrmsr(msr: u32, v: u64) -> bool {
    SKIP.store(2, SeqCst);
    wrmsr_probe(msr, v, &GP)
}

macro_rules! read_cr {
    ($cr:literal) => {{
        let v: u64;
        // SAFETY: emulated by the hypervisor; no side effects.
        unsafe { asm!(concat!("mov %cr", $cr, ", {}"), out(reg) v, options(att_syntax, nostack)) };
        v
    }};
}

macro_rules! write_cr {
    ($cr:literal, $v:expr) => {{
        SKIP.store(3, SeqCst);
        // SAFETY: emulated by the hypervisor (or #GP skipped); only the virtual state changes.
        unsafe { asm!(concat!("mov {}, %cr", $cr), in(reg) $v, options(att_syntax, nostack)) };
    }};
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);

    // MSRs.
    check!(
        failed,
        rdmsr(0x277) == Some(0x0000_0501_0007_0406),
        "PAT {:x?}",
        rdmsr(0x277)
    );
    let efer = rdmsr(0xC000_0080);
    check!(
        failed,
        efer.is_some_and(|e| e & 0xd01 == 0xd01),
        "EFER {efer:x?} lacks SCE/LME/LMA/NX"
    );
    let efer = efer.unwrap_or(0);
    check!(failed, wrmsr(0xC000_0080, efer), "writing EFER back");
    check!(failed, !wrmsr(0xC000_0080, efer & !1), "clearing EFER.SCE");
    let mcg_cap = rdmsr(0x179);
    check!(
        failed,
        mcg_cap.is_some_and(|c| c & 0xff >= 1),
        "MCG_CAP {mcg_cap:x?}"
    );
    // Bank controls stick at all ones, as in Xen's vMCE.
    check!(
        failed,
        wrmsr(0x400, 0x5) && rdmsr(0x400) == Some(u64::MAX),
        "MC0_CTL {:x?}",
        rdmsr(0x400)
    );
    check!(failed, rdmsr(0x401) == Some(0), "MC0_STATUS shows an error");
    check!(failed, rdmsr(0x1234_5678).is_none(), "unknown MSR read");
    check!(failed, !wrmsr(0x277, 0), "PAT write accepted");
    println!(
        "EFER {efer:#x}, MCG_CAP {mcg_cap:x?}, APIC_BASE {:x?}",
        rdmsr(0x1b)
    );

    // CR0: only TS may change.
    let cr0 = read_cr!(0);
    check!(
        failed,
        cr0 & 0x8000_0001 == 0x8000_0001,
        "CR0 {cr0:#x} without PE/PG"
    );
    write_cr!(0, cr0 | 8);
    check!(failed, read_cr!(0) & 8 != 0, "CR0.TS not set");
    // SAFETY: CLTS is emulated.
    unsafe { asm!("clts", options(nostack, nomem)) };
    check!(failed, read_cr!(0) & 8 == 0, "CLTS left TS");
    let before = GP.load(SeqCst);
    write_cr!(0, cr0 & !0x1_0000);
    check!(
        failed,
        GP.load(SeqCst) == before + 1,
        "clearing CR0.WP accepted"
    );

    // CR2 and CR3.
    write_cr!(2, 0x1234_5000u64);
    check!(failed, read_cr!(2) == 0x1234_5000, "CR2 {:#x}", read_cr!(2));
    let l4 = pfn_to_mfn(si, si.pt_base >> 12) << 12;
    check!(
        failed,
        read_cr!(3) == l4,
        "CR3 {:#x}, L4 at {l4:#x}",
        read_cr!(3)
    );

    // CR4: PAE visible; TSD makes RDTSC fault into the emulator, which still answers.
    let cr4 = read_cr!(4);
    check!(failed, cr4 & 0x20 != 0, "CR4 {cr4:#x} without PAE");
    write_cr!(4, cr4 | 4);
    check!(failed, read_cr!(4) & 4 != 0, "CR4.TSD not set");
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC, emulated while TSD is set.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nostack, nomem)) };
    check!(failed, lo != 0 || hi != 0, "RDTSC under TSD");
    write_cr!(4, cr4);
    check!(failed, read_cr!(4) == cr4, "CR4 restored");
    write_cr!(4, cr4 | (1 << 7));
    check!(failed, read_cr!(4) & (1 << 7) == 0, "CR4.PGE accepted");

    // XSETBV (where the CPU has XSAVE): XCR1 does not exist.
    if forced_cpuid(1, 0).2 & (1 << 26) != 0 {
        SKIP.store(3, SeqCst);
        let before = GP.load(SeqCst);
        // SAFETY: faults (#GP, skipped by the handler) without changing anything.
        unsafe { asm!("xsetbv", in("ecx") 1, in("eax") 3, in("edx") 0, options(nostack)) };
        check!(failed, GP.load(SeqCst) == before + 1, "XSETBV of XCR1");
    }
    if failed {
        Verdict::Failure("MSRs and control registers")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
