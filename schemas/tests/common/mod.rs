//! Sample events covering every event type and variant, with the edge cases that matter
//! on the wire: unicode, empty and large texts, absent optional fields.

#![allow(dead_code, clippy::unwrap_used)]

use imbus_core::*;

pub fn gw() -> GatewayId {
    GatewayId::new("xmpp-gw.eu-1").unwrap()
}

pub fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

pub fn at(micros: i64) -> Timestamp {
    Timestamp::from_micros(micros)
}

pub fn full(s: &str) -> FullJid {
    FullJid::new(s).unwrap()
}

pub fn bare(s: &str) -> BareJid {
    BareJid::new(s).unwrap()
}

pub fn jid(s: &str) -> Jid {
    Jid::new(s).unwrap()
}

fn scram(hash: ScramHash, seed: u8) -> ScramCredentials {
    let n = hash.output_len();
    ScramCredentials::new(
        hash,
        (0..16).map(|i| seed.wrapping_add(i)).collect(),
        4096,
        vec![seed; n],
        vec![seed.wrapping_mul(3); n],
    )
    .unwrap()
}

pub fn credentials(seed: u8) -> Credentials {
    Credentials::new(scram(ScramHash::Sha1, seed), scram(ScramHash::Sha256, seed)).unwrap()
}

