//! One client connection: the socket (TCP, TLS or WebSocket), and the session it drives.
//!
//! When the connection of a session with Stream Management resumption enabled breaks,
//! the task stays on as a *detached* session for the resume timeout: deliveries keep
//! arriving to it and are kept in the session's bounded queue of unacknowledged stanzas,
//! and a new connection of the same user that asks to resume takes the session over
//! ([`Command::Resume`]), re-sending whatever the client had not acknowledged.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use imbus_core::jid::{BareJid, FullJid, Jid};
use imbus_core::{
    ClientFeatures, CloseReason, Credentials, Event, GatewayId, SessionClosed, SessionEvent,
    SessionId, SessionPresence, SessionState, StanzaReceived, Timestamp, Uuid,
};
use imbus_log::{Log, LogError, Record, Submission, partition_for_key};
use imbus_xmpp_auth::{Decision, SaslCondition, Throttle};
use imbus_xmpp_c2s::{Action, BindAnswer, Input, ResumeState, Session, SessionConfig, Transport};
use imbus_xmpp_stream::{Element, StanzaKind, StreamError, StreamErrorCondition};
use parking_lot::Mutex;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::gateway::{ConnectionLimits, CredentialLookup, SESSIONS, STANZAS, stream_error};
use crate::mailbox::{Inbox, Mail, Mailbox, mailbox};
use crate::tls::channel_bindings;
use crate::tls_stream::TlsStream;

/// What every connection of a gateway shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) gateway_id: GatewayId,
    pub(crate) session: Arc<SessionConfig>,
    pub(crate) limits: ConnectionLimits,
    pub(crate) log: Arc<dyn Log>,
    pub(crate) credentials: Arc<dyn CredentialLookup>,
    pub(crate) sessions_partitions: i32,
    pub(crate) server_end_point: Vec<u8>,
    /// Bound sessions by full JID (detached ones included, until they end).
    pub(crate) registry: Mutex<HashMap<String, Registered>>,
    /// Detached sessions that may be resumed, by resumption id.
    pub(crate) resumable: Mutex<HashMap<String, Resumable>>,
    /// Failed logins per account and per address.
    pub(crate) throttle: Mutex<Throttle>,
    /// New connections per address in the current window (TCP and WebSocket).
    pub(crate) rate: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// In-Band Registration: the registrar and the attempts per address.
    pub(crate) registrations: crate::registration::Registrations,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Held by every connection task, so shutdown can wait for them.
    pub(crate) alive: mpsc::Sender<()>,
}

impl Shared {
    /// Counts a new connection from `ip`; `false` when the address opened too many in
    /// the current window.
    pub(crate) fn admit(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let window = self.limits.rate_window;
        let mut rate = self.rate.lock();
        if rate.len() > 10_000 {
            rate.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = rate.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.limits.connections_per_window
    }
}

/// A detached session's entry among the resumable ones.
#[derive(Debug, Clone)]
pub(crate) struct Resumable {
    user: BareJid,
    connection: u64,
    mailbox: Arc<Mailbox<Command>>,
}

/// A bound session's entry in the registry.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    connection: u64,
    /// Where deliveries and other commands for the connection go.
    pub(crate) mailbox: Arc<Mailbox<Command>>,
}

/// What the gateway asks a connection task to do.
#[derive(Debug)]
///
/// Payloads are boxed: a command waiting in a connection's mailbox takes one word more
/// than its pointer.
pub(crate) enum Command {
    /// Write this stanza to the client; the number is its size as queued (counted
    /// against `ConnectionLimits::outbound_queue_bytes` until the connection takes it).
    Deliver(Box<Element>, usize),
    /// End the session with this stream error.
    Shutdown(Box<StreamError>),
    /// Hand this detached session over to a resuming connection.
    Resume(Box<Handover>),
}

/// A resuming connection's request for a detached session.
#[derive(Debug)]
pub(crate) struct Handover {
    /// The `h` the client sent in `<resume/>`.
    h: u32,
    /// The resuming connection, which takes the session's full JID for deliveries.
    to: Registered,
    /// The session's state and id, or `None` when it cannot be resumed.
    reply: oneshot::Sender<Option<(ResumeState, SessionId)>>,
}

/// How long a resuming connection waits for the detached session to hand over.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a detached session waits for the log to confirm stanzas still in flight
/// before it hands over.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

pub(crate) use imbus_xmpp_stream::parse_stanza;

/// Bytes read from a TCP connection at a time (at most).
const READ_CHUNK: usize = 16 * 1024;

/// The fewest bytes a stanza the session counts can take (`<iq/>`, `<r/>`): a read of `n`
/// bytes adds at most `n / SMALLEST_STANZA` stanzas waiting for the log.
const SMALLEST_STANZA: usize = 4;

/// The most deliveries already waiting that are taken with the one that woke the
/// connection, to go out in one write.
const DELIVERY_BATCH: usize = 64;

/// The most bytes of consecutive outgoing stanzas joined into one write (one TLS record
/// and one system call instead of one per stanza).
const WRITE_BATCH: usize = 64 * 1024;

pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    /// RFC 7395: one XMPP frame per text message.
    Ws(Box<WebSocket>),
    Gone,
}

