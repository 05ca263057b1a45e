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
