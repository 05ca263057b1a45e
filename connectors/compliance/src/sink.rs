//! The consume loop: a member of the consumer group `compliance-sink` on the
//! `compliance` topic. For every batch it writes the rows in one database transaction,
//! sends what cannot be archived to `compliance.dead`, and only then commits the offsets.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imbus_config::topics::{COMPLIANCE, COMPLIANCE_DEAD};
use imbus_core::Event;
use imbus_log::{
    ConsumedRecord, Consumer, ConsumerEvent, ConsumerOptions, Log, LogError, Offset, Record,
    StartAt, TopicPartition,
};
use tokio::sync::watch;

use crate::db::{Database, DbError, Written};
use crate::dead::dead_letter;
use crate::metrics::SinkMetrics;
use crate::row::{Decision, RecordIds, Row, decide};
use crate::settings::SinkSettings;

/// While a small batch waits for more records (`compliance.batch_wait`), the sink looks
/// for them this often.
const GATHER_SLICE: Duration = Duration::from_millis(10);

/// The consumer group of compliance sinks.
pub const GROUP: &str = "compliance-sink";

/// Why the sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("compliance database: {0}")]
    Database(DbError),
    /// [`SinkOptions::stop_after_database_commit`] asked the sink to stop.
    #[error("stopped at the crash point after a database commit")]
    CrashPoint,
}

/// A test hook: called after each batch's database commit, before its offsets are
/// committed; returning true stops the sink there, as a process dying at that point.
pub type CrashPoint = Arc<dyn Fn() -> bool + Send + Sync>;

/// An observer told of every batch right after its database commit (before its offsets
/// are committed), with the batch's records: benchmarks measure the lag from a record's
/// log timestamp to its committed row with it.
pub type CommitObserver = Arc<dyn Fn(&[ConsumedRecord]) + Send + Sync>;

/// How the sink runs.
#[derive(Clone)]
pub struct SinkOptions {
    /// The consumer group ([`GROUP`]).
    pub group: String,
    /// The most records taken from the log at once.
    pub max_batch: usize,
    /// How many transactions a batch is written in at once, over as many pooled
    /// connections (PostgreSQL and MySQL; SQLite writes one at a time). Keep it at most the
    /// pool size.
    pub parallel_writes: usize,
    /// First wait after a database failure; doubled on each further failure…
    pub backoff_initial: Duration,
    /// …up to this.
    pub backoff_max: Duration,
    /// See [`CrashPoint`].
    pub stop_after_database_commit: Option<CrashPoint>,
    /// See [`CommitObserver`].
    pub after_database_commit: Option<CommitObserver>,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            group: GROUP.to_owned(),
            max_batch: 2_000,
            parallel_writes: 4,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            stop_after_database_commit: None,
            after_database_commit: None,
        }
    }
}

impl fmt::Debug for SinkOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkOptions")
            .field("group", &self.group)
            .field("max_batch", &self.max_batch)
            .field("parallel_writes", &self.parallel_writes)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field(
                "stop_after_database_commit",
                &self.stop_after_database_commit.is_some(),
            )
            .field(
                "after_database_commit",
                &self.after_database_commit.is_some(),
            )
            .finish()
    }
}

/// The sink's state while running.
struct Sink {
    log: Arc<dyn Log>,
    db: Database,
    /// The database URL without password, for logs.
    database: String,
    metrics: SinkMetrics,
    settings: watch::Receiver<SinkSettings>,
    shutdown: watch::Receiver<bool>,
    options: SinkOptions,
    /// Whether the last database attempt failed (to log the recovery once).
    failing: bool,
    /// The archive's record id cut-over, read once the schema is ready.
    ids: RecordIds,
    last_lag_update: Option<Instant>,
}

/// Runs the sink until `shutdown` turns true: creates or upgrades the archive tables
/// (waiting for the database as long as needed), then archives the `compliance` topic
/// from the group's committed offsets. The system topics must exist.
pub async fn run(
    log: Arc<dyn Log>,
    db: Database,
    database: String,
    metrics: SinkMetrics,
    settings: watch::Receiver<SinkSettings>,
    shutdown: watch::Receiver<bool>,
    options: SinkOptions,
) -> Result<(), SinkError> {
    let mut sink = Sink {
        log,
        db,
        database,
        metrics,
        settings,
        shutdown,
        options,
        failing: false,
        ids: RecordIds::ORDERED,
        last_lag_update: None,
    };
    let result = sink.run().await;
    sink.db.close().await;
    result
}

