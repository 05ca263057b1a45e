//! The server side of XMPP authentication (RFC 6120 §6), without I/O.
//!
//! The XMPP gateway owns the sockets and the TLS session; this crate decides. It has no
//! async runtime, opens no sockets and reads no clock: the gateway passes in what the
//! client sent, what the TLS layer knows, what the accounts projection holds and the
//! current time.
//!
//! - **Credentials** ([`derive()`], [`verify_password`]): accounts store SCRAM values
//!   ([`imbus_core::Credentials`]: salt, iteration count, StoredKey and ServerKey for
//!   SHA-1 and SHA-256), never a password. Passwords are normalized with SASLprep
//!   (RFC 4013) and hashed with PBKDF2; fewer than [`MIN_ITERATIONS`] iterations are
//!   refused.
//! - **Mechanisms** ([`Offer`], [`offered_mechanisms`]): which mechanisms a stream offers —
//!   `SCRAM-SHA-256-PLUS`, `SCRAM-SHA-1-PLUS` (channel binding `tls-exporter`, RFC 9266, or
//!   `tls-server-end-point`, RFC 5929) when the TLS layer provides binding data, then
//!   `SCRAM-SHA-256`, `SCRAM-SHA-1`, and `PLAIN` only over TLS and only when enabled.
//! - **Exchanges** ([`SaslServer`]): one state machine per `<auth/>`, returning a
//!   [`Step`]: a challenge to send, a request to look up the account's credentials, a
//!   success with the server signature and the authenticated bare JID, or a failure with
//!   its RFC 6120 §6.5 [`SaslCondition`]. Unknown users cannot be told apart from wrong
//!   passwords; channel binding downgrades and mismatches, impersonation through the
//!   authorization identity, malformed and oversized messages all fail cleanly.
//! - **Throttling** ([`Throttle`]): exponential back-off per account and a token bucket per
//!   client address, with bounded memory.
//!
//! A SCRAM login, as the gateway drives it:
//!
//! ```
//! use imbus_xmpp_auth::*;
//! use imbus_core::jid::DomainPart;
//! use rand::SeedableRng;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let config = AuthConfig::new(ServerSecret::generate(&mut rng), DEFAULT_ITERATIONS)?;
//! let stored = derive("pencil", config.iterations(), &mut rng)?;
//! let domain = DomainPart::new("example.com")?;
//!
//! // Stream features: an encrypted stream without channel binding data.
//! let offer = Offer::new(MechanismPolicy::default(), true, vec![]);
//! assert_eq!(offer.mechanisms(), &[Mechanism::ScramSha256, Mechanism::ScramSha1]);
//!
//! // <auth mechanism='SCRAM-SHA-256'>base64(client-first-message)</auth>
//! let mut sasl = SaslServer::new(&config, &offer, &domain, "SCRAM-SHA-256", &mut rng)?;
//! let step = sasl.start(Some(b"n,,n=juliet,r=rOprNGfwEbeRWgbNEkqO"));
//! let Step::NeedCredentials { jid, .. } = step else { panic!("{step:?}") };
//! assert_eq!(jid.as_str(), "juliet@example.com");
//!
//! // The gateway reads the accounts projection and hands over what it found.
//! let step = sasl.credentials(Some(&stored));
//! assert!(matches!(step, Step::Challenge(_))); // r=…,s=…,i=… goes to the client
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod condition;
mod credentials;
mod mechanism;
mod plain;
mod scram;
mod server;
mod throttle;

pub use condition::{Failure, SaslCondition};
pub use credentials::{
    DEFAULT_ITERATIONS, DeriveError, MIN_ITERATIONS, SALT_LEN, derive, derive_with_salt, saslprep,
    verify_password,
};
pub use mechanism::{
    ChannelBinding, ChannelBindingType, Mechanism, MechanismPolicy, Offer, offered_mechanisms,
};
pub use server::{
    AuthConfig, Authenticated, ConfigError, MAX_MESSAGE_LEN, MAX_PAYLOAD_TEXT_LEN, MIN_SECRET_LEN,
    SaslServer, ServerSecret, Step, decode_payload, encode_payload,
};
pub use throttle::{Decision, Throttle, ThrottleConfig};
