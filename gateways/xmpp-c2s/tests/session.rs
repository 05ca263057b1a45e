//! Client-to-server sessions driven through complete transcripts, with an independent
//! SASL client (the `sasl` crate of the xmpp-rs project) on the other side.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use imbus_core::Credentials;
use imbus_core::jid::{BareJid, DomainPart, FullJid};
use imbus_xmpp_auth::{AuthConfig, Mechanism, MechanismPolicy, SaslCondition, ServerSecret};
use imbus_xmpp_c2s::{
    AccountChange, AccountOutcome, Action, BindAnswer, ConflictPolicy, Input, ResumeState, Session,
    SessionConfig, Transport,
};
use imbus_xmpp_stream::{
    Element, IqType, MessageType, ParserConfig, StanzaKind, StreamErrorCondition, StreamEvent,
    StreamParser,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sasl::client::Mechanism as _;
use sasl::common::ChannelBinding;

const ITERATIONS: u32 = 4096;
const PASSWORD: &str = "pencil";
const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const SM: &str = "urn:xmpp:sm:3";
const HEADER: &str = "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
const WS_OPEN: &str =
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>";

fn juliet_credentials() -> &'static Credentials {
    static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();
    CREDENTIALS.get_or_init(|| {
        imbus_xmpp_auth::derive(PASSWORD, ITERATIONS, &mut StdRng::seed_from_u64(7)).unwrap()
    })
}

fn config() -> SessionConfig {
    let auth = AuthConfig::new(
        ServerSecret::new(b"a stable deployment secret".to_vec()).unwrap(),
        ITERATIONS,
    )
    .unwrap();
    SessionConfig::new(DomainPart::new("example.com").unwrap().into_owned(), auth)
}

fn juliet() -> BareJid {
    BareJid::new("juliet@example.com").unwrap()
}

const TLS: Transport = Transport::Tcp {
    tls_active: true,
    direct_tls: false,
};
const PLAIN_TCP: Transport = Transport::Tcp {
    tls_active: false,
    direct_tls: false,
};

/// A session plus a client-side reader of everything the server writes.
struct Harness {
    session: Session,
    now: Instant,
    reader: StreamParser,
    websocket: bool,
}

impl Harness {
    fn new(config: SessionConfig, transport: Transport) -> Self {
        let websocket = matches!(transport, Transport::WebSocket { .. });
        let mut session = Session::with_rng(Arc::new(config), transport, StdRng::seed_from_u64(42));
        let now = Instant::now();
        assert_eq!(
            session.start(now),
            vec![Action::ArmTimer(Duration::from_secs(30))]
        );
        let reader = StreamParser::new(if websocket {
            ParserConfig::websocket()
        } else {
            ParserConfig::client()
        });
        Self {
            session,
            now,
            reader,
            websocket,
        }
    }

    fn input(&mut self, input: Input<'_>) -> Vec<Action> {
        self.session.handle(input, self.now)
    }

    fn feed(&mut self, xml: &str) -> Vec<Action> {
        self.input(Input::Bytes(xml.as_bytes()))
    }

    /// Feeds one byte at a time and collects every action.
    fn feed_bytewise(&mut self, xml: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        for byte in xml.as_bytes() {
            actions.extend(self.session.handle(Input::Bytes(&[*byte]), self.now));
        }
        actions
    }

