//! Grant tables version 2 in one domain granting to itself (so it also runs on Xen 4.17 as
//! dom0): `set_version` 2 carries the reserved entries (0-7) over and clears the rest;
//! `get_version`; `get_status_frames` hands out the status frame, which the guest maps;
//! a v2 full-page grant mapped writable sets `GTF_reading|GTF_writing` in its status entry,
//! not in its flags; a sub-page grant cannot be mapped and is copied only within its window;
//! entries past 256 (16-byte entries) are `GNTST_bad_gntref`; going back to v1 is `-EBUSY`
//! while an entry is mapped and while the guest still maps the status frame, then carries the
//! reserved entries back. Failed before v2 existed (`set_version` 2 was -ENOSYS).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU16, AtomicU64, Ordering::SeqCst};

use hestia_guests::grant::{
    Page, entry_flags, entry_word, grant, grant_table_op, map_at, mfn_of, remap, setup_own_table,
    unmap,
};
use hestia_guests::xen_abi::grant_table::{
    CopyPtr, GetStatusFrames, GetVersion, GnttabCopy, SetVersion, cmd, gntcopy, gntst, gtf,
};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo};
use hestia_guests::{Verdict, check, println};

static mut TABLE: Page = Page([0; 4096]);
static mut STATUS: Page = Page([0; 4096]);
static mut DATA: Page = Page([0; 4096]);
static mut WINDOW: Page = Page([0; 4096]);
static mut BUF: Page = Page([0; 4096]);

const ME: u16 = 0;
const EBUSY: i64 = -16;

fn read(va: u64, off: usize) -> u8 {
    // SAFETY: `va` is a mapped page of the image (or a grant mapped over one); `off` < 4096.
    unsafe { core::ptr::read_volatile((va as *const u8).add(off)) }
}

fn set_version(v: u32) -> (i64, u32) {
    let mut sv = [SetVersion { version: v }];
    let r = grant_table_op(cmd::SET_VERSION, &mut sv);
    (r, sv[0].version)
}

/// The v2 entry `r`'s frame word (bytes 8-15).
fn v2_frame(table: &Page, r: u32) -> &AtomicU64 {
    let p = table.0.as_ptr() as u64 + u64::from(r) * 16 + 8;
    // SAFETY: `r` < 256 keeps the word inside the page; 8-byte aligned.
    unsafe { AtomicU64::from_ptr(p as *mut u64) }
}

/// Writes v2 entry `r`: frame (and sub-page window) first, then flags and domid.
fn grant_v2(table: &Page, r: u32, flags: u16, frame: u64, window: (u16, u16)) {
    v2_frame(table, r).store(frame, SeqCst);
    let sub = table.0.as_ptr() as u64 + u64::from(r) * 16 + 4;
    // SAFETY: as in `v2_frame`, 4-byte aligned.
    unsafe { core::sync::atomic::AtomicU32::from_ptr(sub as *mut u32) }
        .store(u32::from(window.0) | u32::from(window.1) << 16, SeqCst);
    // The header is the first 4 bytes of the 16-byte entry.
    entry_word(table, r * 2).store(u32::from(flags) | u32::from(ME) << 16, SeqCst);
}

fn v2_flags(table: &Page, r: u32) -> u16 {
    entry_flags(table, r * 2)
}

fn status_of(status: u64, r: u32) -> u16 {
    // SAFETY: the status frame is mapped at `status`; `r` < 2048.
    unsafe { AtomicU16::from_ptr((status + u64::from(r) * 2) as *mut u16) }.load(SeqCst)
}

