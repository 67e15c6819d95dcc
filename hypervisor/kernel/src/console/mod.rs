//! The console: leveled, timestamped log lines and guest output on the serial port, and serial
//! input.
//!
//! Every line is `[seconds.micros] LEVEL message`, timestamped from the TSC. Output from all
//! CPUs goes through one lock; a CPU that faults while holding it (or while printing a panic)
//! takes the lock over instead of deadlocking, so a fault dump always gets out. Input bytes are
//! handed to the debug keys ([`keys`]), or to dom0 once it exists (Ctrl-A three times switches).
//!
//! Transmission (Xen's `serial_tx_buffer`, `xen/drivers/char/serial.c`): until the UART's
//! interrupt is routed, and with `sync_console`, every byte is polled out before the writer goes
//! on. Once it is routed ([`start_async`]), output is queued in a transmit ring
//! ([`hestia_core::serial_tx`]) and the transmit-empty interrupt moves one FIFO's worth at a time
//! to the UART, so a writer holds its CPU only as long as copying takes. Nothing is dropped:
//! Hestia's own lines that find the ring full poll the UART until their bytes fit (bounded by
//! their length); guest output is only queued while a quarter of the ring stays free for
//! Hestia's lines, and otherwise the guest waits ([`guest_write`] says so, `console_io` retries
//! by continuation). Xen's asynchronous mode drops bytes when full (`tx_quench`); Hestia waits
//! instead, so dom0's console and the test logs are complete. Fatal paths call [`start_sync`],
//! which sends what the ring holds and makes everything after it synchronous.
//!
//! Lines a guest can trigger go through [`guest_log`] (the `gwarn!` family): one token bucket
//! per domain ([`hestia_core::ratelimit`]), with a "N messages suppressed" line when it refills.
//!
//! Locks: the console lock (`LOCK_OWNER`, interrupts off, re-entrant per CPU) covers the UART's
//! transmitter and the ring; the ring's own mutex is only ever taken by the console lock's
//! holder, with `try_lock`, so a re-entered or taken-over console writes synchronously instead
//! of waiting for itself. A domain's rate limiter is taken alone, interrupts off.

pub mod history;
pub mod keys;
pub mod ring;

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicUsize, Ordering};

use hestia_core::cmdline::{LogLevel, Options};
use hestia_core::ratelimit::RateLimit;
use hestia_core::serial_tx::{Source, TxRing, cooked, cooked_len};

use crate::arch::x86_64::{cpu, tsc};
use crate::drivers::uart16550::{Cause, Uart};
use crate::pv::domain::Domain;

/// I/O base of the console UART. The UART itself is stateless, so no lock guards it: the
/// console lock serialises output and only the BSP reads input.
static COM1_PORT: AtomicU16 = AtomicU16::new(0x3f8);
static COM1_ENABLED: AtomicBool = AtomicBool::new(true);
static LOG_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
/// CPU index + 1 of the lock holder, 0 when free.
static LOCK_OWNER: AtomicU32 = AtomicU32::new(0);
/// Transmit FIFO depth of the UART (from `Uart::init`).
static FIFO_SIZE: AtomicUsize = AtomicUsize::new(1);
/// Output goes through [`TX`] (the transmit interrupt works and no fatal path stopped it).
static ASYNC: AtomicBool = AtomicBool::new(false);
/// The transmit ring, allocated by [`start_async`]. Only the console lock's holder takes it.
static TX: spin::Mutex<Option<TxRing>> = spin::Mutex::new(None);
/// Interrupt causes one serial interrupt handles before it lets other interrupts in.
const MAX_CAUSES_PER_IRQ: usize = 8;
/// Set by the first transmit-empty interrupt: the UART's line reaches Hestia.
static TX_IRQ_SEEN: AtomicBool = AtomicBool::new(false);
/// How long [`start_async`] waits for that first interrupt.
const TX_IRQ_WAIT_NS: u64 = 20_000_000;

/// Initialises COM1 with the defaults (115200 8N1 at 0x3F8) before anything else runs.
pub fn early_init() {
    FIFO_SIZE.store(uart().init(115_200), Ordering::Relaxed);
}

fn uart() -> Uart {
    Uart::new(uart_port())
}

/// I/O base of the console UART (kept from dom0).
pub fn uart_port() -> u16 {
    COM1_PORT.load(Ordering::Relaxed)
}

