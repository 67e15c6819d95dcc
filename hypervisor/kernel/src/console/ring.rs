//! Consoles of boot-time domUs, served by Hestia itself: the guest's PV console ring
//! (`struct xencons_interface`, `public/io/console.h`: 1 KiB of input, 2 KiB of output and
//! four free-running indices in one page) is read by Hestia, and each line the guest writes
//! is printed on the serial console prefixed `(dN) `, as Xen prints a domU's console output.
//! Serial input switched to the domU (Ctrl-A) goes into the ring's input half.
//!
//! Hestia does what `xenconsoled` does for a toolstack-built domU: it is the back end. The
//! page is the domU's own (its last), and Hestia holds a reference and a writable type on its
//! frame for the domain's lifetime (`pv::builder`), so it can never become a page table while
//! Hestia writes it. Everything in it is guest input: indices are read once, a producer that
//! claims more than the ring holds is treated as having written nothing new (the consumer
//! index is moved to it, as a back end resynchronising), and no byte is read twice.
//!
//! Output is serviced when the guest notifies its console port (`EVTCHNOP_send`) and from a
//! periodic poll, which also retries lines the serial transmit ring had no room for (nothing is
//! dropped: the guest's ring simply stays full until the line is out) and prints a partial
//! line that has waited a whole poll period (a shell prompt), its end following on the same
//! line without a second prefix. Locks: the console's own
//! mutex, a leaf, taken with interrupts off.

use core::sync::atomic::{AtomicU32, Ordering, fence};

use alloc::vec::Vec;

use hestia_core::ids::{Mfn, Port, VcpuId};

use crate::mm;
use crate::pv::domain::DomainRef;
use crate::pv::domain::{DomId, Domain};
use crate::timer::{self, TimerFn};

/// Bytes of the input ring.
const IN_SIZE: u32 = 1024;
/// Bytes of the output ring.
const OUT_SIZE: u32 = 2048;
/// Offsets of the indices in the page.
const IN_CONS: usize = 3072;
const IN_PROD: usize = 3076;
const OUT_CONS: usize = 3080;
const OUT_PROD: usize = 3084;
/// Longest line printed at once (longer ones are broken).
const LINE: usize = 160;

/// A line being assembled from the guest's output.
pub struct Line {
    buf: [u8; LINE],
    len: usize,
    /// The line is complete and waits for room in the serial transmit ring.
    ready: bool,
    /// No byte came since the last poll: a partial line (a shell prompt) is printed then.
    quiet: bool,
    /// The start of the current line, with its prefix, is out already.
    midline: bool,
}

impl Line {
    /// An empty line.
    pub const fn new() -> Self {
        Line {
            buf: [0; LINE],
            len: 0,
            ready: false,
            quiet: false,
            midline: false,
        }
    }
}

/// One domU's console ring and Hestia's end of it.
pub struct RingConsole {
    mfn: Mfn,
    port: Port,
    line: spin::Mutex<Line>,
}

impl RingConsole {
    /// The ring in frame `mfn`, notified through event channel `port` of its domain.
    pub fn new(mfn: Mfn, port: Port) -> Self {
        Self {
            mfn,
            port,
            line: spin::Mutex::new(Line::new()),
        }
    }

    /// The event channel the guest notifies.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The ring's frame.
    pub fn mfn(&self) -> Mfn {
        self.mfn
    }

    fn index(&self, off: usize) -> &AtomicU32 {
        let p = mm::phys_to_virt(self.mfn.addr()) + off as u64;
        // SAFETY: `off` is one of the four aligned index words inside the ring's frame, which
        // Hestia holds a reference and a writable type on while the domain lives and which the
        // direct map maps; the guest writes them concurrently, hence atomics.
        unsafe { &*(p as *const AtomicU32) }
    }

