//! Router decisions, driven through a loop that plays the log: outputs routed to a
//! partition come back as inbound inputs, deliveries are collected per session.

use std::collections::{HashMap, VecDeque};

use imbus_core::{
    BareJid, ClientFeatures, FullJid, GatewayId, Jid, OfflineEvent, SessionClosed, SessionEvent,
    SessionId, SessionPresence, SessionState, StanzaKind, StanzaReceived, Subscription, Timestamp,
    Uuid,
};

use super::*;

struct World {
    router: Router,
    /// Every output id seen, to check they never repeat (`None`: the test reprocesses
    /// on purpose).
    ids: Option<std::collections::HashSet<Uuid>>,
    delivered: HashMap<String, Vec<String>>,
    changelog: Vec<Output>,
    sessions: HashMap<String, SessionId>,
    /// Parse every inbound stanza from its XML, as a router that did not forward it.
    forget_forwarded: bool,
    /// Stanzas sent so far (their event ids are numbered, so two plays compare equal).
    sent: u128,
}

fn t() -> Timestamp {
    Timestamp::from_micros(1_700_000_000_000_000)
}

impl World {
    fn new(users: &[&str]) -> Self {
        let mut router = Router::new(RouterConfig::new(BareJid::new("example.com").unwrap()));
        for user in users {
            let jid = BareJid::new(&format!("{user}@example.com")).unwrap();
            router.state_mut().accounts.insert(jid);
        }
        Self {
            router,
            ids: Some(Default::default()),
            delivered: HashMap::new(),
            changelog: Vec::new(),
            sessions: HashMap::new(),
            forget_forwarded: false,
            sent: 0,
        }
    }

    fn run(&mut self, input: Input) {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            if self.forget_forwarded {
                self.router.forget_forwarded();
            }
            for output in self.router.handle(input, t()) {
                let id = match &output {
                    Output::Route(s) if s.kind != StanzaKind::Message => Some(s.event_id),
                    Output::Deliver(d) => Some(d.event_id),
                    _ => None,
                };
                if let (Some(ids), Some(id)) = (self.ids.as_mut(), id) {
                    assert!(ids.insert(id), "output id {id} produced twice: {output:?}");
                }
                match output {
                    Output::Route(stanza) => queue.push_back(Input::Inbound(stanza)),
                    Output::Deliver(d) => self
                        .delivered
                        .entry(d.to.as_str().to_owned())
                        .or_default()
                        .push(d.xml),
                    other => self.changelog.push(other),
                }
            }
        }
    }

    fn bind(&mut self, full: &str) {
        let jid = FullJid::new(full).unwrap();
        let session_id = SessionId::new(format!("s-{}", self.sessions.len())).unwrap();
        self.sessions.insert(full.to_owned(), session_id.clone());
        self.run(Input::Session(SessionEvent::Bound(SessionState {
            jid,
            gateway_id: GatewayId::new("gw1").unwrap(),
            session_id,
            at: t(),
            presence: SessionPresence::unavailable(),
            features: ClientFeatures::default(),
        })));
    }

    fn close(&mut self, full: &str) {
        let session_id = self.sessions[full].clone();
        self.run(Input::Session(SessionEvent::Closed(SessionClosed {
            jid: FullJid::new(full).unwrap(),
            gateway_id: GatewayId::new("gw1").unwrap(),
            session_id,
            at: t(),
            reason: imbus_core::CloseReason::ClientClosed,
            detail: None,
        })));
    }

    /// The client `from` sends `xml` (the gateway has stamped `from`).
    fn send(&mut self, from: &str, xml: &str) {
        let stanza = self.stanza(from, xml);
        self.run(Input::Outbound(stanza));
    }

    /// `xml` as the gateway publishes it from the client `from`.
    fn stanza(&mut self, from: &str, xml: &str) -> StanzaReceived {
        let mut element = parse_stanza(xml).expect("test stanza parses");
        element.set_attr("from", from);
        let kind = match element.name() {
            "message" => StanzaKind::Message,
            "presence" => StanzaKind::Presence,
            _ => StanzaKind::Iq,
        };
        self.sent += 1;
        StanzaReceived {
            event_id: Uuid::from_u128(0x5e17_0000_0000 + self.sent),
            gateway_id: GatewayId::new("gw1").unwrap(),
            session_id: self.sessions[from].clone(),
            received_at: t(),
            sender: FullJid::new(from).unwrap(),
            recipient: element.attr("to").map(|to| Jid::new(to).unwrap()),
            kind,
            stanza_type: element.attr("type").map(str::to_owned),
            stanza_id: element.attr("id").map(str::to_owned),
            xml: element.to_xml(),
        }
    }

    fn take(&mut self, full: &str) -> Vec<String> {
        self.delivered.remove(full).unwrap_or_default()
    }

    fn item(&self, user: &str, contact: &str) -> Option<Item> {
        self.router
            .state()
            .users
            .get(&BareJid::new(user).unwrap())
            .and_then(|u| u.roster.get(&BareJid::new(contact).unwrap()))
            .cloned()
    }
}

const A: &str = "alice@example.com/phone";
const B: &str = "bob@example.com/desk";

fn online(users: &[&str], sessions: &[&str]) -> World {
    let mut w = World::new(users);
    for s in sessions {
        w.bind(s);
        w.send(
            s,
            "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
        );
        w.send(s, "<presence/>");
    }
    w.delivered.clear();
    w
}

fn subscribe_both(w: &mut World) {
    w.send(A, "<presence to='bob@example.com' type='subscribe'/>");
    w.send(B, "<presence to='alice@example.com' type='subscribed'/>");
    w.send(B, "<presence to='alice@example.com' type='subscribe'/>");
    w.send(A, "<presence to='bob@example.com' type='subscribed'/>");
}

