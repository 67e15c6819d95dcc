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

/// Why a toolstack's saved extended state (`XEN_DOMCTL_setvcpuextstate`) was refused; the
/// kernel answers each with Xen's errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtStateError {
    /// Inconsistent masks or sizes (`EINVAL`).
    Invalid,
    /// A component Hestia does not enable, or the compacted format (`EOPNOTSUPP`).
    Unsupported,
    /// A reserved header byte is set (`EIO`).
    ReservedHeader,
}

/// What `XEN_DOMCTL_setvcpuextstate` restores: nothing (a record of XCR0 0 and no state), or
/// the vCPU's XCR0 and an XSAVE image of every component in `accum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtState<'a> {
    /// Only the 16-byte header, XCR0 and XCR0_ACCUM both 0 or no image: the vCPU keeps its state.
    Keep,
    /// The vCPU's XCR0 and its image (standard format, `size(accum)` bytes).
    Load {
        /// The vCPU's XCR0.
        xcr0: u64,
        /// The image: the legacy region, the header, XCR0_ACCUM's components.
        image: &'a [u8],
    },
}

/// Checks a toolstack's `XEN_DOMCTL_setvcpuextstate` buffer `buf` (XCR0, XCR0_ACCUM, then the
/// standard-format XSAVE image of XCR0_ACCUM's components) against `max`, the components Hestia
/// enables for guests, with `size(mask)` the standard area's size for `mask` ([`area_size`]).
/// The order and errnos are Xen 4.17's (`arch_do_domctl` and `validate_xstate`): a buffer
/// shorter than the two words or longer than the area for `max` -EINVAL; with XCR0_ACCUM set,
/// an image shorter than [`XSAVE_MIN_SIZE`], XSTATE_BV or XCR0 outside XCR0_ACCUM, XCR0_ACCUM
/// outside `max` (Hestia's guest maximum is also its feature mask) or an invalid combination
/// -EINVAL, then a compacted image (XCOMP_BV) -EOPNOTSUPP, then a reserved header byte -EIO;
/// with XCR0_ACCUM 0 only XCR0 0; then an image of any other length than the area for
/// XCR0_ACCUM -EINVAL. The image may still hold MXCSR bits the CPU refuses: the caller cuts
/// them as for [`write_guest_fxsave`].
pub fn check_ext_state(
    buf: &[u8],
    max: u64,
    size: impl Fn(u64) -> usize,
) -> Result<ExtState<'_>, ExtStateError> {
    if buf.len() < 16 || buf.len() > 16 + size(max) {
        return Err(ExtStateError::Invalid);
    }
    let (xcr0, accum) = (u64_at(buf, 0), u64_at(buf, 8));
    let image = buf.get(16..).unwrap_or(&[]);
    if accum == 0 {
        return match (xcr0, image.len()) {
            (0, 0) => Ok(ExtState::Keep),
            _ => Err(ExtStateError::Invalid),
        };
    }
    if image.len() < XSAVE_MIN_SIZE {
        return Err(ExtStateError::Invalid);
    }
    let xstate_bv = u64_at(image, XSTATE_BV);
    if xstate_bv & !accum != 0
        || xcr0 & !accum != 0
        || accum & !max != 0
        || !valid_xcr0(xcr0)
        || !valid_xcr0(accum)
    {
        return Err(ExtStateError::Invalid);
    }
    if u64_at(image, XSTATE_BV + 8) != 0 {
        return Err(ExtStateError::Unsupported);
    }
    if image
        .get(XSTATE_BV + 16..XSAVE_MIN_SIZE)
        .is_some_and(|r| r.iter().any(|&b| b != 0))
    {
        return Err(ExtStateError::ReservedHeader);
    }
    if image.len() != size(accum) {
        return Err(ExtStateError::Invalid);
    }
    Ok(ExtState::Load { xcr0, image })
}

