//! type1's DMA ioctls on a container: `GET_INFO`, `MAP_DMA`, `UNMAP_DMA` and `DIRTY_PAGES`,
//! with type1's checks in type1's order (T1 = vfio_iommu_type1.c).

use super::*;

impl<B: Backend> Shim<B> {
    /// T1:2836.
    pub(super) fn get_info(&mut self, id: ContainerId, mem: &mut dyn ArgMemory) -> Result<(), Errno> {
        let mut head = [0u8; minsz::IOMMU_INFO];
        mem.read_sized(&mut head)?;
        let argsz = u32::from_ne_bytes(head[..4].try_into().expect("4 bytes"));
        let (_, _, iommu) = self.iommu_mut(id);
        let src = InfoSource { pgsizes: iommu.pgsizes, dma_avail: iommu.dma_avail, iova_ranges: &iommu.iova_ranges };
        let (reply, caps) = info::encode(&src, argsz);
        if let Some(caps) = caps {
            mem.write(size_of::<vfio_iommu_type1_info>(), &caps)?;
        }
        let n = (argsz as usize).min(size_of::<vfio_iommu_type1_info>());
        mem.write(0, &reply.as_bytes()[..n])
    }

    /// T1:2895 and `vfio_dma_do_map` (T1:1680), up to the native call, which comes back with
    /// what [`Shim::dma_done`] records after it (`None`: nothing native to do).
    pub(super) fn map_dma(
        &mut self,
        id: ContainerId,
        mem: &mut dyn ArgMemory,
    ) -> Result<Option<(DmaOp, Resume)>, Errno> {
        let map: vfio_iommu_type1_dma_map = read_sized(mem)?;
        let known = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | VFIO_DMA_MAP_FLAG_VADDR;
        if map.flags & !known != 0 {
            return Err(Errno::EINVAL);
        }
        let set_vaddr = map.flags & VFIO_DMA_MAP_FLAG_VADDR != 0;
        let (iova, vaddr, size) = (map.iova, map.vaddr, map.size);
        if size == 0 {
            return Err(Errno::EINVAL);
        }
        let last = iova.checked_add(size - 1).ok_or(Errno::EOVERFLOW)?;
        vaddr.checked_add(size - 1).ok_or(Errno::EOVERFLOW)?;
        let prot =
            Prot { read: map.flags & VFIO_DMA_MAP_FLAG_READ != 0, write: map.flags & VFIO_DMA_MAP_FLAG_WRITE != 0 };
        let any_prot = prot.read || prot.write;
        if any_prot == set_vaddr {
            return Err(Errno::EINVAL);
        }

        let (_, _, iommu) = self.iommu_mut(id);
        let pgsize = iommu.min_pgsize();
        if (size | iova | vaddr) & (pgsize - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        let existing = iommu.ledger.find_overlap(iova, size);
        if set_vaddr {
            return match existing {
                None => Err(Errno::ENOENT),
                Some(m) if m.iova != iova || m.size != size => Err(Errno::EINVAL),
                Some(m) if !m.vaddr_invalid && !iommu.foreign_vaddrs.contains(&m.iova) => Err(Errno::EINVAL),
                Some(m) => {
                    iommu.ledger.set_vaddr(m.iova, false, Some(vaddr));
                    iommu.foreign_vaddrs.remove(&m.iova);
                    Ok(None)
                }
            };
        }
        if existing.is_some() {
            return Err(Errno::EEXIST);
        }
        if iommu.dma_avail == 0 {
            return Err(Errno::ENOSPC);
        }
        if !iommu.iova_valid(iova, last) {
            return Err(Errno::EINVAL);
        }
        let m = Mapping { iova, size, vaddr, prot, vaddr_invalid: false };
        Ok(Some((DmaOp::Map { iova, vaddr, length: size, prot }, Resume::Map(m))))
    }

    /// What a MAP or UNMAP records once its native call succeeded.
    pub(super) fn dma_done(&mut self, id: ContainerId, resume: Resume, mem: &mut dyn ArgMemory) -> Result<(), Errno> {
        let (_, _, iommu) = self.iommu_mut(id);
        match resume {
            Resume::Map(m) => {
                iommu.ledger.insert(m);
                let pgsize = iommu.min_pgsize();
                iommu.dirty.mapped(&m, pgsize);
                iommu.dma_avail -= 1;
                Ok(())
            }
            Resume::Unmap { mut unmap, first, end, count, unmapped } => {
                for _ in 0..count {
                    // The first victim starts at `first`; none straddles it.
                    let m = if count == 1 { iommu.ledger.remove(first) } else { iommu.ledger.pop_first_in(first, end) };
                    let iova = m.expect("counted at the begin").iova;
                    iommu.dirty.unmapped(iova);
                    iommu.foreign_vaddrs.remove(&iova);
                }
                iommu.dma_avail += count;
                unmap.size = unmapped;
                mem.write(0, unmap.as_bytes())
            }
        }
    }

    /// T1:2914 and `vfio_dma_do_unmap` (T1:1391), up to the native call (as [`Shim::map_dma`]).
    pub(super) fn unmap_dma(
        &mut self,
        id: ContainerId,
        mem: &mut dyn ArgMemory,
    ) -> Result<Option<(DmaOp, Resume)>, Errno> {
        let mut unmap: vfio_iommu_type1_dma_unmap = read_sized(mem)?;
        let argsz = unmap.argsz;
        let known = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_VADDR | VFIO_DMA_UNMAP_FLAG_ALL;
        if unmap.flags & !known != 0 {
            return Err(Errno::EINVAL);
        }
        let get_dirty = unmap.flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0;
        let unmap_all = unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL != 0;
        let invalidate_vaddr = unmap.flags & VFIO_DMA_UNMAP_FLAG_VADDR != 0;
        if get_dirty && (unmap_all || invalidate_vaddr) {
            return Err(Errno::EINVAL);
        }
        let mut bitmap = vfio_bitmap::default();
        if get_dirty {
            if (argsz as usize) < minsz::DMA_UNMAP + size_of::<vfio_bitmap>() {
                return Err(Errno::EINVAL);
            }
            bitmap = read_struct(mem, minsz::DMA_UNMAP)?;
            if !access_ok(bitmap.data, bitmap.size) {
                return Err(Errno::EINVAL);
            }
            let npages = unmap.size.checked_shr(bitmap.pgsize.trailing_zeros()).unwrap_or(0);
            verify_bitmap_size(npages, bitmap.size)?;
        }

        let (_, _, iommu) = self.iommu_mut(id);
        let pgsize = iommu.min_pgsize();
        let iova = unmap.iova;
        if iova & (pgsize - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        let last = if unmap_all {
            if iova != 0 || unmap.size != 0 {
                return Err(Errno::EINVAL);
            }
            u64::MAX
        } else {
            if unmap.size == 0 || unmap.size & (pgsize - 1) != 0 {
                return Err(Errno::EINVAL);
            }
            iova.checked_add(unmap.size - 1).ok_or(Errno::EOVERFLOW)?
        };
        if get_dirty && (!iommu.dirty.tracking() || bitmap.pgsize != pgsize) {
            return Err(Errno::EINVAL);
        }
        // v2 refuses to bisect a mapping at either end (T1:1476). The two lookups also find
        // the common case, one mapping unmapped exactly, without walking the range again.
        let mut exactly_one = None;
        if iommu.v2 && !unmap_all {
            let at_start = iommu.ledger.containing(iova);
            if at_start.is_some_and(|m| m.iova != iova) {
                return Err(Errno::EINVAL);
            }
            let at_end = iommu.ledger.containing(last);
            if at_end.is_some_and(|m| m.last() != last) {
                return Err(Errno::EINVAL);
            }
            exactly_one = at_start.filter(|a| at_end.is_some_and(|b| b.iova == a.iova));
        }

        // v1 stops at a mapping that starts before the range: success, size 0 (T1:1490).
        let v2 = iommu.v2;
        let victims = |ledger: &MappingLedger| {
            ledger.overlapping(iova, last).take_while(move |m| v2 || m.iova >= iova).collect::<Vec<Mapping>>()
        };

        if invalidate_vaddr {
            let victims = victims(&iommu.ledger);
            if victims.iter().any(|m| m.vaddr_invalid && !iommu.foreign_vaddrs.contains(&m.iova)) {
                return Err(Errno::EINVAL);
            }
            let mut unmapped = 0u64;
            for m in &victims {
                iommu.ledger.set_vaddr(m.iova, true, None);
                iommu.foreign_vaddrs.remove(&m.iova);
                unmapped += m.size;
            }
            unmap.size = unmapped;
            return mem.write(0, unmap.as_bytes()).map(|()| None);
        }
        if get_dirty {
            for m in &victims(&iommu.ledger) {
                iommu.dirty.report(mem, bitmap.data, m, iova, pgsize)?;
            }
        }

        // The victims are every mapping from the first one through the last one: no other
        // mapping lies between them, so they are found again by position, without a list.
        let (mut span, mut count, mut unmapped) = (None::<(u64, u64)>, 0u32, 0u64);
        if let Some(m) = exactly_one {
            (span, count, unmapped) = (Some((m.iova, m.last())), 1, m.size);
        } else {
            for m in iommu.ledger.overlapping(iova, last).take_while(|m| v2 || m.iova >= iova) {
                span = Some((span.map_or(m.iova, |s| s.0), m.last()));
                count += 1;
                unmapped += m.size;
            }
        }
        if let Some((first, end)) = span {
            // One native unmap covers them all, and none of them is split.
            let (iova, length) = if unmap_all { (0, u64::MAX) } else { (first, end - first + 1) };
            return Ok(Some((DmaOp::Unmap { iova, length }, Resume::Unmap { unmap, first, end, count, unmapped })));
        }
        unmap.size = unmapped;
        mem.write(0, unmap.as_bytes()).map(|()| None)
    }

    /// `VFIO_IOMMU_DIRTY_PAGES` (T1:2964). With no IOMMU dirty tracking every page of an
    /// IOMMU-mapped range reads dirty, as in type1 with IOMMU-backed groups.
    pub(super) fn dirty_pages(&mut self, id: ContainerId, mem: &mut dyn ArgMemory) -> Result<(), Errno> {
        let (_, _, iommu) = self.iommu_mut(id);
        if !iommu.v2 {
            return Err(Errno::EACCES);
        }
        let dirty: vfio_iommu_type1_dirty_bitmap = read_sized(mem)?;
        let argsz = dirty.argsz;
        let known = VFIO_IOMMU_DIRTY_PAGES_FLAG_START
            | VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP
            | VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
        if dirty.flags & !known != 0 || dirty.flags.count_ones() != 1 {
            return Err(Errno::EINVAL);
        }
        match dirty.flags {
            VFIO_IOMMU_DIRTY_PAGES_FLAG_START => {
                let pgsize = iommu.min_pgsize();
                iommu.dirty.start(iommu.ledger.iter(), pgsize);
                Ok(())
            }
            VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP => {
                iommu.dirty.stop();
                Ok(())
            }
            _ => {
                let data_size = argsz as usize - minsz::DIRTY_BITMAP;
                if data_size < size_of::<vfio_iommu_type1_dirty_bitmap_get>() {
                    return Err(Errno::EINVAL);
                }
                let range: vfio_iommu_type1_dirty_bitmap_get = read_struct(mem, minsz::DIRTY_BITMAP)?;
                if range.size == 0 {
                    return Err(Errno::EINVAL);
                }
                let last = range.iova.checked_add(range.size - 1).ok_or(Errno::EOVERFLOW)?;
                if !access_ok(range.bitmap.data, range.bitmap.size) {
                    return Err(Errno::EINVAL);
                }
                let npages = range.size.checked_shr(range.bitmap.pgsize.trailing_zeros()).unwrap_or(0);
                verify_bitmap_size(npages, range.bitmap.size)?;
                let pgsize = iommu.min_pgsize();
                if range.bitmap.pgsize != pgsize
                    || range.iova & (pgsize - 1) != 0
                    || range.size & (pgsize - 1) != 0
                    || !iommu.dirty.tracking()
                {
                    return Err(Errno::EINVAL);
                }
                // The range must not bisect a mapping (T1:1321).
                if iommu.ledger.containing(range.iova).is_some_and(|m| m.iova != range.iova)
                    || iommu.ledger.containing(last).is_some_and(|m| m.last() != last)
                {
                    return Err(Errno::EINVAL);
                }
                let ranges: Vec<Mapping> = iommu.ledger.starting_in(range.iova, last).collect();
                for m in &ranges {
                    iommu.dirty.report(mem, range.bitmap.data, m, range.iova, pgsize)?;
                    iommu.dirty.reported(m, pgsize);
                }
                Ok(())
            }
        }
    }
}

/// `access_ok()` on x86-64 with 4-level paging: the range lies below `TASK_SIZE_MAX`.
fn access_ok(addr: u64, size: u64) -> bool {
    const TASK_SIZE_MAX: u64 = (1 << 47) - 4096;
    size <= TASK_SIZE_MAX && addr <= TASK_SIZE_MAX - size
}

/// T1:1353.
fn verify_bitmap_size(npages: u64, bitmap_size: u64) -> Result<(), Errno> {
    let needed = npages.div_ceil(64) * 8;
    if npages == 0 || bitmap_size == 0 || bitmap_size > DIRTY_BITMAP_SIZE_MAX || bitmap_size < needed {
        return Err(Errno::EINVAL);
    }
    Ok(())
}
