//! Per-CPU data, reached through the GS base: `gs:0` holds a pointer to the CPU's own
//! [`PerCpu`], so `this_cpu()` is one load. Each `PerCpu` is allocated once when its CPU is
//! brought up and never freed; the table [`cpu`] finds any CPU's data by index. A `PerCpu` fills
//! whole pages of its own: with XPTI the entry paths read it (through GS) while a guest's
//! restricted page tables are live, so those map exactly its pages ([`super::xpti`]).

use core::arch::asm;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use alloc::boxed::Box;
use hestia_core::timer_queue::TimerQueue;

use super::cpu;
use super::gdt::{Gdt, IST_STACKS, Tss};
use super::{idt, xpti};
use crate::timer::TimerFn;

/// Most CPUs Hestia drives.
pub const MAX_CPUS: usize = 64;

/// One CPU's private state.
#[repr(C, align(4096))]
pub struct PerCpu {
    self_ptr: *const PerCpu,
    /// Index (0 = BSP), dense in bring-up order.
    pub index: u32,
    /// Local APIC id.
    pub apic_id: u32,
    /// This CPU's GDT (with its TSS descriptor).
    pub gdt: Gdt,
    /// This CPU's TSS (IST stacks).
    pub tss: Tss,
    /// Top of the CPU's main stack (also TSS.RSP0: traps from guests land here).
    pub stack_top: u64,
    /// The guest RSP, saved by the SYSCALL entry while it switches stacks.
    pub syscall_scratch: u64,
    /// XPTI: this CPU's restricted PML4 (physical), or 0 when guests run on their own tables.
    pub xpti_root: u64,
    /// XPTI: the page tables the entry paths switch back to from the restricted ones (the
    /// guest's L4, which carries Hestia's slots); 0 while no guest runs restricted.
    pub xpti_full_cr3: AtomicU64,
    /// XPTI: the guest L4 whose entries the restricted PML4 holds.
    pub xpti_synced: AtomicU64,
    /// XPTI: the restricted PML4 must be copied again before a guest runs on it (a TLB flush,
    /// or a change to an L4 entry it holds, happened since the last copy).
    pub xpti_stale: AtomicBool,
    /// Hypervisor timers owned by this CPU.
    pub timers: spin::Mutex<TimerQueue<TimerFn>>,
    /// Set once the CPU runs its idle loop.
    pub online: AtomicBool,
    /// LAPIC timer interrupts taken.
    pub timer_irqs: AtomicU64,
    /// Test timer callbacks run (self-test).
    pub test_ticks: AtomicU64,
    /// IPIs received.
    pub ipis: AtomicU64,
    /// A register dump of this CPU was requested (debug key `0`).
    pub dump_requested: AtomicBool,
    /// The guest context loaded here, as the PV layer publishes it (opaque to this layer:
    /// an address and an index), read with one GS-relative load on every trap
    /// ([`loaded_guest`]).
    pub guest: AtomicU64,
    /// The index that goes with [`PerCpu::guest`].
    pub guest_index: AtomicU32,
    /// Whose page tables this CPU runs on, so whose translations its TLB may hold: a guest
    /// address space as the layers above tag it (a domain id), or [`NO_GUEST_SPACE`] on
    /// Hestia's own tables (`hestia_core::tlb_flush`).
    pub guest_space: AtomicU32,
    /// An address the layers above publish for their check on every return to the guest
    /// loaded here (opaque to this layer; 0 for none), read with one GS-relative load
    /// ([`return_check`]).
    pub return_check: AtomicU64,
    /// Whether the guest context loaded here runs in its kernel mode, as the layers above
    /// publish it whenever they load a context or switch its mode (false when none is loaded);
    /// read on every SYSCALL ([`guest_kernel_mode`]).
    pub guest_kernel_mode: AtomicBool,
}

// SAFETY: `self_ptr` only ever points at the structure itself; all mutable state is atomic or
// behind a lock.
unsafe impl Sync for PerCpu {}
// SAFETY: as above.
unsafe impl Send for PerCpu {}

