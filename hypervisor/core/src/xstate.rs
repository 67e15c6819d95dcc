//! The extended processor state (x87, SSE, AVX) as numbers: XCR0's rules, the size of an XSAVE
//! area, the image a vCPU starts with, and the checks that keep a guest-supplied FXSAVE image
//! from making Hestia's own XRSTOR/FXRSTOR fault. The kernel's `arch::x86_64::fpu` runs the
//! instructions; everything decided here is tested on the host.
//!
//! Layout (Intel SDM Vol. 1 10.5.1 and 13.4): a 512-byte legacy region in FXSAVE's format (FCW at
//! 0, FSW at 2, abridged FTW at 4, MXCSR at 24, MXCSR_MASK at 28, ST0-7 from 32, XMM0-15 from
//! 160), then for XSAVE a 64-byte header (XSTATE_BV at 512, XCOMP_BV at 520, the rest reserved),
//! then each enabled extended component at the offset CPUID leaf 0xD subleaf *i* gives.
//!
//! What can make FXRSTOR or the standard form of XRSTOR raise #GP, and so what an image Hestia
//! restores must never contain (SDM Vol. 1 13.8, instruction pages of FXRSTOR/XRSTOR): MXCSR
//! bits outside MXCSR_MASK (read whenever SSE or AVX is requested, even when XSTATE_BV says
//! "init"), XSTATE_BV bits not set in XCR0, a non-zero XCOMP_BV or a non-zero byte in header
//! bytes 16-63 (the latter two: Xen's `validate_xstate` refuses the same), a misaligned area.
//! Primary sources: Xen 4.17 `xen/arch/x86/xstate.c` (`valid_xcr0`, `handle_xsetbv`,
//! `xrstor`'s fix-up stages) and `i387.c` (`vcpu_setup_fpu`).

/// XCR0 bit 0: x87 state (always set).
pub const XCR0_FP: u64 = 1 << 0;
/// XCR0 bit 1: SSE state (XMM0-15, MXCSR).
pub const XCR0_SSE: u64 = 1 << 1;
/// XCR0 bit 2: AVX state (upper halves of YMM0-15).
pub const XCR0_YMM: u64 = 1 << 2;
/// XCR0 bits 3-4: MPX bounds registers and BNDCFGU/BNDSTATUS.
const XCR0_BNDREGS: u64 = 1 << 3;
const XCR0_BNDCSR: u64 = 1 << 4;
/// XCR0 bits 5-7: AVX-512 opmask, ZMM0-15 upper halves, ZMM16-31.
const XCR0_AVX512: u64 = 0b111 << 5;
/// x87 and SSE: what a PV vCPU runs with before it executes XSETBV (Xen's `XSTATE_FP_SSE`).
pub const XSTATE_FP_SSE: u64 = XCR0_FP | XCR0_SSE;

/// The legacy region (FXSAVE's whole image).
pub const LEGACY_SIZE: usize = 512;
/// The legacy region and the XSAVE header: the smallest XSAVE area.
pub const XSAVE_MIN_SIZE: usize = 576;
/// The x87 control word's reset value (`FNINIT`: all exceptions masked, 64-bit precision, round
/// to nearest), Xen's `FCW_DEFAULT`.
pub const FCW_DEFAULT: u16 = 0x037f;
/// MXCSR's reset value (all exceptions masked, round to nearest), Xen's `MXCSR_DEFAULT`.
pub const MXCSR_DEFAULT: u32 = 0x1f80;
/// MXCSR_MASK to assume when FXSAVE stores 0 there (SDM Vol. 1 11.6.6: everything but DAZ).
pub const MXCSR_MASK_DEFAULT: u32 = 0xffbf;

const FCW: usize = 0;
const FSW: usize = 2;
const MXCSR: usize = 24;
const MXCSR_MASK: usize = 28;
const XSTATE_BV: usize = 512;
/// Unmasked-exception bits shared by FSW (flags) and FCW (masks): IE DE ZE OE UE PE.
const X87_EXCEPTIONS: u16 = 0x3f;

/// Xen's `valid_xcr0`: the combinations XSETBV accepts architecturally. x87 always; AVX only
/// with SSE; the three AVX-512 components together and only with AVX; MPX's two together.
pub fn valid_xcr0(xcr0: u64) -> bool {
    if xcr0 & XCR0_FP == 0 {
        return false;
    }
    if xcr0 & XCR0_YMM != 0 && xcr0 & XCR0_SSE == 0 {
        return false;
    }
    if xcr0 & XCR0_AVX512 != 0 && (xcr0 & XCR0_YMM == 0 || xcr0 & XCR0_AVX512 != XCR0_AVX512) {
        return false;
    }
    (xcr0 & XCR0_BNDREGS == 0) == (xcr0 & XCR0_BNDCSR == 0)
}

