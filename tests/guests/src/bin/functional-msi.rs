//! dom0's MSIs end to end, on QEMU's `edu` device (PCI 1234:11e8, one 64-bit MSI vector; a
//! write to its register 0x60 raises an interrupt, 0x64 acknowledges it): the refusals of
//! `PHYSDEVOP_map_pirq` (no device, no MSI-X capability), then the MSI mapped to a PIRQ, bound
//! to an event channel, enabled by the guest in the capability as Linux does, and each raised
//! interrupt seen as a pending port; unmapping disables MSI. On Hestia, a configuration write
//! to the programmed message is dropped (Xen lets dom0 rewrite it).
#![no_std]
#![no_main]

use core::arch::asm;

use hestia_guests::xen_abi::event_channel::{BindPirq, Close, cmd as evtchn};
use hestia_guests::xen_abi::mmu::uvmf;
use hestia_guests::xen_abi::physdev::{MapPirq, SetIopl, UnmapPirq, cmd, map_type};
use hestia_guests::xen_abi::sched::cmd as sched;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, event_channel_op, hypercall, map_shared_info, println, shared_word,
    system_time_ns,
};

const EINVAL: i64 = -22;
const ENODEV: i64 = -19;
const XENVER_EXTRAVERSION: u64 = 1;
/// Present, writable, user, accessed, cache-disable.
const RW_UC: u64 = 0x37;
/// Where the device's registers are mapped.
const MMIO: u64 = 0x3fe000;

fn physdev<T>(op: u32, arg: &mut T) -> i64 {
    hypercall(nr::PHYSDEV_OP, u64::from(op), arg as *mut T as u64, 0, 0, 0)
}

fn outl(port: u16, v: u32) {
    // SAFETY: port I/O emulated by Hestia (IOPL 1); PCI configuration accesses are mediated.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nostack, nomem)) };
}

fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as in `outl`.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") v, options(nostack, nomem)) };
    v
}

/// Configuration dword `reg` of bus 0, `devfn`.
fn config(devfn: u8, reg: u8) -> u32 {
    outl(
        0xCF8,
        0x8000_0000 | u32::from(devfn) << 8 | u32::from(reg & 0xFC),
    );
    inl(0xCFC)
}

fn set_config(devfn: u8, reg: u8, v: u32) {
    outl(
        0xCF8,
        0x8000_0000 | u32::from(devfn) << 8 | u32::from(reg & 0xFC),
    );
    outl(0xCFC, v);
}

fn mmio_write(off: u64, v: u32) {
    // SAFETY: MMIO maps the edu device's first register page; `off` is a 4-byte register.
    unsafe { core::ptr::write_volatile((MMIO + off) as *mut u32, v) }
}

fn mmio_read(off: u64) -> u32 {
    // SAFETY: as in `mmio_write`.
    unsafe { core::ptr::read_volatile((MMIO + off) as *const u32) }
}

fn map_msi(bus: u32, devfn: u32, table_base: u64) -> (i64, u32) {
    let mut m = MapPirq {
        domid: DOMID_SELF,
        ty: map_type::MSI_SEG,
        index: u32::MAX,
        pirq: u32::MAX,
        bus,
        devfn,
        table_base,
        ..MapPirq::default()
    };
    let r = physdev(cmd::MAP_PIRQ, &mut m);
    (r, m.pirq)
}

fn pending_word(port: u32) -> &'static core::sync::atomic::AtomicU64 {
    shared_word(2048 + u64::from(port / 64) * 8)
}

/// `SCHEDOP_poll` on `port` with a 1 s timeout; true if it is pending afterwards (cleared).
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
    let bit = 1 << (port % 64);
    r == 0 && pending_word(port).fetch_and(!bit, core::sync::atomic::Ordering::SeqCst) & bit != 0
}

fn on_hestia() -> bool {
    let mut extra = [0u8; 16];
    hypercall(
        nr::XEN_VERSION,
        XENVER_EXTRAVERSION,
        extra.as_mut_ptr() as u64,
        0,
        0,
        0,
    );
    extra.windows(6).any(|w| w == b"hestia")
}

