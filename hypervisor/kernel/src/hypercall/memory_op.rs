//! `memory_op` (hypercall 12): reservation queries, the machine's memory map for dom0, where
//! the M2P lives, ballooning (increase/decrease_reservation, populate_physmap) and
//! `XENMEM_exchange`. `shared/xen-abi.md` 6.5; xen/common/memory.c.
//!
//! The toolstack's side (libxenguest's PV builder, xl): the reservation calls and queries on
//! another domain the caller controls (`Action::ForeignMemory`), outstanding claims
//! (`XENMEM_claim_pages`, `domain::claims`) and the pseudo-physical memory map a domU reads back
//! (`XENMEM_set_memory_map`, kept per domain until it dies: `domain::per_domain`).
//!
//! Frames given back must be unused (the frame table checks); frames handed out are zeroed,
//! owned by the domain, and entered in the M2P. A frame leaves the domain in the same hold of
//! the frame-table lock that checks it may (`FrameTable::release`, `FrameTable::steal`), so
//! another vCPU can never map it in between; from then on it belongs to nobody until the
//! allocator has it back. Every frame-table result is acted on: a frame whose state is not the
//! one expected is kept out of the allocator (leaked and logged), never freed while in use.
//! `tot_pages` follows every frame that enters or leaves the domain.
//!
//! The reservation calls are preemptible, resuming at the extent kept in `cmd`'s upper bits;
//! `XENMEM_exchange` resumes from its `nr_exchanged` field, as in Xen.

use core::mem::offset_of;
use core::sync::atomic::Ordering;

use hestia_core::ids::Mfn;
use hestia_core::memmap::{RegionKind, machine_map};
use xen_abi::errno::Errno;
use xen_abi::memory::{
    E820Entry, ForeignMemoryMap, MachphysMapping, MachphysMfnList, MemAcquireResource,
    MemoryDomain, MemoryExchange, MemoryMap, MemoryReservation, VnumaTopologyInfo, cmd, memf,
    resource,
};
use xen_abi::mmu::INVALID_M2P_ENTRY;
use xen_abi::xen::{DOMID_SELF, MACH2PHYS_VIRT_START};

use alloc::vec::Vec;

use super::Caller;
use super::continuation::{self, Stop};
use crate::arch::x86_64::cpu;
use crate::domain::per_domain::PerDomain;
use crate::domain::{self, DomainRef, claims};
use crate::mm::{self, frametable, guest};
use crate::pv::domain::Domain;
use hestia_core::policy::{self, Action};

/// Where `cmd` keeps the extent a preempted reservation call resumes at (Xen's
/// `MEMOP_EXTENT_SHIFT`, internal to the hypervisor).
const EXTENT_SHIFT: u32 = 6;

/// A checked `xen_memory_reservation`: the domain it acts on, extent list, count, order and
/// address limit.
struct Reservation {
    target: DomainRef,
    extents: u64,
    nr: u64,
    order: u32,
    limit: u64,
}

/// Checks a reservation call in Xen's order (`do_memory_op`): the domain named (`DOMID_SELF`,
/// the caller, or one it controls: `Action::ForeignMemory`), the address width, the order.
/// Any failure means "no extent done", which the caller answers.
fn parse_reservation(d: &Domain, r: MemoryReservation) -> Option<Reservation> {
    let target = domain::lookup(d, r.domid).ok()?;
    // XENMEMF_address_bits of 1-12 asks for memory below the first page.
    if (1..=12).contains(&(r.mem_flags & memf::ADDRESS_BITS_MASK)) {
        return None;
    }
    if target.id != d.id && !policy::allows(d.rights, Action::ForeignMemory) {
        return None;
    }
    if r.extent_order > policy::max_extent_order(d.rights) {
        return None;
    }
    Some(Reservation {
        target,
        extents: r.extent_start,
        nr: r.nr_extents,
        order: r.extent_order,
        limit: address_limit(r.mem_flags),
    })
}

/// The allocation limit `XENMEMF_address_bits` in `mem_flags` asks for (0: none).
fn address_limit(mem_flags: u32) -> u64 {
    match mem_flags & memf::ADDRESS_BITS_MASK {
        0 => u64::MAX,
        bits if bits >= 64 => u64::MAX,
        bits => 1 << bits,
    }
}

