//! A domain's physical IRQs (PIRQs): which hardware interrupt source each PIRQ number stands
//! for (`PHYSDEVOP_map_pirq`), and the end-of-interrupt state of level-triggered lines.
//!
//! As in Xen, dom0 maps a GSI to the PIRQ of the same number when it is free (Linux asks for
//! exactly that), else to the lowest free PIRQ at or above 16; mapping a GSI twice returns the
//! PIRQ it already has. An MSI gets the highest free PIRQ, away from the GSIs, and each MSI
//! source maps once. A level-triggered line is masked when its interrupt is forwarded and
//! unmasked when the guest signals the end of the interrupt (`PHYSDEVOP_eoi`); MSIs are edge.

use alloc::vec::Vec;

/// PIRQs per domain.
pub const NR_PIRQS: u32 = 256;

/// The hardware source behind a PIRQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An IOAPIC input.
    Gsi(u32),
    /// One message of a PCI function: `sbdf` is segment, bus, device and function as PCI
    /// names them (`seg << 16 | bus << 8 | devfn`), `entry` the MSI-X entry (0 for MSI).
    Msi {
        /// Segment, bus, device, function.
        sbdf: u32,
        /// MSI-X table entry (0 for MSI).
        entry: u32,
    },
}

/// What a PIRQ is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pirq {
    /// The source behind it.
    pub source: Source,
    /// Level-triggered (needs an EOI from the guest).
    pub level: bool,
    /// Its line is masked until the guest's EOI.
    pub awaiting_eoi: bool,
}

/// Why a PIRQ operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PirqError {
    /// Out of range or not mapped (`-EINVAL`).
    Invalid,
    /// The wanted PIRQ is taken by another source (`-EEXIST`).
    Exists,
    /// No free PIRQ (`-ENOSPC`).
    NoSpace,
}

/// One domain's PIRQs.
pub struct PirqTable {
    entries: Vec<Option<Pirq>>,
}

impl Default for PirqTable {
    fn default() -> Self {
        Self {
            entries: alloc::vec![None; NR_PIRQS as usize],
        }
    }
}

impl PirqTable {
    /// The PIRQ `source` is mapped to, if any.
    pub fn of_source(&self, source: Source) -> Option<u32> {
        self.entries
            .iter()
            .position(|e| e.is_some_and(|p| p.source == source))
            .map(|i| i as u32)
    }

    /// The PIRQ `gsi` is mapped to, if any.
    pub fn of_gsi(&self, gsi: u32) -> Option<u32> {
        self.of_source(Source::Gsi(gsi))
    }

    /// What `pirq` is.
    pub fn get(&self, pirq: u32) -> Option<Pirq> {
        self.entries.get(pirq as usize).copied().flatten()
    }

    /// The lowest free PIRQ at or above 16 (`PHYSDEVOP_get_free_pirq`).
    pub fn free_pirq(&self) -> Option<u32> {
        (16..NR_PIRQS).find(|&p| self.entries[p as usize].is_none())
    }

    /// Maps `gsi` (level-triggered or not) to `wanted`, or to the default PIRQ.
    pub fn map_gsi(
        &mut self,
        gsi: u32,
        level: bool,
        wanted: Option<u32>,
    ) -> Result<u32, PirqError> {
        if let Some(p) = self.of_gsi(gsi) {
            return match wanted {
                Some(w) if w != p => Err(PirqError::Exists),
                _ => Ok(p),
            };
        }
        let pirq = match wanted {
            Some(w) if w >= NR_PIRQS => return Err(PirqError::Invalid),
            Some(w) if self.entries[w as usize].is_some() => return Err(PirqError::Exists),
            Some(w) => w,
            None if gsi < NR_PIRQS && self.entries[gsi as usize].is_none() => gsi,
            None => self.free_pirq().ok_or(PirqError::NoSpace)?,
        };
        self.entries[pirq as usize] = Some(Pirq {
            source: Source::Gsi(gsi),
            level,
            awaiting_eoi: false,
        });
        Ok(pirq)
    }

    /// Maps an MSI source to `wanted`, or to the highest free PIRQ at or above 16 (Xen hands
    /// MSIs out from the top). A source maps once: again is `Exists`.
    pub fn map_msi(
        &mut self,
        sbdf: u32,
        entry: u32,
        wanted: Option<u32>,
    ) -> Result<u32, PirqError> {
        let source = Source::Msi { sbdf, entry };
        if self.of_source(source).is_some() {
            return Err(PirqError::Exists);
        }
        let pirq = match wanted {
            Some(w) if w >= NR_PIRQS => return Err(PirqError::Invalid),
            Some(w) if self.entries[w as usize].is_some() => return Err(PirqError::Exists),
            Some(w) => w,
            None => (16..NR_PIRQS)
                .rev()
                .find(|&p| self.entries[p as usize].is_none())
                .ok_or(PirqError::NoSpace)?,
        };
        self.entries[pirq as usize] = Some(Pirq {
            source,
            level: false,
            awaiting_eoi: false,
        });
        Ok(pirq)
    }

