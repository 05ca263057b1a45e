//! The gateway on real sockets and the embedded log, driven by a real XMPP client library
//! (`tokio-xmpp` of the xmpp-rs project): STARTTLS + SCRAM login, a sent message on
//! `stanzas` with the stamped sender, a delivery written to the client, a wrong password
//! refused, an idle unauthenticated stream timed out, and the session changelog.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use imbus_core::jid::DomainPart;
use imbus_core::{
    CloseReason, Credentials, Delivery, Event, GatewayId, SessionEvent, StanzaKind, Uuid,
};
use imbus_gateway_xmpp::{CertSource, ConnectionLimits, CredentialLookup, Gateway, GatewayConfig};
use imbus_log::{
    ConsumedRecord, Log, Record, StartAt, TopicConfig, TopicPartition, partition_for_key,
};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions};
use imbus_xmpp_auth::{AuthConfig, ServerSecret};
use imbus_xmpp_c2s::SessionConfig;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_xmpp::connect::{DnsConfig, ServerConnector, StartTlsServerConnector};
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Stanza};

const DOMAIN: &str = "example.com";
const PASSWORD: &str = "pencil";
const PARTITIONS: i32 = 4;
/// Upper bound for any single wait, so a broken gateway fails the test instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Accounts {
    juliet: Credentials,
}

impl CredentialLookup for Accounts {
    fn lookup(&self, bare_jid: &str) -> Option<Credentials> {
        (bare_jid == "juliet@example.com").then(|| self.juliet.clone())
    }
}

fn session_config(auth_timeout: Duration) -> Arc<SessionConfig> {
    let auth = AuthConfig::new(
        ServerSecret::new(b"a stable deployment secret".to_vec()).unwrap(),
        4096,
    )
    .unwrap();
    let mut config = SessionConfig::new(DomainPart::new(DOMAIN).unwrap().into_owned(), auth);
    config.auth_timeout = auth_timeout;
    Arc::new(config)
}

fn gateway_config(id: &str, tls_dir: &Path, auth_timeout: Duration) -> GatewayConfig {
    GatewayConfig {
        gateway_id: GatewayId::new(id).unwrap(),
        domain: DOMAIN.to_owned(),
        c2s_addr: Some("127.0.0.1:0".parse().unwrap()),
        tls_addr: Some("127.0.0.1:0".parse().unwrap()),
        cert: CertSource::SelfSigned {
            dir: tls_dir.to_path_buf(),
        },
        session: session_config(auth_timeout),
        limits: ConnectionLimits::default(),
    }
}

async fn records(
    log: &EmbeddedLog,
    topic: &str,
    key: &str,
    at_least: usize,
) -> Vec<ConsumedRecord> {
    let partition = partition_for_key(key.as_bytes(), PARTITIONS);
    let mut reader = log
        .reader(topic, partition, StartAt::Earliest)
        .await
        .unwrap();
    let mut found = Vec::new();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while found.len() < at_least && tokio::time::Instant::now() < give_up {
        found.extend(reader.read(100, Duration::from_millis(500)).await.unwrap());
    }
    found
}

async fn next_event(client: &mut Client) -> tokio_xmpp::Event {
    tokio::time::timeout(PATIENCE, client.next())
        .await
        .expect("the client got no event in time")
        .expect("the client stream ended")
}

#[test]
fn clients_log_in_publish_receive_and_are_refused_or_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    // The client library trusts the certificates of SSL_CERT_FILE (rustls-native-certs):
    // point it at the self-signed certificate the gateway generates on start.
    // SAFETY: this is the only test of this binary and no other thread runs yet.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SSL_CERT_FILE", tls_dir.join("cert.pem"));
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(scenario(dir.path(), &tls_dir));
}

