//! The imbus log: the one interface every component uses to read and write events.
//!
//! The log is the source of truth of imbus. Gateways append every stanza, processors
//! consume their input topics as members of a consumer group and append what they decide,
//! connectors sink topics into external systems. Two backends implement [`Log`]:
//!
//! * `imbus-log-embedded`: in-process, durable on local disk (the default), and
//! * `imbus-log-kafka`: any Kafka-protocol cluster through librdkafka.
//!
//! Both pass the same contract test suite (`tests/src/contract.rs`, run by `tests/tests/log_contract_{embedded,kafka}.rs`), so a component
//! written against this trait behaves the same on either.
//!
//! # Semantics
//!
//! * A topic has a fixed number of partitions. A record with a key goes to partition
//!   [`partition_for_key`] (Kafka's murmur2 default partitioner, so external producers and
//!   tools agree with imbus); a record without a key must be appended to an explicit
//!   partition.
//! * Offsets are dense per partition for the embedded backend and increasing (not
//!   necessarily dense) for Kafka. Order is guaranteed per partition.
//! * [`Log::append`] returns once the record is acknowledged: on the embedded log, written
//!   and flushed according to the fsync policy; on Kafka, acknowledged by all in-sync
//!   replicas. An acknowledged record is never lost.
//! * A committed offset is the offset of the *next* record to read (Kafka convention).
//!   Consumers commit only after they processed a record, so processing is at-least-once.
//! * A compacted topic keeps at least the latest record per key; a record with no value is
//!   a tombstone that deletes its key once compacted. Readers must fold by key (last wins)
//!   and must not rely on compaction having run.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

mod partitioner;

pub use partitioner::{murmur2, partition_for_key};

/// A partition number, as Kafka numbers them (0-based).
pub type Partition = i32;

/// An offset within one partition.
pub type Offset = i64;

/// Milliseconds since the Unix epoch (the timestamp unit of Kafka records).
pub type TimestampMs = i64;

/// How a topic's old records are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cleanup {
    /// Records older than the retention period are deleted, segment by segment.
    Delete,
    /// The latest record per key is kept; older records of the same key and tombstones
    /// (after `delete_retention`) are removed.
    Compact,
}

/// What a topic looks like. Creating an existing topic with the same partition count is
/// not an error; a different partition count is ([`LogError::TopicMismatch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub name: String,
    pub partitions: i32,
    pub cleanup: Cleanup,
    /// For [`Cleanup::Delete`]: how long records are kept; `None` keeps them forever.
    pub retention: Option<Duration>,
}

impl TopicConfig {
    /// A topic whose records are kept forever (until an operator sets a retention).
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            cleanup: Cleanup::Delete,
            retention: None,
        }
    }

    /// A compacted topic (a changelog: latest value per key).
    pub fn compacted(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            cleanup: Cleanup::Compact,
            ..Self::new(name, partitions)
        }
    }

    /// Sets a retention period for a delete-policy topic.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Checks the name and partition count the way Kafka does, so that a topic valid here
    /// is valid on every backend.
    pub fn validate(&self) -> Result<(), LogError> {
        validate_topic_name(&self.name)?;
        if self.partitions < 1 || self.partitions > 100_000 {
            return Err(LogError::InvalidArgument(format!(
                "topic {:?}: partition count {} is outside 1..=100000",
                self.name, self.partitions
            )));
        }
        Ok(())
    }
}

/// Kafka's topic-name rule: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), LogError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 249 || !ok_chars || name == "." || name == ".." {
        return Err(LogError::InvalidArgument(format!(
            "invalid topic name {name:?}: use 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// A header attached to a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Bytes,
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub key: Option<Bytes>,
    /// `None` is a tombstone (deletes `key` in a compacted topic).
    pub value: Option<Bytes>,
    /// The record's time. `None` lets the log stamp the append time.
    pub timestamp: Option<TimestampMs>,
    pub headers: Vec<Header>,
}

impl Record {
    /// A keyed record with a value.
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// A tombstone for `key`.
    pub fn tombstone(key: impl Into<Bytes>) -> Self {
        Self {
            key: Some(key.into()),
            ..Self::default()
        }
    }

    /// Sets the record's timestamp.
    pub fn at(mut self, timestamp: TimestampMs) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: value.into(),
        });
        self
    }
}

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: Partition,
}

