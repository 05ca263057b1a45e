//! Encoding and decoding through the public API: every event type round-trips, and bad
//! records are refused with errors that say what is wrong and where.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use apache_avro::Schema;
use apache_avro::types::Value;
use imbus_core::Event;
use imbus_schemas::{
    EventSchema, FieldProblem, HEADER_LEN, MAGIC_BYTE, SchemaError, decode, encode, schema_id,
};

#[test]
fn every_event_round_trips() {
    let samples = common::samples();
    let mut kinds = BTreeSet::new();
    for event in &samples {
        let kind = EventSchema::of(event);
        kinds.insert(kind);
        let bytes = encode(event).unwrap();
        assert_eq!(bytes[0], MAGIC_BYTE);
        assert_eq!(schema_id(&bytes).unwrap(), kind.current().unwrap().id);
        let decoded = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        assert_eq!(&decoded, event);
    }
    assert_eq!(
        kinds.len(),
        EventSchema::ALL.len(),
        "a sample of every schema"
    );
}

#[test]
fn framing_header_is_magic_byte_and_big_endian_id() {
    let event = &common::samples()[0];
    let bytes = encode(event).unwrap();
    let id = EventSchema::StanzaReceived.current().unwrap().id;
    assert_eq!(&bytes[..HEADER_LEN], &[0, 0, 0, (id >> 8) as u8, id as u8]);
}

fn current_schema(kind: EventSchema) -> Schema {
    Schema::parse_str(kind.current().unwrap().json).unwrap()
}

/// The Avro value inside an encoded event.
fn body_value(bytes: &[u8], kind: EventSchema) -> Value {
    apache_avro::from_avro_datum(&current_schema(kind), &mut &bytes[HEADER_LEN..], None).unwrap()
}

/// Frames an Avro value of the current schema of `kind`.
fn frame(kind: EventSchema, value: Value) -> Vec<u8> {
    let mut out = vec![MAGIC_BYTE];
    out.extend_from_slice(&kind.current().unwrap().id.to_be_bytes());
    out.extend(apache_avro::to_avro_datum(&current_schema(kind), value).unwrap());
    out
}

fn set(value: &mut Value, path: &[&str], new: Value) {
    let mut v = value;
    for name in path {
        if let Value::Union(_, inner) = v {
            v = inner.as_mut();
        }
        let Value::Record(fields) = v else {
            panic!("not a record at {name}")
        };
        v = fields
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no field {name}"));
    }
    *v = new;
}

/// Encodes the first sample of `kind`, changes one field of its Avro value, and decodes.
fn decode_altered(kind: EventSchema, path: &[&str], new: Value) -> SchemaError {
    decode_altered_with(kind, 0, path, new)
}

fn decode_altered_with(kind: EventSchema, nth: usize, path: &[&str], new: Value) -> SchemaError {
    let event = common::samples()
        .into_iter()
        .filter(|e| EventSchema::of(e) == kind)
        .nth(nth)
        .unwrap();
    let mut value = body_value(&encode(&event).unwrap(), kind);
    set(&mut value, path, new);
    decode(&frame(kind, value)).unwrap_err()
}

