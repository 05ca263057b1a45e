//! `imbus serve`: the whole system in one process.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use imbus_config::Config;
use imbus_log::Log;
use imbus_ops::{Health, HealthCheck, HttpServer, RunFile, RunInfo};
use tokio::sync::watch;

use crate::telemetry::LogControl;

/// `/healthz`: the log must answer.
struct LogHealth {
    log: Arc<dyn Log>,
    closed: watch::Receiver<bool>,
}

impl HealthCheck for LogHealth {
    fn name(&self) -> &str {
        "log"
    }
    fn check(&self) -> Health {
        if *self.closed.borrow() {
            Health::Failing(format!("{} log is shutting down", self.log.backend()))
        } else {
            Health::Ok
        }
    }
}

pub async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let log_control = crate::telemetry::init(&config)?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (data_dir)",
            config.data_dir.display()
        )
    })?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        domain = %config.domain,
        data_dir = %config.data_dir.display(),
        backend = ?config.bus.backend,
        "imbus starting"
    );

    let (log, embedded) = crate::bus::open_with_embedded(&config).await?;
    crate::bus::create_system_topics(log.as_ref(), &config).await?;

    // Live settings: fold the config topic, then follow it.
    let base = Arc::new(config.clone());
    let (fold, next) = crate::live::load(log.as_ref(), config.clone()).await?;
    let (fold, next) =
        crate::aliases::register(log.as_ref(), &config, config.rooms.embedded, fold, next).await?;
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
    let applier = tokio::spawn(apply_live(
        live_rx.clone(),
        log_control,
        shutdown_rx.clone(),
    ));

    // HTTP: health, metrics, admin API.
    let registry = crate::metrics::registry(log.backend(), embedded)?;
    let token = imbus_ops::admin_token(&config.data_dir)?;
    let http_addr = SocketAddr::new(config.http_bind, config.http_port);
    let http = HttpServer::bind(http_addr)
        .await
        .with_context(|| format!("http_bind/http_port {http_addr}"))?;
    let http_bound = http.local_addr();
    let (view, from) = crate::accounts::load(log.as_ref()).await?;
    let account_followers =
        crate::accounts::follow(log.clone(), view.clone(), from, shutdown_rx.clone());
    let accounts = crate::accounts::Accounts::new(log.clone(), view.clone(), &config);

    // The router: where every stanza goes, computed from the log.
    let router_config = imbus_router::RouterConfig::from_config(&live_rx.borrow())
        .with_context(|| format!("domain {:?} is not a valid XMPP domain", config.domain))?;
    let (router_settings_tx, router_settings_rx) = watch::channel(router_config.clone());
    let router_settings = tokio::spawn(crate::live::follow_settings(
        "router",
        live_rx.clone(),
        router_settings_tx,
        shutdown_rx.clone(),
        router_settings,
    ));
    let router_task = config.router.embedded.then(|| {
        tokio::spawn(imbus_router::run(
            log.clone(),
            router_config,
            router_settings_rx,
            shutdown_rx.clone(),
        ))
    });
    if router_task.is_none() {
        tracing::info!("router.embedded = false: routing is left to `imbus route` processes");
    }
    // The compliance sink: every IM archived into the compliance database.
    let compliance = if config.compliance.enabled && config.compliance.embedded {
        Some(crate::connect::start_compliance(
            log.clone(),
            &config,
            live_rx.clone(),
            shutdown_rx.clone(),
            &registry,
        )?)
    } else {
        if config.compliance.enabled {
            tracing::info!(
                "compliance.embedded = false: archiving is left to `imbus connect compliance` processes"
            );
        }
        None
    };
    // The room archive: persistent rooms and their transcripts in the persistent chat
    // database, and archive queries to rooms.
    let room_archive = if config.rooms.enabled && config.rooms.archive.embedded {
        Some(crate::connect::start_room_archive(
            log.clone(),
            &config,
            live_rx.clone(),
            shutdown_rx.clone(),
            &registry,
        )?)
    } else {
        if config.rooms.enabled {
            tracing::info!(
                "rooms.archive.embedded = false: the room archive is left to `imbus connect room-archive` processes"
            );
        }
        None
    };
    // The message archive processor (XEP-0313): answers archive queries from the log.
    let archive_task = (config.mam.enabled && config.mam.embedded)
        .then(|| tokio::spawn(imbus_archive::run(log.clone(), shutdown_rx.clone())));
    // The rooms processor (XEP-0045): chat rooms at the system chat node alias.
    let rooms_task = if config.rooms.enabled && config.rooms.embedded {
        let rooms_config = crate::rooms::rooms_config(&live_rx.borrow())?;
        let (settings_tx, settings_rx) = watch::channel(rooms_config.clone());
        let settings = tokio::spawn(crate::live::follow_settings(
            "rooms",
            live_rx.clone(),
            settings_tx,
            shutdown_rx.clone(),
            crate::rooms::rooms_config,
        ));
        tracing::info!(service = %rooms_config.service, "chat rooms served");
        let task = tokio::spawn(imbus_rooms::run(
            log.clone(),
            rooms_config,
            settings_rx,
            shutdown_rx.clone(),
        ));
        Some((task, settings))
    } else {
        if config.rooms.enabled {
            tracing::info!(
                "rooms.embedded = false: chat rooms are left to `imbus rooms` processes"
            );
        }
        None
    };
    // The XMPP client gateway, authenticating against the accounts view. Sessions an
    // earlier run left open (a crash) are closed first.
    let gateway_config = crate::xmpp::gateway_config(&config)?;
    imbus_gateway_xmpp::close_stale_sessions(log.as_ref(), &gateway_config.gateway_id)
        .await
        .context("closing the sessions of the previous run")?;
    let registration = crate::xmpp::registration(&config, &accounts);
    let gateway = imbus_gateway_xmpp::Gateway::start_with_registration(
        gateway_config,
        log.clone(),
        Arc::new(view.clone()),
        registration,
    )
    .await
    .context("starting the XMPP client gateway")?;
    let admin = crate::admin::router(token, log.clone(), accounts, base, live_rx)
        // XMPP over WebSocket (RFC 7395) at /xmpp-websocket on the same listener.
        .merge(gateway.websocket_router(config.c2s.websocket_tls_proxy));
    let checks: Vec<Box<dyn HealthCheck>> = vec![Box::new(LogHealth {
        log: log.clone(),
        closed: shutdown_rx.clone(),
    })];
    let mut http_shutdown = shutdown_rx.clone();
    let http_task = tokio::spawn(http.serve(registry, checks, admin, async move {
        let _ = http_shutdown.changed().await;
    }));

    let run_file = RunFile::new(&config.data_dir);
    run_file.write(&RunInfo {
        pid: std::process::id(),
        http: http_bound,
        listeners: [
            Some(("http".to_owned(), http_bound)),
            gateway.c2s_addr().map(|a| ("c2s".to_owned(), a)),
            gateway.tls_addr().map(|a| ("c2s_tls".to_owned(), a)),
        ]
        .into_iter()
        .flatten()
        .collect(),
        backend: log.backend().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })?;
    tracing::info!(http = %http_bound, "imbus ready");

    let signal = wait_for_signal().await;
    tracing::info!(signal, "shutting down");
    gateway.shutdown().await;
    let _ = shutdown_tx.send(true);
    match http_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP listener ended with an error"),
        Err(e) => tracing::warn!(error = %e, "HTTP listener task failed"),
        Ok(Ok(())) => {}
    }
    if let Some(task) = router_task {
        match task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "the router stopped with an error"),
            Err(e) => tracing::error!(error = %e, "the router task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(sink) = compliance {
        sink.join().await;
    }
    if let Some(connector) = room_archive {
        connector.join().await;
    }
    if let Some(task) = archive_task {
        match task.await {
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the archive processor stopped with an error")
            }
            Err(e) => tracing::error!(error = %e, "the archive processor task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some((task, settings)) = rooms_task {
        match task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "the rooms processor stopped with an error"),
            Err(e) => tracing::error!(error = %e, "the rooms processor task failed"),
            Ok(Ok(())) => {}
        }
        let _ = settings.await;
    }
    let _ = router_settings.await;
    let _ = follower.await;
    for f in account_followers {
        let _ = f.await;
    }
    let _ = applier.await;
    let result = log.shutdown().await;
    run_file.remove();
    match result {
        Ok(()) => {
            tracing::info!("log flushed; imbus stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            tracing::error!(error = %e, "the log could not be flushed cleanly");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Applies live setting changes that this process acts on directly.
async fn apply_live(
    mut live: watch::Receiver<Arc<Config>>,
    log_control: LogControl,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut level = live.borrow().log_level.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = live.changed() => {
                if changed.is_err() {
                    return;
                }
                let new = live.borrow_and_update().log_level.clone();
                if new != level {
                    log_control.set_filter(&new);
                    level = new;
                }
            }
        }
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// The router's settings under a configuration.
pub(crate) fn router_settings(config: &Config) -> Result<imbus_router::RouterConfig, String> {
    imbus_router::RouterConfig::from_config(config)
        .ok_or_else(|| format!("domain {:?} is not a valid XMPP domain", config.domain))
}
