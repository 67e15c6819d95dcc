//! The privileged-instruction decoder (`hestia_core::insn`): bytes at a PV guest's faulting RIP.
//! A decoded instruction is at most 15 bytes, within the readable bytes, read in full and no
//! further, and decodes the same from exactly its own bytes; anything else has length 0.
#![no_main]

use core::cell::Cell;

use hestia_core::insn::{Decoded, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let furthest = Cell::new(0usize);
    let insn = decode(|i| {
        furthest.set(furthest.get().max(i + 1));
        data.get(i).copied()
    });
    let len = usize::from(insn.len);
    assert!(furthest.get() <= 15, "fetched byte {}", furthest.get());
    if insn.op == Decoded::Other {
        assert_eq!(len, 0, "{insn:?}");
        return;
    }
    assert!(len > 0 && len <= 15 && len <= data.len(), "{insn:?}");
    assert_eq!(furthest.get(), len, "{insn:?}: read beyond the instruction");
    assert_eq!(decode(|i| data[..len].get(i).copied()), insn);
    match insn.op {
        Decoded::In { size, .. }
        | Decoded::Out { size, .. }
        | Decoded::Ins { size, .. }
        | Decoded::Outs { size, .. } => assert!(matches!(size, 1 | 2 | 4), "{insn:?}"),
        Decoded::ReadCr { cr: r, gpr } | Decoded::WriteCr { cr: r, gpr } => {
            assert!(r < 16 && gpr < 16, "{insn:?}")
        }
        Decoded::ReadDr { dr: r, gpr } | Decoded::WriteDr { dr: r, gpr } => {
            assert!(r < 16 && gpr < 16, "{insn:?}")
        }
        _ => {}
    }
});
