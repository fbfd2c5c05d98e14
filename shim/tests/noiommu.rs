//! The legacy no-IOMMU API (`/dev/vfio/noiommu-<N>`, `VFIO_NOIOMMU_IOMMU`) over the fake
//! backend. Every expected value is what the full 7.3 kernel's legacy no-IOMMU mode answered
//! in the VM (compat-tests/clients/noiommu/noiommu_dma.c, full/type1, vm.sh VM_NOIOMMU=1).
#![allow(non_upper_case_globals)]

use vfio_shim::abi::*;
use vfio_shim::arg::BufferArg;
use vfio_shim::fake::FakeBackend;
use vfio_shim::{ContainerId, Errno, FdTarget, GroupId, GroupReply, Shim};

const EDU: &str = "0000:00:0a.0";
const EXTENSIONS: [u64; 6] =
    [VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU, VFIO_UNMAP_ALL, VFIO_NOIOMMU_IOMMU, VFIO_UPDATE_VADDR, VFIO_DMA_CC_IOMMU];

fn shim() -> Shim<FakeBackend> {
    Shim::new(FakeBackend::new().with_noiommu_group(0, EDU))
}

fn resolve_to(c: ContainerId) -> impl Fn(i32) -> FdTarget {
    move |fd| if fd == 100 { FdTarget::Container(c) } else { FdTarget::Closed }
}

fn extensions(shim: &mut Shim<FakeBackend>, c: ContainerId) -> Vec<i64> {
    EXTENSIONS
        .iter()
        .map(|e| shim.container_ioctl(c, VFIO_CHECK_EXTENSION, *e, &mut BufferArg::default()).unwrap())
        .collect()
}

fn set_iommu(shim: &mut Shim<FakeBackend>, c: ContainerId, ty: u64) -> Result<i64, Errno> {
    shim.container_ioctl(c, VFIO_SET_IOMMU, ty, &mut BufferArg::default())
}

fn set_container(shim: &mut Shim<FakeBackend>, g: GroupId, c: ContainerId) -> Result<GroupReply, Errno> {
    shim.group_ioctl(g, VFIO_GROUP_SET_CONTAINER, &mut BufferArg::of(&100i32), &resolve_to(c))
}

fn get_device(shim: &mut Shim<FakeBackend>, g: GroupId, name: &str) -> Result<GroupReply, Errno> {
    let mut arg = BufferArg::new(format!("{name}\0").into_bytes());
    shim.group_ioctl(g, VFIO_GROUP_GET_DEVICE_FD, &mut arg, &|_| FdTarget::Closed)
}

fn status(shim: &mut Shim<FakeBackend>, g: GroupId) -> u32 {
    let mut arg = BufferArg::of(&vfio_group_status { argsz: 8, flags: 0 });
    shim.group_ioctl(g, VFIO_GROUP_GET_STATUS, &mut arg, &|_| FdTarget::Closed).unwrap();
    arg.get::<vfio_group_status>().flags
}

