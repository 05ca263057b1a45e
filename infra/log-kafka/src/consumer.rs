//! Consumer-group members: a librdkafka consumer subscribed to the group's topics, with
//! rebalances surfaced as [`ConsumerEvent::Assigned`] / [`ConsumerEvent::Revoked`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use imbus_log::{
    ConsumedRecord, Consumer, ConsumerEvent, Header, LogError, Offset, StartAt, TopicPartition,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::KafkaOptions;
use crate::context::GroupContext;
use crate::error::map_kafka_error;
use crate::lookup::resolve_start;

/// How long one blocking poll of librdkafka lasts at most. Short, so that rebalance
/// events surface promptly and a cancelled `poll` leaves little work behind.
pub(crate) const POLL_STEP: Duration = Duration::from_millis(100);

/// Converts a fetched message.
pub(crate) fn to_record(message: &BorrowedMessage<'_>) -> ConsumedRecord {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| Header {
                    key: h.key.to_owned(),
                    value: h.value.map(Bytes::copy_from_slice).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    ConsumedRecord {
        topic: Arc::from(message.topic()),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(Bytes::copy_from_slice),
        value: message.payload().map(Bytes::copy_from_slice),
        timestamp: message.timestamp().to_millis().unwrap_or(-1),
        headers,
    }
}

/// What to do with an error librdkafka reported through poll: fatal errors end the
/// member, everything else is retried by librdkafka and only logged.
pub(crate) fn poll_error(context: &str, error: &KafkaError) -> Result<(), LogError> {
    match error {
        KafkaError::PartitionEOF(_) => Ok(()),
        KafkaError::MessageConsumptionFatal(_) => Err(map_kafka_error(context, error)),
        _ => {
            tracing::warn!(%error, "{context}");
            Ok(())
        }
    }
}

type Member = BaseConsumer<GroupContext>;
type Fetched = Vec<(u64, ConsumedRecord)>;

/// One blocking step: waits up to `step` for a first record, then takes what is already
/// there, up to `room` records. Stops early when a rebalance happened.
fn poll_step(member: &Member, step: Duration, room: usize) -> Result<Fetched, LogError> {
    let state = member.context().state.clone();
    let start_generation = state.lock().generation;
    let deadline = std::time::Instant::now() + step;
    let mut fetched = Vec::new();
    while fetched.len() < room {
        let wait = if fetched.is_empty() {
            deadline.saturating_duration_since(std::time::Instant::now())
        } else {
            Duration::ZERO
        };
        let polled = member.poll(wait);
        let generation = state.lock().generation;
        match polled {
            Some(Ok(message)) => fetched.push((generation, to_record(&message))),
            Some(Err(error)) => poll_error("consumer group poll", &error)?,
            None if generation == start_generation
                && fetched.is_empty()
                && std::time::Instant::now() < deadline => {}
            None => break,
        }
        if generation != start_generation {
            break;
        }
    }
    Ok(fetched)
}

/// A member of a consumer group on a Kafka cluster.
pub(crate) struct KafkaConsumer {
    member: Option<Arc<Member>>,
    group: String,
    max_batch: usize,
    options: Arc<KafkaOptions>,
    pending: VecDeque<(u64, ConsumedRecord)>,
    inflight: Option<JoinHandle<Result<Fetched, LogError>>>,
}

impl fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("group", &self.group)
            .field("assignment", &self.assignment())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    pub(crate) fn new(
        member: Member,
        group: String,
        max_batch: usize,
        options: Arc<KafkaOptions>,
    ) -> Self {
        Self {
            member: Some(Arc::new(member)),
            group,
            max_batch: max_batch.max(1),
            options,
            pending: VecDeque::new(),
            inflight: None,
        }
    }

    fn member(&self) -> Result<&Arc<Member>, LogError> {
        self.member.as_ref().ok_or(LogError::Closed)
    }

    /// The next rebalance event, dropping buffered records of partitions it revokes.
    fn next_event(&mut self) -> Option<ConsumerEvent> {
        let member = self.member.as_ref()?;
        let (generation, event) = member.context().state.lock().events.pop_front()?;
        if let ConsumerEvent::Revoked(revoked) = &event {
            self.pending.retain(|(fetched_in, record)| {
                *fetched_in >= generation || !revoked.contains(&record.topic_partition())
            });
        }
        Some(event)
    }

    /// Waits for a blocking poll step left over from a cancelled `poll`, keeping its
    /// records.
    async fn finish_inflight(&mut self) -> Result<(), LogError> {
        if let Some(handle) = self.inflight.as_mut() {
            let result = handle.await;
            self.inflight = None;
            let fetched = result
                .map_err(|e| LogError::Broker(format!("consumer poll task failed: {e}")))??;
            self.pending.extend(fetched);
        }
        Ok(())
    }

    fn check_assigned(&self, tp: &TopicPartition) -> Result<(), LogError> {
        let member = self.member()?;
        if member.context().state.lock().assignment.contains(tp) {
            Ok(())
        } else {
            Err(LogError::NotAssigned(tp.clone()))
        }
    }

    /// Where `start` is on a partition, as an offset librdkafka can seek to.
    async fn resolve(&self, tp: &TopicPartition, start: StartAt) -> Result<Offset, LogError> {
        let member = self.member()?.clone();
        let options = self.options.clone();
        let (topic, partition) = (tp.topic.to_string(), tp.partition);
        blocking(move || resolve_start(&*member, &options, &topic, partition, start)).await
    }
}

