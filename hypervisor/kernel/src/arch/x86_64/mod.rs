//! Everything x86_64-specific: boot, CPU tables, traps, paging, interrupt controllers, timers,
//! ACPI, SMP and power. The rest of Hestia calls the safe functions exported here.

pub mod acpi;
pub mod apic;
pub mod backtrace;
pub mod boot;
pub mod cpu;
pub mod efi;
pub mod fpu;
pub mod gdt;
pub mod hpet;
pub mod idt;
pub mod ioapic;
pub mod pci;
pub mod percpu;
pub mod pic;
pub mod pit;
pub mod port;
pub mod power;
pub mod pventer;
pub mod rtc;
pub mod smp;
pub mod spec_ctrl;
pub mod syscall;
pub mod trap;
pub mod tsc;
pub mod uaccess;
pub mod xpti;
