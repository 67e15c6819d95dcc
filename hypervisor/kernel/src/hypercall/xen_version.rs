//! `xen_version` (hypercall 17): Hestia answers as a Xen 4.17-compatible hypervisor.
//!
//! Only features that really work are advertised in `XENVER_get_features` (none yet).

use xen_abi::errno::Errno;
use xen_abi::version::{self, FeatureInfo, cmd};
use xen_abi::xen::HYPERVISOR_VIRT_START;

use crate::mm::guest::{self, GuestRange};
use crate::pv::domain::Domain;

const MAJOR: u64 = 4;
const MINOR: u64 = 17;

fn put_str(addr: u64, size: usize, s: &[u8]) -> Result<u64, Errno> {
    let mut buf = [0u8; version::CAPABILITIES_LEN];
    let n = s.len().min(size - 1);
    buf[..n].copy_from_slice(&s[..n]);
    GuestRange::new(addr, size)?.write(&buf[..size])?;
    Ok(0)
}

pub(super) fn do_xen_version(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    let arg = a[1];
    match a[0] as u32 {
        cmd::VERSION => Ok(MAJOR << 16 | MINOR),
        cmd::EXTRAVERSION => put_str(arg, version::EXTRAVERSION_LEN, b".0-hestia"),
        cmd::CAPABILITIES => put_str(arg, version::CAPABILITIES_LEN, b"xen-3.0-x86_64"),
        cmd::CHANGESET => put_str(
            arg,
            version::CHANGESET_LEN,
            env!("CARGO_PKG_VERSION").as_bytes(),
        ),
        cmd::PLATFORM_PARAMETERS => guest::write_obj(arg, &HYPERVISOR_VIRT_START).map(|()| 0),
        cmd::GET_FEATURES => {
            let mut fi: FeatureInfo = guest::read_obj(arg)?;
            fi.submap = 0;
            guest::write_obj(arg, &fi).map(|()| 0)
        }
        cmd::PAGESIZE => Ok(4096),
        cmd::COMMANDLINE => {
            if !d.privileged {
                return Err(Errno::EPERM);
            }
            put_str(
                arg,
                version::COMMANDLINE_LEN,
                crate::hv_cmdline().as_bytes(),
            )
        }
        _ => Err(Errno::ENOSYS),
    }
}
