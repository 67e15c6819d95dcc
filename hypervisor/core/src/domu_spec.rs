//! Boot-time domUs as Hestia's command line describes them: `domU=` entries, one per domain.
//!
//! Xen on x86 builds only dom0 at boot; Hestia also builds unprivileged domains from multiboot2
//! modules, as Xen's dom0less/hyperlaunch does on Arm from a device tree. Each `domU=` option
//! describes one domain (the option is repeatable, at most [`MAX_DOMUS`]):
//!
//! ```text
//! domU=kernel:<module>[,ramdisk:<module>][,name:<name>][,mem:<size>][,vcpus:<n>]
//!      [,weight:<w>][,cap:<percent>][,cpus:<list>]
//! ```
//!
//! - `kernel:`, `ramdisk:`: multiboot2 module indices, counted from 0 in the order the
//!   bootloader lists the modules (the boot log's `boot: module N` lines). The domain's own
//!   command line is its kernel module's string, as dom0's is (`module2 /boot/k console=hvc0`).
//! - `name:`: 1 to 64 of `A-Z a-z 0-9 _ . -`, not all digits, unique; `Domain-0` and
//!   `domU<digits>` are reserved. Default `domU<N>`, N counting accepted entries from 1.
//! - `mem:`: a size as `dom0_mem=` reads it (`256M`, `1G`; a plain number is KiB), whole 4 KiB
//!   pages, [`MIN_MEM`] to [`MAX_MEM`]; default [`DEFAULT_MEM`].
//! - `vcpus:` 1 to [`MAX_VCPUS`] (default 1); `weight:` the credit scheduler's weight, 1 to
//!   65535 (default 256, as Xen's); `cap:` percent of one CPU, 0 (no cap, the default) to 100
//!   per vCPU.
//! - `cpus:` hard affinity, a CPU list as Xen's `cpus=`: `0-1,3` or `all` (the default). Its
//!   commas need no quoting: a piece without a `:` continues the list.
//!
//! Every entry is checked whole: an entry with an unknown item, a malformed or out-of-range value,
//! a repeated item, no kernel, or a module another domU already uses is dropped with a
//! [`Problem`] that names the item and the rule, and the others stand. Nothing here panics on
//! any input (the `cmdline` fuzz target feeds it). Modules that exist are checked later, by the
//! kernel, which alone knows how many the bootloader passed.

use core::fmt;

use crate::size::parse_size;

/// Most boot-time domUs.
pub const MAX_DOMUS: usize = 8;
/// Most vCPUs of a boot-time domU.
pub const MAX_VCPUS: u32 = 64;
/// Smallest memory of a boot-time domU, in bytes.
pub const MIN_MEM: u64 = 4 << 20;
/// Largest memory of a boot-time domU, in bytes.
pub const MAX_MEM: u64 = 1 << 40;
/// Memory of a domU whose entry has no `mem:`, in bytes.
pub const DEFAULT_MEM: u64 = 128 << 20;
/// The credit scheduler's default weight (Xen's `CSCHED_DEFAULT_WEIGHT`).
pub const DEFAULT_WEIGHT: u16 = 256;

/// A set of physical CPUs, bit N for CPU N (the `cpus:` list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuMask(pub u64);

impl CpuMask {
    /// Every CPU.
    pub const ALL: Self = Self(u64::MAX);

    /// Parses `all` or a list of `N` and `N-M` (N <= M <= 63) separated by commas.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "all" {
            return Some(Self::ALL);
        }
        let mut mask = 0u64;
        for item in s.split(',') {
            let (lo, hi) = match item.split_once('-') {
                Some((a, b)) => (cpu_number(a)?, cpu_number(b)?),
                None => (cpu_number(item)?, cpu_number(item)?),
            };
            if lo > hi {
                return None;
            }
            // Bits lo..=hi: both shifts are below 64 since hi <= 63.
            mask |= (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
        }
        Some(Self(mask))
    }

    /// Whether CPU `cpu` is in the set.
    pub fn contains(self, cpu: u32) -> bool {
        cpu < 64 && self.0 & (1 << cpu) != 0
    }
}

/// A CPU number of a list: decimal, 0 to 63.
fn cpu_number(s: &str) -> Option<u32> {
    s.parse().ok().filter(|n| *n < 64)
}

