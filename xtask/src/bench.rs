//! `cargo xtask bench`: measured figures, medians, and Hestia/Xen ratios when the Xen 4.17
//! reference rig (`$HESTIA_XEN_REF`, else `../shared/ref/xen-ref`) is present.
//!
//! Figures: QEMU start to Hestia's ready line (median of 5 boots); from the bench guest
//! (`tests/guests/src/bin/bench-hypercalls.rs`, booted as dom0): the null hypercall and the
//! event-channel send-plus-upcall round trips, a grant map+unmap round trip and a 4 KiB grant
//! copy (a grant of dom0 to itself), each a median of 100,000 iterations in TSC cycles; and QEMU start to dom0 user space (Debian's Linux and the busybox initramfs, up to
//! the banner printed just before the shell prompt), median of 5 boots on Hestia, on Xen 4.17
//! and natively with no hypervisor (the same kernel, initramfs, 2 CPUs, 1 GiB, dom0 512 MiB).
//! Under TCG cycles are not hardware cycles: compare ratios from the same run. The rig boots
//! QEMU's i440FX machine, Hestia Q35: the boot figures include that difference.
//!
//! The cost of XPTI (`xpti=on`: every entry and exit switches page tables and, without PCID,
//! flushes the TLB): the guest figures and the Linux boot again with it forced on, as ratios
//! to the same figures without it, on Hestia and (with the rig) on Xen 4.17.
//!
//! The cost of a vCPU context switch: the bench guest with `switch` on its command line, two
//! vCPUs on a one-CPU machine handing a token back and forth by `SCHEDOP_yield` (half a
//! round's median), on Hestia and on Xen 4.17.
//!
//! Event-channel ping-pong between two domains: the bench guest as dom0 (`ping`) and as a
//! boot-time domU (`pong`), median round trip on one CPU and on two (the domU pinned to CPU 1),
//! Hestia only (the rig boots no domU); and the same round trip between two vCPUs of one
//! domain over a loopback inter-domain channel (`loopback`), on Hestia and on Xen 4.17.
//!
//! The toolstack: Debian's xl in the xen dom0 userland (`rootfs/xl-bench.sh`), five rounds of
//! `xl create` of the Debian Linux domU up to its first console line and `xl destroy` of the
//! booted domU up to the domain gone, timed by dom0's clock; medians on Hestia and on Xen 4.17
//! booting the same kernel and root filesystem (Xen with `sched=credit`, Hestia's scheduler).
//! Each create is split into phases by the first `xl -vvv` line of each libxenguest step, so
//! the table shows how much of it is dom0 user space that no hypervisor can speed up.
//!
//! Part `icount` runs the bench guest's figures (not boots, XPTI or Linux) on Hestia and on
//! Xen 4.17 under QEMU's instruction counter (`qemu::Accel::Icount`): each figure is then a
//! count of executed instructions, the same on every run whatever the host's load, a proxy for
//! path length (a string instruction counts once per iteration, a CR3 write as one).
//!
//! Part `trace` counts where the instructions of one null hypercall and of one event send with
//! its upcall go, function by function (`crate::trace`).
//!
//! Split-driver I/O (`rootfs/io-bench.sh`, part `io`, not in the default run: it takes ~10 min
//! per system): a Linux domU's sequential direct I/O on a `file:` disk and on a `phy:` disk (a
//! 256 MiB QEMU virtio disk, [`IO_DISK_MAGIC`] at its start), TCP (iperf3) to dom0 and to a
//! second domU on `xenbr0`, ping to dom0; and the same workload run by dom0 itself (a loop
//! device, the disk, a veth pair into a namespace). Medians of 3 on Hestia, on Xen 4.17 and on
//! Linux with no hypervisor (the native baseline: dom0's part only), and their ratios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hestia_tests::Firmware;

use crate::dom0;
use crate::domu::DomU;
use crate::kernel::{self, Flavor, Modules};
use crate::qemu::{self, Accel, Machine, RunOptions};
use crate::{Result, root_dir, rootfs, target_dir};

