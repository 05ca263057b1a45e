//! The consume/answer loop: a member of the consumer group `archive` on topic `archive`.
//! When partitions are assigned it folds their `ArchivedMessage` records into the index
//! (up to the group's committed offset); then it indexes new records and answers the
//! queries as they come, reading the messages of a page back from the log, and commits
//! only after the answers are appended.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use imbus_config::topics::{ARCHIVE, DELIVER_PREFIX};
use imbus_core::{ArchivedMessage, Delivery, Event, StanzaReceived, Timestamp, ToBare};
use imbus_log::{
    ConsumedRecord, ConsumerEvent, ConsumerOptions, Log, LogError, Offset, Partition,
    PartitionReader, Record, StartAt, TopicPartition, partition_for_key,
};
use tokio::sync::watch;

use crate::index::Index;
use crate::query::{Plan, plan};

/// The consumer group of archive processors.
pub const GROUP: &str = "archive";

/// Queries older than this when they are read (the processor was down) are not answered:
/// their client gave up long ago.
pub const QUERY_MAX_AGE: Duration = Duration::from_secs(600);

/// Why the archive processor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The log failed.
    #[error("log: {0}")]
    Log(#[from] LogError),
    /// An event could not be encoded.
    #[error("cannot encode an event: {0}")]
    Encode(String),
}

