//! `MappingLedger`: the container's record of live DMA mappings, keyed by IOVA.
//!
//! type1 keeps the same record in an rbtree (`iommu->dma_list`); every query here is the
//! counterpart of one there (`vfio_find_dma`, `vfio_find_dma_first_node`) and costs O(log n).

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::backend::Prot;

/// One `VFIO_IOMMU_MAP_DMA` that is still mapped: `[iova, iova + size)` -> `vaddr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub iova: u64,
    pub size: u64,
    pub vaddr: u64,
    pub prot: Prot,
    /// Set by `UNMAP_DMA` with `VFIO_DMA_UNMAP_FLAG_VADDR` until a `MAP_DMA` with
    /// `VFIO_DMA_MAP_FLAG_VADDR` supplies the new address (live update, CPR).
    pub vaddr_invalid: bool,
}

impl Mapping {
    /// The last IOVA covered (inclusive); `size` is never 0.
    pub fn last(&self) -> u64 {
        self.iova + (self.size - 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    size: u64,
    vaddr: u64,
    prot: Prot,
    vaddr_invalid: bool,
}

#[derive(Clone, Debug, Default)]
pub struct MappingLedger {
    by_iova: BTreeMap<u64, Entry>,
    vaddr_invalid_count: usize,
    /// The sum of every mapping's size, kept as they come and go (`vfio-shim status` reads it
    /// after each MAP and UNMAP).
    bytes: u64,
}

impl MappingLedger {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_iova.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_iova.is_empty()
    }

    /// Mappings whose vaddr is currently invalidated.
    pub fn vaddr_invalid_count(&self) -> usize {
        self.vaddr_invalid_count
    }

    fn mapping(iova: u64, e: &Entry) -> Mapping {
        Mapping { iova, size: e.size, vaddr: e.vaddr, prot: e.prot, vaddr_invalid: e.vaddr_invalid }
    }

    /// The mapping that overlaps `[start, last]` with the lowest IOVA (type1's
    /// `vfio_find_dma_first_node`).
    pub fn first_overlapping(&self, start: u64, last: u64) -> Option<Mapping> {
        if let Some((&iova, e)) = self.by_iova.range(..=start).next_back() {
            if iova + (e.size - 1) >= start {
                return Some(Self::mapping(iova, e));
            }
        }
        self.by_iova
            .range((Bound::Excluded(start), Bound::Included(last)))
            .next()
            .map(|(&iova, e)| Self::mapping(iova, e))
    }

    /// Any mapping overlapping `[iova, iova + size)` (type1's `vfio_find_dma`). `size > 0`.
    pub fn find_overlap(&self, iova: u64, size: u64) -> Option<Mapping> {
        // Mappings never overlap each other: the last one starting at or before the range's
        // end overlaps it if any does (one tree descent; the hot path of every MAP).
        let last = iova.saturating_add(size - 1);
        let (&start, e) = self.by_iova.range(..=last).next_back()?;
        (start + (e.size - 1) >= iova).then(|| Self::mapping(start, e))
    }

    /// The mapping containing `addr`.
    pub fn containing(&self, addr: u64) -> Option<Mapping> {
        self.find_overlap(addr, 1)
    }

    /// Removes and returns the mapping with the lowest IOVA in `[start, last]`.
    pub fn pop_first_in(&mut self, start: u64, last: u64) -> Option<Mapping> {
        let iova = *self.by_iova.range(start..=last).next()?.0;
        self.remove(iova)
    }

    /// Records a new mapping. The caller has checked it overlaps nothing.
    pub fn insert(&mut self, m: Mapping) {
        debug_assert!(m.size > 0 && self.find_overlap(m.iova, m.size).is_none());
        if m.vaddr_invalid {
            self.vaddr_invalid_count += 1;
        }
        self.bytes += m.size;
        self.by_iova
            .insert(m.iova, Entry { size: m.size, vaddr: m.vaddr, prot: m.prot, vaddr_invalid: m.vaddr_invalid });
    }

    /// Removes the mapping that starts exactly at `iova`.
    pub fn remove(&mut self, iova: u64) -> Option<Mapping> {
        let e = self.by_iova.remove(&iova)?;
        if e.vaddr_invalid {
            self.vaddr_invalid_count -= 1;
        }
        self.bytes -= e.size;
        Some(Self::mapping(iova, &e))
    }

    /// Marks the mapping at `iova` as having (in)valid vaddr, updating `vaddr` if given.
    pub fn set_vaddr(&mut self, iova: u64, vaddr_invalid: bool, vaddr: Option<u64>) {
        if let Some(e) = self.by_iova.get_mut(&iova) {
            match (e.vaddr_invalid, vaddr_invalid) {
                (false, true) => self.vaddr_invalid_count += 1,
                (true, false) => self.vaddr_invalid_count -= 1,
                _ => {}
            }
            e.vaddr_invalid = vaddr_invalid;
            if let Some(v) = vaddr {
                e.vaddr = v;
            }
        }
    }

    /// Mappings starting in `[start, last]`, ascending.
    pub fn starting_in(&self, start: u64, last: u64) -> impl Iterator<Item = Mapping> + '_ {
        self.by_iova.range(start..=last).map(|(&iova, e)| Self::mapping(iova, e))
    }