#[test]
fn the_whole_legacy_sequence_answers_as_the_noiommu_driver() {
    let mut shim = shim();
    let c = shim.open_container().unwrap();
    // ext.empty.*: type1 polls every driver, the no-IOMMU one says 1 to its type.
    assert_eq!(extensions(&mut shim, c), [1, 1, 1, 1, 0, 0]);
    assert_eq!(shim.open_group(0), Err(Errno::ENOENT)); // open.group.iommu_name
    let g = shim.open_noiommu_group(0).unwrap();
    assert_eq!(shim.open_noiommu_group(0), Err(Errno::EBUSY)); // open.group.again
    assert_eq!(status(&mut shim, g), 0x1); // status.unset
    assert_eq!(get_device(&mut shim, g, EDU), Err(Errno::EINVAL)); // get_device_fd.unset
    assert_eq!(set_iommu(&mut shim, c, VFIO_NOIOMMU_IOMMU), Err(Errno::EINVAL)); // set_iommu.no_group
    set_container(&mut shim, g, c).unwrap();
    assert_eq!(set_container(&mut shim, g, c), Err(Errno::EINVAL)); // set_container.again
    assert_eq!(status(&mut shim, g), 0x3); // status.set
                                           // ext.group_set.*: only the no-IOMMU driver may serve the container now.
    assert_eq!(extensions(&mut shim, c), [0, 0, 0, 1, 0, 0]);
    assert_eq!(get_device(&mut shim, g, EDU), Err(Errno::EINVAL)); // get_device_fd.no_iommu_set
    let mut info = BufferArg::of(&vfio_iommu_type1_info { argsz: 16, ..Default::default() });
    assert_eq!(shim.container_ioctl(c, VFIO_IOMMU_GET_INFO, 0, &mut info), Err(Errno::EINVAL));
    for ty in [VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU, 99] {
        assert_eq!(set_iommu(&mut shim, c, ty), Err(Errno::ENODEV), "set_iommu {ty}");
    }
    set_iommu(&mut shim, c, VFIO_NOIOMMU_IOMMU).unwrap();
    assert_eq!(set_iommu(&mut shim, c, VFIO_NOIOMMU_IOMMU), Err(Errno::EINVAL)); // set_iommu.again
    assert_eq!(extensions(&mut shim, c), [0, 0, 0, 1, 0, 0]);
    // No DMA mapping at all: every other container ioctl is ENOTTY.
    for cmd in [VFIO_IOMMU_GET_INFO, VFIO_IOMMU_MAP_DMA, VFIO_IOMMU_UNMAP_DMA, VFIO_IOMMU_DIRTY_PAGES, VFIO_BASE + 60] {
        let mut arg = BufferArg::new(vec![0u8; 64]);
        assert_eq!(shim.container_ioctl(c, cmd, 0, &mut arg), Err(Errno::ENOTTY), "{cmd:#x}");
    }
    let Ok(GroupReply::Device(grant)) = get_device(&mut shim, g, EDU) else { panic!("GET_DEVICE_FD") };
    assert_eq!(get_device(&mut shim, g, "0000:ff:1f.7"), Err(Errno::ENODEV)); // get_device_fd.missing
    assert_eq!(shim.backend().noiommu_opens(), [EDU]);
    // The device is bound to the container's iommufd and attached to nothing.
    assert_eq!(shim.backend().device_state(EDU), Some((true, None)));
    shim.close_device(grant);
    shim.group_ioctl(g, VFIO_GROUP_UNSET_CONTAINER, &mut BufferArg::default(), &|_| FdTarget::Closed).unwrap();
    assert_eq!(status(&mut shim, g), 0x1); // status.unset_again
    assert_eq!(extensions(&mut shim, c), [1, 1, 1, 1, 0, 0]); // ext.group_unset.*
    shim.close_group(g);
    shim.close_container(c);
    assert!(!shim.backend().noiommu_claimed(0));
    assert_eq!(shim.backend().live_objects(), (0, 0));
}

#[test]
fn every_noiommu_step_wants_cap_sys_rawio() {
    let mut shim = shim();
    let c = shim.open_container().unwrap();
    shim.backend_mut().set_rawio(false);
    assert_eq!(shim.open_noiommu_group(0), Err(Errno::EPERM)); // open.group.norawio
    shim.backend_mut().set_rawio(true);
    let g = shim.open_noiommu_group(0).unwrap();
    shim.backend_mut().set_rawio(false);
    assert_eq!(set_container(&mut shim, g, c), Err(Errno::EPERM)); // set_container.norawio
    shim.backend_mut().set_rawio(true);
    set_container(&mut shim, g, c).unwrap();
    shim.backend_mut().set_rawio(false);
    assert_eq!(set_iommu(&mut shim, c, VFIO_NOIOMMU_IOMMU), Err(Errno::EPERM)); // set_iommu.norawio
                                                                                // The type is looked at first: ENODEV, not EPERM, for another one (set_iommu.type1v2.norawio).
    assert_eq!(set_iommu(&mut shim, c, VFIO_TYPE1v2_IOMMU), Err(Errno::ENODEV));
    shim.backend_mut().set_rawio(true);
    set_iommu(&mut shim, c, VFIO_NOIOMMU_IOMMU).unwrap();
    shim.backend_mut().set_rawio(false);
    assert_eq!(get_device(&mut shim, g, EDU), Err(Errno::EPERM)); // get_device_fd.norawio
    assert!(shim.backend().noiommu_opens().is_empty());
    // Only the device's first open checks (explorer, no-IOMMU machine, seed 1, s33, and
    // get_device_fd.open.norawio): another file of an open device comes without the capability.
    shim.backend_mut().set_rawio(true);
    let Ok(GroupReply::Device(first)) = get_device(&mut shim, g, EDU) else { panic!("GET_DEVICE_FD") };
    shim.backend_mut().set_rawio(false);
    let Ok(GroupReply::Device(second)) = get_device(&mut shim, g, EDU) else { panic!("second GET_DEVICE_FD") };
    // The last close without the capability: the shim's reopen of the cdev is refused, and
    // made again at the next open, which type1 makes there anyway (get_device_fd.closed.norawio,
    // get_device_fd.reopen).
    shim.close_device(first);
    shim.close_device(second);
    assert_eq!(get_device(&mut shim, g, EDU), Err(Errno::EPERM));
    shim.backend_mut().set_rawio(true);
    assert!(matches!(get_device(&mut shim, g, EDU), Ok(GroupReply::Device(_))));
}

