//! Speculative-execution mitigations for PV guests: the `spec-ctrl=` options Hestia implements
//! and the decisions Xen 4.17 takes from the CPU's facts at boot (`xen/arch/x86/spec_ctrl.c`:
//! `parse_spec_ctrl`, `mds_calculations`, `tsa_calculations`, `ibpb_calculations`,
//! `init_speculation_mitigations`, `spec_ctrl_init_domain`).
//!
//! Pure logic: the kernel gathers [`CpuFacts`] once at boot, calls [`decide`], and from then on
//! only reads the resulting [`SpecCtrl`] (flag bytes the entry and exit paths test).
//!
//! - **VERW on exit to a PV guest** (MDS, XSA-297; RFDS; AMD TSA). On affected CPUs with the
//!   May 2019 microcode (MD_CLEAR), the memory-operand VERW also overwrites the store, fill and
//!   load-port buffers, so a guest cannot sample data Hestia left there. Xen's default: on when
//!   MD_CLEAR is present *and useful* (an Intel family-6 model known to suffer MDS or only its
//!   store-buffer part, without MDS_NO), or the CPU enumerates RFDS_CLEAR or VERW_CLEAR (AMD
//!   Zen3/4 with the TSA microcode: Xen synthesises it from the microcode revision).
//! - **IBPB on entry from PV** (AMD Branch Type Confusion on Zen1/2 and older, and Speculative
//!   Return Stack Overflow on Zen3/4): flushes branch predictions the guest trained before
//!   Hestia's first RET can consume them. Xen's default: on for PV guests on AMD/Hygon without
//!   BTC_NO, or with SRSO (no SRSO_NO, IBPB_BRTYPE present, no SRSO_US_NO); never for dom0
//!   unless `spec-ctrl=ibpb-entry` names it (Xen trusts dom0 here).
//! - **IBPB at context switch** (`ibpb`, Spectre v2 across domains): on by default unless
//!   IBPB-on-entry protects every guest kind. Only decided here: Hestia has one domain so far.
//!
//! None of these does anything without the hardware feature (IBPB needs IBPB or IBRSB).

/// CPU vendor, as far as the decisions care (Hygon counts as AMD, as Xen groups them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Vendor {
    /// GenuineIntel.
    Intel,
    /// AuthenticAMD or HygonGenuine.
    Amd,
    /// Anything else.
    #[default]
    Other,
}

/// What the boot CPU says about itself (CPUID, IA32_ARCH_CAPABILITIES, microcode revision).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFacts {
    /// Vendor from CPUID leaf 0.
    pub vendor: Vendor,
    /// Display family, model and stepping (CPUID leaf 1).
    pub family: u32,
    /// Display model.
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
    /// Running virtualised (`CPUID.1:ECX[31]`): Xen then trusts the enumeration and synthesises
    /// nothing.
    pub hypervisor: bool,
    /// The loaded microcode revision (AMD: PATCH_LEVEL).
    pub ucode_rev: u32,
    /// IA32_ARCH_CAPABILITIES (0 when not enumerated).
    pub arch_caps: u64,
    /// `CPUID.7.0:EDX[10]` MD_CLEAR.
    pub md_clear: bool,
    /// `CPUID.7.0:EDX[26]` IBRSB (IBRS and IBPB, Intel).
    pub ibrsb: bool,
    /// `CPUID.80000008:EBX[12]` IBPB (AMD).
    pub ibpb: bool,
    /// `CPUID.80000008:EBX[29]` BTC_NO.
    pub btc_no: bool,
    /// `CPUID.80000021:EAX[5]` VERW_CLEAR.
    pub verw_clear: bool,
    /// `CPUID.80000021:EAX[27]` SBPB (PRED_CMD bit 7).
    pub sbpb: bool,
    /// `CPUID.80000021:EAX[28]` IBPB_BRTYPE.
    pub ibpb_brtype: bool,
    /// `CPUID.80000021:EAX[29]` SRSO_NO.
    pub srso_no: bool,
    /// `CPUID.80000021:EAX[30]` SRSO_US_NO.
    pub srso_us_no: bool,
    /// `CPUID.80000021:ECX[1]` TSA_SQ_NO.
    pub tsa_sq_no: bool,
    /// `CPUID.80000021:ECX[2]` TSA_L1_NO.
    pub tsa_l1_no: bool,
}

