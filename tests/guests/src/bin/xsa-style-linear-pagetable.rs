//! Hostile linear (recursive) page tables: everything Xen 4.17's `get_lN_linear_pagetable`
//! refuses must be refused, with Xen's error codes, and Hestia must keep its counts exact (the
//! frame audit at shutdown) whatever the guest does. Refused: a writable self-mapping of the
//! L4; a writable entry naming another L4; a chain (an entry in a table that is named by a
//! linear entry, an entry naming a table that holds one); an entry naming a table of another
//! level; a writable L1 entry naming its own L1 (a read-only one is an ordinary mapping);
//! a pin of a table holding a linear entry that would make a chain (nothing of the failed
//! validation stays behind). A store through a read-only linear mapping is a #PF for the guest.
//! A table may be named by as many linear entries as Xen's 16-bit `linear_pt_count` counts
//! (32768, as the rig shows), not one more, and all of it comes apart again.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::pt_paths::SCRATCH;
use hestia_guests::xen_abi::mmu::{MmuUpdate, ext, uvmf};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    ExcFrame, Verdict, check, hypercall, install_traps, l1e_maddr, mmu_update_one, mmuext_one,
    pfn_to_mfn, println, pte_maddr, pte_va,
};

/// Xen's answer to an L2-L4 entry its rules refuse.
const EINVAL: i64 = -22;
/// Xen's answer to a writable L1 entry naming a page table.
const EBUSY: i64 = -16;
const RO: u64 = 0x25;
const RW: u64 = 0x27;
/// Unused L4 slots.
const SELF: u64 = 2;
const OTHER: u64 = 3;
/// The target L4, a second one for the chains, and the holders of the count test.
const TARGET_PFN: u64 = 0x1000;
const CHAIN_PFN: u64 = 0x1001;
const HOLDER_PFN: u64 = 0x1100;
const HOLDERS: u64 = 70;
/// Guest slots of an L4 (all but the hypervisor's 256-271).
const GUEST_SLOTS: usize = 496;
/// The most linear entries that may name one table (`int16_t linear_pt_count` down to
/// -32768).
const MAX_USES: u64 = 32768;

static FAULTS: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector == 14 {
        FAULTS.fetch_add(1, SeqCst);
    } else {
        println!("unexpected exception {vector} at {:#x}", f.rip);
    }
    f.rip += 7; // `movq $1, (%rax)`
}

fn word(page: u64, i: u64) -> u64 {
    // SAFETY: the callers' addresses are mapped (read-only) by the linear entries they made.
    unsafe { core::ptr::read_volatile((page as *const u64).add(i as usize)) }
}

fn uva(va: u64, pte: u64) -> i64 {
    hypercall(nr::UPDATE_VA_MAPPING, va, pte, uvmf::INVLPG, 0, 0)
}

/// `mmu_update` of `reqs`; returns the result and how many were done.
fn mmu_update(reqs: &[MmuUpdate]) -> (i64, u32) {
    let mut done = 0u32;
    let r = hypercall(
        nr::MMU_UPDATE,
        reqs.as_ptr() as u64,
        reqs.len() as u64,
        &mut done as *mut u32 as u64,
        u64::from(DOMID_SELF),
        0,
    );
    (r, done)
}

/// Guest slot `i` (0-495) of an L4, past the hypervisor's.
fn guest_slot(i: usize) -> u64 {
    if i < 256 { i as u64 } else { i as u64 + 16 }
}

