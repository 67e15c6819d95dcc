//! What libxenguest's PV save and restore (`xc_domain_save`/`xc_domain_restore`, Xen 4.17
//! `tools/libs/guest/xg_sr_*_x86_pv.c`) read and write besides memory and `vcpu_guest_context`:
//! the type of each frame (`getpageframeinfo3`, so page tables are saved with frame numbers
//! made guest-relative and pinned again on restore), a vCPU's extra state (`get/
//! set_ext_vcpucontext`), its XSAVE state (`get/setvcpuextstate`) and its MSRs (`get/
//! set_vcpu_msrs`), and `shadow_op`, which the save issues to leave log-dirty mode when it ends.
//! Semantics, order of checks and errnos are Xen 4.17's `arch_do_domctl` (xen/arch/x86/domctl.c).
//!
//! Every value is the caller's: vCPU ids are checked against the domain's vCPUs, lengths
//! against Xen's limits before anything is allocated or copied, frame numbers looked up in the
//! frame table (a frame not the domain's is `XTAB`, never an error).
//!
//! Pausing: Xen pauses the one vCPU (`vcpu_pause`) around a read and the domain around a write.
//! Hestia pauses the target domain around both (`crate::domain::life::domain_pause`), except
//! for a read of another vCPU of the caller's own domain, which sees the state that vCPU last
//! saved (Hestia has no single-vCPU pause, as `super::vcpu_context`); a write to the caller's
//! own domain is `EINVAL` (Xen's `domain_pause` would refuse it as well for set_ext_vcpucontext;
//! for setvcpuextstate and set_vcpu_msrs, which Xen allows on another vCPU of the caller, this
//! is a Hestia difference no toolstack meets: it never restores into itself).
//!
//! Hestia keeps no 32-bit SYSENTER/SYSCALL callbacks (`crate::hypercall::traps` accepts and drops
//! them: no 32-bit user code runs), so they read as 0 and a restore's are accepted and dropped.
//! Its vCPUs' XSAVE areas always cover every component Hestia enables for guests, so that mask
//! stands for Xen's `xcr0_accum`. It has no shadow paging and no log-dirty mode: `shadow_op`
//! answers OFF and GET_ALLOCATION as Xen does for a PV domain that never enabled either, the
//! rest -EOPNOTSUPP (live migration is not supported).

use alloc::vec::Vec;

use hestia_core::ids::Mfn;
use hestia_core::pv_mm::PageType;
use hestia_core::xstate::{self, ExtState, ExtStateError};
use xen_abi::domctl::{
    ExtVcpuContext, GetPageFrameInfo3, ShadowOp, VcpuExtState, VcpuMsr, VcpuMsrs, pfinfo, shadow_op,
};
use xen_abi::errno::Errno;

use super::Call;
use crate::arch::x86_64::fpu::{self, FpuState};
use crate::domain::life;
use crate::mm::{frametable, guest};
use crate::pv::domain::{Domain, Vcpu};
use crate::pv::msr;

/// Most frames one `getpageframeinfo3` reports (Xen's limit).
const PFINFO_MAX: u64 = 1024;
/// Bytes before the XSAVE image in a `vcpuextstate` buffer: XCR0 and XCR0_ACCUM.
const XSAVE_HDR: u64 = 16;
/// `offsetof(xen_domctl_ext_vcpucontext, vmce)`: the least a set must carry.
const EXT_VCPUCONTEXT_MIN: u32 = 32;

/// `XEN_DOMCTL_getpageframeinfo3`: each machine frame number in the caller's array is replaced
/// by its type in the target (`pfinfo`): a validated page table's level, `LPINTAB` if pinned,
/// `NOTAB` for any other frame of the domain, `XTAB` for a frame not the domain's or one Hestia
/// keeps for it (shared_info, its grant table: Xen's "special" pages). More than 1024 entries
/// -E2BIG; an unreadable or unwritable entry -EFAULT, the entries before it done.
pub(super) fn getpageframeinfo3(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: GetPageFrameInfo3 = c.arg();
    let d = c.target()?;
    if op.num > PFINFO_MAX {
        return Err(Errno::E2BIG);
    }
    for i in 0..op.num {
        let at = op.array.checked_add(i * 8).ok_or(Errno::EFAULT)?;
        let mfn: u64 = guest::read_obj(at)?;
        guest::write_obj(at, &u64::from(frame_type(d, Mfn::new(mfn))))?;
    }
    Ok(0)
}

