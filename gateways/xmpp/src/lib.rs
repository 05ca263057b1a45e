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
//! Each connection has a bounded queue of stanzas to write: a client that does not read
//! fast enough is disconnected rather than allowed to grow the gateway's memory. New
//! connections are rate-limited per remote address.
//!
//! The `stanzas` and `sessions` topics must exist (the server creates the system topics
//! at start); the gateway creates its delivery topic with as many partitions as
//! `sessions`.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod connection;
mod gateway;
mod tls;

pub use gateway::{
    ConnectionLimits, CredentialLookup, Gateway, GatewayConfig, GatewayError, GatewayHandle,
};
pub use tls::CertSource;
