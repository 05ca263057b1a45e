//! The session state machine.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imbus_core::Credentials;
use imbus_core::jid::{BareJid, FullJid, Jid};
use imbus_xmpp_auth::{
    ChannelBinding, Mechanism, Offer, SaslCondition, SaslServer, Step, decode_payload,
    encode_payload,
};
use imbus_xmpp_stream::ns;
use imbus_xmpp_stream::{
    ClassifyError, Element, Features, Framing, IqType, StanzaError, StanzaErrorCondition,
    StanzaErrorType, StanzaKind, StreamError, StreamErrorCondition, StreamEvent, StreamHeader,
    StreamOpen, StreamParser, classify, error_reply, is_stanza, stamp_from, stream_close,
    stream_error,
};
use rand::rngs::StdRng;
use rand::{CryptoRng, RngCore};

use crate::config::{ConflictPolicy, SessionConfig, Transport};
use crate::register::{
    AccountChange, AccountOutcome, Invalid, NS_REGISTER, NS_REGISTER_FEATURE, Password,
    account_jid, check_password,
};

/// Namespace of XEP-0440 channel binding type advertisement.
const SASL_CB: &str = "urn:xmpp:sasl-cb:0";

/// How many fresh resources are tried when a generated one is in use.
const MAX_GENERATED_RESOURCE_TRIES: u8 = 3;

/// Something that happened to the session, handed to [`Session::handle`].
#[derive(Debug)]
pub enum Input<'a> {
    /// Bytes read from the connection; on WebSocket exactly one message.
    Bytes(&'a [u8]),
    /// The TLS handshake asked for by [`Action::StartTls`] completed, with the channel
    /// binding data the TLS layer computed (preferred type first). On a connection that
    /// was encrypted from the start, feed it before any bytes to make `-PLUS` mechanisms
    /// available.
    TlsEstablished {
        /// Channel bindings of the TLS session.
        channel_bindings: Vec<ChannelBinding>,
    },
    /// The answer to [`Action::LookupCredentials`]: the account's credentials, or `None`
    /// when there is no such account.
    Credentials(Option<Credentials>),
    /// The accounts could not be read, or the throttle refused the attempt: the exchange
    /// fails with `temporary-auth-failure`.
    LookupFailed,
    /// The answer to [`Action::BindRequested`].
    Bind(BindAnswer),
    /// The answer to [`Action::ChangeAccount`].
    AccountChanged(AccountOutcome),
    /// The answer to [`Action::ResumeRequested`]: the state of the session to resume,
    /// taken with [`Session::resume_state`], or `None` when there is no such session.
    Resume(Option<ResumeState>),
    /// The log durably stored the stanza of [`Action::Publish`] with this `seq`.
    Published {
        /// The sequence number of the published stanza.
        seq: u64,
    },
    /// A stanza addressed to this session, to write to the client.
    Deliver(Element),
    /// The timer of the last [`Action::ArmTimer`] fired.
    Timeout,
    /// The server ends the session with this stream error (`conflict` when another
    /// session took its resource, `system-shutdown`, …).
    Shutdown(StreamError),
    /// The connection is gone.
    Closed,
}

/// Whether the full JID of [`Action::BindRequested`] is already held by a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindAnswer {
    /// No session holds it.
    Free,
    /// Another session holds it.
    InUse,
}

/// What the gateway does, in order, after [`Session::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write these bytes to the connection; on WebSocket, as one text message.
    Send(Vec<u8>),
    /// Upgrade the connection to TLS (after writing the `<proceed/>` sent just before),
    /// then feed [`Input::TlsEstablished`].
    StartTls,
    /// Look up the account's credentials and answer with [`Input::Credentials`] (or
    /// [`Input::LookupFailed`]). This is where the gateway consults its login throttle.
    LookupCredentials {
        /// The normalized user name.
        username: String,
        /// The account's bare JID.
        jid: BareJid,
        /// Answering derives a key from the client's password (PLAIN: PBKDF2 with the
        /// account's iteration count, milliseconds of CPU), so the answer is best fed from
        /// a thread that may block without holding up other sessions.
        derives_key: bool,
    },
    /// A SASL attempt failed (record it in the login throttle).
    AuthFailed {
        /// The user name the client tried, when it got that far.
        username: Option<String>,
        /// The condition sent to the client.
        condition: SaslCondition,
    },
    /// The client authenticated (the stream now restarts).
    Authenticated {
        /// The user's bare JID.
        jid: BareJid,
        /// The mechanism used.
        mechanism: Mechanism,
    },
    /// The client asks to bind this full JID: answer with [`Input::Bind`].
    BindRequested {
        /// The full JID: the client's resource or a generated one.
        full_jid: FullJid,
    },
    /// The resource is bound: register the session for deliveries and publish it.
    Bound {
        /// The session's full JID.
        full_jid: FullJid,
        /// Another session held it: end that one with [`Input::Shutdown`] and a
        /// `conflict` stream error.
        replaces: bool,
    },
    /// The client asks to create its account, change its password or cancel its account
    /// (XEP-0077): perform the change (for a new account, after checking the
    /// registration limit of the client's address) and answer with
    /// [`Input::AccountChanged`]. The request is valid as far as the session can tell.
    ChangeAccount(AccountChange),
    /// The client asks to resume the Stream Management session `previd`: answer with
    /// [`Input::Resume`].
    ResumeRequested {
        /// The resumption id of the earlier session.
        previd: String,
        /// How many stanzas the client received on it.
        h: u32,
    },
    /// The session was resumed as this full JID: register it for deliveries.
    Resumed {
        /// The session's full JID.
        full_jid: FullJid,
    },
    /// Put the stanza on the log, then feed [`Input::Published`] with `seq`.
    Publish {
        /// Sequence number of the stanza on this session.
        seq: u64,
        /// The stanza, `from` stamped with the session's full JID.
        stanza: Element,
        /// Its kind and type.
        kind: StanzaKind,
    },
    /// Close the connection after writing everything sent before.
    Close {
        /// The stream error sent, if the server ended the stream because of one.
        error: Option<StreamError>,
    },
    /// Feed [`Input::Timeout`] after this long (replacing any earlier timer).
    ArmTimer(Duration),
    /// The timer armed last is not needed any more (the stream authenticated and bound a
    /// resource in time): drop it rather than keep it until it fires.
    DisarmTimer,
}

/// What a broken session leaves for a client that resumes it (XEP-0198 §5).
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeState {
    /// The resumption id.
    pub id: String,
    /// The full JID the session was bound to.
    pub jid: FullJid,
    /// How many stanzas from the client the server had durably handled (`h`).
    pub handled: u32,
    /// The last `h` the client acknowledged.
    pub acked: u32,
    /// The stanzas sent after that acknowledgement, oldest first.
    pub unacked: Vec<Element>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the stream header (at the start and after each restart).
    AwaitHeader,
    /// Inside the stream.
    Open,
    /// `<proceed/>` was sent; waiting for the TLS handshake.
    TlsPending,
    /// Over.
    Closed,
}

