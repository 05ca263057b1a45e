//! The imbus test harness.
//!
//! * [`tansu`] starts a real Kafka-protocol broker (Tansu with SQLite storage) for the
//!   Kafka backend's tests.
//! * [`contract`] is the log contract suite: one async function per guarantee of the
//!   [`imbus_log::Log`] trait, run by `tests/log_contract_embedded.rs` and
//!   `tests/log_contract_kafka.rs` against both backends.
//! * [`proxy`] is a TCP proxy a test can cut and restore, to simulate a database or
//!   broker outage.
//!
//! `cargo test -p imbus-tests` runs both. The Kafka half needs the `tansu` binary
//! (`cargo install tansu --locked --features libsql`); it fails, never skips, without it.
//! Environment: `TANSU_BIN` (path of the binary), `TANSU_LOG` (the broker's `RUST_LOG`,
//! default `warn`; its log is shown when it fails to start), `RUST_LOG` (the tests' own
//! tracing output, default `warn`).

pub mod contract;
pub mod db_urls;
pub mod proxy;
pub mod tansu;

/// Why the harness could not provide what a test needs.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{0}")]
    TansuNotFound(String),
    #[error("the Tansu broker failed: {0}")]
    BrokerFailed(String),
    #[error("Kafka client error: {0}")]
    Kafka(String),
    #[error("cannot {0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// Sends `tracing` output of tests to the test's captured output, filtered by `RUST_LOG`
/// (default: warnings). Safe to call from every test.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
