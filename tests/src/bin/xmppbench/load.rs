//! Message workloads: one-to-one throughput and latency at stepped open-loop rates, offline
//! store-and-drain, and presence fan-out.
//!
//! Every generated stanza carries a marker in its text, `imbusload <step> <stream> <seq>
//! <scheduled-ns> [<sent-ns>]`, where `<scheduled-ns>` is when the open-loop timetable said
//! it was due (nanoseconds since the run's epoch). A receiver's latency sample is its
//! arrival time minus that due time, so a server that falls behind shows its backlog in
//! the latency (no coordinated omission: senders never wait for answers, and when a send
//! is late the ones that fell due meanwhile go out together). `<sent-ns>`, when present,
//! is when the sender put the stanza in its write: arrival minus that is a second
//! histogram, the latency without the sender's own lateness (its timer wakes it up to a
//! millisecond after the due time, and later when the machine is busy). The streams of a step are offset from
//! each other by an even share of the period, so their sum is an even load at the step's
//! rate, not a burst of one message per stream at the start of every period (which put a
//! floor of several milliseconds under every server's latency, the time a server takes to
//! work through such a burst).
//!
//! Receivers scan the raw stream for markers rather than parsing every stanza: the
//! generator shares the machine with the server, and its CPU per message should stay
//! small. Markers are plain ASCII without markup characters, so a server never escapes
//! them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Semaphore;

use crate::{Bench, Tls, histogram, quantiles};

pub(crate) const MARKER: &[u8] = b"imbusload ";

/// Options of the `messages` workload.
#[derive(Debug, Clone)]
pub struct MessagesOptions {
    /// Sender/receiver pairs (accounts 1..2N: odd ones send to the next even one).
    pub pairs: usize,
    /// Offered rates to step through, messages/s over all pairs.
    pub rates: Vec<u64>,
    /// Seconds of sending per step.
    pub step_seconds: u64,
    /// Seconds to wait for stragglers after a step.
    pub drain_seconds: u64,
    /// Address messages to the receiver's bare JID (`true`) or its full JID.
    pub bare: bool,
    /// Keep stepping after the server saturated.
    pub all_rates: bool,
    /// After stepping, run one more step at half the highest sustained rate.
    pub half: bool,
    /// Server processes whose CPU time is charged to the messages.
    pub server_pids: Vec<u32>,
}

/// Per-step statistics a receiver keeps.
struct StepStats {
    received: u64,
    /// Arrivals whose sequence number was not above the last one seen on their stream.
    out_of_order: u64,
    latency: Histogram<u64>,
    /// From the time the sender wrote the stanza (markers that carry it).
    from_send: Histogram<u64>,
}

impl StepStats {
    fn new() -> Self {
        Self {
            received: 0,
            out_of_order: 0,
            latency: histogram(),
            from_send: histogram(),
        }
    }
}

/// What all receivers of a run share: per step, the merged statistics; per stream, the
/// last sequence number seen.
struct Received {
    steps: Mutex<Vec<StepStats>>,
    /// Per stream, the last sequence number seen; empty when a stream has several
    /// receivers (presence fan-out), where order per stream means nothing.
    last_seq: Mutex<Vec<Option<u64>>>,
}

impl Received {
    /// Statistics for `streams` one-to-one streams whose order is checked.
    fn new(streams: usize) -> Self {
        Self {
            steps: Mutex::new(Vec::new()),
            last_seq: Mutex::new(vec![None; streams]),
        }
    }

    /// Statistics without an order check.
    fn unordered() -> Self {
        Self::new(0)
    }

    /// Records an arrival at `now_ns` (since the run's epoch).
    fn record(&self, marker: Marker, now_ns: u64) {
        let latency_us = now_ns.saturating_sub(marker.due_ns) / 1000;
        let in_order = {
            let mut last = self.last_seq.lock().unwrap_or_else(|e| e.into_inner());
            match last.get_mut(marker.stream) {
                Some(slot) => {
                    let ok = slot.is_none_or(|l| marker.seq > l);
                    *slot = Some(marker.seq.max(slot.unwrap_or(0)));
                    ok
                }
                None => true,
            }
        };
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        while steps.len() <= marker.step {
            steps.push(StepStats::new());
        }
        let stats = &mut steps[marker.step];
        stats.received += 1;
        if !in_order {
            stats.out_of_order += 1;
        }
        let _ = stats.latency.record(latency_us.max(1));
        if let Some(sent_ns) = marker.sent_ns {
            let _ = stats
                .from_send
                .record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
        }
    }

