//! CPUID as a 64-bit PV guest sees it: the hardware's answers filtered through the PV
//! featureset (Xen's `cpufeatureset.h` attributes: the features marked for all guests, minus
//! what Hestia does not virtualise), plus the hypervisor leaves at 0x40000000.
//!
//! Hidden from PV guests, as on Xen: page-size and global-page extensions (PV page tables have
//! neither), MTRRs, VME, PSE36, PCID/INVPCID, 1 GiB pages, TSC deadline, x2APIC, SMEP/SMAP,
//! monitoring and power management leaves, XSAVES. dom0's kernel also sees MTRR, MONITOR and
//! EIST when the hardware has them, as Xen lets them leak there. Also hidden here until Hestia offers them:
//! FSGSBASE, AVX-512 and any XSAVE component beyond the ones Hestia enabled (`xcr0_mask`).

use crate::xstate;

/// The hypervisor's CPUID base leaf.
pub const BASE: u32 = 0x4000_0000;

/// Per-call context: what the vCPU and Hestia have enabled.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// XCR0 components guests may enable (x87/SSE/AVX as present); 0 without XSAVE.
    pub xcr0_mask: u64,
    /// The vCPU is in guest kernel mode.
    pub kernel_mode: bool,
    /// The guest set CR4.OSXSAVE.
    pub guest_osxsave: bool,
    /// The vCPU belongs to the hardware domain (dom0).
    pub hardware_domain: bool,
    /// Xen version reported in the hypervisor leaves (`major << 16 | minor`).
    pub version: u32,
    /// The hardware has IBPB (AMD's bit, or Intel's IBRSB): guests see AMD's IBPB bit, as Xen
    /// offers it on both vendors ([`crate::spec_ctrl::SpecCtrl::has_ibpb`]).
    pub ibpb: bool,
}

const fn bits(list: &[u32]) -> u32 {
    let mut m = 0;
    let mut i = 0;
    while i < list.len() {
        m |= 1 << list[i];
        i += 1;
    }
    m
}

/// Leaf 1 EDX: FPU DE TSC MSR PAE MCE CX8 APIC SEP MCA CMOV PAT CLFLUSH ACPI MMX FXSR SSE SSE2
/// SS HTT.
const L1_EDX: u32 = bits(&[
    0, 2, 4, 5, 6, 7, 8, 9, 11, 14, 15, 16, 19, 22, 23, 24, 25, 26, 27, 28,
]);
/// Leaf 1 ECX: SSE3 PCLMULQDQ SSSE3 FMA CX16 SSE4.1 SSE4.2 MOVBE POPCNT AESNI XSAVE AVX F16C
/// RDRAND (OSXSAVE and HYPERVISOR are computed).
const L1_ECX: u32 = bits(&[0, 1, 9, 12, 13, 19, 20, 22, 23, 25, 26, 28, 29, 30]);
const L1_ECX_XSAVE: u32 = 1 << 26;
const L1_EDX_MTRR: u32 = 1 << 12;
const L1_ECX_MONITOR: u32 = 1 << 3;
const L1_ECX_EIST: u32 = 1 << 7;
const L1_ECX_OSXSAVE: u32 = 1 << 27;
const L1_ECX_AVX: u32 = 1 << 28;
const L1_ECX_HYPERVISOR: u32 = 1 << 31;
/// 0x80000001 EDX: SYSCALL NX MMXEXT FFXSR RDTSCP LM 3DNOWEXT 3DNOW, and on AMD the copies of
/// leaf 1 EDX bits 0-9, 12-17, 23, 24 under the same policy.
const E1_EDX: u32 = bits(&[11, 20, 22, 25, 27, 29, 30, 31]) | (L1_EDX & 0x0183_F3FF);
/// 0x80000001 ECX: LAHF_LM CMP_LEGACY ABM SSE4A MISALIGNSSE 3DNOWPREFETCH XOP FMA4 TBM DBEXT.
const E1_ECX: u32 = bits(&[0, 1, 5, 6, 7, 8, 11, 16, 21, 26]);
/// Leaf 7.0 EBX: BMI1 AVX2 BMI2 ERMS RTM RDSEED ADX CLFLUSHOPT CLWB SHA.
const L7_EBX: u32 = bits(&[3, 5, 8, 9, 11, 18, 19, 23, 24, 29]);
/// Leaf 7.0 EBX bits needing AVX state: AVX2.
const L7_EBX_AVX: u32 = 1 << 5;
/// Leaf 7.0 ECX: PREFETCHWT1 GFNI VAES VPCLMULQDQ RDPID CLDEMOTE.
const L7_ECX: u32 = bits(&[0, 8, 9, 10, 22, 25]);
/// Leaf 7.0 ECX bits needing AVX state: VAES, VPCLMULQDQ.
const L7_ECX_AVX: u32 = bits(&[9, 10]);
/// Leaf 7.0 EDX: MD_CLEAR.
const L7_EDX: u32 = bits(&[10]);
/// Leaf 0xD.1 EAX: XSAVEOPT XSAVEC XGETBV1.
const LD1_EAX: u32 = bits(&[0, 1, 2]);
/// 0x80000008 EBX: CLZERO RSTR_FP_ERR_PTRS SSB_NO BTC_NO, and IBPB with its refinement
/// IBPB_RET from [`Context::ibpb`].
const E8_EBX: u32 = bits(&[0, 2, 26, 29]);
const E8_EBX_IBPB: u32 = 1 << 12;
const E8_EBX_IBPB_RET: u32 = 1 << 30;

