//! The log contract suite: what every [`Log`] backend guarantees, one async function per
//! guarantee, run against each backend through a [`LogFactory`].
//!
//! Every contract creates its own uniquely named topics and groups, so contracts can run
//! concurrently against one broker or one directory. The [`contract_tests!`] macro
//! generates one `#[tokio::test]` per contract for a backend's test file.
//!
//! Nothing here measures time: waits are bounded by a generous [`PATIENCE`] only so that a
//! broken backend fails instead of hanging.
//!
//! [`contract_tests!`]: crate::contract_tests

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use imbus_log::{
    ConsumedRecord, Consumer, ConsumerEvent, ConsumerOptions, Log, LogError, Offset, Partition,
    Position, Record, StartAt, Submission, TopicConfig, TopicPartition, partition_for_key,
};
use tokio::time::Instant;

/// Opens handles on one backend's storage.
#[async_trait]
pub trait LogFactory: Send + Sync {
    /// A fresh handle on the same storage. When a contract reopens, the previous handle has
    /// been shut down and dropped first (a process restart).
    async fn open(&self) -> Arc<dyn Log>;

    /// The backend's name, for messages.
    fn name(&self) -> &str;
}

/// The longest any single expectation may take before a contract fails.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// How long one consumer poll waits in the group contracts.
const POLL: Duration = Duration::from_millis(200);

/// A topic (or group) name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn ok<T, E: Debug>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: {error:?}"),
    }
}

/// Shuts the log down, drops it (it must be the last handle) and opens it again.
pub async fn restart(factory: &dyn LogFactory, log: Arc<dyn Log>) -> Arc<dyn Log> {
    ok(log.shutdown().await, "shutdown");
    assert_eq!(
        Arc::strong_count(&log),
        1,
        "the contract still holds another handle on the log it restarts"
    );
    drop(log);
    factory.open().await
}

/// Reads a partition from `start` up to its high watermark as of now.
pub async fn read_to_end(
    log: &dyn Log,
    topic: &str,
    partition: Partition,
    start: StartAt,
) -> Vec<ConsumedRecord> {
    let high = ok(log.watermarks(topic, partition).await, "watermarks").high;
    let mut reader = ok(log.reader(topic, partition, start).await, "open reader");
    let deadline = Instant::now() + PATIENCE;
    let mut records = Vec::new();
    while reader.position() < high {
        assert!(
            Instant::now() < deadline,
            "reader of {topic}/{partition} stuck at {} below the high watermark {high}",
            reader.position()
        );
        let batch = ok(
            reader.read(1000, Duration::from_secs(5)).await,
            "read partition",
        );
        records.extend(batch);
    }
    records
}

/// Folds a topic the way a changelog is restored: every partition from the start, last
/// value per key wins, a tombstone removes its key.
pub async fn fold_topic(log: &dyn Log, topic: &str) -> BTreeMap<Bytes, Bytes> {
    let partitions = ok(log.partition_count(topic).await, "partition count");
    let mut state = BTreeMap::new();
    for partition in 0..partitions {
        for record in read_to_end(log, topic, partition, StartAt::Earliest).await {
            let Some(key) = record.key else {
                panic!("changelog record without a key at {topic}/{partition}");
            };
            match record.value {
                Some(value) => state.insert(key, value),
                None => state.remove(&key),
            };
        }
    }
    state
}

/// Writes a changelog: `rounds` updates of `keys` keys, then tombstones for every third
/// key, then a new value for one tombstoned key. Returns the expected folded state.
pub async fn write_changelog(
    log: &dyn Log,
    topic: &str,
    keys: usize,
    rounds: usize,
    value_size: usize,
) -> BTreeMap<Bytes, Bytes> {
    let mut expected = BTreeMap::new();
    let padding = "x".repeat(value_size);
    for round in 0..rounds {
        let batch: Vec<Record> = (0..keys)
            .map(|k| {
                Record::new(
                    format!("key-{k}"),
                    format!("round-{round}-key-{k}-{padding}"),
                )
            })
            .collect();
        for record in &batch {
            if let (Some(key), Some(value)) = (&record.key, &record.value) {
                expected.insert(key.clone(), value.clone());
            }
        }
        ok(
            log.append_batch(topic, batch).await,
            "append changelog batch",
        );
    }
    for k in (0..keys).step_by(3) {
        let key = Bytes::from(format!("key-{k}"));
        ok(
            log.append(topic, Record::tombstone(key.clone())).await,
            "append tombstone",
        );
        expected.remove(&key);
    }
    let revived = Bytes::from("key-0");
    let value = Bytes::from("revived after its tombstone");
    ok(
        log.append(topic, Record::new(revived.clone(), value.clone()))
            .await,
        "append after tombstone",
    );
    expected.insert(revived, value);
    expected
}

fn assert_same_record(got: &ConsumedRecord, offset: Offset, want: &Record, backend: &str) {
    assert_eq!(got.offset, offset, "[{backend}] offset");
    assert_eq!(got.key, want.key, "[{backend}] key at offset {offset}");
    assert_eq!(
        got.value, want.value,
        "[{backend}] value at offset {offset}"
    );
    assert_eq!(
        got.headers, want.headers,
        "[{backend}] headers at offset {offset}"
    );
    match want.timestamp {
        Some(timestamp) => assert_eq!(got.timestamp, timestamp, "[{backend}] timestamp"),
        None => assert!(
            got.timestamp > 0,
            "[{backend}] the log stamps the append time"
        ),
    }
}

