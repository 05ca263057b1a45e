//! The wire format of every imbus event: Avro schemas with fixed ids, in Confluent framing.
//!
//! Every record value imbus writes to its log is
//!
//! ```text
//! 0x00 | schema id (4 bytes, big-endian) | Avro binary encoding of the event
//! ```
//!
//! the framing of Confluent's serializers, so Kafka tools (kcat, Kafka Connect, audit
//! consumers) can decode it. The schemas are in `schemas/avro/*.avsc`; the ids of every
//! released version are fixed in `schemas/avro/ids.toml` and compiled into this crate, so
//! no schema registry is needed.
//!
//! [`encode`] writes an event with the current (latest released) version of its schema.
//! [`decode`] reads a record written with any released version: it looks up the writer
//! schema by id and resolves the data to the current schema, so records written before a
//! schema change stay readable.
//!
//! The domain types are those of `imbus-core`, which has no serialization of its own; this
//! crate converts them to and from Avro values.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;

use apache_avro::headers::HeaderBuilder;
use apache_avro::{GenericSingleObjectReader, GenericSingleObjectWriter, Schema};
use imbus_core::Event;

mod convert;
mod direct;
mod error;
mod value;

pub use error::{FieldProblem, SchemaError};

/// The first byte of a record in Confluent framing.
pub const MAGIC_BYTE: u8 = 0;

/// The length of the framing header: the magic byte and the 4-byte schema id.
pub const HEADER_LEN: usize = 5;

/// The Avro namespace of the event schemas.
pub const NAMESPACE: &str = "io.imbus.v1";

/// One released version of an event schema, exactly as written to `released/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleasedSchema {
    /// The schema's name (`StanzaReceived`), without namespace.
    pub name: &'static str,
    /// The version, from 1.
    pub version: u32,
    /// The global schema id written in the framing header.
    pub id: u32,
    /// The schema as JSON.
    pub json: &'static str,
}

/// Every released schema version, in the order of `avro/ids.toml`.
pub const RELEASED: &[ReleasedSchema] = include!(concat!(env!("OUT_DIR"), "/released.rs"));

/// The event schemas, one per kind of event on the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventSchema {
    StanzaReceived,
    SessionEvent,
    Delivery,
    OfflineEvent,
    AccountEvent,
    RosterChanged,
    ComplianceRecord,
    ConfigChanged,
    UserDataChanged,
    ArchivedMessage,
    RoomState,
}

impl EventSchema {
    /// Every event schema.
    pub const ALL: [EventSchema; 11] = [
        EventSchema::StanzaReceived,
        EventSchema::SessionEvent,
        EventSchema::Delivery,
        EventSchema::OfflineEvent,
        EventSchema::AccountEvent,
        EventSchema::RosterChanged,
        EventSchema::ComplianceRecord,
        EventSchema::ConfigChanged,
        EventSchema::UserDataChanged,
        EventSchema::ArchivedMessage,
        EventSchema::RoomState,
    ];

    /// The schema's name, which is also the name of its `.avsc` file.
    pub const fn name(self) -> &'static str {
        match self {
            EventSchema::StanzaReceived => "StanzaReceived",
            EventSchema::SessionEvent => "SessionEvent",
            EventSchema::Delivery => "Delivery",
            EventSchema::OfflineEvent => "OfflineEvent",
            EventSchema::AccountEvent => "AccountEvent",
            EventSchema::RosterChanged => "RosterChanged",
            EventSchema::ComplianceRecord => "ComplianceRecord",
            EventSchema::ConfigChanged => "ConfigChanged",
            EventSchema::UserDataChanged => "UserDataChanged",
            EventSchema::ArchivedMessage => "ArchivedMessage",
            EventSchema::RoomState => "RoomState",
        }
    }

    /// The schema with the given name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The schema an event is written with.
    pub const fn of(event: &Event) -> Self {
        match event {
            Event::StanzaReceived(_) => EventSchema::StanzaReceived,
            Event::Session(_) => EventSchema::SessionEvent,
            Event::Delivery(_) => EventSchema::Delivery,
            Event::Offline(_) => EventSchema::OfflineEvent,
            Event::Account(_) => EventSchema::AccountEvent,
            Event::RosterChanged(_) => EventSchema::RosterChanged,
            Event::Compliance(_) => EventSchema::ComplianceRecord,
            Event::ConfigChanged(_) => EventSchema::ConfigChanged,
            Event::UserData(_) => EventSchema::UserDataChanged,
            Event::Archived(_) => EventSchema::ArchivedMessage,
            Event::RoomState(_) => EventSchema::RoomState,
        }
    }

    /// The current version: the latest released one, which [`encode`] writes.
    pub fn current(self) -> Result<&'static ReleasedSchema, SchemaError> {
        Ok(registry()?.current(self).released)
    }
}

