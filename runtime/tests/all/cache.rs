//! The answer cache: identical requests in flight share one computation, failures are not
//! cached, a cancelled leader hands over.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cascade_runtime::config::Digest;
use cascade_runtime::{Cache, CacheKey, CacheStatus};
use tokio::sync::Notify;

type TestCache = Cache<u32, String>;

fn new_cache() -> Arc<TestCache> {
    Arc::new(Cache::new(1 << 20, |_| 4))
}

fn key() -> CacheKey {
    CacheKey::new("digits", &Digest::of(b"plugin"), &[Digest::of(b"model")], b"pixels")
}

/// On the current-thread runtime, yielding lets every spawned task run up to the point
/// where it waits: the leader inside its computation, the followers on the leader.
async fn let_everyone_block() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Spawns `n` identical requests whose computation counts itself, waits for `release`,
/// then returns `result`.
fn spawn_burst(
    cache: &Arc<TestCache>,
    n: usize,
    computations: &Arc<AtomicUsize>,
    release: &Arc<Notify>,
    result: Result<u32, String>,
) -> Vec<tokio::task::JoinHandle<Result<cascade_runtime::Lookup<u32>, String>>> {
    (0..n)
        .map(|_| {
            let (cache, computations, release, result) =
                (cache.clone(), computations.clone(), release.clone(), result.clone());
            tokio::spawn(async move {
                cache
                    .get_or_compute(key(), Duration::from_secs(60), || async move {
                        computations.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        result
                    })
                    .await
            })
        })
        .collect()
}

#[tokio::test]
async fn identical_requests_in_flight_share_one_computation() {
    let cache = new_cache();
    let computations = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let tasks = spawn_burst(&cache, 10, &computations, &release, Ok(42));
    let_everyone_block().await;
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    release.notify_waiters();
    let mut statuses = Vec::new();
    for t in tasks {
        let lookup = t.await.unwrap().unwrap();
        assert_eq!(lookup.value, 42);
        statuses.push(lookup.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == CacheStatus::Miss).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == CacheStatus::Coalesced).count(), 9);
    // The answer is now cached: the next identical request does not compute.
    let again = cache.get_or_compute(key(), Duration::from_secs(60), || async { Ok(0) }).await.unwrap();
    assert_eq!((again.value, again.status), (42, CacheStatus::Hit));
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    assert_eq!(cache.in_flight(), 0);
}

#[tokio::test]
async fn a_failure_reaches_every_waiter_and_is_not_cached() {
    let cache = new_cache();
    let computations = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let tasks = spawn_burst(&cache, 5, &computations, &release, Err("upstream timed out".into()));
    let_everyone_block().await;
    release.notify_waiters();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err(), "upstream timed out");
    }
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    let retry = cache.get_or_compute(key(), Duration::from_secs(60), || async { Ok(7) }).await.unwrap();
    assert_eq!((retry.value, retry.status), (7, CacheStatus::Miss));
}

#[tokio::test]
async fn filtered_values_are_shared_but_not_stored() {
    // Odd values stand for degraded answers.
    let cache: Arc<TestCache> = Arc::new(Cache::with_filter(1 << 20, |_| 4, |v| v % 2 == 0));
    let computations = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let tasks = spawn_burst(&cache, 3, &computations, &release, Ok(3));
    let_everyone_block().await;
    release.notify_waiters();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().value, 3);
    }
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    let next = cache.get_or_compute(key(), Duration::from_secs(60), || async { Ok(4) }).await.unwrap();
    assert_eq!((next.value, next.status), (4, CacheStatus::Miss));
    let hit = cache.get_or_compute(key(), Duration::from_secs(60), || async { Ok(6) }).await.unwrap();
    assert_eq!((hit.value, hit.status), (4, CacheStatus::Hit));
}

#[tokio::test]
async fn a_cancelled_leader_hands_over_to_a_follower() {
    let cache = new_cache();
    let computations = Arc::new(AtomicUsize::new(0));
    let never = Arc::new(Notify::new());
    // The leader's computation never finishes on its own...
    let leader = spawn_burst(&cache, 1, &computations, &never, Ok(1)).remove(0);
    let_everyone_block().await;
    // ...and its followers would compute 2 if they had to.
    let release = Arc::new(Notify::new());
    let followers = spawn_burst(&cache, 4, &computations, &release, Ok(2));
    let_everyone_block().await;
    assert_eq!(computations.load(Ordering::SeqCst), 1, "followers wait on the leader");
    leader.abort();
    let_everyone_block().await;
    assert_eq!(computations.load(Ordering::SeqCst), 2, "one follower took over");
    release.notify_waiters();
    let mut statuses = Vec::new();
    for t in followers {
        let lookup =
            tokio::time::timeout(Duration::from_secs(5), t).await.expect("no hang").unwrap().unwrap();
        assert_eq!(lookup.value, 2);
        statuses.push(lookup.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == CacheStatus::Miss).count(), 1);
    assert_eq!(cache.in_flight(), 0);
}
