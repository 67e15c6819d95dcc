//! Grant tables in one domain, granting to itself (so it also runs on Xen 4.17 as dom0):
//! `query_size`, `get_version`/`set_version`, `setup_table` and the table frame mapped like any
//! frame; `map_grant_ref` with `GNTMAP_host_map` at a virtual address and with
//! `GNTMAP_contains_pte` at a PTE's machine address, read-only and writable, with
//! `GTF_reading`/`GTF_writing` seen by the granter while mapped and cleared after; the grant
//! entry as Xen writes it (present, no-execute, RW only when writable; Hestia also marks it with
//! bit 62, as Xen's debug builds do with `_PAGE_GNTTAB`, which this test does not assert);
//! `GNTMAP_device_map` (`dev_bus_addr` is the frame's address); `unmap_grant_ref` checking its
//! handle and address; `unmap_and_replace`; `GNTTABOP_copy` in both directions by reference and by frame; `cache_flush`;
//! `swap_grant_ref`;
//! ending access while mapped (the mapping stays, as Xen); and Xen's status codes for each
//! refusal. Failed on the code before the grant table existed (every sub-op was -ENOSYS).
#![no_std]
#![no_main]

use core::sync::atomic::Ordering::SeqCst;

use hestia_guests::grant::{
    Page, by_frame, by_ref, copy, entry_flags, entry_word, grant, grant_table_op, map, map_at,
    mfn_of, pte_of, query_size, remap, setup_own_table, unmap,
};
use hestia_guests::xen_abi::grant_table::{
    CacheFlush, GetVersion, SetVersion, SwapGrantRef, UnmapAndReplace, cache, cmd, gntcopy, gntmap,
    gntst, gtf,
};
use hestia_guests::xen_abi::mmu::ext;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo};
use hestia_guests::{Verdict, check, l1e_maddr, mmuext_one, println};

/// Where the table frame is mapped.
static mut TABLE: Page = Page([0; 4096]);
/// The granted page.
static mut DATA: Page = Page([0; 4096]);
/// Where grants are mapped (its own frame is put back after).
static mut WINDOW: Page = Page([0; 4096]);
/// A copy target.
static mut BUF: Page = Page([0; 4096]);

const ME: u16 = 0;
const REF: u32 = 10;
const RO_REF: u32 = 11;
const NX: u64 = 1 << 63;

fn va<T>(p: *const T) -> u64 {
    p as u64
}

fn read(va: u64, off: usize) -> u8 {
    // SAFETY: `va` is a mapped page of the image (or a grant mapped over one); `off` < 4096.
    unsafe { core::ptr::read_volatile((va as *const u8).add(off)) }
}