    /// Parses what the server sent, as a client would.
    fn read(&mut self, actions: &[Action]) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        for action in actions {
            if let Action::Send(bytes) = action {
                if self.websocket {
                    events.extend(self.reader.feed_message(bytes).unwrap());
                } else {
                    events.extend(self.reader.feed(bytes).unwrap());
                }
            }
        }
        events
    }

    /// The first-level elements the server sent.
    fn elements(&mut self, actions: &[Action]) -> Vec<Element> {
        self.read(actions)
            .into_iter()
            .filter_map(|e| match e {
                StreamEvent::Stanza(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Opens the stream and returns the features.
    fn open(&mut self) -> Element {
        self.reader.reset();
        let actions = if self.websocket {
            self.feed(WS_OPEN)
        } else {
            self.feed(HEADER)
        };
        let events = self.read(&actions);
        assert!(
            matches!(&events[0], StreamEvent::StreamOpen(open) if open.from.as_deref() == Some("example.com")),
            "{events:?}"
        );
        let StreamEvent::Stanza(features) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(features.name(), "features");
        features.clone()
    }

    /// Authenticates as juliet with SCRAM-SHA-256 and restarts the stream.
    fn authenticate(&mut self) {
        let features = self.open();
        assert!(features.child("mechanisms", SASL).is_some(), "{features}");
        let mut client = scram("juliet", PASSWORD);
        let success = scram_exchange(self, &mut client);
        let additional = decode(&success.text());
        client.success(&additional).unwrap();
        let features = self.open();
        assert!(
            features
                .child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
                .is_some()
        );
    }

    /// Authenticates and binds `resource`.
    fn establish(&mut self, resource: &str) -> FullJid {
        self.authenticate();
        let actions = self.feed(&format!(
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ));
        let [Action::BindRequested { full_jid }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        let full_jid = full_jid.clone();
        let actions = self.input(Input::Bind(BindAnswer::Free));
        assert!(actions.contains(&Action::Bound {
            full_jid: full_jid.clone(),
            replaces: false
        }));
        // The authentication deadline is over: its timer is dropped, not left to fire.
        assert!(actions.contains(&Action::DisarmTimer), "{actions:?}");
        self.elements(&actions);
        full_jid
    }

    /// Enables Stream Management, with or without resumption.
    fn enable_sm(&mut self, resume: bool) -> Element {
        let actions = self.feed(&format!(
            "<enable xmlns='urn:xmpp:sm:3' resume='{resume}'/>"
        ));
        let elements = self.elements(&actions);
        assert_eq!(elements.len(), 1);
        assert!(elements[0].is("enabled", SM), "{}", elements[0]);
        elements[0].clone()
    }
}

fn scram(
    user: &str,
    password: &str,
) -> sasl::client::mechanisms::Scram<sasl::common::scram::Sha256> {
    sasl::client::mechanisms::Scram::<sasl::common::scram::Sha256>::new(
        user,
        password.to_owned(),
        ChannelBinding::None,
    )
    .unwrap()
}

fn encode(data: &[u8]) -> String {
    imbus_xmpp_auth::encode_payload(data)
}

fn decode(text: &str) -> Vec<u8> {
    imbus_xmpp_auth::decode_payload(text).unwrap()
}

/// Runs a SCRAM-SHA-256 exchange up to its final server element (success or failure).
fn scram_exchange(
    h: &mut Harness,
    client: &mut sasl::client::mechanisms::Scram<sasl::common::scram::Sha256>,
) -> Element {
    let auth = format!(
        "<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
        encode(&client.initial())
    );
    let actions = h.feed(&auth);
    let [
        Action::LookupCredentials {
            username,
            jid,
            derives_key,
        },
    ] = actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    assert!(!derives_key, "SCRAM: the client derives the key");
    assert_eq!(username, "juliet");
    assert_eq!(jid, &juliet());
    let actions = h.input(Input::Credentials(Some(juliet_credentials().clone())));
    let challenge = h.elements(&actions).remove(0);
    assert!(challenge.is("challenge", SASL), "{challenge}");
    let response = client.response(&decode(&challenge.text())).unwrap();
    let actions = h.feed(&format!(
        "<response xmlns='{SASL}'>{}</response>",
        encode(&response)
    ));
    let elements = h.elements(&actions);
    let last = elements.last().unwrap().clone();
    if last.is("success", SASL) {
        assert!(actions.contains(&Action::Authenticated {
            jid: juliet(),
            mechanism: Mechanism::ScramSha256
        }));
    }
    last
}

fn stream_error_of(actions: &[Action]) -> StreamErrorCondition {
    match actions.last() {
        Some(Action::Close { error: Some(error) }) => error.condition,
        other => panic!("expected a close with a stream error, got {other:?} in {actions:?}"),
    }
}

fn sent_text(actions: &[Action]) -> String {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(String::from_utf8(b.clone()).unwrap()),
            _ => None,
        })
        .collect()
}

fn published(actions: &[Action]) -> (u64, Element, StanzaKind) {
    match actions {
        [Action::Publish { seq, stanza, kind }] => (*seq, stanza.clone(), *kind),
        _ => panic!("expected one publish, got {actions:?}"),
    }
}

#[test]
fn complete_login_transcript_byte_by_byte() {
    let mut h = Harness::new(config(), PLAIN_TCP);

    // Stream header: STARTTLS is required and the only feature besides the limits.
    let actions = h.feed_bytewise(HEADER);
    let events = h.read(&actions);
    assert!(matches!(&events[0], StreamEvent::StreamOpen(_)));
    let StreamEvent::Stanza(features) = &events[1] else {
        panic!("{events:?}")
    };
    let starttls = features
        .child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
        .unwrap();
    assert!(
        starttls
            .child("required", "urn:ietf:params:xml:ns:xmpp-tls")
            .is_some()
    );
    assert!(features.child("mechanisms", SASL).is_none());

    // STARTTLS.
    let actions = h.feed_bytewise("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert_eq!(actions.last(), Some(&Action::StartTls));
    let proceed = h.elements(&actions);
    assert!(proceed[0].is("proceed", "urn:ietf:params:xml:ns:xmpp-tls"));
    assert!(
        h.input(Input::TlsEstablished {
            channel_bindings: vec![]
        })
        .is_empty()
    );
    assert!(h.session.is_encrypted());

    // Restarted stream: SASL mechanisms, SCRAM-SHA-256 first, no PLAIN.
    h.reader.reset();
    let actions = h.feed_bytewise(HEADER);
    let features = h.elements(&actions).remove(0);
    let mechanisms: Vec<String> = features
        .child("mechanisms", SASL)
        .unwrap()
        .children()
        .map(|m| m.text())
        .collect();
    assert_eq!(mechanisms, ["SCRAM-SHA-256", "SCRAM-SHA-1"]);

    // SCRAM-SHA-256 with the independent client, byte by byte.
    let mut client = scram("juliet", PASSWORD);
    let auth = format!(
        "<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
        encode(&client.initial())
    );
    let actions = h.feed_bytewise(&auth);
    assert!(
        matches!(&actions[..], [Action::LookupCredentials { username, .. }] if username == "juliet")
    );
    let actions = h.input(Input::Credentials(Some(juliet_credentials().clone())));
    let challenge = h.elements(&actions).remove(0);
    let response = client.response(&decode(&challenge.text())).unwrap();
    let actions = h.feed_bytewise(&format!(
        "<response xmlns='{SASL}'>{}</response>",
        encode(&response)
    ));
    let success = h.elements(&actions).remove(0);
    assert!(success.is("success", SASL));
    client.success(&decode(&success.text())).unwrap();
    assert_eq!(h.session.user(), Some(&juliet()));

    // Restarted stream: bind, legacy session and stream management.
    h.reader.reset();
    let actions = h.feed_bytewise(HEADER);
    let features = h.elements(&actions).remove(0);
    assert!(
        features
            .child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .is_some()
    );
    assert!(
        features
            .child("session", "urn:ietf:params:xml:ns:xmpp-session")
            .is_some()
    );
    assert!(features.child("sm", SM).is_some());
    assert!(features.child("mechanisms", SASL).is_none());

    // Bind the client's resource.
    let actions = h.feed_bytewise(
        "<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>balcony</resource></bind></iq>",
    );
    let full = FullJid::new("juliet@example.com/balcony").unwrap();
    assert_eq!(
        actions,
        vec![Action::BindRequested {
            full_jid: full.clone()
        }]
    );
    let actions = h.input(Input::Bind(BindAnswer::Free));
    assert_eq!(
        actions.last(),
        Some(&Action::Bound {
            full_jid: full.clone(),
            replaces: false
        })
    );
    let result = h.elements(&actions).remove(0);
    assert_eq!(result.attr("type"), Some("result"));
    assert_eq!(result.attr("id"), Some("bind_1"));
    assert_eq!(result.text(), "");
    assert_eq!(
        result
            .child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .unwrap()
            .child("jid", "urn:ietf:params:xml:ns:xmpp-bind")
            .unwrap()
            .text(),
        "juliet@example.com/balcony"
    );

    // Legacy session establishment: an empty result.
    let actions = h.feed_bytewise(
        "<iq type='set' id='sess_1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
    );
    let result = h.elements(&actions).remove(0);
    assert_eq!(result.attr("type"), Some("result"));
    assert_eq!(result.attr("id"), Some("sess_1"));
    assert_eq!(result.children().count(), 0);

    // A message, with a forged from, is published with the true sender.
    let actions = h.feed_bytewise(
        "<message to='romeo@example.net' from='romeo@example.net/orchard' type='chat' id='m1'>\
         <body>Wherefore art thou?</body></message>",
    );
    let (seq, stanza, kind) = published(&actions);
    // The bind and session requests were stanzas 1 and 2 of the stream.
    assert_eq!(seq, 3);
    assert_eq!(kind, StanzaKind::Message(MessageType::Chat));
    assert_eq!(stanza.attr("from"), Some("juliet@example.com/balcony"));
    assert_eq!(stanza.attr("to"), Some("romeo@example.net"));
    assert_eq!(
        stanza.child("body", "jabber:client").unwrap().text(),
        "Wherefore art thou?"
    );
    assert!(h.input(Input::Published { seq }).is_empty());

    // A delivery is written to the client.
    let delivery = Element::new("message", "jabber:client")
        .with_attr("from", "romeo@example.net/orchard")
        .with_attr("to", "juliet@example.com/balcony")
        .with_attr("type", "chat")
        .with_child(Element::new("body", "jabber:client").with_text("Here, love"));
    let actions = h.input(Input::Deliver(delivery.clone()));
    assert_eq!(h.elements(&actions), vec![delivery]);

    // The client closes the stream; the server closes its side.
    let actions = h.feed_bytewise("</stream:stream>");
    assert_eq!(sent_text(&actions), "</stream:stream>");
    assert_eq!(actions.last(), Some(&Action::Close { error: None }));
    assert!(h.session.is_closed());
}

#[test]
fn bind_without_a_resource_gets_a_generated_one() {
    let mut h = Harness::new(config(), TLS);
    h.authenticate();
    let actions =
        h.feed("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    let [Action::BindRequested { full_jid }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(full_jid.to_bare(), juliet());
    assert!(full_jid.resource().as_str().starts_with("imbus-"));
    assert!(full_jid.resource().as_str().len() > 10);
    let full_jid = full_jid.clone();
    let actions = h.input(Input::Bind(BindAnswer::Free));
    let result = h.elements(&actions).remove(0);
    assert_eq!(result.attr("type"), Some("result"));
    assert_eq!(h.session.jid(), Some(&full_jid));
}

#[test]
fn resource_conflicts_follow_the_policy() {
    // Replace: the new session binds and the gateway ends the old one.
    let mut h = Harness::new(config(), TLS);
    h.authenticate();
    h.feed("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>");
    let actions = h.input(Input::Bind(BindAnswer::InUse));
    assert!(actions.contains(&Action::Bound {
        full_jid: FullJid::new("juliet@example.com/r").unwrap(),
        replaces: true
    }));

    // The replaced session is ended with a conflict stream error.
    let actions = h.input(Input::Shutdown(imbus_xmpp_stream::StreamError::new(
        StreamErrorCondition::Conflict,
    )));
    assert_eq!(stream_error_of(&actions), StreamErrorCondition::Conflict);

    // Refuse: a client resource in use gets a conflict stanza error and may try again.
    let mut refuse = config();
    refuse.resource_conflict = ConflictPolicy::Refuse;
    let mut h = Harness::new(refuse, TLS);
    h.authenticate();
    h.feed("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>");
    let actions = h.input(Input::Bind(BindAnswer::InUse));
    let error = h.elements(&actions).remove(0);
    assert_eq!(error.attr("type"), Some("error"));
    assert_eq!(error.attr("id"), Some("b"));
    assert!(error.to_xml().contains("conflict"), "{error}");
    assert!(h.session.jid().is_none());

    // A generated resource in use is replaced by a fresh one.
    let actions =
        h.feed("<iq type='set' id='c'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    let [Action::BindRequested { full_jid: first }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    let first = first.clone();
    let actions = h.input(Input::Bind(BindAnswer::InUse));
    let [Action::BindRequested { full_jid: second }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_ne!(&first, second);
    let second = second.clone();
    let actions = h.input(Input::Bind(BindAnswer::Free));
    assert!(actions.contains(&Action::Bound {
        full_jid: second,
        replaces: false
    }));
}

#[test]
fn plain_is_refused_without_tls() {
    let mut config = config();
    config.require_tls = false;
    config.mechanisms = MechanismPolicy {
        plain: true,
        require_channel_binding: false,
    };
    let mut h = Harness::new(config, PLAIN_TCP);
    let features = h.open();
    let starttls = features
        .child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
        .unwrap();
    assert!(
        starttls
            .child("required", "urn:ietf:params:xml:ns:xmpp-tls")
            .is_none()
    );
    let mechanisms: Vec<String> = features
        .child("mechanisms", SASL)
        .unwrap()
        .children()
        .map(|m| m.text())
        .collect();
    assert!(!mechanisms.iter().any(|m| m == "PLAIN"), "{mechanisms:?}");

    let actions = h.feed(&format!(
        "<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>",
        encode(b"\0juliet\0pencil")
    ));
    let failure = h.elements(&actions).remove(0);
    assert!(failure.is("failure", SASL));
    assert!(
        failure.child("encryption-required", SASL).is_some(),
        "{failure}"
    );
    assert!(actions.contains(&Action::AuthFailed {
        username: None,
        condition: SaslCondition::EncryptionRequired
    }));
    assert!(!h.session.is_closed());

    // With TLS required (the default), no mechanism works before STARTTLS.
    let mut h = Harness::new(self::config(), PLAIN_TCP);
    h.open();
    let actions = h.feed(&format!(
        "<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
        encode(&scram("juliet", PASSWORD).initial())
    ));
    let failure = h.elements(&actions).remove(0);
    assert!(
        failure.child("encryption-required", SASL).is_some(),
        "{failure}"
    );
}

#[test]
fn plain_over_tls_works_when_enabled() {
    let mut config = config();
    config.mechanisms.plain = true;
    let mut h = Harness::new(config, TLS);
    let features = h.open();
    assert!(features.to_xml().contains(">PLAIN<"), "{features}");
    let actions = h.feed(&format!(
        "<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>",
        encode(b"\0juliet\0pencil")
    ));
    assert!(
        matches!(
            &actions[..],
            [Action::LookupCredentials {
                derives_key: true,
                ..
            }]
        ),
        "PLAIN: the server derives the key from the password: {actions:?}"
    );
    let actions = h.input(Input::Credentials(Some(juliet_credentials().clone())));
    assert!(h.elements(&actions)[0].is("success", SASL));
    assert!(actions.contains(&Action::Authenticated {
        jid: juliet(),
        mechanism: Mechanism::Plain
    }));
}

#[test]
fn wrong_password_fails_and_the_client_may_retry() {
    let mut h = Harness::new(config(), TLS);
    h.open();
    let mut client = scram("juliet", "wrong");
    let failure = scram_exchange(&mut h, &mut client);
    assert!(failure.is("failure", SASL));
    assert!(failure.child("not-authorized", SASL).is_some(), "{failure}");
    assert!(!h.session.is_closed());

    // The retry with the right password succeeds on the same stream.
    let mut client = scram("juliet", PASSWORD);
    let success = scram_exchange(&mut h, &mut client);
    assert!(success.is("success", SASL), "{success}");
    client.success(&decode(&success.text())).unwrap();
}

#[test]
fn failed_attempts_are_limited() {
    let mut config = config();
    config.mechanisms.plain = true;
    let mut h = Harness::new(config, TLS);
    h.open();
    for attempt in 1..=3 {
        let actions = h.feed(&format!(
            "<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>",
            encode(b"\0juliet\0bad")
        ));
        assert!(matches!(&actions[..], [Action::LookupCredentials { .. }]));
        let actions = h.input(Input::Credentials(Some(juliet_credentials().clone())));
        assert!(actions.contains(&Action::AuthFailed {
            username: Some("juliet".to_owned()),
            condition: SaslCondition::NotAuthorized
        }));
        if attempt < 3 {
            assert!(!h.session.is_closed());
        } else {
            assert_eq!(
                stream_error_of(&actions),
                StreamErrorCondition::PolicyViolation
            );
            assert!(sent_text(&actions).contains("<not-authorized/>"));
        }
    }
    assert!(h.session.is_closed());
    assert!(h.feed("<presence/>").is_empty());
}

#[test]
fn unknown_users_and_failed_lookups_fail_cleanly() {
    let mut h = Harness::new(config(), TLS);
    h.open();
    let mut client = scram("nobody", PASSWORD);
    let auth = format!(
        "<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
        encode(&client.initial())
    );
    h.feed(&auth);
    let actions = h.input(Input::LookupFailed);
    let failure = h.elements(&actions).remove(0);
    assert!(
        failure.child("temporary-auth-failure", SASL).is_some(),
        "{failure}"
    );
    assert!(!h.session.is_closed());
}

#[test]
fn authzid_impersonation_is_refused() {
    let mut config = config();
    config.mechanisms.plain = true;
    let mut h = Harness::new(config, TLS);
    h.open();
    let mut actions = h.feed(&format!(
        "<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>",
        encode(b"romeo@example.com\0juliet\0pencil")
    ));
    if matches!(&actions[..], [Action::LookupCredentials { .. }]) {
        actions = h.input(Input::Credentials(Some(juliet_credentials().clone())));
    }
    let failure = h.elements(&actions).remove(0);
    assert!(
        failure.child("invalid-authzid", SASL).is_some(),
        "{failure}"
    );
    assert!(h.session.user().is_none());
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Authenticated { .. }))
    );
}

#[test]
fn stanzas_before_authentication_are_not_authorized() {
    for early in [
        "<message to='romeo@example.net'><body>hi</body></message>",
        "<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
        "<r xmlns='urn:xmpp:sm:3'/>",
    ] {
        let mut h = Harness::new(config(), TLS);
        h.open();
        let actions = h.feed(early);
        assert_eq!(
            stream_error_of(&actions),
            StreamErrorCondition::NotAuthorized
        );
        assert!(sent_text(&actions).ends_with("</stream:stream>"));
        assert!(!actions.iter().any(|a| matches!(a, Action::Publish { .. })));
    }

    // Authenticated but not bound: a stanza error, nothing published.
    let mut h = Harness::new(config(), TLS);
    h.authenticate();
    let actions = h.feed("<message to='romeo@example.net' id='x'><body>hi</body></message>");
    let error = h.elements(&actions).remove(0);
    assert_eq!(error.attr("type"), Some("error"));
    assert!(error.to_xml().contains("not-authorized"));
    assert!(!h.session.is_closed());
}

#[test]
fn forged_or_missing_from_is_replaced_and_bad_stanzas_are_answered() {
    let mut h = Harness::new(config(), TLS);
    let jid = h.establish("desk");
    for (xml, kind) in [
        (
            "<presence from='admin@example.com/x'/>",
            StanzaKind::Presence(imbus_xmpp_stream::PresenceType::Available),
        ),
        (
            "<iq type='get' id='r1' from='juliet@example.com/other'><query xmlns='jabber:iq:roster'/></iq>",
            StanzaKind::Iq(IqType::Get),
        ),
        (
            "<message to='romeo@example.net'><body>no from</body></message>",
            StanzaKind::Message(MessageType::Normal),
        ),
    ] {
        let (_, stanza, k) = published(&h.feed(xml));
        assert_eq!(stanza.attr("from"), Some(jid.as_str()));
        assert_eq!(k, kind);
    }

    // An invalid iq and a malformed address are answered, not published.
    let actions = h.feed("<iq type='get' id='bad'/>");
    let error = h.elements(&actions).remove(0);
    assert_eq!(error.attr("type"), Some("error"));
    let actions = h.feed("<message to='@@bad@@'><body>x</body></message>");
    assert!(!actions.iter().any(|a| matches!(a, Action::Publish { .. })));
    assert!(sent_text(&actions).contains("jid-malformed"));
}

#[test]
fn unauthenticated_streams_time_out() {
    let mut h = Harness::new(config(), TLS);
    h.open();
    let start = h.now;
    h.now = start + Duration::from_secs(10);
    assert_eq!(
        h.input(Input::Timeout),
        vec![Action::ArmTimer(Duration::from_secs(20))]
    );
    h.now = start + Duration::from_secs(30);
    let actions = h.input(Input::Timeout);
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::ConnectionTimeout
    );

    // A bound session no longer has the deadline.
    let mut h = Harness::new(config(), TLS);
    h.establish("desk");
    h.now += Duration::from_secs(3600);
    assert!(h.input(Input::Timeout).is_empty());
    assert!(!h.session.is_closed());
}

#[test]
fn stream_management_acknowledges_only_what_the_log_stored() {
    let mut h = Harness::new(config(), TLS);
    h.establish("desk");
    let enabled = h.enable_sm(false);
    assert_eq!(enabled.attr("resume"), None);

    let (seq1, ..) = published(&h.feed("<message to='a@example.com'><body>1</body></message>"));
    // The client asks; the stanza is not stored yet, so no answer.
    assert!(h.feed("<r xmlns='urn:xmpp:sm:3'/>").is_empty());
    assert_eq!(h.session.handled(), Some(0));
    let actions = h.input(Input::Published { seq: seq1 });
    assert_eq!(sent_text(&actions), "<a xmlns='urn:xmpp:sm:3' h='1'/>");

    // Out-of-order confirmations: h only counts stanzas without a gap.
    let (seq2, ..) = published(&h.feed("<message to='a@example.com'><body>2</body></message>"));
    let (seq3, ..) = published(&h.feed("<message to='b@example.com'><body>3</body></message>"));
    assert!(h.feed("<r xmlns='urn:xmpp:sm:3'/>").is_empty());
    assert!(h.input(Input::Published { seq: seq3 }).is_empty());
    assert_eq!(h.session.handled(), Some(1));
    let actions = h.input(Input::Published { seq: seq2 });
    assert_eq!(sent_text(&actions), "<a xmlns='urn:xmpp:sm:3' h='3'/>");
    // Confirmations of unknown or repeated stanzas change nothing.
    assert!(h.input(Input::Published { seq: seq2 }).is_empty());
    assert!(h.input(Input::Published { seq: 99 }).is_empty());

    // Stanzas answered by the server itself are handled at once.
    h.feed("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
    let actions = h.feed("<r xmlns='urn:xmpp:sm:3'/>");
    assert_eq!(sent_text(&actions), "<a xmlns='urn:xmpp:sm:3' h='4'/>");

    // Outbound stanzas wait for the client's acknowledgement.
    for i in 0..3 {
        h.input(Input::Deliver(
            Element::new("message", "jabber:client").with_attr("id", i.to_string()),
        ));
    }
    assert_eq!(h.session.unacked().count(), 3);
    assert!(h.feed("<a xmlns='urn:xmpp:sm:3' h='2'/>").is_empty());
    let left: Vec<_> = h
        .session
        .unacked()
        .map(|e| e.attr("id").unwrap().to_owned())
        .collect();
    assert_eq!(left, ["2"]);
    let actions = h.feed("<a xmlns='urn:xmpp:sm:3' h='5'/>");
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::UndefinedCondition
    );
    assert!(sent_text(&actions).contains("handled-count-too-high"));
}

#[test]
fn the_unacknowledged_queue_is_bounded_and_requests_acks() {
    let mut config = config();
    config.max_unacked = 4;
    config.sm_request_every = 2;
    let mut h = Harness::new(config, TLS);
    h.establish("desk");
    h.enable_sm(false);
    let message = || {
        Element::new("message", "jabber:client").with_child(Element::new("body", "jabber:client"))
    };
    let actions = h.input(Input::Deliver(message()));
    assert!(!sent_text(&actions).contains("<r "));
    let actions = h.input(Input::Deliver(message()));
    assert!(sent_text(&actions).ends_with("<r xmlns='urn:xmpp:sm:3'/>"));
    h.input(Input::Deliver(message()));
    h.input(Input::Deliver(message()));
    let actions = h.input(Input::Deliver(message()));
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::ResourceConstraint
    );
}

#[test]
fn too_many_unconfirmed_publishes_close_the_stream() {
    let mut config = config();
    config.max_in_flight = 2;
    let mut h = Harness::new(config, TLS);
    h.establish("desk");
    h.feed("<presence/>");
    h.feed("<presence/>");
    assert_eq!(h.session.in_flight(), 2);
    let actions = h.feed("<presence/>");
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::ResourceConstraint
    );
}

