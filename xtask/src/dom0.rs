//! dom0's Linux: Debian 12's stock kernel (`linux-image-amd64`) and `busybox-static`, fetched
//! with the package tools (`apt-get download`, `dpkg-deb`; nothing else is downloaded), cached
//! under `target/debian/`, and an initramfs whose `/init` (busybox init) loads the modules for
//! QEMU's disks and NICs and ext4 (Debian builds them as modules), mounts proc, sys and dev, and
//! keeps a shell on the console (`hvc0` under a hypervisor; busybox's `cttyhack` finds it, so
//! the same image also boots natively for the benchmark's comparison). The exact package versions and SHA-256 sums are printed and kept in
//! `target/debian/packages.txt`.

use std::path::{Path, PathBuf};
use std::process::Command;

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
/// ext4 and the checksum it needs, veth.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "e1000",
    "crc32c_generic",
    "ext4",
    "veth",
];

/// The files a dom0 boot needs.
pub struct Dom0Linux {
    /// The kernel (Debian's vmlinuz, a bzImage).
    pub kernel: PathBuf,
    /// The initramfs (uncompressed cpio).
    pub initramfs: PathBuf,
}

fn debian_dir() -> PathBuf {
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

/// Downloads `spec` (`package` or `package=version`) into `dir` unless a `.deb` of `package`
/// is cached there.
fn download(dir: &Path, package: &str, spec: &str) -> Result<PathBuf> {
    if let Some(deb) = cached(dir, package) {
        return Ok(deb);
    }
    let status = Command::new("apt-get")
        .args(["download", "-q", "-t", RELEASE, spec])
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!(
            "apt-get download {spec} failed: dom0 needs Debian {RELEASE}'s packages in apt's \
             lists (run `apt-get update`; on another distribution add {RELEASE} to the apt \
             sources)"
        )
        .into());
    }
    cached(dir, package).ok_or_else(|| format!("apt-get left no {package} .deb").into())
}

fn output(cmd: &mut Command) -> Result<String> {
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

fn field(deb: &Path, name: &str) -> Result<String> {
    output(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))
}

/// Extracts the members matching `pattern` of `deb`'s data into `dest`.
fn extract(deb: &Path, pattern: &str, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    let cmd = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards '{pattern}'",
        deb.display(),
        dest.display()
    );
    crate::run(Command::new("sh").args(["-c", &cmd]))
}

/// Fetches (or reuses) the packages, prints what they are, and builds the initramfs.
pub fn prepare() -> Result<Dom0Linux> {
    let dir = debian_dir();
    std::fs::create_dir_all(&dir)?;
    // The meta package names the kernel package of the release's current ABI.
    let meta = download(&dir, "linux-image-amd64", "linux-image-amd64")?;
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
    let kernel_deb = download(&dir, name, &spec)?;
    let busybox_deb = download(&dir, "busybox-static", "busybox-static")?;

    let mut record = String::new();
    for deb in [&kernel_deb, &busybox_deb] {
        let sum = output(Command::new("sha256sum").arg(deb))?;
        let sum = sum.split_whitespace().next().unwrap_or("");
        let line = format!(
            "{} {} sha256:{sum}",
            field(deb, "Package")?,
            field(deb, "Version")?
        );
        println!("dom0: {line}");
        record.push_str(&line);
        record.push('\n');
    }
    std::fs::write(dir.join("packages.txt"), record)?;

    let root = dir.join("root");
    let kernel_name = format!("vmlinuz-{}", name.trim_start_matches("linux-image-"));
    let kernel = root.join("boot").join(&kernel_name);
    if !kernel.is_file() {
        extract(&kernel_deb, &format!("./boot/{kernel_name}"), &root)?;
    }
    let busybox = root.join("bin/busybox");
    if !busybox.is_file() {
        extract(&busybox_deb, "./bin/busybox", &root)?;
    }
    let modules_dir = root.join("lib/modules");
    if !modules_dir.is_dir() {
        extract(&kernel_deb, "./lib/modules/*", &root)?;
    }
    let modules = kmod::closure(&kmod::index(&modules_dir), MODULES)?;
    let initramfs = dir.join("initramfs.cpio");
    std::fs::write(
        &initramfs,
        initramfs_image(&std::fs::read(&busybox)?, &modules)?,
    )?;
    Ok(Dom0Linux { kernel, initramfs })
}

/// The early user space: busybox as `/init` with an inittab that mounts the pseudo file systems
/// and respawns a shell on the kernel's console; `poweroff` and `reboot` go through init.
fn initramfs_image(busybox: &[u8], modules: &[(String, PathBuf)]) -> Result<Vec<u8>> {
    let mut a = Archive::default();
    let dirs = [
        "bin",
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
          grep -qw hestia.bench /proc/cmdline && poweroff -f\n",
    );
    a.file(
        "etc/profile",
        0o644,
        b"export PATH=/bin\nexport PS1='dom0:\\w# '\ncd /\n",
    );
    Ok(a.finish())
}
