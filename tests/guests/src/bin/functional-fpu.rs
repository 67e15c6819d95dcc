//! FPU for PV guests: SSE works (the hypervisor enables OSFXSR); fpu_taskswitch(1) makes the
//! next x87 instruction raise #NM, which clears TS so the instruction succeeds on return;
//! fpu_taskswitch(0) and an emulated CLTS clear it; vm_assist accepts known assists only.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{ExcFrame, Verdict, check, hypercall, install_traps};

static NM: AtomicU64 = AtomicU64::new(0);
static OTHER: AtomicU64 = AtomicU64::new(0);

fn handler(v: u64, f: &mut ExcFrame) {
    if v == 7 {
        // Do not skip: the faulting instruction must succeed now that TS is clear.
        NM.fetch_add(1, SeqCst);
    } else {
        OTHER.store(v + 1, SeqCst);
        f.rip += 3;
    }
}

fn fninit() {
    // SAFETY: x87 initialisation of the guest's own FPU state.
    unsafe { core::arch::asm!("fninit", options(nostack)) };
}

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    // SAFETY: an SSE register operation on the guest's own state.
    unsafe { core::arch::asm!("xorps %xmm0, %xmm0", out("xmm0") _, options(att_syntax, nostack)) };
    check!(
        failed,
        OTHER.load(SeqCst) == 0,
        "SSE raised vector {}",
        OTHER.load(SeqCst).wrapping_sub(1)
    );

    check!(
        failed,
        hypercall(nr::FPU_TASKSWITCH, 1, 0, 0, 0, 0) == 0,
        "fpu_taskswitch(1)"
    );
    fninit();
    check!(
        failed,
        NM.load(SeqCst) == 1,
        "{} #NM after fpu_taskswitch(1)",
        NM.load(SeqCst)
    );
    fninit();
    check!(
        failed,
        NM.load(SeqCst) == 1,
        "#NM again: TS was not cleared by the first one"
    );

    hypercall(nr::FPU_TASKSWITCH, 1, 0, 0, 0, 0);
    hypercall(nr::FPU_TASKSWITCH, 0, 0, 0, 0, 0);
    fninit();
    check!(failed, NM.load(SeqCst) == 1, "#NM after fpu_taskswitch(0)");

    hypercall(nr::FPU_TASKSWITCH, 1, 0, 0, 0, 0);
    // SAFETY: CLTS from the PV kernel is emulated by the hypervisor.
    unsafe { core::arch::asm!("clts", options(nostack)) };
    fninit();
    check!(failed, NM.load(SeqCst) == 1, "#NM after an emulated CLTS");

    check!(
        failed,
        hypercall(nr::VM_ASSIST, 0, 2, 0, 0, 0) == 0,
        "enable writable_pagetables assist"
    );
    check!(
        failed,
        hypercall(nr::VM_ASSIST, 1, 2, 0, 0, 0) == 0,
        "disable it again"
    );
    check!(
        failed,
        hypercall(nr::VM_ASSIST, 0, 17, 0, 0, 0) == -22,
        "unknown assist accepted"
    );
    check!(
        failed,
        hypercall(nr::VM_ASSIST, 9, 2, 0, 0, 0) == -38,
        "unknown vm_assist command accepted"
    );
    if failed {
        Verdict::Failure("FPU")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
