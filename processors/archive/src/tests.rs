//! Query evaluation against an index of a known archive, with the log played by a map
//! of offsets to records.

use std::collections::HashMap;

use imbus_core::{
    ArchivedMessage, BareJid, Direction, FullJid, GatewayId, Jid, SessionId, StanzaKind,
    StanzaReceived, Timestamp, Uuid,
};
use imbus_log::Offset;
use imbus_xmpp_stream::{Element, parse_stanza};

use super::*;

const ALICE: &str = "alice@example.com/phone";
/// 2026-12-03T07:00:00Z in milliseconds.
const T0: i64 = 1_796_281_200_000;

struct Archive {
    index: Index,
    log: HashMap<Offset, ArchivedMessage>,
    next: Offset,
}

/// Alice's archive: 30 messages with bob (even: sent, odd: received), one second apart,
/// with 5 messages with carol interleaved after every sixth; bob's own archive beside it.
fn archive() -> Archive {
    let mut a = Archive {
        index: Index::default(),
        log: HashMap::new(),
        next: 0,
    };
    let mut carol = 0;
    for i in 0..30 {
        let (with, direction) = if i % 2 == 0 {
            ("bob@example.com", Direction::Outbound)
        } else {
            ("bob@example.com/desk", Direction::Inbound)
        };
        a.add(
            "alice@example.com",
            with,
            direction,
            &format!("msg-{i:02}"),
            i,
        );
        a.add("bob@example.com", ALICE, Direction::Inbound, "for bob", i);
        if i % 6 == 5 {
            a.add(
                "alice@example.com",
                "carol@example.com",
                Direction::Outbound,
                &format!("carol-{carol}"),
                i,
            );
            carol += 1;
        }
    }
    a
}

impl Archive {
    fn add(&mut self, owner: &str, with: &str, direction: Direction, body: &str, second: i64) {
        let event_id = Uuid::new_v4();
        let owner = BareJid::new(owner).unwrap();
        let with = Jid::new(with).unwrap();
        let message = ArchivedMessage {
            archive_id: ArchivedMessage::derive_id(&event_id, &owner, &with.to_bare()),
            event_id,
            owner,
            with,
            direction,
            timestamp: Timestamp::from_micros((T0 + second * 1000) * 1000 + 123),
            xml: format!(
                "<message xmlns='jabber:client' type='chat'><body>{body}</body></message>"
            ),
        };
        assert!(self.index.insert(&message, self.next));
        self.log.insert(self.next, message);
        self.next += 1;
    }

    /// Sends `iq` from alice's session and returns what she gets back.
    fn ask(&self, iq: &str) -> Vec<Element> {
        let element = parse_stanza(iq).unwrap();
        let query = StanzaReceived {
            event_id: Uuid::new_v4(),
            gateway_id: GatewayId::new("gw1").unwrap(),
            session_id: SessionId::new("s1").unwrap(),
            received_at: Timestamp::now(),
            sender: FullJid::new(ALICE).unwrap(),
            recipient: Some(Jid::new("alice@example.com").unwrap()),
            kind: StanzaKind::Iq,
            stanza_type: element.attr("type").map(str::to_owned),
            stanza_id: element.attr("id").map(str::to_owned),
            xml: iq.replace("<iq ", &format!("<iq from='{ALICE}' ")),
        };
        let deliveries = match plan(&self.index, query) {
            Plan::Reply(d) => d,
            Plan::Fetch(answer) => answer.finish(&self.log),
        };
        deliveries
            .into_iter()
            .map(|d| {
                assert_eq!(d.to.as_str(), ALICE);
                parse_stanza(&d.xml).unwrap()
            })
            .collect()
    }

    /// A query with `fields` (var, value) and `rsm` children: the bodies, the result ids
    /// and the closing `<fin/>`.
    fn query(&self, fields: &[(&str, &str)], rsm: &str) -> Result<Outcome, String> {
        let mut form = String::new();
        if !fields.is_empty() {
            form.push_str("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>");
            for (var, value) in fields {
                form.push_str(&format!(
                    "<field var='{var}'><value>{value}</value></field>"
                ));
            }
            form.push_str("</x>");
        }
        let set = if rsm.is_empty() {
            String::new()
        } else {
            format!("<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set>")
        };
        let answer = self.ask(&format!(
            "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='f27'>{form}{set}</query></iq>"
        ));
        outcome(answer)
    }
}

