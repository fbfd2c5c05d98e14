//! The explorer's call language: one `Op` per legacy call (or device action), the classes of
//! arguments a caller can get right or wrong, a seeded generator of sequences, and a text form
//! (one op per line) for regression files. Pure: no I/O.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, RngCore};

/// The objects a sequence holds, by kind and slot (the n-th live one of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdRef {
    Container(u8),
    Group(u8),
    Device(u8),
    /// A number that is not open (EBADF everywhere).
    Stale,
    /// An open fd of another file (`/dev/null`).
    Foreign,
}

/// The test devices whose groups sequences open: edu and igb alone in their groups, and the
/// two devices behind the PCIe-to-PCI bridge, which share one group (vm.sh): a second edu,
/// bound to vfio-pci, and a virtio-rng a sequence can move between drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dev {
    Edu,
    Igb,
    PairEdu,
    PairRng,
}

impl Dev {
    /// The other device a `Name::OtherDevice` names: in another group for edu and igb, in the
    /// same group for the pair.
    pub fn other(self) -> Dev {
        match self {
            Dev::Edu => Dev::Igb,
            Dev::Igb => Dev::Edu,
            Dev::PairEdu => Dev::PairRng,
            Dev::PairRng => Dev::PairEdu,
        }
    }

    pub fn is_edu(self) -> bool {
        matches!(self, Dev::Edu | Dev::PairEdu)
    }
}

/// Where `Rebind` moves the pair's virtio-rng: off any driver, onto vfio-pci (a device bound
/// late, into a group that may already be set on a container), or onto its kernel driver
/// (virtio-pci, which claims DMA: the group is not viable while it drives the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    None,
    Vfio,
    Kernel,
}

/// `argsz` classes: 0, one byte short of the fixed part, exactly the fixed part, larger than
/// the struct (the rest readable), and short with the memory after it unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argsz {
    Zero,
    Short,
    Exact,
    Large,
    /// `argsz` claims the whole struct but the struct ends at an unreadable page.
    Truncated,
}

/// IOVA classes (pages of a small window, edge values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iova {
    Page(u8),
    Zero,
    Unaligned,
    /// The x86 MSI window, reserved in every IOMMU domain.
    Msi,
    /// Just below 2^48: the top of the test IOMMU's address space.
    Top,
    /// Far above the IOMMU's aperture.
    Beyond,
    /// iova + size wraps around.
    Wrap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Pages(u8),
    Zero,
    Unaligned,
    /// u64::MAX rounded to a page: every overflow check.
    Max,
    /// All of the 64-bit space from iova 0: UNMAP_ALL's size.
    All,
}

/// Where MAP_DMA's vaddr points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vaddr {
    Pool(u8),
    Unaligned,
    ReadOnly,
    Unmapped,
    Null,
}

/// The dirty bitmap a caller passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bitmap {
    None,
    /// Right page size and enough bytes; non-zero bytes already in it.
    Good,
    WrongPgsize,
    TooSmall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Exact,
    WithToken,
    Upper,
    OtherDevice,
    Unknown,
    Empty,
    TrailingSpace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vfs {
    Fioclex,
    Fionclex,
    Fionbio,
    Fioasync,
    GetFd,
    GetFl,
    SetFlNonblock,
}

