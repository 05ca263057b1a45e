//! In-Band Registration (XEP-0077) against a real `imbus serve`, driven by slixmpp over
//! STARTTLS (`tests/interop/slixmpp_register.py`): off by default; when on, accounts are
//! created before login, limited per address, passwords changed and accounts cancelled,
//! and no password reaches the data directory.
//!
//! Needs `python3` with `slixmpp` (`tests/run` installs it: `pip install slixmpp`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use std::time::Duration;

use common::{Server, listener, require_slixmpp};

/// Runs the registration script's steps against the server's STARTTLS listener and
/// returns the outcome line of each step (`<step> <jid> -> <outcome>`).
fn run_steps(data_dir: &Path, steps: &[&str]) -> Vec<String> {
    let c2s = listener(data_dir, "c2s");
    let mut args = vec![c2s.ip().to_string(), c2s.port().to_string()];
    args.extend(steps.iter().map(|s| (*s).to_owned()));
    let run = common::run_script_with(
        "slixmpp_register.py",
        &args,
        Duration::from_secs(10),
        Duration::from_secs(60),
    );
    let lines: Vec<String> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("STEP "))
        .map(str::to_owned)
        .collect();
    assert!(
        run.ok && lines.len() == steps.len(),
        "the registration script failed:\n{}",
        run.text()
    );
    lines
}

/// Whether any file under `dir` contains `needle`.
fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            any_file_contains(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn registration_is_refused_when_not_enabled() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let lines = run_steps(
        dir.path(),
        &[
            "register:alice@localhost:Alice-Pw-123",
            "login:alice@localhost:Alice-Pw-123",
        ],
    );
    drop(server);
    assert_eq!(
        lines,
        [
            "register alice@localhost -> advertised=no refused:service-unavailable",
            "login alice@localhost -> auth-failed",
        ]
    );
}

#[test]
fn clients_register_change_their_password_and_cancel_their_account() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            ("IMBUS_C2S_REGISTRATION", "true".to_owned()),
            ("IMBUS_C2S_REGISTRATION_PER_HOUR", "3".to_owned()),
        ],
    );
    let lines = run_steps(
        dir.path(),
        &[
            // Registered, then logged in with the new account (attempt 1 of 3).
            "register:alice@localhost:Alice-Pw-123",
            // Taken (attempt 2).
            "register:alice@localhost:Other-Pw-123",
            // Refused by the server before counting: bad user name, short password.
            "register:eve@localhost:Eve-Pw-1234:bad user",
            "register:bob@localhost:short",
            // Attempt 3, then the address is over its limit.
            "register:carol@localhost:Carol-Pw-123",
            "register:dave@localhost:Dave-Pw-1234",
            "login:dave@localhost:Dave-Pw-1234",
            // Password change: the old password stops working.
            "passwd:alice@localhost:Alice-Pw-123:Alice-New-456",
            "login:alice@localhost:Alice-Pw-123",
            "login:alice@localhost:Alice-New-456",
            // Cancellation: the account is gone.
            "cancel:carol@localhost:Carol-Pw-123",
            "login:carol@localhost:Carol-Pw-123",
        ],
    );
    let data_dir = server.data_dir.clone();
    drop(server);
    assert_eq!(
        lines,
        [
            "register alice@localhost -> advertised=yes session",
            "register alice@localhost -> advertised=yes refused:conflict",
            "register eve@localhost -> advertised=yes refused:not-acceptable",
            "register bob@localhost -> advertised=yes refused:not-acceptable",
            "register carol@localhost -> advertised=yes session",
            "register dave@localhost -> advertised=yes refused:resource-constraint",
            "login dave@localhost -> auth-failed",
            "passwd alice@localhost -> changed",
            "login alice@localhost -> auth-failed",
            "login alice@localhost -> session",
            "cancel carol@localhost -> cancelled",
            "login carol@localhost -> auth-failed",
        ]
    );
    // Only derived credentials are stored.
    for password in ["Alice-Pw-123", "Alice-New-456", "Carol-Pw-123"] {
        assert!(
            !any_file_contains(&data_dir, password.as_bytes()),
            "{password} was written to the data directory"
        );
    }
}