/// Allocates and zeroes one extent of `order` below `limit`, not yet anyone's; returns its
/// first MFN.
fn alloc_extent(order: u32, limit: u64) -> Option<Mfn> {
    mm::alloc_zeroed_frames(1 << order, 4096 << order, limit).map(|phys| Mfn::new(phys / 4096))
}

/// Gives `d` the `n` frames from `mfn`, fresh from the allocator, in the frame table. False
/// if `d` is dying (checked in the same hold of the frame table, so its destruction, which
/// starts after that is set, finds the frames: Xen's `assign_pages` refuses a dying domain,
/// not one that is only shut down), and if the frame table and the allocator disagree (a Hestia bug: the frames are
/// then kept from everyone, not handed out twice); the caller frees the frames in the first
/// case only.
fn assign_extent(d: &Domain, mfn: Mfn, n: u64) -> Result<(), Leaked> {
    let r = frametable::with(|ft, _| {
        if d.is_dying() {
            return Ok(Err(()));
        }
        ft.assign_range(mfn, n, d.id.0).map(Ok)
    });
    match r {
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(()))) => Err(Leaked(false)),
        r => {
            crate::error!(
                "{}: fresh frames {mfn:#x}+{n} not free in the frame table ({r:?}); leaked",
                d.id
            );
            Err(Leaked(true))
        }
    }
}

/// An extent [`assign_extent`] did not give: `true` if its frames must be kept from everyone.
struct Leaked(bool);

/// Allocates, zeroes and assigns one extent within `d`'s maximum and the claims
/// (`domain::claims`); returns its first MFN.
fn give_extent(d: &Domain, order: u32, limit: u64) -> Option<Mfn> {
    let n = 1u64 << order;
    // Counted first, so vCPUs racing here cannot together pass the maximum.
    d.tot_pages
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
            t.checked_add(n)
                .filter(|&t| t <= d.max_pages.load(Ordering::Acquire))
        })
        .ok()?;
    // Taken within the claims, zeroed outside their lock (an extent may be 1 GiB), given to
    // `d` only once zeroed: no domain ever maps a frame with another's data in it.
    let fresh = claims::alloc_for(d, n, || mm::alloc_frames(n, 4096 << order, limit));
    let mfn = fresh.and_then(|f| {
        let mfn = Mfn::new(f.zeroed() / 4096);
        match assign_extent(d, mfn, n) {
            Ok(()) => Some(mfn),
            Err(Leaked(true)) => None,
            Err(Leaked(false)) => {
                mm::free_frames(mfn.addr(), n);
                None
            }
        }
    });
    if mfn.is_none() {
        d.tot_pages.fetch_sub(n, Ordering::AcqRel);
    }
    mfn
}

/// Takes the frames from `mfn` on from `d` one by one, as Xen's `guest_remove_page`, stopping
/// at the first that cannot go (still used, not `d`'s); the frames taken return to the
/// allocator. Returns how many went.
fn remove_frames(d: &Domain, mfn: Mfn, n: u64) -> u64 {
    let me = d.id.0;
    let removed = frametable::with(|ft, mem| {
        let mut done = 0;
        while done < n
            && mfn
                .raw()
                .checked_add(done)
                .is_some_and(|m| ft.release(mem, Mfn::new(m), me).is_ok())
        {
            done += 1;
        }
        done
    })
    .unwrap_or(0);
    if removed != 0 {
        for j in 0..removed {
            frametable::set_m2p(mfn + j, INVALID_M2P_ENTRY);
        }
        mm::free_frames(mfn.addr(), removed);
        d.tot_pages.fetch_sub(removed, Ordering::AcqRel);
        claims::freed(d, removed);
    }
    removed
}

