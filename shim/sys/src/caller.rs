//! A CUSE caller's process, seen from the daemon: its file descriptors (`pidfd_getfd`) and
//! its shared memory (`/proc/<pid>/map_files`), for a client that does not load the preload.
//!
//! Race freedom: the caller's thread is blocked in the daemon's request for as long as the
//! daemon works on it; once the daemon has read a request the caller waits for the answer
//! uninterruptibly, even against SIGKILL (fs/fuse/dev.c:745-749), so its thread cannot be
//! reaped and its id cannot be reused meanwhile. On top of that, [`CallerProcess::open`] pins
//! the thread with a pidfd, opens `/proc/<tid>` and then checks through the pidfd that the
//! thread is still the one it names, the usual pidfd idiom: everything after that is read
//! relative to that directory fd.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

/// `PIDFD_THREAD` (include/uapi/linux/pidfd.h): a pidfd for one thread, not its group leader.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// The errno a daemon-served `MAP_DMA` gives for memory it cannot pin on the caller's behalf:
/// private (anonymous or copy-on-write file) memory, which only the owning process can pin.
pub const PRIVATE_MEMORY_ERRNO: Errno = Errno::EOPNOTSUPP;

/// A thread blocked in one of our CUSE requests.
#[derive(Debug)]
pub struct CallerProcess {
    tid: u32,
    pidfd: OwnedFd,
    proc_dir: OwnedFd,
}

/// The file and offset behind a range of a caller's shared mapping.
#[derive(Debug)]
pub struct SharedBacking {
    pub file: OwnedFd,
    pub offset: u64,
}

