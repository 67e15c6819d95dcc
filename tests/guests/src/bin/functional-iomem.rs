//! dom0 and I/O memory: firmware in the low 1 MiB maps (the ACPI RSDP is found there), device
//! memory beyond RAM maps, Hestia's LAPIC and the MSI window are refused with -EPERM, and the
//! HPET that Hestia uses maps only read-only (RW is dropped from the entry).
#![no_std]
#![no_main]

use hestia_guests::xen_abi::mmu::uvmf;
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, hypercall, l1e_maddr, m2p, println};

const EPERM: i64 = -1;
/// Present, writable, user, accessed; cache-disable for device memory.
const RW_UC: u64 = 0x37;
const RO: u64 = 0x25;
const SCRATCH: u64 = 0x3fe000;

fn map(mfn: u64, flags: u64) -> i64 {
    hypercall(
        nr::UPDATE_VA_MAPPING,
        SCRATCH,
        (mfn << 12) | flags,
        uvmf::INVLPG,
        0,
        0,
    )
}

fn read_u64(off: u64) -> u64 {
    // SAFETY: SCRATCH was just mapped by the caller; `off` < 4096 and 8-byte aligned.
    unsafe { core::ptr::read_volatile((SCRATCH + off) as *const u64) }
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    // The RSDP: "RSD PTR " on a 16-byte boundary in 0xE0000-0xFFFFF (BIOS boot).
    let mut rsdp = None;
    for mfn in 0xE0..0x100 {
        if map(mfn, RO) != 0 {
            check!(failed, false, "mapping firmware frame {mfn:#x}");
            break;
        }
        if let Some(off) = (0..4096)
            .step_by(16)
            .find(|&o| read_u64(o) == 0x2052_5450_2044_5352)
        {
            rsdp = Some((mfn << 12) + off);
            break;
        }
    }
    check!(failed, rsdp.is_some(), "no RSDP in the BIOS area");
    println!("RSDP at {rsdp:x?}");

    // Hestia's LAPIC and the MSI window: refused.
    let r = map(0xFEE00, RW_UC);
    check!(failed, r == EPERM, "LAPIC mapping: {r}");
    let r = map(0xFEE10, RO);
    check!(failed, r == EPERM, "MSI window mapping: {r}");

    // The HPET: mapped, but never writable; its ID register reads.
    let r = map(0xFED00, RW_UC);
    check!(failed, r == 0, "HPET mapping: {r}");
    if r == 0 {
        let Some(l1e) = l1e_maddr(si, SCRATCH) else {
            return Verdict::Error("no L1 for the scratch page");
        };
        // SAFETY: the bootstrap L1 is mapped read-only at VA = PFN * 4096.
        let entry = unsafe {
            core::ptr::read_volatile(((m2p(l1e >> 12) << 12) | (l1e & 0xfff)) as *const u64)
        };
        check!(failed, entry & 2 == 0, "HPET entry {entry:#x} is writable");
        let id = read_u64(0);
        check!(
            failed,
            id != u64::MAX && id != 0,
            "HPET capabilities {id:#x}"
        );
    }

    // Device memory beyond RAM (a PCI BAR range): dom0 may map it.
    let r = map(0xFEBF0, RW_UC);
    check!(failed, r == 0, "PCI memory mapping: {r}");
    check!(failed, map(0, 0) == 0, "unmap");
    if failed {
        Verdict::Failure("I/O memory")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