    fn byte(&self, off: u32) -> u8 {
        let p = mm::phys_to_virt(self.mfn.addr()) + u64::from(off);
        // SAFETY: `off` < 4096 (callers reduce ring positions modulo the ring sizes), in the
        // held frame as in `index`; a racing guest write only changes the byte read.
        unsafe { (p as *const u8).read_volatile() }
    }

    fn set_byte(&self, off: u32, b: u8) {
        let p = mm::phys_to_virt(self.mfn.addr()) + u64::from(off);
        // SAFETY: as in `byte`; the input half is the guest's to read, Hestia's to write.
        unsafe { (p as *mut u8).write_volatile(b) }
    }

    /// Prints what the guest wrote, line by line; true if anything was consumed (the guest
    /// is then notified, as a back end tells its front end about freed room).
    fn drain(&self, d: &Domain) -> bool {
        let id = d.id;
        let mut line = self.line.lock();
        if line.ready && !flush(id, &mut line, true) {
            return false;
        }
        let cons = self.index(OUT_CONS).load(Ordering::Relaxed);
        let prod = self.index(OUT_PROD).load(Ordering::Acquire);
        let avail = prod.wrapping_sub(cons);
        if avail == 0 {
            return false;
        }
        if avail > OUT_SIZE {
            // A producer index no ring can hold: skip to it.
            crate::gwarn!(d, "{id}: console ring producer out of range, skipped");
            self.index(OUT_CONS).store(prod, Ordering::Release);
            return true;
        }
        let mut done = 0;
        while done < avail {
            let b = self.byte(1024 + cons.wrapping_add(done) % OUT_SIZE);
            done += 1;
            if !feed(id, &mut line, b) {
                break;
            }
        }
        fence(Ordering::Release);
        self.index(OUT_CONS)
            .store(cons.wrapping_add(done), Ordering::Release);
        true
    }

    /// Prints a partial line that got no byte since the previous poll (a prompt waiting for
    /// input); its end follows on the same line.
    fn flush_quiet(&self, id: DomId) {
        let Some(mut line) = self.line.try_lock() else {
            return;
        };
        if line.quiet && line.len > 0 && !line.ready {
            flush(id, &mut line, false);
        }
        line.quiet = true;
    }

    /// Puts `bytes` into the input half; returns how many fit.
    fn push(&self, bytes: &[u8]) -> usize {
        let cons = self.index(IN_CONS).load(Ordering::Acquire);
        let prod = self.index(IN_PROD).load(Ordering::Relaxed);
        let used = prod.wrapping_sub(cons);
        if used > IN_SIZE {
            // The guest's consumer index is out of range: nothing can be placed safely.
            return 0;
        }
        let n = bytes.len().min((IN_SIZE - used) as usize);
        for (i, &b) in bytes[..n].iter().enumerate() {
            self.set_byte(prod.wrapping_add(i as u32) % IN_SIZE, b);
        }
        fence(Ordering::Release);
        self.index(IN_PROD)
            .store(prod.wrapping_add(n as u32), Ordering::Release);
        n
    }
}

/// Adds byte `b` of domain `id`'s output to `line`, sending the line when it is complete;
/// false if it is complete but the transmit ring has no room yet (it is sent first next time).
fn feed(id: DomId, line: &mut Line, b: u8) -> bool {
    line.quiet = false;
    if b != b'\n' && b != b'\r' {
        let n = line.len;
        line.buf[n] = b;
        line.len += 1;
    }
    if b == b'\n' || line.len == LINE {
        line.ready = true;
        return flush(id, line, true);
    }
    true
}

/// Sends `line` with its `(dN) ` prefix (unless its start is out already) and, when it is
/// complete, a newline; false if the transmit ring has no room yet.
fn flush(id: DomId, line: &mut Line, complete: bool) -> bool {
    let mut out = [0u8; LINE + 12];
    let mut w = Cursor {
        buf: &mut out,
        len: 0,
    };
    if !line.midline {
        let _ = core::fmt::Write::write_fmt(&mut w, format_args!("({id}) "));
    }
    let n = w.len;
    out[n..n + line.len].copy_from_slice(&line.buf[..line.len]);
    let mut end = n + line.len;
    if complete {
        out[end] = b'\n';
        end += 1;
    }
    if !crate::console::guest_write(&out[..end]) {
        return false;
    }
    (line.len, line.ready, line.midline) = (0, false, !complete);
    true
}

