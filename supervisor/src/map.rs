//! The traced calls: `VFIO_IOMMU_MAP_DMA` (docs/supervisor.md, "Pinning": the core applies
//! every type1 rule at the thread's stop, then the backend pins the range in the thread's own
//! context) and `KVM_SET_DEVICE_ATTR` (crate::kvm).

use nix::errno::Errno;
use vfio_shim::backend::{DmaOp, IoasId, IommufdId};
use vfio_shim::ContainerStep;
use vfio_shim_sys::caller::CallerProcess;
use vfio_shim_sys::private_nodes::NodeId;
use vfio_shim_sys::ptrace::TraceStop;
use vfio_shim_sys::remote_memory::RemoteMemory;
use vfio_shim_sys::vfio_device::pci_region_of_offset;

use crate::calls::Answer;
use crate::kvm::KvmCall;
use crate::objects::Object;
use crate::target::Caller;
use crate::Supervisor;

impl Supervisor {
    pub(crate) fn traced_call(&mut self, mut stop: Box<TraceStop>) {
        let (_, args) = stop.call();
        if args[1] as u32 == vfio_shim::abi::KVM_SET_DEVICE_ATTR {
            return self.traced_kvm_call(stop);
        }
        let (fd, req, arg) = (args[0] as i32, args[1] as u32, args[2]);
        let tid = stop.tid().as_raw() as u32;
        let Ok(caller) = Caller::new(tid) else {
            log_lost(stop.resume());
            return;
        };
        self.checks_of(tid);
        let (file, node) = match caller.file_and_node(fd) {
            Ok(found) => found,
            Err(e) => {
                let r = if e == Errno::EBADF { stop.skip(Err(e)) } else { stop.resume() };
                log_lost(r);
                return;
            }
        };
        let id = match self.objects.get(node).cloned() {
            Some(Object::Container(id)) => id,
            // The same number on a group or device file (a device's PCI_HOT_RESET is MAP_DMA's
            // number): answered as the listener answers it, from here.
            Some(_) => {
                drop(file);
                let r = match self.ioctl(&caller, fd, req, arg) {
                    Answer::Result(r) => stop.skip(r),
                    Answer::Continue => stop.resume(),
                    Answer::File(..) => stop.skip(Err(Errno::EIO)),
                };
                log_lost(r);
                return;
            }
            // Not a file of ours: the kernel's call, untouched.
            None => {
                log_lost(stop.resume());
                return;
            }
        };
        let Some(ctx) = self.shim.container_iommufd(id) else {
            log_lost(stop.skip(Err(Errno::EBADF)));
            return;
        };
        self.shim.backend_mut().lend_iommufd(ctx, file);
        let mut mem = RemoteMemory::new(tid, arg);
        let result = match self.shim.container_ioctl_begin(id, vfio_shim::abi::VFIO_IOMMU_MAP_DMA, arg, &mut mem) {
            Ok(ContainerStep::Done(v)) => Ok(v),
            Err(e) => Err(e),
            Ok(ContainerStep::Native(pending)) => {
                let (ctx, ioas, op) = pending.native();
                let ran = match self.shim.backend_mut().map_in_stopped_thread(&mut stop, ctx, ioas, op) {
                    // Memory that cannot be pinned: a device region the program mapped?
                    Err(Errno::EFAULT) => self.map_device_region(tid, ctx, ioas, op).unwrap_or(Err(Errno::EFAULT)),
                    ran => ran,
                };
                self.shim.container_ioctl_finish(pending, Some(ran), &mut mem)
            }
        };
        log_lost(if stop.ran() { stop.finish(result) } else { stop.skip(result) });
    }
}

impl Supervisor {
    /// A MAP_DMA of a device region the program mapped (peer-to-peer): `None` when the range
    /// is not one region of a device file of ours that the program still holds an fd of.
    fn map_device_region(&mut self, tid: u32, ctx: IommufdId, ioas: IoasId, op: DmaOp) -> Option<Result<u64, Errno>> {
        let DmaOp::Map { vaddr, length, .. } = op else {
            return None;
        };
        let process = CallerProcess::open(tid).ok()?;
        let vma = process.vma_at(vaddr).ok()??;
        if !vma.has_file || vaddr.checked_add(length)? > vma.end {
            return None;
        }
        let node = NodeId::from_maps(vma.dev.0, vma.dev.1, vma.inode);
        let Some(Object::Device(handle, _)) = self.objects.get(node).cloned() else {
            return None;
        };
        let (region, offset) = pci_region_of_offset(vma.offset + (vaddr - vma.start));
        let file = crate::target::find_file_anywhere(&Caller::new(tid).ok()?, node)?;
        let backend = self.shim.backend_mut();
        let inert = backend.lend_device_file(handle, file).ok()?;
        let mapped = backend.map_device_region(ctx, ioas, handle, region, offset, op);
        if let Err(e) = backend.lend_device_file(handle, inert) {
            log::error!("supervisor: device file not given back: {e}");
        }
        Some(mapped)
    }

    fn traced_kvm_call(&mut self, mut stop: Box<TraceStop>) {
        let (_, args) = stop.call();
        let tid = stop.tid().as_raw() as u32;
        let call = match Caller::new(tid) {
            Ok(caller) => self.kvm_call(&caller, args[2]),
            Err(_) => KvmCall::Kernel,
        };
        let KvmCall::Group(group, add) = call else {
            log_lost(stop.resume());
            return;
        };
        let (result, deferred) = self.kvm_group_file(&mut stop, args[0], group, add);
        log_lost(if stop.ran() { stop.finish(result) } else { stop.skip(result) });
        for call in deferred {
            self.notified_call(call);
        }
    }
}

/// A thread killed while stopped reports its exit next; nothing else to do.
fn log_lost(r: Result<(), nix::errno::Errno>) {
    if let Err(e) = r {
        if e != Errno::ESRCH {
            log::warn!("supervisor: letting a traced thread go on: {e}");
        }
    }
}
