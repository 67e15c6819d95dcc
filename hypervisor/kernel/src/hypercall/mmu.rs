//! The PV MMU hypercalls: `mmu_update` (1), `update_va_mapping` (14), `mmuext_op` (26).
//! `shared/xen-abi.md` 5.1-5.3. The rules live in `hestia_core::pv_mm`, the table walks and
//! base-pointer moves that emulation shares in `pv::mmu`; this module decodes requests, checks
//! whose frames they name, and flushes.
//!
//! TLB policy, as Xen's: the guest's own translations are flushed when it asks (UVMF flags,
//! MMUEXT flush ops); what isolation needs (no stale translation when a frame changes type or
//! leaves the domain) the frame table enforces itself, flushing every CPU first
//! (`hestia_core::pv_mm` invariant 5). Batches of any length are preemptible
//! ([`super::continuation`]); `*pdone` accumulates across the resumed calls, as in Xen. So is
//! every single operation that validates or tears down a table tree (pins, base pointers, a
//! table linked in or out by `mmu_update`): it runs in chunks (`frametable::preemptible`), and
//! when the vCPU has an interrupt or event to take, or another vCPU's half-done table is in the
//! way, it answers `ERESTART` and the same item is issued again; a teardown left over is
//! finished at the start of the vCPU's next MMU hypercall, as Xen's `old_guest_table`.

use hestia_core::ids::Mfn;
use hestia_core::pv_mm::{MmError, PageType, PtMemory};
use xen_abi::errno::Errno;
use xen_abi::mmu::{MMU_UPDATE_PREEMPTED, MmuUpdate, MmuextOp, ext, update, uvmf};
use xen_abi::xen::{DOMID_IO, DOMID_SELF, DOMID_XEN, HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};
use zerocopy::{FromBytes, IntoBytes};

use super::Caller;
use super::continuation::{self, Stop};
use crate::arch::x86_64::cpu;
use crate::arch::x86_64::smp::{self, Flush};
use crate::domain::{self, DomainRef};
use crate::mm::frametable;
use crate::mm::guest::{self, is_guest_range};
use crate::pv::domain::Domain;
use crate::pv::mmu::{errno_pin, find_l1, new_baseptr, switch_l4};
use hestia_core::policy::{self, Action};

/// Errno for a refused entry update, as Xen answers: a target frame the guest may not use in
/// that way (typed, foreign, free) is -EBUSY; a malformed entry or a bad table is -EINVAL.
fn errno(e: MmError) -> Errno {
    match e {
        MmError::TypeConflict | MmError::NotOwner | MmError::Overflow => Errno::EBUSY,
        MmError::NoIoAccess => Errno::EPERM,
        MmError::Preempted | MmError::Busy => Errno::ERESTART,
        _ => Errno::EINVAL,
    }
}

/// Errno for a refused update of an entry of a level-`level` table: above L1 every refusal is
/// -EINVAL, as Xen's `get_page_from_l{2,3,4}e` answer (a frame of the wrong type, foreign,
/// or a linear entry their rules refuse; seen on the rig), L1 entries as [`errno`].
fn errno_at(level: u8, e: MmError) -> Errno {
    match errno(e) {
        Errno::EBUSY if level > 1 => Errno::EINVAL,
        errno => errno,
    }
}

fn dom(d: &Domain) -> u16 {
    d.id.0
}

/// The domain whose frames a batch's entries name (Xen's `pg_owner`).
enum PgOwner {
    /// The caller (`DOMID_SELF`), or `DOMID_IO` for a privileged caller: its own frames and
    /// the I/O frames of its I/O-memory set.
    Own,
    /// Another domain (`foreigndom` its id): the control domain maps its frames or pins its
    /// tables (privcmd's `IOCTL_PRIVCMD_MMAPBATCH_V2` and `mmap_resource`, libxenguest's
    /// builder). Whether the caller may is checked per request for `mmu_update` and per call
    /// for `mmuext_op`, where Xen checks it.
    Foreign(DomainRef),
    /// `DOMID_XEN`: the frames Hestia shares read-only with privileged domains (the M2P,
    /// which libxenguest's save maps; `hestia_core::pv_mm::DOM_XEN`).
    Xen,
}

