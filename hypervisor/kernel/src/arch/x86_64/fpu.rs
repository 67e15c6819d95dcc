//! A vCPU's x87/SSE/AVX state while it is not on a CPU: [`FpuState`], saved when the vCPU is
//! switched away and restored when it is switched in (Xen's `i387.c` and `xstate.c`; Intel SDM
//! Vol. 1 chapter 13, "Managing state using the XSAVE feature set").
//!
//! # Theory of operation
//! Hestia is built soft-float: it never uses the FPU or SSE registers itself, so while a vCPU
//! runs, the CPU's registers are exactly that vCPU's state, and an [`FpuState`] only matters
//! between a [`FpuState::save`] and the next [`FpuState::restore`]. What a vCPU owns here:
//! - the register image, in a 64-byte aligned area sized by CPUID leaf 0xD for the XCR0 Hestia
//!   enables for guests ([`cpu::guest_xcr0_mask`]: x87, SSE, AVX as present), or FXSAVE's 512
//!   bytes on a CPU without XSAVE;
//! - its XCR0 (a PV kernel sets it with an emulated XSETBV, `pv::privop`, straight into the
//!   CPU): captured by `save`, loaded by `restore`;
//! - its CR0.TS (set and cleared by `fpu_taskswitch`, CLTS, `mov %cr0` and the #NM path,
//!   straight into the CPU): captured by `save`, loaded by `restore`.
//!
//! # Eager switching
//! Every switch saves and restores the whole state, whether or not the vCPU touched the FPU
//! (Xen 4.17 does the same for PV: `opt_eager_fpu` is on wherever LazyFP applies, and
//! `vcpu_restore_fpu_nonlazy` restores everything with `fully_eager_fpu`). Lazy switching
//! (set CR0.TS, restore on the first #NM) leaves the previous vCPU's registers in the CPU
//! while the next one runs, which speculative execution reads across domains (LazyFP,
//! CVE-2018-3665), and it needs a per-CPU "owner" and an #NM fast path that the PV CR0.TS
//! virtualisation would share. The cost of eager: one XSAVEOPT and one XRSTOR per switch
//! (about 1 KiB each with AVX), small against the rest of a PV context switch (CR3, segment
//! bases, descriptor tables); XSAVEOPT skips components unmodified since the XRSTOR, and XRSTOR
//! of a component in its initial configuration reads nothing.
//!
//! # Why saves and restores run under Hestia's whole XCR0
//! `save` and `restore` load Hestia's XCR0 (every component guests may enable) around
//! XSAVE/XRSTOR and then the vCPU's own. So every vCPU's area covers every component: a vCPU
//! that later enables AVX with XSETBV finds its own YMM state (initial, or what it left), never
//! the previous vCPU's, with no help from the XSETBV emulation; and XSTATE_BV never names a
//! component XCR0 lacks when XRSTOR runs. A guest running with Hestia's XCR0 (Linux enables all
//! it is offered) costs no XSETBV at all; others cost one XSETBV in `save` and two in `restore`.
//! (Xen instead keeps an `xcr0_accum` and initialises newly enabled components in
//! `handle_xsetbv`.)
//!
//! # XRSTOR/FXRSTOR never fault
//! A fault there would be a #GP in Hestia, i.e. a crash. Its causes (see `hestia_core::xstate`)
//! are bad MXCSR bits, bad header bits and XSTATE_BV bits outside XCR0, and exactly four
//! things can be in an area when it is restored: [`FpuState::new_initial`]'s image (built by
//! `xstate::write_initial`), an image [`FpuState::from_guest_fxsave`] built from guest bytes
//! (MXCSR cut to the CPU's MXCSR_MASK, header Hestia's own: `xstate::write_guest_fxsave`), a
//! toolstack's saved image ([`FpuState::set_guest_xsave`]: header and XCR0 checked by
//! `xstate::check_ext_state` as Xen's `validate_xstate`, MXCSR cut the same way), and what
//! XSAVE/FXSAVE stored from the registers under the XCR0 `restore` loads again. The last is
//! valid by construction: the only ways to put MXCSR bits into the registers are LDMXCSR,
//! FXRSTOR and XRSTOR executed by the guest, which fault in the guest on reserved bits. The
//! area is private to this module, so nothing else can write it. Hence no fix-up path like
//! Xen's `xrstor` (which repairs the image it was handed through VCPUOP_initialise or the
//! toolstack after the fault).
//!
//! # Invariants the caller keeps (the context switch)
//! - `save` only the state most recently `restore`d on this CPU, before anything else runs
//!   guest-visible FPU instructions; `restore` with interrupts off until the vCPU is entered
//!   (nothing in Hestia touches the registers, but an interrupt-time `save` of another state
//!   would).
//! - Every CPU has the same XSAVE features (as Xen's `xstate_init` insists): an area saved on
//!   one CPU is restored on another.
//!
//! Locks: none; an [`FpuState`] lives in its vCPU's structure, under that vCPU's lock.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;

