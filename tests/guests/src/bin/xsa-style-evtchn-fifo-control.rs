//! Hostile FIFO control blocks and event arrays; Xen 4.17 answers each the same way.
//! `init_control` and `expand_array` on frames that are not the domain's (machine frame 0, an
//! MFN past RAM) or are its page tables (its L4, an L1) are -EINVAL and leave the domain on
//! 2-level; offsets past the page or misaligned -EINVAL, vCPU ids out of range -ENOENT; a
//! control block at the last offset that fits works. A registered event-array page keeps a
//! writable type: once the guest unmaps it, it still cannot be pinned as a page table, until
//! `EVTCHNOP_reset` releases it. The event array takes 128 pages (the same frame again, and the
//! control block's frame, are allowed) and no more (-ENOSPC). Event words and the control
//! block written with nonsense (all bits, self-links, links past the array, BUSY left set,
//! garbage heads and ready bits) and, from a second vCPU, event words flipped without pause
//! while events are queued behind them: Hestia neither loops nor crashes, and events and the
//! 2-level ABI work again after the reset. `EVTCHNOP_reset` of another domain: -EPERM for an
//! unprivileged caller (XSM); -EINVAL for the control domain, as Xen for a domain its
//! controller did not pause (-ESRCH where there is no domain 1, as on the rig); dom0 then
//! waits for domain 1 to stop and go before it stops (and with it the machine). Run as dom0 and,
//! in a second scenario, at the same time as a domU.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::event_channel::{
    BindIpi, ExpandArray, InitControl, PortArg, Reset, SetPriority, Status, cmd,
};
use hestia_guests::xen_abi::mmu::{ext, uvmf};
use hestia_guests::xen_abi::sched::cmd as sched;
use hestia_guests::xen_abi::vcpu::cmd as vcpuop;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr, sif};
use hestia_guests::{
    Verdict, check, event_channel_op, hypercall, l1e_maddr, map_shared_info, mmuext_one,
    pfn_to_mfn, println, secondary_vcpu_context, shared_byte, shared_word, system_time_ns,
};

const EPERM: i64 = -1;
const ENOENT: i64 = -2;
const ESRCH: i64 = -3;
const EINVAL: i64 = -22;
const ENOSPC: i64 = -28;
const ENOSYS: i64 = -38;

const PENDING: u32 = 1 << 31;
const MASKED: u32 = 1 << 30;
const LINKED: u32 = 1 << 29;
const BUSY: u32 = 1 << 28;
const LINK_MASK: u32 = (1 << 17) - 1;

/// The last control-block offset that fits in the page (4096 - 72).
const LAST_OFFSET: u32 = 4024;
/// Sends vCPU 0 makes while vCPU 1 flips the words.
const RACE_SENDS: u32 = 20_000;

#[repr(C, align(4096))]
struct Page([AtomicU32; 1024]);
static CONTROL: Page = Page([const { AtomicU32::new(0) }; 1024]);
static ARRAY: Page = Page([const { AtomicU32::new(0) }; 1024]);
/// The second array page, unmapped by the guest to try to pin it as a page table.
static SPARE: Page = Page([const { AtomicU32::new(0) }; 1024]);

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACK: Stack = Stack([0; 16384]);

static FLIP: AtomicBool = AtomicBool::new(false);
static FLIPS: AtomicU64 = AtomicU64::new(0);

fn word(port: u32) -> &'static AtomicU32 {
    &ARRAY.0[port as usize % 1024]
}

fn init_control(gfn: u64, offset: u32, vcpu: u32) -> i64 {
    let mut c = InitControl {
        control_gfn: gfn,
        offset,
        vcpu,
        ..InitControl::default()
    };
    event_channel_op(cmd::INIT_CONTROL, &mut c)
}

fn expand_array(gfn: u64) -> i64 {
    event_channel_op(cmd::EXPAND_ARRAY, &mut ExpandArray { array_gfn: gfn })
}

fn on_port(op: u32, port: u32) -> i64 {
    event_channel_op(op, &mut PortArg { port })
}

fn reset(dom: u16) -> i64 {
    event_channel_op(cmd::RESET, &mut Reset { dom })
}