/// The `pfinfo` type of machine frame `mfn` in `d`.
fn frame_type(d: &Domain, mfn: Mfn) -> u32 {
    if is_special(d, mfn) {
        return pfinfo::XTAB;
    }
    frametable::with(|ft, _| match ft.info(mfn) {
        Some(f) if f.owner == Some(d.id.0) => match f.ty {
            PageType::Table(level) if f.type_count > 0 => {
                let pinned = if f.pinned { pfinfo::LPINTAB } else { 0 };
                (u32::from(level) << pfinfo::LTAB_SHIFT) | pinned
            }
            _ => pfinfo::NOTAB,
        },
        _ => pfinfo::XTAB,
    })
    .unwrap_or(pfinfo::XTAB)
}

/// A frame Hestia holds for `d` (its shared_info, its grant table's frames): the domain owns it
/// but its contents are not the domain's memory.
fn is_special(d: &Domain, mfn: Mfn) -> bool {
    if mfn == d.shared_info_mfn {
        return true;
    }
    let st = d.grant.table.lock();
    st.frames().contains(&mfn) || st.status_frames().contains(&mfn)
}

/// [`on_vcpu`]'s checks alone: vCPU `id` exists in the target (else `missing`) and is not the
/// caller's own as [`on_vcpu`] refuses it (`self_err`); true if the target is the caller.
fn check_vcpu(
    c: &Call<'_>,
    id: u32,
    write: bool,
    (missing, self_err): (Errno, Errno),
) -> Result<bool, Errno> {
    let d = c.target()?;
    d.vcpus.get(id as usize).ok_or(missing)?;
    let own = core::ptr::eq(&**d, c.caller);
    if own && (write || id == c.vcpu.raw()) {
        return Err(self_err);
    }
    Ok(own)
}

/// Runs `f` on vCPU `id` of the target with the target paused (a read of another vCPU of the
/// caller's own domain without: see the module's documentation; a write there -EINVAL). A vCPU
/// the domain does not have is `missing`, the calling vCPU itself `self_err`.
fn on_vcpu<R>(
    c: &Call<'_>,
    id: u32,
    write: bool,
    (missing, self_err): (Errno, Errno),
    f: impl FnOnce(&Domain, &mut Vcpu) -> Result<R, Errno>,
) -> Result<R, Errno> {
    let own = check_vcpu(c, id, write, (missing, self_err))?;
    let d = c.target()?;
    let slot = d.vcpus.get(id as usize).ok_or(missing)?;
    if own {
        return f(d, &mut slot.lock());
    }
    life::domain_pause(d)?;
    let r = f(d, &mut slot.lock());
    life::domain_unpause(d);
    r
}

/// `XEN_DOMCTL_get_ext_vcpucontext` and `set_ext_vcpucontext`. Get: the structure's size, the
/// 32-bit callbacks (none) and the virtual MCA. Set: at least the part before the MCA
/// (-EINVAL), canonical callback addresses (-EINVAL), MCG_CAP within what the vMCE offers plus
/// the bank count and MCG_CTL_P (-EINVAL, as Xen's `vmce_restore_vcpu`); the CTL2 registers are
/// taken. As Xen, a vCPU the domain does not have and the calling vCPU (get) or domain (set)
/// are -ESRCH.
pub(super) fn ext_vcpucontext(c: &mut Call<'_>, set: bool) -> Result<u64, Errno> {
    let evc: ExtVcpuContext = c.arg();
    let errs = (Errno::ESRCH, Errno::ESRCH);
    if !set {
        let got = on_vcpu(c, evc.vcpu, false, errs, |_, v| {
            Ok(ext_context(v, evc.vcpu))
        })?;
        c.set_arg(&got);
        return Ok(0);
    }
    on_vcpu(c, evc.vcpu, true, errs, |_, v| {
        if evc.size < EXT_VCPUCONTEXT_MIN {
            return Err(Errno::EINVAL);
        }
        let canonical = hestia_core::vaddr::canonical;
        if !canonical(evc.sysenter_callback_eip) || !canonical(evc.syscall32_callback_eip) {
            return Err(Errno::EINVAL);
        }
        if evc.mcg_cap & !msr::restorable_mcg_cap() != 0 {
            crate::gdebug!(
                c.caller,
                "{}: restore of MCG_CAP {:#x} for v{} refused",
                c.caller.id,
                evc.mcg_cap,
                evc.vcpu
            );
            return Err(Errno::EINVAL);
        }
        v.mc_ctl2 = [evc.mci_ctl2_bank0, evc.mci_ctl2_bank1];
        Ok(())
    })
    .map(|()| 0)
}