#[test]
fn a_container_closed_under_its_noiommu_group_lives_on() {
    let mut shim = shim();
    let c = shim.open_container().unwrap();
    let g = shim.open_noiommu_group(0).unwrap();
    set_container(&mut shim, g, c).unwrap();
    set_iommu(&mut shim, c, VFIO_NOIOMMU_IOMMU).unwrap();
    shim.close_container(c);
    assert_eq!(status(&mut shim, g), 0x3); // status.container_closed
    shim.close_group(g);
    assert_eq!(shim.backend().live_objects(), (0, 0));
}

#[test]
fn without_the_mode_the_noiommu_type_is_refused() {
    let mut shim = shim();
    let c = shim.open_container().unwrap();
    let g = shim.open_noiommu_group(0).unwrap();
    set_container(&mut shim, g, c).unwrap();
    // The parameter is read at each call (it is writable at run time).
    shim.backend_mut().set_noiommu_mode(false);
    assert_eq!(extensions(&mut shim, c), [0, 0, 0, 0, 0, 0]);
    assert_eq!(set_iommu(&mut shim, c, VFIO_NOIOMMU_IOMMU), Err(Errno::ENODEV));
}

/// vm.sh's mixed machine (compat-tests/clients/mixed/mixed_groups.c, full/type1): an IOMMU
/// group and a no-IOMMU group never share a container, in either order.
#[test]
fn iommu_and_noiommu_groups_never_mix() {
    let mut shim =
        Shim::new(FakeBackend::new().with_group(10, &["0000:00:0a.0"]).with_noiommu_group(18, "0000:41:00.0"));
    let gi = shim.open_group(10).unwrap();
    let gn = shim.open_noiommu_group(18).unwrap();
    let c = shim.open_container().unwrap();
    let ext = |shim: &mut Shim<FakeBackend>| -> Vec<i64> {
        [VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU, VFIO_NOIOMMU_IOMMU]
            .iter()
            .map(|e| shim.container_ioctl(c, VFIO_CHECK_EXTENSION, *e, &mut BufferArg::default()).unwrap())
            .collect()
    };
    let unset = |shim: &mut Shim<FakeBackend>, g| {
        shim.group_ioctl(g, VFIO_GROUP_UNSET_CONTAINER, &mut BufferArg::default(), &|_| FdTarget::Closed)
    };
    assert_eq!(ext(&mut shim), [1, 1, 1]);
    // The IOMMU group first.
    set_container(&mut shim, gi, c).unwrap();
    assert_eq!(ext(&mut shim), [1, 1, 0]);
    assert_eq!(set_container(&mut shim, gn, c), Err(Errno::EPERM));
    assert_eq!(set_iommu(&mut shim, c, VFIO_NOIOMMU_IOMMU), Err(Errno::ENODEV));
    set_iommu(&mut shim, c, VFIO_TYPE1v2_IOMMU).unwrap();
    assert_eq!(set_container(&mut shim, gn, c), Err(Errno::EPERM));
    assert_eq!(status(&mut shim, gn), 0x1);
    unset(&mut shim, gi).unwrap();
    assert_eq!(ext(&mut shim), [1, 1, 1]);
    // Then the no-IOMMU group first, on the same container.
    set_container(&mut shim, gn, c).unwrap();
    assert_eq!(ext(&mut shim), [0, 0, 1]);
    assert_eq!(set_container(&mut shim, gi, c), Err(Errno::EPERM));
    assert_eq!(set_iommu(&mut shim, c, VFIO_TYPE1_IOMMU), Err(Errno::ENODEV));
    set_iommu(&mut shim, c, VFIO_NOIOMMU_IOMMU).unwrap();
    assert_eq!(set_container(&mut shim, gi, c), Err(Errno::EPERM));
    assert_eq!(status(&mut shim, gi), 0x1);
    assert_eq!(ext(&mut shim), [0, 0, 1]);
    unset(&mut shim, gn).unwrap();
    // Emptied again: the IOMMU group and type1 are back.
    set_container(&mut shim, gi, c).unwrap();
    set_iommu(&mut shim, c, VFIO_TYPE1v2_IOMMU).unwrap();
    assert_eq!(ext(&mut shim), [1, 1, 0]);
}