/// Records appended to each partition are read back in the order of their positions,
/// exactly as appended (keys, values, tombstones, empty values, headers, timestamps), and
/// positions increase per partition for appends one by one, in batches and concurrently.
pub async fn per_partition_order(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let topic = unique_name("order");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 4)).await,
        "create topic",
    );
    let base = 1_700_000_000_000_i64;
    let make = move |i: i64| {
        let mut record = Record::new(format!("user-{}", i % 37), format!("value-{i}"))
            .at(base + i)
            .header("seq", i.to_string())
            .header("kind", "order");
        if i % 50 == 7 {
            record.value = None;
        }
        if i % 50 == 8 {
            record.value = Some(Bytes::new());
        }
        if i % 50 == 9 {
            record.timestamp = None;
            record.headers.clear();
        }
        record
    };

    let mut appended: Vec<(Position, Record)> = Vec::new();
    for i in 0..80 {
        let record = make(i);
        let position = ok(log.append(&topic, record.clone()).await, "append");
        appended.push((position, record));
    }
    let batch: Vec<Record> = (80..160).map(make).collect();
    let positions = ok(
        log.append_batch(&topic, batch.clone()).await,
        "append batch",
    );
    assert_eq!(
        positions.len(),
        batch.len(),
        "[{backend}] one position per record"
    );
    appended.extend(positions.into_iter().zip(batch));

    // Concurrent producers: each one's records keep their order within a partition.
    let mut tasks = Vec::new();
    for producer in 0..4_i64 {
        let log = log.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..30 {
                let record = make(1000 + producer * 100 + i);
                let position = ok(
                    log.append(&topic, record.clone()).await,
                    "concurrent append",
                );
                mine.push((position, record));
            }
            mine
        }));
    }
    for task in tasks {
        let mine = ok(task.await, "producer task");
        let mut last: BTreeMap<Partition, Offset> = BTreeMap::new();
        for (position, _) in &mine {
            if let Some(previous) = last.insert(position.partition, position.offset) {
                assert!(
                    position.offset > previous,
                    "[{backend}] a producer's appends to one partition got decreasing positions"
                );
            }
        }
        appended.extend(mine);
    }

    let mut expected: BTreeMap<Partition, BTreeMap<Offset, Record>> = BTreeMap::new();
    for (position, record) in &appended {
        let key = record.key.as_deref().unwrap_or_default();
        assert_eq!(
            position.partition,
            partition_for_key(key, 4),
            "[{backend}] keyed record on the wrong partition"
        );
        let previous = expected
            .entry(position.partition)
            .or_default()
            .insert(position.offset, record.clone());
        assert!(
            previous.is_none(),
            "[{backend}] two appends got position {position:?}"
        );
    }
    // Sequential appends (one by one, then the batch) got increasing positions.
    let mut last: BTreeMap<Partition, Offset> = BTreeMap::new();
    for (position, _) in &appended[..160] {
        if let Some(previous) = last.insert(position.partition, position.offset) {
            assert!(
                position.offset > previous,
                "[{backend}] positions must increase"
            );
        }
    }

    for (partition, records) in &expected {
        let read = read_to_end(&*log, &topic, *partition, StartAt::Earliest).await;
        assert_eq!(
            read.len(),
            records.len(),
            "[{backend}] partition {partition} holds what was appended"
        );
        for (got, (offset, want)) in read.iter().zip(records) {
            assert_eq!(&*got.topic, topic.as_str());
            assert_eq!(got.partition, *partition);
            assert_same_record(got, *offset, want, &backend);
        }
    }
    ok(log.shutdown().await, "shutdown");
}

/// A keyed record lands on `partition_for_key(key, partitions)` (Kafka's murmur2
/// partitioner); a record without a key on partition 0.
pub async fn key_placement(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let topic = unique_name("placement");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 7)).await,
        "create topic",
    );
    let mut keys: Vec<Vec<u8>> = (0..120)
        .map(|i| format!("user{i}@example.com").into_bytes())
        .collect();
    keys.push(Vec::new());
    keys.push("ünïcødé@exämple.org/résource".as_bytes().to_vec());
    keys.push(vec![0xff; 300]);
    let mut placed: BTreeMap<Partition, Vec<Vec<u8>>> = BTreeMap::new();
    for key in &keys {
        let position = ok(
            log.append(&topic, Record::new(key.clone(), "v")).await,
            "append",
        );
        assert_eq!(
            position.partition,
            partition_for_key(key, 7),
            "[{backend}] key {key:?}"
        );
        placed
            .entry(position.partition)
            .or_default()
            .push(key.clone());
    }
    assert!(placed.len() > 1, "the keys spread over several partitions");
    let keyless = Record {
        value: Some(Bytes::from("no key")),
        ..Record::default()
    };
    let position = ok(log.append(&topic, keyless).await, "append without key");
    assert_eq!(
        position.partition, 0,
        "[{backend}] a record without key goes to partition 0"
    );
    for (partition, keys) in placed {
        let read = read_to_end(&*log, &topic, partition, StartAt::Earliest).await;
        let read_keys: Vec<Vec<u8>> = read
            .iter()
            .filter_map(|r| r.key.as_ref().map(|k| k.to_vec()))
            .collect();
        assert_eq!(
            read_keys, keys,
            "[{backend}] partition {partition} holds its keys"
        );
    }
    ok(log.shutdown().await, "shutdown");
}

/// Watermarks: an empty partition is `0..0`; `high` is the offset the next record gets.
pub async fn watermarks(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let topic = unique_name("watermarks");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 2)).await,
        "create topic",
    );
    for partition in 0..2 {
        let marks = ok(log.watermarks(&topic, partition).await, "watermarks");
        assert_eq!(
            (marks.low, marks.high),
            (0, 0),
            "[{backend}] empty partition"
        );
    }
    let mut last = None;
    for i in 0..5 {
        last = Some(ok(
            log.append_to(&topic, 0, Record::new(format!("k{i}"), "v"))
                .await,
            "append_to",
        ));
    }
    let last = last.map(|p| p.offset).unwrap_or_default();
    let marks = ok(log.watermarks(&topic, 0).await, "watermarks");
    assert_eq!(marks.low, 0, "[{backend}] nothing was removed");
    assert_eq!(marks.high, last + 1, "[{backend}] high is the next offset");
    let next = ok(
        log.append_to(&topic, 0, Record::new("k", "v")).await,
        "append_to",
    );
    assert_eq!(
        next.offset, marks.high,
        "[{backend}] the next record gets `high`"
    );
    let other = ok(log.watermarks(&topic, 1).await, "watermarks");
    assert_eq!(
        (other.low, other.high),
        (0, 0),
        "[{backend}] other partition untouched"
    );
    ok(log.shutdown().await, "shutdown");
}

