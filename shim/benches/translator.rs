//! Translator + ledger cost over the fake backend: MAP+UNMAP pairs of 4 KiB with 1, 1,000
//! and 65,534 other mappings live (65,535 in all during the pair), and the heap held by a
//! container at 65,535 mappings. `cargo bench -p vfio-shim --bench translator`.
//!
//! The fake backend keeps its own area map, so the figures include one more O(log n) tree
//! operation per call than the translator alone needs: they are an upper bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use vfio_shim::abi::*;
use vfio_shim::arg::BufferArg;
use vfio_shim::fake::FakeBackend;
use vfio_shim::{ContainerId, FdTarget, Shim};
use zerocopy::IntoBytes;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const RW: u32 = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;

fn container(v2: bool) -> (Shim<FakeBackend>, ContainerId) {
    let mut shim = Shim::new(FakeBackend::new().with_group(7, &["0000:00:03.0"]));
    let c = shim.open_container().unwrap();
    let g = shim.open_group(7).unwrap();
    let mut fd = BufferArg::new(100i32.to_ne_bytes().to_vec());
    shim.group_ioctl(g, VFIO_GROUP_SET_CONTAINER, &mut fd, &|_| FdTarget::Container(c)).unwrap();
    let ty = if v2 { VFIO_TYPE1v2_IOMMU } else { VFIO_TYPE1_IOMMU };
    shim.container_ioctl(c, VFIO_SET_IOMMU, ty, &mut BufferArg::default()).unwrap();
    (shim, c)
}

fn map(shim: &mut Shim<FakeBackend>, c: ContainerId, iova: u64) {
    let m = vfio_iommu_type1_dma_map { argsz: 32, flags: RW, vaddr: 0x7f00_0000_0000, iova, size: 4096 };
    let mut arg = BufferArg::new(m.as_bytes().to_vec());
    shim.container_ioctl(c, VFIO_IOMMU_MAP_DMA, 0, &mut arg).unwrap();
}

fn unmap(shim: &mut Shim<FakeBackend>, c: ContainerId, iova: u64) {
    let u = vfio_iommu_type1_dma_unmap { argsz: 24, flags: 0, iova, size: 4096 };
    let mut arg = BufferArg::new(u.as_bytes().to_vec());
    shim.container_ioctl(c, VFIO_IOMMU_UNMAP_DMA, 0, &mut arg).unwrap();
    assert_eq!(arg.get::<vfio_iommu_type1_dma_unmap>().size, 4096);
}

fn pair_cost(v2: bool, live: u64) -> f64 {
    let (mut shim, c) = container(v2);
    for n in 0..live {
        map(&mut shim, c, n * 4096);
    }
    let iova = 0x8000_0000u64;
    let iters = 200_000u32;
    for _ in 0..1000 {
        map(&mut shim, c, iova);
        unmap(&mut shim, c, iova);
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            map(&mut shim, c, black_box(iova));
            unmap(&mut shim, c, black_box(iova));
        }
        let ns = t.elapsed().as_nanos() as f64 / (2.0 * iters as f64);
        best = best.min(ns);
    }
    best
}

fn heap_at(mappings: u64) -> isize {
    let before = LIVE.load(Ordering::Relaxed);
    let (mut shim, c) = container(true);
    let base = LIVE.load(Ordering::Relaxed);
    for n in 0..mappings {
        map(&mut shim, c, n * 4096);
    }
    let after = LIVE.load(Ordering::Relaxed);
    black_box(&shim);
    drop(shim);
    let _ = before;
    after - base
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("translator+ledger over the fake backend, 4 KiB MAP+UNMAP pairs (best of 5 runs)");
    println!("{:<10} {:>14} {:>14}", "live", "v1 ns/op", "v2 ns/op");
    for live in [0u64, 999, 65534] {
        println!("{:<10} {:>14.0} {:>14.0}", live + 1, pair_cost(false, live), pair_cost(true, live));
    }
    let held = heap_at(65535);
    println!(
        "heap held at 65535 mappings: {:.2} MiB (translator ledger + fake backend's area map)",
        held as f64 / (1 << 20) as f64
    );
}
