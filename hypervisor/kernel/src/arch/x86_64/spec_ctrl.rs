//! Speculative-execution mitigations on the paths between Hestia and PV guests, as Xen 4.17
//! applies them (`xen/arch/x86/spec_ctrl.c`, `include/asm/spec_ctrl_asm.h`). The decisions are
//! pure logic in [`hestia_core::spec_ctrl`]; this module reads the CPU's facts once at boot,
//! publishes the decisions as flag bytes for the entry and exit paths, logs Xen's summary, and
//! owns IA32_PRED_CMD.
//!
//! - **VERW on exit to a PV guest** (`hestia_verw` in `idt.rs`): defends against MDS (XSA-297:
//!   a guest sampling the store, fill and load-port buffers Hestia just used), RFDS and AMD's
//!   TSA. Xen's default: on when the CPU is affected and its microcode gives VERW the scrubbing
//!   side effect (MD_CLEAR on an MDS-affected Intel model, RFDS_CLEAR, VERW_CLEAR);
//!   `spec-ctrl=verw` forces it, `spec-ctrl=no-verw` removes it.
//! - **IBPB on entry from a PV guest** (`hestia_ibpb_entry` in `idt.rs`): defends against AMD
//!   Branch Type Confusion and SRSO (a guest training return and branch-type predictions that
//!   Hestia's first RETs would follow). Xen's default: on for PV domUs on affected AMD parts,
//!   off for dom0 unless `spec-ctrl=ibpb-entry`. The flag is one for the machine (the IST entry
//!   reads it before SWAPGS, so it cannot be per CPU): it is on from the creation of the first
//!   domain that needs it ([`domain_created`]), so dom0 then pays for it too, where Xen switches
//!   it per vCPU: more barriers than Xen, never fewer.
//! - **IBPB at a switch between domains** (`spec-ctrl=ibpb`, Spectre v2, on by default): when
//!   a CPU loads a vCPU of another domain than the last one it ran ([`domain_switch`]), as Xen's
//!   `opt_ibpb_ctxt_switch`, so one domain's branch predictions never steer another's.
//! - **Guest IA32_PRED_CMD writes** ([`guest_write_pred_cmd`]): PV guests see IBPB in CPUID
//!   exactly when the hardware has IBPB or IBRSB (Xen offers AMD's IBPB bit on Intel too), and
//!   then may issue one. IBRS, STIBP and SSBD stay hidden: Hestia does not context-switch
//!   IA32_SPEC_CTRL (Xen with `spec-ctrl=msr-sc=no-pv`), so guest accesses to it raise #GP.
//!
//! The flags are written once by the BSP before any guest runs and only read afterwards.

use core::sync::atomic::{AtomicBool, Ordering};

use hestia_core::spec_ctrl::{self as policy, CpuFacts, Mds, SpecCtrl, Vendor, arch_caps};
use xen_abi::errno::Errno;

use super::cpu::{self, cpuid};

/// IA32_PRED_CMD (write-only).
pub const PRED_CMD: u32 = 0x49;
/// AMD's microcode patch level.
const AMD_PATCH_LEVEL: u32 = 0x8B;

/// Tested by the exit path before its VERW (one byte, RIP-relative). Entry data: mapped while
/// guests run on restricted page tables (XPTI), where the exit path reads it.
#[unsafe(link_section = ".data.entry")]
pub static VERW_ON: AtomicBool = AtomicBool::new(false);
/// Tested by the entry paths before their IBPB (the IST entry from ring 3 reads it while
/// still on restricted page tables). Entry data.
#[unsafe(link_section = ".data.entry")]
pub static IBPB_ENTRY_ON: AtomicBool = AtomicBool::new(false);

static STATE: spin::Once<(CpuFacts, SpecCtrl)> = spin::Once::new();

/// Reads the boot CPU's facts.
pub fn facts() -> CpuFacts {
    let l0 = cpuid(0, 0);
    let vendor = if cpu::is_intel() {
        Vendor::Intel
    } else if cpu::is_amd() || cpu::is_hygon() {
        Vendor::Amd
    } else {
        Vendor::Other
    };
    let l1 = cpuid(1, 0);
    let family = cpu::family();
    let base_model = (l1.eax >> 4) & 0xf;
    let model = if family >= 6 {
        base_model | ((l1.eax >> 12) & 0xf0)
    } else {
        base_model
    };
    let leaf = |l: u32, max: u32| {
        if max >= l {
            cpuid(l, 0)
        } else {
            cpu::CpuidResult::default()
        }
    };
    let l7 = leaf(7, l0.eax);
    let max_ext = cpuid(0x8000_0000, 0).eax;
    let e8 = leaf(0x8000_0008, max_ext);
    let e21 = leaf(0x8000_0021, max_ext);
    let bit = |r: u32, b: u32| r & (1 << b) != 0;
    let ucode_rev = if vendor == Vendor::Amd && family >= 0x10 {
        // SAFETY: PATCH_LEVEL exists on every AMD family 0x10 and later; reading is inert.
        unsafe { cpu::rdmsr(AMD_PATCH_LEVEL) as u32 }
    } else {
        0
    };
    CpuFacts {
        vendor,
        family,
        model,
        stepping: l1.eax & 0xf,
        hypervisor: bit(l1.ecx, 31),
        ucode_rev,
        arch_caps: cpu::arch_capabilities(),
        md_clear: bit(l7.edx, 10),
        ibrsb: bit(l7.edx, 26),
        ibpb: bit(e8.ebx, 12),
        btc_no: bit(e8.ebx, 29),
        verw_clear: bit(e21.eax, 5),
        sbpb: bit(e21.eax, 27),
        ibpb_brtype: bit(e21.eax, 28),
        srso_no: bit(e21.eax, 29),
        srso_us_no: bit(e21.eax, 30),
        tsa_sq_no: bit(e21.ecx, 1),
        tsa_l1_no: bit(e21.ecx, 2),
    }
}

