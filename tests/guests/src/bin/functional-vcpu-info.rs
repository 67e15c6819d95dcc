//! `VCPUOP_register_vcpu_info`: vCPU 0's vcpu_info moves into a guest page (contents copied,
//! every event marked pending so none is lost); events and time then arrive there, not in the
//! shared_info slot; a second registration or a foreign frame is -EINVAL, an offset past the
//! page or not 8-byte aligned -ENXIO, and another vCPU that is up -EINVAL (as Xen's
//! `map_vcpu_info`: only the caller's own or a vCPU that is down).
//!
//! Upcalls then follow the registered copy's pending and mask flags, never the old slot's:
//! with the new copy masked and the old slot pending and unmasked nothing arrives; unmasking
//! the new copy delivers the upcall at the next return from Hestia.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::event_channel::{BindIpi, Send, cmd as evtchn};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{
    EVENT_VECTOR, ExcFrame, Verdict, check, event_channel_op, hypercall, install_traps,
    map_shared_info, pfn_to_mfn, register_event_callback, shared_byte, start_vcpu, yield_now,
};

const ENXIO: i64 = -6;
const EFAULT: i64 = -14;
const EINVAL: i64 = -22;
const REGISTER_VCPU_INFO: u64 = 10;
/// Where in the page the test puts its vcpu_info.
const OFFSET: usize = 128;

#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);
static PAGE: Page = Page([const { AtomicU64::new(0) }; 512]);

fn byte(off: usize) -> &'static AtomicU8 {
    // SAFETY: PAGE is 4 KiB of atomics; `off` < 4096; byte views of it are plain memory.
    unsafe { &*((PAGE.0.as_ptr() as *const AtomicU8).add(off)) }
}

fn word(off: usize) -> u64 {
    PAGE.0[off / 8].load(SeqCst)
}

fn register(mfn: u64, offset: u64) -> i64 {
    register_for(0, mfn, offset)
}

fn register_for(vcpu: u64, mfn: u64, offset: u64) -> i64 {
    let arg = [mfn, offset];
    hypercall(
        nr::VCPU_OP,
        REGISTER_VCPU_INFO,
        vcpu,
        arg.as_ptr() as u64,
        0,
        0,
    )
}

static UPCALLS: AtomicU64 = AtomicU64::new(0);

fn handler(v: u64, _f: &mut ExcFrame) {
    if v == EVENT_VECTOR {
        UPCALLS.fetch_add(1, SeqCst);
        // Acknowledged in the registered copy, and in the old slot should Hestia wrongly
        // deliver from there (it would otherwise call the guest again and again).
        byte(OFFSET).store(0, SeqCst);
        shared_byte(0).store(0, SeqCst);
    }
}

#[repr(C, align(16))]
struct Stack([u8; 8192]);
static mut AP_STACK: Stack = Stack([0; 8192]);

/// vCPU 1: up and yielding, so that vCPU 0 cannot move its vcpu_info.
extern "C" fn idle_partner() -> ! {
    loop {
        yield_now();
    }
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "map shared_info");
    let mfn = pfn_to_mfn(si, PAGE.0.as_ptr() as u64 >> 12);

    let r = register(mfn, 4096 - 32);
    check!(failed, r == ENXIO, "offset past the page: {r}");
    let r = register(mfn, OFFSET as u64 + 4);
    check!(failed, r == ENXIO, "offset not 8-byte aligned: {r}");
    let stack_top = (&raw const AP_STACK) as u64 + 8192;
    check!(
        failed,
        start_vcpu(si, 1, idle_partner, stack_top),
        "start vCPU 1"
    );
    let r = register_for(1, mfn, 2 * OFFSET as u64);
    check!(failed, r == EINVAL, "another vCPU that is up: {r}");
    check!(
        failed,
        register(0, 0) == EINVAL,
        "a frame that is not the guest's"
    );
    let r = hypercall(
        nr::VCPU_OP,
        REGISTER_VCPU_INFO,
        0,
        0xffff_8000_0000_0000,
        0,
        0,
    );
    check!(failed, r == EFAULT, "argument in Hestia's range: {r}");

    check!(failed, register(mfn, OFFSET as u64) == 0, "register");
    check!(
        failed,
        byte(OFFSET).load(SeqCst) == 1 && word(OFFSET + 8) == u64::MAX,
        "after the move: pending {}, selector {:#x}",
        byte(OFFSET).load(SeqCst),
        word(OFFSET + 8)
    );
    check!(
        failed,
        byte(OFFSET + 1).load(SeqCst) == 1,
        "mask not copied"
    );
    // vcpu_time_info at +32: version even, a multiplier.
    // SAFETY: 4-byte aligned view of PAGE.
    let mul = unsafe { &*((PAGE.0.as_ptr() as *const AtomicU32).add((OFFSET + 32 + 24) / 4)) };
    check!(failed, mul.load(SeqCst) != 0, "time not copied");
    check!(failed, register(mfn, 0) == EINVAL, "second registration");

    // Events now land in the new vcpu_info.
    byte(OFFSET).store(0, SeqCst);
    PAGE.0[(OFFSET + 8) / 8].store(0, SeqCst);
    shared_byte(0).store(0, SeqCst);
    let mut ipi = BindIpi::default();
    check!(
        failed,
        event_channel_op(evtchn::BIND_IPI, &mut ipi) == 0,
        "bind_ipi"
    );
    let port = ipi.port;
    check!(
        failed,
        event_channel_op(evtchn::SEND, &mut Send { port }) == 0,
        "send"
    );
    check!(
        failed,
        byte(OFFSET).load(SeqCst) == 1 && word(OFFSET + 8) & (1 << (port / 64)) != 0,
        "event not in the registered vcpu_info"
    );
    check!(
        failed,
        shared_byte(0).load(SeqCst) == 0,
        "event still raised in the shared_info slot"
    );

    // Upcalls follow the registered copy: masked there, the old slot's pending and unmasked
    // flags deliver nothing.
    check!(failed, install_traps(handler) == 0, "set_trap_table");
    check!(failed, register_event_callback() == 0, "event callback");
    byte(OFFSET + 1).store(1, SeqCst);
    byte(OFFSET).store(1, SeqCst);
    shared_byte(1).store(0, SeqCst);
    shared_byte(0).store(1, SeqCst);
    yield_now();
    check!(
        failed,
        UPCALLS.load(SeqCst) == 0,
        "upcall delivered from the old shared_info slot"
    );
    // Unmasked in the registered copy (pending there): the next return delivers it.
    byte(OFFSET + 1).store(0, SeqCst);
    yield_now();
    check!(
        failed,
        UPCALLS.load(SeqCst) == 1,
        "{} upcalls once unmasked in the registered copy",
        UPCALLS.load(SeqCst)
    );
    byte(OFFSET + 1).store(1, SeqCst);

    if failed {
        Verdict::Failure("register_vcpu_info")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
