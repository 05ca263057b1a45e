//! Compaction and retention of the embedded log.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::{open, opts, read_all, segment_files};
use imbus_log::{ConsumerEvent, ConsumerOptions, Log, Record, StartAt, TopicConfig};
use imbus_log_embedded::EmbeddedOptions;

fn small_segments() -> EmbeddedOptions {
    EmbeddedOptions {
        segment_bytes: 4096,
        delete_retention: Duration::ZERO,
        ..opts()
    }
}

#[tokio::test]
async fn compaction_keeps_the_latest_per_key_and_reclaims_space() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments()).await;
    log.create_topic(&TopicConfig::compacted("c", 1))
        .await
        .unwrap();
    let mut latest: HashMap<String, Option<String>> = HashMap::new();
    for round in 0..40 {
        let batch: Vec<Record> = (0..10)
            .map(|k| {
                let key = format!("key{k}");
                if k == 3 && round == 39 {
                    latest.insert(key.clone(), None);
                    Record::tombstone(key)
                } else {
                    let v = format!("value-{round}-{k}-{}", "x".repeat(40));
                    latest.insert(key.clone(), Some(v.clone()));
                    Record::new(key, v)
                }
            })
            .collect();
        log.append_batch("c", batch).await.unwrap();
    }
    // Roll past the tombstone so it sits in a closed segment.
    for i in 0..100 {
        log.append("c", Record::new(format!("filler{}", i % 5), "y".repeat(60)))
            .await
            .unwrap();
        latest.insert(format!("filler{}", i % 5), Some("y".repeat(60)));
    }
    let before = log.disk_usage("c").unwrap();
    let segments_before = segment_files(dir.path(), "c", 0).len();
    let high_before = log.watermarks("c", 0).await.unwrap().high;

    let stats = log.compact_now().await.unwrap();
    assert!(stats.records_removed > 300, "{stats:?}");
    assert!(stats.bytes_reclaimed > 0);
    let after = log.disk_usage("c").unwrap();
    assert!(after * 3 < before, "disk usage {before} -> {after}");
    assert!(segment_files(dir.path(), "c", 0).len() < segments_before);
    assert_eq!(
        log.watermarks("c", 0).await.unwrap().high,
        high_before,
        "offsets are kept"
    );

    let check = |recs: Vec<imbus_log::ConsumedRecord>| {
        let mut folded: HashMap<String, Option<String>> = HashMap::new();
        let mut last = -1;
        for r in &recs {
            assert!(r.offset > last, "offsets increase");
            last = r.offset;
            let k = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
            folded.insert(
                k,
                r.value
                    .as_ref()
                    .map(|v| String::from_utf8(v.to_vec()).unwrap()),
            );
        }
        // The tombstone of key3 was dropped along with every older key3 value.
        assert!(!folded.contains_key("key3"));
        let expected: HashMap<_, _> = latest
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(folded, expected);
        recs.len()
    };
    let n = check(read_all(&log, "c", 0).await);
    assert!(n < 150, "{n} records left");
    // A second run has nothing to do.
    let again = log.compact_now().await.unwrap();
    assert_eq!(again.records_removed, 0);
    log.shutdown().await.unwrap();
    drop(log);
    // The compacted segments survive a restart.
    let log = open(dir.path(), small_segments()).await;
    assert_eq!(check(read_all(&log, "c", 0).await), n);
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn tombstones_are_kept_for_the_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        delete_retention: Duration::from_secs(3600),
        ..small_segments()
    };
    let log = open(dir.path(), options).await;
    log.create_topic(&TopicConfig::compacted("c", 1))
        .await
        .unwrap();
    log.append("c", Record::new("gone", "v1")).await.unwrap();
    log.append("c", Record::tombstone("gone")).await.unwrap();
    for i in 0..100 {
        log.append("c", Record::new(format!("k{}", i % 3), "z".repeat(80)))
            .await
            .unwrap();
    }
    log.compact_now().await.unwrap();
    let recs = read_all(&log, "c", 0).await;
    let gone: Vec<_> = recs
        .iter()
        .filter(|r| r.key.as_deref() == Some(&b"gone"[..]))
        .collect();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].offset, 1);
    assert_eq!(gone[0].value, None);
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn readers_skip_removed_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments()).await;
    log.create_topic(&TopicConfig::compacted("c", 1))
        .await
        .unwrap();
    for i in 0..200 {
        log.append("c", Record::new("same", format!("{i:0>60}")))
            .await
            .unwrap();
    }
    log.append("c", Record::new("other", "o")).await.unwrap();
    let mut reader = log.reader("c", 0, StartAt::Offset(5)).await.unwrap();
    let mut consumer = log
        .consumer(ConsumerOptions::new("g", &["c"]))
        .await
        .unwrap();
    log.compact_now().await.unwrap();
    // Offset 5 is gone: the reader moves on to what is retained.
    let recs = reader.read(1000, Duration::from_secs(5)).await.unwrap();
    assert!(recs[0].offset > 5);
    let mut offsets: Vec<i64> = recs.iter().map(|r| r.offset).collect();
    while *offsets.last().unwrap() < 200 {
        offsets.extend(
            reader
                .read(1000, Duration::from_secs(5))
                .await
                .unwrap()
                .iter()
                .map(|r| r.offset),
        );
    }
    assert!(offsets.contains(&199) && offsets.contains(&200));
    assert!(offsets.len() < 100);
    let mut seen = Vec::new();
    while !seen.contains(&200) {
        if let ConsumerEvent::Records(r) = consumer.poll(Duration::from_secs(5)).await.unwrap() {
            seen.extend(r.iter().map(|r| r.offset));
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn retention_deletes_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments()).await;
    let retention = Duration::from_secs(3600);
    log.create_topic(&TopicConfig::new("d", 1).with_retention(retention))
        .await
        .unwrap();
    log.create_topic(&TopicConfig::new("forever", 1))
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let old = now - 2 * 3600 * 1000;
    for topic in ["d", "forever"] {
        for i in 0..100 {
            log.append(
                topic,
                Record::new(format!("k{i}"), "o".repeat(100)).at(old + i),
            )
            .await
            .unwrap();
        }
        for i in 0..50 {
            log.append(topic, Record::new(format!("n{i}"), "n".repeat(100)).at(now))
                .await
                .unwrap();
        }
    }
    let mut reader = log.reader("d", 0, StartAt::Earliest).await.unwrap();
    let before = log.disk_usage("d").unwrap();
    let stats = log.compact_now().await.unwrap();
    assert!(
        stats.segments_removed > 0 && stats.records_expired > 0,
        "{stats:?}"
    );
    let w = log.watermarks("d", 0).await.unwrap();
    assert!(w.low > 0 && w.low <= 100, "low watermark {}", w.low);
    assert_eq!(w.high, 150);
    assert!(log.disk_usage("d").unwrap() < before);
    // Every record newer than the retention is still there.
    let recs = read_all(&log, "d", 0).await;
    assert_eq!(recs[0].offset, w.low);
    assert!(recs.iter().filter(|r| r.timestamp == now).count() == 50);
    // A reader positioned before the low watermark moves up to it.
    let r = reader.read(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(r[0].offset, w.low);
    // Topics without a retention keep everything.
    assert_eq!(log.watermarks("forever", 0).await.unwrap().low, 0);
    assert_eq!(read_all(&log, "forever", 0).await.len(), 150);
    log.shutdown().await.unwrap();
    drop(log);
    let log = open(dir.path(), small_segments()).await;
    assert_eq!(log.watermarks("d", 0).await.unwrap(), w);
    assert_eq!(
        read_all(&log, "d", 0).await[0].value,
        Some(Bytes::from("o".repeat(100)))
            .filter(|_| w.low < 100)
            .or(Some(Bytes::from("n".repeat(100))))
    );
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn background_compaction_runs_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        compaction_interval: Duration::from_millis(20),
        ..small_segments()
    };
    let log = open(dir.path(), options).await;
    log.create_topic(&TopicConfig::compacted("c", 1))
        .await
        .unwrap();
    for i in 0..300 {
        log.append("c", Record::new("k", format!("{i:0>50}")))
            .await
            .unwrap();
    }
    // What the appends wrote; compaction may already have started meanwhile.
    let before = log.stats().appended_bytes;
    let mut after = before;
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = log.disk_usage("c").unwrap();
        if after < before / 2 {
            break;
        }
    }
    assert!(after < before / 2, "{before} -> {after}");
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_keep_working_while_compaction_runs() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments()).await;
    log.create_topic(&TopicConfig::compacted("c", 1))
        .await
        .unwrap();
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 0..3000 {
                log.append(
                    "c",
                    Record::new(format!("k{}", i % 20), format!("{i:0>40}")),
                )
                .await
                .unwrap();
            }
        })
    };
    let reader = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut passes = 0;
            while passes < 30 {
                let mut r = log.reader("c", 0, StartAt::Earliest).await.unwrap();
                let high = log.watermarks("c", 0).await.unwrap().high;
                let mut last = -1;
                while r.position() < high {
                    for rec in r.read(100, Duration::from_secs(5)).await.unwrap() {
                        assert!(rec.offset > last, "offsets increase within a pass");
                        last = rec.offset;
                    }
                }
                passes += 1;
            }
        })
    };
    for _ in 0..30 {
        log.compact_now().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.unwrap();
    reader.await.unwrap();
    log.compact_now().await.unwrap();
    let recs = read_all(&log, "c", 0).await;
    let mut latest: HashMap<Bytes, Bytes> = HashMap::new();
    for r in recs {
        latest.insert(r.key.unwrap(), r.value.unwrap());
    }
    assert_eq!(latest.len(), 20);
    assert_eq!(
        latest[&Bytes::from("k19")],
        Bytes::from(format!("{:0>40}", 2999))
    );
    log.shutdown().await.unwrap();
}
