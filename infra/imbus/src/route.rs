//! `imbus route`: a router on its own, for deployments on Kafka where routers scale
//! separately from gateways (the `serve` nodes then run with `router.embedded = false`).
//! Several `imbus route` processes split the partitions among themselves (consumer group
//! `router`); when one stops, the others take over its partitions.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use imbus_config::Config;
use tokio::sync::watch;

/// Runs the router until SIGTERM/SIGINT.
pub async fn route(config: Config) -> anyhow::Result<ExitCode> {
    let log_control = crate::telemetry::init(&config)?;
    let log = crate::bus::open(&config).await?;
    crate::bus::create_system_topics(log.as_ref(), &config).await?;
    let (fold, next) = crate::live::load(log.as_ref(), config.clone()).await?;
    let effective = Arc::new(fold.current().clone());
    if effective.log_level != config.log_level {
        log_control.set_filter(&effective.log_level);
    }
    let (live_tx, live_rx) = watch::channel(effective);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let follower = tokio::spawn(crate::live::follow(
        log.clone(),
        fold,
        next,
        live_tx,
        shutdown_rx.clone(),
    ));
    let router_config = imbus_router::RouterConfig::from_config(&live_rx.borrow())
        .with_context(|| format!("domain {:?} is not a valid XMPP domain", config.domain))?;
    let (settings_tx, settings_rx) = watch::channel(router_config.clone());
    let settings = tokio::spawn(crate::serve::follow_router_settings(
        live_rx,
        settings_tx,
        shutdown_rx.clone(),
    ));
    let mut router = tokio::spawn(imbus_router::run(
        log.clone(),
        router_config,
        settings_rx,
        shutdown_rx,
    ));
    tracing::info!(backend = log.backend(), "router running");
    let outcome = tokio::select! {
        signal = crate::serve::wait_for_signal() => {
            tracing::info!(signal, "shutting down");
            let _ = shutdown_tx.send(true);
            router.await
        }
        ended = &mut router => {
            let _ = shutdown_tx.send(true);
            ended
        }
    };
    let _ = settings.await;
    let _ = follower.await;
    let flushed = log.shutdown().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the router stopped with an error");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            tracing::error!(error = %e, "the router task failed");
            return Ok(ExitCode::FAILURE);
        }
    }
    if let Err(e) = flushed {
        tracing::error!(error = %e, "the log could not be flushed cleanly");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
