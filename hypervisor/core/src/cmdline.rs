//! The hypervisor command line, in Xen's syntax.
//!
//! Options are separated by spaces: `name`, `name=value`, or `no-name` for a boolean. Unknown
//! options and malformed values produce a [`Warning`] and are otherwise ignored: a typo on the
//! command line must never stop a machine from booting. Known options (Xen's names):
//! `loglvl=`, `com1=`, `console=`, `sync_console`, `serial_tx_buffer=`, `noreboot`, `dom0_mem=`,
//! `dom0_max_vcpus=`, `xpti=`, `pv-l1tf=`, `spec-ctrl=` (the items of [`crate::spec_ctrl`]),
//! plus Hestia's `domU=` (boot-time domUs, repeatable: [`crate::domu_spec`]) and
//! `selftest=` (test hooks, only honoured by builds with the `test-hooks` feature).
//!
//! The options borrow from the command line (`Options<'a>`; the kernel's lives as long as the
//! boot information, for ever) and stay `Copy`: they are parsed before the heap exists.

use crate::domu_spec::DomUs;
use crate::size::{parse_size, parse_u64};
use crate::spec_ctrl::Problem;

/// Log levels, most severe first (Xen: `error`, `warning`, `info`, `debug`; also `none`, `all`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing is printed.
    None,
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// Normal operation messages (the default).
    Info,
    /// Everything.
    Debug,
}

impl LogLevel {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "error" => Self::Error,
            "warning" => Self::Warning,
            "info" => Self::Info,
            "debug" | "all" => Self::Debug,
            _ => return None,
        })
    }
}

/// Configuration of COM1: `com1=<baud>[,DPS[,<io-base>[,<irq>]]]`, e.g. `com1=115200,8n1,0x3f8,4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialConfig {
    /// Baud rate.
    pub baud: u32,
    /// I/O port base.
    pub port: u16,
    /// ISA IRQ line.
    pub irq: u8,
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            baud: 115_200,
            port: 0x3f8,
            irq: 4,
        }
    }
}

/// `dom0_mem=[min:<size>,][max:<size>,][<size>]`, sizes in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dom0Mem {
    /// Initial allocation.
    pub target: Option<u64>,
    /// Lower bound.
    pub min: Option<u64>,
    /// Upper bound (the most dom0 may balloon up to).
    pub max: Option<u64>,
}

/// Test hooks selected with `selftest=a,b,...`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelfTests {
    /// Raise an unexpected exception (#UD) after boot: exercises the fault dump.
    pub fault: bool,
    /// Take a page fault on an unmapped address: exercises CR2 and the dump.
    pub page_fault: bool,
    /// Overflow the boot stack into its guard page: exercises #DF on its IST stack.
    pub stack_overflow: bool,
    /// Check timer interrupts on every CPU and IPI round trips.
    pub smp: bool,
    /// Panic on purpose.
    pub panic: bool,
    /// Watch the SYSCALL entry's scratch word with a data breakpoint, so that every SYSCALL
    /// raises a #DB in ring 0 before the entry switches stacks, as a MOV SS-deferred #DB does on
    /// hardware (XSA-260; QEMU's TCG does not defer it).
    pub syscall_db: bool,
    /// Read the guest-readable M2P through its user mapping without opening SMAP: with SMAP on,
    /// a fatal #PF.
    pub smap: bool,
    /// Save and restore vCPU FPU states through the registers (`arch::x86_64::fpu`).
    pub fpu: bool,
    /// Build each boot-time domU again each time it is destroyed, 100 domains in all, then
    /// check the free memory is back where it was.
    pub domu_cycles: bool,
}

/// A mitigation chosen per kind of domain, as Xen's `xpti=` and `pv-l1tf=` take it:
/// `<bool>` for both kinds, `dom0=<bool>`, `domu=<bool>` (comma-separated), `default`. `None`
/// leaves the choice to the CPU's vulnerability (decided at boot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerDomainKind {
    /// For the hardware domain (dom0).
    pub dom0: Option<bool>,
    /// For every other domain.
    pub domu: Option<bool>,
}

impl PerDomainKind {
    /// Parses the value; `None` for a malformed one (the whole option is then ignored). A bare
    /// option name (`xpti`) means `true` for both, as in Xen.
    fn parse(v: Option<&str>) -> Option<Self> {
        let mut k = PerDomainKind::default();
        for part in v.unwrap_or("1").split(',') {
            if part == "default" {
                k = PerDomainKind::default();
            } else if let Some(b) = parse_bool(Some(part)) {
                k = PerDomainKind {
                    dom0: Some(b),
                    domu: Some(b),
                };
            } else if let Some(b) = sub_option(part, "dom0") {
                k.dom0 = Some(b?);
            } else if let Some(b) = sub_option(part, "domu") {
                k.domu = Some(b?);
            } else {
                return None;
            }
        }
        Some(k)
    }
}

