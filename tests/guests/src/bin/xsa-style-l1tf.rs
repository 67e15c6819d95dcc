//! L1 Terminal Fault (XSA-273): a not-present page-table entry whose address is cacheable RAM
//! lets a speculative walk read the L1 data cache on a vulnerable CPU, whatever frame the
//! address names (Hestia's, another domain's). With `pv-l1tf=dom0` the domain's not-present
//! entries are checked: writing one through the path named by `path=` on the command line
//! (`mmu-update`, `update-va-mapping`, `pin`, `ptwr`: an L1 entry naming one of the guest's
//! own RAM frames; `mmu-update-l2`: an L2 entry with PSE, a speculative superpage from frame
//! 0) must crash the domain, and Hestia must survive. Getting back here means the entry was
//! accepted: FAILURE (what Hestia did before the check existed).
//!
//! Xen 4.17 behaves the same on the reference rig: Debian's build has no shadow paging, so
//! instead of moving the domain to it, it crashes it (`d0 L1TF-vulnerable L1e ... - Crashing`).
#![no_std]
#![no_main]

use hestia_guests::pt_paths::Path;
use hestia_guests::xen_abi::xen::StartInfo;
use hestia_guests::{Verdict, cmdline, pfn_to_mfn, println};

#[repr(C, align(4096))]
struct Page([u8; 4096]);
/// The cacheable frame the entry names.
static DATA: Page = Page([0x5a; 4096]);

fn test(si: &StartInfo) -> Verdict {
    let Some(path) = cmdline(si)
        .split_whitespace()
        .find_map(|w| Path::from_name(w.strip_prefix("path=")?))
    else {
        return Verdict::Error("no path=<name> on the command line");
    };
    let entry = if path.level() == 1 {
        pfn_to_mfn(si, DATA.0.as_ptr() as u64 >> 12) << 12
    } else {
        1 << 7 // PSE, address 0
    };
    println!(
        "writing the not-present L{} entry {entry:#x} through {}",
        path.level(),
        path.name()
    );
    let rc = path.write(si, entry);
    println!("the domain survived (rc {rc})");
    Verdict::Failure("a not-present entry L1TF can read through was written")
}

hestia_guests::guest_main!(test);
