//! Scheduling vCPUs on physical CPUs: which vCPU each CPU runs, blocking and waking, and the
//! switch from one vCPU to another.
//!
//! Every vCPU of every domain is a *unit* of the scheduler, in one of three states: runnable,
//! blocked (`SCHEDOP_block`/`poll`, waiting for an event) or offline (down, or never brought
//! up). A runnable unit is either on a CPU or waiting in the run queue; a CPU with nothing to
//! run idles in [`idle_until_work`] until a wake-up kicks it: it destroys stopped domains and
//! zeroes dirty free frames (`crate::mm::scrub_step`) a bounded step at a time, then halts
//! with interrupts on.
//!
//! Switching happens in one place: at the end of a trap from a guest, before the exit path
//! returns to it ([`before_guest_return`]), when this CPU was asked to reschedule (the running
//! vCPU blocked, yielded, went down, or its time slice ended). The outgoing vCPU's state is
//! saved from the CPU and its trap frame ([`Vcpu::save`]) *before* the unit becomes visible
//! in the queue, so another CPU can never load a half-saved vCPU; the incoming one is loaded
//! into the CPU and into the same trap frame ([`Vcpu::load`]), and the exit path returns to it.
//! So no vCPU runs on two CPUs at once: a unit is on a CPU ([`Unit::on_cpu`]) from the moment a
//! CPU picks it until that CPU has saved it.
//!
//! This layer names no guest type: a unit holds a [`VcpuHandle`], a counted reference to a
//! vCPU whose saving and loading the PV layer implements ([`Vcpu`]), and a domain is named by
//! the [`DomainSched`] it keeps inside it. Which vCPU a CPU runs is published for the trap path
//! by the PV layer as it loads it.
//!
//! Waking ([`notify`], [`wake`]) makes a blocked unit runnable; if it is still on its CPU (it
//! blocked but that CPU has not switched away yet) it simply continues there; otherwise it
//! joins the queue and an idle CPU is kicked. A unit on another CPU that gets an event is kicked
//! with an IPI, whose return path delivers the upcall.
//!
//! Policy: Xen's credit scheduler (`hestia_core::credit`, which decides; this module carries
//! out its decisions): weights, caps, BOOST for event-woken vCPUs, per-CPU run queues with
//! stealing, hard affinity, a 30 ms slice and a 1 ms rate limit. Each CPU ticks every 10 ms
//! (idle ones too: accounting unparks capped vCPUs) and arms a one-shot timer for the run time
//! the scheduler gives the vCPU it picked. `docs/scheduling.md` says what it promises.
//!
//! Locks: the scheduler's lock is taken with interrupts off (timer callbacks wake vCPUs from
//! interrupt context) and never with a `Vcpu` lock or any other lock held under it; a `Vcpu`
//! lock may be held when it is taken. The per-CPU current vCPU is read without a lock: only its
//! own CPU changes it.
//!
//! Runstate (`vcpu_runstate_info`): each unit's time running, runnable, blocked and offline is
//! accounted to the nanosecond at every state change, and copied to the guest's registered
//! area whenever the vCPU is switched in or out.

pub mod control;

use alloc::sync::Arc;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use hestia_core::credit::{self, CpuSet, DomKey, UnitId};
use hestia_core::ids::{DomId, VcpuId};
use hestia_core::timer_queue::TimerId;

use xen_abi::errno::Errno;

use crate::arch::x86_64::idt::TrapFrame;
use crate::arch::x86_64::percpu::{self, MAX_CPUS};
use crate::arch::x86_64::{cpu, pventer, smp, tsc};
use crate::timer::{self, TimerFn};

/// What the scheduler keeps of a domain, inside it (`pv::domain::Domain::sched`): its id, its
/// pauses and its polling vCPUs. The scheduler's functions name a domain by it and know
/// nothing else of it.
pub struct DomainSched {
    /// Its id (the credit scheduler's key; log lines).
    id: DomId,
    /// Every pause in force (Xen's `pause_count`; `crate::domain::life` counts the toolstack's
    /// apart); changed only under the scheduler's lock, which decides from it whether a vCPU
    /// may run.
    pause_count: AtomicU32,
    /// Its vCPUs blocked in `SCHEDOP_poll`, a bit each: an event for the domain must wake
    /// them, and only then does it need the scheduler.
    pollers: AtomicU64,
}

impl DomainSched {
    /// Domain `id`'s, paused once if `paused` (a domain the toolstack creates starts paused).
    pub fn new(id: DomId, paused: bool) -> Self {
        DomainSched {
            id,
            pause_count: AtomicU32::new(paused.into()),
            pollers: AtomicU64::new(0),
        }
    }

