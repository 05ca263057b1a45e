//! The embedded imbus log: in-process, durable on local disk, and the default bus.
//!
//! [`EmbeddedLog`] implements [`imbus_log::Log`] inside the `imbus` process: one
//! `imbus serve` is the whole system, with no broker to run. Consumers are woken the moment
//! a record is written, so a single node behaves like a monolith while keeping the
//! event-sourced design (everything is a projection of the log).
//!
//! # Storage layout
//!
//! ```text
//! <dir>/@lock                               exclusive lock (flock) of the directory
//! <dir>/@groups/<hex group name>.offsets    committed offsets of a consumer group
//! <dir>/<topic>/topic.json                  partitions, cleanup policy, retention
//! <dir>/<topic>/<partition>/<base>.log      segment: record frames, base = first offset slot
//! <dir>/<topic>/<partition>/<base>.index    sparse offset + time index of a closed segment
//! ```
//!
//! Each record is a frame with its length, a CRC32C of the frame header, a CRC32C of the
//! body, its offset, timestamp, key, value (absent for a tombstone) and headers. Segments
//! roll at [`EmbeddedOptions::segment_bytes`]. Every segment has a sparse index (one entry
//! per 8 KiB of records) mapping offsets to byte positions and carrying the highest
//! timestamp seen before each entry, so a seek and [`imbus_log::Log::offset_for_timestamp`]
//! are a binary search plus a short scan. Closed segments persist their index; a missing or
//! stale index is rebuilt by scanning.
//!
//! ## Why segment files and not an embedded key-value store
//!
//! A log is append-only and read sequentially. Segment files match that exactly: an
//! append is one `pwrite` at the end of a file (zero write amplification, no B-tree or
//! LSM rewrites, no second copy in a write-ahead log), a consumer that keeps up reads the
//! bytes just written, retention deletes whole files, and compaction rewrites only closed
//! files, in the background. An embedded KV store (sled, redb, RocksDB) would add its own
//! write-ahead log and compaction on top of ours, random-access structures we never need,
//! and a second durability mechanism to reason about, for no feature a log uses.
//!
//! # Writes, durability and visibility
//!
//! Appends use group commit. Every `append`, `append_to` or `append_batch` call hands its
//! records to the writer in one step. The writer takes everything pending, assigns
//! offsets, frames the records of each partition into one buffer and writes it with one
//! `pwrite` per partition. The writer is whichever appender finds no batch being written
//! (it writes to the page cache, which takes microseconds, instead of waking a thread and
//! waiting for it); appenders that come meanwhile queue for its next round, and after two
//! rounds with more still coming a dedicated writer thread takes the queue over. The
//! records are then **visible** to readers and consumers at once: they are in the
//! kernel's page cache, so killing the process (`kill -9`) cannot lose them. Durability
//! against power loss is the job of the sync thread, which takes the batch, runs
//! `fdatasync` once per file the batch touched, and only then acknowledges the appenders
//! ([`FsyncPolicy::Always`], the default). While it syncs, the next batch is being
//! written, so many concurrent appenders share each fsync. With [`FsyncPolicy::Interval`]
//! appends are acknowledged once written and the files are synced periodically; with
//! [`FsyncPolicy::Never`] the operating system decides (both can lose the last
//! acknowledged records on power loss, never on a process crash). `fdatasync`, which
//! waits for the device, never runs on the async runtime's worker threads.
//!
//! Details that keep appends fast while fsyncs run:
//!
//! * sync rounds start at most once a millisecond: under light load an acknowledgement may
//!   wait up to that long, and one fsync covers more appends; under heavy load a round
//!   takes longer than that anyway;
//! * fast rounds fsync their files one after the other; when the device is slow (a round
//!   took 2 ms or more) the files of the next round are fsynced in parallel;
//! * the active segment is zero-filled 1 MiB ahead of its last record, so an append
//!   overwrites blocks that are already allocated and written: the file's size and
//!   block map do not change, and an `fdatasync` writes the data and flushes the device
//!   with no inode or journal write besides (on ext4 without a journal that is two
//!   device round trips instead of four). The zeros are not data: scans stop at them,
//!   recovery cuts them off, and a closed segment is cut back to its records before its
//!   final fsync. A segment whose fsyncs cover more than 64 KiB each on average (bulk
//!   writes, where writing every byte twice costs more than the metadata trips) has its
//!   blocks reserved ahead instead (`fallocate` without changing the size);
//! * a closed segment is fsynced once in the background whatever the policy; then its
//!   index is saved and its file descriptor closed (it is reopened per read, checked to
//!   still be the same file), so thousands of segments do not hold thousands of files open.
//!
//! # Reads
//!
//! Readers and consumers register a wake-up with each partition they read and are notified
//! by the writer right after a write (no polling). Recent records (about 1 MiB per
//! partition) are served from memory; older ones are read from the segment files with
//! positioned reads on a blocking thread.
//!
//! # Recovery
//!
//! On open, the last segment of every partition is scanned completely. A record that was
//! only partly written when the process or machine stopped (a torn tail: the data ends
//! inside the record, the rest of the file is zeros, or the very last record fails its
//! CRC) is cut off. Damage followed by valid data is reported as [`LogError::Corrupt`]
//! naming the file: the log never silently drops records in the middle of a segment.
//!
//! # Consumer groups
//!
//! Members of a group in this process split the partitions of their topics round-robin.
//! Joining, [`imbus_log::Consumer::close`] and dropping a consumer rebalance the group at
//! once; the others see `Revoked`/`Assigned` on their next poll and continue from the
//! group's committed offsets (at-least-once). Commits go through the writer, so they are
//! group-committed and durable under the same fsync policy as records.
//!
//! # Compaction and retention
//!
//! Every [`EmbeddedOptions::compaction_interval`] (and on [`EmbeddedLog::compact_now`]),
//! delete topics drop closed segments older than their retention and compacted topics
//! rewrite closed segments keeping the latest record per key; see the `compaction`
//! module documentation for the crash-safe protocol.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod compaction;
mod fsutil;
mod group;
mod offsets;
mod partition;
mod reader;
mod record;
mod segment;
mod topic;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use imbus_log::{
    Acknowledgement, Consumer, ConsumerOptions, Log, LogError, Offset, Partition, PartitionReader,
    Position, Record, StartAt, Submission, TimestampMs, TopicConfig, TopicPartition, Watermarks,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

pub use compaction::CompactionStats;

use crate::fsutil::{DirLock, io_at};
use crate::group::{Coordinator, EmbeddedConsumer};
use crate::offsets::OffsetStore;
use crate::partition::PartitionLog;
use crate::reader::EmbeddedReader;
use crate::topic::Topic;
use crate::writer::{Durability, Request, SyncTarget, Writer, WriterStats};

/// The lock file of a log directory (`@` cannot appear in a topic name).
pub(crate) const LOCK_FILE: &str = "@lock";
/// The directory of committed group offsets.
const GROUPS_DIR: &str = "@groups";

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge an append only after `fdatasync` (group-committed). Nothing
    /// acknowledged is lost, even on power loss.
    Always,
    /// Acknowledge once written to the page cache; fsync every interval. A power loss can
    /// lose up to one interval of acknowledged records; a process crash loses nothing.
    Interval(Duration),
    /// Never fsync explicitly (the kernel writes back on its own). For tests and
    /// throw-away data.
    Never,
}

