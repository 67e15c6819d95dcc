//! CPU policies: the CPUID leaves and the few MSRs a domain is offered, held as Xen's
//! `struct cpu_policy` holds them, so the toolstack can read, edit and write them back.
//!
//! Theory of operation. Four system policies are derived once from the hardware, as in Xen's
//! `cpu-policy.c`: *raw* (what the CPU reports, [`CpuPolicy::fill`]), *host* (raw clamped to the
//! leaves a policy can hold, [`CpuPolicy::host`]), and *PV max* / *PV default*
//! ([`CpuPolicy::pv`]): every leaf of host passed through Hestia's PV filter
//! ([`crate::cpuid::pv_leaf`]). The two PV policies differ only where Xen's do structurally:
//! max allows every leaf-7 sub-leaf a policy can hold, default keeps the host's count.
//! Every domain owns a copy of PV default; `XEN_DOMCTL_set_cpu_policy` replaces it with the
//! toolstack's edit ([`update`]), which may not ask for more than PV max. A domain's CPUID is
//! answered from its own policy plus the dynamic parts (`crate::cpuid::guest_leaf`).
//!
//! Invariants: the counts a policy stores (`max_leaf`, `max_subleaf`, extended `max_leaf`) never
//! exceed its arrays once it went through [`CpuPolicy::host`] or [`update`], and every guest
//! index is checked before use, so a toolstack's buffer can make the policy odd but never make
//! Hestia read out of bounds. The policy is what the guest is told; what it may do (XCR0
//! components, speculation MSRs) is enforced from Hestia's own masks, not from here.
//!
//! Serialised form (the toolstack ABI): `xen_cpuid_leaf_t` and `xen_msr_entry_t` arrays in
//! the order and with the counts of Xen 4.17's `x86_cpuid_copy_to_buffer` /
//! `x86_msr_copy_to_buffer` (`xen/lib/x86/cpuid.c`, `msr.c`); parsing as their
//! `*_copy_from_buffer`; the audit as `x86_cpu_policies_are_compatible` (`xen/lib/x86/policy.c`)
//! followed by the clamping of `recalculate_cpuid_policy` (`xen/arch/x86/cpu-policy.c`). The
//! featureset words follow `public/arch-x86/cpufeatureset.h` (19 words in 4.17.7).

use alloc::boxed::Box;

use xen_abi::domctl::{CpuidLeaf, MsrEntry, XEN_CPUID_INPUT_UNUSED, XEN_CPUID_NO_SUBLEAF};
use xen_abi::errno::Errno;

use crate::cpuid::{self, L1_ECX_AVX, L1_ECX_AVX_DEPS, L1_ECX_XSAVE, L7_EBX_AVX, L7_ECX_AVX};
use crate::xstate;

/// One CPUID answer: EAX, EBX, ECX, EDX.
pub type Leaf = [u32; 4];

/// Basic leaves a policy holds: 0 to 0xD (`CPUID_GUEST_NR_BASIC`).
pub const NR_BASIC: usize = 0xD + 1;
/// Leaf 4 (deterministic cache parameters) sub-leaves.
pub const NR_CACHE: usize = 5 + 1;
/// Leaf 7 (structured features) sub-leaves.
pub const NR_FEAT: usize = 2 + 1;
/// Leaf 0xB (extended topology) sub-leaves.
pub const NR_TOPO: usize = 1 + 1;
/// Leaf 0xD (XSAVE) sub-leaves.
pub const NR_XSTATE: usize = 62 + 1;
/// Extended leaves 0x80000000 to 0x80000021.
pub const NR_EXTD: usize = 0x21 + 1;
/// Most leaves a policy serialises to (`CPUID_MAX_SERIALISED_LEAVES`): the basic leaves, less
/// the four that have sub-leaves, plus those sub-leaves, the extended leaves and the two
/// hypervisor limits.
pub const MAX_SERIALISED_LEAVES: u32 =
    (NR_BASIC - 4 + NR_CACHE + NR_FEAT + NR_TOPO + NR_XSTATE + NR_EXTD + 2) as u32;
/// Most MSRs a policy serialises to (`MSR_MAX_SERIALISED_ENTRIES`).
pub const MAX_SERIALISED_MSRS: u32 = 2;
/// Featureset words (`FEATURESET_NR_ENTRIES`, `FSCAPINTS`).
pub const FEATURESET_NR_ENTRIES: usize = 19;

/// MSR_INTEL_PLATFORM_INFO.
pub const MSR_INTEL_PLATFORM_INFO: u32 = 0xCE;
/// MSR_ARCH_CAPABILITIES.
pub const MSR_ARCH_CAPABILITIES: u32 = 0x10A;

/// First extended leaf.
const EXTD_BASE: u32 = 0x8000_0000;
/// The hypervisor limits' leaves (Xen's and Viridian's bases).
const HV_LEAF: u32 = 0x4000_0000;
const HV2_LEAF: u32 = 0x4000_0100;

