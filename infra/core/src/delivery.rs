use jid::FullJid;
use uuid::Uuid;

use crate::{GatewayId, SessionId, Timestamp};

/// A stanza to write to one connected session, or to several sessions of one gateway
/// (topic `deliver.<gateway-id>`).
///
/// Processors decide where a stanza goes; the gateway holding the session only writes
/// `xml` to the socket of `session_id`. If that session is gone by then, the gateway
/// reports it instead of writing to a newer session of the same full JID.
///
/// A stanza that goes unchanged but for its `to` attribute to many sessions of one
/// gateway (a room's group chat message to its occupants) is one delivery: `to` and
/// `session_id` name the first session, [`copies`](Self::copies) the others, and the
/// gateway parses the stanza once and writes it to each copy's session with the copy's
/// full JID as `to`.
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
    /// Further sessions on the same gateway that get the same stanza, each addressed
    /// (`to`) to its own full JID and under its own delivery id. Empty for a delivery
    /// to one session.
    pub copies: Vec<DeliveryCopy>,
}

/// One further recipient session of a [`Delivery`] to several sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCopy {
    /// Unique id of this copy's delivery (a repeat of it is recognised by this id).
    pub event_id: Uuid,
    /// The session's full JID; the stanza is written with it as `to`.
    pub to: FullJid,
    /// The session to write to.
    pub session_id: SessionId,
}

impl Delivery {
    /// How many sessions this delivery is for (1 + its copies).
    pub fn recipients(&self) -> usize {
        1 + self.copies.len()
    }

    /// The delivery to the session of `copy`, alone: `to`, `session_id` and `event_id`
    /// from the copy, `xml` as given (the caller's stanza addressed to the copy).
    pub fn for_copy(&self, copy: &DeliveryCopy, xml: String) -> Delivery {
        Delivery {
            event_id: copy.event_id,
            source_event_id: self.source_event_id,
            to: copy.to.clone(),
            gateway_id: self.gateway_id.clone(),
            session_id: copy.session_id.clone(),
            xml,
            delayed_from: self.delayed_from,
            copies: Vec::new(),
        }
    }
}
