//! From a [`ComplianceRecord`] to the row it is archived as (pure).
//!
//! One-to-one messages (`chat`, `normal`, `headline`) go to the table `JM`, group chat
//! messages to `TC_MSGARCHIVE`. Each row carries a `record_id` made from the record's event
//! id and recipient: the unique key that makes a redelivered record a no-op (see
//! [`RecordIds`] for its two forms).

use imbus_core::{ComplianceRecord, Direction, MessageType, Origin};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::settings::SinkSettings;

/// The namespace of [`record_id`]'s UUID v5.
const RECORD_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a2f_51c4_0e1b_4f7e_9c3d_2b8a_7e15_c0de);

/// The legacy form of a record's unique key: a UUID v5 of the event id and the recipient's
/// bare JID. Fixed length, so every database can index it.
pub fn record_id(record: &ComplianceRecord) -> Uuid {
    let mut name = Vec::with_capacity(16 + 1 + record.recipient.as_str().len());
    name.extend_from_slice(record.event_id.as_bytes());
    name.push(0);
    name.extend_from_slice(record.recipient.as_str().as_bytes());
    Uuid::new_v5(&RECORD_ID_NAMESPACE, &name)
}

/// The time-ordered form of a record's unique key, for a record whose event id is a UUID
/// v7 (the id a gateway gives every stanza it receives, which starts with the time it was
/// received in milliseconds): a UUID v8 with those same first 48 bits, and the other bits
/// of [`record_id`]'s hash. Rows written in time order then go to the end of the key's
/// index instead of to random places in it, so a transaction changes a few index pages
/// instead of one per row (a clustered primary key, as in MySQL, gains most). Like
/// [`record_id`] it depends on the event id and the recipient only, so a record made again
/// (a redelivery, a message re-routed under its original id) gets the same id. `None` for
/// another kind of event id.
pub fn ordered_record_id(record: &ComplianceRecord) -> Option<Uuid> {
    if record.event_id.get_version_num() != 7 {
        return None;
    }
    let mut bytes = *record_id(record).as_bytes();
    bytes[..6].copy_from_slice(&record.event_id.as_bytes()[..6]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Some(Uuid::from_bytes(bytes))
}

/// The time in a UUID v7 (ms since the epoch), as µs.
fn v7_micros(id: &Uuid) -> i64 {
    let b = id.as_bytes();
    let ms = u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
    i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1000)
}

/// Which form of record id an archive uses for a record: the time-ordered one
/// ([`ordered_record_id`]) for records whose event id is later than a cut-over time the
/// archive keeps (the database's `imbus_compliance_meta`), the legacy one ([`record_id`])
/// for earlier ones, which an older sink may have written already, and for event ids
/// that are not UUID v7. A record written again thus always gets the id it was first
/// written with. A new archive's cut-over is before every record; an archive that already
/// held rows when it was upgraded gets a cut-over an hour after the upgrade (a margin for
/// gateway clocks that run ahead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordIds {
    /// Records whose event id is later than this (µs since the epoch) get ordered ids.
    pub ordered_after_micros: i64,
}

impl RecordIds {
    /// Every record with a UUID v7 event id gets an ordered id (a new archive).
    pub const ORDERED: Self = Self {
        ordered_after_micros: i64::MIN,
    };

    /// The id of `record` in this archive.
    pub fn of(self, record: &ComplianceRecord) -> Uuid {
        match ordered_record_id(record) {
            Some(id) if v7_micros(&record.event_id) > self.ordered_after_micros => id,
            _ => record_id(record),
        }
    }
}

/// Which table a row goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One-to-one messages.
    Jm,
    /// Group chat messages.
    TcMsgArchive,
}

impl Table {
    /// The table's name as created by the migrations (PostgreSQL folds it to lower case).
    pub const fn name(self) -> &'static str {
        match self {
            Table::Jm => "JM",
            Table::TcMsgArchive => "TC_MSGARCHIVE",
        }
    }
}

