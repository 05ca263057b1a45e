//! The process's Prometheus registry.

use std::sync::Mutex;

use imbus_log_embedded::EmbeddedLog;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, Opts, Registry};

/// Creates the registry with the process metrics, `imbus_build_info` and, on the
/// embedded log, the log's own counters.
pub fn registry(backend: &str, embedded: Option<EmbeddedLog>) -> anyhow::Result<Registry> {
    let registry = Registry::new();
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let info = IntGauge::with_opts(
        Opts::new(
            "imbus_build_info",
            "imbus version and log backend (always 1)",
        )
        .const_label("version", env!("CARGO_PKG_VERSION"))
        .const_label("backend", backend),
    )?;
    info.set(1);
    registry.register(Box::new(info))?;
    if let Some(log) = embedded {
        registry.register(Box::new(EmbeddedLogCollector::new(log)?))?;
    }
    Ok(registry)
}

/// Exposes [`EmbeddedLog::stats`] at scrape time.
struct EmbeddedLogCollector {
    log: EmbeddedLog,
    counters: [IntCounter; 6],
    last_batch: IntGauge,
    unsynced_derived: IntGauge,
    seen: Mutex<[u64; 6]>,
}

impl EmbeddedLogCollector {
    fn new(log: EmbeddedLog) -> anyhow::Result<Self> {
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        Ok(Self {
            log,
            counters: [
                counter(
                    "imbus_log_appended_records_total",
                    "Records appended to the embedded log",
                )?,
                counter(
                    "imbus_log_appended_bytes_total",
                    "Bytes of record frames written to the embedded log",
                )?,
                counter(
                    "imbus_log_fsyncs_total",
                    "fdatasync calls of the embedded log",
                )?,
                counter(
                    "imbus_log_group_commits_total",
                    "Group commits (batches made durable) of the embedded log",
                )?,
                counter(
                    "imbus_log_write_batches_total",
                    "Write batches of the embedded log's writer",
                )?,
                counter(
                    "imbus_log_writer_handoffs_total",
                    "Times an appender of the embedded log, after writing batches for others while more kept coming, left the queue to the writer thread",
                )?,
            ],
            last_batch: IntGauge::new(
                "imbus_log_last_batch_records",
                "Records in the embedded log's most recent write batch",
            )?,
            unsynced_derived: IntGauge::new(
                "imbus_log_unsynced_derived_files",
                "Embedded log files holding processors' outputs that wait for their fsync (at the next offset commit, within 1 s)",
            )?,
            seen: Mutex::new([0; 6]),
        })
    }
}

impl Collector for EmbeddedLogCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d: Vec<&Desc> = self.counters.iter().flat_map(|c| c.desc()).collect();
        d.extend(self.last_batch.desc());
        d.extend(self.unsynced_derived.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.log.stats();
        let now = [
            s.appended_records,
            s.appended_bytes,
            s.fsyncs,
            s.sync_batches,
            s.write_batches,
            s.writer_handoffs,
        ];
        if let Ok(mut seen) = self.seen.lock() {
            for (i, counter) in self.counters.iter().enumerate() {
                counter.inc_by(now[i].saturating_sub(seen[i]));
                seen[i] = seen[i].max(now[i]);
            }
        }
        self.last_batch
            .set(i64::try_from(s.last_batch_records).unwrap_or(i64::MAX));
        let mut out: Vec<MetricFamily> = self.counters.iter().flat_map(|c| c.collect()).collect();
        self.unsynced_derived
            .set(i64::try_from(s.unsynced_derived_files).unwrap_or(i64::MAX));
        out.extend(self.last_batch.collect());
        out.extend(self.unsynced_derived.collect());
        out
    }
}
