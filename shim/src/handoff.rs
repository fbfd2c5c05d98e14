//! The description of containers and groups one process hands to another: appended as a
//! sealed memfd to an `SCM_RIGHTS` message that carries container or group fds, with the
//! native fds the receiver needs (the iommufd, the bound device cdevs) in front of it.
//!
//! Text, one record per line, so a stuck handoff can be read with `cat /proc/<pid>/fd/<n>`:
//! ```text
//! vfio-shim-handoff 1
//! container <origin> fd=<i> iommu=none
//! container <origin> fd=<i> iommu=noiommu
//! container <origin> fd=<i> iommu=v2 ioas=<n> avail=<n> pgsizes=0x<hex> coherent=<0|1> dirty=<0|1>
//! range 0x<start> 0x<last>
//! map 0x<iova> 0x<size> 0x<vaddr> <rw|r-|-w|--> <vaddr-invalid 0|1>
//! group <origin> number=<N|noiommu-N> container=<origin|->
//! device <name> driver=<name|-> cdev=<path> fd=<i> devid=<n> attached=<0|1>
//! slot <i> <origin>
//! ```
//! `range` and `map` belong to the container line above them, `device` to the group line.
//! `fd=<i>` indexes the fds that follow the application's own in the message; `slot` says
//! which of the application's fds (by index) stands for which object. An origin names an
//! object for as long as it lives: `<process nonce>-<id>`, so a container that reaches a
//! process twice (its fd in one message, a group of it in another) is adopted once.

use std::fmt::Write;

use nix::errno::Errno;

use crate::backend::{GroupDevice, IoasId, IovaRange, Prot};
use crate::ledger::Mapping;
use crate::translator::IommuExport;

const MAGIC: &str = "vfio-shim-handoff 1";

