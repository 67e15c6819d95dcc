//! The PV MMU from a guest's side: the read-only M2P, update_va_mapping (mapping shared_info,
//! remapping), mmu_update on L1 entries and the M2P, mmuext_op flushes, pin/unpin rules.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::mmu::{MmuUpdate, ext, update, uvmf};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    ExcFrame, Verdict, check, hypercall, install_traps, l1e_maddr, m2p, mmuext_one, pfn_to_mfn,
    println,
};

const EINVAL: i64 = -22;
/// Xen's answer when an entry would map a frame the guest may not use that way.
const EBUSY: i64 = -16;
/// Present, writable, user, accessed.
const RW: u64 = 0x27;
/// Present, user, accessed.
const RO: u64 = 0x25;

static FAULTS: AtomicU64 = AtomicU64::new(0);
static LAST_ERR: AtomicU64 = AtomicU64::new(0);

fn handler(_v: u64, f: &mut ExcFrame) {
    FAULTS.fetch_add(1, SeqCst);
    LAST_ERR.store(f.error_code, SeqCst);
    f.rip += 3; // every probe below is a 3-byte `mov %al, (%rsi)`
}

fn mmu_update(reqs: &[MmuUpdate]) -> i64 {
    let mut done = 0u32;
    let r = hypercall(
        nr::MMU_UPDATE,
        reqs.as_ptr() as u64,
        reqs.len() as u64,
        &mut done as *mut u32 as u64,
        u64::from(DOMID_SELF),
        0,
    );
    if r == 0 && done as usize != reqs.len() {
        return -1000;
    }
    r
}

fn uva(va: u64, val: u64, flags: u64) -> i64 {
    hypercall(nr::UPDATE_VA_MAPPING, va, val, flags, 0, 0)
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    // 1. The M2P inverts the P2M for the domain's frames.
    let bad = (0..si.nr_pages)
        .step_by(97)
        .find(|&pfn| m2p(pfn_to_mfn(si, pfn)) != pfn);
    check!(failed, bad.is_none(), "m2p[p2m[{bad:?}]] is wrong");

    // 2. Map shared_info at a scratch VA in the padding of the initial mapping.
    let scratch_pfn = 0x3ff;
    let scratch = scratch_pfn << 12;
    let r = uva(scratch, si.shared_info | RW, uvmf::INVLPG);
    check!(failed, r == 0, "mapping shared_info returned {r}");
    // SAFETY: the scratch VA now maps the shared_info page; vcpu_info[0] is at offset 0.
    let mask = unsafe { core::ptr::read_volatile((scratch + 1) as *const u8) };
    check!(
        failed,
        mask == 1,
        "vcpu_info[0].evtchn_upcall_mask is {mask}: events must start masked"
    );
    check!(
        failed,
        uva(
            scratch,
            (pfn_to_mfn(si, scratch_pfn) << 12) | RW,
            uvmf::INVLPG
        ) == 0,
        "restoring the scratch mapping"
    );

    // 3. mmu_update on an L1 entry: make a page read-only, prove a write faults, restore.
    let page_pfn = 0x3fe;
    let page = page_pfn << 12;
    let Some(l1e) = l1e_maddr(si, page) else {
        return Verdict::Error("no L1 for the scratch page");
    };
    let mfn = pfn_to_mfn(si, page_pfn);
    let r = mmu_update(&[MmuUpdate {
        ptr: l1e | update::NORMAL_PT_UPDATE,
        val: (mfn << 12) | RO,
    }]);
    check!(failed, r == 0, "mmu_update to read-only returned {r}");
    // SAFETY: a probe write to a page the test just made read-only; the #PF handler skips it.
    unsafe {
        core::arch::asm!("mov %al, (%rsi)", in("rsi") page, in("al") 1u8, options(att_syntax))
    };
    check!(
        failed,
        FAULTS.load(SeqCst) == 1 && LAST_ERR.load(SeqCst) & 3 == 3,
        "write to a read-only page: {} faults, error {:#x}",
        FAULTS.load(SeqCst),
        LAST_ERR.load(SeqCst)
    );

    // 4. Pinning: a page mapped writable cannot become a page table; read-only, it can.
    // The scratch page is zero (padding) and now mapped only read-only: a valid empty L1.
    let l1_candidate = mfn;
    check!(
        failed,
        mmuext_one(ext::PIN_L1_TABLE, l1_candidate, 0) == 0,
        "pinning a read-only zeroed frame as L1 failed"
    );
    check!(
        failed,
        mmuext_one(ext::PIN_L1_TABLE, l1_candidate, 0) == EINVAL,
        "pinning twice succeeded"
    );
    let r = mmu_update(&[MmuUpdate {
        ptr: l1e | update::NORMAL_PT_UPDATE,
        val: (mfn << 12) | RW,
    }]);
    check!(
        failed,
        r == EBUSY,
        "mapping a pinned L1 writable returned {r}"
    );
    check!(
        failed,
        mmuext_one(ext::UNPIN_TABLE, l1_candidate, 0) == 0,
        "unpin failed"
    );
    check!(
        failed,
        mmuext_one(ext::UNPIN_TABLE, l1_candidate, 0) == EINVAL,
        "unpinning an unpinned frame succeeded"
    );
    let r = mmu_update(&[MmuUpdate {
        ptr: l1e | update::NORMAL_PT_UPDATE,
        val: (mfn << 12) | RW,
    }]);
    check!(
        failed,
        r == 0,
        "restoring the writable mapping after unpin returned {r}"
    );
    let data_mfn = pfn_to_mfn(si, 0x3fd);
    check!(
        failed,
        mmuext_one(ext::PIN_L1_TABLE, data_mfn, 0) == EINVAL,
        "pinned a frame that is mapped writable"
    );

    // 5. M2P updates for own frames; flushes; unsupported commands.
    let r = mmu_update(&[MmuUpdate {
        ptr: (mfn << 12) | update::MACHPHYS_UPDATE,
        val: page_pfn,
    }]);
    check!(
        failed,
        r == 0 && m2p(mfn) == page_pfn,
        "machphys update of an own frame: {r}"
    );
    check!(
        failed,
        mmuext_one(ext::TLB_FLUSH_LOCAL, 0, 0) == 0 && mmuext_one(ext::INVLPG_LOCAL, page, 0) == 0,
        "flushes"
    );
    check!(
        failed,
        mmuext_one(ext::MARK_SUPER, mfn, 0) == -95,
        "MARK_SUPER must be -EOPNOTSUPP"
    );
    check!(
        failed,
        mmuext_one(99, 0, 0) == -38,
        "unknown mmuext_op must be -ENOSYS"
    );
    let r = mmu_update(&[MmuUpdate {
        ptr: l1e | 5,
        val: 0,
    }]);
    check!(
        failed,
        r == -38,
        "unknown mmu_update sub-command returned {r}"
    );
    println!("mmu: {} faults seen", FAULTS.load(SeqCst));
    if failed {
        Verdict::Failure("PV MMU")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
