//! How the command line reaches a server: the admin API of the server running on the
//! same data directory (found through its run file), or the log itself when none runs.

use std::sync::Arc;

use anyhow::{Context, bail};
use imbus_config::Config;
use imbus_ops::{RunFile, read_admin_token};
use serde_json::Value;

/// A client for the admin API of the server running on this data directory, if any.
pub struct Admin {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

pub async fn running_server(config: &Config) -> anyhow::Result<Option<Admin>> {
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
        .timeout(std::time::Duration::from_secs(30))
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
