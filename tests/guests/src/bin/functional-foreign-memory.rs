//! The control domain builds another domain's memory, as libxenguest's PV builder and Linux's
//! privcmd do: `memory_op` reservation calls, claims and the memory map naming another
//! domain, `mmu_update` with a foreign domain (privcmd's MMAPBATCH_V2), `MMUEXT_PIN_L4_TABLE`
//! on its behalf. Every error code as Xen 4.17 answers (xen/common/memory.c, page_alloc.c,
//! xen/arch/x86/mm.c, XSM's dummy policy).
//!
//! Alone (dom0, also on the Xen rig): naming itself by its own id as the foreign domain of
//! `mmu_update`/`mmuext_op` is -ESRCH (`get_pg_owner`), so is a domain that does not exist;
//! reservation calls on a missing domain do nothing; `XENMEM_claim_pages` checks its
//! arguments (-EINVAL); `XENMEM_set_memory_map` (-EINVAL past E820MAX, -ESRCH) and
//! `XENMEM_memory_map` reading it back (-ENOSYS once emptied).
//!
//! With `peer` on its command line, dom0 next to a boot-time domU running this kernel with
//! `domu`: the domU gives 600 pages back and checks that it may do none of this to dom0
//! (-EPERM, or no extent); dom0 then claims the domU's memory, populates it (a 2 MiB extent,
//! then 4 KiB ones up to its maximum: a partial count), maps its frames into its own page
//! tables and writes through them, builds a two-level table tree in them and pins it on the
//! domU's behalf (the frames become the domU's tables: no writable mapping), and finally keeps
//! one domU frame mapped while it shuts the domU down: the frame outlives the domain until
//! dom0 unmaps it (the harness looks for Hestia's line saying so), and the frame audit at the
//! end balances.
#![no_std]
#![no_main]

use hestia_guests::control::{domctl, domctl_op};
use hestia_guests::xen_abi::domctl::{VcpuContext, cmd as dcmd};
use hestia_guests::xen_abi::memory::{
    E820Entry, ForeignMemoryMap, MemAcquireResource, MemoryDomain, MemoryMap, MemoryReservation,
    cmd, resource,
};
use hestia_guests::xen_abi::mmu::{MmuUpdate, MmuextOp, ext};
use hestia_guests::xen_abi::sched::{SchedRemoteShutdown, cmd as sched, reason};
use hestia_guests::xen_abi::vcpu::{VcpuGuestContext, vgcf};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, cmdline, hypercall, l1e_maddr, m2p, map_shared_info, memory_op, pfn_to_mfn,
    println, pte_va, system_time_ns,
};

const EPERM: i64 = -1;
const ESRCH: i64 = -3;
const EBUSY: i64 = -16;
const EINVAL: i64 = -22;
const EFAULT: i64 = -14;
const EOPNOTSUPP: i64 = -95;
const ENOSYS: i64 = -38;

/// dom0's id, and the domU's.
const DOM0: u16 = 0;
const DOMU: u16 = 1;
/// An id no domain has.
const MISSING: u16 = 999;
/// Pages the domU gives back, from this PFN on (above its initial mapping).
const GIVEN_BACK: u64 = 600;
const FIRST_FREE_PFN: u64 = 2048;
/// Present, writable, user, accessed, dirty.
const PTE_RW: u64 = 0x67;
/// Present, user, accessed.
const PTE_RO: u64 = 0x25;

/// A page of this image whose L1 entry dom0 points at other frames.
#[repr(C, align(4096))]
struct Page([u64; 512]);
static mut WINDOW: Page = Page([0; 512]);

fn window() -> u64 {
    core::ptr::addr_of!(WINDOW) as u64
}

fn read(i: usize) -> u64 {
    // SAFETY: WINDOW is a page of this image, mapped (to whatever frame) throughout.
    unsafe { core::ptr::read_volatile((window() as *const u64).add(i)) }
}

fn write(i: usize, v: u64) {
    // SAFETY: as in `read`; mapped writable whenever the test writes.
    unsafe { core::ptr::write_volatile((window() as *mut u64).add(i), v) }
}

/// `mmu_update` of one entry with `foreigndom`.
fn mmu(ptr: u64, val: u64, foreigndom: u16) -> i64 {
    let req = MmuUpdate { ptr, val };
    hypercall(
        nr::MMU_UPDATE,
        &req as *const MmuUpdate as u64,
        1,
        0,
        u64::from(foreigndom),
        0,
    )
}

