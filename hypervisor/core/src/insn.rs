//! Decoding the instructions a PV guest's privileged-op emulation handles
//! (`shared/xen-abi.md` 4.10): port I/O in all forms, CLI/STI, moves to and from control and
//! debug registers, RDMSR/WRMSR, RDTSC/RDTSCP, CLTS, WBINVD, XSETBV.
//!
//! The bytes come from guest memory, one at a time, so a decoder never reads past the
//! instruction (which may end at the edge of a mapping); anything it does not know is
//! [`Decoded::Other`] and the caller reflects the original exception. The 15-byte architectural
//! limit holds for any prefix sequence.

/// A segment register named by an override prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// ES (also the fixed destination segment of INS).
    Es,
    /// CS.
    Cs,
    /// SS.
    Ss,
    /// DS (the default source of OUTS).
    Ds,
    /// FS.
    Fs,
    /// GS.
    Gs,
}

/// Where an IN or OUT takes its port number from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSource {
    /// An 8-bit immediate.
    Immediate(u8),
    /// The DX register.
    Dx,
}

/// One decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// IN: AL/AX/EAX from the port.
    In {
        /// The port.
        port: PortSource,
        /// Access width in bytes (1, 2 or 4).
        size: u8,
    },
    /// OUT: AL/AX/EAX to the port.
    Out {
        /// The port.
        port: PortSource,
        /// Access width in bytes.
        size: u8,
    },
    /// INS: from port DX to ES:RDI (REP: RCX times).
    Ins {
        /// Access width in bytes.
        size: u8,
        /// REP prefix present.
        rep: bool,
        /// 32-bit addressing (0x67 prefix): RDI/RCX are used as 32-bit registers.
        addr32: bool,
    },
    /// OUTS: from seg:RSI (DS unless overridden) to port DX.
    Outs {
        /// Access width in bytes.
        size: u8,
        /// REP prefix present.
        rep: bool,
        /// 32-bit addressing.
        addr32: bool,
        /// Source segment.
        segment: Segment,
    },
    /// CLI.
    Cli,
    /// STI.
    Sti,
    /// MOV from control register `cr` to general-purpose register `gpr`.
    ReadCr {
        /// Control register number (REX.R extends it).
        cr: u8,
        /// Destination register (0-15, ModRM/REX order).
        gpr: u8,
    },
    /// MOV to control register `cr` from `gpr`.
    WriteCr {
        /// Control register number.
        cr: u8,
        /// Source register.
        gpr: u8,
    },
    /// MOV from debug register `dr` to `gpr`.
    ReadDr {
        /// Debug register number (REX.R extends it: 8-15 do not exist).
        dr: u8,
        /// Destination register.
        gpr: u8,
    },
    /// MOV to debug register `dr` from `gpr`.
    WriteDr {
        /// Debug register number.
        dr: u8,
        /// Source register.
        gpr: u8,
    },
    /// RDMSR.
    Rdmsr,
    /// WRMSR.
    Wrmsr,
    /// RDTSC.
    Rdtsc,
    /// RDTSCP.
    Rdtscp,
    /// CLTS.
    Clts,
    /// WBINVD.
    Wbinvd,
    /// XSETBV.
    Xsetbv,
    /// Anything else.
    Other,
}

/// A decoded instruction and its length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// What it is.
    pub op: Decoded,
    /// Its length, prefixes included.
    pub len: u8,
}

/// The architectural maximum instruction length.
const MAX_LEN: usize = 15;

