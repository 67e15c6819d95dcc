//! memory_op: reservation figures, the M2P's location, the machine memory map (dom0), and a
//! balloon round trip (decrease a page nobody maps, refuse a mapped one, populate it back);
//! multicall: ordered results, errors do not stop the batch, nesting refused.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::memory::{E820Entry, MachphysMapping, MemoryDomain, MemoryMap, cmd};
use hestia_guests::xen_abi::xen::{DOMID_SELF, MACH2PHYS_VIRT_START, StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, current_reservation, hypercall, m2p, memory_op, pfn_to_mfn, println,
    single_extent,
};

fn test(si: &StartInfo) -> Verdict {
    let mut failed = false;
    let mut me = MemoryDomain { domid: DOMID_SELF };
    let cur = current_reservation();
    check!(
        failed,
        cur as u64 == si.nr_pages,
        "current_reservation {cur} != nr_pages {}",
        si.nr_pages
    );
    check!(
        failed,
        memory_op(cmd::MAXIMUM_RESERVATION, &mut me) as u64 >= si.nr_pages,
        "maximum_reservation"
    );
    let max_gpfn = memory_op(cmd::MAXIMUM_GPFN, &mut me);
    check!(failed, max_gpfn >= 0, "maximum_gpfn returned {max_gpfn}");
    let max_ram = hypercall(nr::MEMORY_OP, u64::from(cmd::MAXIMUM_RAM_PAGE), 0, 0, 0, 0) as u64;
    check!(
        failed,
        (0..si.nr_pages).all(|p| pfn_to_mfn(si, p) < max_ram),
        "an MFN beyond maximum_ram_page {max_ram:#x}"
    );

    let mut mapping = MachphysMapping::default();
    check!(
        failed,
        memory_op(cmd::MACHPHYS_MAPPING, &mut mapping) == 0
            && mapping.v_start == MACH2PHYS_VIRT_START
            && mapping.max_mfn + 1 >= max_ram,
        "machphys_mapping {mapping:x?}"
    );
    check!(
        failed,
        hypercall(nr::MEMORY_OP, u64::from(cmd::MEMORY_MAP), 0x200000, 0, 0, 0) == -38,
        "memory_map must be -ENOSYS when none was set"
    );

    let mut e820 = [E820Entry::default(); 64];
    let mut map = MemoryMap {
        nr_entries: 64,
        buffer: e820.as_mut_ptr() as u64,
        ..Default::default()
    };
    check!(
        failed,
        memory_op(cmd::MACHINE_MEMORY_MAP, &mut map) == 0,
        "machine_memory_map"
    );
    let n = map.nr_entries as usize;
    let ram: u64 = e820[..n.min(64)]
        .iter()
        .filter(|e| e.r#type == 1)
        .map(|e| e.size)
        .sum();
    check!(
        failed,
        n > 1 && ram > si.nr_pages * 4096,
        "host map: {n} entries, {ram} bytes of RAM"
    );
    let mut small = MemoryMap {
        nr_entries: 1,
        ..map
    };
    check!(
        failed,
        memory_op(cmd::MACHINE_MEMORY_MAP, &mut small) == -22,
        "a too-small buffer must be -EINVAL"
    );
    // In the gaps of the host map, a reserved entry for what dom0 may not map: the MSI and
    // LAPIC window 0xfee00000-0xfeefffff at least, as Xen 4.17 gives it.
    let msi = e820[..n.min(64)]
        .iter()
        .any(|e| e.r#type == 2 && e.addr <= 0xfee0_0000 && e.addr + e.size >= 0xfef0_0000);
    check!(failed, msi, "no reserved entry covers the MSI window");
    // A null buffer asks for the count; a buffer of exactly that many entries is refused (Xen
    // keeps a spare slot), one more is enough.
    let mut count = MemoryMap {
        nr_entries: 0,
        buffer: 0,
        ..map
    };
    let r = memory_op(cmd::MACHINE_MEMORY_MAP, &mut count);
    check!(
        failed,
        r == 0 && count.nr_entries as usize == n,
        "count query: {r}, {} entries (the map has {n})",
        count.nr_entries
    );
    let mut exact = MemoryMap {
        nr_entries: count.nr_entries,
        ..map
    };
    let r = memory_op(cmd::MACHINE_MEMORY_MAP, &mut exact);
    check!(failed, r == -22, "a buffer of exactly {n} entries: {r}");
    let mut spare = MemoryMap {
        nr_entries: count.nr_entries + 1,
        ..map
    };
    let r = memory_op(cmd::MACHINE_MEMORY_MAP, &mut spare);
    check!(
        failed,
        r == 0 && spare.nr_entries as usize == n,
        "a buffer of {} entries: {r}",
        n + 1
    );

    // Balloon: PFN 2000 lies beyond the initial mapping, so nothing maps its frame.
    let pfn = 2000;
    let mut mfn = pfn_to_mfn(si, pfn);
    let mut r = single_extent(&mut mfn);
    check!(
        failed,
        memory_op(cmd::DECREASE_RESERVATION, &mut r) == 1,
        "decrease_reservation of an unused frame"
    );
    check!(
        failed,
        current_reservation() as u64 == si.nr_pages - 1,
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
    let mut r = single_extent(&mut slot);
    check!(
        failed,
        memory_op(cmd::POPULATE_PHYSMAP, &mut r) == 1,
        "populate_physmap"
    );
    check!(
        failed,
        m2p(slot) == pfn,
        "the M2P of the new frame {slot:#x} is {:#x}",
        m2p(slot)
    );
    let mut extra = 0u64;
    let mut r = single_extent(&mut extra);
    check!(
        failed,
        memory_op(cmd::INCREASE_RESERVATION, &mut r) == 0,
        "increase_reservation beyond dom0's maximum (dom0_mem=...,max:)"
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
