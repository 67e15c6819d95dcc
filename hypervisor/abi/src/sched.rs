//! `sched_op` (`public/sched.h`).

/// `sched_op` commands.
pub mod cmd {
    /// Give up the CPU voluntarily.
    pub const YIELD: u32 = 0;
    /// Block until an event arrives.
    pub const BLOCK: u32 = 1;
    /// Stop the domain; the argument is a [`super::SchedShutdown`].
    pub const SHUTDOWN: u32 = 2;
    /// Block on a set of ports with a timeout.
    pub const POLL: u32 = 3;
    /// Shut another domain down (toolstack).
    pub const REMOTE_SHUTDOWN: u32 = 4;
    /// Record a shutdown code without shutting down.
    pub const SHUTDOWN_CODE: u32 = 5;
    /// Watchdog control.
    pub const WATCHDOG: u32 = 6;
    /// Pin the vCPU temporarily.
    pub const PIN_OVERRIDE: u32 = 7;
}

/// Shutdown reasons (`SHUTDOWN_*`).
pub mod reason {
    /// Power off.
    pub const POWEROFF: u32 = 0;
    /// Reboot.
    pub const REBOOT: u32 = 1;
    /// Suspend (save).
    pub const SUSPEND: u32 = 2;
    /// The guest crashed.
    pub const CRASH: u32 = 3;
    /// Watchdog expiry.
    pub const WATCHDOG: u32 = 4;
    /// Soft reset.
    pub const SOFT_RESET: u32 = 5;
}

/// Argument of `SCHEDOP_shutdown` (`struct sched_shutdown`).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct SchedShutdown {
    /// IN: `SHUTDOWN_*`.
    pub reason: u32,
}
const _: () = assert!(core::mem::size_of::<SchedShutdown>() == 4);

/// `SCHEDOP_remote_shutdown`'s argument (`struct sched_remote_shutdown`).
#[derive(
    Clone,
    Copy,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct SchedRemoteShutdown {
    /// IN: the domain to shut down.
    pub domain_id: u16,
    /// Padding.
    pub _pad: u16,
    /// IN: `SHUTDOWN_*`.
    pub reason: u32,
}
const _: () = assert!(core::mem::size_of::<SchedRemoteShutdown>() == 8);
const _: () = assert!(core::mem::offset_of!(SchedRemoteShutdown, reason) == 4);
