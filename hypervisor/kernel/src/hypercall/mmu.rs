//! The PV MMU hypercalls: `mmu_update` (1), `update_va_mapping` (14), `mmuext_op` (26).
//! `shared/xen-abi.md` 5.1-5.3. The rules live in `hestia_core::pv_mm`; this module decodes
//! requests, walks the guest's tables to find the L1 behind a virtual address, and flushes.
//!
//! TLB policy, as Xen's: the guest's own translations are flushed when it asks (UVMF flags,
//! MMUEXT flush ops); what isolation needs (no stale translation when a frame changes type or
//! leaves the domain) the frame table enforces itself, flushing every CPU first
//! (`hestia_core::pv_mm` invariant 5). Batches of any length are preemptible
//! ([`super::continuation`]); `*pdone` accumulates across the resumed calls, as in Xen.

use hestia_core::pv_mm::{MmError, PageType, PtMemory, pte};
use xen_abi::errno::Errno;
use xen_abi::mmu::{MMU_UPDATE_PREEMPTED, MmuUpdate, MmuextOp, ext, update, uvmf};
use xen_abi::xen::{DOMID_IO, DOMID_SELF, HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};
use zerocopy::{FromBytes, IntoBytes};

use super::continuation;
use crate::arch::x86_64::{cpu, smp};
use crate::mm::frametable::{self, DirectMem};
use crate::mm::guest::{self, is_guest_range};
use crate::pv::domain::{Domain, Vcpu};

/// Errno for a refused entry update, as Xen answers: a target frame the guest may not use in
/// that way (typed, foreign, free) is -EBUSY; a malformed entry or a bad table is -EINVAL.
fn errno(e: MmError) -> Errno {
    match e {
        MmError::TypeConflict | MmError::NotOwner | MmError::Overflow => Errno::EBUSY,
        MmError::NoIoAccess => Errno::EPERM,
        _ => Errno::EINVAL,
    }
}

/// Errno for a refused pin, unpin or base-pointer change: always -EINVAL, as Xen.
fn errno_pin(_e: MmError) -> Errno {
    Errno::EINVAL
}

fn dom(d: &Domain) -> u16 {
    d.id.0
}

/// Checks `foreigndom`: the caller itself, or `DOMID_IO` for a privileged caller (its I/O
/// frames are checked against its I/O-memory set either way); foreign mappings need a toolstack.
fn check_foreigndom(d: &Domain, foreigndom: u64) -> Result<(), Errno> {
    let fd = (foreigndom & 0xffff) as u16;
    let pfd = (foreigndom >> 16) as u16;
    let own = fd == DOMID_SELF || fd == dom(d) || (fd == DOMID_IO && d.privileged);
    if !own || (pfd != 0 && pfd != dom(d) + 1) {
        return Err(Errno::ESRCH);
    }
    Ok(())
}

/// Runs the `mmu_update` / `mmuext_op` batch `a` = (list, count, pdone, foreigndom) of `T`s,
/// `one` per item, stopping at the first failure. Bit 31 of the count marks a resumed call:
/// `*pdone` then holds the items already done, and it gets the running total either way.
fn run_batch<T: FromBytes + IntoBytes>(
    d: &Domain,
    a: [u64; 5],
    mut one: impl FnMut(T) -> Result<(), Errno>,
) -> Result<u64, Errno> {
    let (list, raw, pdone) = (a[0], a[1] as u32, a[2]);
    check_foreigndom(d, a[3])?;
    let count = raw & !MMU_UPDATE_PREEMPTED;
    let before: u32 = if raw & MMU_UPDATE_PREEMPTED != 0 && pdone != 0 {
        guest::read_obj(pdone)?
    } else {
        0
    };
    let size = size_of::<T>() as u64;
    let mut result = Ok(0);
    let mut i = 0;
    while i < count {
        let at = list.checked_add(u64::from(i) * size).ok_or(Errno::EFAULT);
        if continuation::should_preempt(d, u64::from(i)) {
            let rest = u64::from((count - i) | MMU_UPDATE_PREEMPTED);
            result = continuation::create([at?, rest, pdone, a[3], 0]);
            break;
        }
        if let Err(e) = at.and_then(guest::read_obj::<T>).and_then(&mut one) {
            result = Err(e);
            break;
        }
        i += 1;
    }
    if pdone != 0 {
        guest::write_obj(pdone, &before.wrapping_add(i))?;
    }
    result
}

