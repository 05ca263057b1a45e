//! The rules that keep every record on the log readable: released schemas never change,
//! every version has a unique id, the current schema is the latest released one, and it
//! can read data written with every released version.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use imbus_schemas::{EventSchema, RELEASED, ReleasedSchema, decode, encode, released_by_id};

fn avro_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("avro")
}

fn parse_json(text: &str, what: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} is not valid JSON: {e}"))
}

fn parse(text: &str, what: &str) -> Schema {
    Schema::parse_str(text).unwrap_or_else(|e| panic!("{what} is not a valid Avro schema: {e}"))
}

fn versions(name: &str) -> Vec<&'static ReleasedSchema> {
    let mut v: Vec<_> = RELEASED.iter().filter(|r| r.name == name).collect();
    v.sort_by_key(|r| r.version);
    v
}

#[test]
fn ids_and_versions_are_unique_and_versions_are_contiguous() {
    let mut ids = BTreeSet::new();
    for r in RELEASED {
        assert!(
            ids.insert(r.id),
            "schema id {} is used twice in ids.toml",
            r.id
        );
        assert_eq!(released_by_id(r.id), Some(r));
    }
    for kind in EventSchema::ALL {
        let numbers: Vec<u32> = versions(kind.name()).iter().map(|r| r.version).collect();
        let expected: Vec<u32> = (1..=numbers.len() as u32).collect();
        assert_eq!(
            numbers,
            expected,
            "{}: released versions must be 1, 2, 3, … without gaps or repeats",
            kind.name()
        );
    }
    let names: BTreeSet<&str> = RELEASED.iter().map(|r| r.name).collect();
    let kinds: BTreeSet<&str> = EventSchema::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names, kinds, "ids.toml must list exactly the event schemas");
}

#[test]
fn the_schema_files_are_exactly_the_event_schemas() {
    let mut current = BTreeSet::new();
    for entry in std::fs::read_dir(avro_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "avsc") {
            current.insert(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    let kinds: BTreeSet<String> = EventSchema::ALL
        .iter()
        .map(|k| k.name().to_owned())
        .collect();
    assert_eq!(
        current, kinds,
        "avro/*.avsc must be one file per event schema"
    );

    // Every released file has an id: a file in released/ missing from ids.toml is a
    // release that was not finished.
    let listed: BTreeSet<PathBuf> = RELEASED
        .iter()
        .map(|r| {
            avro_dir()
                .join("released")
                .join(r.name)
                .join(format!("v{}.avsc", r.version))
        })
        .collect();
    for dir in std::fs::read_dir(avro_dir().join("released")).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let file = file.unwrap().path();
            assert!(
                listed.contains(&file),
                "{} has no entry in avro/ids.toml",
                file.display()
            );
        }
    }
}

#[test]
fn released_files_are_what_the_crate_was_built_with() {
    for r in RELEASED {
        let path = avro_dir()
            .join("released")
            .join(r.name)
            .join(format!("v{}.avsc", r.version));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r.json,
            "{}",
            path.display()
        );
    }
}

#[test]
fn current_schema_equals_its_latest_released_version() {
    for kind in EventSchema::ALL {
        let name = kind.name();
        let path = avro_dir().join(format!("{name}.avsc"));
        let text = std::fs::read_to_string(&path).unwrap();
        let latest = *versions(name).last().unwrap();
        let next_id = latest.id + 1;
        assert!(
            parse_json(&text, &path.display().to_string()) == parse_json(latest.json, name),
            "\n{path} differs from its latest released version v{v} \
             (avro/released/{name}/v{v}.avsc).\nReleased schemas never change, because \
             records written with them stay on the log. To release the change:\n  \
             cp avro/{name}.avsc avro/released/{name}/v{n}.avsc\n  \
             and add to avro/ids.toml:\n  [[released]]\n  name = \"{name}\"\n  \
             version = {n}\n  id = {next_id}\n(check that id {next_id} is free), then run \
             `IMBUS_WRITE_FIXTURES=1 cargo test -p imbus-schemas` once.\n",
            path = path.display(),
            v = latest.version,
            n = latest.version + 1,
        );
    }
}

