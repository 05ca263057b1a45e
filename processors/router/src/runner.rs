//! The consume/produce loop around [`Router`]: a member of the consumer group `router`
//! on `stanzas`, `routed`, `sessions` and `accounts`. When partitions are assigned it
//! rebuilds their state from the changelogs; for every batch it runs the router, appends
//! the outputs and only then commits the offsets (a crash redoes the batch; outputs carry
//! derived ids so their consumers can recognise a repeat).
//!
//! With a single partition (the embedded log's default), a stanza the router forwards is
//! handled at once, in the same batch, instead of being written to `routed` and read
//! back: same outputs, one record and one pass through the log fewer. Order is kept:
//! when the partition is assigned, the `routed` records it still has to process
//! (written by an earlier run) are processed first, as part of taking it over, and only
//! then are forwarded stanzas handled at once. With several partitions every forwarded
//! stanza goes through `routed`, even to a partition the same router holds: handled at
//! once, it could overtake records of the recipient's partition that the consumer has
//! not delivered yet (a session's start, its presence), which `routed` puts after it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use imbus_config::topics::{
    ACCOUNTS, ARCHIVE, COMPLIANCE, DELIVER_PREFIX, OFFLINE, ROOMS_STANZAS, ROSTERS, ROUTED,
    SESSIONS, STANZAS, USERDATA,
};
use imbus_core::{
    BareJid, Event, OfflineEvent, RosterChanged, SessionEvent, Timestamp, ToBare, UserDataChanged,
};
use imbus_log::{
    Acknowledgement, CommitInFlight, ConsumedRecord, Consumer, ConsumerEvent, ConsumerOptions, Log,
    LogError, Offset, Partition, PartitionReader, Record, StartAt, Submission, TopicPartition,
    partition_for_key,
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
    // Per partition held, what its restore and take-overs covered.
    let mut taken: HashMap<Partition, Taken> = HashMap::new();
    tracing::info!(partitions, "router started");
    let mut pipeline = Pipeline::default();
    // Whether the last poll found nothing: then acknowledged inputs are committed at once.
    let mut idle = true;
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Acknowledged batches are settled between polls (a poll is never cancelled for
        // them: a consumer may have moved its position when a cancelled poll is dropped).
        pipeline.settle(consumer.as_mut(), idle).await?;
        let wait = if pipeline.busy() {
            // Come back soon to commit what is being acknowledged.
            Duration::from_millis(5)
        } else {
            Duration::from_secs(1)
        };
        let event = tokio::select! {
            event = consumer.poll(wait) => event,
            _ = shutdown.changed() => continue,
        };
        // After the poll: records that arrived while it waited are handled with the
        // settings of now (a chat node alias added meanwhile is forwarded).
        if settings.has_changed().unwrap_or(false) {
            let new = settings.borrow_and_update().clone();
            tracing::info!(?new, "router settings changed");
            *router.config_mut() = new;
        }
        idle = matches!(&event, Ok(ConsumerEvent::Records(records)) if records.is_empty());
        if matches!(
            event,
            Ok(ConsumerEvent::Assigned(_) | ConsumerEvent::Revoked(_))
        ) {
            // Settle what was processed under the old assignment first.
            pipeline.drain(consumer.as_mut()).await?;
        }
        match event {
            Ok(ConsumerEvent::Assigned(tps)) => {
                let new: BTreeSet<Partition> = tps
                    .iter()
                    .map(|tp| tp.partition)
                    .filter(|p| !restored.contains(p))
                    .collect();
                for &p in &new {
                    let accounts = restore(log.as_ref(), &mut router, p).await?;
                    let mark = log.watermarks(SESSIONS, p).await?.high;
                    taken.insert(
                        p,
                        Taken {
                            mark,
                            accounts,
                            ..Taken::default()
                        },
                    );
                }
                for p in new {
                    let local = Local {
                        held: &restored,
                        partitions,
                    };
                    let mark = taken.get(&p).map_or(0, |t| t.mark);
                    // Who is online comes first: a stanza processed before the sessions
                    // records an earlier run left uncommitted would find its recipient
                    // offline (and be stored for a client that is connected).
                    let tp = TopicPartition::new(SESSIONS, p);
                    let done = take_over(&log, &mut router, local, tp, mark, &mut pipeline).await?;
                    taken.entry(p).or_default().sessions = done;
                    if partitions == 1 {
                        // Everything this router forwarded so far is on the log, so the
                        // end of `routed` read next covers it.
                        pipeline.drain(consumer.as_mut()).await?;
                        let tp = TopicPartition::new(ROUTED, p);
                        let end = log.watermarks(ROUTED, p).await?.high;
                        let done =
                            take_over(&log, &mut router, local, tp, end, &mut pipeline).await?;
                        taken.entry(p).or_default().routed = done;
                    }
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
                    taken.remove(p);
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
                let local = Local {
                    held: &restored,
                    partitions,
                };
                for record in &records {
                    next.insert(record.topic_partition(), record.offset + 1);
                    let partition = taken.get(&record.partition).copied().unwrap_or_default();
                    if record.offset < partition.done(&record.topic) {
                        // Processed when the partition was restored or taken over.
                        continue;
                    }
                    let mark = partition.mark;
                    if let Some(input) = input_of(&mut router, record, mark) {
                        handle(&mut router, input, now, local, &mut outputs);
                    }
                }
                let acknowledgement = submit_outputs(&log, partitions, outputs).await?;
                pipeline.push(acknowledgement, next);
            }
            Err(LogError::Closed) => break,
            Err(e) => {
                tracing::warn!(error = %e, "router consumer failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    pipeline.drain(consumer.as_mut()).await?;
    if let Err(e) = consumer.close().await {
        tracing::debug!(error = %e, "closing the router consumer");
    }
    tracing::info!("router stopped");
    Ok(())
}

/// What restoring and taking over a partition covered: the consumer skips the records
/// before these offsets when it delivers them.
#[derive(Debug, Clone, Copy, Default)]
struct Taken {
    /// The end of `sessions` when the partition was restored: the router's own presence
    /// records before it were written by an earlier run and are folded in; the later
    /// ones were applied when they were written.
    mark: Offset,
    /// How far `sessions` and `routed` were taken over (processed as inputs).
    sessions: Offset,
    routed: Offset,
    /// How far `accounts` was folded.
    accounts: Offset,
}

impl Taken {
    /// Where the consumer's records of `topic` in the partition start to count.
    fn done(&self, topic: &str) -> Offset {
        match topic {
            SESSIONS => self.sessions,
            ROUTED => self.routed,
            ACCOUNTS => self.accounts,
            _ => 0,
        }
    }
}

/// Whether this router handles the stanzas it forwards at once: when the topics have a
/// single partition and the router holds it, taken over (its earlier `routed` records
/// processed).
#[derive(Clone, Copy)]
struct Local<'a> {
    held: &'a BTreeSet<Partition>,
    partitions: i32,
}

impl Local<'_> {
    fn at_once(&self) -> bool {
        self.partitions == 1 && self.held.contains(&0)
    }
}

/// How many times in a row a stanza's outputs are handled at once (a message, then an
/// error bounced to its sender, then …); deeper chains go through `routed`.
const MAX_LOCAL_HOPS: u8 = 8;

/// Runs the router on `input`, and at once on every stanza it forwards when `local`
/// says so; appends the outputs to `outputs` in order.
fn handle(
    router: &mut Router,
    input: Input,
    now: Timestamp,
    local: Local<'_>,
    outputs: &mut Vec<Output>,
) {
    // The queue allocates only when a stanza is handled at once.
    let mut next = Some((input, 0u8));
    let mut queued = VecDeque::new();
    while let Some((input, hops)) = next.take().or_else(|| queued.pop_front()) {
        for output in router.handle(input, now) {
            match output {
                Output::Route(stanza) if hops < MAX_LOCAL_HOPS && local.at_once() => {
                    queued.push_back((Input::Inbound(stanza), hops + 1));
                }
                output => outputs.push(output),
            }
        }
    }
}

/// Processes the records of `tp` (an input topic's partition just assigned) that the
/// group has not committed, up to `end`, before anything else of the partition: for
/// `sessions`, who is online as an earlier run left it; for `routed`, the stanzas an
/// earlier run or another router forwarded to it, which come before anything forwarded
/// to it from now on. Their outputs go through the pipeline like a batch's. Returns the
/// offset they were processed to.
async fn take_over(
    log: &Arc<dyn Log>,
    router: &mut Router,
    local: Local<'_>,
    tp: TopicPartition,
    end: Offset,
    pipeline: &mut Pipeline,
) -> Result<Offset, RouterError> {
    let start = match log.committed(GROUP, &tp).await? {
        Some(offset) if offset >= end => return Ok(end),
        Some(offset) => StartAt::Offset(offset),
        None => StartAt::Earliest,
    };
    let mark = if &*tp.topic == SESSIONS { end } else { 0 };
    let mut reader = log.reader(&tp.topic, tp.partition, start).await?;
    let mut count = 0usize;
    while let Some(records) = read_before(reader.as_mut(), end).await? {
        let now = Timestamp::now();
        let mut outputs = Vec::new();
        let mut next = reader.position();
        for record in records {
            next = record.offset + 1;
            count += 1;
            if let Some(input) = input_of(router, &record, mark) {
                handle(router, input, now, local, &mut outputs);
            }
        }
        let acknowledgement = submit_outputs(log, local.partitions, outputs).await?;
        pipeline.push(acknowledgement, HashMap::from([(tp.clone(), next)]));
        pipeline.wait_room().await?;
    }
    if count > 0 {
        tracing::info!(
            topic = %tp.topic,
            partition = tp.partition,
            records = count,
            "uncommitted records of a partition taken over processed"
        );
    }
    let reached = reader.position();
    if reached < end {
        // The consumer delivers the rest, later than they belong but none skipped.
        tracing::warn!(
            topic = %tp.topic,
            partition = tp.partition,
            reached,
            end,
            "could not read the uncommitted records of a partition taken over to their end"
        );
        return Ok(reached);
    }
    Ok(end)
}

/// The next records of `reader` before offset `until` ([`imbus_log::read_before`]).
async fn read_before(
    reader: &mut dyn PartitionReader,
    until: Offset,
) -> Result<Option<Vec<ConsumedRecord>>, LogError> {
    imbus_log::read_before(reader, until, 1024, imbus_log::READ_STALL_LIMIT).await
}

/// Batches whose outputs were submitted and not yet acknowledged: more than this and the
/// router stops consuming until the log catches up.
const MAX_IN_FLIGHT: usize = 64;

/// While batches keep coming, input offsets are committed at most this often (a crash
/// redoes what was not committed; outputs carry derived ids so a repeat is recognised).
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

type Acked =
    Pin<Box<dyn Future<Output = Result<HashMap<TopicPartition, Offset>, LogError>> + Send>>;

/// The router's output pipeline: a batch's outputs are submitted to the log in order and
/// the router goes on with the next batch while they are made durable; the inputs of a
/// batch are committed only after its outputs are acknowledged, oldest first.
#[derive(Default)]
struct Pipeline {
    in_flight: FuturesOrdered<Acked>,
    /// Acknowledged and not yet committed: the next offset per input partition.
    ready: HashMap<TopicPartition, Offset>,
    /// The offsets this router committed, so none moves back: the consumer still
    /// delivers (and the router skips) the `routed` records a take-over processed, after
    /// the take-over's own offsets were committed.
    committed: HashMap<TopicPartition, Offset>,
    last_commit: Option<std::time::Instant>,
    /// The commit being stored: the router goes on routing meanwhile (a commit waits for
    /// an fsync, and routing nothing for that long was the tail of message latency).
    committing: CommitInFlight,
}

impl Pipeline {
    fn push(
        &mut self,
        acknowledgement: Option<Acknowledgement>,
        next: HashMap<TopicPartition, Offset>,
    ) {
        self.in_flight.push_back(Box::pin(async move {
            if let Some(acknowledgement) = acknowledgement {
                acknowledgement.await?;
            }
            Ok(next)
        }));
    }

    fn acknowledged(&mut self, next: HashMap<TopicPartition, Offset>) {
        for (tp, offset) in next {
            let slot = self.ready.entry(tp).or_insert(offset);
            *slot = (*slot).max(offset);
        }
    }

    /// Takes the acknowledgements that arrived, waiting for the oldest batch only while
    /// too many are in flight, and commits when due, or at once when the router is idle
    /// and nothing is left in flight.
    async fn settle(&mut self, consumer: &mut dyn Consumer, idle: bool) -> Result<(), LogError> {
        self.wait_room().await?;
        while let Some(Some(acked)) = self.in_flight.next().now_or_never() {
            self.acknowledged(acked?);
        }
        if ((idle && self.in_flight.is_empty()) || self.commit_due())
            && self.committing.settled()?
        {
            self.commit(consumer).await?;
        }
        Ok(())
    }

    /// Whether acknowledgements or a commit are still to come.
    fn busy(&self) -> bool {
        !self.in_flight.is_empty() || self.committing.is_pending()
    }

    /// Waits for the oldest batches while too many are in flight.
    async fn wait_room(&mut self) -> Result<(), LogError> {
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            match self.in_flight.next().await {
                Some(acked) => self.acknowledged(acked?),
                None => break,
            }
        }
        Ok(())
    }

    fn commit_due(&self) -> bool {
        self.last_commit
            .is_none_or(|at| at.elapsed() >= COMMIT_INTERVAL)
    }

    /// Starts committing what was acknowledged, for the partitions the consumer still
    /// holds (the new owner of another one redoes its uncommitted inputs); no commit may
    /// be under way.
    async fn commit(&mut self, consumer: &mut dyn Consumer) -> Result<(), LogError> {
        if self.ready.is_empty() {
            return Ok(());
        }
        let assigned: BTreeSet<TopicPartition> = consumer.assignment().into_iter().collect();
        let committed = &self.committed;
        let offsets: Vec<_> = self
            .ready
            .drain()
            .filter(|(tp, offset)| {
                assigned.contains(tp) && committed.get(tp).is_none_or(|done| offset > done)
            })
            .collect();
        self.last_commit = Some(std::time::Instant::now());
        if offsets.is_empty() {
            return Ok(());
        }
        self.committing
            .start(consumer.start_commit(&offsets).await?);
        self.committed.extend(offsets);
        Ok(())
    }

    /// Waits for every batch in flight and commits, until the commit is stored.
    async fn drain(&mut self, consumer: &mut dyn Consumer) -> Result<(), LogError> {
        while let Some(acked) = self.in_flight.next().await {
            self.acknowledged(acked?);
        }
        self.committing.finish().await?;
        self.commit(consumer).await?;
        self.committing.finish().await
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("in_flight", &self.in_flight.len())
            .field("ready", &self.ready)
            .field("committing", &self.committing)
            .finish()
    }
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

/// Rebuilds the state of one partition: the whole rosters, accounts, userdata and
/// offline changelogs, and `sessions` up to the group's committed offset (the rest is
/// taken over as inputs). Returns the offset `accounts` was folded to.
async fn restore(
    log: &dyn Log,
    router: &mut Router,
    partition: Partition,
) -> Result<Offset, LogError> {
    let mut counts = [0usize; 5];
    let mut accounts_done = 0;
    for (i, topic) in [ROSTERS, SESSIONS, ACCOUNTS, USERDATA, OFFLINE]
        .into_iter()
        .enumerate()
    {
        let until = if topic == SESSIONS {
            // Bound and closed records are inputs: the rest comes from the consumer.
            match log
                .committed(GROUP, &TopicPartition::new(topic, partition))
                .await?
            {
                Some(offset) => offset,
                None => continue,
            }
        } else {
            // The router alone writes rosters, user data and offline messages; account
            // records are state only (an account created just before a restart is known
            // before any stanza to it is routed, and the consumer skips them): all are
            // folded to their end.
            log.watermarks(topic, partition).await?.high
        };
        if until == 0 {
            continue;
        }
        let mut reader = log.reader(topic, partition, StartAt::Earliest).await?;
        while let Some(records) = read_before(reader.as_mut(), until).await? {
            for record in records {
                counts[i] += 1;
                apply_changelog(router, topic, &record);
            }
        }
        if topic == ACCOUNTS {
            accounts_done = reader.position().min(until);
        }
        if reader.position() < until {
            tracing::warn!(
                topic,
                partition,
                reached = reader.position(),
                until,
                "could not read a changelog to its end while restoring a partition"
            );
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
    Ok(accounts_done)
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
    while let Some(records) = read_before(reader.as_mut(), until).await? {
        for record in records {
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

/// Submits the outputs of a batch to the log, in order; returns once they are submitted,
/// with the acknowledgement to wait for before the batch's inputs may be committed.
async fn submit_outputs(
    log: &Arc<dyn Log>,
    partitions: i32,
    outputs: Vec<Output>,
) -> Result<Option<Acknowledgement>, RouterError> {
    if outputs.is_empty() {
        return Ok(None);
    }
    let mut routed = Vec::new();
    let mut to_rooms: Vec<Submission> = Vec::new();
    let mut compliance = Vec::new();
    let mut archive = Vec::new();
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
                let partition = partition_for_key(jid.bare().as_str().as_bytes(), partitions);
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
            Output::Archive(entry) => {
                let key = entry.owner.as_str().to_owned();
                archive.push(Record::new(key, encode(Event::Archived(entry))?));
            }
            Output::ArchiveQuery(query) => {
                let key = query.owner().as_str().to_owned();
                archive.push(Record::new(key, encode(Event::StanzaReceived(query))?));
            }
            Output::ToRooms { key, stanza } => {
                to_rooms.push(Submission::keyed(
                    ROOMS_STANZAS,
                    Record::new(key, encode(Event::from(stanza))?),
                ));
            }
            Output::SessionClosedToRooms(closed) => {
                let key = closed.jid.as_str().to_owned();
                let value = encode(Event::Session(SessionEvent::Closed(closed)))?;
                let rooms_partitions = log.partition_count(ROOMS_STANZAS).await?;
                for partition in 0..rooms_partitions {
                    to_rooms.push(Submission::to_partition(
                        ROOMS_STANZAS,
                        partition,
                        Record::new(key.clone(), value.clone()),
                    ));
                }
            }
            Output::SessionGone(jid) => {
                let partition = partition_for_key(jid.bare().as_str().as_bytes(), partitions);
                keyed.push((SESSIONS, partition, Record::tombstone(presence_key(&jid))));
            }
        }
    }
    // Written in this order: state changes first (once a delivery is visible its cause
    // is on the changelogs), compliance records before the deliveries (an IM a client
    // has seen is archived), archive entries, then forwarded stanzas and deliveries.
    let mut submissions: Vec<Submission> = keyed
        .into_iter()
        .map(|(topic, partition, record)| Submission::to_partition(topic, partition, record))
        .collect();
    submissions.extend(
        compliance
            .into_iter()
            .map(|record| Submission::keyed(COMPLIANCE, record)),
    );
    // Archive entries and queries in output order: a query follows every entry written
    // before it on the owner's partition.
    submissions.extend(
        archive
            .into_iter()
            .map(|record| Submission::keyed(ARCHIVE, record)),
    );
    submissions.extend(
        routed
            .into_iter()
            .map(|record| Submission::keyed(ROUTED, record)),
    );
    // Stanzas for the rooms and session ends, in output order.
    submissions.extend(to_rooms);
    for (topic, records) in deliveries {
        match log.partition_count(&topic).await {
            Ok(_) => submissions.extend(
                records
                    .into_iter()
                    .map(|record| Submission::keyed(topic.clone(), record)),
            ),
            Err(LogError::UnknownTopic(_)) => {
                tracing::warn!(
                    topic,
                    "deliveries for a gateway that has no delivery topic; dropped"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    if retired.is_empty() {
        if submissions.is_empty() {
            return Ok(None);
        }
        // Every output is made again from the same inputs while they are not committed;
        // with a changelog record among them the log stores them before acknowledging.
        return Ok(Some(log.submit_derived(submissions).await?));
    }
    // Retired offline messages go in a second submission, made once the first (their
    // deliveries) is acknowledged: across partitions a broker may make a later record
    // durable before an earlier one.
    let retired: Vec<Submission> = retired
        .into_iter()
        .map(|(topic, partition, record)| Submission::to_partition(topic, partition, record))
        .collect();
    let first = if submissions.is_empty() {
        None
    } else {
        Some(log.submit(submissions).await?)
    };
    let log = Arc::clone(log);
    Ok(Some(Box::pin(async move {
        if let Some(first) = first {
            first.await?;
        }
        log.submit(retired).await?.await
    })))
}

fn is_void(change: &RosterChanged) -> bool {
    change.subscription == imbus_core::Subscription::Remove
        && change.pending_in.is_none()
        && !change.approved
        && !change.ask_out
}
