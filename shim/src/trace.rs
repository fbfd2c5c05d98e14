//! How `vfio-shim trace` shows a legacy call: its name and arguments decoded from the
//! caller's memory (read only, no side effect), and the trace line that holds it with its
//! result, the native calls it became and its duration, as text or as a JSON object.
#![allow(non_upper_case_globals)] // uAPI constant names, matched verbatim

use nix::errno::Errno;

use crate::abi::*;
use crate::arg::{read_struct, ArgMemory};

/// The kind of file a legacy request was made on: the same number means different requests
/// on a container and on a device (`VFIO_IOMMU_GET_INFO` is `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Container,
    Group,
    Device,
    /// A KVM device fd (`KVM_SET_DEVICE_ATTR` naming a group).
    Kvm,
}

/// The request's uAPI name, or `None` for a number the node does not know.
pub fn request_name(node: Node, req: u32) -> Option<&'static str> {
    Some(match (node, req) {
        (Node::Container | Node::Group, VFIO_GET_API_VERSION) => "VFIO_GET_API_VERSION",
        (Node::Container | Node::Group, VFIO_CHECK_EXTENSION) => "VFIO_CHECK_EXTENSION",
        (Node::Container, VFIO_SET_IOMMU) => "VFIO_SET_IOMMU",
        (Node::Container, VFIO_IOMMU_GET_INFO) => "VFIO_IOMMU_GET_INFO",
        (Node::Container, VFIO_IOMMU_MAP_DMA) => "VFIO_IOMMU_MAP_DMA",
        (Node::Container, VFIO_IOMMU_UNMAP_DMA) => "VFIO_IOMMU_UNMAP_DMA",
        (Node::Container, VFIO_IOMMU_ENABLE) => "VFIO_IOMMU_ENABLE",
        (Node::Container, VFIO_IOMMU_DISABLE) => "VFIO_IOMMU_DISABLE",
        (Node::Container, VFIO_IOMMU_DIRTY_PAGES) => "VFIO_IOMMU_DIRTY_PAGES",
        (Node::Group, VFIO_GROUP_GET_STATUS) => "VFIO_GROUP_GET_STATUS",
        (Node::Group, VFIO_GROUP_SET_CONTAINER) => "VFIO_GROUP_SET_CONTAINER",
        (Node::Group, VFIO_GROUP_UNSET_CONTAINER) => "VFIO_GROUP_UNSET_CONTAINER",
        (Node::Group, VFIO_GROUP_GET_DEVICE_FD) => "VFIO_GROUP_GET_DEVICE_FD",
        (Node::Device, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO) => "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
        (Node::Device, VFIO_DEVICE_PCI_HOT_RESET) => "VFIO_DEVICE_PCI_HOT_RESET",
        (Node::Kvm, KVM_SET_DEVICE_ATTR) => "KVM_SET_DEVICE_ATTR",
        _ => return None,
    })
}

fn flag_names(flags: u32, names: &[(u32, &str)]) -> String {
    let mut parts: Vec<String> = names.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, n)| n.to_string()).collect();
    let rest = names.iter().fold(flags, |f, (bit, _)| f & !bit);
    if rest != 0 || parts.is_empty() {
        parts.push(format!("{rest:#x}"));
    }
    parts.join("|")
}

fn extension_name(ext: u64) -> String {
    let name = match ext {
        VFIO_TYPE1_IOMMU => "VFIO_TYPE1_IOMMU",
        VFIO_SPAPR_TCE_IOMMU => "VFIO_SPAPR_TCE_IOMMU",
        VFIO_TYPE1v2_IOMMU => "VFIO_TYPE1v2_IOMMU",
        VFIO_DMA_CC_IOMMU => "VFIO_DMA_CC_IOMMU",
        VFIO_EEH => "VFIO_EEH",
        __VFIO_RESERVED_TYPE1_NESTING_IOMMU => "VFIO_TYPE1_NESTING_IOMMU",
        VFIO_SPAPR_TCE_v2_IOMMU => "VFIO_SPAPR_TCE_v2_IOMMU",
        VFIO_NOIOMMU_IOMMU => "VFIO_NOIOMMU_IOMMU",
        VFIO_UNMAP_ALL => "VFIO_UNMAP_ALL",
        VFIO_UPDATE_VADDR => "VFIO_UPDATE_VADDR",
        _ => return ext.to_string(),
    };
    name.to_string()
}

