//! Admission: whether a request may start, decided before any work is done for it.
//!
//! Each route is a bulkhead — a bounded number of requests running and a bounded queue of
//! requests waiting — so one slow route cannot take the others' capacity, and nothing grows
//! without bound: beyond the queue, a request is rejected at once. A token bucket per route
//! caps its sustained rate, and a node-wide limit caps everything running. Every rejection
//! carries its reason, the HTTP status it maps to, and a `Retry-After` in whole seconds.
//!
//! The [`Permit`] a request holds frees its slot when dropped, so a request whose client went
//! away (its future dropped) gives its place back, whether it was running or queued.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::{NodeSettings, RateSettings};
use crate::token_bucket::TokenBucket;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No route by that name.
    #[error("no route named like that")]
    UnknownRoute,
    /// The route is disabled in the current mode.
    #[error("route is disabled in the current mode")]
    RouteDisabled,
    /// The route's rate limit is reached.
    #[error("route rate limit reached")]
    RateLimited {
        /// Time until the bucket has a token again.
        retry_after: Duration,
    },
    /// The route's slots and queue are full.
    #[error("route queue is full")]
    QueueFull,
    /// The node-wide in-flight limit is reached.
    #[error("node is at its in-flight limit")]
    NodeBusy,
    /// The thread that took the request in has fallen behind ([`crate::headroom`]).
    #[error("node is shedding load: it has fallen behind taking requests in")]
    Behind,
    /// The requesting edge holds its fair share of the route while other edges wait
    /// (escalations only; see [`crate::FairShare`]).
    #[error("the requesting node is over its fair share")]
    OverShare,
}

impl Rejection {
    /// HTTP status: 404 unknown route, 429 rate limited, 503 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::UnknownRoute => 404,
            Rejection::RateLimited { .. } => 429,
            Rejection::RouteDisabled
            | Rejection::QueueFull
            | Rejection::NodeBusy
            | Rejection::Behind
            | Rejection::OverShare => 503,
        }
    }

    /// `Retry-After` in whole seconds (at least 1), or `None` when retrying cannot help.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Rejection::UnknownRoute => None,
            Rejection::RateLimited { retry_after } => Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            // A full queue drains within a request's deadline, typically well under a second;
            // a mode lasts at least its dwell time, but clients should probe again soon.
            Rejection::QueueFull
            | Rejection::NodeBusy
            | Rejection::Behind
            | Rejection::RouteDisabled
            | Rejection::OverShare => Some(1),
        }
    }

    /// Stable snake_case name, for metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Rejection::UnknownRoute => "unknown_route",
            Rejection::RouteDisabled => "route_disabled",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::QueueFull => "queue_full",
            Rejection::NodeBusy => "node_busy",
            Rejection::Behind => "behind",
            Rejection::OverShare => "over_share",
        }
    }
}

/// A running request's slot; dropping it frees the slot.
pub struct Permit {
    _route: OwnedSemaphorePermit,
    _node: OwnedSemaphorePermit,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

struct RouteGate {
    slots: Arc<Semaphore>,
    max_in_flight: u32,
    queue_len: u32,
    queued: AtomicU32,
    rate: Option<Mutex<TokenBucket>>,
}

/// Per-route bulkheads and rate limits, and the node-wide in-flight limit.
pub struct Admission {
    node: Arc<Semaphore>,
    routes: BTreeMap<String, RouteGate>,
    disabled: Mutex<BTreeSet<String>>,
    /// How far behind a serving thread may fall before it sheds; zero: never.
    max_intake_lag: Duration,
}

/// Per-route limits, as [`Admission::new`] takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteLimits {
    /// Requests running at once.
    pub max_in_flight: u32,
    /// Requests waiting for a slot.
    pub queue_len: u32,
    /// Sustained rate and burst, if limited.
    pub rate_limit: Option<RateSettings>,
}

