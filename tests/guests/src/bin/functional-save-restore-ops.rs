//! What libxenguest's PV save and restore issue besides memory and `vcpu_guest_context` (Xen
//! 4.17 `tools/libs/guest/xg_sr_*`), with Xen's answers (xen/arch/x86/domctl.c, mm.c).
//!
//! Alone (dom0, also on the Xen rig): the save's map of the M2P (`XENMEM_maximum_ram_page`,
//! `XENMEM_machphys_mfn_list`, then each 2 MiB chunk's first and last frames mapped read-only by
//! naming `DOMID_XEN` in `mmu_update`; a writable mapping, or one naming itself, -EBUSY) reads
//! what the guest-visible M2P holds; `getpageframeinfo3` gives its own L4 as a pinned L4, a
//! data frame as NOTAB and an M2P frame or a frame past memory as XTAB, more than 1024 entries
//! -E2BIG; the calling vCPU is refused for get_ext_vcpucontext (-ESRCH), getvcpuextstate and
//! get_vcpu_msrs (-EINVAL), and a vCPU the domain does not have is -ESRCH; `shadow_op` on
//! itself -EINVAL.
//!
//! With `peer` (Hestia only: the rig boots no domU), dom0 next to a boot-time domU running this
//! kernel with `domu`, which waits: dom0 pauses it and reads and writes back its state as a
//! save and a restore would (its L4 a pinned L4, its extended context, its XSAVE state and the
//! refusals of bad XSAVE records, its MSRs, `shadow_op` OFF and GET_ALLOCATION, log-dirty
//! -EOPNOTSUPP), then shuts it down.
#![no_std]
#![no_main]

use hestia_guests::control::{arg, domctl, domctl_op};
use hestia_guests::xen_abi::domctl::{
    ExtVcpuContext, GetPageFrameInfo3, ShadowOp, VcpuContext, VcpuExtState, VcpuMsr, VcpuMsrs,
    cmd as dcmd, pfinfo, shadow_op,
};
use hestia_guests::xen_abi::memory::{MachphysMfnList, cmd};
use hestia_guests::xen_abi::mmu::MmuUpdate;
use hestia_guests::xen_abi::sched::{SchedRemoteShutdown, cmd as sched, reason};
use hestia_guests::xen_abi::vcpu::VcpuGuestContext;
use hestia_guests::xen_abi::xen::{DOMID_SELF, DOMID_XEN, StartInfo, hypercall as nr};
use hestia_guests::{
    Verdict, check, cmdline, hypercall, l1e_maddr, m2p, memory_op, pfn_to_mfn, println,
};

const ESRCH: i64 = -3;
const EIO: i64 = -5;
const E2BIG: i64 = -7;
const EBUSY: i64 = -16;
const EINVAL: i64 = -22;
const ENOBUFS: i64 = -105;
const EOPNOTSUPP: i64 = -95;

const DOMU: u16 = 1;
/// Present, user, accessed; and writable.
const PTE_RO: u64 = 0x25;
const PTE_RW: u64 = 0x67;
/// A vCPU id no domain has.
const NO_VCPU: u32 = 4096;

/// A page of this image whose L1 entry the test points at M2P frames.
#[repr(C, align(4096))]
struct Page([u64; 512]);
static mut WINDOW: Page = Page([0; 512]);
/// Room for a vCPU context, and for an XSAVE record (up to 16 bytes + 8 KiB).
static mut BUF: [u8; 8192 + 64] = [0; 8192 + 64];

fn window() -> u64 {
    core::ptr::addr_of!(WINDOW) as u64
}

fn window_word(i: usize) -> u64 {
    // SAFETY: WINDOW is a page of this image, mapped (to whatever frame) throughout.
    unsafe { core::ptr::read_volatile((window() as *const u64).add(i)) }
}

fn buf() -> u64 {
    core::ptr::addr_of_mut!(BUF) as u64
}

fn buf_u64(at: usize) -> u64 {
    // SAFETY: callers stay inside BUF, which only this vCPU (or the hypervisor in the call
    // before) writes.
    unsafe { core::ptr::read_unaligned((buf() as *const u8).add(at).cast::<u64>()) }
}

