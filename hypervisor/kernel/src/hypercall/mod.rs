//! The hypercall table: one `const` array indexed by number, every slot `-ENOSYS` unless it
//! names a handler. The same table gives the names and the per-hypercall counters (debug key
//! `h` lists them from M1 on). Guests probe features by `-ENOSYS`, so nothing unimplemented may
//! answer anything else. Handlers get the calling domain and the five argument registers
//! (RDI, RSI, RDX, R10, R8) and return a value or an [`Errno`].

mod console_io;
pub mod continuation;
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

use crate::arch::x86_64::idt::TrapFrame;
use crate::pv;
use crate::pv::domain::{Domain, this_vcpu_id};

/// A hypercall handler.
type Handler = fn(&Domain, [u64; 5]) -> Result<u64, Errno>;

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
        handler: Some(misc::do_fpu_taskswitch),
    };
    t[nr::SET_DEBUGREG as usize] = Slot {
        name: "set_debugreg",
        handler: Some(misc::do_set_debugreg),
    };
    t[nr::GET_DEBUGREG as usize] = Slot {
        name: "get_debugreg",
        handler: Some(misc::do_get_debugreg),
    };
    t[nr::VM_ASSIST as usize] = Slot {
        name: "vm_assist",
        handler: Some(misc::do_vm_assist),
    };
    t[nr::SET_GDT as usize] = Slot {
        name: "set_gdt",
        handler: Some(descriptor::do_set_gdt),
    };
    t[nr::UPDATE_DESCRIPTOR as usize] = Slot {
        name: "update_descriptor",
        handler: Some(descriptor::do_update_descriptor),
    };
    t[nr::PHYSDEV_OP as usize] = Slot {
        name: "physdev_op",
        handler: Some(physdev_op::do_physdev_op),
    };
    t[nr::PLATFORM_OP as usize] = Slot {
        name: "platform_op",
        handler: Some(platform_op::do_platform_op),
    };
    t[nr::MEMORY_OP as usize] = Slot {
        name: "memory_op",
        handler: Some(memory_op::do_memory_op),
    };
    t[nr::MULTICALL as usize] = Slot {
        name: "multicall",
        handler: Some(do_multicall),
    };
    t[nr::MMU_UPDATE as usize] = Slot {
        name: "mmu_update",
        handler: Some(mmu::do_mmu_update),
    };
    t[nr::UPDATE_VA_MAPPING as usize] = Slot {
        name: "update_va_mapping",
        handler: Some(mmu::do_update_va_mapping),
    };
    t[nr::MMUEXT_OP as usize] = Slot {
        name: "mmuext_op",
        handler: Some(mmu::do_mmuext_op),
    };
    t[nr::EVENT_CHANNEL_OP as usize] = Slot {
        name: "event_channel_op",
        handler: Some(event_channel::do_event_channel_op),
    };
    t[nr::GRANT_TABLE_OP as usize] = Slot {
        name: "grant_table_op",
        handler: Some(grant_table::do_grant_table_op),
    };
    t[nr::VCPU_OP as usize] = Slot {
        name: "vcpu_op",
        handler: Some(vcpu_op::do_vcpu_op),
    };
    t[nr::SET_TIMER_OP as usize] = Slot {
        name: "set_timer_op",
        handler: Some(vcpu_op::do_set_timer_op),
    };
    t[nr::SET_SEGMENT_BASE as usize] = Slot {
        name: "set_segment_base",
        handler: Some(segment::do_set_segment_base),
    };
    t[nr::SET_TRAP_TABLE as usize] = Slot {
        name: "set_trap_table",
        handler: Some(traps::do_set_trap_table),
    };
    t[nr::STACK_SWITCH as usize] = Slot {
        name: "stack_switch",
        handler: Some(traps::do_stack_switch),
    };
    t[nr::SET_CALLBACKS as usize] = Slot {
        name: "set_callbacks",
        handler: Some(traps::do_set_callbacks),
    };
    t[nr::CALLBACK_OP as usize] = Slot {
        name: "callback_op",
        handler: Some(traps::do_callback_op),
    };
    t[nr::CONSOLE_IO as usize] = Slot {
        name: "console_io",
        handler: Some(console_io::do_console_io),
    };
    t[nr::XEN_VERSION as usize] = Slot {
        name: "xen_version",
        handler: Some(xen_version::do_xen_version),
    };
    t[nr::SYSCTL as usize] = Slot {
        name: "sysctl",
        handler: Some(sysctl::do_sysctl),
    };
    t[nr::DOMCTL as usize] = Slot {
        name: "domctl",
        handler: Some(domctl::do_domctl),
    };
    t[nr::MCA as usize] = Slot {
        name: "mca",
        handler: Some(mca::do_mca),
    };
    t[nr::SCHED_OP as usize] = Slot {
        name: "sched_op",
        handler: Some(sched_op::do_sched_op),
    };
    t
}

