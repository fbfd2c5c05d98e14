//! type1's module parameters as the shim takes them: from the running kernel's
//! `vfio_iommu_type1` where it has one (a full kernel, where the shim serves programs with the
//! legacy nodes hidden), else from the environment, else type1's defaults.

use std::path::Path;

use nix::errno::Errno;
use vfio_shim::abi::DMA_ENTRY_LIMIT_DEFAULT;
use vfio_shim::translator::Config;

/// The kernel's `dma_entry_limit` parameter file.
pub const DMA_ENTRY_LIMIT_PARAM: &str = "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit";
/// The environment variable that sets it where the kernel has no type1.
pub const DMA_ENTRY_LIMIT_ENV: &str = "VFIO_SHIM_DMA_ENTRY_LIMIT";

/// The translator's configuration for this host. A value that does not parse is `EINVAL`
/// (type1 itself refuses such a value).
pub fn config() -> Result<Config, Errno> {
    let env = std::env::var(DMA_ENTRY_LIMIT_ENV).ok();
    config_from(Path::new(DMA_ENTRY_LIMIT_PARAM), env.as_deref())
}

/// [`config`], or type1's defaults with the reason logged when it cannot be had.
pub fn config_or_default() -> Config {
    config().unwrap_or_else(|e| {
        log::error!("{DMA_ENTRY_LIMIT_ENV} / {DMA_ENTRY_LIMIT_PARAM}: {e}; using type1's default");
        Config::default()
    })
}

fn config_from(param: &Path, env: Option<&str>) -> Result<Config, Errno> {
    let text = match std::fs::read_to_string(param) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => env.map(str::to_owned),
        Err(e) => return Err(crate::errno_of(e)),
    };
    let dma_entry_limit = match text {
        Some(t) => t.trim().parse().map_err(|_| Errno::EINVAL)?,
        None => DMA_ENTRY_LIMIT_DEFAULT,
    };
    Ok(Config { dma_entry_limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_parameter_then_environment_then_default() {
        let dir = std::env::temp_dir().join(format!("vfio-shim-params-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let param = dir.join("dma_entry_limit");
        let absent = dir.join("absent");
        assert_eq!(config_from(&absent, None).unwrap().dma_entry_limit, DMA_ENTRY_LIMIT_DEFAULT);
        assert_eq!(config_from(&absent, Some("100")).unwrap().dma_entry_limit, 100);
        assert_eq!(config_from(&absent, Some("x")).err(), Some(Errno::EINVAL));
        std::fs::write(&param, "4096\n").unwrap();
        assert_eq!(config_from(&param, Some("100")).unwrap().dma_entry_limit, 4096, "the kernel's own value wins");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
