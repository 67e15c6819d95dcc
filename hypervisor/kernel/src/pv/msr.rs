//! RDMSR/WRMSR from a PV guest kernel (`shared/xen-abi.md` 4.10): the MSRs Linux PV touches,
//! answered as Xen 4.17 answers them; everything else raises #GP (Linux reads most MSRs with
//! `rdmsr_safe` and copes).
//!
//! Speculation controls: IA32_PRED_CMD takes an IBPB when the guest's CPUID shows IBPB
//! (`arch::x86_64::spec_ctrl`); IA32_SPEC_CTRL raises #GP, as CPUID offers no IBRS, STIBP or
//! SSBD (Hestia does not switch that MSR between guest and hypervisor).
//!
//! The MSRs a CPU policy holds (PLATFORM_INFO, ARCH_CAPABILITIES) read as the domain's policy
//! says (`hestia_core::cpu_policy::CpuPolicy::rdmsr`) and are read-only, as in Xen.
//!
//! Machine check: CPUID offers MCE/MCA (as Xen does), so Linux programs the architectural MCA
//! registers with unchecked accesses. Each vCPU gets Xen's virtual machine-check bank set: two
//! banks, no MCG_CTL, bank controls stuck at all ones, status registers that read as "no
//! error" and ignore writes, CTL2 kept (Intel).

use xen_abi::errno::Errno;

use super::domain::{Domain, Vcpu};
use crate::arch::x86_64::cpu::{self, msr};
use crate::arch::x86_64::spec_ctrl;

/// IA32_TIME_STAMP_COUNTER.
const TSC: u32 = 0x10;
/// IA32_BIOS_SIGN_ID (Intel microcode revision) / AMD PATCH_LEVEL.
const UCODE_REV: u32 = 0x8B;
/// IA32_MISC_ENABLE (Intel only).
const MISC_ENABLE: u32 = 0x1A0;
/// IA32_PAT.
const PAT: u32 = 0x277;
/// IA32_PERF_CAPABILITIES.
const PERF_CAPABILITIES: u32 = 0x345;
/// IA32_MCG_CAP, IA32_MCG_STATUS.
const MCG_CAP: u32 = 0x179;
const MCG_STATUS: u32 = 0x17A;
/// First IA32_MCi_CTL; each bank has CTL, STATUS, ADDR, MISC.
const MC0_CTL: u32 = 0x400;
/// First IA32_MCi_CTL2 (Intel).
const MC0_CTL2: u32 = 0x280;
/// Virtual machine-check banks per vCPU (Xen's `GUEST_MC_BANK_NUM`).
pub const MC_BANKS: usize = 2;
/// MCG_CAP as Xen's vMCE reports it: the bank count, and on Intel software error recovery
/// (SER_P), threshold-based status (TES_P) and CMCI (CMCI_P).
pub fn guest_mcg_cap() -> u64 {
    let intel = if cpu::is_intel() {
        (1 << 24) | (1 << 11) | (1 << 10)
    } else {
        0
    };
    intel | MC_BANKS as u64
}
/// The MCG_CAP bits a restored vCPU may bring (Xen's `vmce_restore_vcpu`): what the vMCE
/// offers (on Intel also LMCE_P), any bank count, MCG_CTL_P.
pub fn restorable_mcg_cap() -> u64 {
    let lmce = if cpu::is_intel() { 1 << 27 } else { 0 };
    guest_mcg_cap() | lmce | 0xff | (1 << 8)
}
/// AMD HWCR and DE_CFG.
const AMD_HWCR: u32 = 0xC001_0015;
const AMD_DE_CFG: u32 = 0xC001_1029;
/// HWCR.TscFreqSel (family 0x10 and later).
const HWCR_TSC_FREQ_SEL: u64 = 1 << 24;
/// DE_CFG.LFENCE_SERIALISE.
const DE_CFG_LFENCE_SERIALISE: u64 = 1 << 1;

/// The PAT every PV guest sees (and cannot change): Xen's fixed layout WB, WT, UC-, UC, WC, WP.
/// Linux derives its cache-mode to PTE-bit mapping from exactly this value.
pub const GUEST_PAT: u64 = 0x0000_0501_0007_0406;
/// The LAPIC base a PV guest reads: default address, enabled (its LAPIC is not real).
const APIC_BASE_DEFAULT: u64 = 0xFEE0_0000 | (1 << 11);
/// APIC_BASE.BSP, for vCPU 0.
const APIC_BASE_BSP: u64 = 1 << 8;
/// EFER bits a guest may see: SCE, LME, LMA, NXE.
const EFER_VISIBLE: u64 = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11);
/// MISC_ENABLE bits hidden from guests: performance monitoring available, MONITOR/MWAIT.
const MISC_ENABLE_HIDDEN: u64 = (1 << 7) | (1 << 18);
/// MISC_ENABLE bits forced on: BTS and PEBS unavailable, xTPR messages disabled.
const MISC_ENABLE_FORCED: u64 = (1 << 11) | (1 << 12) | (1 << 23);

