//! Replies: typed answers -> the bytes written back to /dev/cuse. No I/O.
//!
//! A reply is a `fuse_out_header`, a fixed argument and optional variable data; the data stays
//! borrowed so the channel can hand both parts to writev(2) without a copy.

use super::abi::*;
use nix::errno::Errno;
use std::io::IoSlice;
use zerocopy::IntoBytes;

/// One reply (or notification), ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    /// `fuse_out_header` followed by the fixed argument, if any.
    head: Vec<u8>,
    /// Variable data after the fixed part.
    data: &'a [u8],
}

impl<'a> Reply<'a> {
    fn new(unique: u64, error: i32, arg: &[u8], data: &'a [u8]) -> Reply<'a> {
        let len = size_of::<fuse_out_header>() + arg.len() + data.len();
        // Lengths are bounded by the callers (ioctl data <= 128 KiB, info <= 4 KiB); saturate
        // anyway so a bug shows up as a refused write (EINVAL), not a wrapped length.
        let header = fuse_out_header { len: u32::try_from(len).unwrap_or(u32::MAX), error, unique };
        let mut head = Vec::with_capacity(size_of::<fuse_out_header>() + arg.len());
        head.extend_from_slice(header.as_bytes());
        head.extend_from_slice(arg);
        Reply { head, data }
    }

    /// The two parts for writev(2).
    pub fn iovecs(&self) -> [IoSlice<'_>; 2] {
        [IoSlice::new(&self.head), IoSlice::new(self.data)]
    }

    /// Total length, as in the header.
    pub fn len(&self) -> usize {
        self.head.len() + self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole reply as one buffer (tests, logging).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = self.head.clone();
        v.extend_from_slice(self.data);
        v
    }
}

/// The error field of a reply: `-errno`. The kernel refuses a reply whose error is outside
/// (-512, 0] with EINVAL and leaves the request unanswered (fs/fuse/dev.c:1933), so its caller
/// would wait forever: anything out of range becomes EIO.
pub fn wire_error(errno: Errno) -> i32 {
    let e = errno as i32;
    if (1..512).contains(&e) {
        -e
    } else {
        -(Errno::EIO as i32)
    }
}

/// An error answer: the header alone (a longer one is refused and the caller gets EIO, fs/fuse/dev.c:1975).
pub fn error(unique: u64, errno: Errno) -> Reply<'static> {
    Reply::new(unique, wire_error(errno), &[], &[])
}

/// A success with no argument (RELEASE, FLUSH, FSYNC).
pub fn empty(unique: u64) -> Reply<'static> {
    Reply::new(unique, 0, &[], &[])
}

/// Checks a CUSE device name and builds the info string `DEVNAME=<name>\0`.
///
/// The kernel takes the name after `=` with surrounding blanks stripped (fs/fuse/cuse.c:242-243),
/// needs the info NUL-terminated (cuse.c:230) and at most CUSE_INIT_INFO_MAX bytes, and makes
/// `/dev/<name>` through devtmpfs, where `/` separates directories. Names the kernel would
/// alter, or that would escape /dev, are refused with EINVAL.
pub fn devname_info(name: &str) -> Result<Vec<u8>, Errno> {
    const KEY: &[u8] = b"DEVNAME=";
    let ok = !name.is_empty()
        && name.trim() == name
        && !name.bytes().any(|b| b == 0 || b.is_ascii_control())
        && name.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && KEY.len() + name.len() < CUSE_INIT_INFO_MAX;
    if !ok {
        return Err(Errno::EINVAL);
    }
    let mut info = KEY.to_vec();
    info.extend_from_slice(name.as_bytes());
    info.push(0);
    Ok(info)
}

/// The CUSE_INIT answer: `cuse_init_out` and the device info string.
pub fn cuse_init(unique: u64, out: &cuse_init_out, devname: &str) -> Result<Reply<'static>, Errno> {
    let info = devname_info(devname)?;
    let mut arg = out.as_bytes().to_vec();
    arg.extend_from_slice(&info);
    Ok(Reply::new(unique, 0, &arg, &[]))
}

/// The OPEN answer.
pub fn open(unique: u64, fh: u64, open_flags: u32) -> Reply<'static> {
    let out = fuse_open_out { fh, open_flags, backing_id: 0 };
    Reply::new(unique, 0, out.as_bytes(), &[])
}