/// `NAME(fd=N, args...)` for an ioctl on one of the shim's files. Arguments the call reads
/// from memory are read through `mem`; an unreadable one shows as `arg=<address> (unreadable)`,
/// and the call itself then fails as type1 fails it.
pub fn describe_ioctl(node: Node, fd: i32, req: u32, arg: u64, mem: &mut dyn ArgMemory) -> String {
    let Some(name) = request_name(node, req) else {
        return format!("ioctl(fd={fd}, request={req:#x}, arg={arg:#x})");
    };
    let args = decode_args(node, req, arg, mem).unwrap_or_else(|_| format!("arg={arg:#x} (unreadable)"));
    if args.is_empty() {
        format!("{name}(fd={fd})")
    } else {
        format!("{name}(fd={fd}, {args})")
    }
}

fn decode_args(node: Node, req: u32, arg: u64, mem: &mut dyn ArgMemory) -> Result<String, Errno> {
    let map_flags =
        [(VFIO_DMA_MAP_FLAG_READ, "READ"), (VFIO_DMA_MAP_FLAG_WRITE, "WRITE"), (VFIO_DMA_MAP_FLAG_VADDR, "VADDR")];
    let unmap_flags = [
        (VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, "GET_DIRTY_BITMAP"),
        (VFIO_DMA_UNMAP_FLAG_ALL, "ALL"),
        (VFIO_DMA_UNMAP_FLAG_VADDR, "VADDR"),
    ];
    Ok(match (node, req) {
        (_, VFIO_GET_API_VERSION | VFIO_IOMMU_ENABLE | VFIO_IOMMU_DISABLE | VFIO_GROUP_UNSET_CONTAINER)
            if node != Node::Device =>
        {
            String::new()
        }
        (Node::Container | Node::Group, VFIO_CHECK_EXTENSION) | (Node::Container, VFIO_SET_IOMMU) => {
            extension_name(arg)
        }
        (Node::Container, VFIO_IOMMU_GET_INFO) => {
            let argsz: u32 = read_struct(mem, 0)?;
            format!("argsz={argsz}")
        }
        (Node::Container, VFIO_IOMMU_MAP_DMA) => {
            let m: vfio_iommu_type1_dma_map = read_struct(mem, 0)?;
            format!(
                "argsz={}, flags={}, vaddr={:#x}, iova={:#x}, size={:#x}",
                m.argsz,
                flag_names(m.flags, &map_flags),
                m.vaddr,
                m.iova,
                m.size
            )
        }
        (Node::Container, VFIO_IOMMU_UNMAP_DMA) => {
            let u: vfio_iommu_type1_dma_unmap = read_struct(mem, 0)?;
            format!(
                "argsz={}, flags={}, iova={:#x}, size={:#x}",
                u.argsz,
                flag_names(u.flags, &unmap_flags),
                u.iova,
                u.size
            )
        }
        (Node::Container, VFIO_IOMMU_DIRTY_PAGES) => {
            let d: vfio_iommu_type1_dirty_bitmap = read_struct(mem, 0)?;
            let names = [
                (VFIO_IOMMU_DIRTY_PAGES_FLAG_START, "START"),
                (VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP, "STOP"),
                (VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP, "GET_BITMAP"),
            ];
            format!("argsz={}, flags={}", d.argsz, flag_names(d.flags, &names))
        }
        (Node::Group, VFIO_GROUP_GET_STATUS) => {
            let argsz: u32 = read_struct(mem, 0)?;
            format!("argsz={argsz}")
        }
        (Node::Group, VFIO_GROUP_SET_CONTAINER) => {
            let container: i32 = read_struct(mem, 0)?;
            format!("container={container}")
        }
        (Node::Group, VFIO_GROUP_GET_DEVICE_FD) => {
            let name = mem.read_cstr(256)?;
            format!("\"{}\"", String::from_utf8_lossy(&name).escape_default())
        }
        (Node::Device, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO) => {
            let argsz: u32 = read_struct(mem, 0)?;
            format!("argsz={argsz}")
        }
        (Node::Device, VFIO_DEVICE_PCI_HOT_RESET) => {
            let h: [u32; 3] = read_struct(mem, 0)?;
            format!("argsz={}, count={}", h[0], h[2])
        }
        (Node::Kvm, KVM_SET_DEVICE_ATTR) => {
            let a: kvm_device_attr = read_struct(mem, 0)?;
            let mut fd = [0u8; 4];
            mem.read_user(a.addr, &mut fd)?;
            let op = match a.attr {
                KVM_DEV_VFIO_FILE_ADD => "FILE_ADD",
                KVM_DEV_VFIO_FILE_DEL => "FILE_DEL",
                _ => "?",
            };
            format!("KVM_DEV_VFIO_FILE, {op}, fd={}", i32::from_ne_bytes(fd))
        }
        _ => String::new(),
    })
}

