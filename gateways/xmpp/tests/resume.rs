//! Stream Management resumption (XEP-0198) across connections, and login throttling, on
//! real sockets and the embedded log: a client whose TCP connection drops resumes its
//! session from a new connection with `previd` and gets every stanza it had not
//! acknowledged (including one delivered while it was away); another user cannot take
//! the session over; failed logins make the next attempt fail with
//! `temporary-auth-failure`; a burst of stanzas is stored in order (batched behind the
//! append in progress) and acknowledged in full.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod bad_input_support;

use std::sync::Arc;
use std::time::Duration;

use bad_input_support::{Client, Io};
use imbus_core::jid::{DomainPart, FullJid};
use imbus_core::{
    CloseReason, Credentials, Delivery, Event, GatewayId, SessionEvent, SessionId, Uuid,
};
use imbus_gateway_xmpp::{
    CertSource, ConnectionLimits, CredentialLookup, Gateway, GatewayConfig, GatewayHandle,
    ThrottleConfig,
};
use imbus_log::{Log, Record, StartAt, TopicConfig};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions};
use imbus_xmpp_auth::{AuthConfig, ServerSecret};
use imbus_xmpp_c2s::SessionConfig;
use imbus_xmpp_stream::{Element, ns};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;

const DOMAIN: &str = "example.com";
const PASSWORD: &str = "pencil";
const PARTITIONS: i32 = 4;
const GATEWAY: &str = "gw-resume";
const PATIENCE: Duration = Duration::from_secs(15);
const SM: &str = "urn:xmpp:sm:3";

#[derive(Debug)]
struct Accounts(Vec<(String, Credentials)>);

impl CredentialLookup for Accounts {
    fn lookup(&self, bare_jid: &str) -> Option<Credentials> {
        self.0
            .iter()
            .find(|(jid, _)| jid == bare_jid)
            .map(|(_, c)| c.clone())
    }
}

