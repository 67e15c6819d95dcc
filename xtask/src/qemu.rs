//! The one QEMU runner: every boot, interactive or scripted, goes through [`run`].
//!
//! QEMU's serial port is its stdout; the runner copies it to the log file (and the terminal when
//! echoing), types scripted input when the text it waits for appears, notes when Hestia's ready
//! line appears, and ends the run on QEMU's exit, on a stop condition, or on the timeout.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hestia_tests::{Firmware, Outcome, READY_MARKER};

use crate::{Result, target_dir, tools};

/// Between two typed bytes: paced, so that a guest under TCG takes each byte through
/// Hestia's 1 KiB serial input ring and its console without anything filling up (the longest
/// scenario command is well under 1 KiB). 10 ms types the scenarios' ~6,600 bytes in about a
/// minute; it was 30 ms.
const TYPING_DELAY: Duration = Duration::from_millis(10);

/// Accelerator choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM only with real VMX/SVM, else TCG.
    Auto,
    /// KVM.
    Kvm,
    /// TCG.
    Tcg,
    /// TCG with QEMU's instruction counter as the clock (`-icount shift=0,sleep=off`): the
    /// guest's TSC counts executed instructions (one CPU at a time), so what it times does not
    /// depend on the host's load.
    Icount,
}

/// QEMU's arguments for [`Accel::Icount`].
pub const ICOUNT_ARGS: [&str; 2] = ["-icount", "shift=0,sleep=off"];

/// The virtual machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Firmware.
    pub firmware: Firmware,
    /// CPUs.
    pub smp: u32,
    /// RAM in MiB.
    pub mem_mib: u32,
    /// Accelerator.
    pub accel: Accel,
    /// CPU model override.
    pub cpu: Option<String>,
    /// Wait for gdb on :1234 before starting.
    pub gdb: bool,
    /// Extra raw disk images, attached as virtio disks after the boot disk.
    pub disks: Vec<PathBuf>,
    /// NICs on one QEMU hub (nothing leaves QEMU), by QEMU device model, e.g. `e1000`.
    pub nics: Vec<String>,
    /// Extra QEMU devices (`-device` arguments).
    pub devices: Vec<String>,
}

/// How to run.
pub struct RunOptions<'a> {
    /// Give up after this long (`None`: never).
    pub timeout: Option<Duration>,
    /// Where the serial log goes.
    pub log_path: PathBuf,
    /// Copy the serial output to the terminal.
    pub echo: bool,
    /// Connect the terminal's stdin to the serial port.
    pub interactive: bool,
    /// Scripted input: wait for the first string, then type the second.
    pub input: Vec<(String, String)>,
    /// Stop QEMU once this holds (checked after all input is typed).
    pub stop_when: Option<&'a dyn Fn(&str) -> bool>,
}

/// What a run produced.
pub struct RunResult {
    /// Serial output.
    pub log: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Time from QEMU's start to Hestia's ready line.
    pub ready_after: Option<Duration>,
    /// Time from QEMU's start to the stop condition.
    pub stopped_after: Option<Duration>,
}

