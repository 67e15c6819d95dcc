//! A PV vCPU's state in and out of its physical CPU: what the scheduler saves when it takes a
//! vCPU off a CPU ([`save`]) and loads when it puts one on ([`load`]).
//!
//! While a vCPU runs, part of its state lives only in the CPU: its registers (in the trap frame
//! at the top of the CPU's stack while Hestia runs on its behalf), the FS base, the GS base of
//! its current mode (in KERNEL_GS_BASE, because of SWAPGS on entry), its data segment
//! selectors, its x87/SSE/AVX state with XCR0 and CR0.TS (`arch::x86_64::fpu`, switched
//! eagerly), the page tables of its current mode (CR3), the CPU's copies of its GDT
//! and LDT descriptors, CR4.TSD, its debug registers and its periodic timer. Everything else
//! (the other mode's GS base and L4, callbacks, the virtual IDT, IOPL, the other timers) is
//! kept in [`Vcpu`] at all times. A saved vCPU can be loaded on any CPU.
//!
//! The scheduler calls them through [`VcpuRef`]'s `crate::sched::Vcpu`, on the trap path,
//! interrupts off; they hold the vCPU's lock and no other lock but the scheduler's. The switch
//! between two vCPUs of different domains also changes the guest translations the TLB may
//! hold: the CR3 load drops them (guest mappings are never global).
//!
//! Loading a vCPU publishes it in this CPU's data for the trap path ([`current`],
//! `super::domain::this_vcpu_id`, the upcall check, the SYSCALL mode) and keeps a counted
//! reference to it ([`current_ref`]) until it is saved.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use super::descriptor;
use super::domain::DomainRef;
use crate::arch::x86_64::idt::TrapFrame;
use crate::arch::x86_64::percpu::{self, MAX_CPUS};
use crate::arch::x86_64::{cpu, smp, uaccess};
use crate::mm::guest;
use crate::sched::{self, DomainSched};
use hestia_core::ids::VcpuId;
use xen_abi::errno::Errno;

use super::domain::{Domain, Vcpu, VcpuRef};
use super::events;

/// The vCPU loaded on each CPU, counted: it keeps the domain [`current`] reads alive.
static LOADED: [spin::Mutex<Option<Arc<VcpuRef>>>; MAX_CPUS] =
    [const { spin::Mutex::new(None) }; MAX_CPUS];

fn loaded_here() -> &'static spin::Mutex<Option<Arc<VcpuRef>>> {
    &LOADED[percpu::current_index() as usize % MAX_CPUS]
}

/// The domain of the vCPU this CPU runs, if any.
#[inline]
pub fn current() -> Option<&'static Domain> {
    // One GS-relative load: this runs several times on every trap.
    let p = percpu::loaded_guest().0 as *const Domain;
    // SAFETY: a non-null pointer is the domain of the vCPU loaded on this CPU, published by
    // `publish` after this CPU's `LOADED` took a counted reference to it, and withdrawn by
    // `unpublish` before that reference goes. Only this CPU changes either, on its trap path,
    // after which no reference obtained before the switch is used.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// A counted reference to the vCPU this CPU runs.
pub fn current_ref() -> Option<Arc<VcpuRef>> {
    loaded_here().lock().clone()
}

/// Publishes `vr` as the vCPU loaded on this CPU.
fn publish(vr: Arc<VcpuRef>) {
    let (dom, id) = (&*vr.dom as *const Domain as u64, vr.id.raw());
    *loaded_here().lock() = Some(vr);
    let me = percpu::this_cpu();
    me.guest_index.store(id, Ordering::Relaxed);
    me.guest.store(dom, Ordering::Release);
}

/// Withdraws the vCPU loaded on this CPU: none is.
fn unpublish() {
    let me = percpu::this_cpu();
    me.guest.store(0, Ordering::Release);
    me.guest_index.store(VcpuId::FIRST.raw(), Ordering::Relaxed);
    // Dropped outside the lock.
    let was = loaded_here().lock().take();
    drop(was);
}

/// Enters every vCPU of `d` in the scheduler with `params`, offline until brought up.
pub fn add_to_scheduler(d: &DomainRef, params: sched::Params) -> Result<(), Errno> {
    let vcpus = (0..d.vcpus.len() as u32)
        .map(|id| {
            Arc::new(VcpuRef {
                dom: d.clone(),
                id: VcpuId::unvalidated(id),
            }) as sched::VcpuHandle
        })
        .collect();
    sched::add_domain(&d.sched, vcpus, params)
}

impl sched::Vcpu for VcpuRef {
    fn domain(&self) -> &DomainSched {
        &self.dom.sched
    }

    fn id(&self) -> VcpuId {
        self.id
    }

    fn save(&self, f: &TrapFrame, saved: &mut dyn FnMut() -> Option<[u64; 6]>) {
        let mut v = self.dom.vcpus[self.id.index()].lock();
        save(&mut v, f);
        if let Some(info) = saved() {
            write_runstate(&self.dom, &v, info);
        }
        drop(v);
        unpublish();
    }

    fn load(self: Arc<Self>, f: &mut TrapFrame, loaded: &mut dyn FnMut() -> Option<[u64; 6]>) {
        publish(self.clone());
        let mut v = self.dom.vcpus[self.id.index()].lock();
        load(&self, &mut v, f);
        if let Some(info) = loaded() {
            write_runstate(&self.dom, &v, info);
        }
    }
}

