//! Logging in to a real `imbus serve` with an XMPP client library (`tokio-xmpp`): a user
//! created with `imbus user add` logs in over STARTTLS (c2s_port) and over direct TLS
//! (c2s_tls_port) against the self-signed certificate generated on first start, and a
//! wrong password is refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Server, add_user, listener};
use futures::StreamExt;
use tokio_xmpp::connect::{DnsConfig, ServerConnector, StartTlsServerConnector};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event};

const PASSWORD: &str = "Juliet-Pw-1";
const PATIENCE: Duration = Duration::from_secs(20);

async fn online(client: &mut Client) -> String {
    loop {
        let event = tokio::time::timeout(PATIENCE, client.next())
            .await
            .expect("the client got no event in time")
            .expect("the client stream ended");
        match event {
            Event::Online { bound_jid, .. } => return bound_jid.to_string(),
            Event::Disconnected(e) => panic!("disconnected before being online: {e}"),
            Event::Stanza(_) => continue,
        }
    }
}

#[test]
fn a_user_logs_in_over_starttls_and_direct_tls_and_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // The client library trusts the certificates of SSL_CERT_FILE: point it at the
    // self-signed certificate `imbus serve` generated in its data directory.
    let cert = dir.path().join("tls").join("cert.pem");
    assert!(cert.exists(), "no self-signed certificate in data_dir/tls");
    // SAFETY: this is the only test of this binary and no other thread runs yet.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &cert);
    }
    add_user(dir.path(), "juliet@localhost", PASSWORD);
    let c2s = listener(dir.path(), "c2s");
    let direct = listener(dir.path(), "c2s_tls");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut balcony = Client::new_starttls(
            tokio_xmpp::jid::Jid::new("juliet@localhost/balcony").unwrap(),
            PASSWORD,
            DnsConfig::addr(&c2s.to_string()),
            Timeouts::tight(),
        );
        assert_eq!(online(&mut balcony).await, "juliet@localhost/balcony");

        let mut garden = Client::new_direct_tls_with_config(
            tokio_xmpp::jid::Jid::new("juliet@localhost/garden").unwrap(),
            PASSWORD,
            DnsConfig::addr(&direct.to_string()),
            Timeouts::tight(),
        );
        assert_eq!(online(&mut garden).await, "juliet@localhost/garden");

        // A wrong password: the library's login step, without its reconnect loop.
        let connector = StartTlsServerConnector::from(DnsConfig::addr(&c2s.to_string()));
        let intruder = tokio_xmpp::jid::Jid::new("juliet@localhost/window").unwrap();
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

        balcony.send_end().await.unwrap();
        garden.send_end().await.unwrap();
    });
    assert!(server.terminate().success());
}