/// increase_reservation, decrease_reservation, populate_physmap from extent `start` on: as in
/// Xen these return the number of extents done (a bad argument is "none done"), and resume by
/// continuation with that number in `cmd`. The domain named may be another the caller
/// controls (the toolstack building it): its pages, its maximum and claim, its M2P entries;
/// the MFNs go into the caller's list, as Xen's for a PV domain. An extent that cannot be
/// had (no memory, the maximum reached, the domain dying) ends the call with the count done so
/// far, which is how the builder falls back from 2 MiB extents to 4 KiB ones.
fn balloon(d: &Domain, cmd: u32, start: u64, arg: u64) -> Result<u64, Stop> {
    let Ok(r) = guest::read_obj::<MemoryReservation>(arg) else {
        return Ok(start);
    };
    if r.nr_extents > u64::from(u32::MAX >> EXTENT_SHIFT) || start >= r.nr_extents {
        return Ok(start);
    }
    let Some(r) = parse_reservation(d, r) else {
        return Ok(start);
    };
    let t = &*r.target;
    let n = 1u64 << r.order;
    for i in start..r.nr {
        if continuation::should_preempt(d, i - start) {
            return continuation::create([u64::from(cmd) | i << EXTENT_SHIFT, arg, 0, 0, 0]);
        }
        let Some(slot) = r.extents.checked_add(i * 8) else {
            return Ok(i);
        };
        match cmd {
            cmd::DECREASE_RESERVATION => {
                let Ok(mfn) = guest::read_obj::<u64>(slot) else {
                    return Ok(i);
                };
                // As Xen: the frames before one that cannot go are gone; the extent is not
                // counted.
                if remove_frames(t, Mfn::new(mfn), n) != n {
                    return Ok(i);
                }
            }
            _ => {
                let pfn = if cmd == cmd::POPULATE_PHYSMAP {
                    let Ok(pfn) = guest::read_obj::<u64>(slot) else {
                        return Ok(i);
                    };
                    pfn
                } else {
                    0
                };
                let Some(mfn) = give_extent(t, r.order, r.limit) else {
                    return Ok(i);
                };
                if cmd == cmd::POPULATE_PHYSMAP {
                    for j in 0..n {
                        frametable::set_m2p(mfn + j, pfn.wrapping_add(j));
                    }
                }
                if r.extents != 0 && guest::write_obj(slot, &mfn.raw()).is_err() {
                    return Ok(i + 1);
                }
            }
        }
    }
    Ok(r.nr)
}

/// `XENMEM_exchange`: gives up the input extents (frames the domain no longer maps or uses)
/// for newly allocated output extents, which may be larger and under an address limit: how
/// Linux gets machine-contiguous DMA memory below 4 GiB (swiotlb-xen). For a PV guest the
/// output list holds the guest frame numbers to give the new extents on entry and receives
/// their MFNs.
///
/// As Xen's `memory_exchange`, the work goes in chunks of one extent of the larger order
/// (several extents of the smaller): a chunk's input frames are taken from the domain first,
/// all or none, then its output extents allocated; on a failure the input frames go back to
/// the domain and the outputs to the allocator, so each chunk is done wholly or not at all.
/// `nr_exchanged` (IN/OUT) counts the input extents done: the call starts there, stores its
/// progress there on every return but the trivial one, and resumes from it when preempted.
/// Errors as Xen: an order above the maximum -EPERM; inconsistent sizes, a different output
/// domain or `nr_exchanged` beyond the input -EINVAL; lists outside guest space -EFAULT;
/// another domain -ESRCH; an input frame that is not the domain's or still in use -EINVAL; no
/// memory -ENOMEM; a list entry unreadable or unwritable -EFAULT.
fn exchange(d: &Domain, arg: u64) -> Result<u64, Stop> {
    let x: MemoryExchange = guest::read_obj(arg)?;
    let mut nr_exchanged = x.nr_exchanged;
    let result = match Exchange::parse(d, &x) {
        Ok(None) => return Ok(0),
        Ok(Some(x)) => x.run(d, &mut nr_exchanged),
        Err(e) => Err(e),
    };
    let field = offset_of!(MemoryExchange, nr_exchanged) as u64;
    guest::write_obj(arg + field, &nr_exchanged)?;
    match result? {
        Progress::Finished => Ok(0),
        Progress::Preempted => continuation::create([u64::from(cmd::EXCHANGE), arg, 0, 0, 0]),
    }
}

/// Where an exchange call stopped.
enum Progress {
    /// Every input extent was exchanged.
    Finished,
    /// Stopped between chunks; the guest re-issues the call.
    Preempted,
}

/// An empty list with room for `n` entries, or -ENOMEM: a chunk of the largest order holds
/// 2^18 frames (2 MiB of MFNs), a sizeable part of Hestia's heap.
fn room<T>(n: usize) -> Result<Vec<T>, Errno> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
    Ok(v)
}

/// A checked `xen_memory_exchange`.
struct Exchange {
    /// Input extent list, count and order.
    input: (u64, u64, u32),
    /// Output extent list and order (the count follows from the input).
    output: (u64, u32),
    /// Address limit of the output extents.
    limit: u64,
    /// log2 of the input extents in a chunk.
    in_chunk: u32,
    /// log2 of the output extents in a chunk.
    out_chunk: u32,
}

