//! The gateway: listeners, the registry of bound sessions, the delivery consumer.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use imbus_core::{Credentials, Delivery, Event, GatewayId, StanzaReceived};
use imbus_log::{
    CommitInFlight, ConsumerEvent, ConsumerOptions, Log, LogError, Offset, Record, TopicConfig,
    TopicPartition,
};
use imbus_xmpp_auth::{Throttle, ThrottleConfig};
use imbus_xmpp_c2s::{SessionConfig, Transport};
use imbus_xmpp_stream::{Element, StreamError};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::connection::{self, Command, Shared};
use crate::mailbox::SendError;
use crate::redelivery::{self, Target};
use crate::registration::{Registration, Registrations};
use crate::tls::{CertSource, Identity};

/// The topic of inbound stanzas.
pub(crate) const STANZAS: &str = "stanzas";
/// The changelog of sessions.
pub(crate) const SESSIONS: &str = "sessions";
/// The topic of stanzas forwarded to their recipient's partition.
const ROUTED: &str = "routed";
/// The HTTP path of XMPP over WebSocket (RFC 7395).
pub const WEBSOCKET_PATH: &str = "/xmpp-websocket";
/// The WebSocket subprotocol of XMPP (RFC 7395 §3.1).
const WEBSOCKET_PROTOCOL: &str = "xmpp";
/// WebSocket framing allowance on top of the largest stanza.
const WEBSOCKET_SLACK: usize = 4096;

/// Reads account credentials for authentication (the server implements it on its view of
/// the `accounts` topic).
pub trait CredentialLookup: Send + Sync + fmt::Debug {
    /// The SCRAM credentials of the account with this bare JID, or `None` when there is
    /// no such account.
    fn lookup(&self, bare_jid: &str) -> Option<Credentials>;
}

/// Limits protecting the gateway from clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Stanzas queued for one connection before it is considered a slow reader and
    /// disconnected (default 10,000: above the default offline quota, so that the
    /// offline messages handed over at once at login fit).
    pub outbound_queue: usize,
    /// Bytes of stanzas queued for one connection before it is considered a slow reader
    /// and disconnected (default 8 MiB). With [`Self::outbound_queue`] this bounds the
    /// memory a client that does not read can hold; the queue's memory is taken only
    /// while stanzas wait in it.
    pub outbound_queue_bytes: usize,
    /// How long one write to a client may take before the connection is dropped
    /// (default 30 s).
    pub write_timeout: Duration,
    /// New connections accepted from one IP address per [`Self::rate_window`]
    /// (default 30); more are closed at once.
    pub connections_per_window: u32,
    /// The window of [`Self::connections_per_window`] (default 60 s).
    pub rate_window: Duration,
    /// How long a TLS handshake may take (default 10 s).
    pub tls_handshake_timeout: Duration,
    /// Login throttling per account and per address (the defaults of
    /// [`ThrottleConfig`]): an attempt it refuses fails with `temporary-auth-failure`.
    pub login: ThrottleConfig,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            outbound_queue: 10_000,
            outbound_queue_bytes: 8 << 20,
            write_timeout: Duration::from_secs(30),
            connections_per_window: 30,
            rate_window: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            login: ThrottleConfig::default(),
        }
    }
}

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// This gateway's id: its delivery topic is `deliver.<gateway_id>`.
    pub gateway_id: GatewayId,
    /// The served domain, named in a generated certificate (the same as the session
    /// settings' domain).
    pub domain: String,
    /// The listener for RFC 6120 streams with STARTTLS (port 0 picks a free port);
    /// `None` disables it.
    pub c2s_addr: Option<SocketAddr>,
    /// The listener for direct TLS (XEP-0368); `None` disables it.
    pub tls_addr: Option<SocketAddr>,
    /// The TLS certificate.
    pub cert: CertSource,
    /// Settings of every session.
    pub session: Arc<SessionConfig>,
    /// Limits protecting the gateway.
    pub limits: ConnectionLimits,
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A certificate or key file could not be read, written or parsed.
    #[error("TLS certificate {path}: {detail}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The log refused a request (missing `sessions` topic, unreachable broker, …).
    #[error("log: {0}")]
    Log(#[from] LogError),
}

