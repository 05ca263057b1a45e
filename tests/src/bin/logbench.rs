//! Benchmark of an imbus log backend (embedded or Kafka), through the [`Log`] trait only,
//! so both backends run the same workload.
//!
//! (a) Durable append throughput: concurrent appenders (whole batches, and single-record
//!     appends), for 200-byte and 2 KB records.
//! (b) Append-to-consumer wake-up latency at a fixed open-loop rate: a generator thread
//!     issues appends on schedule whatever the log does, a consumer-group member measures
//!     the time from the append call to the poll that returned the record.
//!
//! `cargo run --release -p imbus-tests --bin logbench -- --help`
//!
//! With `--backend kafka` and no `--bootstrap`, a Tansu broker (SQLite storage) is started
//! for the run; that measures a correctness-grade broker, not Kafka. The Kafka defaults
//! (shorter runs, fewer tasks, 1,000 records/s latency rate) fit such a broker; every
//! option given on the command line overrides them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use imbus_log::{ConsumerEvent, ConsumerOptions, Log, LogError, Record, StartAt, TopicConfig};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions, FsyncPolicy};
use imbus_log_kafka::{KafkaLog, KafkaOptions};
use imbus_tests::tansu::TansuBroker;

type BenchError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// The in-process log on local disk.
    Embedded,
    /// A Kafka-protocol cluster (`--bootstrap`, else a Tansu broker started for the run).
    Kafka,
}

#[derive(Debug, Parser)]
#[command(
    about = "Throughput and wake-up latency of an imbus log backend",
    after_help = "Options without a value given use the default of the chosen backend \
                  (embedded / kafka)."
)]
struct Args {
    /// Which log backend to measure.
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    backend: Backend,
    /// Kafka only: `host:port` of an existing cluster (a Tansu broker is started when
    /// omitted).
    #[arg(long)]
    bootstrap: Option<String>,
    /// Embedded only: directory for the log (a fresh temporary directory when omitted).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Embedded only: fsync policy, always, never or interval:<ms> [default: always].
    #[arg(long, value_parser = FsyncPolicy::parse)]
    fsync: Option<FsyncPolicy>,
    /// What to run.
    #[arg(long, default_value = "all", value_parser = ["all", "throughput", "latency"])]
    mode: String,
    /// Seconds per throughput run [default: 5 / 3].
    #[arg(long)]
    seconds: Option<f64>,
    /// Record value sizes for the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "200,2048")]
    sizes: Vec<usize>,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Concurrent tasks calling append_batch [default: 32 / 4].
    #[arg(long)]
    batch_appenders: Option<usize>,
    /// Records per append_batch call [default: 256 / 64].
    #[arg(long)]
    batch: Option<usize>,
    /// Concurrent tasks calling append, one record per call [default: 2048 / 64].
    #[arg(long)]
    single_appenders: Option<usize>,
    /// Open-loop rate of the latency run, records per second [default: 50000 / 1000].
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds of the latency run, after a 1 s warm-up [default: 10 / 5].
    #[arg(long)]
    latency_seconds: Option<f64>,
    /// Record value size of the latency run (at least 16).
    #[arg(long, default_value_t = 200)]
    latency_size: usize,
}

/// The workload, with the backend's defaults filled in.
#[derive(Debug, Clone)]
struct Workload {
    seconds: f64,
    sizes: Vec<usize>,
    partitions: i32,
    batch_appenders: usize,
    batch: usize,
    single_appenders: usize,
    rate: u64,
    latency_seconds: f64,
    latency_size: usize,
}

