//! `xen_version`: version numbers, strings, page size, features; raw `syscall` entry (no page,
//! as Linux 6.1 after XSA-466); unknown sub-ops are -ENOSYS.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::version::{FeatureInfo, cmd};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, hypercall, println, raw_hypercall};

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    let ver = raw_hypercall(nr::XEN_VERSION, u64::from(cmd::VERSION), 0, 0, 0, 0);
    check!(
        failed,
        ver == (4 << 16 | 17),
        "raw syscall version {ver:#x}"
    );
    let mut caps = [0u8; 1024];
    let r = hypercall(
        nr::XEN_VERSION,
        u64::from(cmd::CAPABILITIES),
        caps.as_mut_ptr() as u64,
        0,
        0,
        0,
    );
    check!(
        failed,
        r == 0 && caps.starts_with(b"xen-3.0-x86_64"),
        "capabilities ({r})"
    );
    let mut extra = [0u8; 16];
    let r = hypercall(
        nr::XEN_VERSION,
        u64::from(cmd::EXTRAVERSION),
        extra.as_mut_ptr() as u64,
        0,
        0,
        0,
    );
    check!(failed, r == 0 && extra[0] == b'.', "extraversion ({r})");
    check!(
        failed,
        hypercall(nr::XEN_VERSION, u64::from(cmd::PAGESIZE), 0, 0, 0, 0) == 4096,
        "page size"
    );
    let mut fi = FeatureInfo {
        submap_idx: 0,
        submap: 0xdead,
    };
    let r = hypercall(
        nr::XEN_VERSION,
        u64::from(cmd::GET_FEATURES),
        &mut fi as *mut FeatureInfo as u64,
        0,
        0,
        0,
    );
    check!(failed, r == 0 && fi.submap != 0xdead, "get_features ({r})");
    // Xen 4.17 reports exactly these to a PV dom0 (bits 5, 6, 7, 11, 13, 17): no writable page
    // tables, no auto-translation, no HVM bits. Any difference sends Linux down a path it
    // never takes on Xen.
    check!(
        failed,
        fi.submap == 0x228e0,
        "features {:#x}, Xen 4.17 gives a PV dom0 0x228e0",
        fi.submap
    );
    let r = hypercall(nr::XEN_VERSION, 0x7fff, 0, 0, 0, 0);
    check!(
        failed,
        r == -38,
        "unknown sub-op returned {r}, expected -ENOSYS"
    );
    println!(
        "version {}.{}, capabilities {}, features {:#x}",
        ver >> 16,
        ver & 0xffff,
        core::str::from_utf8(&caps[..14]).unwrap_or("?"),
        fi.submap
    );
    if failed {
        Verdict::Failure("xen_version")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
