//! Room decisions, driven through a small world that plays the log: deliveries are
//! collected per session, routed stanzas, changelog records and compliance records kept
//! in order.

use std::collections::{HashMap, HashSet};

use imbus_core::{
    BareJid, CloseReason, ComplianceRecord, FullJid, GatewayId, Jid, MessageType, SessionClosed,
    SessionId, StanzaKind, StanzaReceived, Timestamp, Uuid,
};
use imbus_xmpp_stream::{Element, parse_stanza};

use super::*;

const SERVICE: &str = "conference.example.com";
const ALIAS: &str = "chat.example.com";
const A: &str = "alice@example.com/phone";
const B: &str = "bob@example.com/desk";
const B2: &str = "bob@example.com/mobile";
const C: &str = "carol@example.com/laptop";
const D: &str = "dave@example.com/pc";
const ROOM: &str = "team@conference.example.com";

const T0: i64 = 1_700_000_000_000_000;

struct World {
    rooms: Rooms,
    /// Every delivery id seen: they never repeat.
    ids: HashSet<Uuid>,
    delivered: HashMap<String, Vec<String>>,
    deliveries: Vec<imbus_core::Delivery>,
    routed: Vec<StanzaReceived>,
    events: Vec<RoomEvent>,
    compliance: Vec<ComplianceRecord>,
    archived: Vec<imbus_core::ArchivedMessage>,
    queries: Vec<StanzaReceived>,
    /// Seconds since T0 of the next stanza.
    clock: i64,
    next_id: u128,
}

fn now(clock: i64) -> Timestamp {
    Timestamp::from_micros(T0 + clock * 1_000_000)
}

fn config() -> RoomsConfig {
    let mut config = RoomsConfig::new(BareJid::new(SERVICE).unwrap());
    config.aliases.insert(BareJid::new(ALIAS).unwrap());
    config
}

fn session_of(full: &str) -> SessionId {
    SessionId::new(format!("s-{full}")).unwrap()
}

impl World {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: RoomsConfig) -> Self {
        assert_eq!(config.validate(), Ok(()));
        Self {
            rooms: Rooms::new(config),
            ids: HashSet::new(),
            delivered: HashMap::new(),
            deliveries: Vec::new(),
            routed: Vec::new(),
            events: Vec::new(),
            compliance: Vec::new(),
            archived: Vec::new(),
            queries: Vec::new(),
            clock: 0,
            next_id: 1,
        }
    }

    fn run(&mut self, input: Input) -> Vec<Output> {
        let outputs = self.rooms.handle(input, now(self.clock));
        for output in outputs.clone() {
            match output {
                Output::Deliver(mut d) => {
                    // What the gateway does with a delivery to several sessions: the
                    // stanza addressed to each copy's session.
                    let mut each = Vec::new();
                    for copy in std::mem::take(&mut d.copies) {
                        let mut element = parse_stanza(&d.xml).expect("a delivered stanza");
                        element.set_attr("to", copy.to.as_str());
                        each.push(d.for_copy(&copy, element.to_xml()));
                    }
                    each.insert(0, d);
                    for d in each {
                        assert!(self.ids.insert(d.event_id), "delivery id repeated: {d:?}");
                        self.delivered
                            .entry(d.to.as_str().to_owned())
                            .or_default()
                            .push(d.xml.clone());
                        self.deliveries.push(d);
                    }
                }
                Output::Route(s) => self.routed.push(s),
                Output::Room(e) => self.events.push(e),
                Output::Compliance(c) => self.compliance.push(c),
                Output::Archive(a) => self.archived.push(a),
                Output::ArchiveQuery(q) => self.queries.push(q),
            }
        }
        outputs
    }

    fn stanza(&mut self, from: &str, xml: &str, gateway: &str) -> StanzaReceived {
        let mut element = parse_stanza(xml).expect("test stanza parses");
        element.set_attr("from", from);
        let kind = match element.name() {
            "message" => StanzaKind::Message,
            "presence" => StanzaKind::Presence,
            _ => StanzaKind::Iq,
        };
        self.clock += 1;
        self.next_id += 1;
        StanzaReceived {
            event_id: Uuid::from_u128(self.next_id),
            gateway_id: GatewayId::new(gateway).unwrap(),
            session_id: session_of(from),
            received_at: now(self.clock),
            sender: FullJid::new(from).unwrap(),
            recipient: element.attr("to").map(|to| Jid::new(to).unwrap()),
            kind,
            stanza_type: element.attr("type").map(str::to_owned),
            stanza_id: element.attr("id").map(str::to_owned),
            xml: element.to_xml(),
        }
    }

    /// The client `from` sends `xml` (the gateway has stamped `from`).
    fn send(&mut self, from: &str, xml: &str) -> Vec<Output> {
        let stanza = self.stanza(from, xml, "gw1");
        self.run(Input::Stanza(stanza))
    }

    fn close(&mut self, full: &str) -> Vec<Output> {
        self.run(Input::SessionClosed(SessionClosed {
            jid: FullJid::new(full).unwrap(),
            gateway_id: GatewayId::new("gw1").unwrap(),
            session_id: session_of(full),
            at: now(self.clock),
            reason: CloseReason::ConnectionLost,
            detail: None,
        }))
    }

    fn take(&mut self, full: &str) -> Vec<String> {
        self.delivered.remove(full).unwrap_or_default()
    }

    fn take_one(&mut self, full: &str) -> String {
        let mut got = self.take(full);
        assert_eq!(got.len(), 1, "one stanza for {full}: {got:#?}");
        got.remove(0)
    }

    fn clear(&mut self) {
        self.delivered.clear();
        self.routed.clear();
        self.events.clear();
        self.compliance.clear();
        self.archived.clear();
        self.queries.clear();
        self.deliveries.clear();
    }

    fn join(&mut self, full: &str, nick: &str) {
        self.send(
            full,
            &format!(
                "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
            ),
        );
    }

    fn room(&self) -> Option<&Room> {
        self.rooms.room(&BareJid::new(ROOM).unwrap())
    }

    fn configure(&mut self, owner: &str, fields: &[(&str, &str)]) {
        let fields: String = fields
            .iter()
            .map(|(var, value)| format!("<field var='{var}'><value>{value}</value></field>"))
            .collect();
        self.send(
            owner,
            &format!(
                "<iq type='set' id='cfg' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <x xmlns='jabber:x:data' type='submit'>{fields}</x></query></iq>"
            ),
        );
    }

    fn admin(&mut self, from: &str, items: &str) -> String {
        self.send(
            from,
            &format!(
                "<iq type='set' id='adm' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>{items}</query></iq>"
            ),
        );
        let got = self.delivered.entry(from.to_owned()).or_default();
        let i = got
            .iter()
            .position(|x| x.starts_with("<iq"))
            .expect("an answer to the admin request");
        got.remove(i)
    }
}

/// A world where alice created `team` (instant, accepted defaults) as `Alice`, then
/// `others` joined, with everything delivered so far cleared.
fn room_with(others: &[(&str, &str)]) -> World {
    room_configured(&[], others)
}

fn room_configured(fields: &[(&str, &str)], others: &[(&str, &str)]) -> World {
    let mut w = World::new();
    w.join(A, "Alice");
    w.configure(A, fields);
    for (full, nick) in others {
        w.join(full, nick);
    }
    w.clear();
    w
}

fn el(xml: &str) -> Element {
    parse_stanza(xml).unwrap_or_else(|| panic!("unparsable: {xml}"))
}

