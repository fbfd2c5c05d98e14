//! The calling process's own memory as ioctl argument memory. A bad pointer must be `EFAULT`,
//! as from the kernel, never a crash: memory is copied with `process_vm_readv/writev` on
//! ourselves, except when it lies on the calling thread's own live stack (between the current
//! stack pointer and the stack's top), which is mapped and writable by construction. That is
//! where QEMU, DPDK and rust-vmm keep MAP/UNMAP arguments, so the common case costs no syscall.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use vfio_shim::arg::ArgMemory;

/// The caller's own memory, read and written with `process_vm_readv/writev` on itself so a
/// bad pointer is `EFAULT`, as from the kernel, instead of a crash.
pub struct OwnMemory {
    /// The ioctl's `arg` pointer.
    arg: u64,
}

impl OwnMemory {
    /// Argument memory at `arg`.
    ///
    /// # Safety
    /// `arg` is the argument a program passed with an ioctl it asked for, and this value is
    /// used only to read that request's input and write its output, as the kernel would: those
    /// bytes are the program's to give. Writes land in this process's memory unchecked except
    /// for being mapped (unmapped is `EFAULT`), so a wrong `arg` corrupts live objects.
    pub unsafe fn new(arg: u64) -> Self {
        OwnMemory { arg }
    }
}

/// This process's pid, cached: `process_vm_readv` needs it on every call and glibc no longer
/// caches `getpid()`. A fork child must call [`forget_pid`] (the preload's atfork handler does).
static PID: AtomicI32 = AtomicI32::new(0);