impl fmt::Display for CpuMask {
    /// `all`, `none`, or the shortest list of `N` and `N-M` items (`0-1,3`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ALL {
            return f.write_str("all");
        }
        if self.0 == 0 {
            return f.write_str("none");
        }
        let (mut rest, mut first) = (self.0, true);
        while rest != 0 {
            let lo = rest.trailing_zeros();
            // The run of set bits starting at `lo`.
            let len = (!(rest >> lo)).trailing_zeros();
            let hi = lo + len - 1;
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if hi == lo {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
            rest &= u64::MAX.checked_shl(hi + 1).unwrap_or(0);
        }
        Ok(())
    }
}

/// A domU's name: given with `name:`, or `domU<N>` after its place among the accepted entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomUName<'a> {
    /// `name:<name>`.
    Given(&'a str),
    /// No `name:`: `domU<N>`, N from 1.
    Numbered(usize),
}

impl fmt::Display for DomUName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Given(s) => f.write_str(s),
            Self::Numbered(n) => write!(f, "domU{n}"),
        }
    }
}

/// One validated `domU=` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomUSpec<'a> {
    /// The domain's name.
    pub name: DomUName<'a>,
    /// Multiboot2 module index of the kernel (ELF with Xen notes, or bzImage); its string is
    /// the domain's command line.
    pub kernel: usize,
    /// Multiboot2 module index of the initial ramdisk.
    pub ramdisk: Option<usize>,
    /// Memory in bytes: a whole number of 4 KiB pages, [`MIN_MEM`] to [`MAX_MEM`].
    pub mem: u64,
    /// vCPUs, 1 to [`MAX_VCPUS`].
    pub vcpus: u32,
    /// Credit scheduler weight, 1 to 65535.
    pub weight: u16,
    /// Credit scheduler cap in percent of one CPU (0: none), at most 100 per vCPU.
    pub cap: u32,
    /// Hard affinity: the CPUs its vCPUs may run on (intersected with the CPUs online).
    pub cpus: CpuMask,
}

impl DomUSpec<'_> {
    /// Memory in 4 KiB pages.
    pub fn pages(&self) -> u64 {
        self.mem / 4096
    }

    /// The first module this domU names that is not among the `count` the bootloader passed.
    pub fn missing_module(&self, count: usize) -> Option<usize> {
        [Some(self.kernel), self.ramdisk]
            .into_iter()
            .flatten()
            .find(|m| *m >= count)
    }
}

/// Why a `domU=` entry was dropped: the offending item (or the whole entry) and the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Problem<'a> {
    /// The item at fault (`vcpus:99`), or the whole entry when no single item is.
    pub item: &'a str,
    /// The rule it breaks.
    pub why: &'static str,
}

/// The accepted `domU=` entries, in command-line order (a fixed-capacity list, so that the
/// options stay `Copy` and need no heap: they are parsed before it exists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomUs<'a> {
    specs: [Option<DomUSpec<'a>>; MAX_DOMUS],
    /// Bit N: module N is named by a `domU=` entry, kept or dropped.
    named: u16,
}

impl Default for DomUs<'_> {
    fn default() -> Self {
        Self {
            specs: [None; MAX_DOMUS],
            named: 0,
        }
    }
}

impl<'a> DomUs<'a> {
    /// The domUs, in order (the N-th is `domU<N>` when unnamed).
    pub fn iter(&self) -> impl Iterator<Item = &DomUSpec<'a>> {
        self.specs.iter().map_while(Option::as_ref)
    }

    /// How many domUs there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Whether a kept domU uses module `m` (as kernel or ramdisk).
    fn in_use(&self, m: usize) -> bool {
        self.iter().any(|d| d.kernel == m || d.ramdisk == Some(m))
    }

    /// Whether a `domU=` entry names module `m` as its kernel or ramdisk, even an entry that
    /// was dropped: a domU's kernel must never become dom0's because of a typo elsewhere in
    /// its entry.
    pub fn claims(&self, m: usize) -> bool {
        m < crate::bootinfo::MAX_MODULES && self.named & (1 << m) != 0
    }

    /// The modules left for dom0 among `count`: its kernel is the first module no `domU=`
    /// entry names ([`Self::claims`]), its initrd the next such one (so dom0 keeps modules 0
    /// and 1 when the domUs' come after).
    pub fn dom0_modules(&self, count: usize) -> (Option<usize>, Option<usize>) {
        let mut free = (0..count).filter(|m| !self.claims(*m));
        (free.next(), free.next())
    }

    /// Parses one `domU=` value and appends it, or says why it is dropped.
    pub fn add(&mut self, v: &'a str) -> Result<(), Problem<'a>> {
        for (key, val) in items(v).filter_map(|i| i.split_once(':')) {
            if let ("kernel" | "ramdisk", Some(m)) = (key, module(val)) {
                self.named |= 1 << m;
            }
        }
        let n = self.len();
        if n == MAX_DOMUS {
            return Err(Problem {
                item: v,
                why: "more than 8 domU= entries",
            });
        }
        let spec = parse_entry(v, n + 1)?;
        let mut taken = [Some(spec.kernel), spec.ramdisk].into_iter().flatten();
        if let Some(m) = taken.find(|m| self.in_use(*m)) {
            return Err(Problem {
                item: item_naming_module(v, m),
                why: "module already used by another domU",
            });
        }
        if let DomUName::Given(name) = spec.name
            && self.iter().any(|d| d.name == spec.name)
        {
            return Err(Problem {
                item: name,
                why: "name already used by another domU",
            });
        }
        if let Some(slot) = self.specs.get_mut(n) {
            *slot = Some(spec);
        }
        Ok(())
    }
}