/// What a PV guest sees for `leaf`/`sub`, given the hardware's answer `hw` and, for leaf 0xD
/// subleaf 0, `component(i)`: the hardware's (size, offset) of XSAVE component `i`.
pub fn pv_leaf(
    leaf: u32,
    sub: u32,
    hw: [u32; 4],
    ctx: &Context,
    component: impl Fn(u32) -> (u32, u32),
) -> [u32; 4] {
    let [a, b, c, d] = hw;
    let avx = ctx.xcr0_mask & 0b100 != 0;
    match leaf {
        BASE => [BASE + 2, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e], // "XenVMMXenVMM"
        l if l == BASE + 1 => [ctx.version, 0, 0, 0],
        // One hypercall page; no MSR for it (that is HVM); preserve-AD available.
        l if l == BASE + 2 => [1, 0, 1, 0],
        l if (BASE..BASE + 0x1_0000).contains(&l) => [0; 4],
        1 => {
            let mut ecx = c & L1_ECX;
            if ctx.xcr0_mask == 0 {
                ecx &= !(L1_ECX_XSAVE | L1_ECX_AVX);
            }
            if !avx {
                ecx &= !L1_ECX_AVX;
            }
            if ecx & L1_ECX_XSAVE != 0 && (ctx.kernel_mode || ctx.guest_osxsave) {
                ecx |= L1_ECX_OSXSAVE;
            }
            let mut edx = d & L1_EDX;
            if ctx.hardware_domain && ctx.kernel_mode {
                // Xen's historical leaks into the hardware domain's kernel: MTRR (older dom0
                // kernels take it to mean XENPF_*_memtype exist), MONITOR and EIST (Linux
                // uses them to decide on deep C-states and P-states for the host).
                edx |= d & L1_EDX_MTRR;
                ecx |= c & (L1_ECX_MONITOR | L1_ECX_EIST);
            }
            // No APIC ID: vCPUs are not CPUs.
            [a, b & 0x00ff_ffff, ecx | L1_ECX_HYPERVISOR, edx]
        }
        // MONITOR/MWAIT, thermal and power, PMU: nothing for PV guests.
        5 | 6 | 0xA => [0; 4],
        7 if sub == 0 => {
            let mut ebx = b & L7_EBX;
            let mut ecx = c & L7_ECX;
            if !avx {
                ebx &= !L7_EBX_AVX;
                ecx &= !L7_ECX_AVX;
            }
            [a, ebx, ecx, d & L7_EDX]
        }
        7 => [0; 4],
        0xD if ctx.xcr0_mask == 0 => [0; 4],
        0xD if sub == 0 => {
            let mask = ctx.xcr0_mask;
            let max = u32::try_from(xstate::area_size(mask, component)).unwrap_or(u32::MAX);
            [a & mask as u32, b, max, d & (mask >> 32) as u32]
        }
        0xD if sub == 1 => [a & LD1_EAX, 0, 0, 0],
        0xD if sub < 63 && ctx.xcr0_mask & (1 << sub) != 0 => hw,
        0xD => [0; 4],
        0x8000_0001 => [a, b, c & E1_ECX, d & E1_EDX],
        // Invariant TSC and power reporting are not offered.
        0x8000_0007 => [0; 4],
        0x8000_0008 => {
            let ibpb = if ctx.ibpb {
                E8_EBX_IBPB | (b & E8_EBX_IBPB_RET)
            } else {
                0
            };
            [a, b & E8_EBX | ibpb, c, d]
        }
        _ => hw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(xcr0_mask: u64) -> Context {
        Context {
            xcr0_mask,
            kernel_mode: true,
            guest_osxsave: false,
            hardware_domain: false,
            version: 4 << 16 | 17,
            ibpb: false,
        }
    }

    fn no_components(_: u32) -> (u32, u32) {
        (0, 0)
    }

    #[test]
    fn page_table_features_hidden() {
        // Hardware with everything in leaf 1 EDX.
        let r = pv_leaf(
            1,
            0,
            [0x806c1, 0x0102_0800, !0, !0],
            &ctx(0b111),
            no_components,
        );
        for (bit, name) in [
            (3, "PSE"),
            (13, "PGE"),
            (12, "MTRR"),
            (1, "VME"),
            (17, "PSE36"),
        ] {
            assert_eq!(r[3] & (1 << bit), 0, "{name} must be hidden");
        }
        for (bit, name) in [
            (0, "FPU"),
            (6, "PAE"),
            (9, "APIC"),
            (16, "PAT"),
            (25, "SSE"),
        ] {
            assert_ne!(r[3] & (1 << bit), 0, "{name} must stay");
        }
        assert_eq!(r[1] >> 24, 0, "no APIC id");
        assert_ne!(r[2] & L1_ECX_HYPERVISOR, 0);
        for (bit, name) in [
            (17, "PCID"),
            (21, "X2APIC"),
            (24, "TSC_DEADLINE"),
            (5, "VMX"),
            (3, "MONITOR"),
        ] {
            assert_eq!(r[2] & (1 << bit), 0, "{name} must be hidden");
        }
        let dom0 = Context {
            hardware_domain: true,
            ..ctx(0b111)
        };
        let r0 = pv_leaf(1, 0, [0, 0, !0, !0], &dom0, no_components);
        assert_ne!(r0[3] & L1_EDX_MTRR, 0, "dom0's kernel sees MTRR, as on Xen");
        assert_ne!(r0[2] & L1_ECX_MONITOR, 0, "and MONITOR");
        let user = Context {
            kernel_mode: false,
            ..dom0
        };
        assert_eq!(
            pv_leaf(1, 0, [0, 0, !0, !0], &user, no_components)[3] & L1_EDX_MTRR,
            0
        );
        let e = pv_leaf(0x8000_0001, 0, [0, 0, !0, !0], &ctx(0b111), no_components);
        assert_eq!(e[3] & (1 << 26), 0, "1 GiB pages hidden");
        assert_eq!(e[3] & (1 << 3), 0, "AMD's PSE copy hidden");
        assert_ne!(e[3] & (1 << 29), 0, "long mode stays");
        assert_eq!(e[2] & (1 << 2), 0, "SVM hidden");
    }

    #[test]
    fn xsave_follows_what_hestia_enabled() {
        let none = pv_leaf(1, 0, [0, 0, !0, 0], &ctx(0), no_components);
        assert_eq!(none[2] & (L1_ECX_XSAVE | L1_ECX_OSXSAVE | L1_ECX_AVX), 0);
        let sse = pv_leaf(1, 0, [0, 0, !0, 0], &ctx(0b11), no_components);
        assert_eq!(sse[2] & (L1_ECX_XSAVE | L1_ECX_AVX), L1_ECX_XSAVE);
        assert_ne!(sse[2] & L1_ECX_OSXSAVE, 0, "kernel mode sees OSXSAVE");
        let user = Context {
            kernel_mode: false,
            ..ctx(0b11)
        };
        let u = pv_leaf(1, 0, [0, 0, !0, 0], &user, no_components);
        assert_eq!(
            u[2] & L1_ECX_OSXSAVE,
            0,
            "user mode before the kernel enabled it"
        );
        // Hardware with AVX-512 (components 5-7) and AVX at offset 576.
        let comp = |i: u32| match i {
            2 => (256, 576),
            5 => (64, 1088),
            6 => (512, 1152),
            7 => (1024, 1664),
            _ => (0, 0),
        };
        let d0 = pv_leaf(0xD, 0, [0xe7, 2696, 2696, 0], &ctx(0b111), comp);
        assert_eq!((d0[0], d0[2]), (0b111, 832));
        assert_eq!(pv_leaf(0xD, 5, [64, 1088, 0, 0], &ctx(0b111), comp), [0; 4]);
        assert_eq!(
            pv_leaf(0xD, 2, [256, 576, 0, 0], &ctx(0b111), comp),
            [256, 576, 0, 0]
        );
        assert_eq!(
            pv_leaf(0xD, 1, [!0, 0, 0, 0], &ctx(0b111), comp)[0],
            0b111,
            "no XSAVES"
        );
        let l7 = pv_leaf(7, 0, [0, !0, !0, !0], &ctx(0b11), no_components);
        assert_eq!(
            l7[1] & (1 << 16 | 1 << 5 | 1),
            0,
            "AVX-512F, AVX2 without AVX, FSGSBASE"
        );
        assert_ne!(l7[1] & (1 << 3), 0, "BMI1 stays");
    }

    #[test]
    fn hypervisor_leaves() {
        let c = ctx(0);
        assert_eq!(pv_leaf(BASE, 0, [0; 4], &c, no_components)[0], BASE + 2);
        assert_eq!(pv_leaf(BASE + 1, 0, [0; 4], &c, no_components)[0], 0x4_0011);
        assert_eq!(pv_leaf(BASE + 0x100, 0, [1; 4], &c, no_components), [0; 4]);
    }

    #[test]
    fn ibpb_offered_on_either_vendors_bit() {
        // Intel: IBRSB in leaf 7 only, so IBPB comes from the context; IBRS/STIBP/SSBD hidden.
        let intel = Context {
            ibpb: true,
            ..ctx(0)
        };
        assert_eq!(
            pv_leaf(0x8000_0008, 0, [0; 4], &intel, no_components)[1],
            E8_EBX_IBPB
        );
        let l7 = pv_leaf(7, 0, [0, 0, 0, !0], &intel, no_components);
        assert_eq!(
            l7[3],
            1 << 10,
            "MD_CLEAR only: no IBRSB, STIBP, SSBD, ARCH_CAPS"
        );
        // No IBPB in hardware: neither the bit nor its refinement.
        let none = pv_leaf(0x8000_0008, 0, [0, !0, 0, 0], &ctx(0), no_components);
        assert_eq!(none[1] & (E8_EBX_IBPB | E8_EBX_IBPB_RET), 0);
        let amd = pv_leaf(0x8000_0008, 0, [0, !0, 0, 0], &intel, no_components);
        assert_eq!(
            amd[1] & (E8_EBX_IBPB | E8_EBX_IBPB_RET),
            E8_EBX_IBPB | E8_EBX_IBPB_RET
        );
    }
}
