//! Choosing a new domain's id (Xen 4.17 `XEN_DOMCTL_createdomain`, `xen/common/domctl.c`).
//!
//! A request names an id from 1 to `DOMID_FIRST_RESERVED` - 1, which must be free (`EEXIST`
//! otherwise), or any other value (0 or a reserved id) to have one allocated: the allocator
//! remembers the last id it gave (the *rover*, 0 at boot) and takes the first free id after
//! it, wrapping from `DOMID_FIRST_RESERVED - 1` back to 1, so ids are not reused sooner than they
//! must be; `ENOMEM` when every id is taken. Only allocation moves the rover.
//!
//! "Free" is the caller's question: an id stays taken while a domain holds it, including a
//! destroyed domain whose frames others still map (a zombie).
//!
//! Pure logic: the caller holds whatever lock keeps the answers of `taken` true until it has
//! claimed the id.

use xen_abi::errno::Errno;
use xen_abi::xen::DOMID_FIRST_RESERVED as FIRST_RESERVED;

/// The id allocator's memory: the last id it gave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rover(u16);

impl Rover {
    /// The allocator at boot: the first id it gives is 1.
    pub const fn new() -> Self {
        Rover(0)
    }

    /// The id for a request naming `requested`, with `taken` telling which ids are in use
    /// (see the module's rules).
    pub fn choose(&mut self, requested: u16, taken: impl Fn(u16) -> bool) -> Result<u16, Errno> {
        if (1..FIRST_RESERVED).contains(&requested) {
            return if taken(requested) {
                Err(Errno::EEXIST)
            } else {
                Ok(requested)
            };
        }
        // Every id but the rover itself, starting after it (the rover is 0 or a valid id).
        let start = self.0 % (FIRST_RESERVED - 1);
        let id = (0..FIRST_RESERVED - 1)
            .map(|i| (start + i) % (FIRST_RESERVED - 1) + 1)
            .filter(|&id| id != self.0)
            .find(|&id| !taken(id))
            .ok_or(Errno::ENOMEM)?;
        self.0 = id;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn allocation_starts_at_one_and_moves_on() {
        let mut r = Rover::default();
        let used: BTreeSet<u16> = [0].into();
        assert_eq!(r.choose(0, |id| used.contains(&id)), Ok(1));
        assert_eq!(r.choose(0, |id| used.contains(&id)), Ok(2));
        // A freed id is not reused before the others.
        assert_eq!(r.choose(0, |_| false), Ok(3));
    }

    #[test]
    fn allocation_skips_taken_ids_and_wraps() {
        let mut r = Rover(FIRST_RESERVED - 2);
        let used: BTreeSet<u16> = [FIRST_RESERVED - 1, 1, 2].into();
        assert_eq!(r.choose(0, |id| used.contains(&id)), Ok(3));
        assert_eq!(r, Rover(3));
    }

    #[test]
    fn reserved_ids_allocate() {
        let mut r = Rover::default();
        assert_eq!(r.choose(FIRST_RESERVED, |_| false), Ok(1));
        assert_eq!(r.choose(0xFFFF, |_| false), Ok(2));
        assert_eq!(r.choose(0x7FF5, |id| id == 3), Ok(4));
    }

    #[test]
    fn given_ids_must_be_free_and_leave_the_rover() {
        let mut r = Rover::default();
        assert_eq!(r.choose(5, |_| false), Ok(5));
        assert_eq!(r.choose(5, |id| id == 5), Err(Errno::EEXIST));
        assert_eq!(
            r.choose(FIRST_RESERVED - 1, |_| false),
            Ok(FIRST_RESERVED - 1)
        );
        assert_eq!(r, Rover(0));
    }

    #[test]
    fn every_id_taken_is_enomem() {
        let mut r = Rover(7);
        assert_eq!(r.choose(0, |_| true), Err(Errno::ENOMEM));
        assert_eq!(r, Rover(7));
        // Only the rover itself free: Xen's loop stops before it, so it is not given.
        assert_eq!(r.choose(0, |id| id != 7), Err(Errno::ENOMEM));
        // The one id after the rover.
        assert_eq!(r.choose(0, |id| id != 8), Ok(8));
    }
}
