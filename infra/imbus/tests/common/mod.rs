//! Running `imbus serve` as a real process in tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An `imbus serve` process on a temporary data directory, every listener on a free port.
pub struct Server {
    pub child: Child,
    pub data_dir: PathBuf,
    pub http: String,
    pub token: String,
}

pub fn imbus() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imbus"));
    // Only what a test sets: never the developer's own IMBUS_* settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("IMBUS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub fn env_for(cmd: &mut Command, data_dir: &Path) {
    cmd.env("IMBUS_DATA_DIR", data_dir)
        .env("IMBUS_BIND", "127.0.0.1")
        .env("IMBUS_HTTP_BIND", "127.0.0.1")
        .env("IMBUS_HTTP_PORT", "0")
        .env("IMBUS_C2S_PORT", "0")
        .env("IMBUS_C2S_TLS_PORT", "0")
        .env("IMBUS_S2S_PORT", "0")
        .env("IMBUS_LOG_LEVEL", "warn");
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    /// Starts with extra environment variables.
    pub fn start_with(data_dir: &Path, extra_env: &[(&str, String)]) -> Server {
        let run_file = data_dir.join("run").join("imbus.json");
        let _ = std::fs::remove_file(&run_file);
        let mut cmd = imbus();
        env_for(&mut cmd, data_dir);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .arg("serve")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn imbus serve");
        let deadline = Instant::now() + Duration::from_secs(60);
        let info: serde_json::Value = loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("imbus serve exited early with {status}");
            }
            if let Ok(bytes) = std::fs::read(&run_file)
                && let Ok(v) = serde_json::from_slice(&bytes)
            {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "imbus serve did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let http = info["http"]
            .as_str()
            .expect("http address in run file")
            .to_owned();
        let token = std::fs::read_to_string(data_dir.join("admin.token"))
            .expect("admin token")
            .trim()
            .to_owned();
        Server {
            child,
            data_dir: data_dir.to_owned(),
            http,
            token,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// GET an admin API path with the token, as JSON.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("admin API answers")
            .json()
            .await
            .expect("admin API answers JSON")
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "imbus serve did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (kill -9): no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of a listener named in the run file (`c2s`, `c2s_tls`, …).
pub fn listener(data_dir: &Path, name: &str) -> SocketAddr {
    let bytes = std::fs::read(data_dir.join("run").join("imbus.json")).expect("run file");
    let info: serde_json::Value = serde_json::from_slice(&bytes).expect("run file is JSON");
    info["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l[0].as_str() == Some(name))
        .and_then(|l| l[1].as_str())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {name} listener in the run file: {info}"))
}

/// Creates an account with `imbus user add` (through the running server when there is one).
pub fn add_user(data_dir: &Path, jid: &str, password: &str) {
    let mut cmd = imbus();
    env_for(&mut cmd, data_dir);
    let out = cmd
        .args(["user", "add", jid, "--password", password])
        .output()
        .expect("run imbus user add");
    assert!(
        out.status.success(),
        "imbus user add {jid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails with what to install when slixmpp (PyPI) is missing.
pub fn require_slixmpp() {
    let ok = Command::new("python3")
        .args(["-c", "import slixmpp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test drives slixmpp and it is not installed: run `pip install slixmpp` \
         (tests/run does it)"
    );
}

/// Creates user1 … user`n` with the passwords the interop scripts expect (`Pw-userN`).
pub fn add_numbered_users(data_dir: &Path, n: usize) {
    for i in 1..=n {
        add_user(
            data_dir,
            &format!("user{i}@localhost"),
            &format!("Pw-user{i}"),
        );
    }
}

/// What a script run by [`run_script`] did.
pub struct ScriptRun {
    /// It exited with status 0 before the deadline.
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ScriptRun {
    /// Its standard output, then (when it failed) the last lines of its standard error
    /// (slixmpp's own log), for a failure message.
    pub fn text(&self) -> String {
        let mut text = self.stdout.clone();
        if !self.ok && !self.stderr.is_empty() {
            let tail: Vec<&str> = self.stderr.lines().rev().take(60).collect();
            text.push_str("\nstderr (last lines):\n");
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

/// Runs `python3 tests/interop/<script> <args>` and waits at most `timeout` (then kills
/// it). The script is told to give up on its own waits 10 s earlier
/// (`IMBUS_INTEROP_TIMEOUT`). Both outputs are read while it runs, so a chatty script
/// never blocks on a full pipe.
pub fn run_script(script: &str, args: &[String], timeout: Duration) -> ScriptRun {
    let script_timeout = timeout
        .saturating_sub(Duration::from_secs(10))
        .max(Duration::from_secs(5));
    run_script_with(script, args, script_timeout, timeout)
}

/// [`run_script`] with the script's own wait limit chosen.
pub fn run_script_with(
    script: &str,
    args: &[String],
    script_timeout: Duration,
    timeout: Duration,
) -> ScriptRun {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop")
        .join(script);
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .env(
            "IMBUS_INTEROP_TIMEOUT",
            script_timeout.as_secs().to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().expect("piped stdout")));
    let err = read(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = out.join().unwrap_or_default();
    if status.is_none() {
        stdout.push_str(&format!("\n(stopped after {} s)\n", timeout.as_secs()));
    }
    ScriptRun {
        ok: status.is_some_and(|s| s.success()),
        stdout,
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs one scenario of `tests/interop/slixmpp_muc.py` against the chat service
/// `service` of the server on `data_dir`, and fails the test with its output unless it
/// succeeded. Returns the output.
pub fn muc_scenario(data_dir: &Path, service: &str, name: &str) -> String {
    let c2s = listener(data_dir, "c2s");
    let run = run_script(
        "slixmpp_muc.py",
        &[
            c2s.ip().to_string(),
            c2s.port().to_string(),
            service.to_owned(),
            name.to_owned(),
        ],
        Duration::from_secs(120),
    );
    let text = run.text();
    assert!(
        run.ok && text.contains("OK:"),
        "slixmpp_muc.py {name} failed:\n{text}"
    );
    text
}
