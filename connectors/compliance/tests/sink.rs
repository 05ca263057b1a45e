//! The compliance sink against real databases (SQLite, PostgreSQL, MariaDB/MySQL) and the
//! embedded log: rows per kind, direction and recipient; redelivery; a crash between the
//! database commit and the offset commit; an outage; hostile input.
//!
//! PostgreSQL and MariaDB are found through `IMBUS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and `IMBUS_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`); every test creates a database of its own and drops
//! it at the end. The tests fail, never skip, when a database is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use imbus_config::topics::COMPLIANCE;
use imbus_connector_compliance::dead;
use imbus_connector_compliance::row::record_id;
use imbus_connector_compliance::settings::Backend;
use imbus_connector_compliance::{GROUP, SinkError, SinkOptions, SinkSettings};
use imbus_core::{ComplianceRecord, Direction, MessageType};
use imbus_log::{Record, TopicPartition};

/// One test per backend.
macro_rules! on_every_backend {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                super::$name(Backend::MySql).await
            }
        }
    };
}

fn key(r: &ComplianceRecord) -> (String, String) {
    (r.event_id.to_string(), r.recipient.as_str().to_owned())
}

/// Checks `rows` hold exactly `expected`, once each, with the record's content.
fn assert_rows_are(rows: &[Archived], expected: &[&ComplianceRecord]) {
    let distinct: BTreeSet<&str> = rows.iter().map(|r| r.record_id.as_str()).collect();
    assert_eq!(distinct.len(), rows.len(), "duplicate rows");
    let by_key: HashMap<(String, String), &Archived> = rows
        .iter()
        .map(|r| ((r.event_id.clone(), r.to_jid.clone()), r))
        .collect();
    assert_eq!(rows.len(), expected.len(), "rows: {rows:#?}");
    for r in expected {
        let row = by_key
            .get(&key(r))
            .unwrap_or_else(|| panic!("no row for {:?}", key(r)));
        assert_eq!(row.record_id, record_id(r).to_string());
        assert_eq!(
            row.body_text.as_deref(),
            r.body.as_deref(),
            "body of {:?}",
            key(r)
        );
        assert_eq!(row.message_text, r.xml, "stanza of {:?}", key(r));
        assert_eq!(row.subject, r.subject);
        assert_eq!(row.from_jid, r.sender.to_string());
        assert_eq!(row.body_len, r.body.as_ref().map_or(0, |b| b.len() as i64));
        assert_eq!(row.message_len, r.xml.len() as i64);
        assert_eq!(
            row.direction,
            if r.direction == Direction::Inbound {
                "I"
            } else {
                "O"
            }
        );
        if r.message_type == MessageType::Groupchat {
            assert_eq!(row.table, "TC_MSGARCHIVE");
            assert_eq!(row.room_jid, r.room.as_ref().map(|j| j.as_str().to_owned()));
            assert_eq!(row.nickname, r.nickname);
        } else {
            assert_eq!(row.table, "JM");
            assert_eq!(row.thread_id, r.thread);
        }
    }
}

