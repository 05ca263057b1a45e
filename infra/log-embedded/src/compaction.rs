//! Compaction of compacted topics and retention of delete topics.
//!
//! *Retention* deletes whole closed segments, oldest first, while the newest record of the
//! segment is older than the topic's retention.
//!
//! *Compaction* rewrites the closed segments of a partition keeping, for every key, only
//! the record with the highest offset (looking at the active segment too, which itself is
//! never rewritten). Tombstones are kept for `delete_retention` after their segment was
//! last written (the file's modification time, preserved across rewrites) so consumers
//! have time to see them, then dropped. Offsets are never renumbered: gaps appear, and
//! readers skip them. Adjacent small segments are merged up to the segment size.
//!
//! A rewrite is crash-safe: the new segment is written to `<base>.cleaned` and fsynced,
//! renamed to `<base>-<end>.swap` (the offset range it replaces) and the directory fsynced;
//! then the replaced segments are deleted and the swap file renamed to `<base>.log`. On
//! open, a leftover `.cleaned` file is deleted and a leftover `.swap` file completes the
//! swap.

use std::collections::HashMap;
use std::fs::FileTimes;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use imbus_log::{Cleanup, LogError, Offset};

use crate::fsutil::{fsync_dir, io_at};
use crate::partition::PartitionLog;
use crate::record;
use crate::segment::{
    Segment, SegmentBuilder, index_file_name, segment_file_name, write_index_for,
};

/// What a compaction and retention run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Partitions whose closed segments were examined by compaction.
    pub partitions_compacted: u64,
    /// New segment files written by compaction.
    pub segments_rewritten: u64,
    /// Segment files removed (replaced by compaction or deleted by retention).
    pub segments_removed: u64,
    /// Records dropped by compaction (superseded values and expired tombstones).
    pub records_removed: u64,
    /// Records dropped by retention.
    pub records_expired: u64,
    /// Bytes of segment files freed.
    pub bytes_reclaimed: u64,
}

/// Per-partition progress of compaction, so clean segments are not rewritten again.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CleanState {
    /// Every closed segment below this offset has been compacted.
    pub clean_until: Offset,
    /// When a kept tombstone becomes old enough to drop.
    pub tombstone_due: Option<SystemTime>,
}

fn mtime(seg: &Segment) -> Result<SystemTime, LogError> {
    std::fs::metadata(&seg.path)
        .and_then(|m| m.modified())
        .map_err(|e| io_at(&seg.path, "cannot stat", e))
}

fn remove(path: &std::path::Path) -> Result<(), LogError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path, "cannot remove", e)),
    }
}

/// Deletes closed segments whose newest record is older than `retention`.
pub(crate) fn apply_retention(
    part: &PartitionLog,
    retention: Duration,
    now_ms: i64,
    stats: &mut CompactionStats,
) -> Result<(), LogError> {
    let cutoff = now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let segments = part.segments();
    let Some((_active, closed)) = segments.split_last() else {
        return Ok(());
    };
    let expired: Vec<&Arc<Segment>> = closed
        .iter()
        .take_while(|s| s.max_timestamp() < cutoff)
        .collect();
    if expired.is_empty() {
        return Ok(());
    }
    let bases: Vec<Offset> = expired.iter().map(|s| s.base).collect();
    for seg in &expired {
        seg.pin()?;
    }
    part.replace_segments(&bases, None);
    for seg in &expired {
        let m = seg.meta();
        stats.records_expired += m.records;
        stats.bytes_reclaimed += m.tail.size;
        stats.segments_removed += 1;
        remove(&part.dir.join(index_file_name(seg.base)))?;
        remove(&seg.path)?;
    }
    fsync_dir(&part.dir).map_err(|e| io_at(&part.dir, "cannot sync", e))?;
    tracing::info!(
        topic = %part.topic,
        partition = part.partition,
        segments = bases.len(),
        new_low = part.watermarks().low,
        "retention deleted old segments"
    );
    Ok(())
}