fn set_buf_u64(at: usize, v: u64) {
    // SAFETY: as in `buf_u64`.
    unsafe { core::ptr::write_unaligned((buf() as *mut u8).add(at).cast::<u64>(), v) }
}

/// `mmu_update` of one entry with `foreigndom`.
fn mmu(ptr: u64, val: u64, foreigndom: u16) -> i64 {
    let req = MmuUpdate { ptr, val };
    hypercall(
        nr::MMU_UPDATE,
        &req as *const MmuUpdate as u64,
        1,
        0,
        u64::from(foreigndom),
        0,
    )
}

/// `getpageframeinfo3` of `domid` on `frames`, replaced by their types.
fn pfinfo3(domid: u16, frames: &mut [u64]) -> i64 {
    let a = GetPageFrameInfo3 {
        num: frames.len() as u64,
        array: frames.as_mut_ptr() as u64,
    };
    domctl(&mut domctl_op(dcmd::GETPAGEFRAMEINFO3, domid, &a))
}

fn ext_ctx(cmd: u32, domid: u16, e: &ExtVcpuContext) -> (i64, ExtVcpuContext) {
    let mut op = domctl_op(cmd, domid, e);
    let r = domctl(&mut op);
    (r, arg(&op.u))
}

fn ext_state(cmd: u32, domid: u16, e: VcpuExtState) -> (i64, VcpuExtState) {
    let mut op = domctl_op(cmd, domid, &e);
    let r = domctl(&mut op);
    (r, arg(&op.u))
}

fn msrs(cmd: u32, domid: u16, vcpu: u32, list: &mut [VcpuMsr], count: u32) -> (i64, VcpuMsrs) {
    let a = VcpuMsrs {
        vcpu,
        msr_count: count,
        msrs: if list.is_empty() {
            0
        } else {
            list.as_mut_ptr() as u64
        },
    };
    let mut op = domctl_op(cmd, domid, &a);
    let r = domctl(&mut op);
    (r, arg(&op.u))
}

fn shadow(domid: u16, op: u32) -> (i64, ShadowOp) {
    let a = ShadowOp {
        op,
        mb: 77,
        ..ShadowOp::default()
    };
    let mut o = domctl_op(dcmd::SHADOW_OP, domid, &a);
    let r = domctl(&mut o);
    (r, arg(&o.u))
}

fn test(si: &StartInfo) -> Verdict {
    if cmdline(si).contains("domu") {
        // Waits for dom0 to read it and shut it down.
        loop {
            hypercall(nr::SCHED_OP, u64::from(sched::YIELD), 0, 0, 0, 0);
        }
    }
    let mut failed = false;
    alone(si, &mut failed);
    if cmdline(si).contains("peer") {
        with_domu(&mut failed);
    }
    if failed {
        Verdict::Failure("see above")
    } else {
        Verdict::Success
    }
}

