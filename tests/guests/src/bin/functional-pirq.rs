//! dom0's physical interrupts end to end: the RTC's periodic interrupt (ISA IRQ 8) mapped to a
//! PIRQ (`PHYSDEVOP_map_pirq`), bound to an event channel (`EVTCHNOP_bind_pirq`), arriving as a
//! pending port (seen by `SCHEDOP_poll`), acknowledged with `PHYSDEVOP_eoi`; unmapping; and the
//! refusals: binding the hypervisor's own serial line or an unmapped PIRQ, an MSI for no device.
//! Every answer here is Xen 4.17's too (checked on the reference rig).
#![no_std]
#![no_main]

use core::arch::asm;

use hestia_guests::xen_abi::event_channel::{BindPirq, Close, cmd as evtchn};
use hestia_guests::xen_abi::physdev::{
    Apic, Eoi, IrqStatusQuery, MapPirq, SetIopl, SetupGsi, UnmapPirq, cmd, map_type,
};
use hestia_guests::xen_abi::sched::cmd as sched;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, event_channel_op, hypercall, map_shared_info, println, shared_word,
    system_time_ns,
};

const EPERM: i64 = -1;
const EINVAL: i64 = -22;
const EEXIST: i64 = -17;

fn physdev<T>(op: u32, arg: &mut T) -> i64 {
    hypercall(nr::PHYSDEV_OP, u64::from(op), arg as *mut T as u64, 0, 0, 0)
}

fn map_gsi(gsi: u32, ty: u32) -> (i64, u32) {
    let mut m = MapPirq {
        domid: DOMID_SELF,
        ty,
        index: gsi,
        pirq: gsi,
        ..MapPirq::default()
    };
    let r = physdev(cmd::MAP_PIRQ, &mut m);
    (r, m.pirq)
}

fn outb(port: u16, v: u8) {
    // SAFETY: port I/O emulated by Hestia (IOPL 1); CMOS accesses are mediated.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nostack, nomem)) };
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as in `outb`.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nostack, nomem)) };
    v
}

fn cmos(reg: u8) -> u8 {
    outb(0x70, reg);
    inb(0x71)
}

fn set_cmos(reg: u8, v: u8) {
    outb(0x70, reg);
    outb(0x71, v);
}

/// `SCHEDOP_poll` on `port` with a 1 s timeout; true if it is pending afterwards.
fn poll(port: u32) -> bool {
    let ports = [port];
    let timeout = system_time_ns() + 1_000_000_000;
    let arg = (ports.as_ptr() as u64, 1u64, timeout);
    let r = hypercall(
        nr::SCHED_OP,
        u64::from(sched::POLL),
        &arg as *const _ as u64,
        0,
        0,
        0,
    );
    r == 0
        && shared_word(2048 + u64::from(port / 64) * 8).load(core::sync::atomic::Ordering::SeqCst)
            & (1 << (port % 64))
            != 0
}

fn clear_pending(port: u32) {
    shared_word(2048 + u64::from(port / 64) * 8)
        .fetch_and(!(1 << (port % 64)), core::sync::atomic::Ordering::SeqCst);
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "map shared_info");
    check!(
        failed,
        physdev(cmd::SET_IOPL, &mut SetIopl { iopl: 1 }) == 0,
        "set_iopl"
    );

    // Refusals first.
    let (r, _) = map_gsi(10, map_type::MSI);
    check!(failed, r < 0, "MSI for no device mapped: {r}");
    let mut b = BindPirq {
        pirq: 200,
        ..BindPirq::default()
    };
    let r = event_channel_op(evtchn::BIND_PIRQ, &mut b);
    check!(failed, r == EPERM, "binding an unmapped PIRQ: {r}");
    let mut apic = Apic {
        apic_physbase: 0xFEC0_0000,
        reg: 1,
        value: 0,
    };
    check!(
        failed,
        physdev(cmd::APIC_READ, &mut apic) == 0 && apic.value & 0xff >= 0x11,
        "IOAPIC version register {:#x}",
        apic.value
    );

    // The RTC: IRQ 8 is GSI 8 on QEMU's machines; edge-triggered, active high.
    let (r, pirq) = map_gsi(8, map_type::GSI);
    check!(failed, r == 0 && pirq == 8, "map GSI 8: {r}, PIRQ {pirq}");
    let mut s = SetupGsi {
        gsi: 8,
        triggering: 0,
        polarity: 0,
        _pad: 0,
    };
    let r = physdev(cmd::SETUP_GSI, &mut s);
    check!(failed, r == 0 || r == EEXIST, "setup_gsi: {r}");
    let mut q = IrqStatusQuery {
        irq: pirq,
        flags: 0,
    };
    check!(
        failed,
        physdev(cmd::IRQ_STATUS_QUERY, &mut q) == 0 && q.flags & 1 == 1,
        "PV PIRQs always ask for the EOI hypercall (flags {:#x})",
        q.flags
    );
    let mut b = BindPirq {
        pirq,
        ..BindPirq::default()
    };
    let r = event_channel_op(evtchn::BIND_PIRQ, &mut b);
    let port = b.port;
    check!(failed, r == 0 && port != 0, "bind_pirq: {r}");

    // Periodic interrupt at 2 Hz (rate 15), then acknowledge each through register C.
    let a = cmos(0x0A);
    set_cmos(0x0A, (a & 0xf0) | 0x0f);
    let reg_b = cmos(0x0B);
    set_cmos(0x0B, reg_b | 0x40);
    let _ = cmos(0x0C);
    let mut seen = 0;
    for _ in 0..3 {
        if poll(port) {
            seen += 1;
            clear_pending(port);
            let _ = cmos(0x0C);
            check!(
                failed,
                physdev(cmd::EOI, &mut Eoi { irq: pirq }) == 0,
                "EOI"
            );
        }
    }
    set_cmos(0x0B, reg_b & !0x40);
    let _ = cmos(0x0C);
    println!("RTC interrupts seen through PIRQ {pirq} on port {port}: {seen}");
    check!(failed, seen == 3, "{seen} of 3 RTC interrupts arrived");

    // Unmapping a bound PIRQ is allowed (the port stays, silent); unmapping twice is not.
    let mut u = UnmapPirq {
        domid: DOMID_SELF,
        _pad: 0,
        pirq,
    };
    let r = physdev(cmd::UNMAP_PIRQ, &mut u);
    check!(failed, r == 0, "unmap: {r}");
    let r = physdev(cmd::UNMAP_PIRQ, &mut u);
    check!(failed, r == EINVAL, "second unmap: {r}");
    let r = event_channel_op(evtchn::CLOSE, &mut Close { port });
    check!(failed, r == 0, "close: {r}");

    // The hypervisor's own serial line (GSI 4) maps but does not bind.
    let (r, p4) = map_gsi(4, map_type::GSI);
    check!(failed, r == 0, "map GSI 4: {r}");
    let mut b = BindPirq {
        pirq: p4,
        ..BindPirq::default()
    };
    let r = event_channel_op(evtchn::BIND_PIRQ, &mut b);
    check!(failed, r < 0, "the serial line's PIRQ bound ({r})");
    println!("binding the serial line: {r}");
    if failed {
        Verdict::Failure("PIRQs")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
