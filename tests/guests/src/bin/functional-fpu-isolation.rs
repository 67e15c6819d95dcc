//! FPU state is per vCPU and survives every way into the hypervisor: two vCPUs each load their
//! own pattern into XMM0-15, MXCSR and the x87 stack, then spend many rounds in hypercalls,
//! one-shot timer upcalls and remote TLB shootdowns (NMIs on the other CPU); after every round
//! each must find exactly its own state. A hypervisor that used the FPU itself, or switched or
//! restored the wrong vCPU's state, fails here.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::event_channel::{BindVirq, cmd as evtchn};
use hestia_guests::xen_abi::mmu::uvmf;
use hestia_guests::xen_abi::vcpu::cmd as vcpuop;
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr, virq};
use hestia_guests::{
    EVENT_VECTOR, ExcFrame, Verdict, ack_events, check, event_channel_op, hypercall, install_traps,
    map_shared_info, pfn_to_mfn, println, register_event_callback, secondary_vcpu_context,
    shared_byte, system_time_ns,
};

/// Rounds each vCPU runs.
const ROUNDS: u64 = 300;
/// A scratch page vCPU 1 remaps with remote flushes.
const SCRATCH: u64 = 0x3fe000;
/// Present, writable, user, accessed.
const RW: u64 = 0x27;

/// XMM0-15 (256 bytes), then MXCSR and the x87 top of stack, as stored by [`save`].
#[repr(C, align(16))]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FpuState {
    xmm: [u64; 32],
    mxcsr: u32,
    _pad: u32,
    st0: u64,
}

impl FpuState {
    fn pattern(seed: u64) -> Self {
        let mut xmm = [0; 32];
        for (i, w) in xmm.iter_mut().enumerate() {
            *w = seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(i as u32)
                ^ i as u64;
        }
        FpuState {
            xmm,
            // Round toward zero (vCPU 0) or up (vCPU 1), all exceptions masked, DAZ/FTZ off.
            mxcsr: if seed == 1 { 0x7f80 } else { 0x5f80 },
            _pad: 0,
            st0: f64::to_bits(seed as f64 + 0.25),
        }
    }
}

/// Loads `s` into the vCPU's SSE and x87 registers.
fn load(s: &FpuState) {
    // SAFETY: reads 16-byte aligned XMM values, a valid MXCSR and one double from `s`; this
    // soft-float guest never uses those registers itself.
    unsafe {
        core::arch::asm!(
            "movdqa 0x00({p}), %xmm0", "movdqa 0x10({p}), %xmm1", "movdqa 0x20({p}), %xmm2",
            "movdqa 0x30({p}), %xmm3", "movdqa 0x40({p}), %xmm4", "movdqa 0x50({p}), %xmm5",
            "movdqa 0x60({p}), %xmm6", "movdqa 0x70({p}), %xmm7", "movdqa 0x80({p}), %xmm8",
            "movdqa 0x90({p}), %xmm9", "movdqa 0xa0({p}), %xmm10", "movdqa 0xb0({p}), %xmm11",
            "movdqa 0xc0({p}), %xmm12", "movdqa 0xd0({p}), %xmm13", "movdqa 0xe0({p}), %xmm14",
            "movdqa 0xf0({p}), %xmm15",
            "ldmxcsr 0x100({p})",
            "fninit",
            "fldl 0x108({p})",
            p = in(reg) s, options(att_syntax, nostack)
        )
    };
}

/// Reads the vCPU's SSE and x87 registers back (popping the x87 value).
fn save() -> FpuState {
    let mut s = FpuState::pattern(0);
    // SAFETY: writes 16-byte aligned slots of `s`, its MXCSR and one double.
    unsafe {
        core::arch::asm!(
            "movdqa %xmm0, 0x00({p})", "movdqa %xmm1, 0x10({p})", "movdqa %xmm2, 0x20({p})",
            "movdqa %xmm3, 0x30({p})", "movdqa %xmm4, 0x40({p})", "movdqa %xmm5, 0x50({p})",
            "movdqa %xmm6, 0x60({p})", "movdqa %xmm7, 0x70({p})", "movdqa %xmm8, 0x80({p})",
            "movdqa %xmm9, 0x90({p})", "movdqa %xmm10, 0xa0({p})", "movdqa %xmm11, 0xb0({p})",
            "movdqa %xmm12, 0xc0({p})", "movdqa %xmm13, 0xd0({p})", "movdqa %xmm14, 0xe0({p})",
            "movdqa %xmm15, 0xf0({p})",
            "stmxcsr 0x100({p})",
            "fstpl 0x108({p})",
            p = in(reg) &mut s, options(att_syntax, nostack)
        )
    };
    s
}

