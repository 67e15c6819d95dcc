//! Hestia: a Type-1 hypervisor for x86_64 speaking the public Xen guest ABI.
//!
//! Boot order (see `docs/boot.md`): serial console, TSC calibration, multiboot2 information,
//! command line, frame allocator and final page tables, heap, then on a guarded stack: CPU tables,
//! ACPI, interrupt controllers, timers, application processors, self-checks, and the domain
//! builder (from milestone M1). Any failure before the machine is usable is one clear line on the
//! console followed by a power-off (or a halt with `noreboot`).
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod bootinfo;
mod console;
mod domain;
mod drivers;
mod hypercall;
mod machine;
mod mm;
mod pv;
mod sched;
mod selftest;
mod timer;

use core::sync::atomic::Ordering;

use alloc::boxed::Box;
use hestia_core::cmdline::{Options, Warning};

use arch::x86_64::{
    acpi, apic, backtrace, cpu, efi, hpet, ioapic, percpu, pic, pit, power, smp, tsc,
};
use bootinfo::BootInfo;

static OPTIONS: spin::Once<Options<'static>> = spin::Once::new();
/// Version string printed at boot.
const VERSION: &str = concat!("Hestia ", env!("CARGO_PKG_VERSION"));

/// First Rust code, called by the boot stub on the boot stack with the multiboot2 registers.
#[unsafe(no_mangle)]
pub extern "C" fn hestia_main(magic: u32, mbi_phys: u32) -> ! {
    arch::x86_64::boot::arm_boot_stack_tripwire();
    tsc::mark_boot();
    console::early_init();
    print!("\n");
    info!("{VERSION} (Xen 4.17 guest ABI), x86_64");
    match pit::measure_tsc_hz(20) {
        Some(hz) => tsc::set_hz(hz),
        None => {
            warn!("tsc: the PIT does not count; timestamps start once the HPET calibrates the TSC")
        }
    }

    let info = match bootinfo::parse(magic, mbi_phys) {
        Ok(i) => i,
        Err(e) => machine::fatal_boot(format_args!("boot: {e}")),
    };
    // Symbols first: the boot direct map already covers them, and early faults want names.
    match info.symbols {
        Some(s) => backtrace::init(&s),
        None => {
            warn!("boot: no symbol table from the bootloader; backtraces will show addresses only")
        }
    }
    let opts = Options::parse(info.cmdline, |w| match w {
        Warning::Unknown(n) => warn!("cmdline: unknown option '{n}' ignored"),
        Warning::BadValue(n, v) => warn!("cmdline: bad value '{v}' for '{n}' ignored"),
        Warning::Unsupported(n, v) => {
            warn!("cmdline: '{n}={v}' is not supported yet and is ignored")
        }
        Warning::BadDomU(v, p) => {
            warn!("cmdline: 'domU={v}' dropped: '{}': {}", p.item, p.why)
        }
    });
    console::configure(&opts);
    bootinfo::keep_cmdline(info.cmdline);
    if opts.trace_hypercalls || opts.trace_hypercall_errors {
        hypercall::enable_trace(opts.trace_hypercalls);
    }
    if opts.trace_exceptions {
        pv::enable_exception_trace();
    }
    machine::set_noreboot(opts.noreboot);
    let opts = *OPTIONS.call_once(|| opts);

    let mut brand = [0u8; 48];
    info!(
        "cpu: {}, TSC {}.{:03} MHz (PIT)",
        cpu::brand(&mut brand),
        tsc::hz() / 1_000_000,
        (tsc::hz() / 1000) % 1000
    );
    info!(
        "boot: loaded by {} ({}), command line \"{}\"",
        if info.loader.is_empty() {
            "?"
        } else {
            info.loader
        },
        if info.efi { "UEFI" } else { "BIOS" },
        info.cmdline
    );
    info!("boot: memory map from the {}:", info.memmap_source);
    for r in info.memmap.regions() {
        info!("  {:#014x} - {:#014x} {:?}", r.start, r.end, r.kind);
    }
    if info.memmap.dropped > 0 {
        warn!(
            "boot: {} memory map entries were empty, wrapped or beyond capacity and were dropped",
            info.memmap.dropped
        );
    }
    for (i, m) in info.modules().iter().enumerate() {
        info!(
            "boot: module {i}: {:#x}-{:#x} ({} KiB) \"{}\"",
            m.start,
            m.end,
            (m.end - m.start) / 1024,
            m.cmdline
        );
    }
    if let Some(fb) = info.framebuffer {
        info!(
            "boot: framebuffer {}x{}x{} at {:#x} (unused: the console is serial)",
            fb.width, fb.height, fb.bpp, fb.addr
        );
    }
    if info.dropped_modules > 0 {
        warn!(
            "boot: {} modules ignored (empty, inverted or more than {})",
            info.dropped_modules,
            bootinfo::MAX_MODULES
        );
    }

    let xpti = arch::x86_64::xpti::init(opts.xpti);
    mm::init(&info, !xpti);
    console::install_log_bridge();
    let info: &'static BootInfo = Box::leak(Box::new(info));
    bootinfo::keep_memory_map(info.memmap.regions());
    pv::l1tf::init(opts.pv_l1tf, &info.memmap);

    let Some(bsp) = smp::alloc_cpu_stacks()
        .and_then(|(stack, ist)| percpu::create(0, initial_apic_id(), stack, ist))
    else {
        machine::fatal_boot(format_args!(
            "mm: cannot allocate the boot CPU's stacks and GDT"
        ))
    };
    smp::load_cpu_tables(bsp);
    percpu::set_percpu_ready();
    arch::x86_64::syscall::init_cpu();
    cpu::enable_guest_fpu();
    let (smep, smap) = cpu::enable_smep_smap();
    let caps = cpu::arch_capabilities();
    let yes_no = |bit| if caps & bit != 0 { "yes" } else { "no" };
    info!(
        "cpu: SMEP {}, SMAP {}, ARCH_CAPABILITIES {caps:#x} (RDCL_NO {}, MDS_NO {})",
        if smep { "on" } else { "absent" },
        if smap { "on" } else { "absent" },
        yes_no(cpu::arch_caps::RDCL_NO),
        yes_no(cpu::arch_caps::MDS_NO)
    );
    arch::x86_64::spec_ctrl::init(&opts.spec_ctrl);
    let _ = opts;
    smp::switch_stack(bsp.stack_top, continue_boot, info as *const BootInfo as u64)
}