fn qemu_command(iso: &Path, m: &Machine, name: &str) -> Result<Command> {
    let accel = match m.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg | Accel::Icount => "tcg",
        Accel::Auto if tools::kvm_is_real() => "kvm",
        Accel::Auto => "tcg",
    };
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-machine",
        "q35",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
    ]);
    if m.accel == Accel::Icount {
        c.args(ICOUNT_ARGS);
    }
    c.args([
        "-accel",
        accel,
        "-m",
        &m.mem_mib.to_string(),
        "-smp",
        &m.smp.to_string(),
    ]);
    let cpu = m.cpu.clone().unwrap_or_else(|| {
        if accel == "kvm" {
            "host".into()
        } else {
            "qemu64".into()
        }
    });
    c.args(["-cpu", &cpu]);
    if m.firmware == Firmware::Uefi {
        let vars = target_dir().join(format!("ovmf-vars-{name}.fd"));
        std::fs::copy(tools::OVMF_VARS, &vars)?;
        c.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            tools::OVMF_CODE
        ));
        c.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ));
    }
    // A virtio disk, not an IDE CD-ROM: PIO CD reads cost tens of seconds under KVM. An ISO is
    // read-only; any other image is an installed system's own disk, which it writes.
    let readonly = if iso.extension().is_some_and(|e| e == "iso") {
        ",readonly=on"
    } else {
        ""
    };
    c.arg("-drive").arg(format!(
        "file={},format=raw,if=none,id=boot{readonly}",
        iso.display()
    ));
    c.args(["-device", "virtio-blk-pci,drive=boot"]);
    for (i, d) in m.disks.iter().enumerate() {
        c.arg("-drive").arg(format!(
            "file={},format=raw,if=none,id=data{i}",
            d.display()
        ));
        c.args(["-device", &format!("virtio-blk-pci,drive=data{i}")]);
    }
    for d in &m.devices {
        c.args(["-device", d]);
    }
    for (i, model) in m.nics.iter().enumerate() {
        c.args(["-netdev", &format!("hubport,id=net{i},hubid=0")]);
        c.args(["-device", &format!("{model},netdev=net{i}")]);
    }
    if m.gdb {
        c.args(["-s", "-S"]);
    }
    Ok(c)
}

/// Starts `iso` on `m` in the background, its serial output into `log` (with `m.gdb`, stopped
/// until a debugger attaches on :1234).
pub fn spawn(iso: &Path, m: &Machine, name: &str, log: &Path) -> Result<std::process::Child> {
    let mut cmd = qemu_command(iso, m, name)?;
    cmd.stdout(std::fs::File::create(log)?)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    Ok(cmd
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?)
}

/// Boots `iso` on `m`.
pub fn run(iso: &Path, m: &Machine, name: &str, o: &RunOptions<'_>) -> Result<RunResult> {
    let mut cmd = qemu_command(iso, m, name)?;
    cmd.stdout(Stdio::piped()).stdin(if o.interactive {
        Stdio::inherit()
    } else {
        Stdio::piped()
    });
    if let Some(dir) = o.log_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut log_file = std::fs::File::create(&o.log_path)?;
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no QEMU stdout")?;
    let mut stdin = child.stdin.take();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });

    let mut raw = Vec::new();
    let mut ready_after = None;
    let mut stopped_after = None;
    let mut step = 0;
    let mut searched_from = 0;
    let outcome = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(chunk) => {
                log_file.write_all(&chunk)?;
                if o.echo {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&chunk)?;
                    out.flush()?;
                }
                raw.extend_from_slice(&chunk);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                break match (status.code(), status.signal()) {
                    (Some(code), _) => Outcome::Exited(code),
                    (None, sig) => Outcome::Signalled(sig.unwrap_or(0)),
                };
            }
        }
        let log = String::from_utf8_lossy(&raw);
        if ready_after.is_none() && log.contains(READY_MARKER) {
            ready_after = Some(start.elapsed());
        }
        if let Some((wait, send)) = o.input.get(step) {
            if let Some(pos) = log[searched_from..].find(wait.as_str()) {
                searched_from += pos + wait.len();
                step += 1;
                if let Some(s) = stdin.as_mut() {
                    for b in send.bytes() {
                        s.write_all(&[b])?;
                        s.flush()?;
                        std::thread::sleep(TYPING_DELAY);
                    }
                }
            }
        } else if o.stop_when.is_some_and(|f| f(&log)) {
            stopped_after = Some(start.elapsed());
            let _ = child.kill();
            let _ = child.wait();
            break Outcome::Stopped;
        }
        if o.timeout.is_some_and(|t| start.elapsed() > t) {
            let _ = child.kill();
            let _ = child.wait();
            break Outcome::TimedOut;
        }
    };
    Ok(RunResult {
        log: String::from_utf8_lossy(&raw).into_owned(),
        outcome,
        ready_after,
        stopped_after,
    })
}

/// The last `n` lines of a log, for failure reports.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
