//! Domains and vCPUs.
//!
//! A domain owns its frames (the P2M maps its PFNs to MFNs), a shared_info page, and its vCPUs.
//! A vCPU's guest registers live in a [`TrapFrame`]: while it runs, at the top of the physical
//! CPU's stack (where traps from ring 3 push them); while it does not, in [`Vcpu::regs`], with
//! the rest of what the CPU holds of it (`super::context`).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use hestia_core::evtchn::EventChannels;
use hestia_core::pv_mm::{Budget, FrameTable, MmError, Pending};

use super::debugreg;
use super::shared::Shared;

use crate::arch::x86_64::idt::TrapFrame;
use crate::mm::frametable::{self, DirectMem};

/// The id of the vCPU this physical CPU runs (0 while it idles), as `super::context::load`
/// published it.
pub fn this_vcpu_id() -> VcpuId {
    VcpuId::unvalidated(crate::arch::x86_64::percpu::loaded_guest().1)
}

/// A counted reference to a domain; dropping it gives the reference back (Xen's
/// `get_domain`/`put_domain`). Made once per domain, by the domain table as it enters it
/// (`crate::domain`), and cloned from there.
#[derive(Clone)]
pub struct DomainRef(alloc::sync::Arc<Domain>);

impl DomainRef {
    /// The first reference to `d`, newly built.
    pub fn new(d: Domain) -> Self {
        DomainRef(alloc::sync::Arc::new(d))
    }
}

impl core::ops::Deref for DomainRef {
    type Target = Domain;
    fn deref(&self) -> &Domain {
        &self.0
    }
}

/// The domain holding the hardware right, once it exists (it lives until the machine stops).
static HARDWARE: spin::Once<DomainRef> = spin::Once::new();

/// The domain that drives the hardware (device interrupts go to it), once it exists; safe in
/// interrupt handlers.
pub fn hardware_domain() -> Option<&'static Domain> {
    HARDWARE.get().map(|d| &**d)
}

/// Makes `d` the hardware domain, as the domain table enters it (there is only ever one: the
/// table refuses a second).
pub fn set_hardware_domain(d: &DomainRef) {
    HARDWARE.call_once(|| d.clone());
}

/// A counted reference to one vCPU of a domain: what the scheduler holds of it (a
/// `crate::sched::Vcpu`, switched by `super::context`) and what its timers carry, shared as an
/// `Arc` (one per vCPU, made when its domain enters the scheduler).
pub struct VcpuRef {
    /// Its domain.
    pub dom: DomainRef,
    /// Its index in the domain.
    pub id: VcpuId,
}

/// The running vCPU's index into a per-vCPU array of `len` (> 0) entries of its domain (0
/// should a CPU without a vCPU ask: never on a guest path).
fn this_index(len: usize) -> usize {
    let i = this_vcpu_id().index();
    if i < len { i } else { 0 }
}

pub use hestia_core::ids::DomId;
use hestia_core::ids::{Mfn, VcpuId};

/// One entry of a vCPU's virtual IDT (from `set_trap_table`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapEntry {
    /// Handler address; 0 = none.
    pub address: u64,
    /// `trap_info.flags`: DPL in bits 0-1, mask events in bit 2.
    pub flags: u8,
}

/// A registered callback.
#[derive(Clone, Copy, Debug, Default)]
pub struct Callback {
    /// Entry address; 0 = none.
    pub address: u64,
    /// Mask events when it runs.
    pub mask_events: bool,
}

