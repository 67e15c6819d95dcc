//! Emulating a guest's direct write to one of its own page tables (Xen's "writable page
//! tables" assist, `shared/xen-abi.md` 5.5).
//!
//! PV kernels keep their L1 tables mapped read-only but still store to them with ordinary
//! instructions (Linux: `native_set_pte`, `pte_clear`, `xchg` in `ptep_get_and_clear`,
//! `lock and`/`btr` on the accessed and RW bits). The store faults; the hypervisor decodes it
//! here, computes the new entry from the old one, validates that like an `mmu_update`, writes it
//! and skips the instruction. Only stores whose destination is the faulting address matter, so
//! the decoder needs the instruction's length, operation, width and source, not its address.

/// What a store does to its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// MOV: destination := source.
    Mov,
    /// XCHG: destination := source, register := old destination.
    Xchg,
    /// CMPXCHG: if accumulator == destination then destination := source, else
    /// accumulator := destination; flags as CMP.
    Cmpxchg,
    /// OR with the source; flags as OR.
    Or,
    /// AND with the source; flags as AND.
    And,
    /// BTS/BTR/BTC of bit `source % width`: CF := the old bit.
    BitSet,
    /// Bit reset.
    BitReset,
    /// Bit complement.
    BitComplement,
}

/// The source operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// General-purpose register (0-15 ModRM/REX order). `high_byte` selects AH/CH/DH/BH for a
    /// byte operation without REX and registers 4-7.
    Reg {
        /// Register number.
        n: u8,
        /// AH..BH instead of SPL..DIL.
        high_byte: bool,
    },
    /// An immediate, already sign-extended to 64 bits where the instruction does so.
    Imm(u64),
}

/// A decoded store to memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Store {
    /// The operation.
    pub op: StoreOp,
    /// Operand width in bytes (1, 2, 4 or 8).
    pub size: u8,
    /// The source.
    pub src: Source,
    /// Instruction length.
    pub len: u8,
}

const MAX_LEN: usize = 15;