/// How the process that ran a sequence's first part dies (SIGKILL, always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    /// Right after its last op.
    Now,
    /// After this many ms, while a second thread maps 256 MiB (the pin takes longer).
    InMap(u8),
    /// After this many ms, while a second thread loops MAP, GET_INFO and UNMAP.
    InCalls(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    OpenContainer,
    OpenGroup {
        dev: Dev,
    },
    Close {
        fd: FdRef,
    },
    Dup {
        fd: FdRef,
    },
    ApiVersion {
        c: FdRef,
    },
    CheckExtension {
        c: FdRef,
        ext: u64,
    },
    SetIommu {
        c: FdRef,
        ty: u64,
    },
    GetInfo {
        c: FdRef,
        argsz: Argsz,
    },
    Map {
        c: FdRef,
        flags: u32,
        iova: Iova,
        size: Size,
        vaddr: Vaddr,
        argsz: Argsz,
    },
    Unmap {
        c: FdRef,
        flags: u32,
        iova: Iova,
        size: Size,
        bitmap: Bitmap,
        argsz: Argsz,
    },
    Dirty {
        c: FdRef,
        flags: u32,
        iova: Iova,
        size: Size,
        bitmap: Bitmap,
    },
    GroupStatus {
        g: FdRef,
        argsz: Argsz,
    },
    SetContainer {
        g: FdRef,
        target: FdRef,
    },
    UnsetContainer {
        g: FdRef,
    },
    GetDeviceFd {
        g: FdRef,
        dev: Dev,
        name: Name,
    },
    DeviceInfo {
        d: FdRef,
    },
    /// PCI_COMMAND and the MSI enable bit, read through the config region.
    DeviceState {
        d: FdRef,
    },
    BusMaster {
        d: FdRef,
    },
    MsiOn {
        d: FdRef,
    },
    MmapBar {
        d: FdRef,
    },
    MunmapBar,
    /// edu DMA from `from` into the device and back out to `to`; which pool pages changed.
    Dma {
        d: FdRef,
        from: Iova,
        to: Iova,
    },
    /// edu raises its interrupt; whether the eventfd `MsiOn` gave the device fired.
    Irq {
        d: FdRef,
    },
    Vfs {
        fd: FdRef,
        req: Vfs,
    },
    /// A second process closes what it inherited, opens the device's group and holds it until
    /// the sequence ends; its open's answer is recorded.
    Hold {
        dev: Dev,
    },
    /// The ops before this one ran in a child process, which is now killed; the ops after it
    /// run in the parent, a fresh process for VFIO, which must find everything released.
    Die {
        at: Death,
    },
    /// The pair's virtio-rng is moved to `to` through sysfs (as an administrator would, while
    /// the sequence holds what it holds); every sequence starts with it on its kernel driver.
    Rebind {
        to: Driver,
    },
    /// CAP_SYS_RAWIO leaves (`keep: false`) or re-enters (`true`) this thread's effective set:
    /// every no-IOMMU group, container and device call checks it. Generated in no-IOMMU runs.
    Rawio {
        keep: bool,
    },
}

impl Op {
    /// Whether the op is generated only with `Scope::devices`: it acts on a device, or needs
    /// a second process (which the host replay cannot model).
    pub fn in_device_scope_only(&self) -> bool {
        matches!(
            self,
            Op::GetDeviceFd { .. }
                | Op::DeviceInfo { .. }
                | Op::DeviceState { .. }
                | Op::BusMaster { .. }
                | Op::MsiOn { .. }
                | Op::MmapBar { .. }
                | Op::MunmapBar
                | Op::Dma { .. }
                | Op::Irq { .. }
                | Op::Die { .. }
                | Op::Hold { .. }
                | Op::Rebind { .. }
        )
    }

    /// A short name for labels.
    pub fn name(&self) -> &'static str {
        match self {
            Op::OpenContainer => "open_container",
            Op::OpenGroup { .. } => "open_group",
            Op::Close { .. } => "close",
            Op::Dup { .. } => "dup",
            Op::ApiVersion { .. } => "api_version",
            Op::CheckExtension { .. } => "check_extension",
            Op::SetIommu { .. } => "set_iommu",
            Op::GetInfo { .. } => "get_info",
            Op::Map { .. } => "map",
            Op::Unmap { .. } => "unmap",
            Op::Dirty { .. } => "dirty",
            Op::GroupStatus { .. } => "group_status",
            Op::SetContainer { .. } => "set_container",
            Op::UnsetContainer { .. } => "unset_container",
            Op::GetDeviceFd { .. } => "get_device_fd",
            Op::DeviceInfo { .. } => "device_info",
            Op::DeviceState { .. } => "device_state",
            Op::BusMaster { .. } => "bus_master",
            Op::MsiOn { .. } => "msi_on",
            Op::MmapBar { .. } => "mmap_bar",
            Op::MunmapBar => "munmap_bar",
            Op::Dma { .. } => "dma",
            Op::Irq { .. } => "irq",
            Op::Vfs { .. } => "vfs",
            Op::Die { .. } => "die",
            Op::Hold { .. } => "hold",
            Op::Rebind { .. } => "rebind",
            Op::Rawio { .. } => "rawio",
        }
    }
}

// ------------------------------------------------------------------------------ generation

