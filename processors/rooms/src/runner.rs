//! The consume/produce loop around [`Rooms`]: a member of the consumer group `rooms` on
//! `rooms.stanzas` (stanzas the router forwards to the chat service, keyed by room, and
//! the session ends it relays to every partition). When partitions are assigned it
//! rebuilds their rooms by folding the `rooms` changelog (and it follows the changelog of
//! the other partitions, for the room directory and room search); for every batch it runs the
//! rooms core, hands the outputs to the log and commits the input offsets only once the
//! log has acknowledged them (a crash redoes the batch; outputs carry derived ids so
//! their consumers recognise a repeat).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imbus_config::topics::{
    COMPLIANCE, DELIVER_PREFIX, ROOMS, ROOMS_ARCHIVE, ROOMS_STANZAS, ROUTED,
};
use imbus_core::{BareJid, Event, SessionEvent, Timestamp};
use imbus_log::{
    ConsumedRecord, Consumer, ConsumerEvent, ConsumerOptions, Log, LogError, Offset, Partition,
    Record, StartAt, Submission, TopicPartition, partition_for_key,
};
use tokio::sync::{mpsc, watch};

use crate::config::RoomsConfig;
use crate::rooms::{Input, Output, Rooms};
use crate::state::RoomEvent;

/// The consumer group of rooms processors.
pub const GROUP: &str = "rooms";

