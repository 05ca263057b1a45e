//! One client connection: the socket, its TLS layer, and the session it drives.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use imbus_core::jid::{FullJid, Jid};
use imbus_core::{
    ClientFeatures, CloseReason, Credentials, Event, GatewayId, SessionClosed, SessionEvent,
    SessionId, SessionPresence, SessionState, StanzaReceived, Timestamp, Uuid,
};
use imbus_log::{Log, LogError, Record, partition_for_key};
use imbus_xmpp_c2s::{Action, BindAnswer, Input, Session, SessionConfig, Transport};
use imbus_xmpp_stream::{
    Element, ParserConfig, StanzaKind, StreamError, StreamErrorCondition, StreamEvent, StreamParser,
};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::gateway::{ConnectionLimits, CredentialLookup, SESSIONS, STANZAS, stream_error};
use crate::tls::channel_bindings;

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
    /// Bound sessions by full JID.
    pub(crate) registry: Mutex<HashMap<String, Registered>>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Held by every connection task, so shutdown can wait for them.
    pub(crate) alive: mpsc::Sender<()>,
}

/// A bound session's entry in the registry.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    connection: u64,
    pub(crate) commands: mpsc::Sender<Command>,
    /// Notified when the connection must end because it cannot keep up.
    pub(crate) slow: Arc<Notify>,
}

/// What the gateway asks a connection task to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Write this stanza to the client.
    Deliver(Element),
    /// End the session with this stream error.
    Shutdown(StreamError),
}

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Parses one stanza written as XML (a delivery), in the `jabber:client` namespace.
pub(crate) fn parse_stanza(xml: &str) -> Option<Element> {
    let mut parser = StreamParser::new(ParserConfig::client());
    let header = "<stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    parser.feed(header.as_bytes()).ok()?;
    let events = parser.feed(xml.as_bytes()).ok()?;
    let mut stanzas = events.into_iter().filter_map(|event| match event {
        StreamEvent::Stanza(element) => Some(element),
        _ => None,
    });
    let stanza = stanzas.next()?;
    stanzas.next().is_none().then_some(stanza)
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Gone => Ok(0),
        }
    }

    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(data).await,
            Conn::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
            Conn::Gone => Ok(()),
        };
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

/// Appends a connection's records one after the other (keeping the client's order) and
/// reports each stored stanza's sequence number.
async fn append_loop(
    log: Arc<dyn Log>,
    mut appends: mpsc::Receiver<Append>,
    acks: mpsc::UnboundedSender<Result<u64, LogError>>,
) {
    while let Some(append) = appends.recv().await {
        match append {
            Append::Stanza { seq, key, value } => {
                let result = log.append(STANZAS, Record::new(key, value)).await;
                let failed = result.is_err();
                let _ = acks.send(result.map(|_| seq));
                if failed {
                    return;
                }
            }
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
            }
        }
    }
}

/// What woke the connection task.
enum Wake {
    Read(usize),
    Eof(Option<io::Error>),
    Command(Command),
    Appended(Result<u64, LogError>),
    Timer,
    Slow,
    Shutdown,
}

struct Connection {
    id: u64,
    session_id: SessionId,
    peer: SocketAddr,
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    conn: Conn,
    session: Session,
    commands: mpsc::Sender<Command>,
    slow: Arc<Notify>,
    appends: mpsc::Sender<Append>,
    bound: Option<FullJid>,
    deadline: Option<tokio::time::Instant>,
    close_reason: Option<(CloseReason, Option<String>)>,
}

