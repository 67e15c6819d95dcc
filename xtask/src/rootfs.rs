//! The `xen` dom0 userland: an initramfs made of Debian 12's packages with Xen's toolstack
//! (`xen-utils-4.17`: xl, oxenstored, xenstored, xenconsoled, xen-init-dom0; `xenstore-utils`),
//! the shell tools its hotplug scripts call, and the kernel modules a Xen dom0 loads, booted by
//! the same kernel as the busybox dom0 of [`crate::dom0`].
//!
//! Packages: [`PACKAGES`] and the closure of their `Depends` and `Pre-Depends` as
//! `apt-cache depends` resolves it, from [`SUITES`] (the release with its security and stable
//! updates, so Xen's tools are those of the Xen the reference rig boots), less the
//! packages of [`PRUNED`], which an unpacked initramfs never runs; for alternatives
//! (`a | b`) the first, for virtual packages their first provider. The `.deb`s are cached in
//! `target/debian/xen/debs/`, printed with their versions and SHA-256 and kept in
//! `target/debian/xen/packages.txt`. They are unpacked (documentation left out) into
//! `target/debian/xen/root/` with `/bin`, `/sbin`, `/lib` and `/lib64` as links into `/usr`,
//! Debian's merged layout; the image is rebuilt only when its inputs (the `.deb`s, the modules,
//! the files of `rootfs/`) change, recorded in `target/debian/xen/inputs.txt`.
//!
//! Boot: busybox init runs `/etc/hestia/rcS` (`rootfs/rcS`: what Debian's `/etc/init.d/xen`
//! does, then a bridge `xenbr0`, the [`dom0::BANNER`] line and an optional canned script), then
//! keeps bash on the console with the busybox dom0's prompt ([`dom0::PROMPT`]). Busybox's applets
//! live in `/usr/lib/busybox`, last in `PATH`, so Debian's own tools win. Canned scripts
//! (`hestia.script=NAME` runs `/etc/hestia/NAME.sh`, then powers off): `xl-smoke` (xl's
//! read-only commands), `xl-domu` (`xl create -c` of Debian's Linux with the busybox initramfs,
//! `/boot/vmlinuz` and `/boot/initramfs.cpio` in the image, as a PV domU on `xenbr0`),
//! `xl-bench` (`cargo xtask bench`'s timed xl create and destroy rounds), `io-bench` (`cargo
//! xtask bench io`: disk, TCP and ping figures of domUs and of dom0 itself; its domUs boot the
//! busybox initramfs with iperf3 and `io-domu.sh` appended), `xl-badinput` (xl given bad input:
//! Xen's errors, and nothing leaked), `xl-throttle` (CPU shares of spinning domUs under `xl
//! sched-credit` weights and caps), `xl-net` (bridged, NATed, routed, rate-limited and
//! multi-queue vifs of two Linux domUs, hot-plugged and detached). `xl-disk` (dom0-xl-disk-net's
//! disk checks, typed at dom0's shell; `disk-domu.sh` is its domU's part, read from a disk).
//!
//! The image is an uncompressed cpio (59 MiB): measured natively under TCG (`xen-ref --native`),
//! Linux unpacked it in 0.5 s, gzip -6 (21 MiB) in 1.8 s, zstd -19 (15 MiB) in 3.7 s, and it frees
//! the image once unpacked, so compression would only lower the peak by ~40 MiB during boot.
//!
//! Variants ([`Variant`]) add packages, prunes and files: `libvirt` ([`LIBVIRT`], built in
//! `target/debian/libvirt/`, `--dom0-userland libvirt`) adds libvirtd with its libxl driver and
//! virsh. Its cpio is 134 MiB, more than a 512 MiB dom0 can unpack next to it, so it is gzip'd
//! (54 MiB; unpacked in ~3.5 s under TCG).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::Archive;
use crate::dom0::{self, debian_dir, download, extract, output};
use crate::{Result, kmod};

