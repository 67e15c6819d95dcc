//! Boot-time domUs as xtask takes them: `--domu` on `cargo xtask run`, `Scenario::domus` in the
//! tests, both in one syntax (external test suites use it, so it does not change):
//!
//! ```text
//! KERNEL[,ramdisk=FILE][,cmdline="..."][,mem=MIB][,vcpus=N][,weight=W][,cap=C][,cpus=LIST]
//! ```
//!
//! Items are split at commas, except inside double quotes and except where the next piece does
//! not start with a known `key=`: then the comma belongs to the value before (`cpus=0-1,3`, or a
//! command line whose quotes the shell already removed: `cmdline=a b,c`). Quote a command line
//! that holds `,key=` itself. The values are passed on as they are: Hestia checks them (its
//! `domU=` rules, `hestia_core::domu_spec`) and warns about a bad one at boot.
//!
//! [`DomU::hv_option`] is the matching `domU=` entry of Hestia's command line, once
//! `kernel::make_iso` knows which multiboot2 modules the kernel and the ramdisk became.

use std::path::PathBuf;

use crate::Result;

/// Memory of a domU without `mem=`, in MiB (Hestia's own default for an entry without `mem:`).
pub const DEFAULT_MEM_MIB: u64 = 128;

/// The `key=` items after the kernel.
const KEYS: [&str; 7] = [
    "ramdisk", "cmdline", "mem", "vcpus", "weight", "cap", "cpus",
];

/// One boot-time domU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomU {
    /// Its kernel (ELF with Xen notes, or bzImage: what `--dom0` takes).
    pub kernel: PathBuf,
    /// Its initial ramdisk.
    pub ramdisk: Option<PathBuf>,
    /// Its command line (the kernel module's string).
    pub cmdline: String,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Credit scheduler weight (Hestia's default when absent).
    pub weight: Option<u32>,
    /// Cap in percent of one CPU (none when absent).
    pub cap: Option<u32>,
    /// Hard affinity, a CPU list (`0-1,3`).
    pub cpus: Option<String>,
}

impl DomU {
    /// Parses one `--domu` value.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |what: String| format!("--domu {spec}: {what}");
        let mut items = items(spec).map_err(bad)?.into_iter();
        let kernel = items.next().filter(|k| !k.is_empty());
        let mut d = DomU {
            kernel: PathBuf::from(kernel.ok_or_else(|| bad("no kernel".into()))?),
            ramdisk: None,
            cmdline: String::new(),
            mem_mib: DEFAULT_MEM_MIB,
            vcpus: 1,
            weight: None,
            cap: None,
            cpus: None,
        };
        for item in items {
            let (key, value) = item.split_once('=').unwrap_or((&item, ""));
            let number = || {
                value
                    .parse::<u32>()
                    .map_err(|_| bad(format!("{key}={value}: not a number")))
            };
            match key {
                "ramdisk" => d.ramdisk = Some(PathBuf::from(value)),
                "cmdline" => d.cmdline = unquote(value).to_owned(),
                "mem" => d.mem_mib = u64::from(number()?),
                "vcpus" => d.vcpus = number()?,
                "weight" => d.weight = Some(number()?),
                "cap" => d.cap = Some(number()?),
                _ => d.cpus = Some(value.to_owned()),
            }
        }
        Ok(d)
    }

    /// Hestia's `domU=` option for this domU, whose kernel and ramdisk are multiboot2 modules
    /// `kernel` and `ramdisk`.
    pub fn hv_option(&self, kernel: usize, ramdisk: Option<usize>) -> String {
        let mut o = format!("domU=kernel:{kernel}");
        if let Some(r) = ramdisk {
            o += &format!(",ramdisk:{r}");
        }
        o += &format!(",mem:{}M,vcpus:{}", self.mem_mib, self.vcpus);
        if let Some(w) = self.weight {
            o += &format!(",weight:{w}");
        }
        if let Some(c) = self.cap {
            o += &format!(",cap:{c}");
        }
        if let Some(c) = &self.cpus {
            o += &format!(",cpus:{c}");
        }
        o
    }
}

/// `"text"` without its quotes; anything else as it is.
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// The items of a `--domu` value: the kernel, then `key=value` items (see the module docs).
fn items(spec: &str) -> std::result::Result<Vec<String>, String> {
    let mut pieces = Vec::new();
    let (mut piece, mut quoted) = (String::new(), false);
    for c in spec.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                piece.push(c);
            }
            ',' if !quoted => pieces.push(std::mem::take(&mut piece)),
            _ => piece.push(c),
        }
    }
    if quoted {
        return Err("unbalanced \"".into());
    }
    pieces.push(piece);
    let mut items: Vec<String> = Vec::new();
    for p in pieces {
        let key = p.split_once('=').map(|(k, _)| k);
        match items.last_mut() {
            Some(last) if !key.is_some_and(|k| KEYS.contains(&k)) => {
                if last.split_once('=').is_none() {
                    return Err(format!("unknown item '{p}' (expected one of {KEYS:?})"));
                }
                last.push(',');
                last.push_str(&p);
            }
            _ => items.push(p),
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> DomU {
        DomU::parse(s).expect("valid")
    }

    #[test]
    fn kernel_alone_takes_the_defaults() {
        let d = parse("guest.elf");
        assert_eq!(d.kernel, PathBuf::from("guest.elf"));
        assert_eq!(
            (d.mem_mib, d.vcpus, &d.ramdisk),
            (DEFAULT_MEM_MIB, 1, &None)
        );
        assert_eq!(d.hv_option(2, None), "domU=kernel:2,mem:128M,vcpus:1");
    }

    #[test]
    fn every_item() {
        let d = parse(
            "k.elf,ramdisk=r.img,cmdline=\"console=hvc0 x=1,2\",mem=256,vcpus=2,weight=512,cap=50,cpus=0-1,3",
        );
        assert_eq!(d.ramdisk, Some(PathBuf::from("r.img")));
        assert_eq!(d.cmdline, "console=hvc0 x=1,2");
        assert_eq!(d.cpus.as_deref(), Some("0-1,3"));
        assert_eq!(
            d.hv_option(3, Some(4)),
            "domU=kernel:3,ramdisk:4,mem:256M,vcpus:2,weight:512,cap:50,cpus:0-1,3"
        );
    }

    #[test]
    fn a_command_line_the_shell_unquoted_keeps_its_commas() {
        // `--domu k,mem=64,vcpus=2,cmdline="a b,c"` reaches xtask without the quotes.
        let d = parse("k,mem=64,vcpus=2,cmdline=a b,c");
        assert_eq!((d.cmdline.as_str(), d.mem_mib, d.vcpus), ("a b,c", 64, 2));
        let d = parse("k,cmdline=a b,c,vcpus=2");
        assert_eq!((d.cmdline.as_str(), d.vcpus), ("a b,c", 2));
        let d = parse("k,cmdline=\"a,mem=1\",mem=64");
        assert_eq!((d.cmdline.as_str(), d.mem_mib), ("a,mem=1", 64));
    }

    #[test]
    fn mistakes_are_errors() {
        for bad in [
            "",
            ",mem=64",
            "k,mem=lots",
            "k,vcpus=-1",
            "k,colour=blue",
            "k,cmdline=\"a",
        ] {
            assert!(DomU::parse(bad).is_err(), "{bad:?}");
        }
    }
}