#[test]
fn subscription_handshake_ends_in_both_with_pushes_and_presence() {
    let mut w = online(&["alice", "bob"], &[A, B]);
    w.send(A, "<presence to='bob@example.com' type='subscribe'/>");
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.contains("ask='subscribe'") && x.contains("subscription='none'")),
        "roster push with ask: {alice:?}"
    );
    let bob = w.take(B);
    assert!(
        bob.iter()
            .any(|x| x.contains("type='subscribe'") && x.contains("from='alice@example.com'")),
        "bob sees the request: {bob:?}"
    );
    w.send(B, "<presence to='alice@example.com' type='subscribed'/>");
    assert_eq!(
        w.item("alice@example.com", "bob@example.com")
            .unwrap()
            .subscription,
        Subscription::To
    );
    assert_eq!(
        w.item("bob@example.com", "alice@example.com")
            .unwrap()
            .subscription,
        Subscription::From
    );
    let alice = w.take(A);
    assert!(
        alice.iter().any(|x| x.contains("subscription='to'")),
        "{alice:?}"
    );
    assert!(
        alice.iter().any(|x| x.contains("type='subscribed'")),
        "{alice:?}"
    );
    assert!(
        alice.iter().any(|x| x.starts_with("<presence")
            && x.contains(&format!("from='{B}'"))
            && !x.contains("type=")),
        "alice gets bob's presence once subscribed: {alice:?}"
    );
    w.send(B, "<presence to='alice@example.com' type='subscribe'/>");
    w.send(A, "<presence to='bob@example.com' type='subscribed'/>");
    assert_eq!(
        w.item("alice@example.com", "bob@example.com")
            .unwrap()
            .subscription,
        Subscription::Both
    );
    assert_eq!(
        w.item("bob@example.com", "alice@example.com")
            .unwrap()
            .subscription,
        Subscription::Both
    );
}

#[test]
fn presence_is_broadcast_to_subscribers_and_unavailable_on_close() {
    let mut w = online(&["alice", "bob"], &[A, B]);
    subscribe_both(&mut w);
    w.take(A);
    w.take(B);
    w.send(
        A,
        "<presence><show>away</show><status>lunch</status></presence>",
    );
    let bob = w.take(B);
    assert!(
        bob.iter()
            .any(|x| x.contains("<show>away</show>") && x.contains(&format!("from='{A}'"))),
        "{bob:?}"
    );
    w.close(A);
    let bob = w.take(B);
    assert!(
        bob.iter()
            .any(|x| x.contains("type='unavailable'") && x.contains(&format!("from='{A}'"))),
        "{bob:?}"
    );
}

#[test]
fn login_probes_contacts_and_gets_their_presence() {
    let mut w = online(&["alice", "bob"], &[A, B]);
    subscribe_both(&mut w);
    w.close(A);
    w.take(B);
    let a2 = "alice@example.com/laptop";
    w.bind(a2);
    w.send(a2, "<presence/>");
    let alice = w.take(a2);
    assert!(
        alice
            .iter()
            .any(|x| x.starts_with("<presence") && x.contains(&format!("from='{B}'"))),
        "probe answered with bob's presence: {alice:?}"
    );
    assert!(
        w.take(B)
            .iter()
            .any(|x| x.contains(&format!("from='{a2}'")))
    );
}

#[test]
fn pending_request_waits_for_login_and_pre_approval_completes_at_once() {
    let mut w = online(&["alice", "bob", "carol"], &[A]);
    // Bob is offline: his request waits.
    w.send(A, "<presence to='bob@example.com' type='subscribe'/>");
    w.bind(B);
    w.send(B, "<presence/>");
    let bob = w.take(B);
    assert!(
        bob.iter().any(|x| x.contains("type='subscribe'")),
        "{bob:?}"
    );
    // Pre-approval: carol approves alice before alice asks.
    let c = "carol@example.com/tab";
    w.bind(c);
    w.send(c, "<presence to='alice@example.com' type='subscribed'/>");
    assert!(
        w.item("carol@example.com", "alice@example.com")
            .unwrap()
            .approved
    );
    w.send(A, "<presence to='carol@example.com' type='subscribe'/>");
    assert_eq!(
        w.item("alice@example.com", "carol@example.com")
            .unwrap()
            .subscription,
        Subscription::To
    );
    assert_eq!(
        w.item("carol@example.com", "alice@example.com")
            .unwrap()
            .subscription,
        Subscription::From
    );
}

#[test]
fn roster_set_get_and_remove() {
    let mut w = online(&["alice", "bob"], &[A]);
    w.send(
        A,
        "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='bob@example.com' name='Bob'><group>Friends</group></item></query></iq>",
    );
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.contains("name='Bob'") && x.contains("<group>Friends</group>"))
    );
    assert!(
        alice
            .iter()
            .any(|x| x.contains("id='s1'") && x.contains("type='result'"))
    );
    w.send(
        A,
        "<iq type='get' id='g1'><query xmlns='jabber:iq:roster'/></iq>",
    );
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.contains("id='g1'") && x.contains("jid='bob@example.com'")),
        "{alice:?}"
    );
    w.send(
        A,
        "<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='bob@example.com'/><item jid='carol@example.com'/></query></iq>",
    );
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("id='s2'") && x.contains("bad-request"))
    );
    w.send(
        A,
        "<iq type='set' id='s3'><query xmlns='jabber:iq:roster'><item jid='bob@example.com' subscription='remove'/></query></iq>",
    );
    let alice = w.take(A);
    assert!(
        alice.iter().any(|x| x.contains("subscription='remove'")),
        "{alice:?}"
    );
    assert!(w.item("alice@example.com", "bob@example.com").is_none());
}

#[test]
fn messages_follow_rfc_6121_delivery_rules() {
    let mut w = online(&["alice", "bob"], &[A, B]);
    let b2 = "bob@example.com/hidden";
    w.bind(b2);
    w.send(b2, "<presence><priority>-1</priority></presence>");
    w.take(b2);
    w.take(B);
    w.send(
        A,
        "<message to='bob@example.com' type='chat' id='m1'><body>hi</body></message>",
    );
    assert_eq!(w.take(B).len(), 1);
    assert!(
        w.take(b2).is_empty(),
        "negative priority gets no bare-JID messages"
    );
    w.send(
        A,
        &format!("<message to='{b2}' type='chat' id='m2'><body>direct</body></message>"),
    );
    let phone = w.take(b2);
    assert_eq!(phone.len(), 1, "{phone:?}");
    // Unknown user and unknown full JID of an offline user.
    w.send(
        A,
        "<message to='nobody@example.com' type='chat' id='m3'><body>x</body></message>",
    );
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.contains("id='m3'") && x.contains("service-unavailable")),
        "{alice:?}"
    );
    w.send(
        A,
        "<message to='bob@elsewhere.org' id='m4'><body>x</body></message>",
    );
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("remote-server-not-found"))
    );
}

#[test]
fn server_answers_disco_ping_and_hides_its_version() {
    let mut w = online(&["alice"], &[A]);
    w.send(A, "<iq type='get' to='example.com' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.contains("category='server'") && x.contains("urn:xmpp:ping")),
        "{alice:?}"
    );
    w.send(
        A,
        "<iq type='get' to='example.com' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("id='p1'") && x.contains("type='result'"))
    );
    w.send(
        A,
        "<iq type='get' to='example.com' id='v1'><query xmlns='jabber:iq:version'/></iq>",
    );
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("id='v1'") && x.contains("service-unavailable"))
    );
    w.send(
        A,
        "<iq type='get' id='d2'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(w.take(A).iter().any(|x| x.contains("category='account'")));
}

