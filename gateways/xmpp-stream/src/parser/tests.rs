use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::error::StreamErrorCondition;

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang='en'>";

/// A client session as a client sends it (one stream for the purpose of slicing; the
/// restarts after STARTTLS and SASL are exercised separately).
fn client_stream() -> Vec<u8> {
    let mut s = String::from(HEADER);
    s.push_str("\n  <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n");
    s.push_str(
        "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"SCRAM-SHA-1\">\
         biwsbj1qdWxpZXQscj1vTXNUQUF3QUFBQU1BQUFBTlAwVEFBQUFBQUJQVTBBQQ==</auth>",
    );
    s.push_str(
        "<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>balcony</resource></bind></iq>",
    );
    s.push_str(
        "<message to='romeo@example.net' type='chat' id='m1' xml:lang='fr'>\
         <body>Ô Roméo — 😀 &lt;3 &amp; &#x263A; &#9731; \"quoted\" &apos;x&apos; &gt; tab\tcr\r\nlf</body>\
         <thread>t1</thread><![CDATA[<raw> & ]] stuff]]>\
         <x:data xmlns:x='urn:example:data' x:kind='a &amp; b' plain = \"v&#10;w\n z\"/>\
         <active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    );
    s.push_str(
        "<presence><show>away</show><status>Ça va? 日本語 ☃</status><priority>5</priority></presence>",
    );
    s.push_str(" \n\t \r\n<r xmlns='urn:xmpp:sm:3'/> <a xmlns='urn:xmpp:sm:3' h='3'/>");
    s.push_str("</stream:stream>");
    s.into_bytes()
}

fn parse_all(input: &[u8]) -> Result<Vec<StreamEvent>, StreamError> {
    StreamParser::default().feed(input)
}

/// Feeds `input` in the given chunks; returns events (kept up to an error) and the error.
fn parse_chunks<'a>(
    config: &ParserConfig,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<StreamEvent>, Option<StreamError>) {
    let mut p = StreamParser::new(config.clone());
    let mut events = Vec::new();
    for c in chunks {
        if let Err(e) = p.feed_into(c, &mut events) {
            return (events, Some(e));
        }
        assert!(p.buffered_bytes() <= config.max_stanza_bytes.max(config.max_header_bytes));
    }
    (events, None)
}

fn condition_of(input: &[u8]) -> StreamErrorCondition {
    match parse_all(input) {
        Err(e) => e.condition,
        Ok(events) => panic!("accepted: {events:?}"),
    }
}

fn in_stream(body: &str) -> Vec<u8> {
    format!("{HEADER}{body}").into_bytes()
}

fn stanzas(events: &[StreamEvent]) -> Vec<&Element> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Stanza(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn parses_a_client_session() {
    let events = parse_all(&client_stream()).unwrap();
    assert_eq!(events.len(), 9, "{events:#?}");
    let StreamEvent::StreamOpen(open) = &events[0] else {
        panic!("{:?}", events[0])
    };
    assert_eq!(
        open,
        &StreamOpen {
            framing: Framing::Tcp,
            to: Some("example.com".into()),
            from: None,
            id: None,
            version: Some(StreamVersion::V1_0),
            lang: Some("en".into()),
            content_namespace: Some(ns::JABBER_CLIENT.into()),
            stream_prefix: Some("stream".into()),
        }
    );
    assert_eq!(events[8], StreamEvent::StreamClose);

    let s = stanzas(&events);
    assert!(s[0].is("starttls", ns::XMPP_TLS));
    assert!(s[1].is("auth", ns::XMPP_SASL));
    assert_eq!(s[1].attr("mechanism"), Some("SCRAM-SHA-1"));
    assert!(s[1].text().starts_with("biwsbj1q"));

    let iq = s[2];
    assert!(iq.is("iq", ns::JABBER_CLIENT));
    let bind = iq.child("bind", ns::XMPP_BIND).unwrap();
    assert_eq!(
        bind.child("resource", ns::XMPP_BIND)
            .map(Element::text)
            .as_deref(),
        Some("balcony")
    );

    let m = s[3];
    assert_eq!(m.lang(), Some("fr"));
    assert_eq!(
        m.child("body", ns::JABBER_CLIENT).unwrap().text(),
        "Ô Roméo — 😀 <3 & ☺ ☃ \"quoted\" 'x' > tab\tcr\nlf"
    );
    assert_eq!(m.text(), "<raw> & ]] stuff");
    let data = m.child("data", "urn:example:data").unwrap();
    assert_eq!(data.attr_ns("kind", "urn:example:data"), Some("a & b"));
    assert_eq!(data.attr("plain"), Some("v\nw  z"));
    assert!(
        m.child("active", "http://jabber.org/protocol/chatstates")
            .is_some()
    );

    let p = s[4];
    assert_eq!(
        p.child("status", ns::JABBER_CLIENT).unwrap().text(),
        "Ça va? 日本語 ☃"
    );
    assert!(s[5].is("r", ns::STREAM_MANAGEMENT));
    assert_eq!(s[6].attr("h"), Some("3"));
}

#[test]
fn every_single_split_gives_the_same_events() {
    let input = client_stream();
    let config = ParserConfig::client();
    let whole = parse_all(&input).unwrap();
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        let (events, error) = parse_chunks(&config, [a, b]);
        assert_eq!(error, None, "split at {at}");
        assert_eq!(events, whole, "split at {at}");
    }
}

