//! Private character nodes for the supervisor (docs/supervisor.md, "Objects"): each file the
//! supervisor gives a program is opened through a node of its own, with the real device's
//! numbers, in a tmpfs only the supervisor's mount namespace has. The file is the device's own;
//! its inode names the object (identity, whatever fd number or process holds it), and an
//! inotify watch on the node reports when its open file description is released (lifetime).

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::stat::{fstat, mknod, Mode, SFlag};

/// What names an object: the inode of the node it was opened through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId {
    dev: u64,
    ino: u64,
}

impl NodeId {
    /// The node of a file mapped at some address, as `/proc/<pid>/maps` names it: the device
    /// numbers of its filesystem and its inode.
    pub fn from_maps(major: u32, minor: u32, ino: u64) -> Self {
        NodeId { dev: nix::sys::stat::makedev(u64::from(major), u64::from(minor)), ino }
    }

    /// The identity of an open file (its inode), to look up among the nodes.
    pub fn of(file: BorrowedFd<'_>) -> Result<Self, Errno> {
        let st = fstat(file)?;
        Ok(NodeId { dev: st.st_dev, ino: st.st_ino })
    }
}

/// The supervisor's node directory and the watch on its nodes.
#[derive(Debug)]
pub struct PrivateNodes {
    dir: PathBuf,
    inotify: Inotify,
    watches: HashMap<WatchDescriptor, (NodeId, PathBuf)>,
    made: u64,
}

impl PrivateNodes {
    /// Moves this process into a mount namespace of its own (so nothing it mounts is seen
    /// outside, and a program it already started keeps the system's) and mounts a fresh tmpfs
    /// at `dir` there (without `nodev`, so its nodes open). Needs `CAP_SYS_ADMIN` and a
    /// single-threaded process (`unshare(CLONE_NEWNS)` implies `CLONE_FS`).
    pub fn create(dir: &Path) -> Result<Self, Errno> {
        unshare(CloneFlags::CLONE_NEWNS)?;
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
        mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("mode=0700"))?;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
        Ok(PrivateNodes { dir: dir.to_owned(), inotify, watches: HashMap::new(), made: 0 })
    }

    /// Opens the character device `device` (e.g. `/dev/iommu`, a VFIO cdev) through a new node
    /// with its numbers: the device's own file, under an inode of its own, watched.
    pub fn open(&mut self, device: &Path, flags: OFlag) -> Result<(OwnedFd, NodeId), Errno> {
        let meta = std::fs::metadata(device).map_err(crate::errno_of)?;
        if !meta.file_type().is_char_device() {
            return Err(Errno::ENODEV);
        }
        use std::os::unix::fs::MetadataExt;
        self.made += 1;
        let node = self.dir.join(format!("{}", self.made));
        mknod(&node, SFlag::S_IFCHR, Mode::S_IRUSR | Mode::S_IWUSR, meta.rdev())?;
        let opened = nix::fcntl::open(&node, flags | OFlag::O_CLOEXEC, Mode::empty());
        let file = match opened {
            Ok(fd) => fd,
            Err(e) => {
                if let Err(cleanup) = std::fs::remove_file(&node) {
                    log::warn!("private node {}: {cleanup}", node.display());
                }
                return Err(e);
            }
        };
        let id = NodeId::of(file.as_fd())?;
        let wd = self.inotify.add_watch(&node, AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_CLOSE_NOWRITE)?;
        self.watches.insert(wd, (id, node));
        Ok((file, id))
    }

    /// The inotify fd, to poll for releases.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// The objects whose open file description was released since the last call (after the
    /// last fd in any process, and any copy in flight in a socket, went); their nodes are
    /// removed.
    pub fn released(&mut self) -> Result<Vec<NodeId>, Errno> {
        let mut gone = Vec::new();
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EAGAIN) => return Ok(gone),
                Err(e) => return Err(e),
            };
            for ev in events {
                if !ev.mask.intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_CLOSE_NOWRITE) {
                    continue;
                }
                if let Some((id, node)) = self.watches.remove(&ev.wd) {
                    // The watch goes with the node's inode anyway (IN_IGNORED); removing it
                    // first only spares that event, so its failure changes nothing.
                    let _ = self.inotify.rm_watch(ev.wd);
                    std::fs::remove_file(&node).map_err(crate::errno_of)?;
                    gone.push(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