/// What the userland is made of (each with its dependencies): Xen's tools and the shell, network
/// and block tools their scripts call (`ip`/`bridge`, `flock`, `losetup`, `choom`), and the
/// terminal descriptions `xl top` (xentop's curses screen) needs, which every Debian system has.
/// vif-route's `ifconfig` and `ifdown` are busybox's; Debian's vif scripts never touch iptables
/// (its `handle_iptable` returns at once, Debian bug #894013) and vif-nat's DHCP part only runs
/// with an `/etc/dhcpd.conf`, so neither iptables nor a DHCP server is needed.
const PACKAGES: &[&str] = &[
    "xen-utils-4.17",
    "xen-utils-common",
    "xenstore-utils",
    "bash",
    "iproute2",
    "util-linux",
    "mount",
    "ncurses-base",
    // `cargo xtask bench io` measures TCP with it, in dom0 and in domUs.
    "iperf3",
];

/// The suites the packages come from (apt's target release, a regular expression): Debian 12
/// and its security and stable updates, never backports.
const SUITES: &str = "/^bookworm(-security|-updates)?$/";

/// Dependencies the closure does not follow, with why the userland runs without them.
const PRUNED: &[(&str, &str)] = &[
    ("python3", "only pygrub and xencov_split are Python"),
    ("udev", "libxl runs the hotplug scripts itself"),
    (
        "sysvinit-utils",
        "init script helpers; rcS replaces the init script",
    ),
    ("lsb-base", "init script helpers"),
    ("ucf", "maintainer scripts only"),
    ("debconf", "maintainer scripts only"),
    (
        "cdebconf",
        "maintainer scripts only (debconf's alternative)",
    ),
    ("adduser", "maintainer scripts only"),
    ("dpkg", "nothing is installed at run time"),
    ("install-info", "maintainer scripts only"),
    ("perl-base", "no Perl program runs"),
    (
        "init-system-helpers",
        "service helpers of maintainer scripts (iperf3's)",
    ),
];

/// Kernel modules a Xen dom0 loads (Debian builds them as modules), after the busybox dom0's.
const XEN_MODULES: &[&str] = &[
    "xen_privcmd",
    "xen_evtchn",
    "xen_gntdev",
    "xen_gntalloc",
    "xenfs",
    "xen_blkback",
    "xen_netback",
    "bridge",
    "loop",
    "tun",
    // `cargo xtask bench io`'s native network: a namespace behind a veth pair.
    "veth",
];

/// Members of the packages left out of the image.
const EXCLUDED: &[&str] = &[
    "./usr/share/doc",
    "./usr/share/man",
    "./usr/share/info",
    "./usr/share/locale",
    "./usr/share/lintian",
    "./usr/share/bash-completion",
];

/// The test guest `/etc/xen/hestia-pv.cfg` boots (`tests/guests`).
const PV_GUEST: &str = "functional-xen-version";

