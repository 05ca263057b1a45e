//! The admin API of a running server, under `/admin/v1`, protected by the bearer token in
//! `<data_dir>/admin.token`.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /admin/v1/config` | every setting: value, source, live or not, help |
//! | `GET /admin/v1/config/{key}` | one setting |
//! | `PUT /admin/v1/config/{key}` (body: the value) | change a live setting; answers once the change is durable on the log |
//! | `DELETE /admin/v1/config/{key}` | return a live setting to its file/environment/default value |
//! | `GET /admin/v1/topics` | the system topics with their partitions and offsets |
//! | `GET /admin/v1/users` | every account (address, created, last changed) |
//! | `POST /admin/v1/users` (JSON `{"jid", "password"}`) | create an account |
//! | `PUT /admin/v1/users/{jid}/password` (JSON `{"password"}`) | change a password |
//! | `DELETE /admin/v1/users/{jid}` | delete an account |
//! | `POST /admin/v1/announce` (JSON `{"body", "subject"?, "to"?: [jid]}`) | a message from the server to the listed users, or to all |
//! | `/admin/v1/aliases…` | chat node aliases (see `aliases.rs`) |

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use imbus_config::Config;
use imbus_config::topics::SYSTEM_TOPICS;
use imbus_log::Log;
use serde_json::{Value, json};

use crate::accounts::{AccountError, Accounts};
use crate::live::{ChangeError, LiveConfig, append_change};

#[derive(Clone)]
struct AdminState {
    token: Arc<str>,
    accounts: Accounts,
    log: Arc<dyn Log>,
    base: Arc<Config>,
    live: LiveConfig,
}

/// The admin routes.
pub fn router(
    token: String,
    log: Arc<dyn Log>,
    accounts: Accounts,
    base: Arc<Config>,
    live: LiveConfig,
) -> Router {
    let aliases = crate::aliases::admin_router(log.clone(), base.clone(), live.clone());
    let state = AdminState {
        token: token.into(),
        accounts,
        log,
        base,
        live,
    };
    Router::new()
        .route("/admin/v1/config", get(list_config))
        .route(
            "/admin/v1/config/{key}",
            get(get_config).put(put_config).delete(reset_config),
        )
        .route("/admin/v1/topics", get(topics))
        .route("/admin/v1/users", get(list_users).post(add_user))
        .route("/admin/v1/users/{jid}", delete(delete_user))
        .route("/admin/v1/users/{jid}/password", put(change_password))
        .route("/admin/v1/announce", axum::routing::post(announce))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state.clone())
        .merge(aliases.route_layer(middleware::from_fn_with_state(state, require_token)))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Every admin route needs the bearer token.
async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        _ => error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (Authorization: Bearer <token from data_dir/admin.token>)",
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn setting_json(config: &Config, key: &str) -> Option<Value> {
    let spec = imbus_config::SETTINGS.iter().find(|s| s.name == key)?;
    let (value, source) = config.value(key)?;
    Some(json!({
        "key": spec.name,
        "value": value,
        "source": source.to_string(),
        "live": spec.live,
        "env": spec.env_name(),
        "help": spec.help,
    }))
}

async fn list_config(State(state): State<AdminState>) -> Response {
    let config = state.live.borrow().clone();
    let all: Vec<Value> = imbus_config::SETTINGS
        .iter()
        .filter_map(|s| setting_json(&config, s.name))
        .collect();
    Json(json!({ "settings": all })).into_response()
}

async fn get_config(State(state): State<AdminState>, Path(key): Path<String>) -> Response {
    let config = state.live.borrow().clone();
    match setting_json(&config, &key) {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("unknown setting `{key}`")),
    }
}

