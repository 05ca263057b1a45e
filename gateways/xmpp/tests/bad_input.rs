//! Hostile and broken input on real sockets, against a gateway on the embedded log.
//!
//! Each case checks the exact error the gateway answers with (a stream error, a SASL
//! failure, or what is stored on `stanzas`), that the connection is closed where the error
//! ends the stream, and that a well-behaved client on another connection still logs in and
//! has its message stored afterwards.
//!
//! `BAD_INPUT_HALF_OPEN` sets the number of half-open connections of
//! `half_open_connections_are_held_cheaply_and_timed_out` (default 10000); the test raises
//! its own open-file limit to fit them (both ends live in this process).

#![allow(clippy::unwrap_used)]

mod bad_input_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bad_input_support::{DOMAIN, Ended, HEADER, Options, PASSWORD, PATIENCE, Server, rss_kib};
use futures::StreamExt;
use imbus_xmpp_stream::ns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A document type declaration with nested entities (the "billion laughs"): expanded,
/// it would be 3·10⁹ bytes.
const BILLION_LAUGHS: &str = "<?xml version='1.0'?>\
    <!DOCTYPE lolz [\
    <!ENTITY lol 'lol'>\
    <!ENTITY lol1 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>\
    <!ENTITY lol2 '&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;'>\
    <!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>\
    <!ENTITY lol4 '&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;'>\
    <!ENTITY lol5 '&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;'>\
    <!ENTITY lol6 '&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;'>\
    <!ENTITY lol7 '&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;'>\
    <!ENTITY lol8 '&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;'>\
    <!ENTITY lol9 '&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;'>\
    ]>";

