//! Trap dispatch: exceptions, device interrupts, IPIs; and the fatal-trap report.
//!
//! Vectors: 0-31 exceptions; [`vectors::IRQ_BASE`].. IOAPIC lines; [`vectors::MSI_BASE`]..
//! dom0's MSIs; 0xF0-0xFE Hestia's own
//! (LAPIC timer, IPIs); 0xFF spurious. Any exception Hestia did not expect is fatal: it prints
//! the vector, error code, RIP, CR0/2/3/4, all registers and a symbolised frame-pointer
//! backtrace, then stops the machine (see [`crate::machine::fatal_stop`]).

use core::fmt::Write;
use core::sync::atomic::Ordering;

use super::idt::TrapFrame;
use super::{apic, backtrace, cpu, ioapic, percpu, smp, syscall, uaccess};

/// Interrupt vector assignment.
pub mod vectors {
    /// First vector for IOAPIC inputs (GSI n -> IRQ_BASE + n).
    pub const IRQ_BASE: u8 = 0x30;
    /// Last vector usable for IOAPIC inputs (128 GSIs).
    pub const IRQ_LAST: u8 = 0xAF;
    /// First vector for dom0's MSIs.
    pub const MSI_BASE: u8 = 0xB0;
    /// Last vector for dom0's MSIs (64 of them).
    pub const MSI_LAST: u8 = 0xEF;
    /// LAPIC timer.
    pub const TIMER: u8 = 0xF0;
    /// "Run the pending cross-CPU call" IPI.
    pub const CALL: u8 = 0xF1;
    /// Reply IPI for the round-trip test.
    pub const PONG: u8 = 0xF2;
    /// "Halt now" IPI (fatal stop).
    pub const HALT: u8 = 0xF3;
    /// A vCPU has a new event to notice (`smp::kick`): nothing to do but return.
    pub const KICK: u8 = 0xF4;
    /// LAPIC error interrupt.
    pub const APIC_ERROR: u8 = 0xFE;
    /// Spurious interrupt.
    pub const SPURIOUS: u8 = 0xFF;
}

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved (15)",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved (31)",
];

/// What the layers above do with the traps that concern them, registered once at boot
/// ([`register`]) before interrupts are enabled: this layer calls them and never names them,
/// so the code reads downwards.
#[derive(Clone, Copy)]
pub struct Handlers {
    /// SYSCALL from ring 3: a guest's hypercall or system call.
    pub syscall: fn(&mut TrapFrame),
    /// An exception raised by guest code.
    pub guest_exception: fn(&mut TrapFrame),
    /// #DB raised in ring 0 (a guest's watchpoint on memory Hestia touched for it).
    pub debug_in_hypervisor: fn(&mut TrapFrame),
    /// The LAPIC timer fired.
    pub timer: fn(),
    /// MSI `n` of the hardware domain's devices arrived.
    pub msi: fn(u8),
    /// Before any return to guest code (the frame's vector says which trap it ends).
    pub before_guest_return: fn(&mut TrapFrame),
}

static HANDLERS: spin::Once<Handlers> = spin::Once::new();

/// Before registration no guest exists and no device interrupt is enabled: a trap meant for
/// the layers above is unexpected.
const EARLY: Handlers = Handlers {
    syscall: unexpected,
    guest_exception: unexpected,
    debug_in_hypervisor: unexpected,
    timer: || {},
    msi: |_| {},
    before_guest_return: |_| {},
};

fn unexpected(f: &mut TrapFrame) {
    fatal_trap(f)
}

/// Registers the layers above's trap handlers (once, at boot).
pub fn register(h: Handlers) {
    HANDLERS.call_once(|| h);
}

/// Called by `hestia_trap_common` with the saved frame; before any return to guest code the
/// registered `before_guest_return` runs (a vCPU switch, an upcall).
#[unsafe(link_section = ".text.hot")]
pub extern "C" fn dispatch(f: &mut TrapFrame) {
    let h = HANDLERS.get().unwrap_or(&EARLY);
    dispatch_inner(h, f);
    if f.cs & 3 == 3 {
        (h.before_guest_return)(f);
        syscall::choose_exit(f);
    }
}

