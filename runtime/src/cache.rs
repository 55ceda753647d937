//! The answer cache — the CDN part of the node — and the coalescing of identical requests
//! in flight.
//!
//! An answer is keyed by everything that determines it ([`CacheKey`]): the route, the
//! plugin's digest, the models' digests and the input bytes, so a new plugin or model
//! version can never be answered from an old entry. The cache holds at most a byte budget,
//! evicting the least recently used entries, and each entry lives for its route's TTL.
//!
//! [`Cache::get_or_compute`] adds coalescing: of N identical requests arriving together, the
//! first (the leader) computes and the others await its result, so N hard requests cost one
//! escalation. A failed computation is not cached and every waiter gets the error. A leader
//! that is cancelled (its client went away) wakes its followers, and one of them takes over.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::config::Digest;

/// Identity of an answer: a sha256 over route, plugin digest, model digests and input.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key of `input` on `route`, served by the plugin and models with these digests.
    pub fn new(route: &str, plugin: &Digest, models: &[Digest], input: &[u8]) -> CacheKey {
        let mut h = Sha256::new();
        // Lengths first, so no two different tuples hash the same byte stream.
        h.update((route.len() as u64).to_le_bytes());
        h.update(route.as_bytes());
        h.update(plugin.as_bytes());
        h.update((models.len() as u64).to_le_bytes());
        for m in models {
            h.update(m.as_bytes());
        }
        h.update((input.len() as u64).to_le_bytes());
        h.update(input);
        CacheKey(h.finalize().into())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", hex::encode(&self.0[..8]))
    }
}

/// Bookkeeping an entry costs beyond its value's own bytes (key, expiry, map slots), so a
/// flood of tiny answers is bounded too.
const ENTRY_OVERHEAD: usize = 128;

struct Entry<V> {
    value: V,
    weight: usize,
    expires: Instant,
    tick: u64,
}

/// The byte-bounded LRU store with per-entry expiry. Sans-IO: every call takes `now`.
pub struct LruStore<V> {
    map: HashMap<CacheKey, Entry<V>>,
    /// Use order, oldest first: `tick -> key`.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: usize,
    budget: usize,
    weigh: fn(&V) -> usize,
}

impl<V: Clone> LruStore<V> {
    /// An empty store holding at most `budget` bytes, as counted by `weigh` plus a fixed
    /// overhead per entry.
    pub fn new(budget: usize, weigh: fn(&V) -> usize) -> LruStore<V> {
        LruStore { map: HashMap::new(), order: BTreeMap::new(), tick: 0, bytes: 0, budget, weigh }
    }

    /// The value under `key` if present and not expired; marks it recently used.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<V> {
        let entry = self.map.get_mut(key)?;
        if now >= entry.expires {
            self.remove(key);
            return None;
        }
        self.order.remove(&entry.tick);
        self.tick += 1;
        entry.tick = self.tick;
        self.order.insert(self.tick, *key);
        Some(entry.value.clone())
    }

    /// Stores `value` for `ttl`, evicting least recently used entries to stay within the
    /// budget. A value larger than the whole budget is not stored.
    pub fn insert(&mut self, key: CacheKey, value: V, ttl: Duration, now: Instant) {
        self.remove(&key);
        let weight = (self.weigh)(&value).saturating_add(ENTRY_OVERHEAD);
        if weight > self.budget || ttl.is_zero() {
            return;
        }
        while self.bytes + weight > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some(e) = self.map.remove(&oldest) {
                self.bytes -= e.weight;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key);
        self.bytes += weight;
        self.map.insert(key, Entry { value, weight, expires: now + ttl, tick: self.tick });
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(e) = self.map.remove(key) {
            self.order.remove(&e.tick);
            self.bytes -= e.weight;
        }
    }

    /// Entries held (expired ones included until touched or evicted).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes held, overhead included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// How an answer was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CacheStatus {
    /// Served from the cache.
    Hit,
    /// Computed by this caller (the leader).
    #[default]
    Miss,
    /// Awaited from an identical request already in flight.
    Coalesced,
}