use hestia_core::xstate;
use xen_abi::errno::Errno;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::cpu;

/// One 64-byte piece of an area: a slice of these is 64-byte aligned, as XSAVE requires.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(64))]
struct Block([u8; 64]);

/// The CPU's XSAVE facts, the same on every CPU.
struct Features {
    /// The XCR0 Hestia enables for guests (everything a vCPU may use); 0 without XSAVE.
    xcr0: u64,
    /// XSAVEOPT is available.
    xsaveopt: bool,
    /// Bytes of an area: CPUID 0xD's size for `xcr0`, or FXSAVE's 512.
    size: usize,
    /// The MXCSR bits the CPU accepts (FXSAVE's MXCSR_MASK).
    mxcsr_mask: u32,
    /// FXRSTOR/XRSTOR keep the previous FIP/FDP/FOP unless an exception is pending (AMD
    /// without RSTR_FP_ERR_PTRS, Xen's `cpu_bug_fpu_ptrs`).
    fpu_ptrs_bug: bool,
}

static FEATURES: spin::Once<Features> = spin::Once::new();

/// Bytes of a standard-format XSAVE area for the components of `xcr0` (not 0), from this CPU's
/// CPUID leaf 0xD.
pub fn xsave_size(xcr0: u64) -> usize {
    xstate::area_size(xcr0, |i| {
        let r = cpu::cpuid(0xd, i);
        (r.eax, r.ebx)
    })
}

fn features() -> &'static Features {
    FEATURES.call_once(|| {
        let xcr0 = cpu::guest_xcr0_mask();
        let size = if xcr0 == 0 {
            xstate::LEGACY_SIZE
        } else {
            xsave_size(xcr0)
        };
        let e8 =
            (cpu::cpuid(0x8000_0000, 0).eax >= 0x8000_0008).then(|| cpu::cpuid(0x8000_0008, 0));
        Features {
            xcr0,
            xsaveopt: xcr0 != 0 && cpu::cpuid(0xd, 1).eax & 1 != 0,
            size,
            mxcsr_mask: xstate::mxcsr_mask(&fxsave_now()),
            fpu_ptrs_bug: (cpu::is_amd() || cpu::is_hygon())
                && e8.is_none_or(|r| r.ebx & (1 << 2) == 0),
        }
    })
}

/// An FXSAVE image of the registers as they are now (FXSAVE only reads them).
fn fxsave_now() -> [u8; xstate::LEGACY_SIZE] {
    let mut image = [Block([0; 64]); xstate::LEGACY_SIZE / 64];
    with_ts_clear(|| {
        // SAFETY: stores 512 bytes into `image`, 64-byte aligned; CR4.OSFXSR is set at boot
        // (`cpu::enable_guest_fpu`) and CR0.TS is clear here.
        unsafe {
            asm!("fxsave64 [{}]", in(reg) image.as_mut_ptr(), options(nostack, preserves_flags))
        };
    });
    let mut out = [0; xstate::LEGACY_SIZE];
    out.copy_from_slice(image.as_bytes());
    out
}