/// Whether a PV guest's `XSETBV(0, new)` is accepted when the guest may enable `max` (Xen's
/// `handle_xsetbv`): a valid combination within what Hestia enabled for guests.
pub fn guest_may_set_xcr0(new: u64, max: u64) -> bool {
    new & !max == 0 && valid_xcr0(new)
}

/// Bytes of an XSAVE area in the standard (non-compacted) format holding every component in
/// `xcr0`, given `component(i)` = the hardware's (size, offset) of component `i` (CPUID 0xD
/// subleaf `i`, EAX and EBX): the end of the furthest component, at least [`XSAVE_MIN_SIZE`].
/// It equals CPUID 0xD.0 EBX with XCR0 = `xcr0` loaded, without having to load it.
pub fn area_size(xcr0: u64, component: impl Fn(u32) -> (u32, u32)) -> usize {
    (2..63)
        .filter(|i| xcr0 & (1 << i) != 0)
        .map(|i| {
            let (size, offset) = component(i);
            offset.saturating_add(size) as usize
        })
        .fold(XSAVE_MIN_SIZE, usize::max)
}

/// The MXCSR_MASK an FXSAVE image reports (bytes 28-31), or the architectural default where the
/// CPU stores 0 there.
pub fn mxcsr_mask(fxsave: &[u8; LEGACY_SIZE]) -> u32 {
    match u32_at(fxsave, MXCSR_MASK) {
        0 => MXCSR_MASK_DEFAULT,
        m => m,
    }
}

/// Writes the state a vCPU starts with into `area` (its first [`XSAVE_MIN_SIZE`] bytes when
/// `xsave`, else [`LEGACY_SIZE`]): all zero but FCW and MXCSR at their reset values, and for
/// XSAVE an XSTATE_BV of 0, so that XRSTOR puts every component in its initial configuration
/// (Xen's `xstate_alloc_save_area` with `vcpu_setup_fpu(v, .., NULL, FCW_DEFAULT)`).
///
/// `area` must be at least that long (the kernel's areas are sized by [`area_size`]); shorter
/// areas are left as they are.
pub fn write_initial(area: &mut [u8]) {
    area.fill(0);
    if let Some(fcw) = area.get_mut(FCW..FCW + 2) {
        fcw.copy_from_slice(&FCW_DEFAULT.to_le_bytes());
    }
    if let Some(mxcsr) = area.get_mut(MXCSR..MXCSR + 4) {
        mxcsr.copy_from_slice(&MXCSR_DEFAULT.to_le_bytes());
    }
}

/// Writes a guest-supplied FXSAVE image (`vcpu_guest_context.fpu_ctxt` with `VGCF_I387_VALID`)
/// into `area` so that restoring it cannot fault: the image's MXCSR is cut to `mxcsr_mask`,
/// and with `xsave` the header says "x87 and SSE from memory, the rest initial" with XCOMP_BV and
/// the reserved bytes zero (Xen's `vcpu_setup_fpu` with data; Xen instead repairs the image in
/// `xrstor`'s fault fix-up, Hestia never lets a faulting one in). The rest of `area` is zeroed.
pub fn write_guest_fxsave(
    area: &mut [u8],
    image: &[u8; LEGACY_SIZE],
    mxcsr_mask: u32,
    xsave: bool,
) {
    area.fill(0);
    let Some(legacy) = area.get_mut(..LEGACY_SIZE) else {
        return;
    };
    legacy.copy_from_slice(image);
    let mxcsr = u32_at(image, MXCSR) & mxcsr_mask;
    legacy[MXCSR..MXCSR + 4].copy_from_slice(&mxcsr.to_le_bytes());
    if xsave && let Some(bv) = area.get_mut(XSTATE_BV..XSTATE_BV + 8) {
        bv.copy_from_slice(&XSTATE_FP_SSE.to_le_bytes());
    }
}

