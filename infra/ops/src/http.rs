//! The HTTP listener.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::OpsError;

/// The state of one part of the process, as `/healthz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    Failing(String),
}

/// Something `/healthz` asks.
pub trait HealthCheck: Send + Sync + 'static {
    /// A short name, e.g. "log".
    fn name(&self) -> &str;
    fn check(&self) -> Health;
}

/// The Prometheus text exposition of a registry.
pub fn metrics_text(registry: &Registry) -> Result<String, OpsError> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[derive(Clone)]
struct OpsState {
    registry: Registry,
    checks: Arc<Vec<Box<dyn HealthCheck>>>,
}

/// The HTTP listener of a process.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl HttpServer {
    /// Binds the listener (port 0 picks a free port; see [`HttpServer::local_addr`]).
    pub async fn bind(addr: SocketAddr) -> Result<Self, OpsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| OpsError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| OpsError::Bind { addr, source })?;
        Ok(Self {
            listener,
            local_addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `/healthz`, `/metrics` and `extra` until `shutdown` resolves, then finishes
    /// the requests in flight.
    pub async fn serve(
        self,
        registry: Registry,
        checks: Vec<Box<dyn HealthCheck>>,
        extra: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), OpsError> {
        let state = OpsState {
            registry,
            checks: Arc::new(checks),
        };
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .with_state(state)
            .merge(extra);
        let addr = self.local_addr;
        // The peer address reaches handlers as `ConnectInfo` (rate limits of the XMPP
        // WebSocket endpoint).
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| OpsError::Bind { addr, source })
    }
}

impl std::fmt::Debug for OpsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsState").finish_non_exhaustive()
    }
}

async fn healthz(axum::extract::State(state): axum::extract::State<OpsState>) -> Response {
    let mut failing = Vec::new();
    for check in state.checks.iter() {
        if let Health::Failing(why) = check.check() {
            failing.push(serde_json::json!({ "check": check.name(), "error": why }));
        }
    }
    if failing.is_empty() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ok" })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "failing", "failing": failing })),
        )
            .into_response()
    }
}

async fn metrics(axum::extract::State(state): axum::extract::State<OpsState>) -> Response {
    match metrics_text(&state.registry) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Flag(bool);
    impl HealthCheck for Flag {
        fn name(&self) -> &str {
            "flag"
        }
        fn check(&self) -> Health {
            if self.0 {
                Health::Ok
            } else {
                Health::Failing("down".into())
            }
        }
    }

    async fn get_raw(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_health_and_metrics() {
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("imbus_test_total", "test counter").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc_by(3);

        for (ok, status) in [(true, "200 OK"), (false, "503 Service Unavailable")] {
            let server = HttpServer::bind("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let addr = server.local_addr();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(server.serve(
                registry.clone(),
                vec![Box::new(Flag(ok))],
                Router::new(),
                async {
                    let _ = rx.await;
                },
            ));
            let health = get_raw(addr, "/healthz").await;
            assert!(
                health.starts_with(&format!("HTTP/1.1 {status}")),
                "{health}"
            );
            if !ok {
                assert!(
                    health.contains("\"flag\"") && health.contains("down"),
                    "{health}"
                );
            }
            let metrics = get_raw(addr, "/metrics").await;
            assert!(metrics.contains("imbus_test_total 3"), "{metrics}");
            tx.send(()).unwrap();
            task.await.unwrap().unwrap();
        }
    }
}
