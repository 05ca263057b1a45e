//! The writer: group commit, with fsyncs on a dedicated thread.
//!
//! Appenders hand their records to a queue (one request per `append` or `append_batch`
//! call). Whoever finds no batch being written writes one: it takes everything pending at
//! once, assigns offsets, frames the records of each partition into one buffer, writes
//! each buffer with a single `pwrite`, and publishes the records to readers (they are in
//! the page cache now, so a killed process loses nothing). Requests submitted meanwhile
//! wait in the queue for the next round of the same writer, so requests are written one
//! batch at a time and in submission order. An appender therefore usually writes its own
//! records (a write to the page cache takes microseconds) instead of waking a thread and
//! waiting for it; after a few rounds with more requests still coming, the rest goes to
//! the *writer thread*, which also finishes the queue when the log stops. Each batch then
//! goes to the *sync thread*, which runs `fdatasync` once per file the batch touched and
//! acknowledges every appender of the batch, while the next batch is being written.
//! Under [`FsyncPolicy::Always`] producers are thus acknowledged only after the fsync.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use imbus_log::{LogError, Offset, Position, Record, TimestampMs, TopicPartition};
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::FsyncPolicy;
use crate::offsets::GroupOffsets;
use crate::partition::PartitionLog;
use crate::record::{self, StoredRecord};
use crate::segment::{IndexEntry, Segment, Tail};

/// Counters of the writer, read by [`crate::EmbeddedLog::stats`].
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    pub appended_records: AtomicU64,
    pub appended_bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub write_batches: AtomicU64,
    pub last_batch_records: AtomicU64,
    pub max_batch_records: AtomicU64,
    pub sync_batches: AtomicU64,
    pub committed_offsets: AtomicU64,
    /// Times an appender left the queue to the writer thread.
    pub writer_handoffs: AtomicU64,
    /// Files holding derived records not synced yet (a gauge).
    pub unsynced_derived_files: AtomicU64,
}

type AppendReply = oneshot::Sender<Result<Vec<Position>, LogError>>;
type AppendOneReply = oneshot::Sender<Result<Position, LogError>>;
type UnitReply = oneshot::Sender<Result<(), LogError>>;

/// A file the sync thread may have to fsync.
#[derive(Debug, Clone)]
pub(crate) enum SyncTarget {
    Segment(Arc<Segment>),
    Offsets(Arc<GroupOffsets>),
}

impl SyncTarget {
    fn key(&self) -> usize {
        match self {
            SyncTarget::Segment(s) => Arc::as_ptr(s) as usize,
            SyncTarget::Offsets(g) => Arc::as_ptr(g) as usize,
        }
    }

    fn sync(&self) -> io::Result<()> {
        match self {
            SyncTarget::Segment(s) => s.sync(),
            SyncTarget::Offsets(g) => g.sync(),
        }
    }
}

/// When the records of an append are acknowledged under [`FsyncPolicy::Always`] (the
/// other policies acknowledge every append once written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Once on disk.
    Synced,
    /// Outputs their producer can make again ([`imbus_log::Log::submit_derived`]): once
    /// written; on disk before any offset commit submitted after them is written, and
    /// at the latest [`crate::EmbeddedOptions::derived_sync_after`] later.
    Derived,
    /// Derived outputs that include a changelog record (state their producer restores by
    /// folding the changelog to its end, so it would not make the other outputs again):
    /// once on disk, together with every derived record written before.
    DerivedState,
}

/// Work handed to the writer thread.
#[derive(Debug)]
pub(crate) enum Request {
    Append {
        items: Vec<(Arc<PartitionLog>, Record)>,
        reply: AppendReply,
        durability: Durability,
    },
    /// One record (the common case, without the allocations of a batch).
    AppendOne {
        part: Arc<PartitionLog>,
        record: Record,
        reply: AppendOneReply,
    },
    Commit {
        group: Arc<GroupOffsets>,
        offsets: Vec<(TopicPartition, Offset)>,
        reply: UnitReply,
    },
    /// Fsyncs the given files (and everything written before) whatever the policy.
    Flush {
        targets: Vec<SyncTarget>,
        reply: UnitReply,
    },
}

