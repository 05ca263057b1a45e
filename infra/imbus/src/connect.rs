//! The connectors in the binary: the compliance sink and the room archive, embedded in
//! `imbus serve` (the default), or each alone with `imbus connect compliance` /
//! `imbus connect room-archive` (`compliance.embedded = false` /
//! `rooms.archive.embedded = false` on the `serve` nodes), against the configured bus.
//! Several processes of one connector on Kafka split the partitions of its topics
//! (consumer groups `compliance-sink`, `room-archive`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use imbus_config::Config;
use imbus_connector_compliance::{
    Database, SinkMetrics, SinkOptions, SinkSettings, database_url, redact_url,
};
use imbus_ops::HttpServer;
use prometheus::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A connector running in this process (the compliance sink or the room archive).
pub struct RunningConnector {
    name: &'static str,
    task: JoinHandle<anyhow::Result<()>>,
    settings: JoinHandle<()>,
}

impl RunningConnector {
    /// Waits for the connector to stop (after shutdown); true when it stopped cleanly.
    pub async fn join(self) -> bool {
        let clean = match self.task.await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the {} stopped with an error", self.name);
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "the {} task failed", self.name);
                false
            }
        };
        let _ = self.settings.await;
        clean
    }

    /// Whether the connector stopped (on its own, before a shutdown: an error).
    fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts the compliance sink on `log` with the database of the configuration, its
/// metrics in `registry`, following live setting changes. An invalid database URL is an
/// error now; an unreachable database only delays archiving (the sink waits for it).
pub fn start_compliance(
    log: Arc<dyn imbus_log::Log>,
    config: &Config,
    live: watch::Receiver<Arc<Config>>,
    shutdown: watch::Receiver<bool>,
    registry: &Registry,
) -> anyhow::Result<RunningConnector> {
    let url = database_url(config);
    let database = redact_url(&url);
    let db =
        Database::open(&url, config.compliance.pool_size).context("compliance.database_url")?;
    let metrics = SinkMetrics::new(&database)?;
    metrics.register(registry)?;
    let initial = SinkSettings::from_config(&live.borrow());
    let (settings_tx, settings_rx) = watch::channel(initial);
    let settings = tokio::spawn(crate::live::follow_settings(
        "compliance",
        live,
        settings_tx,
        shutdown.clone(),
        |config: &Config| Ok::<_, std::convert::Infallible>(SinkSettings::from_config(config)),
    ));
    tracing::info!(database = %database, "compliance sink starting");
    let options = SinkOptions {
        // One transaction per pooled connection at most.
        parallel_writes: usize::try_from(config.compliance.pool_size)
            .unwrap_or(1)
            .clamp(1, 8),
        ..SinkOptions::default()
    };
    let task = tokio::spawn(async move {
        imbus_connector_compliance::run(log, db, database, metrics, settings_rx, shutdown, options)
            .await
            .map_err(anyhow::Error::from)
    });
    Ok(RunningConnector {
        name: "compliance sink",
        task,
        settings,
    })
}

/// Starts the room-archive connector on `log` with the persistent chat database of the
/// configuration, its metrics in `registry`, following the live heartbeat interval. An
/// invalid database URL is an error now; an unreachable database only delays archiving.
pub fn start_room_archive(
    log: Arc<dyn imbus_log::Log>,
    config: &Config,
    live: watch::Receiver<Arc<Config>>,
    shutdown: watch::Receiver<bool>,
    registry: &Registry,
) -> anyhow::Result<RunningConnector> {
    use imbus_connector_room_archive as room_archive;
    let url = room_archive::database_url(config);
    let database = redact_url(&url);
    let db = room_archive::db::ArchiveDb::open(&url, config.rooms.archive.pool_size)
        .context("rooms.archive.database_url")?;
    let metrics = room_archive::ArchiveMetrics::new(&database)?;
    metrics.register(registry)?;
    let heartbeat = |config: &Config| {
        Ok::<_, std::convert::Infallible>(config.rooms.archive.heartbeat_interval)
    };
    let (settings_tx, settings_rx) = watch::channel(config.rooms.archive.heartbeat_interval);
    let settings = tokio::spawn(crate::live::follow_settings(
        "room archive",
        live,
        settings_tx,
        shutdown.clone(),
        heartbeat,
    ));
    tracing::info!(database = %database, "room-archive connector starting");
    let task = tokio::spawn(async move {
        room_archive::run(
            log,
            db,
            database,
            metrics,
            settings_rx,
            shutdown,
            room_archive::ConnectorOptions::default(),
        )
        .await
        .map_err(anyhow::Error::from)
    });
    Ok(RunningConnector {
        name: "room-archive connector",
        task,
        settings,
    })
}