async fn change(state: AdminState, key: String, value: Option<String>) -> Response {
    let current = state.live.borrow().clone();
    match append_change(
        state.log.as_ref(),
        &state.base,
        &current,
        &key,
        value.as_deref(),
        "admin-api",
    )
    .await
    {
        Ok(pos) => Json(json!({
            "key": key,
            "value": value,
            "partition": pos.partition,
            "offset": pos.offset,
        }))
        .into_response(),
        Err(ChangeError::Invalid(e)) => {
            let status = match e {
                imbus_config::ConfigError::Unknown { .. } => StatusCode::NOT_FOUND,
                imbus_config::ConfigError::NotLive { .. } => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            error(status, e.to_string())
        }
        Err(e @ ChangeError::Log(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn put_config(
    State(state): State<AdminState>,
    Path(key): Path<String>,
    body: String,
) -> Response {
    change(state, key, Some(body.trim().to_owned())).await
}

async fn reset_config(State(state): State<AdminState>, Path(key): Path<String>) -> Response {
    change(state, key, None).await
}

async fn topics(State(state): State<AdminState>) -> Response {
    let mut out = Vec::new();
    for layout in SYSTEM_TOPICS {
        let partitions = match state.log.partition_count(layout.name).await {
            Ok(n) => n,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
        let mut parts = Vec::new();
        for p in 0..partitions {
            match state.log.watermarks(layout.name, p).await {
                Ok(w) => parts.push(json!({ "partition": p, "low": w.low, "high": w.high })),
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        out.push(json!({
            "topic": layout.name,
            "compacted": layout.compacted,
            "partitions": parts,
        }));
    }
    Json(json!({ "backend": state.log.backend(), "topics": out })).into_response()
}

fn account_error(e: AccountError) -> Response {
    let status = match e {
        AccountError::Exists(_) => StatusCode::CONFLICT,
        AccountError::NotFound(_) => StatusCode::NOT_FOUND,
        AccountError::Log(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

#[derive(serde::Deserialize)]
struct NewUser {
    jid: String,
    password: String,
}

#[derive(serde::Deserialize)]
struct NewPassword {
    password: String,
}

async fn announce(
    State(state): State<AdminState>,
    Json(announcement): Json<crate::announce::Announcement>,
) -> Response {
    let recipients = match crate::announce::recipients(state.accounts.view(), &announcement.to) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    };
    match crate::announce::send(
        state.log.as_ref(),
        &state.base.domain,
        &recipients,
        announcement.subject.as_deref(),
        &announcement.body,
    )
    .await
    {
        Ok(id) => {
            Json(json!({ "id": id.to_string(), "recipients": recipients.len() })).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    }
}

async fn list_users(State(state): State<AdminState>) -> Response {
    let users: Vec<Value> = state
        .accounts
        .view()
        .list()
        .into_iter()
        .map(|a| {
            json!({
                "jid": a.state.jid.to_string(),
                "created_us": a.created.as_micros(),
                "changed_us": a.state.at.as_micros(),
                "changed_by": a.state.by,
            })
        })
        .collect();
    Json(json!({ "users": users })).into_response()
}

async fn add_user(State(state): State<AdminState>, Json(user): Json<NewUser>) -> Response {
    let iterations = state.live.borrow().scram_iterations;
    match state
        .accounts
        .add(&user.jid, &user.password, iterations, "admin-api")
        .await
    {
        Ok(jid) => (StatusCode::CREATED, Json(json!({ "jid": jid.to_string() }))).into_response(),
        Err(e) => account_error(e),
    }
}

async fn change_password(
    State(state): State<AdminState>,
    Path(jid): Path<String>,
    Json(body): Json<NewPassword>,
) -> Response {
    let iterations = state.live.borrow().scram_iterations;
    match state
        .accounts
        .passwd(&jid, &body.password, iterations, "admin-api")
        .await
    {
        Ok(jid) => Json(json!({ "jid": jid.to_string() })).into_response(),
        Err(e) => account_error(e),
    }
}

async fn delete_user(State(state): State<AdminState>, Path(jid): Path<String>) -> Response {
    match state.accounts.delete(&jid, "admin-api").await {
        Ok(jid) => Json(json!({ "jid": jid.to_string() })).into_response(),
        Err(e) => account_error(e),
    }
}
