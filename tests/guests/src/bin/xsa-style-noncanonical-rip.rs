//! Instructions that the hypervisor emulates, placed so that they end exactly at the canonical
//! boundary 0x0000_8000_0000_0000: the forced-emulation CPUID (`ud2; "xen"; cpuid`), a
//! privileged `mov %cr0, %rax` (emulated from #GP), a store to an L1 page table (emulated
//! as a writable page table), and a hypercall's SYSCALL. After each, the guest's RIP is non-canonical, and the hypervisor's
//! IRETQ back to the guest faults. Before the fix that #GP was taken in Hestia with the guest's
//! GS base live and stopped the machine. Xen 4.17 turns the faulting IRET into a #GP(0) for the
//! guest at RIP 0x0000_8000_0000_0000 (its pre-exception fix-up of `iret_exit_to_guest`), which
//! is what this test expects; the guest's handler then resumes it.
//!
//! The guest maps its last user page, 0x7fff_ffff_f000, through new L3, L2 and L1 tables
//! hooked into L4 slot 255.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::mmu::{MmuUpdate, update, uvmf};
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{ExcFrame, Verdict, check, hypercall, install_traps, pfn_to_mfn, println};

/// The last page of the lower canonical half.
const TOP_PAGE: u64 = 0x7fff_ffff_f000;
/// The first non-canonical address.
const BOUNDARY: u64 = 0x0000_8000_0000_0000;
/// Present, writable, user, accessed.
const RW: u64 = 0x27;
/// Present, user, accessed.
const RO: u64 = 0x25;
/// Scratch frames in the padding of the initial mapping: L3, L2, L1, code.
const PFN_L3: u64 = 0x3f0;
const PFN_L2: u64 = 0x3f1;
const PFN_L1: u64 = 0x3f2;
const PFN_CODE: u64 = 0x3f3;

/// `ud2; .ascii "xen"; cpuid`.
const FORCED_CPUID: &[u8] = &[0x0f, 0x0b, b'x', b'e', b'n', 0x0f, 0xa2];
/// `mov %cr0, %rax`.
const MOV_FROM_CR0: &[u8] = &[0x0f, 0x20, 0xc0];
/// `mov %rcx, (%rdx)`.
const STORE_RCX: &[u8] = &[0x48, 0x89, 0x0a];
/// `mov $17, %eax; syscall`: a hypercall (xen_version) whose return address is the boundary.
/// The return must not take SYSRETQ, which on Intel faults in ring 0 with the guest's stack
/// for a non-canonical RCX (CVE-2012-0217, XSA-7). QEMU's SYSRETQ does not fault in ring 0,
/// so here this case checks the guest's view only; `hestia_core::guest_exit`'s host tests
/// check that such a return never takes SYSRETQ.
const HYPERCALL: &[u8] = &[0xb8, 0x11, 0x00, 0x00, 0x00, 0x0f, 0x05];

static RECOVER: AtomicU64 = AtomicU64::new(0);
static BOUNDARY_FAULTS: AtomicU64 = AtomicU64::new(0);
static OTHER: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector == 13 && f.rip == BOUNDARY && f.error_code == 0 {
        BOUNDARY_FAULTS.fetch_add(1, SeqCst);
    } else {
        println!(
            "exception {vector} error {:#x} at {:#x}",
            f.error_code, f.rip
        );
        OTHER.fetch_add(1, SeqCst);
    }
    f.rip = RECOVER.load(SeqCst);
}

fn mmu_update(ptr: u64, val: u64) -> i64 {
    let req = MmuUpdate {
        ptr: ptr | update::NORMAL_PT_UPDATE,
        val,
    };
    hypercall(
        nr::MMU_UPDATE,
        &req as *const MmuUpdate as u64,
        1,
        0,
        u64::from(DOMID_SELF),
        0,
    )
}

fn uva(va: u64, val: u64) -> i64 {
    hypercall(nr::UPDATE_VA_MAPPING, va, val, uvmf::INVLPG, 0, 0)
}

