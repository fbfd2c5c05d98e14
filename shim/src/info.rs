//! `VFIO_IOMMU_GET_INFO` encoding, byte for byte as type1 builds it (T1:2767-2893).
//!
//! type1 appends capabilities in a fixed order (MIGRATION, DMA_AVAIL, IOVA_RANGE), each
//! padded to 8 bytes, chained by `next` offsets relative to the start of the info struct.

use zerocopy::IntoBytes;

use crate::abi::*;
use crate::backend::IovaRange;

/// What the container knows that GET_INFO reports.
#[derive(Clone, Debug)]
pub struct InfoSource<'a> {
    pub pgsizes: u64,
    pub dma_avail: u32,
    pub iova_ranges: &'a [IovaRange],
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// The capability chain as type1 lays it out after `vfio_info_cap_shift(caps, sizeof(info))`.
pub fn capability_chain(src: &InfoSource<'_>) -> Vec<u8> {
    let base = size_of::<vfio_iommu_type1_info>();
    let mut caps: Vec<Vec<u8>> = Vec::with_capacity(3);

    let migration = vfio_iommu_type1_info_cap_migration {
        header: vfio_info_cap_header { id: VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, version: 1, next: 0 },
        flags: 0,
        pad: 0,
        pgsize_bitmap: min_pgsize(src.pgsizes),
        max_dirty_bitmap_size: DIRTY_BITMAP_SIZE_MAX,
    };
    caps.push(migration.as_bytes().to_vec());

    let avail = vfio_iommu_type1_info_dma_avail {
        header: vfio_info_cap_header { id: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, version: 1, next: 0 },
        avail: src.dma_avail,
    };
    caps.push(avail.as_bytes().to_vec());

    // A container whose domains report no usable range (only mdevs in type1) has no cap.
    if !src.iova_ranges.is_empty() {
        let head = vfio_iommu_type1_info_cap_iova_range {
            header: vfio_info_cap_header { id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, version: 1, next: 0 },
            nr_iovas: src.iova_ranges.len() as u32,
            reserved: 0,
        };
        let mut cap = head.as_bytes().to_vec();
        for r in src.iova_ranges {
            cap.extend_from_slice(vfio_iova_range { start: r.start, end: r.last }.as_bytes());
        }
        caps.push(cap);
    }

    let mut out = Vec::new();
    let n = caps.len();
    for (i, mut cap) in caps.into_iter().enumerate() {
        cap.resize(align8(cap.len()), 0);
        let next = if i + 1 < n { (base + out.len() + cap.len()) as u32 } else { 0 };
        cap[4..8].copy_from_slice(&next.to_ne_bytes());
        out.extend_from_slice(&cap);
    }
    out
}

/// The smallest page size in a bitmap (`1 << __ffs(pgsize_bitmap)`).
pub fn min_pgsize(pgsizes: u64) -> u64 {
    if pgsizes == 0 {
        0
    } else {
        1 << pgsizes.trailing_zeros()
    }
}

/// The reply to GET_INFO for a caller whose `argsz` is given: the bytes to copy back to the
/// start of the argument (never more than `argsz`), and the caps to place at offset 24 if
/// they fit. When they don't, `argsz` carries the size needed and `cap_offset` stays 0.
pub fn encode(src: &InfoSource<'_>, argsz: u32) -> (vfio_iommu_type1_info, Option<Vec<u8>>) {
    let base = size_of::<vfio_iommu_type1_info>();
    let caps = capability_chain(src);
    let mut info = vfio_iommu_type1_info {
        argsz,
        flags: VFIO_IOMMU_INFO_PGSIZES,
        iova_pgsizes: src.pgsizes,
        cap_offset: 0,
        pad: 0,
    };
    if caps.is_empty() {
        return (info, None);
    }
    info.flags |= VFIO_IOMMU_INFO_CAPS;
    let needed = base + caps.len();
    if (argsz as usize) < needed {
        info.argsz = needed as u32;
        (info, None)
    } else {
        info.cap_offset = base as u32;
        (info, Some(caps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_matches_the_measured_type1_layout() {
        // Measured in the TCG guest: argsz 120 with two IOVA ranges around the MSI window.
        let ranges =
            [IovaRange { start: 0, last: 0xfedf_ffff }, IovaRange { start: 0xfef0_0000, last: 0x7f_ffff_ffff }];
        let src = InfoSource { pgsizes: 0x4020_1000, dma_avail: 65535, iova_ranges: &ranges };
        let (info, caps) = encode(&src, 24);
        assert_eq!(info.argsz, 120);
        assert_eq!(info.cap_offset, 0);
        assert_eq!(info.flags, VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
        assert!(caps.is_none());
        let (info, caps) = encode(&src, 120);
        let caps = caps.unwrap();
        assert_eq!(info.cap_offset, 24);
        assert_eq!(caps.len(), 96);
        // MIGRATION at 24 -> next 56; DMA_AVAIL at 56 -> next 72; IOVA_RANGE at 72 -> 0.
        assert_eq!(&caps[0..8], &[2, 0, 1, 0, 56, 0, 0, 0]);
        assert_eq!(&caps[32..40], &[3, 0, 1, 0, 72, 0, 0, 0]);
        assert_eq!(&caps[40..44], &65535u32.to_ne_bytes());
        assert_eq!(&caps[48..56], &[1, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(&caps[56..60], &2u32.to_ne_bytes());
        // Migration cap: minimum page size and type1's DIRTY_BITMAP_SIZE_MAX.
        assert_eq!(&caps[16..24], &0x1000u64.to_ne_bytes());
        assert_eq!(&caps[24..32], &(256u64 << 20).to_ne_bytes());
    }
}