/// `name`, `no-name` or `name=<bool>`, as Xen's `parse_boolean`: `None` if `part` is another
/// option, `Some(None)` if it is this one with a malformed value.
fn sub_option(part: &str, name: &str) -> Option<Option<bool>> {
    if part.strip_prefix("no-") == Some(name) {
        return Some(Some(false));
    }
    let rest = part.strip_prefix(name)?;
    match rest.strip_prefix('=') {
        Some(v) => Some(parse_bool(Some(v))),
        None if rest.is_empty() => Some(Some(true)),
        None => Some(None),
    }
}

/// Where console output goes (`console=com1,vga,none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleSel {
    /// Output on COM1.
    pub com1: bool,
    /// VGA was asked for (not implemented: a warning says so).
    pub vga: bool,
}

impl Default for ConsoleSel {
    fn default() -> Self {
        Self {
            com1: true,
            vga: false,
        }
    }
}

/// Every option Hestia understands, with Xen's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options<'a> {
    /// `loglvl=`: messages above this level are not printed.
    pub loglvl: LogLevel,
    /// `com1=`.
    pub com1: SerialConfig,
    /// `console=`.
    pub console: ConsoleSel,
    /// `sync_console`: every byte goes out before the writer goes on (no transmit ring).
    pub sync_console: bool,
    /// `serial_tx_buffer=`: size of the serial transmit ring in bytes.
    pub serial_tx_buffer: u64,
    /// `noreboot`: on panic or when dom0 stops, halt instead of powering off or resetting.
    pub noreboot: bool,
    /// `dom0_mem=`.
    pub dom0_mem: Dom0Mem,
    /// `dom0_max_vcpus=`: `(min, max)`; a single number sets both.
    pub dom0_max_vcpus: Option<(u32, u32)>,
    /// `xpti=`: page-table isolation for PV guests (XSA-254).
    pub xpti: PerDomainKind,
    /// `pv-l1tf=`: refuse not-present PTEs that could leak through L1TF (XSA-273).
    pub pv_l1tf: PerDomainKind,
    /// `spec-ctrl=`: VERW and IBPB for PV guests (XSA-297, BTC, SRSO).
    pub spec_ctrl: crate::spec_ctrl::Options,
    /// `selftest=`.
    pub selftest: SelfTests,
    /// `trace=hypercalls`: log every hypercall with its arguments and result.
    pub trace_hypercalls: bool,
    /// `trace=hypercall-errors`: log the hypercalls that fail.
    pub trace_hypercall_errors: bool,
    /// `trace=exceptions`: log every exception a guest raises, before it is handled.
    pub trace_exceptions: bool,
    /// `domU=` (repeatable): the boot-time domUs, in command-line order.
    pub domus: DomUs<'a>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            loglvl: LogLevel::Info,
            com1: SerialConfig::default(),
            console: ConsoleSel::default(),
            sync_console: false,
            serial_tx_buffer: crate::serial_tx::DEFAULT_SIZE as u64,
            noreboot: false,
            dom0_mem: Dom0Mem::default(),
            dom0_max_vcpus: None,
            xpti: PerDomainKind::default(),
            pv_l1tf: PerDomainKind::default(),
            spec_ctrl: crate::spec_ctrl::Options::default(),
            selftest: SelfTests::default(),
            trace_hypercalls: false,
            trace_hypercall_errors: false,
            trace_exceptions: false,
            domus: DomUs::default(),
        }
    }
}

/// A problem found while parsing, reported to the log by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning<'a> {
    /// The option name is not known.
    Unknown(&'a str),
    /// The option is known but its value could not be parsed; the default stays.
    BadValue(&'a str, &'a str),
    /// The option is known but the value asks for something not implemented.
    Unsupported(&'a str, &'a str),
    /// A `domU=` entry (the whole value) was dropped: `problem` says which item and why.
    BadDomU(&'a str, crate::domu_spec::Problem<'a>),
}

pub(crate) fn parse_bool(v: Option<&str>) -> Option<bool> {
    match v {
        None => Some(true),
        Some("1" | "yes" | "true" | "on" | "enable") => Some(true),
        Some("0" | "no" | "false" | "off" | "disable") => Some(false),
        Some(_) => None,
    }
}

