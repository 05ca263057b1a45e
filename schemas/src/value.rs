//! Building and taking apart Avro [`Value`]s, with errors that name the schema and field.

use apache_avro::schema::SchemaKind;
use apache_avro::types::Value;
use imbus_core::{BareJid, FullJid, Jid, Timestamp, Uuid};

use crate::error::{FieldProblem, SchemaError};

// ---------------------------------------------------------------------------------------
// Writing

pub(crate) fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

pub(crate) fn opt_string(s: Option<&str>) -> Value {
    match s {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(string(s))),
    }
}

pub(crate) fn timestamp(t: Timestamp) -> Value {
    Value::TimestampMicros(t.as_micros())
}

pub(crate) fn opt_timestamp(t: Option<Timestamp>) -> Value {
    match t {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(t) => Value::Union(1, Box::new(timestamp(t))),
    }
}

pub(crate) fn uuid(u: Uuid) -> Value {
    Value::Uuid(u)
}

/// An enum value by symbol (the encoder finds the symbol's index in the schema).
pub(crate) fn symbol(s: &'static str) -> Value {
    Value::String(s.to_owned())
}

pub(crate) fn record(fields: Vec<(&'static str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    )
}

/// An optional (`["null", T]`) record field.
pub(crate) fn opt_record(fields: Option<Vec<(&'static str, Value)>>) -> Value {
    match fields {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(fields) => Value::Union(1, Box::new(record(fields))),
    }
}

/// An optional (`["null", "long"]`) number.
pub(crate) fn opt_long(n: Option<i64>) -> Value {
    match n {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(n) => Value::Union(1, Box::new(Value::Long(n))),
    }
}

/// An array of records.
pub(crate) fn records(items: Vec<Vec<(&'static str, Value)>>) -> Value {
    Value::Array(items.into_iter().map(record).collect())
}

// ---------------------------------------------------------------------------------------
// Reading

fn kind(value: &Value) -> String {
    format!("{:?}", SchemaKind::from(value)).to_lowercase()
}

/// The fields of a decoded record, taken out one by one.
pub(crate) struct Fields {
    schema: &'static str,
    path: String,
    fields: Vec<(String, Value)>,
}

impl Fields {
    /// The fields of a top-level record.
    pub(crate) fn top(schema: &'static str, value: Value) -> Result<Self, SchemaError> {
        match value {
            Value::Record(fields) => Ok(Self {
                schema,
                path: String::new(),
                fields,
            }),
            other => Err(SchemaError::Field {
                schema,
                field: "(record)".to_owned(),
                problem: FieldProblem::WrongType {
                    expected: "record",
                    found: kind(&other),
                },
            }),
        }
    }

    fn path_of(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    pub(crate) fn error(&self, field: &str, problem: FieldProblem) -> SchemaError {
        SchemaError::Field {
            schema: self.schema,
            field: self.path_of(field),
            problem,
        }
    }

    fn wrong(&self, field: &str, expected: &'static str, found: &Value) -> SchemaError {
        self.error(
            field,
            FieldProblem::WrongType {
                expected,
                found: kind(found),
            },
        )
    }

    fn take(&mut self, field: &str) -> Result<Value, SchemaError> {
        match self.fields.iter().position(|(name, _)| name == field) {
            Some(i) => Ok(self.fields.swap_remove(i).1),
            None => Err(self.error(field, FieldProblem::Missing)),
        }
    }

    /// Takes an optional (`["null", T]`) field: `None` for null.
    fn take_opt(&mut self, field: &str) -> Result<Option<Value>, SchemaError> {
        Ok(match self.take(field)? {
            Value::Null => None,
            Value::Union(_, inner) => match *inner {
                Value::Null => None,
                v => Some(v),
            },
            v => Some(v),
        })
    }

    fn as_string(&self, field: &str, value: Value) -> Result<String, SchemaError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(self.wrong(field, "string", &other)),
        }
    }

    pub(crate) fn string(&mut self, field: &str) -> Result<String, SchemaError> {
        let v = self.take(field)?;
        self.as_string(field, v)
    }

    pub(crate) fn opt_string(&mut self, field: &str) -> Result<Option<String>, SchemaError> {
        match self.take_opt(field)? {
            None => Ok(None),
            Some(v) => self.as_string(field, v).map(Some),
        }
    }

    pub(crate) fn strings(&mut self, field: &str) -> Result<Vec<String>, SchemaError> {
        match self.take(field)? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| self.as_string(field, v))
                .collect(),
            other => Err(self.wrong(field, "array of strings", &other)),
        }
    }

    pub(crate) fn boolean(&mut self, field: &str) -> Result<bool, SchemaError> {
        match self.take(field)? {
            Value::Boolean(b) => Ok(b),
            other => Err(self.wrong(field, "boolean", &other)),
        }
    }

    pub(crate) fn int(&mut self, field: &str) -> Result<i32, SchemaError> {
        match self.take(field)? {
            Value::Int(i) => Ok(i),
            other => Err(self.wrong(field, "int", &other)),
        }
    }

    /// An optional (`["null", "long"]`) number.
    pub(crate) fn opt_long(&mut self, field: &str) -> Result<Option<i64>, SchemaError> {
        match self.take_opt(field)? {
            None => Ok(None),
            Some(Value::Long(n)) => Ok(Some(n)),
            Some(Value::Int(n)) => Ok(Some(i64::from(n))),
            Some(other) => Err(self.wrong(field, "long", &other)),
        }
    }

    /// An array of records, each with its own fields (`field[i]` in errors).
    pub(crate) fn records(&mut self, field: &str) -> Result<Vec<Fields>, SchemaError> {
        match self.take(field)? {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Record(fields) => Ok(Fields {
                        schema: self.schema,
                        path: format!("{}[{i}]", self.path_of(field)),
                        fields,
                    }),
                    other => Err(self.wrong(field, "array of records", &other)),
                })
                .collect(),
            other => Err(self.wrong(field, "array of records", &other)),
        }
    }

    pub(crate) fn bytes(&mut self, field: &str) -> Result<Vec<u8>, SchemaError> {
        match self.take(field)? {
            Value::Bytes(b) => Ok(b),
            other => Err(self.wrong(field, "bytes", &other)),
        }
    }

    fn as_timestamp(&self, field: &str, value: Value) -> Result<Timestamp, SchemaError> {
        match value {
            Value::TimestampMicros(t) | Value::Long(t) => Ok(Timestamp::from_micros(t)),
            other => Err(self.wrong(field, "timestamp-micros", &other)),
        }
    }

    pub(crate) fn timestamp(&mut self, field: &str) -> Result<Timestamp, SchemaError> {
        let v = self.take(field)?;
        self.as_timestamp(field, v)
    }

    pub(crate) fn opt_timestamp(&mut self, field: &str) -> Result<Option<Timestamp>, SchemaError> {
        match self.take_opt(field)? {
            None => Ok(None),
            Some(v) => self.as_timestamp(field, v).map(Some),
        }
    }

    pub(crate) fn uuid(&mut self, field: &str) -> Result<Uuid, SchemaError> {
        match self.take(field)? {
            Value::Uuid(u) => Ok(u),
            Value::String(s) => Uuid::parse_str(&s).map_err(|source| {
                self.error(
                    field,
                    FieldProblem::Uuid {
                        value: s.clone(),
                        source,
                    },
                )
            }),
            other => Err(self.wrong(field, "uuid", &other)),
        }
    }

    /// An enum symbol; the caller maps it to the domain value and reports unknown ones
    /// with [`Fields::unknown_symbol`].
    pub(crate) fn symbol(&mut self, field: &str) -> Result<String, SchemaError> {
        match self.take(field)? {
            Value::Enum(_, s) | Value::String(s) => Ok(s),
            other => Err(self.wrong(field, "enum", &other)),
        }
    }

    pub(crate) fn unknown_symbol(&self, field: &str, symbol: String) -> SchemaError {
        self.error(field, FieldProblem::UnknownSymbol { symbol })
    }

    fn jid_error(
        &self,
        field: &str,
        value: String,
        expected: &'static str,
        source: imbus_core::jid::Error,
    ) -> SchemaError {
        self.error(
            field,
            FieldProblem::Jid {
                value,
                expected,
                source,
            },
        )
    }

    pub(crate) fn jid(&mut self, field: &str) -> Result<Jid, SchemaError> {
        let s = self.string(field)?;
        Jid::new(&s).map_err(|e| self.jid_error(field, s, "JID", e))
    }

    pub(crate) fn opt_jid(&mut self, field: &str) -> Result<Option<Jid>, SchemaError> {
        match self.opt_string(field)? {
            None => Ok(None),
            Some(s) => Jid::new(&s)
                .map(Some)
                .map_err(|e| self.jid_error(field, s, "JID", e)),
        }
    }

    pub(crate) fn bare_jid(&mut self, field: &str) -> Result<BareJid, SchemaError> {
        let s = self.string(field)?;
        BareJid::new(&s).map_err(|e| self.jid_error(field, s, "bare JID", e))
    }

    pub(crate) fn opt_bare_jid(&mut self, field: &str) -> Result<Option<BareJid>, SchemaError> {
        match self.opt_string(field)? {
            None => Ok(None),
            Some(s) => BareJid::new(&s)
                .map(Some)
                .map_err(|e| self.jid_error(field, s, "bare JID", e)),
        }
    }

    pub(crate) fn full_jid(&mut self, field: &str) -> Result<FullJid, SchemaError> {
        let s = self.string(field)?;
        FullJid::new(&s).map_err(|e| self.jid_error(field, s, "full JID", e))
    }

    /// A full JID stored as a bare JID field and a resource field.
    pub(crate) fn split_full_jid(
        &mut self,
        bare_field: &str,
        resource_field: &str,
    ) -> Result<FullJid, SchemaError> {
        let bare = self.bare_jid(bare_field)?;
        let resource = self.string(resource_field)?;
        bare.with_resource_str(&resource)
            .map_err(|e| self.jid_error(resource_field, resource, "resource", e))
    }

    /// A nested record field.
    pub(crate) fn record(&mut self, field: &str) -> Result<Fields, SchemaError> {
        match self.take(field)? {
            Value::Record(fields) => Ok(Fields {
                schema: self.schema,
                path: self.path_of(field),
                fields,
            }),
            other => Err(self.wrong(field, "record", &other)),
        }
    }

    /// An optional (`["null", record]`) field.
    pub(crate) fn opt_record(&mut self, field: &str) -> Result<Option<Fields>, SchemaError> {
        match self.take_opt(field)? {
            None => Ok(None),
            Some(Value::Record(fields)) => Ok(Some(Fields {
                schema: self.schema,
                path: self.path_of(field),
                fields,
            })),
            Some(other) => Err(self.wrong(field, "record", &other)),
        }
    }

    /// The one set field among `variants`, each an optional record: its index in
    /// `variants` and its fields. This is how an event with several variants is written:
    /// one optional field per variant, exactly one of them set.
    pub(crate) fn one_of(
        &mut self,
        variants: &[&'static str],
    ) -> Result<(usize, Fields), SchemaError> {
        let mut set = None;
        for (i, field) in variants.iter().enumerate() {
            if let Some(fields) = self.opt_record(field)? {
                if let Some((first, _)) = set {
                    return Err(self.error(
                        field,
                        FieldProblem::SeveralVariants {
                            first: variants[first],
                        },
                    ));
                }
                set = Some((i, fields));
            }
        }
        set.ok_or_else(|| {
            self.error(
                &variants.join("|"),
                FieldProblem::NoVariant {
                    variants: variants.join(", "),
                },
            )
        })
    }
}
