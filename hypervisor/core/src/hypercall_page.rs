//! The hypercall page of a 64-bit PV guest: 128 stubs of 32 bytes, stub `n` issuing
//! hypercall `n` by `syscall` (Xen's `hypercall_page_initialise_ring3_kernel`,
//! `xen/arch/x86/pv/hypercall.c`). Each stub saves RCX and R11 (which `syscall` clobbers),
//! loads the number into EAX, and returns; `iret`'s stub pushes RAX first and never returns
//! (the hypervisor resumes the guest at the frame it popped). The rest is `int3`.

use xen_abi::xen::{HYPERCALL_STUB_SIZE, NR_HYPERCALL_STUBS, hypercall};

/// The bytes of a hypercall page.
pub fn page() -> [u8; 4096] {
    let mut page = [0xCCu8; 4096];
    for (nr, stub) in page.chunks_exact_mut(HYPERCALL_STUB_SIZE).enumerate() {
        let n = (nr as u32).to_le_bytes();
        if nr as u32 == hypercall::IRET {
            // push %rcx; push %r11; push %rax; mov $nr,%eax; syscall
            stub[..11].copy_from_slice(&[
                0x51, 0x41, 0x53, 0x50, 0xB8, n[0], n[1], n[2], n[3], 0x0F, 0x05,
            ]);
        } else {
            // push %rcx; push %r11; mov $nr,%eax; syscall; pop %r11; pop %rcx; ret
            stub[..14].copy_from_slice(&[
                0x51, 0x41, 0x53, 0xB8, n[0], n[1], n[2], n[3], 0x0F, 0x05, 0x41, 0x5B, 0x59, 0xC3,
            ]);
        }
    }
    debug_assert_eq!(NR_HYPERCALL_STUBS * HYPERCALL_STUB_SIZE, 4096);
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stub_loads_its_own_number_and_syscalls() {
        let p = page();
        for nr in 0..NR_HYPERCALL_STUBS {
            let s = &p[nr * HYPERCALL_STUB_SIZE..][..HYPERCALL_STUB_SIZE];
            let at = if nr as u32 == hypercall::IRET { 4 } else { 3 };
            assert_eq!(s[at], 0xB8, "stub {nr}");
            assert_eq!(
                u32::from_le_bytes(s[at + 1..at + 5].try_into().unwrap()),
                nr as u32
            );
            assert_eq!(&s[at + 5..at + 7], &[0x0F, 0x05]);
            assert_eq!(*s.last().unwrap(), 0xCC);
        }
    }
}
