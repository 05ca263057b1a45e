use jid::{BareJid, Jid};
use uuid::Uuid;

use crate::Timestamp;

/// The life of a message kept for a user who was offline (XEP-0160; topic `offline`).
///
/// A message is stored once, then either delivered when the user comes online or expired;
/// the message is identified by the id of the event that carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfflineEvent {
    /// The message was stored.
    Stored(OfflineStored),
    /// The message was handed to a session of the recipient and leaves the queue.
    Delivered(OfflineDelivered),
    /// The message was dropped from the queue without being delivered (too old, or the
    /// account was deleted).
    Expired(OfflineExpired),
}

impl OfflineEvent {
    /// The id of the message this event is about.
    pub fn message_event_id(&self) -> Uuid {
        match self {
            OfflineEvent::Stored(e) => e.message_event_id,
            OfflineEvent::Delivered(e) => e.message_event_id,
            OfflineEvent::Expired(e) => e.message_event_id,
        }
    }

    /// The user whose queue this event changes.
    pub fn recipient(&self) -> &BareJid {
        match self {
            OfflineEvent::Stored(e) => &e.recipient,
            OfflineEvent::Delivered(e) => &e.recipient,
            OfflineEvent::Expired(e) => &e.recipient,
        }
    }
}

/// A message stored for an offline user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineStored {
    /// The `event_id` of the [`StanzaReceived`](crate::StanzaReceived) that carried the
    /// message.
    pub message_event_id: Uuid,
    /// The user the message is kept for.
    pub recipient: BareJid,
    /// Who sent it (normally a full JID).
    pub sender: Jid,
    /// When it was stored; delivered later with a XEP-0203 delay stamp of this time.
    pub stored_at: Timestamp,
    /// The message stanza as UTF-8 XML.
    pub xml: String,
}

/// A stored message was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineDelivered {
    /// The stored message.
    pub message_event_id: Uuid,
    /// The user it was kept for.
    pub recipient: BareJid,
    /// When it was delivered.
    pub at: Timestamp,
}

/// A stored message was dropped without being delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineExpired {
    /// The stored message.
    pub message_event_id: Uuid,
    /// The user it was kept for.
    pub recipient: BareJid,
    /// When it was dropped.
    pub at: Timestamp,
}