impl Conn {
    /// Reads into `buf` and returns how many bytes it holds (0: the connection ended).
    /// On a WebSocket, `buf` holds exactly one text message. Cancel-safe.
    /// At most `limit` bytes are read from a TCP stream (at least one).
    ///
    /// A TCP stream is read only when bytes (or, over TLS, decrypted bytes) are there
    /// at once; otherwise `buf`'s memory is released and the read waits for the socket to
    /// become readable without holding a buffer: an idle connection keeps no read buffer.
    /// The wait is a poll that leaves the task's waker with the socket, so it keeps no
    /// state in the connection's task either.
    fn read<'a>(
        &'a mut self,
        buf: &'a mut Vec<u8>,
        limit: usize,
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        std::future::poll_fn(move |cx| self.poll_read(cx, buf, limit))
    }

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        let size = limit.clamp(1, READ_CHUNK);
        match self {
            Conn::Plain(s) => loop {
                if s.poll_read_ready(cx)?.is_pending() {
                    *buf = Vec::new();
                    return Poll::Pending;
                }
                buf.resize(size, 0);
                match s.try_read(buf) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    // The readiness was stale: wait again, without the buffer.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => *buf = Vec::new(),
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            // Keeps what it took from the socket while a record is unfinished, and
            // releases `buf` and its own buffers while waiting.
            Conn::Tls(s) => s.poll_read(cx, buf, size),
            Conn::Ws(ws) => loop {
                let message = match ready!(ws.poll_next_unpin(cx)) {
                    None => return Poll::Ready(Ok(0)),
                    Some(Ok(message)) => message,
                    Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                };
                match message {
                    Message::Text(text) => {
                        buf.clear();
                        buf.extend_from_slice(text.as_str().as_bytes());
                        if buf.is_empty() {
                            // An empty message carries no frame; keep reading.
                            continue;
                        }
                        return Poll::Ready(Ok(buf.len()));
                    }
                    Message::Binary(_) => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "binary WebSocket message (RFC 7395 uses text messages)",
                        )));
                    }
                    Message::Close(_) => return Poll::Ready(Ok(0)),
                    Message::Ping(_) | Message::Pong(_) => continue,
                }
            },
            Conn::Gone => Poll::Ready(Ok(0)),
        }
    }

    async fn write(&mut self, data: Vec<u8>) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(&data).await,
            Conn::Tls(s) => s.write(&data).await,
            Conn::Ws(ws) => {
                let text = String::from_utf8(data)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                ws.send(Message::text(text)).await.map_err(io::Error::other)
            }
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
            Conn::Ws(ws) => ws
                .send(Message::Close(None))
                .await
                .map_err(io::Error::other),
            Conn::Gone => Ok(()),
        };
        *self = Conn::Gone;
    }
}

/// Records appended in order on behalf of one connection.
enum Append {
    Stanza {
        seq: u64,
        key: String,
        value: Vec<u8>,
    },
    Session {
        partition: i32,
        key: String,
        value: Vec<u8>,
    },
}

/// What a finished append reports.
enum Appended {
    /// The stanzas of these sequence numbers are stored (in this order), or the log
    /// refused them.
    Stanzas(Result<Vec<u64>, LogError>),
    /// Only session records were appended (or the failure logged).
    Session,
}

/// An append in progress.
type Appending = std::pin::Pin<Box<dyn Future<Output = Appended> + Send>>;

/// A connection's log appends, made in the client's order by the connection task itself:
/// no task or channel of its own, and nothing allocated while the connection is idle.
/// One append is in progress at a time; what the client sent meanwhile waits in the
/// queue and goes to the log as one batch when it ends, so a client that sends faster
/// than one stanza per group commit is stored a batch per commit instead of a stanza.
struct Appender {
    log: Arc<dyn Log>,
    /// Waiting behind the one in progress.
    queue: VecDeque<Append>,
    current: Option<Appending>,
    /// A stanza append failed: nothing more is appended.
    failed: bool,
}

impl Appender {
    fn new(log: Arc<dyn Log>) -> Self {
        Self {
            log,
            queue: VecDeque::new(),
            current: None,
            failed: false,
        }
    }

    /// Queues `append` behind the earlier ones; `false` once a stanza append failed.
    fn push(&mut self, append: Append) -> bool {
        if self.failed {
            return false;
        }
        self.queue.push_back(append);
        self.start();
        true
    }

    fn start(&mut self) {
        if self.current.is_some() || self.queue.is_empty() {
            return;
        }
        let log = self.log.clone();
        self.current = Some(if self.queue.len() == 1 {
            let Some(append) = self.queue.pop_front() else {
                return;
            };
            Box::pin(append_one(log, append))
        } else {
            let batch: Vec<Append> = self.queue.drain(..).collect();
            Box::pin(append_batch(log, batch))
        });
        if self.queue.capacity() > 4 {
            self.queue = VecDeque::new();
        }
    }

    /// Whether an append is in progress.
    fn busy(&self) -> bool {
        self.current.is_some()
    }

    /// Waits for the append in progress to finish and starts the next; never finishes
    /// when none is in progress. Cancel-safe: the append goes on in `self`.
    async fn next(&mut self) -> Appended {
        let Some(current) = self.current.as_mut() else {
            return std::future::pending().await;
        };
        let done = current.await;
        self.current = None;
        if matches!(done, Appended::Stanzas(Err(_))) {
            self.failed = true;
            self.queue.clear();
        }
        self.start();
        done
    }

