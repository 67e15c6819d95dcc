//! The console history `xl dmesg` reads (`XEN_SYSCTL_readconsole`): the last
//! [`SIZE`] bytes of everything Hestia printed (its own lines and the `(dN)` lines of guests
//! without a console of their own), kept in a `hestia_core::conring::ConRing`.
//!
//! Lock: the history's mutex is taken with interrupts off, under the console lock when
//! printing; a reader takes it alone and never prints while holding it.

use hestia_core::conring::{ConRing, Read};

use crate::arch::x86_64::cpu;

/// Bytes kept (Xen's default `conring_size`).
pub const SIZE: usize = 16 * 1024;

static HISTORY: spin::Mutex<ConRing<SIZE>> = spin::Mutex::new(ConRing::new());

/// Appends printed bytes.
pub(super) fn push(bytes: &[u8]) {
    cpu::without_interrupts(|| HISTORY.lock().push(bytes));
}

/// Copies up to `max` bytes of the history out through `out` (offset into the caller's
/// buffer, bytes), from the oldest byte held or, when `incremental`, from `index` if that is
/// newer; with `clear`, forgets what was read. The bytes go out in chunks through a bounce
/// buffer, never with the history locked: `out` may fault or print.
pub fn read<E>(
    incremental: bool,
    index: u32,
    max: u32,
    clear: bool,
    mut out: impl FnMut(u32, &[u8]) -> Result<(), E>,
) -> Result<Read, E> {
    let mut bounce = [0u8; 256];
    let mut got = Read { count: 0, index };
    let mut first = true;
    loop {
        let want = (max - got.count).min(bounce.len() as u32);
        let (n, next) = cpu::without_interrupts(|| {
            let r = HISTORY
                .lock()
                .read::<()>(incremental || !first, got.index, want, |off, b| {
                    bounce[off as usize..off as usize + b.len()].copy_from_slice(b);
                    Ok(())
                });
            r.map_or((0, got.index), |r| (r.count, r.index))
        });
        first = false;
        if n == 0 {
            if got.count == 0 {
                got.index = next;
            }
            break;
        }
        out(got.count, &bounce[..n as usize])?;
        got.count += n;
        got.index = next;
        if got.count == max {
            break;
        }
    }
    if clear {
        cpu::without_interrupts(|| HISTORY.lock().clear_to(got.index));
    }
    Ok(got)
}