const BOOTS: usize = 5;
const BENCH_GUEST: &str = "bench-hypercalls";
const DOM0_MEM: &str = "dom0_mem=64M,max:64M";
const LINUX_DOM0_MEM: &str = "dom0_mem=512M,max:512M";
/// Two vCPUs for the context-switch figure (on a one-CPU machine).
const SWITCH_VCPUS: &str = "dom0_max_vcpus=2";

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

/// The hypervisor option the XPTI figures add.
const XPTI_ON: &str = "xpti=on";

/// Seconds from QEMU start to dom0's user space on Hestia, median of [`BOOTS`]; `extra` is
/// added to Hestia's command line.
fn linux_boots_hestia(
    elf: &Path,
    linux: &dom0::Dom0Linux,
    machine: &Machine,
    extra: &str,
) -> Result<Vec<f64>> {
    let modules = Modules {
        dom0: Some((
            linux.kernel.clone(),
            format!("{} {}", dom0::CMDLINE, dom0::BENCH_WORD),
        )),
        initrd: Some(linux.initramfs.clone()),
        domus: Vec::new(),
    };
    let iso = kernel::make_iso(
        "bench-linux",
        elf,
        &format!("{LINUX_DOM0_MEM} {extra}"),
        &modules,
    )?;
    let stop = |log: &str| log.contains(dom0::BANNER);
    let mut times = Vec::new();
    for _ in 0..BOOTS {
        let o = RunOptions {
            timeout: Some(Duration::from_secs(300)),
            log_path: target_dir().join("bench-linux-hestia.log"),
            echo: false,
            interactive: false,
            input: Vec::new(),
            stop_when: Some(&stop),
        };
        if let Some(t) = qemu::run(&iso, machine, "bench-linux", &o)?.stopped_after {
            times.push(t.as_secs_f64());
        }
    }
    Ok(times)
}

/// A QEMU wrapper for the rig that adds `-machine q35`: Hestia's runs use Q35, so Xen and the
/// native kernel get the same chipset (the rig's default is i440FX).
fn q35_wrapper() -> Result<PathBuf> {
    q35_wrapper_with("qemu-q35", &[])
}

/// A QEMU for the rig that counts instructions ([`Accel::Icount`]), on the rig's own chipset.
fn icount_wrapper() -> Result<PathBuf> {
    qemu_wrapper("qemu-icount", &qemu::ICOUNT_ARGS.join(" "))
}

/// [`q35_wrapper`] that also attaches `disks` as virtio disks, written as `target/NAME`.
fn q35_wrapper_with(name: &str, disks: &[PathBuf]) -> Result<PathBuf> {
    let drives: String = disks
        .iter()
        .map(|d| format!(" -drive file={},format=raw,if=virtio", d.display()))
        .collect();
    qemu_wrapper(name, &format!("-machine q35{drives}"))
}

/// Writes `target/NAME`, a QEMU for the rig's `--qemu` that adds `args` to its own.
fn qemu_wrapper(name: &str, args: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = target_dir().join(name);
    std::fs::write(
        &p,
        format!("#!/bin/sh\nexec qemu-system-x86_64 {args} \"$@\"\n"),
    )?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    Ok(p)
}

/// The same on the reference rig (on the Q35 chipset, as Hestia's): with Xen (`extra` added to
/// its command line), or natively.
fn linux_boots_rig(
    rig: &Path,
    linux: &dom0::Dom0Linux,
    native: bool,
    extra: &str,
) -> Result<Vec<f64>> {
    let qemu = q35_wrapper()?;
    let what = if native { "natively" } else { "on Xen 4.17" };
    let mut times = Vec::new();
    for i in 0..BOOTS {
        eprintln!("bench: Linux {what} {extra}, boot {} of {BOOTS} ...", i + 1);
        let mut c = Command::new(rig);
        c.arg("--dom0")
            .arg(&linux.kernel)
            .arg("--initrd")
            .arg(&linux.initramfs)
            .args([
                "--dom0-cmdline",
                &format!("{} {}", dom0::CMDLINE, dom0::BENCH_WORD),
                "--xen-cmdline",
                &format!("{LINUX_DOM0_MEM} bootscrub=0 {extra}"),
                "--smp",
                "2",
                "--mem",
                "1024",
            ])
            .arg("--qemu")
            .arg(&qemu)
            .args([
                "--marker",
                &format!("up={}", dom0::BANNER),
                "--timeout",
                "300",
            ]);
        if native {
            c.arg("--native");
        }
        let out = c.output()?;
        let log = String::from_utf8_lossy(&out.stdout);
        let name = if native { "native" } else { "xen" };
        std::fs::write(target_dir().join(format!("bench-linux-{name}.log")), &*log)?;
        if let Some(t) = rig_marker(&log, "up") {
            times.push(t);
        }
    }
    Ok(times)
}

