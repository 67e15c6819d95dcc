//! The multiboot2 header and the 32-bit entry path into long mode.
//!
//! GRUB (multiboot2 specification 2.0, section 3.3) enters `_start32` in 32-bit protected mode
//! with paging off, EAX = 0x36D76289 and EBX = the physical address of the boot information. The
//! stub checks for long mode, builds early page tables (identity map of the first 4 GiB, the same
//! 4 GiB at the direct-map base, and the image at its link address), enables PAE, LME, NXE and
//! paging, then jumps to `hestia_entry64` at the image's virtual address, which calls
//! [`crate::hestia_main`]. Everything the stub touches lives in `.boot*` sections, linked at
//! their physical addresses. The final page tables replace these early ones in `mm::paging`.

use core::arch::global_asm;

/// Multiboot2 magic number the bootloader leaves in EAX.
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36D7_6289;

global_asm!(
    r#"
    .set MB2_MAGIC, 0xE85250D6
    .section .multiboot2, "a"
    .balign 8
mb2_header_start:
    .long MB2_MAGIC
    .long 0
    .long mb2_header_end - mb2_header_start
    .long 0x100000000 - (MB2_MAGIC + (mb2_header_end - mb2_header_start))
    /* Entry address tag: GRUB refuses ELF64 entry points above 4 GiB, so name the 32-bit stub. */
    .balign 8
    .short 3
    .short 0
    .long 12
    .long _start32
    /* Module alignment tag: page-aligned modules (dom0 kernel, initrd). */
    .balign 8
    .short 6
    .short 0
    .long 8
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

    .section .boot.text, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov %eax, %edi
    mov %ebx, %esi
    mov $boot_stack_top, %esp

    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb .Lno_long_mode
    mov $0x80000001, %eax
    cpuid
    bt $29, %edx
    jnc .Lno_long_mode
    mov %edx, %ebp

    /* PML4: slot 0 and slot 262 (direct map) -> low PDPT, slot 261 -> image PDPT. */
    mov $boot_pdpt_low, %eax
    or $3, %eax
    mov %eax, boot_pml4
    mov %eax, boot_pml4 + 262 * 8
    mov $boot_pdpt_high, %eax
    or $3, %eax
    mov %eax, boot_pml4 + 261 * 8

    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $12, %eax
    add $boot_pd_low, %eax
    or $3, %eax
    mov %eax, boot_pdpt_low(, %ecx, 8)
    inc %ecx
    cmp $4, %ecx
    jne 1b

    /* 2048 x 2 MiB pages: 0 - 4 GiB. */
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd_low(, %ecx, 8)
    inc %ecx
    cmp $2048, %ecx
    jne 1b

    /* 0xFFFF82D080000000: PDPT index 322, 16 x 2 MiB pages from 2 MiB physical. */
    mov $boot_pd_high, %eax
    or $3, %eax
    mov %eax, boot_pdpt_high + 322 * 8
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    add $0x200000, %eax
    or $0x83, %eax
    mov %eax, boot_pd_high(, %ecx, 8)
    inc %ecx
    cmp $16, %ecx
    jne 1b

    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    bt $20, %ebp
    jnc 2f
    or $0x800, %eax
2:  wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0
    lgdt boot_gdtr
    ljmp $0x08, $.Lstart64

.Lno_long_mode:
    mov $.Lmsg_no_long_mode, %esi
1:  movzbl (%esi), %ebx
    test %ebx, %ebx
    jz 3f
2:  mov $0x3fd, %dx
    in %dx, %al
    test $0x20, %al
    jz 2b
    mov $0x3f8, %dx
    mov %bl, %al
    out %al, %dx
    inc %esi
    jmp 1b
3:  cli
    hlt
    jmp 3b

    .code64
.Lstart64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov %edi, %edi
    mov %esi, %esi
    movabs $hestia_entry64, %rax
    jmp *%rax

    .section .boot.data, "a"
.Lmsg_no_long_mode:
    .asciz "Hestia: this CPU has no long mode (x86_64); it cannot run Hestia.\r\n"
    .balign 16
boot_gdt:
    .quad 0
    /* Accessed bits preset: the CPU would otherwise write them into a read-only page. */
    .quad 0x00AF9B000000FFFF
    .quad 0x00CF93000000FFFF
boot_gdt_end:
boot_gdtr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .boot.bss, "aw", @nobits
    .balign 4096
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pd_low:    .skip 4 * 4096
boot_pdpt_high: .skip 4096
boot_pd_high:   .skip 4096
boot_stack:     .skip 16384
boot_stack_top:

    .section .text.hestia_entry64, "ax"
    .global hestia_entry64
hestia_entry64:
    lea {stack}+{stack_size}(%rip), %rsp
    xor %ebp, %ebp
    call {main}
    ud2
"#,
    main = sym crate::hestia_main,
    stack = sym BSP_BOOT_STACK,
    stack_size = const BSP_BOOT_STACK_SIZE,
    options(att_syntax)
);

/// Size of the BSP's first stack, used until the guarded per-CPU stack exists. `hestia_main`
/// builds the boot information (15 KiB with the EFI memory map) and moves it by value a few
/// times on it: 64 KiB overflowed into the statics below it (the TSC rate read 0).
const BSP_BOOT_STACK_SIZE: usize = 256 * 1024;

/// The lowest bytes of the first stack, filled with [`TRIPWIRE_BYTE`] when `hestia_main`
/// starts; any other byte there once it has left the stack means the stack reached them.
const BSP_BOOT_STACK_TRIPWIRE: usize = 4096;
const TRIPWIRE_BYTE: u8 = 0xA5;

/// The first stack's lowest bytes as a raw pointer (no reference to a `static mut` is made).
fn tripwire() -> *mut [u8; BSP_BOOT_STACK_TRIPWIRE] {
    (&raw mut BSP_BOOT_STACK).cast()
}

/// Fills the first stack's lowest bytes with the tripwire pattern; first thing in
/// `hestia_main`, which runs at the other end of that stack.
pub fn arm_boot_stack_tripwire() {
    // SAFETY: only the BSP runs, at the top of this 256 KiB stack: its lowest 4 KiB are not in
    // use, and nothing else refers to them.
    unsafe { core::ptr::write_volatile(tripwire(), [TRIPWIRE_BYTE; BSP_BOOT_STACK_TRIPWIRE]) }
}

/// Whether `hestia_main`'s use of the first stack reached its lowest [`BSP_BOOT_STACK_TRIPWIRE`]
/// bytes, i.e. came close to overwriting the statics below it (the first stack has no guard
/// page). Called once the BSP runs on its guarded stack.
pub fn boot_stack_exhausted() -> bool {
    // SAFETY: the first stack is written only through RSP while `hestia_main` runs on it; the
    // BSP has left it for good when this runs and no other CPU ever uses it, so this is a
    // plain read of bytes of a static nothing writes any more.
    let low = unsafe { core::ptr::read_volatile(tripwire()) };
    low.iter().any(|&b| b != TRIPWIRE_BYTE)
}

#[repr(C, align(16))]
struct BootStack([u8; BSP_BOOT_STACK_SIZE]);

/// The BSP's first stack. `hestia_entry64` points RSP at its end; it is abandoned once
/// `hestia_main` switches to a stack with a guard page.
static mut BSP_BOOT_STACK: BootStack = BootStack([0; BSP_BOOT_STACK_SIZE]);
