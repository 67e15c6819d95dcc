//! Thin typed wrappers over single CPU instructions: CPUID, TSC, MSRs, control registers,
//! interrupt flag, halting. Each wrapper is the one place its instruction's `unsafe` lives.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::registers::model_specific::Msr;

/// Result of one CPUID leaf.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Executes CPUID for `leaf`/`subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter (CR4.TSD is never set by Hestia).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Architectural MSR numbers Hestia uses (Intel SDM Vol. 4).
pub mod msr {
    /// Extended feature enables (SCE, LME, LMA, NXE).
    pub const EFER: u32 = 0xC000_0080;
    /// GS base.
    pub const GS_BASE: u32 = 0xC000_0101;
    /// Local APIC base and enable bits.
    pub const APIC_BASE: u32 = 0x1B;
    /// TSC deadline for the LAPIC timer.
    pub const TSC_DEADLINE: u32 = 0x6E0;
    /// FS base.
    pub const FS_BASE: u32 = 0xC000_0100;
    /// The base SWAPGS exchanges with GS base (holds the guest's while Hestia runs).
    pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
    /// First x2APIC register MSR.
    pub const X2APIC_BASE: u32 = 0x800;
    /// Speculation-related capabilities (enumerated by CPUID.7.0:EDX[29]).
    pub const ARCH_CAPABILITIES: u32 = 0x10A;
    /// Machine-check capabilities: bank count and optional features (enumerated by MCA).
    pub const MCG_CAP: u32 = 0x179;
}

/// IA32_ARCH_CAPABILITIES bits Hestia reads.
pub use hestia_core::spec_ctrl::arch_caps;

/// IA32_ARCH_CAPABILITIES, or 0 where the CPU does not enumerate it (every bit then means
/// "not known to be immune").
pub fn arch_capabilities() -> u64 {
    if cpuid(0, 0).eax < 7 || cpuid(7, 0).edx & (1 << 29) == 0 {
        return 0;
    }
    // SAFETY: the MSR exists when CPUID.7.0:EDX[29] says so; reading it has no side effects.
    unsafe { rdmsr(msr::ARCH_CAPABILITIES) }
}

/// This CPU's IA32_MCG_CAP, or `None` where CPUID.1:EDX[14] (MCA) says it has none.
pub fn mcg_cap() -> Option<u64> {
    if cpuid(1, 0).edx & (1 << 14) == 0 {
        return None;
    }
    // SAFETY: the MSR exists when CPUID.1:EDX[14] says so; reading it has no side effects.
    Some(unsafe { rdmsr(msr::MCG_CAP) })
}

/// Reads an MSR.
///
/// # Safety
/// `msr` must exist on this CPU (a missing MSR raises #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: forwarded to the caller.
    unsafe { Msr::new(msr).read() }
}

/// Writes an MSR.
///
/// # Safety
/// `msr` must exist and `value` must not break an invariant Hestia relies on (paging, GS base).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { Msr::new(msr).write(value) }
}

/// The FS base (only guests use FS).
pub fn fs_base() -> u64 {
    // SAFETY: IA32_FS_BASE exists on every x86_64 CPU; reading it has no side effects.
    unsafe { rdmsr(msr::FS_BASE) }
}

/// Sets the FS base (Hestia never uses FS, so only guests see it).
pub fn set_fs_base(v: u64) {
    // SAFETY: as above; the value only affects guest FS-relative accesses.
    unsafe { wrmsr(msr::FS_BASE, v) }
}

/// GS_BASE: while Hestia runs, its per-CPU data.
pub fn gs_base() -> u64 {
    // SAFETY: IA32_GS_BASE exists on every x86_64 CPU; reading it has no side effects.
    unsafe { rdmsr(msr::GS_BASE) }
}

/// Sets GS_BASE.
///
/// # Safety
/// While Hestia runs, GS_BASE must point at this CPU's per-CPU data (interrupts disabled
/// otherwise).
pub unsafe fn set_gs_base(v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { wrmsr(msr::GS_BASE, v) }
}

