//! Hestia's QEMU scenario tests: what to boot and what the serial log must show.
//!
//! The runner lives in `xtask` (it owns QEMU's arguments); this crate holds the data and the
//! verdict logic ([`judge`]), which is pure and unit-tested, negative controls included.

/// Firmware to boot through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS + grub-pc.
    Bios,
    /// OVMF + grub-efi.
    Uefi,
}

/// How a run must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Hestia powers off and QEMU exits 0.
    Poweroff,
    /// Hestia reports a fatal error (trap or panic) and stops.
    Fatal,
    /// The runner stops QEMU once every input step and expectation is met (Hestia stays up).
    StopWhenSeen,
    /// Hestia resets the machine: QEMU (run with -no-reboot) exits 0 without a power-off.
    Reset,
}

/// How a finished run ended, as the runner observed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// QEMU exited with this status.
    Exited(i32),
    /// QEMU died from this signal (not sent by the runner).
    Signalled(i32),
    /// The runner killed QEMU after the timeout.
    TimedOut,
    /// The runner stopped QEMU because the scenario was complete.
    Stopped,
}

/// The verdict a test guest must print (`Test result: ...`, the XTF protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestVerdict {
    /// `Test result: SUCCESS`.
    Success,
    /// `Test result: FAILURE` (the negative control).
    Failure,
}

/// A check over a whole serial log: `Err` says what is wrong.
pub type LogCheck = fn(&str) -> Result<(), String>;

/// One QEMU scenario.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Name (also the log file name).
    pub name: &'static str,
    /// Firmware.
    pub firmware: Firmware,
    /// CPUs.
    pub smp: u32,
    /// RAM in MiB.
    pub mem_mib: u32,
    /// QEMU CPU model, if not the default.
    pub cpu: Option<&'static str>,
    /// Hypervisor command line.
    pub hv_cmdline: &'static str,
    /// Serial input: wait for the first string, then type the second.
    pub input: &'static [(&'static str, &'static str)],
    /// Substrings that must appear in the log.
    pub expect: &'static [&'static str],
    /// Substrings that must not appear.
    pub forbid: &'static [&'static str],
    /// Extra check on the whole log.
    pub check: Option<LogCheck>,
    /// How the run must end.
    pub ending: Ending,
    /// Seconds before the runner gives up.
    pub timeout_s: u64,
    /// A test guest (a binary of `tests/guests`) booted as dom0.
    pub dom0: Option<&'static str>,
    /// The verdict that guest must print.
    pub verdict: Option<GuestVerdict>,
    /// dom0's command line.
    pub dom0_cmdline: &'static str,
    /// An ext4 data disk the runner makes and attaches as dom0's second virtio disk.
    pub data_disk: Option<DataDisk>,
    /// NICs on one QEMU hub, by QEMU device model.
    pub nics: &'static [&'static str],
    /// Extra QEMU devices (`-device` arguments).
    pub devices: &'static [&'static str],
    /// Boot-time domUs, one per entry, each as `cargo xtask run --domu` takes it
    /// (`KERNEL[,ramdisk=FILE][,cmdline="..."][,mem=MIB][,vcpus=N][,weight=W][,cap=C][,cpus=LIST]`),
    /// KERNEL named as [`Scenario::dom0`] is (a guest, or [`DEBIAN_LINUX`] with its initramfs as
    /// the ramdisk unless one is given): `&["functional-foo,vcpus=2,weight=512"]`.
    pub domus: &'static [&'static str],
    /// It measures time (CPU shares, wake-up latencies): the runner gives it the machine alone,
    /// never next to another scenario.
    pub alone: bool,
}

/// An ext4 image made for a scenario, and what must be in it afterwards.
#[derive(Clone, Copy, Debug)]
pub struct DataDisk {
    /// Files (name, contents) it starts with.
    pub files: &'static [(&'static str, &'static str)],
    /// A file (name, contents) that must be there after the run (written by the guest).
    pub written: Option<(&'static str, &'static str)>,
}

/// Markers Hestia prints when something fatal happened.
pub const FATAL_MARKERS: &[&str] = &[
    "FATAL TRAP",
    "PANIC ]----",
    "Hestia: fatal error",
    "noreboot: Hestia halted",
    "frame audit FAILED",
    "W^X audit FAILED",
];
/// Marker of a clean power-off.
pub const POWEROFF_MARKER: &str = "Hestia: powering off";
/// `Scenario::dom0` value meaning "boot Hestia's own ELF as dom0" (a valid ELF64, not PV).
pub const HYPERVISOR_AS_DOM0: &str = "hestia-itself";
/// `Scenario::dom0` value meaning Debian 12's stock Linux kernel with the busybox initramfs.
pub const DEBIAN_LINUX: &str = "debian-linux";
/// `Scenario::dom0` value meaning Debian 12's stock Linux kernel with the `xen` userland
/// (Xen's toolstack from Debian's packages: xtask's `rootfs` module).
pub const DEBIAN_XEN_USERLAND: &str = "debian-linux-xen";
/// `Scenario::dom0` value meaning the `xen` userland with libvirtd and virsh (its libxl driver).
pub const DEBIAN_LIBVIRT_USERLAND: &str = "debian-linux-libvirt";
/// `Scenario::dom0` value meaning no ISO: QEMU boots the Debian 12 disk image (xtask's `disk`:
/// Hestia's package installed with `dpkg -i`, GRUB's generated default entry) from its own disk.
pub const DEBIAN_DISK: &str = "debian-disk";
/// The shell prompt of both initramfs images.
pub const DOM0_PROMPT: &str = "dom0:/# ";
/// A QEMU CPU model with SMEP and SMAP (both emulated by TCG).
pub const SMEP_SMAP_CPU: &str = "qemu64,+smep,+smap";
/// Marker of the end of boot.
pub const READY_MARKER: &str = "Hestia ready:";

/// A 4-way parallel job in dom0, then each vCPU's user time from /proc/stat.
const FOUR_WAY_JOB: &[(&str, &str)] = &[
    (
        DOM0_PROMPT,
        "for i in 1 2 3 4; do (timeout 3 yes > /dev/null &); done; sleep 5; \
         awk '/^cpu[0-9]/ {print \"busy\", $1, ($2 > 50 ? \"yes\" : \"no\")}' \
         /proc/stat\n",
    ),
    (DOM0_PROMPT, "poweroff\n"),
];

/// What [`FOUR_WAY_JOB`] prints when dom0 has 4 vCPUs that all took part.
const FOUR_BUSY_VCPUS: &[&str] = &[
    "hestia-dom0: Linux",
    "4 CPUs",
    "busy cpu0 yes",
    "busy cpu1 yes",
    "busy cpu2 yes",
    "busy cpu3 yes",
    POWEROFF_MARKER,
];

const DEFAULT: Scenario = Scenario {
    name: "",
    firmware: Firmware::Bios,
    smp: 2,
    mem_mib: 1024,
    cpu: None,
    hv_cmdline: "",
    input: &[],
    expect: &[READY_MARKER, "no dom0 kernel given", POWEROFF_MARKER],
    forbid: &[],
    check: None,
    ending: Ending::Poweroff,
    timeout_s: 60,
    dom0: None,
    verdict: None,
    dom0_cmdline: "",
    data_disk: None,
    nics: &[],
    devices: &[],
    domus: &[],
    alone: false,
};

/// Debian's Linux as dom0, driven through its shell. Its kernel log must stay free of oopses,
/// panics, kernel warnings and W+X mappings.
const fn linux(name: &'static str) -> Scenario {
    Scenario {
        name,
        timeout_s: 240,
        dom0: Some(DEBIAN_LINUX),
        dom0_cmdline: "console=hvc0 earlyprintk=xen",
        expect: &["hestia-dom0: Linux", POWEROFF_MARKER],
        forbid: LINUX_FORBID,
        ..DEFAULT
    }
}

/// What a healthy Linux boot never prints.
const LINUX_FORBID: &[&str] = &[
    "Kernel panic",
    "BUG: ",
    "Oops",
    "WARNING: CPU",
    "W+X mappings: FAILED",
    "general protection fault",
    "xen map irq failed",
    "xen_mcelog: Failed",
];

/// A PV test guest run as dom0 that must print `verdict` and power off.
const fn guest(name: &'static str, verdict: GuestVerdict) -> Scenario {
    Scenario {
        name,
        hv_cmdline: "dom0_mem=64M",
        expect: &[POWEROFF_MARKER],
        dom0: Some(name),
        verdict: Some(verdict),
        ..DEFAULT
    }
}

/// Boot-time domUs without dom0 (the machine powers off when the last one stops).
const fn sched_scenario(name: &'static str) -> Scenario {
    Scenario { name, ..DEFAULT }
}

/// A QEMU CPU model with XSAVE, XSAVEOPT and AVX (emulated by TCG).
const AVX_CPU: &str = "max";

/// A QEMU CPU model vulnerable to L1TF whose L1D compares more address bits than CPUID
/// reports (Skylake: 46 against TCG's 40).
const L1TF_CPU: &str = "Skylake-Client";

/// `xsa-style-l1tf` writing an L1 entry through the path its command line names, in dom0
/// checked by `pv-l1tf=dom0`: the domain is crashed, and Hestia survives (to reset the
/// machine, as after any dom0 crash).
const fn l1tf_crash(name: &'static str, dom0_cmdline: &'static str) -> Scenario {
    Scenario {
        name,
        hv_cmdline: "dom0_mem=64M pv-l1tf=dom0",
        dom0: Some("xsa-style-l1tf"),
        dom0_cmdline,
        expect: &[
            "L1TF-vulnerable L1e",
            "d0: crashed (L1TF-vulnerable PTE)",
            "dom0 crashed: resetting the machine",
        ],
        forbid: &["Test result:"],
        ending: Ending::Reset,
        ..DEFAULT
    }
}

/// Lines of a register dump (a symbolised RIP in the image, control and general registers).
const DUMP_RIP: &str = "RIP:    e008:[<ffff82d08";
const DUMP_CR2: &str = "CR2: ";
const DUMP_RAX: &str = "rax: ";
const DUMP_R15: &str = "r15: ";
const DUMP_BACKTRACE: &str = "Backtrace (frame pointers):";

/// The Linux scenarios that run again in the [hardened] configuration: one boot, and the
/// toolstack's heaviest user of foreign mappings and domain building. The other Linux and
/// toolstack scenarios take minutes each on TCG and exercise no entry path these two do not.
const HARDENED_LINUX: &[&str] = &["dom0-linux-shell-poweroff", "dom0-xl-create"];

/// Every scenario `cargo xtask test` runs: the base set, then every PV test guest and the
/// Linux scenarios of [`HARDENED_LINUX`] again in the [hardened] configuration.
pub fn all() -> Vec<Scenario> {
    let mut all = base();
    let again: Vec<Scenario> = all
        .iter()
        .filter(|s| {
            let test_guest = s.dom0.is_some_and(|d| {
                ![
                    DEBIAN_LINUX,
                    DEBIAN_XEN_USERLAND,
                    DEBIAN_LIBVIRT_USERLAND,
                    HYPERVISOR_AS_DOM0,
                ]
                .contains(&d)
            });
            (test_guest || HARDENED_LINUX.contains(&s.name))
                && s.cpu.is_none()
                && !s.hv_cmdline.contains("xpti=")
        })
        .map(hardened)
        .collect();
    all.extend(again);
    all.extend(install());
    all
}

/// dom0 found the ACPI tables: on UEFI only through the EFI configuration tables Hestia passes
/// with `XEN_FW_EFI_INFO` (without them Linux printed this and ran without ACPI).
fn check_dom0_found_acpi(log: &str) -> Result<(), String> {
    if log.contains("A valid RSDP was not found") {
        return Err("dom0 found no ACPI RSDP".into());
    }
    Ok(())
}

/// An installed Debian 12 on its own disk (BIOS: GRUB in the MBR; UEFI: GRUB on the ESP): GRUB's
/// default entry, written by the package's generator, boots Hestia with Debian's kernel and
/// Debian's own initramfs as dom0; systemd logs root in on hvc0 (the image's autologin), where
/// `hestia-check` reports the system's state, Debian's xen and xendomains services, `xl list`,
/// `xl create` of a test guest from /etc/xen, and powers off with systemctl.
fn install() -> Vec<Scenario> {
    let bios = Scenario {
        name: "install-debian-bios",
        dom0: Some(DEBIAN_DISK),
        timeout_s: 900,
        input: &[("root@hestia-test:~# ", "hestia-check\n")],
        expect: &[
            "Loading Hestia ",
            READY_MARKER,
            "hestia-test login: ",
            "hestia-check: system running",
            "hestia-check: service xen active",
            "hestia-check: service xendomains active",
            "hestia-check: hypervisor xen 4.17",
            "Domain-0                                     0",
            "hestia-check: domU created",
            "Test result: SUCCESS",
            "hestia-check: domU gone",
            POWEROFF_MARKER,
        ],
        forbid: LINUX_FORBID,
        check: Some(check_dom0_found_acpi),
        ..DEFAULT
    };
    vec![
        bios,
        Scenario {
            name: "install-debian-uefi",
            firmware: Firmware::Uefi,
            ..bios
        },
    ]
}

/// What the hardened runs add to the command line: XPTI forced on (Xen's default on a CPU
/// vulnerable to Meltdown; QEMU's `qemu64` is an AMD model, where it is off).
pub const HARDENED_CMDLINE: &str = "xpti=on";