/// Polls until `done` holds, failing with `what` after [`PATIENCE`].
async fn collect_records(
    consumer: &mut dyn Consumer,
    topic: &str,
    backend: &str,
    mut done: impl FnMut(&BTreeMap<Partition, Vec<ConsumedRecord>>) -> bool,
    what: &str,
) -> BTreeMap<Partition, Vec<ConsumedRecord>> {
    let deadline = Instant::now() + PATIENCE;
    let mut assigned: BTreeSet<Partition> = BTreeSet::new();
    let mut records: BTreeMap<Partition, Vec<ConsumedRecord>> = BTreeMap::new();
    while !done(&records) {
        assert!(
            Instant::now() < deadline,
            "[{backend}] {what}: gave up; assigned {assigned:?}, received {:?}",
            records
                .iter()
                .map(|(p, rs)| (p, rs.len()))
                .collect::<Vec<_>>()
        );
        match ok(consumer.poll(POLL).await, "poll") {
            ConsumerEvent::Assigned(tps) => {
                assigned.extend(
                    tps.iter()
                        .filter(|tp| &*tp.topic == topic)
                        .map(|tp| tp.partition),
                );
            }
            ConsumerEvent::Revoked(tps) => {
                for tp in tps {
                    assigned.remove(&tp.partition);
                }
            }
            ConsumerEvent::Records(batch) => {
                for record in batch {
                    assert!(
                        assigned.contains(&record.partition),
                        "[{backend}] a record of partition {} arrived before its Assigned event",
                        record.partition
                    );
                    records.entry(record.partition).or_default().push(record);
                }
            }
        }
    }
    records
}

/// At-least-once: a member that crashes (dropped without committing, log reopened) leaves
/// the group's committed offsets behind; the next member resumes exactly there and sees
/// the uncommitted records again.
pub async fn resume_after_crash(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let topic = unique_name("resume");
    let group = unique_name("resume-group");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 3)).await,
        "create topic",
    );
    let mut appended: BTreeMap<Partition, Vec<Offset>> = BTreeMap::new();
    for i in 0..60 {
        let partition = i % 3;
        let position = ok(
            log.append_to(
                &topic,
                partition,
                Record::new(format!("k{i}"), format!("v{i}")),
            )
            .await,
            "append_to",
        );
        appended.entry(partition).or_default().push(position.offset);
    }

    let mut consumer = ok(
        log.consumer(ConsumerOptions::new(&group, &[&topic])).await,
        "join group",
    );
    let received = collect_records(
        consumer.as_mut(),
        &topic,
        &backend,
        |r| r.values().map(Vec::len).sum::<usize>() >= 60,
        "first member reads everything",
    )
    .await;
    let mut commits = Vec::new();
    for (partition, records) in &received {
        let offsets: Vec<Offset> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            &offsets, &appended[partition],
            "[{backend}] first member reads in order"
        );
        commits.push((
            TopicPartition::new(topic.as_str(), *partition),
            records[9].offset + 1,
        ));
    }
    ok(consumer.commit(&commits).await, "commit");
    for (tp, offset) in &commits {
        assert_eq!(
            ok(log.committed(&group, tp).await, "committed"),
            Some(*offset),
            "[{backend}] committed offset of {tp}"
        );
    }
    // The crash: the member goes away without committing the rest, the process restarts.
    drop(consumer);
    let log = restart(factory, log).await;

    for (tp, offset) in &commits {
        assert_eq!(
            ok(log.committed(&group, tp).await, "committed after restart"),
            Some(*offset),
            "[{backend}] committed offsets survive a restart"
        );
    }
    let mut consumer = ok(
        log.consumer(ConsumerOptions::new(&group, &[&topic])).await,
        "rejoin group",
    );
    let received = collect_records(
        consumer.as_mut(),
        &topic,
        &backend,
        |r| r.values().map(Vec::len).sum::<usize>() >= 30,
        "the next member resumes from the committed offsets",
    )
    .await;
    let mut final_commits = Vec::new();
    for (partition, records) in &received {
        let offsets: Vec<Offset> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            appended[partition][10..].to_vec(),
            "[{backend}] partition {partition} resumes at the committed offset and sees the \
             uncommitted records again"
        );
        if let Some(last) = records.last() {
            final_commits.push((
                TopicPartition::new(topic.as_str(), *partition),
                last.offset + 1,
            ));
        }
    }
    ok(consumer.commit(&final_commits).await, "commit");
    ok(consumer.close().await, "close");
    for (tp, offset) in &final_commits {
        assert_eq!(
            ok(log.committed(&group, tp).await, "committed"),
            Some(*offset)
        );
    }
    ok(log.shutdown().await, "shutdown");
}

/// A started commit ([`Consumer::start_commit`]) leaves the consumer free to poll while it
/// is stored; commits are stored in the order they were started (the later one is the
/// group's offset when both are acknowledged), and survive a restart.
pub async fn started_commits_keep_order(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let topic = unique_name("started-commit");
    let group = unique_name("started-commit-group");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 1)).await,
        "create topic",
    );
    for i in 0..20 {
        ok(
            log.append_to(&topic, 0, Record::new(format!("k{i}"), format!("v{i}")))
                .await,
            "append_to",
        );
    }
    let mut consumer = ok(
        log.consumer(ConsumerOptions::new(&group, &[&topic])).await,
        "join group",
    );
    collect_records(
        consumer.as_mut(),
        &topic,
        &backend,
        |r| r.values().map(Vec::len).sum::<usize>() >= 20,
        "the member reads everything",
    )
    .await;
    let tp = TopicPartition::new(topic.as_str(), 0);
    let first = ok(
        consumer.start_commit(&[(tp.clone(), 5)]).await,
        "start the first commit",
    );
    let second = ok(
        consumer.start_commit(&[(tp.clone(), 12)]).await,
        "start the second commit",
    );
    ok(
        consumer.poll(Duration::from_millis(50)).await,
        "poll while commits are stored",
    );
    ok(second.await, "the second commit is stored");
    ok(first.await, "the first commit is stored");
    assert_eq!(
        ok(log.committed(&group, &tp).await, "committed"),
        Some(12),
        "[{backend}] the commit started last is the group's offset"
    );
    drop(consumer);
    let log = restart(factory, log).await;
    assert_eq!(
        ok(log.committed(&group, &tp).await, "committed after restart"),
        Some(12),
        "[{backend}] a started commit survives a restart once acknowledged"
    );
    ok(log.shutdown().await, "shutdown");
}