/// KERNEL_GS_BASE: while Hestia runs (after SWAPGS) it holds the guest's active GS base.
pub fn kernel_gs_base() -> u64 {
    // SAFETY: IA32_KERNEL_GS_BASE exists on every x86_64 CPU; reading it has no side effects.
    unsafe { rdmsr(msr::KERNEL_GS_BASE) }
}

/// Sets KERNEL_GS_BASE (the guest's GS base once SWAPGS returns to it).
pub fn set_kernel_gs_base(v: u64) {
    // SAFETY: Hestia's own GS base is GS_BASE while it runs; this one only reaches the guest.
    unsafe { wrmsr(msr::KERNEL_GS_BASE, v) }
}

/// Reads EFER.
pub fn efer() -> u64 {
    // SAFETY: EFER exists on every x86_64 CPU; reading it has no side effects.
    unsafe { rdmsr(msr::EFER) }
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading a control register has no side effects.
    unsafe {
        asm!("mov %cr0, {}", out(reg) v, options(att_syntax, nomem, nostack, preserves_flags))
    };
    v
}

/// Reads CR2 (the faulting linear address of the last page fault).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading a control register has no side effects.
    unsafe {
        asm!("mov %cr2, {}", out(reg) v, options(att_syntax, nomem, nostack, preserves_flags))
    };
    v
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading a control register has no side effects.
    unsafe {
        asm!("mov %cr3, {}", out(reg) v, options(att_syntax, nomem, nostack, preserves_flags))
    };
    v
}

/// Loads CR3.
///
/// # Safety
/// `value` must name a PML4 that maps the running code, its stack and all live data.
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov {}, %cr3", in(reg) value, options(att_syntax, nostack, preserves_flags)) };
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading a control register has no side effects.
    unsafe {
        asm!("mov %cr4, {}", out(reg) v, options(att_syntax, nomem, nostack, preserves_flags))
    };
    v
}

/// Writes CR4.
///
/// # Safety
/// The new value must keep PAE set and not disable features in use.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov {}, %cr4", in(reg) value, options(att_syntax, nostack, preserves_flags)) };
}

/// Invalidates the TLB entry for one virtual address.
pub fn invlpg(addr: u64) {
    // SAFETY: invalidating a TLB entry never breaks memory safety.
    unsafe { asm!("invlpg ({})", in(reg) addr, options(att_syntax, nostack, preserves_flags)) };
}

/// Flushes this CPU's non-global TLB entries by reloading CR3.
pub fn write_cr3_reload() {
    // SAFETY: reloading the current CR3 keeps every mapping.
    unsafe { write_cr3(read_cr3()) };
}

/// True on an Intel CPU (vendor "GenuineIntel").
pub fn is_intel() -> bool {
    let r = cpuid(0, 0);
    [r.ebx, r.edx, r.ecx] == [0x756e_6547, 0x4965_6e69, 0x6c65_746e]
}

/// True on an AMD CPU (vendor "AuthenticAMD").
pub fn is_amd() -> bool {
    let r = cpuid(0, 0);
    [r.ebx, r.edx, r.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163]
}

/// True on a Hygon CPU (vendor "HygonGenuine", AMD's Zen licensee).
pub fn is_hygon() -> bool {
    let r = cpuid(0, 0);
    [r.ebx, r.edx, r.ecx] == [0x6f67_7948, 0x6e65_476e, 0x656e_6975]
}

/// The display family (CPUID.1:EAX family plus extended family).
pub fn family() -> u32 {
    let a = cpuid(1, 0).eax;
    let base = (a >> 8) & 0xf;
    if base == 0xf {
        base + ((a >> 20) & 0xff)
    } else {
        base
    }
}

