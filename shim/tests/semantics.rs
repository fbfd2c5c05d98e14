//! One test per row of the container and group tables in shared/design/semantics.md,
//! asserting type1's result and errno, for TYPE1 (v1) and TYPE1v2 wherever the row applies
//! to both. Runs over the fake backend; the VM tier runs the same cases on a real kernel.
#![allow(non_upper_case_globals)]

use vfio_shim::abi::*;
use vfio_shim::arg::BufferArg;
use vfio_shim::backend::{GroupDevice, IovaRange};
use vfio_shim::fake::{FakeBackend, Op, Platform};
use vfio_shim::{ContainerId, Errno, FdTarget, GroupId, GroupReply, Shim};
use zerocopy::{FromBytes, IntoBytes};

const EDU: &str = "0000:00:03.0";
const IVSHMEM: &str = "0000:00:05.0";
const RW: u32 = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
const MB: u64 = 1 << 20;

fn backend() -> FakeBackend {
    FakeBackend::new().with_group(7, &[EDU]).with_group(9, &[IVSHMEM])
}

struct Env {
    shim: Shim<FakeBackend>,
    c: ContainerId,
    g: GroupId,
}

fn resolve_to(c: ContainerId) -> impl Fn(i32) -> FdTarget {
    move |fd| match fd {
        100 => FdTarget::Container(c),
        3 => FdTarget::Other,
        _ => FdTarget::Closed,
    }
}

impl Env {
    /// A container with group 7 set on it, no IOMMU yet.
    fn unset() -> Self {
        Self::unset_with(backend())
    }

    fn unset_with(b: FakeBackend) -> Self {
        let mut shim = Shim::new(b);
        let c = shim.open_container().unwrap();
        let g = shim.open_group(7).unwrap();
        let mut env = Env { shim, c, g };
        env.set_container(g, 100).unwrap();
        env
    }

    /// A container with group 7 and an IOMMU of the given version.
    fn new(v2: bool) -> Self {
        let mut env = Self::unset();
        env.set_iommu(if v2 { VFIO_TYPE1v2_IOMMU } else { VFIO_TYPE1_IOMMU }).unwrap();
        env
    }

    fn ioctl_val(&mut self, cmd: u32, arg: u64) -> Result<i64, Errno> {
        self.shim.container_ioctl(self.c, cmd, arg, &mut BufferArg::default())
    }

    fn set_iommu(&mut self, ty: u64) -> Result<i64, Errno> {
        self.ioctl_val(VFIO_SET_IOMMU, ty)
    }

    fn ext(&mut self, ext: u64) -> i64 {
        self.ioctl_val(VFIO_CHECK_EXTENSION, ext).unwrap()
    }

    fn ioctl_buf(&mut self, cmd: u32, arg: &mut BufferArg) -> Result<i64, Errno> {
        self.shim.container_ioctl(self.c, cmd, 0, arg)
    }

    fn map_raw(&mut self, m: vfio_iommu_type1_dma_map) -> Result<i64, Errno> {
        self.ioctl_buf(VFIO_IOMMU_MAP_DMA, &mut BufferArg::of(&m))
    }

    fn map(&mut self, iova: u64, size: u64) -> Result<i64, Errno> {
        self.map_raw(vfio_iommu_type1_dma_map { argsz: 32, flags: RW, vaddr: 0x7f00_0000_0000 + iova, iova, size })
    }

    fn unmap_flags(&mut self, iova: u64, size: u64, flags: u32) -> Result<u64, Errno> {
        let mut arg = BufferArg::of(&vfio_iommu_type1_dma_unmap { argsz: 24, flags, iova, size });
        self.ioctl_buf(VFIO_IOMMU_UNMAP_DMA, &mut arg)?;
        Ok(arg.get::<vfio_iommu_type1_dma_unmap>().size)
    }

    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64, Errno> {
        self.unmap_flags(iova, size, 0)
    }

    fn mapped(&self) -> Vec<(u64, u64)> {
        self.shim.mappings(self.c).iter().map(|m| (m.iova, m.size)).collect()
    }

    fn get_info(&mut self, argsz: u32) -> Result<BufferArg, Errno> {
        // type1 copies minsz (16 bytes) before it looks at argsz: the buffer always has them.
        let mut bytes = vec![0u8; argsz.max(16) as usize];
        bytes[..4].copy_from_slice(&argsz.to_ne_bytes());
        let mut arg = BufferArg::new(bytes);
        self.ioctl_buf(VFIO_IOMMU_GET_INFO, &mut arg)?;
        Ok(arg)
    }

    fn dma_avail(&mut self) -> u32 {
        let info = self.get_info(256).unwrap();
        let b = &info.bytes;
        let mut off = u32::from_ne_bytes(b[16..20].try_into().unwrap()) as usize;
        while off != 0 {
            let id = u16::from_ne_bytes(b[off..off + 2].try_into().unwrap());
            if id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL {
                return u32::from_ne_bytes(b[off + 8..off + 12].try_into().unwrap());
            }
            off = u32::from_ne_bytes(b[off + 4..off + 8].try_into().unwrap()) as usize;
        }
        panic!("no DMA_AVAIL cap")
    }

    fn group_ioctl(&mut self, g: GroupId, cmd: u32, arg: &mut BufferArg) -> Result<GroupReply, Errno> {
        let c = self.c;
        self.shim.group_ioctl(g, cmd, arg, &resolve_to(c))
    }

    fn set_container(&mut self, g: GroupId, fd: i32) -> Result<GroupReply, Errno> {
        self.group_ioctl(g, VFIO_GROUP_SET_CONTAINER, &mut BufferArg::new(fd.to_ne_bytes().to_vec()))
    }

    fn unset_container(&mut self, g: GroupId) -> Result<GroupReply, Errno> {
        self.group_ioctl(g, VFIO_GROUP_UNSET_CONTAINER, &mut BufferArg::default())
    }

    fn status(&mut self, g: GroupId) -> Result<u32, Errno> {
        let mut arg = BufferArg::of(&vfio_group_status { argsz: 8, flags: 0xdead });
        self.group_ioctl(g, VFIO_GROUP_GET_STATUS, &mut arg)?;
        Ok(arg.get::<vfio_group_status>().flags)
    }

    fn device(&mut self, g: GroupId, name: &str) -> Result<GroupReply, Errno> {
        let mut bytes = name.as_bytes().to_vec();
        bytes.push(0);
        self.group_ioctl(g, VFIO_GROUP_GET_DEVICE_FD, &mut BufferArg::new(bytes))
    }
}

/// Runs a test body once for TYPE1 (v1) and once for TYPE1v2.
macro_rules! both_versions {
    ($name:ident, |$v2:ident| $body:block) => {
        mod $name {
            use super::*;
            fn body($v2: bool) $body
            #[test]
            fn type1() { body(false) }
            #[test]
            fn type1v2() { body(true) }
        }
    };
}

// ------------------------------------------------------------ container table rows

both_versions!(get_api_version_is_0, |v2| {
    let mut env = Env::unset();
    assert_eq!(env.ioctl_val(VFIO_GET_API_VERSION, 0), Ok(0));
    env.set_iommu(if v2 { VFIO_TYPE1v2_IOMMU } else { VFIO_TYPE1_IOMMU }).unwrap();
    assert_eq!(env.ioctl_val(VFIO_GET_API_VERSION, 0), Ok(0));
});

both_versions!(check_extension_type1_type1v2_unmap_all_are_1, |v2| {
    let mut env = Env::unset();
    for ext in [VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU, VFIO_UNMAP_ALL] {
        assert_eq!(env.ext(ext), 1, "before SET_IOMMU, ext {ext}");
    }
    env.set_iommu(if v2 { VFIO_TYPE1v2_IOMMU } else { VFIO_TYPE1_IOMMU }).unwrap();
    for ext in [VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU, VFIO_UNMAP_ALL] {
        assert_eq!(env.ext(ext), 1, "after SET_IOMMU, ext {ext}");
    }
});

#[test]
fn check_extension_before_any_group_polls_type1() {
    let mut shim = Shim::new(backend());
    let c = shim.open_container().unwrap();
    let mut arg = BufferArg::default();
    assert_eq!(shim.container_ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU, &mut arg), Ok(1));
    assert_eq!(shim.container_ioctl(c, VFIO_CHECK_EXTENSION, VFIO_UPDATE_VADDR, &mut arg), Ok(0));
}

both_versions!(check_extension_update_vaddr_is_1_once_iommu_set, |v2| {
    let mut env = Env::unset();
    assert_eq!(env.ext(VFIO_UPDATE_VADDR), 0);
    env.set_iommu(if v2 { VFIO_TYPE1v2_IOMMU } else { VFIO_TYPE1_IOMMU }).unwrap();
    assert_eq!(env.ext(VFIO_UPDATE_VADDR), 1);
});

both_versions!(check_extension_dma_cc_iommu_follows_domain_coherency, |v2| {
    let ty = if v2 { VFIO_TYPE1v2_IOMMU } else { VFIO_TYPE1_IOMMU };
    let mut env = Env::unset();
    assert_eq!(env.ext(VFIO_DMA_CC_IOMMU), 0, "0 before SET_IOMMU");
    env.set_iommu(ty).unwrap();
    assert_eq!(env.ext(VFIO_DMA_CC_IOMMU), 1);

    let mut b = backend();
    b.platform.coherent = false;
    let mut env = Env::unset_with(b);
    env.set_iommu(ty).unwrap();
    assert_eq!(env.ext(VFIO_DMA_CC_IOMMU), 0);
});

both_versions!(check_extension_nesting_spapr_eeh_are_0, |v2| {
    let mut env = Env::new(v2);
    for ext in [
        VFIO_SPAPR_TCE_IOMMU,
        VFIO_EEH,
        __VFIO_RESERVED_TYPE1_NESTING_IOMMU,
        VFIO_SPAPR_TCE_v2_IOMMU,
        VFIO_NOIOMMU_IOMMU,
        0,
        11,
        u64::MAX,
    ] {
        assert_eq!(env.ext(ext), 0, "ext {ext}");
    }
});