on_every_backend!(every_kind_gives_its_rows);
async fn every_kind_gives_its_rows(backend: Backend) {
    imbus_tests_tracing();
    let db = TestDb::new(backend).await;
    let (log, _dir) = log().await;
    let inbound = [
        record(
            1,
            "bob@example.com",
            MessageType::Chat,
            Direction::Inbound,
            "hi bob",
        ),
        record(
            2,
            "bob@example.com",
            MessageType::Normal,
            Direction::Inbound,
            "a note",
        ),
        record(
            3,
            "carol@example.com",
            MessageType::Headline,
            Direction::Inbound,
            "alert",
        ),
        // One group chat message, one record per recipient.
        record(
            4,
            "bob@example.com",
            MessageType::Groupchat,
            Direction::Inbound,
            "all",
        ),
        record(
            4,
            "carol@example.com",
            MessageType::Groupchat,
            Direction::Inbound,
            "all",
        ),
        record(
            4,
            "dave@example.com",
            MessageType::Groupchat,
            Direction::Inbound,
            "all",
        ),
    ];
    let outbound = record(
        5,
        "erin@other.example",
        MessageType::Chat,
        Direction::Outbound,
        "out",
    );
    let mut all = inbound.to_vec();
    all.push(outbound.clone());
    append(log.as_ref(), &all).await;

    let sink = start_sink(&log, &db.url, SinkSettings::default(), fast_options());
    wait_archived(log.as_ref(), GROUP).await;
    let rows = db.rows().await;
    assert_rows_are(&rows, &inbound.iter().collect::<Vec<_>>());
    assert_eq!(
        rows.iter().filter(|r| r.table == "TC_MSGARCHIVE").count(),
        3
    );
    assert_eq!(sink.metrics.rows_written("JM"), 3);
    assert_eq!(sink.metrics.rows_written("TC_MSGARCHIVE"), 3);
    assert_eq!(sink.metrics.skipped_records(), 1);
    assert_eq!(sink.metrics.up(), 1);

    // Outbound archiving switched on live: later outbound records are archived.
    sink.settings.send_modify(|s| s.archive_outbound = true);
    let outbound2 = record(
        6,
        "erin@other.example",
        MessageType::Chat,
        Direction::Outbound,
        "out 2",
    );
    // Only chat from now on: a headline is skipped.
    sink.settings.send_modify(|s| {
        s.kinds = imbus_connector_compliance::settings::KindSet::parse("chat").unwrap()
    });
    let headline = record(
        7,
        "bob@example.com",
        MessageType::Headline,
        Direction::Inbound,
        "x",
    );
    append(log.as_ref(), &[outbound2.clone(), headline]).await;
    wait_archived(log.as_ref(), GROUP).await;
    let mut expected: Vec<&ComplianceRecord> = inbound.iter().collect();
    expected.push(&outbound2);
    assert_rows_are(&db.rows().await, &expected);
    sink.stop().await;
    db.drop_database().await;
}

on_every_backend!(redelivery_stores_nothing_twice);
async fn redelivery_stores_nothing_twice(backend: Backend) {
    imbus_tests_tracing();
    let db = TestDb::new(backend).await;
    let (log, _dir) = log().await;
    let records: Vec<ComplianceRecord> = (0..200)
        .map(|i| {
            let kind = if i % 4 == 0 {
                MessageType::Groupchat
            } else {
                MessageType::Chat
            };
            record(
                1000 + i / 2,
                &format!("user{}@example.com", i % 7),
                kind,
                Direction::Inbound,
                &format!("message {i}"),
            )
        })
        .collect();
    // Some (event, recipient) pairs repeat: the router's own retries look like this.
    let unique: Vec<&ComplianceRecord> = {
        let mut seen = BTreeSet::new();
        records.iter().filter(|r| seen.insert(key(r))).collect()
    };
    append(log.as_ref(), &records).await;
    let sink = start_sink(&log, &db.url, SinkSettings::default(), fast_options());
    wait_archived(log.as_ref(), GROUP).await;
    sink.stop().await;
    assert_rows_are(&db.rows().await, &unique);

    // Everything delivered again, as to a sink whose offsets were lost.
    let again = start_sink(
        &log,
        &db.url,
        SinkSettings::default(),
        SinkOptions {
            group: "compliance-sink-replay".into(),
            ..fast_options()
        },
    );
    wait_archived(log.as_ref(), "compliance-sink-replay").await;
    assert_eq!(again.metrics.already_present(), records.len() as u64);
    assert_eq!(
        again.metrics.rows_written("JM") + again.metrics.rows_written("TC_MSGARCHIVE"),
        0
    );
    again.stop().await;
    assert_rows_are(&db.rows().await, &unique);
    db.drop_database().await;
}

