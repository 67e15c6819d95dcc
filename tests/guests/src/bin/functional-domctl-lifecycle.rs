//! Domains the toolstack creates, pauses and destroys, as Xen 4.17 answers (`xen/common/
//! domctl.c`, `domain.c`, `xen/arch/x86/domain.c`), run as dom0 on Hestia and on Xen:
//!
//! - `createdomain`: domid 0 allocates an id, so does a reserved id (Xen's rover takes any id
//!   outside 1..DOMID_FIRST_RESERVED); a given free id is used, a taken one is EEXIST; a
//!   configuration Xen refuses gets Xen's errno (unknown flags, no vCPU, too many, HAP without
//!   HVM, IOMMU options without an IOMMU, grant version 0 or unknown options, grant frames 0 or
//!   past 64, maptrack frames past 1024, emulation other than the PIT for PV (EOPNOTSUPP),
//!   unknown misc flags, a CPU pool that does not exist (ESRCH)). The new domain is paused by
//!   the toolstack, owns no page, has no vCPU online and its id goes back in the header.
//! - `max_vcpus` accepts only createdomain's number; the caller itself is EINVAL.
//! - `pausedomain`/`unpausedomain` nest: 255 pauses at most (EOVERFLOW), unpausing at 0 is
//!   EINVAL, pausing the caller itself is EINVAL; XEN_DOMINF_paused follows the count.
//! - `SCHEDOP_remote_shutdown` of such a domain leaves it there, shut down with its code and
//!   its credit weight (scheduler_op still answers), until `destroydomain`; destroying the
//!   caller itself is EINVAL, destroying a domain makes getdomaininfo skip it, and a destroyed
//!   id is ESRCH.
//! - 20 create/destroy cycles (after 20 more) give back exactly the free memory they took, on
//!   Hestia (a deliberate difference, docs/abi-status.md: Hestia gives every page back before
//!   destroydomain answers; Xen frees part of a domain later, so there the count is printed)
//!   (`XEN_SYSCTL_physinfo`'s `free_pages`; Xen frees a domain's structures after an RCU grace
//!   period, so the count is read until it settles, and keeps some of what the first domains
//!   needed in its allocation pools, so the count starts after the domains above).
//!
//! On the rig, boot Xen with `sched=credit` (4.17 defaults to credit2, whose id the credit
//! scheduler_op calls do not name: EINVAL).
//!
//! Not checked: `max_vcpu_id` before `max_vcpus` (Xen 4.17 creates the vCPUs there and reports
//! none before; Hestia creates them with the domain).
#![no_std]
#![no_main]

use hestia_guests::control::{
    create_domain, domain_info, domctl_on, free_pages, pv_domain_config, sched_credit,
};
use hestia_guests::xen_abi::domctl::{
    CreateDomain, MaxVcpus, XEN_INVALID_MAX_VCPU_ID, cdf, cmd, dominf, schedop, x86_emu,
};
use hestia_guests::xen_abi::sched::{SchedRemoteShutdown, cmd as schedcmd, reason};
use hestia_guests::xen_abi::version::{CompileInfo, cmd as vcmd};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, hypercall, map_shared_info, println, system_time_ns};

const ESRCH: i64 = -3;
const EEXIST: i64 = -17;
const EINVAL: i64 = -22;
const EOVERFLOW: i64 = -75;
const EOPNOTSUPP: i64 = -95;

