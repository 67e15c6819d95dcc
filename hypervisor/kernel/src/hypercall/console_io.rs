//! `console_io` (hypercall 18): dom0's console is the serial line.
//!
//! `CONSOLEIO_write` copies `count` bytes from the guest in bounded chunks and prints them raw
//! (dom0 output carries no prefix, as in Xen). `CONSOLEIO_read` returns the bytes typed while
//! serial input is switched to dom0 (each arrival raises VIRQ_CONSOLE).

use xen_abi::errno::Errno;
use xen_abi::xen::consoleio;

use crate::mm::guest::GuestRange;
use crate::pv::domain::Domain;

/// Longest single write accepted; longer ones are truncated, as the return value reports.
const MAX_WRITE: u64 = 64 * 1024;
const CHUNK: usize = 256;

pub(super) fn do_console_io(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    let (cmd, count, buf) = (a[0] as u32, a[1] as u32, a[2]);
    match cmd {
        consoleio::WRITE => {
            let count = u64::from(count).min(MAX_WRITE);
            let mut done = 0;
            let mut chunk = [0u8; CHUNK];
            while done < count {
                let n = (count - done).min(CHUNK as u64) as usize;
                GuestRange::new(buf.checked_add(done).ok_or(Errno::EFAULT)?, n)?
                    .read(&mut chunk[..n])?;
                crate::console::guest_write(d.id.0, &chunk[..n]);
                done += n as u64;
            }
            Ok(0)
        }
        consoleio::READ => {
            if !d.privileged {
                return Err(Errno::EPERM);
            }
            // Check the buffer before taking bytes off the input ring, so none are lost to a
            // bad pointer's range check.
            let range = GuestRange::new(buf, (count as usize).min(CHUNK))?;
            let mut chunk = [0u8; CHUNK];
            let n =
                crate::console::keys::read_dom0_input(&mut chunk[..(count as usize).min(CHUNK)]);
            range.write(&chunk[..n])?;
            Ok(n as u64)
        }
        _ => Err(Errno::ENOSYS),
    }
}
