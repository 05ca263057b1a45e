//! Benchmark of the embedded log.
//!
//! (a) Durable append throughput: concurrent appenders (whole batches, and single-record
//!     appends) with the chosen fsync policy, for 200-byte and 2 KB records.
//! (b) Append-to-consumer wake-up latency at a fixed open-loop rate: a generator thread
//!     issues appends on schedule whatever the log does, a consumer-group member measures
//!     the time from the append call to the poll that returned the record.
//!
//! `cargo run --release -p imbus-log-embedded --example logbench -- --help`
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use imbus_log::{ConsumerEvent, ConsumerOptions, Log, Record, StartAt, TopicConfig};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions, FsyncPolicy};

#[derive(Debug, Parser)]
#[command(about = "Throughput and wake-up latency of the embedded imbus log")]
struct Args {
    /// Directory for the log (a fresh temporary directory when omitted).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// What to run.
    #[arg(long, default_value = "all", value_parser = ["all", "throughput", "latency"])]
    mode: String,
    /// Fsync policy: always, never or interval:<ms>.
    #[arg(long, default_value = "always", value_parser = FsyncPolicy::parse)]
    fsync: FsyncPolicy,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Record value sizes for the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "200,2048")]
    sizes: Vec<usize>,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Concurrent tasks calling append_batch.
    #[arg(long, default_value_t = 32)]
    batch_appenders: usize,
    /// Records per append_batch call.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Concurrent tasks calling append (one record per call).
    #[arg(long, default_value_t = 2048)]
    single_appenders: usize,
    /// Open-loop rate of the latency run, records per second.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Seconds of the latency run (after a 1 s warm-up).
    #[arg(long, default_value_t = 10.0)]
    latency_seconds: f64,
    /// Record value size of the latency run.
    #[arg(long, default_value_t = 200)]
    latency_size: usize,
}

fn options(fsync: FsyncPolicy) -> EmbeddedOptions {
    EmbeddedOptions {
        fsync,
        ..EmbeddedOptions::default()
    }
}

async fn throughput(args: &Args, dir: &std::path::Path) {
    println!(
        "== durable append throughput (fsync={}, {} partitions, {:.0} s per run) ==",
        args.fsync, args.partitions, args.seconds
    );
    for &size in &args.sizes {
        for (label, tasks, batch) in [
            ("append_batch", args.batch_appenders, args.batch),
            ("append", args.single_appenders, 1),
        ] {
            let run_dir = dir.join(format!("tp-{size}-{label}"));
            let log = EmbeddedLog::open(&run_dir, options(args.fsync))
                .await
                .unwrap();
            log.create_topic(&TopicConfig::new("bench", args.partitions))
                .await
                .unwrap();
            let value = Bytes::from(vec![b'v'; size]);
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            let mut handles = Vec::new();
            let start = Instant::now();
            for t in 0..tasks {
                let log = log.clone();
                let value = value.clone();
                let stop = Arc::clone(&stop);
                let count = Arc::clone(&count);
                handles.push(tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if batch == 1 {
                            let key =
                                Bytes::from(format!("user{}", (t as u64 * 7919 + i) % 10_000));
                            let r = Record {
                                key: Some(key),
                                value: Some(value.clone()),
                                ..Record::default()
                            };
                            log.append("bench", r).await.unwrap();
                        } else {
                            let records = (0..batch as u64)
                                .map(|j| Record {
                                    key: Some(Bytes::from(format!(
                                        "user{}",
                                        (i * 31 + j) % 10_000
                                    ))),
                                    value: Some(value.clone()),
                                    ..Record::default()
                                })
                                .collect();
                            log.append_batch("bench", records).await.unwrap();
                        }
                        i += 1;
                        count.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                }));
            }
            tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
            stop.store(true, Ordering::Relaxed);
            for h in handles {
                h.await.unwrap();
            }
            let elapsed = start.elapsed().as_secs_f64();
            let n = count.load(Ordering::Relaxed);
            let stats = log.stats();
            log.shutdown().await.unwrap();
            let rate = n as f64 / elapsed;
            println!(
                "{size:>5} B  {label:<12} {tasks:>5} tasks x {batch:>4}: {rate:>10.0} records/s  {:>7.1} MB/s payload  {:>7.1} MB/s written  fsyncs {:>6}  avg records/write {:>7.1}  max {:>6}",
                rate * size as f64 / 1e6,
                stats.appended_bytes as f64 / elapsed / 1e6,
                stats.fsyncs,
                stats.average_batch_records(),
                stats.max_batch_records,
            );
            let _ = std::fs::remove_dir_all(&run_dir);
        }
    }
}