impl<'a> Options<'a> {
    /// Parses a whole command line. `warn` receives one call per problem.
    pub fn parse(cmdline: &'a str, mut warn: impl FnMut(Warning<'a>)) -> Self {
        let mut o = Options::default();
        for tok in cmdline.split_ascii_whitespace() {
            let (name, value) = match tok.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (tok, None),
            };
            let bad =
                |w: &mut dyn FnMut(Warning<'a>)| w(Warning::BadValue(name, value.unwrap_or("")));
            match name {
                "loglvl" => {
                    match value.and_then(|v| LogLevel::parse(v.split('/').next().unwrap_or(v))) {
                        Some(l) => o.loglvl = l,
                        None => bad(&mut warn),
                    }
                }
                "com1" => match value.and_then(parse_serial) {
                    Some(c) => o.com1 = c,
                    None => bad(&mut warn),
                },
                "console" => {
                    let mut sel = ConsoleSel {
                        com1: false,
                        vga: false,
                    };
                    for part in value.unwrap_or("").split(',') {
                        match part {
                            "com1" => sel.com1 = true,
                            "vga" => {
                                sel.vga = true;
                                warn(Warning::Unsupported(name, part));
                            }
                            "none" => {}
                            _ => warn(Warning::BadValue(name, part)),
                        }
                    }
                    o.console = sel;
                }
                "sync_console" => match parse_bool(value) {
                    Some(b) => o.sync_console = b,
                    None => bad(&mut warn),
                },
                "serial_tx_buffer" => match value.and_then(parse_size) {
                    Some(s) => o.serial_tx_buffer = s,
                    None => bad(&mut warn),
                },
                "noreboot" | "no-noreboot" => match parse_bool(value) {
                    Some(b) => o.noreboot = b ^ (name == "no-noreboot"),
                    None => bad(&mut warn),
                },
                "dom0_mem" => match value.and_then(parse_dom0_mem) {
                    Some(m) => o.dom0_mem = m,
                    None => bad(&mut warn),
                },
                "dom0_max_vcpus" => match value.and_then(parse_vcpus) {
                    Some(v) => o.dom0_max_vcpus = Some(v),
                    None => bad(&mut warn),
                },
                "xpti" | "pv-l1tf" => match PerDomainKind::parse(value) {
                    Some(k) if name == "xpti" => o.xpti = k,
                    Some(k) => o.pv_l1tf = k,
                    None => bad(&mut warn),
                },
                "spec-ctrl" => o.spec_ctrl.parse(value, |p| match p {
                    Problem::Bad(item) => warn(Warning::BadValue(name, item)),
                    Problem::Unsupported(item) => warn(Warning::Unsupported(name, item)),
                }),
                "trace" => {
                    for part in value.unwrap_or("").split(',') {
                        match part {
                            "hypercalls" => o.trace_hypercalls = true,
                            "hypercall-errors" => o.trace_hypercall_errors = true,
                            "exceptions" => o.trace_exceptions = true,
                            _ => warn(Warning::BadValue(name, part)),
                        }
                    }
                }
                "selftest" => {
                    for part in value.unwrap_or("").split(',') {
                        let t = &mut o.selftest;
                        match part {
                            "fault" => t.fault = true,
                            "pagefault" => t.page_fault = true,
                            "stackoverflow" => t.stack_overflow = true,
                            "smp" => t.smp = true,
                            "panic" => t.panic = true,
                            "syscall-db" => t.syscall_db = true,
                            "smap" => t.smap = true,
                            "fpu" => t.fpu = true,
                            "domu-cycles" => t.domu_cycles = true,
                            _ => warn(Warning::BadValue(name, part)),
                        }
                    }
                }
                "domU" => {
                    let v = value.unwrap_or("");
                    if let Err(p) = o.domus.add(v) {
                        warn(Warning::BadDomU(v, p));
                    }
                }
                _ => warn(Warning::Unknown(name)),
            }
        }
        // `spec-ctrl=no` also turns off the mitigations whose choice was left to the CPU.
        if o.spec_ctrl.all_off {
            for k in [&mut o.xpti, &mut o.pv_l1tf] {
                k.dom0.get_or_insert(false);
                k.domu.get_or_insert(false);
            }
        }
        o
    }
}

fn parse_serial(v: &str) -> Option<SerialConfig> {
    let mut c = SerialConfig::default();
    let mut parts = v.split(',');
    let baud = parts.next()?.split('/').next()?;
    if baud != "auto" {
        c.baud = baud.parse().ok().filter(|b| *b >= 50 && *b <= 115_200)?;
    }
    if let Some(dps) = parts.next() {
        // Hestia drives 8 data bits, no parity, 1 stop bit only.
        if !dps.is_empty() && !dps.eq_ignore_ascii_case("8n1") {
            return None;
        }
    }
    if let Some(port) = parts.next() {
        c.port = parse_u64(port).and_then(|p| u16::try_from(p).ok())?;
    }
    if let Some(irq) = parts.next() {
        c.irq = parse_u64(irq)
            .and_then(|i| u8::try_from(i).ok())
            .filter(|i| *i < 16)?;
    }
    Some(c)
}