impl Workload {
    fn from_args(args: &Args) -> Result<Self, BenchError> {
        let kafka = args.backend == Backend::Kafka;
        let pick = |given: Option<usize>, embedded: usize, kafka_default: usize| {
            given.unwrap_or(if kafka { kafka_default } else { embedded })
        };
        let workload = Workload {
            seconds: args.seconds.unwrap_or(if kafka { 3.0 } else { 5.0 }),
            sizes: args.sizes.clone(),
            partitions: args.partitions,
            batch_appenders: pick(args.batch_appenders, 32, 4),
            batch: pick(args.batch, 256, 64),
            single_appenders: pick(args.single_appenders, 2048, 64),
            rate: args.rate.unwrap_or(if kafka { 1_000 } else { 50_000 }),
            latency_seconds: args
                .latency_seconds
                .unwrap_or(if kafka { 5.0 } else { 10.0 }),
            latency_size: args.latency_size.max(16),
        };
        if !(workload.seconds > 0.0 && workload.latency_seconds > 0.0) {
            return Err("--seconds and --latency-seconds must be positive".into());
        }
        if workload.rate == 0 || workload.rate > 1_000_000_000 {
            return Err("--rate must be between 1 and 1000000000".into());
        }
        if workload.batch == 0 || workload.batch_appenders == 0 || workload.single_appenders == 0 {
            return Err(
                "--batch, --batch-appenders and --single-appenders must be positive".into(),
            );
        }
        Ok(workload)
    }
}

/// Where the benchmark's logs come from.
#[derive(Debug)]
enum Target {
    Embedded { dir: PathBuf, fsync: FsyncPolicy },
    Kafka { bootstrap: String },
}

/// One opened log: the trait object every measurement uses, plus the embedded log's
/// counters when there are any.
struct Opened {
    log: Arc<dyn Log>,
    embedded: Option<EmbeddedLog>,
    run_dir: Option<PathBuf>,
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Embedded { dir, fsync } => {
                format!("embedded (fsync={fsync}, directory {})", dir.display())
            }
            Target::Kafka { bootstrap } => format!("kafka (bootstrap {bootstrap})"),
        }
    }

    /// Opens a log for one run: a fresh directory on the embedded backend, a new client
    /// on Kafka (topics get unique names there, the cluster keeps them).
    async fn open(&self, run: &str) -> Result<Opened, BenchError> {
        match self {
            Target::Embedded { dir, fsync } => {
                let run_dir = dir.join(run);
                let options = EmbeddedOptions {
                    fsync: *fsync,
                    ..EmbeddedOptions::default()
                };
                let log = EmbeddedLog::open(&run_dir, options).await?;
                Ok(Opened {
                    log: Arc::new(log.clone()),
                    embedded: Some(log),
                    run_dir: Some(run_dir),
                })
            }
            Target::Kafka { bootstrap } => {
                let log = KafkaLog::connect(KafkaOptions::new(bootstrap.clone())).await?;
                Ok(Opened {
                    log: Arc::new(log),
                    embedded: None,
                    run_dir: None,
                })
            }
        }
    }
}

impl Opened {
    async fn close(self) -> Result<(), BenchError> {
        self.log.shutdown().await?;
        if let Some(dir) = &self.run_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }
}

/// A topic name unique to this benchmark process (a Kafka cluster outlives the run).
fn topic_name(prefix: &str, run_id: &str) -> String {
    format!("logbench-{prefix}-{run_id}")
}

fn keyed(key: String, value: &Bytes) -> Record {
    Record {
        key: Some(Bytes::from(key)),
        value: Some(value.clone()),
        ..Record::default()
    }
}

