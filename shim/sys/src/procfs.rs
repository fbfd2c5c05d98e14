//! procfs: `PROCMAP_QUERY` on `/proc/<pid>/maps`, one VMA at a time without parsing text, and
//! whether another process holds a file (its fds and mappings).

use std::mem::size_of;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;

use crate::ioctl::ioctl;

/// `struct procmap_query` (include/uapi/linux/fs.h, 7.3).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct procmap_query {
    pub size: u64,
    pub query_flags: u64,
    pub query_addr: u64,
    pub vma_start: u64,
    pub vma_end: u64,
    pub vma_flags: u64,
    pub vma_page_size: u64,
    pub vma_offset: u64,
    pub inode: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub vma_name_size: u32,
    pub build_id_size: u32,
    pub vma_name_addr: u64,
    pub build_id_addr: u64,
}

pub const PROCMAP_QUERY_VMA_READABLE: u64 = 0x01;
pub const PROCMAP_QUERY_VMA_WRITABLE: u64 = 0x02;
pub const PROCMAP_QUERY_VMA_SHARED: u64 = 0x08;
/// `_IOWR('f', 17, struct procmap_query)`.
pub const PROCMAP_QUERY: u32 = nix::request_code_readwrite!(b'f', 17, size_of::<procmap_query>()) as u32;

/// `PROCMAP_QUERY` on an open `/proc/<pid>/maps`: the VMA covering `addr` (ENOENT: none).
pub fn procmap_query(maps: BorrowedFd<'_>, addr: u64) -> Result<procmap_query, Errno> {
    let mut q = procmap_query { size: size_of::<procmap_query>() as u64, query_addr: addr, ..Default::default() };
    // SAFETY: `q` is a complete procmap_query of `size` bytes; name and build-id buffers are
    // absent (size 0, address 0), so the kernel writes only into `q`.
    unsafe { ioctl(maps, PROCMAP_QUERY, &mut q) }?;
    Ok(q)
}

/// Whether a process other than this one holds the file at `path` (a device cdev): an fd of
/// it (`/proc/<pid>/fd`) or a mapping of it (`/proc/<pid>/maps`, which names the file of every
/// shared mapping). Processes that exit meanwhile hold nothing; processes this one may not
/// inspect (another user's, without CAP_SYS_PTRACE) are passed over: a file reaches them only
/// by SCM_RIGHTS, and a wrong "no" costs this process the device, never theirs (see
/// `Backend::device_held_elsewhere`).
pub fn held_by_another_process(path: &std::path::Path) -> Result<bool, Errno> {
    use std::io::ErrorKind;
    let me = std::process::id();
    let gone = |e: &std::io::Error| {
        matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) || e.raw_os_error() == Some(libc::ESRCH)
    };
    let errno = crate::errno_of;
    let maps_name = path.to_str().ok_or(Errno::EINVAL)?;
    for entry in std::fs::read_dir("/proc").map_err(errno)? {
        let entry = entry.map_err(errno)?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let fds = match std::fs::read_dir(entry.path().join("fd")) {
            Ok(fds) => fds,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(errno(e)),
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|target| target == path) {
                return Ok(true);
            }
        }
        match std::fs::read_to_string(entry.path().join("maps")) {
            Ok(maps) if maps.lines().any(|l| l.split_whitespace().nth(5) == Some(maps_name)) => return Ok(true),
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(false)
}
