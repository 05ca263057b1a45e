//! Offset look-ups shared by readers, group members and the log: where a `StartAt` is,
//! and which offset a timestamp maps to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imbus_log::{LogError, Offset, Partition, StartAt, TimestampMs};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};

use crate::KafkaOptions;
use crate::consumer::to_record;
use crate::context::LogContext;
use crate::error::{config_error, map_kafka_error};

/// A group id for a client that only uses `assign` (librdkafka refuses assignments
/// without one). The client never joins this group and never commits.
fn throwaway_group(client_id: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{client_id}-reader-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A consumer outside any consumer group, for reading assigned partitions.
pub(crate) fn reader_client(options: &KafkaOptions) -> Result<BaseConsumer<LogContext>, LogError> {
    let mut config = options.standalone_config();
    config.set("group.id", throwaway_group(&options.client_id));
    config
        .create_with_context(LogContext)
        .map_err(|e| config_error("reader", &e))
}

/// The low and high watermarks of a partition.
pub(crate) fn watermarks<X, C>(
    client: &X,
    topic: &str,
    partition: Partition,
    timeout: Duration,
) -> Result<(Offset, Offset), LogError>
where
    X: Consumer<C>,
    C: ConsumerContext,
{
    client
        .fetch_watermarks(topic, partition, timeout)
        .map_err(|e| map_kafka_error(&format!("fetch watermarks of {topic}/{partition}"), &e))
}

/// The first offset whose record is at or after `timestamp`, `None` if every record is
/// older.
///
/// Some brokers (Tansu 0.6) answer the first offset instead of "none" when every record
/// is older, so an answer at the start of the partition is confirmed by reading that
/// record's timestamp.
pub(crate) fn offset_for_time<X, C>(
    client: &X,
    options: &KafkaOptions,
    topic: &str,
    partition: Partition,
    timestamp: TimestampMs,
) -> Result<Option<Offset>, LogError>
where
    X: Consumer<C>,
    C: ConsumerContext,
{
    let timeout = options.request_timeout;
    let context = format!("look up offsets by time in {topic}/{partition}");
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset(topic, partition, KafkaOffset::Offset(timestamp))
        .map_err(|e| map_kafka_error(&context, &e))?;
    let found = client
        .offsets_for_times(query, timeout)
        .map_err(|e| map_kafka_error(&context, &e))?;
    let answer = match found.find_partition(topic, partition) {
        Some(element) => {
            element.error().map_err(|e| map_kafka_error(&context, &e))?;
            match element.offset() {
                KafkaOffset::Offset(offset) if offset >= 0 => offset,
                _ => return Ok(None),
            }
        }
        None => return Ok(None),
    };
    let (low, high) = watermarks(client, topic, partition, timeout)?;
    if answer >= high {
        return Ok(None);
    }
    if answer > low {
        return Ok(Some(answer));
    }
    match timestamp_at(options, topic, partition, low)? {
        Some(first) if first >= timestamp => Ok(Some(low)),
        _ => Ok(None),
    }
}

/// The timestamp of the first record at or after `offset`.
fn timestamp_at(
    options: &KafkaOptions,
    topic: &str,
    partition: Partition,
    offset: Offset,
) -> Result<Option<TimestampMs>, LogError> {
    let client = reader_client(options)?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, KafkaOffset::Offset(offset))
        .map_err(|e| map_kafka_error("assign partition", &e))?;
    client
        .assign(&assignment)
        .map_err(|e| map_kafka_error(&format!("assign {topic}/{partition}"), &e))?;
    let deadline = std::time::Instant::now() + options.request_timeout;
    while std::time::Instant::now() < deadline {
        match client.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => return Ok(Some(to_record(&message).timestamp)),
            Some(Err(error)) => {
                crate::consumer::poll_error("read a record's timestamp", &error)?;
            }
            None => {}
        }
    }
    Err(LogError::Timeout(format!(
        "reading the record at {topic}/{partition}@{offset} took longer than {:?}",
        options.request_timeout
    )))
}

/// Resolves `start` to a concrete offset of one partition.
pub(crate) fn resolve_start<X, C>(
    client: &X,
    options: &KafkaOptions,
    topic: &str,
    partition: Partition,
    start: StartAt,
) -> Result<Offset, LogError>
where
    X: Consumer<C>,
    C: ConsumerContext,
{
    let (low, high) = watermarks(client, topic, partition, options.request_timeout)?;
    Ok(match start {
        StartAt::Earliest => low,
        StartAt::Latest => high,
        StartAt::Offset(offset) => offset.clamp(low, high),
        StartAt::Timestamp(timestamp) => {
            offset_for_time(client, options, topic, partition, timestamp)?.unwrap_or(high)
        }
    })
}