/// Fills every guest slot of each holder with a read-only entry naming `target`; returns how
/// many were accepted, and whether each holder stopped only at a refusal with -EINVAL.
fn name_from_all_holders(si: &StartInfo, target: u64) -> (u64, bool) {
    let mut reqs = [MmuUpdate::default(); GUEST_SLOTS];
    let (mut accepted, mut clean) = (0, true);
    for h in 0..HOLDERS {
        let holder = pfn_to_mfn(si, HOLDER_PFN + h) << 12;
        for (i, r) in reqs.iter_mut().enumerate() {
            *r = MmuUpdate {
                ptr: holder + guest_slot(i) * 8,
                val: (target << 12) | RO,
            };
        }
        let (r, done) = mmu_update(&reqs);
        accepted += u64::from(done);
        clean &= r == 0 || r == EINVAL;
    }
    (accepted, clean)
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    let l4 = pfn_to_mfn(si, si.pt_base >> 12) << 12;
    let target = pfn_to_mfn(si, TARGET_PFN);
    let chain = pfn_to_mfn(si, CHAIN_PFN);
    for mfn in [target, chain] {
        check!(
            failed,
            mmuext_one(ext::CLEAR_PAGE, mfn, 0) == 0,
            "clear {mfn:#x}"
        );
    }
    check!(
        failed,
        mmuext_one(ext::PIN_L4_TABLE, target, 0) == 0,
        "pin the target L4"
    );
    check!(
        failed,
        mmuext_one(ext::PIN_L4_TABLE, chain, 0) == 0,
        "pin the chain L4"
    );

    // Writable linear entries.
    let r = mmu_update_one(l4 + SELF * 8, l4 | RW);
    check!(failed, r == EINVAL, "writable self-mapping of the L4: {r}");
    let r = mmu_update_one(l4 + OTHER * 8, (target << 12) | RW);
    check!(failed, r == EINVAL, "writable entry naming another L4: {r}");

    // A store through a read-only self-mapping faults in the guest.
    check!(
        failed,
        mmu_update_one(l4 + SELF * 8, l4 | RO) == 0,
        "self-mapping"
    );
    let me = (SELF << 39) | (SELF << 30) | (SELF << 21) | (SELF << 12);
    // SAFETY: the store faults (the mapping is read-only); the handler skips it.
    unsafe { asm!("movq $1, (%rax)", in("rax") me + OTHER * 8, options(att_syntax, nostack)) };
    check!(
        failed,
        FAULTS.load(SeqCst) == 1 && word(me, OTHER) == 0,
        "store through the linear mapping: {} faults, slot now {:#x}",
        FAULTS.load(SeqCst),
        word(me, OTHER)
    );

    // Chains: this L4 names the target, so the target may name nothing and nothing this L4.
    check!(
        failed,
        mmu_update_one(l4 + OTHER * 8, (target << 12) | RO) == 0,
        "name the target"
    );
    let r = mmu_update_one((target << 12) + OTHER * 8, (chain << 12) | RO);
    check!(failed, r == EINVAL, "a named table naming another: {r}");
    let r = mmu_update_one((chain << 12) + OTHER * 8, l4 | RO);
    check!(
        failed,
        r == EINVAL,
        "naming a table that holds a linear entry: {r}"
    );
    // The same chain met by validation: a pin that fails and leaves nothing typed behind.
    check!(
        failed,
        mmuext_one(ext::UNPIN_TABLE, chain, 0) == 0,
        "unpin the chain L4"
    );
    let scratch_pte =
        l1e_maddr(si, SCRATCH).map_or(0, |m| word(pte_va(m) & !0xfff, (m & 0xfff) / 8));
    check!(
        failed,
        uva(SCRATCH, (chain << 12) | RW) == 0,
        "map the chain L4 writable"
    );
    // SAFETY: SCRATCH now maps the chain frame writable.
    unsafe { core::ptr::write_volatile((SCRATCH + OTHER * 8) as *mut u64, l4 | RO) };
    check!(
        failed,
        uva(SCRATCH, scratch_pte) == 0,
        "restore the scratch mapping"
    );
    let r = mmuext_one(ext::PIN_L4_TABLE, chain, 0);
    check!(
        failed,
        r == EINVAL,
        "pin of an L4 naming a linear-entry holder: {r}"
    );
    check!(
        failed,
        uva(SCRATCH, (chain << 12) | RW) == 0 && uva(SCRATCH, scratch_pte) == 0,
        "the frame of the failed pin is left typed"
    );

    // Entries naming a table of another level: an L3 entry naming an L4, an L2 entry naming
    // an L3.
    let l3 = pte_maddr(si, 0, 3).unwrap_or(0) & !0xfff;
    let l2 = pte_maddr(si, 0, 2).unwrap_or(0) & !0xfff;
    let r = mmu_update_one(l3 + 300 * 8, (target << 12) | RO);
    check!(failed, r == EINVAL, "L3 entry naming an L4: {r}");
    let r = mmu_update_one(l2 + 500 * 8, l3 | RO);
    check!(failed, r == EINVAL, "L2 entry naming an L3: {r}");
    // An L1 entry naming its own L1: writable refused, read-only an ordinary mapping.
    let Some(l1e) = l1e_maddr(si, SCRATCH) else {
        return Verdict::Error("no L1 for the scratch page");
    };
    let l1 = l1e & !0xfff;
    let r = mmu_update_one(l1e, l1 | RW);
    check!(failed, r == EBUSY, "writable L1 entry naming its L1: {r}");
    let r = mmu_update_one(l1e, l1 | RO);
    check!(failed, r == 0, "read-only L1 entry naming its L1: {r}");
    check!(
        failed,
        mmu_update_one(l1e, scratch_pte) == 0,
        "restore the scratch entry"
    );

    // Saturating the target's count of linear uses: 70 holders of 496 entries each.
    for h in 0..HOLDERS {
        let mfn = pfn_to_mfn(si, HOLDER_PFN + h);
        let ok =
            mmuext_one(ext::CLEAR_PAGE, mfn, 0) == 0 && mmuext_one(ext::PIN_L4_TABLE, mfn, 0) == 0;
        check!(failed, ok, "pin holder {h}");
    }
    let (accepted, clean) = name_from_all_holders(si, target);
    check!(
        failed,
        accepted == MAX_USES - 1 && clean,
        "{accepted} more linear entries naming one table, expected {} (clean refusals: {clean})",
        MAX_USES - 1
    );
    // All of it comes apart: the holders unpinned, the target unpinned and no longer named.
    for h in 0..HOLDERS {
        let mfn = pfn_to_mfn(si, HOLDER_PFN + h);
        check!(
            failed,
            mmuext_one(ext::UNPIN_TABLE, mfn, 0) == 0,
            "unpin holder {h}"
        );
    }
    check!(
        failed,
        mmuext_one(ext::UNPIN_TABLE, target, 0) == 0,
        "unpin the target"
    );
    check!(
        failed,
        mmu_update_one(l4 + OTHER * 8, 0) == 0,
        "drop the entry naming it"
    );
    check!(
        failed,
        mmu_update_one(l4 + SELF * 8, 0) == 0,
        "drop the self-mapping"
    );
    let freed = [
        target,
        pfn_to_mfn(si, HOLDER_PFN),
        pfn_to_mfn(si, HOLDER_PFN + HOLDERS - 1),
    ]
    .iter()
    .all(|&m| uva(SCRATCH, (m << 12) | RW) == 0);
    check!(
        failed,
        freed && uva(SCRATCH, scratch_pte) == 0,
        "a former table still typed"
    );
    println!("linear page tables: every hostile variant refused, {accepted} uses counted");
    if failed {
        Verdict::Failure("linear page tables")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