async fn throughput(target: &Target, w: &Workload, run_id: &str) -> Result<(), BenchError> {
    println!(
        "== durable append throughput ({}, {} partitions, {:.0} s per run) ==",
        target.describe(),
        w.partitions,
        w.seconds
    );
    for &size in &w.sizes {
        for (label, tasks, batch) in [
            ("append_batch", w.batch_appenders, w.batch),
            ("append", w.single_appenders, 1),
        ] {
            let run = format!("tp-{size}-{label}");
            let opened = target.open(&run).await?;
            let log = Arc::clone(&opened.log);
            let topic = topic_name(&run.replace('_', "-"), run_id);
            log.create_topic(&TopicConfig::new(topic.as_str(), w.partitions))
                .await?;
            let topic: Arc<str> = topic.into();
            let value = Bytes::from(vec![b'v'; size]);
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            let mut handles = Vec::new();
            let start = Instant::now();
            for t in 0..tasks {
                let log = Arc::clone(&log);
                let topic = Arc::clone(&topic);
                let value = value.clone();
                let stop = Arc::clone(&stop);
                let count = Arc::clone(&count);
                handles.push(tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if batch == 1 {
                            let key = format!("user{}", (t as u64 * 7919 + i) % 10_000);
                            log.append(&topic, keyed(key, &value)).await?;
                        } else {
                            let records = (0..batch as u64)
                                .map(|j| keyed(format!("user{}", (i * 31 + j) % 10_000), &value))
                                .collect();
                            log.append_batch(&topic, records).await?;
                        }
                        i += 1;
                        count.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                    Ok::<(), LogError>(())
                }));
            }
            tokio::time::sleep(Duration::from_secs_f64(w.seconds)).await;
            stop.store(true, Ordering::Relaxed);
            let mut failure = None;
            for h in handles {
                if let Err(e) = h.await? {
                    failure.get_or_insert(e);
                }
            }
            let elapsed = start.elapsed().as_secs_f64();
            let n = count.load(Ordering::Relaxed);
            let stats = opened.embedded.as_ref().map(EmbeddedLog::stats);
            opened.close().await?;
            if let Some(e) = failure {
                return Err(format!("{size} B {label}: append failed: {e}").into());
            }
            let rate = n as f64 / elapsed;
            let extra = stats.map_or_else(String::new, |s| {
                format!(
                    "  {:>7.1} MB/s written  fsyncs {:>6}  avg records/write {:>7.1}  max {:>6}",
                    s.appended_bytes as f64 / elapsed / 1e6,
                    s.fsyncs,
                    s.average_batch_records(),
                    s.max_batch_records,
                )
            });
            println!(
                "{size:>5} B  {label:<12} {tasks:>5} tasks x {batch:>4}: {rate:>10.0} records/s  {:>7.2} MB/s payload{extra}",
                rate * size as f64 / 1e6,
            );
        }
    }
    Ok(())
}

/// Histograms of the latency run, in nanoseconds.
struct Latencies {
    from_call: Histogram<u64>,
    from_schedule: Histogram<u64>,
    received: u64,
}