fn parse_dom0_mem(v: &str) -> Option<Dom0Mem> {
    let mut m = Dom0Mem::default();
    for part in v.split(',') {
        if let Some(s) = part.strip_prefix("min:") {
            m.min = Some(parse_size(s)?);
        } else if let Some(s) = part.strip_prefix("max:") {
            m.max = Some(parse_size(s)?);
        } else {
            m.target = Some(parse_size(part)?);
        }
    }
    Some(m)
}

fn parse_vcpus(v: &str) -> Option<(u32, u32)> {
    let (lo, hi) = match v.split_once('-') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => {
            let n = v.parse().ok()?;
            (n, n)
        }
    };
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn parse(s: &str) -> (Options<'_>, Vec<Warning<'_>>) {
        let mut w = Vec::new();
        let o = Options::parse(s, |x| w.push(x));
        (o, w)
    }

    #[test]
    fn defaults() {
        let (o, w) = parse("");
        assert_eq!(o, Options::default());
        assert!(w.is_empty());
        assert_eq!(
            o.com1,
            SerialConfig {
                baud: 115_200,
                port: 0x3f8,
                irq: 4
            }
        );
    }

    #[test]
    fn xen_style_options() {
        let (o, w) = parse(
            "loglvl=debug/warning com1=57600,8n1,0x2f8,3 console=com1 noreboot dom0_mem=512M,max:1G dom0_max_vcpus=2",
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(o.loglvl, LogLevel::Debug);
        assert_eq!(
            o.com1,
            SerialConfig {
                baud: 57600,
                port: 0x2f8,
                irq: 3
            }
        );
        assert!(o.noreboot);
        assert_eq!(
            o.dom0_mem,
            Dom0Mem {
                target: Some(512 << 20),
                min: None,
                max: Some(1 << 30)
            }
        );
        assert_eq!(o.dom0_max_vcpus, Some((2, 2)));
    }

    #[test]
    fn unknown_and_bad_values_warn_and_keep_defaults() {
        let (o, w) =
            parse("frobnicate loglvl=loud com1=9 dom0_mem=lots noreboot=maybe dom0_max_vcpus=3-1");
        assert_eq!(o, Options::default());
        assert_eq!(w[0], Warning::Unknown("frobnicate"));
        assert_eq!(w[1], Warning::BadValue("loglvl", "loud"));
        assert_eq!(w.len(), 6);
    }

    #[test]
    fn booleans() {
        assert!(!parse("noreboot=0").0.noreboot);
        assert!(parse("noreboot=yes").0.noreboot);
        assert!(!parse("noreboot no-noreboot").0.noreboot);
    }

    #[test]
    fn serial_transmit_options() {
        let (o, w) = parse("sync_console serial_tx_buffer=64K");
        assert!(o.sync_console && w.is_empty());
        assert_eq!(o.serial_tx_buffer, 64 * 1024);
        let (o, w) = parse("serial_tx_buffer=lots");
        assert!(!o.sync_console);
        assert_eq!(o.serial_tx_buffer, crate::serial_tx::DEFAULT_SIZE as u64);
        assert_eq!(w, [Warning::BadValue("serial_tx_buffer", "lots")]);
    }

    #[test]
    fn console_vga_is_flagged_unsupported() {
        let (o, w) = parse("console=com1,vga");
        assert!(o.console.com1 && o.console.vga);
        assert_eq!(w, [Warning::Unsupported("console", "vga")]);
    }

    #[test]
    fn trace_categories() {
        let (o, w) = parse("trace=hypercalls,nonsense");
        assert!(o.trace_hypercalls && !o.trace_exceptions && !o.trace_hypercall_errors);
        let (o, _) = parse("trace=hypercall-errors");
        assert!(o.trace_hypercall_errors && !o.trace_hypercalls);
        assert_eq!(w, [Warning::BadValue("trace", "nonsense")]);
    }

    #[test]
    fn selftests() {
        let (o, w) = parse("selftest=fault,smp,bogus");
        assert!(o.selftest.fault && o.selftest.smp && !o.selftest.panic);
        assert_eq!(w, [Warning::BadValue("selftest", "bogus")]);
        let (o, w) = parse("selftest=syscall-db,smap,fpu");
        assert!(o.selftest.syscall_db && o.selftest.smap && o.selftest.fpu && !o.selftest.fault);
        assert!(w.is_empty());
    }

    #[test]
    fn dom0_vcpu_range() {
        assert_eq!(parse("dom0_max_vcpus=1-4").0.dom0_max_vcpus, Some((1, 4)));
        assert_eq!(parse("dom0_max_vcpus=0").0.dom0_max_vcpus, None);
    }

    #[test]
    fn per_domain_kind_options_take_xens_forms() {
        let both = |b| PerDomainKind {
            dom0: Some(b),
            domu: Some(b),
        };
        assert_eq!(parse("xpti").0.xpti, both(true));
        assert_eq!(parse("xpti=off").0.xpti, both(false));
        assert_eq!(parse("xpti=on,domu=0").0.xpti.domu, Some(false));
        assert_eq!(parse("xpti=no-dom0").0.xpti.dom0, Some(false));
        let (o, w) = parse("pv-l1tf=dom0,domu=no");
        assert!(w.is_empty());
        assert_eq!(
            o.pv_l1tf,
            PerDomainKind {
                dom0: Some(true),
                domu: Some(false)
            }
        );
        assert_eq!(
            parse("xpti=dom0=1,default").0.xpti,
            PerDomainKind::default()
        );
        let (o, w) = parse("xpti=dom0x pv-l1tf=bogus");
        assert_eq!(o.xpti, PerDomainKind::default());
        assert_eq!(o.pv_l1tf, PerDomainKind::default());
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn spec_ctrl_items_and_global_off() {
        let (o, w) = parse("spec-ctrl=verw,ibpb-entry=pv,stibp=0");
        assert_eq!(o.spec_ctrl.verw_pv, Some(true));
        assert_eq!(o.spec_ctrl.ibpb_entry_pv, Some(true));
        assert_eq!(w, vec![Warning::Unsupported("spec-ctrl", "stibp=0")]);
        let (o, w) = parse("xpti=dom0 spec-ctrl=no");
        assert!(w.is_empty());
        assert_eq!(o.spec_ctrl.verw_pv, Some(false));
        let off = Some(false);
        assert_eq!(
            (o.xpti.dom0, o.xpti.domu),
            (Some(true), off),
            "explicit choices stay"
        );
        assert_eq!((o.pv_l1tf.dom0, o.pv_l1tf.domu), (off, off));
        assert_eq!(
            parse("spec-ctrl=verw=sometimes").1,
            vec![Warning::BadValue("spec-ctrl", "verw=sometimes")]
        );
    }

    #[test]
    fn domu_entries_repeat_and_bad_ones_are_dropped_alone() {
        use crate::domu_spec::{CpuMask, DomUName, Problem};
        let (o, w) = parse(
            "domU=name:foo,kernel:2,ramdisk:3,mem:256M,vcpus:2,weight:512,cap:50,cpus:0-1 \
             domU=kernel:4,vcpus:65 loglvl=debug domU=kernel:5,mem:64M domU",
        );
        assert_eq!(
            w,
            [
                Warning::BadDomU(
                    "kernel:4,vcpus:65",
                    Problem {
                        item: "vcpus:65",
                        why: "vCPUs are 1 to 64"
                    }
                ),
                Warning::BadDomU(
                    "",
                    Problem {
                        item: "",
                        why: "no kernel:<module>"
                    }
                ),
            ]
        );
        assert_eq!(o.loglvl, LogLevel::Debug);
        let d: Vec<_> = o.domus.iter().copied().collect();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, DomUName::Given("foo"));
        assert_eq!((d[0].kernel, d[0].ramdisk, d[0].cap), (2, Some(3), 50));
        assert_eq!(d[0].cpus, CpuMask(0b11));
        assert_eq!(
            d[1].name,
            DomUName::Numbered(2),
            "numbered among accepted entries"
        );
        assert_eq!((d[1].kernel, d[1].mem), (5, 64 << 20));
        assert_eq!(o.domus.dom0_modules(6), (Some(0), Some(1)));
    }

    #[test]
    fn a_quoted_domu_cmdline_is_refused_not_misread() {
        // The domain's command line is its module's string; a `cmdline:` item (the issue's
        // first sketch) is refused, and the words after its space are options of their own.
        let (o, w) = parse("domU=kernel:1,cmdline:\"a b\" noreboot");
        assert!(o.domus.is_empty() && o.noreboot);
        assert_eq!(w.len(), 2);
        assert!(matches!(w[0], Warning::BadDomU(_, p) if p.item == "cmdline:\"a"));
        assert_eq!(w[1], Warning::Unknown("b\""));
    }
}
