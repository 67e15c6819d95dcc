//! The runtime of Hestia's PV test guests, the way XTF's `arch/x86/pv` is for Xen: Xen ELF
//! notes, a hypercall page the builder must fill, hypercall wrappers (through the page and by raw
//! `syscall`, as recent Linux does), console output through `console_io`, and the XTF verdict
//! protocol: exactly one `Test result: SUCCESS|SKIP|ERROR|FAILURE` line, then shutdown.
//!
//! A guest provides `fn test_main(si: &StartInfo) -> Verdict` through [`guest_main!`].
#![no_std]

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};

pub use xen_abi;
use xen_abi::callback::TrapInfo;
use xen_abi::event_channel::{self, BindVirq};
use xen_abi::memory::{self, MemoryDomain, MemoryReservation};
use xen_abi::sched::{SchedShutdown, cmd, reason};
use xen_abi::vcpu::{self, VcpuGuestContext, vgcf};
use xen_abi::xen::{DOMID_SELF, StartInfo, consoleio, hypercall as nr, virq};
use zerocopy::IntoBytes;

pub mod control;
pub mod grant;
pub mod pt_paths;

global_asm!(
    r#"
    .section .text.start, "ax"
    .global _start
_start:
    lea hestia_guest_stack_top(%rip), %rsp
    mov %rsi, %rdi
    call hestia_guest_entry
    ud2

    .section .text.hypercall_page, "ax"
    .balign 4096
    .global hypercall_page
hypercall_page:
    /* Poisoned with `ret`, as XTF does: an unfilled page is detected, not silently used. */
    .fill 4096, 1, 0xc3

    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 12, 6
    .asciz "Xen"
    .asciz "Hestia-test"
    .balign 4
    .long 4, 8, 8
    .asciz "Xen"
    .asciz "generic"
    .balign 4
    .long 4, 8, 5
    .asciz "Xen"
    .asciz "xen-3.0"
    .balign 4
    .long 4, 8, 2
    .asciz "Xen"
    .quad hypercall_page
    .balign 4

    .section .bss.stack, "aw", @nobits
    .balign 16
    .skip 65536
hestia_guest_stack_top:
"#,
    options(att_syntax)
);

// Exception entry stubs: the bounce frame is RCX, R11, [error code], RIP, CS, RFLAGS, RSP, SS.
// Each stub restores RCX/R11, saves the caller-saved registers, calls the Rust handler with the
// frame (error code first), then returns through the `iret` hypercall: the page's iret slot
// pushes RCX, R11 and RAX itself, so the stub leaves `flags` (0) on top of RIP..SS.
global_asm!(
    r#"
    .macro STUB vec, err
    .section .text.exc, "ax"
    .global hestia_guest_exc_\vec
hestia_guest_exc_\vec:
    pop %rcx
    pop %r11
    .if \err == 0
    push $0
    .endif
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    sub $8, %rsp
    mov $\vec, %edi
    lea 80(%rsp), %rsi
    call hestia_guest_exc_dispatch
    add $8, %rsp
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    add $8, %rsp
    push $0
    jmp hypercall_page + 23 * 32
    .endm

    .macro EXC vec, err
    STUB \vec, \err
    .section .rodata.traps, "a"
    .byte \vec, 4 | ((\vec == 3 || \vec == 4 || \vec == 32) * 3)
    .short 0xe033
    .long 0
    .quad hestia_guest_exc_\vec
    .endm

    .section .rodata.traps, "a"
    .balign 16
    .global hestia_guest_trap_table
hestia_guest_trap_table:
    EXC 0, 0
    EXC 1, 0
    EXC 2, 0
    EXC 3, 0
    EXC 4, 0
    EXC 5, 0
    EXC 6, 0
    EXC 7, 0
    EXC 8, 1
    EXC 9, 0
    EXC 10, 1
    EXC 11, 1
    EXC 12, 1
    EXC 13, 1
    EXC 14, 1
    EXC 16, 0
    EXC 17, 1
    EXC 18, 0
    EXC 19, 0
    EXC 32, 0
    EXC 33, 0
    .section .rodata.traps, "a"
    .quad 0, 0

    /* The event-channel upcall: the same frame without an error code, as "vector" 256. */
    STUB 256, 0
    /* SYSCALL from guest user mode, as "vector" 257. */
    STUB 257, 0

    /* enter_user(rip, rsp): iret to guest user mode (CS 0xe033 has RPL 3) with events on. */
    .section .text.exc, "ax"
    .global hestia_guest_enter_user
hestia_guest_enter_user:
    push $0xe02b
    push %rsi
    push $0x202
    push $0xe033
    push %rdi
    push $0
    jmp hypercall_page + 23 * 32
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static hypercall_page: [u8; 4096];
    static hestia_guest_trap_table: [u8; 16];
}

