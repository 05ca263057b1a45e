//! The Avro binary encoding of the events written for every message (a stanza received, a
//! delivery, a compliance record, an archive entry), written straight from the domain
//! types instead of through an Avro `Value` tree.
//!
//! Each writer and reader is bound to one released schema version (its id below):
//! [`encode`] is used only while that version is the current one, [`decode`] only for
//! records written with it while it is the current one. Anything else — another version,
//! a body that does not decode, a field without a valid domain value — goes to the
//! generic encoder and decoder, which also give the errors. The tests check that every
//! writer produces exactly the bytes of the generic encoder and every reader the events of
//! the generic decoder, for every enum symbol and every optional field set or not.

use imbus_core::{
    ArchivedMessage, BareJid, ComplianceRecord, Delivery, DeliveryCopy, Direction, Event, FullJid,
    GatewayId, Jid, MessageType, Origin, SessionId, StanzaKind, StanzaReceived, Timestamp, Uuid,
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
// Reading

/// The event in the Avro `body` of a record written with schema `id`, when `id` is one
/// this module reads and the body decodes to a valid event; `None` otherwise (the
/// generic decoder then decodes it, or says what is wrong).
pub(crate) fn decode(id: u32, body: &[u8]) -> Option<Event> {
    let mut r = Reader { rest: body };
    let event = match id {
        STANZA_RECEIVED_ID => Event::StanzaReceived(read_stanza_received(&mut r)?),
        DELIVERY_ID => Event::Delivery(read_delivery(&mut r)?),
        COMPLIANCE_RECORD_ID => Event::Compliance(read_compliance_record(&mut r)?),
        ARCHIVED_MESSAGE_ID => Event::Archived(read_archived_message(&mut r)?),
        _ => return None,
    };
    // Bytes left after the record: not a record of this schema.
    r.rest.is_empty().then_some(event)
}

fn read_stanza_received(r: &mut Reader<'_>) -> Option<StanzaReceived> {
    Some(StanzaReceived {
        event_id: r.uuid()?,
        gateway_id: GatewayId::new(r.string()?).ok()?,
        session_id: SessionId::new(r.string()?).ok()?,
        received_at: r.timestamp()?,
        sender: FullJid::new(r.string()?).ok()?,
        recipient: match r.opt_string()? {
            None => None,
            Some(s) => Some(Jid::new(s).ok()?),
        },
        kind: match r.long()? {
            1 => StanzaKind::Message,
            2 => StanzaKind::Presence,
            3 => StanzaKind::Iq,
            _ => return None,
        },
        stanza_type: r.opt_string()?.map(str::to_owned),
        stanza_id: r.opt_string()?.map(str::to_owned),
        xml: r.string()?.to_owned(),
    })
}

fn read_delivery(r: &mut Reader<'_>) -> Option<Delivery> {
    let event_id = r.uuid()?;
    let source_event_id = r.uuid()?;
    let to = FullJid::new(r.string()?).ok()?;
    let gateway_id = GatewayId::new(r.string()?).ok()?;
    let session_id = SessionId::new(r.string()?).ok()?;
    let xml = r.string()?.to_owned();
    let delayed_from = match r.long()? {
        0 => None,
        1 => Some(r.timestamp()?),
        _ => return None,
    };
    let mut copies = Vec::new();
    loop {
        let count = match r.long()? {
            0 => break,
            // A negative count is followed by the block's size in bytes.
            n if n < 0 => {
                r.long()?;
                n.checked_neg()?
            }
            n => n,
        };
        for _ in 0..count {
            copies.push(DeliveryCopy {
                event_id: r.uuid()?,
                to: FullJid::new(r.string()?).ok()?,
                session_id: SessionId::new(r.string()?).ok()?,
            });
        }
    }
    Some(Delivery {
        event_id,
        source_event_id,
        to,
        gateway_id,
        session_id,
        xml,
        delayed_from,
        copies,
    })
}

fn read_direction(r: &mut Reader<'_>) -> Option<Direction> {
    match r.long()? {
        1 => Some(Direction::Inbound),
        2 => Some(Direction::Outbound),
        _ => None,
    }
}

fn read_compliance_record(r: &mut Reader<'_>) -> Option<ComplianceRecord> {
    Some(ComplianceRecord {
        event_id: r.uuid()?,
        recipient: BareJid::new(r.string()?).ok()?,
        sender: Jid::new(r.string()?).ok()?,
        direction: read_direction(r)?,
        timestamp: r.timestamp()?,
        message_type: match r.long()? {
            0 => MessageType::Chat,
            1 => MessageType::Normal,
            2 => MessageType::Groupchat,
            3 => MessageType::Headline,
            _ => return None,
        },
        thread: r.opt_string()?.map(str::to_owned),
        subject: r.opt_string()?.map(str::to_owned),
        body: r.opt_string()?.map(str::to_owned),
        room: match r.opt_string()? {
            None => None,
            Some(s) => Some(BareJid::new(s).ok()?),
        },
        nickname: r.opt_string()?.map(str::to_owned),
        xml: r.string()?.to_owned(),
        origin: match r.long()? {
            1 => Origin::Local,
            2 => Origin::Intercluster,
            3 => Origin::Federated,
            4 => Origin::Sip,
            _ => return None,
        },
    })
}

fn read_archived_message(r: &mut Reader<'_>) -> Option<ArchivedMessage> {
    Some(ArchivedMessage {
        archive_id: r.uuid()?,
        event_id: r.uuid()?,
        owner: BareJid::new(r.string()?).ok()?,
        with: Jid::new(r.string()?).ok()?,
        direction: read_direction(r)?,
        timestamp: r.timestamp()?,
        xml: r.string()?.to_owned(),
    })
}

/// Reads Avro binary primitives from the front of a body.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn long(&mut self) -> Option<i64> {
        let mut z: u64 = 0;
        for (i, byte) in self.rest.iter().take(10).enumerate() {
            z |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Some((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        None
    }

    fn string(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.long()?).ok()?;
        if len > self.rest.len() {
            return None;
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        std::str::from_utf8(bytes).ok()
    }

    fn opt_string(&mut self) -> Option<Option<&'a str>> {
        match self.long()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }

    fn uuid(&mut self) -> Option<Uuid> {
        Uuid::parse_str(self.string()?).ok()
    }

    fn timestamp(&mut self) -> Option<Timestamp> {
        Some(Timestamp::from_micros(self.long()?))
    }
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
        let id = crate::schema_id(&bytes).unwrap();
        let body = &bytes[crate::HEADER_LEN..];
        let read = decode(id, body).expect("the direct reader reads what was written");
        assert_eq!(format!("{read:?}"), format!("{event:?}"));
        let generic = crate::decode_generic(&bytes).unwrap();
        assert_eq!(format!("{generic:?}"), format!("{event:?}"));
        // Cut short anywhere, or with a byte too many, the body is left to the generic
        // decoder.
        for len in 0..body.len() {
            assert!(
                decode(id, &body[..len]).is_none(),
                "{len} bytes of {event:?}"
            );
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(decode(id, &longer).is_none());
    }

    /// An archive entry's body, field by field.
    fn archive_body(owner: &str, direction: i32) -> Vec<u8> {
        let mut body = Vec::new();
        uuid(&mut body, Uuid::new_v4());
        uuid(&mut body, Uuid::new_v4());
        string(&mut body, owner);
        string(&mut body, "bob@example.com/desk");
        int(&mut body, direction);
        timestamp(&mut body, at(0));
        string(&mut body, "<message/>");
        body
    }

    #[test]
    fn invalid_fields_and_unknown_symbols_are_left_to_the_generic_decoder() {
        let framed = |body: Vec<u8>| {
            let mut record = vec![0u8];
            record.extend_from_slice(&ARCHIVED_MESSAGE_ID.to_be_bytes());
            record.extend(body);
            record
        };
        let valid = archive_body("alice@example.com", 1);
        assert!(decode(ARCHIVED_MESSAGE_ID, &valid).is_some());
        assert!(crate::decode(&framed(valid)).is_ok());
        // A full JID as the owner, and the symbol UNKNOWN: the generic decoder says why.
        for body in [
            archive_body("alice@example.com/phone", 1),
            archive_body("alice@example.com", 0),
            archive_body("alice@example.com", 3),
        ] {
            assert!(decode(ARCHIVED_MESSAGE_ID, &body).is_none());
            assert!(crate::decode(&framed(body)).is_err());
        }
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
