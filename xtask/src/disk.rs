//! A disk image of an installed Debian 12 system with Hestia installed the way a user installs
//! it (`dpkg -i` of [`crate::deb`]'s package, `update-grub`), which QEMU boots from its own disk
//! on BIOS (GRUB in the MBR) and UEFI (GRUB on an EFI system partition).
//!
//! Two stages, each rebuilt only when its inputs change (recorded next to it):
//! 1. `target/debian-disk/root/`: `debootstrap --variant=minbase` of bookworm, then, in a chroot,
//!    apt installs [`PACKAGES`] from bookworm with its updates and security suites (Debian's
//!    own postinsts build the initramfs with initramfs-tools). Inputs: the package list and the
//!    apt sources.
//! 2. `target/debian-disk/disk.img`: [`FILES`], the image's own settings (fstab, hostname,
//!    GRUB's serial terminal, dom0's memory, a root autologin on hvc0, systemd's start timeout,
//!    the test script [`CHECK`]; none of them is in the `.deb`), the test guest, then
//!    `dpkg -i` of the package in the chroot, whose postinst runs
//!    `update-grub`; GRUB's modules copied to `/boot/grub` and its images made with the image's
//!    own `grub-mkimage`, as grub-install would; then the disk assembled from files, with no loop
//!    device and no mount (neither exists in every CI sandbox): the root file system by
//!    `mke2fs -d`, the ESP by `mkfs.fat` and mtools, the MBR partition table by `sfdisk` on the
//!    file, GRUB's `boot.img` in the MBR and `core.img` in the gap before the first partition
//!    (sectors 1-2047, the blocklist in its first sector patched as grub-bios-setup does).
//!    Inputs: stage 1's, the files, the package's and the test guest's SHA-256.
//!
//! `update-grub` inside a chroot cannot probe the disk the system will boot from: during stage 2
//! `grub-probe` is diverted (dpkg-divert) to [`GRUB_PROBE_SHIM`], which describes the image's
//! root partition (`/dev/vda2`, ext4 with [`ROOT_UUID`], msdos partition 2 of hd0), and
//! `/dev/disk/by-uuid/ROOT_UUID` exists, so the generators write `root=UUID=...` and
//! `search --fs-uuid` exactly as on an installed machine. Both are removed again.
//!
//! Layout: partition 1 the ESP (FAT, 32 MiB from sector 2048), partition 2 the ext4 root
//! ([`ROOT_MIB`] MiB). On UEFI, OVMF starts `\EFI\BOOT\BOOTX64.EFI`, GRUB-EFI reads the same
//! `grub.cfg` from the root file system. grub-pc and grub-efi-amd64 conflict in Debian (one
//! platform per install); the image has grub-pc (which `update-grub` belongs to) and
//! grub-efi-amd64-bin (GRUB-EFI's modules), as a removable-media install of GRUB-EFI would.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::deb::write;
use crate::dom0::output;
use crate::test::sbin;
use crate::{Result, target_dir};

/// What apt installs on top of the minimal base (with dependencies, without recommends).
const PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "initramfs-tools",
    "zstd",
    "e2fsprogs",
    "systemd-sysv",
    "udev",
    "xen-utils-4.17",
    "grub-pc",
    "grub-efi-amd64-bin",
];

/// The archive.
const MIRROR: &str = "http://deb.debian.org/debian";

/// apt's sources in the image: Debian 12 with its updates, as an installed system has them.
const SOURCES: &str = "deb http://deb.debian.org/debian bookworm main\n\
    deb http://deb.debian.org/debian bookworm-updates main\n\
    deb http://deb.debian.org/debian-security bookworm-security main\n";

/// The root file system's UUID (fixed: the image is rebuilt from scratch, its identity is not).
pub const ROOT_UUID: &str = "8d2e4f0a-1c3b-4d5e-9f60-486573746961";

/// Size of the root file system.
const ROOT_MIB: u64 = 2048;
/// First sector of the ESP; the sectors before it hold GRUB's core.img.
const ESP_START: u64 = 2048;
/// Size of the ESP in sectors (32 MiB).
const ESP_SECTORS: u64 = 65536;
/// First sector of the root partition.
const ROOT_START: u64 = ESP_START + ESP_SECTORS;

/// `grub-probe` while the package is installed in the chroot (see the module's documentation).
const GRUB_PROBE_SHIM: &str = include_str!("disk/grub-probe");

/// The test script (`/usr/local/sbin/hestia-check`): the scenario types its name at root's
/// prompt; it reports the system's state, the Xen services, `xl list`, `xl create` of a test
/// guest, and powers off.
const CHECK: &str = include_str!("disk/hestia-check");

/// Where the test guest lives in the image (`/etc/xen/hestia-pv.cfg` boots it).
const GUEST: &str = "usr/local/lib/hestia-test/pv-guest";