    /// A vCPU of it waits in `SCHEDOP_poll` (an event for the domain must reach [`notify`]).
    pub fn has_pollers(&self) -> bool {
        self.pollers.load(Ordering::Acquire) != 0
    }

    /// It is paused: its runnable vCPUs wait. Read under the scheduler's lock, under which
    /// alone the count changes.
    fn paused(&self) -> bool {
        self.pause_count.load(Ordering::Acquire) != 0
    }

    fn key(&self) -> DomKey {
        DomKey(self.id.0)
    }
}

/// A vCPU as the scheduler holds it, one counted reference per unit: the PV layer implements
/// it (`pv::VcpuRef`), and the scheduler calls it to take the vCPU off a CPU and put it on one.
pub trait Vcpu: Send + Sync {
    /// Its domain's scheduling state.
    fn domain(&self) -> &DomainSched;
    /// Its index in its domain.
    fn id(&self) -> VcpuId;
    /// Saves it, loaded on this CPU, from the CPU and `f` (the frame the trap left); then
    /// `saved` takes it off the CPU in the scheduler and returns the runstate to publish to
    /// the guest. The vCPU stays locked until that is published: a CPU that picks it up at
    /// once loads it only after.
    fn save(&self, f: &TrapFrame, saved: &mut dyn FnMut() -> Option<[u64; 6]>);
    /// Loads it, picked for this CPU, into the CPU and `f`; `loaded` returns the runstate to
    /// publish to the guest.
    fn load(self: Arc<Self>, f: &mut TrapFrame, loaded: &mut dyn FnMut() -> Option<[u64; 6]>);
}

/// A counted reference to a vCPU, as units and CPUs hold it.
pub type VcpuHandle = Arc<dyn Vcpu>;

/// `vcpu_runstate_info.state` values.
mod runstate {
    pub const RUNNING: usize = 0;
    pub const RUNNABLE: usize = 1;
    pub const BLOCKED: usize = 2;
    pub const OFFLINE: usize = 3;
}

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
    vcpu: VcpuHandle,
    state: State,
    /// The CPU it is loaded on (from being picked until that CPU saved it).
    on_cpu: Option<u32>,
    /// Blocked in `SCHEDOP_poll`: any event of its domain wakes it.
    polling: bool,
    /// Its domain stopped: it runs again only if the domain is resumed ([`resume_domain`]).
    dead: bool,
    /// It was up when its domain stopped: still online to the toolstack, as Xen's shut-down
    /// vCPUs are only paused, not down.
    up_when_stopped: bool,
    runstate: Runstate,
}

