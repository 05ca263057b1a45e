//! `imbus archive`: the message archive processor (XEP-0313) on its own, for deployments
//! on Kafka where it scales separately from gateways and routers (the `serve` nodes then
//! run with `mam.embedded = false`). Several `imbus archive` processes split the
//! partitions of the `archive` topic among themselves (consumer group `archive`).

use std::process::ExitCode;

use tokio::sync::watch;

use imbus_config::Config;

/// Runs the archive processor until SIGTERM/SIGINT.
pub async fn archive(config: Config) -> anyhow::Result<ExitCode> {
    let _log_control = crate::telemetry::init(&config)?;
    if !config.mam.enabled {
        anyhow::bail!("mam.enabled is false: there is no archive to serve");
    }
    let log = crate::bus::open(&config).await?;
    crate::bus::create_system_topics(log.as_ref(), &config).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut task = tokio::spawn(imbus_archive::run(log.clone(), shutdown_rx));
    tracing::info!(backend = log.backend(), "archive processor running");
    let outcome = tokio::select! {
        signal = crate::serve::wait_for_signal() => {
            tracing::info!(signal, "shutting down");
            let _ = shutdown_tx.send(true);
            task.await
        }
        ended = &mut task => {
            let _ = shutdown_tx.send(true);
            ended
        }
    };
    let flushed = log.shutdown().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the archive processor stopped with an error");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            tracing::error!(error = %e, "the archive processor task failed");
            return Ok(ExitCode::FAILURE);
        }
    }
    if let Err(e) = flushed {
        tracing::error!(error = %e, "the log could not be flushed cleanly");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
