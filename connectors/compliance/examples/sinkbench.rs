//! Benchmark of the compliance sink: how many archive rows per second it commits into a
//! database, and the lag from a compliance record's append to its committed row.
//!
//! ```sh
//! cargo run --release -p imbus-connector-compliance --example sinkbench -- --help
//! cargo run --release -p imbus-connector-compliance --example sinkbench -- --backend postgres
//! ```
//!
//! Each phase runs on a fresh embedded log (fsync always, 4 partitions, as `imbus serve`)
//! and a fresh database of its own (created next to `IMBUS_TEST_POSTGRES_URL` /
//! `IMBUS_TEST_MYSQL_URL`, default the local servers, dropped afterwards):
//!
//! 1. **Throughput**: `--records` one-to-one compliance records are appended first, then
//!    the sink starts and archives them; rows/s is records over the time from the sink's
//!    start to its last commit.
//! 2. **Lag**: the sink runs while an open-loop generator appends `--rate` records/s for
//!    `--seconds` (whatever the sink does); for every record the time from its append
//!    (the log's timestamp, in milliseconds) to the database commit of its row goes into a
//!    histogram.
//!
//! Records look like the router's: recipient-keyed, a 100-byte body, the full stanza, a
//! thread id, spread over 1,000 recipients.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use common::{TestDb, record};
use hdrhistogram::Histogram;
use imbus_connector_compliance::settings::Backend;
use imbus_connector_compliance::{SinkOptions, SinkSettings};
use imbus_core::{Direction, MessageType};
use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Db {
    Postgres,
    Mysql,
    Sqlite,
}

#[derive(Debug, Parser)]
#[command(about = "Rows/s and append-to-commit lag of the imbus compliance sink")]
struct Args {
    /// The database to archive into.
    #[arg(long, value_enum, default_value_t = Db::Postgres)]
    backend: Db,
    /// Records appended before the sink starts (throughput phase; 0 skips it).
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Open-loop append rate of the lag phase, records/s (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Duration of the lag phase.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Most records per database transaction.
    #[arg(long, default_value_t = SinkOptions::default().max_batch)]
    max_batch: usize,
}

/// The allocator of `imbus serve`, which runs the sink.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECIPIENTS: u64 = 1_000;

fn records(from: u64, count: u64) -> Vec<imbus_core::ComplianceRecord> {
    let body: String = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore".to_owned();
    (from..from + count)
        .map(|n| {
            record(
                u128::from(n) + 1,
                &format!("user{}@example.com", n % RECIPIENTS),
                MessageType::Chat,
                Direction::Inbound,
                &body,
            )
        })
        .collect()
}

fn backend(db: Db) -> Backend {
    match db {
        Db::Postgres => Backend::Postgres,
        Db::Mysql => Backend::MySql,
        Db::Sqlite => Backend::Sqlite,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    println!(
        "sinkbench: backend {:?}, max batch {}, load average {}",
        args.backend,
        args.max_batch,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if args.records > 0 {
        throughput(&args).await;
    }
    if args.rate > 0 {
        lag(&args).await;
    }
}

fn options(
    args: &Args,
    committed: Arc<AtomicU64>,
    lags: Option<Arc<Mutex<Histogram<u64>>>>,
) -> SinkOptions {
    SinkOptions {
        max_batch: args.max_batch,
        after_database_commit: Some(Arc::new(move |batch| {
            let now = now_ms();
            if let Some(lags) = &lags {
                let mut lags = lags.lock();
                for r in batch {
                    let _ = lags.record(u64::try_from(now - r.timestamp).unwrap_or(0));
                }
            }
            committed.fetch_add(batch.len() as u64, Ordering::SeqCst);
        })),
        ..SinkOptions::default()
    }
}

async fn throughput(args: &Args) {
    let db = TestDb::new(backend(args.backend)).await;
    let (log, _dir) = common::log().await;
    let mut n = 0;
    while n < args.records {
        let chunk = (args.records - n).min(5_000);
        common::append(&*log, &records(n, chunk)).await;
        n += chunk;
    }
    let committed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let sink = common::start_sink(
        &log,
        &db.url,
        SinkSettings::default(),
        options(args, committed.clone(), None),
    );
    while committed.load(Ordering::SeqCst) < args.records {
        assert!(
            started.elapsed() < Duration::from_secs(1_800),
            "the sink archived only {} of {} records in 30 minutes",
            committed.load(Ordering::SeqCst),
            args.records
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    sink.stop().await;
    let rows = db.rows().await.len() as u64;
    println!(
        "THROUGHPUT records={} rows={rows} seconds={:.2} rows_per_s={:.0}",
        args.records,
        elapsed.as_secs_f64(),
        args.records as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(rows, args.records, "rows in the database");
    log.shutdown().await.expect("close the log");
    db.drop_database().await;
}

async fn lag(args: &Args) {
    let db = TestDb::new(backend(args.backend)).await;
    let (log, _dir) = common::log().await;
    let committed = Arc::new(AtomicU64::new(0));
    let lags = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 600_000, 3).expect("histogram bounds"),
    ));
    let sink = common::start_sink(
        &log,
        &db.url,
        SinkSettings::default(),
        options(args, committed.clone(), Some(lags.clone())),
    );
    // Let the sink create its tables and join before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = args.rate * args.seconds;
    let started = Instant::now();
    let mut sent = 0;
    let mut appends = tokio::task::JoinSet::new();
    while sent < total {
        let due = (started.elapsed().as_secs_f64() * args.rate as f64) as u64;
        let due = due.min(total);
        if due > sent {
            let batch = records(1_000_000_000 + sent, due - sent);
            let log = log.clone();
            appends.spawn(async move { common::append(&*log, &batch).await });
            sent = due;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while appends.join_next().await.is_some() {}
    let sending = started.elapsed();
    while committed.load(Ordering::SeqCst) < total {
        assert!(
            started.elapsed() < Duration::from_secs(args.seconds + 600),
            "the sink archived only {} of {total} records",
            committed.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = started.elapsed();
    sink.stop().await;
    let h = lags.lock().clone();
    println!(
        "LAG rate={} records={total} send_seconds={:.2} drained_after={:.2} p50_ms={} p99_ms={} p99.9_ms={} max_ms={}",
        args.rate,
        sending.as_secs_f64(),
        drained.as_secs_f64(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    log.shutdown().await.expect("close the log");
    db.drop_database().await;
}
