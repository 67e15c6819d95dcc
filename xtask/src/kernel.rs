//! Building the hypervisor ELF and the bootable hybrid (BIOS + UEFI) GRUB image.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::domu::DomU;
use crate::{Result, root_dir, target_dir};

/// Which kernel build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The normal build.
    Release,
    /// With the `test-hooks` feature (`selftest=` on the command line).
    TestHooks,
}

/// Builds the kernel; returns the ELF's path.
pub fn build(flavor: Flavor) -> Result<PathBuf> {
    crate::tools::ensure_kernel_target()?;
    let dir = target_dir().join(match flavor {
        Flavor::Release => "kernel",
        Flavor::TestHooks => "kernel-test",
    });
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root_dir())
        .args([
            "build",
            "--release",
            "-p",
            "hestia",
            "--target",
            "x86_64-unknown-none",
            "--target-dir",
        ])
        .arg(&dir);
    if flavor == Flavor::TestHooks {
        cmd.args(["--features", "test-hooks"]);
    }
    crate::run(&mut cmd)?;
    Ok(dir.join("x86_64-unknown-none/release/hestia"))
}

/// Builds the PV test guests of `tests/guests`; returns the directory holding their ELFs.
pub fn build_guests() -> Result<PathBuf> {
    let dir = target_dir().join("guests");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root_dir())
        .args([
            "build",
            "--release",
            "-p",
            "hestia-guests",
            "--target",
            "x86_64-unknown-none",
            "--target-dir",
        ])
        .arg(&dir);
    crate::run(&mut cmd)?;
    Ok(dir.join("x86_64-unknown-none/release"))
}

/// Wraps an ELF kernel in a minimal bzImage (boot protocol 2.15 header, `setup_sects` 4) whose
/// payload is compressed by `tool` (`xz` with the x86 BCJ filter, as Debian builds vmlinuz, or
/// `gzip`), followed by the 4-byte uncompressed size Linux appends. For testing the dom0
/// builder's bzImage path without downloading a distribution kernel.
pub fn make_bzimage(elf: &Path, tool: &str) -> Result<PathBuf> {
    let raw = std::fs::read(elf)?;
    let mut cmd = Command::new(tool);
    match tool {
        "xz" => cmd.args([
            "--format=xz",
            "--check=crc32",
            "--x86",
            "--lzma2=dict=1MiB",
            "-c",
        ]),
        _ => cmd.args(["-9", "-n", "-c"]),
    };
    let out = cmd
        .arg(elf)
        .output()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{tool} failed on {}", elf.display()).into());
    }
    let mut payload = out.stdout;
    payload.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    let mut image = vec![0u8; 5 * 512];
    image[0x1F1] = 4;
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    image[0x24C..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    image.extend_from_slice(&payload);
    let path = elf.with_extension(format!("bzimage-{tool}"));
    std::fs::write(&path, image)?;
    Ok(path)
}

/// Boot modules put on the image after the hypervisor.
#[derive(Clone, Debug, Default)]
pub struct Modules {
    /// dom0 kernel and its command line.
    pub dom0: Option<(PathBuf, String)>,
    /// dom0 initrd.
    pub initrd: Option<PathBuf>,
    /// Boot-time domUs: their modules follow dom0's, each kernel then its ramdisk.
    pub domus: Vec<DomU>,
}

/// Writes `grub.cfg` and runs `grub-mkrescue`; returns the image path. The multiboot2 modules
/// are dom0's kernel and initrd (each when given), then each domU's kernel and ramdisk; every
/// domU's `domU=` entry, naming its modules by index, is appended to `hv_cmdline`.
pub fn make_iso(name: &str, elf: &Path, hv_cmdline: &str, modules: &Modules) -> Result<PathBuf> {
    let stage = target_dir().join("iso").join(name);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("boot/grub"))?;
    std::fs::copy(elf, stage.join("boot/hestia.elf"))?;
    let mut lines = Vec::new();
    // --nounzip: GRUB would otherwise silently gunzip the module.
    let mut module = |from: &Path, to: &str, cmdline: &str| -> Result<usize> {
        std::fs::copy(from, stage.join("boot").join(to))?;
        lines.push(format!("  module2 --nounzip /boot/{to} {cmdline}"));
        Ok(lines.len() - 1)
    };
    if let Some((k, cmdline)) = &modules.dom0 {
        module(k, "dom0", cmdline)?;
    }
    if let Some(i) = &modules.initrd {
        module(i, "initrd", "")?;
    }
    let mut hv_cmdline = hv_cmdline.to_owned();
    for (n, d) in modules.domus.iter().enumerate() {
        let kernel = module(&d.kernel, &format!("domu{}", n + 1), &d.cmdline)?;
        let ramdisk = d
            .ramdisk
            .as_ref()
            .map(|r| module(r, &format!("domu{}-ramdisk", n + 1), ""))
            .transpose()?;
        hv_cmdline = format!("{hv_cmdline} {}", d.hv_option(kernel, ramdisk));
    }
    let mut entry = format!("  multiboot2 /boot/hestia.elf {}\n", hv_cmdline.trim());
    for l in lines {
        entry.push_str(l.trim_end());
        entry.push('\n');
    }
    let cfg = format!(
        "set timeout=0\nset default=0\nserial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n\
         menuentry \"Hestia\" {{\n{entry}  boot\n}}\n"
    );
    std::fs::write(stage.join("boot/grub/grub.cfg"), cfg)?;
    let iso = target_dir().join(format!("{name}.iso"));
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(&stage)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "grub-mkrescue failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(iso)
}
