//! `memory_op` (hypercall 12): reservation queries, the machine's memory map for dom0, where
//! the M2P lives, and ballooning (increase/decrease_reservation, populate_physmap).
//! `shared/xen-abi.md` 6.5. Frames given back must be unused (the frame table checks); frames
//! handed out are zeroed, owned by the domain, and entered in the M2P.
//! The reservation calls are preemptible, resuming at the extent kept in `cmd`'s upper bits.

use core::sync::atomic::Ordering;

use hestia_core::memmap::RegionKind;
use xen_abi::errno::Errno;
use xen_abi::mmu::INVALID_M2P_ENTRY;
use xen_abi::xen::{DOMID_SELF, MACH2PHYS_VIRT_START};

use super::continuation;
use crate::mm::{self, frametable, guest};
use crate::pv::domain::Domain;

const INCREASE_RESERVATION: u32 = 0;
const DECREASE_RESERVATION: u32 = 1;
const MAXIMUM_RAM_PAGE: u32 = 2;
const CURRENT_RESERVATION: u32 = 3;
const MAXIMUM_RESERVATION: u32 = 4;
const MACHPHYS_MFN_LIST: u32 = 5;
const POPULATE_PHYSMAP: u32 = 6;
const MEMORY_MAP: u32 = 9;
const EXCHANGE: u32 = 11;
const MACHINE_MEMORY_MAP: u32 = 10;
const MACHPHYS_MAPPING: u32 = 12;
const MAXIMUM_GPFN: u32 = 14;
/// Largest extent order accepted (2 MiB).
const MAX_ORDER: u32 = 9;
/// Most extents one `XENMEM_exchange` takes (it is not preemptible; Linux exchanges one
/// extent at a time).
const MAX_EXCHANGE: u64 = 1 << 16;
/// Where `cmd` keeps the extent a preempted reservation call resumes at.
const EXTENT_SHIFT: u32 = 6;

fn check_self(d: &Domain, domid: u16) -> Result<(), Errno> {
    if domid == DOMID_SELF || domid == d.id.0 {
        Ok(())
    } else {
        Err(Errno::ESRCH)
    }
}

/// `xen_memory_reservation`: extent list, count, order, flags, domain.
struct Reservation {
    extents: u64,
    nr: u64,
    order: u32,
    limit: u64,
}

fn parse_reservation(d: &Domain, raw: [u64; 4]) -> Result<Reservation, Errno> {
    let [extents, nr, order_flags, domid] = raw;
    check_self(d, domid as u16)?;
    let (order, bits) = (
        (order_flags & 0xffff_ffff) as u32,
        (order_flags >> 32) & 0xff,
    );
    if order > MAX_ORDER {
        return Err(Errno::EINVAL);
    }
    Ok(Reservation {
        extents,
        nr,
        order,
        limit: if bits == 0 || bits >= 64 {
            u64::MAX
        } else {
            1 << bits
        },
    })
}

/// Allocates, assigns and zeroes one extent; returns its first MFN.
fn give_extent(d: &Domain, order: u32, limit: u64) -> Option<u64> {
    let n = 1u64 << order;
    let tot = d.tot_pages.load(Ordering::Acquire);
    if tot + n > d.max_pages {
        return None;
    }
    let phys = mm::alloc_zeroed_frames(n, 4096 << order, limit)?;
    let mfn = phys / 4096;
    let ok = frametable::with(|ft, _| (0..n).all(|i| ft.assign(mfn + i, d.id.0).is_ok()))
        .unwrap_or(false);
    if !ok {
        mm::free_frames(phys, n);
        return None;
    }
    d.tot_pages.fetch_add(n, Ordering::AcqRel);
    Some(mfn)
}

