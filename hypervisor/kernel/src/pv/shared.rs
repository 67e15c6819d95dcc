//! A domain's shared_info page as Hestia writes it: event bits (atomically, since the guest
//! changes the same words), per-vCPU time (`vcpu_time_info`, version-counted) and the wallclock.
//! Layout: `public/xen.h` (`shared_info`, `vcpu_info`, `vcpu_time_info`); offsets are asserted
//! in `xen-abi`. A vCPU's `vcpu_info` is slot `v` of the page until the guest moves it into one
//! of its own pages (`VCPUOP_register_vcpu_info`). The FIFO ABI's event words and control
//! blocks, in guest frames, are reached through the same accessor ([`GuestWords`]).

use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

use hestia_core::evtchn::SharedBits;
use hestia_core::evtchn::fifo::{GuestWords, WordAt};
use hestia_core::ids::{Mfn, Port, VcpuId};
use hestia_core::time::TimeScale;
use xen_abi::xen::{SharedInfo, VcpuInfo};

use crate::arch::x86_64::{cpu, percpu, tsc};
use crate::mm::phys_to_virt;

/// The shared_info page of one domain, and where its vCPUs' `vcpu_info` live.
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    base: u64,
    /// Direct-map address of each vCPU's registered `vcpu_info`, 0 for the shared_info slot.
    moved: &'a [AtomicU64],
}

const VCPU_INFO: u64 = size_of::<VcpuInfo>() as u64;
/// Offsets at and above this name a `vcpu_info` field: `VCPU_FIELD + (vcpu << 16) + field`.
const VCPU_FIELD: u64 = 1 << 32;
const PENDING: u64 = core::mem::offset_of!(SharedInfo, evtchn_pending) as u64;
const MASK: u64 = core::mem::offset_of!(SharedInfo, evtchn_mask) as u64;
const WC_VERSION: u64 = core::mem::offset_of!(SharedInfo, wc_version) as u64;
const SEL: u64 = core::mem::offset_of!(VcpuInfo, evtchn_pending_sel) as u64;
const TIME: u64 = core::mem::offset_of!(VcpuInfo, time) as u64;
// `LoadedVcpuInfo` reads both flags with one load: pending in the low byte, mask in the high.
const _: () = assert!(core::mem::offset_of!(VcpuInfo, evtchn_upcall_pending) == 0);
const _: () = assert!(core::mem::offset_of!(VcpuInfo, evtchn_upcall_mask) == 1);

/// The `vcpu_info` of the vCPU loaded on this CPU, at the address `context::load` published for
/// it (`percpu::return_check`, which `VCPUOP_register_vcpu_info` keeps current): what the
/// paths of a trap from that vCPU read and set its upcall flags through, without finding it
/// again in its domain.
#[derive(Clone, Copy)]
pub struct LoadedVcpuInfo(u64);

impl LoadedVcpuInfo {
    /// That of the vCPU loaded here, if one is.
    #[inline(always)]
    pub fn here() -> Option<Self> {
        let a = percpu::return_check();
        (a != 0).then_some(LoadedVcpuInfo(a))
    }

    fn flags(self) -> &'static AtomicU16 {
        // SAFETY: as in `Shared::u64_at`: a `vcpu_info` (64-byte aligned) stays mapped while
        // its domain exists, which it does while its vCPU is loaded; the guest changes it,
        // hence the atomic.
        unsafe { &*(self.0 as *const AtomicU16) }
    }

    fn mask(self) -> &'static AtomicU8 {
        // SAFETY: as in `flags`, the byte after the pending flag.
        unsafe { &*((self.0 + 1) as *const AtomicU8) }
    }

    /// Whether it asks for an upcall: an event pending and upcalls not masked. Both flags in
    /// one load, for the return path.
    #[inline(always)]
    pub fn upcall_wanted(self) -> bool {
        let w = self.flags().load(Ordering::Acquire);
        w & 0xff != 0 && w >> 8 == 0
    }

    /// `evtchn_upcall_mask` (the guest's "interrupts off").
    pub fn upcall_mask(self) -> bool {
        self.mask().load(Ordering::Acquire) != 0
    }

    /// Sets `evtchn_upcall_mask`.
    pub fn set_upcall_mask(self, masked: bool) {
        self.mask().store(u8::from(masked), Ordering::Release);
    }
}