    /// Finishes every queued append.
    async fn drain(&mut self) {
        while self.busy() {
            self.next().await;
        }
    }
}

/// One record: the log's single-record path (no batch to allocate).
async fn append_one(log: Arc<dyn Log>, append: Append) -> Appended {
    match append {
        Append::Stanza { seq, key, value } => Appended::Stanzas(
            log.append(STANZAS, Record::new(key, value))
                .await
                .map(|_| vec![seq]),
        ),
        Append::Session {
            partition,
            key,
            value,
        } => {
            if let Err(e) = log
                .append_to(SESSIONS, partition, Record::new(key.clone(), value))
                .await
            {
                tracing::warn!(session = key, error = %e, "cannot record the session");
            }
            Appended::Session
        }
    }
}

/// Several records, submitted together in order and acknowledged together.
async fn append_batch(log: Arc<dyn Log>, batch: Vec<Append>) -> Appended {
    let mut seqs = Vec::new();
    let mut records = Vec::with_capacity(batch.len());
    for append in batch {
        records.push(match append {
            Append::Stanza { seq, key, value } => {
                seqs.push(seq);
                Submission::keyed(STANZAS, Record::new(key, value))
            }
            Append::Session {
                partition,
                key,
                value,
            } => Submission {
                topic: SESSIONS.to_string(),
                partition: Some(partition),
                record: Record::new(key, value),
            },
        });
    }
    let stored = match log.submit(records).await {
        Ok(acknowledgement) => acknowledgement.await,
        Err(e) => Err(e),
    };
    if seqs.is_empty() {
        if let Err(e) = stored {
            tracing::warn!(error = %e, "cannot record the session");
        }
        return Appended::Session;
    }
    Appended::Stanzas(stored.map(|()| seqs))
}

/// What woke the connection task.
enum Wake {
    Read(usize),
    Eof(Option<io::Error>),
    Command(Command),
    Appended(Appended),
    Timer,
    Slow,
    Shutdown,
}

/// How [`Connection::serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The session is over.
    Closed,
    /// The connection broke while the session was established.
    Lost,
}

struct Connection {
    id: u64,
    session_id: SessionId,
    peer: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<Arc<ServerConfig>>,
    conn: Conn,
    session: Session,
    /// This connection's mailbox (its sending side, for registry entries).
    mailbox: Arc<Mailbox<Command>>,
    appender: Appender,
    bound: Option<FullJid>,
    /// A command taken from the mailbox while collecting waiting deliveries, handled
    /// next.
    deferred: Option<Command>,
    deadline: Option<tokio::time::Instant>,
    close_reason: Option<(CloseReason, Option<String>)>,
    /// The account of the SASL exchange in progress (for the login throttle).
    auth_account: Option<String>,
}

/// What a connection task starts from. Boxed: an async function keeps room for its
/// arguments in its future for as long as it runs, and a connection's task lives as long
/// as the connection.
struct Start {
    conn: Conn,
    peer: SocketAddr,
    transport: Transport,
    acceptor: Option<Arc<ServerConfig>>,
    shared: Arc<Shared>,
}

/// Serves one accepted TCP connection until it ends.
pub(crate) fn run(
    socket: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    acceptor: Arc<ServerConfig>,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> + Send {
    drive(Box::new(Start {
        conn: Conn::Plain(socket),
        peer,
        transport,
        acceptor: Some(acceptor),
        shared,
    }))
}

/// Serves one upgraded WebSocket connection (RFC 7395) until it ends.
pub(crate) fn run_websocket(
    socket: WebSocket,
    peer: SocketAddr,
    secure: bool,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> + Send {
    drive(Box::new(Start {
        conn: Conn::Ws(Box::new(socket)),
        peer,
        transport: Transport::WebSocket { secure },
        acceptor: None,
        shared,
    }))
}

/// Drives the session of a connection (after the TLS handshake of a direct TLS one), then
/// keeps it detached for resumption if its connection broke, then records its end.
async fn drive(start: Box<Start>) {
    // Taken out of its box in a block of its own, so the box is freed now rather than
    // kept (empty) for the connection's life.
    let Start {
        conn,
        peer,
        transport,
        acceptor,
        shared,
    } = {
        let start = start;
        *start
    };
    let _alive = shared.alive.clone();
    let conn = match (conn, &acceptor) {
        (Conn::Plain(socket), Some(acceptor)) if transport.encrypted() => {
            match handshake(acceptor.clone(), socket, &shared.limits).await {
                Ok(tls) => Conn::Tls(Box::new(tls)),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            }
        }
        (conn, _) => conn,
    };
    let session_id = match SessionId::new(Uuid::new_v4().simple().to_string()) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "cannot make a session id");
            return;
        }
    };
    let direct_tls = matches!(conn, Conn::Tls(_));
    let (mailbox, command_rx) = mailbox(shared.limits.outbound_queue);
    let mut connection = Connection {
        id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
        session_id,
        peer,
        acceptor,
        conn,
        session: Session::new(shared.session.clone(), transport),
        appender: Appender::new(shared.log.clone()),
        shared,
        mailbox,
        bound: None,
        deferred: None,
        deadline: None,
        close_reason: None,
        auth_account: None,
    };
    tracing::debug!(%peer, session = connection.session_id.as_str(), "connection accepted");
    let mut pending: VecDeque<Action> = connection.session.start(Instant::now()).into();
    if direct_tls {
        let bindings = connection.bindings();
        pending.extend(connection.session.handle(
            Input::TlsEstablished {
                channel_bindings: bindings,
            },
            Instant::now(),
        ));
    }
    let end = connection.serve(pending, &command_rx).await;
    let handed_over = end == End::Lost && connection.detach(&command_rx).await;
    if !handed_over {
        connection.finish().await;
    }
    // What the client sent is stored before the task ends (a resuming connection
    // waited for it a while already).
    connection.appender.drain().await;
}

