//! Copies between Hestia and guest virtual memory, with page-fault fix-up.
//!
//! One routine, `rep movsb`, does every copy. If it faults (a guest pointer to an unmapped or
//! read-only page: CR0.WP makes supervisor writes honour read-only mappings), the trap handler
//! finds the faulting RIP is [`copy_insn`] and resumes at the fix-up, which returns the number
//! of bytes left. Callers validate ranges first (`mm::guest`): canonical, outside the hypervisor
//! hole, no wrap-around. Runs with the guest's page tables live.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.hestia_copy, "ax"
    .global hestia_copy_bytes
hestia_copy_bytes:
    mov %rdx, %rcx
    .global hestia_copy_insn
hestia_copy_insn:
    rep movsb
    xor %eax, %eax
    ret
    .global hestia_copy_fixup
hestia_copy_fixup:
    mov %rcx, %rax
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn hestia_copy_bytes(dst: *mut u8, src: *const u8, len: usize) -> usize;
    static hestia_copy_insn: u8;
    static hestia_copy_fixup: u8;
}

/// The instruction whose faults are fixed up.
pub fn copy_insn() -> u64 {
    (&raw const hestia_copy_insn) as u64
}

/// Where a faulting copy resumes.
pub fn copy_fixup() -> u64 {
    (&raw const hestia_copy_fixup) as u64
}

/// Copies `len` bytes from `src` to `dst`; returns the number of bytes NOT copied (0 = all).
///
/// # Safety
/// One side must be Hestia memory valid for `len` bytes; the other a guest virtual range that
/// the caller checked lies in guest space (faults there are fixed up, not fatal).
pub unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> usize {
    // SAFETY: forwarded to the caller; the routine itself touches only these two ranges.
    unsafe { hestia_copy_bytes(dst, src, len) }
}
