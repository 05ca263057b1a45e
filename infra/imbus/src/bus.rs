//! Opening the configured log backend and creating the system topics.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use imbus_config::topics::SYSTEM_TOPICS;
use imbus_config::{Backend, Config, Fsync};
use imbus_log::{Log, TopicConfig};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions, FsyncPolicy};
use imbus_log_kafka::{KafkaLog, KafkaOptions};

/// Where the embedded log keeps its files inside the data directory.
pub fn embedded_dir(config: &Config) -> std::path::PathBuf {
    config.data_dir.join("log")
}

/// The embedded log options the configuration asks for.
pub fn embedded_options(config: &Config) -> EmbeddedOptions {
    EmbeddedOptions {
        fsync: match config.bus.fsync {
            Fsync::Always => FsyncPolicy::Always,
            Fsync::Interval(d) => FsyncPolicy::Interval(d),
            Fsync::Never => FsyncPolicy::Never,
        },
        segment_bytes: config.bus.segment_bytes,
        ..EmbeddedOptions::default()
    }
}

/// Opens the configured backend.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn Log>> {
    Ok(open_with_embedded(config).await?.0)
}

/// Opens the configured backend; on the embedded backend also returns the concrete log
/// (for its statistics).
pub async fn open_with_embedded(
    config: &Config,
) -> anyhow::Result<(Arc<dyn Log>, Option<EmbeddedLog>)> {
    match config.bus.backend {
        Backend::Embedded => {
            let dir = embedded_dir(config);
            let log = EmbeddedLog::open(&dir, embedded_options(config))
                .await
                .with_context(|| format!("cannot open the embedded log in {}", dir.display()))?;
            Ok((Arc::new(log.clone()), Some(log)))
        }
        Backend::Kafka => {
            let mut options = KafkaOptions::new(config.bus.kafka_bootstrap.clone());
            options.client_id = format!("imbus-{}-{}", config.cluster_id, config.node_id);
            // A restarted component of this node takes its group memberships back at once.
            options.instance_id = Some(options.client_id.clone());
            options.replication_factor = config.bus.kafka_replication_factor;
            let log = KafkaLog::connect(options).await.with_context(|| {
                format!(
                    "cannot reach the Kafka cluster at {} (bus.kafka.bootstrap)",
                    config.bus.kafka_bootstrap
                )
            })?;
            Ok((Arc::new(log), None))
        }
    }
}

/// The topic configuration of a system topic under this configuration.
pub fn topic_config(config: &Config, layout: &imbus_config::topics::TopicLayout) -> TopicConfig {
    let partitions = layout.partitions.unwrap_or(config.bus.partitions);
    let mut topic = if layout.compacted {
        TopicConfig::compacted(layout.name, partitions)
    } else {
        TopicConfig::new(layout.name, partitions)
    };
    if let Some(retention) = layout.retention {
        topic = topic.with_retention(retention);
    }
    if layout.name == imbus_config::topics::ARCHIVE
        || layout.name == imbus_config::topics::ROOMS_ARCHIVE
    {
        topic.retention = config.mam.retention;
    }
    topic
}

/// Creates every system topic (or checks it exists with the same layout).
pub async fn create_system_topics(log: &dyn Log, config: &Config) -> anyhow::Result<()> {
    for layout in SYSTEM_TOPICS {
        let topic = topic_config(config, layout);
        let created = tokio::time::timeout(Duration::from_secs(60), log.create_topic(&topic))
            .await
            .with_context(|| format!("timed out creating topic {}", layout.name))?;
        match created {
            // Automatic partitioning changed its choice (or the backend's default) since
            // the topic was made: the topic keeps its partitions, keys stay where they are.
            Err(imbus_log::LogError::TopicMismatch { existing, .. })
                if layout.partitions.is_none() && config.bus.partitions_automatic =>
            {
                tracing::info!(
                    topic = layout.name,
                    partitions = existing,
                    "topic exists with its own partition count (bus.partitions = 0, automatic); using it"
                );
            }
            other => other.with_context(|| format!("cannot create topic {}", layout.name))?,
        }
    }
    Ok(())
}