impl Exchange {
    /// Checks the request in Xen's order; `None` when nothing is left to do.
    fn parse(d: &Domain, x: &MemoryExchange) -> Result<Option<Exchange>, Errno> {
        let (in_list, in_nr, in_order) =
            (x.r#in.extent_start, x.r#in.nr_extents, x.r#in.extent_order);
        let (out_list, out_nr, out_order) =
            (x.out.extent_start, x.out.nr_extents, x.out.extent_order);
        let done = x.nr_exchanged;
        if in_order.max(out_order) > policy::max_extent_order(d.rights) {
            return Err(Errno::EPERM);
        }
        if done > in_nr
            || x.r#in.domid != x.out.domid
            || u64::MAX >> in_order < in_nr
            || u64::MAX >> out_order < out_nr
            || in_nr << in_order != out_nr << out_order
        {
            return Err(Errno::EINVAL);
        }
        if done == in_nr {
            return Ok(None);
        }
        let (in_chunk, out_chunk) = (
            out_order.saturating_sub(in_order),
            in_order.saturating_sub(out_order),
        );
        // Both lists, from the first entry still to do to their last, lie in guest space.
        let out_first = (done >> in_chunk) << out_chunk;
        let in_list_ok = list_in_guest(in_list, done, in_nr);
        if !in_list_ok || !list_in_guest(out_list, out_first, out_nr) {
            return Err(Errno::EFAULT);
        }
        domain::only_self(d, x.r#in.domid)?;
        Ok(Some(Exchange {
            input: (in_list, in_nr, in_order),
            output: (out_list, out_order),
            limit: address_limit(x.out.mem_flags),
            in_chunk,
            out_chunk,
        }))
    }

    /// Exchanges the chunks from `*nr_exchanged` on, leaving there how far it got.
    fn run(&self, d: &Domain, nr_exchanged: &mut u64) -> Result<Progress, Errno> {
        let (_, in_nr, in_order) = self.input;
        let first = *nr_exchanged >> self.in_chunk;
        // Frames per chunk, so that preemption is polled by work done.
        let chunk_frames = self.in_chunk + in_order;
        for i in first..in_nr >> self.in_chunk {
            if continuation::should_preempt(d, (i - first) << chunk_frames) {
                *nr_exchanged = i << self.in_chunk;
                return Ok(Progress::Preempted);
            }
            if let Err(e) = self.chunk(d, i) {
                *nr_exchanged = i << self.in_chunk;
                return Err(e);
            }
        }
        *nr_exchanged = in_nr;
        Ok(Progress::Finished)
    }

    /// Exchanges chunk `i`: wholly, or (on an error before its outputs are the domain's) not
    /// at all. An output list entry that cannot be read or written leaves that extent the
    /// domain's, unnamed, and fails the chunk, as in Xen.
    fn chunk(&self, d: &Domain, i: u64) -> Result<(), Errno> {
        let ((in_list, _, in_order), (out_list, out_order)) = (self.input, self.output);
        let me = d.id.0;
        let (in_n, out_n) = (1u64 << in_order, 1u64 << out_order);
        let entry = |list: u64, chunk: u32, j: u64| {
            (i << chunk)
                .checked_add(j)
                .and_then(|n| n.checked_mul(8))
                .and_then(|off| list.checked_add(off))
                .ok_or(Errno::EFAULT)
        };
        let mut extents = room(1 << self.in_chunk)?;
        for j in 0..1u64 << self.in_chunk {
            extents.push(guest::read_obj::<u64>(entry(in_list, self.in_chunk, j)?)?);
        }
        let mut frames = room(1 << (self.in_chunk + in_order))?;
        for &mfn in &extents {
            for k in 0..in_n {
                frames.push(Mfn::new(mfn.checked_add(k).ok_or(Errno::EINVAL)?));
            }
        }
        // Taken from the domain before anything else happens: from here on no vCPU can map
        // them, and a failure gives them back.
        frametable::with(|ft, mem| ft.steal(mem, &frames, me))
            .ok_or(Errno::EINVAL)?
            .map_err(|_| Errno::EINVAL)?;
        let mut outs: Vec<Mfn> = room(1 << self.out_chunk)?;
        for _ in 0..1u64 << self.out_chunk {
            let Some(mfn) = alloc_extent(out_order, self.limit) else {
                for &m in &outs {
                    mm::free_frames(m.addr(), out_n);
                }
                give_back(d, &frames);
                return Err(Errno::ENOMEM);
            };
            outs.push(mfn);
        }
        // Past the point of failure: the inputs go to the allocator, the outputs to the domain.
        for &mfn in &extents {
            for k in 0..in_n {
                frametable::set_m2p(Mfn::new(mfn) + k, INVALID_M2P_ENTRY);
            }
            mm::free_frames(Mfn::new(mfn).addr(), in_n);
        }
        let mut rc = Ok(());
        for (j, &mfn) in (0u64..).zip(&outs) {
            if let Err(Leaked(keep)) = assign_extent(d, mfn, out_n) {
                if !keep {
                    mm::free_frames(mfn.addr(), out_n);
                }
                d.tot_pages.fetch_sub(out_n, Ordering::AcqRel);
                rc = Err(Errno::ENOMEM);
                continue;
            }
            let slot = entry(out_list, self.out_chunk, j);
            let Ok(gpfn) = slot.and_then(guest::read_obj::<u64>) else {
                rc = Err(Errno::EFAULT);
                continue;
            };
            for k in 0..out_n {
                frametable::set_m2p(mfn + k, gpfn.wrapping_add(k));
            }
            if slot.and_then(|s| guest::write_obj(s, &mfn.raw())).is_err() {
                rc = Err(Errno::EFAULT);
            }
        }
        rc
    }
}

/// True if entries `first..end` of the list of 8-byte entries at `list` lie in guest space.
fn list_in_guest(list: u64, first: u64, end: u64) -> bool {
    let start = first.checked_mul(8).and_then(|off| list.checked_add(off));
    let len = end.checked_sub(first).and_then(|n| n.checked_mul(8));
    start
        .zip(len)
        .is_some_and(|(start, len)| guest::is_guest_range(start, len))
}

/// Gives the frames an exchange took back to `d` (no memory for the outputs). Nothing can
/// have claimed them meanwhile; if the frame table says otherwise (a Hestia bug), a frame is
/// kept from everyone and leaves the domain's count.
fn give_back(d: &Domain, frames: &[Mfn]) {
    let me = d.id.0;
    let lost = frametable::with(|ft, _| {
        frames
            .iter()
            .filter(|&&mfn| ft.assign(mfn, me).is_err())
            .count() as u64
    })
    .unwrap_or(frames.len() as u64);
    if lost != 0 {
        crate::error!(
            "{}: {lost} frames of an exchange could not be given back; leaked",
            d.id
        );
        d.tot_pages.fetch_sub(lost, Ordering::AcqRel);
    }
}

/// Frames `XENMEM_acquire_resource` looks up per step (between steps it may be preempted).
const RESOURCE_CHUNK: u64 = 32;

/// `XENMEM_acquire_resource` (Xen's `acquire_resource`): the machine frames of another
/// domain's resource, for the control domain to map with `mmu_update` naming that domain
/// (privcmd's `IOCTL_PRIVCMD_MMAP_RESOURCE`; libxenguest seeds a new domain's grant table
/// this way). Hestia has one resource type, the grant table (its shared entries, id 0, or
/// v2 status frames, id 1); the others are -EOPNOTSUPP. A null list asks for the resource's
/// size. Checks in Xen's order: unreadable -EFAULT; `pad`, or `frame`/`frame + nr_frames`
/// beyond 32 bits, -EINVAL; the domain by id only, -ESRCH (-EPERM for the caller itself);
/// the control right (`XSM_DM_PRIV`) -EPERM; a resource of no frames, a size query with
/// frames or a continuation, or a request past the resource, -EINVAL. Preemptible between
/// steps of [`RESOURCE_CHUNK`] frames, resuming at the frame kept in `cmd`.
fn acquire_resource(d: &Domain, start: u64, arg: u64) -> Result<u64, Stop> {
    let r: MemAcquireResource = guest::read_obj(arg)?;
    if r.pad != 0 || r.frame >> 32 != 0 || (r.frame + u64::from(r.nr_frames)) >> 32 != 0 {
        return Err(Errno::EINVAL.into());
    }
    if r.domid == DOMID_SELF {
        return Err(Errno::ESRCH.into());
    }
    let t = domain::lookup(d, r.domid)?;
    if t.id == d.id {
        return Err(Errno::EPERM.into());
    }
    policy::check(d.rights, Action::ForeignMemory)?;
    if r.r#type != resource::GRANT_TABLE {
        return Err(Errno::EOPNOTSUPP.into());
    }
    let status = match r.id {
        resource::GRANT_TABLE_ID_SHARED => false,
        resource::GRANT_TABLE_ID_STATUS => true,
        _ => return Err(Errno::EINVAL.into()),
    };
    let max = t.grant.table.lock().max_resource_frames(status);
    if max == 0 {
        return Err(Errno::EINVAL.into());
    }
    if r.frame_list == 0 {
        if r.nr_frames != 0 || start != 0 {
            return Err(Errno::EINVAL.into());
        }
        let field = offset_of!(MemAcquireResource, nr_frames) as u64;
        guest::write_obj(arg + field, &max)?;
        return Ok(0);
    }
    let nr = u64::from(r.nr_frames);
    if start >= nr || nr > u64::from(u32::MAX >> EXTENT_SHIFT) {
        return Err(Errno::EINVAL.into());
    }
    let mut done = start;
    while done < nr {
        let todo = (nr - done).min(RESOURCE_CHUNK);
        // Both fit in 32 bits: checked above.
        let first = (r.frame + done) as u32;
        let mfns: Vec<Mfn> = t
            .grant
            .table
            .lock()
            .acquire(t.id.0, status, first, todo as u32)?
            .to_vec();
        for (i, mfn) in (done..).zip(&mfns) {
            let at = r.frame_list.checked_add(i * 8).ok_or(Errno::EFAULT)?;
            guest::write_obj(at, &mfn.raw())?;
        }
        done += todo;
        if done < nr && continuation::should_preempt(d, done - start) {
            let cmd = u64::from(cmd::ACQUIRE_RESOURCE) | done << EXTENT_SHIFT;
            return continuation::create([cmd, arg, 0, 0, 0]);
        }
    }
    Ok(0)
}

/// Most entries of a domain's pseudo-physical memory map (Xen's `E820MAX`).
const E820_MAX: u32 = 1024;

/// Each domain's pseudo-physical memory map, once its toolstack set one.
static MEMORY_MAPS: PerDomain<Vec<E820Entry>> = PerDomain::new();

/// `XENMEM_set_memory_map` (Xen's `arch_memory_op`): sets the pseudo-physical memory map of a
/// domain, which it reads back with `XENMEM_memory_map` (libxl sets a domU's before building
/// it). The domain itself or one the caller controls (`XSM_TARGET`). Errors in Xen's order:
/// the argument unreadable -EFAULT, more than `E820MAX` entries -EINVAL, no such domain -ESRCH,
/// not the caller's to set -EPERM, the entries unreadable -EFAULT.
fn set_memory_map(d: &Domain, arg: u64) -> Result<(), Errno> {
    let m: ForeignMemoryMap = guest::read_obj(arg)?;
    if m.map.nr_entries > E820_MAX {
        return Err(Errno::EINVAL);
    }
    let target = domain::lookup(d, m.domid)?;
    if target.id != d.id {
        policy::check(d.rights, Action::ForeignMemory)?;
    }
    let size = size_of::<E820Entry>() as u64;
    let map = (0..u64::from(m.map.nr_entries))
        .map(|i| {
            let at = m.map.buffer.checked_add(i * size).ok_or(Errno::EFAULT)?;
            guest::read_obj::<E820Entry>(at)
        })
        .collect::<Result<Vec<_>, _>>()?;
    MEMORY_MAPS.with(|maps| maps.set(&target, map));
    Ok(())
}

/// `XENMEM_memory_map`: the caller's pseudo-physical memory map as its toolstack set it, at
/// most `nr_entries` of it, with `nr_entries` set to the count copied; -ENOSYS if none (or an
/// empty one) was set, as Xen, and Linux then assumes one RAM range.
fn memory_map(d: &Domain, arg: u64) -> Result<(), Errno> {
    let m: MemoryMap = guest::read_obj(arg)?;
    let map = MEMORY_MAPS
        .with(|maps| maps.get(d).cloned())
        .filter(|map| !map.is_empty())
        .ok_or(Errno::ENOSYS)?;
    let n = m.nr_entries.min(map.len() as u32);
    let size = size_of::<E820Entry>() as u64;
    for (i, e) in (0u64..).zip(map.iter().take(n as usize)) {
        let at = m.buffer.checked_add(i * size).ok_or(Errno::EFAULT)?;
        guest::write_obj(at, e)?;
    }
    let field = offset_of!(MemoryMap, nr_entries) as u64;
    guest::write_obj(arg + field, &n)
}

/// `XENMEM_claim_pages`: stakes (or, with 0, cancels) a claim on free memory for a domain
/// about to be built (`domain::claims`). Checks in Xen's order: a list or an order or flags
/// given -EINVAL; the domain named by its id (not `DOMID_SELF`), else -EINVAL; the caller
/// must hold the control right (`XSM_PRIV`) -EPERM; then the claim's own rules.
fn claim_pages(d: &Domain, arg: u64) -> Result<(), Errno> {
    let r: MemoryReservation = guest::read_obj(arg)?;
    if r.extent_start != 0 || r.extent_order != 0 || r.mem_flags != 0 {
        return Err(Errno::EINVAL);
    }
    if r.domid == DOMID_SELF {
        return Err(Errno::EINVAL);
    }
    let target = domain::lookup(d, r.domid).map_err(|_| Errno::EINVAL)?;
    policy::check(d.rights, Action::ForeignMemory)?;
    claims::set(&target, r.nr_extents)?;
    crate::gdebug!(
        d,
        "{}: claim for {} set to {} pages ({} claimed in all)",
        d.id,
        target.id,
        r.nr_extents,
        claims::outstanding_total()
    );
    Ok(())
}

/// `XENMEM_get_vnumainfo`: Hestia gives no domain a virtual NUMA topology, so after Xen's
/// checks (the structure readable, -EFAULT; its pad 0, -EINVAL; the domain, by id or
/// `DOMID_SELF`, -ESRCH; itself or, for the control domain, any, -EPERM) the answer is Xen's for
/// a domain without one, -EOPNOTSUPP (libxl's save insists on exactly that).
fn get_vnumainfo(d: &Domain, arg: u64) -> Result<u64, Errno> {
    let t: VnumaTopologyInfo = guest::read_obj(arg)?;
    if t.pad != 0 {
        return Err(Errno::EINVAL);
    }
    let target = domain::lookup(d, t.domid)?;
    if target.id != d.id {
        policy::check(d.rights, Action::ForeignMemory)?;
    }
    Err(Errno::EOPNOTSUPP)
}

fn e820_type(k: RegionKind) -> u32 {
    match k {
        RegionKind::Usable => 1,
        RegionKind::Reserved => 2,
        RegionKind::AcpiReclaimable => 3,
        RegionKind::AcpiNvs => 4,
        RegionKind::Bad => 5,
    }
}

pub(super) fn do_memory_op(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Stop> {
    let d = c.domain();
    let (cmd, start, arg) = (
        (a[0] & ((1 << EXTENT_SHIFT) - 1)) as u32,
        a[0] >> EXTENT_SHIFT,
        a[1],
    );
    let r = match cmd {
        cmd::INCREASE_RESERVATION | cmd::DECREASE_RESERVATION | cmd::POPULATE_PHYSMAP => {
            return balloon(d, cmd, start, arg);
        }
        cmd::ACQUIRE_RESOURCE => return acquire_resource(d, start, arg),
        // Only the reservation calls resume part way; the architecture's calls see a command
        // they do not know.
        cmd::EXCHANGE
        | cmd::MAXIMUM_RAM_PAGE
        | cmd::CURRENT_RESERVATION
        | cmd::MAXIMUM_RESERVATION
        | cmd::MAXIMUM_GPFN
        | cmd::CLAIM_PAGES
        | cmd::GET_VNUMAINFO
            if start != 0 =>
        {
            Err(Errno::EINVAL)
        }
        _ if start != 0 => Err(Errno::ENOSYS),
        cmd::EXCHANGE => return exchange(d, arg),
        cmd::MAXIMUM_RAM_PAGE => Ok(frametable::nr_frames()),
        cmd::CURRENT_RESERVATION | cmd::MAXIMUM_RESERVATION | cmd::MAXIMUM_GPFN => {
            // The domain itself or one the caller controls (`xsm_memory_stat_reservation`,
            // `XSM_TARGET`).
            let MemoryDomain { domid } = guest::read_obj(arg)?;
            let t = domain::lookup(d, domid)?;
            if t.id != d.id {
                policy::check(d.rights, Action::ForeignMemory)?;
            }
            Ok(match cmd {
                cmd::CURRENT_RESERVATION => t.tot_pages.load(Ordering::Acquire),
                cmd::MAXIMUM_RESERVATION => t.max_pages.load(Ordering::Acquire),
                _ => t.nr_pages().max(1) - 1,
            })
        }
        cmd::MACHPHYS_MAPPING => {
            let m = MachphysMapping {
                v_start: MACH2PHYS_VIRT_START,
                v_end: MACH2PHYS_VIRT_START + (1 << 38),
                max_mfn: frametable::nr_frames().saturating_sub(1),
            };
            guest::write_obj(arg, &m).map(|()| 0)
        }
        cmd::MACHPHYS_MFN_LIST => {
            let l: MachphysMfnList = guest::read_obj(arg)?;
            let (phys, bytes) = frametable::m2p_phys();
            let chunk = frametable::M2P_CHUNK;
            let chunks = (bytes / chunk).min(u64::from(l.max_extents));
            for i in 0..chunks {
                guest::write_obj(
                    l.extent_start.checked_add(i * 8).ok_or(Errno::EFAULT)?,
                    &((phys + i * chunk) / 4096),
                )?;
            }
            let field = offset_of!(MachphysMfnList, nr_extents) as u64;
            guest::write_obj(arg + field, &(chunks as u32)).map(|()| 0)
        }
        cmd::MEMORY_MAP => memory_map(d, arg).map(|()| 0),
        cmd::SET_MEMORY_MAP => set_memory_map(d, arg).map(|()| 0),
        cmd::CLAIM_PAGES => claim_pages(d, arg).map(|()| 0),
        cmd::GET_VNUMAINFO => get_vnumainfo(d, arg),
        cmd::MACHINE_MEMORY_MAP => {
            policy::check(d.rights, Action::MachineMemoryMap)?;
            machine_memory_map(d, arg).map(|()| 0)
        }
        _ => Err(Errno::ENOSYS),
    };
    Ok(r?)
}

/// `XENMEM_machine_memory_map` as Xen 4.17: the host map with, in its gaps, a reserved entry
/// for each run of frames the caller may not map (`hestia_core::memmap::machine_map`). A null
/// buffer asks for the count. A buffer needs room for the host map plus one entry, else
/// -EINVAL, and the walk fails with -EINVAL where Xen's does: a reserved entry needs a spare
/// slot after it, a host entry room for the host entries still to come.
fn machine_memory_map(d: &Domain, arg: u64) -> Result<(), Errno> {
    let m: MemoryMap = guest::read_obj(arg)?;
    let host = crate::bootinfo::host_memory_map();
    let permitted = frametable::with(|ft, _| ft.iomem_ranges(d.id.0).to_vec()).unwrap_or_default();
    let map = machine_map(host, &permitted, 1 << (paddr_bits() - 12));
    let room = m.nr_entries as usize;
    let store = m.buffer != 0;
    if store && room < host.len() + 1 {
        return Err(Errno::EINVAL);
    }
    let size = size_of::<E820Entry>() as u64;
    let mut host_left = host.len();
    for (n, e) in map.iter().enumerate() {
        if !store {
            continue;
        }
        let full = if e.from_host {
            room <= n + host_left
        } else {
            n + 1 >= room
        };
        if full {
            return Err(Errno::EINVAL);
        }
        let entry = E820Entry {
            addr: e.addr,
            size: e.size,
            r#type: e820_type(e.kind),
        };
        let at = m.buffer.checked_add(n as u64 * size).ok_or(Errno::EFAULT)?;
        guest::write_obj(at, &entry)?;
        host_left -= usize::from(e.from_host);
    }
    let field = offset_of!(MemoryMap, nr_entries) as u64;
    guest::write_obj(arg + field, &(map.len() as u32))
}

/// The CPU's physical address width (Xen's `paddr_bits`), 36 without the leaf.
pub(crate) fn paddr_bits() -> u64 {
    let max = cpu::cpuid(0x8000_0000, 0).eax;
    if max >= 0x8000_0008 {
        u64::from(cpu::cpuid(0x8000_0008, 0).eax & 0xff).clamp(32, 52)
    } else {
        36
    }
}