/// Seconds of marker `name` in the rig's closing JSON line (`"markers": {"up": 9.1, ...}`).
fn rig_marker(log: &str, name: &str) -> Option<f64> {
    let json = log.lines().rev().find(|l| l.starts_with("{\"markers\""))?;
    let key = format!("\"{name}\": ");
    let rest = &json[json.find(&key)? + key.len()..];
    rest.split([',', '}']).next()?.trim().parse().ok()
}

fn xen_ref() -> Option<PathBuf> {
    let p = std::env::var_os("HESTIA_XEN_REF")
        .map(PathBuf::from)
        .unwrap_or_else(|| root_dir().join("../shared/ref/xen-ref"));
    p.is_file().then_some(p)
}

/// One run of the bench guest on the rig: Xen's command line `extra`, `smp` CPUs, the guest's
/// command line `cmdline`; its log goes to `bench-xen{suffix}.log`.
fn run_on_xen(
    rig: &Path,
    qemu: Option<&Path>,
    guest: &Path,
    extra: &str,
    smp: u32,
    cmdline: &str,
    suffix: &str,
) -> Result<Vec<(String, u64)>> {
    eprintln!(
        "bench: running {} as dom0 on the Xen reference rig ...",
        guest.display()
    );
    let mut c = Command::new(rig);
    c.arg("--dom0").arg(guest).args([
        "--xen-cmdline",
        &format!("{DOM0_MEM} bootscrub=0 {extra}"),
        "--dom0-cmdline",
        cmdline,
        "--smp",
        &smp.to_string(),
        "--timeout",
        "300",
    ]);
    if let Some(q) = qemu {
        c.arg("--qemu").arg(q);
    }
    let out = c.output()?;
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(target_dir().join(format!("bench-xen{suffix}.log")), &log)?;
    Ok(parse_bench(&log))
}

/// dom0's command line for the xen userland's canned script `script` (`rootfs/<script>.sh`).
fn script_cmdline(script: &str) -> String {
    format!("console=hvc0 earlyprintk=xen hestia.script={script}")
}

/// The `BENCH` lines of the canned script `script` in the xen userland on Hestia, with `disks`
/// attached (an error if there are none); the log goes to `bench-<script>-hestia.log`.
fn script_on_hestia(
    elf: &Path,
    xen: &rootfs::XenUserland,
    machine: &Machine,
    script: &str,
    disks: Vec<PathBuf>,
) -> Result<Vec<(String, u64)>> {
    eprintln!("bench: {script} on Hestia ...");
    let modules = Modules {
        dom0: Some((xen.kernel.clone(), script_cmdline(script))),
        initrd: Some(xen.initramfs.clone()),
        domus: Vec::new(),
    };
    let name = format!("bench-{script}");
    let iso = kernel::make_iso(&name, elf, LINUX_DOM0_MEM, &modules)?;
    let m = Machine {
        disks,
        ..machine.clone()
    };
    let log_path = target_dir().join(format!("{name}-hestia.log"));
    let o = RunOptions {
        timeout: Some(Duration::from_secs(1200)),
        log_path: log_path.clone(),
        echo: false,
        interactive: false,
        input: Vec::new(),
        stop_when: None,
    };
    let lines = parse_bench(&qemu::run(&iso, &m, &name, &o)?.log);
    if lines.is_empty() {
        return Err(format!("{script} printed no figures (log: {})", log_path.display()).into());
    }
    Ok(lines)
}