impl<'a> Shared<'a> {
    /// The page at machine frame `mfn` (a Hestia-owned frame shared with the domain), with the
    /// registered `vcpu_info` locations `moved`.
    pub fn new(mfn: Mfn, moved: &'a [AtomicU64]) -> Self {
        Shared {
            base: phys_to_virt(mfn.addr()),
            moved,
        }
    }

    /// The address of `off` in the page, or of a `vcpu_info` field (`off` >= [`VCPU_FIELD`]
    /// encodes vCPU and field, see [`Self::vcpu`]).
    fn addr(&self, off: u64) -> u64 {
        if off >= VCPU_FIELD {
            let (v, field) = ((off - VCPU_FIELD) >> 16, off & 0xffff);
            let moved = self
                .moved
                .get(v as usize)
                .map_or(0, |m| m.load(Ordering::Acquire));
            let base = if moved != 0 {
                moved
            } else {
                self.base + (v % 32) * VCPU_INFO
            };
            base + field
        } else {
            self.base + off
        }
    }

    fn u64_at(&self, off: u64) -> &AtomicU64 {
        // SAFETY: `addr` is 8-byte aligned inside the shared_info frame (offsets of
        // `SharedInfo` fields with bounded indices) or inside a registered `vcpu_info` (a
        // 64-byte, 64-byte-aligned block in a guest frame Hestia holds a writable type
        // reference on, so it stays the domain's ordinary memory); both stay mapped in the
        // direct map while the domain exists.
        unsafe { &*(self.addr(off) as *const AtomicU64) }
    }

    fn u32_at(&self, off: u64) -> &AtomicU32 {
        // SAFETY: as in `u64_at`, 4-byte aligned.
        unsafe { &*(self.addr(off) as *const AtomicU32) }
    }

    fn u8_at(&self, off: u64) -> &AtomicU8 {
        // SAFETY: as in `u64_at`.
        unsafe { &*(self.addr(off) as *const AtomicU8) }
    }

    fn bit(port: Port) -> (u64, u64) {
        let port = port.raw();
        (u64::from(port % 4096 / 64) * 8, 1 << (port % 64))
    }

    /// The encoded offset of vCPU `v`'s `vcpu_info` (add a field offset).
    fn vcpu(v: VcpuId) -> u64 {
        VCPU_FIELD + (u64::from(v.raw()) << 16)
    }

    /// The direct-map address of vCPU `v`'s `vcpu_info`, for [`LoadedVcpuInfo`].
    pub fn vcpu_info_addr(&self, v: VcpuId) -> u64 {
        self.addr(Self::vcpu(v))
    }

    /// `evtchn_upcall_mask` of vCPU `v` (the guest's "interrupts off").
    pub fn upcall_mask(&self, v: VcpuId) -> bool {
        self.u8_at(Self::vcpu(v) + 1).load(Ordering::Acquire) != 0
    }

    /// Records the faulting address of a page fault bounced to vCPU `v` (`vcpu_info.arch.cr2`).
    pub fn set_cr2(&self, v: VcpuId, cr2: u64) {
        self.u64_at(Self::vcpu(v) + core::mem::offset_of!(VcpuInfo, cr2) as u64)
            .store(cr2, Ordering::Relaxed);
    }

    /// `evtchn_upcall_pending` of vCPU `v`.
    pub fn upcall_pending(&self, v: VcpuId) -> bool {
        self.u8_at(Self::vcpu(v)).load(Ordering::Acquire) != 0
    }

