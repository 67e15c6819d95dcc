//! Per-CPU GDT and TSS, laid out as Xen's so PV guests see the public flat selectors.
//!
//! The GDT is 15 pages (xen-abi.md 4.2): pages 0-13 (entries 0-7167) belong to the guest of
//! the running vCPU (null until `set_gdt` arrives with the PV core), page 14 is Hestia's:
//! `0xe008` ring-0 code, `0xe010` ring-0 data, `0xe023` ring-3 32-bit code, `0xe02b` ring-3 data,
//! `0xe033` ring-3 64-bit code, `0xe040` the TSS, `0xe050` the LDT (Hestia's validated copy of
//! the running vCPU's, as the GDT's guest pages are). The CS32, DS, CS64 order is what SYSRET needs
//! (STAR[63:48] = 0xe023). The TSS carries the interrupt stacks: IST1 for #DF, IST2 for NMI,
//! IST3 for #MC, IST4 for #DB, so those run on a known-good stack even when the interrupted one
//! is exhausted or, for #DB, still the guest's (a #DB deferred by MOV SS strikes the first
//! instruction of the SYSCALL entry, before it switches stacks: XSA-260).

use core::arch::asm;
use core::mem::size_of;
use core::sync::atomic::{AtomicUsize, Ordering};

use xen_abi::xen::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS};

/// Hypervisor code selector.
pub const KERNEL_CS: u16 = 0xe008;
/// Hypervisor data selector.
pub const KERNEL_DS: u16 = 0xe010;
/// TSS selector.
pub const TSS_SEL: u16 = 0xe040;
/// LDT selector (the descriptor of the running vCPU's LDT copy), as in Xen.
pub const LDT_SEL: u16 = 0xe050;
/// Most LDT entries (8192, 64 KiB).
pub const LDT_ENTRIES: usize = 8192;
const LDT_PAGES: u64 = (LDT_ENTRIES * 8 / 4096) as u64;

/// Pages in a GDT: 14 for the guest, 1 for Hestia.
const GDT_PAGES: u64 = 15;
const ENTRIES_PER_PAGE: usize = 512;
const RESERVED_PAGE: usize = 14;

/// IST slot (1-based, as in IDT entries) for double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot for NMIs.
pub const IST_NMI: u8 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;
/// IST slot for debug exceptions.
pub const IST_DEBUG: u8 = 4;
/// IST stacks each CPU has (slots 1 to `IST_STACKS`).
pub const IST_STACKS: usize = 4;

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
    /// A TSS with RSP0 = `rsp0` and IST1-4 from `ist`; no I/O bitmap.
    pub fn new(rsp0: u64, ist: [u64; IST_STACKS]) -> Self {
        Tss {
            _reserved0: 0,
            rsp: [rsp0, 0, 0],
            _reserved1: 0,
            ist: [ist[0], ist[1], ist[2], ist[3], 0, 0, 0],
            _reserved2: 0,
            _reserved3: 0,
            iomap_base: size_of::<Tss>() as u16,
        }
    }
}

/// A CPU's GDT: 15 zeroed frames reached through the direct map; with it the CPU's LDT, a
/// 16-frame area holding validated copies of the running vCPU's LDT descriptors.
pub struct Gdt {
    base: u64,
    ldt: u64,
    /// Guest entries from here on are null (a high-water mark: a vCPU switch rewrites only the
    /// entries it loads and those the previous vCPU left, not all 7168). Only this CPU touches
    /// its GDT.
    guest_end: AtomicUsize,
}

impl Gdt {
    /// The virtual ranges the CPU reads descriptors from, as `(start, pages)`: the GDT and the
    /// LDT copy.
    pub fn areas(&self) -> [(u64, u64); 2] {
        [(self.base, GDT_PAGES), (self.ldt, LDT_PAGES)]
    }

    /// Allocates the frames and writes Hestia's reserved page (the TSS descriptor is written by
    /// [`load`]). `None` when memory is exhausted.
    pub fn new() -> Option<Self> {
        let phys = crate::mm::alloc_zeroed_frames(GDT_PAGES, 4096, u64::MAX)?;
        let ldt = crate::mm::alloc_zeroed_frames(LDT_PAGES, 4096, u64::MAX)?;
        let g = Gdt {
            base: crate::mm::phys_to_virt(phys),
            ldt: crate::mm::phys_to_virt(ldt),
            guest_end: AtomicUsize::new(0),
        };
        let reserved = [
            (KERNEL_CS, 0x00AF_9B00_0000_FFFF),
            (KERNEL_DS, 0x00CF_9300_0000_FFFF),
            (FLAT_RING3_CS32, 0x00CF_FB00_0000_FFFF),
            (FLAT_RING3_DS, 0x00CF_F300_0000_FFFF),
            (FLAT_RING3_CS64, 0x00AF_FB00_0000_FFFF),
        ];
        for (sel, desc) in reserved {
            g.write(usize::from(sel >> 3), desc);
        }
        Some(g)
    }

