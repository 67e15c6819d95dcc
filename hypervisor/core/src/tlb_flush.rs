//! Which CPUs a guest TLB flush must reach.
//!
//! Each CPU records whose page tables it runs on (a guest address space, tagged by domain id,
//! or none while it is on Hestia's own tables). Loading other page tables drops the old
//! translations, as guest mappings are never global, so a CPU's TLB can only hold the
//! translations of the space it is on: a flush of one domain's translations goes to the CPUs
//! on that domain's tables (Xen's per-domain dirty CPU mask, here read from the CPUs rather
//! than kept per domain), a flush that any domain's mapping of a frame must not survive goes
//! to every CPU on guest tables, and CPUs on Hestia's tables are never interrupted.

/// The tag of a CPU on Hestia's own page tables.
pub const NO_GUEST_SPACE: u32 = u32::MAX;

/// Whose translations a TLB flush is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flush {
    /// One guest address space (a domain's): the CPUs on its page tables.
    Space(u32),
    /// Every guest's: the CPUs on any guest page tables (a frame changes type or owner, and
    /// any domain may have mapped it).
    AnyGuest,
    /// The CPUs in a mask of CPU indexes.
    Cpus(u64),
}

/// The CPUs other than `me` that `which` must reach, as a mask of CPU indexes (below 64),
/// from each CPU's index and the space it is on.
pub fn targets(which: Flush, me: u32, cpus: impl Iterator<Item = (u32, u32)>) -> u64 {
    cpus.filter(|&(index, space)| {
        index != me
            && index < 64
            && match which {
                Flush::Space(s) => space == s,
                Flush::AnyGuest => space != NO_GUEST_SPACE,
                Flush::Cpus(mask) => mask & (1 << index) != 0,
            }
    })
    .fold(0, |mask, (index, _)| mask | 1 << index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUS: [(u32, u32); 4] = [(0, 0), (1, 3), (2, NO_GUEST_SPACE), (3, 0)];

    #[test]
    fn a_domain_flush_reaches_only_the_cpus_on_its_tables() {
        assert_eq!(targets(Flush::Space(0), 1, CPUS.into_iter()), 0b1001);
        assert_eq!(targets(Flush::Space(3), 0, CPUS.into_iter()), 0b0010);
        assert_eq!(targets(Flush::Space(7), 0, CPUS.into_iter()), 0);
    }

    #[test]
    fn the_caller_and_idle_cpus_are_never_targets() {
        assert_eq!(targets(Flush::Space(0), 0, CPUS.into_iter()), 0b1000);
        assert_eq!(targets(Flush::AnyGuest, 3, CPUS.into_iter()), 0b0011);
        assert_eq!(
            targets(Flush::Space(NO_GUEST_SPACE), 0, CPUS.into_iter()),
            0b0100,
            "a tag equal to none only matches CPUs on Hestia's tables (never asked for)"
        );
    }

    #[test]
    fn a_mask_names_cpus_whatever_they_run() {
        assert_eq!(targets(Flush::Cpus(0b0110), 1, CPUS.into_iter()), 0b0100);
        assert_eq!(targets(Flush::Cpus(u64::MAX), 0, CPUS.into_iter()), 0b1110);
        let far = [(63, 0), (64, 0)];
        assert_eq!(targets(Flush::AnyGuest, 0, far.into_iter()), 1 << 63);
    }
}