/// A finished ioctl: `result` becomes the ioctl(2) return value (negative = -errno) and `out`
/// is copied to the caller's out-iovecs. The kernel refuses (EIO) more data than `out_size`
/// (fs/fuse/ioctl.c:391-393); the session checks that before building.
pub fn ioctl_done(unique: u64, result: i32, out: &[u8]) -> Reply<'_> {
    let arg = fuse_ioctl_out { result, flags: 0, in_iovs: 0, out_iovs: 0 };
    Reply::new(unique, 0, arg.as_bytes(), out)
}

/// A FUSE_IOCTL_RETRY answer: the kernel copies the `in_iovs` ranges from the caller, sizes
/// its out buffer to the `out_iovs` ranges and sends the ioctl again.
///
/// The kernel's limits are enforced here with its own errno, ENOMEM: at most
/// FUSE_IOCTL_MAX_IOV ranges in all (ioctl.c:363-367) and at most `limit` bytes per direction
/// (ioctl.c:79-85, 304-309). `limit` is `FUSE_DEFAULT_MAX_PAGES_PER_REQ * page size`.
pub fn ioctl_retry(
    unique: u64,
    in_iovs: &[(u64, u64)],
    out_iovs: &[(u64, u64)],
    limit: u64,
) -> Result<Reply<'static>, Errno> {
    if in_iovs.len() + out_iovs.len() > FUSE_IOCTL_MAX_IOV {
        return Err(Errno::ENOMEM);
    }
    for dir in [in_iovs, out_iovs] {
        let total = dir.iter().try_fold(0u64, |acc, &(_, len)| acc.checked_add(len));
        match total {
            Some(t) if t <= limit => {}
            _ => return Err(Errno::ENOMEM),
        }
    }
    let arg = fuse_ioctl_out {
        result: 0,
        flags: FUSE_IOCTL_RETRY,
        in_iovs: in_iovs.len() as u32,
        out_iovs: out_iovs.len() as u32,
    };
    let mut body = arg.as_bytes().to_vec();
    for &(base, len) in in_iovs.iter().chain(out_iovs) {
        body.extend_from_slice(fuse_ioctl_iovec { base, len }.as_bytes());
    }
    Ok(Reply::new(unique, 0, &body, &[]))
}

/// The POLL answer.
pub fn poll(unique: u64, revents: u32) -> Reply<'static> {
    Reply::new(unique, 0, fuse_poll_out { revents, padding: 0 }.as_bytes(), &[])
}

/// The READ answer: the data read (a short read is a shorter reply).
pub fn read(unique: u64, data: &[u8]) -> Reply<'_> {
    Reply::new(unique, 0, &[], data)
}

/// The WRITE answer: how many bytes were taken.
pub fn write(unique: u64, size: u32) -> Reply<'static> {
    Reply::new(unique, 0, fuse_write_out { size, padding: 0 }.as_bytes(), &[])
}

/// Asks the kernel to queue an interrupt again (fs/fuse/dev.c:1955-1957): used when the
/// interrupt arrived before its request was registered by the worker that read it.
/// `interrupt_unique` is the INTERRUPT request's own unique (FUSE_INT_REQ_BIT set).
pub fn interrupt_again(interrupt_unique: u64) -> Reply<'static> {
    Reply::new(interrupt_unique, -(Errno::EAGAIN as i32), &[], &[])
}

