//! procfs: `PROCMAP_QUERY` on `/proc/<pid>/maps`, one VMA at a time without parsing text.

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
