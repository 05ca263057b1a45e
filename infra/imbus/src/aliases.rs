//! Chat node aliases on the log: the table (`rooms.aliases` on the `config` topic, see
//! `imbus_config::aliases`) as chat nodes register at start and as `imbus alias` and the
//! admin API (`/admin/v1/aliases`) change it. Every change rewrites the whole table under
//! one key, so each change is one record (atomic) and compaction keeps the latest table;
//! every process folds it with the other live settings and applies it at once (the router
//! forwards every alias to the rooms processor, which serves every alias).
//!
//! | method and path | does |
//! |---|---|
//! | `GET /admin/v1/aliases` | the table: `{"system_aliases", "nodes", "aliases": [{"alias", "node", "kind"}]}` |
//! | `POST /admin/v1/aliases` (JSON `{"alias", "node"?}`) | add a manual alias (to this server's node by default) |
//! | `PUT /admin/v1/aliases/{alias}` (JSON `{"to"?, "node"?}`) | rename a manual alias and/or move it to another node |
//! | `DELETE /admin/v1/aliases/{alias}` | delete a manual alias |
//! | `PUT /admin/v1/aliases/system` (JSON `{"on"}`) | system-managed aliases on or off |
//! | `POST /admin/v1/aliases/nodes` (JSON `{"id"}`) | add a chat node |
//! | `DELETE /admin/v1/aliases/nodes/{id}` | delete a chat node (and its system alias) |
//!
//! Each change answers with the table once it is durable on the log and this server
//! follows it (or after 5 s, when changes keep coming).

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use imbus_config::Config;
use imbus_config::aliases::{AliasError, ChatNodes};
use imbus_log::Log;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::live::{ChangeError, Fold, LiveConfig, append_change};

/// The setting that holds the table.
pub const KEY: &str = "rooms.aliases";

