//! Collections whose growth never pauses the shard for a time proportional
//! to their size.
//!
//! A hash map that outgrows its table allocates one twice the size and
//! moves every entry; a `VecDeque` copies every element. The shard's holds,
//! order index and idempotency records grow for as long as a sale runs, so
//! each doubling of one of them stopped its shard loop while it copied: 70
//! to 300 ms at a few hundred thousand holds, with the requests queued
//! behind it waiting. Both shards double at about the same moment, because
//! SKUs spread evenly over them.
//!
//! [`PartMap`] splits a map into [`MAP_PARTS`] hash maps by a hash of the
//! key; a part that grows moves only its own entries, 1/256 of the map, and
//! the parts fill evenly, so their doublings come one at a time, spread over
//! the inserts of a doubling's worth of growth. [`ChunkQueue`] is a FIFO of
//! fixed-size chunks: it never moves an element once pushed.
//!
//! The total work of growing is what it was; only the pause is bounded.

use std::collections::hash_map::Entry;
use std::collections::VecDeque;
use std::hash::Hash;

use rustc_hash::FxHashMap;

/// Hash maps in a [`PartMap`].
pub const MAP_PARTS: usize = 256;

/// Elements per chunk of a [`ChunkQueue`].
pub const QUEUE_CHUNK: usize = 4_096;

/// A key that picks its part of a [`PartMap`]. The part must not be derived
/// from the bits the part's own hash map uses (FxHash's), or every key of a
/// part would share them.
pub trait PartKey: Copy + Eq + Hash {
    fn part(&self) -> usize;
}

/// The top byte of a Fibonacci hash: consecutive numbers (hold sequences)
/// land in different parts.
fn fibonacci_part(x: u64) -> usize {
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize
}

impl PartKey for u64 {
    fn part(&self) -> usize {
        fibonacci_part(*self)
    }
}

impl PartKey for u128 {
    fn part(&self) -> usize {
        fibonacci_part(*self as u64 ^ (*self >> 64) as u64)
    }
}

/// A hash map split into [`MAP_PARTS`] maps by [`PartKey::part`].
/// Iteration order is part by part, and within a part the map's own.
pub struct PartMap<K, V> {
    parts: Box<[FxHashMap<K, V>]>,
    len: usize,
}

impl<K: PartKey, V> Default for PartMap<K, V> {
    fn default() -> Self {
        PartMap { parts: (0..MAP_PARTS).map(|_| FxHashMap::default()).collect(), len: 0 }
    }
}

impl<K: PartKey, V> PartMap<K, V> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Room for `additional` more entries, spread evenly over the parts
    /// (with some slack, since keys do not spread exactly evenly).
    pub fn reserve(&mut self, additional: usize) {
        let per_part = additional.div_ceil(MAP_PARTS);
        let per_part = per_part + per_part / 8;
        for part in self.parts.iter_mut() {
            part.reserve(per_part);
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.parts[key.part()].get(key)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.parts[key.part()].get_mut(key)
    }

    /// Inserts, returning the value the key had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let prev = self.parts[key.part()].insert(key, value);
        if prev.is_none() {
            self.len += 1;
        }
        prev
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let prev = self.parts[key.part()].remove(key);
        if prev.is_some() {
            self.len -= 1;
        }
        prev
    }

    /// The value of `key`, inserting `V::default()` first if it has none.
    pub fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        match self.parts[key.part()].entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.len += 1;
                e.insert(V::default())
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(|part| part.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.parts.iter().flat_map(|part| part.values())
    }

    /// Memory of the parts' tables: their slots, whether used or not.
    pub fn table_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(K, V)>() + 1;
        self.parts.iter().map(|p| p.capacity() * slot).sum()
    }

    /// Shrinks part `part` (modulo [`MAP_PARTS`]) if it uses less than a
    /// quarter of its room, to twice what it holds: a table sized for a
    /// peak follows its contents back down, one part (a 256th) at a time.
    /// Returns whether it shrank. Changes nothing a lookup sees.
    pub fn shrink_part(&mut self, part: usize) -> bool {
        let map = &mut self.parts[part % MAP_PARTS];
        if map.capacity() < 64 || map.len() >= map.capacity() / 4 {
            return false;
        }
        map.shrink_to(map.len() * 2);
        true
    }

    /// The largest number of entries any part has room for: what one
    /// part's growth moves at most, next.
    #[cfg(test)]
    fn largest_part_capacity(&self) -> usize {
        self.parts.iter().map(|p| p.capacity()).max().unwrap_or(0)
    }
}

