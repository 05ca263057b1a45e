//! `imbus serve` on the Kafka backend, against a real Kafka-protocol broker (Tansu,
//! started by the test harness; the test fails with install instructions if it is missing).

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use imbus_tests::tansu::TansuBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_kafka_keeps_live_settings_in_the_cluster() {
    let broker = TansuBroker::start().unwrap_or_else(|e| panic!("{e}"));
    let http = reqwest::Client::new();
    let env = [
        ("IMBUS_BUS_BACKEND", "kafka".to_owned()),
        ("IMBUS_BUS_KAFKA_BOOTSTRAP", broker.bootstrap()),
        ("IMBUS_BUS_PARTITIONS", "2".to_owned()),
    ];

    // Two data directories: nothing of the state is local, it is all in the cluster.
    let first = tempfile::tempdir().unwrap();
    let server = Server::start_with(first.path(), &env);
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("backend=\"kafka\""), "{metrics}");
    let r = http
        .put(server.url("/admin/v1/config/log_level"))
        .bearer_auth(&server.token)
        .body("info,imbus=debug")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    assert!(server.terminate().success());

    let second = tempfile::tempdir().unwrap();
    let server = Server::start_with(second.path(), &env);
    let got = server.admin_get("/admin/v1/config/log_level").await;
    assert_eq!(got["value"].as_str(), Some("info,imbus=debug"));
    assert!(server.terminate().success());
}