/// Decodes the instruction whose byte `i` is `fetch(i)` (`None` if unreadable, which ends the
/// decoding as [`Decoded::Other`] unless the instruction was complete).
pub fn decode(mut fetch: impl FnMut(usize) -> Option<u8>) -> Insn {
    let other = Insn {
        op: Decoded::Other,
        len: 0,
    };
    let (mut opsize16, mut addr32, mut rep) = (false, false, false);
    let mut segment = None;
    let mut i = 0;
    // Legacy prefixes, then at most one REX right before the opcode.
    let (rex, opcode) = loop {
        if i >= MAX_LEN {
            return other;
        }
        let Some(b) = fetch(i) else { return other };
        i += 1;
        match b {
            0x66 => opsize16 = true,
            0x67 => addr32 = true,
            0xF3 | 0xF2 => rep = true,
            0xF0 => return other, // LOCK: #UD on all of these
            0x26 => segment = Some(Segment::Es),
            0x2E => segment = Some(Segment::Cs),
            0x36 => segment = Some(Segment::Ss),
            0x3E => segment = Some(Segment::Ds),
            0x64 => segment = Some(Segment::Fs),
            0x65 => segment = Some(Segment::Gs),
            0x40..=0x4F => {
                if i >= MAX_LEN {
                    return other;
                }
                let Some(op) = fetch(i) else { return other };
                i += 1;
                // A REX not directly before the opcode is ignored; another prefix after it
                // would make it so, which no compiler emits: treat as unknown.
                if matches!(op, 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67)
                    || matches!(op, 0xF0 | 0xF2 | 0xF3 | 0x40..=0x4F)
                {
                    return other;
                }
                break (b, op);
            }
            _ => break (0, b),
        }
    };
    let wide = if opsize16 { 2 } else { 4 };
    let mut imm8 = |i: &mut usize| -> Option<u8> {
        if *i >= MAX_LEN {
            return None;
        }
        let b = fetch(*i)?;
        *i += 1;
        Some(b)
    };
    let op = match opcode {
        0xE4..=0xE7 => {
            let Some(port) = imm8(&mut i) else {
                return other;
            };
            let size = if opcode & 1 == 0 { 1 } else { wide };
            let port = PortSource::Immediate(port);
            if opcode & 2 == 0 {
                Decoded::In { port, size }
            } else {
                Decoded::Out { port, size }
            }
        }
        0xEC..=0xEF => {
            let size = if opcode & 1 == 0 { 1 } else { wide };
            let port = PortSource::Dx;
            if opcode & 2 == 0 {
                Decoded::In { port, size }
            } else {
                Decoded::Out { port, size }
            }
        }
        0x6C | 0x6D => Decoded::Ins {
            size: if opcode & 1 == 0 { 1 } else { wide },
            rep,
            addr32,
        },
        0x6E | 0x6F => Decoded::Outs {
            size: if opcode & 1 == 0 { 1 } else { wide },
            rep,
            addr32,
            segment: segment.unwrap_or(Segment::Ds),
        },
        0xFA => Decoded::Cli,
        0xFB => Decoded::Sti,
        0x0F => {
            let Some(second) = imm8(&mut i) else {
                return other;
            };
            match second {
                0x20..=0x23 => {
                    let Some(modrm) = imm8(&mut i) else {
                        return other;
                    };
                    // The CPU treats mod as 11 for these: reg is the control/debug register
                    // (REX.R extends it), rm the general-purpose one (REX.B).
                    let reg = (modrm >> 3) & 7 | (rex & 4) << 1;
                    let gpr = (modrm & 7) | (rex & 1) << 3;
                    match second {
                        0x20 => Decoded::ReadCr { cr: reg, gpr },
                        0x21 => Decoded::ReadDr { dr: reg, gpr },
                        0x22 => Decoded::WriteCr { cr: reg, gpr },
                        _ => Decoded::WriteDr { dr: reg, gpr },
                    }
                }
                0x30 => Decoded::Wrmsr,
                0x31 => Decoded::Rdtsc,
                0x32 => Decoded::Rdmsr,
                0x06 => Decoded::Clts,
                0x09 => Decoded::Wbinvd,
                0x01 => match imm8(&mut i) {
                    Some(0xD1) => Decoded::Xsetbv,
                    Some(0xF9) => Decoded::Rdtscp,
                    _ => return other,
                },
                _ => return other,
            }
        }
        _ => return other,
    };
    Insn { op, len: i as u8 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> Insn {
        decode(|i| bytes.get(i).copied())
    }

    fn op(bytes: &[u8]) -> (Decoded, u8) {
        let d = dec(bytes);
        (d.op, d.len)
    }

    #[test]
    fn port_io() {
        use PortSource::*;
        assert_eq!(
            op(&[0xE4, 0x71]),
            (
                Decoded::In {
                    port: Immediate(0x71),
                    size: 1
                },
                2
            )
        );
        assert_eq!(op(&[0xEF]), (Decoded::Out { port: Dx, size: 4 }, 1));
        assert_eq!(op(&[0x66, 0xED]), (Decoded::In { port: Dx, size: 2 }, 2));
        assert_eq!(
            op(&[0x66, 0xE7, 0x80]),
            (
                Decoded::Out {
                    port: Immediate(0x80),
                    size: 2
                },
                3
            )
        );
        // REX.W does not widen port I/O.
        assert_eq!(op(&[0x48, 0xED]), (Decoded::In { port: Dx, size: 4 }, 2));
    }

    #[test]
    fn string_io() {
        assert_eq!(
            op(&[0xF3, 0x6E]),
            (
                Decoded::Outs {
                    size: 1,
                    rep: true,
                    addr32: false,
                    segment: Segment::Ds
                },
                2
            )
        );
        assert_eq!(
            op(&[0x65, 0x66, 0x6F]),
            (
                Decoded::Outs {
                    size: 2,
                    rep: false,
                    addr32: false,
                    segment: Segment::Gs
                },
                3
            )
        );
        assert_eq!(
            op(&[0x67, 0xF3, 0x6D]),
            (
                Decoded::Ins {
                    size: 4,
                    rep: true,
                    addr32: true
                },
                3
            )
        );
    }

    #[test]
    fn system_instructions() {
        assert_eq!(op(&[0xFA]), (Decoded::Cli, 1));
        assert_eq!(op(&[0xFB]), (Decoded::Sti, 1));
        assert_eq!(op(&[0x0F, 0x32]), (Decoded::Rdmsr, 2));
        assert_eq!(op(&[0x0F, 0x30]), (Decoded::Wrmsr, 2));
        assert_eq!(op(&[0x0F, 0x31]), (Decoded::Rdtsc, 2));
        assert_eq!(op(&[0x0F, 0x01, 0xF9]), (Decoded::Rdtscp, 3));
        assert_eq!(op(&[0x0F, 0x01, 0xD1]), (Decoded::Xsetbv, 3));
        assert_eq!(op(&[0x0F, 0x06]), (Decoded::Clts, 2));
        assert_eq!(op(&[0x0F, 0x09]), (Decoded::Wbinvd, 2));
        // mov %cr0, %rax; mov %rdi, %cr3; mov %r9, %dr7; mov %dr6, %r15; mov %rax, %cr8.
        assert_eq!(
            op(&[0x0F, 0x20, 0xC0]),
            (Decoded::ReadCr { cr: 0, gpr: 0 }, 3)
        );
        assert_eq!(
            op(&[0x0F, 0x22, 0xDF]),
            (Decoded::WriteCr { cr: 3, gpr: 7 }, 3)
        );
        assert_eq!(
            op(&[0x41, 0x0F, 0x23, 0xF9]),
            (Decoded::WriteDr { dr: 7, gpr: 9 }, 4)
        );
        assert_eq!(
            op(&[0x41, 0x0F, 0x21, 0xF7]),
            (Decoded::ReadDr { dr: 6, gpr: 15 }, 4)
        );
        assert_eq!(
            op(&[0x44, 0x0F, 0x22, 0xC0]),
            (Decoded::WriteCr { cr: 8, gpr: 0 }, 4)
        );
    }

    #[test]
    fn refusals() {
        // Unknown opcodes, LOCK, truncated instructions, and prefix runs past 15 bytes.
        assert_eq!(dec(&[0x90]).op, Decoded::Other);
        assert_eq!(dec(&[0xF0, 0xEC]).op, Decoded::Other);
        assert_eq!(dec(&[0xE4]).op, Decoded::Other);
        assert_eq!(dec(&[0x0F]).op, Decoded::Other);
        assert_eq!(dec(&[0x0F, 0x20]).op, Decoded::Other);
        assert_eq!(dec(&[0x0F, 0x01, 0xD0]).op, Decoded::Other);
        assert_eq!(dec(&[0x48, 0x66, 0xEC]).op, Decoded::Other);
        let mut long = [0x66u8; 15];
        long[14] = 0xED;
        assert_eq!(
            dec(&long).op,
            Decoded::In {
                port: PortSource::Dx,
                size: 2
            }
        );
        let mut too_long = [0x66u8; 16];
        too_long[15] = 0xED;
        assert_eq!(dec(&too_long).op, Decoded::Other);
    }

    #[test]
    fn never_reads_past_the_instruction() {
        // Every byte sequence decodes without touching bytes beyond its reported length.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut bytes = [0u8; 16];
            for b in &mut bytes {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                *b = [0x66, 0x67, 0xF3, 0x0F, 0xEC, 0x41, 0x20, 0x01, rng as u8][rng as usize % 9];
            }
            let mut furthest = 0;
            let d = decode(|i| {
                furthest = furthest.max(i + 1);
                bytes.get(i).copied()
            });
            assert!(furthest <= MAX_LEN);
            if d.op != Decoded::Other {
                assert_eq!(furthest, usize::from(d.len), "{bytes:02x?}");
            }
        }
    }
}