/// Which parts of the API a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// Device fds (GET_DEVICE_FD and everything on a device). Off for the CUSE node without
    /// the preload, which cannot hand out device fds.
    pub devices: bool,
    /// The no-IOMMU subset (vm.sh's machine without an IOMMU): `/dev/vfio/noiommu-<N>` nodes,
    /// mostly `VFIO_NOIOMMU_IOMMU`, CAP_SYS_RAWIO coming and going; no pair (there is none),
    /// and no edu DMA: without an IOMMU its addresses are physical, and the sequences' IOVAs
    /// would be the guest's own memory. Off, every draw is what it always was, so seeds keep
    /// their sequences.
    pub noiommu: bool,
}

fn pick<T: Copy>(rng: &mut impl RngCore, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn slot(rng: &mut impl RngCore) -> u8 {
    // Mostly the first object of a kind, sometimes a second one, rarely one that is not there.
    match rng.random_range(0..20) {
        0..=15 => 0,
        16..=18 => 1,
        _ => 2,
    }
}

fn fd_ref(rng: &mut impl RngCore, want: fn(u8) -> FdRef) -> FdRef {
    match rng.random_range(0..40) {
        0 => FdRef::Stale,
        1 => FdRef::Foreign,
        2 => FdRef::Container(slot(rng)),
        3 => FdRef::Group(slot(rng)),
        _ => want(slot(rng)),
    }
}

fn any_fd(rng: &mut impl RngCore) -> FdRef {
    match rng.random_range(0..3) {
        0 => fd_ref(rng, FdRef::Container),
        1 => fd_ref(rng, FdRef::Group),
        _ => fd_ref(rng, FdRef::Device),
    }
}

fn argsz(rng: &mut impl RngCore) -> Argsz {
    match rng.random_range(0..16) {
        0 => Argsz::Zero,
        1 => Argsz::Short,
        2 => Argsz::Large,
        3 => Argsz::Truncated,
        _ => Argsz::Exact,
    }
}

fn iova(rng: &mut impl RngCore) -> Iova {
    match rng.random_range(0..32) {
        0 => Iova::Zero,
        1 => Iova::Unaligned,
        2 => Iova::Msi,
        3 => Iova::Top,
        4 => Iova::Beyond,
        5 => Iova::Wrap,
        6..=9 => Iova::Page(rng.random_range(0..16)),
        // Most traffic on the few pages the setup maps, so unmaps and DMAs find them.
        _ => Iova::Page(rng.random_range(0..4)),
    }
}

fn size(rng: &mut impl RngCore) -> Size {
    match rng.random_range(0..20) {
        0 => Size::Zero,
        1 => Size::Unaligned,
        2 => Size::Max,
        3 => Size::All,
        _ => Size::Pages(pick(rng, &[1, 1, 1, 2, 2, 3, 4, 8])),
    }
}

fn bitmap(rng: &mut impl RngCore) -> Bitmap {
    pick(rng, &[Bitmap::Good, Bitmap::Good, Bitmap::WrongPgsize, Bitmap::TooSmall, Bitmap::None])
}

fn flags(rng: &mut impl RngCore, usual: &[u32]) -> u32 {
    match rng.random_range(0..16) {
        0 => 1 << rng.random_range(0..32),
        1 => rng.random::<u32>() & 0xff,
        _ => pick(rng, usual),
    }
}

fn ext(rng: &mut impl RngCore) -> u64 {
    match rng.random_range(0..8) {
        0 => rng.random_range(0..64),
        1 => pick(rng, &[u64::MAX, 1 << 32, 0x8000_0000]),
        _ => rng.random_range(0..=10),
    }
}

/// SET_IOMMU's type in a no-IOMMU run: mostly the no-IOMMU one.
fn noiommu_type(rng: &mut impl RngCore) -> u64 {
    match rng.random_range(0..10) {
        0 => ext(rng),
        1 => 1,
        2 => 3,
        _ => VFIO_NOIOMMU_IOMMU,
    }
}

fn iommu_type(rng: &mut impl RngCore) -> u64 {
    match rng.random_range(0..10) {
        0 => ext(rng),
        1..=4 => 1,
        _ => 3,
    }
}

use vfio_shim::abi::{
    VFIO_DMA_MAP_FLAG_READ as R, VFIO_DMA_MAP_FLAG_VADDR as MV, VFIO_DMA_MAP_FLAG_WRITE as W,
    VFIO_DMA_UNMAP_FLAG_ALL as UA, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP as UD, VFIO_DMA_UNMAP_FLAG_VADDR as UV,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP as DG, VFIO_IOMMU_DIRTY_PAGES_FLAG_START as DS,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP as DT, VFIO_NOIOMMU_IOMMU,
};

/// One random op. The weights favour the setup a useful sequence needs (a container with an
/// IOMMU and a group on it) and then mapping traffic.
pub fn random_op(rng: &mut impl RngCore, scope: Scope) -> Op {
    let c = |rng: &mut _| fd_ref(rng, FdRef::Container);
    let g = |rng: &mut _| fd_ref(rng, FdRef::Group);
    let d = |rng: &mut _| fd_ref(rng, FdRef::Device);
    let dev = |rng: &mut _| any_dev(rng, scope);
    if scope.noiommu && rng_bool(rng, 20) {
        return Op::Rawio { keep: rng_bool(rng, 2) };
    }
    loop {
        let op = match rng.random_range(0..100) {
            0..=3 => Op::OpenContainer,
            4..=7 => Op::OpenGroup { dev: dev(rng) },
            8..=11 => Op::Close { fd: any_fd(rng) },
            12..=13 => Op::Dup { fd: any_fd(rng) },
            14 => Op::ApiVersion { c: c(rng) },
            15..=17 => Op::CheckExtension { c: c(rng), ext: ext(rng) },
            18..=23 if scope.noiommu => Op::SetIommu { c: c(rng), ty: noiommu_type(rng) },
            18..=23 => Op::SetIommu { c: c(rng), ty: iommu_type(rng) },
            24..=26 => Op::GetInfo { c: c(rng), argsz: argsz(rng) },
            27..=44 => Op::Map {
                c: c(rng),
                flags: flags(rng, &[R | W, R | W, R | W, R, W, 0, R | W | MV]),
                iova: iova(rng),
                size: size(rng),
                vaddr: match rng.random_range(0..16) {
                    0 => Vaddr::Unaligned,
                    1 => Vaddr::ReadOnly,
                    2 => Vaddr::Unmapped,
                    3 => Vaddr::Null,
                    _ => Vaddr::Pool(rng.random_range(0..16)),
                },
                argsz: argsz(rng),
            },
            45..=56 => Op::Unmap {
                c: c(rng),
                flags: flags(rng, &[0, 0, 0, 0, UA, UD, UV, UA | UV, UD | UA]),
                iova: iova(rng),
                size: size(rng),
                bitmap: bitmap(rng),
                argsz: argsz(rng),
            },
            57..=60 => Op::Dirty {
                c: c(rng),
                flags: flags(rng, &[DS, DT, DG, DG, DS | DT, 0]),
                iova: iova(rng),
                size: size(rng),
                bitmap: bitmap(rng),
            },
            61..=63 => Op::GroupStatus { g: g(rng), argsz: argsz(rng) },
            64..=70 => Op::SetContainer { g: g(rng), target: c(rng) },
            71..=72 => Op::UnsetContainer { g: g(rng) },
            73..=78 if scope.devices => Op::GetDeviceFd {
                g: g(rng),
                dev: dev(rng),
                name: pick(
                    rng,
                    &[
                        Name::Exact,
                        Name::Exact,
                        Name::Exact,
                        Name::Exact,
                        Name::WithToken,
                        Name::Upper,
                        Name::OtherDevice,
                        Name::Unknown,
                        Name::Empty,
                        Name::TrailingSpace,
                    ],
                ),
            },
            79..=80 if scope.devices => Op::DeviceInfo { d: d(rng) },
            81..=83 if scope.devices => Op::DeviceState { d: d(rng) },
            84..=85 if scope.devices => Op::BusMaster { d: d(rng) },
            86..=87 if scope.devices => Op::MsiOn { d: d(rng) },
            88 if scope.devices => Op::MmapBar { d: d(rng) },
            89 if scope.devices => Op::MunmapBar,
            // edu's DMA engine takes 100 ms of QEMU's clock per transfer: rare, but in every
            // state the setup reaches.
            90 if scope.devices && !scope.noiommu => Op::Dma { d: d(rng), from: iova(rng), to: iova(rng) },
            91..=94 if scope.devices => Op::Irq { d: d(rng) },
            // A move costs a driver's remove and probe (tens of ms under TCG): one draw in three.
            95 if scope.devices && !scope.noiommu && rng_bool(rng, 3) => {
                Op::Rebind { to: pick(rng, &[Driver::None, Driver::Vfio, Driver::Kernel]) }
            }
            96..=99 => Op::Vfs {
                fd: if rng_bool(rng, 2) { c(rng) } else { g(rng) },
                req: pick(
                    rng,
                    &[
                        Vfs::Fioclex,
                        Vfs::Fionclex,
                        Vfs::Fionbio,
                        Vfs::Fioasync,
                        Vfs::GetFd,
                        Vfs::GetFl,
                        Vfs::SetFlNonblock,
                    ],
                ),
            },
            _ => continue,
        };
        return op;
    }
}

fn rng_bool(rng: &mut impl RngCore, one_in: u32) -> bool {
    rng.random_range(0..one_in) == 0
}

fn any_dev(rng: &mut impl RngCore, scope: Scope) -> Dev {
    let dev = match rng.random_range(0..24) {
        0..=3 => Dev::Igb,
        4..=6 => Dev::PairEdu,
        7 => Dev::PairRng,
        _ => Dev::Edu,
    };
    no_pair(dev, scope)
}

/// A machine without an IOMMU has no pair: its draws go to edu and igb.
fn no_pair(dev: Dev, scope: Scope) -> Dev {
    match dev {
        Dev::PairEdu if scope.noiommu => Dev::Edu,
        Dev::PairRng if scope.noiommu => Dev::Igb,
        _ => dev,
    }
}

/// A sequence: a usual setup prefix most of the time (so deep states are reached), then
/// random ops.
pub fn random_sequence(rng: &mut impl RngCore, scope: Scope) -> Vec<Op> {
    let mut ops = Vec::new();
    // A setup prefix most of the time, each step more likely than not, so that the random
    // ops meet every state: container and group, IOMMU set, mappings, a device fd with its
    // bus master and MSI on.
    if !rng_bool(rng, 6) {
        // The pair's group is viable only with its virtio-rng off its kernel driver: most
        // setups on it unbind the rng first, so that they get as deep as the others.
        let dev = match rng.random_range(0..16) {
            0 | 1 => Dev::Igb,
            2 if scope.devices && !scope.noiommu => Dev::PairEdu,
            _ => Dev::Edu,
        };
        if dev == Dev::PairEdu && !rng_bool(rng, 4) {
            ops.push(Op::Rebind { to: Driver::None });
        }
        ops.push(Op::OpenContainer);
        ops.push(Op::OpenGroup { dev });
        ops.push(Op::SetContainer { g: FdRef::Group(0), target: FdRef::Container(0) });
        if !rng_bool(rng, 5) {
            let ty = if rng_bool(rng, 2) { 1 } else { 3 };
            // No mappings without an IOMMU: the type is the no-IOMMU one, the maps go.
            let ty = if scope.noiommu { VFIO_NOIOMMU_IOMMU } else { ty };
            ops.push(Op::SetIommu { c: FdRef::Container(0), ty });
            let maps = rng.random_range(0..=3u8);
            for n in 0..if scope.noiommu { 0 } else { maps } {
                ops.push(Op::Map {
                    c: FdRef::Container(0),
                    flags: R | W,
                    iova: Iova::Page(n),
                    size: Size::Pages(1),
                    vaddr: Vaddr::Pool(n),
                    argsz: Argsz::Exact,
                });
            }
            if scope.devices && !rng_bool(rng, 3) {
                // Not igb's own device: its every open and last close is a function reset,
                // hundreds of ms under TCG; the random ops still open it now and then.
                let dev = if dev == Dev::Igb { Dev::Edu } else { dev };
                ops.push(Op::GetDeviceFd { g: FdRef::Group(0), dev, name: Name::Exact });
                if !rng_bool(rng, 2) {
                    ops.push(Op::BusMaster { d: FdRef::Device(0) });
                }
                if !rng_bool(rng, 2) {
                    ops.push(Op::MsiOn { d: FdRef::Device(0) });
                }
            }
        }
    }
    let n = rng.random_range(4..=24);
    for _ in 0..n {
        ops.push(random_op(rng, scope));
    }
    // Drawn last, so the other ops are those of the same sequence without them. A death's
    // child would leave a holder behind that ends only as the child's pipe closes, racing the
    // recovery: a sequence has one or the other.
    if scope.devices && !scope.noiommu && rng_bool(rng, 50) {
        let at = match rng.random_range(0..3) {
            0 => Death::Now,
            1 => Death::InMap(rng.random_range(0..40)),
            _ => Death::InCalls(rng.random_range(0..20)),
        };
        ops.push(Op::Die { at });
        ops.extend(recovery());
    } else if scope.devices && rng_bool(rng, 12) {
        let at = rng.random_range(0..=ops.len());
        ops.insert(at, Op::Hold { dev: any_dev(rng, scope) });
    }
    ops
}

/// What a fresh process does after a death: the same group set up from nothing, two pages
/// mapped, the device opened and an edu DMA from one page to the other.
pub fn recovery() -> Vec<Op> {
    let c = FdRef::Container(0);
    let map = |n: u8| Op::Map {
        c,
        flags: R | W,
        iova: Iova::Page(n),
        size: Size::Pages(1),
        vaddr: Vaddr::Pool(n),
        argsz: Argsz::Exact,
    };
    vec![
        Op::OpenContainer,
        Op::OpenGroup { dev: Dev::Edu },
        Op::SetContainer { g: FdRef::Group(0), target: c },
        Op::SetIommu { c, ty: 3 },
        map(0),
        map(1),
        Op::GetDeviceFd { g: FdRef::Group(0), dev: Dev::Edu, name: Name::Exact },
        Op::BusMaster { d: FdRef::Device(0) },
        Op::Dma { d: FdRef::Device(0), from: Iova::Page(0), to: Iova::Page(1) },
    ]
}

// ------------------------------------------------------------------------------ text form

impl fmt::Display for FdRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdRef::Container(n) => write!(f, "c{n}"),
            FdRef::Group(n) => write!(f, "g{n}"),
            FdRef::Device(n) => write!(f, "d{n}"),
            FdRef::Stale => f.write_str("stale"),
            FdRef::Foreign => f.write_str("foreign"),
        }
    }
}