/// Decodes a store whose byte `i` is `fetch(i)`; `None` for anything else (including
/// register-destination forms).
pub fn decode(mut fetch: impl FnMut(usize) -> Option<u8>) -> Option<Store> {
    let mut i = 0usize;
    let mut next = || -> Option<u8> {
        if i >= MAX_LEN {
            return None;
        }
        let b = fetch(i)?;
        i += 1;
        Some(b)
    };
    let (mut opsize16, mut rex) = (false, 0u8);
    let mut b = next()?;
    loop {
        match b {
            0x66 => opsize16 = true,
            0xF0 | 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 => {}
            _ => break,
        }
        b = next()?;
    }
    if b & 0xF0 == 0x40 {
        rex = b;
        b = next()?;
    }
    let wide: u8 = if rex & 8 != 0 {
        8
    } else if opsize16 {
        2
    } else {
        4
    };
    let two_byte = b == 0x0F;
    let opcode = if two_byte { next()? } else { b };
    let modrm = next()?;
    if modrm >> 6 == 3 {
        return None; // register destination
    }
    // Skip SIB and displacement.
    let (mode, rm) = (modrm >> 6, modrm & 7);
    let sib_base = if rm == 4 { Some(next()? & 7) } else { None };
    let disp = match (mode, rm, sib_base) {
        (0, 5, None) => 4,
        (0, _, Some(5)) => 4,
        (0, _, _) => 0,
        (1, _, _) => 1,
        _ => 4,
    };
    for _ in 0..disp {
        next()?;
    }
    let reg = (modrm >> 3) & 7;
    let reg_src = |byte: bool| Source::Reg {
        n: reg | (rex & 4) << 1,
        high_byte: byte && rex == 0 && reg >= 4,
    };
    let mut imm = |n: u8, size: u8| -> Option<u64> {
        let mut v = 0u64;
        for k in 0..n {
            v |= u64::from(next()?) << (8 * k);
        }
        // Sign-extend immediates narrower than the operand.
        let bits = 8 * u32::from(n);
        if n < size && n < 8 && v >> (bits - 1) & 1 == 1 {
            v |= u64::MAX << bits;
        }
        Some(v)
    };
    let (op, size, src) = match (two_byte, opcode) {
        (false, 0x88) => (StoreOp::Mov, 1, reg_src(true)),
        (false, 0x89) => (StoreOp::Mov, wide, reg_src(false)),
        (false, 0x86) => (StoreOp::Xchg, 1, reg_src(true)),
        (false, 0x87) => (StoreOp::Xchg, wide, reg_src(false)),
        (false, 0x08) => (StoreOp::Or, 1, reg_src(true)),
        (false, 0x09) => (StoreOp::Or, wide, reg_src(false)),
        (false, 0x20) => (StoreOp::And, 1, reg_src(true)),
        (false, 0x21) => (StoreOp::And, wide, reg_src(false)),
        (false, 0xC6) if reg == 0 => (StoreOp::Mov, 1, Source::Imm(imm(1, 1)?)),
        (false, 0xC7) if reg == 0 => {
            let n = wide.min(4);
            (StoreOp::Mov, wide, Source::Imm(imm(n, wide)?))
        }
        (false, 0x80 | 0x81 | 0x83) if reg == 1 || reg == 4 => {
            let op = if reg == 1 { StoreOp::Or } else { StoreOp::And };
            let size = if opcode == 0x80 { 1 } else { wide };
            let n = match opcode {
                0x81 => size.min(4),
                _ => 1,
            };
            (op, size, Source::Imm(imm(n, size)?))
        }
        (true, 0xB0) => (StoreOp::Cmpxchg, 1, reg_src(true)),
        (true, 0xB1) => (StoreOp::Cmpxchg, wide, reg_src(false)),
        (true, 0xBA) if reg >= 5 => {
            let op =
                [StoreOp::BitSet, StoreOp::BitReset, StoreOp::BitComplement][usize::from(reg - 5)];
            (op, wide, Source::Imm(u64::from(imm(1, 1)? as u8)))
        }
        _ => return None,
    };
    Some(Store {
        op,
        size,
        src,
        len: i as u8,
    })
}

/// RFLAGS bits an emulated store may change.
pub mod flags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Parity.
    pub const PF: u64 = 1 << 2;
    /// Adjust.
    pub const AF: u64 = 1 << 4;
    /// Zero.
    pub const ZF: u64 = 1 << 6;
    /// Sign.
    pub const SF: u64 = 1 << 7;
    /// Overflow.
    pub const OF: u64 = 1 << 11;
    /// All of them.
    pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
}

/// The outcome of applying a store to the old memory value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The new memory value (of `size` bytes, zero-extended).
    pub new: u64,
    /// RFLAGS after the instruction (only arithmetic bits change).
    pub rflags: u64,
    /// A register to write back: (register number, high byte, value of `size` bytes) for XCHG,
    /// and for CMPXCHG that failed (the accumulator).
    pub reg_write: Option<(u8, bool, u64)>,
}

fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(size))) - 1
    }
}

fn logic_flags(rflags: u64, r: u64, size: u8) -> u64 {
    let sign = 1u64 << (8 * u32::from(size) - 1);
    let mut f = rflags & !flags::ARITH;
    if r == 0 {
        f |= flags::ZF;
    }
    if r & sign != 0 {
        f |= flags::SF;
    }
    if (r as u8).count_ones().is_multiple_of(2) {
        f |= flags::PF;
    }
    f
}