/// A registration request waiting for [`Input::AccountChanged`].
#[derive(Debug)]
struct PendingAccount {
    /// The request without its payload (the password is not kept), to answer it.
    request: Element,
    /// A cancellation: the stream ends once it is done.
    removal: bool,
}

#[derive(Debug)]
struct PendingBind {
    id: String,
    jid: FullJid,
    generated: bool,
    tries: u8,
}

/// Stanzas received from the client and how many of them are handled, in order.
#[derive(Debug, Default)]
struct Inbound {
    /// Stanzas received.
    received: u64,
    /// Stanzas handled without a gap (published ones only once the log confirmed them).
    handled: u64,
    /// Whether each stanza after `handled` is done.
    pending: VecDeque<bool>,
}

impl Inbound {
    fn push(&mut self, done: bool) -> u64 {
        self.received += 1;
        self.pending.push_back(done);
        self.drain();
        self.received
    }

    fn complete(&mut self, seq: u64) -> bool {
        if seq <= self.handled || seq > self.received {
            return false;
        }
        let Ok(index) = usize::try_from(seq - self.handled - 1) else {
            return false;
        };
        match self.pending.get_mut(index) {
            Some(done) => {
                *done = true;
                self.drain();
                true
            }
            None => false,
        }
    }

    fn drain(&mut self) {
        while self.pending.front() == Some(&true) {
            self.pending.pop_front();
            self.handled += 1;
        }
    }
}

/// Stream Management state of an enabled stream.
#[derive(Debug)]
struct Sm {
    /// Resumption id, when resumption was enabled.
    id: Option<String>,
    /// `h` at `base`.
    h_start: u32,
    /// `Inbound::handled` when the counting started.
    base: u64,
    /// The last `h` the client acknowledged.
    acked: u32,
    /// Stanzas sent and not acknowledged.
    unacked: VecDeque<Element>,
    /// `Inbound::received` up to which the client asked for an acknowledgement.
    ack_wanted: Option<u64>,
}

impl Sm {
    fn h(&self, inbound: &Inbound) -> u32 {
        // h counts modulo 2^32 (XEP-0198 §4): the truncation is intended.
        self.h_start
            .wrapping_add(inbound.handled.saturating_sub(self.base) as u32)
    }
}

/// Where a session draws its nonces and ids from, small inline: a session lives in every
/// connection's task, idle ones included.
#[derive(Debug)]
enum SessionRng {
    /// The thread's cryptographically secure generator ([`rand::rng`]), fetched at each
    /// use, so the session holds no generator state and stays `Send`.
    Thread,
    /// A given generator (reproducible tests).
    Seeded(Box<StdRng>),
}

impl RngCore for SessionRng {
    fn next_u32(&mut self) -> u32 {
        match self {
            Self::Thread => rand::rng().next_u32(),
            Self::Seeded(rng) => rng.next_u32(),
        }
    }

    fn next_u64(&mut self) -> u64 {
        match self {
            Self::Thread => rand::rng().next_u64(),
            Self::Seeded(rng) => rng.next_u64(),
        }
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        match self {
            Self::Thread => rand::rng().fill_bytes(dst),
            Self::Seeded(rng) => rng.fill_bytes(dst),
        }
    }
}

// Both sources are cryptographically secure: `ThreadRng` and `StdRng` are `CryptoRng`.
impl CryptoRng for SessionRng {}

/// One client-to-server XMPP session, without I/O.
///
/// The gateway calls [`Session::start`] once when the connection is accepted, then
/// [`Session::handle`] for everything that happens, and performs the returned
/// [`Action`]s in order.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    transport: Transport,
    framing: Framing,
    parser: StreamParser,
    rng: SessionRng,
    phase: Phase,
    tls: bool,
    /// The TLS channel bindings, kept until SASL succeeds.
    bindings: Vec<ChannelBinding>,
    header_sent: bool,
    stream_id: String,
    /// A stream restart (after `<proceed/>` or `<success/>`) is due.
    restart: bool,
    // Negotiation state is boxed, allocated only while in use: an established, idle
    // session holds a pointer for each.
    offer: Option<Box<Offer>>,
    sasl: Option<Box<SaslServer>>,
    sasl_user: Option<String>,
    auth_failures: u32,
    user: Option<BareJid>,
    jid: Option<FullJid>,
    pending_bind: Option<Box<PendingBind>>,
    /// The resumption id and `h` of a `<resume/>` waiting for [`Input::Resume`].
    pending_resume: Option<Box<(String, u32)>>,
    pending_account: Option<Box<PendingAccount>>,
    deadline: Option<Instant>,
    inbound: Inbound,
    sm: Option<Sm>,
}

impl Session {
    /// A session on a freshly accepted connection, with nonces and ids drawn from the
    /// thread's cryptographically secure generator ([`rand::rng`]) at each use.
    pub fn new(config: Arc<SessionConfig>, transport: Transport) -> Self {
        Self::with_session_rng(config, transport, SessionRng::Thread)
    }

    /// Like [`Session::new`] with a given random generator (reproducible tests).
    pub fn with_rng(config: Arc<SessionConfig>, transport: Transport, rng: StdRng) -> Self {
        Self::with_session_rng(config, transport, SessionRng::Seeded(Box::new(rng)))
    }

    fn with_session_rng(config: Arc<SessionConfig>, transport: Transport, rng: SessionRng) -> Self {
        let framing = transport.framing();
        Self {
            framing,
            parser: StreamParser::with_shared_config(config.parser_config(framing)),
            rng,
            phase: Phase::AwaitHeader,
            tls: transport.encrypted(),
            bindings: Vec::new(),
            header_sent: false,
            stream_id: String::new(),
            restart: false,
            offer: None,
            sasl: None,
            sasl_user: None,
            auth_failures: 0,
            user: None,
            jid: None,
            pending_bind: None,
            pending_resume: None,
            pending_account: None,
            deadline: None,
            inbound: Inbound::default(),
            sm: None,
            config,
            transport,
        }
    }

