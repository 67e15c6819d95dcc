//! `cargo xtask deb`: the Debian package `hestia-hypervisor`, built with `dpkg-deb`.
//!
//! What it installs (the package files are in `boot/deb/`):
//! - `/boot/hestia-<version>.elf`: the release build of the hypervisor. Hestia has no separate
//!   symbol file (Xen ships `xen-syms`): the ELF keeps its `.symtab`, GRUB's multiboot2 loader
//!   passes the section headers, and backtraces resolve names from them (`bootinfo`).
//! - `/etc/grub.d/20_linux_hestia`: the menu generator, modelled on Debian's `20_linux_xen`
//!   (grub-common): entries with every installed dom0-capable kernel and its initramfs.
//! - `/etc/default/grub.d/hestia.cfg`: Hestia's command line and Hestia as GRUB's default.
//! - `postinst`/`postrm` run `update-grub` when GRUB is there, as Xen's hypervisor package does.
//! - `/usr/share/doc/hestia-hypervisor/`: README, copyright, changelog; lintian overrides.
//!
//! `Provides: xen-hypervisor, xen-hypervisor-4.17`: Debian's `xen-utils-4.17` only *recommends*
//! `xen-hypervisor-4.17` (nothing in Debian depends on it), so the effect is that with Hestia
//! installed, `apt install xen-utils-4.17` no longer pulls Xen's hypervisor in. It neither
//! conflicts with nor replaces `xen-hypervisor-4.17-amd64`: both can be installed side by side.
//!
//! Reproducible: every file's mtime is the commit time (`SOURCE_DATE_EPOCH` if set, else
//! `git log -1 --format=%ct`), which `dpkg-deb` also uses for the ar members; dpkg-deb sorts
//! the tar members and owns them as root (`--root-owner-group`); xz runs single-threaded
//! (its multi-threaded output depends on the thread count); the changelog is gzipped with `-n`.
//! So the same sources, built in the same checkout, give the same bytes (`deb` builds twice
//! and compares when asked with `--check-reproducible`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::dom0::output;
use crate::kernel::{self, Flavor};
use crate::{Result, root_dir, target_dir};

/// The binary package's name.
pub const PACKAGE: &str = "hestia-hypervisor";

/// The package's version: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The maintainer the control file and changelog name.
const MAINTAINER: &str = "Hestia developers <hestia@users.noreply.github.com>";

/// Files of the package from `boot/deb/`: (source, installed path, mode).
const FILES: &[(&str, &str, u32)] = &[
    ("20_linux_hestia", "etc/grub.d/20_linux_hestia", 0o755),
    ("hestia.cfg", "etc/default/grub.d/hestia.cfg", 0o644),
    ("README", "usr/share/doc/hestia-hypervisor/README", 0o644),
    (
        "copyright",
        "usr/share/doc/hestia-hypervisor/copyright",
        0o644,
    ),
    (
        "lintian-overrides",
        "usr/share/lintian/overrides/hestia-hypervisor",
        0o644,
    ),
];

/// Maintainer scripts from `boot/deb/`.
const SCRIPTS: &[&str] = &["postinst", "postrm"];

/// Where the hypervisor goes in the installed system.
pub fn installed_elf() -> String {
    format!("boot/hestia-{VERSION}.elf")
}

/// The commit time, or `SOURCE_DATE_EPOCH` when the caller fixes it.
fn source_date_epoch() -> Result<u64> {
    if let Ok(e) = std::env::var("SOURCE_DATE_EPOCH") {
        return e
            .parse()
            .map_err(|_| "SOURCE_DATE_EPOCH is not a number of seconds".into());
    }
    let out = Command::new("git")
        .current_dir(root_dir())
        .args(["log", "-1", "--format=%ct"])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| "git log gave no commit time (set SOURCE_DATE_EPOCH)".into())
}

