//! Segment files: an append-only file of record frames named after the offset of its first
//! slot (`00000000000000000042.log`), with a sparse in-memory index that serves both offset
//! seeks and timestamp look-ups, persisted next to closed segments (`.index`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use imbus_log::{LogError, Offset, TimestampMs};
use parking_lot::RwLock;

use crate::fsutil::io_at;
use crate::record::{self, Frame, StoredRecord};

/// An index entry is added every this many bytes of records.
pub(crate) const INDEX_INTERVAL: u64 = 8 * 1024;
/// How far ahead of the end of the active segment the file is zero-filled.
pub(crate) const PREALLOCATE_STEP: u64 = 1024 * 1024;
/// Above this many bytes per fsync (a moving average) a segment is no longer zero-filled
/// ahead: writing every byte twice would cost more than the metadata trips it saves.
const ZERO_FILL_MAX_BYTES_PER_SYNC: u64 = 64 * 1024;
/// What zero-filling writes at once.
pub(crate) static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
/// How much a scan or a read fetches from the file at once.
const READ_CHUNK: usize = 256 * 1024;
const INDEX_MAGIC: &[u8; 8] = b"IMBX0001";

/// The file name of the segment starting at `base`.
pub(crate) fn segment_file_name(base: Offset) -> String {
    format!("{base:020}.log")
}

/// The file name of the index of the segment starting at `base`.
pub(crate) fn index_file_name(base: Offset) -> String {
    format!("{base:020}.index")
}

/// One sparse index entry: the record at `offset` starts at byte `pos`, and every record
/// before `pos` in this segment has a timestamp of at most `max_ts_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: Offset,
    pub pos: u64,
    pub max_ts_before: TimestampMs,
}

/// Where the end of a segment is, as the writer needs it to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    pub size: u64,
    pub since_index: u64,
    pub max_ts: TimestampMs,
    pub indexed: bool,
}

impl Tail {
    /// Accounts for a frame of `len` bytes about to be written at `self.size`; pushes an
    /// index entry to `entries` when one is due.
    pub(crate) fn note(
        &mut self,
        entries: &mut Vec<IndexEntry>,
        offset: Offset,
        timestamp: TimestampMs,
        len: u64,
    ) {
        if !self.indexed || self.since_index >= INDEX_INTERVAL {
            entries.push(IndexEntry {
                offset,
                pos: self.size,
                max_ts_before: self.max_ts,
            });
            self.indexed = true;
            self.since_index = 0;
        }
        self.since_index += len;
        self.size += len;
        self.max_ts = self.max_ts.max(timestamp);
    }
}

/// What is known about a segment's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegMeta {
    pub tail: Tail,
    pub index: Vec<IndexEntry>,
    pub first_offset: Option<Offset>,
    pub last_offset: Option<Offset>,
    pub records: u64,
}

impl SegMeta {
    pub(crate) fn empty() -> Self {
        Self {
            tail: Tail {
                size: 0,
                since_index: 0,
                max_ts: TimestampMs::MIN,
                indexed: false,
            },
            index: Vec::new(),
            first_offset: None,
            last_offset: None,
            records: 0,
        }
    }

    fn note(&mut self, offset: Offset, timestamp: TimestampMs, len: u64) {
        self.tail.note(&mut self.index, offset, timestamp, len);
        self.first_offset.get_or_insert(offset);
        self.last_offset = Some(offset);
        self.records += 1;
    }

