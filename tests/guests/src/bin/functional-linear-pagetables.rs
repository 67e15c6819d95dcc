//! Linear (recursive) page tables, as Xen 4.17 allows them (`get_l4_linear_pagetable` and
//! its L2/L3 twins in `xen/arch/x86/mm.c`): a read-only entry of an L4, L3 or L2 that names a
//! table of the same level. Checked: the L4 mapping itself (`mmu_update` answers 0 and the
//! linear addresses show the L4 and the L1 entries of the guest's own mappings); an L3 and an
//! L2 mapping themselves; an L4 naming a second, pinned L4 (which has its own self-mapping),
//! read through the linear addresses; the second L4 unpinned lives on through that entry and
//! goes, its type with it, when the entry goes (then it may be mapped writable). Every
//! entry is removed at the end; the frame audit at shutdown checks the counts.
#![no_std]
#![no_main]

use hestia_guests::pt_paths::SCRATCH;
use hestia_guests::xen_abi::mmu::{ext, uvmf};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, hypercall, l1e_maddr, mmu_update_one, mmuext_one, pfn_to_mfn, println,
    pte_maddr, pte_va,
};

/// Present, user, accessed: read-only.
const RO: u64 = 0x25;
/// Present, writable, user, accessed.
const RW: u64 = 0x27;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
/// Unused L4 slots (the guest lives in slot 0): this L4's self-mapping, its entry naming the
/// second L4, and the second L4's self-mapping.
const SELF: u64 = 2;
const OTHER: u64 = 3;
const OTHER_SELF: u64 = 4;
/// An unused slot of the L3 and of the L2 that map the guest's first 2 MiB.
const L3_SELF: u64 = 300;
const L2_SELF: u64 = 500;
/// A PFN beyond the initial mapping, for the second L4.
const SECOND_L4_PFN: u64 = 0x1000;

/// The virtual address reached through slots `a`, `b`, `c`, `d` of the four levels.
fn va(a: u64, b: u64, c: u64, d: u64) -> u64 {
    (a << 39) | (b << 30) | (c << 21) | (d << 12)
}

