//! `imbus user …`: account administration.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, bail};
use imbus_config::Config;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::accounts::Accounts;
use crate::cli::UserCommand;
use crate::client::{answer, running_server, with_offline_log};

/// The password from the flag, else from the terminal (no echo), else the first line of
/// standard input.
fn password(flag: Option<String>, jid: &str) -> anyhow::Result<String> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let p = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("password for {jid}: "))
            .context("cannot read the password from the terminal")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if p.is_empty() {
        bail!("the password is empty");
    }
    Ok(p)
}

pub async fn run(config: Config, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let request = match &cmd {
        UserCommand::Add { jid, password: p } => {
            Some(("add", jid.clone(), Some(password(p.clone(), jid)?)))
        }
        UserCommand::Passwd { jid, password: p } => {
            Some(("passwd", jid.clone(), Some(password(p.clone(), jid)?)))
        }
        UserCommand::Del { jid } => Some(("del", jid.clone(), None)),
        UserCommand::List => None,
    };

    if let Some(admin) = running_server(&config).await? {
        let users = format!("{}/users", admin.base);
        let resp = match &request {
            Some(("add", jid, Some(pw))) => admin
                .http
                .post(&users)
                .json(&json!({ "jid": jid, "password": pw })),
            Some(("passwd", jid, Some(pw))) => admin
                .http
                .put(format!("{users}/{jid}/password"))
                .json(&json!({ "password": pw })),
            Some((_, jid, _)) => admin.http.delete(format!("{users}/{jid}")),
            None => admin.http.get(&users),
        };
        let body = answer(resp.bearer_auth(&admin.token).send().await?).await?;
        report(&request, &body);
        return Ok(ExitCode::SUCCESS);
    }

    let body = with_offline_log(&config, |log| {
        let config = config.clone();
        let request = request.clone();
        async move {
            let (view, from) = crate::accounts::load(log.as_ref()).await?;
            let (stop, stopped) = watch::channel(false);
            let followers = crate::accounts::follow(log.clone(), view.clone(), from, stopped);
            let accounts = Accounts::new(log.clone(), view, &config);
            let result = match &request {
                Some(("add", jid, Some(pw))) => accounts
                    .add(jid, pw, config.scram_iterations, "imbus-cli")
                    .await
                    .map(|j| json!({ "jid": j.to_string() })),
                Some(("passwd", jid, Some(pw))) => accounts
                    .passwd(jid, pw, config.scram_iterations, "imbus-cli")
                    .await
                    .map(|j| json!({ "jid": j.to_string() })),
                Some((_, jid, _)) => accounts
                    .delete(jid, "imbus-cli")
                    .await
                    .map(|j| json!({ "jid": j.to_string() })),
                None => Ok(json!({ "users": accounts.view().list().iter().map(|a| json!({ "jid": a.state.jid.to_string() })).collect::<Vec<_>>() })),
            };
            let _ = stop.send(true);
            for f in followers {
                let _ = f.await;
            }
            Ok(result?)
        }
    })
    .await?;
    report(&request, &body);
    Ok(ExitCode::SUCCESS)
}

fn report(request: &Option<(&str, String, Option<String>)>, body: &Value) {
    let jid = body.get("jid").and_then(Value::as_str).unwrap_or_default();
    match request {
        Some(("add", ..)) => println!("created {jid}"),
        Some(("passwd", ..)) => println!("password changed for {jid}"),
        Some(_) => println!("deleted {jid}"),
        None => {
            for u in body
                .get("users")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(j) = u.get("jid").and_then(Value::as_str) {
                    println!("{j}");
                }
            }
        }
    }
}
