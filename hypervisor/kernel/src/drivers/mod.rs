//! Device drivers Hestia keeps for itself (everything else belongs to dom0).

pub mod uart16550;
