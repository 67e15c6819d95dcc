//! The hypervisor command line (`hestia_core::cmdline`): any bytes GRUB could pass. Never
//! panics; every option whose name is not known is reported as unknown, and only those.
#![no_main]

use hestia_core::cmdline::{Options, Warning};
use libfuzzer_sys::fuzz_target;

/// The option names `Options::parse` knows (README's table).
const KNOWN: [&str; 9] = [
    "loglvl",
    "com1",
    "console",
    "noreboot",
    "no-noreboot",
    "dom0_mem",
    "dom0_max_vcpus",
    "trace",
    "selftest",
];

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let mut warnings = Vec::new();
    let options = Options::parse(&line, |w| warnings.push(w));
    let unknown: Vec<&str> = line
        .split_ascii_whitespace()
        .map(|tok| tok.split_once('=').map_or(tok, |(name, _)| name))
        .filter(|name| !KNOWN.contains(name))
        .collect();
    let reported: Vec<&str> = warnings
        .iter()
        .filter_map(|w| match w {
            Warning::Unknown(name) => Some(*name),
            Warning::BadValue(name, _) | Warning::Unsupported(name, _) => {
                assert!(KNOWN.contains(name), "known-option warning for {name:?}");
                None
            }
        })
        .collect();
    assert_eq!(reported, unknown, "unknown options of {line:?}");
    assert_eq!(
        Options::parse(&line, |_| {}),
        options,
        "parsing is deterministic"
    );
});
