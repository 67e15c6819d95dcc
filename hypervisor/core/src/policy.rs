//! Who may do what: every privilege decision Hestia makes about a domain, in one place, as pure
//! logic over the caller's [`Rights`].
//!
//! Xen routes these through XSM; its default ("dummy") policy gives each operation an action
//! class (`xen/include/xsm/dummy.h`): `XSM_PRIV` for the control domain, hardware access for
//! the hardware domain, or a resource permission (`cache_flush_permitted`,
//! `irq_access_permitted`). Hestia has one policy, Xen's default, so [`allows`] is a plain
//! match; the callers never test a domain's rights themselves. Rights are capabilities a domain
//! holds (dom0 holds both the hardware and the control rights), never a domain id.
//!
//! [`check`] gives the error Xen 4.17 returns when it refuses the action: XSM's `-EPERM`, or
//! the caller's own code where Xen's check is not XSM's (`-EACCES` for a cache flush, `-ESRCH`
//! for a foreign domain the caller may not name).

use xen_abi::errno::Errno;

/// The rights a domain holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rights {
    /// The control domain's (Xen's `is_control_domain`): building, running and inspecting other
    /// domains, the host's settings.
    pub control: bool,
    /// The hardware domain's (Xen's `is_hardware_domain`): the machine's devices, interrupts,
    /// I/O memory and caches.
    pub hardware: bool,
}

impl Rights {
    /// None: a domU.
    pub const NONE: Rights = Rights {
        control: false,
        hardware: false,
    };
    /// Both: dom0.
    pub const HARDWARE_AND_CONTROL: Rights = Rights {
        control: true,
        hardware: true,
    };
}

/// An operation that needs a right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `platform_op` (`xsm_platform_op`, `XSM_PRIV`).
    PlatformOp,
    /// `console_io` on Hestia's console (`xsm_console_io`: `XSM_PRIV` in release builds),
    /// raw, and reading serial input.
    ConsoleIo,
    /// `SCHEDOP_remote_shutdown` of another domain (`xsm_schedop_shutdown`, `XSM_DM_PRIV`).
    ShutdownOther,
    /// `CONSOLEIO_write`, printed with a `(dN) ` prefix for a domain without [`Action::ConsoleIo`]
    /// (Xen's debug-build policy, `CONFIG_VERBOSE_DEBUG`).
    ConsoleWrite,
    /// `XENVER_commandline` and `XENVER_build_id` (`xsm_xen_version`: `XSM_PRIV` for them).
    XenVersionPriv,
    /// `XENMEM_machine_memory_map` (`xsm_machine_memory_map`, `XSM_PRIV`).
    MachineMemoryMap,
    /// Physical interrupts: `EVTCHNOP_bind_pirq` and the `physdev_op`s that map, route or
    /// program them (the hardware domain holds every IRQ).
    PhysicalIrq,
    /// Naming `DOMID_IO` as the foreign domain of an MMU update: mapping I/O memory by machine
    /// address.
    IoMemory,
    /// `WBINVD` and `MMUEXT_FLUSH_CACHE(_GLOBAL)` (`cache_flush_permitted`: a domain that
    /// drives devices).
    CacheFlush,
    /// Another domain's event channels: `EVTCHNOP_alloc_unbound` in it and `EVTCHNOP_status`
    /// of its ports (`xsm_evtchn_unbound`, `xsm_evtchn_status`: `XSM_TARGET`, the domain
    /// itself or the control domain; the caller asks only for a domain other than itself).
    ForeignEventChannel,
    /// `EVTCHNOP_reset` of another domain (`xsm_evtchn_reset`, `XSM_TARGET`: the control
    /// domain).
    EvtchnReset,
    /// Grant-table operations on another domain's table: `setup_table`, `query_size`,
    /// `get_version`, `get_status_frames` (`xsm_grant_setup`/`xsm_grant_query_size`,
    /// `XSM_TARGET`: the domain itself or the control domain).
    GrantOtherDomain,
    /// Another domain's memory: the reservation calls of `memory_op` (`xsm_memory_adjust_
    /// reservation`), `XENMEM_set_memory_map` (`xsm_domain_memory_map`) and
    /// `XENMEM_claim_pages` (`xsm_claim_pages`, `XSM_PRIV`) naming it, and `mmu_update` /
    /// `mmuext_op` with it as the foreign domain (`xsm_mmu_update`, `xsm_mmuext_op`):
    /// `XSM_TARGET`, the control domain (the caller asks only for a domain other than itself).
    ForeignMemory,
    /// Every `domctl` but getdomaininfo: creating, building, running and inspecting domains
    /// (`xsm_domctl`, `XSM_PRIV`: the control domain).
    Domctl,
    /// Reading another domain's information: `XEN_DOMCTL_getdomaininfo` and the entries of
    /// `XEN_SYSCTL_getdomaininfolist` (`xsm_getdomaininfo`, `XSM_XS_PRIV`: the control domain
    /// or the xenstore domain; Hestia has no separate xenstore domain yet).
    DomainInfo,
    /// `sysctl`: the host's state and settings (`xsm_sysctl`, `XSM_PRIV`).
    Sysctl,
    /// The platform devices Hestia shares with the hardware domain by emulation: PCI
    /// configuration space through ports 0xCF8/0xCFC, the RTC's index and data ports.
    PlatformDevices,
    /// The `mca` hypercall: the physical CPUs' identities and machine-check telemetry
    /// (`xsm_do_mca`, `XSM_PRIV`).
    Mca,
}