    fn encode_index(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80 + self.index.len() * 24);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&self.tail.size.to_le_bytes());
        out.extend_from_slice(&self.tail.since_index.to_le_bytes());
        out.extend_from_slice(&self.tail.max_ts.to_le_bytes());
        out.extend_from_slice(&self.first_offset.unwrap_or(Offset::MIN).to_le_bytes());
        out.extend_from_slice(&self.last_offset.unwrap_or(Offset::MIN).to_le_bytes());
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&(self.index.len() as u64).to_le_bytes());
        for e in &self.index {
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.pos.to_le_bytes());
            out.extend_from_slice(&e.max_ts_before.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode_index(data: &[u8]) -> Option<Self> {
        let body_len = data.len().checked_sub(4)?;
        let (body, crc) = data.split_at(body_len);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        if body.get(..8)? != INDEX_MAGIC {
            return None;
        }
        let word =
            |i: usize| -> Option<[u8; 8]> { body.get(8 + i * 8..16 + i * 8)?.try_into().ok() };
        let size = u64::from_le_bytes(word(0)?);
        let since_index = u64::from_le_bytes(word(1)?);
        let max_ts = i64::from_le_bytes(word(2)?);
        let first = i64::from_le_bytes(word(3)?);
        let last = i64::from_le_bytes(word(4)?);
        let records = u64::from_le_bytes(word(5)?);
        let count = usize::try_from(u64::from_le_bytes(word(6)?)).ok()?;
        let entries = body.get(64..)?;
        if entries.len() != count.checked_mul(24)? {
            return None;
        }
        let index = entries
            .chunks_exact(24)
            .map(|c| {
                let f = |i: usize| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&c[i * 8..i * 8 + 8]);
                    a
                };
                IndexEntry {
                    offset: i64::from_le_bytes(f(0)),
                    pos: u64::from_le_bytes(f(1)),
                    max_ts_before: i64::from_le_bytes(f(2)),
                }
            })
            .collect::<Vec<_>>();
        Some(Self {
            tail: Tail {
                size,
                since_index,
                max_ts,
                indexed: !index.is_empty(),
            },
            index,
            first_offset: (first != Offset::MIN).then_some(first),
            last_offset: (last != Offset::MIN).then_some(last),
            records,
        })
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
enum FrameErr {
    /// The data ends inside the frame at `pos`.
    Incomplete {
        pos: u64,
    },
    /// The frame at `pos` is damaged; `frame_end` is where it would end if its length is
    /// trusted.
    Bad {
        pos: u64,
        frame_end: Option<u64>,
        detail: &'static str,
    },
    Io(io::Error),
}

/// Reads consecutive frames of a file between two positions, in chunks.
struct FrameCursor<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    buf_pos: u64,
}

impl<'a> FrameCursor<'a> {
    fn new(file: &'a File, pos: u64, end: u64) -> Self {
        Self {
            file,
            pos,
            end,
            buf: Vec::new(),
            buf_pos: pos,
        }
    }

    /// Makes at least `want` bytes from `self.pos` available (fewer at the end).
    fn fill(&mut self, want: usize) -> io::Result<()> {
        let rel = (self.pos - self.buf_pos) as usize;
        if self.buf.len() - rel >= want {
            return Ok(());
        }
        self.buf.drain(..rel);
        self.buf_pos = self.pos;
        let have_end = self.buf_pos + self.buf.len() as u64;
        let remaining = self.end.saturating_sub(have_end);
        let grow = (want - self.buf.len()).max(READ_CHUNK) as u64;
        let n = remaining.min(grow) as usize;
        if n == 0 {
            return Ok(());
        }
        let old = self.buf.len();
        self.buf.resize(old + n, 0);
        self.file.read_exact_at(&mut self.buf[old..], have_end)
    }

    /// The next frame: its position and bytes, or `None` at the end.
    fn next_frame(&mut self) -> Result<Option<(u64, &[u8])>, FrameErr> {
        if self.pos >= self.end {
            return Ok(None);
        }
        self.fill(record::FRAME_HEADER).map_err(FrameErr::Io)?;
        let mut rel = (self.pos - self.buf_pos) as usize;
        let mut verdict = record::check(&self.buf[rel..]);
        if let Frame::Incomplete { needed } = verdict {
            if self.pos + needed as u64 > self.end {
                return Err(FrameErr::Incomplete { pos: self.pos });
            }
            self.fill(needed).map_err(FrameErr::Io)?;
            rel = (self.pos - self.buf_pos) as usize;
            verdict = record::check(&self.buf[rel..]);
        }
        match verdict {
            Frame::Complete { len } => {
                let at = self.pos;
                self.pos += len as u64;
                Ok(Some((at, &self.buf[rel..rel + len])))
            }
            Frame::Incomplete { .. } => Err(FrameErr::Incomplete { pos: self.pos }),
            Frame::BadHeader => Err(FrameErr::Bad {
                pos: self.pos,
                frame_end: None,
                detail: "damaged frame header",
            }),
            Frame::BadBody(detail) => {
                let blen = u32::from_le_bytes([
                    self.buf[rel],
                    self.buf[rel + 1],
                    self.buf[rel + 2],
                    self.buf[rel + 3],
                ]);
                Err(FrameErr::Bad {
                    pos: self.pos,
                    frame_end: Some(self.pos + record::FRAME_HEADER as u64 + u64::from(blen)),
                    detail,
                })
            }
        }
    }
}