#[derive(Debug)]
struct Outcome {
    bodies: Vec<String>,
    ids: Vec<String>,
    complete: bool,
    first: Option<(String, String)>,
    last: Option<String>,
    count: usize,
}

fn outcome(mut answer: Vec<Element>) -> Result<Outcome, String> {
    let iq = answer.pop().unwrap();
    assert_eq!(iq.name(), "iq");
    assert_eq!(iq.attr("id"), Some("q1"));
    if iq.attr("type") == Some("error") {
        let e = iq.child("error", "jabber:client").unwrap();
        return Err(e.children().next().unwrap().name().to_owned());
    }
    let mut bodies = Vec::new();
    let mut ids = Vec::new();
    for m in &answer {
        assert_eq!(m.attr("from"), Some("alice@example.com"));
        let result = m.child("result", NS_MAM).unwrap();
        assert_eq!(result.attr("queryid"), Some("f27"));
        ids.push(result.attr("id").unwrap().to_owned());
        let forwarded = result.child("forwarded", "urn:xmpp:forward:0").unwrap();
        assert!(forwarded.child("delay", "urn:xmpp:delay").is_some());
        let original = forwarded.child("message", "jabber:client").unwrap();
        bodies.push(original.child("body", "jabber:client").unwrap().text());
    }
    let fin = iq.child("fin", NS_MAM).unwrap();
    let set = fin.child("set", "http://jabber.org/protocol/rsm").unwrap();
    let text = |name: &str| set.child(name, "http://jabber.org/protocol/rsm");
    Ok(Outcome {
        bodies,
        ids,
        complete: fin.attr("complete") == Some("true"),
        first: text("first").map(|f| (f.attr("index").unwrap().to_owned(), f.text())),
        last: text("last").map(|l| l.text()),
        count: text("count").unwrap().text().parse().unwrap(),
    })
}

fn msgs(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("msg-{i:02}")).collect()
}

#[test]
fn pages_forward_through_a_conversation_in_order() {
    let a = archive();
    let with = [("with", "bob@example.com")];
    let page1 = a.query(&with, "<max>10</max>").unwrap();
    assert_eq!(page1.bodies, msgs(0..10));
    assert_eq!(page1.count, 30);
    assert!(!page1.complete);
    assert_eq!(page1.first.as_ref().unwrap().0, "0");
    assert_eq!(page1.first.as_ref().unwrap().1, page1.ids[0]);
    assert_eq!(page1.last.as_deref(), Some(page1.ids[9].as_str()));
    let after = page1.last.unwrap();
    let page2 = a
        .query(&with, &format!("<max>10</max><after>{after}</after>"))
        .unwrap();
    assert_eq!(page2.bodies, msgs(10..20));
    assert_eq!(page2.first.as_ref().unwrap().0, "10");
    assert!(!page2.complete);
    let after = page2.last.unwrap();
    let page3 = a
        .query(&with, &format!("<max>10</max><after>{after}</after>"))
        .unwrap();
    assert_eq!(page3.bodies, msgs(20..30));
    assert!(page3.complete);
    let after = page3.last.unwrap();
    let past = a
        .query(&with, &format!("<max>10</max><after>{after}</after>"))
        .unwrap();
    assert!(past.bodies.is_empty() && past.complete && past.first.is_none());
    assert_eq!(past.count, 30);
}

#[test]
fn pages_backward_from_the_last_page() {
    let a = archive();
    let with = [("with", "bob@example.com")];
    let last = a.query(&with, "<max>10</max><before/>").unwrap();
    assert_eq!(last.bodies, msgs(20..30));
    assert_eq!(last.first.as_ref().unwrap().0, "20");
    assert!(!last.complete);
    let before = last.first.unwrap().1;
    let middle = a
        .query(&with, &format!("<max>10</max><before>{before}</before>"))
        .unwrap();
    assert_eq!(middle.bodies, msgs(10..20));
    let before = middle.first.unwrap().1;
    let first = a
        .query(&with, &format!("<max>10</max><before>{before}</before>"))
        .unwrap();
    assert_eq!(first.bodies, msgs(0..10));
    assert!(first.complete);
    // flip-page: the same page, newest first.
    let flipped = a.ask(
        "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='f27'><set xmlns='http://jabber.org/protocol/rsm'><max>3</max><before/></set><flip-page/></query></iq>",
    );
    let flipped = outcome(flipped).unwrap();
    assert_eq!(flipped.bodies, vec!["carol-4", "msg-29", "msg-28"]);
}

