//! Operations plumbing shared by every imbus process: the Prometheus registry, the HTTP
//! listener that serves `/healthz`, `/metrics` and whatever routes the process adds (the
//! admin API, XMPP over WebSocket), the admin token, and the run file through which the
//! command line finds a running server.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod http;
mod run;

pub use http::{Health, HealthCheck, HttpServer, metrics_text};
pub use run::{RunFile, RunInfo, admin_token, read_admin_token};

/// Errors of the operations layer.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid run file: {detail}")]
    BadRunFile {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