impl PgOwner {
    /// The foreign domain, if the batch names one the caller may act on; `EPERM` if it may
    /// not (Xen's `xsm_mmu_update`/`xsm_mmuext_op`, `XSM_TARGET`, which lets only the control
    /// domain name `DOMID_XEN` too).
    fn foreign(&self, d: &Domain) -> Result<Option<&DomainRef>, Errno> {
        match self {
            PgOwner::Own => Ok(None),
            PgOwner::Foreign(f) => policy::check(d.rights, Action::ForeignMemory).map(|()| Some(f)),
            PgOwner::Xen => policy::check(d.rights, Action::ForeignMemory).map(|()| None),
        }
    }

    /// The owner the frames a new L1 entry names must have (Xen's `pg_owner`), once the
    /// caller's right to name it is checked.
    fn pg(&self, d: &Domain) -> Result<u16, Errno> {
        let foreign = self.foreign(d)?;
        Ok(match self {
            PgOwner::Xen => DOMID_XEN,
            _ => foreign.map_or(dom(d), |f| dom(f)),
        })
    }
}

/// Checks `foreigndom` (Xen's `get_pg_owner`): `DOMID_SELF`; another existing domain;
/// `DOMID_XEN` (whether the caller may is checked per request); or `DOMID_IO` for a privileged
/// caller (its I/O frames are checked against its I/O-memory set either way). The caller's own
/// id, named explicitly, is `ESRCH`, as in Xen ("cannot specify itself as foreign domain"), as
/// is a domain that does not exist. A page-table owner
/// (`foreigndom >> 16`) other than the caller is not supported (`ESRCH`).
fn pg_owner(d: &Domain, foreigndom: u64) -> Result<PgOwner, Errno> {
    let fd = (foreigndom & 0xffff) as u16;
    let pfd = (foreigndom >> 16) as u16;
    let owner = match fd {
        DOMID_IO => policy::check(d.rights, Action::IoMemory).map(|()| PgOwner::Own)?,
        DOMID_SELF => PgOwner::Own,
        DOMID_XEN => PgOwner::Xen,
        id if id == dom(d) => return Err(Errno::ESRCH),
        id => PgOwner::Foreign(domain::lookup(d, id)?),
    };
    if pfd != 0 && pfd != dom(d) + 1 {
        return Err(Errno::ESRCH);
    }
    Ok(owner)
}

