//! The command line: configuration errors, and live settings with and without a server.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, env_for, imbus};

fn run(cmd: &mut std::process::Command) -> (bool, String, String) {
    let out = cmd.output().expect("run imbus");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_is_refused_with_key_value_and_allowed_values() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(imbus()
        .env("IMBUS_DATA_DIR", dir.path())
        .env("IMBUS_C2S_PORT", "99999")
        .arg("serve"));
    assert!(!ok);
    assert!(
        err.contains("c2s_port") && err.contains("99999") && err.contains("65535"),
        "{err}"
    );

    let file = dir.path().join("imbus.toml");
    std::fs::write(&file, "[bus]\nbackend = \"zookeeper\"\n").unwrap();
    let (ok, _, err) = run(imbus().arg("--config").arg(&file).args(["config", "check"]));
    assert!(!ok);
    assert!(
        err.contains("bus.backend") && err.contains("zookeeper") && err.contains("embedded, kafka"),
        "{err}"
    );

    let (ok, _, err) = run(imbus()
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .args(["config", "check"]));
    assert!(!ok);
    assert!(err.contains("missing.toml"), "{err}");
}

#[test]
fn config_check_shows_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(imbus()
        .env("IMBUS_DATA_DIR", dir.path())
        .env("IMBUS_DOMAIN", "example.org")
        .args(["config", "check"]));
    assert!(ok, "{err}");
    assert!(
        out.contains("domain = \"example.org\"    # from environment variable IMBUS_DOMAIN"),
        "{out}"
    );
    assert!(
        out.contains("c2s_port = \"5222\"    # from the default"),
        "{out}"
    );
}

#[test]
fn live_settings_through_the_running_server_and_offline() {
    let dir = tempfile::tempdir().unwrap();

    // Stopped: the change is recorded on the log and applies at the next start.
    let mut cmd = imbus();
    env_for(&mut cmd, dir.path());
    let (ok, out, err) = run(cmd.args(["config", "set", "log_level", "debug"]));
    assert!(ok, "{err}");
    assert!(out.contains("no server is running"), "{out}");

    let server = Server::start(dir.path());
    let mut cmd = imbus();
    env_for(&mut cmd, dir.path());
    let (ok, out, err) = run(cmd.args(["config", "get", "log_level"]));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "debug");

    // Running: through the admin API.
    let mut cmd = imbus();
    env_for(&mut cmd, dir.path());
    let (ok, out, err) = run(cmd.args(["config", "set", "log_level", "info,imbus=trace"]));
    assert!(ok, "{err}");
    assert!(out.contains("set to"), "{out}");
    let mut cmd = imbus();
    env_for(&mut cmd, dir.path());
    let (_, out, _) = run(cmd.args(["config", "get", "log_level"]));
    assert_eq!(out.trim(), "info,imbus=trace");

    let mut cmd = imbus();
    env_for(&mut cmd, dir.path());
    let (ok, _, err) = run(cmd.args(["config", "set", "c2s_port", "1"]));
    assert!(!ok);
    assert!(err.contains("restart"), "{err}");

    let mut cmd = imbus();
    env_for(&mut cmd, dir.path());
    let (ok, _, err) = run(cmd.args(["config", "reset", "log_level"]));
    assert!(ok, "{err}");
    let mut cmd = imbus();
    env_for(&mut cmd, dir.path());
    let (_, out, _) = run(cmd.args(["config", "get", "log_level"]));
    assert_eq!(out.trim(), "warn");
    assert!(server.terminate().success());
}

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            files_contain(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

fn user_cmd(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = imbus();
    env_for(&mut cmd, dir);
    let mut child = cmd
        .arg("user")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn user_accounts_with_and_without_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    // Stopped server: straight onto the log; the password comes from standard input.
    let (ok, out, err) = user_cmd(dir, &["add", "alice@localhost"], Some("Secret-Alice-1\n"));
    assert!(ok, "{err}");
    assert!(out.contains("created alice@localhost"), "{out}");
    let (ok, _, err) = user_cmd(dir, &["add", "alice@localhost", "--password", "x"], None);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");

    // Running server: through the admin API, and it sees the account made offline.
    let server = Server::start(dir);
    let (ok, out, err) = user_cmd(
        dir,
        &["add", "bob@localhost", "--password", "Secret-Bob-2"],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("created bob@localhost"), "{out}");
    let (ok, out, _) = user_cmd(dir, &["list"], None);
    assert!(ok);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["alice@localhost", "bob@localhost"]
    );

    let (ok, _, err) = user_cmd(dir, &["add", "carol@example.org", "--password", "x"], None);
    assert!(!ok);
    assert!(
        err.contains("carol@example.org") && err.contains("localhost"),
        "{err}"
    );
    let (ok, _, err) = user_cmd(dir, &["add", "not a jid@@", "--password", "x"], None);
    assert!(!ok);
    assert!(err.contains("not a jid@@"), "{err}");
    let (ok, _, err) = user_cmd(dir, &["add", "dave@localhost"], Some("\n"));
    assert!(!ok);
    assert!(err.contains("empty"), "{err}");

    let (ok, out, err) = user_cmd(
        dir,
        &["passwd", "alice@localhost", "--password", "Secret-Alice-3"],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("password changed"), "{out}");
    let (ok, _, err) = user_cmd(
        dir,
        &["passwd", "nobody@localhost", "--password", "x"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("no account nobody@localhost"), "{err}");
    let (ok, _, err) = user_cmd(dir, &["del", "bob@localhost"], None);
    assert!(ok, "{err}");
    assert!(server.terminate().success());

    // After a restart (stopped), the log still says the same.
    let (ok, out, _) = user_cmd(dir, &["list"], None);
    assert!(ok);
    assert_eq!(out.trim(), "alice@localhost");

    // Credentials only: no password is anywhere on disk.
    for pw in ["Secret-Alice-1", "Secret-Bob-2", "Secret-Alice-3"] {
        assert!(
            !files_contain(dir, pw.as_bytes()),
            "{pw} found in the data directory"
        );
    }
}
