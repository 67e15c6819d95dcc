//! Application-processor bring-up and cross-CPU calls.
//!
//! Bring-up (Intel SDM Vol. 3A, 9.4.4, INIT-SIPI-SIPI): a trampoline is copied to a free page
//! below 1 MiB; a start-up IPI starts the AP there in real mode, CS = page >> 4. The trampoline
//! loads its own GDT, Hestia's PML4 (allocated below 4 GiB so a 32-bit CR3 load reaches it),
//! enables PAE/LME/NXE and paging in one step and far-jumps to 64-bit code in the same page
//! (identity-mapped for the duration of bring-up), which jumps to [`ap_entry`] in the image with
//! the AP's guarded stack. APs start one at a time, sharing the trampoline's data slots.
//!
//! Cross-CPU calls: [`call_on`] stores a function for a CPU and sends it the `CALL` IPI.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
pub use hestia_core::tlb_flush::Flush;
use hestia_core::tlb_flush::{self, NO_GUEST_SPACE};

use super::apic::{self, Delivery};
use super::percpu::{self, MAX_CPUS, PerCpu};
use super::trap::vectors;
use super::{cpu, gdt, idt, tsc};
use crate::mm;
use crate::mm::paging::{Access, PageSize};

global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global hestia_ap_tramp_start
hestia_ap_tramp_start:
    .code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_gdtr - hestia_ap_tramp_start)
    movl (ap_cr3 - hestia_ap_tramp_start), %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $0xC0000080, %ecx
    movl (ap_efer - hestia_ap_tramp_start), %eax
    xorl %edx, %edx
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax
    movl %eax, %cr0
    ljmpl *(ap_farptr - hestia_ap_tramp_start)
    .code64
ap_long:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov ap_stack(%rip), %rsp
    mov ap_arg(%rip), %rdi
    mov ap_entry(%rip), %rax
    xor %ebp, %ebp
    push $0
    jmp *%rax
    .balign 8
ap_gdt:
    .quad 0
    /* Accessed bits preset: the CPU would otherwise write them into a read-only page. */
    .quad 0x00AF9B000000FFFF
    .quad 0x00CF93000000FFFF
ap_gdtr:
    .short 23
    .global hestia_ap_gdt_base
hestia_ap_gdt_base:
    .long 0
    .balign 8
    .global hestia_ap_farptr
hestia_ap_farptr:
ap_farptr:
    .long 0
    .short 0x08
    .balign 4
    .global hestia_ap_cr3
hestia_ap_cr3:
ap_cr3:
    .long 0
    .global hestia_ap_efer
hestia_ap_efer:
ap_efer:
    .long 0
    .balign 8
    .global hestia_ap_stack
hestia_ap_stack:
ap_stack:
    .quad 0
    .global hestia_ap_entry
hestia_ap_entry:
ap_entry:
    .quad 0
    .global hestia_ap_arg
hestia_ap_arg:
ap_arg:
    .quad 0
    .global hestia_ap_tramp_end
hestia_ap_tramp_end:
    .global hestia_ap_gdt
    .set hestia_ap_gdt, ap_gdt
    .global hestia_ap_long
    .set hestia_ap_long, ap_long
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static hestia_ap_tramp_start: u8;
    static hestia_ap_tramp_end: u8;
    static hestia_ap_gdt: u8;
    static hestia_ap_gdt_base: u8;
    static hestia_ap_long: u8;
    static hestia_ap_farptr: u8;
    static hestia_ap_cr3: u8;
    static hestia_ap_efer: u8;
    static hestia_ap_stack: u8;
    static hestia_ap_entry: u8;
    static hestia_ap_arg: u8;
}

/// Offset of a trampoline symbol from the template's start.
fn off(s: *const u8) -> u64 {
    s as u64 - (&raw const hestia_ap_tramp_start) as u64
}

/// Allocates the main and IST stacks of a CPU; returns `(stack top, IST tops)`.
pub fn alloc_cpu_stacks() -> Option<(u64, [u64; gdt::IST_STACKS])> {
    // 128 KiB: the XZ decoder of the dom0 builder alone needs about 32 KiB of stack.
    let main = mm::alloc_stack(32)?;
    let ist = [
        mm::alloc_stack(4)?,
        mm::alloc_stack(4)?,
        mm::alloc_stack(4)?,
        mm::alloc_stack(4)?,
    ];
    Some((main, ist))
}

