//! The PV MMU's isolation attacks: a page table mapped writable, the hypervisor's L4 slots,
//! frames the guest does not own (Hestia's own image), superpages, and writes to the M2P. All
//! must fail (with -EINVAL, or a #PF for the direct M2P write), and Hestia must keep answering.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::mmu::{update, uvmf};
use hestia_guests::xen_abi::xen::{MACH2PHYS_VIRT_START, StartInfo, hypercall as nr};
use hestia_guests::{
    ExcFrame, Verdict, check, hypercall, install_traps, l1e_maddr, m2p, mmu_update_one, pfn_to_mfn,
    println,
};

const EINVAL: i64 = -22;
/// Xen's answer when an entry would map a frame the guest may not use that way.
const EBUSY: i64 = -16;
const RW: u64 = 0x27;

static FAULTS: AtomicU64 = AtomicU64::new(0);

fn handler(v: u64, f: &mut ExcFrame) {
    if v == 14 {
        FAULTS.fetch_add(1, SeqCst);
    }
    f.rip += 7; // `movq $0, (%rsi)`
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    let scratch = 0x3ff000u64;
    let Some(l1e) = l1e_maddr(si, scratch) else {
        return Verdict::Error("no L1 for the scratch page");
    };
    let l4_mfn = pfn_to_mfn(si, si.pt_base >> 12);

    let r = hypercall(
        nr::UPDATE_VA_MAPPING,
        scratch,
        (l4_mfn << 12) | RW,
        uvmf::INVLPG,
        0,
        0,
    );
    check!(
        failed,
        r == EBUSY,
        "update_va_mapping mapped the live L4 writable ({r})"
    );
    let r = mmu_update_one(l1e | update::NORMAL_PT_UPDATE, (l4_mfn << 12) | RW);
    check!(
        failed,
        r == EBUSY,
        "mmu_update mapped the live L4 writable ({r})"
    );
    let l1_mfn = l1e >> 12;
    let r = mmu_update_one(l1e | update::NORMAL_PT_UPDATE, (l1_mfn << 12) | RW);
    check!(failed, r == EBUSY, "an L1 mapped itself writable ({r})");

    let r = mmu_update_one(
        (l4_mfn << 12) | (256 * 8) | update::NORMAL_PT_UPDATE,
        (pfn_to_mfn(si, 0x3fe) << 12) | 0x67,
    );
    check!(
        failed,
        r == EINVAL,
        "wrote the hypervisor's L4 slot 256 ({r})"
    );
    let r = mmu_update_one((l4_mfn << 12) | (262 * 8) | update::NORMAL_PT_UPDATE, 0);
    check!(
        failed,
        r == EINVAL,
        "cleared the hypervisor's L4 slot 262 ({r})"
    );

    // Frames of the hypervisor (Xen lets dom0 map legacy low memory such as MFN 0, so none
    // of that is used here).
    for foreign in [0x200u64, 0x201] {
        let r = hypercall(
            nr::UPDATE_VA_MAPPING,
            scratch,
            (foreign << 12) | 0x25,
            uvmf::INVLPG,
            0,
            0,
        );
        check!(
            failed,
            r < 0,
            "mapped machine frame {foreign:#x}, which is not ours ({r})"
        );
    }
    let r = mmu_update_one((0x200u64 << 12) | update::MACHPHYS_UPDATE, 0);
    check!(
        failed,
        r == EINVAL,
        "updated the M2P entry of a frame we do not own ({r})"
    );
    let r = mmu_update_one((0x200u64 << 12) | update::NORMAL_PT_UPDATE, 0);
    check!(
        failed,
        r == EINVAL,
        "stored into Hestia's image frame ({r})"
    );

    // A superpage in an L2.
    let l2_mfn = {
        // SAFETY: the bootstrap L4 is mapped read-only; slot 0 is the L3 of the low mapping.
        let l4e = unsafe { core::ptr::read_volatile(si.pt_base as *const u64) };
        let l3_va = m2p((l4e & 0x000F_FFFF_FFFF_F000) >> 12) << 12;
        // SAFETY: as above, the L3.
        let l3e = unsafe { core::ptr::read_volatile(l3_va as *const u64) };
        (l3e & 0x000F_FFFF_FFFF_F000) >> 12
    };
    let r = mmu_update_one(
        (l2_mfn << 12) | (100 * 8) | update::NORMAL_PT_UPDATE,
        (pfn_to_mfn(si, 0) << 12) | 0xE7,
    );
    check!(failed, r == EINVAL, "installed a 2 MiB superpage ({r})");

    // The M2P is read-only: a direct write must fault and change nothing.
    let before = m2p(0);
    // SAFETY: a probe write to the read-only M2P; the #PF handler skips it.
    unsafe {
        core::arch::asm!("movq $0, (%rsi)", in("rsi") MACH2PHYS_VIRT_START, options(att_syntax))
    };
    check!(
        failed,
        FAULTS.load(SeqCst) == 1,
        "writing the M2P did not fault"
    );
    check!(failed, m2p(0) == before, "the M2P changed");

    let ver = hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0);
    check!(
        failed,
        ver == (4 << 16 | 17),
        "Hestia stopped answering ({ver:#x})"
    );
    println!("all page-table attacks refused");
    if failed {
        Verdict::Failure("PV MMU isolation")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
