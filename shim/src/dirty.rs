//! type1's per-mapping dirty bitmaps, word for word (T1 = vfio_iommu_type1.c).
//!
//! type1 gives every mapping a bitmap while dirty tracking is on (`vfio_dma_bitmap_alloc`:
//! `DIRTY_BITMAP_BYTES(npages + BITS_PER_LONG)`, zeroed) and reports through it in place
//! (`update_user_bitmap`, T1:1270): it sets the mapping's bits, shifts the whole buffer left to
//! the mapping's bit offset without masking, ORs the caller's whole first word in, and copies
//! the words out; after `GET_BITMAP` it clears only the low `npages` bits. What a shift or an
//! OR left in the upper bits stays in the buffer and shows in the next report of that mapping
//! (seen in the VM: a GET_BITMAP then an UNMAP with the bitmap of the same mapping at bit 2,
//! caller bytes 0xa5, gives `ada5a5a5a5a5a5a5` then `bdb7b7b7b7b7b7b7`). Every page of an
//! IOMMU-mapped range counts as dirty (IOMMU-backed groups without dirty tracking).

use std::collections::BTreeMap;

use nix::errno::Errno;
use zerocopy::IntoBytes;

use crate::arg::ArgMemory;
use crate::ledger::Mapping;

/// The bitmaps of a container's mappings while tracking is on, by mapping IOVA.
#[derive(Debug, Default)]
pub struct DirtyBitmaps {
    tracking: bool,
    by_iova: BTreeMap<u64, Vec<u64>>,
}

fn words_for(m: &Mapping, pgsize: u64) -> Vec<u64> {
    let npages = m.size >> pgsize.trailing_zeros();
    vec![0u64; (npages + 64).div_ceil(64) as usize]
}

impl DirtyBitmaps {
    pub fn tracking(&self) -> bool {
        self.tracking
    }

    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_START`: a bitmap for every mapping, unless already on.
    pub fn start(&mut self, mappings: impl Iterator<Item = Mapping>, pgsize: u64) {
        if self.tracking {
            return;
        }
        self.tracking = true;
        self.by_iova = mappings.map(|m| (m.iova, words_for(&m, pgsize))).collect();
    }

    /// `..._FLAG_STOP`: every bitmap freed.
    pub fn stop(&mut self) {
        self.tracking = false;
        self.by_iova.clear();
    }

    /// A new mapping while tracking is on gets its own zeroed bitmap (`vfio_dma_do_map`).
    pub fn mapped(&mut self, m: &Mapping, pgsize: u64) {
        if self.tracking {
            self.by_iova.insert(m.iova, words_for(m, pgsize));
        }
    }

    pub fn unmapped(&mut self, iova: u64) {
        self.by_iova.remove(&iova);
    }

    /// `update_user_bitmap` of mapping `m` into the caller's bitmap at `bitmap` (which
    /// describes IOVAs from `base_iova`), mutating the mapping's buffer as type1 does.
    pub fn report(
        &mut self,
        mem: &mut dyn ArgMemory,
        bitmap: u64,
        m: &Mapping,
        base_iova: u64,
        pgsize: u64,
    ) -> Result<(), Errno> {
        let pgshift = pgsize.trailing_zeros();
        let nbits = m.size >> pgshift;
        let bit_offset = (m.iova - base_iova) >> pgshift;
        let copy_offset = bit_offset / 64;
        let shift = bit_offset % 64;
        let words = self.by_iova.entry(m.iova).or_insert_with(|| words_for(m, pgsize));
        // bitmap_set(dma->bitmap, 0, nbits): every page dirty.
        for bit in 0..nbits {
            words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        let lim = (nbits + shift).div_ceil(64) as usize;
        let addr = bitmap + copy_offset * 8;
        if shift != 0 {
            // __bitmap_shift_left over BITS_TO_LONGS(nbits + shift) words, nothing masked.
            for k in (0..lim).rev() {
                let lower = if k > 0 { words[k - 1] >> (64 - shift) } else { 0 };
                words[k] = (words[k] << shift) | lower;
            }
            let mut leftover = [0u8; 8];
            mem.read_user(addr, &mut leftover)?;
            // bitmap_or(.., &leftover, shift): one whole word.
            words[0] |= u64::from_ne_bytes(leftover);
        }
        mem.write_user(addr, words[..lim].as_bytes())
    }

    /// After a `GET_BITMAP` report: `bitmap_clear(dma->bitmap, 0, npages)`, the low bits only
    /// (no pages are pinned by vendor drivers here, so nothing is populated again).
    pub fn reported(&mut self, m: &Mapping, pgsize: u64) {
        let nbits = m.size >> pgsize.trailing_zeros();
        if let Some(words) = self.by_iova.get_mut(&m.iova) {
            for bit in 0..nbits {
                words[(bit / 64) as usize] &= !(1 << (bit % 64));
            }
        }
    }
}