/// Runs `f` with CR0.TS clear (FXSAVE/XSAVE raise #NM under it), then puts TS back.
fn with_ts_clear(f: impl FnOnce()) {
    let ts = cpu::ts_set();
    cpu::clear_ts();
    f();
    if ts {
        cpu::set_ts();
    }
}

/// A vCPU's extended state (x87, MMX, SSE, AVX), its XCR0 and its CR0.TS, while it is not
/// loaded in a CPU (Xen's `v->arch.xsave_area`/`fpu_ctxt`, `xcr0`, `pv.ctrlreg[0] & TS`).
pub struct FpuState {
    /// The XSAVE (or FXSAVE) image.
    area: Box<[Block]>,
    /// The vCPU's XCR0 (0 without XSAVE).
    xcr0: u64,
    /// The vCPU's CR0.TS.
    ts: bool,
    /// `restore` loaded this area into this CPU and `save` has not run since: XSAVEOPT may
    /// then skip what is unmodified since that XRSTOR (its "modified optimization" compares
    /// linear addresses only, so an area must not reach XSAVEOPT without its own XRSTOR first,
    /// e.g. a new area at a freed one's address).
    loaded: bool,
}

impl FpuState {
    /// An area of the right size, all zero; `ENOMEM` when the heap has no room.
    fn zeroed() -> Result<Self, Errno> {
        let f = features();
        let blocks = f.size.div_ceil(64);
        let mut area = Vec::new();
        area.try_reserve_exact(blocks).map_err(|_| Errno::ENOMEM)?;
        area.resize(blocks, Block([0; 64]));
        Ok(Self {
            area: area.into_boxed_slice(),
            xcr0: if f.xcr0 == 0 {
                0
            } else {
                xstate::XSTATE_FP_SSE
            },
            ts: false,
            loaded: false,
        })
    }

    /// The state a vCPU starts with (VCPUOP_initialise without `VGCF_I387_VALID`, a new
    /// domain's vCPUs): x87 after FNINIT (FCW 0x37F), SSE with MXCSR 0x1F80 and zeroed XMM, AVX
    /// zeroed, XCR0 = x87|SSE until the guest's XSETBV, CR0.TS clear (Xen's `vcpu_init_fpu`,
    /// `vcpu_setup_fpu(v, .., NULL, FCW_DEFAULT)` and `xcr0 ?: XSTATE_FP_SSE`).
    pub fn new_initial() -> Result<Self, Errno> {
        let mut s = Self::zeroed()?;
        xstate::write_initial(s.area.as_mut_bytes());
        Ok(s)
    }

    /// The state VCPUOP_initialise with `VGCF_I387_VALID` asks for: `image` (the context's
    /// `fpu_ctxt`, FXSAVE's format) with MXCSR cut to what the CPU accepts, every other
    /// component initial (Xen's `vcpu_setup_fpu` with data).
    pub fn from_guest_fxsave(image: &[u8; xstate::LEGACY_SIZE]) -> Result<Self, Errno> {
        let mut s = Self::zeroed()?;
        let f = features();
        xstate::write_guest_fxsave(s.area.as_mut_bytes(), image, f.mxcsr_mask, f.xcr0 != 0);
        Ok(s)
    }

    /// Sets the CR0.TS the vCPU starts with (VCPUOP_initialise's `ctrlreg[0] & X86_CR0_TS`).
    pub fn set_guest_ts(&mut self, ts: bool) {
        self.ts = ts;
    }

    /// The saved state's legacy region, FXSAVE's format (what `XEN_DOMCTL_getvcpucontext`
    /// returns as `fpu_ctxt`: Xen copies the same first 512 bytes of its save area), and the
    /// vCPU's CR0.TS. Meaningful while the vCPU does not run.
    pub fn guest_fxsave(&self) -> ([u8; xstate::LEGACY_SIZE], bool) {
        let mut image = [0; xstate::LEGACY_SIZE];
        if let Some(legacy) = self.area.as_bytes().get(..xstate::LEGACY_SIZE) {
            image.copy_from_slice(legacy);
        }
        (image, self.ts)
    }