/// What a guest exception handler sees: the bounce frame from the error code up.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExcFrame {
    /// Error code (0 for vectors without one).
    pub error_code: u64,
    /// Where the exception happened (or, for traps, the next instruction).
    pub rip: u64,
    /// CS with the saved upcall mask in bits 32-39; RPL 0 = guest kernel mode.
    pub cs: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// RSP.
    pub rsp: u64,
    /// SS.
    pub ss: u64,
}

/// A guest exception handler.
pub type ExcHandler = fn(u64, &mut ExcFrame);

static EXC_HANDLER: core::sync::atomic::AtomicPtr<()> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

#[unsafe(no_mangle)]
extern "C" fn hestia_guest_exc_dispatch(vector: u64, f: &mut ExcFrame) {
    let h = EXC_HANDLER.load(core::sync::atomic::Ordering::Acquire);
    if h.is_null() {
        println!("unexpected exception {vector} at {:#x}", f.rip);
        println!("Test result: ERROR (unexpected exception)");
        shutdown(reason::CRASH);
    }
    // SAFETY: only `install_traps` stores here, and it stores an `ExcHandler`.
    let h: ExcHandler = unsafe { core::mem::transmute::<*mut (), ExcHandler>(h) };
    h(vector, f);
}

unsafe extern "C" {
    fn hestia_guest_exc_256();
}

unsafe extern "C" {
    fn hestia_guest_exc_257();
    fn hestia_guest_enter_user(rip: u64, rsp: u64) -> !;
}

/// The pseudo-vector the handler sees for a SYSCALL from guest user mode.
pub const SYSCALL_VECTOR: u64 = 257;

/// Address of the syscall-callback entry (register it with `callback_op`).
pub fn syscall_entry_address() -> u64 {
    hestia_guest_exc_257 as *const () as u64
}

/// Leaves guest kernel mode for user mode at `rip` with stack `rsp` (needs a user L4 and a
/// kernel stack from `stack_switch` for the way back).
pub fn enter_user(rip: u64, rsp: u64) -> ! {
    // SAFETY: builds an iret frame with the flat user selectors and jumps to the iret stub.
    unsafe { hestia_guest_enter_user(rip, rsp) }
}

/// The pseudo-vector the handler sees for an event-channel upcall.
pub const EVENT_VECTOR: u64 = 256;

/// Address of the event-callback entry (register it with `callback_op`); upcalls reach the
/// handler installed by [`install_traps`] as [`EVENT_VECTOR`].
pub fn event_entry_address() -> u64 {
    hestia_guest_exc_256 as *const () as u64
}

/// The runtime's trap table (vectors 0-19, 0x20 with DPL 3, 0x21 with DPL 0; all mask events).
pub fn trap_table_address() -> u64 {
    (&raw const hestia_guest_trap_table) as u64
}

/// Installs the runtime's trap table with `h` as the handler; returns the hypercall's result.
pub fn install_traps(h: ExcHandler) -> i64 {
    EXC_HANDLER.store(h as *mut (), core::sync::atomic::Ordering::Release);
    hypercall(nr::SET_TRAP_TABLE, trap_table_address(), 0, 0, 0, 0)
}

