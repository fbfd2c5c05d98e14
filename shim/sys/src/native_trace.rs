//! The native calls made on this thread, for `vfio-shim trace`: while tracing is on, every
//! ioctl this layer issues (and the opens and closes of iommufd and cdev files the backend
//! makes) is recorded with its decoded arguments and result, and the glue takes the list at
//! the end of each legacy call. Off (the default), a call costs one relaxed atomic load.

use std::cell::RefCell;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use nix::errno::Errno;

use crate::iommufd::*;
use crate::vfio_device::{vfio_device_attach_iommufd_pt, vfio_device_bind_iommufd, vfio_device_detach_iommufd_pt};

static ON: AtomicBool = AtomicBool::new(false);

thread_local! {
    static CALLS: RefCell<Vec<NativeCall>> = const { RefCell::new(Vec::new()) };
}

/// One native call: what it was and what the kernel answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeCall {
    /// The request with its decoded arguments, e.g. `IOMMU_IOAS_MAP(ioas=2, iova=0x0, ...)`.
    pub call: String,
    /// The return value, or the errno.
    pub result: Result<i64, Errno>,
}

/// Turns recording on for the whole process (it stays on).
pub fn enable() {
    ON.store(true, Relaxed);
}

#[inline]
pub fn enabled() -> bool {
    ON.load(Relaxed)
}

/// The calls recorded on this thread since the last `take`, oldest first.
pub fn take() -> Vec<NativeCall> {
    CALLS.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

/// Records a call when tracing is on; `call` is only built then.
#[inline]
pub(crate) fn record(call: impl FnOnce() -> String, result: Result<i64, Errno>) {
    if enabled() {
        let call = call();
        CALLS.with(|c| c.borrow_mut().push(NativeCall { call, result }));
    }
}

/// An ioctl argument's fields as the trace shows them (inputs and, after the call, outputs).
pub(crate) trait Describe {
    fn describe(&self) -> String;
}

/// The name of a request this layer issues.
pub(crate) fn request_name(request: u32) -> &'static str {
    use crate::vfio_device::*;
    match request {
        IOMMU_DESTROY => "IOMMU_DESTROY",
        IOMMU_IOAS_ALLOC => "IOMMU_IOAS_ALLOC",
        IOMMU_IOAS_ALLOW_IOVAS => "IOMMU_IOAS_ALLOW_IOVAS",
        IOMMU_IOAS_COPY => "IOMMU_IOAS_COPY",
        IOMMU_IOAS_IOVA_RANGES => "IOMMU_IOAS_IOVA_RANGES",
        IOMMU_IOAS_MAP => "IOMMU_IOAS_MAP",
        IOMMU_IOAS_MAP_FILE => "IOMMU_IOAS_MAP_FILE",
        IOMMU_IOAS_UNMAP => "IOMMU_IOAS_UNMAP",
        IOMMU_OPTION => "IOMMU_OPTION",
        IOMMU_VFIO_IOAS => "IOMMU_VFIO_IOAS",
        IOMMU_HWPT_ALLOC => "IOMMU_HWPT_ALLOC",
        IOMMU_GET_HW_INFO => "IOMMU_GET_HW_INFO",
        IOMMU_HWPT_SET_DIRTY_TRACKING => "IOMMU_HWPT_SET_DIRTY_TRACKING",
        IOMMU_HWPT_GET_DIRTY_BITMAP => "IOMMU_HWPT_GET_DIRTY_BITMAP",
        VFIO_DEVICE_BIND_IOMMUFD => "VFIO_DEVICE_BIND_IOMMUFD",
        VFIO_DEVICE_ATTACH_IOMMUFD_PT => "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
        VFIO_DEVICE_DETACH_IOMMUFD_PT => "VFIO_DEVICE_DETACH_IOMMUFD_PT",
        VFIO_DEVICE_GET_PCI_HOT_RESET_INFO => "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
        VFIO_DEVICE_PCI_HOT_RESET => "VFIO_DEVICE_PCI_HOT_RESET",
        VFIO_DEVICE_FEATURE => "VFIO_DEVICE_FEATURE",
        crate::procfs::PROCMAP_QUERY => "PROCMAP_QUERY",
        r if r == vfio_shim::abi::KVM_SET_DEVICE_ATTR => "KVM_SET_DEVICE_ATTR",
        _ => "ioctl",
    }
}

