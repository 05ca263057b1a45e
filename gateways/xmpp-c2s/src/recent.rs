//! Recognising a delivery that was already written to a session.
//!
//! Processors commit their input offsets after appending their outputs, so a processor
//! that crashes in between processes the same inputs again after its restart and appends
//! the same deliveries a second time. Their event ids are derived from their cause, so a
//! repeat carries the id of the original: [`RecentDeliveries`] remembers the ids a session
//! was handed recently and tells the gateway to skip a repeat.
//!
//! The bound: a repeat follows its original by at most the time a failed processor takes
//! to be replaced and to catch up — its consumer group notices the failure within the
//! session timeout (10 s on Kafka; at once in-process), the new member restores its
//! partitions' state and re-reads the one uncommitted batch. [`WINDOW`] (120 s) covers
//! that several times over. [`CAPACITY`] caps the memory of a session that receives more
//! than `CAPACITY / WINDOW` (about 34) stanzas per second for the whole window; the
//! oldest ids are then forgotten first. Each remembered id costs about 56 bytes (a
//! 16-byte id and a 4-byte time in arrival order, and a hash index entry so a lookup
//! costs the same for 4,096 ids as for one), allocated only as deliveries arrive, and
//! released as they age out: an idle session holds none.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

/// How long an id is remembered.
pub const WINDOW: Duration = Duration::from_secs(120);
/// The most ids remembered per session.
pub const CAPACITY: usize = 4096;

/// The delivery ids a session was handed within the last [`WINDOW`] (at most
/// [`CAPACITY`] of them), oldest first.
#[derive(Debug, Default, Clone)]
pub struct RecentDeliveries {
    ids: VecDeque<u128>,
    /// Seconds (of the caller's clock) at which each id was first seen.
    seen: VecDeque<u32>,
    /// The same ids, for lookups.
    index: HashSet<u128, BuildHasherDefault<IdHasher>>,
}

/// Hashes a delivery id by folding its two halves: ids are UUIDs (random or derived
/// from a hash), whose bits are already uniformly spread, so no further mixing is
/// needed.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, id: u128) {
        // Truncations intended: the two 64-bit halves folded into one.
        self.0 ^= (id as u64) ^ ((id >> 64) as u64).rotate_left(32);
    }
}

impl RecentDeliveries {
    /// An empty set (no allocation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `id` as handed to the session at `now_secs` (seconds on any monotonic
    /// clock of the caller's). `true` when it is new and must be written; `false` when
    /// the session was handed the same id within the window (a repeat to skip).
    pub fn first_time(&mut self, id: u128, now_secs: u32) -> bool {
        self.expire(now_secs);
        if !self.index.insert(id) {
            return false;
        }
        if self.ids.len() >= CAPACITY {
            if let Some(oldest) = self.ids.pop_front() {
                self.index.remove(&oldest);
            }
            self.seen.pop_front();
        }
        self.ids.push_back(id);
        self.seen.push_back(now_secs);
        true
    }

    /// Forgets the ids older than the window, and gives their memory back once most of
    /// it is unused.
    pub fn expire(&mut self, now_secs: u32) {
        let window = u32::try_from(WINDOW.as_secs()).unwrap_or(u32::MAX);
        while let Some(&at) = self.seen.front() {
            if now_secs.saturating_sub(at) < window {
                break;
            }
            self.seen.pop_front();
            if let Some(id) = self.ids.pop_front() {
                self.index.remove(&id);
            }
        }
        if self.ids.capacity() > 64 && self.ids.len() < self.ids.capacity() / 4 {
            self.ids.shrink_to_fit();
            self.seen.shrink_to_fit();
            self.index.shrink_to_fit();
        }
    }

    /// Whether `id` is remembered (call [`Self::expire`] first to apply the window).
    pub fn contains(&self, id: u128) -> bool {
        self.index.contains(&id)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_recognised() {
        let mut recent = RecentDeliveries::new();
        assert!(recent.first_time(1, 0));
        assert!(recent.first_time(2, 1));
        assert!(!recent.first_time(1, 5));
        assert!(!recent.first_time(2, 100));
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn ids_older_than_the_window_are_forgotten() {
        let mut recent = RecentDeliveries::new();
        assert!(recent.first_time(1, 0));
        assert!(recent.first_time(2, 60));
        let later = u32::try_from(WINDOW.as_secs()).unwrap();
        recent.expire(later);
        assert_eq!(recent.len(), 1, "only the id seen at 0 aged out");
        assert!(recent.first_time(1, later), "forgotten, so new again");
        assert!(!recent.first_time(2, later));
    }

    #[test]
    fn the_oldest_ids_go_first_beyond_the_capacity() {
        let mut recent = RecentDeliveries::new();
        for id in 0..u128::try_from(CAPACITY).unwrap() {
            assert!(recent.first_time(id, 0));
        }
        assert!(recent.first_time(u128::MAX, 0));
        assert_eq!(recent.len(), CAPACITY);
        assert!(recent.first_time(0, 0), "the oldest was dropped");
        assert!(!recent.first_time(u128::MAX, 0));
        assert!(!recent.first_time(2, 0));
    }

    #[test]
    fn memory_is_given_back_when_the_ids_age_out() {
        let mut recent = RecentDeliveries::new();
        for id in 0..1000 {
            recent.first_time(id, 0);
        }
        recent.expire(u32::try_from(WINDOW.as_secs()).unwrap());
        assert!(recent.is_empty());
        assert!(recent.ids.capacity() <= 64);
        assert!(recent.index.capacity() <= 64);
    }

    #[test]
    fn the_index_follows_the_ids_in_and_out() {
        let mut recent = RecentDeliveries::new();
        let base = u128::from(u64::MAX) << 64;
        for i in 0..u128::try_from(CAPACITY + 10).unwrap() {
            assert!(recent.first_time(base + i, 0));
        }
        assert_eq!(recent.index.len(), CAPACITY);
        for i in 0..10 {
            assert!(!recent.contains(base + i), "dropped beyond the capacity");
        }
        assert!(recent.contains(base + 10));
        assert!(recent.contains(base + u128::try_from(CAPACITY + 9).unwrap()));
        assert!(!recent.contains(10), "only the whole id matches");
        recent.expire(u32::try_from(WINDOW.as_secs()).unwrap());
        assert!(recent.index.is_empty());
    }
}