/// One archive row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub table: Table,
    /// [`RecordIds::of`]: unique per (event id, recipient).
    pub record_id: Uuid,
    /// The message's event id (`msg_id` in `TC_MSGARCHIVE`), shared by its recipients.
    pub event_id: Uuid,
    /// The recipient's bare JID.
    pub to_jid: String,
    /// The sender (a full JID; in a room, the occupant's real JID; a domain for
    /// announcements).
    pub from_jid: String,
    /// `TC_MSGARCHIVE` only: the room's bare JID.
    pub room_jid: Option<String>,
    /// `TC_MSGARCHIVE` only: the sender's nickname in the room.
    pub nickname: Option<String>,
    /// When the server accepted the message, UTC, microsecond precision.
    pub sent_date: OffsetDateTime,
    pub subject: Option<String>,
    /// `JM` only: the message `<thread/>`.
    pub thread_id: Option<String>,
    /// `chat`, `normal`, `groupchat` or `headline`.
    pub msg_type: &'static str,
    /// `I` (inbound) or `O` (outbound).
    pub direction: &'static str,
    /// `local`, `intercluster`, `federated` or `sip`.
    pub origin: &'static str,
    /// The body's length in bytes of UTF-8 (0 without a body).
    pub body_len: i64,
    /// The whole stanza's length in bytes of UTF-8.
    pub message_len: i64,
    pub body_text: Option<String>,
    /// The whole message stanza as XML.
    pub message_text: String,
}

impl Row {
    /// Bytes of text this row carries, to bound the size of one insert statement.
    pub fn weight(&self) -> usize {
        self.message_text.len()
            + self.body_text.as_ref().map_or(0, String::len)
            + self.subject.as_ref().map_or(0, String::len)
            + self.thread_id.as_ref().map_or(0, String::len)
            + 256
    }
}

/// What the sink does with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write this row.
    Archive(Box<Row>),
    /// Not archived under the current settings (the reason names the setting).
    Skip(&'static str),
    /// The record cannot be archived at all; it goes to the dead-letter topic.
    Reject(String),
}

/// The `msg_type` text of a message type.
pub const fn type_name(kind: MessageType) -> &'static str {
    match kind {
        MessageType::Chat => "chat",
        MessageType::Normal => "normal",
        MessageType::Groupchat => "groupchat",
        MessageType::Headline => "headline",
    }
}

const fn direction_code(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "I",
        Direction::Outbound => "O",
    }
}

const fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Local => "local",
        Origin::Intercluster => "intercluster",
        Origin::Federated => "federated",
        Origin::Sip => "sip",
    }
}