/// A group without committed offsets starts where `start_if_uncommitted` says (here an
/// explicit offset), and a member can move its position on an owned partition with
/// `seek` (to the start, an offset or a time) and replays from there.
pub async fn consumer_start_and_seek(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let topic = unique_name("seek");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 1)).await,
        "create topic",
    );
    let base = 1_700_000_000_000_i64;
    let mut offsets = Vec::new();
    for i in 0..20 {
        let record = Record::new(format!("k{i}"), format!("v{i}")).at(base + i * 1000);
        offsets.push(ok(log.append_to(&topic, 0, record).await, "append_to").offset);
    }
    let mut options = ConsumerOptions::new(unique_name("seek-g"), &[&topic]);
    options.start_if_uncommitted = StartAt::Offset(offsets[5]);
    let mut consumer = ok(log.consumer(options).await, "join group");
    let received = collect_records(
        consumer.as_mut(),
        &topic,
        &backend,
        |r| r.get(&0).is_some_and(|rs| rs.len() >= 15),
        "start at the configured offset",
    )
    .await;
    let got: Vec<Offset> = received[&0].iter().map(|r| r.offset).collect();
    assert_eq!(
        got,
        offsets[5..].to_vec(),
        "[{backend}] starts at StartAt::Offset"
    );

    let tp = TopicPartition::new(topic.as_str(), 0);
    let cases = [
        (StartAt::Earliest, 0),
        (StartAt::Offset(offsets[12]), 12),
        (StartAt::Timestamp(base + 7_500), 8),
    ];
    for (start, index) in cases {
        ok(consumer.seek(&tp, start).await, "seek");
        let deadline = Instant::now() + PATIENCE;
        let mut replayed: Vec<Offset> = Vec::new();
        while replayed.len() < offsets.len() - index {
            assert!(
                Instant::now() < deadline,
                "[{backend}] replay after seek to {start:?} stalled at {replayed:?}"
            );
            match ok(consumer.poll(POLL).await, "poll") {
                ConsumerEvent::Records(records) => {
                    replayed.extend(records.iter().map(|r| r.offset));
                }
                event => panic!("[{backend}] unexpected {event:?} while replaying"),
            }
        }
        assert_eq!(
            replayed,
            offsets[index..].to_vec(),
            "[{backend}] replay after seek to {start:?}"
        );
    }
    ok(consumer.close().await, "close");
    ok(log.shutdown().await, "shutdown");
}

/// Shared bookkeeping of the group contract: what was appended, what the group
/// committed (successful commits only) and what any member saw.
struct GroupRun {
    backend: String,
    topic: String,
    partitions: Partition,
    appended: BTreeMap<Partition, Vec<Offset>>,
    committed: BTreeMap<Partition, Offset>,
    seen: BTreeMap<Partition, BTreeSet<Offset>>,
}

struct Member {
    name: &'static str,
    consumer: Box<dyn Consumer>,
    owned: BTreeSet<Partition>,
    /// Per owned partition: the offset after the last record this member got.
    cursor: BTreeMap<Partition, Offset>,
    commits: bool,
}

impl Member {
    async fn join(log: &dyn Log, group: &str, topic: &str, name: &'static str) -> Member {
        let consumer = ok(
            log.consumer(ConsumerOptions::new(group, &[topic])).await,
            "join group",
        );
        Member {
            name,
            consumer,
            owned: BTreeSet::new(),
            cursor: BTreeMap::new(),
            commits: true,
        }
    }

    /// One poll: tracks assignments, checks that records of a partition continue exactly
    /// where the group committed (on assignment) or where the member was (afterwards),
    /// and commits them if this member commits.
    async fn step(&mut self, run: &mut GroupRun) {
        let backend = run.backend.clone();
        match ok(self.consumer.poll(POLL).await, "poll") {
            ConsumerEvent::Assigned(tps) => {
                for tp in tps {
                    assert_eq!(&*tp.topic, run.topic.as_str());
                    self.owned.insert(tp.partition);
                    self.cursor.remove(&tp.partition);
                }
            }
            ConsumerEvent::Revoked(tps) => {
                for tp in tps {
                    self.owned.remove(&tp.partition);
                    self.cursor.remove(&tp.partition);
                }
            }
            ConsumerEvent::Records(records) => {
                let mut next: BTreeMap<Partition, Offset> = BTreeMap::new();
                for record in records {
                    let partition = record.partition;
                    assert!(
                        self.owned.contains(&partition),
                        "[{backend}] {} got a record of partition {partition}, which it does \
                         not own",
                        self.name
                    );
                    let from = match self.cursor.get(&partition) {
                        Some(cursor) => *cursor,
                        None => run.committed.get(&partition).copied().unwrap_or(0),
                    };
                    let expected = run.appended[&partition].iter().find(|o| **o >= from);
                    assert_eq!(
                        Some(&record.offset),
                        expected,
                        "[{backend}] {} on partition {partition}: expected the record after \
                         {from} ({} position), got offset {}",
                        self.name,
                        if self.cursor.contains_key(&partition) {
                            "its own"
                        } else {
                            "the group's committed"
                        },
                        record.offset
                    );
                    self.cursor.insert(partition, record.offset + 1);
                    run.seen.entry(partition).or_default().insert(record.offset);
                    next.insert(partition, record.offset + 1);
                }
                if self.commits && !next.is_empty() {
                    let offsets: Vec<(TopicPartition, Offset)> = next
                        .iter()
                        .map(|(p, o)| (TopicPartition::new(run.topic.as_str(), *p), *o))
                        .collect();
                    match self.consumer.commit(&offsets).await {
                        Ok(()) => run.committed.extend(next),
                        // Lost the partition between poll and commit: the new owner redoes
                        // the work from the previous commit.
                        Err(LogError::NotAssigned(_) | LogError::Broker(_)) => {}
                        Err(error) => panic!("[{backend}] commit failed: {error:?}"),
                    }
                }
            }
        }
    }
}