/// A configuration Xen refuses: what is wrong, how to make it, Xen's errno.
type BadConfig = (&'static str, fn(&mut CreateDomain), i64);

fn max_vcpus(domid: u16, max: u32) -> i64 {
    let mut op = hestia_guests::control::domctl_op(cmd::MAX_VCPUS, domid, &MaxVcpus { max });
    hestia_guests::control::domctl(&mut op)
}

fn remote_shutdown(domain_id: u16, why: u32) -> i64 {
    let s = SchedRemoteShutdown {
        domain_id,
        _pad: 0,
        reason: why,
    };
    hypercall(
        nr::SCHED_OP,
        u64::from(schedcmd::REMOTE_SHUTDOWN),
        &s as *const SchedRemoteShutdown as u64,
        0,
        0,
        0,
    )
}

/// The flags getdomaininfo gives for exactly `domid` (`None` if it describes another).
fn flags_of(domid: u16) -> Option<u32> {
    match domain_info(domid) {
        (0, i) if i.domain == domid => Some(i.flags),
        _ => None,
    }
}

/// Destroys `domid` and checks getdomaininfo no longer describes it; true if all went well.
fn destroy(domid: u16) -> bool {
    let mut failed = false;
    let r = domctl_on(cmd::DESTROYDOMAIN, domid);
    check!(failed, r == 0, "destroydomain d{domid} = {r}");
    let (r, i) = domain_info(domid);
    check!(
        failed,
        r == ESRCH || (r == 0 && i.domain != domid),
        "getdomaininfo after destroying d{domid}: {r}, d{}",
        i.domain
    );
    !failed
}

/// The free pages once Xen's deferred frees (RCU) are done: the count unchanged for 1 s
/// (at most 10 s).
fn settled_free_pages() -> Option<u64> {
    let end = system_time_ns().saturating_add(10_000_000_000);
    let mut last = free_pages();
    let mut since = system_time_ns();
    while system_time_ns() < end && system_time_ns() - since < 1_000_000_000 {
        hypercall(nr::SCHED_OP, u64::from(schedcmd::YIELD), 0, 0, 0, 0);
        let now = free_pages();
        if now != last {
            (last, since) = (now, system_time_ns());
        }
    }
    last
}

/// 20 cycles of createdomain, max_vcpus, unpause, pause, destroydomain; true if all went well.
fn cycles() -> bool {
    let mut failed = false;
    for n in 0..20 {
        let (r, id) = create_domain(0, &pv_domain_config(2));
        if r != 0 {
            check!(failed, false, "cycle {n}: createdomain = {r}");
            break;
        }
        let ok = max_vcpus(id, 2) == 0
            && domctl_on(cmd::UNPAUSEDOMAIN, id) == 0
            && domctl_on(cmd::PAUSEDOMAIN, id) == 0
            && domctl_on(cmd::DESTROYDOMAIN, id) == 0;
        check!(failed, ok, "cycle {n}: d{id} not handled");
    }
    !failed
}

/// True on Hestia (its `compile_info` names it as the builder), false on Xen.
fn on_hestia() -> bool {
    let mut info = CompileInfo {
        compiler: [0; 64],
        compile_by: [0; 16],
        compile_domain: [0; 32],
        compile_date: [0; 32],
    };
    let r = hypercall(
        nr::XEN_VERSION,
        u64::from(vcmd::COMPILE_INFO),
        &mut info as *mut CompileInfo as u64,
        0,
        0,
        0,
    );
    r == 0 && info.compile_by.starts_with(b"hestia")
}

fn test_main(si: &StartInfo) -> Verdict {
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "shared_info not mapped");
    // An allocated id, written back.
    let (r, a) = create_domain(0, &pv_domain_config(2));
    check!(
        failed,
        r == 0 && a != 0 && a < 0x7FF0,
        "createdomain(0) = {r}, d{a}"
    );
    let (r, i) = domain_info(a);
    check!(
        failed,
        r == 0 && i.domain == a,
        "getdomaininfo d{a} = {r}, d{}",
        i.domain
    );
    println!(
        "d{a}: flags {:#x}, {} pages, max {}, {} online, max_vcpu_id {:#x}",
        i.flags, i.tot_pages, i.max_pages, i.nr_online_vcpus, i.max_vcpu_id
    );
    check!(
        failed,
        i.flags & dominf::PAUSED != 0
            && i.flags & (dominf::DYING | dominf::SHUTDOWN | dominf::RUNNING) == 0,
        "new domain's flags {:#x}",
        i.flags
    );
    check!(
        failed,
        i.tot_pages == 0 && i.max_pages == 0 && i.nr_online_vcpus == 0,
        "new domain: {} pages, max {}, {} online",
        i.tot_pages,
        i.max_pages,
        i.nr_online_vcpus
    );

    // max_vcpus: only createdomain's number.
    check!(
        failed,
        max_vcpus(a, 3) == EINVAL,
        "max_vcpus 3 of 2 not EINVAL"
    );
    check!(
        failed,
        max_vcpus(a, 1) == EINVAL,
        "max_vcpus 1 of 2 not EINVAL"
    );
    check!(
        failed,
        max_vcpus(0, 1) == EINVAL,
        "max_vcpus of itself not EINVAL"
    );
    check!(failed, max_vcpus(a, 2) == 0, "max_vcpus 2 refused");
    let (_, i) = domain_info(a);
    check!(
        failed,
        i.max_vcpu_id == 1 && i.max_vcpu_id != XEN_INVALID_MAX_VCPU_ID,
        "max_vcpu_id {:#x} after max_vcpus 2",
        i.max_vcpu_id
    );

    // A given id; taken ids are EEXIST; a reserved id allocates.
    let b = a + 7;
    let (r, got) = create_domain(b, &pv_domain_config(2));
    check!(
        failed,
        r == 0 && got == b,
        "createdomain(d{b}) = {r}, d{got}"
    );
    let (r, _) = create_domain(b, &pv_domain_config(2));
    check!(failed, r == EEXIST, "createdomain of a taken id = {r}");
    let (r, _) = create_domain(a, &pv_domain_config(2));
    check!(failed, r == EEXIST, "createdomain of a taken id = {r}");
    let (r, c) = create_domain(DOMID_SELF, &pv_domain_config(2));
    check!(
        failed,
        r == 0 && c != 0 && c < 0x7FF0 && c != a && c != b,
        "createdomain(DOMID_SELF) = {r}, d{c}"
    );
    if r == 0 {
        failed |= !destroy(c);
    }

    // Configurations Xen refuses.
    let bad: [BadConfig; 14] = [
        ("unknown flag", |c| c.flags = 1 << 8, EINVAL),
        ("no vCPU", |c| c.max_vcpus = 0, EINVAL),
        ("8193 vCPUs", |c| c.max_vcpus = 8193, EINVAL),
        ("HAP without HVM", |c| c.flags = cdf::HAP, EINVAL),
        ("IOMMU options", |c| c.iommu_opts = 1, EINVAL),
        ("grant version 0", |c| c.grant_opts = 0, EINVAL),
        ("grant options", |c| c.grant_opts = 0x12, EINVAL),
        ("grant version 3", |c| c.grant_opts = 3, EINVAL),
        ("no grant frame", |c| c.max_grant_frames = 0, EINVAL),
        ("65 grant frames", |c| c.max_grant_frames = 65, EINVAL),
        (
            "1025 maptrack frames",
            |c| c.max_maptrack_frames = 1025,
            EINVAL,
        ),
        ("misc flags", |c| c.arch.misc_flags = 2, EINVAL),
        (
            "LAPIC emulation",
            |c| c.arch.emulation_flags = x86_emu::LAPIC,
            EOPNOTSUPP,
        ),
        ("CPU pool 1", |c| c.cpupool_id = 1, ESRCH),
    ];
    for (what, set, want) in bad {
        let mut config = pv_domain_config(2);
        set(&mut config);
        let (r, id) = create_domain(0, &config);
        check!(
            failed,
            r == want,
            "createdomain with {what} = {r}, not {want}"
        );
        if r == 0 {
            let _ = domctl_on(cmd::DESTROYDOMAIN, id);
        }
    }
    // The PIT is the one emulation a PV domain may ask for.
    let mut config = pv_domain_config(2);
    config.arch.emulation_flags = x86_emu::PIT;
    let (r, id) = create_domain(0, &config);
    check!(failed, r == 0, "createdomain with the PIT = {r}");
    if r == 0 {
        failed |= !destroy(id);
    }

    // Pauses nest: created paused once.
    check!(
        failed,
        domctl_on(cmd::UNPAUSEDOMAIN, a) == 0,
        "first unpause refused"
    );
    check!(
        failed,
        flags_of(a).is_some_and(|f| f & dominf::PAUSED == 0),
        "still paused after the creation's pause was undone"
    );
    let r = domctl_on(cmd::UNPAUSEDOMAIN, a);
    check!(failed, r == EINVAL, "unpause below 0 = {r}");
    let mut paused = 0;
    while paused < 255 && domctl_on(cmd::PAUSEDOMAIN, a) == 0 {
        paused += 1;
    }
    check!(failed, paused == 255, "only {paused} nested pauses");
    let r = domctl_on(cmd::PAUSEDOMAIN, a);
    check!(failed, r == EOVERFLOW, "pause 256 = {r}");
    check!(
        failed,
        flags_of(a).is_some_and(|f| f & dominf::PAUSED != 0),
        "not paused after 255 pauses"
    );
    let mut unpaused = 0;
    while unpaused < 254 && domctl_on(cmd::UNPAUSEDOMAIN, a) == 0 {
        unpaused += 1;
    }
    check!(
        failed,
        unpaused == 254 && flags_of(a).is_some_and(|f| f & dominf::PAUSED != 0),
        "not paused with 1 pause left ({unpaused} undone)"
    );
    check!(
        failed,
        domctl_on(cmd::UNPAUSEDOMAIN, a) == 0,
        "last unpause refused"
    );
    check!(
        failed,
        flags_of(a).is_some_and(|f| f & dominf::PAUSED == 0),
        "paused after every pause was undone"
    );
    let r = domctl_on(cmd::PAUSEDOMAIN, 0);
    check!(failed, r == EINVAL, "pausing itself = {r}");
    let r = domctl_on(cmd::UNPAUSEDOMAIN, 0);
    check!(failed, r == EINVAL, "unpausing itself (count 0) = {r}");

    // A domain that shuts down stays until it is destroyed, with its scheduler parameters
    // (libxl reads them back to restart it as it was).
    let (r, _) = sched_credit(b, schedop::PUTINFO, 384, u16::MAX);
    check!(failed, r == 0, "setting d{b}'s weight = {r}");
    check!(
        failed,
        remote_shutdown(b, reason::REBOOT) == 0,
        "remote_shutdown refused"
    );
    let f = flags_of(b);
    check!(
        failed,
        f.is_some_and(|f| f & dominf::SHUTDOWN != 0
            && (f >> dominf::SHUTDOWNSHIFT) & dominf::SHUTDOWNMASK == reason::REBOOT),
        "after remote_shutdown d{b}'s flags {f:#x?}"
    );
    let (r, got) = sched_credit(b, schedop::GETINFO, 0, 0);
    check!(
        failed,
        r == 0 && got.weight == 384,
        "scheduler_op getinfo of the shut down d{b} = {r}, weight {}",
        got.weight
    );

    // Destruction.
    let r = domctl_on(cmd::DESTROYDOMAIN, 0);
    check!(failed, r == EINVAL, "destroying itself = {r}");
    failed |= !destroy(a);
    failed |= !destroy(b);
    let r = domctl_on(cmd::DESTROYDOMAIN, a);
    check!(failed, r == ESRCH, "destroying a destroyed domain = {r}");
    let r = domctl_on(cmd::PAUSEDOMAIN, a);
    check!(failed, r == ESRCH, "pausing a destroyed domain = {r}");

    // Create/destroy cycles give every page back (measured after 20 cycles more: Xen keeps
    // some memory it allocated for the first domains in its pools).
    failed |= !cycles();
    let free_before = settled_free_pages();
    check!(failed, free_before.is_some(), "physinfo failed");
    failed |= !cycles();
    let free_after = settled_free_pages();
    println!("free pages: {free_before:?} before, {free_after:?} after 20 cycles");
    // Hestia returns a destroyed domain's every page before destroydomain answers; Xen frees
    // part of it later (RCU, pools), so on Xen the count is only printed.
    check!(
        failed,
        free_after == free_before || !on_hestia(),
        "free pages {free_before:?} before, {free_after:?} after"
    );

    if failed {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test_main);
