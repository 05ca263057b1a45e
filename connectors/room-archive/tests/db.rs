//! The room-archive database on every backend: the same tests against SQLite (a file in
//! a temporary directory), PostgreSQL (a schema of its own per test) and MariaDB/MySQL (a
//! database of its own per test).
//!
//! PostgreSQL and MariaDB must be running: `IMBUS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and `IMBUS_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`) name a server and an account that may create
//! schemas and databases. A test fails, never skips, when its database is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use imbus_connector_compliance::settings::{Backend, sqlite_url};
use imbus_connector_compliance::{Database, DbError, redact_url};
use imbus_connector_room_archive::db::{ArchiveDb, SearchError};
use imbus_connector_room_archive::model::{
    Batch, Found, MessageRow, PageRequest, RoomChange, RoomRow, Search,
};
use imbus_tests::proxy::Proxy;
use sqlx::{Connection, Row};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, PrimitiveDateTime, UtcOffset};
use uuid::Uuid;

macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::Backend::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::Backend::Postgres).await;
            })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::Backend::MySql).await;
            })*
        }
    };
}

on_every_backend!(
    migrating_twice_changes_nothing,
    a_database_of_its_own,
    writing_twice_stores_once,
    rooms_and_affiliations,
    later_room_changes_win,
    fulltext_finds_whole_words_ignoring_case,
    fulltext_cannot_be_broken_by_hostile_text,
    nickname_and_time_filters,
    paging_by_index,
    paging_after_and_before,
    paging_with_filters,
    unknown_ids,
    count_only,
    ids_filter,
    large_and_non_ascii_messages_round_trip,
    a_batch_is_one_transaction,
    an_unreachable_database_is_transient,
);

// ---------------------------------------------------------------------------------------
// Harness.

use imbus_tests::db_urls::{mysql_admin_url, postgres_admin_url, with_database, with_param};

/// Tables of their own for one test: a SQLite file, a PostgreSQL schema or a MariaDB
/// database, removed by [`TestDb::drop`].
struct TestDb {
    backend: Backend,
    url: String,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    async fn new(backend: Backend) -> TestDb {
        let name = format!("imbus_ra_{}", Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                TestDb {
                    backend,
                    url: sqlite_url(&dir.path().join("room-archive.sqlite")),
                    admin_url: None,
                    name,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut c = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is needed for this test: cannot connect to {} (set IMBUS_TEST_POSTGRES_URL): {e}",
                        redact_url(&admin)
                    )
                });
                sqlx::raw_sql(&format!("CREATE SCHEMA {name}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
                TestDb {
                    backend,
                    url: with_param(&admin, &format!("options[search_path]={name}")),
                    admin_url: Some(admin),
                    name,
                    _dir: None,
                }
            }
            Backend::MySql => {
                let admin = mysql_admin_url();
                let mut c = sqlx::MySqlConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "MariaDB/MySQL is needed for this test: cannot connect to {} (set IMBUS_TEST_MYSQL_URL): {e}",
                        redact_url(&admin)
                    )
                });
                sqlx::raw_sql(&format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
                TestDb {
                    backend,
                    url: with_database(&admin, &name),
                    admin_url: Some(admin),
                    name,
                    _dir: None,
                }
            }
        }
    }

    /// An archive on these tables, migrated.
    async fn archive(&self) -> ArchiveDb {
        let db = ArchiveDb::open(&self.url, 3).unwrap();
        assert_eq!(db.backend(), self.backend);
        db.migrate().await.unwrap();
        db
    }

    async fn drop(self) {
        match (self.backend, &self.admin_url) {
            (Backend::Postgres, Some(admin)) => {
                let mut c = sqlx::PgConnection::connect(admin).await.unwrap();
                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
            }
            (Backend::MySql, Some(admin)) => {
                let mut c = sqlx::MySqlConnection::connect(admin).await.unwrap();
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {}", self.name))
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
            }
            _ => {}
        }
    }

    /// Every `TC_ROOMS` row, by room JID.
    async fn rooms(&self) -> Vec<StoredRoom> {
        const Q: &str = "SELECT room_jid, name, description, subject, is_public, members_only, moderated, password_protected, max_users, history_length, created_at, updated_at, destroyed_at FROM TC_ROOMS";
        let mut out = match self.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                let rows = sqlx::query(Q).fetch_all(&mut c).await.unwrap();
                rows.iter()
                    .map(|r| StoredRoom {
                        room_jid: r.get(0),
                        name: r.get(1),
                        description: r.get(2),
                        subject: r.get(3),
                        flags: [r.get(4), r.get(5), r.get(6), r.get(7)],
                        max_users: r.get(8),
                        history_length: r.get(9),
                        created_at: r.get(10),
                        updated_at: r.get(11),
                        destroyed_at: r.get(12),
                    })
                    .collect::<Vec<_>>()
            }
            Backend::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                let rows = sqlx::query(Q).fetch_all(&mut c).await.unwrap();
                let text = |r: &sqlx::mysql::MySqlRow, i: usize| {
                    r.get::<Option<Vec<u8>>, _>(i)
                        .map(|b| String::from_utf8(b).unwrap())
                };
                let time = |r: &sqlx::mysql::MySqlRow, i: usize| {
                    r.get::<Option<PrimitiveDateTime>, _>(i)
                        .map(PrimitiveDateTime::assume_utc)
                };
                rows.iter()
                    .map(|r| StoredRoom {
                        room_jid: text(r, 0).unwrap(),
                        name: text(r, 1),
                        description: text(r, 2),
                        subject: text(r, 3),
                        flags: [r.get(4), r.get(5), r.get(6), r.get(7)],
                        max_users: r.get(8),
                        history_length: r.get(9),
                        created_at: time(r, 10).unwrap(),
                        updated_at: time(r, 11).unwrap(),
                        destroyed_at: time(r, 12),
                    })
                    .collect()
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                let rows = sqlx::query(Q).fetch_all(&mut c).await.unwrap();
                let time = |r: &sqlx::sqlite::SqliteRow, i: usize| {
                    r.get::<Option<String>, _>(i)
                        .map(|t| OffsetDateTime::parse(&t, &Rfc3339).unwrap())
                };
                rows.iter()
                    .map(|r| StoredRoom {
                        room_jid: r.get(0),
                        name: r.get(1),
                        description: r.get(2),
                        subject: r.get(3),
                        flags: [r.get(4), r.get(5), r.get(6), r.get(7)],
                        max_users: r.get(8),
                        history_length: r.get(9),
                        created_at: time(r, 10).unwrap(),
                        updated_at: time(r, 11).unwrap(),
                        destroyed_at: time(r, 12),
                    })
                    .collect()
            }
        };
        out.sort_by(|a, b| a.room_jid.cmp(&b.room_jid));
        out
    }

    /// Every `TC_USERS` row as (room, real JID, affiliation), sorted.
    async fn users(&self) -> Vec<(String, String, String)> {
        const Q: &str = "SELECT room_jid, real_jid, affiliation FROM TC_USERS";
        let mut out: Vec<(String, String, String)> = match self.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(Q).fetch_all(&mut c).await.unwrap()
            }
            Backend::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                let rows: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> =
                    sqlx::query_as(Q).fetch_all(&mut c).await.unwrap();
                rows.into_iter()
                    .map(|(a, b, c)| {
                        (
                            String::from_utf8(a).unwrap(),
                            String::from_utf8(b).unwrap(),
                            String::from_utf8(c).unwrap(),
                        )
                    })
                    .collect()
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(Q).fetch_all(&mut c).await.unwrap()
            }
        };
        out.sort();
        out
    }

    /// (rows, sum of body_len, sum of message_len) of `TC_MSGARCHIVE`.
    async fn message_stats(&self) -> (i64, i64, i64) {
        const Q: &str = "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(body_len), 0) AS BIGINT), CAST(COALESCE(SUM(message_len), 0) AS BIGINT) FROM TC_MSGARCHIVE";
        match self.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(Q).fetch_one(&mut c).await.unwrap()
            }
            Backend::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                let q = "SELECT COUNT(*), CAST(COALESCE(SUM(body_len), 0) AS SIGNED), CAST(COALESCE(SUM(message_len), 0) AS SIGNED) FROM TC_MSGARCHIVE";
                sqlx::query_as(q).fetch_one(&mut c).await.unwrap()
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                let q = "SELECT COUNT(*), COALESCE(SUM(body_len), 0), COALESCE(SUM(message_len), 0) FROM TC_MSGARCHIVE";
                sqlx::query_as(q).fetch_one(&mut c).await.unwrap()
            }
        }
    }
}