impl GroupRun {
    async fn append_round(&mut self, log: &dyn Log, per_partition: usize) {
        for i in 0..per_partition {
            for partition in 0..self.partitions {
                let position = ok(
                    log.append_to(
                        &self.topic,
                        partition,
                        Record::new(format!("k{partition}-{i}"), "v"),
                    )
                    .await,
                    "append_to",
                );
                self.appended
                    .entry(partition)
                    .or_default()
                    .push(position.offset);
            }
        }
    }

    fn high(&self, partition: Partition) -> Offset {
        self.appended
            .get(&partition)
            .and_then(|offsets| offsets.last())
            .map_or(0, |last| last + 1)
    }

    fn all_committed(&self, partitions: &BTreeSet<Partition>) -> bool {
        partitions
            .iter()
            .all(|p| self.committed.get(p).copied().unwrap_or(0) >= self.high(*p))
    }

    fn all_seen(&self, partitions: &BTreeSet<Partition>) -> bool {
        partitions.iter().all(|p| {
            let seen = self.seen.get(p);
            self.appended
                .get(p)
                .is_none_or(|offsets| offsets.iter().all(|o| seen.is_some_and(|s| s.contains(o))))
        })
    }

    fn every_partition(&self) -> BTreeSet<Partition> {
        (0..self.partitions).collect()
    }
}

/// Polls every member in turn until `done` holds.
async fn step_until(
    run: &mut GroupRun,
    members: &mut [&mut Member],
    what: &str,
    done: impl Fn(&GroupRun, &[&mut Member]) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    while !done(run, members) {
        if Instant::now() >= deadline {
            let owners: Vec<(&str, &BTreeSet<Partition>)> =
                members.iter().map(|m| (m.name, &m.owned)).collect();
            panic!(
                "[{}] {what}: gave up; owners {owners:?}, committed {:?}, appended up to {:?}",
                run.backend,
                run.committed,
                (0..run.partitions).map(|p| run.high(p)).collect::<Vec<_>>()
            );
        }
        for member in members.iter_mut() {
            member.step(run).await;
        }
    }
}

fn split_between(members: &[&mut Member], partitions: Partition) -> bool {
    let mut union = BTreeSet::new();
    for member in members {
        if member.owned.is_empty() || !member.owned.is_disjoint(&union) {
            return false;
        }
        union.extend(member.owned.iter().copied());
    }
    union.len() == usize::try_from(partitions).unwrap_or(usize::MAX)
}

/// Two members split the partitions; when one dies (dropped without committing its last
/// records) or closes cleanly, the survivor takes over all partitions from the committed
/// offsets, redoing the uncommitted records and skipping none.
pub async fn group_split_and_takeover(factory: &dyn LogFactory) {
    let log = factory.open().await;
    let topic = unique_name("group");
    let group = unique_name("group-g");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 4)).await,
        "create topic",
    );
    let mut run = GroupRun {
        backend: factory.name().to_owned(),
        topic: topic.clone(),
        partitions: 4,
        appended: BTreeMap::new(),
        committed: BTreeMap::new(),
        seen: BTreeMap::new(),
    };
    let all = run.every_partition();
    run.append_round(&*log, 6).await;

    let mut a = Member::join(&*log, &group, &topic, "a").await;
    step_until(
        &mut run,
        &mut [&mut a],
        "a alone takes everything",
        |run, m| m[0].owned.len() == 4 && run.all_committed(&run.every_partition()),
    )
    .await;

    let mut b = Member::join(&*log, &group, &topic, "b").await;
    step_until(
        &mut run,
        &mut [&mut a, &mut b],
        "a and b split",
        |run, m| split_between(m, run.partitions) && run.all_committed(&run.every_partition()),
    )
    .await;

    // b keeps working but stops committing, then dies.
    b.commits = false;
    run.append_round(&*log, 6).await;
    let b_partitions = b.owned.clone();
    let a_partitions = a.owned.clone();
    step_until(
        &mut run,
        &mut [&mut a, &mut b],
        "b reads its records without committing",
        |run, m| {
            split_between(m, run.partitions)
                && run.all_seen(&b_partitions)
                && run.all_committed(&a_partitions)
        },
    )
    .await;
    assert!(
        !run.all_committed(&b_partitions),
        "b's last records are uncommitted"
    );
    drop(b);
    step_until(
        &mut run,
        &mut [&mut a],
        "a takes over after b died",
        |run, m| m[0].owned == run.every_partition() && run.all_committed(&run.every_partition()),
    )
    .await;

    // c joins, works, stops committing and leaves cleanly.
    let mut c = Member::join(&*log, &group, &topic, "c").await;
    step_until(
        &mut run,
        &mut [&mut a, &mut c],
        "a and c split",
        |run, m| split_between(m, run.partitions) && run.all_committed(&run.every_partition()),
    )
    .await;
    c.commits = false;
    run.append_round(&*log, 6).await;
    let c_partitions = c.owned.clone();
    let a_partitions = a.owned.clone();
    step_until(
        &mut run,
        &mut [&mut a, &mut c],
        "c reads its records without committing",
        |run, m| {
            split_between(m, run.partitions)
                && run.all_seen(&c_partitions)
                && run.all_committed(&a_partitions)
        },
    )
    .await;
    ok(c.consumer.close().await, "close c");
    step_until(
        &mut run,
        &mut [&mut a],
        "a takes over after c left",
        |run, m| m[0].owned == run.every_partition() && run.all_committed(&run.every_partition()),
    )
    .await;

    assert!(run.all_seen(&all), "every record was processed");
    for partition in &all {
        let tp = TopicPartition::new(topic.as_str(), *partition);
        assert_eq!(
            ok(log.committed(&group, &tp).await, "committed"),
            Some(run.high(*partition)),
            "[{}] the group committed everything",
            run.backend
        );
    }
    ok(a.consumer.close().await, "close a");
    ok(log.shutdown().await, "shutdown");
}