/// Per-vCPU PV state.
pub struct Vcpu {
    /// Index in the domain.
    pub id: VcpuId,
    /// Saved guest registers while not running.
    pub regs: TrapFrame,
    /// The guest is in its kernel mode (hypercalls allowed).
    pub kernel_mode: bool,
    /// Its state was set (the builder for vCPU 0, `VCPUOP_initialise` for the others).
    pub initialised: bool,
    /// Runnable (`VCPUOP_up`), as opposed to down.
    pub up: bool,
    /// FS base while it does not run (the CPU's register holds it while it does).
    pub fs_base: u64,
    /// TSC when its `vcpu_time_info` was last written (`pv::events::refresh_time`).
    pub time_written_tsc: u64,
    /// DS, ES, FS, GS selectors while it does not run.
    pub selectors: [u16; 4],
    /// Its x87/SSE/AVX state, XCR0 and CR0.TS while it does not run (the CPU's while it
    /// does).
    pub fpu: crate::arch::x86_64::fpu::FpuState,
    /// CR3 for guest kernel mode (machine address of the L4).
    pub kernel_cr3: u64,
    /// CR3 for guest user mode (`MMUEXT_NEW_USER_BASEPTR`), 0 if none.
    pub user_cr3: u64,
    /// GS base of guest kernel mode (saved while in user mode or not running).
    pub gs_base_kernel: u64,
    /// GS base of guest user mode (saved while in kernel mode or not running).
    pub gs_base_user: u64,
    /// Virtual IOPL (0-3): allows CLI/STI and port I/O ([`crate::pv::ioport::iopl_ok`]). Set
    /// by `PHYSDEVOP_set_iopl`, the initial context's RFLAGS and, with
    /// `VMASST_TYPE_architectural_iopl`, every `iret`.
    pub iopl: u8,
    /// The I/O bitmap from `PHYSDEVOP_set_iobitmap`: guest address and ports covered.
    pub iobitmap: (u64, u32),
    /// Virtual CR2: the address of the last page fault delivered (or what the guest wrote).
    pub cr2: u64,
    /// Virtual CR4, as the guest reads it.
    pub cr4: u64,
    /// Virtual machine-check bank CTL2 registers (Intel's IA32_MCi_CTL2).
    pub mc_ctl2: [u64; super::msr::MC_BANKS],
    /// Frames of the guest's GDT (`set_gdt`), each holding a SegDesc type reference.
    pub gdt_frames: alloc::vec::Vec<Mfn>,
    /// Entries in the guest's GDT.
    pub gdt_entries: usize,
    /// The guest's LDT (`MMUEXT_SET_LDT`): linear address and entries (0: none).
    pub ldt_base: u64,
    /// Entries in the guest's LDT.
    pub ldt_ents: usize,
    /// The frames behind the LDT's pages, each holding a SegDesc type reference; `None` for a
    /// page that could not be taken yet (its entries read as null until it can).
    pub ldt_frames: alloc::vec::Vec<Option<Mfn>>,
    /// Debug registers DR0-DR3, DR6, DR7 as the guest set them.
    pub debugreg: [u64; 8],
    /// The virtual IDT.
    pub traps: [TrapEntry; 256],
    /// Event-channel upcall entry.
    pub event_callback: Callback,
    /// Failsafe callback.
    pub failsafe_callback: Callback,
    /// SYSCALL-from-user-mode callback.
    pub syscall_callback: Callback,
    /// NMI callback.
    pub nmi_callback: Callback,
    /// Guest kernel stack for frames delivered in user mode (`stack_switch`).
    pub kernel_sp: u64,
    /// Its stack segment.
    pub kernel_ss: u64,
    /// Its VIRQ_TIMER sources (one-shot and periodic) and their armed timers.
    pub timers: super::events::VcpuTimers,
    /// Guest address of a registered `vcpu_runstate_info`, 0 if none.
    pub runstate_area: u64,
}

impl Vcpu {
    /// The frame of the L4 its guest kernel mode runs on (`kernel_cr3`'s frame).
    pub fn kernel_l4(&self) -> Mfn {
        Mfn::new(self.kernel_cr3 >> 12)
    }

    /// A vCPU in guest kernel mode with registers `regs` and page tables `cr3`, its FPU in
    /// the reset state; `ENOMEM` when the heap has no room for that state.
    pub fn new(id: VcpuId, regs: TrapFrame, cr3: u64) -> Result<Self, xen_abi::errno::Errno> {
        Ok(Vcpu {
            id,
            regs,
            kernel_mode: true,
            initialised: false,
            up: false,
            fs_base: 0,
            time_written_tsc: 0,
            selectors: [0; 4],
            fpu: crate::arch::x86_64::fpu::FpuState::new_initial()?,
            kernel_cr3: cr3,
            user_cr3: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
            iopl: 0,
            iobitmap: (0, 0),
            cr2: 0,
            cr4: super::privop::initial_cr4(),
            mc_ctl2: [0; super::msr::MC_BANKS],
            gdt_frames: alloc::vec::Vec::new(),
            gdt_entries: 0,
            ldt_base: 0,
            ldt_ents: 0,
            ldt_frames: alloc::vec::Vec::new(),
            // Architectural reset values of DR6 and DR7.
            debugreg: [
                0,
                0,
                0,
                0,
                0,
                0,
                debugreg::DR6_DEFAULT,
                debugreg::DR7_DEFAULT,
            ],
            traps: [TrapEntry::default(); 256],
            event_callback: Callback::default(),
            failsafe_callback: Callback::default(),
            syscall_callback: Callback::default(),
            nmi_callback: Callback::default(),
            kernel_sp: 0,
            kernel_ss: 0,
            timers: super::events::VcpuTimers::default(),
            runstate_area: 0,
        })
    }
}

