//! The supervised caller of one call: its memory and its fds, as the kernel would see them for
//! the call it made.

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use vfio_shim_sys::caller::{read_thread_memory, take_fd, thread_pidfd};
use vfio_shim_sys::private_nodes::NodeId;

/// The longest path the kernel takes (`PATH_MAX`, counting the NUL).
const PATH_MAX: usize = 4096;

/// The thread making a call.
pub(crate) struct Caller {
    pub(crate) tid: u32,
    pidfd: OwnedFd,
}

impl Caller {
    pub(crate) fn new(tid: u32) -> Result<Self, Errno> {
        Ok(Caller { tid, pidfd: thread_pidfd(tid)? })
    }

    /// Its fd `fd`, as a file of ours (`EBADF` when it has none).
    pub(crate) fn file(&self, fd: i32) -> Result<OwnedFd, Errno> {
        take_fd(self.pidfd.as_fd(), fd)
    }

    /// Its fd `fd` and the node that names it, if the file is one of ours.
    pub(crate) fn file_and_node(&self, fd: i32) -> Result<(OwnedFd, NodeId), Errno> {
        let file = self.file(fd)?;
        let node = NodeId::of(file.as_fd())?;
        Ok((file, node))
    }

    /// The NUL-terminated string at `addr`, read a page at most at a time so that a string
    /// ending just before an unmapped page is read whole (`getname`: EFAULT, ENAMETOOLONG).
    pub(crate) fn c_string(&self, addr: u64) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < PATH_MAX {
            let to_page_end = 4096 - (at % 4096) as usize;
            let mut chunk = vec![0u8; to_page_end.min(PATH_MAX - out.len())];
            read_thread_memory(self.tid, at, &mut chunk)?;
            if let Some(end) = chunk.iter().position(|b| *b == 0) {
                out.extend_from_slice(&chunk[..end]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
            at = at.checked_add(chunk.len() as u64).ok_or(Errno::EFAULT)?;
        }
        Err(Errno::ENAMETOOLONG)
    }

    /// A value of type `T` at `addr` of its memory.
    pub(crate) fn read<T: zerocopy::FromBytes + zerocopy::IntoBytes>(&self, addr: u64) -> Result<T, Errno> {
        let mut v = T::new_zeroed();
        read_thread_memory(self.tid, addr, v.as_mut_bytes())?;
        Ok(v)
    }

    /// The first of its fds that is the file of `node`, found through `/proc/<tid>/fd`.
    pub(crate) fn find_file(&self, node: NodeId) -> Option<OwnedFd> {
        let dir = std::fs::read_dir(format!("/proc/{}/fd", self.tid)).ok()?;
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|fd| self.file_and_node(fd).ok())
            .find(|(_, n)| *n == node)
            .map(|(file, _)| file)
    }
}

/// The file of `node` from any supervised process that holds an fd of it (this one's tracees,
/// by `TracerPid` in `/proc/<pid>/status`), the caller's first: a device file one process
/// holds while another asks for the device (`GET_DEVICE_FD` after `SCM_RIGHTS`, fork).
pub(crate) fn find_file_anywhere(caller: &Caller, node: NodeId) -> Option<OwnedFd> {
    if let Some(file) = caller.find_file(node) {
        return Some(file);
    }
    let me = std::process::id().to_string();
    let pids = std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let traced_by_us = status.lines().any(|l| l.strip_prefix("TracerPid:").is_some_and(|v| v.trim() == me));
        if !traced_by_us || pid == caller.tid {
            continue;
        }
        if let Some(file) = Caller::new(pid).ok().and_then(|c| c.find_file(node)) {
            return Some(file);
        }
    }
    None
}
