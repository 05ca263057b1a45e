//! The Avro binary encoding of the events written for every message (a stanza received, a
//! delivery, a compliance record, an archive entry), written straight from the domain
//! types instead of through an Avro `Value` tree.
//!
//! Each writer is bound to one released schema version (its id below): [`encode`] uses
//! it only while that version is the current one, and falls back to the generic encoder
//! otherwise. The tests check that every writer produces exactly the bytes of the generic
//! encoder, for every enum symbol and every optional field set or not.

use imbus_core::{
    ArchivedMessage, ComplianceRecord, Delivery, Direction, Event, MessageType, Origin, StanzaKind,
    StanzaReceived, Timestamp, Uuid,
};

/// The schema versions the writers here produce.
pub(crate) const STANZA_RECEIVED_ID: u32 = 1001;
pub(crate) const DELIVERY_ID: u32 = 1202;
pub(crate) const COMPLIANCE_RECORD_ID: u32 = 1601;
pub(crate) const ARCHIVED_MESSAGE_ID: u32 = 1901;

/// The schema id this module writes `event` with, if it writes it.
pub(crate) fn schema_id(event: &Event) -> Option<u32> {
    match event {
        Event::StanzaReceived(_) => Some(STANZA_RECEIVED_ID),
        Event::Delivery(_) => Some(DELIVERY_ID),
        Event::Compliance(_) => Some(COMPLIANCE_RECORD_ID),
        Event::Archived(_) => Some(ARCHIVED_MESSAGE_ID),
        _ => None,
    }
}

/// Appends the Avro body of `event` to `out`; false (nothing written) for an event this
/// module does not write.
pub(crate) fn encode(event: &Event, out: &mut Vec<u8>) -> bool {
    match event {
        Event::StanzaReceived(e) => stanza_received(e, out),
        Event::Delivery(e) => delivery(e, out),
        Event::Compliance(e) => compliance_record(e, out),
        Event::Archived(e) => archived_message(e, out),
        _ => return false,
    }
    true
}

/// The bytes an event of this kind takes besides its strings, at most (ids, numbers,
/// lengths, union and enum indexes).
const FIXED: usize = 200;

fn stanza_received(e: &StanzaReceived, out: &mut Vec<u8>) {
    out.reserve(
        FIXED
            + e.gateway_id.as_str().len()
            + e.session_id.as_str().len()
            + e.sender.as_str().len()
            + e.recipient.as_ref().map_or(0, |r| r.as_str().len())
            + e.stanza_type.as_ref().map_or(0, String::len)
            + e.stanza_id.as_ref().map_or(0, String::len)
            + e.xml.len(),
    );
    uuid(out, e.event_id);
    string(out, e.gateway_id.as_str());
    string(out, e.session_id.as_str());
    timestamp(out, e.received_at);
    string(out, e.sender.as_str());
    opt_string(out, e.recipient.as_ref().map(|r| r.as_str()));
    int(
        out,
        match e.kind {
            StanzaKind::Message => 1,
            StanzaKind::Presence => 2,
            StanzaKind::Iq => 3,
        },
    );
    opt_string(out, e.stanza_type.as_deref());
    opt_string(out, e.stanza_id.as_deref());
    string(out, &e.xml);
}

fn delivery(e: &Delivery, out: &mut Vec<u8>) {
    out.reserve(
        FIXED
            + e.to.as_str().len()
            + e.gateway_id.as_str().len()
            + e.session_id.as_str().len()
            + e.xml.len()
            + e.copies
                .iter()
                .map(|c| 48 + c.to.as_str().len() + c.session_id.as_str().len())
                .sum::<usize>(),
    );
    uuid(out, e.event_id);
    uuid(out, e.source_event_id);
    string(out, e.to.as_str());
    string(out, e.gateway_id.as_str());
    string(out, e.session_id.as_str());
    string(out, &e.xml);
    match e.delayed_from {
        None => long(out, 0),
        Some(at) => {
            long(out, 1);
            timestamp(out, at);
        }
    }
    // An array is written as one block: its count, the items, then an empty block.
    if !e.copies.is_empty() {
        long(out, i64::try_from(e.copies.len()).unwrap_or(i64::MAX));
        for copy in &e.copies {
            uuid(out, copy.event_id);
            string(out, copy.to.as_str());
            string(out, copy.session_id.as_str());
        }
    }
    long(out, 0);
}