async fn latency(target: &Target, w: &Workload, run_id: &str) -> Result<(), BenchError> {
    println!(
        "== append-to-consumer wake-up latency ({}, open loop {} records/s, {} B, {:.0} s) ==",
        target.describe(),
        w.rate,
        w.latency_size,
        w.latency_seconds
    );
    let opened = target.open("latency").await?;
    let log = Arc::clone(&opened.log);
    let topic = topic_name("latency", run_id);
    log.create_topic(&TopicConfig::new(topic.as_str(), w.partitions))
        .await?;
    let warmup = Duration::from_secs(1);
    let total = Duration::from_secs_f64(w.latency_seconds) + warmup;
    let expected = (total.as_secs_f64() * w.rate as f64) as u64;

    // The topic is new, so reading from the earliest offset sees exactly this run's
    // records, however long the group takes to assign the partitions.
    let mut opts = ConsumerOptions::new(format!("logbench-{run_id}"), &[topic.as_str()]);
    opts.start_if_uncommitted = StartAt::Earliest;
    let mut consumer = log.consumer(opts).await?;
    let mut assigned = 0usize;
    let join_deadline = Instant::now() + Duration::from_secs(60);
    while assigned < w.partitions as usize {
        if Instant::now() > join_deadline {
            return Err("the consumer was not assigned the partitions within 60 s".into());
        }
        if let ConsumerEvent::Assigned(tps) = consumer.poll(Duration::from_secs(5)).await? {
            assigned += tps.len();
        }
    }
    let base = Instant::now();
    let consumer_task = tokio::spawn(async move {
        let mut lat = Latencies {
            from_call: Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?,
            from_schedule: Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?,
            received: 0,
        };
        while lat.received < expected {
            let ConsumerEvent::Records(recs) = consumer.poll(Duration::from_secs(10)).await? else {
                continue;
            };
            if recs.is_empty() {
                break;
            }
            let now = base.elapsed().as_nanos() as u64;
            for r in &recs {
                let stamp = |range: std::ops::Range<usize>| {
                    r.value
                        .as_ref()
                        .and_then(|v| v.get(range))
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes)
                };
                let (Some(sent), Some(scheduled)) = (stamp(0..8), stamp(8..16)) else {
                    return Err(BenchError::from(format!(
                        "record at offset {} of partition {} has no timestamps",
                        r.offset, r.partition
                    )));
                };
                if Duration::from_nanos(scheduled) >= warmup {
                    lat.from_call
                        .saturating_record(now.saturating_sub(sent).max(1));
                    lat.from_schedule
                        .saturating_record(now.saturating_sub(scheduled).max(1));
                }
            }
            lat.received += recs.len() as u64;
        }
        let _ = consumer.close().await;
        Ok::<Latencies, BenchError>(lat)
    });

    // The generator: a plain thread that follows the schedule, never waiting for acks.
    let handle = tokio::runtime::Handle::current();
    let gen_log = Arc::clone(&log);
    let gen_topic: Arc<str> = topic.into();
    let rate = w.rate;
    let size = w.latency_size;
    let failures = Arc::new(AtomicU64::new(0));
    let gen_failures = Arc::clone(&failures);
    let generator = std::thread::spawn(move || {
        let interval_ns = 1_000_000_000 / rate;
        let mut i = 0u64;
        let mut late = 0u64;
        let mut pending = Vec::new();
        while i < expected {
            let scheduled = i * interval_ns;
            let now = base.elapsed().as_nanos() as u64;
            if now < scheduled {
                // Sleep at least 100 µs: a thread waking 50 000 times a second would
                // measure the scheduler, not the log. Records due meanwhile go out together.
                std::thread::sleep(Duration::from_nanos((scheduled - now).max(100_000)));
                continue;
            }
            if now > scheduled + 1_000_000 {
                late += 1;
            }
            let mut value = vec![0u8; size];
            value[8..16].copy_from_slice(&scheduled.to_le_bytes());
            let sent = base.elapsed().as_nanos() as u64;
            value[0..8].copy_from_slice(&sent.to_le_bytes());
            let log = Arc::clone(&gen_log);
            let topic = Arc::clone(&gen_topic);
            let failures = Arc::clone(&gen_failures);
            let key = format!("user{}", i % 1000);
            pending.push(handle.spawn(async move {
                if let Err(e) = log.append(&topic, keyed(key, &Bytes::from(value))).await
                    && failures.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!("logbench: append failed: {e}");
                }
            }));
            i += 1;
        }
        (late, pending)
    });
    let (late, pending) = tokio::task::spawn_blocking(move || generator.join())
        .await?
        .map_err(|_| "the generator thread panicked")?;
    for p in pending {
        p.await?;
    }
    let lat = consumer_task.await??;
    let stats = opened.embedded.as_ref().map(EmbeddedLog::stats);
    opened.close().await?;
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (label, h) in [
        ("append call -> consumer", &lat.from_call),
        ("scheduled   -> consumer", &lat.from_schedule),
    ] {
        println!(
            "{label}: p50 {:>9.1} µs  p99 {:>9.1} µs  p99.9 {:>9.1} µs  max {:>10.1} µs  (n={})",
            us(h, 0.5),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0,
            h.len()
        );
    }
    let extra = stats.map_or_else(String::new, |s| {
        format!(
            "; fsyncs {}  avg records/write {:.1}",
            s.fsyncs,
            s.average_batch_records()
        )
    });
    println!(
        "received {} of {expected}; failed appends {}; generator more than 1 ms behind schedule for {late} records{extra}",
        lat.received,
        failures.load(Ordering::Relaxed),
    );
    Ok(())
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    if load.is_empty() {
        "unknown".to_owned()
    } else {
        load
    }
}