/// The cases a lone domain can run on itself.
fn alone(si: &StartInfo, failed: &mut bool) {
    let mut f = false;
    // The M2P as the save maps it.
    let max_page = memory_op(cmd::MAXIMUM_RAM_PAGE, &mut 0u64);
    check!(f, max_page > 0, "maximum_ram_page {max_page}");
    let mut chunks = [0u64; 64];
    let mut l = MachphysMfnList {
        max_extents: chunks.len() as u32,
        extent_start: chunks.as_mut_ptr() as u64,
        ..MachphysMfnList::default()
    };
    let r = memory_op(cmd::MACHPHYS_MFN_LIST, &mut l);
    let needed = (max_page.max(0) as u64 * 8).div_ceil(2 << 20);
    check!(
        f,
        r == 0 && u64::from(l.nr_extents) >= needed.min(64) && l.nr_extents > 0,
        "machphys_mfn_list {r}, {} chunks for {needed}",
        l.nr_extents
    );
    let Some(l1e) = l1e_maddr(si, window()) else {
        println!("FAIL: no L1 entry for the window");
        *failed = true;
        return;
    };
    let own = (pfn_to_mfn(si, window() >> 12) << 12) | PTE_RW;
    let m2p0 = chunks[0];
    check!(
        f,
        mmu(l1e, (m2p0 << 12) | PTE_RW, DOMID_XEN) == EBUSY,
        "writable M2P mapping"
    );
    check!(
        f,
        mmu(l1e, (m2p0 << 12) | PTE_RO, DOMID_SELF) == EBUSY,
        "M2P as its own frame"
    );
    for (i, &first) in chunks
        .iter()
        .take(l.nr_extents.min(64) as usize)
        .enumerate()
    {
        for (n, mfn) in [(0, first), (511, first + 511)] {
            let r = mmu(l1e, (mfn << 12) | PTE_RO, DOMID_XEN);
            let entry = (i as u64 * 512 + n) * 512;
            let same = r == 0 && (0..512).all(|w| window_word(w) == m2p(entry + w as u64));
            check!(
                f,
                same,
                "chunk {i} frame {n}: map {r}, contents as the M2P: {same}"
            );
        }
    }
    check!(f, mmu(l1e, own, DOMID_SELF) == 0, "window back");

    // getpageframeinfo3 on itself.
    let l4 = pfn_to_mfn(si, si.pt_base >> 12);
    let data = pfn_to_mfn(si, window() >> 12);
    let mut frames = [l4, data, m2p0, max_page.max(0) as u64 + 5];
    let r = pfinfo3(DOMID_SELF_ID, &mut frames);
    let want = [
        pfinfo::L4TAB | pfinfo::LPINTAB,
        pfinfo::NOTAB,
        pfinfo::XTAB,
        pfinfo::XTAB,
    ];
    let got = frames.map(|t| t as u32);
    check!(
        f,
        r == 0 && got == want,
        "getpageframeinfo3 {r}: {got:x?}, want {want:x?}"
    );
    let mut many = [0u64; 1025];
    check!(f, pfinfo3(DOMID_SELF_ID, &mut many) == E2BIG, "1025 frames");

    // The calling vCPU, a missing one.
    let e = ExtVcpuContext::default();
    let (r, _) = ext_ctx(dcmd::GET_EXT_VCPUCONTEXT, DOMID_SELF_ID, &e);
    check!(f, r == ESRCH, "get_ext_vcpucontext of itself: {r}");
    let e = ExtVcpuContext {
        vcpu: NO_VCPU,
        ..ExtVcpuContext::default()
    };
    let (r, _) = ext_ctx(dcmd::GET_EXT_VCPUCONTEXT, DOMID_SELF_ID, &e);
    check!(f, r == ESRCH, "get_ext_vcpucontext of a missing vCPU: {r}");
    let (r, _) = ext_state(
        dcmd::GETVCPUEXTSTATE,
        DOMID_SELF_ID,
        VcpuExtState::default(),
    );
    check!(f, r == EINVAL, "getvcpuextstate of itself: {r}");
    let missing = VcpuExtState {
        vcpu: NO_VCPU,
        ..VcpuExtState::default()
    };
    let (r, _) = ext_state(dcmd::GETVCPUEXTSTATE, DOMID_SELF_ID, missing);
    check!(f, r == ESRCH, "getvcpuextstate of a missing vCPU: {r}");
    let (r, _) = msrs(dcmd::GET_VCPU_MSRS, DOMID_SELF_ID, 0, &mut [], 0);
    check!(f, r == EINVAL, "get_vcpu_msrs of itself: {r}");
    let (r, _) = msrs(dcmd::GET_VCPU_MSRS, DOMID_SELF_ID, NO_VCPU, &mut [], 0);
    check!(f, r == ESRCH, "get_vcpu_msrs of a missing vCPU: {r}");
    let (r, _) = shadow(DOMID_SELF_ID, shadow_op::OFF);
    check!(f, r == EINVAL, "shadow_op on itself: {r}");
    *failed |= f;
}

/// dom0's own id (domctls name domains by id; `DOMID_SELF` is -ESRCH there).
const DOMID_SELF_ID: u16 = 0;