/// Serves one accepted connection until it ends.
pub(crate) async fn run(
    socket: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
) {
    let _alive = shared.alive.clone();
    let session_id = match SessionId::new(Uuid::new_v4().simple().to_string()) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "cannot make a session id");
            return;
        }
    };
    let direct_tls = transport.encrypted();
    let conn = if direct_tls {
        match handshake(&acceptor, socket, &shared.limits).await {
            Ok(tls) => Conn::Tls(Box::new(tls)),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
        }
    } else {
        Conn::Plain(socket)
    };
    let (commands, command_rx) = mpsc::channel(shared.limits.outbound_queue.max(1));
    let (appends, append_rx) = mpsc::channel(shared.session.max_in_flight.saturating_add(8));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let appender = tokio::spawn(append_loop(shared.log.clone(), append_rx, ack_tx));
    let mut connection = Connection {
        id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
        session_id,
        peer,
        acceptor,
        conn,
        session: Session::new(shared.session.clone(), transport),
        shared,
        commands,
        slow: Arc::new(Notify::new()),
        appends,
        bound: None,
        deadline: None,
        close_reason: None,
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
    connection.serve(pending, command_rx, ack_rx).await;
    connection.finish().await;
    drop(connection);
    if let Err(e) = appender.await {
        tracing::warn!(error = %e, "session appender failed");
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    socket: TcpStream,
    limits: &ConnectionLimits,
) -> io::Result<TlsStream<TcpStream>> {
    tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(socket))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

impl Connection {
    fn bindings(&self) -> Vec<imbus_xmpp_auth::ChannelBinding> {
        match &self.conn {
            Conn::Tls(tls) => channel_bindings(tls.get_ref().1, &self.shared.server_end_point),
            _ => Vec::new(),
        }
    }

    async fn serve(
        &mut self,
        mut pending: VecDeque<Action>,
        mut command_rx: mpsc::Receiver<Command>,
        mut ack_rx: mpsc::UnboundedReceiver<Result<u64, LogError>>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        let mut shutdown = self.shared.shutdown.clone();
        let mut shutting_down = *shutdown.borrow();
        if shutting_down {
            return;
        }
        let max_in_flight = self.shared.session.max_in_flight;
        loop {
            while let Some(action) = pending.pop_front() {
                if !self.perform(action, &mut pending).await {
                    return;
                }
            }
            if self.session.is_closed() {
                return;
            }
            let deadline = self.deadline;
            let slow = self.slow.clone();
            let reading = self.session.in_flight() < max_in_flight;
            let wake = tokio::select! {
                read = self.conn.read(&mut buf), if reading => match read {
                    Ok(0) => Wake::Eof(None),
                    Ok(n) => Wake::Read(n),
                    Err(e) => Wake::Eof(Some(e)),
                },
                Some(command) = command_rx.recv() => Wake::Command(command),
                Some(ack) = ack_rx.recv() => Wake::Appended(ack),
                () = sleep_until(deadline), if deadline.is_some() => Wake::Timer,
                () = slow.notified() => Wake::Slow,
                _ = shutdown.changed(), if !shutting_down => Wake::Shutdown,
            };
            let now = Instant::now();
            let actions = match wake {
                Wake::Read(n) => self.session.handle(Input::Bytes(&buf[..n]), now),
                Wake::Eof(error) => {
                    self.close_reason =
                        Some((CloseReason::ConnectionLost, error.map(|e| e.to_string())));
                    let _ = self.session.handle(Input::Closed, now);
                    return;
                }
                Wake::Command(Command::Deliver(element)) => {
                    self.session.handle(Input::Deliver(element), now)
                }
                Wake::Command(Command::Shutdown(error)) => {
                    self.session.handle(Input::Shutdown(error), now)
                }
                Wake::Appended(Ok(seq)) => self.session.handle(Input::Published { seq }, now),
                Wake::Appended(Err(e)) => {
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

    /// Performs one action; `false` when the connection is over.
    async fn perform(&mut self, action: Action, pending: &mut VecDeque<Action>) -> bool {
        let now = Instant::now();
        match action {
            Action::Send(bytes) => {
                let write =
                    tokio::time::timeout(self.shared.limits.write_timeout, self.conn.write(&bytes));
                let failure = match write.await {
                    Ok(Ok(())) => return true,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "write timed out".to_owned(),
                };
                tracing::debug!(peer = %self.peer, error = failure, "write failed");
                self.close_reason = Some((CloseReason::ConnectionLost, Some(failure)));
                return false;
            }
            Action::StartTls => {
                let Conn::Plain(socket) = std::mem::replace(&mut self.conn, Conn::Gone) else {
                    self.close_reason = Some((
                        CloseReason::StreamError,
                        Some("STARTTLS on an encrypted connection".to_owned()),
                    ));
                    return false;
                };
                match handshake(&self.acceptor, socket, &self.shared.limits).await {
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
            Action::LookupCredentials { jid, .. } => {
                let credentials: Option<Credentials> = self.shared.credentials.lookup(jid.as_str());
                pending.extend(self.session.handle(Input::Credentials(credentials), now));
            }
            Action::AuthFailed {
                username,
                condition,
            } => {
                tracing::info!(peer = %self.peer, user = ?username, ?condition, "authentication failed");
            }
            Action::Authenticated { jid, mechanism } => {
                tracing::debug!(peer = %self.peer, user = jid.as_str(), ?mechanism, "authenticated");
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
            Action::ResumeRequested { .. } => {
                // Sessions are not kept after their connection ends, so there is
                // nothing to resume: the client starts a new session.
                pending.extend(self.session.handle(Input::Resume(None), now));
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
                let key = event.owner().as_str().to_owned();
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
                if self
                    .appends
                    .send(Append::Stanza { seq, key, value })
                    .await
                    .is_err()
                {
                    self.close_reason = Some((
                        CloseReason::StreamError,
                        Some("the log refused a stanza".to_owned()),
                    ));
                    return false;
                }
            }
            Action::Close { error } => {
                let reason = match error.as_ref().map(|e| e.condition) {
                    None => CloseReason::ClientClosed,
                    Some(StreamErrorCondition::Conflict) => CloseReason::Replaced,
                    Some(StreamErrorCondition::SystemShutdown) => CloseReason::GatewayShutdown,
                    Some(_) => CloseReason::StreamError,
                };
                let detail = error.map(|e| e.condition.as_str().to_owned());
                self.close_reason.get_or_insert((reason, detail));
                return false;
            }
            Action::ArmTimer(duration) => {
                self.deadline = Some(tokio::time::Instant::now() + duration);
            }
        }
        true
    }

    /// Makes this connection the holder of `full_jid`, ending any earlier holder.
    fn register(&mut self, full_jid: &FullJid) {
        let entry = Registered {
            connection: self.id,
            commands: self.commands.clone(),
            slow: self.slow.clone(),
        };
        let previous = self
            .shared
            .registry
            .lock()
            .insert(full_jid.as_str().to_owned(), entry);
        if let Some(previous) = previous.filter(|p| p.connection != self.id) {
            let error = StreamError::new(StreamErrorCondition::Conflict);
            if previous
                .commands
                .try_send(Command::Shutdown(error))
                .is_err()
            {
                previous.slow.notify_one();
            }
        }
    }

    async fn append_session(&self, event: SessionEvent) {
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
                let _ = self.appends.send(append).await;
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

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
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
