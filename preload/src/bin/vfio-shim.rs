//! `vfio-shim run -- CMD...`: runs CMD with the preload library, so its legacy VFIO calls are
//! served over iommufd. Refuses statically linked programs (LD_PRELOAD cannot reach them).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

const LIB: &str = "libvfio_shim_preload.so";

fn usage() -> ! {
    eprintln!("usage: vfio-shim run -- COMMAND [ARGS...]");
    eprintln!("  Runs COMMAND with {LIB} preloaded (found next to this binary, or in");
    eprintln!("  $VFIO_SHIM_PRELOAD). VFIO_SHIM_LOG=debug logs what the shim does.");
    exit(2)
}

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

fn library() -> PathBuf {
    if let Some(p) = std::env::var_os("VFIO_SHIM_PRELOAD") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().map(|d| d.join(LIB)).unwrap_or_else(|| PathBuf::from(LIB))
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let rest = match args.split_first() {
        Some((sub, rest)) if sub == "run" => rest,
        _ => usage(),
    };
    let cmd = match rest.split_first() {
        Some((dd, cmd)) if dd == "--" => cmd,
        _ => rest,
    };
    let Some((prog, prog_args)) = cmd.split_first() else { usage() };
    let prog_str = prog.to_string_lossy();
    let Some(path) = find_in_path(&prog_str) else {
        eprintln!("vfio-shim: {prog_str}: command not found");
        exit(127)
    };
    match is_dynamic(&path) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!(
                "vfio-shim: {} is statically linked: LD_PRELOAD cannot interpose on it. \
                 Use the CUSE node (vfio-shim-cuse) for such programs, or a dynamically linked build.",
                path.display()
            );
            exit(126)
        }
        Err(e) => {
            eprintln!("vfio-shim: {e}");
            exit(126)
        }
    }
    let lib = library();
    if !lib.is_file() {
        eprintln!("vfio-shim: preload library {} not found", lib.display());
        exit(127)
    }
    let mut preload = OsString::from(lib);
    if let Some(old) = std::env::var_os("LD_PRELOAD") {
        preload.push(":");
        preload.push(old);
    }
    let err = Command::new(&path).args(prog_args).env("LD_PRELOAD", preload).exec();
    eprintln!("vfio-shim: cannot run {}: {err}", path.display());
    exit(126)
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