struct Plan {
    seg: Arc<Segment>,
    mtime: SystemTime,
    records: u64,
    kept_records: u64,
    kept_bytes: u64,
}

/// Compacts the closed segments of a partition.
pub(crate) fn compact_partition(
    part: &PartitionLog,
    delete_retention: Duration,
    segment_bytes: u64,
    stats: &mut CompactionStats,
) -> Result<(), LogError> {
    let segments = part.segments();
    let Some((active, closed)) = segments.split_last() else {
        return Ok(());
    };
    if closed.is_empty() {
        return Ok(());
    }
    let now = SystemTime::now();
    let closed_end = active.base;
    {
        let clean = part.clean.lock();
        let tombstones_due = clean.tombstone_due.is_some_and(|d| now >= d);
        if clean.clean_until >= closed_end && !tombstones_due {
            return Ok(());
        }
    }
    stats.partitions_compacted += 1;

    // Pass 1: the newest offset of every key.
    let mut latest: HashMap<Vec<u8>, Offset> = HashMap::new();
    for seg in &segments {
        seg.for_each_frame(|frame| {
            if let Some(key) = record::key_of(frame) {
                let (offset, _) = record::meta(frame);
                match latest.get_mut(key) {
                    Some(o) => *o = offset,
                    None => {
                        latest.insert(key.to_vec(), offset);
                    }
                }
            }
            Ok(())
        })?;
    }
    let keep = |frame: &[u8], seg_mtime: SystemTime| -> bool {
        let Some(key) = record::key_of(frame) else {
            return true;
        };
        let (offset, _) = record::meta(frame);
        if latest.get(key) != Some(&offset) {
            return false;
        }
        !record::is_tombstone(frame) || seg_mtime + delete_retention > now
    };

    // Pass 2: what each closed segment keeps.
    let mut plans = Vec::with_capacity(closed.len());
    let mut tombstone_due: Option<SystemTime> = None;
    for seg in closed {
        let seg_mtime = mtime(seg)?;
        let mut plan = Plan {
            seg: Arc::clone(seg),
            mtime: seg_mtime,
            records: 0,
            kept_records: 0,
            kept_bytes: 0,
        };
        seg.for_each_frame(|frame| {
            plan.records += 1;
            if keep(frame, seg_mtime) {
                plan.kept_records += 1;
                plan.kept_bytes += frame.len() as u64;
                if record::is_tombstone(frame) {
                    let due = seg_mtime + delete_retention;
                    tombstone_due = Some(tombstone_due.map_or(due, |d| d.min(due)));
                }
            }
            Ok(())
        })?;
        plans.push(plan);
    }

    // Group adjacent segments whose kept records fit in one segment.
    let mut groups: Vec<Vec<Plan>> = Vec::new();
    let mut group_bytes = 0u64;
    for plan in plans {
        match groups.last_mut() {
            Some(g) if group_bytes + plan.kept_bytes <= segment_bytes => {
                group_bytes += plan.kept_bytes;
                g.push(plan);
            }
            _ => {
                group_bytes = plan.kept_bytes;
                groups.push(vec![plan]);
            }
        }
    }

    for (i, group) in groups.iter().enumerate() {
        let unchanged = group.len() == 1 && group[0].kept_records == group[0].records;
        if unchanged {
            continue;
        }
        let end = groups.get(i + 1).map_or(closed_end, |g| g[0].seg.base);
        rewrite(part, group, end, &keep, stats)?;
    }

    let mut clean = part.clean.lock();
    clean.clean_until = closed_end;
    clean.tombstone_due = tombstone_due;
    Ok(())
}