#[test]
fn the_current_schema_reads_every_released_version() {
    for kind in EventSchema::ALL {
        let current = kind.current().unwrap();
        let reader = parse(current.json, kind.name());
        for older in versions(kind.name()) {
            let writer = parse(older.json, &format!("{} v{}", older.name, older.version));
            if let Err(e) = SchemaCompatibility::can_read(&writer, &reader) {
                panic!(
                    "{} v{} (the current version) cannot read data written with v{}: {e}",
                    kind.name(),
                    current.version,
                    older.version
                );
            }
        }
    }
}

/// Adds a field to the top-level record of a schema.
fn with_field(schema: &str, field: serde_json::Value) -> Schema {
    let mut json = parse_json(schema, "schema");
    json["fields"].as_array_mut().unwrap().push(field);
    parse(&json.to_string(), "changed schema")
}

#[test]
fn the_checker_refuses_incompatible_changes() {
    let current = EventSchema::StanzaReceived.current().unwrap().json;
    let old = parse(current, "StanzaReceived");

    // A new field without a default: old data has no value for it.
    let no_default = with_field(
        current,
        serde_json::json!({"name": "priority", "type": "int", "doc": "d"}),
    );
    assert!(SchemaCompatibility::can_read(&old, &no_default).is_err());

    // The same field with a default is a compatible change.
    let with_default = with_field(
        current,
        serde_json::json!({"name": "priority", "type": "int", "default": 0, "doc": "d"}),
    );
    SchemaCompatibility::can_read(&old, &with_default).unwrap();

    // Removing an enum symbol: old data may carry it.
    let mut json = parse_json(current, "StanzaReceived");
    let kind = json["fields"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "kind")
        .unwrap();
    kind["type"]["symbols"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s != "IQ");
    let fewer_symbols = parse(&json.to_string(), "changed schema");
    assert!(SchemaCompatibility::can_read(&old, &fewer_symbols).is_err());

    // Changing a field's type.
    let mut json = parse_json(current, "StanzaReceived");
    for f in json["fields"].as_array_mut().unwrap() {
        if f["name"] == "received_at" {
            f["type"] = "string".into();
        }
    }
    let retyped = parse(&json.to_string(), "changed schema");
    assert!(SchemaCompatibility::can_read(&old, &retyped).is_err());
}

fn fixture_path(r: &ReleasedSchema) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(r.name)
        .join(format!("v{}.hex", r.version))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Records written by every released version, kept as files: they must decode with the
/// current schema forever. A version's fixture is written once, when it is released, with
/// `IMBUS_WRITE_FIXTURES=1 cargo test -p imbus-schemas`; it is never rewritten.
#[test]
fn records_written_by_every_released_version_decode() {
    let samples = common::samples();
    let mut by_kind: BTreeMap<EventSchema, Vec<_>> = BTreeMap::new();
    for event in &samples {
        // Fixtures are kept small: the 1 MiB samples are covered by the round-trip tests.
        if encode(event).unwrap().len() < 10_000 {
            by_kind
                .entry(EventSchema::of(event))
                .or_default()
                .push(event);
        }
    }
    let write = std::env::var_os("IMBUS_WRITE_FIXTURES").is_some();
    for r in RELEASED {
        let kind = EventSchema::from_name(r.name).unwrap();
        let current = kind.current().unwrap();
        let path = fixture_path(r);
        if !path.exists() {
            assert!(
                write && r.id == current.id,
                "{} is missing: run `IMBUS_WRITE_FIXTURES=1 cargo test -p imbus-schemas` \
                 when releasing {} v{}",
                path.display(),
                r.name,
                r.version
            );
            let lines: String = by_kind[&kind]
                .iter()
                .map(|e| to_hex(&encode(e).unwrap()) + "\n")
                .collect();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, lines).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<Vec<u8>> = text.lines().map(from_hex).collect();
        assert!(!records.is_empty(), "{} is empty", path.display());
        for (i, record) in records.iter().enumerate() {
            assert_eq!(
                imbus_schemas::schema_id(record).unwrap(),
                r.id,
                "{} line {}",
                path.display(),
                i + 1
            );
            let event =
                decode(record).unwrap_or_else(|e| panic!("{} line {}: {e}", path.display(), i + 1));
            assert_eq!(EventSchema::of(&event), kind);
            if r.id == current.id {
                // Written with the current version: the samples, exactly.
                assert_eq!(
                    &event,
                    by_kind[&kind][i],
                    "{} line {}",
                    path.display(),
                    i + 1
                );
            }
        }
    }
}
