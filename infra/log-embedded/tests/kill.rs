//! A process killed with SIGKILL loses no acknowledged append and no committed offset.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use imbus_log::{
    Consumer, ConsumerEvent, ConsumerOptions, Log, Record, TopicConfig, TopicPartition,
};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions, FsyncPolicy};

const CHILD_ENV: &str = "IMBUS_LOG_KILL_TEST_DIR";

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        // Even without fsync: what reached the page cache survives the process.
        fsync: FsyncPolicy::Never,
        segment_bytes: 64 * 1024,
        compaction_interval: Duration::ZERO,
        ..EmbeddedOptions::default()
    }
}

/// The child: appends from several tasks and commits offsets until it is killed,
/// printing every acknowledgement.
fn child(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = EmbeddedLog::open(dir, options()).await.unwrap();
        log.create_topic(&TopicConfig::new("t", 3)).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for task in 0..4 {
            let log = log.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                // Enough to outlast the parent's reading; then idle until killed.
                for i in 0u64..100_000 {
                    let value = format!("{task}-{i}");
                    if i % 3 == 0 {
                        let batch: Vec<Record> = (0..5)
                            .map(|j| Record::new(format!("k{}", i + j), format!("{value}-{j}")))
                            .collect();
                        let values: Vec<String> = (0..5).map(|j| format!("{value}-{j}")).collect();
                        let positions = log.append_batch("t", batch).await.unwrap();
                        for (p, v) in positions.iter().zip(values) {
                            tx.send(format!("ACK {} {} {v}", p.partition, p.offset))
                                .unwrap();
                        }
                    } else {
                        let p = log
                            .append("t", Record::new(format!("k{i}"), value.clone()))
                            .await
                            .unwrap();
                        tx.send(format!("ACK {} {} {value}", p.partition, p.offset))
                            .unwrap();
                    }
                }
            });
        }
        let committer = log.clone();
        let commits = tx.clone();
        tokio::spawn(async move {
            let mut c = committer
                .consumer(ConsumerOptions::new("g", &["t"]))
                .await
                .unwrap();
            loop {
                let ev = c.poll(Duration::from_millis(100)).await.unwrap();
                if let ConsumerEvent::Records(recs) = ev
                    && let Some(last) = recs.last()
                {
                    let o = last.offset + 1;
                    c.commit(&[(last.topic_partition(), o)]).await.unwrap();
                    commits
                        .send(format!("COMMIT {} {o}", last.partition))
                        .unwrap();
                }
            }
        });
        // `tx` stays alive: after the appenders finish, the child idles until killed.
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_appends_survive_kill_9",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();
    let mut acked: HashMap<(i32, i64), String> = HashMap::new();
    let mut committed: HashMap<i32, i64> = HashMap::new();
    let mut lines = BufReader::new(stdout).lines();
    while acked.len() < 20_000 || committed.len() < 3 {
        let line = lines.next().expect("child ended early").unwrap();
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["ACK", p, o, v] => {
                acked.insert((p.parse().unwrap(), o.parse().unwrap()), (*v).to_owned());
            }
            ["COMMIT", p, o] => {
                let e = committed.entry(p.parse().unwrap()).or_default();
                *e = (*e).max(o.parse().unwrap());
            }
            _ => {}
        }
    }
    proc.kill().unwrap();
    proc.wait().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let log = EmbeddedLog::open(dir.path(), options()).await.unwrap();
        let mut stored: HashMap<(i32, i64), String> = HashMap::new();
        for p in 0..3 {
            let high = log.watermarks("t", p).await.unwrap().high;
            let mut reader = log
                .reader("t", p, imbus_log::StartAt::Earliest)
                .await
                .unwrap();
            let mut expected_offset = 0;
            while reader.position() < high {
                for r in reader.read(10_000, Duration::from_secs(5)).await.unwrap() {
                    assert_eq!(
                        r.offset, expected_offset,
                        "offsets stay dense after recovery"
                    );
                    expected_offset += 1;
                    stored.insert(
                        (p, r.offset),
                        String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                    );
                }
            }
        }
        for (pos, v) in &acked {
            assert_eq!(
                stored.get(pos),
                Some(v),
                "acknowledged record {pos:?} lost or changed"
            );
        }
        for (p, o) in &committed {
            let c = log
                .committed("g", &TopicPartition::new("t", *p))
                .await
                .unwrap();
            assert!(
                c.is_some_and(|c| c >= *o),
                "commit {o} of partition {p} lost: {c:?}"
            );
        }
        let mut consumer: Box<dyn Consumer> = log
            .consumer(ConsumerOptions::new("g", &["t"]))
            .await
            .unwrap();
        assert!(matches!(
            consumer.poll(Duration::from_secs(5)).await.unwrap(),
            ConsumerEvent::Assigned(_)
        ));
        log.shutdown().await.unwrap();
    });
}
