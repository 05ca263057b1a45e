//! One partition: its segments, watermarks, the in-memory tail cache and the wake-up list.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imbus_log::{ConsumedRecord, LogError, Offset, Partition, StartAt, TimestampMs, Watermarks};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::compaction::CleanState;
use crate::fsutil::{fsync_dir, io_at};
use crate::record::StoredRecord;
use crate::segment::{Found, Segment, index_file_name, segment_file_name};

/// Bytes of recently appended records kept in memory per partition, so consumers that
/// keep up are served without touching the files.
pub(crate) const CACHE_BYTES: usize = 1024 * 1024;
/// About how many bytes one read from the files returns at most.
const MAX_READ_BYTES: usize = 1024 * 1024;
/// How often a read starts over when compaction or retention removed a segment under it.
const MAX_RETRIES: usize = 50;
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);
/// Fixed per-record overhead counted against the cache budget.
const CACHE_RECORD_OVERHEAD: usize = 96;

fn cached_size(r: &StoredRecord) -> usize {
    CACHE_RECORD_OVERHEAD
        + r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.len() + 32)
            .sum::<usize>()
}

#[derive(Debug)]
pub(crate) struct PartState {
    /// Ordered by base offset; the last one is the active segment (never empty).
    pub segments: Vec<Arc<Segment>>,
    /// The offset the next record gets.
    pub high: Offset,
    /// The first retained offset.
    pub low: Offset,
    /// The most recent appended records, dense in offsets, ending at `high - 1`.
    cache: VecDeque<StoredRecord>,
    cache_bytes: usize,
}

/// A partition of a topic.
#[derive(Debug)]
pub(crate) struct PartitionLog {
    pub topic: Arc<str>,
    pub partition: Partition,
    pub dir: PathBuf,
    state: RwLock<PartState>,
    subscribers: Mutex<Vec<Arc<Notify>>>,
    /// Compaction progress.
    pub clean: Mutex<CleanState>,
}

/// What a read returned and where the next read starts.
#[derive(Debug)]
pub(crate) struct ReadResult {
    pub records: Vec<ConsumedRecord>,
    pub next: Offset,
}

fn parse_segment_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Finishes an interrupted compaction swap (`<base>-<end>.swap`): the swap file holds the
/// compacted records of the offsets `[base, end)`, so the old segments of that range are
/// deleted and the swap file takes the name of the first one.
fn finish_swaps(dir: &Path) -> Result<(), LogError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_at(dir, "cannot list", e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_at(dir, "cannot list", e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    for name in &names {
        if name.ends_with(".cleaned") || name.ends_with(".tmp") {
            let path = dir.join(name);
            std::fs::remove_file(&path).map_err(|e| io_at(&path, "cannot remove", e))?;
            continue;
        }
        let Some(stem) = name.strip_suffix(".swap") else {
            continue;
        };
        let Some((base, end)) = stem
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<Offset>().ok()?, b.parse::<Offset>().ok()?)))
        else {
            continue;
        };
        tracing::info!(dir = %dir.display(), base, end, "completing an interrupted compaction");
        for other in &names {
            if let Some(b) = parse_segment_name(other)
                && (base..end).contains(&b)
            {
                let path = dir.join(other);
                std::fs::remove_file(&path).map_err(|e| io_at(&path, "cannot remove", e))?;
                let _ = std::fs::remove_file(dir.join(index_file_name(b)));
            }
        }
        let from = dir.join(name);
        let to = dir.join(segment_file_name(base));
        std::fs::rename(&from, &to).map_err(|e| io_at(&from, "cannot rename", e))?;
        fsync_dir(dir).map_err(|e| io_at(dir, "cannot sync", e))?;
    }
    Ok(())
}