impl FromStr for FdRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |t: &str| t.parse::<u8>().map_err(|e| format!("{s}: {e}"));
        Ok(match s {
            "stale" => FdRef::Stale,
            "foreign" => FdRef::Foreign,
            _ if s.starts_with('c') => FdRef::Container(num(&s[1..])?),
            _ if s.starts_with('g') => FdRef::Group(num(&s[1..])?),
            _ if s.starts_with('d') => FdRef::Device(num(&s[1..])?),
            _ => return Err(format!("bad fd ref {s}")),
        })
    }
}

/// `Debug` of the enums is the text form of their values ("Page(3)", "Exact"): parse it back.
macro_rules! debug_text {
    ($ty:ident { $($unit:ident),* } $( { $($tuple:ident),* } )?) => {
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s == stringify!($unit) { return Ok($ty::$unit); })*
                $($(
                    if let Some(n) = s.strip_prefix(concat!(stringify!($tuple), "(")).and_then(|r| r.strip_suffix(')')) {
                        return n.parse().map($ty::$tuple).map_err(|e| format!("{s}: {e}"));
                    }
                )*)?
                Err(format!("bad {}: {s}", stringify!($ty)))
            }
        }
    };
}
debug_text!(Dev { Edu, Igb, PairEdu, PairRng });
debug_text!(Driver { None, Vfio, Kernel });
debug_text!(Argsz { Zero, Short, Exact, Large, Truncated });
debug_text!(Iova { Zero, Unaligned, Msi, Top, Beyond, Wrap } { Page });
debug_text!(Size { Zero, Unaligned, Max, All } { Pages });
debug_text!(Vaddr { Unaligned, ReadOnly, Unmapped, Null } { Pool });
debug_text!(Bitmap { None, Good, WrongPgsize, TooSmall });
debug_text!(Name { Exact, WithToken, Upper, OtherDevice, Unknown, Empty, TrailingSpace });
debug_text!(Death { Now } { InMap, InCalls });
debug_text!(Vfs { Fioclex, Fionclex, Fionbio, Fioasync, GetFd, GetFl, SetFlNonblock });

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match *self {
            Op::OpenContainer | Op::MunmapBar => Ok(()),
            Op::OpenGroup { dev } => write!(f, " dev={dev:?}"),
            Op::Close { fd } | Op::Dup { fd } => write!(f, " fd={fd}"),
            Op::ApiVersion { c } => write!(f, " c={c}"),
            Op::CheckExtension { c, ext } => write!(f, " c={c} ext={ext}"),
            Op::SetIommu { c, ty } => write!(f, " c={c} ty={ty}"),
            Op::GetInfo { c, argsz } => write!(f, " c={c} argsz={argsz:?}"),
            Op::Map { c, flags, iova, size, vaddr, argsz } => {
                write!(f, " c={c} flags={flags:#x} iova={iova:?} size={size:?} vaddr={vaddr:?} argsz={argsz:?}")
            }
            Op::Unmap { c, flags, iova, size, bitmap, argsz } => {
                write!(f, " c={c} flags={flags:#x} iova={iova:?} size={size:?} bitmap={bitmap:?} argsz={argsz:?}")
            }
            Op::Dirty { c, flags, iova, size, bitmap } => {
                write!(f, " c={c} flags={flags:#x} iova={iova:?} size={size:?} bitmap={bitmap:?}")
            }
            Op::GroupStatus { g, argsz } => write!(f, " g={g} argsz={argsz:?}"),
            Op::SetContainer { g, target } => write!(f, " g={g} target={target}"),
            Op::UnsetContainer { g } => write!(f, " g={g}"),
            Op::GetDeviceFd { g, dev, name } => write!(f, " g={g} dev={dev:?} name={name:?}"),
            Op::DeviceInfo { d }
            | Op::DeviceState { d }
            | Op::BusMaster { d }
            | Op::MsiOn { d }
            | Op::MmapBar { d }
            | Op::Irq { d } => {
                write!(f, " d={d}")
            }
            Op::Dma { d, from, to } => write!(f, " d={d} from={from:?} to={to:?}"),
            Op::Vfs { fd, req } => write!(f, " fd={fd} req={req:?}"),
            Op::Die { at } => write!(f, " at={at:?}"),
            Op::Hold { dev } => write!(f, " dev={dev:?}"),
            Op::Rebind { to } => write!(f, " to={to:?}"),
            Op::Rawio { keep } => write!(f, " keep={keep}"),
        }
    }
}