/// A `TC_ROOMS` row as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredRoom {
    room_jid: String,
    name: Option<String>,
    description: Option<String>,
    subject: Option<String>,
    /// is_public, members_only, moderated, password_protected.
    flags: [bool; 4],
    max_users: Option<i64>,
    history_length: Option<i64>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    destroyed_at: Option<OffsetDateTime>,
}

impl StoredRoom {
    fn of(room: &RoomRow, destroyed_at: Option<OffsetDateTime>) -> StoredRoom {
        StoredRoom {
            room_jid: room.room_jid.clone(),
            name: room.name.clone(),
            description: room.description.clone(),
            subject: room.subject.clone(),
            flags: [
                room.public,
                room.members_only,
                room.moderated,
                room.password_protected,
            ],
            max_users: room.max_users,
            history_length: room.history_length,
            created_at: room.created_at,
            updated_at: room.updated_at,
            destroyed_at,
        }
    }
}

const ROOM: &str = "team@conference-1-imbus.example.com";
const OTHER_ROOM: &str = "other@conference-1-imbus.example.com";

/// A fixed instant with microseconds (every backend keeps microseconds).
fn t0() -> OffsetDateTime {
    OffsetDateTime::parse("2025-03-01T09:00:00.123456Z", &Rfc3339).unwrap()
}

fn room_row(jid: &str, name: &str, affiliations: &[(&str, &str)]) -> RoomRow {
    RoomRow {
        room_jid: jid.to_owned(),
        name: Some(name.to_owned()),
        description: Some(format!("all about {name}")),
        subject: None,
        public: true,
        members_only: false,
        moderated: true,
        password_protected: false,
        max_users: Some(50),
        history_length: None,
        created_at: t0(),
        updated_at: t0(),
        affiliations: affiliations
            .iter()
            .map(|(j, a)| ((*j).to_owned(), (*a).to_owned()))
            .collect(),
    }
}

