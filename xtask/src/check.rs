//! `cargo xtask check`: formatting and lints for the host crates and the kernel target, and the
//! kernel's layer rule (`crate::layers`).

use std::process::Command;

use crate::{Result, root_dir, target_dir};

/// Runs rustfmt and clippy (warnings are errors).
pub fn run() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let c = || {
        let mut c = Command::new(&cargo);
        c.current_dir(root_dir());
        c
    };
    crate::tools::ensure_kernel_target()?;
    crate::run(c().args(["fmt", "--all", "--", "--check"]))?;
    crate::run(c().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The fuzz targets are a workspace member outside the default set (they link libFuzzer).
    crate::run(c().args([
        "clippy",
        "-p",
        "hestia-core-fuzz",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    crate::run(
        c().args([
            "clippy",
            "-p",
            "hestia",
            "--target",
            "x86_64-unknown-none",
            "--features",
            "test-hooks",
            "--target-dir",
        ])
        .arg(target_dir().join("kernel-test"))
        .args(["--", "-D", "warnings"]),
    )?;
    crate::run(
        c().args([
            "clippy",
            "-p",
            "hestia-guests",
            "--target",
            "x86_64-unknown-none",
            "--target-dir",
        ])
        .arg(target_dir().join("guests"))
        .args(["--", "-D", "warnings"]),
    )?;
    crate::layers::check()?;
    println!("check: fmt, clippy and layers clean");
    Ok(())
}