#[test]
fn iq_to_an_offline_full_jid_bounces() {
    let mut w = online(&["alice", "bob"], &[A]);
    w.send(
        A,
        "<iq type='get' to='bob@example.com/gone' id='q1'><query xmlns='jabber:iq:version'/></iq>",
    );
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.contains("id='q1'") && x.contains("service-unavailable")),
        "{alice:?}"
    );
}

#[test]
fn state_rebuilt_from_the_changelogs_matches() {
    let mut w = online(&["alice", "bob"], &[A, B]);
    subscribe_both(&mut w);
    let mut fresh = World::new(&["alice", "bob"]);
    for output in &w.changelog {
        if let Output::Roster(change) = output {
            fresh.router.state_mut().apply_roster(change);
        }
    }
    for user in ["alice@example.com", "bob@example.com"] {
        let bare = BareJid::new(user).unwrap();
        assert_eq!(
            fresh.router.state().users.get(&bare).map(|u| &u.roster),
            w.router.state().users.get(&bare).map(|u| &u.roster)
        );
    }
}

#[test]
fn reprocessing_yields_the_same_output_ids() {
    let mut w1 = online(&["alice", "bob"], &[A, B]);
    let stanza = StanzaReceived {
        event_id: Uuid::from_u128(7),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: w1.sessions[A].clone(),
        received_at: t(),
        sender: FullJid::new(A).unwrap(),
        recipient: Some(Jid::new("bob@example.com").unwrap()),
        kind: StanzaKind::Message,
        stanza_type: Some("chat".into()),
        stanza_id: None,
        xml: format!(
            "<message from='{A}' to='bob@example.com' type='chat'><body>x</body></message>"
        ),
    };
    let first = w1.router.handle(Input::Outbound(stanza.clone()), t());
    let second = w1.router.handle(Input::Outbound(stanza), t());
    assert_eq!(first, second);
}

#[test]
fn vcard_is_stored_and_served_to_its_owner_and_others() {
    let mut w = online(&["alice", "bob"], &[A, B]);
    w.send(A, "<iq type='get' id='v0'><vCard xmlns='vcard-temp'/></iq>");
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("id='v0'") && x.contains("<vCard xmlns='vcard-temp'/>"))
    );
    w.send(
        A,
        "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN></vCard></iq>",
    );
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("id='v1'") && x.contains("type='result'"))
    );
    assert!(
        w.changelog
            .iter()
            .any(|o| matches!(o, Output::UserData(d) if d.namespace == "vcard-temp"))
    );
    w.send(
        B,
        "<iq type='get' to='alice@example.com' id='v2'><vCard xmlns='vcard-temp'/></iq>",
    );
    let bob = w.take(B);
    assert!(
        bob.iter().any(|x| x.contains("id='v2'")
            && x.contains("<FN>Alice Liddell</FN>")
            && x.contains("from='alice@example.com'")),
        "{bob:?}"
    );
    // Rebuilt from the changelog.
    let mut fresh = World::new(&["alice", "bob"]);
    for output in &w.changelog {
        if let Output::UserData(d) = output {
            fresh.router.state_mut().apply_user_data(d);
        }
    }
    fresh.bind(A);
    fresh.send(A, "<iq type='get' id='v3'><vCard xmlns='vcard-temp'/></iq>");
    assert!(
        fresh
            .take(A)
            .iter()
            .any(|x| x.contains("<FN>Alice Liddell</FN>"))
    );
}

#[test]
fn private_xml_storage_round_trip_and_reserved_namespaces() {
    let mut w = online(&["alice"], &[A]);
    w.send(A, "<iq type='set' id='p1'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'><color>blue</color></prefs></query></iq>");
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("id='p1'") && x.contains("type='result'"))
    );
    w.send(A, "<iq type='get' id='p2'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>");
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("id='p2'") && x.contains("<color>blue</color>"))
    );
    w.send(A, "<iq type='get' id='p3'><query xmlns='jabber:iq:private'><other xmlns='urn:example:none'/></query></iq>");
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.contains("id='p3'") && x.contains("<other xmlns='urn:example:none'/>")),
        "{alice:?}"
    );
    w.send(A, "<iq type='set' id='p4'><query xmlns='jabber:iq:private'><x xmlns='jabber:iq:roster'/></query></iq>");
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("id='p4'") && x.contains("not-acceptable"))
    );
}

fn message_from(w: &mut World, from: &str, to: &str, body: &str) {
    w.send(
        from,
        &format!("<message to='{to}' type='chat'><body>{body}</body></message>"),
    );
}

#[test]
fn offline_messages_are_stored_and_delivered_in_order_with_a_delay_stamp() {
    let mut w = online(&["alice", "bob"], &[A]);
    for body in ["one", "two", "three"] {
        message_from(&mut w, A, "bob@example.com", body);
    }
    assert!(w.take(A).is_empty(), "no error for a stored message");
    let stored = w
        .changelog
        .iter()
        .filter(|o| matches!(o, Output::Offline(OfflineEvent::Stored(_))))
        .count();
    assert_eq!(stored, 3);
    // A restarted router folds the changelog and still has them.
    let mut fresh = World::new(&["alice", "bob"]);
    for output in &w.changelog {
        if let Output::Offline(e) = output {
            fresh.router.state_mut().apply_offline(e);
        }
    }
    for world in [&mut w, &mut fresh] {
        world.bind(B);
        world.send(B, "<presence/>");
        let bob: Vec<String> = world
            .take(B)
            .into_iter()
            .filter(|x| x.starts_with("<message"))
            .collect();
        assert_eq!(bob.len(), 3, "{bob:?}");
        for (xml, body) in bob.iter().zip(["one", "two", "three"]) {
            assert!(xml.contains(&format!("<body>{body}</body>")), "{xml}");
            assert!(
                xml.contains("urn:xmpp:delay") && xml.contains("stamp='2023-11-14T22:13:20.000Z'"),
                "{xml}"
            );
        }
        // Delivered once: another login gets nothing more.
        world.send(B, "<presence type='unavailable'/>");
        world.send(B, "<presence/>");
        assert!(!world.take(B).iter().any(|x| x.starts_with("<message")));
    }
}

