//! Chat node aliases end to end: the five deployment scenarios of the reference system's
//! guide, each against a real `imbus serve` (restarted with a new configuration on the
//! same data directory where the scenario changes the domain, the cluster id or the
//! node), aliases changed with `imbus alias` (through the running server's admin API, or
//! on the log while it is stopped), and slixmpp clients showing which persistent rooms
//! stay reachable.
//!
//! Needs `python3` with `slixmpp` (`tests/run` installs it: `pip install slixmpp`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, env_for, imbus, listener, require_slixmpp};

/// A node's configuration: its domain, cluster id and node id.
#[derive(Clone, Copy)]
struct Node {
    domain: &'static str,
    cluster: &'static str,
    id: u32,
}

impl Node {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("IMBUS_DOMAIN", self.domain.to_owned()),
            ("IMBUS_CLUSTER_ID", self.cluster.to_owned()),
            ("IMBUS_NODE_ID", self.id.to_string()),
        ]
    }

    fn start(&self, data_dir: &Path) -> Server {
        Server::start_with(data_dir, &self.env())
    }

    /// Runs `imbus <args>` with this node's configuration.
    fn imbus(&self, data_dir: &Path, args: &[&str]) -> Output {
        let mut cmd = imbus();
        env_for(&mut cmd, data_dir);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd.args(args).output().expect("run imbus")
    }

    /// `imbus alias <args>`, which must succeed; its output.
    fn alias(&self, data_dir: &Path, args: &[&str]) -> String {
        let mut all = vec!["alias"];
        all.extend_from_slice(args);
        let out = self.imbus(data_dir, &all);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "imbus alias {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `imbus alias <args>`, which must fail; its error output.
    fn alias_refused(&self, data_dir: &Path, args: &[&str]) -> String {
        let mut all = vec!["alias"];
        all.extend_from_slice(args);
        let out = self.imbus(data_dir, &all);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "imbus alias {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    fn add_user(&self, data_dir: &Path) {
        let jid = format!("user1@{}", self.domain);
        let out = self.imbus(data_dir, &["user", "add", &jid, "--password", "Pw-user1"]);
        assert!(
            out.status.success(),
            "imbus user add {jid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `slixmpp_alias.py <action> <room>` as user1 of this node's domain until it
    /// succeeds (an alias change reaches the router and the rooms processor a moment
    /// after the command returns), failing the test with its output after 30 s.
    fn rooms(&self, data_dir: &Path, action: &str, room: &str) {
        let c2s = listener(data_dir, "c2s");
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/slixmpp_alias.py");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("python3")
                .arg(&path)
                .args([
                    &c2s.ip().to_string(),
                    &c2s.port().to_string(),
                    self.domain,
                    action,
                    room,
                ])
                .env("IMBUS_INTEROP_TIMEOUT", "10")
                .stdin(Stdio::null())
                .output()
                .expect("run python3");
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() && text.contains("OK:") {
                return;
            }
            assert!(
                Instant::now() < deadline && action != "create",
                "slixmpp_alias.py {action} {room} failed:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The aliases `imbus alias list` shows: (alias, node, kind), in order.
fn listed(output: &str) -> Vec<(String, u32, String)> {
    output
        .lines()
        .skip_while(|l| !(l.starts_with("alias ") && l.ends_with(" kind")))
        .skip(1)
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                parts.next()?.to_owned(),
                parts.next()?.parse().ok()?,
                parts.next()?.to_owned(),
            ))
        })
        .collect()
}

fn row(alias: &str, node: u32, kind: &str) -> (String, u32, String) {
    (alias.to_owned(), node, kind.to_owned())
}

const MYCUP_1: Node = Node {
    domain: "cisco.com",
    cluster: "mycup",
    id: 1,
};

#[test]
fn a_fresh_server_offers_rooms_at_conference_1_imbus_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node {
        domain: "localhost",
        cluster: "imbus",
        id: 1,
    };
    let _server = node.start(dir.path());
    let list = node.alias(dir.path(), &["list"]);
    assert_eq!(
        listed(&list),
        [row("conference-1-imbus.localhost", 1, "system")]
    );
    assert!(list.contains("system-managed aliases: on"), "{list}");
    // Bad input names the offending value.
    let e = node.alias_refused(dir.path(), &["add", "Not A Domain"]);
    assert!(e.contains("\"Not A Domain\""), "{e}");
    let e = node.alias_refused(dir.path(), &["add", "localhost"]);
    assert!(e.contains("localhost") && e.contains("IM domain"), "{e}");
    let e = node.alias_refused(dir.path(), &["add", "conference-1-imbus.localhost"]);
    assert!(e.contains("already exists"), "{e}");
    let e = node.alias_refused(dir.path(), &["add", "chat.localhost", "--node", "9"]);
    assert!(e.contains("node 9"), "{e}");
    let e = node.alias_refused(dir.path(), &["del", "conference-1-imbus.localhost"]);
    assert!(
        e.contains("conference-1-imbus.localhost") && e.contains("system alias"),
        "{e}"
    );
    // The admin API lists them too.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let table = rt.block_on(_server.admin_get("/admin/v1/aliases"));
    assert_eq!(table["aliases"][0]["alias"], "conference-1-imbus.localhost");
    assert_eq!(table["system_aliases"], true);
}

