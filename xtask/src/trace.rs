//! `cargo xtask bench trace`: where the instructions of the bench guest's two hot paths go, one
//! function at a time: the null hypercall (`xen_version`) and the event-channel send with its
//! upcall.
//!
//! The guest runs as dom0 under QEMU's instruction counter (`-icount`), stopped at start for
//! gdb. gdb lets it run until the guest has entered the path's hypercall-page slot
//! [`WARM_UP`] times, then single-steps [`STEPS`] instructions, logging each RIP. One
//! iteration is the run of RIPs from that slot to its next entry; each RIP is named by the
//! nearest preceding symbol of Hestia's ELF or the guest's (`nm`), and consecutive RIPs of one
//! function are added up. The table lists each function's instructions in the iteration,
//! largest first: Hestia's entry and exit assembly, its Rust layers, the guest's own code.
//! The same iteration measured by `bench icount` is this total minus the guest's timing loop.

use std::path::Path;
use std::process::Command;

use crate::kernel::{self, Modules};
use crate::qemu::{self, Accel, Machine};
use crate::{Result, target_dir};

/// Entries of a path's hypercall-page slot let go before the traced one: past the guest's
/// set-up and into its timed loop.
const WARM_UP: u32 = 3000;
/// Instructions single-stepped: more than one iteration of either path.
const STEPS: u32 = 1600;
/// The traced paths: a name and the hypercall whose slot begins an iteration.
const PATHS: [(&str, u32); 2] = [
    ("null hypercall (xen_version)", 17),
    ("event-channel send + upcall", 32),
];

/// Traces both paths and prints their tables.
pub fn run(elf: &Path, guest: &Path, hv_cmdline: &str) -> Result<()> {
    ensure_tools()?;
    let modules = Modules {
        dom0: Some((guest.to_path_buf(), String::new())),
        ..Modules::default()
    };
    let iso = kernel::make_iso("bench-trace", elf, hv_cmdline, &modules)?;
    let mut syms = symbols(&nm(elf)?);
    let guest_syms = symbols(&nm(guest)?);
    let page = guest_syms
        .iter()
        .find(|(_, name)| name == "hypercall_page")
        .map(|&(a, _)| a)
        .ok_or("the bench guest has no hypercall_page symbol")?;
    syms.extend(guest_syms);
    syms.sort();
    for (what, nr) in PATHS {
        let entry = page + 32 * u64::from(nr);
        let pcs = trace(&iso, entry)?;
        let one = one_iteration(&pcs, entry)
            .ok_or_else(|| format!("{what}: no whole iteration in {STEPS} instructions"))?;
        println!("{what}: {} instructions in one iteration", one.len());
        for (name, n) in per_function(&syms, one) {
            println!("  {n:6} {name}");
        }
    }
    Ok(())
}

/// gdb and nm (binutils): installed as root, else the command is printed.
fn ensure_tools() -> Result<()> {
    let have = |t: &str| Command::new(t).arg("--version").output().is_ok();
    if have("gdb") && have("nm") {
        return Ok(());
    }
    let install = "apt-get install -y gdb binutils";
    if crate::tools::is_root() {
        crate::run(Command::new("sh").args(["-c", install]))
    } else {
        Err(format!("bench trace needs gdb and nm: sudo {install}").into())
    }
}