fn run(args: Args) -> Result<(), BenchError> {
    let workload = Workload::from_args(&args)?;
    match args.backend {
        Backend::Embedded if args.bootstrap.is_some() => {
            return Err("--bootstrap applies to --backend kafka only".into());
        }
        Backend::Kafka if args.dir.is_some() || args.fsync.is_some() => {
            return Err("--dir and --fsync apply to --backend embedded only".into());
        }
        _ => {}
    }
    // Kept alive until the end of the run: the temporary directory and the broker.
    let temp_dir = match (args.backend, &args.dir) {
        (Backend::Embedded, None) => Some(tempfile::tempdir_in(std::env::temp_dir())?),
        _ => None,
    };
    let mut broker = None;
    let target = match args.backend {
        Backend::Embedded => Target::Embedded {
            dir: args
                .dir
                .clone()
                .or_else(|| temp_dir.as_ref().map(|t| t.path().to_path_buf()))
                .ok_or("no log directory")?,
            fsync: args.fsync.unwrap_or(FsyncPolicy::Always),
        },
        Backend::Kafka => {
            let bootstrap = match &args.bootstrap {
                Some(b) => b.clone(),
                None => {
                    let started = TansuBroker::start()?;
                    let bootstrap = started.bootstrap();
                    println!(
                        "logbench: started a Tansu broker (SQLite storage) at {bootstrap}, data in {}",
                        started.data_dir().display()
                    );
                    broker = Some(started);
                    bootstrap
                }
            };
            Target::Kafka { bootstrap }
        }
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Other work on the machine shows up in throughput and tail latencies: say how busy
    // it was, before and after.
    println!(
        "logbench: backend {}, {} CPUs, load average {}",
        target.describe(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
    );
    if broker.is_some() {
        println!(
            "logbench: CAVEAT: Tansu on SQLite measures a correctness-grade broker's speed, not Kafka's."
        );
    }
    rt.block_on(async {
        if args.mode == "all" || args.mode == "throughput" {
            throughput(&target, &workload, &run_id).await?;
        }
        if args.mode == "all" || args.mode == "latency" {
            latency(&target, &workload, &run_id).await?;
        }
        Ok::<(), BenchError>(())
    })?;
    println!("logbench: load average at the end {}", load_average());
    if broker.is_some() {
        println!(
            "logbench: CAVEAT: Tansu on SQLite measures a correctness-grade broker's speed, not Kafka's."
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logbench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kafka_gets_its_own_defaults_unless_overridden() {
        let kafka = Args::parse_from(["logbench", "--backend", "kafka"]);
        let w = Workload::from_args(&kafka).unwrap();
        assert_eq!(
            (w.rate, w.single_appenders, w.batch_appenders),
            (1_000, 64, 4)
        );
        let embedded = Args::parse_from(["logbench"]);
        let w = Workload::from_args(&embedded).unwrap();
        assert_eq!(
            (w.rate, w.single_appenders, w.batch_appenders),
            (50_000, 2048, 32)
        );
        let given = Args::parse_from(["logbench", "--backend", "kafka", "--rate", "7"]);
        assert_eq!(Workload::from_args(&given).unwrap().rate, 7);
    }

    #[test]
    fn embedded_options_are_refused_for_kafka() {
        let args = Args::parse_from(["logbench", "--backend", "kafka", "--fsync", "never"]);
        assert!(run(args).is_err());
    }
}