#[unsafe(link_section = ".text.hot")]
fn dispatch_inner(h: &Handlers, f: &mut TrapFrame) {
    if f.vector == syscall::SYSCALL_VECTOR {
        (h.syscall)(f);
        return;
    }
    let from_guest = f.cs & 3 == 3;
    if f.vector < 32 && f.vector != 2 && from_guest {
        (h.guest_exception)(f);
        return;
    }
    // A guest pointer or selector that faulted in a guarded instruction: resume at its fix-up.
    if matches!(f.vector, 11 | 13 | 14)
        && !from_guest
        && let Some(fixup) = uaccess::fixup_for(f.rip)
    {
        f.rip = fixup;
        return;
    }
    let v = f.vector as u8;
    match v {
        1 => (h.debug_in_hypervisor)(f),
        2 => nmi(f),
        0..=31 => fatal_trap(f),
        vectors::TIMER => {
            apic::eoi();
            (h.timer)();
        }
        vectors::CALL => {
            apic::eoi();
            percpu::this_cpu().ipis.fetch_add(1, Ordering::Relaxed);
            smp::handle_call_ipi();
        }
        vectors::PONG => {
            apic::eoi();
            percpu::this_cpu().ipis.fetch_add(1, Ordering::Relaxed);
            smp::handle_pong_ipi();
        }
        vectors::HALT => cpu::halt_forever(),
        vectors::KICK => apic::eoi(),
        vectors::APIC_ERROR => {
            let esr = apic::read_error();
            apic::eoi();
            crate::warn!(
                "apic: CPU{} error interrupt, ESR {esr:#x}",
                percpu::current_cpu_index()
            );
        }
        vectors::SPURIOUS => {}
        vectors::IRQ_BASE..=vectors::IRQ_LAST => {
            ioapic::handle_irq(u32::from(v - vectors::IRQ_BASE));
            apic::eoi();
        }
        vectors::MSI_BASE..=vectors::MSI_LAST => {
            // Edge-triggered: acknowledged first, so a new message is never lost.
            apic::eoi();
            (h.msi)(v - vectors::MSI_BASE);
        }
        _ => {
            apic::eoi();
            crate::warn!(
                "trap: CPU{} unexpected interrupt vector {v:#x}",
                percpu::current_cpu_index()
            );
        }
    }
}

fn nmi(f: &TrapFrame) {
    // The paranoid entry made GS Hestia's, even when the NMI hit an entry or exit path.
    // NMIs coalesce, so one may carry both a shootdown and a dump request.
    if percpu::percpu_ready() {
        let flushed = smp::flush_on_nmi();
        let me = percpu::this_cpu();
        if me.dump_requested.swap(false, Ordering::AcqRel) {
            crate::console::with_lock(|w| {
                let _ = writeln!(
                    w,
                    "*** Dumping CPU{} state (apic id {}) ***",
                    me.index, me.apic_id
                );
                dump_registers(w, f);
                backtrace::print(w, f.rbp);
            });
            return;
        }
        if flushed {
            return;
        }
    }
    crate::warn!(
        "trap: CPU{} NMI received for an unknown reason at {:#x}",
        percpu::current_cpu_index(),
        f.rip
    );
}

/// Name of an exception vector.
pub fn exception_name(v: u64) -> &'static str {
    EXCEPTION_NAMES
        .get(v as usize)
        .copied()
        .unwrap_or("interrupt")
}

/// Prints all registers of a frame plus the control registers of this CPU.
pub fn dump_registers(w: &mut dyn Write, f: &TrapFrame) {
    let _ = write!(w, "RIP:    {:04x}:[<{:016x}>] ", f.cs, f.rip);
    backtrace::write_symbol(w, f.rip);
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "RFLAGS: {:016x}   CR0: {:016x}   CR2: {:016x}",
        f.rflags,
        cpu::read_cr0(),
        cpu::read_cr2()
    );
    let _ = writeln!(
        w,
        "CR3:    {:016x}   CR4: {:016x}   SS:RSP {:04x}:{:016x}",
        cpu::read_cr3(),
        cpu::read_cr4(),
        f.ss,
        f.rsp
    );
    let regs = [
        ("rax", f.rax),
        ("rbx", f.rbx),
        ("rcx", f.rcx),
        ("rdx", f.rdx),
        ("rsi", f.rsi),
        ("rdi", f.rdi),
        ("rbp", f.rbp),
        ("rsp", f.rsp),
        ("r8", f.r8),
        ("r9", f.r9),
        ("r10", f.r10),
        ("r11", f.r11),
        ("r12", f.r12),
        ("r13", f.r13),
        ("r14", f.r14),
        ("r15", f.r15),
    ];
    for row in regs.chunks(3) {
        for (name, v) in row {
            let _ = write!(w, "{name:>4}: {v:016x}   ");
        }
        let _ = writeln!(w);
    }
}

/// An exception Hestia cannot handle: report everything and stop the machine.
pub fn fatal_trap(f: &TrapFrame) -> ! {
    let cpu = percpu::current_cpu_index();
    crate::console::with_lock(|w| {
        let _ = writeln!(w, "----[ Hestia CPU{cpu} FATAL TRAP ]----");
        let _ = writeln!(
            w,
            "FATAL TRAP: vector {} ({}), error code {:#06x}",
            f.vector,
            exception_name(f.vector),
            f.error_code
        );
        if f.vector == 14 {
            let cr2 = cpu::read_cr2();
            let what = [
                (1, "present", "not-present"),
                (2, "write", "read"),
                (16, "instruction fetch", "data access"),
            ];
            let _ = write!(w, "Page fault at {cr2:#018x}:");
            for (bit, yes, no) in what {
                let _ = write!(w, " {}", if f.error_code & bit != 0 { yes } else { no });
            }
            let _ = writeln!(w);
        }
        if matches!(f.vector, 8 | 14) && crate::mm::is_stack_guard(cpu::read_cr2()) {
            let _ = writeln!(
                w,
                "CR2 {:#x} is a stack guard page: stack overflow",
                cpu::read_cr2()
            );
        }
        dump_registers(w, f);
        backtrace::print(w, f.rbp);
        let _ = writeln!(
            w,
            "Panic on CPU {cpu}: FATAL TRAP: vector {} ({})",
            f.vector,
            exception_name(f.vector)
        );
    });
    crate::machine::fatal_stop()
}