/// A CPU policy (Xen's `struct cpu_policy`): the leaves as arrays of raw answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuPolicy {
    /// Leaves 0 to 0xD; leaf 0 EAX is the highest basic leaf. Entries 4, 7, 0xB and 0xD are
    /// unused: those leaves live in the sub-leaf arrays.
    pub basic: [Leaf; NR_BASIC],
    /// Leaf 4 by sub-leaf; the list ends at the first whose cache type (EAX[4:0]) is 0.
    pub cache: [Leaf; NR_CACHE],
    /// Leaf 7 by sub-leaf; sub-leaf 0 EAX is the highest sub-leaf.
    pub feat: [Leaf; NR_FEAT],
    /// Leaf 0xB by sub-leaf; the list ends at the first whose level type (ECX[15:8]) is 0.
    pub topo: [Leaf; NR_TOPO],
    /// Leaf 0xD by sub-leaf; sub-leaves 2 and up exist for the components of XCR0 | XSS.
    pub xstate: [Leaf; NR_XSTATE],
    /// Leaves 0x80000000 to 0x80000021; the first EAX is the highest extended leaf.
    pub extd: [Leaf; NR_EXTD],
    /// The toolstack's limit for the Xen leaves (0: the hypervisor's own); a byte, as in Xen.
    pub hv_limit: u8,
    /// The same for the Viridian base.
    pub hv2_limit: u8,
    /// MSR_INTEL_PLATFORM_INFO as offered.
    pub platform_info: u32,
    /// MSR_ARCH_CAPABILITIES as offered.
    pub arch_caps: u64,
}

/// Where one featureset word lives in a policy (`x86_cpu_policy_to_featureset`).
#[derive(Clone, Copy)]
enum Word {
    /// `basic[leaf][reg]`.
    Basic(usize, usize),
    /// `feat[sub][reg]`.
    Feat(usize, usize),
    /// `xstate[sub][reg]`.
    Xstate(usize, usize),
    /// `extd[leaf & 0xffff][reg]`.
    Extd(usize, usize),
    /// MSR_ARCH_CAPABILITIES, low half.
    ArchCapsLo,
    /// MSR_ARCH_CAPABILITIES, high half.
    ArchCapsHi,
}

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;

/// The featureset words in `cpufeatureset.h` order: 1d 1c e1d e1c Da1 7b0 7c0 e7d e8b 7d0 7a1
/// e21a 7b1 7d2 7c1 7d1 m10Al m10Ah e21c.
const WORDS: [Word; FEATURESET_NR_ENTRIES] = [
    Word::Basic(1, D),
    Word::Basic(1, C),
    Word::Extd(1, D),
    Word::Extd(1, C),
    Word::Xstate(1, A),
    Word::Feat(0, B),
    Word::Feat(0, C),
    Word::Extd(7, D),
    Word::Extd(8, B),
    Word::Feat(0, D),
    Word::Feat(1, A),
    Word::Extd(0x21, A),
    Word::Feat(1, B),
    Word::Feat(2, D),
    Word::Feat(1, C),
    Word::Feat(1, D),
    Word::ArchCapsLo,
    Word::ArchCapsHi,
    Word::Extd(0x21, C),
];

/// Leaf 7.0 EDX: ARCH_CAPS (MSR_ARCH_CAPABILITIES exists).
const L7_EDX_ARCH_CAPS: u32 = 1 << 29;

/// Why [`update`] refused a policy, and the `err_*` fields it reports (Xen's
/// `struct cpu_policy_errors`; [`XEN_CPUID_INPUT_UNUSED`] where nothing is named).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The errno.
    pub errno: Errno,
    /// The leaf refused.
    pub leaf: u32,
    /// Its sub-leaf.
    pub subleaf: u32,
    /// The MSR refused.
    pub msr: u32,
}

impl Refusal {
    fn plain(errno: Errno) -> Self {
        Refusal {
            errno,
            leaf: XEN_CPUID_INPUT_UNUSED,
            subleaf: XEN_CPUID_INPUT_UNUSED,
            msr: XEN_CPUID_INPUT_UNUSED,
        }
    }
    fn leaf(leaf: u32, subleaf: u32, errno: Errno) -> Self {
        Refusal {
            leaf,
            subleaf,
            ..Refusal::plain(errno)
        }
    }
    fn msr(msr: u32, errno: Errno) -> Self {
        Refusal {
            msr,
            ..Refusal::plain(errno)
        }
    }
}

impl CpuPolicy {
    /// A policy with every leaf zero.
    pub fn empty() -> Box<Self> {
        Box::new(CpuPolicy {
            basic: [[0; 4]; NR_BASIC],
            cache: [[0; 4]; NR_CACHE],
            feat: [[0; 4]; NR_FEAT],
            topo: [[0; 4]; NR_TOPO],
            xstate: [[0; 4]; NR_XSTATE],
            extd: [[0; 4]; NR_EXTD],
            hv_limit: 0,
            hv2_limit: 0,
            platform_info: 0,
            arch_caps: 0,
        })
    }

    /// The highest basic leaf.
    pub fn max_leaf(&self) -> u32 {
        self.basic[0][A]
    }

    /// The highest leaf-7 sub-leaf.
    pub fn max_subleaf(&self) -> u32 {
        self.feat[0][A]
    }

    /// The highest extended leaf (with its 0x8000 prefix).
    pub fn extd_max_leaf(&self) -> u32 {
        self.extd[0][A]
    }

    /// The XSAVE components XCR0 and XSS may hold (`cpu_policy_xstates`).
    pub fn xstates(&self) -> u64 {
        let [xcr0_lo, _, _, xcr0_hi] = self.xstate[0];
        let [_, _, xss_lo, xss_hi] = self.xstate[1];
        (u64::from(xcr0_hi | xss_hi) << 32) | u64::from(xcr0_lo | xss_lo)
    }

