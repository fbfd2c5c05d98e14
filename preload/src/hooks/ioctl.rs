//! `ioctl`: container and group requests go to the core; a device fd is the kernel's except for
//! the two hot-reset requests that carry groups; KVM's `KVM_SET_DEVICE_ATTR` naming a group
//! file is handed to the core, which names the group's device cdevs instead.

use crate::*;
use vfio_shim::trace::Node;

const KVM_SET_DEVICE_ATTR: c_ulong = vfio_shim::abi::KVM_SET_DEVICE_ATTR as c_ulong;

/// # Safety
/// As `ioctl(2)`: `arg` is what `req` expects.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    let kind = table::kind(fd);
    if kind == Kind::None || inside() {
        if req == KVM_SET_DEVICE_ATTR && !inside() {
            return kvm_set_device_attr(fd, arg);
        }
        // SAFETY: forwarding the caller's arguments.
        return unsafe { (real().ioctl)(fd, req, arg) };
    }
    let node = match kind {
        Kind::Container => Node::Container,
        Kind::Group => Node::Group,
        _ => Node::Device,
    };
    match kind {
        Kind::Internal => not_open(),
        // The VFS answers these before any driver; our container and group files are
        // character devices on devtmpfs like type1's, so the kernel answers them the same.
        Kind::Container | Kind::Group if vfio_shim::abi::is_generic_vfs_ioctl(req as u32) => {
            // SAFETY: forwarding the caller's arguments to the caller's own fd.
            unsafe { (real().ioctl)(fd, req, arg) }
        }
        // Device fds are real cdevs: the kernel serves them, except the two requests that
        // carry group ids or group fds.
        Kind::Device => match req as u32 {
            vfio_shim::abi::VFIO_DEVICE_GET_PCI_HOT_RESET_INFO => trace::traced(
                || trace::describe_ioctl(node, fd, req as u32, arg),
                || emulate(|s| s.hot_reset_info(fd, arg)),
            ),
            vfio_shim::abi::VFIO_DEVICE_PCI_HOT_RESET => {
                trace::traced(|| trace::describe_ioctl(node, fd, req as u32, arg), || emulate(|s| s.hot_reset(fd, arg)))
            }
            // SAFETY: forwarding the caller's arguments.
            _ => unsafe { (real().ioctl)(fd, req, arg) },
        },
        Kind::Container => trace::traced(
            || trace::describe_ioctl(node, fd, req as u32, arg),
            || emulate_locked(|guard| crate::dma::container_ioctl(guard, fd, req as u32, arg)),
        ),
        _ => trace::traced(
            || trace::describe_ioctl(node, fd, req as u32, arg),
            || {
                emulate(|s| match s.object(fd) {
                    Some(Object::Group(id)) => s.closing(|s| s.group_ioctl(id, req as u32, arg)),
                    _ => Err(Errno::EBADF),
                })
            },
        ),
    }
}

/// KVM's VFIO device learns about groups for coherency and (on some platforms) interrupt
/// bypass. An emulated group is not a file KVM knows, so `FILE_ADD`/`FILE_DEL` of one becomes
/// the same request for each of the group's device cdevs (which KVM accepts since 6.6).
fn kvm_set_device_attr(fd: c_int, arg: c_ulong) -> c_int {
    use vfio_shim::abi::{kvm_device_attr, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, KVM_DEV_VFIO_FILE_DEL};
    use zerocopy::FromBytes;
    // SAFETY: `arg` is the program's own argument for the request it made.
    let mut mem = unsafe { OwnMemory::new(arg) };
    let passthrough = |a: c_ulong| {
        // SAFETY: forwarding the program's own request and argument.
        unsafe { (real().ioctl)(fd, KVM_SET_DEVICE_ATTR, a) }
    };
    let Ok(attr) = vfio_shim::arg::read_struct::<kvm_device_attr>(&mut mem, 0) else {
        return passthrough(arg);
    };
    if attr.group != KVM_DEV_VFIO_FILE || !(attr.attr == KVM_DEV_VFIO_FILE_ADD || attr.attr == KVM_DEV_VFIO_FILE_DEL) {
        return passthrough(arg);
    }
    let mut file_fd = [0u8; 4];
    if mem.read_user(attr.addr, &mut file_fd).is_err() {
        return passthrough(arg);
    }
    let file_fd = i32::read_from_bytes(&file_fd).expect("4 bytes");
    if table::kind(file_fd) != Kind::Group {
        return passthrough(arg);
    }
    trace::traced(
        || trace::describe_ioctl(Node::Kvm, fd, KVM_SET_DEVICE_ATTR as u32, arg),
        || {
            emulate(|s| {
                let Some(Object::Group(g)) = s.object(file_fd) else {
                    return Err(Errno::EBADF);
                };
                s.shim.kvm_group_file(g, fd, attr.attr == KVM_DEV_VFIO_FILE_ADD).map(|()| 0)
            })
        },
    )
}
