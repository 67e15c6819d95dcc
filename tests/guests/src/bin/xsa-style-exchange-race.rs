//! XENMEM_exchange against a racing writable mapping of one of its input frames.
//!
//! vCPU 0 exchanges 512 frames back and forth (512 extents of order 0 for one of order 9, then
//! that one for 512 of order 0) while vCPU 1 tries, with `update_va_mapping`, to map one of the
//! input frames writable, starting at a moment that sweeps across the exchange's run time.
//! Exactly one may win: either the mapping comes first and the exchange fails with -EINVAL
//! (nr_exchanged 0), or the exchange takes the frames first and the mapping is refused. An
//! exchange that succeeds while vCPU 1 holds a writable mapping of one of its input frames gave
//! a frame in use back to Hestia's allocator: a guest could then write memory that is (or will
//! be) someone else's (the frames went to the allocator with the mapping still live).
//!
//! Afterwards the guest's view of the frame table must be whole: its reservation never moved,
//! the M2P names the PFN each output frame was given, and every frame it holds can be given
//! back (nothing maps or types it), and the reservation then drops by exactly that many.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::memory::{MemoryExchange, MemoryReservation, cmd};
use hestia_guests::xen_abi::mmu::uvmf;
use hestia_guests::xen_abi::vcpu::cmd as vcpuop;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, current_reservation, hypercall, m2p, map_shared_info, memory_op, pfn_to_mfn,
    println, secondary_vcpu_context, system_time_ns,
};

const EINVAL: i64 = -22;
const ENOENT: i64 = -2;
/// Present, writable, user, accessed.
const RW: u64 = 0x27;
/// Where vCPU 1 maps its victim: in the padding of the initial mapping.
const SCRATCH: u64 = 0x3fe000;
/// Frames exchanged each round.
const FRAMES: usize = 512;
/// Order of the large extent.
const ORDER: u32 = 9;
/// Rounds; each starts vCPU 1's attempts at another fraction of the exchange's run time.
const ROUNDS: u64 = 240;

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACK: Stack = Stack([0; 16384]);

/// The round vCPU 0 started, the time it started the exchange at, and when vCPU 1 is to
/// begin its attempts (ns after that).
static ROUND: AtomicU64 = AtomicU64::new(0);
static START: AtomicU64 = AtomicU64::new(u64::MAX);
static DELAY: AtomicU64 = AtomicU64::new(0);
/// The frame vCPU 1 tries to map this round.
static VICTIM: AtomicU64 = AtomicU64::new(0);
/// vCPU 0 returned from the exchange of this round (vCPU 1 stops trying).
static STOP: AtomicU64 = AtomicU64::new(0);
/// vCPU 1 stopped trying in this round, and whether it holds the mapping.
static TRIED: AtomicU64 = AtomicU64::new(0);
static HELD: AtomicBool = AtomicBool::new(false);
/// vCPU 0 checked this round: vCPU 1 unmaps, then acknowledges in `UNMAPPED`.
static RELEASE: AtomicU64 = AtomicU64::new(0);
static UNMAPPED: AtomicU64 = AtomicU64::new(0);
/// vCPU 1's mapping attempts that were refused (the exchange had the frame).
static REFUSED: AtomicU64 = AtomicU64::new(0);