/// The files the image adds: (path, mode, contents).
const FILES: &[(&str, u32, &str)] = &[
    ("etc/hestia/rcS", 0o755, include_str!("rootfs/rcS")),
    (
        "etc/hestia/functions.sh",
        0o644,
        include_str!("rootfs/functions.sh"),
    ),
    (
        "etc/hestia/xl-smoke.sh",
        0o755,
        include_str!("rootfs/xl-smoke.sh"),
    ),
    (
        "etc/hestia/xl-domu.sh",
        0o755,
        include_str!("rootfs/xl-domu.sh"),
    ),
    (
        "etc/hestia/xl-bench.sh",
        0o755,
        include_str!("rootfs/xl-bench.sh"),
    ),
    (
        "etc/hestia/io-bench.sh",
        0o755,
        include_str!("rootfs/io-bench.sh"),
    ),
    (
        "etc/hestia/io-domu.sh",
        0o755,
        include_str!("rootfs/io-domu.sh"),
    ),
    (
        "etc/hestia/xl-badinput.sh",
        0o755,
        include_str!("rootfs/xl-badinput.sh"),
    ),
    (
        "etc/hestia/xl-throttle.sh",
        0o755,
        include_str!("rootfs/xl-throttle.sh"),
    ),
    (
        "etc/hestia/xl-net.sh",
        0o755,
        include_str!("rootfs/xl-net.sh"),
    ),
    (
        "etc/hestia/xl-disk.sh",
        0o755,
        include_str!("rootfs/xl-disk.sh"),
    ),
    (
        "etc/hestia/disk-domu.sh",
        0o644,
        include_str!("rootfs/disk-domu.sh"),
    ),
    (
        "etc/xen/hestia-pv.cfg",
        0o644,
        include_str!("rootfs/hestia-pv.cfg"),
    ),
    (
        "etc/xen/debian-pv.cfg",
        0o644,
        include_str!("rootfs/debian-pv.cfg"),
    ),
    (
        "etc/inittab",
        0o644,
        "::sysinit:/etc/hestia/rcS\n\
         ::respawn:/usr/lib/busybox/cttyhack /bin/bash -l\n\
         ::ctrlaltdel:/usr/lib/busybox/reboot\n\
         ::shutdown:/usr/lib/busybox/sync\n",
    ),
    // HOME is not `/`, where bash's `\w` would print `~` instead of the prompt's `/`.
    (
        "etc/profile",
        0o644,
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/usr/lib/busybox\n\
         export HOME=/root PS1='dom0:\\w# '\ncd /\n",
    ),
];

/// A dom0 userland built from Debian's packages: the xen one and variants of it, each its
/// packages, prunes and files on top of [`PACKAGES`], [`PRUNED`] and [`FILES`].
struct Variant {
    /// Its directory under `target/debian/` and its name in `--dom0-userland`.
    name: &'static str,
    /// More packages (with their dependencies).
    packages: &'static [&'static str],
    /// More dependencies the closure does not follow, with why.
    pruned: &'static [(&'static str, &'static str)],
    /// More files (path, mode, contents).
    files: &'static [(&'static str, u32, &'static str)],
    /// Whether the image is compressed (gzip -6; Linux unpacks it).
    gzip: bool,
}

/// Xen's toolstack alone.
const XEN: Variant = Variant {
    name: "xen",
    packages: &[],
    pruned: &[],
    files: &[],
    gzip: false,
};

/// Xen's toolstack and libvirt's daemon with its libxl driver (`virsh -c xen:///`): rcS sources
/// `/etc/hestia/start.d/libvirtd.sh`, which starts `libvirtd` once xenstored and xenconsoled
/// run. A separate image because libvirt's closure (libxml2's ICU data above all) would make
/// the xen one 60% larger and every boot of it slower.
const LIBVIRT: Variant = Variant {
    name: "libvirt",
    packages: &[
        "libvirt-daemon",
        "libvirt-daemon-driver-xen",
        "libvirt-clients",
    ],
    pruned: &[(
        "libvirt-daemon-driver-qemu",
        "libvirtd skips the driver modules it does not find",
    )],
    files: &[
        // libvirtd looks up uid 0 (its user record) as it starts.
        ("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/bash\n"),
        ("etc/group", 0o644, "root:x:0:\n"),
        (
            "etc/hestia/start.d/libvirtd.sh",
            0o644,
            include_str!("rootfs/libvirtd.sh"),
        ),
        (
            "etc/libvirt/libvirtd.conf",
            0o644,
            include_str!("rootfs/libvirtd.conf"),
        ),
        (
            "etc/hestia/libvirt.sh",
            0o755,
            include_str!("rootfs/libvirt.sh"),
        ),
        (
            "etc/libvirt/libxl.conf",
            0o644,
            include_str!("rootfs/libxl.conf"),
        ),
        (
            "etc/libvirt/hestia-pv.xml",
            0o644,
            include_str!("rootfs/hestia-pv.xml"),
        ),
        (
            "etc/libvirt/debian-pv.xml",
            0o644,
            include_str!("rootfs/debian-pv.xml"),
        ),
    ],
    gzip: true,
};

