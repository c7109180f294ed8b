//! A fast, non-cryptographic hasher for the maps capture and rendering fill
//! with tens of thousands of keys (object addresses, stack ids, file names).
//! SipHash, the standard library's default, showed in profiles; these keys
//! come from the process itself, so flooding resistance buys nothing here.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// Eight bytes per step, with a final mix so that aligned addresses (low
/// bits all zero) still spread over the table.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        let x = (self.0 ^ (self.0 >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        x ^ (x >> 32)
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
pub type FastSet<K> = HashSet<K, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_addresses_spread_over_low_bits() {
        let buckets: FastSet<u64> = (0..1024u64)
            .map(|i| {
                let mut h = FastHasher::default();
                h.write_usize(0x7f00_0000_0000 + (i as usize) * 64);
                h.finish() & 0xff
            })
            .collect();
        assert!(buckets.len() > 200, "{} of 256 buckets used", buckets.len());
    }

    #[test]
    fn maps_work_with_strings() {
        let mut m: FastMap<String, u32> = FastMap::default();
        m.insert("task:0x1".into(), 1);
        m.insert("task:0x10".into(), 2);
        assert_eq!(m.get("task:0x1"), Some(&1));
        assert_eq!(m.get("task:0x10"), Some(&2));
        assert_eq!(m.get("task:0x100"), None);
    }
}
