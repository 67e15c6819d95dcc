//! Outstanding claims (`XENMEM_claim_pages`): memory the toolstack reserves for a domain it is
//! about to build, so that the build cannot fail half way for memory another allocation took
//! meanwhile (xl's default `claim_mode=1`). Xen's `domain_set_outstanding_pages`,
//! `domain_adjust_tot_pages` and the claim check of `alloc_heap_pages`
//! (xen/common/page_alloc.c, 4.17).
//!
//! A claim is a number of pages, not frames: a domain's claim is `pages - tot_pages` when
//! staked, it shrinks as pages are allocated to the domain (never below 0) and, while non-zero,
//! grows again as the domain gives pages back. The machine-wide total is the sum of every
//! live domain's claim. An allocation for a domain ([`alloc_for`]) is refused when the total
//! claimed plus the request is more than the free memory, unless the domain's own claim covers
//! the request. Claims end with the domain (`xl` also cancels it after building, claiming 0).
//!
//! Hestia's own allocations (page tables, grant frames, its heap) ignore claims; in Xen only
//! domain-heap allocations for a domain with a claim may eat into claimed memory.
//!
//! Lock order: [`CLAIMS`] before the frame table and the allocator ([`alloc_for`] allocates
//! and assigns under it, so a check and the allocation it allows are one step).

use core::sync::atomic::Ordering;

use xen_abi::errno::Errno;

use super::DomainRef;
use super::per_domain::PerDomain;
use crate::pv::domain::Domain;

/// Each domain's outstanding claim, in pages.
static CLAIMS: PerDomain<u64> = PerDomain::new();

fn free_pages() -> u64 {
    crate::mm::stats().free / 4096
}

/// Pages claimed and not yet allocated, by every live domain (`physinfo.outstanding_pages`).
pub fn outstanding_total() -> u64 {
    CLAIMS.with(|c| c.values().sum())
}

/// Pages `d` claimed and has not allocated yet (`getdomaininfo.outstanding_pages`).
pub fn outstanding(d: &Domain) -> u64 {
    CLAIMS.with(|c| c.get(d).copied().unwrap_or(0))
}

/// Stakes a claim of `pages` pages in total for `d`, or cancels its claim (`pages` 0), as
/// Xen's `domain_set_outstanding_pages`: `EINVAL` if `d` already has a claim, or `pages` is
/// not above its pages now or is above its maximum; `ENOMEM` if the free memory not claimed
/// by others cannot cover `pages` less the pages it has.
pub fn set(d: &DomainRef, pages: u64) -> Result<(), Errno> {
    CLAIMS.with(|c| {
        if pages == 0 {
            c.set(d, 0);
            return Ok(());
        }
        if c.get(d).is_some_and(|p| *p != 0) {
            return Err(Errno::EINVAL);
        }
        let tot = d.tot_pages.load(Ordering::Acquire);
        if pages <= tot || pages > d.max_pages.load(Ordering::Acquire) {
            return Err(Errno::EINVAL);
        }
        let total: u64 = c.values().sum();
        let claim = pages - tot;
        if claim > free_pages().saturating_sub(total) {
            return Err(Errno::ENOMEM);
        }
        c.set(d, claim);
        Ok(())
    })
}

/// Allocates `n` pages for `d` with `alloc` (which gives them to `d` and counts them in its
/// `tot_pages`, or fails) if the claims allow it, and takes them from `d`'s claim.
pub fn alloc_for<T>(d: &Domain, n: u64, alloc: impl FnOnce() -> Option<T>) -> Option<T> {
    CLAIMS.with(|c| {
        let total: u64 = c.values().sum();
        let own = c.get(d).copied().unwrap_or(0);
        if total.saturating_add(n) > free_pages() && own < n {
            return None;
        }
        let r = alloc()?;
        if let Some(claim) = c.get(d) {
            *claim = claim.saturating_sub(n);
        }
        Some(r)
    })
}

/// `d` gave `n` pages back: a claim it still has grows by as many, as in Xen.
pub fn freed(d: &Domain, n: u64) {
    CLAIMS.with(|c| {
        if let Some(claim) = c.get(d).filter(|c| **c != 0) {
            *claim = claim.saturating_add(n);
        }
    });
}
