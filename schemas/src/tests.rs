//! Checks of the conversions against the schemas themselves.

use apache_avro::Schema;
use apache_avro::schema::{EnumSchema, RecordSchema};

use super::*;

/// Every enum schema reachable from `schema` (named references are defined elsewhere in
/// the same schema, so skipping them loses nothing).
fn enums(schema: &Schema, out: &mut Vec<EnumSchema>) {
    match schema {
        Schema::Enum(e) => out.push(e.clone()),
        Schema::Record(RecordSchema { fields, .. }) => {
            for f in fields {
                enums(&f.schema, out);
            }
        }
        Schema::Union(u) => {
            for v in u.variants() {
                enums(v, out);
            }
        }
        Schema::Array(a) => enums(&a.items, out),
        Schema::Map(m) => enums(&m.types, out),
        _ => {}
    }
}

#[test]
fn every_enum_symbol_maps_to_a_domain_value_except_the_default() {
    let mut seen = Vec::new();
    for kind in EventSchema::ALL {
        let mut found = Vec::new();
        enums(current_schema(kind), &mut found);
        for e in found {
            let name = e.name.name.clone();
            let default = e.default.clone();
            assert!(
                default.is_some(),
                "{}: enum {name} has no default symbol; readers of an older version could not read a symbol added later",
                kind.name()
            );
            for symbol in &e.symbols {
                let known = symbol_known(&name, symbol);
                if Some(symbol) == default.as_ref() && symbol == "UNKNOWN" {
                    assert!(!known, "{name}: UNKNOWN must not map to a domain value");
                } else {
                    assert!(
                        known,
                        "{}: symbol {symbol} of enum {name} has no domain value in convert.rs",
                        kind.name()
                    );
                }
            }
            seen.push(name);
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "Affiliation",
            "Availability",
            "CloseReason",
            "Direction",
            "MessageType",
            "Origin",
            "Role",
            "StanzaKind",
            "Subscription",
            "Whois"
        ]
    );
}

fn symbol_known(enum_name: &str, symbol: &str) -> bool {
    match convert::symbol_is_known(enum_name, symbol) {
        Some(known) => known,
        None => panic!("enum {enum_name} is not handled in convert.rs"),
    }
}

#[test]
fn events_with_variants_have_one_optional_record_field_per_variant() {
    let expected = [
        (EventSchema::SessionEvent, ["bound", "updated", "closed"]),
        (
            EventSchema::OfflineEvent,
            ["stored", "delivered", "expired"],
        ),
        (EventSchema::AccountEvent, ["created", "changed", "deleted"]),
    ];
    for (kind, variants) in expected {
        let Schema::Record(record) = current_schema(kind) else {
            panic!("{} is not a record", kind.name());
        };
        let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, variants, "{}", kind.name());
        for field in &record.fields {
            let Schema::Union(union) = &field.schema else {
                panic!("{}.{} is not a union", kind.name(), field.name);
            };
            assert!(
                matches!(
                    union.variants(),
                    [Schema::Null, Schema::Record(_) | Schema::Ref { .. }]
                ),
                "{}.{} must be [\"null\", record]",
                kind.name(),
                field.name
            );
            assert_eq!(field.default, Some(serde_json::Value::Null));
        }
    }
}

#[test]
fn every_event_schema_has_a_current_version() {
    for kind in EventSchema::ALL {
        let current = kind.current().unwrap();
        assert_eq!(current.name, kind.name());
        assert!(
            RELEASED
                .iter()
                .filter(|r| r.name == kind.name())
                .all(|r| r.version <= current.version)
        );
        assert_eq!(EventSchema::from_name(kind.name()), Some(kind));
    }
    assert_eq!(EventSchema::from_name("Nope"), None);
}

// ---------------------------------------------------------------------------------------
// Schema resolution: data written with another version of a schema than the current one.

use apache_avro::types::Value;
use imbus_core::{
    Availability, ClientFeatures, CloseReason, ComplianceRecord, Direction, FullJid, GatewayId,
    Jid, MessageType, Origin, SessionClosed, SessionEvent, SessionId, SessionPresence,
    SessionState, StanzaKind, StanzaReceived, Timestamp, Uuid,
};

fn current_json(kind: EventSchema) -> serde_json::Value {
    serde_json::from_str(kind.current().unwrap().json).unwrap()
}

