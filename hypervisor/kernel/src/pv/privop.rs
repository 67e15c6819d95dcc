//! Privileged instructions a PV guest executes in ring 3 that Hestia performs for it
//! (`shared/xen-abi.md` 4.10), and CPUID as guests see it: the answer comes from the domain's
//! CPU policy (`Domain::cpu_policy`, PV default unless its toolstack set another) through
//! `hestia_core::cpuid::guest_leaf`. The system policies every domain's is checked against
//! ([`system_policies`]) are derived once, from the CPU that first asks, as Xen derives them
//! from its boot CPU: Hestia assumes its CPUs alike.
//!
//! From a #GP(0): port I/O in every form (see [`super::ioport`]) and CLI/STI (no-ops, as in
//! Xen) when the guest's mode may use them; and from guest kernel mode RDMSR/WRMSR (see
//! [`super::msr`]), moves to and from CR0/2/3/4 and DR0-7, RDTSC/RDTSCP (they only trap when
//! the guest set CR4.TSD), CLTS, WBINVD, XSETBV. From #UD: the forced-emulation prefix
//! `ud2; "xen"; cpuid`. Anything else is reflected. Instructions are decoded by
//! `hestia_core::insn` from guest memory, byte by byte.
//!
//! RIP advances past an emulated instruction as on the CPU, wrapping at 2^64. It is not checked
//! against the canonical hole, as in Xen: an instruction that ends at 0x0000_8000_0000_0000
//! leaves RIP there, the IRETQ back to the guest faults, and the exit path's fix-up (`idt.rs`)
//! gives the guest #GP(0) at that RIP (`xsa-style-noncanonical-rip`).

use alloc::boxed::Box;

use hestia_core::cpu_policy::CpuPolicy;
use hestia_core::cpuid;
use hestia_core::insn::{self, Decoded};
use hestia_core::xstate;
use xen_abi::callback::FORCED_EMULATION_PREFIX;
use xen_abi::errno::Errno;

use super::domain::{Domain, Vcpu};
use super::{debugreg, ioport, msr};
use crate::arch::x86_64::cpu;
use crate::arch::x86_64::idt::TrapFrame;
use crate::arch::x86_64::spec_ctrl;
use crate::mm::guest::GuestRange;
use hestia_core::policy::{self, Action};

/// What became of a trapping instruction.
pub enum Outcome {
    /// Performed (RIP is past it, or on it again for the rest of a long REP string).
    Done,
    /// Not one Hestia performs: deliver the original exception.
    Reflect,
    /// Performed as far as the architecture goes: it raises this exception (no error code).
    Raise(u64),
    /// It touched unmapped guest memory: a page fault for the guest.
    PageFault {
        /// The faulting address (the guest's CR2).
        addr: u64,
        /// #PF error code bits (W).
        error_code: u64,
    },
}

const VEC_UD: u64 = 6;
/// CR0.TS.
const CR0_TS: u64 = 1 << 3;
/// CR4 bits a guest controls: TSD, OSXSAVE (DE and FSGSBASE are not offered).
const CR4_GUEST: u64 = (1 << 2) | (1 << 18);
const CR4_TSD: u64 = 1 << 2;
const CR4_OSXSAVE: u64 = 1 << 18;
/// CR4 bits a guest sees as Hestia set them: PAE, MCE, OSFXSR, OSXMMEXCPT.
const CR4_VISIBLE: u64 = (1 << 5) | (1 << 6) | (1 << 9) | (1 << 10);

/// The CR4 a vCPU reads before it writes any (Xen's `pv_fixup_guest_cr4(v, 0)`).
pub fn initial_cr4() -> u64 {
    cpu::read_cr4() & CR4_VISIBLE
}

/// The guest instruction byte at `rip + i`.
pub(super) fn fetch(rip: u64, i: usize) -> Option<u8> {
    let mut b = [0u8; 1];
    GuestRange::new(rip.checked_add(i as u64)?, 1)
        .and_then(|r| r.read(&mut b))
        .ok()?;
    Some(b[0])
}

/// General-purpose register `n` (the ModRM/REX encoding order) of the trapped context.
pub(super) fn gpr(f: &mut TrapFrame, n: u8) -> &mut u64 {
    match n & 15 {
        0 => &mut f.rax,
        1 => &mut f.rcx,
        2 => &mut f.rdx,
        3 => &mut f.rbx,
        4 => &mut f.rsp,
        5 => &mut f.rbp,
        6 => &mut f.rsi,
        7 => &mut f.rdi,
        8 => &mut f.r8,
        9 => &mut f.r9,
        10 => &mut f.r10,
        11 => &mut f.r11,
        12 => &mut f.r12,
        13 => &mut f.r13,
        14 => &mut f.r14,
        _ => &mut f.r15,
    }
}

