//! Benchmark client for any XMPP server's client port (imbus, Prosody, ejabberd, …).
//!
//! It speaks the plain client protocol: TCP, STARTTLS (certificate not verified: this is
//! a benchmark tool, never a client), SASL SCRAM-SHA-1 without channel binding, resource
//! binding. Accounts are `<prefix>1` … `<prefix>N` at the domain, all with one password.
//!
//! - `logins`: `--concurrency` tasks each log in and close again in a loop for
//!   `--duration` seconds: TCP connect, STARTTLS with a full TLS handshake (no session
//!   resumption), SCRAM-SHA-1, bind, `</stream:stream>` and wait for the server to close.
//!   Prints logins/s and the latency of the whole cycle and of connect-to-bound
//!   (HdrHistogram, p50/p90/p99/max).
//! - `idle`: opens `--connections` authenticated, bound connections (no presence sent),
//!   prints a line starting with `READY` when all are up, and holds them until SIGINT or
//!   SIGTERM (or `--hold` seconds), reading whatever the server sends.
//!
//! Like a real client, it keeps SCRAM's salted password per account once computed (RFC
//! 5802 §5.1 lets clients cache it), so the run measures the server, not the client's
//! PBKDF2. `--source-ips K` spreads connections over K loopback source addresses
//! (127.10.x.y), against per-address connection rate limits and ephemeral port exhaustion.
//!
//! - `messages`: `--pairs` sender/receiver pairs (accounts 1…2N) exchange chat messages
//!   at stepped open-loop rates; per step: delivered msg/s, loss, order, latency
//!   p50/p99/p99.9 from the due time carried in the body and (`sent_*`) from the time the
//!   sender wrote the message, also in the body, and the server's CPU time per message
//!   (`--server-pid`); stops at saturation and runs a last step at half the highest
//!   sustained rate.
//! - `offline`: senders store messages for receivers that are offline, then the receivers
//!   log in; store and drain rates, loss and order.
//! - `presence`: users follow each other in a ring of `--contacts` subscriptions (set up
//!   over the protocol) and broadcast presence changes at an open-loop rate; deliveries/s
//!   and latency.
//! - `rooms`: `--occupants` users enter one chat room (XEP-0045) at once after the first
//!   created it (a join storm: joins/s, join latency), then `--senders` of them send group
//!   chat at stepped open-loop rates; per step: deliveries/s counted at every occupant,
//!   loss, latency p50/p99/p99.9 and the server's CPU time per delivery; stops at
//!   saturation and runs a last step at half the highest sustained rate.
//!
//! `cargo run --release -p imbus-tests --bin xmppbench -- --help`

