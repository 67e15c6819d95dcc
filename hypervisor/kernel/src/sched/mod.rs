//! Scheduling vCPUs on physical CPUs: which vCPU each CPU runs, blocking and waking, and the
//! switch from one vCPU to another.
//!
//! Every vCPU of every domain is a *unit* of the scheduler, in one of three states: runnable,
//! blocked (`SCHEDOP_block`/`poll`, waiting for an event) or offline (down, or never brought
//! up). A runnable unit is either on a CPU or waiting in the run queue; a CPU with nothing to
//! run idles in [`idle_until_work`] (interrupts on, halted) until a wake-up kicks it.
//!
//! Switching happens in one place: at the end of a trap from a guest, before the exit path
//! returns to it ([`before_guest_return`]), when this CPU was asked to reschedule (the running
//! vCPU blocked, yielded, went down, or its time slice ended). The outgoing vCPU's state is
//! saved from the CPU and its trap frame into its `Vcpu` (`pv::context::save`) *before* the unit
//! becomes visible in the queue, so another CPU can never load a half-saved vCPU; the incoming
//! one is loaded into the CPU and into the same trap frame (`pv::context::load`), and the exit
//! path returns to it. So no vCPU runs on two CPUs at once: a unit is on a CPU ([`Unit::on_cpu`])
//! from the moment a CPU picks it until that CPU has saved it.
//!
//! Waking ([`notify`], [`wake`]) makes a blocked unit runnable; if it is still on its CPU (it
//! blocked but that CPU has not switched away yet) it simply continues there; otherwise it
//! joins the queue and an idle CPU is kicked. A unit on another CPU that gets an event is kicked
//! with an IPI, whose return path delivers the upcall.
//!
//! Policy: one run queue, first come first served, with a 30 ms time slice. (The credit
//! scheduler replaces it.)
//!
//! Locks: the scheduler's lock is taken with interrupts off (timer callbacks wake vCPUs from
//! interrupt context) and never with a `Vcpu` lock or any other lock held under it; a `Vcpu`
//! lock may be held when it is taken. The per-CPU current vCPU is read without a lock: only its
//! own CPU changes it.
//!
//! Runstate (`vcpu_runstate_info`): each unit's time running, runnable, blocked and offline is
//! accounted to the nanosecond at every state change, and copied to the guest's registered
//! area whenever the vCPU is switched in or out.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use xen_abi::errno::Errno;

use crate::arch::x86_64::idt::TrapFrame;
use crate::arch::x86_64::percpu::{self, MAX_CPUS};
use crate::arch::x86_64::{cpu, pventer, smp, tsc};
use crate::domain::DomainRef;
use crate::pv::context;
use crate::pv::domain::Domain;
use crate::timer::{self, TimerFn};

/// A counted reference to one vCPU of a domain.
#[derive(Clone)]
pub struct VcpuRef {
    /// Its domain.
    pub dom: DomainRef,
    /// Its index in the domain.
    pub id: u32,
}

/// Length of a time slice.
const SLICE_NS: u64 = 30_000_000;
/// Period of each CPU's scheduler tick.
const TICK_NS: u64 = 10_000_000;

/// `vcpu_runstate_info.state` values.
mod runstate {
    pub const RUNNING: usize = 0;
    pub const RUNNABLE: usize = 1;
    pub const BLOCKED: usize = 2;
    pub const OFFLINE: usize = 3;
}

/// `state_entry_time` flag while the guest's copy is being rewritten
/// (`VMASST_TYPE_runstate_update_flag`).
const RUNSTATE_UPDATE: u64 = 1 << 63;
/// `vm_assist` type of that flag.
const VMASST_RUNSTATE_UPDATE_FLAG: u32 = 5;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Runnable,
    Blocked,
    Offline,
}

/// A vCPU's accounted time per runstate.
#[derive(Clone, Copy, Debug, Default)]
struct Runstate {
    state: usize,
    entry: u64,
    time: [u64; 4],
}

