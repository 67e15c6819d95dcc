//! LDTs (`MMUEXT_SET_LDT`): argument checks; an LDT on a read-only page whose data descriptor
//! FS is loaded from (its base is what %fs: reads see); `update_descriptor` on a live LDT entry
//! taking effect at the next load and refusing a TSS descriptor; #GP for a selector past the LDT's
//! end and with no LDT; an LDT page still mapped writable faulting as Xen reports it (#PF at the
//! LDT address) until the guest makes it read-only; the pages' references dropped with the LDT.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::mmu::{MmuextOp, ext, uvmf};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    ExcFrame, Verdict, check, hypercall, install_traps, map_shared_info, pfn_to_mfn, shared_word,
};

const EINVAL: i64 = -22;
/// Present, writable, user, accessed.
const RW: u64 = 0x27;
/// Present, user, accessed.
const RO: u64 = 0x25;

/// A page-aligned page for an LDT.
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u64; 512]>);
// SAFETY: one vCPU; written only before the page becomes a descriptor page.
unsafe impl Sync for Page {}
static LDT_A: Page = Page(UnsafeCell::new([0; 512]));
static LDT_B: Page = Page(UnsafeCell::new([0; 512]));

static VALUE_A: u64 = 0x1111_2222_3333_4444;
static VALUE_B: u64 = 0x5555_6666_7777_8888;

static FAULTS: AtomicU64 = AtomicU64::new(0);
static LAST: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// Records the fault and skips the faulting 2-byte `mov %ax, %fs`.
fn handler(vector: u64, f: &mut ExcFrame) {
    FAULTS.fetch_add(1, SeqCst);
    LAST[0].store(vector, SeqCst);
    LAST[1].store(f.error_code, SeqCst);
    LAST[2].store(shared_word(16).load(SeqCst), SeqCst); // vcpu_info[0].arch.cr2
    f.rip += 2;
}

/// A flat-limit read/write data descriptor with base `base` (below 4 GiB), written with DPL 0
/// as a kernel would (the hypervisor makes it DPL 3).
fn data_desc(base: u64) -> u64 {
    0xffff | (base & 0xff_ffff) << 16 | 0x93 << 40 | 0xf << 48 | 0xc << 52 | (base >> 24) << 56
}

/// Loads FS with `sel`; the handler skips the load if it faults.
fn load_fs(sel: u16) {
    // SAFETY: a segment load; a fault is caught by the handler, which skips the instruction.
    unsafe { core::arch::asm!("mov %ax, %fs", in("ax") sel, options(att_syntax, nostack)) };
}

fn read_fs0() -> u64 {
    let v: u64;
    // SAFETY: FS was just loaded with a descriptor whose base is a readable static.
    unsafe { core::arch::asm!("mov %fs:0, {}", out(reg) v, options(att_syntax, nostack)) };
    v
}

fn set_ldt(base: u64, ents: u64) -> i64 {
    let op = MmuextOp {
        cmd: ext::SET_LDT,
        _pad: 0,
        arg1: base,
        arg2: ents,
    };
    hypercall(
        nr::MMUEXT_OP,
        &op as *const MmuextOp as u64,
        1,
        0,
        u64::from(DOMID_SELF),
        0,
    )
}

fn remap(si: &StartInfo, va: u64, flags: u64) -> i64 {
    let mfn = pfn_to_mfn(si, va >> 12);
    hypercall(
        nr::UPDATE_VA_MAPPING,
        va,
        (mfn << 12) | flags,
        uvmf::INVLPG,
        0,
        0,
    )
}