fn spin_until(done: impl Fn() -> bool) -> bool {
    let end = system_time_ns() + 5_000_000_000;
    while !done() {
        if system_time_ns() > end {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn map(pte: u64) -> i64 {
    hypercall(nr::UPDATE_VA_MAPPING, SCRATCH, pte, uvmf::INVLPG, 0, 0)
}

extern "C" fn secondary() -> ! {
    let mut round = 0;
    loop {
        while ROUND.load(SeqCst) == round {
            core::hint::spin_loop();
        }
        round = ROUND.load(SeqCst);
        let victim = VICTIM.load(SeqCst);
        let at = START.load(SeqCst).saturating_add(DELAY.load(SeqCst));
        let mut held = false;
        while STOP.load(SeqCst) != round && system_time_ns() < at {
            core::hint::spin_loop();
        }
        while STOP.load(SeqCst) != round {
            if map(victim << 12 | RW) == 0 {
                held = true;
                break;
            }
            REFUSED.fetch_add(1, SeqCst);
        }
        HELD.store(held, SeqCst);
        TRIED.store(round, SeqCst);
        while RELEASE.load(SeqCst) != round {
            core::hint::spin_loop();
        }
        if held {
            map(0);
        }
        UNMAPPED.store(round, SeqCst);
    }
}

/// The calling domain's extents of `order` listed at `list`.
fn extents(list: u64, nr: usize, order: u32) -> MemoryReservation {
    MemoryReservation {
        extent_start: list,
        nr_extents: nr as u64,
        extent_order: order,
        domid: DOMID_SELF,
        ..MemoryReservation::default()
    }
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    if map_shared_info(si) != 0 {
        return Verdict::Error("map shared_info");
    }
    match hypercall(nr::VCPU_OP, u64::from(vcpuop::IS_UP), 1, 0, 0, 0) {
        0 => {}
        ENOENT => return Verdict::Skip("one vCPU"),
        _ => return Verdict::Error("is_up(1)"),
    }
    // 512 frames far beyond the initial mapping: nothing maps them.
    let base = si.nr_pages.saturating_sub(4 * FRAMES as u64) & !(FRAMES as u64 - 1);
    if base < 8192 {
        return Verdict::Skip("too little memory");
    }
    let mut small = [0u64; FRAMES];
    for (i, m) in small.iter_mut().enumerate() {
        *m = pfn_to_mfn(si, base + i as u64);
    }
    let mut large = [base];
    let reserved = current_reservation();

    let stack_top = (&raw const AP_STACK) as u64 + size_of::<Stack>() as u64;
    let ctx = secondary_vcpu_context(si, secondary, stack_top);
    if hypercall(
        nr::VCPU_OP,
        u64::from(vcpuop::INITIALISE),
        1,
        &ctx as *const _ as u64,
        0,
        0,
    ) != 0
        || hypercall(nr::VCPU_OP, u64::from(vcpuop::UP), 1, 0, 0, 0) != 0
    {
        return Verdict::Error("bringing vCPU 1 up");
    }

    // Small frames are in `small` (MFNs) when `to_large`, else in the extent at `large[0]`.
    let mut to_large = true;
    let mut took = 0; // ns an exchange takes, measured as we go
    let (mut won_by_map, mut won_by_exchange) = (0, 0);
    for round in 1..=ROUNDS {
        let victim_index = (round * 97) % FRAMES as u64;
        let victim = if to_large {
            small[victim_index as usize]
        } else {
            large[0] + victim_index
        };
        // Sweep vCPU 1's first attempt from a fifth of the call's run time before its start
        // to past its end (the first rounds, with vCPU 1 late, measure that run time).
        let delay = if round <= 2 {
            u64::MAX / 2
        } else {
            took * (round % 24) / 20
        };
        DELAY.store(delay, SeqCst);
        VICTIM.store(victim, SeqCst);
        let start = system_time_ns() + 20_000;
        START.store(start, SeqCst);
        ROUND.store(round, SeqCst);
        while system_time_ns() < start + took / 5 {
            core::hint::spin_loop();
        }
        let mut x = if to_large {
            MemoryExchange {
                r#in: extents(small.as_ptr() as u64, FRAMES, 0),
                out: extents(large.as_mut_ptr() as u64, 1, ORDER),
                nr_exchanged: 0,
            }
        } else {
            for (i, m) in small.iter_mut().enumerate() {
                *m = base + i as u64;
            }
            MemoryExchange {
                r#in: extents(large.as_ptr() as u64, 1, ORDER),
                out: extents(small.as_mut_ptr() as u64, FRAMES, 0),
                nr_exchanged: 0,
            }
        };
        if to_large {
            large[0] = base;
        }
        let t0 = system_time_ns();
        let r = memory_op(cmd::EXCHANGE, &mut x);
        let t1 = system_time_ns();
        STOP.store(round, SeqCst);
        if !spin_until(|| TRIED.load(SeqCst) == round) {
            return Verdict::Error("vCPU 1 stopped answering");
        }
        let held = HELD.load(SeqCst);
        match r {
            0 => {
                won_by_exchange += 1;
                took = if took == 0 {
                    t1 - t0
                } else {
                    (took * 3 + (t1 - t0)) / 4
                };
                if held {
                    println!(
                        "round {round}: exchange succeeded while vCPU 1 maps input frame {victim:#x} writable"
                    );
                    failed = true;
                }
                check!(
                    failed,
                    x.nr_exchanged == x.r#in.nr_extents,
                    "round {round}: nr_exchanged {} after success",
                    x.nr_exchanged
                );
            }
            EINVAL => {
                won_by_map += 1;
                check!(
                    failed,
                    held && x.nr_exchanged == 0,
                    "round {round}: -EINVAL with the input unmapped ({held}), nr_exchanged {}",
                    x.nr_exchanged
                );
                // Nothing changed: the inputs are still ours (the lists were not written).
            }
            r => {
                println!("round {round}: exchange returned {r}");
                failed = true;
            }
        }
        RELEASE.store(round, SeqCst);
        if !spin_until(|| UNMAPPED.load(SeqCst) == round) {
            return Verdict::Error("vCPU 1 did not unmap");
        }
        if failed {
            break;
        }
        if r == 0 {
            // Every output frame is ours under the PFN we asked for.
            let outputs: &[u64] = if to_large { &large } else { &small };
            let per = if to_large { FRAMES as u64 } else { 1 };
            let wrong = outputs
                .iter()
                .enumerate()
                .find(|&(i, &m)| (0..per).any(|k| m2p(m + k) != base + i as u64 * per + k));
            check!(
                failed,
                wrong.is_none(),
                "round {round}: M2P of output {wrong:x?}"
            );
            to_large = !to_large;
        }
        check!(
            failed,
            current_reservation() == reserved,
            "round {round}: reservation {} != {reserved}",
            current_reservation()
        );
        if failed {
            break;
        }
    }
    println!(
        "{won_by_exchange} exchanges won, {won_by_map} lost to the mapping, {} refused mappings",
        REFUSED.load(SeqCst)
    );

    // Give everything back: each frame must be unused now.
    let frames: [u64; FRAMES] = if to_large {
        small
    } else {
        core::array::from_fn(|i| large[0] + i as u64)
    };
    let mut list = frames;
    let mut r = extents(list.as_mut_ptr() as u64, FRAMES, 0);
    let given = memory_op(cmd::DECREASE_RESERVATION, &mut r);
    check!(
        failed,
        given == FRAMES as i64,
        "decrease_reservation of the exchanged frames: {given} of {FRAMES}"
    );
    check!(
        failed,
        current_reservation() == reserved - FRAMES as i64,
        "reservation {} after giving {FRAMES} back, from {reserved}",
        current_reservation()
    );
    check!(
        failed,
        won_by_exchange > 0 && won_by_map > 0,
        "the sweep never let both sides win ({won_by_exchange}, {won_by_map})"
    );
    if failed {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
