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
    // It runs with its caller's signal mask, not the supervisor's (which blocks SIGCHLD and the
    // signals it passes on).
    let mask = |status: &str| status.lines().find(|l| l.starts_with("SigBlk:")).map(str::to_owned);
    let ours = mask(&std::fs::read_to_string("/proc/self/status").unwrap());
    let (code, out, err) = run("exec /bin/busybox cat /proc/self/status");
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(mask(&out), ours);
}

#[test]
fn a_signal_sent_to_vfio_shim_reaches_the_supervised_program() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the supervisor needs root");
        return;
    }
    // What a service manager or libvirt does to stop the command it started: SIGTERM to its pid.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vfio-shim"))
        .args(["run", "--", "/bin/busybox", "sh", "-c"])
        .arg("trap 'echo term; exit 3' TERM; echo ready; while :; do sleep 0.1; done")
        .stdout(Stdio::piped())
        .spawn()
        .expect("vfio-shim runs");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "term\n", "the program's own handler ran");
    assert_eq!(child.wait().unwrap().code(), Some(3), "its status is the command's");
}