fn bind_ipi() -> u32 {
    let mut b = BindIpi::default();
    event_channel_op(cmd::BIND_IPI, &mut b);
    b.port
}

/// vCPU 1: flips bits of the first event words until told to stop, then goes down.
extern "C" fn flipper() -> ! {
    let mut i = 0u32;
    while FLIP.load(SeqCst) {
        word(1 + i % 8).fetch_xor(MASKED | BUSY | (i & LINK_MASK), SeqCst);
        word(1 + i % 8).fetch_or(LINKED, SeqCst);
        i = i.wrapping_add(1);
        FLIPS.fetch_add(1, SeqCst);
    }
    loop {
        hypercall(nr::VCPU_OP, u64::from(vcpuop::DOWN), 1, 0, 0, 0);
    }
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "cannot map shared_info");
    shared_byte(1).store(1, SeqCst); // no upcalls: the queues are only looked at
    let mfn = |p: &Page| pfn_to_mfn(si, p.0.as_ptr() as u64 >> 12);
    let (cb, array, spare) = (mfn(&CONTROL), mfn(&ARRAY), mfn(&SPARE));
    let l4 = pfn_to_mfn(si, si.pt_base >> 12);
    let l1 = l1e_maddr(si, CONTROL.0.as_ptr() as u64).map_or(0, |m| m >> 12);
    let p0 = bind_ipi();

    // Frames that are not the domain's, or are its page tables.
    for (what, gfn) in [
        ("frame 0", 0),
        ("an MFN past RAM", u64::MAX >> 12),
        ("all ones", u64::MAX),
        ("its L4", l4),
        ("an L1", l1),
    ] {
        let r = init_control(gfn, 0, 0);
        check!(failed, r == EINVAL, "init_control on {what}: {r}");
    }
    check!(
        failed,
        event_channel_op(
            cmd::SET_PRIORITY,
            &mut SetPriority {
                port: p0,
                priority: 0
            }
        ) == ENOSYS,
        "still 2-level after refused control blocks"
    );
    // Offsets and vCPUs.
    for offset in [
        u32::MAX,
        LAST_OFFSET + 1,
        LAST_OFFSET + 4,
        LAST_OFFSET + 8,
        4096,
        1,
        12,
    ] {
        let r = init_control(cb, offset, 0);
        check!(failed, r == EINVAL, "offset {offset}: {r}");
    }
    for vcpu in [u32::MAX, 4096, 0x8000_0000] {
        let r = init_control(cb, 0, vcpu);
        check!(failed, r == ENOENT, "vCPU {vcpu:#x}: {r}");
    }
    check!(
        failed,
        init_control(cb, LAST_OFFSET, 0) == 0,
        "control block at the last offset that fits"
    );

    // Event-array pages: refused frames, then a held one that cannot become a page table.
    for (what, gfn) in [("frame 0", 0), ("all ones", u64::MAX), ("its L4", l4)] {
        let r = expand_array(gfn);
        check!(failed, r == EINVAL, "expand_array on {what}: {r}");
    }
    check!(failed, expand_array(array) == 0, "expand_array");
    check!(failed, expand_array(spare) == 0, "expand_array (spare)");
    let spare_va = SPARE.0.as_ptr() as u64;
    check!(
        failed,
        hypercall(nr::UPDATE_VA_MAPPING, spare_va, 0, uvmf::INVLPG, 0, 0) == 0,
        "unmap the spare page"
    );
    let r = mmuext_one(ext::PIN_L1_TABLE, spare, 0);
    check!(failed, r < 0, "an event-array page pinned as an L1: {r}");
    if r == 0 {
        mmuext_one(ext::UNPIN_TABLE, spare, 0);
    }
    // Up to 128 pages: the same frame again, the control block's frame.
    check!(
        failed,
        expand_array(cb) == 0,
        "the control block's frame as array page"
    );
    let mut pages = 3;
    while pages < 128 && expand_array(array) == 0 {
        pages += 1;
    }
    check!(failed, pages == 128, "only {pages} array pages");
    let r = expand_array(array);
    check!(failed, r == ENOSPC, "page 129: {r}");

    // Nonsense in the event words and the control block.
    let ports = [bind_ipi(), bind_ipi(), bind_ipi()];
    let cb_word = |i: usize| &CONTROL.0[LAST_OFFSET as usize / 4 + i];
    for junk in [
        u32::MAX,
        LINKED | ports[0],
        LINKED | BUSY | LINK_MASK,
        MASKED | LINKED | PENDING,
        BUSY,
        LINKED | 4096,
        0,
    ] {
        for (i, &p) in ports.iter().enumerate() {
            word(p).store(junk ^ i as u32, SeqCst);
        }
        for i in 0..18 {
            cb_word(i).store(junk, SeqCst);
        }
        for &p in &ports {
            on_port(cmd::SEND, p);
            on_port(cmd::UNMASK, p);
            on_port(cmd::SEND, p);
        }
        for &p in &ports {
            word(p).fetch_and(!(PENDING | LINKED), SeqCst);
            on_port(cmd::SEND, p);
        }
    }

    // A second vCPU flips the words while vCPU 0 queues events behind them.
    let stack_top = (&raw const AP_STACK) as u64 + size_of::<Stack>() as u64;
    let ctx = secondary_vcpu_context(si, flipper, stack_top);
    FLIP.store(true, SeqCst);
    let raced = hypercall(
        nr::VCPU_OP,
        u64::from(vcpuop::INITIALISE),
        1,
        &ctx as *const _ as u64,
        0,
        0,
    ) == 0
        && hypercall(nr::VCPU_OP, u64::from(vcpuop::UP), 1, 0, 0, 0) == 0;
    if raced {
        let start = system_time_ns();
        let mut i = 0;
        while i < RACE_SENDS {
            let p = 1 + i % 8;
            word(p).fetch_and(!(PENDING | LINKED), SeqCst);
            on_port(cmd::SEND, p);
            on_port(cmd::UNMASK, p);
            i += 1;
        }
        FLIP.store(false, SeqCst);
        println!(
            "{RACE_SENDS} sends against {} flips in {} ms",
            FLIPS.load(SeqCst),
            (system_time_ns() - start) / 1_000_000
        );
    } else {
        FLIP.store(false, SeqCst);
        println!("no second vCPU: race skipped");
    }

    // Another domain's reset.
    let (other, other_reset) = if si.flags & sif::PRIVILEGED != 0 {
        (1, reset(1))
    } else {
        (0, reset(0))
    };
    check!(
        failed,
        if other == 1 {
            other_reset == EINVAL || other_reset == ESRCH
        } else {
            other_reset == EPERM
        },
        "reset of d{other}: {other_reset}"
    );

    // Reset: back to 2-level, the frames released.
    check!(failed, reset(DOMID_SELF) == 0, "reset");
    let r = mmuext_one(ext::PIN_L1_TABLE, spare, 0);
    check!(failed, r == 0, "pin the released spare page: {r}");
    check!(
        failed,
        mmuext_one(ext::UNPIN_TABLE, spare, 0) == 0,
        "unpin it"
    );
    let p = bind_ipi();
    shared_word(2048).store(0, SeqCst);
    on_port(cmd::SEND, p);
    check!(
        failed,
        shared_word(2048).load(SeqCst) == 1 << p,
        "2-level delivery after reset (port {p})"
    );
    // dom0 next to a domU: its stop stops the machine, so it lets the domU finish first.
    if other == 1 && other_reset == EINVAL {
        check!(failed, wait_until_gone(1), "d1 did not stop");
    }
    if failed {
        Verdict::Failure("hostile FIFO control blocks")
    } else {
        Verdict::Success
    }
}

/// Yields until domain `dom` no longer exists (its status is -ESRCH), for at most 30 s.
fn wait_until_gone(dom: u16) -> bool {
    let deadline = system_time_ns() + 30_000_000_000;
    while system_time_ns() < deadline {
        let mut s = Status {
            dom,
            ..Default::default()
        };
        if event_channel_op(cmd::STATUS, &mut s) == ESRCH {
            return true;
        }
        hypercall(nr::SCHED_OP, u64::from(sched::YIELD), 0, 0, 0, 0);
    }
    false
}

hestia_guests::guest_main!(test);