/// The image's settings: (path, mode, contents).
const FILES: &[(&str, u32, &str)] = &[
    (
        "etc/fstab",
        0o644,
        "UUID=8d2e4f0a-1c3b-4d5e-9f60-486573746961 / ext4 errors=remount-ro 0 1\n",
    ),
    ("etc/hostname", 0o644, "hestia-test\n"),
    (
        "etc/hosts",
        0o644,
        "127.0.0.1\tlocalhost\n127.0.1.1\thestia-test\n",
    ),
    (
        "etc/machine-id",
        0o444,
        "4865737469612d6469736b2d696d6167\n",
    ),
    // GRUB on the serial line, as on a headless server; dom0 leaves memory for domUs.
    (
        "etc/default/grub.d/00-image.cfg",
        0o644,
        "GRUB_TIMEOUT=1\nGRUB_TERMINAL=serial\n\
         GRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n\
         GRUB_CMDLINE_HESTIA=\"dom0_mem=512M,max:512M\"\n",
    ),
    // Under TCG the boot is tens of times slower than on hardware (and Hestia's TSC-based
    // time may run ahead of the host's when QEMU's threads are starved): systemd's 90 s
    // default would time out waiting for /dev/hvc0.
    (
        "etc/systemd/system.conf.d/tcg.conf",
        0o644,
        "[Manager]\nDefaultTimeoutStartSec=600s\nDefaultDeviceTimeoutSec=600s\n",
    ),
    (
        "etc/systemd/system/serial-getty@hvc0.service.d/autologin.conf",
        0o644,
        "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,38400,9600 %I $TERM\n",
    ),
    ("usr/local/sbin/hestia-check", 0o755, CHECK),
    (
        "etc/xen/hestia-pv.cfg",
        0o644,
        "# A test guest (functional-xen-version): it reports on its console and powers off.\n\
         name = \"hestia-pv\"\ntype = \"pv\"\nkernel = \"/usr/local/lib/hestia-test/pv-guest\"\n\
         memory = 32\nvcpus = 1\non_poweroff = \"destroy\"\non_crash = \"preserve\"\n",
    ),
];

fn dir() -> PathBuf {
    target_dir().join("debian-disk")
}

/// Installs the host tools the image needs (root only: debootstrap and chroot need root anyway).
fn ensure_tools() -> Result<()> {
    let needed = [
        ("debootstrap", "debootstrap"),
        ("sfdisk", "fdisk"),
        ("mkfs.fat", "dosfstools"),
        ("mcopy", "mtools"),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(tool, _)| !sbin(tool).is_file() && !crate::tools::on_path(tool))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let uid = output(Command::new("id").arg("-u"))?;
    if uid != "0" {
        return Err(format!(
            "the Debian disk image needs root (debootstrap, chroot) and: sudo apt-get install {}",
            missing.join(" ")
        )
        .into());
    }
    crate::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

/// Runs `script` with `sh -e` in the chroot `root`, with a clean environment.
fn chroot(root: &Path, script: &str) -> Result<()> {
    crate::run(
        Command::new("chroot")
            .arg(root)
            .args(["/usr/bin/env", "-i"])
            .args([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "DEBIAN_FRONTEND=noninteractive",
                "LC_ALL=C.UTF-8",
                "HOME=/root",
                "sh",
                "-ec",
                script,
            ]),
    )
}

/// Stage 1's inputs, as recorded.
fn root_inputs() -> String {
    format!("packages: {}\nsources:\n{SOURCES}", PACKAGES.join(" "))
}

/// Stage 2's own inputs: the image's files and the `grub-probe` shim.
fn image_inputs() -> String {
    let mut s = String::new();
    for (path, mode, text) in FILES {
        s.push_str(&format!("file {path} {mode:o}\n{text}\n"));
    }
    s.push_str(GRUB_PROBE_SHIM);
    s
}

/// Stage 1: debootstrap and apt into `root`.
fn build_root(root: &Path) -> Result<()> {
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    println!("xtask: debootstrap of Debian 12 into {}", root.display());
    crate::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(root)
            .arg(MIRROR),
    )?;
    write(
        &root.join("etc/apt/sources.list"),
        SOURCES.as_bytes(),
        0o644,
    )?;
    // No service starts inside the chroot.
    write(
        &root.join("usr/sbin/policy-rc.d"),
        b"#!/bin/sh\nexit 101\n",
        0o755,
    )?;
    std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf"))?;
    let result = chroot(
        root,
        &format!(
            "apt-get update -q\napt-get install -y -q --no-install-recommends {}\napt-get clean",
            PACKAGES.join(" ")
        ),
    );
    std::fs::remove_file(root.join("usr/sbin/policy-rc.d"))?;
    write(&root.join("etc/resolv.conf"), b"", 0o644)?;
    result
}