impl PartitionLog {
    /// Opens (or creates) the partition directory and recovers its segments.
    pub(crate) fn open(
        topic: Arc<str>,
        partition: Partition,
        dir: PathBuf,
    ) -> Result<Self, LogError> {
        std::fs::create_dir_all(&dir).map_err(|e| io_at(&dir, "cannot create", e))?;
        finish_swaps(&dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io_at(&dir, "cannot list", e))? {
            let entry = entry.map_err(|e| io_at(&dir, "cannot list", e))?;
            if let Some(base) = parse_segment_name(&entry.file_name().to_string_lossy()) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        match bases.split_last() {
            None => {
                segments.push(Arc::new(Segment::create(&dir, 0)?));
                fsync_dir(&dir).map_err(|e| io_at(&dir, "cannot sync", e))?;
            }
            Some((last, closed)) => {
                for base in closed {
                    segments.push(Arc::new(Segment::open_closed(&dir, *base)?));
                }
                segments.push(Arc::new(Segment::open_active(&dir, *last)?));
            }
        }
        let mut high = 0;
        for seg in &segments {
            high = high.max(seg.base);
            if let Some(last) = seg.last_offset() {
                high = high.max(last + 1);
            }
        }
        let low = segments.first().map_or(0, |s| s.base);
        Ok(Self {
            topic,
            partition,
            dir,
            state: RwLock::new(PartState {
                segments,
                high,
                low,
                cache: VecDeque::new(),
                cache_bytes: 0,
            }),
            subscribers: Mutex::new(Vec::new()),
            clean: Mutex::new(CleanState::default()),
        })
    }

    pub(crate) fn watermarks(&self) -> Watermarks {
        let st = self.state.read();
        Watermarks {
            low: st.low,
            high: st.high,
        }
    }

    pub(crate) fn high(&self) -> Offset {
        self.state.read().high
    }

    /// The active segment (the writer appends to it).
    pub(crate) fn active(&self) -> Arc<Segment> {
        let st = self.state.read();
        // The segment list is never empty: open creates one and compaction never
        // removes the active segment.
        Arc::clone(&st.segments[st.segments.len() - 1])
    }

    /// All segments, oldest first.
    pub(crate) fn segments(&self) -> Vec<Arc<Segment>> {
        self.state.read().segments.clone()
    }

    /// Closes the active segment and starts a new one at `base` (writer only).
    pub(crate) fn roll(&self, base: Offset) -> Result<Arc<Segment>, LogError> {
        let seg = Arc::new(Segment::create(&self.dir, base)?);
        self.active().mark_closed();
        self.state.write().segments.push(Arc::clone(&seg));
        // The new file's name must survive a power loss before anything in it is
        // acknowledged; if this fails the batch fails, and the segment is used next time.
        fsync_dir(&self.dir).map_err(|e| io_at(&self.dir, "cannot sync", e))?;
        tracing::debug!(topic = %self.topic, partition = self.partition, base, "rolled segment");
        Ok(seg)
    }

    /// Makes appended records visible: advances the high watermark, caches the records and
    /// wakes readers and consumers (writer only).
    pub(crate) fn publish(&self, records: Vec<StoredRecord>, high: Offset) {
        {
            let mut st = self.state.write();
            for r in records {
                st.cache_bytes += cached_size(&r);
                st.cache.push_back(r);
            }
            while st.cache_bytes > CACHE_BYTES && st.cache.len() > 1 {
                if let Some(r) = st.cache.pop_front() {
                    st.cache_bytes -= cached_size(&r);
                }
            }
            st.high = high;
        }
        self.wake();
    }

    /// Wakes every registered reader and consumer.
    pub(crate) fn wake(&self) {
        for n in self.subscribers.lock().iter() {
            n.notify_one();
        }
    }

    pub(crate) fn subscribe(&self, n: &Arc<Notify>) {
        let mut subs = self.subscribers.lock();
        if !subs.iter().any(|s| Arc::ptr_eq(s, n)) {
            subs.push(Arc::clone(n));
        }
    }

    pub(crate) fn unsubscribe(&self, n: &Arc<Notify>) {
        self.subscribers.lock().retain(|s| !Arc::ptr_eq(s, n));
    }

    /// Replaces the closed segments with bases `old` (contiguous, oldest first) by `new`
    /// (compaction) or by nothing (retention, or compaction that kept no record).
    pub(crate) fn replace_segments(&self, old: &[Offset], new: Option<Arc<Segment>>) {
        let mut st = self.state.write();
        let Some(first) = old.first() else { return };
        let Some(start) = st.segments.iter().position(|s| s.base == *first) else {
            return;
        };
        let end = start + old.len();
        // Never remove the active segment.
        if end >= st.segments.len() {
            return;
        }
        // The first offset after the replaced range.
        let range_end = st.segments[end].base;
        st.segments.splice(start..end, new);
        if start == 0 {
            st.low = st.low.max(st.segments[0].base);
        }
        // Cached copies of the replaced range are dropped so readers see the result.
        while st.cache.front().is_some_and(|r| r.offset < range_end) {
            if let Some(r) = st.cache.pop_front() {
                st.cache_bytes -= cached_size(&r);
            }
        }
    }

    /// The offset a start position resolves to.
    pub(crate) fn resolve(&self, start: StartAt) -> Result<Offset, LogError> {
        let w = self.watermarks();
        Ok(match start {
            StartAt::Earliest => w.low,
            StartAt::Latest => w.high,
            StartAt::Offset(o) => o.clamp(w.low, w.high),
            StartAt::Timestamp(ts) => self.offset_for_timestamp(ts)?.unwrap_or(w.high),
        })
    }

    /// The first offset whose record's timestamp is at or after `ts`.
    pub(crate) fn offset_for_timestamp(&self, ts: TimestampMs) -> Result<Option<Offset>, LogError> {
        'retry: for _ in 0..MAX_RETRIES {
            for seg in self.segments() {
                if seg.max_timestamp() < ts {
                    continue;
                }
                match seg.find_timestamp(ts)? {
                    Found::At(o) => return Ok(Some(o)),
                    Found::NotHere => {}
                    Found::Gone => {
                        std::thread::sleep(RETRY_PAUSE);
                        continue 'retry;
                    }
                }
            }
            return Ok(None);
        }
        Err(self.busy())
    }

