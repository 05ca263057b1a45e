//! Consumer groups of the embedded log.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{next_event, open, opts};
use imbus_log::{
    Consumer, ConsumerEvent, ConsumerOptions, Log, LogError, Record, StartAt, TopicConfig,
    TopicPartition,
};
use imbus_log_embedded::EmbeddedLog;

async fn setup(partitions: i32, per_partition: usize) -> (tempfile::TempDir, EmbeddedLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), opts()).await;
    log.create_topic(&TopicConfig::new("in", partitions))
        .await
        .unwrap();
    for p in 0..partitions {
        let batch = (0..per_partition).map(|i| Record::new(format!("k{i}"), format!("{p}:{i}")));
        for r in batch {
            log.append_to("in", p, r).await.unwrap();
        }
    }
    (dir, log)
}

fn assigned(ev: ConsumerEvent) -> BTreeSet<TopicPartition> {
    match ev {
        ConsumerEvent::Assigned(tps) => tps.into_iter().collect(),
        other => panic!("expected Assigned, got {other:?}"),
    }
}

fn revoked(ev: ConsumerEvent) -> BTreeSet<TopicPartition> {
    match ev {
        ConsumerEvent::Revoked(tps) => tps.into_iter().collect(),
        other => panic!("expected Revoked, got {other:?}"),
    }
}

