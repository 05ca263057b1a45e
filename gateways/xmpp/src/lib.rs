//! The XMPP client gateway: the network side of client-to-server sessions.
//!
//! [`Gateway::start`] binds a TCP listener for RFC 6120 streams with STARTTLS and a
//! listener for direct TLS (XEP-0368), and runs one task per connection that drives the
//! sans-IO [`imbus_xmpp_c2s::Session`]: it reads the socket, performs the session's
//! actions (writes, the TLS upgrade, credential lookups, timers) and talks to the log:
//!
//! - every stanza a client sends is appended to `stanzas` as a `StanzaReceived` keyed by
//!   its owner's bare JID; the session learns it was stored (and Stream Management may
//!   acknowledge it) only once the log acknowledged the append;
//! - bound and closed sessions are appended to `sessions` (key: the full JID; partition:
//!   the user's bare JID);
//! - the gateway consumes its delivery topic `deliver.<gateway-id>` in the consumer group
//!   `gateway.<gateway-id>` and writes each `Delivery` to the session of its full JID,
//!   committing offsets once the stanza was handed to that connection.
//!
//! [`GatewayHandle::websocket_router`] serves the same sessions over WebSocket
//! (RFC 7395, subprotocol `xmpp`) at [`WEBSOCKET_PATH`] on an HTTP listener.
//!
//! Each connection has a bounded queue of stanzas to write: a client that does not read
//! fast enough is disconnected rather than allowed to grow the gateway's memory. New
//! connections are rate-limited per remote address, and failed logins are throttled per
//! account and per address ([`ConnectionLimits::login`]).
//!
//! When the connection of a session with Stream Management resumption (XEP-0198) breaks,
//! the session stays for the resume timeout: deliveries for it are kept (bounded by the
//! session's queue of unacknowledged stanzas) and a new connection of the same user that
//! resumes it gets every stanza it had not acknowledged. Only when the timeout passes is
//! the session's end recorded on `sessions`.
//!
//! The `stanzas` and `sessions` topics must exist (the server creates the system topics
//! at start); the gateway creates its delivery topic with as many partitions as
//! `sessions`.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod connection;
mod gateway;
mod mailbox;
mod redelivery;
mod registration;
mod stale;
mod tls;
mod tls_stream;

pub use gateway::{
    ConnectionLimits, CredentialLookup, Gateway, GatewayConfig, GatewayError, GatewayHandle,
    WEBSOCKET_PATH,
};
pub use imbus_xmpp_auth::ThrottleConfig;
pub use registration::{AccountFuture, AccountRegistrar, Registration};
pub use stale::close_stale_sessions;
pub use tls::CertSource;