/// `open("/dev/vfio/vfio", O_RDWR|...)`: the flags as the program passed them.
pub fn describe_open(path: &[u8], flags: i32) -> String {
    format!("open(\"{}\", flags={flags:#o})", String::from_utf8_lossy(path).escape_default())
}

/// One native call under a legacy call: what it was and what the kernel answered.
pub struct Native<'a> {
    pub call: &'a str,
    pub result: Result<i64, Errno>,
}

/// One trace line: the legacy call, its result, the native calls it became and its duration.
pub struct Line<'a> {
    /// Wall-clock time of the call's start: seconds and microseconds since the epoch.
    pub time: (u64, u32),
    pub pid: i32,
    pub call: &'a str,
    /// The value the program got, and the errno with it when that is -1.
    pub result: i64,
    pub errno: Option<Errno>,
    pub natives: &'a [Native<'a>],
    pub micros: u64,
}

fn result_text(result: Result<i64, Errno>) -> String {
    match result {
        Ok(v) => v.to_string(),
        // nix's Debug of an Errno is its name (EINVAL), as strace prints it.
        Err(e) => format!("-1 {e:?}"),
    }
}

impl Line<'_> {
    fn result(&self) -> Result<i64, Errno> {
        match self.errno {
            Some(e) if self.result < 0 => Err(e),
            _ => Ok(self.result),
        }
    }

    /// `TIME pid=PID CALL = RESULT <DURATION us> [NATIVE = RESULT; ...]`, strace-like.
    pub fn text(&self) -> String {
        let natives: Vec<String> =
            self.natives.iter().map(|n| format!("{} = {}", n.call, result_text(n.result))).collect();
        format!(
            "{}.{:06} pid={} {} = {} <{} us> [{}]\n",
            self.time.0,
            self.time.1,
            self.pid,
            self.call,
            result_text(self.result()),
            self.micros,
            natives.join("; ")
        )
    }

    /// The same as one JSON object per line.
    pub fn json(&self) -> String {
        let errno = |r: Result<i64, Errno>| r.err().map(|e| format!("{e:?}"));
        let natives: Vec<serde_json::Value> = self
            .natives
            .iter()
            .map(|n| serde_json::json!({"call": n.call, "result": n.result.unwrap_or(-1), "errno": errno(n.result)}))
            .collect();
        let line = serde_json::json!({
            "time_us": self.time.0 * 1_000_000 + u64::from(self.time.1),
            "pid": self.pid,
            "call": self.call,
            "result": self.result,
            "errno": errno(self.result()),
            "native": natives,
            "us": self.micros,
        });
        format!("{line}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arg::BufferArg;

    #[test]
    fn map_dma_is_decoded_from_the_callers_struct() {
        let map = vfio_iommu_type1_dma_map {
            argsz: 32,
            flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: 0x7f00_0000_0000,
            iova: 0x40_0000,
            size: 0x1000,
        };
        let s = describe_ioctl(Node::Container, 5, VFIO_IOMMU_MAP_DMA, 0x1000, &mut BufferArg::of(&map));
        assert_eq!(
            s,
            "VFIO_IOMMU_MAP_DMA(fd=5, argsz=32, flags=READ|WRITE, vaddr=0x7f0000000000, iova=0x400000, size=0x1000)"
        );
    }

    #[test]
    fn the_same_number_is_named_by_the_file_it_is_made_on() {
        let mut none = BufferArg::default();
        assert_eq!(request_name(Node::Container, VFIO_IOMMU_GET_INFO), Some("VFIO_IOMMU_GET_INFO"));
        assert_eq!(request_name(Node::Device, VFIO_IOMMU_GET_INFO), Some("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO"));
        assert_eq!(request_name(Node::Group, VFIO_SET_IOMMU), None);
        assert_eq!(
            describe_ioctl(Node::Container, 3, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU, &mut none),
            "VFIO_CHECK_EXTENSION(fd=3, VFIO_TYPE1v2_IOMMU)"
        );
        assert_eq!(
            describe_ioctl(Node::Container, 3, VFIO_CHECK_EXTENSION, 77, &mut none),
            "VFIO_CHECK_EXTENSION(fd=3, 77)"
        );
        assert_eq!(describe_ioctl(Node::Group, 4, 0x3bff, 0, &mut none), "ioctl(fd=4, request=0x3bff, arg=0x0)");
        assert_eq!(
            describe_ioctl(Node::Group, 4, VFIO_GROUP_UNSET_CONTAINER, 0, &mut none),
            "VFIO_GROUP_UNSET_CONTAINER(fd=4)"
        );
    }

    #[test]
    fn an_unreadable_argument_is_shown_not_followed() {
        let s = describe_ioctl(Node::Container, 5, VFIO_IOMMU_UNMAP_DMA, 0xdead, &mut BufferArg::default());
        assert_eq!(s, "VFIO_IOMMU_UNMAP_DMA(fd=5, arg=0xdead (unreadable))");
        let mut name = BufferArg::new(b"0000:00:03.0\0".to_vec());
        assert_eq!(
            describe_ioctl(Node::Group, 6, VFIO_GROUP_GET_DEVICE_FD, 0x10, &mut name),
            "VFIO_GROUP_GET_DEVICE_FD(fd=6, \"0000:00:03.0\")"
        );
    }

    #[test]
    fn a_line_in_text_and_in_json() {
        let natives = [
            Native { call: "IOMMU_IOAS_MAP(ioas=2)", result: Ok(0) },
            Native { call: "open(/dev/iommu)", result: Err(Errno::EACCES) },
        ];
        let line = Line {
            time: (1_795_798_731, 754_698),
            pid: 42,
            call: "open(\"/dev/vfio/vfio\", flags=0o2)",
            result: -1,
            errno: Some(Errno::EACCES),
            natives: &natives,
            micros: 17,
        };
        assert_eq!(
            line.text(),
            "1795798731.754698 pid=42 open(\"/dev/vfio/vfio\", flags=0o2) = -1 EACCES <17 us> \
             [IOMMU_IOAS_MAP(ioas=2) = 0; open(/dev/iommu) = -1 EACCES]\n"
        );
        let v: serde_json::Value = serde_json::from_str(&line.json()).unwrap();
        assert_eq!(v["time_us"], 1_795_798_731_754_698u64);
        assert_eq!(v["call"], "open(\"/dev/vfio/vfio\", flags=0o2)");
        assert_eq!(v["errno"], "EACCES");
        assert_eq!(v["native"][1]["errno"], "EACCES");
        assert_eq!(v["native"][0]["errno"], serde_json::Value::Null);
        assert_eq!(v["us"], 17);
    }
}
