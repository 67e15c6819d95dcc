//! Writable page tables (`VMASST_TYPE_writable_pagetables`, `shared/xen-abi.md` 5.5): a guest
//! kernel's store to one of its own L1 tables, which it maps read-only, faults; Hestia decodes
//! the store (`hestia_core::ptwr`), validates the resulting entry exactly as `mmu_update` would,
//! writes it and skips the instruction. A store that does not decode, or an entry the rules
//! refuse, leaves the page fault to the guest, as in Xen; a not-present entry refused for L1TF
//! crashes the domain (`super::l1tf`). Like Xen 4.17 (checked on the reference rig), this
//! happens whether or not the guest turned the assist on.

use hestia_core::ptwr::{self, Source};
use hestia_core::pv_mm::{MmError, PageType, PtMemory, pte};

use super::domain::{Domain, Vcpu};
use super::privop::{fetch, gpr};
use super::traps::Fatal;
use crate::arch::x86_64::idt::TrapFrame;
use crate::mm::frametable;

/// #PF error code: present, write.
const PF_PRESENT_WRITE: u64 = 0b11;

/// Emulates the faulting store at `f.rip` if it targets an L1 table of `d`; true if done.
/// `Err`: the domain was crashed (an entry refused for L1TF).
pub fn handle(
    d: &Domain,
    v: &Vcpu,
    f: &mut TrapFrame,
    cr2: u64,
    error_code: u64,
) -> Result<bool, Fatal> {
    if !v.kernel_mode || error_code & PF_PRESENT_WRITE != PF_PRESENT_WRITE {
        return Ok(false);
    }
    let rip = f.rip;
    let Some(store) = ptwr::decode(|i| fetch(rip, i)) else {
        return Ok(false);
    };
    let (offset, size) = ((cr2 & 7) as u8, store.size);
    if u32::from(offset) + u32::from(size) > 8 {
        return Ok(false);
    }
    let src = match store.src {
        Source::Imm(v) => v,
        Source::Reg { n, high_byte } => {
            let r = *gpr(f, n);
            if high_byte { r >> 8 } else { r }
        }
    };
    let me = d.id.0;
    let mut refused = None;
    let applied = frametable::with(|ft, mem| {
        let (l1, idx) = super::mmu::find_l1(mem, v.kernel_l4(), cr2).ok()?;
        let mapping = mem.read(l1, idx);
        if mapping & pte::P == 0 || mapping & pte::RW != 0 {
            return None; // not a read-only mapping: some other fault
        }
        let table = pte::mfn(mapping);
        let info = *ft.info(table)?;
        if info.owner != Some(me) || info.ty != PageType::Table(1) || info.type_count == 0 {
            return None;
        }
        let entry = ((cr2 & 0xfff) / 8) as usize;
        let old = mem.read(table, entry);
        let old_val = old >> (8 * u32::from(offset));
        let a = ptwr::apply(&store, old_val, src, f.rax, f.rflags);
        let new = ptwr::merge(old, offset, size, a.new)?;
        if new != old {
            ft.mod_entry(mem, table, 1, entry, new, me)
                .inspect_err(|&e| refused = Some(e))
                .ok()?;
        }
        Some(a)
    })
    .flatten();
    if let Some(MmError::L1tf { level, entry }) = refused {
        super::l1tf::crash(d, level, entry);
        return Err("L1TF-vulnerable PTE written");
    }
    let Some(a) = applied else {
        return Ok(false);
    };
    f.rflags = a.rflags;
    if let Some((n, high_byte, value)) = a.reg_write {
        write_reg(f, n, high_byte, size, value);
    }
    f.rip = f.rip.wrapping_add(u64::from(store.len));
    Ok(true)
}

/// Writes a `size`-byte result to register `n` with the architecture's rules: 8 and 4 bytes
/// replace (4 zero-extends), 2 and 1 merge; a high byte is bits 8-15 of register `n - 4`.
fn write_reg(f: &mut TrapFrame, n: u8, high_byte: bool, size: u8, value: u64) {
    if high_byte {
        let r = gpr(f, n - 4);
        *r = (*r & !0xff00) | ((value & 0xff) << 8);
        return;
    }
    let r = gpr(f, n);
    *r = match size {
        8 => value,
        4 => value & 0xffff_ffff,
        2 => (*r & !0xffff) | (value & 0xffff),
        _ => (*r & !0xff) | (value & 0xff),
    };
}