#[test]
fn a_broken_session_is_resumed_by_a_new_stream() {
    let mut old = Harness::new(config(), TLS);
    let jid = old.establish("desk");
    let enabled = old.enable_sm(true);
    assert_eq!(enabled.attr("resume"), Some("true"));
    assert_eq!(enabled.attr("max"), Some("300"));
    let id = enabled.attr("id").unwrap().to_owned();
    assert_eq!(old.session.resumption_id(), Some(id.as_str()));
    let (seq, ..) = published(&old.feed("<message to='a@example.com'><body>x</body></message>"));
    old.input(Input::Published { seq });
    for i in 0..3 {
        old.input(Input::Deliver(
            Element::new("message", "jabber:client").with_attr("id", i.to_string()),
        ));
    }
    old.feed("<a xmlns='urn:xmpp:sm:3' h='1'/>");
    old.input(Input::Closed);
    let state: ResumeState = old.session.resume_state().unwrap();
    assert_eq!(state.handled, 1);
    assert_eq!(state.acked, 1);
    assert_eq!(state.unacked.len(), 2);

    // A new connection authenticates and resumes; the client had received 2 stanzas.
    let mut new = Harness::new(config(), TLS);
    new.authenticate();
    let actions = new.feed(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='2'/>"
    ));
    assert_eq!(
        actions,
        vec![Action::ResumeRequested {
            previd: id.clone(),
            h: 2
        }]
    );
    let actions = new.input(Input::Resume(Some(state.clone())));
    assert_eq!(
        actions.last(),
        Some(&Action::Resumed {
            full_jid: jid.clone()
        })
    );
    let elements = new.elements(&actions);
    assert!(elements[0].is("resumed", SM));
    assert_eq!(elements[0].attr("h"), Some("1"));
    assert_eq!(elements[0].attr("previd"), Some(id.as_str()));
    assert_eq!(elements.len(), 2);
    assert_eq!(elements[1].attr("id"), Some("2"));
    assert_eq!(new.session.jid(), Some(&jid));

    // Counting continues where the old stream stopped.
    let (seq, stanza, _) =
        published(&new.feed("<message to='a@example.com'><body>y</body></message>"));
    assert_eq!(stanza.attr("from"), Some(jid.as_str()));
    new.input(Input::Published { seq });
    let actions = new.feed("<r xmlns='urn:xmpp:sm:3'/>");
    assert_eq!(sent_text(&actions), "<a xmlns='urn:xmpp:sm:3' h='2'/>");

    // Another user cannot take the session over.
    let mut other = config();
    other.mechanisms.plain = true;
    let mut h = Harness::new(other, TLS);
    h.open();
    h.feed(&format!(
        "<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>",
        encode(b"\0romeo\0pencil")
    ));
    let romeo = juliet_credentials().clone();
    let actions = h.input(Input::Credentials(Some(romeo)));
    assert!(h.elements(&actions)[0].is("success", SASL));
    h.open();
    h.feed(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='2'/>"
    ));
    let actions = h.input(Input::Resume(Some(state)));
    let failed = h.elements(&actions).remove(0);
    assert!(failed.is("failed", SM));
    assert!(failed.to_xml().contains("item-not-found"));
    assert!(h.session.jid().is_none());
}

