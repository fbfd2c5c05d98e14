//! The kernel backend serving a supervised program (docs/supervisor.md): files opened through
//! the supervisor's private nodes, a staging IOAS first in every context, contexts and device
//! files lent by the program for a call, and a map pinned in the program's own thread.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use vfio_shim::backend::{DeviceHandle, DmaOp, IoasId, IommufdId, KvmFile};

use super::{map_flags, open_rw, KernelBackend};
use crate::iommufd;
use crate::ptrace::TraceStop;

/// Opens a character device the way the supervisor names its objects by.
pub type FileOpener = Box<dyn FnMut(&Path) -> Result<OwnedFd, Errno> + Send>;

pub(super) struct Supervised {
    opener: FileOpener,
    /// Each context's staging IOAS: the first one allocated, never attached to a device.
    staging: std::collections::HashMap<IommufdId, IoasId>,
}

impl KernelBackend {
    /// Serves a supervised program from now on: `/dev/iommu` and device cdevs are opened with
    /// `opener` (the supervisor's private nodes), and every new context gets its staging IOAS.
    pub fn supervise(&mut self, opener: FileOpener) {
        self.supervised = Some(Supervised { opener, staging: Default::default() });
    }

    /// An object's file: through the supervisor's opener when supervised.
    pub(super) fn open_object(&mut self, path: &Path) -> Result<OwnedFd, Errno> {
        match self.supervised.as_mut() {
            Some(s) => (s.opener)(path),
            None => open_rw(path),
        }
    }

    /// The staging IOAS of a new supervised context, allocated first (docs/supervisor.md).
    pub(super) fn alloc_staging(&mut self, ctx: IommufdId) -> Result<(), Errno> {
        if self.supervised.is_none() {
            return Ok(());
        }
        let ioas = iommufd::ioas_alloc(self.iommufd(ctx)?)?;
        self.supervised.as_mut().expect("checked").staging.insert(ctx, IoasId(ioas));
        Ok(())
    }

    /// The program's file of context `ctx` (an fd it holds, taken with `pidfd_getfd`), for
    /// the backend to use until [`KernelBackend::park_iommufd`]. A context already held is
    /// kept as it is.
    pub fn lend_iommufd(&mut self, ctx: IommufdId, file: OwnedFd) {
        self.iommufds.entry(ctx).or_insert_with(|| Arc::new(file));
    }

    /// Drops the backend's file of `ctx`, so that the program's last close of it is the file's
    /// release. Its devices keep the context alive in the kernel meanwhile.
    pub fn park_iommufd(&mut self, ctx: IommufdId) {
        self.iommufds.remove(&ctx);
    }

    /// A duplicate of the backend's file of `ctx` (close-on-exec), to give the program.
    pub fn iommufd_file(&self, ctx: IommufdId) -> Result<OwnedFd, Errno> {
        self.iommufd(ctx)?.try_clone_to_owned().map_err(|e| super::errno_of(&e))
    }

    /// A map of a device region the program mapped (peer-to-peer DMA to a BAR: its pages
    /// cannot be pinned, so the map of the thread's memory failed `EFAULT`): the device's
    /// file, lent by the program, exports `[offset, offset + length)` of region `region` as a
    /// dma-buf, which is mapped at `iova` (as the preload's fallback does for its own maps).
    pub fn map_device_region(
        &mut self,
        ctx: IommufdId,
        ioas: IoasId,
        dev: DeviceHandle,
        region: u32,
        offset: u64,
        op: DmaOp,
    ) -> Result<u64, Errno> {
        let DmaOp::Map { iova, length, prot, .. } = op else {
            return Err(Errno::EINVAL);
        };
        self.map_region_dma_buf(ctx, ioas, dev, (region, offset), length, iova, map_flags(prot)).map(|()| 0)
    }

