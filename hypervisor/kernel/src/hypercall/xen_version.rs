//! `xen_version` (hypercall 17): Hestia answers as a Xen 4.17-compatible hypervisor.
//!
//! Every sub-op answers as `do_xen_version` of Xen 4.17 (`xen/common/kernel.c`) does under
//! XSM's default policy (`xsm_xen_version` in `xen/include/xsm/dummy.h`): the version,
//! platform parameters and features for anyone; the strings, `compile_info`, the page size and
//! the domain handle for anyone; `commandline` and `build_id` for the privileged domain only
//! (a domU reads the string `<denied>` and gets -EPERM for the build id). Every string goes to
//! the guest as its whole ABI array, zero-padded, so no byte of the guest's buffer inside the
//! array keeps a stale value and no byte of Hestia's stack leaks out.
//!
//! `XENVER_get_features` reports Xen 4.17's PV feature set (see `PV_FEATURES` for what each bit
//! means here), never the bits that would send a PV guest down auto-translated or HVM paths
//! (0, 2, 3, 8-10).

use xen_abi::errno::Errno;
use xen_abi::version::{self, CompileInfo, FeatureInfo, XEN_VERSION, cmd};
use xen_abi::xen::HYPERVISOR_VIRT_START;

use super::Caller;
use crate::mm::guest::{self, GuestRange};
use crate::pv::domain::Domain;
use hestia_core::policy::{self, Action};

/// What a domain without the right reads instead of a privileged string (Xen's `xen_deny()`).
const DENIED: &[u8] = b"<denied>\0";

/// Copies `s` into `field` as a C string: truncated to leave its NUL, the rest zeros.
fn fill(field: &mut [u8], s: &[u8]) {
    field.fill(0);
    let n = s.len().min(field.len().saturating_sub(1));
    if let (Some(dst), Some(src)) = (field.get_mut(..n), s.get(..n)) {
        dst.copy_from_slice(src);
    }
}

/// Writes `s` to the guest as a zero-padded string array of `SIZE` bytes.
fn put_str<const SIZE: usize>(addr: u64, s: &[u8]) -> Result<u64, Errno> {
    let mut buf = [0u8; SIZE];
    fill(&mut buf, s);
    GuestRange::new(addr, SIZE)?.write(&buf)?;
    Ok(0)
}

/// `XENVER_compile_info`. Hestia's builds are reproducible, so there is no build host, domain
/// or date to report: those fields are empty, the compiler is rustc's version line, and the
/// builder is the project (`hestia`), the same for every build.
fn compile_info() -> CompileInfo {
    let mut info = CompileInfo {
        compiler: [0; 64],
        compile_by: [0; 16],
        compile_domain: [0; 32],
        compile_date: [0; 32],
    };
    fill(&mut info.compiler, env!("HESTIA_RUSTC_VERSION").as_bytes());
    fill(&mut info.compile_by, b"hestia");
    info
}

unsafe extern "C" {
    static __note_gnu_build_id_start: u8;
    static __note_gnu_build_id_end: u8;
}

/// The linker's build id of this image (`--build-id=sha1`), if the note is there.
fn build_id() -> Option<&'static [u8]> {
    let start = &raw const __note_gnu_build_id_start;
    let len = (&raw const __note_gnu_build_id_end as usize).checked_sub(start as usize)?;
    // SAFETY: the linker script brackets the `.note.gnu.build-id` section with these two
    // symbols inside the read-only image, which stays mapped and unchanged for Hestia's life.
    let area = unsafe { core::slice::from_raw_parts(start, len) };
    hestia_core::elf::gnu_build_id(area)
}

/// `XENVER_build_id`: a null handle asks for the size; otherwise `struct xen_build_id` says
/// how much room follows its length word, and the id goes there.
fn put_build_id(d: &Domain, arg: u64) -> Result<u64, Errno> {
    policy::check(d.rights, Action::XenVersionPriv)?;
    let room = if arg == 0 {
        None
    } else {
        match guest::read_obj::<u32>(arg)? {
            0 => return Err(Errno::EINVAL),
            len => Some(len),
        }
    };
    let id = build_id().ok_or(Errno::ENODATA)?;
    let size = id.len() as u64;
    match room {
        None => Ok(size),
        Some(len) if u64::from(len) < size => Err(Errno::ENOBUFS),
        Some(_) => {
            let buf = arg
                .checked_add(version::BUILD_ID_BUF_OFFSET)
                .ok_or(Errno::EFAULT)?;
            GuestRange::new(buf, id.len())?.write(id)?;
            Ok(size)
        }
    }
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
    PV_FEATURES
        | if d.rights.hardware {
            1 << XENFEAT_DOM0
        } else {
            0
        }
}

pub(super) fn do_xen_version(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let d = c.domain();
    let arg = a[1];
    match a[0] as u32 {
        cmd::VERSION => Ok(u64::from(XEN_VERSION)),
        cmd::EXTRAVERSION => put_str::<{ version::EXTRAVERSION_LEN }>(arg, b".0-hestia"),
        cmd::COMPILE_INFO => guest::write_obj(arg, &compile_info()).map(|()| 0),
        cmd::CAPABILITIES => put_str::<{ version::CAPABILITIES_LEN }>(arg, b"xen-3.0-x86_64"),
        cmd::CHANGESET => {
            put_str::<{ version::CHANGESET_LEN }>(arg, env!("CARGO_PKG_VERSION").as_bytes())
        }
        cmd::PLATFORM_PARAMETERS => guest::write_obj(arg, &HYPERVISOR_VIRT_START).map(|()| 0),
        cmd::GET_FEATURES => {
            let mut fi: FeatureInfo = guest::read_obj(arg)?;
            fi.submap = match fi.submap_idx {
                0 => features(d),
                _ => return Err(Errno::EINVAL),
            };
            guest::write_obj(arg, &fi).map(|()| 0)
        }
        // The sub-op takes no argument, and Xen refuses one.
        cmd::PAGESIZE if arg != 0 => Err(Errno::EINVAL),
        cmd::PAGESIZE => Ok(4096),
        // No toolstack has given any domain a UUID yet: dom0 and boot-time domUs have the
        // all-zero handle, as dom0 on Xen.
        cmd::GUEST_HANDLE => {
            GuestRange::new(arg, version::DOMAIN_HANDLE_LEN)?
                .write(&[0; version::DOMAIN_HANDLE_LEN])?;
            Ok(0)
        }
        // Denied, Xen copies its deny string and nothing more, and succeeds.
        cmd::COMMANDLINE if !policy::allows(d.rights, Action::XenVersionPriv) => {
            GuestRange::new(arg, DENIED.len())?.write(DENIED)?;
            Ok(0)
        }
        cmd::COMMANDLINE => {
            put_str::<{ version::COMMANDLINE_LEN }>(arg, crate::bootinfo::hv_cmdline().as_bytes())
        }
        cmd::BUILD_ID => put_build_id(d, arg),
        _ => Err(Errno::ENOSYS),
    }
}