/// Applies `s` to `old` (the destination's `s.size`-byte value) with source value `src`
/// (register contents or immediate, any width) and accumulator `acc` (RAX).
pub fn apply(s: &Store, old: u64, src: u64, acc: u64, rflags: u64) -> Applied {
    let m = mask(s.size);
    let (old, src, acc) = (old & m, src & m, acc & m);
    let keep = Applied {
        new: old,
        rflags,
        reg_write: None,
    };
    let (n, high) = match s.src {
        Source::Reg { n, high_byte } => (n, high_byte),
        Source::Imm(_) => (0, false),
    };
    match s.op {
        StoreOp::Mov => Applied { new: src, ..keep },
        StoreOp::Xchg => Applied {
            new: src,
            reg_write: Some((n, high, old)),
            ..keep
        },
        StoreOp::Or => {
            let r = old | src;
            Applied {
                new: r,
                rflags: logic_flags(rflags, r, s.size),
                ..keep
            }
        }
        StoreOp::And => {
            let r = old & src;
            Applied {
                new: r,
                rflags: logic_flags(rflags, r, s.size),
                ..keep
            }
        }
        StoreOp::Cmpxchg => {
            // Flags of CMP acc, old (acc - old).
            let r = acc.wrapping_sub(old) & m;
            let sign = 1u64 << (8 * u32::from(s.size) - 1);
            let mut f = logic_flags(rflags, r, s.size);
            if acc < old {
                f |= flags::CF;
            }
            if (acc ^ old) & (acc ^ r) & sign != 0 {
                f |= flags::OF;
            }
            if (acc ^ old ^ r) & 0x10 != 0 {
                f |= flags::AF;
            }
            if acc == old {
                Applied {
                    new: src,
                    rflags: f,
                    reg_write: None,
                }
            } else {
                Applied {
                    new: old,
                    rflags: f,
                    reg_write: Some((0, false, old)),
                }
            }
        }
        StoreOp::BitSet | StoreOp::BitReset | StoreOp::BitComplement => {
            let bit = 1u64 << (src % (8 * u64::from(s.size)));
            let cf = if old & bit != 0 { flags::CF } else { 0 };
            let new = match s.op {
                StoreOp::BitSet => old | bit,
                StoreOp::BitReset => old & !bit,
                _ => old ^ bit,
            };
            Applied {
                new,
                rflags: (rflags & !flags::CF) | cf,
                reg_write: None,
            }
        }
    }
}