/// Emulates the instruction behind a #GP(0) raised by guest code.
pub fn general_protection(d: &Domain, v: &mut Vcpu, f: &mut TrapFrame) -> Outcome {
    let rip = f.rip;
    let insn = insn::decode(|i| fetch(rip, i));
    let advance = match insn.op {
        Decoded::In { .. } | Decoded::Out { .. } | Decoded::Ins { .. } | Decoded::Outs { .. } => {
            match ioport::emulate(d, v, f, insn.op) {
                Ok(done) => done,
                Err(ioport::Fault::GeneralProtection) => return Outcome::Reflect,
                Err(ioport::Fault::PageFault { addr, write }) => {
                    return Outcome::PageFault {
                        addr,
                        error_code: if write { 2 } else { 0 },
                    };
                }
            }
        }
        // Allowed by the virtual IOPL, they change nothing (the virtual interrupt flag is the
        // upcall mask, which only the guest's own stores change), as in Xen.
        Decoded::Cli | Decoded::Sti => {
            if !ioport::iopl_ok(d, v) {
                return Outcome::Reflect;
            }
            true
        }
        _ if !v.kernel_mode => return Outcome::Reflect,
        op => match kernel_only(d, v, f, op) {
            Ok(()) => true,
            // A CR3 load whose validation stopped part way: the instruction runs again.
            Err(Errno::ERESTART) => false,
            // Xen's mapping of emulation errors: -ENODEV is #UD, anything else #GP.
            Err(Errno::ENODEV) => return Outcome::Raise(VEC_UD),
            Err(_) => return Outcome::Reflect,
        },
    };
    if advance {
        f.rip = f.rip.wrapping_add(u64::from(insn.len));
    }
    Outcome::Done
}

/// The instructions only guest kernel mode may have performed.
fn kernel_only(d: &Domain, v: &mut Vcpu, f: &mut TrapFrame, op: Decoded) -> Result<(), Errno> {
    match op {
        Decoded::Rdmsr => {
            let value = msr::read(d, v, f.rcx as u32).inspect_err(|_| refused(v, f, "RDMSR"))?;
            (f.rax, f.rdx) = (value & 0xffff_ffff, value >> 32);
        }
        Decoded::Wrmsr => {
            let value = (f.rdx << 32) | (f.rax & 0xffff_ffff);
            msr::write(d, v, f.rcx as u32, value).inspect_err(|_| refused(v, f, "WRMSR"))?;
        }
        Decoded::ReadCr { cr, gpr: r } => *gpr(f, r) = read_cr(v, cr)?,
        Decoded::WriteCr { cr, gpr: r } => write_cr(d, v, cr, *gpr(f, r))?,
        Decoded::ReadDr { dr, gpr: r } => *gpr(f, r) = debugreg::get(v, u64::from(dr))?,
        Decoded::WriteDr { dr, gpr: r } => debugreg::set(v, u64::from(dr), *gpr(f, r))?,
        Decoded::Rdtsc | Decoded::Rdtscp => {
            let t = cpu::rdtsc();
            (f.rax, f.rdx) = (t & 0xffff_ffff, t >> 32);
            if op == Decoded::Rdtscp {
                f.rcx = 0; // TSC_AUX: not offered
            }
        }
        Decoded::Clts => cpu::clear_ts(),
        Decoded::Wbinvd if policy::allows(d.rights, Action::CacheFlush) => cpu::wbinvd(),
        Decoded::Wbinvd => {} // nothing of its own could be stale in a cache
        Decoded::Xsetbv => {
            let value = (f.rdx << 32) | (f.rax & 0xffff_ffff);
            let valid = xstate::guest_may_set_xcr0(value, cpu::guest_xcr0_mask());
            if f.rcx as u32 != 0 || !valid || v.cr4 & CR4_OSXSAVE == 0 {
                return Err(Errno::EINVAL);
            }
            // SAFETY: a valid combination (x87 set, AVX only with SSE) within what Hestia
            // enabled, so within what the CPU supports.
            unsafe { cpu::set_xcr0(value) };
        }
        _ => return Err(Errno::EINVAL),
    }
    Ok(())
}

fn refused(v: &Vcpu, f: &TrapFrame, what: &str) {
    crate::gdebug!(
        crate::pv::current(),
        "v{}: {what} of MSR {:#x} refused (#GP)",
        v.id,
        f.rcx as u32
    );
}

/// `mov %crN, %reg` as a PV kernel sees it.
fn read_cr(v: &Vcpu, cr: u8) -> Result<u64, Errno> {
    match cr {
        0 => Ok(cpu::read_cr0()),
        2 => Ok(v.cr2),
        3 => Ok(v.kernel_cr3),
        4 => Ok(v.cr4),
        _ => Err(Errno::EINVAL),
    }
}