    /// What the hardware reports (`x86_cpu_policy_fill_native`): `hw(leaf, sub)` is CPUID,
    /// `arch_caps` the ARCH_CAPABILITIES MSR (0 where absent).
    pub fn fill(mut hw: impl FnMut(u32, u32) -> Leaf, arch_caps: u64) -> Box<Self> {
        let mut p = Self::empty();
        p.basic[0] = hw(0, 0);
        let max = p.max_leaf() as usize;
        for (i, slot) in p.basic.iter_mut().enumerate().skip(1) {
            if i <= max && !matches!(i, 4 | 7 | 0xB | 0xD) {
                *slot = hw(i as u32, 0);
            }
        }
        if max >= 4 {
            for (i, slot) in p.cache.iter_mut().enumerate() {
                *slot = hw(4, i as u32);
                if cache_type(slot) == 0 {
                    break;
                }
            }
        }
        if max >= 7 {
            p.feat[0] = hw(7, 0);
            let top = p.max_subleaf() as usize;
            for (i, slot) in p.feat.iter_mut().enumerate().skip(1) {
                if i <= top {
                    *slot = hw(7, i as u32);
                }
            }
        }
        if max >= 0xB {
            for (i, slot) in p.topo.iter_mut().enumerate() {
                *slot = hw(0xB, i as u32);
                if topo_type(slot) == 0 {
                    break;
                }
            }
        }
        if max >= 0xD {
            p.xstate[0] = hw(0xD, 0);
            p.xstate[1] = hw(0xD, 1);
            let xstates = p.xstates();
            for (i, slot) in p.xstate.iter_mut().enumerate().skip(2) {
                if xstates & (1 << i) != 0 {
                    *slot = hw(0xD, i as u32);
                }
            }
        }
        p.extd[0] = hw(EXTD_BASE, 0);
        let top = (p.extd_max_leaf() & 0xffff) as usize;
        for (i, slot) in p.extd.iter_mut().enumerate().skip(1) {
            if i <= top {
                *slot = hw(EXTD_BASE | i as u32, 0);
            }
        }
        p.arch_caps = arch_caps;
        p
    }

    /// The host policy from the raw one (`calculate_host_policy`): counts clamped to what a
    /// policy holds, leaves beyond them cleared.
    pub fn host(raw: &Self) -> Box<Self> {
        let mut p = Box::new(raw.clone());
        p.basic[0][A] = p.max_leaf().min(NR_BASIC as u32 - 1);
        p.feat[0][A] = p.max_subleaf().min(NR_FEAT as u32 - 1);
        p.extd[0][A] = EXTD_BASE | (p.extd_max_leaf() & 0xffff).min(NR_EXTD as u32 - 1);
        p.clear_out_of_range();
        p
    }

    /// A PV policy from the host one: every leaf through `cpuid::pv_leaf` with Hestia's
    /// `features`. `max` selects PV max (every leaf-7 sub-leaf allowed) over PV default.
    pub fn pv(host: &Self, features: &cpuid::PvFeatures, max: bool) -> Box<Self> {
        let component = |i: u32| {
            let [size, offset, _, _] = host.xstate.get(i as usize).copied().unwrap_or_default();
            (size, offset)
        };
        let filter = |leaf: u32, sub: u32, l: &mut Leaf| {
            *l = cpuid::pv_leaf(leaf, sub, *l, features, component);
        };
        let mut p = Box::new(host.clone());
        for (i, l) in p.basic.iter_mut().enumerate() {
            if !matches!(i, 4 | 7 | 0xB | 0xD) {
                filter(i as u32, 0, l);
            }
        }
        for (i, l) in p.cache.iter_mut().enumerate() {
            filter(4, i as u32, l);
        }
        for (i, l) in p.feat.iter_mut().enumerate() {
            filter(7, i as u32, l);
        }
        for (i, l) in p.topo.iter_mut().enumerate() {
            filter(0xB, i as u32, l);
        }
        for (i, l) in p.xstate.iter_mut().enumerate() {
            filter(0xD, i as u32, l);
        }
        for (i, l) in p.extd.iter_mut().enumerate() {
            filter(EXTD_BASE | i as u32, 0, l);
        }
        if max {
            p.feat[0][A] = NR_FEAT as u32 - 1;
        }
        // Nothing Hestia offers through these MSRs: no CPUID faulting, ARCH_CAPS hidden.
        p.platform_info = 0;
        p.arch_caps = 0;
        p.clear_out_of_range();
        p
    }

    /// Zeroes what lies beyond the counts (`x86_cpu_policy_clear_out_of_range_leaves`).
    pub fn clear_out_of_range(&mut self) {
        let max = self.max_leaf() as usize;
        for (i, l) in self.basic.iter_mut().enumerate() {
            if i > max {
                *l = [0; 4];
            }
        }
        let cache_end = if max < 4 {
            0
        } else {
            self.cache.iter().take_while(|l| cache_type(l) != 0).count()
        };
        self.cache
            .iter_mut()
            .skip(cache_end)
            .for_each(|l| *l = [0; 4]);
        let feat_end = if max < 7 {
            0
        } else {
            self.max_subleaf() as usize + 1
        };
        self.feat
            .iter_mut()
            .skip(feat_end)
            .for_each(|l| *l = [0; 4]);
        let topo_end = if max < 0xB {
            0
        } else {
            self.topo.iter().take_while(|l| topo_type(l) != 0).count()
        };
        self.topo
            .iter_mut()
            .skip(topo_end)
            .for_each(|l| *l = [0; 4]);
        let xstates = self.xstates();
        let xstate_end = if max < 0xD || xstates == 0 {
            0
        } else {
            (64 - xstates.leading_zeros() as usize).max(2)
        };
        self.xstate
            .iter_mut()
            .skip(xstate_end)
            .for_each(|l| *l = [0; 4]);
        let extd_end = (self.extd_max_leaf() & 0xffff) as usize + 1;
        self.extd
            .iter_mut()
            .skip(extd_end)
            .for_each(|l| *l = [0; 4]);
    }

