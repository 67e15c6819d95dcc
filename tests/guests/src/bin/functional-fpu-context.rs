//! x87, SSE and AVX state survive context switches between many vCPUs on few CPUs (issue 9,
//! item 2). Every vCPU of the domain (dom0 has `dom0_max_vcpus=8`, the machine 2 CPUs) loads its
//! own pattern: x87 control word and all 8 stack registers, MXCSR, XMM0-15 and, when CPUID
//! offers XSAVE and AVX (the vCPU then turns on CR4.OSXSAVE and XCR0's AVX bit itself, as a PV
//! kernel does), the upper halves of YMM0-15. Then thousands of rounds, each a SCHEDOP_yield
//! (every 16th a spin instead, some long enough to be preempted), after which every register must
//! still hold the vCPU's pattern. A hypervisor that saves or restores the wrong vCPU's state,
//! or part of it, or loses a vCPU's XCR0 or the upper YMM halves, fails here.
//!
//! The domain must have 8 vCPUs (or `vcpus=N`, up to 64, on its command line; `rounds=R`
//! changes the rounds): with fewer (a Hestia that gives only one vCPU per CPU) the test fails
//! and says so, since nothing would be switched. Each vCPU's runstate (time spent runnable, i.e.
//! switched out while it wanted to run) is printed as evidence of switching.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hestia_guests::xen_abi::vcpu::cmd as vcpuop;
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{
    EVENT_VECTOR, ExcFrame, SHARED_INFO_VA, Verdict, check, cmdline, forced_cpuid, hypercall,
    install_traps, map_shared_info, pfn_to_mfn, println, secondary_vcpu_context, shutdown,
    system_time_ns,
};

/// vCPUs the scenario gives the domain unless its command line says `vcpus=`.
const WANT_VCPUS: usize = 8;
/// Most vCPUs (a PV domain's limit in Hestia).
const MAX_VCPUS: usize = 64;
/// Rounds each vCPU runs unless the command line says `rounds=`.
const ROUNDS: u64 = 2000;
/// The rounds of this run.
static ROUNDS_WANTED: AtomicU64 = AtomicU64::new(ROUNDS);
/// Every 16th round spins for 2 ms instead of yielding, every 256th for 40 ms (longer than a
/// credit scheduler time slice, so the vCPU is preempted with its registers live).
const SPIN_NS: u64 = 2_000_000;
const LONG_SPIN_NS: u64 = 40_000_000;
const ENOENT: i64 = -2;
const EINVAL: i64 = -22;
/// CPUID.1 ECX: XSAVE, AVX.
const CPUID1_XSAVE: u32 = 1 << 26;
const CPUID1_AVX: u32 = 1 << 28;
/// CR4.OSXSAVE.
const CR4_OSXSAVE: u64 = 1 << 18;
/// XCR0: x87, SSE, AVX.
const XCR0_AVX: u64 = 0b111;
/// The bytes of XSETBV (`0f 01 d1`).
const XSETBV: [u8; 3] = [0x0f, 0x01, 0xd1];

/// What a vCPU loads: x87 values and control word, MXCSR, and 16 32-byte vector registers
/// (only the low 16 bytes of each without AVX).
#[repr(C, align(32))]
struct Pattern {
    vec: [[u64; 4]; 16],
    st: [u64; 8],
    fcw: u16,
    _pad: u16,
    mxcsr: u32,
}

