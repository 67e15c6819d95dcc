//! CPUID as a 64-bit PV guest sees it, in two steps as in Xen (`xen/arch/x86/cpuid.c`,
//! `cpu-policy.c`):
//!
//! 1. [`pv_leaf`], once at boot for each leaf of the host policy: the hardware's answers
//!    filtered through the PV featureset (Xen's `cpufeatureset.h` attributes: the features
//!    marked for all guests, minus what Hestia does not virtualise). The result is the PV
//!    policy every domain starts with (`crate::cpu_policy`).
//! 2. [`guest_leaf`], on each CPUID a guest executes: the domain's own policy (Xen's
//!    `guest_cpuid` first pass: leaves past the counts read as zero, the AMD model), the
//!    hypervisor leaves at 0x40000000, and the parts that depend on the moment: OSXSAVE, the
//!    XSAVE area size for the XCR0 loaded now, and the hardware domain's leaks.
//!
//! Hidden from PV guests, as on Xen: page-size and global-page extensions (PV page tables have
//! neither), MTRRs, VME, PSE36, PCID/INVPCID, 1 GiB pages, TSC deadline, x2APIC, SMEP/SMAP,
//! monitoring and power management leaves, XSAVES. dom0's kernel also sees MTRR, MONITOR and
//! EIST when the hardware has them, as Xen lets them leak there. Also hidden here until Hestia offers them:
//! FSGSBASE, AVX-512 and any XSAVE component beyond the ones Hestia enabled (`xcr0_mask`).

use crate::cpu_policy::{CpuPolicy, Leaf, NR_BASIC, NR_EXTD, NR_FEAT};
use crate::xstate;

/// The hypervisor's CPUID base leaf.
pub const BASE: u32 = 0x4000_0000;

/// What Hestia offers every PV guest, fixed at boot.
#[derive(Clone, Copy, Debug)]
pub struct PvFeatures {
    /// XCR0 components guests may enable (x87/SSE/AVX as present); 0 without XSAVE.
    pub xcr0_mask: u64,
    /// The hardware has IBPB (AMD's bit, or Intel's IBRSB): guests see AMD's IBPB bit, as Xen
    /// offers it on both vendors ([`crate::spec_ctrl::SpecCtrl::has_ibpb`]).
    pub ibpb: bool,
}

/// Per-call context: the state of the vCPU executing CPUID.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// The vCPU is in guest kernel mode.
    pub kernel_mode: bool,
    /// The guest set CR4.OSXSAVE.
    pub guest_osxsave: bool,
    /// The vCPU belongs to the hardware domain (dom0).
    pub hardware_domain: bool,
    /// Xen version reported in the hypervisor leaves (`major << 16 | minor`).
    pub version: u32,
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
/// RDRAND (OSXSAVE is dynamic, HYPERVISOR always set).
const L1_ECX: u32 = bits(&[0, 1, 9, 12, 13, 19, 20, 22, 23, 25, 26, 28, 29, 30]);
pub(crate) const L1_ECX_XSAVE: u32 = 1 << 26;
const L1_EDX_MTRR: u32 = 1 << 12;
const L1_ECX_MONITOR: u32 = 1 << 3;
const L1_ECX_EIST: u32 = 1 << 7;
const L1_ECX_OSXSAVE: u32 = 1 << 27;
pub(crate) const L1_ECX_AVX: u32 = 1 << 28;
/// Leaf 1 ECX bits needing AVX state: FMA, F16C.
pub(crate) const L1_ECX_AVX_DEPS: u32 = bits(&[12, 29]);
const L1_ECX_HYPERVISOR: u32 = 1 << 31;
/// 0x80000001 EDX: SYSCALL NX MMXEXT FFXSR RDTSCP LM 3DNOWEXT 3DNOW, and on AMD the copies of
/// leaf 1 EDX bits 0-9, 12-17, 23, 24 under the same policy.
const E1_EDX: u32 = bits(&[11, 20, 22, 25, 27, 29, 30, 31]) | (L1_EDX & 0x0183_F3FF);
/// 0x80000001 ECX: LAHF_LM CMP_LEGACY ABM SSE4A MISALIGNSSE 3DNOWPREFETCH XOP FMA4 TBM DBEXT.
const E1_ECX: u32 = bits(&[0, 1, 5, 6, 7, 8, 11, 16, 21, 26]);
/// Leaf 7.0 EBX: BMI1 AVX2 BMI2 ERMS RTM RDSEED ADX CLFLUSHOPT CLWB SHA.
const L7_EBX: u32 = bits(&[3, 5, 8, 9, 11, 18, 19, 23, 24, 29]);
/// Leaf 7.0 EBX bits needing AVX state: AVX2.
pub(crate) const L7_EBX_AVX: u32 = 1 << 5;
/// Leaf 7.0 ECX: PREFETCHWT1 GFNI VAES VPCLMULQDQ RDPID CLDEMOTE.
const L7_ECX: u32 = bits(&[0, 8, 9, 10, 22, 25]);
/// Leaf 7.0 ECX bits needing AVX state: VAES, VPCLMULQDQ.
pub(crate) const L7_ECX_AVX: u32 = bits(&[9, 10]);
/// Leaf 7.0 EDX: MD_CLEAR.
const L7_EDX: u32 = bits(&[10]);
/// Leaf 0xD.1 EAX: XSAVEOPT XSAVEC XGETBV1.
const LD1_EAX: u32 = bits(&[0, 1, 2]);
/// 0x80000008 EBX: CLZERO RSTR_FP_ERR_PTRS SSB_NO BTC_NO, and IBPB with its refinement
/// IBPB_RET from [`PvFeatures::ibpb`].
const E8_EBX: u32 = bits(&[0, 2, 26, 29]);
const E8_EBX_IBPB: u32 = 1 << 12;
const E8_EBX_IBPB_RET: u32 = 1 << 30;