    /// Mappings from the first one overlapping `[start, last]` through the last one that
    /// starts at or before `last`, ascending.
    pub fn overlapping(&self, start: u64, last: u64) -> impl Iterator<Item = Mapping> + '_ {
        // The first overlapping mapping starts at or before `last`, so the range is valid.
        let from = self.first_overlapping(start, last).map(|m| m.iova);
        from.into_iter().flat_map(move |from| self.by_iova.range(from..=last).map(|(&iova, e)| Self::mapping(iova, e)))
    }

    pub fn iter(&self) -> impl Iterator<Item = Mapping> + '_ {
        self.by_iova.iter().map(|(&iova, e)| Self::mapping(iova, e))
    }

    /// Total bytes mapped.
    pub fn mapped_bytes(&self) -> u64 {
        debug_assert_eq!(self.bytes, self.by_iova.values().map(|e| e.size).sum::<u64>());
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(iova: u64, size: u64) -> Mapping {
        Mapping { iova, size, vaddr: iova, prot: Prot { read: true, write: true }, vaddr_invalid: false }
    }

    #[test]
    fn overlap_queries_match_type1_find_dma() {
        let mut l = MappingLedger::new();
        l.insert(m(0x1000, 0x2000));
        l.insert(m(0x10000, 0x1000));
        assert_eq!(l.find_overlap(0x0, 0x1000), None);
        assert_eq!(l.find_overlap(0x0, 0x1001).unwrap().iova, 0x1000);
        assert_eq!(l.find_overlap(0x2fff, 1).unwrap().iova, 0x1000);
        assert_eq!(l.find_overlap(0x3000, 0xd000), None);
        assert_eq!(l.find_overlap(0x3000, 0xd001).unwrap().iova, 0x10000);
        assert_eq!(l.first_overlapping(0x2000, u64::MAX).unwrap().iova, 0x1000);
        let all: Vec<u64> = l.overlapping(0x2000, 0x10000).map(|m| m.iova).collect();
        assert_eq!(all, vec![0x1000, 0x10000]);
        assert_eq!(l.overlapping(0x3000, 0xffff).count(), 0);
        assert_eq!(l.mapped_bytes(), 0x3000);
    }

    #[test]
    fn top_of_address_space_does_not_overflow() {
        let mut l = MappingLedger::new();
        l.insert(m(u64::MAX - 0xfff, 0x1000));
        assert_eq!(l.containing(u64::MAX).unwrap().iova, u64::MAX - 0xfff);
        assert_eq!(l.find_overlap(u64::MAX - 0x1fff, 0x2000).unwrap().last(), u64::MAX);
        assert_eq!(l.overlapping(0, u64::MAX).count(), 1);
    }

    #[test]
    fn vaddr_invalid_is_counted() {
        let mut l = MappingLedger::new();
        l.insert(m(0x1000, 0x1000));
        l.set_vaddr(0x1000, true, None);
        assert_eq!(l.vaddr_invalid_count(), 1);
        l.set_vaddr(0x1000, false, Some(0x5000));
        assert_eq!(l.vaddr_invalid_count(), 0);
        assert_eq!(l.containing(0x1000).unwrap().vaddr, 0x5000);
        l.set_vaddr(0x1000, true, None);
        l.remove(0x1000);
        assert_eq!(l.vaddr_invalid_count(), 0);
    }
}
