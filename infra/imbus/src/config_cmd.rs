//! `imbus config …`: inspect and change settings.
//!
//! Live changes go through the admin API of the running server found via the data
//! directory's run file; when no server runs, they are appended to the `config` topic
//! directly and apply at the next start.

use std::process::ExitCode;

use crate::client::{answer, running_server, with_offline_log};
use anyhow::bail;
use imbus_config::Config;
use serde_json::Value;

use crate::cli::ConfigCommand;

pub async fn run(config: Config, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check => {
            print_settings(&config, false);
            println!("configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::List => {
            let effective = effective(&config).await?;
            print_settings(&effective, true);
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Get { key } => {
            let effective = effective(&config).await?;
            match effective.value(&key) {
                Some((value, _)) => {
                    println!("{value}");
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    bail!("unknown setting `{key}` (run `imbus config list` for every setting)")
                }
            }
        }
        ConfigCommand::Set { key, value } => change(&config, &key, Some(&value)).await,
        ConfigCommand::Reset { key } => change(&config, &key, None).await,
    }
}

fn print_settings(config: &Config, help: bool) {
    for (spec, value, source) in config.effective() {
        let live = if spec.live { " (live)" } else { "" };
        println!("{} = {value:?}    # from {source}{live}", spec.name);
        if help {
            println!("    {}  [{}]", spec.help, spec.env_name());
        }
    }
}

/// The effective configuration: the running server's, or file/env plus the live changes
/// recorded on the log.
async fn effective(config: &Config) -> anyhow::Result<Config> {
    if let Some(admin) = running_server(config).await? {
        let body = answer(
            admin
                .http
                .get(format!("{}/config", admin.base))
                .bearer_auth(&admin.token)
                .send()
                .await?,
        )
        .await?;
        let mut effective = config.clone();
        if let Some(settings) = body.get("settings").and_then(Value::as_array) {
            for s in settings {
                let (Some(key), Some(value), Some(true)) = (
                    s.get("key").and_then(Value::as_str),
                    s.get("value").and_then(Value::as_str),
                    s.get("live").and_then(Value::as_bool),
                ) else {
                    continue;
                };
                if config.value(key).map(|(v, _)| v) != Some(value) {
                    effective = effective.with_override(config, key, Some(value))?;
                }
            }
        }
        return Ok(effective);
    }
    with_offline_log(config, |log| {
        let config = config.clone();
        async move {
            let (fold, _) = crate::live::load(log.as_ref(), config).await?;
            Ok(fold.current().clone())
        }
    })
    .await
}

async fn change(config: &Config, key: &str, value: Option<&str>) -> anyhow::Result<ExitCode> {
    if let Some(admin) = running_server(config).await? {
        let url = format!("{}/config/{key}", admin.base);
        let req = match value {
            Some(v) => admin.http.put(url).body(v.to_owned()),
            None => admin.http.delete(url),
        };
        let body = answer(req.bearer_auth(&admin.token).send().await?).await?;
        println!(
            "{key} {} (log offset {})",
            match value {
                Some(v) => format!("set to {v:?}"),
                None => "reset".to_owned(),
            },
            body.get("offset").and_then(Value::as_i64).unwrap_or(-1)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let key = key.to_owned();
    let value = value.map(str::to_owned);
    let pos = with_offline_log(config, |log| {
        let config = config.clone();
        async move {
            let (fold, _) = crate::live::load(log.as_ref(), config.clone()).await?;
            crate::live::append_change(
                log.as_ref(),
                &config,
                fold.current(),
                &key,
                value.as_deref(),
                "imbus-cli",
            )
            .await
            .map_err(anyhow::Error::from)
        }
    })
    .await?;
    println!(
        "no server is running: the change is recorded on the log (offset {}) and applies at the next start",
        pos.offset
    );
    Ok(ExitCode::SUCCESS)
}
