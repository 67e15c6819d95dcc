//! Boot-time domUs: the domains `domU=` describes, built from their multiboot2 modules before
//! dom0 (ids 1, 2, ... in `domU=` order), each with a console ring Hestia serves.
//!
//! Test hook `selftest=domu-cycles` (builds with the `test-hooks` feature): each boot-time domU
//! that is destroyed is built again from the same modules, until [`CYCLES`] domains have been
//! built and destroyed in all; then the free memory must be exactly what it was before the
//! first was built (`selftest: domu-cycles PASS` / `FAIL`), and the machine stops as usual
//! once no domain is left.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use hestia_core::cmdline::Options;

use super::DomainRef;
use crate::bootinfo::{BootInfo, Module};
use crate::pv::domain::{DomId, Domain};
use crate::sched::Params;

/// Build-and-destroy cycles of the `domu-cycles` test hook.
pub const CYCLES: u32 = 100;

/// What is needed to build a boot-time domU (again).
#[derive(Clone, Copy)]
struct BootDomU {
    id: DomId,
    kernel: Module,
    ramdisk: Option<Module>,
    vcpus: u32,
    pages: u64,
    params: Params,
}

/// The boot-time domUs, kept for the test hook.
static BUILT: spin::Mutex<Vec<BootDomU>> = spin::Mutex::new(Vec::new());
/// The test hook is on.
static CYCLING: AtomicBool = AtomicBool::new(false);
/// Domains destroyed so far under the hook.
static DESTROYED: AtomicU32 = AtomicU32::new(0);
/// Free memory (bytes) before the first boot-time domU was built.
static FREE_BEFORE: AtomicU64 = AtomicU64::new(0);

/// Builds the boot-time domUs of `domU=`, one line each; one that cannot be built is reported
/// and left out, the others still run. dom0 takes the modules none of them names
/// (`DomUs::dom0_modules`).
pub fn build_domus(info: &BootInfo, opts: &Options<'_>) -> Vec<(DomainRef, Params)> {
    let cycling = cfg!(feature = "test-hooks") && opts.selftest.domu_cycles;
    CYCLING.store(cycling, Ordering::Release);
    FREE_BEFORE.store(crate::mm::stats().free, Ordering::Release);
    let modules = info.modules();
    let mut built = Vec::new();
    for (i, u) in opts.domus.iter().enumerate() {
        let id = DomId(i as u16 + 1);
        if let Some(m) = u.missing_module(modules.len()) {
            crate::error!(
                "{id} \"{}\": module {m} does not exist ({} modules passed): not built",
                u.name,
                modules.len()
            );
            continue;
        }
        let (Some(&kernel), ramdisk) = (
            modules.get(u.kernel),
            u.ramdisk.and_then(|r| modules.get(r)).copied(),
        ) else {
            continue;
        };
        crate::info!(
            "{id} \"{}\": kernel module {}, {} MiB, {} vCPU{}, weight {}, cap {}, cpus {}, cmdline \"{}\"",
            u.name,
            u.kernel,
            u.mem >> 20,
            u.vcpus,
            if u.vcpus == 1 { "" } else { "s" },
            u.weight,
            u.cap,
            u.cpus,
            kernel.cmdline
        );
        let b = BootDomU {
            id,
            kernel,
            ramdisk,
            vcpus: u.vcpus,
            pages: u.pages(),
            params: Params {
                weight: u.weight,
                cap: u16::try_from(u.cap).unwrap_or(u16::MAX),
                cpus: u.cpus.0,
            },
        };
        if let Some(d) = build(&b) {
            BUILT.lock().push(b);
            built.push((d, b.params));
        }
    }
    built
}

/// Builds one boot-time domU and serves its console; `None` (reported) if it cannot be.
fn build(b: &BootDomU) -> Option<DomainRef> {
    let spec = crate::pv::builder::Spec {
        id: b.id,
        hardware: false,
        kernel: &b.kernel,
        initrd: b.ramdisk.as_ref(),
        nr_vcpus: b.vcpus,
    };
    let pages = b.pages;
    let r = match super::reserve_exact(b.id) {
        Ok(r) => r,
        Err(e) => {
            crate::error!("{}: cannot enter it in the domain table: {e:?}", b.id);
            return None;
        }
    };
    match crate::pv::builder::build(&spec, &|| (pages, pages)).map(|d| r.insert(d)) {
        Ok(Ok(d)) => {
            crate::console::ring::register(d.clone());
            Some(d)
        }
        Ok(Err(e)) => {
            crate::error!("{}: cannot enter it in the domain table: {e:?}", b.id);
            None
        }
        Err(e) => {
            crate::error!("{} {e}: not built", b.id);
            None
        }
    }
}

/// True while the test hook may build boot-time domUs again from their modules, which must
/// then stay in memory.
pub fn rebuilds_from_modules() -> bool {
    CYCLING.load(Ordering::Acquire)
}

/// True when the test hook takes care of `d`'s end (it is destroyed, then built again or,
/// after the last cycle, the machine stops): the machine must not stop with it.
pub fn cycled(d: &Domain) -> bool {
    CYCLING.load(Ordering::Acquire) && BUILT.lock().iter().any(|b| b.id == d.id)
}

/// `d` was destroyed: under the test hook, builds it again and starts it, or after the last
/// cycle checks the free memory and stops the machine once no domain is left.
pub fn destroyed(d: &Domain) {
    if !CYCLING.load(Ordering::Acquire) {
        return;
    }
    let n = DESTROYED.fetch_add(1, Ordering::AcqRel) + 1;
    if n < CYCLES {
        let again = BUILT.lock().iter().find(|b| b.id == d.id).copied();
        if let Some(b) = again
            && let Some(new) = build(&b)
        {
            crate::pv::start(&new, b.params);
        }
        return;
    }
    let (before, after) = (FREE_BEFORE.load(Ordering::Acquire), crate::mm::stats().free);
    if before == after {
        crate::info!(
            "selftest: domu-cycles PASS: {n} domains built and destroyed, {} KiB free before and after",
            after >> 10
        );
    } else {
        crate::error!(
            "selftest: domu-cycles FAIL: {n} domains built and destroyed, {} KiB free before, {} KiB after",
            before >> 10,
            after >> 10
        );
    }
    if super::all_dying() {
        crate::info!("Hestia: every domain has stopped");
        crate::machine::dom0_stopped(xen_abi::sched::reason::POWEROFF)
    }
}