/// The released schema version with the given id.
pub fn released_by_id(id: u32) -> Option<&'static ReleasedSchema> {
    RELEASED.iter().find(|r| r.id == id)
}

/// The schema id in a record's framing header.
pub fn schema_id(record: &[u8]) -> Result<u32, SchemaError> {
    match record {
        [MAGIC_BYTE, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        [found, _, _, _, _, ..] => Err(SchemaError::MagicByte { found: *found }),
        _ => Err(SchemaError::Truncated { len: record.len() }),
    }
}

/// Encodes an event with the current version of its schema, in Confluent framing.
pub fn encode(event: &Event) -> Result<Vec<u8>, SchemaError> {
    let mut out = encode_grown(event)?;
    // Exactly the record's size: the embedded log keeps recent records in memory (and a
    // record's buffer is kept whole), so growth room would stay allocated with them.
    out.shrink_to_fit();
    Ok(out)
}

fn encode_grown(event: &Event) -> Result<Vec<u8>, SchemaError> {
    let kind = EventSchema::of(event);
    let current = registry()?.current(kind);
    // The events written for every message are written straight from the domain types
    // while the writer's schema version is the current one.
    if direct::schema_id(event) == Some(current.released.id) {
        let mut out = Vec::new();
        out.push(MAGIC_BYTE);
        out.extend_from_slice(&current.released.id.to_be_bytes());
        if direct::encode(event, &mut out) {
            return Ok(out);
        }
    }
    encode_generic(event)
}

/// Encodes an event through an Avro value of the current version of its schema.
fn encode_generic(event: &Event) -> Result<Vec<u8>, SchemaError> {
    let kind = EventSchema::of(event);
    let current = registry()?.current(kind);
    let value = convert::to_value(event);
    let mut out = Vec::with_capacity(256);
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&current.released.id.to_be_bytes());
    encode_datum(current, &value, &mut out).map_err(|source| SchemaError::Encode {
        schema: kind.name(),
        source,
    })?;
    Ok(out)
}

/// Decodes a record in Confluent framing written with any released schema version.
pub fn decode(record: &[u8]) -> Result<Event, SchemaError> {
    let id = schema_id(record)?;
    // The events written for every message, in the current version of their schema, are
    // read straight into the domain types; anything the direct reader does not take
    // (including every invalid record) goes to the generic decoder.
    let registry = registry()?;
    if let Some(writer) = registry.by_id.get(&id)
        && registry.current(writer.kind).released.id == id
        && let Some(event) = direct::decode(id, record.get(HEADER_LEN..).unwrap_or_default())
    {
        return Ok(event);
    }
    decode_generic(record)
}

/// Decodes a record through an Avro value, resolving an older schema version to the
/// current one.
fn decode_generic(record: &[u8]) -> Result<Event, SchemaError> {
    let id = schema_id(record)?;
    let registry = registry()?;
    let writer = registry
        .by_id
        .get(&id)
        .ok_or(SchemaError::UnknownSchemaId { id })?;
    let current = registry.current(writer.kind);
    // Data written with the current version needs no resolution.
    let reader = (writer.released.id != current.released.id).then_some(&current.schema);
    let body = record.get(HEADER_LEN..).unwrap_or_default();
    decode_body(writer, reader, body)
}

/// Decodes an Avro body written with `writer`, resolving it to `reader` (the current
/// schema) if given.
fn decode_body(
    writer: &Parsed,
    reader: Option<&Schema>,
    body: &[u8],
) -> Result<Event, SchemaError> {
    let mut input = Body {
        rest: body,
        ended: false,
    };
    let value = {
        let mut framed = std::io::Read::chain(&SINGLE_OBJECT_HEADER[..], &mut input);
        writer.reader.read_value(&mut framed)
    }
    .and_then(|value| match reader {
        Some(current) => value.resolve(current),
        None => Ok(value),
    });
    // The Avro decoder reads a string cut short by the end of the data as null instead of
    // failing, so running out of data is detected here.
    if input.ended {
        return Err(SchemaError::BodyTruncated {
            schema: writer.released.name,
            version: writer.released.version,
            id: writer.released.id,
        });
    }
    let value = value.map_err(|source| SchemaError::Body {
        schema: writer.released.name,
        version: writer.released.version,
        id: writer.released.id,
        source,
    })?;
    if !input.rest.is_empty() {
        return Err(SchemaError::TrailingBytes {
            schema: writer.released.name,
            version: writer.released.version,
            id: writer.released.id,
            count: input.rest.len(),
        });
    }
    convert::from_value(writer.kind, value)
}

/// The Avro body being decoded; remembers whether the decoder asked for more bytes than
/// there are.
struct Body<'a> {
    rest: &'a [u8],
    ended: bool,
}

impl std::io::Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !buf.is_empty() && self.rest.is_empty() {
            self.ended = true;
        }
        self.rest.read(buf)
    }
}

