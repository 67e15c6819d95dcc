//! ACPI discovery with the `acpi` crate: CPUs, IOAPICs and interrupt overrides from the MADT,
//! power and reset registers from the FADT, the HPET, and `\_S5` from the DSDT.
//!
//! Tables are firmware memory: the crate checks signatures and lengths; Hestia maps them
//! through the direct map, or read-only in the device window when they lie beyond it.
//! ACPI 6.5: 5.2.12 (MADT), 5.2.9 (FADT), 7.4.2 (`\_S5`).

use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::address::{AddressSpace, GenericAddress};
use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, HpetInfo, PhysicalMapping};
use hestia_core::acpi_s5::{self, SleepTypes};

use crate::bootinfo::AcpiRoot;
use crate::mm;

#[derive(Clone, Copy, Debug)]
struct Handler;

impl AcpiHandler for Handler {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let (p, s) = (phys as u64, size as u64);
        let virt = if mm::in_direct_map(p, s) {
            Some(mm::phys_to_virt(p))
        } else {
            mm::map_firmware(p, s)
        };
        // A table Hestia cannot map at all is unrecoverable firmware breakage at boot.
        let Some(ptr) = virt.and_then(|v| NonNull::new(v as *mut T)) else {
            crate::machine::fatal_boot(format_args!(
                "acpi: cannot map firmware table at {phys:#x} ({size} bytes)"
            ));
        };
        // SAFETY: `ptr` maps `size` bytes at `phys` for as long as Hestia runs (direct map or a
        // never-reused window); the crate validates what it reads.
        unsafe { PhysicalMapping::new(phys, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// A processor from the MADT.
#[derive(Clone, Copy, Debug)]
pub struct Processor {
    /// Local APIC id.
    pub apic_id: u32,
    /// ACPI processor id (UID).
    pub acpi_id: u32,
    /// Enabled now (else only "online capable", or disabled).
    pub enabled: bool,
}

/// An IOAPIC from the MADT.
#[derive(Clone, Copy, Debug)]
pub struct IoApicInfo {
    /// Physical register address.
    pub addr: u64,
    /// First GSI it serves.
    pub gsi_base: u32,
}

/// An ISA IRQ remapped by the MADT.
#[derive(Clone, Copy, Debug)]
pub struct Override {
    /// ISA IRQ.
    pub irq: u8,
    /// GSI it arrives on.
    pub gsi: u32,
    /// MPS INTI flags (polarity bits 0-1, trigger bits 2-3).
    pub flags: u16,
}

/// FADT registers Hestia drives.
#[derive(Clone, Copy, Debug)]
pub struct PowerRegs {
    /// PM1a control block (I/O or memory).
    pub pm1a_cnt: Option<GenericAddress>,
    /// PM1b control block.
    pub pm1b_cnt: Option<GenericAddress>,
    /// Reset register and value, if the FADT says it is supported.
    pub reset: Option<(GenericAddress, u8)>,
    /// SMI command port and the value that switches firmware to ACPI mode.
    pub smi_cmd: u32,
    /// Value for `smi_cmd` that enables ACPI.
    pub acpi_enable: u8,
    /// `\_S5` sleep types, if found in the DSDT.
    pub s5: Option<SleepTypes>,
}

/// What Hestia learns from ACPI.
#[derive(Debug)]
pub struct Platform {
    /// Local APIC physical address.
    pub lapic_addr: u64,
    /// Processors in MADT order (the BSP is normally first).
    pub processors: Vec<Processor>,
    /// IOAPICs.
    pub ioapics: Vec<IoApicInfo>,
    /// ISA overrides.
    pub overrides: Vec<Override>,
    /// Dual 8259 present.
    pub has_8259: bool,
    /// HPET base address.
    pub hpet: Option<u64>,
    /// FADT registers.
    pub power: Option<PowerRegs>,
    /// Table signatures seen, for the boot log.
    pub tables: Vec<[u8; 4]>,
}

fn io_or_mem(g: GenericAddress) -> bool {
    matches!(
        g.address_space,
        AddressSpace::SystemIo | AddressSpace::SystemMemory
    ) && g.address != 0
}

/// Parses the tables under `root`.
pub fn discover(root: AcpiRoot) -> Result<Platform, acpi::AcpiError> {
    // SAFETY: the address comes from an RSDP whose checksum the bootloader tag carried and
    // `bootinfo` verified; the crate validates the RSDT/XSDT signature before using it.
    let tables = unsafe { AcpiTables::from_rsdt(Handler, root.revision, root.sdt_addr as usize)? };
    let mut p = Platform {
        lapic_addr: 0xFEE0_0000,
        processors: Vec::new(),
        ioapics: Vec::new(),
        overrides: Vec::new(),
        has_8259: true,
        hpet: None,
        power: None,
        tables: tables
            .headers()
            .map(|h| {
                h.signature
                    .as_str()
                    .as_bytes()
                    .try_into()
                    .unwrap_or(*b"????")
            })
            .collect(),
    };

    let madt = tables.find_table::<Madt>()?;
    let madt = madt.get();
    p.lapic_addr = u64::from(madt.local_apic_address);
    p.has_8259 = madt.supports_8259();
    for e in madt.entries() {
        match e {
            MadtEntry::LocalApic(l) => p.processors.push(Processor {
                apic_id: u32::from(l.apic_id),
                acpi_id: u32::from(l.processor_id),
                enabled: l.flags & 1 != 0,
            }),
            MadtEntry::LocalX2Apic(l) => p.processors.push(Processor {
                apic_id: l.x2apic_id,
                acpi_id: l.processor_uid,
                enabled: l.flags & 1 != 0,
            }),
            MadtEntry::IoApic(io) => p.ioapics.push(IoApicInfo {
                addr: u64::from(io.io_apic_address),
                gsi_base: io.global_system_interrupt_base,
            }),
            MadtEntry::InterruptSourceOverride(o) if o.bus == 0 => p.overrides.push(Override {
                irq: o.irq,
                gsi: o.global_system_interrupt,
                flags: o.flags,
            }),
            MadtEntry::LocalApicAddressOverride(o) => p.lapic_addr = o.local_apic_address,
            _ => {}
        }
    }

    p.hpet = HpetInfo::new(&tables).ok().map(|h| h.base_address as u64);

    if let Ok(fadt) = tables.find_table::<Fadt>() {
        let flags = fadt.flags;
        let reset_value = fadt.reset_value;
        let reset = fadt
            .reset_register()
            .ok()
            .filter(|g| flags.supports_system_reset_via_fadt() && io_or_mem(*g))
            .map(|g| (g, reset_value));
        let s5 = tables.dsdt().ok().and_then(|d| {
            let len = u64::from(d.length);
            let bytes = if mm::in_direct_map(d.address as u64, len) {
                Some(mm::phys_to_virt(d.address as u64))
            } else {
                mm::map_firmware(d.address as u64, len)
            }?;
            // SAFETY: the DSDT body is mapped for `len` bytes (the crate read the length from
            // the table header) and stays mapped.
            let aml = unsafe { core::slice::from_raw_parts(bytes as *const u8, len as usize) };
            acpi_s5::find_s5(aml)
        });
        let pm_timer = fadt
            .pm_timer_block()
            .ok()
            .flatten()
            .filter(|g| g.address_space == AddressSpace::SystemIo)
            .and_then(|g| u16::try_from(g.address).ok())
            .filter(|&port| port != 0);
        PM_TIMER_PORT.call_once(|| pm_timer);
        p.power = Some(PowerRegs {
            pm1a_cnt: fadt.pm1a_control_block().ok().filter(|g| io_or_mem(*g)),
            pm1b_cnt: fadt
                .pm1b_control_block()
                .ok()
                .flatten()
                .filter(|g| io_or_mem(*g)),
            reset,
            smi_cmd: { fadt.smi_cmd_port },
            acpi_enable: { fadt.acpi_enable },
            s5,
        });
    }
    PROCESSORS.call_once(|| p.processors.clone());
    Ok(p)
}

/// The ACPI PM timer's I/O port (the FADT's X_PM_TMR_BLK when it is in I/O space, else
/// PM_TMR_BLK), once `discover` ran.
static PM_TIMER_PORT: spin::Once<Option<u16>> = spin::Once::new();

/// The ACPI PM timer's first I/O port, if the FADT has one in I/O space.
pub fn pm_timer_port() -> Option<u16> {
    PM_TIMER_PORT.get().copied().flatten()
}

/// The MADT's processors, once `discover` ran.
static PROCESSORS: spin::Once<Vec<Processor>> = spin::Once::new();

/// The ACPI processor id of the CPU with local APIC id `apic_id`.
pub fn acpi_id(apic_id: u32) -> Option<u32> {
    PROCESSORS
        .get()?
        .iter()
        .find(|p| p.apic_id == apic_id)
        .map(|p| p.acpi_id)
}

impl Platform {
    /// The GSI and line mode of ISA IRQ `irq` (identity, edge, active high unless overridden).
    pub fn isa_irq(&self, irq: u8) -> (u32, super::ioapic::LineMode) {
        let mut mode = super::ioapic::LineMode {
            level: false,
            active_low: false,
        };
        let Some(o) = self.overrides.iter().find(|o| o.irq == irq) else {
            return (u32::from(irq), mode);
        };
        // MPS INTI flags: polarity 01 high / 11 low; trigger 01 edge / 11 level; 00 = bus default.
        mode.active_low = o.flags & 0b11 == 0b11;
        mode.level = (o.flags >> 2) & 0b11 == 0b11;
        (o.gsi, mode)
    }
}
