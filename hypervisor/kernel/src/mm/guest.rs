//! Guest virtual memory as hostile input: [`GuestRange`] is the only way hypercalls read or
//! write guest memory.
//!
//! Construction checks the range is canonical, lies entirely in guest space (below the
//! non-canonical gap, or above the hypervisor hole `0xFFFF800000000000..0xFFFF880000000000`) and
//! does not wrap. Copies run through `uaccess`, so a pointer to unmapped or read-only guest
//! memory is `-EFAULT`, never a hypervisor fault.

use xen_abi::errno::Errno;
use xen_abi::xen::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::arch::x86_64::uaccess;

const LOWER_HALF_END: u64 = 1 << 47;

/// A checked range of guest virtual memory.
#[derive(Clone, Copy, Debug)]
pub struct GuestRange {
    addr: u64,
    len: usize,
}

/// True if `[addr, addr + len)` is guest space (see the module documentation).
pub fn is_guest_range(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    (end <= LOWER_HALF_END)
        || (addr >= HYPERVISOR_VIRT_END)
        || (len == 0 && addr < HYPERVISOR_VIRT_START)
}

impl GuestRange {
    /// Checks a guest range.
    pub fn new(addr: u64, len: usize) -> Result<Self, Errno> {
        if is_guest_range(addr, len as u64) {
            Ok(Self { addr, len })
        } else {
            Err(Errno::EFAULT)
        }
    }

    /// Copies the whole range into `buf` (`buf.len()` must equal the range's length).
    pub fn read(&self, buf: &mut [u8]) -> Result<(), Errno> {
        debug_assert_eq!(buf.len(), self.len);
        let n = buf.len().min(self.len);
        // SAFETY: `buf` is Hestia memory of `n` bytes; the source was checked to be guest space.
        match unsafe { uaccess::copy(buf.as_mut_ptr(), self.addr as *const u8, n) } {
            0 => Ok(()),
            _ => Err(Errno::EFAULT),
        }
    }

    /// Copies `data` into the start of the range.
    pub fn write(&self, data: &[u8]) -> Result<(), Errno> {
        if data.len() > self.len {
            return Err(Errno::EFAULT);
        }
        // SAFETY: `data` is Hestia memory; the destination was checked to be guest space.
        match unsafe { uaccess::copy(self.addr as *mut u8, data.as_ptr(), data.len()) } {
            0 => Ok(()),
            _ => Err(Errno::EFAULT),
        }
    }
}

/// Reads one ABI structure from guest address `addr` (copied straight into the result, which
/// is not cleared first: a fault returns no value at all).
pub fn read_obj<T: FromBytes>(addr: u64) -> Result<T, Errno> {
    let range = GuestRange::new(addr, size_of::<T>())?;
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: `v` is Hestia memory of `size_of::<T>()` bytes; the source was checked to be
    // guest space.
    match unsafe { uaccess::copy(v.as_mut_ptr().cast(), range.addr as *const u8, range.len) } {
        // SAFETY: the copy wrote every byte of `v`, and any bytes are a `T` (`FromBytes`).
        0 => Ok(unsafe { v.assume_init() }),
        _ => Err(Errno::EFAULT),
    }
}

/// Writes one ABI structure to guest address `addr`.
pub fn write_obj<T: IntoBytes + Immutable>(addr: u64, v: &T) -> Result<(), Errno> {
    GuestRange::new(addr, size_of::<T>())?.write(v.as_bytes())
}
