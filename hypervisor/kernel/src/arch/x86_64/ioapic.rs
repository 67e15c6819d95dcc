//! IOAPICs: every redirection entry masked at boot, lines routed on request.
//!
//! Intel 82093AA datasheet, section 3.2. Each IOAPIC serves GSIs `[gsi_base, gsi_base + n)`.
//! GSI `g` is delivered at vector `IRQ_BASE + g`; handlers are registered per GSI. ISA IRQs map
//! to GSIs through the MADT's interrupt source overrides (`acpi`). A line is Hestia's (its
//! serial port) or, once dom0 binds it, dom0's; Hestia's lines are never handed out.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::trap::vectors;

const MAX_IOAPICS: usize = 8;
const MAX_GSI: u32 = (vectors::IRQ_LAST - vectors::IRQ_BASE) as u32 + 1;

struct IoApic {
    /// Physical address of the register window (how dom0 names it).
    phys: u64,
    /// Where Hestia maps it.
    base: u64,
    gsi_base: u32,
    entries: u32,
}

impl IoApic {
    fn read(&self, reg: u32) -> u32 {
        // SAFETY: `base` maps the IOAPIC's register window uncached; IOREGSEL at +0 selects the
        // register read through IOWIN at +0x10. Callers hold `IOAPICS`' lock (index/data pair).
        unsafe {
            (self.base as *mut u32).write_volatile(reg);
            ((self.base + 0x10) as *const u32).read_volatile()
        }
    }
    fn write(&self, reg: u32, v: u32) {
        // SAFETY: as in `read`.
        unsafe {
            (self.base as *mut u32).write_volatile(reg);
            ((self.base + 0x10) as *mut u32).write_volatile(v);
        }
    }
    fn set_entry(&self, pin: u32, low: u32, high: u32) {
        self.write(0x10 + 2 * pin, low | (1 << 16));
        self.write(0x11 + 2 * pin, high);
        self.write(0x10 + 2 * pin, low);
    }
}

static IOAPICS: spin::Mutex<[Option<IoApic>; MAX_IOAPICS]> =
    spin::Mutex::new([const { None }; MAX_IOAPICS]);
static HANDLERS: [AtomicUsize; MAX_GSI as usize] =
    [const { AtomicUsize::new(0) }; MAX_GSI as usize];
/// GSIs Hestia drives itself.
static HESTIA_OWNED: [AtomicBool; MAX_GSI as usize] =
    [const { AtomicBool::new(false) }; MAX_GSI as usize];
static SPURIOUS_IRQS: AtomicU64 = AtomicU64::new(0);

/// Registers the IOAPIC at physical `phys`, mapped at `base`, serving GSIs from `gsi_base`,
/// masking all its entries. Returns the number of inputs.
pub fn add(phys: u64, base: u64, gsi_base: u32) -> Option<u32> {
    let mut list = IOAPICS.lock();
    let slot = list.iter_mut().find(|s| s.is_none())?;
    let io = IoApic {
        phys,
        base,
        gsi_base,
        entries: 0,
    };
    let entries = ((io.read(1) >> 16) & 0xFF) + 1;
    let io = IoApic { entries, ..io };
    for pin in 0..entries {
        io.set_entry(pin, 1 << 16, 0);
    }
    *slot = Some(io);
    Some(entries)
}

/// Trigger and polarity of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineMode {
    /// Level-triggered (else edge).
    pub level: bool,
    /// Active low (else active high).
    pub active_low: bool,
}

/// Routes `gsi` to CPU `dest_apic` for Hestia itself and installs `handler`. Errors if no
/// IOAPIC serves the GSI.
pub fn route(
    gsi: u32,
    mode: LineMode,
    dest_apic: u32,
    handler: fn(u32),
) -> Result<(), &'static str> {
    route_line(gsi, mode, dest_apic, handler)?;
    HESTIA_OWNED[gsi as usize].store(true, Ordering::Release);
    Ok(())
}