/// The `n`th message of `room` (archive id derived from both), sent `n` minutes after
/// [`t0`] with sequence number `10 * n + 7`.
fn message(room: &str, n: i64, nickname: &str, body: &str) -> MessageRow {
    MessageRow {
        archive_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{room}/{n}").as_bytes()),
        room_jid: room.to_owned(),
        seq: 10 * n + 7,
        from_jid: format!("{}@example.com/desk", nickname.to_lowercase()),
        nickname: nickname.to_owned(),
        sent_date: t0() + Duration::minutes(n),
        subject: None,
        body: Some(body.to_owned()),
        xml: format!(
            "<message from='{room}/{nickname}' type='groupchat' id='m{n}'><body>{}</body></message>",
            body.replace('&', "&amp;").replace('<', "&lt;")
        ),
    }
}

fn search(room: &str) -> Search {
    Search {
        room_jid: room.to_owned(),
        nickname: None,
        start: None,
        end: None,
        fulltext: None,
        after_id: None,
        before_id: None,
        ids: None,
        page: PageRequest::Index(0),
        max: 1000,
    }
}

fn bodies(found: &Found) -> Vec<String> {
    found
        .messages
        .iter()
        .map(|m| m.body.clone().unwrap_or_default())
        .collect()
}

fn seqs(found: &Found) -> Vec<i64> {
    found.messages.iter().map(|m| m.seq).collect()
}

/// `n` messages of [`ROOM`] ("message 0" …), interleaved with messages of another room
/// that no search of [`ROOM`] may return.
async fn transcript(db: &ArchiveDb, n: i64) -> Vec<MessageRow> {
    let ours: Vec<MessageRow> = (0..n)
        .map(|i| {
            let nick = if i % 2 == 0 { "alice" } else { "bob" };
            message(ROOM, i, nick, &format!("message {i}"))
        })
        .collect();
    let mut batch = Batch::default();
    for m in &ours {
        batch.messages.push(m.clone());
        batch
            .messages
            .push(message(OTHER_ROOM, m.seq, "alice", "elsewhere"));
    }
    db.write(&batch).await.unwrap();
    ours
}

// ---------------------------------------------------------------------------------------
// Tests.

async fn migrating_twice_changes_nothing(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    db.ping().await.unwrap();
    db.write(&Batch {
        rooms: vec![RoomChange::Stored(room_row(ROOM, "Team", &[]))],
        messages: vec![message(ROOM, 1, "alice", "hello")],
    })
    .await
    .unwrap();
    db.migrate().await.unwrap();
    db.migrate().await.unwrap();
    assert_eq!(t.rooms().await.len(), 1);
    assert_eq!(db.search(&search(ROOM)).await.unwrap().count, 1);
    db.write(&Batch::default()).await.unwrap();
    db.close().await;
    t.drop().await;
}

async fn a_database_of_its_own(backend: Backend) {
    let t = TestDb::new(backend).await;
    let compliance = Database::open(&t.url, 1).unwrap();
    compliance.migrate().await.unwrap();
    compliance.close().await;
    let db = ArchiveDb::open(&t.url, 1).unwrap();
    match db.migrate().await {
        Err(DbError::Config { detail, .. }) => {
            assert!(detail.contains("database of its own"), "{detail}")
        }
        other => panic!("migrating the compliance archive's database: {other:?}"),
    }
    db.close().await;
    t.drop().await;
}

async fn writing_twice_stores_once(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    let messages: Vec<MessageRow> = (0..3)
        .map(|i| message(ROOM, i, "alice", &format!("hello {i}")))
        .collect();
    let batch = Batch {
        rooms: vec![RoomChange::Stored(room_row(
            ROOM,
            "Team",
            &[
                ("alice@example.com", "owner"),
                ("bob@example.com", "member"),
            ],
        ))],
        messages: messages.clone(),
    };
    db.write(&batch).await.unwrap();
    db.write(&batch).await.unwrap();
    // The same message twice in one batch, and a batch overlapping the first.
    let mut again = Batch {
        rooms: vec![],
        messages: vec![messages[1].clone(), messages[1].clone()],
    };
    again.messages.push(message(ROOM, 3, "bob", "hello 3"));
    db.write(&again).await.unwrap();

    let (rows, body_len, message_len) = t.message_stats().await;
    assert_eq!(rows, 4);
    let mut all = messages.clone();
    all.push(message(ROOM, 3, "bob", "hello 3"));
    assert_eq!(
        body_len,
        all.iter()
            .map(|m| m.body.as_ref().unwrap().len() as i64)
            .sum::<i64>()
    );
    assert_eq!(
        message_len,
        all.iter().map(|m| m.xml.len() as i64).sum::<i64>()
    );
    assert_eq!(t.rooms().await.len(), 1);
    assert_eq!(t.users().await.len(), 2);
    let found = db.search(&search(ROOM)).await.unwrap();
    assert_eq!(found.messages, all);
    assert_eq!(
        (found.count, found.first_index, found.complete),
        (4, 0, true)
    );
    db.close().await;
    t.drop().await;
}

