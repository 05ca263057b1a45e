//! `imbus rooms`: the rooms processor (XEP-0045 chat rooms) on its own, for deployments
//! on Kafka where it scales separately from gateways and routers (the `serve` nodes then
//! run with `rooms.embedded = false`). Several `imbus rooms` processes split the
//! partitions of `rooms.stanzas` among themselves (consumer group `rooms`); when one
//! stops, the others take over its rooms by folding the `rooms` changelog.

use std::process::ExitCode;

use anyhow::Context;
use imbus_config::Config;
use tokio::sync::watch;

use crate::standalone::Standalone;

/// The rooms settings of a server configuration, or why there are none.
pub(crate) fn rooms_config(config: &Config) -> anyhow::Result<imbus_rooms::RoomsConfig> {
    let rooms = imbus_rooms::RoomsConfig::from_config(config).with_context(|| {
        format!(
            "a chat node alias ({}) is not a valid XMPP domain",
            config.chat_domains().join(", ")
        )
    })?;
    rooms.validate().context("invalid rooms settings")?;
    Ok(rooms)
}

/// Runs the rooms processor until SIGTERM/SIGINT.
pub async fn rooms(config: Config) -> anyhow::Result<ExitCode> {
    if !config.rooms.enabled {
        anyhow::bail!("rooms.enabled is false: there are no chat rooms to serve");
    }
    let standalone = Standalone::start_chat_node(&config).await?;
    let initial = rooms_config(&standalone.live.borrow())?;
    let (settings_tx, settings_rx) = watch::channel(initial.clone());
    let settings = tokio::spawn(crate::live::follow_settings(
        "rooms",
        standalone.live.clone(),
        settings_tx,
        standalone.shutdown.clone(),
        rooms_config,
    ));
    let task = tokio::spawn(imbus_rooms::run(
        standalone.log.clone(),
        initial,
        settings_rx,
        standalone.shutdown.clone(),
    ));
    Ok(standalone
        .run("rooms processor", task, vec![settings])
        .await)
}
