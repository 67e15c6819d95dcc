//! `cargo xtask`: Hestia's only entry point for building, booting and testing.
//!
//! Commands: `build`, `iso`, `run`, `test`, `check`, `bench`, `fuzz-host`, `deb`. `run` follows
//! the tooling contract of DESIGN.md: exit status 0 only when Hestia powered off cleanly.

mod bench;
mod check;
mod cpio;
mod deb;
mod disk;
mod dom0;
mod domu;
mod fuzz;
mod kernel;
mod kmod;
mod layers;
mod qemu;
mod rootfs;
mod test;
mod tools;
mod trace;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use hestia_tests::{FATAL_MARKERS, Firmware, Outcome, POWEROFF_MARKER};
use kernel::{Flavor, Modules};
use qemu::{Accel, Machine, RunOptions};

/// Errors are messages for the user.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The repository root.
pub fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Where generated files go.
pub fn target_dir() -> PathBuf {
    root_dir().join("target")
}

/// Runs a command, failing on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !status.success() {
        return Err(format!("{cmd:?} failed ({status})").into());
    }
    Ok(())
}

const USAGE: &str = "usage: cargo xtask <command> [options]

commands:
  build                 build the hypervisor ELF (target/kernel/...)
  iso                   build the bootable BIOS+UEFI image (target/hestia.iso)
  run [options]         boot Hestia in QEMU, serial on this terminal; by default with Debian 12's
                        Linux as dom0 with Xen's toolstack (xl, oxenstored, xenconsoled) and a
                        bash shell (not on a terminal: `poweroff` is typed at the first prompt)
      --dom0-userland xen|libvirt|minimal
                          dom0's initramfs: Debian's xen-utils-4.17 and its dependencies (xen,
                          the default), the same with libvirtd and virsh (libvirt: virsh -c
                          xen:/// define /etc/libvirt/debian-pv.xml) or busybox alone
                          (minimal); dom0 command-line words:
                          hestia.script=xl-smoke runs xl's read-only commands and powers off,
                          hestia.script=xl-domu boots /etc/xen/debian-pv.cfg (Debian's Linux)
                          with xl create -c, hestia.xenstored=c starts C xenstored
      --dom0 KERNEL       dom0 kernel (ELF or bzImage; any Xen PV kernel) instead of Debian's
      --initrd FILE       dom0 initrd
      --dom0-cmdline STR  dom0 command line
      --no-dom0           boot Hestia without dom0 (alone, or with --domu domains only)
      --domu KERNEL[,ramdisk=FILE][,cmdline=\"...\"][,mem=MIB][,vcpus=N][,weight=W][,cap=C][,cpus=LIST]
                          (KERNEL 'debian-linux': Debian's Linux with the busybox initramfs)
                          a boot-time domU (repeatable; any kernel --dom0 takes; mem 128 MiB
                          and 1 vCPU unless given): its modules follow dom0's and a domU= entry
                          naming them goes on Hestia's command line
      --disk FILE         attach a raw disk image as an extra virtio disk (repeatable)
      --nics [MODEL:]N    N more NICs (default model virtio-net-pci), all on one QEMU hub
                          (repeatable: --nics e1000:1 --nics 1)
      --device SPEC       an extra QEMU -device (repeatable), e.g. edu
      --hv-cmdline STR    Hestia command line (e.g. 'loglvl=debug noreboot')
      --smp N             CPUs (default 2)
      --mem MIB           RAM in MiB (default 1024)
      --accel auto|kvm|tcg  (default auto: KVM only with real VMX/SVM)
      --firmware bios|uefi  (default bios)
      --cpu MODEL         QEMU CPU model (default qemu64 under TCG, host under KVM)
      --timeout SECS      give up after SECS (default: none on a terminal, else 300)
      --test-hooks        boot the build with test hooks (selftest=...)
      --gdb               wait for gdb on localhost:1234 and print the command to attach
  dom0 [xen|libvirt|minimal]
                        build dom0's Debian kernel and initramfs (xen userland by default)
                        and print their paths (e.g. for the Xen rig's --dom0 K --initrd I)
  test [FILTER [SEED]]  host unit tests and QEMU scenarios (FILTER: scenario names only); SEED
                        replays a fuzz run (`cargo xtask test fuzz 0x1234`, as the guest prints)
  fuzz [options]        one structured fuzz run (the fuzz-hypercalls scenario)
      --calls N           hypercalls in all (default 1000000, as in CI)
      --seed S            replay seed S instead of a fresh one
      --known             also the requests that reach the holes of issue 8 still open
      --accel auto|kvm|tcg
  check                 rustfmt, clippy (host and kernel target)
  deb [--check-reproducible]
                        the Debian package hestia-hypervisor (target/deb/), checked by lintian
                        when installed; --check-reproducible builds it twice and compares
  bench [xl|io|icount|trace]
                        measured figures (medians) and Hestia/Xen ratios when the Xen rig is
                        there (HESTIA_XEN_REF) (xl: only the toolstack's create/destroy rounds;
                        io: disk, TCP and ping of Linux domUs against dom0's own and Linux
                        alone, not in the default run; icount: the guest's figures in executed
                        instructions; trace: the instructions of one null hypercall and one
                        event send + upcall, per function)
  fuzz-host [TARGET] [--time SECS]
                        libFuzzer targets of hestia-core's parsers and PV MMU on the host
                        (all, or those whose name contains TARGET; 60 s each by default)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => kernel::build(Flavor::Release).map(|p| println!("{}", p.display())),
        Some("iso") => iso().map(|p| println!("{}", p.display())),
        Some("run") => cmd_run(&args[1..]),
        Some("dom0") => cmd_dom0(args.get(1).map(String::as_str)),
        Some("test") => cmd_test(&args[1..]),
        Some("fuzz") => cmd_fuzz(&args[1..]),
        Some("check") => check::run(),
        Some("deb") => deb::cmd(&args[1..]),
        Some("bench") => bench::run(args.get(1).map(String::as_str)),
        Some("fuzz-host") => fuzz::cmd(&args[1..]),
        Some("help" | "-h" | "--help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command '{other}'\n{USAGE}").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn accel_arg(a: &str) -> Result<Accel> {
    match a {
        "auto" => Ok(Accel::Auto),
        "kvm" => Ok(Accel::Kvm),
        "tcg" => Ok(Accel::Tcg),
        a => Err(format!("--accel {a}: expected auto, kvm or tcg").into()),
    }
}

fn cmd_test(args: &[String]) -> Result<()> {
    let accel = if args.iter().any(|a| a == "--kvm") {
        Accel::Kvm
    } else {
        Accel::Auto
    };
    let mut plain = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"));
    let filter = plain.next();
    // A test run fuzzes with one fixed seed, so that it passes or fails the same way each time;
    // `cargo xtask fuzz` explores new seeds.
    let seed = plain.next().map(test::parse_seed).transpose()?;
    let fuzz = test::FuzzArgs {
        seed: Some(seed.unwrap_or(test::CI_FUZZ_SEED)),
        ..test::FuzzArgs::default()
    };
    test::run(filter, accel, fuzz)
}

fn cmd_fuzz(args: &[String]) -> Result<()> {
    let (mut fuzz, mut accel) = (test::FuzzArgs::default(), Accel::Auto);
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--calls" => {
                fuzz.calls = Some(
                    value(args, &mut i, flag)?
                        .parse()
                        .map_err(|_| "--calls needs a number")?,
                )
            }
            "--seed" => fuzz.seed = Some(test::parse_seed(value(args, &mut i, flag)?)?),
            "--accel" => accel = accel_arg(value(args, &mut i, flag)?)?,
            "--known" => fuzz.known = true,
            _ => return Err(format!("unknown option '{flag}'\n{USAGE}").into()),
        }
        i += 1;
    }
    test::run(Some("fuzz-hypercalls"), accel, fuzz)
}

fn iso() -> Result<PathBuf> {
    tools::ensure_system_tools()?;
    let elf = kernel::build(Flavor::Release)?;
    kernel::make_iso("hestia", &elf, "", &Modules::default())
}

fn value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str> {
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .ok_or_else(|| format!("{flag} needs a value").into())
}

/// The user space of `run`'s default dom0 (Debian's Linux).
enum Userland {
    /// Xen's toolstack on Debian's packages ([`rootfs`]).
    Xen,
    /// The same with libvirtd and virsh ([`rootfs::prepare_libvirt`]).
    Libvirt,
    /// busybox alone ([`dom0`]).
    Minimal,
}

impl Userland {
    fn parse(u: &str) -> Result<Userland> {
        match u {
            "xen" => Ok(Userland::Xen),
            "libvirt" => Ok(Userland::Libvirt),
            "minimal" => Ok(Userland::Minimal),
            u => Err(format!("dom0 userland '{u}': expected xen, libvirt or minimal").into()),
        }
    }

    /// dom0's kernel and initramfs.
    fn prepare(&self) -> Result<(PathBuf, PathBuf)> {
        Ok(match self {
            Userland::Xen => {
                let u = rootfs::prepare()?;
                (u.kernel, u.initramfs)
            }
            Userland::Libvirt => {
                let u = rootfs::prepare_libvirt()?;
                (u.kernel, u.initramfs)
            }
            Userland::Minimal => {
                let linux = dom0::prepare()?;
                (linux.kernel, linux.initramfs)
            }
        })
    }
}

fn cmd_dom0(userland: Option<&str>) -> Result<()> {
    let (kernel, initramfs) = Userland::parse(userland.unwrap_or("xen"))?.prepare()?;
    println!(
        "kernel    {}
initramfs {}",
        kernel.display(),
        initramfs.display()
    );
    Ok(())
}

fn cmd_run(args: &[String]) -> Result<()> {
    let mut m = Machine {
        firmware: Firmware::Bios,
        smp: 2,
        mem_mib: 1024,
        accel: Accel::Auto,
        cpu: None,
        gdb: false,
        disks: Vec::new(),
        nics: Vec::new(),
        devices: Vec::new(),
    };
    let mut modules = Modules::default();
    let (mut hv_cmdline, mut dom0_cmdline) = (String::new(), String::new());
    let (mut dom0, mut timeout, mut flavor) = (None, None, Flavor::Release);
    let (mut no_dom0, mut userland) = (false, Userland::Xen);
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--dom0" => dom0 = Some(PathBuf::from(value(args, &mut i, flag)?)),
            "--initrd" => modules.initrd = Some(PathBuf::from(value(args, &mut i, flag)?)),
            "--dom0-cmdline" => dom0_cmdline = value(args, &mut i, flag)?.to_owned(),
            "--hv-cmdline" => hv_cmdline = value(args, &mut i, flag)?.to_owned(),
            "--smp" => {
                m.smp = value(args, &mut i, flag)?
                    .parse()
                    .map_err(|_| "--smp needs a number")?
            }
            "--mem" => {
                m.mem_mib = value(args, &mut i, flag)?
                    .parse()
                    .map_err(|_| "--mem needs a number of MiB")?
            }
            "--timeout" => {
                timeout = Some(Duration::from_secs(
                    value(args, &mut i, flag)?
                        .parse()
                        .map_err(|_| "--timeout needs seconds")?,
                ))
            }
            "--cpu" => m.cpu = Some(value(args, &mut i, flag)?.to_owned()),
            "--accel" => m.accel = accel_arg(value(args, &mut i, flag)?)?,
            "--firmware" => {
                m.firmware = match value(args, &mut i, flag)? {
                    "bios" => Firmware::Bios,
                    "uefi" => Firmware::Uefi,
                    f => return Err(format!("--firmware {f}: expected bios or uefi").into()),
                }
            }
            "--test-hooks" => flavor = Flavor::TestHooks,
            "--disk" => m.disks.push(PathBuf::from(value(args, &mut i, flag)?)),
            "--nics" => {
                let v = value(args, &mut i, flag)?;
                let (model, n) = v.split_once(':').unwrap_or(("virtio-net-pci", v));
                let n: usize = n.parse().map_err(|_| "--nics needs [MODEL:]COUNT")?;
                m.nics.extend(std::iter::repeat_n(model.to_owned(), n));
            }
            "--device" => m.devices.push(value(args, &mut i, flag)?.to_owned()),
            "--no-dom0" => no_dom0 = true,
            "--dom0-userland" => userland = Userland::parse(value(args, &mut i, flag)?)?,
            "--domu" => modules
                .domus
                .push(domu::DomU::parse(value(args, &mut i, flag)?)?),
            "--gdb" => m.gdb = true,
            _ => return Err(format!("unknown option '{flag}'\n{USAGE}").into()),
        }
        i += 1;
    }
    // `debian-linux` as a domU's kernel: Debian's Linux with the busybox initramfs, as dom0's.
    for d in modules.domus.iter_mut() {
        if d.kernel.as_os_str() == "debian-linux" {
            let linux = dom0::prepare()?;
            d.kernel = linux.kernel;
            d.ramdisk = d.ramdisk.take().or(Some(linux.initramfs));
            if d.cmdline.is_empty() {
                d.cmdline = dom0::CMDLINE.to_owned();
            }
        }
    }
    let domu_files = modules
        .domus
        .iter()
        .flat_map(|d| std::iter::once(&d.kernel).chain(&d.ramdisk));
    for p in dom0.iter().chain(modules.initrd.iter()).chain(domu_files) {
        if !p.is_file() {
            return Err(format!("{} does not exist", p.display()).into());
        }
    }
    tools::ensure_system_tools()?;
    let mut input = Vec::new();
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    if dom0.is_none() && !no_dom0 {
        let (kernel, initramfs) = userland.prepare()?;
        dom0 = Some(kernel);
        modules.initrd = modules.initrd.or(Some(initramfs));
        if dom0_cmdline.is_empty() {
            dom0_cmdline = dom0::CMDLINE.to_owned();
        }
        if !interactive {
            input.push((dom0::PROMPT.to_owned(), "poweroff\n".to_owned()));
        }
    }
    modules.dom0 = dom0.map(|d| (d, dom0_cmdline));

    let elf = kernel::build(flavor)?;
    let iso = kernel::make_iso("hestia-run", &elf, &hv_cmdline, &modules)?;
    if m.gdb {
        eprintln!(
            "xtask: QEMU waits for gdb. In another terminal:\n    gdb {} -ex 'target remote localhost:1234' -ex 'hbreak hestia_main' -ex continue",
            elf.display()
        );
    }
    let log_path = target_dir().join("run.log");
    let timeout = timeout.or(if interactive || m.gdb {
        None
    } else {
        Some(Duration::from_secs(300))
    });
    let opts = RunOptions {
        timeout,
        log_path: log_path.clone(),
        echo: true,
        interactive,
        input,
        stop_when: None,
    };
    let r = qemu::run(&iso, &m, "run", &opts)?;
    if let Some(d) = r.ready_after {
        eprintln!(
            "xtask: Hestia's ready line {:.2} s after QEMU started",
            d.as_secs_f64()
        );
    }
    let fatal = FATAL_MARKERS.iter().find(|f| r.log.contains(*f));
    let verdict = match (r.outcome, fatal) {
        (_, Some(f)) => Err(format!(
            "Hestia reported a fatal error ({f:?}); serial log in {}",
            log_path.display()
        )),
        (Outcome::Exited(0), None) if r.log.contains(POWEROFF_MARKER) => Ok(()),
        (Outcome::Exited(0), None) => {
            Err("QEMU exited without Hestia powering off (reset or triple fault)".into())
        }
        (Outcome::Exited(c), None) => Err(format!("QEMU exited with status {c}")),
        (Outcome::TimedOut, None) => Err(format!(
            "timed out after {} s",
            timeout.map_or(0, |t| t.as_secs())
        )),
        (Outcome::Stopped, None) => Err("stopped".into()),
        (Outcome::Signalled(sig), None) => Err(format!("QEMU died from signal {sig}")),
    };
    verdict.map_err(Into::into)
}
