//! This process's identity as the kernel sees it right now. Never cached: the child of a
//! `vfork` shares its parent's memory (every cache included) but has its own pid and its own
//! fd table, and the preload must tell the two apart.

/// `getpid(2)`.
pub fn current_pid() -> i32 {
    // SAFETY: getpid has no preconditions and touches no memory.
    unsafe { libc::getpid() }
}