static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static NR_CPUS: AtomicU32 = AtomicU32::new(0);

/// Allocates the per-CPU data for CPU `index` and publishes it in the table; `None` when
/// memory for its GDT or its XPTI page tables is exhausted.
pub fn create(
    index: u32,
    apic_id: u32,
    stack_top: u64,
    ist: [u64; IST_STACKS],
) -> Option<&'static PerCpu> {
    let gdt = Gdt::new()?;
    let p = Box::leak(Box::new(PerCpu {
        self_ptr: core::ptr::null(),
        index,
        apic_id,
        gdt,
        tss: Tss::new(stack_top, [0; IST_STACKS]),
        stack_top,
        syscall_scratch: 0,
        xpti_root: 0,
        xpti_full_cr3: AtomicU64::new(0),
        xpti_synced: AtomicU64::new(0),
        xpti_stale: AtomicBool::new(true),
        timers: spin::Mutex::new(TimerQueue::new()),
        online: AtomicBool::new(false),
        timer_irqs: AtomicU64::new(0),
        test_ticks: AtomicU64::new(0),
        ipis: AtomicU64::new(0),
        dump_requested: AtomicBool::new(false),
        guest: AtomicU64::new(0),
        guest_index: AtomicU32::new(0),
        guest_space: AtomicU32::new(hestia_core::tlb_flush::NO_GUEST_SPACE),
        return_check: AtomicU64::new(0),
        guest_kernel_mode: AtomicBool::new(false),
    }));
    p.self_ptr = p;
    let me = p as *const PerCpu as u64;
    p.tss = Tss::new(stack_top, ist.map(|top| idt::prepare_ist_stack(top, me)));
    if xpti::enabled() {
        p.xpti_root = xpti::build_root(p, [stack_top].into_iter().chain(ist))?;
    }
    CPUS[index as usize].store(p, Ordering::Release);
    NR_CPUS.fetch_max(index + 1, Ordering::AcqRel);
    Some(p)
}

/// Loads this CPU's GS base with its per-CPU pointer.
pub fn install(p: &'static PerCpu) {
    // SAFETY: GS_BASE exists on every x86_64 CPU; `p` lives forever and `gs:0` points to itself,
    // which is what `this_cpu` relies on.
    unsafe { cpu::wrmsr(cpu::msr::GS_BASE, p as *const PerCpu as u64) };
}

/// This CPU's data. Only valid after [`install`]; early code uses `cpu::current_cpu_index`.
pub fn this_cpu() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: after `install`, gs:0 holds the address of this CPU's leaked `PerCpu`.
    unsafe {
        asm!("mov %gs:0, {}", out(reg) p, options(att_syntax, nostack, readonly, preserves_flags))
    };
    // SAFETY: `p` points to a leaked, never-freed `PerCpu`.
    unsafe { &*p }
}

/// The 8 bytes at offset `OFF` of this CPU's `PerCpu`, by one GS-relative load.
///
/// # Safety
/// `install` ran on this CPU, and `OFF` is the offset of a `u64` field of `PerCpu` (an atomic
/// only this CPU stores to, or one set before `install`).
#[inline(always)]
unsafe fn gs_u64<const OFF: usize>() -> u64 {
    let v: u64;
    // SAFETY: forwarded to the caller: gs:OFF is that field of this CPU's `PerCpu`.
    unsafe {
        asm!("mov %gs:{off}, {v}", off = const OFF, v = out(reg) v,
            options(att_syntax, nostack, pure, readonly, preserves_flags))
    };
    v
}

/// The 4 bytes at offset `OFF` of this CPU's `PerCpu`, as [`gs_u64`].
///
/// # Safety
/// As [`gs_u64`], for a `u32` field.
#[inline(always)]
unsafe fn gs_u32<const OFF: usize>() -> u32 {
    let v: u32;
    // SAFETY: forwarded to the caller.
    unsafe {
        asm!("mov %gs:{off}, {v:e}", off = const OFF, v = out(reg) v,
            options(att_syntax, nostack, pure, readonly, preserves_flags))
    };
    v
}

