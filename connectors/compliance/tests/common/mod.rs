//! Test harness of the compliance sink: a fresh database per test on SQLite, PostgreSQL
//! and MariaDB/MySQL, an embedded log with the compliance topics, the sink as a task, and
//! the TCP proxy of `imbus-tests` that can cut the connection to the database.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use imbus_config::topics::{COMPLIANCE, COMPLIANCE_DEAD};
use imbus_connector_compliance::settings::Backend;
use imbus_connector_compliance::{
    Database, SinkError, SinkMetrics, SinkOptions, SinkSettings, redact_url,
};
use imbus_core::{
    BareJid, ComplianceRecord, Direction, Event, Jid, MessageType, Origin, Timestamp,
};
use imbus_log::{ConsumedRecord, Log, Record, StartAt, TopicConfig, TopicPartition};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions};
use sqlx::Connection;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

#[allow(unused_imports)] // not every test binary cuts the database
pub use imbus_tests::proxy::Proxy;

pub const PARTITIONS: i32 = 4;

/// A generous bound that only fails a hung test.
pub const PATIENCE: Duration = Duration::from_secs(120);

use imbus_tests::db_urls::with_database;
pub use imbus_tests::db_urls::{mysql_admin_url, postgres_admin_url};

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDb {
    pub backend: Backend,
    /// Where the sink connects.
    pub url: String,
    /// The server-level URL (to drop the database), none for SQLite.
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let name = format!("imbus_compliance_{:016x}", rand::random::<u64>());
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = imbus_connector_compliance::settings::sqlite_url(
                    &dir.path().join("compliance.sqlite"),
                );
                TestDb {
                    backend,
                    url,
                    admin_url: None,
                    name,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is needed for this test: cannot connect to {} (set IMBUS_TEST_POSTGRES_URL): {e}",
                        redact_url(&admin)
                    )
                });
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                TestDb {
                    backend,
                    url: with_database(&admin, &name),
                    admin_url: Some(admin),
                    name,
                    _dir: None,
                }
            }
            Backend::MySql => {
                let admin = mysql_admin_url();
                let mut conn = sqlx::MySqlConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "MariaDB/MySQL is needed for this test: cannot connect to {} (set IMBUS_TEST_MYSQL_URL): {e}",
                        redact_url(&admin)
                    )
                });
                sqlx::Executor::execute(
                    &mut conn,
                    format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                        .as_str(),
                )
                .await
                .unwrap();
                conn.close().await.unwrap();
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

    /// The same database reached through `proxy`.
    pub fn url_through(&self, proxy: SocketAddr) -> String {
        let scheme_end = self.url.find("://").unwrap() + 3;
        let rest = &self.url[scheme_end..];
        let host_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..host_end];
        let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{}{}{}{}",
            &self.url[..scheme_end],
            user.unwrap_or_default(),
            proxy,
            &rest[host_end..]
        )
    }

    /// The database server's address.
    pub fn server_addr(&self) -> String {
        let scheme_end = self.url.find("://").unwrap() + 3;
        let rest = &self.url[scheme_end..];
        let host_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..host_end];
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, h)| h)
            .to_owned()
    }

    /// Every archived row.
    pub async fn rows(&self) -> Vec<Archived> {
        const JM: &str = "SELECT 'JM', record_id, event_id, to_jid, from_jid, NULL, NULL, subject, thread_id, msg_type, direction, body_len, message_len, body_text, message_text FROM JM";
        const TC: &str = "SELECT 'TC_MSGARCHIVE', record_id, msg_id, to_jid, from_jid, room_jid, nickname, subject, NULL, msg_type, direction, body_len, message_len, body_text, message_text FROM TC_MSGARCHIVE";
        let mut out = Vec::new();
        match self.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                for q in [JM, TC] {
                    let q = q.replace("NULL", "NULL::text");
                    let rows: Vec<Tuple> = sqlx::query_as(&q).fetch_all(&mut c).await.unwrap();
                    out.extend(rows.into_iter().map(Archived::from));
                }
                c.close().await.unwrap();
            }
            Backend::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                // Columns in a binary collation (utf8mb4_bin) read as VARBINARY through
                // sqlx; a cast reads them as text.
                let cast = |q: &str| {
                    let (select, from) = q.split_once(" FROM ").unwrap();
                    let cols: Vec<String> = select
                        .trim_start_matches("SELECT ")
                        .split(", ")
                        .map(|c| {
                            if c.ends_with("_len") {
                                c.to_owned()
                            } else {
                                format!("CAST({c} AS CHAR)")
                            }
                        })
                        .collect();
                    format!("SELECT {} FROM {from}", cols.join(", "))
                };
                for q in [JM, TC] {
                    let q = cast(q);
                    let rows: Vec<Tuple> = sqlx::query_as(&q).fetch_all(&mut c).await.unwrap();
                    out.extend(rows.into_iter().map(Archived::from));
                }
                c.close().await.unwrap();
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                for q in [JM, TC] {
                    let rows: Vec<Tuple> = sqlx::query_as(q).fetch_all(&mut c).await.unwrap();
                    out.extend(rows.into_iter().map(Archived::from));
                }
                c.close().await.unwrap();
            }
        }
        out.sort_by(|a, b| (&a.event_id, &a.to_jid).cmp(&(&b.event_id, &b.to_jid)));
        out
    }

    /// Removes the database.
    pub async fn drop_database(self) {
        match (self.backend, &self.admin_url) {
            (Backend::Postgres, Some(admin)) => {
                let mut c = sqlx::PgConnection::connect(admin).await.unwrap();
                sqlx::Executor::execute(
                    &mut c,
                    format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str(),
                )
                .await
                .unwrap();
                c.close().await.unwrap();
            }
            (Backend::MySql, Some(admin)) => {
                let mut c = sqlx::MySqlConnection::connect(admin).await.unwrap();
                sqlx::Executor::execute(
                    &mut c,
                    format!("DROP DATABASE IF EXISTS {}", self.name).as_str(),
                )
                .await
                .unwrap();
                c.close().await.unwrap();
            }
            _ => {}
        }
    }
}

