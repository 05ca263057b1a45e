//! Replaying the compliance topic by time range into a wiped database gives back the
//! archive row for row; replaying again adds nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use imbus_connector_compliance::replay::{ReplaySummary, replay};
use imbus_connector_compliance::settings::Backend;
use imbus_connector_compliance::{Database, GROUP, SinkSettings};
use imbus_core::{ComplianceRecord, Direction, Event, MessageType, Timestamp};
use imbus_log::Record;

const HOUR_MICROS: i64 = 3_600_000_000;
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

async fn wipe(db: &TestDb) {
    use sqlx::Connection;
    let statements = ["DELETE FROM JM", "DELETE FROM TC_MSGARCHIVE"];
    match db.backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            for s in statements {
                sqlx::Executor::execute(&mut c, s).await.unwrap();
            }
        }
        Backend::MySql => {
            let mut c = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
            for s in statements {
                sqlx::Executor::execute(&mut c, s).await.unwrap();
            }
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            for s in statements {
                sqlx::Executor::execute(&mut c, s).await.unwrap();
            }
        }
    }
}

on_every_backend!(replay_rebuilds_a_wiped_archive_row_for_row);
async fn replay_rebuilds_a_wiped_archive_row_for_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (log, _dir) = log().await;
    // Three hours of messages, the log time equal to the message time.
    let mut records: Vec<ComplianceRecord> = Vec::new();
    for hour in 0..3 {
        for i in 0..30 {
            let n = (hour * 100 + i) as u128;
            let kind = if i % 5 == 0 {
                MessageType::Groupchat
            } else {
                MessageType::Chat
            };
            let mut r = record(
                n,
                &format!("r{}@example.com", i % 4),
                kind,
                Direction::Inbound,
                &format!("hour {hour} message {i} 😀"),
            );
            r.timestamp = Timestamp::from_micros(T0 + hour * HOUR_MICROS + i * 1_000_000);
            records.push(r);
        }
    }
    let batch: Vec<Record> = records
        .iter()
        .map(|r| {
            Record::new(
                r.recipient.as_str().to_owned(),
                imbus_schemas::encode(&Event::Compliance(r.clone())).unwrap(),
            )
            .at(r.timestamp.as_millis())
        })
        .collect();
    log.append_batch(imbus_config::topics::COMPLIANCE, batch)
        .await
        .unwrap();

    let sink = start_sink(&log, &db.url, SinkSettings::default(), fast_options());
    wait_archived(log.as_ref(), GROUP).await;
    sink.stop().await;
    let original = db.rows().await;
    assert_eq!(original.len(), records.len());

    // The second hour only.
    wipe(&db).await;
    let target = Database::open(&db.url, 2).unwrap();
    let mut progress_calls = 0;
    let mut refused = Vec::new();
    let summary = replay(
        log.as_ref(),
        &target,
        T0 + HOUR_MICROS,
        T0 + 2 * HOUR_MICROS,
        &SinkSettings::default(),
        |_, _| progress_calls += 1,
        |r| refused.push(r),
    )
    .await
    .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert!(progress_calls > 0);
    assert_eq!(
        summary,
        ReplaySummary {
            read: 30,
            written: 30,
            ..ReplaySummary::default()
        }
    );
    let second_hour: Vec<Archived> = original
        .iter()
        .filter(|r| {
            records
                .iter()
                .find(|c| c.event_id.to_string() == r.event_id)
                .is_some_and(|c| {
                    (T0 + HOUR_MICROS..T0 + 2 * HOUR_MICROS).contains(&c.timestamp.as_micros())
                })
        })
        .cloned()
        .collect();
    assert_eq!(second_hour.len(), 30);
    assert_eq!(db.rows().await, second_hour);

    // Everything: the missing rows come back, the present ones are recognised.
    let summary = replay(
        log.as_ref(),
        &target,
        T0,
        T0 + 3 * HOUR_MICROS,
        &SinkSettings::default(),
        |_, _| {},
        |r| panic!("refused {r:?}"),
    )
    .await
    .unwrap();
    assert_eq!(
        summary,
        ReplaySummary {
            read: 90,
            written: 60,
            already_present: 30,
            ..ReplaySummary::default()
        }
    );
    assert_eq!(db.rows().await, original);
    target.close().await;
    db.drop_database().await;
}