fn corrupt(path: &Path, detail: String) -> LogError {
    LogError::Corrupt {
        path: path.display().to_string(),
        detail,
    }
}

fn frame_error(path: &Path, e: FrameErr) -> LogError {
    match e {
        FrameErr::Incomplete { pos } => corrupt(path, format!("truncated record at byte {pos}")),
        FrameErr::Bad { pos, detail, .. } => corrupt(path, format!("{detail} at byte {pos}")),
        FrameErr::Io(e) => io_at(path, "cannot read", e),
    }
}

/// Whether every byte of `file` from `from` to `end` is zero (space the file system
/// allocated but whose data never reached the disk).
fn all_zero(file: &File, from: u64, end: u64) -> io::Result<bool> {
    let mut pos = from;
    let mut buf = vec![0u8; READ_CHUNK];
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// How a scan treats damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanMode {
    /// Any damage is corruption.
    Strict,
    /// The last segment after a crash: an incomplete or zero-filled tail, or a damaged
    /// last record, is cut off; damage followed by valid data is corruption.
    RepairTail,
}

/// Reads every frame of a segment file, checking CRCs and offset order, and builds its
/// metadata. In [`ScanMode::RepairTail`] a torn tail is truncated away.
pub(crate) fn scan(
    path: &Path,
    file: &File,
    base: Offset,
    mode: ScanMode,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), LogError>,
) -> Result<SegMeta, LogError> {
    let len = file
        .metadata()
        .map_err(|e| io_at(path, "cannot stat", e))?
        .len();
    let mut meta = SegMeta::empty();
    let mut cursor = FrameCursor::new(file, 0, len);
    let torn_at = loop {
        match cursor.next_frame() {
            Ok(None) => break None,
            Ok(Some((pos, frame))) => {
                let (offset, ts) = record::meta(frame);
                let floor = meta.last_offset.map_or(base, |l| l + 1);
                if offset < floor {
                    return Err(corrupt(
                        path,
                        format!(
                            "record at byte {pos} has offset {offset}, expected at least {floor}"
                        ),
                    ));
                }
                visit(pos, frame)?;
                meta.note(offset, ts, frame.len() as u64);
            }
            Err(FrameErr::Io(e)) => return Err(io_at(path, "cannot read", e)),
            Err(e) if mode == ScanMode::Strict => return Err(frame_error(path, e)),
            Err(FrameErr::Incomplete { pos }) => break Some(pos),
            Err(FrameErr::Bad {
                pos,
                frame_end,
                detail,
            }) => {
                let zero_tail =
                    all_zero(file, pos, len).map_err(|e| io_at(path, "cannot read", e))?;
                let last_frame = frame_end.is_some_and(|end| end == len);
                if zero_tail || last_frame {
                    break Some(pos);
                }
                return Err(corrupt(
                    path,
                    format!("{detail} at byte {pos}, followed by more data"),
                ));
            }
        }
    };
    if let Some(pos) = torn_at {
        if all_zero(file, pos, len).map_err(|e| io_at(path, "cannot read", e))? {
            // The zero-filled space ahead of the records (or records whose data never
            // reached the disk, so never acknowledged).
            tracing::debug!(
                path = %path.display(),
                valid_bytes = pos,
                zero_bytes = len - pos,
                "cutting off the zero-filled end of a segment"
            );
        } else {
            tracing::warn!(
                path = %path.display(),
                valid_bytes = pos,
                discarded_bytes = len - pos,
                "truncating a partly written record at the end of the log (the process or machine stopped while writing it)"
            );
        }
        file.set_len(pos)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_at(path, "cannot truncate", e))?;
    }
    Ok(meta)
}

/// The result of a timestamp look-up in one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    At(Offset),
    NotHere,
    /// The segment was removed meanwhile.
    Gone,
}

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: Offset,
    pub path: PathBuf,
    /// Open while records may still be written or synced; a closed, durable segment
    /// gives its descriptor back and is opened per read, so a partition with thousands of
    /// segments does not hold thousands of open files.
    file: RwLock<Option<Arc<File>>>,
    /// The file's inode: a segment reopened by name must still be the same file (not the
    /// output of a compaction that replaced it under the same name).
    ino: u64,
    meta: RwLock<SegMeta>,
    /// No more records will be appended.
    closed: AtomicBool,
    /// The file is zero-filled or its disk blocks are reserved up to this byte.
    preallocated: AtomicU64,
    /// The size at the last fsync, and a moving average of the bytes each fsync covered.
    synced_size: AtomicU64,
    bytes_per_sync: AtomicU64,
    /// The index file matches the durable content.
    index_saved: AtomicBool,
}

