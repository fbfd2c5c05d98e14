//! What type1 would see of an Intel VT-d IOMMU, derived from the `cap_reg`/`ecap_reg` that
//! `IOMMU_GET_HW_INFO` returns (intel/iommu.c:3709-3727 copies them verbatim).
//!
//! type1 allocates its domain with `iommu_paging_domain_alloc(dev)`
//! (vfio_iommu_type1.c:2232), i.e. the driver's default paging domain for flags 0, and
//! reports that domain's `pgsize_bitmap` (vfio_iommu_type1.c:1254, 2857). Paths below are
//! into the Linux 7.3 tree.

use crate::iommufd::{iommu_hw_info_vtd, IOMMU_HW_CAP_DIRTY_TRACKING};

const SZ_4K: u64 = 1 << 12;
const SZ_2M: u64 = 1 << 21;
const SZ_1G: u64 = 1 << 30;

// Register fields, drivers/iommu/intel/iommu.h.
fn cap_fl1gp_support(cap: u64) -> bool {
    (cap >> 56) & 1 != 0 // iommu.h:162
}
fn cap_super_page_val(cap: u64) -> u64 {
    (cap >> 34) & 0xf // iommu.h:169
}
fn ecap_smpwc(ecap: u64) -> bool {
    (ecap >> 48) & 1 != 0 // iommu.h:191
}
fn ecap_flts(ecap: u64) -> bool {
    (ecap >> 47) & 1 != 0 // iommu.h:192
}
fn ecap_slads(ecap: u64) -> bool {
    (ecap >> 45) & 1 != 0 // iommu.h:194
}
fn ecap_smts(ecap: u64) -> bool {
    (ecap >> 43) & 1 != 0 // iommu.h:195
}
fn ecap_sc_support(ecap: u64) -> bool {
    (ecap >> 7) & 1 != 0 // iommu.h:218
}

/// `CONFIG_INTEL_IOMMU_SCALABLE_MODE_DEFAULT_ON` defaults to y (intel/Kconfig:91-93) and
/// Debian keeps it; `intel_iommu_sm` starts from it (intel/iommu.c:208).
const SCALABLE_MODE_DEFAULT_ON: bool = true;

/// The `intel_iommu=` boot options that change the default domain (intel/iommu.c:244-291).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VtdBootParams {
    /// `sm_on` / `sm_off`; `None` leaves the Kconfig default.
    pub scalable_mode: Option<bool>,
    /// `false` after `sp_off`: every domain is 4 KiB only (iommu.c:2907, 3005).
    pub superpage: bool,
}

impl Default for VtdBootParams {
    fn default() -> Self {
        VtdBootParams { scalable_mode: None, superpage: true }
    }
}

impl VtdBootParams {
    /// Parses `/proc/cmdline` the way `intel_iommu_setup` does: every `intel_iommu=` word,
    /// comma-separated options, prefix match (`strncmp`), later options win.
    pub fn from_cmdline(cmdline: &str) -> Self {
        let mut params = VtdBootParams::default();
        for word in cmdline.split_ascii_whitespace() {
            let Some(opts) = word.strip_prefix("intel_iommu=") else {
                continue;
            };
            for opt in opts.split(',') {
                if opt.starts_with("sp_off") {
                    params.superpage = false;
                } else if opt.starts_with("sm_on") {
                    params.scalable_mode = Some(true);
                } else if opt.starts_with("sm_off") {
                    params.scalable_mode = Some(false);
                }
            }
        }
        params
    }
}

/// `sm_supported(iommu)` = `intel_iommu_sm && ecap_smts` (iommu.h:531).
///
/// `intel_iommu_sm` is not visible from userspace, but `IOMMU_HW_CAP_DIRTY_TRACKING` is
/// reported iff `ssads_supported` = `sm_supported && ecap_slads && ecap_smpwc`
/// (iommu.h:534-536, iommu.c:3262, iommufd/device.c:1706), which settles it whenever the
/// hardware has SLADS and SMPWC. Otherwise the boot options and the Kconfig default decide.
fn scalable_mode(vtd: &iommu_hw_info_vtd, out_capabilities: u64, params: &VtdBootParams) -> bool {
    let ecap = vtd.ecap_reg;
    if !ecap_smts(ecap) {
        return false;
    }
    if ecap_slads(ecap) && ecap_smpwc(ecap) {
        return out_capabilities & IOMMU_HW_CAP_DIRTY_TRACKING != 0;
    }
    params.scalable_mode.unwrap_or(SCALABLE_MODE_DEFAULT_ON)
}

/// `pgsize_bitmap` of the default paging domain `intel_iommu_domain_alloc_paging_flags`
/// builds for a device behind this IOMMU with flags 0 (what type1 gets).
///
/// - Both page-table formats can hold leaves at levels 0-2 (generic_pt/fmt/x86_64.h:98-101,
///   fmt/vtdss.h:76-79), so the format offers 4K|2M|1G (generic_pt/iommu_pt.h:1118-1143,
///   1225-1228); every VT-d address width (>= 39 bits) keeps 1G.
/// - First stage is preferred (iommu.c:3030-3034) and possible iff `sm_supported &&
///   ecap_flts` (iommu.c:2873); it drops 1G without `cap_fl1gp_support` (iommu.c:2905).
/// - Second stage drops 2M/1G per `cap_super_page_val` bits 0/1 (iommu.c:3000-3004).
/// - `intel_iommu=sp_off` makes either 4K only (iommu.c:2907, 3005).
pub fn paging_domain_pgsizes(vtd: &iommu_hw_info_vtd, out_capabilities: u64, params: &VtdBootParams) -> u64 {
    if !params.superpage {
        return SZ_4K;
    }
    let (cap, ecap) = (vtd.cap_reg, vtd.ecap_reg);
    let mut pgsizes = SZ_4K | SZ_2M | SZ_1G;
    if scalable_mode(vtd, out_capabilities, params) && ecap_flts(ecap) {
        if !cap_fl1gp_support(cap) {
            pgsizes &= !SZ_1G;
        }
    } else {
        let sslps = cap_super_page_val(cap);
        if sslps & 0b01 == 0 {
            pgsizes &= !SZ_2M;
        }
        if sslps & 0b10 == 0 {
            pgsizes &= !SZ_1G;
        }
    }
    pgsizes
}

