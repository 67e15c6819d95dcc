//! Virtual IOPL (`PHYSDEVOP_set_iopl`): without it CLI/STI raise #GP; with IOPL 1 guest kernel
//! mode may execute them and, as on Xen, they change nothing (Linux's early boot has some).
//! Bad arguments and unknown `physdev_op` commands fail cleanly.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::physdev::{SetIopl, cmd};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{
    ExcFrame, Verdict, check, hypercall, install_traps, map_shared_info, println, shared_byte,
};

const EFAULT: i64 = -14;
const EINVAL: i64 = -22;
const ENOSYS: i64 = -38;

static GP_FAULTS: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector == 13 {
        GP_FAULTS.fetch_add(1, SeqCst);
    } else {
        println!("unexpected exception {vector} at {:#x}", f.rip);
    }
    f.rip += 1; // CLI and STI are one byte
}

fn set_iopl(iopl: u32) -> i64 {
    let arg = SetIopl { iopl };
    hypercall(
        nr::PHYSDEV_OP,
        u64::from(cmd::SET_IOPL),
        &arg as *const SetIopl as u64,
        0,
        0,
        0,
    )
}

fn cli() {
    // SAFETY: emulated or faulting; the handler skips the byte on #GP.
    unsafe { asm!("cli", options(nostack, nomem)) };
}

fn sti() {
    // SAFETY: as above.
    unsafe { asm!("sti", options(nostack, nomem)) };
}

/// vCPU 0's evtchn_upcall_mask.
fn mask() -> u8 {
    shared_byte(1).load(SeqCst)
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    check!(failed, map_shared_info(si) == 0, "map shared_info");
    check!(failed, mask() == 1, "events not masked at entry");

    // IOPL 0: both instructions fault, the mask is untouched.
    sti();
    cli();
    check!(
        failed,
        GP_FAULTS.load(SeqCst) == 2 && mask() == 1,
        "IOPL 0: {} #GP, mask {}",
        GP_FAULTS.load(SeqCst),
        mask()
    );

    // IOPL 1: guest kernel mode may, and, as on Xen, both are no-ops: the upcall mask is the
    // virtual interrupt flag, which only the guest's own stores change.
    check!(failed, set_iopl(1) == 0, "set_iopl(1)");
    sti();
    let after_sti = mask();
    shared_byte(1).store(0, SeqCst);
    cli();
    let after_cli = mask();
    shared_byte(1).store(1, SeqCst);
    check!(
        failed,
        GP_FAULTS.load(SeqCst) == 2 && after_sti == 1 && after_cli == 0,
        "IOPL 1: {} #GP, mask {after_sti} after STI (was 1), {after_cli} after CLI (was 0)",
        GP_FAULTS.load(SeqCst)
    );

    // Refusals.
    check!(
        failed,
        set_iopl(4) == EINVAL,
        "set_iopl(4): {}",
        set_iopl(4)
    );
    let r = hypercall(
        nr::PHYSDEV_OP,
        u64::from(cmd::SET_IOPL),
        0xffff_8000_0000_0000,
        0,
        0,
        0,
    );
    check!(
        failed,
        r == EFAULT,
        "set_iopl from a hypervisor address: {r}"
    );
    let r = hypercall(nr::PHYSDEV_OP, 0xdead, 0, 0, 0, 0);
    check!(failed, r == ENOSYS, "unknown physdev_op: {r}");

    // Back to IOPL 0: faults again.
    check!(failed, set_iopl(0) == 0, "set_iopl(0)");
    sti();
    check!(
        failed,
        GP_FAULTS.load(SeqCst) == 3 && mask() == 1,
        "IOPL 0 again: {} #GP, mask {}",
        GP_FAULTS.load(SeqCst),
        mask()
    );
    if failed {
        Verdict::Failure("virtual IOPL")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