    fn busy(&self) -> LogError {
        LogError::Io(std::io::Error::other(format!(
            "{}/{}: segments kept being removed while reading",
            self.topic, self.partition
        )))
    }

    fn consumed(&self, r: &StoredRecord) -> ConsumedRecord {
        ConsumedRecord {
            topic: Arc::clone(&self.topic),
            partition: self.partition,
            offset: r.offset,
            key: r.key.clone(),
            value: r.value.clone(),
            timestamp: r.timestamp,
            headers: r.headers.clone(),
        }
    }

    /// Answers a read from memory when possible (nothing new yet, or the records are in
    /// the tail cache); `None` means the files must be read ([`PartitionLog::read`]).
    pub(crate) fn read_cached(&self, from: Offset, max: usize) -> Option<ReadResult> {
        let st = self.state.read();
        self.read_memory(&st, from, max.max(1))
    }

    fn read_memory(&self, st: &PartState, from: Offset, max: usize) -> Option<ReadResult> {
        let from = from.max(st.low);
        if from >= st.high {
            return Some(ReadResult {
                records: Vec::new(),
                next: from,
            });
        }
        let front = st.cache.front()?;
        if from < front.offset {
            return None;
        }
        let skip = usize::try_from(from - front.offset).unwrap_or(usize::MAX);
        let records: Vec<ConsumedRecord> = st
            .cache
            .iter()
            .skip(skip)
            .take(max)
            .map(|r| self.consumed(r))
            .collect();
        let next = records.last().map_or(from, |r| r.offset + 1);
        Some(ReadResult { records, next })
    }

    /// Up to `max` records from `from` on (positions in a removed range move to the next
    /// retained record). Never waits; may read the segment files.
    pub(crate) fn read(&self, from: Offset, max: usize) -> Result<ReadResult, LogError> {
        let max = max.max(1);
        for _ in 0..MAX_RETRIES {
            if let Some(r) = self.read_files(from, max)? {
                return Ok(r);
            }
            // Runs on a blocking thread: give the compaction a moment to finish its swap.
            std::thread::sleep(RETRY_PAUSE);
        }
        Err(self.busy())
    }

    /// `None` if a segment was removed while it was being read.
    fn read_files(&self, from: Offset, max: usize) -> Result<Option<ReadResult>, LogError> {
        let (segments, from, high) = {
            let st = self.state.read();
            if let Some(r) = self.read_memory(&st, from, max) {
                return Ok(Some(r));
            }
            let from = from.max(st.low);
            let i = st
                .segments
                .partition_point(|s| s.base <= from)
                .saturating_sub(1);
            (st.segments[i..].to_vec(), from, st.high)
        };
        let mut stored = Vec::new();
        for seg in &segments {
            let want = max - stored.len();
            if !seg.read(from, want, MAX_READ_BYTES, &mut stored)? {
                return Ok(None);
            }
            if stored.len() >= max || !stored.is_empty() {
                break;
            }
        }
        stored.retain(|r| r.offset < high);
        let next = stored.last().map_or(high, |r| r.offset + 1);
        Ok(Some(ReadResult {
            records: stored.iter().map(|r| self.consumed(r)).collect(),
            next,
        }))
    }

    /// Bytes of all segment and index files of this partition.
    pub(crate) fn disk_usage(&self) -> Result<u64, LogError> {
        let mut total = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io_at(&self.dir, "cannot list", e))? {
            let entry = entry.map_err(|e| io_at(&self.dir, "cannot list", e))?;
            total += entry
                .metadata()
                .map_err(|e| io_at(&entry.path(), "cannot stat", e))?
                .len();
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.index"), None);
    }

    #[test]
    fn interrupted_swap_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for base in [0, 10, 20, 30] {
            std::fs::write(d.join(segment_file_name(base)), b"old").unwrap();
        }
        std::fs::write(
            d.join("00000000000000000000-00000000000000000020.swap"),
            b"new",
        )
        .unwrap();
        std::fs::write(d.join("00000000000000000020.cleaned"), b"partial").unwrap();
        finish_swaps(d).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                segment_file_name(0),
                segment_file_name(20),
                segment_file_name(30)
            ]
        );
        assert_eq!(std::fs::read(d.join(segment_file_name(0))).unwrap(), b"new");
    }
}
