//! Appends, reads, durability and recovery of the embedded log.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::{open, opts, read_all, segment_files};
use imbus_log::{Log, LogError, Record, StartAt, TopicConfig};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions, FsyncPolicy};

#[tokio::test]
async fn append_read_and_watermarks() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), EmbeddedOptions::default()).await;
    log.create_topic(&TopicConfig::new("t", 2)).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..20 {
        let r = Record::new(format!("k{i}"), format!("v{i}"))
            .at(1000 + i)
            .header("h", "x");
        let pos = log.append("t", r.clone()).await.unwrap();
        assert_eq!(
            pos.partition,
            imbus_log::partition_for_key(format!("k{i}").as_bytes(), 2)
        );
        expected.push((pos, r));
    }
    for p in 0..2 {
        let recs = read_all(&log, "t", p).await;
        let mine: Vec<_> = expected
            .iter()
            .filter(|(pos, _)| pos.partition == p)
            .collect();
        assert_eq!(recs.len(), mine.len());
        for (got, (pos, r)) in recs.iter().zip(mine) {
            assert_eq!(got.offset, pos.offset);
            assert_eq!(got.key, r.key);
            assert_eq!(got.value, r.value);
            assert_eq!(got.timestamp, r.timestamp.unwrap());
            assert_eq!(got.header("h"), Some(&Bytes::from_static(b"x")));
        }
        let w = log.watermarks("t", p).await.unwrap();
        assert_eq!((w.low, w.high), (0, mine_len(&expected, p)));
    }
    let stats = log.stats();
    assert_eq!(stats.appended_records, 20);
    assert!(stats.fsyncs >= 1);
    log.shutdown().await.unwrap();
}

fn mine_len(expected: &[(imbus_log::Position, Record)], p: i32) -> i64 {
    expected
        .iter()
        .filter(|(pos, _)| pos.partition == p)
        .count() as i64
}

#[tokio::test]
async fn errors_are_precise() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        EmbeddedOptions {
            max_record_bytes: 100,
            ..opts()
        },
    )
    .await;
    log.create_topic(&TopicConfig::new("t", 2)).await.unwrap();
    log.create_topic(&TopicConfig::new("t", 2)).await.unwrap();
    assert!(matches!(
        log.create_topic(&TopicConfig::new("t", 3)).await,
        Err(LogError::TopicMismatch {
            existing: 2,
            requested: 3,
            ..
        })
    ));
    assert!(matches!(
        log.create_topic(&TopicConfig::new("bad/name", 1)).await,
        Err(LogError::InvalidArgument(_))
    ));
    assert!(matches!(
        log.append("nope", Record::new("k", "v")).await,
        Err(LogError::UnknownTopic(t)) if t == "nope"
    ));
    assert!(matches!(
        log.append_to("t", 2, Record::new("k", "v")).await,
        Err(LogError::UnknownPartition { partition: 2, .. })
    ));
    assert!(matches!(
        log.append("t", Record::new("k", vec![0u8; 101])).await,
        Err(LogError::RecordTooLarge {
            size: 102,
            limit: 100
        })
    ));
    // A keyless record goes to partition 0.
    let pos = log
        .append(
            "t",
            Record {
                value: Some(Bytes::from_static(b"v")),
                ..Record::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(pos.partition, 0);
    log.shutdown().await.unwrap();
    assert!(matches!(
        log.append("t", Record::new("k", "v")).await,
        Err(LogError::Closed)
    ));
    assert!(matches!(
        log.append_batch("t", vec![Record::new("k", "v")]).await,
        Err(LogError::Closed)
    ));
}

#[tokio::test]
async fn a_directory_opens_once() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!EmbeddedLog::in_use(dir.path()), "nothing opened it yet");
    let log = open(dir.path(), opts()).await;
    assert!(EmbeddedLog::in_use(dir.path()));
    let err = EmbeddedLog::open(dir.path(), opts()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("already open"), "{msg}");
    log.shutdown().await.unwrap();
    drop(log);
    assert!(
        !EmbeddedLog::in_use(dir.path()),
        "closed, the lock file stays"
    );
    let again = open(dir.path(), opts()).await;
    again.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_dense_ordered_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), EmbeddedOptions::default()).await;
    log.create_topic(&TopicConfig::new("t", 3)).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..50 {
                if i % 5 == 0 {
                    let batch: Vec<Record> = (0..10)
                        .map(|j| {
                            Record::new(format!("k{task}-{}", j % 4), format!("{task}:{i}:{j}"))
                        })
                        .collect();
                    let positions = log.append_batch("t", batch.clone()).await.unwrap();
                    got.extend(positions.into_iter().zip(batch));
                } else {
                    let r = Record::new(format!("k{task}-{}", i % 4), format!("{task}:{i}"));
                    got.push((log.append("t", r.clone()).await.unwrap(), r));
                }
            }
            got
        }));
    }
    let mut by_offset: HashMap<(i32, i64), Record> = HashMap::new();
    let mut per_key_order: HashMap<Bytes, Vec<(i32, i64)>> = HashMap::new();
    for t in tasks {
        for (pos, r) in t.await.unwrap() {
            per_key_order
                .entry(r.key.clone().unwrap())
                .or_default()
                .push((pos.partition, pos.offset));
            assert!(
                by_offset.insert((pos.partition, pos.offset), r).is_none(),
                "offset given twice"
            );
        }
    }
    // Each task appended the records of one key in order: offsets increase in that order.
    for offsets in per_key_order.values() {
        assert!(
            offsets
                .windows(2)
                .all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1)
        );
    }
    let mut total = 0;
    for p in 0..3 {
        let recs = read_all(&log, "t", p).await;
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.offset, i as i64, "offsets are dense");
            assert_eq!(by_offset[&(p, r.offset)].value, r.value);
        }
        total += recs.len();
    }
    assert_eq!(total, 16 * (40 + 10 * 10));
    log.shutdown().await.unwrap();
}