#[test]
fn container_ioctls_before_set_iommu_are_einval() {
    let mut env = Env::unset();
    let mut info = BufferArg::of(&vfio_iommu_type1_info { argsz: 24, ..Default::default() });
    assert_eq!(env.ioctl_buf(VFIO_IOMMU_GET_INFO, &mut info), Err(Errno::EINVAL));
    assert_eq!(env.map(0x10_0000, 0x1000), Err(Errno::EINVAL));
    assert_eq!(env.unmap(0x10_0000, 0x1000), Err(Errno::EINVAL));
    assert_eq!(env.ioctl_val(VFIO_IOMMU_DIRTY_PAGES, 0), Err(Errno::EINVAL));
    assert_eq!(env.ioctl_val(0x3b99, 0), Err(Errno::EINVAL), "unknown ioctl");
}

#[test]
fn set_iommu_without_group_is_einval_even_for_unknown_type() {
    let mut shim = Shim::new(backend());
    let c = shim.open_container().unwrap();
    let mut arg = BufferArg::default();
    assert_eq!(shim.container_ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU, &mut arg), Err(Errno::EINVAL));
    assert_eq!(shim.container_ioctl(c, VFIO_SET_IOMMU, 42, &mut arg), Err(Errno::EINVAL));
}

both_versions!(set_iommu_twice_is_einval, |v2| {
    let mut env = Env::new(v2);
    assert_eq!(env.set_iommu(VFIO_TYPE1v2_IOMMU), Err(Errno::EINVAL));
    assert_eq!(env.set_iommu(VFIO_TYPE1_IOMMU), Err(Errno::EINVAL));
});

#[test]
fn set_iommu_unknown_type_is_enodev() {
    let mut env = Env::unset();
    for ty in [0, VFIO_SPAPR_TCE_IOMMU, __VFIO_RESERVED_TYPE1_NESTING_IOMMU, VFIO_NOIOMMU_IOMMU, 99] {
        assert_eq!(env.set_iommu(ty), Err(Errno::ENODEV), "type {ty}");
    }
    assert_eq!(env.set_iommu(VFIO_TYPE1v2_IOMMU), Ok(0));
}

/// explorer, seed 2, s1910 (type1 in the VM): SET_IOMMU(VFIO_UNMAP_ALL) is EINVAL, not ENODEV.
#[test]
fn set_iommu_with_an_extension_type1_claims_is_einval() {
    let mut env = Env::unset();
    assert_eq!(env.set_iommu(VFIO_UNMAP_ALL), Err(Errno::EINVAL));
    assert_eq!(env.set_iommu(VFIO_UPDATE_VADDR), Err(Errno::ENODEV));
    assert_eq!(env.set_iommu(VFIO_DMA_CC_IOMMU), Err(Errno::ENODEV));
    assert_eq!(env.set_iommu(VFIO_TYPE1_IOMMU), Ok(0));
}

both_versions!(get_info_argsz_below_minsz_is_einval, |v2| {
    let mut env = Env::new(v2);
    for argsz in [0, 4, 15] {
        assert_eq!(env.get_info(argsz).err(), Some(Errno::EINVAL), "argsz {argsz}");
    }
    assert!(env.get_info(16).is_ok());
});