/// A reader folding a compacted topic from the start ends with the latest value per key,
/// and keys whose last record is a tombstone are gone (whether or not compaction ran).
pub async fn compacted_fold(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let topic = unique_name("changelog");
    ok(
        log.create_topic(&TopicConfig::compacted(&topic, 3)).await,
        "create compacted topic",
    );
    let expected = write_changelog(&*log, &topic, 30, 5, 16).await;
    let folded = fold_topic(&*log, &topic).await;
    assert_eq!(folded, expected, "[{backend}] folded changelog");
    // And again after a restart, as a restarted processor would.
    let log = restart(factory, log).await;
    assert_eq!(
        fold_topic(&*log, &topic).await,
        expected,
        "[{backend}] folded changelog after a restart"
    );
    ok(log.shutdown().await, "shutdown");
}

/// Replay from a point in time: `offset_for_timestamp` finds the first record at or after
/// a time, and a reader started (or moved) at a timestamp starts there.
pub async fn replay_from_timestamp(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let topic = unique_name("replay");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 2)).await,
        "create topic",
    );
    let base = 1_700_000_000_000_i64;
    let mut positions = Vec::new();
    for i in 0..30 {
        let record = Record::new(format!("k{i}"), format!("v{i}")).at(base + i * 1000);
        positions.push(ok(log.append_to(&topic, 1, record).await, "append_to").offset);
    }
    let lookup = |timestamp: i64| {
        let log = log.clone();
        let topic = topic.clone();
        async move {
            ok(
                log.offset_for_timestamp(&topic, 1, timestamp).await,
                "offset_for_timestamp",
            )
        }
    };
    assert_eq!(
        lookup(base + 10_000).await,
        Some(positions[10]),
        "[{backend}] exact time"
    );
    assert_eq!(
        lookup(base + 10_500).await,
        Some(positions[11]),
        "[{backend}] between records"
    );
    assert_eq!(
        lookup(base - 5_000).await,
        Some(positions[0]),
        "[{backend}] before all"
    );
    assert_eq!(lookup(base + 60_000).await, None, "[{backend}] after all");
    assert_eq!(
        ok(
            log.offset_for_timestamp(&topic, 0, base).await,
            "offset_for_timestamp"
        ),
        None,
        "[{backend}] empty partition"
    );

    let mut reader = ok(
        log.reader(&topic, 1, StartAt::Timestamp(base + 10_500))
            .await,
        "reader at a time",
    );
    assert_eq!(
        reader.position(),
        positions[11],
        "[{backend}] reader starts at the time"
    );
    let mut read = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while read.len() < 19 {
        assert!(Instant::now() < deadline, "[{backend}] replay stalled");
        read.extend(ok(reader.read(100, Duration::from_secs(5)).await, "read"));
    }
    let offsets: Vec<Offset> = read.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        positions[11..].to_vec(),
        "[{backend}] replayed records"
    );
    assert!(read.iter().all(|r| r.timestamp >= base + 10_500));

    ok(
        reader.seek(StartAt::Timestamp(base + 20_000)).await,
        "seek to a time",
    );
    assert_eq!(
        reader.position(),
        positions[20],
        "[{backend}] seek to a time"
    );
    let first = ok(reader.read(1, Duration::from_secs(30)).await, "read");
    assert_eq!(first.first().map(|r| r.offset), Some(positions[20]));

    let high = ok(log.watermarks(&topic, 1).await, "watermarks").high;
    let reader = ok(
        log.reader(&topic, 1, StartAt::Timestamp(base + 60_000))
            .await,
        "reader after all",
    );
    assert_eq!(
        reader.position(),
        high,
        "[{backend}] a time after all records starts at the end"
    );
    ok(log.shutdown().await, "shutdown");
}

/// A reader waiting in `read` receives a record appended while it waits.
pub async fn reader_wakeup(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let topic = unique_name("wakeup");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 1)).await,
        "create topic",
    );
    let mut reader = ok(log.reader(&topic, 0, StartAt::Latest).await, "reader");
    for round in 0..3 {
        let writer = {
            let log = log.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                ok(
                    log.append(&topic, Record::new("k", format!("wake-{round}")))
                        .await,
                    "append",
                )
            })
        };
        let records = ok(reader.read(10, PATIENCE).await, "read");
        let position = ok(writer.await, "writer");
        assert_eq!(
            records.len(),
            1,
            "[{backend}] the waiting reader gets the new record"
        );
        assert_eq!(records[0].offset, position.offset);
        assert_eq!(
            records[0].value.as_deref(),
            Some(format!("wake-{round}").as_bytes())
        );
    }
    drop(reader);
    ok(log.shutdown().await, "shutdown");
}

