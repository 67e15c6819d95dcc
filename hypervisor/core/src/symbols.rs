//! Symbol lookup in an ELF64 symbol table, for symbolised backtraces.
//!
//! GRUB loads the hypervisor's `.symtab` and `.strtab` sections (not part of any segment) and
//! reports their physical addresses in the multiboot2 ELF-sections tag; the kernel hands the two
//! byte slices here. Layout: ELF-64 Object File Format, `Elf64_Sym` (24 bytes: name u32, info u8,
//! other u8, shndx u16, value u64, size u64). Everything is bounds-checked: the tables come from
//! memory a bootloader filled.

const SYM_SIZE: usize = 24;
const STT_FUNC: u8 = 2;

/// A symbol table and its string table.
#[derive(Clone, Copy, Debug)]
pub struct SymbolTable<'a> {
    symtab: &'a [u8],
    strtab: &'a [u8],
}

/// A resolved address: the enclosing function and the offset into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// Raw (possibly mangled) symbol name.
    pub name: &'a str,
    /// `addr - symbol value`.
    pub offset: u64,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

impl<'a> SymbolTable<'a> {
    /// Wraps the raw sections.
    pub const fn new(symtab: &'a [u8], strtab: &'a [u8]) -> Self {
        Self { symtab, strtab }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.symtab.len() / SYM_SIZE
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds the function containing `addr`: the function symbol with the greatest value not
    /// above `addr` whose size covers it (or, for size-0 symbols, the nearest one below).
    pub fn resolve(&self, addr: u64) -> Option<Resolved<'a>> {
        let mut best: Option<(u64, u64, u32)> = None;
        for i in 0..self.len() {
            let o = i * SYM_SIZE;
            let (Some(name), Some(info), Some(shndx), Some(value), Some(size)) = (
                u32_at(self.symtab, o),
                self.symtab.get(o + 4),
                u16_at(self.symtab, o + 6),
                u64_at(self.symtab, o + 8),
                u64_at(self.symtab, o + 16),
            ) else {
                break;
            };
            if info & 0xf != STT_FUNC || shndx == 0 || value > addr {
                continue;
            }
            if size != 0 && addr - value >= size {
                continue;
            }
            if best.is_none_or(|(v, s, _)| value > v || (value == v && s == 0)) {
                best = Some((value, size, name));
            }
        }
        let (value, _, name) = best?;
        Some(Resolved {
            name: self.name_at(name as usize)?,
            offset: addr - value,
        })
    }

    fn name_at(&self, off: usize) -> Option<&'a str> {
        let tail = self.strtab.get(off..)?;
        let end = tail.iter().position(|&c| c == 0)?;
        core::str::from_utf8(&tail[..end]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn sym(name: u32, info: u8, shndx: u16, value: u64, size: u64) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&name.to_le_bytes());
        v.push(info);
        v.push(0);
        v.extend_from_slice(&shndx.to_le_bytes());
        v.extend_from_slice(&value.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v
    }

    #[test]
    fn resolves_enclosing_function() {
        let strtab = b"\0kmain\0trap_entry\0data\0";
        let mut symtab = sym(0, 0, 0, 0, 0);
        symtab.extend(sym(1, STT_FUNC, 1, 0x1000, 0x100));
        symtab.extend(sym(7, STT_FUNC, 1, 0x1100, 0x20));
        symtab.extend(sym(18, 1, 2, 0x1108, 8)); // an object inside: not a function
        let t = SymbolTable::new(&symtab, strtab);
        assert_eq!(
            t.resolve(0x1010),
            Some(Resolved {
                name: "kmain",
                offset: 0x10
            })
        );
        assert_eq!(
            t.resolve(0x1108),
            Some(Resolved {
                name: "trap_entry",
                offset: 8
            })
        );
        assert_eq!(
            t.resolve(0x1120),
            None,
            "past the end of every sized function"
        );
        assert_eq!(t.resolve(0xfff), None);
    }

    #[test]
    fn hostile_tables_do_not_panic() {
        let symtab = sym(9999, STT_FUNC, 1, 0, 0);
        let t = SymbolTable::new(&symtab, b"abc");
        assert_eq!(t.resolve(5), None);
        let t = SymbolTable::new(&symtab[..20], b"");
        assert_eq!(t.resolve(5), None);
    }
}