    /// The featureset words (`x86_cpu_policy_to_featureset`).
    pub fn featureset(&self) -> [u32; FEATURESET_NR_ENTRIES] {
        WORDS.map(|w| match w {
            Word::Basic(l, r) => self.basic[l][r],
            Word::Feat(s, r) => self.feat[s][r],
            Word::Xstate(s, r) => self.xstate[s][r],
            Word::Extd(l, r) => self.extd[l][r],
            Word::ArchCapsLo => self.arch_caps as u32,
            Word::ArchCapsHi => (self.arch_caps >> 32) as u32,
        })
    }

    /// Writes featureset words back (`x86_cpu_featureset_to_policy`).
    pub fn set_featureset(&mut self, fs: &[u32; FEATURESET_NR_ENTRIES]) {
        for (w, &v) in WORDS.iter().zip(fs) {
            match *w {
                Word::Basic(l, r) => self.basic[l][r] = v,
                Word::Feat(s, r) => self.feat[s][r] = v,
                Word::Xstate(s, r) => self.xstate[s][r] = v,
                Word::Extd(l, r) => self.extd[l][r] = v,
                Word::ArchCapsLo => self.arch_caps = (self.arch_caps & !0xffff_ffff) | u64::from(v),
                Word::ArchCapsHi => {
                    self.arch_caps = (self.arch_caps & 0xffff_ffff) | (u64::from(v) << 32)
                }
            }
        }
    }