on_every_backend!(ordered_ids_after_the_cut_over_and_legacy_ids_before);
/// An archive that already holds rows when the sink first meets ordered record ids keeps
/// the legacy ids for records up to an hour later: a record an older sink wrote is a
/// no-op when it comes again; later records get time-ordered ids. A new archive orders
/// every record with a UUID v7 event id.
async fn ordered_ids_after_the_cut_over_and_legacy_ids_before(backend: Backend) {
    use imbus_connector_compliance::Database;
    use imbus_connector_compliance::row::{RecordIds, decide, ordered_record_id};
    imbus_tests_tracing();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let v7 =
        |seconds: u64| uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, 0));
    let mut earlier = record(
        1,
        "bob@example.com",
        MessageType::Chat,
        Direction::Inbound,
        "before",
    );
    earlier.event_id = v7(now_s - 10);
    let mut later = record(
        2,
        "bob@example.com",
        MessageType::Chat,
        Direction::Inbound,
        "after",
    );
    later.event_id = v7(now_s + 2 * 3600);

    let fresh = TestDb::new(backend).await;
    let fresh_db = Database::open(&fresh.url, 1).unwrap();
    fresh_db.migrate().await.unwrap();
    assert_eq!(fresh_db.record_ids().await.unwrap(), RecordIds::ORDERED);
    fresh_db.close().await;
    fresh.drop_database().await;

    let db = TestDb::new(backend).await;
    let direct = Database::open(&db.url, 1).unwrap();
    direct.migrate().await.unwrap();
    // An older sink's row: the legacy id.
    let legacy = RecordIds {
        ordered_after_micros: i64::MAX,
    };
    let imbus_connector_compliance::row::Decision::Archive(row) =
        decide(&earlier, &SinkSettings::default(), legacy)
    else {
        panic!("not archived");
    };
    direct.write(&[&row]).await.unwrap();
    let ids = direct.record_ids().await.unwrap();
    assert!(
        ids.ordered_after_micros > i64::try_from(now_s).unwrap() * 1_000_000,
        "{ids:?}"
    );
    assert_eq!(direct.record_ids().await.unwrap(), ids, "stored once");
    direct.close().await;

    let (log, _dir) = log().await;
    append(log.as_ref(), &[earlier.clone(), later.clone()]).await;
    let sink = start_sink(&log, &db.url, SinkSettings::default(), fast_options());
    wait_archived(log.as_ref(), GROUP).await;
    assert_eq!(sink.metrics.already_present(), 1);
    sink.stop().await;
    let rows = db.rows().await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let id_of = |r: &ComplianceRecord| {
        rows.iter()
            .find(|a| a.event_id == r.event_id.to_string())
            .map(|a| a.record_id.clone())
            .unwrap()
    };
    assert_eq!(id_of(&earlier), record_id(&earlier).to_string());
    assert_eq!(
        id_of(&later),
        ordered_record_id(&later).unwrap().to_string()
    );
    db.drop_database().await;
}