/// Whether `enforce_cache_coherency` succeeds on a domain holding this device: both the
/// first- and second-stage ops require `ecap_sc_support` of every device's IOMMU
/// (iommu.c:3196-3250). type1 calls it right after the first attach
/// (vfio_iommu_type1.c:2353-2356) and `VFIO_DMA_CC_IOMMU` is the AND over its domains.
pub fn enforces_cache_coherency(vtd: &iommu_hw_info_vtd) -> bool {
    ecap_sc_support(vtd.ecap_reg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vtd(cap: u64, ecap: u64) -> iommu_hw_info_vtd {
        iommu_hw_info_vtd { flags: 0, __reserved: 0, cap_reg: cap, ecap_reg: ecap }
    }

    const SSLPS_2M_1G: u64 = 0b11 << 34;
    const FL1GP: u64 = 1 << 56;
    const SMTS: u64 = 1 << 43;
    const FLTS: u64 = 1 << 47;
    const SLTS: u64 = 1 << 46;
    const SLADS: u64 = 1 << 45;
    const SMPWC: u64 = 1 << 48;
    const SC: u64 = 1 << 7;

    #[test]
    fn qemu_intel_iommu_legacy_mode_matches_type1() {
        // QEMU intel-iommu without x-scalable-mode: SSLPS 2M|1G, no SMTS. type1 reports
        // 0x40201000 in that guest (semantics.md).
        let p = paging_domain_pgsizes(&vtd(SSLPS_2M_1G, 0), 0, &VtdBootParams::default());
        assert_eq!(p, 0x4020_1000);
    }

    #[test]
    fn second_stage_follows_sslps() {
        let d = VtdBootParams::default();
        assert_eq!(paging_domain_pgsizes(&vtd(1 << 34, 0), 0, &d), SZ_4K | SZ_2M);
        assert_eq!(paging_domain_pgsizes(&vtd(0, 0), 0, &d), SZ_4K);
        // SMTS but booted sm_off: legacy mode, second stage.
        let off = VtdBootParams { scalable_mode: Some(false), superpage: true };
        assert_eq!(paging_domain_pgsizes(&vtd(0, SMTS | FLTS), 0, &off), SZ_4K);
    }

    #[test]
    fn first_stage_follows_fl1gp() {
        let d = VtdBootParams::default();
        let ecap = SMTS | FLTS | SLTS;
        assert_eq!(paging_domain_pgsizes(&vtd(0, ecap), 0, &d), SZ_4K | SZ_2M);
        assert_eq!(paging_domain_pgsizes(&vtd(FL1GP, ecap), 0, &d), SZ_4K | SZ_2M | SZ_1G);
        // Scalable mode with only second-stage support.
        assert_eq!(paging_domain_pgsizes(&vtd(1 << 34, SMTS | SLTS), 0, &d), SZ_4K | SZ_2M);
    }

    #[test]
    fn dirty_tracking_capability_reveals_scalable_mode() {
        let ecap = SMTS | FLTS | SLTS | SLADS | SMPWC;
        let cmdline_says_off = VtdBootParams { scalable_mode: Some(false), superpage: true };
        // Reported dirty tracking: scalable mode is on whatever the cmdline parse says.
        let p = paging_domain_pgsizes(&vtd(SSLPS_2M_1G, ecap), IOMMU_HW_CAP_DIRTY_TRACKING, &cmdline_says_off);
        assert_eq!(p, SZ_4K | SZ_2M);
        // Not reported: legacy mode, second stage.
        let p = paging_domain_pgsizes(&vtd(SSLPS_2M_1G, ecap), 0, &VtdBootParams::default());
        assert_eq!(p, SZ_4K | SZ_2M | SZ_1G);
    }

    #[test]
    fn sp_off_is_4k_only() {
        let sp_off = VtdBootParams::from_cmdline("quiet intel_iommu=on,sp_off");
        assert_eq!(sp_off, VtdBootParams { scalable_mode: None, superpage: false });
        assert_eq!(paging_domain_pgsizes(&vtd(SSLPS_2M_1G | FL1GP, 0), 0, &sp_off), SZ_4K);
    }

    #[test]
    fn cmdline_later_options_win() {
        let p = VtdBootParams::from_cmdline("intel_iommu=sm_on root=/dev/vda intel_iommu=sm_off");
        assert_eq!(p.scalable_mode, Some(false));
        let p = VtdBootParams::from_cmdline("intel_iommu=sm_off,sm_on");
        assert_eq!(p.scalable_mode, Some(true));
        assert_eq!(VtdBootParams::from_cmdline("iommu=pt"), VtdBootParams::default());
    }

    #[test]
    fn coherency_is_snoop_control() {
        assert!(enforces_cache_coherency(&vtd(0, SC)));
        assert!(!enforces_cache_coherency(&vtd(0, 0)));
    }
}