    /// Starts the authentication deadline: returns the [`Action::ArmTimer`] for it.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.deadline = Some(now + self.config.auth_timeout);
        vec![Action::ArmTimer(self.config.auth_timeout)]
    }

    /// The authenticated user, once SASL succeeded.
    pub fn user(&self) -> Option<&BareJid> {
        self.user.as_ref()
    }

    /// The bound full JID, once the session is established.
    pub fn jid(&self) -> Option<&FullJid> {
        self.jid.as_ref()
    }

    /// Whether the stream is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.tls
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Releases the memory the stream parser keeps for reuse between stanzas. A gateway
    /// calls this after handing over the bytes it read, so that a connection waiting
    /// for its client holds only what the session needs.
    pub fn release_memory(&mut self) {
        self.parser.release_memory();
    }

    /// Stanzas published and not yet confirmed by the log. A gateway applies
    /// back-pressure (stops reading) while this is high.
    pub fn in_flight(&self) -> usize {
        self.inbound.pending.len()
    }

    /// Stream Management's count of stanzas from the client durably handled (`h`), when
    /// Stream Management is enabled.
    pub fn handled(&self) -> Option<u32> {
        self.sm.as_ref().map(|sm| sm.h(&self.inbound))
    }

    /// The stanzas sent to the client and not acknowledged, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &Element> {
        self.sm.iter().flat_map(|sm| sm.unacked.iter())
    }

    /// The Stream Management resumption id, when the client enabled resumption.
    pub fn resumption_id(&self) -> Option<&str> {
        self.sm.as_ref().and_then(|sm| sm.id.as_deref())
    }

    /// What a client resuming this session needs: `None` unless the client enabled
    /// resumption. Take it once the connection is gone (after feeding the outstanding
    /// [`Input::Published`]: stanzas the log had not confirmed are not counted, so the
    /// client sends them again).
    pub fn resume_state(&self) -> Option<ResumeState> {
        let sm = self.sm.as_ref()?;
        Some(ResumeState {
            id: sm.id.clone()?,
            jid: self.jid.clone()?,
            handled: sm.h(&self.inbound),
            acked: sm.acked,
            unacked: sm.unacked.iter().cloned().collect(),
        })
    }

    /// Handles one input at time `now` and returns what the gateway must do, in order.
    pub fn handle(&mut self, input: Input<'_>, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Closed {
            return out;
        }
        match input {
            Input::Bytes(bytes) => self.on_bytes(bytes, &mut out),
            Input::TlsEstablished { channel_bindings } => {
                self.on_tls(channel_bindings, &mut out);
            }
            Input::Credentials(found) => match self.sasl.as_mut() {
                Some(sasl) => {
                    let step = sasl.credentials(found.as_ref());
                    self.on_step(step, &mut out);
                    self.finish_restart(false, &mut out);
                }
                None => tracing::debug!("credentials arrived for no pending exchange"),
            },
            Input::LookupFailed => {
                if let Some(sasl) = self.sasl.as_mut() {
                    let step = sasl.lookup_failed();
                    self.on_step(step, &mut out);
                }
            }
            Input::Bind(answer) => self.on_bind_answer(answer, &mut out),
            Input::AccountChanged(outcome) => self.on_account_outcome(outcome, &mut out),
            Input::Resume(state) => self.on_resume_answer(state, &mut out),
            Input::Published { seq } => {
                if !self.inbound.complete(seq) {
                    tracing::debug!(seq, "confirmation of an unknown stanza ignored");
                }
                self.maybe_ack(&mut out);
            }
            Input::Deliver(stanza) => self.deliver(stanza, &mut out),
            Input::Timeout => match self.deadline {
                Some(deadline) if now >= deadline => self.fail(
                    StreamError::with_text(
                        StreamErrorCondition::ConnectionTimeout,
                        "the stream did not authenticate and bind a resource in time",
                    ),
                    &mut out,
                ),
                Some(deadline) => out.push(Action::ArmTimer(deadline - now)),
                None => {}
            },
            Input::Shutdown(error) => self.fail(error, &mut out),
            Input::Closed => self.phase = Phase::Closed,
        }
        out
    }

    // ----- output helpers -----

    fn send(&self, text: impl Into<String>, out: &mut Vec<Action>) {
        out.push(Action::Send(text.into().into_bytes()));
    }

    /// Sends a first-level element: stanzas in the content namespace, the rest with
    /// their namespace declared.
    fn send_element(&self, element: &Element, out: &mut Vec<Action>) {
        let text = match self.framing {
            Framing::Tcp => element.to_xml_in(ns::JABBER_CLIENT),
            Framing::WebSocket => element.to_xml(),
        };
        self.send(text, out);
    }

    /// Ends the authentication deadline.
    fn disarm(&mut self, out: &mut Vec<Action>) {
        if self.deadline.take().is_some() {
            out.push(Action::DisarmTimer);
        }
    }

    fn random_id(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn header(&mut self, to: Option<String>) -> String {
        self.stream_id = self.random_id();
        let mut header = StreamHeader::new(
            self.framing,
            self.config.domain.as_str(),
            self.stream_id.clone(),
        );
        header.to = to;
        header.to_xml()
    }

    /// Ends the stream with a stream error.
    fn fail(&mut self, error: StreamError, out: &mut Vec<Action>) {
        if self.phase == Phase::Closed {
            return;
        }
        tracing::debug!(condition = ?error.condition, text = ?error.text, "closing stream with an error");
        if !self.header_sent {
            let header = self.header(None);
            self.send(header, out);
            self.header_sent = true;
        }
        for message in stream_error(&error, self.framing) {
            self.send(message, out);
        }
        out.push(Action::Close { error: Some(error) });
        self.phase = Phase::Closed;
    }

    fn fail_with(&mut self, condition: StreamErrorCondition, text: &str, out: &mut Vec<Action>) {
        self.fail(StreamError::with_text(condition, text), out);
    }

    // ----- bytes and stream events -----

    fn on_bytes(&mut self, bytes: &[u8], out: &mut Vec<Action>) {
        if self.phase == Phase::TlsPending {
            return self.fail_with(
                StreamErrorCondition::PolicyViolation,
                "data arrived before the TLS handshake",
                out,
            );
        }
        let mut events = Vec::new();
        let result = match self.framing {
            Framing::Tcp => self.parser.feed_into(bytes, &mut events),
            Framing::WebSocket => self.parser.feed_message(bytes).map(|e| events = e),
        };
        let count = events.len();
        for (index, event) in events.into_iter().enumerate() {
            if self.phase == Phase::Closed {
                return;
            }
            self.on_event(event, out);
            if self.restart {
                let more = index + 1 < count || result.is_err();
                self.finish_restart(more, out);
            }
        }
        if let Err(error) = result {
            self.fail(error, out);
        }
    }

    /// Resets the parser for a stream restart, refusing anything the client sent after
    /// the element that caused it.
    fn finish_restart(&mut self, more: bool, out: &mut Vec<Action>) {
        if !self.restart {
            return;
        }
        self.restart = false;
        if more || self.parser.buffered_bytes() > 0 {
            return self.fail_with(
                StreamErrorCondition::PolicyViolation,
                "data was sent before the stream restart",
                out,
            );
        }
        self.parser.reset();
    }

    fn on_tls(&mut self, channel_bindings: Vec<ChannelBinding>, out: &mut Vec<Action>) {
        match self.phase {
            Phase::TlsPending => {
                self.tls = true;
                self.bindings = channel_bindings;
                self.phase = Phase::AwaitHeader;
                self.header_sent = false;
            }
            Phase::AwaitHeader if self.tls && self.user.is_none() && !self.header_sent => {
                self.bindings = channel_bindings;
            }
            _ => self.fail_with(
                StreamErrorCondition::InternalServerError,
                "TLS was established at an unexpected point",
                out,
            ),
        }
    }

    fn on_event(&mut self, event: StreamEvent, out: &mut Vec<Action>) {
        match event {
            StreamEvent::StreamOpen(open) => {
                if self.phase == Phase::AwaitHeader {
                    self.on_open(open, out);
                } else {
                    self.fail_with(
                        StreamErrorCondition::PolicyViolation,
                        "the stream was restarted without a reason",
                        out,
                    );
                }
            }
            StreamEvent::StreamClose => {
                self.send(stream_close(self.framing), out);
                out.push(Action::Close { error: None });
                self.phase = Phase::Closed;
            }
            StreamEvent::Stanza(element) => self.on_element(element, out),
        }
    }

    fn on_open(&mut self, open: StreamOpen, out: &mut Vec<Action>) {
        let header = self.header(open.from.clone());
        self.send(header, out);
        self.header_sent = true;
        if open.version.is_none_or(|v| v.major < 1) {
            return self.fail_with(
                StreamErrorCondition::UnsupportedVersion,
                "XMPP 1.0 is required",
                out,
            );
        }
        if open
            .content_namespace
            .as_deref()
            .is_some_and(|n| n != ns::JABBER_CLIENT)
        {
            return self.fail_with(
                StreamErrorCondition::InvalidNamespace,
                "the content namespace must be jabber:client",
                out,
            );
        }
        let served = open.to.as_deref().is_some_and(|to| {
            imbus_core::jid::DomainPart::new(to)
                .is_ok_and(|d| d.as_str() == self.config.domain.as_str())
        });
        if !served {
            return self.fail_with(
                StreamErrorCondition::HostUnknown,
                "the stream is not addressed to a served domain",
                out,
            );
        }
        if self.user.is_none()
            && self.config.require_tls
            && !self.tls
            && !self.transport.can_starttls()
        {
            return self.fail_with(
                StreamErrorCondition::PolicyViolation,
                "an encrypted connection is required",
                out,
            );
        }
        self.phase = Phase::Open;
        let features = self.features();
        self.send(features.to_xml(self.framing), out);
    }

    fn features(&mut self) -> Features {
        let mut features = Features::new();
        if self.user.is_none() {
            if self.transport.can_starttls() && !self.tls {
                features = features.starttls(self.config.require_tls);
            }
            if self.tls || !self.config.require_tls {
                let offer = Offer::new(self.config.mechanisms, self.tls, self.bindings.clone());
                features = features.mechanisms(offer.mechanisms().iter().map(|m| m.name()));
                if offer.offers_plus() {
                    let mut cb = Element::new("sasl-channel-binding", SASL_CB);
                    for kind in offer.channel_binding_types() {
                        cb.push_child(
                            Element::new("channel-binding", SASL_CB).with_attr("type", kind.name()),
                        );
                    }
                    features = features.with(cb);
                }
                self.offer = Some(Box::new(offer));
                if self.config.registration {
                    features = features.with(Element::new("register", NS_REGISTER_FEATURE));
                }
            }
        } else {
            features = features.bind().session_optional();
            if self.config.stream_management {
                features = features.stream_management();
            }
        }
        features.limits(Some(self.config.max_stanza_bytes), None)
    }

    fn on_element(&mut self, element: Element, out: &mut Vec<Action>) {
        let namespace = element.namespace();
        if namespace == ns::XMPP_TLS {
            return self.on_starttls(&element, out);
        }
        if namespace == ns::XMPP_SASL {
            return self.on_sasl(&element, out);
        }
        if namespace == ns::STREAMS && element.name() == "error" {
            tracing::debug!(error = %element, "the client ended the stream with an error");
            self.send(stream_close(self.framing), out);
            out.push(Action::Close { error: None });
            self.phase = Phase::Closed;
            return;
        }
        if self.user.is_none() {
            if is_register_request(&element) {
                return self.on_register_unauthenticated(&element, out);
            }
            return self.fail_with(
                StreamErrorCondition::NotAuthorized,
                "authenticate first",
                out,
            );
        }
        if namespace == ns::STREAM_MANAGEMENT {
            return self.on_sm(&element, out);
        }
        if namespace == ns::CSI {
            // Client State Indication is accepted; delivery does not change with it.
            return;
        }
        if is_stanza(&element) {
            return self.on_stanza(element, out);
        }
        self.fail_with(
            StreamErrorCondition::UnsupportedStanzaType,
            "unsupported first-level element",
            out,
        );
    }

    // ----- STARTTLS -----

    fn on_starttls(&mut self, element: &Element, out: &mut Vec<Action>) {
        if element.name() != "starttls"
            || self.user.is_some()
            || self.tls
            || !self.transport.can_starttls()
            || self.sasl.is_some()
        {
            // RFC 6120 §5.4.2.2: failure, then the stream ends.
            self.send_element(&Element::new("failure", ns::XMPP_TLS), out);
            self.send(stream_close(self.framing), out);
            out.push(Action::Close { error: None });
            self.phase = Phase::Closed;
            return;
        }
        self.send_element(&Element::new("proceed", ns::XMPP_TLS), out);
        out.push(Action::StartTls);
        self.phase = Phase::TlsPending;
        self.restart = true;
    }

    // ----- SASL -----

    fn on_sasl(&mut self, element: &Element, out: &mut Vec<Action>) {
        if self.user.is_some() {
            return self.fail_with(
                StreamErrorCondition::PolicyViolation,
                "the stream is already authenticated",
                out,
            );
        }
        match element.name() {
            "auth" => {
                if self.sasl.take().is_some() {
                    return self.sasl_failed(
                        SaslCondition::MalformedRequest,
                        "a new exchange started before the last one ended",
                        out,
                    );
                }
                let Some(offer) = self.offer.as_ref() else {
                    return self.sasl_failed(
                        SaslCondition::EncryptionRequired,
                        "negotiate TLS first",
                        out,
                    );
                };
                let mechanism = element.attr("mechanism").unwrap_or_default();
                let server = match SaslServer::new(
                    &self.config.auth,
                    offer,
                    &self.config.domain,
                    mechanism,
                    &mut self.rng,
                ) {
                    Ok(server) => server,
                    Err(failure) => return self.on_step(Step::Failure(failure), out),
                };
                let text = element.text();
                let initial = if text.trim().is_empty() {
                    None
                } else {
                    match decode_payload(&text) {
                        Ok(data) => Some(data),
                        Err(failure) => return self.on_step(Step::Failure(failure), out),
                    }
                };
                let server = self.sasl.insert(Box::new(server));
                let step = server.start(initial.as_deref());
                self.on_step(step, out);
            }
            "response" => {
                let Some(server) = self.sasl.as_mut() else {
                    return self.sasl_failed(
                        SaslCondition::MalformedRequest,
                        "a response came outside an exchange",
                        out,
                    );
                };
                let step = match decode_payload(&element.text()) {
                    Ok(data) => server.respond(&data),
                    Err(failure) => Step::Failure(failure),
                };
                self.on_step(step, out);
            }
            "abort" => {
                let step = match self.sasl.as_mut() {
                    Some(server) => server.abort(),
                    None => Step::Failure(imbus_xmpp_auth::Failure::new(
                        SaslCondition::Aborted,
                        "the client aborted",
                    )),
                };
                self.on_step(step, out);
            }
            _ => self.fail_with(
                StreamErrorCondition::UnsupportedStanzaType,
                "unknown SASL element",
                out,
            ),
        }
    }

    fn sasl_failed(
        &mut self,
        condition: SaslCondition,
        reason: &'static str,
        out: &mut Vec<Action>,
    ) {
        self.on_step(
            Step::Failure(imbus_xmpp_auth::Failure::new(condition, reason)),
            out,
        );
    }

    fn on_step(&mut self, step: Step, out: &mut Vec<Action>) {
        match step {
            Step::Challenge(data) => {
                let challenge =
                    Element::new("challenge", ns::XMPP_SASL).with_text(encode_payload(&data));
                self.send_element(&challenge, out);
            }
            Step::NeedCredentials { username, jid } => {
                self.sasl_user = Some(username.clone());
                let derives_key = self
                    .sasl
                    .as_ref()
                    .is_some_and(|sasl| sasl.mechanism() == Mechanism::Plain);
                out.push(Action::LookupCredentials {
                    username,
                    jid,
                    derives_key,
                });
            }
            Step::Success {
                additional_data,
                identity,
            } => {
                self.sasl = None;
                self.sasl_user = None;
                let mut success = Element::new("success", ns::XMPP_SASL);
                if let Some(data) = additional_data {
                    success.push_text(encode_payload(&data));
                }
                self.send_element(&success, out);
                out.push(Action::Authenticated {
                    jid: identity.jid.clone(),
                    mechanism: identity.mechanism,
                });
                self.user = Some(identity.jid);
                self.offer = None;
                // Only offers before authentication use the channel bindings, and TLS
                // cannot start after it: release them.
                self.bindings = Vec::new();
                self.phase = Phase::AwaitHeader;
                self.header_sent = false;
                self.restart = true;
            }
            Step::Failure(failure) => {
                self.sasl = None;
                let mut element = Element::new("failure", ns::XMPP_SASL).with_child(Element::new(
                    failure.condition.element_name(),
                    ns::XMPP_SASL,
                ));
                let mut text = Element::new("text", ns::XMPP_SASL).with_text(&failure.reason);
                text.set_attr_ns("lang", ns::XML, "en");
                element.push_child(text);
                self.send_element(&element, out);
                out.push(Action::AuthFailed {
                    username: self.sasl_user.take(),
                    condition: failure.condition,
                });
                self.auth_failures += 1;
                if self.auth_failures >= self.config.max_auth_failures {
                    self.fail_with(
                        StreamErrorCondition::PolicyViolation,
                        "too many failed authentication attempts",
                        out,
                    );
                }
            }
        }
    }

    // ----- stanzas -----

    fn reply_error(&mut self, stanza: &Element, error: StanzaError, out: &mut Vec<Action>) {
        if let Some(reply) = error_reply(stanza, &error) {
            self.send_element(&reply, out);
        }
    }

    /// Counts a stanza from the client; `None` (and the stream closed) when too many
    /// stanzas wait for the log.
    fn track(&mut self, done: bool, out: &mut Vec<Action>) -> Option<u64> {
        if self.inbound.pending.len() >= self.config.max_in_flight {
            self.fail_with(
                StreamErrorCondition::ResourceConstraint,
                "too many stanzas waiting to be stored",
                out,
            );
            return None;
        }
        Some(self.inbound.push(done))
    }

    /// A stanza answered by the session itself: counted as handled at once.
    fn handled_locally(&mut self, out: &mut Vec<Action>) {
        if self.track(true, out).is_some() {
            self.maybe_ack(out);
        }
    }

    fn on_stanza(&mut self, mut stanza: Element, out: &mut Vec<Action>) {
        let kind = match classify(&stanza) {
            Ok(kind) => kind,
            Err(ClassifyError::Invalid(error)) => {
                self.reply_error(&stanza, error, out);
                return self.handled_locally(out);
            }
            Err(ClassifyError::NotAStanza) => {
                return self.fail_with(
                    StreamErrorCondition::UnsupportedStanzaType,
                    "not a stanza",
                    out,
                );
            }
        };
        let is_set = kind == StanzaKind::Iq(IqType::Set);
        let bind = stanza.child("bind", ns::XMPP_BIND).is_some();
        let legacy_session = stanza.child("session", ns::XMPP_SESSION).is_some();
        let Some(jid) = self.jid.clone() else {
            if is_set && bind {
                return self.on_bind(&stanza, out);
            }
            // RFC 6120 §7.1: nothing is processed before a resource is bound.
            let error = if self.pending_bind.is_some() || self.pending_resume.is_some() {
                StanzaError::new(StanzaErrorCondition::UnexpectedRequest)
                    .with_type(StanzaErrorType::Wait)
            } else {
                StanzaError::new(StanzaErrorCondition::NotAuthorized)
            };
            self.reply_error(&stanza, error, out);
            return self.handled_locally(out);
        };
        if matches!(kind, StanzaKind::Iq(IqType::Set | IqType::Get)) && (bind || legacy_session) {
            if is_set && legacy_session {
                // RFC 3921 §3: session establishment is implicit; answer with success.
                let mut result = Element::new("iq", ns::JABBER_CLIENT)
                    .with_attr("type", "result")
                    .with_attr("to", jid.as_str());
                if let Some(id) = stanza.attr("id") {
                    result.set_attr("id", id);
                }
                self.send_element(&result, out);
            } else {
                let error = StanzaError::new(StanzaErrorCondition::NotAllowed)
                    .with_text("a resource is already bound");
                self.reply_error(&stanza, error, out);
            }
            return self.handled_locally(out);
        }
        if matches!(kind, StanzaKind::Iq(IqType::Set | IqType::Get))
            && is_register_request(&stanza)
            && stanza
                .attr("to")
                .is_none_or(|to| to == self.config.domain.as_str())
        {
            return self.on_register_authenticated(&stanza, kind, &jid, out);
        }
        if let Some(to) = stanza.attr("to")
            && Jid::new(to).is_err()
        {
            let error = StanzaError::new(StanzaErrorCondition::JidMalformed)
                .with_type(StanzaErrorType::Modify);
            self.reply_error(&stanza, error, out);
            return self.handled_locally(out);
        }
        if let Some(forged) = stamp_from(&mut stanza, jid.as_str()) {
            tracing::info!(jid = %jid, forged = %forged, "overwrote the from of a stanza");
        }
        if let Some(seq) = self.track(false, out) {
            out.push(Action::Publish { seq, stanza, kind });
        }
    }

    // ----- resource binding -----

    fn generated_jid(&mut self, user: &BareJid) -> Option<FullJid> {
        let resource = format!("imbus-{}", &self.random_id()[..16]);
        user.with_resource_str(&resource).ok()
    }

    fn on_bind(&mut self, stanza: &Element, out: &mut Vec<Action>) {
        let Some(user) = self.user.clone() else {
            return;
        };
        if self.pending_bind.is_some() || self.pending_resume.is_some() {
            let error = StanzaError::new(StanzaErrorCondition::UnexpectedRequest)
                .with_type(StanzaErrorType::Wait);
            self.reply_error(stanza, error, out);
            return self.handled_locally(out);
        }
        let requested = stanza
            .child("bind", ns::XMPP_BIND)
            .and_then(|b| b.child("resource", ns::XMPP_BIND))
            .map(|r| r.text())
            .filter(|r| !r.is_empty());
        let (jid, generated) = match requested {
            Some(resource) => match user.with_resource_str(&resource) {
                Ok(jid) => (jid, false),
                Err(_) => {
                    let error = StanzaError::new(StanzaErrorCondition::BadRequest)
                        .with_type(StanzaErrorType::Modify)
                        .with_text("the resource is not valid");
                    self.reply_error(stanza, error, out);
                    return self.handled_locally(out);
                }
            },
            None => match self.generated_jid(&user) {
                Some(jid) => (jid, true),
                None => {
                    let error = StanzaError::new(StanzaErrorCondition::InternalServerError);
                    self.reply_error(stanza, error, out);
                    return self.handled_locally(out);
                }
            },
        };
        if self.track(true, out).is_none() {
            return;
        }
        self.pending_bind = Some(Box::new(PendingBind {
            id: stanza.attr("id").unwrap_or_default().to_owned(),
            jid: jid.clone(),
            generated,
            tries: 1,
        }));
        out.push(Action::BindRequested { full_jid: jid });
    }

    fn on_bind_answer(&mut self, answer: BindAnswer, out: &mut Vec<Action>) {
        let Some(mut pending) = self.pending_bind.take() else {
            tracing::debug!("bind answer for no pending request");
            return;
        };
        let replaces = match (answer, self.config.resource_conflict) {
            (BindAnswer::Free, _) => false,
            (BindAnswer::InUse, ConflictPolicy::Replace) => true,
            (BindAnswer::InUse, ConflictPolicy::Refuse) => {
                if pending.generated && pending.tries < MAX_GENERATED_RESOURCE_TRIES {
                    let user = pending.jid.to_bare();
                    if let Some(jid) = self.generated_jid(&user) {
                        pending.jid = jid.clone();
                        pending.tries += 1;
                        self.pending_bind = Some(pending);
                        out.push(Action::BindRequested { full_jid: jid });
                        return;
                    }
                }
                let iq = Element::new("iq", ns::JABBER_CLIENT)
                    .with_attr("type", "set")
                    .with_attr("id", pending.id);
                let error = StanzaError::new(StanzaErrorCondition::Conflict)
                    .with_text("the resource is in use");
                self.reply_error(&iq, error, out);
                return;
            }
        };
        let mut bind = Element::new("bind", ns::XMPP_BIND);
        bind.push_child(Element::new("jid", ns::XMPP_BIND).with_text(pending.jid.as_str()));
        let result = Element::new("iq", ns::JABBER_CLIENT)
            .with_attr("type", "result")
            .with_attr("id", pending.id)
            .with_child(bind);
        self.send_element(&result, out);
        self.disarm(out);
        self.jid = Some(pending.jid.clone());
        out.push(Action::Bound {
            full_jid: pending.jid,
            replaces,
        });
    }

    // ----- delivery -----

    fn deliver(&mut self, stanza: Element, out: &mut Vec<Action>) {
        if self.jid.is_none() {
            tracing::debug!("delivery to a session without a bound resource dropped");
            return;
        }
        self.send_element(&stanza, out);
        let request_every = self.config.sm_request_every.max(1);
        let max_unacked = self.config.max_unacked;
        let Some(sm) = self.sm.as_mut() else {
            return;
        };
        if !is_stanza(&stanza) {
            return;
        }
        sm.unacked.push_back(stanza);
        let queued = sm.unacked.len();
        if queued > max_unacked {
            return self.fail_with(
                StreamErrorCondition::ResourceConstraint,
                "too many stanzas are waiting for an acknowledgement",
                out,
            );
        }
        if queued % request_every == 0 {
            self.send_element(&Element::new("r", ns::STREAM_MANAGEMENT), out);
        }
    }

    // ----- Stream Management -----

    fn sm_failed(&mut self, condition: StanzaErrorCondition, out: &mut Vec<Action>) {
        let failed = Element::new("failed", ns::STREAM_MANAGEMENT)
            .with_child(Element::new(condition.as_str(), ns::XMPP_STANZAS));
        self.send_element(&failed, out);
    }

    fn send_ack(&mut self, out: &mut Vec<Action>) {
        if let Some(sm) = self.sm.as_mut() {
            sm.ack_wanted = None;
            let h = sm.h(&self.inbound);
            let a = Element::new("a", ns::STREAM_MANAGEMENT).with_attr("h", h.to_string());
            self.send_element(&a, out);
        }
    }

    /// Answers a pending `<r/>` once every stanza received before it is handled.
    fn maybe_ack(&mut self, out: &mut Vec<Action>) {
        let due = self
            .sm
            .as_ref()
            .and_then(|sm| sm.ack_wanted)
            .is_some_and(|wanted| self.inbound.handled >= wanted);
        if due {
            self.send_ack(out);
        }
    }

    fn on_sm(&mut self, element: &Element, out: &mut Vec<Action>) {
        if !self.config.stream_management {
            return self.fail_with(
                StreamErrorCondition::UnsupportedStanzaType,
                "Stream Management is not offered",
                out,
            );
        }
        match element.name() {
            "enable" => {
                if self.jid.is_none() || self.sm.is_some() {
                    return self.sm_failed(StanzaErrorCondition::UnexpectedRequest, out);
                }
                let resume =
                    self.config.sm_resume && matches!(element.attr("resume"), Some("true" | "1"));
                let id = resume.then(|| self.random_id());
                let mut enabled = Element::new("enabled", ns::STREAM_MANAGEMENT);
                if let Some(id) = &id {
                    enabled.set_attr("id", id.as_str());
                    enabled.set_attr("resume", "true");
                    enabled.set_attr("max", self.config.sm_resume_timeout.as_secs().to_string());
                }
                self.sm = Some(Sm {
                    id,
                    h_start: 0,
                    base: self.inbound.received,
                    acked: 0,
                    unacked: VecDeque::new(),
                    ack_wanted: None,
                });
                self.send_element(&enabled, out);
            }
            "r" => {
                let received = self.inbound.received;
                let Some(sm) = self.sm.as_mut() else {
                    return self.fail_with(
                        StreamErrorCondition::UnsupportedStanzaType,
                        "Stream Management is not enabled",
                        out,
                    );
                };
                sm.ack_wanted = Some(received);
                self.maybe_ack(out);
            }
            "a" => {
                let Some(h) = element.attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                    return self.fail_with(
                        StreamErrorCondition::InvalidXml,
                        "<a/> needs an h attribute",
                        out,
                    );
                };
                let Some(sm) = self.sm.as_mut() else {
                    return self.fail_with(
                        StreamErrorCondition::UnsupportedStanzaType,
                        "Stream Management is not enabled",
                        out,
                    );
                };
                let acked = h.wrapping_sub(sm.acked) as usize;
                if acked > sm.unacked.len() {
                    let sent = sm.acked.wrapping_add(sm.unacked.len() as u32);
                    let mut error = StreamError::with_text(
                        StreamErrorCondition::UndefinedCondition,
                        "the client acknowledged more stanzas than were sent",
                    );
                    error.application = Some(Box::new(
                        Element::new("handled-count-too-high", ns::STREAM_MANAGEMENT)
                            .with_attr("h", h.to_string())
                            .with_attr("send-count", sent.to_string()),
                    ));
                    return self.fail(error, out);
                }
                sm.unacked.drain(..acked);
                sm.acked = h;
            }
            "resume" => {
                let previd = element.attr("previd").unwrap_or_default().to_owned();
                let h = element.attr("h").and_then(|h| h.parse::<u32>().ok());
                match h {
                    Some(h)
                        if self.jid.is_none()
                            && self.pending_bind.is_none()
                            && self.pending_resume.is_none()
                            && !previd.is_empty() =>
                    {
                        self.pending_resume = Some(Box::new((previd.clone(), h)));
                        out.push(Action::ResumeRequested { previd, h });
                    }
                    Some(_) => self.sm_failed(StanzaErrorCondition::UnexpectedRequest, out),
                    None => self.sm_failed(StanzaErrorCondition::BadRequest, out),
                }
            }
            _ => self.fail_with(
                StreamErrorCondition::UnsupportedStanzaType,
                "unknown Stream Management element",
                out,
            ),
        }
    }

    fn on_resume_answer(&mut self, state: Option<ResumeState>, out: &mut Vec<Action>) {
        let Some((previd, h)) = self.pending_resume.take().map(|pending| *pending) else {
            tracing::debug!("resumption answer for no pending request");
            return;
        };
        let usable = state.filter(|s| {
            s.id == previd
                && Some(&s.jid.to_bare()) == self.user.as_ref()
                && (h.wrapping_sub(s.acked) as usize) <= s.unacked.len()
        });
        let Some(state) = usable else {
            return self.sm_failed(StanzaErrorCondition::ItemNotFound, out);
        };
        let acked = h.wrapping_sub(state.acked) as usize;
        let unacked: VecDeque<Element> = state.unacked.into_iter().skip(acked).collect();
        let resumed = Element::new("resumed", ns::STREAM_MANAGEMENT)
            .with_attr("previd", previd.as_str())
            .with_attr("h", state.handled.to_string());
        self.send_element(&resumed, out);
        for stanza in &unacked {
            self.send_element(stanza, out);
        }
        self.sm = Some(Sm {
            id: Some(previd),
            h_start: state.handled,
            base: self.inbound.handled,
            acked: h,
            unacked,
            ack_wanted: None,
        });
        self.disarm(out);
        self.jid = Some(state.jid.clone());
        out.push(Action::Resumed {
            full_jid: state.jid,
        });
    }
}