impl Runstate {
    fn enter(&mut self, state: usize, now: u64) {
        let spent = now.saturating_sub(self.entry);
        self.time[self.state] = self.time[self.state].saturating_add(spent);
        (self.state, self.entry) = (state, now);
    }

    /// `vcpu_runstate_info` as the guest reads it.
    fn info(&self) -> [u64; 6] {
        [
            self.state as u64,
            self.entry,
            self.time[0],
            self.time[1],
            self.time[2],
            self.time[3],
        ]
    }
}

struct Unit {
    vcpu: VcpuRef,
    state: State,
    /// The CPU it is loaded on (from being picked until that CPU saved it).
    on_cpu: Option<u32>,
    /// Blocked in `SCHEDOP_poll`: any event of its domain wakes it.
    polling: bool,
    /// Its domain stopped: it never runs again.
    dead: bool,
    runstate: Runstate,
}

impl Unit {
    fn account(&mut self, now: u64) {
        let rs = match (self.state, self.on_cpu) {
            (State::Runnable, Some(_)) => runstate::RUNNING,
            (State::Runnable, None) => runstate::RUNNABLE,
            (State::Blocked, _) => runstate::BLOCKED,
            (State::Offline, _) => runstate::OFFLINE,
        };
        if rs != self.runstate.state {
            self.runstate.enter(rs, now);
        }
    }
}

struct Sched {
    units: Vec<Unit>,
    /// Runnable units on no CPU, in the order they run.
    queue: VecDeque<usize>,
}

impl Sched {
    fn find(&self, d: &Domain, vcpu: u32) -> Option<usize> {
        self.units
            .iter()
            .position(|u| core::ptr::eq(&*u.vcpu.dom, d) && u.vcpu.id == vcpu)
    }

    /// Makes unit `i` runnable (from blocked or offline); true if it joined the queue.
    fn make_runnable(&mut self, i: usize, now: u64) -> bool {
        let u = &mut self.units[i];
        if u.dead {
            return false;
        }
        u.state = State::Runnable;
        u.polling = false;
        u.account(now);
        if u.on_cpu.is_none() && !self.queue.contains(&i) {
            self.queue.push_back(i);
            return true;
        }
        false
    }
}

static SCHED: spin::Mutex<Sched> = spin::Mutex::new(Sched {
    units: Vec::new(),
    queue: VecDeque::new(),
});

/// Runs `f` on the scheduler with interrupts off.
fn with_sched<R>(f: impl FnOnce(&mut Sched) -> R) -> R {
    let irq = cpu::interrupts_enabled();
    cpu::disable_interrupts();
    let r = f(&mut SCHED.lock());
    if irq {
        cpu::enable_interrupts();
    }
    r
}

/// What one CPU runs.
struct Pcpu {
    /// The domain of the vCPU loaded here (null while idle).
    dom: AtomicPtr<Domain>,
    /// Its vCPU id.
    vcpu: AtomicU32,
    /// The loaded vCPU, for what needs a counted reference to it (timers).
    current: spin::Mutex<Option<(usize, VcpuRef)>>,
    /// Switch at the next return to the guest.
    resched: AtomicBool,
    /// Halted in the idle loop.
    idle: AtomicBool,
    /// When the running vCPU's slice began.
    slice_start: AtomicU64,
}

static PCPU: [Pcpu; MAX_CPUS] = [const {
    Pcpu {
        dom: AtomicPtr::new(core::ptr::null_mut()),
        vcpu: AtomicU32::new(0),
        current: spin::Mutex::new(None),
        resched: AtomicBool::new(false),
        idle: AtomicBool::new(false),
        slice_start: AtomicU64::new(0),
    }
}; MAX_CPUS];

fn this_pcpu() -> &'static Pcpu {
    &PCPU[percpu::current_index() as usize % MAX_CPUS]
}

