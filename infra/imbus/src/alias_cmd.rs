//! `imbus alias …`: list and change the chat node aliases.
//!
//! Through the admin API of the running server found via the data directory's run file;
//! when no server runs, on the `config` topic directly (the server applies it at start).

use std::process::ExitCode;

use anyhow::Context;
use imbus_config::Config;
use serde_json::{Value, json};

use crate::aliases::{Change, table_json};
use crate::cli::{AliasCommand, AliasNodeCommand, OnOff};
use crate::client::{answer, running_server, with_offline_log};

pub async fn run(config: Config, cmd: AliasCommand) -> anyhow::Result<ExitCode> {
    let (change, done) = match cmd {
        AliasCommand::List => {
            let table = list(&config).await?;
            print_table(&table);
            return Ok(ExitCode::SUCCESS);
        }
        AliasCommand::Add { alias, node } => {
            let done = format!(
                "alias {alias} added to node {}",
                node.unwrap_or(config.node_id)
            );
            (Change::Add { alias, node }, done)
        }
        AliasCommand::Edit { alias, to, node } => {
            let done = match (&to, node) {
                (Some(to), Some(node)) => format!("alias {alias} is now {to} on node {node}"),
                (Some(to), None) => format!("alias {alias} is now {to}"),
                (None, Some(node)) => format!("alias {alias} moved to node {node}"),
                (None, None) => format!("alias {alias} unchanged"),
            };
            (Change::Edit { alias, to, node }, done)
        }
        AliasCommand::Del { alias } => {
            let done = format!("alias {alias} deleted");
            (Change::Delete { alias }, done)
        }
        AliasCommand::System { state } => {
            let on = state == OnOff::On;
            let done = format!("system-managed aliases {}", if on { "on" } else { "off" });
            (Change::System(on), done)
        }
        AliasCommand::Node(AliasNodeCommand::Add { id }) => {
            (Change::NodeAdd(id), format!("chat node {id} added"))
        }
        AliasCommand::Node(AliasNodeCommand::Del { id }) => {
            (Change::NodeDelete(id), format!("chat node {id} deleted"))
        }
    };
    let (table, offline) = change_table(&config, change).await?;
    println!("{done}");
    if offline {
        println!(
            "no server is running: the change is recorded on the log and applies at the next start"
        );
    }
    print_table(&table);
    Ok(ExitCode::SUCCESS)
}

/// The table: the running server's, or the log's.
async fn list(config: &Config) -> anyhow::Result<Value> {
    if let Some(admin) = running_server(config).await? {
        return answer(
            admin
                .http
                .get(format!("{}/aliases", admin.base))
                .bearer_auth(&admin.token)
                .send()
                .await?,
        )
        .await;
    }
    with_offline_log(config, |log| {
        let config = config.clone();
        async move {
            let (fold, _) = crate::live::load(log.as_ref(), config).await?;
            Ok(table_json(&fold.current().chat_nodes))
        }
    })
    .await
}

/// Makes `change` through the running server, or on the log when none runs (then
/// `true`). Returns the table afterwards.
async fn change_table(config: &Config, change: Change) -> anyhow::Result<(Value, bool)> {
    if let Some(admin) = running_server(config).await? {
        let base = format!("{}/aliases", admin.base);
        let request = match &change {
            Change::Add { alias, node } => admin
                .http
                .post(&base)
                .json(&json!({ "alias": alias, "node": node })),
            Change::Edit { alias, to, node } => admin
                .http
                .put(format!("{base}/{}", path_segment(alias)))
                .json(&json!({ "to": to, "node": node })),
            Change::Delete { alias } => {
                admin.http.delete(format!("{base}/{}", path_segment(alias)))
            }
            Change::System(on) => admin
                .http
                .put(format!("{base}/system"))
                .json(&json!({ "on": on })),
            Change::NodeAdd(id) => admin
                .http
                .post(format!("{base}/nodes"))
                .json(&json!({ "id": id })),
            Change::NodeDelete(id) => admin.http.delete(format!("{base}/nodes/{id}")),
        };
        let body = answer(request.bearer_auth(&admin.token).send().await?).await?;
        return Ok((body, false));
    }
    let table = with_offline_log(config, |log| {
        let config = config.clone();
        async move {
            let changed = crate::aliases::apply(log.as_ref(), &config, &change, "imbus-cli")
                .await
                .map_err(anyhow::Error::from)?;
            Ok(table_json(&changed.table))
        }
    })
    .await
    .context("the change was not made")?;
    Ok((table, true))
}

/// `text` as one URL path segment (percent-encoded beyond letters, digits, '.', '-').
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn print_table(table: &Value) {
    let on = table
        .get("system_aliases")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    println!("system-managed aliases: {}", if on { "on" } else { "off" });
    let nodes: Vec<String> = table
        .get("nodes")
        .and_then(Value::as_array)
        .map(|n| n.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    println!(
        "chat nodes: {}",
        if nodes.is_empty() {
            "none".to_owned()
        } else {
            nodes.join(", ")
        }
    );
    let aliases = table
        .get("aliases")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if aliases.is_empty() {
        println!("no aliases");
        return;
    }
    let width = aliases
        .iter()
        .filter_map(|a| a.get("alias").and_then(Value::as_str))
        .map(str::len)
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:width$}  {:>5}  kind", "alias", "node");
    for a in &aliases {
        println!(
            "{:width$}  {:>5}  {}",
            a.get("alias").and_then(Value::as_str).unwrap_or(""),
            a.get("node").and_then(Value::as_u64).unwrap_or(0),
            a.get("kind").and_then(Value::as_str).unwrap_or(""),
        );
    }
}
