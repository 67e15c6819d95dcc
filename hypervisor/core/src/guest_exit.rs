//! How Hestia returns to a guest: SYSRETQ where it has exactly IRETQ's effect.
//!
//! Every return to a guest may use IRETQ, which loads RIP, CS, RFLAGS, RSP and SS from the
//! frame (and whose faults Hestia turns into the guest's own exceptions). SYSRETQ is much
//! cheaper but loads less: RIP from RCX, RFLAGS from R11 (some bits cleared), fixed CS and SS
//! selectors from the STAR MSR with flat attributes, and it raises #GP in ring 0 (on Intel)
//! for a non-canonical RCX, after the guest's RSP is loaded (CVE-2012-0217, XSA-7). Hestia
//! therefore uses it only for a frame on which both instructions give the same guest state:
//! the guest's RCX and R11 already hold the return RIP and RFLAGS (as after a hypercall, where
//! SYSCALL put them there and nothing changed the frame since), RIP is canonical, the selectors
//! are the flat 64-bit ring-3 ones SYSRETQ loads, and RFLAGS has no bit SYSRETQ would clear.
//! Only a frame that came in by SYSCALL qualifies (Xen's `restore_all_guest` makes the same
//! choice from its `TRAP_syscall` flag): above all, the return from an NMI must be IRETQ,
//! the only instruction that ends the CPU's blocking of further NMIs (a SYSRETQ would leave
//! them blocked while the guest runs, and a TLB shootdown waiting for this CPU would hang).

use xen_abi::xen::{FLAT_RING3_CS64, FLAT_RING3_DS};

/// The RFLAGS bits SYSRETQ takes from R11 (the others it clears, but bit 1, which it sets).
const SYSRET_RFLAGS: u64 = 0x003C_7FD7;

/// The guest's return state as a frame holds it (RSP goes back the same way on both paths).
#[derive(Clone, Copy, Debug)]
pub struct Return {
    /// Where the guest resumes.
    pub rip: u64,
    /// Its code selector.
    pub cs: u64,
    /// Its flags.
    pub rflags: u64,
    /// Its stack selector.
    pub ss: u64,
    /// The guest's RCX (SYSRETQ's source of RIP).
    pub rcx: u64,
    /// The guest's R11 (SYSRETQ's source of RFLAGS).
    pub r11: u64,
    /// The frame came in by SYSCALL (a hypercall or a guest system call), not by an
    /// exception or interrupt.
    pub from_syscall: bool,
}

/// True if SYSRETQ (64-bit, with STAR as Hestia programs it) returns to exactly the state
/// IRETQ would.
pub fn sysret_equivalent(r: &Return) -> bool {
    r.from_syscall
        && crate::vaddr::canonical(r.rip)
        && r.rcx == r.rip
        && r.r11 == r.rflags
        && r.rflags & !SYSRET_RFLAGS == 0
        && r.rflags & 2 != 0
        && r.cs == u64::from(FLAT_RING3_CS64)
        && r.ss == u64::from(FLAT_RING3_DS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after_hypercall() -> Return {
        Return {
            rip: 0xffff_ffff_8100_1234,
            cs: u64::from(FLAT_RING3_CS64),
            rflags: 0x246,
            ss: u64::from(FLAT_RING3_DS),
            rcx: 0xffff_ffff_8100_1234,
            r11: 0x246,
            from_syscall: true,
        }
    }

    #[test]
    fn a_plain_hypercall_return_may_use_sysret() {
        assert!(sysret_equivalent(&after_hypercall()));
        let low = Return {
            rip: 0x7fff_ffff_f000,
            rcx: 0x7fff_ffff_f000,
            ..after_hypercall()
        };
        assert!(sysret_equivalent(&low));
    }

    #[test]
    fn a_rewritten_frame_needs_iret() {
        // A continuation rewinds RIP to the SYSCALL; an upcall moves it to the callback.
        let rewound = Return {
            rip: 0xffff_ffff_8100_1232,
            ..after_hypercall()
        };
        assert!(!sysret_equivalent(&rewound));
        let r11 = Return {
            r11: 0x202,
            ..after_hypercall()
        };
        assert!(!sysret_equivalent(&r11));
    }

    #[test]
    fn only_a_syscall_frame_returns_by_sysret() {
        // An NMI (or any trap) from the instruction after a hypercall: RCX and R11 still hold
        // RIP and RFLAGS, but only IRETQ ends an NMI's blocking.
        let nmi = Return {
            from_syscall: false,
            ..after_hypercall()
        };
        assert!(!sysret_equivalent(&nmi));
    }

    #[test]
    fn a_non_canonical_rip_never_reaches_sysret() {
        // SYSCALL as the last instruction below the hole: the return RIP is non-canonical.
        let edge = Return {
            rip: 0x0000_8000_0000_0000,
            rcx: 0x0000_8000_0000_0000,
            ..after_hypercall()
        };
        assert!(!sysret_equivalent(&edge));
        let high = Return {
            rip: 0xffff_7fff_ffff_ffff,
            rcx: 0xffff_7fff_ffff_ffff,
            ..after_hypercall()
        };
        assert!(!sysret_equivalent(&high));
    }

    #[test]
    fn flags_and_selectors_sysret_cannot_load_need_iret() {
        for bit in [16u64, 17, 3, 5, 15, 22] {
            let f = after_hypercall().rflags | 1 << bit;
            let r = Return {
                rflags: f,
                r11: f,
                ..after_hypercall()
            };
            assert!(!sysret_equivalent(&r), "RFLAGS bit {bit}");
        }
        let tf = after_hypercall().rflags | 1 << 8;
        assert!(sysret_equivalent(&Return {
            rflags: tf,
            r11: tf,
            ..after_hypercall()
        }));
        let cs32 = Return {
            cs: u64::from(xen_abi::xen::FLAT_RING3_CS32),
            ..after_hypercall()
        };
        assert!(!sysret_equivalent(&cs32));
        let other_ss = Return {
            ss: 0xe02b - 8,
            ..after_hypercall()
        };
        assert!(!sysret_equivalent(&other_ss));
    }
}
