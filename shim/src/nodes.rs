//! The legacy VFIO node paths a program opens: `/dev/vfio/vfio`, `/dev/vfio/<N>` and, in
//! no-IOMMU mode, `/dev/vfio/noiommu-<N>`.

/// `/dev/vfio/<N>` -> `Some(N)`. The kernel names group nodes `%d`, so `/dev/vfio/07` is no
/// node (ENOENT from the VFS).
pub fn group_number(path: &[u8]) -> Option<u32> {
    number(path.strip_prefix(b"/dev/vfio/")?)
}

/// `/dev/vfio/noiommu-<N>` -> `Some(N)` (GR:566 names them `noiommu-%d`).
pub fn noiommu_group_number(path: &[u8]) -> Option<u32> {
    number(path.strip_prefix(b"/dev/vfio/noiommu-")?)
}

/// A `%d` the kernel would print: no sign, no leading zero.
fn number(n: &[u8]) -> Option<u32> {
    if n.is_empty() || n.len() > 10 || !n.iter().all(u8::is_ascii_digit) || (n.len() > 1 && n[0] == b'0') {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

pub fn is_container_path(path: &[u8]) -> bool {
    path == b"/dev/vfio/vfio"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(group_number(b"/dev/vfio/12"), Some(12));
        assert_eq!(group_number(b"/dev/vfio/vfio"), None);
        assert_eq!(group_number(b"/dev/vfio/devices/vfio0"), None);
        assert_eq!(group_number(b"/dev/vfio/"), None);
        assert_eq!(group_number(b"/dev/vfio/99999999999"), None);
        assert_eq!(group_number(b"/dev/vfio/07"), None);
        assert_eq!(group_number(b"/dev/vfio/0"), Some(0));
        assert!(is_container_path(b"/dev/vfio/vfio"));
        assert_eq!(noiommu_group_number(b"/dev/vfio/noiommu-3"), Some(3));
        assert_eq!(noiommu_group_number(b"/dev/vfio/noiommu-03"), None);
        assert_eq!(noiommu_group_number(b"/dev/vfio/noiommu-"), None);
        assert_eq!(noiommu_group_number(b"/dev/vfio/3"), None);
        assert_eq!(group_number(b"/dev/vfio/noiommu-3"), None);
    }
}