/// The cases on a paused domU.
fn with_domu(failed: &mut bool) {
    let mut f = false;
    check!(
        f,
        hestia_guests::control::domctl_on(dcmd::PAUSEDOMAIN, DOMU) == 0,
        "pause"
    );
    let ctx = VcpuContext {
        vcpu: 0,
        _pad: 0,
        ctxt: buf(),
    };
    let r = domctl(&mut domctl_op(dcmd::GETVCPUCONTEXT, DOMU, &ctx));
    // SAFETY: BUF is larger than a context and 8-byte aligned enough for a byte copy.
    let c: VcpuGuestContext =
        unsafe { core::ptr::read_unaligned(buf() as *const VcpuGuestContext) };
    let mut frames = [c.ctrlreg[3] >> 12];
    let t = pfinfo3(DOMU, &mut frames);
    check!(
        f,
        r == 0 && t == 0 && frames[0] as u32 == pfinfo::L4TAB | pfinfo::LPINTAB,
        "domU's L4: {r} {t} {:#x}",
        frames[0]
    );

    // Extended context: read, written back, bad ones refused.
    let (r, got) = ext_ctx(dcmd::GET_EXT_VCPUCONTEXT, DOMU, &ExtVcpuContext::default());
    check!(
        f,
        r == 0 && got.size == 64 && got.mcg_cap & 0xff == 2,
        "get_ext_vcpucontext {r}: size {} mcg_cap {:#x}",
        got.size,
        got.mcg_cap
    );
    let (r, _) = ext_ctx(dcmd::SET_EXT_VCPUCONTEXT, DOMU, &got);
    check!(f, r == 0, "set_ext_vcpucontext of what get gave: {r}");
    for (what, bad) in [
        ("short", ExtVcpuContext { size: 31, ..got }),
        (
            "MCG_CAP",
            ExtVcpuContext {
                mcg_cap: got.mcg_cap | 1 << 40,
                ..got
            },
        ),
        (
            "eip",
            ExtVcpuContext {
                sysenter_callback_eip: 1 << 63,
                ..got
            },
        ),
    ] {
        let (r, _) = ext_ctx(dcmd::SET_EXT_VCPUCONTEXT, DOMU, &bad);
        check!(f, r == EINVAL, "set_ext_vcpucontext {what}: {r}");
    }

    // XSAVE state: the query, the record, the record written back, bad records.
    let (r, q) = ext_state(dcmd::GETVCPUEXTSTATE, DOMU, VcpuExtState::default());
    let size = q.size as usize;
    let fits = (16 + 576..=8192).contains(&size);
    if r == 0 && q.xfeature_mask == 0 && size == 16 {
        // No XSAVE: XCR0 and XCR0_ACCUM 0, and a record of them restores nothing.
        let rec = VcpuExtState {
            size: 16,
            buffer: buf(),
            ..VcpuExtState::default()
        };
        let (r, _) = ext_state(dcmd::GETVCPUEXTSTATE, DOMU, rec);
        let (r2, _) = ext_state(dcmd::SETVCPUEXTSTATE, DOMU, rec);
        check!(
            f,
            r == 0 && buf_u64(0) == 0 && r2 == 0,
            "no-XSAVE record: {r} {r2}"
        );
    } else {
        check!(
            f,
            r == 0 && q.xfeature_mask & 3 == 3 && fits,
            "getvcpuextstate query {r}: mask {:#x} size {size}",
            q.xfeature_mask
        );
        if fits {
            xsave_records(&mut f, q);
        }
    }
    // MSRs: how many there can be, the ones set (none), a refused write.
    let (r, m) = msrs(dcmd::GET_VCPU_MSRS, DOMU, 0, &mut [], 0);
    check!(
        f,
        r == 0 && (m.msr_count == 7 || m.msr_count == 11),
        "msr count {r} {}",
        m.msr_count
    );
    let mut list = [VcpuMsr::default(); 11];
    let (r, m) = msrs(dcmd::GET_VCPU_MSRS, DOMU, 0, &mut list, 11);
    check!(
        f,
        r == 0 || r == ENOBUFS,
        "get_vcpu_msrs {r} ({} set)",
        m.msr_count
    );
    list[0] = VcpuMsr {
        index: 0x48,
        reserved: 1,
        value: 0,
    };
    let (r, m) = msrs(dcmd::SET_VCPU_MSRS, DOMU, 0, &mut list, 1);
    check!(
        f,
        r == EINVAL && m.msr_count == 0,
        "reserved word set: {r} {}",
        m.msr_count
    );
    let (r, _) = msrs(dcmd::SET_VCPU_MSRS, DOMU, 0, &mut list, 12);
    check!(f, r == EINVAL, "12 MSRs: {r}");

    // No shadow paging: OFF and the pool's size answer, log-dirty does not.
    let (r, _) = shadow(DOMU, shadow_op::OFF);
    check!(f, r == 0, "shadow_op OFF: {r}");
    let (r, s) = shadow(DOMU, shadow_op::GET_ALLOCATION);
    check!(
        f,
        r == 0 && s.mb == 0,
        "shadow_op GET_ALLOCATION: {r} {}",
        s.mb
    );
    let (r, _) = shadow(DOMU, shadow_op::ENABLE_LOGDIRTY);
    check!(f, r == EOPNOTSUPP, "shadow_op ENABLE_LOGDIRTY: {r}");

    let s = SchedRemoteShutdown {
        domain_id: DOMU,
        _pad: 0,
        reason: reason::POWEROFF,
    };
    let r = hypercall(
        nr::SCHED_OP,
        u64::from(sched::REMOTE_SHUTDOWN),
        &s as *const SchedRemoteShutdown as u64,
        0,
        0,
        0,
    );
    check!(f, r == 0, "domU shut down: {r}");
    *failed |= f;
}