    fn take(&self, step: usize) -> StepStats {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        match steps.get_mut(step) {
            Some(stats) => std::mem::replace(stats, StepStats::new()),
            None => StepStats::new(),
        }
    }

    fn received(&self, step: usize) -> u64 {
        let steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        steps.get(step).map_or(0, |s| s.received)
    }
}

/// A marker read off a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) step: usize,
    pub(crate) stream: usize,
    pub(crate) seq: u64,
    pub(crate) due_ns: u64,
    /// When the sender wrote it, if the marker says.
    pub(crate) sent_ns: Option<u64>,
}

pub(crate) fn marker_text(step: usize, stream: usize, seq: u64, due_ns: u64) -> String {
    format!("imbusload {step} {stream} {seq} {due_ns}")
}

/// A marker that also carries the time the sender wrote it.
pub(crate) fn marker_text_sent(
    step: usize,
    stream: usize,
    seq: u64,
    due_ns: u64,
    sent_ns: u64,
) -> String {
    format!("imbusload {step} {stream} {seq} {due_ns} {sent_ns}")
}

/// Finds the complete markers in `buf`, returning them and how many leading bytes can be
/// discarded (everything before a marker that may still be incomplete).
pub(crate) fn scan(buf: &[u8]) -> (Vec<Marker>, usize) {
    let mut found = Vec::new();
    let mut at = 0;
    let mut consumed = 0;
    while let Some(pos) = find(&buf[at..], MARKER) {
        let start = at + pos + MARKER.len();
        // A marker ends at the first byte that is neither a digit nor a space.
        let Some(len) = buf[start..]
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b' '))
        else {
            // Incomplete: keep it for the next read.
            return (found, at + pos);
        };
        let text = std::str::from_utf8(&buf[start..start + len]).unwrap_or_default();
        let mut fields = text.split(' ').map(str::parse::<u64>);
        if let (Some(Ok(step)), Some(Ok(stream)), Some(Ok(seq)), Some(Ok(due_ns))) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        {
            found.push(Marker {
                step: step as usize,
                stream: stream as usize,
                seq,
                due_ns,
                sent_ns: fields.next().and_then(Result::ok),
            });
        }
        at = start + len;
        consumed = at;
    }
    // No marker can start in the consumed part; keep a tail that could hold the start of
    // one.
    let keep_from = buf.len().saturating_sub(MARKER.len() - 1).max(consumed);
    (found, keep_from)
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a reading task records.
#[derive(Debug, Clone, Copy)]
struct Listen {
    /// Record markers (a receiver); `false` on a sending stream, where a marker can only be
    /// in an error bounce.
    markers: bool,
    /// Ignore markers of this stream (a user's own presence echoed back to it).
    skip_stream: Option<usize>,
}

/// Reads a stream until it ends, recording markers as `listen` says. Also counts error
/// stanzas (a server refusing what was sent).
async fn receive(
    mut read: ReadHalf<Tls>,
    epoch: Instant,
    received: Arc<Received>,
    errors: Arc<std::sync::atomic::AtomicU64>,
    listen: Listen,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        let n = match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = epoch.elapsed().as_nanos() as u64;
        buf.extend_from_slice(&chunk[..n]);
        let errors_seen = count(&buf, b"type='error'") + count(&buf, b"type=\"error\"");
        if errors_seen > 0 {
            errors.fetch_add(errors_seen as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let (markers, keep_from) = scan(&buf);
        if listen.markers {
            for marker in markers {
                if listen.skip_stream != Some(marker.stream) {
                    received.record(marker, now);
                }
            }
        }
        buf.drain(..keep_from);
    }
}

pub(crate) fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Sends `rate_per_stream` messages/s on one stream for `duration`, open loop: the `k`th
/// message is due at `start + (k + stream / streams) / rate`; whatever fell due while the
/// previous write was in progress is written together. Returns how many were sent. The
/// `streams` streams of a step are spread evenly over the period, so together they offer
/// an even load rather than a burst of one message per stream at each period's start.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send_open_loop(
    write: &mut WriteHalf<Tls>,
    epoch: Instant,
    start: Instant,
    duration: Duration,
    rate_per_stream: f64,
    step: usize,
    (stream, streams): (usize, usize),
    first_seq: u64,
    stanza: &(dyn Fn(&str) -> String + Sync),
) -> anyhow::Result<u64> {
    let period = Duration::from_secs_f64(1.0 / rate_per_stream);
    let start = start + period.mul_f64(stream as f64 / streams.max(1) as f64);
    let total = (duration.as_secs_f64() * rate_per_stream).round() as u64;
    let mut k = 0u64;
    let mut batch = String::new();
    while k < total {
        let due = start + period.mul_f64(k as f64);
        tokio::time::sleep_until(due.into()).await;
        let now = Instant::now();
        let sent_ns = now.duration_since(epoch).as_nanos() as u64;
        batch.clear();
        while k < total {
            let due = start + period.mul_f64(k as f64);
            if due > now {
                break;
            }
            let due_ns = due.duration_since(epoch).as_nanos() as u64;
            let marker = marker_text_sent(step, stream, first_seq + k, due_ns, sent_ns);
            batch.push_str(&stanza(&marker));
            k += 1;
        }
        write.write_all(batch.as_bytes()).await?;
        write.flush().await?;
    }
    Ok(total)
}

