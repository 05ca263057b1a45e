//! Test helpers: a fixed deployment, accounts, and clients from independent SASL crates
//! (`sasl` from the xmpp-rs project and `scram-rs`) driven against the server.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::OnceLock;

use imbus_core::jid::DomainPart;
use imbus_core::{BareJid, Credentials};
use imbus_xmpp_auth::{
    AuthConfig, Authenticated, ChannelBinding, ChannelBindingType, Failure, MechanismPolicy, Offer,
    SaslServer, ServerSecret, Step, decode_payload, encode_payload,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub const DOMAIN: &str = "example.com";
pub const PASSWORD: &str = "pencil";
/// The iteration count of the deployment: accounts and unknown users alike.
pub const ITERATIONS: u32 = 4096;

pub const EXPORTER: [u8; 32] = [0x11; 32];
pub const END_POINT: [u8; 32] = [0x22; 32];

pub fn rng() -> StdRng {
    StdRng::seed_from_u64(0x1b05)
}

pub fn config() -> AuthConfig {
    AuthConfig::new(
        ServerSecret::new(b"a stable deployment secret".to_vec()).unwrap(),
        ITERATIONS,
    )
    .unwrap()
}

pub fn domain() -> DomainPart {
    DomainPart::new(DOMAIN).unwrap().into_owned()
}

pub fn jid(local: &str) -> BareJid {
    BareJid::new(&format!("{local}@{DOMAIN}")).unwrap()
}

/// The accounts projection: juliet and user (both with password "pencil").
pub fn accounts() -> &'static HashMap<BareJid, Credentials> {
    static ACCOUNTS: OnceLock<HashMap<BareJid, Credentials>> = OnceLock::new();
    ACCOUNTS.get_or_init(|| {
        let mut rng = rng();
        ["juliet", "user"]
            .into_iter()
            .map(|local| {
                let creds = imbus_xmpp_auth::derive(PASSWORD, ITERATIONS, &mut rng).unwrap();
                (jid(local), creds)
            })
            .collect()
    })
}

pub fn plus_policy() -> MechanismPolicy {
    MechanismPolicy {
        plain: true,
        require_channel_binding: false,
    }
}

/// A TLS stream with both channel binding types.
pub fn tls_offer_with_bindings() -> Offer {
    Offer::new(
        plus_policy(),
        true,
        vec![
            ChannelBinding::new(ChannelBindingType::TlsExporter, EXPORTER.to_vec()),
            ChannelBinding::new(ChannelBindingType::TlsServerEndPoint, END_POINT.to_vec()),
        ],
    )
}

/// A TLS stream without channel binding data.
pub fn tls_offer_without_bindings() -> Offer {
    Offer::new(plus_policy(), true, vec![])
}

/// The client side of an exchange.
pub trait Client {
    fn mechanism(&self) -> String;
    fn initial(&mut self) -> Vec<u8>;
    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String>;
    fn success(&mut self, additional_data: Option<&[u8]>) -> Result<(), String>;
}

/// A record of a whole exchange.
#[derive(Debug)]
pub struct Transcript {
    pub challenges: Vec<Vec<u8>>,
    pub lookups: Vec<BareJid>,
    pub outcome: Result<Authenticated, Failure>,
}

/// Runs a client against a fresh server for the offer, through base64 as on the wire.
pub fn run(client: &mut dyn Client, offer: &Offer) -> Transcript {
    run_with(client, offer, accounts())
}

pub fn run_with(
    client: &mut dyn Client,
    offer: &Offer,
    accounts: &HashMap<BareJid, Credentials>,
) -> Transcript {
    let mut transcript = Transcript {
        challenges: Vec::new(),
        lookups: Vec::new(),
        outcome: Err(Failure::new(
            imbus_xmpp_auth::SaslCondition::Aborted,
            "not run",
        )),
    };
    let mut server =
        match SaslServer::new(&config(), offer, &domain(), &client.mechanism(), &mut rng()) {
            Ok(server) => server,
            Err(failure) => {
                transcript.outcome = Err(failure);
                return transcript;
            }
        };
    let initial = decode_payload(&encode_payload(&client.initial())).unwrap();
    let mut step = server.start(Some(&initial));
    for _ in 0..10 {
        step = match step {
            Step::NeedCredentials { jid, username } => {
                assert_eq!(jid.node().unwrap().as_str(), username);
                transcript.lookups.push(jid.clone());
                server.credentials(accounts.get(&jid))
            }
            Step::Challenge(challenge) => {
                let wire = decode_payload(&encode_payload(&challenge)).unwrap();
                transcript.challenges.push(wire.clone());
                match client.respond(&wire) {
                    Ok(response) => {
                        server.respond(&decode_payload(&encode_payload(&response)).unwrap())
                    }
                    Err(e) => panic!("the client refused the challenge: {e}"),
                }
            }
            Step::Success {
                additional_data,
                identity,
            } => {
                client
                    .success(additional_data.as_deref())
                    .unwrap_or_else(|e| panic!("the client refused the success: {e}"));
                assert!(server.is_finished());
                transcript.outcome = Ok(identity);
                return transcript;
            }
            Step::Failure(failure) => {
                assert!(server.is_finished());
                transcript.outcome = Err(failure);
                return transcript;
            }
        };
    }
    panic!("the exchange did not end");
}

/// A client from the `sasl` crate (xmpp-rs).
pub struct XmppRs {
    inner: Box<dyn sasl::client::Mechanism>,
}

