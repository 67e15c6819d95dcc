//! `cargo xtask test`: host unit tests, a short run of every host fuzz target, then every QEMU
//! scenario of `hestia-tests`, then the summary line `N passed, M failed`. Zero tests run is a
//! failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hestia_tests::{
    DEBIAN_DISK, DEBIAN_LIBVIRT_USERLAND, DEBIAN_LINUX, DEBIAN_XEN_USERLAND, DataDisk, Ending,
    HYPERVISOR_AS_DOM0, Outcome, judge,
};

use crate::domu::DomU;
use crate::kernel::{self, Flavor, Modules};
use crate::qemu::{self, Accel, Machine, RunOptions};
use crate::{Result, root_dir, target_dir};

/// The signal QEMU dies from when one of its own assertions fails.
const SIGABRT: i32 = 6;

/// Counts from cargo's `test result:` lines.
fn parse_cargo_counts(out: &str) -> (u64, u64) {
    let (mut passed, mut failed) = (0, 0);
    for line in out.lines().filter(|l| l.starts_with("test result:")) {
        let num = |key: &str| {
            line.split(';')
                .find(|p| p.contains(key))
                .and_then(|p| p.split_whitespace().rev().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        passed += num(" passed");
        failed += num(" failed");
    }
    (passed, failed)
}

/// e2fsprogs' tools live in /sbin, which a non-root PATH may lack.
pub fn sbin(tool: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(tool))
}

/// Makes the scenario's ext4 image (`mke2fs -d` from a directory of its files).
fn make_data_disk(name: &str, d: &DataDisk) -> Result<PathBuf> {
    let dir = target_dir().join("test-disks").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("files"))?;
    for (file, contents) in d.files {
        std::fs::write(dir.join("files").join(file), contents)?;
    }
    let img = dir.join("disk.img");
    crate::run(
        Command::new(sbin("mke2fs"))
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(dir.join("files"))
            .arg(&img)
            .arg("16M"),
    )?;
    Ok(img)
}

/// Checks that the guest left `file` with `contents` in the image (read with debugfs).
fn check_written(img: &Path, (file, contents): (&str, &str)) -> std::result::Result<(), String> {
    let out = Command::new(sbin("debugfs"))
        .args(["-R", &format!("cat /{file}")])
        .arg(img)
        .output()
        .map_err(|e| format!("cannot run debugfs: {e}"))?;
    let found = String::from_utf8_lossy(&out.stdout);
    if found.trim() == contents {
        Ok(())
    } else {
        Err(format!(
            "the disk holds {:?} in /{file}, expected {contents:?}",
            found.trim()
        ))
    }
}

/// What `cargo xtask test fuzz SEED` and `cargo xtask fuzz` pass to the fuzz guests (scenarios
/// named `fuzz-*`) on their command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct FuzzArgs {
    /// `seed=`: replay this seed.
    pub seed: Option<u64>,
    /// `calls=`: this many calls instead of the guest's default.
    pub calls: Option<u64>,
    /// `known=1`: also the requests that reach holes still open.
    pub known: bool,
}

/// The seed `cargo xtask test` fuzzes with unless given one, so that a test run passes or
/// fails the same way each time. Random seeds belong to `cargo xtask fuzz`.
pub const CI_FUZZ_SEED: u64 = 0x530c_bf60;

/// Calls per second the fuzz guest manages under TCG (measured: see the fuzz scenario), for
/// the timeout of a run with more calls than the CI's.
const FUZZ_CALLS_PER_S_TCG: u64 = 5_000;

impl FuzzArgs {
    /// The guest command line (`seed=0x... calls=N`).
    fn cmdline(&self) -> String {
        let mut c = Vec::new();
        if let Some(s) = self.seed {
            c.push(format!("seed={s:#x}"));
        }
        if let Some(n) = self.calls {
            c.push(format!("calls={n}"));
        }
        if self.known {
            c.push("known=1".into());
        }
        c.join(" ")
    }
}

/// Parses a seed as the guest prints it (`0x...`) or in decimal.
pub fn parse_seed(s: &str) -> Result<u64> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a seed (0x-hex or decimal)").into())
}

