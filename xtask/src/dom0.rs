//! dom0's Linux: Debian 12's stock kernel (`linux-image-amd64`) and `busybox-static`, fetched
//! with the package tools (`apt-get download`, `dpkg-deb`; nothing else is downloaded), cached
//! under `target/debian/`, and an initramfs whose `/init` (busybox init) loads the modules for
//! QEMU's disks and NICs and ext4 (Debian builds them as modules), mounts proc, sys and dev, and
//! keeps a shell on the console (`hvc0` under a hypervisor; busybox's `cttyhack` finds it, so
//! the same image also boots natively for the benchmark's comparison). The exact package versions and SHA-256 sums are printed and kept in
//! `target/debian/packages.txt`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cpio::Archive;
use crate::kmod;
use crate::{Result, target_dir};

/// The Debian release whose stock kernel dom0 runs.
const RELEASE: &str = "bookworm";
/// The shell prompt the initramfs sets (tests wait for it).
pub const PROMPT: &str = "dom0:/# ";
/// Command line for dom0: Xen's console for early output and the shell.
pub const CMDLINE: &str = "console=hvc0 earlyprintk=xen";
/// The line the initramfs prints once user space is up, just before it starts the shell.
pub const BANNER: &str = "hestia-dom0: Linux";
/// A dom0 command-line word that makes the initramfs power off right after [`BANNER`] (boot-time
/// benchmarks, also natively and on Xen).
pub const BENCH_WORD: &str = "hestia.bench";
/// Modules the initramfs loads (with their dependencies): virtio and e1000 disks and NICs,
/// ext4 and the checksum it needs, veth, and Xen's block and network front ends for a domU.
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "e1000",
    "crc32c_generic",
    "ext4",
    "veth",
    // A domU's split-driver front ends (the same initramfs boots Linux domUs).
    "xen_blkfront",
    "xen_netfront",
];

/// The files a dom0 boot needs.
pub struct Dom0Linux {
    /// The kernel (Debian's vmlinuz, a bzImage).
    pub kernel: PathBuf,
    /// The initramfs (uncompressed cpio).
    pub initramfs: PathBuf,
}

/// Where the packages, their unpacked files and the initramfs images are cached.
pub fn debian_dir() -> PathBuf {
    target_dir().join("debian")
}

/// The cached `.deb` of `package`, if any.
fn cached(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .max()
}

/// Downloads each `(package, spec)` (spec: `package` or `package=version`) into `dir` unless a
/// `.deb` of that package is cached there, with one `apt-get` call for all that are missing,
/// apt's target release set to `release` (a suite name or apt's `/regex/` of suite names). The
/// `.deb`s, in the order asked.
pub fn download(dir: &Path, packages: &[(&str, &str)], release: &str) -> Result<Vec<PathBuf>> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(p, _)| cached(dir, p).is_none())
        .map(|(_, spec)| *spec)
        .collect();
    if !missing.is_empty() {
        let status = Command::new("apt-get")
            .args(["download", "-q", "-t", release])
            .args(&missing)
            .current_dir(dir)
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !status.success() {
            return Err(format!(
                "apt-get download {} failed: dom0 needs Debian {RELEASE}'s packages in apt's \
                 lists (run `apt-get update`; on another distribution add {RELEASE} to the apt \
                 sources)",
                missing.join(" ")
            )
            .into());
        }
    }
    packages
        .iter()
        .map(|(p, _)| cached(dir, p).ok_or_else(|| format!("apt-get left no {p} .deb").into()))
        .collect()
}

/// The trimmed standard output of `cmd`, which must succeed.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A control field of `deb`.
fn field(deb: &Path, name: &str) -> Result<String> {
    output(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))
}

/// Unpacks `deb`'s data into `dest` with `tar -x` and `tar_args` (member patterns, options).
pub fn extract(deb: &Path, dest: &Path, tar_args: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut data = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    let untar = crate::run(
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(dest)
            .args(tar_args)
            .stdin(data.stdout.take().ok_or("dpkg-deb has no stdout")?),
    );
    let unpacked = data.wait()?;
    untar?;
    if !unpacked.success() {
        return Err(format!("dpkg-deb --fsys-tarfile {} failed", deb.display()).into());
    }
    Ok(())
}