impl XmppRs {
    pub fn scram_sha1(user: &str, password: &str, cb: sasl::common::ChannelBinding) -> Self {
        Self {
            inner: Box::new(
                sasl::client::mechanisms::Scram::<sasl::common::scram::Sha1>::new(
                    user,
                    password.to_owned(),
                    cb,
                )
                .unwrap(),
            ),
        }
    }

    pub fn scram_sha256(user: &str, password: &str, cb: sasl::common::ChannelBinding) -> Self {
        Self {
            inner: Box::new(
                sasl::client::mechanisms::Scram::<sasl::common::scram::Sha256>::new(
                    user,
                    password.to_owned(),
                    cb,
                )
                .unwrap(),
            ),
        }
    }

    pub fn plain(user: &str, password: &str) -> Self {
        Self {
            inner: Box::new(sasl::client::mechanisms::Plain::new(user, password)),
        }
    }
}

impl Client for XmppRs {
    fn mechanism(&self) -> String {
        self.inner.name().to_owned()
    }

    fn initial(&mut self) -> Vec<u8> {
        self.inner.initial()
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String> {
        self.inner.response(challenge).map_err(|e| e.to_string())
    }

    fn success(&mut self, additional_data: Option<&[u8]>) -> Result<(), String> {
        self.inner
            .success(additional_data.unwrap_or_default())
            .map_err(|e| e.to_string())
    }
}

/// The credentials and binding data a `scram-rs` client works with.
#[derive(Debug)]
pub struct ScramRsAuth {
    pub user: String,
    pub password: String,
    pub end_point: Vec<u8>,
    pub exporter: Vec<u8>,
}

impl scram_rs::ScramAuthClient for &ScramRsAuth {
    fn get_username(&self) -> &str {
        &self.user
    }

    fn get_password(&self) -> &str {
        &self.password
    }
}

impl scram_rs::ScramCbHelper for &ScramRsAuth {
    fn get_tls_server_endpoint(&self) -> scram_rs::ScramResult<Vec<u8>> {
        Ok(self.end_point.clone())
    }

    fn get_tls_exporter(&self) -> scram_rs::ScramResult<Vec<u8>> {
        Ok(self.exporter.clone())
    }
}

/// A client from the `scram-rs` crate.
pub struct ScramRs {
    mechanism: String,
    inner: Box<dyn scram_rs::ScramClientDyn + 'static>,
    finished: bool,
}

impl ScramRs {
    /// `sha256` picks the hash; `cb` the channel binding (scram-rs names).
    pub fn new(sha256: bool, cb: scram_rs::ChannelBindType, auth: ScramRsAuth) -> Self {
        use scram_rs::scram_sync::SyncScramClient;
        // The client borrows its callbacks for its whole life; leak them in tests.
        let auth: &'static ScramRsAuth = Box::leak(Box::new(auth));
        let plus = matches!(
            cb,
            scram_rs::ChannelBindType::TlsExporter
                | scram_rs::ChannelBindType::TlsServerEndpoint
                | scram_rs::ChannelBindType::TlsUnique
        );
        let nonce = scram_rs::ScramNonce::none().unwrap();
        let (name, inner): (&str, Box<dyn scram_rs::ScramClientDyn>) = if sha256 {
            (
                "SCRAM-SHA-256",
                SyncScramClient::<scram_rs::ScramSha256RustNative, _, _>::new(
                    auth, nonce, cb, auth, false,
                )
                .unwrap()
                .make_dyn(),
            )
        } else {
            (
                "SCRAM-SHA-1",
                SyncScramClient::<scram_rs::ScramSha1RustNative, _, _>::new(
                    auth, nonce, cb, auth, false,
                )
                .unwrap()
                .make_dyn(),
            )
        };
        Self {
            mechanism: if plus {
                format!("{name}-PLUS")
            } else {
                name.to_owned()
            },
            inner,
            finished: false,
        }
    }
}

impl Client for ScramRs {
    fn mechanism(&self) -> String {
        self.mechanism.clone()
    }

    fn initial(&mut self) -> Vec<u8> {
        self.inner
            .init_client_msg()
            .unwrap_output()
            .unwrap()
            .into_bytes()
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(challenge).map_err(|e| e.to_string())?;
        match self.inner.parse_response(text).map_err(|e| e.to_string())? {
            scram_rs::ScramResultClient::Output(out) => Ok(out.into_bytes()),
            scram_rs::ScramResultClient::Completed => Err("completed early".to_owned()),
        }
    }

    fn success(&mut self, additional_data: Option<&[u8]>) -> Result<(), String> {
        let data = additional_data.ok_or("no server signature")?;
        let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
        match self.inner.parse_response(text).map_err(|e| e.to_string())? {
            scram_rs::ScramResultClient::Completed => {
                self.finished = true;
                Ok(())
            }
            scram_rs::ScramResultClient::Output(_) => Err("expected completion".to_owned()),
        }
    }
}

/// A hand-written client message, for cases no client crate produces.
pub struct Raw {
    pub mechanism: &'static str,
    pub messages: Vec<Vec<u8>>,
}

impl Client for Raw {
    fn mechanism(&self) -> String {
        self.mechanism.to_owned()
    }

    fn initial(&mut self) -> Vec<u8> {
        self.messages.remove(0)
    }

    fn respond(&mut self, _challenge: &[u8]) -> Result<Vec<u8>, String> {
        if self.messages.is_empty() {
            Err("no more messages".to_owned())
        } else {
            Ok(self.messages.remove(0))
        }
    }

    fn success(&mut self, _additional_data: Option<&[u8]>) -> Result<(), String> {
        Ok(())
    }
}