/// A `vcpu_guest_context` that starts a secondary vCPU in kernel mode at `entry` with stack
/// `stack_top` (also its kernel stack), on the initial page tables (VIRT_BASE 0), with this
/// runtime's trap table as its virtual IDT and its event and syscall entries.
pub fn secondary_vcpu_context(
    si: &StartInfo,
    entry: extern "C" fn() -> !,
    stack_top: u64,
) -> VcpuGuestContext {
    use zerocopy::FromZeros;
    let mut c = VcpuGuestContext::new_zeroed();
    c.flags = vgcf::IN_KERNEL;
    // As after a call: RSP + 8 is 16-byte aligned at the entry point.
    c.user_regs.rip = entry as *const () as u64;
    c.user_regs.rsp = stack_top - 8;
    c.user_regs.cs = xen_abi::xen::FLAT_KERNEL_CS;
    c.user_regs.ss = xen_abi::xen::FLAT_KERNEL_SS;
    c.user_regs.rflags = 0x200;
    let table = trap_table_address() as *const TrapInfo;
    for i in 0.. {
        // SAFETY: the runtime's trap table ends with an all-zero entry.
        let t = unsafe { core::ptr::read(table.add(i)) };
        if t.address == 0 {
            break;
        }
        c.trap_ctxt[usize::from(t.vector)] = t;
    }
    c.kernel_ss = u64::from(xen_abi::xen::FLAT_KERNEL_SS);
    c.kernel_sp = stack_top;
    c.ctrlreg[3] = pfn_to_mfn(si, si.pt_base >> 12) << 12;
    c.event_callback_eip = event_entry_address();
    c.syscall_callback_eip = syscall_entry_address();
    c
}

/// Starts vCPU `id` of this domain in kernel mode at `entry` on the stack ending at
/// `stack_top` ([`secondary_vcpu_context`]): `VCPUOP_initialise`, then `VCPUOP_up`. False if
/// either fails (a domain with no such vCPU).
pub fn start_vcpu(si: &StartInfo, id: u32, entry: extern "C" fn() -> !, stack_top: u64) -> bool {
    let ctx = secondary_vcpu_context(si, entry, stack_top);
    let op = |cmd: u32, arg: u64| hypercall(nr::VCPU_OP, u64::from(cmd), u64::from(id), arg, 0, 0);
    op(
        vcpu::cmd::INITIALISE,
        &ctx as *const VcpuGuestContext as u64,
    ) == 0
        && op(vcpu::cmd::UP, 0) == 0
}

/// `SCHEDOP_yield`.
pub fn yield_now() {
    hypercall(nr::SCHED_OP, u64::from(cmd::YIELD), 0, 0, 0, 0);
}

/// Where [`map_shared_info`] puts the shared_info page: the last page of the first 4 MiB, in
/// the padding of the initial mapping (guest images are far smaller).
pub const SHARED_INFO_VA: u64 = 0x3ff000;

/// Maps shared_info read-write at [`SHARED_INFO_VA`]; returns `update_va_mapping`'s result.
pub fn map_shared_info(si: &StartInfo) -> i64 {
    const RW_USER_ACCESSED: u64 = 0x27;
    const UVMF_INVLPG: u64 = 2;
    hypercall(
        nr::UPDATE_VA_MAPPING,
        SHARED_INFO_VA,
        si.shared_info | RW_USER_ACCESSED,
        UVMF_INVLPG,
        0,
        0,
    )
}

/// The byte at `off` in shared_info (after [`map_shared_info`]).
pub fn shared_byte(off: u64) -> &'static core::sync::atomic::AtomicU8 {
    assert!(off < 4096);
    // SAFETY: map_shared_info mapped the page there; bytes need no alignment.
    unsafe { &*((SHARED_INFO_VA + off) as *const core::sync::atomic::AtomicU8) }
}

/// The 8-byte word at `off` in shared_info (after [`map_shared_info`]).
pub fn shared_word(off: u64) -> &'static core::sync::atomic::AtomicU64 {
    assert!(off < 4096 && off.is_multiple_of(8));
    // SAFETY: as above, and `off` is 8-byte aligned.
    unsafe { &*((SHARED_INFO_VA + off) as *const core::sync::atomic::AtomicU64) }
}

/// The 4-byte word at `off` in shared_info (after [`map_shared_info`]), read once.
pub fn shared_u32(off: u64) -> u32 {
    assert!(off < 4096 && off.is_multiple_of(4));
    // SAFETY: as above, and `off` is 4-byte aligned.
    unsafe { core::ptr::read_volatile((SHARED_INFO_VA + off) as *const u32) }
}

