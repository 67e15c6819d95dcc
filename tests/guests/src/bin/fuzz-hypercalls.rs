//! 100,000 hypercalls with random numbers and arguments (xorshift, seed printed): Hestia must
//! answer every one with a value or an errno and still answer afterwards; any panic or fault in
//! Hestia fails the scenario. Skipped: the calls that legitimately end or stall the fuzzer
//! (iret, sched_op shutdown/block/poll, multicall, fpu_taskswitch), and page-table calls and
//! console writes never point into the guest's own image (see `arg`).
#![no_std]
#![no_main]

use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, println, raw_hypercall};

const CALLS: u32 = 100_000;
const SCRATCH_SIZE: usize = 64 * 1024;

#[repr(C, align(4096))]
struct Scratch([u8; SCRATCH_SIZE]);
static mut SCRATCH: Scratch = Scratch([0; SCRATCH_SIZE]);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// An argument: small numbers, sub-command-like values, boundary values, hypervisor and
    /// guest addresses, or raw noise. `own_memory` allows pointers into the guest's scratch buffer.
    fn arg(&mut self, own_memory: bool) -> u64 {
        let r = self.next();
        match r % if own_memory { 8 } else { 4 } {
            0 => r >> 60,
            1 => (r >> 32) % 64,
            2 => [
                0,
                1,
                u64::MAX,
                0x7fff_ffff_ffff,
                0xffff_8000_0000_0000,
                0x8000_0000_0000_0000,
            ][(r >> 8) as usize % 6],
            3 => 0xffff_8000_0000_0000 + (r >> 20) % 0x0800_0000_0000,
            // Inside a scratch buffer: hypercalls that write their results to guest memory may
            // scribble there, never over the fuzzer itself.
            4 => (&raw const SCRATCH) as u64 + (r >> 24) % (SCRATCH_SIZE as u64 - 64),
            _ => r,
        }
    }
}

fn skipped(number: u32, a1: u64) -> bool {
    match number {
        nr::IRET | nr::MULTICALL | nr::FPU_TASKSWITCH | nr::SCHED_OP_COMPAT => true,
        // shutdown, block, poll, remote_shutdown; the rest of sched_op is fuzzed
        nr::SCHED_OP => matches!(a1 as u32, 1..=4),
        // VCPUOP_down of the only vCPU powers the domain off, as it should
        nr::VCPU_OP => a1 as u32 == 2,
        // CONSOLEIO_write takes any count (as Xen): from the mapped low pages it prints the image
        nr::CONSOLE_IO => a1 as u32 == 0,
        _ => false,
    }
}

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    // SAFETY: RDTSC only reads the time-stamp counter.
    let seed = unsafe { core::arch::x86_64::_rdtsc() } | 1;
    println!("fuzzing {CALLS} hypercalls, seed {seed:#x}");
    let mut rng = Rng(seed);
    let mut errors = 0u32;
    for _ in 0..CALLS {
        let r = rng.next();
        let number = if r.is_multiple_of(4) {
            (r >> 8) as u32
        } else {
            ((r >> 8) % 56) as u32
        };
        // Page-table calls with the guest's own addresses would let it unmap itself (a legal
        // self-crash), and console writes of its own memory could print a verdict line: those
        // calls get only hostile-class arguments.
        let own = !matches!(
            number,
            nr::MMU_UPDATE
                | nr::UPDATE_VA_MAPPING
                | nr::UPDATE_VA_MAPPING_OTHERDOMAIN
                | nr::MMUEXT_OP
                | nr::CONSOLE_IO
        );
        let args = [
            rng.arg(own),
            rng.arg(own),
            rng.arg(own),
            rng.arg(own),
            rng.arg(own),
        ];
        if skipped(number, args[0]) {
            continue;
        }
        if raw_hypercall(number, args[0], args[1], args[2], args[3], args[4]) < 0 {
            errors += 1;
        }
    }
    let ver = raw_hypercall(nr::XEN_VERSION, 0, 0, 0, 0, 0);
    println!("{errors} calls answered with an errno; Hestia still answers: {ver:#x}");
    check!(
        failed,
        ver == (4 << 16 | 17),
        "no answer after fuzzing ({ver:#x})"
    );
    if failed {
        Verdict::Failure("fuzz")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