#[test]
fn websocket_open_and_close() {
    let mut h = Harness::new(config(), Transport::WebSocket { secure: true });
    let actions = h.feed(WS_OPEN);
    let text = sent_text(&actions);
    assert!(
        text.starts_with("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'"),
        "{text}"
    );
    // Every message is one complete document: the reader parses them one by one.
    let events = h.read(&actions);
    let StreamEvent::Stanza(features) = &events[1] else {
        panic!("{events:?}")
    };
    assert!(
        features
            .child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
            .is_none()
    );
    assert!(features.child("mechanisms", SASL).is_some());

    // Authenticate, restart with a new <open/>, bind, exchange a stanza, close.
    let mut client = scram("juliet", PASSWORD);
    let success = scram_exchange(&mut h, &mut client);
    client.success(&decode(&success.text())).unwrap();
    h.open();
    let actions = h.feed("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>");
    assert!(matches!(&actions[..], [Action::BindRequested { .. }]));
    h.input(Input::Bind(BindAnswer::Free));
    let delivery = Element::new("message", "jabber:client").with_attr("id", "d");
    let actions = h.input(Input::Deliver(delivery.clone()));
    assert_eq!(
        sent_text(&actions),
        "<message xmlns='jabber:client' id='d'/>"
    );
    let actions = h.feed("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
    assert_eq!(
        sent_text(&actions),
        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
    );
    assert_eq!(actions.last(), Some(&Action::Close { error: None }));

    // A WebSocket without TLS is refused while TLS is required.
    let mut h = Harness::new(config(), Transport::WebSocket { secure: false });
    let actions = h.feed(WS_OPEN);
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::PolicyViolation
    );
}

