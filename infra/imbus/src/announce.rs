//! Announcements: one message from the server to every user, or to a list of users
//! (`imbus announce`, `POST /admin/v1/announce`). Each copy goes to the router on its
//! recipient's partition like any one-to-one message: delivered to the available
//! clients, stored for offline users, archived per recipient.

use std::process::ExitCode;

use anyhow::{Context, bail};
use imbus_config::Config;
use imbus_config::topics::ROUTED;
use imbus_core::{
    BareJid, Event, FullJid, GatewayId, Jid, SessionId, StanzaKind, StanzaReceived, Timestamp, Uuid,
};
use imbus_log::{Log, Record};
use imbus_xmpp_stream::Element;
use serde_json::json;
use tokio::sync::watch;

use crate::accounts::AccountsView;
use crate::client::{answer, running_server, with_offline_log};

/// What to announce.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Announcement {
    /// The text.
    pub body: String,
    /// An optional subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// The recipients' bare JIDs; empty: every account.
    #[serde(default)]
    pub to: Vec<String>,
}

/// The recipients: the named accounts (each must exist), or every account.
pub fn recipients(view: &AccountsView, to: &[String]) -> anyhow::Result<Vec<BareJid>> {
    if to.is_empty() {
        return Ok(view.list().into_iter().map(|a| a.state.jid).collect());
    }
    let mut out = Vec::with_capacity(to.len());
    let mut unknown = Vec::new();
    for jid in to {
        match BareJid::new(jid) {
            Ok(bare) if view.get(bare.as_str()).is_some() => out.push(bare),
            Ok(_) => unknown.push(jid.clone()),
            Err(e) => bail!("{jid:?} is not a bare JID: {e}"),
        }
    }
    if !unknown.is_empty() {
        bail!("no such account: {}", unknown.join(", "));
    }
    Ok(out)
}

/// Puts one copy per recipient on `routed`; returns the announcement's id (the event id
/// of every copy and of their compliance records).
pub async fn send(
    log: &dyn Log,
    domain: &str,
    recipients: &[BareJid],
    subject: Option<&str>,
    body: &str,
) -> anyhow::Result<Uuid> {
    if body.trim().is_empty() {
        bail!("the announcement is empty");
    }
    let sender = FullJid::new(&format!("{domain}/announce"))
        .with_context(|| format!("domain {domain:?} is not a valid XMPP domain"))?;
    let gateway_id = GatewayId::new("admin").context("gateway id")?;
    let session_id = SessionId::new("announce").context("session id")?;
    let event_id = Uuid::now_v7();
    let now = Timestamp::now();
    let mut records = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        let mut message = Element::new("message", "jabber:client")
            .with_attr("from", domain)
            .with_attr("to", recipient.as_str())
            .with_attr("type", "normal")
            .with_attr("id", event_id.simple().to_string());
        if let Some(subject) = subject {
            message.push_child(Element::new("subject", "jabber:client").with_text(subject));
        }
        message.push_child(Element::new("body", "jabber:client").with_text(body));
        let stanza = StanzaReceived {
            event_id,
            gateway_id: gateway_id.clone(),
            session_id: session_id.clone(),
            received_at: now,
            sender: sender.clone(),
            recipient: Some(Jid::from(recipient.clone())),
            kind: StanzaKind::Message,
            stanza_type: Some("normal".to_owned()),
            stanza_id: Some(event_id.simple().to_string()),
            xml: message.to_xml(),
        };
        let value = imbus_schemas::encode(&Event::from(stanza)).context("encoding a copy")?;
        records.push(Record::new(recipient.as_str().to_owned(), value));
    }
    if !records.is_empty() {
        log.append_batch(ROUTED, records)
            .await
            .context("appending the announcement")?;
    }
    Ok(event_id)
}

/// `imbus announce`: through the running server's admin API, or straight onto the log.
pub async fn run(
    config: Config,
    to: Vec<String>,
    subject: Option<String>,
    body: String,
) -> anyhow::Result<ExitCode> {
    if let Some(admin) = running_server(&config).await? {
        let resp = admin
            .http
            .post(format!("{}/announce", admin.base))
            .bearer_auth(&admin.token)
            .json(&json!({ "body": body, "subject": subject, "to": to }))
            .send()
            .await?;
        let answer = answer(resp).await?;
        println!(
            "announced to {} users (id {})",
            answer["recipients"],
            answer["id"].as_str().unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (id, count) = with_offline_log(&config, |log| {
        let config = config.clone();
        async move {
            let (view, from) = crate::accounts::load(log.as_ref()).await?;
            let (stop, stopped) = watch::channel(false);
            let followers = crate::accounts::follow(log.clone(), view.clone(), from, stopped);
            let result = async {
                let recipients = recipients(&view, &to)?;
                let id = send(
                    log.as_ref(),
                    &config.domain,
                    &recipients,
                    subject.as_deref(),
                    &body,
                )
                .await?;
                anyhow::Ok((id, recipients.len()))
            }
            .await;
            let _ = stop.send(true);
            for f in followers {
                let _ = f.await;
            }
            result
        }
    })
    .await?;
    println!("announced to {count} users (id {id}); delivered when the server runs");
    Ok(ExitCode::SUCCESS)
}
