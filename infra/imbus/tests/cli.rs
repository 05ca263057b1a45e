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
