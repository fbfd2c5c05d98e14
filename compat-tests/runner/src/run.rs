//! `run`: inside the guest, every client in every mode this kernel offers.
//!
//! Results: `<out>/<kernel>/<mode>/<client>.{out,err,rc}`. `.rc` holds the exit status
//! (128+N for a signal N; 124 after our timeout; 127 when the build for that mode does not exist,
//! with the reason in `.err`). Nothing is skipped silently: every (client, mode) gets an `.rc`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::model::{Kernel, Mode};

/// Client executables in `dir`: files with the executable bit and no dot in their name
/// (libraries, scripts with a suffix and objects are not clients).
pub fn discover(dir: &Path) -> io::Result<BTreeMap<String, PathBuf>> {
    let mut map = BTreeMap::new();
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let meta = fs::metadata(ent.path())?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let name = ent.file_name().to_string_lossy().into_owned();
        if !name.contains('.') {
            map.insert(name, ent.path());
        }
    }
    Ok(map)
}

/// kernel-compat: the kernel's iommufd compat layer answers on /dev/vfio/vfio.
const KERNEL_COMPAT_SH: &str = r#"
[ -e /dev/iommu ] || { echo "vfio-shim-compat: no /dev/iommu in this kernel" >&2; exit 126; }
[ -e /dev/vfio/vfio ] || { echo "vfio-shim-compat: no /dev/vfio/vfio to cover" >&2; exit 126; }
mount --bind /dev/iommu /dev/vfio/vfio
exec "$@"
"#;