/// The XSAVE components guests may enable (x87, SSE and AVX as present), or 0 without XSAVE.
pub fn guest_xcr0_mask() -> u64 {
    let l1 = cpuid(1, 0);
    if l1.ecx & (1 << 26) == 0 {
        return 0;
    }
    0b11 | if l1.ecx & (1 << 28) != 0 { 0b100 } else { 0 }
}

/// Loads XCR0.
///
/// # Safety
/// XSAVE must be enabled (CR4.OSXSAVE) and `xcr0` a valid combination the CPU supports
/// (x87 set; AVX only with SSE), e.g. a subset of [`guest_xcr0_mask`] with bit 0 set.
pub unsafe fn set_xcr0(xcr0: u64) {
    // SAFETY: forwarded to the caller.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Reads XCR0 (XGETBV 0). Only with CR4.OSXSAVE set, i.e. when [`guest_xcr0_mask`] is not 0.
pub fn read_xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV only reads; callers check that XSAVE is enabled (else it raises #UD).
    unsafe {
        asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

/// True when CR0.TS is set.
pub fn ts_set() -> bool {
    read_cr0() & CR0_TS != 0
}

/// Lets guests use x87, SSE and (when present) XSAVE-managed state: CR4.OSFXSR, OSXMMEXCPT,
/// OSXSAVE and XCR0 = [`guest_xcr0_mask`]. Hestia itself is soft-float, so the FPU registers
/// hold only guest state.
pub fn enable_guest_fpu() {
    let mut cr4 = read_cr4() | (1 << 9) | (1 << 10);
    let xcr0 = guest_xcr0_mask();
    if xcr0 != 0 {
        cr4 |= 1 << 18;
    }
    // SAFETY: these CR4 bits only enable FXSAVE/SSE exceptions/XSAVE for code that uses them.
    unsafe { write_cr4(cr4) };
    if xcr0 != 0 {
        // SAFETY: XCR0 gets only components CPUID reports; OSXSAVE was set just above.
        unsafe { set_xcr0(xcr0) };
    }
}

/// Sets CR0.TS: the next FPU/SSE instruction raises #NM.
pub fn set_ts() {
    // SAFETY: CR0.TS only makes FPU use trap; Hestia itself is built without FPU/SSE code.
    unsafe {
        asm!("mov %cr0, {t}", "or $8, {t}", "mov {t}, %cr0", t = out(reg) _, options(att_syntax, nostack))
    };
}

/// Clears CR0.TS (CLTS).
pub fn clear_ts() {
    // SAFETY: clearing CR0.TS only re-enables FPU instructions.
    unsafe { asm!("clts", options(nostack, preserves_flags)) };
}

/// Loads debug register `reg` (0-3, 6 or 7).
///
/// # Safety
/// For DR0-3 the address must be a guest address (a hypervisor one would let a guest trap on
/// Hestia's accesses); DR7 must not set GD or enable I/O breakpoints.
pub unsafe fn write_dr(reg: u8, v: u64) {
    // SAFETY: forwarded to the caller; the match selects one architectural register.
    unsafe {
        match reg {
            0 => asm!("mov {}, %dr0", in(reg) v, options(att_syntax, nostack)),
            1 => asm!("mov {}, %dr1", in(reg) v, options(att_syntax, nostack)),
            2 => asm!("mov {}, %dr2", in(reg) v, options(att_syntax, nostack)),
            3 => asm!("mov {}, %dr3", in(reg) v, options(att_syntax, nostack)),
            6 => asm!("mov {}, %dr6", in(reg) v, options(att_syntax, nostack)),
            7 => asm!("mov {}, %dr7", in(reg) v, options(att_syntax, nostack)),
            _ => {}
        }
    }
}

/// Reads debug register `reg` (0-3, 6 or 7; anything else reads as 0).
pub fn read_dr(reg: u8) -> u64 {
    let v: u64;
    // SAFETY: reading a debug register has no side effects; the match selects one register.
    unsafe {
        match reg {
            0 => asm!("mov %dr0, {}", out(reg) v, options(att_syntax, nomem, nostack)),
            1 => asm!("mov %dr1, {}", out(reg) v, options(att_syntax, nomem, nostack)),
            2 => asm!("mov %dr2, {}", out(reg) v, options(att_syntax, nomem, nostack)),
            3 => asm!("mov %dr3, {}", out(reg) v, options(att_syntax, nomem, nostack)),
            6 => asm!("mov %dr6, {}", out(reg) v, options(att_syntax, nomem, nostack)),
            7 => asm!("mov %dr7, {}", out(reg) v, options(att_syntax, nomem, nostack)),
            _ => v = 0,
        }
    }
    v
}

/// The data segment selectors DS, ES, FS, GS as loaded now (a guest's while Hestia runs on its
/// behalf: Hestia loads none of them).
pub fn data_selectors() -> [u16; 4] {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reading segment registers has no side effects.
    unsafe {
        asm!(
            "mov %ds, {0:x}",
            "mov %es, {1:x}",
            "mov %fs, {2:x}",
            "mov %gs, {3:x}",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
            options(att_syntax, nomem, nostack, preserves_flags)
        )
    };
    [ds, es, fs, gs]
}

/// Writes back and invalidates the caches (WBINVD).
pub fn wbinvd() {
    // SAFETY: WBINVD has no memory-safety effect; it is slow, which callers accept.
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
}

/// Writes back and invalidates the cache lines of `len` bytes at `addr` (CLFLUSH, which every
/// x86_64 CPU has), then orders them (MFENCE).
pub fn clflush_range(addr: u64, len: u64) {
    let end = addr.saturating_add(len);
    let mut line = addr & !63;
    while line < end {
        // SAFETY: CLFLUSH only writes back a line; the caller gives mapped memory, and a
        // flush has no effect on memory contents.
        unsafe {
            asm!("clflush ({})", in(reg) line, options(att_syntax, nostack, preserves_flags))
        };
        line += 64;
    }
    // SAFETY: a fence has no memory-safety effect.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
}

/// True if RFLAGS.IF is set.
pub fn interrupts_enabled() -> bool {
    x86_64::instructions::interrupts::are_enabled()
}

/// Runs `f` with interrupts off, then puts RFLAGS.IF back as it was (for a lock an
/// interrupt handler of this CPU also takes).
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(f)
}

/// Clears RFLAGS.IF.
pub fn disable_interrupts() {
    x86_64::instructions::interrupts::disable();
}

/// Sets RFLAGS.IF.
pub fn enable_interrupts() {
    x86_64::instructions::interrupts::enable();
}

/// Enables interrupts and halts until one arrives, atomically (`sti; hlt`).
pub fn idle() {
    x86_64::instructions::interrupts::enable_and_hlt();
}

/// Lets pending interrupts in for a moment and disables them again (STI takes effect after
/// the next instruction, hence the NOP).
pub fn interrupt_window() {
    // SAFETY: enabling interrupts briefly; the caller holds no lock an interrupt handler takes.
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

/// Halts this CPU forever with interrupts off (NMIs still wake it; it halts again).
pub fn halt_forever() -> ! {
    loop {
        disable_interrupts();
        x86_64::instructions::hlt();
    }
}

/// Reads the current frame pointer (RBP), for backtraces.
pub fn frame_pointer() -> u64 {
    let v: u64;
    // SAFETY: reading RBP has no side effects.
    unsafe {
        asm!("mov %rbp, {}", out(reg) v, options(att_syntax, nomem, nostack, preserves_flags))
    };
    v
}

/// CPU feature bits Hestia checks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// x2APIC (CPUID.1:ECX[21]).
    pub x2apic: bool,
    /// TSC-deadline LAPIC timer mode (CPUID.1:ECX[24]).
    pub tsc_deadline: bool,
    /// Invariant TSC (CPUID.80000007:EDX[8]).
    pub invariant_tsc: bool,
    /// 1 GiB pages (CPUID.80000001:EDX[26]).
    pub page1g: bool,
    /// Execute-disable (CPUID.80000001:EDX[20]).
    pub nx: bool,
    /// Global pages (CPUID.1:EDX[13]).
    pub pge: bool,
    /// Supervisor-mode execution prevention (CPUID.7.0:EBX[7]).
    pub smep: bool,
    /// Supervisor-mode access prevention (CPUID.7.0:EBX[20]).
    pub smap: bool,
}

/// Reads the feature bits of this CPU.
pub fn features() -> Features {
    let l1 = cpuid(1, 0);
    let l7 = if cpuid(0, 0).eax >= 7 {
        cpuid(7, 0)
    } else {
        CpuidResult::default()
    };
    let max_ext = cpuid(0x8000_0000, 0).eax;
    let e1 = if max_ext >= 0x8000_0001 {
        cpuid(0x8000_0001, 0)
    } else {
        CpuidResult::default()
    };
    let e7 = if max_ext >= 0x8000_0007 {
        cpuid(0x8000_0007, 0)
    } else {
        CpuidResult::default()
    };
    Features {
        x2apic: l1.ecx & (1 << 21) != 0,
        tsc_deadline: l1.ecx & (1 << 24) != 0,
        invariant_tsc: e7.edx & (1 << 8) != 0,
        page1g: e1.edx & (1 << 26) != 0,
        nx: e1.edx & (1 << 20) != 0,
        pge: l1.edx & (1 << 13) != 0,
        smep: l7.ebx & (1 << 7) != 0,
        smap: l7.ebx & (1 << 20) != 0,
    }
}

/// CR0.TS: FPU and SSE instructions raise #NM.
const CR0_TS: u64 = 1 << 3;
/// CR4.SMEP.
const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
const CR4_SMAP: u64 = 1 << 21;

/// True once SMAP is on (every CPU turns it on alike, before running guest code). The entry
/// paths and the guest-memory copy routine test it before CLAC and STAC, which raise #UD on a
/// CPU without SMAP. Entry data: mapped while guests run on restricted page tables (XPTI).
#[unsafe(link_section = ".data.entry")]
pub static SMAP_ON: AtomicBool = AtomicBool::new(false);

/// Turns on SMEP and SMAP for this CPU where it has them, as Xen does by default: Hestia then
/// faults if it ever executes a guest (user) page, or reads or writes one anywhere but in the
/// copy routine of `uaccess`, which opens SMAP (STAC) for the duration of the copy. Every entry
/// from a guest closes it again (CLAC): interrupt gates keep the guest's RFLAGS.AC, and
/// SYSCALL clears it through FMASK. Returns what was turned on (SMEP, SMAP).
pub fn enable_smep_smap() -> (bool, bool) {
    let f = features();
    let bits = if f.smep { CR4_SMEP } else { 0 } | if f.smap { CR4_SMAP } else { 0 };
    if f.smap {
        SMAP_ON.store(true, Ordering::Release);
    }
    // SAFETY: Hestia's own code and data are supervisor mappings; guest (user) memory is only
    // reached through the copy routine, which sets RFLAGS.AC around its access when SMAP is on.
    unsafe { write_cr4(read_cr4() | bits) };
    (f.smep, f.smap)
}

/// The CPU's brand string (CPUID leaves 0x80000002-4), or the vendor id.
pub fn brand(buf: &mut [u8; 48]) -> &str {
    if cpuid(0x8000_0000, 0).eax >= 0x8000_0004 {
        for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
            let r = cpuid(leaf, 0);
            for (j, w) in [r.eax, r.ebx, r.ecx, r.edx].iter().enumerate() {
                buf[i * 16 + j * 4..i * 16 + j * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
        }
    } else {
        let r = cpuid(0, 0);
        for (j, w) in [r.ebx, r.edx, r.ecx].iter().enumerate() {
            buf[j * 4..j * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(48);
    core::str::from_utf8(&buf[..end]).unwrap_or("?").trim()
}
