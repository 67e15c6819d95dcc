//! Grant-table helpers for the test guests: the hypercall, setting up the domain's own table
//! and mapping its first frame, writing entries, and mapping a grant onto a page of the
//! guest's image (whose own mapping is put back afterwards).

use core::sync::atomic::{AtomicU32, Ordering::SeqCst};

use xen_abi::grant_table::{
    CopyPtr, GnttabCopy, MapGrantRef, QuerySize, SetupTable, UnmapGrantRef, cmd, gntmap,
};
use xen_abi::mmu::uvmf;
use xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use zerocopy::IntoBytes;

use crate::{hypercall, l1e_maddr, pfn_to_mfn, pte_va};

/// A page-aligned page of the guest's image.
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);

/// `grant_table_op(cmd, arg, count)` on a slice of `T`s.
pub fn grant_table_op<T: IntoBytes>(cmd: u32, args: &mut [T]) -> i64 {
    hypercall(
        nr::GRANT_TABLE_OP,
        u64::from(cmd),
        args.as_mut_ptr() as u64,
        args.len() as u64,
        0,
        0,
    )
}

/// `query_size` of `dom`: (hypercall result, status, nr_frames, max_nr_frames).
pub fn query_size(dom: u16) -> (i64, i16, u32, u32) {
    let mut q = [QuerySize {
        dom,
        ..QuerySize::default()
    }];
    let r = grant_table_op(cmd::QUERY_SIZE, &mut q);
    (r, q[0].status, q[0].nr_frames, q[0].max_nr_frames)
}

/// The current L1 entry mapping `va` (an image page: its L1 is in the initial tables).
pub fn pte_of(si: &StartInfo, va: u64) -> u64 {
    let maddr = l1e_maddr(si, va).unwrap_or(0);
    // SAFETY: the initial page tables are mapped read-only at their PFN times 4096.
    unsafe { core::ptr::read_volatile(pte_va(maddr) as *const u64) }
}

/// Maps machine frame `mfn` writable at `va` (replacing its mapping), or puts back the image
/// page's own frame with `mfn` = its own.
pub fn remap(va: u64, mfn: u64) -> i64 {
    let pte = (mfn << 12) | 0x67;
    hypercall(nr::UPDATE_VA_MAPPING, va, pte, uvmf::INVLPG, 0, 0)
}

/// The machine frame behind an image page.
pub fn mfn_of(si: &StartInfo, va: u64) -> u64 {
    pfn_to_mfn(si, va >> 12)
}

/// The domain's own table: `setup_table` for one frame, mapped at `table`'s address.
/// Returns the table frame, or why not.
pub fn setup_own_table(table: &Page) -> Result<u64, &'static str> {
    let mut frame = 0u64;
    let mut st = [SetupTable {
        dom: DOMID_SELF,
        nr_frames: 1,
        frame_list: &mut frame as *mut u64 as u64,
        ..SetupTable::default()
    }];
    if grant_table_op(cmd::SETUP_TABLE, &mut st) != 0 || st[0].status != 0 {
        return Err("setup_table");
    }
    if remap(table as *const Page as u64, frame) != 0 {
        return Err("mapping the table frame");
    }
    Ok(frame)
}

/// The flags|domid word of entry `r` of the table mapped at `table`.
pub fn entry_word(table: &Page, r: u32) -> &AtomicU32 {
    let p = table.0.as_ptr() as u64 + u64::from(r) * 8;
    // SAFETY: `r` < 512 keeps the word inside the page; grant entries are 8-byte aligned.
    unsafe { AtomicU32::from_ptr(p as *mut u32) }
}

/// The flags of entry `r`.
pub fn entry_flags(table: &Page, r: u32) -> u16 {
    entry_word(table, r).load(SeqCst) as u16
}

/// Grants (or, with `flags` 0, ends) entry `r`: `frame` to `domid` (frame first, then flags,
/// as a granter must).
pub fn grant(table: &Page, r: u32, domid: u16, frame: u64, flags: u16) {
    let fp = table.0.as_ptr() as u64 + u64::from(r) * 8 + 4;
    // SAFETY: as in `entry_word`.
    unsafe { AtomicU32::from_ptr(fp as *mut u32) }.store(frame as u32, SeqCst);
    entry_word(table, r).store(u32::from(flags) | u32::from(domid) << 16, SeqCst);
}

/// `map_grant_ref` of one entry: the result structure (status, handle, dev_bus_addr).
pub fn map(dom: u16, r: u32, host_addr: u64, flags: u32) -> MapGrantRef {
    let mut m = [MapGrantRef {
        host_addr,
        flags,
        r#ref: r,
        dom,
        ..MapGrantRef::default()
    }];
    let rc = grant_table_op(cmd::MAP_GRANT_REF, &mut m);
    if rc != 0 {
        m[0].status = -1000;
    }
    m[0]
}

/// `unmap_grant_ref` of one mapping: its status (-1000 if the hypercall failed).
pub fn unmap(handle: u32, host_addr: u64, dev_bus_addr: u64) -> i16 {
    let mut u = [UnmapGrantRef {
        host_addr,
        dev_bus_addr,
        handle,
        ..UnmapGrantRef::default()
    }];
    if grant_table_op(cmd::UNMAP_GRANT_REF, &mut u) != 0 {
        return -1000;
    }
    u[0].status
}

/// Host-maps entry `r` of `dom` at the image page `va` with `flags` (plus host_map).
pub fn map_at(dom: u16, r: u32, va: u64, flags: u32) -> MapGrantRef {
    map(dom, r, va, flags | gntmap::HOST_MAP)
}

/// One `GNTTABOP_copy` of `len` bytes: (hypercall result, the copy's status).
pub fn copy(source: CopyPtr, dest: CopyPtr, len: u16, flags: u16) -> (i64, i16) {
    let mut c = [GnttabCopy {
        source,
        dest,
        len,
        flags,
        ..GnttabCopy::default()
    }];
    let r = grant_table_op(cmd::COPY, &mut c);
    (r, c[0].status)
}

/// A copy side named by grant reference `r` of domain `dom`, at `offset`.
pub fn by_ref(dom: u16, r: u32, offset: u16) -> CopyPtr {
    CopyPtr {
        u: u64::from(r),
        domid: dom,
        offset,
        ..CopyPtr::default()
    }
}

/// A copy side named by the caller's own machine frame `mfn`, at `offset`.
pub fn by_frame(mfn: u64, offset: u16) -> CopyPtr {
    CopyPtr {
        u: mfn,
        domid: DOMID_SELF,
        offset,
        ..CopyPtr::default()
    }
}
