//! Chat room workload (XEP-0045): a join storm into one room, then group chat fan-out at
//! stepped open-loop rates.
//!
//! Accounts 1..N are the occupants, with nicknames `u1` … `uN`. Occupant 1 enters first:
//! when its own presence says the room was just created (status 201) it accepts the
//! default configuration (an empty `jabber:x:data` form of type `submit` to
//! `muc#owner`), which unlocks the room on servers that lock new rooms. Then the other
//! N−1 occupants, already logged in, enter at the same instant (the join storm); a join's
//! latency runs from sending the presence to receiving one's own presence with status
//! 110.
//!
//! Then `senders` occupants send group chat messages at stepped open-loop rates (messages
//! per second over all senders). Every message is due at every occupant, the sender
//! included: deliveries are counted at each occupant without deduplication, and the
//! latency of each is its arrival minus the due time in the body (see [`crate::load`]).
//! Messages carrying a delay stamp (XEP-0203) are room history replayed to a joiner and
//! are not counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use imbus_xmpp_stream::Element;
use tokio::io::{AsyncReadExt, ReadHalf, WriteHalf};
use tokio::sync::Semaphore;

use crate::load::{
    MARKER, Marker, clock_ticks_per_second, count, cpu_ticks, find, scan, send_open_loop,
};
use crate::{Bench, Reader, Tls, histogram, send};

const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const DELAY: &[u8] = b"urn:xmpp:delay";
const MESSAGE_START: &[u8] = b"<message";
const MESSAGE_END: &[u8] = b"</message>";
/// More rate steps than any run has.
const MAX_STEPS: usize = 4096;

/// Options of the `rooms` workload.
#[derive(Debug, Clone)]
pub struct RoomsOptions {
    /// The chat service's domain (`conference.example.com`).
    pub service: String,
    /// The room's localpart.
    pub room: String,
    /// Occupants (accounts 1..N).
    pub occupants: usize,
    /// Occupants that send (accounts 1..S).
    pub senders: usize,
    /// Offered rates to step through, messages/s over all senders.
    pub rates: Vec<u64>,
    /// Seconds of sending per step.
    pub step_seconds: u64,
    /// Seconds to wait for stragglers after a step.
    pub drain_seconds: u64,
    /// Keep stepping after the server saturated.
    pub all_rates: bool,
    /// After stepping, run one more step at half the highest sustained rate.
    pub half: bool,
    /// Logins in progress at once before the storm.
    pub ramp: usize,
    /// Server processes whose CPU time is charged to the joins and deliveries.
    pub server_pids: Vec<u32>,
}

/// Per-step statistics merged from every occupant.
struct StepStats {
    received: u64,
    /// Arrivals at an occupant whose sequence number was not above the last one that
    /// occupant saw from the same sender.
    out_of_order: u64,
    latency: Histogram<u64>,
    /// The latest arrival, nanoseconds since the run's epoch.
    last_arrival_ns: u64,
}

impl StepStats {
    fn new() -> Self {
        Self {
            received: 0,
            out_of_order: 0,
            latency: histogram(),
            last_arrival_ns: 0,
        }
    }
}

/// What the occupants' readers share.
struct Shared {
    epoch: Instant,
    steps: Mutex<Vec<StepStats>>,
    errors: AtomicU64,
    /// Messages with a delay stamp (room history) that carried a marker.
    delayed: AtomicU64,
    /// `<presence` openings seen after the occupants entered.
    presences: AtomicU64,
    /// When the last bytes arrived on any stream, nanoseconds since `epoch`.
    last_read_ns: AtomicU64,
}

