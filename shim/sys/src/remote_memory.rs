//! Another process's memory as ioctl argument memory: a supervised program's `arg`, read and
//! written with `process_vm_readv/writev` on its thread, as the kernel would copy from and to
//! it. Anything the process has not mapped readable (or writable, for writes) is `EFAULT`.

use nix::errno::Errno;
use vfio_shim::arg::ArgMemory;

use crate::caller::{read_thread_memory, write_thread_memory};

/// The ioctl argument at `arg` in the process of thread `tid`.
#[derive(Debug, Clone, Copy)]
pub struct RemoteMemory {
    tid: u32,
    arg: u64,
}

impl RemoteMemory {
    /// Argument memory at `arg` in `tid`'s process. The thread must stay the caller's (a
    /// notified call still pending, or a trace stop) while it is used.
    pub fn new(tid: u32, arg: u64) -> Self {
        RemoteMemory { tid, arg }
    }

    fn at(&self, offset: usize) -> Result<u64, Errno> {
        self.arg.checked_add(offset as u64).ok_or(Errno::EFAULT)
    }
}

impl ArgMemory for RemoteMemory {
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), Errno> {
        let at = self.at(offset)?;
        self.read_user(at, buf)
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        let at = self.at(offset)?;
        self.write_user(at, bytes)
    }

    // The thread's copies, partial ones a fault in the rest (`caller`'s, shared with the daemon).
    fn read_user(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        if buf.is_empty() {
            return Ok(());
        }
        read_thread_memory(self.tid, addr, buf)
    }

    fn write_user(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Errno> {
        if bytes.is_empty() {
            return Ok(());
        }
        write_thread_memory(self.tid, addr, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_what_is_mapped_and_faults_the_rest() {
        let me = std::process::id();
        let mut buf = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut mem = RemoteMemory::new(me, buf.as_mut_ptr() as u64);
        let mut got = [0u8; 4];
        mem.read(2, &mut got).unwrap();
        assert_eq!(got, [3, 4, 5, 6]);
        mem.write(4, &[9, 9]).unwrap();
        // SAFETY: reading our own buffer back after the kernel wrote into it.
        assert_eq!(unsafe { std::ptr::read_volatile(&buf) }, [1, 2, 3, 4, 9, 9, 7, 8]);
        // A page nobody maps: EFAULT, for reads and writes alike.
        let mut nothing = RemoteMemory::new(me, 8);
        assert_eq!(nothing.read(0, &mut got), Err(Errno::EFAULT));
        assert_eq!(nothing.write(0, &[1]), Err(Errno::EFAULT));
        // Past the end of the address space: EFAULT, not a wrap.
        assert_eq!(RemoteMemory::new(me, u64::MAX).read(1, &mut got), Err(Errno::EFAULT));
        // Read-only memory cannot be written (process_vm_writev honours protections).
        static RO: [u8; 4] = [0; 4];
        assert_eq!(RemoteMemory::new(me, RO.as_ptr() as u64).write(0, &[1]), Err(Errno::EFAULT));
    }
}