/// Loads this CPU's GDT, TSS, GS base and IDT (GS before the IDT: the NMI entry relies on it).
pub fn load_cpu_tables(p: &'static PerCpu) {
    gdt::load(&p.gdt, &p.tss);
    percpu::install(p);
    idt::load();
}

/// Called by the trampoline on each AP, on its own stack, with its CPU index.
extern "C" fn ap_entry(index: u64) -> ! {
    let Some(p) = percpu::cpu(index as u32) else {
        cpu::halt_forever()
    };
    load_cpu_tables(p);
    super::syscall::init_cpu();
    cpu::enable_guest_fpu();
    cpu::enable_smep_smap();
    apic::init_cpu();
    p.online.store(true, Ordering::Release);
    loop {
        cpu::idle();
    }
}

/// Outcome of bring-up.
#[derive(Clone, Copy, Debug, Default)]
pub struct BringUp {
    /// APs that came online.
    pub started: u32,
    /// APs that did not respond.
    pub failed: u32,
    /// Enabled processors beyond [`MAX_CPUS`].
    pub skipped: u32,
}

/// Starts every enabled processor other than the BSP.
pub fn start_aps(
    apic_ids: impl Iterator<Item = u32>,
    bsp_apic: u32,
) -> Result<BringUp, &'static str> {
    let mut r = BringUp::default();
    let mut ids = apic_ids.filter(|&id| id != bsp_apic).peekable();
    if ids.peek().is_none() {
        return Ok(r);
    }
    let page = mm::alloc_zeroed_frames(1, 4096, 0x10_0000)
        .ok_or("no free page below 1 MiB for the AP trampoline")?;
    let root = mm::kernel_root();
    if root >= 1 << 32 {
        return Err("Hestia's PML4 lies above 4 GiB");
    }
    let len = off(&raw const hestia_ap_tramp_end);
    let dst = mm::phys_to_virt(page);
    let put32 = |o: u64, v: u32| {
        // SAFETY: `o` is an offset inside the copied template, which occupies our private page.
        unsafe { ((dst + o) as *mut u32).write_unaligned(v) }
    };
    let put64 = |o: u64, v: u64| {
        // SAFETY: as above.
        unsafe { ((dst + o) as *mut u64).write_unaligned(v) }
    };
    // SAFETY: `len` bytes of template from the image into the private page (which is 4 KiB,
    // and the template is far smaller).
    unsafe {
        core::ptr::copy_nonoverlapping(
            &raw const hestia_ap_tramp_start,
            dst as *mut u8,
            len as usize,
        )
    };
    put32(
        off(&raw const hestia_ap_gdt_base),
        (page + off(&raw const hestia_ap_gdt)) as u32,
    );
    put32(
        off(&raw const hestia_ap_farptr),
        (page + off(&raw const hestia_ap_long)) as u32,
    );
    put32(off(&raw const hestia_ap_cr3), root as u32);
    let efer = cpu::efer();
    // LMA (bit 10) is the CPU's own status bit: the AP sets it when it enables paging.
    put32(off(&raw const hestia_ap_efer), (efer & !(1 << 10)) as u32);
    put64(
        off(&raw const hestia_ap_entry),
        ap_entry as *const () as u64,
    );
    mm::with_kernel_pt(|pt| pt.map(page, page, PageSize::Size4K, Access::ReadExec))
        .ok_or("no kernel page tables")?
        .map_err(|_| "cannot map the trampoline")?;

    let mut next_index = 1u32;
    for id in ids {
        if next_index as usize >= MAX_CPUS {
            r.skipped += 1;
            continue;
        }
        let Some(p) =
            alloc_cpu_stacks().and_then(|(stack, ist)| percpu::create(next_index, id, stack, ist))
        else {
            crate::warn!("smp: out of memory for the stacks and GDT of APIC id {id}");
            r.failed += 1;
            continue;
        };
        put64(off(&raw const hestia_ap_stack), p.stack_top);
        put64(off(&raw const hestia_ap_arg), u64::from(next_index));
        apic::send_ipi(id, Delivery::Init);
        tsc::delay_ns(10_000_000);
        for _ in 0..2 {
            apic::send_ipi(id, Delivery::Startup((page >> 12) as u8));
            if wait_online(p, 200_000) {
                break;
            }
        }
        if wait_online(p, 2_000_000_000) {
            r.started += 1;
            next_index += 1;
            crate::debug!("smp: CPU{} (APIC id {id}) online", p.index);
        } else {
            crate::warn!("smp: APIC id {id} did not start (no response to INIT-SIPI-SIPI)");
            r.failed += 1;
            // The index is burned: a late AP must not share another CPU's data.
            next_index += 1;
        }
    }
    if let Some(Some(flush)) = mm::with_kernel_pt(|pt| pt.unmap_4k(page)) {
        flush.flush();
    }
    Ok(r)
}

