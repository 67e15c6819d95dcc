//! A second vCPU: `VCPUOP_is_up`/`initialise`/`up`/`down` and their errors, then TLB
//! shootdown. vCPU 1 keeps reading a scratch page while vCPU 0 remaps it with each remote
//! flush the ABI offers (UVMF_ALL, a vCPU mask in the flags, MMUEXT_*_MULTI and *_ALL); after
//! each, vCPU 1 must see the new frame at once, and after an unmap it must fault: a stale
//! translation on another CPU would keep a frame reachable after the guest gave it up. Finally
//! vCPU 1 takes itself down and vCPU 0 brings it back, where it continues after its call; then
//! vCPU 0 takes vCPU 1 down while it spins, and brings it back.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::mmu::{MmuextOp, ext, uvmf};
use hestia_guests::xen_abi::vcpu::cmd as vcpuop;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    ExcFrame, Verdict, check, hypercall, install_traps, map_shared_info, pfn_to_mfn, println,
    secondary_vcpu_context, system_time_ns,
};

const ENOENT: i64 = -2;
const EINVAL: i64 = -22;
const EEXIST: i64 = -17;
/// Present, writable, user, accessed.
const RW: u64 = 0x27;
/// The page vCPU 1 reads: in the padding of the initial mapping, below shared_info's.
const SCRATCH: u64 = 0x3fe000;
/// What vCPU 1 records when its read faulted.
const FAULTED: u64 = 0xdead;
/// The phase in which vCPU 1 goes down.
const PHASE_DOWN: u64 = 7;
/// The phase in which vCPU 1 spins, counting, and vCPU 0 takes it down.
const PHASE_SPIN: u64 = 8;

#[repr(C, align(4096))]
struct Page([u64; 512]);
static A: Page = Page([0xaaaa; 512]);
static B: Page = Page([0xbbbb; 512]);

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACK: Stack = Stack([0; 16384]);

/// Set by vCPU 0 after each change; vCPU 1 answers with what it read in `SEEN` and `ACK`.
static PHASE: AtomicU64 = AtomicU64::new(0);
static ACK: AtomicU64 = AtomicU64::new(0);
static SEEN: AtomicU64 = AtomicU64::new(0);
static READS: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicU64 = AtomicU64::new(0);
static DOWN_RESULT: AtomicU64 = AtomicU64::new(u64::MAX);
static SPINS: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector == 14 {
        FAULTS.fetch_add(1, SeqCst);
        f.rip += 3; // the probe's `mov (%rsi), %rax`
        return;
    }
    println!("unexpected exception {vector} at {:#x}", f.rip);
}

/// Reads the scratch page's first word, or [`FAULTED`].
fn probe() -> u64 {
    let v: u64;
    // SAFETY: a read of the scratch VA; a fault is handled by skipping the 3-byte load, which
    // leaves the sentinel in RAX.
    unsafe {
        core::arch::asm!("mov ${f}, %rax", "mov (%rsi), %rax", f = const FAULTED, in("rsi") SCRATCH, out("rax") v, options(att_syntax, nostack))
    };
    v
}

extern "C" fn secondary() -> ! {
    let mut answered = 0;
    loop {
        let phase = PHASE.load(SeqCst);
        if phase == answered {
            // Keep the translation hot while vCPU 0 works; not in the phase before the unmap,
            // so no read meets the unmapped page before vCPU 0 says it is gone (however long
            // the host leaves vCPU 0's thread off its CPU meanwhile). The TLB keeps the
            // translation of the last probe.
            if phase < 5 {
                probe();
            }
            if phase == PHASE_SPIN {
                SPINS.fetch_add(1, SeqCst);
            }
            READS.fetch_add(1, SeqCst);
            continue;
        }
        if phase == PHASE_DOWN {
            let r = hypercall(nr::VCPU_OP, u64::from(vcpuop::DOWN), 1, 0, 0, 0);
            DOWN_RESULT.store(r as u64, SeqCst);
        } else {
            SEEN.store(probe(), SeqCst);
        }
        answered = phase;
        ACK.store(phase, SeqCst);
    }
}

