//! `physdev_op` (hypercall 33). So far only `PHYSDEVOP_set_iopl` (Linux asks for IOPL 1 at
//! boot so its early CLI/STI are emulated); the device and interrupt operations dom0 needs
//! (map_pirq, setup_gsi, eoi, ...) arrive with M2. `shared/xen-abi.md` 6.9.

use xen_abi::errno::Errno;
use xen_abi::physdev::{SetIopl, cmd};

use crate::mm::guest;
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
        _ => Err(Errno::ENOSYS),
    }
}