impl Unit {
    fn account(&mut self, now: u64) {
        let rs = match (self.state, self.on_cpu) {
            (State::Runnable, Some(_)) => runstate::RUNNING,
            // Xen accounts a paused vCPU as offline.
            (State::Runnable, None) if self.vcpu.domain().paused() => runstate::OFFLINE,
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
    /// Every vCPU, indexed by its [`UnitId`]; `None` once its domain is destroyed (the slot
    /// is used again by the next domain).
    units: Vec<Option<Unit>>,
    /// The decisions.
    credit: credit::Scheduler,
}

impl Sched {
    fn find(&self, d: &DomainSched, vcpu: VcpuId) -> Option<usize> {
        self.units.iter().position(|u| {
            u.as_ref()
                .is_some_and(|u| core::ptr::eq(u.vcpu.domain(), d) && u.vcpu.id() == vcpu)
        })
    }

    /// Unit `i`, if it exists.
    fn at(&mut self, i: usize) -> Option<&mut Unit> {
        self.units.get_mut(i).and_then(Option::as_mut)
    }

    /// The units of `d`, by index.
    fn of(&self, d: &DomainSched) -> impl Iterator<Item = usize> + '_ {
        let d = d as *const DomainSched;
        self.units
            .iter()
            .enumerate()
            .filter(move |(_, u)| {
                u.as_ref()
                    .is_some_and(|u| core::ptr::eq(u.vcpu.domain(), d))
            })
            .map(|(i, _)| i)
    }

    /// Makes unit `i` runnable (from blocked or offline); returns the CPU that must
    /// reschedule to run it, if one must.
    fn make_runnable(&mut self, i: usize, now: u64) -> Option<usize> {
        let u = self.at(i)?;
        if u.dead {
            return None;
        }
        u.state = State::Runnable;
        if u.polling {
            u.polling = false;
            u.vcpu
                .domain()
                .pollers
                .fetch_and(!poll_bit(u.vcpu.id()), Ordering::AcqRel);
        }
        u.account(now);
        if u.vcpu.domain().paused() {
            // It runs when its domain is unpaused (`unpause`).
            return None;
        }
        self.credit.wake(UnitId(i as u32))
    }

    /// Unit `i` stopped being runnable (blocked, down or dead); returns its CPU if it runs. A
    /// poller taken down stops polling.
    fn make_unrunnable(&mut self, i: usize, state: State, now: u64) -> Option<usize> {
        let u = self.at(i)?;
        if state != State::Blocked && u.polling {
            u.polling = false;
            u.vcpu
                .domain()
                .pollers
                .fetch_and(!poll_bit(u.vcpu.id()), Ordering::AcqRel);
        }
        u.state = state;
        u.account(now);
        self.credit.sleep(UnitId(i as u32))
    }
}

static SCHED: spin::Once<spin::Mutex<Sched>> = spin::Once::new();

/// Runs `f` on the scheduler with interrupts off (created on first use, for the CPUs then
/// online: boot has brought them all up before any domain runs).
fn with_sched<R>(f: impl FnOnce(&mut Sched) -> R) -> R {
    let sched = SCHED.call_once(|| {
        let cpus = (percpu::online_count().max(1) as usize).min(credit::MAX_CPUS);
        let credit = credit::Scheduler::new(cpus, credit::Params::default()).unwrap_or_else(|_| {
            crate::machine::fatal_boot(format_args!("sched: no credit scheduler"))
        });
        spin::Mutex::new(Sched {
            units: Vec::new(),
            credit,
        })
    });
    cpu::without_interrupts(|| f(&mut sched.lock()))
}

/// How a domain is scheduled (`domU=`'s `weight:`, `cap:` and `cpus:`).
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Credit weight (1-65535).
    pub weight: u16,
    /// Cap in percent of one CPU, 0 for none.
    pub cap: u16,
    /// The CPUs its vCPUs may run on (hard affinity; bit per CPU).
    pub cpus: u64,
}

impl Default for Params {
    /// Xen's defaults: weight 256, no cap, every CPU.
    fn default() -> Self {
        Params {
            weight: credit::DEFAULT_WEIGHT,
            cap: 0,
            cpus: u64::MAX,
        }
    }
}

/// What one CPU runs.
struct Pcpu {
    /// The loaded vCPU's unit, and a counted reference to it.
    current: spin::Mutex<Option<(usize, VcpuHandle)>>,
    /// Switch at the next return to the guest.
    resched: AtomicBool,
    /// The one-shot timer ending the running vCPU's run time.
    slice: spin::Mutex<Option<TimerId>>,
    /// The domain whose vCPU this CPU ran last (compared, never dereferenced).
    last_dom: AtomicPtr<DomainSched>,
}

static PCPU: [Pcpu; MAX_CPUS] = [const {
    Pcpu {
        current: spin::Mutex::new(None),
        resched: AtomicBool::new(false),
        slice: spin::Mutex::new(None),
        last_dom: AtomicPtr::new(core::ptr::null_mut()),
    }
}; MAX_CPUS];

fn this_pcpu() -> &'static Pcpu {
    &PCPU[percpu::current_index() as usize % MAX_CPUS]
}

/// Enters `vcpus`, every vCPU of `d` in order, in the scheduler with `params`, offline (none
/// runs before [`vcpu_up`]); vCPU `i` starts on CPU `i` modulo the CPUs it may use.
pub fn add_domain(d: &DomainSched, vcpus: Vec<VcpuHandle>, params: Params) -> Result<(), Errno> {
    let now = tsc::uptime_ns();
    with_sched(|s| {
        let dom = d.key();
        // The CPUs that exist; none of them is refused before anything is entered.
        let hard = CpuSet(params.cpus).and(CpuSet::first_n(s.credit.nr_cpus()));
        if hard.is_empty() {
            return Err(Errno::EINVAL);
        }
        s.credit.add_domain(dom, params.weight, params.cap)?;
        for (id, vcpu) in vcpus.into_iter().enumerate() {
            // A destroyed domain's slot (its units left the credit scheduler with it).
            let slot = s
                .units
                .iter()
                .position(Option::is_none)
                .unwrap_or(s.units.len());
            let unit = UnitId(slot as u32);
            let cpu = id % s.credit.nr_cpus();
            s.credit.add_unit(unit, dom, hard, hard, cpu)?;
            if slot == s.units.len() {
                s.units.push(None);
            }
            s.units[slot] = Some(Unit {
                vcpu,
                state: State::Offline,
                on_cpu: None,
                polling: false,
                dead: false,
                up_when_stopped: false,
                runstate: Runstate {
                    state: runstate::OFFLINE,
                    entry: now,
                    time: [0; 4],
                },
            });
        }
        Ok(())
    })
}

