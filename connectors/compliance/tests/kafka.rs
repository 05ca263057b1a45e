//! The compliance sink on the Kafka backend (a real Kafka-protocol broker: Tansu, started
//! by the harness; the test fails, never skips, without it): records archived once,
//! resumed from the group's committed offsets after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use imbus_config::topics::{COMPLIANCE, COMPLIANCE_DEAD};
use imbus_connector_compliance::settings::Backend;
use imbus_connector_compliance::{GROUP, SinkSettings};
use imbus_core::{ComplianceRecord, Direction, MessageType};
use imbus_log::{Log, TopicConfig};
use imbus_log_kafka::{KafkaLog, KafkaOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_archives_from_kafka_and_resumes_from_committed_offsets() {
    let broker = tokio::task::spawn_blocking(imbus_tests::tansu::shared)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut options = KafkaOptions::new(broker.bootstrap());
    options.client_id = "imbus-compliance-tests".to_owned();
    options.request_timeout = Duration::from_secs(30);
    let log: Arc<dyn Log> = Arc::new(KafkaLog::connect(options).await.unwrap());
    for topic in [COMPLIANCE, COMPLIANCE_DEAD] {
        log.create_topic(&TopicConfig::new(topic, PARTITIONS))
            .await
            .unwrap();
    }
    let db = TestDb::new(Backend::Sqlite).await;
    let records: Vec<ComplianceRecord> = (0..120)
        .map(|i| {
            record(
                70_000 + i,
                &format!("k{}@example.com", i % 6),
                if i % 4 == 0 {
                    MessageType::Groupchat
                } else {
                    MessageType::Chat
                },
                Direction::Inbound,
                &format!("over kafka {i}"),
            )
        })
        .collect();
    let (first, second) = records.split_at(70);
    append(log.as_ref(), first).await;
    let sink = start_sink(&log, &db.url, SinkSettings::default(), fast_options());
    wait_archived(log.as_ref(), GROUP).await;
    sink.stop().await;

    // A new member of the same group starts from the committed offsets: the first
    // records are not delivered again.
    append(log.as_ref(), second).await;
    let sink = start_sink(&log, &db.url, SinkSettings::default(), fast_options());
    wait_archived(log.as_ref(), GROUP).await;
    assert_eq!(sink.metrics.already_present(), 0);
    assert_eq!(
        sink.metrics.rows_written("JM") + sink.metrics.rows_written("TC_MSGARCHIVE"),
        second.len() as u64
    );
    sink.stop().await;
    let rows = db.rows().await;
    assert_eq!(rows.len(), records.len());
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| imbus_connector_compliance::row::record_id(r).to_string())
        .collect();
    ids.sort();
    let mut got: Vec<String> = rows.into_iter().map(|r| r.record_id).collect();
    got.sort();
    assert_eq!(got, ids);
    db.drop_database().await;
}