/// Runs an archive processor until `shutdown` turns true. The system topics must exist.
pub async fn run(
    log: Arc<dyn Log>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ArchiveError> {
    let partitions = log.partition_count(ARCHIVE).await?;
    let mut consumer = log
        .consumer(ConsumerOptions::new(GROUP, &[ARCHIVE]))
        .await?;
    let mut index = Index::default();
    let mut restored: BTreeSet<Partition> = BTreeSet::new();
    let mut readers: HashMap<Partition, Box<dyn PartitionReader>> = HashMap::new();
    tracing::info!(partitions, "archive processor started");
    // Indexed and not yet committed: the next offset per partition.
    let mut pending: HashMap<TopicPartition, Offset> = HashMap::new();
    let mut last_commit = tokio::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let wait = if pending.is_empty() {
            Duration::from_secs(1)
        } else {
            COMMIT_INTERVAL
        };
        let event = tokio::select! {
            event = consumer.poll(wait) => event,
            _ = shutdown.changed() => continue,
        };
        let idle = matches!(&event, Ok(ConsumerEvent::Records(records)) if records.is_empty());
        if idle
            || matches!(
                event,
                Ok(ConsumerEvent::Assigned(_) | ConsumerEvent::Revoked(_))
            )
        {
            imbus_log::commit_assigned(consumer.as_mut(), &mut pending).await?;
            last_commit = tokio::time::Instant::now();
        }
        match event {
            Ok(ConsumerEvent::Assigned(tps)) => {
                for tp in tps {
                    if restored.contains(&tp.partition) {
                        continue;
                    }
                    let (until, committed) =
                        restore(log.as_ref(), &mut index, tp.partition).await?;
                    if !committed {
                        // Never processed by the group: the queries already there are
                        // history, not questions waiting for an answer.
                        consumer.seek(&tp, StartAt::Offset(until)).await?;
                    }
                    restored.insert(tp.partition);
                }
            }
            Ok(ConsumerEvent::Revoked(tps)) => {
                let still: BTreeSet<Partition> = consumer
                    .assignment()
                    .iter()
                    .map(|tp| tp.partition)
                    .collect();
                for tp in tps {
                    if !still.contains(&tp.partition) {
                        restored.remove(&tp.partition);
                        readers.remove(&tp.partition);
                    }
                }
                let keep = restored.clone();
                index.retain_users(|u| {
                    keep.contains(&partition_for_key(u.as_str().as_bytes(), partitions))
                });
            }
            Ok(ConsumerEvent::Records(records)) => {
                let mut deliveries = Vec::new();
                let mut answered = false;
                for record in &records {
                    pending.insert(record.topic_partition(), record.offset + 1);
                    match decode(record) {
                        Some(Event::Archived(message)) => {
                            index.insert(&message, record.offset);
                        }
                        Some(Event::StanzaReceived(query)) => {
                            answered = true;
                            let age = Timestamp::now().since(query.received_at);
                            if age.is_some_and(|a| a > QUERY_MAX_AGE) {
                                tracing::info!(event = %query.event_id, "archive query read too late to be answered; skipped");
                                continue;
                            }
                            let reader = match readers.entry(record.partition) {
                                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                                std::collections::hash_map::Entry::Vacant(v) => v.insert(
                                    log.reader(ARCHIVE, record.partition, StartAt::Earliest)
                                        .await?,
                                ),
                            };
                            let answer = answer(
                                log.as_ref(),
                                &mut index,
                                reader.as_mut(),
                                record.partition,
                                query,
                            )
                            .await?;
                            deliveries.extend(answer);
                        }
                        Some(_) => {
                            tracing::warn!(
                                offset = record.offset,
                                "unexpected event on the archive topic; skipped"
                            );
                        }
                        None => {}
                    }
                }
                write_deliveries(log.as_ref(), deliveries).await?;
                // A query is committed once answered; indexed entries at most every
                // `COMMIT_INTERVAL` (a crash re-reads them from the last commit).
                if answered || last_commit.elapsed() >= COMMIT_INTERVAL {
                    imbus_log::commit_assigned(consumer.as_mut(), &mut pending).await?;
                    last_commit = tokio::time::Instant::now();
                }
            }
            Err(LogError::Closed) => break,
            Err(e) => {
                tracing::warn!(error = %e, "archive consumer failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    if let Err(e) = imbus_log::commit_assigned(consumer.as_mut(), &mut pending).await {
        tracing::debug!(error = %e, "committing the archive consumer's last offsets");
    }
    if let Err(e) = consumer.close().await {
        tracing::debug!(error = %e, "closing the archive consumer");
    }
    tracing::info!("archive processor stopped");
    Ok(())
}

/// While entries keep coming, their offsets are committed at most this often.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

fn decode(record: &ConsumedRecord) -> Option<Event> {
    let value = record.value.as_ref()?;
    match imbus_schemas::decode(value) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::warn!(partition = record.partition, offset = record.offset, error = %e, "undecodable archive record; skipped");
            None
        }
    }
}

/// Folds the archive records of one partition into the index, up to the group's committed
/// offset (or, for a partition the group never processed, to its end). Returns that
/// offset and whether it was the committed one.
async fn restore(
    log: &dyn Log,
    index: &mut Index,
    partition: Partition,
) -> Result<(Offset, bool), LogError> {
    let tp = TopicPartition::new(ARCHIVE, partition);
    let committed = log.committed(GROUP, &tp).await?;
    let until = match committed {
        Some(offset) => offset,
        None => log.watermarks(ARCHIVE, partition).await?.high,
    };
    let mut reader = log.reader(ARCHIVE, partition, StartAt::Earliest).await?;
    let mut indexed = 0usize;
    let stall = imbus_log::READ_STALL_LIMIT;
    while let Some(records) = imbus_log::read_before(reader.as_mut(), until, 1024, stall).await? {
        for record in records {
            if let Some(Event::Archived(message)) = decode(&record)
                && index.insert(&message, record.offset)
            {
                indexed += 1;
            }
        }
    }
    if reader.position() < until {
        tracing::warn!(
            partition,
            reached = reader.position(),
            until,
            "could not read the archive to its end while restoring a partition"
        );
    }
    tracing::debug!(partition, indexed, until, "archive partition restored");
    Ok((until, committed.is_some()))
}

/// Answers one query: plans it on the index and reads the page's messages.
async fn answer(
    log: &dyn Log,
    index: &mut Index,
    reader: &mut dyn PartitionReader,
    partition: Partition,
    query: StanzaReceived,
) -> Result<Vec<Delivery>, LogError> {
    // Messages removed by retention leave the index before the query is evaluated.
    let low = log.watermarks(ARCHIVE, partition).await?.low;
    index.prune(&query.sender.bare(), low);
    match plan(index, query) {
        Plan::Reply(deliveries) => Ok(deliveries),
        Plan::Fetch(answer) => {
            let read = fetch(reader, &answer.offsets()).await?;
            Ok(answer.finish(&read))
        }
    }
}

/// Reads the archived messages at `offsets` (reading runs of nearby records in one go).
async fn fetch(
    reader: &mut dyn PartitionReader,
    offsets: &[Offset],
) -> Result<HashMap<Offset, ArchivedMessage>, LogError> {
    let mut wanted: Vec<Offset> = offsets.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found = HashMap::with_capacity(wanted.len());
    let mut i = 0;
    while i < wanted.len() {
        let at = wanted[i];
        if reader.position() != at {
            reader.seek(StartAt::Offset(at)).await?;
        }
        let last = wanted[wanted.len() - 1];
        let span = usize::try_from(last - at + 1).unwrap_or(1).clamp(1, 256);
        let records = reader.read(span, Duration::from_millis(200)).await?;
        let Some(last_seen) = records.last().map(|r| r.offset) else {
            i += 1; // not there any more
            continue;
        };
        for record in &records {
            if wanted[i..].binary_search(&record.offset).is_ok()
                && let Some(Event::Archived(message)) = decode(record)
            {
                found.insert(record.offset, message);
            }
        }
        while i < wanted.len() && wanted[i] <= last_seen {
            i += 1;
        }
    }
    Ok(found)
}

/// Appends the answers to the delivery topics of the querying sessions' gateways (answers
/// for a gateway without a delivery topic are dropped with a warning).
pub async fn write_deliveries(
    log: &dyn Log,
    deliveries: Vec<Delivery>,
) -> Result<(), ArchiveError> {
    let mut by_topic: HashMap<String, Vec<Record>> = HashMap::new();
    for delivery in deliveries {
        let topic = format!("{DELIVER_PREFIX}{}", delivery.gateway_id.as_str());
        let key = delivery.to.as_str().to_owned();
        let value = imbus_schemas::encode(&Event::Delivery(delivery))
            .map_err(|e| ArchiveError::Encode(e.to_string()))?;
        by_topic
            .entry(topic)
            .or_default()
            .push(Record::new(key, value));
    }
    for (topic, records) in by_topic {
        match log.append_batch(&topic, records).await {
            Ok(_) => {}
            Err(LogError::UnknownTopic(_)) => {
                tracing::warn!(
                    topic,
                    "archive answers for a gateway that has no delivery topic; dropped"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
