//! CPU policies through the toolstack interface, as libxenguest's `xc_cpuid_apply_policy` uses
//! them for every domain `xl create` builds (Xen 4.17: `xen/arch/x86/sysctl.c`, `domctl.c`,
//! `xen/lib/x86/cpuid.c`, `msr.c`, `policy.c`):
//! - `XEN_SYSCTL_get_cpu_policy`: null handles give the most entries (120 leaves, 2 MSRs);
//!   PV default and PV max come back in Xen's serialised order (basic leaves with leaf 4, 7,
//!   0xB, 0xD sub-leaves, the two hypervisor limits, the extended leaves; PLATFORM_INFO then
//!   ARCH_CAPS), `ENOBUFS` when the room is short, `EINVAL` for a bad index or reserved field;
//! - `XEN_SYSCTL_get_cpu_featureset`: 19 words, the policy's leaves in `cpufeatureset.h`
//!   order, PV default within PV max;
//! - `XEN_DOMCTL_get_cpu_policy` on itself: the same layout, and CPUID as it executes it
//!   (forced emulation) matches it but for the dynamic bits (APIC ID, OSXSAVE, OSPKE, the XSAVE
//!   size, the hardware domain's MTRR/MONITOR/EIST leaks, the topology leaf's ids), and RDMSR
//!   of PLATFORM_INFO and ARCH_CAPS matches its MSR entries (ARCH_CAPS #GP unless offered),
//!   WRMSR of either #GP;
//! - `XEN_DOMCTL_set_cpu_policy`: `EINVAL` on itself; on a domain it creates (when
//!   `createdomain` exists): leaves and MSRs a policy cannot hold are `ERANGE` with `err_leaf`/
//!   `err_subleaf`/`err_msr` naming them, counts beyond PV max `EINVAL` naming the leaf, more
//!   than 120 leaves `E2BIG`, a refusal leaves the policy as it was, and an accepted policy
//!   reads back clamped to PV max.
//!
//! Exact feature bits are not compared with Xen's: Hestia hides features Xen offers
//! (and until `createdomain` exists on Hestia, the set paths on a new domain run on Xen only).
//! As a domU it gets `EPERM` and waits to be stopped; dom0 with `domu` on its command line
//! first checks that the running domU's policy cannot be set (`EEXIST`), then stops it.
#![no_std]
#![no_main]

use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::SeqCst;

use hestia_guests::control::{arg, domctl, domctl_op, sysctl, sysctl_op};
use hestia_guests::xen_abi::domctl::{
    CpuPolicy, CpuidLeaf, CreateDomain, MsrEntry, XEN_CPUID_INPUT_UNUSED, XEN_CPUID_NO_SUBLEAF,
    cmd as dcmd,
};
use hestia_guests::xen_abi::sched::{SchedRemoteShutdown, cmd, reason};
use hestia_guests::xen_abi::sysctl::{
    self, CpuFeatureset, cmd as scmd, featureset as fsidx, policy as pidx,
};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr, sif};
use hestia_guests::{
    ExcFrame, Verdict, check, cmdline, forced_cpuid, hypercall, install_traps, map_shared_info,
    println, rdmsr_probe, system_time_ns, wrmsr_probe,
};
use zerocopy::IntoBytes;

const EPERM: i64 = -1;
const E2BIG: i64 = -7;
const EEXIST: i64 = -17;
const EINVAL: i64 = -22;
const ERANGE: i64 = -34;
const ENOSYS: i64 = -38;
const EOPNOTSUPP: i64 = -95;
const ENOBUFS: i64 = -105;

const NS: u32 = XEN_CPUID_NO_SUBLEAF;
const MAX_LEAVES: usize = 120;
const NR_FEATURES: usize = 19;
const MSR_INTEL_PLATFORM_INFO: u32 = 0xCE;
const MSR_ARCH_CAPABILITIES: u32 = 0x10A;

/// #GPs taken (each skips the 2-byte RDMSR/WRMSR).
static GP: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector == 13 {
        GP.fetch_add(1, SeqCst);
    } else {
        println!("unexpected exception {vector} at {:#x}", f.rip);
    }
    f.rip += 2;
}

