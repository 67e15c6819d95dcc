//! dom0's console input: serial input goes to dom0 once it runs; each byte raises
//! VIRQ_CONSOLE and CONSOLEIO_read returns it. The test harness types "hi!" when asked.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::event_channel::{BindVirq, cmd as evtchn};
use hestia_guests::xen_abi::sched::cmd as sched;
use hestia_guests::xen_abi::xen::{StartInfo, consoleio, hypercall as nr, virq};
use hestia_guests::{
    Verdict, check, event_channel_op, hypercall, map_shared_info, println, shared_word,
};

fn pending_word() -> &'static AtomicU64 {
    shared_word(2048) // evtchn_pending[0]
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "map shared_info");
    let mut b = BindVirq {
        virq: virq::CONSOLE,
        ..BindVirq::default()
    };
    check!(
        failed,
        event_channel_op(evtchn::BIND_VIRQ, &mut b) == 0,
        "bind VIRQ_CONSOLE"
    );
    let port = b.port;
    let ports = [port];
    println!("waiting for console input");
    let mut got = [0u8; 16];
    let mut n = 0;
    for _ in 0..200 {
        let poll = [ports.as_ptr() as u64, 1, 0];
        hypercall(
            nr::SCHED_OP,
            u64::from(sched::POLL),
            poll.as_ptr() as u64,
            0,
            0,
            0,
        );
        pending_word().fetch_and(!(1 << port), SeqCst);
        let r = hypercall(
            nr::CONSOLE_IO,
            u64::from(consoleio::READ),
            (got.len() - n) as u64,
            got[n..].as_mut_ptr() as u64,
            0,
            0,
        );
        if r > 0 {
            n += r as usize;
        }
        if n >= 3 {
            break;
        }
    }
    check!(
        failed,
        &got[..n.min(3)] == b"hi!",
        "read {:?}",
        core::str::from_utf8(&got[..n])
    );
    let r = hypercall(
        nr::CONSOLE_IO,
        u64::from(consoleio::READ),
        8,
        0xffff_8300_0000_0000,
        0,
        0,
    );
    check!(
        failed,
        r == -14,
        "console read into the hypervisor returned {r}"
    );
    if failed {
        Verdict::Failure("console input")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