/// Registers the runtime's event entry ([`event_entry_address`]) as this vCPU's event
/// callback, masking events while it runs; returns `callback_op`'s result.
pub fn register_event_callback() -> i64 {
    use xen_abi::callback::{CallbackRegister, cmd as cb, kind};
    let r = CallbackRegister {
        kind: kind::EVENT,
        flags: 1,
        _pad: 0,
        address: event_entry_address(),
    };
    hypercall(
        nr::CALLBACK_OP,
        u64::from(cb::REGISTER),
        &r as *const CallbackRegister as u64,
        0,
        0,
        0,
    )
}

/// Starts VIRQ_TIMER upcalls on vCPU 0 every `period_ns`, delivered to `h` as
/// [`EVENT_VECTOR`]: installs the runtime's traps, maps shared_info, registers the event
/// callback, binds VIRQ_TIMER, sets the periodic timer and unmasks events. `Err` names the step
/// that failed.
pub fn start_periodic_upcalls(
    si: &StartInfo,
    h: ExcHandler,
    period_ns: u64,
) -> Result<(), &'static str> {
    install_traps(h);
    if map_shared_info(si) != 0 {
        return Err("cannot map shared_info");
    }
    if register_event_callback() != 0 {
        return Err("cannot register the event callback");
    }
    let mut bind = BindVirq {
        virq: virq::TIMER,
        vcpu: 0,
        port: 0,
    };
    if event_channel_op(event_channel::cmd::BIND_VIRQ, &mut bind) != 0 {
        return Err("cannot bind VIRQ_TIMER");
    }
    let period = [period_ns];
    let set_periodic = u64::from(vcpu::cmd::SET_PERIODIC_TIMER);
    if hypercall(nr::VCPU_OP, set_periodic, 0, period.as_ptr() as u64, 0, 0) != 0 {
        return Err("cannot set the periodic timer");
    }
    shared_byte(1).store(0, core::sync::atomic::Ordering::SeqCst); // unmask events
    Ok(())
}

/// One `mmu_update` request for the calling domain; returns the hypercall's result.
pub fn mmu_update_one(ptr: u64, val: u64) -> i64 {
    let req = xen_abi::mmu::MmuUpdate { ptr, val };
    hypercall(
        nr::MMU_UPDATE,
        &req as *const xen_abi::mmu::MmuUpdate as u64,
        1,
        0,
        u64::from(xen_abi::xen::DOMID_SELF),
        0,
    )
}

/// One `mmuext_op` (`cmd`, `arg1`, `arg2`) for the calling domain; returns the hypercall's
/// result.
pub fn mmuext_one(cmd: u32, arg1: u64, arg2: u64) -> i64 {
    let op = xen_abi::mmu::MmuextOp {
        cmd,
        _pad: 0,
        arg1,
        arg2,
    };
    hypercall(
        nr::MMUEXT_OP,
        &op as *const xen_abi::mmu::MmuextOp as u64,
        1,
        0,
        u64::from(xen_abi::xen::DOMID_SELF),
        0,
    )
}

/// Acknowledges vCPU `vcpu`'s pending events the 2-level way (as Linux's events_2l): clears its
/// upcall-pending flag and selector, and every pending unmasked port the selector names.
/// Returns the ports of the first word (0-63) it acknowledged.
pub fn ack_events(vcpu: u64) -> u64 {
    use core::sync::atomic::Ordering::SeqCst;
    shared_byte(vcpu * 64).store(0, SeqCst); // evtchn_upcall_pending
    let sel = shared_word(vcpu * 64 + 8).swap(0, SeqCst); // evtchn_pending_sel
    let mut first = 0;
    for w in (0..64u64).filter(|w| sel & (1 << w) != 0) {
        let bits = shared_word(2048 + w * 8).load(SeqCst) & !shared_word(2560 + w * 8).load(SeqCst);
        shared_word(2048 + w * 8).fetch_and(!bits, SeqCst);
        if w == 0 {
            first = bits;
        }
    }
    first
}

