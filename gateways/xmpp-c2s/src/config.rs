//! Settings of client-to-server sessions and the transport a session runs on.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use imbus_core::jid::DomainPart;
use imbus_xmpp_auth::{AuthConfig, MechanismPolicy};
use imbus_xmpp_stream::{DEFAULT_MAX_STANZA_BYTES, Framing, ParserConfig};

/// The connection a session runs on, as the gateway accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP connection carrying an RFC 6120 stream.
    Tcp {
        /// TLS is already active (the listener terminates TLS itself).
        tls_active: bool,
        /// The connection was opened with direct TLS (XEP-0368), so STARTTLS is never
        /// offered.
        direct_tls: bool,
    },
    /// A WebSocket connection carrying RFC 7395 framing.
    WebSocket {
        /// The WebSocket runs over TLS (`wss://`).
        secure: bool,
    },
}

impl Transport {
    /// The framing of XMPP on this transport.
    pub fn framing(self) -> Framing {
        match self {
            Transport::Tcp { .. } => Framing::Tcp,
            Transport::WebSocket { .. } => Framing::WebSocket,
        }
    }

    /// Whether the connection is encrypted from the start.
    pub fn encrypted(self) -> bool {
        match self {
            Transport::Tcp {
                tls_active,
                direct_tls,
            } => tls_active || direct_tls,
            Transport::WebSocket { secure } => secure,
        }
    }

    /// Whether STARTTLS can upgrade this connection (TCP without TLS).
    pub fn can_starttls(self) -> bool {
        matches!(
            self,
            Transport::Tcp {
                tls_active: false,
                direct_tls: false
            }
        )
    }
}

/// What happens when a client binds a full JID that another session already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// The new session takes the resource; the gateway ends the old session with a
    /// `<conflict/>` stream error (RFC 6120 §7.7.2.2, the usual server behaviour).
    #[default]
    Replace,
    /// The bind request is refused with a `<conflict/>` stanza error. A resource the
    /// server generated is replaced by a fresh one instead.
    Refuse,
}

/// Settings shared by every session of a gateway (hold them in an `Arc`).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The served domain: the `from` of stream headers and the domain of every JID.
    pub domain: DomainPart,
    /// Authentication settings (secret for unknown users, iteration count).
    pub auth: AuthConfig,
    /// Which SASL mechanisms may be offered.
    pub mechanisms: MechanismPolicy,
    /// Require TLS before authentication (default `true`): STARTTLS is then mandatory on
    /// plain TCP and a plain WebSocket is refused with `policy-violation`.
    pub require_tls: bool,
    /// Largest first-level element accepted, advertised with XEP-0478.
    pub max_stanza_bytes: usize,
    /// Time a stream has from its start to bind a resource (default 30 s); after it the
    /// stream is closed with `connection-timeout`.
    pub auth_timeout: Duration,
    /// Failed SASL attempts allowed on one stream (default 3); the last one closes the
    /// stream with `policy-violation`.
    pub max_auth_failures: u32,
    /// What to do when the bound full JID is already in use.
    pub resource_conflict: ConflictPolicy,
    /// Offer Stream Management (XEP-0198, default `true`).
    pub stream_management: bool,
    /// Allow Stream Management resumption (default `true`).
    pub sm_resume: bool,
    /// How long a broken session may be resumed, advertised as `max` (default 300 s).
    pub sm_resume_timeout: Duration,
    /// Most stanzas kept for an acknowledgement from the client (default 500). Exceeding
    /// it closes the stream with `resource-constraint`.
    pub max_unacked: usize,
    /// The server asks for an acknowledgement (`<r/>`) every this many unacknowledged
    /// stanzas (default 10).
    pub sm_request_every: usize,
    /// Most stanzas from the client published but not yet acknowledged by the log
    /// (default 1000). The gateway should stop reading before this is reached; exceeding
    /// it closes the stream with `resource-constraint`.
    pub max_in_flight: usize,
    /// In-Band Registration (XEP-0077, default `false`): clients may create accounts
    /// before authenticating (on an encrypted stream when [`Self::require_tls`]), change
    /// their password and cancel their account. When off, registration requests are
    /// answered with `service-unavailable` and the feature is not advertised.
    pub registration: bool,
    /// Shortest password accepted by registration and password changes, in characters
    /// (default 8).
    pub min_password_chars: usize,
    /// The stream parsers' settings, built on first use and shared by every session.
    parsers: OnceLock<[Arc<ParserConfig>; 2]>,
}

impl SessionConfig {
    /// Settings with the defaults described on each field.
    pub fn new(domain: DomainPart, auth: AuthConfig) -> Self {
        Self {
            domain,
            auth,
            mechanisms: MechanismPolicy::default(),
            require_tls: true,
            max_stanza_bytes: DEFAULT_MAX_STANZA_BYTES,
            auth_timeout: Duration::from_secs(30),
            max_auth_failures: 3,
            resource_conflict: ConflictPolicy::default(),
            stream_management: true,
            sm_resume: true,
            sm_resume_timeout: Duration::from_secs(300),
            max_unacked: 500,
            sm_request_every: 10,
            max_in_flight: 1000,
            registration: false,
            min_password_chars: 8,
            parsers: OnceLock::new(),
        }
    }

    /// The stream parser settings for `framing`, shared by every session of this
    /// configuration.
    pub(crate) fn parser_config(&self, framing: Framing) -> Arc<ParserConfig> {
        let build = |framing| {
            let mut config = match framing {
                Framing::Tcp => ParserConfig::client(),
                Framing::WebSocket => ParserConfig::websocket(),
            };
            config.max_stanza_bytes = self.max_stanza_bytes;
            Arc::new(config)
        };
        let shared = self
            .parsers
            .get_or_init(|| [build(Framing::Tcp), build(Framing::WebSocket)]);
        let config = &shared[usize::from(framing == Framing::WebSocket)];
        if config.max_stanza_bytes == self.max_stanza_bytes {
            config.clone()
        } else {
            // A copy of the configuration changed after its parsers were built.
            build(framing)
        }
    }
}