/// Appenders write the batch they find pending themselves; one that wrote two batches
/// while more kept coming leaves the queue to the writer thread. Under that churn every
/// record is stored once, each appender's records in its order, at dense offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appenders_and_the_writer_thread_take_turns_without_losing_order() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), opts()).await;
    log.create_topic(&TopicConfig::new("t", 2)).await.unwrap();
    let handed_over = Arc::new(AtomicBool::new(false));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for task in 0..16u32 {
        let log = log.clone();
        let handed_over = Arc::clone(&handed_over);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u32;
            loop {
                // Submitted without waiting, so submissions overlap the batches being
                // written; then all acknowledged together.
                let mut acks = Vec::new();
                for _ in 0..50 {
                    let record = Record::new(format!("k{task}"), format!("{task}:{sent}"));
                    let submission =
                        imbus_log::Submission::to_partition("t", (task % 2) as i32, record);
                    acks.push(log.submit(vec![submission]).await.unwrap());
                    sent += 1;
                }
                for ack in acks {
                    ack.await.unwrap();
                }
                if log.stats().writer_handoffs > 0 {
                    handed_over.store(true, Ordering::Relaxed);
                }
                let enough = sent >= 1_000 && handed_over.load(Ordering::Relaxed);
                if enough || tokio::time::Instant::now() > deadline {
                    return sent;
                }
            }
        }));
    }
    let mut sent = HashMap::new();
    for (task, t) in tasks.into_iter().enumerate() {
        sent.insert(task as u32, t.await.unwrap());
    }
    assert!(
        log.stats().writer_handoffs > 0,
        "no appender ever left the queue to the writer thread: {:?}",
        log.stats()
    );
    let mut next: HashMap<u32, u32> = HashMap::new();
    for p in 0..2 {
        for (i, r) in read_all(&log, "t", p).await.iter().enumerate() {
            assert_eq!(r.offset, i as i64, "offsets are dense");
            let value = std::str::from_utf8(r.value.as_ref().unwrap()).unwrap();
            let (task, n) = value.split_once(':').unwrap();
            let (task, n): (u32, u32) = (task.parse().unwrap(), n.parse().unwrap());
            assert_eq!(task % 2, p as u32, "record {value} in partition {p}");
            let expected = next.entry(task).or_default();
            assert_eq!(n, *expected, "task {task}: record {n} after {expected}");
            *expected += 1;
        }
    }
    assert_eq!(next, sent, "every record stored once");
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn reopen_keeps_records_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), EmbeddedOptions::default()).await;
        log.create_topic(&TopicConfig::compacted("c", 1))
            .await
            .unwrap();
        for i in 0..100 {
            log.append("c", Record::new(format!("k{i}"), format!("v{i}")))
                .await
                .unwrap();
        }
        log.shutdown().await.unwrap();
    }
    // Not shut down: dropped without a flush, like a crashed process.
    {
        let log = open(dir.path(), EmbeddedOptions::default()).await;
        assert_eq!(log.watermarks("c", 0).await.unwrap().high, 100);
        for i in 100..150 {
            log.append("c", Record::new(format!("k{i}"), format!("v{i}")))
                .await
                .unwrap();
        }
    }
    let log = open(dir.path(), EmbeddedOptions::default()).await;
    assert_eq!(log.partition_count("c").await.unwrap(), 1);
    let recs = read_all(&log, "c", 0).await;
    assert_eq!(recs.len(), 150);
    assert_eq!(recs[149].value.as_deref(), Some(&b"v149"[..]));
    assert!(
        log.create_topic(&TopicConfig::compacted("c", 1))
            .await
            .is_ok()
    );
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn segments_roll_and_seeks_use_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        segment_bytes: 16 * 1024,
        ..opts()
    };
    let log = open(dir.path(), options.clone()).await;
    log.create_topic(&TopicConfig::new("t", 1)).await.unwrap();
    let value = vec![b'x'; 200];
    for chunk in 0..20 {
        let batch: Vec<Record> = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                Record::new(format!("k{n}"), value.clone()).at(10_000 + n * 10)
            })
            .collect();
        let positions = log.append_batch("t", batch).await.unwrap();
        assert!(positions.iter().all(|p| p.partition == 0));
    }
    let files = segment_files(dir.path(), "t", 0);
    assert!(files.len() > 20, "only {} segments", files.len());
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 16 * 1024);
    }
    let check = |log: EmbeddedLog| async move {
        assert_eq!(log.watermarks("t", 0).await.unwrap().high, 2000);
        // Timestamps 10_000, 10_010, ...
        assert_eq!(log.offset_for_timestamp("t", 0, 0).await.unwrap(), Some(0));
        assert_eq!(
            log.offset_for_timestamp("t", 0, 10_000).await.unwrap(),
            Some(0)
        );
        assert_eq!(
            log.offset_for_timestamp("t", 0, 10_001).await.unwrap(),
            Some(1)
        );
        assert_eq!(
            log.offset_for_timestamp("t", 0, 25_555).await.unwrap(),
            Some(1556)
        );
        assert_eq!(
            log.offset_for_timestamp("t", 0, 29_990).await.unwrap(),
            Some(1999)
        );
        assert_eq!(
            log.offset_for_timestamp("t", 0, 29_991).await.unwrap(),
            None
        );
        let mut reader = log.reader("t", 0, StartAt::Offset(1234)).await.unwrap();
        let r = reader.read(3, Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            r.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [1234, 1235, 1236]
        );
        assert_eq!(r[0].key.as_deref(), Some(&b"k1234"[..]));
        reader.seek(StartAt::Timestamp(12_345)).await.unwrap();
        assert_eq!(reader.position(), 235);
        reader.seek(StartAt::Offset(5000)).await.unwrap();
        assert_eq!(reader.position(), 2000, "seeks clamp to the high watermark");
        reader.seek(StartAt::Latest).await.unwrap();
        assert!(
            reader
                .read(10, Duration::from_millis(20))
                .await
                .unwrap()
                .is_empty()
        );
        reader.seek(StartAt::Earliest).await.unwrap();
        assert_eq!(
            reader.read(1, Duration::from_secs(5)).await.unwrap()[0].offset,
            0
        );
        log.shutdown().await.unwrap();
    };
    check(log).await;
    // Again from the persisted indexes after a reopen.
    check(open(dir.path(), options).await).await;
}