/// The APIC id CPUID reports for this CPU (x2APIC id from leaf 0xB when present).
fn initial_apic_id() -> u32 {
    if cpu::cpuid(0, 0).eax >= 0xB && cpu::cpuid(0xB, 0).ebx != 0 {
        cpu::cpuid(0xB, 0).edx
    } else {
        cpu::cpuid(1, 0).ebx >> 24
    }
}

/// Second half of boot, on the BSP's guarded stack.
extern "C" fn continue_boot(info: u64) -> ! {
    // SAFETY: `hestia_main` passes a leaked, never-freed `BootInfo`.
    let info: &'static BootInfo = unsafe { &*(info as *const BootInfo) };
    let opts = OPTIONS.get().copied().unwrap_or_default();

    if arch::x86_64::boot::boot_stack_exhausted() {
        machine::fatal_boot(format_args!(
            "boot: the first stack was used to its last page; statics below it may be corrupt"
        ))
    }
    let Some(root) = info.acpi else {
        machine::fatal_boot(format_args!(
            "acpi: the bootloader passed no RSDP; Hestia needs ACPI (MADT) to find CPUs and interrupt controllers"
        ))
    };
    efi::init(info);
    let platform = match acpi::discover(root) {
        Ok(p) => p,
        Err(e) => machine::fatal_boot(format_args!("acpi: cannot parse the tables: {e:?}")),
    };
    let sigs: alloc::vec::Vec<&str> = platform
        .tables
        .iter()
        .map(|s| core::str::from_utf8(s).unwrap_or("????"))
        .collect();
    info!(
        "acpi: revision {}, tables {}",
        root.revision,
        sigs.join(" ")
    );
    info!(
        "acpi: {} processors ({} enabled), {} IOAPICs, {} overrides, LAPIC at {:#x}{}",
        platform.processors.len(),
        platform.processors.iter().filter(|p| p.enabled).count(),
        platform.ioapics.len(),
        platform.overrides.len(),
        platform.lapic_addr,
        if platform.has_8259 {
            ", 8259 present"
        } else {
            ""
        }
    );
    match platform.power {
        Some(p) => {
            match p.s5 {
                Some(s) => info!(
                    "acpi: S5 sleep types {}/{}, reset register {}",
                    s.a,
                    s.b,
                    if p.reset.is_some() {
                        "present"
                    } else {
                        "absent"
                    }
                ),
                None => warn!("acpi: no \\_S5 in the DSDT: power-off will halt instead"),
            }
            power::init(p);
        }
        None => warn!("acpi: no FADT: power-off will halt instead"),
    }

    pic::disable();
    if let Err(e) = apic::init_global(platform.lapic_addr) {
        machine::fatal_boot(format_args!("apic: {e}"));
    }
    apic::init_cpu();
    let bsp_apic = apic::id();
    info!(
        "apic: {} mode, BSP APIC id {bsp_apic}, version {:#x}, timer {}",
        apic::mode_name(),
        apic::version() & 0xff,
        if apic::uses_tsc_deadline() {
            "TSC-deadline"
        } else {
            "one-shot"
        }
    );
    for io in &platform.ioapics {
        match mm::ioremap(io.addr, 4096).and_then(|v| ioapic::add(io.addr, v, io.gsi_base)) {
            Some(n) => info!(
                "ioapic: at {:#x}, GSI {}-{}, all lines masked",
                io.addr,
                io.gsi_base,
                io.gsi_base + n - 1
            ),
            None => warn!("ioapic: cannot use the IOAPIC at {:#x}", io.addr),
        }
    }

    if let Some(h) = platform.hpet.and_then(hpet::Hpet::init) {
        let hz = h.measure_tsc_hz(10);
        if tsc::hz() == 0 {
            tsc::set_hz(hz);
        }
        info!(
            "hpet: {} Hz; TSC by HPET {}.{:03} MHz",
            h.hz(),
            hz / 1_000_000,
            (hz / 1000) % 1000
        );
    }
    if tsc::hz() == 0 {
        machine::fatal_boot(format_args!(
            "tsc: no PIT and no HPET to calibrate the TSC against"
        ));
    }
    bootinfo::keep_wallclock((|| {
        let now_ns = tsc::uptime_ns();
        let unix = arch::x86_64::rtc::unix_time().filter(|&s| s > 0)?;
        // Subtract the uptime so that wallclock + system time = now.
        let at_boot = (unix as u64 * 1_000_000_000).checked_sub(now_ns)?;
        Some((at_boot / 1_000_000_000, (at_boot % 1_000_000_000) as u32))
    })());
    match bootinfo::wallclock_at_boot() {
        Some((s, _)) => info!("rtc: wallclock at boot {s} (Unix seconds)"),
        None => warn!("rtc: unreadable; guests see a wallclock of 0"),
    }
    let f = cpu::features();
    if !f.invariant_tsc {
        warn!("tsc: not invariant on this CPU; timestamps assume a constant rate");
    }
    apic::calibrate_timer();

    arch::x86_64::trap::register(arch::x86_64::trap::Handlers {
        syscall: hypercall::syscall,
        guest_exception: pv::guest_exception,
        debug_in_hypervisor: pv::debugreg::hypervisor_trap,
        timer: timer::interrupt,
        msi: pv::msi::interrupt,
        before_guest_return: pv::before_guest_return,
    });
    let (gsi, mode) = platform.isa_irq(opts.com1.irq);
    let routed = ioapic::route(gsi, mode, bsp_apic, console::keys::serial_interrupt);
    cpu::enable_interrupts();
    match routed {
        Ok(()) => console::start_async(&opts),
        Err(e) => warn!(
            "console: serial input unavailable (IRQ {} -> GSI {gsi}: {e})",
            opts.com1.irq
        ),
    }

    let enabled = platform
        .processors
        .iter()
        .filter(|p| p.enabled)
        .map(|p| p.apic_id);
    match smp::start_aps(enabled, bsp_apic) {
        Ok(r) => {
            if r.failed > 0 || r.skipped > 0 {
                warn!(
                    "smp: {} APs failed to start, {} beyond the {} CPU limit",
                    r.failed,
                    r.skipped,
                    percpu::MAX_CPUS
                );
            }
        }
        Err(e) => warn!("smp: application processors not started: {e}"),
    }
    percpu::this_cpu().online.store(true, Ordering::Release);

    if let Err(e) = mm::frametable::init(&info.memmap) {
        machine::fatal_boot(format_args!("mm: {e}"));
    }
    let wx = mm::paging::audit_wx(
        mm::kernel_root(),
        xen_abi::xen::MACH2PHYS_VIRT_START..mm::frametable::m2p_end(),
    );
    if wx.wx == 0 && wx.user == 0 {
        info!(
            "mm: W^X audit: {} mappings, none writable+executable, none user-accessible but the read-only M2P",
            wx.leaves
        );
    } else {
        error!(
            "mm: W^X audit FAILED: {} writable+executable and {} user mappings, first at {:#x}",
            wx.wx,
            wx.user,
            wx.first_bad.unwrap_or(0)
        );
    }

    let s = mm::stats();
    info!(
        "Hestia ready: {} CPUs online, RAM {} MiB ({} MiB free), boot took {} ms",
        percpu::online_count(),
        s.total_ram >> 20,
        s.free >> 20,
        tsc::uptime_ns() / 1_000_000
    );

    selftest::run(&opts.selftest);

    let mut guests = domain::boot::build_domus(info, &opts);
    let modules = info.modules();
    let (kernel, initrd) = opts.domus.dom0_modules(modules.len());
    match kernel.and_then(|k| modules.get(k)) {
        None => info!(
            "dom0: no dom0 kernel given (no multiboot2 module{}){}",
            if opts.domus.is_empty() {
                ""
            } else {
                " besides the domUs'"
            },
            if guests.is_empty() {
                ": nothing to run"
            } else {
                ""
            }
        ),
        Some(kernel) => {
            let spec = pv::builder::Spec {
                id: pv::domain::DomId(0),
                hardware: true,
                kernel,
                initrd: initrd.and_then(|i| modules.get(i)),
                nr_vcpus: dom0_vcpus(&opts),
            };
            let r = domain::reserve_exact(spec.id).unwrap_or_else(|e| {
                machine::fatal_boot(format_args!("dom0: cannot claim its id: {e:?}"))
            });
            match pv::builder::build(&spec, &|| dom0_pages(&opts)) {
                Ok(d) => match r.insert(d) {
                    Ok(d) => guests.insert(0, (d, sched::Params::default())),
                    Err(e) => machine::fatal_boot(format_args!(
                        "dom0: cannot enter it in the domain table: {e:?}"
                    )),
                },
                // As Xen: a dom0 that cannot be built is fatal.
                Err(e) => machine::fatal_boot(format_args!("dom0 {e}")),
            }
        }
    }
    if !domain::boot::rebuilds_from_modules() {
        mm::discard_boot_modules(info);
    }
    if !guests.is_empty() {
        sched::register_idle_work(|| domain::reap_step(false));
        pv::register_after_stop(domain::life::after_stop);
        console::keys::guests_started(domain::hardware_domain().is_some());
        pv::run(guests);
    }
    if opts.noreboot {
        info!("noreboot: Hestia stays up; debug keys on the serial line ('h' for help)");
        loop {
            cpu::idle();
        }
    }
    machine::power_off()
}