/// User time + system time of the given processes, in clock ticks.
pub(crate) fn cpu_ticks(pids: &[u32]) -> Option<u64> {
    let mut total = 0;
    for pid in pids {
        // Threads' times are included in the process's utime/stime.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        total += utime + stime;
    }
    Some(total)
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    // Linux reports 100 ticks per second to user space on every architecture it runs
    // imbus on (USER_HZ); `getconf CLK_TCK` says the same.
    100.0
}

/// Logs in `count` accounts (ids from `user_of`) with a bounded number of logins at once,
/// sends initial presence on each, and returns the streams in order.
async fn connect_all(
    bench: &Arc<Bench>,
    ids: &[usize],
    resource: &str,
    ramp: usize,
) -> anyhow::Result<Vec<Tls>> {
    let permits = Arc::new(Semaphore::new(ramp.max(1)));
    let mut tasks = Vec::with_capacity(ids.len());
    for &user in ids {
        let bench = bench.clone();
        let permits = permits.clone();
        let resource = resource.to_owned();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let (mut tls, _reader) = bench
                .login(user, &resource)
                .await
                .with_context(|| format!("login of {}{user}", bench.prefix))?;
            tls.write_all(b"<presence/>").await?;
            tls.flush().await?;
            anyhow::Ok(tls)
        }));
    }
    let mut streams = Vec::with_capacity(tasks.len());
    for task in tasks {
        streams.push(task.await??);
    }
    Ok(streams)
}

fn report_step(
    label: &str,
    offered: u64,
    sent: u64,
    stats: &StepStats,
    seconds: f64,
    cpu: Option<f64>,
) {
    let ms = |q: f64| stats.latency.value_at_quantile(q) as f64 / 1000.0;
    let sent_ms = |q: f64| stats.from_send.value_at_quantile(q) as f64 / 1000.0;
    let lost = sent.saturating_sub(stats.received);
    let extra = stats.received.saturating_sub(sent);
    let cpu_text = match cpu {
        Some(ticks) if stats.received > 0 => format!(
            "{:.1}",
            ticks / clock_ticks_per_second() * 1e6 / stats.received as f64
        ),
        _ => "-".to_owned(),
    };
    println!(
        "STEP {label} offered={offered} sent={sent} received={} delivered_per_s={:.0} \
         lost={lost} extra={extra} out_of_order={} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} \
         max_ms={:.3} server_cpu_us_per_msg={cpu_text} sent_p50_ms={:.3} sent_p99_ms={:.3} \
         sent_p999_ms={:.3}",
        stats.received,
        stats.received as f64 / seconds,
        stats.out_of_order,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        stats.latency.max() as f64 / 1000.0,
        sent_ms(0.5),
        sent_ms(0.99),
        sent_ms(0.999),
    );
}