/// `s` in the hardened configuration, as Hestia runs on a vulnerable Intel CPU: XPTI, SMEP
/// and SMAP, named `hardened-<name>`, with twice the time. Hestia must say both are on.
pub fn hardened(s: &Scenario) -> Scenario {
    let leak = |v: String| -> &'static str { Box::leak(v.into_boxed_str()) };
    let mut expect = s.expect.to_vec();
    expect.extend(["xpti: dom0 enabled", "cpu: SMEP on, SMAP on"]);
    Scenario {
        name: leak(format!("hardened-{}", s.name)),
        // Every entry and exit switches page tables and flushes the TLB, which TCG makes
        // far dearer than hardware does.
        timeout_s: s.timeout_s * 2,
        cpu: Some(SMEP_SMAP_CPU),
        hv_cmdline: leak(format!("{} {HARDENED_CMDLINE}", s.hv_cmdline)),
        expect: Box::leak(expect.into_boxed_slice()),
        ..*s
    }
}

fn base() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "boot-bios",
            expect: &[
                READY_MARKER,
                "(BIOS)",
                "no dom0 kernel given",
                POWEROFF_MARKER,
            ],
            // The PIT calibrates the TSC under QEMU: a zero rate means the boot clobbered it.
            forbid: &["TSC 0.000 MHz"],
            ..DEFAULT
        },
        Scenario {
            name: "boot-uefi",
            firmware: Firmware::Uefi,
            expect: &[
                READY_MARKER,
                "(UEFI)",
                "no dom0 kernel given",
                POWEROFF_MARKER,
            ],
            // The PIT calibrates the TSC under QEMU: a zero rate means the boot clobbered it.
            forbid: &["TSC 0.000 MHz"],
            ..DEFAULT
        },
        Scenario {
            name: "smp4-mem2048-bios",
            smp: 4,
            mem_mib: 2048,
            check: Some(check_4cpus_2048mib),
            ..DEFAULT
        },
        Scenario {
            name: "smp4-mem2048-uefi",
            firmware: Firmware::Uefi,
            smp: 4,
            mem_mib: 2048,
            check: Some(check_4cpus_2048mib),
            ..DEFAULT
        },
        Scenario {
            name: "wx-audit",
            expect: &[
                "W^X audit: ",
                "none writable+executable, none user-accessible",
                POWEROFF_MARKER,
            ],
            forbid: &["W^X audit FAILED"],
            ..DEFAULT
        },
        Scenario {
            name: "smp-timers-and-ipis",
            smp: 4,
            hv_cmdline: "selftest=smp",
            expect: &[
                "CPU0 timer interrupts: 5/5 ok",
                "CPU1 timer interrupts: 5/5 ok",
                "CPU2 timer interrupts: 5/5 ok",
                "CPU3 timer interrupts: 5/5 ok",
                "CPU0->CPU3 IPI round trip ok",
                "selftest: smp PASS",
                POWEROFF_MARKER,
            ],
            ..DEFAULT
        },
        // vCPU FPU states through the registers and back: FXSAVE/FXRSTOR on qemu64 (no
        // XSAVE), XSAVEOPT/XRSTOR with AVX on `max`.
        Scenario {
            name: "fpu-selftest-fxsave",
            cpu: Some("qemu64"),
            hv_cmdline: "selftest=fpu",
            expect: &["selftest: fpu PASS (FXSAVE,", POWEROFF_MARKER],
            ..DEFAULT
        },
        Scenario {
            name: "fpu-selftest-xsave",
            cpu: Some(AVX_CPU),
            hv_cmdline: "selftest=fpu",
            expect: &["selftest: fpu PASS (XSAVEOPT/XRSTOR,", POWEROFF_MARKER],
            ..DEFAULT
        },
        Scenario {
            // TCG cannot emulate TSC-deadline (QEMU drops the CPUID bit); that timer mode is
            // exercised only on KVM hosts.
            name: "x2apic-smp",
            smp: 4,
            cpu: Some("qemu64,+x2apic"),
            hv_cmdline: "selftest=smp",
            expect: &[
                "apic: x2APIC mode",
                "4 CPUs online",
                "selftest: smp PASS",
                POWEROFF_MARKER,
            ],
            ..DEFAULT
        },
        Scenario {
            name: "fault-invalid-opcode",
            hv_cmdline: "selftest=fault",
            expect: &[
                "FATAL TRAP: vector 6 (#UD invalid opcode)",
                DUMP_RIP,
                DUMP_CR2,
                DUMP_RAX,
                DUMP_R15,
                DUMP_BACKTRACE,
                "hestia::selftest::raise_invalid_opcode",
                "hestia::selftest::run",
                "Hestia: fatal error",
            ],
            ending: Ending::Fatal,
            ..DEFAULT
        },
        Scenario {
            name: "fault-page-fault",
            hv_cmdline: "selftest=pagefault",
            expect: &[
                "FATAL TRAP: vector 14 (#PF page fault)",
                "Page fault at 0x00000000dead0000: not-present read data access",
                DUMP_RIP,
                DUMP_BACKTRACE,
                "Hestia: fatal error",
            ],
            ending: Ending::Fatal,
            ..DEFAULT
        },
        // SMEP and SMAP on (TCG emulates both): Hestia's supervisor read of a user page outside
        // its copy routine faults.
        Scenario {
            name: "smap-stray-access",
            cpu: Some(SMEP_SMAP_CPU),
            hv_cmdline: "selftest=smap",
            expect: &[
                "cpu: SMEP on, SMAP on",
                "FATAL TRAP: vector 14 (#PF page fault)",
                "Page fault at 0xffff800000000000: present read data access",
                "Hestia: fatal error",
            ],
            forbid: &["SMAP is off"],
            ending: Ending::Fatal,
            ..DEFAULT
        },
        Scenario {
            name: "fault-stack-overflow",
            hv_cmdline: "selftest=stackoverflow",
            expect: &[
                "FATAL TRAP: vector 8 (#DF double fault)",
                "is a stack guard page: stack overflow",
                DUMP_RIP,
                "Hestia: fatal error",
            ],
            ending: Ending::Fatal,
            ..DEFAULT
        },
        Scenario {
            name: "panic-backtrace",
            hv_cmdline: "selftest=panic",
            expect: &[
                "PANIC ]----",
                "selftest: deliberate panic",
                "Backtrace (frame pointers):",
                "hestia::continue_boot",
                "Hestia: fatal error",
            ],
            ending: Ending::Fatal,
            ..DEFAULT
        },
        Scenario {
            name: "noreboot-keeps-halted",
            hv_cmdline: "noreboot selftest=fault",
            expect: &["FATAL TRAP", "noreboot: Hestia halted after a fatal error"],
            forbid: &[POWEROFF_MARKER, "powering off"],
            ending: Ending::StopWhenSeen,
            ..DEFAULT
        },
        Scenario {
            name: "cmdline-options",
            hv_cmdline: "loglvl=debug com1=115200,8n1,0x3f8,4 console=com1 dom0_mem=512M,max:1G dom0_max_vcpus=2 frobnicate loglvl=nonsense",
            expect: &[
                "cmdline: unknown option 'frobnicate' ignored",
                "cmdline: bad value 'nonsense' for 'loglvl' ignored",
                "DEBUG smp: CPU1 (APIC id 1) online",
                POWEROFF_MARKER,
            ],
            ..DEFAULT
        },
        Scenario {
            name: "reset-key",
            hv_cmdline: "noreboot",
            input: &[("debug keys on the serial line", "R")],
            expect: &["'R' pressed -> reboot the machine"],
            ending: Ending::Reset,
            ..DEFAULT
        },
        Scenario {
            name: "large-memory",
            mem_mib: 6144,
            check: Some(check_ram_6144mib),
            ..DEFAULT
        },
        guest("functional-start-info", GuestVerdict::Success),
        guest("functional-hypercall-page", GuestVerdict::Success),
        guest("functional-xen-version", GuestVerdict::Success),
        // The same checks from a domU: the privileged sub-ops denied as Xen denies them.
        // (A boot-time domU without dom0: the machine powers off once it is done.)
        Scenario {
            domus: &["functional-xen-version,mem=16"],
            expect: &["(d1) Test result: SUCCESS", POWEROFF_MARKER],
            ..sched_scenario("functional-xen-version-domu")
        },
        // `mca-limit`: also ask for fewer CPUs than there are (which crashes Xen 4.17).
        Scenario {
            dom0_cmdline: "mca-limit",
            ..guest("functional-mca", GuestVerdict::Success)
        },
        // The same from a domU: EPERM before the version check.
        Scenario {
            domus: &["functional-mca,mem=16"],
            expect: &["(d1) Test result: SUCCESS", POWEROFF_MARKER],
            ..sched_scenario("functional-mca-domu")
        },
        guest("functional-domctl-info", GuestVerdict::Success),
        guest("functional-domctl-lifecycle", GuestVerdict::Success),
        // The toolstack's calls from a domU: EPERM after the version check.
        Scenario {
            domus: &["functional-domctl-info,mem=16"],
            expect: &["(d1) Test result: SUCCESS", POWEROFF_MARKER],
            ..sched_scenario("functional-domctl-info-domu")
        },
        guest("functional-enosys", GuestVerdict::Success),
        guest("xsa-style-bad-pointers", GuestVerdict::Success),
        guest("functional-exceptions", GuestVerdict::Success),
        guest("functional-trap-args", GuestVerdict::Success),
        guest("functional-mmu", GuestVerdict::Success),
        guest("functional-linear-pagetables", GuestVerdict::Success),
        guest("functional-evtchn-timer", GuestVerdict::Success),
        guest("functional-evtchn-interdomain", GuestVerdict::Success),
        guest("functional-evtchn-ports", GuestVerdict::Success),
        guest("functional-evtchn-fifo", GuestVerdict::Success),
        // Two vCPUs: the second flips event words while the first queues events behind them.
        Scenario {
            smp: 2,
            ..guest("xsa-style-evtchn-fifo-control", GuestVerdict::Success)
        },
        // The same in dom0 and a domU at once (each the other's "another domain" for reset).
        Scenario {
            name: "xsa-style-evtchn-fifo-control-with-domu",
            smp: 2,
            domus: &["xsa-style-evtchn-fifo-control,mem=16"],
            expect: &["(d1) Test result: SUCCESS", POWEROFF_MARKER],
            timeout_s: 120,
            ..guest("xsa-style-evtchn-fifo-control", GuestVerdict::Success)
        },
        // One CPU, two vCPUs: user mode runs across vCPU switches.
        Scenario {
            smp: 1,
            hv_cmdline: "dom0_mem=64M dom0_max_vcpus=2",
            ..guest("functional-user-mode", GuestVerdict::Success)
        },
        // It fills dom0 up to its ceiling, which only `max:` sets (as on Xen).
        Scenario {
            hv_cmdline: "dom0_mem=64M,max:64M",
            ..guest("functional-memory-op", GuestVerdict::Success)
        },
        guest("functional-decrease-reservation", GuestVerdict::Success),
        guest("functional-memory-exchange", GuestVerdict::Success),
        Scenario {
            hv_cmdline: "dom0_mem=64M",
            ..guest("functional-memop-max-order", GuestVerdict::Success)
        },
        // The same from a domU: order 10 is above an ordinary domain's maximum.
        Scenario {
            domus: &["functional-memop-max-order,mem=16"],
            expect: &["(d1) Test result: SUCCESS", POWEROFF_MARKER],
            ..sched_scenario("functional-memop-max-order-domu")
        },
        guest("functional-continuation", GuestVerdict::Success),
        guest("functional-multicall-iret", GuestVerdict::Success),
        guest("functional-fpu", GuestVerdict::Success),
        guest("functional-descriptors", GuestVerdict::Success),
        // Two vCPUs on one CPU: each vCPU's GDT is its own across switches (the CPU's copy is
        // rewritten only as far as the last vCPU's reached).
        Scenario {
            name: "functional-descriptors-switch",
            smp: 1,
            hv_cmdline: "dom0_mem=64M dom0_max_vcpus=2",
            dom0_cmdline: "switch",
            expect: &[
                "20 rounds: vCPU 1 saw vCPU 0's entries 0 times",
                POWEROFF_MARKER,
            ],
            ..guest("functional-descriptors", GuestVerdict::Success)
        },
        guest("functional-ldt", GuestVerdict::Success),
        guest("functional-debugreg", GuestVerdict::Success),
        guest("functional-iopl", GuestVerdict::Success),
        guest("functional-architectural-iopl", GuestVerdict::Success),
        guest("functional-ioport", GuestVerdict::Success),
        guest("functional-msr-cr", GuestVerdict::Success),
        guest("functional-ptwr", GuestVerdict::Success),
        guest("functional-iomem", GuestVerdict::Success),
        // Two vCPUs: vCPU 1 is up while vCPU 0 tries to move its vcpu_info.
        Scenario {
            hv_cmdline: "dom0_mem=64M dom0_max_vcpus=2",
            ..guest("functional-vcpu-info", GuestVerdict::Success)
        },
        guest("functional-gs-selector", GuestVerdict::Success),
        guest("functional-cpuid-policy", GuestVerdict::Success),
        guest("functional-cpu-policy", GuestVerdict::Success),
        // With a running domU: dom0 may not set its policy (EEXIST); the domU gets EPERM.
        Scenario {
            name: "functional-cpu-policy-domu",
            dom0_cmdline: "domu",
            domus: &["functional-cpu-policy,mem=16"],
            expect: &[
                "(d1) Test result: SUCCESS",
                "d1: shut down (power off",
                POWEROFF_MARKER,
            ],
            ..guest("functional-cpu-policy", GuestVerdict::Success)
        },
        // On a CPU with XSAVE and AVX: leaf 0xD's sub-leaves, OSXSAVE and the XSAVE size.
        Scenario {
            name: "functional-cpu-policy-xsave",
            cpu: Some(AVX_CPU),
            ..guest("functional-cpu-policy", GuestVerdict::Success)
        },
        Scenario {
            expect: &["spec-ctrl: Support for PV VMs: None", POWEROFF_MARKER],
            ..guest("functional-spec-ctrl", GuestVerdict::Success)
        },
        // VERW forced on every exit to the guest (TCG's qemu64 does not need it): the boot log
        // says so, and 22,000 exits through it leave Hestia and the guest well.
        Scenario {
            name: "functional-spec-ctrl-verw",
            hv_cmdline: "dom0_mem=64M spec-ctrl=verw,ibpb-entry",
            expect: &["spec-ctrl: Support for PV VMs: VERW,", POWEROFF_MARKER],
            forbid: &["'spec-ctrl", "for 'spec-ctrl'"],
            ..guest("functional-spec-ctrl", GuestVerdict::Success)
        },
        guest("functional-pirq", GuestVerdict::Success),
        // QEMU's `edu` device raises MSIs on request.
        Scenario {
            devices: &["edu"],
            ..guest("functional-msi", GuestVerdict::Success)
        },
        // Two vCPUs: bring-up, down/up, and TLB shootdown seen from the other vCPU.
        Scenario {
            smp: 2,
            ..guest("functional-vcpu-up", GuestVerdict::Success)
        },
        // 20,000 NMIs (remote flushes) into the GS windows of the other vCPU's hypercalls
        // (about 40 s of TCG on a loaded 2-core machine).
        Scenario {
            smp: 2,
            timeout_s: 120,
            ..guest("stress-nmi-windows", GuestVerdict::Success)
        },
        // Each vCPU's SSE/x87 state survives hypercalls, upcalls and shootdown NMIs.
        Scenario {
            smp: 2,
            ..guest("functional-fpu-isolation", GuestVerdict::Success)
        },
        // x87/SSE/AVX state of 8 vCPUs on 2 CPUs survives thousands of context switches.
        Scenario {
            smp: 2,
            cpu: Some(AVX_CPU),
            hv_cmdline: "dom0_mem=64M dom0_max_vcpus=8",
            timeout_s: 180,
            ..guest("functional-fpu-context", GuestVerdict::Success)
        },
        Scenario {
            // A domain with 64 vCPUs, Hestia's most, on 2 CPUs: all come up, each keeps its
            // own x87/SSE/AVX state across the switches (300 rounds each).
            name: "functional-fpu-context-64-vcpus",
            smp: 2,
            cpu: Some(AVX_CPU),
            hv_cmdline: "dom0_mem=64M dom0_max_vcpus=64",
            dom0_cmdline: "vcpus=64 rounds=300",
            timeout_s: 300,
            ..guest("functional-fpu-context", GuestVerdict::Success)
        },
        // The credit scheduler between boot-time domUs (no dom0), each domU measuring its own
        // share of a CPU from its runstate over one common 10 s window: weights 256/512/1024
        // pinned to CPU 0 give 1/7, 2/7, 4/7 within 5 points of the CPU (as the cap's 2 points;
        // measured within 2: the smallest share runs 1-7 % high, see docs/scheduling.md).
        Scenario {
            smp: 2,
            domus: &[
                "functional-sched-credit,cmdline=\"hog share=142857 tol=50000\",mem=16,weight=256,cpus=0",
                "functional-sched-credit,cmdline=\"hog share=285714 tol=50000\",mem=16,weight=512,cpus=0",
                "functional-sched-credit,cmdline=\"hog share=571429 tol=50000\",mem=16,weight=1024,cpus=0",
            ],
            expect: &[
                "(d1) Test result: SUCCESS",
                "(d2) Test result: SUCCESS",
                "(d3) Test result: SUCCESS",
                "every domain has stopped",
                POWEROFF_MARKER,
            ],
            timeout_s: 120,
            alone: true,
            ..sched_scenario("sched-credit-weights")
        },
        // A 25% cap holds (within 2 points) on a CPU nothing else wants.
        Scenario {
            smp: 2,
            domus: &[
                "functional-sched-credit,cmdline=\"hog share=250000 tol=20000\",mem=16,cap=25,cpus=0",
            ],
            expect: &["(d1) Test result: SUCCESS", POWEROFF_MARKER],
            timeout_s: 120,
            alone: true,
            ..sched_scenario("sched-credit-cap")
        },
        // Pinning: two hogs that may use only CPU 1 of 2 share it, half each.
        Scenario {
            smp: 2,
            domus: &[
                "functional-sched-credit,cmdline=\"hog share=500000 tol=25000\",mem=16,cpus=1",
                "functional-sched-credit,cmdline=\"hog share=500000 tol=25000\",mem=16,cpus=1",
            ],
            expect: &[
                "(d1) Test result: SUCCESS",
                "(d2) Test result: SUCCESS",
                POWEROFF_MARKER,
            ],
            timeout_s: 120,
            alone: true,
            ..sched_scenario("sched-credit-pinned")
        },
        // BOOST: a domU woken by its timer preempts a CPU hog on its CPU within 1 ms.
        Scenario {
            smp: 2,
            domus: &[
                "functional-sched-credit,cmdline=\"hog share=500000 tol=500000\",mem=16,cpus=0",
                "functional-sched-credit,cmdline=waker,mem=16,cpus=0",
            ],
            expect: &[
                "(d1) Test result: SUCCESS",
                "(d2) Test result: SUCCESS",
                POWEROFF_MARKER,
            ],
            timeout_s: 120,
            alone: true,
            ..sched_scenario("sched-credit-boost")
        },
        // dom0, as the toolstack, pauses (nested), unpauses and destroys a running domU.
        Scenario {
            smp: 2,
            domus: &["functional-domctl-pause,cmdline=domu,mem=16"],
            expect: &["d1: destroyed by d0", POWEROFF_MARKER],
            forbid: &["(d1) Test result", "frame audit FAILED"],
            timeout_s: 120,
            ..guest("functional-domctl-pause", GuestVerdict::Success)
        },
        // dom0 shuts a running domU down with SCHEDOP_remote_shutdown (after the domU found it
        // may not do the same to dom0); dom0 runs on.
        Scenario {
            smp: 2,
            domus: &["functional-remote-shutdown,cmdline=domu,mem=16"],
            expect: &[
                "(d1) Test result: SUCCESS",
                "d1: shut down (power off",
                POWEROFF_MARKER,
            ],
            timeout_s: 120,
            ..guest("functional-remote-shutdown", GuestVerdict::Success)
        },
        // The control domain's foreign-memory calls alone (-ESRCH naming itself by id or a
        // missing domain, claim and memory-map checks), then building a domU's memory:
        // claim, populate (2 MiB, then 4 KiB to its maximum), foreign mappings, a pin on its
        // behalf, and a frame kept mapped while the domU dies, freed when unmapped.
        guest("functional-foreign-memory", GuestVerdict::Success),
        Scenario {
            name: "functional-foreign-memory-domu",
            smp: 2,
            dom0_cmdline: "peer",
            domus: &["functional-foreign-memory,cmdline=domu,mem=16"],
            expect: &[
                "(d1) Test result: SUCCESS",
                "d1: destroyed:",
                "d1: its last frames mapped by others freed",
                POWEROFF_MARKER,
            ],
            timeout_s: 120,
            ..guest("functional-foreign-memory", GuestVerdict::Success)
        },
        // What libxenguest's PV save and restore issue besides memory (Xen 4.17's answers):
        // alone, the M2P mapped read-only through DOMID_XEN, getpageframeinfo3 and the refusals
        // on the calling vCPU (passes on the Xen rig); with a domU, its state read and written
        // back (extended context, XSAVE record and bad ones, MSRs, shadow_op); without XSAVE
        // (qemu64) the record is the two words only.
        guest("functional-save-restore-ops", GuestVerdict::Success),
        Scenario {
            name: "functional-save-restore-ops-domu",
            smp: 2,
            dom0_cmdline: "peer",
            domus: &["functional-save-restore-ops,cmdline=domu,mem=16"],
            // A CPU with XSAVE and AVX, so the XSAVE record is a real one.
            cpu: Some(AVX_CPU),
            expect: &["Test result: SUCCESS", POWEROFF_MARKER],
            timeout_s: 120,
            ..guest("functional-save-restore-ops", GuestVerdict::Success)
        },
        // XEN_DOMCTL_resumedomain: alone, its refusals (passes on the Xen rig); with a domU that
        // suspends twice, resumed untouched (its suspend returns 0), then as `xl save -c`
        // resumes (RAX set to 1 through the vCPU context: its suspend returns 1).
        guest("functional-resumedomain", GuestVerdict::Success),
        Scenario {
            name: "functional-resumedomain-domu",
            smp: 2,
            dom0_cmdline: "peer",
            domus: &["functional-resumedomain,cmdline=domu,mem=16"],
            expect: &[
                "(d1) Test result: SUCCESS",
                "d1: resumed",
                "d1: destroyed:",
                POWEROFF_MARKER,
            ],
            timeout_s: 120,
            ..guest("functional-resumedomain", GuestVerdict::Success)
        },
        // Event channels between dom0 (2-level) and a boot-time domU (FIFO): both directions,
        // close and the domU's EVTCHNOP_reset seen by the peer, dom0 reading and allocating the
        // domU's ports, the domU refused dom0's; the domU's destruction leaves dom0's end
        // unbound.
        Scenario {
            name: "functional-evtchn-interdomain-domu",
            smp: 2,
            dom0_cmdline: "peer",
            domus: &["functional-evtchn-interdomain,cmdline=domu,mem=16"],
            expect: &[
                "(d1) Test result: SUCCESS",
                "d1: destroyed:",
                POWEROFF_MARKER,
            ],
            timeout_s: 120,
            ..guest("functional-evtchn-interdomain", GuestVerdict::Success)
        },
        // dom0 and a domU race on the same channels on two CPUs, the domU dying in the middle:
        // no deadlock, no port left naming the destroyed domain.
        Scenario {
            smp: 2,
            domus: &["xsa-style-evtchn-race,cmdline=domu,mem=16"],
            expect: &[
                "(d1) Test result: SUCCESS",
                "d1: destroyed:",
                POWEROFF_MARKER,
            ],
            forbid: &["did not name it", "not closed at destruction"],
            timeout_s: 120,
            ..guest("xsa-style-evtchn-race", GuestVerdict::Success)
        },
        // Grants between dom0 and a boot-time domU: the domU powers off while dom0 maps its
        // page; the frame stays until dom0 unmaps it, then Hestia frees it.
        Scenario {
            smp: 2,
            domus: &["xsa-style-grant-foreign,cmdline=domu,mem=16"],
            expect: &[
                "(d1) Test result: SUCCESS",
                "(1 kept)",
                "d1: its last frames mapped by others freed",
                POWEROFF_MARKER,
            ],
            forbid: &["frame audit FAILED"],
            timeout_s: 120,
            ..guest("xsa-style-grant-foreign", GuestVerdict::Success)
        },
        // Two domUs die under dom0's mappings of their pages: unmapping the first one's frees
        // it while the second stays a zombie (every zombie is swept, not only the last).
        Scenario {
            name: "xsa-style-grant-foreign-two-zombies",
            smp: 2,
            dom0_cmdline: "two",
            domus: &[
                "xsa-style-grant-foreign,cmdline=domu,mem=16",
                "xsa-style-grant-foreign,cmdline=domu,mem=16",
            ],
            expect: &[
                "(d1) Test result: SUCCESS",
                "(d2) Test result: SUCCESS",
                POWEROFF_MARKER,
            ],
            forbid: &["frame audit FAILED"],
            check: Some(check_zombies_freed_in_order),
            timeout_s: 120,
            ..guest("xsa-style-grant-foreign", GuestVerdict::Success)
        },
        // A dead domain's frames go back dirty and are zeroed before anyone gets them: alone,
        // the pages dom0 is given read as zeroes (also on the Xen rig); with a domU that fills
        // its memory with a pattern and dies, on one CPU so that no idle scrubbing runs before
        // dom0 takes its frames, none shows the pattern.
        Scenario {
            hv_cmdline: "dom0_mem=32M,max:64M",
            ..guest("xsa-style-scrub", GuestVerdict::Success)
        },
        Scenario {
            name: "xsa-style-scrub-domu",
            smp: 1,
            hv_cmdline: "dom0_mem=32M,max:64M",
            dom0_cmdline: "peer",
            domus: &["xsa-style-scrub,cmdline=domu,mem=16"],
            expect: &[
                "(d1) Test result: SUCCESS",
                "d1: destroyed:",
                POWEROFF_MARKER,
            ],
            timeout_s: 120,
            ..guest("xsa-style-scrub", GuestVerdict::Success)
        },
        // Domain destruction: a boot-time domU that stops is destroyed (every frame returned,
        // dirty, the frame table audited) and, under the test hook, built again: after 100
        // builds and destroys the free memory is exactly what it was before the first.
        Scenario {
            smp: 2,
            hv_cmdline: "selftest=domu-cycles",
            domus: &["functional-sched-credit,cmdline=exit,mem=16,vcpus=2"],
            expect: &[
                "d1: destroyed: 4097 frames returned (0 kept)",
                "selftest: domu-cycles PASS: 100 domains built and destroyed",
                POWEROFF_MARKER,
            ],
            forbid: &["frame audit FAILED", "selftest: domu-cycles FAIL"],
            timeout_s: 240,
            ..sched_scenario("domu-destroy-cycles")
        },
        // A domU that crashes stops alone: the others run on to their verdicts.
        Scenario {
            smp: 2,
            domus: &[
                "crash-invalid-opcode,mem=16",
                "functional-sched-credit,cmdline=\"hog share=1000000 tol=1000000\",mem=16",
            ],
            expect: &[
                "d1: crashed",
                "(d2) Test result: SUCCESS",
                "every domain has stopped",
                POWEROFF_MARKER,
            ],
            timeout_s: 120,
            ..sched_scenario("domu-crash-alone")
        },
        // Structured fuzzing: 10^6 calls on two racing vCPUs (about 100 s of TCG), then
        // Hestia's frame audit (its FAILED line is fatal). The seed is printed; `cargo xtask
        // test fuzz SEED` replays it, `cargo xtask fuzz --calls N` runs more, `--known` adds the
        // requests that reach the holes of issue 8 still open.
        Scenario {
            smp: 2,
            timeout_s: 300,
            expect: &["d0: frame audit: ok", POWEROFF_MARKER],
            ..guest("fuzz-hypercalls", GuestVerdict::Success)
        },
        // 2 x 100,000 hypercalls and upcalls: also a stress test of the entry/exit paths.
        guest("bench-hypercalls", GuestVerdict::Success),
        Scenario {
            input: &[("waiting for console input", "hi!")],
            ..guest("functional-console-read", GuestVerdict::Success)
        },
        guest("xsa-style-writable-pagetable", GuestVerdict::Success),
        guest("xsa-style-linear-pagetable", GuestVerdict::Success),
        Scenario {
            hv_cmdline: "dom0_mem=64M loglvl=debug",
            expect: &["messages suppressed", POWEROFF_MARKER],
            check: Some(check_log_flood),
            ..guest("xsa-style-log-flood", GuestVerdict::Success)
        },
        Scenario {
            check: Some(check_console_flood),
            timeout_s: 180,
            ..guest("xsa-style-console-flood", GuestVerdict::Success)
        },
        guest("xsa-style-new-baseptr-zero", GuestVerdict::Success),
        guest("xsa-style-periodic-timer", GuestVerdict::Success),
        guest("xsa-style-shared-info-pagetable", GuestVerdict::Success),
        guest("functional-grant-table", GuestVerdict::Success),
        guest("functional-grant-table-v2", GuestVerdict::Success),
        guest("xsa-style-grant-misuse", GuestVerdict::Success),
        guest("xsa-style-long-pin", GuestVerdict::Success),
        guest("xsa-style-control-loops", GuestVerdict::Success),
        // XENMEM_exchange on vCPU 0 against a writable mapping of its input on vCPU 1.
        Scenario {
            smp: 2,
            ..guest("xsa-style-exchange-race", GuestVerdict::Success)
        },
        guest("negative-control", GuestVerdict::Failure),
        Scenario {
            name: "xsa-style-bad-kernel-stack",
            hv_cmdline: "dom0_mem=64M",
            dom0: Some("xsa-style-bad-kernel-stack"),
            expect: &[
                "not delivered: cannot write the exception frame to the guest stack",
                "d0: crashed",
                "dom0 crashed: resetting the machine",
            ],
            forbid: &["isolation broken"],
            ending: Ending::Reset,
            ..DEFAULT
        },
        // XSA-273: a not-present entry naming cacheable RAM (or with PSE above L1) in a domain
        // checked by `pv-l1tf=dom0`, written through each path into a table, crashes it.
        l1tf_crash("xsa-style-l1tf-mmu-update", "path=mmu-update"),
        l1tf_crash("xsa-style-l1tf-update-va-mapping", "path=update-va-mapping"),
        l1tf_crash("xsa-style-l1tf-pin", "path=pin"),
        l1tf_crash("xsa-style-l1tf-ptwr", "path=ptwr"),
        // Address 0 but PSE in an L2 entry: a speculative superpage from frame 0.
        Scenario {
            expect: &[
                "L1TF-vulnerable L2e 0000000000000080",
                "d0: crashed (L1TF-vulnerable PTE)",
                "dom0 crashed: resetting the machine",
            ],
            ..l1tf_crash("xsa-style-l1tf-mmu-update-l2", "path=mmu-update-l2")
        },
        // Dom0 unchecked by default, even on a vulnerable Intel CPU (TCG's Skylake: L1D 46
        // address bits, CPUID 40): any not-present entry is accepted.
        Scenario {
            cpu: Some(L1TF_CPU),
            expect: &[
                "PV L1TF checks: Dom0 disabled, DomU enabled (CPU believed vulnerable, maxphysaddr L1D 46, CPUID 40",
                POWEROFF_MARKER,
            ],
            ..guest("functional-l1tf", GuestVerdict::Success)
        },
        // Checked, the safe ones still are.
        Scenario {
            name: "functional-l1tf-checked",
            cpu: Some(L1TF_CPU),
            hv_cmdline: "dom0_mem=64M pv-l1tf=dom0",
            dom0_cmdline: "l1tf=checked",
            expect: &[
                "PV L1TF checks: Dom0 enabled, DomU enabled",
                POWEROFF_MARKER,
            ],
            ..guest("functional-l1tf", GuestVerdict::Success)
        },
        guest("xsa-style-mov-ss-syscall", GuestVerdict::Success),
        // The #DB of XSA-260 at the SYSCALL entry, which QEMU's TCG does not defer, forced by a
        // breakpoint on the entry's scratch word.
        Scenario {
            name: "xsa-style-mov-ss-syscall-db",
            hv_cmdline: "dom0_mem=64M selftest=syscall-db",
            expect: &[
                "selftest: data breakpoint on the SYSCALL scratch word",
                POWEROFF_MARKER,
            ],
            ..guest("xsa-style-mov-ss-syscall", GuestVerdict::Success)
        },
        guest("xsa-style-noncanonical-rip", GuestVerdict::Success),
        // XPTI: the hypervisor's memory is not mapped while the guest runs.
        Scenario {
            hv_cmdline: "dom0_mem=64M xpti=on",
            expect: &["xpti: dom0 enabled", POWEROFF_MARKER],
            ..guest("xsa-style-meltdown", GuestVerdict::Success)
        },
        // XPTI's default, as Xen's: on for an Intel CPU without RDCL_NO (TCG offers no
        // IA32_ARCH_CAPABILITIES, so RDCL_NO is covered by host tests only) ...
        Scenario {
            name: "xsa-style-meltdown-intel-default",
            cpu: Some("qemu64,vendor=GenuineIntel"),
            expect: &["xpti: dom0 enabled", POWEROFF_MARKER],
            ..guest("xsa-style-meltdown", GuestVerdict::Success)
        },
        // ... and off on AMD, where the same test must then fail: it can.
        Scenario {
            name: "xsa-style-meltdown-amd-default",
            cpu: Some("qemu64"),
            expect: &["xpti: dom0 disabled", POWEROFF_MARKER],
            ..guest("xsa-style-meltdown", GuestVerdict::Failure)
        },
        guest("xsa-style-bad-iret-frame", GuestVerdict::Success),
        Scenario {
            name: "crash-bad-iret-frame",
            hv_cmdline: "dom0_mem=64M",
            dom0: Some("crash-bad-iret-frame"),
            expect: &[
                "#GP general protection (vector 13) not delivered",
                "domain_crash: #GP general protection at 0xe00b:",
                "d0: crashed",
                "dom0 crashed: resetting the machine",
            ],
            ending: Ending::Reset,
            ..DEFAULT
        },
        Scenario {
            name: "crash-invalid-opcode",
            hv_cmdline: "dom0_mem=64M",
            dom0: Some("crash-invalid-opcode"),
            expect: &[
                "domain_crash: #UD invalid opcode",
                "d0: crashed",
                "dom0 crashed: resetting the machine",
            ],
            ending: Ending::Reset,
            ..DEFAULT
        },
        Scenario {
            name: "dom0-bzimage-xz",
            dom0: Some("functional-start-info.bzimage-xz"),
            expect: &["bzImage with a Xz payload, unpacking", POWEROFF_MARKER],
            ..guest("functional-start-info", GuestVerdict::Success)
        },
        Scenario {
            name: "dom0-bzimage-gzip-unsupported",
            dom0: Some("functional-start-info.bzimage-gzip"),
            expect: &[
                "dom0 kernel: gzip-compressed kernels are not supported yet",
                "Hestia: fatal error",
            ],
            ending: Ending::Fatal,
            ..DEFAULT
        },
        Scenario {
            name: "dom0-not-a-pv-kernel",
            // The hypervisor ELF itself: an ELF64 executable without Xen notes.
            dom0: Some(HYPERVISOR_AS_DOM0),
            expect: &[
                "dom0 kernel: no Xen ELF notes: not a Xen PV kernel",
                "Hestia: fatal error",
            ],
            ending: Ending::Fatal,
            ..DEFAULT
        },
        Scenario {
            name: "debug-keys",
            smp: 2,
            hv_cmdline: "noreboot",
            input: &[
                ("debug keys on the serial line", "h"),
                ("key 'R' - reboot the machine", "m"),
                ("Physical memory: ", "r"),
                ("CPU1: APIC id 1, online", "q"),
                ("No domains.", "0"),
                ("*** Dumping CPU1 state", "\u{1}\u{1}\u{1}"),
            ],
            expect: &[
                "'h' pressed -> show this help",
                "'0' pressed",
                "*** Dumping CPU0 state",
                "Serial input stays with Hestia",
            ],
            forbid: &[POWEROFF_MARKER],
            ending: Ending::StopWhenSeen,
            ..DEFAULT
        },
        // The debug keys with domains: input goes from the domU's console to Hestia, where
        // `r` shows the scheduler, `e` the event channels (the console ring's port, unbound to
        // DOMID_XEN) and `q` the domains, while the domU runs on to its verdict.
        Scenario {
            name: "debug-keys-domains",
            smp: 2,
            domus: &[
                "functional-sched-credit,cmdline=\"hog share=1000000 tol=1000000\",mem=16,vcpus=2,weight=512",
            ],
            input: &[
                ("Serial input to DOM1", "\u{1}\u{1}\u{1}"),
                ("Serial input to Hestia", "r"),
                ("sched: credit", "e"),
                ("d1 event channels:", "q"),
            ],
            expect: &[
                "CPU0: curr=",
                "d1v0 u0: Runnable",
                "d1v1 u1: Offline",
                "unbound, remote d32754",
                "d1: 4096 pages",
                "(d1) Test result: SUCCESS",
                POWEROFF_MARKER,
            ],
            timeout_s: 120,
            ..DEFAULT
        },
        // Debian 12's stock kernel as dom0 (M2). Commands print computed values, so the echo of
        // what was typed never satisfies an expectation by itself.
        Scenario {
            input: &[
                (
                    DOM0_PROMPT,
                    "echo shell-$((40+2)) on $(cat /sys/hypervisor/type)\n",
                ),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "xen:grant_table: Grant tables using version 1 layout",
                // Printed only when setup_table and the mapping of the table frames worked.
                "Grant table initialized",
                "hestia-dom0: Linux",
                "xen:events: Using FIFO-based ABI",
                // The ACPI PM timer is kept from dom0, as Xen does: Linux reads all ones.
                "PM-Timer failed consistency check",
                // The machine memory map marks what dom0 may not map (the MSI window), as Xen.
                "Xen: [mem 0x00000000fee00000-0x00000000feefffff] reserved",
                "shell-42 on xen",
                // The mca hypercall answers physcpuinfo and VIRQ_MCA binds, as on Xen.
                "xen_mcelog: /dev/mcelog registered by Xen",
                "reboot: Power down",
                POWEROFF_MARKER,
            ],
            ..linux("dom0-linux-shell-poweroff")
        },
        Scenario {
            data_disk: Some(DataDisk {
                files: &[("in.txt", "written-by-the-host")],
                written: Some(("out.txt", "written-by-dom0-7")),
            }),
            input: &[
                (
                    DOM0_PROMPT,
                    "mount -t ext4 /dev/vdb /mnt && cat /mnt/in.txt && \
                     echo written-by-dom0-$((3+4)) > /mnt/out.txt && umount /mnt && \
                     echo disk-$((6*7))\n",
                ),
                // The virtio disks interrupt through MSI-X: PIRQs Hestia programmed.
                (
                    DOM0_PROMPT,
                    "cat /proc/interrupts; awk '/msi-x/ && /virtio/ {n++; c += $2 + $3} \
                     END {print \"virtio-msi\" \"x\", n, (c > 0 ? \"firing\" : \"silent\")}' \
                     /proc/interrupts\n",
                ),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "written-by-the-host",
                "disk-42",
                "virtio-msix 6 firing",
                "reboot: Power down",
                POWEROFF_MARKER,
            ],
            ..linux("dom0-linux-disk")
        },
        Scenario {
            // Two NICs on one QEMU hub, one moved into another network namespace: every ping
            // crosses both NICs' interrupt paths: the e1000's level-triggered INTx line and the
            // virtio NIC's MSI-X messages, both through PIRQs.
            nics: &["e1000", "virtio-net-pci"],
            input: &[
                (
                    DOM0_PROMPT,
                    "set -- $(ls /sys/class/net | grep -v lo); A=$1; B=$2; \
                     unshare -n sleep 1000 & sleep 1; P=$!; ip link set $B netns $P && \
                     ip addr add 169.254.10.1/16 dev $A && ip link set $A up && \
                     nsenter -t $P -n sh -c \"ip addr add 169.254.10.2/16 dev $B && \
                     ip link set $B up\" && sleep 3 && echo net-$((2*21))\n",
                ),
                (DOM0_PROMPT, "ping -q -c 1000 -i 0.01 169.254.10.2\n"),
                (
                    DOM0_PROMPT,
                    "cat /proc/interrupts; awk '/msi-x/ && /input/ {m += $2 + $3} \
                     /ioapic-level/ && /eth/ {l += $2 + $3} \
                     END {print \"nic-irqs\", (m > 100 ? \"msix\" : \"none\"), \
                     (l > 100 ? \"intx\" : \"none\")}' /proc/interrupts\n",
                ),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "net-42",
                "1000 packets transmitted, 1000 packets received, 0% packet loss",
                "nic-irqs msix intx",
                POWEROFF_MARKER,
            ],
            timeout_s: 420,
            ..linux("dom0-linux-net-ping")
        },
        Scenario {
            // dom0 with 4 vCPUs on 4 CPUs: Linux counts them and a parallel workload keeps
            // every one of them busy (user time on each in /proc/stat).
            smp: 4,
            hv_cmdline: "dom0_max_vcpus=4",
            input: FOUR_WAY_JOB,
            expect: FOUR_BUSY_VCPUS,
            timeout_s: 300,
            ..linux("dom0-linux-smp4")
        },
        Scenario {
            // Linux dom0 (2 vCPUs) and a Linux boot-time domU (2 vCPUs) on 2 CPUs: both reach
            // their shells; serial input goes to the domU's console ring (Ctrl-A), which runs
            // a command, then back to dom0 through Hestia, which powers the machine off.
            smp: 2,
            hv_cmdline: "dom0_max_vcpus=2",
            domus: &["debian-linux,cmdline=\"console=hvc0 earlyprintk=xen\",mem=256,vcpus=2"],
            input: &[
                ("(d1) dom0:/# ", "\x01\x01\x01"),
                (
                    "Serial input to DOM1",
                    "echo domU-$((6*7)) $(grep -c ^processor /proc/cpuinfo)\n",
                ),
                ("(d1) domU-42 2", "\x01\x01\x01\x01\x01\x01"),
                ("Serial input to DOM0", "poweroff\n"),
            ],
            expect: &[
                "hestia-dom0: Linux",
                "(d1) hestia-dom0: Linux",
                "(d1) domU-42 2",
                POWEROFF_MARKER,
            ],
            check: Some(check_fifo_and_grants_in_dom0_and_domu),
            timeout_s: 480,
            ..linux("dom0-linux-with-linux-domu")
        },
        Scenario {
            // The same 4 vCPUs on 2 CPUs: the scheduler shares them, and each vCPU still
            // gets its part of the parallel job.
            smp: 2,
            hv_cmdline: "dom0_max_vcpus=4",
            input: FOUR_WAY_JOB,
            expect: FOUR_BUSY_VCPUS,
            timeout_s: 300,
            ..linux("dom0-linux-4vcpus-on-2cpus")
        },
        Scenario {
            input: &[(DOM0_PROMPT, "reboot\n")],
            expect: &[
                "hestia-dom0: Linux",
                "reboot: Restarting system",
                "dom0 asked for a reboot: resetting the machine",
            ],
            ending: Ending::Reset,
            ..linux("dom0-linux-reboot")
        },
        // Debian's unmodified toolstack in dom0: the daemons start, and what `xl info`,
        // `list`, `vcpu-list`, `cpupool-list`, `sched-credit`, `dmesg` and `debug-keys` read
        // is there, shaped as on the real Xen 4.17 (the reference rig's serial log, made with
        // `hestia.script=xl-smoke`).
        Scenario {
            dom0: Some(DEBIAN_XEN_USERLAND),
            input: &[
                (DOM0_PROMPT, "xl info\n"),
                (DOM0_PROMPT, "xl list\n"),
                (DOM0_PROMPT, "xl vcpu-list\n"),
                (DOM0_PROMPT, "xl cpupool-list\n"),
                (DOM0_PROMPT, "xl sched-credit\n"),
                (
                    DOM0_PROMPT,
                    "echo dmesg-$(xl dmesg | grep -c 'Hestia ready') && xl debug-keys h\n",
                ),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "hestia-dom0: xen: oxenstored, xen-init-dom0, xenconsoled",
                "xen_major              : 4",
                "xen_minor              : 17",
                "xen_caps               : xen-3.0-x86_64",
                "xen_scheduler          : credit",
                "Domain-0                                     0",
                "Pool-0               2    credit       y          1",
                "Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us",
                "dmesg-1",
                "'h' pressed",
                POWEROFF_MARKER,
            ],
            check: Some(check_modules_returned),
            timeout_s: 300,
            ..linux("dom0-xl-smoke")
        },
        // `xl create` with Debian's own toolstack: a test guest reports on its console (`-c`)
        // and powers off, and xl destroys it; then 20 create/destroy cycles leave exactly the
        // free memory there was; then Debian's Linux as a 2-vCPU domU boots to its shell on
        // `xl console`, answers, and powers off.
        Scenario {
            dom0: Some(DEBIAN_XEN_USERLAND),
            hv_cmdline: "dom0_mem=512M,max:512M",
            input: &[
                (
                    DOM0_PROMPT,
                    "F0=$(xl info | awk '/^free_memory/ {print $3}'); xl create -c /etc/xen/hestia-pv.cfg\n",
                ),
                (
                    DOM0_PROMPT,
                    "for i in $(seq 20); do xl create -q /etc/xen/hestia-pv.cfg || break; \
                     while xl domid hestia-pv >/dev/null 2>&1; do sleep 0.2; done; done; echo cycles-$i\n",
                ),
                (
                    DOM0_PROMPT,
                    "F1=$(xl info | awk '/^free_memory/ {print $3}'); echo free $F0 $F1 $([ \"$F0\" = \"$F1\" ] && echo same)\n",
                ),
                (DOM0_PROMPT, "xl create -c /etc/xen/debian-pv.cfg\n"),
                // The domU's shell (its prompt is dom0's: the same busybox initramfs).
                (
                    DOM0_PROMPT,
                    "echo domu-$((6*7)) on $(cat /sys/hypervisor/type), $(nproc) CPUs; poweroff\n",
                ),
                // Back in dom0 once the domU is gone and `xl console` ended.
                ("reboot: System halted", ""),
                (DOM0_PROMPT, "xl list\n"),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "(d1) Test result: SUCCESS",
                "cycles-20",
                " same",
                "domu-42 on xen, 2 CPUs",
                POWEROFF_MARKER,
            ],
            check: Some(check_no_userland_failure),
            timeout_s: 600,
            ..linux("dom0-xl-create")
        },
        // The everyday xl verbs on a running Linux domU: pause and unpause (the state
        // column), vcpu-pin, sched-credit -w/-c, rename/domid/domname, vcpu-set and mem-set
        // (its balloon driver gives the memory back), then shutdown -w through xenstore.
        Scenario {
            dom0: Some(DEBIAN_XEN_USERLAND),
            hv_cmdline: "dom0_mem=512M,max:512M",
            input: &[
                (
                    DOM0_PROMPT,
                    "xl create -q /etc/xen/debian-pv.cfg && D=$(xl domid debian-pv) && \
                     for i in $(seq 180); do \
                     [ \"$(xenstore-read /local/domain/$D/control/feature-poweroff 2>/dev/null)\" = 1 ] && break; \
                     sleep 1; done; xl list\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl pause debian-pv; xl list debian-pv | awk 'NR==2 {print \"flag\" \"-\" substr($5,3,1)}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl unpause debian-pv; xl list debian-pv | awk 'NR==2 {print \"unflag\" substr($5,3,1) \"+\"}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl vcpu-pin debian-pv 1 0 && xl vcpu-list debian-pv | awk '$3==1 {print \"pin\" \"ned:\" $7 $8 $9}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl sched-credit -d debian-pv -w 512 -c 50 && \
                     xl sched-credit -d debian-pv | awk 'NR==2 {print \"cred\" \"it:\" $3 \"/\" $4}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl rename debian-pv guest2 && xl domname $(xl domid guest2) | sed 's/^/name-is:/'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl vcpu-set guest2 1; sleep 3; xl list guest2 | awk 'NR==2 {print \"vc\" \"pus:\" $4}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl mem-set guest2 192; for i in $(seq 60); do \
                     [ $(xl list guest2 | awk 'NR==2 {print $3}') = 192 ] && break; sleep 1; done; \
                     xl list guest2 | awk 'NR==2 {print \"me\" \"m:\" $3}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl shutdown -w guest2; echo \"shut\" \"down:$?\"\n",
                ),
                // Shut down is not yet gone: xl's own watcher destroys it (on_poweroff).
                (
                    DOM0_PROMPT,
                    "for i in $(seq 60); do xl domid guest2 >/dev/null 2>&1 || break; sleep 0.5; done; \
                     xl list | awk 'END {print \"dom\" \"ains:\" NR - 1}'\n",
                ),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "flag-p",
                "unflag-+",
                "pinned:0/all",
                "credit:512/50",
                "name-is:guest2",
                "vcpus:1",
                "mem:192",
                "shut down:0",
                "domains:1",
                POWEROFF_MARKER,
            ],
            check: Some(check_no_userland_failure),
            timeout_s: 600,
            ..linux("dom0-xl-verbs")
        },
        // Split drivers through Debian's own pieces: a Linux domU with a `file:` disk (the
        // block hotplug script, a loop device, xen-blkback), a `phy:` disk (dom0's virtio disk,
        // an ext4 image the host made), a read-only `file:` disk and a vif on xenbr0
        // (vif-bridge, xen-netback). The domU reads what dom0 wrote on the file disk, pings dom0
        // over the bridge (link-local addresses), writes and flushes a block, writes a file on
        // the phy: disk and syncs; from its read-only disk it runs rootfs/disk-domu.sh (the
        // queues, cache and discard blkfront took, a refused write to that disk, a discard and
        // a flushed pattern on the file disk). dom0 hot-plugs a fourth disk and a second vif,
        // then runs rootfs/xl-disk.sh: the features both ends wrote in xenstore, the read-only
        // disk's mode down to its loop device, the discard's freed blocks, the domU crashed
        // (`xl sysrq c`) with its flushed pattern intact in the file, then destroyed: the
        // block is in the image file, the file is on the disk when the host reads it after
        // the run, no loop device is left. Every value is what Xen 4.17 gives on the same run.
        Scenario {
            dom0: Some(DEBIAN_XEN_USERLAND),
            hv_cmdline: "dom0_mem=512M,max:512M",
            data_disk: Some(DataDisk {
                files: &[("in.txt", "host-wrote-this")],
                written: Some(("out.txt", "written-by-domu-7")),
            }),
            input: &[
                (
                    DOM0_PROMPT,
                    "dd if=/dev/zero of=/root/d.img bs=1M count=8 2>/dev/null; \
                     echo disk-hello-1234 | dd of=/root/d.img conv=notrunc 2>/dev/null; \
                     cp /etc/hestia/disk-domu.sh /root/r.img; truncate -s 64K /root/r.img; \
                     ip addr add 169.254.1.1/16 dev xenbr0; ip link set xenbr0 up; \
                     xl create -c /etc/xen/debian-pv.cfg \
                     'disk=[\"file:/root/d.img,xvda,w\", \"phy:/dev/vdb,xvdb,w\", \"file:/root/r.img,xvdc,r\"]'\n",
                ),
                // The domU's shell.
                (
                    DOM0_PROMPT,
                    "head -c 15 /dev/xvda | sed 's/^/got:/'; echo\n",
                ),
                (
                    DOM0_PROMPT,
                    "ip addr add 169.254.1.2/16 dev eth0 && ip link set eth0 up && \
                     ping -c 3 -W 5 169.254.1.1 | grep received\n",
                ),
                (
                    DOM0_PROMPT,
                    ". /dev/xvdc; \
                     echo domu-wrote-5678 | dd of=/dev/xvda bs=512 seek=1 conv=fsync 2>/dev/null; \
                     echo \"flush\" \"status:$?\"; mount -t ext4 /dev/xvdb /mnt && \
                     sed 's/^/phy:/' /mnt/in.txt && echo written-by-domu-$((3+4)) > /mnt/out.txt && \
                     sync && (sleep 2; echo \"syn\"\"ced\") &\n",
                ),
                // Ctrl-] leaves the console.
                ("synced", "\x1d"),
                // Hot-plug on the running domU: a fourth disk attached, connected (state 4) and
                // detached, and a second vif.
                (
                    DOM0_PROMPT,
                    "st() { for i in $(seq 120); do s=$(xl $1-list debian-pv | awk -v d=$2 -v c=$3 '$1==d {print $c}'); \
                     [ \"$s\" = 4 ] && break; sleep 0.5; done; echo \"$1-$2\" \"state:$s\"; }; \
                     dd if=/dev/zero of=/root/e.img bs=1M count=4 2>/dev/null; \
                     xl block-attach debian-pv file:/root/e.img,xvdd,w && st block 51760 4; \
                     xl block-detach debian-pv xvdd; xl block-list debian-pv | awk 'END {print \"vb\" \"ds:\" NR - 1}'; \
                     xl network-attach debian-pv bridge=xenbr0 && st network 1 5; \
                     xl network-list debian-pv | awk 'END {print \"vi\" \"fs:\" NR - 1}'\n",
                ),
                // The disks' features, then the crash and the destroy (no shutdown).
                (DOM0_PROMPT, "/etc/hestia/xl-disk.sh\n"),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "got:disk-hello-1234",
                "3 packets received",
                // blkfront: 2 queues (2 vCPUs), a write-back cache (flushes), discard up to the
                // whole 8 MiB disk; xvdc read-only, a write to it refused, the discard and the
                // flush after the pattern done.
                "front: queues=2 cache=write-back discard=8388608 ro-disk=1",
                "ro-write status:1",
                "discard status:0",
                "pattern-flush status:0",
                "flush status:0",
                "phy:host-wrote-this",
                "block-51760 state:4",
                "vbds:3",
                "network-1 state:4",
                "vifs:2",
                "back: flush=1 discard=1 persistent=1 indirect=256 queues=2",
                "front-xs: queues=2 persistent=1 state=4",
                "read-only: mode=r info=4 loop-ro=1",
                // The loop device punched the discarded 4 MiB out of the file (tmpfs).
                "discard-freed: 4096 KiB used, 0 non-zero bytes",
                "crashed: ---sc-",
                "pattern crashed: intact",
                "pattern destroyed: intact",
                "back:domu-wrote-5678",
                "domains:1",
                // The block script's remove detached the loop devices.
                "loops:0",
                "blk-errors: 0",
                POWEROFF_MARKER,
            ],
            check: Some(check_no_userland_failure),
            timeout_s: 600,
            ..linux("dom0-xl-disk-net")
        },
        // Save and restore (issue 12 item 5) with Debian's xl: a Linux domU with a file: disk
        // and a vif on xenbr0 pings dom0 in the background (log in its RAM), writes a file and a
        // disk block; dom0 leaves its console, checkpoints it (`xl save -c`: the domain is saved,
        // then resumed as on Xen, its suspend cancelled: still listed, not shut down, and it
        // answers dom0's ping), fails to save it to a 1 MiB tmpfs (the write fails once the
        // domain is suspended: xl resumes it, as on Xen, and it answers again), `xl save`s it
        // to a file (the domain is gone and
        // its memory free again), `xl restore`s it and re-attaches: the same ping process is
        // alive and its replies go on counting, the file and the block read back. A background
        // loop in the domU prints a tick while /tmp/tick exists, so that dom0 types only once
        // the re-attached console shows the restored domU running. Each step's time is printed.
        Scenario {
            dom0: Some(DEBIAN_XEN_USERLAND),
            // Room in dom0's RAM-backed root for the 128 MiB domU's image.
            hv_cmdline: "dom0_mem=768M,max:768M",
            input: &[
                (
                    DOM0_PROMPT,
                    "dd if=/dev/zero of=/root/d.img bs=1M count=8 2>/dev/null; \
                     ip addr add 169.254.1.1/16 dev xenbr0; ip link set xenbr0 up; \
                     xl info | awk '/^free_memory/ {print $3}' > /root/free0; \
                     xl create -c /etc/xen/debian-pv.cfg 'memory=128' \
                     'disk=[\"file:/root/d.img,xvda,w\"]'\n",
                ),
                // The domU's shell.
                (
                    DOM0_PROMPT,
                    "ip addr add 169.254.1.2/16 dev eth0 && ip link set eth0 up; \
                     ping 169.254.1.1 > /tmp/p.log 2>&1 & echo $! > /tmp/pid; \
                     echo kept-in-ram > /tmp/f; \
                     echo disk-before-save | dd of=/dev/xvda conv=fsync 2>/dev/null; \
                     (while :; do sleep 2; [ -f /tmp/tick ] && echo \"domu-ti\"\"ck\"; done) & \
                     sleep 4; grep -c bytes /tmp/p.log | sed 's/^/replies-before:/'; \
                     touch /tmp/tick\n",
                ),
                ("domu-tick", "\x1d"),
                (
                    DOM0_PROMPT,
                    "up() { cut -d' ' -f1 /proc/uptime; }; el() { awk -v a=$1 -v b=$(up) 'BEGIN {print b - a}'; }; \
                     t0=$(up); xl save -c debian-pv /root/s.img; echo \"checkpoint\" \"status:$?\"; \
                     echo \"checkpoint-second\"\"s:$(el $t0)\"; \
                     xl list | awk '/^debian-pv / && $5 !~ /s/ {print \"still\" \" running\"}'; \
                     ping -c 2 -W 5 169.254.1.2 > /dev/null && echo \"checkpoint\" \"answers\"; \
                     rm /root/s.img; mkdir /root/small; mount -t tmpfs -o size=1m small /root/small; \
                     xl save debian-pv /root/small/s.img; echo \"failed-save\" \"status:$?\"; \
                     umount /root/small; \
                     xl list | awk '/^debian-pv / && $5 !~ /s/ {print \"resumed after\" \" failed save\"}'; \
                     ping -c 2 -W 5 169.254.1.2 > /dev/null && echo \"failed-save\" \"answers\"; \
                     t0=$(up); xl save debian-pv /root/s.img; echo \"save\" \"status:$?\"; \
                     echo \"save-second\"\"s:$(el $t0)\"; \
                     xl list | awk 'END {print \"dom\" \"ains:\" NR - 1}'; \
                     [ \"$(xl info | awk '/^free_memory/ {print $3}')\" = \"$(cat /root/free0)\" ] && \
                     echo \"memory\" \"freed\"; ls -l /root/s.img | awk '{print \"image-bytes:\" $5}'; \
                     t0=$(up); xl restore /root/s.img; echo \"restore\" \"status:$?\"; \
                     echo \"restore-second\"\"s:$(el $t0)\"; \
                     xl console debian-pv\n",
                ),
                // The restored domU's console: its tick loop runs again.
                (
                    "domu-tick",
                    "rm /tmp/tick; a=$(grep -c bytes /tmp/p.log); sleep 4; b=$(grep -c bytes /tmp/p.log); \
                     kill -0 $(cat /tmp/pid) && echo \"ping pro\"\"cess alive\"; \
                     [ $b -gt $a ] && echo \"replies go\" \"on: $a -> $b\"; tail -2 /tmp/p.log; \
                     sed 's/^/file:/' /tmp/f; head -c 16 /dev/xvda | sed 's/^/disk:/'; echo; \
                     sleep 1; echo \"chec\"\"ked\"\n",
                ),
                ("checked", "\x1d"),
                (
                    DOM0_PROMPT,
                    "xl destroy debian-pv; xl list | awk 'END {print \"dom\" \"ains:\" NR - 1}'\n",
                ),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "replies-before:",
                "checkpoint status:0",
                "checkpoint-seconds:",
                "still running",
                "checkpoint answers",
                "Failed to save domain, resuming domain",
                "failed-save status:1",
                "resumed after failed save",
                "failed-save answers",
                "save status:0",
                "save-seconds:",
                "domains:1",
                "memory freed",
                "restore status:0",
                "restore-seconds:",
                "ping process alive",
                "replies go on:",
                "file:kept-in-ram",
                "disk:disk-before-save",
                "domains:1",
                POWEROFF_MARKER,
            ],
            check: Some(check_no_userland_failure),
            timeout_s: 600,
            ..linux("dom0-xl-save-restore")
        },
        // Networks and network hot-plug through Debian's own pieces (rootfs/xl-net.sh, which
        // the Xen rig runs too): dom0's second NIC on the same QEMU hub is a host on the LAN in
        // its own network namespace. Domain a (2 vCPUs: 2 netfront queues; MAC and IP from its
        // config, in the domU and in xenstore) on xenbr0 pings it and sends it a file through
        // the bridge and dom0's first NIC; domain b pings a and sends it a file; b sends dom0 a
        // file on its vif and then on a hot-plugged one with rate=1Mb/s (netback's credit: the
        // `rate` key, and a coarse ratio); b's vif is then detached and replaced by a vif-nat
        // and a vif-route one (dom0 and the LAN host reached through dom0's forwarding and
        // proxy ARP), each detached without a trace in dom0; b still runs.
        Scenario {
            dom0: Some(DEBIAN_XEN_USERLAND),
            hv_cmdline: "dom0_mem=512M,max:512M",
            nics: &["virtio-net-pci", "virtio-net-pci"],
            input: &[
                (DOM0_PROMPT, "/etc/hestia/xl-net.sh\n"),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "hestia-net: payload c1d4ba52c72ac7bcc71ff2d6c083e684",
                "(a) a-mac:00:16:3e:00:00:0a a-queues:rx-0 rx-1 tx-0 tx-1",
                "hestia-net: a xenstore: mac 00:16:3e:00:00:0a ip 169.254.1.10 max-queues 2 queues 2",
                "(a) a-to-lan: reached",
                "hestia-net: a-to-lan-tcp: c1d4ba52c72ac7bcc71ff2d6c083e684",
                "hestia-net: lan-to-a: reached",
                "(a) a-to-b: reached",
                "(b) b-to-a: reached",
                "(a) b-to-a-tcp: c1d4ba52c72ac7bcc71ff2d6c083e684",
                "hestia-net: b rate vif state: 4",
                "hestia-net: b rate key: 6250,50000",
                "hestia-net: b detached vif first: list 1, dom0 0, routes 0",
                "(b) b-eths:1",
                "hestia-net: rate-limit slower",
                "hestia-net: b detached vif rate: list 0, dom0 0, routes 0",
                "hestia-net: b nat vif state: 4",
                "hestia-net: nat vif: 169.254.2.129/32 route 169.254.2.2 dev vif",
                "(b) nat-to-router: reached",
                "(b) nat-to-dom0: reached",
                "(b) nat-to-lan: reached",
                "hestia-net: nat-to-lan-tcp: c1d4ba52c72ac7bcc71ff2d6c083e684",
                "hestia-net: b detached vif nat: list 0, dom0 0, routes 0",
                "hestia-net: b route vif state: 4",
                "hestia-net: route vif: 169.254.0.1/32 route 169.254.3.2 dev vif",
                "(b) route-to-dom0: reached",
                "(b) route-to-lan: reached",
                "hestia-net: route-to-lan-tcp: c1d4ba52c72ac7bcc71ff2d6c083e684",
                "hestia-net: b detached vif route: list 0, dom0 0, routes 0",
                "vifs in dom0 0, routes 0, proxy-arp left 0",
                "(b) b-alive:42",
                "hestia-net: a detached vif only: list 0, dom0 0, routes 0",
                "(a) a-eths:0",
                // Nor on Xen 4.17 (the rig runs the same script).
                "(a) a-kernel-complaints: 0",
                "(b) b-kernel-complaints: 0",
                "hestia-net: dom0-kernel-complaints: 0",
                "hestia-net: domains: 1",
                POWEROFF_MARKER,
            ],
            check: Some(check_net),
            timeout_s: 900,
            ..linux("dom0-xl-net")
        },
        // Bad input to xl (rootfs/xl-badinput.sh): a missing kernel, memory above free, 0 and
        // 9000 vCPUs, dom0's name and a running domain's, a random file and an ELF without Xen
        // notes as the kernel, `xl destroy` of dom0 and of a missing id. Each fails with the
        // messages Debian's xl prints on the real Xen 4.17 (the reference rig's serial log),
        // and leaves the free memory to the page and the domain list as they were. Then a
        // domain preserved after it powered off is listed with its vCPU online, as on Xen.
        Scenario {
            dom0: Some(DEBIAN_XEN_USERLAND),
            hv_cmdline: "dom0_mem=512M,max:512M",
            input: &[
                (DOM0_PROMPT, "/etc/hestia/xl-badinput.sh\n"),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "xg_dom_core.c:205: failed to open file '/boot/missing': No such file or directory",
                "xc_dom_boot_mem_init: can't allocate low memory for domain: Out of memory",
                "libxl__domain_make: domain creation fail: Invalid argument",
                "Domain with name \"Domain-0\" already exists.",
                "Domain with name \"hestia-pv\" already exists.",
                "xc_dom_find_loader: no loader found: Invalid kernel",
                "Not destroying domain 0; use -f to force.",
                "Domain 4242:Non-existant domain",
                "destroy failed (rc=-21)",
                "hestia-preserved: vcpus 1 state ---s--",
                POWEROFF_MARKER,
            ],
            check: Some(check_badinput),
            timeout_s: 300,
            ..linux("dom0-xl-badinput")
        },
        // Debian's libvirtd with its libxl driver: virsh defines, starts, lists, attaches to the
        // console of, destroys and undefines PV domains from domain XML (`<os>` with kernel,
        // initrd, cmdline): the tiny test guest reports and powers off (libvirt sees it shut
        // off), Debian's Linux boots to its shell on `virsh console` (Ctrl-] back to dom0,
        // sent while the domU sleeps so that its next prompt stays in its console ring).
        Scenario {
            dom0: Some(DEBIAN_LIBVIRT_USERLAND),
            hv_cmdline: "dom0_mem=512M,max:512M",
            input: &[
                (DOM0_PROMPT, "virsh -c xen:/// list --all\n"),
                (
                    DOM0_PROMPT,
                    "virsh define /etc/libvirt/hestia-pv.xml && virsh define /etc/libvirt/debian-pv.xml\n",
                ),
                (
                    DOM0_PROMPT,
                    "virsh start hestia-pv && for i in $(seq 60); do \
                     virsh domstate hestia-pv | grep -q 'shut off' && break; sleep 0.5; done; \
                     virsh domstate hestia-pv | sed -n '1s/^/state:/p'\n",
                ),
                (DOM0_PROMPT, "virsh start --console debian-pv\n"),
                (
                    DOM0_PROMPT,
                    "echo domu-$((6*7)) on $(cat /sys/hypervisor/type), $(nproc) CPUs; sleep 5\n",
                ),
                ("domu-42 on xen", "\x1d"),
                (DOM0_PROMPT, "virsh list\n"),
                (
                    DOM0_PROMPT,
                    "virsh destroy debian-pv && virsh undefine debian-pv && virsh undefine hestia-pv\n",
                ),
                (
                    DOM0_PROMPT,
                    "virsh list --all --name | grep -c . | sed 's/^/defined:/'; xl list | awk 'END {print \"dom\" \"ains:\" NR - 1}'\n",
                ),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "hestia-dom0: xen: oxenstored, xen-init-dom0, xenconsoled, libvirtd",
                " 0    Domain-0   running",
                "Domain 'hestia-pv' defined from /etc/libvirt/hestia-pv.xml",
                "Domain 'debian-pv' defined from /etc/libvirt/debian-pv.xml",
                "Test result: SUCCESS",
                "state:shut off",
                "Connected to domain 'debian-pv'",
                "domu-42 on xen, 2 CPUs",
                "debian-pv   running",
                "Domain 'debian-pv' destroyed",
                "Domain 'debian-pv' has been undefined",
                "Domain 'hestia-pv' has been undefined",
                "defined:1",
                "domains:1",
                POWEROFF_MARKER,
            ],
            check: Some(check_no_userland_failure),
            timeout_s: 600,
            ..linux("dom0-libvirt")
        },
        // A domain's life through xl on Hestia as on Xen 4.17 (the reference rig's answers):
        // create -p then unpause; list -l (JSON), uptime, xentop and `xl top`, the credit
        // scheduler's global -t/-r read back; xl reboot of a Linux domU (on_reboot=restart: a
        // new id, booted again, with the weight and memory target it had, which libxl reads
        // back from the shut-down domain); mem-max and a mem-set above it refused; a second
        // Linux domU beside it on the 2 CPUs, crashing itself (sysrq c) under
        // on_crash=rename-restart: kept as `second-<time>` (state c, its configuration still
        // read) and restarted; the first, undisturbed, crashing under on_crash=destroy: gone;
        // every page back once the rest is destroyed (the restarted one may still be starting,
        // or, under a heavy load, have been given up by libxl's own timeouts).
        Scenario {
            dom0: Some(DEBIAN_XEN_USERLAND),
            hv_cmdline: "dom0_mem=512M,max:512M",
            mem_mib: 1536,
            input: &[
                (
                    DOM0_PROMPT,
                    "up() { for i in $(seq 240); do [ \"$(xenstore-read /local/domain/$(xl domid $1 2>/dev/null)/control/feature-poweroff 2>/dev/null)\" = 1 ] && return 0; sleep 1; done; return 1; }; \
                     newid() { for i in $(seq 120); do n=$(xl domid $1 2>/dev/null) && [ \"$n\" != \"$2\" ] && return 0; sleep 1; done; return 1; }; \
                     F0=$(xl info | awk '/^free_memory/ {print $3}')\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl create -q -p /etc/xen/hestia-pv.cfg && xl list hestia-pv | awk 'NR==2 {print \"created\" \":\" $5}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl unpause hestia-pv; for i in $(seq 100); do xl domid hestia-pv >/dev/null 2>&1 || break; sleep 0.2; done; \
                     xl list | awk 'END {print \"pv-\" \"gone:\" NR - 1}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl create -q /etc/xen/debian-pv.cfg 'extra=\"console=hvc0 sysrq_always_enabled\"' 'on_crash=\"destroy\"' && up debian-pv && \
                     J=$(xl list -l debian-pv | tr -d ' \\n') && m= && \
                     for f in '\"domid\":2,' '\"name\":\"debian-pv\"' '\"max_memkb\":262144' '\"weight\":256' '\"on_reboot\":\"restart\"'; do \
                     case $J in *$f*) ;; *) m=\"$m $f\" ;; esac; done; echo \"json-\"\"read:${m:-all}\"\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl uptime debian-pv | awk 'NR==2 {print \"up\" \"time:\" ($3 ~ /^0:0[0-9]:[0-9][0-9]$/)}'; \
                     xentop -b -i 1 | awk '$1==\"debian-pv\" {print \"xen\" \"top:\" $5 \"/\" $9}'\n",
                ),
                (DOM0_PROMPT, "TERM=vt100 xl top\n"),
                ("CPUs: 2 @ ", "q"),
                (
                    DOM0_PROMPT,
                    "xl sched-credit -s -t 20 -r 500 && xl sched-credit -s\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl sched-credit -d debian-pv -w 384 && xl mem-set debian-pv 200 && D=$(xl domid debian-pv) && \
                     xl reboot debian-pv && newid debian-pv $D && up debian-pv && \
                     xl list debian-pv | awk -v d=$D 'NR==2 {print \"re\" \"booted:\" ($2 != d) \"/\" $3}'; \
                     xl sched-credit -d debian-pv | awk 'NR==2 {print \"wei\" \"ght:\" $3}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl mem-max debian-pv 220 && xentop -b -i 1 | awk '$1==\"debian-pv\" {print \"max\" \"mem:\" $7}'; \
                     xl mem-set debian-pv 230; echo \"over\"\"max:$?\"\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl create -q /etc/xen/debian-pv.cfg 'name=\"second\"' memory=128 vcpus=1 'extra=\"console=hvc0 sysrq_always_enabled\"' \
                     'on_crash=\"rename-restart\"' && up second && xl list | awk 'NR>1 && $5 !~ /[pscd]/ {n++} END {print \"live:\" n}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "D=$(xl domid second); xl sysrq second c; newid second $D && \
                     xl list | awk '$1 ~ /^second-/ {print \"pre\" \"served:\" $5}'; \
                     xl list -l $(xl domname $D) | grep -c '\"on_crash\": \"restart_rename\"' | awk '{print \"crashed\" \"-json:\" $1}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl sysrq debian-pv c; for i in $(seq 60); do xl domid debian-pv >/dev/null 2>&1 || break; sleep 1; done; \
                     xl list | awk 'END {print \"after\" \"-crash:\" NR - 1}'\n",
                ),
                (
                    DOM0_PROMPT,
                    "xl destroy $(xl domname $D); xl destroy second 2>/dev/null; \
                     F1=$(xl info | awk '/^free_memory/ {print $3}'); \
                     echo \"free $F0 $F1 $([ \"$F0\" = \"$F1\" ] && echo \"sa\"\"me\")\"; xl list | awk 'END {print \"dom\" \"ains:\" NR - 1}'\n",
                ),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "created:--p---",
                "(d1) Test result: SUCCESS",
                "pv-gone:1",
                "json-read:all",
                "uptime:1",
                "xentop:262144/2",
                "   Xen 4.17",
                "Cpupool Pool-0: tslice=20ms ratelimit=500us migration-delay=0us",
                "rebooted:1/200",
                "weight:384",
                "maxmem:226304",
                "memory_dynamic_max must be less than or equal to memory_static_max",
                "overmax:1",
                "live:3",
                "preserved:---sc-",
                "crashed-json:1",
                "after-crash:3",
                " same",
                "domains:1",
                POWEROFF_MARKER,
            ],
            check: Some(check_no_userland_failure),
            timeout_s: 900,
            ..linux("dom0-xl-lifecycle")
        },
        // CPU throttling with `xl sched-credit` on running Linux domUs (rootfs/xl-throttle.sh):
        // two domUs spinning on CPU 1 (dom0 pinned to CPU 0) get CPU time in the ratio of
        // their weights, 256/768, then 768/256 once swapped; then one alone, capped at 20,
        // gets 20 % of the CPU. Each measured over 15 s from xl list's Time column.
        Scenario {
            dom0: Some(DEBIAN_XEN_USERLAND),
            hv_cmdline: "dom0_mem=512M,max:512M",
            input: &[
                (DOM0_PROMPT, "/etc/hestia/xl-throttle.sh 12\n"),
                (DOM0_PROMPT, "poweroff\n"),
            ],
            expect: &[
                "hestia-throttle: weights 256 768 shares",
                "hestia-throttle: weights 768 256 shares",
                "hestia-throttle: cap 20 share",
                POWEROFF_MARKER,
            ],
            check: Some(check_throttle),
            timeout_s: 600,
            alone: true,
            ..linux("dom0-xl-throttle")
        },
    ]
}

