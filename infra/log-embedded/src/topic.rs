//! Topics: their metadata file and partitions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use imbus_log::{Cleanup, LogError, TopicConfig};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::fsutil::{fsync_dir, io_at, write_atomic};
use crate::partition::PartitionLog;

/// The metadata file in a topic's directory.
pub(crate) const META_FILE: &str = "topic.json";

#[derive(Debug, Serialize, Deserialize)]
struct TopicMeta {
    partitions: i32,
    cleanup: String,
    retention_ms: Option<u64>,
}

impl TopicMeta {
    fn from_config(c: &TopicConfig) -> Self {
        Self {
            partitions: c.partitions,
            cleanup: match c.cleanup {
                Cleanup::Delete => "delete".into(),
                Cleanup::Compact => "compact".into(),
            },
            retention_ms: c
                .retention
                .map(|r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    fn into_config(self, name: &str, path: &Path) -> Result<TopicConfig, LogError> {
        let cleanup = match self.cleanup.as_str() {
            "delete" => Cleanup::Delete,
            "compact" => Cleanup::Compact,
            other => {
                return Err(LogError::Corrupt {
                    path: path.display().to_string(),
                    detail: format!("unknown cleanup policy {other:?}"),
                });
            }
        };
        let config = TopicConfig {
            name: name.to_owned(),
            partitions: self.partitions,
            cleanup,
            retention: self.retention_ms.map(Duration::from_millis),
        };
        config.validate().map_err(|e| LogError::Corrupt {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Ok(config)
    }
}

/// A topic and its partitions.
#[derive(Debug)]
pub(crate) struct Topic {
    pub name: Arc<str>,
    pub dir: PathBuf,
    config: RwLock<TopicConfig>,
    pub partitions: Vec<Arc<PartitionLog>>,
}

impl Topic {
    /// Creates the directories and metadata of a new topic.
    pub(crate) fn create(root: &Path, config: &TopicConfig) -> Result<Self, LogError> {
        let dir = root.join(&config.name);
        std::fs::create_dir_all(&dir).map_err(|e| io_at(&dir, "cannot create", e))?;
        let meta_path = dir.join(META_FILE);
        let meta = serde_json::to_vec_pretty(&TopicMeta::from_config(config))
            .map_err(|e| LogError::InvalidArgument(e.to_string()))?;
        let name: Arc<str> = Arc::from(config.name.as_str());
        let partitions = (0..config.partitions)
            .map(|p| {
                PartitionLog::open(Arc::clone(&name), p, dir.join(p.to_string())).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The metadata is written last: a topic directory without it is an unfinished
        // creation and is ignored (and completed by the next create) on open.
        write_atomic(&meta_path, &meta).map_err(|e| io_at(&meta_path, "cannot write", e))?;
        fsync_dir(root).map_err(|e| io_at(root, "cannot sync", e))?;
        Ok(Self {
            name,
            dir,
            config: RwLock::new(config.clone()),
            partitions,
        })
    }

    /// Opens an existing topic directory; `None` if it has no metadata file.
    pub(crate) fn open(root: &Path, name: &str) -> Result<Option<Self>, LogError> {
        let dir = root.join(name);
        let meta_path = dir.join(META_FILE);
        let data = match std::fs::read(&meta_path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&meta_path, "cannot read", e)),
        };
        let meta: TopicMeta = serde_json::from_slice(&data).map_err(|e| LogError::Corrupt {
            path: meta_path.display().to_string(),
            detail: e.to_string(),
        })?;
        let config = meta.into_config(name, &meta_path)?;
        let name: Arc<str> = Arc::from(name);
        let partitions = (0..config.partitions)
            .map(|p| {
                PartitionLog::open(Arc::clone(&name), p, dir.join(p.to_string())).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self {
            name,
            dir,
            config: RwLock::new(config),
            partitions,
        }))
    }

    pub(crate) fn config(&self) -> TopicConfig {
        self.config.read().clone()
    }

    /// Whether this is a compacted topic (a changelog: its readers fold it to its end).
    pub(crate) fn compacted(&self) -> bool {
        self.config.read().cleanup == imbus_log::Cleanup::Compact
    }

    pub(crate) fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// Applies a changed cleanup policy or retention of an existing topic.
    pub(crate) fn update(&self, config: &TopicConfig) -> Result<(), LogError> {
        let mut current = self.config.write();
        if current.cleanup == config.cleanup && current.retention == config.retention {
            return Ok(());
        }
        let meta_path = self.dir.join(META_FILE);
        let meta = serde_json::to_vec_pretty(&TopicMeta::from_config(config))
            .map_err(|e| LogError::InvalidArgument(e.to_string()))?;
        write_atomic(&meta_path, &meta).map_err(|e| io_at(&meta_path, "cannot write", e))?;
        tracing::info!(topic = %self.name, cleanup = ?config.cleanup, retention = ?config.retention, "topic configuration changed");
        *current = config.clone();
        Ok(())
    }
}
