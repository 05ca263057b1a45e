//! `imbus archive`: the message archive processor (XEP-0313) on its own, for deployments
//! on Kafka where it scales separately from gateways and routers (the `serve` nodes then
//! run with `mam.embedded = false`). Several `imbus archive` processes split the
//! partitions of the `archive` topic among themselves (consumer group `archive`).

use std::process::ExitCode;

use imbus_config::Config;

use crate::standalone::Standalone;

/// Runs the archive processor until SIGTERM/SIGINT.
pub async fn archive(config: Config) -> anyhow::Result<ExitCode> {
    if !config.mam.enabled {
        anyhow::bail!("mam.enabled is false: there is no archive to serve");
    }
    let standalone = Standalone::start(&config).await?;
    let task = tokio::spawn(imbus_archive::run(
        standalone.log.clone(),
        standalone.shutdown.clone(),
    ));
    Ok(standalone.run("archive processor", task, Vec::new()).await)
}
