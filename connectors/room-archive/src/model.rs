//! What the connector stores and asks its database: the rows of `TC_ROOMS`, `TC_USERS`
//! and `TC_MSGARCHIVE`, a batch of changes, and a transcript search with its page.

use time::OffsetDateTime;
use uuid::Uuid;

/// A persistent room: one `TC_ROOMS` row and its affiliations as `TC_USERS` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    /// The room's bare JID (`team@conference-1-imbus.example.com`).
    pub room_jid: String,
    /// The room's name (`muc#roomconfig_roomname`).
    pub name: Option<String>,
    /// The room's description (`muc#roomconfig_roomdesc`).
    pub description: Option<String>,
    /// The current subject.
    pub subject: Option<String>,
    /// Listed in the room directory.
    pub public: bool,
    /// Only members may enter.
    pub members_only: bool,
    /// Only occupants with voice may speak.
    pub moderated: bool,
    /// Entering needs a password (the password itself is never stored here).
    pub password_protected: bool,
    /// The most occupants at once; `None`: no limit.
    pub max_users: Option<i64>,
    /// Messages sent to new joiners; `None`: the service setting.
    pub history_length: Option<i64>,
    /// When the room was created.
    pub created_at: OffsetDateTime,
    /// When this state of the room was reached.
    pub updated_at: OffsetDateTime,
    /// `TC_USERS`: the room's affiliations other than `none`, as (real bare JID,
    /// `owner` | `admin` | `member` | `outcast`), sorted by JID.
    pub affiliations: Vec<(String, String)>,
}

/// One group chat message of an archived room: a `TC_MSGARCHIVE` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// The archive id (XEP-0313 result id, and the `<stanza-id/>` the room stamped on
    /// the message): the primary key, so storing a message again changes nothing.
    pub archive_id: Uuid,
    /// The room's bare JID.
    pub room_jid: String,
    /// The message's place in the room's transcript: the offset of its record on the
    /// room's `rooms.archive` partition. Results are ordered by it.
    pub seq: i64,
    /// The sender's real full JID.
    pub from_jid: String,
    /// The sender's nickname in the room.
    pub nickname: String,
    /// When the server received the message.
    pub sent_date: OffsetDateTime,
    /// The `<subject/>` the message carried, if any.
    pub subject: Option<String>,
    /// The `<body/>` (what full-text search looks in).
    pub body: Option<String>,
    /// The message as the room broadcast it (`from` = `room@service/nick`, no `to`).
    pub xml: String,
}

/// A change to the room tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomChange {
    /// A persistent room exists with this state: upsert `TC_ROOMS`, replace its
    /// `TC_USERS` rows.
    Stored(RoomRow),
    /// The room was destroyed (or is no longer persistent): its `TC_ROOMS` row gets
    /// `destroyed_at` (kept, with its transcript, for the record) and its `TC_USERS` rows
    /// go. Nothing happens for a room the tables never held.
    Gone {
        /// The room's bare JID.
        room_jid: String,
        /// When it ended.
        at: OffsetDateTime,
    },
}

/// Everything one database transaction writes, in log order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Room changes, oldest first (a later change of the same room wins).
    pub rooms: Vec<RoomChange>,
    /// Messages (already present ones are left as they are).
    pub messages: Vec<MessageRow>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.messages.is_empty()
    }

    /// How many changes the batch holds.
    pub fn len(&self) -> usize {
        self.rooms.len() + self.messages.len()
    }
}

/// Which page of the matching messages a search returns (XEP-0059), `max` messages at
/// most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageRequest {
    /// From the `n`th matching message (0-based, in transcript order).
    Index(usize),
    /// The messages right after this one.
    After(Uuid),
    /// The messages right before this one.
    Before(Uuid),
    /// The last page.
    Last,
}

/// A transcript search: the filters of a XEP-0313 query to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// The room whose transcript is searched.
    pub room_jid: String,
    /// Only messages from this nickname (`with` = `room@service/nick`).
    pub nickname: Option<String>,
    /// Only messages at or after this time.
    pub start: Option<OffsetDateTime>,
    /// Only messages at or before this time.
    pub end: Option<OffsetDateTime>,
    /// Only messages whose body contains every word of this text (XEP-0431
    /// `{urn:xmpp:fulltext:0}fulltext`; case-insensitive, whole words).
    pub fulltext: Option<String>,
    /// Only messages after this one (`urn:xmpp:mam:2#extended` `after-id`).
    pub after_id: Option<Uuid>,
    /// Only messages before this one (`before-id`).
    pub before_id: Option<Uuid>,
    /// Only these messages (`ids`).
    pub ids: Option<Vec<Uuid>>,
    /// The page.
    pub page: PageRequest,
    /// The most messages on the page.
    pub max: usize,
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The page's messages, in transcript order.
    pub messages: Vec<MessageRow>,
    /// Position of the page's first message among all matching messages.
    pub first_index: usize,
    /// How many messages match the filters (all pages).
    pub count: usize,
    /// The page reaches the end of the matches in its direction (the last page for
    /// `Index`/`After`, the first for `Before`/`Last`).
    pub complete: bool,
}
