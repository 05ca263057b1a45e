//! `imbus audit tail`: follows the `compliance` topic, printing one JSON object per
//! record (what the compliance sink archives, before any filtering).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use imbus_config::Config;
use imbus_config::topics::COMPLIANCE;
use imbus_core::{ComplianceRecord, Direction, Event, Origin};
use imbus_log::{ConsumedRecord, StartAt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One record as printed.
fn to_json(record: &ConsumedRecord) -> Value {
    let mut out = match record.value.as_deref().map(imbus_schemas::decode) {
        Some(Ok(Event::Compliance(c))) => compliance_json(&c),
        Some(Ok(_)) => json!({ "error": "not a ComplianceRecord" }),
        Some(Err(e)) => json!({ "error": format!("cannot decode: {e}") }),
        None => json!({ "error": "record without a value" }),
    };
    if let Value::Object(map) = &mut out {
        map.insert("partition".into(), json!(record.partition));
        map.insert("offset".into(), json!(record.offset));
    }
    out
}

fn compliance_json(c: &ComplianceRecord) -> Value {
    json!({
        "event_id": c.event_id.to_string(),
        "recipient": c.recipient.as_str(),
        "sender": c.sender.to_string(),
        "direction": match c.direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        },
        "time": c.timestamp.to_rfc3339(),
        "time_micros": c.timestamp.as_micros(),
        "type": imbus_connector_compliance::row::type_name(c.message_type),
        "thread": c.thread,
        "subject": c.subject,
        "body": c.body,
        "room": c.room.as_ref().map(|r| r.as_str().to_owned()),
        "nickname": c.nickname,
        "origin": match c.origin {
            Origin::Local => "local",
            Origin::Intercluster => "intercluster",
            Origin::Federated => "federated",
            Origin::Sip => "sip",
        },
        "xml": c.xml,
    })
}

/// Prints the records of every partition as they arrive, from `from` (RFC 3339) or from
/// the beginning or from now; stops after `limit` records if given.
pub async fn tail(
    config: Config,
    from: Option<String>,
    from_beginning: bool,
    limit: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let start = match (&from, from_beginning) {
        (Some(_), true) => anyhow::bail!("give --from or --from-beginning, not both"),
        (Some(t), false) => {
            let micros = imbus_connector_compliance::replay::parse_time(t)
                .map_err(|e| anyhow::anyhow!("--from: {e}"))?;
            StartAt::Timestamp(micros.div_euclid(1000))
        }
        (None, true) => StartAt::Earliest,
        (None, false) => StartAt::Latest,
    };
    let log = crate::bus::open(&config).await?;
    crate::bus::create_system_topics(log.as_ref(), &config).await?;
    let partitions = log
        .partition_count(COMPLIANCE)
        .await
        .context("cannot read the compliance topic")?;
    let (tx, mut rx) = mpsc::channel::<Value>(1024);
    let mut readers = Vec::new();
    for partition in 0..partitions {
        let mut reader = log
            .reader(COMPLIANCE, partition, start)
            .await
            .with_context(|| format!("cannot read compliance partition {partition}"))?;
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            loop {
                match reader.read(256, Duration::from_secs(30)).await {
                    Ok(records) => {
                        for r in &records {
                            if tx.send(to_json(r)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(json!({ "partition": partition, "error": e.to_string() }))
                            .await;
                        return;
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut printed = 0u64;
    while limit.is_none_or(|l| printed < l) {
        let line = tokio::select! {
            line = rx.recv() => line,
            _ = crate::serve::wait_for_signal() => break,
        };
        let Some(line) = line else { break };
        println!("{line}");
        printed += 1;
    }
    for r in &readers {
        r.abort();
    }
    for r in readers {
        let _ = r.await;
    }
    log.shutdown()
        .await
        .context("the log could not be closed cleanly")?;
    Ok(ExitCode::SUCCESS)
}

/// Output formats of `imbus audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// `imbus audit export`: every archived row where `user` received or sent the message in
/// `[from, to)`, from the compliance database (`--database`, default the configured one).
pub async fn export(
    config: Config,
    user: &str,
    from: &str,
    to: &str,
    format: ExportFormat,
    database: Option<String>,
) -> anyhow::Result<ExitCode> {
    use imbus_connector_compliance::export::{CSV_HEADER, export};
    use imbus_connector_compliance::replay::parse_time;
    let user = imbus_core::BareJid::new(user)
        .map_err(|e| anyhow::anyhow!("--user {user:?} is not a bare JID: {e}"))?;
    let from_micros = parse_time(from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to_micros = parse_time(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let url = database.unwrap_or_else(|| imbus_connector_compliance::database_url(&config));
    let db = imbus_connector_compliance::Database::open(&url, 1).context("--database")?;
    let rows = export(&db, user.as_str(), from_micros, to_micros)
        .await
        .with_context(|| {
            format!(
                "cannot read the compliance database {}",
                imbus_connector_compliance::redact_url(&url)
            )
        });
    db.close().await;
    let rows = rows?;
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        ExportFormat::Csv => {
            writeln!(out, "{CSV_HEADER}")?;
            for r in &rows {
                // CRLF ends records, as RFC 4180 says; line breaks inside fields stay.
                write!(out, "{}\r\n", r.csv())?;
            }
        }
        ExportFormat::Jsonl => {
            for r in &rows {
                let line = json!({
                    "table": r.table,
                    "record_id": r.record_id,
                    "event_id": r.event_id,
                    "sent_date": r.sent_date,
                    "to_jid": r.to_jid,
                    "from_jid": r.from_jid,
                    "room_jid": r.room_jid,
                    "nickname": r.nickname,
                    "msg_type": r.msg_type,
                    "direction": r.direction,
                    "subject": r.subject,
                    "thread_id": r.thread_id,
                    "body_text": r.body_text,
                    "message_text": r.message_text,
                });
                writeln!(out, "{line}")?;
            }
        }
    }
    out.flush()?;
    eprintln!("{} rows", rows.len());
    Ok(ExitCode::SUCCESS)
}