/// The kernel a scenario names (its `dom0`, or the KERNEL of a `domus` entry) and the initrd that
/// comes with it: a guest of `tests/guests` (`<guest>.bzimage-xz` / `.bzimage-gzip`: that guest
/// wrapped in a synthetic bzImage), [`HYPERVISOR_AS_DOM0`], [`DEBIAN_LINUX`] with its
/// busybox initramfs, [`DEBIAN_XEN_USERLAND`] (the same kernel with Xen's toolstack) or
/// [`DEBIAN_LIBVIRT_USERLAND`] (and libvirtd).
fn scenario_kernel(name: &str, elf: &Path, guests: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    Ok(match name {
        DEBIAN_LINUX => {
            let linux = crate::dom0::prepare()?;
            (linux.kernel, Some(linux.initramfs))
        }
        DEBIAN_XEN_USERLAND => {
            let u = crate::rootfs::prepare()?;
            (u.kernel, Some(u.initramfs))
        }
        DEBIAN_LIBVIRT_USERLAND => {
            let u = crate::rootfs::prepare_libvirt()?;
            (u.kernel, Some(u.initramfs))
        }
        HYPERVISOR_AS_DOM0 => (elf.to_owned(), None),
        g => match g.rsplit_once(".bzimage-") {
            Some((guest, tool)) => (kernel::make_bzimage(&guests.join(guest), tool)?, None),
            None => (guests.join(g), None),
        },
    })
}

/// Runs everything (or the scenarios whose names contain `filter`); `fuzz` goes to the fuzz
/// guests' command lines.
pub fn run(filter: Option<&str>, accel: Accel, fuzz: FuzzArgs) -> Result<()> {
    let (mut passed, mut failed) = (0u64, 0u64);
    if filter.is_none() {
        println!("== host unit tests (cargo test) ==");
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root_dir())
            .args(["test"])
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{text}");
        let (p, f) = parse_cargo_counts(&text);
        passed += p;
        failed += f;
        if !out.status.success() && f == 0 {
            println!("host unit tests: cargo test failed before reporting results");
            failed += 1;
        }
        println!(
            "== host fuzz targets ({} s each; corpora in {}) ==",
            crate::fuzz::TEST_SECS,
            target_dir().join("fuzz/corpus").display()
        );
        match crate::fuzz::run_all(None, crate::fuzz::TEST_SECS) {
            Ok((p, f)) => {
                passed += p;
                failed += f;
            }
            Err(e) => {
                println!("test fuzz-host ... FAILED ({e})");
                failed += 1;
            }
        }
    }

    crate::tools::ensure_system_tools()?;
    let elf = kernel::build(Flavor::TestHooks)?;
    let guests = kernel::build_guests()?;
    let logs = target_dir().join("test-logs");
    let mut scenarios: Vec<hestia_tests::Scenario> = hestia_tests::all()
        .into_iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .collect();
    // Prepared in this order: a test guest's image takes a moment, Debian's images take
    // minutes, during which the test guests run.
    scenarios.sort_by_key(needs_debian);
    let slots = slots();
    println!(
        "== QEMU scenarios: {} (serial logs in {}), {slots} at a time ==",
        scenarios.len(),
        logs.display()
    );
    let (p, f) = run_scenarios(
        scenarios,
        |s| prepare(s, &elf, &guests, &logs, accel, fuzz).map_err(|e| e.to_string()),
        slots,
    );
    passed += p;
    failed += f;
    println!("{passed} passed, {failed} failed");
    match (passed, failed) {
        (0, 0) => Err("no test ran".into()),
        (_, 0) => Ok(()),
        (_, f) => Err(format!("{f} tests failed").into()),
    }
}

/// A scenario ready to run: its image built, its machine and serial log chosen.
struct Job {
    s: hestia_tests::Scenario,
    iso: PathBuf,
    machine: Machine,
    log_path: PathBuf,
}

