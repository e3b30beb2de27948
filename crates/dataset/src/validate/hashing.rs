//! Hashers: a fast one for keys that come from the spec, and 128-bit
//! fingerprints for uniqueness.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// FxHash-style hasher for lookups in maps whose keys come from the spec (value
/// sets, categories): untrusted cells are only looked up, never inserted, so a
/// fast non-keyed hash is safe there.
#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    #[inline]
    pub(crate) fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;

/// Hasher for 128-bit fingerprints, which are already uniformly random (keyed
/// SipHash with per-run random keys, so not predictable from the data): it keeps
/// 64 of their bits.
#[derive(Default)]
pub(crate) struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ *b as u64;
        }
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.0 = (i as u64) ^ ((i >> 64) as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FpBuild = BuildHasherDefault<FingerprintHasher>;

/// Two independent 64-bit SipHashes: a 128-bit fingerprint for uniqueness.
#[derive(Clone)]
pub(crate) struct Fingerprinter(std::hash::RandomState, std::hash::RandomState);

impl Fingerprinter {
    pub(crate) fn new() -> Self {
        Self(std::hash::RandomState::new(), std::hash::RandomState::new())
    }
    #[inline]
    pub(crate) fn of(&self, bytes: &[u8]) -> u128 {
        let mut a = self.0.build_hasher();
        a.write(bytes);
        let mut b = self.1.build_hasher();
        b.write(bytes);
        ((a.finish() as u128) << 64) | b.finish() as u128
    }
}

/// Float bits with -0.0 and 0.0 made equal.
#[inline]
pub(crate) fn float_key(x: f64) -> u64 {
    if x == 0.0 { 0 } else { x.to_bits() }
}
