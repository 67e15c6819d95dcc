//! The hypercall table: one `const` array indexed by number, every slot `-ENOSYS` unless it
//! names a handler. The same table gives the names and the per-hypercall counters (debug key
//! `h` lists them from M1 on). Guests probe features by `-ENOSYS`, so nothing unimplemented may
//! answer anything else. Handlers get their [`Caller`] (the calling domain and its vCPU, found
//! once by the SYSCALL path) and the five argument registers (RDI, RSI, RDX, R10, R8), and
//! return a value or an [`Errno`]; those of the calls that can stop part way
//! ([`Handler::Stops`]) may return a [`Continuation`] instead, as a value ([`Stop`]), which the
//! SYSCALL path applies to the guest's frame ([`continuation::apply`]). An `ERESTART` from any
//! handler re-issues its call with the arguments it came with.

mod console_io;
mod continuation;
mod cpu_policy;
mod descriptor;
pub(crate) mod domctl;
pub(crate) mod event_channel;
mod event_fifo;
mod grant_table;
mod mca;
pub(crate) mod memory_op;
mod misc;
mod mmu;
mod physdev_op;
mod platform_op;
mod sched_op;
mod segment;
mod sysctl;
mod traps;
mod union;
mod vcpu_op;
mod xen_version;

use core::sync::atomic::{AtomicU64, Ordering};

use xen_abi::errno::Errno;
use xen_abi::xen::hypercall as nr;

use continuation::{Continuation, Stop};
use hestia_core::ids::VcpuId;

use crate::arch::x86_64::idt::TrapFrame;
use crate::arch::x86_64::percpu::{self, MAX_CPUS};
use crate::pv;
use crate::pv::domain::{Domain, Vcpu, this_vcpu_id};

/// Who issued a hypercall: a domain and its vCPU. Handlers act on the calling vCPU through this
/// value, never by asking which vCPU their CPU runs. Two words, passed in registers.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    domain: &'a Domain,
    /// One of `domain`'s vCPUs (so [`Caller::vcpu`] always finds it).
    vcpu: VcpuId,
}

impl<'a> Caller<'a> {
    /// The caller on this CPU: `domain`, which this CPU runs, and its vCPU this CPU runs
    /// (vCPU 0 should the scheduler's number not be one of the domain's, as
    /// [`Domain::this_vcpu`] chooses; never on a guest path).
    fn running(domain: &'a Domain) -> Self {
        let id = this_vcpu_id();
        let vcpu = if id.index() < domain.vcpus.len() {
            id
        } else {
            VcpuId::FIRST
        };
        Caller { domain, vcpu }
    }

    /// The calling domain.
    pub fn domain(self) -> &'a Domain {
        self.domain
    }

    /// The calling vCPU's id.
    pub fn vcpu_id(self) -> VcpuId {
        self.vcpu
    }

    /// The calling vCPU.
    pub fn vcpu(self) -> &'a spin::Mutex<Vcpu> {
        &self.domain.vcpus[self.vcpu.index()]
    }
}