/// An object's name across processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub nonce: u64,
    pub id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRecord {
    pub origin: Origin,
    /// Index of the container's iommufd among the appended fds.
    pub iommufd: usize,
    pub iommu: Option<IommuExport>,
    /// The no-IOMMU driver is set (`iommu` is `None`).
    pub noiommu_driver: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub info: GroupDevice,
    /// Index of the bound cdev among the appended fds.
    pub fd: usize,
    /// `VFIO_DEVICE_BIND_IOMMUFD`'s `out_devid`.
    pub dev_id: u32,
    pub attached: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    pub origin: Origin,
    pub number: u32,
    /// A no-IOMMU group (`/dev/vfio/noiommu-<number>`).
    pub noiommu: bool,
    pub container: Option<Origin>,
    pub devices: Vec<DeviceRecord>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handoff {
    pub containers: Vec<ContainerRecord>,
    pub groups: Vec<GroupRecord>,
    /// (index among the application's fds, object).
    pub slots: Vec<(usize, Origin)>,
}

fn origin_text(o: Origin) -> String {
    format!("{:x}-{}", o.nonce, o.id)
}

fn word_ok(w: &str) -> bool {
    !w.is_empty() && !w.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Handoff {
    /// The text. `EINVAL` for a name that cannot be written as one word.
    pub fn encode(&self) -> Result<String, Errno> {
        let mut t = String::new();
        let flag = |b: bool| if b { 1 } else { 0 };
        writeln!(t, "{MAGIC}").expect("String");
        for c in &self.containers {
            write!(t, "container {} fd={}", origin_text(c.origin), c.iommufd).expect("String");
            let Some(i) = &c.iommu else {
                writeln!(t, " iommu={}", if c.noiommu_driver { "noiommu" } else { "none" }).expect("String");
                continue;
            };
            writeln!(
                t,
                " iommu={} ioas={} avail={} pgsizes={:#x} coherent={} dirty={}",
                if i.v2 { "v2" } else { "v1" },
                i.ioas.0,
                i.dma_avail,
                i.pgsizes,
                flag(i.coherent),
                flag(i.dirty_tracking)
            )
            .expect("String");
            for r in &i.iova_ranges {
                writeln!(t, "range {:#x} {:#x}", r.start, r.last).expect("String");
            }
            for m in &i.mappings {
                let prot = match (m.prot.read, m.prot.write) {
                    (true, true) => "rw",
                    (true, false) => "r-",
                    (false, true) => "-w",
                    (false, false) => "--",
                };
                writeln!(t, "map {:#x} {:#x} {:#x} {prot} {}", m.iova, m.size, m.vaddr, flag(m.vaddr_invalid))
                    .expect("String");
            }
        }
        for g in &self.groups {
            let container = g.container.map_or("-".to_owned(), origin_text);
            let prefix = if g.noiommu { "noiommu-" } else { "" };
            writeln!(t, "group {} number={prefix}{} container={container}", origin_text(g.origin), g.number)
                .expect("String");
            for d in &g.devices {
                let cdev = d.info.cdev.as_deref().ok_or(Errno::EINVAL)?;
                let driver = d.info.driver.as_deref().unwrap_or("-");
                if ![d.info.name.as_str(), cdev, driver].iter().all(|w| word_ok(w)) {
                    return Err(Errno::EINVAL);
                }
                writeln!(
                    t,
                    "device {} driver={driver} cdev={cdev} fd={} devid={} attached={} sriov={}",
                    d.info.name,
                    d.fd,
                    d.dev_id,
                    flag(d.attached),
                    flag(d.info.sriov)
                )
                .expect("String");
            }
        }
        for (i, o) in &self.slots {
            writeln!(t, "slot {i} {}", origin_text(*o)).expect("String");
        }
        Ok(t)
    }

    /// Parses [`Handoff::encode`]'s text; `EINVAL` for anything else.
    pub fn decode(text: &str) -> Result<Self, Errno> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(Errno::EINVAL);
        }
        let mut h = Handoff::default();
        for line in lines {
            let mut w = line.split(' ');
            match w.next() {
                Some("container") => {
                    let origin = parse_origin(w.next())?;
                    let iommufd = field(w.next(), "fd")?;
                    let kind = value(w.next(), "iommu")?;
                    let noiommu_driver = kind == "noiommu";
                    let iommu = match kind {
                        "none" | "noiommu" => None,
                        v @ ("v1" | "v2") => Some(IommuExport {
                            v2: v == "v2",
                            ioas: IoasId(field(w.next(), "ioas")?),
                            dma_avail: field(w.next(), "avail")?,
                            pgsizes: hex(value(w.next(), "pgsizes")?)?,
                            coherent: bit(w.next(), "coherent")?,
                            dirty_tracking: bit(w.next(), "dirty")?,
                            mappings: Vec::new(),
                            iova_ranges: Vec::new(),
                        }),
                        _ => return Err(Errno::EINVAL),
                    };
                    h.containers.push(ContainerRecord { origin, iommufd, iommu, noiommu_driver });
                }
                Some(kind @ ("range" | "map")) => {
                    let iommu = h.containers.last_mut().and_then(|c| c.iommu.as_mut()).ok_or(Errno::EINVAL)?;
                    let a = hex(w.next().ok_or(Errno::EINVAL)?)?;
                    let b = hex(w.next().ok_or(Errno::EINVAL)?)?;
                    if kind == "range" {
                        iommu.iova_ranges.push(IovaRange { start: a, last: b });
                    } else {
                        let vaddr = hex(w.next().ok_or(Errno::EINVAL)?)?;
                        let prot = match w.next() {
                            Some("rw") => Prot { read: true, write: true },
                            Some("r-") => Prot { read: true, write: false },
                            Some("-w") => Prot { read: false, write: true },
                            Some("--") => Prot::default(),
                            _ => return Err(Errno::EINVAL),
                        };
                        let vaddr_invalid = match w.next() {
                            Some("0") => false,
                            Some("1") => true,
                            _ => return Err(Errno::EINVAL),
                        };
                        if b == 0 || a.checked_add(b - 1).is_none() {
                            return Err(Errno::EINVAL);
                        }
                        iommu.mappings.push(Mapping { iova: a, size: b, vaddr, prot, vaddr_invalid });
                    }
                }
                Some("group") => {
                    let origin = parse_origin(w.next())?;
                    let number = value(w.next(), "number")?;
                    let (noiommu, number) = match number.strip_prefix("noiommu-") {
                        Some(n) => (true, n),
                        None => (false, number),
                    };
                    let number = number.parse().map_err(|_| Errno::EINVAL)?;
                    let container = match value(w.next(), "container")? {
                        "-" => None,
                        o => Some(parse_origin(Some(o))?),
                    };
                    h.groups.push(GroupRecord { origin, number, noiommu, container, devices: Vec::new() });
                }
                Some("device") => {
                    let group = h.groups.last_mut().ok_or(Errno::EINVAL)?;
                    let name = w.next().filter(|n| word_ok(n)).ok_or(Errno::EINVAL)?.to_owned();
                    let driver = match value(w.next(), "driver")? {
                        "-" => None,
                        d => Some(d.to_owned()),
                    };
                    let cdev = Some(value(w.next(), "cdev")?.to_owned());
                    let fd = field(w.next(), "fd")?;
                    let dev_id = field(w.next(), "devid")?;
                    let attached = bit(w.next(), "attached")?;
                    let sriov = bit(w.next(), "sriov")?;
                    group.devices.push(DeviceRecord {
                        info: GroupDevice { name, driver, cdev, sriov },
                        fd,
                        dev_id,
                        attached,
                    });
                }
                Some("slot") => {
                    let i = w.next().ok_or(Errno::EINVAL)?.parse().map_err(|_| Errno::EINVAL)?;
                    h.slots.push((i, parse_origin(w.next())?));
                }
                _ => return Err(Errno::EINVAL),
            }
            if w.next().is_some() {
                return Err(Errno::EINVAL);
            }
        }
        Ok(h)
    }

    /// The highest appended-fd index the records use, if any.
    pub fn max_fd_index(&self) -> Option<usize> {
        let c = self.containers.iter().map(|c| c.iommufd);
        let d = self.groups.iter().flat_map(|g| g.devices.iter().map(|d| d.fd));
        c.chain(d).max()
    }
}

