//! memory_op: reservation figures, the M2P's location, the machine memory map (dom0), and a
//! balloon round trip (decrease a page nobody maps, refuse a mapped one, populate it back);
//! multicall: ordered results, errors do not stop the batch, nesting refused.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::xen::{DOMID_SELF, MACH2PHYS_VIRT_START, StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, hypercall, m2p, pfn_to_mfn, println};

fn memop(cmd: u64, arg: u64) -> i64 {
    hypercall(nr::MEMORY_OP, cmd, arg, 0, 0, 0)
}

/// `xen_memory_reservation` for one extent of order 0 at `list`.
fn reservation(list: &mut u64) -> [u64; 4] {
    [list as *mut u64 as u64, 1, 0, u64::from(DOMID_SELF)]
}

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    let me = DOMID_SELF;
    let cur = memop(3, &me as *const u16 as u64);
    check!(
        failed,
        cur as u64 == si.nr_pages,
        "current_reservation {cur} != nr_pages {}",
        si.nr_pages
    );
    check!(
        failed,
        memop(4, &me as *const u16 as u64) as u64 >= si.nr_pages,
        "maximum_reservation"
    );
    let max_gpfn = memop(14, &me as *const u16 as u64);
    check!(failed, max_gpfn >= 0, "maximum_gpfn returned {max_gpfn}");
    let max_ram = memop(2, 0) as u64;
    check!(
        failed,
        (0..si.nr_pages).all(|p| pfn_to_mfn(si, p) < max_ram),
        "an MFN beyond maximum_ram_page {max_ram:#x}"
    );

    let mut mapping = [0u64; 3];
    check!(
        failed,
        memop(12, mapping.as_mut_ptr() as u64) == 0
            && mapping[0] == MACH2PHYS_VIRT_START
            && mapping[2] + 1 >= max_ram,
        "machphys_mapping {mapping:x?}"
    );
    check!(
        failed,
        memop(9, 0x200000) == -38,
        "memory_map must be -ENOSYS when none was set"
    );

    let mut e820 = [0u8; 20 * 64];
    let mut map = [64u64, e820.as_mut_ptr() as u64];
    check!(
        failed,
        memop(10, map.as_mut_ptr() as u64) == 0,
        "machine_memory_map"
    );
    let n = (map[0] & 0xffff_ffff) as usize;
    let ram: u64 = (0..n.min(64))
        .filter(|i| {
            u32::from_le_bytes(e820[i * 20 + 16..i * 20 + 20].try_into().unwrap_or([0; 4])) == 1
        })
        .map(|i| u64::from_le_bytes(e820[i * 20 + 8..i * 20 + 16].try_into().unwrap_or([0; 8])))
        .sum();
    check!(
        failed,
        n > 1 && ram > si.nr_pages * 4096,
        "host map: {n} entries, {ram} bytes of RAM"
    );
    let mut small = [1u64, e820.as_mut_ptr() as u64];
    check!(
        failed,
        memop(10, small.as_mut_ptr() as u64) == -22,
        "a too-small buffer must be -EINVAL"
    );

    // Balloon: PFN 2000 lies beyond the initial mapping, so nothing maps its frame.
    let pfn = 2000;
    let mut mfn = pfn_to_mfn(si, pfn);
    let r = reservation(&mut mfn);
    check!(
        failed,
        memop(1, r.as_ptr() as u64) == 1,
        "decrease_reservation of an unused frame"
    );
    check!(
        failed,
        memop(3, &me as *const u16 as u64) as u64 == si.nr_pages - 1,
        "tot_pages after decrease"
    );
    let r2 = hypercall(nr::UPDATE_VA_MAPPING, 0x3ff000, (mfn << 12) | 0x25, 2, 0, 0);
    check!(
        failed,
        r2 == -16,
        "mapped a frame given back ({r2}), expected -EBUSY as Xen"
    );
    // Giving back a frame that is still mapped: Xen accepts and frees it when the last mapping
    // goes; Hestia refuses it (docs/abi-status.md). Not asserted here.
    let mut slot = pfn;
    let r = reservation(&mut slot);
    check!(failed, memop(6, r.as_ptr() as u64) == 1, "populate_physmap");
    check!(
        failed,
        m2p(slot) == pfn,
        "the M2P of the new frame {slot:#x} is {:#x}",
        m2p(slot)
    );
    let mut extra = 0u64;
    let r = reservation(&mut extra);
    check!(
        failed,
        memop(0, r.as_ptr() as u64) == 0,
        "increase_reservation beyond dom0's maximum"
    );

    // multicall
    #[repr(C)]
    struct Entry {
        op: u64,
        result: u64,
        args: [u64; 6],
    }
    let mut calls = [
        Entry {
            op: u64::from(nr::XEN_VERSION),
            result: 1,
            args: [0; 6],
        },
        Entry {
            op: 38,
            result: 1,
            args: [0; 6],
        },
        Entry {
            op: u64::from(nr::XEN_VERSION),
            result: 1,
            args: [7, 0, 0, 0, 0, 0],
        },
        Entry {
            op: u64::from(nr::MULTICALL),
            result: 1,
            args: [0; 6],
        },
    ];
    let r = hypercall(nr::MULTICALL, calls.as_mut_ptr() as u64, 4, 0, 0, 0);
    let res: [i64; 4] = core::array::from_fn(|i| calls[i].result as i64);
    check!(
        failed,
        r == 0 && res == [4 << 16 | 17, -38, 4096, -22],
        "multicall returned {r}, results {res:?}"
    );
    check!(
        failed,
        hypercall(nr::MULTICALL, 0xffff_8300_0000_0000, 1, 0, 0, 0) == -14,
        "multicall list in the hypervisor"
    );
    println!("host map {n} entries, {} MiB RAM", ram >> 20);
    if failed {
        Verdict::Failure("memory_op / multicall")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