static TABLE: [Slot; NR_HYPERCALLS] = table();
static CALLS: [AtomicU64; NR_HYPERCALLS] = [const { AtomicU64::new(0) }; NR_HYPERCALLS];

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
    let kernel_mode = d.this_vcpu().lock().kernel_mode;
    if !kernel_mode {
        // A system call of the guest's own user space.
        let r = pv::traps::guest_syscall(d, &mut d.this_vcpu().lock(), f);
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
        let r = pv::traps::iret(d, &mut d.this_vcpu().lock(), f);
        if let Err(why) = r {
            return pv::domain_crash(d, f, why);
        }
        return;
    }
    let args = [f.rdi, f.rsi, f.rdx, f.r10, f.r8];
    f.rax = dispatch_from(d, number, args, f.rsp) as u64;
    continuation::apply(f, u64::from(number));
    // Only a multicall can leave an iret to perform (its slot is a lock: not on every call).
    if number == xen_abi::xen::hypercall::MULTICALL
        && let Some(entry) = take_multicall_iret()
    {
        if let Err(why) = pv::traps::iret(d, &mut d.this_vcpu().lock(), f) {
            return pv::domain_crash(d, f, why);
        }
        // The entry's result is the frame's RAX, written best effort (through the page
        // tables of the mode the iret returned to), as Xen writes it.
        let _ = entry
            .checked_add(8)
            .map(|result| crate::mm::guest::write_obj(result, &f.rax));
        // Xen's multicall returns that result through an `int`: the guest's RAX is the low
        // 32 bits of the frame's, sign-extended (seen on the rig).
        f.rax = f.rax as i32 as i64 as u64;
    }
    if d.dying.load(Ordering::Acquire) {
        pv::stop_after_domain(d);
    }
}

/// Runs the hypercall a guest issued with SYSCALL, its stack at `rsp`; see [`dispatch`].
#[unsafe(link_section = ".text.hot")]
pub fn dispatch_from(d: &Domain, number: u32, args: [u64; 5], rsp: u64) -> i64 {
    if TRACE.load(Ordering::Relaxed) != 0 {
        let words = crate::mm::guest::read_obj::<[u64; 3]>(rsp).unwrap_or_default();
        for (slot, w) in TRACE_STACK.iter().zip(words) {
            slot.store(w, Ordering::Relaxed);
        }
    }
    dispatch(d, number, args)
}

