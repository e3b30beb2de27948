//! Distinct-value fingerprints, for uniqueness: an open-addressing set of
//! 128-bit fingerprints that spills sorted runs to disk past a bound.

use std::collections::HashMap;

use super::columns::{Col, each_key_bytes};
use super::hashing::{Fingerprinter, FpBuild};

/// A set of 128-bit fingerprints: open addressing with linear probing, at most
/// 5/8 full, 16 bytes per slot (so 26 to 51 bytes per distinct value). The top
/// bits of a fingerprint (uniformly random already) are its home slot: no
/// further hashing, one cache line per probe sequence, and growing reinserts in
/// slot order. 0 marks an empty slot; the fingerprint 0 is stored as 1.
pub(crate) struct FpSet {
    pub(crate) slots: Vec<u128>,
    pub(crate) len: usize,
    pub(crate) bits: u32,
}

impl FpSet {
    const INITIAL_BITS: u32 = 10;

    pub(crate) fn new() -> Self {
        Self {
            slots: vec![0; 1 << Self::INITIAL_BITS],
            len: 0,
            bits: Self::INITIAL_BITS,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `additional` more fingerprints without growing.
    pub(crate) fn reserve(&mut self, additional: usize) {
        while (self.len + additional) * 8 > self.slots.len() * 5 {
            self.grow();
        }
    }

    /// Adds a fingerprint; false when it was already there.
    #[inline]
    pub(crate) fn insert(&mut self, key: u128) -> bool {
        if (self.len + 1) * 8 > self.slots.len() * 5 {
            self.grow();
        }
        self.place(key.max(1))
    }

    #[inline]
    pub(crate) fn place(&mut self, key: u128) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = (key >> (128 - self.bits)) as usize;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                self.slots[i] = key;
                self.len += 1;
                return true;
            }
            if slot == key {
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    /// Takes every fingerprint out, sorted, and shrinks back to the initial size.
    pub(crate) fn drain_sorted(&mut self) -> Vec<u128> {
        // In place: no second copy of the table while spilling.
        let mut keys = std::mem::take(&mut self.slots);
        keys.retain(|k| *k != 0);
        keys.sort_unstable();
        *self = Self::new();
        keys
    }

    pub(crate) fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        self.bits += 1;
        self.len = 0;
        for key in old {
            if key != 0 {
                self.place(key);
            }
        }
    }
}

/// Fingerprints of the distinct values of a column (or of a tuple of columns),
/// with the number of extra occurrences of the repeated ones. Shared by the
/// uniqueness and proportion-of-unique checks of a column: 16 bytes per distinct
/// value (plus the hash table's slack), 20 more per repeated value.
///
/// Memory stays bounded whatever the file size: past [`SPILL_AT`] distinct
/// values, the fingerprints go to a sorted run in a temporary file and the table
/// starts over; the runs are merged once at the end to count distinct values and
/// repeats across them (repeats found only in the merge are counted, not sampled).
pub(crate) struct Distinct {
    pub(crate) fp: Fingerprinter,
    pub(crate) seen: FpSet,
    pub(crate) repeats: HashMap<u128, u32, FpBuild>,
    /// Rows (offsets in the last chunk, ascending) whose value had been seen before.
    pub(crate) chunk_repeats: Vec<u32>,
    /// The chunk's (fingerprint, row) pairs, before and after ordering by slot.
    pub(crate) pending: Vec<(u128, u32)>,
    pub(crate) ordered: Vec<(u128, u32)>,
    pub(crate) buckets: Vec<u32>,
    /// Sorted runs of fingerprints spilled to disk.
    pub(crate) runs: Vec<std::fs::File>,
    /// Distinct values kept in memory before spilling.
    pub(crate) spill_at: usize,
    /// (distinct values, rows holding a repeated value), once merged.
    pub(crate) totals: std::cell::OnceCell<(u64, u64)>,
}

/// Distinct fingerprints held in memory per column before a sorted run is
/// spilled to disk (a table of 32 MiB at most, 48 MiB while it grows).
pub const SPILL_AT: usize = 1 << 20;

impl Distinct {
    /// Bits of the fingerprint by which a chunk is ordered before insertion.
    const ORDER_BITS: u32 = 12;