fn vcpu_op(cmd: u32, vcpu: u64, arg: u64) -> i64 {
    hypercall(nr::VCPU_OP, u64::from(cmd), vcpu, arg, 0, 0)
}

/// Spins until `done` holds, for at most two seconds.
fn wait(done: impl Fn() -> bool) -> bool {
    let end = system_time_ns() + 2_000_000_000;
    while !done() {
        if system_time_ns() > end {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn mmuext(cmd: u32, arg1: u64, mask: &u64) -> i64 {
    let op = MmuextOp {
        cmd,
        _pad: 0,
        arg1,
        arg2: mask as *const u64 as u64,
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

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "map shared_info");
    install_traps(handler);
    check!(failed, vcpu_op(vcpuop::IS_UP, 0, 0) == 1, "vCPU 0 is up");
    match vcpu_op(vcpuop::IS_UP, 1, 0) {
        0 => {}
        ENOENT => return Verdict::Skip("one vCPU"),
        r => {
            return Verdict::Failure(if r == 1 {
                "vCPU 1 up at boot"
            } else {
                "is_up(1)"
            });
        }
    }
    let r = vcpu_op(vcpuop::IS_UP, 4096, 0);
    check!(
        failed,
        r == ENOENT,
        "is_up of a vCPU that does not exist: {r}"
    );
    let r = vcpu_op(vcpuop::UP, 1, 0);
    check!(failed, r == EINVAL, "up before initialise: {r}");

    let page = |p: &Page| pfn_to_mfn(si, p.0.as_ptr() as u64 >> 12) << 12 | RW;
    let r = hypercall(nr::UPDATE_VA_MAPPING, SCRATCH, page(&A), uvmf::INVLPG, 0, 0);
    check!(failed, r == 0, "map A: {r}");

    let stack_top = (&raw const AP_STACK) as u64 + size_of::<Stack>() as u64;
    let mut ctx = secondary_vcpu_context(si, secondary, stack_top);
    ctx.user_regs.rip = 1 << 63;
    let r = vcpu_op(vcpuop::INITIALISE, 1, &ctx as *const _ as u64);
    check!(failed, r == EINVAL, "non-canonical RIP: {r}");
    let ctx = secondary_vcpu_context(si, secondary, stack_top);
    let r = vcpu_op(vcpuop::INITIALISE, 1, &ctx as *const _ as u64);
    if r != 0 {
        println!("initialise: {r}");
        return Verdict::Failure("VCPUOP_initialise");
    }
    let r = vcpu_op(vcpuop::INITIALISE, 1, &ctx as *const _ as u64);
    check!(failed, r == EEXIST, "second initialise: {r}");
    let r = vcpu_op(vcpuop::UP, 1, 0);
    check!(failed, r == 0, "up: {r}");
    check!(failed, vcpu_op(vcpuop::IS_UP, 1, 0) == 1, "is_up after up");
    if !wait(|| READS.load(SeqCst) > 1000) {
        return Verdict::Failure("vCPU 1 does not run");
    }

    // Each step remaps (or unmaps) SCRATCH and flushes remotely; vCPU 1 must see the change.
    let only_1 = 0b10u64;
    let both = 0b11u64;
    let steps: [(&str, u64, u64); 6] = [
        ("UVMF_INVLPG|UVMF_ALL", page(&B), 0xbbbb),
        ("MMUEXT_TLB_FLUSH_ALL", page(&A), 0xaaaa),
        ("MMUEXT_INVLPG_MULTI", page(&B), 0xbbbb),
        ("UVMF_TLB_FLUSH with a vCPU mask", page(&A), 0xaaaa),
        ("MMUEXT_TLB_FLUSH_MULTI", page(&B), 0xbbbb),
        ("unmap with UVMF_INVLPG|UVMF_ALL", 0, FAULTED),
    ];
    for (i, &(how, pte, want)) in steps.iter().enumerate() {
        let phase = i as u64 + 1;
        // Let vCPU 1 read the old mapping many times first.
        let before = READS.load(SeqCst);
        if !wait(|| READS.load(SeqCst) > before + 100) {
            return Verdict::Failure("vCPU 1 stopped");
        }
        let r = match phase {
            1 | 6 => hypercall(
                nr::UPDATE_VA_MAPPING,
                SCRATCH,
                pte,
                uvmf::INVLPG | uvmf::ALL,
                0,
                0,
            ),
            4 => hypercall(
                nr::UPDATE_VA_MAPPING,
                SCRATCH,
                pte,
                uvmf::TLB_FLUSH | &both as *const u64 as u64,
                0,
                0,
            ),
            _ => {
                let r = hypercall(nr::UPDATE_VA_MAPPING, SCRATCH, pte, uvmf::NONE, 0, 0);
                let flush = match phase {
                    2 => mmuext(ext::TLB_FLUSH_ALL, 0, &only_1),
                    3 => mmuext(ext::INVLPG_MULTI, SCRATCH, &only_1),
                    _ => mmuext(ext::TLB_FLUSH_MULTI, 0, &only_1),
                };
                if r == 0 { flush } else { r }
            }
        };
        check!(failed, r == 0, "{how}: {r}");
        PHASE.store(phase, SeqCst);
        if !wait(|| ACK.load(SeqCst) == phase) {
            return Verdict::Failure("vCPU 1 did not answer");
        }
        let seen = SEEN.load(SeqCst);
        check!(
            failed,
            seen == want,
            "after {how} vCPU 1 read {seen:#x}, not {want:#x}"
        );
    }
    let faults = FAULTS.load(SeqCst);
    check!(failed, faults == 1, "{faults} faults on vCPU 1");

    // vCPU 1 takes itself down; up again, it returns from its VCPUOP_down.
    PHASE.store(PHASE_DOWN, SeqCst);
    check!(
        failed,
        wait(|| vcpu_op(vcpuop::IS_UP, 1, 0) == 0),
        "vCPU 1 never went down"
    );
    check!(
        failed,
        ACK.load(SeqCst) != PHASE_DOWN,
        "VCPUOP_down returned while down"
    );
    let r = vcpu_op(vcpuop::UP, 1, 0);
    check!(failed, r == 0, "up again: {r}");
    check!(
        failed,
        wait(|| ACK.load(SeqCst) == PHASE_DOWN),
        "vCPU 1 did not continue after up"
    );
    let r = DOWN_RESULT.load(SeqCst) as i64;
    check!(failed, r == 0, "VCPUOP_down returned {r}");

    // vCPU 0 takes vCPU 1 down while it spins (Xen allows any vCPU of the domain): its
    // counter stops; up again, it counts on.
    PHASE.store(PHASE_SPIN, SeqCst);
    check!(
        failed,
        wait(|| SPINS.load(SeqCst) > 1000),
        "vCPU 1 does not spin"
    );
    let r = vcpu_op(vcpuop::DOWN, 1, 0);
    check!(failed, r == 0, "VCPUOP_down of vCPU 1 from vCPU 0: {r}");
    check!(
        failed,
        vcpu_op(vcpuop::IS_UP, 1, 0) == 0,
        "vCPU 1 is still up"
    );
    let settle = system_time_ns() + 20_000_000;
    while system_time_ns() < settle {}
    let stopped_at = SPINS.load(SeqCst);
    let later = system_time_ns() + 100_000_000;
    while system_time_ns() < later {}
    let after = SPINS.load(SeqCst);
    check!(
        failed,
        after == stopped_at,
        "vCPU 1 ran on while down ({stopped_at} -> {after})"
    );
    let r = vcpu_op(vcpuop::UP, 1, 0);
    check!(failed, r == 0, "up of vCPU 1 again: {r}");
    check!(
        failed,
        wait(|| SPINS.load(SeqCst) > after),
        "vCPU 1 did not spin on after up"
    );

    if failed {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
