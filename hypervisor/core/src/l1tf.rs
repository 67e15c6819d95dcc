//! L1 Terminal Fault (XSA-273, CVE-2018-3620) and PV guests: which CPUs are affected, and
//! which not-present page-table entries a PV guest may write.
//!
//! On an affected Intel CPU, a load through a page-table entry whose present bit is clear
//! terminates the walk, but speculatively still reads the L1 data cache at the physical address
//! the entry holds. A PV guest writes its own page-table entries (validated by `pv_mm`, which
//! only looks at the address of *present* ones), so without this check it could read any
//! cached byte of Hestia or of another domain. Linux's own mitigation (inverting the address
//! bits of swap entries) protects Linux, not the hypervisor from Linux.
//!
//! The rule, as Xen's: a not-present entry is acceptable when its address (the bits the L1D
//! tags with, [`SafeMaddr::addr_mask`]) is zero or at least the *safe address*, above everything
//! cacheable. Above L1 the entry must also not have PSE, which the walk honours whether or not
//! the entry is present (a speculative 2 MiB or 1 GiB page from frame 0); L4 included, since a
//! linear (recursive) mapping makes the walk read an L4 entry as an L3 one. The check is on
//! for a domain by the `pv-l1tf=` option or, by default, for domUs on an affected CPU and never
//! for dom0 ([`Settings::new`]). Xen moves an offending domain to shadow paging, where it no
//! longer writes the real entries; Hestia has no shadow paging and crashes the domain instead,
//! as a Xen built without `CONFIG_SHADOW_PAGING` does.
//!
//! The safe address (Xen's heuristics): where the L1D compares more address bits than CPUID
//! reports (Nehalem and later, [`vulnerability`]), any bit above CPUID's width makes an
//! address safe; otherwise the top quarter of CPUID's physical space is assumed uncached. Either
//! is raised past the end of everything the firmware's memory map names.
//!
//! Primary source: Xen 4.17, `xen/arch/x86/spec_ctrl.c` (`l1tf_calculations`, the defaults in
//! `init_speculation_mitigations`), `xen/arch/x86/include/asm/shadow.h`
//! (`is_l1tf_safe_maddr`, `pv_l1tf_check_pte`), `xen/arch/x86/setup.c` (the E820 supplement);
//! Intel, "Deep Dive: Intel Analysis of L1 Terminal Fault".

use crate::cmdline::PerDomainKind;

/// Physical address width assumed without CPUID leaf 0x80000008 (Xen's default).
const DEFAULT_PADDR_BITS: u8 = 36;
/// The architectural limit of physical addresses.
const MAX_PADDR_BITS: u8 = 52;
/// Bits of an address inside its 4 KiB page.
const PAGE_OFFSET_MASK: u64 = 0xfff;
/// PSE (the page-size bit) of an entry above L1.
const PSE: u64 = 1 << 7;

/// The CPUID values the decision needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuInfo {
    /// Vendor "GenuineIntel".
    pub intel: bool,
    /// CPUID.1:EAX (family, model, stepping).
    pub signature: u32,
    /// CPUID.80000000:EAX, the highest extended leaf.
    pub max_extended_leaf: u32,
    /// CPUID.80000008:EAX (address widths), if that leaf exists.
    pub address_sizes: u32,
    /// CPUID.8000001F:EBX (AMD SME: bits 6-11 are the physical address bits it takes away), if
    /// that leaf exists.
    pub sme: u32,
    /// IA32_ARCH_CAPABILITIES.RDCL_NO: the CPU does not speculate from not-present entries.
    pub rdcl_no: bool,
}

impl CpuInfo {
    /// The display family and model (Xen's `get_cpu_family`: the extended model counts from
    /// family 6 on, the extended family only with family 15).
    pub fn family_model(&self) -> (u32, u32) {
        let s = self.signature;
        let base = (s >> 8) & 0xf;
        let family = if base == 0xf {
            base + ((s >> 20) & 0xff)
        } else {
            base
        };
        let mut model = (s >> 4) & 0xf;
        if family >= 6 {
            model |= (s >> 12) & 0xf0;
        }
        (family, model)
    }

