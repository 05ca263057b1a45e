//! The log contract suite against the Kafka backend, on a real Kafka-protocol broker
//! (Tansu with SQLite storage, started by the harness; one per test process).
//!
//! These tests fail (never skip) when Tansu is not installed; the failure says how to
//! install it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imbus_log::Log;
use imbus_log_kafka::{KafkaLog, KafkaOptions};
use imbus_tests::contract::LogFactory;
use imbus_tests::tansu;

struct KafkaFactory {
    bootstrap: String,
}

#[async_trait]
impl LogFactory for KafkaFactory {
    async fn open(&self) -> Arc<dyn Log> {
        let mut options = KafkaOptions::new(&self.bootstrap);
        options.client_id = "imbus-contract-tests".to_owned();
        options.request_timeout = Duration::from_secs(30);
        match KafkaLog::connect(options).await {
            Ok(log) => Arc::new(log),
            Err(error) => panic!("cannot connect to Tansu at {}: {error}", self.bootstrap),
        }
    }

    fn name(&self) -> &str {
        "kafka"
    }
}

async fn kafka() -> KafkaFactory {
    imbus_tests::init_tracing();
    let broker = tokio::task::spawn_blocking(tansu::shared)
        .await
        .expect("broker start task");
    match broker {
        Ok(broker) => KafkaFactory {
            bootstrap: broker.bootstrap(),
        },
        Err(error) => panic!("{error}"),
    }
}

imbus_tests::contract_tests!(kafka().await);