/// The xen userland's boot prints `hestia-dom0: <step> failed: <why>` for each step that failed.
fn check_no_userland_failure(log: &str) -> Result<(), String> {
    match log
        .lines()
        .find(|l| l.contains("hestia-dom0: ") && l.contains(" failed: "))
    {
        Some(l) => Err(format!("dom0's boot failed a step: {}", l.trim())),
        None => Ok(()),
    }
}

/// The boot modules' memory (dom0's 72 MiB initramfs among them) went back to the allocator
/// once dom0 was built, and the toolstack sees it free (`xl info`'s free_memory), as on Xen.
fn check_modules_returned(log: &str) -> Result<(), String> {
    check_no_userland_failure(log)?;
    // The number after `key`.
    let number = |key: &str| {
        log.lines()
            .find_map(|l| l.split(key).nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let returned = number("boot modules discarded: ").ok_or("no `boot modules discarded` line")?;
    let free = number("free_memory            : ").ok_or("no free_memory in xl info")?;
    if returned < 64 << 10 {
        return Err(format!("only {returned} KiB of boot modules returned"));
    }
    if free < returned >> 10 {
        return Err(format!(
            "xl info: {free} MiB free, less than the {returned} KiB returned"
        ));
    }
    Ok(())
}

/// The shares `xl-throttle.sh` measured, two samples per setting: in at least one of them each
/// domain's share of the pair is within 5 % of its weight's share (25 % ± 1.25, 75 % ± 3.75),
/// the capped domain within 2 points of its cap. A Hestia that misplaces the shares fails both
/// samples; a host that deschedules QEMU's CPU thread during one skews that one only.
fn check_throttle(log: &str) -> Result<(), String> {
    check_no_userland_failure(log)?;
    // (setting, in band) per measurement, in order.
    let mut samples: Vec<(String, bool)> = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.split("hestia-throttle: ").nth(1) else {
            continue;
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|v| v.parse::<f64>().ok());
        let (setting, ok) = match w.first() {
            Some(&"weights") => (
                w.get(..3).map(|s| s.join(" ")),
                match (num(1), num(2), num(4), num(5)) {
                    (Some(w1), Some(w2), Some(s1), Some(s2)) => {
                        [(w1, s1), (w2, s2)].iter().all(|&(weight, share)| {
                            let want = 100.0 * weight / (w1 + w2);
                            (share - want).abs() <= want * 0.05
                        })
                    }
                    _ => false,
                },
            ),
            Some(&"cap") => (
                w.get(..2).map(|s| s.join(" ")),
                match (num(1), num(3)) {
                    (Some(cap), Some(share)) => (share - cap).abs() <= 2.0,
                    _ => false,
                },
            ),
            _ => (None, false),
        };
        let setting = setting.ok_or_else(|| format!("unreadable: {}", rest.trim()))?;
        samples.push((setting, ok));
    }
    let mut settings: Vec<&str> = samples.iter().map(|(s, _)| s.as_str()).collect();
    settings.dedup();
    if settings.len() != 3 || samples.len() != 6 {
        return Err(format!(
            "{} measurements of {} settings ran, 6 of 3 expected",
            samples.len(),
            settings.len()
        ));
    }
    for s in settings {
        if !samples.iter().any(|(t, ok)| t == s && *ok) {
            return Err(format!("out of band in both samples: {s}"));
        }
    }
    Ok(())
}

/// No step of `xl-net.sh` gave up or failed (its own `hestia-net: ` lines say so).
fn check_net(log: &str) -> Result<(), String> {
    check_no_userland_failure(log)?;
    let bad = [
        "failed",
        "no end of",
        "no shell",
        "no answer",
        "no LAN host",
        "NOT slower",
        "lost",
    ];
    match log
        .lines()
        .find(|l| l.contains("hestia-net: ") && bad.iter().any(|b| l.contains(b)))
    {
        Some(l) => Err(format!("xl-net.sh: {}", l.trim())),
        None => Ok(()),
    }
}

/// Every case of `xl-badinput.sh` (10) left the free memory and the domain list as they were.
fn check_badinput(log: &str) -> Result<(), String> {
    check_no_userland_failure(log)?;
    let cases: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("hestia-badinput: ").nth(1))
        .map(str::trim)
        .collect();
    if let Some(bad) = cases
        .iter()
        .find(|c| !c.ends_with("free same, domains same"))
    {
        return Err(format!("a case leaked: {bad}"));
    }
    if cases.len() != 10 {
        return Err(format!("{} of the 10 cases ran", cases.len()));
    }
    Ok(())
}