mod load;
mod rooms;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use hmac::{Hmac, KeyInit, Mac};
use imbus_xmpp_stream::{Element, ParserConfig, StreamEvent, StreamParser, ns};
use rand::RngCore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Debug, Parser)]
#[command(
    about = "Load and benchmark client for any XMPP server's client port: logins, idle connections, messages, offline, presence, chat rooms"
)]
struct Args {
    /// The server's STARTTLS client port.
    #[arg(long, default_value = "127.0.0.1:5222")]
    server: SocketAddr,
    /// The XMPP domain (stream `to`, account domain, TLS server name).
    #[arg(long, default_value = "example.com")]
    domain: String,
    /// Localpart prefix of the accounts: `<prefix>1` … `<prefix><users>`.
    #[arg(long, default_value = "user")]
    prefix: String,
    /// Number of accounts.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// The password of every account.
    #[arg(long, default_value = "benchpass")]
    password: String,
    /// Spread connections over this many loopback source addresses (127.10.x.y); 0 lets
    /// the system choose (127.0.0.1).
    #[arg(long, default_value_t = 0)]
    source_ips: usize,
    /// Give up on one step of a login (connect, an answer) after this many seconds.
    #[arg(long, default_value_t = 30)]
    step_timeout: u64,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Full login cycles (connect, STARTTLS, SCRAM-SHA-1, bind, close) in a loop.
    Logins {
        /// Concurrent login loops.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 20)]
        duration: u64,
    },
    /// Open authenticated idle connections and hold them.
    Idle {
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Logins in progress at once while opening.
        #[arg(long, default_value_t = 32)]
        ramp: usize,
        /// Hold for this many seconds, then close (default: until SIGINT/SIGTERM).
        #[arg(long)]
        hold: Option<u64>,
    },
    /// One-to-one chat between connected pairs at stepped open-loop rates.
    Messages {
        /// Sender/receiver pairs (accounts 1…2N).
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Offered rates (messages/s over all pairs), stepped in this order.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1000,2000,5000,10000,20000,40000,80000"
        )]
        rates: Vec<u64>,
        /// Seconds of sending per step.
        #[arg(long, default_value_t = 10)]
        step_seconds: u64,
        /// Seconds to wait for stragglers after a step.
        #[arg(long, default_value_t = 5)]
        drain_seconds: u64,
        /// Address the receiver's full JID instead of its bare JID.
        #[arg(long)]
        full_jid: bool,
        /// Run every rate even after the server saturated.
        #[arg(long)]
        all_rates: bool,
        /// Do not run the extra step at half the highest sustained rate.
        #[arg(long)]
        no_half: bool,
        /// Server process ids (repeatable) whose CPU time is charged to the messages.
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
    },
    /// Offline messages: store for offline receivers, then drain at their login.
    Offline {
        /// Sender/receiver pairs (accounts 1…2N).
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Messages per pair.
        #[arg(long, default_value_t = 100)]
        per_pair: u64,
    },
    /// Presence fan-out to subscribed contacts.
    Presence {
        /// Connected users (accounts 1…N).
        #[arg(long, default_value_t = 100)]
        online: usize,
        /// Contacts following each user.
        #[arg(long, default_value_t = 20)]
        contacts: usize,
        /// Presence changes per second over all users.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Seconds of presence changes.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds to wait for stragglers.
        #[arg(long, default_value_t = 5)]
        drain_seconds: u64,
        /// Server process ids (repeatable) whose CPU time is charged to the deliveries.
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
    },
    /// A join storm into one chat room, then group chat fan-out at stepped open-loop rates.
    Rooms {
        /// The chat service's domain (default: conference.<domain>).
        #[arg(long)]
        service: Option<String>,
        /// The room's name (localpart).
        #[arg(long, default_value = "bench")]
        room: String,
        /// Occupants (accounts 1…N); the first creates the room, the others enter at once.
        #[arg(long, default_value_t = 50)]
        occupants: usize,
        /// Occupants that send (accounts 1…S).
        #[arg(long, default_value_t = 10)]
        senders: usize,
        /// Offered rates (messages/s over all senders, each delivered to every occupant),
        /// stepped in this order.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "100,200,500,1000,2000,4000"
        )]
        rates: Vec<u64>,
        /// Seconds of sending per step.
        #[arg(long, default_value_t = 10)]
        step_seconds: u64,
        /// Seconds to wait for stragglers after a step.
        #[arg(long, default_value_t = 5)]
        drain_seconds: u64,
        /// Run every rate even after the server saturated.
        #[arg(long)]
        all_rates: bool,
        /// Do not run the extra step at half the highest sustained rate.
        #[arg(long)]
        no_half: bool,
        /// Logins in progress at once before the join storm.
        #[arg(long, default_value_t = 32)]
        ramp: usize,
        /// Server process ids (repeatable) whose CPU time is charged to joins and
        /// deliveries.
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
    },
}