/// (type, condition, text) of an error stanza.
fn error_of(xml: &str) -> (String, String, String) {
    let e = el(xml);
    assert_eq!(e.attr("type"), Some("error"), "{xml}");
    let error = e.child("error", "jabber:client").expect("error child");
    let condition = error
        .children()
        .find(|c| c.namespace() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    let text = error
        .child("text", "urn:ietf:params:xml:ns:xmpp-stanzas")
        .map(|t| t.text())
        .unwrap_or_default();
    (error.attr("type").unwrap_or("").to_owned(), condition, text)
}

fn assert_error(xml: &str, kind: &str, condition: &str, text: &str) {
    assert_eq!(
        error_of(xml),
        (kind.to_owned(), condition.to_owned(), text.to_owned()),
        "{xml}"
    );
}

fn codes(xml: &str) -> Vec<String> {
    el(xml)
        .child("x", "http://jabber.org/protocol/muc#user")
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn item_of(xml: &str) -> Element {
    el(xml)
        .child("x", "http://jabber.org/protocol/muc#user")
        .and_then(|x| x.child("item", "http://jabber.org/protocol/muc#user"))
        .cloned()
        .unwrap_or_else(|| panic!("no muc#user item: {xml}"))
}

fn field_values(xml: &str) -> HashMap<String, String> {
    fn walk(e: &Element, out: &mut HashMap<String, String>) {
        for c in e.children() {
            if c.is("field", "jabber:x:data")
                && let Some(var) = c.attr("var")
            {
                let v: Vec<String> = c
                    .children()
                    .filter(|v| v.name() == "value")
                    .map(|v| v.text())
                    .collect();
                out.insert(var.to_owned(), v.join("\n"));
            }
            walk(c, out);
        }
    }
    let mut out = HashMap::new();
    walk(&el(xml), &mut out);
    out
}

// ---------------------------------------------------------------- entering and creation

#[test]
fn first_join_creates_a_locked_room_owned_by_the_creator() {
    let mut w = World::new();
    w.join(A, "Alice");
    let got = w.take(A);
    assert_eq!(
        got,
        vec![
            "<presence xmlns='jabber:client' from='team@conference.example.com/Alice' to='alice@example.com/phone'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator' jid='alice@example.com/phone'/>\
             <status code='110'/><status code='201'/></x></presence>",
            "<message xmlns='jabber:client' type='groupchat' from='team@conference.example.com' to='alice@example.com/phone'><subject/></message>",
        ]
    );
    let room = w.room().unwrap();
    assert!(room.locked);
    assert_eq!(
        room.affiliation(&BareJid::new("alice@example.com").unwrap()),
        Affiliation::Owner
    );
    assert!(matches!(&w.events[..], [RoomEvent::Updated(r)] if r.locked));
}

#[test]
fn a_locked_room_refuses_others_until_the_owner_accepts_the_defaults() {
    let mut w = World::new();
    w.join(A, "Alice");
    w.clear();
    w.join(B, "Bob");
    assert_error(
        &w.take_one(B),
        "cancel",
        "item-not-found",
        "This room is locked until its owner configures it",
    );
    w.configure(A, &[]); // an empty submitted form: the instant room
    assert_eq!(
        w.take_one(A),
        "<iq xmlns='jabber:client' type='result' to='alice@example.com/phone' id='cfg' from='team@conference.example.com'/>"
    );
    assert!(!w.room().unwrap().locked);
    w.join(B, "Bob");
    assert_eq!(codes(&w.take(B)[1]), vec!["110"]);
}

#[test]
fn rooms_are_instant_when_locking_is_off_or_the_client_is_not_muc_aware() {
    let mut config = config();
    config.lock_new_rooms = false;
    let mut w = World::with(config);
    w.join(A, "Alice");
    assert!(!w.room().unwrap().locked);
    w.join(B, "Bob");
    assert_eq!(item_of(&w.take(B)[1]).attr("role"), Some("participant"));

    let mut w = World::new();
    w.send(A, &format!("<presence to='{ROOM}/Alice'/>"));
    assert!(
        !w.room().unwrap().locked,
        "groupchat 1.0 clients get instant rooms"
    );
}

#[test]
fn a_joiner_gets_the_occupants_then_itself_then_the_subject_and_the_others_see_it() {
    let mut w = room_with(&[(B, "Bob")]);
    w.join(C, "Carol");
    let carol = w.take(C);
    assert_eq!(carol.len(), 4, "{carol:#?}");
    assert!(carol[0].contains("from='team@conference.example.com/Alice'"));
    assert_eq!(item_of(&carol[0]).attr("jid"), None, "semi-anonymous");
    assert!(carol[1].contains("from='team@conference.example.com/Bob'"));
    assert!(carol[2].contains("from='team@conference.example.com/Carol'"));
    assert_eq!(codes(&carol[2]), vec!["110"]);
    assert_eq!(
        item_of(&carol[2]).attr("jid"),
        Some(C),
        "one sees one's own JID"
    );
    assert!(carol[3].contains("<subject/>"));
    // The moderator sees Carol's real JID, the participant does not.
    let alice = w.take_one(A);
    assert_eq!(item_of(&alice).attr("jid"), Some(C));
    assert_eq!(item_of(&alice).attr("role"), Some("participant"));
    let bob = w.take_one(B);
    assert_eq!(
        bob,
        "<presence xmlns='jabber:client' from='team@conference.example.com/Carol' to='bob@example.com/desk'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/></x></presence>"
    );
}

#[test]
fn non_anonymous_rooms_show_real_jids_to_everyone_with_status_100() {
    let mut w = room_configured(&[("muc#roomconfig_whois", "anyone")], &[(B, "Bob")]);
    w.join(C, "Carol");
    let carol = w.take(C);
    assert_eq!(item_of(&carol[0]).attr("jid"), Some(A));
    assert_eq!(codes(&carol[2]), vec!["100", "110"]);
    assert_eq!(item_of(&w.take_one(B)).attr("jid"), Some(C));
}

#[test]
fn presence_updates_are_broadcast_with_their_show_and_status() {
    let mut w = room_with(&[(B, "Bob")]);
    w.send(
        B,
        &format!("<presence to='{ROOM}/Bob'><show>away</show><status>lunch</status></presence>"),
    );
    assert_eq!(
        w.take_one(A),
        "<presence xmlns='jabber:client' from='team@conference.example.com/Bob' to='alice@example.com/phone'>\
         <show>away</show><status>lunch</status><x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='participant' jid='bob@example.com/desk'/></x></presence>"
    );
    assert_eq!(codes(&w.take_one(B)), vec!["110"]);
    // A newcomer sees the stored presence.
    w.join(C, "Carol");
    assert!(w.take(C)[1].contains("<show>away</show><status>lunch</status>"));
}

#[test]
fn a_presence_without_nickname_is_refused() {
    let mut w = World::new();
    w.send(A, &format!("<presence to='{ROOM}'/>"));
    assert_error(
        &w.take_one(A),
        "modify",
        "jid-malformed",
        "A nickname is required to enter a room (room@service/nickname)",
    );
    assert!(w.room().is_none());
}

#[test]
fn creating_rooms_can_be_restricted() {
    let mut config = config();
    config.creation_restricted = true;
    config
        .creators
        .insert(BareJid::new("alice@example.com").unwrap());
    let mut w = World::with(config);
    w.join(B, "Bob");
    assert_error(
        &w.take_one(B),
        "cancel",
        "not-allowed",
        "Creating rooms is restricted on this service",
    );
    assert!(w.room().is_none() && w.events.is_empty());
    w.join(A, "Alice");
    assert!(w.room().is_some());
}

// ---------------------------------------------------------------- refusals on entering

#[test]
fn nickname_conflicts_are_refused_on_entering_and_on_changing() {
    let mut w = room_with(&[(B, "Bob")]);
    w.join(C, "Bob");
    assert_error(
        &w.take_one(C),
        "cancel",
        "conflict",
        "That nickname is already in use in this room",
    );
    w.send(B, &format!("<presence to='{ROOM}/Alice'/>"));
    assert_error(
        &w.take_one(B),
        "cancel",
        "conflict",
        "That nickname is already in use in this room",
    );
    assert!(w.take(A).is_empty());
}

#[test]
fn password_protected_rooms_need_the_password() {
    let mut w = room_configured(
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "s3cret"),
        ],
        &[],
    );
    w.join(B, "Bob");
    assert_error(
        &w.take_one(B),
        "auth",
        "not-authorized",
        "A password is required to enter this room",
    );
    w.send(
        B,
        &format!("<presence to='{ROOM}/Bob'><x xmlns='http://jabber.org/protocol/muc'><password>s3cret</password></x></presence>"),
    );
    assert_eq!(codes(&w.take(B)[1]), vec!["110"]);
}

#[test]
fn members_only_rooms_admit_members_only() {
    let mut w = room_configured(&[("muc#roomconfig_membersonly", "1")], &[]);
    w.join(B, "Bob");
    assert_error(
        &w.take_one(B),
        "auth",
        "registration-required",
        "This room is members-only",
    );
    w.admin(A, "<item affiliation='member' jid='bob@example.com'/>");
    w.join(B, "Bob");
    assert_eq!(item_of(&w.take(B)[1]).attr("affiliation"), Some("member"));
}

#[test]
fn full_rooms_refuse_newcomers_but_admit_admins() {
    let mut w = room_configured(&[("muc#roomconfig_maxusers", "2")], &[(B, "Bob")]);
    w.join(C, "Carol");
    assert_error(
        &w.take_one(C),
        "wait",
        "service-unavailable",
        "This room is full",
    );
    w.admin(A, "<item affiliation='admin' jid='carol@example.com'/>");
    w.join(C, "Carol");
    assert_eq!(w.room().unwrap().occupants.len(), 3);
}