async fn rooms_and_affiliations(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    let v1 = room_row(
        ROOM,
        "Team",
        &[
            ("alice@example.com", "owner"),
            ("bob@example.com", "member"),
        ],
    );
    let other = room_row(OTHER_ROOM, "Other", &[("carol@example.com", "admin")]);
    db.write(&Batch {
        rooms: vec![
            RoomChange::Stored(v1.clone()),
            RoomChange::Stored(other.clone()),
        ],
        messages: vec![],
    })
    .await
    .unwrap();
    assert_eq!(
        t.rooms().await,
        vec![StoredRoom::of(&other, None), StoredRoom::of(&v1, None)]
    );

    // A new state: every column and the affiliations are replaced.
    let mut v2 = room_row(
        ROOM,
        "Team 2",
        &[
            ("alice@example.com", "owner"),
            ("dave@example.com", "admin"),
        ],
    );
    v2.description = None;
    v2.subject = Some("Sprint 😀".into());
    v2.public = false;
    v2.members_only = true;
    v2.moderated = false;
    v2.password_protected = true;
    v2.max_users = None;
    v2.history_length = Some(0);
    v2.updated_at = t0() + Duration::hours(1);
    db.write(&Batch {
        rooms: vec![RoomChange::Stored(v2.clone())],
        messages: vec![],
    })
    .await
    .unwrap();
    assert_eq!(t.rooms().await[1], StoredRoom::of(&v2, None));
    assert_eq!(
        t.users().await,
        vec![
            (
                OTHER_ROOM.into(),
                "carol@example.com".into(),
                "admin".into()
            ),
            (ROOM.into(), "alice@example.com".into(), "owner".into()),
            (ROOM.into(), "dave@example.com".into(), "admin".into()),
        ]
    );

    // Destroyed: the row stays with destroyed_at, the affiliations go, the transcript
    // stays.
    db.write(&Batch {
        rooms: vec![],
        messages: vec![message(ROOM, 1, "alice", "before the end")],
    })
    .await
    .unwrap();
    let end = t0() + Duration::hours(2);
    db.write(&Batch {
        rooms: vec![RoomChange::Gone {
            room_jid: ROOM.into(),
            at: end,
        }],
        messages: vec![],
    })
    .await
    .unwrap();
    let mut expected = StoredRoom::of(&v2, Some(end));
    expected.updated_at = end;
    assert_eq!(t.rooms().await[1], expected);
    assert_eq!(
        t.users().await,
        vec![(
            OTHER_ROOM.into(),
            "carol@example.com".into(),
            "admin".into()
        )]
    );
    assert_eq!(db.search(&search(ROOM)).await.unwrap().count, 1);

    // Gone again (a redelivery, or a later tombstone): the first end stays.
    db.write(&Batch {
        rooms: vec![RoomChange::Gone {
            room_jid: ROOM.into(),
            at: end + Duration::hours(1),
        }],
        messages: vec![],
    })
    .await
    .unwrap();
    assert_eq!(t.rooms().await[1], expected);

    // Gone for a room the tables never held: nothing.
    db.write(&Batch {
        rooms: vec![RoomChange::Gone {
            room_jid: "never@conference-1-imbus.example.com".into(),
            at: end,
        }],
        messages: vec![],
    })
    .await
    .unwrap();
    assert_eq!(t.rooms().await.len(), 2);

    // Created again: destroyed_at is cleared.
    let mut v3 = room_row(ROOM, "Team 3", &[("erin@example.com", "owner")]);
    v3.created_at = end + Duration::hours(3);
    v3.updated_at = v3.created_at;
    db.write(&Batch {
        rooms: vec![RoomChange::Stored(v3.clone())],
        messages: vec![],
    })
    .await
    .unwrap();
    assert_eq!(t.rooms().await[1], StoredRoom::of(&v3, None));
    assert_eq!(
        t.users().await,
        vec![
            (
                OTHER_ROOM.into(),
                "carol@example.com".into(),
                "admin".into()
            ),
            (ROOM.into(), "erin@example.com".into(), "owner".into()),
        ]
    );
    db.close().await;
    t.drop().await;
}

async fn later_room_changes_win(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    let v1 = room_row(ROOM, "One", &[("alice@example.com", "owner")]);
    let v2 = room_row(ROOM, "Two", &[("bob@example.com", "owner")]);
    let v3 = room_row(ROOM, "Three", &[("carol@example.com", "owner")]);
    let end = t0() + Duration::hours(1);
    // One batch: stored twice, destroyed, created again, destroyed again.
    db.write(&Batch {
        rooms: vec![
            RoomChange::Stored(v1),
            RoomChange::Stored(v2.clone()),
            RoomChange::Gone {
                room_jid: ROOM.into(),
                at: end,
            },
            RoomChange::Stored(v3.clone()),
            RoomChange::Gone {
                room_jid: ROOM.into(),
                at: end + Duration::hours(1),
            },
            RoomChange::Gone {
                room_jid: ROOM.into(),
                at: end + Duration::hours(2),
            },
        ],
        messages: vec![],
    })
    .await
    .unwrap();
    let mut expected = StoredRoom::of(&v3, Some(end + Duration::hours(1)));
    expected.updated_at = end + Duration::hours(1);
    assert_eq!(t.rooms().await, vec![expected]);
    assert!(t.users().await.is_empty());

    // Stored then stored again in one batch: the later state, its affiliations only.
    db.write(&Batch {
        rooms: vec![RoomChange::Stored(v3), RoomChange::Stored(v2.clone())],
        messages: vec![],
    })
    .await
    .unwrap();
    assert_eq!(t.rooms().await, vec![StoredRoom::of(&v2, None)]);
    assert_eq!(
        t.users().await,
        vec![(ROOM.into(), "bob@example.com".into(), "owner".into())]
    );
    db.close().await;
    t.drop().await;
}