impl TopicPartition {
    pub fn new(topic: impl Into<Arc<str>>, partition: Partition) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub partition: Partition,
    pub offset: Offset,
}

/// A record read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: Arc<str>,
    pub partition: Partition,
    pub offset: Offset,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub timestamp: TimestampMs,
    pub headers: Vec<Header>,
}

impl ConsumedRecord {
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    /// The value of the first header named `key`.
    pub fn header(&self, key: &str) -> Option<&Bytes> {
        self.headers.iter().find(|h| h.key == key).map(|h| &h.value)
    }
}

/// Where a reader or a consumer without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record still in the log.
    Earliest,
    /// Only records appended from now on.
    Latest,
    /// A given offset (clamped into the retained range).
    Offset(Offset),
    /// The first record whose timestamp is at or after the given time.
    Timestamp(TimestampMs),
}

/// The range of offsets a partition holds: `low` is the first retained offset, `high` the
/// offset the next appended record will get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub low: Offset,
    pub high: Offset,
}

/// What a consumer's poll returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerEvent {
    /// The group gave this member these partitions (in addition to what it had).
    /// Processors rebuild the state of these partitions before processing their records.
    Assigned(Vec<TopicPartition>),
    /// These partitions were taken away; the member must stop working on them and should
    /// have committed what it processed (uncommitted work is redone by the new owner).
    Revoked(Vec<TopicPartition>),
    /// Records, in order per partition.
    Records(Vec<ConsumedRecord>),
}

/// Options for joining a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    pub group: String,
    pub topics: Vec<String>,
    /// Where to start on a partition the group has no committed offset for.
    pub start_if_uncommitted: StartAt,
    /// The most records one poll returns.
    pub max_batch: usize,
}

impl ConsumerOptions {
    pub fn new(group: impl Into<String>, topics: &[&str]) -> Self {
        Self {
            group: group.into(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            start_if_uncommitted: StartAt::Earliest,
            max_batch: 1024,
        }
    }
}

/// Errors of every log backend.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: Partition },
    #[error("topic {topic:?} exists with {existing} partitions, {requested} were requested")]
    TopicMismatch {
        topic: String,
        existing: i32,
        requested: i32,
    },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("record is {size} bytes, the limit is {limit}")]
    RecordTooLarge { size: usize, limit: usize },
    #[error("partition {0} is not assigned to this consumer")]
    NotAssigned(TopicPartition),
    #[error("the log is shut down")]
    Closed,
    #[error("corrupt log data in {path}: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("log I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("broker error: {0}")]
    Broker(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

/// One record for [`Log::submit`].
#[derive(Debug, Clone)]
pub struct Submission {
    /// The topic.
    pub topic: String,
    /// The partition, or `None` for the partition the record's key hashes to (murmur2;
    /// partition 0 without a key).
    pub partition: Option<Partition>,
    /// The record.
    pub record: Record,
}

impl Submission {
    /// A record for the partition its key hashes to.
    pub fn keyed(topic: impl Into<String>, record: Record) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            record,
        }
    }

    /// A record for a given partition.
    pub fn to_partition(topic: impl Into<String>, partition: Partition, record: Record) -> Self {
        Self {
            topic: topic.into(),
            partition: Some(partition),
            record,
        }
    }
}

/// Resolves when every record of a [`Log::submit`] call is acknowledged.
pub type Acknowledgement = Pin<Box<dyn Future<Output = Result<(), LogError>> + Send>>;

/// An acknowledgement that is already there (nothing to wait for).
pub fn acknowledged() -> Acknowledgement {
    Box::pin(std::future::ready(Ok(())))
}

/// The commit a consumer's loop has under way ([`Consumer::start_commit`]): checked
/// between polls instead of waited for, so the loop goes on while it is stored.
#[derive(Default)]
pub struct CommitInFlight(Option<Acknowledgement>);

impl CommitInFlight {
    /// Whether a commit is under way (or finished and not yet checked).
    pub fn is_pending(&self) -> bool {
        self.0.is_some()
    }

    /// Whether no commit is under way: one that finished is taken and its failure
    /// returned.
    pub fn settled(&mut self) -> Result<bool, LogError> {
        let Some(acknowledgement) = self.0.as_mut() else {
            return Ok(true);
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match acknowledgement.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(result) => {
                self.0 = None;
                result.map(|()| true)
            }
            std::task::Poll::Pending => Ok(false),
        }
    }

