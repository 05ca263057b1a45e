//! The room archive end to end: persistent rooms and their transcripts in the persistent
//! chat database (`TC_ROOMS`, `TC_USERS`, `TC_MSGARCHIVE`), searched by slixmpp clients
//! over XMPP (XEP-0313 with XEP-0431 full-text search), and a database outage that rooms
//! do not notice while the archive raises the alarm and catches up.
//!
//! Needs `python3` with `slixmpp`, libfaketime (to run the server a day behind: Debian
//! package `libfaketime`, or `IMBUS_TEST_LIBFAKETIME=/path/libfaketime.so.1`) and, for
//! the outage, PostgreSQL (`IMBUS_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). `tests/run` installs what it can.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Server, add_numbered_users, muc_scenario, require_slixmpp};
use imbus_tests::db_urls::postgres_admin_url;
use sqlx::Connection;

/// The chat service of a fresh `imbus serve` (node 1, cluster `imbus`, domain `localhost`).
const SERVICE: &str = "conference-1-imbus.localhost";

/// libfaketime, or a failure saying how to get it.
fn libfaketime() -> PathBuf {
    if let Ok(path) = std::env::var("IMBUS_TEST_LIBFAKETIME") {
        return PathBuf::from(path);
    }
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| {
        panic!(
            "this test runs the server a day behind with libfaketime, which is not installed: \
             `apt-get install libfaketime` (tests/run does it), or set IMBUS_TEST_LIBFAKETIME \
             to the path of libfaketime.so.1"
        )
    })
}

async fn scalar(url: &str, sql: &str, room: &str) -> Option<String> {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.ok()?;
        let v: Option<String> = sqlx::query_scalar(sql)
            .bind(room)
            .fetch_optional(&mut c)
            .await
            .ok()?;
        c.close().await.ok()?;
        v
    } else {
        let sql = sql.replace('?', "$1");
        let mut c = sqlx::PgConnection::connect(url).await.ok()?;
        let v: Option<String> = sqlx::query_scalar(&sql)
            .bind(room)
            .fetch_optional(&mut c)
            .await
            .ok()?;
        c.close().await.ok()?;
        v
    }
}

/// Waits until `sql` (one `?` parameter: the room) returns `want` from the database at
/// `url`.
fn wait_for(rt: &tokio::runtime::Runtime, url: &str, sql: &str, room: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = rt.block_on(scalar(url, sql, room));
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} for {room} is {got:?}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const COUNT_MESSAGES: &str = "SELECT CAST(COUNT(*) AS TEXT) FROM TC_MSGARCHIVE WHERE room_jid = ?";

#[test]
fn a_persistent_rooms_transcript_is_stored_and_search_finds_a_word_said_yesterday() {
    require_slixmpp();
    let faketime = libfaketime();
    let dir = tempfile::tempdir().unwrap();
    let yesterday = Server::start_with(
        dir.path(),
        &[
            ("LD_PRELOAD", faketime.display().to_string()),
            ("FAKETIME", "-1d".to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ],
    );
    add_numbered_users(dir.path(), 2);
    muc_scenario(dir.path(), SERVICE, "archive-yesterday");
    let stopped = yesterday.terminate();
    assert!(stopped.success(), "imbus serve stops cleanly: {stopped}");

    let _today = Server::start(dir.path());
    muc_scenario(dir.path(), SERVICE, "archive-today");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = format!(
        "sqlite://{}?mode=ro",
        dir.path().join("rooms.sqlite").display()
    );
    let room = format!("notes@{SERVICE}");
    wait_for(&rt, &db, COUNT_MESSAGES, &room, "27");
    wait_for(
        &rt,
        &db,
        "SELECT name FROM TC_ROOMS WHERE room_jid = ? AND destroyed_at IS NULL",
        &room,
        "Release notes",
    );
    wait_for(
        &rt,
        &db,
        "SELECT real_jid || ' ' || affiliation FROM TC_USERS WHERE room_jid = ?",
        &room,
        "user1@localhost owner",
    );
    wait_for(
        &rt,
        &db,
        "SELECT from_jid || ' ' || nickname FROM TC_MSGARCHIVE WHERE room_jid = ? \
         AND body_text = 'kickoff'",
        &room,
        "user1@localhost/muc Alice",
    );
}

/// `url` with its host and port replaced by `addr` and its database by `db`.
fn via(url: &str, addr: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let rest = rest.split('?').next().unwrap();
    let (authority, _) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!("{scheme}://{}{addr}/{db}", user.unwrap_or_default())
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

fn metric(rt: &tokio::runtime::Runtime, server: &Server, name: &str) -> Option<String> {
    let text = rt.block_on(async {
        reqwest::get(server.url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_owned)
}

fn wait_metric(rt: &tokio::runtime::Runtime, server: &Server, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = metric(rt, server, name);
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {got:?}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rooms_keep_working_while_the_archive_database_is_down_and_the_archive_catches_up() {
    require_slixmpp();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = postgres_admin_url();
    let name = format!(
        "imbus_rooms_{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs PostgreSQL at {admin} (set IMBUS_TEST_POSTGRES_URL to another \
                 server): {e}"
                )
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
    });
    let direct = via(&admin, &host_port(&admin), &name);
    let proxy = rt.block_on(imbus_tests::proxy::Proxy::start(host_port(&admin)));
    let through_proxy = via(&admin, &proxy.addr.to_string(), &name);

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            ("IMBUS_ROOMS_ARCHIVE_DATABASE_URL", through_proxy),
            ("IMBUS_ROOMS_ARCHIVE_HEARTBEAT_INTERVAL", "1s".to_owned()),
        ],
    );
    add_numbered_users(dir.path(), 2);
    let room = format!("ops@{SERVICE}");
    muc_scenario(dir.path(), SERVICE, "outage-before");
    wait_for(&rt, &direct, COUNT_MESSAGES, &room, "5");
    wait_metric(&rt, &server, "imbus_room_archive_up", "1");

    proxy.close();
    muc_scenario(dir.path(), SERVICE, "outage-during");
    wait_metric(&rt, &server, "imbus_room_archive_up", "0");
    assert_eq!(
        rt.block_on(scalar(&direct, COUNT_MESSAGES, &room))
            .as_deref(),
        Some("5"),
        "nothing reaches the database while it is unreachable"
    );

    proxy.reopen();
    wait_for(&rt, &direct, COUNT_MESSAGES, &room, "15");
    wait_metric(&rt, &server, "imbus_room_archive_up", "1");
    muc_scenario(dir.path(), SERVICE, "outage-after");

    drop(server);
    rt.block_on(async {
        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut c)
                .await;
        }
    });
}
