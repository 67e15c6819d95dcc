//! A PV vCPU's descriptor tables: its GDT (`set_gdt`, 2), descriptor updates
//! (`update_descriptor`, 10; both decoded in `hypercall::descriptor`) and its LDT
//! (`MMUEXT_SET_LDT`, loaded again at each switch-in by `super::context`). `shared/xen-abi.md`
//! 4.2.
//!
//! The guest's GDT and LDT frames take the SegDesc type (validating every descriptor, fixing DPL
//! to 3; impossible while any writable mapping exists). Hestia then copies the descriptors into
//! pages 0-13 of the CPU's own GDT and into the CPU's own LDT area (again each time the vCPU is
//! switched in), so the CPU never sees guest memory as a descriptor table and can set accessed
//! bits freely.
//!
//! LDT pages are taken when the LDT is set; one that cannot be taken then (not mapped yet, still
//! writable, a bad descriptor) reads as null entries and is tried again when the guest faults on
//! one of its selectors; if it still cannot be, the guest gets the #PF at that LDT address that
//! Xen, which maps LDT pages on demand, would give it.

use alloc::vec::Vec;
use hestia_core::ids::Mfn;
use hestia_core::pv_mm::{FrameTable, PageType, PtMemory, pte};
use xen_abi::errno::Errno;

use super::domain::{Domain, Vcpu};
use crate::arch::x86_64::gdt::{GUEST_ENTRIES, LDT_ENTRIES};
use crate::arch::x86_64::percpu;
use crate::mm::frametable::{self, DirectMem};
use crate::mm::guest::is_guest_range;

/// `set_gdt` for the running vCPU of `d`: `frames` (holding `entries` descriptors) become its
/// GDT and are loaded into this CPU's.
pub fn set_gdt(d: &Domain, frames: Vec<Mfn>, entries: usize) -> Result<(), Errno> {
    let mut v = d.this_vcpu().lock();
    let copied = take_gdt(d.id.0, &mut v, frames, entries)?;
    percpu::this_cpu()
        .gdt
        .load_guest_entries(copied.into_iter());
    Ok(())
}

/// Makes `frames` (holding `entries` descriptors) vCPU `v`'s GDT: each takes the SegDesc type
/// (validating it), the old frames are released; returns the descriptors for the CPU's GDT.
pub fn take_gdt(
    me: u16,
    v: &mut Vcpu,
    frames: alloc::vec::Vec<Mfn>,
    entries: usize,
) -> Result<alloc::vec::Vec<u64>, Errno> {
    if entries > GUEST_ENTRIES || frames.len() < entries.div_ceil(512) {
        return Err(Errno::EINVAL);
    }
    let copied = frametable::with(|ft, mem| -> Result<alloc::vec::Vec<u64>, Errno> {
        for (n, &mfn) in frames.iter().enumerate() {
            let ok = ft.get_page(mfn, me).is_ok() && {
                let typed = ft.get_page_type(mem, mfn, PageType::SegDesc, me).is_ok();
                if !typed {
                    ft.put_page(mfn);
                }
                typed
            };
            if !ok {
                for &m in &frames[..n] {
                    ft.put_page_type(mem, m);
                    ft.put_page(m);
                }
                return Err(Errno::EINVAL);
            }
        }
        for &m in &v.gdt_frames {
            ft.put_page_type(mem, m);
            ft.put_page(m);
        }
        Ok((0..entries)
            .map(|i| mem.read(frames[i / 512], i % 512))
            .collect())
    })
    .unwrap_or(Err(Errno::EINVAL))?;
    v.gdt_frames = frames;
    v.gdt_entries = entries;
    Ok(copied)
}

/// Loads the descriptors of `v`'s GDT as they are now into this CPU's GDT (`v` is being
/// switched in here).
pub fn load_gdt(v: &Vcpu) {
    let gdt = &percpu::this_cpu().gdt;
    let loaded = frametable::with(|_, mem| {
        gdt.load_guest_entries(
            (0..v.gdt_entries).map(|i| mem.read(v.gdt_frames[i / 512], i % 512)),
        );
    });
    if loaded.is_none() {
        gdt.load_guest_entries(core::iter::empty());
    }
}

/// `update_descriptor`: writes the checked descriptor `fixed` at entry `index` of frame `mfn`,
/// which must be `d`'s and writable or a descriptor page, and refreshes the running vCPU's
/// loaded copy if the frame is in its GDT or LDT.
pub fn update_descriptor(d: &Domain, mfn: Mfn, index: usize, fixed: u64) -> Result<(), Errno> {
    let me = d.id.0;
    frametable::with(|ft, mem| {
        let f = *ft.info(mfn).ok_or(Errno::EINVAL)?;
        let writable = f.type_count == 0 || f.ty == PageType::Writable;
        if f.owner != Some(me) || !(writable || f.ty == PageType::SegDesc) {
            return Err(Errno::EINVAL);
        }
        mem.write(mfn, index, fixed);
        Ok(())
    })
    .unwrap_or(Err(Errno::EINVAL))?;
    let v = d.this_vcpu().lock();
    let gdt = &percpu::this_cpu().gdt;
    if let Some(k) = v.gdt_frames.iter().position(|&m| m == mfn) {
        let entry = k * 512 + index;
        if entry < v.gdt_entries {
            gdt.set_guest_entry(entry, fixed);
        }
    }
    if let Some(k) = v.ldt_frames.iter().position(|&m| m == Some(mfn)) {
        let entry = k * 512 + index;
        if entry < v.ldt_ents {
            gdt.set_ldt_entry(entry, fixed);
        }
    }
    Ok(())
}