/// The offset of capability `id` of bus 0, `devfn`.
fn capability(devfn: u8, id: u8) -> Option<u8> {
    let mut at = (config(devfn, 0x34) & 0xFC) as u8;
    for _ in 0..48 {
        if at < 0x40 {
            return None;
        }
        let head = config(devfn, at);
        if head as u8 == id {
            return Some(at);
        }
        at = (head >> 8) as u8 & 0xFC;
    }
    None
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "map shared_info");
    check!(
        failed,
        physdev(cmd::SET_IOPL, &mut SetIopl { iopl: 1 }) == 0,
        "set_iopl"
    );
    let Some(devfn) = (0..32u8)
        .map(|dev| dev << 3)
        .find(|&devfn| config(devfn, 0) == 0x11e8_1234)
    else {
        return Verdict::Error("no edu device (QEMU -device edu)");
    };
    let Some(cap) = capability(devfn, 0x05) else {
        return Verdict::Error("edu has no MSI capability");
    };
    let bar0 = u64::from(config(devfn, 0x10) & !0xF);
    let r = hypercall(
        nr::UPDATE_VA_MAPPING,
        MMIO,
        bar0 | RW_UC,
        uvmf::INVLPG,
        0,
        0,
    );
    check!(failed, r == 0, "mapping BAR0 at {bar0:#x}: {r}");
    check!(
        failed,
        mmio_read(0) == 0x0100_00ed,
        "edu ident {:#x}",
        mmio_read(0)
    );
    // PCI: the bus must be mastering for the device to send messages.
    set_config(devfn, 0x04, config(devfn, 0x04) | 0x6);

    // Linux announces each device it finds (Xen wants that before mapping its MSIs): a
    // `physdev_pci_device_add` of segment 0, bus 0, no flags, no physical function.
    let mut add = [0u8; 12];
    add[3] = devfn;
    let r = physdev(cmd::PCI_DEVICE_ADD, &mut add);
    check!(failed, r == 0, "pci_device_add: {r}");

    // Refusals.
    let (r, _) = map_msi(0xF0, 0, 0);
    check!(failed, r == ENODEV, "MSI of a missing device: {r}");
    let (r, _) = map_msi(0, u32::from(devfn), bar0);
    check!(failed, r == ENODEV, "MSI-X of a device without it: {r}");

    // The MSI, bound and enabled.
    let (r, pirq) = map_msi(0, u32::from(devfn), 0);
    if r != 0 {
        println!("map_pirq(MSI): {r}");
        return Verdict::Failure("mapping the MSI");
    }
    let mut b = BindPirq {
        pirq,
        ..BindPirq::default()
    };
    let r = event_channel_op(evtchn::BIND_PIRQ, &mut b);
    let port = b.port;
    check!(failed, r == 0 && port != 0, "bind_pirq: {r}");
    let control = config(devfn, cap);
    set_config(devfn, cap, control | 1 << 16);
    let address = config(devfn, cap + 4);
    println!("MSI at {cap:#x}: PIRQ {pirq}, port {port}, address {address:#x}");
    check!(
        failed,
        address & 0xFFF0_0000 == 0xFEE0_0000,
        "message address {address:#x}"
    );
    let mut seen = 0;
    for i in 0..3 {
        mmio_write(0x60, 1 << i);
        if poll(port) {
            seen += 1;
        }
        mmio_write(0x64, 1 << i);
    }
    check!(failed, seen == 3, "{seen} of 3 interrupts arrived");

    if on_hestia() {
        set_config(devfn, cap + 4, 0xFEE0_F000);
        let now = config(devfn, cap + 4);
        check!(failed, now == address, "message rewritten to {now:#x}");
    }

    // Unmapping disables MSI; the port is closed by the guest.
    let mut u = UnmapPirq {
        domid: DOMID_SELF,
        _pad: 0,
        pirq,
    };
    check!(failed, physdev(cmd::UNMAP_PIRQ, &mut u) == 0, "unmap");
    check!(
        failed,
        config(devfn, cap) & 1 << 16 == 0,
        "MSI still enabled after unmap: control {:#x}",
        config(devfn, cap) >> 16
    );
    let r = physdev(cmd::UNMAP_PIRQ, &mut u);
    check!(failed, r == EINVAL, "second unmap: {r}");
    let r = event_channel_op(evtchn::CLOSE, &mut Close { port });
    check!(failed, r == 0, "close: {r}");
    if failed {
        Verdict::Failure("MSI")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
