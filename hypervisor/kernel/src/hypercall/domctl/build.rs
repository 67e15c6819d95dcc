//! What the domain builder asks of the hypervisor beyond memory: `hypercall_init`, the
//! hypercall page written into one of the target's frames (libxenguest's
//! `setup_hypercall_page` for a kernel with `XEN_ELFNOTE_HYPERCALL_PAGE`).

use xen_abi::domctl::HypercallInit;
use xen_abi::errno::Errno;

use super::Call;
use crate::mm::frametable::{self, NotWritable};

/// `XEN_DOMCTL_hypercall_init`: fills the target's frame `gmfn` (a PV domain's frames are
/// machine frames) with hypercall stubs. `EINVAL` for a frame that is not the target's,
/// `EPERM` for one it uses as a page or descriptor table, as Xen.
pub(super) fn hypercall_init(c: &mut Call<'_>) -> Result<u64, Errno> {
    let op: HypercallInit = c.arg();
    let d = c.target()?;
    frametable::write_page_for(op.gmfn, d.id.0, &hestia_core::hypercall_page::page()).map_err(
        |e| match e {
            NotWritable::NotOwned => Errno::EINVAL,
            NotWritable::WrongType => Errno::EPERM,
        },
    )?;
    Ok(0)
}