/// Whether a first-level element is an IQ with a XEP-0077 query.
fn is_register_request(element: &Element) -> bool {
    element.is("iq", ns::JABBER_CLIENT) && element.child("query", NS_REGISTER).is_some()
}

/// The text of a child of a registration query, if present.
fn field(query: &Element, name: &str) -> Option<String> {
    query.child(name, NS_REGISTER).map(Element::text)
}

impl Session {
    // ----- In-Band Registration (XEP-0077) -----

    /// The answer to a refused registration request.
    fn register_invalid(&self, invalid: Invalid) -> StanzaError {
        let text = match invalid {
            Invalid::MissingFields => "a user name and a password are required".to_owned(),
            Invalid::Username => "the user name is not a valid XMPP localpart".to_owned(),
            Invalid::Password => format!(
                "the password must have at least {} characters",
                self.config.min_password_chars.max(1)
            ),
        };
        StanzaError::new(StanzaErrorCondition::NotAcceptable)
            .with_type(StanzaErrorType::Modify)
            .with_text(text)
    }

    /// Sends a registration form: the fields to fill in, or the account's user name when
    /// it is registered already.
    fn send_register_form(
        &mut self,
        request: &Element,
        user: Option<&BareJid>,
        out: &mut Vec<Action>,
    ) {
        let mut query = Element::new("query", NS_REGISTER);
        let instructions = match user {
            Some(_) => {
                "You are registered. Send a new password to change it, or remove to cancel the account."
            }
            None => "Choose a user name and a password for your new account.",
        };
        query.push_child(Element::new("instructions", NS_REGISTER).with_text(instructions));
        let mut username = Element::new("username", NS_REGISTER);
        if let Some(user) = user {
            query.push_child(Element::new("registered", NS_REGISTER));
            username.push_text(user.node().map(|n| n.as_str()).unwrap_or_default());
        }
        query.push_child(username);
        query.push_child(Element::new("password", NS_REGISTER));
        let result = register_result(request).with_child(query);
        self.send_element(&result, out);
    }