/// One `mmuext_op` with `foreigndom`.
fn mmuext(cmd: u32, arg1: u64, foreigndom: u16) -> i64 {
    let op = MmuextOp {
        cmd,
        _pad: 0,
        arg1,
        arg2: 0,
    };
    hypercall(
        nr::MMUEXT_OP,
        &op as *const MmuextOp as u64,
        1,
        0,
        u64::from(foreigndom),
        0,
    )
}

/// A reservation call (`cmd`) on `domid` with the extents of `list` of `order`.
fn reservation(cmd: u32, domid: u16, list: &mut [u64], order: u32) -> i64 {
    let mut r = MemoryReservation {
        extent_start: list.as_mut_ptr() as u64,
        nr_extents: list.len() as u64,
        extent_order: order,
        domid,
        ..MemoryReservation::default()
    };
    memory_op(cmd, &mut r)
}

/// `XENMEM_claim_pages` as `r` says, its other fields valid.
fn claim(r: MemoryReservation) -> i64 {
    let mut r = r;
    memory_op(cmd::CLAIM_PAGES, &mut r)
}

fn claim_for(domid: u16, pages: u64) -> i64 {
    claim(MemoryReservation {
        nr_extents: pages,
        domid,
        ..MemoryReservation::default()
    })
}

fn stat(cmd: u32, domid: u16) -> i64 {
    let mut m = MemoryDomain { domid };
    memory_op(cmd, &mut m)
}

fn set_memory_map(domid: u16, entries: &[E820Entry], nr: u32) -> i64 {
    let mut m = ForeignMemoryMap {
        domid,
        _pad: [0; 3],
        map: MemoryMap {
            nr_entries: nr,
            _pad: 0,
            buffer: entries.as_ptr() as u64,
        },
    };
    memory_op(cmd::SET_MEMORY_MAP, &mut m)
}

/// `XENMEM_memory_map` into `out`: the result and the entry count written back.
fn memory_map(out: &mut [E820Entry]) -> (i64, u32) {
    let mut m = MemoryMap {
        nr_entries: out.len() as u32,
        _pad: 0,
        buffer: out.as_mut_ptr() as u64,
    };
    (memory_op(cmd::MEMORY_MAP, &mut m), m.nr_entries)
}

/// `XEN_DOMCTL_{get,set}vcpucontext` (`cmd`) of `domid`'s vCPU `vcpu` with the context at
/// `ctxt`.
fn vcpucontext(cmd: u32, domid: u16, vcpu: u32, ctxt: u64) -> i64 {
    let a = VcpuContext {
        vcpu,
        _pad: 0,
        ctxt,
    };
    domctl(&mut domctl_op(cmd, domid, &a))
}

/// A context buffer (5 KiB: not on the small stack).
static mut CONTEXT: [u8; size_of::<VcpuGuestContext>()] = [0; size_of::<VcpuGuestContext>()];

fn context_buffer() -> u64 {
    core::ptr::addr_of_mut!(CONTEXT) as u64
}

fn context() -> VcpuGuestContext {
    // SAFETY: CONTEXT is as large as the context, which any bytes make, and only this vCPU
    // (or the hypervisor, in the call before) writes it.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(CONTEXT).cast::<VcpuGuestContext>()) }
}

/// `XENMEM_acquire_resource` of `domid`'s grant table as `r` says (its domain, type and id
/// filled in unless given); the result and the structure after the call.
fn acquire(domid: u16, r: MemAcquireResource) -> (i64, MemAcquireResource) {
    let mut r = MemAcquireResource {
        domid,
        r#type: if r.r#type == 0 {
            resource::GRANT_TABLE
        } else {
            r.r#type
        },
        ..r
    };
    (memory_op(cmd::ACQUIRE_RESOURCE, &mut r), r)
}

fn yield_for(ns: u64) {
    let t = system_time_ns() + ns;
    while system_time_ns() < t {
        hypercall(nr::SCHED_OP, u64::from(sched::YIELD), 0, 0, 0, 0);
    }
}