/// Installs `deb` in the chroot `root` as a user would, with `grub-probe` answering for the
/// image (see the module's documentation).
fn install_package(root: &Path, deb: &Path) -> Result<()> {
    let name = deb.file_name().ok_or("the package has no file name")?;
    std::fs::copy(deb, root.join("tmp").join(name))?;
    // The root partition's device node and its by-uuid link, which the generators test with
    // `test -e` before they write root=UUID=... (virtio-blk's major is 254).
    let node = root.join("dev/vda2");
    let _ = std::fs::remove_file(&node);
    crate::run(Command::new("mknod").arg(&node).args(["b", "254", "2"]))?;
    let by_uuid = root.join("dev/disk/by-uuid");
    std::fs::create_dir_all(&by_uuid)?;
    let link = by_uuid.join(ROOT_UUID);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("../../vda2", &link)?;
    chroot(
        root,
        "dpkg-divert --quiet --local --rename --add /usr/sbin/grub-probe",
    )?;
    write(
        &root.join("usr/sbin/grub-probe"),
        GRUB_PROBE_SHIM.as_bytes(),
        0o755,
    )?;
    let result = chroot(
        root,
        &format!(
            "dpkg -i /tmp/{name}\nrm /tmp/{name}",
            name = name.to_string_lossy()
        ),
    );
    std::fs::remove_file(root.join("usr/sbin/grub-probe"))?;
    chroot(
        root,
        "dpkg-divert --quiet --local --rename --remove /usr/sbin/grub-probe",
    )?;
    std::fs::remove_dir_all(root.join("dev/disk"))?;
    std::fs::remove_file(&node)?;
    result?;
    let cfg = std::fs::read_to_string(root.join("boot/grub/grub.cfg"))?;
    if !cfg.contains("with Hestia hypervisor") || !cfg.contains(&format!("root=UUID={ROOT_UUID}")) {
        return Err(
            "update-grub wrote no Hestia entry with root=UUID= into the image's grub.cfg".into(),
        );
    }
    Ok(())
}

/// GRUB's modules in `/boot/grub/<platform>` and its boot images (`core.img` for BIOS,
/// `BOOTX64.EFI`), made by the image's own grub-mkimage; returns their paths in `out`.
fn make_grub_images(root: &Path, out: &Path) -> Result<(PathBuf, PathBuf)> {
    chroot(
        root,
        "for p in i386-pc x86_64-efi; do\n\
           rm -rf /boot/grub/$p && mkdir -p /boot/grub/$p\n\
           cp /usr/lib/grub/$p/*.mod /usr/lib/grub/$p/*.lst /boot/grub/$p/\n\
         done\n\
         grub-mkimage -O i386-pc -o /tmp/core.img -p '(hd0,msdos2)/boot/grub' biosdisk part_msdos ext2\n\
         grub-mkimage -O x86_64-efi -o /tmp/BOOTX64.EFI -p '(hd0,msdos2)/boot/grub' part_msdos ext2 fat\n",
    )?;
    let core = out.join("core.img");
    let efi = out.join("BOOTX64.EFI");
    std::fs::rename(root.join("tmp/core.img"), &core)?;
    std::fs::rename(root.join("tmp/BOOTX64.EFI"), &efi)?;
    Ok((core, efi))
}