impl CacheStatus {
    /// Every status, for metrics that list each from the start.
    pub const ALL: [CacheStatus; 3] = [CacheStatus::Hit, CacheStatus::Miss, CacheStatus::Coalesced];

    /// Lowercase name, for response parameters and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
        }
    }
}

/// A value and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup<V> {
    /// The answer.
    pub value: V,
    /// Hit, miss or coalesced.
    pub status: CacheStatus,
}

/// What followers watch: `None` until the leader finishes.
type Slot<V, E> = Option<Result<V, E>>;

struct Inner<V, E> {
    store: LruStore<V>,
    /// The computation in flight per key, with an id so that a finished leader removes only
    /// its own entry.
    in_flight: HashMap<CacheKey, (u64, watch::Receiver<Slot<V, E>>)>,
    next_id: u64,
}

/// The answer cache with request coalescing. Share it behind an `Arc`.
pub struct Cache<V, E> {
    inner: Mutex<Inner<V, E>>,
    keep: fn(&V) -> bool,
}

impl<V: Clone, E: Clone> Cache<V, E> {
    /// A cache holding at most `budget_bytes`, values weighed by `weigh`.
    pub fn new(budget_bytes: usize, weigh: fn(&V) -> usize) -> Cache<V, E> {
        Cache::with_filter(budget_bytes, weigh, |_| true)
    }

    /// Like [`Cache::new`], but stores only the values `keep` accepts; the others are still
    /// shared with coalesced followers. A degraded answer, for one, should reach everyone
    /// who asked together but not be served for a whole TTL once the upstream is back.
    pub fn with_filter(budget_bytes: usize, weigh: fn(&V) -> usize, keep: fn(&V) -> bool) -> Cache<V, E> {
        Cache {
            inner: Mutex::new(Inner {
                store: LruStore::new(budget_bytes, weigh),
                in_flight: HashMap::new(),
                next_id: 0,
            }),
            keep,
        }
    }

    /// The cached value for `key`, or else the result of an identical computation already in
    /// flight, or else the result of `compute` (stored for `ttl` if it succeeds; a zero
    /// `ttl` coalesces without storing). Uses the wall clock for expiry.
    pub async fn get_or_compute<F, Fut>(
        &self,
        key: CacheKey,
        ttl: Duration,
        compute: F,
    ) -> Result<Lookup<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        loop {
            let (id, tx, mut rx) = {
                let mut inner = self.inner.lock();
                if let Some(value) = inner.store.get(&key, Instant::now()) {
                    return Ok(Lookup { value, status: CacheStatus::Hit });
                }
                match inner.in_flight.get(&key) {
                    Some((_, rx)) => (None, None, rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        inner.next_id += 1;
                        let id = inner.next_id;
                        inner.in_flight.insert(key, (id, rx.clone()));
                        (Some(id), Some(tx), rx)
                    }
                }
            };
            if let (Some(id), Some(tx)) = (id, tx) {
                return self.lead(key, id, tx, ttl, compute).await;
            }
            match rx.wait_for(Option::is_some).await {
                Ok(slot) => {
                    return match slot.as_ref() {
                        Some(Ok(value)) => {
                            Ok(Lookup { value: value.clone(), status: CacheStatus::Coalesced })
                        }
                        Some(Err(e)) => Err(e.clone()),
                        // wait_for only returns once the slot is filled.
                        None => continue,
                    };
                }
                // The leader was dropped before finishing: try again, perhaps as the leader.
                Err(_) => continue,
            }
        }
    }

    async fn lead<F, Fut>(
        &self,
        key: CacheKey,
        id: u64,
        tx: watch::Sender<Slot<V, E>>,
        ttl: Duration,
        compute: F,
    ) -> Result<Lookup<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        // If this future is dropped mid-computation, the guard unregisters it; dropping `tx`
        // then wakes the followers.
        let mut guard = LeaderGuard { cache: self, key, id, finished: false };
        let result = compute().await;
        {
            let mut inner = self.inner.lock();
            if let Ok(value) = &result
                && (self.keep)(value)
            {
                inner.store.insert(key, value.clone(), ttl, Instant::now());
            }
            inner.unregister(&key, id);
        }
        guard.finished = true;
        tx.send_replace(Some(result.clone()));
        result.map(|value| Lookup { value, status: CacheStatus::Miss })
    }

    /// Entries held and bytes used.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.store.len(), inner.store.bytes())
    }

    /// Computations in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().in_flight.len()
    }
}