/// The checks that need no second domain.
fn alone(si: &StartInfo, failed: &mut bool) {
    let mut f = false;
    let pte = l1e_maddr(si, window()).unwrap_or(0);
    // SAFETY: the initial page tables are mapped read-only at their PFN's address.
    let own = unsafe { core::ptr::read_volatile(pte_va(pte) as *const u64) };
    let r = mmu(pte, own, DOMID_SELF);
    check!(f, r == 0, "mmu_update DOMID_SELF: {r}");
    let r = mmu(pte, own, DOM0);
    check!(
        f,
        r == ESRCH,
        "mmu_update naming itself by id: {r}, not -ESRCH"
    );
    let r = mmu(pte, own, MISSING);
    check!(
        f,
        r == ESRCH,
        "mmu_update naming d{MISSING}: {r}, not -ESRCH"
    );
    for (fd, what) in [(DOM0, "itself by id"), (MISSING, "a missing domain")] {
        let r = mmuext(ext::TLB_FLUSH_LOCAL, 0, fd);
        check!(f, r == ESRCH, "mmuext_op naming {what}: {r}, not -ESRCH");
        let r = mmuext(ext::PIN_L4_TABLE, 0, fd);
        check!(f, r == ESRCH, "pin naming {what}: {r}, not -ESRCH");
    }
    let mut list = [FIRST_FREE_PFN];
    let r = reservation(cmd::POPULATE_PHYSMAP, MISSING, &mut list, 0);
    check!(f, r == 0, "populate_physmap of d{MISSING}: {r} extents");
    let r = stat(cmd::CURRENT_RESERVATION, MISSING);
    check!(f, r == ESRCH, "current_reservation of d{MISSING}: {r}");
    let (by_self, by_id) = (
        stat(cmd::CURRENT_RESERVATION, DOMID_SELF),
        stat(cmd::CURRENT_RESERVATION, DOM0),
    );
    check!(
        f,
        by_self > 0 && by_self == by_id,
        "current_reservation by DOMID_SELF {by_self}, by id {by_id}"
    );
    // Claims: the arguments first, then the domain (looked up by id only), then the rules.
    let bad = [
        MemoryReservation {
            extent_start: list.as_mut_ptr() as u64,
            ..MemoryReservation::default()
        },
        MemoryReservation {
            extent_order: 1,
            ..MemoryReservation::default()
        },
        MemoryReservation {
            mem_flags: 1,
            ..MemoryReservation::default()
        },
    ];
    for (r, what) in bad.into_iter().zip(["an extent list", "an order", "flags"]) {
        let r = claim(MemoryReservation {
            nr_extents: 1,
            domid: DOM0,
            ..r
        });
        check!(f, r == EINVAL, "claim with {what}: {r}, not -EINVAL");
    }
    let r = claim_for(DOMID_SELF, 1);
    check!(f, r == EINVAL, "claim for DOMID_SELF: {r}, not -EINVAL");
    let r = claim_for(MISSING, 1);
    check!(f, r == EINVAL, "claim for d{MISSING}: {r}, not -EINVAL");
    let r = claim_for(DOM0, 1);
    check!(
        f,
        r == EINVAL,
        "claim below the pages held: {r}, not -EINVAL"
    );
    let r = claim_for(DOM0, u64::MAX);
    check!(f, r == EINVAL, "claim above the maximum: {r}, not -EINVAL");
    let r = claim_for(DOM0, 0);
    check!(f, r == 0, "cancelling no claim: {r}");
    // The pseudo-physical memory map.
    let map = [
        E820Entry {
            addr: 0,
            size: 0xa0000,
            r#type: 1,
        },
        E820Entry {
            addr: 0x10_0000,
            size: 0x100_0000,
            r#type: 1,
        },
    ];
    let r = set_memory_map(DOMID_SELF, &map, 1025);
    check!(
        f,
        r == EINVAL,
        "set_memory_map of 1025 entries: {r}, not -EINVAL"
    );
    let r = set_memory_map(MISSING, &map, 2);
    check!(
        f,
        r == ESRCH,
        "set_memory_map of d{MISSING}: {r}, not -ESRCH"
    );
    let r = set_memory_map(DOMID_SELF, &map, 2);
    check!(f, r == 0, "set_memory_map: {r}");
    let mut out = [E820Entry::default(); 4];
    let (r, n) = memory_map(&mut out);
    let (a, s) = (out[1].addr, out[1].size);
    check!(
        f,
        r == 0 && n == 2 && a == 0x10_0000 && s == 0x100_0000,
        "memory_map: {r}, {n} entries, [1] = {a:#x}+{s:#x}"
    );
    let (r, n) = memory_map(&mut out[..1]);
    check!(f, r == 0 && n == 1, "memory_map with room for 1: {r}, {n}");
    let r = set_memory_map(DOM0, &map, 0);
    check!(f, r == 0, "set_memory_map of no entries by id: {r}");
    let (r, _) = memory_map(&mut out);
    check!(f, r == ENOSYS, "memory_map once emptied: {r}, not -ENOSYS");
    // Resources: another domain's, by id only.
    let one = MemAcquireResource {
        nr_frames: 1,
        frame_list: list.as_mut_ptr() as u64,
        ..MemAcquireResource::default()
    };
    let r = acquire(DOMID_SELF, one).0;
    check!(
        f,
        r == ESRCH,
        "acquire_resource of DOMID_SELF: {r}, not -ESRCH"
    );
    let r = acquire(DOM0, one).0;
    check!(f, r == EPERM, "acquire_resource of itself: {r}, not -EPERM");
    let r = acquire(MISSING, one).0;
    check!(
        f,
        r == ESRCH,
        "acquire_resource of d{MISSING}: {r}, not -ESRCH"
    );
    let r = acquire(MISSING, MemAcquireResource { pad: 1, ..one }).0;
    check!(
        f,
        r == EINVAL,
        "acquire_resource with padding: {r}, not -EINVAL"
    );
    let r = acquire(
        MISSING,
        MemAcquireResource {
            frame: 1 << 32,
            ..one
        },
    )
    .0;
    check!(
        f,
        r == EINVAL,
        "acquire_resource past 32 bits: {r}, not -EINVAL"
    );
    // vCPU contexts: not the calling vCPU's, not a vCPU the domain lacks, never the caller's
    // own domain's to set.
    let buf = context_buffer();
    let r = vcpucontext(dcmd::GETVCPUCONTEXT, DOM0, 0, buf);
    check!(
        f,
        r == EINVAL,
        "getvcpucontext of the calling vCPU: {r}, not -EINVAL"
    );
    let r = vcpucontext(dcmd::GETVCPUCONTEXT, DOM0, 99, buf);
    check!(
        f,
        r == EINVAL,
        "getvcpucontext of vCPU 99: {r}, not -EINVAL"
    );
    let r = vcpucontext(dcmd::SETVCPUCONTEXT, DOM0, 0, buf);
    check!(
        f,
        r == EINVAL,
        "setvcpucontext of its own domain: {r}, not -EINVAL"
    );
    let r = vcpucontext(dcmd::GETVCPUCONTEXT, MISSING, 0, buf);
    check!(
        f,
        r == ESRCH,
        "getvcpucontext of d{MISSING}: {r}, not -ESRCH"
    );
    if f {
        *failed = true;
    }
}

