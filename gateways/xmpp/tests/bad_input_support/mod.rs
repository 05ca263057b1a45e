//! What the bad-input suite needs around the gateway: a gateway on an embedded log in a
//! temporary directory, a reader of the `stanzas` topic, and a small raw XMPP client that
//! can send anything and parses what the server answers with the stream parser of
//! `imbus-xmpp-stream` (which reads the server's stream as well as a client's).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use imbus_core::jid::DomainPart;
use imbus_core::{Credentials, Event, GatewayId, StanzaReceived};
use imbus_gateway_xmpp::{
    CertSource, ConnectionLimits, CredentialLookup, Gateway, GatewayConfig, GatewayHandle,
};
use imbus_log::{Log, StartAt, TopicConfig};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions};
use imbus_xmpp_auth::{AuthConfig, MechanismPolicy, ServerSecret};
use imbus_xmpp_c2s::SessionConfig;
use imbus_xmpp_stream::{Element, ParserConfig, StreamEvent, StreamParser, ns};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sasl::client::Mechanism;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const DOMAIN: &str = "example.com";
pub const PASSWORD: &str = "pencil";
pub const USERS: [&str; 3] = ["juliet", "romeo", "nurse"];
const PARTITIONS: i32 = 4;
/// Upper bound for any single wait, so a broken gateway fails the test instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(15);
/// A well-formed client stream header.
pub const HEADER: &str = "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

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

/// How to start the gateway under test.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time a stream has to authenticate and bind (and a TLS handshake to finish).
    pub auth_timeout: Duration,
    /// Offer SASL PLAIN over TLS.
    pub plain: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(30),
            plain: false,
        }
    }
}

/// A gateway on an embedded log in a temporary directory.
#[derive(Debug)]
pub struct Server {
    pub log: Arc<EmbeddedLog>,
    gateway: GatewayHandle,
    pub c2s: SocketAddr,
    pub tls: SocketAddr,
    tls_client: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start(options: Options) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
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
        let mut rng = StdRng::seed_from_u64(7);
        let accounts = USERS
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
        let mut session = SessionConfig::new(DomainPart::new(DOMAIN).unwrap().into_owned(), auth);
        session.auth_timeout = options.auth_timeout;
        session.mechanisms = MechanismPolicy {
            plain: options.plain,
            ..MechanismPolicy::default()
        };
        let tls_dir = dir.path().join("tls");
        let config = GatewayConfig {
            gateway_id: GatewayId::new("gw-bad-input").unwrap(),
            domain: DOMAIN.to_owned(),
            c2s_addr: Some("127.0.0.1:0".parse().unwrap()),
            tls_addr: Some("127.0.0.1:0".parse().unwrap()),
            cert: CertSource::SelfSigned {
                dir: tls_dir.clone(),
            },
            session: Arc::new(session),
            limits: ConnectionLimits {
                connections_per_window: u32::MAX,
                tls_handshake_timeout: options.auth_timeout,
                ..ConnectionLimits::default()
            },
        };
        let gateway = Gateway::start(config, log.clone(), Arc::new(Accounts(accounts)))
            .await
            .unwrap();
        Server {
            c2s: gateway.c2s_addr().unwrap(),
            tls: gateway.tls_addr().unwrap(),
            tls_client: client_config(&tls_dir.join("cert.pem")),
            log,
            gateway,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        self.gateway.shutdown().await;
        self.log.shutdown().await.unwrap();
    }

    /// A TLS client configuration trusting the gateway's certificate.
    pub fn tls_client(&self) -> &Arc<rustls::ClientConfig> {
        &self.tls_client
    }

    /// A raw client on the STARTTLS listener.
    pub async fn plain(&self) -> Client {
        Client::new(Io::Plain(TcpStream::connect(self.c2s).await.unwrap()))
    }

    /// A raw client on the direct TLS listener, TLS established.
    pub async fn direct_tls(&self) -> Client {
        let tcp = TcpStream::connect(self.tls).await.unwrap();
        let mut config = (*self.tls_client).clone();
        config.alpn_protocols = vec![b"xmpp-client".to_vec()];
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
            .await
            .unwrap();
        Client::new(Io::Tls(Box::new(tls)))
    }

    /// A client logged in over STARTTLS with SCRAM-SHA-1 and bound to `resource`.
    pub async fn login(&self, user: &str, resource: &str) -> Client {
        let mut client = self.plain().await;
        let features = client.open().await;
        assert!(features.child("starttls", ns::XMPP_TLS).is_some());
        client.starttls(&self.tls_client).await;
        client.open().await;
        client.scram_sha1(user, PASSWORD).await.unwrap();
        client.open().await;
        let jid = client.bind(resource).await;
        assert_eq!(jid, format!("{user}@{DOMAIN}/{resource}"));
        client
    }