    /// The physical address width CPUID reports (Xen's `paddr_bits`): leaf 0x80000008 capped
    /// at 52, less what AMD's SME takes; 36 without that leaf.
    pub fn paddr_bits(&self) -> u8 {
        if self.max_extended_leaf >> 16 != 0x8000 || self.max_extended_leaf < 0x8000_0008 {
            return DEFAULT_PADDR_BITS;
        }
        let bits = (self.address_sizes & 0xff).min(u32::from(MAX_PADDR_BITS)) as u8;
        let sme = if self.max_extended_leaf >= 0x8000_001f {
            ((self.sme >> 6) & 0x3f) as u8
        } else {
            0
        };
        bits.saturating_sub(sme)
    }
}

/// How the CPU stands against L1TF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vulnerability {
    /// The CPU is believed to speculate through not-present entries.
    pub vulnerable: bool,
    /// Physical address bits the L1D compares (may exceed CPUID's width).
    pub l1d_maxphysaddr: u8,
    /// Physical address bits CPUID reports.
    pub paddr_bits: u8,
    /// An Intel family 6 model missing from the table, assumed vulnerable (logged, as in Xen).
    pub unrecognised_model: Option<u32>,
}

/// Xen's `l1tf_calculations`: only Intel family 6 cores are affected (Penryn on, not the
/// Atoms or Knights), an unknown family 6 model is assumed affected, and `RDCL_NO` means
/// immune whatever the model.
pub fn vulnerability(cpu: &CpuInfo) -> Vulnerability {
    let paddr_bits = cpu.paddr_bits();
    let (family, model) = cpu.family_model();
    let (mut vulnerable, l1d, unknown) = if cpu.intel && family == 6 {
        match model {
            // Penryn, Dunnington.
            0x17 | 0x1d => (true, paddr_bits, false),
            // Nehalem and Westmere.
            0x1a | 0x1e | 0x1f | 0x25 | 0x2c | 0x2e | 0x2f => (true, 44, false),
            // Sandy Bridge to Kaby Lake (with Cannon Lake).
            0x2a | 0x2d | 0x3a | 0x3c | 0x3d | 0x3e | 0x3f | 0x45 | 0x46 | 0x47 | 0x4e | 0x4f
            | 0x55 | 0x56 | 0x5e | 0x66 | 0x67 | 0x8e | 0x9e => (true, 46, false),
            // Atoms (Bonnell to Gemini Lake) and Knights Landing/Mill.
            0x1c | 0x26 | 0x27 | 0x35 | 0x36 | 0x37 | 0x4a | 0x4c | 0x4d | 0x5a | 0x5c | 0x5f
            | 0x7a | 0x57 | 0x85 => (false, paddr_bits, false),
            _ => (true, paddr_bits, true),
        }
    } else {
        (false, paddr_bits, false)
    };
    if cpu.rdcl_no {
        vulnerable = false;
    }
    Vulnerability {
        vulnerable,
        l1d_maxphysaddr: l1d,
        paddr_bits,
        unrecognised_model: (vulnerable && unknown).then_some(model),
    }
}

/// Which not-present entry addresses cannot hit the L1D (Xen's `l1tf_addr_mask` and
/// `l1tf_safe_maddr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SafeMaddr {
    /// The address bits of an entry the L1D compares (page-aligned).
    pub addr_mask: u64,
    /// The lowest address above everything cacheable.
    pub safe_maddr: u64,
}

impl SafeMaddr {
    /// The safe address for `v`'s CPU, raised to `memory_end` (one past the highest byte the
    /// firmware's memory map names, any kind: Xen's supplement from the E820, the EFI map and
    /// SRAT).
    pub fn new(v: &Vulnerability, memory_end: u64) -> Self {
        let bits = |n: u8| 1u64.checked_shl(u32::from(n)).unwrap_or(0);
        let addr_mask = bits(v.l1d_maxphysaddr).wrapping_sub(1) & !PAGE_OFFSET_MASK;
        let heuristic = if v.l1d_maxphysaddr > v.paddr_bits {
            // Any bit past CPUID's width is safe: no RAM is there.
            bits(v.paddr_bits)
        } else {
            // No spare bits: assume nothing cacheable in the top quarter.
            bits(v.paddr_bits.saturating_sub(2)).saturating_mul(3)
        };
        let memory_end = memory_end.saturating_add(PAGE_OFFSET_MASK) & !PAGE_OFFSET_MASK;
        SafeMaddr {
            addr_mask,
            safe_maddr: heuristic.max(memory_end),
        }
    }

