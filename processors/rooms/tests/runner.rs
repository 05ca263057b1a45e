//! The rooms processor's consume/produce loop on the embedded log: stanzas in on
//! `rooms.stanzas`, deliveries, compliance records and room states out; a restarted
//! processor rebuilds its rooms from the `rooms` changelog; a relayed session end
//! removes that session's occupant; with two processors sharing the partitions, the room
//! directory of either lists the rooms of both.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use imbus_config::topics::{COMPLIANCE, ROOMS, ROOMS_STANZAS, ROUTED};
use imbus_core::{
    BareJid, CloseReason, Event, FullJid, GatewayId, Jid, SessionClosed, SessionEvent, SessionId,
    StanzaKind, StanzaReceived, Timestamp, Uuid,
};
use imbus_log::{Log, Record, TopicConfig};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions};
use imbus_rooms::{RoomsConfig, run};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const PARTITIONS: i32 = 4;
const DELIVER: &str = "deliver.gw1";

async fn open(dir: &std::path::Path) -> Arc<dyn Log> {
    let log = EmbeddedLog::open(dir, EmbeddedOptions::default())
        .await
        .unwrap();
    for topic in [
        TopicConfig::new(ROOMS_STANZAS, PARTITIONS),
        TopicConfig::compacted(ROOMS, PARTITIONS),
        TopicConfig::new(COMPLIANCE, PARTITIONS),
        TopicConfig::new(ROUTED, PARTITIONS),
        TopicConfig::new(DELIVER, PARTITIONS),
    ] {
        log.create_topic(&topic).await.unwrap();
    }
    Arc::new(log)
}

fn config() -> RoomsConfig {
    let mut config = RoomsConfig::new(BareJid::new("conference.example.com").unwrap());
    config.lock_new_rooms = false;
    config
}

fn start(log: &Arc<dyn Log>) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (_settings_tx, settings_rx) = watch::channel(config());
    let log = log.clone();
    let task = tokio::spawn(async move {
        let _keep = _settings_tx;
        run(log, config(), settings_rx, shutdown_rx).await.unwrap();
    });
    (shutdown_tx, task)
}

async fn stop((shutdown, task): (watch::Sender<bool>, JoinHandle<()>)) {
    shutdown.send(true).unwrap();
    task.await.unwrap();
}

fn session(user: &str) -> SessionId {
    SessionId::new(format!("s-{user}")).unwrap()
}

