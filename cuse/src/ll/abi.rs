//! The FUSE/CUSE kernel ABI, copied from the Linux 7.3 uapi header `include/uapi/linux/fuse.h`
//! (protocol 7.46). Names are the kernel's, verbatim. Line numbers in comments point into that
//! header.

#![allow(non_camel_case_types)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// fuse.h:283
pub const FUSE_KERNEL_VERSION: u32 = 7;
/// fuse.h:286. The minor version this crate's structs are taken from.
pub const FUSE_KERNEL_MINOR_VERSION: u32 = 46;
/// The lowest minor we accept: 7.16 is where FUSE_IOCTL_RETRY answers carry
/// `fuse_ioctl_iovec` instead of the native `struct iovec` (fs/fuse/ioctl.c:96).
pub const CUSE_MIN_MINOR: u32 = 16;

/// fuse.h:521
pub const CUSE_UNRESTRICTED_IOCTL: u32 = 1 << 0;
/// fuse.h:948: the largest device info string the kernel accepts in the CUSE_INIT reply.
pub const CUSE_INIT_INFO_MAX: usize = 4096;

/// fuse.h:570-577
pub const FUSE_IOCTL_COMPAT: u32 = 1 << 0;
pub const FUSE_IOCTL_UNRESTRICTED: u32 = 1 << 1;
pub const FUSE_IOCTL_RETRY: u32 = 1 << 2;
pub const FUSE_IOCTL_32BIT: u32 = 1 << 3;
pub const FUSE_IOCTL_DIR: u32 = 1 << 4;
pub const FUSE_IOCTL_COMPAT_X32: u32 = 1 << 5;
/// Maximum of in_iovs + out_iovs in one FUSE_IOCTL_RETRY answer.
pub const FUSE_IOCTL_MAX_IOV: usize = 256;

/// fuse.h:584
pub const FUSE_POLL_SCHEDULE_NOTIFY: u32 = 1 << 0;

/// fuse.h:705: the kernel refuses (EINVAL) a read of /dev/cuse with a smaller buffer.
pub const FUSE_MIN_READ_BUFFER: usize = 8192;

/// fs/fuse/fuse_dev_i.h:17: set in the `unique` of a FUSE_INTERRUPT request (and of its reply).
pub const FUSE_INT_REQ_BIT: u64 = 1 << 0;

/// fs/fuse/fuse_i.h:35: `fc->max_pages` of every CUSE connection (set by fuse_conn_init,
/// fs/fuse/inode.c:977; the CUSE_INIT reply has no field to raise it). It bounds each ioctl
/// direction to this many pages (fs/fuse/ioctl.c:79, 308).
pub const FUSE_DEFAULT_MAX_PAGES_PER_REQ: u32 = 32;

/// Opcodes (fuse.h:631-689); only those CUSE uses or that name something we answer.
pub mod opcode {
    pub const FUSE_OPEN: u32 = 14;
    pub const FUSE_READ: u32 = 15;
    pub const FUSE_WRITE: u32 = 16;
    pub const FUSE_RELEASE: u32 = 18;
    pub const FUSE_FSYNC: u32 = 20;
    pub const FUSE_FLUSH: u32 = 25;
    pub const FUSE_INTERRUPT: u32 = 36;
    pub const FUSE_IOCTL: u32 = 39;
    pub const FUSE_POLL: u32 = 40;
    /// No reply expected (fuse.h:633).
    pub const FUSE_FORGET: u32 = 2;
    /// No reply expected.
    pub const FUSE_BATCH_FORGET: u32 = 42;
    pub const CUSE_INIT: u32 = 4096;
    /// CUSE_INIT << 8: what CUSE_INIT looks like byte-swapped (fuse.h:688).
    pub const CUSE_INIT_BSWAP_RESERVED: u32 = 1048576;
}

/// Notification codes (fuse.h:692), sent in `fuse_out_header.error` with `unique == 0`.
pub mod notify {
    pub const FUSE_NOTIFY_POLL: i32 = 1;
}

macro_rules! abi_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
        pub struct $name { $(pub $field: $ty),* }
    };
}

abi_struct! {
    /// fuse.h:1051
    pub struct fuse_in_header {
        len: u32,
        opcode: u32,
        unique: u64,
        nodeid: u64,
        uid: u32,
        gid: u32,
        pid: u32,
        total_extlen: u16,
        padding: u16,
    }
}

abi_struct! {
    /// fuse.h:1063
    pub struct fuse_out_header {
        len: u32,
        error: i32,
        unique: u64,
    }
}

abi_struct! {
    /// fuse.h:950
    pub struct cuse_init_in {
        major: u32,
        minor: u32,
        unused: u32,
        flags: u32,
    }
}

abi_struct! {
    /// fuse.h:957
    pub struct cuse_init_out {
        major: u32,
        minor: u32,
        unused: u32,
        flags: u32,
        max_read: u32,
        max_write: u32,
        dev_major: u32,
        dev_minor: u32,
        spare: [u32; 10],
    }
}

abi_struct! {
    /// fuse.h:812
    pub struct fuse_open_in {
        flags: u32,
        open_flags: u32,
    }
}

