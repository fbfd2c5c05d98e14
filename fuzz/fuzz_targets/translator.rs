//! The core's argument decoders and reply encoders, driven by a caller's raw bytes: a sequence
//! of container and group ioctls (MAP/UNMAP, GET_INFO's capability chain, DIRTY_PAGES' bitmaps,
//! SET_IOMMU, GET_DEVICE_FD names, ...) with fuzzed numbers and argument bytes, on the fake
//! backend, with an IOMMU group and a no-IOMMU group (which the container never takes both of)
//! and CAP_SYS_RAWIO coming and going. Never panics, and the container's mappings stay sorted
//! and disjoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_shim::abi::*;
use vfio_shim::arg::BufferArg;
use vfio_shim::fake::FakeBackend;
use vfio_shim::{FdTarget, GroupReply, Shim};

const CONTAINER_CMDS: [u32; 9] = [
    VFIO_GET_API_VERSION,
    VFIO_CHECK_EXTENSION,
    VFIO_SET_IOMMU,
    VFIO_IOMMU_GET_INFO,
    VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_UNMAP_DMA,
    VFIO_IOMMU_ENABLE,
    VFIO_IOMMU_DIRTY_PAGES,
    VFIO_IOMMU_DISABLE,
];
const GROUP_CMDS: [u32; 4] =
    [VFIO_GROUP_GET_STATUS, VFIO_GROUP_SET_CONTAINER, VFIO_GROUP_UNSET_CONTAINER, VFIO_GROUP_GET_DEVICE_FD];

fuzz_target!(|data: &[u8]| {
    let backend = FakeBackend::new()
        .with_group(7, &["0000:00:03.0", "0000:00:03.1"])
        .with_group(9, &["0000:00:05.0"])
        .with_noiommu_group(3, "0000:00:0a.0");
    let mut shim = Shim::new(backend);
    let Ok(c) = shim.open_container() else { return };
    let Ok(g) = shim.open_group(7) else { return };
    let Ok(n) = shim.open_noiommu_group(3) else { return };
    let resolve = move |fd: i32| if fd == 100 { FdTarget::Container(c) } else { FdTarget::Closed };
    let mut devices = Vec::new();
    let mut rest = data;
    // Each step: [kind, command, arg (8 bytes), len] then `len` argument bytes.
    while rest.len() >= 11 {
        let (head, tail) = rest.split_at(11);
        let len = usize::from(head[10]).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let arg = u64::from_ne_bytes(head[2..10].try_into().unwrap());
        let mut mem = BufferArg::new(bytes.to_vec());
        match head[0] % 4 {
            0 => {
                let cmd = CONTAINER_CMDS[usize::from(head[1]) % CONTAINER_CMDS.len()];
                let _ = shim.container_ioctl(c, cmd, arg, &mut mem);
            }
            1 => {
                let cmd = GROUP_CMDS[usize::from(head[1]) % GROUP_CMDS.len()];
                let group = if head[1] & 0x80 != 0 { n } else { g };
                if let Ok(GroupReply::Device(d)) = shim.group_ioctl(group, cmd, &mut mem, &resolve) {
                    devices.push(d);
                }
            }
            2 => {
                // Any number at all, on either kind of object.
                let cmd = u32::from_ne_bytes(head[2..6].try_into().unwrap());
                let _ = shim.container_ioctl(c, cmd, arg, &mut mem);
                let _ = shim.group_ioctl(g, cmd, &mut mem, &resolve);
                let _ = shim.group_ioctl(n, cmd, &mut mem, &resolve);
            }
            _ if head[1] & 0x80 != 0 => shim.backend_mut().set_rawio(head[1] & 1 != 0),
            _ => {
                if let Some(d) = devices.pop() {
                    shim.close_device(d);
                }
            }
        }
        let maps = shim.mappings(c);
        for w in maps.windows(2) {
            assert!(w[0].iova.checked_add(w[0].size).is_some_and(|end| end <= w[1].iova), "overlap: {w:?}");
        }
    }
    for d in devices {
        shim.close_device(d);
    }
    shim.close_group(g);
    shim.close_group(n);
    shim.close_container(c);
});
