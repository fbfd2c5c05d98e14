//! The calling process's own memory as ioctl argument memory: read and written with
//! `process_vm_readv/writev` on itself, so a bad pointer is `EFAULT`, as from the kernel,
//! instead of a crash. Used by in-process glue (the preload, the test driver).

use nix::errno::Errno;
use vfio_shim::arg::ArgMemory;

/// The caller's own memory, read and written with `process_vm_readv/writev` on itself so a
/// bad pointer is `EFAULT`, as from the kernel, instead of a crash.
pub struct OwnMemory {
    /// The ioctl's `arg` pointer.
    pub arg: u64,
}

fn vm_copy(addr: u64, local: *mut u8, len: usize, write: bool) -> Result<(), Errno> {
    if len == 0 {
        return Ok(());
    }
    let local_iov = libc::iovec { iov_base: local.cast(), iov_len: len };
    let remote_iov = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
    // SAFETY: `local` points to `len` bytes owned by the caller for the duration of the call;
    // the remote side is checked by the kernel, which reports EFAULT for unmapped memory.
    let n = unsafe {
        if write {
            libc::process_vm_writev(libc::getpid(), &local_iov, 1, &remote_iov, 1, 0)
        } else {
            libc::process_vm_readv(libc::getpid(), &local_iov, 1, &remote_iov, 1, 0)
        }
    };
    if n < 0 {
        return Err(Errno::last());
    }
    if n as usize != len {
        return Err(Errno::EFAULT);
    }
    Ok(())
}

impl ArgMemory for OwnMemory {
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), Errno> {
        self.read_user(self.arg.checked_add(offset as u64).ok_or(Errno::EFAULT)?, buf)
    }
    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        self.write_user(self.arg.checked_add(offset as u64).ok_or(Errno::EFAULT)?, bytes)
    }
    fn read_user(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        vm_copy(addr, buf.as_mut_ptr(), buf.len(), false)
    }
    fn write_user(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Errno> {
        vm_copy(addr, bytes.as_ptr() as *mut u8, bytes.len(), true)
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_instead_of_crashing() {
        let mut m = OwnMemory { arg: 8 };
        let mut buf = [0u8; 4];
        assert_eq!(m.read(0, &mut buf), Err(Errno::EFAULT));
        let value = 0x1234_5678u32;
        let mut m = OwnMemory { arg: &value as *const u32 as u64 };
        m.read(0, &mut buf).unwrap();
        assert_eq!(u32::from_ne_bytes(buf), value);
        let mut out = 0u32;
        let mut m = OwnMemory { arg: &mut out as *mut u32 as u64 };
        m.write(0, &7u32.to_ne_bytes()).unwrap();
        assert_eq!(out, 7);
    }
}