/// The byte at offset `OFF` of this CPU's `PerCpu`, as [`gs_u64`].
///
/// # Safety
/// As [`gs_u64`], for a `u8` or `bool` field.
#[inline(always)]
unsafe fn gs_u8<const OFF: usize>() -> u8 {
    let v: u32;
    // SAFETY: forwarded to the caller.
    unsafe {
        asm!("movzbl %gs:{off}, {v:e}", off = const OFF, v = out(reg) v,
            options(att_syntax, nostack, pure, readonly, preserves_flags))
    };
    v as u8
}

/// This CPU's index, read straight from per-CPU data.
pub fn current_index() -> u32 {
    // SAFETY: `index` is a `u32` set before `install`.
    unsafe { gs_u32::<{ offset_of!(PerCpu, index) }>() }
}

/// Set once per-CPU data (GS base) is valid on the BSP; before that every CPU is CPU 0.
static PERCPU_READY: AtomicBool = AtomicBool::new(false);

/// Marks per-CPU data as usable.
pub fn set_percpu_ready() {
    PERCPU_READY.store(true, Ordering::Release);
}

/// True once per-CPU data is installed on the BSP.
pub fn percpu_ready() -> bool {
    PERCPU_READY.load(Ordering::Acquire)
}

/// This CPU's index (0 = BSP). Usable from the first instruction of boot and from fault paths.
pub fn current_cpu_index() -> u32 {
    if !PERCPU_READY.load(Ordering::Acquire) {
        return 0;
    }
    current_index()
}

/// This CPU's published guest context ([`PerCpu::guest`], [`PerCpu::guest_index`]), read
/// straight from per-CPU data (only this CPU writes it).
pub fn loaded_guest() -> (u64, u32) {
    // SAFETY: both are atomics of those sizes only this CPU stores to.
    unsafe {
        (
            gs_u64::<{ offset_of!(PerCpu, guest) }>(),
            gs_u32::<{ offset_of!(PerCpu, guest_index) }>(),
        )
    }
}

/// This CPU's [`PerCpu::return_check`], read straight from per-CPU data (only this CPU
/// writes it).
#[inline(always)]
pub fn return_check() -> u64 {
    // SAFETY: an `AtomicU64` only this CPU stores to.
    unsafe { gs_u64::<{ offset_of!(PerCpu, return_check) }>() }
}

/// Publishes this CPU's [`PerCpu::return_check`].
pub fn set_return_check(addr: u64) {
    this_cpu().return_check.store(addr, Ordering::Relaxed);
}

/// This CPU's [`PerCpu::guest_kernel_mode`], read straight from per-CPU data (only this CPU
/// writes it).
#[inline(always)]
pub fn guest_kernel_mode() -> bool {
    // SAFETY: an `AtomicBool` (0 or 1) only this CPU stores to.
    unsafe { gs_u8::<{ offset_of!(PerCpu, guest_kernel_mode) }>() != 0 }
}

/// Publishes this CPU's [`PerCpu::guest_kernel_mode`].
pub fn set_guest_kernel_mode(kernel: bool) {
    this_cpu()
        .guest_kernel_mode
        .store(kernel, Ordering::Relaxed);
}

/// The data of CPU `index`, if it exists.
pub fn cpu(index: u32) -> Option<&'static PerCpu> {
    let p = CPUS.get(index as usize)?.load(Ordering::Acquire);
    // SAFETY: non-null entries point to leaked `PerCpu`s.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Iterates over all CPUs that have per-CPU data.
pub fn all() -> impl Iterator<Item = &'static PerCpu> {
    (0..NR_CPUS.load(Ordering::Acquire)).filter_map(cpu)
}

/// Number of CPUs online (running their idle loop).
pub fn online_count() -> u32 {
    all().filter(|c| c.online.load(Ordering::Acquire)).count() as u32
}