impl Sink {
    async fn run(&mut self) -> Result<(), SinkError> {
        self.metrics.set_up(false);
        if !self.prepare_schema().await {
            return Ok(());
        }
        let mut consumer = self
            .log
            .consumer(ConsumerOptions {
                start_if_uncommitted: StartAt::Earliest,
                max_batch: self.options.max_batch.max(1),
                ..ConsumerOptions::new(self.options.group.clone(), &[COMPLIANCE])
            })
            .await?;
        tracing::info!(database = %self.database, group = %self.options.group, "compliance sink running");
        let mut last_db_contact = Instant::now();
        // An assignment change met while a batch was being gathered: handled after it.
        let mut next: Option<ConsumerEvent> = None;
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let event = match next.take() {
                Some(event) => event,
                None => tokio::select! {
                    event = consumer.poll(Duration::from_secs(1)) => event?,
                    _ = self.shutdown.changed() => continue,
                },
            };
            match event {
                ConsumerEvent::Records(records) if records.is_empty() => {
                    let heartbeat = self.settings.borrow().heartbeat_interval;
                    if last_db_contact.elapsed() >= heartbeat {
                        last_db_contact = Instant::now();
                        match self.db.ping().await {
                            Ok(()) => self.healthy(),
                            Err(e) => self.unhealthy(&e, None),
                        }
                    }
                    self.update_lag(consumer.as_mut(), false).await;
                }
                ConsumerEvent::Records(mut records) => {
                    next = self.gather(consumer.as_mut(), &mut records).await?;
                    let Some(offsets) = self.archive(consumer.as_mut(), &records).await? else {
                        break;
                    };
                    last_db_contact = Instant::now();
                    if let Some(observe) = &self.options.after_database_commit {
                        observe(&records);
                    }
                    if let Some(crash) = &self.options.stop_after_database_commit
                        && crash()
                    {
                        // As a process dying here: no offset commit, no clean leave.
                        drop(consumer);
                        return Err(SinkError::CrashPoint);
                    }
                    match consumer.commit(&offsets).await {
                        Ok(()) => {}
                        Err(LogError::NotAssigned(tp)) => tracing::warn!(
                            partition = %tp,
                            "partition reassigned before its offsets were committed; its new owner archives those records again (idempotent)"
                        ),
                        Err(e) => return Err(e.into()),
                    }
                    self.metrics.set_oldest_pending(None);
                    self.update_lag(consumer.as_mut(), true).await;
                }
                ConsumerEvent::Assigned(tps) => {
                    tracing::info!(partitions = ?tps, "compliance sink assigned partitions");
                    self.update_lag(consumer.as_mut(), true).await;
                }
                ConsumerEvent::Revoked(tps) => {
                    tracing::info!(partitions = ?tps, "compliance sink lost partitions");
                }
            }
        }
        consumer.close().await?;
        tracing::info!("compliance sink stopped");
        Ok(())
    }

    /// Reads more records into `records` while the batch is smaller than the largest
    /// (`max_batch`), for at most `batch_wait`: one transaction of many rows costs the
    /// database far less per row than many small ones (commit, log pages, index pages
    /// shared by neighbouring rows). Returns an assignment change met meanwhile, to be
    /// handled after this batch. A poll here is never cancelled (a consumer may have
    /// moved its position when a cancelled poll is dropped); it lasts at most the wait.
    async fn gather(
        &mut self,
        consumer: &mut dyn Consumer,
        records: &mut Vec<ConsumedRecord>,
    ) -> Result<Option<ConsumerEvent>, SinkError> {
        let wait = self.settings.borrow().batch_wait;
        let max = self.options.max_batch.max(1);
        let deadline = Instant::now() + wait;
        while records.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || *self.shutdown.borrow() {
                break;
            }
            // Records accumulate on the log meanwhile: waking once per slice instead of
            // once per record costs the sink a few wake-ups per batch at any rate.
            tokio::time::sleep(left.min(GATHER_SLICE)).await;
            match consumer.poll(Duration::ZERO).await? {
                ConsumerEvent::Records(more) => records.extend(more),
                other => return Ok(Some(other)),
            }
        }
        Ok(None)
    }

    /// Creates or upgrades the tables, retrying while the database is unavailable.
    /// False when shut down first.
    async fn prepare_schema(&mut self) -> bool {
        let mut backoff = self.options.backoff_initial;
        loop {
            let ready = match self.db.migrate().await {
                Ok(()) => self.db.record_ids().await,
                Err(e) => Err(e),
            };
            match ready {
                Ok(ids) => {
                    self.ids = ids;
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
            tracing::info!(database = %self.database, "compliance database reachable again; archiving resumes");
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
            "compliance database unavailable; archiving paused (IMs are still delivered and kept on the compliance topic)"
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

    /// Archives one batch: rows to the database (one transaction), records that cannot be
    /// archived to `compliance.dead`. Returns the offsets to commit, or `None` when shut
    /// down before the batch was done (nothing is committed then).
    async fn archive(
        &mut self,
        consumer: &mut dyn Consumer,
        records: &[ConsumedRecord],
    ) -> Result<Option<Vec<(TopicPartition, Offset)>>, SinkError> {
        self.metrics
            .set_oldest_pending(records.iter().map(|r| r.timestamp).min());
        let settings = self.settings.borrow().clone();
        let mut rows: Vec<(usize, Row)> = Vec::new();
        let mut dead: Vec<Record> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            match decide_record(record, &settings, self.ids) {
                Decision::Archive(row) => rows.push((i, *row)),
                Decision::Skip(_) => self.metrics.skipped(),
                Decision::Reject(reason) => {
                    tracing::warn!(
                        partition = record.partition,
                        offset = record.offset,
                        reason,
                        "compliance record cannot be archived; sent to {COMPLIANCE_DEAD}"
                    );
                    dead.push(dead_letter(record, &reason));
                }
            }
        }

        let mut backoff = self.options.backoff_initial;
        loop {
            let all: Vec<&Row> = rows.iter().map(|(_, r)| r).collect();
            let outcome = match self
                .db
                .write_parallel(&all, self.options.parallel_writes)
                .await
            {
                Ok(written) => Ok((written, Vec::new())),
                Err(DbError::Rejected(reason)) => {
                    tracing::warn!(database = %self.database, error = %reason, rows = all.len(), "the compliance database refused a batch; writing its rows one by one to find the rejected ones");
                    self.write_one_by_one(&rows).await
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok((written, rejected)) => {
                    self.healthy();
                    self.metrics.written(&written);
                    for (i, reason) in rejected {
                        let record = &records[i];
                        tracing::warn!(database = %self.database, partition = record.partition, offset = record.offset, reason, "the compliance database refused a record; sent to {COMPLIANCE_DEAD}");
                        dead.push(dead_letter(
                            record,
                            &format!("refused by the database: {reason}"),
                        ));
                    }
                    break;
                }
                Err(e) => {
                    self.unhealthy(&e, Some(backoff));
                    // The lag keeps growing during an outage; keep measuring it.
                    self.update_lag(consumer, false).await;
                    if !self.pause(&mut backoff).await {
                        return Ok(None);
                    }
                }
            }
        }

        if !dead.is_empty() {
            let count = dead.len();
            let mut backoff = self.options.backoff_initial;
            loop {
                match self.log.append_batch(COMPLIANCE_DEAD, dead.clone()).await {
                    Ok(_) => break,
                    Err(LogError::Closed) => return Err(LogError::Closed.into()),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot append to {COMPLIANCE_DEAD}; retrying");
                        if !self.pause(&mut backoff).await {
                            return Ok(None);
                        }
                    }
                }
            }
            for _ in 0..count {
                self.metrics.dead_letter();
            }
        }

        let mut next: BTreeMap<TopicPartition, Offset> = BTreeMap::new();
        for r in records {
            let entry = next.entry(r.topic_partition()).or_insert(r.offset + 1);
            *entry = (*entry).max(r.offset + 1);
        }
        Ok(Some(next.into_iter().collect()))
    }

    /// Writes rows one per transaction, returning the rejected ones (by record index) with
    /// the database's reason. A transient failure aborts (the caller retries the batch;
    /// rows already written are recognised).
    async fn write_one_by_one(
        &self,
        rows: &[(usize, Row)],
    ) -> Result<(Written, Vec<(usize, String)>), DbError> {
        let mut total = Written::default();
        let mut rejected = Vec::new();
        for (i, row) in rows {
            match self.db.write(&[row]).await {
                Ok(w) => {
                    total.jm += w.jm;
                    total.tc_msgarchive += w.tc_msgarchive;
                    total.already_present += w.already_present;
                }
                Err(DbError::Rejected(reason)) => rejected.push((*i, reason)),
                Err(e) => return Err(e),
            }
        }
        Ok((total, rejected))
    }

    /// Measures the lag (records on the topic past the group's committed offsets), at
    /// most once a second unless `now`.
    async fn update_lag(&mut self, consumer: &mut dyn Consumer, now: bool) {
        if !now
            && self
                .last_lag_update
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_lag_update = Some(Instant::now());
        let mut lag = 0;
        for tp in consumer.assignment() {
            let Ok(marks) = self.log.watermarks(&tp.topic, tp.partition).await else {
                return;
            };
            let Ok(committed) = self.log.committed(&self.options.group, &tp).await else {
                return;
            };
            lag += marks.high - committed.unwrap_or(marks.low).max(marks.low);
        }
        self.metrics.set_lag_records(lag);
    }
}

/// What to do with one record of the `compliance` topic.
fn decide_record(record: &ConsumedRecord, settings: &SinkSettings, ids: RecordIds) -> Decision {
    let Some(value) = &record.value else {
        return Decision::Reject("record without a value".to_owned());
    };
    match imbus_schemas::decode(value) {
        Ok(Event::Compliance(c)) => decide(&c, settings, ids),
        Ok(other) => Decision::Reject(format!(
            "not a ComplianceRecord but a {} event",
            imbus_schemas::EventSchema::of(&other).name()
        )),
        Err(e) => Decision::Reject(format!("cannot decode: {e}")),
    }
}
