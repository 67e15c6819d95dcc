//! External tools: checks that QEMU, GRUB, xorriso, mtools, OVMF and the Rust target are there,
//! and installs what is missing (as root through `install-deps.sh`; otherwise it prints the
//! exact command).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, root_dir};

/// OVMF firmware images (Debian's `ovmf` package).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Template for OVMF's variable store; every run gets its own copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// True if `name` is an executable file in a `PATH` directory.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

fn missing_system_tools() -> Vec<&'static str> {
    let mut missing = Vec::new();
    for (what, ok) in [
        ("qemu-system-x86_64", on_path("qemu-system-x86_64")),
        ("grub-mkrescue", on_path("grub-mkrescue")),
        ("xorriso", on_path("xorriso")),
        ("mtools", on_path("mformat")),
        ("xz-utils", on_path("xz")),
        ("gzip", on_path("gzip")),
        (
            "e2fsprogs",
            ["/sbin/mke2fs", "/usr/sbin/mke2fs"]
                .iter()
                .any(|p| Path::new(p).is_file())
                || on_path("mke2fs"),
        ),
        ("grub-pc-bin", Path::new("/usr/lib/grub/i386-pc").is_dir()),
        (
            "grub-efi-amd64-bin",
            Path::new("/usr/lib/grub/x86_64-efi").is_dir(),
        ),
        ("ovmf", Path::new(OVMF_CODE).is_file()),
    ] {
        if !ok {
            missing.push(what);
        }
    }
    missing
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Makes sure the system tools exist, installing them as root.
pub fn ensure_system_tools() -> Result<()> {
    let missing = missing_system_tools();
    if missing.is_empty() {
        return check_qemu_version();
    }
    let script = root_dir().join("xtask/install-deps.sh");
    if !is_root() {
        return Err(format!(
            "missing: {}. Install them as root with:\n    sudo bash {}\n(on Debian 12 it adds bookworm-backports for QEMU 10, then runs\n    apt-get install -y qemu-system-x86 grub-pc-bin grub-efi-amd64-bin grub-common xorriso mtools ovmf)",
            missing.join(", "),
            script.display()
        )
        .into());
    }
    eprintln!(
        "xtask: installing missing system packages ({})",
        missing.join(", ")
    );
    crate::run(Command::new("bash").arg(&script))?;
    let still = missing_system_tools();
    if !still.is_empty() {
        return Err(format!("still missing after installing: {}", still.join(", ")).into());
    }
    check_qemu_version()
}

fn check_qemu_version() -> Result<()> {
    let out = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major: u32 = text
        .split("version ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 8 {
        eprintln!(
            "xtask: warning: {} is older than 8.0: its TCG mis-emulates `INT n` in long mode (QEMU issue 1382); use QEMU 10 from bookworm-backports",
            text.lines().next().unwrap_or("QEMU")
        );
    }
    Ok(())
}

/// Makes sure rustup has the kernel target (rust-toolchain.toml names it, but an already
/// installed toolchain does not pick new targets up by itself).
pub fn ensure_kernel_target() -> Result<()> {
    let sysroot = Command::new("rustc")
        .arg("--print")
        .arg("sysroot")
        .current_dir(root_dir())
        .output()?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib/x86_64-unknown-none").is_dir() {
        return Ok(());
    }
    eprintln!("xtask: adding the x86_64-unknown-none target with rustup");
    crate::run(
        Command::new("rustup")
            .args(["target", "add", "x86_64-unknown-none"])
            .current_dir(root_dir()),
    )
}

/// True if KVM is usable with real hardware virtualisation (not merely present, as on nested
/// machines without VMX/SVM where it is far slower than TCG).
pub fn kvm_is_real() -> bool {
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    opens && hw
}
