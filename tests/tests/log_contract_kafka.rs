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

/// `connect` gives up with a clear error when no broker answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fails_clearly_without_a_broker() {
    imbus_tests::init_tracing();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let mut options = KafkaOptions::new(format!("127.0.0.1:{port}"));
    options.request_timeout = Duration::from_secs(2);
    match KafkaLog::connect(options).await {
        Err(imbus_log::LogError::Timeout(message)) => {
            assert!(
                message.contains("no Kafka broker") && message.contains(&port.to_string()),
                "unclear error: {message}"
            );
        }
        other => panic!("connecting to a closed port gave {other:?}"),
    }
}

/// A plain Kafka producer (librdkafka's `murmur2_random` partitioner, the Java client's
/// default) puts every key on the partition imbus computes, so external producers and
/// imbus agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_producer_agrees_on_partitions() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let factory = kafka().await;
    let log = factory.open().await;
    let topic = imbus_tests::contract::unique_name("external");
    log.create_topic(&imbus_log::TopicConfig::new(&topic, 6))
        .await
        .expect("create topic");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &factory.bootstrap)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    for i in 0..60 {
        let key = format!("user{i}@example.com");
        let delivery = producer
            .send(
                FutureRecord::<str, str>::to(&topic).key(&key).payload("v"),
                Duration::from_secs(30),
            )
            .await
            .expect("produce");
        assert_eq!(
            delivery.partition,
            imbus_log::partition_for_key(key.as_bytes(), 6),
            "key {key}"
        );
        let position = log
            .append(&topic, imbus_log::Record::new(key.clone(), "v"))
            .await
            .expect("append");
        assert_eq!(position.partition, delivery.partition, "key {key}");
    }
    log.shutdown().await.expect("shutdown");
}