/// Writes `insn` at the very end of the code page (through its writable alias) and runs it at
/// its alias in the top page; returns through the #GP handler.
fn run_at_boundary(insn: &[u8], rcx: u64, rdx: u64) {
    let alias = (PFN_CODE << 12) as *mut u8;
    let off = 4096 - insn.len();
    for (i, b) in insn.iter().enumerate() {
        // SAFETY: the code frame is mapped writable at its initial-mapping address.
        unsafe { alias.add(off + i).write_volatile(*b) };
    }
    let entry = TOP_PAGE + off as u64;
    // SAFETY: jumps to the instruction; the guest's #GP handler resumes at label 2 with this
    // stack. RBX is LLVM's and CPUID writes it, so it is kept on the stack.
    unsafe {
        asm!("push %rbx", "lea 2f(%rip), %rax", "mov %rax, (%rsi)", "jmp *%rdi", "2:", "pop %rbx",
             in("rsi") RECOVER.as_ptr(), in("rdi") entry, inout("rcx") rcx => _,
             inout("rdx") rdx => _, out("rax") _, options(att_syntax))
    };
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    // Writable page tables, for the store to the L1.
    check!(
        failed,
        hypercall(nr::VM_ASSIST, 0, 2, 0, 0, 0) == 0,
        "enable writable_pagetables"
    );
    for pfn in [PFN_L3, PFN_L2, PFN_L1, PFN_CODE] {
        // SAFETY: scratch frames of the initial mapping, mapped writable.
        unsafe { core::ptr::write_bytes((pfn << 12) as *mut u8, 0xcc, 4096) };
    }
    for pfn in [PFN_L3, PFN_L2, PFN_L1] {
        // SAFETY: as above; page tables start empty.
        unsafe { core::ptr::write_bytes((pfn << 12) as *mut u8, 0, 4096) };
    }
    let mfn = |pfn| pfn_to_mfn(si, pfn);
    // SAFETY: as above; the last entry of each table leads to the top page.
    unsafe {
        ((PFN_L3 << 12) as *mut u64)
            .add(511)
            .write_volatile((mfn(PFN_L2) << 12) | RW);
        ((PFN_L2 << 12) as *mut u64)
            .add(511)
            .write_volatile((mfn(PFN_L1) << 12) | RW);
        ((PFN_L1 << 12) as *mut u64)
            .add(511)
            .write_volatile((mfn(PFN_CODE) << 12) | RO);
    }
    for pfn in [PFN_L3, PFN_L2, PFN_L1] {
        let r = uva(pfn << 12, (mfn(pfn) << 12) | RO);
        check!(failed, r == 0, "read-only alias of pfn {pfn:#x}: {r}");
    }
    let l4 = mfn(si.pt_base >> 12) << 12;
    let r = mmu_update(l4 + 255 * 8, (mfn(PFN_L3) << 12) | RW);
    check!(failed, r == 0, "hooking the L3 into L4 slot 255: {r}");
    if failed {
        return Verdict::Error("cannot map the top page");
    }
    // SAFETY: the top page now maps the code frame (filled with int3 but for what is placed).
    let mapped = unsafe { core::ptr::read_volatile((TOP_PAGE + 4095) as *const u8) };
    check!(failed, mapped == 0xcc, "top page reads {mapped:#x}");

    run_at_boundary(FORCED_CPUID, 0, 0);
    run_at_boundary(MOV_FROM_CR0, 0, 0);
    run_at_boundary(STORE_RCX, 0, PFN_L1 << 12);
    run_at_boundary(HYPERCALL, 0, 0);
    let n = BOUNDARY_FAULTS.load(SeqCst);
    check!(
        failed,
        n == 4,
        "{n} of 4 instructions (3 emulated, a hypercall) gave #GP(0) at the boundary"
    );
    check!(
        failed,
        OTHER.load(SeqCst) == 0,
        "{} other exceptions",
        OTHER.load(SeqCst)
    );
    let v = hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0);
    check!(failed, v > 0, "xen_version afterwards: {v}");
    if failed {
        Verdict::Failure("emulation ending at the canonical boundary")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
