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

use crate::standalone::Standalone;

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
    if !config.rooms.enabled {
        anyhow::bail!("rooms.enabled is false: there are no chat rooms to serve");
    }
    let standalone = Standalone::start(&config).await?;
    let rooms_config = rooms_config(&standalone.live.borrow())?;
    let (settings_tx, settings_rx) = watch::channel(rooms_config.clone());
    let settings = tokio::spawn(follow_rooms_settings(
        standalone.live.clone(),
        settings_tx,
        standalone.shutdown.clone(),
    ));
    let task = tokio::spawn(imbus_rooms::run(
        standalone.log.clone(),
        rooms_config,
        settings_rx,
        standalone.shutdown.clone(),
    ));
    Ok(standalone
        .run("rooms processor", task, vec![settings])
        .await)
}
