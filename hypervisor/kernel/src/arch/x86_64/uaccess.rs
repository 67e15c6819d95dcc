//! Instructions that touch guest-controlled state and may fault, with fix-ups.
//!
//! One routine does every copy between Hestia and guest virtual memory: `rep movsq` for the
//! whole quadwords, then `rep movsb` for the last 0-7 bytes, as Xen's `__copy_to_user_ll` (a
//! string instruction's iterations are what the hot paths' small copies cost: a bounce frame
//! is seven quadwords, not 56 byte moves). If either faults (a guest pointer to an unmapped or
//! read-only page: CR0.WP makes supervisor writes honour read-only mappings), the trap handler
//! finds the faulting RIP in [`fixup_for`] and resumes at that instruction's fix-up, which
//! returns the number of bytes left (a quadword that straddles the faulting page boundary
//! counts as left whole). Callers validate ranges first (`mm::guest`): canonical, outside the
//! hypervisor hole, no wrap-around. Runs with the guest's page tables live. With SMAP on
//! (`cpu::enable_smep_smap`) the copy is the one place Hestia touches a user page: it sets
//! RFLAGS.AC (STAC) for the two moves and clears it on both ways out; a fault in between
//! enters with AC cleared and resumes at a fix-up with it set again.
//! The other routines load a guest's segment selectors, which its descriptor tables may refuse.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.hestia_copy, "ax"
    .global hestia_copy_bytes
hestia_copy_bytes:
    mov %rdx, %rcx
    shr $3, %rcx
    and $7, %edx
    testb $1, {smap_on}(%rip)
    jz 1f
    stac
1:
    .global hestia_copy_insn
hestia_copy_insn:
    rep movsq
    mov %rdx, %rcx
    .global hestia_copy_tail_insn
hestia_copy_tail_insn:
    rep movsb
    xor %eax, %eax
    jmp 2f
    .global hestia_copy_fixup
hestia_copy_fixup:
    lea (%rdx,%rcx,8), %rax
    jmp 2f
    .global hestia_copy_tail_fixup
hestia_copy_tail_fixup:
    mov %rcx, %rax
2:  testb $1, {smap_on}(%rip)
    jz 3f
    clac
3:  ret

    /* Guarded selector loads: a selector the guest's descriptor tables refuse faults into
       the fix-up, which loads the null selector instead. EAX returns what was loaded. */
    .macro hestia_guarded_load seg
    .global hestia_load_\seg
hestia_load_\seg:
    .global hestia_load_\seg\()_insn
hestia_load_\seg\()_insn:
    mov %di, %\seg
    mov %edi, %eax
    ret
    .global hestia_load_\seg\()_fixup
hestia_load_\seg\()_fixup:
    xor %eax, %eax
    mov %ax, %\seg
    ret
    .endm
    hestia_guarded_load gs
    hestia_guarded_load ds
    hestia_guarded_load es
    hestia_guarded_load fs
"#,
    smap_on = sym super::cpu::SMAP_ON,
    options(att_syntax)
);

unsafe extern "C" {
    fn hestia_copy_bytes(dst: *mut u8, src: *const u8, len: usize) -> usize;
    static hestia_copy_insn: u8;
    static hestia_copy_fixup: u8;
    static hestia_copy_tail_insn: u8;
    static hestia_copy_tail_fixup: u8;
    fn hestia_load_gs(sel: u32) -> u32;
    static hestia_load_gs_insn: u8;
    static hestia_load_gs_fixup: u8;
    fn hestia_load_ds(sel: u32) -> u32;
    static hestia_load_ds_insn: u8;
    static hestia_load_ds_fixup: u8;
    fn hestia_load_es(sel: u32) -> u32;
    static hestia_load_es_insn: u8;
    static hestia_load_es_fixup: u8;
    fn hestia_load_fs(sel: u32) -> u32;
    static hestia_load_fs_insn: u8;
    static hestia_load_fs_fixup: u8;
}

/// Where to resume after a #NP, #GP or #PF in Hestia at `rip`, if it is one of the guarded
/// instructions.
pub fn fixup_for(rip: u64) -> Option<u64> {
    [
        (copy_insn(), copy_fixup()),
        (
            (&raw const hestia_copy_tail_insn) as u64,
            (&raw const hestia_copy_tail_fixup) as u64,
        ),
        (
            (&raw const hestia_load_gs_insn) as u64,
            (&raw const hestia_load_gs_fixup) as u64,
        ),
        (
            (&raw const hestia_load_ds_insn) as u64,
            (&raw const hestia_load_ds_fixup) as u64,
        ),
        (
            (&raw const hestia_load_es_insn) as u64,
            (&raw const hestia_load_es_fixup) as u64,
        ),
        (
            (&raw const hestia_load_fs_insn) as u64,
            (&raw const hestia_load_fs_fixup) as u64,
        ),
    ]
    .into_iter()
    .find_map(|(insn, fixup)| (insn == rip).then_some(fixup))
}

/// Loads selector `sel` into %gs for a guest (from its GDT), returning the guest base the CPU
/// loaded and the selector now in %gs (null if the descriptor was refused). Hestia's own GS base
/// is restored before returning.
pub fn load_guest_gs(sel: u16) -> (u16, u64) {
    let hestia = super::cpu::gs_base();
    let enabled = super::cpu::interrupts_enabled();
    super::cpu::disable_interrupts();
    // SAFETY: a segment load only changes %gs; a refused selector faults into the fix-up, which
    // loads the null selector. Interrupts are off until Hestia's GS base is back.
    let loaded = unsafe { hestia_load_gs(u32::from(sel)) } as u16;
    let base = if loaded & !3 == 0 {
        0 // a null selector: no base (AMD would keep the old one, which is Hestia's)
    } else {
        super::cpu::gs_base()
    };
    // SAFETY: the value read above: this CPU's own per-CPU base.
    unsafe { super::cpu::set_gs_base(hestia) };
    if enabled {
        super::cpu::enable_interrupts();
    }
    (loaded, base)
}

/// Loads a guest's DS, ES and FS selectors (from its GDT and LDT, loaded into this CPU's
/// tables), each replaced by the null selector where the descriptor is refused; returns the
/// selectors now loaded. Loading FS changes the FS base: the caller sets the guest's after.
pub fn load_guest_data_selectors(ds: u16, es: u16, fs: u16) -> [u16; 3] {
    // SAFETY: a data segment load only changes that register (and FS's base); a refused
    // selector faults into its fix-up, which loads the null selector. Hestia uses none of the
    // three (64-bit code ignores DS and ES bases).
    unsafe {
        [
            hestia_load_ds(u32::from(ds)) as u16,
            hestia_load_es(u32::from(es)) as u16,
            hestia_load_fs(u32::from(fs)) as u16,
        ]
    }
}

/// The copy instruction whose faults are fixed up.
fn copy_insn() -> u64 {
    (&raw const hestia_copy_insn) as u64
}

/// Where a faulting copy resumes.
fn copy_fixup() -> u64 {
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