    pub(crate) fn new() -> Self {
        Self {
            fp: Fingerprinter::new(),
            seen: FpSet::new(),
            repeats: HashMap::default(),
            chunk_repeats: Vec::new(),
            pending: Vec::new(),
            ordered: Vec::new(),
            buckets: vec![0; 1 << Self::ORDER_BITS],
            runs: Vec::new(),
            spill_at: SPILL_AT,
            totals: std::cell::OnceCell::new(),
        }
    }

    /// Writes the in-memory fingerprints as a sorted run to a temporary file.
    /// When no temporary file can be made, keeps going in memory.
    pub(crate) fn spill(&mut self) {
        use std::io::{Seek, Write};
        let Ok(file) = tempfile::tempfile() else {
            return;
        };
        let keys = self.seen.drain_sorted();
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let ok = keys.iter().all(|k| w.write_all(&k.to_le_bytes()).is_ok());
        match w.into_inner() {
            Ok(f) if ok && (&f).rewind().is_ok() => self.runs.push(f),
            _ => {
                // Could not write the run: put the keys back.
                for k in keys {
                    self.seen.insert(k);
                }
            }
        }
    }

    /// (distinct values, rows holding a repeated value, every occurrence counted).
    pub(crate) fn totals(&self) -> (u64, u64) {
        *self.totals.get_or_init(|| {
            if self.runs.is_empty() {
                return (
                    self.seen.len() as u64,
                    self.repeats.values().map(|n| *n as u64 + 1).sum(),
                );
            }
            self.merge_runs()
        })
    }

    pub(crate) fn merge_runs(&self) -> (u64, u64) {
        use std::cmp::Reverse;
        use std::io::{Read, Seek};
        let mut memory: Vec<u128> = self
            .seen
            .slots
            .iter()
            .copied()
            .filter(|k| *k != 0)
            .collect();
        memory.sort_unstable();
        let mut readers: Vec<std::io::BufReader<&std::fs::File>> = self
            .runs
            .iter()
            .map(|f| {
                let mut f = f;
                let _ = f.rewind();
                std::io::BufReader::with_capacity(1 << 16, f)
            })
            .collect();
        let mut next = |src: usize, mem_at: &mut usize| -> Option<u128> {
            if src == readers.len() {
                let k = memory.get(*mem_at).copied();
                *mem_at += 1;
                return k;
            }
            let mut b = [0u8; 16];
            readers[src]
                .read_exact(&mut b)
                .ok()
                .map(|_| u128::from_le_bytes(b))
        };
        let mut mem_at = 0usize;
        let mut heap = std::collections::BinaryHeap::new();
        for src in 0..=self.runs.len() {
            if let Some(k) = next(src, &mut mem_at) {
                heap.push(Reverse((k, src)));
            }
        }
        let (mut distinct, mut repeated) = (0u64, 0u64);
        while let Some(Reverse((key, src))) = heap.pop() {
            let mut sources = 1u64;
            if let Some(k) = next(src, &mut mem_at) {
                heap.push(Reverse((k, src)));
            }
            while let Some(Reverse((k, s))) = heap.peek().copied() {
                if k != key {
                    break;
                }
                heap.pop();
                sources += 1;
                if let Some(k2) = next(s, &mut mem_at) {
                    heap.push(Reverse((k2, s)));
                }
            }
            distinct += 1;
            let total = sources + self.repeats.get(&key).map_or(0, |n| *n as u64);
            if total > 1 {
                repeated += total;
            }
        }
        (distinct, repeated)
    }

    /// Queues the value of row `i` (in the chunk) by its fingerprint.
    #[inline]
    pub(crate) fn queue(&mut self, i: usize, key: u128) {
        self.pending.push((key, i as u32));
    }

