//! `vcpu_op` (hypercall 24) and `set_timer_op` (15), `shared/xen-abi.md` 6.3, 6.4: bringing
//! vCPUs up and down (`pv::vcpus`), their state queries (runstate from the scheduler), timers
//! (`pv::events::VcpuTimers`) and memory areas. As in Xen, the one-shot timer is the calling
//! vCPU's only (another's is -EINVAL); the periodic timer of a vCPU that is down is recorded
//! and starts with it, and that of another vCPU that is up is -EINVAL (Linux never asks that;
//! Xen would allow it).

use core::sync::atomic::Ordering;

use hestia_core::ids::{Mfn, VcpuId};
use xen_abi::errno::Errno;
use xen_abi::vcpu::cmd::*;

use super::Caller;
use crate::arch::x86_64::{acpi, percpu, tsc};
use crate::mm::{frametable, guest, phys_to_virt};
use crate::pv::domain::Vcpu;
use crate::pv::{events, vcpus};
use crate::sched;

/// Shortest period accepted by `SET_PERIODIC_TIMER`.
const MIN_PERIOD_NS: u64 = 1_000_000;
/// Longest period accepted by `SET_PERIODIC_TIMER` (Xen's `STIME_DELTA_MAX`).
const MAX_PERIOD_NS: u64 = u64::MAX >> 2;

