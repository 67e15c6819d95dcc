//! `xen_version`: version numbers, strings, page size, features; raw `syscall` entry (no page,
//! as Linux 6.1 after XSA-466); unknown sub-ops are -ENOSYS. Everything `xl info` reads, as
//! Xen 4.17 answers it (`xen/common/kernel.c`, with XSM's default policy): every string array
//! comes back whole and zero-padded (no stale byte of the caller's buffer survives inside it),
//! `compile_info` and `guest_handle` for any domain, `commandline` and `build_id` only for the
//! privileged domain (a domU reads `<denied>` and gets -EPERM). Run as dom0 and as a domU.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::version::{FeatureInfo, cmd};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr, sif};
use hestia_guests::{Verdict, check, hypercall, println, raw_hypercall};

/// The byte buffers are filled with before each call, to see what the hypervisor wrote.
const POISON: u8 = 0xa5;

/// `xen_version(cmd, buf)` into a poisoned buffer.
fn fetch<const N: usize>(op: u32) -> (i64, [u8; N]) {
    let mut buf = [POISON; N];
    let r = hypercall(
        nr::XEN_VERSION,
        u64::from(op),
        buf.as_mut_ptr() as u64,
        0,
        0,
        0,
    );
    (r, buf)
}

/// Whether `field` is a C string padded with zeros to its end.
fn zero_padded(field: &[u8]) -> bool {
    match field.iter().position(|&b| b == 0) {
        Some(n) => field[n..].iter().all(|&b| b == 0),
        None => false,
    }
}

fn text(field: &[u8]) -> &str {
    let n = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    core::str::from_utf8(&field[..n]).unwrap_or("?")
}

/// `XENVER_build_id` with a `struct xen_build_id` of `len` bytes of room.
fn build_id(len: u32) -> (i64, [u8; 68]) {
    let mut buf = [POISON; 68];
    buf[..4].copy_from_slice(&len.to_le_bytes());
    let r = hypercall(
        nr::XEN_VERSION,
        u64::from(cmd::BUILD_ID),
        buf.as_mut_ptr() as u64,
        0,
        0,
        0,
    );
    (r, buf)
}

/// The sub-ops `xl info` reads besides the version: strings whole and zero-padded, the
/// privileged ones denied to a domU as Xen's default XSM policy denies them.
fn xl_info_subops(privileged: bool) -> bool {
    let mut failed = false;
    let (r, extra) = fetch::<16>(cmd::EXTRAVERSION);
    check!(
        failed,
        r == 0 && zero_padded(&extra),
        "extraversion ({r}) not zero-padded"
    );
    let (r, caps) = fetch::<1024>(cmd::CAPABILITIES);
    check!(
        failed,
        r == 0 && zero_padded(&caps),
        "capabilities ({r}) not zero-padded"
    );
    let (r, chg) = fetch::<64>(cmd::CHANGESET);
    check!(
        failed,
        r == 0 && zero_padded(&chg),
        "changeset ({r}) not zero-padded"
    );
    // struct xen_compile_info: compiler[64], compile_by[16], compile_domain[32],
    // compile_date[32]; any domain may read it.
    let (r, info) = fetch::<144>(cmd::COMPILE_INFO);
    let fields = [&info[..64], &info[64..80], &info[80..112], &info[112..]];
    check!(
        failed,
        r == 0 && fields.iter().all(|f| zero_padded(f)),
        "compile_info ({r}) fields not zero-padded C strings"
    );
    println!(
        "compile_info: compiler '{}' by '{}' domain '{}' date '{}'",
        text(fields[0]),
        text(fields[1]),
        text(fields[2]),
        text(fields[3])
    );
    // The domain handle: the 16-byte UUID the toolstack gave; none for dom0 or a boot-time
    // domU, so all zeros.
    let (r, handle) = fetch::<16>(cmd::GUEST_HANDLE);
    check!(
        failed,
        r == 0 && handle == [0; 16],
        "guest_handle ({r}) {handle:02x?}, expected 16 zero bytes"
    );
    // XENVER_pagesize takes no argument: a non-null one is -EINVAL.
    let r = hypercall(nr::XEN_VERSION, u64::from(cmd::PAGESIZE), 0x1000, 0, 0, 0);
    check!(
        failed,
        r == -22,
        "pagesize with an argument returned {r}, expected -EINVAL"
    );
    let (r, line) = fetch::<1024>(cmd::COMMANDLINE);
    if privileged {
        check!(
            failed,
            r == 0 && zero_padded(&line),
            "commandline ({r}) not zero-padded"
        );
        println!("commandline '{}'", text(&line));
    } else {
        // Xen copies exactly "<denied>" and its NUL, nothing more.
        check!(
            failed,
            r == 0 && line.starts_with(b"<denied>\0") && line[9..].iter().all(|&b| b == POISON),
            "commandline for a domU ({r}) '{}', expected exactly \"<denied>\"",
            text(&line)
        );
    }
    // XENVER_build_id: a null handle asks for the size; len 0 is -EINVAL; too small a buffer
    // -ENOBUFS; else the id after the length word and its size returned.
    let size = hypercall(nr::XEN_VERSION, u64::from(cmd::BUILD_ID), 0, 0, 0, 0);
    if privileged {
        check!(
            failed,
            (1..=64).contains(&size),
            "build_id size {size}, expected 1..=64"
        );
        let (r, _) = build_id(0);
        check!(
            failed,
            r == -22,
            "build_id len 0 returned {r}, expected -EINVAL"
        );
        let (r, _) = build_id(1);
        check!(
            failed,
            r == -105,
            "build_id len 1 returned {r}, expected -ENOBUFS"
        );
        let (r, id) = build_id(64);
        let n = usize::try_from(size).unwrap_or(0).min(64);
        check!(
            failed,
            r == size && id[4 + n..].iter().all(|&b| b == POISON),
            "build_id returned {r}, expected {size} and nothing written past the id"
        );
        println!("build_id {:02x?}", &id[4..4 + n]);
    } else {
        check!(
            failed,
            size == -1,
            "build_id size for a domU returned {size}, expected -EPERM"
        );
        let (r, _) = build_id(64);
        check!(
            failed,
            r == -1,
            "build_id for a domU returned {r}, expected -EPERM"
        );
    }
    failed
}

fn test(si: &StartInfo) -> Verdict {
    let privileged = si.flags & sif::PRIVILEGED != 0;
    let mut failed = xl_info_subops(privileged);
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
    // Bit 11 (XENFEAT_dom0) for the hardware domain only.
    let expected = if privileged { 0x228e0 } else { 0x220e0 };
    check!(
        failed,
        fi.submap == expected,
        "features {:#x}, Xen 4.17 gives this domain {expected:#x}",
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