/// Reads "N CPUs online, RAM M MiB" from the ready line.
pub fn ready_numbers(log: &str) -> Option<(u32, u64)> {
    let line = log.lines().find(|l| l.contains(READY_MARKER))?;
    let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
    let mut words = rest.split_whitespace();
    let cpus = words.next()?.parse().ok()?;
    let ram = rest
        .split("RAM ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((cpus, ram))
}

fn check_4cpus_2048mib(log: &str) -> Result<(), String> {
    let (cpus, ram) = ready_numbers(log).ok_or("no ready line with CPU and RAM figures")?;
    if cpus != 4 {
        return Err(format!("{cpus} CPUs online, expected 4"));
    }
    let diff = (ram as f64 - 2048.0).abs() / 2048.0;
    if diff > 0.02 {
        return Err(format!("RAM {ram} MiB is not within 2% of 2048 MiB"));
    }
    Ok(())
}

/// The dead domU whose frame dom0 unmapped first (`unmapping dead dN's frame`) has its frame
/// freed before the other's.
fn check_zombies_freed_in_order(log: &str) -> Result<(), String> {
    let first = log
        .split("unmapping dead ")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .ok_or("dom0 did not say which frame it unmapped first")?;
    let second = if first == "d1" { "d2" } else { "d1" };
    let at = |d: &str| log.find(&format!("{d}: its last frames mapped by others freed"));
    match (at(first), at(second)) {
        (Some(a), Some(b)) if a < b => Ok(()),
        (a, b) => Err(format!(
            "the zombies' frames were not freed in unmap order ({first} at {a:?}, {second} at {b:?})"
        )),
    }
}

/// dom0 and the domU (its kernel lines `(d1) [ time] ...`) both use the FIFO event ABI and
/// both set up their grant tables.
fn check_fifo_and_grants_in_dom0_and_domu(log: &str) -> Result<(), String> {
    for needle in [
        "xen:events: Using FIFO-based ABI",
        "Grant table initialized",
    ] {
        for (who, domu) in [("dom0", false), ("the domU", true)] {
            if !log
                .lines()
                .any(|l| l.contains(needle) && l.starts_with("(d1) ") == domu)
            {
                return Err(format!("{who} did not print `{needle}`"));
            }
        }
    }
    Ok(())
}

fn check_ram_6144mib(log: &str) -> Result<(), String> {
    let (_, ram) = ready_numbers(log).ok_or("no ready line with CPU and RAM figures")?;
    if (ram as f64 - 6144.0).abs() / 6144.0 > 0.02 {
        return Err(format!("RAM {ram} MiB is not within 2% of 6144 MiB"));
    }
    // q35 splits a 6 GiB guest into 2 GiB below 4 GiB and 4 GiB above: RAM ends at 8 GiB.
    let gib: u64 = log
        .split("mm: direct map of ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if gib <= 4 {
        return Err(format!(
            "the direct map ({gib} GiB) does not cover RAM above 4 GiB"
        ));
    }
    Ok(())
}

/// `xsa-style-log-flood`'s 10,001 refusals were rate-limited: the 10 of the burst, a few more
/// as the bucket refills, and the one after the pause.
fn check_log_flood(log: &str) -> Result<(), String> {
    let printed = log
        .matches("mmu_update 0x1000000000001 := 0x0 refused")
        .count();
    if !(1..=100).contains(&printed) {
        return Err(format!(
            "{printed} refusal lines in the log, expected 1 to 100"
        ));
    }
    Ok(())
}

/// Lines `xsa-style-console-flood` writes (nine times 64 KiB of 64-byte lines).
const CONSOLE_FLOOD_LINES: u64 = 9 * 1024;

/// Every line of `xsa-style-console-flood` reached the serial log, in order and intact.
fn check_console_flood(log: &str) -> Result<(), String> {
    let expected = |n: u64| {
        let letters: String = (0..54u64)
            .map(|j| char::from(b'A' + ((n + j) % 26) as u8))
            .collect();
        format!("CF{n:06} {letters}")
    };
    let mut next = 0;
    for line in log.lines().map(|l| l.trim_end_matches('\r')) {
        if !line.starts_with("CF") || line == "CF-END" {
            continue;
        }
        if line != expected(next) {
            return Err(format!("flood line {next} is {line:?}"));
        }
        next += 1;
    }
    if next != CONSOLE_FLOOD_LINES || !log.contains("CF-END") {
        return Err(format!(
            "{next} of {CONSOLE_FLOOD_LINES} flood lines (and the end marker) reached the log"
        ));
    }
    Ok(())
}

/// The verdict on a finished run: `Ok` or every reason it failed.
pub fn judge(s: &Scenario, log: &str, outcome: Outcome) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    for e in s.expect {
        if !log.contains(e) {
            why.push(format!("expected in the log: {e:?}"));
        }
    }
    for f in s.forbid {
        if log.contains(f) {
            why.push(format!("must not appear in the log: {f:?}"));
        }
    }
    let fatal = FATAL_MARKERS.iter().find(|m| log.contains(*m));
    match s.ending {
        Ending::Poweroff => {
            if let Some(m) = fatal {
                why.push(format!("fatal error in the log ({m:?})"));
            }
            if outcome != Outcome::Exited(0) {
                why.push(format!(
                    "expected QEMU to exit 0 after power-off, got {outcome:?}"
                ));
            } else if !log.contains(POWEROFF_MARKER) {
                why.push("QEMU exited without Hestia powering off (reset or triple fault?)".into());
            }
        }
        Ending::Fatal => {
            if fatal.is_none() {
                why.push("expected a fatal error report".into());
            }
            if outcome == Outcome::TimedOut {
                why.push("timed out".into());
            }
        }
        Ending::Reset => {
            if let Some(m) = fatal {
                why.push(format!("fatal error in the log ({m:?})"));
            }
            if outcome != Outcome::Exited(0) || log.contains(POWEROFF_MARKER) {
                why.push(format!(
                    "expected a reset (QEMU exit 0, no power-off), got {outcome:?}"
                ));
            }
        }
        Ending::StopWhenSeen => {
            if outcome != Outcome::Stopped {
                why.push(format!(
                    "expected the runner to stop a live Hestia, got {outcome:?}"
                ));
            }
        }
    }
    if let Some(v) = s.verdict {
        // dom0's verdict: a domU's lines carry Hestia's `(dN) ` prefix.
        let results: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Test result: ") && !l.starts_with("(d"))
            .collect();
        let want = match v {
            GuestVerdict::Success => "Test result: SUCCESS",
            GuestVerdict::Failure => "Test result: FAILURE",
        };
        match results.as_slice() {
            [] => why.push("the guest printed no \"Test result:\" line".into()),
            [one] if one.contains(want) => {}
            [one] => why.push(format!("guest verdict {:?}, expected {want:?}", one.trim())),
            _ => why.push(format!(
                "the guest printed {} \"Test result:\" lines",
                results.len()
            )),
        }
    }
    if let Some(Err(e)) = s.check.map(|c| c(log)) {
        why.push(e);
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[   0.1] INFO  Hestia ready: 4 CPUs online, RAM 2041 MiB (2000 MiB free), boot took 5 ms\n\
                        [   0.2] INFO  dom0: no dom0 kernel given (no multiboot2 module): nothing to run\n\
                        [   0.3] INFO  Hestia: powering off\n";

    #[test]
    fn throttle_takes_the_better_of_two_samples() {
        let line = |what: &str| format!("hestia-throttle: {what} over 12.0 s\n");
        let log = |a: &str, b: &str| {
            [
                line("weights 256 768 shares 25.5 74.5 busy 99.0"),
                line("weights 256 768 shares 29.0 71.0 busy 99.0"),
                line(a),
                line(b),
                line("cap 20 share 20.3"),
                line("cap 20 share 23.0"),
            ]
            .concat()
        };
        let good = "weights 768 256 shares 74.7 25.3 busy 99.0";
        let even = "weights 768 256 shares 50.0 50.0 busy 99.0";
        assert_eq!(check_throttle(&log(even, good)), Ok(()));
        assert!(check_throttle(&log(even, even)).is_err());
        // A setting measured once only.
        let short = log(good, good).replacen(&line("cap 20 share 23.0"), "", 1);
        assert!(check_throttle(&short).is_err());
    }

    #[test]
    fn modules_returned_must_be_seen_free() {
        let log = |kib: u64, free: u64| {
            format!(
                "INFO  mm: boot modules discarded: {kib} KiB returned, 196 MiB free\n\
                 free_memory            : {free}\r\r\n"
            )
        };
        assert_eq!(check_modules_returned(&log(82624, 196)), Ok(()));
        assert!(check_modules_returned(&log(708, 196)).is_err());
        assert!(check_modules_returned(&log(82624, 60)).is_err());
        assert!(check_modules_returned("free_memory            : 400\n").is_err());
    }

    fn boot() -> Scenario {
        all()
            .into_iter()
            .find(|s| s.name == "smp4-mem2048-bios")
            .unwrap()
    }

    #[test]
    fn clean_poweroff_passes() {
        assert_eq!(judge(&boot(), GOOD, Outcome::Exited(0)), Ok(()));
    }

    #[test]
    fn fifo_and_grant_check_needs_dom0_and_the_domu() {
        let dom0 =
            "[    7.4] xen:events: Using FIFO-based ABI\n[    7.5] Grant table initialized\n";
        let domu = "(d1) [    4.1] xen:events: Using FIFO-based ABI\n(d1) [    4.2] Grant table initialized\n";
        let check = check_fifo_and_grants_in_dom0_and_domu;
        assert_eq!(check(&format!("{dom0}{domu}")), Ok(()));
        assert!(check(dom0).is_err());
        assert!(check(domu).is_err());
        let no_domu_grants = domu.replace("Grant table", "Grant-less");
        assert!(check(&format!("{dom0}{no_domu_grants}")).is_err());
    }

    #[test]
    fn zombie_check_wants_the_first_unmapped_freed_first() {
        let freed = |d: &str| format!("INFO  {d}: its last frames mapped by others freed\n");
        let log = |a: &str, b: &str| {
            format!(
                "unmapping dead d2's frame\n{}unmapping dead d1's frame\n{}",
                freed(a),
                freed(b)
            )
        };
        assert_eq!(check_zombies_freed_in_order(&log("d2", "d1")), Ok(()));
        assert!(check_zombies_freed_in_order(&log("d1", "d2")).is_err());
        assert!(check_zombies_freed_in_order(&freed("d2")).is_err());
    }

    #[test]
    fn net_check_fails_on_a_step_that_gave_up() {
        assert_eq!(
            check_net("hestia-net: b rate vif state: 4 [9.1 s]\n"),
            Ok(())
        );
        assert!(check_net("hestia-net: b: network-attach nat failed [9.1 s]\n").is_err());
        assert!(check_net("hestia-net: a: no end of: ping [9.1 s]\n").is_err());
        assert!(check_net("hestia-net: rate-limit NOT slower\n").is_err());
        assert!(check_net("hestia-net: lan-to-a: lost 3 packets transmitted\n").is_err());
    }

    #[test]
    fn negative_control_missing_expectation_fails() {
        let log = GOOD.replace("no dom0 kernel given", "something else");
        assert!(judge(&boot(), &log, Outcome::Exited(0)).is_err());
    }

    #[test]
    fn negative_control_exit_without_poweroff_fails() {
        let log = GOOD.replace(POWEROFF_MARKER, "");
        let e = judge(
            &Scenario {
                expect: &[],
                ..boot()
            },
            &log,
            Outcome::Exited(0),
        )
        .unwrap_err();
        assert!(e[0].contains("without Hestia powering off"), "{e:?}");
    }

    #[test]
    fn negative_control_fatal_marker_fails_a_poweroff_scenario() {
        let log = format!("{GOOD}----[ Hestia CPU0 FATAL TRAP ]----\n");
        assert!(judge(&boot(), &log, Outcome::Exited(0)).is_err());
    }

    #[test]
    fn negative_control_timeout_and_wrong_numbers_fail() {
        assert!(judge(&boot(), GOOD, Outcome::TimedOut).is_err());
        let log = GOOD.replace("RAM 2041 MiB", "RAM 1900 MiB");
        assert!(judge(&boot(), &log, Outcome::Exited(0)).is_err());
        let log = GOOD.replace("4 CPUs", "3 CPUs");
        assert!(judge(&boot(), &log, Outcome::Exited(0)).is_err());
    }

    #[test]
    fn fatal_scenarios_need_a_fatal_report() {
        let s = all()
            .into_iter()
            .find(|s| s.name == "fault-invalid-opcode")
            .unwrap();
        assert!(judge(&s, GOOD, Outcome::Exited(0)).is_err());
    }

    #[test]
    fn reset_needs_exit_without_poweroff() {
        let s = all().into_iter().find(|s| s.name == "reset-key").unwrap();
        let log = "'R' pressed -> reboot the machine\n";
        assert_eq!(judge(&s, log, Outcome::Exited(0)), Ok(()));
        assert!(
            judge(&s, GOOD, Outcome::Exited(0)).is_err(),
            "a power-off is not a reset"
        );
        assert!(judge(&s, log, Outcome::TimedOut).is_err());
    }

    #[test]
    fn a_domus_verdict_is_not_dom0s() {
        let s = guest("x", GuestVerdict::Success);
        let only_domu = format!("(d1) Test result: SUCCESS\n{POWEROFF_MARKER}\n");
        assert!(judge(&s, &only_domu, Outcome::Exited(0)).is_err());
        let both = format!("(d1) Test result: FAILURE\nTest result: SUCCESS\n{POWEROFF_MARKER}\n");
        assert!(judge(&s, &both, Outcome::Exited(0)).is_ok());
    }

    #[test]
    fn guest_verdicts_are_read_not_assumed() {
        let s = all()
            .into_iter()
            .find(|s| s.name == "functional-enosys")
            .unwrap();
        let ok = format!("Test result: SUCCESS\n{POWEROFF_MARKER}\n");
        assert_eq!(judge(&s, &ok, Outcome::Exited(0)), Ok(()));
        let failed = format!("Test result: FAILURE (x)\n{POWEROFF_MARKER}\n");
        assert!(judge(&s, &failed, Outcome::Exited(0)).is_err());
        assert!(
            judge(&s, POWEROFF_MARKER, Outcome::Exited(0)).is_err(),
            "no verdict is a failure"
        );
        let twice = format!("Test result: SUCCESS\nTest result: SUCCESS\n{POWEROFF_MARKER}\n");
        assert!(judge(&s, &twice, Outcome::Exited(0)).is_err());
        let neg = all()
            .into_iter()
            .find(|s| s.name == "negative-control")
            .unwrap();
        assert_eq!(judge(&neg, &failed, Outcome::Exited(0)), Ok(()));
        assert!(judge(&neg, &ok, Outcome::Exited(0)).is_err());
    }

    #[test]
    fn ready_line_numbers() {
        assert_eq!(ready_numbers(GOOD), Some((4, 2041)));
        assert_eq!(ready_numbers("nothing"), None);
    }

    #[test]
    fn scenario_names_are_unique() {
        let mut names: Vec<_> = all().iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all().len());
    }

    #[test]
    fn a_userland_failure_fails_dom0_xl_smoke() {
        let ok = "hestia-dom0: xen: oxenstored, xen-init-dom0, xenconsoled\n";
        assert_eq!(check_no_userland_failure(ok), Ok(()));
        let bad = "hestia-dom0: xen-init-dom0 failed: exit status 1: ENOSYS\n";
        assert!(check_no_userland_failure(bad).is_err());
    }
}