fn direction(d: Direction) -> i32 {
    match d {
        Direction::Inbound => 1,
        Direction::Outbound => 2,
    }
}

fn compliance_record(e: &ComplianceRecord, out: &mut Vec<u8>) {
    out.reserve(
        FIXED
            + e.recipient.as_str().len()
            + e.sender.as_str().len()
            + e.thread.as_ref().map_or(0, String::len)
            + e.subject.as_ref().map_or(0, String::len)
            + e.body.as_ref().map_or(0, String::len)
            + e.room.as_ref().map_or(0, |r| r.as_str().len())
            + e.nickname.as_ref().map_or(0, String::len)
            + e.xml.len(),
    );
    uuid(out, e.event_id);
    string(out, e.recipient.as_str());
    string(out, e.sender.as_str());
    int(out, direction(e.direction));
    timestamp(out, e.timestamp);
    int(
        out,
        match e.message_type {
            MessageType::Chat => 0,
            MessageType::Normal => 1,
            MessageType::Groupchat => 2,
            MessageType::Headline => 3,
        },
    );
    opt_string(out, e.thread.as_deref());
    opt_string(out, e.subject.as_deref());
    opt_string(out, e.body.as_deref());
    opt_string(out, e.room.as_ref().map(|r| r.as_str()));
    opt_string(out, e.nickname.as_deref());
    string(out, &e.xml);
    int(
        out,
        match e.origin {
            Origin::Local => 1,
            Origin::Intercluster => 2,
            Origin::Federated => 3,
            Origin::Sip => 4,
        },
    );
}

fn archived_message(e: &ArchivedMessage, out: &mut Vec<u8>) {
    out.reserve(FIXED + e.owner.as_str().len() + e.with.as_str().len() + e.xml.len());
    uuid(out, e.archive_id);
    uuid(out, e.event_id);
    string(out, e.owner.as_str());
    string(out, e.with.as_str());
    int(out, direction(e.direction));
    timestamp(out, e.timestamp);
    string(out, &e.xml);
}

// ---------------------------------------------------------------------------------------
// Avro binary primitives

/// A `long`: zig-zag, then variable length, 7 bits per byte, low bits first.
fn long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// An `int` (and an enum's symbol index): encoded like a `long`.
fn int(out: &mut Vec<u8>, n: i32) {
    long(out, i64::from(n));
}

fn string(out: &mut Vec<u8>, s: &str) {
    long(out, i64::try_from(s.len()).unwrap_or(i64::MAX));
    out.extend_from_slice(s.as_bytes());
}

/// A `["null", "string"]` union: the branch index, then the string.
fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => long(out, 0),
        Some(s) => {
            long(out, 1);
            string(out, s);
        }
    }
}

/// A `uuid` (a string: the hyphenated lower-case form).
fn uuid(out: &mut Vec<u8>, u: Uuid) {
    let mut buffer = Uuid::encode_buffer();
    string(out, u.hyphenated().encode_lower(&mut buffer));
}

/// A `timestamp-micros` (a `long`).
fn timestamp(out: &mut Vec<u8>, t: Timestamp) {
    long(out, t.as_micros());
}

#[cfg(test)]
mod tests {
    use imbus_core::{BareJid, DeliveryCopy, FullJid, GatewayId, Jid, SessionId, Timestamp, Uuid};

    use super::*;

    fn generic(event: &Event) -> Vec<u8> {
        crate::encode_generic(event).unwrap()
    }

    fn direct(event: &Event) -> Vec<u8> {
        crate::encode(event).unwrap()
    }