/// Runs the `mmu_update` / `mmuext_op` batch `a` = (list, count, pdone, foreigndom) of `T`s,
/// `one` per item, stopping at the first failure. Bit 31 of the count marks a resumed call:
/// `*pdone` then holds the items already done, and it gets the running total either way.
fn run_batch<T: FromBytes + IntoBytes>(
    d: &Domain,
    a: [u64; 5],
    foreign: impl FnOnce(&PgOwner) -> Result<(), Errno>,
    mut one: impl FnMut(&PgOwner, T) -> Result<(), Errno>,
) -> Result<u64, Stop> {
    let (list, raw, pdone) = (a[0], a[1] as u32, a[2]);
    let owner = pg_owner(d, a[3])?;
    foreign(&owner)?;
    let count = raw & !MMU_UPDATE_PREEMPTED;
    let before: u32 = if raw & MMU_UPDATE_PREEMPTED != 0 && pdone != 0 {
        guest::read_obj(pdone)?
    } else {
        0
    };
    // The vCPU's old tables go first (Xen's `put_old_guest_table`).
    d.finish_old_tables().map_err(errno)?;
    let size = size_of::<T>() as u64;
    let mut result = Ok(0);
    let mut i = 0;
    while i < count {
        let at = list.checked_add(u64::from(i) * size).ok_or(Errno::EFAULT);
        let rest = u64::from((count - i) | MMU_UPDATE_PREEMPTED);
        if continuation::should_preempt(d, u64::from(i)) {
            result = continuation::create([at?, rest, pdone, a[3], 0]);
            break;
        }
        match at
            .and_then(guest::read_obj::<T>)
            .and_then(|item| one(&owner, item))
        {
            Ok(()) => i += 1,
            // The item stopped part way (or waits for another vCPU): issue it again.
            Err(Errno::ERESTART) => {
                result = continuation::create([at?, rest, pdone, a[3], 0]);
                break;
            }
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    // A continuation stands even if the progress cannot be written (Xen's `hcall_preempted`).
    if pdone != 0
        && let Err(e) = guest::write_obj(pdone, &before.wrapping_add(i))
        && !matches!(result, Err(Stop::Then(_)))
    {
        return Err(e.into());
    }
    result
}

fn flush_local() {
    cpu::write_cr3_reload();
}

/// One `mmu_update` request; `owner` owns the frames a new L1 entry may name (the caller's
/// own, or a foreign domain's: `hestia_core::pv_mm::FrameTable::mod_entry_foreign_preemptible`).
fn one_update(d: &Domain, owner: &PgOwner, req: MmuUpdate) -> Result<(), Errno> {
    let (cmd, maddr) = (req.ptr & 7, req.ptr & !7);
    let (mfn, idx) = (Mfn::new(maddr >> 12), ((maddr & 0xfff) / 8) as usize);
    // The level of the table updated, for the errno.
    let mut table_level = 1;
    let pg = match cmd {
        update::NORMAL_PT_UPDATE
        | update::PT_UPDATE_PRESERVE_AD
        | update::PT_UPDATE_NO_TRANSLATE
        | update::MACHPHYS_UPDATE => owner.pg(d)?,
        _ => dom(d),
    };
    match cmd {
        update::NORMAL_PT_UPDATE
        | update::PT_UPDATE_PRESERVE_AD
        | update::PT_UPDATE_NO_TRANSLATE => d
            .mm_op(|ft, mem, pending, budget| {
                let f = *ft.info(mfn).ok_or(MmError::NotATable)?;
                if f.owner != Some(dom(d)) {
                    return Err(MmError::NotATable);
                }
                let mut val = req.val;
                if cmd == update::PT_UPDATE_PRESERVE_AD {
                    val |= mem.read(mfn, idx) & 0x60;
                }
                match (f.ty, f.type_count) {
                    (PageType::Table(level), n) if n > 0 => {
                        table_level = level;
                        let owners = (dom(d), pg);
                        ft.mod_entry_foreign_preemptible(
                            mem, mfn, level, idx, val, owners, pending, budget,
                        )
                    }
                    // A page that may be writable anyway: a plain store.
                    (PageType::Writable, _) | (_, 0) => {
                        mem.write(mfn, idx, req.val);
                        Ok(())
                    }
                    _ => Err(MmError::NotATable),
                }
            })
            .map_err(|e| errno_at(table_level, e)),
        // Written under the frame-table lock that saw the frame owned, so a frame that leaves
        // the domain (balloon, exchange) cannot get its M2P entry back afterwards.
        // Hestia's own read-only frames keep their M2P entries.
        update::MACHPHYS_UPDATE => frametable::with(|ft, _| {
            pg != DOMID_XEN
                && ft.info(mfn).is_some_and(|f| f.owner == Some(pg))
                && frametable::set_m2p(mfn, req.val)
        })
        .filter(|&written| written)
        .map(|_| ())
        .ok_or(Errno::EINVAL),
        _ => Err(Errno::ENOSYS),
    }
}

pub(super) fn do_mmu_update(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Stop> {
    let d = c.domain();
    run_batch(
        d,
        *a,
        |_| Ok(()),
        |owner, req: MmuUpdate| {
            one_update(d, owner, req).inspect_err(|e| {
                crate::gdebug!(
                    d,
                    "{}: mmu_update {:#x} := {:#x} refused ({e:?})",
                    d.id,
                    req.ptr,
                    req.val
                );
            })
        },
    )
}

pub(super) fn do_update_va_mapping(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let d = c.domain();
    let (va, val, flags) = (a[0], a[1], a[2]);
    if !is_guest_range(va, 1) || (HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END).contains(&va) {
        return Err(Errno::EINVAL);
    }
    let l4 = c.vcpu().lock().kernel_l4();
    // An L1 update validates no table, but the vCPU's old tables go first (the frame it maps
    // may be one of them, as when Linux unpins a table and maps its pages writable again).
    d.mm_op(|ft, mem, pending, budget| {
        let (l1, idx) = find_l1(mem, l4, va).map_err(|_| MmError::NotATable)?;
        ft.mod_entry_preemptible(mem, l1, 1, idx, val, dom(d), pending, budget)
    })
    .map_err(errno)?;
    // Beyond the flush type: UVMF_ALL, or a vCPU bitmap pointer (MULTI): other vCPUs too, as
    // a full flush of every CPU running the domain.
    let remote = flags & !uvmf::FLUSHTYPE_MASK != 0;
    match flags & uvmf::FLUSHTYPE_MASK {
        uvmf::INVLPG | uvmf::TLB_FLUSH if remote => {
            smp::flush_guest_tlbs(Flush::Space(d.id.0.into()))
        }
        uvmf::INVLPG => cpu::invlpg(va),
        uvmf::TLB_FLUSH => flush_local(),
        _ => {}
    }
    Ok(0)
}

/// Pins `mfn`, a level-`level` table of `target`, on behalf of `target` (Xen's `pin_page` with
/// a foreign `pg_owner`: the builder pins a new domain's L4): the whole tree is validated as
/// `target`'s tables, the work under way kept in the caller's vCPU. A pin that lands after
/// `target` started dying is dropped again in the same hold of the frame table, as Xen's,
/// because its destruction may have passed the frame ([`Domain::is_dying`] holds before it
/// starts); a domain only shut down may still be pinned for, as in Xen.
fn pin_foreign(d: &Domain, target: &Domain, mfn: Mfn, level: u8) -> Result<(), Errno> {
    let them = dom(target);
    d.mm_op(|ft, mem, pending, budget| {
        ft.pin_preemptible(mem, mfn, level, them, pending, budget)?;
        if target.is_dying() {
            ft.unpin_preemptible(mem, mfn, them, pending, budget)?;
        }
        Ok(())
    })
    .map_err(errno_pin)
}

/// One `mmuext_op`; with a foreign domain only the pins, unpins and page clears and copies
/// act, on its frames, and the operations on the caller's own vCPU are `EPERM`, as in Xen.
fn one_ext(c: Caller<'_>, owner: &PgOwner, op: MmuextOp) -> Result<(), Errno> {
    let d = c.domain();
    let foreign = owner.foreign(d)?;
    if matches!(owner, PgOwner::Xen) {
        // No frame of DOMID_XEN can be pinned, cleared or copied (Xen's type and ownership
        // checks: -EINVAL); the caller's own operations need the caller as owner (-EPERM).
        return Err(match op.cmd {
            ext::PIN_L1_TABLE..=ext::PIN_L4_TABLE
            | ext::UNPIN_TABLE
            | ext::CLEAR_PAGE
            | ext::COPY_PAGE => Errno::EINVAL,
            _ => Errno::EPERM,
        });
    }
    let me = foreign.map_or(dom(d), |f| dom(f));
    match op.cmd {
        ext::PIN_L1_TABLE..=ext::PIN_L4_TABLE => {
            let level = (op.cmd - ext::PIN_L1_TABLE + 1) as u8;
            if let Some(f) = foreign {
                return pin_foreign(d, f, Mfn::new(op.arg1), level);
            }
            d.mm_op(|ft, mem, pending, budget| {
                ft.pin_preemptible(mem, Mfn::new(op.arg1), level, me, pending, budget)
            })
            .map_err(errno_pin)
        }
        ext::UNPIN_TABLE => d
            .mm_op(|ft, mem, pending, budget| {
                ft.unpin_preemptible(mem, Mfn::new(op.arg1), me, pending, budget)
            })
            .map_err(errno_pin),
        ext::CLEAR_PAGE | ext::COPY_PAGE => clear_or_copy(me, op),
        ext::NEW_BASEPTR
        | ext::NEW_USER_BASEPTR
        | ext::TLB_FLUSH_LOCAL..=ext::SET_LDT
        | ext::FLUSH_CACHE_GLOBAL
            if foreign.is_some() =>
        {
            Err(Errno::EPERM)
        }
        _ => one_ext_local(c, op),
    }
}

/// `MMUEXT_CLEAR_PAGE` / `MMUEXT_COPY_PAGE` on frames of `me`: the destination must be
/// writable (untyped or of the writable type), the source merely `me`'s.
fn clear_or_copy(me: u16, op: MmuextOp) -> Result<(), Errno> {
    let (dst, src) = (Mfn::new(op.arg1), Mfn::new(op.arg2));
    frametable::with(|ft, mem| {
        let writable = |m: Mfn| {
            ft.info(m).is_some_and(|f| {
                f.owner == Some(me) && (f.type_count == 0 || f.ty == PageType::Writable)
            })
        };
        if !writable(dst)
            || (op.cmd == ext::COPY_PAGE && ft.info(src).is_none_or(|f| f.owner != Some(me)))
        {
            return Err(Errno::EINVAL);
        }
        for i in 0..512 {
            let v = if op.cmd == ext::COPY_PAGE {
                mem.read(src, i)
            } else {
                0
            };
            mem.write(dst, i, v);
        }
        Ok(())
    })
    .unwrap_or(Err(Errno::EINVAL))
}

/// The `mmuext_op`s that act on the calling vCPU or CPU.
fn one_ext_local(c: Caller<'_>, op: MmuextOp) -> Result<(), Errno> {
    let d = c.domain();
    let me = dom(d);
    match op.cmd {
        ext::NEW_BASEPTR => new_baseptr(d, &mut c.vcpu().lock(), op.arg1),
        ext::NEW_USER_BASEPTR => {
            let mut v = c.vcpu().lock();
            let (new, old) = (op.arg1, v.user_cr3 >> 12);
            if new == old && v.user_cr3 != 0 {
                return Ok(());
            }
            let had = (v.user_cr3 != 0).then_some(old);
            switch_l4(d, had.map(Mfn::new), (new != 0).then_some(Mfn::new(new)))?;
            // Applies the next time user mode is entered.
            v.user_cr3 = new << 12;
            Ok(())
        }
        ext::TLB_FLUSH_LOCAL => {
            flush_local();
            Ok(())
        }
        ext::INVLPG_LOCAL => {
            if is_guest_range(op.arg1, 1) {
                cpu::invlpg(op.arg1);
            }
            Ok(())
        }
        // Other vCPUs' TLBs: every CPU running the domain flushes (a superset of the mask).
        ext::TLB_FLUSH_MULTI | ext::TLB_FLUSH_ALL | ext::INVLPG_MULTI | ext::INVLPG_ALL => {
            smp::flush_guest_tlbs(Flush::Space(d.id.0.into()));
            Ok(())
        }
        ext::SET_LDT => crate::pv::descriptor::set_ldt(me, &mut c.vcpu().lock(), op.arg1, op.arg2),
        ext::FLUSH_CACHE | ext::FLUSH_CACHE_GLOBAL => {
            policy::check(d.rights, Action::CacheFlush)?;
            cpu::wbinvd();
            Ok(())
        }
        ext::MARK_SUPER | ext::UNMARK_SUPER => Err(Errno::EOPNOTSUPP),
        _ => Err(Errno::ENOSYS),
    }
}

pub(super) fn do_mmuext_op(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Stop> {
    let d = c.domain();
    // Xen checks the right to name the foreign domain once, before the first operation.
    let check = |owner: &PgOwner| owner.foreign(d).map(|_| ());
    run_batch(d, *a, check, |owner, op: MmuextOp| one_ext(c, owner, op))
}