/// Nanoseconds of system time from vCPU 0's pvclock (after [`map_shared_info`]).
pub fn system_time_ns() -> u64 {
    use core::sync::atomic::Ordering::SeqCst;
    loop {
        let v1 = shared_u32(32);
        let tsc_ts = shared_word(40).load(SeqCst);
        let sys = shared_word(48).load(SeqCst);
        let mul = shared_u32(56);
        let shift = shared_byte(60).load(SeqCst) as i8;
        // SAFETY: RDTSC only reads the time-stamp counter.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        if v1 & 1 == 0 && v1 == shared_u32(32) {
            let d = tsc.wrapping_sub(tsc_ts);
            let d = if shift >= 0 { d << shift } else { d >> -shift };
            return sys + ((u128::from(d) * u128::from(mul)) >> 32) as u64;
        }
    }
}

/// CPUID through the forced-emulation prefix (`ud2; "xen"; cpuid`), as the guest's policy
/// answers it: (EAX, EBX, ECX, EDX). RBX is LLVM's, so it is saved around the instruction.
pub fn forced_cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let (mut a, mut c, d, b): (u32, u32, u32, u64);
    a = leaf;
    c = sub;
    // SAFETY: the prefix makes the hypervisor emulate CPUID; RBX is restored.
    unsafe {
        asm!("mov %rbx, {t}", "ud2", ".ascii \"xen\"", "cpuid", "xchg %rbx, {t}", t = out(reg) b, inout("eax") a, inout("ecx") c, out("edx") d, options(att_syntax))
    };
    (a, b as u32, c, d)
}

/// RDMSR from the guest kernel; `None` if it raised #GP. `gp` counts the #GPs the caller's
/// trap handler saw (that handler must skip the 2-byte instruction).
pub fn rdmsr_probe(msr: u32, gp: &core::sync::atomic::AtomicU64) -> Option<u64> {
    let before = gp.load(core::sync::atomic::Ordering::SeqCst);
    let (lo, hi): (u32, u32);
    // SAFETY: emulated by the hypervisor, or #GP skipped by the caller's handler (RAX/RDX then
    // hold what they held).
    unsafe {
        asm!("rdmsr", in("ecx") msr, inout("eax") 0 => lo, inout("edx") 0 => hi, options(nostack))
    };
    (gp.load(core::sync::atomic::Ordering::SeqCst) == before)
        .then_some(u64::from(hi) << 32 | u64::from(lo))
}

/// WRMSR from the guest kernel; false if it raised #GP (`gp` as for [`rdmsr_probe`]).
pub fn wrmsr_probe(msr: u32, v: u64, gp: &core::sync::atomic::AtomicU64) -> bool {
    let before = gp.load(core::sync::atomic::Ordering::SeqCst);
    // SAFETY: as in `rdmsr_probe`; the caller picks an MSR whose write it can live with.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack))
    };
    gp.load(core::sync::atomic::Ordering::SeqCst) == before
}

/// The hypercall page (for tests that inspect it).
pub fn hypercall_page_bytes() -> &'static [u8; 4096] {
    // SAFETY: the page is part of the image; the builder wrote it before the guest started.
    unsafe { &hypercall_page }
}

/// The hypercall whose stub's SYSCALL is at `rip`, if any: an upcall or exception that
/// interrupted the guest there found a hypercall rewound for a continuation (preempted).
pub fn stub_at(rip: u64) -> Option<u32> {
    let page = hypercall_page_bytes();
    let off = usize::try_from(rip.wrapping_sub(page.as_ptr() as u64)).ok()?;
    (page.get(off..off + 2)? == [0x0f, 0x05]).then_some((off / 32) as u32)
}

/// A hypercall through the hypercall page.
pub fn hypercall(number: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let stub = hypercall_page_bytes().as_ptr() as u64 + u64::from(number) * 32;
    let ret: i64;
    // SAFETY: the stub preserves everything but RAX and the argument registers, which are
    // declared clobbered; it returns with `ret`.
    unsafe {
        asm!("call {stub}", stub = in(reg) stub, inlateout("rdi") a1 => _, inlateout("rsi") a2 => _, inlateout("rdx") a3 => _,
             inlateout("r10") a4 => _, inlateout("r8") a5 => _, lateout("rax") ret, out("rcx") _, out("r11") _)
    };
    ret
}

