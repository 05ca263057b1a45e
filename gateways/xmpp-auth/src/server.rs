//! One SASL authentication exchange, as a state machine without I/O.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use imbus_core::jid::{DomainPart, DomainRef, NodePart};
use imbus_core::{BareJid, Credentials, ScramHash};
use rand::CryptoRng;

use crate::condition::{Failure, SaslCondition};
use crate::credentials::{self, MIN_ITERATIONS, SALT_LEN};
use crate::mechanism::{ChannelBinding, ChannelBindingType, Mechanism, Offer};
use crate::plain::PlainExchange;
use crate::scram::ScramExchange;

/// The longest client message (decoded) an exchange accepts. Longer ones fail with
/// `malformed-request` before they are looked at.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// The longest base64 text [`decode_payload`] accepts: the encoding of
/// [`MAX_MESSAGE_LEN`] bytes.
pub const MAX_PAYLOAD_TEXT_LEN: usize = MAX_MESSAGE_LEN.div_ceil(3) * 4;

/// The shortest accepted [`ServerSecret`], in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// A server-wide secret from which the SCRAM salts of unknown users are derived.
///
/// A client asking to log in as a user that does not exist gets a salt and iteration count
/// like any user, derived from this secret and the user name, so the exchange looks the
/// same as for an existing user with a wrong password and accounts cannot be enumerated.
/// The salt must be the same on every attempt: the secret must therefore be stable across
/// restarts and shared by every gateway of a deployment (keep it in the configuration).
/// Stand-in salts are [`SALT_LEN`] bytes with the iteration count of [`AuthConfig`], like
/// the credentials [`derive()`](crate::derive) makes with that count; accounts imported with
/// other salt lengths or counts would stand out.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerSecret(Vec<u8>);

impl ServerSecret {
    /// A secret of at least [`MIN_SECRET_LEN`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, ConfigError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(ConfigError::SecretTooShort {
                given: bytes.len(),
                minimum: MIN_SECRET_LEN,
            });
        }
        Ok(Self(bytes))
    }

    /// A new random 32-byte secret (to store in the configuration when none is set).
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = vec![0; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret(<redacted>)")
    }
}

/// Invalid authentication settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The server secret is too short.
    #[error("the authentication secret is {given} bytes, it must be at least {minimum}")]
    SecretTooShort {
        /// Its length.
        given: usize,
        /// The shortest accepted length.
        minimum: usize,
    },
    /// The iteration count for unknown users is out of range.
    #[error(
        "the SCRAM iteration count {given} is out of range: it must be {} to {}",
        MIN_ITERATIONS,
        i32::MAX
    )]
    Iterations {
        /// The count given.
        given: u32,
    },
}

/// Server-wide authentication settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    secret: ServerSecret,
    iterations: u32,
}

impl AuthConfig {
    /// Settings with the secret for unknown users' salts and the iteration count the
    /// deployment gives new credentials (unknown users get the same count, so they look
    /// like real ones; use the same value when deriving credentials with
    /// [`derive()`](crate::derive)).
    pub fn new(secret: ServerSecret, iterations: u32) -> Result<Self, ConfigError> {
        if iterations < MIN_ITERATIONS || i32::try_from(iterations).is_err() {
            return Err(ConfigError::Iterations { given: iterations });
        }
        Ok(Self { secret, iterations })
    }

    /// The iteration count of new credentials and unknown users.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The secret.
    pub fn secret(&self) -> &ServerSecret {
        &self.secret
    }
}

/// Who authenticated, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user's bare JID (`localpart@domain`).
    pub jid: BareJid,
    /// The mechanism used.
    pub mechanism: Mechanism,
    /// The channel binding the client proved, for `-PLUS` mechanisms.
    pub channel_binding: Option<ChannelBindingType>,
}

