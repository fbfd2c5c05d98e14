//! The host tier's golden replay: the explorer's calls answered by the shim's core over its
//! fake backend, with the fd bookkeeping the preload does (one real `/dev/null` file per
//! container or group fd, so VFS ioctls and fcntl meet a real character device as they do in
//! the preload; dup aliases; an object goes with its last fd). Device fds are out of scope:
//! the golden corpus has no device ops, and GET_DEVICE_FD here is a test failure.

use std::collections::HashMap;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::OpenOptionsExt;

use vfio_shim::abi;
use vfio_shim::backend::GroupDevice;
use vfio_shim::fake::{FakeBackend, Platform as FakePlatform};
use vfio_shim::translator::Config;
use vfio_shim::{ContainerId, Errno, FdTarget, GroupId, GroupReply, Shim};
use vfio_shim_sys::own_memory::{pinnable, OwnMemory};

use crate::calls::{Calls, Libc};
use crate::executor::Platform;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Object {
    Container(ContainerId),
    Group(GroupId),
}

/// The test VM's IOMMU (the platform the golden transcripts were recorded on), with the pin
/// of the caller's memory modelled on this process's mappings.
pub fn vm_iommu() -> FakePlatform {
    FakePlatform { pin: Some(pinnable), ..FakePlatform::test_vm() }
}

pub struct CoreCalls {
    shim: Shim<FakeBackend>,
    fds: HashMap<i32, Object>,
    refs: HashMap<Object, usize>,
}

impl CoreCalls {
    /// The core over a fake backend with the test VM's groups and IOMMU. `pair_members`: every
    /// device of the pair's group and its driver at the start of a sequence, as sysfs shows it.
    pub fn new(
        platform: &Platform,
        pair_members: &[(String, Option<String>)],
        iommu: FakePlatform,
        config: Config,
    ) -> Self {
        let pair = pair_members
            .iter()
            .enumerate()
            .map(|(n, (name, driver))| GroupDevice {
                name: name.clone(),
                driver: driver.clone(),
                cdev: driver
                    .as_deref()
                    .filter(|d| *d == "vfio-pci")
                    .map(|_| format!("/dev/vfio/devices/vfio{}", 900 + n)),
                sriov: false,
            })
            .collect();
        let mut backend = FakeBackend::new()
            .with_group(platform.edu_group, &[platform.edu.as_str()])
            .with_group(platform.igb_group, &[platform.igb.as_str()])
            .with_group_devices(platform.pair_group, pair);
        backend.platform = iommu;
        CoreCalls { shim: Shim::with_config(backend, config), fds: HashMap::new(), refs: HashMap::new() }
    }

    /// The core objects still alive (containers and groups): none after every sequence.
    pub fn live_fds(&self) -> usize {
        self.fds.len()
    }

    pub fn backend(&self) -> &FakeBackend {
        self.shim.backend()
    }

    /// A real file for an emulated fd: `/dev/null` with the caller's access mode and flags.
    fn file(flags: i32) -> Result<i32, Errno> {
        let keep = libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_APPEND | libc::O_NOATIME;
        let acc = flags & libc::O_ACCMODE;
        std::fs::OpenOptions::new()
            .read(acc != libc::O_WRONLY)
            .write(acc != libc::O_RDONLY)
            .custom_flags((flags & keep) | libc::O_NOCTTY)
            .open("/dev/null")
            .map(|f| f.into_raw_fd())
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
    }

    fn adopt(&mut self, fd: i32, obj: Object) {
        self.fds.insert(fd, obj);
        *self.refs.entry(obj).or_default() += 1;
    }

    fn new_object(&mut self, obj: Result<Object, Errno>, flags: i32) -> (i64, i32) {
        let obj = match obj {
            Ok(o) => o,
            Err(e) => return (-1, e as i32),
        };
        match Self::file(flags) {
            Ok(fd) => {
                self.adopt(fd, obj);
                (fd as i64, 0)
            }
            Err(e) => {
                self.release(obj);
                (-1, e as i32)
            }
        }
    }

    fn release(&mut self, obj: Object) {
        match obj {
            Object::Container(id) => self.shim.close_container(id),
            Object::Group(id) => self.shim.close_group(id),
        }
    }

    fn forget(&mut self, fd: i32) -> Option<Object> {
        let obj = self.fds.remove(&fd)?;
        let n = self.refs.get_mut(&obj).expect("counted");
        *n -= 1;
        if *n > 0 {
            return None;
        }
        self.refs.remove(&obj);
        Some(obj)
    }
}

impl Calls for CoreCalls {
    fn open(&mut self, path: &str, flags: i32) -> (i64, i32) {
        if vfio_shim::nodes::is_container_path(path.as_bytes()) {
            let obj = self.shim.open_container().map(Object::Container);
            return self.new_object(obj, flags);
        }
        if let Some(n) = vfio_shim::nodes::noiommu_group_number(path.as_bytes()) {
            let obj = self.shim.open_noiommu_group(n).map(Object::Group);
            return self.new_object(obj, flags);
        }
        match vfio_shim::nodes::group_number(path.as_bytes()) {
            Some(n) => {
                let obj = self.shim.open_group(n).map(Object::Group);
                self.new_object(obj, flags)
            }
            None => Libc.open(path, flags),
        }
    }

    fn close(&mut self, fd: i32) -> (i64, i32) {
        let last = self.forget(fd);
        let r = Libc.close(fd);
        if let Some(obj) = last {
            self.release(obj);
        }
        r
    }

    fn fcntl(&mut self, fd: i32, cmd: i32, arg: i64) -> (i64, i32) {
        let r = Libc.fcntl(fd, cmd, arg);
        if r.0 >= 0 && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) {
            if let Some(&obj) = self.fds.get(&fd) {
                self.adopt(r.0 as i32, obj);
            }
        }
        r
    }

    fn ioctl(&mut self, fd: i32, req: u32, arg: u64) -> (i64, i32) {
        let Some(&obj) = self.fds.get(&fd) else { return Libc.ioctl(fd, req, arg) };
        if abi::is_generic_vfs_ioctl(req) {
            return Libc.ioctl(fd, req, arg);
        }
        // SAFETY: `arg` is the explorer's own argument for the request it replays.
        let mut mem = unsafe { OwnMemory::new(arg) };
        let r = match obj {
            Object::Container(id) => self.shim.container_ioctl(id, req, arg, &mut mem),
            Object::Group(id) => {
                let fds = &self.fds;
                let resolve = |other: i32| match fds.get(&other) {
                    Some(Object::Container(c)) => FdTarget::Container(*c),
                    Some(_) => FdTarget::Other,
                    None if Libc.fcntl(other, libc::F_GETFD, 0).0 >= 0 => FdTarget::Other,
                    None => FdTarget::Closed,
                };
                self.shim.group_ioctl(id, req, &mut mem, &resolve).map(|reply| match reply {
                    GroupReply::Done => 0,
                    GroupReply::Device(_) => panic!("GET_DEVICE_FD in the host replay: the corpus has no device ops"),
                })
            }
        };
        match r {
            Ok(v) => (v, 0),
            Err(e) => (-1, e as i32),
        }
    }

    fn set_rawio(&mut self, keep: bool) -> (i64, i32) {
        self.shim.backend_mut().set_rawio(keep);
        (0, 0)
    }
}