/// A PV domain.
pub struct Domain {
    /// Its id.
    pub id: DomId,
    /// The rights it holds (`hestia_core::policy`: dom0 both the hardware and the control
    /// rights, a domU none).
    pub rights: hestia_core::policy::Rights,
    /// Its physical-to-machine map as built (a guest frame number indexes it).
    pub p2m: Vec<Mfn>,
    /// Machine frame of the shared_info page (owned by Hestia, shared with the guest).
    pub shared_info_mfn: Mfn,
    /// vCPUs.
    pub vcpus: Vec<spin::Mutex<Vcpu>>,
    /// Set once the domain shut down or crashed (Xen's `is_shut_down`), or its destruction
    /// began: it does not run until `crate::domain::life::domain_resume` clears it (never once
    /// the destruction began, [`Domain::is_dying`]).
    pub stopped: AtomicBool,
    /// Why it stopped (`SHUTDOWN_*`), valid once `stopped` is set; it stays invalid for a domain
    /// destroyed while it ran ([`Domain::shutdown_code`]).
    pub shutdown_reason: AtomicU32,
    /// Who ends it, its pause counts, how far its destruction went (`crate::domain::life`).
    pub life: super::life::Life,
    /// Its event channels.
    pub evtchn: spin::Mutex<EventChannels>,
    /// Pages it owns now (changes with ballooning).
    pub tot_pages: core::sync::atomic::AtomicU64,
    /// Most pages it may own (`dom0_mem=max:`, `XEN_DOMCTL_max_mem`). It may be set below
    /// `tot_pages`: the domain then gets no page until it has given enough back.
    pub max_pages: core::sync::atomic::AtomicU64,
    /// Its TSC mode (`XEN_DOMCTL_settscinfo`, `xen_abi::domctl::tsc_mode`): Hestia never
    /// emulates the TSC, so only the default and never-emulate modes exist.
    pub tsc_mode: AtomicU32,
    /// How many times its TSC settings were set (Xen's `incarnation`: restores count).
    pub tsc_incarnation: AtomicU32,
    /// Its UUID (`XEN_DOMCTL_setdomainhandle`; zero until the toolstack sets one).
    pub handle: spin::Mutex<xen_abi::domctl::DomainHandle>,
    /// `vm_assist` bits turned on.
    pub vm_assist: core::sync::atomic::AtomicU64,
    /// The I/O ports it holds on the hardware.
    pub ioports: alloc::boxed::Box<hestia_core::ioport::PortSet>,
    /// Its virtual PCI configuration address (port 0xCF8, dword accesses).
    pub pci_cf8: AtomicU32,
    /// Its virtual CMOS index (port 0x70).
    pub rtc_index: core::sync::atomic::AtomicU8,
    /// Per vCPU: direct-map address of the `vcpu_info` it registered, 0 while it uses its
    /// shared_info slot (`VCPUOP_register_vcpu_info`).
    pub vcpu_info: Vec<core::sync::atomic::AtomicU64>,
    /// Its physical IRQs (dom0's devices).
    pub pirqs: spin::Mutex<hestia_core::pirq::PirqTable>,
    /// Per vCPU: its unfinished page-table validation or teardown (`hestia_core::pv_mm`),
    /// touched only by the vCPU itself. Lock order: a `Vcpu` lock, then this, then the frame
    /// table.
    pub mm_pending: Vec<spin::Mutex<Pending>>,
    /// Rate limiter of the log lines it causes (`gwarn!` and family).
    pub log_limit: crate::console::GuestLogLimit,
    /// What the scheduler keeps of it: its pauses, its vCPUs that poll.
    pub sched: crate::sched::DomainSched,
    /// The line its `CONSOLEIO_write`s assemble when Hestia does not serve its console ring
    /// (a domain the toolstack created; `crate::console::ring::console_io_write`).
    pub console_line: spin::Mutex<crate::console::ring::Line>,
    /// Its console ring, when Hestia serves it (boot-time domUs).
    pub console: Option<crate::console::ring::RingConsole>,
    /// Its grant table and maptrack (`super::grant`).
    pub grant: super::grant::Grants,
    /// Its not-present page-table entries are checked against L1TF (`pv-l1tf=`; Xen's
    /// `d->arch.pv.check_l1tf`), fixed at creation by [`super::l1tf::domain_init`].
    pub check_l1tf: bool,
    /// The CPUID leaves and MSRs it is offered (Xen's `d->arch.cpu_policy`): PV default from
    /// [`super::privop::default_cpu_policy`] until its toolstack sets another before it first
    /// runs (`XEN_DOMCTL_set_cpu_policy`). Read by every CPUID it executes; a leaf lock.
    pub cpu_policy: spin::Mutex<alloc::boxed::Box<hestia_core::cpu_policy::CpuPolicy>>,
}

