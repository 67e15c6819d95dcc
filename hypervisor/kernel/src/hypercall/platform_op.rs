//! `platform_op` (hypercall 7), for the hardware domain only (`shared/xen-abi.md` 6.10).
//!
//! What Linux's dom0 asks at boot and as it runs: the wallclock (`settime64`/`settime32`,
//! which Linux calls at every clock update until one succeeds), physical CPU information
//! (`get_cpuinfo`: also how its APIC emulation learns CPU 0's APIC id), and firmware
//! information (the BIOS keyboard shift flags; no EDD, VBE or EFI data is kept, which Linux
//! takes as "not present", as Xen answers without them). Power management, microcode, memory
//! types and CPU hotplug are -ENOSYS.

use xen_abi::errno::Errno;
use xen_abi::platform::{
    INTERFACE_VERSION, OP_SIZE, PCPU_INVALID, PCPU_ONLINE, PcpuInfo, Settime32, Settime64, cmd,
    efi as efi_index, fw,
};
use zerocopy::{FromBytes, IntoBytes};

use super::Caller;
use crate::arch::x86_64::{acpi, efi, percpu};
use crate::mm::{self, guest};
use hestia_core::policy::{self, Action};

/// The union inside `xen_platform_op` starts here.
const UNION: usize = 8;
/// BIOS data area: keyboard shift flags.
const BDA_KBD_SHIFT_FLAGS: u64 = 0x417;

pub(super) fn do_platform_op(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let d = c.domain();
    policy::check(d.rights, Action::PlatformOp)?;
    let arg = a[0];
    let mut op: [u8; OP_SIZE] = guest::read_obj(arg)?;
    let word =
        |op: &[u8; OP_SIZE], o: usize| u32::from_le_bytes([op[o], op[o + 1], op[o + 2], op[o + 3]]);
    if word(&op, 4) != INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    let (command, ty, index) = (word(&op, 0), word(&op, UNION), word(&op, UNION + 4));
    let u = &mut op[UNION..];
    match command {
        cmd::SETTIME64 => {
            let t = Settime64::read_from_prefix(u).map_err(|_| Errno::EINVAL)?.0;
            if t.mbz != 0 {
                return Err(Errno::EINVAL);
            }
            crate::pv::set_wallclock(t.secs, t.nsecs, t.system_time, &crate::domain::all());
            Ok(0)
        }
        cmd::SETTIME32 => {
            let t = Settime32::read_from_prefix(u).map_err(|_| Errno::EINVAL)?.0;
            crate::pv::set_wallclock(
                u64::from(t.secs),
                t.nsecs,
                t.system_time,
                &crate::domain::all(),
            );
            Ok(0)
        }
        cmd::GET_CPUINFO => {
            let mut info = PcpuInfo::read_from_prefix(u).map_err(|_| Errno::EINVAL)?.0;
            info.max_present = percpu::online_count().saturating_sub(1);
            match percpu::cpu(info.xen_cpuid) {
                Some(c) => {
                    info.apic_id = c.apic_id;
                    info.acpi_id = acpi::acpi_id(c.apic_id).unwrap_or(u32::MAX);
                    info.flags = PCPU_ONLINE;
                }
                None => info.flags = PCPU_INVALID,
            }
            u[..size_of::<PcpuInfo>()].copy_from_slice(info.as_bytes());
            guest::write_obj(arg, &op).map(|()| 0)
        }
        cmd::FIRMWARE_INFO => {
            match ty {
                fw::KBD_SHIFT_FLAGS if index == 0 => {
                    // SAFETY: the BIOS data area is in low memory, inside the direct map; a
                    // byte read of it has no side effects.
                    let flags = unsafe {
                        core::ptr::read_volatile(mm::phys_to_virt(BDA_KBD_SHIFT_FLAGS) as *const u8)
                    };
                    u[8] = flags;
                    guest::write_obj(arg, &op).map(|()| 0)
                }
                fw::DISK_INFO | fw::DISK_MBR_SIGNATURE | fw::VBEDDC_INFO => Err(Errno::ESRCH),
                fw::EFI_INFO => efi_info(index, u.get_mut(8..).ok_or(Errno::EINVAL)?)
                    .and_then(|()| guest::write_obj(arg, &op).map(|()| 0)),
                _ => Err(Errno::EINVAL),
            }
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `XEN_FW_EFI_INFO` request `index` on `u`, the `xenpf_efi_info` union, as Xen 4.17 answers
/// when it runs without EFI runtime services: -ENOSYS on a BIOS boot; the system table's
/// revision, its configuration tables, the firmware vendor (into the guest's buffer) and the
/// memory map's descriptor of an address; no runtime-services revision, PCI ROMs or Apple
/// properties kept.
fn efi_info(index: u32, u: &mut [u8]) -> Result<(), Errno> {
    let e = efi::get().ok_or(Errno::ENOSYS)?;
    match index {
        efi_index::VERSION => put(u, 0, &e.table.revision.to_le_bytes()),
        efi_index::CONFIG_TABLE => {
            put(u, 0, &e.table.config_table.to_le_bytes())?;
            // `nent` is a u32 in the ABI; the count was bounded when the table was read.
            put(u, 8, &(e.table.nr_tables as u32).to_le_bytes())
        }
        efi_index::VENDOR => {
            if e.vendor.is_empty() {
                return Err(Errno::EOPNOTSUPP);
            }
            let bufsz = get::<4>(u, 4).map(u32::from_le_bytes)?;
            let name = get::<8>(u, 8).map(u64::from_le_bytes)?;
            let mut buf = [0u8; 2 * (hestia_core::efi::MAX_VENDOR_CHARS + 1)];
            let n = hestia_core::efi::vendor_bytes(&e.vendor, bufsz, &mut buf);
            guest::GuestRange::new(name, n)?.write(buf.get(..n).ok_or(Errno::EINVAL)?)?;
            put(u, 0, &e.table.fw_revision.to_le_bytes())
        }
        efi_index::MEM_INFO => {
            let addr = get::<8>(u, 0).map(u64::from_le_bytes)?;
            let size = get::<8>(u, 8).map(u64::from_le_bytes)?;
            let (ty, attr, size) =
                hestia_core::efi::mem_info(e.mmap, addr, size).ok_or(Errno::ESRCH)?;
            put(u, 8, &size.to_le_bytes())?;
            put(u, 16, &attr.to_le_bytes())?;
            put(u, 24, &ty.to_le_bytes())
        }
        efi_index::RT_VERSION => Err(Errno::EOPNOTSUPP),
        efi_index::PCI_ROM => Err(Errno::ESRCH),
        efi_index::APPLE_PROPERTIES => Err(Errno::ENODATA),
        _ => Err(Errno::EINVAL),
    }
}

/// `N` bytes of the request at offset `o`.
fn get<const N: usize>(u: &[u8], o: usize) -> Result<[u8; N], Errno> {
    u.get(o..o.saturating_add(N))
        .and_then(|b| b.try_into().ok())
        .ok_or(Errno::EINVAL)
}

/// Writes `v` into the request at offset `o`.
fn put(u: &mut [u8], o: usize, v: &[u8]) -> Result<(), Errno> {
    u.get_mut(o..o.saturating_add(v.len()))
        .ok_or(Errno::EINVAL)?
        .copy_from_slice(v);
    Ok(())
}