struct Setup {
    log: Arc<EmbeddedLog>,
    gateway: GatewayHandle,
    tls: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// A gateway whose login throttle delays an account for an hour after one failure.
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(
            EmbeddedLog::open(dir.path().join("log"), EmbeddedOptions::default())
                .await
                .unwrap(),
        );
        log.create_topic(&TopicConfig::new("stanzas", PARTITIONS))
            .await
            .unwrap();
        log.create_topic(&TopicConfig::compacted("sessions", PARTITIONS))
            .await
            .unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let accounts = ["juliet", "romeo", "nurse"]
            .iter()
            .map(|user| {
                let credentials = imbus_xmpp_auth::derive(PASSWORD, 4096, &mut rng).unwrap();
                (format!("{user}@{DOMAIN}"), credentials)
            })
            .collect();
        let auth = AuthConfig::new(
            ServerSecret::new(b"a stable deployment secret".to_vec()).unwrap(),
            4096,
        )
        .unwrap();
        let session = SessionConfig::new(DomainPart::new(DOMAIN).unwrap().into_owned(), auth);
        let tls_dir = dir.path().join("tls");
        let config = GatewayConfig {
            gateway_id: GatewayId::new(GATEWAY).unwrap(),
            domain: DOMAIN.to_owned(),
            c2s_addr: Some("127.0.0.1:0".parse().unwrap()),
            tls_addr: None,
            cert: CertSource::SelfSigned {
                dir: tls_dir.clone(),
            },
            session: Arc::new(session),
            limits: ConnectionLimits {
                login: ThrottleConfig {
                    free_failures: 1,
                    base_delay: Duration::from_secs(3600),
                    max_delay: Duration::from_secs(3600),
                    ..ThrottleConfig::default()
                },
                ..ConnectionLimits::default()
            },
        };
        let gateway = Gateway::start(config, log.clone(), Arc::new(Accounts(accounts)))
            .await
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(tls_dir.join("cert.pem")).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        Setup {
            log,
            gateway,
            tls,
            _dir: dir,
        }
    }

    /// A client past STARTTLS, at the SASL step.
    async fn connect(&self) -> Client {
        let tcp = TcpStream::connect(self.gateway.c2s_addr().unwrap())
            .await
            .unwrap();
        let mut client = Client::new(Io::Plain(tcp));
        client.open().await;
        client.starttls(&self.tls).await;
        client.open().await;
        client
    }

    /// A client authenticated as `user`, the stream restarted (ready to bind or resume).
    async fn authenticated(&self, user: &str) -> Client {
        let mut client = self.connect().await;
        client.scram_sha1(user, PASSWORD).await.unwrap();
        client.open().await;
        client
    }

    /// Puts a message for `to` on this gateway's delivery topic.
    async fn deliver(&self, to: &str, body: &str) {
        let delivery = Delivery {
            event_id: Uuid::now_v7(),
            source_event_id: Uuid::now_v7(),
            to: FullJid::new(to).unwrap(),
            gateway_id: GatewayId::new(GATEWAY).unwrap(),
            session_id: SessionId::new("test").unwrap(),
            xml: format!(
                "<message xmlns='jabber:client' from='romeo@{DOMAIN}/orchard' to='{to}' \
                 type='chat'><body>{body}</body></message>"
            ),
            delayed_from: None,
            copies: Vec::new(),
        };
        self.log
            .append(
                &format!("deliver.{GATEWAY}"),
                Record::new(
                    to.to_owned(),
                    imbus_schemas::encode(&Event::from(delivery)).unwrap(),
                ),
            )
            .await
            .unwrap();
    }

    /// Every event on `topic` so far, partition by partition, each in log order.
    async fn events(&self, topic: &str) -> Vec<Event> {
        let mut found = Vec::new();
        for partition in 0..PARTITIONS {
            let end = self.log.watermarks(topic, partition).await.unwrap().high;
            let mut reader = self
                .log
                .reader(topic, partition, StartAt::Earliest)
                .await
                .unwrap();
            while reader.position() < end {
                for record in reader.read(100, Duration::from_millis(200)).await.unwrap() {
                    if let Some(Ok(event)) = record.value.as_deref().map(imbus_schemas::decode) {
                        found.push(event);
                    }
                }
            }
        }
        found
    }

    /// Every session event recorded so far.
    async fn sessions(&self) -> Vec<SessionEvent> {
        self.events("sessions")
            .await
            .into_iter()
            .filter_map(|event| match event {
                Event::Session(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    async fn stop(self) {
        self.gateway.shutdown().await;
        self.log.shutdown().await.unwrap();
    }
}

/// The next element that is not a Stream Management request.
async fn next(client: &mut Client) -> Element {
    loop {
        let element = client.next_element().await;
        if !element.is("r", SM) {
            return element;
        }
    }
}

fn body(message: &Element) -> String {
    assert!(message.is("message", ns::JABBER_CLIENT), "{message}");
    message
        .child("body", ns::JABBER_CLIENT)
        .map(Element::text)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_session_is_resumed_with_its_unacknowledged_stanzas() {
    let setup = Setup::start().await;
    let jid = format!("juliet@{DOMAIN}/balcony");

    // Log in, enable resumable Stream Management, send one stanza and see it counted.
    let mut first = setup.authenticated("juliet").await;
    assert_eq!(first.bind("balcony").await, jid);
    first
        .send(format!("<enable xmlns='{SM}' resume='true'/>").as_bytes())
        .await
        .unwrap();
    let enabled = next(&mut first).await;
    assert!(enabled.is("enabled", SM), "{enabled}");
    assert_eq!(enabled.attr("resume"), Some("true"));
    let previd = enabled.attr("id").unwrap().to_owned();
    first
        .send(
            format!(
                "<message to='romeo@{DOMAIN}' type='chat'><body>hi</body></message><r xmlns='{SM}'/>"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let ack = next(&mut first).await;
    assert!(ack.is("a", SM), "{ack}");
    assert_eq!(ack.attr("h"), Some("1"));

    // A delivery reaches the client, which does not acknowledge it; then the TCP
    // connection drops, and a second message is delivered while the client is away.
    setup.deliver(&jid, "first").await;
    assert_eq!(body(&next(&mut first).await), "first");
    drop(first);
    setup.deliver(&jid, "second").await;

    // Another user cannot resume the session.
    let mut intruder = setup.authenticated("romeo").await;
    intruder
        .send(format!("<resume xmlns='{SM}' previd='{previd}' h='0'/>").as_bytes())
        .await
        .unwrap();
    let failed = next(&mut intruder).await;
    assert!(failed.is("failed", SM), "{failed}");
    drop(intruder);

    // The owner resumes from a new connection (once the gateway noticed the drop).
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let (mut second, resumed) = loop {
        let mut client = setup.authenticated("juliet").await;
        client
            .send(format!("<resume xmlns='{SM}' previd='{previd}' h='0'/>").as_bytes())
            .await
            .unwrap();
        let answer = next(&mut client).await;
        if answer.is("resumed", SM) {
            break (client, answer);
        }
        assert!(answer.is("failed", SM), "{answer}");
        assert!(
            tokio::time::Instant::now() < give_up,
            "the session never became resumable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(resumed.attr("previd"), Some(previd.as_str()));
    assert_eq!(
        resumed.attr("h"),
        Some("1"),
        "the stored stanza counts as handled"
    );
    assert_eq!(body(&next(&mut second).await), "first");
    assert_eq!(body(&next(&mut second).await), "second");

    // Deliveries now go to the new connection.
    setup.deliver(&jid, "third").await;
    assert_eq!(body(&next(&mut second).await), "third");
    second
        .send(format!("<a xmlns='{SM}' h='3'/></stream:stream>").as_bytes())
        .await
        .unwrap();
    second.expect_close().await;

    // The session was bound once and closed once, by the client, under one session id.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let events = loop {
        let events: Vec<SessionEvent> = setup
            .sessions()
            .await
            .into_iter()
            .filter(|e| e.jid().as_str() == jid)
            .collect();
        if events.iter().any(|e| matches!(e, SessionEvent::Closed(_))) {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "the session's end was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let [SessionEvent::Bound(bound), SessionEvent::Closed(closed)] = events.as_slice() else {
        panic!("expected one bound and one closed event: {events:?}");
    };
    assert_eq!(bound.session_id, closed.session_id);
    assert_eq!(closed.reason, CloseReason::ClientClosed);

    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_make_the_next_attempts_wait() {
    let setup = Setup::start().await;

    // One wrong password is free; it puts the account on hold.
    let mut client = setup.connect().await;
    assert_eq!(
        client.scram_sha1("nurse", "not the password").await,
        Err("not-authorized".to_owned())
    );
    // Even the right password is now refused for a while, as a temporary failure.
    assert_eq!(
        client.scram_sha1("nurse", PASSWORD).await,
        Err("temporary-auth-failure".to_owned())
    );
    drop(client);
    let mut client = setup.connect().await;
    assert_eq!(
        client.scram_sha1("nurse", PASSWORD).await,
        Err("temporary-auth-failure".to_owned())
    );

    // Other accounts from the same address are not affected.
    let mut other = setup.connect().await;
    other.scram_sha1("juliet", PASSWORD).await.unwrap();

    setup.stop().await;
}

/// A burst of stanzas in one write (more than one group commit can store before the next
/// arrives): the connection stores the ones that wait behind an append as one batch, in
/// the client's order, and Stream Management counts every one of them once it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_stored_in_order_and_acknowledged_in_full() {
    const BURST: usize = 300;
    let setup = Setup::start().await;
    let mut client = setup.authenticated("juliet").await;
    client.bind("balcony").await;
    client
        .send(format!("<enable xmlns='{SM}'/>").as_bytes())
        .await
        .unwrap();
    let enabled = next(&mut client).await;
    assert!(enabled.is("enabled", SM), "{enabled}");
    let mut burst = String::new();
    for i in 0..BURST {
        burst.push_str(&format!(
            "<message to='romeo@{DOMAIN}' type='chat'><body>burst {i}</body></message>"
        ));
    }
    burst.push_str(&format!("<r xmlns='{SM}'/>"));
    client.send(burst.as_bytes()).await.unwrap();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let ack = next(&mut client).await;
        assert!(ack.is("a", SM), "{ack}");
        let h: usize = ack.attr("h").unwrap().parse().unwrap();
        assert!(h <= BURST, "{ack}");
        if h == BURST {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "acknowledged {h} of {BURST}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        client
            .send(format!("<r xmlns='{SM}'/>").as_bytes())
            .await
            .unwrap();
    }

    // On the log: every stanza once, in the order sent (one account: one partition).
    let bodies: Vec<String> = setup
        .events("stanzas")
        .await
        .into_iter()
        .filter_map(|event| match event {
            Event::StanzaReceived(stanza) => imbus_xmpp_stream::parser::parse_stanza(&stanza.xml),
            _ => None,
        })
        .filter(|element| element.is("message", ns::JABBER_CLIENT))
        .map(|element| body(&element))
        .collect();
    let expected: Vec<String> = (0..BURST).map(|i| format!("burst {i}")).collect();
    assert_eq!(bodies, expected);
    drop(client);
    setup.stop().await;
}
