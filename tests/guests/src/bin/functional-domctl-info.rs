//! The toolstack's read side (`xl list`, `xl info`, `xl vcpu-list`, `xl sched-credit`, `xl
//! dmesg`, `xl cpupool-list`): domctl and sysctl at interface 0x15, as Xen 4.17 answers them
//! (`xen/common/domctl.c`, `sysctl.c`, `sched/core.c`, `sched/credit.c`, `sched/cpupool.c`).
//! Another interface version is EACCES, an unknown command ENOSYS, a missing domain ESRCH;
//! getdomaininfo describes the first domain from the id on (EINVAL for DOMID_SELF, a
//! reserved id); the credit parameters, affinities and max_mem read back what was set;
//! hypercall_init writes the hypercall page's stubs into a frame of the caller's.
//! Run as dom0 (on Xen with `sched=credit`: 4.17's default is credit2) and as a domU, which
//! gets EPERM for everything but the version check.
#![no_std]
#![no_main]

use hestia_guests::control::{arg, domctl, domctl_op, sched_credit, sysctl, sysctl_op};
use hestia_guests::grant::Page;
use hestia_guests::xen_abi::domctl::{
    AddressSize, GetDomainInfo, GetVcpuInfo, HypercallInit, MaxMem, NodeAffinity,
    SchedulerOpCredit, TscInfo, VcpuAffinity, XenctlBitmap, cmd as dcmd, dominf, schedop,
    scheduler, vcpuaffinity,
};
use hestia_guests::xen_abi::sysctl::{
    self, CpupoolOp, CputopoInfo, GetDomainInfoList, NumaInfo, Physinfo, ReadConsole, SchedId,
    SchedulerOp, cmd as scmd, cpupool, physcap,
};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, sif};
use hestia_guests::{Verdict, check, hypercall_page_bytes, l1e_maddr, pfn_to_mfn, println};

const EPERM: i64 = -1;
const ENOENT: i64 = -2;
const ESRCH: i64 = -3;
const EACCES: i64 = -13;
const EINVAL: i64 = -22;
const ENOSYS: i64 = -38;

fn getdomaininfo(domid: u16) -> (i64, u16, GetDomainInfo) {
    let mut op = domctl_op(dcmd::GETDOMAININFO, domid, &GetDomainInfo::default());
    let r = domctl(&mut op);
    (r, op.domain, arg(&op.u))
}

fn affinity(cmd: u32, flags: u32, hard: &mut [u8; 8], soft: &mut [u8; 8]) -> i64 {
    let a = VcpuAffinity {
        vcpu: 0,
        flags,
        cpumap_hard: XenctlBitmap {
            bitmap: hard.as_mut_ptr() as u64,
            nr_bits: 64,
            _pad: 0,
        },
        cpumap_soft: XenctlBitmap {
            bitmap: soft.as_mut_ptr() as u64,
            nr_bits: 64,
            _pad: 0,
        },
    };
    domctl(&mut domctl_op(cmd, 0, &a))
}

/// A 64-node mask in `bytes`.
fn node_map(bytes: &mut [u8; 8]) -> NodeAffinity {
    NodeAffinity {
        nodemap: XenctlBitmap {
            bitmap: bytes.as_mut_ptr() as u64,
            nr_bits: 64,
            _pad: 0,
        },
    }
}

