//! Stage 2, admit: whether the request may start. A downstream node's escalation first
//! takes its fair share of the route; then the route's bulkhead, rate limit and the
//! node-wide limit decide. What is held here is held until the request ends.

use super::Node;
use super::context::{Ctx, Origin};
use super::error::ServeError;
use crate::admission::{Permit, Rejection};
use crate::fair_share::{SharePermit, ShareRejection};
use crate::telemetry::{AnswerTier, RequestOutcome};

/// The places a running request holds; dropping them frees them.
#[derive(Debug)]
pub(super) struct Admitted {
    _share: Option<SharePermit>,
    _permit: Permit,
}

impl Node {
    /// Refuses a request to `route` before its body is read when admission would refuse it
    /// now ([`crate::admission::Admission::refuses_now`]) or the thread taking it in has
    /// fallen behind ([`crate::admission::Admission::sheds_now`]), counted like any refusal:
    /// under overload, the requests the node turns away cost it no parsing. `Ok` does not
    /// admit; the request still meets this stage.
    pub async fn refuse_early(&self, route: &str) -> Result<(), ServeError> {
        let rejection = match self.admission.refuses_now(route) {
            Some(rejection) => rejection,
            None if !self.admission.sheds_now().await => return Ok(()),
            None => Rejection::Behind,
        };
        self.telemetry.rejection(route, &rejection);
        self.telemetry.request(route, RequestOutcome::Rejected, AnswerTier::None);
        Err(ServeError::Rejected { route: route.to_owned(), rejection })
    }
}

pub(super) async fn admit(node: &Node, ctx: &Ctx<'_>) -> Result<Admitted, ServeError> {
    let route = &ctx.route.name;
    let rejected = |rejection| ServeError::Rejected { route: route.clone(), rejection };
    let share = match &ctx.origin {
        Origin::Client => None,
        // One edge may not take every place while others wait.
        Origin::Downstream { peer, .. } => match ctx.route.share.try_admit(peer.as_str()) {
            Ok(permit) => Some(permit),
            Err(why) => {
                tracing::debug!(%peer, %route, %why, "escalation refused");
                return Err(rejected(match why {
                    ShareRejection::OverShare { .. } => Rejection::OverShare,
                    // Every place taken: the node is busy, not this edge greedy.
                    ShareRejection::Full { .. } => Rejection::QueueFull,
                }));
            }
        },
    };
    let permit = node.admission.admit(route, ctx.started).await.map_err(rejected)?;
    Ok(Admitted { _share: share, _permit: permit })
}