/// The `kernel:` or `ramdisk:` item of `v` that names module `m` (for the message).
fn item_naming_module(v: &str, m: usize) -> &str {
    items(v)
        .find(|i| {
            i.split_once(':')
                .is_some_and(|(k, val)| matches!(k, "kernel" | "ramdisk") && val.parse() == Ok(m))
        })
        .unwrap_or(v)
}

/// The `key:value` items of an entry: split at the commas followed by a piece with a `:`, so
/// that a CPU list's commas stay inside its item.
fn items(v: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(v).filter(|v| !v.is_empty());
    core::iter::from_fn(move || {
        let r = rest?;
        let mut end = r.len();
        let mut from = 0;
        while let Some(at) = r.get(from..).and_then(|s| s.find(',')).map(|i| from + i) {
            let next = r.get(at + 1..).unwrap_or("");
            if next.split(',').next().is_some_and(|p| p.contains(':')) {
                end = at;
                break;
            }
            from = at + 1;
        }
        rest = r.get(end + 1..);
        r.get(..end)
    })
}

/// Which items an entry has had (each may appear once).
#[derive(Default)]
struct Seen {
    keys: u16,
}

const KEYS: [&str; 8] = [
    "kernel", "ramdisk", "name", "mem", "vcpus", "weight", "cap", "cpus",
];

impl Seen {
    /// Records `key`; false if it is unknown or came before.
    fn first(&mut self, key: &str) -> bool {
        let Some(bit) = KEYS.iter().position(|k| *k == key) else {
            return false;
        };
        let new = self.keys & (1 << bit) == 0;
        self.keys |= 1 << bit;
        new
    }
}

/// Parses and checks one entry on its own; `n` is its number if it is accepted.
fn parse_entry(v: &str, n: usize) -> Result<DomUSpec<'_>, Problem<'_>> {
    let mut spec = DomUSpec {
        name: DomUName::Numbered(n),
        kernel: usize::MAX,
        ramdisk: None,
        mem: DEFAULT_MEM,
        vcpus: 1,
        weight: DEFAULT_WEIGHT,
        cap: 0,
        cpus: CpuMask::ALL,
    };
    let (mut kernel, mut cap_item) = (None, None);
    let mut seen = Seen::default();
    for item in items(v) {
        let bad = |why| Problem { item, why };
        let Some((key, val)) = item.split_once(':') else {
            return Err(bad("not a key:value item"));
        };
        if !KEYS.contains(&key) {
            return Err(bad(
                "unknown item (kernel, ramdisk, name, mem, vcpus, weight, cap, cpus)",
            ));
        }
        if !seen.first(key) {
            return Err(bad("item given twice"));
        }
        match key {
            "kernel" => kernel = Some(module(val).ok_or(bad("not a module number"))?),
            "ramdisk" => spec.ramdisk = Some(module(val).ok_or(bad("not a module number"))?),
            "name" => spec.name = DomUName::Given(name(val).map_err(bad)?),
            "mem" => {
                spec.mem = parse_size(val).ok_or(bad("not a size (e.g. 256M)"))?;
                if !(MIN_MEM..=MAX_MEM).contains(&spec.mem) {
                    return Err(bad("memory is 4M to 1T"));
                }
                if !spec.mem.is_multiple_of(4096) {
                    return Err(bad("memory is a whole number of 4 KiB pages"));
                }
            }
            "vcpus" => {
                spec.vcpus = val
                    .parse()
                    .ok()
                    .filter(|v| (1..=MAX_VCPUS).contains(v))
                    .ok_or(bad("vCPUs are 1 to 64"))?;
            }
            "weight" => {
                spec.weight = val
                    .parse()
                    .ok()
                    .filter(|w| *w != 0)
                    .ok_or(bad("weight is 1 to 65535"))?;
            }
            "cap" => {
                spec.cap = val.parse().map_err(|_| bad("cap is a percentage"))?;
                cap_item = Some(item);
            }
            // "cpus", the last of KEYS.
            _ => spec.cpus = CpuMask::parse(val).ok_or(bad("not a CPU list (0-1,3 or all)"))?,
        }
    }
    spec.kernel = kernel.ok_or(Problem {
        item: v,
        why: "no kernel:<module>",
    })?;
    if spec.ramdisk == Some(spec.kernel) {
        return Err(Problem {
            item: v,
            why: "kernel and ramdisk are the same module",
        });
    }
    // Checked once the entry is whole: `vcpus:` may come after `cap:`.
    if let Some(item) = cap_item
        && spec.cap > 100 * spec.vcpus
    {
        return Err(Problem {
            item,
            why: "cap is at most 100 per vCPU",
        });
    }
    Ok(spec)
}

