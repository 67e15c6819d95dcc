//! `grant_table_op` (20): grant tables as Xen 4.17 (`xen/common/grant_table.c`,
//! `xen/arch/x86/pv/grant_table.c`), versions 1 and 2.
//!
//! Per sub-op:
//! - `setup_table`, `query_size`, `get_version`, `get_status_frames`: the caller's table, or
//!   another domain's for a privileged caller (Xen's `XSM_TARGET`); results in `status`.
//!   (`get_status_frames`: only as many as the table has; v1 has none.)
//! - `set_version`: 1 or 2 (2 is `-ENOSYS` for a domain the toolstack created for v1 only,
//!   as Xen), the reserved entries (0-7) carried over, `-EBUSY` while another
//!   entry is in use or (back to v1) the guest maps a status frame, `-ERANGE` for a reserved
//!   v2 entry v1 cannot hold; v2 status frames shared as the table's frames are
//!   (`get_status_frames`). v2 full-page and sub-page grants (sub-page: copies only, within
//!   the window); transitive grants are refused (`GNTST_general_error`, as Xen with
//!   transitive grants turned off).
//! - `map_grant_ref`: takes a use of the granter's entry (`GTF_reading`/`GTF_writing`), then a
//!   device mapping (a frame reference, and the writable type unless read-only, held by the
//!   maptrack entry) and/or a host mapping: an L1 entry written into the caller's own L1 table
//!   (found from `host_addr` through its current page tables, or named by machine address
//!   with `GNTMAP_contains_pte`), marked `_PAGE_GNTTAB`, that holds its own frame reference and
//!   type as any entry does (`hestia_core::pv_mm`). So a mapped frame can be neither retyped,
//!   pinned nor given back by its owner, and the frame audit counts grant mappings exactly.
//! - `unmap_grant_ref` / `unmap_and_replace`: by handle, checking `host_addr` (the entry must
//!   still map the frame with the mapping's RW) and `dev_bus_addr`; the TLBs of the CPUs on the
//!   caller's page tables (the domain that held the mappings) are flushed once per batch of 32
//!   before the granter's status bits are cleared, as Xen.
//! - `copy`: both directions, by grant reference or (the caller's own, `DOMID_SELF` only) by
//!   frame; each side pinned and referenced for the copy alone; offsets and length checked
//!   against the page (`GNTST_bad_copy_arg`). Source and destination may overlap (a `memmove`).
//! - `swap_grant_ref`, `cache_flush` (x86: clean, or clean and invalidate, of a frame the
//!   caller owns or has mapped from a grant; invalidate alone `-EOPNOTSUPP`); `transfer` and
//!   the rest `-ENOSYS`.
//!
//! Batches are preemptible every 16 items (`continuation`), with the list pointer advanced and
//! the count reduced as Xen does.
//!
//! Locks: the caller's vCPU (its CR3, briefly), then the caller's maptrack, then one domain's
//! table, then the frame table.

use alloc::vec::Vec;

