//! The imbus log on a Kafka-protocol cluster (Apache Kafka, Redpanda, MSK, Tansu), through
//! librdkafka.
//!
//! [`KafkaLog`] implements [`imbus_log::Log`], so the gateways, processors and connectors
//! of imbus run unchanged as separate processes against a shared cluster:
//!
//! * **Appends** go through an idempotent producer with `acks=all`: a record acknowledged
//!   to the caller is stored by every in-sync replica, and producer retries never
//!   duplicate or reorder records. The partition of a keyed record is computed with
//!   [`imbus_log::partition_for_key`] (Kafka's murmur2 partitioner) and the record is
//!   produced to that explicit partition, so imbus, the Java client and external tools put
//!   a key on the same partition.
//! * **Topics** are created explicitly through the admin API with their partition count,
//!   `cleanup.policy` and `retention.ms`; broker-side auto-creation is never used.
//! * **Consumer groups** never commit on their own: offsets are committed only when a
//!   component calls [`Consumer::commit`](imbus_log::Consumer::commit) after it processed
//!   the records (at-least-once). Rebalances are surfaced from `poll` as
//!   [`ConsumerEvent::Assigned`](imbus_log::ConsumerEvent::Assigned) and
//!   [`ConsumerEvent::Revoked`](imbus_log::ConsumerEvent::Revoked). With Kafka's default
//!   (eager) rebalance protocol a revocation has already happened when `poll` reports it,
//!   so members commit after each processed batch rather than on revocation.
//! * **Readers** are consumers outside any group, assigned one partition; they never
//!   commit.
//!
//! A member must keep calling `poll` at least every `max.poll.interval.ms` (librdkafka's
//! default: 5 minutes), also while it retries a failing external write; otherwise the
//! cluster considers it stuck and gives its partitions to the other members.
//!
//! librdkafka's blocking calls run on Tokio's blocking thread pool; its log lines go to
//! `tracing` under the target `librdkafka`.

#![forbid(unsafe_code)]

mod consumer;
mod context;
mod error;
mod lookup;
mod reader;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use imbus_log::{
    Acknowledgement, Cleanup, Consumer, ConsumerOptions, Log, LogError, Offset, Partition,
    PartitionReader, Position, Record, StartAt, Submission, TimestampMs, TopicConfig,
    TopicPartition, Watermarks, partition_for_key,
};
use parking_lot::Mutex;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};

use crate::consumer::{KafkaConsumer, blocking};
use crate::context::{GroupContext, LogContext};
use crate::error::{config_error, is_too_large, is_unknown_topic, map_code, map_kafka_error};
use crate::reader::KafkaReader;

/// librdkafka's default `message.max.bytes`, the record size limit unless configured.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// How long the producer waits before sending a batch, so concurrent appends share
/// requests.
const LINGER_MS: &str = "2";
/// How long the broker may hold a fetch waiting for data. librdkafka's default (500 ms)
/// puts half a second on every quiet partition's wake-up; imbus delivers chat messages,
/// so a fetch returns after at most this long (overridable through `extra`).
const FETCH_WAIT_MAX_MS: &str = "10";
/// How long a group member may stay silent before the broker gives its partitions to the
/// others. librdkafka's default (45 s) leaves a crashed router's users without routing
/// that long; 10 s (heartbeats every 2 s) bounds the take-over (overridable through
/// `extra`). With static membership ([`KafkaOptions::instance_id`]) a restarted process
/// takes its partitions back immediately; the timeout only applies to a member that does
/// not come back.
const SESSION_TIMEOUT_MS: &str = "10000";
const HEARTBEAT_INTERVAL_MS: &str = "2000";