/// The extended context of `v` (vCPU `id`).
fn ext_context(v: &Vcpu, id: u32) -> ExtVcpuContext {
    ExtVcpuContext {
        vcpu: id,
        size: size_of::<ExtVcpuContext>() as u32,
        mcg_cap: msr::guest_mcg_cap(),
        mci_ctl2_bank0: v.mc_ctl2[0],
        mci_ctl2_bank1: v.mc_ctl2[1],
        ..Default::default()
    }
}

/// `XEN_DOMCTL_getvcpuextstate`: with no size and no mask, or no buffer, the query for the
/// buffer needed (Hestia's guest XCR0 mask and 16 bytes plus its area); else XCR0, XCR0_ACCUM
/// and the XSAVE image, -EINVAL if the buffer is shorter or the mask is not the one the query
/// gave. The structure goes back whatever the result, as Xen. A vCPU the domain does not have
/// -ESRCH, the calling vCPU -EINVAL.
pub(super) fn getvcpuextstate(c: &mut Call<'_>) -> Result<u64, Errno> {
    let mut evc: VcpuExtState = c.arg();
    c.copyback = true;
    let (mask, area) = FpuState::guest_features();
    let need = XSAVE_HDR + if mask == 0 { 0 } else { area as u64 };
    let query = (evc.size == 0 && evc.xfeature_mask == 0) || evc.buffer == 0;
    let errs = (Errno::ESRCH, Errno::EINVAL);
    let r = on_vcpu(c, evc.vcpu, false, errs, |_, v| {
        if query {
            return Ok(());
        }
        if evc.size < need || evc.xfeature_mask != mask {
            return Err(Errno::EINVAL);
        }
        let (xcr0, image) = v.fpu.guest_xsave();
        guest::write_obj(evc.buffer, &[xcr0, mask])?;
        if mask != 0 {
            let at = evc.buffer.checked_add(XSAVE_HDR).ok_or(Errno::EFAULT)?;
            guest::GuestRange::new(at, image.len())?.write(image)?;
        }
        Ok(())
    });
    if r.is_ok() {
        if query {
            evc.xfeature_mask = mask;
        }
        evc.size = need;
    }
    c.set_arg(&evc);
    r.map(|()| 0)
}