/// A hypercall handler, of one of two kinds.
#[derive(Clone, Copy)]
enum Handler {
    /// Ends with a value or an errno.
    Ends(fn(Caller<'_>, &[u64; 5]) -> Result<u64, Errno>),
    /// Can also stop part way with a [`Continuation`]: the batches, the control calls and
    /// multicall.
    Stops(fn(Caller<'_>, &[u64; 5]) -> Result<u64, Stop>),
}

/// One table slot.
struct Slot {
    name: &'static str,
    handler: Option<Handler>,
}

const NR_HYPERCALLS: usize = 56;

const fn table() -> [Slot; NR_HYPERCALLS] {
    let mut t = [const {
        Slot {
            name: "",
            handler: None,
        }
    }; NR_HYPERCALLS];
    t[nr::FPU_TASKSWITCH as usize] = Slot {
        name: "fpu_taskswitch",
        handler: Some(Handler::Ends(misc::do_fpu_taskswitch)),
    };
    t[nr::SET_DEBUGREG as usize] = Slot {
        name: "set_debugreg",
        handler: Some(Handler::Ends(misc::do_set_debugreg)),
    };
    t[nr::GET_DEBUGREG as usize] = Slot {
        name: "get_debugreg",
        handler: Some(Handler::Ends(misc::do_get_debugreg)),
    };
    t[nr::VM_ASSIST as usize] = Slot {
        name: "vm_assist",
        handler: Some(Handler::Ends(misc::do_vm_assist)),
    };
    t[nr::SET_GDT as usize] = Slot {
        name: "set_gdt",
        handler: Some(Handler::Ends(descriptor::do_set_gdt)),
    };
    t[nr::UPDATE_DESCRIPTOR as usize] = Slot {
        name: "update_descriptor",
        handler: Some(Handler::Ends(descriptor::do_update_descriptor)),
    };
    t[nr::PHYSDEV_OP as usize] = Slot {
        name: "physdev_op",
        handler: Some(Handler::Ends(physdev_op::do_physdev_op)),
    };
    t[nr::PLATFORM_OP as usize] = Slot {
        name: "platform_op",
        handler: Some(Handler::Ends(platform_op::do_platform_op)),
    };
    t[nr::MEMORY_OP as usize] = Slot {
        name: "memory_op",
        handler: Some(Handler::Stops(memory_op::do_memory_op)),
    };
    t[nr::MULTICALL as usize] = Slot {
        name: "multicall",
        handler: Some(Handler::Stops(do_multicall)),
    };
    t[nr::MMU_UPDATE as usize] = Slot {
        name: "mmu_update",
        handler: Some(Handler::Stops(mmu::do_mmu_update)),
    };
    t[nr::UPDATE_VA_MAPPING as usize] = Slot {
        name: "update_va_mapping",
        handler: Some(Handler::Ends(mmu::do_update_va_mapping)),
    };
    t[nr::MMUEXT_OP as usize] = Slot {
        name: "mmuext_op",
        handler: Some(Handler::Stops(mmu::do_mmuext_op)),
    };
    t[nr::EVENT_CHANNEL_OP as usize] = Slot {
        name: "event_channel_op",
        handler: Some(Handler::Stops(event_channel::do_event_channel_op)),
    };
    t[nr::GRANT_TABLE_OP as usize] = Slot {
        name: "grant_table_op",
        handler: Some(Handler::Stops(grant_table::do_grant_table_op)),
    };
    t[nr::VCPU_OP as usize] = Slot {
        name: "vcpu_op",
        handler: Some(Handler::Ends(vcpu_op::do_vcpu_op)),
    };
    t[nr::SET_TIMER_OP as usize] = Slot {
        name: "set_timer_op",
        handler: Some(Handler::Ends(vcpu_op::do_set_timer_op)),
    };
    t[nr::SET_SEGMENT_BASE as usize] = Slot {
        name: "set_segment_base",
        handler: Some(Handler::Ends(segment::do_set_segment_base)),
    };
    t[nr::SET_TRAP_TABLE as usize] = Slot {
        name: "set_trap_table",
        handler: Some(Handler::Ends(traps::do_set_trap_table)),
    };
    t[nr::STACK_SWITCH as usize] = Slot {
        name: "stack_switch",
        handler: Some(Handler::Ends(traps::do_stack_switch)),
    };
    t[nr::SET_CALLBACKS as usize] = Slot {
        name: "set_callbacks",
        handler: Some(Handler::Ends(traps::do_set_callbacks)),
    };
    t[nr::CALLBACK_OP as usize] = Slot {
        name: "callback_op",
        handler: Some(Handler::Ends(traps::do_callback_op)),
    };
    t[nr::CONSOLE_IO as usize] = Slot {
        name: "console_io",
        handler: Some(Handler::Stops(console_io::do_console_io)),
    };
    t[nr::XEN_VERSION as usize] = Slot {
        name: "xen_version",
        handler: Some(Handler::Ends(xen_version::do_xen_version)),
    };
    t[nr::SYSCTL as usize] = Slot {
        name: "sysctl",
        handler: Some(Handler::Stops(sysctl::do_sysctl)),
    };
    t[nr::DOMCTL as usize] = Slot {
        name: "domctl",
        handler: Some(Handler::Stops(domctl::do_domctl)),
    };
    t[nr::MCA as usize] = Slot {
        name: "mca",
        handler: Some(Handler::Ends(mca::do_mca)),
    };
    t[nr::SCHED_OP as usize] = Slot {
        name: "sched_op",
        handler: Some(Handler::Ends(sched_op::do_sched_op)),
    };
    t
}

static TABLE: [Slot; NR_HYPERCALLS] = table();

/// Each CPU's hypercall counts, a row per CPU that only that CPU writes (so the count needs no
/// locked instruction on every hypercall, and none is lost), summed when printed.
#[repr(align(64))]
struct CallCounts([AtomicU64; NR_HYPERCALLS]);
static CALLS: [CallCounts; MAX_CPUS] =
    [const { CallCounts([const { AtomicU64::new(0) }; NR_HYPERCALLS]) }; MAX_CPUS];

/// Counts a call of hypercall `number` (below [`NR_HYPERCALLS`]) on this CPU.
#[inline(always)]
fn count_call(number: usize) {
    let row = &CALLS[percpu::current_index() as usize % MAX_CPUS].0;
    if let Some(n) = row.get(number) {
        n.store(n.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// Set by `trace=hypercalls`.
/// 0: off; 1: failing hypercalls (`trace=hypercall-errors`); 2: all (`trace=hypercalls`).
static TRACE: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// Turns hypercall tracing on, for every call or only for failing ones.
pub fn enable_trace(all: bool) {
    TRACE.fetch_max(if all { 2 } else { 1 }, Ordering::Relaxed);
}

/// The top of the guest's stack when the hypercall being traced was issued: hypercalls go
/// through one stub, so the return addresses there are what identifies the caller.
static TRACE_STACK: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// SYSCALL from a guest (the trap layer's `syscall` handler): a hypercall in guest kernel mode,
/// else a system call of the guest's own user space, which `pv::traps` bounces to its kernel.
#[unsafe(link_section = ".text.hot")]
pub fn syscall(f: &mut TrapFrame) {
    let Some(d) = pv::current() else {
        return pv::crash_unknown(f);
    };
    let c = Caller::running(d);
    if !pv::traps::in_kernel_mode() {
        // A system call of the guest's own user space.
        let r = pv::traps::guest_syscall(d, &mut c.vcpu().lock(), f);
        if let Err(why) = r {
            pv::domain_crash(d, f, why);
        }
        return;
    }
    // The whole of RAX names the hypercall, as in Xen: a number past 32 bits is -ENOSYS, never
    // the call its low half names (which would slip past the checks on the number below).
    let Ok(number) = u32::try_from(f.rax) else {
        f.rax = xen_abi::errno::Errno::ENOSYS.to_ret() as u64;
        return;
    };
    if number == xen_abi::xen::hypercall::IRET {
        let r = pv::traps::iret(d, &mut c.vcpu().lock(), f);
        if let Err(why) = r {
            return pv::domain_crash(d, f, why);
        }
        return;
    }
    let args = [f.rdi, f.rsi, f.rdx, f.r10, f.r8];
    let r = if TRACE.load(Ordering::Relaxed) == 0 {
        dispatch_inner(c, number, &args)
    } else {
        dispatch_traced(c, number, &args, Some(f.rsp))
    };
    match r {
        Ok(v) => f.rax = v as u64,
        Err(k) => {
            if let Err(why) = continuation::apply(c, f, number, k) {
                return pv::domain_crash(d, f, why);
            }
        }
    }
    if d.stopped.load(Ordering::Acquire) {
        pv::stop_after_domain(d);
    }
}

/// Runs hypercall `number` for `c`: the value for RAX (negative errno on failure), or the
/// continuation the call stopped with.
fn dispatch(c: Caller<'_>, number: u32, args: &[u64; 5]) -> Result<i64, Continuation> {
    if TRACE.load(Ordering::Relaxed) == 0 {
        dispatch_inner(c, number, args)
    } else {
        dispatch_traced(c, number, args, None)
    }
}

/// [`dispatch`] with `trace=hypercalls` on: one line per call (or per failing call), with the
/// top of the guest's stack `rsp` when the guest issued it (kept out of line: the hot path
/// only tests whether tracing is on).
#[cold]
#[inline(never)]
fn dispatch_traced(
    c: Caller<'_>,
    number: u32,
    args: &[u64; 5],
    rsp: Option<u64>,
) -> Result<i64, Continuation> {
    if let Some(rsp) = rsp {
        let words = crate::mm::guest::read_obj::<[u64; 3]>(rsp).unwrap_or_default();
        for (slot, w) in TRACE_STACK.iter().zip(words) {
            slot.store(w, Ordering::Relaxed);
        }
    }
    let r = dispatch_inner(c, number, args);
    // A call that stopped part way prints as 0 (its continuation then sets the guest's RAX).
    let rax = *r.as_ref().unwrap_or(&0);
    if TRACE.load(Ordering::Relaxed) == 2 || rax < 0 {
        log_call(c, number, args, rax);
    }
    r
}

/// One line of `trace=hypercalls`: the call, its arguments, its result and the caller's stack.
fn log_call(c: Caller<'_>, number: u32, args: &[u64; 5], rax: i64) {
    let name = TABLE.get(number as usize).map_or("", |s| s.name);
    crate::info!(
        "{}v{} hypercall {number} {name}({:#x}, {:#x}, {:#x}, {:#x}, {:#x}) = {rax} (stack {:#x} {:#x} {:#x})",
        c.domain.id,
        c.vcpu,
        args[0],
        args[1],
        args[2],
        args[3],
        args[4],
        TRACE_STACK[0].load(Ordering::Relaxed),
        TRACE_STACK[1].load(Ordering::Relaxed),
        TRACE_STACK[2].load(Ordering::Relaxed),
    );
}

#[inline(always)]
fn dispatch_inner(c: Caller<'_>, number: u32, args: &[u64; 5]) -> Result<i64, Continuation> {
    let Some(slot) = TABLE.get(number as usize) else {
        return Ok(Errno::ENOSYS.to_ret());
    };
    count_call(number as usize);
    let r = match slot.handler {
        Some(Handler::Ends(h)) => h(c, args).map_err(Stop::Errno),
        Some(Handler::Stops(h)) => h(c, args),
        None => Err(Stop::Errno(Errno::ENOSYS)),
    };
    match r {
        Ok(v) => Ok(v as i64),
        // Stopped part way (a long validation or teardown, or another vCPU's half-done
        // table in the way): issued again with the same arguments, as Xen's
        // `hypercall_create_continuation`. ERESTART never reaches the guest.
        Err(Stop::Errno(Errno::ERESTART)) => Err(Continuation::Again(*args)),
        Err(Stop::Errno(e)) => Ok(e.to_ret()),
        Err(Stop::Then(k)) => Err(k),
    }
}

/// `multicall` (13): runs each `multicall_entry {op, result, args[6]}` in order, storing each
/// result; failures do not stop the batch; nested multicalls are refused. An `iret` entry is
/// the last: the multicall stops there with [`Continuation::Iret`], which the SYSCALL path
/// performs, and the guest resumes at its frame's target with its RAX, as in Xen since
/// XSA-213 (`pv_do_multicall_call`'s `mc_exit`).
/// Preemptible: an entry that stops with a continuation gets its new arguments written back
/// into the list, and the multicall resumes at that entry.
fn do_multicall(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Stop> {
    let d = c.domain;
    let (list, n) = (a[0], a[1] & 0xffff_ffff);
    for i in 0..n {
        let entry = list.checked_add(i * 64).ok_or(Errno::EFAULT)?;
        if continuation::should_preempt(d, i) {
            return continuation::create([entry, n - i, 0, 0, 0]);
        }
        let e: [u64; 8] = crate::mm::guest::read_obj(entry)?;
        let op = e[0] as u32;
        if op == nr::IRET {
            return Err(Continuation::Iret(entry).into());
        }
        let result = if op == nr::MULTICALL {
            Ok(Errno::EINVAL.to_ret())
        } else {
            dispatch(c, op, &[e[2], e[3], e[4], e[5], e[6]])
        };
        match result {
            Ok(v) => crate::mm::guest::write_obj(entry + 8, &v)?,
            Err(Continuation::Again(args)) => {
                crate::mm::guest::write_obj(entry + 16, &args)?;
                return continuation::create([entry, n - i, 0, 0, 0]);
            }
            // Never: only a multicall stops at an iret, and none runs here.
            Err(k @ Continuation::Iret(_)) => return Err(k.into()),
        }
        if d.stopped.load(Ordering::Acquire) {
            break;
        }
    }
    Ok(0)
}

/// Prints the implemented hypercalls and their call counts.
pub fn dump(w: &mut dyn core::fmt::Write) {
    for (i, s) in TABLE
        .iter()
        .enumerate()
        .filter(|(_, s)| s.handler.is_some())
    {
        let _ = writeln!(
            w,
            "  hypercall {i:2} {:<16} {} calls",
            s.name,
            CALLS
                .iter()
                .map(|row| row.0[i].load(Ordering::Relaxed))
                .sum::<u64>()
        );
    }
}
