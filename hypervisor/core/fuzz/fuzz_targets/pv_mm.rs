//! The PV MMU's frame table (`hestia_core::pv_mm::FrameTable`) driven by random operation
//! sequences over the fake memory of `pv_mm::model`, as hostile guests and the hypercalls
//! would: frames given, taken and stolen, references and types taken and dropped, tables
//! pinned, unpinned and updated, run to the end or by three vCPUs (two of one domain, one of
//! another) with tiny budgets that preempt them at any entry, resumed, abandoned or cancelled.
//! After every operation `FrameTable::audit` (the unit tests' check) verifies exact reference
//! and type counts, types and entries, accounting for the work under way and the references
//! this driver holds; and a model of the mappings removed since the last flush checks
//! invariant 5 (no frame changes use while a CPU may still translate a removed mapping of it).
//! The other domain is checked against L1TF (invariant 6), so its not-present entries are
//! refused part way through validations and updates too. Either domain can die and be built
//! again: its relinquishment, preempted at every few entries, must free exactly its frames
//! that nothing outside references, leave the rest of the table as it was, and audit clean.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Arbitrary, Unstructured};
use hestia_core::ids::Mfn;
use hestia_core::l1tf::SafeMaddr;
use hestia_core::pv_mm::model::FakeMem;
use hestia_core::pv_mm::{
    AuditCounts, Budget, DOM_IO, Dom, FrameInfo, FrameTable, Hold, MmError, PageType, Pending,
    Progress, PtMemory, Relinquish, pte,
};
use libfuzzer_sys::fuzz_target;

/// Frames in the table: 0-39 the guest's, 40-47 another domain's, 48-55 free, 56-59 firmware
/// (DOM_IO); 64 and up are device memory beyond the table.
const FRAMES: usize = 64;
const GUEST: Dom = 1;
const OTHER: Dom = 2;

/// A page-table entry built from a few interesting bits.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Entry {
    target: u8,
    flags: u8,
}