fn rewrite(
    part: &PartitionLog,
    group: &[Plan],
    end: Offset,
    keep: &dyn Fn(&[u8], SystemTime) -> bool,
    stats: &mut CompactionStats,
) -> Result<(), LogError> {
    let dir = &part.dir;
    let base = group[0].seg.base;
    let bases: Vec<Offset> = group.iter().map(|p| p.seg.base).collect();
    let old_bytes: u64 = group.iter().map(|p| p.seg.size()).sum();
    let removed: u64 = group.iter().map(|p| p.records - p.kept_records).sum();

    let mut builder = SegmentBuilder::create(dir.join(format!("{base:020}.cleaned")))?;
    for plan in group {
        plan.seg.for_each_frame(|frame| {
            if keep(frame, plan.mtime) {
                builder.push(frame)?;
            }
            Ok(())
        })?;
    }

    if builder.is_empty() {
        let path = builder.path.clone();
        drop(builder);
        remove(&path)?;
        for plan in group {
            plan.seg.pin()?;
        }
        part.replace_segments(&bases, None);
        for plan in group {
            remove(&dir.join(index_file_name(plan.seg.base)))?;
            remove(&plan.seg.path)?;
        }
        fsync_dir(dir).map_err(|e| io_at(dir, "cannot sync", e))?;
    } else {
        let cleaned = builder.path.clone();
        let (file, meta) = builder.finish()?;
        let newest = group
            .iter()
            .map(|p| p.mtime)
            .max()
            .unwrap_or_else(SystemTime::now);
        file.set_times(FileTimes::new().set_modified(newest))
            .map_err(|e| io_at(&cleaned, "cannot set the modification time of", e))?;
        let swap = dir.join(format!("{base:020}-{end:020}.swap"));
        std::fs::rename(&cleaned, &swap).map_err(|e| io_at(&cleaned, "cannot rename", e))?;
        fsync_dir(dir).map_err(|e| io_at(dir, "cannot sync", e))?;

        let final_path = dir.join(segment_file_name(base));
        let new = Arc::new(Segment::from_parts(
            base,
            final_path.clone(),
            file,
            meta.clone(),
        ));
        let new_bytes = meta.tail.size;
        for plan in group {
            plan.seg.pin()?;
        }
        part.replace_segments(&bases, Some(Arc::clone(&new)));
        for plan in group {
            remove(&dir.join(index_file_name(plan.seg.base)))?;
            if plan.seg.base != base {
                remove(&plan.seg.path)?;
            }
        }
        std::fs::rename(&swap, &final_path).map_err(|e| io_at(&swap, "cannot rename", e))?;
        new.release_handle();
        if let Err(e) = write_index_for(dir, base, &meta) {
            tracing::warn!(dir = %dir.display(), base, error = %e, "cannot write segment index");
        }
        fsync_dir(dir).map_err(|e| io_at(dir, "cannot sync", e))?;
        stats.segments_rewritten += 1;
        stats.bytes_reclaimed += old_bytes.saturating_sub(new_bytes);
        stats.segments_removed += bases.len() as u64;
        stats.records_removed += removed;
        tracing::debug!(
            topic = %part.topic,
            partition = part.partition,
            base,
            merged = bases.len(),
            removed,
            "compacted segments"
        );
        return Ok(());
    }
    stats.bytes_reclaimed += old_bytes;
    stats.segments_removed += bases.len() as u64;
    stats.records_removed += removed;
    Ok(())
}

/// Runs retention or compaction on one partition according to its topic's policy.
pub(crate) fn clean_partition(
    part: &PartitionLog,
    cleanup: Cleanup,
    retention: Option<Duration>,
    delete_retention: Duration,
    segment_bytes: u64,
    stats: &mut CompactionStats,
) -> Result<(), LogError> {
    match (cleanup, retention) {
        (Cleanup::Delete, Some(r)) => apply_retention(part, r, crate::now_ms(), stats),
        (Cleanup::Delete, None) => Ok(()),
        (Cleanup::Compact, _) => compact_partition(part, delete_retention, segment_bytes, stats),
    }
}