fn wait_online(p: &PerCpu, ns: u64) -> bool {
    let end = tsc::uptime_ns() + ns;
    while tsc::uptime_ns() < end {
        if p.online.load(Ordering::Acquire) {
            return true;
        }
        core::hint::spin_loop();
    }
    p.online.load(Ordering::Acquire)
}

static PENDING_CALL: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// Runs `f` on CPU `index` from its `CALL` IPI handler. Returns false if that CPU is not online
/// or already has a call pending.
pub fn call_on(index: u32, f: fn()) -> bool {
    let Some(p) = percpu::cpu(index).filter(|p| p.online.load(Ordering::Acquire)) else {
        return false;
    };
    if PENDING_CALL[index as usize]
        .compare_exchange(0, f as usize, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    apic::send_ipi(p.apic_id, Delivery::Fixed(vectors::CALL));
    true
}

/// The `CALL` IPI handler.
pub fn handle_call_ipi() {
    let i = percpu::current_index() as usize;
    let f = PENDING_CALL[i].swap(0, Ordering::AcqRel);
    if f != 0 {
        // SAFETY: non-zero slots hold a `fn()` stored by `call_on`.
        let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(f) };
        f();
    }
}

static PONGS: AtomicU64 = AtomicU64::new(0);
static PING_ORIGIN: AtomicU32 = AtomicU32::new(0);

/// The `PONG` IPI handler: counts replies.
pub fn handle_pong_ipi() {
    PONGS.fetch_add(1, Ordering::AcqRel);
}

fn reply_pong() {
    apic::send_ipi(
        PING_ORIGIN.load(Ordering::Acquire),
        Delivery::Fixed(vectors::PONG),
    );
}

/// One IPI round trip to CPU `index` and back (CALL there, PONG here), in TSC cycles.
/// Interrupts must be enabled on the caller. `None` on timeout.
pub fn ping(index: u32) -> Option<u64> {
    PING_ORIGIN.store(percpu::this_cpu().apic_id, Ordering::Release);
    let before = PONGS.load(Ordering::Acquire);
    let t0 = cpu::rdtsc();
    if !call_on(index, reply_pong) {
        return None;
    }
    let deadline = tsc::uptime_ns() + 1_000_000_000;
    while PONGS.load(Ordering::Acquire) == before {
        if tsc::uptime_ns() > deadline {
            return None;
        }
        core::hint::spin_loop();
    }
    Some(cpu::rdtsc() - t0)
}

/// Interrupts CPU `index` with the `KICK` IPI (its handler does nothing: being interrupted is
/// the point, see `pv::events::kick`).
pub fn kick(index: u32) {
    if let Some(p) = percpu::cpu(index).filter(|p| p.online.load(Ordering::Acquire)) {
        apic::send_ipi(p.apic_id, Delivery::Fixed(vectors::KICK));
    }
}

/// TLB shootdown requests so far, and each CPU's last one done.
static FLUSH_GEN: AtomicU64 = AtomicU64::new(0);
static FLUSH_DONE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// TSC ticks each CPU has spent waiting for the others to flush (their NMIs may be late when
/// they run under an emulator that does not schedule them).
static FLUSH_WAIT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// TSC ticks this CPU has spent so far waiting in [`flush_guest_tlbs`] for other CPUs.
pub fn flush_wait_ticks() -> u64 {
    FLUSH_WAIT[percpu::current_index() as usize].load(Ordering::Relaxed)
}

/// This CPU is about to load the page tables of guest address space `space` (a domain id):
/// from now on its TLB may hold that space's translations. Called before the CR3 load, so a
/// CPU that changes the space's tables either sees this CPU in it or changed them before
/// this CPU's first walk of them.
pub fn entered_guest_space(space: u32) {
    percpu::this_cpu().guest_space.swap(space, Ordering::SeqCst);
}

