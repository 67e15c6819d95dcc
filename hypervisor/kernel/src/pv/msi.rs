//! dom0's message-signalled interrupts (`PHYSDEVOP_map_pirq` with `MAP_PIRQ_TYPE_MSI`/`MSI_SEG`),
//! as Xen does them for a PV dom0: Linux (with `pci_msi_ignore_mask`) enables MSI or MSI-X in
//! the capability's control word itself, and Hestia owns everything else. At map time Hestia
//! picks a vector, writes the message (to the MSI capability, or to the MSI-X table entry in
//! device memory) and keeps the source masked; binding the PIRQ to an event channel unmasks it,
//! closing the port masks it again, unmapping releases the vector. Each message then marks the
//! PIRQ's port pending. Edge-triggered: no EOI is needed.
//!
//! Once a message is programmed, dom0's configuration-space writes to the message registers are
//! dropped ([`config_write_allowed`]): a driver cannot redirect its device's interrupts to
//! another vector of Hestia's. Segment 0 only (mechanism #1); at most 64 MSIs at a time.

use core::ops::Range;
use core::sync::atomic::{AtomicU32, Ordering};

use alloc::vec::Vec;
use hestia_core::ids::Mfn;
use hestia_core::msi::{
    self, CAP_MSI, CAP_MSIX, MSI_ENABLE, MSIX_VECTOR_CONTROL, MsiLayout, MsixLayout,
};
use xen_abi::errno::Errno;

use super::domain::Domain;
use crate::arch::x86_64::apic;
use crate::arch::x86_64::pci::Function;
use crate::arch::x86_64::trap::vectors;
use crate::mm::{self, frametable};

/// Vectors in the MSI range.
const NR_VECTORS: usize = (vectors::MSI_LAST - vectors::MSI_BASE) as usize + 1;

/// Where one programmed message lives.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// An MSI capability.
    Msi(MsiLayout),
    /// An MSI-X table entry, at this Hestia virtual address.
    MsiX { entry: u64 },
}

/// One vector in use.
#[derive(Clone, Copy, Debug)]
struct Slot {
    function: Function,
    target: Target,
    pirq: u32,
}

static SLOTS: spin::Mutex<[Option<Slot>; NR_VECTORS]> = spin::Mutex::new([None; NR_VECTORS]);
/// PIRQ + 1 of each vector (0: none), read by the interrupt handler without a lock.
static PIRQ_OF_VECTOR: [AtomicU32; NR_VECTORS] = [const { AtomicU32::new(0) }; NR_VECTORS];
/// MSI-X tables Hestia mapped: (physical address, virtual address), kept for reuse.
static TABLES: spin::Mutex<Vec<(u64, u64)>> = spin::Mutex::new(Vec::new());

/// `PHYSDEVOP_map_pirq` for an MSI (`table_base == 0`) or an MSI-X entry of function `f` on
/// segment `seg`; returns the PIRQ. As Xen: -ENODEV for a missing device or capability, -EINVAL
/// for an entry beyond the table, -EEXIST for a message already mapped, -EBUSY for MSI on a
/// function using MSI-X or the reverse.
pub fn map(
    d: &Domain,
    seg: u16,
    f: Function,
    entry: u32,
    table_base: u64,
    wanted: Option<u32>,
) -> Result<u32, Errno> {
    // Segments beyond 0 would need MMCONFIG, which Hestia does not use: no device there.
    if seg != 0 || !f.exists() {
        return Err(Errno::ENODEV);
    }
    let want_msix = table_base != 0;
    let cap = msi::find_capability(
        |r| f.read(r, 1) as u8,
        if want_msix { CAP_MSIX } else { CAP_MSI },
    )
    .ok_or(Errno::ENODEV)?;
    let mut slots = SLOTS.lock();
    let in_use = |x: bool| {
        slots
            .iter()
            .flatten()
            .any(|s| s.function == f && matches!(s.target, Target::MsiX { .. }) == x)
    };
    if in_use(!want_msix) {
        return Err(Errno::EBUSY);
    }
    let (target, entry) = if want_msix {
        (
            Target::MsiX {
                entry: msix_entry(d, f, cap, entry)?,
            },
            entry,
        )
    } else {
        if in_use(false) {
            return Err(Errno::EEXIST);
        }
        (
            Target::Msi(MsiLayout::new(cap, f.read(cap + 2, 2) as u16)),
            0,
        )
    };
    let index = slots
        .iter()
        .position(Option::is_none)
        .ok_or(Errno::ENOSPC)?;
    let sbdf = u32::from(f.bus) << 8 | u32::from(f.devfn);
    let pirq = d
        .pirqs
        .lock()
        .map_msi(sbdf, entry, wanted)
        .map_err(super::pirq::errno)?;
    let vector = vectors::MSI_BASE + index as u8;
    let slot = Slot {
        function: f,
        target,
        pirq,
    };
    let Some(message) = msi::message(apic::id(), vector) else {
        let _ = d.pirqs.lock().unmap(pirq);
        return Err(Errno::EINVAL);
    };
    set_masked(&slot, true);
    write_message(&slot, message);
    slots[index] = Some(slot);
    PIRQ_OF_VECTOR[index].store(pirq + 1, Ordering::Release);
    crate::gdebug!(
        d,
        "{}: {:02x}:{:02x}.{} {} {entry} is PIRQ {pirq}, vector {vector:#x}",
        d.id,
        f.bus,
        f.devfn >> 3,
        f.devfn & 7,
        if want_msix { "MSI-X entry" } else { "MSI" },
    );
    Ok(pirq)
}