abi_struct! {
    /// fuse.h:824
    pub struct fuse_open_out {
        fh: u64,
        open_flags: u32,
        backing_id: i32,
    }
}

abi_struct! {
    /// fuse.h:830
    pub struct fuse_release_in {
        fh: u64,
        flags: u32,
        release_flags: u32,
        lock_owner: u64,
    }
}

abi_struct! {
    /// fuse.h:837
    pub struct fuse_flush_in {
        fh: u64,
        unused: u32,
        padding: u32,
        lock_owner: u64,
    }
}

abi_struct! {
    /// fuse.h:844
    pub struct fuse_read_in {
        fh: u64,
        offset: u64,
        size: u32,
        read_flags: u32,
        lock_owner: u64,
        flags: u32,
        padding: u32,
    }
}

abi_struct! {
    /// fuse.h:856
    pub struct fuse_write_in {
        fh: u64,
        offset: u64,
        size: u32,
        write_flags: u32,
        lock_owner: u64,
        flags: u32,
        padding: u32,
    }
}

abi_struct! {
    /// fuse.h:866
    pub struct fuse_write_out {
        size: u32,
        padding: u32,
    }
}

abi_struct! {
    /// fuse.h:877
    pub struct fuse_fsync_in {
        fh: u64,
        fsync_flags: u32,
        padding: u32,
    }
}

abi_struct! {
    /// fuse.h:969
    pub struct fuse_interrupt_in {
        unique: u64,
    }
}

abi_struct! {
    /// fuse.h:983
    pub struct fuse_ioctl_in {
        fh: u64,
        flags: u32,
        cmd: u32,
        arg: u64,
        in_size: u32,
        out_size: u32,
    }
}

abi_struct! {
    /// fuse.h:992
    pub struct fuse_ioctl_iovec {
        base: u64,
        len: u64,
    }
}

abi_struct! {
    /// fuse.h:997
    pub struct fuse_ioctl_out {
        result: i32,
        flags: u32,
        in_iovs: u32,
        out_iovs: u32,
    }
}

abi_struct! {
    /// fuse.h:1004
    pub struct fuse_poll_in {
        fh: u64,
        kh: u64,
        flags: u32,
        events: u32,
    }
}

abi_struct! {
    /// fuse.h:1011
    pub struct fuse_poll_out {
        revents: u32,
        padding: u32,
    }
}

abi_struct! {
    /// fuse.h:1016
    pub struct fuse_notify_poll_wakeup_out {
        kh: u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Golden sizes: every struct as the 7.3 kernel lays it out (x86_64 and every LP64 target;
    /// the header uses fixed-width types only, so 32-bit targets agree).
    #[test]
    fn golden_struct_sizes() {
        assert_eq!(size_of::<fuse_in_header>(), 40);
        assert_eq!(size_of::<fuse_out_header>(), 16);
        assert_eq!(size_of::<cuse_init_in>(), 16);
        assert_eq!(size_of::<cuse_init_out>(), 72);
        assert_eq!(size_of::<fuse_open_in>(), 8);
        assert_eq!(size_of::<fuse_open_out>(), 16);
        assert_eq!(size_of::<fuse_release_in>(), 24);
        assert_eq!(size_of::<fuse_flush_in>(), 24);
        assert_eq!(size_of::<fuse_read_in>(), 40);
        assert_eq!(size_of::<fuse_write_in>(), 40);
        assert_eq!(size_of::<fuse_write_out>(), 8);
        assert_eq!(size_of::<fuse_fsync_in>(), 16);
        assert_eq!(size_of::<fuse_interrupt_in>(), 8);
        assert_eq!(size_of::<fuse_ioctl_in>(), 32);
        assert_eq!(size_of::<fuse_ioctl_iovec>(), 16);
        assert_eq!(size_of::<fuse_ioctl_out>(), 16);
        assert_eq!(size_of::<fuse_poll_in>(), 24);
        assert_eq!(size_of::<fuse_poll_out>(), 8);
        assert_eq!(size_of::<fuse_notify_poll_wakeup_out>(), 8);
    }

    #[test]
    fn golden_constants() {
        assert_eq!(opcode::CUSE_INIT, 4096);
        assert_eq!(opcode::CUSE_INIT_BSWAP_RESERVED, opcode::CUSE_INIT << 8);
        assert_eq!(opcode::FUSE_IOCTL, 39);
        assert_eq!(opcode::FUSE_POLL, 40);
        assert_eq!(opcode::FUSE_INTERRUPT, 36);
        assert_eq!(FUSE_IOCTL_RETRY, 4);
        assert_eq!(FUSE_IOCTL_UNRESTRICTED, 2);
        assert_eq!(FUSE_IOCTL_32BIT, 8);
        assert_eq!(FUSE_IOCTL_MAX_IOV, 256);
        // fs/fuse/ioctl.c:252: all retry iovecs fit in one 4 KiB page.
        assert!(size_of::<fuse_ioctl_iovec>() * FUSE_IOCTL_MAX_IOV <= 4096);
    }
}