/// Assembles `disk` from the tree `root` and GRUB's images.
fn assemble(root: &Path, core: &Path, efi: &Path, disk: &Path) -> Result<()> {
    let work = dir();
    let rootfs = work.join("root.ext4");
    let _ = std::fs::remove_file(&rootfs);
    crate::run(
        Command::new(sbin("mke2fs"))
            .args([
                "-q", "-F", "-t", "ext4", "-L", "root", "-U", ROOT_UUID, "-d",
            ])
            .arg(root)
            .arg(&rootfs)
            .arg(format!("{ROOT_MIB}M")),
    )?;
    let esp = work.join("esp.img");
    let _ = std::fs::remove_file(&esp);
    crate::run(
        Command::new(sbin("mkfs.fat"))
            .args(["-C", "-n", "ESP", "-i", "48455354"])
            .arg(&esp)
            .arg((ESP_SECTORS / 2).to_string()),
    )?;
    let image = esp.to_string_lossy().into_owned();
    crate::run(Command::new("mmd").args(["-i", &image, "::/EFI", "::/EFI/BOOT"]))?;
    crate::run(
        Command::new("mcopy")
            .args(["-i", &image])
            .arg(efi)
            .arg("::/EFI/BOOT/BOOTX64.EFI"),
    )?;

    let _ = std::fs::remove_file(disk);
    let root_sectors = ROOT_MIB * 2048;
    let f = std::fs::File::create(disk)?;
    f.set_len((ROOT_START + root_sectors) * 512)?;
    drop(f);
    let table = format!(
        "label: dos\nlabel-id: 0x48455354\n\
         start={ESP_START}, size={ESP_SECTORS}, type=ef\n\
         start={ROOT_START}, size={root_sectors}, type=83, bootable\n"
    );
    let mut sfdisk = Command::new(sbin("sfdisk"))
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(
        sfdisk.stdin.as_mut().ok_or("no sfdisk stdin")?,
        table.as_bytes(),
    )?;
    if !sfdisk.wait()?.success() {
        return Err("sfdisk failed on the disk image".into());
    }
    for (part, start) in [(&esp, ESP_START), (&rootfs, ROOT_START)] {
        crate::run(
            Command::new("dd")
                .arg(format!("if={}", part.display()))
                .arg(format!("of={}", disk.display()))
                .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
                .arg(format!("seek={}", start / 2048)),
        )?;
    }
    // BIOS: boot.img's code (not the partition table after it) in the MBR; it loads the first
    // sector of core.img from sector 1 (its default), whose blocklist names the rest.
    let boot = std::fs::read(root.join("usr/lib/grub/i386-pc/boot.img"))?;
    let mut core = std::fs::read(core)?;
    let sectors = core.len().div_ceil(512);
    core.resize(sectors * 512, 0);
    if sectors < 2 || sectors as u64 >= ESP_START {
        return Err(format!("core.img has {sectors} sectors: it must fit before the ESP").into());
    }
    // The blocklist at the end of diskboot.img: start (u64) 2, length (u16), segment (u16).
    core[0x1f4..0x1fc].copy_from_slice(&2u64.to_le_bytes());
    core[0x1fc..0x1fe].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
    let f = std::fs::OpenOptions::new().write(true).open(disk)?;
    f.write_all_at(boot.get(..0x1b8).ok_or("boot.img is short")?, 0)?;
    f.write_all_at(&core, 512)?;
    std::fs::remove_file(&rootfs)?;
    std::fs::remove_file(&esp)?;
    Ok(())
}

fn sha256(path: &Path) -> Result<String> {
    let out = output(Command::new("sha256sum").arg(path))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_owned())
}

/// The disk image with `deb` installed and `guest` as the test domU's kernel, built or reused.
pub fn prepare(deb: &Path, guest: &Path) -> Result<PathBuf> {
    ensure_tools()?;
    let work = dir();
    std::fs::create_dir_all(&work)?;
    let root = work.join("root");
    let root_stamp = work.join("root.inputs");
    let want_root = root_inputs();
    if std::fs::read_to_string(&root_stamp).ok().as_deref() != Some(want_root.as_str()) {
        let _ = std::fs::remove_file(&root_stamp);
        build_root(&root)?;
        std::fs::write(&root_stamp, &want_root)?;
    }
    let disk = work.join("disk.img");
    let disk_stamp = work.join("disk.inputs");
    let want_disk = format!(
        "{want_root}\n{}\ndeb {}\nguest {}\n",
        image_inputs(),
        sha256(deb)?,
        sha256(guest)?
    );
    if disk.is_file()
        && std::fs::read_to_string(&disk_stamp).ok().as_deref() == Some(want_disk.as_str())
    {
        return Ok(disk);
    }
    let _ = std::fs::remove_file(&disk_stamp);
    println!(
        "xtask: installing {} into the Debian disk image",
        deb.display()
    );
    for (path, mode, text) in FILES {
        write(&root.join(path), text.as_bytes(), *mode)?;
    }
    write(&root.join(GUEST), &std::fs::read(guest)?, 0o644)?;
    install_package(&root, deb)?;
    let (core, efi) = make_grub_images(&root, &work)?;
    assemble(&root, &core, &efi, &disk)?;
    std::fs::write(&disk_stamp, &want_disk)?;
    Ok(disk)
}

/// A copy of `disk` for one boot (the machine writes to its disk; the cached image stays as
/// built).
pub fn boot_copy(disk: &Path, name: &str) -> Result<PathBuf> {
    let copy = dir().join(format!("boot-{name}.img"));
    let _ = std::fs::remove_file(&copy);
    crate::run(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(disk)
            .arg(&copy),
    )?;
    Ok(copy)
}

/// The test guest `/etc/xen/hestia-pv.cfg` boots (a binary of `tests/guests`).
const TEST_GUEST: &str = "functional-xen-version";

/// For a scenario named `name`: the release hypervisor, its package, the image with both, and a
/// fresh copy of it to boot. `guests` holds the test guests' ELFs.
pub fn for_test(name: &str, guests: &Path) -> Result<PathBuf> {
    let deb = crate::deb::build_from(&crate::kernel::build(crate::kernel::Flavor::Release)?)?;
    let disk = prepare(&deb, &guests.join(TEST_GUEST))?;
    boot_copy(&disk, name)
}