impl Entry {
    fn value(self) -> u64 {
        let bit = |n: u8, v: u64| if self.flags & (1 << n) != 0 { v } else { 0 };
        (u64::from(self.target % 72) << 12)
            | bit(0, pte::P)
            | bit(1, pte::RW)
            | bit(2, pte::US)
            | bit(3, pte::PS)
            | bit(4, pte::G)
            | bit(5, pte::NX)
            | bit(6, 1 << 52)
            // Without P, anything at all is stored.
            | if self.flags & 0x81 == 0x80 { 0xabc0 } else { 0 }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ty {
    Writable,
    Table(u8),
    SegDesc,
}

/// Who issues a table operation: the unbounded entry points for either domain, or one of
/// three vCPUs (0 and 1 of the guest, 2 of the other domain) with a budget of a few entries.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Actor {
    Unbounded { other: bool },
    Vcpu { n: u8, budget: u8 },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Assign {
        mfn: u8,
        n: u8,
        other: bool,
    },
    Release {
        mfn: u8,
        other: bool,
    },
    /// `XENMEM_exchange`'s take; the frames then stay free or go back.
    Steal {
        mfns: (u8, u8),
        other: bool,
        back: bool,
    },
    GetPage {
        mfn: u8,
        other: bool,
    },
    PutPage {
        mfn: u8,
    },
    GetPageType {
        mfn: u8,
        ty: Ty,
    },
    PutPageType {
        mfn: u8,
    },
    Pin {
        mfn: u8,
        level: u8,
        by: Actor,
    },
    Unpin {
        mfn: u8,
        by: Actor,
    },
    ModEntry {
        table: u8,
        level: u8,
        idx: u16,
        entry: Entry,
        by: Actor,
        /// A vCPU's update names the other domain as `mmu_update`'s foreign domain.
        foreign: bool,
    },
    FinishTeardown {
        vcpu: u8,
        budget: u8,
    },
    /// The vCPU goes away.
    Cancel {
        vcpu: u8,
    },
    /// The guest stores into one of its frames through a writable mapping (only frames that
    /// are not tables or descriptor pages can be written).
    Write {
        mfn: u8,
        idx: u16,
        value: u64,
    },
    /// Another descriptor-shaped word, for descriptor pages.
    WriteDescriptor {
        mfn: u8,
        idx: u16,
        desc: u64,
    },
    /// The domain dies and is built again with the frames it got back. With `outside`, the
    /// plain references this driver holds on its frames stand for another domain's (grant
    /// mappings): those frames are kept.
    Destroy {
        other: bool,
        budget: u8,
        outside: bool,
    },
}

/// The vCPUs' domains.
const VCPU_DOMS: [Dom; 3] = [GUEST, GUEST, OTHER];

fn dom(other: bool) -> Dom {
    if other { OTHER } else { GUEST }
}

/// vCPU `n % 3` and a budget: a few entries (0 preempts before any work), or enough for a
/// table or two.
fn vcpu(n: u8, budget: u8) -> (usize, Budget) {
    (usize::from(n % 3), Budget::new(entries(budget)))
}

/// A budget's entries: a few (0 preempts before any work), or enough for a table or two.
fn entries(budget: u8) -> u64 {
    if budget >= 128 {
        u64::from(budget) * 8
    } else {
        u64::from(budget % 16)
    }
}

fn mfn(m: u8) -> Mfn {
    Mfn::new(u64::from(m) % 68)
}

/// Slots 0-7 mostly, any slot sometimes (the L4's hypervisor slots included).
fn slot(idx: u16) -> usize {
    if idx & 0x8000 == 0 {
        usize::from(idx % 8)
    } else {
        usize::from(idx % 512)
    }
}

/// Present entries of tables a CPU may have walked, per target frame: (mappings, table
/// references). Those are the fully validated tables, and the ones among `live` (fully
/// validated at some point) being torn down, for the slots they still hold. A table part way
/// through a validation was never in use, nor is one whose abandoned validation is undone.
fn mappings(ft: &FrameTable<'_>, mem: &FakeMem, live: &BTreeSet<Mfn>) -> BTreeMap<Mfn, (u32, u32)> {
    let mut out: BTreeMap<Mfn, (u32, u32)> = BTreeMap::new();
    for m in (0..FRAMES as u64).map(Mfn::new) {
        let f = ft.info(m).expect("frame inside the table");
        let PageType::Table(level) = f.ty else {
            continue;
        };
        let end = match f.progress {
            _ if f.type_count == 0 => 0,
            Progress::Idle => 512,
            Progress::TearingDown { left, .. } if live.contains(&m) => usize::from(left),
            _ => 0,
        };
        for i in 0..end {
            let x = mem.read(m, i);
            if x & pte::P != 0 && !(level == 4 && (256..272).contains(&i)) {
                let c = out.entry(pte::mfn(x)).or_default();
                c.0 += 1;
                c.1 += u32::from(level > 1);
            }
        }
    }
    out
}

/// Invariant 5's model: frames that lost a mapping (or a reference as a table) since the last
/// full flush.
#[derive(Default)]
struct Stale {
    mapped: BTreeSet<Mfn>,
    table: BTreeSet<Mfn>,
}

impl Stale {
    /// Checks the frames' changes of use over one operation, then records its removals. The
    /// order of a flush and the removals within one operation is unknown (a teardown finished
    /// first, then a flush for the next claim, is correct): an operation that flushed is taken
    /// to have flushed after its removals.
    fn step(
        &mut self,
        before: (&[FrameInfo], &BTreeMap<Mfn, (u32, u32)>),
        after: (&[FrameInfo], &BTreeMap<Mfn, (u32, u32)>),
        flushed: bool,
    ) {
        if flushed {
            self.mapped.clear();
            self.table.clear();
        }
        for (m, (b, a)) in before.0.iter().zip(after.0).enumerate() {
            let m = Mfn::new(m as u64);
            let newly =
                |ty: fn(PageType) -> bool| b.type_count == 0 && a.type_count > 0 && ty(a.ty);
            if self.mapped.contains(&m) {
                assert!(
                    !newly(|t| matches!(t, PageType::Table(_) | PageType::SegDesc)),
                    "mfn {m} became {:?} while a removed mapping may be cached",
                    a.ty
                );
                assert!(
                    !(b.owner.is_some() && a.owner.is_none()),
                    "mfn {m} left its domain while a removed mapping may be cached"
                );
            }
            if self.table.contains(&m) {
                assert!(
                    !newly(|t| t == PageType::Writable),
                    "mfn {m} became writable while a paging-structure cache may walk it"
                );
            }
        }
        if flushed {
            return;
        }
        for (t, (maps, tables)) in before.1 {
            let (now_maps, now_tables) = after.1.get(t).copied().unwrap_or_default();
            if now_maps < *maps {
                self.mapped.insert(*t);
            }
            if now_tables < *tables {
                self.table.insert(*t);
            }
        }
    }
}

/// References this driver holds on a frame outside any table, pin or pending operation, as
/// the kernel does for base pointers.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    refs: u32,
    types: u32,
}

