//! vCPU control (`public/vcpu.h`) and the register state a vCPU starts from
//! (`struct vcpu_guest_context` of `public/arch-x86/xen.h`, `struct cpu_user_regs` of
//! `public/arch-x86/xen-x86_64.h`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::callback::TrapInfo;

/// `vcpu_op` commands.
pub mod cmd {
    /// Set a down, never-initialised vCPU's state (`struct vcpu_guest_context`).
    pub const INITIALISE: u32 = 0;
    /// Start (or restart) an initialised vCPU.
    pub const UP: u32 = 1;
    /// Stop a vCPU; it keeps its state for a later `UP`.
    pub const DOWN: u32 = 2;
    /// 1 if the vCPU is up, else 0.
    pub const IS_UP: u32 = 3;
    /// Time spent in each run state (`struct vcpu_runstate_info`).
    pub const GET_RUNSTATE_INFO: u32 = 4;
    /// Where the hypervisor keeps a copy of the runstate info up to date.
    pub const REGISTER_RUNSTATE_MEMORY_AREA: u32 = 5;
    /// Periodic timer (period in ns; `VIRQ_TIMER` on expiry).
    pub const SET_PERIODIC_TIMER: u32 = 6;
    /// Stops it.
    pub const STOP_PERIODIC_TIMER: u32 = 7;
    /// One-shot timer (absolute system time).
    pub const SET_SINGLESHOT_TIMER: u32 = 8;
    /// Stops it.
    pub const STOP_SINGLESHOT_TIMER: u32 = 9;
    /// Moves the vCPU's `vcpu_info` into a guest page.
    pub const REGISTER_VCPU_INFO: u32 = 10;
    /// The physical CPU's APIC and ACPI ids (privileged).
    pub const GET_PHYSID: u32 = 12;
}

/// `vcpu_guest_context.flags` bits (`VGCF_*`).
pub mod vgcf {
    /// `fpu_ctxt` holds the state to start with (`VGCF_I387_VALID`).
    pub const I387_VALID: u64 = 1 << 0;
    /// Start in guest kernel mode.
    pub const IN_KERNEL: u64 = 1 << 2;
    /// The failsafe callback masks events.
    pub const FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
    /// The syscall callback masks events.
    pub const SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
    /// Start online (ignored by `VCPUOP_initialise`).
    pub const ONLINE: u64 = 1 << 5;
}

/// A vCPU's general registers (`struct cpu_user_regs`, x86_64).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
#[allow(missing_docs)] // Register names.
pub struct CpuUserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// Private to the hypervisor.
    pub error_code: u32,
    /// Private to the hypervisor.
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    pub _pad0: u16,
    /// OUT: the event mask saved with the frame.
    pub saved_upcall_mask: u8,
    pub _pad1: [u8; 3],
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub _pad2: [u16; 3],
    pub es: u16,
    pub _pad3: [u16; 3],
    pub ds: u16,
    pub _pad4: [u16; 3],
    /// Non-zero takes precedence over `fs_base`.
    pub fs: u16,
    pub _pad5: [u16; 3],
    /// Non-zero takes precedence over `gs_base_user`.
    pub gs: u16,
    pub _pad6: [u16; 3],
}
const _: () = assert!(core::mem::size_of::<CpuUserRegs>() == 200);
const _: () = assert!(core::mem::offset_of!(CpuUserRegs, rip) == 128);
const _: () = assert!(core::mem::offset_of!(CpuUserRegs, rflags) == 144);

/// The full state of a PV vCPU (`struct vcpu_guest_context`, x86_64), IN for
/// `VCPUOP_initialise`.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuGuestContext {
    /// FXSAVE image.
    pub fpu_ctxt: [u8; 512],
    /// `VGCF_*`.
    pub flags: u64,
    /// General registers; RIP and RSP are where the vCPU starts.
    pub user_regs: CpuUserRegs,
    /// The virtual IDT: entry `i` is vector `i`.
    pub trap_ctxt: [TrapInfo; 256],
    /// LDT virtual address.
    pub ldt_base: u64,
    /// LDT entries (0 = none).
    pub ldt_ents: u64,
    /// GDT frames (MFNs).
    pub gdt_frames: [u64; 16],
    /// GDT entries.
    pub gdt_ents: u64,
    /// Kernel stack selector for ring transitions.
    pub kernel_ss: u64,
    /// Kernel stack pointer for ring transitions.
    pub kernel_sp: u64,
    /// Control registers; `ctrlreg[3]` is the kernel L4 as `mfn << 12`, `ctrlreg[1]` the user L4.
    pub ctrlreg: [u64; 8],
    /// Debug registers.
    pub debugreg: [u64; 8],
    /// Event upcall entry.
    pub event_callback_eip: u64,
    /// Segment-load failure entry.
    pub failsafe_callback_eip: u64,
    /// SYSCALL entry.
    pub syscall_callback_eip: u64,
    /// `VMASST_*` bits (vCPU 0 only).
    pub vm_assist: u64,
    /// FS base.
    pub fs_base: u64,
    /// Kernel-mode GS base.
    pub gs_base_kernel: u64,
    /// User-mode GS base.
    pub gs_base_user: u64,
}
const _: () = assert!(core::mem::size_of::<VcpuGuestContext>() == 5168);
const _: () = assert!(core::mem::offset_of!(VcpuGuestContext, user_regs) == 520);
const _: () = assert!(core::mem::offset_of!(VcpuGuestContext, trap_ctxt) == 720);
const _: () = assert!(core::mem::offset_of!(VcpuGuestContext, ldt_ents) == 4824);
const _: () = assert!(core::mem::offset_of!(VcpuGuestContext, kernel_ss) == 4968);
const _: () = assert!(core::mem::offset_of!(VcpuGuestContext, ctrlreg) == 4984);
const _: () = assert!(core::mem::offset_of!(VcpuGuestContext, event_callback_eip) == 5112);
const _: () = assert!(core::mem::offset_of!(VcpuGuestContext, gs_base_user) == 5160);
