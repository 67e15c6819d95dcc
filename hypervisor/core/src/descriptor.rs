//! Segment descriptor validation for PV guests' GDTs and LDTs (`set_gdt`, `update_descriptor`;
//! `shared/xen-abi.md` 4.2, Xen's `check_descriptor`).
//!
//! A guest descriptor may be: not present (kept as is); a code or data descriptor (S = 1),
//! whose DPL is forced to 3 because 64-bit PV kernels run in ring 3; or a system descriptor of
//! type 0 (the upper half of a 16-byte descriptor). Everything else (TSS, LDT, interrupt and trap
//! gates, call gates) is refused: Xen allows constrained call gates for 64-bit guests but only
//! ever turns their use into #GP, and Linux never installs them.

/// Present bit.
const P: u64 = 1 << 47;
/// Descriptor type S bit (1 = code/data).
const S: u64 = 1 << 44;
/// DPL field.
const DPL: u64 = 3 << 45;
/// System descriptor type field.
const TYPE: u64 = 0xF << 40;

/// The descriptor as the guest may have it (DPL fixed up), or `None` if it is refused.
pub fn check(desc: u64) -> Option<u64> {
    if desc & P == 0 {
        return Some(desc);
    }
    if desc & S != 0 {
        return Some(desc | DPL);
    }
    (desc & TYPE == 0).then_some(desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        // Linux's __KERNEL_CS as it writes it: DPL 0 long-mode code, forced to DPL 3.
        assert_eq!(check(0x00af_9b00_0000_ffff), Some(0x00af_fb00_0000_ffff));
        // Data, already DPL 3: unchanged.
        assert_eq!(check(0x00cf_f300_0000_ffff), Some(0x00cf_f300_0000_ffff));
        // Not present: anything goes.
        assert_eq!(check(0x0000_7b00_dead_beef), Some(0x0000_7b00_dead_beef));
        assert_eq!(check(0), Some(0));
        // Present system descriptors: a 64-bit TSS (type 9), an LDT (2), a call gate (0xC),
        // an interrupt gate (0xE): refused.
        for ty in [0x9u64, 0x2, 0xC, 0xE, 0xF] {
            assert_eq!(check(P | (ty << 40)), None, "system type {ty:#x}");
        }
        // Present, S = 0, type 0: the upper half of a 16-byte descriptor.
        assert_eq!(check(P), Some(P));
    }
}
