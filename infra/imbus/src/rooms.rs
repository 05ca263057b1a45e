//! `imbus rooms`: the rooms processor (XEP-0045 chat rooms) on its own, for deployments
//! on Kafka where it scales separately from gateways and routers (the `serve` nodes then
//! run with `rooms.embedded = false`). Several `imbus rooms` processes split the
//! partitions of `rooms.stanzas` among themselves (consumer group `rooms`); when one
//! stops, the others take over its rooms by folding the `rooms` changelog.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use imbus_config::Config;
use tokio::sync::watch;

/// The rooms settings of a server configuration, or why there are none.
pub(crate) fn rooms_config(config: &Config) -> anyhow::Result<imbus_rooms::RoomsConfig> {
    let rooms = imbus_rooms::RoomsConfig::from_config(config).with_context(|| {
        format!(
            "the chat node alias {:?} (from node_id, cluster_id and domain) is not a valid XMPP domain",
            config.system_chat_alias()
        )
    })?;
    rooms.validate().context("invalid rooms settings")?;
    Ok(rooms)
}

/// Turns live setting changes into rooms settings.
pub(crate) async fn follow_rooms_settings(
    mut live: watch::Receiver<Arc<Config>>,
    rooms: watch::Sender<imbus_rooms::RoomsConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = live.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let config = live.borrow_and_update().clone();
        match rooms_config(&config) {
            Ok(settings) => {
                rooms.send_if_modified(|current| {
                    let changed = *current != settings;
                    *current = settings;
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %e, "rooms settings change ignored"),
        }
    }
}

/// Runs the rooms processor until SIGTERM/SIGINT.
pub async fn rooms(config: Config) -> anyhow::Result<ExitCode> {
    let log_control = crate::telemetry::init(&config)?;
    if !config.rooms.enabled {
        anyhow::bail!("rooms.enabled is false: there are no chat rooms to serve");
    }
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
    let rooms_config = rooms_config(&live_rx.borrow())?;
    let (settings_tx, settings_rx) = watch::channel(rooms_config.clone());
    let settings = tokio::spawn(follow_rooms_settings(
        live_rx,
        settings_tx,
        shutdown_rx.clone(),
    ));
    let mut task = tokio::spawn(imbus_rooms::run(
        log.clone(),
        rooms_config,
        settings_rx,
        shutdown_rx,
    ));
    tracing::info!(backend = log.backend(), "rooms processor running");
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
    let _ = settings.await;
    let _ = follower.await;
    let flushed = log.shutdown().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the rooms processor stopped with an error");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            tracing::error!(error = %e, "the rooms processor task failed");
            return Ok(ExitCode::FAILURE);
        }
    }
    if let Err(e) = flushed {
        tracing::error!(error = %e, "the log could not be flushed cleanly");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