/// `name=value, ...` from pairs, numbers in hex where they are addresses or sizes.
fn fields(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        let _ = write!(out, "{}{k}={v}", if i == 0 { "" } else { ", " });
    }
    out
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

macro_rules! describe {
    ($t:ty, |$c:ident| $($k:literal => $v:expr),* $(,)?) => {
        impl Describe for $t {
            fn describe(&self) -> String {
                let $c = self;
                fields(&[$(($k, $v.to_string())),*])
            }
        }
    };
}

describe!(iommu_ioas_alloc, |c| "out_ioas_id" => c.out_ioas_id);
describe!(iommu_destroy, |c| "id" => c.id);
describe!(iommu_ioas_map, |c| "ioas" => c.ioas_id, "flags" => hex(c.flags.into()), "user_va" => hex(c.user_va),
    "length" => hex(c.length), "iova" => hex(c.iova));
describe!(iommu_ioas_map_file, |c| "ioas" => c.ioas_id, "flags" => hex(c.flags.into()), "fd" => c.fd,
    "start" => hex(c.start), "length" => hex(c.length), "iova" => hex(c.iova));
describe!(iommu_ioas_unmap, |c| "ioas" => c.ioas_id, "iova" => hex(c.iova), "length" => hex(c.length));
describe!(iommu_ioas_iova_ranges, |c| "ioas" => c.ioas_id, "num_iovas" => c.num_iovas,
    "out_iova_alignment" => hex(c.out_iova_alignment));
describe!(iommu_ioas_allow_iovas, |c| "ioas" => c.ioas_id, "num_iovas" => c.num_iovas);
describe!(iommu_ioas_copy, |c| "dst_ioas" => c.dst_ioas_id, "src_ioas" => c.src_ioas_id,
    "length" => hex(c.length), "dst_iova" => hex(c.dst_iova), "src_iova" => hex(c.src_iova));
describe!(iommu_option, |c| "option" => c.option_id, "op" => c.op, "object" => c.object_id, "val64" => c.val64);
describe!(iommu_vfio_ioas, |c| "op" => c.op, "ioas" => c.ioas_id);
describe!(iommu_hwpt_alloc, |c| "flags" => hex(c.flags.into()), "dev_id" => c.dev_id, "pt_id" => c.pt_id,
    "out_hwpt_id" => c.out_hwpt_id);
describe!(iommu_hwpt_set_dirty_tracking, |c| "hwpt" => c.hwpt_id, "flags" => hex(c.flags.into()));
describe!(iommu_hwpt_get_dirty_bitmap, |c| "hwpt" => c.hwpt_id, "iova" => hex(c.iova), "length" => hex(c.length),
    "page_size" => hex(c.page_size));
describe!(iommu_hw_info, |c| "dev_id" => c.dev_id, "data_len" => c.data_len, "out_capabilities" => hex(c.out_capabilities));
describe!(vfio_device_bind_iommufd, |c| "iommufd" => c.iommufd, "out_devid" => c.out_devid);
describe!(vfio_device_attach_iommufd_pt, |c| "pt_id" => c.pt_id);
describe!(vfio_device_detach_iommufd_pt, |c| "flags" => hex(c.flags.into()));
describe!(crate::procfs::procmap_query, |c| "addr" => hex(c.query_addr), "vma_start" => hex(c.vma_start),
    "vma_end" => hex(c.vma_end));
describe!(vfio_shim::abi::kvm_device_attr, |c| "group" => c.group, "attr" => c.attr);
describe!(vfio_shim::hot_reset::vfio_pci_hot_reset_header, |c| "count" => c.count);

/// A buffer the kernel fills (`VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`): its header is shown by the
/// caller's result alone.
impl Describe for u8 {
    fn describe(&self) -> String {
        String::new()
    }
}