    fn on_register_unauthenticated(&mut self, stanza: &Element, out: &mut Vec<Action>) {
        let kind = match classify(stanza) {
            Ok(kind) => kind,
            Err(ClassifyError::Invalid(error)) => return self.reply_error(stanza, error, out),
            Err(ClassifyError::NotAStanza) => {
                return self.fail_with(
                    StreamErrorCondition::UnsupportedStanzaType,
                    "not a stanza",
                    out,
                );
            }
        };
        let refusal = if !self.config.registration {
            Some(StanzaError::new(StanzaErrorCondition::ServiceUnavailable))
        } else if !self.tls && self.config.require_tls {
            Some(
                StanzaError::new(StanzaErrorCondition::NotAllowed)
                    .with_text("negotiate TLS before registering"),
            )
        } else if self.sasl.is_some() || self.pending_account.is_some() {
            Some(
                StanzaError::new(StanzaErrorCondition::UnexpectedRequest)
                    .with_type(StanzaErrorType::Wait),
            )
        } else {
            None
        };
        if let Some(error) = refusal {
            return self.reply_error(stanza, error, out);
        }
        let Some(query) = stanza.child("query", NS_REGISTER) else {
            return;
        };
        match kind {
            StanzaKind::Iq(IqType::Get) => self.send_register_form(stanza, None, out),
            StanzaKind::Iq(IqType::Set) => {
                if query.child("remove", NS_REGISTER).is_some() {
                    let error = StanzaError::new(StanzaErrorCondition::NotAuthorized)
                        .with_text("authenticate to cancel an account");
                    return self.reply_error(stanza, error, out);
                }
                let (Some(username), Some(password)) =
                    (field(query, "username"), field(query, "password"))
                else {
                    let error = self.register_invalid(Invalid::MissingFields);
                    return self.reply_error(stanza, error, out);
                };
                let checked = account_jid(&username, &self.config.domain).and_then(|jid| {
                    check_password(&password, self.config.min_password_chars).map(|()| jid)
                });
                let jid = match checked {
                    Ok(jid) => jid,
                    Err(invalid) => {
                        let error = self.register_invalid(invalid);
                        return self.reply_error(stanza, error, out);
                    }
                };
                self.pending_account = Some(Box::new(PendingAccount {
                    request: stripped(stanza),
                    removal: false,
                }));
                out.push(Action::ChangeAccount(AccountChange::Create {
                    jid,
                    password: Password::new(password),
                }));
            }
            // Results and errors to the server before authentication are dropped.
            _ => {}
        }
    }