#[test]
fn filters_by_party_time_and_ids() {
    let a = archive();
    // Everything: 30 with bob, 5 with carol; bob's own archive is not alice's.
    let all = a.query(&[], "<max>100</max>").unwrap();
    assert_eq!(all.count, 35);
    assert!(all.complete);
    let carol = a.query(&[("with", "carol@example.com")], "").unwrap();
    assert_eq!(
        carol.bodies,
        vec!["carol-0", "carol-1", "carol-2", "carol-3", "carol-4"]
    );
    // A full JID matches only that resource: what bob sent from his desk.
    let desk = a.query(&[("with", "bob@example.com/desk")], "").unwrap();
    assert_eq!(desk.count, 15);
    assert!(
        desk.bodies
            .iter()
            .all(|b| b.ends_with(['1', '3', '5', '7', '9']))
    );
    assert_eq!(
        a.query(&[("with", "nobody@example.com")], "")
            .unwrap()
            .count,
        0
    );
    // Seconds 10 to 19, inclusive, written with an offset, with and without fractions.
    let window = a
        .query(
            &[
                ("with", "bob@example.com"),
                ("start", "2026-12-03T08:00:10+01:00"),
                ("end", "2026-12-03T07:00:19.123Z"),
            ],
            "",
        )
        .unwrap();
    assert_eq!(window.bodies, msgs(10..20));
    let since = a
        .query(
            &[
                ("with", "bob@example.com"),
                ("start", "2026-12-03T07:00:25Z"),
            ],
            "",
        )
        .unwrap();
    assert_eq!(since.bodies, msgs(25..30));
    // after-id / before-id bound the results; ids picks messages.
    let ids = all.ids.clone();
    let between = a
        .query(&[("after-id", &ids[0]), ("before-id", &ids[4])], "")
        .unwrap();
    assert_eq!(between.ids, ids[1..4].to_vec());
    let picked = a
        .ask(&format!(
            "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='f27'><x xmlns='jabber:x:data' type='submit'><field var='ids'><value>{}</value><value>{}</value></field></x></query></iq>",
            ids[7], ids[2]
        ));
    let picked = outcome(picked).unwrap();
    assert_eq!(picked.ids, vec![ids[2].clone(), ids[7].clone()]);
}

#[test]
fn unknown_ids_are_item_not_found_and_bad_forms_bad_request() {
    let a = archive();
    let unknown = Uuid::new_v4().hyphenated().to_string();
    for rsm in [
        format!("<after>{unknown}</after>"),
        format!("<before>{unknown}</before>"),
        "<after>not-an-id</after>".to_owned(),
    ] {
        assert_eq!(a.query(&[], &rsm).unwrap_err(), "item-not-found", "{rsm}");
    }
    assert_eq!(
        a.query(&[("after-id", &unknown)], "").unwrap_err(),
        "item-not-found"
    );
    // An id of another user's archive is not in this one.
    let bobs = a
        .log
        .values()
        .find(|m| m.owner.as_str() == "bob@example.com")
        .unwrap()
        .archive_id
        .hyphenated()
        .to_string();
    assert_eq!(
        a.query(&[("ids", &bobs)], "").unwrap_err(),
        "item-not-found"
    );
    // A page anchor outside the filtered results.
    let carol_id = a.query(&[("with", "carol@example.com")], "").unwrap().ids[0].clone();
    assert_eq!(
        a.query(
            &[("with", "bob@example.com")],
            &format!("<after>{carol_id}</after>")
        )
        .unwrap_err(),
        "item-not-found"
    );
    for fields in [
        vec![("start", "yesterday")],
        vec![("end", "2026-13-01T00:00:00Z")],
        vec![("with", "@@")],
        vec![("colour", "blue")],
    ] {
        assert_eq!(
            a.query(&fields, "").unwrap_err(),
            "bad-request",
            "{fields:?}"
        );
    }
    assert_eq!(a.query(&[], "<max>many</max>").unwrap_err(), "bad-request");
    let wrong_type = a.ask(
        "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query></iq>",
    );
    assert_eq!(outcome(wrong_type).unwrap_err(), "bad-request");
}