/// Panics unless `FrameTable::audit` finds every invariant it checks intact, counting the
/// vCPUs' pending work, the references this driver holds and `more` (a relinquishment's),
/// with the frames of `free` on the free list.
fn check(
    ft: &FrameTable<'_>,
    mem: &FakeMem,
    pending: &[Pending],
    held: &BTreeMap<Mfn, Held>,
    more: impl Iterator<Item = Hold>,
    free: &[Mfn],
) {
    let mut holds: Vec<Hold> = pending.iter().flat_map(|p| ft.pending_holds(p)).collect();
    for (&mfn, h) in held {
        let ty = ft.info(mfn).map(|f| f.ty);
        let typed = Hold { mfn, ty };
        let plain = Hold { mfn, ty: None };
        holds.extend(std::iter::repeat_n(typed, h.types as usize));
        holds.extend(std::iter::repeat_n(plain, (h.refs - h.types) as usize));
    }
    holds.extend(more);
    let mut scratch = vec![AuditCounts::default(); FRAMES];
    let free = free.iter().map(|&m| m.raw()..m.raw() + 1);
    if let Err(f) = ft.audit(mem, holds, free, &mut scratch) {
        panic!("{} ({} broken)", f.first, f.count);
    }
}

/// The domains' settings, given when they are built: the guest's I/O memory, and the other
/// domain's L1TF check (its not-present entries must name frame 0 or 48 and up, and have no
/// PSE above L1, or its tables are refused part way).
fn settings(ft: &mut FrameTable<'_>, d: Dom) {
    if d == GUEST {
        ft.iomem_mut(GUEST).add(56, 58);
        ft.iomem_mut(GUEST).add(64, 66);
    } else {
        ft.set_l1tf_check(
            OTHER,
            Some(SafeMaddr {
                addr_mask: pte::ADDR,
                safe_maddr: 48 << 12,
            }),
        );
    }
}