/// The domain of the vCPU this CPU runs, if any.
pub fn current() -> Option<&'static Domain> {
    let p = this_pcpu().dom.load(Ordering::Acquire);
    // SAFETY: a non-null pointer is the domain of the unit loaded on this CPU; the scheduler
    // holds a counted reference to every unit's domain, and a unit is never removed while it is
    // on a CPU. Only this CPU changes the pointer, on its trap path, after which no reference
    // obtained before the switch is used.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The id of the vCPU this CPU runs (0 while idle).
pub fn current_vcpu() -> u32 {
    this_pcpu().vcpu.load(Ordering::Relaxed)
}

/// A counted reference to the vCPU this CPU runs.
pub fn current_ref() -> Option<VcpuRef> {
    this_pcpu().current.lock().as_ref().map(|(_, v)| v.clone())
}

/// Enters every vCPU of `d` in the scheduler, offline (none runs before [`vcpu_up`]).
pub fn add_domain(d: &DomainRef) {
    let now = tsc::uptime_ns();
    with_sched(|s| {
        for id in 0..d.vcpus.len() as u32 {
            s.units.push(Unit {
                vcpu: VcpuRef { dom: d.clone(), id },
                state: State::Offline,
                on_cpu: None,
                polling: false,
                dead: false,
                runstate: Runstate {
                    state: runstate::OFFLINE,
                    entry: now,
                    time: [0; 4],
                },
            });
        }
    });
}

/// Makes offline vCPU `vcpu` of `d` runnable (`VCPUOP_up`, and the first vCPU at start).
pub fn vcpu_up(d: &Domain, vcpu: u32) -> Result<(), Errno> {
    let now = tsc::uptime_ns();
    let queued = with_sched(|s| {
        let i = s.find(d, vcpu).ok_or(Errno::ENOENT)?;
        Ok(s.units[i].state == State::Offline && s.make_runnable(i, now))
    })?;
    if queued {
        tickle_idle();
    }
    Ok(())
}

/// Wakes vCPU `vcpu` of `d` if it is blocked.
pub fn wake(d: &Domain, vcpu: u32) {
    let now = tsc::uptime_ns();
    let queued = with_sched(|s| {
        s.find(d, vcpu)
            .filter(|&i| s.units[i].state == State::Blocked)
            .is_some_and(|i| s.make_runnable(i, now))
    });
    if queued {
        tickle_idle();
    }
}

/// vCPU `vcpu` of `d` has a new event: wake it if it is blocked, interrupt its CPU if it runs
/// on another one (the return path delivers the upcall), and wake the domain's vCPUs that poll
/// (`SCHEDOP_poll` waits for pending bits, masked or not; each checks its own ports again).
pub fn notify(d: &Domain, vcpu: u32) {
    let now = tsc::uptime_ns();
    let me = percpu::current_index();
    let (queued, ipi) = with_sched(|s| {
        let mut queued = false;
        let mut ipi = None;
        for i in 0..s.units.len() {
            let u = &s.units[i];
            if !core::ptr::eq(&*u.vcpu.dom, d) {
                continue;
            }
            let target = u.vcpu.id == vcpu;
            if target && u.state == State::Runnable {
                ipi = u.on_cpu.filter(|&c| c != me);
            } else if u.state == State::Blocked && (target || u.polling) {
                queued |= s.make_runnable(i, now);
            }
        }
        (queued, ipi)
    });
    if let Some(c) = ipi {
        smp::kick(c);
    }
    if queued {
        tickle_idle();
    }
}

/// Takes every vCPU of `d`, which stopped, off the CPUs for good: out of the queue, and
/// switched away (at the end of their current trap) where they run. False if that was done
/// already.
pub fn stop_domain(d: &Domain) -> bool {
    let now = tsc::uptime_ns();
    let me = percpu::current_index();
    let (first, others) = with_sched(|s| {
        let mut first = false;
        let mut others = 0u64;
        for i in 0..s.units.len() {
            let u = &mut s.units[i];
            if !core::ptr::eq(&*u.vcpu.dom, d) || u.dead {
                continue;
            }
            first = true;
            u.dead = true;
            u.state = State::Offline;
            u.account(now);
            if let Some(c) = u.on_cpu {
                others |= 1 << c;
            }
            s.queue.retain(|&q| q != i);
        }
        (first, others)
    });
    for c in (0..MAX_CPUS as u32).filter(|c| others & (1 << c) != 0) {
        PCPU[c as usize].resched.store(true, Ordering::Release);
        if c != me {
            smp::kick(c);
        }
    }
    first
}