/// `event_channel_op(cmd, arg)` with `arg` one of `xen_abi::event_channel`'s structures.
pub fn event_channel_op<T: IntoBytes>(cmd: u32, arg: &mut T) -> i64 {
    let arg = core::ptr::from_mut(arg) as u64;
    hypercall(nr::EVENT_CHANNEL_OP, u64::from(cmd), arg, 0, 0, 0)
}

/// `memory_op(cmd, arg)` with `arg` one of `xen_abi::memory`'s structures.
pub fn memory_op<T: IntoBytes>(cmd: u32, arg: &mut T) -> i64 {
    let arg = core::ptr::from_mut(arg) as u64;
    hypercall(nr::MEMORY_OP, u64::from(cmd), arg, 0, 0, 0)
}

/// A `xen_memory_reservation` of the calling domain for one order-0 extent at `list`.
pub fn single_extent(list: &mut u64) -> MemoryReservation {
    MemoryReservation {
        extent_start: core::ptr::from_mut(list) as u64,
        nr_extents: 1,
        domid: DOMID_SELF,
        ..MemoryReservation::default()
    }
}

/// `XENMEM_current_reservation` of the calling domain: its page count.
pub fn current_reservation() -> i64 {
    let mut me = MemoryDomain { domid: DOMID_SELF };
    memory_op(memory::cmd::CURRENT_RESERVATION, &mut me)
}

/// A hypercall by a raw `syscall`, without the page (as Linux 6.1 after XSA-466 does).
pub fn raw_hypercall(number: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: SYSCALL in guest kernel mode is a hypercall; RCX and R11 are destroyed by the
    // instruction, the argument registers by convention.
    unsafe {
        asm!("syscall", inlateout("rax") u64::from(number) => ret, inlateout("rdi") a1 => _, inlateout("rsi") a2 => _,
             inlateout("rdx") a3 => _, inlateout("r10") a4 => _, inlateout("r8") a5 => _, out("rcx") _, out("r11") _)
    };
    ret
}

/// Writes bytes to the console.
pub fn console_write(s: &[u8]) -> i64 {
    hypercall(
        nr::CONSOLE_IO,
        u64::from(consoleio::WRITE),
        s.len() as u64,
        s.as_ptr() as u64,
        0,
        0,
    )
}

/// What `print` formats, written with one `console_io` call per 120 bytes (Hestia copies a
/// write in 128-byte chunks): a short line reaches the serial line whole, so a domU's line
/// printed meanwhile cannot land inside it and hide this domain's `Test result:` line.
struct Console {
    buf: [u8; 120],
    len: usize,
}