impl<V, E> Inner<V, E> {
    fn unregister(&mut self, key: &CacheKey, id: u64) {
        if self.in_flight.get(key).is_some_and(|(current, _)| *current == id) {
            self.in_flight.remove(key);
        }
    }
}

struct LeaderGuard<'a, V, E> {
    cache: &'a Cache<V, E>,
    key: CacheKey,
    id: u64,
    finished: bool,
}

impl<V, E> Drop for LeaderGuard<'_, V, E> {
    fn drop(&mut self) {
        if !self.finished {
            self.cache.inner.lock().unregister(&self.key, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey::new("r", &Digest::of(b"plugin"), &[Digest::of(b"model")], &[n])
    }

    // The store's weigher takes `&V`, and V is `Vec<u8>` here.
    #[allow(clippy::ptr_arg)]
    fn len(v: &Vec<u8>) -> usize {
        v.len()
    }

    #[test]
    fn key_covers_every_part() {
        let p = Digest::of(b"plugin");
        let m = Digest::of(b"model");
        let base = CacheKey::new("r", &p, &[m], b"in");
        assert_eq!(base, CacheKey::new("r", &p, &[m], b"in"));
        assert_ne!(base, CacheKey::new("s", &p, &[m], b"in"));
        assert_ne!(base, CacheKey::new("r", &Digest::of(b"plugin v2"), &[m], b"in"));
        assert_ne!(base, CacheKey::new("r", &p, &[Digest::of(b"model v2")], b"in"));
        assert_ne!(base, CacheKey::new("r", &p, &[m], b"in2"));
        // Moving bytes between route and input changes the key.
        assert_ne!(CacheKey::new("ab", &p, &[], b"c"), CacheKey::new("a", &p, &[], b"bc"));
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let t0 = Instant::now();
        let mut s = LruStore::new(10_000, len);
        s.insert(key(1), vec![1], Duration::from_secs(5), t0);
        assert_eq!(s.get(&key(1), t0 + Duration::from_millis(4999)), Some(vec![1]));
        assert_eq!(s.get(&key(1), t0 + Duration::from_secs(5)), None);
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn evicts_least_recently_used_within_the_byte_budget() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        // Room for three entries of 100 bytes.
        let mut s = LruStore::new(3 * (100 + ENTRY_OVERHEAD), len);
        for n in 1..=3 {
            s.insert(key(n), vec![n; 100], ttl, t0);
        }
        // Touch 1, so 2 is now the least recently used.
        assert!(s.get(&key(1), t0).is_some());
        s.insert(key(4), vec![4; 100], ttl, t0);
        assert!(s.get(&key(2), t0).is_none());
        for n in [1, 3, 4] {
            assert!(s.get(&key(n), t0).is_some(), "{n}");
        }
        // A big entry evicts as many as it needs.
        s.insert(key(5), vec![5; 250], ttl, t0);
        assert!(s.bytes() <= 3 * (100 + ENTRY_OVERHEAD));
        assert_eq!(s.len(), 2);
        // One larger than the whole budget is not stored and evicts nothing.
        s.insert(key(6), vec![6; 10_000], ttl, t0);
        assert_eq!(s.len(), 2);
        assert!(s.get(&key(6), t0).is_none());
    }
}