#[test]
fn offline_quota_and_switch_answer_the_sender() {
    let mut w = online(&["alice", "bob"], &[A]);
    w.router.config_mut().offline_quota = 2;
    for body in ["1", "2", "3"] {
        message_from(&mut w, A, "bob@example.com", body);
    }
    let alice = w.take(A);
    assert_eq!(alice.len(), 1, "{alice:?}");
    assert!(
        alice[0].contains("resource-constraint") && alice[0].contains("<body>3</body>"),
        "{alice:?}"
    );
    w.router.config_mut().offline_enabled = false;
    message_from(&mut w, A, "bob@example.com", "4");
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("service-unavailable") && x.contains("disabled"))
    );
}

#[test]
fn a_message_processed_twice_is_stored_once() {
    let mut w = online(&["alice", "bob"], &[A]);
    w.ids = None;
    let stanza = StanzaReceived {
        event_id: Uuid::from_u128(42),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: w.sessions[A].clone(),
        received_at: t(),
        sender: FullJid::new(A).unwrap(),
        recipient: Some(Jid::new("bob@example.com").unwrap()),
        kind: StanzaKind::Message,
        stanza_type: Some("chat".into()),
        stanza_id: None,
        xml: format!(
            "<message from='{A}' to='bob@example.com' type='chat'><body>x</body></message>"
        ),
    };
    w.run(Input::Outbound(stanza.clone()));
    w.run(Input::Outbound(stanza));
    let bob = w
        .router
        .state()
        .users
        .get(&BareJid::new("bob@example.com").unwrap())
        .unwrap();
    assert_eq!(bob.offline.len(), 1);
}

#[test]
fn carbons_copy_sent_and_received_chats_to_enabled_sessions() {
    let b2 = "bob@example.com/phone";
    let b3 = "bob@example.com/old";
    let mut w = online(&["alice", "bob"], &[A, B, b2, b3]);
    for s in [B, b2] {
        w.send(
            s,
            "<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
        );
        assert!(
            w.take(s)
                .iter()
                .any(|x| x.contains("id='c1'") && x.contains("type='result'"))
        );
    }
    // A message to bob's full JID: the session gets it, the other enabled one a copy.
    message_from(&mut w, A, B, "to desk");
    assert!(
        w.take(B)
            .iter()
            .any(|x| x.starts_with("<message") && x.contains("to desk") && !x.contains("carbons"))
    );
    let phone = w.take(b2);
    assert!(
        phone
            .iter()
            .any(|x| x.contains("<received xmlns='urn:xmpp:carbons:2'>") && x.contains("to desk")),
        "{phone:?}"
    );
    assert!(w.take(b3).is_empty(), "carbons not enabled there");
    // What bob sends from the desk is copied to the phone as sent.
    message_from(&mut w, B, "alice@example.com", "reply");
    let phone = w.take(b2);
    assert!(
        phone
            .iter()
            .any(|x| x.contains("<sent xmlns='urn:xmpp:carbons:2'>") && x.contains("reply")),
        "{phone:?}"
    );
    assert!(
        !w.take(B).iter().any(|x| x.contains("<sent")),
        "no copy to the sender"
    );
    // A private message is not copied.
    w.send(B, "<message to='alice@example.com' type='chat'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>");
    assert!(w.take(b2).is_empty());
}

fn compliance(w: &World) -> Vec<imbus_core::ComplianceRecord> {
    w.changelog
        .iter()
        .filter_map(|o| match o {
            Output::Compliance(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn one_compliance_record_per_recipient_for_every_im_delivered_or_stored() {
    let b2 = "bob@example.com/phone";
    let mut w = online(&["alice", "bob", "carol"], &[A, B, b2]);
    w.send(
        b2,
        "<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    );
    w.delivered.clear();
    let id = Uuid::from_u128(99);
    let stanza = StanzaReceived {
        event_id: id,
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: w.sessions[A].clone(),
        received_at: t(),
        sender: FullJid::new(A).unwrap(),
        recipient: Some(Jid::new("bob@example.com").unwrap()),
        kind: StanzaKind::Message,
        stanza_type: Some("chat".into()),
        stanza_id: None,
        xml: format!(
            "<message from='{A}' to='bob@example.com' type='chat'><body>forked</body><thread>t1</thread></message>"
        ),
    };
    w.run(Input::Outbound(stanza));
    let desk = w.take(B);
    assert_eq!(desk.len(), 1, "{desk:?}");
    let phone = w.take(b2);
    assert_eq!(phone.len(), 1, "{phone:?}");
    let records = compliance(&w);
    assert_eq!(
        records.len(),
        1,
        "one record for bob, not one per resource: {records:?}"
    );
    let r = &records[0];
    assert_eq!(r.event_id, id, "the record names the message as received");
    assert_eq!(r.recipient.as_str(), "bob@example.com");
    assert_eq!(r.sender.as_str(), A);
    assert_eq!(r.body.as_deref(), Some("forked"));
    assert_eq!(r.thread.as_deref(), Some("t1"));
    // Stored offline: archived too; a chat state without body is not an IM.
    message_from(&mut w, A, "carol@example.com", "later");
    w.send(A, "<message to='bob@example.com' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
    let records = compliance(&w);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1].recipient.as_str(), "carol@example.com");
}

#[test]
fn blocking_stops_stanzas_both_ways_and_hides_presence() {
    let mut w = online(&["alice", "bob"], &[A, B]);
    subscribe_both(&mut w);
    w.delivered.clear();
    w.send(A, "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@example.com'/></block></iq>");
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.contains("id='b1'") && x.contains("type='result'")),
        "{alice:?}"
    );
    assert!(
        alice
            .iter()
            .any(|x| x.contains("<block xmlns='urn:xmpp:blocking'>")),
        "push: {alice:?}"
    );
    let bob = w.take(B);
    assert!(
        bob.iter()
            .any(|x| x.contains("type='unavailable'") && x.contains(&format!("from='{A}'"))),
        "{bob:?}"
    );
    // Bob's messages bounce; alice's to bob are refused.
    message_from(&mut w, B, "alice@example.com", "hello?");
    assert!(w.take(A).is_empty());
    assert!(w.take(B).iter().any(|x| x.contains("service-unavailable")));
    message_from(&mut w, A, "bob@example.com", "hi");
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.contains("not-acceptable") && x.contains("urn:xmpp:blocking:errors")),
        "{alice:?}"
    );
    // Presence no longer reaches bob.
    w.send(A, "<presence><show>away</show></presence>");
    assert!(!w.take(B).iter().any(|x| x.contains("<show>away</show>")));
    w.send(
        A,
        "<iq type='get' id='b2'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    );
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("id='b2'") && x.contains("jid='bob@example.com'"))
    );
    // Unblock all: bob gets alice's presence again.
    w.send(
        A,
        "<iq type='set' id='b3'><unblock xmlns='urn:xmpp:blocking'/></iq>",
    );
    assert!(
        w.take(B)
            .iter()
            .any(|x| x.contains(&format!("from='{A}'")) && x.contains("<show>away</show>"))
    );
    // The list is on the userdata changelog.
    let mut fresh = World::new(&["alice", "bob"]);
    for o in &w.changelog {
        if let Output::UserData(d) = o {
            fresh.router.state_mut().apply_user_data(d);
        }
    }
    assert!(
        fresh.router.state().users[&BareJid::new("alice@example.com").unwrap()]
            .blocked
            .is_empty()
    );
}