fn test_main(si: &StartInfo) -> Verdict {
    let mut failed = false;
    let privileged = si.flags & sif::PRIVILEGED != 0;

    // The version is checked before anything else, for every caller.
    let mut op = sysctl_op(scmd::PHYSINFO, &Physinfo::default());
    op.interface_version = 0x14;
    check!(
        failed,
        sysctl(&mut op) == EACCES,
        "sysctl version 0x14 not EACCES"
    );
    let mut op = domctl_op(dcmd::GETDOMAININFO, 0, &GetDomainInfo::default());
    op.interface_version = 0x16;
    check!(
        failed,
        domctl(&mut op) == EACCES,
        "domctl version 0x16 not EACCES"
    );

    if !privileged {
        let mut op = sysctl_op(scmd::PHYSINFO, &Physinfo::default());
        check!(
            failed,
            sysctl(&mut op) == EPERM,
            "a domU's physinfo not EPERM"
        );
        let (r, _, _) = getdomaininfo(0);
        check!(
            failed,
            r == EPERM,
            "a domU's getdomaininfo(0) = {r}, not EPERM"
        );
        // Its own id is not known here: the first domain that exists.
        let r = (0..8)
            .map(|id| sched_credit(id, schedop::GETINFO, 0, 0).0)
            .find(|&r| r != ESRCH);
        check!(
            failed,
            r == Some(EPERM),
            "a domU's scheduler_op = {r:?}, not EPERM"
        );
        // A domain that does not exist is ESRCH before the right is checked.
        let (r, _) = sched_credit(0x7000, schedop::GETINFO, 0, 0);
        check!(
            failed,
            r == ESRCH,
            "a domU's scheduler_op on no domain = {r}"
        );
        return verdict(failed);
    }

    // physinfo: what `xl info` prints.
    let mut op = sysctl_op(scmd::PHYSINFO, &Physinfo::default());
    let r = sysctl(&mut op);
    let pi: Physinfo = arg(&op.u);
    check!(failed, r == 0, "physinfo = {r}");
    println!(
        "physinfo: {} CPUs ({} per core, {} per socket), {} nodes, {} pages, {} free, max_mfn {:#x}, caps {:#x}, {} kHz",
        pi.nr_cpus,
        pi.threads_per_core,
        pi.cores_per_socket,
        pi.nr_nodes,
        pi.total_pages,
        pi.free_pages,
        pi.max_mfn,
        pi.capabilities,
        pi.cpu_khz
    );
    check!(
        failed,
        pi.nr_cpus >= 1 && pi.max_cpu_id + 1 >= pi.nr_cpus,
        "bad CPU counts"
    );
    check!(failed, pi.nr_nodes >= 1, "no node");
    check!(
        failed,
        pi.free_pages > 0 && pi.free_pages < pi.total_pages && pi.max_mfn + 1 >= pi.total_pages,
        "bad page counts"
    );
    check!(
        failed,
        pi.capabilities & physcap::PV != 0,
        "no PV capability"
    );
    check!(
        failed,
        pi.capabilities & physcap::GNTTAB_V1 != 0,
        "no grant v1 capability"
    );
    check!(failed, pi.hw_cap[0] != 0, "no hw_cap words");

    let mut op = sysctl_op(scmd::SCHED_ID, &SchedId::default());
    check!(failed, sysctl(&mut op) == 0, "sched_id failed");
    let id: SchedId = arg(&op.u);
    check!(
        failed,
        id.sched_id == scheduler::CREDIT,
        "scheduler {} is not credit",
        id.sched_id
    );

    let mut op = sysctl_op(0x7777, &SchedId::default());
    check!(
        failed,
        sysctl(&mut op) == ENOSYS,
        "unknown sysctl not ENOSYS"
    );
    let mut op = domctl_op(0x7777, 0, &SchedId::default());
    check!(
        failed,
        domctl(&mut op) == ENOSYS,
        "unknown domctl not ENOSYS"
    );

    // getdomaininfo: this domain, then the next one from an id.
    let (r, dom, me) = getdomaininfo(0);
    check!(
        failed,
        r == 0 && dom == 0 && me.domain == 0,
        "getdomaininfo(0) = {r}, domain {dom}"
    );
    println!(
        "d0: flags {:#x}, {} pages (max {}), shared_info frame {:#x}, {} vCPUs online, max_vcpu_id {}, cpu_time {}",
        me.flags,
        me.tot_pages,
        me.max_pages,
        me.shared_info_frame,
        me.nr_online_vcpus,
        me.max_vcpu_id,
        me.cpu_time
    );
    check!(failed, me.flags & dominf::RUNNING != 0, "d0 not running");
    check!(
        failed,
        me.flags & (dominf::DYING | dominf::SHUTDOWN | dominf::PAUSED | dominf::HVM_GUEST) == 0,
        "d0 flags {:#x}",
        me.flags
    );
    // Not shut down: the code is Xen's SHUTDOWN_CODE_INVALID (~0u), shifted in whole.
    check!(
        failed,
        me.flags >> dominf::SHUTDOWNSHIFT == 0xffff,
        "shutdown code bits {:#x}",
        me.flags
    );
    check!(
        failed,
        me.tot_pages == si.nr_pages,
        "tot_pages {} != nr_pages {}",
        me.tot_pages,
        si.nr_pages
    );
    check!(
        failed,
        me.shared_info_frame == si.shared_info >> 12,
        "shared_info frame"
    );
    check!(
        failed,
        me.nr_online_vcpus >= 1 && me.max_vcpu_id + 1 >= me.nr_online_vcpus,
        "vCPU counts"
    );
    let (r, _, _) = getdomaininfo(DOMID_SELF);
    check!(
        failed,
        r == EINVAL,
        "getdomaininfo(DOMID_SELF) = {r}, not EINVAL"
    );
    // Only dom0 exists: nothing from id 1 on.
    let (r, _, _) = getdomaininfo(1);
    check!(failed, r == ESRCH, "getdomaininfo(1) = {r}, not ESRCH");
    // Another sub-op on a missing domain, and DOMID_SELF (unknown to domctl).
    let (r, _) = sched_credit(1, schedop::GETINFO, 0, 0);
    check!(failed, r == ESRCH, "scheduler_op on d1 = {r}, not ESRCH");
    let (r, _) = sched_credit(DOMID_SELF, schedop::GETINFO, 0, 0);
    check!(
        failed,
        r == ESRCH,
        "scheduler_op on DOMID_SELF = {r}, not ESRCH"
    );

    // getdomaininfolist from 0: exactly this domain, as getdomaininfo described it.
    let mut buf = [GetDomainInfo::default(); 4];
    let l = GetDomainInfoList {
        first_domain: 0,
        max_domains: 4,
        buffer: buf.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut op = sysctl_op(scmd::GETDOMAININFOLIST, &l);
    let r = sysctl(&mut op);
    let l: GetDomainInfoList = arg(&op.u);
    check!(
        failed,
        r == 0 && l.num_domains == 1,
        "getdomaininfolist = {r}, {} domains",
        l.num_domains
    );
    check!(
        failed,
        buf[0].domain == 0 && buf[0].tot_pages == me.tot_pages && buf[0].handle == me.handle,
        "getdomaininfolist entry differs"
    );

    // getvcpuinfo: vCPU 0 runs (it is asking); past the last vCPU is EINVAL.
    let mut op = domctl_op(dcmd::GETVCPUINFO, 0, &GetVcpuInfo::default());
    let r = domctl(&mut op);
    let v: GetVcpuInfo = arg(&op.u);
    check!(
        failed,
        r == 0 && v.online == 1 && v.running == 1 && v.blocked == 0,
        "getvcpuinfo(0) = {r}, {v:?}"
    );
    check!(failed, v.cpu < pi.nr_cpus, "vCPU 0 on CPU {}", v.cpu);
    let q = GetVcpuInfo {
        vcpu: me.max_vcpu_id + 1,
        ..Default::default()
    };
    check!(
        failed,
        domctl(&mut domctl_op(dcmd::GETVCPUINFO, 0, &q)) == EINVAL,
        "getvcpuinfo past the end"
    );

    // Credit: default weight 256, no cap; a put reads back; 0 and 0xffff keep the values.
    let (r, s) = sched_credit(0, schedop::GETINFO, 0, 0);
    check!(
        failed,
        r == 0 && s.weight == 256 && s.cap == 0,
        "getinfo = {r}, weight {} cap {}",
        s.weight,
        s.cap
    );
    let (r, _) = sched_credit(0, schedop::PUTINFO, 512, 50);
    check!(failed, r == 0, "putinfo = {r}");
    let (_, s) = sched_credit(0, schedop::GETINFO, 0, 0);
    check!(
        failed,
        s.weight == 512 && s.cap == 50,
        "after put: weight {} cap {}",
        s.weight,
        s.cap
    );
    let (_, _) = sched_credit(0, schedop::PUTINFO, 0, 0xffff);
    let (_, s) = sched_credit(0, schedop::GETINFO, 0, 0);
    check!(
        failed,
        s.weight == 512 && s.cap == 50,
        "0/0xffff changed: weight {} cap {}",
        s.weight,
        s.cap
    );
    let (r, _) = sched_credit(0, schedop::PUTINFO, 256, 0);
    check!(failed, r == 0, "restore = {r}");
    let mut a = SchedulerOpCredit {
        sched_id: scheduler::CREDIT2,
        cmd: schedop::GETINFO,
        ..Default::default()
    };
    check!(
        failed,
        domctl(&mut domctl_op(dcmd::SCHEDULER_OP, 0, &a)) == EINVAL,
        "credit2 id not EINVAL"
    );
    a.sched_id = scheduler::CREDIT;
    a.cmd = schedop::GETVCPUINFO;
    check!(
        failed,
        domctl(&mut domctl_op(dcmd::SCHEDULER_OP, 0, &a)) == EINVAL,
        "getvcpuinfo cmd not EINVAL"
    );

    // Affinity: all CPUs by default; pin hard to CPU 0, read back, restore.
    let all = if pi.nr_cpus >= 64 {
        u64::MAX
    } else {
        (1u64 << pi.nr_cpus) - 1
    };
    let (mut hard, mut soft) = ([0xffu8; 8], [0xffu8; 8]);
    let r = affinity(
        dcmd::GETVCPUAFFINITY,
        vcpuaffinity::HARD | vcpuaffinity::SOFT,
        &mut hard,
        &mut soft,
    );
    check!(
        failed,
        r == 0 && u64::from_le_bytes(hard) & all == all,
        "get affinity = {r}, hard {:#x}",
        u64::from_le_bytes(hard)
    );
    let (mut hard, mut soft) = (1u64.to_le_bytes(), [0u8; 8]);
    let r = affinity(
        dcmd::SETVCPUAFFINITY,
        vcpuaffinity::HARD,
        &mut hard,
        &mut soft,
    );
    check!(
        failed,
        r == 0 && u64::from_le_bytes(hard) == 1,
        "set hard {{0}} = {r}, back {:#x}",
        u64::from_le_bytes(hard)
    );
    let (mut hard, mut soft) = ([0u8; 8], [0u8; 8]);
    affinity(
        dcmd::GETVCPUAFFINITY,
        vcpuaffinity::HARD,
        &mut hard,
        &mut soft,
    );
    check!(
        failed,
        u64::from_le_bytes(hard) == 1,
        "hard affinity reads {:#x}",
        u64::from_le_bytes(hard)
    );
    let (mut hard, mut soft) = (u64::MAX.to_le_bytes(), [0u8; 8]);
    let r = affinity(
        dcmd::SETVCPUAFFINITY,
        vcpuaffinity::HARD,
        &mut hard,
        &mut soft,
    );
    check!(
        failed,
        r == 0 && u64::from_le_bytes(hard) == all,
        "restore = {r}, back {:#x}",
        u64::from_le_bytes(hard)
    );
    let r = affinity(dcmd::SETVCPUAFFINITY, 0, &mut hard, &mut soft);
    check!(
        failed,
        r == EINVAL,
        "affinity without flags = {r}, not EINVAL"
    );

    // max_mem reads back through getdomaininfo (KiB, rounded down to pages).
    let mm = MaxMem {
        max_memkb: me.max_pages * 4 + 3,
    };
    check!(
        failed,
        domctl(&mut domctl_op(dcmd::MAX_MEM, 0, &mm)) == 0,
        "max_mem failed"
    );
    let (_, _, after) = getdomaininfo(0);
    check!(
        failed,
        after.max_pages == me.max_pages,
        "max_pages {} != {}",
        after.max_pages,
        me.max_pages
    );

    let mut op = domctl_op(dcmd::GET_ADDRESS_SIZE, 0, &AddressSize::default());
    check!(
        failed,
        domctl(&mut op) == 0 && arg::<AddressSize>(&op.u).size == 64,
        "address size not 64"
    );

    // readconsole: the hypervisor's own lines, in two incremental reads.
    let mut text = [0u8; 256];
    let rc = ReadConsole {
        buffer: text.as_mut_ptr() as u64,
        count: 100,
        ..Default::default()
    };
    let mut op = sysctl_op(scmd::READCONSOLE, &rc);
    let r = sysctl(&mut op);
    let first: ReadConsole = arg(&op.u);
    check!(
        failed,
        r == 0 && first.count == 100,
        "readconsole = {r}, {} bytes",
        first.count
    );
    let rc = ReadConsole {
        incremental: 1,
        index: first.index,
        buffer: text[100..].as_mut_ptr() as u64,
        count: 100,
        ..Default::default()
    };
    let mut op = sysctl_op(scmd::READCONSOLE, &rc);
    let r = sysctl(&mut op);
    let second: ReadConsole = arg(&op.u);
    check!(
        failed,
        r == 0 && second.index == first.index + second.count,
        "incremental readconsole"
    );
    check!(
        failed,
        text[..200].contains(&b'\n'),
        "no line in the console history"
    );

    // One pool, 0, under credit, with every CPU; nothing after it; no free CPU.
    let mut map = [0u8; 8];
    let p = CpupoolOp {
        op: cpupool::INFO,
        cpupool_id: 0,
        cpumap: XenctlBitmap {
            bitmap: map.as_mut_ptr() as u64,
            nr_bits: 64,
            _pad: 0,
        },
        ..Default::default()
    };
    let mut op = sysctl_op(scmd::CPUPOOL_OP, &p);
    let r = sysctl(&mut op);
    let info: CpupoolOp = arg(&op.u);
    check!(
        failed,
        r == 0 && info.cpupool_id == 0 && info.sched_id == scheduler::CREDIT && info.n_dom >= 1,
        "cpupool info = {r}, {info:?}"
    );
    check!(
        failed,
        u64::from_le_bytes(map) == all,
        "pool 0 CPUs {:#x}",
        u64::from_le_bytes(map)
    );
    let mut q = p;
    q.cpupool_id = 1;
    check!(
        failed,
        sysctl(&mut sysctl_op(scmd::CPUPOOL_OP, &q)) == ENOENT,
        "cpupool 1 not ENOENT"
    );
    let mut q = p;
    q.op = cpupool::FREEINFO;
    map = [0xff; 8];
    check!(
        failed,
        sysctl(&mut sysctl_op(scmd::CPUPOOL_OP, &q)) == 0 && u64::from_le_bytes(map) & all == 0,
        "free CPUs"
    );

    // The credit scheduler's global parameters: Xen's defaults, range checks.
    let s = SchedulerOp {
        sched_id: scheduler::CREDIT,
        cmd: sysctl::schedop::GETINFO,
        ..Default::default()
    };
    let mut op = sysctl_op(scmd::SCHEDULER_OP, &s);
    let r = sysctl(&mut op);
    let g: SchedulerOp = arg(&op.u);
    check!(
        failed,
        r == 0 && g.tslice_ms == 30 && g.ratelimit_us == 1000,
        "sched getinfo = {r}, {g:?}"
    );
    let mut bad = g;
    bad.cmd = sysctl::schedop::PUTINFO;
    bad.tslice_ms = 0;
    check!(
        failed,
        sysctl(&mut sysctl_op(scmd::SCHEDULER_OP, &bad)) == EINVAL,
        "tslice 0 not EINVAL"
    );
    let mut bad = s;
    bad.cpupool_id = 3;
    check!(
        failed,
        sysctl(&mut sysctl_op(scmd::SCHEDULER_OP, &bad)) == ESRCH,
        "pool 3 not ESRCH"
    );

    // Topology size queries (null handles).
    let mut op = sysctl_op(scmd::CPUTOPOINFO, &CputopoInfo::default());
    check!(
        failed,
        sysctl(&mut op) == 0 && arg::<CputopoInfo>(&op.u).num_cpus >= pi.nr_cpus,
        "cputopoinfo"
    );
    let mut op = sysctl_op(scmd::NUMAINFO, &NumaInfo::default());
    check!(
        failed,
        sysctl(&mut op) == 0 && arg::<NumaInfo>(&op.u).num_nodes == 1,
        "numainfo"
    );

    // TSC settings are for other domains only (no pausing oneself).
    check!(
        failed,
        domctl(&mut domctl_op(dcmd::SETTSCINFO, 0, &TscInfo::default())) == EINVAL,
        "settscinfo on itself"
    );
    check!(
        failed,
        domctl(&mut domctl_op(dcmd::GETTSCINFO, 0, &TscInfo::default())) == EINVAL,
        "gettscinfo on itself"
    );

    // One NUMA node: a domain's node affinity is node 0; a mask without it is EINVAL.
    let mut nodes = [0xffu8; 8];
    let r = domctl(&mut domctl_op(
        dcmd::GETNODEAFFINITY,
        0,
        &node_map(&mut nodes),
    ));
    check!(
        failed,
        r == 0 && u64::from_le_bytes(nodes) == 1,
        "getnodeaffinity = {r}, {:#x}",
        u64::from_le_bytes(nodes)
    );
    let mut one = 2u64.to_le_bytes();
    let r = domctl(&mut domctl_op(
        dcmd::SETNODEAFFINITY,
        0,
        &node_map(&mut one),
    ));
    check!(failed, r == EINVAL, "node affinity {{1}} = {r}, not EINVAL");
    let mut all_nodes = u64::MAX.to_le_bytes();
    let r = domctl(&mut domctl_op(
        dcmd::SETNODEAFFINITY,
        0,
        &node_map(&mut all_nodes),
    ));
    check!(failed, r == 0, "node affinity all = {r}");

    // hypercall_init into one of its own pages: the same stubs as its own hypercall page;
    // a page-table frame is EPERM, a frame not its own EINVAL.
    let page = &raw mut TARGET;
    let mfn = pfn_to_mfn(si, page as u64 >> 12);
    let hi = HypercallInit { gmfn: mfn };
    let r = domctl(&mut domctl_op(dcmd::HYPERCALL_INIT, 0, &hi));
    // SAFETY: the page is this guest's own static, written by the hypervisor just now.
    let written = unsafe { core::ptr::read_volatile(&raw const TARGET) };
    check!(failed, r == 0, "hypercall_init = {r}");
    check!(
        failed,
        written.0[..] == hypercall_page_bytes()[..],
        "hypercall_init wrote other stubs than the hypercall page's"
    );
    let l1 = l1e_maddr(si, page as u64).map_or(0, |m| m >> 12);
    let r = domctl(&mut domctl_op(
        dcmd::HYPERCALL_INIT,
        0,
        &HypercallInit { gmfn: l1 },
    ));
    check!(
        failed,
        r == EPERM,
        "hypercall_init on a page table = {r}, not EPERM"
    );
    let r = domctl(&mut domctl_op(
        dcmd::HYPERCALL_INIT,
        0,
        &HypercallInit {
            gmfn: pi.max_mfn + 1,
        },
    ));
    check!(
        failed,
        r == EINVAL,
        "hypercall_init past the last frame = {r}, not EINVAL"
    );

    verdict(failed)
}

/// The page `hypercall_init` fills.
static mut TARGET: Page = Page([0; 4096]);

fn verdict(failed: bool) -> Verdict {
    if failed {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test_main);