/// A serialised policy.
struct Policy {
    leaves: [CpuidLeaf; MAX_LEAVES],
    nr: usize,
    msrs: [MsrEntry; 2],
    nr_msrs: usize,
}

impl Policy {
    fn new() -> Self {
        Policy {
            leaves: [CpuidLeaf::default(); MAX_LEAVES],
            nr: 0,
            msrs: [MsrEntry::default(); 2],
            nr_msrs: 0,
        }
    }

    fn leaves(&self) -> &[CpuidLeaf] {
        self.leaves.get(..self.nr).unwrap_or(&[])
    }

    fn find(&self, leaf: u32, subleaf: u32) -> Option<&CpuidLeaf> {
        self.leaves()
            .iter()
            .find(|l| l.leaf == leaf && l.subleaf == subleaf)
    }
}

/// `XEN_SYSCTL_get_cpu_policy` of `index` into `p` with room `room` leaves and 2 MSRs.
fn get_system(index: u32, p: &mut Policy, room: u32) -> i64 {
    let a = sysctl::CpuPolicy {
        index,
        nr_leaves: room,
        nr_msrs: 2,
        _rsvd: 0,
        leaves: p.leaves.as_mut_ptr() as u64,
        msrs: p.msrs.as_mut_ptr() as u64,
    };
    let mut op = sysctl_op(scmd::GET_CPU_POLICY, &a);
    let r = sysctl(&mut op);
    let out: sysctl::CpuPolicy = arg(&op.u);
    if r == 0 {
        (p.nr, p.nr_msrs) = (out.nr_leaves as usize, out.nr_msrs as usize);
    }
    r
}

/// `XEN_DOMCTL_get_cpu_policy` of `domid` into `p`.
fn get_domain(domid: u16, p: &mut Policy) -> i64 {
    let a = CpuPolicy {
        nr_leaves: MAX_LEAVES as u32,
        nr_msrs: 2,
        leaves: p.leaves.as_mut_ptr() as u64,
        msrs: p.msrs.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut op = domctl_op(dcmd::GET_CPU_POLICY, domid, &a);
    let r = domctl(&mut op);
    let out: CpuPolicy = arg(&op.u);
    if r == 0 {
        (p.nr, p.nr_msrs) = (out.nr_leaves as usize, out.nr_msrs as usize);
    }
    r
}

/// `XEN_DOMCTL_set_cpu_policy` of `domid` from `leaves` (`nr` of them) and `msrs`: the result
/// and (err_leaf, err_subleaf, err_msr).
fn set_domain(domid: u16, leaves: &[CpuidLeaf], nr: u32, msrs: &[MsrEntry]) -> (i64, [u32; 3]) {
    let u = XEN_CPUID_INPUT_UNUSED;
    let a = CpuPolicy {
        nr_leaves: nr,
        nr_msrs: msrs.len() as u32,
        leaves: leaves.as_ptr() as u64,
        msrs: msrs.as_ptr() as u64,
        err_leaf: u,
        err_subleaf: u,
        err_msr: u,
        _pad: 0,
    };
    let mut op = domctl_op(dcmd::SET_CPU_POLICY, domid, &a);
    let r = domctl(&mut op);
    let out: CpuPolicy = arg(&op.u);
    (r, [out.err_leaf, out.err_subleaf, out.err_msr])
}

fn featureset(index: u32, words: &mut [u32; NR_FEATURES], room: u32) -> (i64, u32) {
    let a = CpuFeatureset {
        index,
        nr_features: room,
        features: words.as_mut_ptr() as u64,
    };
    let mut op = sysctl_op(scmd::GET_CPU_FEATURESET, &a);
    let r = sysctl(&mut op);
    (r, arg::<CpuFeatureset>(&op.u).nr_features)
}

/// What is wrong with `p`'s layout (`x86_cpuid_copy_to_buffer`'s order and counts), if
/// anything.
fn layout(p: &Policy) -> Option<&'static str> {
    layout_check(p).err()
}