/// Kicks one idle CPU to look at the run queue.
fn tickle_idle() {
    let me = percpu::current_index();
    if let Some(p) = percpu::all()
        .filter(|p| p.index != me)
        .find(|p| PCPU[p.index as usize].idle.load(Ordering::Acquire))
    {
        smp::kick(p.index);
    }
}

/// Blocks the vCPU running here until an event wakes it (`polling`: any event of its domain),
/// unless `woken` already holds once it counts as blocked (so no wake-up between the caller's
/// last check and the block is lost). True if it blocked: it is switched away at the end of
/// this trap and resumes there when woken.
pub fn block_current(polling: bool, woken: impl FnOnce() -> bool) -> bool {
    let now = tsc::uptime_ns();
    let p = this_pcpu();
    let blocked = with_sched(|s| {
        let Some(i) = p.current.lock().as_ref().map(|(i, _)| *i) else {
            return false;
        };
        let u = &mut s.units[i];
        u.state = State::Blocked;
        if woken() {
            u.state = State::Runnable;
            return false;
        }
        u.polling = polling;
        u.account(now);
        true
    });
    if blocked {
        p.resched.store(true, Ordering::Release);
    }
    blocked
}

/// Takes the vCPU running here offline (`VCPUOP_down`): it is switched away at the end of this
/// trap and runs again after [`vcpu_up`].
pub fn down_current() {
    let now = tsc::uptime_ns();
    let p = this_pcpu();
    with_sched(|s| {
        if let Some(&(i, _)) = p.current.lock().as_ref() {
            s.units[i].state = State::Offline;
            s.units[i].account(now);
        }
    });
    p.resched.store(true, Ordering::Release);
}

/// `SCHEDOP_yield`: lets the other runnable vCPUs run first.
pub fn yield_current() {
    this_pcpu().resched.store(true, Ordering::Release);
}

/// The accounted runstate of vCPU `vcpu` of `d` (`VCPUOP_get_runstate_info`).
pub fn runstate_info(d: &Domain, vcpu: u32) -> Option<[u64; 6]> {
    let now = tsc::uptime_ns();
    with_sched(|s| {
        let i = s.find(d, vcpu)?;
        let mut r = s.units[i].runstate;
        r.enter(r.state, now);
        Some(r.info())
    })
}

/// Copies the runstate of the vCPU running here to its registered area, if any (its page
/// tables are loaded).
fn update_runstate_area(d: &Domain, area: u64, info: [u64; 6]) {
    if area == 0 {
        return;
    }
    let flag = d.vm_assist.load(Ordering::Relaxed) & (1 << VMASST_RUNSTATE_UPDATE_FLAG) != 0;
    // A fault only means the guest unmapped its area: nothing to report to it.
    if flag {
        let _ = crate::mm::guest::write_obj(area + 8, &(info[1] | RUNSTATE_UPDATE));
        core::sync::atomic::fence(Ordering::Release);
    }
    let _ = crate::mm::guest::write_obj(area, &info);
}

/// Starts scheduling on this CPU (at boot, once domains exist); never returns.
pub fn run_this_cpu() -> ! {
    cpu::disable_interrupts();
    timer::add(
        tsc::uptime_ns().saturating_add(TICK_NS),
        TimerFn::Plain(tick),
    );
    let mut f = TrapFrame::default();
    switch_in(&mut f, idle_until_work());
    // As on every return to a guest: an event that woke it is delivered first (which may switch
    // it to kernel mode: its page tables and GS base are read after).
    crate::pv::events::before_guest_return(&mut f);
    pventer::enter(&f, cpu::read_cr3(), cpu::kernel_gs_base())
}

