//! x86-64 virtual addresses as guests hand them to Hestia.
//!
//! With 4-level paging a virtual address is *canonical* when bits 63..47 are all equal (bit 47
//! sign-extended). Loading a non-canonical address into RIP, a segment base or a callback
//! slot faults in Hestia's context, not the guest's, so every such guest value is checked here
//! first (Xen's `is_canonical_address`).

/// True if `va` is canonical for 48-bit virtual addresses.
pub fn canonical(va: u64) -> bool {
    ((va << 16) as i64 >> 16) as u64 == va
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn both_halves_are_canonical_and_the_gap_is_not() {
        assert!(canonical(0));
        assert!(canonical(0x0000_7fff_ffff_ffff));
        assert!(canonical(0xffff_8000_0000_0000));
        assert!(canonical(u64::MAX));
        assert!(!canonical(0x0000_8000_0000_0000));
        assert!(!canonical(0xffff_7fff_ffff_ffff));
        assert!(!canonical(0x8000_0000_0000_0000));
        assert!(!canonical(0x0001_0000_0000_0000));
    }
}