/// The `messages` workload: N connected pairs, stepped open-loop rates.
pub async fn messages(bench: Arc<Bench>, options: MessagesOptions) -> anyhow::Result<()> {
    let pairs = options.pairs.max(1);
    if bench.users < 2 * pairs {
        bail!(
            "--users {} is too few for {pairs} pairs: {} accounts are needed",
            bench.users,
            2 * pairs
        );
    }
    let senders: Vec<usize> = (0..pairs).map(|i| 2 * i + 1).collect();
    let receivers: Vec<usize> = (0..pairs).map(|i| 2 * i + 2).collect();
    let started = Instant::now();
    let receiving = connect_all(&bench, &receivers, "load", 32).await?;
    let sending = connect_all(&bench, &senders, "load", 32).await?;
    println!(
        "connected {pairs} pairs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Let initial presence settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let epoch = Instant::now();
    let received = Arc::new(Received::new(pairs));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let receiver = Listen {
        markers: true,
        skip_stream: None,
    };
    let sender = Listen {
        markers: false,
        skip_stream: None,
    };
    // The receivers' write halves stay open (a dropped half is fine, but keeping them
    // makes the intent plain: the streams live until the run ends).
    let mut writers = Vec::with_capacity(pairs);
    for tls in receiving {
        let (read, write) = tokio::io::split(tls);
        writers.push(write);
        tokio::spawn(receive(
            read,
            epoch,
            received.clone(),
            errors.clone(),
            receiver,
        ));
    }
    let mut send_halves = Vec::with_capacity(pairs);
    for tls in sending {
        let (read, write) = tokio::io::split(tls);
        tokio::spawn(receive(
            read,
            epoch,
            received.clone(),
            errors.clone(),
            sender,
        ));
        send_halves.push(Some(write));
    }
    let targets: Vec<String> = receivers
        .iter()
        .map(|r| {
            let bare = format!("{}{r}@{}", bench.prefix, bench.domain);
            if options.bare {
                bare
            } else {
                format!("{bare}/load")
            }
        })
        .collect();

    let mut next_seq = vec![0u64; pairs];
    let mut step = 0usize;
    let mut best_sustained: Option<u64> = None;
    let mut rates = options.rates.clone();
    let mut half_step_pending = options.half;
    let mut index = 0;
    loop {
        let rate = if index < rates.len() {
            rates[index]
        } else if half_step_pending {
            half_step_pending = false;
            match best_sustained {
                Some(best) => {
                    let half = (best / 2).max(1);
                    rates.push(half);
                    half
                }
                None => break,
            }
        } else {
            break;
        };
        // The step at half the highest sustained rate is the one after the half branch.
        let is_half = options.half && !half_step_pending;
        index += 1;
        let per_stream = rate as f64 / pairs as f64;
        let duration = Duration::from_secs(options.step_seconds.max(1));
        let cpu0 = cpu_ticks(&options.server_pids);
        let start = Instant::now() + Duration::from_millis(50);
        let mut tasks = Vec::with_capacity(pairs);
        for (i, half) in send_halves.iter_mut().enumerate() {
            let Some(mut write) = half.take() else {
                bail!("a sending stream was lost");
            };
            let to = targets[i].clone();
            let first = next_seq[i];
            tasks.push(tokio::spawn(async move {
                let stanza = move |marker: &str| {
                    format!("<message to='{to}' type='chat'><body>{marker}</body></message>")
                };
                let sent = send_open_loop(
                    &mut write,
                    epoch,
                    start,
                    duration,
                    per_stream,
                    step,
                    (i, pairs),
                    first,
                    &stanza,
                )
                .await;
                (write, sent)
            }));
        }
        let mut sent_total = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            let (write, sent) = task.await?;
            let sent = sent.with_context(|| format!("sending on pair {i}"))?;
            next_seq[i] += sent;
            sent_total += sent;
            send_halves[i] = Some(write);
        }
        let send_end = Instant::now();
        // Wait for stragglers: until everything arrived or the drain time is up.
        let drain_until = send_end + Duration::from_secs(options.drain_seconds);
        while Instant::now() < drain_until && received.received(step) < sent_total {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = match (cpu0, cpu_ticks(&options.server_pids)) {
            (Some(a), Some(b)) if !options.server_pids.is_empty() => Some((b - a) as f64),
            _ => None,
        };
        let stats = received.take(step);
        let seconds = send_end.duration_since(start).as_secs_f64();
        let label = if is_half {
            format!("half-of-max rate={rate}")
        } else {
            format!("rate={rate}")
        };
        report_step(&label, rate, sent_total, &stats, seconds, cpu);
        let p99_ms = stats.latency.value_at_quantile(0.99) as f64 / 1000.0;
        let sustained = stats.received >= sent_total && p99_ms < 1000.0;
        if sustained && !is_half {
            best_sustained = Some(best_sustained.map_or(rate, |b| b.max(rate)));
        }
        step += 1;
        if !sustained && !is_half && !options.all_rates {
            println!("saturated at {rate} msg/s offered");
            // Let the server catch up before the half-rate step.
            tokio::time::sleep(Duration::from_secs(options.drain_seconds)).await;
            rates.truncate(index);
        }
    }
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "SUMMARY max_sustained_msg_per_s={} error_stanzas={errors}",
        best_sustained.map_or("none".to_owned(), |b| b.to_string())
    );
    drop(writers);
    Ok(())
}