    /// Checks that a well-behaved client still logs in and that what it sends is stored.
    pub async fn assert_serves_a_login(&self, resource: &str) {
        let mut client = self.login("nurse", resource).await;
        let marker = format!("still serving {resource}");
        client
            .send(
                format!(
                    "<message to='juliet@{DOMAIN}' type='chat' id='{resource}'>\
                     <body>{marker}</body></message>"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let stored = self.wait_for_stanza(&marker).await;
        assert_eq!(stored.sender.as_str(), format!("nurse@{DOMAIN}/{resource}"));
        client.send(b"</stream:stream>").await.unwrap();
        client.expect_close().await;
    }

    /// Every `StanzaReceived` on `stanzas`, all partitions, as far as written now.
    pub async fn stanzas(&self) -> Vec<StanzaReceived> {
        let mut found = Vec::new();
        for partition in 0..PARTITIONS {
            let end = self
                .log
                .watermarks("stanzas", partition)
                .await
                .unwrap()
                .high;
            let mut reader = self
                .log
                .reader("stanzas", partition, StartAt::Earliest)
                .await
                .unwrap();
            let mut next = 0;
            while next < end {
                let records = reader.read(100, Duration::from_millis(200)).await.unwrap();
                for record in records {
                    next = record.offset + 1;
                    if let Some(Ok(Event::StanzaReceived(received))) =
                        record.value.as_deref().map(imbus_schemas::decode)
                    {
                        found.push(received);
                    }
                }
            }
        }
        found
    }

    /// Waits until a stanza containing `marker` is on `stanzas`.
    pub async fn wait_for_stanza(&self, marker: &str) -> StanzaReceived {
        let give_up = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(found) = self
                .stanzas()
                .await
                .into_iter()
                .find(|s| s.xml.contains(marker))
            {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "'{marker}' never reached the stanzas topic"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A TLS client configuration trusting the gateway's self-signed certificate.
fn client_config(cert: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A client connection, before or after TLS.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// How a stream ended.
#[derive(Debug, Default)]
pub struct Ended {
    /// The defined condition of the `<stream:error/>`, if one was sent.
    pub condition: Option<String>,
    /// The application-specific condition (`urn:xmpp:errors`), if any.
    pub application: Option<String>,
    /// The server closed its stream (`</stream:stream>`).
    pub stream_closed: bool,
}

impl Ended {
    /// What a transcript of the server's side of a connection shows; `mid_stream` when it
    /// starts inside an open stream (after the server's header).
    pub fn from_transcript(bytes: &[u8], mid_stream: bool) -> Self {
        let mut ended = Ended::default();
        let mut parser = StreamParser::new(ParserConfig::client());
        if mid_stream {
            parser.feed(HEADER.as_bytes()).unwrap();
        }
        let events = parser
            .feed(bytes)
            .unwrap_or_else(|e| panic!("the server sent a malformed stream: {e:?}"));
        for event in events {
            ended.see(event);
        }
        ended
    }

    fn see(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Stanza(element) if element.is("error", ns::STREAMS) => {
                self.condition = element
                    .children()
                    .find(|c| c.namespace() == ns::XMPP_STREAMS && c.name() != "text")
                    .map(|c| c.name().to_owned());
                self.application = element
                    .children()
                    .find(|c| c.namespace() == ns::XMPP_ERRORS)
                    .map(|c| c.name().to_owned());
            }
            StreamEvent::StreamClose => self.stream_closed = true,
            StreamEvent::StreamOpen(_) | StreamEvent::Stanza(_) => {}
        }
    }

    /// The stream error's condition, after checking the stream was closed after it.
    pub fn stream_error(self) -> String {
        assert!(self.stream_closed, "the stream was not closed: {self:?}");
        self.condition.expect("no stream error")
    }
}

/// A raw XMPP client: sends bytes as given, parses the server's stream.
pub struct Client {
    io: Option<Io>,
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    eof: bool,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(io: Io) -> Self {
        Self {
            io: Some(io),
            parser: StreamParser::new(ParserConfig::client()),
            events: VecDeque::new(),
            eof: false,
            buf: vec![0; 16 * 1024],
        }
    }

    fn io(&mut self) -> &mut Io {
        self.io.as_mut().expect("the connection was taken")
    }

    /// The connection, for tests that drive it themselves.
    pub fn into_io(mut self) -> Io {
        self.io.take().expect("the connection was taken")
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let io = self.io();
        io.write_all(bytes).await?;
        io.flush().await
    }

    /// Reads once; `false` at the end of the connection (end of file or reset).
    async fn read_some(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let Some(io) = self.io.as_mut() else {
            return false;
        };
        let read = tokio::time::timeout(PATIENCE, io.read(&mut self.buf))
            .await
            .expect("the server neither answered nor closed the connection in time");
        match read {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                let events = self
                    .parser
                    .feed(&self.buf[..n])
                    .unwrap_or_else(|e| panic!("the server sent a malformed stream: {e:?}"));
                self.events.extend(events);
                true
            }
        }
    }

    /// The next event of the server's stream; `None` when the connection ended first.
    pub async fn next_event(&mut self) -> Option<StreamEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if !self.read_some().await {
                return None;
            }
        }
    }

    /// The next first-level element, skipping the server's stream header.
    pub async fn next_element(&mut self) -> Element {
        loop {
            match self.next_event().await {
                Some(StreamEvent::Stanza(element)) => return element,
                Some(StreamEvent::StreamOpen(_)) => continue,
                Some(StreamEvent::StreamClose) => panic!("the server closed its stream"),
                None => panic!("the connection ended"),
            }
        }
    }

    /// Reads the rest of the stream: what ended it, after checking the connection is
    /// closed (a stream error or stream close followed by the end of the connection).
    pub async fn expect_close(&mut self) -> Ended {
        let mut ended = Ended::default();
        while let Some(event) = self.next_event().await {
            ended.see(event);
        }
        ended
    }

    /// Reads until the server closed the stream and the connection: the condition of its
    /// stream error.
    pub async fn expect_stream_error(&mut self) -> String {
        self.expect_close().await.stream_error()
    }

    /// Opens (or restarts) the stream and returns the features.
    pub async fn open(&mut self) -> Element {
        self.send(HEADER.as_bytes()).await.unwrap();
        let features = self.next_element().await;
        assert!(features.is("features", ns::STREAMS), "{features}");
        features
    }

    /// Negotiates STARTTLS; the stream must then be restarted with [`Self::open`].
    pub async fn starttls(&mut self, config: &Arc<rustls::ClientConfig>) {
        self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await
            .unwrap();
        let proceed = self.next_element().await;
        assert!(proceed.is("proceed", ns::XMPP_TLS), "{proceed}");
        let Some(Io::Plain(tcp)) = self.io.take() else {
            panic!("STARTTLS on an encrypted connection");
        };
        let tls = TlsConnector::from(config.clone())
            .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
            .await
            .unwrap();
        self.io = Some(Io::Tls(Box::new(tls)));
        self.parser.reset();
    }

    /// SCRAM-SHA-1 without channel binding: `Err(condition)` on a SASL failure.
    pub async fn scram_sha1(&mut self, user: &str, password: &str) -> Result<(), String> {
        // A client without channel binding ("n" GS2 flag): one that supports it but skips
        // it while the server offers -PLUS is refused as a downgrade.
        let mut scram = sasl::client::mechanisms::Scram::<sasl::common::scram::Sha1>::new(
            user,
            password.to_owned(),
            sasl::common::ChannelBinding::None,
        )
        .unwrap();
        let initial = BASE64.encode(scram.initial());
        self.send(
            format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>\
                 {initial}</auth>"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        loop {
            let answer = self.next_element().await;
            assert_eq!(answer.namespace(), ns::XMPP_SASL, "{answer}");
            match answer.name() {
                "challenge" => {
                    let challenge = BASE64.decode(answer.text().trim()).unwrap();
                    let response = BASE64.encode(scram.response(&challenge).unwrap());
                    self.send(
                        format!(
                            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{response}\
                             </response>"
                        )
                        .as_bytes(),
                    )
                    .await
                    .unwrap();
                }
                "success" => {
                    let data = BASE64.decode(answer.text().trim()).unwrap();
                    scram.success(&data).unwrap();
                    self.parser.reset();
                    return Ok(());
                }
                "failure" => return Err(sasl_condition(&answer)),
                other => panic!("unexpected SASL answer {other}"),
            }
        }
    }

    /// SASL PLAIN with an authorization identity: `Err(condition)` on a SASL failure.
    pub async fn plain_with_authzid(
        &mut self,
        authzid: &str,
        user: &str,
        password: &str,
    ) -> Result<(), String> {
        let message = BASE64.encode(format!("{authzid}\0{user}\0{password}"));
        self.send(
            format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>\
                 {message}</auth>"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let answer = self.next_element().await;
        match answer.name() {
            "success" => {
                self.parser.reset();
                Ok(())
            }
            "failure" => Err(sasl_condition(&answer)),
            other => panic!("unexpected SASL answer {other}: {answer}"),
        }
    }

    /// Binds `resource` and returns the bound full JID.
    pub async fn bind(&mut self, resource: &str) -> String {
        self.send(
            format!(
                "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                 <resource>{resource}</resource></bind></iq>"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let result = self.next_element().await;
        assert_eq!(result.attr("type"), Some("result"), "{result}");
        result
            .child("bind", ns::XMPP_BIND)
            .and_then(|bind| bind.child("jid", ns::XMPP_BIND))
            .map(Element::text)
            .expect("no bound JID")
    }
}

fn sasl_condition(failure: &Element) -> String {
    failure
        .children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}

/// This process's resident set size in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("no VmRSS in /proc/self/status")
}