#[derive(Debug)]
enum Ack {
    Append(AppendReply, Result<Vec<Position>, LogError>),
    AppendOne(AppendOneReply, Result<Position, LogError>),
    Unit(UnitReply, Result<(), LogError>),
}

impl Ack {
    fn fail(&mut self, e: &io::Error) {
        let err = || LogError::Io(io::Error::new(e.kind(), format!("fsync failed: {e}")));
        match self {
            Ack::Append(_, r) if r.is_ok() => *r = Err(err()),
            Ack::AppendOne(_, r) if r.is_ok() => *r = Err(err()),
            Ack::Unit(_, r) if r.is_ok() => *r = Err(err()),
            _ => {}
        }
    }

    fn send(self) {
        // A dropped receiver means the appender went away; nothing to tell it.
        match self {
            Ack::Append(tx, r) => {
                let _ = tx.send(r);
            }
            Ack::AppendOne(tx, r) => {
                let _ = tx.send(r);
            }
            Ack::Unit(tx, r) => {
                let _ = tx.send(r);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    pending: Vec<Request>,
    closed: bool,
    /// A batch is being written: what is submitted now waits for that writer's next round.
    busy: bool,
    /// An appender that wrote [`INLINE_ROUNDS`] batches left the rest to the writer thread
    /// (`busy` stays set: the writer thread takes over).
    handoff: bool,
}

/// Batches an appender writes before leaving requests that keep coming to the writer
/// thread (its own request is in the first).
const INLINE_ROUNDS: usize = 2;

/// An offset commit under [`FsyncPolicy::Always`]: written by the sync thread after the
/// derived records written before it are on disk.
#[derive(Debug)]
struct PendingCommit {
    group: Arc<GroupOffsets>,
    offsets: Vec<(TopicPartition, Offset)>,
    reply: UnitReply,
}

#[derive(Debug, Default)]
struct SyncQueue {
    jobs: Vec<(Vec<SyncTarget>, Vec<Ack>)>,
    dirty: Vec<SyncTarget>,
    /// Files holding derived records that are not known to be on disk yet, and since
    /// when the oldest of them waits.
    derived: Vec<SyncTarget>,
    derived_since: Option<Instant>,
    /// Offset commits waiting for `derived` to be synced, in submission order.
    commits: Vec<PendingCommit>,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    sync: Mutex<SyncQueue>,
    sync_cv: Condvar,
    /// Allocations kept from one batch to the next; used by whoever writes a batch.
    scratch: Mutex<Scratch>,
    stats: Arc<WriterStats>,
    policy: FsyncPolicy,
    segment_bytes: u64,
    derived_sync_after: Duration,
}

/// The handle appenders use; dropping it stops the threads after they finish their work.
#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Writer {
    pub(crate) fn start(
        policy: FsyncPolicy,
        segment_bytes: u64,
        derived_sync_after: Duration,
        stats: Arc<WriterStats>,
    ) -> Result<Self, LogError> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            sync: Mutex::new(SyncQueue::default()),
            sync_cv: Condvar::new(),
            scratch: Mutex::new(Scratch::default()),
            stats,
            policy,
            segment_bytes,
            derived_sync_after,
        });
        let w = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("imbus-log-writer".into())
            .spawn(move || writer_loop(&w))?;
        let s = Arc::clone(&shared);
        let syncer = std::thread::Builder::new()
            .name("imbus-log-sync".into())
            .spawn(move || sync_loop(&s))?;
        Ok(Self {
            shared,
            threads: Mutex::new(vec![writer, syncer]),
        })
    }

    /// Queues a request, and writes it (with everything pending) at once when no batch is
    /// being written; fails with [`LogError::Closed`] once the writer is stopped.
    pub(crate) fn submit(&self, req: Request) -> Result<(), LogError> {
        let mut q = self.shared.queue.lock();
        if q.closed {
            return Err(LogError::Closed);
        }
        q.pending.push(req);
        if q.busy {
            // The batch being written is followed by one with this request.
            return Ok(());
        }
        q.busy = true;
        let batch = std::mem::take(&mut q.pending);
        drop(q);
        write_rounds(&self.shared, batch, Some(INLINE_ROUNDS));
        Ok(())
    }

    /// Stops both threads after they finished everything queued, and waits for them.
    pub(crate) fn stop(&self) {
        self.shared.queue.lock().closed = true;
        self.shared.queue_cv.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a log writer thread panicked");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What one batch does to one partition.
struct PartWork {
    part: Arc<PartitionLog>,
    next: Offset,
    seg: Arc<Segment>,
    /// Where this batch's bytes for `seg` start.
    write_start: u64,
    tail: Tail,
    entries: Vec<IndexEntry>,
    buf: Vec<u8>,
    first: Option<Offset>,
    count: u64,
    records: Vec<StoredRecord>,
    touched: Vec<Arc<Segment>>,
    /// Segments this batch rolled away from.
    closed: Vec<Arc<Segment>>,
    failed: Option<io::Error>,
    /// Records below this offset reached the file.
    ok_until: Offset,
    /// Whether a record of this batch here must be on disk before it is acknowledged
    /// (anything but a derived append under [`FsyncPolicy::Always`]).
    eager: bool,
}

impl PartWork {
    fn new(part: Arc<PartitionLog>, buf: Vec<u8>) -> Self {
        let seg = part.active();
        let tail = seg.tail();
        let next = part.high();
        Self {
            next,
            ok_until: next,
            write_start: tail.size,
            tail,
            seg,
            part,
            entries: Vec::new(),
            buf,
            first: None,
            count: 0,
            records: Vec::new(),
            touched: Vec::new(),
            closed: Vec::new(),
            failed: None,
            eager: false,
        }
    }

    /// Writes the buffered frames of the current segment and makes them visible in it.
    fn flush_segment(&mut self, segment_bytes: u64, zero_fill: bool, stats: &WriterStats) {
        if self.buf.is_empty() || self.failed.is_some() {
            return;
        }
        self.seg.preallocate(
            self.write_start + self.buf.len() as u64,
            segment_bytes,
            zero_fill,
        );
        match self.seg.write_at(&self.buf, self.write_start) {
            Ok(()) => {
                if let (Some(first), Some(last)) = (self.first, self.next.checked_sub(1)) {
                    self.seg
                        .publish(self.tail, &self.entries, first, last, self.count);
                }
                stats
                    .appended_bytes
                    .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
                self.touched.push(Arc::clone(&self.seg));
                self.ok_until = self.next;
                self.write_start = self.tail.size;
            }
            Err(e) => {
                tracing::error!(segment = %self.seg.path.display(), error = %e, "log write failed");
                // Cut off whatever part of the batch reached the file, so a restart does
                // not resurrect records that were never acknowledged.
                if let Err(e2) = self.seg.truncate(self.write_start) {
                    tracing::error!(segment = %self.seg.path.display(), error = %e2, "cannot cut off a failed write");
                }
                self.failed = Some(e);
            }
        }
        self.buf.clear();
        self.entries.clear();
        self.first = None;
        self.count = 0;
    }

    fn add(
        &mut self,
        record: Record,
        now: TimestampMs,
        segment_bytes: u64,
        stats: &WriterStats,
    ) -> Offset {
        let len =
            record::frame_len(record.key.as_ref(), record.value.as_ref(), &record.headers) as u64;
        if self.tail.size > 0 && self.tail.size + len > segment_bytes && self.failed.is_none() {
            // The segment is full: nothing to fill in ahead of it.
            self.flush_segment(segment_bytes, false, stats);
            if self.failed.is_none() {
                match self.part.roll(self.next) {
                    Ok(seg) => {
                        self.closed.push(Arc::clone(&self.seg));
                        self.tail = seg.tail();
                        self.write_start = self.tail.size;
                        self.seg = seg;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot roll segment");
                        self.failed = Some(io::Error::other(e.to_string()));
                    }
                }
            }
        }
        let offset = self.next;
        self.next += 1;
        let ts = record.timestamp.unwrap_or(now);
        self.tail.note(&mut self.entries, offset, ts, len);
        record::encode(
            &mut self.buf,
            offset,
            ts,
            record.key.as_ref(),
            record.value.as_ref(),
            &record.headers,
        );
        self.first.get_or_insert(offset);
        self.count += 1;
        self.records.push(StoredRecord {
            offset,
            timestamp: ts,
            key: record.key,
            value: record.value,
            headers: record.headers,
        });
        offset
    }
}

struct PendingAppend {
    reply: AppendReply,
    /// (index into the batch's partitions, offset) per record.
    slots: Vec<(usize, Offset)>,
}

/// Allocations the writer keeps from one batch to the next.
#[derive(Debug, Default)]
struct Scratch {
    part_index: HashMap<usize, usize>,
    bufs: Vec<Vec<u8>>,
}

impl Scratch {
    const KEEP_BUFS: usize = 64;
    const KEEP_BUF_BYTES: usize = 4 * 1024 * 1024;

    fn give_back(&mut self, mut buf: Vec<u8>) {
        if self.bufs.len() < Self::KEEP_BUFS && buf.capacity() <= Self::KEEP_BUF_BYTES {
            buf.clear();
            self.bufs.push(buf);
        }
    }
}

/// Writes `batch`, then what was submitted meanwhile, one batch per round, while holding
/// the queue's `busy` flag; clears it when nothing is left. After `rounds` rounds (when
/// given) with requests still waiting, hands the queue to the writer thread instead.
fn write_rounds(shared: &Shared, mut batch: Vec<Request>, rounds: Option<usize>) {
    let mut scratch = shared.scratch.lock();
    let mut done = 0;
    loop {
        process(shared, &mut batch, &mut scratch);
        done += 1;
        let mut q = shared.queue.lock();
        if q.pending.is_empty() {
            // The emptied batch keeps its allocation for the next submissions.
            std::mem::swap(&mut batch, &mut q.pending);
            q.busy = false;
            let closed = q.closed;
            drop(q);
            if closed {
                // The writer thread waits for the last batch before it stops.
                shared.queue_cv.notify_all();
            }
            return;
        }
        if rounds.is_some_and(|r| done >= r) {
            q.handoff = true;
            shared.stats.writer_handoffs.fetch_add(1, Ordering::Relaxed);
            drop(q);
            drop(scratch);
            shared.queue_cv.notify_one();
            return;
        }
        std::mem::swap(&mut batch, &mut q.pending);
    }
}

/// The writer thread: takes the queue over from an appender that wrote enough rounds, and
/// stops once the log is closed and the last batch is written.
fn writer_loop(shared: &Shared) {
    loop {
        let batch = {
            let mut q = shared.queue.lock();
            loop {
                if q.handoff {
                    q.handoff = false;
                    break Some(std::mem::take(&mut q.pending));
                }
                if !q.busy && !q.pending.is_empty() {
                    q.busy = true;
                    break Some(std::mem::take(&mut q.pending));
                }
                if q.closed && !q.busy && q.pending.is_empty() {
                    break None;
                }
                shared.queue_cv.wait(&mut q);
            }
        };
        let Some(batch) = batch else {
            break;
        };
        write_rounds(shared, batch, None);
    }
    let mut s = shared.sync.lock();
    s.closed = true;
    drop(s);
    shared.sync_cv.notify_all();
}

/// The index of `part` in this batch's partitions, adding it if needed.
fn slot_of(
    part: Arc<PartitionLog>,
    parts: &mut Vec<PartWork>,
    index: &mut HashMap<usize, usize>,
    bufs: &mut Vec<Vec<u8>>,
) -> usize {
    let key = Arc::as_ptr(&part) as usize;
    if let Some(i) = index.get(&key) {
        return *i;
    }
    let buf = bufs.pop().unwrap_or_default();
    parts.push(PartWork::new(part, buf));
    index.insert(key, parts.len() - 1);
    parts.len() - 1
}

fn process(shared: &Shared, batch: &mut Vec<Request>, scratch: &mut Scratch) {
    let stats = &*shared.stats;
    let mut parts: Vec<PartWork> = Vec::new();
    let part_index = &mut scratch.part_index;
    part_index.clear();
    let mut appends: Vec<PendingAppend> = Vec::new();
    // Derived appends, acknowledged as soon as they are written (under `Always`).
    let mut derived_appends: Vec<PendingAppend> = Vec::new();
    let mut commits: Vec<PendingCommit> = Vec::new();
    let always = shared.policy == FsyncPolicy::Always;
    // An append in this batch needs the derived records written before on disk too.
    let mut settle_derived = false;
    let mut singles: Vec<(AppendOneReply, usize, Offset)> = Vec::new();
    let mut acks: Vec<Ack> = Vec::new();
    let mut targets: Vec<SyncTarget> = Vec::new();
    let mut derived_targets: Vec<SyncTarget> = Vec::new();
    let mut rolled: Vec<SyncTarget> = Vec::new();
    let mut flush_requested = false;
    let mut records_in_batch = 0u64;
    let now = crate::now_ms();

    for req in batch.drain(..) {
        match req {
            Request::Append {
                items,
                reply,
                durability,
            } => {
                let lazy = durability == Durability::Derived && always;
                settle_derived |= durability == Durability::DerivedState;
                let mut slots = Vec::with_capacity(items.len());
                for (part, record) in items {
                    let i = slot_of(part, &mut parts, part_index, &mut scratch.bufs);
                    let offset = parts[i].add(record, now, shared.segment_bytes, stats);
                    parts[i].eager |= !lazy;
                    slots.push((i, offset));
                    records_in_batch += 1;
                }
                if lazy {
                    derived_appends.push(PendingAppend { reply, slots });
                } else {
                    appends.push(PendingAppend { reply, slots });
                }
            }
            Request::AppendOne {
                part,
                record,
                reply,
            } => {
                let i = slot_of(part, &mut parts, part_index, &mut scratch.bufs);
                let offset = parts[i].add(record, now, shared.segment_bytes, stats);
                parts[i].eager = true;
                singles.push((reply, i, offset));
                records_in_batch += 1;
            }
            Request::Commit {
                group,
                offsets,
                reply,
            } if always => commits.push(PendingCommit {
                group,
                offsets,
                reply,
            }),
            Request::Commit {
                group,
                offsets,
                reply,
            } => {
                let result = write_commit(group, &offsets, stats, &mut targets);
                acks.push(Ack::Unit(reply, result));
            }
            Request::Flush { targets: t, reply } => {
                flush_requested = true;
                targets.extend(t);
                acks.push(Ack::Unit(reply, Ok(())));
            }
        }
    }

    for w in &mut parts {
        w.flush_segment(
            shared.segment_bytes,
            shared.policy != FsyncPolicy::Never,
            stats,
        );
        let mut records = std::mem::take(&mut w.records);
        let ok_until = w.ok_until;
        records.retain(|r| r.offset < ok_until);
        if !records.is_empty() {
            stats
                .appended_records
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            w.part.publish(records, ok_until);
        }
        if w.eager {
            targets.extend(w.touched.drain(..).map(SyncTarget::Segment));
        } else {
            derived_targets.extend(w.touched.drain(..).map(SyncTarget::Segment));
        }
        rolled.extend(w.closed.drain(..).map(SyncTarget::Segment));
        scratch.give_back(std::mem::take(&mut w.buf));
    }
    if records_in_batch > 0 {
        stats.write_batches.fetch_add(1, Ordering::Relaxed);
        stats
            .last_batch_records
            .store(records_in_batch, Ordering::Relaxed);
        stats
            .max_batch_records
            .fetch_max(records_in_batch, Ordering::Relaxed);
    }

    let mut all_acks = Vec::with_capacity(appends.len() + singles.len() + acks.len());
    let failure = |i: usize, offset: Offset| -> Option<LogError> {
        let w = &parts[i];
        (offset >= w.ok_until).then(|| {
            let (kind, msg) = w
                .failed
                .as_ref()
                .map_or((io::ErrorKind::Other, "unknown".to_owned()), |e| {
                    (e.kind(), e.to_string())
                });
            LogError::Io(io::Error::new(kind, format!("log write failed: {msg}")))
        })
    };
    for (reply, i, offset) in singles {
        let result = match failure(i, offset) {
            Some(e) => Err(e),
            None => Ok(Position {
                partition: parts[i].part.partition,
                offset,
            }),
        };
        all_acks.push(Ack::AppendOne(reply, result));
    }
    let append_result = |a: &PendingAppend| -> Result<Vec<Position>, LogError> {
        let failed = a
            .slots
            .iter()
            .filter(|(i, offset)| *offset >= parts[*i].ok_until)
            .find_map(|(i, _)| parts[*i].failed.as_ref());
        match failed {
            Some(e) => Err(LogError::Io(io::Error::new(
                e.kind(),
                format!("log write failed: {e}"),
            ))),
            None => Ok(a
                .slots
                .iter()
                .map(|(i, offset)| Position {
                    partition: parts[*i].part.partition,
                    offset: *offset,
                })
                .collect()),
        }
    };
    for a in appends {
        let result = append_result(&a);
        all_acks.push(Ack::Append(a.reply, result));
    }
    all_acks.append(&mut acks);
    let acks = all_acks;
    if !derived_targets.is_empty() || !commits.is_empty() {
        let mut s = shared.sync.lock();
        // The sync thread needs waking for commits, and to learn when the first derived
        // record it has to sync in time was written.
        let wake = !commits.is_empty() || s.derived_since.is_none();
        if !derived_targets.is_empty() {
            s.derived.append(&mut derived_targets);
            dedup_targets(&mut s.derived);
            s.derived_since.get_or_insert_with(Instant::now);
        }
        note_unsynced(&s, stats);
        s.commits.append(&mut commits);
        drop(s);
        if wake {
            shared.sync_cv.notify_one();
        }
    }

    // Derived records are written and visible, and their files are queued for the sync
    // before the next commit: acknowledged now.
    for a in derived_appends {
        let result = append_result(&a);
        Ack::Append(a.reply, result).send();
    }
    let sync_now = flush_requested || always;
    if sync_now {
        if !acks.is_empty() || !targets.is_empty() {
            let mut s = shared.sync.lock();
            if flush_requested || settle_derived {
                // Everything written before, derived records included.
                targets.append(&mut s.derived);
                s.derived_since = None;
                note_unsynced(&s, stats);
            }
            s.jobs.push((targets, acks));
            drop(s);
            shared.sync_cv.notify_one();
        }
    } else {
        if matches!(shared.policy, FsyncPolicy::Interval(_)) && !targets.is_empty() {
            shared.sync.lock().dirty.extend(targets);
        }
        for a in acks {
            a.send();
        }
        // Whatever the policy, a segment that rolled is synced once in the background, so
        // its index can be saved and its file descriptor released.
        if !rolled.is_empty() {
            shared.sync.lock().jobs.push((rolled, Vec::new()));
            shared.sync_cv.notify_one();
        }
    }
}

/// The shortest time between the starts of two sync rounds.
const MIN_SYNC_SPACING: Duration = Duration::from_millis(1);

/// A sync round that took at least this long makes the next one use the helper threads.
const PARALLEL_SYNC_AFTER: Duration = Duration::from_millis(2);

/// Helper threads that fsync files in parallel with the sync thread: `fdatasync` waits
/// for the device, and syncing several files at once lets the file system merge their
/// journal commits.
/// A share of files for a helper, and where to report the result.
type SyncWork = (Vec<SyncTarget>, std::sync::mpsc::Sender<io::Result<()>>);

struct SyncPool {
    workers: Vec<std::sync::mpsc::Sender<SyncWork>>,
}

impl SyncPool {
    const HELPERS: usize = 3;

    fn start() -> Self {
        let mut workers = Vec::new();
        for i in 0..Self::HELPERS {
            let (tx, rx) = std::sync::mpsc::channel::<SyncWork>();
            let spawned = std::thread::Builder::new()
                .name(format!("imbus-log-sync-{i}"))
                .spawn(move || {
                    while let Ok((targets, done)) = rx.recv() {
                        let _ = done.send(targets.iter().try_for_each(SyncTarget::sync));
                    }
                });
            match spawned {
                Ok(_) => workers.push(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start an fsync helper thread; syncing with fewer threads");
                    break;
                }
            }
        }
        Self { workers }
    }

    /// Fsyncs every target once (deduplicated).
    fn sync_all(
        &self,
        targets: Vec<SyncTarget>,
        parallel: bool,
        stats: &WriterStats,
    ) -> io::Result<()> {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<SyncTarget> = targets
            .into_iter()
            .filter(|t| seen.insert(t.key()))
            .collect();
        if unique.is_empty() {
            return Ok(());
        }
        stats
            .fsyncs
            .fetch_add(unique.len() as u64, Ordering::Relaxed);
        let lanes = if parallel {
            (self.workers.len() + 1).min(unique.len())
        } else {
            1
        };
        if lanes <= 1 {
            return unique.iter().try_for_each(SyncTarget::sync);
        }
        let chunk = unique.len().div_ceil(lanes);
        let mut chunks = unique.chunks(chunk);
        let own = chunks
            .next()
            .map(<[SyncTarget]>::to_vec)
            .unwrap_or_default();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut pending = 0;
        let mut result = Ok(());
        for (worker, c) in self.workers.iter().zip(chunks) {
            match worker.send((c.to_vec(), done_tx.clone())) {
                Ok(()) => pending += 1,
                // A helper that is gone: sync its share here.
                Err(std::sync::mpsc::SendError((c, _))) => {
                    if let Err(e) = c.iter().try_for_each(SyncTarget::sync) {
                        result = Err(e);
                    }
                }
            }
        }
        drop(done_tx);
        if let Err(e) = own.iter().try_for_each(SyncTarget::sync) {
            result = Err(e);
        }
        for _ in 0..pending {
            match done_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("an fsync helper thread stopped")),
            }
        }
        result
    }
}