#[tokio::test]
async fn offset_for_timestamp_with_unordered_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        EmbeddedOptions {
            segment_bytes: 2048,
            ..opts()
        },
    )
    .await;
    log.create_topic(&TopicConfig::new("t", 1)).await.unwrap();
    let times: Vec<i64> = (0..300).map(|i| (i * 7919) % 1000).collect();
    for t in &times {
        log.append_to("t", 0, Record::new("k", vec![0u8; 50]).at(*t))
            .await
            .unwrap();
    }
    for target in [0, 1, 500, 998, 999, 1000] {
        let expected = times.iter().position(|t| *t >= target).map(|i| i as i64);
        assert_eq!(
            log.offset_for_timestamp("t", 0, target).await.unwrap(),
            expected,
            "target {target}"
        );
    }
    log.shutdown().await.unwrap();
}

async fn write_records(dir: &std::path::Path, n: usize) {
    let log = open(dir, opts()).await;
    log.create_topic(&TopicConfig::new("t", 1)).await.unwrap();
    for i in 0..n {
        log.append_to(
            "t",
            0,
            Record::new(format!("key-{i}"), format!("value-{i}")).header("n", i.to_string()),
        )
        .await
        .unwrap();
    }
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn torn_tail_is_truncated_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 10).await;
    let seg = segment_files(dir.path(), "t", 0).pop().unwrap();
    let full = std::fs::read(&seg).unwrap();
    // The frame of the last record is the same size as the one before it.
    let last_len = full.len() / 10;
    let last_start = full.len() - last_len;
    for cut in last_start..full.len() {
        std::fs::write(&seg, &full[..cut]).unwrap();
        let log = open(dir.path(), opts()).await;
        let recs = read_all(&log, "t", 0).await;
        assert_eq!(recs.len(), 9, "cut at {cut}");
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
        }
        // The log goes on from the truncated end.
        let pos = log
            .append_to("t", 0, Record::new("key-9", "again"))
            .await
            .unwrap();
        assert_eq!(pos.offset, 9);
        log.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn the_zero_filled_end_of_a_segment_is_not_data() {
    // The same records, stopped cleanly: the segment ends at its last record.
    let clean = tempfile::tempdir().unwrap();
    write_records(clean.path(), 10).await;
    let exact = std::fs::read(segment_files(clean.path(), "t", 0).pop().unwrap()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let synced = EmbeddedOptions {
        fsync: FsyncPolicy::Always,
        ..opts()
    };
    {
        let log = open(dir.path(), synced.clone()).await;
        log.create_topic(&TopicConfig::new("t", 1)).await.unwrap();
        for i in 0..10 {
            log.append_to(
                "t",
                0,
                Record::new(format!("key-{i}"), format!("value-{i}")).header("n", i.to_string()),
            )
            .await
            .unwrap();
        }
        // Dropped without a shutdown, like a crashed process.
    }
    let seg = segment_files(dir.path(), "t", 0).pop().unwrap();
    let crashed = std::fs::read(&seg).unwrap();
    assert!(
        crashed.len() >= exact.len() + 64 * 1024,
        "zero-filled ahead of the records: {} bytes against {}",
        crashed.len(),
        exact.len()
    );
    // (Same sizes, not the same bytes: the records' timestamps differ.)
    assert_ne!(crashed[exact.len() - 1], 0);
    assert!(crashed[exact.len()..].iter().all(|b| *b == 0));

    let log = open(dir.path(), synced.clone()).await;
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        exact.len() as u64,
        "recovery cuts the zeros off"
    );
    assert_eq!(read_all(&log, "t", 0).await.len(), 10);
    let pos = log
        .append_to("t", 0, Record::new("key-10", "value-10").header("n", "10"))
        .await
        .unwrap();
    assert_eq!(pos.offset, 10);
    log.shutdown().await.unwrap();
    let stopped = std::fs::read(&seg).unwrap();
    assert!(stopped.len() > exact.len());
    assert_ne!(stopped.last(), Some(&0), "a clean stop cuts the zeros off");
    let log = open(dir.path(), synced.clone()).await;
    let recs = read_all(&log, "t", 0).await;
    assert_eq!(recs.len(), 11);
    assert_eq!(recs[10].value.as_deref(), Some(&b"value-10"[..]));
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn bulk_writes_are_not_zero_filled() {
    // Fsyncs covering 100 KiB each: writing zeros ahead would double the bytes written, so
    // the file only grows with its records.
    let dir = tempfile::tempdir().unwrap();
    {
        let synced = EmbeddedOptions {
            fsync: FsyncPolicy::Always,
            ..opts()
        };
        let log = open(dir.path(), synced).await;
        log.create_topic(&TopicConfig::new("t", 1)).await.unwrap();
        for b in 0..30 {
            let batch: Vec<Record> = (0..10)
                .map(|i| Record::new(format!("k{b}-{i}"), vec![b'x'; 10 * 1024]).header("n", "1"))
                .collect();
            log.append_batch("t", batch).await.unwrap();
        }
        // Dropped without a shutdown, like a crashed process.
    }
    let seg = segment_files(dir.path(), "t", 0).pop().unwrap();
    let data = std::fs::read(&seg).unwrap();
    assert!(data.len() > 3_000_000, "{} bytes", data.len());
    assert_ne!(data.last(), Some(&0), "the file ends with its last record");
    let log = open(dir.path(), opts()).await;
    assert_eq!(read_all(&log, "t", 0).await.len(), 300);
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn corruption_in_the_middle_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 10).await;
    let seg = segment_files(dir.path(), "t", 0).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(&seg, &data).unwrap();
    let err = EmbeddedLog::open(dir.path(), opts()).await.unwrap_err();
    match err {
        LogError::Corrupt { path, detail } => {
            assert_eq!(path, seg.display().to_string());
            assert!(!detail.is_empty());
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[tokio::test]
async fn corruption_in_a_closed_segment_is_reported_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        segment_bytes: 1024,
        ..opts()
    };
    {
        let log = open(dir.path(), options.clone()).await;
        log.create_topic(&TopicConfig::new("t", 1)).await.unwrap();
        for i in 0..100 {
            log.append_to("t", 0, Record::new(format!("k{i}"), vec![b'v'; 60]))
                .await
                .unwrap();
        }
        log.shutdown().await.unwrap();
    }
    let first = segment_files(dir.path(), "t", 0).remove(0);
    let mut data = std::fs::read(&first).unwrap();
    let len = data.len();
    data[len - 10] ^= 0xff;
    std::fs::write(&first, &data).unwrap();
    // The closed segment's index still matches its size, so open does not scan it.
    let log = open(dir.path(), options).await;
    let mut reader = log.reader("t", 0, StartAt::Earliest).await.unwrap();
    let err = reader.read(1000, Duration::from_secs(1)).await.unwrap_err();
    assert!(
        matches!(err, LogError::Corrupt { ref path, .. } if *path == first.display().to_string()),
        "{err}"
    );
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn fsync_policies_all_persist_on_shutdown() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_millis(5)),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = EmbeddedOptions {
            fsync: policy,
            ..opts()
        };
        let log = open(dir.path(), options.clone()).await;
        log.create_topic(&TopicConfig::new("t", 1)).await.unwrap();
        let batch: Vec<Record> = (0..1000)
            .map(|i| Record::new("k", format!("{i}")))
            .collect();
        log.append_batch("t", batch).await.unwrap();
        log.shutdown().await.unwrap();
        assert!(log.stats().fsyncs >= 1, "{policy}: shutdown fsyncs");
        drop(log);
        let log = open(dir.path(), options).await;
        assert_eq!(log.watermarks("t", 0).await.unwrap().high, 1000, "{policy}");
        log.shutdown().await.unwrap();
    }
}