/// A fault since `before`: (vector, error code, CR2).
fn fault_since(before: u64) -> Option<(u64, u64, u64)> {
    (FAULTS.load(SeqCst) > before).then(|| {
        (
            LAST[0].load(SeqCst),
            LAST[1].load(SeqCst),
            LAST[2].load(SeqCst),
        )
    })
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
    let (a, b) = (LDT_A.0.get() as u64, LDT_B.0.get() as u64);
    let (va, vb) = (&VALUE_A as *const u64 as u64, &VALUE_B as *const u64 as u64);

    // 1. Arguments.
    check!(failed, set_ldt(a + 8, 3) == EINVAL, "a misaligned LDT base");
    check!(failed, set_ldt(a, 8193) == EINVAL, "8193 LDT entries");
    check!(
        failed,
        set_ldt(0xffff_8000_0000_0000, 3) == EINVAL,
        "an LDT in the hypervisor's range"
    );

    // 2. An LDT on a read-only page: FS from its entry 1 reads VALUE_A.
    // SAFETY: the page is still writable and nothing else uses it.
    unsafe { (*LDT_A.0.get())[1] = data_desc(va) };
    check!(
        failed,
        remap(si, a, RO) == 0,
        "making the LDT page read-only"
    );
    check!(failed, set_ldt(a, 3) == 0, "set_ldt(3 entries)");
    let before = FAULTS.load(SeqCst);
    load_fs(0x0f);
    check!(
        failed,
        fault_since(before).is_none(),
        "loading FS from LDT entry 1: {:x?}",
        fault_since(before)
    );
    let got = read_fs0();
    check!(failed, got == VALUE_A, "%fs:0 read {got:#x}, not VALUE_A");

    // 3. update_descriptor on the live LDT: the next load sees the new base; a TSS descriptor
    //    is refused.
    let maddr = pfn_to_mfn(si, a >> 12) << 12;
    let r = hypercall(nr::UPDATE_DESCRIPTOR, maddr + 8, data_desc(vb), 0, 0, 0);
    check!(failed, r == 0, "update_descriptor(entry 1): {r}");
    load_fs(0x0f);
    let got = read_fs0();
    check!(
        failed,
        got == VALUE_B,
        "after update_descriptor %fs:0 read {got:#x}"
    );
    let tss = (1u64 << 47) | (0x9 << 40) | 0x67;
    let r = hypercall(nr::UPDATE_DESCRIPTOR, maddr + 16, tss, 0, 0, 0);
    check!(failed, r == EINVAL, "a TSS descriptor in the LDT: {r}");

    // 4. Past the LDT's end: #GP(selector).
    let before = FAULTS.load(SeqCst);
    load_fs(0x2f);
    check!(
        failed,
        fault_since(before).is_some_and(|(v, e, _)| v == 13 && e == 0x2c),
        "LDT entry 5 of 3: {:x?}",
        fault_since(before)
    );

    // 5. An LDT on a page still mapped writable: #PF at the entry's LDT address until the page
    //    is made read-only.
    // SAFETY: the page is writable and nothing else uses it.
    unsafe { (*LDT_B.0.get())[1] = data_desc(va) };
    check!(failed, set_ldt(b, 2) == 0, "set_ldt on a writable page");
    let before = FAULTS.load(SeqCst);
    load_fs(0x0f);
    check!(
        failed,
        fault_since(before).is_some_and(|(v, _, cr2)| v == 14 && cr2 == b + 8),
        "a selector of a writable LDT page: {:x?}",
        fault_since(before)
    );
    check!(
        failed,
        remap(si, b, RO) == 0,
        "making the second LDT page read-only"
    );
    let before = FAULTS.load(SeqCst);
    load_fs(0x0f);
    check!(
        failed,
        fault_since(before).is_none(),
        "after making it read-only: {:x?}",
        fault_since(before)
    );
    let got = read_fs0();
    check!(
        failed,
        got == VALUE_A,
        "%fs:0 through the second LDT read {got:#x}"
    );
    check!(
        failed,
        remap(si, a, RW) == 0,
        "the first LDT page, no longer the LDT, cannot be made writable again"
    );

    // 6. No LDT: #GP(selector); the page is released.
    load_fs(0);
    check!(failed, set_ldt(0, 0) == 0, "set_ldt(0, 0)");
    let before = FAULTS.load(SeqCst);
    load_fs(0x0f);
    check!(
        failed,
        fault_since(before).is_some_and(|(v, e, _)| v == 13 && e == 0x0c),
        "an LDT selector with no LDT: {:x?}",
        fault_since(before)
    );
    check!(
        failed,
        remap(si, b, RW) == 0,
        "the released LDT page cannot be made writable"
    );

    if failed {
        Verdict::Failure("LDT")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