#[test]
fn sip_users_cannot_join_rooms() {
    let mut config = config();
    config.sip_gateways.insert(GatewayId::new("sip1").unwrap());
    config
        .sip_domains
        .insert(BareJid::new("sip.example.com").unwrap());
    let mut w = World::with(config);
    let stanza = w.stanza(
        B,
        &format!(
            "<presence to='{ROOM}/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ),
        "sip1",
    );
    w.run(Input::Stanza(stanza));
    assert_error(
        &w.take_one(B),
        "cancel",
        "not-allowed",
        "SIP clients cannot join chat rooms",
    );
    let sip = "eve@sip.example.com/sip";
    w.send(
        sip,
        &format!("<message to='{ROOM}' type='groupchat'><body>hi</body></message>"),
    );
    assert_error(
        &w.take_one(sip),
        "cancel",
        "not-allowed",
        "SIP clients cannot join chat rooms",
    );
    assert!(w.room().is_none());
}

// ---------------------------------------------------------------- leaving

#[test]
fn leaving_tells_everyone_and_the_last_one_out_ends_a_temporary_room() {
    let mut w = room_with(&[(B, "Bob")]);
    w.send(
        B,
        &format!("<presence to='{ROOM}/Bob' type='unavailable'/>"),
    );
    assert_eq!(
        w.take_one(A),
        "<presence xmlns='jabber:client' from='team@conference.example.com/Bob' to='alice@example.com/phone' type='unavailable'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none' jid='bob@example.com/desk'/></x></presence>"
    );
    assert_eq!(codes(&w.take_one(B)), vec!["110"]);
    assert!(matches!(&w.events[..], [RoomEvent::Updated(r)] if r.occupants.len() == 1));
    w.send(
        A,
        &format!("<presence to='{ROOM}/Alice' type='unavailable'/>"),
    );
    assert!(w.room().is_none());
    assert_eq!(
        w.events.last(),
        Some(&RoomEvent::Destroyed {
            room: BareJid::new(ROOM).unwrap(),
            at: now(w.clock),
        })
    );
}

#[test]
fn persistent_rooms_stay_when_empty() {
    let mut w = room_configured(&[("muc#roomconfig_persistentroom", "1")], &[]);
    w.send(
        A,
        &format!("<presence to='{ROOM}/Alice' type='unavailable'/>"),
    );
    let room = w.room().expect("still there");
    assert!(room.occupants.is_empty());
    assert!(matches!(&w.events[..], [RoomEvent::Updated(_)]));
}

#[test]
fn a_closed_session_leaves_its_rooms() {
    let mut w = room_with(&[(B, "Bob")]);
    // Another session of the same full JID ending changes nothing.
    w.run(Input::SessionClosed(SessionClosed {
        jid: FullJid::new(B).unwrap(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: SessionId::new("older").unwrap(),
        at: now(w.clock),
        reason: CloseReason::Replaced,
        detail: None,
    }));
    assert!(w.delivered.is_empty() && w.events.is_empty());
    w.close(B);
    assert!(w.take(B).is_empty(), "nothing goes to a closed session");
    let alice = w.take_one(A);
    assert!(
        alice.contains("from='team@conference.example.com/Bob'")
            && alice.contains("type='unavailable'")
    );
    assert_eq!(w.room().unwrap().occupants.len(), 1);
    w.close(A);
    assert!(w.room().is_none());
    assert!(matches!(w.events.last(), Some(RoomEvent::Destroyed { .. })));
}

#[test]
fn nickname_changes_use_status_303() {
    let mut w = room_with(&[(B, "Bob")]);
    w.send(B, &format!("<presence to='{ROOM}/Robert'/>"));
    let alice = w.take(A);
    assert_eq!(alice.len(), 2);
    assert!(
        alice[0].contains("from='team@conference.example.com/Bob'")
            && alice[0].contains("type='unavailable'")
    );
    assert_eq!(codes(&alice[0]), vec!["303"]);
    assert_eq!(item_of(&alice[0]).attr("nick"), Some("Robert"));
    assert!(alice[1].contains("from='team@conference.example.com/Robert'"));
    let bob = w.take(B);
    assert_eq!(codes(&bob[0]), vec!["110", "303"]);
    assert_eq!(codes(&bob[1]), vec!["110"]);
    let room = w.room().unwrap();
    assert_eq!(
        room.occupants.keys().collect::<Vec<_>>(),
        vec!["Alice", "Robert"]
    );
}

// ---------------------------------------------------------------- messages

#[test]
fn group_chat_goes_to_every_occupant_with_one_compliance_record_per_user() {
    let mut w = room_with(&[(B, "Bob"), (B2, "Bobby")]);
    let outputs = w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat' id='m1'><body>hello</body></message>"),
    );
    let event_id = Uuid::from_u128(w.next_id);
    let expected = |to: &str| {
        format!(
            "<message xmlns='jabber:client' type='groupchat' id='m1' from='team@conference.example.com/Alice' to='{to}'><body>hello</body></message>"
        )
    };
    for to in [A, B, B2] {
        assert_eq!(w.take(to), vec![expected(to)]);
    }
    let ids: Vec<Uuid> = w.deliveries.iter().map(|d| d.event_id).collect();
    let want: Vec<Uuid> = [A, B2, B]
        .iter()
        .map(|to| message_delivery_id(&event_id, &FullJid::new(to).unwrap()))
        .collect();
    let mut ids_sorted = ids.clone();
    ids_sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(ids_sorted, want_sorted);
    let recipients: Vec<&str> = w.compliance.iter().map(|c| c.recipient.as_str()).collect();
    assert_eq!(recipients, vec!["alice@example.com", "bob@example.com"]);
    let record = &w.compliance[0];
    assert_eq!(record.event_id, event_id);
    assert_eq!(record.message_type, MessageType::Groupchat);
    assert_eq!(record.sender, Jid::new(A).unwrap());
    assert_eq!(record.room, Some(BareJid::new(ROOM).unwrap()));
    assert_eq!(record.nickname.as_deref(), Some("Alice"));
    assert_eq!(record.body.as_deref(), Some("hello"));
    assert_eq!(
        record.xml,
        "<message xmlns='jabber:client' type='groupchat' id='m1' from='team@conference.example.com/Alice'><body>hello</body></message>"
    );
    assert!(
        outputs.iter().any(|o| matches!(o, Output::Room(_))),
        "history changed"
    );
}

#[test]
fn group_chat_is_one_delivery_per_gateway_with_a_copy_for_each_other_occupant() {
    let mut w = room_with(&[(B, "Bob"), (B2, "Bobby")]);
    // Carol and Dave are on another gateway.
    for (full, nick) in [(C, "Carol"), (D, "Dave")] {
        let join = w.stanza(
            full,
            &format!(
                "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
            ),
            "gw2",
        );
        w.run(Input::Stanza(join));
    }
    w.clear();
    let outputs = w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat' id='m2'><body>hi all</body></message>"),
    );
    let event_id = Uuid::from_u128(w.next_id);
    let deliveries: Vec<&imbus_core::Delivery> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Deliver(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(deliveries.len(), 2, "one per gateway: {deliveries:#?}");
    let mut per_gateway: Vec<(String, Vec<String>)> = deliveries
        .iter()
        .map(|d| {
            let element = parse_stanza(&d.xml).unwrap();
            assert_eq!(element.attr("to"), Some(d.to.as_str()));
            assert_eq!(d.event_id, message_delivery_id(&event_id, &d.to));
            for copy in &d.copies {
                assert_eq!(copy.event_id, message_delivery_id(&event_id, &copy.to));
                assert_eq!(copy.session_id, session_of(copy.to.as_str()));
            }
            let mut to: Vec<String> = std::iter::once(d.to.to_string())
                .chain(d.copies.iter().map(|c| c.to.to_string()))
                .collect();
            to.sort();
            (d.gateway_id.to_string(), to)
        })
        .collect();
    per_gateway.sort();
    assert_eq!(
        per_gateway,
        vec![
            (
                "gw1".to_owned(),
                vec![A.to_owned(), B.to_owned(), B2.to_owned()]
            ),
            ("gw2".to_owned(), vec![C.to_owned(), D.to_owned()]),
        ]
    );
    // Each session gets the stanza addressed to it, once.
    for to in [A, B, B2, C, D] {
        assert_eq!(
            w.take(to),
            vec![format!(
                "<message xmlns='jabber:client' type='groupchat' id='m2' from='team@conference.example.com/Alice' to='{to}'><body>hi all</body></message>"
            )]
        );
    }
    assert_eq!(
        w.compliance.len(),
        4,
        "one per user, not per gateway or session"
    );
}

#[test]
fn a_presence_goes_once_to_each_group_of_viewers_who_see_the_same_stanza() {
    let mut w = room_with(&[(B, "Bob"), (B2, "Bobby")]);
    let outputs = w.send(
        C,
        &format!(
            "<presence to='{ROOM}/Carol'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ),
    );
    // Carol's presence: Alice (owner, a moderator, sees real JIDs), Bob's two sessions
    // (participants, who do not), Carol herself (status 110).
    let mut groups: Vec<Vec<String>> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Deliver(d) if d.xml.contains("from='team@conference.example.com/Carol'") => {
                let mut to: Vec<String> = std::iter::once(d.to.to_string())
                    .chain(d.copies.iter().map(|c| c.to.to_string()))
                    .collect();
                to.sort();
                Some(to)
            }
            _ => None,
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        vec![
            vec![A.to_owned()],
            vec![B.to_owned(), B2.to_owned()],
            vec![C.to_owned()],
        ]
    );
    for to in [B, B2] {
        let got = w.take(to);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].contains(&format!("to='{to}'")), "{}", got[0]);
        assert!(
            !got[0].contains(C),
            "no real JID for participants: {}",
            got[0]
        );
    }
    let alice = w.take_one(A);
    assert!(alice.contains(&format!("jid='{C}'")), "{alice}");
    let carol = w.take(C);
    assert!(carol.iter().any(|x| x.contains("code='110'")), "{carol:#?}");
}

#[test]
fn messages_without_body_are_relayed_but_not_archived_or_kept() {
    let mut w = room_with(&[(B, "Bob")]);
    w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
    );
    assert_eq!(w.take(B).len(), 1);
    assert!(w.compliance.is_empty() && w.events.is_empty());
    assert!(w.room().unwrap().history.is_empty());
}

#[test]
fn non_occupants_cannot_send_group_chat_and_missing_rooms_are_reported() {
    let mut w = room_with(&[(B, "Bob")]);
    w.send(
        C,
        &format!("<message to='{ROOM}' type='groupchat'><body>hi</body></message>"),
    );
    assert_error(
        &w.take_one(C),
        "modify",
        "not-acceptable",
        "Only occupants may send messages to the room",
    );
    assert!(w.take(A).is_empty() && w.compliance.is_empty());
    w.send(
        C,
        "<message to='nowhere@conference.example.com' type='groupchat'><body>hi</body></message>",
    );
    assert_error(
        &w.take_one(C),
        "cancel",
        "item-not-found",
        "This room does not exist",
    );
    assert!(w.events.is_empty());
}

