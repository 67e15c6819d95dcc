//! Writable page tables (`VMASST_TYPE_writable_pagetables`): direct stores to an L1 that the
//! guest maps read-only are emulated (MOV, XCHG, LOCK CMPXCHG, LOCK BTR) and validated like
//! `mmu_update`; a store of a forbidden entry is a #PF.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::mmu::{MmuextOp, ext};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{
    ExcFrame, Verdict, check, hypercall, install_traps, l1e_maddr, m2p, pfn_to_mfn, println,
};

/// Present, writable, user, accessed.
const RW: u64 = 0x27;
/// The scratch virtual address whose L1 entry the test rewrites.
const SCRATCH: u64 = 0x3fe000;

#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);
static DATA: Page = Page([const { AtomicU64::new(0) }; 512]);

static PF: AtomicU64 = AtomicU64::new(0);
static SKIP: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector == 14 {
        PF.fetch_add(1, SeqCst);
    } else {
        println!("unexpected exception {vector} at {:#x}", f.rip);
    }
    f.rip += SKIP.load(SeqCst);
}

fn vm_assist(cmd: u64) -> i64 {
    hypercall(nr::VM_ASSIST, cmd, 2, 0, 0, 0)
}

/// `mov %rax, (%rdi)`.
fn store(ptr: u64, v: u64) {
    SKIP.store(3, SeqCst);
    // SAFETY: a store to the guest's own (read-only) L1: emulated or a #PF that is skipped.
    unsafe { asm!("mov qword ptr [rdi], rax", in("rdi") ptr, in("rax") v, options(nostack)) };
}

/// `xchg %rax, (%rdi)`; returns RAX afterwards.
fn xchg(ptr: u64, v: u64) -> u64 {
    SKIP.store(3, SeqCst);
    let out: u64;
    // SAFETY: as in `store`.
    unsafe {
        asm!("xchg qword ptr [rdi], rax", in("rdi") ptr, inout("rax") v => out, options(nostack))
    };
    out
}

/// `lock cmpxchg %rdx, (%rdi)` with RAX = `expect`; returns (ZF, RAX afterwards).
fn cmpxchg(ptr: u64, expect: u64, new: u64) -> (bool, u64) {
    SKIP.store(5, SeqCst);
    let (out, zf): (u64, u8);
    // SAFETY: as in `store`.
    unsafe {
        asm!("lock cmpxchg qword ptr [rdi], rdx", "setz {zf}", in("rdi") ptr, in("rdx") new,
             inout("rax") expect => out, zf = out(reg_byte) zf, options(nostack));
    }
    (zf == 1, out)
}

/// `lock btr $1, (%rdi)` (clear RW); returns CF.
fn btr_rw(ptr: u64) -> bool {
    SKIP.store(6, SeqCst);
    let cf: u8;
    // SAFETY: as in `store`.
    unsafe {
        asm!("lock btr qword ptr [rdi], 1", "setc {cf}", in("rdi") ptr, cf = out(reg_byte) cf,
             options(nostack));
    }
    cf == 1
}

fn scratch_word() -> Option<u64> {
    SKIP.store(3, SeqCst); // mov (%rax), %rax
    let before = PF.load(SeqCst);
    let v: u64;
    // SAFETY: reads the scratch page; a #PF (unmapped) is skipped.
    unsafe { asm!("mov rax, qword ptr [rax]", inout("rax") SCRATCH => v, options(nostack)) };
    (PF.load(SeqCst) == before).then_some(v)
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    let Some(l1e) = l1e_maddr(si, SCRATCH) else {
        return Verdict::Error("no L1 for the scratch page");
    };
    // The bootstrap tables are mapped read-only at VA = PFN * 4096 (VIRT_BASE 0).
    let entry_va = (m2p(l1e >> 12) << 12) | (l1e & 0xfff);
    let data_mfn = pfn_to_mfn(si, DATA.0.as_ptr() as u64 >> 12);
    DATA.0[0].store(0x5eed, SeqCst);

    // Linux enables the assist first (Xen 4.17 emulates these stores even without it).
    check!(failed, vm_assist(0) == 0, "enable writable_pagetables");
    store(entry_va, (data_mfn << 12) | RW);
    check!(
        failed,
        PF.load(SeqCst) == 0 && scratch_word() == Some(0x5eed),
        "MOV of a PTE: {} #PF, scratch reads {:x?}",
        PF.load(SeqCst),
        scratch_word()
    );

    // CMPXCHG with the wrong expected value fails and returns the entry; with the right one
    // it installs the new entry.
    let (zf, seen) = cmpxchg(entry_va, 0, (data_mfn << 12) | RW);
    check!(
        failed,
        !zf && seen & !0x140 == (data_mfn << 12) | RW,
        "failed CMPXCHG returned {seen:#x}"
    );
    let (zf, _) = cmpxchg(entry_va, seen, seen & !2);
    check!(failed, zf, "CMPXCHG to read-only");
    let (zf, _) = cmpxchg(entry_va, seen & !2, seen);
    check!(failed, zf, "CMPXCHG back to writable");

    // BTR of RW reports the old bit; XCHG with 0 unmaps and returns the old entry.
    check!(failed, btr_rw(entry_va), "BTR saw RW clear");
    check!(failed, !btr_rw(entry_va), "BTR saw RW set twice");
    let old = xchg(entry_va, 0);
    // As on hardware, a changed entry needs a TLB flush before the old translation is gone.
    let flush = MmuextOp {
        cmd: ext::INVLPG_LOCAL,
        _pad: 0,
        arg1: SCRATCH,
        arg2: 0,
    };
    check!(
        failed,
        hypercall(
            nr::MMUEXT_OP,
            &flush as *const MmuextOp as u64,
            1,
            0,
            0x7ff0,
            0
        ) == 0,
        "INVLPG_LOCAL"
    );
    check!(
        failed,
        old & !0x140 == (data_mfn << 12) | (RW & !2),
        "XCHG returned {old:#x}"
    );
    let pf = PF.load(SeqCst);
    check!(
        failed,
        scratch_word().is_none() && PF.load(SeqCst) == pf + 1,
        "unmapped scratch readable"
    );

    // A forbidden entry (the L1 mapping itself writable) is refused: #PF for the guest.
    let pf = PF.load(SeqCst);
    store(entry_va, (l1e & !0xfff) | RW);
    check!(
        failed,
        PF.load(SeqCst) == pf + 1,
        "writable self-mapping of an L1 accepted"
    );
    check!(
        failed,
        xchg(entry_va, 0) == 0,
        "refused store changed the entry"
    );
    if failed {
        Verdict::Failure("writable page tables")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
