//! IOAPICs: every redirection entry masked at boot, lines routed on request.
//!
//! Intel 82093AA datasheet, section 3.2. Each IOAPIC serves GSIs `[gsi_base, gsi_base + n)`.
//! GSI `g` is delivered at vector `IRQ_BASE + g`; handlers are registered per GSI. ISA IRQs map
//! to GSIs through the MADT's interrupt source overrides (`acpi`).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::trap::vectors;

const MAX_IOAPICS: usize = 8;
const MAX_GSI: u32 = (vectors::IRQ_LAST - vectors::IRQ_BASE) as u32 + 1;

struct IoApic {
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
static SPURIOUS_IRQS: AtomicU64 = AtomicU64::new(0);

/// Registers an IOAPIC at virtual `base` serving GSIs from `gsi_base`, masking all its entries.
/// Returns the number of inputs.
pub fn add(base: u64, gsi_base: u32) -> Option<u32> {
    let mut list = IOAPICS.lock();
    let slot = list.iter_mut().find(|s| s.is_none())?;
    let io = IoApic {
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

/// Routes `gsi` to CPU `dest_apic` and installs `handler`. Errors if no IOAPIC serves the GSI.
pub fn route(gsi: u32, mode: LineMode, dest_apic: u32, handler: fn()) -> Result<(), &'static str> {
    if gsi >= MAX_GSI {
        return Err("GSI beyond Hestia's vector range");
    }
    let list = IOAPICS.lock();
    let io = list
        .iter()
        .flatten()
        .find(|io| (io.gsi_base..io.gsi_base + io.entries).contains(&gsi))
        .ok_or("no IOAPIC serves this GSI")?;
    HANDLERS[gsi as usize].store(handler as usize, Ordering::Release);
    let low = (u32::from(vectors::IRQ_BASE) + gsi)
        | (u32::from(mode.active_low) << 13)
        | (u32::from(mode.level) << 15);
    io.set_entry(gsi - io.gsi_base, low, dest_apic << 24);
    Ok(())
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
    // SAFETY: non-zero entries were stored from a `fn()` in `route`.
    let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(h) };
    f();
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