/// The PV policy's `leaf`/`sub`, given the host's answer `hw` and `component(i)`: the
/// hardware's (size, offset) of XSAVE component `i` (for leaf 0xD subleaf 0).
pub fn pv_leaf(
    leaf: u32,
    sub: u32,
    hw: [u32; 4],
    f: &PvFeatures,
    component: impl Fn(u32) -> (u32, u32),
) -> [u32; 4] {
    let [a, b, c, d] = hw;
    let avx = f.xcr0_mask & 0b100 != 0;
    match leaf {
        1 => {
            let mut ecx = c & L1_ECX;
            if f.xcr0_mask == 0 {
                ecx &= !(L1_ECX_XSAVE | L1_ECX_AVX);
            }
            if !avx {
                ecx &= !(L1_ECX_AVX | L1_ECX_AVX_DEPS);
            }
            // No APIC ID: vCPUs are not CPUs.
            [a, b & 0x00ff_ffff, ecx | L1_ECX_HYPERVISOR, d & L1_EDX]
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
        0xD if f.xcr0_mask == 0 => [0; 4],
        0xD if sub == 0 => {
            let mask = f.xcr0_mask;
            let max = u32::try_from(xstate::area_size(mask, component)).unwrap_or(u32::MAX);
            [a & mask as u32, b, max, d & (mask >> 32) as u32]
        }
        0xD if sub == 1 => [a & LD1_EAX, 0, 0, 0],
        0xD if sub < 63 && f.xcr0_mask & (1 << sub) != 0 => hw,
        0xD => [0; 4],
        0x8000_0001 => [a, b, c & E1_ECX, d & E1_EDX],
        // Invariant TSC and power reporting are not offered.
        0x8000_0007 => [0; 4],
        // SVM's feature leaf: no SVM for PV guests.
        0x8000_000A => [0; 4],
        0x8000_0008 => {
            let ibpb = if f.ibpb {
                E8_EBX_IBPB | (b & E8_EBX_IBPB_RET)
            } else {
                0
            };
            [a, b & E8_EBX | ibpb, c, d]
        }
        _ => hw,
    }
}

/// What a vCPU in `ctx` sees for `leaf`/`sub` under its domain's policy `p`; `hw(leaf, sub)`
/// is the hardware's CPUID, asked only for the dynamic parts (the XSAVE size for the XCR0
/// loaded now, the hardware domain's leaks).
pub fn guest_leaf(
    p: &CpuPolicy,
    leaf: u32,
    sub: u32,
    ctx: &Context,
    hw: impl Fn(u32, u32) -> Leaf,
) -> Leaf {
    let xsave = p.basic[1][2] & L1_ECX_XSAVE != 0;
    let [a, mut b, mut c, mut d] = match leaf {
        // Xen's leaves; Hestia has the first two after the base, the minimum a toolstack's
        // `hv_limit` can ask for, so that limit changes nothing here.
        BASE => return [BASE + 2, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e], // "XenVMMXenVMM"
        l if l == BASE + 1 => return [ctx.version, 0, 0, 0],
        // One hypercall page; no MSR for it (that is HVM); preserve-AD available.
        l if l == BASE + 2 => return [1, 0, 1, 0],
        l if l > p.max_leaf().min(NR_BASIC as u32 - 1) && l < BASE => return [0; 4],
        4 => p.cache.get(sub as usize).copied().unwrap_or_default(),
        7 if sub > p.max_subleaf().min(NR_FEAT as u32 - 1) => return [0; 4],
        7 => p.feat.get(sub as usize).copied().unwrap_or_default(),
        0xB => p.topo.get(sub as usize).copied().unwrap_or_default(),
        0xD if !xsave => return [0; 4],
        0xD => p.xstate.get(sub as usize).copied().unwrap_or_default(),
        l if l < BASE => p.basic.get(l as usize).copied().unwrap_or_default(),
        l if l & 0xffff_0000 == 0x8000_0000
            && (l & 0xffff) <= (p.extd_max_leaf() & 0xffff).min(NR_EXTD as u32 - 1) =>
        {
            p.extd
                .get((l & 0xffff) as usize)
                .copied()
                .unwrap_or_default()
        }
        _ => return [0; 4],
    };
    match (leaf, sub) {
        (1, _) => {
            b &= 0x00ff_ffff;
            if xsave && (ctx.kernel_mode || ctx.guest_osxsave) {
                c |= L1_ECX_OSXSAVE;
            }
            if ctx.hardware_domain && ctx.kernel_mode {
                // Xen's historical leaks into the hardware domain's kernel: MTRR (older dom0
                // kernels take it to mean XENPF_*_memtype exist), MONITOR and EIST (Linux
                // uses them to decide on deep C-states and P-states for the host).
                let [_, _, hc, hd] = hw(1, 0);
                d |= hd & L1_EDX_MTRR;
                c |= hc & (L1_ECX_MONITOR | L1_ECX_EIST);
            }
        }
        // The size of the XSAVE area for the XCR0 loaded now.
        (0xD, 0) => b = hw(0xD, 0)[1],
        _ => {}
    }
    [a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            kernel_mode: true,
            guest_osxsave: false,
            hardware_domain: false,
            version: 4 << 16 | 17,
        }
    }

    fn features(xcr0_mask: u64) -> PvFeatures {
        PvFeatures {
            xcr0_mask,
            ibpb: false,
        }
    }

    /// What a vCPU in `c` sees for `leaf`/`sub` on hardware answering `answer(leaf, sub)` for
    /// leaves 1 to 0xD and 0x80000001 to 0x8000000A (leaf 0 and 0x80000000 give the counts).
    fn see(
        leaf: u32,
        sub: u32,
        answer: impl Fn(u32, u32) -> Leaf,
        f: &PvFeatures,
        c: &Context,
    ) -> Leaf {
        let hw = |l: u32, s: u32| match l {
            0 => [0xD, 0, 0, 0],
            0x8000_0000 => [0x8000_000A, 0, 0, 0],
            _ => answer(l, s),
        };
        let host = CpuPolicy::host(&CpuPolicy::fill(hw, 0));
        guest_leaf(&CpuPolicy::pv(&host, f, false), leaf, sub, c, hw)
    }

    fn all(_: u32, _: u32) -> Leaf {
        [0x806c1, 0x0102_0800, !0, !0]
    }

    #[test]
    fn page_table_features_hidden() {
        // Hardware with everything in leaf 1 EDX.
        let r = see(1, 0, all, &features(0b111), &ctx());
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
            ..ctx()
        };
        let r0 = see(1, 0, all, &features(0b111), &dom0);
        assert_ne!(r0[3] & L1_EDX_MTRR, 0, "dom0's kernel sees MTRR, as on Xen");
        assert_ne!(r0[2] & L1_ECX_MONITOR, 0, "and MONITOR");
        let user = Context {
            kernel_mode: false,
            ..dom0
        };
        assert_eq!(see(1, 0, all, &features(0b111), &user)[3] & L1_EDX_MTRR, 0);
        let e = see(0x8000_0001, 0, all, &features(0b111), &ctx());
        assert_eq!(e[3] & (1 << 26), 0, "1 GiB pages hidden");
        assert_eq!(e[3] & (1 << 3), 0, "AMD's PSE copy hidden");
        assert_ne!(e[3] & (1 << 29), 0, "long mode stays");
        assert_eq!(e[2] & (1 << 2), 0, "SVM hidden");
    }

    #[test]
    fn xsave_follows_what_hestia_enabled() {
        let l1 = |_: u32, _: u32| [0, 0, !0, 0];
        let none = see(1, 0, l1, &features(0), &ctx());
        assert_eq!(none[2] & (L1_ECX_XSAVE | L1_ECX_OSXSAVE | L1_ECX_AVX), 0);
        let sse = see(1, 0, l1, &features(0b11), &ctx());
        assert_eq!(sse[2] & (L1_ECX_XSAVE | L1_ECX_AVX), L1_ECX_XSAVE);
        assert_ne!(sse[2] & L1_ECX_OSXSAVE, 0, "kernel mode sees OSXSAVE");
        let user = Context {
            kernel_mode: false,
            ..ctx()
        };
        let u = see(1, 0, l1, &features(0b11), &user);
        assert_eq!(
            u[2] & L1_ECX_OSXSAVE,
            0,
            "user mode before the kernel enabled it"
        );
        // Hardware with AVX-512 (components 5-7) and AVX at offset 576; XCR0 now x87|SSE.
        let hw = |l: u32, s: u32| match (l, s) {
            (1, _) => [0, 0, !0, !0],
            (0xD, 0) => [0xe7, 576, 2696, 0],
            (0xD, 1) => [!0, 0, 0, 0],
            (0xD, 2) => [256, 576, 0, 0],
            (0xD, 5) => [64, 1088, 0, 0],
            (0xD, 6) => [512, 1152, 0, 0],
            (0xD, 7) => [1024, 1664, 0, 0],
            (7, 0) => [0, !0, !0, !0],
            _ => [0; 4],
        };
        let d0 = see(0xD, 0, hw, &features(0b111), &ctx());
        assert_eq!((d0[0], d0[1], d0[2]), (0b111, 576, 832));
        assert_eq!(see(0xD, 5, hw, &features(0b111), &ctx()), [0; 4]);
        assert_eq!(see(0xD, 2, hw, &features(0b111), &ctx()), [256, 576, 0, 0]);
        assert_eq!(
            see(0xD, 1, hw, &features(0b111), &ctx())[0],
            0b111,
            "no XSAVES"
        );
        let l7 = see(7, 0, hw, &features(0b11), &ctx());
        assert_eq!(
            l7[1] & (1 << 16 | 1 << 5 | 1),
            0,
            "AVX-512F, AVX2 without AVX, FSGSBASE"
        );
        assert_ne!(l7[1] & (1 << 3), 0, "BMI1 stays");
    }

    #[test]
    fn hypervisor_leaves() {
        let f = features(0);
        assert_eq!(see(BASE, 0, all, &f, &ctx())[0], BASE + 2);
        assert_eq!(see(BASE + 1, 0, all, &f, &ctx())[0], 0x4_0011);
        assert_eq!(see(BASE + 0x100, 0, all, &f, &ctx()), [0; 4]);
    }

    #[test]
    fn leaves_past_the_counts_read_as_zero() {
        let f = features(0);
        assert_eq!(see(0xE, 0, all, &f, &ctx()), [0; 4]);
        assert_eq!(see(0x8000_000B, 0, all, &f, &ctx()), [0; 4]);
        assert_eq!(see(0x8000_0021, 0, all, &f, &ctx()), [0; 4]);
        assert_eq!(
            see(7, 1, all, &f, &ctx()),
            [0; 4],
            "leaf 7 has sub-leaf 0 only"
        );
        assert_eq!(see(4, 6, all, &f, &ctx()), [0; 4]);
        assert_eq!(see(0xC000_0000, 0, all, &f, &ctx()), [0; 4]);
        assert_ne!(see(0x8000_0008, 0, all, &f, &ctx()), [0; 4]);
        assert_eq!(see(0x8000_000A, 0, all, &f, &ctx()), [0; 4], "no SVM leaf");
    }

    #[test]
    fn ibpb_offered_on_either_vendors_bit() {
        // Intel: IBRSB in leaf 7 only, so IBPB comes from the context; IBRS/STIBP/SSBD hidden.
        let intel = PvFeatures {
            ibpb: true,
            ..features(0)
        };
        let zero = |_: u32, _: u32| [0; 4];
        assert_eq!(see(0x8000_0008, 0, zero, &intel, &ctx())[1], E8_EBX_IBPB);
        let l7 = see(7, 0, |_, _| [0, 0, 0, !0], &intel, &ctx());
        assert_eq!(
            l7[3],
            1 << 10,
            "MD_CLEAR only: no IBRSB, STIBP, SSBD, ARCH_CAPS"
        );
        // No IBPB in hardware: neither the bit nor its refinement.
        let amd_hw = |_: u32, _: u32| [0, !0, 0, 0];
        let none = see(0x8000_0008, 0, amd_hw, &features(0), &ctx());
        assert_eq!(none[1] & (E8_EBX_IBPB | E8_EBX_IBPB_RET), 0);
        let amd = see(0x8000_0008, 0, amd_hw, &intel, &ctx());
        assert_eq!(
            amd[1] & (E8_EBX_IBPB | E8_EBX_IBPB_RET),
            E8_EBX_IBPB | E8_EBX_IBPB_RET
        );
    }
}