impl FsyncPolicy {
    /// Parses `always`, `never` or `interval:<milliseconds>` (e.g. `interval:100`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let v = s.trim().to_ascii_lowercase();
        let allowed = "use \"always\", \"never\" or \"interval:<milliseconds>\" (for example \"interval:100\")";
        match v.as_str() {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => match v.strip_prefix("interval:") {
                Some(ms) => match ms.trim().parse::<u64>() {
                    Ok(0) => Err(format!(
                        "invalid fsync policy {s:?}: the interval must be at least 1 millisecond; {allowed}"
                    )),
                    Ok(ms) => Ok(Self::Interval(Duration::from_millis(ms))),
                    Err(_) => Err(format!(
                        "invalid fsync policy {s:?}: {ms:?} is not a whole number of milliseconds; {allowed}"
                    )),
                },
                None => Err(format!("invalid fsync policy {s:?}: {allowed}")),
            },
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Never => f.write_str("never"),
            Self::Interval(d) => write!(f, "interval:{}", d.as_millis()),
        }
    }
}

/// Settings of an [`EmbeddedLog`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// When appends are forced to disk. Default: [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
    /// Segments roll when they reach this size. Default: 64 MiB.
    pub segment_bytes: u64,
    /// The largest key + value + headers of one record; larger appends fail with
    /// [`LogError::RecordTooLarge`]. Default: 4 MiB.
    pub max_record_bytes: usize,
    /// How often compaction and retention run in the background; zero disables the
    /// background run ([`EmbeddedLog::compact_now`] still works). Default: 30 s.
    pub compaction_interval: Duration,
    /// How long tombstones survive compaction. Default: 24 h.
    pub delete_retention: Duration,
    /// Kept for symmetry with the Kafka backend: in-process members that go away are
    /// detected when they are dropped, without a session timeout. Default: 10 s.
    pub group_session_timeout: Duration,
    /// Under [`FsyncPolicy::Always`], the longest records appended with
    /// [`Log::submit_derived`] wait to be synced when no offset commit asks for it first.
    /// Default: 1 s.
    pub derived_sync_after: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 * 1024 * 1024,
            max_record_bytes: 4 * 1024 * 1024,
            compaction_interval: Duration::from_secs(30),
            delete_retention: Duration::from_secs(24 * 3600),
            group_session_timeout: Duration::from_secs(10),
            derived_sync_after: Duration::from_secs(1),
        }
    }
}