fn layout_check(p: &Policy) -> Result<(), &'static str> {
    let l = p.leaves();
    let max_leaf = l
        .first()
        .filter(|e| e.leaf == 0 && e.subleaf == NS)
        .ok_or("no leaf 0 first")?
        .a;
    let mut i = 0;
    let mut next = |leaf: u32, sub: u32| -> Option<CpuidLeaf> {
        let e = *l.get(i)?;
        i += 1;
        (e.leaf == leaf && e.subleaf == sub).then_some(e)
    };
    for leaf in 0..=max_leaf.min(0xD) {
        match leaf {
            4 => {
                for s in 0..6 {
                    if next(4, s).ok_or("leaf 4 sub-leaves")?.a & 0x1f == 0 {
                        break;
                    }
                }
            }
            7 => {
                let top = next(7, 0).ok_or("leaf 7.0")?.a;
                for s in 1..=top.min(2) {
                    next(7, s).ok_or("leaf 7 sub-leaves")?;
                }
            }
            0xB => {
                for s in 0..2 {
                    if (next(0xB, s).ok_or("leaf 0xB sub-leaves")?.c >> 8) & 0xff == 0 {
                        break;
                    }
                }
            }
            0xD => {
                let d0 = next(0xD, 0).ok_or("leaf 0xD.0")?;
                let d1 = next(0xD, 1).ok_or("leaf 0xD.1")?;
                let xstates = (u64::from(d0.d | d1.d) << 32) | u64::from(d0.a | d1.c);
                let top = 64 - (xstates >> 2).leading_zeros();
                for s in 2..(top + 2).min(63) {
                    next(0xD, s).ok_or("leaf 0xD sub-leaves")?;
                }
            }
            _ => {
                next(leaf, NS).ok_or("a basic leaf")?;
            }
        }
    }
    next(0x4000_0000, NS).ok_or("hv_limit")?;
    next(0x4000_0100, NS).ok_or("hv2_limit")?;
    let extd = next(0x8000_0000, NS).ok_or("leaf 0x80000000")?.a;
    for leaf in 0x8000_0001..=(0x8000_0000 | (extd & 0xffff).min(0x21)) {
        next(leaf, NS).ok_or("an extended leaf")?;
    }
    if i != l.len() {
        return Err("entries after the last extended leaf");
    }
    if p.nr_msrs != 2
        || p.msrs[0].idx != MSR_INTEL_PLATFORM_INFO
        || p.msrs[1].idx != MSR_ARCH_CAPABILITIES
    {
        return Err("MSRs not PLATFORM_INFO, ARCH_CAPS");
    }
    Ok(())
}