#[test]
fn protocol_violations_get_stream_errors() {
    // Cleartext pipelined after <starttls/> is an injection attempt.
    let mut h = Harness::new(config(), PLAIN_TCP);
    h.open();
    let actions = h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><presence/>");
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::PolicyViolation
    );
    assert!(!actions.contains(&Action::StartTls) || h.session.is_closed());

    // Bytes while the TLS handshake is pending.
    let mut h = Harness::new(config(), PLAIN_TCP);
    h.open();
    h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    let actions = h.feed("<auth/>");
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::PolicyViolation
    );

    // Restricted XML, a wrong host and an old version.
    let mut h = Harness::new(config(), TLS);
    h.open();
    let actions = h.feed("<!-- comment -->");
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::RestrictedXml
    );

    let mut h = Harness::new(config(), TLS);
    let actions = h.feed(&HEADER.replace("example.com", "example.org"));
    assert_eq!(stream_error_of(&actions), StreamErrorCondition::HostUnknown);
    // The header was answered before the error.
    assert!(sent_text(&actions).starts_with("<?xml version='1.0'?><stream:stream"));

    let mut h = Harness::new(config(), TLS);
    let actions = h.feed(&HEADER.replace("to='example.com' version='1.0'", "to='example.com'"));
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::UnsupportedVersion
    );

    // STARTTLS on an encrypted stream fails and closes.
    let mut h = Harness::new(config(), TLS);
    h.open();
    let actions = h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert!(sent_text(&actions).starts_with("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
    assert_eq!(actions.last(), Some(&Action::Close { error: None }));

    // Unknown first-level elements after binding.
    let mut h = Harness::new(config(), TLS);
    h.establish("desk");
    let actions = h.feed("<foo xmlns='urn:example:unknown'/>");
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::UnsupportedStanzaType
    );
}

