//! Not-present page-table entries that L1TF (XSA-273) cannot read through are accepted on every
//! path into a table (`mmu_update` of L1 and L2 entries, `update_va_mapping`, pinning a new
//! L1, writable page tables), as on Xen 4.17: address zero whatever the other bits, PSE at L1
//! (it is PAT there), and addresses above everything cacheable (Linux's inverted swap entries,
//! with the bits past CPUID's address width set, safe on a CPU whose L1D compares more bits,
//! such as the Skylake of the `functional-l1tf-checked` scenario). Without `l1tf=checked` on
//! the command line the domain is not checked (dom0 by default on every CPU) and any
//! not-present entry is accepted, an address of cacheable RAM too. Passes on Xen 4.17.
#![no_std]
#![no_main]

use hestia_guests::pt_paths::Path;
use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{Verdict, check, cmdline, pfn_to_mfn, println};

#[repr(C, align(4096))]
struct Page([u8; 4096]);
/// A cacheable frame for the entries of an unchecked domain to name.
static DATA: Page = Page([0x5a; 4096]);

/// Address bits 40-45: past a 40-bit CPUID width, inside a 46-bit L1D's.
const HIGH: u64 = 0x0000_3f00_0000_0000;
/// The address bits of an entry.
const ADDR: u64 = 0x000f_ffff_ffff_f000;
/// Not present: accessed, dirty, writable, user (what a cleared Linux entry may keep).
const FLAGS: u64 = 0x66;
/// PSE (PAT in an L1 entry).
const PSE: u64 = 1 << 7;

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    let checked = cmdline(si).split_whitespace().any(|w| w == "l1tf=checked");
    let ram = pfn_to_mfn(si, DATA.0.as_ptr() as u64 >> 12) << 12;
    println!(
        "not-present entries, {} domain",
        if checked { "a checked" } else { "an unchecked" }
    );
    for path in Path::ALL {
        // Each entry, and whether this domain may write it on this path.
        let entries = [
            (0, true),
            (FLAGS, true),
            (HIGH | FLAGS, true),
            (!ram & ADDR, true),
            (PSE | FLAGS, path.level() == 1),
            (ram, !checked),
            (ram | FLAGS, !checked),
            (ram | PSE, !checked),
        ];
        for (entry, _) in entries.into_iter().filter(|&(_, may)| may) {
            let rc = path.write(si, entry);
            let seen = path.read(si);
            check!(
                failed,
                rc == 0 && seen == Some(entry),
                "{}: L{} entry {entry:#x} refused (rc {rc}, entry now {seen:#x?})",
                path.name(),
                path.level()
            );
            check!(
                failed,
                path.undo(si) == 0,
                "{}: cannot undo {entry:#x}",
                path.name()
            );
        }
    }
    if failed {
        Verdict::Failure("safe not-present entries refused")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
