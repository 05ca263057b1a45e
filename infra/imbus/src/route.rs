//! `imbus route`: a router on its own, for deployments on Kafka where routers scale
//! separately from gateways (the `serve` nodes then run with `router.embedded = false`).
//! Several `imbus route` processes split the partitions among themselves (consumer group
//! `router`); when one stops, the others take over its partitions.

use anyhow::Context;
use imbus_config::Config;
use std::process::ExitCode;
use tokio::sync::watch;

use crate::standalone::Standalone;

/// Runs the router until SIGTERM/SIGINT.
pub async fn route(config: Config) -> anyhow::Result<ExitCode> {
    let standalone = Standalone::start(&config).await?;
    let router_config = imbus_router::RouterConfig::from_config(&standalone.live.borrow())
        .with_context(|| format!("domain {:?} is not a valid XMPP domain", config.domain))?;
    let (settings_tx, settings_rx) = watch::channel(router_config.clone());
    let settings = tokio::spawn(crate::live::follow_settings(
        "router",
        standalone.live.clone(),
        settings_tx,
        standalone.shutdown.clone(),
        crate::serve::router_settings,
    ));
    let router = tokio::spawn(imbus_router::run(
        standalone.log.clone(),
        router_config,
        settings_rx,
        standalone.shutdown.clone(),
    ));
    Ok(standalone.run("router", router, vec![settings]).await)
}