/// increase_reservation, decrease_reservation, populate_physmap from extent `start` on: as in
/// Xen these return the number of extents done (a bad argument is "none done"), and resume by
/// continuation with that number in `cmd`.
fn balloon(d: &Domain, cmd: u32, start: u64, arg: u64) -> Result<u64, Errno> {
    let Ok(r) = guest::read_obj(arg).and_then(|raw| parse_reservation(d, raw)) else {
        return Ok(start);
    };
    if r.nr > u64::from(u32::MAX >> EXTENT_SHIFT) || start >= r.nr {
        return Ok(start);
    }
    let n = 1u64 << r.order;
    for i in start..r.nr {
        if continuation::should_preempt(d, i - start) {
            return continuation::create([u64::from(cmd) | i << EXTENT_SHIFT, arg, 0, 0, 0]);
        }
        let Some(slot) = r.extents.checked_add(i * 8) else {
            return Ok(i);
        };
        match cmd {
            DECREASE_RESERVATION => {
                let Ok(mfn) = guest::read_obj::<u64>(slot) else {
                    return Ok(i);
                };
                let freed = frametable::with(|ft, mem| {
                    (0..n).all(|j| ft.release(mem, mfn + j, d.id.0).is_ok())
                })
                .unwrap_or(false);
                if !freed {
                    return Ok(i);
                }
                for j in 0..n {
                    frametable::set_m2p(mfn + j, INVALID_M2P_ENTRY);
                }
                mm::free_frames(mfn * 4096, n);
                d.tot_pages.fetch_sub(n, Ordering::AcqRel);
            }
            _ => {
                let pfn = if cmd == POPULATE_PHYSMAP {
                    let Ok(pfn) = guest::read_obj::<u64>(slot) else {
                        return Ok(i);
                    };
                    pfn
                } else {
                    0
                };
                let Some(mfn) = give_extent(d, r.order, r.limit) else {
                    return Ok(i);
                };
                if cmd == POPULATE_PHYSMAP {
                    for j in 0..n {
                        frametable::set_m2p(mfn + j, pfn + j);
                    }
                }
                if r.extents != 0 && guest::write_obj(slot, &mfn).is_err() {
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
/// their MFNs. All or nothing: a busy input frame is -EINVAL, no memory is -ENOMEM, and
/// nothing changed in either case.
fn exchange(d: &Domain, arg: u64) -> Result<u64, Errno> {
    let raw: [u64; 9] = guest::read_obj(arg)?;
    let input = parse_reservation(d, [raw[0], raw[1], raw[2], raw[3]])?;
    let output = parse_reservation(d, [raw[4], raw[5], raw[6], raw[7]])?;
    let done = raw[8];
    let (in_n, out_n) = (1u64 << input.order, 1u64 << output.order);
    // Hestia never returns part way, so there is no continuation to resume: nr_exchanged must
    // come in as 0 (Linux's always does).
    if input.nr.max(output.nr) > MAX_EXCHANGE || input.nr * in_n != output.nr * out_n || done != 0 {
        return Err(Errno::EINVAL);
    }
    // Both lists are read up front; the call has no effect on any error.
    let read_list = |list: u64, n: u64| -> Result<alloc::vec::Vec<u64>, Errno> {
        (0..n)
            .map(|i| guest::read_obj(list.checked_add(i * 8).ok_or(Errno::EFAULT)?))
            .collect()
    };
    let ins = read_list(input.extents, input.nr)?;
    let gpfns = read_list(output.extents, output.nr)?;
    let me = d.id.0;
    let releasable = frametable::with(|ft, _| {
        ins.iter().all(|&mfn| {
            (0..in_n).all(|j| {
                ft.info(mfn + j).is_some_and(|f| {
                    f.owner == Some(me) && f.ref_count == 0 && f.type_count == 0 && !f.pinned
                })
            })
        })
    })
    .unwrap_or(false);
    if !releasable {
        return Err(Errno::EINVAL);
    }
    let mut outs = alloc::vec::Vec::with_capacity(gpfns.len());
    for _ in &gpfns {
        match mm::alloc_zeroed_frames(out_n, 4096 << output.order, output.limit) {
            Some(phys) => outs.push(phys / 4096),
            None => {
                for &m in &outs {
                    mm::free_frames(m * 4096, out_n);
                }
                return Err(Errno::ENOMEM);
            }
        }
    }
    frametable::with(|ft, mem| {
        for &mfn in &ins {
            for j in 0..in_n {
                let _ = ft.release(mem, mfn + j, me);
            }
        }
        for &mfn in &outs {
            for j in 0..out_n {
                let _ = ft.assign(mfn + j, me);
            }
        }
    });
    for &mfn in &ins {
        for j in 0..in_n {
            frametable::set_m2p(mfn + j, INVALID_M2P_ENTRY);
        }
        mm::free_frames(mfn * 4096, in_n);
    }
    for (i, (&mfn, &gpfn)) in outs.iter().zip(&gpfns).enumerate() {
        for j in 0..out_n {
            frametable::set_m2p(mfn + j, gpfn + j);
        }
        guest::write_obj(output.extents + i as u64 * 8, &mfn)?;
    }
    guest::write_obj(arg + 64, &input.nr).map(|()| 0)
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

pub(super) fn do_memory_op(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    let (cmd, start, arg) = (
        (a[0] & ((1 << EXTENT_SHIFT) - 1)) as u32,
        a[0] >> EXTENT_SHIFT,
        a[1],
    );
    match cmd {
        INCREASE_RESERVATION | DECREASE_RESERVATION | POPULATE_PHYSMAP => {
            balloon(d, cmd, start, arg)
        }
        // Only the reservation calls resume part way; the architecture's calls see a command
        // they do not know.
        EXCHANGE | MAXIMUM_RAM_PAGE | CURRENT_RESERVATION | MAXIMUM_RESERVATION | MAXIMUM_GPFN
            if start != 0 =>
        {
            Err(Errno::EINVAL)
        }
        _ if start != 0 => Err(Errno::ENOSYS),
        EXCHANGE => exchange(d, arg),
        MAXIMUM_RAM_PAGE => Ok(frametable::nr_frames()),
        CURRENT_RESERVATION | MAXIMUM_RESERVATION | MAXIMUM_GPFN => {
            let domid: u16 = guest::read_obj(arg)?;
            check_self(d, domid)?;
            Ok(match cmd {
                CURRENT_RESERVATION => d.tot_pages.load(Ordering::Acquire),
                MAXIMUM_RESERVATION => d.max_pages,
                _ => d.nr_pages().saturating_sub(1),
            })
        }
        MACHPHYS_MAPPING => {
            let m = [
                MACH2PHYS_VIRT_START,
                MACH2PHYS_VIRT_START + (1 << 38),
                frametable::nr_frames().saturating_sub(1),
            ];
            guest::write_obj(arg, &m).map(|()| 0)
        }
        MACHPHYS_MFN_LIST => {
            let [max, list, _]: [u64; 3] = guest::read_obj(arg)?;
            let (phys, bytes) = frametable::m2p_phys();
            let chunks = bytes.div_ceil(2 << 20).min(max & 0xffff_ffff);
            for i in 0..chunks {
                guest::write_obj(
                    list.checked_add(i * 8).ok_or(Errno::EFAULT)?,
                    &(phys / 4096 + i * 512),
                )?;
            }
            guest::write_obj(arg + 16, &(chunks as u32)).map(|()| 0)
        }
        // No pseudo-physical map was set for this domain (Linux then assumes one RAM range).
        MEMORY_MAP => Err(Errno::ENOSYS),
        MACHINE_MEMORY_MAP => {
            if !d.privileged {
                return Err(Errno::EPERM);
            }
            let [cap_and_pad, buf]: [u64; 2] = guest::read_obj(arg)?;
            let map = crate::host_memory_map();
            let cap = (cap_and_pad & 0xffff_ffff) as usize;
            if cap < map.len() {
                return Err(Errno::EINVAL);
            }
            for (i, r) in map.iter().enumerate() {
                let mut e = [0u8; 20];
                e[..8].copy_from_slice(&r.start.to_le_bytes());
                e[8..16].copy_from_slice(&(r.end - r.start).to_le_bytes());
                e[16..].copy_from_slice(&e820_type(r.kind).to_le_bytes());
                guest::GuestRange::new(buf.checked_add(i as u64 * 20).ok_or(Errno::EFAULT)?, 20)?
                    .write(&e)?;
            }
            guest::write_obj(arg, &(map.len() as u32)).map(|()| 0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
