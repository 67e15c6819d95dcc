//! Symbol lookup (`hestia_core::symbols`): a `.symtab` and `.strtab` as GRUB loaded them. A
//! resolved address names a string of the string table, and its offset is never beyond the
//! address.
#![no_main]

use hestia_core::symbols::SymbolTable;
use hestia_core_fuzz::assert_within;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, u16, &[u8])| {
    let (addr, split, data) = input;
    let (symtab, strtab) = data.split_at(usize::from(split).min(data.len()));
    let table = SymbolTable::new(symtab, strtab);
    if let Some(r) = table.resolve(addr) {
        assert_within(strtab, r.name.as_bytes());
        assert!(r.offset <= addr, "{r:?} for {addr:#x}");
        assert!(!r.name.contains('\0'), "{r:?}");
    }
});
