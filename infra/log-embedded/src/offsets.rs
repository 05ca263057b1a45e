//! Committed offsets of consumer groups.
//!
//! Each group has an append-only file `@groups/<hex of the group name>.offsets` of framed
//! entries `(topic, partition, offset)`, each with a CRC32C. Commits go through the writer
//! (so they are group-committed and fsynced with the records). On open the file is folded
//! to the latest offset per partition and rewritten atomically (temporary file, fsync,
//! rename); it is also rewritten when it grows past [`REWRITE_BYTES`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imbus_log::{LogError, Offset, TopicPartition};
use parking_lot::{Mutex, RwLock};

use crate::fsutil::{io_at, write_atomic};
use crate::segment::ZEROS;

/// An offsets file larger than this is rewritten with only the latest entries.
const REWRITE_BYTES: u64 = 4 * 1024 * 1024;
const SUFFIX: &str = ".offsets";
/// How far ahead of its last entry the file is zero-filled, so that a commit overwrites
/// written blocks and its `fdatasync` has no size or block map to write (see the
/// segments' zero-filling in `segment.rs`).
const ZERO_FILL_STEP: u64 = ZEROS.len() as u64;

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

fn encode_entry(out: &mut Vec<u8>, tp: &TopicPartition, offset: Offset) {
    let mut body = Vec::with_capacity(tp.topic.len() + 14);
    body.extend_from_slice(&(tp.topic.len() as u16).to_le_bytes());
    body.extend_from_slice(tp.topic.as_bytes());
    body.extend_from_slice(&tp.partition.to_le_bytes());
    body.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Parses entries; returns them and the length of the valid prefix.
fn decode_entries(data: &[u8]) -> (Vec<(TopicPartition, Offset)>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(hdr) = data.get(pos..pos + 8) {
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let Some(body) = data.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32c::crc32c(body) != crc || body.len() < 14 {
            break;
        }
        let tlen = u16::from_le_bytes([body[0], body[1]]) as usize;
        if body.len() != 2 + tlen + 12 {
            break;
        }
        let Ok(topic) = std::str::from_utf8(&body[2..2 + tlen]) else {
            break;
        };
        let mut p = [0u8; 4];
        p.copy_from_slice(&body[2 + tlen..6 + tlen]);
        let mut o = [0u8; 8];
        o.copy_from_slice(&body[6 + tlen..14 + tlen]);
        out.push((
            TopicPartition::new(topic, i32::from_le_bytes(p)),
            i64::from_le_bytes(o),
        ));
        pos += 8 + len;
    }
    (out, pos)
}

/// The committed offsets of one group.
#[derive(Debug)]
pub(crate) struct GroupOffsets {
    path: PathBuf,
    /// The file appended to. Shared so an fsync does not hold the lock.
    file: Mutex<OffsetsFile>,
    committed: RwLock<HashMap<TopicPartition, Offset>>,
}

impl GroupOffsets {
    fn open(path: PathBuf) -> Result<Self, LogError> {
        let committed = match std::fs::read(&path) {
            Ok(data) => {
                let (entries, valid) = decode_entries(&data);
                if data[valid..].iter().any(|b| *b != 0) {
                    tracing::warn!(
                        path = %path.display(),
                        discarded_bytes = data.len() - valid,
                        "ignoring a partly written offset commit at the end of the offsets file"
                    );
                }
                entries.into_iter().collect::<HashMap<_, _>>()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(io_at(&path, "cannot read", e)),
        };
        let file = Self::rewrite(&path, &committed)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
            committed: RwLock::new(committed),
        })
    }

    /// Atomically replaces the file with one entry per partition; returns it open for
    /// appending.
    fn rewrite(
        path: &Path,
        committed: &HashMap<TopicPartition, Offset>,
    ) -> Result<OffsetsFile, LogError> {
        let mut data = Vec::new();
        let mut sorted: Vec<_> = committed.iter().collect();
        sorted.sort();
        for (tp, o) in sorted {
            encode_entry(&mut data, tp, *o);
        }
        write_atomic(path, &data).map_err(|e| io_at(path, "cannot write", e))?;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_at(path, "cannot open", e))?;
        let size = data.len() as u64;
        Ok(OffsetsFile {
            file: Arc::new(file),
            size,
            zeroed: size,
        })
    }

    pub(crate) fn get(&self, tp: &TopicPartition) -> Option<Offset> {
        self.committed.read().get(tp).copied()
    }

    /// Appends commits to the file (writer thread) and applies them in memory.
    pub(crate) fn append(&self, offsets: &[(TopicPartition, Offset)]) -> Result<(), LogError> {
        let mut data = Vec::new();
        for (tp, o) in offsets {
            encode_entry(&mut data, tp, *o);
        }
        let mut f = self.file.lock();
        let end = f.size + data.len() as u64;
        if end > f.zeroed {
            // A failure only costs the speed the zeros buy.
            match f.file.write_all_at(&ZEROS, end) {
                Ok(()) => f.zeroed = end + ZERO_FILL_STEP,
                Err(e) => {
                    tracing::debug!(path = %self.path.display(), error = %e, "cannot zero-fill an offsets file");
                }
            }
        }
        f.file
            .write_all_at(&data, f.size)
            .map_err(|e| io_at(&self.path, "cannot write", e))?;
        f.size = end;
        {
            let mut c = self.committed.write();
            for (tp, o) in offsets {
                c.insert(tp.clone(), *o);
            }
        }
        if f.size > REWRITE_BYTES {
            let snapshot = self.committed.read().clone();
            *f = Self::rewrite(&self.path, &snapshot)?;
        }
        Ok(())
    }

    pub(crate) fn sync(&self) -> io::Result<()> {
        let file = Arc::clone(&self.file.lock().file);
        file.sync_data()
    }
}

