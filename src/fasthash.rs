//! A fast hash for the in-process maps of capture and rendering (code
//! objects by address, stacks by id, frames by location).
//!
//! std's SipHash resists collision attacks on keys from outside; these keys
//! are our own process's names and addresses, and with tens of thousands of
//! greenlets SipHash alone was a fifth of rendering time. This is FxHash's
//! rotate-xor-multiply step, eight bytes at a time.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
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
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
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
        self.0
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
pub type FastSet<K> = HashSet<K, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_equal_and_maps_work() {
        let mut map: FastMap<(&str, Option<u32>), usize> = FastMap::default();
        for (i, name) in ["a.py", "a.py ", "b.py", "a_much_longer_file_name.py"]
            .iter()
            .enumerate()
        {
            map.insert((name, Some(1)), i);
        }
        map.insert(("a.py", Some(2)), 9);
        assert_eq!(map.len(), 5);
        assert_eq!(map[&("a.py", Some(1))], 0);
        assert_eq!(map[&("a_much_longer_file_name.py", Some(1))], 3);
        assert_eq!(map[&("a.py", Some(2))], 9);
    }
}
