//! The domain builder: turns a boot module into a PV domain, dom0 or a boot-time domU.
//!
//! Follows the PV start-of-day protocol (`public/xen.h`; `shared/xen-abi.md` 2.2-2.5): parse the
//! ELF and its Xen notes (`hestia_core::elf`), compute the layout (`hestia_core::pv_layout`),
//! give the domain its frames, copy the image, fill the hypercall page only if a note asks for
//! it, build the bootstrap page tables (read-only to the guest, Hestia's slots 256-271 in the
//! L4), write the P2M, start_info and shared_info, and set vCPU 0's registers: RIP = entry,
//! RSP = top of the stack page, RSI = start_info, CS/SS = FLAT_KERNEL_CS/SS, events masked.
//! The L4 is pinned (validated and typed) by the PV MMU before the guest runs.
//!
//! dom0 holds the hardware (SIF_PRIVILEGED | SIF_INITDOMAIN, the I/O ports and I/O memory); a
//! domU gets none of it and a console ring instead: its last page, whose frame Hestia holds
//! (a reference and a writable type, for good, like shared_info) because Hestia serves that
//! ring itself (`crate::console::ring`), and an event channel for it.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

use hestia_core::bzimage::{self, BzError, Compression};
use hestia_core::elf::{self, Elf64, ElfError, PvKernel};
use hestia_core::grant_table::{DEFAULT_MAX_GRANT_FRAMES, DEFAULT_MAX_MAPTRACK_FRAMES};
use hestia_core::ids::{Gfn, Mfn, VcpuId};
use hestia_core::pv_layout::{self, LayoutError, PvLayout};
use hestia_core::pv_mm::{MmError, PageType};
use xen_abi::errno::Errno;
use xen_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, START_INFO_MAGIC, SharedInfo, StartInfo, sif};
use zerocopy::{FromZeros, IntoBytes};

use super::domain::{DomId, Domain, Vcpu};
use super::unpack::{self, UnpackError};
use crate::arch::x86_64::idt::TrapFrame;
use crate::bootinfo::Module;
use crate::mm;
use crate::mm::paging::ADDR_MASK;

/// Why a domain could not be built (each is one line on the console, after the domain's name).
#[derive(Debug)]
pub enum BuildError {
    /// The module is not a usable PV kernel.
    Kernel(ElfError),
    /// A bzImage whose header is unusable.
    BzImage(BzError),
    /// A bzImage payload that could not be unpacked.
    Unpack(UnpackError),
    /// The layout does not fit.
    Layout(LayoutError),
    /// Not enough free memory for the requested domain size.
    OutOfMemory(u64),
    /// The frame table refused the domain's frames or its bootstrap tables (a builder bug).
    Mmu(MmError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kernel(e) => write!(f, "kernel: {e}"),
            Self::BzImage(e) => write!(f, "kernel: unusable bzImage header ({e:?})"),
            Self::Unpack(e) => write!(f, "kernel: {e}"),
            Self::Layout(LayoutError::TooLarge { needed, available }) => {
                write!(
                    f,
                    "kernel: needs {} KiB of initial mapping but the domain has {} KiB (give it more memory)",
                    needed * 4,
                    available * 4
                )
            }
            Self::Layout(LayoutError::BadRegion) => write!(
                f,
                "kernel: its virtual region crosses the hypervisor hole or wraps"
            ),
            Self::OutOfMemory(p) => write!(f, "not enough free memory for its {} MiB", p / 256),
            Self::Mmu(e) => write!(
                f,
                "its bootstrap page tables fail validation ({e:?}): a builder bug"
            ),
        }
    }
}

const PAGE: u64 = 4096;
/// Intermediate entries: present, writable, user, accessed, dirty (xen-abi.md 2.2 item 6).
const PDE_FLAGS: u64 = 0x67;
/// Leaf entries: present, writable, user, accessed.
const PTE_FLAGS: u64 = 0x27;
const PTE_RW: u64 = 0x2;
/// Execute-disable.
const PTE_NX: u64 = 1 << 63;
/// `max_evtchn_port` of a boot-time domU (Xen's for dom0less domUs).
const DOMU_MAX_EVTCHN_PORT: u32 = 1023;