/// A module index: decimal, below the most modules Hestia records.
fn module(s: &str) -> Option<usize> {
    s.parse().ok().filter(|m| *m < crate::bootinfo::MAX_MODULES)
}

/// Checks a `name:` value.
fn name(s: &str) -> Result<&str, &'static str> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if s.is_empty() || s.len() > 64 || !s.chars().all(ok_char) {
        return Err("a name is 1 to 64 of A-Z a-z 0-9 _ . -");
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        return Err("a name is not all digits (it would read as a domain id)");
    }
    let numbered = s
        .strip_prefix("domU")
        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
    if s == "Domain-0" || numbered {
        return Err("Domain-0 and domU<N> are reserved names");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::string::ToString;
    use std::vec::Vec;

    fn one(v: &str) -> Result<DomUSpec<'_>, Problem<'_>> {
        let mut d = DomUs::default();
        d.add(v)?;
        Ok(*d.iter().next().expect("one entry"))
    }

    fn why(v: &str) -> &'static str {
        one(v).expect_err("must be dropped").why
    }

    #[test]
    fn full_entry() {
        let s = one("name:foo,kernel:2,ramdisk:3,mem:256M,vcpus:2,weight:512,cap:50,cpus:0-1,3")
            .expect("valid");
        assert_eq!(
            s,
            DomUSpec {
                name: DomUName::Given("foo"),
                kernel: 2,
                ramdisk: Some(3),
                mem: 256 << 20,
                vcpus: 2,
                weight: 512,
                cap: 50,
                cpus: CpuMask(0b1011),
            }
        );
        assert_eq!(s.pages(), 65536);
    }

    #[test]
    fn defaults() {
        let s = one("kernel:1").expect("valid");
        assert_eq!(s.name, DomUName::Numbered(1));
        assert_eq!(s.ramdisk, None);
        assert_eq!((s.mem, s.vcpus, s.weight, s.cap), (128 << 20, 1, 256, 0));
        assert_eq!(s.cpus, CpuMask::ALL);
    }

    #[test]
    fn kernel_is_required_and_a_module_number() {
        assert_eq!(why("mem:64M"), "no kernel:<module>");
        assert_eq!(why(""), "no kernel:<module>");
        assert_eq!(why("kernel:x"), "not a module number");
        assert_eq!(why("kernel:16"), "not a module number");
        assert_eq!(why("kernel:-1"), "not a module number");
        assert_eq!(one("kernel:15").map(|s| s.kernel), Ok(15));
        assert_eq!(
            why("kernel:1,ramdisk:1"),
            "kernel and ramdisk are the same module"
        );
    }

    #[test]
    fn memory_as_dom0_mem_reads_it() {
        assert_eq!(one("kernel:0,mem:1G").map(|s| s.mem), Ok(1 << 30));
        assert_eq!(one("kernel:0,mem:65536").map(|s| s.mem), Ok(64 << 20));
        assert_eq!(one("kernel:0,mem:4M").map(|s| s.mem), Ok(4 << 20));
        assert_eq!(why("kernel:0,mem:3M"), "memory is 4M to 1T");
        assert_eq!(why("kernel:0,mem:2T"), "memory is 4M to 1T");
        assert_eq!(
            why("kernel:0,mem:4098K"),
            "memory is a whole number of 4 KiB pages"
        );
        assert_eq!(why("kernel:0,mem:lots"), "not a size (e.g. 256M)");
    }

    #[test]
    fn vcpus_1_to_64() {
        assert_eq!(one("kernel:0,vcpus:64").map(|s| s.vcpus), Ok(64));
        assert_eq!(one("kernel:0,vcpus:1").map(|s| s.vcpus), Ok(1));
        for bad in ["0", "65", "-1", "two", ""] {
            assert_eq!(why(&format!("kernel:0,vcpus:{bad}")), "vCPUs are 1 to 64");
        }
    }

    #[test]
    fn weight_1_to_65535() {
        assert_eq!(one("kernel:0,weight:1").map(|s| s.weight), Ok(1));
        assert_eq!(one("kernel:0,weight:65535").map(|s| s.weight), Ok(65535));
        for bad in ["0", "65536", "heavy"] {
            assert_eq!(
                why(&format!("kernel:0,weight:{bad}")),
                "weight is 1 to 65535"
            );
        }
    }

    #[test]
    fn cap_at_most_100_per_vcpu_in_any_order() {
        assert_eq!(one("kernel:0,cap:100").map(|s| s.cap), Ok(100));
        assert_eq!(one("kernel:0,cap:200,vcpus:2").map(|s| s.cap), Ok(200));
        let p = one("kernel:0,cap:201,vcpus:2").expect_err("over");
        assert_eq!(
            p,
            Problem {
                item: "cap:201",
                why: "cap is at most 100 per vCPU"
            }
        );
        assert_eq!(why("kernel:0,cap:101"), "cap is at most 100 per vCPU");
        assert_eq!(why("kernel:0,cap:-5"), "cap is a percentage");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(CpuMask::parse("0-1,3"), Some(CpuMask(0b1011)));
        assert_eq!(CpuMask::parse("63"), Some(CpuMask(1 << 63)));
        assert_eq!(CpuMask::parse("0-63"), Some(CpuMask::ALL));
        assert_eq!(CpuMask::parse("all"), Some(CpuMask::ALL));
        assert_eq!(CpuMask::parse("5,5,4-5"), Some(CpuMask(0b11_0000)));
        for bad in ["", "64", "3-1", "1-", "-1", "0,,1", "x", "0-64", "1 "] {
            assert_eq!(CpuMask::parse(bad), None, "{bad:?}");
        }
        assert!(CpuMask(0b1011).contains(3) && !CpuMask(0b1011).contains(2));
        assert!(!CpuMask::ALL.contains(64));
    }

    #[test]
    fn cpu_lists_print_back() {
        for s in ["0-1,3", "0", "63", "1,3,5-7,62-63", "all", "0-62"] {
            let m = CpuMask::parse(s).expect("valid");
            assert_eq!(m.to_string(), s);
        }
        assert_eq!(CpuMask(0).to_string(), "none");
    }

    #[test]
    fn cpu_list_commas_stay_in_their_item() {
        let s = one("cpus:0,2-3,kernel:1,vcpus:2").expect("valid");
        assert_eq!((s.cpus, s.kernel, s.vcpus), (CpuMask(0b1101), 1, 2));
        let s = one("kernel:1,cpus:1,3").expect("valid");
        assert_eq!(s.cpus, CpuMask(0b1010));
        assert_eq!(why("kernel:1,cpus:1,3,"), "not a CPU list (0-1,3 or all)");
        assert_eq!(why("kernel:1,cpus:1,x"), "not a CPU list (0-1,3 or all)");
        assert_eq!(why("kernel:1,vcpus:1,3"), "vCPUs are 1 to 64");
    }

    #[test]
    fn unknown_repeated_or_keyless_items_drop_the_entry() {
        assert_eq!(
            one("kernel:0,colour:blue").expect_err("unknown").item,
            "colour:blue"
        );
        assert_eq!(why("kernel:0,kernel:1"), "item given twice");
        assert_eq!(why("kernel:0,mem:64M,mem:128M"), "item given twice");
        assert_eq!(why("kernel"), "not a key:value item");
        assert_eq!(why("kernel=1"), "not a key:value item");
        assert_eq!(
            why("kernel:0,cmdline:\"console=hvc0\""),
            "unknown item (kernel, ramdisk, name, mem, vcpus, weight, cap, cpus)"
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            one("kernel:0,name:web-1.a_b").map(|s| s.name),
            Ok(DomUName::Given("web-1.a_b"))
        );
        let long = "x".repeat(64);
        assert!(one(&format!("kernel:0,name:{long}")).is_ok());
        let bad_chars = "a name is 1 to 64 of A-Z a-z 0-9 _ . -";
        assert_eq!(why(&format!("kernel:0,name:{long}x")), bad_chars);
        assert_eq!(why("kernel:0,name:"), bad_chars);
        assert_eq!(why("kernel:0,name:a/b"), bad_chars);
        assert_eq!(why("kernel:0,name:é"), bad_chars);
        assert_eq!(
            why("kernel:0,name:42"),
            "a name is not all digits (it would read as a domain id)"
        );
        for reserved in ["Domain-0", "domU3", "domU0"] {
            assert_eq!(
                why(&format!("kernel:0,name:{reserved}")),
                "Domain-0 and domU<N> are reserved names"
            );
        }
        assert!(one("kernel:0,name:domU").is_ok() && one("kernel:0,name:domUx").is_ok());
        assert_eq!(DomUName::Numbered(2).to_string(), "domU2");
    }

    #[test]
    fn entries_share_no_module_or_name_and_number_in_order() {
        let mut d = DomUs::default();
        assert_eq!(d.add("kernel:1,ramdisk:2"), Ok(()));
        assert_eq!(
            d.add("kernel:3,ramdisk:1"),
            Err(Problem {
                item: "ramdisk:1",
                why: "module already used by another domU"
            })
        );
        assert_eq!(
            d.add("kernel:2").map_err(|p| p.why),
            Err("module already used by another domU")
        );
        assert_eq!(d.add("kernel:3,name:a"), Ok(()));
        assert_eq!(
            d.add("kernel:4,name:a").map_err(|p| p.why),
            Err("name already used by another domU")
        );
        assert_eq!(d.add("kernel:4"), Ok(()));
        let names: Vec<_> = d.iter().map(|s| s.name.to_string()).collect();
        assert_eq!(names, ["domU1", "a", "domU3"]);
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn at_most_eight() {
        let mut d = DomUs::default();
        assert!(d.is_empty());
        let entries: Vec<_> = (0..9).map(|m| format!("kernel:{m}")).collect();
        for e in &entries[..MAX_DOMUS] {
            assert_eq!(d.add(e), Ok(()));
        }
        assert_eq!(
            d.add(&entries[8]).map_err(|p| p.why),
            Err("more than 8 domU= entries")
        );
        assert_eq!(d.len(), MAX_DOMUS);
    }

    #[test]
    fn modules_must_exist() {
        let s = one("kernel:2,ramdisk:3").expect("valid");
        assert_eq!(s.missing_module(4), None);
        assert_eq!(s.missing_module(3), Some(3));
        assert_eq!(s.missing_module(0), Some(2));
        assert_eq!(one("kernel:0").expect("valid").missing_module(1), None);
    }

    #[test]
    fn dom0_takes_the_modules_no_domu_uses() {
        let mut d = DomUs::default();
        assert_eq!(d.dom0_modules(0), (None, None));
        assert_eq!(d.dom0_modules(3), (Some(0), Some(1)));
        d.add("kernel:2,ramdisk:3").expect("valid");
        assert_eq!(d.dom0_modules(4), (Some(0), Some(1)));
        assert_eq!(d.dom0_modules(1), (Some(0), None));
        let mut d = DomUs::default();
        d.add("kernel:0,ramdisk:1").expect("valid");
        assert_eq!(
            d.dom0_modules(2),
            (None, None),
            "--no-dom0: all modules are domUs'"
        );
        assert_eq!(d.dom0_modules(4), (Some(2), Some(3)));
        assert!(d.claims(0) && d.claims(1) && !d.claims(2));
        assert!(!d.claims(usize::MAX));
    }

    #[test]
    fn a_dropped_entry_still_keeps_its_modules_from_dom0() {
        let mut d = DomUs::default();
        assert!(d.add("kernel:0,vcpus:99").is_err());
        assert!(d.add("ramdisk:2,kernel:3,mem:1").is_err());
        assert!(d.is_empty());
        assert!(d.claims(0) && !d.claims(1) && d.claims(2) && d.claims(3));
        assert_eq!(d.dom0_modules(5), (Some(1), Some(4)));
        // Modules named by dropped entries are not in use: a later entry may take them.
        assert_eq!(d.add("kernel:0"), Ok(()));
    }
}
