//! The log contract suite against the embedded backend (a fresh directory per test), plus
//! the embedded log's own compaction guarantee: compaction really frees disk space and
//! keeps the latest value per key.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imbus_log::{Log, TopicConfig};
use imbus_log_embedded::{EmbeddedLog, EmbeddedOptions};
use imbus_tests::contract::{self, LogFactory};
use tempfile::TempDir;

struct EmbeddedFactory {
    dir: TempDir,
    options: EmbeddedOptions,
}

#[async_trait]
impl LogFactory for EmbeddedFactory {
    async fn open(&self) -> Arc<dyn Log> {
        match EmbeddedLog::open(self.dir.path(), self.options.clone()).await {
            Ok(log) => Arc::new(log),
            Err(error) => panic!("cannot open the embedded log in {:?}: {error}", self.dir),
        }
    }

    fn name(&self) -> &str {
        "embedded"
    }
}

async fn embedded() -> EmbeddedFactory {
    imbus_tests::init_tracing();
    EmbeddedFactory {
        dir: TempDir::new().expect("temporary directory"),
        options: EmbeddedOptions::default(),
    }
}

imbus_tests::contract_tests!(embedded().await);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_frees_disk_and_keeps_latest_values() {
    imbus_tests::init_tracing();
    let dir = TempDir::new().expect("temporary directory");
    // Small segments so that most of the changelog sits in closed (compactable) segments,
    // and tombstones expire at once.
    let options = EmbeddedOptions {
        segment_bytes: 64 * 1024,
        compaction_interval: Duration::ZERO,
        delete_retention: Duration::ZERO,
        ..EmbeddedOptions::default()
    };
    let log = EmbeddedLog::open(dir.path(), options.clone())
        .await
        .expect("open");
    let topic = contract::unique_name("compacted");
    log.create_topic(&TopicConfig::compacted(&topic, 2))
        .await
        .expect("create topic");
    let expected = contract::write_changelog(&log, &topic, 40, 30, 512).await;
    let before = log.disk_usage(&topic).expect("disk usage");

    let stats = log.compact_now().await.expect("compaction");
    let after = log.disk_usage(&topic).expect("disk usage");
    assert!(
        stats.records_removed > 0,
        "compaction removed records: {stats:?}"
    );
    assert!(
        after < before / 2,
        "compaction frees most of a 30-times overwritten changelog: {before} bytes before, \
         {after} after ({stats:?})"
    );
    assert_eq!(contract::fold_topic(&log, &topic).await, expected);

    // Compacted data survives a restart.
    log.shutdown().await.expect("shutdown");
    drop(log);
    let log = EmbeddedLog::open(dir.path(), options)
        .await
        .expect("reopen");
    assert_eq!(contract::fold_topic(&log, &topic).await, expected);
    let reopened = log.disk_usage(&topic).expect("disk usage");
    assert!(
        reopened < before / 2,
        "still compact after a restart: {reopened} bytes"
    );
    log.shutdown().await.expect("shutdown");
}