/// CR4.TSD: RDTSC faults outside ring 0 (the guest asked for it through its virtual CR4).
const CR4_TSD: u64 = 1 << 2;

/// Saves what this CPU holds of `v`, the vCPU running here, whose registers are `f`.
fn save(v: &mut Vcpu, f: &TrapFrame) {
    v.regs = *f;
    let active_gs = cpu::kernel_gs_base();
    if v.kernel_mode {
        v.gs_base_kernel = active_gs;
    } else {
        v.gs_base_user = active_gs;
    }
    v.fs_base = cpu::fs_base();
    v.selectors = cpu::data_selectors();
    v.fpu.save();
    events::stop_periodic(v);
    percpu::set_return_check(0);
    percpu::set_guest_kernel_mode(false);
}

/// Loads vCPU `v` (`vr`) into this CPU and its registers into `f`, the frame the exit path
/// returns to the guest with.
fn load(vr: &Arc<VcpuRef>, v: &mut Vcpu, f: &mut TrapFrame) {
    let d: &Domain = &vr.dom;
    let cr3 = if v.kernel_mode {
        v.kernel_cr3
    } else {
        v.user_cr3
    };
    smp::entered_guest_space(d.id.0.into());
    // SAFETY: both of a vCPU's L4s hold L4 type references of its domain while they are its
    // tables, so they map only its frames and carry Hestia's slots (this code, its stack, the
    // per-CPU data and the heap).
    unsafe { cpu::write_cr3(cr3) };
    descriptor::load_gdt(v);
    descriptor::load_ldt(d.id.0, v);
    // Selectors after the descriptor tables they name; FS's base after its selector (the load
    // sets it from the descriptor), the guest GS base after SWAPGS's swap of it.
    let [ds, es, fs, gs] = v.selectors;
    let [ds, es, fs] = uaccess::load_guest_data_selectors(ds, es, fs);
    let (gs, _) = uaccess::load_guest_gs(gs);
    v.selectors = [ds, es, fs, gs];
    cpu::set_fs_base(v.fs_base);
    cpu::set_kernel_gs_base(if v.kernel_mode {
        v.gs_base_kernel
    } else {
        v.gs_base_user
    });
    for i in [0u8, 1, 2, 3, 6, 7] {
        // SAFETY: every value in `debugreg` passed `set_debugreg`'s checks (guest addresses,
        // no GD, no I/O breakpoints) or is the reset value.
        unsafe { cpu::write_dr(i, v.debugreg[usize::from(i)]) };
    }
    let cr4 = cpu::read_cr4();
    if (cr4 ^ v.cr4) & CR4_TSD != 0 {
        // SAFETY: TSD only makes RDTSC fault outside ring 0, i.e. in the guest.
        unsafe { cpu::write_cr4(cr4 ^ CR4_TSD) };
    }
    *f = v.regs;
    // Where the return path looks for a pending upcall (`events::before_guest_return`), and
    // the mode a SYSCALL comes from (`crate::hypercall::syscall`; `traps::toggle_mode` keeps
    // it current).
    percpu::set_return_check(d.shared().vcpu_info_addr(v.id));
    percpu::set_guest_kernel_mode(v.kernel_mode);
    events::update_time(d, v);
    events::start_periodic(vr, v);
    // Last: nothing may change CR0.TS or XCR0 after the vCPU's are loaded.
    v.fpu.restore();
}

/// `state_entry_time` flag while the guest's copy is being rewritten
/// (`VMASST_TYPE_runstate_update_flag`).
const RUNSTATE_UPDATE: u64 = 1 << 63;
/// `vm_assist` type of that flag.
const VMASST_RUNSTATE_UPDATE_FLAG: u32 = 5;

/// Copies `info` (`vcpu_runstate_info`) to the area vCPU `v` of `d` registered, if any; `v` is
/// the vCPU whose page tables are loaded here. The area is a kernel address: a vCPU in user
/// mode is written through its kernel tables for the moment, as Xen's
/// `update_guest_memory_policy` does. With `VMASST_TYPE_runstate_update_flag` the guest sees
/// `XEN_RUNSTATE_UPDATE` in `state_entry_time` for as long as the copy is inconsistent.
fn write_runstate(d: &Domain, v: &Vcpu, info: [u64; 6]) {
    let area = v.runstate_area;
    if area == 0 {
        return;
    }
    let loaded = cpu::read_cr3();
    let switch = !v.kernel_mode && v.kernel_cr3 != 0;
    if switch {
        // SAFETY: the vCPU's kernel L4 holds an L4 type reference of its domain, so it maps
        // only its frames and carries Hestia's slots (this code, its stack, the per-CPU data).
        unsafe { cpu::write_cr3(v.kernel_cr3) };
    }
    let flag = d.vm_assist.load(core::sync::atomic::Ordering::Relaxed)
        & (1 << VMASST_RUNSTATE_UPDATE_FLAG)
        != 0;
    // A fault only means the guest unmapped its area: nothing to report to it.
    if flag {
        let entry = info[1] | RUNSTATE_UPDATE;
        let _ = guest::write_obj(area + 8, &entry);
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        let mut flagged = info;
        flagged[1] = entry;
        let _ = guest::write_obj(area, &flagged);
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        let _ = guest::write_obj(area + 8, &info[1]);
    } else {
        let _ = guest::write_obj(area, &info);
    }
    if switch {
        // SAFETY: back to the tables that were loaded (the vCPU's user L4, which holds its
        // type reference too).
        unsafe { cpu::write_cr3(loaded) };
    }
}