/// Bodies for the full-text tests.
const TEXTS: [&str; 13] = [
    "Hello World",
    "hello there",
    "HELLO",
    "helloworld",
    "say hello-world now",
    "world peace",
    "to be or not to be",
    "this OR that, near the hello world",
    "中文 测试",
    "nothing here",
    "release notes: deploy the server",
    "it's a tie; \"quoted\" (paren) +plus -minus *star",
    "mail alice@example.com or see https://example.com/docs/page.html",
];

/// Indexes into [`TEXTS`] of the bodies holding every word of `query` (runs of letters
/// and digits, ignoring case): what every backend must answer.
fn expected(query: &str) -> Vec<usize> {
    let words = |s: &str| -> BTreeSet<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let wanted = words(query);
    TEXTS
        .iter()
        .enumerate()
        .filter(|(_, t)| wanted.is_subset(&words(t)))
        .map(|(i, _)| i)
        .collect()
}

async fn fulltext_search(db: &ArchiveDb, query: &str) -> Vec<usize> {
    let mut s = search(ROOM);
    s.fulltext = Some(query.to_owned());
    let found = db
        .search(&s)
        .await
        .unwrap_or_else(|e| panic!("searching {query:?}: {e}"));
    assert_eq!(found.count, found.messages.len(), "{query:?}");
    found
        .messages
        .iter()
        .map(|m| usize::try_from((m.seq - 7) / 10).unwrap())
        .collect()
}

async fn write_texts(db: &ArchiveDb) {
    let messages = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| message(ROOM, i as i64, "alice", t))
        .chain([message(OTHER_ROOM, 0, "alice", "hello world elsewhere")])
        .collect();
    db.write(&Batch {
        rooms: vec![],
        messages,
    })
    .await
    .unwrap();
}

async fn fulltext_finds_whole_words_ignoring_case(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    write_texts(&db).await;
    let cases: &[(&str, &[usize])] = &[
        // Case-insensitive, whole words: "helloworld" is another word.
        ("hello", &[0, 1, 2, 4, 7]),
        ("HeLLo", &[0, 1, 2, 4, 7]),
        // Every word must occur, in any order.
        ("world hello", &[0, 4, 7]),
        ("hello peace", &[]),
        // Part of a longer word is no match.
        ("hell", &[]),
        ("worl", &[]),
        ("deploy", &[10]),
        ("DEPLOY server", &[10]),
        // Short words and (elsewhere) stop words.
        ("to be", &[6]),
        ("the", &[7, 10]),
        ("or", &[6, 7, 12]),
        // Words inside addresses and URLs.
        ("example", &[12]),
        ("ALICE example com", &[12]),
        ("docs page html", &[12]),
        ("alice@example.com", &[12]),
        ("a", &[11]),
        // Non-Latin text.
        ("中文", &[8]),
        ("测试 中文", &[8]),
        ("中", &[]),
    ];
    for (query, want) in cases {
        assert_eq!(&expected(query), want, "the expectation of {query:?}");
        assert_eq!(&fulltext_search(&db, query).await, want, "{query:?}");
    }
    // No words: no filter.
    for query in ["", "   ", "\t\n"] {
        assert_eq!(
            fulltext_search(&db, query).await.len(),
            TEXTS.len(),
            "{query:?}"
        );
    }
    db.close().await;
    t.drop().await;
}

async fn fulltext_cannot_be_broken_by_hostile_text(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    write_texts(&db).await;
    let hostile = [
        "\"",
        "\"hello",
        "hello\"",
        "\"hello world\"",
        "hello*",
        "hell*",
        "*",
        "+hello -world",
        "-hello",
        "+",
        "-",
        "(",
        "(hello",
        "hello)",
        "hello OR world",
        "hello OR",
        "OR",
        "AND",
        "NOT hello",
        "NEAR(hello world)",
        "NEAR",
        "hello NEAR/2 world",
        "'",
        "it's",
        "hello'; DROP TABLE TC_MSGARCHIVE; --",
        ";",
        "hello;",
        "world:hello",
        "body_text:hello",
        "^hello",
        "hello~",
        "@2 hello",
        "\"hello\" @3",
        ">hello <world",
        "hello\\",
        "%",
        "_",
        "\u{0}",
        "a.b*c?[d]{e}|f$",
        "\"quoted\" (paren) +plus -minus *star",
        "😀",
    ];
    for query in hostile {
        assert_eq!(
            fulltext_search(&db, query).await,
            expected(query),
            "{query:?}"
        );
    }
    // Nothing was dropped or changed.
    assert_eq!(t.message_stats().await.0, TEXTS.len() as i64 + 1);
    assert_eq!(fulltext_search(&db, "hello").await, expected("hello"));
    db.close().await;
    t.drop().await;
}

