//! The router's consume/produce loop on the embedded log: with one partition a stanza the
//! router forwards is handled at once (no `routed` record), and `routed` records an
//! earlier run left are processed before the stanzas forwarded after them; with several
//! partitions forwarded stanzas go through `routed`. A restarted router knows who is
//! online and which accounts exist, as the log has them, before it routes anything.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use imbus_config::topics::{ACCOUNTS, COMPLIANCE, ROUTED, SESSIONS, STANZAS, SYSTEM_TOPICS};
use imbus_core::{
    AccountEvent, AccountState, BareJid, ClientFeatures, Credentials, Event, FullJid, GatewayId,
    Jid, ScramCredentials, ScramHash, SessionEvent, SessionId, SessionPresence, SessionState,
    StanzaKind, StanzaReceived, Timestamp, Uuid,
};
use imbus_log::{Log, Record, TopicConfig, partition_for_key};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions};
use imbus_router::{RouterConfig, run};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const DOMAIN: &str = "example.com";
const DELIVER: &str = "deliver.gw1";

async fn open(dir: &std::path::Path, partitions: i32) -> Arc<dyn Log> {
    let log = EmbeddedLog::open(dir, EmbeddedOptions::default())
        .await
        .unwrap();
    for layout in SYSTEM_TOPICS {
        let count = layout.partitions.unwrap_or(partitions);
        let topic = if layout.compacted {
            TopicConfig::compacted(layout.name, count)
        } else {
            TopicConfig::new(layout.name, count)
        };
        log.create_topic(&topic).await.unwrap();
    }
    log.create_topic(&TopicConfig::new(DELIVER, partitions))
        .await
        .unwrap();
    Arc::new(log)
}

fn start(log: &Arc<dyn Log>) -> (watch::Sender<bool>, JoinHandle<()>) {
    let config = RouterConfig::new(BareJid::new(DOMAIN).unwrap());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (settings_tx, settings_rx) = watch::channel(config.clone());
    let log = log.clone();
    let task = tokio::spawn(async move {
        let _keep = settings_tx;
        run(log, config, settings_rx, shutdown_rx).await.unwrap();
    });
    (shutdown_tx, task)
}

async fn stop((shutdown, task): (watch::Sender<bool>, JoinHandle<()>)) {
    shutdown.send(true).unwrap();
    task.await.unwrap();
}

fn partition_of(user: &str, partitions: i32) -> i32 {
    partition_for_key(format!("{user}@{DOMAIN}").as_bytes(), partitions)
}

/// A user name starting with `prefix` whose partition (of 4) `wanted` accepts.
fn user_where(prefix: &str, wanted: impl Fn(i32) -> bool) -> String {
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|user| wanted(partition_of(user, 4)))
        .unwrap()
}

fn scram(hash: ScramHash) -> ScramCredentials {
    let len = hash.output_len();
    ScramCredentials::new(hash, vec![1; 16], 4096, vec![2; len], vec![3; len]).unwrap()
}

async fn create_account(log: &Arc<dyn Log>, user: &str) {
    let jid = BareJid::new(&format!("{user}@{DOMAIN}")).unwrap();
    let event = AccountEvent::Created(AccountState {
        jid: jid.clone(),
        credentials: Credentials::new(scram(ScramHash::Sha1), scram(ScramHash::Sha256)).unwrap(),
        at: Timestamp::now(),
        by: "test".to_owned(),
    });
    let value = imbus_schemas::encode(&Event::Account(event)).unwrap();
    log.append(ACCOUNTS, Record::new(jid.as_str().to_owned(), value))
        .await
        .unwrap();
}

fn session_id(full: &FullJid) -> SessionId {
    SessionId::new(format!("s-{}", full.as_str())).unwrap()
}

