//! Third-party clients against a real `imbus serve` (gateway + router on the embedded
//! log): slixmpp from PyPI logs in over STARTTLS, exchanges roster subscriptions, sees
//! presence come and go, chats, and queries disco and ping.
//!
//! Needs `python3` with `slixmpp` (`tests/run` installs it: `pip install slixmpp`).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, add_user, env_for, imbus, listener, require_slixmpp};

fn run_script(script: &str, args: &[String], timeout: Duration) -> (bool, String) {
    let run = common::run_script(script, args, timeout);
    (run.ok, run.text())
}

#[test]
fn slixmpp_subscribes_sees_presence_and_chats_over_starttls() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_user(dir.path(), "alice@localhost", "Alice-Pw-1");
    add_user(dir.path(), "bob@localhost", "Bob-Pw-2");
    let c2s = listener(dir.path(), "c2s");
    let args = [
        c2s.ip().to_string(),
        c2s.port().to_string(),
        "alice@localhost/slix".to_owned(),
        "Alice-Pw-1".to_owned(),
        "bob@localhost/slix".to_owned(),
        "Bob-Pw-2".to_owned(),
    ];
    let (ok, output) = run_script("slixmpp_roster.py", &args, Duration::from_secs(90));
    drop(server);
    assert!(ok, "slixmpp interop failed:\n{output}");
    assert!(output.contains("OK:"), "{output}");
}

#[test]
fn rosters_and_vcards_survive_a_kill_and_restart() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_user(dir.path(), "alice@localhost", "Alice-Pw-1");
    add_user(dir.path(), "bob@localhost", "Bob-Pw-2");
    let c2s = listener(dir.path(), "c2s");
    let (host, port) = (c2s.ip().to_string(), c2s.port().to_string());
    let login = |jid: &str, pw: &str| [host.clone(), port.clone(), jid.to_owned(), pw.to_owned()];
    let mut args = login("alice@localhost/a", "Alice-Pw-1").to_vec();
    args.extend(login("bob@localhost/b", "Bob-Pw-2")[2..].iter().cloned());
    let (ok, output) = run_script("slixmpp_roster.py", &args, Duration::from_secs(90));
    assert!(ok, "handshake failed:\n{output}");
    let mut args = login("alice@localhost/a", "Alice-Pw-1").to_vec();
    args.extend(["set-vcard".to_owned(), "Alice Liddell".to_owned()]);
    let (ok, output) = run_script("slixmpp_state.py", &args, Duration::from_secs(60));
    assert!(ok, "vCard store failed:\n{output}");

    server.kill9();
    let _server = Server::start(dir.path());
    let c2s = listener(dir.path(), "c2s");
    let mut args = vec![
        c2s.ip().to_string(),
        c2s.port().to_string(),
        "alice@localhost/a".to_owned(),
        "Alice-Pw-1".to_owned(),
    ];
    args.extend(["expect", "bob@localhost", "both", "Alice Liddell"].map(str::to_owned));
    let (ok, output) = run_script("slixmpp_state.py", &args, Duration::from_secs(60));
    assert!(ok, "state after restart:\n{output}");
}

#[test]
fn offline_messages_survive_a_kill_and_arrive_once_in_order_with_delay() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_user(dir.path(), "alice@localhost", "Alice-Pw-1");
    add_user(dir.path(), "bob@localhost", "Bob-Pw-2");
    let c2s = listener(dir.path(), "c2s");
    let args: Vec<String> = [
        &c2s.ip().to_string(),
        &c2s.port().to_string(),
        "alice@localhost/a",
        "Alice-Pw-1",
        "send",
        "bob@localhost",
        "20",
    ]
    .map(str::to_owned)
    .to_vec();
    let (ok, output) = run_script("slixmpp_offline.py", &args, Duration::from_secs(60));
    assert!(ok, "sending failed:\n{output}");

    server.kill9();
    let _server = Server::start(dir.path());
    let c2s = listener(dir.path(), "c2s");
    let args: Vec<String> = [
        &c2s.ip().to_string(),
        &c2s.port().to_string(),
        "bob@localhost/b",
        "Bob-Pw-2",
        "receive",
        "20",
    ]
    .map(str::to_owned)
    .to_vec();
    let (ok, output) = run_script("slixmpp_offline.py", &args, Duration::from_secs(60));
    assert!(ok, "offline delivery after restart:\n{output}");
    // Delivered once: a second login gets none of them again.
    let mut again = args.clone();
    again[5] = "0".to_owned();
    let (ok, output) = run_script("slixmpp_offline.py", &again, Duration::from_secs(60));
    assert!(ok, "offline messages delivered twice:\n{output}");
}