fn flush_local() {
    cpu::write_cr3_reload();
}

/// One `mmu_update` request.
fn one_update(d: &Domain, req: MmuUpdate) -> Result<(), Errno> {
    let (cmd, maddr) = (req.ptr & 7, req.ptr & !7);
    let (mfn, idx) = (maddr >> 12, ((maddr & 0xfff) / 8) as usize);
    match cmd {
        update::NORMAL_PT_UPDATE
        | update::PT_UPDATE_PRESERVE_AD
        | update::PT_UPDATE_NO_TRANSLATE => frametable::with(|ft, mem| {
            let f = *ft.info(mfn).ok_or(Errno::EINVAL)?;
            if f.owner != Some(dom(d)) {
                return Err(Errno::EINVAL);
            }
            let mut val = req.val;
            if cmd == update::PT_UPDATE_PRESERVE_AD {
                val |= mem.read(mfn, idx) & 0x60;
            }
            match (f.ty, f.type_count) {
                (PageType::Table(level), n) if n > 0 => ft
                    .mod_entry(mem, mfn, level, idx, val, dom(d))
                    .map_err(errno),
                // A page that may be writable anyway: a plain store.
                (PageType::Writable, _) | (_, 0) => {
                    mem.write(mfn, idx, req.val);
                    Ok(())
                }
                _ => Err(Errno::EINVAL),
            }
        })
        .unwrap_or(Err(Errno::EINVAL)),
        update::MACHPHYS_UPDATE => {
            let owned =
                frametable::with(|ft, _| ft.info(mfn).is_some_and(|f| f.owner == Some(dom(d))))
                    .unwrap_or(false);
            if owned && frametable::set_m2p(mfn, req.val) {
                Ok(())
            } else {
                Err(Errno::EINVAL)
            }
        }
        _ => Err(Errno::ENOSYS),
    }
}

pub(super) fn do_mmu_update(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    run_batch(d, a, |req: MmuUpdate| {
        one_update(d, req).inspect_err(|e| {
            crate::gdebug!(
                d,
                "{}: mmu_update {:#x} := {:#x} refused ({e:?})",
                d.id,
                req.ptr,
                req.val
            );
        })
    })
}

/// Finds the L1 frame and index that map `va` in the page tables rooted at `l4_mfn`.
pub(crate) fn find_l1(mem: &DirectMem, l4_mfn: u64, va: u64) -> Result<(u64, usize), Errno> {
    let mut t = l4_mfn;
    for level in [4u32, 3, 2] {
        let e = mem.read(t, ((va >> (12 + 9 * (level - 1))) & 511) as usize);
        if e & pte::P == 0 || e & pte::PS != 0 {
            return Err(Errno::EINVAL);
        }
        t = (e & pte::ADDR) >> 12;
    }
    Ok((t, ((va >> 12) & 511) as usize))
}

pub(super) fn do_update_va_mapping(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    let (va, val, flags) = (a[0], a[1], a[2]);
    if !is_guest_range(va, 1) || (HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END).contains(&va) {
        return Err(Errno::EINVAL);
    }
    let l4 = d.this_vcpu().lock().kernel_cr3 >> 12;
    frametable::with(|ft, mem| {
        let (l1, idx) = find_l1(mem, l4, va)?;
        ft.mod_entry(mem, l1, 1, idx, val, dom(d)).map_err(errno)
    })
    .unwrap_or(Err(Errno::EINVAL))?;
    // Beyond the flush type: UVMF_ALL, or a vCPU bitmap pointer (MULTI): other vCPUs too, as
    // a full flush of every CPU running the domain.
    let remote = flags & !uvmf::FLUSHTYPE_MASK != 0;
    match flags & uvmf::FLUSHTYPE_MASK {
        uvmf::INVLPG | uvmf::TLB_FLUSH if remote => smp::flush_guest_tlbs(),
        uvmf::INVLPG => cpu::invlpg(va),
        uvmf::TLB_FLUSH => flush_local(),
        _ => {}
    }
    Ok(0)
}

