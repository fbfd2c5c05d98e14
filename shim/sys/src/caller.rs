//! A CUSE caller's process, seen from the daemon: its file descriptors (`pidfd_getfd`) and
//! its shared memory (`/proc/<pid>/map_files`), for a client that does not load the preload.
//!
//! Race freedom: the caller's thread is blocked in the daemon's request for as long as the
//! daemon works on it; once the daemon has read a request the caller waits for the answer
//! uninterruptibly, even against SIGKILL (fs/fuse/dev.c:745-749), so its thread cannot be
//! reaped and its id cannot be reused meanwhile. On top of that, [`CallerProcess::open`] pins
//! the thread with a pidfd, opens `/proc/<tid>` and then checks through the pidfd that the
//! thread is still the one it names, the usual pidfd idiom: its `/proc` files are read
//! relative to that directory fd. What is addressed by thread id (`process_vm_readv`,
//! `capget`, `prlimit`) relies on the first guarantee alone.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use crate::{privileges, procfs};

/// `PIDFD_THREAD` (include/uapi/linux/pidfd.h): a pidfd for one thread, not its group leader.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// The errno a daemon-served `MAP_DMA` gives for memory it cannot pin on the caller's behalf:
/// private (anonymous or copy-on-write file) memory, which only the owning process can pin.
pub const PRIVATE_MEMORY_ERRNO: Errno = Errno::EOPNOTSUPP;

/// A thread blocked in one of our CUSE requests.
#[derive(Debug)]
pub struct CallerProcess {
    tid: u32,
    /// The process the thread belongs to: type1 charges pinned pages to its mm.
    process: ProcessId,
    pidfd: OwnedFd,
    proc_dir: OwnedFd,
    /// `/proc/<tid>/maps`, for `PROCMAP_QUERY`; it names the mm the thread had at open.
    maps: OwnedFd,
    /// The last file mapped for this caller, checked (tmpfs or hugetlbfs), by its VMA's
    /// `(dev, inode)`. One only: it keeps that file's memory alive while cached.
    last_file: Mutex<Option<HeldFile>>,
}

/// A file held open for a caller: its VMA's `(dev, inode)` and the open file.
type HeldFile = ((u32, u32), u64, Arc<OwnedFd>);

/// A caller's map, resolved ahead (see [`CallerProcess::prepare_map`]); errors are kept to be
/// reported where type1 would report them (after its own checks).
#[derive(Debug)]
pub struct PreparedMap {
    pub vaddr: u64,
    pub length: u64,
    pub write: bool,
    pub backing: Result<SharedBacking, Errno>,
    pub memlock: Result<Memlock, Errno>,
}

impl PreparedMap {
    /// The pinned thread's memory is not the one it had (`ESRCH` from `PROCMAP_QUERY`: the mm
    /// it was pinned with has gone, after an exec): pin it again and prepare anew.
    pub fn mm_gone(&self) -> bool {
        matches!(self.backing, Err(Errno::ESRCH))
    }
}

/// The file and offset behind a range of a caller's shared mapping.
#[derive(Debug)]
pub struct SharedBacking {
    pub file: Arc<OwnedFd>,
    pub offset: u64,
}