/// Takes a queue place on creation and gives it back on drop, so a queued request that is
/// cancelled leaves the queue.
struct QueuePlace<'a>(&'a AtomicU32);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Limits for the given routes and node.
    pub fn new(
        routes: impl IntoIterator<Item = (String, RouteLimits)>,
        node_max_in_flight: u32,
        now: Instant,
    ) -> Admission {
        let routes = routes
            .into_iter()
            .map(|(name, l)| {
                let gate = RouteGate {
                    slots: Arc::new(Semaphore::new(l.max_in_flight as usize)),
                    max_in_flight: l.max_in_flight,
                    queue_len: l.queue_len,
                    queued: AtomicU32::new(0),
                    rate: l.rate_limit.map(|r| Mutex::new(TokenBucket::new(r, now))),
                };
                (name, gate)
            })
            .collect();
        Admission {
            node: Arc::new(Semaphore::new(node_max_in_flight as usize)),
            routes,
            disabled: Mutex::new(BTreeSet::new()),
            max_intake_lag: Duration::ZERO,
        }
    }

    /// Limits as a node config sets them.
    pub fn from_settings(s: &NodeSettings, now: Instant) -> Admission {
        let routes = s.routes.iter().map(|(name, r)| (name.clone(), RouteLimits::from(r)));
        Admission { max_intake_lag: s.max_intake_lag, ..Admission::new(routes, s.max_in_flight, now) }
    }

    /// Whether the calling thread, which takes requests in, has fallen so far behind that
    /// this new request should be refused ([`crate::headroom`]).
    pub async fn sheds_now(&self) -> bool {
        !crate::headroom::admit_new(self.max_intake_lag).await
    }

    /// Sets the routes refused in the current mode (on a mode switch).
    pub fn set_disabled(&self, routes: &BTreeSet<String>) {
        *self.disabled.lock() = routes.clone();
    }

    /// Admits a request to `route`: at once if a slot is free, after waiting if the queue
    /// has room, or rejects it. The wait is bounded only by the queue; callers bound it in
    /// time by dropping this future at the request's deadline, which leaves the queue.
    pub async fn admit(&self, route: &str, now: Instant) -> Result<Permit, Rejection> {
        let gate = self.routes.get(route).ok_or(Rejection::UnknownRoute)?;
        if self.disabled.lock().contains(route) {
            return Err(Rejection::RouteDisabled);
        }
        if let Some(rate) = &gate.rate {
            let mut bucket = rate.lock();
            if !bucket.try_take(now) {
                let retry_after = bucket.time_to_token(now).unwrap_or(Duration::from_secs(1));
                return Err(Rejection::RateLimited { retry_after });
            }
        }
        let route_permit = match gate.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(Rejection::NodeBusy),
            Err(TryAcquireError::NoPermits) => {
                let took_place = gate
                    .queued
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                        (q < gate.queue_len).then_some(q + 1)
                    })
                    .is_ok();
                if !took_place {
                    return Err(Rejection::QueueFull);
                }
                let _place = QueuePlace(&gate.queued);
                gate.slots.clone().acquire_owned().await.map_err(|_| Rejection::NodeBusy)?
            }
        };
        let node_permit = self.node.clone().try_acquire_owned().map_err(|_| Rejection::NodeBusy)?;
        Ok(Permit { _route: route_permit, _node: node_permit })
    }

    /// Why `route` would refuse a request right now for want of room (every slot taken and
    /// the queue full, the node at its limit, or the route off in this mode), taking
    /// nothing. A front door asks before it reads a request's body, so that a node that
    /// will refuse spends nothing on the body; a request that passes may still be refused
    /// by [`Admission::admit`] (the rate limit is left to it, as asking spends a token).
    pub fn refuses_now(&self, route: &str) -> Option<Rejection> {
        let gate = self.routes.get(route)?;
        if self.disabled.lock().contains(route) {
            return Some(Rejection::RouteDisabled);
        }
        if gate.slots.available_permits() == 0 && gate.queued.load(Ordering::Acquire) >= gate.queue_len {
            return Some(Rejection::QueueFull);
        }
        (self.node.available_permits() == 0).then_some(Rejection::NodeBusy)
    }

    /// The fullest route queue, as a fraction of its length (a mode-switching signal). A
    /// route without a queue counts as full when all its slots are taken.
    pub fn queue_fraction(&self) -> f64 {
        self.routes
            .values()
            .map(|g| {
                if g.queue_len == 0 {
                    let busy = g.max_in_flight as usize - g.slots.available_permits();
                    if busy >= g.max_in_flight as usize { 1.0 } else { 0.0 }
                } else {
                    f64::from(g.queued.load(Ordering::Acquire)) / f64::from(g.queue_len)
                }
            })
            .fold(0.0, f64::max)
    }

    /// Requests of `route` running and waiting, if the route exists.
    pub fn load(&self, route: &str) -> Option<(u32, u32)> {
        let g = self.routes.get(route)?;
        let running = g.max_in_flight - g.slots.available_permits() as u32;
        Some((running, g.queued.load(Ordering::Acquire)))
    }
}