/// Writes a file with `mode` (replacing what was there), making its directories.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    std::fs::write(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Builds the package from the hypervisor ELF `elf`; returns the `.deb`'s path.
pub fn build_from(elf: &Path) -> Result<PathBuf> {
    let epoch = source_date_epoch()?;
    let dir = target_dir().join("deb");
    let stage = dir.join(PACKAGE);
    let _ = std::fs::remove_dir_all(&stage);
    let src = root_dir().join("boot/deb");
    let mut installed: Vec<(String, u32)> = vec![(installed_elf(), 0o644)];
    write(&stage.join(installed_elf()), &std::fs::read(elf)?, 0o644)?;
    for (from, to, mode) in FILES {
        let text = std::fs::read_to_string(src.join(from))?.replace("@VERSION@", VERSION);
        write(&stage.join(to), text.as_bytes(), *mode)?;
        installed.push(((*to).to_owned(), *mode));
    }
    let date = output(
        Command::new("date")
            .env("LC_ALL", "C")
            .args(["-u", "-R", "-d"])
            .arg(format!("@{epoch}")),
    )?;
    let changelog = format!(
        "hestia ({VERSION}) unstable; urgency=medium\n\n  * Built from the Hestia sources by `cargo xtask deb`.\n\n -- {MAINTAINER}  {date}\n"
    );
    let doc = "usr/share/doc/hestia-hypervisor/changelog.gz";
    let mut gz = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(
        gz.stdin.as_mut().ok_or("no gzip stdin")?,
        changelog.as_bytes(),
    )?;
    let gz = gz.wait_with_output()?;
    write(&stage.join(doc), &gz.stdout, 0o644)?;
    installed.push((doc.to_owned(), 0o644));
    installed.sort();

    let mut md5sums = String::new();
    let mut size = 0u64;
    for (path, _) in &installed {
        let sum = output(Command::new("md5sum").arg(stage.join(path)))?;
        let sum = sum.split_whitespace().next().unwrap_or_default();
        md5sums.push_str(&format!("{sum}  {path}\n"));
        size += std::fs::metadata(stage.join(path))?.len().div_ceil(1024);
    }
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {VERSION}\n\
         Architecture: amd64\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {size}\n\
         Provides: xen-hypervisor, xen-hypervisor-4.17\n\
         Recommends: xen-utils-4.17, grub-pc | grub-efi-amd64\n\
         Section: admin\n\
         Priority: optional\n\
         Description: Hestia hypervisor, a Xen-compatible PV hypervisor in Rust\n \
         Hestia is a bare-metal hypervisor for x86_64 that implements the public Xen\n \
         x86_64 PV guest ABI and Xen 4.17's toolstack interface, so that Debian's Linux\n \
         kernel boots on it as dom0 and Debian's xen-utils-4.17 (xl, oxenstored,\n \
         xenconsoled) manage its domains unchanged.\n \
         .\n \
         This package installs the hypervisor in /boot and a GRUB menu generator that\n \
         boots it with each installed Linux kernel as dom0, by default.\n"
    );
    write(&stage.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    write(&stage.join("DEBIAN/md5sums"), md5sums.as_bytes(), 0o644)?;
    let conffiles: String = FILES
        .iter()
        .filter(|(_, to, _)| to.starts_with("etc/"))
        .map(|(_, to, _)| format!("/{to}\n"))
        .collect();
    write(&stage.join("DEBIAN/conffiles"), conffiles.as_bytes(), 0o644)?;
    for s in SCRIPTS {
        write(
            &stage.join("DEBIAN").join(s),
            &std::fs::read(src.join(s))?,
            0o755,
        )?;
    }
    // Directories get 0755 whatever the umask, and everything the commit's time.
    crate::run(
        Command::new("find")
            .arg(&stage)
            .args(["-type", "d", "-exec", "chmod", "0755", "{}", "+"]),
    )?;
    crate::run(
        Command::new("find")
            .arg(&stage)
            .args(["-exec", "touch", "-h", "-d"])
            .arg(format!("@{epoch}"))
            .args(["{}", "+"]),
    )?;
    let deb = dir.join(format!("{PACKAGE}_{VERSION}_amd64.deb"));
    crate::run(
        Command::new("dpkg-deb")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .args(["--root-owner-group", "-Zxz", "--threads-max=1", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// `cargo xtask deb [--check-reproducible]`: builds the release hypervisor and the package,
/// runs lintian when it is installed, and with `--check-reproducible` builds the package a
/// second time and fails unless both are byte for byte the same.
pub fn cmd(args: &[String]) -> Result<()> {
    let check = match args {
        [] => false,
        [a] if a == "--check-reproducible" => true,
        _ => return Err("usage: cargo xtask deb [--check-reproducible]".into()),
    };
    let elf = kernel::build(Flavor::Release)?;
    let deb = build_from(&elf)?;
    if check {
        let first = std::fs::read(&deb)?;
        let copy = deb.with_extension("deb.first");
        std::fs::write(&copy, &first)?;
        // A second build, a second later, from a fresh staging tree.
        std::thread::sleep(std::time::Duration::from_secs(1));
        build_from(&elf)?;
        if std::fs::read(&deb)? != first {
            return Err(format!(
                "not reproducible: {} and {} differ",
                copy.display(),
                deb.display()
            )
            .into());
        }
        std::fs::remove_file(&copy)?;
        println!("reproducible: two builds gave the same bytes");
    }
    if crate::tools::on_path("lintian") {
        let status = Command::new("lintian")
            .args(["--info", "--display-info"])
            .arg(&deb)
            .status()?;
        if !status.success() {
            return Err("lintian reported errors".into());
        }
    } else {
        eprintln!("xtask: lintian is not installed (apt-get install lintian) to check the package");
    }
    println!("{}", deb.display());
    Ok(())
}
