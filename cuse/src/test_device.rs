//! A tiny device with VFIO-style ioctls, for testing the daemon end to end (`--test-device`).
//! No VFIO semantics: those come from the shim core.
//!
//! | command | number | argument | does |
//! |---|---|---|---|
//! | TEST_INCREMENT | `_IO(';', 200)` | `struct {u32 argsz; u32 flags; u64 value}`, argsz >= 16 | writes back argsz, flags, value + 1 (16 bytes) |
//! | TEST_PID | `_IO(';', 201)` | none | returns the caller's pid from the CUSE request |
//! | TEST_SLEEP | `_IO(';', 202)` | milliseconds (a value) | sleeps, returns 0; EINTR when interrupted by a signal |
//! | TEST_OPEN_FILES | `_IO(';', 203)` | none | returns how many files are open (OPEN minus RELEASE) |
//!
//! Anything else: ENOTTY.

use crate::device::{Caller, CuseDevice, Ioctl, IoctlOutcome};
use crate::retry::{argsz_step, ArgszSpec, Step};
use nix::errno::Errno;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// VFIO_TYPE (include/uapi/linux/vfio.h). The requests are `_IO(type, nr)`: direction and size
/// 0, so the kernel cannot know the argument's size.
pub const TEST_TYPE: u8 = b';';
pub const TEST_INCREMENT: u32 = nix::request_code_none!(TEST_TYPE, 200) as u32;
pub const TEST_PID: u32 = nix::request_code_none!(TEST_TYPE, 201) as u32;
pub const TEST_SLEEP: u32 = nix::request_code_none!(TEST_TYPE, 202) as u32;
pub const TEST_OPEN_FILES: u32 = nix::request_code_none!(TEST_TYPE, 203) as u32;

/// `struct {u32 argsz; u32 flags; u64 value}`.
pub const INCREMENT_SIZE: u32 = 16;

/// The test device.
#[derive(Debug)]
pub struct TestDevice {
    limit: u32,
    next_fh: AtomicU64,
    /// Open files: fh -> pid that opened it.
    open: Mutex<HashMap<u64, u32>>,
}

impl TestDevice {
    /// `ioctl_limit`: the session's per-direction limit ([`crate::session::Config::ioctl_limit`]).
    pub fn new(ioctl_limit: u32) -> TestDevice {
        TestDevice { limit: ioctl_limit, next_fh: AtomicU64::new(1), open: Mutex::new(HashMap::new()) }
    }

    pub fn open_files(&self) -> usize {
        self.open.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn increment(&self, io: &Ioctl<'_>) -> IoctlOutcome {
        let a = match argsz_step(io, ArgszSpec::in_out(INCREMENT_SIZE), self.limit) {
            Step::Ready(a) => a,
            Step::Reply(r) => return r,
        };
        let (Some(flags), Some(value)) = (a.u32_at(4), a.u64_at(8)) else {
            return IoctlOutcome::Error(Errno::EINVAL);
        };
        let mut out = a.argsz.to_ne_bytes().to_vec();
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&value.wrapping_add(1).to_ne_bytes());
        IoctlOutcome::Done { result: 0, out }
    }

    fn sleep(&self, caller: &Caller, ms: u64) -> IoctlOutcome {
        let until = Instant::now() + Duration::from_millis(ms.min(60_000));
        while Instant::now() < until {
            if caller.is_interrupted() {
                return IoctlOutcome::Error(Errno::EINTR);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        IoctlOutcome::ok(0)
    }
}

impl CuseDevice for TestDevice {
    fn open(&self, caller: &Caller, _flags: u32) -> Result<u64, Errno> {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.open.lock().map_err(|_| Errno::EIO)?.insert(fh, caller.pid);
        Ok(fh)
    }

    fn release(&self, fh: u64, _caller: &Caller) {
        if let Ok(mut m) = self.open.lock() {
            m.remove(&fh);
        }
    }

    fn ioctl(&self, fh: u64, caller: &Caller, io: &Ioctl<'_>) -> IoctlOutcome {
        let known = self.open.lock().map(|m| m.contains_key(&fh)).unwrap_or(false);
        if !known {
            return IoctlOutcome::Error(Errno::EBADF);
        }
        match io.cmd {
            TEST_INCREMENT => self.increment(io),
            TEST_PID => IoctlOutcome::ok(i32::try_from(caller.pid).unwrap_or(i32::MAX)),
            TEST_SLEEP => self.sleep(caller, io.arg),
            TEST_OPEN_FILES => IoctlOutcome::ok(i32::try_from(self.open_files()).unwrap_or(i32::MAX)),
            _ => IoctlOutcome::Error(Errno::ENOTTY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ll::abi::FUSE_IOCTL_UNRESTRICTED;

    #[test]
    fn numbers() {
        assert_eq!(TEST_INCREMENT, 0x3bc8);
        assert_eq!(TEST_PID, 0x3bc9);
        assert_eq!(TEST_SLEEP, 0x3bca);
        assert_eq!(TEST_OPEN_FILES, 0x3bcb);
    }

    fn ioctl<'a>(cmd: u32, arg: u64, in_data: &'a [u8], out_size: u32) -> Ioctl<'a> {
        Ioctl { cmd, arg, flags: FUSE_IOCTL_UNRESTRICTED, in_data, out_size }
    }

    #[test]
    fn increment_rounds() {
        let d = TestDevice::new(131072);
        let c = Caller::new(77, 0, 0, 2);
        let fh = d.open(&c, 2).unwrap();
        assert!(matches!(d.ioctl(fh, &c, &ioctl(TEST_INCREMENT, 0x1000, &[], 0)), IoctlOutcome::Retry { .. }));
        let mut s = 32u32.to_ne_bytes().to_vec();
        s.extend_from_slice(&5u32.to_ne_bytes());
        s.extend_from_slice(&41u64.to_ne_bytes());
        match d.ioctl(fh, &c, &ioctl(TEST_INCREMENT, 0x1000, &s, 32)) {
            IoctlOutcome::Done { result: 0, out } => {
                assert_eq!(&out[..8], &s[..8]);
                assert_eq!(&out[8..], &42u64.to_ne_bytes());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.ioctl(fh, &c, &ioctl(TEST_PID, 0, &[], 0)), IoctlOutcome::ok(77));
        assert_eq!(d.ioctl(fh, &c, &ioctl(0x3b64, 0, &[], 0)), IoctlOutcome::Error(Errno::ENOTTY));
        assert_eq!(d.ioctl(fh, &c, &ioctl(TEST_OPEN_FILES, 0, &[], 0)), IoctlOutcome::ok(1));
        d.release(fh, &c);
        assert_eq!(d.open_files(), 0);
        assert_eq!(d.ioctl(fh, &c, &ioctl(TEST_PID, 0, &[], 0)), IoctlOutcome::Error(Errno::EBADF));
    }

    #[test]
    fn sleep_notices_interrupt() {
        let d = TestDevice::new(131072);
        let c = Caller::new(1, 0, 0, 2);
        let fh = d.open(&c, 2).unwrap();
        c.interrupt();
        assert_eq!(d.ioctl(fh, &c, &ioctl(TEST_SLEEP, 10_000, &[], 0)), IoctlOutcome::Error(Errno::EINTR));
        let c = Caller::new(1, 0, 0, 4);
        assert_eq!(d.ioctl(fh, &c, &ioctl(TEST_SLEEP, 1, &[], 0)), IoctlOutcome::ok(0));
    }
}