    fn on_register_authenticated(
        &mut self,
        stanza: &Element,
        kind: StanzaKind,
        jid: &FullJid,
        out: &mut Vec<Action>,
    ) {
        if self.track(true, out).is_none() {
            return;
        }
        self.maybe_ack(out);
        let refusal = if !self.config.registration {
            Some(StanzaError::new(StanzaErrorCondition::ServiceUnavailable))
        } else if self.pending_account.is_some() {
            Some(
                StanzaError::new(StanzaErrorCondition::UnexpectedRequest)
                    .with_type(StanzaErrorType::Wait),
            )
        } else {
            None
        };
        if let Some(error) = refusal {
            return self.reply_error(stanza, error, out);
        }
        let Some(query) = stanza.child("query", NS_REGISTER) else {
            return;
        };
        let user = jid.to_bare();
        if kind == StanzaKind::Iq(IqType::Get) {
            return self.send_register_form(stanza, Some(&user), out);
        }
        let change = if query.child("remove", NS_REGISTER).is_some() {
            AccountChange::Remove { jid: user }
        } else {
            let (Some(username), Some(password)) =
                (field(query, "username"), field(query, "password"))
            else {
                let error = self.register_invalid(Invalid::MissingFields);
                return self.reply_error(stanza, error, out);
            };
            // XEP-0077 §3.3: only the authenticated user's own password can be changed.
            if account_jid(&username, &self.config.domain).ok().as_ref() != Some(&user) {
                let error = StanzaError::new(StanzaErrorCondition::NotAuthorized)
                    .with_text("only your own password can be changed");
                return self.reply_error(stanza, error, out);
            }
            if let Err(invalid) = check_password(&password, self.config.min_password_chars) {
                let error = self.register_invalid(invalid);
                return self.reply_error(stanza, error, out);
            }
            AccountChange::ChangePassword {
                jid: user,
                password: Password::new(password),
            }
        };
        self.pending_account = Some(Box::new(PendingAccount {
            request: stripped(stanza),
            removal: matches!(change, AccountChange::Remove { .. }),
        }));
        out.push(Action::ChangeAccount(change));
    }

