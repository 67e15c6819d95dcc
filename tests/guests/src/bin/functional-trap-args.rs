//! Argument checking of set_trap_table, callback_op, set_callbacks and stack_switch.
#![no_std]
#![no_main]

use hestia_guests::xen_abi::callback::{CallbackRegister, CallbackUnregister, cmd, kind};
use hestia_guests::xen_abi::xen::{StartInfo, hypercall as nr};
use hestia_guests::{Verdict, check, hypercall, trap_table_address};

const EINVAL: i64 = -22;
const ENOSYS: i64 = -38;
const EFAULT: i64 = -14;

fn test(_si: &StartInfo) -> Verdict {
    let mut failed = false;
    #[repr(C, align(16))]
    struct Table([u64; 4]);
    let bad = Table([6 | (0xe033 << 16), 0x8000_0000_0000_0000, 0, 0]);
    let r = hypercall(nr::SET_TRAP_TABLE, bad.0.as_ptr() as u64, 0, 0, 0, 0);
    check!(failed, r == EINVAL, "non-canonical trap handler: {r}");
    let r = hypercall(nr::SET_TRAP_TABLE, 0xffff_8300_0000_0000, 0, 0, 0, 0);
    check!(failed, r == EFAULT, "trap table in the hypervisor: {r}");
    check!(
        failed,
        hypercall(nr::SET_TRAP_TABLE, trap_table_address(), 0, 0, 0, 0) == 0,
        "valid trap table refused"
    );
    check!(
        failed,
        hypercall(nr::SET_TRAP_TABLE, 0, 0, 0, 0, 0) == 0,
        "clearing the trap table refused"
    );

    let reg = |k: u16, address: u64| {
        let c = CallbackRegister {
            kind: k,
            flags: 1,
            _pad: 0,
            address,
        };
        hypercall(
            nr::CALLBACK_OP,
            u64::from(cmd::REGISTER),
            &c as *const CallbackRegister as u64,
            0,
            0,
            0,
        )
    };
    check!(
        failed,
        reg(kind::EVENT, 0x10_0000) == 0,
        "event callback refused"
    );
    check!(
        failed,
        reg(kind::FAILSAFE, 0x10_0000) == 0,
        "failsafe callback refused"
    );
    check!(
        failed,
        reg(kind::SYSCALL, 0x10_0000) == 0,
        "syscall callback refused"
    );
    check!(
        failed,
        reg(kind::EVENT, 0x8000_0000_0000_0000) == EINVAL,
        "non-canonical callback accepted"
    );
    // As Xen: only canonicality is checked; such a callback would only fault the guest.
    check!(
        failed,
        reg(kind::EVENT, 0xffff_82d0_8000_0000) == 0,
        "a canonical callback address refused"
    );
    check!(
        failed,
        reg(kind::EVENT, 0x10_0000) == 0,
        "restoring the event callback"
    );
    check!(
        failed,
        reg(kind::SYSENTER_DEPRECATED, 0x10_0000) == ENOSYS,
        "deprecated sysenter type accepted"
    );
    check!(
        failed,
        reg(99, 0x10_0000) == ENOSYS,
        "unknown callback type accepted"
    );
    let un = |k: u16| {
        let u = CallbackUnregister { kind: k, _pad: 0 };
        hypercall(
            nr::CALLBACK_OP,
            u64::from(cmd::UNREGISTER),
            &u as *const CallbackUnregister as u64,
            0,
            0,
            0,
        )
    };
    check!(
        failed,
        un(kind::EVENT) == EINVAL,
        "unregistering the event callback allowed"
    );
    check!(
        failed,
        un(kind::NMI) == 0,
        "unregistering the NMI callback refused"
    );
    check!(
        failed,
        hypercall(nr::CALLBACK_OP, 7, 0, 0, 0, 0) == ENOSYS,
        "unknown callback_op accepted"
    );
    check!(
        failed,
        hypercall(
            nr::CALLBACK_OP,
            u64::from(cmd::REGISTER),
            0xffff_8000_0000_0000,
            0,
            0,
            0
        ) == EFAULT,
        "callback_op read from the M2P area"
    );
    check!(
        failed,
        hypercall(nr::SET_CALLBACKS, 0x10_0000, 0x10_0000, 0x10_0000, 0, 0) == 0,
        "set_callbacks refused"
    );
    check!(
        failed,
        hypercall(nr::STACK_SWITCH, 0xe02b, 0x20_0000, 0, 0, 0) == 0,
        "stack_switch refused"
    );
    if failed {
        Verdict::Failure("trap/callback arguments")
    } else {
        Verdict::Success
    }
}

hestia_guests::guest_main!(test);
