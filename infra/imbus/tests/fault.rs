//! The router killed while traffic flows, on Kafka (Tansu started by the test harness):
//! `imbus serve` runs the gateway only (`router.embedded = false`) and `imbus route` is
//! its own process. slixmpp senders send numbered chat messages at a steady rate with
//! Stream Management; the router is killed with SIGKILL mid-traffic and a new one is
//! started in the same consumer group. It takes the partitions over once the broker
//! evicts the dead member, restores their state and processes again whatever the dead
//! one had not committed.
//!
//! Checked: every message the server acknowledged (XEP-0198 `<a/>`) reaches its
//! recipient exactly once — the receivers count arrivals without deduplicating, so a
//! repeat the gateway failed to recognise fails the test — and the `compliance` topic
//! holds, for every accepted message, records with one `(event id, recipient)` and no
//! other: repeats on the topic are allowed (the sinks write idempotently by that key)
//! and counted.
//!
//! Needs `python3` with `slixmpp` and the Tansu binary (see `tests/src/tansu.rs`).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Server, env_for, imbus, listener, require_slixmpp};
use imbus_log::{Log, StartAt};

const SENDERS: usize = 4;
const RECEIVERS: usize = 4;
/// Messages per second per sender.
const RATE: u32 = 10;
/// How long the senders send.
const SECONDS: u32 = 30;

/// Kills a child process on drop (a failed assertion must not leave a router behind).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything on the `compliance` topic: (event id, recipient, body) per record.
fn compliance_records(bootstrap: String) -> Vec<(String, String, String)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let log = imbus_log_kafka::KafkaLog::connect(imbus_log_kafka::KafkaOptions::new(bootstrap))
            .await
            .unwrap();
        let mut out = Vec::new();
        let partitions = log.partition_count("compliance").await.unwrap();
        for partition in 0..partitions {
            let high = log.watermarks("compliance", partition).await.unwrap().high;
            let mut reader = log
                .reader("compliance", partition, StartAt::Earliest)
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while reader.position() < high {
                assert!(Instant::now() < deadline, "reading compliance timed out");
                for record in reader.read(1024, Duration::from_millis(500)).await.unwrap() {
                    let Some(value) = record.value.as_ref() else {
                        continue;
                    };
                    if let Ok(imbus_core::Event::Compliance(c)) = imbus_schemas::decode(value) {
                        out.push((
                            c.event_id.to_string(),
                            c.recipient.as_str().to_owned(),
                            c.body.unwrap_or_default(),
                        ));
                    }
                }
            }
        }
        out
    })
}

#[test]
fn on_kafka_a_router_killed_mid_traffic_loses_and_repeats_nothing() {
    require_slixmpp();
    let broker = imbus_tests::tansu::TansuBroker::start().unwrap_or_else(|e| panic!("{e}"));
    let env = [
        ("IMBUS_BUS_BACKEND", "kafka".to_owned()),
        ("IMBUS_BUS_KAFKA_BOOTSTRAP", broker.bootstrap()),
        ("IMBUS_BUS_PARTITIONS", "2".to_owned()),
        ("IMBUS_ROUTER_EMBEDDED", "false".to_owned()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start_with(dir.path(), &env);
    let start_router = || {
        let mut cmd = imbus();
        env_for(&mut cmd, dir.path());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        if let Ok(level) = std::env::var("IMBUS_FAULT_ROUTER_LOG") {
            cmd.env("IMBUS_LOG_LEVEL", level);
        }
        Reaped(
            cmd.arg("route")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn imbus route"),
        )
    };
    let mut first = start_router();
    for name in (0..SENDERS)
        .map(|i| format!("s{i}"))
        .chain((0..RECEIVERS).map(|i| format!("r{i}")))
    {
        let mut cmd = imbus();
        env_for(&mut cmd, dir.path());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd
            .args([
                "user",
                "add",
                &format!("{name}@localhost"),
                "--password",
                &format!("Pw-{name}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "imbus user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let c2s = listener(dir.path(), "c2s");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/slixmpp_fault.py");
    let mut traffic = Reaped(
        Command::new("python3")
            .arg(&script)
            .args([
                c2s.ip().to_string(),
                c2s.port().to_string(),
                "localhost".to_owned(),
                SENDERS.to_string(),
                RECEIVERS.to_string(),
                RATE.to_string(),
                SECONDS.to_string(),
            ])
            // Long enough for the broker to evict the killed router and the new one to
            // catch up.
            .env("IMBUS_INTEROP_TIMEOUT", "120")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3"),
    );
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = traffic.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut output = Vec::new();
    let sending = loop {
        match lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                let go = line == "SENDING";
                output.push(line);
                if go {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    assert!(sending, "the clients did not start sending: {output:?}");

    // Mid-traffic: SIGKILL, no chance to commit or to leave the group.
    std::thread::sleep(Duration::from_secs(5));
    first.0.kill().unwrap();
    let _ = first.0.wait();
    std::thread::sleep(Duration::from_secs(1));
    let _second = start_router();

    let deadline = Instant::now() + Duration::from_secs(400);
    let status = loop {
        if let Some(status) = traffic.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the traffic script hung");
        std::thread::sleep(Duration::from_millis(200));
    };
    reader.join().unwrap();
    output.extend(lines.try_iter());
    let mut stderr = String::new();
    if let Some(mut e) = traffic.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let result: serde_json::Value = output
        .iter()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap_or_else(|| panic!("no result from the traffic script: {output:?}\n{stderr}"));
    let verdict: Vec<&String> = output.iter().filter(|l| !l.starts_with("RESULT")).collect();
    assert!(
        status.success(),
        "exactly-once delivery failed: {verdict:?}\n{}\nbroker log:\n{}",
        stderr.lines().rev().take(40).collect::<Vec<_>>().join("\n"),
        broker.log_tail(60)
    );

    let accepted: Vec<(String, String)> = result["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_owned(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let sent = result["sent"].as_u64().unwrap();
    assert!(
        accepted.len() as u64 == sent,
        "the gateway stayed up, so every message is acknowledged: {} of {sent}",
        accepted.len()
    );

    // Compliance: one (event id, recipient) per accepted message, none missing.
    let records = compliance_records(broker.bootstrap());
    let mut by_body: HashMap<&str, HashSet<(&str, &str)>> = HashMap::new();
    for (id, recipient, body) in &records {
        by_body
            .entry(body.as_str())
            .or_default()
            .insert((id.as_str(), recipient.as_str()));
    }
    let distinct: HashSet<(&str, &str)> = records
        .iter()
        .map(|(id, r, _)| (id.as_str(), r.as_str()))
        .collect();
    for (body, to) in &accepted {
        let keys = by_body
            .get(body.as_str())
            .unwrap_or_else(|| panic!("no compliance record for {body}"));
        assert_eq!(
            keys.len(),
            1,
            "{body} archived under several keys: {keys:?}"
        );
        let (_, recipient) = keys.iter().next().unwrap();
        assert_eq!(recipient, to, "{body} archived for the wrong recipient");
    }
    assert_eq!(
        distinct.len(),
        accepted.len(),
        "compliance keys beyond the accepted messages"
    );
    eprintln!(
        "fault: {sent} sent, {} accepted and delivered once each; compliance: {} records, \
         {} distinct (event id, recipient), {} repeats on the topic",
        accepted.len(),
        records.len(),
        distinct.len(),
        records.len() - distinct.len()
    );
}
