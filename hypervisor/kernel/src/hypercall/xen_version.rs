//! `xen_version` (hypercall 17): Hestia answers as a Xen 4.17-compatible hypervisor.
//!
//! `XENVER_get_features` reports Xen 4.17's PV feature set (see `PV_FEATURES` for what each bit
//! means here), never the bits that would send a PV guest down auto-translated or HVM paths
//! (0, 2, 3, 8-10).

use xen_abi::errno::Errno;
use xen_abi::version::{self, FeatureInfo, cmd};
use xen_abi::xen::HYPERVISOR_VIRT_START;

use crate::mm::guest::{self, GuestRange};
use crate::policy::{self, Action};
use crate::pv::domain::Domain;

const MAJOR: u64 = 4;
const MINOR: u64 = 17;
/// The version Hestia reports (`major << 16 | minor`), also in CPUID leaf 0x40000001.
pub const XEN_VERSION: u32 = (MAJOR << 16 | MINOR) as u32;

fn put_str(addr: u64, size: usize, s: &[u8]) -> Result<u64, Errno> {
    let mut buf = [0u8; version::CAPABILITIES_LEN];
    let n = s.len().min(size - 1);
    buf[..n].copy_from_slice(&s[..n]);
    GuestRange::new(addr, size)?.write(&buf[..size])?;
    Ok(0)
}

/// `XENFEAT_*` bits Hestia reports to every 64-bit PV guest, as Xen 4.17 does (it reports
/// `0x228e0` to a PV dom0): mmu_pt_update_preserve_ad (5, implemented), highmem_assist (6,
/// 32-bit only, a no-op), gnttab_map_avail_bits (7: grant mapping semantics; grant_table_op is
/// -ENOSYS until M3, so nothing can contradict it, and Linux 6.1.1xx refuses to boot without
/// it), memory_op_vnode_supported (13: the NUMA flags of reservations are accepted),
/// direct_mapped (17: a PV guest's MFNs are machine frames).
const PV_FEATURES: u32 = (1 << 5) | (1 << 6) | (1 << 7) | (1 << 13) | (1 << 17);
/// `XENFEAT_dom0`: for the hardware domain.
const XENFEAT_DOM0: u32 = 11;

/// Feature submap 0 for `d`.
fn features(d: &Domain) -> u32 {
    PV_FEATURES | if d.privileged { 1 << XENFEAT_DOM0 } else { 0 }
}

pub(super) fn do_xen_version(d: &Domain, a: [u64; 5]) -> Result<u64, Errno> {
    let arg = a[1];
    match a[0] as u32 {
        cmd::VERSION => Ok(u64::from(XEN_VERSION)),
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
            fi.submap = match fi.submap_idx {
                0 => features(d),
                _ => return Err(Errno::EINVAL),
            };
            guest::write_obj(arg, &fi).map(|()| 0)
        }
        cmd::PAGESIZE => Ok(4096),
        cmd::COMMANDLINE => {
            policy::check(d, Action::ReadCommandLine)?;
            put_str(
                arg,
                version::COMMANDLINE_LEN,
                crate::hv_cmdline().as_bytes(),
            )
        }
        _ => Err(Errno::ENOSYS),
    }
}
