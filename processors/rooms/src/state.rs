//! The changelog records of the rooms: what the `rooms` topic carries and what a
//! restarted processor rebuilds by folding it. The room types themselves are domain
//! types of `imbus-core` (schema `RoomState`).

use imbus_core::{BareJid, Timestamp};

pub use imbus_core::{
    Affiliation, HistoryMessage, Occupant, Role, Room, RoomConfig, Subject, Whois,
};

/// A record of the compacted `rooms` changelog, keyed by the room's bare JID
/// ([`RoomEvent::room`]).
///
/// A compacted topic keeps only the last record of each key, so each record carries the
/// room's complete state (configuration, affiliations, occupants, subject and history):
/// the last record of a room is enough to rebuild it, whatever compaction removed.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    /// The room exists and this is its complete state (created or changed).
    Updated(Box<Room>),
    /// The room no longer exists: destroyed by an owner, or a temporary room whose last
    /// occupant left. Written as a tombstone (a record with no value) under the key.
    Destroyed {
        /// The room's bare JID.
        room: BareJid,
        /// When it ended.
        at: Timestamp,
    },
}

impl RoomEvent {
    /// The key of the record: the room's bare JID.
    pub fn room(&self) -> &BareJid {
        match self {
            RoomEvent::Updated(room) => &room.jid,
            RoomEvent::Destroyed { room, .. } => room,
        }
    }
}