/// The `offline` workload: every sender stores `per_pair` messages for a receiver that is
/// not connected, then the receivers log in and the time until everything arrived is
/// measured.
pub async fn offline(bench: Arc<Bench>, pairs: usize, per_pair: u64) -> anyhow::Result<()> {
    let pairs = pairs.max(1);
    if bench.users < 2 * pairs {
        bail!(
            "--users {} is too few for {pairs} pairs: {} accounts are needed",
            bench.users,
            2 * pairs
        );
    }
    let senders: Vec<usize> = (0..pairs).map(|i| 2 * i + 1).collect();
    let receivers: Vec<usize> = (0..pairs).map(|i| 2 * i + 2).collect();
    let sending = connect_all(&bench, &senders, "offline", 32).await?;
    let epoch = Instant::now();
    let step = 0;
    // Store: every sender writes its messages, then a ping; the ping's answer comes after
    // the server handled the messages before it on that stream.
    let store_start = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut tls) in sending.into_iter().enumerate() {
        let to = format!("{}{}@{}", bench.prefix, receivers[i], bench.domain);
        let step_timeout = bench.step;
        tasks.push(tokio::spawn(async move {
            let mut batch = String::new();
            for seq in 0..per_pair {
                let due = epoch.elapsed().as_nanos() as u64;
                batch.push_str(&format!(
                    "<message to='{to}' type='chat'><body>{}</body></message>",
                    marker_text(step, i, seq, due)
                ));
                if batch.len() > 16 * 1024 {
                    tls.write_all(batch.as_bytes()).await?;
                    batch.clear();
                }
            }
            batch.push_str("<iq type='get' id='stored'><ping xmlns='urn:xmpp:ping'/></iq>");
            tls.write_all(batch.as_bytes()).await?;
            tls.flush().await?;
            let mut seen = Vec::new();
            let mut chunk = vec![0u8; 16 * 1024];
            let deadline = Instant::now() + step_timeout * 10;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let n = tokio::time::timeout(left, tls.read(&mut chunk))
                    .await
                    .context("no answer to the ping after the stored messages")??;
                if n == 0 {
                    bail!("the server closed a sending stream");
                }
                seen.extend_from_slice(&chunk[..n]);
                if find(&seen, b"id='stored'").is_some() || find(&seen, b"id=\"stored\"").is_some()
                {
                    break;
                }
            }
            let errors = count(&seen, b"type='error'") + count(&seen, b"type=\"error\"");
            anyhow::Ok((tls, errors))
        }));
    }
    let mut keep = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (tls, e) = task.await??;
        keep.push(tls);
        errors += e;
    }
    let store_seconds = store_start.elapsed().as_secs_f64();
    let total = pairs as u64 * per_pair;
    println!(
        "OFFLINE store: {total} messages for {pairs} offline users in {store_seconds:.2} s = \
         {:.0} msg/s, {errors} error stanzas",
        total as f64 / store_seconds
    );
    // Drain: receivers log in and send initial presence; count arrivals.
    let received = Arc::new(Received::new(pairs));
    let drain_start = Instant::now();
    let mut keep_writers = Vec::with_capacity(pairs);
    let receiving = connect_all(&bench, &receivers, "offline", 32).await?;
    let rx_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for tls in receiving {
        let (read, write) = tokio::io::split(tls);
        keep_writers.push(write);
        tokio::spawn(receive(
            read,
            epoch,
            received.clone(),
            rx_errors.clone(),
            Listen {
                markers: true,
                skip_stream: None,
            },
        ));
    }
    let deadline = Instant::now() + bench.step * 10;
    while received.received(step) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_seconds = drain_start.elapsed().as_secs_f64();
    // Anything extra (a duplicate) shows up shortly after.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = received.take(step);
    println!(
        "OFFLINE drain: {} of {total} delivered in {drain_seconds:.2} s (logins included) = \
         {:.0} msg/s, out_of_order={}, extra={}",
        stats.received,
        stats.received as f64 / drain_seconds,
        stats.out_of_order,
        stats.received.saturating_sub(total)
    );
    quantiles("store-to-delivery", &stats.latency);
    drop(keep);
    drop(keep_writers);
    Ok(())
}