/// Starts gateways.
#[derive(Debug)]
pub struct Gateway;

impl Gateway {
    /// Loads the certificate, creates the delivery topic, binds the listeners and starts
    /// accepting connections and consuming deliveries.
    pub async fn start(
        config: GatewayConfig,
        log: Arc<dyn Log>,
        credentials: Arc<dyn CredentialLookup>,
    ) -> Result<GatewayHandle, GatewayError> {
        Self::start_with_registration(config, log, credentials, None).await
    }

    /// Like [`Gateway::start`], with In-Band Registration (XEP-0077) performed by
    /// `registration` (without it, registration requests are answered `not-allowed`).
    pub async fn start_with_registration(
        config: GatewayConfig,
        log: Arc<dyn Log>,
        credentials: Arc<dyn CredentialLookup>,
        registration: Option<Registration>,
    ) -> Result<GatewayHandle, GatewayError> {
        let identity = Identity::load(&config.cert, &config.domain)?;
        let starttls = identity.server_config(&[])?;
        let direct = identity.server_config(&[b"xmpp-client"])?;
        let partitions = log.partition_count(SESSIONS).await?;
        log.partition_count(STANZAS).await?;
        let deliver_topic = format!("deliver.{}", config.gateway_id.as_str());
        log.create_topic(&TopicConfig::new(deliver_topic.clone(), partitions))
            .await?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (alive_tx, alive_rx) = mpsc::channel::<()>(1);
        let shared = Arc::new(Shared {
            gateway_id: config.gateway_id.clone(),
            session: config.session.clone(),
            limits: config.limits.clone(),
            log: log.clone(),
            credentials,
            sessions_partitions: partitions,
            server_end_point: identity.server_end_point(),
            registry: Mutex::new(HashMap::new()),
            resumable: Mutex::new(HashMap::new()),
            throttle: Mutex::new(Throttle::new(config.limits.login)),
            rate: Mutex::new(HashMap::new()),
            registrations: Registrations::new(registration),
            shutdown: shutdown_rx,
            alive: alive_tx,
        });

        let mut tasks = Vec::new();
        let mut c2s_bound = None;
        let mut tls_bound = None;
        if let Some(addr) = config.c2s_addr {
            let listener = bind(addr).await?;
            c2s_bound = Some(local_addr(&listener, addr)?);
            let transport = Transport::Tcp {
                tls_active: false,
                direct_tls: false,
            };
            tasks.push(tokio::spawn(accept_loop(
                listener,
                transport,
                starttls.clone(),
                shared.clone(),
            )));
        }
        if let Some(addr) = config.tls_addr {
            let listener = bind(addr).await?;
            tls_bound = Some(local_addr(&listener, addr)?);
            let transport = Transport::Tcp {
                tls_active: true,
                direct_tls: true,
            };
            tasks.push(tokio::spawn(accept_loop(
                listener,
                transport,
                direct,
                shared.clone(),
            )));
        }
        let consumer = log
            .consumer(ConsumerOptions::new(
                format!("gateway.{}", config.gateway_id.as_str()),
                &[deliver_topic.as_str()],
            ))
            .await?;
        tasks.push(tokio::spawn(deliver_loop(consumer, shared.clone())));
        tracing::info!(
            gateway = config.gateway_id.as_str(),
            c2s = ?c2s_bound,
            direct_tls = ?tls_bound,
            "XMPP gateway listening"
        );
        Ok(GatewayHandle {
            c2s_addr: c2s_bound,
            tls_addr: tls_bound,
            shutdown: shutdown_tx,
            tasks,
            alive: alive_rx,
            _shared: shared,
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, GatewayError> {
    listener
        .local_addr()
        .map_err(|source| GatewayError::Bind { addr, source })
}

/// A running gateway. Dropping it stops the gateway too, without waiting for the
/// connections to finish; [`GatewayHandle::shutdown`] waits.
#[derive(Debug)]
pub struct GatewayHandle {
    c2s_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    alive: mpsc::Receiver<()>,
    _shared: Arc<Shared>,
}

impl GatewayHandle {
    /// The bound address of the STARTTLS listener.
    pub fn c2s_addr(&self) -> Option<SocketAddr> {
        self.c2s_addr
    }

    /// The bound address of the direct TLS listener.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The route of XMPP over WebSocket (RFC 7395) at [`WEBSOCKET_PATH`], to mount on an
    /// HTTP listener. The `xmpp` subprotocol is required. `secure` says whether the
    /// WebSocket runs over TLS (terminated by the listener or by a reverse proxy in
    /// front of it); when the sessions require TLS, insecure WebSockets are refused with
    /// `policy-violation`. The client's address (for the connection rate limit and the
    /// login throttle) is taken from the listener's [`ConnectInfo`]; serve the router
    /// with `into_make_service_with_connect_info::<SocketAddr>()`.
    pub fn websocket_router(&self, secure: bool) -> Router {
        let state = WebSocketState {
            shared: Arc::downgrade(&self._shared),
            secure,
        };
        Router::new()
            .route(WEBSOCKET_PATH, get(websocket))
            .with_state(state)
    }

    /// Stops accepting, ends every session with a `system-shutdown` stream error (their
    /// closing is recorded on `sessions`) and waits for the connections to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "gateway task failed");
            }
        }
        drop(self._shared);
        // Every connection task holds a sender; all gone means all finished.
        let _ = self.alive.recv().await;
    }
}

/// What the WebSocket route needs (weakly: the route does not keep a stopped gateway).
#[derive(Debug, Clone)]
struct WebSocketState {
    shared: Weak<Shared>,
    secure: bool,
}

/// Upgrades an HTTP request to an XMPP WebSocket connection.
async fn websocket(
    State(state): State<WebSocketState>,
    extensions: Extensions,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(shared) = state.shared.upgrade().filter(|s| !*s.shutdown.borrow()) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the XMPP gateway is stopping",
        )
            .into_response();
    };
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |info| info.0);
    let upgrade = upgrade.protocols([WEBSOCKET_PROTOCOL]);
    if upgrade.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "XMPP over WebSocket needs the subprotocol `xmpp` (RFC 7395)",
        )
            .into_response();
    }
    if !shared.admit(peer.ip()) {
        tracing::info!(%peer, "WebSocket refused: too many connections from this address");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address",
        )
            .into_response();
    }
    let max = shared
        .session
        .max_stanza_bytes
        .saturating_add(WEBSOCKET_SLACK);
    let secure = state.secure;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection::run_websocket(socket, peer, secure, shared))
}

