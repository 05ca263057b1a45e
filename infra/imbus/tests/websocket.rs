//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` on the HTTP listener of a real
//! `imbus serve`: open, SASL, bind, presence and a message routed back, a wrong password.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Server, add_user};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &Server) -> Ws {
    let mut request = server
        .url("/xmpp-websocket")
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
    let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("xmpp")
    );
    ws
}

/// The next text frame containing `needle` (frames before it are skipped).
async fn expect(ws: &mut Ws, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no frame with {needle:?} within 15 s"))
            .unwrap_or_else(|| panic!("connection closed waiting for {needle:?}"))
            .unwrap();
        if let Message::Text(text) = frame
            && text.contains(needle)
        {
            return text.to_string();
        }
    }
}

async fn send(ws: &mut Ws, xml: &str) {
    ws.send(Message::Text(xml.into())).await.unwrap();
}

const OPEN: &str =
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>";

/// A SCRAM-SHA-256 exchange (the `sasl` crate's client); returns the server's final
/// element (`<success/>` or `<failure/>`).
async fn scram_login(ws: &mut Ws, user: &str, password: &str) -> String {
    use base64::Engine;
    use sasl::client::Mechanism as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut client = sasl::client::mechanisms::Scram::<sasl::common::scram::Sha256>::new(
        user,
        password.to_owned(),
        sasl::common::ChannelBinding::None,
    )
    .unwrap();
    send(
        ws,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            b64.encode(client.initial())
        ),
    )
    .await;
    let challenge = expect(ws, "<challenge").await;
    let data = challenge
        .split_once('>')
        .and_then(|(_, rest)| rest.split_once('<'))
        .map(|(payload, _)| b64.decode(payload).unwrap())
        .unwrap();
    let response = client.response(&data).unwrap();
    send(
        ws,
        &format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            b64.encode(response)
        ),
    )
    .await;
    loop {
        let frame = expect(ws, "urn:ietf:params:xml:ns:xmpp-sasl").await;
        if frame.starts_with("<success") || frame.starts_with("<failure") {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_logs_in_binds_and_gets_a_message_routed_back() {
    let dir = tempfile::tempdir().unwrap();
    // The WebSocket is reached through a TLS-terminating proxy in production; the test
    // says so instead of running one.
    let server = Server::start_with(
        dir.path(),
        &[("IMBUS_C2S_WEBSOCKET_TLS_PROXY", "true".to_owned())],
    );
    add_user(dir.path(), "alice@localhost", "Alice-Pw-1");

    // A wrong password fails with not-authorized.
    let mut ws = connect(&server).await;
    send(&mut ws, OPEN).await;
    expect(&mut ws, "<mechanisms").await;
    let failure = scram_login(&mut ws, "alice", "wrong").await;
    assert!(failure.contains("not-authorized"), "{failure}");
    drop(ws);

    let mut ws = connect(&server).await;
    send(&mut ws, OPEN).await;
    expect(&mut ws, "<mechanisms").await;
    let success = scram_login(&mut ws, "alice", "Alice-Pw-1").await;
    assert!(success.starts_with("<success"), "{success}");
    send(&mut ws, OPEN).await;
    expect(&mut ws, "urn:ietf:params:xml:ns:xmpp-bind").await;
    send(&mut ws, "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>").await;
    let bound = expect(&mut ws, "id='b1'").await;
    assert!(bound.contains("alice@localhost/web"), "{bound}");
    send(&mut ws, "<presence xmlns='jabber:client'/>").await;
    expect(&mut ws, "<presence").await;
    send(&mut ws, "<message xmlns='jabber:client' to='alice@localhost' type='chat' id='m1'><body>note to self</body></message>").await;
    let got = expect(&mut ws, "note to self").await;
    assert!(got.contains("from='alice@localhost/web'"), "{got}");
    send(
        &mut ws,
        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
    )
    .await;
    expect(&mut ws, "<close").await;
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencrypted_websocket_is_refused_when_tls_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut ws = connect(&server).await;
    send(&mut ws, OPEN).await;
    let error = expect(&mut ws, "policy-violation").await;
    assert!(
        error.contains("stream:error") || error.contains("<error"),
        "{error}"
    );
    assert!(server.terminate().success());
}