impl Segment {
    fn new(base: Offset, path: PathBuf, file: File, meta: SegMeta, closed: bool) -> Self {
        let ino = file.metadata().map_or(0, |m| m.ino());
        let size = meta.tail.size;
        Self {
            base,
            path,
            file: RwLock::new((!closed).then(|| Arc::new(file))),
            ino,
            meta: RwLock::new(meta),
            closed: AtomicBool::new(closed),
            preallocated: AtomicU64::new(0),
            synced_size: AtomicU64::new(size),
            bytes_per_sync: AtomicU64::new(0),
            index_saved: AtomicBool::new(closed),
        }
    }

    fn open_file(path: &Path, create_new: bool) -> Result<File, LogError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create_new)
            .open(path)
            .map_err(|e| io_at(path, "cannot open segment", e))
    }

    /// Creates a new, empty segment file (or takes over an empty one left by a failed
    /// roll).
    pub(crate) fn create(dir: &Path, base: Offset) -> Result<Self, LogError> {
        let path = dir.join(segment_file_name(base));
        let file = match Self::open_file(&path, true) {
            Err(LogError::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
                let f = Self::open_file(&path, false)?;
                let len = f
                    .metadata()
                    .map_err(|e| io_at(&path, "cannot stat", e))?
                    .len();
                if len != 0 {
                    return Err(corrupt(
                        &path,
                        format!("a new segment would overwrite {len} bytes of existing data"),
                    ));
                }
                f
            }
            other => other?,
        };
        Ok(Self::new(base, path, file, SegMeta::empty(), false))
    }

    /// Opens a closed segment: its metadata comes from the index file when that is intact
    /// and matches the segment, otherwise from a full checking scan (the index is then
    /// rewritten). A closed segment can have a torn tail too: the process may have died
    /// after the segment rolled and before its last records were synced (those records
    /// were never acknowledged).
    pub(crate) fn open_closed(dir: &Path, base: Offset) -> Result<Self, LogError> {
        let path = dir.join(segment_file_name(base));
        let file = Self::open_file(&path, false)?;
        let len = file
            .metadata()
            .map_err(|e| io_at(&path, "cannot stat", e))?
            .len();
        let index_path = dir.join(index_file_name(base));
        let from_index = std::fs::read(&index_path)
            .ok()
            .and_then(|data| SegMeta::decode_index(&data))
            .filter(|m| m.tail.size == len);
        let meta = match from_index {
            Some(m) => m,
            None => {
                let m = scan(&path, &file, base, ScanMode::RepairTail, |_, _| Ok(()))?;
                // The index must describe durable data only.
                file.sync_all()
                    .map_err(|e| io_at(&path, "cannot sync", e))?;
                if let Err(e) = std::fs::write(&index_path, m.encode_index()) {
                    tracing::warn!(path = %index_path.display(), error = %e, "cannot write segment index");
                }
                m
            }
        };
        Ok(Self::new(base, path, file, meta, true))
    }

    /// Opens the last (active) segment: scanned completely, a torn tail is truncated.
    pub(crate) fn open_active(dir: &Path, base: Offset) -> Result<Self, LogError> {
        let path = dir.join(segment_file_name(base));
        let file = Self::open_file(&path, false)?;
        let meta = scan(&path, &file, base, ScanMode::RepairTail, |_, _| Ok(()))?;
        // An index of the active segment would be stale as soon as it grows.
        let _ = std::fs::remove_file(dir.join(index_file_name(base)));
        Ok(Self::new(base, path, file, meta, false))
    }

    /// Wraps a closed segment written (and fsynced, with its index) by compaction. It keeps
    /// its file open until [`Segment::release_handle`]: until the compaction renamed it,
    /// its final name still belongs to the file it replaces.
    pub(crate) fn from_parts(base: Offset, path: PathBuf, file: File, meta: SegMeta) -> Self {
        let seg = Self::new(base, path, file, meta, false);
        seg.closed.store(true, Ordering::Release);
        seg.index_saved.store(true, Ordering::Release);
        seg
    }

    /// Keeps the file of a closed segment open, so readers still holding this segment
    /// can read it after compaction or retention deleted or replaced its name.
    pub(crate) fn pin(&self) -> Result<(), LogError> {
        if self.file.read().is_some() {
            return Ok(());
        }
        if let Some(f) = self.handle()? {
            *self.file.write() = Some(f);
        }
        Ok(())
    }

    /// Closes the file of a closed, durable segment (it is reopened per read).
    pub(crate) fn release_handle(&self) {
        if self.closed.load(Ordering::Acquire) && self.index_saved.load(Ordering::Acquire) {
            *self.file.write() = None;
        }
    }

    /// Marks the segment closed (it rolled); its index is saved after its next fsync.
    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Fsyncs the data of the segment; once a closed segment is durable, its index file is
    /// written (an index must never describe data that a power loss could still lose).
    pub(crate) fn sync(&self) -> io::Result<()> {
        let Some(file) = self.file.read().clone() else {
            // Closed and already durable.
            return Ok(());
        };
        let closing =
            self.closed.load(Ordering::Acquire) && !self.index_saved.load(Ordering::Acquire);
        if closing {
            // The zeros filled in ahead of the records go before the final fsync.
            let size = self.size();
            if self.preallocated.swap(size, Ordering::AcqRel) > size {
                file.set_len(size)?;
            }
        }
        file.sync_data()?;
        let size = self.size();
        let covered = size.saturating_sub(self.synced_size.swap(size, Ordering::AcqRel));
        let average = self.bytes_per_sync.load(Ordering::Relaxed);
        self.bytes_per_sync
            .store((average * 3 + covered) / 4, Ordering::Relaxed);
        if closing && !self.index_saved.swap(true, Ordering::AcqRel) {
            let written = self
                .path
                .parent()
                .map_or(Ok(()), |dir| self.write_index(dir));
            match written {
                Ok(()) => *self.file.write() = None,
                Err(e) => {
                    tracing::warn!(segment = %self.path.display(), error = %e, "cannot write segment index");
                    self.index_saved.store(false, Ordering::Release);
                }
            }
        }
        Ok(())
    }

    /// The open file, reopened by name for a closed segment; `None` if the segment was
    /// removed or replaced meanwhile (by retention or compaction).
    fn handle(&self) -> Result<Option<Arc<File>>, LogError> {
        if let Some(f) = self.file.read().as_ref() {
            return Ok(Some(Arc::clone(f)));
        }
        match File::open(&self.path) {
            Ok(f) => {
                let ino = f
                    .metadata()
                    .map_err(|e| io_at(&self.path, "cannot stat", e))?
                    .ino();
                Ok((ino == self.ino).then(|| Arc::new(f)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&self.path, "cannot open segment", e)),
        }
    }

    /// Zero-fills the file ahead of the end of the segment (in steps of
    /// [`PREALLOCATE_STEP`], but not past `limit` unless `end` is), so that `end` bytes
    /// fit without growing the file. Without `zero_fill` (no fsyncs to speed up), and
    /// when this segment's fsyncs cover more than [`ZERO_FILL_MAX_BYTES_PER_SYNC`] each,
    /// disk blocks are only reserved (`fallocate` without changing the size).
    ///
    /// Appends then overwrite blocks that are allocated and written: the file's size and
    /// block map do not change, so an `fdatasync` writes the data and flushes the device,
    /// with no inode or journal write besides (the technique of write-ahead logs that
    /// zero-fill their segments). The zeros after the last record are not data: a scan
    /// stops there, recovery cuts them off, and a closed segment is cut back to its
    /// records before its final fsync. A failure only costs that speed. Only the writer
    /// calls this, before it writes the records that end at `end`.
    pub(crate) fn preallocate(&self, end: u64, limit: u64, zero_fill: bool) {
        let done = self.preallocated.load(Ordering::Acquire);
        if end <= done {
            return;
        }
        let target = (end + PREALLOCATE_STEP).min(limit.max(end));
        self.preallocated.store(target, Ordering::Release);
        if target <= end {
            return;
        }
        let Some(f) = self.file.read().clone() else {
            return;
        };
        if !zero_fill || self.bytes_per_sync.load(Ordering::Relaxed) > ZERO_FILL_MAX_BYTES_PER_SYNC
        {
            // Large writes per fsync: the metadata trips are a small share, the zeros would
            // double the bytes written. Blocks are only reserved (the file does not grow).
            if let Err(e) = rustix::fs::fallocate(
                &*f,
                rustix::fs::FallocateFlags::KEEP_SIZE,
                done.max(end),
                target - done.max(end),
            ) {
                tracing::debug!(segment = %self.path.display(), error = %e, "cannot preallocate segment");
            }
            return;
        }
        // Zeros from where the records will end: below that the records are written.
        let mut at = end;
        while at < target {
            let n = ((target - at) as usize).min(ZEROS.len());
            if let Err(e) = f.write_all_at(&ZEROS[..n], at) {
                tracing::debug!(segment = %self.path.display(), error = %e, "cannot zero-fill segment");
                self.preallocated.store(at, Ordering::Release);
                return;
            }
            at += n as u64;
        }
    }

    /// Cuts off the zeros filled in ahead of the records, durably.
    pub(crate) fn trim(&self) -> io::Result<()> {
        let size = self.size();
        if self.preallocated.swap(size, Ordering::AcqRel) <= size {
            return Ok(());
        }
        match self.file.read().as_ref() {
            Some(f) => f.set_len(size).and_then(|()| f.sync_data()),
            None => Ok(()),
        }
    }

    /// Cuts the file back to `len` bytes (after a failed write).
    pub(crate) fn truncate(&self, len: u64) -> io::Result<()> {
        match self.file.read().as_ref() {
            Some(f) => {
                f.set_len(len)?;
                self.preallocated.store(len, Ordering::Release);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub(crate) fn tail(&self) -> Tail {
        self.meta.read().tail
    }

    pub(crate) fn size(&self) -> u64 {
        self.meta.read().tail.size
    }

    pub(crate) fn last_offset(&self) -> Option<Offset> {
        self.meta.read().last_offset
    }

    pub(crate) fn max_timestamp(&self) -> TimestampMs {
        self.meta.read().tail.max_ts
    }

    pub(crate) fn meta(&self) -> SegMeta {
        self.meta.read().clone()
    }

    /// Writes already framed records at the current end of the file. Only the writer
    /// calls this; readers see the data after [`Segment::publish`].
    pub(crate) fn write_at(&self, data: &[u8], at: u64) -> io::Result<()> {
        match self.file.read().as_ref() {
            Some(f) => f.write_all_at(data, at),
            None => Err(io::Error::other(format!(
                "segment {} is closed",
                self.path.display()
            ))),
        }
    }

    /// Makes records written by [`Segment::write_at`] visible to readers.
    pub(crate) fn publish(
        &self,
        tail: Tail,
        entries: &[IndexEntry],
        first: Offset,
        last: Offset,
        records: u64,
    ) {
        let mut m = self.meta.write();
        m.tail = tail;
        m.index.extend_from_slice(entries);
        m.first_offset.get_or_insert(first);
        m.last_offset = Some(last);
        m.records += records;
    }

    /// Writes the index file of this (now closed) segment. The index is a cache: a
    /// missing or stale index is rebuilt by scanning the segment.
    fn write_index(&self, dir: &Path) -> io::Result<()> {
        let data = self.meta.read().encode_index();
        std::fs::write(dir.join(index_file_name(self.base)), data)
    }

    /// The byte position to start reading at to find `offset`.
    fn seek_pos(&self, offset: Offset) -> (u64, u64) {
        let m = self.meta.read();
        let i = m.index.partition_point(|e| e.offset <= offset);
        let pos = if i == 0 { 0 } else { m.index[i - 1].pos };
        (pos, m.tail.size)
    }

    /// Reads records with offsets at or after `from`, up to `max` records or about
    /// `max_bytes` bytes of frames (at least one record), into `out`. Returns `false` if
    /// the segment was removed meanwhile (the caller looks at the current segments again).
    pub(crate) fn read(
        &self,
        from: Offset,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<bool, LogError> {
        let (pos, end) = self.seek_pos(from);
        let Some(file) = self.handle()? else {
            return Ok(false);
        };
        let mut cursor = FrameCursor::new(&file, pos, end);
        let mut bytes = 0usize;
        let start_len = out.len();
        while out.len() - start_len < max && (bytes < max_bytes || out.len() == start_len) {
            let Some((_, frame)) = cursor
                .next_frame()
                .map_err(|e| frame_error(&self.path, e))?
            else {
                break;
            };
            let (offset, _) = record::meta(frame);
            if offset < from {
                continue;
            }
            bytes += frame.len();
            out.push(record::decode(frame).map_err(|d| corrupt(&self.path, d.to_owned()))?);
        }
        Ok(true)
    }

    /// The first offset in this segment whose record's timestamp is at or after `ts`.
    pub(crate) fn find_timestamp(&self, ts: TimestampMs) -> Result<Found, LogError> {
        let (pos, end) = {
            let m = self.meta.read();
            if m.tail.max_ts < ts {
                return Ok(Found::NotHere);
            }
            let i = m.index.partition_point(|e| e.max_ts_before < ts);
            let pos = if i == 0 { 0 } else { m.index[i - 1].pos };
            (pos, m.tail.size)
        };
        let Some(file) = self.handle()? else {
            return Ok(Found::Gone);
        };
        let mut cursor = FrameCursor::new(&file, pos, end);
        while let Some((_, frame)) = cursor
            .next_frame()
            .map_err(|e| frame_error(&self.path, e))?
        {
            let (offset, t) = record::meta(frame);
            if t >= ts {
                return Ok(Found::At(offset));
            }
        }
        Ok(Found::NotHere)
    }

    /// Calls `visit` with every frame of the segment (compaction).
    pub(crate) fn for_each_frame(
        &self,
        mut visit: impl FnMut(&[u8]) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let end = self.size();
        let file = self.handle()?.ok_or_else(|| {
            LogError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("segment {} was removed", self.path.display()),
            ))
        })?;
        let mut cursor = FrameCursor::new(&file, 0, end);
        while let Some((_, frame)) = cursor
            .next_frame()
            .map_err(|e| frame_error(&self.path, e))?
        {
            visit(frame)?;
        }
        Ok(())
    }
}

/// Writes a new segment file (compaction output) frame by frame.
#[derive(Debug)]
pub(crate) struct SegmentBuilder {
    pub path: PathBuf,
    file: File,
    buf: Vec<u8>,
    meta: SegMeta,
}

impl SegmentBuilder {
    pub(crate) fn create(path: PathBuf) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_at(&path, "cannot create", e))?;
        Ok(Self {
            path,
            file,
            buf: Vec::with_capacity(READ_CHUNK),
            meta: SegMeta::empty(),
        })
    }

    pub(crate) fn push(&mut self, frame: &[u8]) -> Result<(), LogError> {
        let (offset, ts) = record::meta(frame);
        self.meta.note(offset, ts, frame.len() as u64);
        self.buf.extend_from_slice(frame);
        if self.buf.len() >= READ_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), LogError> {
        let at = self.meta.tail.size - self.buf.len() as u64;
        self.file
            .write_all_at(&self.buf, at)
            .map_err(|e| io_at(&self.path, "cannot write", e))?;
        self.buf.clear();
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.meta.records == 0
    }

    /// Writes what is buffered and fsyncs the file.
    pub(crate) fn finish(mut self) -> Result<(File, SegMeta), LogError> {
        self.flush()?;
        self.file
            .sync_all()
            .map_err(|e| io_at(&self.path, "cannot sync", e))?;
        Ok((self.file, self.meta))
    }
}