/// Merges a `size`-byte value written at byte `offset` of an 8-byte entry into `entry`; `None`
/// if the write would cross the entry.
pub fn merge(entry: u64, offset: u8, size: u8, value: u64) -> Option<u64> {
    if u32::from(offset) + u32::from(size) > 8 {
        return None;
    }
    let shift = 8 * u32::from(offset);
    let m = mask(size) << shift;
    Some((entry & !m) | ((value << shift) & m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> Option<Store> {
        decode(|i| bytes.get(i).copied())
    }

    fn reg(n: u8) -> Source {
        Source::Reg {
            n,
            high_byte: false,
        }
    }

    #[test]
    fn linux_pte_stores() {
        // mov %rbp,(%rbx) (xen_set_pte_init)
        assert_eq!(
            dec(&[0x48, 0x89, 0x2b]),
            Some(Store {
                op: StoreOp::Mov,
                size: 8,
                src: reg(5),
                len: 3
            })
        );
        // movq $0x0,(%rdi) (pte_clear)
        assert_eq!(
            dec(&[0x48, 0xc7, 0x07, 0, 0, 0, 0]),
            Some(Store {
                op: StoreOp::Mov,
                size: 8,
                src: Source::Imm(0),
                len: 7
            })
        );
        // xchg %rax,(%rdi) (ptep_get_and_clear)
        assert_eq!(
            dec(&[0x48, 0x87, 0x07]).map(|s| (s.op, s.size, s.len)),
            Some((StoreOp::Xchg, 8, 3))
        );
        // lock btr $5,(%rdi) (test_and_clear_bit of _PAGE_ACCESSED)
        assert_eq!(
            dec(&[0xf0, 0x48, 0x0f, 0xba, 0x37, 0x05]),
            Some(Store {
                op: StoreOp::BitReset,
                size: 8,
                src: Source::Imm(5),
                len: 6
            })
        );
        // lock andb $0xfd,(%rdi) (clear_bit of _PAGE_RW)
        assert_eq!(
            dec(&[0xf0, 0x80, 0x27, 0xfd]),
            Some(Store {
                op: StoreOp::And,
                size: 1,
                src: Source::Imm(0xfd),
                len: 4
            })
        );
        // lock cmpxchg %rdx,0x8(%r12,%rax,8)
        assert_eq!(
            dec(&[0xf0, 0x49, 0x0f, 0xb1, 0x54, 0xc4, 0x08]).map(|s| (s.op, s.size, s.src, s.len)),
            Some((StoreOp::Cmpxchg, 8, reg(2), 7))
        );
        // mov %r9,0x12345678(%rip): REX.R extends the source.
        assert_eq!(
            dec(&[0x4c, 0x89, 0x0d, 0x78, 0x56, 0x34, 0x12]).map(|s| (s.src, s.len)),
            Some((reg(9), 7))
        );
        // movl $-1,(%rax): 32-bit store; and 0x83 /4 with a sign-extended imm8 on 64 bits.
        assert_eq!(
            dec(&[0xc7, 0x00, 0xff, 0xff, 0xff, 0xff]).map(|s| (s.size, s.src)),
            Some((4, Source::Imm(0xffff_ffff)))
        );
        assert_eq!(
            dec(&[0x48, 0x83, 0x20, 0xfe]).map(|s| (s.op, s.src)),
            Some((StoreOp::And, Source::Imm(u64::MAX - 1)))
        );
    }

    #[test]
    fn not_stores() {
        assert_eq!(dec(&[0x48, 0x89, 0xc3]), None, "register destination");
        assert_eq!(dec(&[0x48, 0x8b, 0x03]), None, "a load");
        assert_eq!(dec(&[0x48, 0x89]), None, "truncated");
        assert_eq!(dec(&[0xc7, 0x08, 0, 0, 0, 0]), None, "C7 /1 is not MOV");
        assert_eq!(dec(&[0x0f, 0xba, 0x27, 3]), None, "BT /4 does not write");
        assert_eq!(dec(&[0x66; 20]), None, "prefixes forever");
    }

    #[test]
    fn semantics() {
        let st = |op, size, src| Store {
            op,
            size,
            src,
            len: 3,
        };
        let x = st(StoreOp::Xchg, 8, reg(0));
        assert_eq!(
            apply(&x, 0x1111, 0x2222, 0, 0),
            Applied {
                new: 0x2222,
                rflags: 0,
                reg_write: Some((0, false, 0x1111))
            }
        );
        let c = st(StoreOp::Cmpxchg, 8, reg(2));
        let ok = apply(&c, 5, 9, 5, 0);
        assert_eq!((ok.new, ok.reg_write), (9, None));
        assert!(ok.rflags & flags::ZF != 0);
        let fail = apply(&c, 5, 9, 7, flags::ZF);
        assert_eq!((fail.new, fail.reg_write), (5, Some((0, false, 5))));
        assert!(fail.rflags & flags::ZF == 0);
        let btr = st(StoreOp::BitReset, 8, Source::Imm(5));
        let r = apply(&btr, 0x27, 5, 0, 0);
        assert_eq!((r.new, r.rflags & flags::CF), (0x07, flags::CF));
        let r = apply(&btr, 0x07, 5, 0, flags::CF);
        assert_eq!((r.new, r.rflags & flags::CF), (0x07, 0));
        let andb = st(StoreOp::And, 1, Source::Imm(0xfd));
        assert_eq!(apply(&andb, 0x67, 0xfd, 0, 0).new, 0x65);
        assert_eq!(
            merge(0x8000_0000_1234_5067, 0, 1, 0x65),
            Some(0x8000_0000_1234_5065)
        );
        assert_eq!(
            merge(0x1111_2222_3333_4444, 4, 4, 0xaaaa_bbbb),
            Some(0xaaaa_bbbb_3333_4444)
        );
        assert_eq!(merge(0, 6, 4, 1), None);
    }
}