/// Applies the `com1=`, `console=` and `loglvl=` options (`sync_console` and
/// `serial_tx_buffer=` are [`start_async`]'s).
pub fn configure(opts: &Options) {
    LOG_LEVEL.store(opts.loglvl as u8, Ordering::Relaxed);
    COM1_ENABLED.store(opts.console.com1, Ordering::Relaxed);
    COM1_PORT.store(opts.com1.port, Ordering::Relaxed);
    FIFO_SIZE.store(uart().init(opts.com1.baud), Ordering::Relaxed);
}

/// The UART's interrupt is routed (to [`keys::serial_interrupt`]) and this CPU takes interrupts:
/// enables reception and, unless `sync_console`, interrupt-driven transmission through a
/// `serial_tx_buffer`-byte ring, once the line has proved to work. Enabling the transmit-empty
/// interrupt with the transmitter idle raises it at once; if none arrives (a wrong `com1=` IRQ, a
/// UART without a wired line), output stays polled rather than waiting in the ring for ever
/// (Xen's ns16550 polls until `intr_works`).
pub fn start_async(opts: &Options) {
    let uart = uart();
    uart.enable_interrupts(!opts.sync_console);
    if opts.sync_console {
        return;
    }
    let start = tsc::uptime_ns();
    while !TX_IRQ_SEEN.load(Ordering::Acquire)
        && tsc::uptime_ns().saturating_sub(start) < TX_IRQ_WAIT_NS
    {
        core::hint::spin_loop();
    }
    if !TX_IRQ_SEEN.load(Ordering::Acquire) {
        uart.enable_interrupts(false);
        crate::warn!(
            "console: no transmit interrupt from the UART (IRQ {}): output stays polled",
            opts.com1.irq
        );
        return;
    }
    let _g = ConsoleGuard::acquire();
    *TX.lock() = Some(TxRing::new(opts.serial_tx_buffer));
    ASYNC.store(true, Ordering::Release);
}

/// Fatal paths (Xen's `console_start_sync`): sends what the ring still holds, polled, and makes
/// every later byte synchronous, so nothing printed before a stop is lost.
pub fn start_sync() {
    let _g = ConsoleGuard::acquire();
    if let Some(mut tx) = TX.try_lock()
        && let Some(ring) = tx.as_mut()
    {
        let uart = uart();
        while !ring.is_empty() {
            drain_polled(uart, ring);
        }
    }
    ASYNC.store(false, Ordering::Release);
}

/// The serial interrupt: received bytes (each handed to `input`), transmitter refills,
/// status. Handles a bounded number of causes, then re-arms the UART so that what is left
/// raises a fresh edge later.
pub fn serial_interrupt(input: fn(u8)) {
    let uart = uart();
    for _ in 0..MAX_CAUSES_PER_IRQ {
        match uart.cause() {
            Cause::None => return,
            Cause::Received => poll_input(uart, input),
            Cause::TxEmpty => tx_interrupt(uart),
            Cause::LineStatus | Cause::ModemStatus => uart.clear_status(),
        }
    }
    uart.rearm_interrupts();
}

/// Drains received bytes into the input handler.
fn poll_input(uart: Uart, input: fn(u8)) {
    for _ in 0..64 {
        let Some(b) = uart.try_recv() else { break };
        input(b);
    }
}

/// The transmitter is empty: refill it from the ring. As Xen's `serial_tx_interrupt`, wait for
/// the console lock only while the transmitter stays empty: a holder that refills it meanwhile
/// will be followed by another interrupt.
fn tx_interrupt(uart: Uart) {
    TX_IRQ_SEEN.store(true, Ordering::Release);
    let Some(_g) = ConsoleGuard::acquire_while(|| uart.tx_ready()) else {
        return;
    };
    if let Some(mut tx) = TX.try_lock()
        && let Some(ring) = tx.as_mut()
    {
        start_tx(uart, ring);
    }
}

/// Moves up to a FIFO's worth of bytes from the ring to the UART if it is empty.
fn start_tx(uart: Uart, ring: &mut TxRing) {
    if ring.is_empty() || !uart.tx_ready() {
        return;
    }
    for _ in 0..FIFO_SIZE.load(Ordering::Relaxed) {
        let Some(b) = ring.pop() else { break };
        uart.putc(b);
    }
}

/// Waits (bounded, as [`Uart::send`]) for the UART to empty, then gives it a FIFO's worth.
fn drain_polled(uart: Uart, ring: &mut TxRing) {
    for _ in 0..FIFO_SIZE.load(Ordering::Relaxed) {
        let Some(b) = ring.pop() else { break };
        uart.send(b);
    }
}