    /// Records a commit just started; the one before must have settled.
    pub fn start(&mut self, acknowledgement: Acknowledgement) {
        debug_assert!(self.0.is_none(), "a commit is already under way");
        self.0 = Some(acknowledgement);
    }

    /// Waits until the commit under way, if any, is stored.
    pub async fn finish(&mut self) -> Result<(), LogError> {
        match self.0.take() {
            Some(acknowledgement) => acknowledgement.await,
            None => Ok(()),
        }
    }
}

impl fmt::Debug for CommitInFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "CommitInFlight(pending)"
        } else {
            "CommitInFlight(none)"
        })
    }
}

/// The log: topics, appends, readers and consumer groups.
#[async_trait]
pub trait Log: Send + Sync + fmt::Debug {
    /// Which backend this is ("embedded", "kafka"), for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Creates a topic, or checks that the existing one has the same partition count.
    async fn create_topic(&self, config: &TopicConfig) -> Result<(), LogError>;

    /// The number of partitions of a topic.
    async fn partition_count(&self, topic: &str) -> Result<i32, LogError>;

    /// Appends a keyed record to the partition its key hashes to (murmur2); a record
    /// without a key goes to partition 0. Returns once the record is acknowledged.
    async fn append(&self, topic: &str, record: Record) -> Result<Position, LogError>;

    /// Appends a record to a given partition.
    async fn append_to(
        &self,
        topic: &str,
        partition: Partition,
        record: Record,
    ) -> Result<Position, LogError>;

    /// Appends many records (each to its key's partition) and returns their positions in
    /// the same order once all are acknowledged. Order is kept within each partition.
    async fn append_batch(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> Result<Vec<Position>, LogError>;

    /// Hands records to the log in order and returns as soon as they are submitted, with
    /// a future that resolves once all of them are acknowledged (durable). Within each
    /// partition they are written in the order given, before any record the same caller
    /// submits later, so a processor can go on with its next input while its outputs are
    /// made durable, and commit its input offsets when the acknowledgement arrives. An
    /// error before submission means none of the records was submitted.
    async fn submit(&self, records: Vec<Submission>) -> Result<Acknowledgement, LogError>;

    /// [`Log::submit`] for records the caller derives from inputs whose offsets it has
    /// not committed yet (a processor's outputs): were they lost in a power failure, the
    /// caller would make them again from the same inputs, with the same ids. The log may
    /// acknowledge such records once they are written and visible to readers, before they
    /// are on disk, provided every offset commit submitted after them (by any consumer
    /// group) is made durable only after they are: a committed input never has lost
    /// outputs, and a consumer never commits past a record a power failure could take.
    /// A process that is killed loses nothing either way. Backends that acknowledge only
    /// durable records keep the default, which is [`Log::submit`].
    async fn submit_derived(&self, records: Vec<Submission>) -> Result<Acknowledgement, LogError> {
        self.submit(records).await
    }

    /// The retained offset range of a partition.
    async fn watermarks(&self, topic: &str, partition: Partition) -> Result<Watermarks, LogError>;

    /// The first offset whose record's timestamp is at or after `timestamp`, or `None` if
    /// every record is older.
    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: Partition,
        timestamp: TimestampMs,
    ) -> Result<Option<Offset>, LogError>;

    /// A reader of one partition outside any group (replay, changelog restore, audit).
    async fn reader(
        &self,
        topic: &str,
        partition: Partition,
        start: StartAt,
    ) -> Result<Box<dyn PartitionReader>, LogError>;

    /// Joins a consumer group. Partitions of the subscribed topics are split among the
    /// live members of the group; when a member leaves or dies, the others take over its
    /// partitions from the group's committed offsets.
    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn Consumer>, LogError>;

    /// The group's committed offset for a partition (the next offset to read).
    async fn committed(&self, group: &str, tp: &TopicPartition)
    -> Result<Option<Offset>, LogError>;

    /// Makes every acknowledged append durable and stops background work. Called on
    /// graceful shutdown.
    async fn shutdown(&self) -> Result<(), LogError>;
}

