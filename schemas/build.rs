//! Turns `avro/ids.toml` into the table of released schemas compiled into the crate, so
//! the id table and the released `.avsc` files are the only source of truth.

use std::collections::BTreeSet;
use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdTable {
    released: Vec<Released>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Released {
    name: String,
    version: u32,
    id: u32,
}

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let avro_dir = manifest_dir.join("avro");
    println!("cargo::rerun-if-changed={}", avro_dir.display());

    let ids_path = avro_dir.join("ids.toml");
    let text = std::fs::read_to_string(&ids_path)
        .map_err(|e| format!("cannot read {}: {e}", ids_path.display()))?;
    let table: IdTable =
        toml::from_str(&text).map_err(|e| format!("{} is invalid: {e}", ids_path.display()))?;

    let mut ids = BTreeSet::new();
    let mut versions = BTreeSet::new();
    let mut out = String::from("&[\n");
    for r in &table.released {
        let name_ok = !r.name.is_empty() && r.name.bytes().all(|b| b.is_ascii_alphanumeric());
        if !name_ok {
            return Err(format!(
                "{}: schema name {:?} is not alphanumeric",
                ids_path.display(),
                r.name
            )
            .into());
        }
        if r.version == 0 || r.id == 0 || r.id > i32::MAX as u32 {
            return Err(format!(
                "{}: {} v{} id {}: versions start at 1 and ids are 1 to 2147483647",
                ids_path.display(),
                r.name,
                r.version,
                r.id
            )
            .into());
        }
        if !ids.insert(r.id) {
            return Err(format!("{}: schema id {} is used twice", ids_path.display(), r.id).into());
        }
        if !versions.insert((r.name.clone(), r.version)) {
            return Err(format!(
                "{}: {} v{} is listed twice",
                ids_path.display(),
                r.name,
                r.version
            )
            .into());
        }
        let file = avro_dir
            .join("released")
            .join(&r.name)
            .join(format!("v{}.avsc", r.version));
        if !file.is_file() {
            return Err(format!(
                "{}: {} v{} (id {}) has no schema file {}",
                ids_path.display(),
                r.name,
                r.version,
                r.id,
                file.display()
            )
            .into());
        }
        let path = file.to_str().ok_or("the crate path is not UTF-8")?;
        writeln!(
            out,
            "    ReleasedSchema {{ name: {:?}, version: {}, id: {}, json: include_str!({:?}) }},",
            r.name, r.version, r.id, path
        )?;
    }
    out.push_str("]\n");

    let out_path = PathBuf::from(std::env::var("OUT_DIR")?).join("released.rs");
    std::fs::write(&out_path, out)?;
    Ok(())
}