/// Counters of an [`EmbeddedLog`] since it was opened (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records appended (written and visible).
    pub appended_records: u64,
    /// Bytes of record frames written.
    pub appended_bytes: u64,
    /// `fdatasync` calls on segment and offsets files.
    pub fsyncs: u64,
    /// Group commits: batches the sync thread made durable.
    pub sync_batches: u64,
    /// Write batches: rounds of the writer (an appender or the writer thread) that wrote
    /// records.
    pub write_batches: u64,
    /// Times an appender that wrote batches for others while more kept coming left the
    /// queue to the writer thread.
    pub writer_handoffs: u64,
    /// Records in the most recent write batch.
    pub last_batch_records: u64,
    /// Records in the largest write batch so far.
    pub max_batch_records: u64,
    /// Committed group offsets stored.
    pub committed_offsets: u64,
    /// Files holding derived records ([`Log::submit_derived`]) that wait for their fsync
    /// (at the next offset commit, or within [`EmbeddedOptions::derived_sync_after`]).
    pub unsynced_derived_files: u64,
}

impl LogStats {
    /// The average number of records per write batch.
    pub fn average_batch_records(&self) -> f64 {
        if self.write_batches == 0 {
            0.0
        } else {
            self.appended_records as f64 / self.write_batches as f64
        }
    }
}

