//! Running `imbus serve` as a real process in tests.

#![allow(dead_code)]

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
