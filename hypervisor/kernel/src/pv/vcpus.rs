//! Secondary vCPUs of a PV domain (`shared/xen-abi.md` 6.4): `VCPUOP_initialise` sets a down
//! vCPU's state from a `vcpu_guest_context`, `VCPUOP_up` makes it runnable (the scheduler puts
//! it on a CPU, `crate::sched`), `VCPUOP_down` takes a vCPU of the domain offline until it is
//! brought up again (Linux's CPU offlining continues right after its own call), and the last
//! vCPU going down powers the domain off.
//!
//! The context is guest input, validated as Xen's `arch_set_info_guest` does for 64-bit PV:
//! canonical addresses, the GDT through the `set_gdt` rules, the kernel L4 through an L4 type
//! reference, debug registers through `set_debugreg`'s rules. The initial code and stack
//! selectors are always the flat ring-3 kernel ones; the IOPL bits of RFLAGS become the vCPU's
//! virtual IOPL and IF is forced on.

use core::sync::atomic::Ordering;

use hestia_core::ids::{Mfn, VcpuId};
use hestia_core::vaddr::canonical;
use xen_abi::callback::TrapInfo;
use xen_abi::errno::Errno;
use xen_abi::vcpu::{CpuUserRegs, VcpuGuestContext, vgcf};
use xen_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};
use zerocopy::FromZeros;

use super::domain::{Callback, Domain, TrapEntry, Vcpu, this_vcpu_id};
use super::{debugreg, descriptor};
use crate::arch::x86_64::cpu;
use crate::arch::x86_64::fpu::FpuState;
use crate::arch::x86_64::gdt::LDT_ENTRIES;
use crate::arch::x86_64::idt::TrapFrame;
use crate::mm::guest;
use crate::mm::guest::is_guest_range;

const RFLAGS_IF: u64 = 1 << 9;
/// CR0.TS in `ctrlreg[0]`.
const CR0_TS: u64 = 1 << 3;
/// `vcpu_info` slots in shared_info (`XEN_LEGACY_MAX_VCPUS`).
const LEGACY_VCPUS: usize = 32;
const RFLAGS_IOPL: u64 = 3 << 12;
/// RFLAGS bits a guest may set (arithmetic, TF, IF, DF, OF, AC, ID).
const RFLAGS_GUEST: u64 = 0x0004_0DD5 | (1 << 8) | (1 << 21);

/// `VCPUOP_initialise`: sets down vCPU `vid`'s state from the context at guest address `arg`.
pub fn initialise(d: &Domain, vid: VcpuId, arg: u64) -> Result<(), Errno> {
    let slot = d.vcpus.get(vid.index()).ok_or(Errno::ENOENT)?;
    // shared_info holds 32 `vcpu_info`s: a vCPU beyond them needs its own registered first
    // (Xen: -EINVAL while it has the dummy one).
    let registered = d
        .vcpu_info
        .get(vid.index())
        .is_some_and(|a| a.load(Ordering::Acquire) != 0);
    if vid.index() >= LEGACY_VCPUS && !registered {
        return Err(Errno::EINVAL);
    }
    let c: VcpuGuestContext = guest::read_obj(arg)?;
    let mut v = slot.lock();
    if v.initialised {
        return Err(Errno::EEXIST);
    }
    set_info_guest(d, d, &mut v, &c)
}