async fn scenario(dir: &Path, tls_dir: &Path) {
    let log = Arc::new(
        EmbeddedLog::open(dir.join("log"), EmbeddedOptions::default())
            .await
            .unwrap(),
    );
    log.create_topic(&TopicConfig::new("stanzas", PARTITIONS))
        .await
        .unwrap();
    log.create_topic(&TopicConfig::compacted("sessions", PARTITIONS))
        .await
        .unwrap();
    let accounts = Arc::new(Accounts {
        juliet: imbus_xmpp_auth::derive(PASSWORD, 4096, &mut StdRng::seed_from_u64(7)).unwrap(),
    });
    let gateway = Gateway::start(
        gateway_config("gw1", tls_dir, Duration::from_secs(30)),
        log.clone(),
        accounts.clone(),
    )
    .await
    .unwrap();
    assert!(tls_dir.join("cert.pem").exists() && tls_dir.join("key.pem").exists());
    let c2s = gateway.c2s_addr().unwrap();

    // Log in over STARTTLS with SCRAM.
    let mut juliet = Client::new_starttls(
        tokio_xmpp::jid::Jid::new("juliet@example.com/balcony").unwrap(),
        PASSWORD,
        DnsConfig::addr(&c2s.to_string()),
        Timeouts::tight(),
    );
    let bound = match next_event(&mut juliet).await {
        tokio_xmpp::Event::Online { bound_jid, .. } => bound_jid,
        other => panic!("expected to be online, got {other:?}"),
    };
    assert_eq!(bound.to_string(), "juliet@example.com/balcony");

    // The bound session is on `sessions`, keyed by the full JID in the user's partition.
    let sessions = records(&log, "sessions", "juliet@example.com", 1).await;
    let first = sessions.first().expect("no session event");
    assert_eq!(
        first.key.as_deref(),
        Some(&b"juliet@example.com/balcony"[..])
    );
    match imbus_schemas::decode(first.value.as_ref().unwrap()).unwrap() {
        Event::Session(SessionEvent::Bound(state)) => {
            assert_eq!(state.jid.as_str(), "juliet@example.com/balcony");
            assert_eq!(state.gateway_id.as_str(), "gw1");
        }
        other => panic!("unexpected {other:?}"),
    }

    // A sent message is on `stanzas`, keyed by its sender (outbound processing runs on
    // the sender's partition), with the stamped sender.
    let message = Message::chat(Some(
        tokio_xmpp::jid::Jid::new("romeo@example.com").unwrap(),
    ))
    .with_body(Lang(String::new()), "Wherefore art thou?".to_owned());
    juliet.send_stanza(message.into()).await.unwrap();
    let stanzas = records(&log, "stanzas", "juliet@example.com", 1).await;
    let record = stanzas.first().expect("the message never reached the log");
    assert_eq!(record.key.as_deref(), Some(&b"juliet@example.com"[..]));
    let received = match imbus_schemas::decode(record.value.as_ref().unwrap()).unwrap() {
        Event::StanzaReceived(received) => received,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(received.sender.as_str(), "juliet@example.com/balcony");
    assert_eq!(received.kind, StanzaKind::Message);
    assert_eq!(received.stanza_type.as_deref(), Some("chat"));
    assert!(
        received.xml.contains("from=\"juliet@example.com/balcony\"")
            || received.xml.contains("from='juliet@example.com/balcony'")
    );
    assert!(received.xml.contains("Wherefore art thou?"));

    // A delivery on `deliver.gw1` reaches the client.
    let delivery = Delivery {
        event_id: Uuid::now_v7(),
        source_event_id: received.event_id,
        to: received.sender.clone(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: received.session_id.clone(),
        xml: "<message xmlns='jabber:client' from='romeo@example.com/orchard' \
              to='juliet@example.com/balcony' type='chat'><body>Here, love</body></message>"
            .to_owned(),
        delayed_from: None,
        copies: Vec::new(),
    };
    log.append(
        "deliver.gw1",
        Record::new(
            "juliet@example.com/balcony",
            imbus_schemas::encode(&Event::from(delivery)).unwrap(),
        ),
    )
    .await
    .unwrap();
    let body = loop {
        match next_event(&mut juliet).await {
            tokio_xmpp::Event::Stanza(Stanza::Message(message)) => {
                break message.get_best_body_cloned(vec![]).map(|(_, body)| body);
            }
            tokio_xmpp::Event::Stanza(_) => continue,
            other => panic!("expected the delivered message, got {other:?}"),
        }
    };
    assert_eq!(body.as_deref(), Some("Here, love"));
    // The delivery's offset is committed for the gateway's group once handed over.
    let tp = TopicPartition::new(
        "deliver.gw1",
        partition_for_key(b"juliet@example.com/balcony", PARTITIONS),
    );
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while log.committed("gateway.gw1", &tp).await.unwrap() != Some(1) {
        assert!(
            tokio::time::Instant::now() < give_up,
            "delivery offset never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Direct TLS (XEP-0368) works too, as a second resource of the same account.
    let mut garden = Client::new_direct_tls_with_config(
        tokio_xmpp::jid::Jid::new("juliet@example.com/garden").unwrap(),
        PASSWORD,
        DnsConfig::addr(&gateway.tls_addr().unwrap().to_string()),
        Timeouts::tight(),
    );
    match next_event(&mut garden).await {
        tokio_xmpp::Event::Online { bound_jid, .. } => {
            assert_eq!(bound_jid.to_string(), "juliet@example.com/garden");
        }
        other => panic!("expected to be online over direct TLS, got {other:?}"),
    }
    garden.send_end().await.unwrap();

    // A wrong password is refused (the library's login step, without its reconnect loop).
    let connector = StartTlsServerConnector::from(DnsConfig::addr(&c2s.to_string()));
    let intruder = tokio_xmpp::jid::Jid::new("juliet@example.com/window").unwrap();
    let (pending, binding) = connector
        .connect(&intruder, "jabber:client", Timeouts::tight())
        .await
        .unwrap();
    let (features, stream) = pending
        .recv_features::<tokio_xmpp::xmlstream::FallibleStreamElement>()
        .await
        .unwrap();
    let credentials = sasl::common::Credentials::default()
        .with_username("juliet")
        .with_password("not the password")
        .with_channel_binding(binding);
    let refused = tokio::time::timeout(
        PATIENCE,
        tokio_xmpp::client_login(stream, features.sasl_mechanisms, credentials),
    )
    .await
    .unwrap();
    assert!(
        matches!(refused, Err(tokio_xmpp::Error::Auth(_))),
        "{:?}",
        refused.err()
    );

    // A second gateway with a short authentication timeout ends an idle stream.
    let impatient = Gateway::start(
        gateway_config("gw2", tls_dir, Duration::from_millis(500)),
        log.clone(),
        accounts.clone(),
    )
    .await
    .unwrap();
    let mut idle = tokio::net::TcpStream::connect(impatient.c2s_addr().unwrap())
        .await
        .unwrap();
    idle.write_all(
        b"<?xml version='1.0'?><stream:stream to='example.com' version='1.0' \
          xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, idle.read_to_end(&mut seen))
        .await
        .expect("the idle stream was not closed")
        .unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("connection-timeout"), "{seen}");
    impatient.shutdown().await;

    // The client leaves; its session's end is recorded.
    juliet.send_end().await.unwrap();
    let sessions = records(&log, "sessions", "juliet@example.com", 4).await;
    let closed = sessions
        .iter()
        .filter_map(|r| match imbus_schemas::decode(r.value.as_ref()?).ok()? {
            Event::Session(SessionEvent::Closed(closed)) => Some(closed),
            _ => None,
        })
        .find(|closed| closed.jid.as_str() == "juliet@example.com/balcony")
        .expect("no closed session event");
    assert_eq!(closed.jid.as_str(), "juliet@example.com/balcony");
    assert_eq!(closed.reason, CloseReason::ClientClosed);

    gateway.shutdown().await;
    log.shutdown().await.unwrap();
}