/// Scenario 1: no cluster id in the alias. System aliases off: the system alias becomes
/// an ordinary one (its rooms still reachable); renamed to primary-conf-server.
#[test]
fn scenario_1_system_aliases_off_and_the_alias_renamed() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let node = MYCUP_1;
    let server = node.start(dir.path());
    node.add_user(dir.path());
    node.rooms(dir.path(), "create", "old@conference-1-mycup.cisco.com");

    let out = node.alias(dir.path(), &["system", "off"]);
    assert_eq!(
        listed(&out),
        [row("conference-1-mycup.cisco.com", 1, "manual")]
    );
    node.rooms(dir.path(), "check", "old@conference-1-mycup.cisco.com");

    let out = node.alias(
        dir.path(),
        &[
            "edit",
            "conference-1-mycup.cisco.com",
            "--to",
            "primary-conf-server.cisco.com",
        ],
    );
    assert_eq!(
        listed(&out),
        [row("primary-conf-server.cisco.com", 1, "manual")]
    );
    node.rooms(dir.path(), "create", "team@primary-conf-server.cisco.com");

    // A restart keeps the choice: the system alias does not come back.
    assert!(server.terminate().success());
    let _server = node.start(dir.path());
    assert_eq!(
        listed(&node.alias(dir.path(), &["list"])),
        [row("primary-conf-server.cisco.com", 1, "manual")]
    );
    node.rooms(dir.path(), "check", "team@primary-conf-server.cisco.com");
    node.rooms(dir.path(), "absent", "old@conference-1-mycup.cisco.com");
}

/// Scenario 2: the domain changes from cisco.com to linksys.com; rooms created under
/// conference-1-mycup.cisco.com stay reachable there.
#[test]
fn scenario_2_a_new_domain_keeps_the_old_rooms_reachable() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let cisco = MYCUP_1;
    let server = cisco.start(dir.path());
    cisco.add_user(dir.path());
    cisco.rooms(dir.path(), "create", "team@conference-1-mycup.cisco.com");
    assert!(server.terminate().success());

    let linksys = Node {
        domain: "linksys.com",
        ..MYCUP_1
    };
    let _server = linksys.start(dir.path());
    linksys.add_user(dir.path());
    assert_eq!(
        listed(&linksys.alias(dir.path(), &["list"])),
        [
            row("conference-1-mycup.cisco.com", 1, "manual"),
            row("conference-1-mycup.linksys.com", 1, "system"),
        ]
    );
    linksys.rooms(dir.path(), "check", "team@conference-1-mycup.cisco.com");
    linksys.rooms(dir.path(), "create", "new@conference-1-mycup.linksys.com");
    // The old alias is an ordinary one now: it can be renamed or deleted.
    linksys.alias(dir.path(), &["del", "conference-1-mycup.cisco.com"]);
    linksys.rooms(dir.path(), "absent", "team@conference-1-mycup.cisco.com");
}

/// Scenario 3: the cluster id changes from mycup to ireland; the old rooms are not
/// needed, so the old alias is deleted.
#[test]
fn scenario_3_a_new_cluster_id_and_the_old_alias_deleted() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = MYCUP_1.start(dir.path());
    MYCUP_1.add_user(dir.path());
    MYCUP_1.rooms(dir.path(), "create", "team@conference-1-mycup.cisco.com");
    assert!(server.terminate().success());

    let ireland = Node {
        cluster: "ireland",
        ..MYCUP_1
    };
    let _server = ireland.start(dir.path());
    assert_eq!(
        listed(&ireland.alias(dir.path(), &["list"])),
        [
            row("conference-1-ireland.cisco.com", 1, "system"),
            row("conference-1-mycup.cisco.com", 1, "manual"),
        ]
    );
    // Until it is deleted, the old alias still reaches the old room.
    ireland.rooms(dir.path(), "check", "team@conference-1-mycup.cisco.com");
    let out = ireland.alias(dir.path(), &["del", "conference-1-mycup.cisco.com"]);
    assert_eq!(
        listed(&out),
        [row("conference-1-ireland.cisco.com", 1, "system")]
    );
    ireland.rooms(dir.path(), "absent", "team@conference-1-mycup.cisco.com");
    ireland.rooms(dir.path(), "create", "team@conference-1-ireland.cisco.com");
}