#[test]
fn on_kafka_a_separate_router_process_serves_slixmpp_and_can_be_replaced() {
    require_slixmpp();
    let broker = imbus_tests::tansu::TansuBroker::start().unwrap_or_else(|e| panic!("{e}"));
    let env = [
        ("IMBUS_BUS_BACKEND", "kafka".to_owned()),
        ("IMBUS_BUS_KAFKA_BOOTSTRAP", broker.bootstrap()),
        ("IMBUS_BUS_PARTITIONS", "2".to_owned()),
        ("IMBUS_ROUTER_EMBEDDED", "false".to_owned()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &env);
    let start_router = || {
        let mut cmd = imbus();
        env_for(&mut cmd, dir.path());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.arg("route")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn imbus route")
    };
    let mut router = start_router();
    add_user(dir.path(), "alice@localhost", "Alice-Pw-1");
    add_user(dir.path(), "bob@localhost", "Bob-Pw-2");
    let c2s = listener(dir.path(), "c2s");
    let login = |jid: &str, pw: &str| {
        vec![
            c2s.ip().to_string(),
            c2s.port().to_string(),
            jid.to_owned(),
            pw.to_owned(),
        ]
    };
    let mut args = login("alice@localhost/a", "Alice-Pw-1");
    args.extend(login("bob@localhost/b", "Bob-Pw-2").split_off(2));
    let (ok, output) = run_script("slixmpp_roster.py", &args, Duration::from_secs(120));
    assert!(ok, "slixmpp against a separate router on Kafka:\n{output}");

    // Messages sent while no router runs are routed once a new one starts. The router is
    // stopped with SIGTERM; the new one, on the same node, takes its static group
    // membership and partitions over at once.
    let status = Command::new("kill")
        .args(["-TERM", &router.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = router.wait().unwrap();
    assert!(
        stopped.success(),
        "imbus route exits cleanly on SIGTERM: {stopped}"
    );
    let mut send = login("alice@localhost/a", "Alice-Pw-1");
    send.extend(["send", "bob@localhost", "5"].map(str::to_owned));
    let (ok, output) = run_script("slixmpp_offline.py", &send, Duration::from_secs(60));
    assert!(ok, "sending without a router:\n{output}");
    let mut router = start_router();
    let mut receive = login("bob@localhost/b", "Bob-Pw-2");
    // Bob may already be online when the new router reaches alice's messages: then they
    // are delivered directly, without a delay stamp.
    receive.extend(["receive", "5", "any"].map(str::to_owned));
    let (ok, output) = run_script("slixmpp_offline.py", &receive, Duration::from_secs(90));
    let _ = router.kill();
    let _ = router.wait();
    drop(server);
    assert!(ok, "messages sent while the router was down:\n{output}");
}

#[test]
fn an_announcement_reaches_offline_users_at_their_next_login() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path());
    add_user(dir.path(), "alice@localhost", "Alice-Pw-1");
    add_user(dir.path(), "bob@localhost", "Bob-Pw-2");
    let announce = |args: &[&str]| {
        let mut cmd = imbus();
        env_for(&mut cmd, dir.path());
        cmd.arg("announce").args(args).output().unwrap()
    };
    let out = announce(&["--to", "nobody@localhost", "hello"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such account: nobody@localhost"), "{err}");
    // The slixmpp script checks bodies named offline-<n>.
    let out = announce(&["--subject", "maintenance", "offline-0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("announced to 2 users"));
    let c2s = listener(dir.path(), "c2s");
    for (jid, pw) in [
        ("alice@localhost/a", "Alice-Pw-1"),
        ("bob@localhost/b", "Bob-Pw-2"),
    ] {
        let args: Vec<String> = [
            &c2s.ip().to_string(),
            &c2s.port().to_string(),
            jid,
            pw,
            "receive",
            "1",
        ]
        .map(str::to_owned)
        .to_vec();
        let (ok, output) = run_script("slixmpp_offline.py", &args, Duration::from_secs(60));
        assert!(ok, "{jid} did not get the announcement:\n{output}");
    }
}

#[test]
fn slixmpp_resumes_a_dropped_stream_without_losing_a_message() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path());
    add_user(dir.path(), "alice@localhost", "Alice-Pw-1");
    add_user(dir.path(), "bob@localhost", "Bob-Pw-2");
    let c2s = listener(dir.path(), "c2s");
    let args: Vec<String> = [
        &c2s.ip().to_string(),
        &c2s.port().to_string(),
        "alice@localhost/a",
        "Alice-Pw-1",
        "bob@localhost/b",
        "Bob-Pw-2",
    ]
    .map(str::to_owned)
    .to_vec();
    let (ok, output) = run_script("slixmpp_resume.py", &args, Duration::from_secs(60));
    assert!(ok, "XEP-0198 resumption:\n{output}");
}
