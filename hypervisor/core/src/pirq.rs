//! A domain's physical IRQs (PIRQs): which hardware interrupt source each PIRQ number stands
//! for (`PHYSDEVOP_map_pirq`), and the end-of-interrupt state of level-triggered lines.
//!
//! As in Xen, dom0 maps a GSI to the PIRQ of the same number when it is free (Linux asks for
//! exactly that), else to the lowest free PIRQ at or above 16; mapping a GSI twice returns the
//! PIRQ it already has. A level-triggered line is masked when its interrupt is forwarded and
//! unmasked when the guest signals the end of the interrupt (`PHYSDEVOP_eoi`).

use alloc::vec::Vec;

/// PIRQs per domain.
pub const NR_PIRQS: u32 = 256;

/// What a PIRQ is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pirq {
    /// The GSI behind it.
    pub gsi: u32,
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
    /// The PIRQ `gsi` is mapped to, if any.
    pub fn of_gsi(&self, gsi: u32) -> Option<u32> {
        self.entries
            .iter()
            .position(|e| e.is_some_and(|p| p.gsi == gsi))
            .map(|i| i as u32)
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
            gsi,
            level,
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
        assert_eq!(t.unmap(16).map(|p| p.gsi), Ok(300));
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
}
