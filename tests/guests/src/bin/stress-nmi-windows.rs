//! Remote TLB flushes arrive as NMIs, which land anywhere in Hestia, including the few
//! instructions where another GS base is live: around the entry and exit SWAPGS, and while
//! Hestia loads a guest's %gs selector for `set_segment_base(SEGBASE_GS_USER_SEL)`. vCPU 1
//! keeps Hestia inside those windows (that hypercall and null hypercalls, back to back) while
//! vCPU 0 sends it 20,000 remote flushes. Hestia must survive every one of them (an NMI that
//! trusted the live GS base used to crash it), and vCPU 1 must keep running.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::mmu::uvmf;
use hestia_guests::xen_abi::vcpu::cmd as vcpuop;
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, hypercall, map_shared_info, pfn_to_mfn, println, secondary_vcpu_context,
    system_time_ns,
};

const SEGBASE_GS_USER_SEL: u64 = 3;
const XENVER_VERSION: u64 = 0;
/// Present, writable, user, accessed.
const RW: u64 = 0x27;
const SCRATCH: u64 = 0x3fe000;
const FLUSHES: u64 = 20_000;

#[repr(C, align(4096))]
struct Page([u64; 512]);
static PAGE: Page = Page([0; 512]);

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACK: Stack = Stack([0; 16384]);

static LOOPS: AtomicU64 = AtomicU64::new(0);
static FAILED_CALLS: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn secondary() -> ! {
    loop {
        if !STOP.load(SeqCst) {
            let r = hypercall(nr::SET_SEGMENT_BASE, SEGBASE_GS_USER_SEL, 0, 0, 0, 0);
            let v = hypercall(nr::XEN_VERSION, XENVER_VERSION, 0, 0, 0, 0);
            if r != 0 || v <= 0 {
                FAILED_CALLS.fetch_add(1, SeqCst);
            }
        }
        LOOPS.fetch_add(1, SeqCst);
    }
}

fn vcpu_op(cmd: u32, vcpu: u64, arg: u64) -> i64 {
    hypercall(nr::VCPU_OP, u64::from(cmd), vcpu, arg, 0, 0)
}

fn wait_loops(past: u64) -> bool {
    let end = system_time_ns() + 2_000_000_000;
    while LOOPS.load(SeqCst) <= past {
        if system_time_ns() > end {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "map shared_info");
    match vcpu_op(vcpuop::IS_UP, 1, 0) {
        0 => {}
        -2 => return Verdict::Skip("one vCPU"),
        _ => return Verdict::Failure("is_up(1)"),
    }
    let stack_top = (&raw const AP_STACK) as u64 + size_of::<Stack>() as u64;
    let ctx = secondary_vcpu_context(si, secondary, stack_top);
    if vcpu_op(vcpuop::INITIALISE, 1, &ctx as *const _ as u64) != 0
        || vcpu_op(vcpuop::UP, 1, 0) != 0
    {
        return Verdict::Failure("bringing vCPU 1 up");
    }
    if !wait_loops(100) {
        return Verdict::Failure("vCPU 1 does not run");
    }
    let pte = pfn_to_mfn(si, PAGE.0.as_ptr() as u64 >> 12) << 12 | RW;
    let start = system_time_ns();
    for i in 0..FLUSHES {
        let r = hypercall(
            nr::UPDATE_VA_MAPPING,
            SCRATCH,
            if i % 2 == 0 { pte } else { 0 },
            uvmf::INVLPG | uvmf::ALL,
            0,
            0,
        );
        if r != 0 {
            println!("flush {i}: {r}");
            return Verdict::Failure("update_va_mapping");
        }
    }
    let ms = (system_time_ns() - start) / 1_000_000;
    let loops = LOOPS.load(SeqCst);
    println!("{FLUSHES} remote flushes in {ms} ms while vCPU 1 looped {loops} times");
    check!(failed, wait_loops(loops), "vCPU 1 stopped");
    STOP.store(true, SeqCst);
    let bad = FAILED_CALLS.load(SeqCst);
    check!(failed, bad == 0, "{bad} hypercalls of vCPU 1 failed");
    if failed {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