/// The domU's side: gives pages back, then may do nothing to dom0.
fn as_domu(si: &StartInfo) -> Verdict {
    let mut failed = false;
    let mut list = [0u64; GIVEN_BACK as usize];
    for (i, slot) in (0u64..).zip(list.iter_mut()) {
        *slot = pfn_to_mfn(si, FIRST_FREE_PFN + i);
    }
    let r = reservation(cmd::DECREASE_RESERVATION, DOMID_SELF, &mut list, 0);
    check!(failed, r == GIVEN_BACK as i64, "giving pages back: {r}");
    let pte = l1e_maddr(si, window()).unwrap_or(0);
    // SAFETY: as in `alone`.
    let own = unsafe { core::ptr::read_volatile(pte_va(pte) as *const u64) };
    let r = mmu(pte, own, DOM0);
    check!(
        failed,
        r == EPERM,
        "mmu_update naming dom0: {r}, not -EPERM"
    );
    let r = mmu(pte, own, DOMU);
    check!(failed, r == ESRCH, "mmu_update naming itself by id: {r}");
    let r = mmuext(ext::PIN_L4_TABLE, own >> 12, DOM0);
    check!(failed, r == EPERM, "pin naming dom0: {r}, not -EPERM");
    let mut one = [FIRST_FREE_PFN];
    let r = reservation(cmd::POPULATE_PHYSMAP, DOM0, &mut one, 0);
    check!(failed, r == 0, "populate_physmap of dom0: {r} extents");
    let r = reservation(cmd::INCREASE_RESERVATION, DOM0, &mut one, 0);
    check!(failed, r == 0, "increase_reservation of dom0: {r} extents");
    let r = claim_for(DOM0, 1 << 20);
    check!(failed, r == EPERM, "claim for dom0: {r}, not -EPERM");
    let r = claim_for(DOMU, 1 << 20);
    check!(failed, r == EPERM, "claim for itself: {r}, not -EPERM");
    let r = set_memory_map(DOM0, &[], 0);
    check!(
        failed,
        r == EPERM,
        "set_memory_map of dom0: {r}, not -EPERM"
    );
    let r = stat(cmd::CURRENT_RESERVATION, DOM0);
    check!(
        failed,
        r == EPERM,
        "current_reservation of dom0: {r}, not -EPERM"
    );
    let r = acquire(DOM0, MemAcquireResource::default()).0;
    check!(
        failed,
        r == EPERM,
        "acquire_resource of dom0: {r}, not -EPERM"
    );
    if failed {
        return Verdict::Failure("a domU acting on dom0's memory");
    }
    println!("the domU gave {GIVEN_BACK} pages back and may not touch dom0's memory");
    println!("Test result: SUCCESS");
    loop {
        hypercall(nr::SCHED_OP, u64::from(sched::YIELD), 0, 0, 0, 0);
    }
}