impl<K: PartKey, V> std::ops::Index<&K> for PartMap<K, V> {
    type Output = V;

    fn index(&self, key: &K) -> &V {
        self.get(key).expect("key in PartMap")
    }
}

/// A FIFO queue of [`QUEUE_CHUNK`]-element chunks: pushing never moves the
/// elements already queued, and memory is handed back a chunk at a time as
/// the front is popped.
pub struct ChunkQueue<T> {
    /// Each chunk is allocated with room for `QUEUE_CHUNK` and never holds
    /// more, so it never reallocates. No chunk is empty.
    chunks: VecDeque<VecDeque<T>>,
}

impl<T> Default for ChunkQueue<T> {
    fn default() -> Self {
        ChunkQueue { chunks: VecDeque::new() }
    }
}

impl<T> ChunkQueue<T> {
    pub fn push_back(&mut self, value: T) {
        match self.chunks.back_mut() {
            Some(chunk) if chunk.len() < QUEUE_CHUNK => chunk.push_back(value),
            _ => {
                let mut chunk = VecDeque::with_capacity(QUEUE_CHUNK);
                chunk.push_back(value);
                self.chunks.push_back(chunk);
            }
        }
    }

    /// Puts an element back at the front (an undo of `pop_front`).
    pub fn push_front(&mut self, value: T) {
        match self.chunks.front_mut() {
            Some(chunk) if chunk.len() < QUEUE_CHUNK => chunk.push_front(value),
            _ => {
                let mut chunk = VecDeque::with_capacity(QUEUE_CHUNK);
                chunk.push_front(value);
                self.chunks.push_front(chunk);
            }
        }
    }

    pub fn pop_back(&mut self) -> Option<T> {
        let chunk = self.chunks.back_mut()?;
        let value = chunk.pop_back();
        if chunk.is_empty() {
            self.chunks.pop_back();
        }
        value
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let chunk = self.chunks.front_mut()?;
        let value = chunk.pop_front();
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        value
    }

    pub fn front(&self) -> Option<&T> {
        self.chunks.front()?.front()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> FromIterator<T> for ChunkQueue<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut queue = ChunkQueue::default();
        for value in iter {
            queue.push_back(value);
        }
        queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Random operations against std's `HashMap`: same answers, same length.
    #[test]
    fn part_map_matches_a_hash_map() {
        let mut map: PartMap<u64, u64> = PartMap::default();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 50_000;
            match x % 5 {
                0 | 1 => assert_eq!(map.insert(key, i), model.insert(key, i)),
                2 => assert_eq!(map.remove(&key), model.remove(&key)),
                3 => {
                    *map.get_or_default(key) += 1;
                    *model.entry(key).or_default() += 1;
                }
                _ => {
                    if let Some(v) = map.get_mut(&key) {
                        *v += 7;
                    }
                    if let Some(v) = model.get_mut(&key) {
                        *v += 7;
                    }
                }
            }
            assert_eq!(map.get(&key), model.get(&key));
            assert_eq!(map.len(), model.len());
        }
        let mut all: Vec<_> = map.iter().map(|(&k, &v)| (k, v)).collect();
        all.sort_unstable();
        let mut expected: Vec<_> = model.into_iter().collect();
        expected.sort_unstable();
        assert_eq!(all, expected);
        assert_eq!(map.values().count(), all.len());
    }