/// shim on the full kernel: /dev/vfio/vfio and every /dev/vfio/<N> hidden, the cdevs kept.
const HIDE_LEGACY_SH: &str = r#"
[ -d /dev/vfio/devices ] || { echo "vfio-shim-compat: no /dev/vfio/devices (no VFIO cdevs)" >&2; exit 126; }
t=$(mktemp -d /tmp/vfio-shim-compat.XXXXXX)
mount --bind /dev/vfio/devices "$t"
mount -t tmpfs -o mode=0755,size=64k vfio-shim-hidden /dev/vfio
mkdir /dev/vfio/devices
mount --move "$t" /dev/vfio/devices
rmdir "$t"
for n in /dev/vfio/*; do
  [ "$n" = /dev/vfio/devices ] || { echo "vfio-shim-compat: $n still visible" >&2; exit 126; }
done
exec "$@"
"#;

pub struct RunOpts {
    pub kernel: Kernel,
    pub clients_dir: PathBuf,
    pub out: PathBuf,
    /// Empty: every mode of the kernel.
    pub modes: Vec<Mode>,
    /// Empty: every client found.
    pub clients: Vec<String>,
    pub timeout: Duration,
    /// The preload library (`libvfio_shim_preload.so`) that shim mode runs the clients under.
    pub preload: Option<PathBuf>,
    /// The `vfio-shim` command whose `run --supervise` supervisor mode runs the clients under.
    pub vfio_shim: Option<PathBuf>,
}

/// Checks that the machine is the kernel we were told it is.
fn check_kernel(kernel: Kernel) -> Result<(), String> {
    let legacy = Path::new("/dev/vfio/vfio").exists();
    match (kernel, legacy) {
        (Kernel::Full, false) => Err("--kernel full, but there is no /dev/vfio/vfio".into()),
        (Kernel::CdevOnly, true) => Err("--kernel cdev-only, but /dev/vfio/vfio exists".into()),
        _ => Ok(()),
    }
}

pub(crate) fn command_for(kernel: Kernel, mode: Mode, bin: &Path, vfio_shim: Option<&Path>) -> Command {
    let wrapped = |script: &str| {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-ec", script, "sh"]).arg(bin);
        c
    };
    match (kernel, mode) {
        (_, Mode::Type1) => Command::new(bin),
        (_, Mode::KernelCompat) => wrapped(KERNEL_COMPAT_SH),
        (Kernel::Full, Mode::Shim) => wrapped(HIDE_LEGACY_SH),
        (Kernel::CdevOnly, Mode::Shim) => Command::new(bin),
        (_, Mode::Supervisor) => {
            let mut c = Command::new(vfio_shim.expect("checked by run"));
            c.args(["run", "--supervise", "--"]).arg(bin);
            c
        }
    }
}

/// Runs one command with stdout/stderr into files; returns the `.rc` text.
pub(crate) fn run_one(mut cmd: Command, out: &Path, err: &Path, timeout: Duration) -> io::Result<String> {
    cmd.stdin(Stdio::null()).stdout(File::create(out)?).stderr(File::create(err)?).process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let mut f = fs::OpenOptions::new().append(true).open(err)?;
            writeln!(f, "vfio-shim-compat: cannot start {cmd:?}: {e}")?;
            return Ok("127".into());
        }
    };
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(match (st.code(), st.signal()) {
                (Some(c), _) => c.to_string(),
                (None, Some(s)) => (128 + s).to_string(),
                _ => "255".into(),
            });
        }
        if start.elapsed() >= timeout {
            // SAFETY: plain kill(2) of the process group we created for this child.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            child.wait()?;
            let mut f = fs::OpenOptions::new().append(true).open(err)?;
            writeln!(f, "vfio-shim-compat: killed after the {} s timeout", timeout.as_secs())?;
            return Ok("124".into());
        }
        sleep(Duration::from_millis(20));
    }
}

/// Returns the number of (client, mode) runs that did not exit 0 (informational: `compare`
/// is the judge), or an error for setup problems.
pub fn run(opts: &RunOpts) -> Result<usize, String> {
    check_kernel(opts.kernel)?;
    let found = discover(&opts.clients_dir).map_err(|e| format!("reading {}: {e}", opts.clients_dir.display()))?;
    let mut selected: Vec<(String, Option<PathBuf>)> = Vec::new();
    if opts.clients.is_empty() {
        selected.extend(found.into_iter().map(|(k, v)| (k, Some(v))));
    } else {
        for c in &opts.clients {
            // A named client with no build at all still gets failure rows.
            selected.push((c.clone(), found.get(c).cloned()));
        }
    }
    if selected.is_empty() {
        return Err(format!("no client executables in {}", opts.clients_dir.display()));
    }
    for m in &opts.modes {
        if !opts.kernel.modes().contains(m) {
            return Err(format!("mode {m} does not exist on the {} kernel", opts.kernel));
        }
    }
    let modes: Vec<Mode> =
        opts.kernel.modes().iter().copied().filter(|m| opts.modes.is_empty() || opts.modes.contains(m)).collect();

    let mut bad = 0;
    for mode in modes {
        let dir = opts.out.join(opts.kernel.name()).join(mode.name());
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        for (client, bin) in &selected {
            let (outp, errp, rcp) = (
                dir.join(format!("{client}.out")),
                dir.join(format!("{client}.err")),
                dir.join(format!("{client}.rc")),
            );
            let start = Instant::now();
            let io = || -> io::Result<String> {
                let missing = match (bin, mode, &opts.preload) {
                    (None, _, _) => Some(format!("no client {client} in {}", opts.clients_dir.display())),
                    (_, Mode::Shim, None) => Some("shim mode needs --preload".to_string()),
                    (_, Mode::Shim, Some(p)) if !p.is_file() => Some(format!("no preload library {}", p.display())),
                    _ => match (mode, &opts.vfio_shim) {
                        (Mode::Supervisor, None) => Some("supervisor mode needs --vfio-shim".to_string()),
                        (Mode::Supervisor, Some(p)) if !p.is_file() => Some(format!("no vfio-shim {}", p.display())),
                        _ => None,
                    },
                };
                if let Some(why) = missing {
                    File::create(&outp)?;
                    fs::write(&errp, format!("vfio-shim-compat: {why}\n"))?;
                    return Ok("127".into());
                }
                let bin = bin.as_ref().expect("checked");
                // Supervisor mode runs the static build where there is one (clients/static/).
                let static_bin = bin.parent().map(|d| d.join("static").join(client)).filter(|p| p.is_file());
                let bin = if mode == Mode::Supervisor { static_bin.as_ref().unwrap_or(bin) } else { bin };
                let mut cmd = command_for(opts.kernel, mode, bin, opts.vfio_shim.as_deref());
                if mode == Mode::Shim {
                    cmd.env("LD_PRELOAD", opts.preload.as_ref().expect("checked"));
                }
                run_one(cmd, &outp, &errp, opts.timeout)
            };
            let rc = io().map_err(|e| format!("{client} in {mode}: {e}"))?;
            fs::write(&rcp, format!("{rc}\n")).map_err(|e| format!("writing {}: {e}", rcp.display()))?;
            if rc != "0" {
                bad += 1;
            }
            eprintln!(
                "vfio-shim-compat: {}/{mode} {client}: rc={rc} ({:.1} s)",
                opts.kernel,
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vfio-shim-compat-run-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn exe(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn discovers_executables_without_suffix_only() {
        let d = tmpdir("discover");
        exe(&d, "map_basic", "#!/bin/sh\n");
        exe(&d, "edu_dma", "#!/bin/sh\n");
        exe(&d, "libvfio_shim_preload.so", "");
        exe(&d, "helper.sh", "");
        fs::write(d.join("notexec"), "").unwrap();
        fs::create_dir(d.join("subdir")).unwrap();
        let m = discover(&d).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["edu_dma", "map_basic"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn run_one_records_status_signal_and_timeout() {
        let d = tmpdir("runone");
        let (o, e) = (d.join("x.out"), d.join("x.err"));
        let sh = |s: &str| {
            let mut c = Command::new("sh");
            c.args(["-c", s]);
            c
        };
        let rc = run_one(sh("echo 'END status=ok'; echo diag >&2; exit 3"), &o, &e, Duration::from_secs(10)).unwrap();
        assert_eq!(rc, "3");
        assert_eq!(fs::read_to_string(&o).unwrap(), "END status=ok\n");
        assert_eq!(fs::read_to_string(&e).unwrap(), "diag\n");
        assert_eq!(run_one(sh("kill -SEGV $$"), &o, &e, Duration::from_secs(10)).unwrap(), "139");
        let t = Instant::now();
        assert_eq!(run_one(sh("sleep 30"), &o, &e, Duration::from_millis(300)).unwrap(), "124");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(fs::read_to_string(&e).unwrap().contains("timeout"));
        assert_eq!(run_one(Command::new(d.join("nonexistent")), &o, &e, Duration::from_secs(1)).unwrap(), "127");
        fs::remove_dir_all(&d).unwrap();
    }
}