    /// Adds the queued values of a chunk. They are first ordered by the top bits
    /// of their fingerprints (a stable one-pass radix sort, so equal values keep
    /// their row order), which are also their slots in the set: the insertions
    /// then sweep the table in one direction instead of hopping at random, which
    /// is several times faster once the table outgrows the caches.
    pub(crate) fn flush(&mut self) {
        self.chunk_repeats.clear();
        self.seen.reserve(self.pending.len());
        let shift = 128 - Self::ORDER_BITS;
        self.buckets.fill(0);
        for (key, _) in &self.pending {
            self.buckets[(key >> shift) as usize] += 1;
        }
        let mut start = 0u32;
        for b in self.buckets.iter_mut() {
            let n = *b;
            *b = start;
            start += n;
        }
        self.ordered.clear();
        self.ordered.resize(self.pending.len(), (0, 0));
        for &(key, row) in &self.pending {
            let b = &mut self.buckets[(key >> shift) as usize];
            self.ordered[*b as usize] = (key, row);
            *b += 1;
        }
        self.pending.clear();
        for &(key, row) in &self.ordered {
            if !self.seen.insert(key) {
                *self.repeats.entry(key).or_insert(0) += 1;
                self.chunk_repeats.push(row);
            }
        }
        self.chunk_repeats.sort_unstable();
        if self.seen.len() > self.spill_at {
            self.spill();
        }
    }

    /// Adds the non-null values of a chunk's column.
    pub(crate) fn push(&mut self, col: Col<'_>) {
        let fp = self.fp.clone();
        each_key_bytes(col, |i, bytes| self.queue(i, fp.of(bytes)));
        self.flush();
    }

    /// Rows holding a repeated value, every occurrence counted (as GE does).
    pub(crate) fn rows_in_repeats(&self) -> u64 {
        self.totals().1
    }

    /// Distinct values.
    pub(crate) fn distinct_values(&self) -> u64 {
        self.totals().0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn fingerprint_set_matches_a_hash_set() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut set = FpSet::new();
        let mut reference = HashSet::new();
        let mut keys: Vec<u128> = (0..50_000).map(|_| rng.random::<u128>()).collect();
        // Repeats, the empty marker, and keys sharing their top bits (same home slot).
        keys.extend_from_within(..1000);
        keys.extend([0, 1, 0, u128::MAX, u128::MAX - 1, 1 << 127, (1 << 127) | 5]);
        for k in keys {
            assert_eq!(set.insert(k), reference.insert(k.max(1)), "{k}");
        }
        assert_eq!(set.len(), reference.len());
        assert!(set.slots.len() * 5 >= set.len() * 8);

        // Ordered batches give the same answers, rows of repeats ascending.
        let mut d = Distinct::new();
        let mut seen = HashSet::new();
        for chunk in 0..5u32 {
            let mut expected = Vec::new();
            for row in 0..3000u32 {
                let key = ((rng.random::<u32>() % 8000) as u128)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
                d.queue(row as usize, key);
                if !seen.insert(key) {
                    expected.push(row);
                }
            }
            d.flush();
            assert_eq!(d.chunk_repeats, expected, "chunk {chunk}");
        }
        assert_eq!(d.seen.len(), seen.len());
    }

    /// Past its memory budget the set spills sorted runs to disk; the merged
    /// totals equal an exact count, repeats across runs included.
    #[test]
    fn spilled_fingerprints_merge_to_exact_totals() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut d = Distinct::new();
        d.spill_at = 500;
        let mut counts: HashMap<u128, u64> = HashMap::new();
        for _chunk in 0..20 {
            for row in 0..1000u32 {
                // ~6000 distinct values over 20000 rows: plenty of repeats, across runs too.
                let key = ((rng.random::<u32>() % 6000) as u128 + 1)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
                d.queue(row as usize, key);
                *counts.entry(key.max(1)).or_default() += 1;
            }
            d.flush();
        }
        assert!(d.runs.len() > 5, "spilled {} runs", d.runs.len());
        let repeated: u64 = counts.values().filter(|n| **n > 1).sum();
        assert_eq!(d.distinct_values(), counts.len() as u64);
        assert_eq!(d.rows_in_repeats(), repeated);
        assert!(
            d.seen.len() <= 1001,
            "memory stays bounded: {}",
            d.seen.len()
        );
    }
}
