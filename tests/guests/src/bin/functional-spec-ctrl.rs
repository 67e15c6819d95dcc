//! Speculation controls as a PV kernel sees them, checked against its own CPUID, as Xen 4.17's
//! `guest_rdmsr`/`guest_wrmsr` answer them:
//! - IA32_PRED_CMD (0x49) is write-only: reading it raises #GP; writing IBPB (or 0) works
//!   exactly when CPUID offers IBPB (0x80000008 EBX[12], or Intel's IBRSB); a reserved bit
//!   raises #GP.
//! - IA32_SPEC_CTRL (0x48) exists exactly when CPUID offers IBRS (leaf 7 EDX[26], or AMD's
//!   0x80000008 EBX[14]). Hestia offers neither (it does not switch that MSR between guest and
//!   hypervisor, like Xen with `spec-ctrl=msr-sc=no-pv`), so there it raises #GP; on Xen with
//!   IBRS hardware it reads back what was written.
//! - CPUID's dependent bits stay consistent: STIBP and SSBD only with IBRSB, IBPB_RET only with
//!   IBPB.
//!
//! Then 20,000 hypercalls and 2,000 exceptions run through the exit path, which carries VERW
//! when the CPU needs it (or `spec-ctrl=verw` forces it; the scenario `functional-spec-ctrl-verw`
//! boots that way). QEMU's TCG `qemu64` has neither IBPB nor IBRS: there the MSRs all #GP.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{
    ExcFrame, Verdict, check, forced_cpuid, hypercall, install_traps, println, rdmsr_probe,
    wrmsr_probe,
};

const PRED_CMD: u32 = 0x49;
const SPEC_CTRL: u32 = 0x48;
/// __HYPERVISOR_xen_version, XENVER_version.
const XEN_VERSION: u32 = 17;

/// #GP count, and #BP count (the probes below).
static GP: AtomicU64 = AtomicU64::new(0);
static BP: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    match vector {
        // RDMSR/WRMSR are 2 bytes; skip the faulting one.
        13 => {
            GP.fetch_add(1, SeqCst);
            f.rip += 2;
        }
        // INT3 is a trap: RIP is already past it.
        3 => {
            BP.fetch_add(1, SeqCst);
        }
        _ => {
            println!("unexpected exception {vector} at {:#x}", f.rip);
            f.rip += 2;
        }
    }
}

fn rdmsr(msr: u32) -> Option<u64> {
    rdmsr_probe(msr, &GP)
}

fn wrmsr(msr: u32, v: u64) -> bool {
    wrmsr_probe(msr, v, &GP)
}

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    if install_traps(handler) != 0 {
        return Verdict::Error("set_trap_table");
    }
    let bit = |r: u32, b: u32| r & (1 << b) != 0;
    let max = forced_cpuid(0, 0).0;
    let l7d = if max >= 7 { forced_cpuid(7, 0).3 } else { 0 };
    let max_ext = forced_cpuid(0x8000_0000, 0).0;
    let e8b = if max_ext >= 0x8000_0008 {
        forced_cpuid(0x8000_0008, 0).1
    } else {
        0
    };
    let e21a = if max_ext >= 0x8000_0021 {
        forced_cpuid(0x8000_0021, 0).0
    } else {
        0
    };
    let ibrsb = bit(l7d, 26);
    let ibpb = bit(e8b, 12) || ibrsb;
    let ibrs = ibrsb || bit(e8b, 14);
    println!(
        "CPUID: IBRSB {ibrsb} STIBP {} SSBD {} MD_CLEAR {} IBPB {} IBRS {} IBPB_RET {}",
        bit(l7d, 27),
        bit(l7d, 31),
        bit(l7d, 10),
        bit(e8b, 12),
        bit(e8b, 14),
        bit(e8b, 30)
    );
    check!(
        failed,
        ibrsb || !(bit(l7d, 27) || bit(l7d, 31)),
        "STIBP/SSBD offered without IBRSB (leaf 7 EDX {l7d:#x})"
    );
    check!(
        failed,
        ibpb || !bit(e8b, 30),
        "IBPB_RET offered without IBPB"
    );

    // PRED_CMD.
    check!(
        failed,
        rdmsr(PRED_CMD).is_none(),
        "RDMSR PRED_CMD did not #GP"
    );
    check!(
        failed,
        wrmsr(PRED_CMD, 1) == ibpb,
        "WRMSR PRED_CMD IBPB: {} with IBPB {ibpb} in CPUID",
        if ibpb { "#GP" } else { "accepted" }
    );
    check!(
        failed,
        wrmsr(PRED_CMD, 0) == ibpb,
        "WRMSR PRED_CMD 0 with IBPB {ibpb}"
    );
    // Bit 1 is reserved everywhere; SBPB (bit 7) only where CPUID offers it.
    check!(
        failed,
        !wrmsr(PRED_CMD, 2),
        "WRMSR PRED_CMD reserved bit 1 accepted"
    );
    check!(
        failed,
        !wrmsr(PRED_CMD, 1 << 32),
        "WRMSR PRED_CMD reserved bit 32 accepted"
    );
    let sbpb = ibpb && bit(e21a, 27);
    check!(
        failed,
        wrmsr(PRED_CMD, 1 << 7) == sbpb,
        "WRMSR PRED_CMD SBPB with SBPB {sbpb}"
    );

    // SPEC_CTRL.
    let sc = rdmsr(SPEC_CTRL);
    check!(
        failed,
        sc.is_some() == ibrs,
        "RDMSR SPEC_CTRL {sc:?} with IBRS {ibrs} in CPUID"
    );
    check!(
        failed,
        wrmsr(SPEC_CTRL, 0) == ibrs,
        "WRMSR SPEC_CTRL 0 with IBRS {ibrs}"
    );
    if ibrs {
        check!(
            failed,
            wrmsr(SPEC_CTRL, 1) && rdmsr(SPEC_CTRL) == Some(1) && wrmsr(SPEC_CTRL, 0),
            "SPEC_CTRL.IBRS does not read back"
        );
    }

    // Many round trips through the exit path (VERW there when on).
    let mut bad = 0;
    for _ in 0..20_000 {
        if hypercall(XEN_VERSION, 0, 0, 0, 0, 0) < 0 {
            bad += 1;
        }
    }
    check!(failed, bad == 0, "{bad} xen_version hypercalls failed");
    for _ in 0..2_000 {
        // SAFETY: the handler counts the #BP and returns after the INT3.
        unsafe { asm!("int3", options(nostack)) };
    }
    check!(
        failed,
        BP.load(SeqCst) == 2_000,
        "{} of 2000 #BP delivered",
        BP.load(SeqCst)
    );

    if failed {
        Verdict::Failure("speculation controls")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