/// Everything acknowledged survives a shutdown and reopen: records, positions, offsets
/// committed by groups and topics.
pub async fn durability_across_restart(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let topic = unique_name("durable");
    let group = unique_name("durable-g");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 3)).await,
        "create topic",
    );
    let mut acknowledged: BTreeMap<Partition, BTreeMap<Offset, Record>> = BTreeMap::new();
    for i in 0..40 {
        let record = Record::new(format!("key-{i}"), format!("one-{i}")).header("i", i.to_string());
        let position = ok(log.append(&topic, record.clone()).await, "append");
        acknowledged
            .entry(position.partition)
            .or_default()
            .insert(position.offset, record);
    }
    let batch: Vec<Record> = (0..40)
        .map(|i| Record::new(format!("key-{i}"), format!("batch-{i}")))
        .collect();
    let positions = ok(
        log.append_batch(&topic, batch.clone()).await,
        "append batch",
    );
    for (position, record) in positions.into_iter().zip(batch) {
        acknowledged
            .entry(position.partition)
            .or_default()
            .insert(position.offset, record);
    }
    for i in 0..10 {
        let record = Record::new(format!("direct-{i}"), "direct");
        let position = ok(log.append_to(&topic, 2, record.clone()).await, "append_to");
        acknowledged
            .entry(2)
            .or_default()
            .insert(position.offset, record);
    }
    let tp = TopicPartition::new(topic.as_str(), 1);
    let mut consumer = ok(
        log.consumer(ConsumerOptions::new(&group, &[&topic])).await,
        "join group",
    );
    collect_records(
        consumer.as_mut(),
        &topic,
        &backend,
        |r| r.contains_key(&1),
        "consume partition 1",
    )
    .await;
    ok(consumer.commit(&[(tp.clone(), 3)]).await, "commit");
    ok(consumer.close().await, "close");

    let log = restart(factory, log).await;
    assert_eq!(ok(log.partition_count(&topic).await, "partition count"), 3);
    assert_eq!(
        ok(log.committed(&group, &tp).await, "committed"),
        Some(3),
        "[{backend}] committed offset survives a restart"
    );
    for (partition, records) in &acknowledged {
        let read = read_to_end(&*log, &topic, *partition, StartAt::Earliest).await;
        assert_eq!(
            read.len(),
            records.len(),
            "[{backend}] partition {partition}"
        );
        for (got, (offset, want)) in read.iter().zip(records) {
            assert_same_record(got, *offset, want, &backend);
        }
        let high = ok(log.watermarks(&topic, *partition).await, "watermarks").high;
        let last = records.keys().last().copied().unwrap_or(-1);
        assert_eq!(high, last + 1, "[{backend}] high watermark after restart");
    }
    // Appends continue after the restart at the next offsets.
    let position = ok(
        log.append_to(&topic, 2, Record::new("after", "restart"))
            .await,
        "append",
    );
    let last = acknowledged[&2].keys().last().copied().unwrap_or(-1);
    assert!(
        position.offset > last,
        "[{backend}] offsets continue after a restart"
    );
    ok(log.shutdown().await, "shutdown");
}

/// Creating an existing topic with the same partition count is fine; with another count
/// it is a `TopicMismatch`; invalid names and counts are refused.
pub async fn create_topic_idempotence(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let topic = unique_name("create");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 3)).await,
        "create topic",
    );
    ok(
        log.create_topic(&TopicConfig::new(&topic, 3)).await,
        "create it again",
    );
    ok(
        log.create_topic(&TopicConfig::compacted(&topic, 3)).await,
        "create it again with another cleanup policy",
    );
    match log.create_topic(&TopicConfig::new(&topic, 5)).await {
        Err(LogError::TopicMismatch {
            topic: name,
            existing,
            requested,
        }) => {
            assert_eq!(name, topic);
            assert_eq!(
                (existing, requested),
                (3, 5),
                "[{backend}] mismatch details"
            );
        }
        other => panic!("[{backend}] creating with another partition count gave {other:?}"),
    }
    assert_eq!(ok(log.partition_count(&topic).await, "partition count"), 3);
    for bad in ["", "has space", "..", "slash/name", &"x".repeat(250)] {
        assert!(
            matches!(
                log.create_topic(&TopicConfig::new(bad, 1)).await,
                Err(LogError::InvalidArgument(_))
            ),
            "[{backend}] topic name {bad:?} must be refused"
        );
    }
    assert!(
        matches!(
            log.create_topic(&TopicConfig::new(unique_name("zero"), 0))
                .await,
            Err(LogError::InvalidArgument(_))
        ),
        "[{backend}] zero partitions must be refused"
    );
    let log = restart(factory, log).await;
    ok(
        log.create_topic(&TopicConfig::new(&topic, 3)).await,
        "create after restart",
    );
    assert!(matches!(
        log.create_topic(&TopicConfig::new(&topic, 2)).await,
        Err(LogError::TopicMismatch { existing: 3, .. })
    ));
    ok(log.shutdown().await, "shutdown");
}

fn expect_unknown_topic<T: Debug>(result: Result<T, LogError>, what: &str, backend: &str) {
    assert!(
        matches!(result, Err(LogError::UnknownTopic(_))),
        "[{backend}] {what} on an unknown topic gave {result:?}"
    );
}

fn expect_unknown_partition<T: Debug>(result: Result<T, LogError>, what: &str, backend: &str) {
    assert!(
        matches!(result, Err(LogError::UnknownPartition { .. })),
        "[{backend}] {what} on an unknown partition gave {result:?}"
    );
}