/// Builds what scenario `s` boots (its ISO or disk, its data disk) and describes its machine.
fn prepare(
    s: hestia_tests::Scenario,
    elf: &Path,
    guests: &Path,
    logs: &Path,
    accel: Accel,
    fuzz: FuzzArgs,
) -> Result<Job> {
    let is_fuzz = s.dom0.is_some_and(|d| d.starts_with("fuzz-"));
    let mut s = s;
    let guest_cmdline = if is_fuzz {
        format!("{} {}", s.dom0_cmdline, fuzz.cmdline())
    } else {
        s.dom0_cmdline.to_owned()
    };
    if let (true, Some(n)) = (is_fuzz, fuzz.calls) {
        s.timeout_s = s.timeout_s.max(60 + n / FUZZ_CALLS_PER_S_TCG);
    }
    let mut modules = Modules::default();
    if let Some(d) = s.dom0.filter(|d| *d != DEBIAN_DISK) {
        let (kernel, initrd) = scenario_kernel(d, elf, guests)?;
        modules.dom0 = Some((kernel, guest_cmdline.trim().to_owned()));
        modules.initrd = initrd;
    }
    for spec in s.domus {
        let mut d = DomU::parse(spec)?;
        let (kernel, initrd) = scenario_kernel(&d.kernel.to_string_lossy(), elf, guests)?;
        d.kernel = kernel;
        d.ramdisk = d.ramdisk.or(initrd);
        modules.domus.push(d);
    }
    let iso = if s.dom0 == Some(DEBIAN_DISK) {
        crate::disk::for_test(s.name, guests)?
    } else {
        kernel::make_iso(&format!("test-{}", s.name), elf, s.hv_cmdline, &modules)?
    };
    let machine = Machine {
        firmware: s.firmware,
        smp: s.smp,
        mem_mib: s.mem_mib,
        accel,
        cpu: s.cpu.map(str::to_owned),
        gdb: false,
        disks: s
            .data_disk
            .map(|d| make_data_disk(s.name, &d))
            .transpose()?
            .into_iter()
            .collect(),
        nics: s.nics.iter().map(|m| (*m).to_owned()).collect(),
        devices: s.devices.iter().map(|d| (*d).to_owned()).collect(),
    };
    Ok(Job {
        s,
        iso,
        machine,
        log_path: logs.join(format!("{}.log", s.name)),
    })
}

/// How many scenarios run at once: `HESTIA_TEST_JOBS`, else one per host CPU (at most 4).
/// Each QEMU's vCPU threads sleep while its guest idles, and most scenarios idle much of
/// the time; those that measure time run alone ([`hestia_tests::Scenario::alone`]).
fn slots() -> usize {
    std::env::var("HESTIA_TEST_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
        .max(1)
}

/// Whether scenario `s` boots one of Debian's images (Linux, its userlands, the installed
/// disk), which take minutes to build the first time.
fn needs_debian(s: &hestia_tests::Scenario) -> bool {
    let debian = [
        DEBIAN_LINUX,
        DEBIAN_XEN_USERLAND,
        DEBIAN_LIBVIRT_USERLAND,
        DEBIAN_DISK,
    ];
    s.dom0.is_some_and(|d| debian.contains(&d))
        || s.domus.iter().any(|d| d.starts_with(DEBIAN_LINUX))
}

/// Prepares `scenarios` one after the other (in this order) while up to `slots` of those
/// prepared run at once, the longest first by their time limit, so that short ones fill the
/// end; those that run alone ([`hestia_tests::Scenario::alone`]) run last, one at a time,
/// once nothing else is left. Prints each verdict whole as it comes; returns (passed, failed).
fn run_scenarios(
    scenarios: Vec<hestia_tests::Scenario>,
    prepare: impl Fn(hestia_tests::Scenario) -> std::result::Result<Job, String> + Sync,
    slots: usize,
) -> (u64, u64) {
    use std::collections::VecDeque;
    use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
    struct Pool {
        ready: Vec<Job>,
        alone: VecDeque<Job>,
        preparing: bool,
        running: usize,
        passed: u64,
        failed: u64,
    }
    fn lock(m: &Mutex<Pool>) -> MutexGuard<'_, Pool> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }
    let pool = Mutex::new(Pool {
        ready: Vec::new(),
        alone: VecDeque::new(),
        preparing: true,
        running: 0,
        passed: 0,
        failed: 0,
    });
    let changed = Condvar::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for s in scenarios {
                let name = s.name;
                let job = prepare(s);
                let mut p = lock(&pool);
                match job {
                    Ok(j) if j.s.alone => p.alone.push_back(j),
                    Ok(j) => p.ready.push(j),
                    Err(e) => {
                        println!("test {name} ... FAILED (cannot prepare it: {e})");
                        p.failed += 1;
                    }
                }
                changed.notify_all();
            }
            lock(&pool).preparing = false;
            changed.notify_all();
        });
        for _ in 0..slots {
            scope.spawn(|| {
                loop {
                    let mut p = lock(&pool);
                    let (job, need) = loop {
                        let longest = p
                            .ready
                            .iter()
                            .enumerate()
                            .max_by_key(|(i, j)| (j.s.timeout_s, std::cmp::Reverse(*i)))
                            .map(|(i, _)| i);
                        if let Some(i) = longest.filter(|_| p.running < slots) {
                            p.running += 1;
                            break (p.ready.remove(i), 1);
                        }
                        if p.ready.is_empty() && !p.preparing && p.running == 0 {
                            let Some(j) = p.alone.pop_front() else {
                                return;
                            };
                            p.running += slots;
                            break (j, slots);
                        }
                        p = changed.wait(p).unwrap_or_else(PoisonError::into_inner);
                    };
                    drop(p);
                    let (ok, report) = run_job(&job);
                    let mut p = lock(&pool);
                    print!("{report}");
                    if ok {
                        p.passed += 1;
                    } else {
                        p.failed += 1;
                    }
                    p.running -= need;
                    changed.notify_all();
                }
            });
        }
    });
    let p = lock(&pool);
    (p.passed, p.failed)
}