/// Accepts connections until shutdown, enforcing the per-address rate limit.
async fn accept_loop(
    listener: TcpListener,
    transport: Transport,
    acceptor: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !shared.admit(peer.ip()) {
            tracing::info!(%peer, "connection refused: too many connections from this address");
            drop(socket);
            continue;
        }
        let _ = socket.set_nodelay(true);
        tokio::spawn(connection::run(
            socket,
            peer,
            transport,
            acceptor.clone(),
            shared.clone(),
        ));
    }
}

/// While deliveries keep coming, their offsets are committed at most this often (a crash
/// hands the deliveries since the last commit over again: repeats to a live session are
/// recognised by their ids, those to a session the crash ended go back to the router).
const DELIVERY_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Commits the offsets of deliveries handed over (those of partitions still assigned),
/// once the commit under way, if any, is stored.
async fn commit_deliveries(
    consumer: &mut dyn imbus_log::Consumer,
    pending: &mut HashMap<TopicPartition, Offset>,
    committing: &mut CommitInFlight,
) {
    if let Err(e) = committing.finish().await {
        tracing::warn!(error = %e, "cannot commit delivery offsets");
    }
    if let Err(e) = imbus_log::commit_assigned(consumer, pending).await {
        tracing::warn!(error = %e, "cannot commit delivery offsets");
    }
}

