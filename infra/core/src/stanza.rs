use jid::{BareJid, FullJid, Jid};
use uuid::Uuid;

use crate::{GatewayId, SessionId, Timestamp};

/// The three kinds of XMPP stanza (RFC 6120 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    /// `<message/>`: push of content (chat, group chat, headlines).
    Message,
    /// `<presence/>`: availability broadcast, directed presence, subscriptions.
    Presence,
    /// `<iq/>`: request/response (roster, disco, vCard, …).
    Iq,
}

impl StanzaKind {
    /// The element name (`message`, `presence`, `iq`).
    pub const fn element_name(self) -> &'static str {
        match self {
            StanzaKind::Message => "message",
            StanzaKind::Presence => "presence",
            StanzaKind::Iq => "iq",
        }
    }
}

/// A stanza a client sent, as its gateway accepted it (topic `stanzas`).
///
/// The gateway has parsed and validated the stanza and overwritten its `from` with the
/// session's true full JID, so `sender` and the `from` in `xml` can be trusted. Processors
/// decide what happens to the stanza; the gateway holds no routing knowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaReceived {
    /// Unique id of this event; deliveries, offline records and compliance records refer
    /// back to it, and it makes processing idempotent.
    pub event_id: Uuid,
    /// The gateway that received the stanza.
    pub gateway_id: GatewayId,
    /// The session (stream) that sent it.
    pub session_id: SessionId,
    /// When the gateway received it.
    pub received_at: Timestamp,
    /// The sender's full JID, stamped by the gateway from the authenticated session.
    pub sender: FullJid,
    /// The `to` address as the client wrote it: a full JID, a bare JID or a domain. `None`
    /// when the stanza has no `to`, which RFC 6120 §8.1.1.1 defines as "handled by the
    /// server on behalf of the sender" (presence broadcast, roster requests, …).
    pub recipient: Option<Jid>,
    /// Which kind of stanza it is.
    pub kind: StanzaKind,
    /// The `type` attribute, if any (`chat`, `groupchat`, `unavailable`, `get`, …), as
    /// written by the client.
    pub stanza_type: Option<String>,
    /// The `id` attribute, if any.
    pub stanza_id: Option<String>,
    /// The whole stanza as UTF-8 XML, with the true `from`.
    pub xml: String,
}

impl StanzaReceived {
    /// The account that receives this stanza: the bare JID of the recipient, or the
    /// sender's bare JID when the stanza has no `to` (the server handles it on the
    /// sender's behalf). Gateways key `stanzas` by the sender's bare JID (outbound
    /// processing); the router keys the copies it forwards on `routed` by this owner
    /// (inbound processing).
    pub fn owner(&self) -> BareJid {
        match &self.recipient {
            Some(recipient) => recipient.to_bare(),
            None => self.sender.to_bare(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(recipient: Option<&str>) -> StanzaReceived {
        StanzaReceived {
            event_id: Uuid::nil(),
            gateway_id: GatewayId::new("gw1").unwrap(),
            session_id: SessionId::new("s1").unwrap(),
            received_at: Timestamp::from_micros(1),
            sender: FullJid::new("alice@example.com/phone").unwrap(),
            recipient: recipient.map(|r| Jid::new(r).unwrap()),
            kind: StanzaKind::Message,
            stanza_type: Some("chat".to_owned()),
            stanza_id: None,
            xml: "<message/>".to_owned(),
        }
    }

    #[test]
    fn owner_is_the_recipient_account_or_the_sender_when_unaddressed() {
        assert_eq!(
            stanza(Some("Bob@Example.com/desk")).owner(),
            BareJid::new("bob@example.com").unwrap()
        );
        assert_eq!(
            stanza(Some("room@conference.example.com/nick")).owner(),
            BareJid::new("room@conference.example.com").unwrap()
        );
        assert_eq!(
            stanza(None).owner(),
            BareJid::new("alice@example.com").unwrap()
        );
        assert_eq!(StanzaKind::Iq.element_name(), "iq");
    }
}