/// IA32_ARCH_CAPABILITIES bits the decisions read.
pub mod arch_caps {
    /// Not vulnerable to rogue data cache loads (Meltdown, L1TF).
    pub const RDCL_NO: u64 = 1 << 0;
    /// Not vulnerable to microarchitectural data sampling.
    pub const MDS_NO: u64 = 1 << 5;
    /// Not vulnerable to TSX asynchronous abort.
    pub const TAA_NO: u64 = 1 << 8;
    /// VERW clears the fill buffers (MMIO stale data).
    pub const FB_CLEAR: u64 = 1 << 17;
    /// VERW clears the register files (RFDS).
    pub const RFDS_CLEAR: u64 = 1 << 28;
}

/// IA32_PRED_CMD.IBPB: flush indirect branch predictions.
pub const PRED_CMD_IBPB: u64 = 1 << 0;
/// IA32_PRED_CMD.SBPB: the selective variant (AMD, leaves return predictions alone).
pub const PRED_CMD_SBPB: u64 = 1 << 7;

/// How far a CPU suffers from MDS (`mds_calculations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mds {
    /// Not affected (not Intel family 6, MDS_NO, or a model known immune).
    #[default]
    No,
    /// Only the store-buffer part (MSBDS): middling Atoms, Knights.
    StoreBufferOnly,
    /// Affected; `known` is false for a model Xen's table does not list (assumed affected).
    Yes {
        /// The model is in the table (false: unrecognised, assumed vulnerable).
        known: bool,
    },
}

/// The `spec-ctrl=` choices Hestia implements; `None` leaves the decision to the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `verw=`/`md-clear=` (and `pv=`): VERW on every exit to a PV guest.
    pub verw_pv: Option<bool>,
    /// `ibpb-entry=` (and `pv=`): IBPB on every entry from a PV guest.
    pub ibpb_entry_pv: Option<bool>,
    /// `ibpb-entry=<bool>` also covers dom0 (Xen leaves dom0 out otherwise).
    pub ibpb_entry_dom0: bool,
    /// `ibpb=`: IBPB when switching between domains.
    pub ibpb_ctxt_switch: Option<bool>,
    /// `spec-ctrl=no`: every mitigation off, including the defaults of `xpti=` and `pv-l1tf=`.
    pub all_off: bool,
}

/// A `spec-ctrl=` item that was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem<'a> {
    /// Malformed or unknown item.
    Bad(&'a str),
    /// An item Xen knows but Hestia does not implement (HVM, Intel MSR_SPEC_CTRL settings...).
    Unsupported(&'a str),
}

/// Xen's `spec-ctrl=` items Hestia does not implement (accepted by Xen, warned about here).
const UNSUPPORTED: &[&str] = &[
    "hvm",
    "msr-sc",
    "rsb",
    "bhb-entry",
    "bti-thunk",
    "bhb-seq",
    "ibrs",
    "stibp",
    "ssbd",
    "psfd",
    "bhi-dis-s",
    "eager-fpu",
    "l1d-flush",
    "branch-harden",
    "lock-harden",
    "srb-lock",
    "unpriv-mmio",
    "gds-mit",
    "div-scrub",
    "bp-spec-reduce",
];

/// `name`, `no-name` or `name=<bool>` as Xen's `parse_boolean`: `None` when `part` is another
/// item, `Some(Err(v))` for `name=v` with a non-boolean `v`.
fn boolean<'a>(part: &'a str, name: &str) -> Option<Result<bool, &'a str>> {
    if part.strip_prefix("no-") == Some(name) {
        return Some(Ok(false));
    }
    let rest = part.strip_prefix(name)?;
    if rest.is_empty() {
        return Some(Ok(true));
    }
    let v = rest.strip_prefix('=')?;
    Some(crate::cmdline::parse_bool(Some(v)).ok_or(v))
}

impl Options {
    /// Applies one `spec-ctrl=` value (comma-separated items, later items win, as in Xen);
    /// `problem` gets every item that was not applied.
    #[doc(alias = "parse_spec_ctrl")]
    pub fn parse<'a>(&mut self, value: Option<&'a str>, mut problem: impl FnMut(Problem<'a>)) {
        for part in value.unwrap_or("").split(',') {
            if let Err(p) = self.item(part) {
                problem(p);
            }
        }
    }