/// Copies a checked image ([`check_ext_state`]) into `area`, which is at least as long, with
/// MXCSR cut to `mxcsr_mask` so that restoring it cannot fault; the rest of `area` is zeroed
/// (XSTATE_BV names no component beyond the image, so XRSTOR initialises those).
pub fn write_ext_state(area: &mut [u8], image: &[u8], mxcsr_mask: u32) {
    area.fill(0);
    let Some(dst) = area.get_mut(..image.len()) else {
        return;
    };
    dst.copy_from_slice(image);
    let mxcsr = u32_at(image, MXCSR) & mxcsr_mask;
    if let Some(m) = dst.get_mut(MXCSR..MXCSR + 4) {
        m.copy_from_slice(&mxcsr.to_le_bytes());
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

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// CPUID 0xD as a CPU with AVX at 576 (256 bytes) would answer.
    fn avx_size(mask: u64) -> usize {
        area_size(mask, |i| if i == 2 { (256, 576) } else { (0, 0) })
    }

    fn ext_buf(xcr0: u64, accum: u64, image_len: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&xcr0.to_le_bytes());
        b.extend_from_slice(&accum.to_le_bytes());
        b.resize(16 + image_len, 0);
        b
    }

    #[test]
    fn ext_state_checks_as_xen() {
        fn check(b: &[u8]) -> Result<ExtState<'_>, ExtStateError> {
            check_ext_state(b, 0b111, avx_size)
        }
        assert_eq!(check(&ext_buf(0, 0, 0)), Ok(ExtState::Keep));
        assert_eq!(
            check(&[0; 15]),
            Err(ExtStateError::Invalid),
            "shorter than the words"
        );
        assert_eq!(
            check(&ext_buf(7, 7, 833)),
            Err(ExtStateError::Invalid),
            "past the area"
        );
        assert_eq!(
            check(&ext_buf(3, 0, 0)),
            Err(ExtStateError::Invalid),
            "XCR0 without accum"
        );
        assert_eq!(
            check(&ext_buf(3, 3, 0)),
            Err(ExtStateError::Invalid),
            "no image"
        );
        assert_eq!(
            check(&ext_buf(7, 3, 576)),
            Err(ExtStateError::Invalid),
            "XCR0 > accum"
        );
        assert_eq!(
            check(&ext_buf(0xf, 0xf, 832)),
            Err(ExtStateError::Invalid),
            "past max"
        );
        assert_eq!(
            check(&ext_buf(3, 2, 576)),
            Err(ExtStateError::Invalid),
            "no x87"
        );
        assert_eq!(
            check(&ext_buf(3, 7, 576)),
            Err(ExtStateError::Invalid),
            "AVX needs 832"
        );
        let ok = ext_buf(3, 7, 832);
        assert!(matches!(check(&ok), Ok(ExtState::Load { xcr0: 3, image }) if image.len() == 832));
        let mut bv = ok.clone();
        bv[16 + 512] = 0b1111;
        assert_eq!(
            check(&bv),
            Err(ExtStateError::Invalid),
            "XSTATE_BV outside accum"
        );
        let mut comp = ok.clone();
        comp[16 + 527] = 0x80;
        assert_eq!(check(&comp), Err(ExtStateError::Unsupported), "compacted");
        let mut res = ok.clone();
        res[16 + 575] = 1;
        assert_eq!(check(&res), Err(ExtStateError::ReservedHeader));
    }

    #[test]
    fn ext_state_written_with_mxcsr_cut() {
        let mut image = vec![0xaa; 576];
        image[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut area = vec![0x55; 832];
        write_ext_state(&mut area, &image, MXCSR_MASK_DEFAULT);
        assert_eq!(u32_at(&area, MXCSR), MXCSR_MASK_DEFAULT);
        assert_eq!(area[0], 0xaa);
        assert!(area[576..].iter().all(|&b| b == 0), "the rest zeroed");
    }

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