fn field_error(err: &SchemaError) -> (&'static str, &str, &FieldProblem) {
    match err {
        SchemaError::Field {
            schema,
            field,
            problem,
        } => (schema, field.as_str(), problem),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn unknown_schema_id_is_refused_clearly() {
    let mut bytes = encode(&common::samples()[0]).unwrap();
    bytes[1..HEADER_LEN].copy_from_slice(&4242_u32.to_be_bytes());
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(err, SchemaError::UnknownSchemaId { id: 4242 }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("unknown schema id 4242") && message.contains("ids.toml"),
        "{message}"
    );
}

#[test]
fn framing_errors_are_refused() {
    for len in 0..HEADER_LEN {
        let err = decode(&vec![0; len]).unwrap_err();
        assert!(
            matches!(err, SchemaError::Truncated { len: l } if l == len),
            "{err:?}"
        );
    }
    let mut bytes = encode(&common::samples()[0]).unwrap();
    bytes[0] = b'{';
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(err, SchemaError::MagicByte { found: b'{' }),
        "{err:?}"
    );
    assert!(err.to_string().contains("0x7b"), "{err}");
}

#[test]
fn truncated_and_padded_bodies_are_refused() {
    // Cut anywhere, every sample is refused (the decoder alone would read a string cut
    // short as null, so a record ending in an optional string would pass for complete).
    for event in common::samples().iter().filter(|e| {
        // The 1 MiB samples would make this quadratic.
        encode(e).unwrap().len() < 10_000
    }) {
        let bytes = encode(event).unwrap();
        for cut in HEADER_LEN..bytes.len() {
            let err = decode(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, SchemaError::BodyTruncated { .. }),
                "{event:?} cut at {cut}: {err:?}"
            );
        }
    }
    let bytes = encode(&common::samples()[0]).unwrap();
    let err = decode(&bytes[..bytes.len() - 3]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("StanzaReceived v1 (schema id 1001): the Avro body is cut short"),
        "{err}"
    );

    let mut padded = bytes.clone();
    padded.extend_from_slice(&[1, 2]);
    let err = decode(&padded).unwrap_err();
    assert!(
        matches!(err, SchemaError::TrailingBytes { count: 2, .. }),
        "{err:?}"
    );

    // A body that does not decode with its schema: an invalid UTF-8 string.
    let mut bad = bytes.clone();
    let at = bad.len() - 10;
    bad[at] = 0xff;
    let err = decode(&bad).unwrap_err();
    assert!(
        matches!(
            err,
            SchemaError::Body {
                schema: "StanzaReceived",
                version: 1,
                id: 1001,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn invalid_jids_name_the_field() {
    let err = decode_altered(
        EventSchema::StanzaReceived,
        &["sender"],
        Value::String("alice@example.com".into()),
    );
    let (schema, field, problem) = field_error(&err);
    assert_eq!((schema, field), ("StanzaReceived", "sender"));
    assert!(matches!(
        problem,
        FieldProblem::Jid {
            expected: "full JID",
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "StanzaReceived: field sender: \"alice@example.com\" is not a valid full JID: no resource found in this full JID"
    );

    let err = decode_altered(
        EventSchema::ComplianceRecord,
        &["recipient"],
        Value::String("bob@example.com/desk".into()),
    );
    assert_eq!(field_error(&err).1, "recipient");

    let err = decode_altered(
        EventSchema::SessionEvent,
        &["bound", "resource"],
        Value::String(String::new()),
    );
    let (schema, field, _) = field_error(&err);
    assert_eq!((schema, field), ("SessionEvent", "bound.resource"));

    let err = decode_altered(
        EventSchema::UserDataChanged,
        &["user"],
        Value::String("alice@example.com/phone".into()),
    );
    let (schema, field, problem) = field_error(&err);
    assert_eq!((schema, field), ("UserDataChanged", "user"));
    assert!(matches!(
        problem,
        FieldProblem::Jid {
            expected: "bare JID",
            ..
        }
    ));
}

#[test]
fn invalid_ids_and_ranges_name_the_field() {
    let err = decode_altered(
        EventSchema::Delivery,
        &["gateway_id"],
        Value::String("gw 1".into()),
    );
    let (_, field, problem) = field_error(&err);
    assert_eq!(field, "gateway_id");
    assert!(matches!(problem, FieldProblem::Invalid(_)));
    assert!(
        err.to_string().contains("invalid gateway id \"gw 1\""),
        "{err}"
    );

    let err = decode_altered(
        EventSchema::SessionEvent,
        &["bound", "presence", "priority"],
        Value::Int(200),
    );
    let (_, field, problem) = field_error(&err);
    assert_eq!(field, "bound.presence.priority");
    assert!(matches!(
        problem,
        FieldProblem::OutOfRange { value: 200, .. }
    ));

    let err = decode_altered(
        EventSchema::AccountEvent,
        &["created", "scram_sha256", "stored_key"],
        Value::Bytes(vec![0; 20]),
    );
    let (_, field, _) = field_error(&err);
    assert_eq!(field, "created.scram_sha256");
    assert!(
        err.to_string()
            .contains("StoredKey is 20 bytes, it must be 32"),
        "{err}"
    );

    let err = decode_altered(
        EventSchema::AccountEvent,
        &["created", "scram_sha1", "iterations"],
        Value::Int(-5),
    );
    assert_eq!(field_error(&err).1, "created.scram_sha1.iterations");

    let err = decode_altered(
        EventSchema::ConfigChanged,
        &["key"],
        Value::String("a b".into()),
    );
    assert_eq!(field_error(&err).1, "key");
}

#[test]
fn the_unknown_symbol_is_never_a_domain_value() {
    // Writers never write UNKNOWN; a reader sees it for a symbol a newer version added.
    let err = decode_altered(
        EventSchema::StanzaReceived,
        &["kind"],
        Value::Enum(0, "UNKNOWN".into()),
    );
    let (_, field, problem) = field_error(&err);
    assert_eq!(field, "kind");
    assert!(matches!(problem, FieldProblem::UnknownSymbol { .. }));

    let err = decode_altered(
        EventSchema::ComplianceRecord,
        &["origin"],
        Value::Enum(0, "UNKNOWN".into()),
    );
    assert_eq!(field_error(&err).1, "origin");
}

#[test]
fn exactly_one_variant_must_be_set() {
    let err = decode_altered(
        EventSchema::OfflineEvent,
        &["stored"],
        Value::Union(0, Box::new(Value::Null)),
    );
    let (schema, field, problem) = field_error(&err);
    assert_eq!(
        (schema, field),
        ("OfflineEvent", "stored|delivered|expired")
    );
    assert!(matches!(problem, FieldProblem::NoVariant { .. }));
    assert!(
        err.to_string().contains("added by a newer schema version"),
        "{err}"
    );

    // A SessionEvent with both `bound` and `updated` set.
    let bound = common::samples()
        .into_iter()
        .find(|e| matches!(e, Event::Session(imbus_core::SessionEvent::Bound(_))))
        .unwrap();
    let mut value = body_value(&encode(&bound).unwrap(), EventSchema::SessionEvent);
    let Value::Record(fields) = &mut value else {
        panic!()
    };
    let state = fields[0].1.clone();
    fields[1].1 = state;
    let err = decode(&frame(EventSchema::SessionEvent, value)).unwrap_err();
    let (_, field, problem) = field_error(&err);
    assert_eq!(field, "updated");
    assert!(matches!(
        problem,
        FieldProblem::SeveralVariants { first: "bound" }
    ));
}