/// Sets vCPU `v` of `d` from the context `c`, as Xen's `arch_set_info_guest` for a 64-bit PV
/// vCPU: for `VCPUOP_initialise` (`caller` is `d`) and for its toolstack's
/// `XEN_DOMCTL_setvcpucontext` (`caller` the control domain, `d` paused). A vCPU not yet
/// initialised takes its kernel L4 (validated on `caller`'s vCPU, preemptibly: `ERESTART`
/// means issue the call again), GDT and LDT from `c`; an initialised one must name the same
/// (`EOPNOTSUPP` otherwise, as Xen) and only its registers, callbacks and FPU state change.
pub fn set_info_guest(
    caller: &Domain,
    d: &Domain,
    v: &mut Vcpu,
    c: &VcpuGuestContext,
) -> Result<(), Errno> {
    let r = &c.user_regs;
    let bases = [c.fs_base, c.gs_base_kernel, c.gs_base_user];
    let callbacks = [
        c.event_callback_eip,
        c.failsafe_callback_eip,
        c.syscall_callback_eip,
    ];
    // Kernel mode only (a vCPU starting in user mode would need its user L4 first); an LDT
    // as MMUEXT_SET_LDT takes it (its pages are taken when the vCPU starts).
    let ldt_base = if c.ldt_ents == 0 { 0 } else { c.ldt_base };
    if c.flags & vgcf::IN_KERNEL == 0
        || c.ldt_ents > LDT_ENTRIES as u64
        || !ldt_base.is_multiple_of(4096)
        || (c.ldt_ents != 0 && !is_guest_range(ldt_base, c.ldt_ents * 8))
        || ![r.rip, r.rsp, c.kernel_sp]
            .iter()
            .chain(&bases)
            .chain(&callbacks)
            .all(|&a| canonical(a))
    {
        return Err(Errno::EINVAL);
    }
    // The virtual IDT: entry `i` is vector `i` (Xen copies the array whole; the entries'
    // own vector fields are not consulted).
    let mut traps = [TrapEntry::default(); 256];
    for (slot, t) in traps.iter_mut().zip(&c.trap_ctxt) {
        if !canonical(t.address) {
            return Err(Errno::EINVAL);
        }
        *slot = TrapEntry {
            address: t.address,
            flags: t.flags,
        };
    }
    // Debug registers first (nothing to undo if they are refused), then the page tables and
    // the GDT, which take references.
    let mut dregs = [
        0,
        0,
        0,
        0,
        0,
        0,
        debugreg::DR6_DEFAULT,
        debugreg::DR7_DEFAULT,
    ];
    for (i, slot) in dregs.iter_mut().enumerate() {
        if matches!(i, 4 | 5) {
            continue;
        }
        *slot = debugreg::checked(i as u64, c.debugreg[i])?;
    }
    // The FPU state before any reference is taken: nothing to undo if the heap is full.
    let mut fpu = if c.flags & vgcf::I387_VALID != 0 {
        FpuState::from_guest_fxsave(&c.fpu_ctxt)?
    } else {
        FpuState::new_initial()?
    };
    fpu.set_guest_ts(c.ctrlreg[0] & CR0_TS != 0);
    let me = d.id.0;
    let cr3 = Mfn::new(c.ctrlreg[3] >> 12);
    let gdt_ents = c.gdt_ents as usize;
    let frames: alloc::vec::Vec<Mfn> = c.gdt_frames[..gdt_ents.div_ceil(512).min(16)]
        .iter()
        .map(|&f| Mfn::new(f))
        .collect();
    if v.initialised {
        // Only the registers may change (Xen's restore of a running domain's vCPU).
        let same = v.kernel_cr3 == c.ctrlreg[3]
            && v.user_cr3 == c.ctrlreg[1]
            && v.gdt_entries == gdt_ents
            && v.gdt_frames == frames
            && v.ldt_ents == c.ldt_ents as usize
            && (v.ldt_ents == 0 || v.ldt_base == ldt_base);
        if !same {
            return Err(Errno::EOPNOTSUPP);
        }
    } else {
        // Validating a fresh L4 may take long: it stops part way and the call is issued again.
        caller
            .mm_op(|ft, mem, pending, budget| {
                ft.get_table_preemptible(mem, cr3, 4, me, pending, budget)
            })
            .map_err(super::mmu::errno_pin)?;
        if let Err(e) = descriptor::take_gdt(me, v, frames, gdt_ents) {
            // A teardown the budget does not cover is finished at the caller's next MMU call.
            let _ = caller.mm_op(|ft, mem, pending, budget| {
                ft.put_table_preemptible(mem, cr3, pending, budget);
                Ok(())
            });
            return Err(e);
        }
        v.kernel_cr3 = cr3.addr();
        (v.ldt_base, v.ldt_ents) = (ldt_base, c.ldt_ents as usize);
    }
    v.regs = TrapFrame {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        rbp: r.rbp,
        rbx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        rax: r.rax,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rip: r.rip,
        cs: u64::from(FLAT_KERNEL_CS),
        rflags: (r.rflags & RFLAGS_GUEST) | RFLAGS_IF,
        rsp: r.rsp,
        ss: u64::from(FLAT_KERNEL_SS),
        ..TrapFrame::default()
    };
    v.iopl = ((r.rflags & RFLAGS_IOPL) >> 12) as u8;
    v.kernel_mode = true;
    v.traps = traps;
    v.kernel_ss = c.kernel_ss | 3;
    v.kernel_sp = c.kernel_sp;
    v.debugreg = dregs;
    v.event_callback = Callback {
        address: callbacks[0],
        mask_events: true,
    };
    v.failsafe_callback = Callback {
        address: callbacks[1],
        mask_events: c.flags & vgcf::FAILSAFE_DISABLES_EVENTS != 0,
    };
    v.syscall_callback = Callback {
        address: callbacks[2],
        mask_events: c.flags & vgcf::SYSCALL_DISABLES_EVENTS != 0,
    };
    (v.fs_base, v.gs_base_kernel, v.gs_base_user) = (bases[0], bases[1], bases[2]);
    v.selectors = [r.ds, r.es, r.fs, r.gs];
    v.fpu = fpu;
    v.initialised = true;
    Ok(())
}