fn parse_origin(w: Option<&str>) -> Result<Origin, Errno> {
    let (nonce, id) = w.and_then(|w| w.split_once('-')).ok_or(Errno::EINVAL)?;
    Ok(Origin {
        nonce: u64::from_str_radix(nonce, 16).map_err(|_| Errno::EINVAL)?,
        id: id.parse().map_err(|_| Errno::EINVAL)?,
    })
}

fn value<'a>(w: Option<&'a str>, key: &str) -> Result<&'a str, Errno> {
    w.and_then(|w| w.strip_prefix(key)).and_then(|w| w.strip_prefix('=')).filter(|v| word_ok(v)).ok_or(Errno::EINVAL)
}

fn field<T: std::str::FromStr>(w: Option<&str>, key: &str) -> Result<T, Errno> {
    value(w, key)?.parse().map_err(|_| Errno::EINVAL)
}

fn bit(w: Option<&str>, key: &str) -> Result<bool, Errno> {
    match value(w, key)? {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(Errno::EINVAL),
    }
}

fn hex(w: &str) -> Result<u64, Errno> {
    let digits = w.strip_prefix("0x").ok_or(Errno::EINVAL)?;
    u64::from_str_radix(digits, 16).map_err(|_| Errno::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handoff {
        let o1 = Origin { nonce: 0xdead_beef, id: 1 };
        let o2 = Origin { nonce: 0xdead_beef, id: 2 };
        Handoff {
            containers: vec![
                ContainerRecord {
                    origin: o1,
                    iommufd: 0,
                    iommu: Some(IommuExport {
                        v2: true,
                        ioas: IoasId(3),
                        mappings: vec![
                            Mapping {
                                iova: 0x10_0000,
                                size: 0x1000,
                                vaddr: 0x7f00_0000_0000,
                                prot: Prot { read: true, write: true },
                                vaddr_invalid: false,
                            },
                            Mapping {
                                iova: 0x20_0000,
                                size: 0x20_0000,
                                vaddr: 0x7f00_0010_0000,
                                prot: Prot { read: true, write: false },
                                vaddr_invalid: true,
                            },
                        ],
                        dma_avail: 65533,
                        pgsizes: 0x4020_1000,
                        iova_ranges: vec![
                            IovaRange { start: 0, last: 0xfedf_ffff },
                            IovaRange { start: 0xfef0_0000, last: u64::MAX },
                        ],
                        coherent: false,
                        dirty_tracking: true,
                    }),
                    noiommu_driver: false,
                },
                ContainerRecord { origin: Origin { nonce: 7, id: 9 }, iommufd: 3, iommu: None, noiommu_driver: false },
                ContainerRecord { origin: Origin { nonce: 7, id: 10 }, iommufd: 1, iommu: None, noiommu_driver: true },
            ],
            groups: vec![
                GroupRecord {
                    origin: o2,
                    number: 12,
                    noiommu: false,
                    container: Some(o1),
                    devices: vec![DeviceRecord {
                        info: GroupDevice {
                            name: "0000:00:03.0".into(),
                            driver: Some("vfio-pci".into()),
                            cdev: Some("/dev/vfio/devices/vfio0".into()),
                            sriov: false,
                        },
                        fd: 1,
                        dev_id: 2,
                        attached: true,
                    }],
                },
                GroupRecord {
                    origin: Origin { nonce: 7, id: 11 },
                    number: 3,
                    noiommu: true,
                    container: Some(Origin { nonce: 7, id: 10 }),
                    devices: Vec::new(),
                },
            ],
            slots: vec![(0, o1), (1, o2)],
        }
    }

    #[test]
    fn round_trip() {
        let h = sample();
        let text = h.encode().unwrap();
        assert!(text.starts_with("vfio-shim-handoff 1\ncontainer deadbeef-1 fd=0 iommu=v2 ioas=3"));
        assert_eq!(Handoff::decode(&text).unwrap(), h);
        assert_eq!(h.max_fd_index(), Some(3));
        assert_eq!(Handoff::default().max_fd_index(), None);
    }

    #[test]
    fn malformed_text_is_einval() {
        let text = sample().encode().unwrap();
        assert_eq!(Handoff::decode("vfio-shim-handoff 2\n"), Err(Errno::EINVAL));
        assert_eq!(Handoff::decode(""), Err(Errno::EINVAL));
        for (from, to) in [
            ("fd=0", "fd=x"),
            ("iommu=v2", "iommu=v3"),
            ("attached=1", "attached=2"),
            ("number=12", "number=12 extra"),
            ("number=noiommu-3", "number=noiommu-x"),
            ("iommu=noiommu", "iommu=noiommu2"),
            ("map 0x100000 0x1000", "map 0x100000 0x0"),
            ("slot 0", "slot -1"),
            ("deadbeef-1 fd", "deadbeef1 fd"),
        ] {
            assert!(text.contains(from), "{from}");
            assert_eq!(Handoff::decode(&text.replacen(from, to, 1)), Err(Errno::EINVAL), "{from} -> {to}");
        }
        // A map line before any container with an IOMMU.
        assert_eq!(Handoff::decode("vfio-shim-handoff 1\nmap 0x0 0x1000 0x0 rw 0\n"), Err(Errno::EINVAL));
    }

    #[test]
    fn names_with_spaces_are_refused() {
        let mut h = sample();
        h.groups[0].devices[0].info.name = "0000:00:03.0 vf_token=x".into();
        assert_eq!(h.encode(), Err(Errno::EINVAL));
    }
}