/// True if a domain with `rights` may do `action`.
pub fn allows(rights: Rights, action: Action) -> bool {
    match action {
        Action::PlatformOp
        | Action::ConsoleIo
        | Action::XenVersionPriv
        | Action::MachineMemoryMap
        | Action::ForeignEventChannel
        | Action::EvtchnReset
        | Action::ShutdownOther
        | Action::GrantOtherDomain
        | Action::ForeignMemory
        | Action::Domctl
        | Action::DomainInfo
        | Action::Sysctl
        | Action::Mca => rights.control,
        Action::PhysicalIrq | Action::IoMemory | Action::CacheFlush | Action::PlatformDevices => {
            rights.hardware
        }
        Action::ConsoleWrite => true,
    }
}

/// The largest extent order a domain with `rights` may name in the reservation calls and
/// `XENMEM_exchange` (Xen's `max_order`, x86 defaults): 9 (2 MiB) for any domain, 12 with the
/// hardware right (`CONFIG_HWDOM_MAX_ORDER`), 18 (1 GiB, `CONFIG_PAGEALLOC_MAX_ORDER`) with the
/// control right. The control domain builds other domains with large extents; the hardware
/// domain's kernel asks for machine-contiguous DMA buffers (Linux's
/// `xen_create_contiguous_region`).
pub fn max_extent_order(rights: Rights) -> u32 {
    if rights.control {
        18
    } else if rights.hardware {
        12
    } else {
        9
    }
}

/// `Ok` if a domain with `rights` may do `action`, else the error Xen gives.
pub fn check(rights: Rights, action: Action) -> Result<(), Errno> {
    if allows(rights, action) {
        return Ok(());
    }
    Err(match action {
        Action::CacheFlush => Errno::EACCES,
        Action::IoMemory => Errno::ESRCH,
        _ => Errno::EPERM,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Action; 18] = [
        Action::PlatformOp,
        Action::ConsoleIo,
        Action::ShutdownOther,
        Action::ConsoleWrite,
        Action::XenVersionPriv,
        Action::MachineMemoryMap,
        Action::PhysicalIrq,
        Action::IoMemory,
        Action::CacheFlush,
        Action::ForeignEventChannel,
        Action::EvtchnReset,
        Action::GrantOtherDomain,
        Action::ForeignMemory,
        Action::Domctl,
        Action::DomainInfo,
        Action::Sysctl,
        Action::PlatformDevices,
        Action::Mca,
    ];

    #[test]
    fn dom0_may_do_everything() {
        for a in ALL {
            assert_eq!(check(Rights::HARDWARE_AND_CONTROL, a), Ok(()), "{a:?}");
        }
    }

    #[test]
    fn a_domu_may_only_write_its_console_and_gets_xens_errors() {
        for a in ALL {
            let want = match a {
                Action::ConsoleWrite => Ok(()),
                Action::CacheFlush => Err(Errno::EACCES),
                Action::IoMemory => Err(Errno::ESRCH),
                _ => Err(Errno::EPERM),
            };
            assert_eq!(check(Rights::NONE, a), want, "{a:?}");
        }
    }

    #[test]
    fn each_right_alone() {
        let hw = Rights {
            control: false,
            hardware: true,
        };
        let ctl = Rights {
            control: true,
            hardware: false,
        };
        assert!(allows(hw, Action::PhysicalIrq) && !allows(hw, Action::Domctl));
        assert!(allows(ctl, Action::Domctl) && !allows(ctl, Action::IoMemory));
    }

    #[test]
    fn extent_orders_as_xens_max_order() {
        assert_eq!(max_extent_order(Rights::NONE), 9);
        assert_eq!(max_extent_order(Rights::HARDWARE_AND_CONTROL), 18);
        let hw = Rights {
            control: false,
            hardware: true,
        };
        assert_eq!(max_extent_order(hw), 12);
    }
}