fn sync_loop(shared: &Shared) {
    let interval = match shared.policy {
        FsyncPolicy::Interval(d) => Some(d.max(Duration::from_millis(1))),
        _ => None,
    };
    let mut next_interval_sync = interval.map(|d| Instant::now() + d);
    let pool = SyncPool::start();
    let mut last_duration = Duration::ZERO;
    let mut last_round = Instant::now();
    loop {
        let (jobs, dirty, commits, closed) = {
            let mut s = shared.sync.lock();
            loop {
                let now = Instant::now();
                let due = next_interval_sync.is_some_and(|t| now >= t);
                let derived_due = s
                    .derived_since
                    .map(|t| t + shared.derived_sync_after)
                    .filter(|_| !s.derived.is_empty());
                if !s.jobs.is_empty()
                    || !s.commits.is_empty()
                    || s.closed
                    || due
                    || derived_due.is_some_and(|t| now >= t)
                {
                    break;
                }
                match [next_interval_sync, derived_due]
                    .into_iter()
                    .flatten()
                    .min()
                {
                    Some(t) => {
                        shared.sync_cv.wait_until(&mut s, t);
                    }
                    None => shared.sync_cv.wait(&mut s),
                }
            }

            // Group commit window: under light load, rounds start at most once per
            // MIN_SYNC_SPACING, so one fsync covers more appends and fewer fsyncs compete
            // with the writer for the device and the CPU. Under heavy load a round takes
            // longer than that and the next one starts at once.
            let earliest = last_round + MIN_SYNC_SPACING;
            if !s.closed && Instant::now() < earliest {
                drop(s);
                std::thread::sleep(earliest.saturating_duration_since(Instant::now()));
                s = shared.sync.lock();
            }
            last_round = Instant::now();
            let due = next_interval_sync.is_some_and(|t| Instant::now() >= t);
            let mut dirty = if due || s.closed || !s.jobs.is_empty() {
                std::mem::take(&mut s.dirty)
            } else {
                Vec::new()
            };
            // Derived records go to disk before any commit written after them, and at
            // the latest `derived_sync_after` after they were written.
            let derived_due = s
                .derived_since
                .is_some_and(|t| Instant::now() >= t + shared.derived_sync_after);
            if !s.commits.is_empty() || s.closed || derived_due {
                dirty.append(&mut s.derived);
                s.derived_since = None;
                note_unsynced(&s, &shared.stats);
            }
            (
                std::mem::take(&mut s.jobs),
                dirty,
                std::mem::take(&mut s.commits),
                s.closed,
            )
        };
        if let (Some(d), Some(t)) = (interval, next_interval_sync.as_mut())
            && Instant::now() >= *t
        {
            *t = Instant::now() + d;
        }
        let mut targets = dirty;
        let mut acks = Vec::new();
        for (t, a) in jobs {
            targets.extend(t);
            acks.extend(a);
        }
        let mut synced = Ok(());
        if !targets.is_empty() {
            shared.stats.sync_batches.fetch_add(1, Ordering::Relaxed);
            // Fast fsyncs are cheaper one after the other (no thread hand-offs competing
            // with the writer and the consumers for CPU); slow ones, when the device is
            // the bottleneck, are spread over the helper threads.
            let parallel = last_duration >= PARALLEL_SYNC_AFTER;
            let started = Instant::now();
            synced = pool.sync_all(targets, parallel, &shared.stats);
            last_duration = started.elapsed();
            if let Err(e) = &synced {
                tracing::error!(error = %e, "fsync of the log failed; the affected appends are reported as failed");
                for a in &mut acks {
                    a.fail(e);
                }
            }
        }
        if !commits.is_empty() {
            acks.extend(write_commits(&pool, commits, synced, &shared.stats));
        }
        for a in acks {
            a.send();
        }
        if closed && shared.sync.lock().jobs.is_empty() {
            break;
        }
    }
}

