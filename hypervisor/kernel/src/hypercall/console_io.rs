//! `console_io` (hypercall 18): dom0's console is the serial line.
//!
//! dom0 reads and writes the serial line with it. A domU may only write, and its lines are
//! printed prefixed `(dN) ` through its console (`crate::console::ring`), as a debug build of
//! Xen does (`xsm_console_io` in `xen/include/xsm/dummy.h` allows domU writes only with
//! `CONFIG_VERBOSE_DEBUG`; a release build refuses them with -EPERM): a deliberate difference,
//! so that boot-time domUs and test kernels can report without a console driver.
//!
//! `CONSOLEIO_write` (Xen's `guest_console_write`, `xen/drivers/char/console.c`) copies `count`
//! bytes in chunks of [`CHUNK`] and queues each on the serial transmit ring (raw: dom0 output
//! carries no prefix, as in Xen), so the call costs copying, not the wire's 11.5 KB/s. Any count
//! is accepted. Between chunks, a waiting interrupt or an unmasked event for the vCPU ends the
//! call with a continuation for the rest (`count` and `buffer` advanced), and so does a ring
//! without room for the next chunk: the guest is rewound to its SYSCALL, takes its interrupts
//! and upcalls, and re-issues the call, so it waits in bounded steps instead of holding the CPU,
//! and none of its bytes is dropped. A fault in the buffer ends the call with -EFAULT after the
//! bytes before it were queued, as in Xen. `CONSOLEIO_read` returns the bytes typed while serial
//! input is switched to dom0 (each arrival raises VIRQ_CONSOLE).

use xen_abi::errno::Errno;
use xen_abi::xen::consoleio;

use super::Caller;
use super::continuation::{self, Stop};
use crate::mm::guest::GuestRange;
use crate::pv::domain::Domain;
use hestia_core::policy::{self, Action};

/// Bytes copied and queued at a time (Xen copies 127 through a 128-byte buffer).
const CHUNK: usize = 128;
/// Most bytes one `CONSOLEIO_read` returns.
const READ_MAX: usize = 256;

pub(super) fn do_console_io(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Stop> {
    let d = c.domain();
    let (cmd, count, buf) = (a[0] as u32, a[1] as u32, a[2]);
    match cmd {
        consoleio::WRITE => {
            policy::check(d.rights, Action::ConsoleWrite)?;
            guest_console_write(d, buf, u64::from(count))
        }
        consoleio::READ => {
            policy::check(d.rights, Action::ConsoleIo)?;
            // Check the buffer before taking bytes off the input ring, so none are lost to a
            // bad pointer's range check.
            let n = (count as usize).min(READ_MAX);
            let range = GuestRange::new(buf, n)?;
            let mut chunk = [0u8; READ_MAX];
            let out = chunk.get_mut(..n).ok_or(Errno::EINVAL)?;
            let got = crate::console::keys::read_dom0_input(out);
            range.write(out.get(..got).ok_or(Errno::EINVAL)?)?;
            Ok(got as u64)
        }
        _ => Err(Errno::ENOSYS.into()),
    }
}

/// Queues `count` bytes at `buf`; see the module documentation.
fn guest_console_write(d: &Domain, buf: u64, count: u64) -> Result<u64, Stop> {
    let mut chunk = [0u8; CHUNK];
    let mut done = 0;
    while done < count {
        let at = buf.checked_add(done).ok_or(Errno::EFAULT)?;
        let rest = [u64::from(consoleio::WRITE), count - done, at, 0, 0];
        if done > 0 && crate::pv::events::preempt_now(d) {
            return continuation::create(rest);
        }
        let n = (count - done).min(CHUNK as u64) as usize;
        let bytes = chunk.get_mut(..n).ok_or(Errno::EINVAL)?;
        GuestRange::new(at, n)?.read(bytes)?;
        let taken = if policy::allows(d.rights, Action::ConsoleIo) {
            if crate::console::guest_write(bytes) {
                n
            } else {
                0
            }
        } else {
            crate::console::ring::console_io_write(d, bytes)
        };
        done += taken as u64;
        if taken < n {
            // The ring is full: retry the rest once the transmit interrupt has made room.
            let rest = [
                u64::from(consoleio::WRITE),
                count - done,
                at + taken as u64,
                0,
                0,
            ];
            return continuation::create(rest);
        }
    }
    Ok(0)
}