/// Each CPU's tick: asks for a switch when the running vCPU's slice is over and another waits.
fn tick(now: u64) -> Option<u64> {
    let p = this_pcpu();
    if now.saturating_sub(p.slice_start.load(Ordering::Relaxed)) >= SLICE_NS
        && !SCHED.lock().queue.is_empty()
    {
        p.resched.store(true, Ordering::Release);
    }
    Some(now.saturating_add(TICK_NS))
}

/// At the end of a trap from a guest, before the return to it: switches to another vCPU if this
/// CPU was asked to. `f` is the frame the exit path returns with.
pub fn before_guest_return(f: &mut TrapFrame) {
    let p = this_pcpu();
    if !p.resched.swap(false, Ordering::AcqRel) {
        return;
    }
    let Some((i, prev)) = p.current.lock().clone() else {
        return;
    };
    // Nothing else to run and still runnable: carry on without a switch.
    let keep = with_sched(|s| s.units[i].state == State::Runnable && s.queue.is_empty());
    if keep {
        p.slice_start.store(tsc::uptime_ns(), Ordering::Relaxed);
        return;
    }
    switch_out(i, &prev, f);
    let next = pick().unwrap_or_else(idle_until_work);
    switch_in(f, next);
}

/// Saves the vCPU running here (unit `i`) and takes it off this CPU.
fn switch_out(i: usize, prev: &VcpuRef, f: &TrapFrame) {
    let d = &prev.dom;
    let mut v = d.vcpus[prev.id as usize].lock();
    context::save(&mut v, f);
    let area = v.runstate_area;
    let now = tsc::uptime_ns();
    let info = with_sched(|s| {
        let u = &mut s.units[i];
        u.on_cpu = None;
        u.account(now);
        if u.state == State::Runnable {
            s.queue.push_back(i);
        }
        s.units[i].runstate.info()
    });
    update_runstate_area(d, area, info);
    drop(v);
    let p = this_pcpu();
    p.dom.store(core::ptr::null_mut(), Ordering::Release);
    *p.current.lock() = None;
}

/// Takes the next runnable unit from the queue for this CPU.
fn pick() -> Option<usize> {
    let me = percpu::current_index();
    let now = tsc::uptime_ns();
    with_sched(|s| {
        let i = s.queue.pop_front()?;
        s.units[i].on_cpu = Some(me);
        s.units[i].account(now);
        Some(i)
    })
}

/// Idles this CPU (interrupts on, halted) until a unit is runnable for it; returns it, picked.
fn idle_until_work() -> usize {
    let p = this_pcpu();
    loop {
        if let Some(i) = pick() {
            p.idle.store(false, Ordering::Release);
            return i;
        }
        p.idle.store(true, Ordering::Release);
        // Checked again once marked idle: a wake-up in between kicks this CPU.
        if !SCHED.lock().queue.is_empty() {
            continue;
        }
        // `sti; hlt` is atomic: an interrupt between the check and the halt still wakes us.
        cpu::idle();
        cpu::disable_interrupts();
    }
}

/// Loads unit `i`, picked for this CPU, into the CPU and `f`.
fn switch_in(f: &mut TrapFrame, i: usize) {
    let vr = with_sched(|s| s.units[i].vcpu.clone());
    let p = this_pcpu();
    p.dom
        .store(&*vr.dom as *const Domain as *mut Domain, Ordering::Release);
    p.vcpu.store(vr.id, Ordering::Relaxed);
    p.slice_start.store(tsc::uptime_ns(), Ordering::Relaxed);
    *p.current.lock() = Some((i, vr.clone()));
    let d = &vr.dom;
    let mut v = d.vcpus[vr.id as usize].lock();
    context::load(&vr, &mut v, f);
    let info = with_sched(|s| s.units[i].runstate.info());
    update_runstate_area(d, v.runstate_area, info);
}