type Tuple = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    i64,
    i64,
    Option<String>,
    String,
);

/// One archived row, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub table: String,
    pub record_id: String,
    pub event_id: String,
    pub to_jid: String,
    pub from_jid: String,
    pub room_jid: Option<String>,
    pub nickname: Option<String>,
    pub subject: Option<String>,
    pub thread_id: Option<String>,
    pub msg_type: String,
    pub direction: String,
    pub body_len: i64,
    pub message_len: i64,
    pub body_text: Option<String>,
    pub message_text: String,
}

impl From<Tuple> for Archived {
    fn from(t: Tuple) -> Self {
        Archived {
            table: t.0,
            record_id: t.1,
            event_id: t.2,
            to_jid: t.3,
            from_jid: t.4,
            room_jid: t.5,
            nickname: t.6,
            subject: t.7,
            thread_id: t.8,
            msg_type: t.9,
            direction: t.10,
            body_len: t.11,
            message_len: t.12,
            body_text: t.13,
            message_text: t.14,
        }
    }
}

/// An embedded log with the compliance topics.
pub async fn log() -> (Arc<dyn Log>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default())
        .await
        .unwrap();
    for topic in [COMPLIANCE, COMPLIANCE_DEAD] {
        log.create_topic(&TopicConfig::new(topic, PARTITIONS))
            .await
            .unwrap();
    }
    (Arc::new(log), dir)
}