#[test]
fn fsync_policy_parsing() {
    assert_eq!(FsyncPolicy::parse("always"), Ok(FsyncPolicy::Always));
    assert_eq!(FsyncPolicy::parse(" Never "), Ok(FsyncPolicy::Never));
    assert_eq!(
        FsyncPolicy::parse("interval:250"),
        Ok(FsyncPolicy::Interval(Duration::from_millis(250)))
    );
    for bad in [
        "",
        "sometimes",
        "interval:",
        "interval:abc",
        "interval:0",
        "interval:-5",
    ] {
        let err = FsyncPolicy::parse(bad).unwrap_err();
        assert!(err.contains(&format!("{bad:?}")), "{err}");
        assert!(
            err.contains("always") && err.contains("never") && err.contains("interval:"),
            "{err}"
        );
    }
    for p in [
        FsyncPolicy::Always,
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_millis(7)),
    ] {
        assert_eq!(FsyncPolicy::parse(&p.to_string()), Ok(p));
    }
}

#[tokio::test]
async fn readers_wake_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), EmbeddedOptions::default()).await;
    log.create_topic(&TopicConfig::new("t", 1)).await.unwrap();
    let mut reader = log.reader("t", 0, StartAt::Latest).await.unwrap();
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            log.append_to("t", 0, Record::new("k", "v")).await.unwrap();
        })
    };
    // Far longer than the append takes: the read returns when woken, not at the timeout.
    let recs = reader.read(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(reader.position(), 1);
    writer.await.unwrap();
    log.shutdown().await.unwrap();
    assert!(matches!(
        reader.read(1, Duration::from_millis(1)).await,
        Err(LogError::Closed)
    ));
}

