//! `physdev_op` (hypercall 33), `shared/xen-abi.md` 6.9.
//!
//! I/O privilege for any PV guest: `set_iopl` (Linux asks for IOPL 1 at boot so its kernel may
//! use ports) and `set_iobitmap` (its `ioperm`). For the hardware domain, interrupts
//! (`map_pirq`/`unmap_pirq`/`get_free_pirq` for GSIs and MSIs, `setup_gsi`, `eoi`,
//! `irq_status_query`, `alloc_irq_vector`, see `pv::pirq` and `pv::msi`), IOAPIC register
//! reads, and the PCI notifications, which Hestia accepts without keeping state: it has no
//! IOMMU and finds MSI capabilities itself when asked, so there is nothing to record yet.
//! Multi-vector MSI is -EOPNOTSUPP (Linux falls back to one vector), the EOI bitmap page
//! -ENOSYS (Linux falls back to `irq_status_query`); unprivileged callers of device operations
//! get -EPERM.

use xen_abi::errno::Errno;
use xen_abi::physdev::{
    Apic, Eoi, IrqStatusQuery, MapPirq, SetIobitmap, SetIopl, SetupGsi, UnmapPirq,
    XENIRQSTAT_NEEDS_EOI, cmd, map_type,
};

use super::Caller;
use crate::arch::x86_64::ioapic;
use crate::arch::x86_64::pci::Function;
use crate::domain;
use crate::mm::guest::{self, is_guest_range};
use crate::pv::{msi, pirq};
use hestia_core::policy::{self, Action};

pub(super) fn do_physdev_op(c: Caller<'_>, a: &[u64; 5]) -> Result<u64, Errno> {
    let d = c.domain();
    let (op, arg) = (a[0] as u32, a[1]);
    match op {
        cmd::SET_IOPL => {
            let arg: SetIopl = guest::read_obj(arg)?;
            if arg.iopl > 3 {
                return Err(Errno::EINVAL);
            }
            c.vcpu().lock().iopl = arg.iopl as u8;
            Ok(0)
        }
        cmd::SET_IOBITMAP => {
            let arg: SetIobitmap = guest::read_obj(arg)?;
            // The bitmap is read at each access; its whole 8 KiB must be guest addresses.
            if arg.nr_ports > 65536 || !is_guest_range(arg.bitmap, 65536 / 8) {
                return Err(Errno::EINVAL);
            }
            c.vcpu().lock().iobitmap = (arg.bitmap, arg.nr_ports);
            Ok(0)
        }
        cmd::PIRQ_EOI_GMFN_V1 | cmd::PIRQ_EOI_GMFN_V2 => Err(Errno::ENOSYS),
        _ if !policy::allows(d.rights, Action::PhysicalIrq) => Err(Errno::EPERM),
        cmd::MAP_PIRQ => {
            let mut m: MapPirq = guest::read_obj(arg)?;
            domain::only_self(d, m.domid)?;
            let wanted = (m.pirq as i32 >= 0).then_some(m.pirq);
            m.pirq = match m.ty {
                map_type::GSI => pirq::map_gsi(d, m.index, wanted)?,
                map_type::MSI | map_type::MSI_SEG => {
                    let seg = if m.ty == map_type::MSI_SEG {
                        (m.bus >> 16) as u16
                    } else {
                        0
                    };
                    let f = Function {
                        bus: m.bus as u8,
                        devfn: m.devfn as u8,
                    };
                    msi::map(d, seg, f, m.entry_nr, m.table_base, wanted)?
                }
                // Several vectors for one MSI: Linux then falls back to a single one.
                map_type::MULTI_MSI => return Err(Errno::EOPNOTSUPP),
                _ => return Err(Errno::EINVAL),
            };
            guest::write_obj(arg, &m).map(|()| 0)
        }
        cmd::UNMAP_PIRQ => {
            let u: UnmapPirq = guest::read_obj(arg)?;
            domain::only_self(d, u.domid)?;
            pirq::unmap(d, u.pirq).map(|()| 0)
        }
        cmd::GET_FREE_PIRQ => {
            let mut s: [u32; 2] = guest::read_obj(arg)?;
            s[1] = d.pirqs.lock().free_pirq().ok_or(Errno::ENOSPC)?;
            guest::write_obj(arg, &s).map(|()| 0)
        }
        cmd::SETUP_GSI => {
            let s: SetupGsi = guest::read_obj(arg)?;
            pirq::setup_gsi(s.gsi, s.triggering != 0, s.polarity != 0).map(|()| 0)
        }
        cmd::EOI => {
            let e: Eoi = guest::read_obj(arg)?;
            pirq::eoi(d, e.irq).map(|()| 0)
        }
        cmd::IRQ_STATUS_QUERY => {
            // As Xen: every PV PIRQ asks for the EOI hypercall (edge lines need nothing from
            // it, but a guest without an EOI bitmap cannot tell).
            let mut q: IrqStatusQuery = guest::read_obj(arg)?;
            if q.irq >= hestia_core::pirq::NR_PIRQS {
                return Err(Errno::EINVAL);
            }
            q.flags = XENIRQSTAT_NEEDS_EOI;
            guest::write_obj(arg, &q).map(|()| 0)
        }
        // Linux asks before binding each GSI; vectors are Hestia's business (each GSI has its
        // own), so the answer is the IRQ itself, as Xen gives.
        cmd::ALLOC_IRQ_VECTOR => {
            let mut v: [u32; 2] = guest::read_obj(arg)?;
            v[1] = v[0];
            guest::write_obj(arg, &v).map(|()| 0)
        }
        cmd::APIC_READ => {
            let mut r: Apic = guest::read_obj(arg)?;
            r.value = ioapic::read_register(r.apic_physbase, r.reg).ok_or(Errno::EINVAL)?;
            guest::write_obj(arg, &r).map(|()| 0)
        }
        // The IOAPICs are programmed by Hestia (setup_gsi, bind_pirq), never by dom0.
        cmd::APIC_WRITE => Err(Errno::EPERM),
        cmd::PCI_DEVICE_ADD
        | cmd::PCI_DEVICE_REMOVE
        | cmd::MANAGE_PCI_ADD
        | cmd::MANAGE_PCI_REMOVE
        | cmd::MANAGE_PCI_ADD_EXT
        | cmd::PCI_MMCFG_RESERVED
        | cmd::RESTORE_MSI
        | cmd::RESTORE_MSI_EXT => {
            // Read the argument anyway, so a bad pointer is still -EFAULT.
            let _: [u8; 4] = guest::read_obj(arg)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