/// Writes the index of a segment produced by compaction.
pub(crate) fn write_index_for(dir: &Path, base: Offset, meta: &SegMeta) -> io::Result<()> {
    std::fs::write(dir.join(index_file_name(base)), meta.encode_index())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frames(from: Offset, n: usize, ts0: TimestampMs) -> Vec<u8> {
        let mut buf = Vec::new();
        for i in 0..n {
            record::encode(
                &mut buf,
                from + i as i64,
                ts0 + i as i64,
                Some(&Bytes::from(format!("k{i}"))),
                Some(&Bytes::from(vec![b'v'; 100 + i % 50])),
                &[],
            );
        }
        buf
    }

    #[test]
    fn index_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(10));
        std::fs::write(&path, frames(10, 500, 1000)).unwrap();
        let seg = Segment::open_closed(dir.path(), 10).unwrap();
        let m = seg.meta();
        assert_eq!(m.records, 500);
        assert_eq!(m.first_offset, Some(10));
        assert_eq!(m.last_offset, Some(509));
        assert!(
            m.index.len() > 3,
            "sparse index has {} entries",
            m.index.len()
        );
        let from_file =
            SegMeta::decode_index(&std::fs::read(dir.path().join(index_file_name(10))).unwrap())
                .unwrap();
        assert_eq!(from_file, m);
        // Every offset is found through the index.
        for o in [10, 11, 200, 509] {
            let mut out = Vec::new();
            seg.read(o, 3, usize::MAX, &mut out).unwrap();
            assert_eq!(out[0].offset, o);
        }
        assert_eq!(seg.find_timestamp(1000).unwrap(), Found::At(10));
        assert_eq!(seg.find_timestamp(1300).unwrap(), Found::At(310));
        assert_eq!(seg.find_timestamp(5000).unwrap(), Found::NotHere);
    }

    #[test]
    fn stale_index_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(0));
        std::fs::write(&path, frames(0, 10, 0)).unwrap();
        Segment::open_closed(dir.path(), 0).unwrap();
        std::fs::write(&path, frames(0, 20, 0)).unwrap();
        let seg = Segment::open_closed(dir.path(), 0).unwrap();
        assert_eq!(seg.last_offset(), Some(19));
    }

    #[test]
    fn torn_tail_at_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let full = frames(0, 5, 0);
        let last_start = {
            let f4 = frames(0, 4, 0);
            f4.len()
        };
        for cut in last_start..full.len() {
            let path = dir.path().join(segment_file_name(0));
            std::fs::write(&path, &full[..cut]).unwrap();
            let seg = Segment::open_active(dir.path(), 0).unwrap();
            assert_eq!(seg.last_offset(), Some(3), "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64);
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn closed_segment_without_index_is_repaired_and_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let full = frames(0, 5, 0);
        let path = dir.path().join(segment_file_name(0));
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let seg = Segment::open_closed(dir.path(), 0).unwrap();
        assert_eq!(seg.last_offset(), Some(3));
        let index = std::fs::read(dir.path().join(index_file_name(0))).unwrap();
        assert_eq!(SegMeta::decode_index(&index).unwrap(), seg.meta());
    }

    #[test]
    fn index_is_saved_once_a_closed_segment_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 0).unwrap();
        let data = frames(0, 3, 0);
        seg.write_at(&data, 0).unwrap();
        let mut tail = seg.tail();
        let mut entries = Vec::new();
        let mut pos = 0;
        for o in 0..3 {
            let Frame::Complete { len } = record::check(&data[pos..]) else {
                panic!()
            };
            tail.note(&mut entries, o, o, len as u64);
            pos += len;
        }
        seg.publish(tail, &entries, 0, 2, 3);
        let index_path = dir.path().join(index_file_name(0));
        seg.sync().unwrap();
        assert!(!index_path.exists(), "the active segment has no index file");
        seg.mark_closed();
        seg.sync().unwrap();
        let saved = SegMeta::decode_index(&std::fs::read(&index_path).unwrap()).unwrap();
        assert_eq!(saved, seg.meta());
    }

    #[test]
    fn zero_filled_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = frames(0, 3, 0);
        let valid = data.len();
        data.extend_from_slice(&[0u8; 4096]);
        std::fs::write(dir.path().join(segment_file_name(0)), &data).unwrap();
        let seg = Segment::open_active(dir.path(), 0).unwrap();
        assert_eq!(seg.size(), valid as u64);
        assert_eq!(seg.last_offset(), Some(2));
    }

    #[test]
    fn damage_in_the_middle_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = frames(0, 10, 0);
        data[300] ^= 0x40;
        std::fs::write(dir.path().join(segment_file_name(0)), &data).unwrap();
        for open in [Segment::open_active, Segment::open_closed] {
            let err = open(dir.path(), 0).unwrap_err();
            let LogError::Corrupt { path, .. } = err else {
                panic!("expected corruption, got {err}");
            };
            assert!(path.ends_with(&segment_file_name(0)));
        }
    }

    #[test]
    fn builder_output_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = frames(0, 100, 0);
        let mut b = SegmentBuilder::create(dir.path().join("x.cleaned")).unwrap();
        let mut pos = 0;
        while pos < data.len() {
            let Frame::Complete { len } = record::check(&data[pos..]) else {
                panic!()
            };
            if (pos / 7) % 2 == 0 {
                b.push(&data[pos..pos + len]).unwrap();
            }
            pos += len;
        }
        let path = b.path.clone();
        let (file, meta) = b.finish().unwrap();
        let seg = Segment::from_parts(0, path, file, meta.clone());
        let mut out = Vec::new();
        seg.read(0, 1000, usize::MAX, &mut out).unwrap();
        assert_eq!(out.len() as u64, meta.records);
        assert!(out.windows(2).all(|w| w[0].offset < w[1].offset));
    }
}
