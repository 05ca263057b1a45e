//! Structured logs (`tracing`), with a filter that live settings can change.

use imbus_config::{Config, LogFormat};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Changes the log filter of the running process.
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    /// Applies a new filter (already validated by the configuration).
    pub fn set_filter(&self, filter: &str) {
        match EnvFilter::try_new(filter) {
            Ok(f) => {
                if let Err(e) = self.handle.reload(f) {
                    tracing::warn!(error = %e, "could not change the log filter");
                } else {
                    tracing::info!(filter, "log filter changed");
                }
            }
            Err(e) => tracing::warn!(filter, error = %e, "ignoring invalid log filter"),
        }
    }
}

/// Installs the global subscriber: text or JSON lines on stderr.
pub fn init(config: &Config) -> anyhow::Result<LogControl> {
    let filter = EnvFilter::try_new(&config.log_level)
        .map_err(|e| anyhow::anyhow!("invalid log_level {:?}: {e}", config.log_level))?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(LogControl { handle })
}