/// `MMUEXT_SET_LDT` for the running vCPU `v`: `ents` descriptors at linear address `base`. As
/// Xen: a base that is not page-aligned or not guest space, or more than 8192 entries, is
/// -EINVAL; setting the LDT it already has does nothing.
pub fn set_ldt(me: u16, v: &mut Vcpu, base: u64, ents: u64) -> Result<(), Errno> {
    let base = if ents == 0 { 0 } else { base };
    if !base.is_multiple_of(4096)
        || ents > LDT_ENTRIES as u64
        || (ents != 0 && !is_guest_range(base, ents * 8))
    {
        return Err(Errno::EINVAL);
    }
    if (base, ents as usize) != (v.ldt_base, v.ldt_ents) {
        drop_ldt(v);
        (v.ldt_base, v.ldt_ents) = (base, ents as usize);
        load_ldt(me, v);
    }
    Ok(())
}

/// Releases the frames of `v`'s LDT (the LDT itself stays set).
fn drop_ldt(v: &mut Vcpu) {
    let frames = core::mem::take(&mut v.ldt_frames);
    frametable::with(|ft, mem| {
        for m in frames.into_iter().flatten() {
            ft.put_page_type(mem, m);
            ft.put_page(m);
        }
    });
}

/// Takes the frame behind page `page` of `v`'s LDT through its kernel page tables: a SegDesc
/// type reference; `None` when the page is not mapped or cannot be a descriptor page.
fn take_ldt_page(
    ft: &mut FrameTable,
    mem: &mut DirectMem,
    me: u16,
    v: &Vcpu,
    page: usize,
) -> Option<Mfn> {
    let va = v.ldt_base + page as u64 * 4096;
    let (l1, idx) = super::mmu::find_l1(mem, v.kernel_l4(), va).ok()?;
    let e = mem.read(l1, idx);
    if e & pte::P == 0 {
        return None;
    }
    let mfn = pte::mfn(e);
    ft.get_page(mfn, me).ok()?;
    if ft.get_page_type(mem, mfn, PageType::SegDesc, me).is_err() {
        ft.put_page(mfn);
        return None;
    }
    Some(mfn)
}

/// Takes the pages of `v`'s LDT it does not hold yet and loads its descriptors into this CPU's
/// LDT (on the CPU that runs `v`: when the LDT is set, and each time `v` is switched in).
pub fn load_ldt(me: u16, v: &mut Vcpu) {
    let pages = (v.ldt_ents * 8).div_ceil(4096);
    if pages == 0 {
        percpu::this_cpu().gdt.load_ldt(core::iter::empty(), 0);
        return;
    }
    let (frames, entries) = frametable::with(|ft, mem| {
        let frames: Vec<Option<Mfn>> = (0..pages)
            .map(|p| {
                v.ldt_frames
                    .get(p)
                    .copied()
                    .flatten()
                    .or_else(|| take_ldt_page(ft, mem, me, v, p))
            })
            .collect();
        let entries: Vec<u64> = (0..v.ldt_ents)
            .map(|i| frames[i / 512].map_or(0, |m| mem.read(m, i % 512)))
            .collect();
        (frames, entries)
    })
    .unwrap_or_default();
    v.ldt_frames = frames;
    percpu::this_cpu()
        .gdt
        .load_ldt(entries.into_iter(), v.ldt_ents);
}

/// A guest #GP with `error_code`, if it names an LDT selector whose page could not be taken
/// before: `Ok` when the page is taken now (its entries loaded: the guest just retries), or
/// `Err(address)` when it still cannot be, for a #PF at that address of the LDT, as Xen reports
/// an LDT page it cannot map. `None` for any other #GP.
pub fn ldt_fault(me: u16, v: &mut Vcpu, error_code: u64) -> Option<Result<(), u64>> {
    // TI set (an LDT selector), neither EXT nor IDT.
    if error_code & 0b111 != 0b100 {
        return None;
    }
    let index = ((error_code >> 3) & 0x1fff) as usize;
    let page = index / 512;
    if index >= v.ldt_ents || v.ldt_frames.get(page) != Some(&None) {
        return None;
    }
    let taken = frametable::with(|ft, mem| {
        let mfn = take_ldt_page(ft, mem, me, v, page)?;
        Some((
            mfn,
            (0..512).map(|i| mem.read(mfn, i)).collect::<Vec<u64>>(),
        ))
    })
    .flatten();
    let Some((mfn, descs)) = taken else {
        return Some(Err(v.ldt_base + index as u64 * 8));
    };
    v.ldt_frames[page] = Some(mfn);
    let gdt = &percpu::this_cpu().gdt;
    for (i, d) in descs.into_iter().enumerate() {
        if page * 512 + i < v.ldt_ents {
            gdt.set_ldt_entry(page * 512 + i, d);
        }
    }
    Some(Ok(()))
}
