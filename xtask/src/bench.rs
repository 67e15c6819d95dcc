//! `cargo xtask bench`: measured figures, medians, and Hestia/Xen ratios when the Xen 4.17
//! reference rig (`../shared/ref/xen-ref`) is present.
//!
//! Figures: QEMU start to Hestia's ready line (median of 5 boots), and from the bench guest
//! (`tests/guests/src/bin/bench-hypercalls.rs`, booted as dom0): the null hypercall and the
//! event-channel send-plus-upcall round trips, each a median of 100,000 iterations in TSC
//! cycles. Under TCG cycles are not hardware cycles: compare ratios from the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hestia_tests::Firmware;

use crate::kernel::{self, Flavor, Modules};
use crate::qemu::{self, Accel, Machine, RunOptions};
use crate::{Result, root_dir, target_dir};

const BOOTS: usize = 5;
const BENCH_GUEST: &str = "bench-hypercalls";
const DOM0_MEM: &str = "dom0_mem=64M,max:64M";

/// `BENCH name value` lines of a log.
fn parse_bench(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("BENCH ")? + 6..];
            let mut w = rest.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.parse().ok()?))
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn xen_ref() -> Option<PathBuf> {
    let p = root_dir().join("../shared/ref/xen-ref");
    p.is_file().then_some(p)
}

fn run_on_xen(rig: &Path, guest: &Path) -> Result<Vec<(String, u64)>> {
    eprintln!(
        "bench: running {} as dom0 on the Xen reference rig ...",
        guest.display()
    );
    let out = Command::new(rig)
        .arg("--dom0")
        .arg(guest)
        .args([
            "--xen-cmdline",
            &format!("{DOM0_MEM} bootscrub=0"),
            "--timeout",
            "300",
        ])
        .output()?;
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(target_dir().join("bench-xen.log"), &log)?;
    Ok(parse_bench(&log))
}

/// Runs the benchmarks and prints the table.
pub fn run() -> Result<()> {
    crate::tools::ensure_system_tools()?;
    let elf = kernel::build(Flavor::Release)?;
    let guests = kernel::build_guests()?;
    let machine = Machine {
        firmware: Firmware::Bios,
        smp: 2,
        mem_mib: 1024,
        accel: Accel::Tcg,
        cpu: None,
        gdb: false,
        disks: Vec::new(),
        nics: Vec::new(),
        devices: Vec::new(),
    };
    let opts = |name: &str| RunOptions {
        timeout: Some(Duration::from_secs(300)),
        log_path: target_dir().join(format!("bench-{name}.log")),
        echo: false,
        interactive: false,
        input: Vec::new(),
        stop_when: None,
    };

    let iso = kernel::make_iso("bench-boot", &elf, "", &Modules::default())?;
    let mut boots = Vec::new();
    for _ in 0..BOOTS {
        if let Some(d) = qemu::run(&iso, &machine, "bench-boot", &opts("boot"))?.ready_after {
            boots.push(d.as_secs_f64());
        }
    }

    let guest = guests.join(BENCH_GUEST);
    let modules = Modules {
        dom0: Some((guest.clone(), String::new())),
        initrd: None,
    };
    let iso = kernel::make_iso("bench-guest", &elf, DOM0_MEM, &modules)?;
    let hestia = parse_bench(&qemu::run(&iso, &machine, "bench-guest", &opts("hestia"))?.log);
    let xen = match xen_ref() {
        Some(rig) => run_on_xen(&rig, &guest)?,
        None => Vec::new(),
    };

    println!(
        "{:<36} {:>14} {:>14} {:>12}",
        "figure (TCG)", "Hestia", "Xen 4.17", "Hestia/Xen"
    );
    let boot = median(boots.clone());
    println!(
        "{:<36} {:>14} {:>14} {:>12}",
        format!("boot to ready, s (median of {})", boots.len()),
        boot.map_or("-".into(), |b| format!("{b:.2}")),
        "-",
        "-"
    );
    for (name, h) in &hestia {
        let x = xen.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let ratio = x
            .filter(|&x| x > 0)
            .map_or("-".into(), |x| format!("{:.2}", *h as f64 / x as f64));
        println!(
            "{:<36} {:>14} {:>14} {:>12}",
            format!("{name} (median of 1e5)"),
            h,
            x.map_or("-".into(), |x| x.to_string()),
            ratio
        );
    }
    if hestia.is_empty() {
        return Err(format!(
            "the bench guest printed no figures (log: {})",
            target_dir().join("bench-hestia.log").display()
        )
        .into());
    }
    if xen_ref().is_none() {
        println!("(no Xen reference rig at ../shared/ref/xen-ref: no ratios)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bench_lines_anywhere_in_a_line() {
        let log = "BENCH a 12\n(XEN) noise\n(d0) BENCH b_cycles 7 extra\nBENCH broken x\n";
        assert_eq!(
            parse_bench(log),
            vec![("a".to_owned(), 12), ("b_cycles".to_owned(), 7)]
        );
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }
}