fn nm(elf: &Path) -> Result<String> {
    let out = Command::new("nm").args(["-n", "-C"]).arg(elf).output()?;
    if !out.status.success() {
        return Err(format!("nm {} failed", elf.display()).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The text symbols of `nm -n` output: address and name.
fn symbols(nm_output: &str) -> Vec<(u64, String)> {
    nm_output
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            let (addr, kind, name) = (f.next()?, f.next()?, f.next()?);
            matches!(kind, "t" | "T" | "w" | "W")
                .then(|| Some((u64::from_str_radix(addr, 16).ok()?, name.to_owned())))
                .flatten()
        })
        .collect()
}

/// Boots `iso` stopped for gdb and logs `STEPS` RIPs from the `WARM_UP + 1`th time the CPU
/// reaches `entry`.
fn trace(iso: &Path, entry: u64) -> Result<Vec<u64>> {
    let dir = target_dir().join("bench-trace");
    std::fs::create_dir_all(&dir)?;
    let (script, pcs) = (dir.join("trace.gdb"), dir.join("pcs.log"));
    let machine = Machine {
        firmware: hestia_tests::Firmware::Bios,
        smp: 2,
        mem_mib: 1024,
        accel: Accel::Icount,
        cpu: None,
        gdb: true,
        disks: Vec::new(),
        nics: Vec::new(),
        devices: Vec::new(),
    };
    let mut qemu = qemu::spawn(iso, &machine, "bench-trace", &dir.join("serial.log"))?;
    std::fs::write(
        &script,
        format!(
            "set pagination off\nset confirm off\ntarget remote :1234\nbreak *{entry:#x}\n\
             ignore 1 {WARM_UP}\ncontinue\ndelete\nset logging file {}\n\
             set logging overwrite on\nset logging redirect on\nset logging enabled on\n\
             set $i = 0\nwhile $i < {STEPS}\nprintf \"%lx\\n\", $pc\nstepi\nset $i = $i + 1\n\
             end\nset logging enabled off\nkill\nquit\n",
            pcs.display()
        ),
    )?;
    let gdb = Command::new("gdb")
        .arg("-batch")
        .arg("-x")
        .arg(&script)
        .output();
    let _ = qemu.kill();
    let _ = qemu.wait();
    gdb?;
    Ok(parse_pcs(&std::fs::read_to_string(&pcs)?))
}

/// The RIPs of gdb's log: the lines that are bare hexadecimal numbers (stepi's own lines,
/// `0x… in …`, are not).
fn parse_pcs(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| u64::from_str_radix(l.trim(), 16).ok())
        .collect()
}

/// The RIPs from the first at `entry` up to the next at `entry`, if both are there.
fn one_iteration(pcs: &[u64], entry: u64) -> Option<&[u64]> {
    let start = pcs.iter().position(|&p| p == entry)?;
    let len = pcs[start + 1..].iter().position(|&p| p == entry)? + 1;
    Some(&pcs[start..start + len])
}

/// Instructions per function (the nearest symbol at or below each RIP in `syms`, sorted by
/// address), largest first, ties by name.
fn per_function(syms: &[(u64, String)], pcs: &[u64]) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for &pc in pcs {
        let i = syms.partition_point(|&(a, _)| a <= pc);
        let name = i.checked_sub(1).map_or("?", |i| syms[i].1.as_str());
        *counts.entry(name).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().map(|(n, c)| (n.to_owned(), c)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_symbols_only() {
        let nm = "0000000000101000 T hypercall_page\n\
                  0000000000102000 d DATA\n\
                  ffff82d080010000 t hestia::pv::before_guest_return\n\
                  0000000000103000 W weak_one\n";
        assert_eq!(
            symbols(nm),
            vec![
                (0x101000, "hypercall_page".to_owned()),
                (
                    0xffff82d080010000,
                    "hestia::pv::before_guest_return".to_owned()
                ),
                (0x103000, "weak_one".to_owned()),
            ]
        );
    }

    #[test]
    fn rips_without_gdbs_own_lines() {
        let log = "101220\n0x0000000000101221 in ?? ()\n101221\nffff82d08000f2de\n";
        assert_eq!(parse_pcs(log), vec![0x101220, 0x101221, 0xffff82d08000f2de]);
    }

    #[test]
    fn one_iteration_is_entry_to_next_entry() {
        let pcs = [5, 1, 2, 3, 1, 2];
        assert_eq!(one_iteration(&pcs, 1), Some(&[1, 2, 3][..]));
        assert_eq!(one_iteration(&pcs, 3), None, "no second entry");
        assert_eq!(one_iteration(&pcs, 9), None, "never entered");
    }

    #[test]
    fn counted_by_nearest_symbol_largest_first() {
        let syms = vec![(0x100, "a".to_owned()), (0x200, "b".to_owned())];
        let pcs = [0x50, 0x100, 0x1ff, 0x200, 0x250, 0x300];
        assert_eq!(
            per_function(&syms, &pcs),
            vec![
                ("b".to_owned(), 3),
                ("a".to_owned(), 2),
                ("?".to_owned(), 1)
            ]
        );
    }
}