impl Domain {
    /// Takes its vCPUs off the CPUs once it stopped (`crate::sched::stop_domain`); false if
    /// that was done already, or a resume came first.
    pub fn stop_vcpus(&self) -> bool {
        crate::sched::stop_domain(&self.sched, || self.stopped.load(Ordering::Acquire))
    }

    /// Whether the guest turned on `vm_assist` type `kind` (`xen_abi::xen::vmasst`).
    pub fn vm_assist(&self, kind: u32) -> bool {
        self.vm_assist.load(core::sync::atomic::Ordering::Relaxed) & (1u64 << (kind & 63)) != 0
    }

    /// The shared_info page.
    pub fn shared(&self) -> Shared<'_> {
        Shared::new(self.shared_info_mfn, &self.vcpu_info)
    }

    /// Finishes the teardown the vCPU running on this CPU left pending, if any (Xen's
    /// `put_old_guest_table`): `Preempted` while work is left. Takes the frame table's lock
    /// only when there is something to do (it runs at the start of every MMU batch).
    pub fn finish_old_tables(&self) -> Result<(), MmError> {
        if !self.mm_pending[this_index(self.mm_pending.len())]
            .lock()
            .owes_teardown()
        {
            return Ok(());
        }
        self.mm_op(|ft, mem, pending, budget| ft.finish_teardown(mem, pending, budget))
    }

    /// Runs a preemptible frame-table operation (`hestia_core::pv_mm`'s `*_preemptible`) for
    /// the vCPU running on this CPU, with its unfinished work in hand, until it is done or the
    /// vCPU has an interrupt or event to take first (`Preempted`: issue it again). An entry
    /// refused for L1TF crashes the domain here, for every hypercall that changes tables.
    #[track_caller]
    pub fn mm_op<R>(
        &self,
        mut op: impl FnMut(
            &mut FrameTable,
            &mut DirectMem,
            &mut Pending,
            &mut Budget,
        ) -> Result<R, MmError>,
    ) -> Result<R, MmError> {
        let mut pending = self.mm_pending[this_index(self.mm_pending.len())].lock();
        frametable::preemptible(
            || super::events::preempt_now(self),
            |ft, mem, budget| op(ft, mem, &mut pending, budget),
        )
        .inspect_err(|&e| {
            if let MmError::L1tf { level, entry } = e {
                super::l1tf::crash(self, level, entry);
            }
        })
    }

    /// The vCPU running on this physical CPU.
    pub fn this_vcpu(&self) -> &spin::Mutex<Vcpu> {
        &self.vcpus[this_index(self.vcpus.len())]
    }

    /// Pages the domain owns.
    pub fn nr_pages(&self) -> u64 {
        self.p2m.len() as u64
    }

    /// Marks the domain stopped; returns false if it already was.
    pub fn mark_stopped(&self) -> bool {
        !self.stopped.swap(true, Ordering::AcqRel)
    }
}
