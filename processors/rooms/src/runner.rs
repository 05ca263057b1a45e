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
use imbus_core::{BareJid, Delivery, DeliveryCopy, Event, SessionEvent, Timestamp};
use imbus_log::{
    ConsumedRecord, ConsumerEvent, ConsumerOptions, Log, LogError, Offset, Partition, Record,
    StartAt, Submission, TopicPartition, partition_for_key,
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
                imbus_log::commit_assigned(consumer.as_mut(), &mut ready).await?;
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
                imbus_log::commit_assigned(consumer.as_mut(), &mut ready).await?;
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
                    imbus_log::commit_assigned(consumer.as_mut(), &mut ready).await?;
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
                    imbus_log::commit_assigned(consumer.as_mut(), &mut ready).await?;
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
    imbus_log::commit_assigned(consumer.as_mut(), &mut ready).await?;
    for follower in followers {
        follower.abort();
    }
    if let Err(e) = consumer.close().await {
        tracing::debug!(error = %e, "closing the rooms consumer");
    }
    tracing::info!("rooms processor stopped");
    Ok(())
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
    let stall = imbus_log::READ_STALL_LIMIT;
    while let Some(records) = imbus_log::read_before(reader.as_mut(), until, 1024, stall).await? {
        for record in records {
            count += 1;
            apply_changelog(rooms, &record);
        }
    }
    if reader.position() < until {
        tracing::warn!(
            partition,
            reached = reader.position(),
            until,
            "could not read the rooms changelog to its end while restoring a partition"
        );
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

/// Splits a delivery to several sessions into one per partition of the delivery topic
/// its recipients' keys (full JIDs) hash to, so each session's deliveries stay on one
/// partition, in order. The delivery of each partition is addressed to the first of its
/// recipients (its stanza's `to` rewritten when that is not the original one). With one
/// partition, or no copies, the delivery is returned unchanged.
fn split_by_partition(mut delivery: Delivery, partitions: i32) -> Vec<Delivery> {
    if delivery.copies.is_empty() || partitions <= 1 {
        return vec![delivery];
    }
    let own = partition_for_key(delivery.to.as_str().as_bytes(), partitions);
    let mut others: Vec<(Partition, Vec<DeliveryCopy>)> = Vec::new();
    let mut kept = Vec::new();
    for copy in std::mem::take(&mut delivery.copies) {
        let partition = partition_for_key(copy.to.as_str().as_bytes(), partitions);
        if partition == own {
            kept.push(copy);
            continue;
        }
        match others.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, copies)) => copies.push(copy),
            None => others.push((partition, vec![copy])),
        }
    }
    delivery.copies = kept;
    let element = (!others.is_empty())
        .then(|| imbus_xmpp_stream::parse_stanza(&delivery.xml))
        .flatten();
    let mut split = Vec::with_capacity(1 + others.len());
    for (_, mut copies) in others {
        let first = copies.remove(0);
        let xml = match &element {
            Some(element) => {
                let mut addressed = element.clone();
                addressed.set_attr("to", first.to.as_str());
                addressed.to_xml()
            }
            // Not a stanza that parses (never produced by the rooms processor): the
            // gateway drops it whatever its address.
            None => delivery.xml.clone(),
        };
        let mut part = delivery.for_copy(&first, xml);
        part.copies = copies;
        split.push(part);
    }
    split.insert(0, delivery);
    split
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
    let mut deliveries: Vec<(String, Delivery)> = Vec::new();
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
                deliveries.push((topic, delivery));
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
    // The partition count of each gateway's delivery topic; `None`: the gateway has no
    // delivery topic.
    let mut known: HashMap<String, Option<i32>> = HashMap::new();
    for (topic, delivery) in deliveries {
        let partitions = match known.get(&topic) {
            Some(partitions) => *partitions,
            None => {
                let partitions = match log.partition_count(&topic).await {
                    Ok(n) => Some(n),
                    Err(LogError::UnknownTopic(_)) => {
                        tracing::warn!(
                            topic,
                            "deliveries for a gateway that has no delivery topic; dropped"
                        );
                        None
                    }
                    Err(e) => return Err(e.into()),
                };
                known.insert(topic.clone(), partitions);
                partitions
            }
        };
        let Some(partitions) = partitions else {
            continue;
        };
        for delivery in split_by_partition(delivery, partitions) {
            let key = delivery.to.as_str().to_owned();
            let record = Record::new(key, encode(Event::from(delivery))?);
            submissions.push(Submission::keyed(topic.clone(), record));
        }
    }
    if submissions.is_empty() {
        return Ok(());
    }
    log.submit(submissions).await?.await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use imbus_core::{FullJid, GatewayId, SessionId, Uuid};

    use super::*;

    fn group_delivery(recipients: usize) -> Delivery {
        let jid = |i: usize| FullJid::new(&format!("user{i}@example.com/r")).unwrap();
        Delivery {
            event_id: Uuid::from_u128(1000),
            source_event_id: Uuid::from_u128(1),
            to: jid(0),
            gateway_id: GatewayId::new("gw1").unwrap(),
            session_id: SessionId::new("s-0").unwrap(),
            xml: "<message xmlns='jabber:client' from='room@conference.example.com/nick' \
                  to='user0@example.com/r' type='groupchat'><body>hi</body></message>"
                .to_owned(),
            delayed_from: None,
            copies: (1..recipients)
                .map(|i| DeliveryCopy {
                    event_id: Uuid::from_u128(1000 + i as u128),
                    to: jid(i),
                    session_id: SessionId::new(format!("s-{i}")).unwrap(),
                })
                .collect(),
        }
    }

    /// Every recipient of `deliveries`: (partition of its key, full JID, session, id,
    /// the stanza's `to` for it).
    fn recipients(deliveries: &[Delivery], partitions: i32) -> Vec<(String, String, u128)> {
        let mut all = Vec::new();
        for d in deliveries {
            let element = imbus_xmpp_stream::parse_stanza(&d.xml).unwrap();
            assert_eq!(
                element.attr("to"),
                Some(d.to.as_str()),
                "addressed to its own"
            );
            let own = partition_for_key(d.to.as_str().as_bytes(), partitions);
            all.push((
                d.to.to_string(),
                d.session_id.to_string(),
                d.event_id.as_u128(),
            ));
            for c in &d.copies {
                assert_eq!(
                    partition_for_key(c.to.as_str().as_bytes(), partitions),
                    own,
                    "a copy on another partition than its delivery's key"
                );
                all.push((
                    c.to.to_string(),
                    c.session_id.to_string(),
                    c.event_id.as_u128(),
                ));
            }
        }
        all.sort();
        all
    }

    #[test]
    fn one_partition_keeps_the_delivery_whole() {
        let d = group_delivery(50);
        assert_eq!(split_by_partition(d.clone(), 1), vec![d]);
    }

    #[test]
    fn several_partitions_get_one_delivery_each_with_every_recipient_once() {
        let d = group_delivery(50);
        let expected = recipients(std::slice::from_ref(&d), 1);
        let split = split_by_partition(d.clone(), 8);
        assert_eq!(split.len(), 8, "50 keys over 8 partitions hit every one");
        assert_eq!(
            split[0].to, d.to,
            "the original recipient keeps its delivery"
        );
        assert_eq!(split[0].xml, d.xml);
        assert_eq!(recipients(&split, 8), expected);
        let partitions: BTreeSet<Partition> = split
            .iter()
            .map(|d| partition_for_key(d.to.as_str().as_bytes(), 8))
            .collect();
        assert_eq!(partitions.len(), 8, "one delivery per partition");
        for part in &split {
            assert_eq!(part.source_event_id, d.source_event_id);
            assert!(part.xml.contains("<body>hi</body>"));
        }
    }

    #[test]
    fn a_single_recipient_is_never_split() {
        let d = group_delivery(1);
        assert_eq!(split_by_partition(d.clone(), 8), vec![d]);
    }
}