#[test]
fn stanzas_answered_locally_cannot_grow_the_queue_behind_an_unconfirmed_one() {
    let mut config = config();
    config.max_in_flight = 3;
    let mut h = Harness::new(config, TLS);
    h.establish("desk");
    published(&h.feed("<presence/>"));
    // Invalid stanzas are answered at once but wait behind the unconfirmed presence.
    h.feed("<iq type='get' id='1'/>");
    h.feed("<iq type='get' id='2'/>");
    assert_eq!(h.session.in_flight(), 3);
    let actions = h.feed("<iq type='get' id='3'/>");
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::ResourceConstraint
    );
}

#[test]
fn sessions_from_the_default_constructor_use_distinct_ids() {
    let config = Arc::new(self::config());
    let mut ids = std::collections::HashSet::new();
    for _ in 0..4 {
        let mut session = Session::new(config.clone(), TLS);
        let actions = session.handle(Input::Bytes(HEADER.as_bytes()), Instant::now());
        let text = sent_text(&actions);
        let id = text
            .split(" id='")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 32);
        assert!(ids.insert(id));
    }
}

#[test]
fn channel_binding_of_a_direct_tls_connection_enables_plus_mechanisms() {
    let mut h = Harness::new(
        config(),
        Transport::Tcp {
            tls_active: true,
            direct_tls: true,
        },
    );
    let binding = imbus_xmpp_auth::ChannelBinding::new(
        imbus_xmpp_auth::ChannelBindingType::TlsExporter,
        vec![0x11; 32],
    );
    assert!(
        h.input(Input::TlsEstablished {
            channel_bindings: vec![binding]
        })
        .is_empty()
    );
    let features = h.open();
    let mechanisms: Vec<String> = features
        .child("mechanisms", SASL)
        .unwrap()
        .children()
        .map(|m| m.text())
        .collect();
    assert_eq!(mechanisms[0], "SCRAM-SHA-256-PLUS");
    let cb = features
        .child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
        .unwrap();
    assert_eq!(
        cb.children().next().unwrap().attr("type"),
        Some("tls-exporter")
    );
    assert!(
        features
            .child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
            .is_none()
    );
}