#[test]
fn releasing_memory_between_any_two_chunks_changes_nothing() {
    let input = client_stream();
    let whole = parse_all(&input).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..200 {
        let mut parser = StreamParser::default();
        let mut events = Vec::new();
        for chunk in random_chunks(&mut rng, &input) {
            parser.feed_into(chunk, &mut events).unwrap();
            parser.release_memory();
        }
        assert_eq!(events, whole);
    }
}

#[test]
fn a_parser_between_stanzas_holds_no_spare_buffers_after_releasing_memory() {
    let mut parser = StreamParser::default();
    let mut input = HEADER.as_bytes().to_vec();
    input.extend_from_slice(
        b"<message to='romeo@example.net'><body>a longer body to grow the buffers</body>\
          <x xmlns='urn:example:a' xmlns:b='urn:example:b'><b:y/></x></message>",
    );
    let events = parser.feed(&input).unwrap();
    assert_eq!(events.len(), 2);
    let resolver_before = parser.resolver.clone();
    parser.release_memory();
    assert_eq!(parser.tok.capacity(), 0);
    assert_eq!(parser.text.capacity(), 0);
    assert_eq!(parser.stack.capacity(), 0);
    // The stanza's declarations are gone; the header's two are kept without copies of
    // their names.
    assert!(
        parser.resolver.heap_bytes() <= 2 * 64,
        "{:?}",
        parser.resolver
    );
    // The header's declarations still resolve.
    assert_eq!(
        format!("{:?}", parser.resolver),
        format!("{resolver_before:?}")
    );
    let events = parser.feed(b"<presence/>").unwrap();
    assert!(matches!(&events[..], [StreamEvent::Stanza(p)] if p.is("presence", "jabber:client")));
}

#[test]
fn byte_by_byte_gives_the_same_events() {
    let input = client_stream();
    let whole = parse_all(&input).unwrap();
    let (events, error) = parse_chunks(&ParserConfig::client(), input.chunks(1));
    assert_eq!(error, None);
    assert_eq!(events, whole);
}

#[test]
fn random_slicing_gives_the_same_events() {
    let input = client_stream();
    let whole = parse_all(&input).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..500 {
        let chunks = random_chunks(&mut rng, &input);
        let (events, error) = parse_chunks(&ParserConfig::client(), chunks);
        assert_eq!(error, None);
        assert_eq!(events, whole);
    }
}

fn random_chunks<'a>(rng: &mut StdRng, input: &'a [u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = rng.random_range(1..=rest.len().min(40));
        let (a, b) = rest.split_at(n);
        chunks.push(a);
        rest = b;
    }
    chunks
}

#[test]
fn serialization_round_trips() {
    let events = parse_all(&client_stream()).unwrap();
    for s in stanzas(&events) {
        for xml in [s.to_xml(), s.to_xml_in(ns::JABBER_CLIENT)] {
            let again = parse_all(&in_stream(&xml)).unwrap();
            assert_eq!(stanzas(&again), vec![s], "{xml}");
        }
    }
}

#[test]
fn whitespace_keepalives_are_ignored() {
    let mut p = StreamParser::default();
    assert_eq!(p.feed(HEADER.as_bytes()).unwrap().len(), 1);
    assert!(p.feed(b" ").unwrap().is_empty());
    assert!(p.feed(b"\r\n\t ").unwrap().is_empty());
    assert_eq!(p.buffered_bytes(), 0);
    assert!(p.is_open());
    let ev = p.feed(b"<presence/>").unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(p.buffered_bytes(), 0);
    assert_eq!(
        p.feed(b"</stream:stream>").unwrap(),
        vec![StreamEvent::StreamClose]
    );
    assert!(p.is_closed());
    assert!(p.feed(b"  \n").unwrap().is_empty());
    assert_eq!(
        p.feed(b"<presence/>").unwrap_err().condition,
        StreamErrorCondition::NotWellFormed
    );
}

#[test]
fn other_inputs_are_slicing_invariant() {
    let config = ParserConfig::client();
    let inputs = [
        b"\xEF\xBB\xBF<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client'>\
          <iq type='get' id='\xC3\xA9'><q xmlns='urn:q' a=\"&quot;'&#x1F600;\"/></iq></s:stream>"
            .to_vec(),
        in_stream(
            "<message><body>&amp;&#38;<![CDATA[]]]]><![CDATA[>]]></body></message><!-- x -->",
        ),
        in_stream("<message><body>\u{10FFFF}\r\r\n</body></message>\u{1}"),
    ];
    for input in inputs {
        let whole = outcome(&config, vec![&input]);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(outcome(&config, vec![a, b]), whole, "split at {at}");
        }
        assert_eq!(outcome(&config, input.chunks(1).collect()), whole);
    }
}

