//! Partition readers: a librdkafka consumer outside any group, assigned one partition.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imbus_log::{ConsumedRecord, LogError, Offset, Partition, PartitionReader, StartAt};

use crate::KafkaOptions;
use crate::lookup::resolve_start;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::consumer::{POLL_STEP, blocking, poll_error, to_record};
use crate::context::LogContext;
use crate::error::map_kafka_error;

type Client = BaseConsumer<LogContext>;

/// Waits up to `step` for a first record, then takes what is already there, up to `room`.
fn read_step(
    client: &Client,
    step: Duration,
    room: usize,
) -> Result<Vec<ConsumedRecord>, LogError> {
    let deadline = std::time::Instant::now() + step;
    let mut fetched = Vec::new();
    while fetched.len() < room {
        let wait = if fetched.is_empty() {
            deadline.saturating_duration_since(std::time::Instant::now())
        } else {
            Duration::ZERO
        };
        match client.poll(wait) {
            Some(Ok(message)) => fetched.push(to_record(&message)),
            Some(Err(error)) => poll_error("partition reader poll", &error)?,
            None if fetched.is_empty() && std::time::Instant::now() < deadline => {}
            None => break,
        }
    }
    Ok(fetched)
}

/// Reads one partition outside any consumer group.
pub(crate) struct KafkaReader {
    /// Always `Some` until dropped.
    client: Option<Arc<Client>>,
    topic: Arc<str>,
    partition: Partition,
    position: Offset,
    options: Arc<KafkaOptions>,
    pending: VecDeque<ConsumedRecord>,
    inflight: Option<JoinHandle<Result<Vec<ConsumedRecord>, LogError>>>,
}

impl fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaReader")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl KafkaReader {
    /// Creates a reader positioned at `start`.
    pub(crate) async fn open(
        client: Client,
        topic: &str,
        partition: Partition,
        start: StartAt,
        options: Arc<KafkaOptions>,
    ) -> Result<Self, LogError> {
        let mut reader = Self {
            client: Some(Arc::new(client)),
            topic: Arc::from(topic),
            partition,
            position: 0,
            options,
            pending: VecDeque::new(),
            inflight: None,
        };
        reader.seek(start).await?;
        Ok(reader)
    }

    fn client(&self) -> Result<Arc<Client>, LogError> {
        self.client.clone().ok_or(LogError::Closed)
    }

    async fn finish_inflight(&mut self) -> Result<(), LogError> {
        if let Some(handle) = self.inflight.as_mut() {
            let result = handle.await;
            self.inflight = None;
            let fetched =
                result.map_err(|e| LogError::Broker(format!("reader poll task failed: {e}")))??;
            let position = self.position;
            self.pending
                .extend(fetched.into_iter().filter(|r| r.offset >= position));
        }
        Ok(())
    }
}

#[async_trait]
impl PartitionReader for KafkaReader {
    async fn read(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<ConsumedRecord>, LogError> {
        let max = max.max(1);
        let deadline = Instant::now() + timeout;
        let mut polled = false;
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(max);
                let records: Vec<ConsumedRecord> = self.pending.drain(..n).collect();
                if let Some(last) = records.last() {
                    self.position = last.offset + 1;
                }
                return Ok(records);
            }
            if self.inflight.is_none() {
                let now = Instant::now();
                if polled && now >= deadline {
                    return Ok(Vec::new());
                }
                let step = deadline.saturating_duration_since(now).min(POLL_STEP);
                let client = self.client()?;
                self.inflight = Some(tokio::task::spawn_blocking(move || {
                    read_step(&client, step, max)
                }));
            }
            self.finish_inflight().await?;
            polled = true;
        }
    }

    fn position(&self) -> Offset {
        self.position
    }

    async fn seek(&mut self, start: StartAt) -> Result<(), LogError> {
        // A step started before the seek may still hand out records from the old
        // position: let it finish and throw its records away.
        self.finish_inflight().await?;
        self.pending.clear();
        let client = self.client()?;
        let topic = self.topic.clone();
        let partition = self.partition;
        let options = self.options.clone();
        self.position = blocking(move || {
            let offset = resolve_start(&*client, &options, &topic, partition, start)?;
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&topic, partition, KafkaOffset::Offset(offset))
                .map_err(|e| map_kafka_error("assign partition", &e))?;
            client
                .assign(&assignment)
                .map_err(|e| map_kafka_error(&format!("assign {topic}/{partition}"), &e))?;
            Ok(offset)
        })
        .await?;
        Ok(())
    }
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        // Destroying a librdkafka client waits for its threads; keep that off the async
        // worker threads.
        if let Some(client) = self.client.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn_blocking(move || drop(client));
        }
    }
}