/// Which connector `imbus connect` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorKind {
    Compliance,
    RoomArchive,
}

/// `imbus connect compliance|room-archive`: one connector alone until SIGTERM/SIGINT,
/// with `/metrics` and `/healthz` on `http_bind:http_port`.
pub async fn connect(config: Config, kind: ConnectorKind) -> anyhow::Result<ExitCode> {
    let log_control = crate::telemetry::init(&config)?;
    match kind {
        ConnectorKind::Compliance if !config.compliance.enabled => anyhow::bail!(
            "compliance.enabled is false: there is nothing to archive; set it to true to run the compliance sink"
        ),
        ConnectorKind::RoomArchive if !config.rooms.enabled => anyhow::bail!(
            "rooms.enabled is false: there are no rooms to archive; set it to true to run the room-archive connector"
        ),
        _ => {}
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (data_dir)",
            config.data_dir.display()
        )
    })?;
    let (log, embedded) = crate::bus::open_with_embedded(&config).await?;
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
    let registry = crate::metrics::registry(log.backend(), embedded)?;
    let start = match kind {
        ConnectorKind::Compliance => start_compliance,
        ConnectorKind::RoomArchive => start_room_archive,
    };
    let connector = start(
        log.clone(),
        &config,
        live_rx,
        shutdown_rx.clone(),
        &registry,
    )?;
    let http_addr = SocketAddr::new(config.http_bind, config.http_port);
    let http = HttpServer::bind(http_addr)
        .await
        .with_context(|| format!("http_bind/http_port {http_addr}"))?;
    tracing::info!(backend = log.backend(), http = %http.local_addr(), connector = connector.name, "connector running");
    let mut http_shutdown = shutdown_rx.clone();
    let http_task =
        tokio::spawn(
            http.serve(registry, Vec::new(), axum::Router::new(), async move {
                let _ = http_shutdown.changed().await;
            }),
        );

    let mut watchdog = tokio::time::interval(std::time::Duration::from_secs(1));
    tokio::select! {
        signal = crate::serve::wait_for_signal() => tracing::info!(signal, "shutting down"),
        _ = async { loop { watchdog.tick().await; if connector.is_finished() { break } } } => {}
    }
    let _ = shutdown_tx.send(true);
    let clean = connector.join().await;
    let _ = http_task.await;
    let _ = follower.await;
    let flushed = log.shutdown().await;
    if let Err(e) = flushed {
        tracing::error!(error = %e, "the log could not be flushed cleanly");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `imbus replay compliance`: writes the compliance records of a time range into a
/// database, idempotently, printing progress to standard error and a summary.
pub async fn replay_compliance(
    config: Config,
    from: &str,
    to: &str,
    into: &str,
) -> anyhow::Result<ExitCode> {
    use imbus_connector_compliance::replay::{parse_time, replay};
    let from_micros = parse_time(from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to_micros = parse_time(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    if to_micros <= from_micros {
        anyhow::bail!("--to ({to}) must be after --from ({from})");
    }
    let db = Database::open(into, config.compliance.pool_size).context("--into")?;
    let log = crate::bus::open(&config).await?;
    crate::bus::create_system_topics(log.as_ref(), &config).await?;
    let settings = SinkSettings::from_config(&config);
    eprintln!(
        "replaying compliance records from {from} to {to} into {}",
        redact_url(into)
    );
    let mut last_reported = 0;
    let result = replay(
        log.as_ref(),
        &db,
        from_micros,
        to_micros,
        &settings,
        |partition, s| {
            if s.read >= last_reported + 10_000 {
                last_reported = s.read;
                eprintln!(
                    "partition {partition}: read {}, written {}, already present {}",
                    s.read, s.written, s.already_present
                );
            }
        },
        |r| {
            eprintln!(
                "not archived: partition {} offset {}: {}",
                r.partition, r.offset, r.reason
            )
        },
    )
    .await;
    db.close().await;
    let flushed = log.shutdown().await;
    let summary = result.context("replay failed")?;
    flushed.context("the log could not be closed cleanly")?;
    println!(
        "read {}, written {}, already present {}, skipped by the settings {}, not archived {}",
        summary.read, summary.written, summary.already_present, summary.skipped, summary.refused
    );
    Ok(if summary.refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