/// The files a boot with the xen userland needs.
pub struct XenUserland {
    /// The kernel (the busybox dom0's).
    pub kernel: PathBuf,
    /// The initramfs (uncompressed cpio).
    pub initramfs: PathBuf,
}

/// Each package of an `apt-cache depends` output (without Recommends, Suggests and the negative
/// relations) with the packages it asks for: for each group of alternatives its first member,
/// a virtual package by its first provider (none if nothing provides it).
fn parse_depends(out: &str) -> BTreeMap<String, Vec<String>> {
    #[derive(Default)]
    struct Member {
        name: String,
        virtual_: bool,
        providers: Vec<String>,
    }
    fn choose(group: &mut Vec<Member>, chosen: Option<&mut Vec<String>>) {
        if let (Some(first), Some(chosen)) = (group.first(), chosen) {
            if !first.virtual_ {
                chosen.push(first.name.clone());
            } else if let Some(p) = first.providers.first() {
                chosen.push(p.clone());
            }
        }
        group.clear();
    }
    let mut deps = BTreeMap::<String, Vec<String>>::new();
    let (mut package, mut group, mut open) = (None::<String>, Vec::<Member>::new(), false);
    for line in out.lines() {
        let indent = line.len() - line.trim_start_matches([' ', '|']).len();
        let body = line.trim_start_matches([' ', '|']);
        if indent == 0 {
            choose(&mut group, package.as_ref().and_then(|p| deps.get_mut(p)));
            package = Some(body.trim().to_owned());
            deps.entry(body.trim().to_owned()).or_default();
            open = false;
        } else if indent >= 4 {
            // A provider of the virtual package on the line before.
            if let Some(m) = group.last_mut() {
                m.providers.push(body.trim().to_owned());
            }
        } else if let Some((_, dep)) = body
            .split_once("Depends: ")
            .filter(|(kind, _)| matches!(*kind, "" | "Pre"))
        {
            if !open {
                choose(&mut group, package.as_ref().and_then(|p| deps.get_mut(p)));
            }
            let virtual_ = dep.starts_with('<');
            let name = dep.trim_matches(['<', '>']);
            group.push(Member {
                name: name.strip_suffix(":any").unwrap_or(name).to_owned(),
                virtual_,
                providers: Vec::new(),
            });
            open = line.starts_with(" |");
        }
    }
    choose(&mut group, package.as_ref().and_then(|p| deps.get_mut(p)));
    deps
}

/// [`PACKAGES`] and `v`'s packages with their dependency closure, less [`PRUNED`] and `v`'s
/// prunes (and what only they need), sorted.
fn closure(v: &Variant) -> Result<Vec<String>> {
    let packages: Vec<&str> = PACKAGES.iter().chain(v.packages).copied().collect();
    let pruned = || PRUNED.iter().chain(v.pruned);
    let out = output(
        Command::new("apt-cache")
            .args([
                "-t",
                SUITES,
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
            ])
            .args(&packages),
    )?;
    let deps = parse_depends(&out);
    let mut seen: BTreeSet<String> = packages.iter().map(|p| (*p).to_owned()).collect();
    let mut todo: Vec<String> = seen.iter().cloned().collect();
    while let Some(p) = todo.pop() {
        for d in deps.get(&p).into_iter().flatten() {
            if !pruned().any(|(n, _)| n == d) && seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    Ok(seen.into_iter().collect())
}

/// Adds `dir` (a directory of the tree at `root`) and everything under it to `a`, parents
/// before children, in name order (reproducible images).
fn add_tree(a: &mut Archive, root: &Path, dir: &Path) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for p in entries {
        let name = p
            .strip_prefix(root)?
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", p.display()))?;
        let meta = std::fs::symlink_metadata(&p)?;
        let perm = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&p)?;
            a.symlink(name, &target.to_string_lossy());
        } else if meta.is_dir() {
            a.dir(name);
            add_tree(a, root, &p)?;
        } else if meta.is_file() {
            a.file(name, perm, &std::fs::read(&p)?);
        }
    }
    Ok(())
}