/// Unknown topics and partitions are reported as such, and a member cannot commit a
/// partition it does not own.
pub async fn error_cases(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let missing = unique_name("missing");
    let b = backend.as_str();
    expect_unknown_topic(
        log.append(&missing, Record::new("k", "v")).await,
        "append",
        b,
    );
    expect_unknown_topic(
        log.append_to(&missing, 0, Record::new("k", "v")).await,
        "append_to",
        b,
    );
    expect_unknown_topic(
        log.append_batch(&missing, vec![Record::new("k", "v")])
            .await,
        "append_batch",
        b,
    );
    expect_unknown_topic(log.partition_count(&missing).await, "partition_count", b);
    expect_unknown_topic(log.watermarks(&missing, 0).await, "watermarks", b);
    expect_unknown_topic(
        log.offset_for_timestamp(&missing, 0, 0).await,
        "offset_for_timestamp",
        b,
    );
    expect_unknown_topic(
        log.reader(&missing, 0, StartAt::Earliest).await,
        "reader",
        b,
    );
    expect_unknown_topic(
        log.consumer(ConsumerOptions::new(unique_name("g"), &[&missing]))
            .await,
        "consumer",
        b,
    );

    let topic = unique_name("errors");
    let other = unique_name("errors-other");
    ok(
        log.create_topic(&TopicConfig::new(&topic, 2)).await,
        "create topic",
    );
    ok(
        log.create_topic(&TopicConfig::new(&other, 1)).await,
        "create topic",
    );
    expect_unknown_partition(
        log.append_to(&topic, 2, Record::new("k", "v")).await,
        "append_to",
        b,
    );
    expect_unknown_partition(
        log.append_to(&topic, -1, Record::new("k", "v")).await,
        "append_to",
        b,
    );
    expect_unknown_partition(log.watermarks(&topic, 5).await, "watermarks", b);
    expect_unknown_partition(
        log.offset_for_timestamp(&topic, 2, 0).await,
        "offset_for_timestamp",
        b,
    );
    expect_unknown_partition(log.reader(&topic, 2, StartAt::Earliest).await, "reader", b);

    // Larger than every backend's default record limit (Kafka: 1 MB, embedded: 4 MiB).
    let huge = Record::new("huge", vec![0_u8; 5 * 1024 * 1024]);
    let result = log.append(&topic, huge.clone()).await;
    assert!(
        matches!(result, Err(LogError::RecordTooLarge { .. })),
        "[{backend}] appending a 5 MiB record gave {result:?}"
    );
    let result = log
        .append_batch(&topic, vec![Record::new("small", "v"), huge])
        .await;
    assert!(
        matches!(result, Err(LogError::RecordTooLarge { .. })),
        "[{backend}] a batch with a 5 MiB record gave {result:?}"
    );

    ok(
        log.append_to(&topic, 0, Record::new("k", "v")).await,
        "append_to",
    );
    let mut consumer = ok(
        log.consumer(ConsumerOptions::new(unique_name("g"), &[&topic]))
            .await,
        "join group",
    );
    collect_records(
        consumer.as_mut(),
        &topic,
        &backend,
        |r| r.contains_key(&0),
        "receive the record",
    )
    .await;
    let foreign = TopicPartition::new(other.as_str(), 0);
    match consumer.commit(&[(foreign.clone(), 1)]).await {
        Err(LogError::NotAssigned(tp)) => assert_eq!(tp, foreign),
        result => panic!("[{backend}] committing an unassigned partition gave {result:?}"),
    }
    ok(consumer.close().await, "close");
    ok(log.shutdown().await, "shutdown");
}

/// Submitted records (`Log::submit`) are written in submission order within each
/// partition — also across calls whose acknowledgements were not awaited in between —
/// to the partition given or the one their key hashes to, across topics, and are all
/// readable once the acknowledgements resolve. A submission to an unknown topic is
/// refused as a whole.
pub async fn submit_keeps_order(factory: &dyn LogFactory) {
    let backend = factory.name().to_owned();
    let log = factory.open().await;
    let first = unique_name("submit-a");
    let second = unique_name("submit-b");
    for topic in [&first, &second] {
        ok(
            log.create_topic(&TopicConfig::new(topic, 3)).await,
            "create topic",
        );
    }
    // 20 calls, none awaited before the next: keyed records to `first`, records for
    // partition 2 of `second`.
    let mut acks = Vec::new();
    for call in 0..20 {
        let mut batch = Vec::new();
        for i in 0..10 {
            let n = call * 10 + i;
            batch.push(Submission::keyed(
                first.clone(),
                Record::new(format!("user-{}", n % 7), format!("{n}")),
            ));
            batch.push(Submission::to_partition(
                second.clone(),
                2,
                Record::new(format!("any-{n}"), format!("{n}")),
            ));
        }
        acks.push(ok(log.submit(batch).await, "submit"));
    }
    for ack in acks {
        ok(ack.await, "submission acknowledged");
    }
    // Per key partition of `first`: values ascend; every value is there once.
    let mut seen = BTreeSet::new();
    for partition in 0..3 {
        let records = read_to_end(log.as_ref(), &first, partition, StartAt::Earliest).await;
        let mut last = -1_i64;
        for record in records {
            let key = record.key.clone().unwrap_or_default();
            assert_eq!(
                partition_for_key(&key, 3),
                partition,
                "[{backend}] a keyed submission lands on its key's partition"
            );
            let value: i64 = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
                .parse()
                .unwrap_or(-1);
            assert!(
                value > last,
                "[{backend}] order kept in {first}/{partition}: {value} after {last}"
            );
            last = value;
            seen.insert(value);
        }
    }
    assert_eq!(
        seen.len(),
        200,
        "[{backend}] every keyed submission is readable"
    );
    let records = read_to_end(log.as_ref(), &second, 2, StartAt::Earliest).await;
    let values: Vec<i64> = records
        .iter()
        .map(|r| {
            String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
                .parse()
                .unwrap_or(-1)
        })
        .collect();
    assert_eq!(
        values,
        (0..200).collect::<Vec<_>>(),
        "[{backend}] records for a given partition, in submission order"
    );
    // An unknown topic: refused, and nothing of that call is written.
    let before = ok(log.watermarks(&second, 0).await, "watermarks").high;
    let refused = log
        .submit(vec![
            Submission::to_partition(second.clone(), 0, Record::new("k", "v")),
            Submission::keyed(unique_name("no-such-topic"), Record::new("k", "v")),
        ])
        .await;
    match refused {
        Err(LogError::UnknownTopic(_)) => {}
        Err(other) if backend == "kafka" => {
            // A broker may describe a missing topic differently; it must still refuse.
            let _ = other;
        }
        Err(other) => panic!("[{backend}] unexpected error for an unknown topic: {other}"),
        Ok(ack) => {
            assert!(
                ack.await.is_err(),
                "[{backend}] a submission to an unknown topic must fail"
            );
        }
    }
    if backend != "kafka" {
        assert_eq!(
            ok(log.watermarks(&second, 0).await, "watermarks").high,
            before,
            "[{backend}] nothing of a refused submission is written"
        );
    }
}

/// Generates one `#[tokio::test]` per contract. `$factory` is an async expression that
/// yields a [`LogFactory`].
#[macro_export]
macro_rules! contract_tests {
    ($factory:expr) => {
        $crate::contract_tests!(@tests $factory;
            per_partition_order, key_placement, watermarks, resume_after_crash,
            group_split_and_takeover, compacted_fold, replay_from_timestamp, reader_wakeup,
            durability_across_restart, create_topic_idempotence, error_cases,
            consumer_start_and_seek, submit_keeps_order, started_commits_keep_order);
    };
    (@tests $factory:expr; $($contract:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $contract() {
                let factory = $factory;
                $crate::contract::$contract(&factory).await;
            }
        )*
    };
}