impl CallerProcess {
    /// Pins thread `tid` (an id in the daemon's pid namespace, as CUSE requests carry it).
    pub fn open(tid: u32) -> Result<CallerProcess, Errno> {
        let tid_c = libc::pid_t::try_from(tid).map_err(|_| Errno::ESRCH)?;
        // SAFETY: pidfd_open takes a pid and flags, no pointers; the result is a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid_c, PIDFD_THREAD) };
        let fd = Errno::result(fd)? as i32;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let proc_dir = nix::fcntl::open(
            format!("/proc/{tid}").as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: pidfd_send_signal with signal 0 only checks the target; no pointers passed
        // (info is NULL).
        let rc = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0)
        };
        Errno::result(rc)?;
        Ok(CallerProcess { tid, pidfd, proc_dir })
    }

    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// A duplicate of the caller's fd `fd` (`pidfd_getfd`): `EBADF` when it is not open.
    pub fn dup_fd(&self, fd: i32) -> Result<OwnedFd, Errno> {
        if fd < 0 {
            return Err(Errno::EBADF);
        }
        // SAFETY: pidfd_getfd takes a pidfd, an fd number and flags; no pointers. The result
        // is a new fd in this process (O_CLOEXEC set by the kernel) or -1.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.pidfd.as_raw_fd(), fd, 0) };
        let new = Errno::result(rc)? as i32;
        // SAFETY: `new` was just created by the kernel for us and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(new) })
    }

    fn read_maps(&self) -> Result<String, Errno> {
        let fd = openat(self.proc_dir.as_fd(), "maps", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        let mut text = String::new();
        File::from(fd).read_to_string(&mut text).map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?;
        Ok(text)
    }

    /// The file behind `[vaddr, vaddr + length)` of the caller's memory, if that range is one
    /// shared file mapping (memfd, hugetlbfs, /dev/shm, possibly split into adjacent VMAs of
    /// the same file at contiguous offsets). Unmapped memory is `EFAULT` (what pinning gives
    /// type1); a read-only mapping asked for `write` is `EFAULT` too (FOLL_WRITE fails);
    /// private memory is [`PRIVATE_MEMORY_ERRNO`].
    pub fn shared_backing(&self, vaddr: u64, length: u64, write: bool) -> Result<SharedBacking, Errno> {
        let maps = self.read_maps()?;
        let vmas: Vec<Vma<'_>> = maps.lines().filter_map(Vma::parse).collect();
        let (first, offset) = covering_shared_file(&vmas, vaddr, length, write)?;
        let name = format!("map_files/{:x}-{:x}", first.start, first.end);
        let flags = if write { OFlag::O_RDWR } else { OFlag::O_RDONLY };
        let file = openat(self.proc_dir.as_fd(), name.as_str(), flags | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(SharedBacking { file, offset })
    }

    fn read_proc(&self, name: &str) -> Result<String, Errno> {
        let fd = openat(self.proc_dir.as_fd(), name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        let mut text = String::new();
        File::from(fd).read_to_string(&mut text).map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?;
        Ok(text)
    }

    /// What type1 would check when this thread pins memory (vfio_iommu_type1.c
    /// vfio_pin_pages_remote): its process's locked pages against its RLIMIT_MEMLOCK, unless
    /// the thread has CAP_IPC_LOCK (`dma->lock_cap`).
    pub fn memlock(&self) -> Result<Memlock, Errno> {
        parse_memlock(&self.read_proc("status")?, &self.read_proc("limits")?).ok_or(Errno::EIO)
    }

    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

/// A caller's memory-locking state, as type1 sees it at `MAP_DMA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memlock {
    /// The process (thread group) the pages are charged to: type1 charges `dma->mm`.
    pub tgid: u32,
    /// `VmLck`: the process's `mm->locked_vm` in bytes (its own mlocks).
    pub locked: u64,
    /// The soft RLIMIT_MEMLOCK in bytes; `None` when unlimited or the thread has CAP_IPC_LOCK.
    pub limit: Option<u64>,
}

const CAP_IPC_LOCK: u32 = 14;

/// From `/proc/<tid>/status` and `/proc/<tid>/limits`.
pub fn parse_memlock(status: &str, limits: &str) -> Option<Memlock> {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let tgid = field("Tgid:")?.parse().ok()?;
    let locked = field("VmLck:").map_or(Some(0), |v| v.trim_end_matches("kB").trim().parse::<u64>().ok())? * 1024;
    let cap_eff = u64::from_str_radix(field("CapEff:")?, 16).ok()?;
    let soft = limits.lines().find_map(|l| l.strip_prefix("Max locked memory"))?.split_whitespace().next()?;
    let limit = match soft {
        "unlimited" => None,
        n => Some(n.parse().ok()?),
    };
    let limit = if cap_eff & (1 << CAP_IPC_LOCK) != 0 { None } else { limit };
    Some(Memlock { tgid, locked, limit })
}

/// One line of `/proc/<pid>/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma<'a> {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub shared: bool,
    pub offset: u64,
    /// `major:minor`
    pub dev: &'a str,
    pub inode: u64,
    pub path: &'a str,
}

impl<'a> Vma<'a> {
    /// `start-end perms offset dev inode [path]` (fs/proc/task_mmu.c show_vma_header_prefix).
    pub fn parse(line: &'a str) -> Option<Vma<'a>> {
        let mut f = line.splitn(6, ' ');
        let (start, end) = f.next()?.split_once('-')?;
        let perms = f.next()?.as_bytes();
        if perms.len() != 4 {
            return None;
        }
        let offset = u64::from_str_radix(f.next()?, 16).ok()?;
        let dev = f.next()?;
        let inode = f.next()?.parse().ok()?;
        let path = f.next().unwrap_or("").trim_start();
        Some(Vma {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            readable: perms[0] == b'r',
            writable: perms[1] == b'w',
            shared: perms[3] == b's',
            offset,
            dev,
            inode,
            path,
        })
    }

    /// Backed by a file (a memfd and `/dev/zero` shared memory included), not anonymous
    /// memory, the heap, the stack or a kernel pseudo-mapping such as `[vvar]`.
    fn has_file(&self) -> bool {
        self.inode != 0 && !self.path.is_empty() && !self.path.starts_with('[')
    }
}

/// The first VMA of the shared file mapping covering `[vaddr, vaddr + length)` and the file
/// offset of `vaddr`, following adjacent VMAs of the same file at contiguous offsets.
pub fn covering_shared_file<'v, 'a>(
    vmas: &'v [Vma<'a>],
    vaddr: u64,
    length: u64,
    write: bool,
) -> Result<(&'v Vma<'a>, u64), Errno> {
    let end = vaddr.checked_add(length).ok_or(Errno::EFAULT)?;
    let i = vmas.iter().position(|v| v.start <= vaddr && vaddr < v.end).ok_or(Errno::EFAULT)?;
    let first = &vmas[i];
    let mut prev = first;
    for v in &vmas[i..] {
        if !std::ptr::eq(v, first)
            && (v.start != prev.end
                || v.dev != first.dev
                || v.inode != first.inode
                || v.offset != prev.offset + (prev.end - prev.start))
        {
            // A hole or another object before the end of the range.
            return Err(if v.start != prev.end { Errno::EFAULT } else { PRIVATE_MEMORY_ERRNO });
        }
        if !v.readable || (write && !v.writable) {
            return Err(Errno::EFAULT);
        }
        if !v.shared || !v.has_file() {
            return Err(PRIVATE_MEMORY_ERRNO);
        }
        if end <= v.end {
            return Ok((first, first.offset + (vaddr - first.start)));
        }
        prev = v;
    }
    Err(Errno::EFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000200000 rw-s 00000000 00:01 1041                       /memfd:dma (deleted)
7f0000200000-7f0000400000 r--s 00200000 00:01 1041                       /memfd:dma (deleted)
7f0000400000-7f0000600000 rw-s 00000000 00:10 77                         /dev/hugepages/buf
7f0000600000-7f0000800000 rw-s 00400000 00:10 77                         /dev/hugepages/buf
7f0000800000-7f0000a00000 rw-p 00000000 00:00 0 
7f0000a00000-7f0000a01000 rw-p 00000000 fd:01 5                          /usr/lib/x.so
7f0000b00000-7f0000b01000 rw-s 00000000 00:01 9                          /dev/zero (deleted)
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
";

    fn vmas() -> Vec<Vma<'static>> {
        MAPS.lines().filter_map(Vma::parse).collect()
    }

    #[test]
    fn parses_every_line() {
        let v = vmas();
        assert_eq!(v.len(), 9);
        assert_eq!(v[1].path, "/memfd:dma (deleted)");
        assert!(v[1].shared && v[1].writable);
        assert_eq!(v[5].path, "");
        assert_eq!(v[5].inode, 0);
        assert_eq!(v[2].offset, 0x200000);
    }

    #[test]
    fn shared_file_ranges() {
        let v = vmas();
        let (vma, off) = covering_shared_file(&v, 0x7f0000001000, 0x1000, true).unwrap();
        assert_eq!((vma.start, off), (0x7f0000000000, 0x1000));
        // Read-only second half: fine for read, EFAULT for write (type1 pins with FOLL_WRITE).
        assert!(covering_shared_file(&v, 0x7f0000100000, 0x200000, false).is_ok());
        assert_eq!(covering_shared_file(&v, 0x7f0000100000, 0x200000, true).unwrap_err(), Errno::EFAULT);
        // Same hugetlbfs file, adjacent VMAs, but offsets not contiguous: not one file range.
        assert_eq!(covering_shared_file(&v, 0x7f0000400000, 0x400000, true).unwrap_err(), PRIVATE_MEMORY_ERRNO);
        assert_eq!(covering_shared_file(&v, 0x7f0000400000, 0x200000, true).unwrap().1, 0);
        // /dev/zero shared memory is a shmem file.
        assert!(covering_shared_file(&v, 0x7f0000b00000, 0x1000, true).is_ok());
    }

    #[test]
    fn private_and_unmapped() {
        let v = vmas();
        for addr in [0x55d0c0a00000, 0x7f0000800000, 0x7f0000a00000, 0x7ffc00000000] {
            assert_eq!(covering_shared_file(&v, addr, 0x1000, true).unwrap_err(), PRIVATE_MEMORY_ERRNO, "{addr:x}");
        }
        assert_eq!(covering_shared_file(&v, 0x1000, 0x1000, true).unwrap_err(), Errno::EFAULT);
        // Runs past the end of the last mapping, or into a hole.
        assert_eq!(covering_shared_file(&v, 0x7f0000b00000, 0x2000, true).unwrap_err(), Errno::EFAULT);
        assert_eq!(covering_shared_file(&v, u64::MAX - 1, 4, true).unwrap_err(), Errno::EFAULT);
    }

    #[test]
    fn memlock_from_proc() {
        let status = "Name:\tx\nTgid:\t42\nPid:\t43\nVmLck:\t      8 kB\nCapEff:\t0000000000000000\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max locked memory         1048576              8388608              bytes     \n";
        assert_eq!(parse_memlock(status, limits), Some(Memlock { tgid: 42, locked: 8192, limit: Some(1 << 20) }));
        let capable = status.replace("0000000000000000", "0000000000004000");
        assert_eq!(parse_memlock(&capable, limits).unwrap().limit, None);
        let unlimited = limits.replace("1048576 ", "unlimited");
        assert_eq!(parse_memlock(status, &unlimited).unwrap().limit, None);
        assert_eq!(parse_memlock("Tgid:\t1\n", limits), None);
        // This process, for real.
        let me = CallerProcess::open(std::process::id()).unwrap();
        assert_eq!(me.memlock().unwrap().tgid, std::process::id());
    }

    #[test]
    fn a_pinned_caller_is_this_process() {
        let me = CallerProcess::open(std::process::id()).unwrap();
        let dup = me.dup_fd(0);
        // stdin may be closed under a test harness; either a dup or EBADF, never a panic.
        assert!(dup.is_ok() || dup.unwrap_err() == Errno::EBADF);
        assert_eq!(me.dup_fd(-1).unwrap_err(), Errno::EBADF);
        assert_eq!(me.dup_fd(1 << 30).unwrap_err(), Errno::EBADF);
    }
}