/// One sample per event type and variant.
pub fn samples() -> Vec<Event> {
    let large = "x".repeat(1 << 20);
    let unicode = "Grüße, 你好, مرحبا, 🙂 — <&> \"quoted\"";
    vec![
        StanzaReceived {
            event_id: Uuid::from_u128(0x0b65_76a6_5bec_4dd3_8d40_01d4_0c81_27aa),
            gateway_id: gw(),
            session_id: sid("sess-1"),
            received_at: at(1_700_000_000_123_456),
            sender: full("alice@example.com/phone"),
            recipient: Some(jid("bob@example.com")),
            kind: StanzaKind::Message,
            stanza_type: Some("chat".to_owned()),
            stanza_id: Some("m1".to_owned()),
            xml: format!(
                "<message from='alice@example.com/phone' to='bob@example.com' type='chat' id='m1'><body>{unicode}</body></message>"
            ),
        }
        .into(),
        StanzaReceived {
            event_id: Uuid::from_u128(2),
            gateway_id: gw(),
            session_id: sid("sess-2"),
            received_at: at(-1),
            sender: full("zoë@example.com/téléphone"),
            recipient: None,
            kind: StanzaKind::Presence,
            stanza_type: None,
            stanza_id: None,
            xml: String::new(),
        }
        .into(),
        StanzaReceived {
            event_id: Uuid::from_u128(3),
            gateway_id: gw(),
            session_id: sid("sess-3"),
            received_at: at(i64::MAX),
            sender: full("alice@example.com/desk"),
            recipient: Some(jid("conference.example.com")),
            kind: StanzaKind::Iq,
            stanza_type: Some(String::new()),
            stanza_id: Some(String::new()),
            xml: large.clone(),
        }
        .into(),
        SessionEvent::Bound(SessionState {
            jid: full("alice@example.com/phone"),
            gateway_id: gw(),
            session_id: sid("sess-1"),
            at: at(10),
            presence: SessionPresence::unavailable(),
            features: ClientFeatures::default(),
        })
        .into(),
        SessionEvent::Updated(SessionState {
            jid: full("alice@example.com/phone"),
            gateway_id: gw(),
            session_id: sid("sess-1"),
            at: at(11),
            presence: SessionPresence {
                availability: Availability::DoNotDisturb,
                priority: -128,
                status: Some(unicode.to_owned()),
            },
            features: ClientFeatures {
                carbons: true,
                roster_requested: true,
            },
        })
        .into(),
        SessionEvent::Updated(SessionState {
            jid: full("alice@example.com/phone"),
            gateway_id: gw(),
            session_id: sid("sess-1"),
            at: at(12),
            presence: SessionPresence {
                availability: Availability::ExtendedAway,
                priority: 127,
                status: Some(String::new()),
            },
            features: ClientFeatures {
                carbons: false,
                roster_requested: true,
            },
        })
        .into(),
        SessionEvent::Closed(SessionClosed {
            jid: full("alice@example.com/phone"),
            gateway_id: gw(),
            session_id: sid("sess-1"),
            at: at(13),
            reason: CloseReason::Replaced,
            detail: Some("conflict".to_owned()),
        })
        .into(),
        SessionEvent::Closed(SessionClosed {
            jid: full("alice@example.com/desk"),
            gateway_id: gw(),
            session_id: sid("sess-3"),
            at: at(14),
            reason: CloseReason::ConnectionLost,
            detail: None,
        })
        .into(),
        Delivery {
            event_id: Uuid::from_u128(20),
            source_event_id: Uuid::from_u128(1),
            to: full("bob@example.com/laptop"),
            gateway_id: gw(),
            session_id: sid("sess-9"),
            xml: format!("<message><body>{unicode}</body></message>"),
            delayed_from: Some(at(1_700_000_000_000_000)),
            copies: Vec::new(),
        }
        .into(),
        Delivery {
            event_id: Uuid::from_u128(21),
            source_event_id: Uuid::from_u128(1),
            to: full("bob@example.com/laptop"),
            gateway_id: gw(),
            session_id: sid("sess-9"),
            xml: large.clone(),
            delayed_from: None,
            copies: Vec::new(),
        }
        .into(),
        Delivery {
            event_id: Uuid::from_u128(22),
            source_event_id: Uuid::from_u128(2),
            to: full("bob@example.com/laptop"),
            gateway_id: gw(),
            session_id: sid("sess-9"),
            xml: format!(
                "<message type='groupchat' to='bob@example.com/laptop'><body>{unicode}</body></message>"
            ),
            delayed_from: None,
            copies: vec![
                DeliveryCopy {
                    event_id: Uuid::from_u128(23),
                    to: full("carol@example.com/phone"),
                    session_id: sid("sess-10"),
                },
                DeliveryCopy {
                    event_id: Uuid::from_u128(24),
                    to: full("dave@example.com/tablet"),
                    session_id: sid("sess-11"),
                },
            ],
        }
        .into(),
        OfflineEvent::Stored(OfflineStored {
            message_event_id: Uuid::from_u128(1),
            recipient: bare("bob@example.com"),
            sender: jid("alice@example.com/phone"),
            stored_at: at(30),
            xml: format!("<message><body>{unicode}</body></message>"),
        })
        .into(),
        OfflineEvent::Delivered(OfflineDelivered {
            message_event_id: Uuid::from_u128(1),
            recipient: bare("bob@example.com"),
            at: at(31),
        })
        .into(),
        OfflineEvent::Expired(OfflineExpired {
            message_event_id: Uuid::from_u128(4),
            recipient: bare("bob@example.com"),
            at: at(32),
        })
        .into(),
        AccountEvent::Created(AccountState {
            jid: bare("alice@example.com"),
            credentials: credentials(7),
            at: at(40),
            by: "imbus admin".to_owned(),
        })
        .into(),
        AccountEvent::Changed(AccountState {
            jid: bare("alice@example.com"),
            credentials: credentials(200),
            at: at(41),
            by: "alice@example.com".to_owned(),
        })
        .into(),
        AccountEvent::Deleted(AccountDeleted {
            jid: bare("alice@example.com"),
            at: at(42),
            by: String::new(),
        })
        .into(),
        RosterChanged {
            user: bare("alice@example.com"),
            contact: bare("bob@example.com"),
            name: Some("Bob 🙂".to_owned()),
            groups: vec!["Friends".to_owned(), "Équipe".to_owned(), String::new()],
            subscription: Subscription::Both,
            ask_out: false,
            pending_in: None,
            approved: false,
            at: at(50),
        }
        .into(),
        RosterChanged {
            user: bare("alice@example.com"),
            contact: bare("carol@remote.example"),
            name: None,
            groups: vec![],
            subscription: Subscription::None,
            ask_out: true,
            pending_in: Some("<presence type='subscribe' from='carol@remote.example'/>".to_owned()),
            approved: true,
            at: at(51),
        }
        .into(),
        RosterChanged {
            user: bare("alice@example.com"),
            contact: bare("dave@example.com"),
            name: Some(String::new()),
            groups: vec![],
            subscription: Subscription::Remove,
            ask_out: false,
            pending_in: None,
            approved: false,
            at: at(52),
        }
        .into(),
        ComplianceRecord {
            event_id: Uuid::from_u128(1),
            recipient: bare("bob@example.com"),
            sender: jid("alice@example.com/phone"),
            direction: Direction::Inbound,
            timestamp: at(1_700_000_000_123_456),
            message_type: MessageType::Chat,
            thread: Some("t-1".to_owned()),
            subject: None,
            body: Some(unicode.to_owned()),
            room: None,
            nickname: None,
            xml: format!("<message><body>{unicode}</body></message>"),
            origin: Origin::Local,
        }
        .into(),
        ComplianceRecord {
            event_id: Uuid::from_u128(60),
            recipient: bare("carol@example.com"),
            sender: jid("alice@example.com/phone"),
            direction: Direction::Outbound,
            timestamp: at(61),
            message_type: MessageType::Groupchat,
            thread: None,
            subject: Some("Q3 planning".to_owned()),
            body: Some(large),
            room: Some(bare("planning@conference.example.com")),
            nickname: Some("Alice ✨".to_owned()),
            xml: String::new(),
            origin: Origin::Intercluster,
        }
        .into(),
        ComplianceRecord {
            event_id: Uuid::from_u128(62),
            recipient: bare("dave@example.com"),
            sender: jid("example.com"),
            direction: Direction::Inbound,
            timestamp: at(63),
            message_type: MessageType::Headline,
            thread: None,
            subject: None,
            body: Some(String::new()),
            room: None,
            nickname: None,
            xml: "<message type='headline'/>".to_owned(),
            origin: Origin::Sip,
        }
        .into(),
        ComplianceRecord {
            event_id: Uuid::from_u128(64),
            recipient: bare("dave@example.com"),
            sender: jid("eve@federated.example/x"),
            direction: Direction::Inbound,
            timestamp: at(65),
            message_type: MessageType::Normal,
            thread: None,
            subject: None,
            body: None,
            room: None,
            nickname: None,
            xml: "<message/>".to_owned(),
            origin: Origin::Federated,
        }
        .into(),
        ConfigChanged {
            key: ConfigKey::new("offline.enabled").unwrap(),
            value: Some("false".to_owned()),
            at: at(70),
            by: "admin@example.com".to_owned(),
        }
        .into(),
        ConfigChanged {
            key: ConfigKey::new("sip.failure_text").unwrap(),
            value: None,
            at: at(71),
            by: "imbus admin".to_owned(),
        }
        .into(),
        UserDataChanged {
            user: bare("alice@example.com"),
            namespace: "vcard-temp".to_owned(),
            xml: Some(format!(
                "<vCard xmlns='vcard-temp'><FN>{unicode}</FN><NICKNAME>Alice ✨</NICKNAME></vCard>"
            )),
            at: at(80),
        }
        .into(),
        UserDataChanged {
            user: bare("alice@example.com"),
            namespace: "urn:xmpp:blocking".to_owned(),
            xml: None,
            at: at(81),
        }
        .into(),
        UserDataChanged {
            user: bare("zoë@example.com"),
            namespace: "storage:bookmarks".to_owned(),
            xml: Some(String::new()),
            at: at(-82),
        }
        .into(),
        ArchivedMessage {
            archive_id: Uuid::from_u128(0x1901),
            event_id: Uuid::from_u128(0x1902),
            owner: bare("alice@example.com"),
            with: jid("bob@example.com/desk"),
            direction: Direction::Inbound,
            timestamp: at(90),
            xml: format!("<message xmlns='jabber:client' type='chat'><body>{unicode}</body></message>"),
        }
        .into(),
        ArchivedMessage {
            archive_id: Uuid::from_u128(0x1903),
            event_id: Uuid::from_u128(0x1904),
            owner: bare("zoë@example.com"),
            with: jid("bob@example.com"),
            direction: Direction::Outbound,
            timestamp: at(-91),
            xml: String::new(),
        }
        .into(),
        Room::new(
            bare("empty@conference.example.com"),
            RoomConfig::default(),
            at(2000),
        )
        .into(),
        {
            let mut room = Room::new(
                bare("zoë-team@conference.example.com"),
                RoomConfig {
                    name: Some(format!("Team {unicode}")),
                    description: Some(String::new()),
                    persistent: true,
                    public: false,
                    members_only: true,
                    password: Some("sécret".to_owned()),
                    moderated: true,
                    max_users: Some(50),
                    whois: Whois::Anyone,
                    history_length: Some(0),
                    change_subject: false,
                    allow_invites: true,
                },
                at(-2001),
            );
            room.locked = true;
            room.set_affiliation(bare("alice@example.com"), Affiliation::Owner);
            room.set_affiliation(bare("bob@example.com"), Affiliation::Admin);
            room.set_affiliation(bare("carol@example.com"), Affiliation::Member);
            room.set_affiliation(bare("mallory@example.com"), Affiliation::Outcast);
            room.occupants.insert(
                "Alice ✨".to_owned(),
                Occupant {
                    jid: full("alice@example.com/desk"),
                    gateway_id: gw(),
                    session_id: sid("s-1"),
                    service: "conference.example.com".to_owned(),
                    role: Role::Moderator,
                    presence: "<show xmlns='jabber:client'>away</show>".to_owned(),
                    joined_at: at(2002),
                },
            );
            room.occupants.insert(
                "carol".to_owned(),
                Occupant {
                    jid: full("carol@example.com/phone"),
                    gateway_id: gw(),
                    session_id: sid("s-2"),
                    service: "rooms.example.com".to_owned(),
                    role: Role::Visitor,
                    presence: String::new(),
                    joined_at: at(2003),
                },
            );
            room.subject = Some(Subject {
                text: unicode.to_owned(),
                nick: Some("Alice ✨".to_owned()),
                at: at(2004),
            });
            room.history.push(HistoryMessage {
                nick: "carol".to_owned(),
                jid: full("carol@example.com/phone"),
                xml: format!("<message xmlns='jabber:client' type='groupchat'><body>{unicode}</body></message>"),
                at: at(2005),
            });
            room
        }
        .into(),
    ]
}