    /// Copies vCPU `v`'s current `vcpu_info` into `out`.
    pub fn copy_vcpu_info(&self, v: VcpuId, out: &mut [u8; VCPU_INFO as usize]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.u8_at(Self::vcpu(v) + i as u64).load(Ordering::Acquire);
        }
    }

    /// Marks every event selector word and the upcall of vCPU `v` pending (after a move of its
    /// `vcpu_info`, so that nothing set meanwhile is lost; the guest scans and finds what is
    /// really pending).
    pub fn mark_all_pending(&self, v: VcpuId) {
        self.u64_at(Self::vcpu(v) + SEL)
            .store(u64::MAX, Ordering::Release);
        self.u8_at(Self::vcpu(v)).store(1, Ordering::Release);
    }

    /// Writes vCPU `v`'s time information, version-counted (odd while updating); returns the
    /// TSC it was taken at.
    pub fn update_time(&self, v: VcpuId, scale: TimeScale, stable: bool) -> u64 {
        let t = Self::vcpu(v) + TIME;
        let version = self.u32_at(t);
        let ver = version.load(Ordering::Relaxed);
        version.store(ver.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let now = cpu::rdtsc();
        self.u64_at(t + 8).store(now, Ordering::Relaxed);
        self.u64_at(t + 16).store(
            tsc::ticks_to_ns(now.saturating_sub(tsc::boot_tsc())),
            Ordering::Relaxed,
        );
        self.u32_at(t + 24).store(scale.mul, Ordering::Relaxed);
        self.u8_at(t + 28)
            .store(scale.shift as u8, Ordering::Relaxed);
        self.u8_at(t + 29)
            .store(u8::from(stable), Ordering::Relaxed);
        fence(Ordering::SeqCst);
        version.store((ver.wrapping_add(1) | 1).wrapping_add(1), Ordering::Release);
        now
    }

    /// Sets the wallclock: the time of day at system time 0, version-counted.
    pub fn set_wallclock(&self, unix_sec: u64, nsec: u32) {
        let version = self.u32_at(WC_VERSION);
        let ver = version.load(Ordering::Relaxed);
        version.store(ver.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.u32_at(WC_VERSION + 4)
            .store(unix_sec as u32, Ordering::Relaxed);
        self.u32_at(WC_VERSION + 8).store(nsec, Ordering::Relaxed);
        self.u32_at(WC_VERSION + 12)
            .store((unix_sec >> 32) as u32, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        version.store((ver.wrapping_add(1) | 1).wrapping_add(1), Ordering::Release);
    }
}

impl SharedBits for Shared<'_> {
    fn test_and_set_pending(&mut self, port: Port) -> bool {
        let (w, b) = Self::bit(port);
        self.u64_at(PENDING + w).fetch_or(b, Ordering::AcqRel) & b != 0
    }
    fn clear_pending(&mut self, port: Port) {
        let (w, b) = Self::bit(port);
        self.u64_at(PENDING + w).fetch_and(!b, Ordering::AcqRel);
    }
    fn is_pending(&self, port: Port) -> bool {
        let (w, b) = Self::bit(port);
        self.u64_at(PENDING + w).load(Ordering::Acquire) & b != 0
    }
    fn is_masked(&self, port: Port) -> bool {
        let (w, b) = Self::bit(port);
        self.u64_at(MASK + w).load(Ordering::Acquire) & b != 0
    }
    fn test_and_clear_mask(&mut self, port: Port) -> bool {
        let (w, b) = Self::bit(port);
        self.u64_at(MASK + w).fetch_and(!b, Ordering::AcqRel) & b != 0
    }
    fn test_and_set_sel(&mut self, vcpu: u32, word: u32) -> bool {
        let b = 1u64 << (word % 64);
        self.u64_at(Self::vcpu(VcpuId::unvalidated(vcpu)) + SEL)
            .fetch_or(b, Ordering::AcqRel)
            & b
            != 0
    }
    fn set_upcall_pending(&mut self, vcpu: u32) {
        self.u8_at(Self::vcpu(VcpuId::unvalidated(vcpu)))
            .store(1, Ordering::Release);
    }
}

impl Shared<'_> {
    fn guest_word(at: WordAt) -> &'static AtomicU32 {
        // Clamped into the frame and aligned whatever the caller passes (they always are).
        let addr = phys_to_virt(at.mfn.addr()) + u64::from(at.offset & 0xffc);
        // SAFETY: `at` names a word of a FIFO frame the domain's event channels registered,
        // which holds a general and a writable type reference from registration until it is
        // released (`hestia_core::evtchn::fifo`): an ordinary RAM frame of the domain, never
        // freed meanwhile, mapped by the direct map; the offset is 4-byte aligned in it.
        unsafe { &*(addr as *const AtomicU32) }
    }
}

impl GuestWords for Shared<'_> {
    fn load(&self, at: WordAt) -> u32 {
        Self::guest_word(at).load(Ordering::Acquire)
    }
    fn store(&self, at: WordAt, value: u32) {
        Self::guest_word(at).store(value, Ordering::Release);
    }
    fn compare_exchange(&self, at: WordAt, old: u32, new: u32) -> u32 {
        Self::guest_word(at)
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .unwrap_or_else(|found| found)
    }
    fn fetch_or(&self, at: WordAt, bits: u32) -> u32 {
        Self::guest_word(at).fetch_or(bits, Ordering::AcqRel)
    }
    fn fetch_and(&self, at: WordAt, bits: u32) -> u32 {
        Self::guest_word(at).fetch_and(bits, Ordering::AcqRel)
    }
}