    /// True when the L1D can never hit on `entry`'s address: zero (Linux's empty entries) or
    /// at least the safe address.
    pub fn is_safe_maddr(&self, entry: u64) -> bool {
        let maddr = entry & self.addr_mask;
        maddr == 0 || maddr >= self.safe_maddr
    }

    /// True when writing `entry`, not present, into a level-`level` table would let a
    /// speculative walk read the L1D: an unsafe address, or PSE above L1 (Xen's
    /// `pv_l1tf_check_pte`).
    pub fn is_vulnerable(&self, level: u8, entry: u64) -> bool {
        (level > 1 && entry & PSE != 0) || !self.is_safe_maddr(entry)
    }
}

/// The effective `pv-l1tf` setting per kind of domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Check the not-present entries of the hardware domain (dom0).
    pub dom0: bool,
    /// Check those of every other domain.
    pub domu: bool,
}

impl Settings {
    /// The command line's choice, else Xen's defaults: never for dom0 (whose kernel is trusted
    /// with the machine anyway), for domUs exactly when the CPU is vulnerable.
    pub fn new(option: PerDomainKind, vulnerable: bool) -> Self {
        Settings {
            dom0: option.dom0.unwrap_or(false),
            domu: option.domu.unwrap_or(vulnerable),
        }
    }