/// A group's offsets file: entries up to `size`, zeros from there up to `zeroed`.
#[derive(Debug)]
struct OffsetsFile {
    file: Arc<File>,
    size: u64,
    zeroed: u64,
}

/// All groups' committed offsets.
#[derive(Debug)]
pub(crate) struct OffsetStore {
    dir: PathBuf,
    groups: RwLock<HashMap<String, Arc<GroupOffsets>>>,
}

impl OffsetStore {
    pub(crate) fn open(dir: PathBuf) -> Result<Self, LogError> {
        std::fs::create_dir_all(&dir).map_err(|e| io_at(&dir, "cannot create", e))?;
        let mut groups = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io_at(&dir, "cannot list", e))? {
            let entry = entry.map_err(|e| io_at(&dir, "cannot list", e))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file_name.strip_suffix(SUFFIX).and_then(unhex) else {
                continue;
            };
            let g = GroupOffsets::open(entry.path())?;
            groups.insert(name, Arc::new(g));
        }
        Ok(Self {
            dir,
            groups: RwLock::new(groups),
        })
    }

    /// The offsets of a group, creating its file on first use.
    pub(crate) fn group(&self, name: &str) -> Result<Arc<GroupOffsets>, LogError> {
        if let Some(g) = self.groups.read().get(name) {
            return Ok(Arc::clone(g));
        }
        let mut groups = self.groups.write();
        if let Some(g) = groups.get(name) {
            return Ok(Arc::clone(g));
        }
        let path = self.dir.join(format!("{}{SUFFIX}", hex(name)));
        let g = Arc::new(GroupOffsets::open(path)?);
        groups.insert(name.to_owned(), Arc::clone(&g));
        Ok(g)
    }

    pub(crate) fn committed(&self, group: &str, tp: &TopicPartition) -> Option<Offset> {
        self.groups.read().get(group).and_then(|g| g.get(tp))
    }

    pub(crate) fn all(&self) -> Vec<Arc<GroupOffsets>> {
        self.groups.read().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        for s in ["", "router", "a/b c✓"] {
            assert_eq!(unhex(&hex(s)).as_deref(), Some(s));
        }
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn commits_survive_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path().to_path_buf()).unwrap();
        let g = store.group("g1").unwrap();
        let tp = TopicPartition::new("t", 3);
        g.append(&[(tp.clone(), 5)]).unwrap();
        g.append(&[(tp.clone(), 9), (TopicPartition::new("u", 0), 1)])
            .unwrap();
        let path = dir.path().join(format!("{}{SUFFIX}", hex("g1")));
        drop((g, store));
        // A torn final entry is ignored.
        let mut data = std::fs::read(&path).unwrap();
        // The file is zero-filled ahead of its entries.
        let (entries, valid) = decode_entries(&data);
        assert_eq!(entries.len(), 3);
        assert!(data.len() > valid);
        assert!(data[valid..].iter().all(|b| *b == 0));
        data.truncate(valid);
        let full = data.len();
        let mut extra = Vec::new();
        encode_entry(&mut extra, &tp, 99);
        data.extend_from_slice(&extra[..extra.len() - 3]);
        std::fs::write(&path, &data).unwrap();
        let store = OffsetStore::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(store.committed("g1", &tp), Some(9));
        assert_eq!(store.committed("g1", &TopicPartition::new("u", 0)), Some(1));
        assert_eq!(store.committed("g2", &tp), None);
        // Rewritten on open: one entry per partition, less than before.
        assert!(std::fs::metadata(&path).unwrap().len() < full as u64);
    }
}