/// Word `i` of the page at `page`.
fn word(page: u64, i: u64) -> u64 {
    // SAFETY: callers pass addresses their linear entries map read-only.
    unsafe { core::ptr::read_volatile((page as *const u64).add(i as usize)) }
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    let l4_mfn = pfn_to_mfn(si, si.pt_base >> 12);
    let l4_maddr = l4_mfn << 12;

    // The L4 maps itself: four hops through the slot reach the L4 as a page, three the L3s
    // as pages, and one reaches the L1 entries of the whole low 512 GiB.
    let r = mmu_update_one(l4_maddr + SELF * 8, l4_maddr | RO);
    check!(failed, r == 0, "read-only self-mapping of the L4: {r}");
    if r == 0 {
        let me = va(SELF, SELF, SELF, SELF);
        check!(
            failed,
            word(me, SELF) & ADDR == l4_maddr && word(me, 0) == word(si.pt_base, 0),
            "the L4 seen through itself: slot {SELF} {:#x}, slot 0 {:#x}",
            word(me, SELF),
            word(me, 0)
        );
        // The L1 entry that maps the start_info page, read through the linear range and
        // through the initial mapping of the L1.
        let l1e_linear = (SELF << 39) | ((si.pt_base >> 12) << 3);
        let l1e = l1e_maddr(si, si.pt_base).map(|m| word(pte_va(m) & !0xfff, (m & 0xfff) / 8));
        // SAFETY: the linear range maps the L1 tables read-only.
        let seen = unsafe { core::ptr::read_volatile(l1e_linear as *const u64) };
        check!(
            failed,
            Some(seen) == l1e && seen & ADDR == l4_maddr,
            "L1 entry of the L4's own page through the linear range {seen:#x}, expected {l1e:x?}"
        );
    }

    // An L3 and an L2 mapping themselves.
    let l3e = pte_maddr(si, 0, 3).unwrap_or(0);
    let l2e = pte_maddr(si, 0, 2).unwrap_or(0);
    let (l3_maddr, l2_maddr) = (l3e & !0xfff, l2e & !0xfff);
    let r = mmu_update_one(l3_maddr + L3_SELF * 8, l3_maddr | RO);
    check!(failed, r == 0, "read-only self-mapping of an L3: {r}");
    let r = mmu_update_one(l2_maddr + L2_SELF * 8, l2_maddr | RO);
    check!(failed, r == 0, "read-only self-mapping of an L2: {r}");
    if r == 0 {
        let l2 = va(0, 0, L2_SELF, L2_SELF);
        check!(
            failed,
            word(l2, L2_SELF) & ADDR == l2_maddr,
            "the L2 seen through itself: {:#x}",
            word(l2, L2_SELF)
        );
    }

    // A second L4, cleared and pinned, mapping itself; this L4 names it.
    let second = pfn_to_mfn(si, SECOND_L4_PFN);
    let second_maddr = second << 12;
    check!(
        failed,
        mmuext_one(ext::CLEAR_PAGE, second, 0) == 0,
        "clear the second L4"
    );
    check!(
        failed,
        mmuext_one(ext::PIN_L4_TABLE, second, 0) == 0,
        "pin the second L4"
    );
    let r = mmu_update_one(second_maddr + OTHER_SELF * 8, second_maddr | RO);
    check!(failed, r == 0, "self-mapping of the second L4: {r}");
    let r = mmu_update_one(l4_maddr + OTHER * 8, second_maddr | RO);
    check!(failed, r == 0, "read-only entry naming the second L4: {r}");
    if r == 0 {
        let other = va(OTHER, OTHER_SELF, OTHER_SELF, OTHER_SELF);
        check!(
            failed,
            word(other, OTHER_SELF) & ADDR == second_maddr,
            "the second L4 seen through the linear entry: {:#x}",
            word(other, OTHER_SELF)
        );
    }
    // Unpinned, the second L4 stays a page table while the linear entry holds it: it cannot
    // be mapped writable.
    let scratch_pte =
        l1e_maddr(si, SCRATCH).map_or(0, |m| word(pte_va(m) & !0xfff, (m & 0xfff) / 8));
    check!(
        failed,
        mmuext_one(ext::UNPIN_TABLE, second, 0) == 0,
        "unpin the second L4"
    );
    let r = hypercall(
        nr::UPDATE_VA_MAPPING,
        SCRATCH,
        second_maddr | RW,
        uvmf::INVLPG,
        0,
        0,
    );
    check!(
        failed,
        r != 0,
        "the second L4, named by a linear entry, mapped writable"
    );
    // The entry goes, and the second L4's type with it.
    check!(
        failed,
        mmu_update_one(l4_maddr + OTHER * 8, 0) == 0,
        "remove the entry naming the second L4"
    );
    let r = hypercall(
        nr::UPDATE_VA_MAPPING,
        SCRATCH,
        second_maddr | RW,
        uvmf::INVLPG,
        0,
        0,
    );
    check!(
        failed,
        r == 0,
        "the former L4 mapped writable once free: {r}"
    );
    let r = hypercall(
        nr::UPDATE_VA_MAPPING,
        SCRATCH,
        scratch_pte,
        uvmf::INVLPG,
        0,
        0,
    );
    check!(failed, r == 0, "restore the scratch mapping: {r}");

    // The rest removed.
    for (maddr, what) in [
        (l2_maddr + L2_SELF * 8, "L2"),
        (l3_maddr + L3_SELF * 8, "L3"),
        (l4_maddr + SELF * 8, "L4"),
    ] {
        let r = mmu_update_one(maddr, 0);
        check!(failed, r == 0, "remove the {what} self-mapping: {r}");
    }
    println!("linear page tables: self-mappings at L2-L4, an L4 naming another, torn down");
    if failed {
        Verdict::Failure("linear page tables")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
