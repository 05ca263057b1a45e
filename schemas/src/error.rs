use imbus_core::ValidationError;

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Fewer bytes than the 5-byte framing header.
    #[error(
        "a record of {len} bytes is too short: Confluent framing needs a magic byte and a 4-byte schema id"
    )]
    Truncated { len: usize },
    /// The first byte is not Confluent's magic byte.
    #[error(
        "the record starts with byte {found:#04x}, not the magic byte 0x00 of Confluent framing: it is not an imbus event"
    )]
    MagicByte { found: u8 },
    /// The schema id is not in the table of released schemas.
    #[error(
        "unknown schema id {id}: no released imbus schema has this id (see schemas/avro/ids.toml); the record was written by a newer imbus or by another producer"
    )]
    UnknownSchemaId { id: u32 },
    /// The Avro body does not decode with the writer schema its id names, or cannot be
    /// resolved to the current schema.
    #[error("{schema} v{version} (schema id {id}): the Avro body cannot be read: {source}")]
    Body {
        schema: &'static str,
        version: u32,
        id: u32,
        #[source]
        source: apache_avro::Error,
    },
    /// The Avro body ends before the record does.
    #[error("{schema} v{version} (schema id {id}): the Avro body is cut short")]
    BodyTruncated {
        schema: &'static str,
        version: u32,
        id: u32,
    },
    /// The Avro body is shorter than the record.
    #[error("{schema} v{version} (schema id {id}): {count} bytes are left after the Avro body")]
    TrailingBytes {
        schema: &'static str,
        version: u32,
        id: u32,
        count: usize,
    },
    /// A decoded field has no valid domain value.
    #[error("{schema}: field {field}: {problem}")]
    Field {
        schema: &'static str,
        /// Dotted path from the top-level record, with union branches by name
        /// (`event.SessionBound.presence.priority`).
        field: String,
        #[source]
        problem: FieldProblem,
    },
    /// An event did not match its schema when encoding.
    #[error("{schema}: the event does not match its schema: {source}")]
    Encode {
        schema: &'static str,
        #[source]
        source: apache_avro::Error,
    },
    /// The schema table compiled into this crate is inconsistent (a build of a broken
    /// checkout; `cargo test -p imbus-schemas` names the problem).
    #[error("the compiled-in schema table is invalid: {0}")]
    Registry(String),
}

/// What is wrong with one decoded field.
#[derive(Debug, thiserror::Error)]
pub enum FieldProblem {
    #[error("missing")]
    Missing,
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    /// An enum symbol this version does not know. Writers never write the `UNKNOWN`
    /// symbols; a reader sees one when a newer schema version added a symbol.
    #[error(
        "value {symbol:?} is not known to this version of imbus (it was written with a newer schema version)"
    )]
    UnknownSymbol { symbol: String },
    /// None of the optional fields that say which variant an event is was set: the event
    /// is of a variant added by a newer schema version.
    #[error("none of {variants} is set: the event is of a kind added by a newer schema version")]
    NoVariant { variants: String },
    /// More than one of the optional fields that say which variant an event is was set.
    #[error("is set together with {first}; only one may be")]
    SeveralVariants { first: &'static str },
    #[error("{value} is outside {range}")]
    OutOfRange { value: i64, range: &'static str },
    #[error("{value:?} is not a valid {expected}: {source}")]
    Jid {
        value: String,
        expected: &'static str,
        #[source]
        source: imbus_core::jid::Error,
    },
    #[error("{value:?} is not a UUID: {source}")]
    Uuid {
        value: String,
        #[source]
        source: imbus_core::uuid::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}