impl Shared {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            steps: Mutex::new(Vec::new()),
            errors: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            presences: AtomicU64::new(0),
            last_read_ns: AtomicU64::new(0),
        }
    }

    /// Records one read's arrivals (marker, latency µs, in order), all at `now_ns`.
    fn record(&self, arrivals: &[(Marker, u64, bool)], now_ns: u64) {
        if arrivals.is_empty() {
            return;
        }
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        for &(marker, latency_us, in_order) in arrivals {
            while steps.len() <= marker.step {
                steps.push(StepStats::new());
            }
            let stats = &mut steps[marker.step];
            stats.received += 1;
            stats.last_arrival_ns = stats.last_arrival_ns.max(now_ns);
            if !in_order {
                stats.out_of_order += 1;
            }
            let _ = stats.latency.record(latency_us.max(1));
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

/// The markers of the complete `<message>` stanzas in `buf`, without those of delayed
/// (history) messages; how many of those were skipped; and how many leading bytes can be
/// discarded.
fn scan_messages(buf: &[u8]) -> (Vec<Marker>, u64, usize) {
    let mut found = Vec::new();
    let mut delayed = 0;
    let mut at = 0;
    while let Some(end) = find(&buf[at..], MESSAGE_END).map(|e| at + e + MESSAGE_END.len()) {
        let start = rfind(&buf[at..end], MESSAGE_START).map_or(at, |s| at + s);
        let stanza = &buf[start..end];
        if find(stanza, MARKER).is_some() {
            if find(stanza, DELAY).is_some() {
                delayed += 1;
            } else {
                found.extend(scan(stanza).0);
            }
        }
        at = end;
    }
    // Keep an incomplete message (from its opening), or a tail that may begin one.
    let rest = &buf[at..];
    let keep_from = match rfind(rest, MESSAGE_START) {
        Some(s) => at + s,
        None => buf.len().saturating_sub(MESSAGE_START.len() - 1).max(at),
    };
    (found, delayed, keep_from)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Reads an occupant's stream until it ends: records the markers of group chat messages
/// (order checked per sender), counts error stanzas and presences.
async fn occupant_reader(mut read: ReadHalf<Tls>, shared: Arc<Shared>, senders: usize) {
    let mut last_seq: Vec<Option<u64>> = vec![None; senders];
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 32 * 1024];
    let mut arrivals = Vec::new();
    loop {
        let n = match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = shared.epoch.elapsed().as_nanos() as u64;
        shared.last_read_ns.fetch_max(now, Ordering::Relaxed);
        // Counted on the new bytes only (an opening split over two reads is missed, which
        // only makes the settling count approximate).
        let presences = count(&chunk[..n], b"<presence");
        if presences > 0 {
            shared
                .presences
                .fetch_add(presences as u64, Ordering::Relaxed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let (markers, delayed, keep_from) = scan_messages(&buf);
        let errors =
            count(&buf[..keep_from], b"type='error'") + count(&buf[..keep_from], b"type=\"error\"");
        if errors > 0 {
            shared.errors.fetch_add(errors as u64, Ordering::Relaxed);
        }
        if delayed > 0 {
            shared.delayed.fetch_add(delayed, Ordering::Relaxed);
        }
        arrivals.clear();
        for marker in markers {
            // Steps are few; a marker naming a far step was not sent by this run.
            if marker.step > MAX_STEPS {
                continue;
            }
            let in_order = match last_seq.get_mut(marker.stream) {
                Some(slot) => {
                    let ok = slot.is_none_or(|l| marker.seq > l);
                    *slot = Some(marker.seq.max(slot.unwrap_or(0)));
                    ok
                }
                None => true,
            };
            arrivals.push((marker, now.saturating_sub(marker.due_ns) / 1000, in_order));
        }
        shared.record(&arrivals, now);
        buf.drain(..keep_from);
    }
}

/// An occupant's own presence from the room: `Ok(true)` with status 110 (and whether it
/// says the room was created), an error for an error presence, `None` for anything else.
fn own_presence(
    element: &Element,
    occupant_jid: &str,
    room_jid: &str,
) -> Option<anyhow::Result<bool>> {
    if element.name() != "presence" {
        return None;
    }
    let from = element.attr("from")?;
    if element.attr("type") == Some("error") {
        if from == occupant_jid || from == room_jid {
            let condition = element
                .children()
                .find(|c| c.name() == "error")
                .and_then(|e| e.children().next().map(|c| c.name().to_owned()))
                .unwrap_or_default();
            return Some(Err(anyhow::anyhow!(
                "the room refused {occupant_jid}: {condition} ({element})"
            )));
        }
        return None;
    }
    if from != occupant_jid {
        return None;
    }
    let x = element.child("x", MUC_USER)?;
    let codes: Vec<String> = x
        .children()
        .filter(|c| c.name() == "status")
        .filter_map(|c| c.attr("code").map(str::to_owned))
        .collect();
    if !codes.iter().any(|c| c == "110") {
        return None;
    }
    Some(Ok(codes.iter().any(|c| c == "201")))
}

/// Sends the join presence and waits for one's own presence from the room: whether the
/// room was created by this join.
async fn enter(
    bench: &Bench,
    tls: &mut Tls,
    reader: &mut Reader,
    room_jid: &str,
    nick: &str,
    deadline: Instant,
) -> anyhow::Result<bool> {
    let occupant_jid = format!("{room_jid}/{nick}");
    send(
        tls,
        &format!("<presence to='{occupant_jid}'><x xmlns='{MUC}'/></presence>"),
    )
    .await?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("{occupant_jid}: no own presence from the room in time");
        }
        let element = reader
            .element(tls, left.min(bench.step))
            .await
            .with_context(|| format!("{occupant_jid}: waiting for its own presence"))?;
        if let Some(result) = own_presence(&element, &occupant_jid, room_jid) {
            return result;
        }
    }
}

/// Accepts the default configuration of a new room (XEP-0045 §10.1.2, instant room).
async fn accept_defaults(
    bench: &Bench,
    tls: &mut Tls,
    reader: &mut Reader,
    room_jid: &str,
) -> anyhow::Result<()> {
    send(
        tls,
        &format!(
            "<iq type='set' id='instant' to='{room_jid}'>\
             <query xmlns='{MUC}#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ),
    )
    .await?;
    loop {
        let element = reader
            .element(tls, bench.step)
            .await
            .context("waiting for the answer to the room configuration")?;
        if element.name() == "iq" && element.attr("id") == Some("instant") {
            if element.attr("type") == Some("result") {
                return Ok(());
            }
            bail!("the room refused its default configuration: {element}");
        }
    }
}

fn cpu_delta(before: Option<u64>, pids: &[u32]) -> Option<f64> {
    match (before, cpu_ticks(pids)) {
        (Some(a), Some(b)) if !pids.is_empty() => Some(b.saturating_sub(a) as f64),
        _ => None,
    }
}

fn cpu_us_per(ticks: Option<f64>, n: u64) -> String {
    match ticks {
        Some(ticks) if n > 0 => format!("{:.1}", ticks / clock_ticks_per_second() * 1e6 / n as f64),
        _ => "-".to_owned(),
    }
}

/// The `rooms` workload.
pub async fn rooms(bench: Arc<Bench>, options: RoomsOptions) -> anyhow::Result<()> {
    let occupants = options.occupants.max(2);
    let senders = options.senders.clamp(1, occupants);
    if bench.users < occupants {
        bail!(
            "--users {} is too few for {occupants} occupants",
            bench.users
        );
    }
    let room_jid = format!("{}@{}", options.room, options.service);

    // Everyone logs in (and sends initial presence) before anyone enters.
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(options.ramp.max(1)));
    let mut logins = Vec::with_capacity(occupants);
    for user in 1..=occupants {
        let bench = bench.clone();
        let permits = permits.clone();
        logins.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let (mut tls, reader) = bench
                .login(user, "room")
                .await
                .with_context(|| format!("login of {}{user}", bench.prefix))?;
            send(&mut tls, "<presence/>").await?;
            anyhow::Ok((tls, reader))
        }));
    }
    let mut streams = Vec::with_capacity(occupants);
    for login in logins {
        streams.push(login.await??);
    }
    println!(
        "{occupants} occupants logged in in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let epoch = Instant::now();
    let shared = Arc::new(Shared::new(epoch));
    let deadline_after = bench.step * 4;

    // The first occupant creates the room (or enters it, when it exists).
    let mut streams = streams.into_iter();
    let (mut tls, mut reader) = streams.next().context("no occupants")?;
    let created = enter(
        &bench,
        &mut tls,
        &mut reader,
        &room_jid,
        "u1",
        Instant::now() + deadline_after,
    )
    .await?;
    if created {
        accept_defaults(&bench, &mut tls, &mut reader, &room_jid).await?;
    }
    println!(
        "room {room_jid} {} by u1",
        if created {
            "created and configured"
        } else {
            "entered (it existed)"
        }
    );
    let mut occupant_streams = Vec::with_capacity(occupants);
    occupant_streams.push(tls);

    // The join storm: the other occupants enter at one instant.
    let cpu0 = cpu_ticks(&options.server_pids);
    let go = Instant::now() + Duration::from_millis(100);
    let deadline = go + deadline_after;
    let mut joiners = Vec::with_capacity(occupants - 1);
    for (i, (mut tls, mut reader)) in streams.enumerate() {
        let bench = bench.clone();
        let room_jid = room_jid.clone();
        let nick = format!("u{}", i + 2);
        joiners.push(tokio::spawn(async move {
            tokio::time::sleep_until(go.into()).await;
            let sent = Instant::now();
            let result = enter(&bench, &mut tls, &mut reader, &room_jid, &nick, deadline).await;
            let latency = sent.elapsed();
            (tls, result.map(|_| (latency, Instant::now())))
        }));
    }
    let mut join_latency = histogram();
    let mut failed = 0usize;
    let mut first_error = None;
    let mut last_join = go;
    for joiner in joiners {
        let (tls, result) = joiner.await?;
        match result {
            Ok((latency, at)) => {
                let _ = join_latency.record((latency.as_micros() as u64).max(1));
                last_join = last_join.max(at);
                occupant_streams.push(tls);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let joined = join_latency.len();
    let storm_seconds = last_join.duration_since(go).as_secs_f64();
    if let Some(e) = &first_error {
        println!("  first join error: {e}");
    }
    if failed > 0 {
        bail!(
            "{failed} of {} occupants could not enter the room",
            occupants - 1
        );
    }

    // From here every occupant's stream is read raw; the join presences of the last
    // joiners are still on their way to the first ones.
    let mut writers: Vec<Option<WriteHalf<Tls>>> = Vec::with_capacity(occupants);
    for tls in occupant_streams {
        let (read, write) = tokio::io::split(tls);
        writers.push(Some(write));
        tokio::spawn(occupant_reader(read, shared.clone(), senders));
    }
    // Settled: nothing arrived on any stream for a second (or 60 s passed).
    let settle_limit = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let last = epoch + Duration::from_nanos(shared.last_read_ns.load(Ordering::Relaxed));
        if last.elapsed() >= Duration::from_secs(1) || Instant::now() > settle_limit {
            break;
        }
    }
    let last = epoch + Duration::from_nanos(shared.last_read_ns.load(Ordering::Relaxed));
    let settled_seconds = last.max(last_join).duration_since(go).as_secs_f64();
    let join_cpu = cpu_delta(cpu0, &options.server_pids);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "JOIN occupants={occupants} joiners={} joined={joined} failed={failed} \
         seconds={storm_seconds:.3} joins_per_s={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} \
         all_presence_settled_s={settled_seconds:.3} server_cpu_us_per_join={}",
        occupants - 1,
        joined as f64 / storm_seconds.max(1e-6),
        ms(&join_latency, 0.5),
        ms(&join_latency, 0.99),
        join_latency.max() as f64 / 1000.0,
        cpu_us_per(join_cpu, joined),
    );

    // Fan-out at stepped rates.
    let mut next_seq = vec![0u64; senders];
    let mut step = 0usize;
    let mut best_sustained: Option<u64> = None;
    let mut peak_delivered = 0f64;
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
        let per_sender = rate as f64 / senders as f64;
        let duration = Duration::from_secs(options.step_seconds.max(1));
        let cpu0 = cpu_ticks(&options.server_pids);
        let start = Instant::now() + Duration::from_millis(50);
        let mut tasks = Vec::with_capacity(senders);
        for (i, half) in writers.iter_mut().take(senders).enumerate() {
            let Some(mut write) = half.take() else {
                bail!("a sending stream was lost");
            };
            let to = room_jid.clone();
            let first = next_seq[i];
            tasks.push(tokio::spawn(async move {
                let stanza = move |marker: &str| {
                    format!("<message to='{to}' type='groupchat'><body>{marker}</body></message>")
                };
                let sent = send_open_loop(
                    &mut write,
                    epoch,
                    start,
                    duration,
                    per_sender,
                    step,
                    (i, senders),
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
            let sent = sent.with_context(|| format!("sending as occupant u{}", i + 1))?;
            next_seq[i] += sent;
            sent_total += sent;
            writers[i] = Some(write);
        }
        let send_end = Instant::now();
        let expected = sent_total * occupants as u64;
        let drain_until = send_end + Duration::from_secs(options.drain_seconds);
        while Instant::now() < drain_until && shared.received(step) < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = cpu_delta(cpu0, &options.server_pids);
        let stats = shared.take(step);
        // Deliveries over the step's time, or until the last arrival when the server took
        // longer.
        let last_arrival = epoch + Duration::from_nanos(stats.last_arrival_ns);
        let seconds = duration
            .max(send_end.saturating_duration_since(start))
            .max(last_arrival.saturating_duration_since(start))
            .as_secs_f64();
        let delivered_per_s = stats.received as f64 / seconds;
        peak_delivered = peak_delivered.max(delivered_per_s);
        let label = if is_half {
            format!("half-of-max rate={rate}")
        } else {
            format!("rate={rate}")
        };
        let q = |q: f64| stats.latency.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "STEP {label} occupants={occupants} senders={senders} offered_deliveries_per_s={} \
             sent={sent_total} expected={expected} received={} deliveries_per_s={delivered_per_s:.0} \
             lost={} extra={} out_of_order={} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} \
             max_ms={:.3} server_cpu_us_per_delivery={}",
            rate * occupants as u64,
            stats.received,
            expected.saturating_sub(stats.received),
            stats.received.saturating_sub(expected),
            stats.out_of_order,
            q(0.5),
            q(0.99),
            q(0.999),
            stats.latency.max() as f64 / 1000.0,
            cpu_us_per(cpu, stats.received),
        );
        let sustained = stats.received >= expected && q(0.99) < 1000.0;
        if sustained && !is_half {
            best_sustained = Some(best_sustained.map_or(rate, |b| b.max(rate)));
        }
        step += 1;
        if !sustained && !is_half && !options.all_rates {
            println!(
                "saturated at {rate} msg/s offered ({} deliveries/s)",
                rate * occupants as u64
            );
            tokio::time::sleep(Duration::from_secs(options.drain_seconds)).await;
            rates.truncate(index);
        }
    }
    println!(
        "SUMMARY occupants={occupants} max_sustained_msg_per_s={} \
         max_sustained_deliveries_per_s={} peak_deliveries_per_s={peak_delivered:.0} \
         joins_per_s={:.0} error_stanzas={} delayed_ignored={}",
        best_sustained.map_or("none".to_owned(), |b| b.to_string()),
        best_sustained.map_or("none".to_owned(), |b| (b * occupants as u64).to_string()),
        joined as f64 / storm_seconds.max(1e-6),
        shared.errors.load(Ordering::Relaxed),
        shared.delayed.load(Ordering::Relaxed),
    );
    drop(writers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::marker_text;

    #[test]
    fn history_is_skipped_and_live_messages_counted() {
        let live = marker_text(1, 2, 3, 4);
        let old = marker_text(0, 0, 0, 0);
        let text = format!(
            "<presence from='r@c/u1'><x xmlns='http://jabber.org/protocol/muc#user'/></presence>\
             <message type='groupchat'><body>{old}</body>\
             <delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/></message>\
             <message type='groupchat'><body>{live}</body></message><message type='group"
        );
        let (found, delayed, keep_from) = scan_messages(text.as_bytes());
        assert_eq!(delayed, 1);
        assert_eq!(
            found,
            vec![Marker {
                step: 1,
                stream: 2,
                seq: 3,
                due_ns: 4,
                sent_ns: None,
            }]
        );
        assert_eq!(&text.as_bytes()[keep_from..], b"<message type='group");
    }

    #[test]
    fn presences_alone_leave_only_a_short_tail() {
        let text = b"<presence from='r@c/u1'/><presence from='r@c/u2'/><mess";
        let (found, delayed, keep_from) = scan_messages(text);
        assert!(found.is_empty());
        assert_eq!(delayed, 0);
        assert!(text.len() - keep_from < MESSAGE_START.len());
        assert!(text[keep_from..].ends_with(b"<mess"));
    }
}