/// Most vCPUs a domain may have.
const MAX_VCPUS: u32 = 64;

/// dom0's vCPUs: one per online CPU (as Xen), or `dom0_max_vcpus=` (more than there are CPUs
/// share them).
fn dom0_vcpus(opts: &Options) -> u32 {
    let online = percpu::online_count().max(1);
    let wanted = opts.dom0_max_vcpus.map_or(online, |(_, max)| max);
    if wanted > MAX_VCPUS {
        warn!("dom0_max_vcpus: {wanted} asked, at most {MAX_VCPUS}: dom0 gets {MAX_VCPUS}");
    }
    wanted.clamp(1, MAX_VCPUS)
}

/// dom0's size and ceiling in pages: `dom0_mem=` (bounded by `max:`), else, as Xen, all free
/// memory minus the smaller of 1/16 of it and 128 MiB. The ceiling is `max:`, else none, as
/// Xen's `dom0_compute_nr_pages` (2^32 - 1 pages), so the toolstack may balloon dom0 up again.
fn dom0_pages(opts: &Options) -> (u64, u64) {
    let free = mm::stats().free / 4096;
    let default = free - (free / 16).min(128 << 8);
    let pages = opts.dom0_mem.target.map_or(default, |b| b / 4096).min(free);
    let pages = opts.dom0_mem.max.map_or(pages, |m| pages.min(m / 4096));
    let ceiling = opts.dom0_mem.max.map_or(u64::from(u32::MAX), |m| m / 4096);
    (pages, ceiling)
}

#[panic_handler]
fn panic(p: &core::panic::PanicInfo<'_>) -> ! {
    cpu::disable_interrupts();
    console::start_sync();
    let me = percpu::current_cpu_index();
    console::with_lock(|w| {
        let _ = writeln!(w, "----[ Hestia CPU{me} PANIC ]----");
        let _ = writeln!(w, "Panic on CPU {me}: {}", p.message());
        if let Some(l) = p.location() {
            let _ = writeln!(w, "  at {}:{}:{}", l.file(), l.line(), l.column());
        }
        backtrace::print(w, cpu::frame_pointer());
    });
    machine::fatal_stop()
}
