//! Runs explorer ops and records every answer in the compat-tests transcript format. The fd
//! and VFIO calls go through [`Calls`]: libc in the VM (whatever answers `/dev/vfio/*` in
//! this process: the kernel's type1, the kernel compat, or the shim through LD_PRELOAD), the
//! shim's core over its fake backend in the host replay. Device ops (config space, BAR, DMA,
//! interrupts) always use libc on the device fd: only the VM has devices.

use std::ffi::CString;
use std::io::Write;
use std::time::{Duration, Instant};

use vfio_shim::abi::{self, minsz};
use zerocopy::IntoBytes;

use crate::calls::{call, Calls};
use crate::ops::{Argsz, Bitmap, Death, Dev, Driver, FdRef, Iova, Name, Op, Size, Vaddr, Vfs};

const PAGE: usize = 4096;
/// Ops address its first 16 pages; sizes of up to 8 pages stay inside, and a PROT_NONE page
/// after it makes a longer pin fault the same way whatever the process's layout.
const POOL_PAGES: usize = 32;
/// The IOVA window `Iova::Page(n)` lives in (below edu's 28-bit DMA mask).
const IOVA_BASE: u64 = 0x10_0000;
/// A number no test opens.
const STALE_FD: i32 = 987;

const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
const VFIO_PCI_MSI_IRQ_INDEX: u32 = 1;
const VFIO_PCI_MSIX_IRQ_INDEX: u32 = 2;
const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

/// Memory laid out once per process: the pool MAP_DMA points into, a read-only page, a hole,
/// and an argument arena whose last page is unreadable.
struct Memory {
    pool: *mut u8,
    readonly: *mut u8,
    hole: *mut u8,
    arena: *mut u8,
}

fn mmap(len: usize, prot: i32) -> *mut u8 {
    // SAFETY: an anonymous private mapping chosen by the kernel; no existing memory changes.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    assert!(p != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    p.cast()
}

