//! Grants between two domains (dom0 and a boot-time domU), the cases one domain cannot show
//! alone. The domU (`domu` on its command line) sets up its table, grants a page to dom0 and
//! another to a third domain, waits until it sees `GTF_reading|GTF_writing` (dom0 mapped it),
//! and powers off while dom0 still maps its page. dom0, the privileged caller, sets up and
//! queries the domU's table (`setup_table`/`query_size` for another domain), maps the domU's
//! grant writable (retrying while it is not granted yet) and reads the domU's data through it;
//! the domU's reference granted to someone else is `GNTST_general_error` and one beyond its
//! table `GNTST_bad_gntref`; copies from the grant work. Once the domU is destroyed (its id no
//! longer found), dom0's mapping still shows its data (as in Xen, the frame stays until the
//! last mapping goes), and the unmap succeeds; Hestia then frees the frame (the harness looks
//! for its line). Failed before grant tables existed (-ENOSYS).
//!
//! While dom0 maps a destroyed domU's frame, that domU (a zombie) keeps its id: creating a
//! domain with it is EEXIST until the unmap frees the frame, then it succeeds (before the
//! table kept zombies' ids, the new domain got the id at once).
//!
//! With `two` on dom0's command line, two domUs (d1, d2) do the same; dom0 unmaps the frame of
//! the one destroyed first, and the other's a while later: the first must be freed before the
//! second (both destroyed domains are zombies; an unmap must get each swept, not only the
//! last one). Before the reaper swept every zombie, the first stayed until the second went.
#![no_std]
#![no_main]

use hestia_guests::control::{create_domain, domctl_on, pv_domain_config};
use hestia_guests::grant::{
    Page, entry_flags, grant, grant_table_op, map_at, mfn_of, query_size, remap, setup_own_table,
    unmap,
};
use hestia_guests::xen_abi::domctl;
use hestia_guests::xen_abi::grant_table::{
    CopyPtr, GnttabCopy, SetupTable, cmd, gntcopy, gntst, gtf,
};
use hestia_guests::xen_abi::sched;
use hestia_guests::xen_abi::xen::{DOMID_SELF, StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, cmdline, hypercall, println};

static mut TABLE: Page = Page([0; 4096]);
static mut DATA: Page = Page([0; 4096]);
static mut WINDOW: Page = Page([0; 4096]);
static mut WINDOW2: Page = Page([0; 4096]);
static mut BUF: Page = Page([0; 4096]);

const DOMU: u16 = 1;
const EEXIST: i64 = -17;
const SHARED_REF: u32 = 8;
const OTHERS_REF: u32 = 9;
/// Polls before giving up (each yields the CPU).
const PATIENCE: u32 = 20_000_000;
/// Yields after an unmap, for the reaper to free the dead granter's frame.
const SETTLE: u32 = 100_000;

fn yield_cpu() {
    hypercall(nr::SCHED_OP, u64::from(sched::cmd::YIELD), 0, 0, 0, 0);
}

fn read(va: u64, off: usize) -> u8 {
    // SAFETY: `va` is a mapped page of the image (or a grant mapped over one); `off` < 4096.
    unsafe { core::ptr::read_volatile((va as *const u8).add(off)) }
}

fn as_domu(si: &StartInfo) -> Verdict {
    // SAFETY: the statics are only reached through these (one vCPU).
    let table = unsafe { &*core::ptr::addr_of!(TABLE) };
    let data = core::ptr::addr_of!(DATA) as u64;
    // SAFETY: our own page, mapped writable.
    unsafe { core::ptr::write_bytes(data as *mut u8, 0xd1, 4096) };
    if let Err(why) = setup_own_table(table) {
        return Verdict::Failure(why);
    }
    let data_mfn = mfn_of(si, data);
    grant(table, OTHERS_REF, 7, data_mfn, gtf::PERMIT_ACCESS);
    grant(table, SHARED_REF, 0, data_mfn, gtf::PERMIT_ACCESS);
    let want = gtf::PERMIT_ACCESS | gtf::READING | gtf::WRITING;
    for _ in 0..PATIENCE {
        if entry_flags(table, SHARED_REF) == want {
            println!("dom0 maps the page: powering off under its mapping");
            return Verdict::Success;
        }
        yield_cpu();
    }
    Verdict::Failure("dom0 never mapped the grant")
}