async fn handshake(
    config: Arc<ServerConfig>,
    socket: TcpStream,
    limits: &ConnectionLimits,
) -> io::Result<TlsStream> {
    // Boxed: the handshake's state (a whole TLS connection mid-handshake) would otherwise
    // size the connection task for as long as the connection lives.
    Box::pin(tokio::time::timeout(
        limits.tls_handshake_timeout,
        TlsStream::accept(socket, config),
    ))
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

impl Connection {
    fn bindings(&mut self) -> Vec<imbus_xmpp_auth::ChannelBinding> {
        match &mut self.conn {
            Conn::Tls(tls) => channel_bindings(tls, &self.shared.server_end_point),
            _ => Vec::new(),
        }
    }

    /// Whether the connection broke while the session was established (as opposed to
    /// the session having ended).
    fn end(&self) -> End {
        let lost = matches!(self.close_reason, Some((CloseReason::ConnectionLost, _)));
        if lost && !self.session.is_closed() && self.bound.is_some() {
            End::Lost
        } else {
            End::Closed
        }
    }

    async fn serve(&mut self, mut pending: VecDeque<Action>, command_rx: &Inbox<Command>) -> End {
        let mut buf = Vec::new();
        let mut shutdown = self.shared.shutdown.clone();
        let mut shutting_down = *shutdown.borrow();
        if shutting_down {
            return End::Closed;
        }
        let max_in_flight = self.shared.session.max_in_flight;
        let join_writes = !matches!(self.conn, Conn::Ws(_));
        loop {
            while !pending.is_empty() {
                let alive = match next_action(&mut pending, join_writes) {
                    Some(Action::Send(bytes)) => self.write(bytes).await,
                    // Boxed: the rarer actions' futures would otherwise take their room in
                    // every connection's task for its whole life.
                    Some(action) => Box::pin(self.perform(action, &mut pending)).await,
                    None => true,
                };
                if !alive {
                    return self.end();
                }
            }
            // The queue grows to the most actions one event produced (a login's steps:
            // about a kilobyte and a half); a connection that waits keeps none of it.
            if pending.capacity() > 0 {
                pending = VecDeque::new();
            }
            if self.session.is_closed() {
                return End::Closed;
            }
            let deadline = self.deadline;
            // Backpressure: a client that sends faster than the log stores is not read
            // from until half of its stanzas in flight are stored, and a read never holds
            // more stanzas than the session may still take (exceeding `max_in_flight`
            // ends the stream).
            let in_flight = self.session.in_flight();
            let reading = in_flight <= max_in_flight / 2;
            let limit = max_in_flight
                .saturating_sub(in_flight)
                .saturating_mul(SMALLEST_STANZA);
            let wake = if let Some(command) = self.deferred.take() {
                Wake::Command(command)
            } else {
                tokio::select! {
                read = self.conn.read(&mut buf, limit), if reading => match read {
                    Ok(0) => Wake::Eof(None),
                    Ok(n) => Wake::Read(n),
                    Err(e) => Wake::Eof(Some(e)),
                },
                mail = command_rx.recv() => match mail {
                    Mail::Command(command) => Wake::Command(command),
                    Mail::Slow => Wake::Slow,
                },
                done = self.appender.next(), if self.appender.busy() => Wake::Appended(done),
                () = sleep_until(deadline), if deadline.is_some() => Wake::Timer,
                _ = shutdown.changed(), if !shutting_down => Wake::Shutdown,
                }
            };
            let now = Instant::now();
            let actions = match wake {
                Wake::Read(n) => {
                    let actions = self.session.handle(Input::Bytes(&buf[..n]), now);
                    self.session.release_memory();
                    actions
                }
                Wake::Eof(error) => {
                    self.close_reason =
                        Some((CloseReason::ConnectionLost, error.map(|e| e.to_string())));
                    return self.end();
                }
                Wake::Command(Command::Deliver(element, bytes)) => {
                    self.mailbox.taken(bytes);
                    let mut actions = self.session.handle(Input::Deliver(*element), now);
                    // Deliveries already waiting go out with this one.
                    for _ in 1..DELIVERY_BATCH {
                        match command_rx.try_recv() {
                            Some(Command::Deliver(element, bytes)) => {
                                self.mailbox.taken(bytes);
                                actions.extend(self.session.handle(Input::Deliver(*element), now));
                            }
                            Some(other) => {
                                self.deferred = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    actions
                }
                Wake::Command(Command::Shutdown(error)) => {
                    self.session.handle(Input::Shutdown(*error), now)
                }
                Wake::Command(Command::Resume(handover)) => {
                    // Only detached sessions hand over.
                    let _ = handover.reply.send(None);
                    Vec::new()
                }
                Wake::Appended(Appended::Stanzas(Ok(seqs))) => self.published(seqs, now),
                Wake::Appended(Appended::Session) => Vec::new(),
                Wake::Appended(Appended::Stanzas(Err(e))) => {
                    tracing::error!(session = self.session_id.as_str(), error = %e, "cannot append a stanza to the log; ending the session");
                    let error = stream_error(
                        StreamErrorCondition::InternalServerError,
                        "the stanza could not be stored",
                    );
                    self.session.handle(Input::Shutdown(error), now)
                }
                Wake::Timer => {
                    self.deadline = None;
                    self.session.handle(Input::Timeout, now)
                }
                Wake::Slow => {
                    let error = stream_error(
                        StreamErrorCondition::PolicyViolation,
                        "the client does not read its stanzas fast enough",
                    );
                    self.session.handle(Input::Shutdown(error), now)
                }
                Wake::Shutdown => {
                    shutting_down = true;
                    let error = StreamError::new(StreamErrorCondition::SystemShutdown);
                    self.session.handle(Input::Shutdown(error), now)
                }
            };
            pending.extend(actions);
        }
    }

    /// Writes bytes to the client; `false` when the connection is over.
    async fn write(&mut self, bytes: Vec<u8>) -> bool {
        let write = tokio::time::timeout(self.shared.limits.write_timeout, self.conn.write(bytes));
        let failure = match write.await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "write timed out".to_owned(),
        };
        tracing::debug!(peer = %self.peer, error = failure, "write failed");
        self.close_reason = Some((CloseReason::ConnectionLost, Some(failure)));
        false
    }

    /// Performs one action; `false` when the connection is over.
    async fn perform(&mut self, action: Action, pending: &mut VecDeque<Action>) -> bool {
        let now = Instant::now();
        match action {
            Action::Send(bytes) => return self.write(bytes).await,
            Action::StartTls => {
                let acceptor = self.acceptor.clone();
                let (Some(acceptor), Conn::Plain(socket)) =
                    (acceptor, std::mem::replace(&mut self.conn, Conn::Gone))
                else {
                    self.close_reason = Some((
                        CloseReason::StreamError,
                        Some("STARTTLS on an encrypted connection".to_owned()),
                    ));
                    return false;
                };
                match handshake(acceptor, socket, &self.shared.limits).await {
                    Ok(tls) => self.conn = Conn::Tls(Box::new(tls)),
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, error = %e, "STARTTLS handshake failed");
                        self.close_reason =
                            Some((CloseReason::ConnectionLost, Some(e.to_string())));
                        return false;
                    }
                }
                let channel_bindings = self.bindings();
                pending.extend(
                    self.session
                        .handle(Input::TlsEstablished { channel_bindings }, now),
                );
            }
            Action::LookupCredentials {
                jid, derives_key, ..
            } => {
                let decision = self
                    .shared
                    .throttle
                    .lock()
                    .check(now, jid.as_str(), self.peer.ip());
                self.auth_account = Some(jid.as_str().to_owned());
                let input = match decision {
                    Decision::Allow => {
                        let credentials: Option<Credentials> =
                            self.shared.credentials.lookup(jid.as_str());
                        Input::Credentials(credentials)
                    }
                    Decision::Wait(wait) => {
                        tracing::info!(peer = %self.peer, user = jid.as_str(), retry_in = ?wait, "login refused: too many failed logins for this account or address");
                        Input::LookupFailed
                    }
                };
                let actions = if derives_key && may_block_in_place() {
                    // PBKDF2 of a PLAIN password: this worker's other tasks move to
                    // another thread meanwhile instead of waiting for it.
                    tokio::task::block_in_place(|| self.session.handle(input, now))
                } else {
                    self.session.handle(input, now)
                };
                pending.extend(actions);
            }
            Action::AuthFailed {
                username,
                condition,
            } => {
                tracing::info!(peer = %self.peer, user = ?username, ?condition, "authentication failed");
                let account = self.auth_account.take();
                record_auth_failure(
                    &mut self.shared.throttle.lock(),
                    now,
                    account.as_deref(),
                    self.peer.ip(),
                    condition,
                );
            }
            Action::Authenticated { jid, mechanism } => {
                tracing::debug!(peer = %self.peer, user = jid.as_str(), ?mechanism, "authenticated");
                self.auth_account = None;
                self.shared.throttle.lock().record_success(jid.as_str());
            }
            Action::BindRequested { full_jid } => {
                let in_use = self.shared.registry.lock().contains_key(full_jid.as_str());
                let answer = if in_use {
                    BindAnswer::InUse
                } else {
                    BindAnswer::Free
                };
                pending.extend(self.session.handle(Input::Bind(answer), now));
            }
            Action::Bound { full_jid, .. } => {
                self.register(&full_jid);
                let event = SessionEvent::Bound(SessionState {
                    jid: full_jid.clone(),
                    gateway_id: self.shared.gateway_id.clone(),
                    session_id: self.session_id.clone(),
                    at: Timestamp::now(),
                    presence: SessionPresence::unavailable(),
                    features: ClientFeatures::default(),
                });
                self.bound = Some(full_jid);
                self.append_session(event).await;
            }
            Action::ChangeAccount(change) => {
                // Rare, so boxed: it does not size the connection task.
                let outcome =
                    Box::pin(self.shared.registrations.perform(self.peer.ip(), change)).await;
                pending.extend(
                    self.session
                        .handle(Input::AccountChanged(outcome), Instant::now()),
                );
            }
            Action::ResumeRequested { previd, h } => {
                // Rare, so boxed: it does not size the connection task.
                let state = Box::pin(self.take_over(&previd, h)).await;
                pending.extend(self.session.handle(Input::Resume(state), Instant::now()));
            }
            Action::Resumed { full_jid } => {
                self.register(&full_jid);
                self.bound = Some(full_jid);
            }
            Action::Publish { seq, stanza, kind } => {
                let Some(sender) = self.session.jid().cloned() else {
                    return true;
                };
                let event = StanzaReceived {
                    event_id: Uuid::now_v7(),
                    gateway_id: self.shared.gateway_id.clone(),
                    session_id: self.session_id.clone(),
                    received_at: Timestamp::now(),
                    sender,
                    recipient: stanza.attr("to").and_then(|to| Jid::new(to).ok()),
                    kind: match kind {
                        StanzaKind::Message(_) => imbus_core::StanzaKind::Message,
                        StanzaKind::Presence(_) => imbus_core::StanzaKind::Presence,
                        StanzaKind::Iq(_) => imbus_core::StanzaKind::Iq,
                    },
                    stanza_type: stanza.attr("type").map(str::to_owned),
                    stanza_id: stanza.attr("id").map(str::to_owned),
                    xml: stanza.to_xml(),
                };
                // Outbound processing happens on the sender's partition (the router re-keys
                // the stanza to its recipient's partition from there).
                let key = event.sender.to_bare().as_str().to_owned();
                let value = match imbus_schemas::encode(&Event::from(event)) {
                    Ok(value) => value,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot encode a stanza; ending the session");
                        let error = stream_error(
                            StreamErrorCondition::InternalServerError,
                            "the stanza could not be stored",
                        );
                        pending.extend(self.session.handle(Input::Shutdown(error), now));
                        return true;
                    }
                };
                if !self.appender.push(Append::Stanza { seq, key, value }) {
                    self.close_reason = Some((
                        CloseReason::StreamError,
                        Some("the log refused a stanza".to_owned()),
                    ));
                    return false;
                }
            }
            Action::Close { error } => {
                self.close_reason
                    .get_or_insert(close_reason(error.as_ref()));
                return false;
            }
            Action::ArmTimer(duration) => {
                self.deadline = Some(tokio::time::Instant::now() + duration);
            }
            Action::DisarmTimer => self.deadline = None,
        }
        true
    }

    /// This connection's entry in the registry.
    fn registration(&self) -> Registered {
        Registered {
            connection: self.id,
            mailbox: self.mailbox.clone(),
        }
    }

    /// Asks the detached session `previd` of this user to hand itself over; its state,
    /// or `None` when there is no such session to resume.
    async fn take_over(&mut self, previd: &str, h: u32) -> Option<ResumeState> {
        let user = self.session.user()?.clone();
        let target = self
            .shared
            .resumable
            .lock()
            .get(previd)
            .filter(|r| r.user == user)
            .map(|r| r.mailbox.clone());
        let Some(target) = target else {
            tracing::debug!(peer = %self.peer, user = user.as_str(), "no session to resume");
            return None;
        };
        let (reply, answer) = oneshot::channel();
        let handover = Handover {
            h,
            to: self.registration(),
            reply,
        };
        if target.send(Command::Resume(Box::new(handover))).is_err() {
            return None;
        }
        let (state, session_id) = tokio::time::timeout(HANDOVER_TIMEOUT, answer)
            .await
            .ok()?
            .ok()??;
        tracing::debug!(peer = %self.peer, session = session_id.as_str(), jid = state.jid.as_str(), "session resumed");
        // The session goes on under its id; this connection now records its end.
        self.session_id = session_id;
        self.bound = Some(state.jid.clone());
        Some(state)
    }

    /// Keeps a session whose connection broke for the resume timeout: deliveries go to
    /// its queue of unacknowledged stanzas and stanzas in flight are confirmed. `true`
    /// when a resuming connection took it over (which then records its end); `false`
    /// when it ended (timeout, shutdown, replaced, queue overflow) and must be finished.
    async fn detach(&mut self, command_rx: &Inbox<Command>) -> bool {
        let (Some(id), Some(user)) = (
            self.session.resumption_id().map(str::to_owned),
            self.session.user().cloned(),
        ) else {
            return false;
        };
        let mut shutdown = self.shared.shutdown.clone();
        if *shutdown.borrow() {
            return false;
        }
        self.conn.shutdown().await;
        let timeout = self.shared.session.sm_resume_timeout;
        tracing::debug!(peer = %self.peer, session = self.session_id.as_str(), ?timeout, "connection lost; the session may be resumed");
        self.shared.resumable.lock().insert(
            id.clone(),
            Resumable {
                user,
                connection: self.id,
                mailbox: self.mailbox.clone(),
            },
        );
        let expires = tokio::time::Instant::now() + timeout;
        let handed_over = loop {
            tokio::select! {
                command = next_command(&mut self.deferred, command_rx) => match command {
                    Command::Deliver(element, bytes) => {
                        self.mailbox.taken(bytes);
                        let actions = self.session.handle(Input::Deliver(*element), Instant::now());
                        if self.detached_actions(actions) {
                            break false;
                        }
                    }
                    Command::Shutdown(error) => {
                        self.close_reason = Some(close_reason(Some(&error)));
                        break false;
                    }
                    Command::Resume(handover) => {
                        if self.hand_over(*handover, command_rx).await {
                            break true;
                        }
                    }
                },
                done = self.appender.next(), if self.appender.busy() => {
                    let seqs = match done {
                        Appended::Stanzas(Ok(seqs)) => seqs,
                        Appended::Stanzas(Err(_)) => break false,
                        Appended::Session => continue,
                    };
                    let actions = self.published(seqs, Instant::now());
                    if self.detached_actions(actions) {
                        break false;
                    }
                }
                () = tokio::time::sleep_until(expires) => {
                    self.close_reason = Some((
                        CloseReason::ConnectionLost,
                        Some(format!("not resumed within {} s", timeout.as_secs())),
                    ));
                    break false;
                }
                _ = shutdown.changed() => {
                    self.close_reason = Some((CloseReason::GatewayShutdown, None));
                    break false;
                }
            }
        };
        let mut resumable = self.shared.resumable.lock();
        if resumable.get(&id).is_some_and(|r| r.connection == self.id) {
            resumable.remove(&id);
        }
        handed_over
    }

    /// Tells the session that the log stored the stanzas of these sequence numbers.
    fn published(&mut self, seqs: Vec<u64>, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for seq in seqs {
            actions.extend(self.session.handle(Input::Published { seq }, now));
        }
        actions
    }

    /// Performs what a detached session asks for: nothing can be written, so only the
    /// end of the session matters. `true` when it ended.
    fn detached_actions(&mut self, actions: Vec<Action>) -> bool {
        for action in actions {
            if let Action::Close { error } = action {
                self.close_reason = Some(close_reason(error.as_ref()));
                return true;
            }
        }
        self.session.is_closed()
    }

    /// Hands this detached session to a resuming connection: moves the full JID's
    /// deliveries to it, folds in what was delivered meanwhile and the log's last
    /// confirmations, and replies with the state. `false` when it cannot be resumed.
    async fn hand_over(&mut self, handover: Handover, command_rx: &Inbox<Command>) -> bool {
        let Handover { h, to, reply } = handover;
        let acceptable = self
            .session
            .resume_state()
            .is_some_and(|s| (h.wrapping_sub(s.acked) as usize) <= s.unacked.len());
        let Some(jid) = self.bound.clone().filter(|_| acceptable) else {
            let _ = reply.send(None);
            return false;
        };
        // Stanzas the log confirms now count as handled, so the client does not send
        // them again.
        let give_up = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
        while self.session.in_flight() > 0 {
            match tokio::time::timeout_at(give_up, self.appender.next()).await {
                Ok(Appended::Stanzas(Ok(seqs))) => {
                    let _ = self.published(seqs, Instant::now());
                }
                Ok(Appended::Session) => {}
                Ok(Appended::Stanzas(Err(_))) | Err(_) => break,
            }
        }
        let previous = {
            let mut registry = self.shared.registry.lock();
            match registry.get(jid.as_str()) {
                Some(r) if r.connection == self.id => {
                    registry.insert(jid.as_str().to_owned(), to.clone())
                }
                _ => None,
            }
        };
        let Some(previous) = previous else {
            let _ = reply.send(None);
            return false;
        };
        // Deliveries queued before the registry moved (the gateway hands them over under
        // the registry's lock, so none can follow).
        while let Some(command) = command_rx.try_recv() {
            match command {
                Command::Deliver(element, bytes) => {
                    self.mailbox.taken(bytes);
                    let _ = self
                        .session
                        .handle(Input::Deliver(*element), Instant::now());
                }
                Command::Resume(other) => {
                    let _ = other.reply.send(None);
                }
                Command::Shutdown(_) => {}
            }
        }
        let Some(state) = self.session.resume_state() else {
            let _ = reply.send(None);
            return false;
        };
        if reply.send(Some((state, self.session_id.clone()))).is_err() {
            // The resuming connection is gone: take the full JID back.
            let mut registry = self.shared.registry.lock();
            if registry
                .get(jid.as_str())
                .is_some_and(|r| r.connection == to.connection)
            {
                registry.insert(jid.as_str().to_owned(), previous);
            }
            return false;
        }
        true
    }

    /// Makes this connection the holder of `full_jid`, ending any earlier holder.
    fn register(&mut self, full_jid: &FullJid) {
        let entry = self.registration();
        let previous = self
            .shared
            .registry
            .lock()
            .insert(full_jid.as_str().to_owned(), entry);
        if let Some(previous) = previous.filter(|p| p.connection != self.id) {
            let error = StreamError::new(StreamErrorCondition::Conflict);
            if previous
                .mailbox
                .try_send(Command::Shutdown(Box::new(error)))
                .is_err()
            {
                previous.mailbox.mark_slow();
            }
        }
    }

    async fn append_session(&mut self, event: SessionEvent) {
        let jid = event.jid().clone();
        let partition = partition_for_key(
            jid.to_bare().as_str().as_bytes(),
            self.shared.sessions_partitions,
        );
        match imbus_schemas::encode(&Event::from(event)) {
            Ok(value) => {
                let append = Append::Session {
                    partition,
                    key: jid.as_str().to_owned(),
                    value,
                };
                let _ = self.appender.push(append);
            }
            Err(e) => {
                tracing::warn!(session = jid.as_str(), error = %e, "cannot encode a session event")
            }
        }
    }

    /// Unregisters the session, records its end and closes the socket.
    async fn finish(&mut self) {
        if let Some(jid) = self.bound.take() {
            let held = {
                let mut registry = self.shared.registry.lock();
                let held = registry
                    .get(jid.as_str())
                    .is_some_and(|r| r.connection == self.id);
                if held {
                    registry.remove(jid.as_str());
                }
                held
            };
            if !held {
                // Another session took this full JID and recorded itself under the same
                // key of the compacted `sessions` topic: a `Closed` appended now would
                // hide the new session.
                tracing::debug!(session = jid.as_str(), "replaced session closed");
                self.conn.shutdown().await;
                return;
            }
            let (reason, detail) = self
                .close_reason
                .take()
                .unwrap_or((CloseReason::ConnectionLost, None));
            let event = SessionEvent::Closed(SessionClosed {
                jid,
                gateway_id: self.shared.gateway_id.clone(),
                session_id: self.session_id.clone(),
                at: Timestamp::now(),
                reason,
                detail,
            });
            self.append_session(event).await;
        }
        self.conn.shutdown().await;
        tracing::debug!(peer = %self.peer, session = self.session_id.as_str(), "connection closed");
    }
}