    fn check(event: Event) {
        let bytes = direct(&event);
        assert_eq!(bytes, generic(&event), "{event:?}");
        let back = crate::decode(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{event:?}"));
    }

    fn at(micros: i64) -> Timestamp {
        Timestamp::from_micros(micros)
    }

    #[test]
    fn the_writers_are_for_the_current_schema_versions() {
        for (event, id) in [
            (crate::EventSchema::StanzaReceived, STANZA_RECEIVED_ID),
            (crate::EventSchema::Delivery, DELIVERY_ID),
            (crate::EventSchema::ComplianceRecord, COMPLIANCE_RECORD_ID),
            (crate::EventSchema::ArchivedMessage, ARCHIVED_MESSAGE_ID),
        ] {
            assert_eq!(
                event.current().unwrap().id,
                id,
                "{} has a new version: update schemas/src/direct.rs for it",
                event.name()
            );
        }
    }

    #[test]
    fn numbers_use_zigzag_variable_length() {
        for (n, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (
                i64::MAX,
                vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            long(&mut out, n);
            assert_eq!(out, bytes, "{n}");
        }
    }

    #[test]
    fn stanzas_received_are_written_as_the_generic_encoder_writes_them() {
        for (i, kind) in [StanzaKind::Message, StanzaKind::Presence, StanzaKind::Iq]
            .into_iter()
            .enumerate()
        {
            for optional in [false, true] {
                check(Event::StanzaReceived(StanzaReceived {
                    event_id: Uuid::new_v4(),
                    gateway_id: GatewayId::new("gw-1").unwrap(),
                    session_id: SessionId::new(format!("s{i}")).unwrap(),
                    received_at: at(1_700_000_000_000_000 + i as i64),
                    sender: FullJid::new("alice@example.com/phone").unwrap(),
                    recipient: optional.then(|| Jid::new("bob@example.com").unwrap()),
                    kind,
                    stanza_type: optional.then(|| "chat".to_owned()),
                    stanza_id: optional.then(|| "id-ü".to_owned()),
                    xml: "<message>ü€𝄞".repeat(40 * i + 1),
                }));
            }
        }
    }

    #[test]
    fn deliveries_are_written_as_the_generic_encoder_writes_them() {
        for copies in [0usize, 1, 70] {
            for delayed in [None, Some(at(-5)), Some(at(1_700_000_000_123_456))] {
                check(Event::Delivery(Delivery {
                    event_id: Uuid::new_v4(),
                    source_event_id: Uuid::new_v4(),
                    to: FullJid::new("bob@example.com/desk").unwrap(),
                    gateway_id: GatewayId::new("gw1").unwrap(),
                    session_id: SessionId::new("s-1").unwrap(),
                    xml: "<message to='bob@example.com'><body>hi</body></message>".into(),
                    delayed_from: delayed,
                    copies: (0..copies)
                        .map(|n| DeliveryCopy {
                            event_id: Uuid::new_v4(),
                            to: FullJid::new(&format!("u{n}@example.com/r{n}")).unwrap(),
                            session_id: SessionId::new(format!("s-{n}")).unwrap(),
                        })
                        .collect(),
                }));
            }
        }
    }

    #[test]
    fn compliance_records_are_written_as_the_generic_encoder_writes_them() {
        let types = [
            MessageType::Chat,
            MessageType::Normal,
            MessageType::Groupchat,
            MessageType::Headline,
        ];
        let origins = [
            Origin::Local,
            Origin::Intercluster,
            Origin::Federated,
            Origin::Sip,
        ];
        for (i, (message_type, origin)) in types.into_iter().zip(origins).enumerate() {
            for direction in [Direction::Inbound, Direction::Outbound] {
                let optional = i % 2 == 0;
                check(Event::Compliance(ComplianceRecord {
                    event_id: Uuid::new_v4(),
                    recipient: BareJid::new("bob@example.com").unwrap(),
                    sender: Jid::new("alice@example.com/phone").unwrap(),
                    direction,
                    timestamp: at(1_700_000_000_000_000),
                    message_type,
                    thread: optional.then(|| "t1".to_owned()),
                    subject: (!optional).then(|| "s".to_owned()),
                    body: optional.then(|| "hello".to_owned()),
                    room: optional.then(|| BareJid::new("room@conference.example.com").unwrap()),
                    nickname: optional.then(|| "nick".to_owned()),
                    xml: "<message/>".into(),
                    origin,
                }));
            }
        }
    }

    #[test]
    fn archive_entries_are_written_as_the_generic_encoder_writes_them() {
        for direction in [Direction::Inbound, Direction::Outbound] {
            check(Event::Archived(ArchivedMessage {
                archive_id: Uuid::new_v4(),
                event_id: Uuid::new_v4(),
                owner: BareJid::new("alice@example.com").unwrap(),
                with: Jid::new("bob@example.com/desk").unwrap(),
                direction,
                timestamp: at(0),
                xml: "<message><body>x</body></message>".into(),
            }));
        }
    }
}