/// Runs a blocking librdkafka call on the blocking thread pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, LogError>
where
    F: FnOnce() -> Result<T, LogError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::Broker(format!("Kafka client task failed: {e}")))?
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, timeout: Duration) -> Result<ConsumerEvent, LogError> {
        let deadline = Instant::now() + timeout;
        let mut polled = false;
        loop {
            if let Some(event) = self.next_event() {
                return Ok(event);
            }
            if !self.pending.is_empty() {
                let n = self.pending.len().min(self.max_batch);
                let records = self.pending.drain(..n).map(|(_, r)| r).collect();
                return Ok(ConsumerEvent::Records(records));
            }
            if self.inflight.is_none() {
                let now = Instant::now();
                if polled && now >= deadline {
                    return Ok(ConsumerEvent::Records(Vec::new()));
                }
                let step = deadline.saturating_duration_since(now).min(POLL_STEP);
                let member = self.member()?.clone();
                let room = self.max_batch;
                self.inflight = Some(tokio::task::spawn_blocking(move || {
                    poll_step(&member, step, room)
                }));
            }
            self.finish_inflight().await?;
            polled = true;
        }
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, Offset)]) -> Result<(), LogError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for (tp, offset) in offsets {
            self.check_assigned(tp)?;
            if *offset < 0 {
                return Err(LogError::InvalidArgument(format!(
                    "cannot commit negative offset {offset} for {tp}"
                )));
            }
            list.add_partition_offset(&tp.topic, tp.partition, KafkaOffset::Offset(*offset))
                .map_err(|e| map_kafka_error("commit", &e))?;
        }
        let member = self.member()?.clone();
        let group = self.group.clone();
        blocking(move || {
            member
                .commit(&list, CommitMode::Sync)
                .map_err(|e| map_kafka_error(&format!("commit offsets of group {group:?}"), &e))
        })
        .await
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.member
            .as_ref()
            .map(|m| {
                m.context()
                    .state
                    .lock()
                    .assignment
                    .iter()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn seek(&mut self, tp: &TopicPartition, start: StartAt) -> Result<(), LogError> {
        self.check_assigned(tp)?;
        self.finish_inflight().await?;
        let offset = KafkaOffset::Offset(self.resolve(tp, start).await?);
        let member = self.member()?.clone();
        let timeout = self.options.request_timeout;
        let (topic, partition) = (tp.topic.to_string(), tp.partition);
        blocking(move || {
            member
                .seek(&topic, partition, offset, timeout)
                .map_err(|e| map_kafka_error(&format!("seek {topic}/{partition}"), &e))
        })
        .await?;
        self.pending.retain(|(_, r)| r.topic_partition() != *tp);
        Ok(())
    }

    async fn close(mut self: Box<Self>) -> Result<(), LogError> {
        self.finish_inflight().await?;
        if let Some(member) = self.member.take() {
            // Dropping the last handle closes the consumer: it gives up its partitions.
            // A dynamic member leaves the group, so the others take over at once; a static
            // member (`KafkaOptions::instance_id`) keeps its place for its successor with
            // the same instance id, and the others take over only after the session
            // timeout if none comes.
            blocking(move || {
                drop(member);
                Ok(())
            })
            .await?;
        }
        Ok(())
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        if let Some(member) = self.member.take() {
            // Closing a consumer blocks while it leaves the group; keep that off the
            // async worker threads when a runtime is around.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn_blocking(move || drop(member));
                }
                Err(_) => drop(member),
            }
        }
    }
}