#[test]
fn multicast_reaches_fifty_recipients_online_or_offline_and_hides_bcc() {
    let names: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
    let mut users: Vec<&str> = names.iter().map(String::as_str).collect();
    users.push("alice");
    let online_sessions: Vec<String> = (0..25).map(|i| format!("u{i}@example.com/r")).collect();
    let mut sessions: Vec<&str> = online_sessions.iter().map(String::as_str).collect();
    sessions.push(A);
    let mut w = online(&users, &sessions);
    let mut addresses = String::new();
    for (i, name) in names.iter().enumerate() {
        let kind = ["to", "cc", "bcc"][i % 3];
        addresses.push_str(&format!(
            "<address type='{kind}' jid='{name}@example.com'/>"
        ));
    }
    w.send(
        A,
        &format!(
            "<message to='example.com' type='chat'><body>all hands</body><addresses xmlns='http://jabber.org/protocol/address'>{addresses}</addresses></message>"
        ),
    );
    assert!(w.take(A).is_empty(), "no error");
    for s in &online_sessions {
        let got = w.take(s);
        let messages: Vec<_> = got.iter().filter(|x| x.starts_with("<message")).collect();
        assert_eq!(messages.len(), 1, "{s}: {got:?}");
        assert!(
            !messages[0].contains("type='bcc'"),
            "bcc hidden: {}",
            messages[0]
        );
        assert!(messages[0].contains("delivered='true'"));
    }
    let stored = w
        .changelog
        .iter()
        .filter(|o| matches!(o, Output::Offline(OfflineEvent::Stored(_))))
        .count();
    assert_eq!(stored, 25);
    let records = compliance(&w);
    assert_eq!(records.len(), 50);
    let recipients: std::collections::HashSet<_> =
        records.iter().map(|r| r.recipient.clone()).collect();
    assert_eq!(recipients.len(), 50);
    // A remote address is reported; an unknown local user bounces.
    w.send(
        A,
        "<message to='example.com' type='chat'><body>x</body><addresses xmlns='http://jabber.org/protocol/address'><address type='to' jid='bob@elsewhere.org'/><address type='to' jid='ghost@example.com'/></addresses></message>",
    );
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.contains("remote-server-not-found") && x.contains("bob@elsewhere.org")),
        "{alice:?}"
    );
    assert!(
        alice.iter().any(|x| x.contains("service-unavailable")),
        "{alice:?}"
    );
}

#[test]
fn lock_on_reply_routes_to_the_replying_client_until_it_leaves_or_idles() {
    let b2 = "bob@example.com/phone";
    let mut w = online(&["alice", "bob"], &[A, B, b2]);
    let count = |w: &mut World, s: &str| {
        w.take(s)
            .iter()
            .filter(|x| x.starts_with("<message"))
            .count()
    };
    // Forked to both until bob replies.
    message_from(&mut w, A, "bob@example.com", "hello");
    assert_eq!((count(&mut w, B), count(&mut w, b2)), (1, 1));
    message_from(&mut w, b2, "alice@example.com", "hi from the phone");
    w.take(A);
    for _ in 0..3 {
        message_from(&mut w, A, "bob@example.com", "locked");
        assert_eq!((count(&mut w, B), count(&mut w, b2)), (0, 1));
    }
    // Another contact is not locked.
    w.router
        .state_mut()
        .accounts
        .insert(BareJid::new("carol@example.com").unwrap());
    let c = "carol@example.com/x";
    w.bind(c);
    message_from(&mut w, c, "bob@example.com", "carol here");
    assert_eq!((count(&mut w, B), count(&mut w, b2)), (1, 1));
    // The phone goes unavailable: forked again, and no lock when it comes back.
    w.send(b2, "<presence type='unavailable'/>");
    w.send(b2, "<presence/>");
    w.delivered.clear();
    message_from(&mut w, A, "bob@example.com", "unlocked");
    assert_eq!((count(&mut w, B), count(&mut w, b2)), (1, 1));
    // Idle timeout.
    message_from(&mut w, b2, "alice@example.com", "phone again");
    w.router.config_mut().lock_idle_timeout = std::time::Duration::ZERO;
    let late = StanzaReceived {
        event_id: Uuid::new_v4(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: w.sessions[A].clone(),
        received_at: Timestamp::from_micros(t().as_micros() + 1),
        sender: FullJid::new(A).unwrap(),
        recipient: Some(Jid::new("bob@example.com").unwrap()),
        kind: StanzaKind::Message,
        stanza_type: Some("chat".into()),
        stanza_id: None,
        xml: format!(
            "<message from='{A}' to='bob@example.com' type='chat'><body>later</body></message>"
        ),
    };
    w.delivered.clear();
    w.run(Input::Outbound(late));
    assert_eq!((count(&mut w, B), count(&mut w, b2)), (1, 1));
}

#[test]
fn switched_off_im_and_presence_are_refused_with_an_error() {
    let mut w = online(&["alice", "bob"], &[A, B]);
    w.router.config_mut().im_enabled = false;
    message_from(&mut w, A, "bob@example.com", "hello");
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.contains("service-unavailable")
                && x.contains("instant messaging is disabled")),
        "{alice:?}"
    );
    assert!(w.take(B).is_empty());
    w.router.config_mut().presence_enabled = false;
    w.send(A, "<presence><show>dnd</show></presence>");
    let alice = w.take(A);
    assert!(
        alice
            .iter()
            .any(|x| x.starts_with("<presence") && x.contains("presence is disabled")),
        "{alice:?}"
    );
    // Rosters still work.
    w.send(
        A,
        "<iq type='get' id='r9'><query xmlns='jabber:iq:roster'/></iq>",
    );
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("id='r9'") && x.contains("type='result'"))
    );
}

