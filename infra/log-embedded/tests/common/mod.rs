//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use imbus_log::{ConsumedRecord, Consumer, ConsumerEvent, Log};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions, FsyncPolicy};

pub fn opts() -> EmbeddedOptions {
    EmbeddedOptions {
        fsync: FsyncPolicy::Never,
        compaction_interval: Duration::ZERO,
        ..EmbeddedOptions::default()
    }
}

pub async fn open(dir: &Path, options: EmbeddedOptions) -> EmbeddedLog {
    EmbeddedLog::open(dir, options).await.unwrap()
}

/// The segment files of a partition, oldest first.
pub fn segment_files(dir: &Path, topic: &str, partition: i32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(topic).join(partition.to_string()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Reads a whole partition from the start.
pub async fn read_all(log: &EmbeddedLog, topic: &str, partition: i32) -> Vec<ConsumedRecord> {
    let high = log.watermarks(topic, partition).await.unwrap().high;
    let mut reader = log
        .reader(topic, partition, imbus_log::StartAt::Earliest)
        .await
        .unwrap();
    let mut out = Vec::new();
    while reader.position() < high {
        let batch = reader.read(1000, Duration::from_secs(5)).await.unwrap();
        assert!(!batch.is_empty(), "reader stalled at {}", reader.position());
        out.extend(batch);
    }
    out
}

/// Polls until an event that is not an empty record batch arrives.
pub async fn next_event(c: &mut Box<dyn Consumer>) -> ConsumerEvent {
    for _ in 0..50 {
        match c.poll(Duration::from_millis(200)).await.unwrap() {
            ConsumerEvent::Records(r) if r.is_empty() => continue,
            ev => return ev,
        }
    }
    panic!("no consumer event within 10 s");
}