async fn nickname_and_time_filters(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    let nicks = ["alice", "bob", "Alice", "alice", "bob 🦀", "alice"];
    let messages: Vec<MessageRow> = nicks
        .iter()
        .enumerate()
        .map(|(i, n)| message(ROOM, i as i64, n, &format!("m{i}")))
        .collect();
    db.write(&Batch {
        rooms: vec![],
        messages: messages.clone(),
    })
    .await
    .unwrap();

    let mut s = search(ROOM);
    s.nickname = Some("alice".into());
    assert_eq!(bodies(&db.search(&s).await.unwrap()), ["m0", "m3", "m5"]);
    s.nickname = Some("Alice".into());
    assert_eq!(bodies(&db.search(&s).await.unwrap()), ["m2"]);
    s.nickname = Some("bob 🦀".into());
    assert_eq!(bodies(&db.search(&s).await.unwrap()), ["m4"]);
    s.nickname = Some("nobody".into());
    assert_eq!(db.search(&s).await.unwrap().count, 0);

    // Start and end are inclusive, to the microsecond, in any offset.
    let mut s = search(ROOM);
    let plus2 = UtcOffset::from_hms(2, 0, 0).unwrap();
    s.start = Some(messages[1].sent_date.to_offset(plus2));
    s.end = Some(messages[4].sent_date);
    assert_eq!(
        bodies(&db.search(&s).await.unwrap()),
        ["m1", "m2", "m3", "m4"]
    );
    s.start = Some(messages[1].sent_date + Duration::microseconds(1));
    s.end = Some(messages[4].sent_date - Duration::microseconds(1));
    assert_eq!(bodies(&db.search(&s).await.unwrap()), ["m2", "m3"]);
    s.start = Some(messages[3].sent_date);
    s.end = None;
    s.nickname = Some("alice".into());
    assert_eq!(bodies(&db.search(&s).await.unwrap()), ["m3", "m5"]);
    s.start = None;
    s.end = Some(t0() - Duration::seconds(1));
    assert_eq!(db.search(&s).await.unwrap().count, 0);
    // Times come back exactly.
    let found = db.search(&search(ROOM)).await.unwrap();
    assert_eq!(found.messages, messages);
    db.close().await;
    t.drop().await;
}

async fn page(db: &ArchiveDb, page: PageRequest, max: usize) -> Found {
    let mut s = search(ROOM);
    s.page = page;
    s.max = max;
    db.search(&s).await.unwrap()
}

fn summary(found: &Found) -> (Vec<i64>, usize, usize, bool) {
    (
        found.messages.iter().map(|m| (m.seq - 7) / 10).collect(),
        found.first_index,
        found.count,
        found.complete,
    )
}

fn range(r: std::ops::Range<i64>) -> Vec<i64> {
    r.collect()
}

async fn paging_by_index(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    let all = transcript(&db, 23).await;
    assert_eq!(
        summary(&page(&db, PageRequest::Index(0), 10).await),
        (range(0..10), 0, 23, false)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Index(10), 10).await),
        (range(10..20), 10, 23, false)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Index(20), 10).await),
        (range(20..23), 20, 23, true)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Index(13), 10).await),
        (range(13..23), 13, 23, true)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Index(23), 10).await),
        (vec![], 23, 23, true)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Index(40), 10).await),
        (vec![], 40, 23, true)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Last, 10).await),
        (range(13..23), 13, 23, false)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Last, 23).await),
        (range(0..23), 0, 23, true)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Last, 100).await),
        (range(0..23), 0, 23, true)
    );
    assert_eq!(page(&db, PageRequest::Index(0), 100).await.messages, all);
    db.close().await;
    t.drop().await;
}

async fn paging_after_and_before(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    let all = transcript(&db, 23).await;
    let id = |i: usize| all[i].archive_id;
    assert_eq!(
        summary(&page(&db, PageRequest::After(id(9)), 10).await),
        (range(10..20), 10, 23, false)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::After(id(12)), 10).await),
        (range(13..23), 13, 23, true)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::After(id(19)), 10).await),
        (range(20..23), 20, 23, true)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::After(id(22)), 10).await),
        (vec![], 23, 23, true)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Before(id(13)), 10).await),
        (range(3..13), 3, 23, false)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Before(id(10)), 10).await),
        (range(0..10), 0, 23, true)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Before(id(3)), 10).await),
        (range(0..3), 0, 23, true)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Before(id(0)), 10).await),
        (vec![], 0, 23, true)
    );

    // Forwards through every page, then backwards from the last.
    let mut seen = Vec::new();
    let mut p = page(&db, PageRequest::Index(0), 10).await;
    loop {
        assert_eq!(p.first_index, seen.len());
        seen.extend(p.messages.iter().cloned());
        if p.complete {
            break;
        }
        let last = p.messages.last().unwrap().archive_id;
        p = page(&db, PageRequest::After(last), 10).await;
    }
    assert_eq!(seen, all);
    let mut seen = Vec::new();
    let mut p = page(&db, PageRequest::Last, 10).await;
    loop {
        assert_eq!(p.first_index + p.messages.len() + seen.len(), 23);
        let mut older = p.messages.clone();
        older.extend(seen);
        seen = older;
        if p.complete {
            break;
        }
        let first = p.messages.first().unwrap().archive_id;
        p = page(&db, PageRequest::Before(first), 10).await;
    }
    assert_eq!(seen, all);
    db.close().await;
    t.drop().await;
}