    /// Hestia's guest XCR0 mask (Xen's `xfeature_mask` as the toolstack sees it) and the bytes
    /// of an area for it.
    pub fn guest_features() -> (u64, usize) {
        let f = features();
        (f.xcr0, f.size)
    }

    /// The vCPU's XCR0 and its saved area (`XEN_DOMCTL_getvcpuextstate`). The area always
    /// covers every component of Hestia's mask, which therefore stands for Xen's `xcr0_accum`.
    /// Meaningful while the vCPU does not run.
    pub fn guest_xsave(&self) -> (u64, &[u8]) {
        let size = features().size;
        let bytes = self.area.as_bytes();
        (self.xcr0, bytes.get(..size).unwrap_or(bytes))
    }

    /// Replaces the state with a toolstack's (`XEN_DOMCTL_setvcpuextstate`): `xcr0` and
    /// `image` as `hestia_core::xstate::check_ext_state` accepted them (a valid XCR0 within
    /// Hestia's mask, a standard-format image whose header XRSTOR accepts), MXCSR cut to what
    /// the CPU accepts, so the module's "never faults" holds.
    pub fn set_guest_xsave(&mut self, xcr0: u64, image: &[u8]) {
        let f = features();
        xstate::write_ext_state(self.area.as_mut_bytes(), image, f.mxcsr_mask);
        self.xcr0 = xcr0;
        self.loaded = false;
    }

