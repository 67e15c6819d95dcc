//! The scheduler's side of domctl: `scheduler_op` (a domain's credit weight and cap) and
//! `set/getvcpuaffinity` (`xen/common/sched/core.c`'s `sched_adjust` and
//! `vcpu_affinity_domctl`), `set/getnodeaffinity`, and the CPU and node bitmaps
//! (`xenctl_bitmap`) they and sysctl exchange. A bitmap the guest says is longer than
//! Hestia's has its extra bytes zeroed, up to 512 MiB of them (`nr_bits` is 32 bits): page by
//! page, preemptibly ([`Resume`]).

use hestia_core::credit::CpuSet;
use hestia_core::ids::VcpuId;
use xen_abi::domctl::{
    NodeAffinity, SchedulerOpCredit, VcpuAffinity, XenctlBitmap, schedop, scheduler, vcpuaffinity,
};
use xen_abi::errno::Errno;

use super::Call;
use crate::hypercall::continuation::Resume;
use crate::mm::guest::GuestRange;
use crate::sched::control;

/// `XEN_DOMCTL_scheduler_op`: read or set the target's weight and cap (the credit scheduler
/// only; `EINVAL` for another scheduler's id or a per-vCPU command, as Xen).
pub(super) fn scheduler_op(c: &mut Call<'_>) -> Result<u64, Errno> {
    let mut op: SchedulerOpCredit = c.arg();
    // Xen copies the structure back whatever the outcome.
    c.copyback = true;
    if op.sched_id != scheduler::CREDIT {
        return Err(Errno::EINVAL);
    }
    let d = c.target()?.clone();
    match op.cmd {
        schedop::GETINFO => {
            (op.weight, op.cap) = control::domain_params(&d.sched)?;
            c.set_arg(&op);
        }
        schedop::PUTINFO => control::set_domain_params(&d.sched, op.weight, op.cap)?,
        _ => return Err(Errno::EINVAL),
    }
    Ok(0)
}

/// `XEN_DOMCTL_setvcpuaffinity` / `getvcpuaffinity`: a vCPU's hard and soft affinity. A set
/// writes back the masks the scheduler then uses (hard: within the online CPUs; soft: within
/// the online CPUs and the hard mask).
pub(super) fn vcpuaffinity(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: VcpuAffinity = c.arg();
    let d = c.target()?.clone();
    if op.vcpu as usize >= d.vcpus.len() {
        return Err(Errno::EINVAL);
    }
    let (want_hard, want_soft) = (
        op.flags & vcpuaffinity::HARD != 0,
        op.flags & vcpuaffinity::SOFT != 0,
    );
    if op.flags == 0
        || (want_hard && op.cpumap_hard.bitmap == 0)
        || (want_soft && op.cpumap_soft.bitmap == 0)
    {
        return Err(Errno::EINVAL);
    }
    let online = control::online_cpus();
    let (mut hard, mut soft) = control::affinity(&d.sched, VcpuId::unvalidated(op.vcpu))?;
    if c.op.cmd == xen_abi::domctl::cmd::SETVCPUAFFINITY {
        if want_hard {
            hard = read_cpumap(&op.cpumap_hard)?;
        }
        if want_soft {
            soft = read_cpumap(&op.cpumap_soft)?;
        }
        control::set_affinity(&d.sched, VcpuId::unvalidated(op.vcpu), hard, soft)?;
        (hard, soft) = (hard.and(online), soft.and(online).and(hard));
    }
    if want_hard {
        write_cpumap(&op.cpumap_hard, hard, &mut c.work)?;
    }
    if want_soft {
        write_cpumap(&op.cpumap_soft, soft, &mut c.work)?;
    }
    Ok(0)
}

/// Bits Hestia's CPU masks hold (`nr_cpu_ids`).
fn nr_cpu_bits() -> u32 {
    crate::arch::x86_64::percpu::online_count().clamp(1, 64)
}

/// Bits a NUMA node mask holds (`MAX_NUMNODES` on x86).
const NR_NODE_BITS: u32 = 64;