    fn item<'a>(&mut self, part: &'a str) -> Result<(), Problem<'a>> {
        let bad = Err(Problem::Bad(part));
        // `spec-ctrl=no` turns everything off; `spec-ctrl=xen=no` only Xen's own protections,
        // which for Hestia's options is the same set (`xpti=`/`pv-l1tf=` defaults aside).
        let off = |o: &mut Self, all: bool| {
            *o = Options {
                verw_pv: Some(false),
                ibpb_entry_pv: Some(false),
                ibpb_entry_dom0: false,
                ibpb_ctxt_switch: Some(false),
                all_off: o.all_off || all,
            };
        };
        match crate::cmdline::parse_bool(Some(part)) {
            Some(false) => {
                off(self, true);
                return Ok(());
            }
            Some(true) => return bad,
            None => {}
        }
        if let Some(v) = boolean(part, "xen") {
            return match v {
                Ok(false) => {
                    off(self, false);
                    Ok(())
                }
                _ => bad,
            };
        }
        if let Some(v) = boolean(part, "pv") {
            let v = v.map_err(|_| Problem::Bad(part))?;
            self.verw_pv = Some(v);
            self.ibpb_entry_pv = Some(v);
            return Ok(());
        }
        for name in ["verw", "md-clear", "ibpb-entry"] {
            let Some(v) = boolean(part, name) else {
                continue;
            };
            let entry = name == "ibpb-entry";
            match v {
                Ok(b) if entry => {
                    self.ibpb_entry_pv = Some(b);
                    self.ibpb_entry_dom0 = b;
                }
                Ok(b) => self.verw_pv = Some(b),
                // `=pv`, `=no-pv`, `=pv=<bool>`: PV guests only; `=hvm...`: no HVM here.
                Err(kind) => match boolean(kind, "pv") {
                    Some(Ok(b)) if entry => self.ibpb_entry_pv = Some(b),
                    Some(Ok(b)) => self.verw_pv = Some(b),
                    _ if boolean(kind, "hvm").is_some_and(|b| b.is_ok()) => {
                        return Err(Problem::Unsupported(part));
                    }
                    _ => return bad,
                },
            }
            return Ok(());
        }
        if let Some(v) = boolean(part, "ibpb") {
            self.ibpb_ctxt_switch = Some(v.map_err(|_| Problem::Bad(part))?);
            return Ok(());
        }
        if UNSUPPORTED.iter().any(|n| boolean(part, n).is_some()) {
            Err(Problem::Unsupported(part))
        } else {
            bad
        }
    }
}

/// What Hestia does about speculation, decided once at boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecCtrl {
    /// The CPU's MDS status.
    pub mds: Mds,
    /// VERW has a useful scrubbing side effect for MDS here.
    pub useful_md_clear: bool,
    /// VERW clears the TSA-affected structures (enumerated, or synthesised from microcode).
    pub verw_clear: bool,
    /// An AMD family-0x19 CPU whose microcode Xen's TSA table does not list.
    pub tsa_unknown_ucode: bool,
    /// The hardware has IBPB (IA32_PRED_CMD): AMD's IBPB bit or Intel's IBRSB.
    pub has_ibpb: bool,
    /// VERW on every exit to a PV guest.
    pub verw_pv: bool,
    /// IBPB on every entry from a PV domU.
    pub ibpb_entry_pv: bool,
    /// ... and from dom0 too.
    pub ibpb_entry_dom0: bool,
    /// IBPB when a CPU switches to another domain's vCPU.
    pub ibpb_ctxt_switch: bool,
}

impl SpecCtrl {
    /// IBPB on entry from a guest of this kind (`spec_ctrl_init_domain`).
    #[doc(alias = "spec_ctrl_init_domain")]
    pub fn ibpb_entry(&self, hardware_domain: bool) -> bool {
        self.ibpb_entry_pv && (!hardware_domain || self.ibpb_entry_dom0)
    }

    /// The IA32_PRED_CMD bits a guest may write, `None` when the MSR is absent (also for a
    /// guest, which sees IBPB in CPUID exactly when the hardware has it).
    pub fn pred_cmd_valid_bits(&self, facts: &CpuFacts) -> Option<u64> {
        self.has_ibpb
            .then_some(PRED_CMD_IBPB | if facts.sbpb { PRED_CMD_SBPB } else { 0 })
    }
}