/// While batches keep coming, input offsets are committed at most this often (a crash
/// redoes what was not committed; outputs carry derived ids so a repeat is recognised).
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Why the rooms processor stopped.
#[derive(Debug, thiserror::Error)]
pub enum RoomsError {
    /// The log failed.
    #[error("log: {0}")]
    Log(#[from] LogError),
    /// An event could not be encoded.
    #[error("cannot encode an event: {0}")]
    Encode(String),
}

/// Runs a rooms processor until `shutdown` turns true, applying setting changes from
/// `settings` as they come. The system topics must exist.
pub async fn run(
    log: Arc<dyn Log>,
    config: RoomsConfig,
    mut settings: watch::Receiver<RoomsConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RoomsError> {
    let partitions = log.partition_count(ROOMS_STANZAS).await?;
    let mut consumer = log
        .consumer(ConsumerOptions::new(GROUP, &[ROOMS_STANZAS]))
        .await?;
    let mut rooms = Rooms::new(config);
    let mut restored: BTreeSet<Partition> = BTreeSet::new();
    // The room directory lists the public rooms of every partition: the changelog of
    // the partitions this instance does not own is followed and observed.
    let (owned_tx, owned_rx) = watch::channel(BTreeSet::new());
    let (directory_tx, mut directory_rx) = mpsc::channel::<(Partition, RoomEvent)>(1024);
    let followers: Vec<_> = (0..log.partition_count(ROOMS).await?)
        .map(|p| {
            tokio::spawn(follow_directory(
                log.clone(),
                p,
                owned_rx.clone(),
                directory_tx.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    drop(directory_tx);
    let mut ready: HashMap<TopicPartition, Offset> = HashMap::new();
    let mut last_commit = Instant::now();
    tracing::info!(
        partitions,
        service = %rooms.config().service,
        "rooms processor started"
    );
    loop {
        if *shutdown.borrow() {
            break;
        }
        let event = tokio::select! {
            event = consumer.poll(Duration::from_secs(1)) => event,
            Some((partition, change)) = directory_rx.recv() => {
                if !restored.contains(&partition) {
                    rooms.observe(&change);
                }
                continue;
            }
            _ = shutdown.changed() => continue,
        };
        // After the poll: records that arrived while it waited are handled with the
        // settings of now (a chat node alias added meanwhile is served).
        if settings.has_changed().unwrap_or(false) {
            let new = settings.borrow_and_update().clone();
            tracing::info!(
                history_for_new_joiners = new.history_for_new_joiners,
                "rooms settings changed"
            );
            *rooms.config_mut() = new;
        }
        match event {
            Ok(ConsumerEvent::Assigned(tps)) => {
                commit(consumer.as_mut(), &mut ready).await?;
                let new: BTreeSet<Partition> = tps
                    .iter()
                    .map(|tp| tp.partition)
                    .filter(|p| !restored.contains(p))
                    .collect();
                for p in new {
                    restored.insert(p);
                    owned_tx.send_replace(restored.clone());
                    restore(log.as_ref(), &mut rooms, p).await?;
                }
            }
            Ok(ConsumerEvent::Revoked(tps)) => {
                commit(consumer.as_mut(), &mut ready).await?;
                let gone: BTreeSet<Partition> = tps.iter().map(|tp| tp.partition).collect();
                let still: BTreeSet<Partition> = consumer
                    .assignment()
                    .iter()
                    .map(|tp| tp.partition)
                    .collect();
                for p in gone.difference(&still) {
                    restored.remove(p);
                }
                owned_tx.send_replace(restored.clone());
                let keep = restored.clone();
                rooms.retain_rooms(|room| {
                    keep.contains(&partition_for_key(room.as_str().as_bytes(), partitions))
                });
            }
            Ok(ConsumerEvent::Records(records)) => {
                if records.is_empty() {
                    commit(consumer.as_mut(), &mut ready).await?;
                    continue;
                }
                let mut next: HashMap<TopicPartition, Offset> = HashMap::new();
                let mut outputs = Vec::new();
                let now = Timestamp::now();
                for record in &records {
                    next.insert(record.topic_partition(), record.offset + 1);
                    if let Some(input) = input_of(record) {
                        outputs.extend(rooms.handle(input, now));
                    }
                }
                // The outputs are durable before the inputs that caused them are
                // committed.
                submit_outputs(log.as_ref(), outputs).await?;
                for (tp, offset) in next {
                    let slot = ready.entry(tp).or_insert(offset);
                    *slot = (*slot).max(offset);
                }
                if last_commit.elapsed() >= COMMIT_INTERVAL {
                    commit(consumer.as_mut(), &mut ready).await?;
                    last_commit = Instant::now();
                }
            }
            Err(LogError::Closed) => break,
            Err(e) => {
                tracing::warn!(error = %e, "rooms consumer failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    commit(consumer.as_mut(), &mut ready).await?;
    for follower in followers {
        follower.abort();
    }
    if let Err(e) = consumer.close().await {
        tracing::debug!(error = %e, "closing the rooms consumer");
    }
    tracing::info!("rooms processor stopped");
    Ok(())
}

/// Commits what was processed and acknowledged, for the partitions the consumer still
/// holds (the new owner of another one redoes its uncommitted inputs).
async fn commit(
    consumer: &mut dyn Consumer,
    ready: &mut HashMap<TopicPartition, Offset>,
) -> Result<(), LogError> {
    if ready.is_empty() {
        return Ok(());
    }
    let assigned: BTreeSet<TopicPartition> = consumer.assignment().into_iter().collect();
    let offsets: Vec<_> = ready
        .drain()
        .filter(|(tp, _)| assigned.contains(tp))
        .collect();
    if offsets.is_empty() {
        return Ok(());
    }
    consumer.commit(&offsets).await
}

/// Turns a record of `rooms.stanzas` into an input of the rooms core.
fn input_of(record: &ConsumedRecord) -> Option<Input> {
    let value = record.value.as_ref()?;
    match imbus_schemas::decode(value) {
        Ok(Event::StanzaReceived(stanza)) => Some(Input::Stanza(stanza)),
        Ok(Event::Session(SessionEvent::Closed(closed))) => Some(Input::SessionClosed(closed)),
        Ok(_) => {
            tracing::warn!(
                topic = %record.topic,
                offset = record.offset,
                "unexpected event on this topic; skipped"
            );
            None
        }
        Err(e) => {
            tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, error = %e, "undecodable record; skipped");
            None
        }
    }
}

/// Rebuilds the rooms of one partition: the whole `rooms` changelog partition, last
/// record of each room wins, a tombstone removes the room. The rooms processor alone
/// writes it, and it writes a batch's changelog records before committing the batch, so
/// the changelog's end is the state after the group's committed inputs (or later, when
/// the inputs after the commit are redone: their outputs are the same).
async fn restore(log: &dyn Log, rooms: &mut Rooms, partition: Partition) -> Result<(), LogError> {
    let until = log.watermarks(ROOMS, partition).await?.high;
    let mut reader = log.reader(ROOMS, partition, StartAt::Earliest).await?;
    let mut count = 0usize;
    while reader.position() < until {
        let records = reader.read(1024, Duration::from_millis(200)).await?;
        if records.is_empty() {
            break;
        }
        for record in records {
            if record.offset >= until {
                break;
            }
            count += 1;
            apply_changelog(rooms, &record);
        }
    }
    tracing::debug!(
        partition,
        records = count,
        rooms = rooms.rooms().len(),
        "rooms partition restored"
    );
    Ok(())
}

fn apply_changelog(rooms: &mut Rooms, record: &ConsumedRecord) {
    if let Some(event) = changelog_event(record) {
        rooms.apply(&event);
    }
}

/// The room event a record of the `rooms` changelog holds (a tombstone: the room ended).
fn changelog_event(record: &ConsumedRecord) -> Option<RoomEvent> {
    let Some(value) = record.value.as_ref() else {
        let room = record
            .key
            .as_ref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| BareJid::new(k).ok())?;
        return Some(RoomEvent::Destroyed {
            room,
            at: Timestamp::from_micros(record.timestamp.saturating_mul(1000)),
        });
    };
    match imbus_schemas::decode(value) {
        Ok(Event::RoomState(room)) => Some(RoomEvent::Updated(room)),
        Ok(_) => {
            tracing::warn!(
                offset = record.offset,
                "unexpected event on the rooms changelog; skipped"
            );
            None
        }
        Err(e) => {
            tracing::warn!(offset = record.offset, error = %e, "undecodable rooms changelog record; skipped");
            None
        }
    }
}

/// Follows the `rooms` changelog of one partition for the room directory and room
/// search: every change of a room of a partition this instance does not own (`owned`)
/// goes to `tx`; records of owned partitions are skipped undecoded (their rooms are this
/// instance's own). Ends with `shutdown`, or when the log fails (logged: the directory
/// then misses later changes of that partition's rooms until a restart).
async fn follow_directory(
    log: Arc<dyn Log>,
    partition: Partition,
    owned: watch::Receiver<BTreeSet<Partition>>,
    tx: mpsc::Sender<(Partition, RoomEvent)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reader = match log.reader(ROOMS, partition, StartAt::Earliest).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(partition, error = %e, "cannot follow the rooms changelog for the room directory");
            return;
        }
    };
    loop {
        let records = tokio::select! {
            _ = shutdown.changed() => return,
            r = reader.read(256, Duration::from_secs(1)) => r,
        };
        let records = match records {
            Ok(r) => r,
            Err(LogError::Closed) => return,
            Err(e) => {
                tracing::warn!(partition, error = %e, "reading the rooms changelog for the room directory failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for record in &records {
            if owned.borrow().contains(&partition) {
                continue;
            }
            if let Some(event) = changelog_event(record)
                && tx.send((partition, event)).await.is_err()
            {
                return;
            }
        }
    }
}

fn encode(event: Event) -> Result<Vec<u8>, RoomsError> {
    imbus_schemas::encode(&event).map_err(|e| RoomsError::Encode(e.to_string()))
}

/// Hands the outputs of a batch to the log in one ordered submission and waits for the
/// acknowledgement: room states first (once a delivery is visible, its cause is on the
/// changelog), then the room archive's messages and queries (in the order they were
/// produced) and compliance records, before the deliveries (a message an occupant has
/// seen is archived), then stanzas for the router and the deliveries.
async fn submit_outputs(log: &dyn Log, outputs: Vec<Output>) -> Result<(), RoomsError> {
    if outputs.is_empty() {
        return Ok(());
    }
    // Only a room's last state of the batch is written: the changelog is compacted and
    // a restarted processor needs the last state only (the inputs after the group's
    // committed offsets are redone on it and give the same outputs). A busy room thus
    // costs one state record per batch, not one per message.
    let mut states: Vec<(String, Option<Box<imbus_core::Room>>)> = Vec::new();
    let mut state_of: HashMap<String, usize> = HashMap::new();
    let mut keep_state =
        |key: String, state: Option<Box<imbus_core::Room>>| match state_of.get(&key) {
            Some(&i) => states[i].1 = state,
            None => {
                state_of.insert(key.clone(), states.len());
                states.push((key, state));
            }
        };
    let mut compliance = Vec::new();
    let mut archive = Vec::new();
    let mut routed = Vec::new();
    let mut deliveries: Vec<(String, Record)> = Vec::new();
    for output in outputs {
        match output {
            Output::Room(RoomEvent::Updated(room)) => {
                keep_state(room.jid.as_str().to_owned(), Some(room));
            }
            Output::Room(RoomEvent::Destroyed { room, .. }) => {
                keep_state(room.as_str().to_owned(), None);
            }
            Output::Compliance(record) => {
                let key = record.recipient.as_str().to_owned();
                compliance.push(Record::new(key, encode(Event::Compliance(record))?));
            }
            Output::Archive(message) => {
                let key = message.owner.as_str().to_owned();
                archive.push(Record::new(key, encode(Event::Archived(message))?));
            }
            Output::ArchiveQuery(query) => {
                let key = query.owner().as_str().to_owned();
                archive.push(Record::new(key, encode(Event::from(query))?));
            }
            Output::Route(stanza) => {
                let key = stanza.owner().as_str().to_owned();
                routed.push(Record::new(key, encode(Event::from(stanza))?));
            }
            Output::Deliver(delivery) => {
                let topic = format!("{DELIVER_PREFIX}{}", delivery.gateway_id.as_str());
                let key = delivery.to.as_str().to_owned();
                deliveries.push((topic, Record::new(key, encode(Event::from(delivery))?)));
            }
        }
    }
    let mut submissions: Vec<Submission> = Vec::with_capacity(states.len());
    for (key, state) in states {
        let record = match state {
            Some(room) => Record::new(key, encode(Event::RoomState(room))?),
            None => Record::tombstone(key),
        };
        submissions.push(Submission::keyed(ROOMS, record));
    }
    submissions.extend(
        archive
            .into_iter()
            .map(|record| Submission::keyed(ROOMS_ARCHIVE, record)),
    );
    submissions.extend(
        compliance
            .into_iter()
            .map(|record| Submission::keyed(COMPLIANCE, record)),
    );
    submissions.extend(
        routed
            .into_iter()
            .map(|record| Submission::keyed(ROUTED, record)),
    );
    let mut known: HashMap<String, bool> = HashMap::new();
    for (topic, record) in deliveries {
        let exists = match known.get(&topic) {
            Some(exists) => *exists,
            None => {
                let exists = match log.partition_count(&topic).await {
                    Ok(_) => true,
                    Err(LogError::UnknownTopic(_)) => {
                        tracing::warn!(
                            topic,
                            "deliveries for a gateway that has no delivery topic; dropped"
                        );
                        false
                    }
                    Err(e) => return Err(e.into()),
                };
                known.insert(topic.clone(), exists);
                exists
            }
        };
        if exists {
            submissions.push(Submission::keyed(topic, record));
        }
    }
    if submissions.is_empty() {
        return Ok(());
    }
    log.submit(submissions).await?.await?;
    Ok(())
}