on_every_backend!(crash_after_the_database_commit_loses_and_duplicates_nothing);
async fn crash_after_the_database_commit_loses_and_duplicates_nothing(backend: Backend) {
    imbus_tests_tracing();
    let db = TestDb::new(backend).await;
    let (log, _dir) = log().await;
    let records: Vec<ComplianceRecord> = (0..300)
        .map(|i| {
            record(
                5000 + i,
                &format!("u{}@example.com", i % 11),
                MessageType::Chat,
                Direction::Inbound,
                &format!("crash test {i}"),
            )
        })
        .collect();
    append(log.as_ref(), &records).await;

    // The first batch is committed to the database, then the sink dies before
    // committing its offsets.
    let crashed = Arc::new(AtomicBool::new(false));
    let flag = crashed.clone();
    let sink = start_sink(
        &log,
        &db.url,
        SinkSettings::default(),
        SinkOptions {
            max_batch: 64,
            stop_after_database_commit: Some(Arc::new(move || !flag.swap(true, Ordering::SeqCst))),
            ..fast_options()
        },
    );
    let ended = tokio::time::timeout(PATIENCE, sink.task)
        .await
        .expect("the sink did not reach the crash point")
        .unwrap();
    assert!(matches!(ended, Err(SinkError::CrashPoint)), "{ended:?}");
    assert!(crashed.load(Ordering::SeqCst));
    let written_before = db.rows().await.len();
    assert!(
        written_before > 0,
        "the crashed batch was committed to the database"
    );
    for p in 0..PARTITIONS {
        assert_eq!(
            log.committed(GROUP, &TopicPartition::new(COMPLIANCE, p))
                .await
                .unwrap(),
            None,
            "no offset was committed"
        );
    }

    // Restarted: the batch is delivered again and recognised.
    let sink = start_sink(&log, &db.url, SinkSettings::default(), fast_options());
    wait_archived(log.as_ref(), GROUP).await;
    assert_eq!(sink.metrics.already_present(), written_before as u64);
    sink.stop().await;
    assert_rows_are(&db.rows().await, &records.iter().collect::<Vec<_>>());
    db.drop_database().await;
}

on_every_backend!(an_outage_pauses_alarms_and_catches_up);
async fn an_outage_pauses_alarms_and_catches_up(backend: Backend) {
    imbus_tests_tracing();
    let db = TestDb::new(backend).await;
    let (log, _dir) = log().await;
    let records: Vec<ComplianceRecord> = (0..400)
        .map(|i| {
            record(
                9000 + i,
                &format!("o{}@example.com", i % 5),
                if i % 3 == 0 {
                    MessageType::Groupchat
                } else {
                    MessageType::Normal
                },
                Direction::Inbound,
                &format!("outage {i}"),
            )
        })
        .collect();
    let (first, second) = records.split_at(150);

    // SQLite has no connection to cut: another connection holding the write lock makes
    // the database fail the same way (SQLITE_BUSY) until it lets go.
    let proxy = match backend {
        Backend::Sqlite => None,
        _ => Some(Proxy::start(db.server_addr()).await),
    };
    let url = match &proxy {
        Some(p) => db.url_through(p.addr),
        None => db.url.clone(),
    };
    let sink = start_sink(&log, &url, SinkSettings::default(), fast_options());
    append(log.as_ref(), first).await;
    wait_archived(log.as_ref(), GROUP).await;
    assert_eq!(sink.metrics.up(), 1);

    let mut lock = None;
    match &proxy {
        Some(p) => p.close(),
        None => lock = Some(sqlite_write_lock(&db.url).await),
    }
    append(log.as_ref(), second).await;
    wait_for("the health gauge to drop", || sink.metrics.up() == 0).await;
    wait_for("the lag to show", || sink.metrics.lag_records() > 0).await;
    assert!(sink.metrics.database_errors() > 0);
    assert!(sink.metrics.lag_seconds() > 0.0);

    match &proxy {
        Some(p) => p.reopen(),
        None => {
            if let Some(lock) = lock.take() {
                sqlite_release(lock).await;
            }
        }
    }
    wait_archived(log.as_ref(), GROUP).await;
    wait_for("the health gauge to recover", || sink.metrics.up() == 1).await;
    wait_for("the lag to clear", || sink.metrics.lag_records() == 0).await;
    assert_eq!(sink.metrics.lag_seconds(), 0.0);
    sink.stop().await;
    assert_rows_are(&db.rows().await, &records.iter().collect::<Vec<_>>());
    db.drop_database().await;
}

/// Holds SQLite's write lock from another connection.
async fn sqlite_write_lock(url: &str) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    sqlx::Executor::execute(&mut c, "BEGIN EXCLUSIVE")
        .await
        .unwrap();
    c
}