/// The XSAVE record of the domU's vCPU 0 (the query gave `q`): read, written back, bad ones.
fn xsave_records(failed: &mut bool, q: VcpuExtState) {
    let mut f = false;
    let rec = VcpuExtState {
        vcpu: 0,
        _pad: 0,
        xfeature_mask: q.xfeature_mask,
        size: q.size,
        buffer: buf(),
    };
    let (r, _) = ext_state(
        dcmd::GETVCPUEXTSTATE,
        DOMU,
        VcpuExtState {
            xfeature_mask: 1,
            ..rec
        },
    );
    check!(f, r == EINVAL, "getvcpuextstate with another mask: {r}");
    let (r, g) = ext_state(dcmd::GETVCPUEXTSTATE, DOMU, rec);
    let (xcr0, accum) = (buf_u64(0), buf_u64(8));
    check!(
        f,
        r == 0 && g.size == q.size && xcr0 & 1 == 1 && xcr0 & !accum == 0,
        "getvcpuextstate {r}: size {} xcr0 {xcr0:#x} accum {accum:#x}",
        g.size
    );
    let (r, _) = ext_state(dcmd::SETVCPUEXTSTATE, DOMU, rec);
    check!(f, r == 0, "setvcpuextstate of what get gave: {r}");
    let (r, _) = ext_state(
        dcmd::SETVCPUEXTSTATE,
        DOMU,
        VcpuExtState {
            size: q.size + 1,
            ..rec
        },
    );
    check!(f, r == EINVAL, "setvcpuextstate past the area: {r}");
    let bv = buf_u64(16 + 512);
    for (what, at, v, want) in [
        ("XSTATE_BV outside accum", 16 + 512, bv | 1 << 62, EINVAL),
        ("compacted", 16 + 520, 1 << 63, EOPNOTSUPP),
        ("reserved header word", 16 + 568, 1, EIO),
    ] {
        let old = buf_u64(at);
        set_buf_u64(at, v);
        let (r, _) = ext_state(dcmd::SETVCPUEXTSTATE, DOMU, rec);
        check!(f, r == want, "setvcpuextstate with {what}: {r}");
        set_buf_u64(at, old);
    }
    *failed |= f;
}

hestia_guests::guest_main!(test);