/// The xen userland: fetches (or reuses) the packages, prints what they are, and builds the
/// initramfs unless it is up to date.
pub fn prepare() -> Result<XenUserland> {
    build(&XEN)
}

/// The libvirt userland ([`LIBVIRT`]), as [`prepare`] builds the xen one.
pub fn prepare_libvirt() -> Result<XenUserland> {
    build(&LIBVIRT)
}

/// Builds (or reuses) the initramfs of `v` in `target/debian/<name>/`; the `.deb`s of every
/// variant share the xen userland's cache.
fn build(v: &Variant) -> Result<XenUserland> {
    let k = dom0::kernel()?;
    let dir = debian_dir().join(v.name);
    let debs_dir = debian_dir().join("xen/debs");
    std::fs::create_dir_all(&debs_dir)?;
    std::fs::create_dir_all(&dir)?;
    let names = closure(v)?;
    let specs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), n.as_str())).collect();
    // Unpacked into the image: busybox and the userland's packages (of the kernel's package
    // only the modules).
    let mut unpacked = vec![k.busybox_deb.clone()];
    unpacked.extend(download(&debs_dir, &specs, SUITES)?);
    let mut debs = vec![k.kernel_deb.clone()];
    debs.extend(unpacked.iter().cloned());
    dom0::record(
        &format!("dom0 {} userland", v.name),
        &debs,
        &dir.join("packages.txt"),
    )?;

    // The example domU (/etc/xen/debian-pv.cfg): Debian's Linux with the busybox initramfs.
    let domu = dom0::prepare()?;
    // The tiny example domU (/etc/xen/hestia-pv.cfg): a test guest that reports through its
    // console and powers off.
    let pv_guest = crate::kernel::build_guests()?.join(PV_GUEST);
    let boot = [
        ("boot/vmlinuz", domu.kernel.as_path()),
        ("boot/initramfs.cpio", domu.initramfs.as_path()),
        ("boot/hestia-pv-guest", pv_guest.as_path()),
    ];

    let mut wanted = dom0::MODULES.to_vec();
    wanted.extend(XEN_MODULES);
    let modules = kmod::closure(&kmod::index(&k.modules_dir), &wanted)?;

    let mut inputs = String::new();
    for d in &debs {
        inputs.push_str(&format!("{}\n", d.display()));
    }
    for (name, path) in &modules {
        inputs.push_str(&format!("{name} {}\n", path.display()));
    }
    for (path, mode, text) in FILES.iter().chain(v.files) {
        inputs.push_str(&format!("{path} {mode:o}\n{text}\n"));
    }
    inputs.push_str(&output(Command::new("sha256sum").arg(&domu.initramfs))?);
    inputs.push_str(&output(Command::new("sha256sum").arg(&pv_guest))?);
    inputs.push_str(&format!("gzip {}\n", v.gzip));
    let initramfs = dir.join(if v.gzip {
        "initramfs.cpio.gz"
    } else {
        "initramfs.cpio"
    });
    let stamp = dir.join("inputs.txt");
    let up_to_date =
        initramfs.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == inputs);
    if !up_to_date {
        let root = dir.join("root");
        build_tree(&root, &unpacked, &k.modules_dir, &modules, &boot, v.files)?;
        let mut a = Archive::default();
        // Before devtmpfs is mounted the kernel opens /dev/console for init.
        a.dir("dev");
        a.char_device("dev/console", 0o600, 5, 1);
        add_tree(&mut a, &root, &root)?;
        if v.gzip {
            let cpio = dir.join("initramfs.cpio");
            std::fs::write(&cpio, a.finish())?;
            crate::run(Command::new("gzip").args(["-6", "-n", "-f"]).arg(&cpio))?;
        } else {
            std::fs::write(&initramfs, a.finish())?;
        }
        std::fs::write(&stamp, &inputs)?;
    }
    println!(
        "dom0 {} userland: {} ({} MiB)",
        v.name,
        initramfs.display(),
        std::fs::metadata(&initramfs)?.len() >> 20
    );
    Ok(XenUserland {
        kernel: k.vmlinuz,
        initramfs,
    })
}