/// Appends a stanza from `from` to `rooms.stanzas`, keyed by the room (as the router
/// does).
async fn send(log: &Arc<dyn Log>, from: &str, xml: &str, to: &str) {
    let sender = FullJid::new(from).unwrap();
    let recipient = Jid::new(to).unwrap();
    let kind = if xml.starts_with("<presence") {
        StanzaKind::Presence
    } else if xml.starts_with("<iq") {
        StanzaKind::Iq
    } else {
        StanzaKind::Message
    };
    let stanza = StanzaReceived {
        event_id: Uuid::new_v4(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: session(sender.node().unwrap().as_str()),
        received_at: Timestamp::now(),
        sender: sender.clone(),
        recipient: Some(recipient.clone()),
        kind,
        stanza_type: None,
        stanza_id: None,
        xml: xml.replacen('>', &format!(" from='{from}' to='{to}'>"), 1),
    };
    let key = recipient.to_bare().as_str().to_owned();
    let value = imbus_schemas::encode(&Event::from(stanza)).unwrap();
    log.append(ROOMS_STANZAS, Record::new(key, value))
        .await
        .unwrap();
}

/// Every record of a topic so far, decoded, read until `until` holds for them (or the
/// deadline passes, which fails the test).
async fn read_until(
    log: &Arc<dyn Log>,
    topic: &str,
    until: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events: Vec<Event> = imbus_log::read_topic(log.as_ref(), topic)
            .await
            .unwrap()
            .iter()
            .filter_map(|record| record.value.as_ref())
            .map(|value| imbus_schemas::decode(value).unwrap())
            .collect();
        if until(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} never got what was expected: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn deliveries_to<'a>(events: &'a [Event], to: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Delivery(d) if d.to.as_str() == to => Some(d.xml.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_come_back_from_the_changelog_and_session_ends_remove_occupants() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let room = "team@conference.example.com";
    let processor = start(&log);
    send(
        &log,
        "alice@example.com/a",
        "<presence><x xmlns='http://jabber.org/protocol/muc'/></presence>",
        &format!("{room}/Al"),
    )
    .await;
    send(
        &log,
        "alice@example.com/a",
        "<message type='groupchat'><body>hello</body></message>",
        room,
    )
    .await;
    read_until(&log, DELIVER, |events| {
        deliveries_to(events, "alice@example.com/a")
            .iter()
            .any(|x| x.contains("hello"))
    })
    .await;
    let compliance = read_until(&log, COMPLIANCE, |events| !events.is_empty()).await;
    let recipients: Vec<String> = compliance
        .iter()
        .map(|e| match e {
            Event::Compliance(c) => c.recipient.as_str().to_owned(),
            other => panic!("not a compliance record: {other:?}"),
        })
        .collect();
    assert_eq!(recipients, ["alice@example.com"]);
    read_until(&log, ROOMS, |events| {
        events.iter().any(
            |e| matches!(e, Event::RoomState(r) if r.jid.as_str() == room && r.history.len() == 1),
        )
    })
    .await;
    stop(processor).await;

    // A new processor: the room, its occupant and history come back from the changelog.
    let processor = start(&log);
    send(
        &log,
        "bob@example.com/b",
        "<presence><x xmlns='http://jabber.org/protocol/muc'/></presence>",
        &format!("{room}/Bob"),
    )
    .await;
    let events = read_until(&log, DELIVER, |events| {
        deliveries_to(events, "bob@example.com/b")
            .iter()
            .any(|x| x.contains("<subject"))
    })
    .await;
    let bob = deliveries_to(&events, "bob@example.com/b");
    assert!(
        bob.iter()
            .any(|x| x.contains("hello") && x.contains("urn:xmpp:delay")),
        "bob did not get the history: {bob:#?}"
    );
    assert!(
        bob.iter()
            .any(|x| x.contains(&format!("{room}/Al")) && x.starts_with("<presence")),
        "bob did not see alice in the room: {bob:#?}"
    );
    assert!(
        !bob.iter()
            .any(|x| x.contains("code='201'") || x.contains("code=\"201\"")),
        "the room was created again: {bob:#?}"
    );

    // Alice's session ends (relayed by the router to every partition): she leaves.
    let closed = Event::Session(SessionEvent::Closed(SessionClosed {
        jid: FullJid::new("alice@example.com/a").unwrap(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: session("alice"),
        at: Timestamp::now(),
        reason: CloseReason::ConnectionLost,
        detail: None,
    }));
    let value = imbus_schemas::encode(&closed).unwrap();
    for p in 0..PARTITIONS {
        log.append_to(
            ROOMS_STANZAS,
            p,
            Record::new("alice@example.com/a", value.clone()),
        )
        .await
        .unwrap();
    }
    read_until(&log, DELIVER, |events| {
        deliveries_to(events, "bob@example.com/b").iter().any(|x| {
            x.starts_with("<presence")
                && x.contains(&format!("{room}/Al"))
                && x.contains("unavailable")
        })
    })
    .await;
    let states = read_until(&log, ROOMS, |events| {
        events.iter().any(|e| {
            matches!(e, Event::RoomState(r) if r.occupants.len() == 1
                && r.occupants.contains_key("Bob"))
        })
    })
    .await;
    assert!(!states.is_empty());
    stop(processor).await;
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_processors_the_room_directory_lists_the_rooms_of_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let first = start(&log);
    let second = start(&log);
    let rooms: Vec<String> = (0..8)
        .map(|i| format!("room{i}@conference.example.com"))
        .collect();
    let spread: std::collections::BTreeSet<i32> = rooms
        .iter()
        .map(|r| imbus_log::partition_for_key(r.as_bytes(), PARTITIONS))
        .collect();
    assert!(
        spread.len() > 2,
        "the rooms are spread over the partitions: {spread:?}"
    );
    for room in &rooms {
        send(
            &log,
            "alice@example.com/a",
            "<presence><x xmlns='http://jabber.org/protocol/muc'/></presence>",
            &format!("{room}/Al"),
        )
        .await;
    }
    read_until(&log, ROOMS, |events| {
        rooms.iter().all(|room| {
            events
                .iter()
                .any(|e| matches!(e, Event::RoomState(r) if r.jid.as_str() == room))
        })
    })
    .await;
    // The directory is answered on the service's partition, by one of the two; the
    // other's rooms reach it through the changelog, so ask until they are all there.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("d{n}");
        send(
            &log,
            "alice@example.com/a",
            &format!("<iq type='get' id='{id}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"),
            "conference.example.com",
        )
        .await;
        let events = read_until(&log, DELIVER, |events| {
            deliveries_to(events, "alice@example.com/a")
                .iter()
                .any(|x| x.contains(&format!("id='{id}'")))
        })
        .await;
        let answers = deliveries_to(&events, "alice@example.com/a");
        let answer = answers
            .iter()
            .find(|x| x.contains(&format!("id='{id}'")))
            .unwrap();
        let listed = rooms
            .iter()
            .filter(|r| answer.contains(&format!("jid='{r}'")))
            .count();
        if listed == rooms.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the directory lists {listed} of {} rooms: {answer}",
            rooms.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(first).await;
    stop(second).await;
    log.shutdown().await.unwrap();
}