fn write(va: u64, off: usize, v: u8) {
    // SAFETY: as in `read`, and the page is mapped writable.
    unsafe { core::ptr::write_volatile((va as *mut u8).add(off), v) }
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    let (table, data, window, buf) = (
        // SAFETY: the statics are only reached through these references (one vCPU).
        unsafe { &*core::ptr::addr_of!(TABLE) },
        va(core::ptr::addr_of!(DATA)),
        va(core::ptr::addr_of!(WINDOW)),
        va(core::ptr::addr_of!(BUF)),
    );
    let (data_mfn, window_mfn, buf_mfn) = (mfn_of(si, data), mfn_of(si, window), mfn_of(si, buf));

    // Size and version.
    let (r, status, nr, max) = query_size(DOMID_SELF);
    println!("query_size: {r} status {status} nr_frames {nr} max {max}");
    check!(
        failed,
        r == 0 && status == 0 && nr >= 1 && max >= nr,
        "query_size"
    );
    let mut v = [GetVersion {
        dom: DOMID_SELF,
        ..GetVersion::default()
    }];
    check!(
        failed,
        grant_table_op(cmd::GET_VERSION, &mut v) == 0 && v[0].version == 1,
        "get_version: {}",
        v[0].version
    );
    let mut sv = [SetVersion { version: 1 }];
    check!(
        failed,
        grant_table_op(cmd::SET_VERSION, &mut sv) == 0 && sv[0].version == 1,
        "set_version 1"
    );
    let mut sv = [SetVersion { version: 3 }];
    check!(
        failed,
        grant_table_op(cmd::SET_VERSION, &mut sv) == -22,
        "set_version 3 must be -EINVAL"
    );
    let (_, status, ..) = query_size(0x7000);
    check!(
        failed,
        status == gntst::BAD_DOMAIN,
        "query_size of no domain: {status}"
    );
    let table_mfn = match setup_own_table(table) {
        Ok(m) => m,
        Err(why) => return Verdict::Failure(why),
    };
    println!("grant table frame {table_mfn:#x}");

    // A writable host mapping at a virtual address.
    write(data, 0, 0x5a);
    grant(table, REF, ME, data_mfn, gtf::PERMIT_ACCESS);
    let m = map_at(ME, REF, window, 0);
    check!(failed, m.status == gntst::OKAY, "map: {}", m.status);
    check!(
        failed,
        m.dev_bus_addr == data_mfn << 12,
        "dev_bus_addr {:#x}",
        m.dev_bus_addr
    );
    let pte = pte_of(si, window);
    check!(
        failed,
        pte & 0x000F_FFFF_FFFF_F000 == data_mfn << 12 && pte & 3 == 3 && pte & NX != 0,
        "grant PTE {pte:#x}"
    );
    println!("grant PTE {pte:#x}");
    check!(
        failed,
        read(window, 0) == 0x5a,
        "mapping does not show the data"
    );
    write(window, 1, 0xa5);
    check!(
        failed,
        read(data, 1) == 0xa5,
        "write through the mapping lost"
    );
    let f = entry_flags(table, REF);
    check!(
        failed,
        f == gtf::PERMIT_ACCESS | gtf::READING | gtf::WRITING,
        "flags while mapped writable: {f:#x}"
    );
    // Another read-only mapping, by PTE machine address.
    let pte_maddr = l1e_maddr(si, buf).unwrap_or(0);
    let m2 = map(
        ME,
        REF,
        pte_maddr,
        gntmap::HOST_MAP | gntmap::CONTAINS_PTE | gntmap::READONLY,
    );
    check!(
        failed,
        m2.status == gntst::OKAY,
        "contains_pte map: {}",
        m2.status
    );
    mmuext_one(ext::INVLPG_LOCAL, buf, 0);
    check!(
        failed,
        read(buf, 1) == 0xa5,
        "contains_pte mapping does not show the data"
    );
    let pte = pte_of(si, buf);
    check!(
        failed,
        pte & 2 == 0,
        "read-only grant PTE is writable: {pte:#x}"
    );
    // Unmap checks the address and the handle.
    check!(
        failed,
        unmap(m.handle, buf, 0) == gntst::GENERAL_ERROR,
        "unmap at the wrong address"
    );
    check!(
        failed,
        unmap(0x00ff_ffff, window, 0) == gntst::BAD_HANDLE,
        "unmap of a bad handle"
    );
    check!(failed, unmap(m.handle, window, 0) == gntst::OKAY, "unmap");
    check!(
        failed,
        unmap(m.handle, window, 0) == gntst::BAD_HANDLE,
        "second unmap of a handle"
    );
    check!(
        failed,
        pte_of(si, window) & 1 == 0,
        "the slot still maps something"
    );
    let f = entry_flags(table, REF);
    check!(
        failed,
        f == gtf::PERMIT_ACCESS | gtf::READING,
        "flags with a read-only mapping left: {f:#x}"
    );
    check!(
        failed,
        unmap(m2.handle, pte_maddr, 0) == gntst::OKAY,
        "contains_pte unmap"
    );
    check!(
        failed,
        entry_flags(table, REF) == gtf::PERMIT_ACCESS,
        "flags after the last unmap"
    );
    remap(window, window_mfn);
    remap(buf, buf_mfn);

    // unmap_and_replace: the grant's slot takes over BUF's mapping, whose slot is cleared.
    write(buf, 7, 0x3c);
    let m = map_at(ME, REF, window, 0);
    let mut u = [UnmapAndReplace {
        host_addr: window,
        new_addr: buf,
        handle: m.handle,
        ..UnmapAndReplace::default()
    }];
    let r = grant_table_op(cmd::UNMAP_AND_REPLACE, &mut u);
    check!(
        failed,
        m.status == gntst::OKAY && r == 0 && u[0].status == gntst::OKAY,
        "unmap_and_replace: {} {r} {}",
        m.status,
        u[0].status
    );
    mmuext_one(ext::TLB_FLUSH_LOCAL, 0, 0);
    check!(
        failed,
        pte_of(si, window) & 0x000F_FFFF_FFFF_F000 == buf_mfn << 12
            && pte_of(si, buf) & 1 == 0
            && read(window, 7) == 0x3c,
        "unmap_and_replace did not move the mapping"
    );
    check!(
        failed,
        entry_flags(table, REF) == gtf::PERMIT_ACCESS,
        "flags after unmap_and_replace"
    );
    remap(window, window_mfn);
    remap(buf, buf_mfn);

    // Read-only grants, device mappings.
    grant(
        table,
        RO_REF,
        ME,
        data_mfn,
        gtf::PERMIT_ACCESS | gtf::READONLY,
    );
    let s = map_at(ME, RO_REF, window, 0).status;
    check!(
        failed,
        s == gntst::GENERAL_ERROR,
        "read-only grant mapped writable: {s}"
    );
    check!(
        failed,
        entry_flags(table, RO_REF) == gtf::PERMIT_ACCESS | gtf::READONLY,
        "a refused map left status bits"
    );
    let m = map_at(ME, RO_REF, window, gntmap::READONLY);
    check!(
        failed,
        m.status == gntst::OKAY,
        "read-only map: {}",
        m.status
    );
    check!(
        failed,
        unmap(m.handle, window, 0) == gntst::OKAY,
        "unmap ro"
    );
    remap(window, window_mfn);
    let m = map(ME, REF, 0, gntmap::DEVICE_MAP);
    check!(
        failed,
        m.status == gntst::OKAY && m.dev_bus_addr == data_mfn << 12,
        "device map: {} {:#x}",
        m.status,
        m.dev_bus_addr
    );
    check!(
        failed,
        unmap(m.handle, 0, (data_mfn + 1) << 12) == gntst::BAD_DEV_ADDR,
        "device unmap at the wrong address"
    );
    check!(
        failed,
        unmap(m.handle, 0, data_mfn << 12) == gntst::OKAY,
        "device unmap"
    );

    // Refusals.
    let s = map_at(ME, 600, window, 0).status;
    check!(failed, s == gntst::BAD_GNTREF, "ref beyond the table: {s}");
    let s = map_at(ME, 20, window, 0).status;
    check!(failed, s == gntst::GENERAL_ERROR, "ref never granted: {s}");
    let s = map(ME, REF, window, 0).status;
    check!(
        failed,
        s == gntst::BAD_GNTREF,
        "neither host nor device: {s}"
    );
    let s = map_at(DOMID_SELF, REF, window, 0).status;
    check!(failed, s == gntst::BAD_DOMAIN, "granter DOMID_SELF: {s}");
    let s = map_at(0x7000, REF, window, 0).status;
    check!(failed, s == gntst::BAD_DOMAIN, "no such granter: {s}");
    grant(table, 21, 0x7000, data_mfn, gtf::PERMIT_ACCESS);
    let s = map_at(ME, 21, window, 0).status;
    check!(
        failed,
        s == gntst::GENERAL_ERROR,
        "ref granted to another domain: {s}"
    );
    check!(
        failed,
        pte_of(si, window) & 0x000F_FFFF_FFFF_F000 == window_mfn << 12,
        "a refused map changed the slot"
    );

    // Copies: by reference to frame and back, and their refusals.
    for i in 0..64 {
        write(data, 100 + i, i as u8);
    }
    let (r, s) = copy(
        by_ref(ME, REF, 100),
        by_frame(buf_mfn, 200),
        64,
        gntcopy::SOURCE_GREF,
    );
    check!(
        failed,
        r == 0 && s == gntst::OKAY,
        "copy from a grant: {r} {s}"
    );
    check!(
        failed,
        (0..64).all(|i| read(buf, 200 + i) == i as u8),
        "copy from a grant: wrong data"
    );
    write(buf, 300, 0x77);
    let (r, s) = copy(
        by_frame(buf_mfn, 300),
        by_ref(ME, REF, 4000),
        1,
        gntcopy::DEST_GREF,
    );
    check!(
        failed,
        r == 0 && s == gntst::OKAY,
        "copy to a grant: {r} {s}"
    );
    check!(
        failed,
        read(data, 4000) == 0x77,
        "copy to a grant: wrong data"
    );
    let (_, s) = copy(
        by_ref(ME, REF, 4000),
        by_frame(buf_mfn, 0),
        200,
        gntcopy::SOURCE_GREF,
    );
    check!(
        failed,
        s == gntst::BAD_COPY_ARG,
        "copy beyond the page: {s}"
    );
    let (_, s) = copy(
        by_ref(ME, RO_REF, 0),
        by_ref(ME, RO_REF, 8),
        8,
        gntcopy::SOURCE_GREF | gntcopy::DEST_GREF,
    );
    check!(
        failed,
        s == gntst::GENERAL_ERROR,
        "copy into a read-only grant: {s}"
    );
    let mut foreign_frame = by_frame(buf_mfn, 0);
    foreign_frame.domid = ME;
    let (_, s) = copy(foreign_frame, by_frame(buf_mfn, 8), 8, 0);
    check!(
        failed,
        s == gntst::PERMISSION_DENIED,
        "copy by frame not DOMID_SELF: {s}"
    );
    let (_, s) = copy(
        by_ref(ME, 700, 0),
        by_frame(buf_mfn, 0),
        8,
        gntcopy::SOURCE_GREF,
    );
    check!(failed, s == gntst::BAD_GNTREF, "copy from a bad ref: {s}");
    check!(
        failed,
        entry_flags(table, REF) == gtf::PERMIT_ACCESS,
        "a copy left status bits"
    );

    // cache_flush: clean (and invalidate) bytes of an own frame; invalidating alone is not
    // offered on x86; bad ranges and the unimplemented by-reference form are -EINVAL.
    for (a, offset, length, op, want) in [
        (data_mfn << 12, 0, 64, cache::CLEAN, 0),
        (data_mfn << 12, 100, 3000, cache::CLEAN | cache::INVAL, 0),
        (data_mfn << 12, 0, 64, cache::INVAL, -95),
        (data_mfn << 12, 4096, 1, cache::CLEAN, -22),
        (data_mfn << 12, 4000, 200, cache::CLEAN, -22),
        (
            u64::from(REF),
            0,
            64,
            cache::CLEAN | cache::SOURCE_GREF,
            -22,
        ),
        (data_mfn << 12, 0, 0, cache::CLEAN, 0),
    ] {
        let mut c = [CacheFlush {
            a,
            offset,
            length,
            op,
        }];
        let r = grant_table_op(cmd::CACHE_FLUSH, &mut c);
        check!(
            failed,
            r == want,
            "cache_flush op {op:#x} at {offset}+{length}: {r}, not {want}"
        );
    }

    // Swapping entries.
    let mut sw = [SwapGrantRef {
        ref_a: REF,
        ref_b: 30,
        ..SwapGrantRef::default()
    }];
    check!(
        failed,
        grant_table_op(cmd::SWAP_GRANT_REF, &mut sw) == 0 && sw[0].status == 0,
        "swap"
    );
    check!(
        failed,
        entry_flags(table, 30) == gtf::PERMIT_ACCESS && entry_flags(table, REF) == 0,
        "swap did not swap"
    );
    grant_table_op(cmd::SWAP_GRANT_REF, &mut sw);

    // Ending access while mapped: the mapping stays until unmapped, the bits too.
    let m = map_at(ME, REF, window, 0);
    check!(failed, m.status == gntst::OKAY, "map again: {}", m.status);
    // The type cleared, the rest as it was (a granter that does not wait for the bits).
    entry_word(table, REF).fetch_and(!u32::from(gtf::TYPE_MASK), SeqCst);
    check!(
        failed,
        read(window, 1) == 0xa5,
        "mapping lost when access ended"
    );
    let m3 = map_at(ME, REF, buf, gntmap::READONLY);
    check!(
        failed,
        m3.status == gntst::OKAY,
        "a pinned entry stays usable by its user: {}",
        m3.status
    );
    let f = entry_flags(table, REF);
    check!(
        failed,
        f == gtf::READING | gtf::WRITING,
        "status bits after ending access: {f:#x}"
    );
    check!(
        failed,
        unmap(m.handle, window, 0) == gntst::OKAY,
        "unmap after end"
    );
    check!(
        failed,
        unmap(m3.handle, buf, 0) == gntst::OKAY,
        "unmap 2 after end"
    );
    let f = entry_flags(table, REF);
    check!(failed, f == 0, "bits left after the end: {f:#x}");
    let s = map_at(ME, REF, window, 0).status;
    check!(
        failed,
        s == gntst::GENERAL_ERROR,
        "map after access ended: {s}"
    );
    remap(window, window_mfn);
    remap(buf, buf_mfn);

    if failed {
        Verdict::Failure("grant tables")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
