//! The PV MMU operations that both hypercalls and emulation need: walking a guest's tables to
//! the L1 behind a virtual address (`update_va_mapping`, grant mappings by host address, the
//! write-protected page-table emulation, LDT pages), and moving a vCPU's L4 base pointer
//! (`MMUEXT_NEW_BASEPTR`/`NEW_USER_BASEPTR` and an emulated `mov` to CR3). The rules themselves
//! are `hestia_core::pv_mm`'s; the hypercalls are decoded in `hypercall::mmu`.

use hestia_core::ids::Mfn;
use hestia_core::pv_mm::{MmError, PtMemory, pte};
use xen_abi::errno::Errno;

use super::domain::{Domain, Vcpu};
use crate::arch::x86_64::cpu;
use crate::mm::frametable::DirectMem;

/// Errno for a refused pin, unpin or base-pointer change: -EINVAL, as Xen.
pub fn errno_pin(e: MmError) -> Errno {
    match e {
        MmError::Preempted | MmError::Busy => Errno::ERESTART,
        _ => Errno::EINVAL,
    }
}

/// Finds the L1 frame and index that map `va` in the page tables rooted at `l4_mfn`.
pub fn find_l1(mem: &DirectMem, l4_mfn: Mfn, va: u64) -> Result<(Mfn, usize), Errno> {
    let mut t = l4_mfn;
    for level in [4u32, 3, 2] {
        let e = mem.read(t, ((va >> (12 + 9 * (level - 1))) & 511) as usize);
        if e & pte::P == 0 || e & pte::PS != 0 {
            return Err(Errno::EINVAL);
        }
        t = pte::mfn(e);
    }
    Ok((t, ((va >> 12) & 511) as usize))
}

/// Moves a vCPU's L4 base-pointer reference from `old` to `new` (`None`: no L4, as a vCPU
/// without a user L4): the new L4 is validated (preemptibly) before the old one's reference
/// goes.
pub fn switch_l4(d: &Domain, old: Option<Mfn>, new: Option<Mfn>) -> Result<(), Errno> {
    let me = d.id.0;
    d.mm_op(|ft, mem, pending, budget| {
        match new {
            Some(new) => ft.get_table_preemptible(mem, new, 4, me, pending, budget)?,
            None => ft.finish_teardown(mem, pending, budget)?,
        }
        if let Some(old) = old {
            ft.put_table_preemptible(mem, old, pending, budget);
        }
        Ok(())
    })
    .map_err(errno_pin)
}

/// Switches `v` (running, in kernel mode) to the L4 at machine frame `new` (the number as the
/// guest gave it), which takes an L4 type reference from the old one (`MMUEXT_NEW_BASEPTR`,
/// and a guest's `mov` to CR3). `ERESTART`: issue it again (the new L4's validation goes on).
pub fn new_baseptr(d: &Domain, v: &mut Vcpu, new: u64) -> Result<(), Errno> {
    let new = Mfn::new(new);
    let old = v.kernel_l4();
    if new != old {
        switch_l4(d, Some(old), Some(new))?;
        v.kernel_cr3 = new.addr();
    }
    // SAFETY: the new L4 was validated as an L4 of this domain (so it maps only its frames) and
    // carries Hestia's slots 256-271, so Hestia stays mapped.
    unsafe { cpu::write_cr3(new.addr()) };
    Ok(())
}