impl Console {
    fn flush(&mut self) {
        if let Some(bytes) = self.buf.get(..self.len) {
            console_write(bytes);
        }
        self.len = 0;
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// Prints to the console.
pub fn print(args: fmt::Arguments<'_>) {
    let mut c = Console {
        buf: [0; 120],
        len: 0,
    };
    let _ = c.write_fmt(args);
    c.flush();
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    ($($t:tt)*) => { $crate::print(format_args!("{}\n", format_args!($($t)*))) };
}

/// The read-only machine-to-phys table the hypervisor maps for PV guests.
pub fn m2p(mfn: u64) -> u64 {
    // SAFETY: the M2P is mapped read-only at MACH2PHYS_VIRT_START for every PV guest; entries
    // beyond the machine's frames fault, which callers avoid by passing MFNs they own.
    unsafe {
        core::ptr::read_volatile(
            (xen_abi::xen::MACH2PHYS_VIRT_START as *const u64).add(mfn as usize),
        )
    }
}

/// Machine address of the L1 entry mapping `va` in the initial page tables (VIRT_BASE 0, so a
/// table's virtual address is its PFN times 4096). `None` if some level is not present.
pub fn l1e_maddr(si: &StartInfo, va: u64) -> Option<u64> {
    pte_maddr(si, va, 1)
}

/// Machine address of the level-`level` (1-4) entry for `va` in the initial page tables, as
/// [`l1e_maddr`]. `None` if some level above is not present.
pub fn pte_maddr(si: &StartInfo, va: u64, level: u32) -> Option<u64> {
    let slot = |l: u32| (va >> (12 + 9 * (l - 1))) & 511;
    let mut table_va = si.pt_base;
    for l in (level + 1..=4).rev() {
        // SAFETY: the bootstrap tables are mapped read-only in the initial mapping.
        let e = unsafe { core::ptr::read_volatile((table_va as *const u64).add(slot(l) as usize)) };
        if e & 1 == 0 {
            return None;
        }
        table_va = m2p((e & 0x000F_FFFF_FFFF_F000) >> 12) << 12;
    }
    let mfn = pfn_to_mfn(si, table_va >> 12);
    Some((mfn << 12) | (slot(level) * 8))
}

/// The virtual address of the entry at machine address `maddr` in one of the initial page
/// tables (mapped read-only at PFN times 4096).
pub fn pte_va(maddr: u64) -> u64 {
    (m2p(maddr >> 12) << 12) | (maddr & 0xfff)
}

/// The command line the domain was started with.
pub fn cmdline(si: &StartInfo) -> &str {
    let len = si.cmd_line.iter().position(|&c| c == 0).unwrap_or(0);
    core::str::from_utf8(&si.cmd_line[..len]).unwrap_or("")
}

/// The MFN behind PFN `pfn`.
pub fn pfn_to_mfn(si: &StartInfo, pfn: u64) -> u64 {
    // SAFETY: mfn_list holds nr_pages entries; callers pass PFNs below nr_pages.
    unsafe { core::ptr::read_volatile((si.mfn_list as *const u64).add(pfn as usize)) }
}

/// Stops the domain.
pub fn shutdown(why: u32) -> ! {
    let s = SchedShutdown { reason: why };
    loop {
        hypercall(
            nr::SCHED_OP,
            u64::from(cmd::SHUTDOWN),
            &s as *const SchedShutdown as u64,
            0,
            0,
            0,
        );
    }
}

/// The XTF verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything checked held.
    Success,
    /// The test does not apply here.
    Skip(&'static str),
    /// The test could not run properly.
    Error(&'static str),
    /// A check failed.
    Failure(&'static str),
}

/// Checks a condition; on failure prints why and records it.
#[macro_export]
macro_rules! check {
    ($failed:ident, $cond:expr, $($t:tt)*) => {
        if !$cond {
            $crate::println!("FAIL: {}", format_args!($($t)*));
            $failed = true;
        }
    };
}

fn report(v: Verdict) -> ! {
    match v {
        Verdict::Success => println!("Test result: SUCCESS"),
        Verdict::Skip(w) => println!("Test result: SKIP ({w})"),
        Verdict::Error(w) => println!("Test result: ERROR ({w})"),
        Verdict::Failure(w) => println!("Test result: FAILURE ({w})"),
    }
    shutdown(reason::POWEROFF)
}

/// Runs the guest's test and reports its verdict. Called by [`guest_main!`].
pub fn run(si: &StartInfo, test: fn(&StartInfo) -> Verdict) -> ! {
    if hypercall_page_bytes()[0] == 0xC3 {
        // Nothing can be printed without the page; crash so the harness sees no verdict.
        let s = SchedShutdown {
            reason: reason::CRASH,
        };
        raw_hypercall(
            nr::SCHED_OP,
            u64::from(cmd::SHUTDOWN),
            &s as *const SchedShutdown as u64,
            0,
            0,
            0,
        );
    }
    report(test(si))
}

/// Declares the guest's test function.
#[macro_export]
macro_rules! guest_main {
    ($f:path) => {
        #[unsafe(no_mangle)]
        extern "C" fn hestia_guest_entry(si: &'static $crate::xen_abi::xen::StartInfo) -> ! {
            $crate::run(si, $f)
        }

        #[panic_handler]
        fn panic(p: &core::panic::PanicInfo<'_>) -> ! {
            $crate::println!("panic: {}", p.message());
            $crate::println!("Test result: ERROR (panic)");
            $crate::shutdown($crate::xen_abi::sched::reason::CRASH)
        }
    };
}
