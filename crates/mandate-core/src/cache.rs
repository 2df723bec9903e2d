//! A bounded cache that a flood of new entries does not empty.

use std::collections::HashMap;
use std::fmt;

/// A bounded cache in two generations. New entries go into the current
/// one; when it holds half the capacity, it becomes the previous one and the
/// previous one is dropped. An entry found in the previous generation is
/// put back into the current one (by its user). So an entry in use stays
/// however many new ones arrive around it (an agent deriving fresh children
/// by the thousand, or conditions by the thousand, evicts only what nobody
/// used for a generation), and the cache never holds more than its
/// capacity. Used for verified chains (by the keyed hash of their string),
/// compiled conditions (by expression) and decoded keys (by their bytes).
pub struct Generations<K, V, S = std::collections::hash_map::RandomState> {
    current: HashMap<K, V, S>,
    previous: HashMap<K, V, S>,
}

impl<K, V, S> fmt::Debug for Generations<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sizes only: entries may be credentials' digests or keys.
        f.debug_struct("Generations")
            .field("current", &self.current.len())
            .field("previous", &self.previous.len())
            .finish()
    }
}

impl<K, V, S: Default> Default for Generations<K, V, S> {
    fn default() -> Self {
        Self {
            current: HashMap::default(),
            previous: HashMap::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher + Default> Generations<K, V, S> {
    /// What `find` finds in the current generation, else in the previous
    /// one, and whether it was in the previous one (then put it back with
    /// [`Generations::insert`] to keep it).
    pub fn find<'a>(
        &'a self,
        find: impl Fn(&'a HashMap<K, V, S>) -> Option<&'a V>,
    ) -> Option<(&'a V, bool)> {
        find(&self.current)
            .map(|v| (v, false))
            .or_else(|| find(&self.previous).map(|v| (v, true)))
    }

    /// Puts `value` in the current generation, which becomes the previous
    /// one first if it holds `capacity / 2`.
    pub fn insert(&mut self, key: K, value: V, capacity: usize) {
        if self.current.len() >= (capacity / 2).max(1) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }

    /// Whether both generations are empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.current.is_empty() && self.previous.is_empty()
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(c: &Generations<u32, u32>, k: u32) -> Option<(u32, bool)> {
        c.find(|map| map.get(&k))
            .map(|(v, previous)| (*v, previous))
    }

    #[test]
    fn what_is_used_each_generation_stays_and_the_cache_stays_bounded() {
        let capacity = 10;
        let mut c = Generations::<u32, u32>::default();
        c.insert(0, 0, capacity);
        for k in 1..1000 {
            c.insert(k, k, capacity);
            // The user puts an entry found in the previous generation back.
            if let Some((v, true)) = get(&c, 0) {
                c.insert(0, v, capacity);
            }
            assert!(
                get(&c, 0).is_some(),
                "entry 0, used every time, lost at {k}"
            );
            assert!(c.current.len() + c.previous.len() <= capacity);
        }
        // An entry nobody used is gone after two generations.
        assert_eq!(get(&c, 500), None);
        assert_eq!(get(&c, 999), Some((999, false)));
        c.clear();
        assert!(c.is_empty());
    }
}