/// What RDMSR `index` returns for guest kernel `v` of `d`.
pub fn read(d: &Domain, v: &Vcpu, index: u32) -> Result<u64, Errno> {
    if let Some(value) = d.cpu_policy.lock().rdmsr(index) {
        return Ok(value);
    }
    Ok(match index {
        msr::FS_BASE => cpu::fs_base(),
        // While Hestia runs (after SWAPGS) the guest's active GS base is in KERNEL_GS_BASE.
        msr::GS_BASE => cpu::kernel_gs_base(),
        msr::KERNEL_GS_BASE => v.gs_base_user,
        msr::EFER => cpu::efer() & EFER_VISIBLE,
        msr::APIC_BASE => APIC_BASE_DEFAULT | if v.id.raw() == 0 { APIC_BASE_BSP } else { 0 },
        PAT => GUEST_PAT,
        TSC => cpu::rdtsc(),
        UCODE_REV | PERF_CAPABILITIES | MCG_STATUS => 0,
        MCG_CAP => guest_mcg_cap(),
        m if mc_bank(m).is_some() => match mc_bank(m) {
            Some((_, 0)) => u64::MAX, // CTL: all ones, always
            _ => 0,                   // STATUS, ADDR, MISC: no error logged
        },
        m if let Some(bank) = mc_ctl2(m) => v.mc_ctl2[bank],
        AMD_HWCR if cpu::is_amd() => {
            if cpu::family() >= 0x10 {
                HWCR_TSC_FREQ_SEL
            } else {
                0
            }
        }
        AMD_DE_CFG if cpu::is_amd() => DE_CFG_LFENCE_SERIALISE,
        MISC_ENABLE if cpu::is_intel() => {
            // SAFETY: every Intel CPU with long mode has IA32_MISC_ENABLE; reading it is inert.
            let host = unsafe { cpu::rdmsr(MISC_ENABLE) };
            (host & !MISC_ENABLE_HIDDEN) | MISC_ENABLE_FORCED
        }
        _ => return Err(Errno::EPERM),
    })
}

/// The virtual bank and register (0 CTL, 1 STATUS, 2 ADDR, 3 MISC) behind MSR `m`.
fn mc_bank(m: u32) -> Option<(usize, u32)> {
    let i = m.checked_sub(MC0_CTL)?;
    let bank = (i / 4) as usize;
    (bank < MC_BANKS).then_some((bank, i % 4))
}

/// The virtual bank behind IA32_MCi_CTL2 MSR `m` (Intel only).
fn mc_ctl2(m: u32) -> Option<usize> {
    let bank = m.checked_sub(MC0_CTL2)? as usize;
    (bank < MC_BANKS && cpu::is_intel()).then_some(bank)
}

/// WRMSR `index` := `value` from guest kernel `v` of `d`.
pub fn write(d: &Domain, v: &mut Vcpu, index: u32, value: u64) -> Result<(), Errno> {
    let which = match index {
        msr::FS_BASE => 0,
        msr::GS_BASE => 2,
        msr::KERNEL_GS_BASE => 1,
        // Writing back what a read returns is allowed (Linux does it for EFER and
        // MISC_ENABLE); any change is refused.
        msr::EFER | MISC_ENABLE if read(d, v, index) == Ok(value) => return Ok(()),
        // An IBPB, when the guest's CPUID offers it (SPEC_CTRL is not offered: #GP).
        spec_ctrl::PRED_CMD => return spec_ctrl::guest_write_pred_cmd(value),
        // Intel's "write 0, then CPUID" to latch the microcode revision: nothing to latch.
        UCODE_REV if value == 0 => return Ok(()),
        // Clearing the machine-check state; bank controls are kept (and change nothing).
        MCG_STATUS if value == 0 => return Ok(()),
        // Bank registers take any value and keep reading as before (no error injected).
        m if mc_bank(m).is_some() => return Ok(()),
        m if let Some(bank) = mc_ctl2(m) => {
            v.mc_ctl2[bank] = value;
            return Ok(());
        }
        _ => return Err(Errno::EPERM),
    };
    super::segment::set_base_locked(v, which, value).map(|_| ())
}