#[test]
fn header_variants() {
    // No XML declaration, another prefix, a UTF-8 byte order mark, an empty stream.
    let ev = parse_all(
        b"\xEF\xBB\xBF<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client' \
          from='juliet@example.com' version='1.1' id='abc'><presence/></s:stream>",
    )
    .unwrap();
    let StreamEvent::StreamOpen(open) = &ev[0] else {
        panic!()
    };
    assert_eq!(open.stream_prefix.as_deref(), Some("s"));
    assert_eq!(open.from.as_deref(), Some("juliet@example.com"));
    assert_eq!(open.version, Some(StreamVersion { major: 1, minor: 1 }));
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[2], StreamEvent::StreamClose);

    let ev = parse_all(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'/>",
    )
    .unwrap();
    assert!(matches!(&ev[0], StreamEvent::StreamOpen(o) if o.version.is_none()));
    assert_eq!(ev[1], StreamEvent::StreamClose);

    // Without a content namespace, stanzas are qualified explicitly.
    let ev = parse_all(
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>\
          <message xmlns='jabber:client'/><c:iq xmlns:c='jabber:client' type='get' id='1'/></stream:stream>",
    )
    .unwrap();
    assert!(matches!(&ev[0], StreamEvent::StreamOpen(o) if o.content_namespace.is_none()));
    assert!(stanzas(&ev)[0].is("message", ns::JABBER_CLIENT));
    assert!(stanzas(&ev)[1].is("iq", ns::JABBER_CLIENT));
    // The content namespace cannot be the stream namespace.
    assert_eq!(
        condition_of(b"<stream xmlns='http://etherx.jabber.org/streams'>"),
        StreamErrorCondition::InvalidNamespace
    );

    assert_eq!(
        StreamVersion::parse("01.002"),
        Some(StreamVersion { major: 1, minor: 2 })
    );
    assert_eq!(StreamVersion::parse("1"), None);
    assert_eq!(StreamVersion::parse("+1.0"), None);
    assert_eq!(StreamVersion::parse("1.99999999999"), None);
}

#[test]
fn server_streams_use_jabber_server() {
    let header = b"<stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' \
        xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\
        <db:result from='a.example' to='b.example'>key</db:result>";
    let ev = StreamParser::new(ParserConfig::server())
        .feed(header)
        .unwrap();
    assert!(stanzas(&ev)[0].is("result", "jabber:server:dialback"));
    assert_eq!(
        StreamParser::default().feed(header).unwrap_err().condition,
        StreamErrorCondition::InvalidNamespace
    );
}

