//! The connector's Prometheus metrics.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Health and throughput of the room-archive connector. Cloning shares the metrics.
#[derive(Debug, Clone)]
pub struct ArchiveMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    up: IntGauge,
    messages: IntCounter,
    room_changes: IntCounter,
    refused: IntCounter,
    queries: IntCounterVec,
    db_errors: IntCounter,
}

impl ArchiveMetrics {
    /// New metrics; `database` (the URL without password) labels the health gauge so an
    /// alarm names the database.
    pub fn new(database: &str) -> Result<ArchiveMetrics, prometheus::Error> {
        Ok(ArchiveMetrics {
            inner: Arc::new(Inner {
                up: IntGauge::with_opts(
                    Opts::new(
                        "imbus_room_archive_up",
                        "1 while the persistent chat database accepts writes, 0 while it is unreachable or failing (rooms keep working; the archive catches up when it is back)",
                    )
                    .const_label("database", database),
                )?,
                messages: IntCounter::new(
                    "imbus_room_archive_messages_total",
                    "Room messages written to TC_MSGARCHIVE (including redeliveries already there)",
                )?,
                room_changes: IntCounter::new(
                    "imbus_room_archive_room_changes_total",
                    "Persistent room changes written to TC_ROOMS and TC_USERS",
                )?,
                refused: IntCounter::new(
                    "imbus_room_archive_refused_total",
                    "Records the database refused (they stay on the log; the log names them)",
                )?,
                queries: IntCounterVec::new(
                    Opts::new(
                        "imbus_room_archive_queries_total",
                        "Archive queries to rooms, by outcome (answered, refused, unavailable, expired)",
                    ),
                    &["outcome"],
                )?,
                db_errors: IntCounter::new(
                    "imbus_room_archive_database_errors_total",
                    "Failed attempts to reach or write the persistent chat database",
                )?,
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

    pub(crate) fn written(&self, messages: usize, rooms: usize) {
        self.inner.messages.inc_by(messages as u64);
        self.inner.room_changes.inc_by(rooms as u64);
    }

    /// Room messages written.
    pub fn messages(&self) -> u64 {
        self.inner.messages.get()
    }

    pub(crate) fn refused(&self) {
        self.inner.refused.inc();
    }

    /// Records the database refused.
    pub fn refused_records(&self) -> u64 {
        self.inner.refused.get()
    }

    pub(crate) fn query(&self, outcome: &str) {
        self.inner.queries.with_label_values(&[outcome]).inc();
    }

    /// Queries with this outcome.
    pub fn queries(&self, outcome: &str) -> u64 {
        self.inner.queries.with_label_values(&[outcome]).get()
    }

    pub(crate) fn db_error(&self) {
        self.inner.db_errors.inc();
    }

    /// Failed database attempts.
    pub fn database_errors(&self) -> u64 {
        self.inner.db_errors.get()
    }
}

impl Collector for ArchiveMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let i = &self.inner;
        let mut d = Vec::new();
        d.extend(i.up.desc());
        d.extend(i.messages.desc());
        d.extend(i.room_changes.desc());
        d.extend(i.refused.desc());
        d.extend(i.queries.desc());
        d.extend(i.db_errors.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let i = &self.inner;
        let mut out = Vec::new();
        out.extend(i.up.collect());
        out.extend(i.messages.collect());
        out.extend(i.room_changes.collect());
        out.extend(i.refused.collect());
        out.extend(i.queries.collect());
        out.extend(i.db_errors.collect());
        out
    }
}