/// Why a session ended, from the stream error it was closed with (none: the client
/// closed it).
fn close_reason(error: Option<&StreamError>) -> (CloseReason, Option<String>) {
    let reason = match error.map(|e| e.condition) {
        None => CloseReason::ClientClosed,
        Some(StreamErrorCondition::Conflict) => CloseReason::Replaced,
        Some(StreamErrorCondition::SystemShutdown) => CloseReason::GatewayShutdown,
        Some(_) => CloseReason::StreamError,
    };
    (reason, error.map(|e| e.condition.as_str().to_owned()))
}

/// Whether this task may hand its worker's other tasks to another thread while it blocks
/// (`block_in_place`: the multi-threaded runtime only).
fn may_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Records a failed login in the throttle: wrong credentials count against the account
/// and the address, other client mistakes against the address only; the throttle's own
/// refusals and aborted exchanges do not count.
fn record_auth_failure(
    throttle: &mut Throttle,
    now: Instant,
    account: Option<&str>,
    address: IpAddr,
    condition: SaslCondition,
) {
    match condition {
        SaslCondition::TemporaryAuthFailure | SaslCondition::Aborted => {}
        SaslCondition::NotAuthorized
        | SaslCondition::InvalidAuthzid
        | SaslCondition::AccountDisabled
        | SaslCondition::CredentialsExpired => match account {
            Some(account) => throttle.record_failure(now, account, address),
            None => throttle.record_address_failure(now, address),
        },
        _ => throttle.record_address_failure(now, address),
    }
}

