//! Private nodes against the host's kernel, in a forked child (a mount namespace of its own
//! needs a single-threaded process; the test harness is not one).

use super::*;

fn in_child(body: fn(&Path) -> Result<(), String>) {
    let dir = std::env::temp_dir().join(format!("vfio-shim-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // SAFETY: the child runs `body` and exits; glibc's malloc is usable after fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = match body(&dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("private_nodes test: {e}");
                1
            }
        };
        // SAFETY: ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    std::fs::remove_dir(&dir).unwrap();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child's checks failed (see stderr)");
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

#[test]
fn each_object_has_its_own_identity_and_its_release_is_reported_once_its_last_fd_goes() {
    in_child(|dir| {
        let mut nodes = PrivateNodes::create(dir).map_err(|e| format!("create: {e}"))?;
        let (first, first_id) = nodes.open(Path::new("/dev/null"), OFlag::O_RDWR).map_err(|e| format!("open: {e}"))?;
        let (second, second_id) = nodes.open(Path::new("/dev/null"), OFlag::O_RDONLY).map_err(|e| e.to_string())?;
        check(first_id != second_id, "two objects of one device have two identities")?;
        let st = fstat(first.as_fd()).map_err(|e| e.to_string())?;
        check(
            st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3),
            "the file is /dev/null's",
        )?;
        let dup = first.try_clone().map_err(|e| e.to_string())?;
        check(NodeId::of(dup.as_fd()) == Ok(first_id), "a dup has its original's identity")?;
        drop(first);
        check(nodes.released() == Ok(vec![]), "no release while a dup is open")?;
        drop(dup);
        check(nodes.released() == Ok(vec![first_id]), "the release once the dup is closed too")?;
        check(nodes.released() == Ok(vec![]), "reported once")?;
        check(
            nodes.open(Path::new("/proc/self/stat"), OFlag::O_RDONLY).err() == Some(Errno::ENODEV),
            "only character devices",
        )?;
        drop(second);
        check(nodes.released() == Ok(vec![second_id]), "the second's release")?;
        Ok(())
    });
}