/// Runs `f` on the ring when output is asynchronous and this CPU may use it (the console lock
/// is held); `None` means "write synchronously".
fn with_ring<R>(f: impl FnOnce(Uart, &mut TxRing) -> R) -> Option<R> {
    if !ASYNC.load(Ordering::Acquire) {
        return None;
    }
    let mut tx = TX.try_lock()?;
    Some(f(uart(), tx.as_mut()?))
}

/// Puts `text` on the line, through the ring or polled. The caller holds the console lock.
fn emit(text: &[u8], src: Source) {
    if src == Source::Hypervisor {
        history::push(text);
    }
    if !COM1_ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let queued = with_ring(|uart, ring| {
        for b in cooked(text, src) {
            // Full: make room by polling rather than lose a line of Hestia's.
            while !ring.push(b) {
                drain_polled(uart, ring);
            }
        }
        start_tx(uart, ring);
    });
    if queued.is_none() {
        let uart = uart();
        cooked(text, src).for_each(|b| uart.send(b));
    }
}

/// True if messages at `level` are printed.
pub fn enabled(level: LogLevel) -> bool {
    level as u8 <= LOG_LEVEL.load(Ordering::Relaxed)
}

/// The console lock. Re-entrant for the CPU that holds it, so a fault inside a print (or a
/// panic while printing) can still print its dump.
struct ConsoleGuard {
    reentered: bool,
    irq_were_on: bool,
}

impl ConsoleGuard {
    fn acquire() -> Self {
        // `acquire_while` gives up only when its condition turns false: this loop runs once.
        loop {
            if let Some(g) = Self::acquire_while(|| true) {
                break g;
            }
        }
    }

    /// Takes the lock, spinning while `keep_trying` holds; `None` if it stopped holding first.
    fn acquire_while(keep_trying: impl Fn() -> bool) -> Option<Self> {
        let irq_were_on = cpu::interrupts_enabled();
        cpu::disable_interrupts();
        let me = crate::arch::x86_64::percpu::current_cpu_index() + 1;
        if LOCK_OWNER.load(Ordering::Acquire) == me {
            return Some(Self {
                reentered: true,
                irq_were_on,
            });
        }
        let mut spins: u64 = 0;
        while LOCK_OWNER
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            if !keep_trying() {
                if irq_were_on {
                    cpu::enable_interrupts();
                }
                return None;
            }
            core::hint::spin_loop();
            spins += 1;
            // A holder that never releases (it died with interrupts off): take the console over
            // rather than lose this CPU's output. Garbled lines beat silence.
            if spins > 200_000_000 {
                LOCK_OWNER.store(me, Ordering::Release);
                break;
            }
        }
        Some(Self {
            reentered: false,
            irq_were_on,
        })
    }
}

impl Drop for ConsoleGuard {
    fn drop(&mut self) {
        if !self.reentered {
            LOCK_OWNER.store(0, Ordering::Release);
        }
        if self.irq_were_on {
            cpu::enable_interrupts();
        }
    }
}

struct SerialWriter;

impl Write for SerialWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        emit(s.as_bytes(), Source::Hypervisor);
        Ok(())
    }
}

fn level_tag(level: LogLevel) -> &'static str {
    match level {
        LogLevel::None => "",
        LogLevel::Error => "ERROR",
        LogLevel::Warning => "WARN ",
        LogLevel::Info => "INFO ",
        LogLevel::Debug => "DEBUG",
    }
}

/// Writes one log line; the caller holds the console lock.
fn log_line(level: LogLevel, args: fmt::Arguments<'_>) {
    let ns = tsc::uptime_ns();
    let _ = writeln!(
        SerialWriter,
        "[{:4}.{:06}] {} {}",
        ns / 1_000_000_000,
        (ns / 1000) % 1_000_000,
        level_tag(level),
        args
    );
}

/// Prints one log line at `level` (if enabled).
pub fn log(level: LogLevel, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let _g = ConsoleGuard::acquire();
    log_line(level, args);
}

/// A domain's log rate limiter (a field of the domain, used by the `gwarn!` family).
pub type GuestLogLimit = spin::Mutex<RateLimit>;