/// The next action to perform. Consecutive stanzas out are joined into one write when
/// `join_writes` (a WebSocket message carries one stanza, so not there).
fn next_action(pending: &mut VecDeque<Action>, join_writes: bool) -> Option<Action> {
    let mut action = pending.pop_front()?;
    if let Action::Send(bytes) = &mut action
        && join_writes
    {
        while let Some(Action::Send(next)) = pending.front() {
            if bytes.len() + next.len() > WRITE_BATCH {
                break;
            }
            if let Some(Action::Send(next)) = pending.pop_front() {
                bytes.extend_from_slice(&next);
            }
        }
    }
    Some(action)
}

/// The deferred command if there is one, else the next from the mailbox: for a detached
/// session (which writes nothing, so a slow client does not matter to it).
async fn next_command(deferred: &mut Option<Command>, command_rx: &Inbox<Command>) -> Command {
    if let Some(command) = deferred.take() {
        return command;
    }
    loop {
        if let Mail::Command(command) = command_rx.recv().await {
            return command;
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        // Boxed: the timer would otherwise take its room in every connection's task,
        // armed or not.
        Some(deadline) => Box::pin(tokio::time::sleep_until(deadline)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_parse_as_one_stanza() {
        let stanza =
            parse_stanza("<message to='a@b/c' type='chat'><body>hi</body></message>").unwrap();
        assert!(stanza.is("message", "jabber:client"));
        assert_eq!(stanza.attr("to"), Some("a@b/c"));
        assert!(parse_stanza("<message/><message/>").is_none());
        assert!(parse_stanza("<message>").is_none());
        assert!(parse_stanza("<!DOCTYPE x><message/>").is_none());
    }
}
