//! The consume/produce loop around [`Router`]: a member of the consumer group `router`
//! on `stanzas`, `routed`, `sessions` and `accounts`. When partitions are assigned it
//! rebuilds their state from the changelogs; for every batch it runs the router, appends
//! the outputs and only then commits the offsets (a crash redoes the batch; outputs carry
//! derived ids so their consumers can recognise a repeat).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use imbus_config::topics::{
    ACCOUNTS, COMPLIANCE, DELIVER_PREFIX, OFFLINE, ROSTERS, ROUTED, SESSIONS, STANZAS, USERDATA,
};
use imbus_core::{
    BareJid, Event, OfflineEvent, RosterChanged, SessionEvent, Timestamp, UserDataChanged,
};
use imbus_log::{
    ConsumedRecord, ConsumerEvent, ConsumerOptions, Log, LogError, Offset, Partition, Record,
    StartAt, TopicPartition, partition_for_key,
};
use tokio::sync::watch;

use crate::router::{
    Input, Output, Router, RouterConfig, offline_key, presence_key, roster_key, user_data_key,
};

/// The consumer group of routers.
pub const GROUP: &str = "router";

/// Why the router stopped.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The log failed.
    #[error("log: {0}")]
    Log(#[from] LogError),
    /// An event could not be encoded.
    #[error("cannot encode an event: {0}")]
    Encode(String),
}

/// Runs a router until `shutdown` turns true, applying setting changes from `settings`
/// as they come. The system topics must exist.
pub async fn run(
    log: Arc<dyn Log>,
    config: RouterConfig,
    mut settings: watch::Receiver<RouterConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RouterError> {
    let partitions = log.partition_count(STANZAS).await?;
    let mut consumer = log
        .consumer(ConsumerOptions::new(
            GROUP,
            &[STANZAS, ROUTED, SESSIONS, ACCOUNTS],
        ))
        .await?;
    let mut router = Router::new(config);
    let mut restored: BTreeSet<Partition> = BTreeSet::new();
    // Per partition, the end of `sessions` when its state was restored: the router's own
    // presence records before it were written by an earlier run and are folded in; the
    // later ones were applied when they were written.
    let mut marks: HashMap<Partition, Offset> = HashMap::new();
    tracing::info!(partitions, "router started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        if settings.has_changed().unwrap_or(false) {
            let new = settings.borrow_and_update().clone();
            tracing::info!(?new, "router settings changed");
            *router.config_mut() = new;
        }
        let event = tokio::select! {
            event = consumer.poll(Duration::from_secs(1)) => event,
            _ = shutdown.changed() => continue,
        };
        match event {
            Ok(ConsumerEvent::Assigned(tps)) => {
                let new: BTreeSet<Partition> = tps
                    .iter()
                    .map(|tp| tp.partition)
                    .filter(|p| !restored.contains(p))
                    .collect();
                for p in new {
                    restore(log.as_ref(), &mut router, p).await?;
                    marks.insert(p, log.watermarks(SESSIONS, p).await?.high);
                    restored.insert(p);
                }
            }
            Ok(ConsumerEvent::Revoked(tps)) => {
                let gone: BTreeSet<Partition> = tps.iter().map(|tp| tp.partition).collect();
                let still: BTreeSet<Partition> = consumer
                    .assignment()
                    .iter()
                    .map(|tp| tp.partition)
                    .collect();
                for p in gone.difference(&still) {
                    restored.remove(p);
                }
                let keep = restored.clone();
                router.state_mut().retain_users(|u| {
                    keep.contains(&partition_for_key(u.as_str().as_bytes(), partitions))
                });
            }
            Ok(ConsumerEvent::Records(records)) => {
                let mut next: HashMap<TopicPartition, Offset> = HashMap::new();
                let mut outputs = Vec::new();
                let now = Timestamp::now();
                for record in &records {
                    next.insert(record.topic_partition(), record.offset + 1);
                    let mark = marks.get(&record.partition).copied().unwrap_or(0);
                    if let Some(input) = input_of(&mut router, record, mark) {
                        outputs.extend(router.handle(input, now));
                    }
                }
                write(log.as_ref(), partitions, outputs).await?;
                let offsets: Vec<_> = next.into_iter().collect();
                consumer.commit(&offsets).await?;
            }
            Err(LogError::Closed) => break,
            Err(e) => {
                tracing::warn!(error = %e, "router consumer failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    if let Err(e) = consumer.close().await {
        tracing::debug!(error = %e, "closing the router consumer");
    }
    tracing::info!("router stopped");
    Ok(())
}

/// Turns a consumed record into a router input; changelog records that are state only
/// (accounts) are applied directly.
fn input_of(router: &mut Router, record: &ConsumedRecord, mark: Offset) -> Option<Input> {
    let value = record.value.as_ref()?;
    let event = match imbus_schemas::decode(value) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, error = %e, "undecodable record; skipped");
            return None;
        }
    };
    match (&*record.topic, event) {
        (STANZAS, Event::StanzaReceived(s)) => Some(Input::Outbound(s)),
        (ROUTED, Event::StanzaReceived(s)) => Some(Input::Inbound(s)),
        (SESSIONS, Event::Session(s @ SessionEvent::Updated(_))) => {
            if record.offset < mark {
                router.state_mut().apply_session(&s);
            }
            None
        }
        (SESSIONS, Event::Session(s)) => Some(Input::Session(s)),
        (ACCOUNTS, Event::Account(a)) => {
            router.state_mut().apply_account(&a);
            None
        }
        (topic, _) => {
            tracing::warn!(
                topic,
                offset = record.offset,
                "unexpected event on this topic; skipped"
            );
            None
        }
    }
}