impl Pattern {
    fn new(me: usize) -> Self {
        let mut vec = [[0; 4]; 16];
        for (r, reg) in vec.iter_mut().enumerate() {
            for (w, word) in reg.iter_mut().enumerate() {
                *word = splitmix((me as u64) << 16 | (r as u64) << 8 | w as u64);
            }
        }
        let me = me as u64;
        Pattern {
            vec,
            // Exact doubles, distinct per vCPU and register.
            st: core::array::from_fn(|i| f64::to_bits((me * 16 + i as u64) as f64 + 0.25)),
            // All exceptions masked, 64-bit precision, a rounding mode per vCPU.
            fcw: 0x037f | ((me as u16 & 3) << 10),
            _pad: 0,
            // All exceptions masked, a rounding mode and flush-to-zero per vCPU.
            mxcsr: 0x1f80 | ((me as u32 & 3) << 13) | if me & 4 != 0 { 0x8000 } else { 0 },
        }
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Loads `p` into the registers: x87 (8 pushes after FNINIT: a full stack), MXCSR, and the
/// vector registers (whole YMMs with `avx`, else XMMs).
fn load(p: &Pattern, avx: bool) {
    // SAFETY: x87 and MXCSR from `p` (valid control values); this soft-float guest never uses
    // these registers itself.
    unsafe {
        core::arch::asm!(
            "fninit", "fldcw ({fcw})",
            "fldl 0x00({st})", "fldl 0x08({st})", "fldl 0x10({st})", "fldl 0x18({st})",
            "fldl 0x20({st})", "fldl 0x28({st})", "fldl 0x30({st})", "fldl 0x38({st})",
            "ldmxcsr ({mxcsr})",
            fcw = in(reg) &p.fcw, st = in(reg) p.st.as_ptr(), mxcsr = in(reg) &p.mxcsr,
            options(att_syntax, nostack)
        )
    };
    if avx {
        // SAFETY: 32-byte aligned loads from `p`; AVX is enabled in XCR0 and CR4.OSXSAVE.
        unsafe {
            core::arch::asm!(
                "vmovdqa 0x000({p}), %ymm0", "vmovdqa 0x020({p}), %ymm1",
                "vmovdqa 0x040({p}), %ymm2", "vmovdqa 0x060({p}), %ymm3",
                "vmovdqa 0x080({p}), %ymm4", "vmovdqa 0x0a0({p}), %ymm5",
                "vmovdqa 0x0c0({p}), %ymm6", "vmovdqa 0x0e0({p}), %ymm7",
                "vmovdqa 0x100({p}), %ymm8", "vmovdqa 0x120({p}), %ymm9",
                "vmovdqa 0x140({p}), %ymm10", "vmovdqa 0x160({p}), %ymm11",
                "vmovdqa 0x180({p}), %ymm12", "vmovdqa 0x1a0({p}), %ymm13",
                "vmovdqa 0x1c0({p}), %ymm14", "vmovdqa 0x1e0({p}), %ymm15",
                p = in(reg) p.vec.as_ptr(), options(att_syntax, nostack)
            )
        };
    } else {
        // SAFETY: 16-byte aligned loads from `p`.
        unsafe {
            core::arch::asm!(
                "movdqa 0x000({p}), %xmm0", "movdqa 0x020({p}), %xmm1",
                "movdqa 0x040({p}), %xmm2", "movdqa 0x060({p}), %xmm3",
                "movdqa 0x080({p}), %xmm4", "movdqa 0x0a0({p}), %xmm5",
                "movdqa 0x0c0({p}), %xmm6", "movdqa 0x0e0({p}), %xmm7",
                "movdqa 0x100({p}), %xmm8", "movdqa 0x120({p}), %xmm9",
                "movdqa 0x140({p}), %xmm10", "movdqa 0x160({p}), %xmm11",
                "movdqa 0x180({p}), %xmm12", "movdqa 0x1a0({p}), %xmm13",
                "movdqa 0x1c0({p}), %xmm14", "movdqa 0x1e0({p}), %xmm15",
                p = in(reg) p.vec.as_ptr(), options(att_syntax, nostack)
            )
        };
    }
}

/// The registers as they are: an FXSAVE image and the upper YMM halves.
#[repr(C, align(64))]
#[derive(Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    fx: [u8; 512],
    ymmh: [[u8; 16]; 16],
}

impl Snapshot {
    fn take(avx: bool) -> Self {
        let mut s = Snapshot {
            fx: [0; 512],
            ymmh: [[0; 16]; 16],
        };
        // SAFETY: FXSAVE stores 512 bytes into the 64-byte aligned `fx`; it only reads the
        // registers.
        unsafe {
            core::arch::asm!("fxsave64 ({p})", p = in(reg) s.fx.as_mut_ptr(), options(att_syntax, nostack))
        };
        if avx {
            // SAFETY: 16-byte stores into `ymmh`; AVX is enabled.
            unsafe {
                core::arch::asm!(
                    "vextractf128 $1, %ymm0, 0x00({q})", "vextractf128 $1, %ymm1, 0x10({q})",
                    "vextractf128 $1, %ymm2, 0x20({q})", "vextractf128 $1, %ymm3, 0x30({q})",
                    "vextractf128 $1, %ymm4, 0x40({q})", "vextractf128 $1, %ymm5, 0x50({q})",
                    "vextractf128 $1, %ymm6, 0x60({q})", "vextractf128 $1, %ymm7, 0x70({q})",
                    "vextractf128 $1, %ymm8, 0x80({q})", "vextractf128 $1, %ymm9, 0x90({q})",
                    "vextractf128 $1, %ymm10, 0xa0({q})", "vextractf128 $1, %ymm11, 0xb0({q})",
                    "vextractf128 $1, %ymm12, 0xc0({q})", "vextractf128 $1, %ymm13, 0xd0({q})",
                    "vextractf128 $1, %ymm14, 0xe0({q})", "vextractf128 $1, %ymm15, 0xf0({q})",
                    q = in(reg) s.ymmh.as_mut_ptr(), options(att_syntax, nostack)
                )
            };
        }
        s
    }

