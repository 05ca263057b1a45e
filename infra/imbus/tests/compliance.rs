//! End to end: `imbus serve` on its defaults archives the IMs slixmpp clients exchange
//! into `data_dir/compliance.sqlite`, one row per recipient, once each, across a SIGKILL
//! and restart; `/metrics` reports the sink healthy.
//!
//! Needs `python3` with `slixmpp` (`tests/run` installs it: `pip install slixmpp`).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;

use std::time::{Duration, Instant};

use common::{Server, add_user, env_for, imbus, listener};
use sqlx::Connection;

/// Runs `tests/interop/slixmpp_offline.py` (fails the test if slixmpp is missing).
fn offline_script(c2s: SocketAddr, args: &[&str]) {
    let mut all = vec![c2s.ip().to_string(), c2s.port().to_string()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let run = common::run_script("slixmpp_offline.py", &all, Duration::from_secs(60));
    assert!(
        run.ok,
        "slixmpp_offline.py {args:?} failed (is slixmpp installed? `pip install slixmpp`):\n{}",
        run.text()
    );
}

/// (to_jid, from bare JID, body) of every JM row, sorted.
async fn archived(db: &Path) -> Vec<(String, String, String, String)> {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let Ok(mut c) = sqlx::SqliteConnection::connect(&url).await else {
        return Vec::new();
    };
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT to_jid, from_jid, msg_type, body_text FROM JM ORDER BY to_jid, body_text",
    )
    .fetch_all(&mut c)
    .await
    .unwrap_or_default();
    c.close().await.unwrap();
    rows
}

fn expected_rows() -> Vec<(String, String, String, String)> {
    let mut rows = Vec::new();
    for i in 0..12 {
        rows.push((
            "bob@localhost".to_owned(),
            "alice@localhost/a".to_owned(),
            "chat".to_owned(),
            format!("offline-{i}"),
        ));
    }
    for i in 0..4 {
        rows.push((
            "alice@localhost".to_owned(),
            "bob@localhost/b".to_owned(),
            "chat".to_owned(),
            format!("offline-{i}"),
        ));
    }
    rows.sort();
    rows
}

#[test]
fn serve_archives_every_im_into_sqlite_once_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_user(dir.path(), "alice@localhost", "Alice-Pw-1");
    add_user(dir.path(), "bob@localhost", "Bob-Pw-2");
    let c2s = listener(dir.path(), "c2s");
    // Twelve messages to offline bob: each stored for him, each archived for him.
    offline_script(
        c2s,
        &[
            "alice@localhost/a",
            "Alice-Pw-1",
            "send",
            "bob@localhost",
            "12",
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = dir.path().join("compliance.sqlite");
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.block_on(archived(&db)).len() < 12 {
        assert!(
            Instant::now() < deadline,
            "rows did not appear: {:?}",
            rt.block_on(archived(&db))
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A crash; the restarted server redelivers what the sink had not committed.
    server.kill9();
    let server = Server::start(dir.path());
    let c2s = listener(dir.path(), "c2s");
    offline_script(c2s, &["bob@localhost/b", "Bob-Pw-2", "receive", "12"]);
    offline_script(
        c2s,
        &[
            "bob@localhost/b",
            "Bob-Pw-2",
            "send",
            "alice@localhost",
            "4",
        ],
    );
    let expected = expected_rows();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = rt.block_on(archived(&db));
        if rows == expected {
            break;
        }
        assert!(
            rows.len() <= expected.len(),
            "more rows than IMs (a duplicate?): {rows:#?}"
        );
        assert!(
            Instant::now() < deadline,
            "archive is {rows:#?}, expected {expected:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let metrics = rt.block_on(async {
        reqwest::get(server.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains("imbus_compliance_sink_up{database=\"sqlite://"),
        "{metrics}"
    );
    let up = metrics
        .lines()
        .find(|l| l.starts_with("imbus_compliance_sink_up"))
        .unwrap();
    assert!(up.ends_with(" 1"), "{up}");
    assert!(server.terminate().success());
    // After a clean stop, still exactly one row per IM and recipient.
    assert_eq!(rt.block_on(archived(&db)), expected);

    // `imbus replay compliance` rebuilds the same archive in a new database, and a second
    // replay adds nothing.
    let copy = dir.path().join("replayed.sqlite");
    let replay = |expect: &str| {
        let mut cmd = imbus();
        env_for(&mut cmd, dir.path());
        let out = cmd
            .args([
                "replay",
                "compliance",
                "--from",
                "2000-01-01T00:00:00Z",
                "--to",
                "2100-01-01T00:00:00Z",
                "--into",
                &format!("sqlite://{}?mode=rwc", copy.display()),
            ])
            .output()
            .expect("run imbus replay compliance");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.contains(expect),
            "imbus replay compliance: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    replay("written 16, already present 0,");
    assert_eq!(rt.block_on(archived(&copy)), expected);
    replay("written 0, already present 16,");
    assert_eq!(rt.block_on(archived(&copy)), expected);

    // `imbus audit tail` prints every record as JSON.
    let mut cmd = imbus();
    env_for(&mut cmd, dir.path());
    let out = cmd
        .args(["audit", "tail", "--from-beginning", "--limit", "16"])
        .output()
        .expect("run imbus audit tail");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tailed: Vec<(String, String, String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
            let s = |k: &str| {
                v[k].as_str()
                    .unwrap_or_else(|| panic!("{k} in {l}"))
                    .to_owned()
            };
            (s("recipient"), s("sender"), s("type"), s("body"))
        })
        .collect();
    tailed.sort();
    assert_eq!(tailed, expected);

    // `imbus audit export`: bob received twelve and sent four.
    for (format, lines) in [("csv", 17), ("jsonl", 16)] {
        let mut cmd = imbus();
        env_for(&mut cmd, dir.path());
        let out = cmd
            .args([
                "audit",
                "export",
                "--user",
                "bob@localhost",
                "--from",
                "2000-01-01T00:00:00Z",
                "--to",
                "2100-01-01T00:00:00Z",
                "--format",
                format,
            ])
            .output()
            .expect("run imbus audit export");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.lines().count(), lines, "{stdout}");
        if format == "csv" {
            assert!(stdout.starts_with("table,record_id,"), "{stdout}");
        } else {
            for l in stdout.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert!(
                    v["to_jid"] == "bob@localhost" || v["from_jid"] == "bob@localhost/b",
                    "{l}"
                );
            }
        }
    }
}