/// Reads a CPU mask from the guest.
pub(crate) fn read_cpumap(b: &XenctlBitmap) -> Result<CpuSet, Errno> {
    read_bitmap(b, nr_cpu_bits()).map(CpuSet)
}

/// Writes a CPU mask to the guest (its zeroing part of the call's `work`).
pub(crate) fn write_cpumap(
    b: &XenctlBitmap,
    set: CpuSet,
    work: &mut Resume<'_>,
) -> Result<(), Errno> {
    write_bitmap(b, set.0, nr_cpu_bits(), work)
}

/// `XEN_DOMCTL_setnodeaffinity`: Hestia's host is one node, 0, so the only mask Xen would
/// accept is one holding it (`EINVAL` for a mask disjoint from the online nodes), and the
/// domain's node affinity stays that node.
pub(super) fn setnodeaffinity(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: NodeAffinity = c.arg();
    c.target()?;
    if read_bitmap(&op.nodemap, NR_NODE_BITS)? & 1 == 0 {
        return Err(Errno::EINVAL);
    }
    Ok(0)
}

/// `XEN_DOMCTL_getnodeaffinity`: node 0.
pub(super) fn getnodeaffinity(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: NodeAffinity = c.arg();
    c.target()?;
    write_bitmap(&op.nodemap, 1, NR_NODE_BITS, &mut c.work)?;
    Ok(0)
}

/// Reads a bitmap of up to 64 bits from the guest: as many bytes as both sides have, bits
/// past the guest's `nr_bits` cleared (Xen's `xenctl_bitmap_to_bitmap`).
fn read_bitmap(b: &XenctlBitmap, nbits: u32) -> Result<u64, Errno> {
    let guest_bytes = b.nr_bits.div_ceil(8) as usize;
    let copy = guest_bytes.min(nbits.div_ceil(8) as usize);
    let mut bytes = [0u8; 8];
    let dst = bytes.get_mut(..copy).ok_or(Errno::EINVAL)?;
    if copy != 0 {
        GuestRange::new(b.bitmap, copy)?.read(dst)?;
        if !b.nr_bits.is_multiple_of(8) && guest_bytes == copy {
            bytes[copy - 1] &= !(0xffu8 << (b.nr_bits % 8));
        }
    }
    let mask = if nbits >= 64 {
        u64::MAX
    } else {
        (1u64 << nbits) - 1
    };
    Ok(u64::from_le_bytes(bytes) & mask)
}

/// Zeroes a long bitmap's tail this many bytes at a time (one unit of [`Resume`]).
const ZERO_CHUNK: usize = 4096;
static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];

/// Writes a bitmap of `nbits` (at most 64) bits to the guest: as many bytes as both sides
/// have, then the rest of the guest's bytes zeroed as part of the call's `work` (Xen's
/// `bitmap_to_xenctl_bitmap`, which zeroes them in one go). A resumed pass writes the first
/// bytes again, and goes on zeroing where the last one stopped.
fn write_bitmap(
    b: &XenctlBitmap,
    bits: u64,
    nbits: u32,
    work: &mut Resume<'_>,
) -> Result<(), Errno> {
    let guest_bytes = u64::from(b.nr_bits.div_ceil(8));
    let ours = bits.to_le_bytes();
    let copy = guest_bytes.min(u64::from(nbits.div_ceil(8)));
    if guest_bytes == 0 {
        return Ok(());
    }
    let first = ours.get(..copy as usize).ok_or(Errno::EINVAL)?;
    GuestRange::new(b.bitmap, first.len())?.write(first)?;
    let tail = guest_bytes - copy;
    let chunk = ZERO_CHUNK as u64;
    work.run(tail.div_ceil(chunk), |i| {
        let off = i * chunk;
        let n = (tail - off).min(chunk) as usize;
        let addr = b.bitmap.checked_add(copy + off).ok_or(Errno::EFAULT)?;
        GuestRange::new(addr, n)?.write(ZEROS.get(..n).ok_or(Errno::EINVAL)?)
    })
}
