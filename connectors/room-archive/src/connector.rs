//! The consume loop: a member of the consumer group `room-archive` on the `rooms`
//! changelog and the `rooms.archive` topic. Each batch of records becomes one database
//! transaction (room changes and messages); an archive query first has everything before
//! it written, then is answered from the database; offsets are committed only after the
//! transaction and the answers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imbus_archive::{QUERY_MAX_AGE, write_deliveries};
use imbus_config::topics::{ROOMS, ROOMS_ARCHIVE};
use imbus_core::{Delivery, Event, StanzaReceived, Timestamp, Uuid};
use imbus_log::{
    ConsumedRecord, ConsumerEvent, ConsumerOptions, Log, LogError, Offset, StartAt, TopicPartition,
};
use tokio::sync::watch;

use crate::convert::{Prepared, RoomTables, message_row, prepare};
use crate::db::{ArchiveDb, SearchError};
use crate::metrics::ArchiveMetrics;
use crate::model::Batch;
use imbus_connector_compliance::DbError;

/// The consumer group of room-archive connectors.
pub const GROUP: &str = "room-archive";

/// Why the connector stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The log failed.
    #[error("log: {0}")]
    Log(#[from] LogError),
    /// An answer could not be written.
    #[error("writing answers: {0}")]
    Answer(String),
}

/// How the connector runs.
#[derive(Debug, Clone)]
pub struct ConnectorOptions {
    /// The consumer group ([`GROUP`]).
    pub group: String,
    /// The most records taken from the log at once (one transaction).
    pub max_batch: usize,
    /// First wait after a database failure; doubled on each further failure…
    pub backoff_initial: Duration,
    /// …up to this.
    pub backoff_max: Duration,
}

impl Default for ConnectorOptions {
    fn default() -> Self {
        Self {
            group: GROUP.to_owned(),
            max_batch: 1_000,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

struct Connector {
    log: Arc<dyn Log>,
    db: ArchiveDb,
    database: String,
    metrics: ArchiveMetrics,
    heartbeat: watch::Receiver<Duration>,
    shutdown: watch::Receiver<bool>,
    options: ConnectorOptions,
    tables: RoomTables,
    /// Queries already answered (with "unavailable" during an outage) whose records are
    /// not committed yet: they are not answered twice.
    answered: HashSet<Uuid>,
    failing: bool,
}

/// Runs the connector until `shutdown` turns true: creates or upgrades the tables
/// (waiting for the database as long as needed), then follows `rooms` and
/// `rooms.archive` from the group's committed offsets. The system topics must exist.
/// `heartbeat` is how often an idle connector checks its database.
pub async fn run(
    log: Arc<dyn Log>,
    db: ArchiveDb,
    database: String,
    metrics: ArchiveMetrics,
    heartbeat: watch::Receiver<Duration>,
    shutdown: watch::Receiver<bool>,
    options: ConnectorOptions,
) -> Result<(), ConnectorError> {
    let mut connector = Connector {
        log,
        db,
        database,
        metrics,
        heartbeat,
        shutdown,
        options,
        tables: RoomTables::default(),
        answered: HashSet::new(),
        failing: false,
    };
    let result = connector.run().await;
    connector.db.close().await;
    result
}

fn decode(record: &ConsumedRecord) -> Option<Event> {
    let value = record.value.as_ref()?;
    match imbus_schemas::decode(value) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, error = %e, "undecodable record; not archived");
            None
        }
    }
}

/// At most this many records wait in memory while the database is unavailable; beyond
/// it, the connector stops reading until the database is back (the rest waits on the
/// log).
const MAX_PENDING: usize = 50_000;

/// What became of a batch.
enum Outcome {
    /// Written and answered: commit.
    Done,
    /// The database is unavailable: keep the records, try again later.
    Unavailable(DbError),
}