/// Records a processor derives (`submit_derived`) are acknowledged once written, and are
/// on disk before any offset commit submitted after them is acknowledged; a derived
/// submission with a changelog record is acknowledged on disk, with the derived records
/// before it. (The periodic sync is pushed out of the test's way.)
#[tokio::test]
async fn derived_records_are_synced_before_the_next_commit() {
    use imbus_log::{ConsumerEvent, ConsumerOptions, Submission, TopicPartition};
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        EmbeddedOptions {
            derived_sync_after: Duration::from_secs(3600),
            ..EmbeddedOptions::default()
        },
    )
    .await;
    log.create_topic(&TopicConfig::new("in", 1)).await.unwrap();
    log.create_topic(&TopicConfig::new("out", 1)).await.unwrap();
    log.create_topic(&TopicConfig::compacted("state", 1))
        .await
        .unwrap();
    let mut consumer = log
        .consumer(ConsumerOptions::new("g", &["in"]))
        .await
        .unwrap();
    log.append("in", Record::new("k", "input")).await.unwrap();
    let mut read = 0;
    while read == 0 {
        if let ConsumerEvent::Records(records) =
            consumer.poll(Duration::from_secs(5)).await.unwrap()
        {
            read = records.len();
        }
    }

    let before = log.stats();
    log.submit_derived(vec![Submission::keyed("out", Record::new("k", "output"))])
        .await
        .unwrap()
        .await
        .unwrap();
    let after = log.stats();
    assert_eq!(
        after.fsyncs, before.fsyncs,
        "a derived record waits for its fsync"
    );
    assert_eq!(after.unsynced_derived_files, 1);
    // Visible to readers at once.
    assert_eq!(read_all(&log, "out", 0).await.len(), 1);

    let tp = TopicPartition::new("in", 0);
    consumer.commit(&[(tp.clone(), 1)]).await.unwrap();
    let committed = log.stats();
    assert_eq!(
        committed.unsynced_derived_files, 0,
        "synced before the commit"
    );
    assert!(
        committed.fsyncs >= after.fsyncs + 2,
        "the output's segment and the offsets file: {} -> {}",
        after.fsyncs,
        committed.fsyncs
    );
    assert_eq!(log.committed("g", &tp).await.unwrap(), Some(1));

    // A changelog record among derived ones: acknowledged once all are on disk.
    log.submit_derived(vec![Submission::keyed("out", Record::new("k", "output 2"))])
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(log.stats().unsynced_derived_files, 1);
    log.submit_derived(vec![
        Submission::keyed("out", Record::new("k", "output 3")),
        Submission::keyed("state", Record::new("k", "state")),
    ])
    .await
    .unwrap()
    .await
    .unwrap();
    assert_eq!(log.stats().unsynced_derived_files, 0);

    // Shutting down syncs what still waits; a reopened log has every record.
    log.submit_derived(vec![Submission::keyed("out", Record::new("k", "output 4"))])
        .await
        .unwrap()
        .await
        .unwrap();
    drop(consumer);
    log.shutdown().await.unwrap();
    drop(log);
    let log = open(dir.path(), EmbeddedOptions::default()).await;
    let values: Vec<_> = read_all(&log, "out", 0)
        .await
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(
        values,
        ["output", "output 2", "output 3", "output 4"].map(|v| Bytes::from_static(v.as_bytes()))
    );
    log.shutdown().await.unwrap();
}

/// Under the other policies a derived submission is an ordinary one.
#[tokio::test]
async fn derived_records_under_fsync_never_are_plain_appends() {
    use imbus_log::Submission;
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        EmbeddedOptions {
            fsync: FsyncPolicy::Never,
            ..EmbeddedOptions::default()
        },
    )
    .await;
    log.create_topic(&TopicConfig::new("out", 1)).await.unwrap();
    log.submit_derived(vec![Submission::keyed("out", Record::new("k", "output"))])
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(log.stats().unsynced_derived_files, 0);
    assert_eq!(read_all(&log, "out", 0).await.len(), 1);
    log.shutdown().await.unwrap();
}