/// What the gateway does next in an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `<challenge/>` with this data (base64, see [`encode_payload`]) and pass the
    /// client's `<response/>` to [`SaslServer::respond`].
    Challenge(Vec<u8>),
    /// Look the account up and pass what was found to [`SaslServer::credentials`] (or call
    /// [`SaslServer::lookup_failed`] if the accounts cannot be read).
    NeedCredentials {
        /// The user name: the normalized (nodeprep) localpart.
        username: String,
        /// The account's bare JID, the key of the accounts projection.
        jid: BareJid,
    },
    /// Send `<success/>` with the additional data, if any; the stream restarts as `jid`.
    Success {
        /// Additional data for `<success/>` (the SCRAM server signature, `v=…`).
        additional_data: Option<Vec<u8>>,
        /// Who authenticated.
        identity: Authenticated,
    },
    /// Send `<failure/>` with the condition; the exchange is over.
    Failure(Failure),
}

impl Step {
    /// Whether the exchange is over.
    pub fn is_final(&self) -> bool {
        matches!(self, Step::Success { .. } | Step::Failure(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    New,
    AwaitingResponse,
    AwaitingCredentials,
    Finished,
}

/// What an exchange needs from the stream and the server settings.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) domain: DomainPart,
    pub(crate) secret: ServerSecret,
    pub(crate) iterations: u32,
    pub(crate) offers_plus: bool,
    pub(crate) bindings: Vec<ChannelBinding>,
}

impl Context {
    pub(crate) fn binding(&self, kind: ChannelBindingType) -> Option<&ChannelBinding> {
        self.bindings.iter().find(|b| b.kind() == kind)
    }

    /// Checks a SASL username (the localpart) and builds the bare JID.
    pub(crate) fn user_jid(&self, username: &str) -> Result<(String, BareJid), Failure> {
        let node = NodePart::new(username).map_err(|e| {
            Failure::malformed(format!("the user name is not a valid localpart: {e}"))
        })?;
        let jid = BareJid::from_parts(Some(&node), &self.domain);
        Ok((node.as_str().to_owned(), jid))
    }

    /// Checks an authorization identity: only the authenticated user's own bare JID is
    /// accepted (no one may act as another user).
    pub(crate) fn check_authzid(&self, authzid: &str, jid: &BareJid) -> Result<(), Failure> {
        match BareJid::new(authzid) {
            Ok(asked) if &asked == jid => Ok(()),
            Ok(_) => Err(Failure::new(
                SaslCondition::InvalidAuthzid,
                "the authorization identity is not the authenticated user",
            )),
            Err(e) => Err(Failure::new(
                SaslCondition::InvalidAuthzid,
                format!("the authorization identity is not a bare JID: {e}"),
            )),
        }
    }

    /// The SCRAM values of a user: the stored ones, or for an unknown user values derived
    /// from the server secret, stable across attempts and indistinguishable from real ones
    /// without the secret. The flag says whether the user exists.
    pub(crate) fn keys(
        &self,
        hash: ScramHash,
        jid: &BareJid,
        found: Option<&Credentials>,
    ) -> (StoredKeys, bool) {
        if let Some(credentials) = found {
            let c = credentials.for_hash(hash);
            let keys = StoredKeys {
                salt: c.salt().to_vec(),
                iterations: c.iterations(),
                stored_key: c.stored_key().to_vec(),
                server_key: c.server_key().to_vec(),
            };
            return (keys, true);
        }
        let derive = |label: &[u8]| {
            credentials::hmac(
                ScramHash::Sha256,
                self.secret.as_bytes(),
                &[
                    b"imbus-scram-unknown-user\0",
                    label,
                    b"\0",
                    hash.mechanism().as_bytes(),
                    b"\0",
                    jid.as_str().as_bytes(),
                ],
            )
        };
        let mut salt = derive(b"salt");
        salt.truncate(SALT_LEN);
        let mut stored_key = derive(b"stored-key");
        stored_key.truncate(hash.output_len());
        let mut server_key = derive(b"server-key");
        server_key.truncate(hash.output_len());
        let keys = StoredKeys {
            salt,
            iterations: self.iterations,
            stored_key,
            server_key,
        };
        (keys, false)
    }
}

/// The SCRAM values the server holds for one user and hash.
#[derive(Clone)]
pub(crate) struct StoredKeys {
    pub(crate) salt: Vec<u8>,
    pub(crate) iterations: u32,
    pub(crate) stored_key: Vec<u8>,
    pub(crate) server_key: Vec<u8>,
}

impl fmt::Debug for StoredKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKeys")
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Exchange {
    Scram(ScramExchange),
    Plain(PlainExchange),
}

/// The server side of one SASL authentication exchange (RFC 6120 §6, RFC 4422), without
/// I/O: the gateway feeds it what the client sent and gets back what to do next.
///
/// ```text
/// <auth mechanism=M>   → SaslServer::new(…, M, …) then start(initial response)
/// <response>           → respond(data)
/// account lookup done  → credentials(Some(&credentials) | None)
/// <abort/>             → abort()
/// ```
///
/// Every call returns a [`Step`]. Once a step is final ([`Step::is_final`]) the exchange
/// is over and every further call fails with `malformed-request`. Client data is never
/// trusted: malformed, oversized or out-of-order input ends the exchange with a failure,
/// never a panic.
///
/// Unknown users are indistinguishable from known users with a wrong password: SCRAM
/// proceeds with a salt derived from the [`ServerSecret`] and fails at the proof with
/// `not-authorized`; PLAIN runs the same key derivation and fails the same way.
#[derive(Debug)]
pub struct SaslServer {
    mechanism: Mechanism,
    phase: Phase,
    context: Context,
    exchange: Exchange,
}

impl SaslServer {
    /// Starts an exchange for the mechanism the client named in `<auth/>`, with a random
    /// server nonce from `rng`.
    ///
    /// Fails with `invalid-mechanism` for a mechanism that is unknown or was not offered,
    /// `encryption-required` for PLAIN on a stream without TLS and `mechanism-too-weak` for
    /// an unbound SCRAM mechanism when the policy requires channel binding.
    pub fn new(
        config: &AuthConfig,
        offer: &Offer,
        domain: &DomainRef,
        mechanism: &str,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, Failure> {
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        Self::with_server_nonce(config, offer, domain, mechanism, &STANDARD.encode(nonce))
    }

    /// Like [`SaslServer::new`] with a given server nonce (printable ASCII without `,`),
    /// for callers with their own nonce source and for reproducing published test vectors.
    /// An invalid nonce fails with `temporary-auth-failure`: it is the server's fault.
    pub fn with_server_nonce(
        config: &AuthConfig,
        offer: &Offer,
        domain: &DomainRef,
        mechanism: &str,
        server_nonce: &str,
    ) -> Result<Self, Failure> {
        let mechanism = choose(offer, mechanism)?;
        let context = Context {
            domain: DomainPart::from(domain),
            secret: config.secret.clone(),
            iterations: config.iterations,
            offers_plus: offer.offers_plus(),
            bindings: offer
                .channel_binding_types()
                .filter_map(|t| offer.binding(t).cloned())
                .collect(),
        };
        let exchange = match mechanism.scram_hash() {
            Some(hash) => {
                if !crate::scram::is_valid_nonce(server_nonce) {
                    return Err(Failure::new(
                        SaslCondition::TemporaryAuthFailure,
                        "the server nonce is not printable ASCII without commas",
                    ));
                }
                Exchange::Scram(ScramExchange::new(
                    hash,
                    mechanism.is_plus(),
                    server_nonce.to_owned(),
                ))
            }
            None => Exchange::Plain(PlainExchange::new()),
        };
        Ok(Self {
            mechanism,
            phase: Phase::New,
            context,
            exchange,
        })
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether the exchange is over.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Handles the initial response of `<auth/>`: `None` when the element had no content
    /// (the server answers with an empty challenge), `Some` with the decoded data
    /// otherwise (`=` is an empty response, see [`decode_payload`]).
    pub fn start(&mut self, initial_response: Option<&[u8]>) -> Step {
        if self.phase != Phase::New {
            return self.finish(Step::Failure(Failure::malformed(
                "the exchange has already started",
            )));
        }
        match initial_response {
            None => {
                self.phase = Phase::AwaitingResponse;
                Step::Challenge(Vec::new())
            }
            Some(data) => {
                self.phase = Phase::AwaitingResponse;
                self.respond(data)
            }
        }
    }

    /// Handles the decoded content of a `<response/>`.
    pub fn respond(&mut self, response: &[u8]) -> Step {
        if self.phase != Phase::AwaitingResponse {
            let reason = match self.phase {
                Phase::New => "a response came before the exchange started",
                Phase::AwaitingCredentials => "a response came while the account is looked up",
                _ => "the exchange is over",
            };
            return self.finish(Step::Failure(Failure::malformed(reason)));
        }
        if response.len() > MAX_MESSAGE_LEN {
            return self.finish(Step::Failure(Failure::malformed(format!(
                "the client message is {} bytes, at most {MAX_MESSAGE_LEN} are accepted",
                response.len()
            ))));
        }
        let step = match &mut self.exchange {
            Exchange::Scram(scram) => scram.receive(&self.context, response),
            Exchange::Plain(plain) => plain.receive(&self.context, response),
        };
        self.advance(step)
    }

    /// Hands over the result of the account lookup asked for by
    /// [`Step::NeedCredentials`]: the account's credentials, or `None` if there is no such
    /// account.
    ///
    /// For PLAIN this runs PBKDF2 with the account's iteration count (milliseconds of CPU):
    /// an async gateway should call it off its reactor threads. SCRAM exchanges never run
    /// PBKDF2 on the server.
    pub fn credentials(&mut self, found: Option<&Credentials>) -> Step {
        if self.phase != Phase::AwaitingCredentials {
            return self.finish(Step::Failure(Failure::malformed(
                "credentials were given while none were asked for",
            )));
        }
        let step = match &mut self.exchange {
            Exchange::Scram(scram) => scram.credentials(&self.context, found),
            Exchange::Plain(plain) => plain.credentials(&self.context, found),
        };
        self.advance(step)
    }

    /// The account lookup failed (e.g. the accounts projection is not ready): the exchange
    /// ends with `temporary-auth-failure`.
    pub fn lookup_failed(&mut self) -> Step {
        self.finish(Step::Failure(Failure::new(
            SaslCondition::TemporaryAuthFailure,
            "the account could not be looked up",
        )))
    }

    /// The client sent `<abort/>`: the exchange ends with `aborted`.
    pub fn abort(&mut self) -> Step {
        self.finish(Step::Failure(Failure::new(
            SaslCondition::Aborted,
            "the client aborted the exchange",
        )))
    }

    fn advance(&mut self, step: Step) -> Step {
        match &step {
            Step::Challenge(_) => self.phase = Phase::AwaitingResponse,
            Step::NeedCredentials { .. } => self.phase = Phase::AwaitingCredentials,
            Step::Success { .. } | Step::Failure(_) => return self.finish(step),
        }
        step
    }

    fn finish(&mut self, step: Step) -> Step {
        self.phase = Phase::Finished;
        match &step {
            Step::Failure(failure) => tracing::debug!(
                mechanism = %self.mechanism,
                condition = %failure.condition,
                reason = %failure.reason,
                "SASL authentication failed"
            ),
            Step::Success { identity, .. } => tracing::debug!(
                mechanism = %self.mechanism,
                jid = %identity.jid,
                "SASL authentication succeeded"
            ),
            _ => {}
        }
        step
    }
}

/// The mechanism the client asked for, if the offer allows it.
fn choose(offer: &Offer, name: &str) -> Result<Mechanism, Failure> {
    let Some(mechanism) = Mechanism::from_name(name) else {
        return Err(Failure::new(
            SaslCondition::InvalidMechanism,
            "the mechanism is not supported",
        ));
    };
    if offer.offers(mechanism) {
        return Ok(mechanism);
    }
    let (condition, reason) = match mechanism {
        Mechanism::Plain if offer.policy().plain && !offer.tls() => (
            SaslCondition::EncryptionRequired,
            "PLAIN is only available over TLS",
        ),
        Mechanism::ScramSha256 | Mechanism::ScramSha1 if offer.policy().require_channel_binding => {
            (
                SaslCondition::MechanismTooWeak,
                "the server requires channel binding",
            )
        }
        Mechanism::Plain if offer.policy().plain && offer.policy().require_channel_binding => (
            SaslCondition::MechanismTooWeak,
            "the server requires channel binding",
        ),
        _ => (
            SaslCondition::InvalidMechanism,
            "the mechanism was not offered on this stream",
        ),
    };
    Err(Failure::new(condition, reason))
}

/// Decodes the base64 text of `<auth/>` or `<response/>` (RFC 6120 §6.4.2): `=` stands
/// for empty data, surrounding whitespace is ignored, anything else must be padded base64
/// of at most [`MAX_MESSAGE_LEN`] bytes. An empty text decodes to empty data; for
/// `<auth/>` the gateway should instead pass `None` to [`SaslServer::start`].
///
/// Fails with `incorrect-encoding` for bad base64 and `malformed-request` for text that
/// is too long.
pub fn decode_payload(text: &str) -> Result<Vec<u8>, Failure> {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if text.is_empty() || text == "=" {
        return Ok(Vec::new());
    }
    if text.len() > MAX_PAYLOAD_TEXT_LEN {
        return Err(Failure::malformed(format!(
            "the base64 data is {} characters, at most {MAX_PAYLOAD_TEXT_LEN} are accepted",
            text.len()
        )));
    }
    STANDARD
        .decode(text)
        .map_err(|e| Failure::new(SaslCondition::IncorrectEncoding, format!("bad base64: {e}")))
}

/// Encodes the data of a `<challenge/>` or `<success/>` (RFC 6120 §6.4.3): base64, with
/// empty data written as `=`.
pub fn encode_payload(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_owned()
    } else {
        STANDARD.encode(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        assert_eq!(encode_payload(b""), "=");
        assert_eq!(decode_payload("=").unwrap(), b"");
        assert_eq!(decode_payload("").unwrap(), b"");
        assert_eq!(decode_payload(" \n").unwrap(), b"");
        let text = encode_payload(b"n,,n=user,r=abc");
        assert_eq!(
            decode_payload(&format!("\n{text} ")).unwrap(),
            b"n,,n=user,r=abc"
        );
        let err = decode_payload("bi**").unwrap_err();
        assert_eq!(err.condition, SaslCondition::IncorrectEncoding);
        // Unpadded base64 is not RFC 4648 §4 base64.
        let err = decode_payload("YQ").unwrap_err();
        assert_eq!(err.condition, SaslCondition::IncorrectEncoding);
        let max = STANDARD.encode(vec![7u8; MAX_MESSAGE_LEN]);
        assert_eq!(max.len(), MAX_PAYLOAD_TEXT_LEN);
        assert_eq!(decode_payload(&max).unwrap().len(), MAX_MESSAGE_LEN);
        let err = decode_payload(&format!("{max}AAAA")).unwrap_err();
        assert_eq!(err.condition, SaslCondition::MalformedRequest);
    }

    #[test]
    fn config_is_checked() {
        assert_eq!(
            ServerSecret::new(vec![1; 15]).unwrap_err(),
            ConfigError::SecretTooShort {
                given: 15,
                minimum: 16
            }
        );
        let secret = ServerSecret::new(vec![1; 16]).unwrap();
        assert_eq!(format!("{secret:?}"), "ServerSecret(<redacted>)");
        assert_eq!(
            AuthConfig::new(secret.clone(), 4095).unwrap_err(),
            ConfigError::Iterations { given: 4095 }
        );
        assert!(AuthConfig::new(secret.clone(), u32::MAX).is_err());
        assert_eq!(AuthConfig::new(secret, 4096).unwrap().iterations(), 4096);
    }
}