/// The same on the rig (Q35 as Hestia's runs, `disks` attached): on Xen 4.17 (`sched=credit`,
/// Hestia's scheduler), or natively; the log goes to `bench-<script>-{xen,native}.log`.
fn script_on_rig(
    rig: &Path,
    xen: &rootfs::XenUserland,
    script: &str,
    disks: &[PathBuf],
    native: bool,
) -> Result<Vec<(String, u64)>> {
    let name = if native { "native" } else { "xen" };
    eprintln!("bench: {script} {name} ...");
    let mut c = Command::new(rig);
    c.arg("--dom0")
        .arg(&xen.kernel)
        .arg("--initrd")
        .arg(&xen.initramfs)
        .args([
            "--dom0-cmdline",
            &script_cmdline(script),
            "--xen-cmdline",
            &format!("{LINUX_DOM0_MEM} bootscrub=0 sched=credit"),
            "--smp",
            "2",
            "--mem",
            "1024",
            "--timeout",
            "1200",
        ])
        .arg("--qemu")
        .arg(q35_wrapper_with(&format!("qemu-q35-{script}"), disks)?);
    if native {
        c.arg("--native");
    }
    let log = String::from_utf8_lossy(&c.output()?.stdout).into_owned();
    std::fs::write(
        target_dir().join(format!("bench-{script}-{name}.log")),
        &log,
    )?;
    Ok(parse_bench(&log))
}

/// Median of every `figure` in `lines` (milliseconds) and how many there were.
fn median_of(lines: &[(String, u64)], figure: &str) -> (Option<f64>, usize) {
    let v: Vec<f64> = lines
        .iter()
        .filter(|(n, _)| n == figure)
        .map(|(_, ms)| *ms as f64)
        .collect();
    let n = v.len();
    (median(v), n)
}

/// Prints the xl table: Hestia's and Xen's medians in seconds and their ratio.
fn print_xl(hestia: &[(String, u64)], xen: &[(String, u64)]) {
    println!();
    println!(
        "{:<44} {:>8} {:>8} {:>12}",
        "xl (Debian's Linux domU), s", "Hestia", "Xen", "Hestia/Xen"
    );
    for (figure, what) in [
        ("xl_create_to_console_ms", "create to first console line"),
        ("xl_phase_start_ms", "  xl start to kernel read"),
        ("xl_phase_read_kernel_ms", "  kernel read"),
        ("xl_phase_decompress_ms", "  decompression (dom0 user)"),
        ("xl_phase_elf_parse_ms", "  ELF parse (dom0 user)"),
        ("xl_phase_build_ms", "  memory and image build"),
        ("xl_phase_devices_unpause_ms", "  devices, hotplug, unpause"),
        ("xl_phase_first_line_ms", "  xl returned to first line"),
        ("xl_destroy_ms", "destroy to domain gone"),
    ] {
        let ((h, hn), (x, xn)) = (median_of(hestia, figure), median_of(xen, figure));
        let secs = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}", v / 1000.0));
        println!(
            "{:<44} {:>8} {:>8} {:>12}",
            format!("{what} (medians of {hn}/{xn})"),
            secs(h),
            secs(x),
            ratio(h, x)
        );
    }
}

/// The xl rounds on Hestia and (with the rig) on Xen, and their table.
fn xl_part(elf: &Path, machine: &Machine) -> Result<()> {
    let xen_userland = rootfs::prepare()?;
    let on_hestia = script_on_hestia(elf, &xen_userland, machine, "xl-bench", Vec::new())?;
    let on_xen = match xen_ref() {
        Some(rig) => script_on_rig(&rig, &xen_userland, "xl-bench", &[], false)?,
        None => Vec::new(),
    };
    print_xl(&on_hestia, &on_xen);
    Ok(())
}

/// The first bytes of the io part's data disk (`rootfs/io-bench.sh` finds it by them).
const IO_DISK_MAGIC: &[u8] = b"hestia-bench-disk";
/// The io part's data disk: 256 MiB, sparse, [`IO_DISK_MAGIC`] first.
fn io_disk() -> Result<PathBuf> {
    let p = target_dir().join("bench-io-disk.img");
    std::fs::write(&p, IO_DISK_MAGIC)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)?
        .set_len(256 << 20)?;
    Ok(p)
}