/// What the gateway publishes for a message or presence `xml` from `from`.
fn stanza(from: &FullJid, to: Option<&str>, xml: &str) -> StanzaReceived {
    let kind = if xml.starts_with("<presence") {
        StanzaKind::Presence
    } else {
        StanzaKind::Message
    };
    let attrs = match to {
        Some(to) => format!(" from='{from}' to='{to}'"),
        None => format!(" from='{from}'"),
    };
    let (head, tail) = if let Some(rest) = xml.strip_suffix("/>") {
        (rest, "/>")
    } else {
        let at = xml.find('>').unwrap();
        (&xml[..at], &xml[at..])
    };
    StanzaReceived {
        event_id: Uuid::now_v7(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: session_id(from),
        received_at: Timestamp::now(),
        sender: from.clone(),
        recipient: to.map(|to| Jid::new(to).unwrap()),
        kind,
        stanza_type: (kind == StanzaKind::Message).then(|| "chat".to_owned()),
        stanza_id: None,
        xml: format!("{head}{attrs}{tail}"),
    }
}

/// Binds `full` and makes it available, as a gateway and its client would.
async fn sign_in(log: &Arc<dyn Log>, full: &FullJid) {
    let bound = SessionEvent::Bound(SessionState {
        jid: full.clone(),
        gateway_id: GatewayId::new("gw1").unwrap(),
        session_id: session_id(full),
        at: Timestamp::now(),
        presence: SessionPresence::unavailable(),
        features: ClientFeatures::default(),
    });
    let bare = full.to_bare();
    let partitions = log.partition_count(SESSIONS).await.unwrap();
    let partition = partition_for_key(bare.as_str().as_bytes(), partitions);
    let value = imbus_schemas::encode(&Event::Session(bound)).unwrap();
    log.append_to(
        SESSIONS,
        partition,
        Record::new(full.as_str().to_owned(), value),
    )
    .await
    .unwrap();
    publish(log, STANZAS, stanza(full, None, "<presence/>")).await;
}

/// Appends `stanza` to `topic`, keyed as the gateway (`stanzas`: the sender) or a router
/// (`routed`: the recipient) does.
async fn publish(log: &Arc<dyn Log>, topic: &str, stanza: StanzaReceived) {
    let key = if topic == ROUTED {
        stanza.owner().as_str().to_owned()
    } else {
        stanza.sender.to_bare().as_str().to_owned()
    };
    let value = imbus_schemas::encode(&Event::from(stanza)).unwrap();
    log.append(topic, Record::new(key, value)).await.unwrap();
}

fn chat(from: &FullJid, to: &str, n: usize) -> StanzaReceived {
    stanza(
        from,
        Some(to),
        &format!("<message type='chat'><body>m{n}</body></message>"),
    )
}

/// Every record of `topic` so far, decoded.
async fn events(log: &Arc<dyn Log>, topic: &str) -> Vec<Event> {
    imbus_log::read_topic(log.as_ref(), topic)
        .await
        .unwrap()
        .iter()
        .filter_map(|record| record.value.as_ref())
        .map(|value| imbus_schemas::decode(value).unwrap())
        .collect()
}

/// The message numbers delivered to `to`, in delivery order, once `count` arrived (or
/// the deadline passed, which fails the test).
async fn delivered(log: &Arc<dyn Log>, to: &FullJid, count: usize) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let numbers: Vec<usize> = events(log, DELIVER)
            .await
            .into_iter()
            .filter_map(|event| match event {
                Event::Delivery(d) if d.to == *to => {
                    let body = d.xml.split("<body>m").nth(1)?;
                    body.split('<').next()?.parse().ok()
                }
                _ => None,
            })
            .collect();
        if numbers.len() >= count || Instant::now() > deadline {
            return numbers;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn routed_count(log: &Arc<dyn Log>) -> i64 {
    let mut count = 0;
    for p in 0..log.partition_count(ROUTED).await.unwrap() {
        count += log.watermarks(ROUTED, p).await.unwrap().high;
    }
    count
}

/// Alice sends 100 messages each to Bob (on her partition of 4) and to Carol (on another);
/// returns how many records went through `routed`.
async fn one_to_one(partitions: i32) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), partitions).await;
    let alice = user_where("alice", |_| true);
    let bob = user_where("bob", |p| p == partition_of(&alice, 4));
    let carol = user_where("carol", |p| p != partition_of(&alice, 4));
    for user in [&alice, &bob, &carol] {
        create_account(&log, user).await;
    }
    let [a, b, c] =
        [&alice, &bob, &carol].map(|u| FullJid::new(&format!("{u}@{DOMAIN}/r")).unwrap());
    let router = start(&log);
    for full in [&a, &b, &c] {
        sign_in(&log, full).await;
    }
    for n in 0..100 {
        publish(&log, STANZAS, chat(&a, b.as_str(), n)).await;
        publish(&log, STANZAS, chat(&a, &format!("{carol}@{DOMAIN}"), n)).await;
    }
    let expected: Vec<usize> = (0..100).collect();
    assert_eq!(delivered(&log, &b, 100).await, expected, "to {b}");
    assert_eq!(delivered(&log, &c, 100).await, expected, "to {c}");
    stop(router).await;
    let compliance: Vec<_> = events(&log, COMPLIANCE)
        .await
        .into_iter()
        .filter_map(|event| match event {
            Event::Compliance(record) => Some(record),
            _ => None,
        })
        .collect();
    for user in [&bob, &carol] {
        let to_user = compliance
            .iter()
            .filter(|r| r.recipient.as_str() == format!("{user}@{DOMAIN}"))
            .count();
        assert_eq!(to_user, 100, "compliance records for {user}");
    }
    routed_count(&log).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_partition_forwarded_stanzas_are_handled_without_a_routed_record() {
    assert_eq!(one_to_one(1).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_partitions_forwarded_stanzas_go_through_routed() {
    // Even to the partition the message came from: 200 messages and the presence the
    // three sessions sent to their own other resources.
    assert!(one_to_one(4).await >= 200);
}

/// An earlier run: `alice` and `bob` (accounts created) sign in and Alice's message 0
/// reaches Bob; then the router stops. Returns their full JIDs.
async fn earlier_run(log: &Arc<dyn Log>, alice: &str, bob: &str) -> (FullJid, FullJid) {
    for user in [alice, bob] {
        create_account(log, user).await;
    }
    let [a, b] = [alice, bob].map(|u| FullJid::new(&format!("{u}@{DOMAIN}/r")).unwrap());
    let router = start(log);
    sign_in(log, &a).await;
    sign_in(log, &b).await;
    publish(log, STANZAS, chat(&a, b.as_str(), 0)).await;
    assert_eq!(delivered(log, &b, 1).await, [0]);
    stop(router).await;
    (a, b)
}

/// Appends `stanza` to `routed` as a router forwarding it does.
async fn forward(log: &Arc<dyn Log>, stanza: StanzaReceived) {
    let key = stanza.owner().as_str().to_owned();
    let value = imbus_schemas::encode(&Event::from(stanza)).unwrap();
    log.append(ROUTED, Record::new(key, value)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_stanzas_an_earlier_run_left_come_before_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1).await;
    let (a, b) = earlier_run(&log, "alice", "bob").await;
    // An earlier router forwarded messages 1..=FORWARDED and stopped before processing
    // them; then the client sent LATER more. They are more than a few polls take, and
    // the embedded consumer's polls start at a different topic each time (in name
    // order), so it would come to `stanzas` before it is through `routed`.
    const FORWARDED: usize = 8000;
    const LATER: usize = 50;
    let records = (1..=FORWARDED)
        .map(|n| {
            let stanza = chat(&a, b.as_str(), n);
            let key = stanza.owner().as_str().to_owned();
            Record::new(key, imbus_schemas::encode(&Event::from(stanza)).unwrap())
        })
        .collect();
    log.append_batch(ROUTED, records).await.unwrap();
    for n in FORWARDED + 1..=FORWARDED + LATER {
        publish(&log, STANZAS, chat(&a, b.as_str(), n)).await;
    }
    let router = start(&log);
    let all = FORWARDED + LATER + 1;
    let expected: Vec<usize> = (0..all).collect();
    assert_eq!(delivered(&log, &b, all).await, expected);
    stop(router).await;
    // A restart processes nothing twice: the take-over's offsets were committed.
    let router = start(&log);
    publish(&log, STANZAS, chat(&a, b.as_str(), all)).await;
    let expected: Vec<usize> = (0..=all).collect();
    assert_eq!(delivered(&log, &b, all + 1).await, expected);
    stop(router).await;
}

/// The offset of the first record of `topic` (in `partition`) that `wanted` accepts.
async fn first_offset(
    log: &Arc<dyn Log>,
    topic: &str,
    partition: i32,
    wanted: impl Fn(&Event) -> bool,
) -> i64 {
    imbus_log::read_topic(log.as_ref(), topic)
        .await
        .unwrap()
        .iter()
        .filter(|record| record.partition == partition)
        .find(|record| {
            record
                .value
                .as_ref()
                .is_some_and(|value| wanted(&imbus_schemas::decode(value).unwrap()))
        })
        .unwrap()
        .offset
}

/// Moves the group's committed offset of `topic`/`partition` back to `offset`, as if the
/// router had stopped before committing what came after it.
async fn rewind(log: &Arc<dyn Log>, topic: &str, partition: i32, offset: i64) {
    let tp = imbus_log::TopicPartition::new(topic, partition);
    let mut consumer = log
        .consumer(imbus_log::ConsumerOptions::new(
            imbus_router::GROUP,
            &[topic],
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !consumer.assignment().contains(&tp) {
        assert!(Instant::now() < deadline, "{tp} was never assigned");
        consumer.poll(Duration::from_millis(100)).await.unwrap();
    }
    consumer.commit(&[(tp, offset)]).await.unwrap();
    consumer.close().await.unwrap();
}

/// An earlier run made Bob available (its own `sessions` record says so) and stopped
/// before committing that record; a message forwarded to Bob is then processed first.
/// Bob is online all along: the message is delivered to him, not stored offline.
async fn restart_knows_who_is_available_before_routing(partitions: i32) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), partitions).await;
    let alice = user_where("alice", |_| true);
    let bob = user_where("bob", |p| partitions == 1 || p != partition_of(&alice, 4));
    let (a, b) = earlier_run(&log, &alice, &bob).await;
    let partition = partition_of(&bob, partitions);
    let available = first_offset(&log, SESSIONS, partition, |event| {
        matches!(event, Event::Session(SessionEvent::Updated(s))
            if s.jid == b && s.presence.is_available())
    })
    .await;
    rewind(&log, SESSIONS, partition, available).await;
    let bare = format!("{bob}@{DOMAIN}");
    forward(&log, chat(&a, &bare, 1)).await;
    let router = start(&log);
    assert_eq!(delivered(&log, &b, 2).await, [0, 1]);
    stop(router).await;
    let stored = events(&log, imbus_config::topics::OFFLINE)
        .await
        .into_iter()
        .filter(|event| matches!(event, Event::Offline(_)))
        .count();
    assert_eq!(stored, 0, "messages stored offline for an online user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_partition_a_restart_knows_who_is_available_before_routing() {
    restart_knows_who_is_available_before_routing(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_partitions_a_restart_knows_who_is_available_before_routing() {
    restart_knows_who_is_available_before_routing(4).await;
}

/// Carol's account was created while no router ran, and a message forwarded to her waits
/// on `routed`: the restarted router knows her account before it routes the message
/// (stored for her while she is offline, not refused as sent to no one).
async fn restart_knows_new_accounts_before_routing(partitions: i32) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), partitions).await;
    let alice = user_where("alice", |_| true);
    let carol = user_where("carol", |p| partitions == 1 || p != partition_of(&alice, 4));
    create_account(&log, &alice).await;
    let a = FullJid::new(&format!("{alice}@{DOMAIN}/r")).unwrap();
    let router = start(&log);
    sign_in(&log, &a).await;
    publish(&log, STANZAS, chat(&a, a.to_bare().as_str(), 0)).await;
    assert_eq!(delivered(&log, &a, 1).await, [0]);
    stop(router).await;
    create_account(&log, &carol).await;
    forward(&log, chat(&a, &format!("{carol}@{DOMAIN}"), 1)).await;
    let router = start(&log);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let stored = events(&log, imbus_config::topics::OFFLINE)
            .await
            .into_iter()
            .filter(|event| matches!(event, Event::Offline(_)))
            .count();
        if stored > 0 || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop(router).await;
    let errors = events(&log, DELIVER)
        .await
        .into_iter()
        .filter(|event| matches!(event, Event::Delivery(d) if d.xml.contains("type='error'") || d.xml.contains("type=\"error\"")))
        .count();
    assert_eq!(errors, 0, "the message to a new account was refused");
    assert_eq!(
        stored, 1,
        "the message to a new account was not stored for her"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_partition_a_restart_knows_new_accounts_before_routing() {
    restart_knows_new_accounts_before_routing(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_partitions_a_restart_knows_new_accounts_before_routing() {
    restart_knows_new_accounts_before_routing(4).await;
}