    /// The serialised leaves, in `x86_cpuid_copy_to_buffer`'s order: basic leaves up to the
    /// highest (leaf 4 up to and including its first null cache level, leaf 7 up to the highest
    /// sub-leaf, leaf 0xB up to and including its first null level, leaf 0xD sub-leaves 0, 1
    /// and up to the highest XSAVE component), then the two hypervisor limits, then the
    /// extended leaves up to the highest. At most [`MAX_SERIALISED_LEAVES`].
    pub fn leaves(&self) -> impl Iterator<Item = CpuidLeaf> + '_ {
        let entry = |leaf: u32, subleaf: u32, l: &Leaf| CpuidLeaf {
            leaf,
            subleaf,
            a: l[A],
            b: l[B],
            c: l[C],
            d: l[D],
        };
        let basic_end = (self.max_leaf() as usize).min(NR_BASIC - 1) + 1;
        let basic = self.basic[..basic_end]
            .iter()
            .enumerate()
            .flat_map(move |(i, l)| {
                let leaf = i as u32;
                let subs: &[Leaf] = match i {
                    4 => {
                        let n = self.cache.iter().take_while(|l| cache_type(l) != 0).count();
                        &self.cache[..(n + 1).min(NR_CACHE)]
                    }
                    7 => {
                        let n = (self.max_subleaf() as usize).min(NR_FEAT - 1);
                        &self.feat[..n + 1]
                    }
                    0xB => {
                        let n = self.topo.iter().take_while(|l| topo_type(l) != 0).count();
                        &self.topo[..(n + 1).min(NR_TOPO)]
                    }
                    0xD => {
                        let top = 64 - (self.xstates() >> 2).leading_zeros() as usize;
                        &self.xstate[..(top + 2).min(NR_XSTATE)]
                    }
                    _ => core::slice::from_ref(l),
                };
                let has_subleaves = matches!(i, 4 | 7 | 0xB | 0xD);
                subs.iter().enumerate().map(move |(s, l)| {
                    let sub = if has_subleaves {
                        s as u32
                    } else {
                        XEN_CPUID_NO_SUBLEAF
                    };
                    entry(leaf, sub, l)
                })
            });
        let hv = [
            entry(
                HV_LEAF,
                XEN_CPUID_NO_SUBLEAF,
                &[u32::from(self.hv_limit), 0, 0, 0],
            ),
            entry(
                HV2_LEAF,
                XEN_CPUID_NO_SUBLEAF,
                &[u32::from(self.hv2_limit), 0, 0, 0],
            ),
        ];
        let extd_end = ((self.extd_max_leaf() & 0xffff) as usize).min(NR_EXTD - 1) + 1;
        let extd = self.extd[..extd_end]
            .iter()
            .enumerate()
            .map(move |(i, l)| entry(EXTD_BASE | i as u32, XEN_CPUID_NO_SUBLEAF, l));
        basic.chain(hv).chain(extd)
    }

    /// The serialised MSRs, in `x86_msr_copy_to_buffer`'s order.
    pub fn msrs(&self) -> [MsrEntry; MAX_SERIALISED_MSRS as usize] {
        [
            MsrEntry {
                idx: MSR_INTEL_PLATFORM_INFO,
                flags: 0,
                val: u64::from(self.platform_info),
            },
            MsrEntry {
                idx: MSR_ARCH_CAPABILITIES,
                flags: 0,
                val: self.arch_caps,
            },
        ]
    }

    /// What RDMSR of `index` reads under this policy, for the MSRs a policy holds (Xen's
    /// `guest_rdmsr`): PLATFORM_INFO always, ARCH_CAPABILITIES when leaf 7.0 EDX offers it;
    /// `None` for the rest (ARCH_CAPABILITIES not offered is #GP, as on hardware without it).
    pub fn rdmsr(&self, index: u32) -> Option<u64> {
        match index {
            MSR_INTEL_PLATFORM_INFO => Some(u64::from(self.platform_info)),
            MSR_ARCH_CAPABILITIES if self.feat[0][D] & L7_EDX_ARCH_CAPS != 0 => {
                Some(self.arch_caps)
            }
            _ => None,
        }
    }

    /// Stores one serialised leaf (a case of `x86_cpuid_copy_from_buffer`); `Err` (ERANGE,
    /// naming it) for a leaf or sub-leaf a policy does not hold.
    pub fn set_leaf(&mut self, e: &CpuidLeaf) -> Result<(), Refusal> {
        let l = [e.a, e.b, e.c, e.d];
        let sub = e.subleaf as usize;
        let slot = match e.leaf {
            4 => self.cache.get_mut(sub),
            7 => self.feat.get_mut(sub),
            0xB => self.topo.get_mut(sub),
            0xD => self.xstate.get_mut(sub),
            _ if e.subleaf != XEN_CPUID_NO_SUBLEAF => None,
            HV_LEAF => {
                self.hv_limit = e.a as u8;
                return Ok(());
            }
            HV2_LEAF => {
                self.hv2_limit = e.a as u8;
                return Ok(());
            }
            leaf if leaf & 0xffff_0000 == EXTD_BASE => self.extd.get_mut((leaf & 0xffff) as usize),
            leaf => self.basic.get_mut(leaf as usize),
        };
        match slot {
            Some(s) => {
                *s = l;
                Ok(())
            }
            None => Err(Refusal::leaf(e.leaf, e.subleaf, Errno::ERANGE)),
        }
    }

    /// Stores one serialised MSR (a case of `x86_msr_copy_from_buffer`): EINVAL for non-zero
    /// flags, EOVERFLOW for a value wider than the field, ERANGE for an MSR a policy does not
    /// hold; each names the MSR.
    pub fn set_msr(&mut self, e: &MsrEntry) -> Result<(), Refusal> {
        if e.flags != 0 {
            return Err(Refusal::msr(e.idx, Errno::EINVAL));
        }
        match e.idx {
            MSR_INTEL_PLATFORM_INFO => {
                self.platform_info =
                    u32::try_from(e.val).map_err(|_| Refusal::msr(e.idx, Errno::EOVERFLOW))?;
            }
            MSR_ARCH_CAPABILITIES => self.arch_caps = e.val,
            _ => return Err(Refusal::msr(e.idx, Errno::ERANGE)),
        }
        Ok(())
    }

    /// Whether `self` asks for nothing `max` does not allow (`x86_cpu_policies_are_compatible`):
    /// the three counts and the PLATFORM_INFO bits; EINVAL naming the first that exceeds.
    pub fn compatible_with(&self, max: &Self) -> Result<(), Refusal> {
        if self.max_leaf() > max.max_leaf() {
            return Err(Refusal::leaf(0, XEN_CPUID_NO_SUBLEAF, Errno::EINVAL));
        }
        if self.max_subleaf() > max.max_subleaf() {
            return Err(Refusal::leaf(7, 0, Errno::EINVAL));
        }
        if self.extd_max_leaf() > max.extd_max_leaf() {
            return Err(Refusal::leaf(
                EXTD_BASE,
                XEN_CPUID_NO_SUBLEAF,
                Errno::EINVAL,
            ));
        }
        if self.platform_info & !max.platform_info != 0 {
            return Err(Refusal::msr(MSR_INTEL_PLATFORM_INFO, Errno::EINVAL));
        }
        Ok(())
    }

    /// Clamps an accepted policy to `max` (`recalculate_cpuid_policy` for a PV domain): no
    /// feature bit `max` lacks, none whose prerequisite is gone (the dependencies among the
    /// features Hestia offers: XSAVE needs leaf 0xD, AVX needs XSAVE, FMA/F16C/AVX2/VAES/
    /// VPCLMULQDQ need AVX, the leaf-0xD.1 features need XSAVE), the leaf-0xD sub-leaves
    /// rebuilt from `max` for the XSAVE components the features left imply, the CLFLUSH
    /// line size `max`'s, the physical address width at most `max`'s (and at least 36: PV
    /// guests have PAE), the linear width 48 (long mode).
    pub fn clamp_to(&mut self, max: &Self) {
        let allowed = max.featureset();
        let mut fs = self.featureset();
        for (w, m) in fs.iter_mut().zip(allowed) {
            *w &= m;
        }
        let [_, c1, _, _, da1, b7, c7, ..] = &mut fs;
        if self.max_leaf() < 0xD {
            *c1 &= !L1_ECX_XSAVE;
        }
        if *c1 & L1_ECX_XSAVE == 0 {
            *c1 &= !L1_ECX_AVX;
            *da1 = 0;
        }
        if *c1 & L1_ECX_AVX == 0 {
            *c1 &= !L1_ECX_AVX_DEPS;
            *b7 &= !L7_EBX_AVX;
            *c7 &= !L7_ECX_AVX;
        }
        self.set_featureset(&fs);
        self.xstate = [[0; 4]; NR_XSTATE];
        if self.basic[1][C] & L1_ECX_XSAVE != 0 {
            let avx = if self.basic[1][C] & L1_ECX_AVX != 0 {
                0b100
            } else {
                0
            };
            let xcr0 = max.xstates() & (0b11 | avx);
            let component = |i: u32| {
                let [size, offset, _, _] = max.xstate.get(i as usize).copied().unwrap_or_default();
                (size, offset)
            };
            let size = u32::try_from(xstate::area_size(xcr0, component)).unwrap_or(u32::MAX);
            self.xstate[0] = [xcr0 as u32, max.xstate[0][B], size, (xcr0 >> 32) as u32];
            self.xstate[1][A] = fs[4];
            for (i, (l, m)) in self
                .xstate
                .iter_mut()
                .zip(max.xstate.iter())
                .enumerate()
                .skip(2)
            {
                if xcr0 & (1 << i) != 0 {
                    *l = *m;
                }
            }
        }
        let clflush = 0xff00;
        self.basic[1][B] = (self.basic[1][B] & !clflush) | (max.basic[1][B] & clflush);
        let [a8, ..] = &mut self.extd[8];
        let phys = (*a8 & 0xff).min(max.extd[8][A] & 0xff).max(36);
        *a8 = (*a8 & !0xffff) | (48 << 8) | phys;
        self.clear_out_of_range();
    }
}

