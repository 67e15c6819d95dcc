//! The hypervisor command line (`hestia_core::cmdline`): any bytes GRUB could pass. Never
//! panics; every option whose name is not known is reported as unknown, once per occurrence and
//! whatever surrounds it, and a known option is never reported as unknown. (A name is known
//! when its option, alone on a line, is not reported unknown: no second list of option names
//! here to fall out of date.) Every `domU=` entry kept keeps its rules (vCPUs, weight, cap,
//! memory, a module for one use only).
#![no_main]

use hestia_core::cmdline::{Options, Warning};
use hestia_core::domu_spec;
use libfuzzer_sys::fuzz_target;

/// The option name of `tok`, and whether `tok` alone on a line is reported as unknown.
fn name_of(tok: &str) -> (&str, bool) {
    let name = tok.split_once('=').map_or(tok, |(name, _)| name);
    let mut unknown = false;
    Options::parse(tok, |w| unknown |= w == Warning::Unknown(name));
    (name, unknown)
}

/// A known-option warning must name an option that is known and on the line.
fn known_option(tokens: &[(&str, bool)], name: &str) {
    assert!(
        tokens.iter().any(|&(n, unknown)| n == name && !unknown),
        "known-option warning for {name:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let mut warnings = Vec::new();
    let options = Options::parse(&line, |w| warnings.push(w));
    let tokens: Vec<(&str, bool)> = line.split_ascii_whitespace().map(name_of).collect();
    let expected: Vec<&str> = tokens.iter().filter(|t| t.1).map(|t| t.0).collect();
    let reported: Vec<&str> = warnings
        .iter()
        .filter_map(|w| match w {
            Warning::Unknown(name) => Some(*name),
            Warning::BadValue(name, _) | Warning::Unsupported(name, _) => {
                known_option(&tokens, name);
                None
            }
            Warning::BadDomU(..) => {
                known_option(&tokens, "domU");
                None
            }
        })
        .collect();
    assert_eq!(reported, expected, "unknown options of {line:?}");
    for (i, d) in options.domus.iter().enumerate() {
        assert!(
            (1..=domu_spec::MAX_VCPUS).contains(&d.vcpus)
                && d.weight != 0
                && d.cap <= 100 * d.vcpus
                && (domu_spec::MIN_MEM..=domu_spec::MAX_MEM).contains(&d.mem)
                && d.mem.is_multiple_of(4096)
                && d.ramdisk != Some(d.kernel),
            "domU {i} breaks a rule: {d:?}"
        );
        let shared = |m| {
            options
                .domus
                .iter()
                .take(i)
                .any(|o| o.kernel == m || o.ramdisk == Some(m))
        };
        assert!(
            !shared(d.kernel) && !d.ramdisk.is_some_and(shared),
            "domU {i} shares a module: {d:?}"
        );
    }
    assert_eq!(
        Options::parse(&line, |_| {}),
        options,
        "parsing is deterministic"
    );
});
