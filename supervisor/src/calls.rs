//! The calls the filter sends to the listener: opens of the legacy nodes, VFIO ioctls on the
//! files the supervisor gave, and KVM's `KVM_SET_DEVICE_ATTR` naming a group. Each is answered
//! from the core with the preload's semantics, or let run as the program made it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use vfio_shim::abi;
use vfio_shim::backend::DeviceHandle;
use vfio_shim::{ContainerId, ContainerStep, DeviceGrant, FdTarget, GroupId, GroupReply, Shim};
use vfio_shim_sys::caller::CallerProcess;
use vfio_shim_sys::private_nodes::NodeId;
use vfio_shim_sys::remote_memory::RemoteMemory;
use vfio_shim_sys::seccomp::Notification;
use vfio_shim_sys::KernelBackend;

use crate::objects::Object;
use crate::target::Caller;
use crate::Supervisor;

/// What to do with a notified call.
pub(crate) enum Answer {
    /// Return this to the caller.
    Result(Result<i64, Errno>),
    /// Install this file in the caller; its fd number is the call's result.
    File(OwnedFd, bool),
    /// Let the kernel run it as made.
    Continue,
}

impl Supervisor {
    pub(crate) fn notified_call(&mut self, call: Notification) {
        let answer = match Caller::new(call.tid) {
            Ok(caller) => self.answer(&caller, &call),
            // The caller is gone: nothing to answer.
            Err(_) => return,
        };
        let sent = match answer {
            Answer::Result(r) => self.listener.answer(call.id, r).map(drop),
            Answer::Continue => self.listener.continue_call(call.id),
            Answer::File(file, cloexec) => self.listener.install_fd(call.id, file.as_fd(), cloexec, true).map(drop),
        };
        // ENOENT: the caller went away or was interrupted (it restarts the call); what the
        // core made for it is released like any file nobody holds.
        if let Err(e) = sent {
            if e != Errno::ENOENT {
                log::warn!("supervisor: answering call {} of {}: {e}", call.id, call.tid);
            }
        }
    }

    fn answer(&mut self, caller: &Caller, call: &Notification) -> Answer {
        self.checks_of(caller.tid);
        let a = call.args;
        match call.nr {
            n if n == libc::SYS_open => self.open(caller, a[0], a[1] as i32),
            n if n == libc::SYS_openat => self.open_at(caller, a[0] as i32, a[1], a[2] as i32),
            n if n == libc::SYS_openat2 => match caller.read::<u64>(a[2]) {
                Ok(flags) => self.open_at(caller, a[0] as i32, a[1], flags as i32),
                Err(_) => Answer::Continue,
            },
            n if n == libc::SYS_ioctl => self.ioctl(caller, a[0] as i32, a[1] as u32, a[2]),
            _ => Answer::Continue,
        }
    }

    fn open_at(&mut self, caller: &Caller, _dirfd: i32, path: u64, flags: i32) -> Answer {
        // Only absolute paths name the legacy nodes here; a path relative to a directory fd is
        // the kernel's (docs/supervisor.md, limits).
        self.open(caller, path, flags)
    }

    fn open(&mut self, caller: &Caller, path: u64, flags: i32) -> Answer {
        let Ok(path) = caller.c_string(path) else {
            return Answer::Continue;
        };
        let cloexec = flags & libc::O_CLOEXEC != 0;
        if vfio_shim::nodes::is_container_path(&path) {
            return self.open_container(caller, cloexec);
        }
        let group = match (vfio_shim::nodes::group_number(&path), vfio_shim::nodes::noiommu_group_number(&path)) {
            (Some(n), _) => (n, false),
            (_, Some(n)) => (n, true),
            _ => return Answer::Continue,
        };
        self.open_group(group.0, group.1, flags)
    }