impl Memory {
    /// One reservation, so what lies next to each part is the same in every process and mode:
    /// pages 0..32 pool (RW), 32 guard, 33 read-only, 34 guard, 35 hole, 36..38 arena (RW),
    /// 38 the arena's unreadable end. A pin running off the pool or the read-only page meets a
    /// guard; the hole is inaccessible rather than unmapped, so nothing else (the preload) can
    /// ever be mapped there. With `shared`, the pool and the read-only page are a memfd's
    /// (`MAP_SHARED`): the memory a client of the CUSE node can map.
    fn new(shared: bool) -> Self {
        const PAGES: usize = 39;
        let base = mmap(PAGES * PAGE, libc::PROT_NONE);
        if shared {
            // SAFETY: a new memfd, sized, then mapped over parts of our own reservation.
            unsafe {
                let fd = libc::memfd_create(c"explorer-pool".as_ptr(), libc::MFD_CLOEXEC);
                assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
                assert_eq!(libc::ftruncate(fd, (PAGES * PAGE) as i64), 0);
                for (first, n, prot) in [(0, POOL_PAGES, libc::PROT_READ | libc::PROT_WRITE), (33, 1, libc::PROT_READ)]
                {
                    let at = base.add(first * PAGE).cast();
                    let flags = libc::MAP_SHARED | libc::MAP_FIXED;
                    let p = libc::mmap(at, n * PAGE, prot, flags, fd, (first * PAGE) as i64);
                    assert_eq!(p, at, "mmap: {}", std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
        }
        let open = |first: usize, n: usize, prot: i32| {
            // SAFETY: pages [first, first + n) of our own reservation.
            let r = unsafe { libc::mprotect(base.add(first * PAGE).cast(), n * PAGE, prot) };
            assert_eq!(r, 0, "mprotect: {}", std::io::Error::last_os_error());
        };
        if !shared {
            open(0, POOL_PAGES, libc::PROT_READ | libc::PROT_WRITE);
            open(33, 1, libc::PROT_READ);
        }
        open(36, 2, libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: offsets inside the reservation.
        unsafe {
            Memory { pool: base, readonly: base.add(33 * PAGE), hole: base.add(35 * PAGE), arena: base.add(36 * PAGE) }
        }
    }

    fn pool_page(&mut self, n: usize) -> &mut [u8] {
        // SAFETY: the pool is POOL_PAGES pages of our own RW memory; callers take n < POOL_PAGES
        // and never hold two of these slices at once.
        unsafe { std::slice::from_raw_parts_mut(self.pool.add(n * PAGE), PAGE) }
    }

    /// Copies an ioctl argument into the arena and returns its address. With `truncated` it
    /// ends right at the unreadable page.
    fn place(&self, bytes: &[u8], truncated: bool) -> *mut u8 {
        assert!(bytes.len() <= 2 * PAGE);
        let at = if truncated { 2 * PAGE - bytes.len() } else { 0 };
        // SAFETY: [at, at + len) lies in the arena's two RW pages.
        unsafe {
            let p = self.arena.add(at);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            p
        }
    }

    /// Places an `argsz`-classed struct (`bytes` padded past `full`): with `Truncated` only its
    /// first `sz` bytes, ending at the unreadable page.
    fn place_sized(&self, mut bytes: Vec<u8>, full: usize, sz: usize, argsz: Argsz) -> *mut u8 {
        bytes.resize(full + 64, 0);
        let truncated = argsz == Argsz::Truncated;
        self.place(if truncated { &bytes[..sz] } else { &bytes }, truncated)
    }

    fn read_back(&self, at: *mut u8, len: usize) -> Vec<u8> {
        // SAFETY: `at` came from `place` with at least `len` readable bytes after it.
        unsafe { std::slice::from_raw_parts(at, len) }.to_vec()
    }
}

struct Device {
    fd: i32,
    dev: Dev,
}

/// The objects of one sequence.
#[derive(Default)]
struct World {
    containers: Vec<i32>,
    groups: Vec<i32>,
    devices: Vec<Device>,
    bar: Option<(*mut u8, usize)>,
    /// (device fd, eventfd) of each MsiOn.
    eventfds: Vec<(i32, i32)>,
    /// Second processes holding a group (`Hold`): pid, and the pipe whose close ends them.
    holders: Vec<(i32, i32)>,
    /// A `Rawio { keep: false }` left CAP_SYS_RAWIO out of the effective set.
    rawio_dropped: bool,
}

/// The test devices and their IOMMU groups (the pair's two devices share `pair_group`).
#[derive(Clone, Debug)]
pub struct Platform {
    pub edu: String,
    pub igb: String,
    pub pair_edu: String,
    pub pair_rng: String,
    pub edu_group: u32,
    pub igb_group: u32,
    pub pair_group: u32,
    /// A machine without an IOMMU in vfio's no-IOMMU mode: groups are `/dev/vfio/noiommu-<N>`
    /// and there is no pair (its fields are empty).
    pub noiommu: bool,
}

impl Platform {
    /// From guest-setup.sh's VFIO_TEST_EDU, VFIO_TEST_IGB, VFIO_TEST_PAIR_EDU and
    /// VFIO_TEST_PAIR_RNG, and sysfs.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} (guest-setup.sh)"));
        let noiommu = noiommu_from_env();
        let (edu, igb, pair_edu) = (var("VFIO_TEST_EDU"), var("VFIO_TEST_IGB"), var("VFIO_TEST_PAIR_EDU"));
        Platform {
            edu_group: group_of(&edu),
            igb_group: group_of(&igb),
            pair_group: if noiommu { 0 } else { group_of(&pair_edu) },
            pair_rng: var("VFIO_TEST_PAIR_RNG"),
            edu,
            igb,
            pair_edu,
            noiommu,
        }
    }

    /// The node of `dev`'s group.
    pub fn group_node(&self, dev: Dev) -> String {
        let prefix = if self.noiommu { "noiommu-" } else { "" };
        format!("/dev/vfio/{prefix}{}", self.group(dev))
    }

    pub fn bdf(&self, dev: Dev) -> &str {
        match dev {
            Dev::Edu => &self.edu,
            Dev::Igb => &self.igb,
            Dev::PairEdu => &self.pair_edu,
            Dev::PairRng => &self.pair_rng,
        }
    }

    pub fn group(&self, dev: Dev) -> u32 {
        match dev {
            Dev::Edu => self.edu_group,
            Dev::Igb => self.igb_group,
            Dev::PairEdu | Dev::PairRng => self.pair_group,
        }
    }
}

/// The pair's virtio-rng's kernel driver, where every sequence starts.
const RNG_KERNEL_DRIVER: &str = "virtio-pci";

pub struct Explorer<W: Write, C: Calls> {
    out: W,
    calls: C,
    mem: Memory,
    foreign: i32,
    platform: Platform,
    /// In a child that is going to be killed: its answers are not recorded (they depend on
    /// when the kill lands); the parent records what the death left behind.
    mute: bool,
    /// A page shared with the children that die: the second thread's [`Progress`] at the kill.
    progress: *mut u32,
    /// Records written: the operations count of a run.
    pub ops: u64,
    /// Deaths, and those that landed while the second thread was inside a call (timing, so
    /// not recorded in the transcript: the run's summary line shows that the kills do land
    /// inside calls).
    pub deaths: (u64, u64),
}

/// Where the dying child's second thread is.
#[repr(u32)]
enum Progress {
    Before = 0,
    InCall = 1,
    Between = 2,
}

fn set_progress(page: usize, p: Progress) {
    // SAFETY: `page` is the Explorer's shared page, mapped for the process's life.
    unsafe { std::ptr::write_volatile(page as *mut u32, p as u32) };
}

fn errname(e: i32) -> String {
    let n = match e {
        0 => "0",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EBADFD => "EBADFD",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => return format!("E{e}"),
    };
    n.to_string()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// guest-setup.sh's VFIO_TEST_NOIOMMU: the machine has no IOMMU and vfio runs its no-IOMMU mode.
pub fn noiommu_from_env() -> bool {
    std::env::var("VFIO_TEST_NOIOMMU").is_ok_and(|v| v == "1")
}

fn group_of(bdf: &str) -> u32 {
    let link = match std::fs::read_link(format!("/sys/bus/pci/devices/{bdf}/iommu_group")) {
        Ok(link) => link,
        // A no-IOMMU device on a kernel without groups has no link (the preload answers one);
        // without the preload, the daemon's node for it is `noiommu-<N>` of its cdev
        // `noiommu-vfio<N>` (docs/noiommu.md), which is what a program must know then.
        Err(e) => {
            let device = std::path::PathBuf::from(format!("/sys/bus/pci/devices/{bdf}"));
            return vfio_shim_sys::noiommu::group_number(&device)
                .unwrap_or_else(|| panic!("iommu_group of {bdf}: {e}"));
        }
    };
    link.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).expect("group number")
}

fn iova_of(i: Iova) -> u64 {
    match i {
        Iova::Page(n) => IOVA_BASE + n as u64 * PAGE as u64,
        Iova::Zero => 0,
        Iova::Unaligned => IOVA_BASE + 0x800,
        Iova::Msi => 0xfee0_0000,
        Iova::Top => (1 << 48) - PAGE as u64,
        Iova::Beyond => 1 << 60,
        Iova::Wrap => u64::MAX - 2 * PAGE as u64 + 1,
    }
}

fn size_of(s: Size) -> u64 {
    match s {
        Size::Pages(n) => n as u64 * PAGE as u64,
        Size::Zero => 0,
        Size::Unaligned => 0x800,
        Size::Max => !(PAGE as u64 - 1),
        Size::All => 0,
    }
}

impl<W: Write, C: Calls> Explorer<W, C> {
    /// `shared`: the pool is shared memory (a memfd), as the CUSE node needs ([`Memory::new`]).
    pub fn new(out: W, calls: C, platform: Platform, shared: bool) -> Self {
        let null = CString::new("/dev/null").unwrap();
        // SAFETY: a valid C path.
        let foreign = unsafe { libc::open(null.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(foreign >= 0);
        // SAFETY: an anonymous shared mapping chosen by the kernel; no existing memory changes.
        let progress = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(progress != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        Explorer {
            out,
            calls,
            mem: Memory::new(shared),
            foreign,
            platform,
            mute: false,
            progress: progress.cast(),
            ops: 0,
            deaths: (0, 0),
        }
    }

    /// The transcript; the pair's virtio-rng is back on its kernel driver for whatever runs
    /// next in this VM.
    pub fn into_inner(mut self) -> W {
        let _ = self.restore_rng();
        self.out
    }

    fn rec(&mut self, line: std::fmt::Arguments<'_>) {
        if self.mute {
            return;
        }
        self.out.write_fmt(line).and_then(|_| self.out.write_all(b"\n")).expect("transcript write");
    }

    fn call_rec(&mut self, label: &str, (ret, err): (i64, i32), is_fd: bool) {
        self.ops += 1;
        let ret = if is_fd && ret >= 0 { "FD".to_string() } else { ret.to_string() };
        self.rec(format_args!("CALL {label} ret={ret} errno={}", errname(err)));
    }

    fn fd(&self, w: &World, r: FdRef) -> i32 {
        let at = |v: &[i32], n: u8| v.get(n as usize).copied().unwrap_or(STALE_FD);
        match r {
            FdRef::Container(n) => at(&w.containers, n),
            FdRef::Group(n) => at(&w.groups, n),
            FdRef::Device(n) => w.devices.get(n as usize).map(|d| d.fd).unwrap_or(STALE_FD),
            FdRef::Stale => STALE_FD,
            FdRef::Foreign => self.foreign,
        }
    }

    fn ioctl_arg(&mut self, fd: i32, req: u32, arg: u64) -> (i64, i32) {
        self.calls.ioctl(fd, req, arg)
    }

    fn ioctl_on(&mut self, w: &World, r: FdRef, req: u32, arg: u64) -> (i64, i32) {
        let fd = self.fd(w, r);
        self.calls.ioctl(fd, req, arg)
    }

    fn argsz_value(class: Argsz, full: usize, min: usize) -> usize {
        match class {
            Argsz::Zero => 0,
            Argsz::Short | Argsz::Truncated => min - 1,
            Argsz::Exact => full,
            Argsz::Large => full + 64,
        }
    }

    /// Runs one sequence; `seq` ("s12", "r3") names its records.
    pub fn run_sequence(&mut self, seq: &str, ops: &[Op]) {
        self.restore_rng();
        if let Some(k) = ops.iter().position(|o| matches!(o, Op::Die { .. })) {
            self.run_with_death(seq, ops, k);
        } else {
            let mut w = World::default();
            for (i, op) in ops.iter().enumerate() {
                let label = format!("{seq}.{i}.{}", op.name());
                self.step(&mut w, &label, *op);
            }
            self.teardown(seq, w);
        }
        // Not tracked by the op: a Rebind may have run in a child that died.
        if ops.iter().any(|o| matches!(o, Op::Rebind { .. })) {
            // With everything of the sequence closed, the group is free: the rng binds to its
            // kernel driver again at once (refused while anyone still owns the group's DMA).
            let r = self.restore_rng();
            self.call_rec(&format!("{seq}.end.rng"), r, false);
        }
    }

    /// `ops[..k]` in a child killed as `ops[k]` says; then, in this process, what the death
    /// left (the child's end, memory still pinned) and `ops[k + 1..]` from nothing, then
    /// whether any fd of ours is left over.
    fn run_with_death(&mut self, seq: &str, ops: &[Op], k: usize) {
        let Op::Die { at } = ops[k] else { unreachable!("position() found a Die") };
        let fds_before = open_fds();
        let avail_before = mem_available_kib();
        set_progress(self.progress as usize, Progress::Before);
        let pid = self.fork_child(99, |ex| {
            let mut w = World::default();
            for (i, op) in ops[..k].iter().enumerate() {
                ex.step(&mut w, &format!("{seq}.{i}.{}", op.name()), *op);
            }
            ex.die(&w, at);
        });
        let mut status = 0;
        // SAFETY: reaping our own child into a local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        let end = match (r == pid, libc::WIFSIGNALED(status), libc::WTERMSIG(status)) {
            (true, true, libc::SIGKILL) => "killed".to_string(),
            (true, true, sig) => format!("signal-{sig}"),
            (true, false, _) => format!("exit-{}", libc::WEXITSTATUS(status)),
            (false, _, _) => format!("waitpid-{}", errname(errno())),
        };
        // The child's 256 MiB (InMap) and its pins must be gone once it is reaped: a leak shows
        // as MemAvailable short by about that much.
        self.deaths.0 += 1;
        // SAFETY: reading the shared page the child wrote.
        if unsafe { std::ptr::read_volatile(self.progress) } == Progress::InCall as u32 {
            self.deaths.1 += 1;
        }
        let lost_mib = avail_before.saturating_sub(mem_available_kib()) / 1024;
        let pins = if lost_mib < 64 { "released".to_string() } else { format!("held-{lost_mib}MiB") };
        let label = format!("{seq}.{k}.die");
        self.call_rec(&label, (0, 0), false);
        self.rec(format_args!("OUT {label} child={end} pins={pins}"));
        let mut w = World::default();
        for (i, op) in ops.iter().enumerate().skip(k + 1) {
            self.step(&mut w, &format!("{seq}.{i}.{}", op.name()), *op);
        }
        self.teardown(seq, w);
        let left = open_fds().saturating_sub(fds_before);
        self.rec(format_args!("OUT {seq}.end.fds left={left}"));
    }

    /// Forks a process that closes what it inherited, opens `dev`'s group and keeps it open
    /// until the sequence's teardown; returns that open's answer.
    fn hold(&mut self, w: &mut World, dev: Dev) -> (i64, i32) {
        let node = self.platform.group_node(dev);
        let (mut answer, mut release) = ([0; 2], [0; 2]);
        // SAFETY: two pipe(2)s into local arrays.
        unsafe {
            assert_eq!(libc::pipe2(answer.as_mut_ptr(), libc::O_CLOEXEC), 0);
            assert_eq!(libc::pipe2(release.as_mut_ptr(), libc::O_CLOEXEC), 0);
        }
        let pid = self.fork_child(0, |ex| {
            // SAFETY: closing the parent's pipe ends in the child: the release pipe must see
            // EOF once the parent closes its end.
            unsafe {
                libc::close(answer[0]);
                libc::close(release[1]);
                for &(_, other) in &w.holders {
                    libc::close(other);
                }
            }
            if let Some((p, len)) = w.bar.take() {
                // SAFETY: the inherited copy of our BAR mapping.
                unsafe { libc::munmap(p.cast(), len) };
            }
            let inherited: Vec<i32> = w
                .devices
                .iter()
                .map(|d| d.fd)
                .chain(w.groups.iter().copied())
                .chain(w.containers.iter().copied())
                .collect();
            for fd in inherited {
                ex.calls.close(fd);
            }
            let (ret, err) = ex.calls.open(&node, libc::O_RDWR | libc::O_CLOEXEC);
            let msg = [ret as i32, err];
            let mut byte = 0u8;
            // SAFETY: writing our answer and reading the release pipe, both with local buffers.
            unsafe {
                libc::write(answer[1], msg.as_ptr().cast(), 8);
                while libc::read(release[0], (&mut byte as *mut u8).cast(), 1) < 0 && errno() == libc::EINTR {}
            }
        });
        let mut msg = [0i32; 2];
        // SAFETY: closing the child's pipe ends, then reading its 8-byte answer into a local.
        let n = unsafe {
            libc::close(answer[1]);
            libc::close(release[0]);
            let n = libc::read(answer[0], msg.as_mut_ptr().cast(), 8);
            libc::close(answer[0]);
            n
        };
        w.holders.push((pid, release[1]));
        if n == 8 {
            (msg[0] as i64, msg[1])
        } else {
            (-1, libc::EPIPE)
        }
    }

    /// Forks a child that runs `child` muted (its answers depend on timing or are reported
    /// another way) and then leaves with `_exit(code)`; returns its pid.
    fn fork_child(&mut self, code: i32, child: impl FnOnce(&mut Self)) -> i32 {
        self.out.flush().expect("transcript write");
        // SAFETY: fork(2) in a single-threaded process; the child runs `child` and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            self.mute = true;
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(self)));
            // SAFETY: leaving the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        pid
    }

    /// In the child: SIGKILL, now or while a second thread is inside a call.
    fn die(&mut self, w: &World, at: Death) -> ! {
        let container = w.containers.first().copied().unwrap_or(STALE_FD);
        let shared = self.progress as usize;
        let (ms, work): (u8, Box<dyn FnOnce() + Send>) = match at {
            Death::Now => (0, Box::new(|| {})),
            Death::InMap(ms) => (ms, Box::new(move || map_big(container, shared))),
            Death::InCalls(ms) => {
                let page = self.mem.pool as u64 + 20 * PAGE as u64;
                (ms, Box::new(move || loop_calls(container, page, shared)))
            }
        };
        if at != Death::Now {
            std::thread::spawn(work);
            std::thread::sleep(Duration::from_millis(ms as u64));
        }
        // SAFETY: kill(2) of ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        unreachable!("SIGKILL cannot be caught")
    }

    fn teardown(&mut self, seq: &str, mut w: World) {
        if let Some((p, len)) = w.bar.take() {
            // SAFETY: our own BAR mapping.
            unsafe { libc::munmap(p.cast(), len) };
        }
        let mut fds: Vec<i32> = w.devices.drain(..).map(|d| d.fd).collect();
        fds.append(&mut w.groups);
        fds.append(&mut w.containers);
        for (k, fd) in fds.into_iter().enumerate() {
            let r = self.calls.close(fd);
            self.call_rec(&format!("{seq}.end{k}.close"), r, false);
        }
        for (_, fd) in w.eventfds.drain(..) {
            // SAFETY: our eventfds.
            unsafe { libc::close(fd) };
        }
        // The holders end and are reaped before the next sequence starts. Every release pipe is
        // closed before any wait: a later holder may hold an earlier one's end.
        for &(_, release) in &w.holders {
            // SAFETY: closing our end of a release pipe.
            unsafe { libc::close(release) };
        }
        for (pid, _) in w.holders.drain(..) {
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        // The next sequence starts with the capability, whatever this one did with it.
        if w.rawio_dropped {
            let r = self.calls.set_rawio(true);
            assert_eq!(r.0, 0, "cannot give CAP_SYS_RAWIO back: errno {}", r.1);
        }
    }

    /// Puts the pair's virtio-rng back on its kernel driver wherever it is (a sequence, or an
    /// earlier process in this VM, moved it). Runs with nothing of the last sequence left
    /// open, so vfio-pci lets it go. The answer is the sysfs write's; on failure the next
    /// sequence tries again.
    fn restore_rng(&mut self) -> (i64, i32) {
        let bdf = self.platform.pair_rng.clone();
        // The host replay has no such device, and no sequence there moves it; a machine without
        // an IOMMU has no pair.
        let present = !bdf.is_empty() && std::path::Path::new(&format!("/sys/bus/pci/devices/{bdf}")).exists();
        if !present || driver_of(&bdf).as_deref() == Some(RNG_KERNEL_DRIVER) {
            return (0, 0);
        }
        let r = rebind(&bdf, Driver::Kernel);
        if driver_of(&bdf).as_deref() != Some(RNG_KERNEL_DRIVER) {
            return if r.0 == 0 { (-1, libc::ENODEV) } else { r };
        }
        r
    }

    fn open(&mut self, path: &str) -> (i64, i32) {
        self.calls.open(path, libc::O_RDWR | libc::O_CLOEXEC)
    }

    fn step(&mut self, w: &mut World, label: &str, op: Op) {
        match op {
            Op::OpenContainer => {
                let r = self.open("/dev/vfio/vfio");
                self.call_rec(label, r, true);
                if r.0 >= 0 {
                    w.containers.push(r.0 as i32);
                }
            }
            Op::OpenGroup { dev } => {
                let node = self.platform.group_node(dev);
                let r = self.open(&node);
                self.call_rec(label, r, true);
                if r.0 >= 0 {
                    w.groups.push(r.0 as i32);
                }
            }
            Op::Close { fd } => {
                // The foreign file stays open for later ops: close a duplicate of it.
                let raw = match fd {
                    // SAFETY: dup of our own /dev/null fd.
                    FdRef::Foreign => unsafe { libc::fcntl(self.foreign, libc::F_DUPFD_CLOEXEC, 0) },
                    _ => self.fd(w, fd),
                };
                let r = self.calls.close(raw);
                self.call_rec(label, r, false);
                if r.0 == 0 {
                    w.containers.retain(|&f| f != raw);
                    w.groups.retain(|&f| f != raw);
                    w.devices.retain(|d| d.fd != raw);
                    // The number may come back for another device: its eventfds are not that one's.
                    let (gone, kept) = w.eventfds.iter().partition(|&&(dev, _)| dev == raw);
                    w.eventfds = kept;
                    for (_, efd) in gone {
                        // SAFETY: closing our own eventfd.
                        unsafe { libc::close(efd) };
                    }
                }
            }
            Op::Dup { fd } => {
                let raw = self.fd(w, fd);
                let r = self.calls.fcntl(raw, libc::F_DUPFD_CLOEXEC, 0);
                self.call_rec(label, r, true);
                if r.0 >= 0 {
                    let new = r.0 as i32;
                    match fd {
                        FdRef::Container(_) => w.containers.push(new),
                        FdRef::Group(_) => w.groups.push(new),
                        FdRef::Device(n) => {
                            let dev = w.devices[n as usize].dev;
                            w.devices.push(Device { fd: new, dev })
                        }
                        FdRef::Stale | FdRef::Foreign => {
                            self.calls.close(new);
                        }
                    }
                }
            }
            Op::ApiVersion { c } => {
                let r = self.ioctl_on(w, c, abi::VFIO_GET_API_VERSION, 0);
                self.call_rec(label, r, false);
            }
            Op::CheckExtension { c, ext } => {
                let r = self.ioctl_on(w, c, abi::VFIO_CHECK_EXTENSION, ext);
                self.call_rec(label, r, false);
            }
            Op::SetIommu { c, ty } => {
                let r = self.ioctl_on(w, c, abi::VFIO_SET_IOMMU, ty);
                self.call_rec(label, r, false);
            }
            Op::GetInfo { c, argsz } => {
                let full = 256;
                let sz = Self::argsz_value(argsz, full, minsz::IOMMU_INFO);
                let mut bytes = vec![0u8; sz.max(minsz::IOMMU_INFO) + 64];
                bytes[..4].copy_from_slice(&(sz as u32).to_ne_bytes());
                let truncated = argsz == Argsz::Truncated;
                let placed = if truncated { &bytes[..sz] } else { &bytes[..] };
                let at = self.mem.place(placed, truncated);
                let r = self.ioctl_on(w, c, abi::VFIO_IOMMU_GET_INFO, at as u64);
                self.call_rec(label, r, false);
                if r.0 == 0 {
                    let back = self.mem.read_back(at, sz.max(minsz::IOMMU_INFO));
                    let hex: String = back.iter().map(|b| format!("{b:02x}")).collect();
                    self.rec(format_args!("INFO {label} hex={hex}"));
                }
            }
            Op::Map { c, flags, iova, size, vaddr, argsz } => {
                let va = match vaddr {
                    Vaddr::Pool(n) => self.mem.pool as u64 + (n as u64 % POOL_PAGES as u64) * PAGE as u64,
                    Vaddr::Unaligned => self.mem.pool as u64 + 0x800,
                    Vaddr::ReadOnly => self.mem.readonly as u64,
                    Vaddr::Unmapped => self.mem.hole as u64,
                    Vaddr::Null => 0,
                };
                let full = std::mem::size_of::<abi::vfio_iommu_type1_dma_map>();
                let sz = Self::argsz_value(argsz, full, minsz::DMA_MAP);
                let map = abi::vfio_iommu_type1_dma_map {
                    argsz: sz as u32,
                    flags,
                    vaddr: va,
                    iova: iova_of(iova),
                    size: if size == Size::All { u64::MAX } else { size_of(size) },
                };
                let at = self.mem.place_sized(map.as_bytes().to_vec(), full, sz, argsz);
                let r = self.ioctl_on(w, c, abi::VFIO_IOMMU_MAP_DMA, at as u64);
                self.call_rec(label, r, false);
            }
            Op::Unmap { c, flags, iova, size, bitmap, argsz } => {
                let with_bitmap = flags & abi::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0;
                let full = std::mem::size_of::<abi::vfio_iommu_type1_dma_unmap>()
                    + if with_bitmap { std::mem::size_of::<abi::vfio_bitmap>() } else { 0 };
                let sz = Self::argsz_value(argsz, full, minsz::DMA_UNMAP);
                let (iova_v, size_v) = match size {
                    Size::All => (iova_of(iova), 0),
                    s => (iova_of(iova), size_of(s)),
                };
                let un = abi::vfio_iommu_type1_dma_unmap { argsz: sz as u32, flags, iova: iova_v, size: size_v };
                let mut bytes = un.as_bytes().to_vec();
                let bm = self.bitmap_arg(bitmap, size_v);
                bytes.extend_from_slice(bm.0.as_bytes());
                let at = self.mem.place_sized(bytes, full, sz, argsz);
                let r = self.ioctl_on(w, c, abi::VFIO_IOMMU_UNMAP_DMA, at as u64);
                self.call_rec(label, r, false);
                if r.0 == 0 {
                    let back = self.mem.read_back(at, minsz::DMA_UNMAP);
                    let size_out = u64::from_ne_bytes(back[16..24].try_into().unwrap());
                    self.rec(format_args!("OUT {label} size={size_out:#x}"));
                    if with_bitmap {
                        self.record_bitmap(label, &bm.1);
                    }
                }
            }
            Op::Dirty { c, flags, iova, size, bitmap } => {
                let get = flags & abi::VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP != 0;
                let head = std::mem::size_of::<abi::vfio_iommu_type1_dirty_bitmap>();
                let size_v = size_of(size);
                let (bm, data) = self.bitmap_arg(bitmap, size_v);
                let getter = abi::vfio_iommu_type1_dirty_bitmap_get { iova: iova_of(iova), size: size_v, bitmap: bm };
                let full = head + if get { std::mem::size_of::<abi::vfio_iommu_type1_dirty_bitmap_get>() } else { 0 };
                let d = abi::vfio_iommu_type1_dirty_bitmap { argsz: full as u32, flags };
                let mut bytes = d.as_bytes().to_vec();
                bytes.extend_from_slice(getter.as_bytes());
                let at = self.mem.place(&bytes, false);
                let r = self.ioctl_on(w, c, abi::VFIO_IOMMU_DIRTY_PAGES, at as u64);
                self.call_rec(label, r, false);
                if r.0 == 0 && get {
                    self.record_bitmap(label, &data);
                }
            }
            Op::GroupStatus { g, argsz } => {
                let full = std::mem::size_of::<abi::vfio_group_status>();
                let sz = Self::argsz_value(argsz, full, minsz::GROUP_STATUS);
                let st = abi::vfio_group_status { argsz: sz as u32, flags: 0xdead_0000 };
                let at = self.mem.place_sized(st.as_bytes().to_vec(), full, sz, argsz);
                let r = self.ioctl_on(w, g, abi::VFIO_GROUP_GET_STATUS, at as u64);
                self.call_rec(label, r, false);
                if r.0 == 0 {
                    let back = self.mem.read_back(at, 8);
                    let flags = u32::from_ne_bytes(back[4..8].try_into().unwrap());
                    self.rec(format_args!("OUT {label} flags={flags:#x}"));
                }
            }
            Op::SetContainer { g, target } => {
                let cfd = self.fd(w, target);
                let at = self.mem.place(&cfd.to_ne_bytes(), false);
                let r = self.ioctl_on(w, g, abi::VFIO_GROUP_SET_CONTAINER, at as u64);
                self.call_rec(label, r, false);
            }
            Op::UnsetContainer { g } => {
                let r = self.ioctl_on(w, g, abi::VFIO_GROUP_UNSET_CONTAINER, 0);
                self.call_rec(label, r, false);
            }
            Op::GetDeviceFd { g, dev, name } => {
                let bdf = self.platform.bdf(dev).to_string();
                let other = self.platform.bdf(dev.other()).to_string();
                let text = match name {
                    Name::Exact => bdf.clone(),
                    Name::WithToken => {
                        format!("{bdf} vf_token=2ab74924-c335-45f4-9b16-8569e5b08258")
                    }
                    Name::Upper => bdf.to_uppercase(),
                    Name::OtherDevice => other,
                    Name::Unknown => "0000:00:1f.7".into(),
                    Name::Empty => String::new(),
                    Name::TrailingSpace => format!("{bdf} "),
                };
                let c = CString::new(text).unwrap();
                let r = self.ioctl_on(w, g, abi::VFIO_GROUP_GET_DEVICE_FD, c.as_ptr() as u64);
                self.call_rec(label, r, true);
                if r.0 >= 0 {
                    let dev = if name == Name::OtherDevice { dev.other() } else { dev };
                    w.devices.push(Device { fd: r.0 as i32, dev });
                }
            }
            Op::DeviceInfo { d } => {
                let mut info = [0u32; 6];
                info[0] = 24;
                let r = self.ioctl_on(w, d, abi::VFIO_DEVICE_GET_INFO, info.as_mut_ptr() as u64);
                self.call_rec(label, r, false);
                if r.0 == 0 {
                    self.rec(format_args!("OUT {label} flags={:#x} regions={} irqs={}", info[1], info[2], info[3]));
                }
            }
            Op::DeviceState { d } => {
                let fd = self.fd(w, d);
                match config_offset(fd) {
                    Err(e) => self.call_rec(label, (-1, e), false),
                    Ok(base) => {
                        self.call_rec(label, (0, 0), false);
                        let cmd = pread16(fd, base + 4);
                        let msi = msi_state(fd, base);
                        self.rec(format_args!("OUT {label} command={cmd:#x} {msi}"));
                    }
                }
            }
            Op::BusMaster { d } => {
                let fd = self.fd(w, d);
                let r = match config_offset(fd) {
                    Err(e) => (-1, e),
                    Ok(base) => {
                        let cmd = pread16(fd, base + 4) | 0x4;
                        // SAFETY: a 2-byte write from a local into the device's config region.
                        call(|| unsafe { libc::pwrite(fd, (&cmd as *const u16).cast(), 2, (base + 4) as i64) } as i64)
                    }
                };
                self.call_rec(label, r, false);
            }
            Op::MsiOn { d } => {
                let fd = self.fd(w, d);
                let index = match w.devices.iter().find(|x| x.fd == fd) {
                    Some(Device { dev: Dev::Igb, .. }) => VFIO_PCI_MSIX_IRQ_INDEX,
                    _ => VFIO_PCI_MSI_IRQ_INDEX,
                };
                // SAFETY: eventfd(2) with constant flags.
                let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
                w.eventfds.push((fd, efd));
                let set: [u32; 6] =
                    [24, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, index, 0, 1, efd as u32];
                let r = self.ioctl_arg(fd, abi::VFIO_DEVICE_SET_IRQS, set.as_ptr() as u64);
                self.call_rec(label, r, false);
            }
            Op::MmapBar { d } => {
                let fd = self.fd(w, d);
                if w.bar.is_some() {
                    self.call_rec(label, (-1, libc::EEXIST), false);
                    return;
                }
                let r = match bar0(fd) {
                    Err(e) => (-1, e),
                    Ok((off, len)) => {
                        // SAFETY: a shared mapping of the device's BAR chosen by the kernel.
                        let p = unsafe {
                            libc::mmap(
                                std::ptr::null_mut(),
                                len,
                                libc::PROT_READ | libc::PROT_WRITE,
                                libc::MAP_SHARED,
                                fd,
                                off as i64,
                            )
                        };
                        if p == libc::MAP_FAILED {
                            (-1, errno())
                        } else {
                            w.bar = Some((p.cast(), len));
                            (0, 0)
                        }
                    }
                };
                self.call_rec(label, r, false);
            }
            Op::MunmapBar => {
                let r = match w.bar.take() {
                    // SAFETY: our own BAR mapping.
                    Some((p, len)) => call(|| unsafe { libc::munmap(p.cast(), len) } as i64),
                    None => (-1, libc::EINVAL),
                };
                self.call_rec(label, r, false);
            }
            Op::Dma { d, from, to } => {
                let fd = self.fd(w, d);
                let is_edu = w.devices.iter().any(|x| x.fd == fd && x.dev.is_edu());
                // Without an IOMMU the IOVAs would be physical addresses of the guest's own
                // memory: never generated there (ops::Scope), and refused from a file too.
                let result = if self.platform.noiommu {
                    "refused-noiommu".into()
                } else if is_edu {
                    self.edu_dma(fd, iova_of(from), iova_of(to))
                } else {
                    "no-edu".into()
                };
                self.ops += 1;
                self.rec(format_args!("DMA {label} result={result}"));
            }
            Op::Irq { d } => {
                let fd = self.fd(w, d);
                let is_edu = w.devices.iter().any(|x| x.fd == fd && x.dev.is_edu());
                let efd = w.eventfds.iter().rev().find(|(dev, _)| *dev == fd).map(|(_, e)| *e);
                let result = match (is_edu, efd) {
                    (false, _) => "no-edu".to_string(),
                    (true, None) => "no-eventfd".to_string(),
                    (true, Some(efd)) => edu_irq(fd, efd),
                };
                self.ops += 1;
                self.rec(format_args!("OUT {label} irq={result}"));
            }
            Op::Die { .. } => panic!("{label}: one die per sequence"),
            Op::Hold { dev } => {
                let r = self.hold(w, dev);
                self.call_rec(label, r, true);
            }
            Op::Rawio { keep } => {
                let r = self.calls.set_rawio(keep);
                w.rawio_dropped = !keep;
                self.call_rec(label, r, false);
            }
            Op::Rebind { to } => {
                let bdf = self.platform.pair_rng.clone();
                if driver_of(&bdf).as_deref() == Some("vfio-pci") && to != Driver::Vfio {
                    // vfio-pci's remove waits for every user of the device to go: with a device
                    // fd open (or a file the shim holds for the group's container) the write
                    // would never return. Not a move the explorer makes.
                    self.call_rec(label, (-1, libc::EALREADY), false);
                } else {
                    let r = rebind(&bdf, to);
                    self.call_rec(label, r, false);
                }
                let now = driver_of(&bdf).unwrap_or_else(|| "none".into());
                self.rec(format_args!("OUT {label} driver={now}"));
            }
            Op::Vfs { fd, req } => {
                let raw = self.fd(w, fd);
                let one: i32 = 1;
                let int_arg = &one as *const i32 as u64;
                let r = match req {
                    Vfs::Fioclex => self.calls.ioctl(raw, libc::FIOCLEX as u32, 0),
                    Vfs::Fionclex => self.calls.ioctl(raw, libc::FIONCLEX as u32, 0),
                    Vfs::Fionbio => self.calls.ioctl(raw, libc::FIONBIO as u32, int_arg),
                    Vfs::Fioasync => self.calls.ioctl(raw, libc::FIOASYNC as u32, int_arg),
                    Vfs::GetFd => self.calls.fcntl(raw, libc::F_GETFD, 0),
                    Vfs::GetFl => self.calls.fcntl(raw, libc::F_GETFL, 0),
                    Vfs::SetFlNonblock => self.calls.fcntl(raw, libc::F_SETFL, libc::O_NONBLOCK as i64),
                };
                self.call_rec(label, r, false);
            }
        }
    }

    /// A caller's bitmap for `size` bytes of 4 KiB pages, pre-filled with 0xa5 (type1 zeroes
    /// nothing it does not report), as the struct and its backing bytes.
    fn bitmap_arg(&self, class: Bitmap, size: u64) -> (abi::vfio_bitmap, Vec<u8>) {
        let pages = (size / PAGE as u64).min(4096);
        let bytes = (pages.div_ceil(64) * 8).max(8) as usize;
        let data = vec![0xa5u8; bytes];
        let (pgsize, len) = match class {
            Bitmap::None => (0, 0),
            Bitmap::Good => (PAGE as u64, bytes as u64),
            Bitmap::WrongPgsize => (2 * PAGE as u64, bytes as u64),
            Bitmap::TooSmall => (PAGE as u64, 0),
        };
        // The kernel writes into `data` through this pointer; it lives until recorded: the
        // vector is returned with the struct and read after the call.
        (
            abi::vfio_bitmap { pgsize, size: len, data: if class == Bitmap::None { 0 } else { data.as_ptr() as u64 } },
            data,
        )
    }

    fn record_bitmap(&mut self, label: &str, data: &[u8]) {
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        self.rec(format_args!("OUT {label} bitmap={hex}"));
    }

    /// edu DMA from `from` into its buffer, then out to `to`; which pool pages changed, and
    /// from which page each took its bytes ("p3<-p1", "p3<-?"), or "none".
    fn edu_dma(&mut self, fd: i32, from: u64, to: u64) -> String {
        let (off, len) = match bar0(fd) {
            Ok(b) => b,
            Err(e) => return format!("bar-{}", errname(e)),
        };
        if let Ok(base) = config_offset(fd) {
            let cmd = pread16(fd, base + 4) | 0x6;
            // SAFETY: a 2-byte write from a local into the device's config region.
            unsafe { libc::pwrite(fd, (&cmd as *const u16).cast(), 2, (base + 4) as i64) };
        }
        // SAFETY: a shared mapping of the device's BAR chosen by the kernel.
        let bar = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, off as i64)
        };
        if bar == libc::MAP_FAILED {
            return format!("mmap-{}", errname(errno()));
        }
        let before: Vec<Vec<u8>> = (0..POOL_PAGES)
            .map(|n| {
                let p = self.mem.pool_page(n);
                p.fill(0x10 + n as u8);
                p.to_vec()
            })
            .collect();
        let regs = bar.cast::<u64>();
        let run = |src: u64, dst: u64, cmd: u64| -> bool {
            // SAFETY: edu's DMA registers at 0x80..0xa0 of its 1 MiB BAR0, volatile MMIO.
            unsafe {
                std::ptr::write_volatile(regs.add(0x80 / 8), src);
                std::ptr::write_volatile(regs.add(0x88 / 8), dst);
                std::ptr::write_volatile(regs.add(0x90 / 8), PAGE as u64);
                std::ptr::write_volatile(regs.add(0x98 / 8), cmd);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            // SAFETY: as above, the command register.
            while unsafe { std::ptr::read_volatile(regs.add(0x98 / 8)) } & 1 != 0 {
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            true
        };
        let ok = run(from, 0x40000, 1) && run(0x40000, to, 1 | 2);
        // SAFETY: unmapping the mapping just made.
        unsafe { libc::munmap(bar, len) };
        if !ok {
            return "timeout".into();
        }
        let mut changed = Vec::new();
        for n in 0..POOL_PAGES {
            let now = self.mem.pool_page(n).to_vec();
            if now != before[n] {
                let src = before.iter().position(|b| *b == now).map(|j| format!("p{j}")).unwrap_or("?".into());
                changed.push(format!("p{n}<-{src}"));
            }
        }
        if changed.is_empty() {
            "none".into()
        } else {
            changed.join(",")
        }
    }
}

/// MAP_DMA of 256 MiB of fresh memory at 1 GiB: the pin takes long enough under TCG for a
/// kill to land inside it.
fn map_big(container: i32, shared: usize) {
    const LEN: usize = 256 << 20;
    let p = mmap(LEN, libc::PROT_READ | libc::PROT_WRITE);
    let map = abi::vfio_iommu_type1_dma_map {
        argsz: std::mem::size_of::<abi::vfio_iommu_type1_dma_map>() as u32,
        flags: abi::VFIO_DMA_MAP_FLAG_READ | abi::VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: p as u64,
        iova: 1 << 30,
        size: LEN as u64,
    };
    set_progress(shared, Progress::InCall);
    // SAFETY: MAP_DMA with a struct of ours describing our own fresh mapping.
    unsafe { libc::ioctl(container, abi::VFIO_IOMMU_MAP_DMA as libc::c_ulong, &map) };
    set_progress(shared, Progress::Between);
}

/// MAP, GET_INFO and UNMAP of one pool page at 2 GiB, until the process dies.
fn loop_calls(container: i32, page: u64, shared: usize) -> ! {
    let size = PAGE as u64;
    let map = abi::vfio_iommu_type1_dma_map {
        argsz: std::mem::size_of::<abi::vfio_iommu_type1_dma_map>() as u32,
        flags: abi::VFIO_DMA_MAP_FLAG_READ | abi::VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: page,
        iova: 2 << 30,
        size,
    };
    let mut info = [0u8; 256];
    info[..4].copy_from_slice(&256u32.to_ne_bytes());
    loop {
        let mut un = abi::vfio_iommu_type1_dma_unmap {
            argsz: std::mem::size_of::<abi::vfio_iommu_type1_dma_unmap>() as u32,
            flags: 0,
            iova: 2 << 30,
            size,
        };
        set_progress(shared, Progress::InCall);
        // SAFETY: the three calls take structs of ours; the page is the pool's, alive until exit.
        unsafe {
            libc::ioctl(container, abi::VFIO_IOMMU_MAP_DMA as libc::c_ulong, &map);
            libc::ioctl(container, abi::VFIO_IOMMU_GET_INFO as libc::c_ulong, info.as_mut_ptr());
            libc::ioctl(container, abi::VFIO_IOMMU_UNMAP_DMA as libc::c_ulong, &mut un);
        }
        set_progress(shared, Progress::Between);
        std::thread::yield_now();
    }
}

/// The driver bound to a PCI device, by name.
fn driver_of(bdf: &str) -> Option<String> {
    let dev = format!("/sys/bus/pci/devices/{bdf}");
    vfio_shim_sys::kernel::driver_name(std::path::Path::new(&dev)).unwrap_or_else(|e| panic!("{dev}/driver: {e}"))
}

/// A sysfs write, as the caller's (ret, errno).
fn sysfs_write(path: &str, text: &str) -> (i64, i32) {
    match std::fs::write(path, text) {
        Ok(()) => (0, 0),
        Err(e) => (-1, e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Moves a PCI device to `to` as an administrator does: unbind from its driver, then
/// `driver_override` and `drivers_probe`. The answer is the first write that failed; whether
/// the probe bound the driver shows in the driver the caller reads afterwards.
fn rebind(bdf: &str, to: Driver) -> (i64, i32) {
    let dev = format!("/sys/bus/pci/devices/{bdf}");
    let target = match to {
        Driver::None => None,
        Driver::Vfio => Some("vfio-pci"),
        Driver::Kernel => Some(RNG_KERNEL_DRIVER),
    };
    let current = driver_of(bdf);
    if current.is_some() && current.as_deref() == target {
        return (0, 0);
    }
    if current.is_some() {
        let r = sysfs_write(&format!("{dev}/driver/unbind"), bdf);
        if r.0 != 0 {
            return r;
        }
    }
    // An empty override (a lone newline) clears it: with none, no driver probes the device.
    let r = sysfs_write(&format!("{dev}/driver_override"), target.unwrap_or("\n"));
    if r.0 != 0 || target.is_none() {
        return r;
    }
    sysfs_write("/sys/bus/pci/drivers_probe", bdf)
}

/// Open fds of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn mem_available_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Raises edu's interrupt (register 0x60), waits up to a second for the eventfd, acks it.
fn edu_irq(fd: i32, efd: i32) -> String {
    let (off, len) = match bar0(fd) {
        Ok(b) => b,
        Err(e) => return format!("bar-{}", errname(e)),
    };
    // SAFETY: a shared mapping of the device's BAR chosen by the kernel.
    let bar = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, off as i64)
    };
    if bar == libc::MAP_FAILED {
        return format!("mmap-{}", errname(errno()));
    }
    let regs = bar.cast::<u32>();
    // SAFETY: edu's interrupt raise register, volatile MMIO in its BAR0.
    unsafe { std::ptr::write_volatile(regs.add(0x60 / 4), 1) };
    let mut pfd = libc::pollfd { fd: efd, events: libc::POLLIN, revents: 0 };
    // The MSI is raised by this MMIO write and taken by this (only) vCPU before the write
    // returns to us; none comes at all without MSI and bus mastering on. The wait is slack.
    // SAFETY: one pollfd of ours.
    let n = unsafe { libc::poll(&mut pfd, 1, 20) };
    let mut count = 0u64;
    if n == 1 {
        // SAFETY: an 8-byte read of the eventfd counter into a local.
        unsafe { libc::read(efd, (&mut count as *mut u64).cast(), 8) };
    }
    // SAFETY: edu's interrupt acknowledge register, then unmapping our mapping.
    unsafe {
        std::ptr::write_volatile(regs.add(0x64 / 4), 1);
        libc::munmap(bar, len);
    }
    if n == 1 {
        "fired".into()
    } else {
        "none".into()
    }
}

fn region_info(fd: i32, index: u32) -> Result<(u64, u64), i32> {
    // struct vfio_region_info: argsz, flags, index, cap_offset, size, offset
    let mut info = [0u64; 4];
    let head = info.as_mut_ptr().cast::<u32>();
    // SAFETY: writing the first u32 fields of our own 32-byte buffer.
    unsafe {
        *head = 32;
        *head.add(2) = index;
    }
    // SAFETY: a valid vfio_region_info buffer of ours.
    let r = unsafe { libc::ioctl(fd, abi::VFIO_DEVICE_GET_REGION_INFO as libc::c_ulong, info.as_mut_ptr()) };
    if r < 0 {
        return Err(errno());
    }
    Ok((info[3], info[2]))
}

fn config_offset(fd: i32) -> Result<u64, i32> {
    region_info(fd, VFIO_PCI_CONFIG_REGION_INDEX).map(|(off, _)| off)
}

fn bar0(fd: i32) -> Result<(u64, usize), i32> {
    region_info(fd, 0).map(|(off, size)| (off, size as usize))
}

fn pread16(fd: i32, off: u64) -> u16 {
    let mut v = 0u16;
    // SAFETY: a 2-byte read into a local.
    unsafe { libc::pread(fd, (&mut v as *mut u16).cast(), 2, off as i64) };
    v
}

/// The MSI and MSI-X enable bits as vfio-pci's virtual config space shows them.
fn msi_state(fd: i32, base: u64) -> String {
    let mut pos = pread16(fd, base + 0x34) as u64 & 0xfc;
    let (mut msi, mut msix) = ("-".to_string(), "-".to_string());
    for _ in 0..48 {
        if pos < 0x40 {
            break;
        }
        let hdr = pread16(fd, base + pos);
        let ctrl = pread16(fd, base + pos + 2);
        match hdr & 0xff {
            0x05 => msi = (ctrl & 1).to_string(),
            0x11 => msix = ((ctrl >> 15) & 1).to_string(),
            _ => {}
        }
        pos = (hdr >> 8) as u64 & 0xfc;
    }
    format!("msi={msi} msix={msix}")
}