/// Rebuilds the state of one partition: the whole rosters, userdata and offline
/// changelogs, and the sessions and accounts changelogs up to the group's committed
/// offsets (the consumer delivers the rest as inputs).
async fn restore(log: &dyn Log, router: &mut Router, partition: Partition) -> Result<(), LogError> {
    let mut counts = [0usize; 5];
    for (i, topic) in [ROSTERS, SESSIONS, ACCOUNTS, USERDATA, OFFLINE]
        .into_iter()
        .enumerate()
    {
        // The router alone writes rosters, user data and offline messages: fold them to
        // their end.
        let until = if topic == ROSTERS || topic == USERDATA || topic == OFFLINE {
            log.watermarks(topic, partition).await?.high
        } else {
            match log
                .committed(GROUP, &TopicPartition::new(topic, partition))
                .await?
            {
                Some(offset) => offset,
                None => continue,
            }
        };
        let mut reader = log.reader(topic, partition, StartAt::Earliest).await?;
        while reader.position() < until {
            let records = reader.read(1024, Duration::from_millis(200)).await?;
            if records.is_empty() {
                break;
            }
            for record in records {
                if record.offset >= until {
                    break;
                }
                counts[i] += 1;
                apply_changelog(router, topic, &record);
            }
        }
    }
    let locks = restore_locks(log, router, partition).await?;
    tracing::debug!(
        partition,
        locks,
        rosters = counts[0],
        sessions = counts[1],
        accounts = counts[2],
        userdata = counts[3],
        offline = counts[4],
        "router partition restored"
    );
    Ok(())
}

/// Rebuilds the conversation locks of a partition from the outbound messages of the last
/// `lock_idle_timeout` that the group already processed.
async fn restore_locks(
    log: &dyn Log,
    router: &mut Router,
    partition: Partition,
) -> Result<usize, LogError> {
    let Some(until) = log
        .committed(GROUP, &TopicPartition::new(STANZAS, partition))
        .await?
    else {
        return Ok(0);
    };
    let window = i64::try_from(router.config().lock_idle_timeout.as_millis()).unwrap_or(i64::MAX);
    let since = Timestamp::now().as_millis().saturating_sub(window);
    let Some(start) = log.offset_for_timestamp(STANZAS, partition, since).await? else {
        return Ok(0);
    };
    let mut reader = log
        .reader(STANZAS, partition, StartAt::Offset(start))
        .await?;
    let mut seen = 0;
    while reader.position() < until {
        let records = reader.read(1024, Duration::from_millis(200)).await?;
        if records.is_empty() {
            break;
        }
        for record in records {
            if record.offset >= until {
                break;
            }
            if let Some(value) = &record.value
                && let Ok(Event::StanzaReceived(stanza)) = imbus_schemas::decode(value)
            {
                router.restore_outbound(&stanza);
                seen += 1;
            }
        }
    }
    Ok(seen)
}

fn apply_changelog(router: &mut Router, topic: &str, record: &ConsumedRecord) {
    let Some(value) = record.value.as_ref() else {
        if topic == ROSTERS
            && let Some((user, contact)) = record
                .key
                .as_ref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.split_once('\u{0}'))
            && let (Ok(user), Ok(contact)) = (BareJid::new(user), BareJid::new(contact))
        {
            router.state_mut().forget_roster_item(&user, &contact);
        }
        if topic == USERDATA
            && let Some((user, namespace)) = record
                .key
                .as_ref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.split_once('\u{0}'))
            && let Ok(user) = BareJid::new(user)
        {
            router.state_mut().apply_user_data(&UserDataChanged {
                user,
                namespace: namespace.to_owned(),
                xml: None,
                at: Timestamp::from_micros(0),
            });
        }
        return;
    };
    match imbus_schemas::decode(value) {
        Ok(Event::RosterChanged(change)) => router.state_mut().apply_roster(&change),
        Ok(Event::Session(event)) => router.state_mut().apply_session(&event),
        Ok(Event::Account(event)) => router.state_mut().apply_account(&event),
        Ok(Event::UserData(change)) => router.state_mut().apply_user_data(&change),
        Ok(Event::Offline(event)) => router.state_mut().apply_offline(&event),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(topic, offset = record.offset, error = %e, "undecodable changelog record; skipped");
        }
    }
}