/// A `fmt::Write` into a byte buffer (the prefix only: it always fits).
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Serves `d`'s console ring, if Hestia serves it: prints its new output and notifies it.
pub fn service(d: &Domain) {
    let Some(c) = d.console.as_ref() else {
        return;
    };
    if c.drain(d) {
        notify(d, c.port);
    }
}

/// `CONSOLEIO_write` of a domU: its bytes are printed like its ring's, line by line with the
/// `(dN) ` prefix. Returns how many were taken (fewer when the serial line is busy: the caller
/// retries the rest).
pub fn console_io_write(d: &Domain, bytes: &[u8]) -> usize {
    // A domain whose ring Hestia does not serve (the toolstack's xenconsoled does) still has
    // its `console_io` lines printed, as Xen's debug builds print them.
    let mut line = match d.console.as_ref() {
        Some(c) => c.line.lock(),
        None => d.console_line.lock(),
    };
    if line.ready && !flush(d.id, &mut line, true) {
        return 0;
    }
    for (i, &b) in bytes.iter().enumerate() {
        if !feed(d.id, &mut line, b) {
            return i + 1;
        }
    }
    bytes.len()
}

/// Serial input for `d`'s console ring; returns how many bytes fit (the guest is notified).
pub fn input(d: &Domain, bytes: &[u8]) -> usize {
    let Some(c) = d.console.as_ref() else {
        return 0;
    };
    let n = c.push(bytes);
    if n > 0 {
        notify(d, c.port);
    }
    n
}

fn notify(d: &Domain, port: Port) {
    let mut shared = d.shared();
    let ev = d.evtchn.lock();
    let target = ev
        .set_pending(&mut shared, port)
        .then(|| ev.port(port).map(|(_, v)| v))
        .flatten();
    drop(ev);
    if let Some(v) = target {
        crate::pv::events::kick(d, VcpuId::unvalidated(v));
    }
}

/// The domains whose console rings Hestia serves, in the order serial input cycles through them.
static CONSOLES: spin::Mutex<Vec<DomainRef>> = spin::Mutex::new(Vec::new());
/// How often the rings are polled for output a notification did not announce (or that waited
/// for room on the serial line).
const POLL_NS: u64 = 20_000_000;

/// Serves `d`'s console ring from now on (from its creation until its destruction).
pub fn register(d: DomainRef) {
    let first = {
        let mut c = CONSOLES.lock();
        c.push(d);
        c.len() == 1
    };
    if first {
        timer::add(
            crate::arch::x86_64::tsc::uptime_ns().saturating_add(POLL_NS),
            TimerFn::Plain(poll),
        );
    }
}

/// Stops serving `d`'s ring (it is being destroyed).
pub fn unregister(d: &Domain) {
    CONSOLES.lock().retain(|c| !core::ptr::eq(&**c, d));
}

/// The `k`-th served domain, if any (safe in the serial interrupt: it only tries the lock).
pub fn nth(k: usize) -> Option<DomainRef> {
    CONSOLES.try_lock()?.get(k).cloned()
}

/// How many rings Hestia serves.
pub fn count() -> usize {
    CONSOLES.try_lock().map_or(0, |c| c.len())
}

fn poll(now: u64) -> Option<u64> {
    // From the timer interrupt: never wait for the list (its holder may be this CPU's
    // interrupted code); the next poll comes soon.
    if let Some(all) = CONSOLES.try_lock() {
        for d in all.iter() {
            service(d);
            if let Some(c) = d.console.as_ref() {
                c.flush_quiet(d.id);
            }
        }
    }
    Some(now.saturating_add(POLL_NS))
}