/// Debian's kernel package unpacked: what both dom0 userlands start from.
pub struct Kernel {
    /// The kernel (Debian's vmlinuz, a bzImage).
    pub vmlinuz: PathBuf,
    /// `lib/modules` of that kernel (one version).
    pub modules_dir: PathBuf,
    /// busybox-static's `busybox`.
    pub busybox: PathBuf,
    /// The kernel's `.deb`.
    pub kernel_deb: PathBuf,
    /// busybox-static's `.deb`.
    pub busybox_deb: PathBuf,
}

/// `v` as an array of the length asked for.
fn debs<const N: usize>(v: Vec<PathBuf>) -> Result<[PathBuf; N]> {
    v.try_into()
        .map_err(|v: Vec<PathBuf>| format!("expected {N} packages, got {}", v.len()).into())
}

/// Fetches (or reuses) the kernel and busybox packages and unpacks what dom0 needs of them.
pub fn kernel() -> Result<Kernel> {
    let dir = debian_dir();
    std::fs::create_dir_all(&dir)?;
    // The meta package names the kernel package of the release's current ABI.
    let [meta] = debs(download(
        &dir,
        &[("linux-image-amd64", "linux-image-amd64")],
        RELEASE,
    )?)?;
    let depends = field(&meta, "Depends")?;
    let image = depends
        .split([',', '|'])
        .map(str::trim)
        .find(|d| d.starts_with("linux-image-"))
        .ok_or_else(|| format!("linux-image-amd64 depends on no kernel: {depends:?}"))?;
    let (name, version) = match image.split_once(" (= ") {
        Some((n, v)) => (n.trim(), Some(v.trim_end_matches(')'))),
        None => (image, None),
    };
    let spec = version.map_or(name.to_owned(), |v| format!("{name}={v}"));
    let [kernel_deb, busybox_deb] = debs(download(
        &dir,
        &[(name, &spec), ("busybox-static", "busybox-static")],
        RELEASE,
    )?)?;

    let root = dir.join("root");
    let kernel_name = format!("vmlinuz-{}", name.trim_start_matches("linux-image-"));
    let vmlinuz = root.join("boot").join(&kernel_name);
    if !vmlinuz.is_file() {
        extract(
            &kernel_deb,
            &root,
            &["--wildcards", &format!("./boot/{kernel_name}")],
        )?;
    }
    let busybox = root.join("bin/busybox");
    if !busybox.is_file() {
        extract(&busybox_deb, &root, &["./bin/busybox"])?;
    }
    let modules_dir = root.join("lib/modules");
    if !modules_dir.is_dir() {
        extract(&kernel_deb, &root, &["--wildcards", "./lib/modules/*"])?;
    }
    Ok(Kernel {
        vmlinuz,
        modules_dir,
        busybox,
        kernel_deb,
        busybox_deb,
    })
}

/// Prints `<label>: <package> <version> sha256:<sum>` for each of `debs` and writes those
/// lines (without the label) to `file`.
pub fn record(label: &str, debs: &[PathBuf], file: &Path) -> Result<()> {
    let sums = output(Command::new("sha256sum").args(debs))?;
    let mut record = String::new();
    for (deb, sum) in debs.iter().zip(sums.lines()) {
        let sum = sum.split_whitespace().next().unwrap_or("");
        let fields = output(
            Command::new("dpkg-deb")
                .arg("-f")
                .arg(deb)
                .args(["Package", "Version"]),
        )?;
        let value = |name: &str| {
            fields
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                .unwrap_or("?")
                .to_owned()
        };
        let line = format!("{} {} sha256:{sum}", value("Package"), value("Version"));
        println!("{label}: {line}");
        record.push_str(&line);
        record.push('\n');
    }
    Ok(std::fs::write(file, record)?)
}