    /// The first register that differs from `want`, by index into [`WHAT`], if any. The x87
    /// instruction and data pointers and the opcode are not state a switch must keep.
    fn first_difference(&self, want: &Snapshot) -> Option<usize> {
        let fx = |r: core::ops::Range<usize>| self.fx.get(r.clone()) != want.fx.get(r);
        if fx(0..5) {
            return Some(0); // FCW, FSW, FTW
        }
        if fx(24..28) {
            return Some(1);
        }
        if let Some(i) = (0..8).find(|i| fx(32 + 16 * i..42 + 16 * i)) {
            return Some(2 + i);
        }
        if let Some(i) = (0..16).find(|&i| fx(160 + 16 * i..176 + 16 * i)) {
            return Some(10 + i);
        }
        (0..16)
            .find(|&i| self.ymmh.get(i) != want.ymmh.get(i))
            .map(|i| 26 + i)
    }

    /// Whether the snapshot shows `p` loaded: control words, a full x87 stack, the vectors.
    fn shows(&self, p: &Pattern, avx: bool) -> bool {
        let bytes = |w: &[u64]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec16>();
        self.fx[0..2] == p.fcw.to_le_bytes()
            && self.fx[4] == 0xff
            && self.fx[24..28] == p.mxcsr.to_le_bytes()
            && (0..16).all(|i| {
                let v = &p.vec[i];
                self.fx[160 + 16 * i..176 + 16 * i] == bytes(&v[..2]).0
                    && (!avx || self.ymmh[i] == bytes(&v[2..]).0)
            })
    }
}

/// 16 bytes collected from an iterator (two words of a vector register).
struct Vec16([u8; 16]);

impl FromIterator<u8> for Vec16 {
    fn from_iter<I: IntoIterator<Item = u8>>(it: I) -> Self {
        let mut b = [0; 16];
        for (d, s) in b.iter_mut().zip(it) {
            *d = s;
        }
        Vec16(b)
    }
}

/// What [`Snapshot::first_difference`] names.
const WHAT: [&str; 42] = [
    "x87 control/status/tag",
    "MXCSR",
    "ST(0)",
    "ST(1)",
    "ST(2)",
    "ST(3)",
    "ST(4)",
    "ST(5)",
    "ST(6)",
    "ST(7)",
    "XMM0",
    "XMM1",
    "XMM2",
    "XMM3",
    "XMM4",
    "XMM5",
    "XMM6",
    "XMM7",
    "XMM8",
    "XMM9",
    "XMM10",
    "XMM11",
    "XMM12",
    "XMM13",
    "XMM14",
    "XMM15",
    "YMM0 upper",
    "YMM1 upper",
    "YMM2 upper",
    "YMM3 upper",
    "YMM4 upper",
    "YMM5 upper",
    "YMM6 upper",
    "YMM7 upper",
    "YMM8 upper",
    "YMM9 upper",
    "YMM10 upper",
    "YMM11 upper",
    "YMM12 upper",
    "YMM13 upper",
    "YMM14 upper",
    "YMM15 upper",
];

/// CPUID offers XSAVE and AVX (decided by vCPU 0).
static AVX: AtomicU64 = AtomicU64::new(0);
/// Secondary vCPUs running, and released to start their rounds.
static ALIVE: AtomicU64 = AtomicU64::new(0);
static GO: AtomicU64 = AtomicU64::new(0);
/// Secondary vCPUs done.
static DONE: AtomicU64 = AtomicU64::new(0);
/// Per vCPU: mismatching rounds, the first one (round << 8 | WHAT index, plus 1), AVX in use,
/// its pattern not seen right after loading it.
static BAD: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
static FIRST: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
static USED_AVX: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
static LOAD_BAD: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// XSETBVs that raised #GP.
static XSETBV_GP: AtomicU64 = AtomicU64::new(0);

/// The vCPU this code runs on: secondaries run on their own stack slot, vCPU 0 elsewhere.
fn this_vcpu() -> usize {
    let rsp: u64;
    // SAFETY: reads RSP.
    unsafe { core::arch::asm!("mov %rsp, {}", out(reg) rsp, options(att_syntax, nomem, nostack)) };
    let base = (&raw const STACKS) as u64;
    let size = size_of::<Stack>() as u64;
    if (base..base + size * (MAX_VCPUS as u64 - 1)).contains(&rsp) {
        ((rsp - base) / size) as usize + 1
    } else {
        0
    }
}

fn handler(vector: u64, f: &mut ExcFrame) {
    if vector == EVENT_VECTOR {
        // The spurious event a vcpu_info registration marks pending (vCPUs 32 and up): take
        // it off (evtchn_upcall_pending, evtchn_pending_sel) and go on.
        let me = this_vcpu() as u64;
        let info = if me >= 32 {
            (&raw const VCPU_INFOS) as u64 + (me - 32) * 64
        } else {
            SHARED_INFO_VA + me * 64
        };
        // SAFETY: the running vCPU's own vcpu_info (its registered one or its shared_info
        // slot), mapped writable in this guest.
        unsafe {
            core::ptr::write_volatile(info as *mut u8, 0);
            core::ptr::write_volatile((info + 8) as *mut u64, 0);
        }
        return;
    }
    // SAFETY: reads the 3 bytes at the faulting RIP, in this guest's own mapped code.
    let insn = unsafe { core::ptr::read_unaligned(f.rip as *const [u8; 3]) };
    if vector == 13 && insn == XSETBV {
        XSETBV_GP.fetch_add(1, SeqCst);
        f.rip += 3;
        return;
    }
    println!("unexpected exception {vector} at {:#x}", f.rip);
    println!("Test result: FAILURE (unexpected exception)");
    shutdown(hestia_guests::xen_abi::sched::reason::POWEROFF);
}

/// Turns on CR4.OSXSAVE and XCR0's AVX bit for this vCPU (each vCPU has its own XCR0, which
/// starts as x87|SSE on Xen); true when XCR0 then has AVX.
fn enable_avx() -> bool {
    let gp = XSETBV_GP.load(SeqCst);
    // SAFETY: CR4 and XCR0 moves are emulated for the PV kernel; a refused XSETBV raises #GP,
    // which the handler skips.
    unsafe {
        core::arch::asm!(
            "mov %cr4, {t}", "or {bit}, {t}", "mov {t}, %cr4",
            t = out(reg) _, bit = in(reg) CR4_OSXSAVE, options(att_syntax, nostack)
        );
        core::arch::asm!("xsetbv", in("ecx") 0, in("eax") XCR0_AVX as u32, in("edx") 0, options(nostack));
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: XGETBV reads XCR0 (CR4.OSXSAVE is set in the real CR4 wherever XSAVE exists).
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") _hi, options(nostack))
    };
    XSETBV_GP.load(SeqCst) == gp && u64::from(lo) & XCR0_AVX == XCR0_AVX
}

fn yield_cpu() {
    hypercall(nr::SCHED_OP, 0, 0, 0, 0, 0); // SCHEDOP_yield
}

/// One vCPU's test: load its pattern, then rounds of yielding or spinning, checking after each.
fn rounds(me: usize) {
    let avx = AVX.load(SeqCst) != 0 && enable_avx();
    USED_AVX[me].store(u64::from(avx), SeqCst);
    let pattern = Pattern::new(me);
    load(&pattern, avx);
    let want = Snapshot::take(avx);
    if !want.shows(&pattern, avx) {
        LOAD_BAD[me].store(1, SeqCst);
    }
    for round in 0..ROUNDS_WANTED.load(SeqCst) {
        if round % 16 == 15 {
            let ns = if round % 256 == 255 {
                LONG_SPIN_NS
            } else {
                SPIN_NS
            };
            let end = system_time_ns() + ns;
            while system_time_ns() < end {
                core::hint::spin_loop();
            }
        } else {
            yield_cpu();
        }
        let got = Snapshot::take(avx);
        if let Some(what) = got.first_difference(&want) {
            if BAD[me].fetch_add(1, SeqCst) == 0 {
                FIRST[me].store((round << 8 | what as u64) + 1, SeqCst);
            }
            load(&pattern, avx);
        }
    }
}

/// `vcpu_info`s of vCPUs 32-63 (64 bytes each), registered before they start (Hestia writes
/// them; the guest only takes their address).
#[repr(C, align(4096))]
struct VcpuInfos([u8; 4096]);
static mut VCPU_INFOS: VcpuInfos = VcpuInfos([0; 4096]);

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut STACKS: [Stack; MAX_VCPUS - 1] = [const { Stack([0; 16384]) }; MAX_VCPUS - 1];

fn stack_top(vcpu: usize) -> u64 {
    (&raw const STACKS) as u64 + (vcpu * size_of::<Stack>()) as u64
}

/// Secondary vCPU `n` runs on stack `n - 1`.
extern "C" fn secondary() -> ! {
    let me = this_vcpu();
    ALIVE.fetch_add(1, SeqCst);
    while GO.load(SeqCst) == 0 {
        yield_cpu();
    }
    rounds(me);
    DONE.fetch_add(1, SeqCst);
    loop {
        hypercall(nr::SCHED_OP, 1, 0, 0, 0, 0); // SCHEDOP_block: nothing will wake it
    }
}

/// The domain's vCPU count: ids until VCPUOP_is_up says ENOENT.
fn vcpu_count() -> usize {
    (1..64)
        .find(|&i| hypercall(nr::VCPU_OP, u64::from(vcpuop::IS_UP), i, 0, 0, 0) == ENOENT)
        .unwrap_or(64) as usize
}

/// Yields until `done` holds, for at most `secs`.
fn wait(secs: u64, done: impl Fn() -> bool) -> bool {
    let end = system_time_ns() + secs * 1_000_000_000;
    while !done() {
        if system_time_ns() > end {
            return false;
        }
        yield_cpu();
    }
    true
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    check!(failed, map_shared_info(si) == 0, "map shared_info");
    install_traps(handler);
    let arg = |key: &str| {
        cmdline(si)
            .split(' ')
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let want = arg("vcpus").map_or(WANT_VCPUS, |v| (v as usize).min(MAX_VCPUS));
    if let Some(r) = arg("rounds") {
        ROUNDS_WANTED.store(r, SeqCst);
    }
    let n = vcpu_count();
    if n != want {
        println!(
            "FAIL: the domain has {n} vCPUs, expected {want} (dom0_max_vcpus={want}): \
             more vCPUs than CPUs are needed for context switches"
        );
        return Verdict::Failure("not the expected number of vCPUs");
    }
    let (_, _, c1, _) = forced_cpuid(1, 0);
    let avx = c1 & CPUID1_XSAVE != 0 && c1 & CPUID1_AVX != 0;
    AVX.store(u64::from(avx), SeqCst);
    println!(
        "{n} vCPUs; AVX {}",
        if avx {
            "offered: YMM checked"
        } else {
            "not offered: x87 and SSE only"
        }
    );

    if n > 32 {
        // Xen refuses to start vCPU 32 while it has no vcpu_info of its own.
        let ctx = secondary_vcpu_context(si, secondary, stack_top(32));
        let r = hypercall(
            nr::VCPU_OP,
            u64::from(vcpuop::INITIALISE),
            32,
            &ctx as *const _ as u64,
            0,
            0,
        );
        check!(
            failed,
            r == EINVAL,
            "VCPUOP_initialise of vCPU 32 without a registered vcpu_info: {r}, not -EINVAL"
        );
    }
    for i in 1..n {
        // Beyond the 32 vcpu_info slots of shared_info a vCPU needs its own first (Xen refuses
        // VCPUOP_initialise otherwise), as Linux registers one per CPU.
        if i >= 32 {
            let va = (&raw const VCPU_INFOS) as u64 + (i as u64 - 32) * 64;
            let arg = [pfn_to_mfn(si, va >> 12), va & 0xfff];
            let r = hypercall(
                nr::VCPU_OP,
                u64::from(vcpuop::REGISTER_VCPU_INFO),
                i as u64,
                arg.as_ptr() as u64,
                0,
                0,
            );
            if r != 0 {
                println!("vCPU {i}: register_vcpu_info: {r}");
                return Verdict::Error("cannot register the vCPUs' vcpu_info");
            }
        }
        let ctx = secondary_vcpu_context(si, secondary, stack_top(i));
        let r = hypercall(
            nr::VCPU_OP,
            u64::from(vcpuop::INITIALISE),
            i as u64,
            &ctx as *const _ as u64,
            0,
            0,
        );
        let r = if r == 0 {
            hypercall(nr::VCPU_OP, u64::from(vcpuop::UP), i as u64, 0, 0, 0)
        } else {
            r
        };
        if r != 0 {
            println!("vCPU {i}: initialise/up: {r}");
            return Verdict::Error("cannot bring up the vCPUs");
        }
    }
    if !wait(60, || ALIVE.load(SeqCst) == n as u64 - 1) {
        return Verdict::Error("the secondary vCPUs do not run");
    }
    GO.store(1, SeqCst);
    let t0 = system_time_ns();
    rounds(0);
    let all_done = wait(300, || DONE.load(SeqCst) == n as u64 - 1);
    println!(
        "{} rounds per vCPU in {} ms",
        ROUNDS_WANTED.load(SeqCst),
        (system_time_ns() - t0) / 1_000_000
    );
    check!(
        failed,
        all_done,
        "only {} of {} secondary vCPUs finished",
        DONE.load(SeqCst),
        n - 1
    );

    for me in 0..n {
        let mut info = [0u64; 6]; // vcpu_runstate_info: state, entry time, time[4]
        hypercall(
            nr::VCPU_OP,
            u64::from(vcpuop::GET_RUNSTATE_INFO),
            me as u64,
            info.as_mut_ptr() as u64,
            0,
            0,
        );
        let bad = BAD[me].load(SeqCst);
        println!(
            "vCPU {me}: {}AVX, {bad} bad rounds, runnable (switched out) {} ms",
            if USED_AVX[me].load(SeqCst) != 0 {
                ""
            } else {
                "no "
            },
            info[3] / 1_000_000
        );
        check!(
            failed,
            LOAD_BAD[me].load(SeqCst) == 0,
            "vCPU {me}: its pattern did not load"
        );
        check!(
            failed,
            USED_AVX[me].load(SeqCst) == u64::from(avx),
            "vCPU {me}: could not enable AVX in XCR0"
        );
        let first = FIRST[me].load(SeqCst);
        if let Some(f) = first.checked_sub(1) {
            println!(
                "FAIL: vCPU {me}: {bad} rounds found registers changed, first round {}: {}",
                f >> 8,
                WHAT.get((f & 0xff) as usize).unwrap_or(&"?")
            );
            failed = true;
        }
    }
    if failed {
        Verdict::Failure("FPU state lost or mixed up across context switches")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