/// Scenario 4: the cluster id changes from mycup to ireland, but only the old alias is
/// to stay: system aliases off, the new alias deleted.
#[test]
fn scenario_4_a_new_cluster_id_keeping_only_the_old_alias() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = MYCUP_1.start(dir.path());
    MYCUP_1.add_user(dir.path());
    MYCUP_1.rooms(dir.path(), "create", "team@conference-1-mycup.cisco.com");
    assert!(server.terminate().success());

    let ireland = Node {
        cluster: "ireland",
        ..MYCUP_1
    };
    let server = ireland.start(dir.path());
    ireland.alias(dir.path(), &["system", "off"]);
    let out = ireland.alias(dir.path(), &["del", "conference-1-ireland.cisco.com"]);
    assert_eq!(
        listed(&out),
        [row("conference-1-mycup.cisco.com", 1, "manual")]
    );
    ireland.rooms(dir.path(), "check", "team@conference-1-mycup.cisco.com");
    ireland.rooms(dir.path(), "absent", "team@conference-1-ireland.cisco.com");

    // Restarted, the node does not bring its system alias back.
    assert!(server.terminate().success());
    let _server = ireland.start(dir.path());
    assert_eq!(
        listed(&ireland.alias(dir.path(), &["list"])),
        [row("conference-1-mycup.cisco.com", 1, "manual")]
    );
    ireland.rooms(dir.path(), "check", "team@conference-1-mycup.cisco.com");
}

/// Scenario 5: node 3 is deleted and node 7 added; the rooms created under
/// conference-3-mycup.cisco.com become reachable again through node 7, by adding the
/// old alias to it (option 1) or by turning system aliases off and renaming node 7's
/// alias (option 2).
#[test]
fn scenario_5_a_deleted_node_s_rooms_reachable_through_a_new_node() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let node3 = Node { id: 3, ..MYCUP_1 };
    let server = node3.start(dir.path());
    node3.add_user(dir.path());
    node3.rooms(dir.path(), "create", "team@conference-3-mycup.cisco.com");
    assert!(server.terminate().success());

    // With the server stopped, on the log: node 7 added, node 3 deleted.
    let node7 = Node { id: 7, ..MYCUP_1 };
    let out = node7.alias(dir.path(), &["node", "add", "7"]);
    assert!(out.contains("no server is running"), "{out}");
    let out = node7.alias(dir.path(), &["node", "del", "3"]);
    assert_eq!(
        listed(&out),
        [row("conference-7-mycup.cisco.com", 7, "system")]
    );
    let _server = node7.start(dir.path());
    node7.rooms(dir.path(), "absent", "team@conference-3-mycup.cisco.com");

    // Option 1: the old alias added to node 7.
    let out = node7.alias(
        dir.path(),
        &["add", "conference-3-mycup.cisco.com", "--node", "7"],
    );
    assert_eq!(
        listed(&out),
        [
            row("conference-3-mycup.cisco.com", 7, "manual"),
            row("conference-7-mycup.cisco.com", 7, "system"),
        ]
    );
    node7.rooms(dir.path(), "check", "team@conference-3-mycup.cisco.com");
    // A node with manual aliases cannot be deleted.
    let e = node7.alias_refused(dir.path(), &["node", "del", "7"]);
    assert!(e.contains("conference-3-mycup.cisco.com"), "{e}");

    // Option 2, from the same starting point: system aliases off, node 7's alias
    // renamed to the old one.
    node7.alias(dir.path(), &["del", "conference-3-mycup.cisco.com"]);
    node7.rooms(dir.path(), "absent", "team@conference-3-mycup.cisco.com");
    node7.alias(dir.path(), &["system", "off"]);
    let out = node7.alias(
        dir.path(),
        &[
            "edit",
            "conference-7-mycup.cisco.com",
            "--to",
            "conference-3-mycup.cisco.com",
        ],
    );
    assert_eq!(
        listed(&out),
        [row("conference-3-mycup.cisco.com", 7, "manual")]
    );
    node7.rooms(dir.path(), "check", "team@conference-3-mycup.cisco.com");
}