/// The context of `d`'s initialised vCPU `v`, which does not run, as Xen's
/// `arch_get_info_guest` for a 64-bit PV vCPU (`XEN_DOMCTL_getvcpucontext`): what
/// [`set_info_guest`] takes, with RFLAGS carrying the virtual IOPL, `ctrlreg[3]`/`[1]` the
/// kernel and user L4s, `ctrlreg[0]` the CPU's CR0 with the vCPU's TS, and the flags saying
/// kernel mode, online and how the callbacks mask events.
pub fn get_info_guest(d: &Domain, v: &Vcpu) -> VcpuGuestContext {
    let mut c = VcpuGuestContext::new_zeroed();
    let (fxsave, ts) = v.fpu.guest_fxsave();
    c.fpu_ctxt = fxsave;
    let flag = |on: bool, f: u64| if on { f } else { 0 };
    c.flags = vgcf::I387_VALID
        | flag(v.kernel_mode, vgcf::IN_KERNEL)
        | flag(v.up, vgcf::ONLINE)
        | flag(
            v.failsafe_callback.mask_events,
            vgcf::FAILSAFE_DISABLES_EVENTS,
        )
        | flag(
            v.syscall_callback.mask_events,
            vgcf::SYSCALL_DISABLES_EVENTS,
        );
    let r = &v.regs;
    let [ds, es, fs, gs] = v.selectors;
    c.user_regs = CpuUserRegs {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        rbp: r.rbp,
        rbx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        rax: r.rax,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rip: r.rip,
        cs: r.cs as u16,
        rflags: (r.rflags & !RFLAGS_IOPL) | (u64::from(v.iopl) << 12),
        rsp: r.rsp,
        ss: r.ss as u16,
        ds,
        es,
        fs,
        gs,
        ..CpuUserRegs::default()
    };
    for (i, (slot, t)) in c.trap_ctxt.iter_mut().zip(&v.traps).enumerate() {
        if t.address != 0 {
            *slot = TrapInfo {
                vector: i as u8,
                flags: t.flags,
                cs: FLAT_KERNEL_CS,
                _pad: 0,
                address: t.address,
            };
        }
    }
    (c.ldt_base, c.ldt_ents) = if v.ldt_ents == 0 {
        (0, 0)
    } else {
        (v.ldt_base, v.ldt_ents as u64)
    };
    for (slot, &f) in c.gdt_frames.iter_mut().zip(&v.gdt_frames) {
        *slot = f.raw();
    }
    c.gdt_ents = v.gdt_entries as u64;
    (c.kernel_ss, c.kernel_sp) = (v.kernel_ss, v.kernel_sp);
    c.ctrlreg[0] = (cpu::read_cr0() & !CR0_TS) | if ts { CR0_TS } else { 0 };
    c.ctrlreg[1] = v.user_cr3;
    c.ctrlreg[2] = v.cr2;
    c.ctrlreg[3] = v.kernel_cr3;
    c.ctrlreg[4] = v.cr4;
    c.debugreg = v.debugreg;
    c.event_callback_eip = v.event_callback.address;
    c.failsafe_callback_eip = v.failsafe_callback.address;
    c.syscall_callback_eip = v.syscall_callback.address;
    c.vm_assist = d.vm_assist.load(Ordering::Acquire);
    (c.fs_base, c.gs_base_kernel, c.gs_base_user) = (v.fs_base, v.gs_base_kernel, v.gs_base_user);
    c
}

