//! `cargo xtask fuzz-host [TARGET] [--time SECS]`: the libFuzzer targets of
//! `hypervisor/core/fuzz` (one per `hestia-core` parser, and the PV MMU's frame table against
//! its invariant checker), built and run on the host; `cargo xtask test` runs each briefly and
//! counts it as a test.
//!
//! The toolchain is stable, which has no `-Zsanitizer` (so `cargo fuzz` and AddressSanitizer
//! are out): the targets link libFuzzer through `libfuzzer-sys` (compiled from its bundled
//! sources with the system C++ compiler) and get coverage from LLVM's SanitizerCoverage pass,
//! which stable `rustc` runs through `-Cpasses` and `-Cllvm-args` (the flags `cargo fuzz`
//! passes). `hestia-core` forbids `unsafe`, so a memory sanitizer would find nothing the
//! bounds checks do not; overflow checks and debug assertions are on, so unchecked
//! arithmetic on hostile input is a crash. `memcmp` expansion is off so that byte-string
//! comparisons reach libFuzzer's `memcmp` hook (without it, the fuzzer never guesses option
//! names). Corpora and crash inputs live under `target/fuzz/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{Result, root_dir, target_dir};

/// Seconds each target runs within `cargo xtask test`.
pub const TEST_SECS: u64 = 12;

/// SanitizerCoverage as `cargo fuzz` configures it, plus checks that turn silent wrap-around
/// into a crash.
const RUSTFLAGS: &[&str] = &[
    "--cfg=fuzzing",
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-max-loads-per-memcmp=0",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

fn fuzz_dir() -> PathBuf {
    root_dir().join("hypervisor/core/fuzz")
}

/// The targets: one per file in `fuzz_targets/`, sorted.
pub fn targets() -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))?
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    Ok(names)
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "cannot tell the host triple from `rustc -vV`".into())
}

/// Builds every target with coverage instrumentation; returns the directory of the binaries.
/// `--target` keeps the flags off build scripts and proc macros.
pub fn build() -> Result<PathBuf> {
    if !["c++", "g++", "clang++"]
        .iter()
        .any(|c| crate::tools::on_path(c))
    {
        return Err(format!(
            "no C++ compiler to build libFuzzer: apt-get install -y g++ (or sudo bash {})",
            root_dir().join("xtask/install-deps.sh").display()
        )
        .into());
    }
    let triple = host_triple()?;
    let dir = target_dir().join("fuzz");
    crate::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root_dir())
            .env("RUSTFLAGS", RUSTFLAGS.join(" "))
            .args(["build", "--release", "-p", "hestia-core-fuzz", "--target"])
            .arg(&triple)
            .arg("--target-dir")
            .arg(&dir),
    )?;
    Ok(dir.join(triple).join("release"))
}

/// One target's run.
pub struct Outcome {
    /// No crash, leak, timeout or failed assertion.
    pub ok: bool,
    /// Last status line of libFuzzer (`#runs DONE cov: ... corp: ...`), or why it failed.
    pub summary: String,
    /// libFuzzer's whole output.
    pub log: PathBuf,
}

/// Runs `name` for `secs` seconds on its corpus (`target/fuzz/corpus/NAME`, kept across runs).
pub fn run_one(bins: &Path, name: &str, secs: u64) -> Result<Outcome> {
    let base = target_dir().join("fuzz");
    let corpus = base.join("corpus").join(name);
    let artifacts = base.join("artifacts").join(name);
    let log = base.join("logs").join(format!("{name}.log"));
    for d in [&corpus, &artifacts, &base.join("logs")] {
        std::fs::create_dir_all(d)?;
    }
    let out = Command::new(bins.join(name))
        .arg(format!("-max_total_time={secs}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus)
        .output()
        .map_err(|e| format!("cannot run fuzz target {name}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    std::fs::write(&log, text.as_bytes())?;
    let summary = if out.status.success() {
        text.lines()
            .rev()
            .find(|l| l.contains(" cov: "))
            .unwrap_or("no coverage line")
            .to_owned()
    } else {
        // A panic's message is on the line after "panicked at FILE:LINE:COL:".
        let lines: Vec<&str> = text.lines().collect();
        let why = lines
            .iter()
            .position(|l| l.contains("panicked at") || l.contains("ERROR:"))
            .map_or("libFuzzer exited with an error".to_owned(), |i| {
                let next = lines
                    .get(i + 1)
                    .filter(|_| lines[i].contains("panicked at"));
                format!("{} {}", lines[i].trim(), next.map_or("", |n| n.trim()))
            });
        let input = lines
            .iter()
            .find_map(|l| {
                l.split_once("Test unit written to ")
                    .map(|(_, p)| p.to_owned())
            })
            .unwrap_or_default();
        format!(
            "{}; reproduce with {} {input}",
            why.trim(),
            bins.join(name).display()
        )
    };
    Ok(Outcome {
        ok: out.status.success(),
        summary,
        log,
    })
}

/// Runs the targets whose names contain `filter` (all without one), each for `secs` seconds,
/// printing one `test fuzz-host/NAME ... ok|FAILED` line each; returns (passed, failed).
pub fn run_all(filter: Option<&str>, secs: u64) -> Result<(u64, u64)> {
    let names: Vec<String> = targets()?
        .into_iter()
        .filter(|n| filter.is_none_or(|f| n.contains(f)))
        .collect();
    if names.is_empty() {
        return Err(format!("no fuzz target matches; targets: {}", targets()?.join(", ")).into());
    }
    let bins = build()?;
    let (mut passed, mut failed) = (0, 0);
    // Each target runs for its time on one core: as many at once as the host has CPUs.
    let at_once = std::thread::available_parallelism().map_or(1, |n| n.get());
    for batch in names.chunks(at_once) {
        let runs: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|name| {
                    let bins = &bins;
                    scope.spawn(move || {
                        let t = Instant::now();
                        let o = run_one(bins, name, secs).map_err(|e| e.to_string());
                        (name, t.elapsed(), o)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        for run in runs {
            let (name, took, o) = run.map_err(|_| "a fuzz runner thread panicked")?;
            let o = o?;
            let verdict = if o.ok { "ok" } else { "FAILED" };
            println!(
                "test fuzz-host/{name} ... {verdict} ({:.1} s, {})",
                took.as_secs_f64(),
                o.summary
            );
            if o.ok {
                passed += 1;
            } else {
                failed += 1;
                println!("    libFuzzer log: {}", o.log.display());
            }
        }
    }
    Ok((passed, failed))
}

/// `cargo xtask fuzz-host [TARGET] [--time SECS]` (default: every target for 60 s).
pub fn cmd(args: &[String]) -> Result<()> {
    let (mut filter, mut secs) = (None, 60);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--time" => {
                secs = crate::value(args, &mut i, "--time")?
                    .parse()
                    .map_err(|_| "--time needs seconds")?
            }
            a if a.starts_with("--") => return Err(format!("unknown option '{a}'").into()),
            a => filter = Some(a),
        }
        i += 1;
    }
    let (passed, failed) = run_all(filter, secs)?;
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        return Err(format!("{failed} fuzz targets crashed").into());
    }
    Ok(())
}
