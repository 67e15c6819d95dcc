//! XSA-254 (Meltdown): a PV guest kernel runs in ring 3, and on a CPU that loads
//! speculatively before it checks permissions it can read anything its page tables map, even
//! supervisor-only. With XPTI on (`xpti=on`, the default on vulnerable CPUs) the hypervisor's
//! memory must therefore not be in the page tables the guest runs on at all: a read of the
//! hypervisor's direct map of RAM (0xffff_8300_0000_0000 in Xen's layout and Hestia's) must
//! fault as *not present* (page-fault error code bit 0 clear), not as a protection violation.
//! Beyond three fixed probes the guest sweeps the first GiB of the direct map every 2 MiB and
//! both hypervisors' image windows (Xen's at 0xffff_82d0_4000_0000, Hestia's at
//! 0xffff_82d0_8000_0000, 16 MiB each) every 4 KiB: only the few pages the entry paths need
//! (entry text and data, per-CPU page, stacks, descriptor tables) may be present. The
//! read-only M2P, which the ABI lets guests read, stays readable.
//!
//! Before XPTI existed in Hestia the guest ran on its own L4, which carries the hypervisor's
//! slots, and every probe faulted with P set. On Xen 4.17 with `xpti=on` the probes fault
//! with P clear too.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::xen::{MACH2PHYS_VIRT_START, StartInfo};
use hestia_guests::{ExcFrame, Verdict, check, install_traps, println};

/// Probes in the hypervisor's direct map (RAM at 1 MiB and 16 MiB) and at its upper end.
const PROBES: [u64; 3] = [
    0xffff_8300_0010_0000,
    0xffff_8300_0100_0000,
    0xffff_8300_3000_0000,
];
/// Page-fault error code: the translation was present.
const PF_PRESENT: u64 = 1;
/// The direct-map sweep: start, length, step, and how many probes may find a page present
/// (per-CPU data and descriptor tables the entry paths need live in the direct map).
const DIRECT_SWEEP: (u64, u64, u64, usize) = (0xffff_8300_0000_0000, 1 << 30, 2 << 20, 4);
/// The image sweeps (Xen's image, then Hestia's): only entry text and data may be present.
const IMAGE_SWEEPS: [(u64, u64, u64, usize); 2] = [
    (0xffff_82d0_4000_0000, 16 << 20, 4096, 16),
    (0xffff_82d0_8000_0000, 16 << 20, 4096, 16),
];

static VECTOR: AtomicU64 = AtomicU64::new(u64::MAX);
static ERROR: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    VECTOR.store(vector, SeqCst);
    ERROR.store(f.error_code, SeqCst);
    // Skip the 2-byte `movb (%rcx), %al`.
    f.rip += 2;
}

/// Reads a byte at `va`: `Ok(byte)`, or `Err((vector, error code))`.
fn probe(va: u64) -> Result<u8, (u64, u64)> {
    VECTOR.store(u64::MAX, SeqCst);
    let mut al: u8 = 0;
    // SAFETY: a one-byte read that faults or not; the handler skips it on a fault.
    unsafe { asm!(".byte 0x8a, 0x01", in("rcx") va, inout("al") al, options(nostack)) };
    match VECTOR.load(SeqCst) {
        u64::MAX => Ok(al),
        v => Err((v, ERROR.load(SeqCst))),
    }
}

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    let r = install_traps(handler);
    check!(failed, r == 0, "set_trap_table returned {r}");

    for va in PROBES {
        match probe(va) {
            Ok(b) => check!(failed, false, "read {va:#x} from the guest kernel: {b:#x}"),
            Err((v, e)) => {
                check!(
                    failed,
                    v == 14,
                    "reading {va:#x} raised vector {v}, not #PF"
                );
                check!(
                    failed,
                    e & PF_PRESENT == 0,
                    "reading {va:#x}: #PF error code {e:#x}: the hypervisor's memory is \
                     mapped in the page tables the guest runs on"
                );
                println!("{va:#x}: #PF error code {e:#x}");
            }
        }
    }
    for (start, len, step, allowed) in core::iter::once(DIRECT_SWEEP).chain(IMAGE_SWEEPS) {
        let present = (start..start + len)
            .step_by(step as usize)
            .filter(|&va| match probe(va) {
                Ok(_) => true,
                Err((v, e)) => v != 14 || e & PF_PRESENT != 0,
            })
            .count();
        println!("{start:#x} +{len:#x} every {step:#x}: {present} present");
        check!(
            failed,
            present <= allowed,
            "{present} pages of {start:#x} +{len:#x} are mapped while the guest runs (at most {allowed} expected)"
        );
    }
    let m2p = probe(MACH2PHYS_VIRT_START);
    check!(
        failed,
        m2p.is_ok(),
        "the M2P at {MACH2PHYS_VIRT_START:#x} is not readable: {m2p:?}"
    );
    if failed {
        Verdict::Failure("the hypervisor's memory is mapped while the guest runs")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
