//! Connection limits on real sockets: new connections from one address beyond the rate
//! limit are closed at once, while those within it get a stream.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use imbus_core::jid::DomainPart;
use imbus_core::{Credentials, GatewayId};
use imbus_gateway_xmpp::{CertSource, ConnectionLimits, CredentialLookup, Gateway, GatewayConfig};
use imbus_log::{Log, TopicConfig};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions};
use imbus_xmpp_auth::{AuthConfig, ServerSecret};
use imbus_xmpp_c2s::SessionConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(30);
const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream to='example.com' version='1.0' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

#[derive(Debug)]
struct NoAccounts;

impl CredentialLookup for NoAccounts {
    fn lookup(&self, _bare_jid: &str) -> Option<Credentials> {
        None
    }
}

/// Sends a stream header and reads until the stream features arrive.
async fn features(socket: &mut TcpStream) -> String {
    socket.write_all(HEADER).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("</stream:features>") {
        let n = tokio::time::timeout(PATIENCE, socket.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed before the features: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(seen).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_rate_limit_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        EmbeddedLog::open(dir.path().join("log"), EmbeddedOptions::default())
            .await
            .unwrap(),
    );
    log.create_topic(&TopicConfig::new("stanzas", 2))
        .await
        .unwrap();
    log.create_topic(&TopicConfig::compacted("sessions", 2))
        .await
        .unwrap();
    let auth = AuthConfig::new(
        ServerSecret::new(b"a stable deployment secret".to_vec()).unwrap(),
        4096,
    )
    .unwrap();
    let config = GatewayConfig {
        gateway_id: GatewayId::new("gw-limits").unwrap(),
        domain: "example.com".to_owned(),
        c2s_addr: Some("127.0.0.1:0".parse().unwrap()),
        tls_addr: None,
        cert: CertSource::SelfSigned {
            dir: dir.path().join("tls"),
        },
        session: Arc::new(SessionConfig::new(
            DomainPart::new("example.com").unwrap().into_owned(),
            auth,
        )),
        limits: ConnectionLimits {
            connections_per_window: 2,
            rate_window: Duration::from_secs(3600),
            ..ConnectionLimits::default()
        },
    };
    let gateway = Gateway::start(config, log.clone(), Arc::new(NoAccounts))
        .await
        .unwrap();
    assert!(gateway.tls_addr().is_none());
    let addr = gateway.c2s_addr().unwrap();

    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(
        features(&mut first)
            .await
            .contains("urn:ietf:params:xml:ns:xmpp-tls")
    );
    assert!(
        features(&mut second)
            .await
            .contains("urn:ietf:params:xml:ns:xmpp-tls")
    );

    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(PATIENCE, third.read_to_end(&mut seen))
        .await
        .expect("the connection over the limit was not closed");
    // Closed without a stream: end of file, or a reset if the header was in flight.
    assert!(
        read.is_err() || seen.is_empty(),
        "{}",
        String::from_utf8_lossy(&seen)
    );

    gateway.shutdown().await;
    // On shutdown the open streams end with a system-shutdown stream error.
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, first.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("system-shutdown"));
    log.shutdown().await.unwrap();
}