async fn sqlite_release(mut c: sqlx::SqliteConnection) {
    use sqlx::Connection;
    sqlx::Executor::execute(&mut c, "ROLLBACK").await.unwrap();
    c.close().await.unwrap();
}

on_every_backend!(hostile_input_is_stored_exactly_or_dead_lettered_with_a_reason);
async fn hostile_input_is_stored_exactly_or_dead_lettered_with_a_reason(backend: Backend) {
    imbus_tests_tracing();
    let db = TestDb::new(backend).await;
    let (log, _dir) = log().await;
    let big: String = "0123456789abcdef".repeat(65_536); // 1 MiB
    let bodies = [
        "nul \0 inside".to_owned(),
        big.clone(),
        "'); DROP TABLE JM; -- \\' \\\" %_ ${x} `y` ;".to_owned(),
        "astral 𝄞 😀 𐍈 — ok".to_owned(),
        "plain".to_owned(),
        "\u{FEFF}bom and \u{202E}rtl override".to_owned(),
    ];
    let mut records: Vec<ComplianceRecord> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            record(
                20_000 + i as u128,
                "bob@example.com",
                MessageType::Chat,
                Direction::Inbound,
                b,
            )
        })
        .collect();
    // A room nickname longer than MySQL's column (1023 characters).
    let mut long_nick = record(
        20_100,
        "bob@example.com",
        MessageType::Groupchat,
        Direction::Inbound,
        "long nickname",
    );
    long_nick.nickname = Some("n".repeat(5000));
    records.push(long_nick);
    append(log.as_ref(), &records).await;
    // Something that is not a compliance record at all.
    log.append(
        COMPLIANCE,
        Record::new("bob@example.com", b"\x00\x00\x00\x06\x41garbage".to_vec()),
    )
    .await
    .unwrap();

    let sink = start_sink(&log, &db.url, SinkSettings::default(), fast_options());
    wait_archived(log.as_ref(), GROUP).await;
    let rows = db.rows().await;
    let dead = dead_letters(log.as_ref()).await;
    assert_eq!(sink.metrics.dead_letters(), dead.len() as u64);
    sink.stop().await;

    let mut dead_keys = BTreeSet::new();
    let mut undecodable = 0;
    for d in &dead {
        let reason = header(d, dead::REASON).expect("a dead letter says why");
        assert!(!reason.is_empty());
        assert_eq!(header(d, dead::TOPIC).as_deref(), Some(COMPLIANCE));
        assert!(header(d, dead::OFFSET).is_some());
        assert_eq!(d.key.as_deref(), Some(&b"bob@example.com"[..]));
        match decode(&d.value) {
            Some(r) => {
                dead_keys.insert(key(&r));
            }
            None => {
                assert!(reason.contains("decode"), "{reason}");
                undecodable += 1;
            }
        }
    }
    assert_eq!(undecodable, 1);
    // Every record is either stored exactly or dead-lettered, never both.
    let stored: Vec<&ComplianceRecord> = records
        .iter()
        .filter(|r| !dead_keys.contains(&key(r)))
        .collect();
    assert_eq!(stored.len() + dead_keys.len(), records.len());
    assert_rows_are(&rows, &stored);
    let expected_dead: BTreeSet<(String, String)> = match backend {
        // PostgreSQL text cannot hold NUL.
        Backend::Postgres => [key(&records[0])].into(),
        // MySQL refuses the nickname that does not fit (strict mode).
        Backend::MySql => [key(&records[6])].into(),
        Backend::Sqlite => BTreeSet::new(),
    };
    assert_eq!(dead_keys, expected_dead);
    // The 1 MiB body is whole.
    let big_row = rows
        .iter()
        .find(|r| r.event_id == records[1].event_id.to_string())
        .unwrap();
    assert_eq!(
        big_row.body_text.as_ref().map(|b| b.as_bytes()),
        Some(big.as_bytes())
    );
    db.drop_database().await;
}

fn imbus_tests_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
