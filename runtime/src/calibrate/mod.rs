//! Escalation thresholds from evidence.
//!
//! A route's threshold decides which answers stay at the edge. This module measures what a
//! threshold does on examples where both tiers' answers are known, and recommends one for a
//! goal, with the uncertainty that comes from having only so many examples:
//!
//! - [`Tier`] runs a route's real plugin in a sandbox over an example (the edge, or the
//!   central tier's model run locally through the same plugin); a live upstream answers
//!   through [`crate::upstream::UpstreamClient`].
//! - [`Example`] is one request's outcome at both tiers (right or wrong against a label, or
//!   against the upstream when there is none); [`Curve`] gives a threshold's edge share,
//!   accuracy, agreement and upstream load.
//! - [`Bootstrap`] puts a 90% interval on every figure and [`Bootstrap::recommend`] picks,
//!   for a [`Goal`], the threshold at which the goal holds in at least 90% of resamples.
//! - [`coverage`] checks that the intervals mean what they say: over many random re-splits
//!   of the examples, how often a held-out figure falls inside its predicted interval.
//! - [`auroc`] compares confidence measures (max-probability, margin, entropy) by how well
//!   they separate right answers from wrong ones.
//!
//! `edge-node calibrate` drives it; the node's auto-threshold estimates agreement with the
//! same [`Curve`] from its shadow records.

mod auroc;
mod coverage;
mod curve;
mod recommend;
mod tier;

pub use auroc::auroc;
pub use coverage::{Coverage, coverage};
pub use curve::{Curve, Example, Point, grid};
pub use recommend::{Bootstrap, CONFIDENCE, Estimate, Goal, Interval, Recommendation};
pub use tier::{Observed, Tier, TierError};