static EVENTS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static BAD: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static DONE: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static SCRATCH_PTE: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Acknowledges every pending event (only vCPU 0's timer is bound).
fn handler(vector: u64, f: &mut ExcFrame) {
    if vector != EVENT_VECTOR {
        println!("unexpected exception {vector} at {:#x}", f.rip);
        return;
    }
    // The vCPU is told apart by its stack: vCPU 1 runs on AP_STACK.
    let me = usize::from(is_vcpu1(f.rsp));
    EVENTS[me].fetch_add(1, SeqCst);
    ack_events(me as u64);
}

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACK: Stack = Stack([0; 16384]);

fn is_vcpu1(rsp: u64) -> bool {
    let base = (&raw const AP_STACK) as u64;
    (base..base + size_of::<Stack>() as u64).contains(&rsp)
}

/// One vCPU's rounds: its state must come back unchanged after each.
fn rounds(me: usize) {
    let want = FpuState::pattern(me as u64 + 1);
    for round in 0..ROUNDS {
        load(&want);
        hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0);
        if me == 0 && round % 10 == 0 {
            // Yield until a one-shot timer 200 us away has interrupted this vCPU with an upcall.
            let seen = EVENTS[0].load(SeqCst);
            let deadline = [system_time_ns() + 200_000, 0]; // vcpu_set_singleshot_timer
            hypercall(nr::VCPU_OP, 8, 0, deadline.as_ptr() as u64, 0, 0);
            while EVENTS[0].load(SeqCst) == seen && system_time_ns() < deadline[0] + 50_000_000 {
                hypercall(nr::SCHED_OP, 0, 0, 0, 0, 0); // SCHEDOP_yield
            }
        }
        if me == 1 {
            // A remote flush of both vCPUs: an NMI on vCPU 0's CPU, wherever it is.
            let pte = SCRATCH_PTE[(round % 2) as usize].load(SeqCst);
            hypercall(
                nr::UPDATE_VA_MAPPING,
                SCRATCH,
                pte,
                uvmf::INVLPG | uvmf::ALL,
                0,
                0,
            );
        }
        let got = save();
        if got != want && BAD[me].fetch_add(1, SeqCst) == 0 {
            println!("vCPU {me} round {round}: FPU state changed: {got:x?}");
        }
    }
    DONE[me].store(1, SeqCst);
}

extern "C" fn secondary() -> ! {
    shared_byte(64 + 1).store(0, SeqCst); // unmask vCPU 1's events
    rounds(1);
    loop {
        hypercall(nr::SCHED_OP, 1, 0, 0, 0, 0); // SCHEDOP_block
    }
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
    let r = register_event_callback();
    check!(failed, r == 0, "event callback: {r}");
    for (i, slot) in SCRATCH_PTE.iter().enumerate() {
        slot.store(pfn_to_mfn(si, 0x3fd - i as u64) << 12 | RW, SeqCst);
    }
    // VIRQ_TIMER on vCPU 0 (its periodic 10 ms timer and ours).
    let mut bind = BindVirq {
        virq: virq::TIMER,
        ..BindVirq::default()
    };
    check!(
        failed,
        event_channel_op(evtchn::BIND_VIRQ, &mut bind) == 0,
        "bind_virq(TIMER)"
    );
    shared_byte(1).store(0, SeqCst); // unmask vCPU 0's events

    let stack_top = (&raw const AP_STACK) as u64 + size_of::<Stack>() as u64;
    let ctx = secondary_vcpu_context(si, secondary, stack_top);
    let r = hypercall(
        nr::VCPU_OP,
        u64::from(vcpuop::INITIALISE),
        1,
        &ctx as *const _ as u64,
        0,
        0,
    );
    if r != 0 {
        return Verdict::Skip("no second vCPU");
    }
    check!(
        failed,
        hypercall(nr::VCPU_OP, u64::from(vcpuop::UP), 1, 0, 0, 0) == 0,
        "up"
    );

    rounds(0);
    let t0 = system_time_ns();
    while DONE[1].load(SeqCst) == 0 && system_time_ns() - t0 < 30_000_000_000 {
        hypercall(nr::SCHED_OP, 0, 0, 0, 0, 0);
    }
    println!(
        "rounds done: vCPU 0 {}, vCPU 1 {}; upcalls {} / {}; mismatches {} / {}",
        DONE[0].load(SeqCst),
        DONE[1].load(SeqCst),
        EVENTS[0].load(SeqCst),
        EVENTS[1].load(SeqCst),
        BAD[0].load(SeqCst),
        BAD[1].load(SeqCst)
    );
    check!(failed, DONE[1].load(SeqCst) == 1, "vCPU 1 did not finish");
    check!(
        failed,
        BAD[0].load(SeqCst) == 0 && BAD[1].load(SeqCst) == 0,
        "FPU state leaked or was lost"
    );
    check!(failed, EVENTS[0].load(SeqCst) > 0, "vCPU 0 took no upcalls");
    if failed {
        Verdict::Failure("FPU isolation")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