/// What every connection needs.
struct Bench {
    server: SocketAddr,
    domain: String,
    prefix: String,
    users: usize,
    password: String,
    source_ips: usize,
    step: Duration,
    tls: TlsConnector,
    /// Salted passwords by (user, salt, iterations).
    salted: std::sync::Mutex<HashMap<SaltKey, Vec<u8>>>,
    next_source: AtomicUsize,
    /// The SCRAM iteration count of the first login (the server's setting).
    iterations: std::sync::OnceLock<u32>,
}

type Tls = TlsStream<TcpStream>;
/// An account's SCRAM parameters: user, salt, iteration count.
type SaltKey = (String, Vec<u8>, u32);

/// Reads a server's stream: the next first-level element, or an error for a stream error,
/// the stream's end or the connection's end.
struct Reader {
    parser: StreamParser,
    pending: std::collections::VecDeque<StreamEvent>,
    buf: Vec<u8>,
}

impl Reader {
    fn new() -> Self {
        Self {
            parser: StreamParser::new(ParserConfig::client()),
            pending: Default::default(),
            buf: vec![0; 4096],
        }
    }

    async fn element<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        step: Duration,
    ) -> anyhow::Result<Element> {
        loop {
            match self.pending.pop_front() {
                Some(StreamEvent::Stanza(element)) => {
                    if element.is("error", ns::STREAMS) {
                        let condition = element
                            .children()
                            .find(|c| c.namespace() == ns::XMPP_STREAMS && c.name() != "text")
                            .map(|c| c.name().to_owned())
                            .unwrap_or_default();
                        bail!("stream error {condition}: {}", element.text());
                    }
                    return Ok(element);
                }
                Some(StreamEvent::StreamOpen(_)) => continue,
                Some(StreamEvent::StreamClose) => bail!("the server closed the stream"),
                None => {}
            }
            let n = tokio::time::timeout(step, io.read(&mut self.buf))
                .await
                .context("the server did not answer in time")??;
            if n == 0 {
                bail!("the server closed the connection");
            }
            let events = self
                .parser
                .feed(&self.buf[..n])
                .map_err(|e| anyhow!("unreadable stream from the server: {e:?}"))?;
            self.pending.extend(events);
        }
    }
}