fn pid() -> i32 {
    match PID.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: getpid has no preconditions.
            let p = unsafe { libc::getpid() };
            PID.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// Whether the kernel could pin `[vaddr, vaddr + length)` of this process for DMA, as
/// `pin_user_pages` (with `FOLL_WRITE` when `write`) decides: every page lies in a mapping
/// that is readable, and writable when `write`; otherwise `EFAULT`, as the pin fails. Read
/// from `/proc/self/maps`. The fake backend's model of IOMMU_IOAS_MAP's pin in host tests.
pub fn pinnable(vaddr: u64, length: u64, write: bool) -> Result<(), Errno> {
    let end = vaddr.checked_add(length).ok_or(Errno::EFAULT)?;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(crate::errno_of)?;
    let mut at = vaddr;
    for line in maps.lines() {
        if at >= end {
            break;
        }
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else { continue };
        let Some((lo, hi)) = range.split_once('-') else { continue };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else { continue };
        if hi <= at {
            continue;
        }
        let perms = perms.as_bytes();
        if lo > at || perms.first() != Some(&b'r') || (write && perms.get(1) != Some(&b'w')) {
            return Err(Errno::EFAULT);
        }
        at = hi;
    }
    if at >= end {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}

/// Drops the cached pid; for fork children.
pub fn forget_pid() {
    PID.store(0, Ordering::Relaxed);
}

thread_local! {
    /// This thread's stack as `(lowest, top)` addresses; `(0, 0)` until first asked,
    /// `(usize::MAX, 0)` when unknown.
    static STACK: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

fn thread_stack() -> (usize, usize) {
    STACK.with(|stack| {
        if stack.get() == (0, 0) {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
            let (mut addr, mut size) = (std::ptr::null_mut(), 0usize);
            // SAFETY: pthread_getattr_np initialises `attr` for the calling thread; it is
            // only read after success and destroyed afterwards.
            let ok = unsafe {
                libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) == 0 && {
                    let r = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) == 0;
                    libc::pthread_attr_destroy(attr.as_mut_ptr());
                    r
                }
            };
            // An empty range marks "unknown": never treat anything as on-stack then.
            stack.set(if ok { (addr as usize, addr as usize + size) } else { (usize::MAX, 0) });
        }
        stack.get()
    })
}

/// Whether `[addr, addr + len)` lies in the live part of this thread's stack: above the
/// current frame and below the stack's top. On a signal alternate stack the current frame is
/// not on the thread's stack, and nothing counts as on-stack.
#[inline(never)]
fn on_live_stack(addr: u64, len: usize) -> bool {
    let marker = 0u8;
    let sp = std::hint::black_box(&marker) as *const u8 as usize;
    let (low, top) = thread_stack();
    let Some(end) = (addr as usize).checked_add(len) else {
        return false;
    };
    (low..top).contains(&sp) && addr as usize > sp && end <= top
}

fn vm_copy(addr: u64, local: *mut u8, len: usize, write: bool) -> Result<(), Errno> {
    if len == 0 {
        return Ok(());
    }
    if on_live_stack(addr, len) {
        // SAFETY: the range is inside this thread's live stack (checked just above), which
        // is mapped read-write; `local` is our own buffer of `len` bytes, a distinct live
        // object, so the two do not overlap.
        unsafe {
            if write {
                std::ptr::copy_nonoverlapping(local as *const u8, addr as *mut u8, len);
            } else {
                std::ptr::copy_nonoverlapping(addr as *const u8, local, len);
            }
        }
        return Ok(());
    }
    // SAFETY: `local` is the `len`-byte buffer this function's callers pass (a slice of theirs).
    unsafe { crate::caller::vm_transfer(pid(), addr, local, len, write) }
}

impl ArgMemory for OwnMemory {
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), Errno> {
        self.read_user(self.arg.checked_add(offset as u64).ok_or(Errno::EFAULT)?, buf)
    }
    fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        self.write_user(self.arg.checked_add(offset as u64).ok_or(Errno::EFAULT)?, bytes)
    }
    /// One copy of the whole fixed struct, as the kernel's `copy_from_user(minsz)`; only if
    /// that faults, argsz first to tell `EINVAL` from `EFAULT`. Bytes past a short `argsz`
    /// may be copied but are never used.
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
        // SAFETY: nothing is ever mapped at address 8: every access is EFAULT.
        let mut m = unsafe { OwnMemory::new(8) };
        let mut buf = [0u8; 4];
        assert_eq!(m.read(0, &mut buf), Err(Errno::EFAULT));
        let value = 0x1234_5678u32;
        // SAFETY: a live local of this test, read or written only within its size.
        let mut m = unsafe { OwnMemory::new(&value as *const u32 as u64) };
        m.read(0, &mut buf).unwrap();
        assert_eq!(u32::from_ne_bytes(buf), value);
        let mut out = 0u32;
        // SAFETY: a live local of this test, read or written only within its size.
        let mut m = unsafe { OwnMemory::new(&mut out as *mut u32 as u64) };
        m.write(0, &7u32.to_ne_bytes()).unwrap();
        assert_eq!(out, 7);
    }

    #[test]
    fn heap_memory_goes_through_process_vm() {
        let heap = Box::new(0xdead_beef_u32);
        assert!(!on_live_stack(&*heap as *const u32 as u64, 4));
        // SAFETY: a live local of this test, read or written only within its size.
        let mut m = unsafe { OwnMemory::new(&*heap as *const u32 as u64) };
        let mut buf = [0u8; 4];
        m.read(0, &mut buf).unwrap();
        assert_eq!(u32::from_ne_bytes(buf), 0xdead_beef);
        let local = 5u64;
        assert!(on_live_stack(&local as *const u64 as u64, 8));
        assert!(!on_live_stack(u64::MAX - 2, 8));
    }

    #[test]
    fn read_sized_checks_argsz() {
        let mut words = [8u32, 0, 0, 0, 0, 0, 0, 0];
        // SAFETY: a live local of this test, read or written only within its size.
        let mut m = unsafe { OwnMemory::new(words.as_ptr() as u64) };
        let mut buf = [0u8; 32];
        assert_eq!(m.read_sized(&mut buf), Err(Errno::EINVAL));
        words[0] = 32;
        // SAFETY: a live local of this test, read or written only within its size.
        let mut m = unsafe { OwnMemory::new(words.as_ptr() as u64) };
        assert_eq!(m.read_sized(&mut buf), Ok(()));
        // SAFETY: nothing is ever mapped at address 16: every access is EFAULT.
        let mut m = unsafe { OwnMemory::new(16) };
        assert_eq!(m.read_sized(&mut buf), Err(Errno::EFAULT));
    }
}