    fn open_container(&mut self, caller: &Caller, cloexec: bool) -> Answer {
        let id = match self.shim.open_container() {
            Ok(id) => id,
            Err(e) => return Answer::Result(Err(e)),
        };
        if let Ok(process) = CallerProcess::open(caller.tid) {
            self.holders.insert(id, process.tgid() as i32);
        }
        let ctx = self.shim.container_iommufd(id).expect("just opened");
        let file = self.shim.backend().iommufd_file(ctx).and_then(|file| Ok((NodeId::of(file.as_fd())?, file)));
        match file {
            Ok((node, file)) => {
                self.objects.insert(node, Object::Container(id));
                // The backend's own file goes once the call is answered (park_idle_contexts).
                Answer::File(file, cloexec)
            }
            Err(e) => {
                self.shim.close_container(id);
                Answer::Result(Err(e))
            }
        }
    }

    fn open_group(&mut self, number: u32, noiommu: bool, flags: i32) -> Answer {
        let opened = if noiommu { self.shim.open_noiommu_group(number) } else { self.shim.open_group(number) };
        let id = match opened {
            Ok(id) => id,
            Err(e) => return Answer::Result(Err(e)),
        };
        // The group's file: /dev/null's numbers, under a node of its own, opened with the
        // caller's access mode and file flags (as the preload's stand-in).
        let keep = libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_APPEND | libc::O_NOATIME;
        let stand_in = {
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            nodes.open(Path::new("/dev/null"), OFlag::from_bits_truncate(flags & keep) | OFlag::O_NOCTTY)
        };
        match stand_in {
            Ok((file, node)) => {
                self.objects.insert(node, Object::Group(id));
                Answer::File(file, flags & libc::O_CLOEXEC != 0)
            }
            Err(e) => {
                self.shim.close_group(id);
                Answer::Result(Err(e))
            }
        }
    }

    /// An ioctl on fd `fd` of the caller: the core's answer for a file of ours.
    pub(crate) fn ioctl(&mut self, caller: &Caller, fd: i32, req: u32, arg: u64) -> Answer {
        let (file, node) = match caller.file_and_node(fd) {
            Ok(found) => found,
            Err(Errno::EBADF) => return Answer::Result(Err(Errno::EBADF)),
            Err(_) => return Answer::Continue,
        };
        let mut mem = RemoteMemory::new(caller.tid, arg);
        match self.objects.get(node).cloned() {
            Some(Object::Container(id)) => Answer::Result(self.container_ioctl(id, file, req, arg, &mut mem)),
            Some(Object::Group(id)) => self.group_ioctl(caller, id, req, arg, &mut mem),
            Some(Object::Device(handle, _)) => match req {
                abi::VFIO_DEVICE_GET_PCI_HOT_RESET_INFO => {
                    let shim = &mut self.shim;
                    Answer::Result(with_device_file(shim, handle, file, |shim| {
                        shim.device_hot_reset_info(handle, &mut mem)
                    }))
                }
                abi::VFIO_DEVICE_PCI_HOT_RESET => {
                    let objects = &self.objects;
                    let resolve = |other: i32| match caller.file_and_node(other) {
                        Ok((_, n)) => match objects.get(n) {
                            Some(Object::Group(g)) => Ok(*g),
                            _ => Err(Errno::EINVAL),
                        },
                        Err(Errno::EBADF) => Err(Errno::EBADF),
                        Err(_) => Err(Errno::EINVAL),
                    };
                    let shim = &mut self.shim;
                    Answer::Result(with_device_file(shim, handle, file, |shim| {
                        shim.device_hot_reset(handle, &mut mem, &resolve)
                    }))
                }
                // The device's own file: the kernel answers everything else.
                _ => Answer::Continue,
            },
            None => Answer::Continue,
        }
    }