/// A byte view of a module in the direct map.
fn module_bytes(m: &Module) -> &'static [u8] {
    // SAFETY: boot modules are reserved in the frame allocator and inside the direct map (GRUB
    // loads them below 4 GiB), so the bytes stay valid and unchanged for Hestia's lifetime.
    unsafe {
        core::slice::from_raw_parts(
            mm::phys_to_virt(m.start) as *const u8,
            (m.end - m.start) as usize,
        )
    }
}

/// Guest physical memory during the build: PFN-addressed writes through the direct map.
struct GuestMem<'a> {
    p2m: &'a [Mfn],
}

impl GuestMem<'_> {
    /// The machine frame behind guest frame `gfn` (below the domain's page count).
    fn mfn(&self, gfn: Gfn) -> Mfn {
        self.p2m[gfn.raw() as usize]
    }

    fn frame(&self, pfn: Gfn) -> *mut u8 {
        mm::phys_to_virt(self.mfn(pfn).addr()) as *mut u8
    }

    /// Writes `data` at byte offset `off` of the domain's pseudo-physical memory.
    fn write(&self, mut off: u64, mut data: &[u8]) {
        while !data.is_empty() {
            let (pfn, in_page) = (Gfn::new(off / PAGE), off % PAGE);
            let n = data.len().min((PAGE - in_page) as usize);
            // SAFETY: `pfn` is below the domain's page count (callers stay inside the layout,
            // which `pv_layout` checked fits), and the frame is the domain's, reached through
            // the direct map; `in_page + n` never crosses the frame.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    self.frame(pfn).add(in_page as usize),
                    n,
                )
            };
            off += n as u64;
            data = &data[n..];
        }
    }

    fn write_u64(&self, pfn: Gfn, index: u64, v: u64) {
        // SAFETY: as in `write`; `index` < 512 keeps the store inside the frame.
        unsafe { (self.frame(pfn) as *mut u64).add(index as usize).write(v) }
    }

    fn read_u64(&self, pfn: Gfn, index: u64) -> u64 {
        // SAFETY: as in `write_u64`.
        unsafe { (self.frame(pfn) as *const u64).add(index as usize).read() }
    }
}

/// Gives the domain `nr_pages` zeroed frames, in runs of up to 2 MiB.
fn allocate(nr_pages: u64) -> Result<Vec<Mfn>, BuildError> {
    let mut p2m = Vec::new();
    p2m.try_reserve_exact(nr_pages as usize)
        .map_err(|_| BuildError::OutOfMemory(nr_pages))?;
    let mut run = 512;
    while (p2m.len() as u64) < nr_pages {
        let want = run.min(nr_pages - p2m.len() as u64);
        match mm::alloc_zeroed_frames(want, PAGE, u64::MAX) {
            Some(base) => p2m.extend((0..want).map(|i| Mfn::new(base / PAGE) + i)),
            None if want > 1 => run = want / 2,
            None => {
                for &mfn in &p2m {
                    mm::free_frames(mfn.addr(), 1);
                }
                return Err(BuildError::OutOfMemory(nr_pages));
            }
        }
    }
    Ok(p2m)
}

/// Writes the hypercall page (`hestia_core::hypercall_page`) into the page at `pfn`.
fn fill_hypercall_page(mem: &GuestMem<'_>, pfn: Gfn) {
    mem.write(pfn.addr(), &hestia_core::hypercall_page::page());
}

/// Builds the bootstrap page tables mapping `[v_start, v_end)` to PFNs 0.., with the table
/// pages themselves read-only, and, with `INIT_P2M`, the P2M at its own address from the
/// frames after the initial mapping. Returns the L4's MFN.
fn build_page_tables(mem: &GuestMem<'_>, l: &PvLayout) -> Mfn {
    let pt_first = l.pfn(l.page_tables.start);
    let pt_last = l.pfn(l.page_tables.end);
    let l4 = pt_first;
    let mut tables = TableAlloc {
        first: pt_first,
        next: pt_first + 1,
        end: pt_last,
    };
    for pfn in (0..l.mapped_pages()).map(Gfn::new) {
        let va = l.v_start + pfn.addr();
        let is_pt = (pt_first..pt_last).contains(&pfn);
        let flags = if is_pt {
            PTE_FLAGS & !PTE_RW
        } else {
            PTE_FLAGS
        };
        map_page(mem, l4, &mut tables, va, pfn, flags);
    }
    if let Some(r) = l.p2m_frames {
        // The P2M's data pages, then the tables that map them (not mapped themselves).
        let data = l.p2m.pages();
        let mut p2m_tables = TableAlloc {
            first: r.first + data,
            next: r.first + data,
            end: r.first + r.pages,
        };
        for i in 0..data {
            let va = l.p2m.start + i * PAGE;
            map_page(
                mem,
                l4,
                &mut p2m_tables,
                va,
                r.first + i,
                PTE_FLAGS | PTE_NX,
            );
        }
    }
    // Hestia's own slots, supervisor-only, shared with every guest L4.
    let root = mm::kernel_root();
    for slot in 256..272 {
        // SAFETY: Hestia's PML4 is a frame in the direct map; reading an entry is plain memory.
        let e = unsafe {
            (mm::phys_to_virt(root) as *const u64)
                .add(slot as usize)
                .read()
        };
        mem.write_u64(l4, slot, e);
    }
    mem.mfn(l4)
}