async fn send<S: AsyncWrite + Unpin>(io: &mut S, data: &str) -> anyhow::Result<()> {
    io.write_all(data.as_bytes()).await?;
    io.flush().await?;
    Ok(())
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// One attribute of a SCRAM message.
fn scram_attr(message: &str, name: char) -> Option<&str> {
    message.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

impl Bench {
    fn header(&self) -> String {
        format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xml:lang='en' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            self.domain
        )
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        let connect = async {
            if self.source_ips == 0 {
                return Ok(TcpStream::connect(self.server).await?);
            }
            let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.source_ips;
            let source = Ipv4Addr::new(
                127,
                10 + (i / (256 * 254)) as u8,
                ((i / 254) % 256) as u8,
                (i % 254 + 1) as u8,
            );
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((source, 0)))?;
            anyhow::Ok(socket.connect(self.server).await?)
        };
        let socket = tokio::time::timeout(self.step, connect)
            .await
            .context("TCP connect timed out")??;
        socket.set_nodelay(true)?;
        Ok(socket)
    }

    /// Connects and logs in as user `user` with `resource`: the TLS stream and its reader,
    /// bound.
    async fn login(&self, user: usize, resource: &str) -> anyhow::Result<(Tls, Reader)> {
        let mut tcp = self.connect().await?;
        let mut reader = Reader::new();
        send(&mut tcp, &self.header()).await?;
        let features = reader
            .element(&mut tcp, self.step)
            .await
            .context("waiting for the first features")?;
        if features.child("starttls", ns::XMPP_TLS).is_none() {
            bail!("the server offers no STARTTLS: {features}");
        }
        send(
            &mut tcp,
            "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        )
        .await?;
        let proceed = reader
            .element(&mut tcp, self.step)
            .await
            .context("waiting for STARTTLS proceed")?;
        if !proceed.is("proceed", ns::XMPP_TLS) {
            bail!("STARTTLS refused: {proceed}");
        }
        let name = ServerName::try_from(self.domain.clone())?;
        let mut tls = tokio::time::timeout(self.step, self.tls.connect(name, tcp))
            .await
            .context("TLS handshake timed out")??;
        reader.parser.reset();
        send(&mut tls, &self.header()).await?;
        let features = reader
            .element(&mut tls, self.step)
            .await
            .context("waiting for the features after TLS")?;
        let offered = features
            .child("mechanisms", ns::XMPP_SASL)
            .is_some_and(|m| m.children().any(|c| c.text().trim() == "SCRAM-SHA-1"));
        if !offered {
            bail!("the server offers no SCRAM-SHA-1: {features}");
        }
        let username = format!("{}{}", self.prefix, user);
        self.scram_sha1(&mut tls, &mut reader, &username).await?;
        reader.parser.reset();
        send(&mut tls, &self.header()).await?;
        reader
            .element(&mut tls, self.step)
            .await
            .context("waiting for the features after SASL")?;
        send(
            &mut tls,
            &format!(
                "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                 <resource>{resource}</resource></bind></iq>"
            ),
        )
        .await?;
        let bound = reader
            .element(&mut tls, self.step)
            .await
            .context("waiting for the bind result")?;
        if bound.attr("type") != Some("result") {
            bail!("bind failed: {bound}");
        }
        Ok((tls, reader))
    }

    async fn scram_sha1(
        &self,
        tls: &mut Tls,
        reader: &mut Reader,
        username: &str,
    ) -> anyhow::Result<()> {
        let mut nonce = [0u8; 18];
        rand::rng().fill_bytes(&mut nonce);
        let client_nonce = BASE64.encode(nonce);
        let first_bare = format!("n={username},r={client_nonce}");
        send(
            tls,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{}</auth>",
                BASE64.encode(format!("n,,{first_bare}"))
            ),
        )
        .await?;
        let challenge = reader
            .element(tls, self.step)
            .await
            .context("waiting for the SCRAM challenge")?;
        if !challenge.is("challenge", ns::XMPP_SASL) {
            bail!("SCRAM refused: {challenge}");
        }
        let server_first = String::from_utf8(BASE64.decode(challenge.text().trim())?)?;
        let nonce = scram_attr(&server_first, 'r').context("no nonce")?;
        if !nonce.starts_with(&client_nonce) {
            bail!("the server's nonce does not extend ours");
        }
        let salt = BASE64.decode(scram_attr(&server_first, 's').context("no salt")?)?;
        let iterations: u32 = scram_attr(&server_first, 'i')
            .context("no iteration count")?
            .parse()?;
        let _ = self.iterations.set(iterations);
        let key = (username.to_owned(), salt, iterations);
        let cached = self
            .salted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let salted = match cached {
            Some(salted) => salted,
            None => {
                let mut out = vec![0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(self.password.as_bytes(), &key.1, iterations, &mut out);
                self.salted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, out.clone());
                out
            }
        };
        let client_key = hmac_sha1(&salted, b"Client Key");
        let stored_key = Sha1::digest(&client_key);
        let server_key = hmac_sha1(&salted, b"Server Key");
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let signature = hmac_sha1(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        send(
            tls,
            &format!(
                "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                BASE64.encode(format!("{without_proof},p={}", BASE64.encode(proof)))
            ),
        )
        .await?;
        let outcome = reader
            .element(tls, self.step)
            .await
            .context("waiting for the SCRAM outcome")?;
        if !outcome.is("success", ns::XMPP_SASL) {
            bail!("authentication of {username} failed: {outcome}");
        }
        let server_final = String::from_utf8(BASE64.decode(outcome.text().trim())?)?;
        let verifier = BASE64.decode(scram_attr(&server_final, 'v').context("no verifier")?)?;
        if verifier != hmac_sha1(&server_key, auth_message.as_bytes()) {
            bail!("the server's SCRAM signature is wrong");
        }
        Ok(())
    }

    /// Ends the stream and waits for the server to close it.
    async fn close(&self, mut tls: Tls, mut reader: Reader) -> anyhow::Result<()> {
        send(&mut tls, "</stream:stream>").await?;
        while reader.element(&mut tls, self.step).await.is_ok() {}
        let _ = tokio::time::timeout(self.step, tls.shutdown()).await;
        Ok(())
    }

    fn user(&self, i: usize) -> usize {
        i % self.users.max(1) + 1
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!())
}

fn quantiles(name: &str, h: &Histogram<u64>) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "  {name:<18} p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );
}