/// dom0's side with the domU.
fn with_domu(si: &StartInfo, failed: &mut bool) {
    let mut f = false;
    let pte = l1e_maddr(si, window()).unwrap_or(0);
    // SAFETY: as in `alone`.
    let own = unsafe { core::ptr::read_volatile(pte_va(pte) as *const u64) };
    let room = || stat(cmd::MAXIMUM_RESERVATION, DOMU) - stat(cmd::CURRENT_RESERVATION, DOMU);
    let end = system_time_ns() + 10_000_000_000;
    while room() < GIVEN_BACK as i64 && system_time_ns() < end {
        yield_for(10_000_000);
    }
    let max = stat(cmd::MAXIMUM_RESERVATION, DOMU);
    check!(
        f,
        room() == GIVEN_BACK as i64,
        "the domU has {} pages of room",
        room()
    );
    // Claim its memory, then populate it: a 2 MiB extent, then 4 KiB ones to its maximum.
    check!(f, claim_for(DOMU, max as u64) == 0, "claim for the domU");
    let r = claim_for(DOMU, max as u64);
    check!(f, r == EINVAL, "a second claim: {r}, not -EINVAL");
    let mut big = [FIRST_FREE_PFN];
    let r = reservation(cmd::POPULATE_PHYSMAP, DOMU, &mut big, 9);
    let mfn0 = big[0];
    check!(f, r == 1, "populating a 2 MiB extent: {r}");
    check!(
        f,
        r == 1 && m2p(mfn0) == FIRST_FREE_PFN && m2p(mfn0 + 511) == FIRST_FREE_PFN + 511,
        "M2P of the extent at {mfn0:#x}: {:#x}",
        m2p(mfn0)
    );
    let mut small = [0u64; 100];
    for (i, s) in (0u64..).zip(small.iter_mut()) {
        *s = FIRST_FREE_PFN + 512 + i;
    }
    let r = reservation(cmd::POPULATE_PHYSMAP, DOMU, &mut small, 0);
    let left = GIVEN_BACK - 512;
    check!(
        f,
        r == left as i64,
        "populating 100 pages with room for {left}: {r}"
    );
    check!(
        f,
        small[left as usize] == FIRST_FREE_PFN + 512 + left,
        "the entry past the partial count was written"
    );
    let mut one = [0u64];
    let r = reservation(cmd::INCREASE_RESERVATION, DOMU, &mut one, 0);
    check!(f, r == 0, "increase_reservation past the maximum: {r}");
    let last = small[left as usize - 1];
    let r = reservation(cmd::DECREASE_RESERVATION, DOMU, &mut [last], 0);
    check!(
        f,
        r == 1,
        "decrease_reservation of the domU's {last:#x}: {r}"
    );
    let r = reservation(cmd::INCREASE_RESERVATION, DOMU, &mut one, 0);
    check!(f, r == 1, "increase_reservation after it: {r}");
    check!(f, claim_for(DOMU, 0) == 0, "cancelling the claim");

    // Foreign mappings: only the named domain's frames, only in L1 entries.
    let r = mmu(pte, (mfn0 << 12) | PTE_RW, DOMID_SELF);
    check!(
        f,
        r == EBUSY,
        "mapping the domU's frame as our own: {r}, not -EBUSY"
    );
    let r = mmu(pte, own, DOMU);
    check!(
        f,
        r == EBUSY,
        "mapping our own frame as the domU's: {r}, not -EBUSY"
    );
    let l2e = hestia_guests::pte_maddr(si, window(), 2).unwrap_or(0);
    // SAFETY: as in `alone`.
    let l2 = unsafe { core::ptr::read_volatile(pte_va(l2e) as *const u64) };
    let r = mmu(l2e, l2, DOMU);
    check!(
        f,
        r == EINVAL,
        "a foreign update of an L2 entry: {r}, not -EINVAL"
    );
    // Map the extent's first frame, write a table entry naming its second.
    let r = mmu(pte, (mfn0 << 12) | PTE_RW, DOMU);
    check!(f, r == 0, "mapping the domU's frame: {r}");
    mmuext(ext::INVLPG_LOCAL, window(), DOMID_SELF);
    check!(f, r != 0 || read(7) == 0, "a fresh frame is not zeroed");
    write(0, ((mfn0 + 1) << 12) | 0x7);
    check!(f, mmu(pte, own, DOMID_SELF) == 0, "unmapping it");
    mmuext(ext::INVLPG_LOCAL, window(), DOMID_SELF);
    // Pin it as the domU's L4: the second frame becomes the domU's L3.
    let r = mmuext(ext::PIN_L4_TABLE, mfn0, DOMU);
    check!(f, r == 0, "pinning the domU's L4 on its behalf: {r}");
    let r = mmuext(ext::PIN_L4_TABLE, mfn0, DOMU);
    check!(f, r == EINVAL, "pinning it again: {r}, not -EINVAL");
    let r = mmu(pte, ((mfn0 + 1) << 12) | PTE_RW, DOMU);
    check!(
        f,
        r == EBUSY,
        "mapping the domU's L3 writable: {r}, not -EBUSY"
    );
    let r = mmu(pte, ((mfn0 + 1) << 12) | PTE_RO, DOMU);
    check!(f, r == 0, "mapping the domU's L3 read-only: {r}");
    check!(f, mmu(pte, own, DOMID_SELF) == 0, "unmapping it");
    mmuext(ext::INVLPG_LOCAL, window(), DOMID_SELF);
    let r = mmuext(ext::PIN_L4_TABLE, own >> 12, DOMU);
    check!(
        f,
        r == EINVAL,
        "pinning our own frame for the domU: {r}, not -EINVAL"
    );
    let r = mmuext(ext::NEW_BASEPTR, mfn0, DOMU);
    check!(
        f,
        r == EPERM,
        "new_baseptr naming the domU: {r}, not -EPERM"
    );
    let r = mmuext(ext::UNPIN_TABLE, mfn0, DOMU);
    check!(f, r == 0, "unpinning it: {r}");
    let r = mmuext(ext::UNPIN_TABLE, mfn0, DOMU);
    check!(f, r == EINVAL, "unpinning it again: {r}, not -EINVAL");

    // Its grant table's first frame, as libxenguest seeds it: acquired, mapped, written.
    let (r, size) = acquire(DOMU, MemAcquireResource::default());
    check!(
        f,
        r == 0 && size.nr_frames > 0,
        "grant table size: {r}, {}",
        size.nr_frames
    );
    let no_list = MemAcquireResource {
        nr_frames: 1,
        ..MemAcquireResource::default()
    };
    let r = acquire(DOMU, no_list).0;
    check!(f, r == EINVAL, "a size query with frames: {r}, not -EINVAL");
    let mut frames = [0u64; 1];
    let one = MemAcquireResource {
        nr_frames: 1,
        frame_list: frames.as_mut_ptr() as u64,
        ..MemAcquireResource::default()
    };
    let r = acquire(
        DOMU,
        MemAcquireResource {
            frame: u64::from(size.nr_frames),
            ..one
        },
    )
    .0;
    check!(f, r == EINVAL, "a frame past the table: {r}, not -EINVAL");
    let r = acquire(DOMU, MemAcquireResource { id: 1, ..one }).0;
    check!(
        f,
        r == EINVAL,
        "v2 status frames of a v1 table: {r}, not -EINVAL"
    );
    let r = acquire(
        DOMU,
        MemAcquireResource {
            r#type: resource::VMTRACE_BUF,
            ..one
        },
    )
    .0;
    check!(f, r == EOPNOTSUPP, "a vmtrace buffer: {r}, not -EOPNOTSUPP");
    let r = acquire(DOMU, one).0;
    check!(
        f,
        r == 0 && frames[0] != 0,
        "grant table frame 0: {r}, {:#x}",
        frames[0]
    );
    let r = mmu(pte, (frames[0] << 12) | PTE_RW, DOMU);
    check!(f, r == 0, "mapping the domU's grant table: {r}");
    mmuext(ext::INVLPG_LOCAL, window(), DOMID_SELF);
    // Entry 1 (GNTTAB_RESERVED_XENSTORE): flags permit_access, domid 0, frame.
    write(1, 1 | (FIRST_FREE_PFN << 32));
    check!(f, mmu(pte, own, DOMID_SELF) == 0, "unmapping it");
    mmuext(ext::INVLPG_LOCAL, window(), DOMID_SELF);

    // Its vCPU context, read back.
    let buf = context_buffer();
    let r = vcpucontext(dcmd::GETVCPUCONTEXT, DOMU, 0, buf);
    let ctx = context();
    let want = vgcf::IN_KERNEL | vgcf::ONLINE | vgcf::I387_VALID;
    check!(
        f,
        r == 0 && ctx.flags & want == want && ctx.ctrlreg[3] != 0 && ctx.user_regs.rip != 0,
        "getvcpucontext of the domU: {r}, flags {:#x}, cr3 {:#x}",
        ctx.flags,
        ctx.ctrlreg[3]
    );
    let r = vcpucontext(dcmd::GETVCPUCONTEXT, DOMU, 1, buf);
    check!(
        f,
        r == EINVAL,
        "getvcpucontext of a vCPU it lacks: {r}, not -EINVAL"
    );
    let r = vcpucontext(dcmd::SETVCPUCONTEXT, DOMU, 1, buf);
    check!(
        f,
        r == EINVAL,
        "setvcpucontext of a vCPU it lacks: {r}, not -EINVAL"
    );
    let r = vcpucontext(dcmd::GETVCPUCONTEXT, DOMU, 0, 1 << 63);
    check!(
        f,
        r == EFAULT,
        "getvcpucontext into a bad address: {r}, not -EFAULT"
    );

    // Keep one of its frames mapped while it dies.
    let kept = mfn0 + 2;
    let r = mmu(pte, (kept << 12) | PTE_RW, DOMU);
    check!(f, r == 0, "mapping the domU's frame {kept:#x}: {r}");
    mmuext(ext::INVLPG_LOCAL, window(), DOMID_SELF);
    write(3, 0x5eed);
    let s = SchedRemoteShutdown {
        domain_id: DOMU,
        _pad: 0,
        reason: reason::POWEROFF,
    };
    let r = hypercall(
        nr::SCHED_OP,
        u64::from(sched::REMOTE_SHUTDOWN),
        &s as *const SchedRemoteShutdown as u64,
        0,
        0,
        0,
    );
    check!(f, r == 0, "shutting the domU down: {r}");
    let end = system_time_ns() + 10_000_000_000;
    while stat(cmd::CURRENT_RESERVATION, DOMU) != ESRCH && system_time_ns() < end {
        yield_for(10_000_000);
    }
    check!(
        f,
        stat(cmd::CURRENT_RESERVATION, DOMU) == ESRCH,
        "the domU was not destroyed"
    );
    check!(
        f,
        read(3) == 0x5eed,
        "the kept frame changed: {:#x}",
        read(3)
    );
    write(4, 1);
    let r = mmu(pte, (kept << 12) | PTE_RW, DOMU);
    check!(f, r == ESRCH, "naming the destroyed domU: {r}, not -ESRCH");
    check!(
        f,
        mmu(pte, own, DOMID_SELF) == 0,
        "unmapping the kept frame"
    );
    mmuext(ext::INVLPG_LOCAL, window(), DOMID_SELF);
    // Let the reaper free it before the audit at the end.
    yield_for(200_000_000);
    if f {
        *failed = true;
    }
}

fn test(si: &StartInfo) -> Verdict {
    let words = || cmdline(si).split(' ');
    if words().any(|w| w == "domu") {
        return as_domu(si);
    }
    let mut failed = false;
    alone(si, &mut failed);
    if words().any(|w| w == "peer") {
        // For the system time its waits read.
        check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
        with_domu(si, &mut failed);
    }
    if failed {
        Verdict::Failure("foreign memory")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