fn archived(w: &World) -> Vec<imbus_core::ArchivedMessage> {
    w.changelog
        .iter()
        .filter_map(|o| match o {
            Output::Archive(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// The deliveries among `outputs`: (to, id, delayed).
fn deliveries(outputs: &[Output]) -> Vec<(String, Uuid, bool)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Deliver(d) => Some((
                d.to.as_str().to_owned(),
                d.event_id,
                d.delayed_from.is_some(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn one_to_one_messages_are_archived_for_sender_and_recipient() {
    let mut w = online(&["alice", "bob", "carol"], &[A, B]);
    message_from(&mut w, A, "bob@example.com", "hi bob");
    // Offline recipient: stored, so archived for carol too.
    message_from(&mut w, A, "carol@example.com", "hi carol");
    // Not archived: headline, no body, no-store hint.
    w.send(
        A,
        "<message to='bob@example.com' type='headline'><body>news</body></message>",
    );
    w.send(
        A,
        "<message to='bob@example.com' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    );
    w.send(
        A,
        "<message to='bob@example.com' type='chat'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>",
    );
    let entries = archived(&w);
    let summary: Vec<(String, String, imbus_core::Direction)> = entries
        .iter()
        .map(|e| {
            (
                e.owner.as_str().to_owned(),
                e.with.as_str().to_owned(),
                e.direction,
            )
        })
        .collect();
    use imbus_core::Direction::{Inbound, Outbound};
    assert_eq!(
        summary,
        vec![
            (
                "alice@example.com".into(),
                "bob@example.com".into(),
                Outbound
            ),
            ("bob@example.com".into(), A.into(), Inbound),
            (
                "alice@example.com".into(),
                "carol@example.com".into(),
                Outbound
            ),
            ("carol@example.com".into(), A.into(), Inbound),
        ]
    );
    // Both copies of one message refer to its event, with ids that differ per owner and
    // are derived (the same after reprocessing).
    assert_eq!(entries[0].event_id, entries[1].event_id);
    assert_ne!(entries[0].archive_id, entries[1].archive_id);
    assert_eq!(
        entries[1].archive_id,
        imbus_core::ArchivedMessage::derive_id(
            &entries[1].event_id,
            &BareJid::new("bob@example.com").unwrap(),
            &BareJid::new("alice@example.com").unwrap()
        )
    );
    assert!(entries[1].xml.contains("hi bob"));
}

#[test]
fn archive_queries_go_to_the_archive_processor_and_disco_lists_mam() {
    let mut w = online(&["alice"], &[A]);
    w.send(
        A,
        "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='f1'/></iq>",
    );
    w.send(
        A,
        "<iq type='get' to='alice@example.com' id='m1'><metadata xmlns='urn:xmpp:mam:2'/></iq>",
    );
    let queries: Vec<StanzaReceived> = w
        .changelog
        .iter()
        .filter_map(|o| match o {
            Output::ArchiveQuery(q) => Some(q.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(queries.len(), 2, "{:?}", w.changelog);
    assert_eq!(queries[0].owner().as_str(), "alice@example.com");
    assert_eq!(queries[0].sender.as_str(), A);
    assert!(
        queries[0].xml.contains("queryid='f1'"),
        "{}",
        queries[0].xml
    );
    assert!(w.take(A).is_empty(), "the router does not answer them");
    // Someone else's archive, or the server's: not here.
    w.send(
        A,
        "<iq type='set' to='example.com' id='q2'><query xmlns='urn:xmpp:mam:2'/></iq>",
    );
    assert!(w.take(A).iter().any(|x| x.contains("service-unavailable")));
    for (to, id) in [("", "d1"), (" to='example.com'", "d2")] {
        w.send(
            A,
            &format!(
                "<iq type='get'{to} id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            ),
        );
        let answer = w.take(A);
        assert!(
            answer.iter().any(|x| x.contains("var='urn:xmpp:mam:2'")),
            "{answer:?}"
        );
    }
}

#[test]
fn with_archiving_off_nothing_is_archived_and_queries_are_refused() {
    let mut w = online(&["alice", "bob"], &[A, B]);
    w.router.config_mut().mam_enabled = false;
    message_from(&mut w, A, "bob@example.com", "hi");
    assert!(archived(&w).is_empty());
    w.send(
        A,
        "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2'/></iq>",
    );
    assert!(w.take(A).iter().any(|x| x.contains("service-unavailable")));
    w.send(
        A,
        "<iq type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(!w.take(A).iter().any(|x| x.contains("urn:xmpp:mam")));
}

#[test]
fn a_message_reaches_a_session_under_one_delivery_id_whichever_path_it_takes() {
    let message = |to: &str| StanzaReceived {
        event_id: Uuid::from_u128(7),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: SessionId::new("s-a").unwrap(),
        received_at: t(),
        sender: FullJid::new(A).unwrap(),
        recipient: Some(Jid::new(to).unwrap()),
        kind: StanzaKind::Message,
        stanza_type: Some("chat".into()),
        stanza_id: None,
        xml: format!("<message from='{A}' to='{to}' type='chat'><body>x</body></message>"),
    };
    let expected = message_delivery_id(&Uuid::from_u128(7), &FullJid::new(B).unwrap());

    // Bob offline: stored, then handed over from storage when he comes online.
    let mut w = online(&["alice", "bob"], &[A]);
    let outputs = w
        .router
        .handle(Input::Inbound(message("bob@example.com")), t());
    assert!(deliveries(&outputs).is_empty());
    w.bind(B);
    let session = w.sessions[B].clone();
    let presence = StanzaReceived {
        event_id: Uuid::from_u128(8),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: session,
        received_at: t(),
        sender: FullJid::new(B).unwrap(),
        recipient: None,
        kind: StanzaKind::Presence,
        stanza_type: None,
        stanza_id: None,
        xml: format!("<presence from='{B}'/>"),
    };
    let outputs = w.router.handle(Input::Outbound(presence), t());
    let flushed: Vec<_> = deliveries(&outputs)
        .into_iter()
        .filter(|(_, _, delayed)| *delayed)
        .collect();
    assert_eq!(flushed, vec![(B.to_owned(), expected, true)]);

    // The same message processed again after a crash finds bob online: delivered
    // directly (to his bare JID or his full JID), under the same id.
    for to in ["bob@example.com", B] {
        let outputs = w.router.handle(Input::Inbound(message(to)), t());
        assert_eq!(
            deliveries(&outputs),
            vec![(B.to_owned(), expected, false)],
            "to {to}"
        );
    }
}

#[test]
fn stanzas_to_the_chat_service_go_to_the_rooms_processor_with_session_ends_after_them() {
    let mut w = online(&["alice"], &["alice@example.com/a"]);
    let service = BareJid::new("conference-1-imbus.example.com").unwrap();
    let alias = BareJid::new("chat.example.com").unwrap();
    w.router.config_mut().rooms_services = Some([service, alias].into_iter().collect());
    w.changelog.clear();
    w.send(
        "alice@example.com/a",
        "<presence to='Team@conference-1-imbus.example.com/Al'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
    );
    // Another chat node alias: another room, keyed by its own address.
    w.send(
        "alice@example.com/a",
        "<presence to='team@chat.example.com/Al'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
    );
    w.send(
        "alice@example.com/a",
        "<iq type='get' id='d1' to='conference-1-imbus.example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    w.send(
        "alice@example.com/a",
        "<iq type='get' id='d2' to='example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    w.close("alice@example.com/a");
    let to_rooms: Vec<(String, Option<String>)> = w
        .changelog
        .iter()
        .filter_map(|o| match o {
            Output::ToRooms { key, stanza } => Some((key.clone(), stanza.stanza_id.clone())),
            Output::SessionClosedToRooms(closed) => {
                Some((format!("closed {}", closed.jid.as_str()), None))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        to_rooms,
        [
            ("team@conference-1-imbus.example.com".to_owned(), None),
            ("team@chat.example.com".to_owned(), None),
            (
                "conference-1-imbus.example.com".to_owned(),
                Some("d1".to_owned())
            ),
            ("closed alice@example.com/a".to_owned(), None),
        ]
    );
    // The server's own disco#items lists every chat service domain; the router answered
    // nothing addressed to the service itself.
    let answers = w.take("alice@example.com/a");
    assert!(
        answers
            .iter()
            .any(|x| x.contains("id=\"d2\"") || x.contains("id='d2'")),
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .any(|x| x.contains("jid=\"conference-1-imbus.example.com\"")
                || x.contains("jid='conference-1-imbus.example.com'")),
        "{answers:?}"
    );
    assert!(
        answers.iter().any(
            |x| x.contains("jid=\"chat.example.com\"") || x.contains("jid='chat.example.com'")
        ),
        "{answers:?}"
    );
    assert!(
        !answers
            .iter()
            .any(|x| x.contains("id=\"d1\"") || x.contains("id='d1'")),
        "{answers:?}"
    );
}

#[test]
fn without_rooms_the_chat_service_is_neither_forwarded_to_nor_listed() {
    let mut w = online(&["alice"], &["alice@example.com/a"]);
    w.changelog.clear();
    w.send(
        "alice@example.com/a",
        "<iq type='get' id='d2' to='example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    w.close("alice@example.com/a");
    assert!(
        !w.changelog
            .iter()
            .any(|o| matches!(o, Output::ToRooms { .. } | Output::SessionClosedToRooms(_))),
        "{:?}",
        w.changelog
    );
    let answers = w.take("alice@example.com/a");
    assert!(
        !answers.iter().any(|x| x.contains("conference")),
        "{answers:?}"
    );
}

/// The bodies of the messages delivered to `full` since the last take.
fn bodies(w: &mut World, full: &str) -> Vec<String> {
    w.take(full)
        .into_iter()
        .filter(|x| x.starts_with("<message"))
        .filter_map(|x| {
            let start = x.find("<body>")? + "<body>".len();
            let end = x[start..].find("</body>")? + start;
            Some(x[start..end].to_owned())
        })
        .collect()
}

#[test]
fn a_session_that_replaces_another_on_its_resource_is_served() {
    let laptop = "alice@example.com/laptop";
    let mut w = online(&["alice", "bob"], &[A, laptop, B]);
    let old = w.sessions[A].clone();
    // A new sign-in on the same resource: the gateway ends the old session with a
    // conflict and records no `Closed` for it, so the new `Bound` is all the router sees.
    w.bind(A);
    let new = w.sessions[A].clone();
    assert_ne!(old, new);
    let jid = FullJid::new(A).unwrap();
    assert_eq!(
        w.router.state().session(&jid).map(|s| s.session_id.clone()),
        Some(new),
        "the router holds the new session"
    );
    // Alice's other resource sees the old session go.
    assert!(
        w.take(laptop)
            .iter()
            .any(|x| x.contains("type='unavailable'") && x.contains(A)),
        "the other resource is told the old session ended"
    );
    // The new session's requests are answered and its presence counts.
    w.send(
        A,
        "<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>",
    );
    assert!(
        w.take(A)
            .iter()
            .any(|x| x.contains("id='r2'") && x.contains("type='result'")),
        "the new session's roster request is answered"
    );
    message_from(&mut w, B, "alice@example.com", "before presence");
    assert_eq!(bodies(&mut w, A), Vec::<String>::new(), "not available yet");
    assert_eq!(bodies(&mut w, laptop), ["before presence"]);
    w.send(A, "<presence/>");
    message_from(&mut w, B, "alice@example.com", "after presence");
    assert_eq!(bodies(&mut w, A), ["after presence"]);
    assert_eq!(bodies(&mut w, laptop), ["after presence"]);
}

#[test]
fn with_presence_switched_off_messages_go_to_every_bound_session() {
    let mut w = World::new(&["alice", "bob"]);
    w.router.config_mut().presence_enabled = false;
    w.bind(A);
    // Nobody of bob's signed in: stored, and handed to the first session that binds.
    message_from(&mut w, A, "bob@example.com", "stored");
    assert!(w.take(A).is_empty(), "no error for a stored message");
    w.bind(B);
    let bob = w.take(B);
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert!(
        bob[0].contains("<body>stored</body>") && bob[0].contains("urn:xmpp:delay"),
        "{bob:?}"
    );
    // No resource can be available: every bound one gets messages to the bare JID.
    let laptop = "bob@example.com/laptop";
    w.bind(laptop);
    assert!(
        w.take(laptop).is_empty(),
        "nothing stored is handed out twice"
    );
    message_from(&mut w, A, "bob@example.com", "forked");
    assert_eq!(bodies(&mut w, B), ["forked"]);
    assert_eq!(bodies(&mut w, laptop), ["forked"]);
    // Lock-on-reply still applies, and ends with the session.
    message_from(&mut w, B, "alice@example.com", "reply");
    message_from(&mut w, A, "bob@example.com", "locked");
    assert_eq!(bodies(&mut w, B), ["locked"]);
    assert_eq!(bodies(&mut w, laptop), Vec::<String>::new());
    w.close(B);
    message_from(&mut w, A, "bob@example.com", "unlocked");
    assert_eq!(bodies(&mut w, laptop), ["unlocked"]);
    // With presence on, a bound session that sent no presence gets none of them.
    w.router.config_mut().presence_enabled = true;
    w.bind(B);
    w.send(B, "<presence/>");
    w.take(B);
    message_from(&mut w, A, "bob@example.com", "available only");
    assert_eq!(bodies(&mut w, B), ["available only"]);
    assert_eq!(bodies(&mut w, laptop), Vec::<String>::new());
}

#[test]
fn a_replacing_session_read_before_its_bound_record_is_served_and_the_old_one_is_not() {
    let laptop = "alice@example.com/laptop";
    let mut w = online(&["alice", "bob"], &[A, laptop, B]);
    let old = w.sessions[A].clone();
    let jid = FullJid::new(A).unwrap();
    let stanza = |session_id: &SessionId, at: Timestamp, xml: &str| StanzaReceived {
        event_id: Uuid::new_v4(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: session_id.clone(),
        received_at: at,
        sender: jid.clone(),
        recipient: None,
        kind: StanzaKind::Iq,
        stanza_type: Some("get".into()),
        stanza_id: Some("r3".into()),
        xml: format!("<iq from='{A}' {xml}</iq>"),
    };
    let roster = "type='get' id='r3'><query xmlns='jabber:iq:roster'/>";
    // The new session's first stanza comes before its `Bound` record: it took the
    // resource over, the old session's end is told, and the request is answered.
    let new = SessionId::new("s-new").unwrap();
    let later = Timestamp::from_micros(t().as_micros() + 5_000_000);
    w.run(Input::Outbound(stanza(&new, later, roster)));
    assert!(
        w.take(A).iter().any(|x| x.contains("id='r3'")),
        "the new session is answered"
    );
    assert!(
        w.take(laptop)
            .iter()
            .any(|x| x.contains("type='unavailable'") && x.contains(A))
    );
    // Its `Bound` record changes nothing more.
    w.run(Input::Session(SessionEvent::Bound(SessionState {
        jid: jid.clone(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: new.clone(),
        at: later,
        presence: SessionPresence::unavailable(),
        features: ClientFeatures::default(),
    })));
    assert!(w.take(laptop).is_empty() && w.take(A).is_empty());
    // A late stanza of the old session is not answered and does not take the resource back.
    w.run(Input::Outbound(stanza(&old, t(), roster)));
    assert!(w.take(A).is_empty(), "the replaced session is gone");
    assert_eq!(
        w.router.state().session(&jid).map(|s| s.session_id.clone()),
        Some(new.clone())
    );
    // Nor does a session that started before the holder and is read only now.
    let older = SessionId::new("s-older").unwrap();
    let earlier = Timestamp::from_micros(t().as_micros() + 1_000_000);
    w.run(Input::Outbound(stanza(&older, earlier, roster)));
    w.run(Input::Session(SessionEvent::Bound(SessionState {
        jid: jid.clone(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: older,
        at: earlier,
        presence: SessionPresence::unavailable(),
        features: ClientFeatures::default(),
    })));
    assert!(w.take(A).is_empty() && w.take(laptop).is_empty());
    assert_eq!(
        w.router.state().session(&jid).map(|s| s.session_id.clone()),
        Some(new)
    );
}

#[test]
fn restoring_sessions_keeps_the_newest_session_of_a_resource() {
    let jid = FullJid::new(A).unwrap();
    let bound = |id: &str, micros: i64| {
        SessionEvent::Bound(SessionState {
            jid: jid.clone(),
            gateway_id: GatewayId::new("gw1").unwrap(),
            session_id: SessionId::new(id).unwrap(),
            at: Timestamp::from_micros(micros),
            presence: SessionPresence::unavailable(),
            features: ClientFeatures::default(),
        })
    };
    let mut state = State::default();
    state.apply_session(&bound("s-1", 1));
    state.apply_session(&bound("s-2", 2));
    // A record of the replaced session read again changes nothing.
    state.apply_session(&bound("s-1", 1));
    assert_eq!(
        state
            .session(&jid)
            .map(|s| s.session_id.as_str().to_owned()),
        Some("s-2".to_owned())
    );
    assert!(state.was_closed(&SessionId::new("s-1").unwrap()));
}

#[test]
fn the_inbound_half_decides_the_same_with_or_without_the_kept_element() {
    let play = |forget: bool| {
        let mut w = online(&["alice", "bob", "carol"], &[A, B, "bob@example.com/phone"]);
        w.forget_forwarded = forget;
        let stanzas = [
            "<message to='bob@example.com' type='chat' id='m1' xml:lang='fr'>\
             <body>Ô &lt;3 &amp; &#x263A; \"q\" &apos;x&apos;</body><thread>t1</thread>\
             <![CDATA[<raw> & ]]><x:data xmlns:x='urn:example:data' x:kind='a &amp; b'/>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message to='bob@example.com/desk' type='chat'><body>to one</body></message>",
            "<message to='bob@example.com'><subject>s</subject><body>normal</body></message>",
            "<message to='carol@example.com' type='chat'><body>offline</body></message>",
            "<message to='nobody@example.com' type='chat'><body>bounced</body></message>",
            "<message to='bob@example.com' type='headline'><body>news</body></message>",
            "<message to='bob@example.com' type='chat'><request xmlns='urn:xmpp:receipts'/>\
             <body>with a receipt request</body><store xmlns='urn:xmpp:hints'/></message>",
        ];
        for xml in stanzas {
            w.send(A, xml);
            // Every message forwarded here was taken by its inbound half.
            assert_eq!(w.router.forwarded_kept(), 0);
        }
        let mut delivered: Vec<(String, Vec<String>)> = w.delivered.into_iter().collect();
        delivered.sort();
        (delivered, format!("{:?}", w.changelog))
    };
    let kept = play(false);
    let parsed = play(true);
    assert!(!kept.0.is_empty());
    assert_eq!(kept, parsed);

    // The outbound half keeps the element; the inbound half takes it.
    let mut w = online(&["alice", "bob"], &[A, B]);
    let message = w.stanza(
        A,
        "<message to='bob@example.com' type='chat'><body>x</body></message>",
    );
    let outputs = w.router.handle(Input::Outbound(message), t());
    assert_eq!(w.router.forwarded_kept(), 1);
    let routed = outputs
        .into_iter()
        .find_map(|o| match o {
            Output::Route(r) => Some(r),
            _ => None,
        })
        .unwrap();
    w.router.handle(Input::Inbound(routed), t());
    assert_eq!(w.router.forwarded_kept(), 0);
}