/// Opens a plain stream, sends `bytes` and returns the stream error that ended it.
async fn stream_error_after(server: &Server, header: bool, bytes: &[u8]) -> String {
    let mut client = server.plain().await;
    if header {
        client.open().await;
    }
    client.send(bytes).await.unwrap();
    client.expect_stream_error().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billion_laughs_and_entity_references_are_restricted_xml() {
    let server = Server::start(Options::default()).await;
    // In the prolog, where a DTD would have to be.
    let laughs = format!(
        "{BILLION_LAUGHS}{}",
        &HEADER[HEADER.find("<stream").unwrap()..]
    );
    assert_eq!(
        stream_error_after(&server, false, laughs.as_bytes()).await,
        "restricted-xml"
    );
    // Inside an open stream, and then using the entity.
    let inside = format!(
        "{}<message to='romeo@{DOMAIN}'><body>&lol9;</body></message>",
        &BILLION_LAUGHS[BILLION_LAUGHS.find("<!DOCTYPE").unwrap()..]
    );
    assert_eq!(
        stream_error_after(&server, true, inside.as_bytes()).await,
        "restricted-xml"
    );
    // An undeclared entity in character data.
    assert_eq!(
        stream_error_after(
            &server,
            true,
            format!("<message to='romeo@{DOMAIN}'><body>&lol9;</body></message>").as_bytes()
        )
        .await,
        "restricted-xml"
    );
    // An entity reference in an attribute value, before and after authentication.
    assert_eq!(
        stream_error_after(&server, true, b"<message to='&xxe;'/>").await,
        "restricted-xml"
    );
    let mut juliet = server.login("juliet", "balcony").await;
    juliet
        .send(
            format!("<message to='romeo@{DOMAIN}' id='&xxe;'><body>x</body></message>").as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(juliet.expect_stream_error().await, "restricted-xml");
    // The five predefined entities and character references are fine.
    let mut juliet = server.login("juliet", "balcony").await;
    juliet
        .send(
            format!(
                "<message to='romeo@{DOMAIN}' id='a&amp;b&#x41;'>\
                 <body>&lt;predefined&gt; &quot;&apos;&#65;</body></message>"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let stored = server.wait_for_stanza("predefined").await;
    assert_eq!(stored.stanza_id.as_deref(), Some("a&bA"));
    server.assert_serves_a_login("after-laughs").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_stanza_is_cut_off_early() {
    const TOTAL: usize = 10 * 1024 * 1024;
    const CHUNK: usize = 16 * 1024;
    let server = Server::start(Options::default()).await;
    // An authenticated user on TLS sends one message of 10 MB, 16 KiB at a time.
    let client = server.login("juliet", "balcony").await;
    let (mut reader, mut writer) = tokio::io::split(client.into_io());
    let closed = Arc::new(AtomicBool::new(false));
    let transcript = tokio::spawn({
        let closed = closed.clone();
        async move {
            let mut seen = Vec::new();
            let _ = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut seen)).await;
            closed.store(true, Ordering::SeqCst);
            seen
        }
    });
    let mut sent = 0;
    let start = format!("<message to='romeo@{DOMAIN}' type='chat'><body>");
    if writer.write_all(start.as_bytes()).await.is_ok() {
        sent += start.len();
    }
    let chunk = vec![b'a'; CHUNK];
    while sent < TOTAL && !closed.load(Ordering::SeqCst) {
        if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
            break;
        }
        sent += CHUNK;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ended = Ended::from_transcript(&transcript.await.unwrap(), true);
    println!("the 10 MB stanza was cut off after {sent} bytes were sent");
    assert!(
        closed.load(Ordering::SeqCst),
        "the connection was not closed"
    );
    assert!(sent < TOTAL, "all {sent} bytes were accepted");
    assert_eq!(ended.condition.as_deref(), Some("policy-violation"));
    assert_eq!(ended.application.as_deref(), Some("stanza-too-big"));
    assert!(ended.stream_closed);
    assert!(server.stanzas().await.iter().all(|s| s.xml.len() < CHUNK));
    server.assert_serves_a_login("after-big").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_namespaces_encodings_and_processing_instructions_end_the_stream() {
    let server = Server::start(Options::default()).await;
    // Garbage (an HTTP request) before the stream header.
    let garbage = format!("GET / HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n{HEADER}");
    assert_eq!(
        stream_error_after(&server, false, garbage.as_bytes()).await,
        "not-well-formed"
    );
    // An unknown stream namespace, and a server-to-server content namespace.
    let wrong_stream = "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' \
        xmlns='jabber:client' xmlns:stream='http://example.com/not-streams'>";
    assert_eq!(
        stream_error_after(&server, false, wrong_stream.as_bytes()).await,
        "invalid-namespace"
    );
    let server_ns = HEADER.replace("jabber:client", "jabber:server");
    assert_eq!(
        stream_error_after(&server, false, server_ns.as_bytes()).await,
        "invalid-namespace"
    );
    // Bytes that are not UTF-8: in character data, in a name, and a UTF-16 stream.
    assert_eq!(
        stream_error_after(
            &server,
            true,
            b"<message><body>\xC3\x28\xFF</body></message>"
        )
        .await,
        "unsupported-encoding"
    );
    assert_eq!(
        stream_error_after(&server, true, b"<mess\xFFage/>").await,
        "unsupported-encoding"
    );
    assert_eq!(
        stream_error_after(&server, false, b"\xFF\xFE<\x00s\x00").await,
        "unsupported-encoding"
    );
    // Processing instructions: at stream level, inside a stanza, and a second XML
    // declaration.
    assert_eq!(
        stream_error_after(&server, true, b"<?evil instructions?>").await,
        "restricted-xml"
    );
    assert_eq!(
        stream_error_after(&server, true, b"<message><?evil instructions?></message>").await,
        "restricted-xml"
    );
    assert_eq!(
        stream_error_after(&server, true, b"<?xml version='1.0'?>").await,
        "restricted-xml"
    );
    // A comment.
    assert_eq!(
        stream_error_after(&server, true, b"<!-- hello -->").await,
        "restricted-xml"
    );
    server.assert_serves_a_login("after-garbage").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stanzas_before_authentication_are_not_authorized() {
    let server = Server::start(Options::default()).await;
    let early = format!(
        "<message to='romeo@{DOMAIN}' from='juliet@{DOMAIN}/balcony'>\
         <body>too early</body></message>"
    );
    // Before STARTTLS.
    assert_eq!(
        stream_error_after(&server, true, early.as_bytes()).await,
        "not-authorized"
    );
    // After STARTTLS, before SASL.
    let mut client = server.plain().await;
    client.open().await;
    client.starttls(server.tls_client()).await;
    client.open().await;
    client.send(early.as_bytes()).await.unwrap();
    assert_eq!(client.expect_stream_error().await, "not-authorized");
    // After SASL, before binding a resource: a stanza error, the stream stays open.
    let mut client = server.plain().await;
    client.open().await;
    client.starttls(server.tls_client()).await;
    client.open().await;
    client.scram_sha1("juliet", PASSWORD).await.unwrap();
    client.open().await;
    client
        .send(
            format!("<message to='romeo@{DOMAIN}' id='m1'><body>too early</body></message>")
                .as_bytes(),
        )
        .await
        .unwrap();
    let error = client.next_element().await;
    assert_eq!(error.attr("type"), Some("error"), "{error}");
    assert_eq!(error.attr("id"), Some("m1"));
    let condition = error
        .child("error", ns::JABBER_CLIENT)
        .and_then(|e| e.children().find(|c| c.namespace() == ns::XMPP_STANZAS))
        .map(|c| c.name().to_owned());
    assert_eq!(condition.as_deref(), Some("not-authorized"), "{error}");
    assert_eq!(client.bind("late").await, format!("juliet@{DOMAIN}/late"));

    server.assert_serves_a_login("after-early").await;
    assert!(
        server
            .stanzas()
            .await
            .iter()
            .all(|s| !s.xml.contains("too early")),
        "a stanza sent before binding was stored"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_from_is_overwritten_with_the_authenticated_sender() {
    let server = Server::start(Options::default()).await;
    let mut juliet = server.login("juliet", "balcony").await;
    juliet
        .send(
            format!(
                "<message from='romeo@{DOMAIN}/orchard' to='nurse@{DOMAIN}' type='chat' \
                 id='forged1'><body>forged message</body></message>\
                 <presence from='{DOMAIN}' to='nurse@{DOMAIN}' type='subscribe' id='forged2'>\
                 <status>forged presence</status></presence>\
                 <iq from='admin@{DOMAIN}' to='nurse@{DOMAIN}/x' type='get' id='forged3'>\
                 <query xmlns='jabber:iq:version'/><!-- --></iq>"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The iq carries a comment: the stream ends there, after the two stanzas before it.
    assert_eq!(juliet.expect_stream_error().await, "restricted-xml");
    for marker in ["forged message", "forged presence"] {
        let stored = server.wait_for_stanza(marker).await;
        assert_eq!(stored.sender.as_str(), format!("juliet@{DOMAIN}/balcony"));
        assert!(
            stored
                .xml
                .contains(&format!("from=\"juliet@{DOMAIN}/balcony\""))
                || stored
                    .xml
                    .contains(&format!("from='juliet@{DOMAIN}/balcony'")),
            "{}",
            stored.xml
        );
        assert!(!stored.xml.contains("romeo@"), "{}", stored.xml);
        assert!(
            !stored.xml.contains(&format!("'{DOMAIN}'")),
            "{}",
            stored.xml
        );
    }
    assert!(
        server
            .stanzas()
            .await
            .iter()
            .all(|s| s.stanza_id.as_deref() != Some("forged3"))
    );
    server.assert_serves_a_login("after-forgery").await;
    server.stop().await;
}

/// A client that sends far faster than the log stores is slowed down, not disconnected:
/// one write of 5,000 tiny stanzas (more than fit the session's 1,000 stanzas in flight
/// in a single read) is read as the log acknowledges, and every stanza is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_small_stanzas_is_paced_and_stored_whole() {
    const BURST: usize = 5_000;
    let server = Server::start(Options::default()).await;
    let mut juliet = server.login("juliet", "burst").await;
    let mut burst = "<presence/>".repeat(BURST);
    burst.push_str(&format!(
        "<message to='nurse@{DOMAIN}' type='chat' id='after-burst'><body>after the burst</body></message>"
    ));
    juliet.send(burst.as_bytes()).await.unwrap();
    server.wait_for_stanza("after the burst").await;
    let presences = server
        .stanzas()
        .await
        .iter()
        .filter(|s| {
            s.sender.as_str() == format!("juliet@{DOMAIN}/burst") && s.xml.starts_with("<presence")
        })
        .count();
    assert!(
        presences >= BURST,
        "{presences} of the {BURST} presences were stored"
    );
    server.assert_serves_a_login("after-burst").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_identity_of_another_user_is_refused() {
    let server = Server::start(Options {
        plain: true,
        ..Options::default()
    })
    .await;
    let mut client = server.direct_tls().await;
    let features = client.open().await;
    let mechanisms: Vec<String> = features
        .child("mechanisms", ns::XMPP_SASL)
        .map(|m| m.children().map(|c| c.text()).collect())
        .unwrap_or_default();
    assert!(mechanisms.iter().any(|m| m == "PLAIN"), "{features}");
    for _ in 0..2 {
        assert_eq!(
            client
                .plain_with_authzid(&format!("romeo@{DOMAIN}"), "juliet", PASSWORD)
                .await,
            Err("invalid-authzid".to_owned())
        );
    }
    // The third failure on one stream also ends it.
    assert_eq!(
        client
            .plain_with_authzid(&format!("romeo@{DOMAIN}/orchard"), "juliet", PASSWORD)
            .await,
        Err("invalid-authzid".to_owned())
    );
    assert_eq!(client.expect_stream_error().await, "policy-violation");
    // The user's own identity is accepted: the refusal was about the identity.
    let mut client = server.direct_tls().await;
    client.open().await;
    client
        .plain_with_authzid(&format!("juliet@{DOMAIN}"), "juliet", PASSWORD)
        .await
        .unwrap();
    client.open().await;
    assert_eq!(client.bind("own").await, format!("juliet@{DOMAIN}/own"));
    server.assert_serves_a_login("after-authzid").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_streams_time_out() {
    let server = Server::start(Options {
        auth_timeout: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    // A plain stream that stops after the header.
    let mut plain = server.plain().await;
    plain.open().await;
    // A stream that stops after STARTTLS.
    let mut tls = server.plain().await;
    tls.open().await;
    tls.starttls(server.tls_client()).await;
    tls.open().await;
    // A direct TLS connection that sends no stream header.
    let mut silent = server.direct_tls().await;
    // A connection that sends nothing at all.
    let mut nothing = TcpStream::connect(server.c2s).await.unwrap();
    // A direct TLS connection that never finishes its handshake.
    let mut handshake = TcpStream::connect(server.tls).await.unwrap();
    handshake.write_all(b"\x16\x03\x01\x00").await.unwrap();

    assert_eq!(plain.expect_stream_error().await, "connection-timeout");
    assert_eq!(tls.expect_stream_error().await, "connection-timeout");
    assert_eq!(silent.expect_stream_error().await, "connection-timeout");
    for socket in [&mut nothing, &mut handshake] {
        let mut seen = Vec::new();
        let read = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut seen))
            .await
            .expect("a silent connection was not closed");
        if read.is_ok() && !seen.is_empty() {
            let ended = Ended::from_transcript(&seen, false);
            assert_eq!(ended.stream_error(), "connection-timeout");
        }
    }
    server.assert_serves_a_login("after-timeouts").await;
    server.stop().await;
}

/// Raises this process's open-file limit to `needed` if it can; returns the limit.
fn raise_nofile(needed: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= needed {
        return current;
    }
    let maximum = limit.maximum.map_or(needed, |m| m.max(needed));
    let raised = Rlimit {
        current: Some(needed),
        maximum: Some(maximum),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return needed;
    }
    // Without the privilege to raise the hard limit, go as far as it allows.
    if let Some(hard) = limit.maximum {
        let soft = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if setrlimit(Resource::Nofile, soft).is_ok() {
            return hard;
        }
    }
    current
}

/// Connections waiting in the accept queues of the IPv4 listeners on `ports`
/// (`/proc/net/tcp`: `rx_queue` of the sockets in state LISTEN, which the kernel lists
/// first, so reading stops at the first other socket).
fn accept_queue(ports: &[u16]) -> u64 {
    use std::io::BufRead;
    let table = std::io::BufReader::new(std::fs::File::open("/proc/net/tcp").unwrap());
    let mut queued = 0;
    for line in table.lines().skip(1) {
        let line = line.unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(3) != Some(&"0A") {
            break;
        }
        let port = fields
            .get(1)
            .and_then(|local| local.rsplit(':').next())
            .and_then(|port| u16::from_str_radix(port, 16).ok());
        if port.is_some_and(|port| ports.contains(&port)) {
            queued += fields
                .get(4)
                .and_then(|queues| queues.split(':').nth(1))
                .and_then(|rx| u64::from_str_radix(rx, 16).ok())
                .unwrap_or(0);
        }
    }
    queued
}

#[derive(Debug, Clone, Copy)]
enum HalfOpen {
    /// TCP connected to the STARTTLS listener, nothing sent.
    Silent,
    /// Part of a stream header.
    PartialHeader,
    /// A full stream header; the features were read.
    Header,
    /// TCP connected to the direct TLS listener, no handshake.
    SilentTls,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_held_cheaply_and_timed_out() {
    let wanted: usize = std::env::var("BAD_INPUT_HALF_OPEN")
        .ok()
        .map(|n| n.parse().expect("BAD_INPUT_HALF_OPEN must be a number"))
        .unwrap_or(10_000);
    let auth_timeout = Duration::from_secs(6);
    let server = Server::start(Options {
        auth_timeout,
        ..Options::default()
    })
    .await;
    // Warm up: one full login, so what every process allocates once is in the baseline.
    server.assert_serves_a_login("warm-up").await;
    // Both ends of every connection are in this process, beside what it has open already
    // (the log's files, the listeners) and some room for the logins during the test: a
    // gateway out of descriptors cannot accept, and connections left in the kernel's
    // accept queue would look open to their clients.
    let in_use = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let spare = in_use + 512;
    let limit = raise_nofile(wanted as u64 * 2 + spare);
    let count = wanted.min(usize::try_from(limit.saturating_sub(spare) / 2).unwrap_or(usize::MAX));
    if count < wanted {
        eprintln!(
            "!!! open-file limit {limit} (ulimit -n) cannot be raised: testing {count} \
             half-open connections instead of {wanted} !!!"
        );
    }
    assert!(count > 0, "no file descriptors for half-open connections");
    let before = rss_kib();

    let started = Instant::now();
    let kinds = [
        HalfOpen::Silent,
        HalfOpen::PartialHeader,
        HalfOpen::Header,
        HalfOpen::SilentTls,
    ];
    let (c2s, tls) = (server.c2s, server.tls);
    // In batches under the listen backlog (128, tokio's), each accepted before the next: a
    // connection the kernel could not queue would look open to its client without ever
    // reaching the gateway.
    let mut sockets: Vec<(HalfOpen, TcpStream)> = Vec::with_capacity(count);
    for batch in (0..count).collect::<Vec<_>>().chunks(96) {
        let opened: Vec<(HalfOpen, TcpStream)> = futures::stream::iter(batch.to_vec())
            .map(|i| async move {
                let kind = kinds[i % kinds.len()];
                let addr = if matches!(kind, HalfOpen::SilentTls) {
                    tls
                } else {
                    c2s
                };
                let mut socket = TcpStream::connect(addr).await.unwrap();
                match kind {
                    HalfOpen::Silent | HalfOpen::SilentTls => {}
                    HalfOpen::PartialHeader => {
                        socket
                            .write_all(b"<?xml version='1.0'?><stream:stream to='exam")
                            .await
                            .unwrap();
                    }
                    HalfOpen::Header => {
                        socket.write_all(HEADER.as_bytes()).await.unwrap();
                        let mut seen = Vec::new();
                        let mut buf = [0u8; 512];
                        while !String::from_utf8_lossy(&seen).contains("</stream:features>") {
                            let n = tokio::time::timeout(PATIENCE, socket.read(&mut buf))
                                .await
                                .unwrap()
                                .unwrap();
                            assert!(n > 0, "closed before the features");
                            seen.extend_from_slice(&buf[..n]);
                        }
                    }
                }
                (kind, socket)
            })
            .buffer_unordered(64)
            .collect()
            .await;
        sockets.extend(opened);
        let give_up = Instant::now() + PATIENCE;
        while accept_queue(&[c2s.port(), tls.port()]) > 0 {
            assert!(Instant::now() < give_up, "the gateway stopped accepting");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let opened_in = started.elapsed();
    // Let the gateway run every accepted connection's task up to its first read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = rss_kib();

    // A real login while they are all open.
    server.assert_serves_a_login("among-half-open").await;
    let still_open = sockets
        .iter()
        .filter(|(_, s)| {
            let mut probe = [0u8; 1];
            matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    println!(
        "{count} half-open connections opened in {opened_in:?}; {still_open} still open \
         after a login among them"
    );
    assert_eq!(
        still_open, count,
        "half-open connections were closed before the login finished (auth timeout {auth_timeout:?})"
    );

    // Every one of them is closed by the authentication (or TLS handshake) timeout.
    let timed_out = Arc::new(AtomicUsize::new(0));
    let closed = futures::stream::iter(sockets)
        .map(|(kind, mut socket)| {
            let timed_out = timed_out.clone();
            async move {
                let mut seen = Vec::new();
                let read =
                    tokio::time::timeout(auth_timeout + PATIENCE, socket.read_to_end(&mut seen))
                        .await;
                assert!(
                    read.is_ok(),
                    "a half-open {kind:?} connection was never closed"
                );
                if String::from_utf8_lossy(&seen).contains("connection-timeout") {
                    timed_out.fetch_add(1, Ordering::Relaxed);
                } else if matches!(kind, HalfOpen::Header | HalfOpen::PartialHeader) {
                    // An error after a partial header comes with the server's header.
                    panic!(
                        "{kind:?} closed without connection-timeout: {}",
                        String::from_utf8_lossy(&seen)
                    );
                }
            }
        })
        .buffer_unordered(count)
        .collect::<Vec<()>>()
        .await
        .len();
    let closed_after = started.elapsed();
    let after = rss_kib();
    let per_connection = held.saturating_sub(before) as f64 / count as f64;
    println!(
        "RSS {before} KiB before, {held} KiB with {count} half-open connections \
         ({per_connection:.1} KiB each, both ends), {after} KiB after they closed; \
         all closed {closed_after:?} after the first connect, {} with connection-timeout",
        timed_out.load(Ordering::Relaxed)
    );
    assert_eq!(closed, count);
    server.assert_serves_a_login("after-half-open").await;
    // Generous: a half-open connection must not cost anywhere near a stanza buffer.
    assert!(
        per_connection < 128.0,
        "{per_connection:.1} KiB per half-open connection"
    );
    server.stop().await;
}