/// `VCPUOP_up`: makes initialised vCPU `vid` runnable (again, where it went down).
pub fn up(d: &Domain, vid: VcpuId) -> Result<(), Errno> {
    let slot = d.vcpus.get(vid.index()).ok_or(Errno::ENOENT)?;
    // `up` and the scheduler's state change together under the vCPU's lock (as in
    // `down_self`), so an up racing with the vCPU's own down is never lost.
    let mut v = slot.lock();
    if !v.initialised {
        return Err(Errno::EINVAL);
    }
    if v.up {
        return Ok(());
    }
    crate::sched::vcpu_up(&d.sched, vid)?;
    v.up = true;
    drop(v);
    crate::ginfo!(d, "{}v{vid}: up", d.id);
    Ok(())
}

/// `VCPUOP_down` of vCPU `vid` of the caller's domain, as Xen: if no other vCPU is up, the
/// domain powers off; otherwise `vid` goes offline until `VCPUOP_up` (the calling vCPU itself
/// at the end of this call, which returns 0 when it is up again; another one at its next
/// return to the guest, wherever it runs).
pub fn down(d: &Domain, vid: VcpuId) -> Result<(), Errno> {
    let slot = d.vcpus.get(vid.index()).ok_or(Errno::ENOENT)?;
    let others_up = d
        .vcpus
        .iter()
        .enumerate()
        .any(|(i, v)| i != vid.index() && v.lock().up);
    if !others_up {
        if d.mark_stopped() {
            d.shutdown_reason
                .store(xen_abi::sched::reason::POWEROFF, Ordering::Release);
        }
        return Ok(());
    }
    if vid == this_vcpu_id() {
        return down_self(d);
    }
    let mut v = slot.lock();
    if v.up {
        crate::sched::vcpu_down(&d.sched, vid)?;
        v.up = false;
        drop(v);
        crate::ginfo!(d, "{}v{vid}: down (by {}v{})", d.id, d.id, this_vcpu_id());
    }
    Ok(())
}

/// `VCPUOP_down` of the calling vCPU, another one being up.
fn down_self(d: &Domain) -> Result<(), Errno> {
    let vid = this_vcpu_id();
    // Its half-done page-table work would stay `Busy` for the other vCPUs while it is down:
    // give it up (chunk by chunk; the frame-table lock is released in between).
    while d.mm_op(|ft, mem, pending, budget| ft.give_up_preemptible(mem, pending, budget))
        == Err(hestia_core::pv_mm::MmError::Preempted)
    {}
    {
        let mut v = d.this_vcpu().lock();
        crate::sched::down_current();
        v.up = false;
    }
    crate::ginfo!(d, "{}v{vid}: down", d.id);
    Ok(())
}