/// Options of the `presence` workload.
#[derive(Debug, Clone)]
pub struct PresenceOptions {
    /// Connected users (accounts 1..N).
    pub users: usize,
    /// Contacts subscribed to each user's presence.
    pub contacts: usize,
    /// Presence changes per second over all users.
    pub rate: u64,
    /// Seconds of presence changes.
    pub seconds: u64,
    /// Seconds to wait for stragglers.
    pub drain_seconds: u64,
    /// Server processes whose CPU time is charged to the deliveries.
    pub server_pids: Vec<u32>,
}

/// Brings every user's roster to the ring the workload needs: user `u` is subscribed to
/// the presence of users `u-1 … u-K` (cyclically) and approves whoever asks. Done over
/// the protocol, so it works the same on every server and on rosters left by an earlier
/// run (an existing subscription is confirmed at once).
async fn subscribe_ring(
    bench: &Arc<Bench>,
    users: usize,
    contacts: usize,
) -> anyhow::Result<Vec<Tls>> {
    let permits = Arc::new(Semaphore::new(32));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + bench.step * 4;
    let mut tasks = Vec::with_capacity(users);
    for u in 1..=users {
        let bench = bench.clone();
        let permits = permits.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let (mut tls, mut reader) = {
                let _permit = permits.acquire_owned().await?;
                bench.login(u, "fan").await?
            };
            let jid = |n: usize| format!("{}{n}@{}", bench.prefix, bench.domain);
            let mut out = String::from("<presence/>");
            for k in 1..=contacts {
                let followee = (u + users - 1 - k) % users + 1;
                out.push_str(&format!(
                    "<presence type='subscribe' to='{}'/>",
                    jid(followee)
                ));
            }
            tls.write_all(out.as_bytes()).await?;
            tls.flush().await?;
            let mut confirmed = std::collections::HashSet::new();
            let mut marked = false;
            loop {
                if confirmed.len() >= contacts && !marked {
                    marked = true;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                if done.load(std::sync::atomic::Ordering::SeqCst) >= users {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{}: {} of {contacts} subscriptions confirmed when time ran out",
                        jid(u),
                        confirmed.len()
                    );
                }
                let Ok(element) = reader.element(&mut tls, Duration::from_millis(200)).await else {
                    continue;
                };
                if element.name() != "presence" {
                    continue;
                }
                let from = element
                    .attr("from")
                    .map(|f| f.split('/').next().unwrap_or(f).to_owned());
                match (element.attr("type"), from) {
                    (Some("subscribe"), Some(from)) => {
                        tls.write_all(
                            format!("<presence type='subscribed' to='{from}'/>").as_bytes(),
                        )
                        .await?;
                        tls.flush().await?;
                    }
                    (Some("subscribed"), Some(from)) => {
                        confirmed.insert(from);
                    }
                    _ => {}
                }
            }
            anyhow::Ok(tls)
        }));
    }
    let mut streams = Vec::with_capacity(users);
    for task in tasks {
        streams.push(task.await??);
    }
    Ok(streams)
}

