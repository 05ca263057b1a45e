use jid::{BareJid, Jid};
use uuid::Uuid;

use crate::Timestamp;

/// One IM as archived for one recipient, for regulatory compliance (topic `compliance`).
///
/// A message to several recipients (a group chat message, a broadcast) gives one record
/// per recipient, so the archive shows who received what. Sinks write records
/// idempotently on [`ComplianceRecord::idempotency_key`], so a record replayed after a
/// crash is stored once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceRecord {
    /// The id of the event that carried the message (shared by all its recipients).
    pub event_id: Uuid,
    /// The user this record is for.
    pub recipient: BareJid,
    /// Who sent the message: normally a full JID (in a room, the occupant's real JID);
    /// a domain for server announcements.
    pub sender: Jid,
    /// Whether the message entered or left this deployment's users.
    pub direction: Direction,
    /// When the server accepted the message.
    pub timestamp: Timestamp,
    /// The message `type`.
    pub message_type: MessageType,
    /// The `<thread/>`, if any.
    pub thread: Option<String>,
    /// The `<subject/>`, if any.
    pub subject: Option<String>,
    /// The `<body/>`, if any (a subject change has none).
    pub body: Option<String>,
    /// For a group chat message: the room's bare JID.
    pub room: Option<BareJid>,
    /// For a group chat message: the sender's nickname in the room.
    pub nickname: Option<String>,
    /// The whole message stanza as UTF-8 XML.
    pub xml: String,
    /// Where the message came from.
    pub origin: Origin,
}

impl ComplianceRecord {
    /// The unique key of this record in an archive: the message's event id and the
    /// recipient.
    pub fn idempotency_key(&self) -> (Uuid, &BareJid) {
        (self.event_id, &self.recipient)
    }
}

/// The direction of an archived message, seen from the archiving deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received by a local user (archived by default).
    Inbound,
    /// Sent by a local user to another cluster or domain (archived when outbound logging
    /// is switched on, recommended for intercluster and federated deployments).
    Outbound,
}

/// The `type` of a message (RFC 6121 §5.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// One-to-one chat.
    Chat,
    /// A standalone message (also what a missing or unknown `type` means).
    Normal,
    /// A group chat (room) message.
    Groupchat,
    /// An alert or announcement that expects no reply.
    Headline,
}

/// Where an archived message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A user of this cluster.
    Local,
    /// Another cluster of the same deployment.
    Intercluster,
    /// A federated XMPP domain (server-to-server).
    Federated,
    /// A SIP client through the SIP gateway.
    Sip,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_is_event_and_recipient() {
        let id = Uuid::from_u128(7);
        let record = ComplianceRecord {
            event_id: id,
            recipient: BareJid::new("bob@example.com").unwrap(),
            sender: Jid::new("alice@example.com/phone").unwrap(),
            direction: Direction::Inbound,
            timestamp: Timestamp::from_micros(1),
            message_type: MessageType::Chat,
            thread: None,
            subject: None,
            body: Some("hi".to_owned()),
            room: None,
            nickname: None,
            xml: "<message/>".to_owned(),
            origin: Origin::Local,
        };
        let bob = BareJid::new("bob@example.com").unwrap();
        assert_eq!(record.idempotency_key(), (id, &bob));
    }
}