#[test]
fn default_and_largest_pages() {
    let mut a = archive();
    for i in 0..300 {
        a.add(
            "alice@example.com",
            "dave@example.com",
            Direction::Outbound,
            "x",
            100 + i,
        );
    }
    let with = [("with", "dave@example.com")];
    let page = a.query(&with, "").unwrap();
    assert_eq!(page.bodies.len(), DEFAULT_PAGE);
    assert!(!page.complete);
    let page = a.query(&with, "<max>100000</max>").unwrap();
    assert_eq!(page.bodies.len(), MAX_PAGE);
    assert!(!page.complete);
    let counted = a.query(&with, "<max>0</max>").unwrap();
    assert!(counted.bodies.is_empty());
    assert_eq!(counted.count, 300);
    let by_index = a.query(&with, "<max>10</max><index>295</index>").unwrap();
    assert_eq!(by_index.bodies.len(), 5);
    assert!(by_index.complete);
}

#[test]
fn form_metadata_and_preferences() {
    let a = archive();
    let form = a.ask("<iq type='get' id='q1'><query xmlns='urn:xmpp:mam:2'/></iq>");
    let x = form[0]
        .child("query", NS_MAM)
        .and_then(|q| q.child("x", "jabber:x:data"))
        .unwrap();
    let vars: Vec<&str> = x.children().filter_map(|f| f.attr("var")).collect();
    for var in [
        "FORM_TYPE",
        "with",
        "start",
        "end",
        "after-id",
        "before-id",
        "ids",
    ] {
        assert!(vars.contains(&var), "{vars:?}");
    }
    let meta = a.ask("<iq type='get' id='q1'><metadata xmlns='urn:xmpp:mam:2'/></iq>");
    let meta = meta[0].child("metadata", NS_MAM).unwrap();
    let all = a.query(&[], "<max>100</max>").unwrap();
    assert_eq!(
        meta.child("start", NS_MAM).unwrap().attr("id"),
        Some(all.ids[0].as_str())
    );
    assert_eq!(
        meta.child("end", NS_MAM).unwrap().attr("id"),
        Some(all.ids[34].as_str())
    );
    assert_eq!(
        meta.child("start", NS_MAM).unwrap().attr("timestamp"),
        Some("2026-12-03T07:00:00.000Z")
    );
    let empty = Archive {
        index: Index::default(),
        log: HashMap::new(),
        next: 0,
    };
    let meta = empty.ask("<iq type='get' id='q1'><metadata xmlns='urn:xmpp:mam:2'/></iq>");
    assert!(
        meta[0]
            .child("metadata", NS_MAM)
            .unwrap()
            .children()
            .next()
            .is_none()
    );
    let none = empty.query(&[], "").unwrap();
    assert!(none.complete && none.bodies.is_empty() && none.count == 0);
    let prefs = a.ask("<iq type='get' id='q1'><prefs xmlns='urn:xmpp:mam:2'/></iq>");
    assert_eq!(
        prefs[0].child("prefs", NS_MAM).unwrap().attr("default"),
        Some("always")
    );
    let never =
        a.ask("<iq type='set' id='q1'><prefs xmlns='urn:xmpp:mam:2' default='never'/></iq>");
    assert_eq!(never[0].attr("type"), Some("error"));
}

#[test]
fn messages_gone_from_the_log_are_left_out() {
    let mut a = archive();
    let first = a.query(&[], "<max>2</max>").unwrap();
    // The record at offset 0 is no longer there (retention): left out, the rest answered.
    a.log.remove(&0);
    let again = a.query(&[], "<max>2</max>").unwrap();
    assert_eq!(again.ids, first.ids[1..].to_vec());
    // Pruning below the log's low watermark forgets it altogether.
    a.index
        .prune(&BareJid::new("alice@example.com").unwrap(), 1);
    let pruned = a.query(&[], "<max>2</max>").unwrap();
    assert_eq!(pruned.count, 34);
    assert_eq!(pruned.bodies.len(), 2);
}

#[test]
fn xep_0082_dates_parse() {
    let t = |s: &str| parse_datetime(s).map(|t| t.as_micros());
    assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(t("2026-12-03T07:00:00Z"), Some(T0 * 1000));
    assert_eq!(t("2026-12-03T07:00:00.5Z"), Some(T0 * 1000 + 500_000));
    assert_eq!(t("2026-12-03T07:00:00.1234567Z"), Some(T0 * 1000 + 123_456));
    assert_eq!(t("2026-12-03T09:30:00+02:30"), Some(T0 * 1000));
    assert_eq!(t("2026-12-03T06:00:00-01:00"), Some(T0 * 1000));
    for bad in [
        "2026-12-03",
        "2026-12-03T07:00:00",
        "2026-12-03T07:00:00.Z",
        "2026-12-03 07:00:00Z",
        "2026-12-03T25:00:00Z",
    ] {
        assert_eq!(t(bad), None, "{bad}");
    }
}