/// Relinquishes `d` in steps of `budget` entries with its vCPUs' `pending` work and this
/// driver's `held` references on its frames (but the plain ones with `outside`, which stay),
/// auditing between steps; checks that exactly its unreferenced frames were freed and nothing
/// else changed, then gives them back to it.
fn destroy(
    ft: &mut FrameTable<'_>,
    mem: &mut FakeMem,
    d: Dom,
    budget: u64,
    outside: bool,
    pending: &mut [Pending; 3],
    held: &mut BTreeMap<Mfn, Held>,
) {
    let pendings = (0..3)
        .filter(|&v| VCPU_DOMS[v] == d)
        .map(|v| std::mem::take(&mut pending[v]))
        .collect();
    let mut holds = Vec::new();
    for (&mfn, h) in held.iter_mut() {
        let f = *ft.info(mfn).expect("held frames are in the table");
        if f.owner != Some(d) {
            continue;
        }
        let plain = if outside { 0 } else { h.refs - h.types };
        holds.extend(std::iter::repeat_n(
            Hold {
                mfn,
                ty: Some(f.ty),
            },
            h.types as usize,
        ));
        holds.extend(std::iter::repeat_n(Hold { mfn, ty: None }, plain as usize));
        h.refs -= h.types + plain;
        h.types = 0;
    }
    let before: Vec<FrameInfo> = (0..FRAMES as u64)
        .map(|m| *ft.info(Mfn::new(m)).expect("frame"))
        .collect();
    let mut rel = Relinquish::new(pendings, holds);
    let mut freed = Vec::new();
    loop {
        let r = ft.relinquish_preemptible(mem, d, &mut rel, &mut Budget::new(budget), &mut freed);
        check(ft, mem, pending, held, ft.relinquish_holds(&rel), &freed);
        match r {
            Ok(()) => break,
            Err(MmError::Preempted) => {}
            Err(e) => panic!("relinquishing d{d} failed: {e:?}"),
        }
    }
    assert_eq!(rel.bad_holds(), 0, "every hold was the domain's");
    let mut kept = 0;
    for (m, b) in before.iter().enumerate() {
        let a = *ft.info(Mfn::new(m as u64)).expect("frame");
        if b.owner != Some(d) {
            assert_eq!(a, *b, "mfn {m} of someone else changed");
        } else if freed.contains(&Mfn::new(m as u64)) {
            assert_eq!(
                (a.owner, a.ref_count, a.type_count, a.pinned),
                (None, 0, 0, false)
            );
        } else {
            assert!(
                a.owner == Some(d) && a.ref_count > 0,
                "mfn {m} neither freed nor kept"
            );
            assert!(
                outside
                    && held
                        .get(&Mfn::new(m as u64))
                        .is_some_and(|h| h.refs == a.ref_count)
            );
            kept += 1;
        }
    }
    assert_eq!(kept, rel.kept());
    for m in freed {
        ft.assign(m, d).expect("a freed frame is free");
    }
    settings(ft, d);
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut storage = vec![FrameInfo::FREE; FRAMES];
    let mut ft = FrameTable::new(&mut storage);
    let mut mem = FakeMem::default();
    for m in 0..60 {
        let owner = match m {
            0..40 => GUEST,
            40..48 => OTHER,
            48..56 => continue,
            _ => DOM_IO,
        };
        ft.assign(Mfn::new(m), owner).expect("free frame");
    }
    ft.iomem_ro_mut().add(57, 58);
    ft.iomem_ro_mut().add(65, 66);
    settings(&mut ft, GUEST);
    settings(&mut ft, OTHER);
    // References and type references this driver holds, as the kernel does for CR3 bases.
    let mut held: BTreeMap<Mfn, Held> = BTreeMap::new();
    let mut stale = Stale::default();
    let mut pending = [Pending::default(); 3];
    let mut live = BTreeSet::new();
    let snapshot = |ft: &FrameTable<'_>| -> Vec<FrameInfo> {
        (0..FRAMES as u64)
            .map(|m| *ft.info(Mfn::new(m)).expect("frame"))
            .collect()
    };

    // `arbitrary` keeps producing (default) values from exhausted input: stop there.
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        let (infos, flushes) = (snapshot(&ft), mem.flushes);
        let maps = mappings(&ft, &mem, &live);
        let h = |held: &BTreeMap<Mfn, Held>, m: Mfn| held.get(&m).copied().unwrap_or_default();
        match op {
            Op::Assign { mfn: m, n, other } => {
                let _ = ft.assign_range(mfn(m), u64::from(n % 4), dom(other));
            }
            Op::Release { mfn: m, other } => {
                let _ = ft.release(&mut mem, mfn(m), dom(other));
            }
            Op::Steal { mfns, other, back } => {
                let list = [mfn(mfns.0), mfn(mfns.1)];
                if ft.steal(&mut mem, &list, dom(other)).is_ok() && back {
                    for m in list {
                        let _ = ft.assign(m, dom(other));
                    }
                }
            }
            Op::GetPage { mfn: m, other } => {
                if ft.get_page(mfn(m), dom(other)).is_ok() {
                    held.entry(mfn(m)).or_default().refs += 1;
                }
            }
            Op::PutPage { mfn: m } => {
                // Only references this driver holds beyond its type references.
                let x = h(&held, mfn(m));
                if x.refs > x.types {
                    ft.put_page(mfn(m));
                    held.entry(mfn(m)).or_default().refs -= 1;
                }
            }
            Op::GetPageType { mfn: m, ty } => {
                // The caller holds a general reference for each type reference, taken for the
                // frame's owner, on whose behalf a table is validated.
                let x = h(&held, mfn(m));
                let ty = match ty {
                    Ty::Writable => PageType::Writable,
                    Ty::Table(l) => PageType::Table(l % 4 + 1),
                    Ty::SegDesc => PageType::SegDesc,
                };
                let owner = ft.info(mfn(m)).and_then(|f| f.owner);
                if let (true, Some(owner)) = (x.refs > x.types, owner)
                    && ft.get_page_type(&mut mem, mfn(m), ty, owner).is_ok()
                {
                    held.entry(mfn(m)).or_default().types += 1;
                }
            }
            Op::PutPageType { mfn: m } => {
                if h(&held, mfn(m)).types > 0 {
                    ft.put_page_type(&mut mem, mfn(m));
                    held.entry(mfn(m)).or_default().types -= 1;
                }
            }
            Op::Pin { mfn: m, level, by } => {
                let level = level % 4 + 1;
                let _ = match by {
                    Actor::Unbounded { other } => ft.pin(&mut mem, mfn(m), level, dom(other)),
                    Actor::Vcpu { n, budget } => {
                        let (v, mut b) = vcpu(n, budget);
                        ft.pin_preemptible(
                            &mut mem,
                            mfn(m),
                            level,
                            VCPU_DOMS[v],
                            &mut pending[v],
                            &mut b,
                        )
                    }
                };
            }
            Op::Unpin { mfn: m, by } => {
                let _ = match by {
                    Actor::Unbounded { other } => ft.unpin(&mut mem, mfn(m), dom(other)),
                    Actor::Vcpu { n, budget } => {
                        let (v, mut b) = vcpu(n, budget);
                        ft.unpin_preemptible(
                            &mut mem,
                            mfn(m),
                            VCPU_DOMS[v],
                            &mut pending[v],
                            &mut b,
                        )
                    }
                };
            }
            Op::ModEntry {
                table,
                level,
                idx,
                entry,
                by,
                foreign,
            } => {
                let (t, level, idx, new) = (mfn(table), level % 5, slot(idx), entry.value());
                let _ = match by {
                    Actor::Unbounded { other } => {
                        ft.mod_entry(&mut mem, t, level, idx, new, dom(other))
                    }
                    Actor::Vcpu { n, budget } => {
                        let (v, mut b) = vcpu(n, budget);
                        let d = VCPU_DOMS[v];
                        let pg = match (foreign, d) {
                            (false, _) => d,
                            (true, GUEST) => OTHER,
                            (true, _) => GUEST,
                        };
                        ft.mod_entry_foreign_preemptible(
                            &mut mem,
                            t,
                            level,
                            idx,
                            new,
                            (d, pg),
                            &mut pending[v],
                            &mut b,
                        )
                    }
                };
            }
            Op::FinishTeardown { vcpu: n, budget } => {
                let (v, mut b) = vcpu(n, budget);
                let _ = ft.finish_teardown(&mut mem, &mut pending[v], &mut b);
            }
            Op::Cancel { vcpu: n } => {
                let (v, _) = vcpu(n, 0);
                ft.cancel_pending(&mut mem, &mut pending[v]);
            }
            Op::Write { mfn: m, idx, value }
            | Op::WriteDescriptor {
                mfn: m,
                idx,
                desc: value,
            } => {
                let f = ft.info(mfn(m)).copied().unwrap_or(FrameInfo::FREE);
                let typed = f.type_count > 0 && f.ty != PageType::Writable;
                if matches!(f.owner, Some(GUEST | OTHER)) && !typed {
                    mem.write(mfn(m), slot(idx), value);
                }
            }
            Op::Destroy {
                other,
                budget,
                outside,
            } => {
                // At least one entry a step: the loop must get somewhere.
                let b = entries(budget).max(1);
                destroy(
                    &mut ft,
                    &mut mem,
                    dom(other),
                    b,
                    outside,
                    &mut pending,
                    &mut held,
                );
            }
        }
        check(&ft, &mem, &pending, &held, std::iter::empty(), &[]);

        // Tables fully validated stay live until their type goes (a table seen part way
        // through a validation lost it in between, within one operation).
        for m in (0..FRAMES as u64).map(Mfn::new) {
            let f = ft.info(m).expect("frame inside the table");
            if f.type_count == 0 || matches!(f.progress, Progress::Validating { .. }) {
                live.remove(&m);
            } else if matches!(f.ty, PageType::Table(_)) && f.progress == Progress::Idle {
                live.insert(m);
            }
        }
        stale.step(
            (&infos, &maps),
            (&snapshot(&ft), &mappings(&ft, &mem, &live)),
            mem.flushes != flushes,
        );
    }
});
