//! What `imbus route`, `imbus rooms` and `imbus archive` share: a processor run on its own
//! against the configured bus, following live settings, until SIGTERM/SIGINT or until the
//! processor stops.

use std::fmt::Display;
use std::process::ExitCode;
use std::sync::Arc;

use imbus_config::Config;
use imbus_log::Log;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A standalone processor's surroundings: the log, the live settings and the shutdown
/// signal.
pub(crate) struct Standalone {
    pub log: Arc<dyn Log>,
    /// The effective configuration, updated from the `config` topic.
    pub live: watch::Receiver<Arc<Config>>,
    /// Turns true when the processor and its helpers should stop.
    pub shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
    follower: JoinHandle<()>,
}

impl Standalone {
    /// Opens the bus, creates the system topics, loads the live settings and follows them
    /// (the log level follows the live setting too).
    pub async fn start(config: &Config) -> anyhow::Result<Standalone> {
        Self::start_as(config, false).await
    }

    /// [`Self::start`] for a chat node: registers this node and its system alias on the
    /// chat node alias table before following the live settings.
    pub async fn start_chat_node(config: &Config) -> anyhow::Result<Standalone> {
        Self::start_as(config, true).await
    }

    async fn start_as(config: &Config, chat_node: bool) -> anyhow::Result<Standalone> {
        let log_control = crate::telemetry::init(config)?;
        let log = crate::bus::open(config).await?;
        crate::bus::create_system_topics(log.as_ref(), config).await?;
        let (fold, next) = crate::live::load(log.as_ref(), config.clone()).await?;
        let (fold, next) =
            crate::aliases::register(log.as_ref(), config, chat_node, fold, next).await?;
        let effective = Arc::new(fold.current().clone());
        if effective.log_level != config.log_level {
            log_control.set_filter(&effective.log_level);
        }
        let (live_tx, live) = watch::channel(effective);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let follower = tokio::spawn(crate::live::follow(
            log.clone(),
            fold,
            next,
            live_tx,
            shutdown.clone(),
        ));
        Ok(Standalone {
            log,
            live,
            shutdown,
            shutdown_tx,
            follower,
        })
    }

    /// Waits for a signal or for `task` (the processor, called `what` in logs) to end,
    /// stops it and `helpers`, and flushes the log. Failure when the processor failed or
    /// the log could not be flushed.
    pub async fn run<E: Display>(
        self,
        what: &str,
        mut task: JoinHandle<Result<(), E>>,
        helpers: Vec<JoinHandle<()>>,
    ) -> ExitCode {
        tracing::info!(backend = self.log.backend(), "{what} running");
        let outcome = tokio::select! {
            signal = crate::serve::wait_for_signal() => {
                tracing::info!(signal, "shutting down");
                let _ = self.shutdown_tx.send(true);
                task.await
            }
            ended = &mut task => {
                let _ = self.shutdown_tx.send(true);
                ended
            }
        };
        for helper in helpers {
            let _ = helper.await;
        }
        let _ = self.follower.await;
        let flushed = self.log.shutdown().await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the {what} stopped with an error");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                tracing::error!(error = %e, "the {what} task failed");
                return ExitCode::FAILURE;
            }
        }
        if let Err(e) = flushed {
            tracing::error!(error = %e, "the log could not be flushed cleanly");
            return ExitCode::FAILURE;
        }
        ExitCode::SUCCESS
    }
}