async fn latency(args: &Args, dir: &std::path::Path) {
    println!(
        "== append-to-consumer wake-up latency (fsync={}, open loop {} records/s, {} B, {:.0} s) ==",
        args.fsync, args.rate, args.latency_size, args.latency_seconds
    );
    let run_dir = dir.join("latency");
    let log = EmbeddedLog::open(&run_dir, options(args.fsync))
        .await
        .unwrap();
    log.create_topic(&TopicConfig::new("lat", args.partitions))
        .await
        .unwrap();
    let base = Instant::now();
    let warmup = Duration::from_secs(1);
    let total = Duration::from_secs_f64(args.latency_seconds) + warmup;
    let expected = (total.as_secs_f64() * args.rate as f64) as u64;

    let mut opts = ConsumerOptions::new("bench", &["lat"]);
    opts.start_if_uncommitted = StartAt::Latest;
    let mut consumer = log.consumer(opts).await.unwrap();
    match consumer.poll(Duration::from_secs(5)).await.unwrap() {
        ConsumerEvent::Assigned(_) => {}
        other => panic!("expected the assignment first, got {other:?}"),
    }
    let consumer_task = tokio::spawn(async move {
        let mut from_call = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        let mut from_schedule = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        let mut received = 0u64;
        while received < expected {
            let ev = consumer.poll(Duration::from_secs(5)).await.unwrap();
            let ConsumerEvent::Records(recs) = ev else {
                continue;
            };
            if recs.is_empty() {
                break;
            }
            let now = base.elapsed().as_nanos() as u64;
            for r in &recs {
                let v = r.value.as_ref().unwrap();
                let sent = u64::from_le_bytes(v[0..8].try_into().unwrap());
                let scheduled = u64::from_le_bytes(v[8..16].try_into().unwrap());
                if Duration::from_nanos(scheduled) >= warmup {
                    from_call.record(now.saturating_sub(sent).max(1)).unwrap();
                    from_schedule
                        .record(now.saturating_sub(scheduled).max(1))
                        .unwrap();
                }
            }
            received += recs.len() as u64;
        }
        (from_call, from_schedule, received)
    });

    // The generator: a plain thread that follows the schedule, never waiting for acks.
    let handle = tokio::runtime::Handle::current();
    let gen_log = log.clone();
    let rate = args.rate;
    let size = args.latency_size.max(16);
    let generator = std::thread::spawn(move || {
        let interval_ns = 1_000_000_000 / rate;
        let mut i = 0u64;
        let mut late = 0u64;
        let acked = Arc::new(AtomicU64::new(0));
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
            let log = gen_log.clone();
            let acked = Arc::clone(&acked);
            let key = Bytes::from(format!("user{}", i % 1000));
            handle.spawn(async move {
                log.append(
                    "lat",
                    Record {
                        key: Some(key),
                        value: Some(Bytes::from(value)),
                        ..Record::default()
                    },
                )
                .await
                .unwrap();
                acked.fetch_add(1, Ordering::Relaxed);
            });
            i += 1;
        }
        late
    });
    let late = tokio::task::spawn_blocking(move || generator.join().unwrap())
        .await
        .unwrap();
    let (from_call, from_schedule, received) = consumer_task.await.unwrap();
    let stats = log.stats();
    log.shutdown().await.unwrap();
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (label, h) in [
        ("append call -> consumer", &from_call),
        ("scheduled   -> consumer", &from_schedule),
    ] {
        println!(
            "{label}: p50 {:>7.1} µs  p99 {:>7.1} µs  p99.9 {:>8.1} µs  max {:>9.1} µs  (n={})",
            us(h, 0.5),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0,
            h.len()
        );
    }
    println!(
        "received {received} of {expected}; generator more than 1 ms behind schedule for {late} records; fsyncs {}  avg records/write {:.1}",
        stats.fsyncs,
        stats.average_batch_records()
    );
    let _ = std::fs::remove_dir_all(&run_dir);
}

fn main() {
    let args = Args::parse();
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
            tmp.path().to_path_buf()
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Other work on the machine shows up in the tail latencies: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "logbench: {} CPUs, load average {}, log directory {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        dir.display()
    );
    rt.block_on(async {
        if args.mode == "all" || args.mode == "throughput" {
            throughput(&args, &dir).await;
        }
        if args.mode == "all" || args.mode == "latency" {
            latency(&args, &dir).await;
        }
    });
}
