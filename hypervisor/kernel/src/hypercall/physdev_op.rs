//! `physdev_op` (hypercall 33). So far the I/O privilege operations: `PHYSDEVOP_set_iopl` (Linux
//! asks for IOPL 1 at boot, so its kernel may use ports) and `PHYSDEVOP_set_iobitmap` (for its
//! `ioperm`); the device and interrupt operations dom0 needs (map_pirq, setup_gsi, eoi, ...)
//! arrive with M2. `shared/xen-abi.md` 6.9.

use xen_abi::errno::Errno;
use xen_abi::physdev::{SetIobitmap, SetIopl, cmd};

use crate::mm::guest::{self, is_guest_range};
use crate::pv::domain::Domain;

pub(super) fn do_physdev_op(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    match a[0] as u32 {
        cmd::SET_IOPL => {
            let arg: SetIopl = guest::read_obj(a[1])?;
            if arg.iopl > 3 {
                return Err(Errno::EINVAL);
            }
            d.vcpus[0].lock().iopl = arg.iopl as u8;
            Ok(0)
        }
        cmd::SET_IOBITMAP => {
            let arg: SetIobitmap = guest::read_obj(a[1])?;
            // The bitmap is read at each access; its whole 8 KiB must be guest addresses.
            if arg.nr_ports > 65536 || !is_guest_range(arg.bitmap, 65536 / 8) {
                return Err(Errno::EINVAL);
            }
            d.vcpus[0].lock().iobitmap = (arg.bitmap, arg.nr_ports);
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