/// dom0's part with the domU `domu`, which maps its grant at `window`: setup_table and
/// query_size of its table, the map (retried until the grant is there), the refused refs and a
/// copy. The mapping's handle, or None if there is no mapping.
fn take(si: &StartInfo, domu: u16, window: u64, failed_out: &mut bool) -> Option<u32> {
    let mut failed = false;
    let buf = core::ptr::addr_of!(BUF) as u64;
    let buf_mfn = mfn_of(si, buf);
    // The privileged caller sizes and sets up the domU's table.
    let mut frame = 0u64;
    let mut st = [SetupTable {
        dom: domu,
        nr_frames: 1,
        frame_list: &mut frame as *mut u64 as u64,
        ..SetupTable::default()
    }];
    let r = grant_table_op(cmd::SETUP_TABLE, &mut st);
    check!(
        failed,
        r == 0 && st[0].status == gntst::OKAY && frame != 0,
        "setup_table of d{domu}: {r} {}",
        st[0].status
    );
    let (r, s, nr, _) = query_size(domu);
    check!(
        failed,
        r == 0 && s == 0 && nr == 1,
        "query_size of d{domu}: {r} {s} {nr}"
    );

    // Map the domU's grant as soon as it is there.
    let mut m = map_at(domu, SHARED_REF, window, 0);
    let mut polls = 0;
    while m.status == gntst::GENERAL_ERROR && polls < PATIENCE {
        yield_cpu();
        polls += 1;
        m = map_at(domu, SHARED_REF, window, 0);
    }
    if m.status != gntst::OKAY {
        println!("FAIL: mapping d{domu}'s grant: {}", m.status);
        *failed_out = true;
        return None;
    }
    check!(
        failed,
        read(window, 123) == 0xd1,
        "d{domu}'s data not seen through the grant"
    );
    let s = map_at(domu, OTHERS_REF, buf, 0).status;
    check!(
        failed,
        s == gntst::GENERAL_ERROR,
        "d{domu}'s ref granted to d7: {s}"
    );
    let s = map_at(domu, 5000, buf, 0).status;
    check!(
        failed,
        s == gntst::BAD_GNTREF,
        "a ref beyond d{domu}'s table: {s}"
    );
    let mut c = [GnttabCopy {
        source: CopyPtr {
            u: u64::from(SHARED_REF),
            domid: domu,
            offset: 16,
            ..CopyPtr::default()
        },
        dest: CopyPtr {
            u: buf_mfn,
            domid: DOMID_SELF,
            offset: 0,
            ..CopyPtr::default()
        },
        len: 32,
        flags: gntcopy::SOURCE_GREF,
        ..GnttabCopy::default()
    }];
    let r = grant_table_op(cmd::COPY, &mut c);
    check!(
        failed,
        r == 0 && c[0].status == gntst::OKAY && (0..32).all(|i| read(buf, i) == 0xd1),
        "copy from d{domu}'s grant: {r} {}",
        c[0].status
    );
    *failed_out |= failed;
    Some(m.handle)
}

fn test(si: &StartInfo) -> Verdict {
    if cmdline(si).split(' ').any(|w| w == "domu") {
        return as_domu(si);
    }
    let mut failed = false;
    // With `two`, domUs 1 and 2 each grant a page, mapped at WINDOW and WINDOW2.
    let windows = [
        core::ptr::addr_of!(WINDOW) as u64,
        core::ptr::addr_of!(WINDOW2) as u64,
    ];
    let nr = if cmdline(si).split(' ').any(|w| w == "two") {
        2
    } else {
        1
    };
    let mut handles = [0u32; 2];
    for (i, (&window, handle)) in windows.iter().zip(&mut handles).take(nr).enumerate() {
        match take(si, DOMU + i as u16, window, &mut failed) {
            Some(h) => *handle = h,
            None => return Verdict::Failure("no mapping of a domU's grant"),
        }
    }

    // The domUs power off under the mappings; dom0 notes which one leaves the domain table
    // first (the first zombie) and unmaps its frame first.
    let mut order = [0usize, 1];
    let mut gone = [false; 2];
    let mut first = None;
    let mut polls = 0;
    while gone.iter().take(nr).any(|g| !g) && polls < PATIENCE {
        for (i, g) in gone.iter_mut().enumerate().take(nr) {
            if !*g && query_size(DOMU + i as u16).1 == gntst::BAD_DOMAIN {
                *g = true;
                first.get_or_insert(i);
            }
        }
        yield_cpu();
        polls += 1;
    }
    check!(failed, polls < PATIENCE, "the domUs never went away");
    if first == Some(1) {
        order = [1, 0];
    }
    for &i in order.iter().take(nr) {
        let (domu, window, handle) = (DOMU + i as u16, windows[i], handles[i]);
        check!(
            failed,
            (0..4096).step_by(512).all(|i| read(window, i) == 0xd1),
            "d{domu}'s frame changed under the mapping"
        );
        // A zombie keeps its id: no new domain may take it while its frame is mapped.
        let (r, _) = create_domain(domu, &pv_domain_config(1));
        check!(
            failed,
            r == EEXIST,
            "createdomain of dead d{domu}'s id while its frame is mapped: {r}"
        );
        // Once one zombie's frame is unmapped, Hestia frees it while the other stays mapped
        // (the harness checks its line comes first), not only once no zombie is left.
        println!("unmapping dead d{domu}'s frame");
        let s = unmap(handle, window, 0);
        check!(
            failed,
            s == gntst::OKAY,
            "unmap of dead d{domu}'s frame: {s}"
        );
        remap(window, mfn_of(si, window));
        // Time for the reaper on the idle CPU.
        for _ in 0..SETTLE {
            yield_cpu();
        }
        // Its id is free again once its last frame went.
        let mut polls = 0;
        let r = loop {
            let (r, _) = create_domain(domu, &pv_domain_config(1));
            if r != EEXIST || polls >= PATIENCE {
                break r;
            }
            yield_cpu();
            polls += 1;
        };
        check!(failed, r == 0, "createdomain of freed d{domu}'s id: {r}");
        if r == 0 {
            let r = domctl_on(domctl::cmd::DESTROYDOMAIN, domu);
            check!(failed, r == 0, "destroydomain of the new d{domu}: {r}");
        }
    }

    if failed {
        Verdict::Failure("grants between domains")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
