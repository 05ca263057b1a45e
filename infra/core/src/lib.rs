//! The domain events of imbus.
//!
//! imbus is event-sourced: every fact the server learns or decides is an event appended to
//! the log, and every piece of state (who is online where, offline queues, rosters,
//! accounts, settings) is a fold over those events. This crate defines the events as plain
//! Rust types. It has no serialization and performs no I/O: the Avro wire format lives in
//! the `imbus-schemas` crate, which converts between these types and the bytes on the log.
//!
//! | event | topic | written by |
//! |---|---|---|
//! | [`StanzaReceived`] | `stanzas` | gateways, for every stanza a client sends |
//! | [`SessionEvent`] | `sessions` | gateways, when a session is bound, changes or ends |
//! | [`Delivery`] | `deliver.<gateway-id>` | processors, for every stanza to write to a socket |
//! | [`OfflineEvent`] | `offline` | the router, for messages kept for offline users |
//! | [`AccountEvent`] | `accounts` | administration, registration, password changes |
//! | [`RosterChanged`] | `rosters` | the router, for every roster item change |
//! | [`ComplianceRecord`] | `compliance` | the router and rooms, one per recipient per IM |
//! | [`ConfigChanged`] | `config` | administration, for live setting changes |
//! | [`UserDataChanged`] | `userdata` | the router, for XML stored on an account's behalf (vCard, private storage, block list) |
//! | [`ArchivedMessage`] | `archive` | the router, one per message and archive owner (XEP-0313 message archive) |
//! | [`Room`] | `rooms` | the rooms processor: the complete state of a chat room after every change (a tombstone when it ends) |
//!
//! Values are validated when they are built: a [`GatewayId`], [`SessionId`], [`ConfigKey`]
//! or [`ScramCredentials`] cannot hold an invalid value, and JIDs are the RFC 7622 types of
//! the [`jid`] crate ([`Jid`], [`BareJid`], [`FullJid`]), so an event that exists is
//! well-formed.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod account;
mod archive;
mod compliance;
mod config;
mod delivery;
mod error;
mod ids;
mod offline;
mod room;
mod roster;
mod session;
mod stanza;
mod time;
mod userdata;

pub use account::{
    AccountDeleted, AccountEvent, AccountState, Credentials, ScramCredentials, ScramHash,
};
pub use archive::ArchivedMessage;
pub use compliance::{ComplianceRecord, Direction, MessageType, Origin};
pub use config::{ConfigChanged, ConfigKey};
pub use delivery::{Delivery, DeliveryCopy};
pub use error::ValidationError;
pub use ids::{GatewayId, SessionId};
pub use offline::{OfflineDelivered, OfflineEvent, OfflineExpired, OfflineStored};
pub use room::{Affiliation, HistoryMessage, Occupant, Role, Room, RoomConfig, Subject, Whois};
pub use roster::{RosterChanged, Subscription};
pub use session::{
    Availability, ClientFeatures, CloseReason, SessionClosed, SessionEvent, SessionPresence,
    SessionState,
};
pub use stanza::{StanzaKind, StanzaReceived};
pub use time::Timestamp;
pub use userdata::UserDataChanged;

pub use jid::{self, BareJid, FullJid, Jid};
pub use uuid::{self, Uuid};

/// The bare JID of a JID: a copy of it without the resource. `jid`'s own `to_bare`
/// formats the parts into a new string, several times the cost of the copy, which
/// counts on the paths every message takes.
pub trait ToBare {
    /// This JID without its resource.
    fn bare(&self) -> BareJid;
}

impl ToBare for Jid {
    fn bare(&self) -> BareJid {
        self.clone().into_bare()
    }
}

impl ToBare for FullJid {
    fn bare(&self) -> BareJid {
        self.clone().into_bare()
    }
}

impl ToBare for BareJid {
    fn bare(&self) -> BareJid {
        self.clone()
    }
}

/// Any event that imbus writes to its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A stanza a client sent, as its gateway received it.
    StanzaReceived(StanzaReceived),
    /// A client session was bound, changed or ended.
    Session(SessionEvent),
    /// A stanza to write to one connected session.
    Delivery(Delivery),
    /// A message kept for, handed to, or expired for an offline user.
    Offline(OfflineEvent),
    /// An account was created, changed or deleted.
    Account(AccountEvent),
    /// A roster item changed.
    RosterChanged(RosterChanged),
    /// An IM archived for one recipient, for regulatory compliance.
    Compliance(ComplianceRecord),
    /// A setting was changed while the server runs.
    ConfigChanged(ConfigChanged),
    /// XML the server stores on an account's behalf (vCard, private storage, block list)
    /// was set or removed.
    UserData(UserDataChanged),
    /// A message in one user's message archive (XEP-0313).
    Archived(ArchivedMessage),
    /// The complete state of a chat room after a change (XEP-0045 multi-user chat).
    RoomState(Box<Room>),
}

macro_rules! event_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for Event {
            fn from(event: $ty) -> Self {
                Event::$variant(event)
            }
        })*
    };
}

event_from!(
    StanzaReceived(StanzaReceived),
    Session(SessionEvent),
    Delivery(Delivery),
    Offline(OfflineEvent),
    Account(AccountEvent),
    RosterChanged(RosterChanged),
    Compliance(ComplianceRecord),
    ConfigChanged(ConfigChanged),
    UserData(UserDataChanged),
    Archived(ArchivedMessage),
    RoomState(Box<Room>),
);

impl From<Room> for Event {
    fn from(room: Room) -> Self {
        Event::RoomState(Box::new(room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_convert_into_the_event_enum() {
        let change = ConfigChanged {
            key: ConfigKey::new("offline.enabled").unwrap(),
            value: Some("false".to_owned()),
            at: Timestamp::from_micros(1),
            by: "admin@example.com".to_owned(),
        };
        let event: Event = change.clone().into();
        assert_eq!(event, Event::ConfigChanged(change));

        let vcard = UserDataChanged {
            user: BareJid::new("alice@example.com").unwrap(),
            namespace: "vcard-temp".to_owned(),
            xml: Some("<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>".to_owned()),
            at: Timestamp::from_micros(2),
        };
        let event: Event = vcard.clone().into();
        assert_eq!(event, Event::UserData(vcard));
    }
}

#[cfg(test)]
mod to_bare_tests {
    use super::*;

    #[test]
    fn bare_equals_the_jid_crates_to_bare() {
        for jid in [
            "juliet@example.com/balcony",
            "juliet@example.com",
            "example.com/resource/with/slashes",
            "example.com",
            "Über@Example.COM/Ü",
        ] {
            let j = Jid::new(jid).unwrap();
            assert_eq!(j.bare(), j.to_bare(), "{jid}");
            assert_eq!(j.bare().as_str(), j.to_bare().as_str(), "{jid}");
            if let Ok(full) = FullJid::new(jid) {
                assert_eq!(full.bare(), full.to_bare(), "{jid}");
            }
            let bare = j.to_bare();
            assert_eq!(bare.bare(), bare);
        }
    }
}