    /// Forgets `pirq` (`PHYSDEVOP_unmap_pirq`); returns what it was.
    pub fn unmap(&mut self, pirq: u32) -> Result<Pirq, PirqError> {
        let slot = self
            .entries
            .get_mut(pirq as usize)
            .ok_or(PirqError::Invalid)?;
        slot.take().ok_or(PirqError::Invalid)
    }

    /// Sets whether `pirq`'s line is level-triggered (its mode is known once it is set up).
    pub fn set_level(&mut self, pirq: u32, level: bool) {
        if let Some(Some(p)) = self.entries.get_mut(pirq as usize) {
            p.level = level;
        }
    }

    /// An interrupt from `pirq`'s source is being forwarded: true if its line must be masked
    /// until the guest's EOI (level-triggered).
    pub fn forwarded(&mut self, pirq: u32) -> bool {
        match self.entries.get_mut(pirq as usize) {
            Some(Some(p)) if p.level => {
                p.awaiting_eoi = true;
                true
            }
            _ => false,
        }
    }

    /// The guest's EOI for `pirq`: true if its line was masked and must now be unmasked.
    pub fn eoi(&mut self, pirq: u32) -> Result<bool, PirqError> {
        match self.entries.get_mut(pirq as usize) {
            Some(Some(p)) => Ok(core::mem::replace(&mut p.awaiting_eoi, false)),
            _ => Err(PirqError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsi_mapping_as_linux_dom0_asks() {
        let mut t = PirqTable::default();
        assert_eq!(t.map_gsi(9, true, Some(9)), Ok(9));
        assert_eq!(
            t.map_gsi(9, true, Some(9)),
            Ok(9),
            "mapping twice is idempotent"
        );
        assert_eq!(t.map_gsi(9, true, Some(10)), Err(PirqError::Exists));
        assert_eq!(t.map_gsi(1, false, None), Ok(1));
        assert_eq!(t.map_gsi(20, true, Some(1)), Err(PirqError::Exists));
        assert_eq!(t.map_gsi(21, true, Some(NR_PIRQS)), Err(PirqError::Invalid));
        // A GSI beyond the PIRQ space gets the lowest free PIRQ from 16.
        assert_eq!(t.map_gsi(300, true, None), Ok(16));
        assert_eq!(t.of_gsi(300), Some(16));
        assert_eq!(t.free_pirq(), Some(17));
        assert_eq!(t.unmap(16).map(|p| p.source), Ok(Source::Gsi(300)));
        assert_eq!(t.unmap(16), Err(PirqError::Invalid));
        assert_eq!(t.unmap(NR_PIRQS + 5), Err(PirqError::Invalid));
    }

    #[test]
    fn level_lines_wait_for_eoi() {
        let mut t = PirqTable::default();
        t.map_gsi(9, true, None).unwrap();
        t.map_gsi(1, false, None).unwrap();
        assert!(!t.forwarded(1), "edge lines are never masked");
        assert_eq!(t.eoi(1), Ok(false));
        assert!(t.forwarded(9));
        assert_eq!(t.get(9).map(|p| p.awaiting_eoi), Some(true));
        assert_eq!(t.eoi(9), Ok(true), "the EOI unmasks once");
        assert_eq!(t.eoi(9), Ok(false));
        assert_eq!(t.eoi(3), Err(PirqError::Invalid));
        assert!(!t.forwarded(3));
    }

    #[test]
    fn msis_come_from_the_top_and_map_once() {
        let mut t = PirqTable::default();
        t.map_gsi(9, true, None).unwrap();
        let sbdf = 0x0000_0108; // 00:01.0 on bus 1
        assert_eq!(t.map_msi(sbdf, 0, None), Ok(NR_PIRQS - 1));
        assert_eq!(t.map_msi(sbdf, 1, None), Ok(NR_PIRQS - 2));
        assert_eq!(t.map_msi(sbdf, 0, None), Err(PirqError::Exists));
        assert_eq!(t.map_msi(sbdf, 2, Some(9)), Err(PirqError::Exists));
        assert_eq!(t.map_msi(sbdf, 2, Some(NR_PIRQS)), Err(PirqError::Invalid));
        assert_eq!(t.map_msi(sbdf, 2, Some(40)), Ok(40));
        assert_eq!(
            t.of_source(Source::Msi { sbdf, entry: 1 }),
            Some(NR_PIRQS - 2)
        );
        assert!(!t.forwarded(40), "MSIs are edge: never masked for an EOI");
        assert_eq!(t.of_gsi(9), Some(9));
        let mut full = PirqTable::default();
        for e in 0..NR_PIRQS - 16 {
            full.map_msi(1, e, None).unwrap();
        }
        assert_eq!(full.map_msi(1, 999, None), Err(PirqError::NoSpace));
    }
}