/// One change to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A manual alias for `node` (default: this server's node).
    Add { alias: String, node: Option<u32> },
    /// A manual alias renamed and/or moved.
    Edit {
        alias: String,
        to: Option<String>,
        node: Option<u32>,
    },
    /// A manual alias deleted.
    Delete { alias: String },
    /// System-managed aliases on or off.
    System(bool),
    /// A chat node added.
    NodeAdd(u32),
    /// A chat node deleted.
    NodeDelete(u32),
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum AliasChangeError {
    #[error(transparent)]
    Refused(#[from] AliasError),
    #[error(transparent)]
    Log(#[from] ChangeError),
    #[error("{0:#}")]
    Read(anyhow::Error),
}

/// What a change did: the table afterwards, and where it landed on the log (`None` when
/// there was nothing to write).
#[derive(Debug)]
pub struct Changed {
    pub table: ChatNodes,
    pub offset: Option<i64>,
}

/// Applies `change` to the table as the log holds it now and appends the new table.
/// System aliases are made of `base`'s cluster id and domain.
pub async fn apply(
    log: &dyn Log,
    base: &Config,
    change: &Change,
    by: &str,
) -> Result<Changed, AliasChangeError> {
    let (fold, _) = crate::live::load(log, base.clone())
        .await
        .map_err(AliasChangeError::Read)?;
    let current = fold.current();
    let site = base.chat_site();
    let mut table = current.chat_nodes.clone();
    match change {
        Change::Add { alias, node } => {
            table.add(alias, node.unwrap_or(base.node_id), &site)?;
        }
        Change::Edit { alias, to, node } => {
            table.edit(alias, to.as_deref(), *node, &site)?;
        }
        Change::Delete { alias } => {
            table.delete(alias)?;
        }
        Change::System(on) => table.set_system_aliases(*on, &site),
        Change::NodeAdd(node) => table.add_node(*node, &site)?,
        Change::NodeDelete(node) => table.delete_node(*node)?,
    }
    if table == current.chat_nodes {
        return Ok(Changed {
            table,
            offset: None,
        });
    }
    let position = append_change(log, base, current, KEY, Some(&table.to_text()), by).await?;
    Ok(Changed {
        table,
        offset: Some(position.offset),
    })
}

/// Registers this node as a chat node when it serves rooms (`serves_rooms`, and
/// `rooms.enabled`): adds it to the table and reconciles the system aliases with its
/// cluster id and domain, writing the table back when that changed it. Returns the
/// fold and the offset to follow from, reloaded after a write. Idempotent: with the same
/// table and configuration it writes nothing. A table another node rewrote at the same
/// moment is read again and the registration repeated (a few times at most).
pub async fn register(
    log: &dyn Log,
    base: &Config,
    serves_rooms: bool,
    mut fold: Fold,
    mut next: i64,
) -> anyhow::Result<(Fold, i64)> {
    if !(serves_rooms && base.rooms.enabled) {
        return Ok((fold, next));
    }
    let by = format!("chat node {}", base.node_id);
    for _ in 0..5 {
        let current = fold.current().clone();
        let mut table = current.chat_nodes.clone();
        if !table.register(base.node_id, &base.chat_site()) {
            return Ok((fold, next));
        }
        append_change(log, base, &current, KEY, Some(&table.to_text()), &by)
            .await
            .context("cannot register this chat node's aliases on the config topic")?;
        tracing::info!(node = base.node_id, aliases = %table.to_text(), "chat node registered");
        (fold, next) = crate::live::load(log, base.clone()).await?;
    }
    tracing::warn!(
        node = base.node_id,
        "the chat node alias table kept changing while this node registered; it may lack this node's system alias"
    );
    Ok((fold, next))
}

/// The table as JSON, for the admin API and the command line.
pub fn table_json(table: &ChatNodes) -> Value {
    let aliases: Vec<Value> = table
        .aliases()
        .map(|(name, a)| json!({ "alias": name, "node": a.node, "kind": a.kind.to_string() }))
        .collect();
    json!({
        "system_aliases": table.system_aliases(),
        "nodes": table.nodes().collect::<Vec<_>>(),
        "aliases": aliases,
    })
}

#[derive(Clone)]
struct AdminState {
    log: Arc<dyn Log>,
    base: Arc<Config>,
    live: LiveConfig,
    /// One change at a time: each reads the table from the log and writes it back.
    lock: Arc<Mutex<()>>,
}

/// The admin routes under `/admin/v1/aliases` (the caller adds authentication).
pub fn admin_router(log: Arc<dyn Log>, base: Arc<Config>, live: LiveConfig) -> Router {
    let state = AdminState {
        log,
        base,
        live,
        lock: Arc::new(Mutex::new(())),
    };
    Router::new()
        .route("/admin/v1/aliases", get(list).post(add))
        .route("/admin/v1/aliases/system", put(system))
        .route("/admin/v1/aliases/nodes", post(node_add))
        .route("/admin/v1/aliases/nodes/{id}", delete(node_delete))
        .route("/admin/v1/aliases/{alias}", put(edit).delete(remove))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn run(state: AdminState, change: Change) -> Response {
    let _one_at_a_time = state.lock.lock().await;
    match apply(state.log.as_ref(), &state.base, &change, "admin-api").await {
        Ok(changed) => {
            if changed.offset.is_some() {
                let mut live = state.live.clone();
                let applied = live.wait_for(|config| config.chat_nodes == changed.table);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), applied).await;
            }
            let mut body = table_json(&changed.table);
            body["offset"] = json!(changed.offset);
            Json(body).into_response()
        }
        Err(AliasChangeError::Refused(e)) => {
            let status = match e {
                AliasError::UnknownAlias(_) | AliasError::UnknownNode(_) => StatusCode::NOT_FOUND,
                AliasError::Duplicate { .. }
                | AliasError::NodeExists(_)
                | AliasError::SystemAlias(_)
                | AliasError::NodeHasAliases { .. } => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            error(status, e.to_string())
        }
        Err(AliasChangeError::Log(ChangeError::Invalid(e))) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn list(State(state): State<AdminState>) -> Response {
    match crate::live::load(state.log.as_ref(), (*state.base).clone()).await {
        Ok((fold, _)) => Json(table_json(&fold.current().chat_nodes)).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

#[derive(serde::Deserialize)]
struct NewAlias {
    alias: String,
    node: Option<u32>,
}

#[derive(serde::Deserialize)]
struct EditAlias {
    to: Option<String>,
    node: Option<u32>,
}

#[derive(serde::Deserialize)]
struct SystemSwitch {
    on: bool,
}

#[derive(serde::Deserialize)]
struct NewNode {
    id: u32,
}

async fn add(State(state): State<AdminState>, Json(body): Json<NewAlias>) -> Response {
    let change = Change::Add {
        alias: body.alias,
        node: body.node,
    };
    run(state, change).await
}

async fn edit(
    State(state): State<AdminState>,
    Path(alias): Path<String>,
    Json(body): Json<EditAlias>,
) -> Response {
    let change = Change::Edit {
        alias,
        to: body.to,
        node: body.node,
    };
    run(state, change).await
}

async fn remove(State(state): State<AdminState>, Path(alias): Path<String>) -> Response {
    run(state, Change::Delete { alias }).await
}

async fn system(State(state): State<AdminState>, Json(body): Json<SystemSwitch>) -> Response {
    run(state, Change::System(body.on)).await
}

async fn node_add(State(state): State<AdminState>, Json(body): Json<NewNode>) -> Response {
    run(state, Change::NodeAdd(body.id)).await
}

async fn node_delete(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match id.parse::<u32>() {
        Ok(id) => run(state, Change::NodeDelete(id)).await,
        Err(_) => error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a chat node id: use a whole number from 1 to 65535"),
        ),
    }
}