fn copy_from(r: u32, offset: u16, buf_mfn: u64, len: u16) -> i16 {
    let mut c = [GnttabCopy {
        source: CopyPtr {
            u: u64::from(r),
            domid: ME,
            offset,
            ..CopyPtr::default()
        },
        dest: CopyPtr {
            u: buf_mfn,
            domid: DOMID_SELF,
            offset,
            ..CopyPtr::default()
        },
        len,
        flags: gntcopy::SOURCE_GREF,
        ..GnttabCopy::default()
    }];
    if grant_table_op(cmd::COPY, &mut c) != 0 {
        return -1000;
    }
    c[0].status
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    // SAFETY: the statics are only reached through these (one vCPU).
    let table = unsafe { &*core::ptr::addr_of!(TABLE) };
    let (status, data, window, buf) = (
        core::ptr::addr_of!(STATUS) as u64,
        core::ptr::addr_of!(DATA) as u64,
        core::ptr::addr_of!(WINDOW) as u64,
        core::ptr::addr_of!(BUF) as u64,
    );
    let (status_own, data_mfn) = (mfn_of(si, status), mfn_of(si, data));
    let (window_mfn, buf_mfn) = (mfn_of(si, window), mfn_of(si, buf));
    if let Err(why) = setup_own_table(table) {
        return Verdict::Failure(why);
    }
    for i in 0..4096 {
        // SAFETY: our own page, mapped writable.
        unsafe { core::ptr::write_volatile((data as *mut u8).add(i), i as u8) };
    }
    // A reserved entry and an ordinary one, in v1.
    grant(table, 1, ME, data_mfn, gtf::PERMIT_ACCESS);
    grant(table, 10, ME, data_mfn, gtf::PERMIT_ACCESS);

    let (r, v) = set_version(2);
    check!(failed, r == 0 && v == 2, "set_version 2: {r}, version {v}");
    let mut gv = [GetVersion {
        dom: DOMID_SELF,
        ..GetVersion::default()
    }];
    grant_table_op(cmd::GET_VERSION, &mut gv);
    check!(failed, gv[0].version == 2, "get_version: {}", gv[0].version);
    check!(
        failed,
        v2_flags(table, 1) == gtf::PERMIT_ACCESS && v2_frame(table, 1).load(SeqCst) == data_mfn,
        "reserved entry 1 not carried into v2"
    );
    check!(
        failed,
        v2_flags(table, 5) == 0 && entry_word(table, 20).load(SeqCst) == 0,
        "entries past the reserved ones not cleared"
    );

    // The status frame.
    let mut frame = 0u64;
    let mut gs = [GetStatusFrames {
        nr_frames: 1,
        dom: DOMID_SELF,
        frame_list: &mut frame as *mut u64 as u64,
        ..GetStatusFrames::default()
    }];
    let r = grant_table_op(cmd::GET_STATUS_FRAMES, &mut gs);
    check!(
        failed,
        r == 0 && gs[0].status == gntst::OKAY && frame != 0,
        "get_status_frames: {r} {}",
        gs[0].status
    );
    gs[0].nr_frames = 2;
    grant_table_op(cmd::GET_STATUS_FRAMES, &mut gs);
    check!(
        failed,
        gs[0].status == gntst::GENERAL_ERROR,
        "two status frames of one: {}",
        gs[0].status
    );
    check!(
        failed,
        remap(status, frame) == 0,
        "mapping the status frame"
    );

    // A full-page grant: the bits go to the status entry.
    grant_v2(table, 10, gtf::PERMIT_ACCESS, data_mfn, (0, 0));
    let m = map_at(ME, 10, window, 0);
    check!(failed, m.status == gntst::OKAY, "v2 map: {}", m.status);
    check!(
        failed,
        read(window, 77) == 77,
        "v2 mapping does not show the data"
    );
    check!(
        failed,
        status_of(status, 10) == gtf::READING | gtf::WRITING
            && v2_flags(table, 10) == gtf::PERMIT_ACCESS,
        "v2 status {:#x}, flags {:#x}",
        status_of(status, 10),
        v2_flags(table, 10)
    );
    let (r, v) = set_version(1);
    check!(
        failed,
        r == EBUSY && v == 2,
        "set_version 1 while mapped: {r} {v}"
    );
    check!(
        failed,
        unmap(m.handle, window, 0) == gntst::OKAY,
        "v2 unmap"
    );
    check!(failed, status_of(status, 10) == 0, "v2 status after unmap");
    remap(window, window_mfn);

    // A sub-page grant: copies within its window only.
    grant_v2(
        table,
        11,
        gtf::PERMIT_ACCESS | gtf::SUB_PAGE,
        data_mfn,
        (256, 512),
    );
    let s = map_at(ME, 11, window, 0).status;
    check!(
        failed,
        s == gntst::GENERAL_ERROR,
        "sub-page grant mapped: {s}"
    );
    let s = copy_from(11, 300, buf_mfn, 100);
    check!(
        failed,
        s == gntst::OKAY && (300..400).all(|i| read(buf, i) == i as u8),
        "copy inside the window: {s}"
    );
    for (off, len) in [(100, 100), (700, 100), (200, 100)] {
        let s = copy_from(11, off, buf_mfn, len);
        check!(
            failed,
            s == gntst::GENERAL_ERROR,
            "copy of {len} at {off}: {s}"
        );
    }
    check!(
        failed,
        status_of(status, 11) == 0,
        "sub-page status after the copies"
    );
    let s = map_at(ME, 300, window, 0).status;
    check!(failed, s == gntst::BAD_GNTREF, "v2 entry 300 of 256: {s}");

    // Back to v1: not while the status frame is mapped.
    let (r, _) = set_version(1);
    check!(
        failed,
        r == EBUSY,
        "set_version 1 with the status frame mapped: {r}"
    );
    remap(status, status_own);
    let (r, v) = set_version(1);
    check!(failed, r == 0 && v == 1, "set_version 1: {r} {v}");
    check!(
        failed,
        entry_flags(table, 1) == gtf::PERMIT_ACCESS
            && entry_word(table, 1).load(SeqCst) >> 16 == u32::from(ME)
            && read(table.0.as_ptr() as u64, 12) == data_mfn as u8,
        "reserved entry 1 not carried back into v1"
    );
    check!(failed, entry_flags(table, 10) == 0, "entry 10 not cleared");
    let m = map_at(ME, 1, window, 0);
    check!(
        failed,
        m.status == gntst::OKAY,
        "v1 map of the reserved entry: {}",
        m.status
    );
    check!(
        failed,
        unmap(m.handle, window, 0) == gntst::OKAY,
        "v1 unmap"
    );
    remap(window, window_mfn);
    println!("v2 done");

    if failed {
        Verdict::Failure("grant tables v2")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
