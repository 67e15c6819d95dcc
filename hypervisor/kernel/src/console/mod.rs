//! The console: leveled, timestamped log lines on the serial port, and serial input.
//!
//! Every line is `[seconds.micros] LEVEL message`, timestamped from the TSC. Output from all
//! CPUs goes through one lock; a CPU that faults while holding it (or while printing a panic)
//! takes the lock over instead of deadlocking, so a fault dump always gets out. Input bytes are
//! handed to the debug keys ([`keys`]), or to dom0 once it exists (Ctrl-A three times switches).

pub mod keys;

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, Ordering};

use hestia_core::cmdline::{LogLevel, Options};

use crate::arch::x86_64::{cpu, tsc};
use crate::drivers::uart16550::Uart;

/// I/O base of the console UART. The UART itself is stateless, so no lock guards it: the
/// console lock serialises output and only the BSP reads input.
static COM1_PORT: AtomicU16 = AtomicU16::new(0x3f8);
static COM1_ENABLED: AtomicBool = AtomicBool::new(true);
static LOG_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
/// CPU index + 1 of the lock holder, 0 when free.
static LOCK_OWNER: AtomicU32 = AtomicU32::new(0);

/// Initialises COM1 with the defaults (115200 8N1 at 0x3F8) before anything else runs.
pub fn early_init() {
    uart().init(115_200);
}

fn uart() -> Uart {
    Uart::new(uart_port())
}

/// I/O base of the console UART (kept from dom0).
pub fn uart_port() -> u16 {
    COM1_PORT.load(Ordering::Relaxed)
}

/// Applies the `com1=`, `console=` and `loglvl=` options.
pub fn configure(opts: &Options) {
    LOG_LEVEL.store(opts.loglvl as u8, Ordering::Relaxed);
    COM1_ENABLED.store(opts.console.com1, Ordering::Relaxed);
    COM1_PORT.store(opts.com1.port, Ordering::Relaxed);
    uart().init(opts.com1.baud);
}

/// Enables the serial receive interrupt (after the IOAPIC routes it).
pub fn enable_input() {
    uart().enable_rx_interrupt();
}

/// Drains received bytes into the input handler; called from the serial interrupt.
pub fn poll_input(_gsi: u32) {
    for _ in 0..64 {
        let Some(b) = uart().try_recv() else { break };
        keys::input(b);
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
        let irq_were_on = cpu::interrupts_enabled();
        cpu::disable_interrupts();
        let me = cpu::current_cpu_index() + 1;
        if LOCK_OWNER.load(Ordering::Acquire) == me {
            return Self {
                reentered: true,
                irq_were_on,
            };
        }
        let mut spins: u64 = 0;
        while LOCK_OWNER
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
            spins += 1;
            // A holder that never releases (it died with interrupts off): take the console over
            // rather than lose this CPU's output. Garbled lines beat silence.
            if spins > 200_000_000 {
                LOCK_OWNER.store(me, Ordering::Release);
                break;
            }
        }
        Self {
            reentered: false,
            irq_were_on,
        }
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
        if !COM1_ENABLED.load(Ordering::Relaxed) {
            return Ok(());
        }
        let uart = uart();
        for b in s.bytes() {
            if b == b'\n' {
                uart.send(b'\r');
            }
            uart.send(b);
        }
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

/// Prints one log line at `level` (if enabled).
pub fn log(level: LogLevel, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let _g = ConsoleGuard::acquire();
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

/// Prints raw text without a prefix (dumps, help screens), holding the console lock.
pub fn print_raw(args: fmt::Arguments<'_>) {
    let _g = ConsoleGuard::acquire();
    let _ = SerialWriter.write_fmt(args);
}

/// Prints a guest's console output raw (as Xen does for dom0), dropping control characters
/// other than tab, newline, carriage return and escape.
pub fn guest_write(_domid: u16, bytes: &[u8]) {
    let _g = ConsoleGuard::acquire();
    if !COM1_ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let uart = uart();
    for &b in bytes {
        match b {
            b'\n' => {
                uart.send(b'\r');
                uart.send(b'\n');
            }
            b'\t' | b'\r' | 0x1b | 0x20.. => uart.send(b),
            _ => {}
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