async fn paging_with_filters(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    let all = transcript(&db, 23).await;
    let id = |i: usize| all[i].archive_id;
    // alice wrote the even messages: 0, 2, …, 22 (12 of them).
    let mut s = search(ROOM);
    s.nickname = Some("alice".into());
    s.max = 5;
    let found = db.search(&s).await.unwrap();
    assert_eq!(summary(&found), (vec![0, 2, 4, 6, 8], 0, 12, false));
    // A cursor that is not itself a match (bob's message 9).
    s.page = PageRequest::After(id(9));
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (vec![10, 12, 14, 16, 18], 5, 12, false)
    );
    s.page = PageRequest::Before(id(9));
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (vec![0, 2, 4, 6, 8], 0, 12, true)
    );
    s.page = PageRequest::Last;
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (vec![14, 16, 18, 20, 22], 7, 12, false)
    );

    // after-id and before-id narrow the matches; the page counts within them.
    let mut s = search(ROOM);
    s.after_id = Some(id(4));
    s.before_id = Some(id(15));
    s.max = 4;
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (range(5..9), 0, 10, false)
    );
    s.page = PageRequest::Index(8);
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (range(13..15), 8, 10, true)
    );
    s.page = PageRequest::Last;
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (range(11..15), 6, 10, false)
    );
    s.page = PageRequest::After(id(10));
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (range(11..15), 6, 10, true)
    );
    s.page = PageRequest::Before(id(10));
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (range(6..10), 1, 10, false)
    );
    // With the full text and a time window too.
    s.fulltext = Some("MESSAGE".into());
    s.start = Some(all[6].sent_date);
    s.end = Some(all[12].sent_date);
    s.nickname = Some("bob".into());
    s.page = PageRequest::Index(0);
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (vec![7, 9, 11], 0, 3, true)
    );
    s.fulltext = Some("message 11".into());
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (vec![11], 0, 1, true)
    );
    db.close().await;
    t.drop().await;
}

async fn unknown_ids(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    transcript(&db, 5).await;
    let unknown = Uuid::new_v4();
    // A message of another room is unknown in this one.
    let elsewhere = message(OTHER_ROOM, 27, "alice", "elsewhere").archive_id;
    for id in [unknown, elsewhere] {
        let mut s = search(ROOM);
        s.after_id = Some(id);
        assert!(matches!(db.search(&s).await, Err(SearchError::UnknownId(u)) if u == id));
        let mut s = search(ROOM);
        s.before_id = Some(id);
        assert!(matches!(db.search(&s).await, Err(SearchError::UnknownId(u)) if u == id));
        let mut s = search(ROOM);
        s.page = PageRequest::After(id);
        assert!(matches!(db.search(&s).await, Err(SearchError::UnknownId(u)) if u == id));
        let mut s = search(ROOM);
        s.page = PageRequest::Before(id);
        let e = db.search(&s).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("no message with id {id} in this room's archive")
        );
    }
    // A room without messages: every id is unknown, a plain search finds nothing.
    let mut s = search("empty@conference-1-imbus.example.com");
    assert_eq!(summary(&db.search(&s).await.unwrap()), (vec![], 0, 0, true));
    s.page = PageRequest::Last;
    assert_eq!(summary(&db.search(&s).await.unwrap()), (vec![], 0, 0, true));
    s.page = PageRequest::After(unknown);
    assert!(matches!(
        db.search(&s).await,
        Err(SearchError::UnknownId(_))
    ));
    db.close().await;
    t.drop().await;
}

async fn count_only(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    let all = transcript(&db, 23).await;
    assert_eq!(
        summary(&page(&db, PageRequest::Index(0), 0).await),
        (vec![], 0, 23, false)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Last, 0).await),
        (vec![], 23, 23, false)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::After(all[4].archive_id), 0).await),
        (vec![], 5, 23, false)
    );
    assert_eq!(
        summary(&page(&db, PageRequest::Before(all[4].archive_id), 0).await),
        (vec![], 4, 23, false)
    );
    let mut s = search(ROOM);
    s.max = 0;
    s.fulltext = Some("message 7".into());
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (vec![], 0, 1, false)
    );
    s.fulltext = Some("absent".into());
    assert_eq!(summary(&db.search(&s).await.unwrap()), (vec![], 0, 0, true));
    db.close().await;
    t.drop().await;
}

async fn ids_filter(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    let all = transcript(&db, 10).await;
    let mut s = search(ROOM);
    // Ids of other rooms and unknown ids just do not match.
    s.ids = Some(vec![
        all[7].archive_id,
        all[3].archive_id,
        Uuid::new_v4(),
        message(OTHER_ROOM, 5, "alice", "elsewhere").archive_id,
    ]);
    let found = db.search(&s).await.unwrap();
    assert_eq!(summary(&found), (vec![3, 7], 0, 2, true));
    assert_eq!(found.messages, vec![all[3].clone(), all[7].clone()]);
    s.nickname = Some("bob".into());
    assert_eq!(
        summary(&db.search(&s).await.unwrap()),
        (vec![3, 7], 0, 2, true)
    );
    s.nickname = Some("alice".into());
    assert_eq!(summary(&db.search(&s).await.unwrap()), (vec![], 0, 0, true));
    s.nickname = None;
    s.ids = Some(vec![]);
    assert_eq!(summary(&db.search(&s).await.unwrap()), (vec![], 0, 0, true));
    s.ids = Some((0..1001).map(|_| Uuid::new_v4()).collect());
    assert!(matches!(
        db.search(&s).await,
        Err(SearchError::Db(DbError::Rejected(_)))
    ));
    db.close().await;
    t.drop().await;
}