    fn write(&self, index: usize, desc: u64) {
        debug_assert!(index / ENTRIES_PER_PAGE == RESERVED_PAGE);
        // SAFETY: `index` lies in the reserved page of this GDT's 15 frames, which Hestia owns
        // and maps read-write in the direct map; entries are 8-byte aligned.
        unsafe { ((self.base + index as u64 * 8) as *mut u64).write_volatile(desc) }
    }
}

impl Gdt {
    /// Installs a guest's descriptors in pages 0-13 (entries beyond `entries.len()` become
    /// null). The caller validated them (`hestia_core::descriptor`).
    pub fn load_guest_entries(&self, entries: impl Iterator<Item = u64>) {
        let mut n = 0;
        for (i, d) in entries.take(GUEST_ENTRIES).enumerate() {
            self.write_guest(i, d);
            n = i + 1;
        }
        for i in n..self.guest_end.load(Ordering::Relaxed) {
            self.write_guest(i, 0);
        }
        self.guest_end.store(n, Ordering::Relaxed);
    }

    /// Replaces one guest descriptor (`update_descriptor` on a live GDT frame).
    pub fn set_guest_entry(&self, index: usize, desc: u64) {
        if index < GUEST_ENTRIES {
            self.write_guest(index, desc);
            self.guest_end.fetch_max(index + 1, Ordering::Relaxed);
        }
    }

    /// Makes the first `len` entries of `entries` (validated by the caller) this CPU's LDT and
    /// loads it; `len` 0 unloads the LDT.
    pub fn load_ldt(&self, entries: impl Iterator<Item = u64>, len: usize) {
        let len = len.min(LDT_ENTRIES);
        for (i, d) in entries.take(len).enumerate() {
            self.set_ldt_entry(i, d);
        }
        let index = usize::from(LDT_SEL >> 3);
        let (low, high) = system_descriptor(self.ldt, (len * 8).saturating_sub(1) as u64, 0x82);
        self.write(index, low);
        self.write(index + 1, high);
        let sel = if len == 0 { 0 } else { LDT_SEL };
        // SAFETY: LDT_SEL names a present LDT descriptor for this CPU's own LDT area (or the
        // selector is null, which unloads the LDT); the entries there were validated.
        unsafe { asm!("lldt {0:x}", in(reg) sel, options(nostack, preserves_flags)) };
    }

    /// Replaces LDT entry `index` (validated by the caller) in this CPU's LDT copy.
    pub fn set_ldt_entry(&self, index: usize, desc: u64) {
        if index < LDT_ENTRIES {
            // SAFETY: `index` < 8192 lies in this CPU's 16-frame LDT area, which Hestia owns
            // and maps read-write in the direct map.
            unsafe { ((self.ldt + index as u64 * 8) as *mut u64).write_volatile(desc) }
        }
    }

    fn write_guest(&self, index: usize, desc: u64) {
        // SAFETY: `index` < 7168 lies in the guest pages 0-13 of this GDT's 15 frames, which
        // Hestia owns; no Hestia selector points there.
        unsafe { ((self.base + index as u64 * 8) as *mut u64).write_volatile(desc) }
    }
}

/// Guest GDT entries (pages 0-13).
pub const GUEST_ENTRIES: usize = RESERVED_PAGE * ENTRIES_PER_PAGE;

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// A 16-byte system descriptor (`access` = P, DPL and type: 0x89 a TSS, 0x82 an LDT).
fn system_descriptor(base: u64, limit: u64, access: u64) -> (u64, u64) {
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (access << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    (low, base >> 32)
}

/// Loads `gdt` (after writing the descriptor for `tss`), reloads every segment register and the
/// task register. Both must live forever (they are per-CPU data).
pub fn load(gdt: &'static Gdt, tss: &'static Tss) {
    let (low, high) = system_descriptor(
        tss as *const Tss as u64,
        (size_of::<Tss>() - 1) as u64,
        0x89,
    );
    let tss_index = usize::from(TSS_SEL >> 3);
    gdt.write(tss_index, low);
    gdt.write(tss_index + 1, high);
    let dp = DescriptorPointer {
        limit: (GDT_PAGES * 4096 - 1) as u16,
        base: gdt.base,
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
