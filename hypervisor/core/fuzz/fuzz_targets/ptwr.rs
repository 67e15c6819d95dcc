//! The writable-page-table store decoder and emulation (`hestia_core::ptwr`): bytes at a PV
//! guest's faulting RIP and any register and memory values. A decoded store is at most 15
//! bytes, read in full and no further; applying it changes only its own bytes and the
//! arithmetic flags; merging a store into an entry changes only the bytes written.
#![no_main]

use core::cell::Cell;

use hestia_core::ptwr::{Source, StoreOp, apply, decode, flags, merge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, u64, u64, u64, u8, Vec<u8>)| {
    let (old, src, acc, rflags, offset, bytes) = input;
    let furthest = Cell::new(0usize);
    let Some(store) = decode(|i| {
        furthest.set(furthest.get().max(i + 1));
        bytes.get(i).copied()
    }) else {
        assert!(furthest.get() <= 15);
        return;
    };
    let len = usize::from(store.len);
    assert!(len <= 15 && len <= bytes.len(), "{store:?}");
    assert_eq!(
        furthest.get(),
        len,
        "{store:?}: read beyond the instruction"
    );
    assert_eq!(decode(|i| bytes[..len].get(i).copied()), Some(store));
    assert!(matches!(store.size, 1 | 2 | 4 | 8), "{store:?}");
    if let Source::Reg { n, high_byte } = store.src {
        assert!(n < 16 && (!high_byte || (4..=7).contains(&n)), "{store:?}");
    }

    let mask = u64::MAX >> (64 - 8 * u32::from(store.size));
    let a = apply(&store, old, src, acc, rflags);
    assert_eq!(a.new & !mask, 0, "{store:?}: result wider than the operand");
    assert_eq!(
        a.rflags & !flags::ARITH,
        rflags & !flags::ARITH,
        "{store:?}"
    );
    match store.op {
        StoreOp::Mov | StoreOp::Xchg => assert_eq!(a.new, src & mask),
        StoreOp::Or => assert_eq!(a.new, (old | src) & mask),
        StoreOp::And => assert_eq!(a.new, old & src & mask),
        StoreOp::Cmpxchg => {
            let hit = acc & mask == old & mask;
            assert_eq!(a.new, if hit { src & mask } else { old & mask });
            assert_eq!(a.rflags & flags::ZF != 0, hit, "{store:?}: ZF");
        }
        StoreOp::BitSet | StoreOp::BitReset | StoreOp::BitComplement => {
            assert!(((a.new ^ old) & mask).count_ones() <= 1, "{store:?}");
        }
    }

    let offset = offset % 9;
    match merge(old, offset, store.size, a.new) {
        None => assert!(offset + store.size > 8),
        Some(entry) => {
            let shift = 8 * u32::from(offset);
            let written = mask << shift;
            assert_eq!(entry & !written, old & !written, "bytes outside the store");
            assert_eq!((entry & written) >> shift, a.new, "bytes of the store");
        }
    }
});