impl CallerProcess {
    /// Pins thread `tid` (an id in the daemon's pid namespace, as CUSE requests carry it).
    pub fn open(tid: u32) -> Result<CallerProcess, Errno> {
        let pidfd = thread_pidfd(tid)?;
        let proc_dir = nix::fcntl::open(
            format!("/proc/{tid}").as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        if !thread_lives(pidfd.as_fd()) {
            return Err(Errno::ESRCH);
        }
        let maps = openat(proc_dir.as_fd(), "maps", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        let process = ProcessId { tgid: tid, start_time: 0 };
        let mut me = CallerProcess { tid, process, pidfd, proc_dir, maps, last_file: Mutex::new(None) };
        let tgid = me
            .read_proc("status")?
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or(Errno::EIO)?;
        // The leader's start time makes the id unique over time: the leader lives as long as
        // the process (our thread is pinned, so its group is), and a recycled pid starts later.
        let stat = std::fs::read_to_string(format!("/proc/{tgid}/stat"))
            .map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?;
        me.process = ProcessId { tgid, start_time: parse_start_time(&stat).ok_or(Errno::EIO)? };
        Ok(me)
    }

    /// Whether the thread's user namespace is the daemon's (the initial one, where it runs).
    fn in_initial_user_ns(&self) -> Result<bool, Errno> {
        static OURS: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
        let ours =
            OURS.get_or_init(|| nix::sys::stat::stat("/proc/self/ns/user").ok().map(|st| (st.st_dev, st.st_ino)));
        let theirs = nix::sys::stat::fstatat(&self.proc_dir, "ns/user", nix::fcntl::AtFlags::empty())?;
        Ok(*ours == Some((theirs.st_dev, theirs.st_ino)))
    }

    /// Whether this is still the live thread it was opened for: `false` once it is gone (its
    /// id may name another thread now). After an exec the thread lives on with a new mm, and
    /// `PROCMAP_QUERY` on the old one is `ESRCH`: a caller then pins the thread again (see
    /// [`PreparedMap::mm_gone`]).
    pub fn is_current(&self) -> bool {
        thread_lives(self.pidfd.as_fd())
    }

    pub fn tgid(&self) -> u32 {
        self.process.tgid
    }

    /// The VMA covering `addr` (`PROCMAP_QUERY`, no text to parse), `None` when unmapped.
    pub fn vma_at(&self, addr: u64) -> Result<Option<Vma>, Errno> {
        match procfs::procmap_query(self.maps.as_fd(), addr) {
            Ok(q) => Ok(Some(Vma {
                start: q.vma_start,
                end: q.vma_end,
                readable: q.vma_flags & procfs::PROCMAP_QUERY_VMA_READABLE != 0,
                writable: q.vma_flags & procfs::PROCMAP_QUERY_VMA_WRITABLE != 0,
                shared: q.vma_flags & procfs::PROCMAP_QUERY_VMA_SHARED != 0,
                offset: q.vma_offset,
                dev: (q.dev_major, q.dev_minor),
                inode: q.inode,
                // Only a VMA with a file has an inode here (fs/proc/task_mmu.c do_procmap_query).
                has_file: q.inode != 0,
            })),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// A duplicate of the caller's fd `fd` (`pidfd_getfd`): `EBADF` when it is not open.
    pub fn dup_fd(&self, fd: i32) -> Result<OwnedFd, Errno> {
        take_fd(self.pidfd.as_fd(), fd)
    }

    /// The file behind `[vaddr, vaddr + length)` of the caller's memory, if that range is one
    /// shared file mapping (memfd, hugetlbfs, /dev/shm, shared anonymous memory; possibly split
    /// into adjacent VMAs of the same file at contiguous offsets). Unmapped memory is `EFAULT`
    /// (what pinning gives type1); a read-only mapping asked for `write` is `EFAULT` too
    /// (FOLL_WRITE fails); private memory is [`PRIVATE_MEMORY_ERRNO`].
    pub fn shared_backing(&self, vaddr: u64, length: u64, write: bool) -> Result<SharedBacking, Errno> {
        let end = vaddr.checked_add(length).ok_or(Errno::EFAULT)?;
        let mut vmas = Vec::new();
        let mut at = vaddr;
        while at < end {
            let Some(v) = self.vma_at(at)? else { break };
            if v.start > at {
                break; // a hole
            }
            at = v.end;
            // Stop at the first VMA that decides the answer (no walk over a huge range): one
            // the pin would fault on. Past private memory the walk goes on, since a fault
            // further on is type1's answer (EFAULT) before private memory is ours.
            let faults = !v.readable || (write && !v.writable);
            vmas.push(v);
            if faults {
                break;
            }
        }
        let (first, offset) = covering_shared_file(&vmas, vaddr, length, write)?;
        let mut last = self.last_file.lock().unwrap_or_else(|e| e.into_inner());
        // Same (dev, inode) as the file we hold open: the same file (the inode cannot be
        // reused while we hold it), already checked.
        if let Some((dev, inode, file)) = last.as_ref() {
            if (*dev, *inode) == (first.dev, first.inode) {
                return Ok(SharedBacking { file: Arc::clone(file), offset });
            }
        }
        let name = format!("map_files/{:x}-{:x}", first.start, first.end);
        // O_PATH first: no ->open of a file system we have not checked (a FUSE file's server
        // could keep the daemon waiting). Only shmem and hugetlbfs can back IOMMU_IOAS_MAP_FILE
        // anyway (mm/gup.c memfd_pin_folios).
        let path = openat(self.proc_dir.as_fd(), name.as_str(), OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
        let fs = nix::sys::statfs::fstatfs(&path)?;
        let magic = fs.filesystem_type();
        if magic != nix::sys::statfs::TMPFS_MAGIC && magic != nix::sys::statfs::HUGETLBFS_MAGIC {
            return Err(PRIVATE_MEMORY_ERRNO);
        }
        // The caller may have replaced the mapping since it was queried: the file must be the
        // one the VMA named, and the VMA must still be there.
        let st = nix::sys::stat::fstat(&path)?;
        let (major, minor) = first.dev;
        if st.st_ino != first.inode
            || st.st_dev != libc::makedev(major, minor)
            || self.vma_at(vaddr)?.as_ref() != Some(first)
        {
            return Err(Errno::EAGAIN);
        }
        // IOMMU_IOAS_MAP_FILE ignores the file's open mode (io_pagetable.c:519); the caller's
        // own mapping was checked writable above when the device may write.
        let reopen = format!("/proc/self/fd/{}", path.as_raw_fd());
        let file = Arc::new(nix::fcntl::open(reopen.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?);
        *last = Some((first.dev, first.inode, Arc::clone(&file)));
        Ok(SharedBacking { file, offset })
    }

    /// Everything a map of `[vaddr, vaddr + length)` needs from the caller, gathered before
    /// the daemon takes its lock: see [`CallerProcess::shared_backing`] and
    /// [`CallerProcess::memlock`].
    pub fn prepare_map(&self, vaddr: u64, length: u64, write: bool) -> PreparedMap {
        PreparedMap {
            vaddr,
            length,
            write,
            backing: self.shared_backing(vaddr, length, write),
            memlock: self.memlock(),
        }
    }

    fn read_proc(&self, name: &str) -> Result<String, Errno> {
        let fd = openat(self.proc_dir.as_fd(), name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        let mut text = String::new();
        File::from(fd).read_to_string(&mut text).map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?;
        Ok(text)
    }

    /// What type1 would check when this thread pins memory (vfio_iommu_type1.c:766-775):
    /// its process's locked pages against its RLIMIT_MEMLOCK, unless the thread has
    /// CAP_IPC_LOCK (`dma->lock_cap`). Two syscalls; `VmLck` is read only when a limit applies.
    pub fn memlock(&self) -> Result<Memlock, Errno> {
        let tid = libc::pid_t::try_from(self.tid).map_err(|_| Errno::ESRCH)?;
        let (effective, _) = privileges::sets_of(tid)?;
        // type1 asks capable(CAP_IPC_LOCK), in the initial user namespace; capget answers
        // relative to the caller's own.
        let capable = effective & (1 << privileges::CAP_IPC_LOCK) != 0 && self.in_initial_user_ns()?;
        let mut rlim = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: prlimit64 reads the limit into `rlim`; no new limit is passed (NULL).
        let rc = unsafe { libc::prlimit64(tid, libc::RLIMIT_MEMLOCK, std::ptr::null(), &mut rlim) };
        let soft = match Errno::result(rc) {
            Ok(_) => (rlim.rlim_cur != libc::RLIM64_INFINITY).then_some(rlim.rlim_cur),
            // Another user's limits need CAP_SYS_RESOURCE, which the daemon drops; /proc says
            // the same to anyone.
            Err(Errno::EPERM) => parse_memlock_limit(&self.read_proc("limits")?).ok_or(Errno::EIO)?,
            Err(e) => return Err(e),
        };
        let limit = if capable { None } else { soft };
        let locked = match limit {
            None => 0,
            Some(_) => parse_vm_lck(&self.read_proc("status")?).ok_or(Errno::EIO)?,
        };
        Ok(Memlock { process: self.process, locked, limit })
    }

    /// Copies `buf.len()` bytes of the caller's memory at `addr`: see [`read_thread_memory`].
    pub fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        read_thread_memory(self.tid, addr, buf)
    }

    /// Copies `bytes` into the caller's memory at `addr`: see [`write_thread_memory`].
    pub fn write_memory(&self, addr: u64, bytes: &[u8]) -> Result<(), Errno> {
        write_thread_memory(self.tid, addr, bytes)
    }

    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

/// Whether the thread behind `pidfd` still exists: signal 0 through the pidfd. EPERM (another
/// user's thread, and the daemon keeps no CAP_KILL) says it exists too; only ESRCH says it is
/// gone.
fn thread_lives(pidfd: BorrowedFd<'_>) -> bool {
    // SAFETY: pidfd_send_signal with signal 0 only checks the target; info is NULL.
    let rc = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    rc == 0 || Errno::last() == Errno::EPERM
}

/// A pidfd of thread `tid` (`PIDFD_THREAD`): what [`take_fd`] takes a thread's fds through.
pub fn thread_pidfd(tid: u32) -> Result<OwnedFd, Errno> {
    let tid = libc::pid_t::try_from(tid).map_err(|_| Errno::ESRCH)?;
    // SAFETY: pidfd_open takes a pid and flags, no pointers; the result is a new fd or -1.
    let fd = Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) })? as i32;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A duplicate of fd `fd` of the process `pidfd` names (`pidfd_getfd`): the same open file,
/// as ours. `EBADF` when it is not open.
pub fn take_fd(pidfd: BorrowedFd<'_>, fd: i32) -> Result<OwnedFd, Errno> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: pidfd_getfd takes a pidfd, an fd number and flags; no pointers. The result is a
    // new fd in this process (O_CLOEXEC set by the kernel) or -1.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    let new = Errno::result(rc)? as i32;
    // SAFETY: `new` was just created by the kernel for us and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Copies `buf.len()` bytes at `addr` of thread `tid`'s memory (`process_vm_readv`):
/// `EFAULT` when any of it is not readable, as a kernel copy-in gives. For a thread blocked in
/// one of our CUSE requests, `tid` cannot name anyone else meanwhile (module docs), so this
/// needs no pidfd.
pub fn read_thread_memory(tid: u32, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
    let tid = libc::pid_t::try_from(tid).map_err(|_| Errno::ESRCH)?;
    // SAFETY: `buf` is `buf.len()` writable bytes we own for the call.
    unsafe { vm_transfer(tid, addr, buf.as_mut_ptr(), buf.len(), false) }
}

/// Copies `bytes` to `addr` in thread `tid`'s memory (`process_vm_writev`): `EFAULT` when any
/// of it is not writable, as a kernel copy-out gives. Same condition on `tid`.
pub fn write_thread_memory(tid: u32, addr: u64, bytes: &[u8]) -> Result<(), Errno> {
    let tid = libc::pid_t::try_from(tid).map_err(|_| Errno::ESRCH)?;
    // SAFETY: `bytes` is `bytes.len()` readable bytes for the call; a write only reads them.
    unsafe { vm_transfer(tid, addr, bytes.as_ptr().cast_mut(), bytes.len(), true) }
}

/// `process_vm_readv`/`process_vm_writev` of `len` bytes between `local` and `addr` in `pid`'s
/// memory: `EFAULT` unless all of it moved.
///
/// # Safety
/// `local` must point to `len` bytes valid for the call: writable when reading (`!write`),
/// readable when writing.
pub(crate) unsafe fn vm_transfer(
    pid: libc::pid_t,
    addr: u64,
    local: *mut u8,
    len: usize,
    write: bool,
) -> Result<(), Errno> {
    let local_iov = libc::iovec { iov_base: local.cast(), iov_len: len };
    let remote_iov = libc::iovec { iov_base: addr as usize as *mut libc::c_void, iov_len: len };
    // SAFETY: the local iovec covers `len` valid bytes (this function's contract); the remote
    // side is the other process's address space, checked by the kernel, which reports EFAULT
    // for what is not mapped.
    let n = unsafe {
        if write {
            libc::process_vm_writev(pid, &local_iov, 1, &remote_iov, 1, 0)
        } else {
            libc::process_vm_readv(pid, &local_iov, 1, &remote_iov, 1, 0)
        }
    };
    match Errno::result(n)? {
        n if n as usize == len => Ok(()),
        _ => Err(Errno::EFAULT),
    }
}

/// A process, unique over time: its pid and its start time (in clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId {
    pub tgid: u32,
    pub start_time: u64,
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`; the command name (field 2) may hold spaces
/// and parentheses, so fields are counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A caller's memory-locking state, as type1 sees it at `MAP_DMA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memlock {
    /// The process the pages are charged to: type1 charges `dma->mm`.
    pub process: ProcessId,
    /// `VmLck`: the process's `mm->locked_vm` in bytes (its own mlocks).
    pub locked: u64,
    /// The soft RLIMIT_MEMLOCK in bytes; `None` when unlimited or the thread has CAP_IPC_LOCK.
    pub limit: Option<u64>,
}

/// The soft "Max locked memory" of `/proc/<tid>/limits`: `Some(None)` when unlimited.
pub fn parse_memlock_limit(limits: &str) -> Option<Option<u64>> {
    let soft = limits.lines().find_map(|l| l.strip_prefix("Max locked memory"))?.split_whitespace().next()?;
    match soft {
        "unlimited" => Some(None),
        n => n.parse().ok().map(Some),
    }
}

/// `VmLck:` of `/proc/<tid>/status`, in bytes (0 when absent, as for a kernel thread).
pub fn parse_vm_lck(status: &str) -> Option<u64> {
    match status.lines().find_map(|l| l.strip_prefix("VmLck:")) {
        None => Some(0),
        Some(v) => v.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024),
    }
}

/// One VMA of a caller, as `PROCMAP_QUERY` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    /// `VM_MAYSHARE`: the `s` of /proc/<pid>/maps.
    pub shared: bool,
    pub offset: u64,
    pub dev: (u32, u32),
    pub inode: u64,
    /// Backed by a file (memfd and shared anonymous memory included), not anonymous memory.
    pub has_file: bool,
}

/// The first VMA of the shared file mapping covering `[vaddr, vaddr + length)` and the file
/// offset of `vaddr`, following adjacent VMAs of the same file at contiguous offsets.
pub fn covering_shared_file(vmas: &[Vma], vaddr: u64, length: u64, write: bool) -> Result<(&Vma, u64), Errno> {
    let end = vaddr.checked_add(length).ok_or(Errno::EFAULT)?;
    let i = vmas.iter().position(|v| v.start <= vaddr && vaddr < v.end).ok_or(Errno::EFAULT)?;
    // What type1's pin meets first decides: a hole or an inaccessible page anywhere in the
    // range is EFAULT, whatever backs the rest.
    let mut at = vaddr;
    for v in &vmas[i..] {
        if v.start > at || !v.readable || (write && !v.writable) {
            return Err(Errno::EFAULT);
        }
        at = v.end;
        if at >= end {
            break;
        }
    }
    if at < end {
        return Err(Errno::EFAULT);
    }
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
        if !v.shared || !v.has_file {
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

    fn vma(start: u64, end: u64, perms: &str, offset: u64, inode: u64) -> Vma {
        let p = perms.as_bytes();
        Vma {
            start,
            end,
            readable: p[0] == b'r',
            writable: p[1] == b'w',
            shared: p[3] == b's',
            offset,
            dev: (0, if inode == 0 { 0 } else { 1 }),
            inode,
            has_file: inode != 0,
        }
    }

    /// heap, a memfd split by mprotect, a hugetlbfs file mapped twice, anonymous memory, a
    /// library's private data, shared anonymous memory, the stack.
    fn vmas() -> Vec<Vma> {
        vec![
            vma(0x55d0c0a00000, 0x55d0c0a21000, "rw-p", 0, 0),
            vma(0x7f0000000000, 0x7f0000200000, "rw-s", 0, 1041),
            vma(0x7f0000200000, 0x7f0000400000, "r--s", 0x200000, 1041),
            vma(0x7f0000400000, 0x7f0000600000, "rw-s", 0, 77),
            vma(0x7f0000600000, 0x7f0000800000, "rw-s", 0x400000, 77),
            vma(0x7f0000800000, 0x7f0000a00000, "rw-p", 0, 0),
            vma(0x7f0000a00000, 0x7f0000a01000, "rw-p", 0, 5),
            vma(0x7f0000b00000, 0x7f0000b01000, "rw-s", 0, 9),
            vma(0x7ffc00000000, 0x7ffc00021000, "rw-p", 0, 0),
        ]
    }

    #[test]
    fn shared_file_ranges() {
        let v = vmas();
        let (found, off) = covering_shared_file(&v, 0x7f0000001000, 0x1000, true).unwrap();
        assert_eq!((found.start, off), (0x7f0000000000, 0x1000));
        // Read-only second half: fine for read, EFAULT for write (type1 pins with FOLL_WRITE).
        assert!(covering_shared_file(&v, 0x7f0000100000, 0x200000, false).is_ok());
        assert_eq!(covering_shared_file(&v, 0x7f0000100000, 0x200000, true).unwrap_err(), Errno::EFAULT);
        // A shared page then an inaccessible one (the explorer's read-only page and its guard):
        // type1's pin faults, EFAULT, before "private" could matter (VM, readonly-overrun.seq).
        let guarded =
            [vma(0x7f0000c00000, 0x7f0000c01000, "r--s", 0, 12), vma(0x7f0000c01000, 0x7f0000c02000, "---p", 0, 0)];
        assert_eq!(covering_shared_file(&guarded, 0x7f0000c00000, 0x2000, false).unwrap_err(), Errno::EFAULT);
        // Private memory then a hole: the hole decides (EFAULT), as the pin would.
        assert_eq!(covering_shared_file(&v, 0x7f0000a00000, 0x2000, false).unwrap_err(), Errno::EFAULT);
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
        assert_eq!(parse_vm_lck("Tgid:\t42\nVmLck:\t      8 kB\n"), Some(8192));
        assert_eq!(parse_vm_lck("Tgid:\t42\n"), Some(0));
        assert_eq!(parse_vm_lck("VmLck:\tlots\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max locked memory         1048576              8388608              bytes     \n";
        assert_eq!(parse_memlock_limit(limits), Some(Some(1 << 20)));
        assert_eq!(parse_memlock_limit(&limits.replace("1048576 ", "unlimited")), Some(None));
        assert_eq!(parse_memlock_limit("Max open files 1024 1024 files\n"), None);
        // This process, for real: same tgid; a limit unless capable or unlimited.
        let me = CallerProcess::open(std::process::id()).unwrap();
        let m = me.memlock().unwrap();
        assert_eq!(m.process.tgid, std::process::id());
        assert!(m.process.start_time > 0);
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_start_time(stat), Some(123456));
        assert_eq!(parse_start_time("42 (x) S 1"), None);
    }

    #[test]
    fn a_pinned_caller_is_this_process() {
        let me = CallerProcess::open(std::process::id()).unwrap();
        assert!(me.is_current());
        assert_eq!(me.tgid(), std::process::id());
        // PROCMAP_QUERY on our own memory: a shared memfd page and a private heap page.
        let fd = nix::sys::memfd::memfd_create("caller-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 8192).unwrap();
        let shared = shared_mapping(&fd);
        let b = me.shared_backing(shared + 4096, 4096, true).unwrap();
        assert_eq!(b.offset, 4096);
        // The same file again: the file held from the first time.
        let again = me.shared_backing(shared, 4096, false).unwrap();
        assert!(Arc::ptr_eq(&b.file, &again.file));
        assert_eq!(again.offset, 0);
        let heap = Box::new([0u8; 64]);
        assert_eq!(me.shared_backing(heap.as_ptr() as u64, 64, true).unwrap_err(), PRIVATE_MEMORY_ERRNO);
        assert_eq!(me.shared_backing(8, 4096, false).unwrap_err(), Errno::EFAULT);
        // Its memory, read and written as a daemon would.
        let mut word = [0u8; 8];
        me.write_memory(shared, b"vfioshim").unwrap();
        me.read_memory(shared, &mut word).unwrap();
        assert_eq!(&word, b"vfioshim");
        assert_eq!(me.read_memory(8, &mut word).unwrap_err(), Errno::EFAULT);
        let dup = me.dup_fd(0);
        // stdin may be closed under a test harness; either a dup or EBADF, never a panic.
        assert!(dup.is_ok() || dup.unwrap_err() == Errno::EBADF);
        assert_eq!(me.dup_fd(-1).unwrap_err(), Errno::EBADF);
        assert_eq!(me.dup_fd(1 << 30).unwrap_err(), Errno::EBADF);
    }

    /// A shared 8 KiB mapping of `fd`, left mapped (the test process ends).
    fn shared_mapping(fd: &OwnedFd) -> u64 {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        // SAFETY: a fresh shared mapping of our own memfd at an address the kernel picks;
        // nothing else refers to that range.
        let p = unsafe {
            mmap(
                None,
                std::num::NonZeroUsize::new(8192).unwrap(),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .unwrap();
        p.as_ptr() as u64
    }
}