use hestia_core::grant_table::{MAPTRACK_PER_FRAME, Mapping, map_pin_incr, pin};
use hestia_core::ids::{GrantRef, Mfn};
use hestia_core::pv_mm::{PageType, pte};
use xen_abi::errno::Errno;
use xen_abi::grant_table::{
    CacheFlush, GetStatusFrames, GetVersion, GnttabCopy, MapGrantRef, QuerySize, SetVersion,
    SetupTable, SwapGrantRef, UnmapAndReplace, UnmapGrantRef, cache, cmd, gntcopy, gntmap, gntst,
};
use xen_abi::xen::{DOMID_SELF, HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::Caller;
use super::continuation::{self, Stop};
use crate::arch::x86_64::cpu;
use crate::arch::x86_64::smp::{self, Flush};
use crate::domain::{self, DomainRef};
use crate::mm;
use crate::mm::frametable::{self, DirectMem};
use crate::mm::guest::{self, is_guest_range};
use crate::pv::domain::Domain;
use crate::pv::grant::{complete_unmap, put_device_refs};
use crate::pv::mmu::find_l1;
use hestia_core::policy::{self, Action};

/// `GNTTABOP_*` is the low 12 bits of `cmd`; the rest is the continuation's argument (Xen's
/// `GNTTABOP_CMD_MASK`), only for `cache_flush`.
const CMD_MASK: u32 = 0xfff;
/// Unmaps done between two TLB flushes (Xen's `GNTTAB_UNMAP_BATCH_SIZE`).
const UNMAP_BATCH: usize = 32;

pub(super) fn do_grant_table_op(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Stop> {
    let d = c.domain();
    let (raw, uop, count) = (a[0] as u32, a[1], a[2] as u32);
    if (count as i32) < 0 {
        return Err(Errno::EINVAL.into());
    }
    let op = raw & CMD_MASK;
    if op != cmd::CACHE_FLUSH && raw & !CMD_MASK != 0 {
        return Err(Errno::EINVAL.into());
    }
    match op {
        cmd::MAP_GRANT_REF => batch(d, raw, uop, count, |op: &mut MapGrantRef| {
            map_grant_ref(c, op)
        }),
        cmd::UNMAP_GRANT_REF => unmap_batch(c, raw, uop, count, |op: &mut UnmapGrantRef| {
            (op.handle, op.host_addr, op.dev_bus_addr, 0, &mut op.status)
        }),
        cmd::UNMAP_AND_REPLACE => unmap_batch(c, raw, uop, count, |op: &mut UnmapAndReplace| {
            (op.handle, op.host_addr, 0, op.new_addr, &mut op.status)
        }),
        cmd::SETUP_TABLE => one(uop, count, |op: &mut SetupTable| setup_table(d, op)),
        cmd::COPY => batch(d, raw, uop, count, |op: &mut GnttabCopy| {
            op.status = copy(d, op);
        }),
        cmd::QUERY_SIZE => one(uop, count, |op: &mut QuerySize| {
            op.status = match target(d, op.dom) {
                Ok(t) => {
                    let mut st = t.grant.table.lock();
                    st.ensure(t.id.0);
                    op.nr_frames = st.gt.nr_frames();
                    op.max_nr_frames = st.gt.max_frames;
                    gntst::OKAY
                }
                Err(s) => s,
            };
            Ok(())
        }),
        cmd::SET_VERSION => {
            let mut op: SetVersion = guest::read_obj(uop)?;
            let mut st = d.grant.table.lock();
            let r = match op.version {
                // A domain created for v1 only behaves as before set_version existed (Xen).
                2 if d.grant.max_version < 2 => Err(Errno::ENOSYS),
                1 | 2 => st.set_version(d.id.0, op.version as u8).map(|()| 0),
                _ => Err(Errno::EINVAL),
            };
            op.version = u32::from(st.gt.version());
            drop(st);
            guest::write_obj(uop, &op)?;
            Ok(r?)
        }
        cmd::GET_VERSION => {
            let mut op: GetVersion = guest::read_obj(uop)?;
            let t = match target(d, op.dom) {
                Ok(t) => t,
                Err(gntst::BAD_DOMAIN) => return Err(Errno::ESRCH.into()),
                Err(_) => return Err(Errno::EPERM.into()),
            };
            op.version = u32::from(t.grant.table.lock().gt.version());
            guest::write_obj(uop, &op)?;
            Ok(0)
        }
        cmd::GET_STATUS_FRAMES => one(uop, count, |op: &mut GetStatusFrames| {
            if !is_guest_range(op.frame_list, u64::from(op.nr_frames) * 8) {
                return Err(Errno::EFAULT);
            }
            let t = match target(d, op.dom) {
                Ok(t) => t,
                Err(s) => {
                    op.status = s;
                    return Ok(());
                }
            };
            let st = t.grant.table.lock();
            let frames = st.status_frames();
            if op.nr_frames as usize > frames.len() {
                op.status = gntst::GENERAL_ERROR;
                return Ok(());
            }
            op.status = gntst::OKAY;
            for (i, &mfn) in frames.iter().take(op.nr_frames as usize).enumerate() {
                if guest::write_obj(op.frame_list + i as u64 * 8, &mfn.raw()).is_err() {
                    op.status = gntst::BAD_VIRT_ADDR;
                }
            }
            Ok(())
        }),
        cmd::SWAP_GRANT_REF => batch(d, raw, uop, count, |op: &mut SwapGrantRef| {
            let mut st = d.grant.table.lock();
            st.ensure(d.id.0);
            let (gt, sh) = st.split();
            let (a, b) = (
                GrantRef::unvalidated(op.ref_a),
                GrantRef::unvalidated(op.ref_b),
            );
            op.status = gt.swap(&sh, a, b);
        }),
        cmd::CACHE_FLUSH => cache_flush_batch(d, raw, uop, count),
        _ => Err(Errno::ENOSYS.into()),
    }
}

/// A one-item sub-op (`count` must be 1): reads the argument, runs `f`, writes it back.
fn one<T: FromBytes + IntoBytes + Immutable>(
    uop: u64,
    count: u32,
    f: impl FnOnce(&mut T) -> Result<(), Errno>,
) -> Result<u64, Stop> {
    if count != 1 {
        return Err(Errno::EINVAL.into());
    }
    let mut op: T = guest::read_obj(uop)?;
    f(&mut op)?;
    guest::write_obj(uop, &op)?;
    Ok(0)
}

/// A batch of `count` `T`s at `uop`, `f` per item, each written back; stops for a
/// continuation every 16 items when the vCPU has something to take first.
fn batch<T: FromBytes + IntoBytes + Immutable>(
    d: &Domain,
    raw: u32,
    uop: u64,
    count: u32,
    mut f: impl FnMut(&mut T),
) -> Result<u64, Stop> {
    let size = size_of::<T>() as u64;
    if !is_guest_range(uop, u64::from(count) * size) {
        return Err(Errno::EFAULT.into());
    }
    for i in 0..count {
        let at = uop + u64::from(i) * size;
        if continuation::should_preempt(d, u64::from(i)) {
            return continuation::create([u64::from(raw), at, u64::from(count - i), 0, 0]);
        }
        let mut op: T = guest::read_obj(at)?;
        f(&mut op);
        guest::write_obj(at, &op)?;
    }
    Ok(0)
}

/// The domain a table operation names, `DOMID_SELF` included, if the caller may act on it
/// (itself, or any for a privileged caller: Xen's `XSM_TARGET`); else the status.
fn target(d: &Domain, dom: u16) -> Result<DomainRef, i16> {
    let t = domain::lookup(d, dom).map_err(|_| gntst::BAD_DOMAIN)?;
    if t.id != d.id && policy::check(d.rights, Action::GrantOtherDomain).is_err() {
        return Err(gntst::PERMISSION_DENIED);
    }
    Ok(t)
}

/// The granter a mapping names: a real domain id (`DOMID_SELF` is no granter, as in Xen).
fn granter(d: &Domain, dom: u16) -> Result<DomainRef, i16> {
    if dom == DOMID_SELF {
        return Err(gntst::BAD_DOMAIN);
    }
    domain::lookup(d, dom).map_err(|_| gntst::BAD_DOMAIN)
}

/// `GNTTABOP_setup_table`.
fn setup_table(d: &Domain, op: &mut SetupTable) -> Result<(), Errno> {
    if !is_guest_range(op.frame_list, u64::from(op.nr_frames) * 8) {
        return Err(Errno::EFAULT);
    }
    let t = match target(d, op.dom) {
        Ok(t) => t,
        Err(s) => {
            op.status = s;
            return Ok(());
        }
    };
    let mut st = t.grant.table.lock();
    st.ensure(t.id.0);
    if op.nr_frames > st.gt.max_frames
        || (op.nr_frames > st.gt.nr_frames() && !st.grow(t.id.0, op.nr_frames))
    {
        crate::gdebug!(
            d,
            "{}: grant table of {} cannot have {} frames",
            d.id,
            t.id,
            op.nr_frames
        );
        op.status = gntst::GENERAL_ERROR;
        return Ok(());
    }
    op.status = gntst::OKAY;
    for (i, &mfn) in st.frames().iter().take(op.nr_frames as usize).enumerate() {
        if guest::write_obj(op.frame_list + i as u64 * 8, &mfn.raw()).is_err() {
            op.status = gntst::BAD_VIRT_ADDR;
        }
    }
    Ok(())
}

/// Where a host mapping goes: the L1 table and slot.
fn host_slot(mem: &DirectMem, l4: Mfn, addr: u64, flags: u32) -> Result<(Mfn, usize), i16> {
    if flags & gntmap::CONTAINS_PTE != 0 {
        if !addr.is_multiple_of(8) {
            return Err(gntst::GENERAL_ERROR);
        }
        return Ok((Mfn::new(addr >> 12), ((addr & 0xfff) / 8) as usize));
    }
    linear_slot(mem, l4, addr)
}

/// The L1 slot mapping the guest virtual address `va` in the tables rooted at `l4`.
fn linear_slot(mem: &DirectMem, l4: Mfn, va: u64) -> Result<(Mfn, usize), i16> {
    if !is_guest_range(va, 1) || (HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END).contains(&va) {
        return Err(gntst::GENERAL_ERROR);
    }
    find_l1(mem, l4, va).map_err(|_| gntst::GENERAL_ERROR)
}

/// The L1 entry of a host mapping of `mfn` with `GNTMAP_*` `flags` (Xen's
/// `grant_to_pte_flags`): accessed, dirty, no-execute and the grant mark; RW unless
/// read-only; user with `GNTMAP_application_map` (Hestia forces it on every guest entry
/// anyway); the guest's three available bits from the flags' top half.
fn grant_pte(mfn: Mfn, flags: u32) -> u64 {
    const ACCESSED_DIRTY: u64 = 0x60;
    let mut e = mfn.addr() | pte::P | ACCESSED_DIRTY | pte::NX | pte::GNTTAB;
    if flags & gntmap::APPLICATION_MAP != 0 {
        e |= pte::US;
    }
    if flags & gntmap::READONLY == 0 {
        e |= pte::RW;
    }
    e | (u64::from((flags >> 16) & 7) << 9)
}

/// True if a maptrack may take another frame's worth of entries from Hestia's heap: only
/// while at least half of the heap stays free, so domains mapping up to their
/// `max_maptrack_frames` (Xen's 1024 frames, 8 MiB of entries here) can never starve Hestia's
/// own allocations; a domain past that gets `GNTST_no_space`, as when its own limit is hit.
fn maptrack_may_grow() -> bool {
    let s = mm::stats();
    let chunk = u64::from(MAPTRACK_PER_FRAME) * 32;
    s.heap_size.saturating_sub(s.heap_used) > s.heap_size / 2 + chunk
}

/// `GNTTABOP_map_grant_ref`, one item (Xen's `map_grant_ref`).
fn map_grant_ref(c: Caller<'_>, op: &mut MapGrantRef) {
    let ld = c.domain();
    match map_inner(c, op) {
        Ok((handle, mfn)) => {
            op.handle = handle;
            op.dev_bus_addr = mfn.addr();
            op.status = gntst::OKAY;
        }
        Err(s) => {
            crate::gdebug!(
                ld,
                "{}: map of d{} ref {:#x} flags {:#x} refused ({s})",
                ld.id,
                op.dom,
                op.r#ref,
                op.flags
            );
            op.status = s;
        }
    }
}

fn map_inner(c: Caller<'_>, op: &MapGrantRef) -> Result<(u32, Mfn), i16> {
    let ld = c.domain();
    let r = GrantRef::unvalidated(op.r#ref);
    let incr = map_pin_incr(op.flags);
    if incr == 0 {
        return Err(gntst::BAD_GNTREF);
    }
    let rd = granter(ld, op.dom)?;
    let l4 = c.vcpu().lock().kernel_l4();
    let mut mt = ld.grant.maptrack.lock();
    if mt.full() && !maptrack_may_grow() {
        return Err(gntst::NO_SPACE);
    }
    mt.reserve()?;
    let ro = op.flags & gntmap::READONLY != 0;
    let (me, them) = (ld.id.0, rd.id.0);
    let mut st = rd.grant.table.lock();
    if !st.ensure(them) {
        return Err(gntst::GENERAL_ERROR);
    }
    let (gt, sh) = st.split();
    // Only the frame's owner is checked here: the mappings take their own references.
    let mut owned = |frame: Mfn, first: bool| {
        let ok = frametable::with(|ft, _| ft.info(frame).is_some_and(|f| f.owner == Some(them)));
        match ok {
            Some(true) => Ok(()),
            _ if first => Err(gntst::BAD_PAGE),
            _ => Err(gntst::GENERAL_ERROR),
        }
    };
    let mfn = gt.acquire(&sh, r, ld.id, incr, ro, true, &mut owned)?.mfn;
    let dev = op.flags & gntmap::DEVICE_MAP != 0;
    let host = op.flags & gntmap::HOST_MAP != 0;
    let taken = frametable::with(|ft, mem| {
        if dev {
            ft.get_page(mfn, them).map_err(|_| gntst::GENERAL_ERROR)?;
            if !ro
                && ft
                    .get_page_type(mem, mfn, PageType::Writable, them)
                    .is_err()
            {
                ft.put_page(mfn);
                return Err(gntst::GENERAL_ERROR);
            }
        }
        if host {
            let r = host_slot(mem, l4, op.host_addr, op.flags).and_then(|(l1, idx)| {
                ft.grant_map_l1e(mem, l1, idx, me, grant_pte(mfn, op.flags), them)
                    .map_err(|_| gntst::GENERAL_ERROR)
            });
            if r.is_err() && dev {
                if !ro {
                    ft.put_page_type(mem, mfn);
                }
                ft.put_page(mfn);
            }
            r?;
        }
        Ok(())
    })
    .unwrap_or(Err(gntst::GENERAL_ERROR));
    if let Err(s) = taken {
        gt.release(&sh, r, incr, ro);
        return Err(s);
    }
    drop(st);
    let handle = mt.insert(Mapping {
        flags: op.flags & 0xffff,
        r#ref: r,
        domid: rd.id,
        mfn,
        granter: rd.clone(),
    })?;
    Ok((handle, mfn))
}

/// What an unmap left for after the TLB flush: the granter's uses to give back.
struct Unmapped {
    granter: DomainRef,
    r#ref: GrantRef,
    flags: u32,
    done: u32,
}

/// `GNTTABOP_unmap_grant_ref` and `GNTTABOP_unmap_and_replace`: `fields` gives an item's
/// handle, host address, bus address, replacement address and status. In batches of
/// [`UNMAP_BATCH`]: the unmaps, one TLB flush, then the granters' uses given back (Xen's
/// `unmap_common` and `unmap_common_complete`).
fn unmap_batch<T: FromBytes + IntoBytes + Immutable>(
    c: Caller<'_>,
    raw: u32,
    uop: u64,
    count: u32,
    fields: impl Fn(&mut T) -> (u32, u64, u64, u64, &mut i16),
) -> Result<u64, Stop> {
    let d = c.domain();
    let size = size_of::<T>() as u64;
    if !is_guest_range(uop, u64::from(count) * size) {
        return Err(Errno::EFAULT.into());
    }
    let l4 = c.vcpu().lock().kernel_l4();
    let mut i = 0;
    while i < count {
        if continuation::should_preempt(d, u64::from(i)) {
            let at = uop + u64::from(i) * size;
            return continuation::create([u64::from(raw), at, u64::from(count - i), 0, 0]);
        }
        let end = count.min(i + UNMAP_BATCH as u32);
        let mut pending = Vec::with_capacity(UNMAP_BATCH);
        let mut fault = None;
        for j in i..end {
            let at = uop + u64::from(j) * size;
            let mut op: T = match guest::read_obj(at) {
                Ok(op) => op,
                Err(e) => {
                    fault = Some(e);
                    break;
                }
            };
            let (handle, host_addr, dev_bus_addr, new_addr, status) = fields(&mut op);
            *status = match unmap_one(d, l4, handle, host_addr, dev_bus_addr, new_addr) {
                Ok(u) => {
                    pending.extend(u);
                    gntst::OKAY
                }
                Err(s) => s,
            };
            if let Err(e) = guest::write_obj(at, &op) {
                fault = Some(e);
                break;
            }
        }
        // The mappings were the caller's: the CPUs on its page tables drop them (Xen flushes
        // the mapping domain's dirty CPUs).
        if pending.iter().any(|u| u.done & gntmap::HOST_MAP != 0) {
            smp::flush_guest_tlbs(Flush::Space(d.id.0.into()));
        }
        for u in pending {
            complete_unmap(&u.granter, u.r#ref, u.flags, u.done);
        }
        if let Some(e) = fault {
            return Err(e.into());
        }
        i = end;
    }
    Ok(0)
}

/// One unmap (Xen's `unmap_common`): what it undid, for after the TLB flush.
fn unmap_one(
    ld: &Domain,
    l4: Mfn,
    handle: u32,
    host_addr: u64,
    dev_bus_addr: u64,
    new_addr: u64,
) -> Result<Option<Unmapped>, i16> {
    let mut mt = ld.grant.maptrack.lock();
    let m = mt.get(handle)?;
    let (flags, r, mfn, rd) = (m.flags, m.r#ref, m.mfn, m.granter.clone());
    let st = rd.grant.table.lock();
    if r.raw() >= st.gt.nr_entries() {
        return Err(gntst::BAD_HANDLE);
    }
    if dev_bus_addr != 0 && flags & gntmap::DEVICE_MAP != 0 && dev_bus_addr != mfn.addr() {
        return Err(gntst::BAD_DEV_ADDR);
    }
    let mut done = 0;
    if host_addr != 0 && flags & gntmap::HOST_MAP != 0 {
        let me = ld.id.0;
        let rw = flags & gntmap::READONLY == 0;
        frametable::with(|ft, mem| {
            if flags & gntmap::CONTAINS_PTE != 0 && new_addr != 0 {
                return Err(gntst::GENERAL_ERROR);
            }
            let (from, stolen) = if new_addr != 0 {
                let (l1, idx) = linear_slot(mem, l4, new_addr)?;
                let e = ft
                    .grant_steal_l1e(mem, l1, idx, me)
                    .map_err(|_| gntst::GENERAL_ERROR)?;
                (l1, e)
            } else {
                (Mfn::new(0), 0)
            };
            let r = host_slot(mem, l4, host_addr, flags).and_then(|(l1, idx)| {
                ft.grant_unmap_l1e(mem, l1, idx, me, mfn, rw, stolen)
                    .map_err(|_| gntst::GENERAL_ERROR)
            });
            if r.is_err() {
                ft.put_l1e(mem, from, stolen);
            }
            r
        })
        .unwrap_or(Err(gntst::GENERAL_ERROR))?;
        done |= gntmap::HOST_MAP;
    }
    if dev_bus_addr != 0 && flags & gntmap::DEVICE_MAP != 0 {
        done |= gntmap::DEVICE_MAP;
        put_device_refs(mfn, flags & gntmap::READONLY != 0);
    }
    drop(st);
    mt.unmapped(handle, done);
    Ok((done != 0).then_some(Unmapped {
        granter: rd,
        r#ref: r,
        flags,
        done,
    }))
}

/// One side of a copy, claimed: a frame with a reference (and the writable type for the
/// destination), and the grant use behind it if it came by reference.
struct Side {
    dom: DomainRef,
    mfn: Mfn,
    /// The bytes of the frame granted (a v2 sub-page grant's; the whole page otherwise).
    window: (u64, u64),
    gref: Option<GrantRef>,
    ro: bool,
    typed: bool,
}

/// The domain one side of a copy names (Xen's `gnttab_copy_lock_domain`): by frame only the
/// caller's own, as `DOMID_SELF`.
fn copy_domain(ld: &Domain, domid: u16, is_gref: bool) -> Result<DomainRef, i16> {
    if domid != DOMID_SELF && !is_gref {
        return Err(gntst::PERMISSION_DENIED);
    }
    domain::lookup(ld, domid).map_err(|_| gntst::BAD_DOMAIN)
}

/// Claims one side of a copy (Xen's `gnttab_copy_claim_buf`).
fn claim(ld: &Domain, dom: DomainRef, u: u64, is_gref: bool, ro: bool) -> Result<Side, i16> {
    let id = dom.id.0;
    let incr = if ro { pin::HOST_READ } else { pin::HOST_WRITE };
    let gref = is_gref.then_some(GrantRef::unvalidated(u as u32));
    let (mfn, window) = match gref {
        Some(r) => {
            let mut st = dom.grant.table.lock();
            if !st.ensure(id) {
                return Err(gntst::GENERAL_ERROR);
            }
            let (gt, sh) = st.split();
            let mut take =
                |frame: Mfn, first: bool| match frametable::with(|ft, _| ft.get_page(frame, id)) {
                    Some(Ok(())) => Ok(()),
                    _ if first => Err(gntst::BAD_PAGE),
                    _ => Err(gntst::BAD_DOMAIN),
                };
            let u = gt.acquire(&sh, r, ld.id, incr, ro, false, &mut take)?;
            (u.mfn, (u64::from(u.start), u64::from(u.length)))
        }
        None => match frametable::with(|ft, _| ft.get_page(Mfn::new(u), id)) {
            Some(Ok(())) => (Mfn::new(u), (0, 4096)),
            _ => return Err(gntst::BAD_PAGE),
        },
    };
    let typed = !ro
        && frametable::with(|ft, mem| ft.get_page_type(mem, mfn, PageType::Writable, id).is_ok())
            .unwrap_or(false);
    let side = Side {
        dom,
        mfn,
        window,
        gref,
        ro,
        typed,
    };
    if !ro && !typed {
        release(side);
        return Err(gntst::GENERAL_ERROR);
    }
    Ok(side)
}

/// Gives back what [`claim`] took (Xen's `gnttab_copy_release_buf`).
fn release(s: Side) {
    frametable::with(|ft, mem| {
        if s.typed {
            ft.put_page_type(mem, s.mfn);
        }
        ft.put_page(s.mfn);
    });
    if let Some(r) = s.gref {
        let incr = if s.ro {
            pin::HOST_READ
        } else {
            pin::HOST_WRITE
        };
        let mut st = s.dom.grant.table.lock();
        let (gt, sh) = st.split();
        gt.release(&sh, r, incr, s.ro);
    }
}

/// `GNTTABOP_copy`, one item (Xen's `gnttab_copy_one` without its cache of the last frames).
fn copy(ld: &Domain, op: &GnttabCopy) -> i16 {
    // Held for the whole copy, so the frame audit never sees its transient references.
    let _quiet = ld.grant.maptrack.lock();
    let s_gref = op.flags & gntcopy::SOURCE_GREF != 0;
    let d_gref = op.flags & gntcopy::DEST_GREF != 0;
    let doms = copy_domain(ld, op.source.domid, s_gref)
        .and_then(|s| Ok((s, copy_domain(ld, op.dest.domid, d_gref)?)));
    let (sdom, ddom) = match doms {
        Ok(d) => d,
        Err(s) => return s,
    };
    let src = match claim(ld, sdom, op.source.u, s_gref, true) {
        Ok(s) => s,
        Err(s) => return s,
    };
    let dst = match claim(ld, ddom, op.dest.u, d_gref, false) {
        Ok(d) => d,
        Err(s) => {
            release(src);
            return s;
        }
    };
    let (len, so, dof) = (
        u64::from(op.len),
        u64::from(op.source.offset),
        u64::from(op.dest.offset),
    );
    let from = src.mfn.addr() + so;
    let to = dst.mfn.addr() + dof;
    let outside = |off: u64, (start, length): (u64, u64)| off < start || off + len > start + length;
    let rc = if so + len > 4096 || dof + len > 4096 {
        gntst::BAD_COPY_ARG
    } else if outside(so, src.window)
        || outside(dof, dst.window)
        || !mm::in_direct_map(from, len)
        || !mm::in_direct_map(to, len)
    {
        // Outside a sub-page grant's window (or, never, outside the direct map).
        gntst::GENERAL_ERROR
    } else {
        // SAFETY: both frames hold a reference (the destination also the writable type) for
        // the copy, so they stay allocated and neither is a page table; both ranges lie in
        // one frame each inside the direct map; they may overlap, which `copy` allows.
        unsafe {
            core::ptr::copy(
                mm::phys_to_virt(from) as *const u8,
                mm::phys_to_virt(to) as *mut u8,
                len as usize,
            )
        };
        gntst::OKAY
    };
    release(dst);
    release(src);
    rc
}

/// `GNTTABOP_cache_flush` (Xen's `_cache_flush` on x86): each item cleans (or cleans and
/// invalidates) bytes of a frame the caller owns or has mapped from a grant; the first
/// refused item ends the call with its errno.
fn cache_flush_batch(d: &Domain, raw: u32, uop: u64, count: u32) -> Result<u64, Stop> {
    let size = size_of::<CacheFlush>() as u64;
    if !is_guest_range(uop, u64::from(count) * size) {
        return Err(Errno::EFAULT.into());
    }
    // Xen's continuation argument, a grant reference to resume a search at: searches here run
    // to their end, so it only matters where Xen checks it.
    let resumed = raw & !CMD_MASK != 0;
    for i in 0..count {
        let at = uop + u64::from(i) * size;
        if continuation::should_preempt(d, u64::from(i)) {
            return continuation::create([
                u64::from(raw & CMD_MASK),
                at,
                u64::from(count - i),
                0,
                0,
            ]);
        }
        cache_flush(d, &guest::read_obj(at)?, resumed)?;
    }
    Ok(0)
}

fn cache_flush(d: &Domain, op: &CacheFlush, resumed: bool) -> Result<(), Errno> {
    let (offset, length) = (u64::from(op.offset), u64::from(op.length));
    if offset >= 4096 || length > 4096 || offset + length > 4096 {
        return Err(Errno::EINVAL);
    }
    if op.op & !(cache::INVAL | cache::CLEAN) != 0 {
        return Err(Errno::EINVAL);
    }
    if length == 0 || op.op == 0 {
        return if resumed { Err(Errno::EILSEQ) } else { Ok(()) };
    }
    let mfn = Mfn::new(op.a >> 12);
    // The owner, with a reference for the flush (none for a free frame).
    let owner = frametable::with(|ft, _| {
        let owner = ft.info(mfn).ok_or(Errno::EINVAL)?.owner;
        Ok(owner.filter(|&o| ft.get_page(mfn, o).is_ok()))
    })
    .unwrap_or(Err(Errno::EINVAL))?;
    let r = flush_owned(d, mfn, owner, offset, length, op.op);
    if owner.is_some() {
        frametable::with(|ft, _| ft.put_page(mfn));
    }
    r
}

/// The part of [`cache_flush`] done with a reference on `mfn` (owned by `owner`).
fn flush_owned(
    d: &Domain,
    mfn: Mfn,
    owner: Option<u16>,
    offset: u64,
    length: u64,
    op: u32,
) -> Result<(), Errno> {
    let owner = owner
        .filter(|&o| o != hestia_core::pv_mm::DOM_IO)
        .ok_or(Errno::EPERM)?;
    if owner != d.id.0 {
        let od = domain::lookup(d, owner).map_err(|_| Errno::EPERM)?;
        if !od.grant.table.lock().gt.in_use_by(d.id, mfn) {
            return Err(Errno::EINVAL);
        }
    }
    if op & cache::CLEAN == 0 {
        // Invalidating without writing back is not offered on x86 (Xen's
        // `invalidate_dcache_va_range`).
        return Err(Errno::EOPNOTSUPP);
    }
    let phys = mfn.addr() + offset;
    if !mm::in_direct_map(phys, length) {
        return Err(Errno::EINVAL);
    }
    cpu::clflush_range(mm::phys_to_virt(phys), length);
    Ok(())
}