/// Reads one partition in order.
#[async_trait]
pub trait PartitionReader: Send + fmt::Debug {
    /// Up to `max` records from the current position; waits until at least one is
    /// available (woken on append, no polling) or `timeout` passes (then returns empty).
    async fn read(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<ConsumedRecord>, LogError>;

    /// The offset the next `read` starts at.
    fn position(&self) -> Offset;

    /// Moves the reader.
    async fn seek(&mut self, start: StartAt) -> Result<(), LogError>;
}

/// Commits `pending` (the next offset per partition, emptied here) for the partitions
/// `consumer` still holds; the others are left to their new owner, which redoes their
/// uncommitted records.
pub async fn commit_assigned(
    consumer: &mut dyn Consumer,
    pending: &mut std::collections::HashMap<TopicPartition, Offset>,
) -> Result<(), LogError> {
    match start_commit_assigned(consumer, pending).await? {
        Some(acknowledgement) => acknowledgement.await,
        None => Ok(()),
    }
}

/// [`commit_assigned`] that returns once the commit is started ([`Consumer::start_commit`]),
/// with its acknowledgement (`None` when there was nothing to commit).
pub async fn start_commit_assigned(
    consumer: &mut dyn Consumer,
    pending: &mut std::collections::HashMap<TopicPartition, Offset>,
) -> Result<Option<Acknowledgement>, LogError> {
    if pending.is_empty() {
        return Ok(None);
    }
    let assigned: std::collections::HashSet<TopicPartition> =
        consumer.assignment().into_iter().collect();
    let offsets: Vec<_> = pending
        .drain()
        .filter(|(tp, _)| assigned.contains(tp))
        .collect();
    if offsets.is_empty() {
        return Ok(None);
    }
    consumer.start_commit(&offsets).await.map(Some)
}

/// How long reading a partition up to a known end may go without a record before the
/// reader gives up: a Kafka reader's first fetch can take longer than one read's wait,
/// so an empty read is not the end; an end that cannot be reached (offsets removed by
/// compaction at a partition's end) is.
pub const READ_STALL_LIMIT: Duration = Duration::from_secs(15);

/// The next records (up to `max`) of `reader` before offset `until`, or `None` once the
/// reader is there or read nothing for `stall`; the caller tells the two apart by the
/// reader's position.
pub async fn read_before(
    reader: &mut dyn PartitionReader,
    until: Offset,
    max: usize,
    stall: Duration,
) -> Result<Option<Vec<ConsumedRecord>>, LogError> {
    let started = std::time::Instant::now();
    while reader.position() < until {
        let wait = stall
            .saturating_sub(started.elapsed())
            .min(Duration::from_millis(200));
        let mut records = reader.read(max, wait).await?;
        records.retain(|record| record.offset < until);
        if !records.is_empty() {
            return Ok(Some(records));
        }
        if started.elapsed() >= stall {
            break;
        }
    }
    Ok(None)
}

/// Every record of `topic`, all partitions in order, up to each partition's end when it
/// is read (tools and tests that look at a whole topic). A partition whose reader returns
/// nothing for a second before its end is left there.
pub async fn read_topic(log: &dyn Log, topic: &str) -> Result<Vec<ConsumedRecord>, LogError> {
    let mut out = Vec::new();
    for partition in 0..log.partition_count(topic).await? {
        let end = log.watermarks(topic, partition).await?.high;
        let mut reader = log.reader(topic, partition, StartAt::Earliest).await?;
        let stall = Duration::from_secs(1);
        while let Some(records) = read_before(reader.as_mut(), end, 1024, stall).await? {
            out.extend(records);
        }
    }
    Ok(out)
}

/// A member of a consumer group.
#[async_trait]
pub trait Consumer: Send + fmt::Debug {
    /// The next event: an assignment change, or records from assigned partitions. Waits
    /// until something happens or `timeout` passes (then returns `Records(vec![])`).
    async fn poll(&mut self, timeout: Duration) -> Result<ConsumerEvent, LogError>;

    /// Stores the group's committed offsets (`offset` = next record to read). Offsets of
    /// partitions no longer assigned are refused with [`LogError::NotAssigned`].
    async fn commit(&mut self, offsets: &[(TopicPartition, Offset)]) -> Result<(), LogError>;