async fn logins(bench: Arc<Bench>, concurrency: usize, duration: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + duration;
    let counter = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let bench = bench.clone();
        let counter = counter.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut cycle = histogram();
            let mut bound = histogram();
            let mut first_error = None;
            while Instant::now() < end {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let start = Instant::now();
                let result = async {
                    let (tls, reader) = bench.login(bench.user(i), &format!("b{task}")).await?;
                    let in_session = start.elapsed();
                    bench.close(tls, reader).await?;
                    anyhow::Ok(in_session)
                }
                .await;
                match result {
                    Ok(in_session) => {
                        let _ = bound.record(in_session.as_micros() as u64);
                        let _ = cycle.record(start.elapsed().as_micros() as u64);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (cycle, bound, first_error)
        }));
    }
    let started = Instant::now();
    let mut cycle = histogram();
    let mut bound = histogram();
    let mut first_error = None;
    for task in tasks {
        let (c, b, e) = task.await?;
        cycle.add(&c)?;
        bound.add(&b)?;
        first_error = first_error.or(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = cycle.len();
    println!(
        "logins: {done} in {elapsed:.1} s = {:.1} logins/s at concurrency {concurrency}, {} failed",
        done as f64 / elapsed,
        errors.load(Ordering::Relaxed)
    );
    quantiles("connect..bound", &bound);
    quantiles("connect..closed", &cycle);
    if let Some(e) = first_error {
        println!("  first error: {e}");
    }
    Ok(())
}

async fn idle(
    bench: Arc<Bench>,
    connections: usize,
    ramp: usize,
    hold: Option<u64>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(1024);
    let closed_by_server = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(ramp.max(1)));
    let mut holders = Vec::with_capacity(connections);
    for i in 0..connections {
        let permit = permits.clone().acquire_owned().await?;
        let bench = bench.clone();
        let ready = ready_tx.clone();
        let mut stop = stop_rx.clone();
        let closed_by_server = closed_by_server.clone();
        holders.push(tokio::spawn(async move {
            let login = bench
                .login(bench.user(i), &format!("idle{i}"))
                .await
                .map_err(|e| format!("{e:#}"));
            drop(permit);
            let (mut tls, reader) = match login {
                Ok(pair) => pair,
                Err(e) => {
                    let _ = ready.send(Err(e)).await;
                    return;
                }
            };
            drop(reader);
            let _ = ready.send(Ok(())).await;
            drop(ready);
            // Hold: read (and drop) whatever the server sends, until told to stop.
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    read = tls.read(&mut buf) => {
                        if matches!(read, Ok(0) | Err(_)) {
                            closed_by_server.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
            let _ = send(&mut tls, "</stream:stream>").await;
            let _ = tokio::time::timeout(Duration::from_secs(5), tls.shutdown()).await;
        }));
    }
    drop(ready_tx);
    let (mut up, mut failed, mut first_error) = (0usize, 0usize, None);
    while let Some(result) = ready_rx.recv().await {
        match result {
            Ok(()) => up += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    println!(
        "READY {up} authenticated idle connections ({failed} failed) in {:.1} s, \
         SCRAM-SHA-1 iteration count {}",
        started.elapsed().as_secs_f64(),
        bench.iterations.get().copied().unwrap_or_default()
    );
    if let Some(e) = first_error {
        println!("first error: {e}");
    }
    match hold {
        Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
        None => wait_for_signal().await?,
    }
    println!(
        "closing; {} connections had been closed by the server",
        closed_by_server.load(Ordering::Relaxed)
    );
    let _ = stop_tx.send(true);
    for holder in holders {
        let _ = holder.await;
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Accepts any certificate: benchmarks only.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> anyhow::Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    // Every login pays a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bench = Arc::new(Bench {
        server: args.server,
        domain: args.domain,
        prefix: args.prefix,
        users: args.users,
        password: args.password,
        source_ips: args.source_ips,
        step: Duration::from_secs(args.step_timeout),
        tls: tls_connector()?,
        salted: Default::default(),
        next_source: AtomicUsize::new(0),
        iterations: std::sync::OnceLock::new(),
    });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "xmppbench against {} ({} accounts, {} source addresses), load average {}",
        bench.server,
        bench.users,
        bench.source_ips.max(1),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    match args.mode {
        Mode::Logins {
            concurrency,
            duration,
        } => {
            // Compute every account's salted password first (as a client that logged in
            // before would have), so the measured run is the server's work.
            let warm = concurrency.max(1);
            let mut warmers = Vec::new();
            for w in 0..warm {
                let bench = bench.clone();
                warmers.push(tokio::spawn(async move {
                    let mut failures = 0;
                    for user in (1..=bench.users).filter(|u| u % warm == w) {
                        match bench.login(user, "warm").await {
                            Ok((tls, reader)) => bench.close(tls, reader).await?,
                            Err(e) => {
                                failures += 1;
                                if failures == 1 {
                                    eprintln!("warm-up login of {}{user}: {e:#}", bench.prefix);
                                }
                            }
                        }
                    }
                    anyhow::Ok(failures)
                }));
            }
            let mut failures = 0;
            for warmer in warmers {
                failures += warmer.await??;
            }
            if failures > 0 {
                bail!("{failures} warm-up logins failed");
            }
            println!(
                "the server's SCRAM-SHA-1 iteration count: {}",
                bench.iterations.get().copied().unwrap_or_default()
            );
            logins(bench, concurrency, Duration::from_secs(duration)).await
        }
        Mode::Idle {
            connections,
            ramp,
            hold,
        } => idle(bench, connections, ramp, hold).await,
        Mode::Messages {
            pairs,
            rates,
            step_seconds,
            drain_seconds,
            full_jid,
            all_rates,
            no_half,
            server_pids,
        } => {
            load::messages(
                bench,
                load::MessagesOptions {
                    pairs,
                    rates,
                    step_seconds,
                    drain_seconds,
                    bare: !full_jid,
                    all_rates,
                    half: !no_half,
                    server_pids,
                },
            )
            .await
        }
        Mode::Offline { pairs, per_pair } => load::offline(bench, pairs, per_pair).await,
        Mode::Presence {
            online,
            contacts,
            rate,
            seconds,
            drain_seconds,
            server_pids,
        } => {
            load::presence(
                bench,
                load::PresenceOptions {
                    users: online,
                    contacts,
                    rate,
                    seconds,
                    drain_seconds,
                    server_pids,
                },
            )
            .await
        }
        Mode::Rooms {
            service,
            room,
            occupants,
            senders,
            rates,
            step_seconds,
            drain_seconds,
            all_rates,
            no_half,
            ramp,
            server_pids,
        } => {
            let service = service.unwrap_or_else(|| format!("conference.{}", bench.domain));
            rooms::rooms(
                bench,
                rooms::RoomsOptions {
                    service,
                    room,
                    occupants,
                    senders,
                    rates,
                    step_seconds,
                    drain_seconds,
                    all_rates,
                    half: !no_half,
                    ramp,
                    server_pids,
                },
            )
            .await
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("xmppbench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xmppbench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