#[test]
fn restart_after_starttls_and_sasl() {
    let mut p = StreamParser::default();
    let ev = p
        .feed(format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").as_bytes())
        .unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(p.buffered_bytes(), 0);
    p.reset();
    assert!(!p.is_open());
    let ev = p.feed(HEADER.as_bytes()).unwrap();
    assert!(matches!(ev[0], StreamEvent::StreamOpen(_)));
    let ev = p
        .feed(
            b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABy</auth>",
        )
        .unwrap();
    assert_eq!(ev.len(), 1);
    p.reset();
    let ev = p.feed(HEADER.as_bytes()).unwrap();
    assert_eq!(ev.len(), 1);
}

#[test]
fn starttls_injection_is_visible() {
    // Clear text sent after <starttls/> in the same chunk shows up as further events or as
    // buffered bytes, so the gateway can refuse to upgrade.
    let mut p = StreamParser::default();
    p.feed(HEADER.as_bytes()).unwrap();
    let ev = p
        .feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><iq type='set' id='x'>")
        .unwrap();
    assert_eq!(ev.len(), 1);
    assert!(p.buffered_bytes() > 0);
}

#[test]
fn text_and_attribute_normalization() {
    let ev = parse_all(&in_stream(
        "<message a='x\ty\r\nz' b='&#9;&#13;&#10;'><body>l1\r\nl2\rl3&#13;</body></message>",
    ))
    .unwrap();
    let m = stanzas(&ev)[0];
    assert_eq!(m.attr("a"), Some("x y z"));
    assert_eq!(m.attr("b"), Some("\t\r\n"));
    assert_eq!(
        m.child("body", ns::JABBER_CLIENT).unwrap().text(),
        "l1\nl2\nl3\r"
    );
    // and the serializer keeps them
    let again = parse_all(&in_stream(&m.to_xml())).unwrap();
    assert_eq!(stanzas(&again)[0], m);
}

#[test]
fn namespaces_inside_stanzas() {
    let ev = parse_all(&in_stream(
        "<iq type='get' id='1'><query xmlns='jabber:iq:roster'><item xmlns=''/>\
         <p:x xmlns:p='urn:p'><y/><p:z/></p:x></query></iq>",
    ))
    .unwrap();
    let q = stanzas(&ev)[0].child("query", "jabber:iq:roster").unwrap();
    assert!(q.child("item", "").is_some());
    let x = q.child("x", "urn:p").unwrap();
    assert!(x.child("y", "jabber:iq:roster").is_some());
    assert!(x.child("z", "urn:p").is_some());
    // prefixes do not leak to the next stanza
    assert_eq!(
        condition_of(&in_stream(
            "<iq type='get' id='1'><p:x xmlns:p='urn:p'/></iq><iq type='get' id='2'><p:x/></iq>"
        )),
        StreamErrorCondition::BadNamespacePrefix
    );
}

#[test]
fn limit_is_exact() {
    let config = ParserConfig {
        max_stanza_bytes: 64,
        ..ParserConfig::client()
    };
    let fits = format!("<message><body>{}</body></message>", "a".repeat(64 - 32));
    assert_eq!(fits.len(), 64);
    let mut p = StreamParser::new(config.clone());
    p.feed(HEADER.as_bytes()).unwrap();
    assert_eq!(p.feed(fits.as_bytes()).unwrap().len(), 1);
    let too_big = format!("<message><body>{}</body></message>", "a".repeat(64 - 31));
    let e = p.feed(too_big.as_bytes()).unwrap_err();
    assert_eq!(e, StreamError::stanza_too_big(64));
}

#[test]
fn websocket_framing() {
    let mut p = StreamParser::new(ParserConfig::websocket());
    let ev = p
        .feed_message(b"<?xml version='1.0'?><open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>")
        .unwrap();
    let StreamEvent::StreamOpen(open) = &ev[0] else {
        panic!()
    };
    assert_eq!(open.framing, Framing::WebSocket);
    assert_eq!(open.to.as_deref(), Some("example.com"));
    assert_eq!(open.content_namespace.as_deref(), Some(ns::JABBER_CLIENT));
    let ev = p
        .feed_message(b"<message xmlns='jabber:client' to='a@b'><body>x</body></message>")
        .unwrap();
    assert!(stanzas(&ev)[0].is("message", ns::JABBER_CLIENT));
    let ev = p.feed_message(b"<presence/>").unwrap();
    assert!(stanzas(&ev)[0].is("presence", ns::JABBER_CLIENT));
    // a restart is a new <open/>
    let ev = p
        .feed_message(
            b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>",
        )
        .unwrap();
    assert!(matches!(ev[0], StreamEvent::StreamOpen(_)));
    let ev = p
        .feed_message(b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
        .unwrap();
    assert_eq!(ev, vec![StreamEvent::StreamClose]);
}

#[test]
fn websocket_errors() {
    let open =
        b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>";
    let mut p = StreamParser::new(ParserConfig::websocket());
    p.feed_message(open).unwrap();
    assert_eq!(
        p.feed_message(b"<message><body>").unwrap_err().condition,
        StreamErrorCondition::NotWellFormed
    );
    assert!(p.error().is_some());

    let mut p = StreamParser::new(ParserConfig::websocket());
    assert_eq!(
        p.feed_message(b"<message/>").unwrap_err().condition,
        StreamErrorCondition::InvalidNamespace
    );
    let mut p = StreamParser::new(ParserConfig::websocket());
    assert_eq!(
        p.feed_message(HEADER.as_bytes()).unwrap_err().condition,
        StreamErrorCondition::InvalidNamespace
    );
    let mut p = StreamParser::new(ParserConfig::websocket());
    p.feed_message(open).unwrap();
    assert_eq!(
        p.feed_message(b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'><x/></open>")
            .unwrap_err()
            .condition,
        StreamErrorCondition::BadFormat
    );
    let mut p = StreamParser::new(ParserConfig::websocket());
    p.feed_message(open).unwrap();
    assert_eq!(
        p.feed_message(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>")
            .unwrap_err()
            .condition,
        StreamErrorCondition::UnsupportedStanzaType
    );
}

// ---------------------------------------------------------------------------------------
// Bad input

#[test]
fn billion_laughs_is_restricted() {
    let bomb = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><message><body>&lol9;</body></message>"#;
    assert_eq!(condition_of(bomb), StreamErrorCondition::RestrictedXml);
    // The refusal happens at `<!D`, before the declarations are buffered.
    let mut p = StreamParser::default();
    let at = bomb.windows(3).position(|w| w == b"<!D").unwrap();
    p.feed(&bomb[..at + 2]).unwrap();
    assert_eq!(
        p.feed(&bomb[at + 2..at + 3]).unwrap_err().condition,
        StreamErrorCondition::RestrictedXml
    );
}

#[test]
fn external_entities_are_restricted() {
    let xxe = b"<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>\
        <stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
        <message><body>&xxe;</body></message>";
    assert_eq!(condition_of(xxe), StreamErrorCondition::RestrictedXml);
    // Undeclared entity references without any DTD.
    assert_eq!(
        condition_of(&in_stream("<message><body>&xxe;</body></message>")),
        StreamErrorCondition::RestrictedXml
    );
    assert_eq!(
        condition_of(&in_stream("<message><body>&nbsp;</body></message>")),
        StreamErrorCondition::RestrictedXml
    );
}

#[test]
fn entity_reference_in_attribute_is_restricted() {
    assert_eq!(
        condition_of(&in_stream("<message to='&xxe;'/>")),
        StreamErrorCondition::RestrictedXml
    );
    assert_eq!(
        condition_of(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='&host;'>"
        ),
        StreamErrorCondition::RestrictedXml
    );
}

#[test]
fn malformed_references_are_not_well_formed() {
    for body in [
        "a & b",
        "&;",
        "&#;",
        "&#xZZ;",
        "&#0;",
        "&#1;",
        "&#xD800;",
        "&#x110000;",
        "&#xFFFE;",
        "&amp",
    ] {
        assert_eq!(
            condition_of(&in_stream(&format!(
                "<message><body>{body}</body></message>"
            ))),
            StreamErrorCondition::NotWellFormed,
            "{body}"
        );
    }
    assert_eq!(
        condition_of(&in_stream("<message to='&#1;'/>")),
        StreamErrorCondition::NotWellFormed
    );
}

#[test]
fn doctype_anywhere_is_restricted() {
    for input in [
        b"<!DOCTYPE stream>".to_vec(),
        in_stream("<!DOCTYPE x>"),
        in_stream("<message><!DOCTYPE x></message>"),
        in_stream("<message><body>hi<!ENTITY x 'y'></body></message>"),
        in_stream("<!ELEMENT message ANY>"),
        in_stream("<!ATTLIST message a CDATA #IMPLIED>"),
    ] {
        assert_eq!(condition_of(&input), StreamErrorCondition::RestrictedXml);
    }
}

#[test]
fn processing_instructions_are_restricted() {
    for input in [
        b"<?xml-stylesheet href='a'?><stream:stream>".to_vec(),
        b"<?php echo 1; ?>".to_vec(),
        in_stream("<?foo bar?>"),
        in_stream("<message><?foo bar?></message>"),
        // an XML declaration is only allowed at the very start
        in_stream("<?xml version='1.0'?>"),
        format!(" {HEADER}").into_bytes(),
    ] {
        assert_eq!(
            condition_of(&input),
            StreamErrorCondition::RestrictedXml,
            "{}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn comments_are_restricted() {
    for input in [
        b"<!-- hello --><stream:stream>".to_vec(),
        in_stream("<!-- keepalive -->"),
        in_stream("<message><!-- x --><body/></message>"),
    ] {
        assert_eq!(condition_of(&input), StreamErrorCondition::RestrictedXml);
    }
}

#[test]
fn ten_megabyte_stanza_is_refused_at_the_limit() {
    let limit = DEFAULT_MAX_STANZA_BYTES;
    let chunk = 1024;
    let mut input = b"<message to='juliet@example.com'><body>".to_vec();
    input.resize(10 * 1024 * 1024, b'a');
    let mut p = StreamParser::default();
    p.feed(HEADER.as_bytes()).unwrap();
    let mut fed = 0;
    let mut refused = None;
    for c in input.chunks(chunk) {
        match p.feed(c) {
            Ok(ev) => assert!(ev.is_empty()),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        fed += c.len();
        assert!(p.buffered_bytes() <= limit);
        assert!(p.buffered_bytes() <= limit + chunk);
        assert!(p.tok.capacity() + p.text.capacity() <= 2 * (limit + chunk));
    }
    let e = refused.expect("refused");
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
    assert!(e.application.is_some());
    // refused in the chunk that crossed the limit
    assert!(fed <= limit && fed + chunk > limit, "fed {fed}");
    // and stays refused
    assert_eq!(p.feed(b"</body></message>").unwrap_err(), e);
}

#[test]
fn huge_tag_and_header_are_refused_at_the_limit() {
    let config = ParserConfig::client();
    let mut tag = b"<message to='".to_vec();
    tag.resize(2 * config.max_stanza_bytes, b'x');
    let mut p = StreamParser::default();
    p.feed(HEADER.as_bytes()).unwrap();
    let e = tag.chunks(1000).find_map(|c| p.feed(c).err()).unwrap();
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);

    let mut header = b"<stream:stream to='".to_vec();
    header.resize(2 * config.max_stanza_bytes, b'x');
    let mut p = StreamParser::default();
    let e = header.chunks(1000).find_map(|c| p.feed(c).err()).unwrap();
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);

    // A giant CDATA section and a giant text run are bounded the same way.
    for body in ["<![CDATA[", "text"] {
        let mut s = in_stream(&format!("<message><body>{body}"));
        s.resize(2 * config.max_stanza_bytes, b'y');
        let mut p = StreamParser::default();
        let e = s.chunks(4096).find_map(|c| p.feed(c).err()).unwrap();
        assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
    }
}

#[test]
fn garbage_before_the_header() {
    for input in [
        &b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"[..],
        b"hello<stream:stream>",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        assert_eq!(condition_of(input), StreamErrorCondition::NotWellFormed);
    }
    assert_eq!(
        condition_of(b"\xFE\xFF\x00<"),
        StreamErrorCondition::UnsupportedEncoding
    );
    assert_eq!(
        condition_of(b"\xFF\xFE<\x00"),
        StreamErrorCondition::UnsupportedEncoding
    );
    assert_eq!(
        condition_of(b"\xEF\xBB<stream"),
        StreamErrorCondition::UnsupportedEncoding
    );
}

#[test]
fn invalid_utf8_is_unsupported_encoding() {
    for bad in [
        &b"\xFF"[..],
        b"\xC0\xAF",
        b"\xED\xA0\x80",
        b"\xF8\x88\x80\x80\x80",
        b"\xE2\x82",
    ] {
        let mut body = in_stream("<message><body>");
        body.extend_from_slice(bad);
        body.extend_from_slice(b"</body></message>");
        assert_eq!(
            condition_of(&body),
            StreamErrorCondition::UnsupportedEncoding
        );

        let mut attr = in_stream("<message to='");
        attr.extend_from_slice(bad);
        attr.extend_from_slice(b"'/>");
        assert_eq!(
            condition_of(&attr),
            StreamErrorCondition::UnsupportedEncoding
        );
    }
    assert_eq!(
        condition_of(&in_stream("<message>\u{1}</message>")),
        StreamErrorCondition::NotWellFormed
    );
    assert_eq!(
        condition_of(&in_stream("<message to='\u{FFFF}'/>")),
        StreamErrorCondition::NotWellFormed
    );
    assert_eq!(
        condition_of(b"<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>"),
        StreamErrorCondition::UnsupportedEncoding
    );
    assert_eq!(
        condition_of(b"<?xml version='1.1'?><stream:stream>"),
        StreamErrorCondition::BadFormat
    );
}

#[test]
fn unknown_namespaces() {
    assert_eq!(
        condition_of(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streamz'>"
        ),
        StreamErrorCondition::InvalidNamespace
    );
    assert_eq!(
        condition_of(
            b"<stream:stream xmlns='jabber:foo' xmlns:stream='http://etherx.jabber.org/streams'>"
        ),
        StreamErrorCondition::InvalidNamespace
    );
    assert_eq!(
        condition_of(b"<stream xmlns='jabber:client'>"),
        StreamErrorCondition::InvalidNamespace
    );
    assert_eq!(
        condition_of(b"<html><body>"),
        StreamErrorCondition::InvalidNamespace
    );
    assert_eq!(
        condition_of(b"<stream:stream xmlns='jabber:client'>"),
        StreamErrorCondition::BadNamespacePrefix
    );
    assert_eq!(
        condition_of(
            b"<stream:stream xmlns='http://etherx.jabber.org/streams' xmlns:stream='http://etherx.jabber.org/streams'>"
        ),
        StreamErrorCondition::InvalidNamespace
    );
}

#[test]
fn unsupported_first_level_elements() {
    for el in [
        "<foo xmlns='urn:bar'/>",
        "<query xmlns='jabber:client'/>",
        "<message xmlns='jabber:server'/>",
        "<stream:foo/>",
        "<stream:stream>",
        "<x/>",
    ] {
        assert_eq!(
            condition_of(&in_stream(el)),
            StreamErrorCondition::UnsupportedStanzaType,
            "{el}"
        );
    }
    // refused at the start tag, before the content arrives
    let mut p = StreamParser::default();
    p.feed(HEADER.as_bytes()).unwrap();
    assert_eq!(
        p.feed(b"<foo xmlns='urn:bar'>").unwrap_err().condition,
        StreamErrorCondition::UnsupportedStanzaType
    );
    // stream errors and features from the peer are accepted
    let ev = parse_all(&in_stream(
        "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
    ))
    .unwrap();
    assert!(stanzas(&ev)[0].is("error", ns::STREAMS));
}

#[test]
fn nesting_depth_is_bounded() {
    let config = ParserConfig::client();
    let ok = format!(
        "<message>{}{}</message>",
        "<a>".repeat(config.max_depth - 1),
        "</a>".repeat(config.max_depth - 1)
    );
    assert_eq!(parse_all(&in_stream(&ok)).unwrap().len(), 2);
    let deep = format!("<message>{}", "<a>".repeat(config.max_depth));
    assert_eq!(
        condition_of(&in_stream(&deep)),
        StreamErrorCondition::PolicyViolation
    );
    let deeper = format!("<message>{}", "<a>".repeat(100_000));
    assert_eq!(
        condition_of(&in_stream(&deeper)),
        StreamErrorCondition::PolicyViolation
    );
}

#[test]
fn element_count_is_bounded() {
    let config = ParserConfig::client();
    let ok = format!(
        "<message>{}</message>",
        "<a/>".repeat(config.max_elements - 1)
    );
    assert_eq!(parse_all(&in_stream(&ok)).unwrap().len(), 2);
    let many = format!("<message>{}</message>", "<a/>".repeat(config.max_elements));
    assert_eq!(
        condition_of(&in_stream(&many)),
        StreamErrorCondition::PolicyViolation
    );
    // the count is per first-level element
    let two = format!("{ok}{ok}");
    assert_eq!(parse_all(&in_stream(&two)).unwrap().len(), 3);
}

#[test]
fn attributes_are_bounded() {
    let config = ParserConfig::client();
    let attrs = |n: usize| (0..n).map(|i| format!(" a{i}='v'")).collect::<String>();
    let ok = format!("<message{}/>", attrs(config.max_attributes));
    assert_eq!(parse_all(&in_stream(&ok)).unwrap().len(), 2);
    let many = format!("<message{}/>", attrs(config.max_attributes + 1));
    assert_eq!(
        condition_of(&in_stream(&many)),
        StreamErrorCondition::PolicyViolation
    );
    let long = format!(
        "<message to='{}'/>",
        "x".repeat(config.max_attribute_bytes + 1)
    );
    assert_eq!(
        condition_of(&in_stream(&long)),
        StreamErrorCondition::PolicyViolation
    );
    let decls = (0..=config.max_namespace_bindings)
        .map(|i| format!(" xmlns:p{i}='urn:{i}'"))
        .collect::<String>();
    let config = ParserConfig {
        max_attributes: 1000,
        ..ParserConfig::client()
    };
    let mut p = StreamParser::new(config);
    p.feed(HEADER.as_bytes()).unwrap();
    assert_eq!(
        p.feed(format!("<message{decls}/>").as_bytes())
            .unwrap_err()
            .condition,
        StreamErrorCondition::PolicyViolation
    );
}

#[test]
fn malformed_markup() {
    for (input, expected) in [
        ("<message></presence>", StreamErrorCondition::NotWellFormed),
        (
            "<message a='1' a='2'/>",
            StreamErrorCondition::NotWellFormed,
        ),
        (
            "<message xmlns:p='urn:x' xmlns:q='urn:x' p:a='1' q:a='2'/>",
            StreamErrorCondition::NotWellFormed,
        ),
        ("<message a=1/>", StreamErrorCondition::NotWellFormed),
        ("<message a/>", StreamErrorCondition::NotWellFormed),
        ("<message a='<'/>", StreamErrorCondition::NotWellFormed),
        ("<1message/>", StreamErrorCondition::NotWellFormed),
        ("< message/>", StreamErrorCondition::NotWellFormed),
        ("<>", StreamErrorCondition::NotWellFormed),
        ("</>", StreamErrorCondition::NotWellFormed),
        ("</message>", StreamErrorCondition::NotWellFormed),
        (
            "<message><body>]]></body></message>",
            StreamErrorCondition::NotWellFormed,
        ),
        (
            "<message><![CDAT[x]]></message>",
            StreamErrorCondition::NotWellFormed,
        ),
        ("<![CDATA[x]]>", StreamErrorCondition::BadFormat),
        ("hello", StreamErrorCondition::BadFormat),
        ("<p:message/>", StreamErrorCondition::BadNamespacePrefix),
        (
            "<message p:a='1'/>",
            StreamErrorCondition::BadNamespacePrefix,
        ),
        (
            "<message xmlns:p=''/>",
            StreamErrorCondition::BadNamespacePrefix,
        ),
        (
            "<message xmlns:xml='urn:x'/>",
            StreamErrorCondition::BadNamespacePrefix,
        ),
        ("<xmlns:message/>", StreamErrorCondition::BadNamespacePrefix),
        ("</stream:streamx>", StreamErrorCondition::NotWellFormed),
    ] {
        assert_eq!(condition_of(&in_stream(input)), expected, "{input}");
    }
    assert_eq!(
        condition_of(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='2.0'>"
        ),
        StreamErrorCondition::UnsupportedVersion
    );
    assert_eq!(
        condition_of(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='one'>"
        ),
        StreamErrorCondition::UnsupportedVersion
    );
}

#[test]
fn errors_are_sticky() {
    let mut p = StreamParser::default();
    let e = p.feed(b"<!-- x -->").unwrap_err();
    assert_eq!(p.feed(HEADER.as_bytes()).unwrap_err(), e);
    assert_eq!(p.error(), Some(&e));
    // feed_into keeps what was complete before the error
    let mut p = StreamParser::default();
    let mut out = Vec::new();
    let input = in_stream("<presence/><!-- x -->");
    assert!(p.feed_into(&input, &mut out).is_err());
    assert_eq!(out.len(), 2);
}

// ---------------------------------------------------------------------------------------
// Fuzz-style robustness: random and mutated input, sliced at random, never panics; the
// outcome does not depend on slicing and memory stays within the limit.

fn outcome(
    config: &ParserConfig,
    chunks: Vec<&[u8]>,
) -> (Vec<StreamEvent>, Option<StreamErrorCondition>) {
    let (events, error) = parse_chunks(config, chunks);
    (events, error.map(|e| e.condition))
}

#[test]
fn random_bytes_never_panic() {
    let config = ParserConfig {
        max_stanza_bytes: 512,
        max_depth: 8,
        ..ParserConfig::client()
    };
    let mut rng = StdRng::seed_from_u64(0x1b5);
    let alphabet = b"<>/?!='\"&;#x:[]- \n\tabcstream";
    for _ in 0..3000 {
        let len = rng.random_range(0..600);
        let bytes: Vec<u8> = if rng.random_bool(0.5) {
            (0..len).map(|_| rng.random()).collect()
        } else {
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect()
        };
        let mut input = if rng.random_bool(0.5) {
            HEADER.as_bytes().to_vec()
        } else {
            Vec::new()
        };
        input.extend_from_slice(&bytes);
        let whole = outcome(&config, vec![&input]);
        let sliced = outcome(&config, random_chunks(&mut rng, &input));
        assert_eq!(whole, sliced, "{}", String::from_utf8_lossy(&input));
    }
}

#[test]
fn mutated_streams_never_panic() {
    let config = ParserConfig::client();
    let base = client_stream();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let interesting = b"<>/?!='\"&;#\xFF\xC3\x00]";
    for _ in 0..3000 {
        let mut input = base.clone();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..input.len());
            match rng.random_range(0..4) {
                0 => input[at] = interesting[rng.random_range(0..interesting.len())],
                1 => input[at] = rng.random(),
                2 => {
                    input.remove(at);
                }
                _ => input.insert(at, interesting[rng.random_range(0..interesting.len())]),
            }
        }
        let whole = outcome(&config, vec![&input]);
        let sliced = outcome(&config, random_chunks(&mut rng, &input));
        assert_eq!(whole, sliced, "{}", String::from_utf8_lossy(&input));
        // Whatever was accepted serializes to XML that parses back to the same tree.
        for s in stanzas(&whole.0) {
            let again = parse_all(&in_stream(&s.to_xml()));
            assert_eq!(
                again.map(|ev| stanzas(&ev).first().map(|e| (*e).clone())),
                Ok(Some(s.clone()))
            );
        }
    }
}

/// `parse_stanza` with a parser of its own, as before the per-thread parser was kept.
fn parse_stanza_fresh(xml: &str) -> Option<Element> {
    let mut parser = primed_parser()?;
    parse_with(&mut parser, xml).0
}

#[test]
fn parse_stanza_reuses_its_parser_only_between_stanzas() {
    let inputs = [
        "<message to='a@b' type='chat'><body>one &amp; two</body></message>",
        // Two stanzas: not one stanza.
        "<message><body>1</body></message><message><body>2</body></message>",
        "<presence/>",
        // An element left open after a stanza, then the same parser must not see it.
        "<message><body>x</body></message><message><bo",
        "<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
        // Not well-formed.
        "<message><body></message>",
        "<message xmlns:p='urn:p'><p:x p:y='1'/></message>",
        // The stream closed after a stanza.
        "<message><body>last</body></message></stream:stream>",
        "<message to='c@d'><body>after close</body></message>",
        // Restricted XML and data outside a stanza.
        "<?xml version='1.0'?><message/>",
        "text<message/>",
        "<!-- c --><message/>",
        "",
        "<message><thread>t</thread></message>",
    ];
    // Twice over, so every input also follows every other.
    for xml in inputs.iter().chain(inputs.iter()) {
        assert_eq!(parse_stanza(xml), parse_stanza_fresh(xml), "{xml}");
    }
    assert!(parse_stanza(inputs[0]).is_some());
    assert!(parse_stanza(inputs[1]).is_none());
    assert!(parse_stanza(inputs[5]).is_none());
    assert!(parse_stanza(inputs[9]).is_none());
    // The unfinished element of input 3 is not carried into the next call.
    let after = parse_stanza("<presence/>").expect("a fresh stanza after a partial one");
    assert_eq!(after.name(), "presence");
    // Namespace prefixes declared inside one stanza are not in scope in the next.
    assert!(parse_stanza("<message><p:x/></message>").is_none());
}