/// Everything an open log shares between its handles, readers and consumers.
pub(crate) struct Inner {
    dir: PathBuf,
    options: EmbeddedOptions,
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    create_lock: Mutex<()>,
    compaction_lock: Mutex<()>,
    pub(crate) writer: Writer,
    pub(crate) offsets: OffsetStore,
    pub(crate) coordinator: Coordinator,
    stats: Arc<WriterStats>,
    closed: AtomicBool,
    background: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Released by shutdown, or (declared last) after the writer threads have stopped.
    lock: Mutex<Option<DirLock>>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.background.lock().take() {
            task.abort();
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> LogError {
    LogError::Io(std::io::Error::other(format!("log task failed: {e}")))
}

impl Inner {
    fn open(dir: PathBuf, options: EmbeddedOptions) -> Result<Self, LogError> {
        if options.segment_bytes < 1024 {
            return Err(LogError::InvalidArgument(format!(
                "segment size {} is too small (at least 1024 bytes)",
                options.segment_bytes
            )));
        }
        if options.max_record_bytes == 0 {
            return Err(LogError::InvalidArgument(
                "the maximum record size must be at least 1 byte".into(),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| io_at(&dir, "cannot create log directory", e))?;
        let lock = DirLock::acquire(&dir)?;
        let offsets = OffsetStore::open(dir.join(GROUPS_DIR))?;
        let mut topics = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io_at(&dir, "cannot list", e))? {
            let entry = entry.map_err(|e| io_at(&dir, "cannot list", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if imbus_log::validate_topic_name(&name).is_err() || !entry.path().is_dir() {
                continue;
            }
            if let Some(t) = Topic::open(&dir, &name)? {
                topics.insert(Arc::clone(&t.name), Arc::new(t));
            }
        }
        let stats = Arc::new(WriterStats::default());
        let writer = Writer::start(
            options.fsync,
            options.segment_bytes,
            options.derived_sync_after,
            Arc::clone(&stats),
        )?;
        tracing::info!(dir = %dir.display(), topics = topics.len(), fsync = %options.fsync, "embedded log opened");
        Ok(Self {
            dir,
            options,
            topics: RwLock::new(topics),
            create_lock: Mutex::new(()),
            compaction_lock: Mutex::new(()),
            writer,
            offsets,
            coordinator: Coordinator::default(),
            stats,
            closed: AtomicBool::new(false),
            background: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_owned()))
    }

    pub(crate) fn partition(
        &self,
        topic: &str,
        partition: Partition,
    ) -> Result<Arc<PartitionLog>, LogError> {
        let t = self.topic(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| t.partitions.get(p))
            .cloned()
            .ok_or_else(|| LogError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })
    }

    fn create_topic(&self, config: &TopicConfig) -> Result<(), LogError> {
        let _guard = self.create_lock.lock();
        if let Some(t) = self.topics.read().get(config.name.as_str()).cloned() {
            if t.partition_count() != config.partitions {
                return Err(LogError::TopicMismatch {
                    topic: config.name.clone(),
                    existing: t.partition_count(),
                    requested: config.partitions,
                });
            }
            return t.update(config);
        }
        let t = Arc::new(Topic::create(&self.dir, config)?);
        tracing::info!(topic = %config.name, partitions = config.partitions, cleanup = ?config.cleanup, "topic created");
        self.topics.write().insert(Arc::clone(&t.name), t);
        Ok(())
    }

    fn check_record(&self, record: &Record) -> Result<(), LogError> {
        let size = record::payload_len(record);
        if size > self.options.max_record_bytes {
            return Err(LogError::RecordTooLarge {
                size,
                limit: self.options.max_record_bytes,
            });
        }
        Ok(())
    }

    async fn append_one(
        &self,
        part: Arc<PartitionLog>,
        record: Record,
    ) -> Result<Position, LogError> {
        if self.is_closed() {
            return Err(LogError::Closed);
        }
        let (reply, rx) = oneshot::channel();
        self.writer.submit(Request::AppendOne {
            part,
            record,
            reply,
        })?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Hands records to the writer as one request (see [`Log::submit`]); `derived`:
    /// see [`Log::submit_derived`].
    fn submit_items(
        &self,
        records: Vec<Submission>,
        derived: bool,
    ) -> Result<Acknowledgement, LogError> {
        if self.is_closed() {
            return Err(LogError::Closed);
        }
        if records.is_empty() {
            return Ok(imbus_log::acknowledged());
        }
        let mut items = Vec::with_capacity(records.len());
        let mut durability = if derived {
            Durability::Derived
        } else {
            Durability::Synced
        };
        for Submission {
            topic,
            partition,
            record,
        } in records
        {
            self.check_record(&record)?;
            let t = self.topic(&topic)?;
            if derived && t.compacted() {
                // State its producer restores by folding the changelog to its end: on
                // disk, with the derived records before it, before it is acknowledged.
                durability = Durability::DerivedState;
            }
            let p = match (partition, &record.key) {
                (Some(p), _) => p,
                (None, Some(k)) => imbus_log::partition_for_key(k, t.partition_count()),
                (None, None) => 0,
            };
            let part = usize::try_from(p)
                .ok()
                .and_then(|i| t.partitions.get(i))
                .cloned()
                .ok_or_else(|| LogError::UnknownPartition {
                    topic: topic.clone(),
                    partition: p,
                })?;
            items.push((part, record));
        }
        // One request: the writer writes the records in this order, after every request
        // submitted before and before every one submitted after.
        let (reply, rx) = oneshot::channel();
        self.writer.submit(Request::Append {
            items,
            reply,
            durability,
        })?;
        Ok(Box::pin(async move {
            rx.await.map_err(|_| LogError::Closed)?.map(|_| ())
        }))
    }

    async fn append_items(
        &self,
        items: Vec<(Arc<PartitionLog>, Record)>,
    ) -> Result<Vec<Position>, LogError> {
        if self.is_closed() {
            return Err(LogError::Closed);
        }
        let (reply, rx) = oneshot::channel();
        self.writer.submit(Request::Append {
            items,
            reply,
            durability: Durability::Synced,
        })?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    fn run_compaction(&self) -> Result<CompactionStats, LogError> {
        let _guard = self.compaction_lock.lock();
        let mut stats = CompactionStats::default();
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        let mut first_error = None;
        for t in topics {
            let config = t.config();
            for part in &t.partitions {
                if self.is_closed() {
                    return Err(LogError::Closed);
                }
                if let Err(e) = compaction::clean_partition(
                    part,
                    config.cleanup,
                    config.retention,
                    self.options.delete_retention,
                    self.options.segment_bytes,
                    &mut stats,
                ) {
                    tracing::error!(topic = %t.name, partition = part.partition, error = %e, "compaction failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    fn sync_targets(&self) -> Vec<SyncTarget> {
        let mut targets = Vec::new();
        for t in self.topics.read().values() {
            for p in &t.partitions {
                targets.extend(p.segments().into_iter().map(SyncTarget::Segment));
            }
        }
        targets.extend(self.offsets.all().into_iter().map(SyncTarget::Offsets));
        targets
    }
}

/// The embedded log. Cheap to clone; all clones share one open log.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

impl fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl EmbeddedLog {
    /// Whether a log is open on `dir` now, in this process or another one (a server
    /// that is starting or running, or a command working on the log directly).
    pub fn in_use(dir: &Path) -> bool {
        fsutil::dir_locked(dir)
    }

    /// Opens (creating if needed) the log in `dir`, recovering from a crash if the last
    /// run did not shut down cleanly. Fails if another process or instance has the
    /// directory open.
    pub async fn open(
        dir: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<EmbeddedLog, LogError> {
        let dir = dir.as_ref().to_path_buf();
        let interval = options.compaction_interval;
        let inner = tokio::task::spawn_blocking(move || Inner::open(dir, options))
            .await
            .map_err(join_error)??;
        let inner = Arc::new(inner);
        if !interval.is_zero() {
            let weak = Arc::downgrade(&inner);
            let task = tokio::spawn(background(weak, interval));
            *inner.background.lock() = Some(task);
        }
        Ok(EmbeddedLog { inner })
    }

    /// Runs compaction and retention once, now.
    pub async fn compact_now(&self) -> Result<CompactionStats, LogError> {
        if self.inner.is_closed() {
            return Err(LogError::Closed);
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.run_compaction())
            .await
            .map_err(join_error)?
    }

    /// Bytes the files of a topic take on disk.
    pub fn disk_usage(&self, topic: &str) -> Result<u64, LogError> {
        let t = self.inner.topic(topic)?;
        let mut total = std::fs::metadata(t.dir.join(topic::META_FILE))
            .map(|m| m.len())
            .unwrap_or(0);
        for p in &t.partitions {
            total += p.disk_usage()?;
        }
        Ok(total)
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> LogStats {
        let s = &self.inner.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        LogStats {
            appended_records: get(&s.appended_records),
            appended_bytes: get(&s.appended_bytes),
            fsyncs: get(&s.fsyncs),
            unsynced_derived_files: get(&s.unsynced_derived_files),
            sync_batches: get(&s.sync_batches),
            write_batches: get(&s.write_batches),
            last_batch_records: get(&s.last_batch_records),
            max_batch_records: get(&s.max_batch_records),
            committed_offsets: get(&s.committed_offsets),
            writer_handoffs: get(&s.writer_handoffs),
        }
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

async fn background(weak: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(inner) = weak.upgrade() else { break };
        if inner.is_closed() {
            break;
        }
        match tokio::task::spawn_blocking(move || inner.run_compaction()).await {
            Ok(Ok(stats)) if stats != CompactionStats::default() => {
                tracing::debug!(?stats, "background compaction and retention done");
            }
            Ok(Ok(_)) | Ok(Err(LogError::Closed)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "background compaction failed"),
            Err(e) => tracing::error!(error = %e, "background compaction task failed"),
        }
    }
}

#[async_trait]
impl Log for EmbeddedLog {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn create_topic(&self, config: &TopicConfig) -> Result<(), LogError> {
        config.validate()?;
        if self.inner.is_closed() {
            return Err(LogError::Closed);
        }
        let inner = Arc::clone(&self.inner);
        let config = config.clone();
        tokio::task::spawn_blocking(move || inner.create_topic(&config))
            .await
            .map_err(join_error)?
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, LogError> {
        Ok(self.inner.topic(topic)?.partition_count())
    }

    async fn append(&self, topic: &str, record: Record) -> Result<Position, LogError> {
        let t = self.inner.topic(topic)?;
        self.inner.check_record(&record)?;
        let p = match &record.key {
            Some(k) => imbus_log::partition_for_key(k, t.partition_count()),
            None => 0,
        };
        let part = t
            .partitions
            .get(usize::try_from(p).unwrap_or(0))
            .cloned()
            .ok_or_else(|| LogError::UnknownPartition {
                topic: topic.to_owned(),
                partition: p,
            })?;
        self.inner.append_one(part, record).await
    }

    async fn append_to(
        &self,
        topic: &str,
        partition: Partition,
        record: Record,
    ) -> Result<Position, LogError> {
        let part = self.inner.partition(topic, partition)?;
        self.inner.check_record(&record)?;
        self.inner.append_one(part, record).await
    }

    async fn append_batch(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> Result<Vec<Position>, LogError> {
        let t = self.inner.topic(topic)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let n = t.partition_count();
        let mut items = Vec::with_capacity(records.len());
        for record in records {
            self.inner.check_record(&record)?;
            let p = match &record.key {
                Some(k) => imbus_log::partition_for_key(k, n),
                None => 0,
            };
            let part = t
                .partitions
                .get(usize::try_from(p).unwrap_or(0))
                .cloned()
                .ok_or_else(|| LogError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition: p,
                })?;
            items.push((part, record));
        }
        self.inner.append_items(items).await
    }

    async fn submit(&self, records: Vec<Submission>) -> Result<Acknowledgement, LogError> {
        self.inner.submit_items(records, false)
    }

    async fn submit_derived(&self, records: Vec<Submission>) -> Result<Acknowledgement, LogError> {
        self.inner.submit_items(records, true)
    }

    async fn watermarks(&self, topic: &str, partition: Partition) -> Result<Watermarks, LogError> {
        Ok(self.inner.partition(topic, partition)?.watermarks())
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: Partition,
        timestamp: TimestampMs,
    ) -> Result<Option<Offset>, LogError> {
        let part = self.inner.partition(topic, partition)?;
        tokio::task::spawn_blocking(move || part.offset_for_timestamp(timestamp))
            .await
            .map_err(join_error)?
    }

    async fn reader(
        &self,
        topic: &str,
        partition: Partition,
        start: StartAt,
    ) -> Result<Box<dyn PartitionReader>, LogError> {
        if self.inner.is_closed() {
            return Err(LogError::Closed);
        }
        let part = self.inner.partition(topic, partition)?;
        Ok(Box::new(
            EmbeddedReader::new(Arc::clone(&self.inner), part, start).await?,
        ))
    }

    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn Consumer>, LogError> {
        if self.inner.is_closed() {
            return Err(LogError::Closed);
        }
        Ok(Box::new(EmbeddedConsumer::join(
            Arc::clone(&self.inner),
            options,
        )?))
    }

    async fn committed(
        &self,
        group: &str,
        tp: &TopicPartition,
    ) -> Result<Option<Offset>, LogError> {
        Ok(self.inner.offsets.committed(group, tp))
    }

    async fn shutdown(&self) -> Result<(), LogError> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(task) = self.inner.background.lock().take() {
            task.abort();
        }
        // Waiting readers and consumers return `Closed` now rather than at their timeout.
        for t in self.inner.topics.read().values() {
            for p in &t.partitions {
                p.wake();
            }
        }
        self.inner.coordinator.wake_all();
        let (reply, rx) = oneshot::channel();
        let flushed = match self.inner.writer.submit(Request::Flush {
            targets: self.inner.sync_targets(),
            reply,
        }) {
            Ok(()) => rx.await.map_err(|_| LogError::Closed).and_then(|r| r),
            Err(e) => Err(e),
        };
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // Let a running compaction finish, then stop the writer threads.
            let _guard = inner.compaction_lock.lock();
            inner.writer.stop();
            // The active segments end at their last record again (a recovery would cut
            // the zeros off too; this keeps a cleanly stopped log's files exact).
            for t in inner.topics.read().values() {
                for p in &t.partitions {
                    let seg = p.active();
                    if let Err(e) = seg.trim() {
                        tracing::warn!(segment = %seg.path.display(), error = %e, "cannot cut the zero-filled end off a segment");
                    }
                }
            }
            // Nothing writes any more: the directory may be opened again, even while
            // stray handles of this log are still alive.
            inner.lock.lock().take();
        })
        .await
        .map_err(join_error)?;
        tracing::info!(dir = %self.inner.dir.display(), "embedded log shut down");
        flushed
    }
}
