//! Port I/O from a PV kernel: #GP without I/O privilege; with IOPL 1, dom0 reaches the PCI
//! configuration space through its virtual CF8 and the CMOS through its virtual index, reads
//! all ones from ports Hestia keeps (PIC, its serial line) and uses string I/O (REP INS/OUTS,
//! with a #PF for an unmapped buffer); an I/O bitmap grants single ports.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::physdev::{SetIobitmap, SetIopl, cmd};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{ExcFrame, Verdict, check, hypercall, install_traps, println};

const EINVAL: i64 = -22;

static GP: AtomicU64 = AtomicU64::new(0);
static PF: AtomicU64 = AtomicU64::new(0);
/// Bytes to skip for the next faulting probe.
static SKIP: AtomicU64 = AtomicU64::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    match vector {
        13 => GP.fetch_add(1, SeqCst),
        14 => PF.fetch_add(1, SeqCst),
        _ => {
            println!("unexpected exception {vector} at {:#x}", f.rip);
            0
        }
    };
    f.rip += SKIP.load(SeqCst);
}

fn physdev<T>(op: u32, arg: &T) -> i64 {
    hypercall(
        nr::PHYSDEV_OP,
        u64::from(op),
        arg as *const T as u64,
        0,
        0,
        0,
    )
}

fn inb(port: u16) -> u8 {
    SKIP.store(1, SeqCst); // `in (%dx), %al`
    let v: u8;
    // SAFETY: emulated by the hypervisor or faulting into the handler, which skips it.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nostack, nomem)) };
    v
}

fn outb(port: u16, v: u8) {
    SKIP.store(1, SeqCst);
    // SAFETY: as in `inb`.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nostack, nomem)) };
}

fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: as in `inb` (only used where it cannot fault).
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") v, options(nostack, nomem)) };
    v
}

fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as in `inw`.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") v, options(nostack, nomem)) };
    v
}

fn outl(port: u16, v: u32) {
    // SAFETY: as in `inw`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nostack, nomem)) };
}

/// `rep insb` of `n` bytes from `port` to `dst`; returns (RDI advance, RCX left).
fn rep_insb(port: u16, dst: u64, n: u64) -> (u64, u64) {
    SKIP.store(2, SeqCst);
    let (rdi, rcx): (u64, u64);
    // SAFETY: the hypervisor performs it into `dst`, or delivers #PF (skipped) if unmapped.
    unsafe {
        asm!("rep insb", in("dx") port, inout("rdi") dst => rdi, inout("rcx") n => rcx,
             options(nostack));
    }
    (rdi - dst, rcx)
}

/// `rep outsb` of `src` to `port`; returns (RSI advance, RCX left).
fn rep_outsb(port: u16, src: &[u8]) -> (u64, u64) {
    let start = src.as_ptr() as u64;
    let (rsi, rcx): (u64, u64);
    // SAFETY: reads `src` only.
    unsafe {
        asm!("rep outsb", in("dx") port, inout("rsi") start => rsi,
             inout("rcx") src.len() => rcx, options(nostack, readonly));
    }
    (rsi - start, rcx)
}

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);

    // No I/O privilege yet.
    inb(0x80);
    check!(failed, GP.load(SeqCst) == 1, "IN without IOPL did not #GP");

    check!(
        failed,
        physdev(cmd::SET_IOPL, &SetIopl { iopl: 1 }) == 0,
        "set_iopl(1)"
    );

    // PCI configuration mechanism #1: host bridge 00:00.0 is an Intel part on QEMU's machines.
    outl(0xCF8, 0x8000_0000);
    let id = inl(0xCFC);
    check!(
        failed,
        id & 0xffff == 0x8086,
        "00:00.0 vendor/device {id:#010x}"
    );
    check!(
        failed,
        inl(0xCF8) == 0x8000_0000,
        "CF8 reads back {:#x}",
        inl(0xCF8)
    );
    check!(
        failed,
        u32::from(inw(0xCFE)) == id >> 16,
        "word read at CFE gave {:#x}",
        inw(0xCFE)
    );
    outl(0xCF8, 0);
    check!(
        failed,
        inl(0xCFC) == u32::MAX,
        "config data without the enable bit"
    );

    // CMOS: index 0x0B (status B) through the mediated pair; 24-hour mode is what firmware sets.
    outb(0x70, 0x0B);
    check!(failed, inb(0x70) == 0x0B, "CMOS index reads back");
    let status_b = inb(0x71);
    check!(
        failed,
        status_b != 0xff && status_b & 0x02 != 0,
        "CMOS status B {status_b:#x}"
    );

    // Ports Hestia keeps read as all ones; writes to them are dropped.
    check!(failed, inb(0x21) == 0xff, "PIC mask port readable");
    check!(failed, inb(0x3FD) == 0xff, "Hestia's UART readable");
    outb(0x21, 0);
    check!(failed, GP.load(SeqCst) == 1, "a denied port faulted");

    // String I/O.
    let mut buf = [0u8; 8];
    let (adv, left) = rep_insb(0x21, buf.as_mut_ptr() as u64, 4);
    check!(
        failed,
        adv == 4 && left == 0 && buf[..4] == [0xff; 4] && buf[4] == 0,
        "rep insb: advanced {adv}, {left} left, {buf:x?}"
    );
    let (adv, left) = rep_outsb(0x80, &[1, 2, 3]);
    check!(
        failed,
        adv == 3 && left == 0,
        "rep outsb: advanced {adv}, {left} left"
    );
    let (adv, left) = rep_insb(0x80, 0x7fff_ffff_0000, 2);
    check!(
        failed,
        PF.load(SeqCst) == 1 && adv == 0 && left == 2,
        "rep insb into unmapped memory: {} #PF, advanced {adv}, {left} left",
        PF.load(SeqCst)
    );

    // An I/O bitmap instead of IOPL: port 0x80 allowed, 0x81 not.
    let mut bitmap = [0xffu8; 0x20];
    bitmap[0x80 / 8] &= !1;
    check!(
        failed,
        physdev(cmd::SET_IOPL, &SetIopl { iopl: 0 }) == 0,
        "set_iopl(0)"
    );
    let iob = SetIobitmap {
        bitmap: bitmap.as_ptr() as u64,
        nr_ports: 0x100,
        _pad: 0,
    };
    check!(
        failed,
        physdev(cmd::SET_IOBITMAP, &iob) == 0,
        "set_iobitmap"
    );
    inb(0x80);
    check!(failed, GP.load(SeqCst) == 1, "bitmap-allowed port faulted");
    inb(0x81);
    check!(
        failed,
        GP.load(SeqCst) == 2,
        "bitmap-denied port did not #GP"
    );
    let too_many = SetIobitmap {
        nr_ports: 65537,
        ..iob
    };
    let r = physdev(cmd::SET_IOBITMAP, &too_many);
    check!(failed, r == EINVAL, "65537 ports: {r}");
    let cleared = SetIobitmap {
        bitmap: 0,
        nr_ports: 0,
        _pad: 0,
    };
    check!(
        failed,
        physdev(cmd::SET_IOBITMAP, &cleared) == 0,
        "clear bitmap"
    );
    inb(0x80);
    check!(failed, GP.load(SeqCst) == 3, "no privilege left, no #GP");
    if failed {
        Verdict::Failure("port I/O")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
