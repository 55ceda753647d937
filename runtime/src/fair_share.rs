//! Fair shares of a central node's capacity among the edges escalating to it.
//!
//! Route admission bounds how much a node takes on; it does not say who gets it. Without a
//! share, one edge flooding the central tier fills every slot and queue place, and every
//! other edge's escalations are refused. [`FairShare`] sits in front of route admission on
//! the QUIC side: while `n` peers have requests in flight, each may hold at most
//! `capacity / n` (at least one), and nobody is admitted past `capacity`. A peer alone may
//! use it all; as soon as another peer arrives, the greedy one is refused until it is back
//! under its share, which takes only as long as its running requests.
//!
//! Peers are keyed by the name in the certificate mutual TLS verified: an edge holding
//! several connections is still one peer, and unlike a node's self-reported name, an edge
//! cannot claim another's.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Why a peer's request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShareRejection {
    /// The peer already holds its share while others are waiting for theirs.
    #[error("this peer holds {in_flight} requests, its fair share is {share}")]
    OverShare {
        /// The peer's requests in flight.
        in_flight: u32,
        /// Its share at the moment.
        share: u32,
    },
    /// Everything is taken.
    #[error("all {capacity} places are taken")]
    Full {
        /// The shared capacity.
        capacity: u32,
    },
}

#[derive(Debug, Default)]
struct Counts {
    per_peer: HashMap<String, u32>,
    total: u32,
}

/// A capacity shared fairly among peers. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FairShare {
    capacity: u32,
    counts: Mutex<Counts>,
}

/// A peer's place; dropping it gives the place back.
#[derive(Debug)]
pub struct SharePermit {
    share: Arc<FairShare>,
    peer: String,
}

impl FairShare {
    /// `capacity` places (at least one) to share.
    pub fn new(capacity: u32) -> Arc<FairShare> {
        Arc::new(FairShare { capacity: capacity.max(1), counts: Mutex::new(Counts::default()) })
    }

    /// Takes a place for `peer`, or says why not.
    pub fn try_admit(self: &Arc<Self>, peer: &str) -> Result<SharePermit, ShareRejection> {
        let mut counts = self.counts.lock();
        let mine = counts.per_peer.get(peer).copied().unwrap_or(0);
        let active = counts.per_peer.len() as u32 + u32::from(mine == 0);
        let share = (self.capacity / active).max(1);
        if mine >= share {
            return Err(ShareRejection::OverShare { in_flight: mine, share });
        }
        if counts.total >= self.capacity {
            return Err(ShareRejection::Full { capacity: self.capacity });
        }
        counts.total += 1;
        *counts.per_peer.entry(peer.to_owned()).or_insert(0) += 1;
        Ok(SharePermit { share: self.clone(), peer: peer.to_owned() })
    }

    /// Requests in flight for `peer`.
    pub fn in_flight(&self, peer: &str) -> u32 {
        self.counts.lock().per_peer.get(peer).copied().unwrap_or(0)
    }
}

impl Drop for SharePermit {
    fn drop(&mut self) {
        let mut counts = self.share.counts.lock();
        counts.total -= 1;
        if let Some(n) = counts.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                counts.per_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_peer_may_use_everything() {
        let share = FairShare::new(4);
        let held: Vec<_> = (0..4).map(|_| share.try_admit("a").unwrap()).collect();
        assert_eq!(share.try_admit("a").unwrap_err(), ShareRejection::OverShare { in_flight: 4, share: 4 });
        drop(held);
        assert_eq!(share.in_flight("a"), 0);
        assert!(share.try_admit("a").is_ok());
    }

    #[test]
    fn a_greedy_peer_is_held_to_its_share_once_another_arrives() {
        let share = FairShare::new(4);
        let mut greedy: Vec<_> = (0..4).map(|_| share.try_admit("greedy").unwrap()).collect();
        // Full: the newcomer waits for a place to free up...
        assert_eq!(share.try_admit("polite").unwrap_err(), ShareRejection::Full { capacity: 4 });
        // ...and the freed place goes to it, not back to the greedy peer, which is over
        // its share of two as long as the polite peer is active.
        greedy.pop();
        let polite = share.try_admit("polite").unwrap();
        assert!(matches!(
            share.try_admit("greedy"),
            Err(ShareRejection::OverShare { in_flight: 3, share: 2 })
        ));
        greedy.truncate(1);
        let again = share.try_admit("greedy").unwrap();
        assert_eq!((share.in_flight("greedy"), share.in_flight("polite")), (2, 1));
        let polite2 = share.try_admit("polite").unwrap();
        assert_eq!(
            share.try_admit("polite").unwrap_err(),
            ShareRejection::OverShare { in_flight: 2, share: 2 }
        );
        drop((polite, polite2, again, greedy));
        assert_eq!(share.counts.lock().total, 0);
    }

    #[test]
    fn every_peer_gets_at_least_one_place() {
        let share = FairShare::new(2);
        let _a = share.try_admit("a").unwrap();
        let _b = share.try_admit("b").unwrap();
        // Three peers, two places: the share rounds up to one, the capacity still holds.
        assert_eq!(share.try_admit("c").unwrap_err(), ShareRejection::Full { capacity: 2 });
    }
}
