//! The process's Prometheus registry.

use prometheus::{IntGauge, Opts, Registry};

/// Creates the registry with the process metrics and `imbus_build_info`.
pub fn registry(backend: &str) -> anyhow::Result<Registry> {
    let registry = Registry::new();
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let info = IntGauge::with_opts(
        Opts::new(
            "imbus_build_info",
            "imbus version and log backend (always 1)",
        )
        .const_label("version", env!("CARGO_PKG_VERSION"))
        .const_label("backend", backend),
    )?;
    info.set(1);
    registry.register(Box::new(info))?;
    Ok(registry)
}
