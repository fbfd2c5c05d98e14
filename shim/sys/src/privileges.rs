//! Dropping the capabilities a long-running daemon does not need.

use nix::errno::Errno;

/// Capability numbers (include/uapi/linux/capability.h).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Keeps only the capabilities in `keep` (a bit per capability number): every other one leaves
/// the bounding set, and the effective and permitted sets become `keep` (the inheritable and
/// ambient sets empty); no-new-privs is set, so nothing this process runs can regain any. The
/// uid stays as it is. Process-wide only if called before any thread exists (capabilities are
/// per thread).
pub fn keep_only(keep: u64) -> Result<(), Errno> {
    for cap in 0..=last_cap() {
        if keep & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            Errno::result(rc)?;
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
    Errno::result(rc)?;
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let lo = keep as u32;
    let hi = (keep >> 32) as u32;
    let data = [
        CapData { effective: lo, permitted: lo, inheritable: 0 },
        CapData { effective: hi, permitted: hi, inheritable: 0 },
    ];
    // SAFETY: capset reads the header and two data structs (version 3) for this thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    Errno::result(rc)?;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Errno::result(rc).map(drop)
}

/// The calling thread's effective set, as a bit per capability.
pub fn effective() -> Result<u64, Errno> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two data structs (version 3) into `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    Errno::result(rc)?;
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_a_subset_in_a_child() {
        // In a child process: the test runner's own capabilities stay as they are.
        // SAFETY: the child only makes syscalls and exits with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let before = effective().unwrap_or(0);
                let keep = before & (1 << CAP_SYS_PTRACE);
                // Without CAP_SETPCAP the bounding set cannot shrink: EPERM, nothing dropped.
                let ok = if before & (1 << CAP_SETPCAP) != 0 {
                    keep_only(keep).is_ok() && effective() == Ok(keep)
                } else {
                    keep_only(keep) == Err(Errno::EPERM)
                };
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
