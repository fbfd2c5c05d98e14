//! `vfio-shim run -- CMD...`: runs CMD with the preload library, so its legacy VFIO calls are
//! served over iommufd, and where that library is; a statically linked CMD (which LD_PRELOAD
//! cannot reach), or any with `--supervise`, runs under the seccomp supervisor instead.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The preload library's file name, as `make install` and the package install it.
pub const LIB: &str = "libvfio_shim_preload.so";

fn find_in_path(cmd: &str) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(cmd)).find(|c| c.is_file()))
}

/// A dynamically linked ELF names an interpreter (PT_INTERP); a static one does not. Scripts
/// (`#!`) are run by an interpreter that is checked in turn.
fn is_dynamic(path: &Path) -> Result<bool, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.starts_with(b"#!") {
        let line = bytes[2..].split(|b| *b == b'\n').next().unwrap_or_default();
        let interp = String::from_utf8_lossy(line).split_whitespace().next().unwrap_or("").to_string();
        return is_dynamic(Path::new(&interp));
    }
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Err(format!("{}: not a 64-bit ELF executable", path.display()));
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54), u16_at(56));
    const PT_INTERP: u32 = 3;
    Ok((0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= bytes.len() && u32_at(o) == PT_INTERP
    }))
}

/// Where the preload library is, in the order tried: `$VFIO_SHIM_PRELOAD`; next to this
/// binary (a cargo build: `target/release/`); the multiarch library directory beside this
/// binary's `bin/` (`make install`, the Debian package: `/usr/lib/x86_64-linux-gnu/`).
pub fn preload_candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("VFIO_SHIM_PRELOAD") {
        return vec![PathBuf::from(p)];
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let Some(dir) = exe.parent() else { return vec![PathBuf::from(LIB)] };
    let mut out = vec![dir.join(LIB)];
    if let Some(prefix) = dir.parent() {
        let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
        out.push(prefix.join("lib").join(multiarch).join(LIB));
        out.push(prefix.join("lib").join(LIB));
    }
    out
}

/// The first of [`preload_candidates`] that exists.
pub fn preload_library() -> Option<PathBuf> {
    preload_candidates().into_iter().find(|p| p.is_file())
}

/// How `run` serves the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glue {
    /// The preload for a dynamic program, the supervisor for a static one.
    Chosen,
    /// The supervisor, whatever the program (`--supervise`).
    Supervisor,
    /// The preload only (`trace`, which the supervisor does not record yet).
    Preload,
}

/// Runs `cmd` (program and arguments) with the preload library and `env` added to its
/// environment, or under the supervisor (`glue`); returns the exit status to use (126: cannot
/// run it, 127: not found; the program's own under the supervisor).
pub fn run(cmd: &[OsString], env: &[(&str, OsString)], glue: Glue) -> i32 {
    let Some((prog, prog_args)) = cmd.split_first() else {
        eprintln!("vfio-shim run: no command given (usage: vfio-shim run -- COMMAND [ARGS...])");
        return 2;
    };
    let prog_str = prog.to_string_lossy();
    let Some(path) = find_in_path(&prog_str) else {
        eprintln!("vfio-shim: {prog_str}: command not found");
        return 127;
    };
    match is_dynamic(&path) {
        Ok(true) if glue != Glue::Supervisor => {}
        Ok(dynamic) if glue != Glue::Preload => return supervise(&path, cmd, env, dynamic),
        Ok(_) => {
            eprintln!(
                "vfio-shim: {} is statically linked: LD_PRELOAD cannot interpose on it, and \
                 `trace` records only through it. Run it with `vfio-shim run` (the supervisor \
                 serves static programs) or trace a dynamically linked build.",
                path.display()
            );
            return 126;
        }
        Err(e) => {
            eprintln!("vfio-shim: {e}");
            return 126;
        }
    }
    let Some(lib) = preload_library() else {
        let tried: Vec<String> = preload_candidates().iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "vfio-shim: preload library {LIB} not found (tried {}); set VFIO_SHIM_PRELOAD to its path, \
             or run `vfio-shim doctor`",
            tried.join(", ")
        );
        return 127;
    };
    let mut preload = OsString::from(lib);
    if let Some(old) = std::env::var_os("LD_PRELOAD") {
        preload.push(":");
        preload.push(old);
    }
    let err = Command::new(&path).args(prog_args).env("LD_PRELOAD", preload).envs(env.iter().cloned()).exec();
    eprintln!("vfio-shim: cannot run {}: {err}", path.display());
    126
}

/// Runs `path` under the seccomp supervisor (docs/supervisor.md) until it and every process it
/// started are gone.
fn supervise(path: &Path, cmd: &[OsString], env: &[(&str, OsString)], dynamic: bool) -> i32 {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).ok();
    let Some(argv) = cmd.iter().map(|a| c(a)).collect::<Option<Vec<_>>>() else {
        eprintln!("vfio-shim: an argument holds a NUL byte");
        return 2;
    };
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in env {
        vars.retain(|(name, _)| name != k);
        vars.push((OsString::from(k), v.clone()));
    }
    let envp: Option<Vec<CString>> = vars
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            c(&kv)
        })
        .collect();
    let Some(envp) = envp else {
        eprintln!("vfio-shim: an environment variable holds a NUL byte");
        return 2;
    };
    if std::env::var_os("VFIO_SHIM_LOG").is_some() {
        let _ = env_logger::Builder::from_env(env_logger::Env::new().filter("VFIO_SHIM_LOG"))
            .format_timestamp(None)
            .try_init();
    }
    log::debug!("supervising {} ({})", path.display(), if dynamic { "dynamic" } else { "static" });
    match vfio_shim_supervisor::run(path, &argv, &envp) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("vfio-shim: cannot supervise {}: {} (see vfio-shim doctor)", path.display(), e.desc());
            126
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_and_static_binaries_are_told_apart() {
        assert_eq!(is_dynamic(Path::new("/bin/true")), Ok(true));
        // busybox-static: installed by compat-tests/scripts/host-deps.sh (`make host-test`).
        assert_eq!(is_dynamic(Path::new("/bin/busybox")), Ok(false), "a static ELF");
        assert!(is_dynamic(Path::new("/etc/hostname")).is_err(), "not an ELF");
    }
}