async fn large_and_non_ascii_messages_round_trip(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    let room = "salle-été@conference-1-imbus.example.com";
    let unit =
        "Grüße aus Köln 😀🎉 中文字符测试 한국어 \u{202e}עברית\u{202c} 𝄞 \u{200d}zwj \r\n\t&<>'\" ";
    let mut body = String::new();
    while body.len() < 1 << 20 {
        body.push_str(unit);
    }
    let mut big = message(room, 1, "Zoë 🦀", &body);
    big.subject = Some("Sujet 😀 «été» 中文".into());
    big.from_jid = "zoë@exämple.com/téléphone 📱".into();
    assert!(big.body.as_ref().unwrap().len() >= 1 << 20);
    let small = message(room, 2, "李", "短信 😀");
    let empty = MessageRow {
        body: None,
        subject: Some("only a subject".into()),
        ..message(room, 3, "Zoë 🦀", "")
    };
    db.write(&Batch {
        rooms: vec![RoomChange::Stored(room_row(
            room,
            "Salle d'été 😀",
            &[("zoë@exämple.com", "owner")],
        ))],
        messages: vec![big.clone(), small.clone(), empty.clone()],
    })
    .await
    .unwrap();
    let mut s = search(room);
    let found = db.search(&s).await.unwrap();
    assert_eq!(found.messages.len(), 3);
    assert!(found.messages[0] == big, "the 1 MB message changed");
    assert_eq!(found.messages[1], small);
    assert_eq!(found.messages[2], empty);
    let (_, body_len, _) = t.message_stats().await;
    assert_eq!(body_len, (body.len() + "短信 😀".len()) as i64);
    assert_eq!(
        t.users().await,
        vec![(room.into(), "zoë@exämple.com".into(), "owner".into())]
    );
    assert_eq!(t.rooms().await[0].name.as_deref(), Some("Salle d'été 😀"));

    s.nickname = Some("Zoë 🦀".into());
    s.fulltext = Some("KÖLN grüße".into());
    assert_eq!(seqs(&db.search(&s).await.unwrap()), vec![big.seq]);
    s.nickname = None;
    s.fulltext = Some("短信".into());
    assert_eq!(seqs(&db.search(&s).await.unwrap()), vec![small.seq]);
    db.close().await;
    t.drop().await;
}

async fn a_batch_is_one_transaction(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    // Data the database refuses: PostgreSQL text cannot hold NUL; a MariaDB room JID
    // has at most 1536 bytes. SQLite stores both, exactly.
    let mut poison = message(ROOM, 2, "alice", "bad \u{0} body");
    if backend == Backend::MySql {
        poison = message(
            &format!("{}@conference.example.com", "r".repeat(2000)),
            2,
            "alice",
            "x",
        );
    }
    let batch = Batch {
        rooms: vec![RoomChange::Stored(room_row(
            ROOM,
            "Team",
            &[("alice@example.com", "owner")],
        ))],
        messages: vec![message(ROOM, 1, "alice", "fine"), poison.clone()],
    };
    match (backend, db.write(&batch).await) {
        (Backend::Sqlite, Ok(())) => {
            let mut s = search(&poison.room_jid);
            s.ids = Some(vec![poison.archive_id]);
            assert_eq!(db.search(&s).await.unwrap().messages, vec![poison]);
        }
        (Backend::Postgres | Backend::MySql, Err(e @ DbError::Rejected(_))) => {
            assert!(!e.is_transient());
            // Nothing of the batch was stored.
            assert_eq!(t.message_stats().await.0, 0);
            assert!(t.rooms().await.is_empty());
            assert!(t.users().await.is_empty());
        }
        (_, other) => panic!("writing refused data: {other:?}"),
    }
    db.close().await;
    t.drop().await;
}

async fn an_unreachable_database_is_transient(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.archive().await;
    let unreachable = match backend {
        // A file in a directory that does not exist.
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = sqlite_url(&dir.path().join("missing").join("archive.sqlite"));
            ArchiveDb::open(&url, 1).unwrap()
        }
        // A server that refuses connections.
        Backend::Postgres | Backend::MySql => {
            let server = t.url.split("://").nth(1).unwrap();
            let server = server.split('/').next().unwrap();
            let server = server.rsplit_once('@').map_or(server, |(_, h)| h);
            let proxy = Proxy::start(server.to_owned()).await;
            proxy.close();
            let scheme_end = t.url.find("://").unwrap() + 3;
            let rest = &t.url[scheme_end..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let user = rest[..authority_end]
                .rsplit_once('@')
                .map(|(u, _)| format!("{u}@"))
                .unwrap_or_default();
            let url = format!(
                "{}{user}{}{}",
                &t.url[..scheme_end],
                proxy.addr,
                &rest[authority_end..]
            );
            let db = ArchiveDb::open(&url, 1).unwrap();
            drop(proxy);
            db
        }
    };
    let batch = Batch {
        rooms: vec![],
        messages: vec![message(ROOM, 1, "alice", "hello")],
    };
    // Each waits for a connection until the pool gives up (10 s), so all at once.
    let s = search(ROOM);
    let (written, pinged, searched) = tokio::join!(
        unreachable.write(&batch),
        unreachable.ping(),
        unreachable.search(&s)
    );
    let e = written.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(pinged.unwrap_err().is_transient());
    match searched {
        Err(SearchError::Db(e)) => assert!(e.is_transient(), "{e:?}"),
        other => panic!("searching an unreachable database: {other:?}"),
    }
    // The reachable one is unaffected.
    db.write(&batch).await.unwrap();
    db.close().await;
    t.drop().await;
}