    /// The file opened for KVM's VFIO device (`Backend::kvm_file_open`), to deliver to the
    /// program, whose own call names it to KVM.
    pub fn kvm_file(&self, file: KvmFile) -> Result<BorrowedFd<'_>, Errno> {
        self.kvm_files.get(&file).map(|f| f.as_fd()).ok_or(Errno::EBADF)
    }

    /// Whether the backend holds a file of `ctx` now.
    pub fn holds_iommufd(&self, ctx: IommufdId) -> bool {
        self.iommufds.contains_key(&ctx)
    }

    /// The bound file of `dev`, given away to the program: the backend keeps an inert file
    /// in its place, so the program's last close of it is the device's last close (vfio-pci
    /// quiesces the device), and `device_reopen` opens and binds it afresh afterwards.
    pub fn hand_out_device(&mut self, dev: DeviceHandle) -> Result<OwnedFd, Errno> {
        let inert = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
        let d = self.devices.get_mut(&dev).ok_or(Errno::EBADF)?;
        if d.released {
            return Err(Errno::EBADF);
        }
        d.released = true;
        Ok(std::mem::replace(&mut d.fd, inert))
    }

    /// Puts a program's file of a handed-out device back for one call; returns the inert
    /// file it replaced, which [`KernelBackend::lend_device_file`] takes back afterwards.
    pub fn lend_device_file(&mut self, dev: DeviceHandle, file: OwnedFd) -> Result<OwnedFd, Errno> {
        let d = self.devices.get_mut(&dev).ok_or(Errno::EBADF)?;
        Ok(std::mem::replace(&mut d.fd, file))
    }

    /// `VFIO_IOMMU_MAP_DMA` of a supervised thread stopped in it, as the map `op`: the
    /// thread's call becomes `IOMMU_IOAS_MAP` of `[vaddr, vaddr + length)` into the context's staging IOAS, on the
    /// same fd, so the kernel records the thread's own mm and pins nothing; the range is then
    /// copied into `ioas` (pinning the thread's pages, charged to it) and staging emptied.
    /// Returns the copy's result: only a range the thread's call mapped whole can be copied.
    pub fn map_in_stopped_thread(
        &mut self,
        stop: &mut TraceStop,
        ctx: IommufdId,
        ioas: IoasId,
        op: DmaOp,
    ) -> Result<u64, Errno> {
        let DmaOp::Map { iova, vaddr, length, prot } = op else {
            return Err(Errno::EINVAL);
        };
        let staging = self.supervised.as_ref().and_then(|s| s.staging.get(&ctx)).copied().ok_or(Errno::EINVAL)?;
        let flags = map_flags(prot);
        let fd = stop.call().1[0];
        let mut native = Vec::with_capacity(40);
        native.extend_from_slice(&(std::mem::size_of::<iommufd::iommu_ioas_map>() as u32).to_ne_bytes());
        native.extend_from_slice(&flags.to_ne_bytes());
        native.extend_from_slice(&staging.0.to_ne_bytes());
        native.extend_from_slice(&0u32.to_ne_bytes());
        native.extend_from_slice(&vaddr.to_ne_bytes());
        native.extend_from_slice(&length.to_ne_bytes());
        native.extend_from_slice(&iova.to_ne_bytes());
        // Marked: the filter lets the thread's own IOAS_MAP run (seccomp::SUPERVISOR_MARK).
        let ran = stop.run_instead(libc::SYS_ioctl, &native, |at| {
            [fd, crate::seccomp::SUPERVISOR_MARK | u64::from(iommufd::IOMMU_IOAS_MAP), at, 0, 0, 0]
        })?;
        if ran < 0 {
            return Err(Errno::from_raw(-ran as i32));
        }
        let file = self.iommufd(ctx)?;
        let copied = iommufd::ioas_copy(file, ioas.0, staging.0, flags, length, iova, iova);
        // Staging is emptied whatever the copy gave: its mapping pins nothing, and the next map
        // must find it empty (a copy from it must never find another call's range).
        if let Err(e) = iommufd::ioas_unmap(file.as_fd(), staging.0, 0, u64::MAX) {
            log::error!("supervisor: emptying the staging IOAS failed: {e}");
        }
        copied.map(|_| 0)
    }
}
