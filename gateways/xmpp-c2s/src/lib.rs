//! The client-to-server XMPP session of the imbus gateway, without I/O.
//!
//! A [`Session`] is the state machine of one client connection. The gateway owns the
//! socket, the TLS layer, the timers, the accounts projection and the log; it feeds the
//! session [`Input`]s (bytes read, TLS established, answers to its requests, log
//! confirmations, stanzas to deliver, timer expiry) with the current time and performs
//! the [`Action`]s it returns, in order (bytes to write, TLS upgrade, credential lookup,
//! resource binding, stanzas to publish, timers, close).
//!
//! The session negotiates the stream as RFC 6120 prescribes, in order:
//!
//! 1. stream header and features (XEP-0478 limits included);
//! 2. STARTTLS (§5), required by default unless TLS is already active; the parser is
//!    reset for the restart and any cleartext sent after `<starttls/>` is refused;
//! 3. SASL (§6) with the mechanisms of an [`imbus_xmpp_auth::Offer`], driving an
//!    [`imbus_xmpp_auth::SaslServer`]; failures are sent with their `<failure/>`
//!    condition and the client may retry up to [`SessionConfig::max_auth_failures`] times;
//! 4. stream restart, then resource binding (§7) with the client's resource or a
//!    generated one, the conflict policy of [`ConflictPolicy`], and the legacy session
//!    request of RFC 3921 answered with an empty result.
//!
//! Anything sent before authentication other than negotiation is a `not-authorized`
//! stream error, and a stream that has not bound a resource within
//! [`SessionConfig::auth_timeout`] is closed with `connection-timeout`. Once bound, every
//! stanza from the client is validated, its `from` overwritten with the session's full
//! JID, and handed to the gateway as [`Action::Publish`].
//!
//! Stream Management (XEP-0198) counts a client stanza as handled only once the log has
//! confirmed it ([`Input::Published`]), so an `<a/>` to the client means the stanza is
//! durable. Stanzas delivered to the client are kept until the client acknowledges them,
//! in a bounded queue handed to a resuming session through [`Session::resume_state`] and
//! [`Input::Resume`].
//!
//! In-Band Registration (XEP-0077), when [`SessionConfig::registration`] is on, lets a
//! client create its account before authenticating, change its password and cancel its
//! account; the session validates the request and the gateway performs it
//! ([`Action::ChangeAccount`], [`Input::AccountChanged`]).
//!
//! WebSocket connections (RFC 7395) use the same machine with `<open/>`/`<close/>`
//! framing: every [`Action::Send`] is then one WebSocket message and every
//! [`Input::Bytes`] must be one.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod config;
pub mod recent;
mod register;
mod session;

pub use config::{ConflictPolicy, SessionConfig, Transport};
pub use recent::RecentDeliveries;
pub use register::{AccountChange, AccountOutcome, NS_REGISTER, NS_REGISTER_FEATURE, Password};
pub use session::{Action, BindAnswer, Input, ResumeState, Session};