fn encode(event: Event) -> Result<Vec<u8>, RouterError> {
    imbus_schemas::encode(&event).map_err(|e| RouterError::Encode(e.to_string()))
}

/// Appends the outputs of a batch; returns once the log acknowledged all of them.
async fn write(log: &dyn Log, partitions: i32, outputs: Vec<Output>) -> Result<(), RouterError> {
    if outputs.is_empty() {
        return Ok(());
    }
    let mut routed = Vec::new();
    let mut compliance = Vec::new();
    let mut deliveries: HashMap<String, Vec<Record>> = HashMap::new();
    let mut keyed: Vec<(&'static str, Partition, Record)> = Vec::new();
    // Offline messages delivered or expired: retired only after their deliveries are
    // appended, so a crash in between delivers them again (under the same delivery ids)
    // instead of losing them.
    let mut retired: Vec<(&'static str, Partition, Record)> = Vec::new();
    for output in outputs {
        match output {
            Output::Route(stanza) => {
                let key = stanza.owner().as_str().to_owned();
                routed.push(Record::new(key, encode(Event::from(stanza))?));
            }
            Output::Deliver(delivery) => {
                let topic = format!("{DELIVER_PREFIX}{}", delivery.gateway_id.as_str());
                let key = delivery.to.as_str().to_owned();
                deliveries
                    .entry(topic)
                    .or_default()
                    .push(Record::new(key, encode(Event::from(delivery))?));
            }
            Output::Roster(change) => {
                let partition = partition_for_key(change.user.as_str().as_bytes(), partitions);
                let key = roster_key(&change.user, &change.contact);
                let record = if is_void(&change) {
                    Record::tombstone(key)
                } else {
                    Record::new(key, encode(Event::RosterChanged(change))?)
                };
                keyed.push((ROSTERS, partition, record));
            }
            Output::Session(event) => {
                let jid = event.jid().clone();
                let partition = partition_for_key(jid.to_bare().as_str().as_bytes(), partitions);
                keyed.push((
                    SESSIONS,
                    partition,
                    Record::new(presence_key(&jid), encode(Event::Session(event))?),
                ));
            }
            Output::UserData(change) => {
                let partition = partition_for_key(change.user.as_str().as_bytes(), partitions);
                let key = user_data_key(&change.user, &change.namespace);
                let record = if change.xml.is_none() {
                    Record::tombstone(key)
                } else {
                    Record::new(key, encode(Event::UserData(change))?)
                };
                keyed.push((USERDATA, partition, record));
            }
            Output::Compliance(record) => {
                let key = record.recipient.as_str().to_owned();
                compliance.push(Record::new(key, encode(Event::Compliance(record))?));
            }
            Output::Offline(event) => {
                let recipient = event.recipient().clone();
                let partition = partition_for_key(recipient.as_str().as_bytes(), partitions);
                let key = offline_key(&recipient, &event.message_event_id());
                let stored = matches!(event, OfflineEvent::Stored(_));
                let record = (
                    OFFLINE,
                    partition,
                    Record::new(key, encode(Event::Offline(event))?),
                );
                if stored {
                    keyed.push(record);
                } else {
                    retired.push(record);
                }
            }
            Output::SessionGone(jid) => {
                let partition = partition_for_key(jid.to_bare().as_str().as_bytes(), partitions);
                keyed.push((SESSIONS, partition, Record::tombstone(presence_key(&jid))));
            }
        }
    }
    // State changes first: once a delivery is visible its cause is on the changelogs.
    for (topic, partition, record) in keyed {
        log.append_to(topic, partition, record).await?;
    }
    // Compliance records before the deliveries: an IM a client has seen is archived.
    if !compliance.is_empty() {
        log.append_batch(COMPLIANCE, compliance).await?;
    }
    if !routed.is_empty() {
        log.append_batch(ROUTED, routed).await?;
    }
    for (topic, records) in deliveries {
        match log.append_batch(&topic, records).await {
            Ok(_) => {}
            Err(LogError::UnknownTopic(_)) => {
                tracing::warn!(
                    topic,
                    "deliveries for a gateway that has no delivery topic; dropped"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    for (topic, partition, record) in retired {
        log.append_to(topic, partition, record).await?;
    }
    Ok(())
}

fn is_void(change: &RosterChanged) -> bool {
    change.subscription == imbus_core::Subscription::Remove
        && change.pending_in.is_none()
        && !change.approved
        && !change.ask_out
}