/// Routes `gsi` for a guest (dom0's devices); refused for Hestia's own lines.
pub fn route_for_guest(
    gsi: u32,
    mode: LineMode,
    dest_apic: u32,
    handler: fn(u32),
) -> Result<(), &'static str> {
    if hestia_owns(gsi) {
        return Err("the line is Hestia's");
    }
    route_line(gsi, mode, dest_apic, handler)
}

/// True if Hestia drives `gsi` itself.
pub fn hestia_owns(gsi: u32) -> bool {
    HESTIA_OWNED
        .get(gsi as usize)
        .is_some_and(|o| o.load(Ordering::Acquire))
}

/// True if some IOAPIC serves `gsi` (within Hestia's vector range).
pub fn serves(gsi: u32) -> bool {
    gsi < MAX_GSI && with_line(gsi, |_, _| ()).is_ok()
}

fn with_line<R>(gsi: u32, f: impl FnOnce(&IoApic, u32) -> R) -> Result<R, &'static str> {
    if gsi >= MAX_GSI {
        return Err("GSI beyond Hestia's vector range");
    }
    let list = IOAPICS.lock();
    let io = list
        .iter()
        .flatten()
        .find(|io| (io.gsi_base..io.gsi_base + io.entries).contains(&gsi))
        .ok_or("no IOAPIC serves this GSI")?;
    Ok(f(io, gsi - io.gsi_base))
}

fn route_line(
    gsi: u32,
    mode: LineMode,
    dest_apic: u32,
    handler: fn(u32),
) -> Result<(), &'static str> {
    with_line(gsi, |io, pin| {
        HANDLERS[gsi as usize].store(handler as usize, Ordering::Release);
        let low = (u32::from(vectors::IRQ_BASE) + gsi)
            | (u32::from(mode.active_low) << 13)
            | (u32::from(mode.level) << 15);
        io.set_entry(pin, low, dest_apic << 24);
    })
}

/// Masks or unmasks `gsi`'s redirection entry (a level-triggered guest line stays masked from
/// its interrupt until the guest's EOI).
pub fn set_masked(gsi: u32, masked: bool) {
    let _ = with_line(gsi, |io, pin| {
        let low = io.read(0x10 + 2 * pin);
        let low = if masked {
            low | (1 << 16)
        } else {
            low & !(1 << 16)
        };
        io.write(0x10 + 2 * pin, low);
    });
}

/// Masks `gsi` and forgets its handler (a guest unbound it).
pub fn release(gsi: u32) {
    if !hestia_owns(gsi) {
        set_masked(gsi, true);
        if let Some(h) = HANDLERS.get(gsi as usize) {
            h.store(0, Ordering::Release);
        }
    }
}

/// Reads register `reg` of the IOAPIC at physical address `phys` (`PHYSDEVOP_apic_read`).
pub fn read_register(phys: u64, reg: u32) -> Option<u32> {
    let list = IOAPICS.lock();
    let io = list.iter().flatten().find(|io| io.phys == phys)?;
    Some(io.read(reg))
}

/// Runs the handler of `gsi` (called from the trap dispatcher, before EOI).
pub fn handle_irq(gsi: u32) {
    let h = HANDLERS
        .get(gsi as usize)
        .map_or(0, |h| h.load(Ordering::Acquire));
    if h == 0 {
        SPURIOUS_IRQS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // SAFETY: non-zero entries were stored from a `fn(u32)` in `route_line`.
    let f: fn(u32) = unsafe { core::mem::transmute::<usize, fn(u32)>(h) };
    f(gsi);
}

/// Describes the IOAPICs for the `r` debug key and the boot log.
pub fn describe(w: &mut dyn core::fmt::Write) {
    for io in IOAPICS.lock().iter().flatten() {
        let _ = writeln!(
            w,
            "    IOAPIC at {:#x}: GSI {}-{}",
            io.base,
            io.gsi_base,
            io.gsi_base + io.entries - 1
        );
    }
    let _ = writeln!(
        w,
        "    unhandled IRQs: {}",
        SPURIOUS_IRQS.load(Ordering::Relaxed)
    );
}