/// Bits of (EAX, EBX, ECX, EDX) that depend on the moment, not on the policy.
fn dynamic_mask(leaf: u32, sub: u32) -> [u32; 4] {
    match (leaf, sub) {
        // APIC ID; OSXSAVE, and the hardware domain's MONITOR and EIST; its MTRR.
        (1, _) => [0, 0xff00_0000, 1 << 27 | 1 << 7 | 1 << 3, 1 << 12],
        (0x8000_0001, _) => [0, 0, 0, 1 << 12],
        (7, 0) => [0, 0, 1 << 4, 0],
        // PMU: Xen hides it at run time unless its vPMU is on.
        (0xA, _) => [!0; 4],
        (0xB, _) => [0, 0, 0xff, !0],
        (0xD, 0 | 1) => [0, !0, 0, 0],
        _ => [0; 4],
    }
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    if si.flags & sif::PRIVILEGED == 0 {
        return as_domu();
    }
    if cmdline(si).contains("domu") {
        // d1 waits, running, to be stopped: its policy is fixed.
        let (r, _) = set_domain(1, &[], 0, &[]);
        check!(failed, r == EEXIST, "set_cpu_policy on a running d1 = {r}");
        let mut d1 = Policy::new();
        let r = get_domain(1, &mut d1);
        check!(
            failed,
            r == 0 && layout(&d1).is_none(),
            "d1's policy = {r}, {:?}",
            layout(&d1)
        );
        // Let it print its verdict, then stop it before printing anything here.
        check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
        let t = system_time_ns() + 1_000_000_000;
        while system_time_ns() < t {
            sched_yield();
        }
        let s = SchedRemoteShutdown {
            domain_id: 1,
            _pad: 0,
            reason: reason::POWEROFF,
        };
        let r = hypercall(
            nr::SCHED_OP,
            u64::from(cmd::REMOTE_SHUTDOWN),
            &s as *const SchedRemoteShutdown as u64,
            0,
            0,
            0,
        );
        check!(failed, r == 0, "remote_shutdown(1) = {r}");
    }

    // The size query libxenguest makes: a zeroed structure.
    let mut op = sysctl_op(scmd::GET_CPU_POLICY, &sysctl::CpuPolicy::default());
    let r = sysctl(&mut op);
    let size: sysctl::CpuPolicy = arg(&op.u);
    check!(
        failed,
        r == 0 && size.nr_leaves == MAX_LEAVES as u32 && size.nr_msrs == 2,
        "size query = {r}: {} leaves, {} MSRs",
        size.nr_leaves,
        size.nr_msrs
    );
    let bad = sysctl::CpuPolicy {
        index: 6,
        ..Default::default()
    };
    let r = sysctl(&mut sysctl_op(scmd::GET_CPU_POLICY, &bad));
    check!(failed, r == EINVAL, "policy index 6 = {r}");
    let bad = sysctl::CpuPolicy {
        _rsvd: 1,
        ..Default::default()
    };
    let r = sysctl(&mut sysctl_op(scmd::GET_CPU_POLICY, &bad));
    check!(failed, r == EINVAL, "reserved field set = {r}");

    let mut def = Policy::new();
    let r = get_system(pidx::PV_DEFAULT, &mut def, MAX_LEAVES as u32);
    check!(failed, r == 0, "PV default = {r}");
    println!("PV default: {} leaves, {} MSRs", def.nr, def.nr_msrs);
    if let Some(e) = layout(&def) {
        check!(failed, false, "PV default's layout: {e}");
    }
    let mut max = Policy::new();
    let r = get_system(pidx::PV_MAX, &mut max, MAX_LEAVES as u32);
    check!(failed, r == 0, "PV max = {r}");
    println!("PV max: {} leaves, {} MSRs", max.nr, max.nr_msrs);
    if let Some(e) = layout(&max) {
        check!(failed, false, "PV max's layout: {e}");
    }
    let mut host = Policy::new();
    let r = get_system(pidx::HOST, &mut host, MAX_LEAVES as u32);
    check!(
        failed,
        r == 0 && layout(&host).is_none(),
        "host = {r}, {:?}",
        layout(&host)
    );
    let r = get_system(pidx::PV_DEFAULT, &mut Policy::new(), 5);
    check!(failed, r == ENOBUFS, "PV default in 5 entries = {r}");
    let r = get_system(pidx::HVM_DEFAULT, &mut Policy::new(), MAX_LEAVES as u32);
    // Xen built with HVM answers; Hestia has PV guests only.
    check!(failed, r == 0 || r == EOPNOTSUPP, "HVM default = {r}");
    let count = |p: &Policy, leaf: u32| p.leaves().iter().filter(|l| l.leaf == leaf).count();
    check!(
        failed,
        count(&max, 7) >= count(&def, 7) && count(&max, 7) == 3,
        "leaf 7 sub-leaves: PV max {}, PV default {}",
        count(&max, 7),
        count(&def, 7)
    );

    // Featuresets: the policy's words, PV default within PV max.
    let mut words = [0u32; NR_FEATURES];
    let (r, _) = featureset(fsidx::PV, &mut words, 0);
    check!(failed, r == ENOBUFS, "featureset into no room = {r}");
    let mut op = sysctl_op(scmd::GET_CPU_FEATURESET, &CpuFeatureset::default());
    let r = sysctl(&mut op);
    let n0 = arg::<CpuFeatureset>(&op.u).nr_features;
    check!(
        failed,
        r == 0 && n0 == NR_FEATURES as u32,
        "featureset size = {r}, {n0}"
    );
    let (r, _) = featureset(fsidx::PV, &mut words, 2);
    check!(failed, r == ENOBUFS, "featureset in 2 words = {r}");
    let (r, n) = featureset(fsidx::PV, &mut words, NR_FEATURES as u32);
    check!(
        failed,
        r == 0 && n == NR_FEATURES as u32,
        "PV featureset = {r}, {n} words"
    );
    let mut max_words = [0u32; NR_FEATURES];
    let (r, _) = featureset(fsidx::PV_MAX, &mut max_words, NR_FEATURES as u32);
    check!(failed, r == 0, "PV max featureset = {r}");
    let (r, _) = featureset(7, &mut [0; NR_FEATURES], NR_FEATURES as u32);
    check!(failed, r == EINVAL, "featureset index 7 = {r}");
    for (i, (w, m)) in words.iter().zip(max_words).enumerate() {
        check!(
            failed,
            w & !m == 0,
            "PV default word {i} {w:#x} beyond PV max {m:#x}"
        );
    }
    let word = |leaf, sub, reg: usize| {
        def.find(leaf, sub)
            .map(|l| [l.a, l.b, l.c, l.d][reg])
            .unwrap_or(0)
    };
    for (i, leaf, sub, reg) in [
        (0, 1, NS, 3),
        (1, 1, NS, 2),
        (2, 0x8000_0001, NS, 3),
        (3, 0x8000_0001, NS, 2),
        (5, 7, 0, 1),
        (9, 7, 0, 3),
    ] {
        check!(
            failed,
            words[i] == word(leaf, sub, reg),
            "featureset word {i} {:#x} is not leaf {leaf:#x}'s {:#x}",
            words[i],
            word(leaf, sub, reg)
        );
    }
    println!("PV featureset: {:08x?}", words);
    println!("PV max featureset: {:08x?}", max_words);

    // Its own policy, and CPUID as it executes it.
    let mut own = Policy::new();
    let mut op = domctl_op(dcmd::GET_CPU_POLICY, 0, &CpuPolicy::default());
    let r = domctl(&mut op);
    let s: CpuPolicy = arg(&op.u);
    check!(
        failed,
        r == 0 && s.nr_leaves == MAX_LEAVES as u32 && s.nr_msrs == 2,
        "domctl size query = {r}: {}, {}",
        s.nr_leaves,
        s.nr_msrs
    );
    let r = get_domain(0, &mut own);
    check!(failed, r == 0, "own policy = {r}");
    if let Some(e) = layout(&own) {
        check!(failed, false, "own policy's layout: {e}");
    }
    for l in own.leaves() {
        if (0x4000_0000..0x8000_0000).contains(&l.leaf) {
            continue;
        }
        let sub = if l.subleaf == NS { 0 } else { l.subleaf };
        let (a, b, c, d) = forced_cpuid(l.leaf, sub);
        let m = dynamic_mask(l.leaf, sub);
        let (got, want) = (
            [a & !m[0], b & !m[1], c & !m[2], d & !m[3]],
            [l.a & !m[0], l.b & !m[1], l.c & !m[2], l.d & !m[3]],
        );
        check!(
            failed,
            got == want,
            "CPUID {:#x}/{sub} = {got:08x?}, policy {want:08x?}",
            l.leaf
        );
        if let Some(d) = def.find(l.leaf, l.subleaf)
            && [d.a, d.b, d.c, d.d] != [l.a, l.b, l.c, l.d]
        {
            println!(
                "own policy differs from PV default at {:#x}/{:#x}: {:08x?} vs {:08x?}",
                l.leaf,
                l.subleaf,
                [l.a, l.b, l.c, l.d],
                [d.a, d.b, d.c, d.d]
            );
        }
    }
    // The MSRs a policy holds: PLATFORM_INFO reads as the policy says, ARCH_CAPS only where
    // leaf 7.0 EDX offers it; neither may be written.
    install_traps(handler);
    let platform_info = own.msrs[0].val;
    let r = rdmsr_probe(MSR_INTEL_PLATFORM_INFO, &GP);
    check!(
        failed,
        r == Some(platform_info),
        "RDMSR PLATFORM_INFO = {r:x?}, policy {platform_info:#x}"
    );
    let arch_caps = own.find(7, 0).is_some_and(|l| l.d & 1 << 29 != 0);
    let r = rdmsr_probe(MSR_ARCH_CAPABILITIES, &GP);
    check!(
        failed,
        r == arch_caps.then_some(own.msrs[1].val),
        "RDMSR ARCH_CAPABILITIES = {r:x?} (offered: {arch_caps})"
    );
    for m in [MSR_INTEL_PLATFORM_INFO, MSR_ARCH_CAPABILITIES] {
        check!(failed, !wrmsr_probe(m, 0, &GP), "WRMSR {m:#x} accepted");
    }

    // Past the counts: zeros.
    let extd = own.find(0x8000_0000, NS).map_or(0, |l| l.a);
    for leaf in [0xE, extd.wrapping_add(1), 0x8000_0022] {
        let r = forced_cpuid(leaf, 0);
        check!(
            failed,
            r == (0, 0, 0, 0),
            "CPUID {leaf:#x} past the counts = {r:x?}"
        );
    }

    // Never on itself.
    let (r, errs) = set_domain(0, own.leaves(), own.nr as u32, &[]);
    check!(failed, r == EINVAL, "set_cpu_policy on itself = {r}");
    check!(
        failed,
        errs == [XEN_CPUID_INPUT_UNUSED; 3],
        "err fields touched: {errs:x?}"
    );

    set_on_new_domain(&mut failed, &def, &max);
    verdict(failed)
}