/// Appends a commit to its group's offsets file; the file then needs an fsync.
fn write_commit(
    group: Arc<GroupOffsets>,
    offsets: &[(TopicPartition, Offset)],
    stats: &WriterStats,
    to_sync: &mut Vec<SyncTarget>,
) -> Result<(), LogError> {
    let result = group.append(offsets);
    if result.is_ok() {
        stats
            .committed_offsets
            .fetch_add(offsets.len() as u64, Ordering::Relaxed);
        to_sync.push(SyncTarget::Offsets(group));
    }
    result
}

/// Keeps one entry per file.
fn dedup_targets(targets: &mut Vec<SyncTarget>) {
    let mut seen = std::collections::HashSet::new();
    targets.retain(|t| seen.insert(t.key()));
}

fn note_unsynced(s: &SyncQueue, stats: &WriterStats) {
    stats
        .unsynced_derived_files
        .store(s.derived.len() as u64, Ordering::Relaxed);
}

/// Writes offset commits (under [`FsyncPolicy::Always`], once the derived records written
/// before them are on disk: `synced`) and syncs the offset files; nothing is written
/// when that sync failed.
fn write_commits(
    pool: &SyncPool,
    commits: Vec<PendingCommit>,
    synced: io::Result<()>,
    stats: &WriterStats,
) -> Vec<Ack> {
    let mut acks = Vec::with_capacity(commits.len());
    let mut files = Vec::new();
    for PendingCommit {
        group,
        offsets,
        reply,
    } in commits
    {
        let result = match &synced {
            Err(e) => Err(LogError::Io(io::Error::new(
                e.kind(),
                format!("fsync failed: {e}"),
            ))),
            Ok(()) => write_commit(group, &offsets, stats, &mut files),
        };
        acks.push(Ack::Unit(reply, result));
    }
    if let Err(e) = pool.sync_all(files, false, stats) {
        tracing::error!(error = %e, "fsync of committed offsets failed; the commits are reported as failed");
        for a in &mut acks {
            a.fail(&e);
        }
    }
    acks
}