/// Page-table pages handed out in order from PFNs `next..end`; `first..next` are in use.
struct TableAlloc {
    first: Gfn,
    next: Gfn,
    end: Gfn,
}

/// Maps `va` to `pfn` with `flags` in the tables under `l4`, creating missing tables from
/// `tables` (or from the L4's own run for the L4 itself: its slots were zeroed).
fn map_page(mem: &GuestMem<'_>, l4: Gfn, tables: &mut TableAlloc, va: u64, pfn: Gfn, flags: u64) {
    let mut table = l4;
    for level in [4u32, 3, 2] {
        let idx = (va >> (12 + 9 * (level - 1))) & 511;
        let e = mem.read_u64(table, idx);
        table = if e & 1 != 0 {
            // Table entries hold MFNs; find the PFN back among the tables handed out.
            let mfn = Mfn::new((e & ADDR_MASK) / PAGE);
            (tables.first.raw()..tables.next.raw())
                .map(Gfn::new)
                .find(|&p| mem.mfn(p) == mfn)
                .unwrap_or(tables.first)
        } else {
            let t = tables.next;
            tables.next = t + 1;
            debug_assert!(t < tables.end, "pv_layout sized the page tables");
            mem.write_u64(table, idx, mem.mfn(t).addr() | PDE_FLAGS);
            t
        };
    }
    mem.write_u64(table, (va >> 12) & 511, mem.mfn(pfn).addr() | flags);
}

/// Gives the domain's frames to domain `dom` in the frame table, fills the M2P, and pins the
/// bootstrap L4 with a second type reference for CR3 (as Xen's dom0 builder does): the
/// validation proves the tables obey the PV MMU rules before the guest runs. The hardware
/// domain also gets the machine's I/O memory, but for Hestia's own devices.
///
/// Hestia writes a domU's console ring for the domain's whole life, so, like shared_info
/// ([`share_with`]), its frame holds a reference and a writable type reference that are never
/// dropped while the domain lives.
fn register_frames(
    dom: DomId,
    hardware: bool,
    p2m: &[Mfn],
    console_mfn: Option<Mfn>,
    l4_mfn: Mfn,
) -> Result<(), BuildError> {
    let dom = dom.0;
    if hardware {
        mm::frametable::grant_dom0_iomem(dom);
    }
    mm::frametable::with(|ft, mem| {
        for (pfn, &mfn) in p2m.iter().enumerate() {
            ft.assign(mfn, dom)?;
            mm::frametable::set_m2p(mfn, pfn as u64);
        }
        if let Some(held) = console_mfn {
            ft.get_page(held, dom)?;
            ft.get_page_type(mem, held, PageType::Writable, dom)?;
        }
        ft.pin(mem, l4_mfn, 4, dom)?;
        ft.get_page(l4_mfn, dom)?;
        ft.get_page_type(mem, l4_mfn, PageType::Table(4), dom)
    })
    .unwrap_or(Err(MmError::BadFrame))
    .map_err(BuildError::Mmu)
}

/// Gives Hestia's frame `mfn` to domain `dom` with a reference and a writable type reference
/// that are never dropped while the domain lives (Xen's `share_xen_page_with_guest`): Hestia
/// writes it (shared_info) for the domain's whole life, so it can never become a page table
/// or descriptor page, and `XENMEM_decrease_reservation`/`exchange` cannot hand it back to
/// the allocator.
fn share_with(dom: DomId, mfn: Mfn) -> Result<(), MmError> {
    mm::frametable::with(|ft, mem| {
        ft.assign(mfn, dom.0)?;
        ft.get_page(mfn, dom.0)?;
        ft.get_page_type(mem, mfn, PageType::Writable, dom.0)
    })
    .unwrap_or(Err(MmError::BadFrame))
}