/// A parsed released schema.
struct Parsed {
    kind: EventSchema,
    released: &'static ReleasedSchema,
    schema: Schema,
    /// A decoder with the schema's named types resolved once (`from_avro_datum` resolves
    /// them again for every record).
    reader: GenericSingleObjectReader,
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("kind", &self.kind)
            .field("released", &self.released.id)
            .finish_non_exhaustive()
    }
}

/// apache-avro's single-object reader and writer frame each datum with a header of 10 to
/// 20 bytes; imbus uses its own (Confluent) framing, so the header is a fixed placeholder
/// that is stripped when writing and supplied when reading.
const SINGLE_OBJECT_HEADER: [u8; 10] = [0; 10];

struct PlaceholderHeader;

impl HeaderBuilder for PlaceholderHeader {
    fn build_header(&self) -> Vec<u8> {
        SINGLE_OBJECT_HEADER.to_vec()
    }
}

thread_local! {
    /// Per thread, an encoder per schema id with the schema's named types resolved once.
    static WRITERS: RefCell<HashMap<u32, GenericSingleObjectWriter>> =
        RefCell::new(HashMap::new());
}

/// Encodes `value` with the current schema `current` into `out` (after what is there).
fn encode_datum(
    current: &Parsed,
    value: &apache_avro::types::Value,
    out: &mut Vec<u8>,
) -> Result<(), apache_avro::Error> {
    WRITERS.with(|writers| {
        let mut writers = writers.borrow_mut();
        let writer = match writers.entry(current.released.id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                GenericSingleObjectWriter::new_with_capacity_and_header_builder(
                    &current.schema,
                    256,
                    PlaceholderHeader,
                )?,
            ),
        };
        let start = out.len();
        writer.write_value_ref(value, out)?;
        // Drop the placeholder header.
        out.drain(start..start + SINGLE_OBJECT_HEADER.len());
        Ok(())
    })
}

/// The parsed schema table.
#[derive(Debug)]
struct Registry {
    by_id: HashMap<u32, Parsed>,
    /// For each [`EventSchema`] (by its index in [`EventSchema::ALL`]), the id of its
    /// current version.
    current_ids: [u32; EventSchema::ALL.len()],
}

impl Registry {
    fn load() -> Result<Self, String> {
        let mut by_id = HashMap::new();
        let mut current: [Option<&'static ReleasedSchema>; EventSchema::ALL.len()] =
            [None; EventSchema::ALL.len()];
        for released in RELEASED {
            let kind = EventSchema::from_name(released.name).ok_or_else(|| {
                format!(
                    "ids.toml names schema {:?}, which is not an imbus event",
                    released.name
                )
            })?;
            let schema = Schema::parse_str(released.json).map_err(|e| {
                format!(
                    "{} v{} is not a valid Avro schema: {e}",
                    released.name, released.version
                )
            })?;
            let full_name = schema.name().map(|n| n.fullname(None));
            let expected = format!("{NAMESPACE}.{}", released.name);
            if full_name.as_deref() != Some(expected.as_str()) {
                return Err(format!(
                    "{} v{} defines {full_name:?}, expected the record {expected}",
                    released.name, released.version
                ));
            }
            let reader = GenericSingleObjectReader::new_with_header_builder(
                schema.clone(),
                PlaceholderHeader,
            )
            .map_err(|e| {
                format!(
                    "{} v{}: cannot resolve the schema's named types: {e}",
                    released.name, released.version
                )
            })?;
            let parsed = Parsed {
                kind,
                released,
                schema,
                reader,
            };
            if by_id.insert(released.id, parsed).is_some() {
                return Err(format!("schema id {} is used twice", released.id));
            }
            let slot = &mut current[kind as usize];
            if slot.is_none_or(|c| c.version < released.version) {
                *slot = Some(released);
            }
        }
        let mut current_ids = [0; EventSchema::ALL.len()];
        for kind in EventSchema::ALL {
            current_ids[kind as usize] = current[kind as usize]
                .ok_or_else(|| format!("{} has no released version", kind.name()))?
                .id;
        }
        Ok(Self { by_id, current_ids })
    }

    fn current(&self, kind: EventSchema) -> &Parsed {
        // `load` made sure every kind has a current id that is in `by_id`.
        &self.by_id[&self.current_ids[kind as usize]]
    }
}

static REGISTRY: LazyLock<Result<Registry, String>> = LazyLock::new(Registry::load);

fn registry() -> Result<&'static Registry, SchemaError> {
    REGISTRY
        .as_ref()
        .map_err(|e| SchemaError::Registry(e.clone()))
}

/// For tests: the parsed current schema of a kind.
#[cfg(test)]
pub(crate) fn current_schema(kind: EventSchema) -> &'static Schema {
    &registry().unwrap().current(kind).schema
}

#[cfg(test)]
mod tests;