/// How to reach and talk to the cluster.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// The client id the brokers see (logs, quotas).
    pub client_id: String,
    /// Replicas of each topic imbus creates (1 for a single-broker cluster; 3 in
    /// production).
    pub replication_factor: i32,
    /// How long metadata, admin and offset requests may take, and how long `connect`
    /// waits for a broker to answer.
    pub request_timeout: Duration,
    /// librdkafka settings passed as-is to every client, after imbus' own (for example
    /// `security.protocol`, `sasl.mechanisms`, `ssl.ca.location`, `session.timeout.ms`).
    pub extra: Vec<(String, String)>,
    /// Static group membership (KIP-345): when set, every consumer-group member this
    /// client opens joins as `group.instance.id = "<instance_id>.<group>"`. A process
    /// restarted with the same id (the same cluster and node) takes its previous
    /// membership over at once, with its partitions, instead of waiting for the broker to
    /// expire the dead member; a restart therefore needs no rebalance. Two live processes
    /// must never share an id in the same group: the broker fences the older one.
    pub instance_id: Option<String>,
}

impl KafkaOptions {
    /// Options for a cluster at `bootstrap_servers`, with client id `imbus`, replication
    /// factor 1 and a 30 s request timeout.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: "imbus".to_owned(),
            replication_factor: 1,
            request_timeout: Duration::from_secs(30),
            extra: Vec::new(),
            instance_id: None,
        }
    }

    /// Settings every client shares.
    fn base_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            .set("allow.auto.create.topics", "false");
        config
    }

    fn with_extra(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        config
    }

    fn producer_config(&self) -> ClientConfig {
        let mut config = self.base_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", LINGER_MS);
        self.with_extra(config)
    }

    /// A consumer outside any group: readers, metadata, watermarks and offset look-ups.
    pub(crate) fn standalone_config(&self) -> ClientConfig {
        let mut config = self.base_config();
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
        self.with_extra(config)
    }

    fn group_config(&self, group: &str, start_if_uncommitted: StartAt) -> ClientConfig {
        let reset = match start_if_uncommitted {
            StartAt::Latest => "latest",
            // Offsets and timestamps are applied when partitions are assigned.
            StartAt::Earliest | StartAt::Offset(_) | StartAt::Timestamp(_) => "earliest",
        };
        let mut config = self.base_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
            .set("session.timeout.ms", SESSION_TIMEOUT_MS)
            .set("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS)
            .set("auto.offset.reset", reset);
        if let Some(instance) = &self.instance_id {
            config.set("group.instance.id", format!("{instance}.{group}"));
        }
        self.with_extra(config)
    }

    fn message_max_bytes(&self) -> usize {
        self.extra
            .iter()
            .rev()
            .find(|(k, _)| k == "message.max.bytes")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
    }
}

struct Inner {
    options: Arc<KafkaOptions>,
    producer: FutureProducer<LogContext>,
    admin: AdminClient<LogContext>,
    /// A consumer outside any group for metadata, watermarks and time look-ups.
    utility: BaseConsumer<LogContext>,
    partition_counts: Mutex<HashMap<String, i32>>,
    closed: AtomicBool,
}

/// The imbus log on a Kafka-protocol cluster. Cheap to clone (the clients are shared).
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

impl fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaLog")
            .field("bootstrap_servers", &self.inner.options.bootstrap_servers)
            .field("client_id", &self.inner.options.client_id)
            .finish_non_exhaustive()
    }
}