/// Leaf 4's cache type (EAX[4:0]); 0 ends the list.
fn cache_type(l: &Leaf) -> u32 {
    l[A] & 0x1f
}

/// Leaf 0xB's level type (ECX[15:8]); 0 ends the list.
fn topo_type(l: &Leaf) -> u32 {
    (l[C] >> 8) & 0xff
}

/// `XEN_DOMCTL_set_cpu_policy`'s work (`update_domain_cpu_policy`): `cur` with the
/// toolstack's `nr_leaves` leaves and `nr_msrs` MSRs merged in (`leaf(i)` / `msr(i)` read entry
/// `i` from its buffer; their errors, EFAULT, pass through), audited against `max`, clamped to
/// it. The refusal names what was refused, as Xen's `err_leaf`/`err_subleaf`/`err_msr`.
pub fn update(
    cur: &CpuPolicy,
    max: &CpuPolicy,
    nr_leaves: u32,
    mut leaf: impl FnMut(u32) -> Result<CpuidLeaf, Errno>,
    nr_msrs: u32,
    mut msr: impl FnMut(u32) -> Result<MsrEntry, Errno>,
) -> Result<Box<CpuPolicy>, Refusal> {
    let mut new = Box::new(cur.clone());
    if nr_leaves > MAX_SERIALISED_LEAVES {
        return Err(Refusal::plain(Errno::E2BIG));
    }
    for i in 0..nr_leaves {
        new.set_leaf(&leaf(i).map_err(Refusal::plain)?)?;
    }
    if nr_msrs > MAX_SERIALISED_MSRS {
        return Err(Refusal::plain(Errno::E2BIG));
    }
    for i in 0..nr_msrs {
        new.set_msr(&msr(i).map_err(Refusal::plain)?)?;
    }
    new.clear_out_of_range();
    new.compatible_with(max)?;
    new.clamp_to(max);
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// A CPU shaped like QEMU's qemu64 with XSAVE and AVX added (AMD vendor, basic leaves to
    /// 0xD, extended to 0x8000000A), leaf 4 with two cache levels, leaf 0xB with two levels.
    fn fake_hw(leaf: u32, sub: u32) -> Leaf {
        match (leaf, sub) {
            (0, _) => [0xD, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            (1, _) => [
                0x663,
                0x0000_0800,
                0x9ef8_3203 | L1_ECX_XSAVE | 1 << 28,
                0x078b_fbff,
            ],
            (4, 0) => [0x121, 0x1c0_003f, 0x3f, 0],
            (4, 1) => [0x143, 0x3c0_003f, 0xfff, 0],
            (4, _) => [0; 4],
            (7, 0) => [0, 0x0000_0009, 0, 0x0400],
            (0xB, 0) => [0, 1, 0x100, 0],
            (0xB, 1) => [0, 1, 0x201, 0],
            (0xB, _) => [0, 0, sub, 0],
            (0xD, 0) => [0x7, 0x340, 0x340, 0],
            (0xD, 1) => [0x1, 0, 0, 0],
            (0xD, 2) => [0x100, 0x240, 0, 0],
            (0x8000_0000, _) => [0x8000_000A, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            (0x8000_0001, _) => [0x663, 0, 0x0000_0001 | 1 << 2, 0x2191_3800 | 1 << 26],
            (0x8000_0008, _) => [0x3028, 0x1000, 0, 0],
            (l, _) if l > 0xD && l < 0x8000_0000 => [0xdead; 4],
            _ => [0x11, 0x22, 0x33, 0x44],
        }
    }

    fn features() -> cpuid::PvFeatures {
        cpuid::PvFeatures {
            xcr0_mask: 0b111,
            ibpb: false,
        }
    }

    fn policies() -> (Box<CpuPolicy>, Box<CpuPolicy>, Box<CpuPolicy>) {
        let raw = CpuPolicy::fill(fake_hw, 0);
        let host = CpuPolicy::host(&raw);
        let max = CpuPolicy::pv(&host, &features(), true);
        let def = CpuPolicy::pv(&host, &features(), false);
        (host, max, def)
    }

    fn serialise(p: &CpuPolicy) -> Vec<CpuidLeaf> {
        p.leaves().collect()
    }

    #[test]
    fn serialised_order_and_counts_follow_xen() {
        let (host, max, def) = policies();
        let keys: Vec<(u32, u32)> = serialise(&host)
            .iter()
            .map(|l| (l.leaf, l.subleaf))
            .collect();
        let n = XEN_CPUID_NO_SUBLEAF;
        let mut want = vec![(0, n), (1, n), (2, n), (3, n)];
        // Leaf 4: both cache levels and the null one that ends the list.
        want.extend([(4, 0), (4, 1), (4, 2)]);
        want.extend([(5, n), (6, n)]);
        // Leaf 7: sub-leaf 0 only (the hardware's highest is 0).
        want.push((7, 0));
        want.extend([(8, n), (9, n), (0xA, n)]);
        // Leaf 0xB: both levels; the array holds no third.
        want.extend([(0xB, 0), (0xB, 1)]);
        want.push((0xC, n));
        // Leaf 0xD: 0, 1, and components up to AVX (bit 2).
        want.extend([(0xD, 0), (0xD, 1), (0xD, 2)]);
        want.extend([(HV_LEAF, n), (HV2_LEAF, n)]);
        want.extend((0..=0xA).map(|i| (EXTD_BASE | i, n)));
        assert_eq!(keys, want);
        // PV max allows leaf 7 sub-leaves 0-2, default keeps the host's count.
        assert_eq!(serialise(&max).len(), want.len() + 2);
        assert_eq!(serialise(&def).len(), want.len());
        assert!(want.len() as u32 <= MAX_SERIALISED_LEAVES);
        assert_eq!(MAX_SERIALISED_LEAVES, 120);
    }

    #[test]
    fn full_policy_serialises_to_exactly_the_maximum() {
        let mut p = CpuPolicy::empty();
        p.basic[0][A] = 0xD;
        p.cache.iter_mut().for_each(|l| l[A] = 1);
        p.feat[0][A] = 2;
        p.topo.iter_mut().for_each(|l| l[C] = 0x100);
        p.xstate[0] = [!0, 0, 0, !0 >> 1];
        p.extd[0][A] = EXTD_BASE | 0x21;
        assert_eq!(p.leaves().count() as u32, MAX_SERIALISED_LEAVES);
    }

    #[test]
    fn round_trip() {
        let (_, max, def) = policies();
        let leaves = serialise(&def);
        let msrs = def.msrs();
        let mut back = CpuPolicy::empty();
        for l in &leaves {
            back.set_leaf(l).unwrap();
        }
        for m in &msrs {
            back.set_msr(m).unwrap();
        }
        assert_eq!(*back, *def);
        let got = update(
            &CpuPolicy::empty(),
            &max,
            leaves.len() as u32,
            |i| Ok(leaves[i as usize]),
            2,
            |i| Ok(msrs[i as usize]),
        )
        .unwrap();
        assert_eq!(
            *got, *def,
            "PV default is within PV max and survives the audit"
        );
    }

    /// libxenguest's `xc_cpuid_apply_policy` for a PV domain, step by step: PV default read
    /// with room for the size query's count, parsed into a zeroed policy, HTT and CMP_LEGACY
    /// set from the host featureset, serialised again into the *count it read* (more entries
    /// would be its "Failed to serialise CPUID"), and written back without MSRs.
    #[test]
    fn libxenguest_apply_policy_flow() {
        let (host, max, def) = policies();
        let read = serialise(&def);
        assert!(read.len() as u32 <= MAX_SERIALISED_LEAVES);
        let mut p = CpuPolicy::empty();
        for l in &read {
            p.set_leaf(l).unwrap();
        }
        let hfs = host.featureset();
        let (htt, cmp_legacy) = (1 << 28, 1 << 1);
        p.basic[1][D] = (p.basic[1][D] & !htt) | (hfs[0] & htt);
        p.extd[1][C] = (p.extd[1][C] & !cmp_legacy) | (hfs[3] & cmp_legacy);
        let again = serialise(&p);
        assert_eq!(again.len(), read.len());
        let got = set(&def, &max, &again, &[]).unwrap();
        assert_eq!(got.basic[1][D] & htt, hfs[0] & htt);
        assert_eq!(serialise(&got).len(), read.len());
    }

    #[test]
    fn pv_policy_hides_what_hestia_hides() {
        let (host, _, def) = policies();
        // Leaf 1: HYPERVISOR set, no APIC id, no OSXSAVE in the policy (it is dynamic).
        assert_ne!(def.basic[1][C] & 1 << 31, 0);
        assert_eq!(def.basic[1][C] & 1 << 27, 0);
        assert_eq!(def.basic[5], [0; 4]);
        // Leaves past 0xD are not held; 0xD's size covers x87, SSE and AVX.
        assert_eq!(def.max_leaf(), 0xD);
        assert_eq!(def.xstate[0][C], 0x340);
        // 1 GiB pages hidden; SVM hidden.
        assert_eq!(def.extd[1][D] & 1 << 26, 0);
        assert_eq!(def.extd[1][C] & 1 << 2, 0);
        assert_ne!(host.extd[1][C] & 1 << 2, 0);
        let fs = def.featureset();
        assert_eq!(fs[0], def.basic[1][D]);
        assert_eq!(fs[2], def.extd[1][D]);
        assert_eq!(fs[5], def.feat[0][B]);
    }

    #[test]
    fn policy_msrs() {
        let (_, _, mut def) = policies();
        assert_eq!(def.rdmsr(MSR_INTEL_PLATFORM_INFO), Some(0));
        assert_eq!(
            def.rdmsr(MSR_ARCH_CAPABILITIES),
            None,
            "ARCH_CAPS is not offered"
        );
        def.feat[0][D] |= L7_EDX_ARCH_CAPS;
        def.arch_caps = 0x2a;
        assert_eq!(def.rdmsr(MSR_ARCH_CAPABILITIES), Some(0x2a));
        assert_eq!(def.rdmsr(0x10), None);
    }

    #[test]
    fn featureset_round_trip() {
        let mut p = CpuPolicy::empty();
        let fs: [u32; FEATURESET_NR_ENTRIES] = core::array::from_fn(|i| 0x100 + i as u32);
        p.set_featureset(&fs);
        assert_eq!(p.featureset(), fs);
        assert_eq!(p.arch_caps, 0x111_0000_0110);
        assert_eq!(p.extd[0x21][C], 0x112);
        assert_eq!(p.feat[2][D], 0x10d);
    }

    fn set(
        cur: &CpuPolicy,
        max: &CpuPolicy,
        leaves: &[CpuidLeaf],
        msrs: &[MsrEntry],
    ) -> Result<Box<CpuPolicy>, Refusal> {
        update(
            cur,
            max,
            leaves.len() as u32,
            |i| leaves.get(i as usize).copied().ok_or(Errno::EFAULT),
            msrs.len() as u32,
            |i| msrs.get(i as usize).copied().ok_or(Errno::EFAULT),
        )
    }

    fn leaf(leaf: u32, subleaf: u32, a: u32) -> CpuidLeaf {
        CpuidLeaf {
            leaf,
            subleaf,
            a,
            ..Default::default()
        }
    }

    #[test]
    fn refusals_name_what_was_refused() {
        let (_, max, def) = policies();
        let n = XEN_CPUID_NO_SUBLEAF;
        let u = XEN_CPUID_INPUT_UNUSED;
        // A basic leaf beyond the arrays, a sub-leaf on a flat leaf, a sub-leaf past an array.
        for (l, s) in [
            (0xE, n),
            (1, 0),
            (7, 3),
            (4, 6),
            (0xD, 63),
            (0x8000_0022, n),
            (0x4000_0001, n),
            (HV_LEAF, 0),
        ] {
            assert_eq!(
                set(&def, &max, &[leaf(1, n, 0), leaf(l, s, 0)], &[]),
                Err(Refusal {
                    errno: Errno::ERANGE,
                    leaf: l,
                    subleaf: s,
                    msr: u
                }),
                "{l:#x}/{s:#x}"
            );
        }
        // More than a policy can hold.
        assert_eq!(
            set(&def, &max, &[leaf(1, n, 0); 121], &[])
                .unwrap_err()
                .errno,
            Errno::E2BIG
        );
        // Counts beyond PV max: the audit names leaf 0, leaf 7/0, leaf 0x80000000.
        for (l, s, a) in [(0, n, 0xE), (7, 0, 3), (EXTD_BASE, n, EXTD_BASE | 0x22)] {
            assert_eq!(
                set(&def, &max, &[leaf(l, s, a)], &[]),
                Err(Refusal {
                    errno: Errno::EINVAL,
                    leaf: l,
                    subleaf: s,
                    msr: u
                })
            );
        }
        // MSRs: unknown, flags, too wide, more than CPUID faulting allows.
        let m = |idx, flags, val| MsrEntry { idx, flags, val };
        for (e, errno) in [
            (m(0x10, 0, 0), Errno::ERANGE),
            (m(MSR_ARCH_CAPABILITIES, 1, 0), Errno::EINVAL),
            (m(MSR_INTEL_PLATFORM_INFO, 0, 1 << 32), Errno::EOVERFLOW),
            (m(MSR_INTEL_PLATFORM_INFO, 0, 1 << 31), Errno::EINVAL),
        ] {
            assert_eq!(
                set(&def, &max, &[], &[e]),
                Err(Refusal {
                    errno,
                    leaf: u,
                    subleaf: u,
                    msr: e.idx
                })
            );
        }
        assert_eq!(
            set(&def, &max, &[], &[m(0, 0, 0); 3]).unwrap_err().errno,
            Errno::E2BIG
        );
        // A fault reading the buffer names nothing.
        let e = update(
            &def,
            &max,
            1,
            |_| Err(Errno::EFAULT),
            0,
            |_| Err(Errno::EFAULT),
        );
        assert_eq!(e, Err(Refusal::plain(Errno::EFAULT)));
    }

    #[test]
    fn accepted_policy_is_clamped_to_max() {
        let (_, max, def) = policies();
        let n = XEN_CPUID_NO_SUBLEAF;
        // Every feature bit asked for, fewer basic leaves, an XSAVE component max lacks.
        let ask = [
            leaf(0, n, 7),
            CpuidLeaf {
                leaf: 1,
                subleaf: n,
                a: 0x663,
                b: 0,
                c: !0,
                d: !0,
            },
            CpuidLeaf {
                leaf: 7,
                subleaf: 0,
                a: 0,
                b: !0,
                c: !0,
                d: !0,
            },
            CpuidLeaf {
                leaf: 0xD,
                subleaf: 0,
                a: 0xff,
                b: 0,
                c: 0,
                d: 0,
            },
            CpuidLeaf {
                leaf: 0x8000_0007,
                subleaf: n,
                a: 0,
                b: 0,
                c: 0,
                d: !0,
            },
        ];
        let got = set(&def, &max, &ask, &[]).unwrap();
        let (fs, allowed) = (got.featureset(), max.featureset());
        for (g, m) in fs.iter().zip(allowed) {
            assert_eq!(g & !m, 0);
        }
        assert_eq!(got.max_leaf(), 7);
        assert_eq!(got.xstate, [[0; 4]; NR_XSTATE], "leaf 0xD beyond the count");
        assert_eq!(
            got.basic[1][C] & (L1_ECX_XSAVE | L1_ECX_AVX | L1_ECX_AVX_DEPS),
            0,
            "no XSAVE without leaf 0xD, and nothing that needs it"
        );
        assert_eq!(got.extd[7][D], 0, "invariant TSC is not offered");
        // The same with XSAVE kept: components clamp to x87/SSE/AVX.
        let mut ask = ask;
        ask[0].a = 0xD;
        let got = set(&def, &max, &ask, &[]).unwrap();
        assert_eq!(got.xstates(), 0b111);
        assert_eq!(got.xstate[2], def.xstate[2]);
        assert_eq!(got.xstate[5], [0; 4]);
        // AVX turned off: its state and the features needing it go too.
        ask[1].c &= !L1_ECX_AVX;
        let got = set(&def, &max, &ask, &[]).unwrap();
        assert_eq!(got.xstates(), 0b11);
        assert_eq!(
            got.xstate[0][C], 576,
            "the legacy area and the XSAVE header"
        );
        assert_eq!(got.feat[0][B] & L7_EBX_AVX, 0);
        assert_ne!(got.basic[1][C] & L1_ECX_XSAVE, 0);
    }
}