/// Decides what to do with a record under `settings`: the direction and the message type
/// must be archived, and the time must be representable (years 1 to 9999).
pub fn decide(record: &ComplianceRecord, settings: &SinkSettings, ids: RecordIds) -> Decision {
    match record.direction {
        Direction::Inbound if !settings.archive_inbound => {
            return Decision::Skip("compliance.archive_inbound is false");
        }
        Direction::Outbound if !settings.archive_outbound => {
            return Decision::Skip("compliance.archive_outbound is false");
        }
        _ => {}
    }
    if !settings.kinds.contains(record.message_type) {
        return Decision::Skip("the message type is not in compliance.kinds");
    }
    let micros = record.timestamp.as_micros();
    let sent_date = match OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000) {
        Ok(t) if (1..=9999).contains(&t.year()) => t,
        _ => {
            return Decision::Reject(format!(
                "timestamp {micros} µs since the epoch is outside the years 1 to 9999"
            ));
        }
    };
    let groupchat = record.message_type == MessageType::Groupchat;
    let body_len = record.body.as_ref().map_or(0, String::len);
    Decision::Archive(Box::new(Row {
        table: if groupchat {
            Table::TcMsgArchive
        } else {
            Table::Jm
        },
        record_id: ids.of(record),
        event_id: record.event_id,
        to_jid: record.recipient.as_str().to_owned(),
        from_jid: record.sender.to_string(),
        room_jid: if groupchat {
            record.room.as_ref().map(|r| r.as_str().to_owned())
        } else {
            None
        },
        nickname: if groupchat {
            record.nickname.clone()
        } else {
            None
        },
        sent_date,
        subject: record.subject.clone(),
        thread_id: record.thread.clone(),
        msg_type: type_name(record.message_type),
        direction: direction_code(record.direction),
        origin: origin_name(record.origin),
        body_len: i64::try_from(body_len).unwrap_or(i64::MAX),
        message_len: i64::try_from(record.xml.len()).unwrap_or(i64::MAX),
        body_text: record.body.clone(),
        message_text: record.xml.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::KindSet;
    use imbus_core::{BareJid, Jid, Timestamp};

    fn record(kind: MessageType, direction: Direction) -> ComplianceRecord {
        ComplianceRecord {
            event_id: Uuid::from_u128(42),
            recipient: BareJid::new("bob@example.com").unwrap(),
            sender: Jid::new("alice@example.com/phone").unwrap(),
            direction,
            timestamp: Timestamp::from_micros(1_764_000_000_123_456),
            message_type: kind,
            thread: Some("t1".into()),
            subject: None,
            body: Some("héllo 𝄞".into()),
            room: (kind == MessageType::Groupchat)
                .then(|| BareJid::new("room@conference.example.com").unwrap()),
            nickname: (kind == MessageType::Groupchat).then(|| "al".to_owned()),
            xml: "<message><body>héllo 𝄞</body></message>".into(),
            origin: Origin::Local,
        }
    }

    fn row(d: Decision) -> Row {
        match d {
            Decision::Archive(r) => *r,
            other => panic!("expected a row, got {other:?}"),
        }
    }

    #[test]
    fn inbound_chat_maps_to_jm() {
        let r = row(decide(
            &record(MessageType::Chat, Direction::Inbound),
            &SinkSettings::default(),
            RecordIds::ORDERED,
        ));
        assert_eq!(r.table, Table::Jm);
        assert_eq!(r.to_jid, "bob@example.com");
        assert_eq!(r.from_jid, "alice@example.com/phone");
        assert_eq!(r.msg_type, "chat");
        assert_eq!(r.direction, "I");
        assert_eq!(r.origin, "local");
        assert_eq!(r.thread_id.as_deref(), Some("t1"));
        assert_eq!(r.body_len, "héllo 𝄞".len() as i64);
        assert_eq!(r.message_len, r.message_text.len() as i64);
        assert_eq!(r.room_jid, None);
        assert_eq!(
            r.sent_date.unix_timestamp_nanos(),
            1_764_000_000_123_456_000
        );
    }

    #[test]
    fn groupchat_maps_to_tc_msgarchive_with_room_and_nickname() {
        let r = row(decide(
            &record(MessageType::Groupchat, Direction::Inbound),
            &SinkSettings::default(),
            RecordIds::ORDERED,
        ));
        assert_eq!(r.table, Table::TcMsgArchive);
        assert_eq!(r.room_jid.as_deref(), Some("room@conference.example.com"));
        assert_eq!(r.nickname.as_deref(), Some("al"));
        assert_eq!(r.msg_type, "groupchat");
    }

    #[test]
    fn outbound_is_archived_only_when_enabled() {
        let out = record(MessageType::Chat, Direction::Outbound);
        assert!(matches!(
            decide(&out, &SinkSettings::default(), RecordIds::ORDERED),
            Decision::Skip(reason) if reason.contains("archive_outbound")
        ));
        let on = SinkSettings {
            archive_outbound: true,
            ..SinkSettings::default()
        };
        assert_eq!(row(decide(&out, &on, RecordIds::ORDERED)).direction, "O");
        let no_inbound = SinkSettings {
            archive_inbound: false,
            ..SinkSettings::default()
        };
        assert!(matches!(
            decide(
                &record(MessageType::Chat, Direction::Inbound),
                &no_inbound,
                RecordIds::ORDERED
            ),
            Decision::Skip(_)
        ));
    }

    #[test]
    fn kinds_filter_message_types() {
        let only_chat = SinkSettings {
            kinds: KindSet::parse("chat").unwrap(),
            ..SinkSettings::default()
        };
        for kind in [
            MessageType::Normal,
            MessageType::Headline,
            MessageType::Groupchat,
        ] {
            assert!(matches!(
                decide(
                    &record(kind, Direction::Inbound),
                    &only_chat,
                    RecordIds::ORDERED
                ),
                Decision::Skip(_)
            ));
        }
        assert!(matches!(
            decide(
                &record(MessageType::Chat, Direction::Inbound),
                &only_chat,
                RecordIds::ORDERED
            ),
            Decision::Archive(_)
        ));
    }

    #[test]
    fn record_id_is_per_event_and_recipient() {
        let a = record(MessageType::Chat, Direction::Inbound);
        let mut b = a.clone();
        assert_eq!(record_id(&a), record_id(&b));
        b.recipient = BareJid::new("carol@example.com").unwrap();
        assert_ne!(record_id(&a), record_id(&b));
        let mut c = a.clone();
        c.event_id = Uuid::from_u128(43);
        assert_ne!(record_id(&a), record_id(&c));
    }

    #[test]
    fn ordered_record_ids_start_with_the_event_time_and_are_per_event_and_recipient() {
        let mut a = record(MessageType::Chat, Direction::Inbound);
        // Not a UUID v7: no ordered id.
        assert_eq!(ordered_record_id(&a), None);
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, 1_764_000_000, 123_000_000);
        a.event_id = Uuid::new_v7(ts);
        let id = ordered_record_id(&a).unwrap();
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(&id.as_bytes()[..6], &a.event_id.as_bytes()[..6]);
        assert_eq!(v7_micros(&a.event_id), 1_764_000_000_123_000);
        // Depends on the event id and the recipient only, and is never the legacy id.
        let mut restamped = a.clone();
        restamped.timestamp = Timestamp::from_micros(a.timestamp.as_micros() + 5_000_000);
        assert_eq!(ordered_record_id(&restamped), Some(id));
        assert_ne!(id, record_id(&a));
        let mut b = a.clone();
        b.recipient = BareJid::new("carol@example.com").unwrap();
        assert_ne!(ordered_record_id(&a), ordered_record_id(&b));
        // Later events sort after earlier ones.
        let mut later = a.clone();
        later.event_id = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_764_000_000,
            124_000_000,
        ));
        assert!(ordered_record_id(&later) > ordered_record_id(&a));
    }

    #[test]
    fn records_up_to_the_cut_over_keep_legacy_ids() {
        let mut a = record(MessageType::Chat, Direction::Inbound);
        assert_eq!(RecordIds::ORDERED.of(&a), record_id(&a), "not a UUID v7");
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, 1_764_000_000, 123_000_000);
        a.event_id = Uuid::new_v7(ts);
        let t = v7_micros(&a.event_id);
        let at = |after: i64| RecordIds {
            ordered_after_micros: after,
        };
        assert_eq!(at(t).of(&a), record_id(&a));
        assert_eq!(at(t + 1).of(&a), record_id(&a));
        assert_eq!(Some(at(t - 1).of(&a)), ordered_record_id(&a));
        assert_eq!(Some(RecordIds::ORDERED.of(&a)), ordered_record_id(&a));
        let r = row(decide(&a, &SinkSettings::default(), at(t)));
        assert_eq!(r.record_id, record_id(&a));
    }

    #[test]
    fn unrepresentable_times_are_rejected() {
        let mut r = record(MessageType::Chat, Direction::Inbound);
        r.timestamp = Timestamp::from_micros(i64::MAX);
        assert!(matches!(
            decide(&r, &SinkSettings::default(), RecordIds::ORDERED),
            Decision::Reject(reason) if reason.contains("9999")
        ));
    }
}