/// Makes offline vCPU `vcpu` of `d` runnable (`VCPUOP_up`, and the first vCPU at start).
pub fn vcpu_up(d: &DomainSched, vcpu: VcpuId) -> Result<(), Errno> {
    let now = tsc::uptime_ns();
    let poke = with_sched(|s| {
        let i = s.find(d, vcpu).ok_or(Errno::ENOENT)?;
        Ok(if s.at(i).is_some_and(|u| u.state == State::Offline) {
            s.make_runnable(i, now)
        } else {
            None
        })
    })?;
    reschedule(poke);
    Ok(())
}

/// Wakes vCPU `vcpu` of `d` if it is blocked.
pub fn wake(d: &DomainSched, vcpu: VcpuId) {
    let now = tsc::uptime_ns();
    let poke = with_sched(|s| {
        s.find(d, vcpu)
            .filter(|&i| s.at(i).is_some_and(|u| u.state == State::Blocked))
            .and_then(|i| s.make_runnable(i, now))
    });
    reschedule(poke);
}

/// vCPU `vcpu` of `d` has a new event: wake it if it is blocked, interrupt its CPU if it runs
/// on another one (the return path delivers the upcall), and wake the domain's vCPUs that poll
/// (`SCHEDOP_poll` waits for pending bits, masked or not; each checks its own ports again).
/// Needless when the event is for the vCPU running here, nothing of its domain polls
/// ([`DomainSched::has_pollers`]) and no switch is pending ([`switch_pending`]): the caller
/// may skip it then, as `pv::events::kick` does.
#[inline(never)]
pub fn notify(d: &DomainSched, vcpu: VcpuId) {
    let now = tsc::uptime_ns();
    let me = percpu::current_index();
    let (pokes, ipi) = with_sched(|s| {
        let mut pokes = CpuSet::EMPTY;
        let mut ipi = None;
        for i in 0..s.units.len() {
            let Some(u) = s.at(i).filter(|u| core::ptr::eq(u.vcpu.domain(), d)) else {
                continue;
            };
            let target = u.vcpu.id() == vcpu;
            if target && u.state == State::Runnable {
                ipi = u.on_cpu.filter(|&c| c != me);
            } else if u.state == State::Blocked
                && (target || u.polling)
                && let Some(c) = s.make_runnable(i, now)
            {
                pokes.insert(c);
            }
        }
        (pokes, ipi)
    });
    if let Some(c) = ipi {
        smp::kick(c);
    }
    pokes.iter().for_each(|c| reschedule(Some(c)));
}

/// Takes every vCPU of `d`, which stopped, off the CPUs until it is resumed
/// ([`resume_domain`]) or destroyed: out of the queue, and switched away (at the end of their
/// current trap) where they run; `stopped`, run under the scheduler's lock, says it is still
/// stopped (it is not if a resume came first). False if that was done already, or it was
/// resumed. Like Xen's paused vCPUs of a domain shut down, each keeps what the toolstack reads
/// until the domain is destroyed ([`forget_domain`]): online if it was up, its CPU and
/// affinity, and the domain its weight and cap (libxl reads them back to restart it).
pub fn stop_domain(d: &DomainSched, stopped: impl FnOnce() -> bool) -> bool {
    let now = tsc::uptime_ns();
    let (first, pokes) = with_sched(|s| {
        let mut first = false;
        // Resumed since it stopped (`resume_domain`, under this lock): nothing to stop.
        if !stopped() {
            return (false, CpuSet::EMPTY);
        }
        let mine: Vec<usize> = s.of(d).collect();
        for i in mine {
            if s.at(i).is_none_or(|u| u.dead) {
                continue;
            }
            first = true;
            let up = s.at(i).is_some_and(|u| u.state != State::Offline);
            s.make_unrunnable(i, State::Offline, now);
            if let Some(u) = s.at(i) {
                u.dead = true;
                u.up_when_stopped = up;
            }
        }
        // Where one of its vCPUs is still loaded, that CPU switches away at once.
        let loaded = s
            .of(d)
            .filter_map(|i| s.units[i].as_ref().and_then(|u| u.on_cpu))
            .fold(CpuSet::EMPTY, |mut set, c| {
                set.insert(c as usize);
                set
            });
        (first, loaded)
    });
    pokes.iter().for_each(|c| reschedule(Some(c)));
    first
}

