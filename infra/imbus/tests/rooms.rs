//! Chat rooms (XEP-0045) end to end: slixmpp clients against a real `imbus serve` on the
//! embedded log, the rooms processor running inside it at the system chat node alias
//! `conference-1-imbus.localhost`.
//!
//! Needs `python3` with `slixmpp` (`tests/run` installs it: `pip install slixmpp`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, env_for, imbus, require_slixmpp};
use sqlx::Connection;

/// The chat service of a fresh `imbus serve` (node 1, cluster `imbus`, domain `localhost`).
const SERVICE: &str = "conference-1-imbus.localhost";

/// Starts `imbus rooms` (the rooms processor alone) with the server's settings.
fn start_rooms(data_dir: &Path, env: &[(&str, String)]) -> std::process::Child {
    let mut cmd = imbus();
    env_for(&mut cmd, data_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.arg("rooms")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn imbus rooms")
}

/// Creates user1 … user`n` with the passwords the script expects (`Pw-userN`).
fn add_users(data_dir: &Path, n: usize) {
    common::add_numbered_users(data_dir, n);
}

/// Runs one scenario of `tests/interop/slixmpp_muc.py` on the system chat service.
fn scenario(data_dir: &Path, name: &str) -> String {
    common::muc_scenario(data_dir, SERVICE, name)
}

/// (recipient, body) of every compliance row of a room, sorted.
async fn room_rows(db: &Path, room: &str) -> Vec<(String, String)> {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let Ok(mut c) = sqlx::SqliteConnection::connect(&url).await else {
        return Vec::new();
    };
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT to_jid, body_text FROM TC_MSGARCHIVE WHERE room_jid = ? \
         ORDER BY to_jid, body_text",
    )
    .bind(room)
    .fetch_all(&mut c)
    .await
    .unwrap_or_default();
    c.close().await.unwrap();
    rows
}

#[test]
fn rooms_fan_out_keep_history_vanish_when_temporary_and_archive_once_per_recipient() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path());
    add_users(dir.path(), 4);
    scenario(dir.path(), "basic");

    // Compliance: one row per recipient per room message. The 20 history messages were
    // said while user1 was alone; the three fan-out messages reached user1..user3.
    let mut expected: Vec<(String, String)> = (0..20)
        .map(|i| ("user1@localhost".to_owned(), format!("h-{i}")))
        .collect();
    for user in 1..=3 {
        for n in 1..=3 {
            expected.push((format!("user{user}@localhost"), format!("fanout-{n}")));
        }
    }
    expected.sort();
    wait_for_room_rows(dir.path(), "lobby", expected);
}

/// Waits until the compliance rows of room `node` are exactly `expected` (sorted), and
/// fails as soon as there are more rows than expected.
fn wait_for_room_rows(data_dir: &Path, node: &str, expected: Vec<(String, String)>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = data_dir.join("compliance.sqlite");
    let room = format!("{node}@{SERVICE}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = rt.block_on(room_rows(&db, &room));
        if rows == expected {
            break;
        }
        assert!(
            rows.len() <= expected.len(),
            "more compliance rows than recipients (a duplicate?): {rows:#?}"
        );
        assert!(
            Instant::now() < deadline,
            "compliance rows are {rows:#?}, expected {expected:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_persistent_room_survives_a_kill_with_its_configuration_subject_and_history() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_users(dir.path(), 2);
    scenario(dir.path(), "persist-create");
    server.kill9();
    let _server = Server::start(dir.path());
    scenario(dir.path(), "persist-check");

    // The history for new participants is a live setting.
    let mut cmd = imbus();
    env_for(&mut cmd, dir.path());
    let out = cmd
        .args(["config", "set", "rooms.history_for_new_joiners", "2"])
        .output()
        .expect("run imbus config set");
    assert!(
        out.status.success(),
        "imbus config set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    scenario(dir.path(), "history-2");
}

#[test]
fn members_only_and_password_rooms_refuse_outsiders() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path());
    add_users(dir.path(), 2);
    scenario(dir.path(), "access");
}

#[test]
fn kick_and_ban_follow_the_affiliation_rules() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path());
    add_users(dir.path(), 3);
    scenario(dir.path(), "moderation");
}

#[test]
fn a_message_in_a_room_of_50_reaches_each_occupant_exactly_once() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path());
    add_users(dir.path(), 50);
    scenario(dir.path(), "fan-out-50");

    // Compliance: one row per occupant for each of the two messages.
    let mut expected: Vec<(String, String)> = (1..=50)
        .flat_map(|user| {
            ["crowd-1", "crowd-2"].map(|b| (format!("user{user}@localhost"), b.to_owned()))
        })
        .collect();
    expected.sort();
    wait_for_room_rows(dir.path(), "crowd", expected);
}

#[test]
fn direct_invitations_carry_the_room_and_password_but_grant_no_membership() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path());
    add_users(dir.path(), 3);
    scenario(dir.path(), "direct-invite");
}

#[test]
fn the_room_directory_pages_public_rooms_and_search_finds_them_by_name_and_description() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path());
    add_users(dir.path(), 1);
    scenario(dir.path(), "directory");
}

#[test]
fn the_rooms_command_refuses_to_run_without_rooms_or_with_more_history_shown_than_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = imbus();
    env_for(&mut cmd, dir.path());
    let out = cmd
        .env("IMBUS_ROOMS_ENABLED", "false")
        .arg("rooms")
        .output()
        .expect("run imbus rooms");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("rooms.enabled is false"), "{err}");

    let mut cmd = imbus();
    env_for(&mut cmd, dir.path());
    let out = cmd
        .env("IMBUS_ROOMS_HISTORY_FOR_NEW_JOINERS", "80")
        .env("IMBUS_ROOMS_MAX_HISTORY_LENGTH", "60")
        .arg("rooms")
        .output()
        .expect("run imbus rooms");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("rooms.history_for_new_joiners")
            && err.contains("80")
            && err.contains("rooms.max_history_length"),
        "{err}"
    );
}

#[test]
fn on_kafka_a_separate_rooms_process_serves_rooms_and_a_new_one_rebuilds_them() {
    require_slixmpp();
    let broker = imbus_tests::tansu::TansuBroker::start().unwrap_or_else(|e| panic!("{e}"));
    let env = [
        ("IMBUS_BUS_BACKEND", "kafka".to_owned()),
        ("IMBUS_BUS_KAFKA_BOOTSTRAP", broker.bootstrap()),
        ("IMBUS_BUS_PARTITIONS", "2".to_owned()),
        ("IMBUS_ROOMS_EMBEDDED", "false".to_owned()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start_with(dir.path(), &env);
    let mut rooms = start_rooms(dir.path(), &env);
    add_users(dir.path(), 2);
    scenario(dir.path(), "persist-create");

    // SIGTERM: the next processor (same node, so the same static group membership) gets
    // the partitions at once and rebuilds the room from the `rooms` changelog.
    let status = Command::new("kill")
        .args(["-TERM", &rooms.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = rooms.wait().unwrap();
    assert!(
        stopped.success(),
        "imbus rooms exits cleanly on SIGTERM: {stopped}"
    );
    let mut rooms = start_rooms(dir.path(), &env);
    scenario(dir.path(), "persist-check");
    let _ = rooms.kill();
    let _ = rooms.wait();
}