    /// Saves the CPU's FPU registers, XCR0 and CR0.TS into `self`, on switching the vCPU away.
    /// Leaves CR0.TS clear and XCR0 at Hestia's: ready for the next vCPU's [`restore`].
    ///
    /// [`restore`]: FpuState::restore
    pub fn save(&mut self) {
        let f = features();
        self.ts = cpu::ts_set();
        cpu::clear_ts();
        let area = self.area.as_mut_ptr();
        if f.xcr0 == 0 {
            // SAFETY: FXSAVE stores 512 bytes into the area (that long, 64-byte aligned);
            // CR0.TS is clear.
            unsafe { asm!("fxsave64 [{}]", in(reg) area, options(nostack, preserves_flags)) };
        } else {
            self.xcr0 = cpu::read_xcr0();
            load_xcr0(f.xcr0);
            // SAFETY: XSAVE(OPT) with every bit requested stores the components of XCR0 (now
            // Hestia's) into the area, which is sized for them by CPUID and 64-byte aligned;
            // CR0.TS is clear. XSAVEOPT only after this area's own XRSTOR (`loaded`).
            unsafe {
                if f.xsaveopt && self.loaded {
                    asm!("xsaveopt64 [{}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack, preserves_flags));
                } else {
                    asm!("xsave64 [{}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack, preserves_flags));
                }
            }
        }
        self.loaded = false;
    }

    /// Loads `self` into the CPU's FPU registers, then the vCPU's XCR0 and CR0.TS, on
    /// switching the vCPU in. Never faults (see the module's documentation).
    pub fn restore(&mut self) {
        let f = features();
        cpu::clear_ts();
        let area = self.area.as_ptr();
        if f.fpu_ptrs_bug && xstate::stale_fpu_pointers(self.area.as_bytes()) {
            // SAFETY: x87 instructions on the registers about to be overwritten, reading 4
            // bytes of the area: clear pending exceptions, free ST7 so that the load cannot
            // overflow, and load an integer, which sets FIP/FDP/FOP to Hestia's addresses
            // instead of the previous vCPU's (the restore below leaves them).
            unsafe {
                asm!("fnclex", "ffree st(7)", "fild dword ptr [{}]", in(reg) area, options(nostack, preserves_flags))
            };
        }
        if f.xcr0 == 0 {
            // SAFETY: FXRSTOR reads 512 bytes of the 64-byte aligned area, whose MXCSR holds
            // only MXCSR_MASK bits (module documentation); CR0.TS is clear.
            unsafe { asm!("fxrstor64 [{}]", in(reg) area, options(nostack, preserves_flags)) };
        } else {
            load_xcr0(f.xcr0);
            // SAFETY: XRSTOR of every component of XCR0 (Hestia's) from the area sized for
            // them, 64-byte aligned, in the standard format with a header Hestia wrote or
            // XSAVE stored under this XCR0 and a valid MXCSR (module documentation).
            unsafe {
                asm!("xrstor64 [{}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack, preserves_flags))
            };
            load_xcr0(self.xcr0);
        }
        if self.ts {
            cpu::set_ts();
        }
        self.loaded = true;
    }
}

/// Loads XCR0 unless it already holds `xcr0` (XGETBV is cheap, XSETBV serialises).
fn load_xcr0(xcr0: u64) {
    if cpu::read_xcr0() != xcr0 {
        // SAFETY: `xcr0` is Hestia's guest mask, a value read from XCR0 earlier (`save`), x87|SSE
        // (`new_initial`) or a toolstack's checked by `xstate::check_ext_state` (a valid
        // combination within the guest mask): all valid, and within what the CPU supports.
        unsafe { cpu::set_xcr0(xcr0) };
    }
}

/// `selftest=fpu`: two states through the registers and back on this CPU. The initial state
/// must read back as the reset state; a guest image with every MXCSR bit set must restore
/// without a fault, with MXCSR cut to the mask; each must survive a save of itself and a
/// restore of the other; CR0.TS must follow. Returns how states are switched, or what
/// differed. The registers are left in the initial state, TS clear and XCR0 Hestia's (no guest
/// runs yet).
pub fn selftest() -> Result<String, &'static str> {
    let f = features();
    let mut image = [0u8; xstate::LEGACY_SIZE];
    image[..2].copy_from_slice(&0x027fu16.to_le_bytes()); // FCW: 53-bit precision
    image[24..28].copy_from_slice(&u32::MAX.to_le_bytes()); // MXCSR: reserved bits too
    image[160..176].copy_from_slice(&[0x5a; 16]); // XMM0
    let mut initial = FpuState::new_initial().map_err(|_| "no memory")?;
    let mut guest = FpuState::from_guest_fxsave(&image).map_err(|_| "no memory")?;
    guest.set_guest_ts(true);
    let want_initial = (xstate::FCW_DEFAULT, xstate::MXCSR_DEFAULT, [0u8; 16]);
    // Every MXCSR bit was set: what is left is the mask.
    let want_guest = (0x027f, f.mxcsr_mask, [0x5a; 16]);
    for _ in 0..2 {
        initial.restore();
        if registers() != want_initial || cpu::ts_set() {
            return Err("initial state differs after restore");
        }
        if f.xcr0 != 0 && cpu::read_xcr0() != xstate::XSTATE_FP_SSE {
            return Err("XCR0 of a new vCPU is not x87|SSE");
        }
        initial.save();
        guest.restore();
        if !cpu::ts_set() {
            return Err("CR0.TS not restored");
        }
        if registers() != want_guest {
            return Err("guest image differs after restore");
        }
        guest.save();
        if cpu::ts_set() {
            return Err("CR0.TS still set after save");
        }
    }
    initial.restore();
    // Back to the boot state for the CPU's first vCPU: Hestia's XCR0, TS clear.
    if f.xcr0 != 0 {
        load_xcr0(f.xcr0);
    }
    let how = match (f.xcr0, f.xsaveopt) {
        (0, _) => "FXSAVE",
        (_, true) => "XSAVEOPT/XRSTOR",
        (_, false) => "XSAVE/XRSTOR",
    };
    Ok(format!(
        "{how}, XCR0 {:#x}, {} bytes, MXCSR_MASK {:#x}, FIP/FDP scrub {}",
        f.xcr0,
        f.size,
        f.mxcsr_mask,
        if f.fpu_ptrs_bug { "on" } else { "off" }
    ))
}

/// FCW, MXCSR and XMM0 as the registers hold them (for [`selftest`]).
fn registers() -> (u16, u32, [u8; 16]) {
    let b = fxsave_now();
    let mut xmm0 = [0u8; 16];
    xmm0.copy_from_slice(&b[160..176]);
    (
        u16::from_le_bytes([b[0], b[1]]),
        u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
        xmm0,
    )
}