#[test]
fn private_messages_go_to_one_occupant_from_the_senders_room_address() {
    let mut w = room_with(&[(B, "Bob")]);
    w.send(
        A,
        &format!("<message to='{ROOM}/Bob' type='chat'><body>psst</body></message>"),
    );
    assert_eq!(
        w.take_one(B),
        "<message xmlns='jabber:client' to='bob@example.com/desk' type='chat' from='team@conference.example.com/Alice'>\
         <body>psst</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>"
    );
    assert!(w.take(A).is_empty());
    assert_eq!(w.compliance.len(), 1);
    assert_eq!(w.compliance[0].recipient.as_str(), "bob@example.com");
    assert_eq!(w.compliance[0].message_type, MessageType::Chat);
    w.send(
        A,
        &format!("<message to='{ROOM}/Nobody' type='chat'><body>?</body></message>"),
    );
    assert_error(
        &w.take_one(A),
        "cancel",
        "item-not-found",
        "No occupant has that nickname",
    );
    w.send(
        C,
        &format!("<message to='{ROOM}/Bob' type='chat'><body>hi</body></message>"),
    );
    assert_error(
        &w.take_one(C),
        "modify",
        "not-acceptable",
        "Only occupants may send private messages in the room",
    );
    w.send(
        A,
        &format!("<message to='{ROOM}/Bob' type='groupchat'><body>x</body></message>"),
    );
    assert_error(
        &w.take_one(A),
        "modify",
        "bad-request",
        "Group chat messages go to the room, not to one occupant",
    );
}

#[test]
fn error_stanzas_are_never_answered() {
    let mut w = room_with(&[(B, "Bob")]);
    w.send(
        C,
        &format!("<message to='{ROOM}' type='error'><body>x</body></message>"),
    );
    w.send(C, &format!("<iq to='{ROOM}' type='error' id='e'/>"));
    assert!(w.delivered.is_empty());
}

#[test]
fn subject_changes_follow_the_permission_setting() {
    let mut w = room_with(&[(B, "Bob")]);
    w.send(
        B,
        &format!("<message to='{ROOM}' type='groupchat'><subject>Release 2.0</subject></message>"),
    );
    assert_eq!(
        w.take_one(A),
        "<message xmlns='jabber:client' type='groupchat' from='team@conference.example.com/Bob' to='alice@example.com/phone'><subject>Release 2.0</subject></message>"
    );
    let subject = w.room().unwrap().subject.clone().unwrap();
    assert_eq!(
        (subject.text.as_str(), subject.nick.as_deref()),
        ("Release 2.0", Some("Bob"))
    );
    assert!(w.compliance.is_empty(), "a subject change is not an IM");

    w.configure(A, &[("muc#roomconfig_changesubject", "0")]);
    w.clear();
    w.send(
        B,
        &format!("<message to='{ROOM}' type='groupchat'><subject>mine</subject></message>"),
    );
    assert_error(
        &w.take_one(B),
        "auth",
        "forbidden",
        "Only moderators may change the subject of this room",
    );
    w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat'><subject>ours</subject></message>"),
    );
    assert_eq!(w.room().unwrap().subject.as_ref().unwrap().text, "ours");
}

// ---------------------------------------------------------------- history

#[test]
fn newcomers_get_the_history_with_delay_stamps_then_the_subject() {
    let mut w = room_with(&[]);
    w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat'><subject>Topic</subject></message>"),
    );
    for i in 1..=3 {
        w.send(
            A,
            &format!("<message to='{ROOM}' type='groupchat'><body>m{i}</body></message>"),
        );
    }
    let first_at = now(w.clock - 2);
    w.clear();
    w.join(B, "Bob");
    let bob = w.take(B);
    assert_eq!(bob.len(), 2 + 3 + 1, "{bob:#?}");
    assert_eq!(
        bob[2],
        format!(
            "<message xmlns='jabber:client' type='groupchat' from='team@conference.example.com/Alice' to='bob@example.com/desk'>\
             <body>m1</body><delay xmlns='urn:xmpp:delay' from='team@conference.example.com' stamp='{}'/></message>",
            first_at.to_rfc3339()
        )
    );
    assert!(bob[4].contains("<body>m3</body>"));
    assert_eq!(
        bob[5],
        "<message xmlns='jabber:client' type='groupchat' from='team@conference.example.com/Alice' to='bob@example.com/desk'><subject>Topic</subject></message>"
    );
    let delayed: Vec<_> = w.deliveries.iter().filter_map(|d| d.delayed_from).collect();
    assert_eq!(delayed.len(), 3);
    assert_eq!(delayed[0], first_at);
}

#[test]
fn history_honours_the_clients_limits() {
    let mut w = room_with(&[]);
    for i in 1..=5 {
        w.send(
            A,
            &format!("<message to='{ROOM}' type='groupchat'><body>m{i}</body></message>"),
        );
    }
    w.clear();
    w.send(
        B,
        &format!("<presence to='{ROOM}/Bob'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='2'/></x></presence>"),
    );
    let bob = w.take(B);
    let bodies: Vec<&String> = bob.iter().filter(|x| x.contains("<body>")).collect();
    assert_eq!(bodies.len(), 2);
    assert!(bodies[0].contains("m4") && bodies[1].contains("m5"));
    // m5 was received two seconds before Carol's join, m4 three.
    w.send(
        C,
        &format!("<presence to='{ROOM}/Carol'><x xmlns='http://jabber.org/protocol/muc'><history seconds='2'/></x></presence>"),
    );
    let carol: Vec<String> = w
        .take(C)
        .into_iter()
        .filter(|x| x.contains("<body>"))
        .collect();
    assert_eq!(carol.len(), 1, "{carol:#?}");
    assert!(carol[0].contains("m5"));
    w.send(
        D,
        &format!("<presence to='{ROOM}/Dave'><x xmlns='http://jabber.org/protocol/muc'><history maxchars='0'/></x></presence>"),
    );
    assert!(w.take(D).iter().all(|x| !x.contains("<body>")));
}

#[test]
fn history_length_is_the_service_setting_unless_the_room_chooses_within_the_maximum() {
    let mut config = config();
    config.history_for_new_joiners = 2;
    config.max_history_length = 4;
    let mut w = World::with(config);
    w.join(A, "Alice");
    w.configure(A, &[]);
    for i in 1..=6 {
        w.send(
            A,
            &format!("<message to='{ROOM}' type='groupchat'><body>m{i}</body></message>"),
        );
    }
    assert_eq!(w.room().unwrap().history.len(), 2);
    assert!(w.room().unwrap().history[1].xml.contains("m6"));
    // The service setting changes live for rooms that did not choose.
    w.rooms.config_mut().history_for_new_joiners = 3;
    w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat'><body>m7</body></message>"),
    );
    assert_eq!(w.room().unwrap().history.len(), 3);
    // A room asking for more than the maximum gets the maximum.
    w.configure(A, &[("muc#maxhistoryfetch", "10")]);
    assert_eq!(w.room().unwrap().config.history_length, Some(4));
    for i in 8..=12 {
        w.send(
            A,
            &format!("<message to='{ROOM}' type='groupchat'><body>m{i}</body></message>"),
        );
    }
    assert_eq!(w.room().unwrap().history.len(), 4);
    w.clear();
    w.join(B, "Bob");
    assert_eq!(w.take(B).iter().filter(|x| x.contains("<body>")).count(), 4);
}

// ---------------------------------------------------------------- configuration

#[test]
fn owners_read_the_configuration_form_with_current_values() {
    let mut w = room_configured(
        &[
            ("muc#roomconfig_roomname", "The Team"),
            ("muc#roomconfig_maxusers", "30"),
            ("muc#roomconfig_whois", "anyone"),
        ],
        &[(B, "Bob")],
    );
    w.send(
        A,
        &format!("<iq type='get' id='g' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"),
    );
    let form = w.take_one(A);
    let values = field_values(&form);
    let expect = [
        ("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"),
        ("muc#roomconfig_roomname", "The Team"),
        ("muc#roomconfig_roomdesc", ""),
        ("muc#roomconfig_persistentroom", "0"),
        ("muc#roomconfig_publicroom", "1"),
        ("muc#roomconfig_membersonly", "0"),
        ("muc#roomconfig_passwordprotectedroom", "0"),
        ("muc#roomconfig_roomsecret", ""),
        ("muc#roomconfig_moderatedroom", "0"),
        ("muc#roomconfig_maxusers", "30"),
        ("muc#roomconfig_whois", "anyone"),
        ("muc#maxhistoryfetch", "15"),
        ("muc#roomconfig_changesubject", "1"),
        ("muc#roomconfig_allowinvites", "0"),
    ];
    for (var, value) in expect {
        assert_eq!(
            values.get(var).map(String::as_str),
            Some(value),
            "{var} in {form}"
        );
    }
    assert_eq!(values.len(), expect.len());
    // Others may not.
    w.send(
        B,
        &format!("<iq type='get' id='g' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"),
    );
    assert_error(
        &w.take_one(B),
        "auth",
        "forbidden",
        "Only owners may configure or destroy the room",
    );
}

#[test]
fn submitting_the_form_applies_it_and_tells_the_occupants() {
    let mut w = room_with(&[(B, "Bob")]);
    w.configure(
        A,
        &[
            ("muc#roomconfig_roomdesc", "Where we ship"),
            ("muc#roomconfig_persistentroom", "true"),
            ("muc#roomconfig_publicroom", "0"),
            ("muc#roomconfig_moderatedroom", "1"),
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "pw"),
            ("muc#roomconfig_allowinvites", "1"),
        ],
    );
    let c = &w.room().unwrap().config;
    assert_eq!(
        *c,
        RoomConfig {
            name: None,
            description: Some("Where we ship".to_owned()),
            persistent: true,
            public: false,
            members_only: false,
            password: Some("pw".to_owned()),
            moderated: true,
            max_users: None,
            whois: Whois::Moderators,
            history_length: None,
            change_subject: true,
            allow_invites: true,
        }
    );
    assert_eq!(
        w.take_one(B),
        "<message xmlns='jabber:client' type='groupchat' from='team@conference.example.com' to='bob@example.com/desk'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><status code='104'/></x></message>"
    );
    assert_eq!(w.take(A).len(), 2, "the result, then the 104 notice");
}