/// Prints one log line that domain `d` caused (`None`: no domain runs yet, nothing to limit),
/// if its rate limiter lets it through; the first line after some were dropped says how many.
pub fn guest_log<'a>(d: impl Into<Option<&'a Domain>>, level: LogLevel, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let d = d.into();
    let verdict = d.map(|d| cpu::without_interrupts(|| d.log_limit.lock().check(tsc::uptime_ns())));
    let _g = match (d, verdict) {
        (Some(_), Some(None)) => return,
        (Some(d), Some(Some(suppressed))) if suppressed > 0 => {
            let g = ConsoleGuard::acquire();
            log_line(
                level,
                format_args!("{}: {suppressed} messages suppressed", d.id),
            );
            g
        }
        _ => ConsoleGuard::acquire(),
    };
    log_line(level, args);
}

/// Prints raw text without a prefix (dumps, help screens), holding the console lock.
pub fn print_raw(args: fmt::Arguments<'_>) {
    let _g = ConsoleGuard::acquire();
    let _ = SerialWriter.write_fmt(args);
}

/// Sends a chunk of dom0's console output raw (as Xen does for the hardware domain), dropping
/// control characters other than tab, newline, carriage return and escape. Returns false, having
/// queued nothing, when the ring lacks room: the caller retries later.
pub fn guest_write(bytes: &[u8]) -> bool {
    let _g = ConsoleGuard::acquire();
    if !COM1_ENABLED.load(Ordering::Relaxed) {
        return true;
    }
    let need = cooked_len(bytes, Source::Guest);
    let queued = with_ring(|uart, ring| {
        // Keep a quarter of the ring for Hestia's own lines.
        let fits = ring.free() >= need.saturating_add(ring.capacity() / 4);
        if fits {
            cooked(bytes, Source::Guest).for_each(|b| {
                ring.push(b);
            });
        }
        start_tx(uart, ring);
        fits
    });
    match queued {
        Some(fits) => fits,
        None => {
            let uart = uart();
            cooked(bytes, Source::Guest).for_each(|b| uart.send(b));
            true
        }
    }
}

/// Runs `f` with the console lock held, for multi-line output that must not interleave.
pub fn with_lock<R>(f: impl FnOnce(&mut dyn Write) -> R) -> R {
    let _g = ConsoleGuard::acquire();
    f(&mut SerialWriter)
}

/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::console::log(hestia_core::cmdline::LogLevel::Error, format_args!($($t)*)) };
}
/// Logs at warning level.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::console::log(hestia_core::cmdline::LogLevel::Warning, format_args!($($t)*)) };
}
/// Logs at info level.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::console::log(hestia_core::cmdline::LogLevel::Info, format_args!($($t)*)) };
}
/// Logs at debug level.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::console::log(hestia_core::cmdline::LogLevel::Debug, format_args!($($t)*)) };
}
/// Prints without a prefix.
#[macro_export]
macro_rules! print {
    ($($t:tt)*) => { $crate::console::print_raw(format_args!($($t)*)) };
}
/// Logs at error level a message domain `$d` caused, rate-limited per domain.
#[macro_export]
macro_rules! gerror {
    ($d:expr, $($t:tt)*) => { $crate::console::guest_log($d, hestia_core::cmdline::LogLevel::Error, format_args!($($t)*)) };
}
/// Logs at warning level a message domain `$d` caused, rate-limited per domain.
#[macro_export]
macro_rules! gwarn {
    ($d:expr, $($t:tt)*) => { $crate::console::guest_log($d, hestia_core::cmdline::LogLevel::Warning, format_args!($($t)*)) };
}
/// Logs at info level a message domain `$d` caused, rate-limited per domain.
#[macro_export]
macro_rules! ginfo {
    ($d:expr, $($t:tt)*) => { $crate::console::guest_log($d, hestia_core::cmdline::LogLevel::Info, format_args!($($t)*)) };
}
/// Logs at debug level a message domain `$d` caused, rate-limited per domain.
#[macro_export]
macro_rules! gdebug {
    ($d:expr, $($t:tt)*) => { $crate::console::guest_log($d, hestia_core::cmdline::LogLevel::Debug, format_args!($($t)*)) };
}

/// Bridges the `log` crate (used by the `acpi` crate) into the console.
struct LogBridge;

impl log::Log for LogBridge {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        enabled(map_level(m.level()))
    }
    fn log(&self, r: &log::Record<'_>) {
        log(
            map_level(r.level()),
            format_args!("{}: {}", r.target(), r.args()),
        );
    }
    fn flush(&self) {}
}

fn map_level(l: log::Level) -> LogLevel {
    match l {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warning,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug | log::Level::Trace => LogLevel::Debug,
    }
}

static LOG_BRIDGE: LogBridge = LogBridge;

/// Installs the `log` crate bridge.
pub fn install_log_bridge() {
    if log::set_logger(&LOG_BRIDGE).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}