    /// The setting of a domain: the hardware domain's, or a domU's.
    pub fn for_domain(&self, hardware_domain: bool) -> bool {
        if hardware_domain {
            self.dom0
        } else {
            self.domu
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Intel family 6 CPU of `model` with 39 address bits (a Skylake client's).
    fn intel(model: u32, rdcl_no: bool) -> CpuInfo {
        CpuInfo {
            intel: true,
            signature: (6 << 8) | ((model >> 4) << 16) | ((model & 0xf) << 4) | 3,
            max_extended_leaf: 0x8000_0008,
            address_sizes: 0x3027,
            sme: 0,
            rdcl_no,
        }
    }

    #[test]
    fn family_and_model_decode_as_xen() {
        assert_eq!(intel(0x9e, false).family_model(), (6, 0x9e));
        // QEMU's qemu64: AuthenticAMD family 15 model 107.
        let amd = CpuInfo {
            intel: false,
            signature: 0x0006_0fb1,
            ..intel(0, false)
        };
        assert_eq!(amd.family_model(), (15, 0x6b));
        let zen = CpuInfo {
            signature: 0x0083_0f10,
            ..amd
        };
        assert_eq!(zen.family_model(), (0x17, 0x31));
        let old = CpuInfo {
            signature: 0x0005_0543,
            ..amd
        };
        assert_eq!(
            old.family_model(),
            (5, 4),
            "no extended model below family 6"
        );
    }

    #[test]
    fn address_width_from_cpuid() {
        let c = intel(0x9e, false);
        assert_eq!(c.paddr_bits(), 39);
        let no_leaf = CpuInfo {
            max_extended_leaf: 0x8000_0004,
            ..c
        };
        assert_eq!(no_leaf.paddr_bits(), 36);
        let garbage = CpuInfo {
            max_extended_leaf: 0x1234_0009,
            ..c
        };
        assert_eq!(
            garbage.paddr_bits(),
            36,
            "a leaf 0x80000000 that is not one"
        );
        let huge = CpuInfo {
            address_sizes: 0xff,
            ..c
        };
        assert_eq!(huge.paddr_bits(), 52);
        let sme = CpuInfo {
            intel: false,
            max_extended_leaf: 0x8000_0020,
            address_sizes: 48,
            sme: 5 << 6,
            ..c
        };
        assert_eq!(sme.paddr_bits(), 43);
    }

    #[test]
    fn vulnerable_cpus_as_xen() {
        let v = vulnerability(&intel(0x9e, false));
        assert!(v.vulnerable);
        assert_eq!((v.l1d_maxphysaddr, v.paddr_bits), (46, 39));
        assert_eq!(v.unrecognised_model, None);
        assert_eq!(vulnerability(&intel(0x2c, false)).l1d_maxphysaddr, 44);
        assert_eq!(vulnerability(&intel(0x17, false)).l1d_maxphysaddr, 39);
        for atom in [0x1c, 0x37, 0x5c, 0x7a, 0x57, 0x85] {
            assert!(!vulnerability(&intel(atom, false)).vulnerable, "{atom:#x}");
        }
        let unknown = vulnerability(&intel(0xa5, false));
        assert!(unknown.vulnerable);
        assert_eq!(unknown.unrecognised_model, Some(0xa5));
        // RDCL_NO: immune, and nothing unrecognised to report.
        let fixed = vulnerability(&intel(0xa5, true));
        assert!(!fixed.vulnerable);
        assert_eq!(fixed.unrecognised_model, None);
        assert!(!vulnerability(&intel(0x9e, true)).vulnerable);
        // Other vendors and families are not affected.
        let amd = CpuInfo {
            intel: false,
            ..intel(0x9e, false)
        };
        assert!(!vulnerability(&amd).vulnerable);
        let p4 = CpuInfo {
            signature: 0xf << 8,
            ..intel(0, false)
        };
        assert!(!vulnerability(&p4).vulnerable);
    }

    #[test]
    fn safe_address_heuristics() {
        // A wider L1D: everything from CPUID's width on is safe, however little RAM.
        let skl = SafeMaddr::new(&vulnerability(&intel(0x9e, false)), 0x4000_0000);
        assert_eq!(skl.addr_mask, (1 << 46) - 0x1000);
        assert_eq!(skl.safe_maddr, 1 << 39);
        // The same width: the top quarter, raised past the memory map's end.
        let same = vulnerability(&intel(0x17, false));
        assert_eq!(SafeMaddr::new(&same, 0).safe_maddr, 3 << 37);
        assert_eq!(
            SafeMaddr::new(&same, (7 << 36) + 1).safe_maddr,
            (7 << 36) + 0x1000,
            "a memory map past the top quarter raises it (page-rounded)"
        );
        // Absurd widths neither overflow nor panic.
        for bits in [0u8, 1, 2, 52, 64, 200] {
            let v = Vulnerability {
                vulnerable: true,
                l1d_maxphysaddr: bits,
                paddr_bits: bits,
                unrecognised_model: None,
            };
            let s = SafeMaddr::new(&v, u64::MAX);
            let _ = s.is_vulnerable(4, u64::MAX);
        }
    }

    #[test]
    fn which_not_present_entries_are_acceptable() {
        let s = SafeMaddr::new(&vulnerability(&intel(0x9e, false)), 0x4000_0000);
        // Zero address, whatever the other bits (Linux's cleared entries, swap type bits).
        assert!(!s.is_vulnerable(1, 0));
        assert!(!s.is_vulnerable(1, 0x7fe | (1 << 63) | (0x7ff << 52)));
        // RAM: never.
        assert!(s.is_vulnerable(1, 0x1234_5000));
        assert!(s.is_vulnerable(1, 0x1234_5000 | (1 << 63)));
        // At or above the safe address (Linux inverts a swap entry's bits: high ones set).
        assert!(!s.is_vulnerable(1, 1 << 39));
        assert!(!s.is_vulnerable(1, !0x1_f000u64 & ((1 << 52) - 1)));
        assert!(s.is_vulnerable(1, (1 << 39) - 0x1000));
        // Bits above the L1D's width do not count: to the L1D, 2^46 is address zero (safe)
        // and 2^46 plus a RAM address is that RAM address.
        assert!(!s.is_vulnerable(1, 1 << 46));
        assert!(s.is_vulnerable(1, (1 << 46) | 0x5000));
        // PSE above L1: never, even at address zero; at L1 it is PAT and harmless.
        for level in 2..=4 {
            assert!(s.is_vulnerable(level, PSE), "L{level}");
            assert!(!s.is_vulnerable(level, 1 << 39));
        }
        assert!(!s.is_vulnerable(1, PSE));
    }

    #[test]
    fn settings_default_as_xen() {
        let none = PerDomainKind::default();
        assert_eq!(
            Settings::new(none, true),
            Settings {
                dom0: false,
                domu: true
            }
        );
        assert_eq!(
            Settings::new(none, false),
            Settings {
                dom0: false,
                domu: false
            }
        );
        let forced = PerDomainKind {
            dom0: Some(true),
            domu: Some(false),
        };
        let s = Settings::new(forced, true);
        assert!(s.for_domain(true));
        assert!(!s.for_domain(false));
    }
}