fn sched_yield() {
    hypercall(nr::SCHED_OP, u64::from(cmd::YIELD), 0, 0, 0, 0);
}

/// As a domU: every call `EPERM`; then it waits, running, for dom0 to stop it, so that dom0
/// can check its policy cannot be set while it runs.
fn as_domu() -> Verdict {
    let mut failed = false;
    let mut p = Policy::new();
    let r = get_system(pidx::PV_DEFAULT, &mut p, MAX_LEAVES as u32);
    check!(failed, r == EPERM, "a domU's get_cpu_policy = {r}");
    let r = get_domain(0, &mut p);
    check!(failed, r == EPERM, "a domU's domctl get_cpu_policy = {r}");
    let (r, _) = set_domain(0, &[], 0, &[]);
    check!(failed, r == EPERM, "a domU's domctl set_cpu_policy = {r}");
    if failed {
        return verdict(failed);
    }
    println!("Test result: SUCCESS");
    loop {
        sched_yield();
    }
}

/// `XEN_DOMCTL_createdomain` of a one-vCPU PV domain: its id, or the error.
fn create_domain() -> Result<u16, i64> {
    let c = CreateDomain {
        max_vcpus: 1,
        max_evtchn_port: 1023,
        max_grant_frames: 1,
        max_maptrack_frames: 1,
        grant_opts: 1,
        ..Default::default()
    };
    let mut op = domctl_op(dcmd::CREATEDOMAIN, 0, &c);
    match domctl(&mut op) {
        0 => Ok(op.domain),
        e => Err(e),
    }
}