both_versions!(get_info_reports_needed_argsz_with_cap_offset_0, |v2| {
    let mut env = Env::new(v2);
    for argsz in [16, 24, 119] {
        let out = env.get_info(argsz).unwrap();
        let n = (argsz as usize).min(24);
        let mut info = vfio_iommu_type1_info::default();
        info.as_mut_bytes()[..n].copy_from_slice(&out.bytes[..n]);
        assert_eq!(info.argsz, 120, "argsz {argsz}");
        assert_eq!(info.flags, VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
        assert_eq!(info.iova_pgsizes, 0x4020_1000);
        if argsz >= 24 {
            assert_eq!(info.cap_offset, 0);
        }
        // Nothing past argsz is written.
        assert!(out.bytes[n..].iter().all(|b| *b == 0), "argsz {argsz}");
    }
});

both_versions!(get_info_caps_are_byte_exact, |v2| {
    let mut env = Env::new(v2);
    let out = env.get_info(120).unwrap();
    let mut expected = Vec::new();
    expected.extend_from_slice(
        vfio_iommu_type1_info {
            argsz: 120,
            flags: VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS,
            iova_pgsizes: 0x4020_1000,
            cap_offset: 24,
            pad: 0,
        }
        .as_bytes(),
    );
    expected.extend_from_slice(
        vfio_iommu_type1_info_cap_migration {
            header: vfio_info_cap_header { id: 2, version: 1, next: 56 },
            flags: 0,
            pad: 0,
            pgsize_bitmap: 0x1000,
            max_dirty_bitmap_size: 256 << 20,
        }
        .as_bytes(),
    );
    expected.extend_from_slice(
        vfio_iommu_type1_info_dma_avail { header: vfio_info_cap_header { id: 3, version: 1, next: 72 }, avail: 65535 }
            .as_bytes(),
    );
    expected.extend_from_slice(&[0; 4]);
    expected.extend_from_slice(
        vfio_iommu_type1_info_cap_iova_range {
            header: vfio_info_cap_header { id: 1, version: 1, next: 0 },
            nr_iovas: 2,
            reserved: 0,
        }
        .as_bytes(),
    );
    expected.extend_from_slice(vfio_iova_range { start: 0, end: 0xfedf_ffff }.as_bytes());
    expected.extend_from_slice(vfio_iova_range { start: 0xfef0_0000, end: (1 << 39) - 1 }.as_bytes());
    assert_eq!(out.bytes, expected);
});

both_versions!(get_info_dma_avail_counts_down_from_65535, |v2| {
    let mut env = Env::new(v2);
    assert_eq!(env.dma_avail(), 65535);
    env.map(0x10_0000, 0x1000).unwrap();
    env.map(0x20_0000, 0x2000).unwrap();
    assert_eq!(env.dma_avail(), 65533);
    env.unmap(0x10_0000, 0x1000).unwrap();
    assert_eq!(env.dma_avail(), 65534);
});

both_versions!(map_bad_flags_short_argsz_no_prot_are_einval, |v2| {
    let mut env = Env::new(v2);
    let good = vfio_iommu_type1_dma_map { argsz: 32, flags: RW, vaddr: 0x7000_0000, iova: 0x10_0000, size: 0x1000 };
    assert_eq!(env.map_raw(vfio_iommu_type1_dma_map { flags: RW | 1 << 3, ..good }), Err(Errno::EINVAL));
    assert_eq!(env.map_raw(vfio_iommu_type1_dma_map { argsz: 31, ..good }), Err(Errno::EINVAL));
    assert_eq!(env.map_raw(vfio_iommu_type1_dma_map { flags: 0, ..good }), Err(Errno::EINVAL));
    assert_eq!(
        env.map_raw(vfio_iommu_type1_dma_map { flags: RW | VFIO_DMA_MAP_FLAG_VADDR, ..good }),
        Err(Errno::EINVAL),
        "prot together with VADDR"
    );
    assert_eq!(env.map_raw(vfio_iommu_type1_dma_map { flags: VFIO_DMA_MAP_FLAG_READ, ..good }), Ok(0));
    assert_eq!(
        env.map_raw(vfio_iommu_type1_dma_map { argsz: 4096, flags: VFIO_DMA_MAP_FLAG_WRITE, iova: 0x20_0000, ..good }),
        Ok(0)
    );
});

#[test]
fn map_argsz_short_with_the_rest_unreadable_is_efault() {
    let mut env = Env::new(true);
    // type1 copies minsz (32 bytes) first: with only argsz readable that faults, whatever
    // argsz says (explorer, type1 in the VM: `argsz=Truncated` ops answer EFAULT).
    let mut arg = BufferArg::new(8u32.to_ne_bytes().to_vec());
    assert_eq!(env.ioctl_buf(VFIO_IOMMU_MAP_DMA, &mut arg), Err(Errno::EFAULT));
    let mut arg = BufferArg::new(vec![]);
    assert_eq!(env.ioctl_buf(VFIO_IOMMU_MAP_DMA, &mut arg), Err(Errno::EFAULT));
    // Readable and short: EINVAL.
    let mut bytes = vec![0u8; 32];
    bytes[..4].copy_from_slice(&8u32.to_ne_bytes());
    assert_eq!(env.ioctl_buf(VFIO_IOMMU_MAP_DMA, &mut BufferArg::new(bytes)), Err(Errno::EINVAL));
}

both_versions!(map_size_0_overflow_unaligned, |v2| {
    let mut env = Env::new(v2);
    let good = vfio_iommu_type1_dma_map { argsz: 32, flags: RW, vaddr: 0x7000_0000, iova: 0x10_0000, size: 0x1000 };
    assert_eq!(env.map_raw(vfio_iommu_type1_dma_map { size: 0, ..good }), Err(Errno::EINVAL));
    assert_eq!(
        env.map_raw(vfio_iommu_type1_dma_map { iova: u64::MAX - 0xfff, size: 0x2000, ..good }),
        Err(Errno::EOVERFLOW)
    );
    assert_eq!(
        env.map_raw(vfio_iommu_type1_dma_map { vaddr: u64::MAX - 0xfff, size: 0x2000, ..good }),
        Err(Errno::EOVERFLOW)
    );
    assert_eq!(env.map_raw(vfio_iommu_type1_dma_map { iova: 0x10_0800, ..good }), Err(Errno::EINVAL));
    assert_eq!(env.map_raw(vfio_iommu_type1_dma_map { size: 0x1800, ..good }), Err(Errno::EINVAL));
    assert_eq!(env.map_raw(vfio_iommu_type1_dma_map { vaddr: 0x7000_0010, ..good }), Err(Errno::EINVAL));
    // Overflow is checked before alignment, as in T1:1696.
    assert_eq!(
        env.map_raw(vfio_iommu_type1_dma_map { iova: u64::MAX - 0x7ff, size: 0x1000, ..good }),
        Err(Errno::EOVERFLOW)
    );
    assert!(env.mapped().is_empty());
});

both_versions!(map_overlapping_is_eexist, |v2| {
    let mut env = Env::new(v2);
    env.map(0x10_0000, 0x4000).unwrap();
    assert_eq!(env.map(0x10_0000, 0x4000), Err(Errno::EEXIST), "same");
    assert_eq!(env.map(0x0f_f000, 0x2000), Err(Errno::EEXIST), "overlaps the start");
    assert_eq!(env.map(0x10_3000, 0x2000), Err(Errno::EEXIST), "overlaps the end");
    assert_eq!(env.map(0x10_1000, 0x1000), Err(Errno::EEXIST), "inside");
    assert_eq!(env.map(0x0f_0000, 0x10_0000), Err(Errno::EEXIST), "covers");
    assert_eq!(env.map(0x10_4000, 0x1000), Ok(0), "adjacent");
    assert_eq!(env.map(0x0f_f000, 0x1000), Ok(0), "adjacent below");
});

both_versions!(map_into_reserved_iova_is_einval, |v2| {
    let mut env = Env::new(v2);
    assert_eq!(env.map(0xfee0_0000, 0x1000), Err(Errno::EINVAL), "MSI window");
    assert_eq!(env.map(0xfed0_0000, 0x20_0000), Err(Errno::EINVAL), "straddles the MSI window");
    assert_eq!(env.map(1 << 39, 0x1000), Err(Errno::EINVAL), "above the aperture");
    assert_eq!(env.map((1 << 39) - 0x1000, 0x2000), Err(Errno::EINVAL), "crosses the aperture end");
    assert_eq!(env.map(0xfef0_0000, 0x1000), Ok(0));
});

both_versions!(map_beyond_dma_entry_limit_is_enospc, |v2| {
    let mut env = Env::new(v2);
    for n in 0..65535u64 {
        env.map(n * 0x1000, 0x1000).unwrap_or_else(|e| panic!("map {n}: {e}"));
    }
    assert_eq!(env.dma_avail(), 0);
    assert_eq!(env.map(65535 * 0x1000, 0x1000), Err(Errno::ENOSPC));
    // EEXIST is checked before the limit (T1:1738).
    assert_eq!(env.map(0, 0x1000), Err(Errno::EEXIST));
    assert_eq!(env.unmap(0, 0x1000), Ok(0x1000));
    assert_eq!(env.map(65535 * 0x1000, 0x1000), Ok(0));
    assert_eq!(env.unmap_flags(0, 0, VFIO_DMA_UNMAP_FLAG_ALL), Ok(65535 * 0x1000));
    assert_eq!(env.dma_avail(), 65535);
});

both_versions!(map_past_rlimit_memlock_is_enomem_and_records_nothing, |v2| {
    let mut env = Env::new(v2);
    env.shim.backend_mut().fail_at(Op::IoasMap, 0, Errno::ENOMEM);
    assert_eq!(env.map(0x10_0000, 512 * MB), Err(Errno::ENOMEM));
    assert!(env.mapped().is_empty());
    assert_eq!(env.dma_avail(), 65535);
    assert_eq!(env.map(0x10_0000, 512 * MB), Ok(0));
});

both_versions!(unmap_bad_flags_and_dirty_with_all_or_vaddr_are_einval, |v2| {
    let mut env = Env::new(v2);
    env.map(0x10_0000, 0x1000).unwrap();
    assert_eq!(env.unmap_flags(0x10_0000, 0x1000, 1 << 3), Err(Errno::EINVAL));
    assert_eq!(
        env.unmap_flags(0, 0, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_ALL),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        env.unmap_flags(0x10_0000, 0x1000, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_VADDR),
        Err(Errno::EINVAL)
    );
    let mut short = BufferArg::of(&vfio_iommu_type1_dma_unmap { argsz: 23, flags: 0, iova: 0x10_0000, size: 0x1000 });
    assert_eq!(env.ioctl_buf(VFIO_IOMMU_UNMAP_DMA, &mut short), Err(Errno::EINVAL));
    assert_eq!(env.mapped(), vec![(0x10_0000, 0x1000)]);
});

both_versions!(unmap_size_0_overflow_unaligned, |v2| {
    let mut env = Env::new(v2);
    env.map(0x10_0000, 0x1000).unwrap();
    assert_eq!(env.unmap(0x10_0000, 0), Err(Errno::EINVAL));
    assert_eq!(env.unmap(u64::MAX - 0xfff, 0x2000), Err(Errno::EOVERFLOW));
    assert_eq!(env.unmap(0x10_0800, 0x1000), Err(Errno::EINVAL));
    assert_eq!(env.unmap(0x10_0000, 0x800), Err(Errno::EINVAL));
    assert_eq!(env.mapped(), vec![(0x10_0000, 0x1000)]);
});

both_versions!(unmap_all_with_iova_or_size_is_einval, |v2| {
    let mut env = Env::new(v2);
    env.map(0x10_0000, 0x1000).unwrap();
    assert_eq!(env.unmap_flags(0x1000, 0, VFIO_DMA_UNMAP_FLAG_ALL), Err(Errno::EINVAL));
    assert_eq!(env.unmap_flags(0, 0x1000, VFIO_DMA_UNMAP_FLAG_ALL), Err(Errno::EINVAL));
    assert_eq!(env.unmap_flags(0, 0, VFIO_DMA_UNMAP_FLAG_ALL), Ok(0x1000));
    assert!(env.mapped().is_empty());
});

both_versions!(unmap_of_nothing_is_success_size_0, |v2| {
    let mut env = Env::new(v2);
    assert_eq!(env.unmap(0x10_0000, 0x1000), Ok(0));
    assert_eq!(env.unmap_flags(0, 0, VFIO_DMA_UNMAP_FLAG_ALL), Ok(0));
    env.map(0x10_0000, 0x1000).unwrap();
    assert_eq!(env.unmap(0x20_0000, 0x10_0000), Ok(0));
    // The native IOAS_UNMAP would say ENOENT: the translator never asks it.
    assert_eq!(env.shim.backend().calls(Op::IoasUnmap), 0);
});

#[test]
fn unmap_splitting_a_mapping_is_einval_on_v2() {
    let mut env = Env::new(true);
    env.map(0x10_0000, 0x4000).unwrap();
    assert_eq!(env.unmap(0x10_1000, 0x1000), Err(Errno::EINVAL), "inside");
    assert_eq!(env.unmap(0x10_1000, 0x10_0000), Err(Errno::EINVAL), "start inside");
    assert_eq!(env.unmap(0x0f_0000, 0x1_2000), Err(Errno::EINVAL), "end inside");
    assert_eq!(env.mapped(), vec![(0x10_0000, 0x4000)]);
    assert_eq!(env.unmap(0x0f_0000, 0x20_0000), Ok(0x4000), "covering");
}

#[test]
fn unmap_v1_start_inside_a_mapping_is_success_size_0() {
    let mut env = Env::new(false);
    env.map(0x10_0000, 0x4000).unwrap();
    env.map(0x20_0000, 0x1000).unwrap();
    assert_eq!(env.unmap(0x10_1000, 0x1000), Ok(0));
    // Even a range that also covers a later whole mapping unmaps nothing (T1:1490 breaks).
    assert_eq!(env.unmap(0x10_1000, 0x20_0000), Ok(0));
    assert_eq!(env.mapped(), vec![(0x10_0000, 0x4000), (0x20_0000, 0x1000)]);
}

#[test]
fn unmap_v1_covering_a_mappings_start_removes_it_whole() {
    let mut env = Env::new(false);
    env.map(0x10_0000, 0x4000).unwrap();
    env.map(0x20_0000, 0x4000).unwrap();
    assert_eq!(env.unmap(0x10_0000, 0x1000), Ok(0x4000));
    assert_eq!(env.unmap(0x1f_f000, 0x2000), Ok(0x4000), "range ends inside the mapping");
    assert!(env.mapped().is_empty());
    assert!(env
        .shim
        .backend()
        .areas(env.shim.container_iommufd(env.c).unwrap(), vfio_shim::backend::IoasId(1))
        .is_empty());
}

both_versions!(unmap_size_is_bytes_actually_unmapped, |v2| {
    let mut env = Env::new(v2);
    env.map(0x10_0000, 0x1000).unwrap();
    env.map(0x10_2000, 0x2000).unwrap();
    env.map(0x20_0000, 0x1000).unwrap();
    assert_eq!(env.unmap(0x10_0000, 0x10_0000), Ok(0x3000));
    assert_eq!(env.mapped(), vec![(0x20_0000, 0x1000)]);
    // One native unmap for the whole request.
    assert_eq!(env.shim.backend().calls(Op::IoasUnmap), 1);
});

both_versions!(qemu_full_unmap_as_two_halves, |v2| {
    let mut env = Env::new(v2);
    env.map(0, 0x10_0000).unwrap();
    env.map(0x1_0000_0000, 0x10_0000).unwrap();
    assert_eq!(env.unmap(0, 1 << 63), Ok(0x20_0000));
    assert_eq!(env.unmap(1 << 63, 1 << 63), Ok(0));
});

both_versions!(unmap_and_map_with_vaddr_update_the_address, |v2| {
    let mut env = Env::new(v2);
    env.map(0x10_0000, 0x2000).unwrap();
    env.map(0x20_0000, 0x1000).unwrap();
    assert_eq!(env.unmap_flags(0x10_0000, 0x2000, VFIO_DMA_UNMAP_FLAG_VADDR), Ok(0x2000));
    assert_eq!(env.unmap_flags(0x10_0000, 0x2000, VFIO_DMA_UNMAP_FLAG_VADDR), Err(Errno::EINVAL), "twice");
    assert_eq!(env.ext(VFIO_UPDATE_VADDR), 1);
    let upd = vfio_iommu_type1_dma_map {
        argsz: 32,
        flags: VFIO_DMA_MAP_FLAG_VADDR,
        vaddr: 0x5555_0000,
        iova: 0x10_0000,
        size: 0x2000,
    };
    assert_eq!(env.map_raw(vfio_iommu_type1_dma_map { size: 0x1000, ..upd }), Err(Errno::EINVAL), "size differs");
    assert_eq!(
        env.map_raw(vfio_iommu_type1_dma_map { iova: 0x20_0000, size: 0x1000, ..upd }),
        Err(Errno::EINVAL),
        "vaddr valid"
    );
    assert_eq!(env.map_raw(vfio_iommu_type1_dma_map { iova: 0x30_0000, ..upd }), Err(Errno::ENOENT), "nothing there");
    assert_eq!(env.map_raw(upd), Ok(0));
    assert_eq!(env.shim.mappings(env.c)[0].vaddr, 0x5555_0000);
    // Mappings stayed in place the whole time.
    assert_eq!(env.shim.backend().calls(Op::IoasUnmap), 0);
    assert_eq!(env.mapped(), vec![(0x10_0000, 0x2000), (0x20_0000, 0x1000)]);
});

both_versions!(a_live_update_sets_vaddrs_the_old_process_invalidated_after_the_handoff, |v2| {
    // QEMU's cpr-transfer, as it ran on type1 in the VM (programs tier, cpr scenario): the old
    // process sends its container fd (the receiver's view is taken now), then invalidates every
    // vaddr (UNMAP_DMA VADDR|ALL) in its own copy; the new process sets them again
    // (MAP_DMA VADDR), which type1 accepts: one container state for both.
    let mut old = Env::new(v2);
    old.map(0x10_0000, 0x2000).unwrap();
    old.map(0x20_0000, 0x1000).unwrap();
    let exported = old.shim.export_container(old.c).unwrap();
    let group = old.shim.export_group(old.g).unwrap();
    let c = old.shim.import_container(exported.ctx, exported.iommu.clone(), exported.noiommu_driver);
    let g = old.shim.import_group(group.number, group.noiommu, Some(c), group.devices.clone()).unwrap();
    assert_eq!(old.unmap_flags(0, 0, VFIO_DMA_UNMAP_FLAG_VADDR | VFIO_DMA_UNMAP_FLAG_ALL), Ok(0x3000));
    let mut new = Env { shim: old.shim, c, g };
    let upd = vfio_iommu_type1_dma_map {
        argsz: 32,
        flags: VFIO_DMA_MAP_FLAG_VADDR,
        vaddr: 0x7f00_0000_0000,
        iova: 0x10_0000,
        size: 0x2000,
    };
    assert_eq!(new.map_raw(upd), Ok(0));
    assert_eq!(new.map_raw(vfio_iommu_type1_dma_map { iova: 0x20_0000, size: 0x1000, ..upd }), Ok(0));
    // Set by this process: its own state again, so type1's rules apply to it as before.
    assert_eq!(new.map_raw(upd), Err(Errno::EINVAL), "vaddr valid");
    assert_eq!(new.unmap_flags(0x10_0000, 0x2000, VFIO_DMA_UNMAP_FLAG_VADDR), Ok(0x2000));
    assert_eq!(new.unmap_flags(0x10_0000, 0x2000, VFIO_DMA_UNMAP_FLAG_VADDR), Err(Errno::EINVAL), "twice");
    assert_eq!(new.map_raw(upd), Ok(0));
    assert_eq!(new.shim.mappings(c)[0].vaddr, 0x7f00_0000_0000);
    assert_eq!(new.shim.backend().calls(Op::IoasUnmap), 0, "nothing unmapped natively");
});

#[test]
fn set_container_while_vaddr_invalid_is_ebusy() {
    let mut env = Env::new(true);
    env.map(0x10_0000, 0x1000).unwrap();
    env.unmap_flags(0x10_0000, 0x1000, VFIO_DMA_UNMAP_FLAG_VADDR).unwrap();
    let g2 = env.shim.open_group(9).unwrap();
    assert_eq!(env.set_container(g2, 100), Err(Errno::EBUSY));
}

fn dirty(env: &mut Env, flags: u32) -> Result<i64, Errno> {
    env.ioctl_buf(VFIO_IOMMU_DIRTY_PAGES, &mut BufferArg::of(&vfio_iommu_type1_dirty_bitmap { argsz: 8, flags }))
}

#[test]
fn dirty_pages_on_v1_is_eacces() {
    let mut env = Env::new(false);
    assert_eq!(dirty(&mut env, VFIO_IOMMU_DIRTY_PAGES_FLAG_START), Err(Errno::EACCES));
    assert_eq!(dirty(&mut env, 0), Err(Errno::EACCES));
}

#[test]
fn dirty_pages_one_flag_at_a_time() {
    let mut env = Env::new(true);
    assert_eq!(dirty(&mut env, 0), Err(Errno::EINVAL));
    assert_eq!(
        dirty(&mut env, VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP),
        Err(Errno::EINVAL)
    );
    assert_eq!(dirty(&mut env, 1 << 3), Err(Errno::EINVAL));
    assert_eq!(dirty(&mut env, VFIO_IOMMU_DIRTY_PAGES_FLAG_START), Ok(0));
    assert_eq!(dirty(&mut env, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP), Ok(0));
}

fn get_bitmap(env: &mut Env, iova: u64, size: u64, pgsize: u64, prefill: u8) -> Result<Vec<u8>, Errno> {
    let user_base = 0x6000_0000u64;
    let bitmap_bytes = (size / pgsize).div_ceil(64) * 8;
    let get = vfio_iommu_type1_dirty_bitmap_get {
        iova,
        size,
        bitmap: vfio_bitmap { pgsize, size: bitmap_bytes, data: user_base },
    };
    let mut bytes =
        vfio_iommu_type1_dirty_bitmap { argsz: 48, flags: VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP }.as_bytes().to_vec();
    bytes.extend_from_slice(get.as_bytes());
    let mut arg = BufferArg { bytes, user_base, user: vec![prefill; bitmap_bytes as usize] };
    env.ioctl_buf(VFIO_IOMMU_DIRTY_PAGES, &mut arg)?;
    Ok(arg.user)
}

#[test]
fn dirty_bitmap_reports_every_mapped_page_dirty() {
    let mut env = Env::new(true);
    env.map(0x10_0000, 0x3000).unwrap();
    env.map(0x10_5000, 0x1000).unwrap();
    assert_eq!(get_bitmap(&mut env, 0x10_0000, 0x10_0000, 0x1000, 0), Err(Errno::EINVAL), "not started");
    dirty(&mut env, VFIO_IOMMU_DIRTY_PAGES_FLAG_START).unwrap();
    assert_eq!(get_bitmap(&mut env, 0x10_0000, 0x10_0000, 0x2000, 0), Err(Errno::EINVAL), "pgsize");
    assert_eq!(get_bitmap(&mut env, 0x10_1000, 0x10_0000, 0x1000, 0), Err(Errno::EINVAL), "bisects");
    let bits = get_bitmap(&mut env, 0x10_0000, 0x10_0000, 0x1000, 0).unwrap();
    // Pages 0..3 and 5: 0b10_0111. Untouched words stay as the caller left them.
    assert_eq!(bits[0], 0b0010_0111);
    assert!(bits[1..].iter().all(|b| *b == 0));
}

/// type1 in the VM (explorer seed 3, s72797): two dirty pages at bits 2 and 3 of a caller's
/// bitmap pre-filled with 0xa5 give `ad a5 a5 a5 a5 a5 a5 a5`. `update_user_bitmap` ORs the
/// caller's whole first word in when a mapping starts inside it (`bitmap_or` on whole longs),
/// so nothing of the caller's word is cleared.
#[test]
fn dirty_bitmap_ors_the_callers_whole_first_word() {
    report_a_mapping_starting_mid_word(&mut Env::new(true));
}

/// Two dirty pages at bits 2 and 3 of a caller's first word pre-filled with 0xa5: type1's
/// answer (above).
fn report_a_mapping_starting_mid_word(env: &mut Env) {
    env.map(0x10_3000, 0x2000).unwrap();
    dirty(env, VFIO_IOMMU_DIRTY_PAGES_FLAG_START).unwrap();
    let bits = get_bitmap(env, 0x10_1000, 0x4000, 0x1000, 0xa5).unwrap();
    assert_eq!(bits, [0xad, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5]);
}

/// A mapping that starts a word overwrites it (no OR); the words after it that the mapping
/// does not reach stay as the caller left them. The first word's value is type1's in the VM
/// (regressions/dirty-bitmap-word-start.seq).
#[test]
fn dirty_bitmap_overwrites_a_word_a_mapping_starts() {
    let mut env = Env::new(true);
    env.map(0x10_0000, 0x3000).unwrap();
    dirty(&mut env, VFIO_IOMMU_DIRTY_PAGES_FLAG_START).unwrap();
    let bits = get_bitmap(&mut env, 0x10_0000, 0x100_0000, 0x1000, 0xa5).unwrap();
    assert_eq!(&bits[..8], &0b111u64.to_ne_bytes()[..]);
    assert!(bits[8..].iter().all(|b| *b == 0xa5), "words past the last mapping untouched");
}

/// An UNMAP_DMA with GET_DIRTY_BITMAP of `[iova, iova + size)` and an 8-byte caller bitmap
/// of 4 KiB pages pre-filled with `prefill`.
fn unmap_with_bitmap(iova: u64, size: u64, prefill: u8) -> BufferArg {
    let user_base = 0x6000_0000u64;
    let mut bytes = vfio_iommu_type1_dma_unmap { argsz: 48, flags: VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, iova, size }
        .as_bytes()
        .to_vec();
    bytes.extend_from_slice(vfio_bitmap { pgsize: 0x1000, size: 8, data: user_base }.as_bytes());
    BufferArg { bytes, user_base, user: vec![prefill; 8] }
}

#[test]
fn unmap_with_dirty_bitmap_returns_bits_then_unmaps() {
    let mut env = Env::new(true);
    env.map(0x10_0000, 0x2000).unwrap();
    dirty(&mut env, VFIO_IOMMU_DIRTY_PAGES_FLAG_START).unwrap();
    let mut arg = unmap_with_bitmap(0x10_0000, 0x2000, 0);
    assert_eq!(env.ioctl_buf(VFIO_IOMMU_UNMAP_DMA, &mut arg), Ok(0));
    assert_eq!(arg.user[0], 0b11);
    assert_eq!(arg.get::<vfio_iommu_type1_dma_unmap>().size, 0x2000);
    assert!(env.mapped().is_empty());
}

/// type1 in the VM (regressions/dirty-bitmap-merge.seq): type1 reports through each mapping's
/// own buffer, shifted and OR'ed in place, and clears only its low bits after GET_BITMAP, so
/// a second report of the same mapping carries the first one's leftovers.
#[test]
fn a_second_report_carries_what_the_first_left_in_the_mappings_bitmap() {
    let mut env = Env::new(true);
    report_a_mapping_starting_mid_word(&mut env);
    let mut arg = unmap_with_bitmap(0x10_1000, 0x4000, 0xa5);
    assert_eq!(env.ioctl_buf(VFIO_IOMMU_UNMAP_DMA, &mut arg), Ok(0));
    assert_eq!(arg.user, [0xbd, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7]);
}

both_versions!(unknown_ioctl_after_set_iommu_is_enotty, |v2| {
    let mut env = Env::new(v2);
    assert_eq!(env.ioctl_val(0x3b99, 0), Err(Errno::ENOTTY));
    assert_eq!(env.ioctl_val(VFIO_IOMMU_ENABLE, 0), Err(Errno::ENOTTY), "SPAPR only");
    assert_eq!(env.ioctl_val(VFIO_GROUP_GET_STATUS, 0), Err(Errno::ENOTTY));
});

// ---------------------------------------------------------------- group table rows

#[test]
fn group_status_tracks_viability_and_container() {
    let mut shim = Shim::new(backend());
    let c = shim.open_container().unwrap();
    let g = shim.open_group(7).unwrap();
    let mut env = Env { shim, c, g };
    assert_eq!(env.status(g), Ok(VFIO_GROUP_FLAGS_VIABLE));
    env.set_container(g, 100).unwrap();
    assert_eq!(env.status(g), Ok(VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET));
    let mut short = BufferArg::of(&vfio_group_status { argsz: 7, flags: 0 });
    assert_eq!(env.group_ioctl(g, VFIO_GROUP_GET_STATUS, &mut short), Err(Errno::EINVAL));
}

fn pair_device(name: &str, driver: Option<&str>, cdev: Option<&str>) -> GroupDevice {
    GroupDevice { name: name.into(), driver: driver.map(Into::into), cdev: cdev.map(Into::into), sriov: false }
}

// type1 in the VM (regression pair-group): GET_STATUS flags 0 and SET_CONTAINER EPERM while the
// group's virtio-rng is on virtio-pci.
#[test]
fn group_with_a_kernel_driver_is_not_viable_and_cannot_be_set() {
    let devices = vec![
        pair_device(EDU, Some("vfio-pci"), Some("/dev/vfio/devices/vfio0")),
        pair_device("0000:00:03.1", Some("virtio-pci"), None),
    ];
    let mut shim = Shim::new(FakeBackend::new().with_group_devices(7, devices));
    let c = shim.open_container().unwrap();
    let g = shim.open_group(7).unwrap();
    let mut env = Env { shim, c, g };
    assert_eq!(env.status(g), Ok(0));
    assert_eq!(env.set_container(g, 100), Err(Errno::EPERM));
    assert_eq!(env.shim.backend().live_objects().1, 0, "nothing left bound");
}

// type1 in the VM (regression late-binding): a device bound to vfio-pci after SET_CONTAINER
// opens through GET_DEVICE_FD like the others, and keeps the group set until it closes.
#[test]
fn device_bound_after_set_container_joins_the_container() {
    const RNG: &str = "0000:00:03.1";
    let edu = pair_device(EDU, Some("vfio-pci"), Some("/dev/vfio/devices/vfio0"));
    let mut shim = Shim::new(FakeBackend::new().with_group_devices(7, vec![edu.clone(), pair_device(RNG, None, None)]));
    let c = shim.open_container().unwrap();
    let g = shim.open_group(7).unwrap();
    let mut env = Env { shim, c, g };
    env.set_container(g, 100).unwrap();
    env.set_iommu(VFIO_TYPE1v2_IOMMU).unwrap();
    assert_eq!(env.device(g, RNG).err(), Some(Errno::ENODEV), "not a VFIO device yet");
    let late = pair_device(RNG, Some("vfio-pci"), Some("/dev/vfio/devices/vfio1"));
    env.shim.backend_mut().set_group_devices(7, vec![edu, late]);
    let Ok(GroupReply::Device(rng)) = env.device(g, RNG) else { panic!("the late device opens") };
    assert_eq!(env.shim.backend().live_objects().1, 2, "both devices bound");
    assert_eq!(env.unset_container(g).err(), Some(Errno::EBUSY), "its fd holds the group");
    env.shim.close_device(rng);
    env.unset_container(g).unwrap();
    assert_eq!(env.shim.backend().live_objects().1, 0, "nothing left bound");
}

#[test]
fn set_container_bad_fd_already_set_not_a_container() {
    let mut shim = Shim::new(backend());
    let c = shim.open_container().unwrap();
    let g = shim.open_group(7).unwrap();
    let mut env = Env { shim, c, g };
    assert_eq!(env.set_container(g, 55), Err(Errno::EBADF));
    assert_eq!(env.set_container(g, 3), Err(Errno::EBADFD));
    env.set_container(g, 100).unwrap();
    assert_eq!(env.set_container(g, 100), Err(Errno::EINVAL));
    assert_eq!(env.set_container(g, 55), Err(Errno::EBADF), "EBADF comes first");
}

#[test]
fn open_group_twice_is_ebusy_and_unknown_is_enoent() {
    let mut shim = Shim::new(backend());
    let _g = shim.open_group(7).unwrap();
    assert_eq!(shim.open_group(7), Err(Errno::EBUSY));
    assert_eq!(shim.open_group(8), Err(Errno::ENOENT));
}

/// type1 lets one file open a group system-wide: a group another process holds is EBUSY at
/// open (seen in the VM: the explorer's `hold`, and the selftest harness starting a test while
/// a killed one still closes its files), and free again once that process lets go.
#[test]
fn a_group_held_by_another_process_is_ebusy_until_released() {
    let mut shim = Shim::new(backend());
    shim.backend_mut().claim_elsewhere(7, true);
    assert_eq!(shim.open_group(7), Err(Errno::EBUSY));
    shim.backend_mut().claim_elsewhere(7, false);
    let g = shim.open_group(7).unwrap();
    assert!(shim.backend().claimed(7));
    shim.close_group(g);
    assert!(!shim.backend().claimed(7), "the claim goes with the group");
    // A daemon holds the claim for the group it serves: no claim of our own.
    let g = shim.open_group_served(7).unwrap();
    assert!(!shim.backend().claimed(7));
    shim.close_group(g);
}

#[test]
fn unset_container_rules() {
    let mut env = Env::new(true);
    let g = env.g;
    env.map(0x10_0000, 0x1000).unwrap();
    let grant = match env.device(g, EDU).unwrap() {
        GroupReply::Device(d) => d,
        r => panic!("{r:?}"),
    };
    assert_eq!(env.unset_container(g), Err(Errno::EBUSY), "device fd open");
    env.shim.close_device(grant);
    assert_eq!(env.unset_container(g), Ok(GroupReply::Done));
    assert_eq!(env.unset_container(g), Err(Errno::EINVAL), "none set");
    // The last group leaving drops the IOMMU and every mapping.
    assert!(env.mapped().is_empty());
    assert_eq!(env.shim.iommu_version(env.c), None);
    assert_eq!(env.map(0x10_0000, 0x1000), Err(Errno::EINVAL));
    assert_eq!(env.set_iommu(VFIO_TYPE1v2_IOMMU), Err(Errno::EINVAL), "needs a group again");
    assert_eq!(env.shim.backend().device_state(EDU), None, "device closed");
}

#[test]
fn get_device_fd_rules() {
    let mut env = Env::unset();
    let g = env.g;
    assert_eq!(env.device(g, "0000:00:09.0"), Err(Errno::ENODEV), "unknown name");
    assert_eq!(env.device(g, EDU), Err(Errno::EINVAL), "before SET_IOMMU");
    env.set_iommu(VFIO_TYPE1v2_IOMMU).unwrap();
    assert!(matches!(env.device(g, EDU), Ok(GroupReply::Device(_))));
    // A vf_token for a device that is neither an SR-IOV PF nor a VF: type1 (vfio-pci) says
    // EINVAL (explorer, type1 in the VM: `get_device_fd ... name=WithToken` on edu).
    let token = format!("{EDU} vf_token=2ab74924-c335-45f4-9b16-8569e5b08258");
    assert_eq!(env.device(g, &token).err(), Some(Errno::EINVAL), "not a PF or VF");
    assert!(matches!(env.device(g, &format!("{EDU}  ")), Ok(GroupReply::Device(_))), "trailing spaces");
    // A repeated request gets another fd for the same device, as with type1.
    assert!(matches!(env.device(g, EDU), Ok(GroupReply::Device(_))));
    let mut unterminated = BufferArg::new(vec![b'x'; 10]);
    assert_eq!(env.group_ioctl(g, VFIO_GROUP_GET_DEVICE_FD, &mut unterminated), Err(Errno::EFAULT));
    let mut no_nul_in_a_page = BufferArg::new(vec![b'x'; 5000]);
    assert_eq!(env.group_ioctl(g, VFIO_GROUP_GET_DEVICE_FD, &mut no_nul_in_a_page), Err(Errno::EINVAL));
    let mut long = BufferArg::new(vec![b'x'; 5000]);
    long.bytes.push(0);
    assert_eq!(env.group_ioctl(g, VFIO_GROUP_GET_DEVICE_FD, &mut long), Err(Errno::EINVAL), "longer than PAGE_SIZE");
}

#[test]
fn two_groups_share_one_container_and_its_mappings() {
    let mut env = Env::new(true);
    let g2 = env.shim.open_group(9).unwrap();
    env.set_container(g2, 100).unwrap();
    env.map(0x10_0000, 0x1000).unwrap();
    assert_eq!(env.shim.backend().device_state(IVSHMEM).unwrap().1, env.shim.backend().device_state(EDU).unwrap().1);
    let g1 = env.g;
    env.unset_container(g1).unwrap();
    assert_eq!(env.mapped(), vec![(0x10_0000, 0x1000)], "mappings stay with the remaining group");
    env.unset_container(g2).unwrap();
    assert!(env.mapped().is_empty());
}

#[test]
fn second_group_attached_after_set_iommu_is_attached_immediately() {
    let mut env = Env::new(false);
    env.map(0x10_0000, 0x1000).unwrap();
    let g2 = env.shim.open_group(9).unwrap();
    env.set_container(g2, 100).unwrap();
    let (bound, attached) = env.shim.backend().device_state(IVSHMEM).unwrap();
    assert!(bound && attached.is_some());
}

#[test]
fn closed_container_lives_while_groups_hold_it() {
    let mut env = Env::new(true);
    env.map(0x10_0000, 0x1000).unwrap();
    env.shim.close_container(env.c);
    assert_eq!(env.mapped(), vec![(0x10_0000, 0x1000)], "still alive through the group");
    env.shim.close_group(env.g);
    assert_eq!(env.shim.backend().live_objects(), (0, 0), "everything released");
}

#[test]
fn closed_group_lives_while_device_fds_are_open() {
    let mut env = Env::new(true);
    let grant = match env.device(env.g, EDU).unwrap() {
        GroupReply::Device(d) => d,
        r => panic!("{r:?}"),
    };
    env.shim.close_group(env.g);
    assert!(env.shim.backend().device_state(EDU).is_some());
    env.shim.close_device(grant);
    assert_eq!(env.shim.backend().device_state(EDU), None);
    env.shim.close_container(env.c);
    assert_eq!(env.shim.backend().live_objects(), (0, 0));
}

// ------------------------------------------------------ failure injection (rollback)

#[test]
fn bind_failure_at_set_container_leaves_nothing_bound() {
    let mut b = FakeBackend::new().with_group(7, &[EDU, "0000:00:03.1"]);
    b.fail_at(Op::DeviceBind, 1, Errno::EPERM);
    let mut shim = Shim::new(b);
    let c = shim.open_container().unwrap();
    let g = shim.open_group(7).unwrap();
    let mut env = Env { shim, c, g };
    assert_eq!(env.set_container(g, 100), Err(Errno::EPERM));
    assert_eq!(env.shim.backend().live_objects().1, 0);
    assert_eq!(env.status(g), Ok(VFIO_GROUP_FLAGS_VIABLE));
    assert_eq!(env.set_container(g, 100), Ok(GroupReply::Done));
}

#[test]
fn attach_failure_at_set_iommu_rolls_back() {
    let mut env = Env::unset();
    env.shim.backend_mut().fail_at(Op::DeviceAttach, 0, Errno::EINVAL);
    assert_eq!(env.set_iommu(VFIO_TYPE1v2_IOMMU), Err(Errno::EINVAL));
    assert_eq!(env.shim.iommu_version(env.c), None);
    assert_eq!(env.shim.backend().device_state(EDU), Some((true, None)));
    assert_eq!(env.set_iommu(VFIO_TYPE1v2_IOMMU), Ok(0));
}

#[test]
fn native_unmap_failure_keeps_the_ledger() {
    let mut env = Env::new(true);
    env.map(0x10_0000, 0x1000).unwrap();
    env.shim.backend_mut().fail_at(Op::IoasUnmap, 0, Errno::EBUSY);
    assert_eq!(env.unmap(0x10_0000, 0x1000), Err(Errno::EBUSY));
    assert_eq!(env.mapped(), vec![(0x10_0000, 0x1000)]);
    assert_eq!(env.dma_avail(), 65534);
}

#[test]
fn iova_ranges_follow_the_platform() {
    let mut b = backend();
    b.platform = Platform {
        aperture: IovaRange { start: 0, last: (1 << 48) - 1 },
        reserved: vec![IovaRange { start: 0, last: 0xfff }],
        pgsizes: 0x1000,
        coherent: true,
        pin: None,
    };
    let mut env = Env::unset_with(b);
    env.set_iommu(VFIO_TYPE1v2_IOMMU).unwrap();
    let info = env.get_info(256).unwrap();
    let (info_hdr, _) = zerocopy::FromBytes::read_from_prefix(&info.bytes[..])
        .map(|(h, r): (vfio_iommu_type1_info, _)| (h, r))
        .unwrap();
    assert_eq!(info_hdr.iova_pgsizes, 0x1000);
    assert_eq!(env.map(0, 0x1000), Err(Errno::EINVAL));
    assert_eq!(env.map(0x1000, 0x1000), Ok(0));
}

#[test]
fn each_get_device_fd_is_released_by_its_own_close() {
    let mut env = Env::new(true);
    let g = env.g;
    let grant = |r: Result<GroupReply, Errno>| match r.unwrap() {
        GroupReply::Device(d) => d,
        r => panic!("{r:?}"),
    };
    let first = grant(env.device(g, EDU));
    let second = grant(env.device(g, EDU));
    assert_ne!(first, second, "two files, two grants");
    env.shim.close_device(second);
    assert_eq!(env.unset_container(g), Err(Errno::EBUSY), "first still open");
    env.shim.close_device(first);
    assert_eq!(env.unset_container(g), Ok(GroupReply::Done));
}

#[test]
fn joining_group_whose_domain_conflicts_with_mappings_is_einval() {
    // Group 9's IOMMU reserves [0x10_0000, 0x1f_ffff]; a mapping already sits there.
    let mut env = Env::new(true);
    env.map(0x10_0000, 0x1000).unwrap();
    env.shim.backend_mut().platform.reserved.push(IovaRange { start: 0x10_0000, last: 0x1f_ffff });
    let g2 = env.shim.open_group(9).unwrap();
    assert_eq!(env.set_container(g2, 100), Err(Errno::EINVAL));
    assert_eq!(env.shim.backend().device_state(IVSHMEM), None, "nothing left bound");
    assert_eq!(env.mapped(), vec![(0x10_0000, 0x1000)]);
}

// ------------------------------------------- objects shared with another process

both_versions!(releasing_shared_objects_touches_no_kernel_state, |v2| {
    // A fork child's (or a receiver's) view: closing it must not unmap, detach or destroy
    // what the other process still uses, only drop our own references.
    let mut env = Env::new(v2);
    env.map(0x10_0000, 0x1000).unwrap();
    let GroupReply::Device(grant) = env.device(env.g, EDU).unwrap() else { panic!("no device") };
    env.shim.mark_all_shared();
    let before = [Op::IoasUnmap, Op::IoasDestroy, Op::DeviceDetach].map(|op| env.shim.backend().calls(op));
    env.shim.close_device(grant);
    env.shim.close_group(env.g);
    env.shim.close_container(env.c);
    let after = [Op::IoasUnmap, Op::IoasDestroy, Op::DeviceDetach].map(|op| env.shim.backend().calls(op));
    assert_eq!(before, after);
    assert_eq!(env.shim.backend().live_objects(), (0, 0), "our references are closed");
});

both_versions!(an_imported_container_answers_as_the_exporter_does, |v2| {
    let mut env = Env::new(v2);
    env.map(0x10_0000, 0x2000).unwrap();
    let exported = env.shim.export_container(env.c).unwrap();
    let group = env.shim.export_group(env.g).unwrap();
    assert_eq!(group.container, Some(env.c));
    assert_eq!(group.devices.len(), 1);
    let info_before = env.get_info(256).unwrap().bytes;

    // Imported over the same (fake) kernel objects, as a receiver's preload does.
    let c = env.shim.import_container(exported.ctx, exported.iommu.clone(), exported.noiommu_driver);
    let g = env.shim.import_group(group.number, group.noiommu, Some(c), group.devices.clone()).unwrap();
    assert_eq!(env.shim.export_container(c).unwrap(), exported);
    let mut imported = Env { shim: env.shim, c, g };
    assert_eq!(imported.get_info(256).unwrap().bytes, info_before, "GET_INFO byte for byte");
    assert_eq!(imported.mapped(), vec![(0x10_0000, 0x2000)]);
    assert_eq!(imported.map(0x10_1000, 0x1000), Err(Errno::EEXIST));
    assert_eq!(imported.status(g), Ok(VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET));
    assert!(matches!(imported.device(g, EDU), Ok(GroupReply::Device(_))));
    assert_eq!(imported.device(g, "0000:00:09.0"), Err(Errno::ENODEV));
    assert_eq!(imported.shim.import_group(7, false, Some(ContainerId(999)), vec![]), Err(Errno::EBADF));
});

both_versions!(unset_container_on_a_shared_group_acts_on_the_kernel_group, |v2| {
    // UNSET_CONTAINER is an ioctl on the one kernel group all holders share: type1 detaches
    // it for everyone, and the last group leaving drops every mapping.
    let mut env = Env::new(v2);
    env.map(0x10_0000, 0x1000).unwrap();
    env.shim.mark_all_shared();
    let before = [Op::IoasUnmap, Op::IoasDestroy, Op::DeviceDetach].map(|op| env.shim.backend().calls(op));
    env.unset_container(env.g).unwrap();
    let after = [Op::IoasUnmap, Op::IoasDestroy, Op::DeviceDetach].map(|op| env.shim.backend().calls(op));
    assert_eq!(after, before.map(|n| n + 1));
    assert_eq!(env.map(0x10_0000, 0x1000), Err(Errno::EINVAL), "no IOMMU any more");
});

/// A type1v2 container and its group with edu's device fd, then a fork: every object shared.
fn shared_with_edu() -> (Env, GroupId, vfio_shim::DeviceGrant) {
    let mut env = Env::new(true);
    let g = env.g;
    let a = grant(env.device(g, EDU));
    env.shim.mark_all_shared();
    (env, g, a)
}

fn grant(r: Result<GroupReply, Errno>) -> vfio_shim::DeviceGrant {
    match r {
        Ok(GroupReply::Device(g)) => g,
        other => panic!("expected a device, got {other:?}"),
    }
}

/// type1 closes a device (vfio-pci quiesces and resets it) at the last close of its fds and
/// opens it afresh at the next GET_DEVICE_FD; the shim cycles its cdev there (the regression
/// sequence compat-tests/explorer/regressions/device-last-close.seq checks the device state
/// against type1 in the VM).
#[test]
fn a_devices_last_close_closes_and_reopens_it() {
    let mut env = Env::new(true);
    let g = env.g;
    let a = grant(env.device(g, EDU));
    let b = grant(env.device(g, EDU));
    env.shim.close_device(a);
    assert_eq!(env.shim.backend().device_reopens(EDU), 0, "another fd of the device is open");
    env.shim.close_device(b);
    assert_eq!(env.shim.backend().device_reopens(EDU), 1, "its last close");
    let c = grant(env.device(g, EDU));
    assert_eq!(env.shim.backend().device_reopens(EDU), 1, "GET_DEVICE_FD finds it open already");
    env.shim.close_device(c);
    assert_eq!(env.shim.backend().device_reopens(EDU), 2);
}

#[test]
fn a_device_held_by_a_mapping_is_closed_when_the_mapping_is_gone() {
    let mut env = Env::new(true);
    let g = env.g;
    let a = grant(env.device(g, EDU));
    env.shim.backend_mut().set_device_mapped(EDU, true);
    env.shim.close_device(a);
    assert_eq!(env.shim.backend().device_reopens(EDU), 0, "a BAR mapping holds the file");
    assert_eq!(env.unset_container(g).err(), Some(Errno::EBUSY), "the device is still open");
    env.shim.backend_mut().set_device_mapped(EDU, false);
    assert_eq!(env.unset_container(g).err(), None, "munmap was its last close");
    assert_eq!(env.shim.backend().device_reopens(EDU), 0, "UNSET_CONTAINER took the device down");
}

/// explorer, seed 4, s2169 and s25772 (type1 in the VM): after a fork (the group is shared),
/// the device fd closed with its BAR still mapped here: the mapping holds the device file all
/// the same, so UNSET_CONTAINER is EBUSY; the shared group is not cycled at the munmap.
#[test]
fn a_mapping_holds_the_device_of_a_shared_group_too() {
    let (mut env, g, a) = shared_with_edu();
    env.shim.backend_mut().set_device_mapped(EDU, true);
    env.shim.close_device(a);
    assert_eq!(env.unset_container(g).err(), Some(Errno::EBUSY), "the mapping holds the device");
    env.shim.backend_mut().set_device_mapped(EDU, false);
    assert_eq!(env.unset_container(g).err(), None);
    assert_eq!(env.shim.backend().device_reopens(EDU), 0, "a shared group is not cycled");
}

/// explorer, seed 4, s4676 (type1 in the VM; regression shared-group-last-close): after a
/// fork whose child closed what it inherited, the device's last close here is its last close
/// anywhere: type1 quiesces it (bus mastering off at the next open), so the shim cycles it.
#[test]
fn a_shared_groups_device_is_cycled_when_no_other_process_holds_it() {
    let (mut env, g, a) = shared_with_edu();
    env.shim.close_device(a);
    assert_eq!(env.shim.backend().device_reopens(EDU), 1, "the last close quiesced it");
    grant(env.device(g, EDU));
}

/// The other side of s4676: while another process holds the device's file (a fork child that
/// kept it, a handoff's receiver), a close here is not the device's last, and a reopen could
/// not bind (a cdev binds once): the device stays as it is, usable.
#[test]
fn a_shared_groups_device_held_by_another_process_is_left_open() {
    let (mut env, g, a) = shared_with_edu();
    env.shim.backend_mut().set_device_held_elsewhere(EDU, true);
    env.shim.close_device(a);
    assert_eq!(env.shim.backend().device_reopens(EDU), 0);
    let b = grant(env.device(g, EDU));

    // Not knowing is treated as held: cycling a device another file keeps bound would lose it.
    env.shim.backend_mut().set_device_held_elsewhere(EDU, false);
    env.shim.backend_mut().fail_at(Op::DeviceHeldElsewhere, 0, Errno::EACCES);
    env.shim.close_device(b);
    assert_eq!(env.shim.backend().device_reopens(EDU), 0);
    grant(env.device(g, EDU));
}

/// explorer, seed 1, s1556 (type1 in the VM): the group fd closed, then the device fd closed
/// with its BAR still mapped: the device file holds the group, so the container keeps its
/// IOMMU and a MAP succeeds; a second open of the group is EBUSY.
#[test]
fn a_mapped_device_keeps_its_group_on_the_container() {
    let mut env = Env::new(false);
    let g = env.g;
    let a = grant(env.device(g, EDU));
    env.shim.close_group(g);
    env.shim.backend_mut().set_device_mapped(EDU, true);
    env.shim.close_device(a);
    assert_eq!(env.shim.open_group(7).err(), Some(Errno::EBUSY));
    assert_eq!(env.map(0x10_0000, 0x1000), Ok(0));
    env.shim.backend_mut().set_device_mapped(EDU, false);
    assert_eq!(env.map(0x20_0000, 0x1000), Err(Errno::EINVAL), "munmap released the group");
    assert!(env.shim.open_group(7).is_ok());
}

/// explorer, seed 1, s312 (type1 in the VM): the device fd closed with its BAR mapped, the BAR
/// unmapped, then every fd closed: type1 releases the group (a kernel driver can bind one of
/// its devices again at once); closing is the call that sees the mapping gone.
#[test]
fn closing_everything_after_the_munmap_releases_the_device() {
    let mut env = Env::new(true);
    let g = env.g;
    let a = grant(env.device(g, EDU));
    env.shim.backend_mut().set_device_mapped(EDU, true);
    env.shim.close_device(a);
    env.shim.backend_mut().set_device_mapped(EDU, false);
    env.shim.close_group(g);
    assert_eq!(env.shim.backend().live_objects().1, 0, "no device left bound");
    env.shim.close_container(env.c);
    assert!(env.shim.open_group(7).is_ok(), "the group is free");
}

#[test]
fn a_device_that_cannot_be_opened_again_reports_why() {
    let mut env = Env::new(true);
    let g = env.g;
    let a = grant(env.device(g, EDU));
    env.shim.backend_mut().fail_at(Op::DeviceReopen, 0, Errno::ENOMEM);
    env.shim.close_device(a);
    assert_eq!(env.device(g, EDU).err(), Some(Errno::ENOMEM));
    assert_eq!(env.unset_container(g).err(), None, "the group can still be taken down");
}

#[test]
fn closing_the_last_device_fd_of_a_released_group_needs_no_reopen() {
    let mut env = Env::new(true);
    let g = env.g;
    let a = grant(env.device(g, EDU));
    env.shim.close_group(g);
    env.shim.close_device(a);
    assert_eq!(env.shim.backend().device_reopens(EDU), 0, "the group and its device go now");
}

/// GET_PCI_HOT_RESET_INFO and PCI_HOT_RESET on a device of a legacy group: the cdev form the
/// kernel gives a cdev-opened device becomes the group form (group numbers, flags 0), and the
/// reset goes out in the cdev form only once the group fds passed cover every affected
/// device. Every errno is type1's in the VM (compat client hot_reset: edu on the root bus,
/// which no reset reaches, and the pair's edu, whose bus reset reaches the rng too).
#[test]
fn hot_reset_speaks_the_group_form() {
    use vfio_shim::hot_reset::*;
    const PEER: (u16, u8, u8) = (0, 2, 0x10);
    let mut env = Env::new(true);
    let g = env.g;
    let dev = grant(env.device(g, EDU)).handle;
    let info = |env: &mut Env, argsz: u32| {
        let mut arg = BufferArg::new(vec![0u8; argsz.max(12) as usize]);
        arg.bytes[..4].copy_from_slice(&argsz.to_ne_bytes());
        let r = env.shim.device_hot_reset_info(dev, &mut arg);
        (r, arg)
    };
    // The reset: group fds 70 (group 7, ours) and 90 (group 9), 5 another file, 6 closed.
    let g9 = env.shim.open_group(9).unwrap();
    let resolve = |fd: i32| match fd {
        70 => Ok(g),
        90 => Ok(g9),
        5 => Err(Errno::EINVAL),
        _ => Err(Errno::EBADF),
    };
    let reset_with = |env: &mut Env, argsz: u32, flags: u32, count: u32, fds: &[i32]| {
        let mut bytes = vfio_pci_hot_reset_header { argsz, flags, count }.as_bytes().to_vec();
        bytes.extend(fds.iter().flat_map(|f| f.to_ne_bytes()));
        env.shim.device_hot_reset(dev, &mut BufferArg::new(bytes), &resolve)
    };
    let reset = |env: &mut Env, flags: u32, fds: &[i32]| {
        reset_with(env, 12 + 4 * fds.len() as u32, flags, fds.len() as u32, fds)
    };

    // info.edu.*, reset.edu.*: the header checks first, then ENODEV, before any fd is read.
    assert_eq!(info(&mut env, 0).0, Err(Errno::EINVAL));
    assert_eq!(info(&mut env, 11).0, Err(Errno::EINVAL));
    assert_eq!(info(&mut env, 12).0, Err(Errno::ENODEV));
    assert_eq!(info(&mut env, 44).0, Err(Errno::ENODEV));
    assert_eq!(reset(&mut env, 0, &[]), Err(Errno::EINVAL), "count 0 is the cdev form");
    assert_eq!(reset(&mut env, 1, &[70]), Err(Errno::EINVAL));
    assert_eq!(reset(&mut env, 0, &[6]), Err(Errno::ENODEV), "reset.edu.badfd");
    assert_eq!(reset(&mut env, 0, &[70; 5000]), Err(Errno::ENODEV), "reset.edu.huge");
    assert_eq!(reset(&mut env, 0, &[70]), Err(Errno::ENODEV));

    // info.pair.*: ENOSPC writes the count needed back, flags 0 even when the caller set some.
    env.shim.backend_mut().set_reset_scope(EDU, &[((0, 2, 0x08), Some(7)), (PEER, Some(9))]);
    assert_eq!(info(&mut env, 0).0, Err(Errno::EINVAL));
    for argsz in [12, 20] {
        let (r, arg) = info(&mut env, argsz);
        assert_eq!(r, Err(Errno::ENOSPC));
        assert_eq!(arg.get::<vfio_pci_hot_reset_header>(), vfio_pci_hot_reset_header { argsz, flags: 0, count: 2 });
    }
    let (r, arg) = info(&mut env, 28);
    assert_eq!(r, Ok(0));
    assert_eq!(arg.get::<vfio_pci_hot_reset_header>(), vfio_pci_hot_reset_header { argsz: 28, flags: 0, count: 2 });
    let second = vfio_pci_dependent_device::read_from_bytes(&arg.bytes[20..28]).unwrap();
    assert_eq!(second, vfio_pci_dependent_device { id: 9, segment: 0, bus: 2, devfn: 0x10 });

    // reset.pair.*
    assert_eq!(reset(&mut env, 0, &[]), Err(Errno::EINVAL));
    assert_eq!(reset(&mut env, 2, &[70, 90]), Err(Errno::EINVAL));
    assert_eq!(reset_with(&mut env, 11, 0, 1, &[70]), Err(Errno::EINVAL), "argsz short of the header");
    assert_eq!(reset(&mut env, 0, &[6]), Err(Errno::EBADF));
    assert_eq!(reset(&mut env, 0, &[5]), Err(Errno::EINVAL), "not a group file");
    assert_eq!(reset(&mut env, 0, &[90, 6]), Err(Errno::EBADF), "reset.pair.then_badfd");
    assert_eq!(reset(&mut env, 0, &[70, 90, 90]), Err(Errno::EINVAL), "more fds than affected devices");
    assert_eq!(reset(&mut env, 0, &[6, 6, 6]), Err(Errno::EINVAL), "counted before any fd is read");
    assert_eq!(reset(&mut env, 0, &[70]), Err(Errno::EINVAL), "group 9 is affected too");
    assert!(env.shim.backend().hot_resets().is_empty());
    assert_eq!(reset(&mut env, 0, &[90, 70]), Ok(0));
    // reset.pair.argsz_header: the fds are read whatever argsz says.
    assert_eq!(reset_with(&mut env, 12, 0, 2, &[70, 90]), Ok(0));
    assert_eq!(env.shim.backend().hot_resets(), [EDU.to_string(), EDU.to_string()]);
}

/// KVM_SET_DEVICE_ATTR(KVM_DEV_VFIO_FILE) of a group fd: a KVM file of each device cdev
/// instead, all of them; a failed ADD leaves KVM as it was, as a group file's ADD does.
/// type1 in the VM (compat-tests/clients/kvm_vfio.c): ADD twice EEXIST, DEL twice ENOENT.
#[test]
fn kvm_file_add_and_del_of_a_group_name_each_device_cdev() {
    const OTHER: &str = "0000:00:03.1";
    const KVM: i32 = 42;
    let mut env = Env::unset_with(FakeBackend::new().with_group(7, &[EDU, OTHER]));
    let g = env.g;
    env.shim.kvm_group_file(g, KVM, true).unwrap();
    assert_eq!(env.shim.backend().kvm_files(KVM), vec![EDU.to_string(), OTHER.to_string()]);
    assert_eq!(env.shim.kvm_group_file(g, KVM, true), Err(Errno::EEXIST));
    assert_eq!(env.shim.backend().kvm_files(KVM).len(), 2, "EEXIST takes nothing back");
    env.shim.kvm_group_file(g, KVM, false).unwrap();
    assert!(env.shim.backend().kvm_files(KVM).is_empty());
    assert_eq!(env.shim.kvm_group_file(g, KVM, false), Err(Errno::ENOENT));

    // The second device's ADD fails: the first is taken back.
    env.shim.backend_mut().fail_at(Op::KvmDeviceFile, 1, Errno::EINVAL);
    assert_eq!(env.shim.kvm_group_file(g, KVM, true), Err(Errno::EINVAL));
    assert!(env.shim.backend().kvm_files(KVM).is_empty());
    assert_eq!(env.shim.backend().kvm_files_open(), 2, "opened once for the group");
}

/// KVM holds the group's KVM files, not the device's bound file: a device's last close while
/// the group is registered is still its last close, and quiesces it as on type1 (kvm_vfio.c
/// in the VM: bus mastering is off after the reopen on type1).
#[test]
fn a_device_of_a_group_kvm_holds_is_cycled_at_its_last_close() {
    const KVM: i32 = 42;
    let mut env = Env::new(true);
    let g = env.g;
    env.shim.kvm_group_file(g, KVM, true).unwrap();
    let a = grant(env.device(g, EDU));
    env.shim.close_device(a);
    assert_eq!(env.shim.backend().device_reopens(EDU), 1);
    // Still registered: the group's KVM files are KVM's, whatever became of the device's.
    assert_eq!(env.shim.kvm_group_file(g, KVM, true), Err(Errno::EEXIST));
    env.shim.close_group(g);
    assert_eq!(env.shim.backend().kvm_files_open(), 0, "the group's KVM files close with it");
    assert_eq!(env.shim.backend().kvm_files(KVM), vec![EDU.to_string()], "KVM keeps its own reference");
}

/// A MAP or UNMAP in two halves, as the glue runs it to make the pin without its lock: the
/// container is in flight between them, nothing is recorded before the native call, and the
/// caller sees the same answers as in one piece.
#[test]
fn a_dma_call_in_two_halves_records_only_after_its_native_call() {
    use vfio_shim::ContainerStep;
    let mut env = Env::new(true);
    let (c, g9) = (env.c, env.shim.open_group(9).unwrap());
    let map = vfio_iommu_type1_dma_map { argsz: 32, flags: RW, vaddr: 0x7f00_0010_0000, iova: 0x10_0000, size: 0x2000 };
    let mut arg = BufferArg::of(&map);
    let ContainerStep::Native(pending) = env.shim.container_ioctl_begin(c, VFIO_IOMMU_MAP_DMA, 0, &mut arg).unwrap()
    else {
        panic!("a map has a native call");
    };
    assert!(pending.detached().is_none(), "the fake backend runs everything itself");
    assert_eq!(pending.container(), c);
    assert!(env.shim.container_in_flight(c) && env.shim.any_in_flight());
    assert!(env.mapped().is_empty(), "not recorded before the pin");
    // Another container goes on meanwhile.
    let other = env.shim.open_container().unwrap();
    assert!(!env.shim.container_in_flight(other));
    let mut fd = BufferArg::new(5i32.to_ne_bytes().to_vec());
    let set = env.shim.group_ioctl(g9, VFIO_GROUP_SET_CONTAINER, &mut fd, &|_| FdTarget::Container(other));
    assert_eq!(set, Ok(GroupReply::Done));
    assert_eq!(env.shim.container_ioctl_finish(pending, None, &mut arg), Ok(0));
    assert!(!env.shim.any_in_flight());
    assert_eq!(env.mapped(), [(0x10_0000, 0x2000)]);

    // A native call that failed (a detached run's answer) records nothing, and frees the slot.
    let avail = env.dma_avail();
    let map = vfio_iommu_type1_dma_map { iova: 0x20_0000, ..map };
    let mut arg = BufferArg::of(&map);
    let ContainerStep::Native(pending) = env.shim.container_ioctl_begin(c, VFIO_IOMMU_MAP_DMA, 0, &mut arg).unwrap()
    else {
        panic!("a map has a native call");
    };
    assert_eq!(env.shim.container_ioctl_finish(pending, Some(Err(Errno::ENOMEM)), &mut arg), Err(Errno::ENOMEM));
    assert!(!env.shim.any_in_flight());
    assert_eq!(env.mapped(), [(0x10_0000, 0x2000)]);
    assert_eq!(env.dma_avail(), avail);

    // An unmap writes its size back only once its native call is done.
    let mut arg = BufferArg::of(&vfio_iommu_type1_dma_unmap { argsz: 24, flags: 0, iova: 0x10_0000, size: 0x2000 });
    let ContainerStep::Native(pending) = env.shim.container_ioctl_begin(c, VFIO_IOMMU_UNMAP_DMA, 0, &mut arg).unwrap()
    else {
        panic!("an unmap of a mapping has a native call");
    };
    assert_eq!(env.mapped(), [(0x10_0000, 0x2000)], "still mapped until the native call");
    assert_eq!(env.shim.container_ioctl_finish(pending, Some(Ok(0x2000)), &mut arg), Ok(0));
    assert!(env.mapped().is_empty());
    assert_eq!(arg.get::<vfio_iommu_type1_dma_unmap>().size, 0x2000);
    assert_eq!(env.dma_avail(), avail + 1);

    // Calls with no native part are answered at once: an unmap of nothing.
    let mut arg = BufferArg::of(&vfio_iommu_type1_dma_unmap { argsz: 24, flags: 0, iova: 0x10_0000, size: 0x2000 });
    assert!(matches!(env.shim.container_ioctl_begin(c, VFIO_IOMMU_UNMAP_DMA, 0, &mut arg), Ok(ContainerStep::Done(0))));
    assert_eq!(arg.get::<vfio_iommu_type1_dma_unmap>().size, 0);
    assert!(!env.shim.any_in_flight());
}
