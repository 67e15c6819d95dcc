//! Frame-pointer backtraces with symbol names.
//!
//! The kernel is built with frame pointers, so each frame starts with `[saved rbp, return rip]`.
//! The walk only follows frame pointers that point into Hestia's stacks or image, that grow
//! upward and are 8-aligned, and stops after [`MAX_FRAMES`], so a corrupt chain ends the trace
//! instead of faulting inside the fault handler. Names come from the `.symtab` GRUB loaded
//! (see `bootinfo`), resolved by `hestia_core::symbols` and demangled.

use core::fmt::Write;

use hestia_core::symbols::SymbolTable;

use crate::bootinfo::SymbolSections;
use crate::mm;

const MAX_FRAMES: usize = 32;

static SYMBOLS: spin::Once<SymbolTable<'static>> = spin::Once::new();

/// Makes the symbol table loaded by the bootloader available to backtraces.
pub fn init(s: &SymbolSections) {
    let slice = |(a, b): (u64, u64)| -> &'static [u8] {
        // SAFETY: `bootinfo` checked the range lies in the direct map, and `mm::init` reserved it,
        // so the bytes stay valid and unchanged for Hestia's lifetime.
        unsafe { core::slice::from_raw_parts(mm::phys_to_virt(a) as *const u8, (b - a) as usize) }
    };
    SYMBOLS.call_once(|| SymbolTable::new(slice(s.symtab), slice(s.strtab)));
}

/// Writes `name+0xoff` for `addr`, or `??` when unknown.
pub fn write_symbol(w: &mut dyn Write, addr: u64) {
    match SYMBOLS.get().and_then(|t| t.resolve(addr)) {
        Some(r) => {
            let _ = write!(w, "{:#}+{:#x}", rustc_demangle::demangle(r.name), r.offset);
        }
        None => {
            let _ = write!(w, "??");
        }
    }
}

fn plausible_frame(rbp: u64) -> bool {
    let in_stacks = (mm::STACKS_BASE..mm::STACKS_BASE + (1 << 30)).contains(&rbp);
    let in_image = (mm::KERNEL_VIRT..mm::KERNEL_VIRT + (64 << 20)).contains(&rbp);
    rbp.is_multiple_of(8)
        && (in_stacks || in_image)
        && !mm::is_stack_guard(rbp)
        && !mm::is_stack_guard(rbp + 8)
}

/// Prints the call chain starting at frame pointer `rbp`.
pub fn print(w: &mut dyn Write, mut rbp: u64) {
    let _ = writeln!(w, "Backtrace (frame pointers):");
    for _ in 0..MAX_FRAMES {
        if rbp == 0 || !plausible_frame(rbp) {
            break;
        }
        // SAFETY: `rbp` is 8-aligned and lies in a mapped part of Hestia's stacks or image
        // (checked above), so both words are readable.
        let (next, ret) = unsafe { ((rbp as *const u64).read(), ((rbp + 8) as *const u64).read()) };
        if ret == 0 {
            break;
        }
        let _ = write!(w, "   [<{ret:016x}>] ");
        write_symbol(w, ret);
        let _ = writeln!(w);
        if next <= rbp {
            break;
        }
        rbp = next;
    }
}