impl FromStr for Op {
    type Err = String;
    fn from_str(line: &str) -> Result<Self, String> {
        let mut words = line.split_whitespace();
        let name = words.next().ok_or("empty line")?;
        let args: Vec<(&str, &str)> =
            words.map(|w| w.split_once('=').ok_or_else(|| format!("bad argument {w}"))).collect::<Result<_, _>>()?;
        let arg = |k: &str| -> Result<&str, String> {
            args.iter().find(|(a, _)| *a == k).map(|(_, v)| *v).ok_or_else(|| format!("{name}: no {k}="))
        };
        fn p<T: FromStr>(v: Result<&str, String>) -> Result<T, String>
        where
            T::Err: fmt::Display,
        {
            let v = v?;
            v.parse().map_err(|e| format!("{v}: {e}"))
        }
        fn hex(v: Result<&str, String>) -> Result<u32, String> {
            let v = v?;
            u32::from_str_radix(v.trim_start_matches("0x"), 16).map_err(|e| format!("{v}: {e}"))
        }
        Ok(match name {
            "open_container" => Op::OpenContainer,
            "munmap_bar" => Op::MunmapBar,
            "open_group" => Op::OpenGroup { dev: p(arg("dev"))? },
            "close" => Op::Close { fd: p(arg("fd"))? },
            "dup" => Op::Dup { fd: p(arg("fd"))? },
            "api_version" => Op::ApiVersion { c: p(arg("c"))? },
            "check_extension" => Op::CheckExtension { c: p(arg("c"))?, ext: p(arg("ext"))? },
            "set_iommu" => Op::SetIommu { c: p(arg("c"))?, ty: p(arg("ty"))? },
            "get_info" => Op::GetInfo { c: p(arg("c"))?, argsz: p(arg("argsz"))? },
            "map" => Op::Map {
                c: p(arg("c"))?,
                flags: hex(arg("flags"))?,
                iova: p(arg("iova"))?,
                size: p(arg("size"))?,
                vaddr: p(arg("vaddr"))?,
                argsz: p(arg("argsz"))?,
            },
            "unmap" => Op::Unmap {
                c: p(arg("c"))?,
                flags: hex(arg("flags"))?,
                iova: p(arg("iova"))?,
                size: p(arg("size"))?,
                bitmap: p(arg("bitmap"))?,
                argsz: p(arg("argsz"))?,
            },
            "dirty" => Op::Dirty {
                c: p(arg("c"))?,
                flags: hex(arg("flags"))?,
                iova: p(arg("iova"))?,
                size: p(arg("size"))?,
                bitmap: p(arg("bitmap"))?,
            },
            "group_status" => Op::GroupStatus { g: p(arg("g"))?, argsz: p(arg("argsz"))? },
            "set_container" => Op::SetContainer { g: p(arg("g"))?, target: p(arg("target"))? },
            "unset_container" => Op::UnsetContainer { g: p(arg("g"))? },
            "get_device_fd" => Op::GetDeviceFd { g: p(arg("g"))?, dev: p(arg("dev"))?, name: p(arg("name"))? },
            "device_info" => Op::DeviceInfo { d: p(arg("d"))? },
            "device_state" => Op::DeviceState { d: p(arg("d"))? },
            "bus_master" => Op::BusMaster { d: p(arg("d"))? },
            "msi_on" => Op::MsiOn { d: p(arg("d"))? },
            "mmap_bar" => Op::MmapBar { d: p(arg("d"))? },
            "dma" => Op::Dma { d: p(arg("d"))?, from: p(arg("from"))?, to: p(arg("to"))? },
            "irq" => Op::Irq { d: p(arg("d"))? },
            "vfs" => Op::Vfs { fd: p(arg("fd"))?, req: p(arg("req"))? },
            "die" => Op::Die { at: p(arg("at"))? },
            "hold" => Op::Hold { dev: p(arg("dev"))? },
            "rebind" => Op::Rebind { to: p(arg("to"))? },
            "rawio" => Op::Rawio { keep: p(arg("keep"))? },
            _ => return Err(format!("unknown op {name}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn text_form_round_trips_every_generated_op() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            let op = random_op(&mut rng, Scope { devices: true, noiommu: false });
            let text = op.to_string();
            assert_eq!(text.parse::<Op>(), Ok(op), "{text}");
        }
    }

    #[test]
    fn deaths_come_with_a_recovery_and_only_with_devices() {
        let seqs = |devices| {
            (0..2000u64).map(move |i| {
                let mut rng = ChaCha8Rng::seed_from_u64(3);
                rng.set_stream(i);
                random_sequence(&mut rng, Scope { devices, noiommu: false })
            })
        };
        let mut deaths = 0;
        for ops in seqs(true) {
            if let Some(k) = ops.iter().position(|o| matches!(o, Op::Die { .. })) {
                deaths += 1;
                assert_eq!(ops[k + 1..], recovery()[..]);
                let text = ops[k].to_string();
                assert_eq!(text.parse::<Op>(), Ok(ops[k]), "{text}");
            }
        }
        assert!((20..=80).contains(&deaths), "{deaths} deaths in 2000 sequences");
        assert!(seqs(false).all(|ops| !ops.iter().any(Op::in_device_scope_only)));
    }

    #[test]
    fn a_seed_gives_the_same_sequence() {
        let a = random_sequence(&mut ChaCha8Rng::seed_from_u64(42), Scope { devices: true, noiommu: false });
        let b = random_sequence(&mut ChaCha8Rng::seed_from_u64(42), Scope { devices: true, noiommu: false });
        let c = random_sequence(&mut ChaCha8Rng::seed_from_u64(43), Scope { devices: true, noiommu: false });
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn noiommu_runs_have_no_pair_no_dma_and_their_own_ops() {
        let scope = Scope { devices: true, noiommu: true };
        let (mut rawio, mut noiommu_type) = (0, 0);
        for i in 0..2000u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            rng.set_stream(i);
            for op in random_sequence(&mut rng, scope) {
                let text = op.to_string();
                assert_eq!(text.parse::<Op>(), Ok(op), "{text}");
                match op {
                    Op::Dma { .. } | Op::Rebind { .. } | Op::Die { .. } => panic!("{op} in a no-IOMMU run"),
                    Op::OpenGroup { dev } | Op::Hold { dev } | Op::GetDeviceFd { dev, .. } => {
                        assert!(matches!(dev, Dev::Edu | Dev::Igb), "{op}")
                    }
                    Op::Rawio { .. } => rawio += 1,
                    Op::SetIommu { ty: VFIO_NOIOMMU_IOMMU, .. } => noiommu_type += 1,
                    _ => {}
                }
            }
        }
        assert!(rawio > 500 && noiommu_type > 1000, "{rawio} rawio, {noiommu_type} SET_IOMMU(8)");
    }

    #[test]
    fn device_ops_only_in_scope() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..5_000 {
            let op = random_op(&mut rng, Scope { devices: false, noiommu: false });
            assert!(!op.in_device_scope_only(), "{op}");
        }
    }
}
