//! Debug registers: `set_debugreg`/`get_debugreg` with Xen's checks and reset values, the
//! emulated `mov` to and from `%drN` (as XTF's PV tests use it), a data watchpoint delivering #DB
//! with DR6.B0, and a watchpoint on a buffer Hestia writes for a hypercall (taken and ignored in
//! Hestia, not delivered to the guest).
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::version::{self, cmd};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{ExcFrame, Verdict, check, hypercall, install_traps, println};

const EPERM: i64 = -1;
const ENODEV: i64 = -19;
const EINVAL: i64 = -22;
/// DR7: L0, R/W0 = 01 (data writes), LEN0 = 11 (4 bytes).
const DR7_WATCH_WRITE_4: u64 = 0x000d_0001;

static DEBUG_TRAPS: AtomicU64 = AtomicU64::new(0);
static GP_FAULTS: AtomicU64 = AtomicU64::new(0);
static WATCHED: AtomicU32 = AtomicU32::new(0);

fn handler(vector: u64, f: &mut ExcFrame) {
    match vector {
        1 => {
            DEBUG_TRAPS.fetch_add(1, SeqCst);
        }
        13 => {
            GP_FAULTS.fetch_add(1, SeqCst);
            f.rip += 3; // every #GP probe below is a 3-byte `mov %rax, %drN`
        }
        _ => {
            println!("unexpected exception {vector} at {:#x}", f.rip);
            f.rip += 1;
        }
    }
}

fn set(reg: u64, value: u64) -> i64 {
    hypercall(nr::SET_DEBUGREG, reg, value, 0, 0, 0)
}

fn get(reg: u64) -> i64 {
    hypercall(nr::GET_DEBUGREG, reg, 0, 0, 0, 0)
}

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    install_traps(handler);
    let watched = WATCHED.as_ptr() as u64;

    // 1. Reset values, as after a CPU reset.
    check!(failed, get(6) == 0xffff_0ff0, "DR6 {:#x}", get(6));
    check!(failed, get(7) == 0x400, "DR7 {:#x}", get(7));

    // 2. Set/get, aliases and Xen's refusals.
    check!(failed, set(0, watched) == 0, "set DR0");
    check!(failed, get(0) as u64 == watched, "DR0 reads back");
    let cases: [(u64, u64, i64, &str); 8] = [
        (0, 0xffff_8000_0000_1000, EPERM, "DR0 in Hestia's range"),
        (1, 0x8000_0000_0000_0000, EPERM, "non-canonical DR1"),
        (7, 1 << 32, EINVAL, "DR7 upper half"),
        (6, 1 << 40, EINVAL, "DR6 upper half"),
        (7, 0x2400, EPERM, "DR7.GD"),
        (7, 0x0002_0001, EPERM, "I/O breakpoint"),
        (8, 0, ENODEV, "DR8"),
        (u64::MAX, 0, ENODEV, "DR -1"),
    ];
    for (reg, value, want, what) in cases {
        let r = set(reg, value);
        check!(failed, r == want, "{what}: {r}, expected {want}");
    }
    check!(failed, get(8) == ENODEV, "get DR8: {}", get(8));
    check!(
        failed,
        set(6, 0) == 0 && get(6) == 0xffff_0ff0,
        "DR6 fixed bits"
    );
    check!(
        failed,
        set(5, 0) == 0 && get(7) == 0x400 && get(5) == 0x400,
        "DR5 aliases DR7"
    );

    // 3. A write watchpoint on WATCHED: #DB after the store, DR6.B0 set.
    check!(failed, set(7, DR7_WATCH_WRITE_4) == 0, "arm DR7");
    check!(failed, get(7) == 0x000d_0401, "DR7 reads {:#x}", get(7));
    WATCHED.store(1, SeqCst);
    check!(
        failed,
        DEBUG_TRAPS.load(SeqCst) == 1,
        "{} #DB after a watched store",
        DEBUG_TRAPS.load(SeqCst)
    );
    check!(failed, get(6) & 0xf == 1, "DR6 {:#x}, expected B0", get(6));
    check!(failed, set(6, 0) == 0, "clear DR6");

    // 4. Hestia writes the watched word for a hypercall: no #DB for the guest, the call works.
    let mut buf = [0u8; version::EXTRAVERSION_LEN];
    check!(failed, set(0, buf.as_ptr() as u64) == 0, "DR0 on buffer");
    let r = hypercall(
        nr::XEN_VERSION,
        u64::from(cmd::EXTRAVERSION),
        buf.as_mut_ptr() as u64,
        0,
        0,
        0,
    );
    check!(
        failed,
        r == 0 && buf[0] == b'.',
        "extraversion with a watchpoint ({r})"
    );
    check!(
        failed,
        DEBUG_TRAPS.load(SeqCst) == 1,
        "Hestia's access reached the guest as #DB"
    );

    // 5. Raw `mov` to and from debug registers in guest kernel mode, emulated.
    let (dr7, dr6): (u64, u64);
    // SAFETY: the moves are emulated by the hypervisor; registers are declared.
    unsafe {
        asm!("mov {z}, %dr7", "mov %dr7, {a}", "mov %dr6, %r9", z = in(reg) 0u64,
             a = out(reg) dr7, out("r9") dr6, options(att_syntax, nostack));
    }
    check!(failed, dr7 == 0x400, "mov %dr7 read {dr7:#x}");
    check!(failed, dr6 == 0xffff_0ff0, "mov %dr6, %r9 read {dr6:#x}");
    // A refused value is #GP, as from Xen's emulator.
    // SAFETY: faults; the handler skips the 3-byte instruction.
    unsafe {
        asm!("mov %rax, %dr0", in("rax") 0xffff_8000_0000_0000u64,
             options(att_syntax, nostack));
    }
    check!(
        failed,
        GP_FAULTS.load(SeqCst) == 1,
        "mov of a hypervisor address to DR0: {} #GP",
        GP_FAULTS.load(SeqCst)
    );
    check!(failed, set(0, 0) == 0, "reset DR0");
    if failed {
        Verdict::Failure("debug registers")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