#[test]
fn invalid_forms_are_refused_and_change_nothing() {
    let mut w = room_with(&[]);
    w.configure(A, &[("muc#roomconfig_maxusers", "lots")]);
    assert_error(
        &w.take_one(A),
        "modify",
        "bad-request",
        "Invalid value for muc#roomconfig_maxusers",
    );
    w.configure(A, &[("muc#roomconfig_whois", "nobody")]);
    assert_error(
        &w.take_one(A),
        "modify",
        "bad-request",
        "Invalid value for muc#roomconfig_whois",
    );
    w.configure(A, &[("muc#roomconfig_passwordprotectedroom", "1")]);
    assert_error(
        &w.take_one(A),
        "modify",
        "not-acceptable",
        "A password-protected room needs a password (muc#roomconfig_roomsecret)",
    );
    assert_eq!(w.room().unwrap().config, RoomConfig::default());
    assert!(w.events.is_empty());
}

#[test]
fn cancelling_the_configuration_of_a_new_room_destroys_it() {
    let mut w = World::new();
    w.join(A, "Alice");
    w.clear();
    w.send(
        A,
        &format!("<iq type='set' id='c' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='cancel'/></query></iq>"),
    );
    let alice = w.take(A);
    assert_eq!(alice.len(), 2);
    assert!(alice[0].contains("type='unavailable'") && alice[0].contains("<destroy"));
    assert!(alice[1].starts_with("<iq") && alice[1].contains("type='result'"));
    assert!(w.room().is_none());
    assert!(matches!(&w.events[..], [RoomEvent::Destroyed { .. }]));
}

#[test]
fn owners_destroy_rooms_and_every_occupant_is_told() {
    let mut w = room_configured(&[("muc#roomconfig_persistentroom", "1")], &[(B, "Bob")]);
    w.send(
        B,
        &format!("<iq type='set' id='d' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>"),
    );
    assert_error(
        &w.take_one(B),
        "auth",
        "forbidden",
        "Only owners may configure or destroy the room",
    );
    w.send(
        A,
        &format!("<iq type='set' id='d' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
                  <destroy jid='new@conference.example.com'><reason>moved</reason></destroy></query></iq>"),
    );
    assert_eq!(
        w.take_one(B),
        "<presence xmlns='jabber:client' type='unavailable' from='team@conference.example.com/Bob' to='bob@example.com/desk'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/>\
         <destroy jid='new@conference.example.com'><reason>moved</reason></destroy></x></presence>"
    );
    assert_eq!(w.take(A).len(), 2);
    assert!(w.room().is_none());
    assert!(matches!(&w.events[..], [RoomEvent::Destroyed { .. }]));
}

// ---------------------------------------------------------------- affiliations and roles

#[test]
fn admins_manage_member_lists() {
    let mut w = room_with(&[(B, "Bob")]);
    let answer = w.admin(
        A,
        "<item affiliation='member' jid='carol@example.com'/><item affiliation='member' jid='dave@example.com'/>",
    );
    assert!(answer.contains("type='result'"));
    w.send(
        A,
        &format!("<iq type='get' id='l' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query></iq>"),
    );
    assert_eq!(
        w.take_one(A),
        "<iq xmlns='jabber:client' type='result' to='alice@example.com/phone' id='l' from='team@conference.example.com'>\
         <query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='carol@example.com'/>\
         <item affiliation='member' jid='dave@example.com'/></query></iq>"
    );
    w.send(
        B,
        &format!("<iq type='get' id='l' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query></iq>"),
    );
    assert_error(
        &w.take_one(B),
        "auth",
        "forbidden",
        "Only admins and owners may see affiliation lists",
    );
    let answer = w.admin(B, "<item affiliation='member' jid='eve@example.com'/>");
    assert_error(
        &answer,
        "auth",
        "forbidden",
        "Only admins and owners may change affiliations",
    );
}

#[test]
fn an_affiliation_change_of_an_occupant_is_broadcast_with_its_new_role() {
    let mut w = room_with(&[(B, "Bob")]);
    w.admin(A, "<item affiliation='admin' jid='bob@example.com'/>");
    let bob = w.take_one(B);
    assert_eq!(item_of(&bob).attr("affiliation"), Some("admin"));
    assert_eq!(item_of(&bob).attr("role"), Some("moderator"));
    assert_eq!(codes(&bob), vec!["110"]);
}

#[test]
fn admins_cannot_touch_admins_or_owners_and_only_owners_grant_those() {
    let mut w = room_with(&[(B, "Bob"), (C, "Carol")]);
    w.admin(
        A,
        "<item affiliation='admin' jid='bob@example.com'/><item affiliation='admin' jid='carol@example.com'/>",
    );
    w.clear();
    let text = "Only owners may change the affiliation of admins and owners";
    assert_error(
        &w.admin(B, "<item affiliation='outcast' jid='carol@example.com'/>"),
        "cancel",
        "not-allowed",
        text,
    );
    assert_error(
        &w.admin(B, "<item affiliation='outcast' jid='alice@example.com'/>"),
        "cancel",
        "not-allowed",
        text,
    );
    assert_error(
        &w.admin(B, "<item affiliation='owner' jid='dave@example.com'/>"),
        "cancel",
        "not-allowed",
        text,
    );
    assert_error(
        &w.admin(B, "<item nick='Carol' role='none'/>"),
        "cancel",
        "not-allowed",
        "Admins and owners cannot be kicked or lose their role",
    );
    assert_error(
        &w.admin(B, "<item nick='Alice' role='none'/>"),
        "cancel",
        "not-allowed",
        "Admins and owners cannot be kicked or lose their role",
    );
    assert_eq!(w.room().unwrap().occupants.len(), 3);
    // An admin may still ban an ordinary user.
    assert!(
        w.admin(B, "<item affiliation='outcast' jid='dave@example.com'/>")
            .contains("type='result'")
    );
}

#[test]
fn the_last_owner_cannot_step_down() {
    let mut w = room_with(&[]);
    assert_error(
        &w.admin(A, "<item affiliation='member' jid='alice@example.com'/>"),
        "cancel",
        "conflict",
        "A room needs at least one owner",
    );
    // With a second owner in the same request it works.
    let answer = w.admin(
        A,
        "<item affiliation='owner' jid='bob@example.com'/><item affiliation='admin' jid='alice@example.com'/>",
    );
    assert!(answer.contains("type='result'"), "{answer}");
    let room = w.room().unwrap();
    assert_eq!(
        room.affiliation(&BareJid::new("bob@example.com").unwrap()),
        Affiliation::Owner
    );
    assert_eq!(
        room.affiliation(&BareJid::new("alice@example.com").unwrap()),
        Affiliation::Admin
    );
}

#[test]
fn moderators_kick_with_status_307() {
    let mut w = room_with(&[(B, "Bob"), (C, "Carol")]);
    let answer = w.admin(
        A,
        "<item nick='Bob' role='none'><reason>spam</reason></item>",
    );
    assert!(answer.contains("type='result'"));
    assert_eq!(
        w.take_one(B),
        "<presence xmlns='jabber:client' from='team@conference.example.com/Bob' to='bob@example.com/desk' type='unavailable'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none' jid='bob@example.com/desk'>\
         <actor nick='Alice'/><reason>spam</reason></item><status code='110'/><status code='307'/></x></presence>"
    );
    assert_eq!(codes(&w.take_one(C)), vec!["307"]);
    assert!(!w.room().unwrap().occupants.contains_key("Bob"));
    // A participant cannot kick.
    assert_error(
        &w.admin(C, "<item nick='Alice' role='none'/>"),
        "auth",
        "forbidden",
        "Only moderators may change roles",
    );
}

#[test]
fn banned_users_are_removed_with_status_301_and_cannot_come_back() {
    let mut w = room_with(&[(B, "Bob"), (B2, "Bobby")]);
    w.admin(A, "<item affiliation='outcast' jid='bob@example.com'/>");
    // Bob's sessions are removed one after the other: the second one hears of the first.
    let first = w.take_one(B);
    let second = w.take(B2);
    assert_eq!(second.len(), 2);
    assert_eq!(codes(&second[0]), vec!["301"]);
    assert_eq!(item_of(&second[0]).attr("jid"), None, "semi-anonymous");
    for got in [&first, &second[1]] {
        assert_eq!(codes(got), vec!["110", "301"]);
        assert_eq!(item_of(got).attr("affiliation"), Some("outcast"));
    }
    let alice = w.take(A);
    assert_eq!(alice.len(), 2);
    assert!(alice.iter().all(|x| codes(x) == vec!["301"]));
    assert_eq!(w.room().unwrap().occupants.len(), 1);
    w.join(B, "Bob");
    assert_error(
        &w.take_one(B),
        "auth",
        "forbidden",
        "You are banned from this room",
    );
}

#[test]
fn voice_in_moderated_rooms() {
    let mut w = room_configured(&[("muc#roomconfig_moderatedroom", "1")], &[(B, "Bob")]);
    assert_eq!(w.room().unwrap().occupants["Bob"].role, Role::Visitor);
    w.send(
        B,
        &format!("<message to='{ROOM}' type='groupchat'><body>may I?</body></message>"),
    );
    assert_error(
        &w.take_one(B),
        "auth",
        "forbidden",
        "You need voice to send messages in this moderated room",
    );
    w.admin(A, "<item nick='Bob' role='participant'/>");
    assert_eq!(item_of(&w.take_one(B)).attr("role"), Some("participant"));
    w.send(
        B,
        &format!("<message to='{ROOM}' type='groupchat'><body>thanks</body></message>"),
    );
    let alice = w.take(A);
    assert_eq!(item_of(&alice[0]).attr("role"), Some("participant"));
    assert!(alice[1].contains("<body>thanks</body>"));
    // Only admins and owners make moderators.
    w.join(C, "Carol");
    w.admin(A, "<item nick='Carol' role='participant'/>");
    w.clear();
    assert_error(
        &w.admin(B, "<item nick='Carol' role='moderator'/>"),
        "auth",
        "forbidden",
        "Only moderators may change roles",
    );
    assert!(
        w.admin(A, "<item nick='Carol' role='moderator'/>")
            .contains("type='result'")
    );
    assert_eq!(w.room().unwrap().occupants["Carol"].role, Role::Moderator);
}

#[test]
fn losing_membership_of_a_members_only_room_removes_with_status_321() {
    let mut w = room_configured(&[("muc#roomconfig_membersonly", "1")], &[]);
    w.admin(A, "<item affiliation='member' jid='bob@example.com'/>");
    w.join(B, "Bob");
    w.clear();
    w.admin(A, "<item affiliation='none' jid='bob@example.com'/>");
    assert_eq!(codes(&w.take_one(B)), vec!["110", "321"]);
    assert!(!w.room().unwrap().occupants.contains_key("Bob"));
}

#[test]
fn moderators_list_occupants_by_role() {
    let mut w = room_with(&[(B, "Bob")]);
    w.send(
        A,
        &format!("<iq type='get' id='r' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'><item role='participant'/></query></iq>"),
    );
    assert!(w.take_one(A).contains(
        "<item affiliation='none' jid='bob@example.com/desk' nick='Bob' role='participant'/>"
    ));
}

// ---------------------------------------------------------------- invitations

#[test]
fn mediated_invitations_reach_the_invitee_through_the_router() {
    let mut w = room_with(&[]);
    w.send(
        A,
        &format!(
            "<message to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'>\
                  <invite to='carol@example.com'><reason>join us</reason></invite></x></message>"
        ),
    );
    assert_eq!(w.routed.len(), 1);
    let routed = &w.routed[0];
    assert_eq!(
        routed.recipient,
        Some(Jid::new("carol@example.com").unwrap())
    );
    assert_eq!(routed.sender, FullJid::new(A).unwrap());
    assert_eq!(routed.owner(), BareJid::new("carol@example.com").unwrap());
    assert_eq!(
        routed.xml,
        "<message xmlns='jabber:client' from='team@conference.example.com' to='carol@example.com'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><invite from='alice@example.com/phone'>\
         <reason>join us</reason></invite></x></message>"
    );
    assert!(w.delivered.is_empty());
    // Non-occupants cannot invite.
    w.send(
        D,
        &format!("<message to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'><invite to='carol@example.com'/></x></message>"),
    );
    assert_error(
        &w.take_one(D),
        "modify",
        "not-acceptable",
        "Only occupants may invite others to the room",
    );
}

#[test]
fn invitations_into_members_only_rooms() {
    let mut w = room_configured(
        &[
            ("muc#roomconfig_membersonly", "1"),
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "pw"),
        ],
        &[],
    );
    w.send(
        A,
        &format!("<message to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'><invite to='bob@example.com'/></x></message>"),
    );
    assert!(w.routed[0].xml.contains("<password>pw</password>"));
    let bob = BareJid::new("bob@example.com").unwrap();
    assert_eq!(w.room().unwrap().affiliation(&bob), Affiliation::Member);
    w.send(
        B,
        &format!("<presence to='{ROOM}/Bob'><x xmlns='http://jabber.org/protocol/muc'><password>pw</password></x></presence>"),
    );
    assert_eq!(w.room().unwrap().occupants.len(), 2);
    w.clear();
    // A member may not invite unless the room allows it.
    w.send(
        B,
        &format!("<message to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'><invite to='carol@example.com'/></x></message>"),
    );
    assert_error(
        &w.take_one(B),
        "auth",
        "forbidden",
        "Only admins and owners may invite others to this members-only room",
    );
    assert!(w.routed.is_empty());
}

