//! How the command line reaches a server: the admin API of the server running on the
//! same data directory (found through its run file), or the log itself when none runs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use imbus_config::{Backend, Config};
use imbus_log_embedded::EmbeddedLog;
use imbus_ops::{RunFile, read_admin_token};
use serde_json::Value;

/// A client for the admin API of the server running on this data directory, if any.
pub struct Admin {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

/// How long a command waits for a server that holds the log but has not written its run
/// file yet (it is starting).
const STARTING_SERVER_WAIT: Duration = Duration::from_secs(30);

/// The admin API of the server running on this data directory, if any. A server that is
/// starting (it holds the embedded log but does not answer yet) is waited for.
pub async fn running_server(config: &Config) -> anyhow::Result<Option<Admin>> {
    let deadline = tokio::time::Instant::now() + STARTING_SERVER_WAIT;
    loop {
        if let Some(admin) = answering_server(config).await? {
            return Ok(Some(admin));
        }
        let log_held = config.bus.backend == Backend::Embedded
            && EmbeddedLog::in_use(&crate::bus::embedded_dir(config));
        if !log_held || tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn answering_server(config: &Config) -> anyhow::Result<Option<Admin>> {
    let Some(info) = RunFile::new(&config.data_dir).read()? else {
        return Ok(None);
    };
    let Some(token) = read_admin_token(&config.data_dir)? else {
        return Ok(None);
    };
    let mut addr = info.http;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let admin = Admin {
        base: format!("http://{addr}/admin/v1"),
        token,
        http,
    };
    // A stale run file (the server was killed) points at nothing.
    match admin
        .http
        .get(format!("{}/config/domain", admin.base))
        .bearer_auth(&admin.token)
        .send()
        .await
    {
        Ok(_) => Ok(Some(admin)),
        Err(_) => Ok(None),
    }
}

pub async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .context("unreadable answer from the admin API")?;
    if status.is_success() {
        Ok(body)
    } else {
        let msg = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        bail!("{msg}")
    }
}

/// Runs `f` on the log opened directly (no server is running).
pub async fn with_offline_log<F, Fut, T>(config: &Config, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Arc<dyn imbus_log::Log>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let log = crate::bus::open(config).await.context(
        "no running server answered (run file missing or stale) and the log could not be opened",
    )?;
    crate::bus::create_system_topics(log.as_ref(), config).await?;
    let out = f(log.clone()).await;
    log.shutdown().await?;
    out
}
