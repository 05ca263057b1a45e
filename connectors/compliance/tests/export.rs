//! An audit export reads back, for one user and a time range, every row where the user
//! received or sent the message, exactly as archived.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use imbus_connector_compliance::export::export;
use imbus_connector_compliance::settings::Backend;
use imbus_connector_compliance::{Database, GROUP, SinkSettings};
use imbus_core::{Direction, Jid, MessageType, Timestamp};

const T0: i64 = 1_796_083_200_000_000; // 2026-12-01T00:00:00Z

macro_rules! on_every_backend {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                super::$name(super::Backend::MySql).await
            }
        }
    };
}

on_every_backend!(export_finds_what_a_user_received_and_sent);
async fn export_finds_what_a_user_received_and_sent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (log, _dir) = log().await;
    let at = |r: &mut imbus_core::ComplianceRecord, secs: i64| {
        r.timestamp = Timestamp::from_micros(T0 + secs * 1_000_000 + 250_000);
    };
    // To bob (in range), from bob (in range), to bob (out of range), a room message to
    // bob, messages between others.
    let mut to_bob = record(
        1,
        "bob@example.com",
        MessageType::Chat,
        Direction::Inbound,
        "to bob, \"quoted\"\nnext line",
    );
    at(&mut to_bob, 10);
    let mut from_bob = record(
        2,
        "alice@example.com",
        MessageType::Chat,
        Direction::Inbound,
        "from bob 😀",
    );
    from_bob.sender = Jid::new("bob@example.com/phone").unwrap();
    at(&mut from_bob, 20);
    let mut late = record(
        3,
        "bob@example.com",
        MessageType::Chat,
        Direction::Inbound,
        "too late",
    );
    at(&mut late, 7200);
    let mut room = record(
        4,
        "bob@example.com",
        MessageType::Groupchat,
        Direction::Inbound,
        "room",
    );
    at(&mut room, 30);
    let mut others = record(
        5,
        "carol@example.com",
        MessageType::Chat,
        Direction::Inbound,
        "not bob",
    );
    at(&mut others, 40);
    let mut lookalike = record(
        6,
        "carol@example.com",
        MessageType::Chat,
        Direction::Inbound,
        "from bob_x",
    );
    lookalike.sender = Jid::new("bobxexample.com@example.com/x").unwrap();
    at(&mut lookalike, 50);
    append(
        log.as_ref(),
        &[
            to_bob.clone(),
            from_bob.clone(),
            late,
            room.clone(),
            others,
            lookalike,
        ],
    )
    .await;
    let sink = start_sink(&log, &db.url, SinkSettings::default(), fast_options());
    wait_archived(log.as_ref(), GROUP).await;
    sink.stop().await;

    let target = Database::open(&db.url, 1).unwrap();
    let rows = export(&target, "bob@example.com", T0, T0 + 3600 * 1_000_000)
        .await
        .unwrap();
    let got: Vec<(&str, &str, Option<&str>, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.table.as_str(),
                r.sent_date.as_str(),
                r.body_text.as_deref(),
                r.message_text.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "JM",
                "2026-12-01T00:00:10.25Z",
                to_bob.body.as_deref(),
                to_bob.xml.as_str()
            ),
            (
                "JM",
                "2026-12-01T00:00:20.25Z",
                from_bob.body.as_deref(),
                from_bob.xml.as_str()
            ),
            (
                "TC_MSGARCHIVE",
                "2026-12-01T00:00:30.25Z",
                room.body.as_deref(),
                room.xml.as_str()
            ),
        ]
    );
    assert_eq!(rows[2].nickname.as_deref(), Some("alice"));
    assert_eq!(rows[0].thread_id.as_deref(), Some("thread-1"));
    // `_` in a user name is no wildcard: b_b is not bob.
    let none = export(&target, "b_b@example.com", T0, T0 + 3600 * 1_000_000)
        .await
        .unwrap();
    assert_eq!(none, vec![]);
    assert!(
        rows[0]
            .csv()
            .contains("\"to bob, \"\"quoted\"\"\nnext line\"")
    );
    target.close().await;
    db.drop_database().await;
}