/// Runs hypercall `number` for `d`; returns the value for RAX (negative errno on failure).
#[unsafe(link_section = ".text.hot")]
pub fn dispatch(d: &Domain, number: u32, args: [u64; 5]) -> i64 {
    let r = dispatch_inner(d, number, args);
    let trace = TRACE.load(Ordering::Relaxed);
    if trace == 2 || (trace == 1 && r < 0) {
        let name = TABLE.get(number as usize).map_or("", |s| s.name);
        crate::info!(
            "{}v{} hypercall {number} {name}({:#x}, {:#x}, {:#x}, {:#x}, {:#x}) = {r} (stack {:#x} {:#x} {:#x})",
            d.id,
            this_vcpu_id(),
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
    r
}

#[unsafe(link_section = ".text.hot")]
fn dispatch_inner(d: &Domain, number: u32, args: [u64; 5]) -> i64 {
    let Some(slot) = TABLE.get(number as usize) else {
        return Errno::ENOSYS.to_ret();
    };
    CALLS[number as usize].fetch_add(1, Ordering::Relaxed);
    match slot.handler {
        Some(h) => match h(d, args) {
            Ok(v) => v as i64,
            // Stopped part way (a long validation or teardown, or another vCPU's half-done
            // table in the way): issued again with the same arguments, as Xen's
            // `hypercall_create_continuation`. ERESTART never reaches the guest.
            Err(Errno::ERESTART) => continuation::create(args).map_or(0, |v| v as i64),
            Err(e) => e.to_ret(),
        },
        None => Errno::ENOSYS.to_ret(),
    }
}

/// The multicall entry whose op is `iret`, per CPU, once the multicall stopped at it: the
/// SYSCALL path performs the iret ([`take_multicall_iret`]), since only it holds the trap
/// frame. Only this CPU sets or takes its slot, with interrupts off.
static MULTICALL_IRET: [spin::Mutex<Option<u64>>; crate::arch::x86_64::percpu::MAX_CPUS] =
    [const { spin::Mutex::new(None) }; crate::arch::x86_64::percpu::MAX_CPUS];

fn multicall_iret_slot() -> &'static spin::Mutex<Option<u64>> {
    let cpu = crate::arch::x86_64::percpu::current_index() as usize;
    &MULTICALL_IRET[cpu % MULTICALL_IRET.len()]
}

/// After a hypercall returned: the address of the multicall entry whose `iret` is still to be
/// performed on the guest's frame, if the hypercall was a multicall that reached one. The
/// caller does the iret (as if the guest had issued it instead of the multicall, its frame at
/// the guest's RSP) and stores the frame's RAX in the entry's result, as Xen does.
pub fn take_multicall_iret() -> Option<u64> {
    multicall_iret_slot().lock().take()
}

/// `multicall` (13): runs each `multicall_entry {op, result, args[6]}` in order, storing each
/// result; failures do not stop the batch; nested multicalls are refused. An `iret` entry is
/// performed (by the SYSCALL path: [`take_multicall_iret`]) and is the last: the guest resumes
/// at its frame's target with its RAX, as in Xen since XSA-213 (`pv_do_multicall_call`'s
/// `mc_exit`).
/// Preemptible: an entry that asks for a continuation gets its new arguments written back into
/// the list, and the multicall resumes at that entry.
fn do_multicall(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    let (list, n) = (a[0], a[1] & 0xffff_ffff);
    for i in 0..n {
        let entry = list.checked_add(i * 64).ok_or(Errno::EFAULT)?;
        if continuation::should_preempt(d, i) {
            return continuation::create([entry, n - i, 0, 0, 0]);
        }
        let e: [u64; 8] = crate::mm::guest::read_obj(entry)?;
        let op = e[0] as u32;
        if op == nr::IRET {
            *multicall_iret_slot().lock() = Some(entry);
            return Ok(0);
        }
        let result = if op == nr::MULTICALL {
            Errno::EINVAL.to_ret()
        } else {
            dispatch(d, op, [e[2], e[3], e[4], e[5], e[6]])
        };
        if let Some(args) = continuation::take() {
            crate::mm::guest::write_obj(entry + 16, &args)?;
            return continuation::create([entry, n - i, 0, 0, 0]);
        }
        crate::mm::guest::write_obj(entry + 8, &result)?;
        if d.dying.load(Ordering::Acquire) {
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
            CALLS[i].load(Ordering::Relaxed)
        );
    }
}