impl KafkaLog {
    /// Connects to the cluster and checks that a broker answers within
    /// `options.request_timeout`.
    pub async fn connect(options: KafkaOptions) -> Result<KafkaLog, LogError> {
        if options.replication_factor < 1 {
            return Err(LogError::InvalidArgument(format!(
                "replication factor must be at least 1, not {}",
                options.replication_factor
            )));
        }
        let producer: FutureProducer<LogContext> = options
            .producer_config()
            .create_with_context(LogContext)
            .map_err(|e| config_error("producer", &e))?;
        let admin: AdminClient<LogContext> = options
            .with_extra(options.base_config())
            .create_with_context(LogContext)
            .map_err(|e| config_error("admin client", &e))?;
        let utility: BaseConsumer<LogContext> = options
            .standalone_config()
            .create_with_context(LogContext)
            .map_err(|e| config_error("consumer", &e))?;
        let log = KafkaLog {
            inner: Arc::new(Inner {
                options: Arc::new(options),
                producer,
                admin,
                utility,
                partition_counts: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
            }),
        };
        let inner = log.inner.clone();
        blocking(move || {
            let timeout = inner.options.request_timeout;
            match inner.utility.fetch_metadata(None, timeout) {
                Ok(metadata) => {
                    tracing::info!(
                        bootstrap = %inner.options.bootstrap_servers,
                        brokers = metadata.brokers().len(),
                        "connected to the Kafka cluster"
                    );
                    Ok(())
                }
                Err(e) => Err(LogError::Timeout(format!(
                    "no Kafka broker at {} answered within {timeout:?} ({e}); check the \
                     bootstrap servers and that the cluster is running",
                    inner.options.bootstrap_servers
                ))),
            }
        })
        .await?;
        Ok(log)
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    fn timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }

    /// The partition count the cluster reports for `topic`, `None` if it does not exist.
    /// Waits (up to the request timeout) while the topic's leaders are being elected.
    async fn fetch_partition_count(&self, topic: &str) -> Result<Option<i32>, LogError> {
        let inner = self.inner.clone();
        let topic = topic.to_owned();
        blocking(move || {
            let timeout = inner.options.request_timeout;
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let metadata = inner
                    .utility
                    .fetch_metadata(Some(&topic), timeout)
                    .map_err(|e| map_kafka_error(&format!("fetch metadata of {topic:?}"), &e))?;
                let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
                    return Ok(None);
                };
                let code = found.error().map(RDKafkaErrorCode::from);
                match code {
                    None if !found.partitions().is_empty() => {
                        let count = i32::try_from(found.partitions().len()).map_err(|_| {
                            LogError::Broker(format!("topic {topic:?} has too many partitions"))
                        })?;
                        return Ok(Some(count));
                    }
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
                    ) => return Ok(None),
                    // Being created: leaders not elected yet.
                    None | Some(RDKafkaErrorCode::LeaderNotAvailable)
                        if std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    None => {
                        return Err(LogError::Timeout(format!(
                            "topic {topic:?} has no partitions yet"
                        )));
                    }
                    Some(code) => {
                        return Err(map_code(
                            &format!("fetch metadata of {topic:?}"),
                            code,
                            &code.to_string(),
                        ));
                    }
                }
            }
        })
        .await
    }

    async fn partitions_of(&self, topic: &str) -> Result<i32, LogError> {
        if let Some(count) = self.inner.partition_counts.lock().get(topic) {
            return Ok(*count);
        }
        imbus_log::validate_topic_name(topic)?;
        match self.fetch_partition_count(topic).await? {
            Some(count) => {
                self.inner
                    .partition_counts
                    .lock()
                    .insert(topic.to_owned(), count);
                Ok(count)
            }
            None => Err(LogError::UnknownTopic(topic.to_owned())),
        }
    }

    /// Checks that `partition` exists, refreshing the cached partition count once (an
    /// operator may have added partitions).
    async fn check_partition(&self, topic: &str, partition: Partition) -> Result<(), LogError> {
        let count = self.partitions_of(topic).await?;
        if (0..count).contains(&partition) {
            return Ok(());
        }
        self.inner.partition_counts.lock().remove(topic);
        let count = self.partitions_of(topic).await?;
        if (0..count).contains(&partition) {
            Ok(())
        } else {
            Err(LogError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })
        }
    }

    /// Hands a record to the producer (retrying while its queue is full) and returns the
    /// future of its delivery report.
    async fn enqueue(
        &self,
        topic: &str,
        partition: Partition,
        record: &Record,
    ) -> Result<DeliveryFuture, LogError> {
        let mut message = FutureRecord::<[u8], [u8]>::to(topic).partition(partition);
        if let Some(key) = &record.key {
            message = message.key(key.as_ref());
        }
        if let Some(value) = &record.value {
            message = message.payload(value.as_ref());
        }
        if let Some(timestamp) = record.timestamp {
            message = message.timestamp(timestamp);
        }
        if !record.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for header in &record.headers {
                headers = headers.insert(KafkaHeader {
                    key: &header.key,
                    value: Some(header.value.as_ref()),
                });
            }
            message = message.headers(headers);
        }
        loop {
            match self.inner.producer.send_result(message) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    message = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) if is_too_large(&error) => {
                    return Err(LogError::RecordTooLarge {
                        size: record_size(record),
                        limit: self.inner.options.message_max_bytes(),
                    });
                }
                Err((error, _)) => {
                    return Err(map_kafka_error(&format!("append to {topic}"), &error));
                }
            }
        }
    }

    async fn delivered(
        &self,
        topic: &str,
        record_size: usize,
        delivery: DeliveryFuture,
    ) -> Result<Position, LogError> {
        match delivery.await {
            Ok(Ok(delivery)) => Ok(Position {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((error, _))) if is_too_large(&error) => Err(LogError::RecordTooLarge {
                size: record_size,
                limit: self.inner.options.message_max_bytes(),
            }),
            Ok(Err((error, _))) if is_unknown_topic(&error) => {
                self.inner.partition_counts.lock().remove(topic);
                Err(map_kafka_error(&format!("append to {topic}"), &error))
            }
            Ok(Err((error, _))) => Err(map_kafka_error(&format!("append to {topic}"), &error)),
            Err(_) => Err(LogError::Closed),
        }
    }

    fn admin_options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout()))
            .operation_timeout(Some(self.timeout()))
    }

    /// Waits until the cluster's metadata shows `topic` with `partitions` partitions.
    async fn await_topic(&self, topic: &str, partitions: i32) -> Result<(), LogError> {
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            match self.fetch_partition_count(topic).await? {
                Some(count) if count >= partitions => return Ok(()),
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(LogError::Timeout(format!(
                        "topic {topic:?} was created but the cluster's metadata does not show \
                         its {partitions} partitions"
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// The bytes a record takes (key, value and headers), for error messages.
fn record_size(record: &Record) -> usize {
    record.key.as_ref().map_or(0, |k| k.len())
        + record.value.as_ref().map_or(0, |v| v.len())
        + record
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>()
}

#[async_trait]
impl Log for KafkaLog {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    async fn create_topic(&self, config: &TopicConfig) -> Result<(), LogError> {
        self.check_open()?;
        config.validate()?;
        let retention_ms = match (config.cleanup, config.retention) {
            (Cleanup::Delete, Some(retention)) => Some(
                i64::try_from(retention.as_millis())
                    .unwrap_or(i64::MAX)
                    .to_string(),
            ),
            (Cleanup::Delete, None) => Some("-1".to_owned()),
            (Cleanup::Compact, _) => None,
        };
        let cleanup_policy = match config.cleanup {
            Cleanup::Delete => "delete",
            Cleanup::Compact => "compact",
        };
        let mut new_topic = NewTopic::new(
            &config.name,
            config.partitions,
            TopicReplication::Fixed(self.inner.options.replication_factor),
        )
        .set("cleanup.policy", cleanup_policy);
        if let Some(retention_ms) = &retention_ms {
            new_topic = new_topic.set("retention.ms", retention_ms);
        }
        let results = self
            .inner
            .admin
            .create_topics([&new_topic], &self.admin_options())
            .await
            .map_err(|e| map_kafka_error(&format!("create topic {:?}", config.name), &e))?;
        self.inner.partition_counts.lock().remove(&config.name);
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    let existing =
                        self.fetch_partition_count(&config.name)
                            .await?
                            .ok_or_else(|| {
                                LogError::Broker(format!(
                                    "topic {:?} is reported to exist but has no metadata",
                                    config.name
                                ))
                            })?;
                    if existing != config.partitions {
                        return Err(LogError::TopicMismatch {
                            topic: config.name.clone(),
                            existing,
                            requested: config.partitions,
                        });
                    }
                    return Ok(());
                }
                Err((name, code)) => {
                    return Err(map_code(
                        &format!("create topic {name:?}"),
                        code,
                        &code.to_string(),
                    ));
                }
            }
        }
        tracing::info!(topic = %config.name, partitions = config.partitions, cleanup = cleanup_policy, "created topic");
        self.await_topic(&config.name, config.partitions).await
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, LogError> {
        self.check_open()?;
        self.partitions_of(topic).await
    }

    async fn append(&self, topic: &str, record: Record) -> Result<Position, LogError> {
        self.check_open()?;
        let partitions = self.partitions_of(topic).await?;
        let partition = record
            .key
            .as_ref()
            .map_or(0, |key| partition_for_key(key, partitions));
        let delivery = self.enqueue(topic, partition, &record).await?;
        self.delivered(topic, record_size(&record), delivery).await
    }

    async fn append_to(
        &self,
        topic: &str,
        partition: Partition,
        record: Record,
    ) -> Result<Position, LogError> {
        self.check_open()?;
        self.check_partition(topic, partition).await?;
        let delivery = self.enqueue(topic, partition, &record).await?;
        self.delivered(topic, record_size(&record), delivery).await
    }

    async fn append_batch(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> Result<Vec<Position>, LogError> {
        self.check_open()?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let partitions = self.partitions_of(topic).await?;
        // Refuse an oversized record before any record of the batch is sent.
        let limit = self.inner.options.message_max_bytes();
        if let Some(size) = records.iter().map(record_size).find(|size| *size > limit) {
            return Err(LogError::RecordTooLarge { size, limit });
        }
        // Enqueue everything in order first (the idempotent producer keeps that order per
        // partition), then wait for every delivery report.
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let partition = record
                .key
                .as_ref()
                .map_or(0, |key| partition_for_key(key, partitions));
            deliveries.push((
                record_size(record),
                self.enqueue(topic, partition, record).await?,
            ));
        }
        let mut positions = Vec::with_capacity(deliveries.len());
        let mut first_error = None;
        for (size, delivery) in deliveries {
            match self.delivered(topic, size, delivery).await {
                Ok(position) => positions.push(position),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(positions),
        }
    }

    async fn submit(&self, records: Vec<Submission>) -> Result<Acknowledgement, LogError> {
        self.check_open()?;
        // Refuse an oversized record before any record is sent.
        let limit = self.inner.options.message_max_bytes();
        if let Some(size) = records
            .iter()
            .map(|s| record_size(&s.record))
            .find(|size| *size > limit)
        {
            return Err(LogError::RecordTooLarge { size, limit });
        }
        // Enqueue in order (the idempotent producer keeps that order per partition); the
        // acknowledgement waits for every delivery report.
        let mut deliveries = Vec::with_capacity(records.len());
        for submission in &records {
            let partition = match submission.partition {
                Some(p) => {
                    self.check_partition(&submission.topic, p).await?;
                    p
                }
                None => {
                    let partitions = self.partitions_of(&submission.topic).await?;
                    submission
                        .record
                        .key
                        .as_ref()
                        .map_or(0, |key| partition_for_key(key, partitions))
                }
            };
            deliveries.push((
                submission.topic.clone(),
                record_size(&submission.record),
                self.enqueue(&submission.topic, partition, &submission.record)
                    .await?,
            ));
        }
        let log = self.clone();
        Ok(Box::pin(async move {
            let mut first_error = None;
            for (topic, size, delivery) in deliveries {
                if let Err(error) = log.delivered(&topic, size, delivery).await {
                    first_error.get_or_insert(error);
                }
            }
            match first_error {
                Some(error) => Err(error),
                None => Ok(()),
            }
        }))
    }

    async fn watermarks(&self, topic: &str, partition: Partition) -> Result<Watermarks, LogError> {
        self.check_open()?;
        self.check_partition(topic, partition).await?;
        let inner = self.inner.clone();
        let topic = topic.to_owned();
        blocking(move || {
            let (low, high) = inner
                .utility
                .fetch_watermarks(&topic, partition, inner.options.request_timeout)
                .map_err(|e| {
                    map_kafka_error(&format!("fetch watermarks of {topic}/{partition}"), &e)
                })?;
            Ok(Watermarks { low, high })
        })
        .await
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: Partition,
        timestamp: TimestampMs,
    ) -> Result<Option<Offset>, LogError> {
        self.check_open()?;
        self.check_partition(topic, partition).await?;
        let inner = self.inner.clone();
        let topic = topic.to_owned();
        blocking(move || {
            lookup::offset_for_time(&inner.utility, &inner.options, &topic, partition, timestamp)
        })
        .await
    }

    async fn reader(
        &self,
        topic: &str,
        partition: Partition,
        start: StartAt,
    ) -> Result<Box<dyn PartitionReader>, LogError> {
        self.check_open()?;
        self.check_partition(topic, partition).await?;
        let client = lookup::reader_client(&self.inner.options)?;
        let reader =
            KafkaReader::open(client, topic, partition, start, self.inner.options.clone()).await?;
        Ok(Box::new(reader))
    }

    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn Consumer>, LogError> {
        self.check_open()?;
        if options.group.is_empty() {
            return Err(LogError::InvalidArgument(
                "a consumer group needs a name".to_owned(),
            ));
        }
        if options.topics.is_empty() {
            return Err(LogError::InvalidArgument(format!(
                "consumer group {:?} subscribes to no topic",
                options.group
            )));
        }
        for topic in &options.topics {
            self.partitions_of(topic).await?;
        }
        let context = GroupContext::new(options.start_if_uncommitted, self.inner.options.clone());
        let member: BaseConsumer<GroupContext> = self
            .inner
            .options
            .group_config(&options.group, options.start_if_uncommitted)
            .create_with_context(context)
            .map_err(|e| config_error("consumer", &e))?;
        let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
        member
            .subscribe(&topics)
            .map_err(|e| map_kafka_error(&format!("subscribe to {topics:?}"), &e))?;
        tracing::debug!(group = %options.group, topics = ?options.topics, "joined consumer group");
        Ok(Box::new(KafkaConsumer::new(
            member,
            options.group,
            options.max_batch,
            self.inner.options.clone(),
        )))
    }

    async fn committed(
        &self,
        group: &str,
        tp: &TopicPartition,
    ) -> Result<Option<Offset>, LogError> {
        self.check_open()?;
        self.check_partition(&tp.topic, tp.partition).await?;
        let mut config = self.inner.options.base_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        let config = self.inner.options.with_extra(config);
        let timeout = self.timeout();
        let (topic, partition) = (tp.topic.to_string(), tp.partition);
        blocking(move || {
            // A client of the group that never subscribes, so it does not join it.
            let client: BaseConsumer<LogContext> = config
                .create_with_context(LogContext)
                .map_err(|e| config_error("consumer", &e))?;
            let context = format!("fetch committed offset of {topic}/{partition}");
            let mut query = TopicPartitionList::new();
            query
                .add_partition_offset(&topic, partition, KafkaOffset::Invalid)
                .map_err(|e| map_kafka_error(&context, &e))?;
            let found = client
                .committed_offsets(query, timeout)
                .map_err(|e| map_kafka_error(&context, &e))?;
            Ok(found
                .find_partition(&topic, partition)
                .and_then(|e| match e.offset() {
                    KafkaOffset::Offset(offset) if offset >= 0 => Some(offset),
                    _ => None,
                }))
        })
        .await
    }

    async fn shutdown(&self) -> Result<(), LogError> {
        self.inner.closed.store(true, Ordering::Release);
        let inner = self.inner.clone();
        blocking(move || {
            inner
                .producer
                .flush(inner.options.request_timeout)
                .map_err(|e| map_kafka_error("flush the producer", &e))
        })
        .await
    }
}