/// What a new, empty domain is made of (Xen's `xen_domctl_createdomain`, once checked).
pub struct Config {
    /// Its id.
    pub id: DomId,
    /// The hardware domain (dom0): privileged, with the I/O ports.
    pub hardware: bool,
    /// Its vCPUs (at least 1).
    pub nr_vcpus: u32,
    /// Its highest event-channel port (`u32::MAX`: all the ABI has).
    pub max_evtchn_port: u32,
    /// Most grant-table frames.
    pub max_grant_frames: u32,
    /// Most maptrack frames.
    pub max_maptrack_frames: u32,
    /// The highest grant-table version it may use (1 or 2).
    pub max_grant_version: u8,
    /// Who ends it, paused or not.
    pub life: super::life::Life,
    /// Its UUID.
    pub handle: xen_abi::domctl::DomainHandle,
}

/// An empty domain (Xen's `domain_create`): a zeroed shared_info page shared with it (every
/// `vcpu_info`'s events masked), `nr_vcpus` vCPUs neither initialised nor up, event channels
/// up to its port limit, a grant table without frames, no memory (`tot_pages` and `max_pages`
/// 0, an empty P2M) and no I/O ports. Every step that can fail for want of memory comes before
/// the shared_info page is taken, so a failure leaves nothing behind. The boot-time builder
/// fills it with a kernel; `XEN_DOMCTL_createdomain` returns it as it is.
pub fn empty_domain(c: Config) -> Result<Domain, Errno> {
    let nr_vcpus = c.nr_vcpus.max(1);
    let n = nr_vcpus as usize;
    let mut vcpus = Vec::new();
    vcpus.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
    for i in 0..nr_vcpus {
        vcpus.push(spin::Mutex::new(Vcpu::new(
            VcpuId::unvalidated(i),
            TrapFrame::default(),
            0,
        )?));
    }
    let mut vcpu_info = Vec::new();
    vcpu_info.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
    vcpu_info.extend((0..n).map(|_| core::sync::atomic::AtomicU64::new(0)));
    let mut mm_pending = Vec::new();
    mm_pending.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
    mm_pending.extend((0..n).map(|_| spin::Mutex::default()));
    let mut evtchn = hestia_core::evtchn::EventChannels::new(nr_vcpus);
    evtchn.set_max_port(c.max_evtchn_port);

    let shared = Mfn::new(mm::alloc_zeroed_frames(1, PAGE, u64::MAX).ok_or(Errno::ENOMEM)? / PAGE);
    // Before its tables are validated.
    let check_l1tf = super::l1tf::domain_init(c.id.0, c.hardware);
    if let Err(e) = share_with(c.id, shared) {
        // A fresh frame the frame table refuses: a Hestia bug; the frame stays out of use.
        crate::error!("{}: its shared_info frame is refused ({e:?})", c.id);
        return Err(Errno::ENOMEM);
    }
    let mut si = SharedInfo::new_zeroed();
    for v in si.vcpu_info.iter_mut() {
        v.evtchn_upcall_mask = 1;
    }
    // SAFETY: a fresh frame from the allocator, owned by Hestia, in the direct map.
    unsafe {
        core::ptr::copy_nonoverlapping(
            si.as_bytes().as_ptr(),
            mm::phys_to_virt(shared.addr()) as *mut u8,
            size_of::<SharedInfo>(),
        )
    };
    // A domain the toolstack creates starts paused once, by the toolstack.
    let sched = crate::sched::DomainSched::new(c.id, c.life.toolstack);
    Ok(Domain {
        id: c.id,
        rights: if c.hardware {
            hestia_core::policy::Rights::HARDWARE_AND_CONTROL
        } else {
            hestia_core::policy::Rights::NONE
        },
        p2m: Vec::new(),
        shared_info_mfn: shared,
        vcpus,
        stopped: AtomicBool::new(false),
        shutdown_reason: AtomicU32::new(super::life::Life::no_shutdown_code()),
        life: c.life,
        evtchn: spin::Mutex::new(evtchn),
        tot_pages: AtomicU64::new(0),
        max_pages: AtomicU64::new(0),
        handle: spin::Mutex::new(c.handle),
        tsc_mode: AtomicU32::new(xen_abi::domctl::tsc_mode::DEFAULT),
        tsc_incarnation: AtomicU32::new(0),
        vm_assist: AtomicU64::new(0),
        ioports: alloc::boxed::Box::new(hestia_core::ioport::PortSet::none()),
        pci_cf8: AtomicU32::new(0),
        rtc_index: core::sync::atomic::AtomicU8::new(0),
        vcpu_info,
        pirqs: spin::Mutex::new(hestia_core::pirq::PirqTable::default()),
        mm_pending,
        log_limit: Default::default(),
        check_l1tf,
        cpu_policy: super::privop::default_cpu_policy(),
        grant: super::grant::Grants::new(
            c.max_grant_frames,
            c.max_maptrack_frames,
            c.max_grant_version,
        ),
        sched,
        console_line: spin::Mutex::new(crate::console::ring::Line::new()),
        console: None,
    })
}

