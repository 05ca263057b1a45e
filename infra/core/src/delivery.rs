use jid::FullJid;
use uuid::Uuid;

use crate::{GatewayId, SessionId, Timestamp};

/// A stanza to write to one connected session (topic `deliver.<gateway-id>`).
///
/// Processors decide where a stanza goes; the gateway holding the session only writes
/// `xml` to the socket of `session_id`. If that session is gone by then, the gateway
/// reports it instead of writing to a newer session of the same full JID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Unique id of this delivery.
    pub event_id: Uuid,
    /// The event that caused it (normally a [`StanzaReceived`](crate::StanzaReceived)'s
    /// `event_id`), for tracing and idempotency.
    pub source_event_id: Uuid,
    /// The session's full JID.
    pub to: FullJid,
    /// The gateway holding the session.
    pub gateway_id: GatewayId,
    /// The session to write to.
    pub session_id: SessionId,
    /// The stanza to write, as UTF-8 XML.
    pub xml: String,
    /// For a message that was stored offline: when it was first received, so the stanza
    /// carries a Delayed Delivery stamp (XEP-0203).
    pub delayed_from: Option<Timestamp>,
}