    /// A container call other than MAP_DMA (traced: crate::map), on the context the program's
    /// file lends.
    fn container_ioctl(
        &mut self,
        id: ContainerId,
        file: OwnedFd,
        req: u32,
        arg: u64,
        mem: &mut RemoteMemory,
    ) -> Result<i64, Errno> {
        let ctx = self.shim.container_iommufd(id).ok_or(Errno::EBADF)?;
        self.shim.backend_mut().lend_iommufd(ctx, file);
        match self.shim.container_ioctl_begin(id, req, arg, mem)? {
            ContainerStep::Done(v) => Ok(v),
            ContainerStep::Native(pending) => {
                let ran = match pending.native().2 {
                    // Never pinned from here: a map pins the caller's memory in its own thread.
                    vfio_shim::backend::DmaOp::Map { .. } => {
                        log::error!("supervisor: a MAP_DMA reached the listener, not the tracer");
                        Some(Err(Errno::EIO))
                    }
                    vfio_shim::backend::DmaOp::Unmap { .. } => None,
                };
                self.shim.container_ioctl_finish(pending, ran, mem)
            }
        }
    }

    fn group_ioctl(&mut self, caller: &Caller, id: GroupId, req: u32, arg: u64, mem: &mut RemoteMemory) -> Answer {
        if req == abi::VFIO_GROUP_SET_CONTAINER {
            // The container's context is lent by the program's fd the call names.
            if let Ok(fd) = caller.read::<i32>(arg) {
                if let Ok((file, node)) = caller.file_and_node(fd) {
                    if let Some(Object::Container(c)) = self.objects.get(node) {
                        if let Some(ctx) = self.shim.container_iommufd(*c) {
                            self.shim.backend_mut().lend_iommufd(ctx, file);
                        }
                    }
                }
            }
        }
        let objects = &self.objects;
        let resolve = |other: i32| match caller.file_and_node(other) {
            Ok((_, n)) => match objects.get(n) {
                Some(Object::Container(c)) => FdTarget::Container(*c),
                _ => FdTarget::Other,
            },
            Err(Errno::EBADF) => FdTarget::Closed,
            Err(_) => FdTarget::Other,
        };
        match self.shim.group_ioctl(id, req, mem, &resolve) {
            Ok(GroupReply::Done) => Answer::Result(Ok(0)),
            Ok(GroupReply::Device(grant)) => self.device_file(caller, grant),
            Err(e) => Answer::Result(Err(e)),
        }
    }

    /// The file for a `GET_DEVICE_FD`: the device's bound file, given to the program (type1
    /// installs device fds close-on-exec). A second grant while the program holds the file
    /// is that same file again; while only a mapping of a region holds it (no fd left), none
    /// can be had: `EBADF` (docs/supervisor.md, limits).
    fn device_file(&mut self, caller: &Caller, grant: DeviceGrant) -> Answer {
        let file = match self.objects.device_node(grant.handle) {
            // The program holds the device's file already (here or in another process).
            Some(node) => crate::target::find_file_anywhere(caller, node).ok_or(Errno::EBADF),
            None => self.shim.backend_mut().hand_out_device(grant.handle),
        };
        let file = file.and_then(|f| Ok((NodeId::of(f.as_fd())?, f)));
        match file {
            Ok((node, file)) => {
                self.objects.add_grant(node, grant);
                Answer::File(file, true)
            }
            Err(e) => {
                self.shim.close_device(grant);
                Answer::Result(Err(e))
            }
        }
    }
}

impl Supervisor {
    /// The no-IOMMU checks (`CAP_SYS_RAWIO`, the kernel's `capable()`) ask thread `tid`, the
    /// caller of the call being served, not the supervisor.
    pub(crate) fn checks_of(&mut self, tid: u32) {
        self.shim.backend_mut().rawio_of(Some(tid));
    }
}

/// Runs `f` with the program's file of a handed-out device in the backend's place.
fn with_device_file(
    shim: &mut Shim<KernelBackend>,
    handle: DeviceHandle,
    file: OwnedFd,
    f: impl FnOnce(&mut Shim<KernelBackend>) -> Result<i64, Errno>,
) -> Result<i64, Errno> {
    let inert = shim.backend_mut().lend_device_file(handle, file)?;
    let r = f(shim);
    if let Err(e) = shim.backend_mut().lend_device_file(handle, inert) {
        log::error!("supervisor: device file not given back: {e}");
    }
    r
}