/// Switches `v` (running, in kernel mode) to the L4 at machine frame `new`, which takes an L4
/// type reference from the old one (`MMUEXT_NEW_BASEPTR`, and a guest's `mov` to CR3).
pub(crate) fn new_baseptr(me: u16, v: &mut Vcpu, new: u64) -> Result<(), Errno> {
    let old = v.kernel_cr3 >> 12;
    if new != old {
        frametable::with(|ft, mem| -> Result<(), MmError> {
            ft.get_page(new, me)?;
            if let Err(e) = ft.get_page_type(mem, new, PageType::Table(4), me) {
                ft.put_page(new);
                return Err(e);
            }
            ft.put_page_type(mem, old);
            ft.put_page(old);
            Ok(())
        })
        .unwrap_or(Err(MmError::BadFrame))
        .map_err(errno_pin)?;
        v.kernel_cr3 = new << 12;
    }
    // SAFETY: the new L4 was validated as an L4 of this domain (so it maps only its frames) and
    // carries Hestia's slots 256-271, so Hestia stays mapped.
    unsafe { cpu::write_cr3(new << 12) };
    Ok(())
}

/// One `mmuext_op`.
fn one_ext(d: &Domain, op: MmuextOp) -> Result<(), Errno> {
    let me = dom(d);
    match op.cmd {
        ext::PIN_L1_TABLE..=ext::PIN_L4_TABLE => {
            let level = (op.cmd - ext::PIN_L1_TABLE + 1) as u8;
            frametable::with(|ft, mem| ft.pin(mem, op.arg1, level, me))
                .unwrap_or(Err(MmError::BadFrame))
                .map_err(errno_pin)
        }
        ext::UNPIN_TABLE => frametable::with(|ft, mem| ft.unpin(mem, op.arg1, me))
            .unwrap_or(Err(MmError::BadFrame))
            .map_err(errno_pin),
        ext::NEW_BASEPTR => new_baseptr(me, &mut d.this_vcpu().lock(), op.arg1),
        ext::NEW_USER_BASEPTR => {
            let mut v = d.this_vcpu().lock();
            let (new, old) = (op.arg1, v.user_cr3 >> 12);
            if new == old && v.user_cr3 != 0 {
                return Ok(());
            }
            frametable::with(|ft, mem| -> Result<(), MmError> {
                if new != 0 {
                    ft.get_page(new, me)?;
                    if let Err(e) = ft.get_page_type(mem, new, PageType::Table(4), me) {
                        ft.put_page(new);
                        return Err(e);
                    }
                }
                if v.user_cr3 != 0 {
                    ft.put_page_type(mem, old);
                    ft.put_page(old);
                }
                Ok(())
            })
            .unwrap_or(Err(MmError::BadFrame))
            .map_err(errno_pin)?;
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
            smp::flush_guest_tlbs();
            Ok(())
        }
        ext::CLEAR_PAGE | ext::COPY_PAGE => frametable::with(|ft, mem| {
            let writable = |m: u64| {
                ft.info(m).is_some_and(|f| {
                    f.owner == Some(me) && (f.type_count == 0 || f.ty == PageType::Writable)
                })
            };
            if !writable(op.arg1)
                || (op.cmd == ext::COPY_PAGE
                    && ft.info(op.arg2).is_none_or(|f| f.owner != Some(me)))
            {
                return Err(Errno::EINVAL);
            }
            for i in 0..512 {
                let v = if op.cmd == ext::COPY_PAGE {
                    mem.read(op.arg2, i)
                } else {
                    0
                };
                mem.write(op.arg1, i, v);
            }
            Ok(())
        })
        .unwrap_or(Err(Errno::EINVAL)),
        ext::SET_LDT => super::descriptor::set_ldt(me, &mut d.this_vcpu().lock(), op.arg1, op.arg2),
        ext::FLUSH_CACHE | ext::FLUSH_CACHE_GLOBAL if !d.privileged => Err(Errno::EACCES),
        ext::FLUSH_CACHE | ext::FLUSH_CACHE_GLOBAL => {
            cpu::wbinvd();
            Ok(())
        }
        ext::MARK_SUPER | ext::UNMARK_SUPER => Err(Errno::EOPNOTSUPP),
        _ => Err(Errno::ENOSYS),
    }
}

pub(super) fn do_mmuext_op(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    run_batch(d, a, |op: MmuextOp| one_ext(d, op))
}
