//! Live settings: the `config` topic folded over the file/environment configuration.
//!
//! A change is a `ConfigChanged` event keyed by the setting name on the single-partition
//! `config` topic, so all changes have one order. Every process folds the topic from the
//! start (last value per key wins, a `None` value returns the setting to its base value)
//! and publishes the effective configuration on a watch channel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use imbus_config::Config;
use imbus_config::topics::CONFIG;
use imbus_core::{ConfigChanged, ConfigKey, Event, Timestamp};
use imbus_log::{ConsumedRecord, Log, Position, Record, StartAt};
use tokio::sync::watch;

/// The effective configuration, changing as live settings change.
pub type LiveConfig = watch::Receiver<Arc<Config>>;

/// Folds `config` records into the effective configuration.
#[derive(Debug)]
pub struct Fold {
    base: Config,
    overrides: BTreeMap<String, String>,
    current: Config,
}

impl Fold {
    pub fn new(base: Config) -> Self {
        Self {
            current: base.clone(),
            base,
            overrides: BTreeMap::new(),
        }
    }

    pub fn current(&self) -> &Config {
        &self.current
    }

    /// Applies one record of the `config` topic. A record that does not decode or names
    /// a value this version refuses is skipped with a warning: the log keeps it, and the
    /// setting keeps its previous value.
    pub fn apply(&mut self, record: &ConsumedRecord) {
        let Some(value) = record.value.as_ref() else {
            // A tombstone: the key's override is gone.
            if let Some(key) = record.key.as_ref() {
                let key = String::from_utf8_lossy(key).into_owned();
                self.overrides.remove(&key);
                self.rebuild();
            }
            return;
        };
        let change = match imbus_schemas::decode(value) {
            Ok(Event::ConfigChanged(c)) => c,
            Ok(other) => {
                tracing::warn!(offset = record.offset, event = ?std::mem::discriminant(&other), "ignoring a non-config event on the config topic");
                return;
            }
            Err(e) => {
                tracing::warn!(offset = record.offset, error = %e, "ignoring an undecodable record on the config topic");
                return;
            }
        };
        let key = change.key.as_str().to_owned();
        let previous = self.overrides.clone();
        match change.value {
            Some(v) => {
                self.overrides.insert(key.clone(), v);
            }
            None => {
                self.overrides.remove(&key);
            }
        }
        if let Err(e) = self.try_rebuild() {
            tracing::warn!(offset = record.offset, key, error = %e, "ignoring a live setting change this version refuses");
            self.overrides = previous;
        }
    }

    fn try_rebuild(&mut self) -> Result<(), imbus_config::ConfigError> {
        let mut config = self.base.clone();
        for (k, v) in &self.overrides {
            config = config.with_override(&self.base, k, Some(v))?;
        }
        self.current = config;
        Ok(())
    }

    fn rebuild(&mut self) {
        if let Err(e) = self.try_rebuild() {
            tracing::warn!(error = %e, "live settings could not be applied");
        }
    }
}

/// Validates a live change against `current` and appends it to the `config` topic.
/// Returns where it landed once the log acknowledged it.
pub async fn append_change(
    log: &dyn Log,
    base: &Config,
    current: &Config,
    key: &str,
    value: Option<&str>,
    by: &str,
) -> Result<Position, ChangeError> {
    current
        .with_override(base, key, value)
        .map_err(ChangeError::Invalid)?;
    let key = ConfigKey::new(key).map_err(|e| ChangeError::Log(e.to_string()))?;
    let event = Event::ConfigChanged(ConfigChanged {
        key: key.clone(),
        value: value.map(str::to_owned),
        at: Timestamp::now(),
        by: by.to_owned(),
    });
    let bytes = imbus_schemas::encode(&event).map_err(|e| ChangeError::Log(e.to_string()))?;
    let record = Record::new(Bytes::from(key.into_inner()), Bytes::from(bytes));
    log.append(CONFIG, record)
        .await
        .map_err(|e| ChangeError::Log(e.to_string()))
}

/// Why a live change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Invalid(imbus_config::ConfigError),
    #[error("the log did not accept the change: {0}")]
    Log(String),
}

/// Reads the whole `config` topic now (at start), returning the fold and the offset
/// to follow from.
pub async fn load(log: &dyn Log, base: Config) -> anyhow::Result<(Fold, i64)> {
    let mut fold = Fold::new(base);
    let marks = log
        .watermarks(CONFIG, 0)
        .await
        .context("cannot read the config topic")?;
    let mut reader = log
        .reader(CONFIG, 0, StartAt::Earliest)
        .await
        .context("cannot read the config topic")?;
    while reader.position() < marks.high {
        let batch = reader
            .read(1024, Duration::from_secs(5))
            .await
            .context("cannot read the config topic")?;
        if batch.is_empty() {
            break;
        }
        for r in &batch {
            fold.apply(r);
        }
    }
    Ok((fold, reader.position()))
}

/// Follows the `config` topic from `from`, publishing every change of the effective
/// configuration, until `shutdown` flips.
pub async fn follow(
    log: Arc<dyn Log>,
    mut fold: Fold,
    from: i64,
    tx: watch::Sender<Arc<Config>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reader = match log.reader(CONFIG, 0, StartAt::Offset(from)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the config topic; live setting changes will not apply until restart");
            return;
        }
    };
    loop {
        let batch = tokio::select! {
            _ = shutdown.changed() => return,
            b = reader.read(256, Duration::from_secs(30)) => b,
        };
        match batch {
            Ok(batch) => {
                if batch.is_empty() {
                    continue;
                }
                for r in &batch {
                    fold.apply(r);
                }
                let new = fold.current().clone();
                if **tx.borrow() != new {
                    tx.send_replace(Arc::new(new));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the config topic failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Keeps one component's settings in step with the live configuration: on every change,
/// `derive` computes them and `settings` is updated when they differ (`what` names them
/// in the log). A configuration `derive` refuses leaves the settings as they were.
pub async fn follow_settings<T, E>(
    what: &'static str,
    mut live: watch::Receiver<Arc<Config>>,
    settings: watch::Sender<T>,
    mut shutdown: watch::Receiver<bool>,
    derive: impl Fn(&Config) -> Result<T, E>,
) where
    T: PartialEq + std::fmt::Debug,
    E: std::fmt::Display,
{
    loop {
        tokio::select! {
            changed = live.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let config = live.borrow_and_update().clone();
        match derive(&config) {
            Ok(new) => {
                settings.send_if_modified(|current| {
                    let changed = *current != new;
                    if changed {
                        tracing::info!(settings = ?new, "{what} settings changed");
                    }
                    *current = new;
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %e, "{what} settings change ignored"),
        }
    }
}
