//! The caller's ioctl argument memory, as seen by the translator.
//!
//! VFIO ioctls are `_IO()`: the size lives inside the struct (`argsz`), so the translator
//! reads the fixed header first and then no more than `argsz` allows. In-process glue reads
//! the caller's address space directly; the CUSE daemon reads what the kernel retried with.

use nix::errno::Errno;
use zerocopy::{FromBytes, IntoBytes};

/// The bytes at the ioctl's `arg` pointer, addressed by offset from it, plus absolute user
/// addresses for pointers embedded in the struct (dirty bitmaps).
pub trait ArgMemory {
    /// Copies `buf.len()` bytes at `arg + offset` into `buf`; `EFAULT` when unreadable.
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), Errno>;
    /// Copies `bytes` to `arg + offset`; `EFAULT` when unwritable.
    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Errno>;
    /// Reads bytes at the absolute user address `addr`.
    fn read_user(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Errno>;
    /// Writes bytes at the absolute user address `addr`.
    fn write_user(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Errno>;
    /// Reads an `argsz`-prefixed struct whose whole size is the kernel's `minsz` into `buf`,
    /// in type1's order: `copy_from_user(minsz)` first (`EFAULT` when any of it is
    /// unreadable, whatever `argsz` says), then `EINVAL` when `argsz < minsz`.
    fn read_sized(&mut self, buf: &mut [u8]) -> Result<(), Errno> {
        self.read(0, buf)?;
        match buf.get(..4) {
            Some(w) if (u32::from_ne_bytes(w.try_into().expect("4 bytes")) as usize) < buf.len() => Err(Errno::EINVAL),
            _ => Ok(()),
        }
    }

    /// Reads a NUL-terminated string at `arg`, like the kernel's `strndup_user(arg, max)`:
    /// `EINVAL` when no NUL is found within `max` bytes.
    fn read_cstr(&mut self, max: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        for off in 0..max {
            self.read(off, &mut b)?;
            if b[0] == 0 {
                return Ok(out);
            }
            out.push(b[0]);
        }
        Err(Errno::EINVAL)
    }
}

/// Reads a fixed-size struct at `offset`.
pub fn read_struct<T: FromBytes + IntoBytes>(mem: &mut dyn ArgMemory, offset: usize) -> Result<T, Errno> {
    let mut v = T::new_zeroed();
    mem.read(offset, v.as_mut_bytes())?;
    Ok(v)
}

/// Reads a struct that starts with `argsz` and whose size is its `minsz` (see
/// [`ArgMemory::read_sized`]).
pub fn read_sized<T: FromBytes + IntoBytes>(mem: &mut dyn ArgMemory) -> Result<T, Errno> {
    let mut v = T::new_zeroed();
    mem.read_sized(v.as_mut_bytes())?;
    Ok(v)
}

/// An argument held in a byte buffer: the `arg` pointer is offset 0 of `bytes`; absolute user
/// addresses resolve into `user`, a separate region starting at `user_base`. Anything outside
/// both is `EFAULT`. Used by host tests and by glue that has already copied the argument.
#[derive(Debug, Default, Clone)]
pub struct BufferArg {
    pub bytes: Vec<u8>,
    pub user_base: u64,
    pub user: Vec<u8>,
}

impl BufferArg {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, user_base: 0, user: Vec::new() }
    }

    pub fn of<T: IntoBytes + zerocopy::Immutable>(v: &T) -> Self {
        Self::new(v.as_bytes().to_vec())
    }

    /// Reads back a struct from offset 0.
    pub fn get<T: FromBytes>(&self) -> T {
        T::read_from_prefix(&self.bytes).expect("buffer shorter than struct").0
    }

    fn user_range(&self, addr: u64, len: usize) -> Result<std::ops::Range<usize>, Errno> {
        let start = addr.checked_sub(self.user_base).ok_or(Errno::EFAULT)? as usize;
        let end = start.checked_add(len).ok_or(Errno::EFAULT)?;
        if end > self.user.len() {
            return Err(Errno::EFAULT);
        }
        Ok(start..end)
    }
}

impl ArgMemory for BufferArg {
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), Errno> {
        let src = self.bytes.get(offset..offset + buf.len()).ok_or(Errno::EFAULT)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        let dst = self.bytes.get_mut(offset..offset + bytes.len()).ok_or(Errno::EFAULT)?;
        dst.copy_from_slice(bytes);
        Ok(())
    }
    fn read_user(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let r = self.user_range(addr, buf.len())?;
        buf.copy_from_slice(&self.user[r]);
        Ok(())
    }
    fn write_user(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Errno> {
        let r = self.user_range(addr, bytes.len())?;
        self.user[r].copy_from_slice(bytes);
        Ok(())
    }
}
