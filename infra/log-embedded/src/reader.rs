//! Readers of one partition outside any group.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imbus_log::{ConsumedRecord, LogError, Offset, PartitionReader, StartAt};
use tokio::sync::Notify;

use crate::Inner;
use crate::partition::{PartitionLog, ReadResult};

/// Reads one partition in order; woken by the writer when records are appended.
#[derive(Debug)]
pub(crate) struct EmbeddedReader {
    inner: Arc<Inner>,
    part: Arc<PartitionLog>,
    position: Offset,
    notify: Arc<Notify>,
}

fn join_error(e: tokio::task::JoinError) -> LogError {
    LogError::Io(std::io::Error::other(format!("log read task failed: {e}")))
}

/// Reads from memory, or from the files on a blocking thread.
pub(crate) async fn read_partition(
    part: &Arc<PartitionLog>,
    from: Offset,
    max: usize,
) -> Result<ReadResult, LogError> {
    if let Some(r) = part.read_cached(from, max) {
        return Ok(r);
    }
    let part = Arc::clone(part);
    tokio::task::spawn_blocking(move || part.read(from, max))
        .await
        .map_err(join_error)?
}

/// Resolves a start position, on a blocking thread when it needs the files.
pub(crate) async fn resolve(part: &Arc<PartitionLog>, start: StartAt) -> Result<Offset, LogError> {
    match start {
        StartAt::Timestamp(_) => {
            let part = Arc::clone(part);
            tokio::task::spawn_blocking(move || part.resolve(start))
                .await
                .map_err(join_error)?
        }
        _ => part.resolve(start),
    }
}

impl EmbeddedReader {
    pub(crate) async fn new(
        inner: Arc<Inner>,
        part: Arc<PartitionLog>,
        start: StartAt,
    ) -> Result<Self, LogError> {
        let position = resolve(&part, start).await?;
        let notify = Arc::new(Notify::new());
        part.subscribe(&notify);
        Ok(Self {
            inner,
            part,
            position,
            notify,
        })
    }
}

impl Drop for EmbeddedReader {
    fn drop(&mut self) {
        self.part.unsubscribe(&self.notify);
    }
}

#[async_trait]
impl PartitionReader for EmbeddedReader {
    async fn read(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<ConsumedRecord>, LogError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.inner.is_closed() {
                return Err(LogError::Closed);
            }
            let r = read_partition(&self.part, self.position, max).await?;
            self.position = r.next;
            if !r.records.is_empty() {
                return Ok(r.records);
            }
            if tokio::time::timeout_at(deadline, self.notify.notified())
                .await
                .is_err()
            {
                return Ok(Vec::new());
            }
        }
    }

    fn position(&self) -> Offset {
        self.position
    }

    async fn seek(&mut self, start: StartAt) -> Result<(), LogError> {
        self.position = resolve(&self.part, start).await?;
        Ok(())
    }
}