#[test]
fn declines_go_back_to_the_inviter() {
    let mut w = room_with(&[]);
    w.send(
        C,
        &format!("<message to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'>\
                  <decline to='alice@example.com/phone'><reason>busy</reason></decline></x></message>"),
    );
    assert_eq!(
        w.routed[0].xml,
        "<message xmlns='jabber:client' from='team@conference.example.com' to='alice@example.com/phone'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><decline from='carol@example.com'><reason>busy</reason></decline></x></message>"
    );
    assert_eq!(w.routed[0].recipient, Some(Jid::new(A).unwrap()));
}

// ---------------------------------------------------------------- discovery and search

#[test]
fn service_discovery_names_the_conference_service() {
    let mut w = World::new();
    w.send(A, &format!("<iq type='get' id='i' to='{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    assert_eq!(
        w.take_one(A),
        "<iq xmlns='jabber:client' type='result' to='alice@example.com/phone' id='i' from='conference.example.com'>\
         <query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text' name='Chat rooms'/>\
         <feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/disco#items'/>\
         <feature var='http://jabber.org/protocol/muc'/><feature var='http://jabber.org/protocol/rsm'/>\
         <feature var='jabber:iq:search'/></query></iq>"
    );
    w.send(
        A,
        &format!("<iq type='get' id='v' to='{SERVICE}'><query xmlns='jabber:iq:version'/></iq>"),
    );
    assert_error(
        &w.take_one(A),
        "cancel",
        "service-unavailable",
        "The chat service does not answer this request",
    );
}

#[test]
fn room_discovery_lists_its_features_and_room_info() {
    let mut w = room_configured(
        &[
            ("muc#roomconfig_roomname", "The Team"),
            ("muc#roomconfig_roomdesc", "Shipping"),
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_membersonly", "1"),
            ("muc#roomconfig_whois", "anyone"),
        ],
        &[],
    );
    w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat'><subject>Go</subject></message>"),
    );
    w.clear();
    w.send(B, &format!("<iq type='get' id='i' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    let info = w.take_one(B);
    let query = el(&info);
    let query = query
        .child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let features: Vec<&str> = query
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    assert_eq!(
        features,
        vec![
            "http://jabber.org/protocol/muc",
            "muc_persistent",
            "muc_membersonly",
            "muc_unsecured",
            "muc_public",
            "muc_unmoderated",
            "muc_nonanonymous",
            "urn:xmpp:mam:2",
            "urn:xmpp:fulltext:0",
            "urn:xmpp:sid:0"
        ]
    );
    assert!(info.contains("<identity category='conference' type='text' name='The Team'/>"));
    let values = field_values(&info);
    assert_eq!(
        values["FORM_TYPE"],
        "http://jabber.org/protocol/muc#roominfo"
    );
    assert_eq!(values["muc#roominfo_description"], "Shipping");
    assert_eq!(values["muc#roominfo_subject"], "Go");
    assert_eq!(values["muc#roominfo_occupants"], "1");
}

#[test]
fn room_items_list_occupants_of_public_rooms_only() {
    let mut w = room_with(&[(B, "Bob")]);
    let ask = |w: &mut World| {
        w.send(C, &format!("<iq type='get' id='it' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"));
        w.take_one(C)
    };
    assert!(ask(&mut w).contains(
        "<item jid='team@conference.example.com/Alice' name='Alice'/><item jid='team@conference.example.com/Bob' name='Bob'/>"
    ));
    w.configure(A, &[("muc#roomconfig_publicroom", "0")]);
    assert!(ask(&mut w).contains("<query xmlns='http://jabber.org/protocol/disco#items'/>"));
}

/// A service with public rooms r1..r5, a hidden room and a locked one.
fn directory() -> World {
    let mut w = World::new();
    for i in 1..=5 {
        w.send(A, &format!("<presence to='r{i}@{SERVICE}/A'><x xmlns='http://jabber.org/protocol/muc'/></presence>"));
        w.send(A, &format!("<iq type='set' id='c' to='r{i}@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>\
            <field var='muc#roomconfig_roomname'><value>Room {i}</value></field></x></query></iq>"));
    }
    w.send(A, &format!("<presence to='hidden@{SERVICE}/A'><x xmlns='http://jabber.org/protocol/muc'/></presence>"));
    w.send(A, &format!("<iq type='set' id='c' to='hidden@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>\
        <field var='muc#roomconfig_publicroom'><value>0</value></field></x></query></iq>"));
    w.send(A, &format!("<presence to='locked@{SERVICE}/A'><x xmlns='http://jabber.org/protocol/muc'/></presence>"));
    w.clear();
    w
}

fn items(xml: &str) -> Vec<String> {
    el(xml)
        .child("query", "http://jabber.org/protocol/disco#items")
        .unwrap()
        .children()
        .filter(|c| c.name() == "item")
        .filter_map(|c| c.attr("jid").map(str::to_owned))
        .collect()
}

#[test]
fn the_room_directory_lists_public_rooms_sorted_with_result_set_paging() {
    let mut w = directory();
    let ask = |w: &mut World, set: &str| {
        w.send(B, &format!("<iq type='get' id='d' to='{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#items'>{set}</query></iq>"));
        w.take_one(B)
    };
    let all = ask(&mut w, "");
    assert_eq!(
        items(&all),
        (1..=5)
            .map(|i| format!("r{i}@{SERVICE}"))
            .collect::<Vec<_>>()
    );
    assert!(all.contains("<item jid='r1@conference.example.com' name='Room 1'/>"));
    let page = ask(
        &mut w,
        "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set>",
    );
    assert_eq!(
        items(&page),
        vec![format!("r1@{SERVICE}"), format!("r2@{SERVICE}")]
    );
    assert!(page.contains(
        "<set xmlns='http://jabber.org/protocol/rsm'><first index='0'>r1@conference.example.com</first>\
         <last>r2@conference.example.com</last><count>5</count></set>"
    ));
    let next = ask(
        &mut w,
        "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><after>r2@conference.example.com</after></set>",
    );
    assert_eq!(
        items(&next),
        vec![format!("r3@{SERVICE}"), format!("r4@{SERVICE}")]
    );
    assert!(next.contains("<first index='2'>"));
    let last = ask(
        &mut w,
        "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set>",
    );
    assert_eq!(
        items(&last),
        vec![format!("r4@{SERVICE}"), format!("r5@{SERVICE}")]
    );
    let before = ask(
        &mut w,
        "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before>r2@conference.example.com</before></set>",
    );
    assert_eq!(items(&before), vec![format!("r1@{SERVICE}")]);
    let count = ask(
        &mut w,
        "<set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set>",
    );
    assert!(items(&count).is_empty());
    assert!(count.contains("<set xmlns='http://jabber.org/protocol/rsm'><count>5</count></set>"));
}

#[test]
fn room_search_finds_public_rooms_by_name_description_and_subject() {
    let mut w = directory();
    w.send(A, &format!("<iq type='set' id='c' to='r2@{SERVICE}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>\
        <field var='muc#roomconfig_roomdesc'><value>Release Planning</value></field></x></query></iq>"));
    w.send(
        A,
        &format!(
            "<message to='r3@{SERVICE}' type='groupchat'><subject>release day</subject></message>"
        ),
    );
    w.send(
        B,
        &format!("<iq type='get' id='f' to='{SERVICE}'><query xmlns='jabber:iq:search'/></iq>"),
    );
    let form = w.take_one(B);
    let values = field_values(&form);
    assert_eq!(values["FORM_TYPE"], "jabber:iq:search");
    for var in ["name", "description", "subject"] {
        assert!(values.contains_key(var), "{var}: {form}");
    }
    let search = |w: &mut World, fields: &str| {
        w.send(B, &format!("<iq type='set' id='s' to='{SERVICE}'><query xmlns='jabber:iq:search'>\
            <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>jabber:iq:search</value></field>{fields}</x></query></iq>"));
        let answer = w.take_one(B);
        el(&answer)
            .child("query", "jabber:iq:search")
            .and_then(|q| q.child("x", "jabber:x:data"))
            .unwrap()
            .children()
            .filter(|c| c.name() == "item")
            .map(|item| {
                item.children()
                    .find(|f| f.attr("var") == Some("jid"))
                    .map(|f| f.children().next().unwrap().text())
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        search(
            &mut w,
            "<field var='description'><value>RELEASE</value></field>"
        ),
        vec![format!("r2@{SERVICE}")]
    );
    assert_eq!(
        search(
            &mut w,
            "<field var='subject'><value>Release</value></field>"
        ),
        vec![format!("r3@{SERVICE}")]
    );
    assert_eq!(
        search(&mut w, "<field var='name'><value>room 4</value></field>"),
        vec![format!("r4@{SERVICE}")]
    );
    assert_eq!(
        search(&mut w, "").len(),
        5,
        "hidden and locked rooms are never found"
    );
    assert!(search(&mut w, "<field var='name'><value>hidden</value></field>").is_empty());
    w.send(
        B,
        &format!("<iq type='set' id='s' to='{SERVICE}'><query xmlns='jabber:iq:search'/></iq>"),
    );
    assert_error(
        &w.take_one(B),
        "modify",
        "bad-request",
        "Submit the room search form (see the form this service returns to a get)",
    );
}

// ---------------------------------------------------------------- aliases, IQs, restart

#[test]
fn each_service_domain_has_its_own_rooms() {
    // team@conference.example.com exists with Alice; team@chat.example.com is another
    // room: Bob creates it and is alone in it.
    let mut w = room_with(&[]);
    w.send(
        B,
        &format!(
            "<presence to='team@{ALIAS}/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ),
    );
    let bob = w.take(B);
    assert!(
        bob.iter()
            .all(|x| !x.contains("Alice") && x.contains(&format!("from='team@{ALIAS}"))),
        "{bob:#?}"
    );
    assert!(w.take(A).is_empty());
    let aliased = BareJid::new(&format!("team@{ALIAS}")).unwrap();
    assert_eq!(w.rooms.rooms().len(), 2);
    assert!(w.rooms.rooms().contains_key(&aliased));
    assert!(w.rooms.rooms().contains_key(&BareJid::new(ROOM).unwrap()));
    w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat'><body>hi</body></message>"),
    );
    assert!(
        w.take_one(A)
            .contains(&format!("from='team@{SERVICE}/Alice'"))
    );
    assert!(w.take(B).is_empty());
    assert_eq!(w.compliance[0].room, Some(BareJid::new(ROOM).unwrap()));
    w.clear();
    // Not a domain of ours: not for this service.
    w.send(
        B,
        "<message to='team@muc.other.org' type='groupchat'><body>hi</body></message>",
    );
    assert!(w.delivered.is_empty());
}

#[test]
fn iqs_to_occupants_are_relayed_from_the_senders_room_address() {
    let mut w = room_with(&[(B, "Bob")]);
    w.send(
        B,
        &format!(
            "<iq type='get' id='v1' to='{ROOM}/Alice'><query xmlns='jabber:iq:version'/></iq>"
        ),
    );
    assert_eq!(
        w.take_one(A),
        "<iq xmlns='jabber:client' type='get' id='v1' to='alice@example.com/phone' from='team@conference.example.com/Bob'>\
         <query xmlns='jabber:iq:version'/></iq>"
    );
    w.send(
        A,
        &format!(
            "<iq type='result' id='v1' to='{ROOM}/Bob'><query xmlns='jabber:iq:version'/></iq>"
        ),
    );
    assert!(
        w.take_one(B)
            .contains("from='team@conference.example.com/Alice'")
    );
    w.send(
        C,
        &format!(
            "<iq type='get' id='v2' to='{ROOM}/Alice'><query xmlns='jabber:iq:version'/></iq>"
        ),
    );
    assert_error(
        &w.take_one(C),
        "modify",
        "not-acceptable",
        "Only occupants may send requests to other occupants",
    );
}

/// A scenario touching every part of the room state.
fn busy_room() -> World {
    let mut w = room_configured(
        &[
            ("muc#roomconfig_roomname", "Team"),
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_moderatedroom", "1"),
        ],
        &[(B, "Bob"), (C, "Carol")],
    );
    w.admin(
        A,
        "<item affiliation='member' jid='dave@example.com'/><item nick='Bob' role='participant'/>",
    );
    w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat'><subject>Plans</subject></message>"),
    );
    w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat'><body>one</body></message>"),
    );
    w.send(
        B,
        &format!("<message to='{ROOM}' type='groupchat'><body>two</body></message>"),
    );
    w.send(
        C,
        &format!("<presence to='{ROOM}/Caro'><show>dnd</show></presence>"),
    );
    w.admin(A, "<item affiliation='outcast' jid='eve@example.com'/>");
    w
}

#[test]
fn replaying_the_changelog_rebuilds_every_room_exactly() {
    let mut w = busy_room();
    w.send(
        D,
        &format!("<presence to='other@{SERVICE}/D'><x xmlns='http://jabber.org/protocol/muc'/></presence>"),
    );
    w.send(
        D,
        &format!("<presence to='other@{SERVICE}/D' type='unavailable'/>"),
    );
    let mut restarted = Rooms::new(config());
    for event in &w.events {
        restarted.apply(event);
    }
    assert_eq!(restarted.rooms(), w.rooms.rooms());
    let room = restarted.room(&BareJid::new(ROOM).unwrap()).unwrap();
    assert_eq!(room.occupants.len(), 3);
    assert_eq!(room.history.len(), 2);
    assert!(
        restarted
            .room(&BareJid::new(&format!("other@{SERVICE}")).unwrap())
            .is_none()
    );
    // Only the last record of each room matters (compaction).
    let mut compacted = Rooms::new(config());
    let mut last: HashMap<BareJid, &RoomEvent> = HashMap::new();
    for event in &w.events {
        last.insert(event.room().clone(), event);
    }
    for event in last.values() {
        compacted.apply(event);
    }
    assert_eq!(compacted.rooms(), w.rooms.rooms());
}

#[test]
fn reprocessing_after_a_restart_gives_the_same_outputs() {
    let mut w = busy_room();
    let stanza = w.stanza(
        B,
        &format!("<message to='{ROOM}' type='groupchat'><body>again</body></message>"),
        "gw1",
    );
    let mut restarted = Rooms::new(config());
    for event in &w.events {
        restarted.apply(event);
    }
    let first = w.run(Input::Stanza(stanza.clone()));
    let second = restarted.handle(Input::Stanza(stanza.clone()), now(w.clock));
    assert_eq!(first, second);
    // A join (many deliveries to one recipient) too.
    let join = w.stanza(
        D,
        &format!(
            "<presence to='{ROOM}/Dave'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ),
        "gw1",
    );
    let first = w.run(Input::Stanza(join.clone()));
    let second = restarted.handle(Input::Stanza(join), now(w.clock));
    assert_eq!(first, second);
    assert!(first.len() > 5);
}

#[test]
fn messages_to_the_service_itself_are_refused() {
    let mut w = World::new();
    w.send(
        A,
        &format!("<message to='{SERVICE}'><body>hello?</body></message>"),
    );
    assert_error(
        &w.take_one(A),
        "cancel",
        "service-unavailable",
        "The chat service takes messages for its rooms, not for itself",
    );
    w.send(A, &format!("<iq type='get' id='x' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    assert_error(
        &w.take_one(A),
        "cancel",
        "item-not-found",
        "This room does not exist",
    );
}

#[test]
fn settings_are_validated() {
    let mut c = config();
    c.history_for_new_joiners = 60;
    assert_eq!(
        c.validate(),
        Err(ConfigError::History { shown: 60, max: 50 })
    );
    let mut c = config();
    c.aliases
        .insert(BareJid::new("room@chat.example.com").unwrap());
    assert!(matches!(c.validate(), Err(ConfigError::ServiceDomain(_))));
}

#[test]
fn the_directory_lists_rooms_of_other_partitions_and_each_alias_is_its_own_key() {
    let mut w = directory();
    // Every room but r3 moves to another instance; this one now only observes them.
    w.rooms
        .retain_rooms(|jid| jid.as_str() == format!("r3@{SERVICE}"));
    assert_eq!(w.rooms.rooms().len(), 1, "only r3 is still owned here");
    let mut remote = Room::new(
        BareJid::new(&format!("r0@{SERVICE}")).unwrap(),
        RoomConfig::default(),
        now(0),
    );
    remote.config.name = Some("Remote".to_owned());
    w.rooms.observe(&RoomEvent::Updated(Box::new(remote)));
    w.rooms.observe(&RoomEvent::Destroyed {
        room: BareJid::new(&format!("r5@{SERVICE}")).unwrap(),
        at: now(0),
    });
    w.send(B, &format!("<iq type='get' id='d' to='{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"));
    assert_eq!(
        items(&w.take_one(B)),
        ["r0", "r1", "r2", "r3", "r4"]
            .iter()
            .map(|n| format!("{n}@{SERVICE}"))
            .collect::<Vec<_>>()
    );
    // The rooms of one alias are not rooms of another.
    w.send(B, &format!("<iq type='get' id='d' to='{ALIAS}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"));
    assert!(items(&w.take_one(B)).is_empty());
    // Observed rooms are not acted on: a session end only touches owned rooms.
    let outputs = w.close(A);
    assert!(outputs.iter().all(|o| match o {
        Output::Room(e) => e.room().as_str() == format!("r3@{SERVICE}"),
        _ => true,
    }));
    let config = config();
    let key = |to: &str| config.canonical_room(&Jid::new(to).unwrap());
    assert_eq!(
        key(&format!("team@{ALIAS}/Bob")),
        Some(BareJid::new(&format!("team@{ALIAS}")).unwrap())
    );
    assert_eq!(key(ROOM), Some(BareJid::new(ROOM).unwrap()));
    assert_eq!(key(SERVICE), None);
    assert_eq!(key("team@elsewhere.org"), None);
}

fn archiving_world(fields: &[(&str, &str)], others: &[(&str, &str)]) -> World {
    let mut config = config();
    config.archive_all = true;
    let mut w = World::with(config);
    w.join(A, "Alice");
    w.configure(A, fields);
    for (full, nick) in others {
        w.join(full, nick);
    }
    w.clear();
    w
}

const MAM_QUERY: &str = "<iq type='set' id='q1' to='team@conference.example.com'><query xmlns='urn:xmpp:mam:2' queryid='f1'/></iq>";

#[test]
fn persistent_rooms_archive_each_message_once_with_a_stanza_id_the_client_cannot_forge() {
    let mut w = archiving_world(&[("muc#roomconfig_persistentroom", "1")], &[(B, "Bob")]);
    w.send(
        A,
        &format!(
            "<message to='{ROOM}' type='groupchat' id='m1'><body>release at noon</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='{ROOM}'/></message>"
        ),
    );
    let event_id = Uuid::from_u128(w.next_id);
    let id = room_archive_id(&event_id, &BareJid::new(ROOM).unwrap());
    assert_eq!(w.archived.len(), 1, "one archive record per message");
    let a = &w.archived[0];
    assert_eq!(a.archive_id, id);
    assert_eq!(a.event_id, event_id);
    assert_eq!(a.owner.as_str(), ROOM);
    assert_eq!(a.with.as_str(), A, "the archive records the real sender");
    assert_eq!(
        a.xml,
        format!(
            "<message xmlns='jabber:client' type='groupchat' id='m1' from='{ROOM}/Alice'><body>release at noon</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='{}' by='{ROOM}'/></message>",
            id.hyphenated()
        )
    );
    let got = w.take_one(B);
    assert!(
        got.contains(&format!(
            "<stanza-id xmlns='urn:xmpp:sid:0' id='{}' by='{ROOM}'/>",
            id.hyphenated()
        )),
        "{got}"
    );
    assert!(!got.contains("forged"), "{got}");
    // The same input again (a redelivery after a restart) gives the same archive id.
    assert_eq!(room_archive_id(&event_id, &BareJid::new(ROOM).unwrap()), id);
}

#[test]
fn temporary_rooms_and_archiving_off_archive_nothing() {
    let mut w = archiving_world(&[], &[(B, "Bob")]);
    w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat'><body>hi</body></message>"),
    );
    assert!(w.archived.is_empty());
    assert!(!w.take_one(B).contains("stanza-id"));
    let mut w = room_configured(&[("muc#roomconfig_persistentroom", "1")], &[(B, "Bob")]);
    w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat'><body>hi</body></message>"),
    );
    assert!(w.archived.is_empty(), "archive_all is off");
    // Messages without a body are not archived either.
    let mut w = archiving_world(&[("muc#roomconfig_persistentroom", "1")], &[(B, "Bob")]);
    w.send(
        A,
        &format!("<message to='{ROOM}' type='groupchat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
    );
    assert!(w.archived.is_empty());
}

#[test]
fn archive_queries_go_to_the_archive_from_those_allowed_to_read_it() {
    let mut w = archiving_world(
        &[
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_membersonly", "1"),
        ],
        &[],
    );
    // The owner (an occupant) may.
    w.send(A, MAM_QUERY);
    assert_eq!(w.queries.len(), 1);
    assert_eq!(w.queries[0].sender.as_str(), A);
    assert!(w.take(A).is_empty(), "the connector answers, not the room");
    // An outsider of a members-only room may not.
    w.send(C, MAM_QUERY);
    assert_eq!(w.queries.len(), 1);
    assert_error(
        &w.take_one(C),
        "auth",
        "forbidden",
        "Only occupants and members may read this room's archive",
    );
    // A member who is not in the room may.
    w.admin(A, "<item affiliation='member' jid='carol@example.com'/>");
    w.clear();
    w.send(C, MAM_QUERY);
    assert_eq!(w.queries.len(), 1);
    // An outcast may not, even of an open room.
    let mut w = archiving_world(&[("muc#roomconfig_persistentroom", "1")], &[]);
    w.send(D, MAM_QUERY);
    assert_eq!(w.queries.len(), 1, "anyone may read an open room's archive");
    w.admin(A, "<item affiliation='outcast' jid='dave@example.com'/>");
    w.clear();
    w.send(D, MAM_QUERY);
    assert!(w.queries.is_empty());
    assert_eq!(error_of(&w.take_one(D)).1, "forbidden");
}

#[test]
fn temporary_rooms_have_no_archive_and_the_form_offers_full_text_search() {
    let mut w = archiving_world(&[], &[]);
    w.send(A, MAM_QUERY);
    assert!(w.queries.is_empty());
    assert_error(
        &w.take_one(A),
        "cancel",
        "service-unavailable",
        "This room keeps no archive: only persistent rooms are archived",
    );
    w.send(
        A,
        &format!("<iq type='get' id='f' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'/></iq>"),
    );
    let form = w.take_one(A);
    assert!(
        form.contains("var='{urn:xmpp:fulltext:0}fulltext'"),
        "{form}"
    );
    let mut w = archiving_world(&[("muc#roomconfig_persistentroom", "1")], &[]);
    w.send(A, &format!("<iq type='get' id='i' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    let info = w.take_one(A);
    for feature in ["urn:xmpp:mam:2", "urn:xmpp:fulltext:0", "urn:xmpp:sid:0"] {
        assert!(
            info.contains(&format!("var='{feature}'")),
            "{feature} in {info}"
        );
    }
}

#[test]
fn rooms_cannot_become_persistent_when_persistent_chat_is_off() {
    let mut config = config();
    config.persistent_chat = false;
    let mut w = World::with(config);
    w.join(A, "Alice");
    w.configure(A, &[]);
    w.clear();
    w.configure(A, &[("muc#roomconfig_persistentroom", "1")]);
    assert_error(
        &w.take_one(A),
        "modify",
        "not-acceptable",
        "Persistent chat is disabled on this server: rooms cannot be made persistent",
    );
    assert!(!w.room().unwrap().config.persistent);
}