/// `XEN_DOMCTL_setvcpuextstate`: the vCPU takes XCR0 and the XSAVE image in the buffer, as
/// `hestia_core::xstate::check_ext_state` accepts them (Xen's checks and errnos); a buffer of
/// the two words only changes nothing. A vCPU the domain does not have -ESRCH, the caller's own
/// domain -EINVAL, a buffer that cannot be read -EFAULT.
pub(super) fn setvcpuextstate(c: &mut Call<'_>) -> Result<u64, Errno> {
    let evc: VcpuExtState = c.arg();
    let (mask, area) = FpuState::guest_features();
    let size = |m: u64| if m == 0 { 0 } else { fpu::xsave_size(m) };
    let errs = (Errno::ESRCH, Errno::EINVAL);
    // The vCPU id and the caller are checked before the buffer is looked at, as Xen.
    check_vcpu(c, evc.vcpu, true, errs)?;
    if evc.size < XSAVE_HDR || evc.size > XSAVE_HDR + area as u64 {
        return Err(Errno::EINVAL);
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(evc.size as usize)
        .map_err(|_| Errno::ENOMEM)?;
    buf.resize(evc.size as usize, 0);
    guest::GuestRange::new(evc.buffer, buf.len())?.read(&mut buf)?;
    let state = xstate::check_ext_state(&buf, mask, size).map_err(|e| match e {
        ExtStateError::Invalid => Errno::EINVAL,
        ExtStateError::Unsupported => Errno::EOPNOTSUPP,
        ExtStateError::ReservedHeader => Errno::EIO,
    })?;
    let ExtState::Load { xcr0, image } = state else {
        return Ok(0);
    };
    on_vcpu(c, evc.vcpu, true, errs, |_, v| {
        v.fpu.set_guest_xsave(xcr0, image);
        Ok(0)
    })
}

/// The MSRs Xen 4.17 saves for a PV vCPU (`msrs_to_send`): SPEC_CTRL, MISC_FEATURES_ENABLES,
/// TSC_AUX and AMD's four debug address masks.
const MSRS_TO_SEND: [u32; 7] = [
    0x48,
    0x140,
    0xc000_0103,
    0xc001_1027,
    0xc001_1019,
    0xc001_101a,
    0xc001_101b,
];

/// The most entries a get may return (Xen's `nr_msrs`: four more where the CPU has DBEXT).
fn nr_msrs() -> u32 {
    let dbext = crate::arch::x86_64::cpu::cpuid(0x8000_0001, 0).ecx & (1 << 26) != 0;
    MSRS_TO_SEND.len() as u32 + if dbext { 4 } else { 0 }
}

/// `XEN_DOMCTL_get_vcpu_msrs` and `set_vcpu_msrs`, as Xen: get with a null buffer gives the
/// most entries there can be; else each MSR of Xen's list the vCPU can read and that is not 0,
/// -ENOBUFS (with the count needed) if they do not fit. Set: more entries than that -EINVAL;
/// each must be one of the list with its reserved word 0, and the vCPU's WRMSR must take it,
/// else -EINVAL with the count of those taken before it written back. A vCPU the domain does
/// not have -ESRCH, the calling vCPU (get) or domain (set) -EINVAL.
pub(super) fn vcpu_msrs(c: &mut Call<'_>, set: bool) -> Result<u64, Errno> {
    let mut op: VcpuMsrs = c.arg();
    let errs = (Errno::ESRCH, Errno::EINVAL);
    if !set {
        if op.msrs == 0 {
            on_vcpu(c, op.vcpu, false, errs, |_, _| Ok(()))?;
            op.msr_count = nr_msrs();
            c.set_arg(&op);
            return Ok(0);
        }
        let (found, r) = on_vcpu(c, op.vcpu, false, errs, |d, v| {
            let mut found = 0u32;
            let mut r = Ok(());
            for index in MSRS_TO_SEND {
                let Ok(value) = msr::read(d, v, index) else {
                    continue;
                };
                if value == 0 {
                    continue;
                }
                if found < op.msr_count && r.is_ok() {
                    let e = VcpuMsr {
                        index,
                        reserved: 0,
                        value,
                    };
                    r = op
                        .msrs
                        .checked_add(u64::from(found) * 16)
                        .ok_or(Errno::EFAULT)
                        .and_then(|at| guest::write_obj(at, &e));
                }
                found += 1;
            }
            Ok((found, r))
        })?;
        let r = r.and(if found > op.msr_count {
            Err(Errno::ENOBUFS)
        } else {
            Ok(())
        });
        op.msr_count = found;
        c.set_arg(&op);
        return r.map(|()| 0);
    }
    let done = on_vcpu(c, op.vcpu, true, errs, |d, v| {
        if op.msr_count > nr_msrs() {
            return Err(Errno::EINVAL);
        }
        for i in 0..op.msr_count {
            let at = op.msrs.checked_add(u64::from(i) * 16).ok_or(Errno::EFAULT);
            let taken = match at.and_then(guest::read_obj::<VcpuMsr>) {
                Ok(e) => {
                    e.reserved == 0
                        && MSRS_TO_SEND.contains(&e.index)
                        && msr::write(d, v, e.index, e.value).is_ok()
                }
                Err(e) => return Ok(Some((i, e))),
            };
            if !taken {
                return Ok(Some((i, Errno::EINVAL)));
            }
        }
        Ok(None)
    })?;
    let Some((taken, e)) = done else {
        return Ok(0);
    };
    op.msr_count = taken;
    c.set_arg(&op);
    Err(e)
}

/// `XEN_DOMCTL_shadow_op` for a domain that never has shadow paging or log-dirty mode: the
/// caller itself -EINVAL, a dying domain 0 (as Xen, before looking at the sub-op), OFF 0,
/// GET_ALLOCATION a pool of 0 MiB, anything else -EOPNOTSUPP.
pub(super) fn shadow_op(c: &mut Call<'_>) -> Result<u64, Errno> {
    let mut op: ShadowOp = c.arg();
    let dying = c.other_target()?.is_dying();
    c.copyback = true;
    if dying {
        return Ok(0);
    }
    match op.op {
        shadow_op::OFF => Ok(0),
        shadow_op::GET_ALLOCATION => {
            op.mb = 0;
            c.set_arg(&op);
            Ok(0)
        }
        _ => Err(Errno::EOPNOTSUPP),
    }
}
