//! `set_gdt` (2) and `update_descriptor` (10). `shared/xen-abi.md` 4.2.
//!
//! The guest's GDT frames take the SegDesc type (validating every descriptor, fixing DPL to 3;
//! impossible while any writable mapping exists). Hestia then copies the descriptors into pages
//! 0-13 of the CPU's own GDT (one vCPU per CPU for now), so the CPU never sees guest memory as a
//! descriptor table and can set accessed bits freely.

use hestia_core::descriptor;
use hestia_core::pv_mm::{PageType, PtMemory};
use xen_abi::errno::Errno;

use crate::arch::x86_64::gdt::GUEST_ENTRIES;
use crate::arch::x86_64::percpu;
use crate::mm::{frametable, guest};
use crate::pv::domain::{Domain, Vcpu};

pub(super) fn do_set_gdt(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    let (list, entries) = (a[0], a[1] as usize);
    if entries > GUEST_ENTRIES {
        return Err(Errno::EINVAL);
    }
    let nr = entries.div_ceil(512);
    let mut frames = alloc::vec::Vec::with_capacity(nr);
    for i in 0..nr as u64 {
        frames.push(guest::read_obj::<u64>(
            list.checked_add(i * 8).ok_or(Errno::EFAULT)?,
        )?);
    }
    let mut v = d.this_vcpu().lock();
    let copied = take_gdt(d.id.0, &mut v, frames, entries)?;
    percpu::this_cpu()
        .gdt
        .load_guest_entries(copied.into_iter());
    Ok(0)
}

/// Makes `frames` (holding `entries` descriptors) vCPU `v`'s GDT: each takes the SegDesc type
/// (validating it), the old frames are released; returns the descriptors for the CPU's GDT.
pub(crate) fn take_gdt(
    me: u16,
    v: &mut Vcpu,
    frames: alloc::vec::Vec<u64>,
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

/// The descriptors of `v`'s GDT as they are now (to load them on the CPU that runs it).
pub(crate) fn gdt_entries(v: &Vcpu) -> alloc::vec::Vec<u64> {
    frametable::with(|_, mem| {
        (0..v.gdt_entries)
            .map(|i| mem.read(v.gdt_frames[i / 512], i % 512))
            .collect()
    })
    .unwrap_or_default()
}

pub(super) fn do_update_descriptor(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    let (maddr, desc) = (a[0], a[1]);
    if !maddr.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    let fixed = descriptor::check(desc).ok_or(Errno::EINVAL)?;
    let (mfn, index) = (maddr >> 12, ((maddr & 0xfff) / 8) as usize);
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
    if let Some(k) = v.gdt_frames.iter().position(|&m| m == mfn) {
        let entry = k * 512 + index;
        if entry < v.gdt_entries {
            percpu::this_cpu().gdt.set_guest_entry(entry, fixed);
        }
    }
    Ok(0)
}
