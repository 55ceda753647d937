//! The node requests go to, swapped whole on a reload, and the QUIC listener that hands
//! downstream nodes' escalations to it.

use std::sync::Arc;

use parking_lot::RwLock;

use super::Node;
use super::error::NodeError;
use crate::protocol::EscalationRequest;
use crate::transport::{RequestContext, TierServer, TlsIdentity};

/// The node requests go to. A reload swaps in a whole new node; requests already running
/// finish on the node they started on, which is dropped after the last of them.
#[derive(Debug, Clone)]
pub struct CurrentNode(Arc<RwLock<Arc<Node>>>);

impl CurrentNode {
    /// Starts with `node`.
    pub fn new(node: Arc<Node>) -> CurrentNode {
        CurrentNode(Arc::new(RwLock::new(node)))
    }

    /// The node new requests go to.
    pub fn get(&self) -> Arc<Node> {
        self.0.read().clone()
    }

    /// Sends new requests to `node`; returns the previous one.
    pub fn replace(&self, node: Arc<Node>) -> Arc<Node> {
        std::mem::replace(&mut *self.0.write(), node)
    }

    /// Starts accepting escalations on the current config's QUIC listener, if it has one.
    /// Each escalation goes to the node current when it arrives.
    pub fn listen_quic(&self) -> Result<Option<TierServer>, NodeError> {
        let node = self.get();
        let settings = &node.config().settings;
        let (Some(config), Some(tls)) = (crate::convert::quic_server(settings), &settings.quic_tls) else {
            return Ok(None);
        };
        let identity = TlsIdentity::from_files(&tls.cert, &tls.key, &tls.ca)?;
        let current = self.clone();
        let handler = move |request: EscalationRequest, context: RequestContext| {
            current.get().answer_escalation(request, context)
        };
        Ok(Some(TierServer::bind(&identity, config, handler)?))
    }
}