/// `xpti_init_default`: rogue data cache loads (Meltdown, XSA-254) affect every CPU but AMD's
/// and Hygon's, unless it enumerates RDCL_NO.
#[doc(alias = "xpti_init_default")]
pub fn meltdown(f: &CpuFacts) -> bool {
    f.vendor != Vendor::Amd && f.arch_caps & arch_caps::RDCL_NO == 0
}

/// `mds_calculations`: Intel family 6 only, MDS_NO wins, then Xen's model table.
#[doc(alias = "mds_calculations")]
pub fn mds(f: &CpuFacts) -> Mds {
    if f.vendor != Vendor::Intel || f.family != 6 || f.arch_caps & arch_caps::MDS_NO != 0 {
        return Mds::No;
    }
    match f.model {
        // Nehalem, Westmere, Sandy/Ivy Bridge, Haswell, Broadwell, Skylake client.
        0x1a | 0x1e | 0x1f | 0x2e | 0x25 | 0x2c | 0x2f | 0x2a | 0x2d | 0x3a | 0x3e | 0x3c
        | 0x3f | 0x45 | 0x46 | 0x3d | 0x47 | 0x4f | 0x56 | 0x4e | 0x5e => Mds::Yes { known: true },
        // Skylake-X/Cascade Lake, Kaby/Coffee/Whiskey Lake: up to a stepping.
        0x55 if f.stepping <= 5 => Mds::Yes { known: true },
        0x8e if f.stepping <= 0xb => Mds::Yes { known: true },
        0x9e if f.stepping <= 0xc => Mds::Yes { known: true },
        0x55 | 0x8e | 0x9e => Mds::No,
        // Very old and newer Atoms.
        0x1c | 0x26 | 0x27 | 0x35 | 0x36 | 0x7a => Mds::No,
        // Silvermont/Airmont Atoms and Knights: store buffers only.
        0x37 | 0x4a | 0x4c | 0x4d | 0x5a | 0x5d | 0x65 | 0x6e | 0x75 | 0x57 | 0x85 => {
            Mds::StoreBufferOnly
        }
        _ => Mds::Yes { known: false },
    }
}

/// `tsa_calculations`: whether VERW clears the TSA structures, and whether the microcode was
/// unknown. Only AMD family 0x19 running on bare metal is judged from its microcode revision.
#[doc(alias = "tsa_calculations")]
fn verw_clear(f: &CpuFacts) -> (bool, bool) {
    if f.verw_clear {
        return (true, false);
    }
    if f.vendor != Vendor::Amd || f.hypervisor || f.tsa_sq_no || f.tsa_l1_no || f.family != 0x19 {
        return (false, false);
    }
    // (revision >> 8, first revision with the TSA mitigation).
    const MIN: &[(u32, u32)] = &[
        (0x0a0011, 0x0a0011d7),
        (0x0a0012, 0x0a00123b),
        (0x0a0082, 0x0a00820d),
        (0x0a1011, 0x0a10114c),
        (0x0a1012, 0x0a10124c),
        (0x0a1081, 0x0a108109),
        (0x0a2010, 0x0a20102e),
        (0x0a2012, 0x0a201211),
        (0x0a4041, 0x0a404108),
        (0x0a5000, 0x0a500012),
        (0x0a6012, 0x0a60120a),
        (0x0a7041, 0x0a704108),
        (0x0a7052, 0x0a705208),
        (0x0a7080, 0x0a708008),
        (0x0a70c0, 0x0a70c008),
        (0x0aa002, 0x0aa00216),
    ];
    match MIN.iter().find(|(sig, _)| *sig == f.ucode_rev >> 8) {
        Some(&(_, min)) => (f.ucode_rev >= min, false),
        None => (false, true),
    }
}