    /// Tables sized for a peak come back down, a part at a time, and keep
    /// every entry they still hold.
    #[test]
    fn parts_shrink_to_what_they_hold() {
        let mut map: PartMap<u64, u64> = PartMap::default();
        for seq in 0..200_000u64 {
            map.insert(seq, seq);
        }
        let peak = map.table_bytes();
        for seq in 0..190_000u64 {
            map.remove(&seq);
        }
        assert_eq!(map.table_bytes(), peak, "removing frees no room by itself");
        let shrunk = (0..MAP_PARTS).filter(|&part| map.shrink_part(part)).count();
        assert_eq!(shrunk, MAP_PARTS);
        assert!(map.table_bytes() * 6 < peak, "{} of {peak}", map.table_bytes());
        assert!((190_000..200_000u64).all(|seq| map.get(&seq) == Some(&seq)));
        assert_eq!(map.len(), 10_000);
        // A part that is well used is left as it is.
        assert!(!(0..MAP_PARTS).any(|part| map.shrink_part(part)));
    }

    /// The bug this guards: one growing map moved all of its entries at
    /// once. Consecutive sequences (holds) and random 128-bit hashes
    /// (idempotency keys) both spread so that no part holds more than a
    /// small multiple of its share, so no single insert moves more than that.
    #[test]
    fn keys_spread_over_the_parts_so_no_growth_moves_much() {
        const N: usize = 1 << 20;
        let mut seqs: PartMap<u64, ()> = PartMap::default();
        for seq in 1..=N as u64 {
            seqs.insert(seq, ());
        }
        let mut keys: PartMap<u128, ()> = PartMap::default();
        for i in 0..N as u128 {
            keys.insert(xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()), ());
        }
        for (name, largest) in [("seqs", seqs.largest_part_capacity()), ("keys", keys.largest_part_capacity())] {
            // An even share is N / 256 = 4,096 entries, for which a table
            // has room for 7,168; a part twice its share would have 14,336.
            assert!(
                largest <= 4 * N / MAP_PARTS,
                "{name}: a part has room for {largest}, the share is {}",
                N / MAP_PARTS
            );
        }
    }

    #[test]
    fn reserve_makes_room_in_every_part() {
        let mut map: PartMap<u64, ()> = PartMap::default();
        map.reserve(1 << 20);
        let smallest = map.parts.iter().map(|p| p.capacity()).min().unwrap();
        assert!(smallest >= (1 << 20) / MAP_PARTS, "smallest part has room for {smallest}");
        for seq in 0..(1u64 << 20) {
            map.insert(seq, ());
        }
        assert_eq!(map.len(), 1 << 20);
    }

    /// Random pushes and pops at both ends against `VecDeque`, across many
    /// chunk boundaries.
    #[test]
    fn chunk_queue_matches_a_vec_deque() {
        let mut queue: ChunkQueue<u64> = ChunkQueue::default();
        let mut model: VecDeque<u64> = VecDeque::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..300_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 7 {
                0..=3 => {
                    queue.push_back(i);
                    model.push_back(i);
                }
                4 | 5 => assert_eq!(queue.pop_front(), model.pop_front()),
                _ => assert_eq!(queue.pop_back(), model.pop_back()),
            }
            assert_eq!(queue.front(), model.front());
            if i % 1_024 == 0 {
                assert!(queue.iter().eq(model.iter()));
            }
        }
        assert!(queue.iter().eq(model.iter()));
        assert!(queue.chunks.iter().all(|c| !c.is_empty() && c.len() <= QUEUE_CHUNK));
        let collected: ChunkQueue<u64> = model.iter().copied().collect();
        assert!(collected.iter().eq(model.iter()));
    }

    /// Chunks are allocated once: pushing never reallocates one.
    #[test]
    fn chunk_queue_never_moves_a_pushed_element() {
        let mut queue: ChunkQueue<u64> = ChunkQueue::default();
        queue.push_back(1);
        let first: *const u64 = queue.front().unwrap();
        for i in 0..(10 * QUEUE_CHUNK as u64) {
            queue.push_back(i);
        }
        assert_eq!(queue.front().unwrap() as *const u64, first);
    }
}