/// A writer schema that is not in the released table, as another version would be.
fn other_version(kind: EventSchema, json: &serde_json::Value) -> Parsed {
    Parsed {
        kind,
        released: Box::leak(Box::new(ReleasedSchema {
            name: kind.name(),
            version: 99,
            id: 99_999,
            json: "",
        })),
        schema: Schema::parse_str(&json.to_string()).unwrap(),
        reader: GenericSingleObjectReader::new_with_header_builder(
            Schema::parse_str(&json.to_string()).unwrap(),
            PlaceholderHeader,
        )
        .unwrap(),
    }
}

/// The Avro value of an event under its current schema.
fn value_of(event: &Event) -> Value {
    let bytes = encode(event).unwrap();
    let kind = EventSchema::of(event);
    apache_avro::from_avro_datum(current_schema(kind), &mut &bytes[HEADER_LEN..], None).unwrap()
}

fn fields_mut(value: &mut Value) -> &mut Vec<(String, Value)> {
    match value {
        Value::Record(fields) => fields,
        Value::Union(_, inner) => fields_mut(inner),
        other => panic!("not a record: {other:?}"),
    }
}

fn field_mut<'v>(value: &'v mut Value, name: &str) -> &'v mut Value {
    fields_mut(value)
        .iter_mut()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {name}"))
}

fn remove_field(value: &mut Value, name: &str) {
    fields_mut(value).retain(|(n, _)| n != name);
}

/// The "fields" of a record schema in JSON.
fn json_fields(record: &mut serde_json::Value) -> &mut Vec<serde_json::Value> {
    record["fields"].as_array_mut().unwrap()
}

fn stanza() -> StanzaReceived {
    StanzaReceived {
        event_id: Uuid::from_u128(42),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: SessionId::new("s1").unwrap(),
        received_at: Timestamp::from_micros(1_700_000_000_000_000),
        sender: FullJid::new("alice@example.com/phone").unwrap(),
        recipient: Some(Jid::new("bob@example.com").unwrap()),
        kind: StanzaKind::Message,
        stanza_type: Some("chat".to_owned()),
        stanza_id: Some("m1".to_owned()),
        xml: "<message/>".to_owned(),
    }
}

#[test]
fn data_from_a_version_without_a_later_optional_field_reads_with_its_default() {
    // An older StanzaReceived without `stanza_id` (a field with default null).
    let mut json = current_json(EventSchema::StanzaReceived);
    json_fields(&mut json).retain(|f| f["name"] != "stanza_id");
    let older = other_version(EventSchema::StanzaReceived, &json);

    let event = Event::StanzaReceived(stanza());
    let mut value = value_of(&event);
    remove_field(&mut value, "stanza_id");
    let body = apache_avro::to_avro_datum(&older.schema, value).unwrap();

    let current = current_schema(EventSchema::StanzaReceived);
    let decoded = decode_body(&older, Some(current), &body).unwrap();
    let mut expected = stanza();
    expected.stanza_id = None;
    assert_eq!(decoded, Event::StanzaReceived(expected));

    // Without resolution the older body is misread: resolution is what makes it work.
    assert!(decode_body(&older, None, &body).is_err());
}