/// Resumes `d` (`crate::domain::life::domain_resume`, with `d` paused) if `clear`, run under
/// the scheduler's lock, clears its stopped state (so a [`stop_domain`] racing with it either
/// comes first and is undone here, or finds it running and does nothing): each vCPU that was
/// up when it stopped becomes runnable, and runs once `d`'s pauses are gone. One that was
/// blocked is woken (its `SCHEDOP_block` returns, a `SCHEDOP_poll` looks at its ports again):
/// events sent while it was stopped found it off the queues and woke nothing, and a wake-up
/// the guest did not wait for is harmless. False if `clear` found it running.
pub fn resume_domain(d: &DomainSched, clear: impl FnOnce() -> bool) -> bool {
    let now = tsc::uptime_ns();
    let (resumed, pokes) = with_sched(|s| {
        let mut pokes = CpuSet::EMPTY;
        if !clear() {
            return (false, pokes);
        }
        let mine: Vec<usize> = s.of(d).collect();
        for i in mine {
            let Some(u) = s.at(i).filter(|u| u.dead) else {
                continue;
            };
            u.dead = false;
            if core::mem::take(&mut u.up_when_stopped)
                && let Some(c) = s.make_runnable(i, now)
            {
                pokes.insert(c);
            }
        }
        (true, pokes)
    });
    pokes.iter().for_each(|c| reschedule(Some(c)));
    resumed
}

/// One more pause of `d` (`crate::domain::life::domain_pause`): at the first, its runnable
/// vCPUs leave the queues, and those on a CPU are switched away at that CPU's next return to
/// its guest (the caller waits for that with [`off_cpus`]).
pub fn pause(d: &DomainSched) {
    let now = tsc::uptime_ns();
    let pokes = with_sched(|s| {
        let mut pokes = CpuSet::EMPTY;
        if d.pause_count.fetch_add(1, Ordering::AcqRel) != 0 {
            return pokes;
        }
        let mine: Vec<usize> = s.of(d).collect();
        for i in mine {
            let Some(u) = s.at(i).filter(|u| u.state == State::Runnable && !u.dead) else {
                continue;
            };
            let on_cpu = u.on_cpu;
            u.account(now);
            if let Some(c) = s
                .credit
                .sleep(UnitId(i as u32))
                .or(on_cpu.map(|c| c as usize))
            {
                pokes.insert(c);
            }
        }
        pokes
    });
    pokes.iter().for_each(|c| reschedule(Some(c)));
}

/// One pause of `d` fewer; at the last, its runnable vCPUs run again. False (nothing done) if
/// it was not paused.
pub fn unpause(d: &DomainSched) -> bool {
    let now = tsc::uptime_ns();
    let (ok, pokes) = with_sched(|s| {
        let mut pokes = CpuSet::EMPTY;
        let count = &d.pause_count;
        match count.load(Ordering::Acquire) {
            0 => return (false, pokes),
            1 => count.store(0, Ordering::Release),
            n => {
                count.store(n - 1, Ordering::Release);
                return (true, pokes);
            }
        }
        let mine: Vec<usize> = s.of(d).collect();
        for i in mine {
            let Some(u) = s.at(i).filter(|u| u.state == State::Runnable && !u.dead) else {
                continue;
            };
            u.account(now);
            if let Some(c) = s.credit.wake(UnitId(i as u32)) {
                pokes.insert(c);
            }
        }
        (true, pokes)
    });
    pokes.iter().for_each(|c| reschedule(Some(c)));
    ok
}

/// True when no vCPU of `d` is loaded on a CPU (each one that ran it has switched away).
pub fn off_cpus(d: &DomainSched) -> bool {
    with_sched(|s| {
        s.of(d)
            .all(|i| s.units[i].as_ref().is_none_or(|u| u.on_cpu.is_none()))
    })
}