    /// Starts a [`Consumer::commit`] and returns once it is under way, with the
    /// acknowledgement that resolves when the offsets are stored; the consumer can be
    /// polled meanwhile. Commits are stored in the order they were started. By default
    /// the commit is made before returning.
    async fn start_commit(
        &mut self,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<Acknowledgement, LogError> {
        self.commit(offsets).await?;
        Ok(acknowledged())
    }

    /// The partitions this member owns now.
    fn assignment(&self) -> Vec<TopicPartition>;

    /// Moves this member's position on an assigned partition (e.g. to replay).
    async fn seek(&mut self, tp: &TopicPartition, start: StartAt) -> Result<(), LogError>;

    /// Stops cleanly: gives up the assigned partitions. On the embedded log and for
    /// dynamic Kafka members the others take over at once; a static Kafka member keeps its
    /// place for a successor with the same instance id (see `imbus-log-kafka`).
    async fn close(self: Box<Self>) -> Result<(), LogError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out `script` in turn: `None` is a read that finds nothing
    /// (it waits its timeout), `Some(n)` a read that returns `n` records.
    #[derive(Debug)]
    struct Scripted {
        script: std::collections::VecDeque<Option<usize>>,
        position: Offset,
    }

    #[async_trait]
    impl PartitionReader for Scripted {
        async fn read(
            &mut self,
            max: usize,
            timeout: Duration,
        ) -> Result<Vec<ConsumedRecord>, LogError> {
            match self.script.pop_front().flatten() {
                Some(n) => {
                    let records: Vec<_> = (0..n.min(max))
                        .map(|i| ConsumedRecord {
                            topic: Arc::from("t"),
                            partition: 0,
                            offset: self.position + i as Offset,
                            key: None,
                            value: None,
                            timestamp: 0,
                            headers: Vec::new(),
                        })
                        .collect();
                    self.position += records.len() as Offset;
                    Ok(records)
                }
                None => {
                    tokio::time::sleep(timeout).await;
                    Ok(Vec::new())
                }
            }
        }

        fn position(&self) -> Offset {
            self.position
        }

        async fn seek(&mut self, _start: StartAt) -> Result<(), LogError> {
            Ok(())
        }
    }

    async fn read_all(reader: &mut Scripted, until: Offset, stall: Duration) -> Vec<Offset> {
        let mut offsets = Vec::new();
        while let Some(records) = read_before(reader, until, 100, stall).await.unwrap() {
            offsets.extend(records.iter().map(|r| r.offset));
        }
        offsets
    }

    #[tokio::test]
    async fn a_commit_in_flight_is_settled_once_its_acknowledgement_resolves() {
        let mut committing = CommitInFlight::default();
        assert!(committing.settled().unwrap());
        committing.start(Box::pin(std::future::pending()));
        assert!(committing.is_pending());
        assert!(!committing.settled().unwrap());
        let mut committing = CommitInFlight::default();
        committing.start(Box::pin(std::future::ready(Err(LogError::Closed))));
        assert!(matches!(committing.settled(), Err(LogError::Closed)));
        assert!(!committing.is_pending());
        committing.start(acknowledged());
        committing.finish().await.unwrap();
        assert!(committing.settled().unwrap());
    }

    #[tokio::test]
    async fn empty_reads_before_the_end_are_not_the_end() {
        let mut reader = Scripted {
            script: [None, None, Some(3), None, Some(4)].into(),
            position: 0,
        };
        let offsets = read_all(&mut reader, 7, Duration::from_secs(5)).await;
        assert_eq!(offsets, (0..7).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn records_at_or_after_the_end_are_left_out() {
        let mut reader = Scripted {
            script: [Some(5), Some(5)].into(),
            position: 0,
        };
        let offsets = read_all(&mut reader, 7, Duration::from_secs(15)).await;
        assert_eq!(offsets, (0..7).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_end_that_never_comes_is_given_up_after_the_stall_limit() {
        let mut reader = Scripted {
            script: std::iter::once(Some(2))
                .chain(std::iter::repeat_n(None, 1000))
                .collect(),
            position: 0,
        };
        let stall = Duration::from_millis(500);
        let started = std::time::Instant::now();
        let offsets = read_all(&mut reader, 7, stall).await;
        assert_eq!(offsets, [0, 1]);
        assert_eq!(reader.position(), 2);
        assert!(started.elapsed() >= stall);
    }
}
