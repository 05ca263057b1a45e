//! A real Kafka-protocol broker for tests: [Tansu](https://github.com/tansu-io/tansu) with
//! SQLite storage in a temporary directory, on a free loopback port.
//!
//! Tansu is a single Rust binary (`cargo install tansu --locked --features libsql`), so the
//! Kafka backend of imbus is tested against a real broker speaking the Kafka protocol, with
//! no JVM and no containers. The harness finds the binary (`TANSU_BIN`, else `tansu` on
//! `PATH`, else `~/.cargo/bin/tansu`), starts it, waits until it answers a metadata request,
//! and stops it and removes its data when the [`TansuBroker`] is dropped.
//!
//! The broker runs under a small `sh` guard that kills it once the test process's end of
//! a pipe closes, so a broker never outlives its test process, even when the process is
//! killed or the broker is a never-dropped shared one ([`shared`]).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

use crate::HarnessError;

/// How to install the broker, quoted by every "not found" error.
pub const INSTALL_HINT: &str = "cargo install tansu --locked --features libsql";

/// How long the broker may take to answer its first metadata request.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts the broker in the background, then waits for the test process to close the
/// pipe on standard input (on drop, or when the process ends however it ends), then stops
/// the broker and removes its data directory. `$1` is the data directory, the rest is the
/// broker command line.
const GUARD_SCRIPT: &str = r#"
dir=$1
shift
"$@" >"$dir/tansu.log" 2>&1 &
pid=$!
echo "$pid" >"$dir/tansu.pid"
while read -r _; do :; done
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$dir"
"#;

/// A running Tansu broker. Stopped, and its data removed, on drop.
#[derive(Debug)]
pub struct TansuBroker {
    guard: Child,
    dir: PathBuf,
    port: u16,
    binary: PathBuf,
}

impl TansuBroker {
    /// Starts a broker on a free loopback port with SQLite storage in a new temporary
    /// directory and waits until it answers.
    pub fn start() -> Result<TansuBroker, HarnessError> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("imbus-tansu-")
            .tempdir()
            .map_err(|e| HarnessError::Io("create the broker's data directory".into(), e))?
            .keep();
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        tracing::info!(binary = %binary.display(), %url, dir = %dir.display(), "starting Tansu");
        let guard = Command::new("sh")
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("tansu-guard")
            .arg(&dir)
            .arg(&binary)
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--cluster-id")
            .arg("imbus-tests")
            // Relative to the working directory (Tansu resolves SQLite paths that way).
            .arg("--storage-engine")
            .arg("sqlite:///tansu.db")
            .current_dir(&dir)
            .env(
                "RUST_LOG",
                std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| HarnessError::Io("start the Tansu broker under sh".into(), e))?;
        let broker = TansuBroker {
            guard,
            dir,
            port,
            binary,
        };
        broker.wait_until_ready()?;
        Ok(broker)
    }

    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's data directory (its SQLite database and log).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines the broker wrote to its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(file) = fs::File::open(self.dir.join("tansu.log")) else {
            return String::from("(no broker log)");
        };
        let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn pid(&self) -> Option<u32> {
        fs::read_to_string(self.dir.join("tansu.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Whether the broker process has exited (Linux only; elsewhere assumed alive).
    fn broker_exited(&self) -> bool {
        if !cfg!(target_os = "linux") {
            return false;
        }
        let Some(pid) = self.pid() else {
            return false; // not started yet
        };
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state is the field after the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => true,
        }
    }

    fn wait_until_ready(&self) -> Result<(), HarnessError> {
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("client.id", "imbus-tests-probe")
            .create()
            .map_err(|e| HarnessError::Kafka(format!("create a metadata probe: {e}")))?;
        let started = Instant::now();
        loop {
            if self.broker_exited() {
                return Err(HarnessError::BrokerFailed(format!(
                    "Tansu ({}) exited during startup. Its log:\n{}",
                    self.binary.display(),
                    self.log_tail(40)
                )));
            }
            match probe.fetch_metadata(None, Duration::from_secs(1)) {
                Ok(metadata) if !metadata.brokers().is_empty() => {
                    tracing::info!(
                        bootstrap = %self.bootstrap(),
                        elapsed = ?started.elapsed(),
                        "Tansu is ready"
                    );
                    return Ok(());
                }
                Ok(_) | Err(_) if started.elapsed() < STARTUP_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(_) => {
                    return Err(HarnessError::BrokerFailed(format!(
                        "Tansu at {} reports no brokers after {STARTUP_TIMEOUT:?}. Its log:\n{}",
                        self.bootstrap(),
                        self.log_tail(40)
                    )));
                }
                Err(e) => {
                    return Err(HarnessError::BrokerFailed(format!(
                        "Tansu at {} did not answer within {STARTUP_TIMEOUT:?} ({e}). Its log:\n{}",
                        self.bootstrap(),
                        self.log_tail(40)
                    )));
                }
            }
        }
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        // Closing the pipe makes the guard stop the broker and remove its data.
        drop(self.guard.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.guard.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    tracing::warn!("Tansu did not stop in time; killing it");
                    if let Some(pid) = self.pid() {
                        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                    }
                    let _ = self.guard.kill();
                    let _ = self.guard.wait();
                    break;
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One broker shared by all tests of the calling process, started on first use. With
/// `cargo nextest` every test is its own process and gets its own broker; with
/// `cargo test` the tests of one binary share it (each test uses its own topics).
pub fn shared() -> Result<&'static TansuBroker, &'static HarnessError> {
    static SHARED: OnceLock<Result<TansuBroker, HarnessError>> = OnceLock::new();
    SHARED.get_or_init(TansuBroker::start).as_ref()
}

/// Finds the `tansu` binary: `TANSU_BIN`, else `tansu` on `PATH`, else Cargo's bin
/// directory.
pub fn find_binary() -> Result<PathBuf, HarnessError> {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HarnessError::TansuNotFound(format!(
                "TANSU_BIN is set to {}, which is not a file. Install Tansu with `{INSTALL_HINT}` \
                 or point TANSU_BIN at the binary.",
                path.display()
            )))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("tansu"))
        .find(|candidate| candidate.is_file());
    if let Some(path) = on_path {
        return Ok(path);
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|cargo_home| cargo_home.join("bin").join("tansu"));
    match cargo_bin {
        Some(path) if path.is_file() => Ok(path),
        _ => Err(HarnessError::TansuNotFound(format!(
            "the Kafka tests need Tansu, a Kafka-protocol broker, and it is not installed \
             (looked at $TANSU_BIN, `tansu` on PATH and ~/.cargo/bin/tansu). Install it with \
             `{INSTALL_HINT}` (SQLite storage is required), or set TANSU_BIN to its path."
        ))),
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::Io("find a free loopback port".into(), e))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| HarnessError::Io("find a free loopback port".into(), e))
}
