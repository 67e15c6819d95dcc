//! Per-CPU GDT and TSS.
//!
//! Layout (Intel SDM Vol. 3A, 3.4.5 and 8.2.3): 0 null, 0x08 64-bit code, 0x10 data,
//! 0x18 TSS (a 16-byte system descriptor). The TSS carries the interrupt stacks: IST1 for #DF,
//! IST2 for NMI, IST3 for #MC, so those run on a known-good stack even when the faulting stack
//! is exhausted (a guard-page hit) or mid-switch. The PV selectors of Xen's ABI (FLAT_KERNEL_CS
//! and friends) arrive with the PV core.

use core::arch::asm;
use core::mem::size_of;

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// TSS selector.
pub const TSS_SEL: u16 = 0x18;

/// IST slot (1-based, as in IDT entries) for double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot for NMIs.
pub const IST_NMI: u8 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;

/// The 64-bit TSS.
#[repr(C, packed(4))]
pub struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}
const _: () = assert!(size_of::<Tss>() == 104);

impl Tss {
    /// A TSS with RSP0 = `rsp0` and IST1-3 from `ist`; no I/O bitmap.
    pub fn new(rsp0: u64, ist: [u64; 3]) -> Self {
        Tss {
            _reserved0: 0,
            rsp: [rsp0, 0, 0],
            _reserved1: 0,
            ist: [ist[0], ist[1], ist[2], 0, 0, 0, 0],
            _reserved2: 0,
            _reserved3: 0,
            iomap_base: size_of::<Tss>() as u16,
        }
    }
}

/// The GDT.
#[repr(C, align(16))]
pub struct Gdt([u64; 5]);

impl Default for Gdt {
    fn default() -> Self {
        Self::new()
    }
}

impl Gdt {
    /// Null, code64, data; the TSS descriptor is filled by [`load`].
    pub const fn new() -> Self {
        Gdt([0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0, 0])
    }
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads `gdt` (after writing the descriptor for `tss`), reloads every segment register and the
/// task register. Both must live forever (they are per-CPU data).
pub fn load(gdt: &'static Gdt, tss: &'static Tss) {
    let base = tss as *const Tss as u64;
    let limit = (size_of::<Tss>() - 1) as u64;
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    let high = base >> 32;
    let ptr = gdt.0.as_ptr() as *mut u64;
    // SAFETY: the GDT is this CPU's own, not yet loaded (or loaded and idle in these two slots:
    // the TSS descriptor is written once, before `ltr`), and entries 3-4 are inside the array.
    unsafe {
        ptr.add(3).write_volatile(low);
        ptr.add(4).write_volatile(high);
    }
    let dp = DescriptorPointer {
        limit: (size_of::<Gdt>() - 1) as u16,
        base: gdt as *const Gdt as u64,
    };
    // SAFETY: the GDT holds valid code/data descriptors at KERNEL_CS/KERNEL_DS and a TSS at
    // TSS_SEL; the far return reloads CS with the same flat 64-bit code segment.
    unsafe {
        asm!(
            "lgdt ({dp})",
            "pushq ${cs}",
            "leaq 1f(%rip), {tmp}",
            "pushq {tmp}",
            "lretq",
            "1:",
            "movl ${ds}, {tmp:e}",
            "movl {tmp:e}, %ds",
            "movl {tmp:e}, %es",
            "movl {tmp:e}, %ss",
            "ltr {tss:x}",
            dp = in(reg) &dp,
            cs = const KERNEL_CS,
            ds = const KERNEL_DS,
            tss = in(reg) TSS_SEL,
            tmp = out(reg) _,
            options(att_syntax, preserves_flags)
        );
    }
}