// ----- In-Band Registration (XEP-0077) -----

const REGISTER: &str = "jabber:iq:register";
const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

fn registration_config() -> SessionConfig {
    let mut config = config();
    config.registration = true;
    config
}

fn register_set(id: &str, username: &str, password: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='{REGISTER}'>\
         <username>{username}</username><password>{password}</password></query></iq>"
    )
}

/// The condition and text of the one error reply to `id` the server sent.
fn stanza_error(h: &mut Harness, actions: &[Action], id: &str) -> (String, String) {
    let elements = h.elements(actions);
    let [reply] = elements.as_slice() else {
        panic!("expected one reply, got {elements:?}")
    };
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    assert_eq!(reply.attr("id"), Some(id), "{reply}");
    let error = reply.child("error", "jabber:client").unwrap();
    let condition = error
        .children()
        .find(|c| c.namespace() == STANZAS && c.name() != "text")
        .unwrap()
        .name()
        .to_owned();
    let text = error
        .child("text", STANZAS)
        .map(|t| t.text())
        .unwrap_or_default();
    (condition, text)
}

fn account_change(actions: &[Action]) -> AccountChange {
    match actions {
        [Action::ChangeAccount(change)] => change.clone(),
        _ => panic!("expected one account change, got {actions:?}"),
    }
}

#[test]
fn registration_is_off_by_default() {
    assert!(!config().registration);
    let mut h = Harness::new(config(), TLS);
    let features = h.open();
    assert!(features.child("register", REGISTER_FEATURE).is_none());
    for xml in [
        format!("<iq type='get' id='g'><query xmlns='{REGISTER}'/></iq>"),
        register_set("g", "romeo", "a long password"),
    ] {
        let actions = h.feed(&xml);
        assert_eq!(stanza_error(&mut h, &actions, "g").0, "service-unavailable");
        assert!(!h.session.is_closed());
    }
    // Authentication still works on the same stream, and so does the refusal once bound.
    let mut client = scram("juliet", PASSWORD);
    assert!(scram_exchange(&mut h, &mut client).is("success", SASL));

    let mut h = Harness::new(config(), TLS);
    h.establish("balcony");
    let actions = h.feed(&register_set("p", "juliet", "a new password"));
    assert_eq!(stanza_error(&mut h, &actions, "p").0, "service-unavailable");
    let actions = h.feed(&format!(
        "<iq type='set' id='r'><query xmlns='{REGISTER}'><remove/></query></iq>"
    ));
    assert_eq!(stanza_error(&mut h, &actions, "r").0, "service-unavailable");
    assert!(!h.session.is_closed());
}

