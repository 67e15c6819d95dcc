//! Hypercall numbers and core constants (`public/xen.h`).
//!
//! The 64-bit PV calling convention: number in RAX, arguments in RDI, RSI, RDX, R10, R8, result
//! in RAX; RCX and R11 are clobbered by `syscall`. A hypercall page holds 32-byte stubs, one per
//! number, each `mov $nr, %eax; syscall; ret`.

/// Hypercall numbers from `public/xen.h` (`__HYPERVISOR_*`).
#[allow(missing_docs)] // The names mirror public/xen.h one to one.
pub mod hypercall {
    pub const SET_TRAP_TABLE: u32 = 0;
    pub const MMU_UPDATE: u32 = 1;
    pub const SET_GDT: u32 = 2;
    pub const STACK_SWITCH: u32 = 3;
    pub const SET_CALLBACKS: u32 = 4;
    pub const FPU_TASKSWITCH: u32 = 5;
    pub const SCHED_OP_COMPAT: u32 = 6;
    pub const PLATFORM_OP: u32 = 7;
    pub const SET_DEBUGREG: u32 = 8;
    pub const GET_DEBUGREG: u32 = 9;
    pub const UPDATE_DESCRIPTOR: u32 = 10;
    pub const MEMORY_OP: u32 = 12;
    pub const MULTICALL: u32 = 13;
    pub const UPDATE_VA_MAPPING: u32 = 14;
    pub const SET_TIMER_OP: u32 = 15;
    pub const EVENT_CHANNEL_OP_COMPAT: u32 = 16;
    pub const XEN_VERSION: u32 = 17;
    pub const CONSOLE_IO: u32 = 18;
    pub const PHYSDEV_OP_COMPAT: u32 = 19;
    pub const GRANT_TABLE_OP: u32 = 20;
    pub const VM_ASSIST: u32 = 21;
    pub const UPDATE_VA_MAPPING_OTHERDOMAIN: u32 = 22;
    pub const IRET: u32 = 23;
    pub const VCPU_OP: u32 = 24;
    pub const SET_SEGMENT_BASE: u32 = 25;
    pub const MMUEXT_OP: u32 = 26;
    pub const XSM_OP: u32 = 27;
    pub const NMI_OP: u32 = 28;
    pub const SCHED_OP: u32 = 29;
    pub const CALLBACK_OP: u32 = 30;
    pub const XENOPROF_OP: u32 = 31;
    pub const EVENT_CHANNEL_OP: u32 = 32;
    pub const PHYSDEV_OP: u32 = 33;
    pub const HVM_OP: u32 = 34;
    pub const SYSCTL: u32 = 35;
    pub const DOMCTL: u32 = 36;
    pub const KEXEC_OP: u32 = 37;
    pub const TMEM_OP: u32 = 38;
    pub const ARGO_OP: u32 = 39;
    pub const XENPMU_OP: u32 = 40;
    pub const DM_OP: u32 = 41;
    pub const HYPFS_OP: u32 = 42;
    pub const ARCH_0: u32 = 48;
    pub const ARCH_7: u32 = 55;
}

/// Size of one stub in the hypercall page.
pub const HYPERCALL_STUB_SIZE: usize = 32;
/// Number of stubs that fit in the 4 KiB hypercall page.
pub const NR_HYPERCALL_STUBS: usize = 4096 / HYPERCALL_STUB_SIZE;

/// Start of the hypervisor's reserved virtual range for 64-bit PV guests (PML4 slot 256).
pub const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// End (exclusive) of the reserved range (PML4 slot 272).
pub const HYPERVISOR_VIRT_END: u64 = 0xFFFF_8800_0000_0000;
/// Where the read-only machine-to-phys table is mapped for PV guests.
pub const MACH2PHYS_VIRT_START: u64 = 0xFFFF_8000_0000_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypercall_page_holds_every_number() {
        assert!(hypercall::ARCH_7 < NR_HYPERCALL_STUBS as u32);
        assert_eq!(NR_HYPERCALL_STUBS, 128);
    }

    #[test]
    fn hypervisor_range_is_pml4_slots_256_to_271() {
        assert_eq!((HYPERVISOR_VIRT_START >> 39) & 511, 256);
        assert_eq!(((HYPERVISOR_VIRT_END - 1) >> 39) & 511, 271);
    }
}