/// The `presence` workload: every user broadcasts presence changes to its contacts at an
/// open-loop rate; deliveries to contacts are counted and timed.
pub async fn presence(bench: Arc<Bench>, options: PresenceOptions) -> anyhow::Result<()> {
    let users = options.users.max(2);
    let contacts = options.contacts.clamp(1, users - 1);
    if bench.users < users {
        bail!("--users {} is too few for {users} users", bench.users);
    }
    let started = Instant::now();
    let streams = subscribe_ring(&bench, users, contacts).await?;
    println!(
        "{users} users online, each followed by {contacts} contacts, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let epoch = Instant::now();
    let received = Arc::new(Received::unordered());
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::with_capacity(users);
    for (i, tls) in streams.into_iter().enumerate() {
        let (read, write) = tokio::io::split(tls);
        writers.push(write);
        tokio::spawn(receive(
            read,
            epoch,
            received.clone(),
            errors.clone(),
            Listen {
                markers: true,
                skip_stream: Some(i),
            },
        ));
    }
    let step = 0;
    let per_user = options.rate as f64 / users as f64;
    let duration = Duration::from_secs(options.seconds.max(1));
    let cpu0 = cpu_ticks(&options.server_pids);
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(users);
    for (i, mut write) in writers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let stanza = |marker: &str| {
                format!("<presence><show>away</show><status>{marker}</status></presence>")
            };
            let sent = send_open_loop(
                &mut write,
                epoch,
                start,
                duration,
                per_user,
                step,
                (i, users),
                0,
                &stanza,
            )
            .await;
            (write, sent)
        }));
    }
    let mut sent = 0;
    let mut writers = Vec::with_capacity(users);
    for task in tasks {
        let (write, n) = task.await?;
        sent += n?;
        writers.push(write);
    }
    let send_end = Instant::now();
    let expected = sent * contacts as u64;
    let drain_until = send_end + Duration::from_secs(options.drain_seconds);
    while Instant::now() < drain_until && received.received(step) < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = match (cpu0, cpu_ticks(&options.server_pids)) {
        (Some(a), Some(b)) if !options.server_pids.is_empty() => Some((b - a) as f64),
        _ => None,
    };
    let stats = received.take(step);
    let seconds = send_end.duration_since(start).as_secs_f64();
    // Each change is expected once per contact: the delivery count is compared with that.
    report_step(
        &format!("presence changes={sent} contacts={contacts}"),
        options.rate * contacts as u64,
        expected,
        &stats,
        seconds,
        cpu,
    );
    println!(
        "SUMMARY presence_deliveries_per_s={:.0} error_stanzas={}",
        stats.received as f64 / seconds,
        errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    drop(writers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_complete_markers_and_keeps_a_partial_one() {
        let text = format!(
            "<message><body>{}</body></message><message><body>imbusload 1 2",
            marker_text(3, 4, 5, 6)
        );
        let (found, keep_from) = scan(text.as_bytes());
        assert_eq!(
            found,
            vec![Marker {
                step: 3,
                stream: 4,
                seq: 5,
                due_ns: 6,
                sent_ns: None,
            }]
        );
        assert_eq!(&text.as_bytes()[keep_from..], b"imbusload 1 2");
    }

    #[test]
    fn a_marker_may_carry_its_send_time_and_both_latencies_are_kept() {
        let text = format!(
            "<message><body>{}</body></message>",
            marker_text_sent(0, 1, 2, 1_000_000, 1_800_000)
        );
        let (found, _) = scan(text.as_bytes());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].sent_ns, Some(1_800_000));
        let received = Received::new(2);
        received.record(found[0], 2_000_000);
        let stats = received.take(0);
        // 1 ms after it was due, 0.2 ms after it was sent (histograms keep 3 digits).
        let due = stats.latency.value_at_quantile(0.5);
        let sent = stats.from_send.value_at_quantile(0.5);
        assert!((999..=1001).contains(&due), "{due}");
        assert!((199..=201).contains(&sent), "{sent}");
    }

    #[test]
    fn scan_keeps_a_tail_that_may_start_a_marker() {
        let (found, keep_from) = scan(b"<presence/>imbus");
        assert!(found.is_empty());
        let tail = &b"<presence/>imbus"[keep_from..];
        assert!(
            tail.ends_with(b"imbus") && tail.len() < MARKER.len(),
            "{tail:?}"
        );
    }

    #[test]
    fn received_counts_out_of_order_and_repeats() {
        let received = Received::new(1);
        let m = |seq| Marker {
            step: 0,
            stream: 0,
            seq,
            due_ns: 0,
            sent_ns: None,
        };
        received.record(m(0), 10);
        received.record(m(1), 10);
        received.record(m(1), 10);
        received.record(m(3), 10);
        received.record(m(2), 10);
        let stats = received.take(0);
        assert_eq!(stats.received, 5);
        assert_eq!(stats.out_of_order, 2);
    }
}