/// Forgets `d`, which is destroyed, and every vCPU of it (their counted references go).
pub fn forget_domain(d: &DomainSched) {
    let gone: Vec<Unit> = with_sched(|s| {
        // Its vCPUs stopped and left their CPUs before its destruction began: no CPU runs one.
        let _ = s.credit.remove_domain(d.key());
        let mine: Vec<usize> = s.of(d).collect();
        mine.into_iter().filter_map(|i| s.units[i].take()).collect()
    });
    // A new domain may be allocated where this one was: no CPU may take it for the domain it
    // ran last (and skip the barrier between domains).
    let dom = d as *const DomainSched as *mut DomainSched;
    for p in &PCPU {
        let _ = p.last_dom.compare_exchange(
            dom,
            core::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    // Dropped outside the scheduler's lock: the last reference frees the domain.
    drop(gone);
}

/// Makes CPU `cpu` (if any) reschedule: at once on this CPU's way back to its guest, by an
/// IPI on another.
fn reschedule(cpu: Option<usize>) {
    let Some(c) = cpu.filter(|&c| c < MAX_CPUS) else {
        return;
    };
    PCPU[c].resched.store(true, Ordering::Release);
    if c as u32 != percpu::current_index() {
        smp::kick(c as u32);
    }
}

/// Blocks the vCPU running here until an event wakes it (`polling`: any event of its domain),
/// unless `woken` already holds once it counts as blocked (so no wake-up between the caller's
/// last check and the block is lost). True if it blocked: it is switched away at the end of
/// this trap and resumes there when woken.
pub fn block_current(polling: bool, woken: impl FnOnce() -> bool) -> bool {
    let now = tsc::uptime_ns();
    let p = this_pcpu();
    let Some(i) = p.current.lock().as_ref().map(|(i, _)| *i) else {
        return false;
    };
    with_sched(|s| {
        let Some(u) = s.at(i) else {
            return false;
        };
        u.state = State::Blocked;
        // A poller announces itself before it looks at its ports: a sender sets the pending
        // bit before it looks at the pollers (both locked RMWs, full barriers), so one of the
        // two sees the other.
        let bit = if polling { poll_bit(u.vcpu.id()) } else { 0 };
        u.vcpu.domain().pollers.fetch_or(bit, Ordering::SeqCst);
        if woken() {
            u.state = State::Runnable;
            u.vcpu.domain().pollers.fetch_and(!bit, Ordering::SeqCst);
            return false;
        }
        u.polling = polling;
        s.make_unrunnable(i, State::Blocked, now);
        // Under the lock, with the state: no event can see it blocked but not leaving.
        p.resched.store(true, Ordering::Release);
        true
    })
}

/// vCPU `id`'s bit in its domain's `pollers`.
fn poll_bit(id: VcpuId) -> u64 {
    1u64.checked_shl(id.raw()).unwrap_or(0)
}

/// Takes the vCPU running here offline (`VCPUOP_down`): it is switched away at the end of this
/// trap and runs again after [`vcpu_up`].
pub fn down_current() {
    let now = tsc::uptime_ns();
    let p = this_pcpu();
    if let Some(i) = p.current.lock().as_ref().map(|(i, _)| *i) {
        with_sched(|s| s.make_unrunnable(i, State::Offline, now));
    }
    p.resched.store(true, Ordering::Release);
}

/// Takes vCPU `vcpu` of `d`, not the one running here, offline (`VCPUOP_down` of another
/// vCPU): where it runs, it is switched away at once.
pub fn vcpu_down(d: &DomainSched, vcpu: VcpuId) -> Result<(), Errno> {
    let now = tsc::uptime_ns();
    let poke = with_sched(|s| {
        let i = s.find(d, vcpu).ok_or(Errno::ENOENT)?;
        let running_on = s.at(i).and_then(|u| u.on_cpu);
        let poke = s.make_unrunnable(i, State::Offline, now);
        Ok(poke.or(running_on.map(|c| c as usize)))
    })?;
    reschedule(poke);
    Ok(())
}

/// True when this CPU is to switch vCPUs at its next return to the guest (the running vCPU
/// blocked, yielded, went down or used its slice, or another must run): a long hypercall
/// stops at its next item and is continued (Xen's `hypercall_preempt_check`, which sees the
/// pending `SCHEDULE_SOFTIRQ`).
#[inline]
pub fn switch_pending() -> bool {
    this_pcpu().resched.load(Ordering::Acquire)
}

/// `SCHEDOP_yield`: lets the other runnable vCPUs run first.
pub fn yield_current() {
    let p = this_pcpu();
    if let Some(i) = p.current.lock().as_ref().map(|(i, _)| *i) {
        with_sched(|s| s.credit.yield_unit(UnitId(i as u32)));
    }
    p.resched.store(true, Ordering::Release);
}

/// The accounted runstate of vCPU `vcpu` of `d` (`VCPUOP_get_runstate_info`).
pub fn runstate_info(d: &DomainSched, vcpu: VcpuId) -> Option<[u64; 6]> {
    let now = tsc::uptime_ns();
    with_sched(|s| {
        let i = s.find(d, vcpu)?;
        let mut r = s.at(i)?.runstate;
        r.enter(r.state, now);
        Some(r.info())
    })
}

/// Starts scheduling on this CPU (at boot, once domains exist); never returns. `before_return`
/// is the PV layer's work before any return to a guest, for the first (events; later returns
/// run it from the trap path).
pub fn run_this_cpu(before_return: fn(&mut TrapFrame)) -> ! {
    cpu::disable_interrupts();
    let period = with_sched(|s| s.credit.tick_period_ns());
    timer::add(
        tsc::uptime_ns().saturating_add(period),
        TimerFn::Plain(tick),
    );
    let mut f = TrapFrame::default();
    let next = idle_until_work();
    switch_in(&mut f, next);
    // As on every return to a guest: an event that woke it is delivered first (which may switch
    // it to kernel mode: its page tables and GS base are read after).
    before_return(&mut f);
    pventer::enter(&f, cpu::read_cr3(), cpu::kernel_gs_base())
}

/// Each CPU's scheduler tick: credit burning and accounting; the CPUs whose vCPU must change
/// reschedule.
fn tick(now: u64) -> Option<u64> {
    let me = percpu::current_index() as usize;
    let (pokes, period) = with_sched(|s| (s.credit.tick(me, now), s.credit.tick_period_ns()));
    pokes.iter().for_each(|c| reschedule(Some(c)));
    Some(now.saturating_add(period))
}

/// The slice timer: the running vCPU's time is up.
fn slice_over(_now: u64) -> Option<u64> {
    let p = this_pcpu();
    *p.slice.lock() = None;
    p.resched.store(true, Ordering::Release);
    None
}

/// Arms this CPU's slice timer for `run_for` ns (cancelling the previous one).
fn arm_slice(run_for: Option<u64>) {
    let p = this_pcpu();
    let mut slot = p.slice.lock();
    if let Some(id) = slot.take() {
        timer::cancel(id);
    }
    if let Some(ns) = run_for {
        *slot = Some(timer::add(
            tsc::uptime_ns().saturating_add(ns),
            TimerFn::Plain(slice_over),
        ));
    }
}

/// Asks the scheduler what this CPU runs next; the unit picked is marked loaded here.
fn decide() -> credit::Decision {
    let me = percpu::current_index();
    let now = tsc::uptime_ns();
    with_sched(|s| {
        let d = s.credit.schedule(me as usize, now);
        if let Some(u) = d.next.and_then(|n| s.at(n.0 as usize)) {
            u.on_cpu = Some(me);
            u.account(now);
        }
        d
    })
}

/// At the end of a trap from a guest, before the return to it: switches to another vCPU if this
/// CPU was asked to. `f` is the frame the exit path returns with.
#[inline(always)]
pub fn before_guest_return(f: &mut TrapFrame) {
    // A plain load first: this runs on every return to a guest, and almost never finds work.
    if this_pcpu().resched.load(Ordering::Relaxed) {
        reschedule_here(f);
    }
}

#[inline(never)]
fn reschedule_here(f: &mut TrapFrame) {
    let p = this_pcpu();
    if !p.resched.swap(false, Ordering::AcqRel) {
        return;
    }
    let Some((i, prev)) = p.current.lock().clone() else {
        return;
    };
    let d = decide();
    arm_slice(d.run_for_ns);
    if d.next == Some(UnitId(i as u32)) {
        return;
    }
    switch_out(i, &prev, f);
    let next = match d.next {
        Some(n) => n.0 as usize,
        None => idle_until_work(),
    };
    switch_in(f, next);
}

/// Saves the vCPU running here (unit `i`) and takes it off this CPU.
fn switch_out(i: usize, prev: &VcpuHandle, f: &TrapFrame) {
    let me = percpu::current_index();
    let mut poke = None;
    prev.save(f, &mut || {
        let now = tsc::uptime_ns();
        let (info, p) = with_sched(|s| {
            let info = s.at(i).map(|u| {
                if u.on_cpu == Some(me) {
                    u.on_cpu = None;
                }
                u.account(now);
                u.runstate.info()
            });
            (info, s.credit.context_saved(me as usize))
        });
        poke = p;
        info
    });
    *this_pcpu().current.lock() = None;
    reschedule(poke);
}

/// One step of the work the layers above do with a CPU's idle time (the reaper's destruction
/// of stopped domains: true if it did something), registered once at boot: the idle loop
/// calls it and never names it.
static IDLE_WORK: spin::Once<fn() -> bool> = spin::Once::new();

/// Registers the idle-time work (once, at boot, before any CPU idles).
pub fn register_idle_work(step: fn() -> bool) {
    IDLE_WORK.call_once(|| step);
}

/// Idles this CPU (interrupts on, halted) until the scheduler gives it a unit; returns it,
/// marked loaded here.
fn idle_until_work() -> usize {
    let p = this_pcpu();
    let mut on_idle_tables = false;
    loop {
        p.resched.store(false, Ordering::Release);
        let d = decide();
        arm_slice(d.run_for_ns);
        if let Some(n) = d.next {
            return n.0 as usize;
        }
        if !on_idle_tables {
            // Off the last vCPU's page tables: its domain may be destroyed while this CPU idles
            // (Xen's idle vCPU runs on the idle page tables too).
            smp::use_idle_page_tables();
            on_idle_tables = true;
        }
        // A wake-up after the decision set `resched` (and kicked this CPU): look again.
        if p.resched.load(Ordering::Acquire) {
            continue;
        }
        // Idle time destroys stopped domains, a bounded step at a time, with a window for
        // interrupts after each.
        if IDLE_WORK.get().is_some_and(|step| step()) {
            cpu::interrupt_window();
            continue;
        }
        // Then it zeroes free frames a dead domain (or anyone) left dirty, a few at a time,
        // so allocations find clean ones (Xen's idle `scrub_free_pages`); a wake-up stops it
        // at the next step.
        if crate::mm::scrub_step() {
            cpu::interrupt_window();
            continue;
        }
        // `sti; hlt` is atomic: an interrupt between the check and the halt still wakes us.
        cpu::idle();
        cpu::disable_interrupts();
    }
}

/// Loads unit `i`, picked for this CPU, into the CPU and `f`.
fn switch_in(f: &mut TrapFrame, i: usize) {
    // A unit picked for this CPU exists: units go only when their domain is destroyed, after
    // every CPU has switched its vCPUs out.
    let Some(vr) = with_sched(|s| s.at(i).map(|u| u.vcpu.clone())) else {
        return;
    };
    let p = this_pcpu();
    let dom = vr.domain() as *const DomainSched as *mut DomainSched;
    if p.last_dom.swap(dom, Ordering::Relaxed) != dom {
        crate::arch::x86_64::spec_ctrl::domain_switch();
    }
    *p.current.lock() = Some((i, vr.clone()));
    vr.load(f, &mut || {
        with_sched(|s| s.at(i).map(|u| u.runstate.info()))
    });
}

/// Describes every CPU's scheduling and run queue, and every vCPU's credit state and runstate
/// times (debug key `r`).
pub fn dump(w: &mut dyn core::fmt::Write) {
    let Some(sched) = SCHED.get() else {
        let _ = writeln!(w, "sched: no domain scheduled yet");
        return;
    };
    // Never wait for the scheduler from a debug key.
    let Some(s) = sched.try_lock() else {
        let _ = writeln!(w, "sched: busy; try again");
        return;
    };
    let p = s.credit.params();
    let _ = writeln!(
        w,
        "sched: credit, tslice {} ms, ratelimit {} us",
        p.tslice_ms, p.ratelimit_us
    );
    for c in 0..s.credit.nr_cpus() {
        if let Some(info) = s.credit.cpu_info(c) {
            let q: Vec<u32> = s.credit.runq(c).map(|u| u.0).collect();
            let _ = writeln!(w, "  CPU{c}: {info}, queue {q:?}");
        }
    }
    let now = tsc::uptime_ns();
    for (i, u) in s
        .units
        .iter()
        .enumerate()
        .filter_map(|(i, u)| u.as_ref().filter(|u| !u.dead).map(|u| (i, u)))
    {
        let mut r = u.runstate;
        r.enter(r.state, now);
        let _ = write!(
            w,
            "  {}v{} u{i}: {:?}",
            u.vcpu.domain().id,
            u.vcpu.id(),
            u.state
        );
        if let Some(info) = s.credit.unit_info(UnitId(i as u32)) {
            let _ = write!(w, ", {info}");
        }
        let _ = writeln!(
            w,
            ", running {} ms, runnable {} ms, blocked {} ms, offline {} ms",
            r.time[0] / 1_000_000,
            r.time[1] / 1_000_000,
            r.time[2] / 1_000_000,
            r.time[3] / 1_000_000
        );
    }
}
