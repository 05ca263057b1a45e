use jid::BareJid;

use crate::Timestamp;

/// The new state of one roster item (RFC 6121 §2; topic `rosters`).
///
/// The event carries the whole item, so the latest event per (user, contact) is the
/// item; [`Subscription::Remove`] means the item no longer exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterChanged {
    /// The user whose roster changed.
    pub user: BareJid,
    /// The contact the item is about.
    pub contact: BareJid,
    /// The name the user gave the contact, if any.
    pub name: Option<String>,
    /// The roster groups the item is in (possibly none).
    pub groups: Vec<String>,
    /// The subscription state.
    pub subscription: Subscription,
    /// The user asked to see the contact's presence and the contact has not answered
    /// (`ask='subscribe'`).
    pub ask_out: bool,
    /// The contact asked to see the user's presence and the user has not answered: the
    /// subscription request stanza as UTF-8 XML, kept to present it again at the user's
    /// next login (RFC 6121 §3.1.3).
    pub pending_in: Option<String>,
    /// The user pre-approved a subscription request from the contact (RFC 6121 §3.4).
    pub approved: bool,
    /// When the item changed.
    pub at: Timestamp,
}

/// The subscription state of a roster item (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subscription {
    /// Neither side sees the other's presence.
    None,
    /// The user sees the contact's presence.
    To,
    /// The contact sees the user's presence.
    From,
    /// Both see each other's presence.
    Both,
    /// The item was removed from the roster.
    Remove,
}

impl Subscription {
    /// Whether the user receives the contact's presence.
    pub fn user_sees_contact(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// Whether the contact receives the user's presence.
    pub fn contact_sees_user(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_directions() {
        assert!(Subscription::Both.user_sees_contact() && Subscription::Both.contact_sees_user());
        assert!(Subscription::To.user_sees_contact() && !Subscription::To.contact_sees_user());
        assert!(!Subscription::From.user_sees_contact() && Subscription::From.contact_sees_user());
        for s in [Subscription::None, Subscription::Remove] {
            assert!(!s.user_sees_contact() && !s.contact_sees_user());
        }
    }
}