/// Starts committing the offsets of deliveries handed over unless a commit is under way
/// (the loop goes on delivering while it is stored: a commit waits for an fsync).
async fn start_committing_deliveries(
    consumer: &mut dyn imbus_log::Consumer,
    pending: &mut HashMap<TopicPartition, Offset>,
    committing: &mut CommitInFlight,
) {
    match committing.settled() {
        Ok(false) => return,
        Ok(true) => {}
        Err(e) => tracing::warn!(error = %e, "cannot commit delivery offsets"),
    }
    match imbus_log::start_commit_assigned(consumer, pending).await {
        Ok(Some(acknowledgement)) => committing.start(acknowledgement),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot commit delivery offsets"),
    }
}

/// Consumes the delivery topic and hands each stanza to its session.
async fn deliver_loop(mut consumer: Box<dyn imbus_log::Consumer>, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut recent = redelivery::Recent::new();
    // Handed over and not yet committed: the next offset per partition.
    let mut pending: HashMap<TopicPartition, Offset> = HashMap::new();
    let mut last_commit = tokio::time::Instant::now();
    let mut committing = CommitInFlight::default();
    loop {
        let wait = if pending.is_empty() && !committing.is_pending() {
            Duration::from_secs(1)
        } else {
            DELIVERY_COMMIT_INTERVAL
        };
        let event = tokio::select! {
            event = consumer.poll(wait) => event,
            _ = shutdown.changed() => break,
        };
        let records = match event {
            Ok(ConsumerEvent::Records(records)) if records.is_empty() => {
                // Idle: commit what was handed over.
                commit_deliveries(consumer.as_mut(), &mut pending, &mut committing).await;
                last_commit = tokio::time::Instant::now();
                continue;
            }
            Ok(ConsumerEvent::Records(records)) => records,
            Ok(ConsumerEvent::Assigned(_) | ConsumerEvent::Revoked(_)) => {
                commit_deliveries(consumer.as_mut(), &mut pending, &mut committing).await;
                continue;
            }
            Err(LogError::Closed) => break,
            Err(e) => {
                tracing::warn!(error = %e, "delivery consumer failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut next: HashMap<TopicPartition, Offset> = HashMap::new();
        let mut bounced = Vec::new();
        recent.sweep();
        for record in records {
            next.insert(record.topic_partition(), record.offset + 1);
            let Some(value) = record.value.as_ref() else {
                continue;
            };
            let delivery = match imbus_schemas::decode(value) {
                Ok(Event::Delivery(delivery)) => delivery,
                Ok(other) => {
                    tracing::warn!(offset = record.offset, event = ?std::mem::discriminant(&other), "not a delivery on the delivery topic; skipped");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(offset = record.offset, error = %e, "undecodable delivery; skipped");
                    continue;
                }
            };
            let Some(element) = connection::parse_stanza(&delivery.xml) else {
                tracing::warn!(
                    to = delivery.to.as_str(),
                    "delivery is not a well-formed stanza; dropped"
                );
                continue;
            };
            // Copies first, each the parsed stanza addressed to its session; the
            // delivery's own session then takes the parsed stanza itself.
            for copy in &delivery.copies {
                let mut addressed = element.clone();
                addressed.set_attr("to", copy.to.as_str());
                hand_over(
                    &shared,
                    &mut recent,
                    &delivery,
                    &Target::copy(copy),
                    addressed,
                    &mut bounced,
                );
            }
            hand_over(
                &shared,
                &mut recent,
                &delivery,
                &Target::of(&delivery),
                element,
                &mut bounced,
            );
        }
        // Handed back before the offsets are committed: a crash in between hands them
        // back again, never loses them.
        while !bounced.is_empty() {
            match hand_back(shared.log.as_ref(), &bounced).await {
                Ok(()) => bounced.clear(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand undeliverable messages back to the router; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        if !bounced.is_empty() {
            break;
        }
        pending.extend(next);
        if last_commit.elapsed() >= DELIVERY_COMMIT_INTERVAL {
            start_committing_deliveries(consumer.as_mut(), &mut pending, &mut committing).await;
            last_commit = tokio::time::Instant::now();
        }
    }
    commit_deliveries(consumer.as_mut(), &mut pending, &mut committing).await;
    if let Err(e) = consumer.close().await {
        tracing::debug!(error = %e, "closing the delivery consumer");
    }
}

/// Hands `element` (the delivery's stanza, addressed to `target`) to the session of
/// `target` unless it was handed there already; an IM whose session is gone is added to
/// `bounced`, for the router.
fn hand_over(
    shared: &Shared,
    recent: &mut redelivery::Recent,
    delivery: &Delivery,
    target: &Target<'_>,
    element: Element,
    bounced: &mut Vec<StanzaReceived>,
) {
    if recent.is_repeat(target) {
        tracing::debug!(
            to = target.to.as_str(),
            id = %target.event_id,
            "delivery already handed to this session; skipped"
        );
        return;
    }
    match deliver(shared, target.to.as_str(), element, delivery.xml.len()) {
        Ok(()) => recent.record(target),
        Err(element) => {
            if let Some(stanza) =
                redelivery::bounce_back(delivery, target, &element, shared.session.domain.as_str())
            {
                tracing::debug!(
                    to = target.to.as_str(),
                    "message for a gone session handed back to the router"
                );
                bounced.push(stanza);
            }
        }
    }
}

/// Appends messages that could not be delivered to `routed`, for the router to route
/// them again.
async fn hand_back(log: &dyn Log, stanzas: &[StanzaReceived]) -> Result<(), LogError> {
    let mut records = Vec::with_capacity(stanzas.len());
    for stanza in stanzas {
        let key = stanza.owner().as_str().to_owned();
        match imbus_schemas::encode(&Event::StanzaReceived(stanza.clone())) {
            Ok(value) => records.push(Record::new(key, value)),
            Err(e) => tracing::warn!(error = %e, "cannot encode an undeliverable message"),
        }
    }
    if !records.is_empty() {
        log.append_batch(ROUTED, records).await?;
    }
    Ok(())
}

/// Hands a stanza to the connection of `full_jid` (a detached session keeps it for a
/// resuming client); a connection whose queue is full is ended as a slow reader. The
/// stanza comes back when no connection took it.
fn deliver(shared: &Shared, full_jid: &str, element: Element, bytes: usize) -> Result<(), Element> {
    // Sent under the registry's lock: a session handed over to a resuming connection
    // moves its registry entry under the same lock, so no delivery can reach the old
    // connection after it collected the last ones.
    let registry = shared.registry.lock();
    let Some(target) = registry.get(full_jid) else {
        tracing::debug!(to = full_jid, "delivery for a session not on this gateway");
        return Err(element);
    };
    let mailbox = &target.mailbox;
    let queued = mailbox.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
    if queued.saturating_add(bytes) > shared.limits.outbound_queue_bytes {
        mailbox.taken(bytes);
        tracing::warn!(
            to = full_jid,
            queued,
            "client reads too slowly (queued bytes over the limit); disconnecting it"
        );
        mailbox.mark_slow();
        return Err(element);
    }
    match mailbox.try_send(Command::Deliver(Box::new(element), bytes)) {
        Ok(()) => Ok(()),
        Err(SendError::Full(Command::Deliver(element, _))) => {
            mailbox.taken(bytes);
            tracing::warn!(to = full_jid, "client reads too slowly; disconnecting it");
            mailbox.mark_slow();
            Err(*element)
        }
        Err(SendError::Closed(Command::Deliver(element, _))) => {
            mailbox.taken(bytes);
            tracing::debug!(to = full_jid, "delivery for a closing session");
            Err(*element)
        }
        Err(_) => Ok(()),
    }
}

/// A stream error with a condition and a text.
pub(crate) fn stream_error(
    condition: imbus_xmpp_stream::StreamErrorCondition,
    text: &str,
) -> StreamError {
    StreamError::with_text(condition, text)
}