/// `a / b` with two decimals, `-` when either is missing.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// The header of a Hestia / Xen / native table titled `title`.
fn three_way_header(title: &str) {
    println!();
    println!(
        "{title:<36} {:>8} {:>8} {:>8} {:>12} {:>14} {:>11}",
        "Hestia", "Xen", "native", "Hestia/Xen", "Hestia/native", "Xen/native"
    );
}

/// One row of a Hestia / Xen / native table: the three figures and their ratios.
fn three_way_row(what: &str, h: Option<f64>, x: Option<f64>, n: Option<f64>) {
    let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    println!(
        "{what:<36} {:>8} {:>8} {:>8} {:>12} {:>14} {:>11}",
        show(h),
        show(x),
        show(n),
        ratio(h, x),
        ratio(h, n),
        ratio(x, n)
    );
}

/// The io part: its rounds on Hestia, Xen 4.17 and natively, and the table.
fn io_part(elf: &Path, machine: &Machine) -> Result<()> {
    let xen_userland = rootfs::prepare()?;
    let disks = vec![io_disk()?];
    let hestia = script_on_hestia(elf, &xen_userland, machine, "io-bench", disks.clone())?;
    let (xen, native) = match xen_ref() {
        Some(rig) => (
            script_on_rig(&rig, &xen_userland, "io-bench", &disks, false)?,
            script_on_rig(&rig, &xen_userland, "io-bench", &disks, true)?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    three_way_header("I/O (medians of 3)");
    // (what, the figure on Hestia and Xen, the native run's figure, divisor to the unit).
    let rows = [
        (
            "domU file: write, MiB/s",
            "domu_file_write",
            "dom0_file_write",
            1024.0,
        ),
        (
            "domU file: read, MiB/s",
            "domu_file_read",
            "dom0_file_read",
            1024.0,
        ),
        (
            "domU phy: write, MiB/s",
            "domu_phy_write",
            "dom0_phy_write",
            1024.0,
        ),
        (
            "domU phy: read, MiB/s",
            "domu_phy_read",
            "dom0_phy_read",
            1024.0,
        ),
        (
            "dom0 file: write, MiB/s",
            "dom0_file_write",
            "dom0_file_write",
            1024.0,
        ),
        (
            "dom0 file: read, MiB/s",
            "dom0_file_read",
            "dom0_file_read",
            1024.0,
        ),
        (
            "dom0 phy: write, MiB/s",
            "dom0_phy_write",
            "dom0_phy_write",
            1024.0,
        ),
        (
            "dom0 phy: read, MiB/s",
            "dom0_phy_read",
            "dom0_phy_read",
            1024.0,
        ),
        (
            "TCP domU to dom0, Mbit/s",
            "domu_tcp_dom0",
            "dom0_tcp_veth",
            1000.0,
        ),
        (
            "TCP domU to domU, Mbit/s",
            "domu_tcp_domu",
            "dom0_tcp_veth",
            1000.0,
        ),
        (
            "TCP dom0 to netns (veth), Mbit/s",
            "dom0_tcp_veth",
            "dom0_tcp_veth",
            1000.0,
        ),
        (
            "ping domU to dom0, ms",
            "domu_ping_dom0",
            "dom0_ping_veth",
            1000.0,
        ),
        (
            "ping dom0 to netns (veth), ms",
            "dom0_ping_veth",
            "dom0_ping_veth",
            1000.0,
        ),
    ];
    for (what, figure, base, unit) in rows {
        let value = |v: &[(String, u64)], f: &str| median_of(v, f).0.map(|x| x / unit);
        three_way_row(
            what,
            value(&hestia, figure),
            value(&xen, figure),
            value(&native, base),
        );
    }
    Ok(())
}

/// Runs the benchmarks and prints the tables; `part` `xl` or `io` runs only that one.
pub fn run(part: Option<&str>) -> Result<()> {
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

    let icount = match part {
        None => false,
        Some("icount") => true,
        Some("xl") => return xl_part(&elf, &machine),
        Some("io") => return io_part(&elf, &machine),
        Some("trace") => return crate::trace::run(&elf, &guests.join(BENCH_GUEST), DOM0_MEM),
        Some(p) => {
            return Err(
                format!("bench part '{p}': expected icount, trace, xl, io or nothing").into(),
            );
        }
    };
    let (machine, rig_qemu) = if icount {
        let m = Machine {
            accel: Accel::Icount,
            ..machine
        };
        (m, Some(icount_wrapper()?))
    } else {
        (machine, None)
    };
    let rig_qemu = rig_qemu.as_deref();

    let iso = kernel::make_iso("bench-boot", &elf, "", &Modules::default())?;
    let mut boots = Vec::new();
    for _ in 0..if icount { 0 } else { BOOTS } {
        if let Some(d) = qemu::run(&iso, &machine, "bench-boot", &opts("boot"))?.ready_after {
            boots.push(d.as_secs_f64());
        }
    }

    let guest = guests.join(BENCH_GUEST);
    let bench_guest = |extra: &str,
                       smp: u32,
                       cmdline: &str,
                       domus: Vec<DomU>,
                       log: &str|
     -> Result<Vec<(String, u64)>> {
        let modules = Modules {
            dom0: Some((guest.clone(), cmdline.to_owned())),
            initrd: None,
            domus,
        };
        let iso = kernel::make_iso(
            "bench-guest",
            &elf,
            &format!("{DOM0_MEM} {extra}"),
            &modules,
        )?;
        let m = Machine {
            smp,
            ..machine.clone()
        };
        Ok(parse_bench(
            &qemu::run(&iso, &m, "bench-guest", &opts(log))?.log,
        ))
    };
    let hestia = bench_guest("", 2, "", Vec::new(), "hestia")?;
    let hestia_xpti = if icount {
        Vec::new()
    } else {
        bench_guest(XPTI_ON, 2, "", Vec::new(), "hestia-xpti")?
    };
    let hestia_switch = bench_guest(SWITCH_VCPUS, 1, "switch", Vec::new(), "hestia-switch")?;
    let pong = |cpus: Option<&str>| DomU {
        kernel: guest.clone(),
        ramdisk: None,
        cmdline: "pong".into(),
        mem_mib: 16,
        vcpus: 1,
        weight: None,
        cap: None,
        cpus: cpus.map(str::to_owned),
    };
    let mut hestia_pingpong = bench_guest("", 1, "ping one-cpu", vec![pong(None)], "pingpong-1")?;
    hestia_pingpong.extend(bench_guest(
        "",
        2,
        "ping",
        vec![pong(Some("1"))],
        "pingpong-2",
    )?);
    let hestia_loopback = bench_guest(SWITCH_VCPUS, 2, "loopback", Vec::new(), "hestia-loopback")?;
    let (xen, xen_xpti, xen_switch, xen_loopback) = match xen_ref() {
        Some(rig) => (
            run_on_xen(&rig, rig_qemu, &guest, "", 2, "", "")?,
            if icount {
                Vec::new()
            } else {
                run_on_xen(&rig, rig_qemu, &guest, XPTI_ON, 2, "", "-xpti")?
            },
            run_on_xen(&rig, rig_qemu, &guest, SWITCH_VCPUS, 1, "switch", "-switch")?,
            run_on_xen(
                &rig,
                rig_qemu,
                &guest,
                SWITCH_VCPUS,
                2,
                "loopback",
                "-loopback",
            )?,
        ),
        None => (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
    };

    println!(
        "{:<36} {:>14} {:>14} {:>12}",
        if icount {
            "figure (instructions: TCG -icount)"
        } else {
            "figure (TCG)"
        },
        "Hestia",
        "Xen 4.17",
        "Hestia/Xen"
    );
    let boot = median(boots.clone());
    if !icount {
        println!(
            "{:<36} {:>14} {:>14} {:>12}",
            format!("boot to ready, s (median of {})", boots.len()),
            boot.map_or("-".into(), |b| format!("{b:.2}")),
            "-",
            "-"
        );
    }
    let no_xen = Vec::new();
    let pairs = hestia
        .iter()
        .map(|p| (p, &xen, "1e5"))
        .chain(hestia_switch.iter().map(|p| (p, &xen_switch, "1e5")))
        .chain(hestia_loopback.iter().map(|p| (p, &xen_loopback, "1e4")))
        .chain(hestia_pingpong.iter().map(|p| (p, &no_xen, "1e4")));
    for ((name, h), xen, n) in pairs {
        let x = xen.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let ratio = x
            .filter(|&x| x > 0)
            .map_or("-".into(), |x| format!("{:.2}", *h as f64 / x as f64));
        println!(
            "{:<36} {:>14} {:>14} {:>12}",
            format!("{name} (median of {n})"),
            h,
            x.map_or("-".into(), |x| x.to_string()),
            ratio
        );
    }
    let no_figures = |log: &str| {
        Err(format!(
            "the bench guest printed no figures (log: {})",
            target_dir().join(format!("bench-{log}.log")).display()
        )
        .into())
    };
    if icount {
        // Boots, XPTI and Linux are timed, not counted: only the guest's figures.
        return if hestia.is_empty() {
            no_figures("hestia")
        } else {
            Ok(())
        };
    }
    let value = |v: &[(String, u64)], name: &str| v.iter().find(|(n, _)| n == name).map(|p| p.1);
    let cost = |on: Option<u64>, off: Option<u64>| match (on, off) {
        (Some(on), Some(off)) if off > 0 => format!("{:.2}", on as f64 / off as f64),
        _ => "-".into(),
    };
    println!();
    println!(
        "{:<36} {:>14} {:>14} {:>14}",
        "XPTI cost, xpti=on / off (TCG)", "Hestia", "Xen 4.17", "Hestia/Xen on"
    );
    for (name, _) in &hestia {
        let (h_on, x_on) = (value(&hestia_xpti, name), value(&xen_xpti, name));
        println!(
            "{:<36} {:>14} {:>14} {:>14}",
            name,
            cost(h_on, value(&hestia, name)),
            cost(x_on, value(&xen, name)),
            cost(h_on, x_on)
        );
    }

    let linux = dom0::prepare()?;
    let on_hestia = linux_boots_hestia(&elf, &linux, &machine, "")?;
    let on_hestia_xpti = linux_boots_hestia(&elf, &linux, &machine, XPTI_ON)?;
    let (on_xen, on_xen_xpti, native) = match xen_ref() {
        Some(rig) => (
            linux_boots_rig(&rig, &linux, false, "")?,
            linux_boots_rig(&rig, &linux, false, XPTI_ON)?,
            linux_boots_rig(&rig, &linux, true, "")?,
        ),
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    let (h, x, n) = (median(on_hestia), median(on_xen), median(native));
    let secs = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    three_way_header(&format!("Linux to user space, s (median of {BOOTS})"));
    three_way_row("", h, x, n);
    let (hx, xx) = (median(on_hestia_xpti), median(on_xen_xpti));
    println!(
        "{:<36} {:>8} {:>8} {:>12} {:>14} {:>11}",
        "  with xpti=on, s", "Hestia", "Xen", "Hestia/Xen", "Hestia on/off", "Xen on/off"
    );
    println!(
        "{:<36} {:>8} {:>8} {:>12} {:>14} {:>11}",
        "",
        secs(hx),
        secs(xx),
        ratio(hx, xx),
        ratio(hx, h),
        ratio(xx, x)
    );
    xl_part(&elf, &machine)?;

    if hestia.is_empty() || hestia_xpti.is_empty() {
        return no_figures(if hestia.is_empty() {
            "hestia"
        } else {
            "hestia-xpti"
        });
    }
    if xen_ref().is_none() {
        println!(
            "(no Xen reference rig: set HESTIA_XEN_REF, or place it at ../shared/ref/xen-ref; no ratios)"
        );
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
        let rig = "noise\n{\"markers\": {\"xen\": 1.2, \"up\": 9.25}, \"timeout\": false}\n";
        assert_eq!(rig_marker(rig, "up"), Some(9.25));
        assert_eq!(rig_marker(rig, "xen"), Some(1.2));
        assert_eq!(rig_marker(rig, "init"), None);
    }
}