/// FUSE_NOTIFY_POLL: wakes the pollers of the file whose `kh` came in a FUSE_POLL with
/// FUSE_POLL_SCHEDULE_NOTIFY (fs/fuse/notify.c:9).
pub fn notify_poll(kh: u64) -> Reply<'static> {
    Reply::new(0, notify::FUSE_NOTIFY_POLL, fuse_notify_poll_wakeup_out { kh }.as_bytes(), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> (u32, i32, u64) {
        let len = u32::from_ne_bytes(bytes[0..4].try_into().unwrap());
        let err = i32::from_ne_bytes(bytes[4..8].try_into().unwrap());
        let unique = u64::from_ne_bytes(bytes[8..16].try_into().unwrap());
        (len, err, unique)
    }

    #[test]
    fn error_reply_is_header_only() {
        let r = error(9, Errno::ENOTTY);
        assert_eq!(r.to_vec(), [16, 0, 0, 0, (-25i32) as u8, 0xff, 0xff, 0xff, 9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.len(), 16);
    }

    #[test]
    fn out_of_range_errno_becomes_eio() {
        assert_eq!(wire_error(Errno::UnknownErrno), -5);
        assert_eq!(wire_error(Errno::EHWPOISON), -133);
        assert_eq!(wire_error(Errno::EPERM), -1);
    }

    #[test]
    fn cuse_init_golden() {
        let out = cuse_init_out {
            major: 7,
            minor: 46,
            flags: CUSE_UNRESTRICTED_IOCTL,
            max_read: 4096,
            max_write: 4096,
            ..Default::default()
        };
        let v = cuse_init(2, &out, "vfio/vfio").unwrap().to_vec();
        assert_eq!(v.len(), 16 + 72 + "DEVNAME=vfio/vfio\0".len());
        assert_eq!(header(&v), (v.len() as u32, 0, 2));
        assert_eq!(&v[16..20], &7u32.to_ne_bytes());
        assert_eq!(&v[20..24], &46u32.to_ne_bytes());
        assert_eq!(&v[28..32], &1u32.to_ne_bytes());
        assert_eq!(&v[40..48], &[0; 8]); // dev_major/dev_minor 0: dynamic
        assert_eq!(&v[88..], b"DEVNAME=vfio/vfio\0");
    }

    #[test]
    fn devname_checks() {
        for bad in ["", " x", "x ", "a\0b", "/x", "x/", "a//b", "../x", "a/./b", "a\nb"] {
            assert_eq!(devname_info(bad), Err(Errno::EINVAL), "{bad:?}");
        }
        assert_eq!(devname_info(&"x".repeat(4096 - 9)).map(|v| v.len()), Ok(4096));
        assert_eq!(devname_info(&"x".repeat(4096 - 8)), Err(Errno::EINVAL));
        assert_eq!(devname_info("vfio-shim-test").unwrap(), b"DEVNAME=vfio-shim-test\0");
    }

    #[test]
    fn open_golden() {
        let v = open(5, 0x1122, 0).to_vec();
        assert_eq!(header(&v), (32, 0, 5));
        assert_eq!(&v[16..24], &0x1122u64.to_ne_bytes());
    }

    #[test]
    fn ioctl_done_golden() {
        let out = [1u8, 2, 3];
        let r = ioctl_done(7, 42, &out);
        let v = r.to_vec();
        assert_eq!(header(&v), (16 + 16 + 3, 0, 7));
        assert_eq!(&v[16..20], &42i32.to_ne_bytes());
        assert_eq!(&v[20..32], &[0; 12]);
        assert_eq!(&v[32..], &out);
        let [a, b] = r.iovecs();
        assert_eq!((a.len(), b.len()), (32, 3));
    }

    #[test]
    fn ioctl_retry_golden() {
        let v = ioctl_retry(8, &[(0x1000, 4)], &[(0x2000, 16)], 131072).unwrap().to_vec();
        assert_eq!(header(&v), (16 + 16 + 32, 0, 8));
        assert_eq!(&v[16..32], [0u32, FUSE_IOCTL_RETRY, 1, 1].as_bytes());
        assert_eq!(&v[32..64], [0x1000u64, 4, 0x2000, 16].as_bytes());
    }

    #[test]
    fn ioctl_retry_limits() {
        let lim = 131072;
        assert!(ioctl_retry(1, &[(0, lim)], &[(0, lim)], lim).is_ok());
        assert_eq!(ioctl_retry(1, &[(0, lim), (0, 1)], &[], lim), Err(Errno::ENOMEM));
        assert_eq!(ioctl_retry(1, &[], &[(0, lim + 1)], lim), Err(Errno::ENOMEM));
        assert_eq!(ioctl_retry(1, &[(0, u64::MAX), (0, 2)], &[], lim), Err(Errno::ENOMEM));
        let many = vec![(0u64, 1u64); 129];
        assert_eq!(ioctl_retry(1, &many, &many[..128], lim), Err(Errno::ENOMEM));
        assert!(ioctl_retry(1, &many[..128], &many[..128], lim).is_ok());
    }

    #[test]
    fn small_replies_golden() {
        assert_eq!(header(&empty(3).to_vec()), (16, 0, 3));
        let p = poll(4, 0x41).to_vec();
        assert_eq!((header(&p), &p[16..20]), ((24, 0, 4), &0x41u32.to_ne_bytes()[..]));
        let w = write(5, 100).to_vec();
        assert_eq!((header(&w), &w[16..20]), ((24, 0, 5), &100u32.to_ne_bytes()[..]));
        assert_eq!(header(&read(6, b"hey").to_vec()), (19, 0, 6));
        assert_eq!(header(&interrupt_again(11).to_vec()), (16, -11, 11));
        let n = notify_poll(77).to_vec();
        assert_eq!((header(&n), &n[16..]), ((24, 1, 0), &77u64.to_ne_bytes()[..]));
    }
}