/// What to build.
pub struct Spec<'a> {
    /// The domain's id.
    pub id: DomId,
    /// The hardware domain (dom0): privileged, with the I/O ports and memory.
    pub hardware: bool,
    /// Its kernel (the module's string is its command line).
    pub kernel: &'a Module,
    /// Its initial ramdisk.
    pub initrd: Option<&'a Module>,
    /// Its vCPUs (at least 1).
    pub nr_vcpus: u32,
}

/// Builds the domain `spec` describes; `size` gives its memory and ceiling in pages, asked once
/// the kernel is unpacked (dom0's default "all free memory" depends on what is left).
pub fn build(spec: &Spec<'_>, size: &dyn Fn() -> (u64, u64)) -> Result<Domain, BuildError> {
    let Spec {
        id,
        hardware,
        kernel,
        initrd,
        nr_vcpus,
    } = *spec;
    let bytes = module_bytes(kernel);
    // A bzImage (Debian's vmlinuz) carries the ELF as its payload, usually XZ-compressed;
    // the unpacked copy lives in allocator frames until the build is done.
    let unpacked;
    let elf_bytes = if bzimage::is_bzimage(bytes) {
        let p = bzimage::payload(bytes).map_err(BuildError::BzImage)?;
        if p.compression == Compression::None {
            p.data
        } else {
            crate::info!(
                " kernel: bzImage with a {:?} payload, unpacking {} KiB",
                p.compression,
                p.uncompressed_len >> 10
            );
            unpacked = unpack::unpack(&p).map_err(BuildError::Unpack)?;
            unpacked.bytes()
        }
    } else {
        bytes
    };
    let (nr_pages, max_pages) = size();
    let image = Elf64::parse(elf_bytes).map_err(BuildError::Kernel)?;
    let k: PvKernel = elf::pv_kernel(&image).map_err(BuildError::Kernel)?;
    let initrd_bytes = initrd.map(module_bytes).unwrap_or(&[]);
    let map_initrd = !k.mod_start_pfn;
    let l = pv_layout::compute(&k, nr_pages, initrd_bytes.len() as u64, map_initrd)
        .map_err(BuildError::Layout)?;

    // A domU's console ring is its last page, outside the initial mapping.
    let console_pfn = (!hardware).then(|| nr_pages.saturating_sub(1));
    if console_pfn.is_some_and(|p| p < l.mapped_pages()) {
        return Err(BuildError::Layout(LayoutError::TooLarge {
            needed: l.mapped_pages() + 1,
            available: nr_pages,
        }));
    }
    if hardware {
        crate::info!("*** Building a PV dom0 ***");
    } else {
        crate::info!("*** Building a PV domU ({id}) ***");
    }
    crate::info!(
        " kernel: {:#x}-{:#x}, entry {:#x}, {} pages of memory",
        k.virt_kstart,
        k.virt_kend,
        k.entry,
        nr_pages
    );
    let p2m = allocate(nr_pages)?;
    let mem = GuestMem { p2m: &p2m };

    for s in image.segments() {
        let s = s.map_err(BuildError::Kernel)?;
        let va = s.paddr.wrapping_add(k.virt_offset);
        mem.write(va - l.v_start, image.segment_bytes(&s));
    }
    if let Some(h) = k.hypercall_page {
        fill_hypercall_page(&mem, l.pfn(h));
    }
    let (mod_start, mod_flags) = match (l.initrd, l.initrd_pfns) {
        (Some(r), _) => {
            mem.write(r.start - l.v_start, initrd_bytes);
            (r.start, 0)
        }
        (None, Some(r)) => {
            mem.write(r.first.addr(), initrd_bytes);
            (r.first.raw(), sif::MOD_START_PFN)
        }
        (None, None) => (0, 0),
    };
    let p2m_bytes: Vec<u8> = p2m.iter().flat_map(|m| m.raw().to_le_bytes()).collect();
    let p2m_first_pfn = l.p2m_frames.map_or(l.pfn(l.p2m.start), |r| r.first);
    mem.write(p2m_first_pfn.addr(), &p2m_bytes);
    let l4_mfn = build_page_tables(&mem, &l);

    let mut d = empty_domain(Config {
        id,
        hardware,
        nr_vcpus,
        // Xen's boot-time domUs (dom0less) get ports 0-1023, as `xl`'s default
        // `max_event_channels`; dom0's are unlimited (all the ABI has).
        max_evtchn_port: if hardware {
            u32::MAX
        } else {
            DOMU_MAX_EVTCHN_PORT
        },
        max_grant_frames: DEFAULT_MAX_GRANT_FRAMES,
        max_maptrack_frames: DEFAULT_MAX_MAPTRACK_FRAMES,
        max_grant_version: 2,
        life: super::life::Life::boot(),
        handle: [0; 16],
    })
    .map_err(|_| BuildError::OutOfMemory(1))?;
    let console_mfn = console_pfn.map(|p| mem.mfn(Gfn::new(p)));
    register_frames(id, hardware, &p2m, console_mfn, l4_mfn)?;

    let mut st = StartInfo::new_zeroed();
    st.magic[..START_INFO_MAGIC.len()].copy_from_slice(START_INFO_MAGIC);
    st.nr_pages = nr_pages;
    st.shared_info = d.shared_info_mfn.addr();
    st.flags = if hardware {
        sif::PRIVILEGED | sif::INITDOMAIN
    } else {
        0
    } | mod_flags;
    d.console = match console_mfn {
        Some(mfn) => {
            // Served by Hestia: unbound, its remote end Hestia itself.
            let port = d
                .evtchn
                .get_mut()
                .alloc_unbound(DomId(xen_abi::xen::DOMID_XEN))
                .map_err(|_| BuildError::OutOfMemory(0))?;
            st.console_mfn_or_info = mfn.raw();
            st.console_evtchn = port.raw();
            Some(crate::console::ring::RingConsole::new(mfn, port))
        }
        None => None,
    };
    st.pt_base = l.page_tables.start;
    st.nr_pt_frames = l.page_tables.pages();
    st.mfn_list = l.p2m.start;
    if let Some(r) = l.p2m_frames {
        st.first_p2m_pfn = r.first.raw();
        st.nr_p2m_frames = r.pages;
    }
    st.mod_start = mod_start;
    st.mod_len = initrd_bytes.len() as u64;
    let cmdline = kernel.cmdline.as_bytes();
    let n = cmdline.len().min(st.cmd_line.len() - 1);
    st.cmd_line[..n].copy_from_slice(&cmdline[..n]);
    mem.write(l.start_info - l.v_start, st.as_bytes());

    crate::info!(
        " layout: v_start {:#x}, p2m {:#x}, start_info {:#x}, page tables {:#x} ({} frames), stack {:#x}, v_end {:#x}",
        l.v_start,
        l.p2m.start,
        l.start_info,
        l.page_tables.start,
        l.page_tables.pages(),
        l.stack,
        l.v_end
    );
    {
        // vCPU 0 starts at the kernel's entry; the others wait, down, for VCPUOP_initialise
        // and VCPUOP_up.
        let boot = d.vcpus[0].get_mut();
        boot.regs = TrapFrame {
            rip: k.entry,
            rsp: l.stack + PAGE,
            rsi: l.start_info,
            cs: u64::from(FLAT_KERNEL_CS),
            ss: u64::from(FLAT_KERNEL_SS),
            rflags: 0x202,
            ..TrapFrame::default()
        };
        boot.kernel_cr3 = l4_mfn.addr();
        (boot.initialised, boot.up) = (true, true);
    }
    if hardware {
        d.ioports = alloc::boxed::Box::new(super::ioport::dom0_ports(
            crate::console::uart_port(),
            crate::arch::x86_64::acpi::pm_timer_port(),
        ));
    }
    d.p2m = p2m;
    d.tot_pages = AtomicU64::new(nr_pages);
    d.max_pages = AtomicU64::new(max_pages.max(nr_pages));
    Ok(d)
}