/// Fetches (or reuses) the packages, prints what they are, and builds the initramfs.
pub fn prepare() -> Result<Dom0Linux> {
    let k = kernel()?;
    let dir = debian_dir();
    record(
        "dom0",
        &[k.kernel_deb, k.busybox_deb],
        &dir.join("packages.txt"),
    )?;
    let modules = kmod::closure(&kmod::index(&k.modules_dir), MODULES)?;
    let initramfs = dir.join("initramfs.cpio");
    std::fs::write(
        &initramfs,
        initramfs_image(&std::fs::read(&k.busybox)?, &modules)?,
    )?;
    Ok(Dom0Linux {
        kernel: k.vmlinuz,
        initramfs,
    })
}

/// The early user space: busybox as `/init` with an inittab that mounts the pseudo file systems
/// and respawns a shell on the kernel's console; `poweroff` and `reboot` go through init, also
/// when the kernel runs `/sbin/poweroff` or `/sbin/reboot` itself. Command-line words:
/// `hestia.bench` powers off after the banner; `hestia.spin` starts one busy loop per CPU (the
/// CPU hogs of the `xl-throttle` measurement, booted as domUs). An `/etc/init.d/rc.local` a
/// second archive adds runs last (`cargo xtask bench io`'s domUs).
fn initramfs_image(busybox: &[u8], modules: &[(String, PathBuf)]) -> Result<Vec<u8>> {
    let mut a = Archive::default();
    let dirs = [
        "bin",
        "sbin",
        "dev",
        "etc",
        "etc/init.d",
        "proc",
        "sys",
        "tmp",
        "mnt",
        "root",
        "lib",
        "lib/modules",
    ];
    for d in dirs {
        a.dir(d);
    }
    let mut order = String::new();
    for (name, path) in modules {
        a.file(
            &format!("lib/modules/{name}.ko"),
            0o644,
            &std::fs::read(path)?,
        );
        order.push_str(name);
        order.push('\n');
    }
    a.file("etc/modules", 0o644, order.as_bytes());
    // Before devtmpfs is mounted the kernel opens /dev/console for init.
    a.char_device("dev/console", 0o600, 5, 1);
    a.file("bin/busybox", 0o755, busybox);
    a.symlink("init", "bin/busybox");
    a.symlink("bin/sh", "busybox");
    // Where Linux runs them for a shutdown or reboot it was asked for (the toolstack's `xl
    // shutdown`/`xl reboot` of this image booted as a domU): `poweroff_cmd`, `reboot_cmd`.
    a.symlink("sbin/poweroff", "/bin/busybox");
    a.symlink("sbin/reboot", "/bin/busybox");
    a.file(
        "etc/inittab",
        0o644,
        b"::sysinit:/etc/init.d/rcS\n\
          ::respawn:/bin/cttyhack /bin/sh -l\n\
          ::ctrlaltdel:/bin/reboot\n\
          ::shutdown:/bin/sync\n",
    );
    a.file(
        "etc/init.d/rcS",
        0o755,
        b"#!/bin/sh\n\
          /bin/busybox --install -s /bin\n\
          for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko; done\n\
          mount -t proc proc /proc\n\
          mount -t sysfs sysfs /sys\n\
          mount -t devtmpfs devtmpfs /dev\n\
          echo \"hestia-dom0: $(uname -sr), $(grep -c ^processor /proc/cpuinfo) CPUs, \
          $(sed -n 's/MemTotal: *//p' /proc/meminfo) RAM\"\n\
          grep -qw hestia.bench /proc/cmdline && poweroff -f\n\
          grep -qw hestia.spin /proc/cmdline && for c in $(seq $(nproc)); do \
          (while :; do :; done) & done\n\
          [ -e /etc/init.d/rc.local ] && . /etc/init.d/rc.local\n",
    );
    a.file(
        "etc/profile",
        0o644,
        b"export PATH=/bin\nexport PS1='dom0:\\w# '\ncd /\n",
    );
    Ok(a.finish())
}