pub(super) fn do_vcpu_op(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let d = c.domain();
    let (cmd, vcpu, arg) = (a[0] as u32, a[1] as u32, a[2]);
    let vid = VcpuId::unvalidated(vcpu);
    let Some(v) = d.vcpus.get(vcpu as usize) else {
        return Err(Errno::ENOENT);
    };
    let other = vcpu != c.vcpu_id().raw();
    if other && matches!(cmd, SET_SINGLESHOT_TIMER | STOP_SINGLESHOT_TIMER) {
        return Err(Errno::EINVAL);
    }
    match cmd {
        INITIALISE => vcpus::initialise(d, vid, arg).map(|()| 0),
        UP => vcpus::up(d, vid).map(|()| 0),
        IS_UP => Ok(u64::from(v.lock().up)),
        // Any vCPU of the domain (Linux downs itself); the last one powers the domain off.
        DOWN => vcpus::down(d, vid).map(|()| 0),
        GET_PHYSID => {
            let p = percpu::cpu(vcpu).ok_or(Errno::EINVAL)?;
            let acpi = acpi::acpi_id(p.apic_id).unwrap_or(0);
            guest::write_obj(arg, &(u64::from(acpi) << 32 | u64::from(p.apic_id))).map(|()| 0)
        }
        GET_RUNSTATE_INFO => {
            let info = sched::runstate_info(&d.sched, vid).ok_or(Errno::ENOENT)?;
            guest::write_obj(arg, &info).map(|()| 0)
        }
        REGISTER_RUNSTATE_MEMORY_AREA => {
            let [addr]: [u64; 1] = guest::read_obj(arg)?;
            // Written at once when it is the caller's (its tables are loaded), otherwise at the
            // vCPU's next switch; as Xen, an address that cannot be written now is not refused.
            if !other && let Some(info) = sched::runstate_info(&d.sched, vid) {
                guest::write_obj(addr, &info)?;
            }
            v.lock().runstate_area = addr;
            Ok(0)
        }
        SET_PERIODIC_TIMER => {
            let [period]: [u64; 1] = guest::read_obj(arg)?;
            if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&period) {
                return Err(Errno::EINVAL);
            }
            set_periodic(v, other, period)
        }
        STOP_PERIODIC_TIMER => set_periodic(v, other, 0),
        SET_SINGLESHOT_TIMER => {
            let [deadline, _flags]: [u64; 2] = guest::read_obj(arg)?;
            // Current Xen ignores VCPU_SSHOTTMR_future and fires at once if the time passed;
            // its deadlines are signed, so one past 2^63 is in the past too.
            let deadline = if deadline > i64::MAX as u64 {
                1
            } else {
                deadline.max(1)
            };
            let me = crate::pv::current_ref().ok_or(Errno::EINVAL)?;
            events::set_singleshot(&me, &mut v.lock(), deadline);
            Ok(0)
        }
        STOP_SINGLESHOT_TIMER => {
            let me = crate::pv::current_ref().ok_or(Errno::EINVAL)?;
            events::set_singleshot(&me, &mut v.lock(), 0);
            Ok(0)
        }
        REGISTER_VCPU_INFO => {
            let [mfn, offset]: [u64; 2] = guest::read_obj(arg)?;
            register_vcpu_info(c, vid, Mfn::new(mfn), offset & 0xffff_ffff).map(|()| 0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Sets vCPU `v`'s periodic timer: its own (re-armed at once), or (`other`) any other vCPU's,
/// up or down, as Xen allows (Linux's resume from a save stops every online vCPU's from vCPU 0,
/// `xen_timer_resume`). Another vCPU's new period is stored under its lock: a timer armed on
/// its CPU fires once more at the old time and then keeps the new period, or stops (at most one
/// tick more than Xen, which re-arms at once); a vCPU not on a CPU arms it when switched in.
fn set_periodic(v: &spin::Mutex<Vcpu>, other: bool, period: u64) -> Result<u64, Errno> {
    let me = if other {
        None
    } else {
        Some(crate::pv::current_ref().ok_or(Errno::EINVAL)?)
    };
    events::set_periodic(me.as_ref(), &mut v.lock(), period);
    Ok(0)
}

/// Moves vCPU `vcpu`'s `vcpu_info` to byte `offset` of the domain's frame `mfn` (once), as
/// Xen's `map_vcpu_info`: only the caller's own or a vCPU that is down, the frame takes a
/// writable type reference for good, the current contents are copied, and every event is
/// marked pending so none is lost in the move.
fn register_vcpu_info(c: Caller<'_>, vcpu: VcpuId, mfn: Mfn, offset: u64) -> Result<(), Errno> {
    const SIZE: u64 = size_of::<xen_abi::xen::VcpuInfo>() as u64;
    let d = c.domain();
    // Past the page or not aligned for the structure is -ENXIO, as in Xen.
    if offset > 4096 - SIZE || !offset.is_multiple_of(8) {
        return Err(Errno::ENXIO);
    }
    let slot = d.vcpu_info.get(vcpu.index()).ok_or(Errno::ENOENT)?;
    if slot.load(Ordering::Acquire) != 0 {
        return Err(Errno::EINVAL);
    }
    // Another vCPU must be down, and stays down until the move is done (its lock is held):
    // a vCPU that runs reads its `vcpu_info` through the address its CPU published when it
    // was loaded (`pv::events::before_guest_return`).
    let own = vcpu == c.vcpu_id();
    let v = d.vcpus.get(vcpu.index()).ok_or(Errno::ENOENT)?.lock();
    if !own && v.up {
        return Err(Errno::EINVAL);
    }
    frametable::get_writable_page(mfn, d.id.0)?;
    let new = phys_to_virt(mfn.addr()) + offset;
    let shared = d.shared();
    let mut info = [0u8; SIZE as usize];
    shared.copy_vcpu_info(vcpu, &mut info);
    // SAFETY: `new` is 64 bytes inside a frame of this domain that now holds a writable type
    // reference (never a page table, never freed while registered), mapped by the direct map.
    unsafe { core::ptr::copy_nonoverlapping(info.as_ptr(), new as *mut u8, info.len()) };
    slot.store(new, Ordering::Release);
    if own {
        percpu::set_return_check(new);
    }
    drop(v);
    d.shared().mark_all_pending(vcpu);
    Ok(())
}

/// `set_timer_op`: the one-shot timer at absolute time `a[0]` (0 cancels). Xen's Linux
/// workaround is kept: a deadline that is negative as a signed value, or more than 2^50 ns
/// (about 13 days) ahead, fires in 100 ms instead.
pub(super) fn do_set_timer_op(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    const HUGE_AHEAD_NS: u64 = 1 << 50;
    const HUGE_FIRES_IN_NS: u64 = 100_000_000;
    let now = tsc::uptime_ns();
    let deadline = match a[0] {
        0 => 0,
        t if t > i64::MAX as u64 || t.saturating_sub(now) >= HUGE_AHEAD_NS => {
            now.saturating_add(HUGE_FIRES_IN_NS)
        }
        t => t,
    };
    let me = crate::pv::current_ref().ok_or(Errno::EINVAL)?;
    events::set_singleshot(&me, &mut c.vcpu().lock(), deadline);
    Ok(0)
}