    fn on_account_outcome(&mut self, outcome: AccountOutcome, out: &mut Vec<Action>) {
        let Some(pending) = self.pending_account.take() else {
            tracing::debug!("account change answer for no pending request");
            return;
        };
        let condition = match outcome {
            AccountOutcome::Done => {
                self.send_element(&register_result(&pending.request), out);
                if pending.removal {
                    // XEP-0077 §3.2: the account is gone, and so is the stream.
                    self.fail_with(
                        StreamErrorCondition::NotAuthorized,
                        "the account was removed",
                        out,
                    );
                }
                return;
            }
            AccountOutcome::Exists => {
                StanzaError::new(StanzaErrorCondition::Conflict).with_text("the user name is taken")
            }
            AccountOutcome::NotFound => StanzaError::new(StanzaErrorCondition::ItemNotFound)
                .with_text("the account does not exist"),
            AccountOutcome::NotAcceptable(text) => {
                StanzaError::new(StanzaErrorCondition::NotAcceptable)
                    .with_type(StanzaErrorType::Modify)
                    .with_text(text)
            }
            AccountOutcome::RateLimited => {
                StanzaError::new(StanzaErrorCondition::ResourceConstraint)
                    .with_type(StanzaErrorType::Wait)
                    .with_text(
                        "too many accounts were registered from this address; try again later",
                    )
            }
            AccountOutcome::NotAllowed => StanzaError::new(StanzaErrorCondition::NotAllowed)
                .with_text("accounts cannot be changed here"),
            AccountOutcome::Failed => StanzaError::new(StanzaErrorCondition::InternalServerError)
                .with_type(StanzaErrorType::Wait),
        };
        self.reply_error(&pending.request, condition, out);
    }
}

/// An empty result to a request: its id, and its `to` as `from`.
fn register_result(request: &Element) -> Element {
    let mut result = Element::new("iq", ns::JABBER_CLIENT).with_attr("type", "result");
    if let Some(id) = request.attr("id") {
        result.set_attr("id", id);
    }
    if let Some(to) = request.attr("to") {
        result.set_attr("from", to);
    }
    result
}

/// A request without its payload: its id, type and `to`, enough to answer it.
fn stripped(request: &Element) -> Element {
    let mut copy = Element::new("iq", ns::JABBER_CLIENT);
    for name in ["id", "type", "to"] {
        if let Some(value) = request.attr(name) {
            copy.set_attr(name, value);
        }
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::Session;

    /// Every connection's task holds a `Session` inline, idle ones included: a field that
    /// grows it costs that much on every connection. Keep per-negotiation state boxed.
    #[test]
    fn session_stays_small() {
        let size = std::mem::size_of::<Session>();
        println!("size_of::<Session>() = {size}");
        assert!(
            size <= 768,
            "Session is {size} bytes, over the 768 budget: it lives inline in every idle \
             connection's task, so box state that an established session does not need"
        );
    }

    /// The gateway moves each session into its connection's task.
    #[test]
    fn session_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Session>();
    }
}
