//! The ways a PV guest kernel puts an entry into one of its page tables, for tests that try the
//! same entry through each: `mmu_update` of an L1 or an L2 entry, `update_va_mapping`, pinning
//! a fresh L1 that holds it (table validation), and a plain store to the read-only mapping of
//! an L1 (writable page tables, emulated by the hypervisor).
//!
//! The L1 paths rewrite the entry of [`SCRATCH`] in the initial page tables; the L2 path an
//! unused slot of the L2 above it; the pin path a frame beyond the initial mapping. Each
//! [`Path::undo`] puts things back. Writing through [`Path::Ptwr`] installs an exception handler
//! that turns a refused store's #PF into an error.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use xen_abi::mmu::{ext, uvmf};
use xen_abi::xen::{StartInfo, hypercall as nr};

use crate::{
    ExcFrame, hypercall, install_traps, mmu_update_one, mmuext_one, pfn_to_mfn, println, pte_maddr,
    pte_va,
};

/// The virtual address whose L1 entry the L1 paths rewrite (padding of the initial mapping).
pub const SCRATCH: u64 = 0x3fe000;
/// A virtual address no initial mapping reaches, under the same L2 as [`SCRATCH`]: its L2
/// entry is the one [`Path::MmuUpdateL2`] rewrites.
const UNUSED_2M: u64 = 0x3fe0_0000;
/// A PFN beyond the initial mapping: the fresh L1 of [`Path::Pin`].
const FRESH_L1_PFN: u64 = 0x1000;
/// Present, writable, user, accessed; and the same read-only.
const RW: u64 = 0x27;
const RO: u64 = 0x25;

/// Page faults the [`Path::Ptwr`] stores took.
static FAULTS: AtomicU64 = AtomicU64::new(0);

fn skip_store(vector: u64, f: &mut ExcFrame) {
    if vector == 14 {
        FAULTS.fetch_add(1, SeqCst);
        f.rip += 3; // mov %rax, (%rdi)
    } else {
        println!("unexpected exception {vector} at {:#x}", f.rip);
    }
}

fn map_scratch(pte: u64) -> i64 {
    hypercall(nr::UPDATE_VA_MAPPING, SCRATCH, pte, uvmf::INVLPG, 0, 0)
}

/// One way into a page table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `mmu_update` of an L1 entry.
    MmuUpdate,
    /// `update_va_mapping`.
    UpdateVaMapping,
    /// `MMUEXT_PIN_L1_TABLE` of a fresh L1 holding the entry (validation of a new table).
    Pin,
    /// A store to the L1 through its read-only mapping (writable page tables).
    Ptwr,
    /// `mmu_update` of an L2 entry.
    MmuUpdateL2,
}

impl Path {
    /// Every path.
    pub const ALL: [Path; 5] = [
        Path::MmuUpdate,
        Path::UpdateVaMapping,
        Path::Pin,
        Path::Ptwr,
        Path::MmuUpdateL2,
    ];

    /// Its name on a command line (`path=<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Path::MmuUpdate => "mmu-update",
            Path::UpdateVaMapping => "update-va-mapping",
            Path::Pin => "pin",
            Path::Ptwr => "ptwr",
            Path::MmuUpdateL2 => "mmu-update-l2",
        }
    }

    /// The path named `name`.
    pub fn from_name(name: &str) -> Option<Path> {
        Path::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The level of the table it writes.
    pub fn level(self) -> u8 {
        if self == Path::MmuUpdateL2 { 2 } else { 1 }
    }

    /// Machine address of the entry the path writes (for the pin path, slot 0 of its L1).
    fn maddr(self, si: &StartInfo) -> Option<u64> {
        match self {
            Path::Pin => Some(pfn_to_mfn(si, FRESH_L1_PFN) << 12),
            Path::MmuUpdateL2 => pte_maddr(si, UNUSED_2M, 2),
            _ => pte_maddr(si, SCRATCH, 1),
        }
    }

    /// Writes `entry` through this path: 0 when accepted, else the hypercall's error, or -1
    /// when the store faulted or the tables were not as expected. The pin path leaves the L1
    /// pinned.
    pub fn write(self, si: &StartInfo, entry: u64) -> i64 {
        let Some(maddr) = self.maddr(si) else {
            return -1;
        };
        match self {
            Path::MmuUpdate | Path::MmuUpdateL2 => mmu_update_one(maddr, entry),
            Path::UpdateVaMapping => {
                hypercall(nr::UPDATE_VA_MAPPING, SCRATCH, entry, uvmf::INVLPG, 0, 0)
            }
            Path::Pin => {
                if si.nr_pages <= FRESH_L1_PFN || map_scratch((maddr & !0xfff) | RW) != 0 {
                    return -1;
                }
                for i in 0..512 {
                    let v = if i == 0 { entry } else { 0 };
                    // SAFETY: SCRATCH maps the fresh frame writable; `i` < 512.
                    unsafe { core::ptr::write_volatile((SCRATCH as *mut u64).add(i), v) };
                }
                if map_scratch(0) != 0 {
                    return -1;
                }
                mmuext_one(ext::PIN_L1_TABLE, maddr >> 12, 0)
            }
            Path::Ptwr => {
                install_traps(skip_store);
                let before = FAULTS.load(SeqCst);
                // SAFETY: a store to the guest's own read-only L1: emulated, or a #PF that
                // `skip_store` skips.
                unsafe {
                    asm!("mov qword ptr [rdi], rax", in("rdi") pte_va(maddr), in("rax") entry,
                         options(nostack));
                }
                if FAULTS.load(SeqCst) == before { 0 } else { -1 }
            }
        }
    }

    /// The entry where this path wrote it.
    pub fn read(self, si: &StartInfo) -> Option<u64> {
        let maddr = self.maddr(si)?;
        if self != Path::Pin {
            // SAFETY: the initial page tables are mapped read-only at PFN times 4096.
            return Some(unsafe { core::ptr::read_volatile(pte_va(maddr) as *const u64) });
        }
        // A pinned L1 may be mapped read-only.
        if map_scratch((maddr & !0xfff) | RO) != 0 {
            return None;
        }
        // SAFETY: SCRATCH maps the L1 read-only.
        let e = unsafe { core::ptr::read_volatile(SCRATCH as *const u64) };
        (map_scratch(0) == 0).then_some(e)
    }

    /// Puts back what [`Self::write`] changed (an empty entry; the pin path unpins).
    pub fn undo(self, si: &StartInfo) -> i64 {
        match self {
            Path::Pin => {
                let Some(maddr) = self.maddr(si) else {
                    return -1;
                };
                mmuext_one(ext::UNPIN_TABLE, maddr >> 12, 0)
            }
            _ => self.write(si, 0),
        }
    }
}
