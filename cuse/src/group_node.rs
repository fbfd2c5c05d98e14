//! A legacy VFIO group node `/dev/vfio/<N>` (or, in no-IOMMU mode, `/dev/vfio/noiommu-<N>`)
//! served from the shim core, for kernels without VFIO groups. `SET_CONTAINER` names the container by an fd of the caller, which the registry
//! identifies as one of its container node's opens; `GET_DEVICE_FD` answers
//! [`NOT_WITHOUT_PRELOAD`] with one log line: a daemon cannot install an fd in its caller.

use std::sync::Arc;

use log::debug;
use nix::errno::Errno;
use vfio_shim::abi::*;
use vfio_shim::arg::BufferArg;
use vfio_shim::{FdTarget, GroupId, GroupReply};

use crate::callers::{Callers, KernelCallers};
use crate::container::NOT_WITHOUT_PRELOAD;
use crate::device::{Caller, CuseDevice, Ioctl, IoctlOutcome};
use crate::registry::{Inner, Node, OpenState, Registry};
use crate::retry::{argsz_step, cstr_step, fixed_step, ArgszSpec, Step};

/// A `vfio/<N>` node: IOMMU group `N`; or a `vfio/noiommu-<N>` node: no-IOMMU group `N`.
pub struct GroupDevice<C: Callers = KernelCallers> {
    reg: Arc<Registry<C>>,
    number: u32,
    noiommu: bool,
}

impl<C: Callers> GroupDevice<C> {
    pub fn new(reg: Arc<Registry<C>>, number: u32) -> Self {
        Self { reg, number, noiommu: false }
    }

    /// The node of no-IOMMU group `number`.
    pub fn noiommu(reg: Arc<Registry<C>>, number: u32) -> Self {
        Self { reg, number, noiommu: true }
    }

    fn group_of(&self, inner: &Inner<C>, fh: u64) -> Result<GroupId, Errno> {
        match inner.opens.get(&fh).map(|o| &o.state) {
            Some(OpenState::Group(id)) => Ok(*id),
            Some(OpenState::Adopted(_)) => Err(Errno::EBADFD),
            _ => Err(Errno::EBADF),
        }
    }
}

impl<C: Callers> CuseDevice for GroupDevice<C> {
    /// type1 lets one file at a time open a group (GR: `group->opened_file`, EBUSY): the group
    /// is opened in the core right away, which enforces that across every process, adopted
    /// opens included.
    fn open(&self, caller: &Caller, _flags: u32) -> Result<u64, Errno> {
        let mut inner = self.reg.lock();
        C::rawio_of(inner.shim.backend_mut(), caller.pid);
        let (id, node) = if self.noiommu {
            (inner.shim.open_noiommu_group(self.number)?, Node::NoIommuGroup(self.number))
        } else {
            (inner.shim.open_group(self.number)?, Node::Group(self.number))
        };
        let fh = Registry::insert(&mut inner, caller.pid, node, OpenState::Group(id));
        debug!("open group {} fh {fh} by pid {} uid {}", self.number, caller.pid, caller.uid);
        Ok(fh)
    }

    fn release(&self, fh: u64, _caller: &Caller) {
        self.reg.release(fh);
        self.reg.publish_status();
    }

    fn ioctl(&self, fh: u64, caller: &Caller, io: &Ioctl<'_>) -> IoctlOutcome {
        let outcome = self.serve_ioctl(fh, caller, io);
        self.reg.publish_status();
        outcome
    }
}

impl<C: Callers> GroupDevice<C> {
    fn serve_ioctl(&self, fh: u64, caller: &Caller, io: &Ioctl<'_>) -> IoctlOutcome {
        let limit = self.reg.limit;
        let (mut mem, out_len, target) = match io.cmd {
            VFIO_SHIM_CUSE_ADOPT => return self.reg.adopt(fh, caller),
            VFIO_GROUP_GET_STATUS => match argsz_step(io, ArgszSpec::in_out(minsz::GROUP_STATUS as u32), limit) {
                Step::Ready(a) => (BufferArg::new(a.data.to_vec()), a.out_len as usize, None),
                Step::Reply(r) => return r,
            },
            VFIO_GROUP_SET_CONTAINER => match fixed_step(io, 4, 0, limit) {
                Step::Ready(bytes) => {
                    let fd = i32::from_ne_bytes(bytes.try_into().unwrap_or([0xff; 4]));
                    match self.reg.resolve_fd(caller, fd) {
                        Ok(target) => (BufferArg::new(bytes.to_vec()), 0, Some(target)),
                        Err(e) => return IoctlOutcome::Error(e),
                    }
                }
                Step::Reply(r) => return r,
            },
            VFIO_GROUP_GET_DEVICE_FD => {
                match cstr_step(io, vfio_shim::translator::PAGE_SIZE as u32, crate::session::page_size(), limit) {
                    Step::Ready(bytes) => (BufferArg::new(bytes.to_vec()), 0, None),
                    Step::Reply(r) => return r,
                }
            }
            _ => (BufferArg::default(), 0, None),
        };

        let mut inner = self.reg.lock();
        let id = match self.group_of(&inner, fh) {
            Ok(id) => id,
            Err(e) => return IoctlOutcome::Error(e),
        };
        let resolve = |_fd: i32| target.unwrap_or(FdTarget::Closed);
        C::rawio_of(inner.shim.backend_mut(), caller.pid);
        match inner.shim.group_ioctl(id, io.cmd, &mut mem, &resolve) {
            Ok(GroupReply::Done) => {
                let mut out = mem.bytes;
                out.truncate(out_len);
                IoctlOutcome::Done { result: 0, out }
            }
            Ok(GroupReply::Device(grant)) => {
                // Everything type1 checks passed, but a CUSE daemon cannot install an fd in
                // its caller: only the preload can hand out device fds.
                inner.shim.close_device(grant);
                if let Some(open) = inner.opens.get_mut(&fh) {
                    open.tell_preload(fh, "VFIO_GROUP_GET_DEVICE_FD");
                }
                IoctlOutcome::Error(NOT_WITHOUT_PRELOAD)
            }
            Err(e) => IoctlOutcome::Error(e),
        }
    }
}