/// Runs one scenario and judges it: (passed, the lines to print).
fn run_job(job: &Job) -> (bool, String) {
    use std::fmt::Write;
    let s = &job.s;
    let expect = s.expect;
    let stop = move |log: &str| expect.iter().all(|e| log.contains(e));
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(s.timeout_s)),
        log_path: job.log_path.clone(),
        echo: false,
        interactive: false,
        input: s
            .input
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        stop_when: (s.ending == Ending::StopWhenSeen).then_some(&stop as &dyn Fn(&str) -> bool),
    };
    let mut out = String::new();
    let t = Instant::now();
    let mut r = match qemu::run(&job.iso, &job.machine, s.name, &opts) {
        Ok(r) => r,
        Err(e) => {
            return (
                false,
                format!("test {} ... FAILED (cannot run QEMU: {e})\n", s.name),
            );
        }
    };
    if r.outcome == Outcome::Signalled(SIGABRT) {
        // QEMU stopped on an assertion of its own (printed above, e.g. TCG's
        // `iotlb_to_section` while Linux sizes PCI BARs): a fault of the emulator, not a
        // verdict on Hestia. The scenario runs once more, from a fresh disk.
        let _ = writeln!(
            out,
            "test {} ... QEMU aborted; running it once more",
            s.name
        );
        let again = s
            .data_disk
            .map(|d| make_data_disk(s.name, &d).map(|_| ()))
            .transpose()
            .map_err(|e| e.to_string())
            .and_then(|_| {
                qemu::run(&job.iso, &job.machine, s.name, &opts).map_err(|e| e.to_string())
            });
        match again {
            Ok(again) => r = again,
            Err(e) => {
                let _ = writeln!(
                    out,
                    "test {} ... FAILED (cannot run QEMU again: {e})",
                    s.name
                );
                return (false, out);
            }
        }
    }
    let ready = r.ready_after.map_or(String::new(), |d| {
        format!(", ready after {:.2} s", d.as_secs_f64())
    });
    let verdict = judge(s, &r.log, r.outcome).and_then(|()| {
        match (
            s.data_disk.and_then(|d| d.written),
            job.machine.disks.first(),
        ) {
            (Some(w), Some(img)) => check_written(img, w).map_err(|e| vec![e]),
            _ => Ok(()),
        }
    });
    let secs = t.elapsed().as_secs_f64();
    match verdict {
        Ok(()) => {
            let _ = writeln!(out, "test {} ... ok ({secs:.1} s{ready})", s.name);
            (true, out)
        }
        Err(why) => {
            let _ = writeln!(
                out,
                "test {} ... FAILED ({secs:.1} s, {:?})",
                s.name, r.outcome
            );
            for w in why {
                let _ = writeln!(out, "    {w}");
            }
            let _ = writeln!(
                out,
                "    --- last serial lines ({}) ---\n{}",
                opts.log_path.display(),
                qemu::tail(&r.log, 100)
            );
            (false, out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cargo_counts;

    #[test]
    fn sums_cargo_result_lines() {
        let out = "test result: ok. 31 passed; 0 failed; 0 ignored\nnoise\ntest result: FAILED. 2 passed; 1 failed; 0 ignored\n";
        assert_eq!(parse_cargo_counts(out), (33, 1));
        assert_eq!(parse_cargo_counts("nothing"), (0, 0));
    }
}