/// `mov %reg, %crN`: CR0 may only toggle TS, CR2 is virtual, CR3 switches page tables like
/// `MMUEXT_NEW_BASEPTR`, CR4 keeps only the guest-controlled bits.
fn write_cr(d: &Domain, v: &mut Vcpu, cr: u8, value: u64) -> Result<(), Errno> {
    match cr {
        0 if (value ^ cpu::read_cr0()) & !CR0_TS != 0 => Err(Errno::EINVAL),
        0 => {
            if value & CR0_TS != 0 {
                cpu::set_ts();
            } else {
                cpu::clear_ts();
            }
            Ok(())
        }
        2 => {
            v.cr2 = value;
            d.shared().set_cr2(v.id, value);
            Ok(())
        }
        3 => super::mmu::new_baseptr(d, v, value >> 12),
        4 => {
            let offered = if cpu::guest_xcr0_mask() != 0 {
                CR4_GUEST
            } else {
                CR4_GUEST & !CR4_OSXSAVE
            };
            let new = (value & offered) | (cpu::read_cr4() & CR4_VISIBLE);
            if (new ^ v.cr4) & CR4_TSD != 0 {
                let real = cpu::read_cr4() & !CR4_TSD | (new & CR4_TSD);
                // SAFETY: TSD only makes RDTSC fault outside ring 0, i.e. in the guest.
                unsafe { cpu::write_cr4(real) };
            }
            v.cr4 = new;
            Ok(())
        }
        _ => Err(Errno::EINVAL),
    }
}

/// `ud2; "xen"; cpuid` at RIP: run CPUID for the guest and skip the 7 bytes.
pub fn forced_cpuid(d: &Domain, v: &Vcpu, f: &mut TrapFrame) -> bool {
    let mut insn = [0u8; 7];
    if GuestRange::new(f.rip, 7)
        .and_then(|r| r.read(&mut insn))
        .is_err()
        || insn[..5] != FORCED_EMULATION_PREFIX
        || insn[5..] != [0x0F, 0xA2]
    {
        return false;
    }
    let (leaf, sub) = (f.rax as u32, f.rcx as u32);
    let r = guest_cpuid(d, v, leaf, sub);
    (f.rax, f.rbx, f.rcx, f.rdx) = (
        u64::from(r[0]),
        u64::from(r[1]),
        u64::from(r[2]),
        u64::from(r[3]),
    );
    f.rip = f.rip.wrapping_add(7);
    true
}

/// CPUID as PV vCPU `v` of `d` sees it (`hestia_core::cpuid::guest_leaf`).
pub fn guest_cpuid(d: &Domain, v: &Vcpu, leaf: u32, sub: u32) -> [u32; 4] {
    let ctx = cpuid::Context {
        kernel_mode: v.kernel_mode,
        guest_osxsave: v.cr4 & CR4_OSXSAVE != 0,
        hardware_domain: d.rights.hardware,
        version: xen_abi::version::XEN_VERSION,
    };
    cpuid::guest_leaf(&d.cpu_policy.lock(), leaf, sub, &ctx, hw_cpuid)
}

/// CPUID on this CPU, as an array.
fn hw_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = cpu::cpuid(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Xen's system CPU policies (`XEN_SYSCTL_cpu_policy_*`), fixed once derived.
pub struct SystemPolicies {
    /// What the hardware reports.
    pub raw: Box<CpuPolicy>,
    /// What Hestia runs with.
    pub host: Box<CpuPolicy>,
    /// The most a PV domain may be given.
    pub pv_max: Box<CpuPolicy>,
    /// What a PV domain gets unless its toolstack says otherwise.
    pub pv_default: Box<CpuPolicy>,
}

static SYSTEM: spin::Once<SystemPolicies> = spin::Once::new();

/// The system CPU policies, derived on first use (after XSAVE and the speculation controls
/// are set up: the PV policies depend on both).
pub fn system_policies() -> &'static SystemPolicies {
    SYSTEM.call_once(|| {
        let raw = CpuPolicy::fill(hw_cpuid, cpu::arch_capabilities());
        let host = CpuPolicy::host(&raw);
        let features = cpuid::PvFeatures {
            xcr0_mask: cpu::guest_xcr0_mask(),
            ibpb: spec_ctrl::guest_has_ibpb(),
        };
        SystemPolicies {
            pv_max: CpuPolicy::pv(&host, &features, true),
            pv_default: CpuPolicy::pv(&host, &features, false),
            raw,
            host,
        }
    })
}

/// The policy a new PV domain starts with: a copy of PV default.
pub fn default_cpu_policy() -> spin::Mutex<Box<CpuPolicy>> {
    spin::Mutex::new(system_policies().pv_default.clone())
}
