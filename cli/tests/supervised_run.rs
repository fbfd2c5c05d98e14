//! `vfio-shim run` of a static program on the host: the supervisor starts it under its filter,
//! follows its processes through fork and exec, lets every other call run, serves the legacy
//! nodes (which need /dev/iommu: the host has none, so the program sees the shim's ENOENT),
//! and exits with the program's status. Needs root (the supervisor's private mount namespace);
//! the VM tier proves the rest against a kernel with iommufd.

use std::process::Command;

fn run(script: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vfio-shim"))
        .args(["run", "--", "/bin/busybox", "sh", "-c", script])
        .output()
        .expect("vfio-shim runs");
    let code = out.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_static_program_runs_under_the_supervisor() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the supervisor needs root");
        return;
    }
    // busybox-static: installed by compat-tests/scripts/host-deps.sh (`make host-test`).
    // Its own status, through a child shell and an exec.
    let (code, out, err) = run("echo out; sh -c 'exit 7'; r=$?; exec sh -c \"exit $((r + 1))\"");
    assert_eq!((code, out.as_str()), (8, "out\n"), "stderr: {err}");
    // A signal that kills it: 128 + SIGTERM, as a shell reports it.
    let (code, _, err) = run("kill -TERM $$; sleep 5");
    assert_eq!(code, 128 + 15, "stderr: {err}");
    // Files that are not the legacy nodes open as they would without it; /dev/vfio/vfio is
    // the shim's, which cannot open /dev/iommu here.
    let (code, out, err) = run("read h </etc/hostname && echo read; (exec 3</dev/vfio/vfio) || echo refused");
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "read\nrefused\n", "stderr: {err}");
    assert!(err.contains("No such file") || err.contains("no such file"), "the shim's ENOENT: {err}");
}
