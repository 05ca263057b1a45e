//! The sink's Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::db::Written;

/// Health, lag and throughput of the compliance sink. Cloning shares the metrics.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    up: IntGauge,
    lag_records: IntGauge,
    lag_seconds: Gauge,
    rows_written: IntCounterVec,
    already_present: IntCounter,
    dead_letters: IntCounter,
    skipped: IntCounter,
    db_errors: IntCounter,
    /// Log time (ms since the epoch) of the oldest record read but not yet archived; 0
    /// when everything read is archived.
    oldest_pending_ms: AtomicI64,
}

impl SinkMetrics {
    /// New metrics; `database` (the URL without password) labels the health gauge so an
    /// alarm names the database.
    pub fn new(database: &str) -> Result<SinkMetrics, prometheus::Error> {
        Ok(SinkMetrics {
            inner: Arc::new(Inner {
                up: IntGauge::with_opts(
                    Opts::new(
                        "imbus_compliance_sink_up",
                        "1 while the compliance database accepts writes, 0 while it is unreachable or failing (archiving paused)",
                    )
                    .const_label("database", database),
                )?,
                lag_records: IntGauge::new(
                    "imbus_compliance_lag_records",
                    "Records on the compliance topic not yet archived (committed) by the sink",
                )?,
                lag_seconds: Gauge::new(
                    "imbus_compliance_lag_seconds",
                    "Age of the oldest record the sink read but has not archived yet (0 when caught up)",
                )?,
                rows_written: IntCounterVec::new(
                    Opts::new(
                        "imbus_compliance_rows_written_total",
                        "Rows the sink added to the compliance database, by table",
                    ),
                    &["table"],
                )?,
                already_present: IntCounter::new(
                    "imbus_compliance_rows_already_present_total",
                    "Redelivered records whose row was already in the compliance database",
                )?,
                dead_letters: IntCounter::new(
                    "imbus_compliance_dead_letters_total",
                    "Records the sink could not archive, written to the compliance.dead topic",
                )?,
                skipped: IntCounter::new(
                    "imbus_compliance_records_skipped_total",
                    "Records not archived because of compliance.archive_inbound, archive_outbound or kinds",
                )?,
                db_errors: IntCounter::new(
                    "imbus_compliance_database_errors_total",
                    "Failed attempts to reach or write the compliance database",
                )?,
                oldest_pending_ms: AtomicI64::new(0),
            }),
        })
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.clone()))
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.inner.up.set(i64::from(up));
    }

    /// 1 while the database accepts writes.
    pub fn up(&self) -> i64 {
        self.inner.up.get()
    }

    pub(crate) fn set_lag_records(&self, lag: i64) {
        self.inner.lag_records.set(lag.max(0));
    }

    /// Records on the topic not yet archived, as last measured.
    pub fn lag_records(&self) -> i64 {
        self.inner.lag_records.get()
    }

    pub(crate) fn set_oldest_pending(&self, log_time_ms: Option<i64>) {
        self.inner
            .oldest_pending_ms
            .store(log_time_ms.unwrap_or(0), Ordering::Relaxed);
    }

    /// Age in seconds of the oldest record read but not archived.
    pub fn lag_seconds(&self) -> f64 {
        match self.inner.oldest_pending_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            oldest => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                (now.saturating_sub(oldest)).max(0) as f64 / 1000.0
            }
        }
    }

    pub(crate) fn written(&self, w: &Written) {
        self.inner
            .rows_written
            .with_label_values(&["JM"])
            .inc_by(w.jm);
        self.inner
            .rows_written
            .with_label_values(&["TC_MSGARCHIVE"])
            .inc_by(w.tc_msgarchive);
        self.inner.already_present.inc_by(w.already_present);
    }

    /// Rows added to a table (`JM` or `TC_MSGARCHIVE`).
    pub fn rows_written(&self, table: &str) -> u64 {
        self.inner.rows_written.with_label_values(&[table]).get()
    }

    /// Redelivered records found already archived.
    pub fn already_present(&self) -> u64 {
        self.inner.already_present.get()
    }

    pub(crate) fn dead_letter(&self) {
        self.inner.dead_letters.inc();
    }

    /// Records sent to `compliance.dead`.
    pub fn dead_letters(&self) -> u64 {
        self.inner.dead_letters.get()
    }

    pub(crate) fn skipped(&self) {
        self.inner.skipped.inc();
    }

    /// Records not archived because of the settings.
    pub fn skipped_records(&self) -> u64 {
        self.inner.skipped.get()
    }

    pub(crate) fn db_error(&self) {
        self.inner.db_errors.inc();
    }

    /// Failed database attempts.
    pub fn database_errors(&self) -> u64 {
        self.inner.db_errors.get()
    }
}

impl Collector for SinkMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let i = &self.inner;
        let mut d = Vec::new();
        d.extend(i.up.desc());
        d.extend(i.lag_records.desc());
        d.extend(i.lag_seconds.desc());
        d.extend(i.rows_written.desc());
        d.extend(i.already_present.desc());
        d.extend(i.dead_letters.desc());
        d.extend(i.skipped.desc());
        d.extend(i.db_errors.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let i = &self.inner;
        i.lag_seconds.set(self.lag_seconds());
        let mut out = Vec::new();
        out.extend(i.up.collect());
        out.extend(i.lag_records.collect());
        out.extend(i.lag_seconds.collect());
        out.extend(i.rows_written.collect());
        out.extend(i.already_present.collect());
        out.extend(i.dead_letters.collect());
        out.extend(i.skipped.collect());
        out.extend(i.db_errors.collect());
        out
    }
}
