//! From a [`ComplianceRecord`] to the row it is archived as (pure).
//!
//! One-to-one messages (`chat`, `normal`, `headline`) go to the table `JM`, group chat
//! messages to `TC_MSGARCHIVE`. Each row carries a `record_id`: a UUID v5 of the record's
//! event id and recipient, the unique key that makes a redelivered record a no-op.

use imbus_core::{ComplianceRecord, Direction, MessageType, Origin};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::settings::SinkSettings;

/// The namespace of [`record_id`]'s UUID v5.
const RECORD_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a2f_51c4_0e1b_4f7e_9c3d_2b8a_7e15_c0de);

/// The unique key of a record in the archive: a UUID v5 of the event id and the
/// recipient's bare JID. Fixed length, so every database can index it.
pub fn record_id(record: &ComplianceRecord) -> Uuid {
    let mut name = Vec::with_capacity(16 + 1 + record.recipient.as_str().len());
    name.extend_from_slice(record.event_id.as_bytes());
    name.push(0);
    name.extend_from_slice(record.recipient.as_str().as_bytes());
    Uuid::new_v5(&RECORD_ID_NAMESPACE, &name)
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
    /// [`record_id`]: unique per (event id, recipient).
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
pub fn decide(record: &ComplianceRecord, settings: &SinkSettings) -> Decision {
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
        record_id: record_id(record),
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
            decide(&out, &SinkSettings::default()),
            Decision::Skip(reason) if reason.contains("archive_outbound")
        ));
        let on = SinkSettings {
            archive_outbound: true,
            ..SinkSettings::default()
        };
        assert_eq!(row(decide(&out, &on)).direction, "O");
        let no_inbound = SinkSettings {
            archive_inbound: false,
            ..SinkSettings::default()
        };
        assert!(matches!(
            decide(&record(MessageType::Chat, Direction::Inbound), &no_inbound),
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
                decide(&record(kind, Direction::Inbound), &only_chat),
                Decision::Skip(_)
            ));
        }
        assert!(matches!(
            decide(&record(MessageType::Chat, Direction::Inbound), &only_chat),
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
    fn unrepresentable_times_are_rejected() {
        let mut r = record(MessageType::Chat, Direction::Inbound);
        r.timestamp = Timestamp::from_micros(i64::MAX);
        assert!(matches!(
            decide(&r, &SinkSettings::default()),
            Decision::Reject(reason) if reason.contains("9999")
        ));
    }
}