/// Loads Hestia's own page tables on this CPU, which map no guest (Xen's idle page tables):
/// before a page table this CPU may be running on goes away with its domain.
pub fn use_idle_page_tables() {
    // SAFETY: Hestia's tables map all of Hestia (image, stacks, per-CPU data, heap, direct
    // map), which is all that runs here until a vCPU is loaded again.
    unsafe { cpu::write_cr3(mm::kernel_root()) };
    left_guest_space();
}

/// This CPU has just loaded Hestia's own page tables: the CR3 load dropped every guest
/// translation (guest mappings are never global), so no flush needs it any more.
fn left_guest_space() {
    percpu::this_cpu()
        .guest_space
        .store(NO_GUEST_SPACE, Ordering::Release);
}

/// Flushes guest translations from this CPU's TLB and from every other CPU `which` names,
/// returning once all are gone (with XPTI, each CPU also copies its restricted page tables
/// again before it next runs a guest). The others are interrupted with an NMI, which arrives
/// even where interrupts are off (a CPU spinning on a lock this one holds), and flush in the
/// NMI handler ([`flush_on_nmi`]). The caller has written the entries whose old translations
/// go: the fence orders those writes before the reading of the other CPUs' spaces.
pub fn flush_guest_tlbs(which: Flush) {
    flush_this_cpu();
    core::sync::atomic::fence(Ordering::SeqCst);
    let me = percpu::current_index();
    let spaces = percpu::all().map(|p| (p.index, p.guest_space.load(Ordering::SeqCst)));
    let others = tlb_flush::targets(which, me, spaces);
    if others == 0 {
        return;
    }
    let generation = FLUSH_GEN.fetch_add(1, Ordering::AcqRel) + 1;
    let targets = (0..MAX_CPUS as u32).filter(|i| others & (1 << i) != 0);
    for i in targets.clone() {
        if let Some(p) = percpu::cpu(i) {
            apic::send_ipi(p.apic_id, Delivery::Nmi);
        }
    }
    let start = cpu::rdtsc();
    for i in targets {
        while FLUSH_DONE[i as usize].load(Ordering::Acquire) < generation {
            core::hint::spin_loop();
        }
    }
    FLUSH_WAIT[me as usize].fetch_add(cpu::rdtsc().wrapping_sub(start), Ordering::Relaxed);
}

/// Drops this CPU's guest translations: its TLB, and (XPTI) its copy of the guest's L4.
fn flush_this_cpu() {
    cpu::write_cr3_reload();
    super::xpti::flushed_here();
}

/// In the NMI handler: flushes this CPU's TLB if a shootdown is outstanding (true if so).
pub fn flush_on_nmi() -> bool {
    let index = percpu::this_cpu().index as usize;
    let generation = FLUSH_GEN.load(Ordering::Acquire);
    if FLUSH_DONE[index].load(Ordering::Acquire) < generation {
        flush_this_cpu();
        FLUSH_DONE[index].store(generation, Ordering::Release);
        return true;
    }
    false
}

/// Halts every other CPU (fatal stop). Safe to call before APs exist.
pub fn halt_others() {
    if percpu::online_count() > 1 {
        apic::send_ipi_all_others(vectors::HALT);
    }
}

/// Asks every online CPU (this one included) to dump its registers from an NMI.
pub fn request_dumps() {
    for p in percpu::all().filter(|p| p.online.load(Ordering::Acquire)) {
        p.dump_requested.store(true, Ordering::Release);
        apic::send_ipi(p.apic_id, Delivery::Nmi);
    }
}

/// Switches to `stack_top` and calls `f(arg)`, never returning.
pub fn switch_stack(stack_top: u64, f: extern "C" fn(u64) -> !, arg: u64) -> ! {
    // SAFETY: `stack_top` is the top of a fresh, mapped stack owned by this CPU; nothing on the
    // old stack is referenced afterwards because `f` never returns.
    unsafe {
        asm!(
            "mov {st}, %rsp",
            "xor %ebp, %ebp",
            "push $0",
            "jmp *{f}",
            st = in(reg) stack_top,
            f = in(reg) f,
            in("rdi") arg,
            options(att_syntax, noreturn)
        )
    }
}