/// The virtual address of MSI-X table entry `entry` of `f` (capability at `cap`), mapping the
/// table on first use. The table must lie in device memory dom0 itself may map: a BAR pointed
/// at RAM or at Hestia's devices is refused, since Hestia writes there.
fn msix_entry(d: &Domain, f: Function, cap: u16, entry: u32) -> Result<u64, Errno> {
    let layout =
        MsixLayout::new(f.read(cap + 2, 2) as u16, f.read(cap + 4, 4)).ok_or(Errno::EINVAL)?;
    let offset = layout.entry(entry).ok_or(Errno::EINVAL)?;
    let bar = msi::bar_offset(layout.bir);
    let base = msi::memory_bar(f.read(bar, 4), || f.read(bar + 4, 4)).ok_or(Errno::EINVAL)?;
    // dom0 programs the BAR: a table that wraps past 2^64 is refused, never wrapped around.
    let Range { start, end } = layout.table_at(base).ok_or(Errno::EINVAL)?;
    let dom = d.id.0;
    let allowed = frametable::with(|ft, _| {
        (start >> 12..end.div_ceil(4096))
            .map(Mfn::new)
            .all(|mfn| ft.is_io(mfn) && ft.iomem_allowed(dom, mfn))
    });
    if allowed != Some(true) {
        crate::gwarn!(
            d,
            "{}: MSI-X table at {start:#x} is not device memory of the domain",
            d.id
        );
        return Err(Errno::EINVAL);
    }
    let mut tables = TABLES.lock();
    let virt = match tables.iter().find(|(p, _)| *p == start) {
        Some(&(_, v)) => v,
        None => {
            let v = mm::ioremap_dom0_device(start, end - start).ok_or(Errno::ENOMEM)?;
            tables.push((start, v));
            v
        }
    };
    Ok(virt + (offset - u64::from(layout.offset)))
}

fn write_message(s: &Slot, (address, data): (u64, u32)) {
    match s.target {
        Target::Msi(l) => {
            let f = s.function;
            f.write(l.address_lo(), 4, address as u32);
            if let Some(hi) = l.address_hi() {
                f.write(hi, 4, (address >> 32) as u32);
            }
            f.write(l.data(), 2, data);
        }
        Target::MsiX { entry } => {
            // SAFETY: `entry` is a 16-byte MSI-X table entry in device memory Hestia mapped
            // uncached (`msix_entry` checked it is device memory, not RAM).
            unsafe {
                (entry as *mut u32).write_volatile(address as u32);
                ((entry + 4) as *mut u32).write_volatile((address >> 32) as u32);
                ((entry + 8) as *mut u32).write_volatile(data);
            }
        }
    }
}

/// Masks or unmasks one message. An MSI without per-vector masking cannot be masked: its
/// messages keep arriving and are dropped if nothing is bound.
fn set_masked(s: &Slot, masked: bool) {
    match s.target {
        Target::Msi(l) => {
            if let Some(mask) = l.mask() {
                let v = s.function.read(mask, 4);
                s.function
                    .write(mask, 4, if masked { v | 1 } else { v & !1 });
            }
        }
        Target::MsiX { entry } => {
            let ctl = (entry + MSIX_VECTOR_CONTROL) as *mut u32;
            // SAFETY: as in `write_message`; the vector-control dword is the entry's last.
            unsafe {
                let v = ctl.read_volatile();
                ctl.write_volatile(if masked { v | 1 } else { v & !1 });
            }
        }
    }
}

fn with_slot(pirq: u32, f: impl FnOnce(&mut Option<Slot>)) {
    let mut slots = SLOTS.lock();
    if let Some(s) = slots.iter_mut().find(|s| s.is_some_and(|s| s.pirq == pirq)) {
        f(s);
    }
}

/// The PIRQ was bound to an event channel: its messages may come.
pub fn bound(pirq: u32) {
    with_slot(pirq, |s| s.iter().for_each(|s| set_masked(s, false)));
}

/// The PIRQ's port was closed: masked again.
pub fn unbound(pirq: u32) {
    with_slot(pirq, |s| s.iter().for_each(|s| set_masked(s, true)));
}

/// The PIRQ was unmapped: the source is masked (an MSI is also disabled, as Xen's
/// `pci_disable_msi` does) and its vector is free again.
pub fn unmapped(pirq: u32) {
    with_slot(pirq, |slot| {
        if let Some(s) = slot.take() {
            set_masked(&s, true);
            if let Target::Msi(l) = s.target {
                let ctl = s.function.read(l.control(), 2);
                s.function
                    .write(l.control(), 2, ctl & !u32::from(MSI_ENABLE));
            }
        }
    });
    for p in &PIRQ_OF_VECTOR {
        let _ = p.compare_exchange(pirq + 1, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// True unless the configuration write (`size` bytes at byte `offset` of the dword `cf8`
/// selects) would change a message Hestia programmed.
pub fn config_write_allowed(cf8: u32, offset: u16, size: u8) -> bool {
    let (f, reg) = Function::from_cf8(cf8);
    let start = reg + offset;
    let end = start + u16::from(size);
    !SLOTS.lock().iter().flatten().any(|s| match s.target {
        Target::Msi(l) => {
            let r = l.message_registers();
            s.function == f && start < r.end && r.start < end
        }
        Target::MsiX { .. } => false,
    })
}

/// A message arrived at MSI vector `index` (after the LAPIC EOI).
pub fn interrupt(index: u8) {
    let pirq = PIRQ_OF_VECTOR
        .get(usize::from(index))
        .map_or(0, |p| p.load(Ordering::Acquire));
    if let (Some(pirq), Some(d)) = (pirq.checked_sub(1), super::domain::hardware_domain()) {
        super::pirq::raise(d, pirq);
    }
}