#[test]
fn accounts_are_registered_after_tls_and_before_authentication() {
    let mut h = Harness::new(registration_config(), PLAIN_TCP);
    let features = h.open();
    assert!(features.child("register", REGISTER_FEATURE).is_none());
    // Like authentication, registration needs TLS.
    let actions = h.feed(&register_set("early", "romeo", "a long password"));
    let (condition, text) = stanza_error(&mut h, &actions, "early");
    assert_eq!(condition, "not-allowed");
    assert!(text.contains("TLS"), "{text}");
    let actions = h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert_eq!(actions.last(), Some(&Action::StartTls));
    h.input(Input::TlsEstablished {
        channel_bindings: vec![],
    });
    let features = h.open();
    assert!(
        features.child("register", REGISTER_FEATURE).is_some(),
        "{features}"
    );

    // The form.
    let actions = h.feed(&format!(
        "<iq type='get' id='form'><query xmlns='{REGISTER}'/></iq>"
    ));
    let form = h.elements(&actions).remove(0);
    assert_eq!(form.attr("type"), Some("result"));
    assert_eq!(form.attr("id"), Some("form"));
    let query = form.child("query", REGISTER).unwrap();
    assert!(
        !query
            .child("instructions", REGISTER)
            .unwrap()
            .text()
            .is_empty()
    );
    assert!(query.child("username", REGISTER).is_some());
    assert!(query.child("password", REGISTER).is_some());
    assert!(query.child("registered", REGISTER).is_none());

    // Requests the session refuses itself.
    for (xml, needle) in [
        (
            register_set("bad", "romeo", "short"),
            "at least 8 characters",
        ),
        (register_set("bad", "", "a long password"), "user name"),
        (
            register_set("bad", "ro meo", "a long password"),
            "user name",
        ),
        (
            register_set("bad", "romeo@example.com", "a long password"),
            "user name",
        ),
        (
            format!(
                "<iq type='set' id='bad'><query xmlns='{REGISTER}'><username>romeo</username></query></iq>"
            ),
            "required",
        ),
    ] {
        let actions = h.feed(&xml);
        let (condition, text) = stanza_error(&mut h, &actions, "bad");
        assert_eq!(condition, "not-acceptable", "{xml}");
        assert!(text.contains(needle), "{xml}: {text}");
    }
    let actions = h.feed(&format!(
        "<iq type='set' id='rm'><query xmlns='{REGISTER}'><remove/></query></iq>"
    ));
    assert_eq!(stanza_error(&mut h, &actions, "rm").0, "not-authorized");

    // A valid request: the localpart is normalized, the password never printed.
    let actions = h.feed(&register_set("new", "Romeo", "a long password"));
    let change = account_change(&actions);
    let AccountChange::Create { jid, password } = &change else {
        panic!("{change:?}")
    };
    assert_eq!(jid.as_str(), "romeo@example.com");
    assert_eq!(password.as_str(), "a long password");
    assert!(!format!("{actions:?}").contains("a long password"));
    // One request at a time.
    let actions = h.feed(&register_set("again", "mercutio", "a long password"));
    assert_eq!(
        stanza_error(&mut h, &actions, "again").0,
        "unexpected-request"
    );
    let actions = h.input(Input::AccountChanged(AccountOutcome::Done));
    let result = h.elements(&actions).remove(0);
    assert_eq!(result.attr("type"), Some("result"));
    assert_eq!(result.attr("id"), Some("new"));
    assert!(!result.to_xml().contains("password"));

    // The gateway's refusals.
    for (outcome, condition) in [
        (AccountOutcome::Exists, "conflict"),
        (AccountOutcome::RateLimited, "resource-constraint"),
        (AccountOutcome::NotAllowed, "not-allowed"),
        (
            AccountOutcome::NotAcceptable("too weak".to_owned()),
            "not-acceptable",
        ),
        (AccountOutcome::Failed, "internal-server-error"),
    ] {
        account_change(&h.feed(&register_set("n2", "mercutio", "a long password")));
        let actions = h.input(Input::AccountChanged(outcome));
        assert_eq!(stanza_error(&mut h, &actions, "n2").0, condition);
    }
    assert!(!h.session.is_closed());

    // The client then logs in on the same stream.
    let mut client = scram("juliet", PASSWORD);
    assert!(scram_exchange(&mut h, &mut client).is("success", SASL));
}

#[test]
fn a_bound_user_changes_its_password_and_cancels_its_account() {
    let mut h = Harness::new(registration_config(), TLS);
    h.establish("balcony");

    let actions = h.feed(&format!(
        "<iq type='get' id='form' to='example.com'><query xmlns='{REGISTER}'/></iq>"
    ));
    let form = h.elements(&actions).remove(0);
    assert_eq!(form.attr("type"), Some("result"));
    assert_eq!(form.attr("from"), Some("example.com"));
    let query = form.child("query", REGISTER).unwrap();
    assert!(query.child("registered", REGISTER).is_some());
    assert_eq!(query.child("username", REGISTER).unwrap().text(), "juliet");

    // Someone else's password, or a short one.
    let actions = h.feed(&register_set("other", "romeo", "a long password"));
    assert_eq!(stanza_error(&mut h, &actions, "other").0, "not-authorized");
    let actions = h.feed(&register_set("short", "juliet", "1234"));
    assert_eq!(stanza_error(&mut h, &actions, "short").0, "not-acceptable");

    // The password change.
    let actions = h.feed(&register_set("pw", "Juliet", "a new password"));
    let AccountChange::ChangePassword { jid, password } = account_change(&actions) else {
        panic!("{actions:?}")
    };
    assert_eq!(jid, juliet());
    assert_eq!(password.as_str(), "a new password");
    let actions = h.input(Input::AccountChanged(AccountOutcome::Done));
    let result = h.elements(&actions).remove(0);
    assert_eq!(
        (result.attr("type"), result.attr("id")),
        (Some("result"), Some("pw"))
    );
    assert!(!h.session.is_closed());

    // A cancellation that fails leaves the stream open.
    let remove = format!("<iq type='set' id='rm'><query xmlns='{REGISTER}'><remove/></query></iq>");
    assert_eq!(
        account_change(&h.feed(&remove)),
        AccountChange::Remove { jid: juliet() }
    );
    let actions = h.input(Input::AccountChanged(AccountOutcome::NotFound));
    assert_eq!(stanza_error(&mut h, &actions, "rm").0, "item-not-found");
    assert!(!h.session.is_closed());

    // A cancellation that succeeds is answered, then the stream ends.
    account_change(&h.feed(&remove));
    let actions = h.input(Input::AccountChanged(AccountOutcome::Done));
    let text = sent_text(&actions);
    assert!(text.starts_with("<iq"), "{text}");
    assert!(
        text.contains("type='result'") || text.contains("type=\"result\""),
        "{text}"
    );
    assert_eq!(
        stream_error_of(&actions),
        StreamErrorCondition::NotAuthorized
    );
    assert!(h.session.is_closed());
}

#[test]
fn registration_queries_to_other_entities_are_published() {
    let mut h = Harness::new(registration_config(), TLS);
    h.establish("balcony");
    let (_, stanza, _) = published(&h.feed(&format!(
        "<iq type='get' id='svc' to='gateway.example.net'><query xmlns='{REGISTER}'/></iq>"
    )));
    assert_eq!(stanza.attr("to"), Some("gateway.example.net"));
}