/// True when an image restored over another vCPU's x87 state would leave that vCPU's last
/// instruction and data pointers (FIP, FDP, FOP) in the FPU: on AMD CPUs without
/// RSTR_FP_ERR_PTRS, FXRSTOR/XRSTOR load them only while an unmasked exception is pending in
/// the image (Xen's `cpu_bug_fpu_ptrs` test in `xrstor`/`fpu_fxrstor`; CVE-2006-1056).
pub fn stale_fpu_pointers(legacy: &[u8]) -> bool {
    let fsw = u16_at(legacy, FSW);
    let fcw = u16_at(legacy, FCW);
    fsw & !fcw & X87_EXCEPTIONS == 0
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xcr0_rules_as_xen() {
        assert!(valid_xcr0(XCR0_FP));
        assert!(valid_xcr0(XSTATE_FP_SSE));
        assert!(valid_xcr0(0b111));
        assert!(!valid_xcr0(0), "x87 is mandatory");
        assert!(!valid_xcr0(XCR0_SSE | XCR0_YMM), "x87 is mandatory");
        assert!(!valid_xcr0(XCR0_FP | XCR0_YMM), "AVX needs SSE");
        assert!(valid_xcr0(0b1110_0111), "AVX-512 with AVX");
        assert!(!valid_xcr0(0b0110_0111), "AVX-512's components go together");
        assert!(!valid_xcr0(0b1110_0011), "AVX-512 needs AVX");
        assert!(valid_xcr0(0b1_1011), "MPX's two together");
        assert!(!valid_xcr0(0b0_1011), "BNDREGS without BNDCSR");
        assert!(!valid_xcr0(0b1_0011), "BNDCSR without BNDREGS");
    }

    #[test]
    fn guest_xcr0_stays_within_what_hestia_enabled() {
        assert!(guest_may_set_xcr0(0b111, 0b111));
        assert!(guest_may_set_xcr0(0b011, 0b111));
        assert!(guest_may_set_xcr0(0b001, 0b111));
        assert!(!guest_may_set_xcr0(0b111, 0b011), "AVX not offered");
        assert!(!guest_may_set_xcr0(0b101, 0b111), "AVX without SSE");
        assert!(!guest_may_set_xcr0(1 << 62 | 1, 0b111));
        assert!(!guest_may_set_xcr0(0, 0b111));
    }

    #[test]
    fn area_size_is_the_furthest_component() {
        // AVX at 576 (256 bytes); AVX-512 components further out, not enabled.
        let comp = |i: u32| match i {
            2 => (256, 576),
            5 => (64, 1088),
            6 => (512, 1152),
            7 => (1024, 1664),
            _ => (0, 0),
        };
        assert_eq!(area_size(0b11, comp), 576);
        assert_eq!(area_size(0b111, comp), 832);
        assert_eq!(area_size(0b1110_0111, comp), 2688);
        assert_eq!(area_size(0b1, |_| (u32::MAX, u32::MAX)), 576);
        assert_eq!(
            area_size(0b111, |_| (u32::MAX, u32::MAX)),
            u32::MAX as usize,
            "saturates, never wraps"
        );
    }

    #[test]
    fn initial_image_is_the_reset_state() {
        let mut a = [0xaau8; 832];
        write_initial(&mut a);
        assert_eq!(u16_at(&a, FCW), 0x037f);
        assert_eq!(u32_at(&a, MXCSR), 0x1f80);
        assert!(a[..FCW].iter().chain(&a[2..MXCSR]).all(|&b| b == 0));
        assert!(
            a[MXCSR + 4..].iter().all(|&b| b == 0),
            "XSTATE_BV 0: all components initial"
        );
        let mut short = [0xaau8; 3];
        write_initial(&mut short);
        assert_eq!(short, [0x7f, 0x03, 0]);
    }

    #[test]
    fn guest_image_cannot_fault_the_restore() {
        let mut image = [0x5au8; LEGACY_SIZE];
        image[MXCSR..MXCSR + 4].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
        let mut a = [0xaau8; 832];
        write_guest_fxsave(&mut a, &image, 0xffbf, true);
        assert_eq!(u32_at(&a, MXCSR), 0xffbf, "reserved MXCSR bits and DAZ cut");
        assert_eq!(
            a[..MXCSR],
            image[..MXCSR],
            "the rest of the legacy region as given"
        );
        assert_eq!(a[MXCSR + 4..LEGACY_SIZE], image[MXCSR + 4..]);
        assert_eq!(&a[XSTATE_BV..XSTATE_BV + 8], &3u64.to_le_bytes());
        assert!(
            a[XSTATE_BV + 8..].iter().all(|&b| b == 0),
            "XCOMP_BV, reserved header bytes and AVX state zero"
        );
        let mut f = [0xaau8; LEGACY_SIZE];
        write_guest_fxsave(&mut f, &image, 0xffff, false);
        assert_eq!(u32_at(&f, MXCSR), 0xffff);
        let mut short = [0xaau8; 100];
        write_guest_fxsave(&mut short, &image, 0xffff, true);
        assert!(
            short.iter().all(|&b| b == 0),
            "too short: left zeroed, never indexed past"
        );
    }

    #[test]
    fn mxcsr_mask_defaults_when_zero() {
        let mut image = [0u8; LEGACY_SIZE];
        assert_eq!(mxcsr_mask(&image), 0xffbf);
        image[MXCSR_MASK..MXCSR_MASK + 4].copy_from_slice(&0xffffu32.to_le_bytes());
        assert_eq!(mxcsr_mask(&image), 0xffff);
    }

    #[test]
    fn fpu_pointers_are_stale_unless_an_exception_is_pending() {
        let mut l = [0u8; LEGACY_SIZE];
        l[FCW..FCW + 2].copy_from_slice(&0x037fu16.to_le_bytes());
        l[FSW..FSW + 2].copy_from_slice(&0x0001u16.to_le_bytes()); // IE flagged but masked
        assert!(stale_fpu_pointers(&l));
        l[FCW..FCW + 2].copy_from_slice(&0x037eu16.to_le_bytes()); // IE unmasked: pending
        assert!(!stale_fpu_pointers(&l));
        assert!(stale_fpu_pointers(&[]));
    }
}
