//! `kill -9` of `imbus serve` while it appends loses no acknowledged record, and a
//! graceful SIGTERM flushes the log and exits cleanly.
//!
//! Appends go through the admin API (live setting changes are events on the `config`
//! topic, answered only once the log acknowledged them), from many concurrent clients.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::Server;
use imbus_log::{Log, StartAt};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions};
use tokio::sync::Mutex;

const WRITERS: usize = 16;

async fn read_config_topic(data_dir: &std::path::Path) -> BTreeMap<i64, String> {
    let log = EmbeddedLog::open(data_dir.join("log"), EmbeddedOptions::default())
        .await
        .expect("reopen the embedded log after the kill");
    let marks = log.watermarks("config", 0).await.unwrap();
    let mut reader = log.reader("config", 0, StartAt::Earliest).await.unwrap();
    let mut out = BTreeMap::new();
    while reader.position() < marks.high {
        let batch = reader.read(4096, Duration::from_secs(10)).await.unwrap();
        assert!(!batch.is_empty(), "reader stalled below the high watermark");
        for r in batch {
            let event =
                imbus_schemas::decode(r.value.as_ref().expect("config records have values"))
                    .expect("every record decodes");
            let imbus_core::Event::ConfigChanged(change) = event else {
                panic!("unexpected event on the config topic: {event:?}");
            };
            // The server records its own settings there too (the chat node alias table
            // it registers at start); the test's writes are the log_level ones.
            if change.key.as_str() != "log_level" {
                continue;
            }
            out.insert(r.offset, change.value.expect("set, not reset"));
        }
    }
    log.shutdown().await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_appends_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let http = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (http, acked) = (http.clone(), acked.clone());
        let url = server.url("/admin/v1/config/log_level");
        let token = server.token.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let value = format!("warn,imbus_w{w}_{i}=debug");
                let resp = http
                    .put(&url)
                    .bearer_auth(&token)
                    .body(value.clone())
                    .send()
                    .await;
                let Ok(resp) = resp else { return };
                if !resp.status().is_success() {
                    return;
                }
                let Ok(body) = resp.json::<serde_json::Value>().await else {
                    return;
                };
                let offset = body["offset"].as_i64().expect("offset in answer");
                acked.lock().await.push((offset, value));
            }
        }));
    }

    // Let the writers get going, then pull the plug mid-stream.
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if acked.lock().await.len() >= 2_000 {
            break;
        }
    }
    server.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 2_000);

    // Every acknowledged change is on the log, at the offset it was acknowledged with.
    let on_log = read_config_topic(dir.path()).await;
    let last_on_log = *on_log.keys().next_back().unwrap();
    let mut missing = Vec::new();
    for (offset, value) in &acked {
        match on_log.get(offset) {
            Some(v) if v == value => {}
            Some(v) => panic!("offset {offset} holds {v:?}, acknowledged as {value:?}"),
            // Compaction may only have removed it if a later record has the same key.
            None if *offset < last_on_log => {}
            None => missing.push(*offset),
        }
    }
    assert!(
        missing.is_empty(),
        "acknowledged offsets lost by kill -9: {missing:?}"
    );
    let max_acked = acked.iter().map(|(o, _)| *o).max().unwrap();
    assert!(last_on_log >= max_acked);

    // The restarted server folds the log to the last change written.
    let server = Server::start(dir.path());
    let got = server.admin_get("/admin/v1/config/log_level").await;
    assert_eq!(got["value"].as_str(), Some(on_log[&last_on_log].as_str()));
    assert_eq!(
        got["source"].as_str(),
        Some("a live change on the config topic")
    );

    // SIGTERM: graceful shutdown, exit 0, run file removed.
    let status = server.terminate();
    assert!(
        status.success(),
        "imbus serve exited with {status} after SIGTERM"
    );
    assert!(!dir.path().join("run/imbus.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_admin_auth() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let http = reqwest::Client::new();

    let health = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // The server runs without transparent huge pages (a 2 MiB page zeroed at first touch
    // stalls the async worker every connection shares).
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    match status.lines().find(|l| l.starts_with("THP_enabled:")) {
        Some(line) => assert_eq!(
            line, "THP_enabled:\t0",
            "transparent huge pages are on for imbus serve"
        ),
        None => eprintln!("this kernel does not report THP_enabled; huge pages not checked"),
    }

    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("imbus_build_info{"), "{metrics}");
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "{metrics}"
    );

    // No token, wrong token: refused.
    let r = http
        .get(server.url("/admin/v1/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(server.url("/admin/v1/config"))
        .bearer_auth("0".repeat(64))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A setting that needs a restart, an unknown one, a bad value: clear errors.
    let put = |key: &str, value: &str| {
        http.put(server.url(&format!("/admin/v1/config/{key}")))
            .bearer_auth(&server.token)
            .body(value.to_owned())
            .send()
    };
    let r = put("c2s_port", "1234").await.unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("IMBUS_C2S_PORT"));
    let r = put("no_such_setting", "1").await.unwrap();
    assert_eq!(r.status(), 404);
    let r = put("log_level", "chatty").await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("chatty"));

    // The topics are there.
    let topics = server.admin_get("/admin/v1/topics").await;
    let names: Vec<&str> = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    for t in [
        "stanzas",
        "sessions",
        "offline",
        "accounts",
        "rosters",
        "compliance",
        "config",
    ] {
        assert!(names.contains(&t), "{t} missing from {names:?}");
    }
    assert!(server.terminate().success());
}
