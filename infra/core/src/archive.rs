use jid::{BareJid, Jid};
use uuid::Uuid;

use crate::{Direction, Timestamp};

/// One message in a user's message archive (XEP-0313), topic `archive`: a one-to-one
/// message the user sent (outbound) or that was delivered to or stored for the user
/// (inbound). The archive processor indexes these records and reads the message back
/// from the log when a client queries its archive; the body is never kept in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// The archive's id of the message (the XEP-0313 result id): derived from the
    /// message's event id, the owner and the other party, so processing the message again
    /// after a restart gives the same id and the archive keeps it once.
    pub archive_id: Uuid,
    /// The id of the event that carried the message.
    pub event_id: Uuid,
    /// The user whose archive this is.
    pub owner: BareJid,
    /// The other party: the sender of an inbound message (a full JID), the recipient of
    /// an outbound one (as the user addressed it).
    pub with: Jid,
    /// Seen from the owner: [`Direction::Inbound`] received, [`Direction::Outbound`] sent.
    pub direction: Direction,
    /// When the server accepted the message.
    pub timestamp: Timestamp,
    /// The message stanza as UTF-8 XML.
    pub xml: String,
}

impl ArchivedMessage {
    /// The archive id of a message in `owner`'s archive, exchanged with `with`.
    pub fn derive_id(event_id: &Uuid, owner: &BareJid, with: &BareJid) -> Uuid {
        let mut name = Vec::with_capacity(64);
        name.extend_from_slice(b"mam\0");
        name.extend_from_slice(owner.as_str().as_bytes());
        name.push(0);
        name.extend_from_slice(with.as_str().as_bytes());
        Uuid::new_v5(event_id, &name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_ids_are_stable_and_differ_per_owner_and_party() {
        let event = Uuid::from_u128(42);
        let alice = BareJid::new("alice@example.com").unwrap();
        let bob = BareJid::new("bob@example.com").unwrap();
        let carol = BareJid::new("carol@example.com").unwrap();
        let a = ArchivedMessage::derive_id(&event, &alice, &bob);
        assert_eq!(a, ArchivedMessage::derive_id(&event, &alice, &bob));
        assert_ne!(a, ArchivedMessage::derive_id(&event, &bob, &alice));
        assert_ne!(a, ArchivedMessage::derive_id(&event, &alice, &carol));
        assert_ne!(
            a,
            ArchivedMessage::derive_id(&Uuid::from_u128(43), &alice, &bob)
        );
    }
}