fn closed() -> SessionEvent {
    SessionEvent::Closed(SessionClosed {
        jid: FullJid::new("alice@example.com/phone").unwrap(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: SessionId::new("s1").unwrap(),
        at: Timestamp::from_micros(5),
        reason: CloseReason::ClientClosed,
        detail: Some("bye".to_owned()),
    })
}

#[test]
fn variants_resolve_across_versions() {
    // An older SessionEvent whose SessionClosed has no `detail`.
    let mut json = current_json(EventSchema::SessionEvent);
    assert_eq!(json["fields"][2]["name"], "closed");
    json_fields(&mut json["fields"][2]["type"][1]).retain(|f| f["name"] != "detail");
    let older = other_version(EventSchema::SessionEvent, &json);

    let mut value = value_of(&Event::Session(closed()));
    remove_field(field_mut(&mut value, "closed"), "detail");
    let body = apache_avro::to_avro_datum(&older.schema, value).unwrap();

    let current = current_schema(EventSchema::SessionEvent);
    let decoded = decode_body(&older, Some(current), &body).unwrap();
    let SessionEvent::Closed(mut expected) = closed() else {
        unreachable!()
    };
    expected.detail = None;
    assert_eq!(decoded, Event::Session(SessionEvent::Closed(expected)));
}

/// A newer writer schema in which enum `enum_name` has the extra symbol `symbol`.
fn with_extra_symbol(json: &mut serde_json::Value, enum_name: &str, symbol: &str) -> bool {
    match json {
        serde_json::Value::Object(map) => {
            if map.get("type").is_some_and(|t| t == "enum") && map["name"] == enum_name {
                map["symbols"].as_array_mut().unwrap().push(symbol.into());
                return true;
            }
            map.values_mut()
                .any(|v| with_extra_symbol(v, enum_name, symbol))
        }
        serde_json::Value::Array(items) => items
            .iter_mut()
            .any(|v| with_extra_symbol(v, enum_name, symbol)),
        _ => false,
    }
}

#[test]
fn a_symbol_added_by_a_newer_version_is_reported_not_misread() {
    let mut json = current_json(EventSchema::SessionEvent);
    assert!(with_extra_symbol(&mut json, "Availability", "INVISIBLE"));
    let newer = other_version(EventSchema::SessionEvent, &json);

    let state = SessionState {
        jid: FullJid::new("alice@example.com/phone").unwrap(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: SessionId::new("s1").unwrap(),
        at: Timestamp::from_micros(5),
        presence: SessionPresence {
            availability: Availability::Away,
            priority: 1,
            status: None,
        },
        features: ClientFeatures::default(),
    };
    let mut value = value_of(&Event::Session(SessionEvent::Updated(state)));
    let presence = field_mut(field_mut(&mut value, "updated"), "presence");
    *field_mut(presence, "availability") = Value::String("INVISIBLE".to_owned());
    let body = apache_avro::to_avro_datum(&newer.schema, value).unwrap();

    let current = current_schema(EventSchema::SessionEvent);
    let err = decode_body(&newer, Some(current), &body).unwrap_err();
    match &err {
        SchemaError::Field {
            schema,
            field,
            problem: FieldProblem::UnknownSymbol { symbol },
        } => {
            assert_eq!(*schema, "SessionEvent");
            assert_eq!(field, "updated.presence.availability");
            assert_eq!(symbol, "UNKNOWN");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("newer schema version"), "{err}");
}

#[test]
fn a_message_type_added_by_a_newer_version_reads_as_normal() {
    let mut json = current_json(EventSchema::ComplianceRecord);
    assert!(with_extra_symbol(&mut json, "MessageType", "NOTICE"));
    let newer = other_version(EventSchema::ComplianceRecord, &json);

    let record = ComplianceRecord {
        event_id: Uuid::from_u128(1),
        recipient: imbus_core::BareJid::new("bob@example.com").unwrap(),
        sender: Jid::new("alice@example.com/phone").unwrap(),
        direction: Direction::Inbound,
        timestamp: Timestamp::from_micros(1),
        message_type: MessageType::Chat,
        thread: None,
        subject: None,
        body: Some("hi".to_owned()),
        room: None,
        nickname: None,
        xml: "<message/>".to_owned(),
        origin: Origin::Local,
    };
    let mut value = value_of(&Event::Compliance(record.clone()));
    *field_mut(&mut value, "message_type") = Value::String("NOTICE".to_owned());
    let body = apache_avro::to_avro_datum(&newer.schema, value).unwrap();

    let current = current_schema(EventSchema::ComplianceRecord);
    let decoded = decode_body(&newer, Some(current), &body).unwrap();
    let expected = ComplianceRecord {
        message_type: MessageType::Normal,
        ..record
    };
    assert_eq!(decoded, Event::Compliance(expected));
}

#[path = "../tests/common/mod.rs"]
mod common;

#[test]
fn every_sample_survives_schema_resolution() {
    // Decoding with resolution, as for data written with an older version, must give the
    // same events as decoding without. Resolving to an identical schema makes every
    // sample take that path.
    for event in common::samples() {
        let kind = EventSchema::of(&event);
        let bytes = encode(&event).unwrap();
        let writer = other_version(kind, &current_json(kind));
        let current = current_schema(kind);
        let decoded = decode_body(&writer, Some(current), &bytes[HEADER_LEN..])
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        assert_eq!(decoded, event);
    }
}

#[test]
fn encoded_records_hold_no_growth_room() {
    // Records are kept in memory by the embedded log's cache whole: their buffers must be
    // exactly their size, whichever encoder (direct or generic) wrote them.
    let mut long = stanza();
    long.xml = format!("<message><body>{}</body></message>", "x".repeat(3000));
    for event in [
        Event::StanzaReceived(stanza()),
        Event::StanzaReceived(long),
        Event::from(closed()),
    ] {
        let bytes = encode(&event).unwrap();
        assert_eq!(bytes.len(), bytes.capacity(), "{event:?}");
        assert_eq!(decode(&bytes).unwrap(), event);
    }
}