/// Unpacks `debs` (the userland's packages, busybox-static among them) into a fresh `root`
/// and adds the modules, the files of [`FILES`] and of `files` (the variant's), and copies of
/// `copies` (path in the image, file).
fn build_tree(
    root: &Path,
    debs: &[PathBuf],
    modules_dir: &Path,
    modules: &[(String, PathBuf)],
    copies: &[(&str, &Path)],
    files: &[(&str, u32, &str)],
) -> Result<()> {
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    for d in ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("init", "usr/bin/busybox"),
        ("usr/bin/sh", "bash"),
    ] {
        std::os::unix::fs::symlink(target, root.join(link))?;
    }
    let mut args = vec!["--keep-directory-symlink"];
    for e in EXCLUDED {
        args.extend(["--exclude", e]);
    }
    for deb in debs {
        extract(deb, root, &args)?;
    }
    for d in [
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "mnt",
        "var",
        "usr/lib/busybox",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    for (link, target) in [("var/run", "/run"), ("var/lock", "/run/lock")] {
        let _ = std::fs::remove_dir_all(root.join(link));
        std::os::unix::fs::symlink(target, root.join(link))?;
    }
    // The modules keep their place in the kernel's tree (depmod and modprobe find them there);
    // /etc/hestia/modules lists them in load order.
    let mut order = String::new();
    for (_, path) in modules {
        let rel = path.strip_prefix(modules_dir)?;
        let dest = root.join("usr/lib/modules").join(rel);
        std::fs::create_dir_all(dest.parent().ok_or("module path without a parent")?)?;
        std::fs::copy(path, &dest)?;
        let mut parts = rel.components();
        parts.next(); // the kernel version
        order.push_str(&format!("{}\n", parts.as_path().display()));
    }
    std::fs::create_dir_all(root.join("etc/hestia"))?;
    std::fs::write(root.join("etc/hestia/modules"), order)?;
    for (path, mode, text) in FILES.iter().chain(files) {
        let dest = root.join(path);
        std::fs::create_dir_all(dest.parent().ok_or("file path without a parent")?)?;
        let _ = std::fs::remove_file(&dest);
        std::fs::write(&dest, text)?;
        std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(*mode))?;
    }
    for (path, file) in copies {
        let dest = root.join(path);
        std::fs::create_dir_all(dest.parent().ok_or("file path without a parent")?)?;
        std::fs::copy(file, dest)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_depends;

    #[test]
    fn picks_first_alternative_and_providers() {
        let out = "xen-utils-common\n \
                   |Depends: sysvinit-utils\n  \
                   Depends: lsb-base\n    \
                   sysvinit-utils\n  \
                   Depends: udev\n  \
                   Depends: <python3:any>\n    \
                   python3\n  \
                   Depends: <nothing-provides-me>\n\
                   bash\n  \
                   PreDepends: libc6\n  \
                   Recommends: bash-completion\n\
                   <python3:any>\n\
                   libc6\n";
        let deps = parse_depends(out);
        assert_eq!(
            deps["xen-utils-common"],
            ["sysvinit-utils", "udev", "python3"]
        );
        assert_eq!(deps["bash"], ["libc6"]);
        assert!(deps["libc6"].is_empty());
        assert_eq!(deps.len(), 4);
    }
}