/// Every decision, from the CPU's facts and the command line (Xen's order: IBPB, then VERW).
#[doc(alias = "init_speculation_mitigations")]
pub fn decide(f: &CpuFacts, o: &Options) -> SpecCtrl {
    let has_ibpb = f.ibrsb || f.ibpb;
    let (mut entry_pv, mut entry_dom0, mut ctxt) = (false, false, false);
    if has_ibpb {
        let amd = f.vendor == Vendor::Amd;
        // Zen3 predates BTC_NO but is immune; Xen fills the bit in on bare metal.
        let btc_no = f.btc_no || (amd && f.family == 0x19 && !f.hypervisor);
        // Zen1/2 and older: their IBPB flushes branch types already (bare metal only).
        let brtype = f.ibpb_brtype || (amd && f.family < 0x19 && !f.hypervisor);
        let default = amd && (!btc_no || (!f.srso_no && brtype && !f.srso_us_no));
        entry_pv = o.ibpb_entry_pv.unwrap_or(default);
        entry_dom0 = o.ibpb_entry_dom0;
        // Xen drops the context-switch IBPB only when IBPB-on-entry covers PV and HVM guests;
        // without HVM support that never holds.
        ctxt = o.ibpb_ctxt_switch.unwrap_or(true);
    }
    let mds = mds(f);
    let (verw_clear, tsa_unknown_ucode) = verw_clear(f);
    let useful_md_clear = f.md_clear && mds != Mds::No;
    let verw_pv = o
        .verw_pv
        .unwrap_or(useful_md_clear || f.arch_caps & arch_caps::RFDS_CLEAR != 0 || verw_clear);
    SpecCtrl {
        mds,
        useful_md_clear,
        verw_clear,
        tsa_unknown_ucode,
        has_ibpb,
        verw_pv,
        ibpb_entry_pv: entry_pv,
        ibpb_entry_dom0: entry_pv && entry_dom0,
        ibpb_ctxt_switch: ctxt,
    }
}