/// Decides every mitigation from the boot CPU and `opts`, arms the entry and exit paths for
/// dom0, and logs the summary. Called once by the BSP before any guest runs.
pub fn init(opts: &policy::Options) {
    let (f, s) = STATE.call_once(|| {
        let f = facts();
        (f, policy::decide(&f, opts))
    });
    VERW_ON.store(s.verw_pv, Ordering::Release);
    IBPB_ENTRY_ON.store(s.ibpb_entry(true), Ordering::Release);
    let c = f.arch_caps;
    let hardware = Flags(&[
        (f.ibpb || f.ibrsb, "IBPB"),
        (f.ibrsb, "IBRS"),
        (f.md_clear, "MD_CLEAR"),
        (c & arch_caps::FB_CLEAR != 0, "FB_CLEAR"),
        (c & arch_caps::RFDS_CLEAR != 0, "RFDS_CLEAR"),
        (s.verw_clear, "VERW_CLEAR"),
        (c & arch_caps::MDS_NO != 0, "MDS_NO"),
        (f.btc_no, "BTC_NO"),
        (f.srso_no, "SRSO_NO"),
        (f.ibpb_brtype, "IBPB_BRTYPE"),
    ]);
    crate::info!(
        "spec-ctrl: hardware:{hardware}, MDS {}",
        match s.mds {
            Mds::No => "no",
            Mds::StoreBufferOnly => "store buffers only",
            Mds::Yes { known: true } => "yes",
            Mds::Yes { known: false } => "yes (unrecognised model, assumed)",
        }
    );
    if s.tsa_unknown_ucode {
        crate::warn!(
            "spec-ctrl: unrecognised CPU {:02x}-{:02x}-{:02x}, microcode {:#010x} for the TSA mitigation",
            f.family,
            f.model,
            f.stepping,
            f.ucode_rev
        );
    }
    crate::info!(
        "spec-ctrl: Support for PV VMs:{}{}, Other:{}",
        policy::pv_support(s),
        if s.ibpb_entry_pv && !s.ibpb_entry_dom0 {
            " (not dom0)"
        } else {
            ""
        },
        if s.ibpb_ctxt_switch {
            " IBPB-ctxt"
        } else {
            " None"
        }
    );
}

/// The names of the facts that hold, space-separated with a leading space, or ` none`.
struct Flags<'a>(&'a [(bool, &'static str)]);

impl core::fmt::Display for Flags<'_> {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut any = false;
        for (_, name) in self.0.iter().filter(|(on, _)| *on) {
            write!(out, " {name}")?;
            any = true;
        }
        if !any {
            out.write_str(" none")?;
        }
        Ok(())
    }
}

/// The decisions (defaults before [`init`]: nothing on, no IBPB).
fn state() -> (CpuFacts, SpecCtrl) {
    STATE.get().copied().unwrap_or_default()
}

/// A domain was created (`hardware`: the hardware domain): IBPB on every entry from a guest
/// from now on if that domain needs it.
pub fn domain_created(hardware: bool) {
    if state().1.ibpb_entry(hardware) {
        IBPB_ENTRY_ON.store(true, Ordering::Release);
    }
}

/// This CPU is about to run a vCPU of another domain than the last one it ran: the branch
/// predictor barrier, when `spec-ctrl=ibpb` (the default where the CPU has IBPB).
pub fn domain_switch() {
    let (f, s) = state();
    if s.ibpb_ctxt_switch && (f.ibpb || f.ibrsb) {
        // SAFETY: PRED_CMD exists (IBPB or IBRSB enumerated); the barrier has no effect on
        // memory or architectural state.
        unsafe { cpu::wrmsr(PRED_CMD, 1) };
    }
}

/// True when PV guests see IBPB in CPUID (the hardware has IBPB or IBRSB).
pub fn guest_has_ibpb() -> bool {
    state().1.has_ibpb
}

/// A PV guest's WRMSR to IA32_PRED_CMD, as Xen's `guest_wrmsr`: `Err` (#GP for the guest) when
/// its CPUID shows no IBPB or `value` sets a bit it does not offer; otherwise the barrier is
/// issued on this CPU, which is the one the guest runs on.
pub fn guest_write_pred_cmd(value: u64) -> Result<(), Errno> {
    let (f, s) = state();
    match s.pred_cmd_valid_bits(&f) {
        Some(valid) if value & !valid == 0 => {
            // SAFETY: PRED_CMD exists (IBPB or IBRSB enumerated) and `value` holds only the
            // barrier bits the CPU enumerates; a barrier has no effect on memory or state.
            unsafe { cpu::wrmsr(PRED_CMD, value) };
            Ok(())
        }
        _ => Err(Errno::EPERM),
    }
}