/// A compliance record.
pub fn record(
    n: u128,
    recipient: &str,
    kind: MessageType,
    direction: Direction,
    body: &str,
) -> ComplianceRecord {
    let groupchat = kind == MessageType::Groupchat;
    ComplianceRecord {
        event_id: Uuid::from_u128(n),
        recipient: BareJid::new(recipient).unwrap(),
        sender: Jid::new("alice@example.com/desk").unwrap(),
        direction,
        timestamp: Timestamp::now(),
        message_type: kind,
        thread: (!groupchat).then(|| format!("thread-{n}")),
        subject: Some(format!("subject {n}")),
        body: Some(body.to_owned()),
        room: groupchat.then(|| BareJid::new("team@conference.example.com").unwrap()),
        nickname: groupchat.then(|| "alice".to_owned()),
        xml: format!(
            "<message from='alice@example.com/desk' to='{recipient}' type='{}' id='m{n}'><body>{}</body></message>",
            imbus_connector_compliance::row::type_name(kind),
            body.replace('&', "&amp;").replace('<', "&lt;")
        ),
        origin: Origin::Local,
    }
}

/// Appends records to the compliance topic the way the router does (key: recipient).
pub async fn append(log: &dyn Log, records: &[ComplianceRecord]) {
    let batch: Vec<Record> = records
        .iter()
        .map(|r| {
            Record::new(
                r.recipient.as_str().to_owned(),
                imbus_schemas::encode(&Event::Compliance(r.clone())).unwrap(),
            )
        })
        .collect();
    log.append_batch(COMPLIANCE, batch).await.unwrap();
}

/// A running sink.
pub struct RunningSink {
    pub metrics: SinkMetrics,
    pub settings: watch::Sender<SinkSettings>,
    shutdown: watch::Sender<bool>,
    pub task: JoinHandle<Result<(), SinkError>>,
}

impl RunningSink {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the sink did not stop")
            .unwrap()
            .unwrap();
    }
}

pub fn fast_options() -> SinkOptions {
    SinkOptions {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        ..SinkOptions::default()
    }
}

pub fn start_sink(
    log: &Arc<dyn Log>,
    url: &str,
    settings: SinkSettings,
    options: SinkOptions,
) -> RunningSink {
    let db = Database::open(url, 3).unwrap();
    let metrics = SinkMetrics::new(&redact_url(url)).unwrap();
    let (settings_tx, settings_rx) = watch::channel(settings);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(imbus_connector_compliance::run(
        log.clone(),
        db,
        redact_url(url),
        metrics.clone(),
        settings_rx,
        shutdown_rx,
        options,
    ));
    RunningSink {
        metrics,
        settings: settings_tx,
        shutdown: shutdown_tx,
        task,
    }
}

/// Waits until `group` committed everything on the compliance topic.
pub async fn wait_archived(log: &dyn Log, group: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut done = true;
        for p in 0..PARTITIONS {
            let high = log.watermarks(COMPLIANCE, p).await.unwrap().high;
            let committed = log
                .committed(group, &TopicPartition::new(COMPLIANCE, p))
                .await
                .unwrap()
                .unwrap_or(0);
            if committed < high {
                done = false;
            }
        }
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "the sink did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `cond` holds.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every record on `compliance.dead`.
pub async fn dead_letters(log: &dyn Log) -> Vec<ConsumedRecord> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let high = log.watermarks(COMPLIANCE_DEAD, p).await.unwrap().high;
        let mut reader = log
            .reader(COMPLIANCE_DEAD, p, StartAt::Earliest)
            .await
            .unwrap();
        while reader.position() < high {
            out.extend(reader.read(100, Duration::from_secs(5)).await.unwrap());
        }
    }
    out
}

pub fn header(record: &ConsumedRecord, key: &str) -> Option<String> {
    record
        .header(key)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The body of a dead letter's original record.
pub fn decode(value: &Option<Bytes>) -> Option<ComplianceRecord> {
    match imbus_schemas::decode(value.as_ref()?) {
        Ok(Event::Compliance(c)) => Some(c),
        _ => None,
    }
}
