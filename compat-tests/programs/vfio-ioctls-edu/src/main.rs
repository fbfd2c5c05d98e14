//! vfio-ioctls-edu: drives the edu device the way a rust-vmm VMM does. A KVM VM and its
//! KVM-VFIO device through `kvm-ioctls`; a `VfioContainer` given that device (so adding the
//! group registers it with KVM, as cloud-hypervisor does); `VfioDevice::new` on edu's sysfs
//! path; 2 MiB of anonymous memory mapped at IOVA 0x100000 with `vfio_dma_map`; then edu's
//! DMA engine moves a pattern memory -> edu -> memory at another offset, through the IOMMU,
//! and the program checks it landed. Prints `VFIO-IOCTLS-EDU: ok (...)` or `... FAIL: ...`.
//!
//! Usage: vfio-ioctls-edu <edu-bdf>

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_create_device, kvm_device_type_KVM_DEV_TYPE_VFIO};
use kvm_ioctls::Kvm;
use vfio_bindings::bindings::vfio::{VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioDeviceFd};

const MEM: usize = 2 << 20;
const IOVA: u64 = 0x10_0000; // inside edu's 28-bit DMA mask
const SRC: u64 = 0x1000;
const DST: u64 = 0x8_0000;
const LEN: usize = 4096;
const EDU_BUF: u64 = 0x4_0000;
const EDU_IDENT: u32 = 0x0100_00ed;

fn read32(dev: &VfioDevice, index: u32, at: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.region_read(index, &mut b, at);
    u32::from_le_bytes(b)
}

fn write32(dev: &VfioDevice, index: u32, at: u64, v: u32) {
    dev.region_write(index, &v.to_le_bytes(), at);
}

fn write64(dev: &VfioDevice, index: u32, at: u64, v: u64) {
    dev.region_write(index, &v.to_le_bytes(), at);
}

fn dma(dev: &VfioDevice, src: u64, dst: u64, to_ram: bool) -> Result<(), String> {
    write64(dev, VFIO_PCI_BAR0_REGION_INDEX, 0x80, src);
    write64(dev, VFIO_PCI_BAR0_REGION_INDEX, 0x88, dst);
    write64(dev, VFIO_PCI_BAR0_REGION_INDEX, 0x90, LEN as u64);
    write32(dev, VFIO_PCI_BAR0_REGION_INDEX, 0x98, 1 | if to_ram { 2 } else { 0 });
    let end = Instant::now() + Duration::from_secs(30);
    while read32(dev, VFIO_PCI_BAR0_REGION_INDEX, 0x98) & 1 != 0 {
        if Instant::now() > end {
            return Err("edu DMA still busy after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn run(bdf: &str) -> Result<String, String> {
    let kvm = Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let mut create = kvm_create_device { type_: kvm_device_type_KVM_DEV_TYPE_VFIO, fd: 0, flags: 0 };
    let kvm_vfio = vm.create_device(&mut create).map_err(|e| format!("KVM_CREATE_DEVICE(VFIO): {e}"))?;
    let container = Arc::new(
        VfioContainer::new(Some(Arc::new(VfioDeviceFd::new_from_kvm(kvm_vfio))))
            .map_err(|e| format!("VfioContainer::new: {e}"))?,
    );
    let sysfs = PathBuf::from(format!("/sys/bus/pci/devices/{bdf}"));
    let dev = VfioDevice::new(&sysfs, container.clone()).map_err(|e| format!("VfioDevice::new({bdf}): {e}"))?;

    // SAFETY: a fresh private anonymous mapping, owned by this function until munmap.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return Err("mmap failed".into());
    }
    let mem = mem.cast::<u8>();
    // SAFETY: only volatile accesses and the device's DMA touch `mem` from here on, as the
    // VfioOps contract asks; it is unmapped from the IOMMU before munmap.
    unsafe { container.vfio_dma_map(IOVA, MEM, mem) }.map_err(|e| format!("vfio_dma_map: {e}"))?;

    let ident = read32(&dev, VFIO_PCI_BAR0_REGION_INDEX, 0);
    if ident != EDU_IDENT {
        return Err(format!("edu ident {ident:#x}, expected {EDU_IDENT:#x}"));
    }
    // Memory decoding and bus mastering on, in the device's own config space.
    let cmd = read32(&dev, VFIO_PCI_CONFIG_REGION_INDEX, 4) & 0xffff;
    dev.region_write(VFIO_PCI_CONFIG_REGION_INDEX, &((cmd | 0x6) as u16).to_le_bytes(), 4);
    for i in 0..LEN {
        // SAFETY: inside the mapping; volatile, as the device may access it.
        unsafe { mem.add(SRC as usize + i).write_volatile((i * 7 + 0x5a) as u8) };
        // SAFETY: as above.
        unsafe { mem.add(DST as usize + i).write_volatile(0) };
    }
    dma(&dev, IOVA + SRC, EDU_BUF, false)?;
    dma(&dev, EDU_BUF, IOVA + DST, true)?;
    // SAFETY: inside the mapping; volatile.
    let bad =
        (0..LEN).filter(|&i| unsafe { mem.add(DST as usize + i).read_volatile() } != (i * 7 + 0x5a) as u8).count();
    container.vfio_dma_unmap(IOVA, MEM).map_err(|e| format!("vfio_dma_unmap: {e}"))?;
    // SAFETY: our mapping, no longer mapped in the IOMMU.
    unsafe { libc::munmap(mem.cast(), MEM) };
    if bad != 0 {
        return Err(format!("{bad} of {LEN} bytes did not land"));
    }
    Ok(format!(
        "edu {bdf} through VfioContainer (KVM-VFIO device from kvm-ioctls) and VfioDevice; {LEN} bytes \
         IOVA {:#x} -> edu {EDU_BUF:#x} -> IOVA {:#x}",
        IOVA + SRC,
        IOVA + DST
    ))
}

fn main() {
    let Some(bdf) = std::env::args().nth(1) else {
        eprintln!("usage: vfio-ioctls-edu <edu-bdf>");
        std::process::exit(2);
    };
    match run(&bdf) {
        Ok(what) => println!("VFIO-IOCTLS-EDU: ok ({what})"),
        Err(e) => {
            println!("VFIO-IOCTLS-EDU: FAIL: {e}");
            std::process::exit(1);
        }
    }
}
