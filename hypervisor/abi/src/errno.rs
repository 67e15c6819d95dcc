//! Xen's errno values (`public/errno.h`). Hypercalls return them negated in RAX.
//!
//! The numbers equal Linux x86's for every value listed here. `ERESTART` is internal: it asks the
//! dispatcher to build a continuation and never reaches a guest.

/// A Xen error number, as a positive value (the hypercall returns `-(errno as i64)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
#[allow(missing_docs)] // The names are the documentation: they mirror public/errno.h.
pub enum Errno {
    EPERM = 1,
    ENOENT = 2,
    ESRCH = 3,
    EINTR = 4,
    EIO = 5,
    ENXIO = 6,
    E2BIG = 7,
    ENOEXEC = 8,
    EBADF = 9,
    ECHILD = 10,
    EAGAIN = 11,
    ENOMEM = 12,
    EACCES = 13,
    EFAULT = 14,
    EBUSY = 16,
    EEXIST = 17,
    EXDEV = 18,
    ENODEV = 19,
    ENOTDIR = 20,
    EISDIR = 21,
    EINVAL = 22,
    ENFILE = 23,
    EMFILE = 24,
    ENOSPC = 28,
    EROFS = 30,
    EMLINK = 31,
    EDOM = 33,
    ERANGE = 34,
    EDEADLK = 35,
    ENAMETOOLONG = 36,
    ENOLCK = 37,
    ENOSYS = 38,
    ENOTEMPTY = 39,
    ENODATA = 61,
    ETIME = 62,
    EBADMSG = 74,
    EOVERFLOW = 75,
    EILSEQ = 84,
    /// Internal only: "create a continuation"; never returned to a guest.
    ERESTART = 85,
    ENOTSOCK = 88,
    EMSGSIZE = 90,
    EOPNOTSUPP = 95,
    EADDRINUSE = 98,
    EADDRNOTAVAIL = 99,
    ENOBUFS = 105,
    EISCONN = 106,
    ENOTCONN = 107,
    ETIMEDOUT = 110,
    ECONNREFUSED = 111,
}

impl Errno {
    /// The value a hypercall leaves in RAX for this error: the errno negated.
    pub const fn to_ret(self) -> i64 {
        -(self as i32 as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::Errno;

    #[test]
    fn negated_return_values_match_xen() {
        assert_eq!(Errno::ENOSYS.to_ret(), -38);
        assert_eq!(Errno::EFAULT.to_ret(), -14);
        assert_eq!(Errno::EINVAL.to_ret(), -22);
        assert_eq!(Errno::ERESTART as i32, 85);
    }
}
