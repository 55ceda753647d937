//! Admission: bulkheads, queues, rate limits, the node-wide limit, disabled routes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cascade_runtime::config::RateSettings;
use cascade_runtime::{Admission, Rejection, RouteLimits};

fn node(limits: RouteLimits, node_max: u32, t0: Instant) -> Admission {
    Admission::new([("digits".to_string(), limits)], node_max, t0)
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn bulkhead_runs_then_queues_then_rejects_and_drop_frees_slots() {
    let t0 = Instant::now();
    let a =
        std::sync::Arc::new(node(RouteLimits { max_in_flight: 2, queue_len: 1, rate_limit: None }, 100, t0));
    let p1 = a.admit("digits", t0).await.unwrap();
    let _p2 = a.admit("digits", t0).await.unwrap();
    let queued = tokio::spawn({
        let a = a.clone();
        async move { a.admit("digits", t0).await.map(drop) }
    });
    settle().await;
    assert_eq!(a.load("digits"), Some((2, 1)));
    assert_eq!(a.queue_fraction(), 1.0);
    let full = a.admit("digits", t0).await.unwrap_err();
    assert_eq!(full, Rejection::QueueFull);
    assert_eq!((full.status(), full.retry_after_secs()), (503, Some(1)));
    // A finished (or cancelled) request's permit frees its slot for the queued one.
    drop(p1);
    tokio::time::timeout(Duration::from_secs(5), queued).await.unwrap().unwrap().unwrap();
    assert_eq!(a.load("digits"), Some((1, 0)));
}

#[tokio::test]
async fn a_cancelled_queued_request_leaves_the_queue() {
    let t0 = Instant::now();
    let a =
        std::sync::Arc::new(node(RouteLimits { max_in_flight: 1, queue_len: 1, rate_limit: None }, 100, t0));
    let _running = a.admit("digits", t0).await.unwrap();
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.admit("digits", t0).await.map(drop) }
    });
    settle().await;
    assert_eq!(a.admit("digits", t0).await.unwrap_err(), Rejection::QueueFull);
    waiting.abort();
    settle().await;
    assert_eq!(a.load("digits"), Some((1, 0)));
    // The place is free again: this one waits instead of being rejected.
    let again = tokio::time::timeout(Duration::from_millis(50), a.admit("digits", t0)).await;
    assert!(again.is_err(), "should have queued, not been rejected");
}

#[tokio::test]
async fn rate_limit_rejects_with_429_and_retry_after() {
    let t0 = Instant::now();
    let limits = RouteLimits {
        max_in_flight: 10,
        queue_len: 0,
        rate_limit: Some(RateSettings { per_second: 0.5, burst: 2 }),
    };
    let a = node(limits, 100, t0);
    a.admit("digits", t0).await.unwrap();
    a.admit("digits", t0).await.unwrap();
    let r = a.admit("digits", t0).await.unwrap_err();
    assert_eq!(r, Rejection::RateLimited { retry_after: Duration::from_secs(2) });
    assert_eq!((r.status(), r.retry_after_secs()), (429, Some(2)));
    assert!(a.admit("digits", t0 + Duration::from_secs(2)).await.is_ok());
}

#[tokio::test]
async fn node_limit_unknown_and_disabled_routes() {
    let t0 = Instant::now();
    let a = node(RouteLimits { max_in_flight: 5, queue_len: 5, rate_limit: None }, 1, t0);
    let held = a.admit("digits", t0).await.unwrap();
    assert_eq!(a.admit("digits", t0).await.unwrap_err(), Rejection::NodeBusy);
    drop(held);
    // The rejected request did not keep its route slot.
    assert_eq!(a.load("digits"), Some((0, 0)));
    let unknown = a.admit("letters", t0).await.unwrap_err();
    assert_eq!((unknown.status(), unknown.retry_after_secs()), (404, None));
    a.set_disabled(&BTreeSet::from(["digits".to_string()]));
    assert_eq!(a.admit("digits", t0).await.unwrap_err(), Rejection::RouteDisabled);
    a.set_disabled(&BTreeSet::new());
    assert!(a.admit("digits", t0).await.is_ok());
}