/// Xen's "Support for PV VMs:" list for what Hestia implements (` VERW`, ` IBPB-entry`), or
/// ` None`.
pub fn pv_support(s: &SpecCtrl) -> &'static str {
    match (s.verw_pv, s.ibpb_entry_pv) {
        (true, true) => " VERW IBPB-entry",
        (true, false) => " VERW",
        (false, true) => " IBPB-entry",
        (false, false) => " None",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn parse(v: &str) -> (Options, Vec<Problem<'_>>) {
        let mut o = Options::default();
        let mut p = Vec::new();
        o.parse(Some(v), |x| p.push(x));
        (o, p)
    }

    #[test]
    fn meltdown_spares_amd_hygon_and_rdcl_no_only() {
        let f = |vendor, arch_caps| CpuFacts {
            vendor,
            arch_caps,
            ..CpuFacts::default()
        };
        assert!(meltdown(&f(Vendor::Intel, 0)));
        assert!(meltdown(&f(Vendor::Other, arch_caps::MDS_NO)));
        assert!(!meltdown(&f(Vendor::Intel, arch_caps::RDCL_NO)));
        assert!(!meltdown(&f(Vendor::Amd, 0)));
    }

    #[test]
    fn verw_and_md_clear_are_one_option() {
        for v in [
            "verw",
            "md-clear",
            "verw=1",
            "md-clear=on",
            "verw=pv",
            "md-clear=pv=yes",
        ] {
            assert_eq!(
                parse(v),
                (
                    Options {
                        verw_pv: Some(true),
                        ..Default::default()
                    },
                    vec![]
                ),
                "{v}"
            );
        }
        for v in ["no-verw", "md-clear=0", "verw=no-pv", "verw=pv=off"] {
            assert_eq!(parse(v).0.verw_pv, Some(false), "{v}");
        }
        assert_eq!(parse("verw=hvm").1, vec![Problem::Unsupported("verw=hvm")]);
        assert_eq!(parse("verw=maybe").1, vec![Problem::Bad("verw=maybe")]);
        assert_eq!(parse("verwx").1, vec![Problem::Bad("verwx")]);
    }

    #[test]
    fn ibpb_entry_covers_dom0_only_in_its_boolean_form() {
        let (o, p) = parse("ibpb-entry");
        assert!(p.is_empty());
        assert_eq!((o.ibpb_entry_pv, o.ibpb_entry_dom0), (Some(true), true));
        let o = parse("ibpb-entry=pv").0;
        assert_eq!((o.ibpb_entry_pv, o.ibpb_entry_dom0), (Some(true), false));
        let o = parse("pv").0;
        assert_eq!(
            (o.ibpb_entry_pv, o.verw_pv, o.ibpb_entry_dom0),
            (Some(true), Some(true), false)
        );
        assert_eq!(parse("no-ibpb").0.ibpb_ctxt_switch, Some(false));
        assert_eq!(
            parse("ibpb,no-ibpb-entry").0,
            Options {
                ibpb_ctxt_switch: Some(true),
                ibpb_entry_pv: Some(false),
                ..Default::default()
            }
        );
    }

    #[test]
    fn global_switches_and_unsupported_items() {
        let (o, p) = parse("no");
        assert!(p.is_empty() && o.all_off);
        assert_eq!(
            (o.verw_pv, o.ibpb_entry_pv, o.ibpb_ctxt_switch),
            (Some(false), Some(false), Some(false))
        );
        // Later items win, as in Xen.
        assert_eq!(parse("0,verw").0.verw_pv, Some(true));
        let o = parse("xen=0").0;
        assert!(!o.all_off && o.verw_pv == Some(false));
        assert_eq!(parse("yes").1, vec![Problem::Bad("yes")]);
        assert_eq!(parse("xen").1, vec![Problem::Bad("xen")]);
        let (o, p) = parse("ibrs=0,bti-thunk=lfence,verw,rsb=no-pv,bogus");
        assert_eq!(o.verw_pv, Some(true));
        assert_eq!(
            p,
            vec![
                Problem::Unsupported("ibrs=0"),
                Problem::Unsupported("bti-thunk=lfence"),
                Problem::Unsupported("rsb=no-pv"),
                Problem::Bad("bogus"),
            ]
        );
        assert_eq!(parse("").1, vec![Problem::Bad("")]);
    }

    fn intel(model: u32, stepping: u32) -> CpuFacts {
        CpuFacts {
            vendor: Vendor::Intel,
            family: 6,
            model,
            stepping,
            md_clear: true,
            ibrsb: true,
            ..Default::default()
        }
    }

    #[test]
    fn verw_default_follows_mds_and_md_clear() {
        let none = Options::default();
        // Skylake client with MD_CLEAR microcode: VERW on.
        let s = decide(&intel(0x4e, 3), &none);
        assert_eq!((s.mds, s.verw_pv), (Mds::Yes { known: true }, true));
        // The same without the microcode: VERW would do nothing.
        let s = decide(
            &CpuFacts {
                md_clear: false,
                ..intel(0x4e, 3)
            },
            &none,
        );
        assert!(!s.verw_pv);
        // MDS_NO parts and late steppings are not affected; MD_CLEAR alone is not enough.
        let s = decide(
            &CpuFacts {
                arch_caps: arch_caps::MDS_NO,
                ..intel(0x55, 7)
            },
            &none,
        );
        assert_eq!((s.mds, s.verw_pv), (Mds::No, false));
        assert_eq!(mds(&intel(0x55, 5)), Mds::Yes { known: true });
        assert_eq!(mds(&intel(0x55, 6)), Mds::No);
        assert_eq!(mds(&intel(0x9e, 0xd)), Mds::No);
        assert_eq!(mds(&intel(0x4d, 0)), Mds::StoreBufferOnly);
        assert!(decide(&intel(0x4d, 0), &none).verw_pv);
        assert_eq!(mds(&intel(0x7a, 0)), Mds::No);
        assert_eq!(mds(&intel(0xee, 0)), Mds::Yes { known: false });
        // RFDS_CLEAR makes VERW useful on an otherwise MDS-free part.
        let s = decide(
            &CpuFacts {
                arch_caps: arch_caps::MDS_NO | arch_caps::RFDS_CLEAR,
                ..intel(0x97, 2)
            },
            &none,
        );
        assert!(s.verw_pv);
        // Forced on even where it does nothing (QEMU's AMD qemu64), and off where useful.
        let qemu64 = CpuFacts {
            vendor: Vendor::Amd,
            family: 15,
            hypervisor: true,
            ..Default::default()
        };
        assert!(!decide(&qemu64, &none).verw_pv);
        let forced = Options {
            verw_pv: Some(true),
            ..Default::default()
        };
        assert!(decide(&qemu64, &forced).verw_pv);
        let off = Options {
            verw_pv: Some(false),
            ..Default::default()
        };
        assert!(!decide(&intel(0x4e, 3), &off).verw_pv);
    }

    #[test]
    fn tsa_verw_clear_from_amd_microcode() {
        let zen3 = CpuFacts {
            vendor: Vendor::Amd,
            family: 0x19,
            model: 1,
            ucode_rev: 0x0a0011d7,
            ibpb: true,
            ..Default::default()
        };
        let s = decide(&zen3, &Options::default());
        assert!(s.verw_clear && s.verw_pv);
        assert!(
            !decide(
                &CpuFacts {
                    ucode_rev: 0x0a0011d6,
                    ..zen3
                },
                &Options::default()
            )
            .verw_pv
        );
        let s = decide(
            &CpuFacts {
                ucode_rev: 0x0b000001,
                ..zen3
            },
            &Options::default(),
        );
        assert!(s.tsa_unknown_ucode && !s.verw_pv);
        // Virtualised, or TSA_*_NO enumerated: trust the enumeration.
        assert!(
            !decide(
                &CpuFacts {
                    hypervisor: true,
                    ..zen3
                },
                &Options::default()
            )
            .verw_pv
        );
        assert!(
            !decide(
                &CpuFacts {
                    tsa_sq_no: true,
                    ..zen3
                },
                &Options::default()
            )
            .verw_pv
        );
        assert!(
            decide(
                &CpuFacts {
                    hypervisor: true,
                    verw_clear: true,
                    ..zen3
                },
                &Options::default()
            )
            .verw_pv
        );
    }

    #[test]
    fn ibpb_entry_default_is_amd_btc_or_srso_and_spares_dom0() {
        let none = Options::default();
        // Zen2: Branch Type Confusion.
        let zen2 = CpuFacts {
            vendor: Vendor::Amd,
            family: 0x17,
            ibpb: true,
            ..Default::default()
        };
        let s = decide(&zen2, &none);
        assert!(s.ibpb_entry_pv && !s.ibpb_entry_dom0 && s.ibpb_ctxt_switch);
        assert!(s.ibpb_entry(false) && !s.ibpb_entry(true));
        // Zen3 on bare metal: BTC_NO synthesised; SRSO needs IBPB_BRTYPE microcode.
        let zen3 = CpuFacts {
            family: 0x19,
            ..zen2
        };
        assert!(!decide(&zen3, &none).ibpb_entry_pv);
        let s = decide(
            &CpuFacts {
                ibpb_brtype: true,
                ..zen3
            },
            &none,
        );
        assert!(s.ibpb_entry_pv);
        assert!(
            !decide(
                &CpuFacts {
                    ibpb_brtype: true,
                    srso_us_no: true,
                    ..zen3
                },
                &none
            )
            .ibpb_entry_pv
        );
        assert!(
            !decide(
                &CpuFacts {
                    ibpb_brtype: true,
                    srso_no: true,
                    ..zen3
                },
                &none
            )
            .ibpb_entry_pv
        );
        // Intel: never by default; no IBPB at all: nothing, whatever the command line says.
        assert!(!decide(&intel(0x4e, 3), &none).ibpb_entry_pv);
        let all = Options {
            ibpb_entry_pv: Some(true),
            ibpb_entry_dom0: true,
            ibpb_ctxt_switch: Some(true),
            ..Default::default()
        };
        let s = decide(
            &CpuFacts {
                ibpb: false,
                ..zen2
            },
            &all,
        );
        assert!(!s.has_ibpb && !s.ibpb_entry_pv && !s.ibpb_entry(true) && !s.ibpb_ctxt_switch);
        assert_eq!(s.pred_cmd_valid_bits(&zen2), None);
        // `spec-ctrl=ibpb-entry` covers dom0.
        let s = decide(&intel(0x4e, 3), &all);
        assert!(s.ibpb_entry(true));
        assert_eq!(s.pred_cmd_valid_bits(&intel(0x4e, 3)), Some(PRED_CMD_IBPB));
        let sbpb = CpuFacts { sbpb: true, ..zen3 };
        assert_eq!(
            decide(&sbpb, &none).pred_cmd_valid_bits(&sbpb),
            Some(PRED_CMD_IBPB | PRED_CMD_SBPB)
        );
    }

    #[test]
    fn pv_support_summary() {
        let s = SpecCtrl {
            verw_pv: true,
            ..Default::default()
        };
        assert_eq!(pv_support(&s), " VERW");
        assert_eq!(pv_support(&SpecCtrl::default()), " None");
    }
}
