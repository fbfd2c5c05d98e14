//! `KVM_SET_DEVICE_ATTR(KVM_DEV_VFIO_FILE, FILE_ADD or FILE_DEL)` naming one of our groups,
//! traced: KVM answers only the VM's own process (`EIO` to any other mm), so the thread stopped
//! in the call receives each of the group's KVM files (a delivery call the listener answers
//! with `NOTIF_ADDFD`), names it to KVM in its own context, and closes it again; KVM keeps its
//! own reference, and the supervisor's file stays the one a later `FILE_DEL` names.

use nix::errno::Errno;
use vfio_shim::abi::{kvm_device_attr, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, KVM_DEV_VFIO_FILE_DEL};
use vfio_shim_sys::ptrace::TraceStop;
use vfio_shim_sys::seccomp::{Notification, DELIVERY_REQUEST, SUPERVISOR_MARK};
use zerocopy::IntoBytes;

use crate::objects::Object;
use crate::target::Caller;
use crate::Supervisor;

/// What to do with a traced `KVM_SET_DEVICE_ATTR`.
pub(crate) enum KvmCall {
    /// Not about one of our groups: KVM's, untouched.
    Kernel,
    /// One of our groups: its devices' files, added or deleted.
    Group(vfio_shim::GroupId, bool),
}

impl Supervisor {
    /// Which `KVM_SET_DEVICE_ATTR` this is.
    pub(crate) fn kvm_call(&self, caller: &Caller, arg: u64) -> KvmCall {
        let Ok(attr) = caller.read::<kvm_device_attr>(arg) else {
            return KvmCall::Kernel;
        };
        let add = attr.attr == KVM_DEV_VFIO_FILE_ADD;
        if attr.group != KVM_DEV_VFIO_FILE || !(add || attr.attr == KVM_DEV_VFIO_FILE_DEL) {
            return KvmCall::Kernel;
        }
        let Ok(group_fd) = caller.read::<i32>(attr.addr) else {
            return KvmCall::Kernel;
        };
        match caller.file_and_node(group_fd).map(|(_, n)| self.objects.get(n).cloned()) {
            Ok(Some(Object::Group(g))) => KvmCall::Group(g, add),
            _ => KvmCall::Kernel,
        }
    }

    /// The group's files named to KVM device `kvm_fd` by the stopped thread; returns the
    /// call's result and the notifications of other threads received meanwhile.
    pub(crate) fn kvm_group_file(
        &mut self,
        stop: &mut TraceStop,
        kvm_fd: u64,
        group: vfio_shim::GroupId,
        add: bool,
    ) -> (Result<i64, Errno>, Vec<Notification>) {
        let mut deferred = Vec::new();
        let tid = stop.tid().as_raw() as u32;
        let listener = &self.listener;
        let result = self.shim.kvm_group_file_with(group, add, &mut |backend, file, add| {
            let file = backend.kvm_file(file)?;
            // The file, into the thread: a call the listener answers with it.
            let delivery = [u64::MAX, u64::from(DELIVERY_REQUEST), 0, 0, 0, 0];
            let fd = stop.run(
                libc::SYS_ioctl,
                &[],
                |_| delivery,
                || {
                    deferred.extend(listener.deliver(tid, file)?);
                    Ok(())
                },
            )?;
            if fd < 0 {
                return Err(Errno::from_raw(-fd as i32));
            }
            let attr_at = stop.scratch_at(32);
            let attr = kvm_device_attr {
                flags: 0,
                group: KVM_DEV_VFIO_FILE,
                attr: if add { KVM_DEV_VFIO_FILE_ADD } else { KVM_DEV_VFIO_FILE_DEL },
                addr: attr_at + 24,
            };
            let mut scratch = attr.as_bytes().to_vec();
            scratch.extend_from_slice(&(fd as i32).to_ne_bytes());
            scratch.resize(32, 0);
            // Marked: the filter lets it run, with no second trace stop.
            let request = SUPERVISOR_MARK | u64::from(vfio_shim::abi::KVM_SET_DEVICE_ATTR);
            let named = stop.run(libc::SYS_ioctl, &scratch, |at| [kvm_fd, request, at, 0, 0, 0], || Ok(()));
            let closed = stop.run(libc::SYS_close, &[], |_| [fd as u64, 0, 0, 0, 0, 0], || Ok(()));
            if !matches!(closed, Ok(0)) {
                log::warn!("supervisor: closing the KVM file delivered to {tid}: {closed:?}");
            }
            match named? {
                r if r < 0 => Err(Errno::from_raw(-r as i32)),
                _ => Ok(()),
            }
        });
        (result.map(|()| 0), deferred)
    }
}