/// The error paths of `set_cpu_policy` and its clamping, on a domain that has not run.
fn set_on_new_domain(failed: &mut bool, def: &Policy, max: &Policy) {
    let mut failed_here = false;
    let id = match create_domain() {
        Ok(id) => id,
        Err(r) => {
            check!(
                failed_here,
                r == ENOSYS || r == EOPNOTSUPP,
                "createdomain = {r}"
            );
            println!("createdomain = {r}: set_cpu_policy on a new domain not tested");
            *failed |= failed_here;
            return;
        }
    };
    println!("created d{id}");
    let mut before = Policy::new();
    let r = get_domain(id, &mut before);
    check!(
        failed_here,
        r == 0 && layout(&before).is_none(),
        "d{id}'s policy = {r}, {:?}",
        layout(&before)
    );
    let u = XEN_CPUID_INPUT_UNUSED;
    let leaf = |leaf, subleaf, a| CpuidLeaf {
        leaf,
        subleaf,
        a,
        ..Default::default()
    };
    let one = leaf(1, NS, def.find(1, NS).map_or(0, |l| l.a));
    let max_leaf = max.find(0, NS).map_or(0, |l| l.a);
    let extd_max = max.find(0x8000_0000, NS).map_or(0, |l| l.a);
    let cases: [(&str, [CpuidLeaf; 2], i64, [u32; 3]); 7] = [
        (
            "basic leaf 0xE",
            [one, leaf(0xE, NS, 0)],
            ERANGE,
            [0xE, NS, u],
        ),
        (
            "leaf 1 with a sub-leaf",
            [one, leaf(1, 0, 0)],
            ERANGE,
            [1, 0, u],
        ),
        ("leaf 7 sub-leaf 3", [one, leaf(7, 3, 0)], ERANGE, [7, 3, u]),
        (
            "leaf 0x80000022",
            [one, leaf(0x8000_0022, NS, 0)],
            ERANGE,
            [0x8000_0022, NS, u],
        ),
        (
            "max_leaf past PV max",
            [one, leaf(0, NS, max_leaf + 1)],
            EINVAL,
            [0, NS, u],
        ),
        (
            "leaf 7 max sub-leaf 3",
            [one, leaf(7, 0, 3)],
            EINVAL,
            [7, 0, u],
        ),
        (
            "extended max past PV max",
            [one, leaf(0x8000_0000, NS, extd_max + 1)],
            EINVAL,
            [0x8000_0000, NS, u],
        ),
    ];
    for (what, leaves, want, want_errs) in cases {
        let (r, errs) = set_domain(id, &leaves, 2, &[]);
        check!(
            failed_here,
            r == want && errs == want_errs,
            "{what}: {r} {errs:x?}, not {want} {want_errs:x?}"
        );
    }
    let msr = |idx, flags, val| MsrEntry { idx, flags, val };
    for (what, m, want) in [
        ("MSR 0x10", msr(0x10, 0, 0), ERANGE),
        ("flags set", msr(MSR_ARCH_CAPABILITIES, 1, 0), EINVAL),
        (
            "PLATFORM_INFO past 32 bits",
            msr(MSR_INTEL_PLATFORM_INFO, 0, 1 << 32),
            -75,
        ),
    ] {
        let (r, errs) = set_domain(id, &[], 0, &[m]);
        check!(
            failed_here,
            r == want && errs == [u, u, m.idx],
            "{what}: {r} {errs:x?}"
        );
    }
    let many = [one; MAX_LEAVES + 1];
    let (r, _) = set_domain(id, &many, many.len() as u32, &[]);
    check!(failed_here, r == E2BIG, "121 leaves = {r}");
    let mut after = Policy::new();
    let r = get_domain(id, &mut after);
    check!(
        failed_here,
        r == 0 && after.leaves().as_bytes() == before.leaves().as_bytes(),
        "a refused policy changed d{id}'s"
    );

    // Accepted: leaf 7 down to sub-leaf 0, and VMX (never offered to PV) asked for: it reads
    // back without VMX, with one leaf-7 entry.
    let l1 = before.find(1, NS).copied().unwrap_or_default();
    let ask = [
        CpuidLeaf {
            c: l1.c | 1 << 5,
            ..l1
        },
        leaf(7, 0, 0),
    ];
    let (r, errs) = set_domain(id, &ask, 2, &[]);
    check!(failed_here, r == 0, "an acceptable policy = {r} {errs:x?}");
    let r = get_domain(id, &mut after);
    let got1 = after.find(1, NS).map_or(0, |l| l.c);
    check!(
        failed_here,
        r == 0
            && got1 & 1 << 5 == 0
            && after.leaves().iter().filter(|l| l.leaf == 7).count() == 1
            && layout(&after).is_none(),
        "d{id}'s policy after set: {r}, leaf 1 ECX {got1:#x}, {:?}",
        layout(&after)
    );

    let r = domctl(&mut domctl_op(dcmd::DESTROYDOMAIN, id, &[0u8; 0]));
    check!(failed_here, r == 0, "destroydomain d{id} = {r}");
    *failed |= failed_here;
}

fn verdict(failed: bool) -> Verdict {
    if failed {
        Verdict::Failure("CPU policy")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