impl Connector {
    /// Reads, writes and answers until shut down. Records are taken from the log as
    /// they come; while the database is unavailable they are kept (up to
    /// [`MAX_PENDING`]), the queries among them are told so at once, and the whole lot is
    /// written, in order, when the database is back. The group's offsets move only past
    /// written records.
    async fn run(&mut self) -> Result<(), ConnectorError> {
        self.metrics.set_up(false);
        if !self.prepare_schema().await {
            return Ok(());
        }
        let mut consumer = self
            .log
            .consumer(ConsumerOptions {
                start_if_uncommitted: StartAt::Earliest,
                max_batch: self.options.max_batch.max(1),
                ..ConsumerOptions::new(self.options.group.clone(), &[ROOMS, ROOMS_ARCHIVE])
            })
            .await?;
        tracing::info!(database = %self.database, group = %self.options.group, "room-archive connector running");
        let mut last_db_contact = Instant::now();
        let mut pending: Vec<ConsumedRecord> = Vec::new();
        let mut backoff = self.options.backoff_initial;
        // While the database is unavailable: when to try again.
        let mut retry_at: Option<Instant> = None;
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let now = Instant::now();
            let wait = retry_at.map_or(Duration::from_secs(1), |at| {
                at.saturating_duration_since(now)
                    .min(Duration::from_secs(1))
            });
            let event = if pending.len() >= MAX_PENDING {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => None,
                    _ = self.shutdown.changed() => continue,
                }
            } else {
                tokio::select! {
                    event = consumer.poll(wait) => Some(event?),
                    _ = self.shutdown.changed() => continue,
                }
            };
            match event {
                Some(ConsumerEvent::Records(records)) => {
                    if retry_at.is_some() {
                        self.tell_unavailable(&records).await?;
                    }
                    pending.extend(records);
                }
                Some(ConsumerEvent::Assigned(tps)) => {
                    tracing::info!(partitions = ?tps, "room-archive connector assigned partitions");
                }
                Some(ConsumerEvent::Revoked(tps)) => {
                    tracing::info!(partitions = ?tps, "room-archive connector lost partitions");
                    // Their new owner writes those records; another connector may write
                    // those rooms meanwhile.
                    pending.retain(|r| !tps.contains(&r.topic_partition()));
                    self.tables.forget();
                }
                None => {}
            }
            if retry_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            if pending.is_empty() {
                let heartbeat = *self.heartbeat.borrow();
                if last_db_contact.elapsed() >= heartbeat {
                    last_db_contact = Instant::now();
                    match self.db.ping().await {
                        Ok(()) => self.healthy(),
                        Err(e) => self.unhealthy(&e, None),
                    }
                }
                continue;
            }
            last_db_contact = Instant::now();
            match self.process(&pending).await? {
                Outcome::Done => {
                    retry_at = None;
                    backoff = self.options.backoff_initial;
                    let mut next: HashMap<TopicPartition, Offset> = HashMap::new();
                    for r in &pending {
                        next.insert(r.topic_partition(), r.offset + 1);
                    }
                    let offsets: Vec<(TopicPartition, Offset)> = next.into_iter().collect();
                    match consumer.commit(&offsets).await {
                        Ok(()) => {}
                        Err(LogError::NotAssigned(tp)) => tracing::warn!(
                            partition = %tp,
                            "partition reassigned before its offsets were committed; its new owner archives those records again (idempotent)"
                        ),
                        Err(e) => return Err(e.into()),
                    }
                    pending.clear();
                    self.answered.clear();
                }
                Outcome::Unavailable(e) => {
                    self.tables.forget();
                    self.unhealthy(&e, Some(backoff));
                    self.tell_unavailable(&pending).await?;
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(self.options.backoff_max);
                }
            }
        }
        consumer.close().await?;
        tracing::info!("room-archive connector stopped");
        Ok(())
    }

    /// Creates or upgrades the tables, retrying while the database is unavailable.
    /// False when shut down first.
    async fn prepare_schema(&mut self) -> bool {
        let mut backoff = self.options.backoff_initial;
        loop {
            match self.db.migrate().await {
                Ok(()) => {
                    self.healthy();
                    return true;
                }
                Err(e) => {
                    self.unhealthy(&e, Some(backoff));
                    if !self.pause(&mut backoff).await {
                        return false;
                    }
                }
            }
        }
    }

    fn healthy(&mut self) {
        if self.failing {
            tracing::info!(database = %self.database, "persistent chat database reachable again; the room archive catches up");
            self.failing = false;
        }
        self.metrics.set_up(true);
    }

    fn unhealthy(&mut self, error: &DbError, retry_in: Option<Duration>) {
        self.failing = true;
        self.metrics.set_up(false);
        self.metrics.db_error();
        tracing::error!(
            database = %self.database,
            error = %error,
            retry_in_ms = retry_in.map(|d| d.as_millis() as u64),
            "persistent chat database unavailable; room archiving paused (rooms keep working, their messages wait on the log)"
        );
    }

    /// Waits `backoff` (then doubles it, capped). False when shut down meanwhile.
    async fn pause(&mut self, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(self.options.backoff_max);
        tokio::select! {
            _ = tokio::time::sleep(wait) => !*self.shutdown.borrow(),
            _ = self.shutdown.changed() => false,
        }
    }

    /// Writes and answers the records, in order: everything before a query is written
    /// before the query is answered. Queries already answered are skipped (the records
    /// are written again after an outage; rows already there stay as they are).
    async fn process(&mut self, records: &[ConsumedRecord]) -> Result<Outcome, ConnectorError> {
        let mut batch = Batch::default();
        for record in records {
            let at = Timestamp::from_micros(record.timestamp.saturating_mul(1000));
            if &*record.topic == ROOMS {
                let key = record
                    .key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                let change = match (&record.value, decode(record)) {
                    (None, _) => self.tables.change(&key, None, at),
                    (Some(_), Some(Event::RoomState(room))) => {
                        self.tables.change(&key, Some(&room), at)
                    }
                    (Some(_), _) => None,
                };
                batch.rooms.extend(change);
                continue;
            }
            match decode(record) {
                Some(Event::Archived(message)) => match message_row(&message, record.offset) {
                    Ok(row) => batch.messages.push(row),
                    Err(e) => {
                        self.metrics.refused();
                        tracing::warn!(partition = record.partition, offset = record.offset, error = %e, "room message not archived");
                    }
                },
                Some(Event::StanzaReceived(query)) => {
                    if let Err(e) = self.flush(&mut batch).await {
                        return Ok(Outcome::Unavailable(e));
                    }
                    self.answer(query).await?;
                }
                Some(_) => tracing::warn!(
                    partition = record.partition,
                    offset = record.offset,
                    "unexpected event on {ROOMS_ARCHIVE}; skipped"
                ),
                None => {}
            }
        }
        Ok(match self.flush(&mut batch).await {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Unavailable(e),
        })
    }

    /// Writes `batch` in one transaction (or, when the database refuses it for its
    /// content, change by change, leaving out what it refuses) and empties it.
    async fn flush(&mut self, batch: &mut Batch) -> Result<(), DbError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.db.write(batch).await {
            Err(DbError::Rejected(reason)) => {
                tracing::warn!(database = %self.database, error = %reason, changes = batch.len(), "the persistent chat database refused a batch; writing its changes one by one");
                self.write_one_by_one(batch).await?;
            }
            other => other?,
        }
        self.healthy();
        self.metrics
            .written(batch.messages.len(), batch.rooms.len());
        *batch = Batch::default();
        Ok(())
    }

    /// Writes each change of `batch` in its own transaction; a change the database
    /// refuses is logged, counted and left out (it stays on the log).
    async fn write_one_by_one(&mut self, batch: &Batch) -> Result<(), DbError> {
        let singles = batch
            .rooms
            .iter()
            .map(|r| Batch {
                rooms: vec![r.clone()],
                messages: Vec::new(),
            })
            .chain(batch.messages.iter().map(|m| Batch {
                rooms: Vec::new(),
                messages: vec![m.clone()],
            }));
        for single in singles {
            match self.db.write(&single).await {
                Ok(()) => {}
                Err(DbError::Rejected(reason)) => {
                    self.metrics.refused();
                    tracing::warn!(database = %self.database, error = %reason, change = ?single, "the persistent chat database refused a change; it stays on the log only");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Answers, with "unavailable", the queries among `records` not answered yet.
    async fn tell_unavailable(&mut self, records: &[ConsumedRecord]) -> Result<(), ConnectorError> {
        let mut out = Vec::new();
        for record in records.iter().filter(|r| &*r.topic == ROOMS_ARCHIVE) {
            let Some(Event::StanzaReceived(query)) = decode(record) else {
                continue;
            };
            if self.answered.contains(&query.event_id) || expired(&query) {
                continue;
            }
            self.answered.insert(query.event_id);
            self.metrics.query("unavailable");
            match prepare(query) {
                Prepared::Reply(d) => out.extend(d),
                Prepared::Search(p) => out.extend(p.failed(None)),
            }
        }
        self.deliver(out).await
    }

    /// Answers one archive query from the database.
    async fn answer(&mut self, query: StanzaReceived) -> Result<(), ConnectorError> {
        if self.answered.contains(&query.event_id) {
            return Ok(());
        }
        if expired(&query) {
            self.metrics.query("expired");
            tracing::info!(event = %query.event_id, "room archive query read too late to be answered; skipped");
            return Ok(());
        }
        self.answered.insert(query.event_id);
        let deliveries = match prepare(query) {
            Prepared::Reply(d) => {
                self.metrics.query("refused");
                d
            }
            Prepared::Search(p) => match self.db.search(&p.search).await {
                Ok(found) => {
                    self.healthy();
                    self.metrics.query("answered");
                    p.answer(found)
                }
                Err(SearchError::UnknownId(id)) => {
                    self.metrics.query("refused");
                    p.failed(Some(id))
                }
                Err(SearchError::Db(e)) => {
                    self.unhealthy(&e, None);
                    self.metrics.query("unavailable");
                    p.failed(None)
                }
            },
        };
        self.deliver(deliveries).await
    }

    async fn deliver(&self, deliveries: Vec<Delivery>) -> Result<(), ConnectorError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        write_deliveries(self.log.as_ref(), deliveries)
            .await
            .map_err(|e| ConnectorError::Answer(e.to_string()))
    }
}

/// Whether a query waited too long on the log for its client to still want the answer.
fn expired(query: &StanzaReceived) -> bool {
    Timestamp::now()
        .since(query.received_at)
        .is_some_and(|age| age > QUERY_MAX_AGE)
}
