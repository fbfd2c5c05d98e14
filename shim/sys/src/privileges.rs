//! Dropping the capabilities a long-running daemon does not need.

use nix::errno::Errno;

/// Capability numbers (include/uapi/linux/capability.h).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_SYS_RAWIO: u32 = 17;
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
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

/// Keeps only the capabilities in `keep` (a bit per capability number) that this process
/// has: the effective and permitted sets become `keep & permitted`, the inheritable and ambient
/// sets empty, no-new-privs is set (nothing this process runs can regain anything), and, with
/// CAP_SETPCAP, every other capability leaves the bounding set too. Returns what was kept. The
/// uid stays as it is. Capabilities are per thread: call before any thread exists.
pub fn keep_only(keep: u64) -> Result<u64, Errno> {
    keep_only_up_to(keep, last_cap())
}

fn keep_only_up_to(keep: u64, last_cap: u32) -> Result<u64, Errno> {
    let (_, permitted) = sets()?;
    let keep = keep & permitted;
    if permitted & (1 << CAP_SETPCAP) != 0 {
        for cap in (0..=last_cap).filter(|c| keep & (1 << c) == 0) {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            Errno::result(rc)?;
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
    Errno::result(rc)?;
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let (lo, hi) = (keep as u32, (keep >> 32) as u32);
    let data = [
        CapData { effective: lo, permitted: lo, inheritable: 0 },
        CapData { effective: hi, permitted: hi, inheritable: 0 },
    ];
    // SAFETY: capset reads the header and two data structs (version 3) for this thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    Errno::result(rc)?;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Errno::result(rc)?;
    Ok(keep)
}

/// The calling thread's (effective, permitted) sets.
fn sets() -> Result<(u64, u64), Errno> {
    sets_of(0)
}

/// Thread `tid`'s (effective, permitted) sets (0: the calling thread), a bit per capability,
/// as seen from that thread's own user namespace.
pub fn sets_of(tid: libc::pid_t) -> Result<(u64, u64), Errno> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: tid };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two data structs (version 3) into `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    Errno::result(rc)?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((join(data[0].effective, data[1].effective), join(data[0].permitted, data[1].permitted)))
}

/// The calling thread's effective set, as a bit per capability.
pub fn effective() -> Result<u64, Errno> {
    sets().map(|(e, _)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_a_subset_in_a_child() {
        // In a child process, so the test runner keeps its capabilities. The child only makes
        // syscalls (no allocation after fork in a multi-threaded runner): `last_cap` is read
        // before.
        let last = last_cap();
        // SAFETY: the child runs only syscalls and _exit (see above).
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let before = effective().unwrap_or(0);
                let want = (1 << CAP_SYS_PTRACE) | (1u64 << 62); // 62: no such capability
                let ok = match keep_only_up_to(want, last) {
                    // Only what we had is kept, and it is all that is left.
                    Ok(kept) => kept == before & want & !(1u64 << 62) && effective() == Ok(kept),
                    Err(_) => false,
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
