//! L1 Terminal Fault (XSA-273) for PV guests: the boot-time decision, each domain's setting,
//! and what happens to a domain that writes a not-present entry L1TF could read through.
//!
//! At boot [`init`] reads the CPU (vendor, model, address width, `RDCL_NO`) and the memory
//! map's end, and combines them with `pv-l1tf=` into the per-kind settings and the safe
//! address (the rules are `hestia_core::l1tf`'s). A domain's setting is fixed when it is
//! created ([`domain_init`], Xen's `pv_l1tf_domain_init`): the frame table then checks every
//! not-present entry that enters one of its tables, by validation or by update
//! (`hestia_core::pv_mm`, invariant 6). Xen would move an offending domain to shadow paging;
//! Hestia has none, so [`crash`] crashes it, as a Xen built without shadow paging does
//! (Debian's Xen 4.17 is one: on the reference rig it crashes the same domains).
//!
//! Primary source: Xen 4.17 `xen/arch/x86/spec_ctrl.c`, `xen/arch/x86/include/asm/shadow.h`.

use core::sync::atomic::Ordering;

use hestia_core::cmdline::PerDomainKind;
use hestia_core::l1tf::{self, CpuInfo, SafeMaddr, Settings};
use hestia_core::memmap::MemoryMap;
use xen_abi::sched::reason;

use super::domain::{Domain, this_vcpu_id};
use crate::arch::x86_64::cpu;
use crate::mm::frametable;

/// The settings and this machine's safe addresses, decided once at boot.
static DECISION: spin::Once<(Settings, SafeMaddr)> = spin::Once::new();

/// What CPUID and IA32_ARCH_CAPABILITIES say about this CPU.
fn cpu_info() -> CpuInfo {
    let max_extended_leaf = cpu::cpuid(0x8000_0000, 0).eax;
    let leaf = |n: u32| (max_extended_leaf >= n).then(|| cpu::cpuid(n, 0));
    CpuInfo {
        intel: cpu::is_intel(),
        signature: cpu::cpuid(1, 0).eax,
        max_extended_leaf,
        address_sizes: leaf(0x8000_0008).map_or(0, |r| r.eax),
        sme: leaf(0x8000_001f).map_or(0, |r| r.ebx),
        rdcl_no: cpu::arch_capabilities() & cpu::arch_caps::RDCL_NO != 0,
    }
}

/// Decides, once at boot, whether each kind of domain is checked, and logs it in one line
/// (and, as Xen, one more for an Intel model it does not know).
pub fn init(option: PerDomainKind, memmap: &MemoryMap) {
    let v = l1tf::vulnerability(&cpu_info());
    let memory_end = memmap.regions().iter().map(|r| r.end).max().unwrap_or(0);
    let safe = SafeMaddr::new(&v, memory_end);
    let s = Settings::new(option, v.vulnerable);
    DECISION.call_once(|| (s, safe));
    if let Some(model) = v.unrecognised_model {
        crate::warn!("spec: unrecognised CPU model {model:#x}: assuming vulnerable to L1TF");
    }
    let on_off = |b| if b { "enabled" } else { "disabled" };
    crate::info!(
        "spec: PV L1TF checks: Dom0 {}, DomU {} (CPU believed{} vulnerable, maxphysaddr L1D {}, CPUID {}, safe address {:#x}; no shadow paging: an unsafe not-present PTE crashes its domain)",
        on_off(s.dom0),
        on_off(s.domu),
        if v.vulnerable { "" } else { " not" },
        v.l1d_maxphysaddr,
        v.paddr_bits,
        safe.safe_maddr
    );
}

/// The setting of a new domain `dom`, the hardware domain or not, registered with the frame
/// table before the domain has page tables; stored in the domain as its `check_l1tf`.
pub fn domain_init(dom: u16, hardware_domain: bool) -> bool {
    let Some(&(settings, safe)) = DECISION.get() else {
        return false;
    };
    let check = settings.for_domain(hardware_domain);
    frametable::with(|ft, _| ft.set_l1tf_check(dom, check.then_some(safe)));
    check
}

/// Crashes `d`, which tried to write `entry`, not present, into a level-`level` table that
/// L1TF could read through (one rate-limited line; the caller returns to the guest no more).
pub fn crash(d: &Domain, level: u8, entry: u64) {
    crate::gerror!(
        d,
        "{}v{} L1TF-vulnerable L{level}e {entry:016x} - crashing (no shadow paging)",
        d.id,
        this_vcpu_id()
    );
    if d.mark_stopped() {
        crate::error!("{}: crashed (L1TF-vulnerable PTE)", d.id);
        d.shutdown_reason.store(reason::CRASH, Ordering::Release);
    }
}