/// Reads records until `n` arrived, committing after each batch.
async fn consume(c: &mut Box<dyn Consumer>, n: usize) -> Vec<imbus_log::ConsumedRecord> {
    let mut out = Vec::new();
    while out.len() < n {
        match next_event(c).await {
            ConsumerEvent::Records(recs) => {
                let mut last = std::collections::BTreeMap::new();
                for r in &recs {
                    last.insert(r.topic_partition(), r.offset + 1);
                }
                c.commit(&last.into_iter().collect::<Vec<_>>())
                    .await
                    .unwrap();
                out.extend(recs);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[tokio::test]
async fn first_poll_assigns_then_records_flow_in_order() {
    let (_dir, log) = setup(2, 30).await;
    let mut opts = ConsumerOptions::new("g", &["in"]);
    opts.max_batch = 7;
    let mut c = log.consumer(opts).await.unwrap();
    let first = c.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        assigned(first),
        [TopicPartition::new("in", 0), TopicPartition::new("in", 1)].into()
    );
    let recs = consume(&mut c, 60).await;
    for p in 0..2 {
        let offsets: Vec<i64> = recs
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, (0..30).collect::<Vec<_>>());
    }
    assert_eq!(
        log.committed("g", &TopicPartition::new("in", 1))
            .await
            .unwrap(),
        Some(30)
    );
    log.shutdown().await.unwrap();
    assert!(matches!(
        c.poll(Duration::from_millis(1)).await,
        Err(LogError::Closed)
    ));
}

#[tokio::test]
async fn unknown_topic_and_unassigned_commit_are_refused() {
    let (_dir, log) = setup(1, 1).await;
    let err = log
        .consumer(ConsumerOptions::new("g", &["in", "missing"]))
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::UnknownTopic(t) if t == "missing"));
    let mut c = log
        .consumer(ConsumerOptions::new("g", &["in"]))
        .await
        .unwrap();
    // Not yet assigned: the first poll has not happened.
    let tp = TopicPartition::new("in", 0);
    assert!(matches!(
        c.commit(&[(tp.clone(), 1)]).await,
        Err(LogError::NotAssigned(_))
    ));
    assigned(next_event(&mut c).await);
    c.commit(&[(tp.clone(), 1)]).await.unwrap();
    let other = TopicPartition::new("in", 5);
    assert!(matches!(
        c.commit(&[(other, 1)]).await,
        Err(LogError::NotAssigned(_))
    ));
    assert!(matches!(
        c.seek(&TopicPartition::new("x", 0), StartAt::Earliest)
            .await,
        Err(LogError::NotAssigned(_))
    ));
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn members_split_partitions_and_take_over_a_dropped_member() {
    let (_dir, log) = setup(4, 10).await;
    let mut a = log
        .consumer(ConsumerOptions::new("g", &["in"]))
        .await
        .unwrap();
    let all: BTreeSet<TopicPartition> = (0..4).map(|p| TopicPartition::new("in", p)).collect();
    assert_eq!(assigned(next_event(&mut a).await), all);

    // b joins: a loses half, b gets that half.
    let mut b = log
        .consumer(ConsumerOptions::new("g", &["in"]))
        .await
        .unwrap();
    let lost = revoked(next_event(&mut a).await);
    assert_eq!(lost.len(), 2);
    let got_b = assigned(next_event(&mut b).await);
    assert_eq!(got_b, lost);
    let a_now: BTreeSet<_> = a.assignment().into_iter().collect();
    assert_eq!(a_now.len(), 2);
    assert!(a_now.is_disjoint(&got_b));

    // a's commit on a revoked partition is refused.
    let moved = lost.iter().next().unwrap().clone();
    assert!(matches!(
        a.commit(&[(moved.clone(), 3)]).await,
        Err(LogError::NotAssigned(_))
    ));

    // b consumes its half, committing only 5 records of `moved`.
    let mut seen = 0;
    while seen < 20 {
        if let ConsumerEvent::Records(recs) = next_event(&mut b).await {
            seen += recs.len();
        }
    }
    b.commit(&[(moved.clone(), 5)]).await.unwrap();

    // b dies (dropped without close): a takes everything back, resuming at b's commits.
    drop(b);
    let regained = assigned(next_event(&mut a).await);
    assert_eq!(regained, lost);
    let mut from_moved = Vec::new();
    let mut total = 0;
    while total < 20 + 5 {
        match next_event(&mut a).await {
            ConsumerEvent::Records(recs) => {
                total += recs.len();
                from_moved.extend(
                    recs.iter()
                        .filter(|r| r.topic_partition() == moved)
                        .map(|r| r.offset),
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        from_moved,
        (5..10).collect::<Vec<_>>(),
        "redelivery starts at the committed offset"
    );
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn close_hands_over_at_once() {
    let (_dir, log) = setup(2, 3).await;
    let mut a = log
        .consumer(ConsumerOptions::new("g", &["in"]))
        .await
        .unwrap();
    let mut b = log
        .consumer(ConsumerOptions::new("g", &["in"]))
        .await
        .unwrap();
    let got_a = assigned(next_event(&mut a).await);
    let got_b = assigned(next_event(&mut b).await);
    // Both joined before polling: each sees only its final share.
    assert_eq!(got_a.len(), 1);
    assert_eq!(got_b.len(), 1);
    assert!(got_a.is_disjoint(&got_b));
    b.close().await.unwrap();
    let mut owned: BTreeSet<_> = a.assignment().into_iter().collect();
    while owned.len() < 2 {
        match next_event(&mut a).await {
            ConsumerEvent::Assigned(tps) => owned.extend(tps),
            ConsumerEvent::Revoked(tps) => {
                for tp in tps {
                    owned.remove(&tp);
                }
            }
            ConsumerEvent::Records(_) => {}
        }
    }
    assert_eq!(owned.len(), 2);
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn groups_are_independent_and_committed_offsets_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), imbus_log_embedded::EmbeddedOptions::default()).await;
        log.create_topic(&TopicConfig::new("in", 1)).await.unwrap();
        for i in 0..10 {
            log.append_to("in", 0, Record::new("k", format!("{i}")))
                .await
                .unwrap();
        }
        let mut c = log
            .consumer(ConsumerOptions::new("g1", &["in"]))
            .await
            .unwrap();
        assigned(next_event(&mut c).await);
        c.commit(&[(TopicPartition::new("in", 0), 4)])
            .await
            .unwrap();
        c.commit(&[(TopicPartition::new("in", 0), 6)])
            .await
            .unwrap();
        let mut other = log
            .consumer(ConsumerOptions::new("g2", &["in"]))
            .await
            .unwrap();
        assigned(next_event(&mut other).await);
        other
            .commit(&[(TopicPartition::new("in", 0), 2)])
            .await
            .unwrap();
        // Dropped without shutdown: commits were fsynced when acknowledged.
    }
    let log = open(dir.path(), opts()).await;
    assert_eq!(
        log.committed("g1", &TopicPartition::new("in", 0))
            .await
            .unwrap(),
        Some(6)
    );
    assert_eq!(
        log.committed("g2", &TopicPartition::new("in", 0))
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        log.committed("g3", &TopicPartition::new("in", 0))
            .await
            .unwrap(),
        None
    );
    let mut c = log
        .consumer(ConsumerOptions::new("g1", &["in"]))
        .await
        .unwrap();
    assigned(next_event(&mut c).await);
    let ConsumerEvent::Records(recs) = next_event(&mut c).await else {
        panic!("expected records");
    };
    assert_eq!(recs[0].offset, 6);
    // A group without commits starts where it is told to.
    let mut o = ConsumerOptions::new("fresh", &["in"]);
    o.start_if_uncommitted = StartAt::Latest;
    let mut fresh = log.consumer(o).await.unwrap();
    assigned(next_event(&mut fresh).await);
    assert!(
        matches!(fresh.poll(Duration::from_millis(50)).await.unwrap(), ConsumerEvent::Records(r) if r.is_empty())
    );
    log.append_to("in", 0, Record::new("k", "new"))
        .await
        .unwrap();
    let ConsumerEvent::Records(recs) = next_event(&mut fresh).await else {
        panic!("expected records");
    };
    assert_eq!(recs[0].offset, 10);
    // Seek replays.
    fresh
        .seek(&TopicPartition::new("in", 0), StartAt::Offset(3))
        .await
        .unwrap();
    let ConsumerEvent::Records(recs) = next_event(&mut fresh).await else {
        panic!("expected records");
    };
    assert_eq!(recs[0].offset, 3);
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_is_woken_by_an_append() {
    let (_dir, log) = setup(3, 0).await;
    let mut c = log
        .consumer(ConsumerOptions::new("g", &["in"]))
        .await
        .unwrap();
    assigned(next_event(&mut c).await);
    let producer = {
        let log = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            log.append_to("in", 2, Record::new("k", "v")).await.unwrap();
        })
    };
    let ev = c.poll(Duration::from_secs(30)).await.unwrap();
    let ConsumerEvent::Records(recs) = ev else {
        panic!("expected records, got {ev:?}")
    };
    assert_eq!((recs[0].partition, recs[0].offset), (2, 0));
    producer.await.unwrap();
    log.shutdown().await.unwrap();
}
